/* SPDX-License-Identifier: MIT */
/*
 * stress-pipeline: pipelines of 1-4 stages, each with 1-6 workers (far more
 * threads than cores), fed by several pushers and drained by several
 * pullers, with random batches, windows, capacities, ordered and unordered
 * stages.  Every stage XORs the item with its own mask, so any item can be
 * traced back to (producer, sequence) wherever it shows up: pulled at the
 * end, or handed to a destructor (skipped, failed, in flight at
 * cancellation, left in a channel at free).  Every pushed item must show up
 * exactly once, and nothing that was not pushed may; per-puller FIFO per
 * producer is checked whenever every stage keeps order.
 *
 * Modes: clean runs; a cancel at a random point from another thread; a stage
 * that returns an error; a parent deadline; a stage that blocks until the
 * pipeline is canceled.  Plain executable: it runs under TSan too.
 */
#define STRESS_PROG "stress-pipeline"

#include "conc.h"

#include "util.h"
#include "stress.h"

#define MAX_STAGES 4
#define MAX_SIDE 3 /* pushers, pullers */

enum mode { CLEAN, CANCEL, ERROR, DEADLINE, BLOCK };

struct run;

/* One item type: the items after stage i are orig ^ mask[i + 1]. */
struct itype {
	struct run *r;
	uint64_t mask;
};

struct stage {
	struct run *r;
	uint64_t in_mask, out_mask;
	bool skip, last;
};

struct run {
	enum mode mode;
	size_t nstages, pushers, pullers, per_pusher;
	bool in_order; /* every stage keeps order */
	uint64_t fail_item;
	struct itype types[MAX_STAGES + 1];
	struct stage stages[MAX_STAGES];
	struct conc_test_ledger ledger;
	_Atomic(uint64_t) marked;
	_Atomic(size_t) pushers_done;
	_Atomic(int) blocked; /* BLOCK: calls blocking until cancel */
	uint64_t pushed[MAX_SIDE];
	struct conc_pipeline *p;
};

static void mark(struct run *r, uint64_t orig, const char *where)
{
	if (conc_test_ledger_mark(&r->ledger, orig) != 0)
		fail("%s: item %#llx out of range or seen twice", where, (unsigned long long)orig);
	atomic_fetch_add_explicit(&r->marked, 1, memory_order_relaxed);
}

static void drop(void *elem, void *arg)
{
	struct itype *t = arg;
	uint64_t v;
	memcpy(&v, elem, sizeof v);
	mark(t->r, v ^ t->mask, "destructor");
}

static int stage_fn(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	struct stage *s = arg;
	struct run *r = s->r;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	uint64_t orig = v ^ s->in_mask;
	if (s->skip && orig % 7 == 3)
		return CONC_STAGE_SKIP;
	if (r->mode == ERROR && s->last && orig == r->fail_item)
		return 1000 + (int)(orig % 7);
	if (r->mode == BLOCK && s->last && CONC_TEST_SEQ(orig) % 50 == 7) {
		atomic_fetch_add(&r->blocked, 1);
		return conc_ctx_wait_until(ctx, conc_deadline_forever());
	}
	for (uint64_t i = 0; i < (orig * 0x9e37) % 61; i++)
		conc_cpu_relax();
	v = orig ^ s->out_mask;
	memcpy(out, &v, sizeof v);
	return 0;
}

struct side {
	struct run *r;
	size_t id;
	pthread_t t;
};

static void *pusher_main(void *arg)
{
	struct side *sd = arg;
	struct run *r = sd->r;
	uint64_t n = 0;
	for (size_t i = 0; i < r->per_pusher; i++) {
		uint64_t v = CONC_TEST_ITEM(sd->id, i) ^ r->types[0].mask;
		enum conc_status s = conc_pipeline_push(r->p, &v);
		if (s != CONC_OK) {
			if (r->mode == CLEAN)
				fail("push: %s in a clean run", conc_strerror(s));
			break;
		}
		n++;
	}
	r->pushed[sd->id] = n;
	if (atomic_fetch_add(&r->pushers_done, 1) + 1 == r->pushers)
		conc_pipeline_close_input(r->p);
	return NULL;
}

static void *puller_main(void *arg)
{
	struct side *sd = arg;
	struct run *r = sd->r;
	size_t last[MAX_SIDE];
	for (size_t i = 0; i < MAX_SIDE; i++)
		last[i] = SIZE_MAX;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_pipeline_pull(r->p, &v)) == CONC_OK) {
		uint64_t orig = v ^ r->types[r->nstages].mask;
		mark(r, orig, "puller");
		if (r->in_order && CONC_TEST_PRODUCER(orig) < MAX_SIDE && !conc_test_fifo_ok(last, orig))
			fail("producer %zu: item %zu after %zu through order-keeping stages", CONC_TEST_PRODUCER(orig),
			     CONC_TEST_SEQ(orig), last[CONC_TEST_PRODUCER(orig)]);
	}
	if (s != CONC_CLOSED && !(r->mode != CLEAN && s == CONC_CANCELED))
		fail("pull ended with %s", conc_strerror(s));
	return NULL;
}

