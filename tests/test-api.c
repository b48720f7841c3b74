/* SPDX-License-Identifier: MIT */
/*
 * A call to every public symbol, single-threaded, checking each result: the
 * API as a user sees it, and a guard against a symbol left uncompiled.
 */
#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"

CONC_CHAN_TYPED(api_u64chan, uint64_t)

Test(api, status_and_platform, .timeout = 60)
{
	for (int s = CONC_OK; s < CONC_STATUS_COUNT__; s++)
		cr_assert_not_null(conc_strerror(s));
	cr_assert_str_eq(conc_strerror(CONC_CLOSED), "CONC_CLOSED: channel closed");

	conc_cpu_relax();
	conc_yield();
	struct conc_backoff b = {0};
	conc_backoff_spin(&b);
	conc_backoff_snooze(&b);
	cr_assert_not(conc_backoff_spun_out(&b));

	int64_t t0 = conc_now_ns();
	cr_assert_geq(conc_now_ns(), t0);
	cr_assert_geq(conc_clock_now(NULL), t0);
	struct conc_test_clock tc;
	struct conc_clock clk = conc_test_clock_init(&tc, 42);
	conc_test_clock_advance(&tc, 8);
	cr_assert_eq(conc_clock_now(&clk), 50);
	conc_test_clock_set(&tc, 7);
	cr_assert_eq(conc_clock_now(&clk), 7);
	cr_assert_eq(conc_deadline_at_ns(5).ns, 5);
	cr_assert(conc_deadline_is_forever(conc_deadline_forever()));
	cr_assert(conc_deadline_expired(conc_deadline_poll()));
	cr_assert(conc_deadline_expired(conc_deadline_in_ns(-1)));
	cr_assert_not(conc_deadline_expired(conc_deadline_in_ms(60000)));
	cr_assert_eq(conc_deadline_min(conc_deadline_at_ns(3), conc_deadline_at_ns(4)).ns, 3);

	struct conc_lock l;
	conc_lock_init(&l);
	conc_lock_acquire(&l);
	conc_lock_release(&l);
	conc_lock_destroy(&l);

	struct conc_parker *p = conc_parker_self();
	cr_assert_not_null(p);
	conc_parker_unpark(p);
	cr_assert(conc_parker_park_until(p, conc_deadline_forever()), "a token given before park is consumed at once");
	cr_assert_not(conc_parker_park_until(p, conc_deadline_poll()), "no token left: a poll times out");
}

Test(api, waitq, .timeout = 60)
{
	struct conc_waitq q;
	struct conc_waiter w;
	conc_waitq_init(&q);
	conc_waiter_init(&w, 0);
	cr_assert_not(conc_waitq_has_waiters(&q));
	conc_waitq_enqueue(&q, &w);
	cr_assert(conc_waitq_has_waiters(&q));
	cr_assert(conc_waitq_wake_one(&q));
	cr_assert(conc_waitq_remove(&q, &w), "the waiter was woken");
	conc_waitq_enqueue(&q, &w);
	cr_assert_eq(conc_waitq_wake_n(&q, 2), 1);
	cr_assert(conc_waitq_remove(&q, &w));
	conc_waitq_enqueue(&q, &w);
	cr_assert_eq(conc_waitq_wake_all(&q), 1);
	cr_assert(conc_waitq_remove(&q, &w));
	conc_waitq_enqueue(&q, &w);
	cr_assert_not(conc_waitq_remove(&q, &w), "removed before any wake");
	cr_assert_not(conc_waitq_has_waiters(&q));
	conc_waitq_destroy(&q);
}

Test(api, ctx, .timeout = 60)
{
	struct conc_ctx root, child;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	cr_assert_eq(conc_ctx_init(&child, &root, conc_deadline_in_ms(60000)), CONC_OK);
	cr_assert_eq(conc_ctx_err(&child), CONC_OK);
	cr_assert_eq(conc_ctx_cause(&child), CONC_OK);
	cr_assert_not(conc_deadline_is_forever(conc_ctx_deadline(&child)));
	struct conc_waiter w;
	conc_waiter_init(&w, 0);
	cr_assert_eq(conc_ctx_watch(&child, &w), CONC_OK);
	conc_ctx_unwatch(&child, &w);
	cr_assert_eq(conc_ctx_wait_until(&child, conc_deadline_poll()), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cancel(&root, 77), CONC_OK);
	cr_assert_eq(conc_ctx_err(&child), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(&child), 77);
	cr_assert_eq(conc_ctx_wait_until(&child, conc_deadline_forever()), CONC_CANCELED);
	cr_assert_eq(conc_ctx_destroy(&root), CONC_BUSY, "root still has a child");
	cr_assert_eq(conc_ctx_destroy(&child), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&root), CONC_OK);
}

