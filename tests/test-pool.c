/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of conc/pool.h: behaviour, deadlines and cancellation from
 * another thread, calls from the pool's own workers, shutdown in both modes,
 * bad input, and fault injection (failing allocation and thread creation,
 * tasks that report errors, a task that never returns until canceled).
 *
 * No sleep stands in for synchronisation: tasks block on gates (channels or
 * the pool's context), and "while it is blocked" steps wait until the thread
 * is parked.  Deadlines are only ever asserted to have passed, never timed.
 * Every test has the same .timeout: Criterion's runner leaks a few bytes
 * (an ASan failure) when tests with different timeouts run side by side.
 */
#define _DEFAULT_SOURCE 1 /* conc needs POSIX; the hooks below include system headers first */
#include <stdatomic.h>
#include <stdlib.h>

/* Fault injection: the allocation budget (< 0: unlimited) and the number of
 * threads that may still be created (< 0: unlimited).  Set by one test at a
 * time, before the calls that read them. */
static atomic_long alloc_budget = -1;
static atomic_long thread_budget = -1;

static void *test_alloc(size_t align, size_t size)
{
	long b = atomic_load(&alloc_budget);
	while (b > 0 && !atomic_compare_exchange_weak(&alloc_budget, &b, b - 1))
		;
	return b == 0 ? NULL : aligned_alloc(align, size);
}

#define CONC_ALIGNED_ALLOC(align, size) test_alloc((align), (size))
#define CONC_FREE(p) free(p)

#include <pthread.h>
static int test_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	long b = atomic_load(&thread_budget);
	while (b > 0 && !atomic_compare_exchange_weak(&thread_budget, &b, b - 1))
		;
	return b == 0 ? 11 /* EAGAIN */ : pthread_create(t, NULL, fn, arg);
}
#define CONC_THREAD_CREATE(t, fn, arg) test_thread_create((t), (fn), (arg))

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

/* ------------------------------------------------------------------ helpers */

static struct conc_pool *new_pool(size_t threads, size_t cap)
{
	struct conc_pool *p = NULL;
	struct conc_pool_config cfg = {.threads = threads, .queue_cap = cap};
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OK);
	cr_assert_not_null(p);
	return p;
}

static void free_pool(struct conc_pool *p)
{
	cr_assert_eq(conc_pool_free(p), CONC_OK);
}

/* A task's record: how often fn and drop ran, and what it saw. */
struct rec {
	atomic_int ran, dropped;
	atomic_int status;
	pthread_t thread;
};

static void rec_run(void *arg)
{
	struct rec *r = arg;
	r->thread = pthread_self();
	atomic_fetch_add(&r->ran, 1);
}

static void rec_drop(void *arg)
{
	struct rec *r = arg;
	atomic_fetch_add(&r->dropped, 1);
}

/* A gate: a task that says it started, then blocks until released. */
struct gate {
	struct conc_chan *started, *release;
	struct rec rec;
};

static void gate_init(struct gate *g)
{
	memset(g, 0, sizeof *g);
	g->started = new_chan(1, sizeof(uint64_t));
	g->release = new_chan(1, sizeof(uint64_t));
}

static void gate_task(void *arg)
{
	struct gate *g = arg;
	uint64_t v = 1;
	atomic_store(&g->rec.status, conc_chan_send(g->started, &v));
	if (conc_chan_recv(g->release, &v) != CONC_OK)
		atomic_store(&g->rec.status, CONC_INVALID);
	atomic_fetch_add(&g->rec.ran, 1);
}

/* Occupy one worker with the gate and wait until it runs there. */
static void gate_hold(struct conc_pool *p, struct gate *g)
{
	cr_assert_eq(conc_pool_submit(p, gate_task, g, rec_drop), CONC_OK);
	uint64_t v;
	cr_assert_eq(conc_chan_recv(g->started, &v), CONC_OK);
}

static void gate_open(struct gate *g)
{
	put(g->release, 1);
}

static void gate_free(struct gate *g)
{
	free_chan(g->started);
	free_chan(g->release);
}

/* A task that blocks until the pool's context is canceled (an ABORT). */
struct until_abort {
	struct conc_pool *pool;
	struct conc_chan *started;
	atomic_int status;
};

