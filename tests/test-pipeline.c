/* SPDX-License-Identifier: MIT */
/*
 * Pipelines: behaviour (values, order, filters, element sizes, counters),
 * cancellation and deadlines from another thread (the caller's cancel, the
 * parent's cancel and deadline, a stage that errs, a stage that blocks until
 * canceled), blocked push/pull/wait, bad input, and fault injection
 * (allocation failure at every allocation, thread creation failure).  Every
 * run checks the item accounting: pushed == pulled + dropped, exactly.
 *
 * Worker threads never assert: they record, the test asserts after joining.
 */

/* Feature macros before any system header (conc.h comes after the hooks). */
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Allocation and thread-creation hooks: fail the n-th call (countdown 0). */
static _Atomic long alloc_countdown = -1;
static _Atomic long thread_countdown = -1;

static void *test_alloc(size_t align, size_t size)
{
	if (atomic_fetch_sub(&alloc_countdown, 1) == 0)
		return NULL;
	return aligned_alloc(align, size);
}

static int test_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	if (atomic_fetch_sub(&thread_countdown, 1) == 0)
		return EAGAIN;
	return pthread_create(t, NULL, fn, arg);
}

#define CONC_ALIGNED_ALLOC(align, size) test_alloc((align), (size))
#define CONC_FREE(p) free(p)
#define CONC_THREAD_CREATE(t, fn, arg) test_thread_create((t), (fn), (arg))

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"

#define MS INT64_C(1000000)

/* ------------------------------------------------------------------ helpers */

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	cr_assert_eq(pthread_create(t, NULL, fn, arg), 0, "pthread_create");
}

static void join(pthread_t t)
{
	cr_assert_eq(pthread_join(t, NULL), 0, "pthread_join");
}

/* The destructor of every item type in these tests: counts (and checks the
 * item is a real one: never zero). */
struct drops {
	_Atomic(uint64_t) n, bad;
};

static void count_drop(void *elem, void *arg)
{
	struct drops *d = arg;
	uint64_t v;
	memcpy(&v, elem, sizeof v);
	if (v == 0)
		atomic_fetch_add(&d->bad, 1);
	atomic_fetch_add(&d->n, 1);
}

static uint64_t drops_n(struct drops *d)
{
	cr_assert_eq(atomic_load(&d->bad), 0, "a destructor got a zero (never pushed) item");
	return atomic_load(&d->n);
}

/* Stage functions; the arg is a struct stage_arg. */
struct stage_arg {
	uint64_t fail_at;   /* fail_fn: the value that errs (0: none) */
	int code;           /* its error code */
	_Atomic(int) entered; /* block_fn: calls that are blocking */
};

static int ident(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg, (void)ctx;
	memcpy(out, in, sizeof(uint64_t));
	return 0;
}

static int plus1(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg, (void)ctx;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	v += 1;
	memcpy(out, &v, sizeof v);
	return 0;
}

/* Some work that depends on the value, so parallel workers finish out of order. */
static int scramble(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg, (void)ctx;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	for (uint64_t i = 0; i < (v * 7919) % 97 * 20; i++)
		conc_cpu_relax();
	if (v % 13 == 0)
		conc_yield();
	memcpy(out, &v, sizeof v);
	return 0;
}

static int evens(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg, (void)ctx;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	if (v % 2)
		return CONC_STAGE_SKIP;
	memcpy(out, &v, sizeof v);
	return 0;
}

static int fail_fn(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	struct stage_arg *a = arg;
	(void)ctx;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	if (v == a->fail_at)
		return a->code;
	memcpy(out, &v, sizeof v);
	return 0;
}

/* Never returns until the pipeline is canceled (or its deadline passes). */
static int block_fn(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	struct stage_arg *a = arg;
	(void)in, (void)out;
	atomic_fetch_add(&a->entered, 1);
	return conc_ctx_wait_until(ctx, conc_deadline_forever());
}

