/* SPDX-License-Identifier: MIT */
/*
 * stress-pool: worker pool stress scenarios as a plain program (Criterion
 * does not start under ThreadSanitizer).  Every scenario runs more threads
 * than there are cores.
 *
 *   exactly once      8 submitters x 8 workers, capacities 1, 4, 64; submit,
 *                     try_submit and submit_until with µs deadlines mixed, a
 *                     thread polling wait_idle_until alongside: every accepted
 *                     task runs exactly once (ledger), none is dropped
 *   shutdown race     submitters keep submitting (many of them blocked on a
 *                     full queue) while the pool is shut down at a random
 *                     point, DRAIN or ABORT, with wait_idle callers racing:
 *                     every accepted task ran or was dropped exactly once
 *                     (run + dropped == accepted; DRAIN drops nothing), every
 *                     refused one (CONC_CLOSED) neither
 *   nested submit     task trees that submit their children into their own
 *                     small, full pool (inline runs): every node runs once,
 *                     no deadlock
 *   wait_idle race    threads submit a batch, then wait_idle: when it returns
 *                     OK their own batch has finished, while others keep
 *                     submitting
 *   parallel for      concurrent parallel_for callers on one pool, from
 *                     outside and from inside its tasks, some canceled at a
 *                     random point from another thread: each index at most
 *                     once, all of them unless canceled
 *
 * No sleep stands in for synchronisation and nothing is timed.  Sizes scale
 * with CONC_STRESS_SCALE and shrink under ThreadSanitizer; the seed comes
 * from CONC_STRESS_SEED (or the clock) and is printed on stderr.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-pool"
#include "stress.h"

static struct conc_pool *make_pool(size_t threads, size_t cap)
{
	struct conc_pool *p = NULL;
	struct conc_pool_config cfg = {.threads = threads, .queue_cap = cap};
	enum conc_status s = conc_pool_new(&p, &cfg);
	if (s != CONC_OK) {
		fprintf(stderr, STRESS_PROG ": conc_pool_new: %s\n", conc_strerror(s));
		exit(2);
	}
	return p;
}

static void free_pool(struct conc_pool *p)
{
	enum conc_status s = conc_pool_free(p);
	if (s != CONC_OK)
		fail("conc_pool_free gave %s", conc_strerror(s));
}

/* A little random work inside a task. */
static void work(uint64_t v)
{
	size_t n = (size_t)(v * UINT64_C(0x9e3779b97f4a7c15) >> 58); /* 0..63 */
	for (size_t i = 0; i < n; i++)
		conc_cpu_relax();
}

/* ---------------------------------------------------------- exactly once */

struct once_item {
	uint64_t v;
	struct conc_test_ledger *ledger;
	atomic_int *dropped;
};

static void once_run(void *arg)
{
	struct once_item *it = arg;
	work(it->v);
	if (conc_test_ledger_mark(it->ledger, it->v) != 0)
		fail("task p%zu #%zu ran twice", CONC_TEST_PRODUCER(it->v), CONC_TEST_SEQ(it->v));
}

static void once_drop(void *arg)
{
	struct once_item *it = arg;
	atomic_fetch_add(it->dropped, 1);
}

struct once_shared {
	struct conc_pool *pool;
	struct conc_test_ledger ledger;
	atomic_int dropped, submitters_done;
	size_t per;
	struct once_item *items;
	pthread_barrier_t start;
};

struct once_arg {
	struct once_shared *sh;
	size_t id;
};

static void *once_submitter(void *arg)
{
	struct once_arg *a = arg;
	struct once_shared *sh = a->sh;
	struct rng r = rng_for(a->id);
	pthread_barrier_wait(&sh->start);
	for (size_t i = 0; i < sh->per; i++) {
		struct once_item *it = &sh->items[a->id * sh->per + i];
		it->v = CONC_TEST_ITEM(a->id, i);
		it->ledger = &sh->ledger;
		it->dropped = &sh->dropped;
		enum conc_status s;
		switch (rng_below(&r, 4)) {
		case 0:
			while ((s = conc_pool_try_submit(sh->pool, once_run, it, once_drop)) == CONC_FULL)
				conc_yield();
			break;
		case 1:
			s = conc_pool_submit_until(sh->pool, once_run, it, once_drop, stress_short_deadline(&r), NULL);
			if (s == CONC_TIMEDOUT) /* refused: still ours; now wait as long as it takes */
				s = conc_pool_submit(sh->pool, once_run, it, once_drop);
			break;
		default:
			s = conc_pool_submit(sh->pool, once_run, it, once_drop);
		}
		if (s != CONC_OK)
			fail("submit p%zu #%zu gave %s", a->id, i, conc_strerror(s));
	}
	atomic_fetch_add(&sh->submitters_done, 1);
	return NULL;
}