static void until_abort_task(void *arg)
{
	struct until_abort *u = arg;
	uint64_t v = 1;
	if (conc_chan_send(u->started, &v) != CONC_OK)
		return;
	atomic_store(&u->status, conc_ctx_wait_until(conc_pool_ctx(u->pool), conc_deadline_forever()));
}

/* ---------------------------------------------------------------- lifecycle */

Test(pool, new_rejects_bad_input, .timeout = 60)
{
	struct conc_pool *p = (struct conc_pool *)&p;
	struct conc_pool_config cfg = {.threads = 2, .queue_cap = 4};
	cr_assert_eq(conc_pool_new(NULL, &cfg), CONC_INVALID);
	cr_assert_eq(conc_pool_new(&p, NULL), CONC_INVALID);
	cfg.threads = 0;
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_INVALID);
	cfg.threads = 2;
	cfg.queue_cap = 0;
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_INVALID);
	cfg.queue_cap = CONC_CHAN_MAX_CAP + 1;
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_INVALID);
	cfg.queue_cap = 4;
	cfg.threads = SIZE_MAX;
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OVERFLOW);
	cfg.threads = SIZE_MAX / 8;
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OVERFLOW);
	cr_assert_eq(p, (struct conc_pool *)&p, "*out is set only on success");

	/* NULL pools everywhere. */
	cr_assert_eq(conc_pool_submit(NULL, rec_run, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_try_submit(NULL, rec_run, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_submit_until(NULL, rec_run, NULL, NULL, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_wait_idle(NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_shutdown(NULL, CONC_POOL_DRAIN), CONC_INVALID);
	cr_assert_eq(conc_pool_free(NULL), CONC_OK);
	cr_assert_eq(conc_pool_threads(NULL), 0);
	cr_assert_eq(conc_pool_pending(NULL), 0);
	cr_assert_null(conc_pool_ctx(NULL));

	/* NULL fn, bad mode. */
	p = new_pool(1, 1);
	cr_assert_eq(conc_pool_submit(p, NULL, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_try_submit(p, NULL, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_shutdown(p, (enum conc_pool_mode)7), CONC_INVALID);
	cr_assert_eq(conc_pool_pending(p), 0, "failed submits are not counted");
	cr_assert_eq(conc_pool_wait_idle_until(p, conc_deadline_poll(), NULL), CONC_OK);
	free_pool(p);
}

Test(pool, runs_every_task_exactly_once, .timeout = 60)
{
	enum { N = 5000 };
	struct conc_pool *p = new_pool(4, 8);
	cr_assert_eq(conc_pool_threads(p), 4);
	struct rec *recs = calloc(N, sizeof *recs);
	cr_assert_not_null(recs);
	size_t refused = 0;
	for (size_t i = 0; i < N; i++)
		refused += conc_pool_submit(p, rec_run, &recs[i], rec_drop) != CONC_OK;
	cr_assert_eq(refused, 0);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(conc_pool_pending(p), 0);
	/* One assertion for the lot, naming the first bad task. */
	size_t bad = N;
	for (size_t i = 0; i < N && bad == N; i++)
		if (atomic_load(&recs[i].ran) != 1 || atomic_load(&recs[i].dropped) != 0 ||
		    pthread_equal(recs[i].thread, pthread_self()))
			bad = i;
	cr_assert_eq(bad, N, "task %zu ran %d times, dropped %d times, on a worker: %d", bad,
		     atomic_load(&recs[bad % N].ran), atomic_load(&recs[bad % N].dropped),
		     !pthread_equal(recs[bad % N].thread, pthread_self()));
	free_pool(p);
	free(recs);
}

struct hooks {
	atomic_int start[4], stop[4];
	atomic_int on_caller;
	pthread_t caller;
};

static void hook_start(void *arg, size_t w)
{
	struct hooks *h = arg;
	if (w < 4)
		atomic_fetch_add(&h->start[w], 1);
	if (pthread_equal(pthread_self(), h->caller))
		atomic_fetch_add(&h->on_caller, 1);
}

static void hook_stop(void *arg, size_t w)
{
	struct hooks *h = arg;
	if (w < 4)
		atomic_fetch_add(&h->stop[w], 1);
	if (pthread_equal(pthread_self(), h->caller))
		atomic_fetch_add(&h->on_caller, 1);
}

Test(pool, hooks_run_once_per_worker_on_the_worker, .timeout = 60)
{
	struct hooks h;
	memset(&h, 0, sizeof h);
	h.caller = pthread_self();
	struct conc_pool_config cfg = {.threads = 4, .queue_cap = 2, .on_start = hook_start, .on_stop = hook_stop,
				       .hook_arg = &h};
	struct conc_pool *p;
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OK);
	struct rec r;
	memset(&r, 0, sizeof r);
	cr_assert_eq(conc_pool_submit(p, rec_run, &r, NULL), CONC_OK);
	free_pool(p);
	cr_assert_eq(atomic_load(&r.ran), 1, "free drains");
	for (int w = 0; w < 4; w++) {
		cr_assert_eq(atomic_load(&h.start[w]), 1, "on_start of worker %d", w);
		cr_assert_eq(atomic_load(&h.stop[w]), 1, "on_stop of worker %d", w);
	}
	cr_assert_eq(atomic_load(&h.on_caller), 0, "hooks run on the workers");
}

struct ordered {
	struct conc_chan *out;
	uint64_t id;
};

static void ordered_task(void *arg)
{
	struct ordered *o = arg;
	if (conc_chan_send(o->out, &o->id) != CONC_OK)
		abort();
}

Test(pool, one_worker_runs_tasks_in_submission_order, .timeout = 60)
{
	enum { N = 50 };
	struct conc_pool *p = new_pool(1, 3);
	struct conc_chan *out = new_chan(N, sizeof(uint64_t));
	struct ordered o[N];
	for (uint64_t i = 0; i < N; i++) {
		o[i] = (struct ordered){out, i};
		cr_assert_eq(conc_pool_submit(p, ordered_task, &o[i], NULL), CONC_OK);
	}
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	for (uint64_t i = 0; i < N; i++)
		expect(out, i);
	free_pool(p);
	free_chan(out);
}

/* ---------------------------------------------------------- back-pressure */

Test(pool, try_submit_reports_full, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 2);
	struct gate g;
	gate_init(&g);
	gate_hold(p, &g);
	struct rec r[3];
	memset(r, 0, sizeof r);
	cr_assert_eq(conc_pool_try_submit(p, rec_run, &r[0], rec_drop), CONC_OK);
	cr_assert_eq(conc_pool_try_submit(p, rec_run, &r[1], rec_drop), CONC_OK);
	cr_assert_eq(conc_pool_try_submit(p, rec_run, &r[2], rec_drop), CONC_FULL);
	cr_assert_eq(conc_pool_pending(p), 3, "the gate and two queued");
	gate_open(&g);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(atomic_load(&r[0].ran) + atomic_load(&r[1].ran), 2);
	cr_assert_eq(atomic_load(&r[2].ran) + atomic_load(&r[2].dropped), 0, "a refused task is the caller's");
	free_pool(p);
	gate_free(&g);
}

Test(pool, submit_until_times_out_on_a_full_queue, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 1);
	struct gate g;
	gate_init(&g);
	gate_hold(p, &g);
	struct rec r[2];
	memset(r, 0, sizeof r);
	cr_assert_eq(conc_pool_submit(p, rec_run, &r[0], rec_drop), CONC_OK);
	cr_assert_eq(conc_pool_submit_until(p, rec_run, &r[1], rec_drop, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_pool_submit_until(p, rec_run, &r[1], rec_drop, conc_deadline_in_ms(5), NULL),
		     CONC_TIMEDOUT);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ms(5)), CONC_OK);
	cr_assert_eq(conc_pool_submit_until(p, rec_run, &r[1], rec_drop, conc_deadline_forever(), &ctx),
		     CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	gate_open(&g);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(atomic_load(&r[0].ran), 1);
	cr_assert_eq(atomic_load(&r[1].ran) + atomic_load(&r[1].dropped), 0);
	free_pool(p);
	gate_free(&g);
}

struct blocked_submit {
	struct conc_pool *pool;
	struct conc_ctx *ctx;
	struct rec rec;
	enum conc_status status;
};

static void *blocked_submit_thread(void *arg)
{
	struct blocked_submit *b = arg;
	b->status = conc_pool_submit_until(b->pool, rec_run, &b->rec, rec_drop, conc_deadline_forever(), b->ctx);
	return NULL;
}

Test(pool, submit_canceled_from_another_thread, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 1);
	struct gate g;
	gate_init(&g);
	gate_hold(p, &g);
	struct rec filler;
	memset(&filler, 0, sizeof filler);
	cr_assert_eq(conc_pool_submit(p, rec_run, &filler, NULL), CONC_OK);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct blocked_submit b;
	memset(&b, 0, sizeof b);
	b.pool = p;
	b.ctx = &ctx;
	pthread_t t;
	start(&t, blocked_submit_thread, &b);
	conc_test_wait_chan_parked(&p->queue, true, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(t);
	cr_assert_eq(b.status, CONC_CANCELED);
	gate_open(&g);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(atomic_load(&b.rec.ran) + atomic_load(&b.rec.dropped), 0);
	cr_assert_eq(atomic_load(&filler.ran), 1);
	/* A done context fails the call before it tries, even with room. */
	cr_assert_eq(conc_pool_submit_until(p, rec_run, &b.rec, rec_drop, conc_deadline_forever(), &ctx),
		     CONC_CANCELED);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(atomic_load(&b.rec.ran), 0);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	free_pool(p);
	gate_free(&g);
}

Test(pool, shutdown_wakes_a_blocked_submitter_with_closed, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 1);
	struct until_abort u = {p, new_chan(1, sizeof(uint64_t)), 0};
	cr_assert_eq(conc_pool_submit(p, until_abort_task, &u, NULL), CONC_OK);
	uint64_t v;
	cr_assert_eq(conc_chan_recv(u.started, &v), CONC_OK);
	struct rec queued;
	memset(&queued, 0, sizeof queued);
	cr_assert_eq(conc_pool_submit(p, rec_run, &queued, rec_drop), CONC_OK);
	struct blocked_submit b;
	memset(&b, 0, sizeof b);
	b.pool = p;
	pthread_t t;
	start(&t, blocked_submit_thread, &b);
	conc_test_wait_chan_parked(&p->queue, true, 1);
	cr_assert_eq(conc_pool_shutdown(p, CONC_POOL_ABORT), CONC_OK);
	join(t);
	cr_assert_eq(b.status, CONC_CLOSED);
	cr_assert_eq(atomic_load(&b.rec.ran) + atomic_load(&b.rec.dropped), 0, "not run, not dropped: the caller's");
	cr_assert_eq(atomic_load(&queued.dropped), 1);
	cr_assert_eq(atomic_load(&queued.ran), 0);
	cr_assert_eq(atomic_load(&u.status), CONC_CANCELED);
	free_pool(p);
	free_chan(u.started);
}

/* ------------------------------------------------------------- shutdown */

struct shutdown_call {
	struct conc_pool *pool;
	enum conc_pool_mode mode;
	enum conc_status status;
};

static void *shutdown_thread(void *arg)
{
	struct shutdown_call *c = arg;
	c->status = conc_pool_shutdown(c->pool, c->mode);
	return NULL;
}

Test(pool, drain_runs_everything_queued, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 8);
	struct gate g;
	gate_init(&g);
	gate_hold(p, &g);
	struct rec r[5];
	memset(r, 0, sizeof r);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(conc_pool_submit(p, rec_run, &r[i], rec_drop), CONC_OK);
	struct shutdown_call c = {p, CONC_POOL_DRAIN, CONC_INVALID};
	pthread_t t;
	start(&t, shutdown_thread, &c);
	while (!conc_chan_is_closed(&p->queue))
		conc_yield();
	struct rec late;
	memset(&late, 0, sizeof late);
	cr_assert_eq(conc_pool_submit(p, rec_run, &late, rec_drop), CONC_CLOSED);
	cr_assert_eq(conc_pool_try_submit(p, rec_run, &late, rec_drop), CONC_CLOSED);
	gate_open(&g);
	join(t);
	cr_assert_eq(c.status, CONC_OK);
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(atomic_load(&r[i].ran), 1);
		cr_assert_eq(atomic_load(&r[i].dropped), 0);
	}
	cr_assert_eq(atomic_load(&late.ran) + atomic_load(&late.dropped), 0);
	cr_assert_eq(conc_pool_shutdown(p, CONC_POOL_DRAIN), CONC_CLOSED, "a second shutdown");
	cr_assert_eq(conc_pool_shutdown(p, CONC_POOL_ABORT), CONC_CLOSED);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK, "wait_idle after shutdown");
	cr_assert_eq(conc_ctx_err(conc_pool_ctx(p)), CONC_OK, "DRAIN does not cancel the pool's context");
	free_pool(p);
	gate_free(&g);
}