static struct conc_pipeline *new_pipe(size_t esize, size_t cap, struct drops *d, struct conc_ctx *parent)
{
	struct conc_pipeline *p = NULL;
	struct conc_pipeline_config cfg = {.esize = esize, .queue_cap = cap, .drop = count_drop, .drop_arg = d,
					   .parent = parent};
	cr_assert_eq(conc_pipeline_new(&p, &cfg), CONC_OK);
	cr_assert_not_null(p);
	return p;
}

static void add(struct conc_pipeline *p, struct conc_stage_config cfg)
{
	cr_assert_eq(conc_pipeline_add_stage(p, &cfg), CONC_OK);
}

/* A pusher thread: pushes 1..n (never 0), then closes the input. */
struct pusher {
	struct conc_pipeline *p;
	uint64_t n, pushed;
	enum conc_status last;
	pthread_t t;
};

static void *pusher_main(void *arg)
{
	struct pusher *ps = arg;
	ps->last = CONC_OK;
	for (uint64_t v = 1; v <= ps->n; v++) {
		ps->last = conc_pipeline_push(ps->p, &v);
		if (ps->last != CONC_OK)
			break;
		ps->pushed++;
	}
	conc_pipeline_close_input(ps->p);
	return NULL;
}

static void push_async(struct pusher *ps, struct conc_pipeline *p, uint64_t n)
{
	memset(ps, 0, sizeof *ps);
	ps->p = p;
	ps->n = n;
	start(&ps->t, pusher_main, ps);
}

/* Pull everything; returns the count, checks order if asked, sums into *sum. */
static uint64_t pull_all(struct conc_pipeline *p, bool in_order, uint64_t offset, uint64_t *sum,
			 enum conc_status *end)
{
	uint64_t v, n = 0, s = 0;
	enum conc_status st;
	while ((st = conc_pipeline_pull(p, &v)) == CONC_OK) {
		if (in_order)
			cr_assert_eq(v, 1 + offset + n, "out of order: %llu, expected %llu", (unsigned long long)v,
				     (unsigned long long)(1 + offset + n));
		s += v;
		n++;
	}
	if (sum)
		*sum = s;
	if (end)
		*end = st;
	return n;
}

static int finish(struct conc_pipeline *p)
{
	int err = -12345;
	cr_assert_eq(conc_pipeline_wait(p, &err), CONC_OK);
	cr_assert_eq(conc_pipeline_free(p), CONC_OK);
	return err;
}

/* ---------------------------------------------------------------- behaviour */

Test(pipeline, gen_square)
{
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 0, &d, NULL);
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 1});
	cr_assert_eq(conc_pipeline_stages(p), 1u);
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	uint64_t v = 2;
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK);
	v = 3;
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK);
	cr_assert_eq(conc_pipeline_close_input(p), CONC_OK);
	cr_assert_eq(conc_pipeline_close_input(p), CONC_CLOSED);
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_CLOSED);
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_OK);
	cr_assert_eq(v, 3);
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_OK);
	cr_assert_eq(v, 4);
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_CLOSED);
	cr_assert_eq(finish(p), 0);
	cr_assert_eq(drops_n(&d), 0);
}

Test(pipeline, three_stages_every_item_once)
{
	const uint64_t n = 20000;
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 8, &d, NULL);
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 3, .queue_cap = 4, .drop = count_drop, .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = scramble, .workers = 4, .batch = 3, .drop = count_drop, .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 2, .queue_cap = 1, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, n);
	struct conc_test_ledger l;
	conc_test_ledger_init(&l, 1, n + 3);
	uint64_t v, got = 0;
	enum conc_status s;
	while ((s = conc_pipeline_pull(p, &v)) == CONC_OK) {
		cr_assert_eq(conc_test_ledger_mark(&l, v), 0, "duplicate or bad item %llu", (unsigned long long)v);
		got++;
	}
	cr_assert_eq(s, CONC_CLOSED);
	join(ps.t);
	cr_assert_eq(ps.pushed, n);
	cr_assert_eq(got, n);
	for (uint64_t i = 3; i < n + 3; i++)
		cr_assert_eq(atomic_load(&l.seen[i]), 1, "item %llu missing", (unsigned long long)i);
	conc_test_ledger_free(&l);
	struct conc_stage_stats st;
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(conc_pipeline_stats(p, i, &st), CONC_OK);
		cr_assert_eq(st.items_in, n);
		cr_assert_eq(st.items_out, n);
		cr_assert_eq(st.errors + st.skipped + st.dropped, 0);
	}
	cr_assert_eq(st.workers, 2);
	cr_assert_eq(finish(p), 0);
	cr_assert_eq(drops_n(&d), 0);
}