Test(api, chan, .timeout = 60)
{
	static uint64_t ring[CONC_CHAN_BUF_SIZE(4, 8) / 8];
	struct conc_chan c;
	cr_assert_eq(conc_chan_buf_size(4, 8), sizeof ring);
	cr_assert_eq(conc_chan_init(&c, 4, 8, ring, sizeof ring), CONC_OK);
	cr_assert_eq(conc_chan_cap(&c), 4);
	cr_assert_eq(conc_chan_elem_size(&c), 8);
	cr_assert_not(conc_chan_is_closed(&c));
	uint64_t v = 1, out = 0, many[4] = {2, 3, 4, 5}, got[4] = {0};
	enum conc_status st;
	cr_assert_eq(conc_chan_try_send(&c, &v), CONC_OK);
	cr_assert_eq(conc_chan_try_recv(&c, &out), CONC_OK);
	cr_assert_eq(out, 1);
	cr_assert_eq(conc_chan_send(&c, &v), CONC_OK);
	cr_assert_eq(conc_chan_recv(&c, &out), CONC_OK);
	cr_assert_eq(conc_chan_send_until(&c, &v, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(conc_chan_recv_until(&c, &out, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(conc_chan_try_send_n(&c, many, 2), CONC_OK);
	cr_assert_eq(conc_chan_send_n(&c, many + 2, 2), CONC_OK);
	cr_assert_eq(conc_chan_len(&c), 4);
	cr_assert_eq(conc_chan_send_n_until(&c, many, 1, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_chan_try_recv_n(&c, got, 2), CONC_OK);
	cr_assert_eq(conc_chan_recv_n(&c, got + 2, 1), CONC_OK);
	cr_assert_eq(conc_chan_recv_n_until(&c, got + 3, 1, conc_deadline_poll(), NULL), CONC_OK);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(got[i], many[i]);
	cr_assert_eq(conc_chan_try_send_burst(&c, many, 4, &st), 4);
	cr_assert_eq(st, CONC_OK);
	cr_assert_eq(conc_chan_try_recv_burst(&c, got, 3, &st), 3);
	cr_assert_eq(conc_chan_send_burst(&c, many, 4, &st), 3, "room for three");
	cr_assert_eq(conc_chan_recv_burst(&c, got, 4, &st), 4);
	cr_assert_eq(conc_chan_send_burst_until(&c, many, 1, conc_deadline_poll(), NULL, &st), 1);
	cr_assert_eq(conc_chan_recv_burst_until(&c, got, 4, conc_deadline_poll(), NULL, &st), 1);
	cr_assert_eq(conc_chan_close(&c), CONC_OK);
	cr_assert(conc_chan_is_closed(&c));
	cr_assert_eq(conc_chan_destroy(&c), CONC_OK);

	struct conc_chan *h = NULL;
	cr_assert_eq(conc_chan_new(&h, 2, 24), CONC_OK);
	cr_assert_eq(conc_chan_free(h), CONC_OK);
}

Test(api, typed, .timeout = 60)
{
	struct api_u64chan *c = NULL, s;
	static uint64_t ring[CONC_CHAN_BUF_SIZE(8, sizeof(uint64_t)) / 8];
	cr_assert_eq(api_u64chan_init(&s, 8, ring, sizeof ring), CONC_OK);
	cr_assert_eq(api_u64chan_destroy(&s), CONC_OK);
	cr_assert_eq(api_u64chan_new(&c, 8), CONC_OK);
	cr_assert_eq(api_u64chan_chan(c)->esize, sizeof(uint64_t));
	uint64_t v = 0, many[3] = {7, 8, 9}, got[3];
	enum conc_status st;
	cr_assert_eq(api_u64chan_send(c, 1), CONC_OK);
	cr_assert_eq(api_u64chan_try_send(c, 2), CONC_OK);
	cr_assert_eq(api_u64chan_send_until(c, 3, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(api_u64chan_len(c), 3);
	cr_assert_eq(api_u64chan_cap(c), 8);
	cr_assert_eq(api_u64chan_recv(c, &v), CONC_OK);
	cr_assert_eq(v, 1);
	cr_assert_eq(api_u64chan_try_recv(c, &v), CONC_OK);
	cr_assert_eq(v, 2);
	cr_assert_eq(api_u64chan_recv_until(c, &v, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(v, 3);
	cr_assert_eq(api_u64chan_send_n(c, many, 3), CONC_OK);
	cr_assert_eq(api_u64chan_recv_n(c, got, 3), CONC_OK);
	cr_assert_eq(got[2], 9);
	cr_assert_eq(api_u64chan_send_burst(c, many, 3, &st), 3);
	cr_assert_eq(api_u64chan_recv_burst(c, got, 3, &st), 3);
	cr_assert_eq(api_u64chan_close(c), CONC_OK);
	cr_assert_eq(api_u64chan_recv(c, &v), CONC_CLOSED);
	cr_assert_eq(api_u64chan_free(c), CONC_OK);
}

Test(api, rendezvous_and_select, .timeout = 60)
{
	struct conc_chan r, *b = NULL;
	cr_assert_eq(conc_chan_buf_size(0, 8), 0u, "a rendezvous channel has no ring");
	cr_assert_eq(conc_chan_init(&r, 0, 8, NULL, 0), CONC_OK);
	cr_assert_eq(conc_chan_cap(&r), 0u);
	cr_assert_eq(conc_chan_len(&r), 0u);
	uint64_t v = 5, out = 0;
	cr_assert_eq(conc_chan_try_send(&r, &v), CONC_FULL, "no receiver waits");
	cr_assert_eq(conc_chan_try_recv(&r, &out), CONC_EMPTY, "no sender waits");
	cr_assert_eq(conc_chan_send_until(&r, &v, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_chan_new(&b, 2, 8), CONC_OK);

	struct conc_select_case cs[] = {
		conc_select_recv(&r, &out),
		conc_select_send(b, &v),
		conc_select_timer(conc_deadline_forever()),
	};
	cr_assert_eq(cs[0].op, CONC_SELECT_RECV);
	cr_assert_eq(cs[1].op, CONC_SELECT_SEND);
	cr_assert_eq(cs[2].op, CONC_SELECT_TIMER);
	size_t i = 99;
	cr_assert_eq(conc_select(cs, 3, 0, &i), CONC_OK);
	cr_assert_eq(i, 1, "only the send has room");
	cr_assert_eq(conc_select_try(cs, 3, CONC_SELECT_BIASED, &i), CONC_OK);
	cr_assert_eq(i, 1);
	cr_assert_eq(conc_select_try(cs, 3, 0, &i), CONC_WOULDBLOCK, "full, and nobody sends on r");
	cr_assert_eq(i, 3);
	cr_assert_eq(conc_select_until(cs, 3, 0, conc_deadline_poll(), NULL, &i), CONC_TIMEDOUT);
	cr_assert_eq(i, 3);
	cr_assert_lt(0, CONC_SELECT_MAX_CASES);
	cr_assert_eq(conc_chan_close(&r), CONC_OK);
	cr_assert_eq(conc_select(cs, 1, 0, &i), CONC_CLOSED);
	cr_assert_eq(i, 0);
	cr_assert_eq(conc_chan_destroy(&r), CONC_OK);
	cr_assert_eq(conc_chan_free(b), CONC_OK);
}

Test(api, semaphore, .timeout = 60)
{
	struct conc_sem s;
	cr_assert_eq(conc_sem_init(&s, 3, 3), CONC_OK);
	cr_assert_eq(conc_sem_size(&s), 3);
	cr_assert_eq(conc_sem_acquire(&s, 1), CONC_OK);
	cr_assert_eq(conc_sem_try_acquire(&s, 2), CONC_OK);
	cr_assert_eq(conc_sem_acquire_until(&s, 1, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_sem_available(&s), 0);
	cr_assert_eq(conc_sem_release(&s, 3), CONC_OK);
	cr_assert_eq(conc_sem_destroy(&s), CONC_OK);
}

static int api_fan_fn(void *arg, struct conc_ctx *ctx, size_t worker, void *item, struct conc_chan *out)
{
	(void)arg;
	(void)worker;
	return (int)conc_chan_send_until(out, item, conc_deadline_forever(), ctx);
}

static void api_fan_drop(void *arg, void *item)
{
	(void)arg;
	(void)item;
}

struct api_tagged CONC_FAN_TAGGED(uint64_t);

Test(api, fan, .timeout = 60)
{
	struct conc_chan *in[2] = {NULL, NULL}, *out = NULL, *tagged = NULL;
	cr_assert_eq(conc_chan_new(&in[0], 4, 8), CONC_OK);
	cr_assert_eq(conc_chan_new(&in[1], 4, 8), CONC_OK);
	cr_assert_eq(conc_chan_new(&out, 8, 8), CONC_OK);
	cr_assert_eq(conc_chan_new(&tagged, 8, sizeof(struct api_tagged)), CONC_OK);
	cr_assert_eq(CONC_FAN_TAG_SIZE, 8u);

	/* fan-in on caller memory, then allocated */
	uint64_t mem[128];
	struct conc_fan_in mm, *m = NULL;
	size_t need = conc_fan_in_buf_size(2, 8);
	cr_assert(need > 0 && need <= sizeof mem);
	cr_assert_eq(conc_fan_in_init(&mm, in, 2, mem, need), CONC_OK);
	cr_assert_eq(conc_fan_in_destroy(&mm), CONC_OK);
	cr_assert_eq(conc_fan_in_new(&m, in, 2), CONC_OK);
	uint64_t v = 1;
	size_t from = 9;
	cr_assert_eq(conc_chan_send(in[1], &v), CONC_OK);
	cr_assert_eq(conc_fan_in_recv(m, &v, &from), CONC_OK);
	cr_assert_eq(from, 1u);
	cr_assert_eq(conc_fan_in_try_recv(m, &v, &from), CONC_EMPTY);
	cr_assert_eq(conc_fan_in_recv_until(m, &v, &from, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_fan_in_count(m, 1), 1u);
	cr_assert_eq(conc_fan_in_open(m), 2u);
	cr_assert_not(conc_fan_in_pending(m));
	cr_assert_eq(conc_chan_send(in[0], &v), CONC_OK);
	cr_assert_eq(conc_fan_in_pump_until(m, tagged, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	struct api_tagged t;
	cr_assert_eq(conc_chan_recv(tagged, &t), CONC_OK);
	cr_assert_eq(t.origin, 0u);
	cr_assert_eq(conc_chan_close(in[0]), CONC_OK);
	cr_assert_eq(conc_chan_close(in[1]), CONC_OK);
	cr_assert_eq(conc_fan_in_pump(m, tagged), CONC_OK);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);

	/* fan-out */
	struct conc_chan *jobs = NULL;
	cr_assert_eq(conc_chan_new(&jobs, 4, 8), CONC_OK);
	struct conc_fan_out *f = NULL;
	struct conc_fan_out_fns fns = {api_fan_fn, api_fan_drop, NULL};
	cr_assert_eq(conc_fan_out_start(&f, jobs, out, NULL, 2, &fns, NULL, 0), CONC_OK);
	cr_assert_eq(conc_fan_out_workers(f), 2u);
	v = 3;
	cr_assert_eq(conc_chan_send(jobs, &v), CONC_OK);
	cr_assert_eq(conc_chan_recv(out, &v), CONC_OK);
	cr_assert_eq(v, 3u);
	int err = -1;
	cr_assert_eq(conc_fan_out_wait_until(f, conc_deadline_poll(), NULL, &err), CONC_TIMEDOUT);
	cr_assert_eq(conc_fan_out_cancel(f, 0), CONC_OK);
	cr_assert_eq(conc_fan_out_wait(f, &err), CONC_OK);
	cr_assert_eq(err, CONC_CANCELED);
	cr_assert_eq(conc_fan_out_count(f, 0) + conc_fan_out_count(f, 1), 1u);
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	cr_assert_eq(CONC_FAN_KEEP_OPEN, 1u);

	cr_assert_eq(conc_chan_free(jobs), CONC_OK);
	cr_assert_eq(conc_chan_free(in[0]), CONC_OK);
	cr_assert_eq(conc_chan_free(in[1]), CONC_OK);
	cr_assert_eq(conc_chan_free(out), CONC_OK);
	cr_assert_eq(conc_chan_free(tagged), CONC_OK);
}

static int api_double(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg;
	(void)ctx;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	if (v == 0)
		return CONC_STAGE_SKIP;
	v *= 2;
	memcpy(out, &v, sizeof v);
	return 0;
}

static void api_drop(void *elem, void *arg)
{
	(void)elem;
	++*(int *)arg;
}

Test(api, pipeline, .timeout = 60)
{
	int dropped = 0;
	struct conc_pipeline *p = NULL;
	struct conc_pipeline_config cfg = {.esize = sizeof(uint64_t), .queue_cap = 4, .drop = api_drop,
					   .drop_arg = &dropped, .parent = NULL};
	cr_assert_eq(conc_pipeline_new(&p, &cfg), CONC_OK);
	struct conc_stage_config sc = {.fn = api_double, .workers = 2, .ordered = true, .window = 4, .batch = 1,
				       .queue_cap = 4, .out_esize = sizeof(uint64_t), .drop = api_drop,
				       .drop_arg = &dropped};
	cr_assert_eq(conc_pipeline_add_stage(p, &sc), CONC_OK);
	cr_assert_eq(conc_pipeline_stages(p), 1u);
	cr_assert_not_null(conc_pipeline_input(p));
	cr_assert_not_null(conc_pipeline_output(p));
	cr_assert_eq(conc_pipeline_start(p), CONC_OK);
	uint64_t v = 0;
	cr_assert_eq(conc_pipeline_push(p, &v), CONC_OK); /* skipped: dropped */
	v = 21;
	cr_assert_eq(conc_pipeline_push_until(p, &v, conc_deadline_forever(), NULL), CONC_OK);
	cr_assert_eq(conc_pipeline_pull(p, &v), CONC_OK);
	cr_assert_eq(v, 42);
	cr_assert_eq(conc_pipeline_pull_until(p, &v, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_pipeline_err(p), 0);
	cr_assert_eq(conc_pipeline_wait_until(p, conc_deadline_poll(), NULL, NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_pipeline_close_input(p), CONC_OK);
	int err = -1;
	cr_assert_eq(conc_pipeline_wait(p, &err), CONC_OK);
	cr_assert_eq(err, 0);
	struct conc_stage_stats st;
	cr_assert_eq(conc_pipeline_stats(p, 0, &st), CONC_OK);
	cr_assert_eq(st.items_in, 2);
	cr_assert_eq(st.items_out, 1);
	cr_assert_eq(st.skipped, 1);
	cr_assert_eq(conc_pipeline_cancel(p, 0), CONC_OK, "the context is live after a clean finish");
	cr_assert_eq(conc_pipeline_err(p), 0, "a finished pipeline keeps its result");
	cr_assert_eq(conc_pipeline_free(p), CONC_OK);
	cr_assert_eq(dropped, 1);
	cr_assert_lt(0, CONC_PIPELINE_DEFAULT_CAP + CONC_PIPELINE_MAX_WORKERS + CONC_PIPELINE_MAX_BATCH);
	cr_assert_lt(0, CONC_PIPELINE_MAX_WINDOW);
}

static void api_pool_task(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void api_pool_body(void *arg, size_t i)
{
	atomic_fetch_add((atomic_int *)arg, (int)i);
}

Test(api, pool, .timeout = 60)
{
	struct conc_pool *p = NULL;
	struct conc_pool_config cfg = {.threads = 2, .queue_cap = 4, .on_start = NULL, .on_stop = NULL,
				       .hook_arg = NULL};
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OK);
	cr_assert_eq(conc_pool_threads(p), 2u);
	cr_assert_not_null(conc_pool_ctx(p));
	atomic_int ran = 0;
	cr_assert_eq(conc_pool_submit(p, api_pool_task, &ran, NULL), CONC_OK);
	cr_assert_eq(conc_pool_submit_until(p, api_pool_task, &ran, NULL, conc_deadline_forever(), NULL), CONC_OK);
	enum conc_status s = conc_pool_try_submit(p, api_pool_task, &ran, NULL);
	cr_assert(s == CONC_OK || s == CONC_FULL);
	cr_assert_eq(conc_pool_wait_idle_until(p, conc_deadline_forever(), NULL), CONC_OK);
	cr_assert_eq(conc_pool_wait_idle(p), CONC_OK);
	cr_assert_eq(conc_pool_pending(p), 0u);
	cr_assert_eq(atomic_load(&ran), s == CONC_OK ? 3 : 2);
	atomic_int sum = 0;
	cr_assert_eq(conc_pool_parallel_for(p, 10, api_pool_body, &sum, NULL), CONC_OK);
	cr_assert_eq(atomic_load(&sum), 45);
	cr_assert_eq(conc_pool_shutdown_until(p, CONC_POOL_DRAIN, conc_deadline_forever(), NULL), CONC_OK);
	cr_assert_eq(conc_pool_shutdown(p, CONC_POOL_ABORT), CONC_CLOSED);
	cr_assert_eq(conc_pool_free(p), CONC_OK);
}

static int api_group_task(struct conc_ctx *ctx, void *arg)
{
	(void)ctx;
	return *(int *)arg;
}

Test(api, group_and_result, .timeout = 60)
{
	struct conc_pool *p = NULL;
	struct conc_pool_config cfg = {.threads = 2, .queue_cap = 4};
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OK);
	struct conc_group g;
	struct conc_group_error errs[2];
	cr_assert_eq(conc_group_init(&g, p, NULL, 2, errs, 2), CONC_OK);
	int ok = 0, bad = 7;
	cr_assert_eq(conc_group_go(&g, api_group_task, &ok), CONC_OK);
	cr_assert_eq(conc_group_go_until(&g, api_group_task, &bad, conc_deadline_forever()), CONC_OK);
	enum conc_status st = conc_group_try_go(&g, api_group_task, &ok);
	cr_assert(st == CONC_OK || st == CONC_WOULDBLOCK || st == CONC_CANCELED, "%s", conc_strerror(st));
	int first = 0;
	cr_assert_eq(conc_group_wait_until(&g, conc_deadline_forever(), NULL, &first), CONC_OK);
	cr_assert_eq(first, 7);
	cr_assert_eq(conc_group_wait(&g), 7);
	size_t n;
	uint64_t dropped;
	cr_assert_eq(conc_group_errors(&g, &n, &dropped), errs);
	cr_assert_eq(n, 1);
	cr_assert_eq(dropped, 0);
	(void)conc_group_skipped(&g);
	cr_assert_eq(conc_ctx_err(conc_group_ctx(&g)), CONC_CANCELED);
	cr_assert_eq(conc_group_cancel(&g, 0), CONC_CANCELED, "already done");
	cr_assert_eq(conc_group_destroy(&g), CONC_OK);
	cr_assert_eq(conc_pool_free(p), CONC_OK);

	struct conc_result r = conc_result_ok(1, &ok);
	cr_assert(conc_result_is_ok(&r));
	r = conc_result_err(2, CONC_CLOSED);
	cr_assert_not(conc_result_is_ok(&r));
}

static enum conc_status api_stop(void *arg, struct conc_deadline drain)
{
	(void)drain;
	++*(int *)arg;
	return CONC_OK;
}

Test(api, shutdown, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[2];
	int stopped = 0;
	static const int sigs[] = {SIGUSR1};
	cr_assert_eq(conc_shutdown_init(&sd, slots, 2), CONC_OK);
	cr_assert_eq(conc_shutdown_signals(&sd, sigs, 1), CONC_OK);
	cr_assert_eq(conc_shutdown_register(&sd, "a", api_stop, &stopped), CONC_OK);
	cr_assert_not_null(conc_shutdown_ctx(&sd));
	cr_assert_eq(conc_shutdown_signal(&sd), 0);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_shutdown_trigger(&sd, CONC_SHUTDOWN_SIGNAL_CAUSE(SIGUSR1)), CONC_OK);
	cr_assert_eq(conc_shutdown_wait(&sd), CONC_OK);
	cr_assert_eq(conc_shutdown_cause_signal(conc_ctx_cause(conc_shutdown_ctx(&sd))), SIGUSR1);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_in_ms(60000)), CONC_OK);
	struct conc_shutdown_result r[2];
	cr_assert_eq(conc_shutdown_report(&sd, r, 2), 1);
	cr_assert_str_eq(r[0].name, "a");
	cr_assert_eq(r[0].status, CONC_OK);
	cr_assert_not(r[0].missed);
	cr_assert_eq(stopped, 1);
	cr_assert_lt(0, CONC_SHUTDOWN_MAX_SIGNALS);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

static int api_breaker_fn(struct conc_ctx *ctx, void *arg)
{
	(void)ctx;
	return *(int *)arg;
}

Test(api, breaker, .timeout = 60)
{
	struct conc_test_clock tc;
	struct conc_clock clk = conc_test_clock_init(&tc, 0);
	struct conc_chan *ev = NULL;
	cr_assert_eq(conc_chan_new(&ev, 8, sizeof(struct conc_breaker_event)), CONC_OK);
	struct conc_breaker_config cfg = {
		.consecutive_failures = 1,
		.failure_rate_pct = 50,
		.window_kind = CONC_BREAKER_WINDOW_COUNT,
		.window_size = 4,
		.min_calls = 2,
		.open_ns = 10,
		.probes = 1,
		.probe_lease_ns = 10,
		.clock = &clk,
		.events = ev,
	};
	uint64_t buf[1];
	cr_assert_eq(conc_breaker_buf_size(&cfg), 4);
	struct conc_breaker sb;
	cr_assert_eq(conc_breaker_init(&sb, &cfg, buf, sizeof buf), CONC_OK);
	cr_assert_eq(conc_breaker_destroy(&sb), CONC_OK);
	struct conc_breaker *b = NULL;
	cr_assert_eq(conc_breaker_new(&b, &cfg), CONC_OK);
	struct conc_breaker_ticket t;
	cr_assert_eq(conc_breaker_allow(b, &t), CONC_OK);
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_FAILURE), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_str_eq(conc_breaker_state_name(conc_breaker_state(b)), "open");
	int ok = 0;
	cr_assert_eq(conc_breaker_call(b, api_breaker_fn, &ok, NULL, &t), CONC_REJECTED);
	cr_assert_eq(t.retry_after_ns, 10);
	conc_test_clock_advance(&tc, 10);
	cr_assert_eq(conc_breaker_call(b, api_breaker_fn, &ok, NULL, &t), 0);
	cr_assert(t.probe);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	cr_assert_eq(conc_breaker_force_open(b), CONC_OK);
	cr_assert_eq(conc_breaker_force_closed(b), CONC_OK);
	cr_assert_eq(conc_breaker_reset(b), CONC_OK);
	struct conc_breaker_metrics m;
	cr_assert_eq(conc_breaker_metrics(b, &m), CONC_OK);
	cr_assert_eq(m.transitions, 6);
	cr_assert_eq(m.events_dropped, 0);
	struct conc_breaker_event e;
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_CONSECUTIVE_FAILURES);
	cr_assert_lt(0, CONC_BREAKER_MAX_PROBES);
	cr_assert_eq(CONC_BREAKER_RETRY_NEVER, INT64_MAX);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
	cr_assert_eq(conc_chan_free(ev), CONC_OK);
}

Test(api, rate, .timeout = 60)
{
	struct conc_rate l;
	struct conc_rate_info info;
	struct conc_rate_reservation r;
	cr_assert_eq(conc_rate_init(&l, 1000, 1000000000, 2, NULL), CONC_OK);
	cr_assert_eq(conc_rate_allow(&l), CONC_OK);
	cr_assert_eq(conc_rate_allow_n(&l, 1, &info), CONC_OK);
	cr_assert_eq(info.limit, 2);
	cr_assert_leq(conc_rate_tokens(&l), 2);
	cr_assert_eq(conc_rate_reserve(&l, 1, &r), CONC_OK);
	enum conc_status st = conc_rate_cancel(&l, &r);
	cr_assert(st == CONC_OK || st == CONC_BUSY, "%s", conc_strerror(st));
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_forever(), NULL), CONC_OK);
	cr_assert_eq(conc_rate_wait(&l), CONC_OK);
	cr_assert_eq(conc_rate_set(&l, 2000, 1000000000, 3), CONC_OK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);

	struct conc_ticker t;
	uint64_t missed;
	cr_assert_eq(conc_ticker_init(&t, 1000000, NULL), CONC_OK);
	cr_assert_lt(0, conc_ticker_next(&t));
	struct conc_select_case k = conc_ticker_case(&t);
	cr_assert_eq(conc_select(&k, 1, 0, NULL), CONC_OK);
	st = conc_ticker_take(&t, &missed);
	cr_assert(st == CONC_OK, "%s", conc_strerror(st));
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_forever(), NULL), CONC_OK);
	cr_assert_eq(conc_ticker_wait(&t, &missed), CONC_OK);
	cr_assert_eq(conc_ticker_reset(&t, 2000000), CONC_OK);
	cr_assert_eq(conc_ticker_stop(&t), CONC_OK);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

#ifdef CONC_PUBSUB_H /* conc.h includes pub/sub where liburcu is */
static void api_msg_release(void *arg)
{
	++*(int *)arg;
}

Test(api, pubsub, .timeout = 60)
{
	struct conc_pubsub *ps = NULL;
	struct conc_sub *a = NULL, *b = NULL;
	struct conc_msg *m = NULL, *r = NULL, *ref = NULL;
	int freed = 0;
	size_t n = 0;
	cr_assert(conc_pubsub_subject_valid("a.b"));
	cr_assert(conc_pubsub_pattern_valid("a.>"));
	cr_assert(conc_pubsub_match("a.*", "a.b"));
	cr_assert_eq(conc_pubsub_new(&ps), CONC_OK);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a.*", 2, CONC_SUB_BLOCK, &a), CONC_OK);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a.b", 1, CONC_SUB_KEEP_LATEST, &b), CONC_OK);
	cr_assert_str_eq(conc_sub_pattern(a), "a.*");
	cr_assert_not_null(conc_sub_chan(a));
	cr_assert_eq(conc_msg_new(&m, "a.b", "hi", 2), CONC_OK);
	cr_assert_str_eq(conc_msg_subject(m), "a.b");
	cr_assert_eq(conc_msg_len(m), 2);
	cr_assert_eq(memcmp(conc_msg_data(m), "hi", 2), 0);
	cr_assert_eq(conc_pubsub_publish(ps, m, &n), CONC_OK);
	cr_assert_eq(n, 2);
	cr_assert_eq(conc_pubsub_try_publish(ps, m, &n), CONC_OK);
	cr_assert_eq(conc_pubsub_publish_until(ps, m, conc_deadline_poll(), NULL, &n), CONC_TIMEDOUT);
	cr_assert_eq(conc_sub_lost(a), 1);
	cr_assert_eq(conc_msg_retain(m), m);
	conc_msg_release(m);
	conc_msg_release(m);
	cr_assert_eq(conc_sub_recv(a, &r), CONC_OK);
	conc_msg_release(r);
	cr_assert_eq(conc_sub_recv_until(a, &r, conc_deadline_poll(), NULL), CONC_OK);
	conc_msg_release(r);
	cr_assert_eq(conc_sub_try_recv(a, &r), CONC_EMPTY);
	cr_assert_eq(conc_msg_new_ref(&ref, "a.c", &freed, sizeof freed, api_msg_release, &freed), CONC_OK);
	cr_assert_eq(conc_pubsub_publish(ps, ref, NULL), CONC_OK);
	conc_msg_release(ref);
	cr_assert_eq(conc_sub_close(a), CONC_OK);
	cr_assert_eq(conc_pubsub_unsubscribe(a), CONC_OK);
	cr_assert_eq(freed, 1);
	cr_assert_eq(conc_pubsub_free(ps), CONC_OK); /* unsubscribes b */
}
#endif
