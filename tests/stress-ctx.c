/* SPDX-License-Identifier: MIT */
/*
 * stress-ctx: context stress scenarios as a plain program (Criterion does
 * not start under ThreadSanitizer).
 *
 *   cancel racing waiters  threads blocked in conc_ctx_wait_until on nodes 1
 *                          to 3 levels below a root that is canceled: all
 *                          return CONC_CANCELED with the root's cause
 *   destroy racing cancel  threads create and destroy children of a shared
 *                          parent while it is canceled; every destroy
 *                          succeeds and the parent ends with no children
 *   deadline               threads blocked in conc_chan_recv_until /
 *                          send_until with a context a few ms from its
 *                          deadline and no call deadline: all return
 *                          CONC_TIMEDOUT (no timer thread: the park's timeout)
 *   deadline racing cancel the same with a cancel near the deadline: every
 *                          thread returns what its context's err says
 *
 * No sleep stands in for synchronisation: threads meet at barriers, and a
 * "while they are blocked" step waits until they are parked.  No timing is
 * asserted (a TIMEDOUT return is only checked to come after the deadline,
 * which the monotonic clock guarantees).  Sizes scale with CONC_STRESS_SCALE;
 * under ThreadSanitizer they shrink.  The seed comes from CONC_STRESS_SEED (or
 * the clock); CONC_STRESS_VERBOSE=1 prints statistics; CONC_STRESS_ONLY=text
 * runs only the scenarios whose name contains text.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-ctx"
#include "stress.h"

/* ------------------------------------------------- cancel racing waiters */

/*
 * A root with 2 children, 4 grandchildren and 8 great-grandchildren.  Each
 * round, 8 threads each wait (conc_ctx_wait_until, no deadline) on a node
 * picked at random from the three levels below the root, and the main thread
 * cancels the root with a per-round cause:
 *   mode 0  at once (some threads call wait_until after the cancel)
 *   mode 1  after a random spin
 *   mode 2  once every thread is parked on its node
 * Every wait returns CONC_CANCELED, every node reports the root's cause, and
 * every node is destroyed (children first) with CONC_OK.
 */
#define TREE_NODES 15 /* node 0 is the root; node k's children are 2k+1, 2k+2 */
#define TREE_WAITERS 8

struct tree {
	struct conc_ctx node[TREE_NODES];
	size_t target[TREE_WAITERS];       /* per round: the node each thread waits on */
	enum conc_status result[TREE_WAITERS];
	bool stop;
	pthread_barrier_t start, end;
};

struct tree_worker {
	struct tree *t;
	size_t id;
	pthread_t thread;
};

static void *tree_waiter(void *arg)
{
	struct tree_worker *w = arg;
	struct tree *t = w->t;
	for (;;) {
		pthread_barrier_wait(&t->start);
		if (t->stop)
			break;
		t->result[w->id] = conc_ctx_wait_until(&t->node[t->target[w->id]], conc_deadline_forever());
		pthread_barrier_wait(&t->end);
	}
	return NULL;
}