Test(pool, abort_drops_queued_and_cancels_a_task_that_never_returns, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 8);
	struct until_abort u = {p, new_chan(1, sizeof(uint64_t)), 0};
	cr_assert_eq(conc_pool_submit(p, until_abort_task, &u, NULL), CONC_OK);
	uint64_t v;
	cr_assert_eq(conc_chan_recv(u.started, &v), CONC_OK);
	struct rec r[6];
	memset(r, 0, sizeof r);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(conc_pool_submit(p, rec_run, &r[i], i == 5 ? NULL : rec_drop), CONC_OK);
	cr_assert_eq(conc_pool_shutdown(p, CONC_POOL_ABORT), CONC_OK);
	cr_assert_eq(atomic_load(&u.status), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(conc_pool_ctx(p)), CONC_CLOSED);
	for (int i = 0; i < 6; i++) {
		cr_assert_eq(atomic_load(&r[i].ran), 0, "task %d ran after abort", i);
		cr_assert_eq(atomic_load(&r[i].dropped), i == 5 ? 0 : 1, "task %d", i);
	}
	cr_assert_eq(conc_pool_pending(p), 0);
	free_pool(p);
	free_chan(u.started);
}

Test(pool, shutdown_until_a_deadline_switches_to_abort, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 8);
	struct until_abort u = {p, new_chan(1, sizeof(uint64_t)), 0};
	cr_assert_eq(conc_pool_submit(p, until_abort_task, &u, NULL), CONC_OK);
	uint64_t v;
	cr_assert_eq(conc_chan_recv(u.started, &v), CONC_OK);
	struct rec r[3];
	memset(r, 0, sizeof r);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(conc_pool_submit(p, rec_run, &r[i], rec_drop), CONC_OK);
	cr_assert_eq(conc_pool_shutdown_until(p, CONC_POOL_DRAIN, conc_deadline_in_ms(5), NULL), CONC_TIMEDOUT);
	cr_assert_eq(atomic_load(&u.status), CONC_CANCELED);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(atomic_load(&r[i].dropped), 1);
	free_pool(p);

	/* A canceled context does the same (and a live one drains). */
	p = new_pool(2, 8);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	memset(r, 0, sizeof r);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(conc_pool_submit(p, rec_run, &r[i], rec_drop), CONC_OK);
	cr_assert_eq(conc_pool_shutdown_until(p, CONC_POOL_DRAIN, conc_deadline_forever(), &ctx), CONC_OK);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(atomic_load(&r[i].ran), 1);
	free_pool(p);
	p = new_pool(1, 8);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	cr_assert_eq(conc_pool_shutdown_until(p, CONC_POOL_DRAIN, conc_deadline_forever(), &ctx), CONC_CANCELED);
	free_pool(p);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	free_chan(u.started);
}