static void one_run(struct rng *g, enum mode mode, int order_pref)
{
	struct run *r = xcalloc(1, sizeof *r);
	r->mode = mode;
	r->nstages = 1 + rng_below(g, MAX_STAGES);
	r->pushers = 1 + rng_below(g, MAX_SIDE);
	r->pullers = 1 + rng_below(g, MAX_SIDE);
	r->per_pusher = SIZED(4000, 1000) + rng_below(g, 100);
	conc_test_ledger_init(&r->ledger, r->pushers, r->per_pusher);
	r->in_order = true;
	for (size_t i = 0; i <= r->nstages; i++) {
		r->types[i].r = r;
		r->types[i].mask = i ? rng_next(g) & ((UINT64_C(1) << 40) - 1) : 0;
	}
	struct conc_ctx parent;
	if (conc_ctx_init(&parent, NULL,
			  mode == DEADLINE ? conc_deadline_in_ns((int64_t)rng_below(g, 20000000)) : conc_deadline_forever()) !=
	    CONC_OK) {
		fail("ctx init");
		return;
	}
	struct conc_pipeline_config pc = {.esize = sizeof(uint64_t), .queue_cap = 1 + rng_below(g, 64), .drop = drop,
					  .drop_arg = &r->types[0], .parent = &parent};
	if (conc_pipeline_new(&r->p, &pc) != CONC_OK) {
		fail("conc_pipeline_new");
		return;
	}
	size_t threads = 0;
	for (size_t i = 0; i < r->nstages; i++) {
		struct stage *s = &r->stages[i];
		s->r = r;
		s->in_mask = r->types[i].mask;
		s->out_mask = r->types[i + 1].mask;
		s->skip = rng_below(g, 3) == 0;
		s->last = i + 1 == r->nstages;
		size_t k = 1 + rng_below(g, 6);
		bool ordered = order_pref > 0 || (order_pref == 0 && rng_below(g, 2));
		if (!ordered && k > 1)
			r->in_order = false;
		struct conc_stage_config sc = {
			.fn = stage_fn, .arg = s, .workers = k, .ordered = ordered,
			.batch = rng_below(g, 3) ? rng_below(g, 20) : 1,
			.window = rng_below(g, 2) ? rng_below(g, 40) : 0,
			.queue_cap = rng_below(g, 2) ? 1 + rng_below(g, 8) : 0,
			.drop = drop, .drop_arg = &r->types[i + 1],
		};
		threads += k;
		if (conc_pipeline_add_stage(r->p, &sc) != CONC_OK) {
			fail("conc_pipeline_add_stage");
			return;
		}
	}
	if (mode == ERROR) {
		r->fail_item = CONC_TEST_ITEM(rng_below(g, r->pushers), rng_below(g, r->per_pusher));
		if (r->fail_item % 7 == 3)
			r->fail_item++;
	}
	note("%zu stages, %zu workers, %zu pushers, %zu pullers, %s", r->nstages, threads, r->pushers, r->pullers,
	     r->in_order ? "in order" : "unordered");
	if (conc_pipeline_start(r->p) != CONC_OK) {
		fail("conc_pipeline_start");
		return;
	}
	struct side push[MAX_SIDE], pull[MAX_SIDE];
	for (size_t i = 0; i < r->pushers; i++) {
		push[i] = (struct side){.r = r, .id = i};
		spawn(&push[i].t, pusher_main, &push[i]);
	}
	for (size_t i = 0; i < r->pullers; i++) {
		pull[i] = (struct side){.r = r, .id = i};
		spawn(&pull[i].t, puller_main, &pull[i]);
	}
	bool canceled = false;
	if (mode == CANCEL) {
		/* Somewhere from the start to near the end of the run. */
		uint64_t at = rng_below(g, r->pushers * r->per_pusher);
		while (atomic_load(&r->marked) < at && !atomic_load(&failed_flag))
			conc_yield();
		spin_random(g);
		canceled = conc_pipeline_cancel(r->p, 77) == CONC_OK;
	} else if (mode == BLOCK) {
		while (atomic_load(&r->blocked) == 0 && !atomic_load(&failed_flag))
			conc_yield();
		canceled = conc_ctx_cancel(&parent, 88) == CONC_OK;
	}
	for (size_t i = 0; i < r->pushers; i++)
		join(push[i].t);
	for (size_t i = 0; i < r->pullers; i++)
		join(pull[i].t);
	/* Sometimes let free cancel and wait. */
	int err = -1;
	bool waited = mode == CLEAN || mode == ERROR || rng_below(g, 2);
	if (waited && conc_pipeline_wait(r->p, &err) != CONC_OK)
		fail("conc_pipeline_wait");
	struct conc_stage_stats st[MAX_STAGES];
	for (size_t i = 0; waited && i < r->nstages; i++)
		if (conc_pipeline_stats(r->p, i, &st[i]) != CONC_OK)
			fail("conc_pipeline_stats");
	if (conc_pipeline_free(r->p) != CONC_OK)
		fail("conc_pipeline_free");
	if (conc_ctx_destroy(&parent) != CONC_OK)
		fail("parent ctx destroy");

	/* Every pushed item exactly once, nothing else. */
	uint64_t total = 0;
	for (size_t p = 0; p < r->pushers; p++) {
		total += r->pushed[p];
		for (size_t i = 0; i < r->per_pusher; i++) {
			unsigned char seen = atomic_load(&r->ledger.seen[p * r->per_pusher + i]);
			if (seen != (i < r->pushed[p]))
				fail("producer %zu item %zu (of %llu pushed) seen %u times", p, i,
				     (unsigned long long)r->pushed[p], seen);
		}
	}
	if (atomic_load(&r->marked) != total)
		fail("%llu pushed, %llu pulled or dropped", (unsigned long long)total,
		     (unsigned long long)atomic_load(&r->marked));
	if (waited) {
		switch (mode) {
		case CLEAN:
			if (err != 0)
				fail("clean run ended with %d", err);
			for (size_t i = 0; i < r->nstages; i++) {
				if (st[i].items_in != st[i].items_out + st[i].skipped || st[i].errors || st[i].dropped)
					fail("stage %zu: in %llu, out %llu, skipped %llu", i,
					     (unsigned long long)st[i].items_in, (unsigned long long)st[i].items_out,
					     (unsigned long long)st[i].skipped);
				if (i + 1 < r->nstages && st[i].items_out != st[i + 1].items_in)
					fail("stage %zu sent %llu, stage %zu received %llu", i,
					     (unsigned long long)st[i].items_out, i + 1, (unsigned long long)st[i + 1].items_in);
			}
			if (st[0].items_in != total)
				fail("stage 0 received %llu of %llu", (unsigned long long)st[0].items_in,
				     (unsigned long long)total);
			break;
		case CANCEL:
			if (err != 0 && err != 77)
				fail("canceled run ended with %d", err);
			if (!canceled && err != 0)
				fail("a run that finished first ended with %d", err);
			break;
		case ERROR:
			if (err != 1000 + (int)(r->fail_item % 7) && err != 0)
				fail("erroring run ended with %d", err);
			/* fail_item % 7 != 3: no stage skips it. */
			if (err == 0 && r->pushed[CONC_TEST_PRODUCER(r->fail_item)] > CONC_TEST_SEQ(r->fail_item))
				fail("the failing item was pushed but the run ended cleanly");
			break;
		case DEADLINE:
			if (err != 0 && err != CONC_TIMEDOUT)
				fail("deadline run ended with %d", err);
			break;
		case BLOCK:
			if (err != 88)
				fail("blocked run ended with %d, not the cancel cause", err);
			break;
		}
	}
	conc_test_ledger_free(&r->ledger);
	free(r);
}