static void ordered_run(size_t workers, size_t batch, size_t window, size_t cap)
{
	const uint64_t n = 5000;
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), cap, &d, NULL);
	add(p, (struct conc_stage_config){.fn = scramble, .workers = workers, .ordered = true, .batch = batch,
					  .window = window, .queue_cap = cap, .drop = count_drop, .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = plus1, .workers = workers, .ordered = true, .batch = batch,
					  .window = window, .queue_cap = cap, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, n);
	uint64_t v, want = 2;
	enum conc_status s;
	while ((s = conc_pipeline_pull(p, &v)) == CONC_OK) {
		cr_assert_eq(v, want, "got %llu, expected %llu", (unsigned long long)v, (unsigned long long)want);
		want++;
	}
	cr_assert_eq(s, CONC_CLOSED);
	cr_assert_eq(want, n + 2);
	join(ps.t);
	cr_assert_eq(finish(p), 0);
	cr_assert_eq(drops_n(&d), 0);
}

Test(pipeline, ordered_keeps_input_order)
{
	ordered_run(4, 1, 1, 2);  /* a window of 1: strictly one at a time */
	ordered_run(4, 1, 2, 2);
	ordered_run(3, 4, 4, 16); /* batches wider than the window per worker */
	ordered_run(5, 0, 0, 0);  /* defaults */
	ordered_run(1, 0, 0, 0);  /* one worker: ordered anyway */
}

Test(pipeline, filter_drops_skipped_items)
{
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 4, &d, NULL);
	/* Skips inside an ordered stage, then a one-worker stage (in order too). */
	add(p, (struct conc_stage_config){.fn = evens, .workers = 3, .ordered = true, .batch = 2, .drop = count_drop,
					  .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = evens, .workers = 1, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, 1000);
	uint64_t v, prev = 0, got = 0;
	while (conc_pipeline_pull(p, &v) == CONC_OK) {
		cr_assert_eq(v % 2, 0);
		cr_assert_gt(v, prev, "the ordered stage reordered");
		prev = v;
		got++;
	}
	join(ps.t);
	cr_assert_eq(got, 500);
	struct conc_stage_stats st;
	cr_assert_eq(conc_pipeline_stats(p, 0, &st), CONC_OK);
	cr_assert_eq(st.skipped, 500);
	cr_assert_eq(st.items_out, 500);
	cr_assert_eq(finish(p), 0);
	cr_assert_eq(drops_n(&d), 500, "each skipped item goes to the destructor");
}

/* An output type of another size. */
struct wide {
	uint64_t v, sq;
	char tag[8];
};

static int widen(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg, (void)ctx;
	struct wide w = {0};
	memcpy(&w.v, in, sizeof w.v);
	w.sq = w.v * w.v;
	memcpy(w.tag, "wide", 5);
	memcpy(out, &w, sizeof w);
	return 0;
}