static void *once_idle_poller(void *arg)
{
	struct once_shared *sh = arg;
	struct rng r = rng_for(1000);
	pthread_barrier_wait(&sh->start);
	size_t ok = 0, timedout = 0;
	while (atomic_load(&sh->submitters_done) < 8) {
		enum conc_status s = conc_pool_wait_idle_until(sh->pool, stress_short_deadline(&r), NULL);
		if (s == CONC_OK)
			ok++;
		else if (s == CONC_TIMEDOUT)
			timedout++;
		else
			fail("wait_idle_until gave %s", conc_strerror(s));
	}
	note("idle poller: %zu ok, %zu timed out", ok, timedout);
	return NULL;
}

static void scenario_exactly_once(size_t cap)
{
	enum { SUBMITTERS = 8, WORKERS = 8 };
	struct once_shared sh;
	memset(&sh, 0, sizeof sh);
	sh.per = SIZED(20000, 1500);
	sh.pool = make_pool(WORKERS, cap);
	conc_test_ledger_init(&sh.ledger, SUBMITTERS, sh.per);
	sh.items = xcalloc(SUBMITTERS * sh.per, sizeof *sh.items);
	barrier_init(&sh.start, SUBMITTERS + 1);
	pthread_t t[SUBMITTERS], poller;
	struct once_arg args[SUBMITTERS];
	for (size_t i = 0; i < SUBMITTERS; i++) {
		args[i] = (struct once_arg){&sh, i};
		spawn(&t[i], once_submitter, &args[i]);
	}
	spawn(&poller, once_idle_poller, &sh);
	for (size_t i = 0; i < SUBMITTERS; i++)
		join(t[i]);
	join(poller);
	enum conc_status s = conc_pool_wait_idle(sh.pool);
	if (s != CONC_OK)
		fail("wait_idle gave %s", conc_strerror(s));
	size_t missing = conc_test_ledger_missing(&sh.ledger);
	if (missing)
		fail("%zu accepted tasks never ran", missing);
	if (conc_pool_pending(sh.pool) != 0)
		fail("pending %zu after wait_idle", conc_pool_pending(sh.pool));
	if ((s = conc_pool_shutdown(sh.pool, CONC_POOL_ABORT)) != CONC_OK)
		fail("shutdown gave %s", conc_strerror(s));
	if (atomic_load(&sh.dropped))
		fail("%d tasks dropped by an abort of an idle pool", atomic_load(&sh.dropped));
	free_pool(sh.pool);
	pthread_barrier_destroy(&sh.start);
	conc_test_ledger_free(&sh.ledger);
	free(sh.items);
}

/* --------------------------------------------------------- shutdown race */

struct race_item {
	atomic_int ran, dropped;
	uint64_t v;
};

static void race_run(void *arg)
{
	struct race_item *it = arg;
	work(it->v);
	atomic_fetch_add(&it->ran, 1);
}

static void race_drop(void *arg)
{
	struct race_item *it = arg;
	atomic_fetch_add(&it->dropped, 1);
}

struct race_shared {
	struct conc_pool *pool;
	size_t per;
	struct race_item *items;
	size_t *accepted;   /* per submitter: a prefix of its items */
	atomic_size_t total; /* accepted so far, all submitters */
	atomic_int stop;
	pthread_barrier_t start;
};

struct race_arg {
	struct race_shared *sh;
	size_t id;
};

static void *race_submitter(void *arg)
{
	struct race_arg *a = arg;
	struct race_shared *sh = a->sh;
	struct rng r = rng_for(a->id + 100);
	pthread_barrier_wait(&sh->start);
	size_t i = 0;
	for (; i < sh->per; i++) {
		struct race_item *it = &sh->items[a->id * sh->per + i];
		it->v = rng_next(&r);
		enum conc_status s = rng_below(&r, 8) == 0
					     ? conc_pool_submit_until(sh->pool, race_run, it, race_drop,
								      stress_short_deadline(&r), NULL)
					     : conc_pool_submit(sh->pool, race_run, it, race_drop);
		if (s == CONC_TIMEDOUT)
			s = conc_pool_submit(sh->pool, race_run, it, race_drop);
		if (s == CONC_CLOSED)
			break;
		if (s != CONC_OK) {
			fail("submit gave %s", conc_strerror(s));
			break;
		}
		atomic_fetch_add(&sh->total, 1);
	}
	sh->accepted[a->id] = i;
	return NULL;
}