static void scenario_cancel_waiters(size_t unused)
{
	(void)unused;
	static struct tree t;
	memset(&t, 0, sizeof t);
	barrier_init(&t.start, TREE_WAITERS + 1);
	barrier_init(&t.end, TREE_WAITERS + 1);
	struct tree_worker w[TREE_WAITERS];
	for (size_t i = 0; i < TREE_WAITERS; i++) {
		w[i].t = &t;
		w[i].id = i;
		spawn(&w[i].thread, tree_waiter, &w[i]);
	}
	struct rng rng = rng_for(100);
	size_t rounds = SIZED(8000, 6000), modes[3] = {0};
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		for (size_t k = 0; k < TREE_NODES; k++)
			if (conc_ctx_init(&t.node[k], k ? &t.node[(k - 1) / 2] : NULL, conc_deadline_forever()) !=
			    CONC_OK)
				fail("conc_ctx_init failed");
		size_t waiting[TREE_NODES] = {0};
		for (size_t i = 0; i < TREE_WAITERS; i++) {
			t.target[i] = 1 + rng_below(&rng, TREE_NODES - 1);
			waiting[t.target[i]]++;
			t.result[i] = CONC_INVALID;
		}
		int cause = 5000 + (int)(round % 1000);
		size_t mode = rng_below(&rng, 3);
		modes[mode]++;
		pthread_barrier_wait(&t.start);
		if (mode == 1)
			spin_random(&rng);
		if (mode == 2)
			for (size_t k = 1; k < TREE_NODES; k++)
				conc_test_wait_parked(&t.node[k].waiters, waiting[k]);
		enum conc_status s = conc_ctx_cancel(&t.node[0], cause);
		if (s != CONC_OK)
			fail("round %zu: cancel gave %s", round, conc_strerror(s));
		pthread_barrier_wait(&t.end);

		for (size_t i = 0; i < TREE_WAITERS; i++)
			if (t.result[i] != CONC_CANCELED)
				fail("round %zu (mode %zu): the waiter on node %zu returned %s", round, mode,
				     t.target[i], conc_strerror(t.result[i]));
		for (size_t k = 0; k < TREE_NODES; k++)
			if (conc_ctx_err(&t.node[k]) != CONC_CANCELED || conc_ctx_cause(&t.node[k]) != cause)
				fail("round %zu: node %zu has err %s cause %d, not CANCELED %d", round, k,
				     conc_strerror(conc_ctx_err(&t.node[k])), conc_ctx_cause(&t.node[k]), cause);
		/* A second cancel changes nothing. */
		if ((s = conc_ctx_cancel(&t.node[0], cause + 1)) != CONC_CANCELED || conc_ctx_cause(&t.node[3]) != cause)
			fail("round %zu: cancelling again gave %s", round, conc_strerror(s));
		for (size_t k = TREE_NODES; k-- > 0;)
			if ((s = conc_ctx_destroy(&t.node[k])) != CONC_OK)
				fail("round %zu: destroying node %zu gave %s", round, k, conc_strerror(s));
	}
	t.stop = true;
	pthread_barrier_wait(&t.start);
	for (size_t i = 0; i < TREE_WAITERS; i++)
		join(w[i].thread);
	pthread_barrier_destroy(&t.start);
	pthread_barrier_destroy(&t.end);
	note("%zu rounds; modes %zu/%zu/%zu", rounds, modes[0], modes[1], modes[2]);
}

/* ------------------------------------------------- destroy racing cancel */

/*
 * Each round: a root G and its child P.  6 threads each run a loop: create
 * 1 to 4 children of P (on the heap, so a walk that touched a destroyed one
 * would be a use-after-free under ASan), sometimes wait on one of them for
 * a moment (conc_ctx_wait_until with a deadline of a few µs), then destroy
 * them in a random order (head, middle and tail of P's child list).  The
 * main thread cancels P (or G) once a random number of children have been
 * created.  Every destroy returns CONC_OK; a child created after the worker
 * saw P done starts done with its cause; a wait returns TIMEDOUT, or CANCELED
 * with the cause; at the end P and G are destroyed with CONC_OK (no child
 * left behind).
 */
#define CHURN_WORKERS 6
#define CHURN_HELD 4

struct churn {
	struct conc_ctx root, parent;
	size_t iterations;
	atomic_size_t created;
	size_t waits, canceled_waits;
	bool stop;
	pthread_barrier_t start, end;
};

struct churn_worker {
	struct churn *c;
	size_t id;
	struct rng rng;
	size_t waits, canceled_waits;
	pthread_t thread;
};

static void churn_iteration(struct churn_worker *w, int cause)
{
	struct churn *c = w->c;
	struct conc_ctx *held[CHURN_HELD];
	size_t n = 1 + rng_below(&w->rng, CHURN_HELD);
	for (size_t k = 0; k < n; k++) {
		bool parent_done = conc_ctx_err(&c->parent) != CONC_OK;
		held[k] = xcalloc(1, sizeof *held[k]);
		if (conc_ctx_init(held[k], &c->parent, conc_deadline_forever()) != CONC_OK)
			fail("conc_ctx_init failed");
		atomic_fetch_add(&c->created, 1);
		enum conc_status e = conc_ctx_err(held[k]);
		if (parent_done && (e != CONC_CANCELED || conc_ctx_cause(held[k]) != cause))
			fail("a child of a canceled parent started with err %s cause %d", conc_strerror(e),
			     conc_ctx_cause(held[k]));
	}
	if (rng_below(&w->rng, 4) == 0) {
		struct conc_ctx *x = held[rng_below(&w->rng, n)];
		enum conc_status s = conc_ctx_wait_until(x, conc_deadline_in_ns((int64_t)rng_below(&w->rng, 20000)));
		w->waits++;
		if (s == CONC_CANCELED)
			w->canceled_waits++;
		if ((s != CONC_CANCELED && s != CONC_TIMEDOUT) || (s == CONC_CANCELED && conc_ctx_cause(x) != cause))
			fail("wait_until on a child gave %s (cause %d)", conc_strerror(s), conc_ctx_cause(x));
	}
	while (n > 0) {
		size_t k = rng_below(&w->rng, n);
		enum conc_status s = conc_ctx_destroy(held[k]);
		if (s != CONC_OK)
			fail("destroying a child gave %s", conc_strerror(s));
		free(held[k]);
		held[k] = held[--n];
	}
}