Test(pipeline, output_element_size)
{
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 0, &d, NULL);
	add(p, (struct conc_stage_config){.fn = widen, .workers = 3, .ordered = true, .out_esize = sizeof(struct wide)});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	cr_assert_eq(conc_chan_elem_size(conc_pipeline_output(p)), sizeof(struct wide));
	cr_assert_eq(conc_chan_elem_size(conc_pipeline_input(p)), sizeof(uint64_t));
	struct pusher ps;
	push_async(&ps, p, 300);
	struct wide w;
	uint64_t want = 1;
	while (conc_pipeline_pull(p, &w) == CONC_OK) {
		cr_assert_eq(w.v, want);
		cr_assert_eq(w.sq, want * want);
		cr_assert_str_eq(w.tag, "wide");
		want++;
	}
	join(ps.t);
	cr_assert_eq(want, 301);
	cr_assert_eq(finish(p), 0);
}

/* A slow last stage: the stage before it waits on a full output. */
static int slow(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg;
	(void)conc_ctx_wait_until(ctx, conc_deadline_in_ns(100000));
	memcpy(out, in, sizeof(uint64_t));
	return 0;
}

Test(pipeline, counters_show_the_bottleneck)
{
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 2, &d, NULL);
	add(p, (struct conc_stage_config){.fn = ident, .workers = 1, .queue_cap = 2});
	add(p, (struct conc_stage_config){.fn = slow, .workers = 1, .queue_cap = 2});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, 200);
	cr_assert_eq(pull_all(p, true, 0, NULL, NULL), 200);
	join(ps.t);
	struct conc_stage_stats a, b;
	cr_assert_eq(conc_pipeline_stats(p, 0, &a), CONC_OK);
	cr_assert_eq(conc_pipeline_stats(p, 1, &b), CONC_OK);
	cr_assert_gt(a.ns_blocked_out, 0, "the fast stage never waited for the slow one");
	cr_assert_eq(a.items_out, 200);
	cr_assert_eq(b.items_in, 200);
	cr_assert_eq(finish(p), 0);
}

/* ------------------------------------------------------------ cancellation */

/* Run a pipeline whose stage errs; the accounting must be exact. */
static void error_run(bool ordered)
{
	struct drops d = {0};
	struct stage_arg a = {.fail_at = 777, .code = 4242};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 4, &d, NULL);
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 2, .drop = count_drop, .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = fail_fn, .arg = &a, .workers = 3, .ordered = ordered,
					  .drop = count_drop, .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = ident, .workers = 2, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, 100000);
	enum conc_status end;
	uint64_t got = pull_all(p, false, 0, NULL, &end);
	join(ps.t);
	cr_assert_eq(end, CONC_CANCELED);
	cr_assert_eq(ps.last, CONC_CANCELED, "the pusher was stopped by the failure");
	cr_assert_lt(got, 100000);
	struct conc_stage_stats st;
	cr_assert_eq(conc_pipeline_stats(p, 1, &st), CONC_OK);
	cr_assert_eq(st.errors, 1);
	cr_assert_eq(conc_pipeline_err(p), 4242);
	cr_assert_eq(finish(p), 4242);
	cr_assert_eq(ps.pushed, got + drops_n(&d), "pushed %llu, pulled %llu, dropped %llu",
		     (unsigned long long)ps.pushed, (unsigned long long)got, (unsigned long long)drops_n(&d));
}

Test(pipeline, stage_error_cancels_everything)
{
	error_run(false);
	error_run(true);
}

/* A stage that blocks until canceled; the cancel comes from another thread. */
struct canceler {
	struct conc_pipeline *p;
	struct conc_ctx *parent;
	struct stage_arg *a;
	int wait_for, cause;
	pthread_t t;
};

static void *canceler_main(void *arg)
{
	struct canceler *c = arg;
	while (atomic_load(&c->a->entered) < c->wait_for)
		conc_yield();
	if (c->parent)
		(void)conc_ctx_cancel(c->parent, c->cause);
	else
		(void)conc_pipeline_cancel(c->p, c->cause);
	return NULL;
}