static void *race_idle_waiter(void *arg)
{
	struct race_shared *sh = arg;
	struct rng r = rng_for(200);
	pthread_barrier_wait(&sh->start);
	while (!atomic_load(&sh->stop)) {
		enum conc_status s = conc_pool_wait_idle_until(sh->pool, stress_short_deadline(&r), NULL);
		if (s != CONC_OK && s != CONC_TIMEDOUT)
			fail("wait_idle_until gave %s", conc_strerror(s));
	}
	return NULL;
}

static void scenario_shutdown_race(size_t mode)
{
	enum { SUBMITTERS = 6, WORKERS = 4 };
	size_t rounds = SIZED(150, 20);
	struct rng r = rng_for(300 + mode);
	size_t ran = 0, dropped = 0, refused = 0;
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		struct race_shared sh;
		memset(&sh, 0, sizeof sh);
		sh.per = 4000;
		sh.pool = make_pool(WORKERS, 1 + rng_below(&r, 4));
		sh.items = xcalloc(SUBMITTERS * sh.per, sizeof *sh.items);
		sh.accepted = xcalloc(SUBMITTERS, sizeof *sh.accepted);
		barrier_init(&sh.start, SUBMITTERS + 2);
		pthread_t t[SUBMITTERS], waiter;
		struct race_arg args[SUBMITTERS];
		for (size_t i = 0; i < SUBMITTERS; i++) {
			args[i] = (struct race_arg){&sh, i};
			spawn(&t[i], race_submitter, &args[i]);
		}
		spawn(&waiter, race_idle_waiter, &sh);
		pthread_barrier_wait(&sh.start);
		/* Shut down after a random number of accepted tasks. */
		size_t at = rng_below(&r, 2000);
		while (atomic_load(&sh.total) < at)
			conc_yield();
		spin_random(&r);
		enum conc_pool_mode m = mode == 2 ? (rng_below(&r, 2) ? CONC_POOL_ABORT : CONC_POOL_DRAIN)
						  : (enum conc_pool_mode)mode;
		enum conc_status s = conc_pool_shutdown(sh.pool, m);
		if (s != CONC_OK)
			fail("shutdown gave %s", conc_strerror(s));
		for (size_t i = 0; i < SUBMITTERS; i++)
			join(t[i]);
		atomic_store(&sh.stop, 1);
		join(waiter);
		for (size_t p = 0; p < SUBMITTERS; p++)
			for (size_t i = 0; i < sh.per; i++) {
				struct race_item *it = &sh.items[p * sh.per + i];
				int a = atomic_load(&it->ran), d = atomic_load(&it->dropped);
				if (i < sh.accepted[p] && a + d != 1)
					fail("accepted task p%zu #%zu ran %d and dropped %d times", p, i, a, d);
				if (i >= sh.accepted[p] && a + d != 0)
					fail("refused task p%zu #%zu ran %d and dropped %d times", p, i, a, d);
				if (m == CONC_POOL_DRAIN && d)
					fail("DRAIN dropped task p%zu #%zu", p, i);
				ran += (size_t)a;
				dropped += (size_t)d;
				refused += i == sh.accepted[p] && i < sh.per;
			}
		if (conc_pool_pending(sh.pool) != 0)
			fail("pending %zu after shutdown", conc_pool_pending(sh.pool));
		free_pool(sh.pool);
		pthread_barrier_destroy(&sh.start);
		free(sh.items);
		free(sh.accepted);
	}
	note("ran %zu, dropped %zu, %zu submitters refused", ran, dropped, refused);
}

/* --------------------------------------------------------- nested submit */

struct tree {
	struct conc_pool *pool;
	atomic_size_t nodes;
	size_t fanout;
	atomic_int errors;
};

struct node {
	struct tree *t;
	size_t depth;
};

static void node_run(void *arg);