static void *churn_main(void *arg)
{
	struct churn_worker *w = arg;
	struct churn *c = w->c;
	for (;;) {
		pthread_barrier_wait(&c->start);
		if (c->stop)
			break;
		for (size_t i = 0; i < c->iterations; i++)
			churn_iteration(w, 7000);
		pthread_barrier_wait(&c->end);
	}
	return NULL;
}

static void scenario_destroy_cancel(size_t unused)
{
	(void)unused;
	static struct churn c;
	memset(&c, 0, sizeof c);
	c.iterations = 20;
	atomic_init(&c.created, 0);
	barrier_init(&c.start, CHURN_WORKERS + 1);
	barrier_init(&c.end, CHURN_WORKERS + 1);
	struct churn_worker w[CHURN_WORKERS];
	memset(w, 0, sizeof w);
	for (size_t i = 0; i < CHURN_WORKERS; i++) {
		w[i].c = &c;
		w[i].id = i;
		w[i].rng = rng_for(200 + i);
		spawn(&w[i].thread, churn_main, &w[i]);
	}
	struct rng rng = rng_for(299);
	size_t rounds = SIZED(5000, 4000);
	/* The least that will be created in a round: one child per iteration. */
	size_t least = CHURN_WORKERS * c.iterations;
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		if (conc_ctx_init_root(&c.root) != CONC_OK ||
		    conc_ctx_init(&c.parent, &c.root, conc_deadline_forever()) != CONC_OK)
			fail("conc_ctx_init failed");
		atomic_store(&c.created, 0);
		size_t at = rng_below(&rng, least + 1);
		bool cancel_root = rng_below(&rng, 4) == 0;
		pthread_barrier_wait(&c.start);
		while (atomic_load(&c.created) < at)
			conc_yield();
		enum conc_status s = conc_ctx_cancel(cancel_root ? &c.root : &c.parent, 7000);
		if (s != CONC_OK)
			fail("round %zu: cancel gave %s", round, conc_strerror(s));
		pthread_barrier_wait(&c.end);

		if (conc_ctx_err(&c.parent) != CONC_CANCELED || conc_ctx_cause(&c.parent) != 7000)
			fail("round %zu: parent err %s cause %d after cancel", round, conc_strerror(conc_ctx_err(&c.parent)),
			     conc_ctx_cause(&c.parent));
		if ((s = conc_ctx_destroy(&c.parent)) != CONC_OK)
			fail("round %zu: destroying the parent gave %s (a child left in its list?)", round,
			     conc_strerror(s));
		if ((s = conc_ctx_destroy(&c.root)) != CONC_OK)
			fail("round %zu: destroying the root gave %s", round, conc_strerror(s));
	}
	c.stop = true;
	pthread_barrier_wait(&c.start);
	size_t waits = 0, canceled = 0;
	for (size_t i = 0; i < CHURN_WORKERS; i++) {
		join(w[i].thread);
		waits += w[i].waits;
		canceled += w[i].canceled_waits;
	}
	pthread_barrier_destroy(&c.start);
	pthread_barrier_destroy(&c.end);
	note("%zu rounds, %zu waits (%zu ended by the cancel)", rounds, waits, canceled);
}

/* -------------------------------------------------------------- deadlines */

/*
 * Each round: a root D with a deadline 1 to 4 ms away, and its child C (no
 * deadline of its own: it inherits D's).  6 threads block, with no call
 * deadline, in conc_chan_recv_until on an empty channel, in
 * conc_chan_send_until on a full one, or in conc_ctx_wait_until, with D or C.
 * Nothing wakes them but their park's timeout.
 *
 * Without a cancel: every call returns CONC_TIMEDOUT, after the deadline, and
 * D and C report TIMEDOUT.  With a cancel of D at a random moment near the
 * deadline (racing it): every call returns what its context's err says (the
 * state is latched once, by the cancel or by the deadline, and a deadline
 * that passed wins), and the cause agrees with it.
 */