static void blocked_run(bool ordered, bool via_parent)
{
	struct drops d = {0};
	struct stage_arg a = {0};
	struct conc_ctx parent;
	cr_assert_eq(conc_ctx_init_root(&parent), CONC_OK);
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 4, &d, &parent);
	add(p, (struct conc_stage_config){.fn = ident, .workers = 2, .drop = count_drop, .drop_arg = &d});
	add(p, (struct conc_stage_config){.fn = block_fn, .arg = &a, .workers = 3, .ordered = ordered,
					  .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, 1000); /* blocks: the pipeline is stuck */
	struct canceler c = {.p = p, .parent = via_parent ? &parent : NULL, .a = &a, .wait_for = 3, .cause = 99};
	start(&c.t, canceler_main, &c);
	enum conc_status end;
	uint64_t got = pull_all(p, false, 0, NULL, &end);
	join(c.t);
	join(ps.t);
	cr_assert_eq(got, 0);
	cr_assert_eq(end, CONC_CANCELED);
	cr_assert_eq(ps.last, CONC_CANCELED);
	cr_assert_eq(finish(p), 99);
	cr_assert_eq(ps.pushed, drops_n(&d));
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK);
}

Test(pipeline, blocked_stage_returns_on_cancel)
{
	blocked_run(false, false);
	blocked_run(true, false);
	blocked_run(false, true);
	blocked_run(true, true);
}

Test(pipeline, parent_deadline_times_the_pipeline_out)
{
	struct drops d = {0};
	struct stage_arg a = {0};
	struct conc_ctx parent;
	cr_assert_eq(conc_ctx_init(&parent, NULL, conc_deadline_in_ms(20)), CONC_OK);
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 4, &d, &parent);
	add(p, (struct conc_stage_config){.fn = block_fn, .arg = &a, .workers = 2, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, 100);
	enum conc_status end;
	cr_assert_eq(pull_all(p, false, 0, NULL, &end), 0);
	join(ps.t);
	cr_assert_eq(end, CONC_CANCELED);
	cr_assert_eq(finish(p), CONC_TIMEDOUT);
	cr_assert_eq(ps.pushed, drops_n(&d));
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK);
}

/* Window waiters: a stage whose first item blocks until cancel, while the
 * others run ahead and must wait on the reorder window. */
static int first_blocks(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	struct stage_arg *a = arg;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	if (v == 1) {
		atomic_fetch_add(&a->entered, 1);
		return conc_ctx_wait_until(ctx, conc_deadline_forever());
	}
	memcpy(out, &v, sizeof v);
	return 0;
}

Test(pipeline, window_waiters_return_on_cancel)
{
	struct drops d = {0};
	struct stage_arg a = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 64, &d, NULL);
	add(p, (struct conc_stage_config){.fn = first_blocks, .arg = &a, .workers = 4, .ordered = true, .batch = 1,
					  .window = 4, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	for (uint64_t v = 1; v <= 40; v++)
		cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK);
	/* The three other workers park on the window (items 5, 6, 7 do not fit). */
	conc_test_wait_parked(&p->first->window_q, 3);
	while (atomic_load(&a.entered) < 1)
		conc_yield();
	uint64_t v;
	cr_assert_eq(conc_pipeline_pull_until(p, &v, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_pipeline_cancel(p, 0), CONC_OK);
	cr_assert_eq(conc_pipeline_cancel(p, 5), CONC_CANCELED, "already canceled");
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_CANCELED);
	cr_assert_eq(finish(p), CONC_CANCELED);
	cr_assert_eq(drops_n(&d), 40);
}

/* Blocked calls of the caller: pull with its own ctx, wait with a deadline,
 * push into a full input, all ended from another thread or by deadline. */
struct puller {
	struct conc_pipeline *p;
	struct conc_ctx *ctx;
	enum conc_status s;
	pthread_t t;
};

static void *puller_main(void *arg)
{
	struct puller *pl = arg;
	uint64_t v;
	pl->s = conc_pipeline_pull_until(pl->p, &v, conc_deadline_forever(), pl->ctx);
	return NULL;
}