static void node_spawn(struct tree *t, size_t depth, bool try_first)
{
	struct node *n = malloc(sizeof *n);
	if (!n) {
		atomic_fetch_add(&t->errors, 1);
		return;
	}
	n->t = t;
	n->depth = depth;
	enum conc_status s = try_first ? conc_pool_try_submit(t->pool, node_run, n, free) : CONC_FULL;
	if (s == CONC_FULL)
		s = conc_pool_submit(t->pool, node_run, n, free);
	if (s != CONC_OK) {
		free(n);
		atomic_fetch_add(&t->errors, 1);
	}
}

static void node_run(void *arg)
{
	struct node *n = arg;
	struct tree *t = n->t;
	size_t depth = n->depth;
	free(n);
	atomic_fetch_add(&t->nodes, 1);
	if (depth == 0)
		return;
	for (size_t i = 0; i < t->fanout; i++)
		node_spawn(t, depth - 1, i & 1);
}

static void nested_round(size_t cap)
{
	size_t depth = STRESS_TSAN ? 5 : 7, fanout = 3, roots = SIZED(8, 4);
	struct tree t;
	memset(&t, 0, sizeof t);
	t.fanout = fanout;
	t.pool = make_pool(4, cap);
	for (size_t i = 0; i < roots; i++)
		node_spawn(&t, depth, false);
	enum conc_status s = conc_pool_wait_idle(t.pool);
	if (s != CONC_OK)
		fail("wait_idle gave %s", conc_strerror(s));
	size_t per = 0, level = 1;
	for (size_t d = 0; d <= depth; d++, level *= fanout)
		per += level;
	if (atomic_load(&t.errors))
		fail("%d submits failed", atomic_load(&t.errors));
	if (atomic_load(&t.nodes) != roots * per)
		fail("%zu nodes ran, expected %zu", atomic_load(&t.nodes), roots * per);
	free_pool(t.pool);
}

static void scenario_nested(size_t cap)
{
	for (size_t round = 0; round < SIZED(40, 4) && !atomic_load(&failed_flag); round++)
		nested_round(cap);
}

/* ------------------------------------------------------- wait_idle race */

struct idle_shared {
	struct conc_pool *pool;
	size_t rounds;
	pthread_barrier_t start;
};

struct idle_arg {
	struct idle_shared *sh;
	size_t id;
	atomic_size_t done;
};

static void idle_task(void *arg)
{
	struct idle_arg *a = arg;
	work((uint64_t)a->id);
	atomic_fetch_add(&a->done, 1);
}

static void *idle_racer(void *arg)
{
	struct idle_arg *a = arg;
	struct idle_shared *sh = a->sh;
	struct rng r = rng_for(a->id + 400);
	pthread_barrier_wait(&sh->start);
	size_t submitted = 0;
	for (size_t round = 0; round < sh->rounds; round++) {
		size_t batch = 1 + rng_below(&r, 16);
		for (size_t i = 0; i < batch; i++) {
			enum conc_status s = conc_pool_submit(sh->pool, idle_task, a, NULL);
			if (s != CONC_OK) {
				fail("submit gave %s", conc_strerror(s));
				return NULL;
			}
			submitted++;
		}
		enum conc_status s = conc_pool_wait_idle(sh->pool);
		if (s != CONC_OK)
			fail("wait_idle gave %s", conc_strerror(s));
		size_t done = atomic_load(&a->done);
		if (done != submitted)
			fail("wait_idle returned with %zu of this thread's %zu tasks done", done, submitted);
	}
	return NULL;
}

static void scenario_wait_idle_race(size_t threads)
{
	enum { RACERS = 6 };
	struct idle_shared sh;
	sh.pool = make_pool(threads, 4);
	sh.rounds = SIZED(1500, 150);
	barrier_init(&sh.start, RACERS);
	pthread_t t[RACERS];
	struct idle_arg args[RACERS];
	for (size_t i = 0; i < RACERS; i++) {
		args[i].sh = &sh;
		args[i].id = i;
		atomic_init(&args[i].done, 0);
		spawn(&t[i], idle_racer, &args[i]);
	}
	for (size_t i = 0; i < RACERS; i++)
		join(t[i]);
	free_pool(sh.pool);
	pthread_barrier_destroy(&sh.start);
}

/* ---------------------------------------------------------- parallel for */

struct pfor_call {
	struct conc_pool *pool;
	size_t n;
	atomic_uchar *hits;
	atomic_size_t calls;
	struct conc_ctx ctx;
	bool cancel;
	enum conc_status status;
	atomic_int finished;
};