#define DL_THREADS 6

struct dlround {
	struct conc_ctx root, child;
	struct conc_chan empty, full;
	uint64_t empty_buf[CONC_CHAN_BUF_SIZE(1, sizeof(uint64_t)) / sizeof(uint64_t)];
	uint64_t full_buf[CONC_CHAN_BUF_SIZE(1, sizeof(uint64_t)) / sizeof(uint64_t)];
	bool use_child[DL_THREADS];
	unsigned call[DL_THREADS]; /* 0 recv_until, 1 send_until, 2 ctx_wait_until */
	enum conc_status result[DL_THREADS];
	int64_t returned_at[DL_THREADS];
	bool stop;
	pthread_barrier_t start, end;
};

struct dl_worker {
	struct dlround *d;
	size_t id;
	pthread_t thread;
};

static void *dl_main(void *arg)
{
	struct dl_worker *w = arg;
	struct dlround *d = w->d;
	for (;;) {
		pthread_barrier_wait(&d->start);
		if (d->stop)
			break;
		struct conc_ctx *ctx = d->use_child[w->id] ? &d->child : &d->root;
		uint64_t v = 42;
		struct conc_deadline forever = conc_deadline_forever();
		switch (d->call[w->id]) {
		case 0: d->result[w->id] = conc_chan_recv_until(&d->empty, &v, forever, ctx); break;
		case 1: d->result[w->id] = conc_chan_send_until(&d->full, &v, forever, ctx); break;
		default: d->result[w->id] = conc_ctx_wait_until(ctx, forever); break;
		}
		d->returned_at[w->id] = conc_now_ns();
		pthread_barrier_wait(&d->end);
	}
	return NULL;
}