Test(pipeline, caller_calls_cancel_and_time_out)
{
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 1, &d, NULL);
	add(p, (struct conc_stage_config){.fn = ident, .workers = 2, .drop = count_drop, .drop_arg = &d});
	cr_assert_eq(conc_pipeline_wait(p, NULL), CONC_INVALID, "not started");
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);

	/* A pull canceled through the caller's own context: the pipeline lives on. */
	struct conc_ctx mine;
	cr_assert_eq(conc_ctx_init_root(&mine), CONC_OK);
	struct puller pl = {.p = p, .ctx = &mine};
	start(&pl.t, puller_main, &pl);
	conc_test_wait_chan_parked(conc_pipeline_output(p), false, 1);
	cr_assert_eq(conc_ctx_cancel(&mine, 0), CONC_OK);
	join(pl.t);
	cr_assert_eq(pl.s, CONC_CANCELED);
	cr_assert_eq(conc_ctx_destroy(&mine), CONC_OK);
	cr_assert_eq(conc_pipeline_err(p), 0);

	/* Waits with deadlines give up; the pipeline runs on. */
	cr_assert_eq(conc_pipeline_wait_until(p, conc_deadline_poll(), NULL, NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_pipeline_wait_until(p, conc_deadline_in_ms(5), NULL, NULL), CONC_TIMEDOUT);
	uint64_t v;
	cr_assert_eq(conc_pipeline_pull_until(p, &v, conc_deadline_in_ms(2), NULL), CONC_TIMEDOUT);

	/* A pull blocked on the pipeline returns when it is canceled. */
	pl.ctx = NULL;
	start(&pl.t, puller_main, &pl);
	conc_test_wait_chan_parked(conc_pipeline_output(p), false, 1);
	cr_assert_eq(conc_pipeline_cancel(p, 31), CONC_OK);
	join(pl.t);
	cr_assert_eq(pl.s, CONC_CANCELED);
	v = 1;
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_CANCELED);
	cr_assert_eq(finish(p), 31);
}

struct blocked_push {
	struct conc_pipeline *p;
	enum conc_status s;
	pthread_t t;
};

static void *blocked_push_main(void *arg)
{
	struct blocked_push *b = arg;
	uint64_t v = 7;
	b->s = conc_pipeline_push(b->p, &v);
	return NULL;
}

Test(pipeline, push_into_full_input_returns_on_cancel)
{
	struct drops d = {0};
	struct stage_arg a = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 1, &d, NULL);
	add(p, (struct conc_stage_config){.fn = block_fn, .arg = &a, .workers = 1, .batch = 1});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	uint64_t v = 1;
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK); /* taken by the worker, which blocks */
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK); /* fills the input */
	cr_assert_eq(conc_pipeline_push_until(p, &v, conc_deadline_in_ms(1), NULL), CONC_TIMEDOUT);
	struct blocked_push b = {.p = p};
	start(&b.t, blocked_push_main, &b);
	conc_test_wait_chan_parked(conc_pipeline_input(p), true, 1);
	cr_assert_eq(conc_pipeline_cancel(p, 0), CONC_OK);
	join(b.t);
	cr_assert_eq(b.s, CONC_CANCELED);
	cr_assert_eq(finish(p), CONC_CANCELED);
	cr_assert_eq(drops_n(&d), 2);
}