/* ------------------------------------------------- calls from a worker */

struct from_worker {
	struct conc_pool *pool;
	enum conc_status wait, shutdown, free_, submit_inline, try_full;
	struct rec queued, inline_, refused;
	pthread_t self;
	int inline_before_return;
};

static void inline_task(void *arg)
{
	struct from_worker *f = arg;
	f->inline_.thread = pthread_self();
	atomic_fetch_add(&f->inline_.ran, 1);
}

static void from_worker_task(void *arg)
{
	struct from_worker *f = arg;
	f->self = pthread_self();
	f->wait = conc_pool_wait_idle(f->pool);
	f->shutdown = conc_pool_shutdown(f->pool, CONC_POOL_DRAIN);
	f->free_ = conc_pool_free(f->pool);
	/* The queue (capacity 1) is empty: this fills it... */
	if (conc_pool_submit(f->pool, rec_run, &f->queued, rec_drop) != CONC_OK)
		return;
	/* ...so these find it full: submit runs inline, try_submit refuses. */
	f->submit_inline = conc_pool_submit(f->pool, (void (*)(void *))inline_task, f, NULL);
	f->inline_before_return = atomic_load(&f->inline_.ran);
	f->try_full = conc_pool_try_submit(f->pool, rec_run, &f->refused, rec_drop);
}