static void pfor_body(void *arg, size_t i)
{
	struct pfor_call *c = arg;
	if (atomic_fetch_add(&c->hits[i], 1) != 0)
		fail("index %zu ran twice", i);
	atomic_fetch_add(&c->calls, 1);
	work(i);
}

static void pfor_run(struct pfor_call *c)
{
	c->status = conc_pool_parallel_for(c->pool, c->n, pfor_body, c, c->cancel ? &c->ctx : NULL);
	atomic_store(&c->finished, 1);
}

static void pfor_task(void *arg)
{
	pfor_run(arg);
}

static void *pfor_thread(void *arg)
{
	pfor_run(arg);
	return NULL;
}

static void scenario_parallel_for(size_t unused)
{
	(void)unused;
	enum { CALLERS = 4, INSIDE = 2 };
	size_t rounds = SIZED(200, 25);
	struct rng r = rng_for(500);
	struct conc_pool *pool = make_pool(4, 2);
	size_t canceled = 0;
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		struct pfor_call calls[CALLERS + INSIDE];
		pthread_t t[CALLERS];
		for (size_t k = 0; k < CALLERS + INSIDE; k++) {
			struct pfor_call *c = &calls[k];
			c->pool = pool;
			c->n = 1 + rng_below(&r, 5000);
			c->hits = xcalloc(c->n, sizeof *c->hits);
			atomic_init(&c->calls, 0);
			atomic_init(&c->finished, 0);
			c->cancel = rng_below(&r, 3) == 0;
			if (conc_ctx_init_root(&c->ctx) != CONC_OK)
				fail("ctx init");
			c->status = CONC_INVALID;
		}
		for (size_t k = 0; k < CALLERS; k++)
			spawn(&t[k], pfor_thread, &calls[k]);
		for (size_t k = CALLERS; k < CALLERS + INSIDE; k++)
			if (conc_pool_submit(pool, pfor_task, &calls[k], NULL) != CONC_OK)
				fail("submit of a parallel_for task failed");
		for (size_t k = 0; k < CALLERS + INSIDE; k++) {
			if (!calls[k].cancel)
				continue;
			/* Cancel at a random point: some indices in, or none. */
			size_t at = rng_below(&r, calls[k].n);
			while (atomic_load(&calls[k].calls) < at && !atomic_load(&calls[k].finished))
				conc_yield();
			(void)conc_ctx_cancel(&calls[k].ctx, 0);
		}
		for (size_t k = 0; k < CALLERS; k++)
			join(t[k]);
		enum conc_status s = conc_pool_wait_idle(pool);
		if (s != CONC_OK)
			fail("wait_idle gave %s", conc_strerror(s));
		for (size_t k = 0; k < CALLERS + INSIDE; k++) {
			struct pfor_call *c = &calls[k];
			size_t ran = atomic_load(&c->calls);
			if (c->status == CONC_OK && ran != c->n)
				fail("parallel_for OK with %zu of %zu indices run", ran, c->n);
			else if (c->status == CONC_CANCELED)
				canceled++;
			else if (c->status != CONC_OK)
				fail("parallel_for gave %s", conc_strerror(c->status));
			if (c->status == CONC_CANCELED && !c->cancel)
				fail("parallel_for canceled without a cancel");
			if (conc_ctx_destroy(&c->ctx) != CONC_OK)
				fail("ctx destroy");
			free((void *)c->hits);
		}
	}
	note("%zu calls canceled", canceled);
	free_pool(pool);
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"exactly once, capacity 1", scenario_exactly_once, 1},
		{"exactly once, capacity 4", scenario_exactly_once, 4},
		{"exactly once, capacity 64", scenario_exactly_once, 64},
		{"shutdown race, DRAIN", scenario_shutdown_race, CONC_POOL_DRAIN},
		{"shutdown race, ABORT", scenario_shutdown_race, CONC_POOL_ABORT},
		{"shutdown race, mixed", scenario_shutdown_race, 2},
		{"nested submit, capacity 1", scenario_nested, 1},
		{"nested submit, capacity 3", scenario_nested, 3},
		{"wait_idle race, 2 workers", scenario_wait_idle_race, 2},
		{"wait_idle race, 8 workers", scenario_wait_idle_race, 8},
		{"parallel for", scenario_parallel_for, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