Test(pipeline, free_cancels_and_drops_everything)
{
	/* Never started: what was pushed is dropped. */
	struct drops d = {0};
	struct conc_pipeline *p = new_pipe(sizeof(uint64_t), 8, &d, NULL);
	add(p, (struct conc_stage_config){.fn = ident, .workers = 2});
	for (uint64_t v = 1; v <= 5; v++)
		cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK);
	cr_assert_eq(conc_pipeline_free(p), CONC_OK);
	cr_assert_eq(drops_n(&d), 5);

	/* Running, input never closed, output never pulled: free cancels. */
	struct drops d2 = {0};
	p = new_pipe(sizeof(uint64_t), 8, &d2, NULL);
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 3, .queue_cap = 3, .drop = count_drop, .drop_arg = &d2});
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 3, .ordered = true, .queue_cap = 3,
					  .drop = count_drop, .drop_arg = &d2});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	uint64_t pushed = 0;
	for (uint64_t v = 1; v <= 100; v++) {
		if (conc_pipeline_push_until(p, &v, conc_deadline_in_ms(1), NULL) != CONC_OK)
			break;
		pushed++;
	}
	cr_assert_eq(conc_pipeline_free(p), CONC_OK);
	cr_assert_eq(drops_n(&d2), pushed);

	/* Finished cleanly, output not pulled: free drops the output. */
	struct drops d3 = {0};
	p = new_pipe(sizeof(uint64_t), 8, &d3, NULL);
	add(p, (struct conc_stage_config){.fn = plus1, .workers = 2, .ordered = true, .drop = count_drop, .drop_arg = &d3});
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	for (uint64_t v = 1; v <= 6; v++)
		cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK);
	conc_pipeline_close_input(p);
	int err = -1;
	cr_assert_eq(conc_pipeline_wait(p, &err), CONC_OK);
	cr_assert_eq(err, 0);
	cr_assert_eq(conc_pipeline_free(p), CONC_OK);
	cr_assert_eq(drops_n(&d3), 6);
}

/* ---------------------------------------------------------------- bad input */

Test(pipeline, bad_input)
{
	struct conc_pipeline *p = NULL;
	struct conc_pipeline_config cfg = {.esize = 8};
	cr_assert_eq(conc_pipeline_new(NULL, &cfg), CONC_INVALID);
	cr_assert_eq(conc_pipeline_new(&p, NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_new(&p, &(struct conc_pipeline_config){.esize = 0}), CONC_INVALID);
	cr_assert_eq(conc_pipeline_new(&p, &(struct conc_pipeline_config){.esize = SIZE_MAX}), CONC_OVERFLOW);
	cr_assert_eq(conc_pipeline_new(&p, &(struct conc_pipeline_config){.esize = 8, .queue_cap = SIZE_MAX}),
		     CONC_INVALID);
	cr_assert_null(p);

	cr_assert_eq(conc_pipeline_add_stage(NULL, &(struct conc_stage_config){.fn = ident, .workers = 1}),
		     CONC_INVALID);
	cr_assert_eq(conc_pipeline_start(NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_push(NULL, &cfg), CONC_INVALID);
	cr_assert_eq(conc_pipeline_pull(NULL, &cfg), CONC_INVALID);
	cr_assert_eq(conc_pipeline_close_input(NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_cancel(NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_pipeline_err(NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_wait(NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_free(NULL), CONC_OK);
	cr_assert_null(conc_pipeline_input(NULL));
	cr_assert_null(conc_pipeline_output(NULL));
	cr_assert_eq(conc_pipeline_stages(NULL), 0);
	struct conc_stage_stats st;
	cr_assert_eq(conc_pipeline_stats(NULL, 0, &st), CONC_INVALID);

	struct drops d = {0};
	p = new_pipe(8, 0, &d, NULL);
	uint64_t v = 1;
	cr_assert_eq(conc_pipeline_start(p), CONC_INVALID, "no stages");
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_INVALID, "no stages");
	cr_assert_null(conc_pipeline_output(p));
	cr_assert_eq(conc_pipeline_add_stage(p, NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.workers = 1}), CONC_INVALID);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.fn = ident}), CONC_INVALID);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.fn = ident, .workers = 100000}),
		     CONC_INVALID);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.fn = ident, .workers = 1, .batch = 1u << 20}),
		     CONC_INVALID);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.fn = ident, .workers = 2, .ordered = true,
									      .window = SIZE_MAX}),
		     CONC_INVALID);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.fn = ident, .workers = 1,
									      .out_esize = SIZE_MAX / 2}),
		     CONC_OVERFLOW);
	cr_assert_eq(conc_pipeline_stages(p), 0, "failed adds change nothing");
	add(p, (struct conc_stage_config){.fn = ident, .workers = 1});
	cr_assert_eq(conc_pipeline_push(p, NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_pull(p, NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_stats(p, 1, &st), CONC_INVALID);
	cr_assert_eq(conc_pipeline_stats(p, 0, NULL), CONC_INVALID);
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	cr_assert_eq(conc_pipeline_start(p), CONC_BUSY);
	cr_assert_eq(conc_pipeline_add_stage(p, &(struct conc_stage_config){.fn = ident, .workers = 1}), CONC_BUSY);
	conc_pipeline_close_input(p);
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_CLOSED);
	cr_assert_eq(finish(p), 0);
}