Test(pool, calls_from_a_worker_do_not_deadlock, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 1);
	struct from_worker f;
	memset(&f, 0, sizeof f);
	f.pool = p;
	cr_assert_eq(conc_pool_submit(p, from_worker_task, &f, NULL), CONC_OK);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(f.wait, CONC_BUSY);
	cr_assert_eq(f.shutdown, CONC_BUSY);
	cr_assert_eq(f.free_, CONC_BUSY);
	cr_assert_eq(f.submit_inline, CONC_OK);
	cr_assert_eq(f.inline_before_return, 1, "ran inline, before submit returned");
	cr_assert(pthread_equal(f.inline_.thread, f.self), "on the submitting worker");
	cr_assert_eq(f.try_full, CONC_FULL);
	cr_assert_eq(atomic_load(&f.queued.ran), 1);
	cr_assert_eq(atomic_load(&f.refused.ran) + atomic_load(&f.refused.dropped), 0);
	/* The pool still works after refusing its workers. */
	struct rec r;
	memset(&r, 0, sizeof r);
	cr_assert_eq(conc_pool_submit(p, rec_run, &r, NULL), CONC_OK);
	free_pool(p);
	cr_assert_eq(atomic_load(&r.ran), 1);
}

/* ------------------------------------------------------------ wait idle */