/* arg 0: deadline; 1: deadline racing cancel. */
static void scenario_deadlines(size_t arg)
{
	bool racing_cancel = arg != 0;
	static struct dlround d;
	memset(&d, 0, sizeof d);
	barrier_init(&d.start, DL_THREADS + 1);
	barrier_init(&d.end, DL_THREADS + 1);
	if (conc_chan_init(&d.empty, 1, sizeof(uint64_t), d.empty_buf, sizeof d.empty_buf) != CONC_OK ||
	    conc_chan_init(&d.full, 1, sizeof(uint64_t), d.full_buf, sizeof d.full_buf) != CONC_OK) {
		fail("conc_chan_init failed");
		return;
	}
	uint64_t v = 1;
	if (conc_chan_try_send(&d.full, &v) != CONC_OK)
		fail("filling the channel failed");
	struct dl_worker w[DL_THREADS];
	for (size_t i = 0; i < DL_THREADS; i++) {
		w[i].d = &d;
		w[i].id = i;
		spawn(&w[i].thread, dl_main, &w[i]);
	}
	struct rng rng = rng_for(racing_cancel ? 301 : 300);
	size_t rounds = racing_cancel ? SIZED(300, 300) : SIZED(200, 200), outcome[2] = {0};
	size_t cancel_lost = 0, split = 0; /* allowed outcomes of the race, counted for -v */
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		/* One round in 8 has its deadline already passed. */
		int64_t delay = rng_below(&rng, 8) == 0 ? -1000 : 1000000 + (int64_t)rng_below(&rng, 3000000);
		struct conc_deadline dl = conc_deadline_in_ns(delay);
		int cause = 8000 + (int)(round % 1000);
		if (conc_ctx_init(&d.root, NULL, dl) != CONC_OK ||
		    conc_ctx_init(&d.child, &d.root, conc_deadline_forever()) != CONC_OK)
			fail("conc_ctx_init failed");
		for (size_t i = 0; i < DL_THREADS; i++) {
			d.use_child[i] = rng_below(&rng, 2);
			d.call[i] = (unsigned)rng_below(&rng, 3);
			d.result[i] = CONC_INVALID;
		}
		pthread_barrier_wait(&d.start);
		enum conc_status cs = CONC_OK;
		if (racing_cancel) {
			/* Cancel somewhere from 300 µs before the deadline to
			 * 100 µs after it: waiting on the clock here only picks
			 * the moment, nothing is asserted about time. */
			int64_t at = dl.ns - 300000 + (int64_t)rng_below(&rng, 400000);
			while (conc_now_ns() < at)
				conc_yield();
			cs = conc_ctx_cancel(&d.root, cause);
		}
		pthread_barrier_wait(&d.end);

		enum conc_status re = conc_ctx_err(&d.root), ce = conc_ctx_err(&d.child);
		if (!racing_cancel && (re != CONC_TIMEDOUT || ce != CONC_TIMEDOUT))
			fail("round %zu: after the deadline err is %s / %s, not TIMEDOUT", round, conc_strerror(re),
			     conc_strerror(ce));
		if (racing_cancel && (cs == CONC_CANCELED || (cs == CONC_TIMEDOUT && re != CONC_TIMEDOUT)))
			fail("round %zu: cancel gave %s, err is %s", round, conc_strerror(cs), conc_strerror(re));
		struct conc_ctx *nodes[2] = {&d.root, &d.child};
		for (size_t k = 0; k < 2; k++) {
			enum conc_status e = conc_ctx_err(nodes[k]);
			int want = e == CONC_TIMEDOUT ? CONC_TIMEDOUT : cause;
			if ((e != CONC_TIMEDOUT && e != CONC_CANCELED) || conc_ctx_cause(nodes[k]) != want)
				fail("round %zu: %s has err %s cause %d", round, k ? "child" : "root", conc_strerror(e),
				     conc_ctx_cause(nodes[k]));
		}
		if (re == CONC_CANCELED || ce == CONC_CANCELED)
			outcome[1]++;
		else
			outcome[0]++;
		/* A cancel that finds the deadline passed (but not yet seen)
		 * latches TIMEDOUT and still returns OK; a cancel that marks
		 * the root just before the deadline and the child just after
		 * leaves them different.  Both are "a deadline that passed
		 * wins". */
		cancel_lost += racing_cancel && cs == CONC_OK && re == CONC_TIMEDOUT;
		split += re != ce;
		for (size_t i = 0; i < DL_THREADS; i++) {
			enum conc_status e = d.use_child[i] ? ce : re;
			if (d.result[i] != e)
				fail("round %zu: %s with the %s context returned %s, its err is %s", round,
				     (const char *[]){"recv_until", "send_until", "ctx_wait_until"}[d.call[i]],
				     d.use_child[i] ? "child" : "root",
				     conc_strerror(d.result[i]), conc_strerror(e));
			if (d.result[i] == CONC_TIMEDOUT && d.returned_at[i] < dl.ns)
				fail("round %zu: TIMEDOUT returned %" PRId64 " ns before the deadline", round,
				     dl.ns - d.returned_at[i]);
		}
		enum conc_status s;
		if ((s = conc_ctx_destroy(&d.child)) != CONC_OK || (s = conc_ctx_destroy(&d.root)) != CONC_OK)
			fail("round %zu: destroying the contexts gave %s", round, conc_strerror(s));
	}
	d.stop = true;
	pthread_barrier_wait(&d.start);
	for (size_t i = 0; i < DL_THREADS; i++)
		join(w[i].thread);
	if (conc_chan_try_recv(&d.empty, &v) != CONC_EMPTY || conc_chan_try_recv(&d.full, &v) != CONC_OK || v != 1)
		fail("a channel changed though every call timed out");
	if (conc_chan_destroy(&d.empty) != CONC_OK || conc_chan_destroy(&d.full) != CONC_OK)
		fail("conc_chan_destroy failed (a waiter left behind?)");
	pthread_barrier_destroy(&d.start);
	pthread_barrier_destroy(&d.end);
	note("%zu rounds: %zu ended by the deadline, %zu by the cancel; cancel OK but TIMEDOUT %zu, root and "
	     "child differ %zu",
	     rounds, outcome[0], outcome[1], cancel_lost, split);
}

/* ----------------------------------------------------------------- main */

static const struct scenario scenarios[] = {
	{"cancel racing waiters", scenario_cancel_waiters, 0},
	{"destroy racing cancel", scenario_destroy_cancel, 0},
	{"deadline", scenario_deadlines, 0},
	{"deadline racing cancel", scenario_deadlines, 1},
};

int main(void)
{
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