/* ----------------------------------------------------------- fault injection */

/* Build, run and free a 3-stage pipeline; with allocation number `fail`
 * failing, some step must report CONC_NOMEM and nothing may leak (ASan). */
static bool alloc_run(long fail)
{
	struct drops d = {0};
	struct conc_pipeline *p = NULL;
	atomic_store(&alloc_countdown, fail);
	struct conc_pipeline_config cfg = {.esize = 8, .drop = count_drop, .drop_arg = &d};
	enum conc_status s = conc_pipeline_new(&p, &cfg);
	struct conc_stage_config stages[] = {
		{.fn = plus1, .workers = 1, .drop = count_drop, .drop_arg = &d},
		{.fn = scramble, .workers = 3, .ordered = true, .drop = count_drop, .drop_arg = &d},
		{.fn = plus1, .workers = 1, .drop = count_drop, .drop_arg = &d},
	};
	for (size_t i = 0; s == CONC_OK && i < 3; i++)
		s = conc_pipeline_add_stage(p, &stages[i]);
	atomic_store(&alloc_countdown, -1);
	if (s != CONC_OK) {
		cr_assert_eq(s, CONC_NOMEM, "allocation %ld: %s", fail, conc_strerror(s));
		if (p) {
			uint64_t v = 9;
			cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK, "a pipeline whose add failed still works");
			cr_assert_eq(conc_pipeline_free(p), CONC_OK);
			cr_assert_eq(drops_n(&d), 1);
		}
		return true;
	}
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	struct pusher ps;
	push_async(&ps, p, 100);
	cr_assert_eq(pull_all(p, true, 2, NULL, NULL), 100);
	join(ps.t);
	cr_assert_eq(finish(p), 0);
	return false;
}

Test(pipeline, allocation_failure_everywhere)
{
	long n = 0;
	while (alloc_run(n))
		n++;
	cr_assert_geq(n, 8, "expected at least 8 allocations, saw %ld", n);
}

Test(pipeline, thread_creation_failure)
{
	for (long fail = 0; fail < 6; fail++) {
		struct drops d = {0};
		struct conc_pipeline *p = new_pipe(8, 16, &d, NULL);
		add(p, (struct conc_stage_config){.fn = plus1, .workers = 2, .ordered = true, .drop = count_drop, .drop_arg = &d});
		add(p, (struct conc_stage_config){.fn = plus1, .workers = 3, .ordered = true, .drop = count_drop,
						  .drop_arg = &d});
		for (uint64_t v = 1; v <= 10; v++)
			cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK);
		atomic_store(&thread_countdown, fail);
		enum conc_status s = conc_pipeline_start(p);
		atomic_store(&thread_countdown, -1);
		if (fail < 5) {
			cr_assert_eq(s, CONC_NOMEM);
			int err = 0;
			cr_assert_eq(conc_pipeline_wait(p, &err), CONC_OK);
			cr_assert_eq(err, CONC_NOMEM);
			cr_assert_eq(conc_pipeline_free(p), CONC_OK);
			cr_assert_eq(drops_n(&d), 10);
		} else {
			cr_assert_eq(s, CONC_OK);
			conc_pipeline_close_input(p);
			cr_assert_eq(pull_all(p, true, 2, NULL, NULL), 10);
			cr_assert_eq(finish(p), 0);
			cr_assert_eq(drops_n(&d), 0);
		}
	}
}