struct idle_wait {
	struct conc_pool *pool;
	struct conc_ctx *ctx;
	enum conc_status status;
};

static void *idle_wait_thread(void *arg)
{
	struct idle_wait *w = arg;
	w->status = conc_pool_wait_idle_until(w->pool, conc_deadline_forever(), w->ctx);
	return NULL;
}

Test(pool, wait_idle_deadline_cancel_and_wake, .timeout = 60)
{
	struct conc_pool *p = new_pool(2, 4);
	struct gate g;
	gate_init(&g);
	gate_hold(p, &g);
	cr_assert_eq(conc_pool_wait_idle_until(p, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_pool_wait_idle_until(p, conc_deadline_in_ms(5), NULL), CONC_TIMEDOUT);

	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct idle_wait w1 = {p, &ctx, CONC_INVALID}, w2 = {p, NULL, CONC_INVALID};
	pthread_t t1, t2;
	start(&t1, idle_wait_thread, &w1);
	start(&t2, idle_wait_thread, &w2);
	conc_test_wait_parked(&p->idleq, 2);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(t1);
	cr_assert_eq(w1.status, CONC_CANCELED);
	gate_open(&g);
	join(t2);
	cr_assert_eq(w2.status, CONC_OK, "woken by the worker that made the pool idle");
	cr_assert_eq(atomic_load(&g.rec.ran), 1);
	cr_assert_eq(conc_pool_wait_idle_until(p, conc_deadline_forever(), &ctx), CONC_CANCELED,
		     "a done context fails the call first");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	free_pool(p);
	gate_free(&g);
}

/* --------------------------------------------------------- fault injection */

/* A task that fails: it reports an error through its argument, and the pool
 * goes on with the others. */
struct job {
	int input;
	enum conc_status result;
};

static void checked_job(void *arg)
{
	struct job *j = arg;
	j->result = j->input % 3 == 0 ? CONC_REJECTED : CONC_OK;
}

Test(pool, failing_tasks_do_not_disturb_the_pool, .timeout = 60)
{
	struct conc_pool *p = new_pool(3, 2);
	struct job jobs[30];
	for (int i = 0; i < 30; i++) {
		jobs[i].input = i;
		jobs[i].result = CONC_INVALID;
		cr_assert_eq(conc_pool_submit(p, checked_job, &jobs[i], NULL), CONC_OK);
	}
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	for (int i = 0; i < 30; i++)
		cr_assert_eq(jobs[i].result, i % 3 == 0 ? CONC_REJECTED : CONC_OK);
	free_pool(p);
}

Test(pool, allocation_failure_is_nomem_and_leaks_nothing, .timeout = 60)
{
	struct conc_pool *p = (struct conc_pool *)&p;
	struct conc_pool_config cfg = {.threads = 2, .queue_cap = 4};
	atomic_store(&alloc_budget, 0);
	enum conc_status s = conc_pool_new(&p, &cfg);
	atomic_store(&alloc_budget, -1);
	cr_assert_eq(s, CONC_NOMEM);
	cr_assert_eq(p, (struct conc_pool *)&p);
}

Test(pool, thread_creation_failure_stops_the_started_ones, .timeout = 60)
{
	struct hooks h;
	memset(&h, 0, sizeof h);
	h.caller = pthread_self();
	struct conc_pool_config cfg = {.threads = 4, .queue_cap = 4, .on_start = hook_start, .on_stop = hook_stop,
				       .hook_arg = &h};
	struct conc_pool *p = (struct conc_pool *)&p;
	atomic_store(&thread_budget, 2);
	enum conc_status s = conc_pool_new(&p, &cfg);
	atomic_store(&thread_budget, -1);
	cr_assert_eq(s, CONC_NOMEM);
	cr_assert_eq(p, (struct conc_pool *)&p);
	for (int w = 0; w < 4; w++) {
		cr_assert_eq(atomic_load(&h.start[w]), w < 2, "on_start of worker %d", w);
		cr_assert_eq(atomic_load(&h.stop[w]), w < 2, "on_stop of worker %d", w);
	}
}

/* ----------------------------------------------------------- parallel for */

struct counts {
	size_t n;
	atomic_int *hits;
	atomic_size_t calls;
	struct conc_ctx *ctx;
	struct conc_pool *pool;
	enum conc_status status;
};

static void count_body(void *arg, size_t i)
{
	struct counts *c = arg;
	if (i < c->n)
		atomic_fetch_add(&c->hits[i], 1);
	atomic_fetch_add(&c->calls, 1);
}

static void counts_init(struct counts *c, size_t n)
{
	memset(c, 0, sizeof *c);
	c->n = n;
	c->hits = calloc(n ? n : 1, sizeof *c->hits);
	cr_assert_not_null(c->hits);
}

static void counts_check_all_once(struct counts *c)
{
	size_t bad = c->n;
	for (size_t i = 0; i < c->n && bad == c->n; i++)
		if (atomic_load(&c->hits[i]) != 1)
			bad = i;
	cr_assert_eq(bad, c->n, "index %zu ran %d times", bad, bad < c->n ? atomic_load(&c->hits[bad]) : 0);
	cr_assert_eq(atomic_load(&c->calls), c->n);
}

Test(pool, parallel_for_runs_each_index_once, .timeout = 60)
{
	struct conc_pool *p = new_pool(3, 4);
	size_t sizes[] = {1, 2, 3, 7, 100, 10007};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		struct counts c;
		counts_init(&c, sizes[k]);
		cr_assert_eq(conc_pool_parallel_for(p, c.n, count_body, &c, NULL), CONC_OK);
		counts_check_all_once(&c);
		free(c.hits);
		counts_init(&c, sizes[k]);
		cr_assert_eq(conc_pool_parallel_for(NULL, c.n, count_body, &c, NULL), CONC_OK, "no pool");
		counts_check_all_once(&c);
		free(c.hits);
	}
	free_pool(p);
}