static void scenario(size_t arg)
{
	enum mode mode = (enum mode)(arg & 0xff);
	int order_pref = (int)(arg >> 8) - 1; /* -1 unordered, 0 mixed, 1 ordered */
	size_t rounds = SIZED(24, 12);
	for (size_t i = 0; i < rounds && !atomic_load(&failed_flag); i++) {
		struct rng g = rng_for(i + 1000 * arg);
		one_run(&g, mode, order_pref);
	}
}

#define ARG(mode, pref) ((size_t)(mode) | ((size_t)((pref) + 1) << 8))

static const struct scenario scenarios[] = {
	{"clean, unordered stages", scenario, ARG(CLEAN, -1)},
	{"clean, ordered stages (order checked)", scenario, ARG(CLEAN, 1)},
	{"clean, mixed", scenario, ARG(CLEAN, 0)},
	{"cancel at a random point, ordered", scenario, ARG(CANCEL, 1)},
	{"cancel at a random point, mixed", scenario, ARG(CANCEL, 0)},
	{"a stage returns an error, ordered", scenario, ARG(ERROR, 1)},
	{"a stage returns an error, mixed", scenario, ARG(ERROR, 0)},
	{"parent deadline, mixed", scenario, ARG(DEADLINE, 0)},
	{"a stage blocks until canceled, ordered", scenario, ARG(BLOCK, 1)},
	{"a stage blocks until canceled, mixed", scenario, ARG(BLOCK, 0)},
};

int main(void)
{
	(void)barrier_init; /* the harness's, unused here */
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