Test(pool, parallel_for_bad_input_and_done_context, .timeout = 60)
{
	struct conc_pool *p = new_pool(2, 4);
	struct counts c;
	counts_init(&c, 10);
	cr_assert_eq(conc_pool_parallel_for(p, 10, NULL, &c, NULL), CONC_INVALID);
	cr_assert_eq(conc_pool_parallel_for(p, 0, count_body, &c, NULL), CONC_OK);
	cr_assert_eq(atomic_load(&c.calls), 0);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	(void)conc_ctx_cancel(&ctx, 0);
	cr_assert_eq(conc_pool_parallel_for(p, 10, count_body, &c, &ctx), CONC_CANCELED);
	cr_assert_eq(atomic_load(&c.calls), 0, "a done context runs nothing");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_poll()), CONC_OK);
	cr_assert_eq(conc_pool_parallel_for(p, 10, count_body, &c, &ctx), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	free(c.hits);
	free_pool(p);
}

static void pfor_in_worker_task(void *arg)
{
	struct counts *c = arg;
	c->status = conc_pool_parallel_for(c->pool, c->n, count_body, c, NULL);
}

Test(pool, parallel_for_from_the_only_worker, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 1);
	struct counts c;
	counts_init(&c, 5000);
	c.pool = p;
	c.status = CONC_INVALID;
	cr_assert_eq(conc_pool_submit(p, pfor_in_worker_task, &c, NULL), CONC_OK);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(c.status, CONC_OK);
	counts_check_all_once(&c);
	free(c.hits);
	free_pool(p);
}

static void blocking_body(void *arg, size_t i)
{
	struct counts *c = arg;
	atomic_fetch_add(&c->hits[i], 1);
	atomic_fetch_add(&c->calls, 1);
	(void)conc_ctx_wait_until(c->ctx, conc_deadline_forever());
}

struct canceler {
	struct counts *c;
	struct conc_ctx *ctx;
};

static void *cancel_when_started(void *arg)
{
	struct canceler *k = arg;
	while (atomic_load(&k->c->calls) == 0)
		conc_yield();
	(void)conc_ctx_cancel(k->ctx, 0);
	return NULL;
}

Test(pool, parallel_for_canceled_from_another_thread, .timeout = 60)
{
	struct conc_pool *p = new_pool(2, 4);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct counts c;
	counts_init(&c, 10000);
	c.ctx = &ctx;
	struct canceler k = {&c, &ctx};
	pthread_t t;
	start(&t, cancel_when_started, &k);
	cr_assert_eq(conc_pool_parallel_for(p, c.n, blocking_body, &c, &ctx), CONC_CANCELED);
	join(t);
	size_t calls = atomic_load(&c.calls);
	cr_assert_lt(calls, c.n, "stopped handing out indices (%zu ran)", calls);
	size_t twice = 0;
	for (size_t i = 0; i < c.n; i++)
		twice += atomic_load(&c.hits[i]) > 1;
	cr_assert_eq(twice, 0, "%zu indices ran more than once", twice);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(atomic_load(&c.calls), calls, "no body runs after the call returned");
	free(c.hits);
	free_pool(p);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
}

Test(pool, parallel_for_survives_allocation_failure_and_shutdown, .timeout = 60)
{
	struct conc_pool *p = new_pool(2, 4);
	struct counts c;
	counts_init(&c, 1000);
	atomic_store(&alloc_budget, 0);
	enum conc_status s = conc_pool_parallel_for(p, c.n, count_body, &c, NULL);
	atomic_store(&alloc_budget, -1);
	cr_assert_eq(s, CONC_OK, "the caller does the work alone");
	counts_check_all_once(&c);
	cr_assert_eq(conc_pool_shutdown(p, CONC_POOL_DRAIN), CONC_OK);
	free(c.hits);
	counts_init(&c, 1000);
	cr_assert_eq(conc_pool_parallel_for(p, c.n, count_body, &c, NULL), CONC_OK, "a shut-down pool");
	counts_check_all_once(&c);
	free(c.hits);
	free_pool(p);
}

Test(pool, abort_drops_queued_parallel_for_helpers, .timeout = 60)
{
	struct conc_pool *p = new_pool(1, 4);
	struct gate g;
	gate_init(&g);
	gate_hold(p, &g);
	struct counts c;
	counts_init(&c, 100);
	/* The helper waits behind the gate; the caller does everything. */
	cr_assert_eq(conc_pool_parallel_for(p, c.n, count_body, &c, NULL), CONC_OK);
	counts_check_all_once(&c);
	cr_assert_eq(conc_pool_pending(p), 2, "the gate and the queued helper");
	struct shutdown_call sc = {p, CONC_POOL_ABORT, CONC_INVALID};
	pthread_t t;
	start(&t, shutdown_thread, &sc);
	while (!conc_chan_is_closed(&p->queue))
		conc_yield();
	gate_open(&g);
	join(t);
	cr_assert_eq(sc.status, CONC_OK);
	cr_assert_eq(atomic_load(&c.calls), c.n);
	free(c.hits);
	free_pool(p);
	gate_free(&g);
}
