/* SPDX-License-Identifier: MIT */
/*
 * Fan-in and fan-out (conc/fan.h): the merge single-threaded (origins,
 * order, close, try, pump, tagged output), blocked merges woken by a send, a
 * close, a cancel or a deadline from another thread, fairness, rendezvous
 * inputs; the fan-out's results, per-worker outputs merged back, errors that
 * cancel the others, a worker that blocks until canceled, parent contexts
 * and deadlines, elements dropped at cancellation; bad input everywhere;
 * allocation and thread-creation failures (nothing leaked: ASan checks).
 *
 * Worker threads never assert (Criterion's asserts belong to the test's own
 * thread): they record what they saw, and the test asserts after joining.
 */

/* Fault hooks (fan.h and chan.h let them be overridden): fail the next
 * allocation, or the thread creation after thread_budget more succeed. */
#define _DEFAULT_SOURCE 1 /* conc.h comes after system headers here */
#include <pthread.h>
#include <stdlib.h>
static int alloc_fail;
static int thread_budget = -1; /* -1: never fail */
static int test_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	if (thread_budget == 0)
		return 11; /* EAGAIN */
	if (thread_budget > 0)
		thread_budget--;
	return pthread_create(t, NULL, fn, arg);
}
#define CONC_ALIGNED_ALLOC(align, size) (alloc_fail ? NULL : aligned_alloc((align), (size)))
#define CONC_FREE(p) free(p)
#define CONC_THREAD_CREATE(t, fn, arg) test_thread_create((t), (fn), (arg))

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

#ifndef CONC_STRESS_SCALE
#define CONC_STRESS_SCALE 1
#endif

/* ------------------------------------------------------------------ helpers */

static struct conc_fan_in *new_merge(struct conc_chan **in, size_t n)
{
	struct conc_fan_in *m = NULL;
	cr_assert_eq(conc_fan_in_new(&m, in, n), CONC_OK);
	cr_assert_not_null(m);
	return m;
}

static void close_all(struct conc_chan **c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(conc_chan_close(c[i]), CONC_OK);
}

static void free_all(struct conc_chan **c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free_chan(c[i]);
}

/* A merge call on its own thread, so that it can block. */
struct merge_call {
	struct conc_fan_in *m;
	struct conc_chan *out; /* pump: the output; recv: NULL */
	struct conc_deadline d;
	struct conc_ctx *ctx;
	uint64_t v;
	size_t origin;
	enum conc_status result;
	pthread_t thread;
};

static void *merge_call_main(void *arg)
{
	struct merge_call *c = arg;
	c->result = c->out ? conc_fan_in_pump_until(c->m, c->out, c->d, c->ctx)
			   : conc_fan_in_recv_until(c->m, &c->v, &c->origin, c->d, c->ctx);
	return NULL;
}

static void merge_call_start(struct merge_call *c, struct conc_fan_in *m, struct conc_chan *out,
			     struct conc_deadline d, struct conc_ctx *ctx)
{
	memset(c, 0, sizeof *c);
	c->m = m;
	c->out = out;
	c->d = d;
	c->ctx = ctx;
	c->result = CONC_STATUS_COUNT__;
	start(&c->thread, merge_call_main, c);
}

/* Wait until a select over the inputs is parked: every input has a parked
 * receiver registered (the merge's select). */
static void wait_merge_parked(struct conc_chan **in, size_t n)
{
	for (size_t i = 0; i < n; i++)
		conc_test_wait_chan_parked(in[i], false, 1);
}

/* ------------------------------------------------------------------ fan-in */

Test(fan_in, reports_origin_and_closes_when_every_input_is_drained, .timeout = 120)
{
	struct conc_chan *in[3] = {new_chan(8, 8), new_chan(8, 8), new_chan(8, 8)};
	struct conc_fan_in *m = new_merge(in, 3);
	cr_assert_eq(conc_fan_in_open(m), 3u);
	for (uint64_t i = 0; i < 3; i++)
		for (uint64_t k = 0; k < 5; k++)
			put(in[i], CONC_TEST_ITEM(i, k));
	cr_assert_eq(conc_chan_close(in[1]), CONC_OK);
	size_t next[3] = {0, 0, 0};
	for (int k = 0; k < 15; k++) {
		uint64_t v;
		size_t from = 99;
		cr_assert_eq(conc_fan_in_recv(m, &v, &from), CONC_OK);
		cr_assert_lt(from, 3u);
		cr_assert_eq(CONC_TEST_PRODUCER(v), from, "item of input %zu reported from %zu",
			     CONC_TEST_PRODUCER(v), from);
		cr_assert_eq(CONC_TEST_SEQ(v), next[from], "order within input %zu", from);
		next[from]++;
	}
	for (size_t i = 0; i < 3; i++)
		cr_assert_eq(conc_fan_in_count(m, i), 5u);
	/* Input 1 is closed and now drained; the others are open. */
	uint64_t v;
	cr_assert_eq(conc_fan_in_try_recv(m, &v, NULL), CONC_EMPTY);
	cr_assert_eq(conc_fan_in_open(m), 2u, "the drained, closed input left the set");
	cr_assert_eq(conc_fan_in_recv_until(m, &v, NULL, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_chan_close(in[0]), CONC_OK);
	cr_assert_eq(conc_chan_close(in[2]), CONC_OK);
	cr_assert_eq(conc_fan_in_recv(m, &v, NULL), CONC_CLOSED);
	cr_assert_eq(conc_fan_in_open(m), 0u);
	cr_assert_eq(conc_fan_in_recv(m, &v, NULL), CONC_CLOSED, "and forever after");
	cr_assert_eq(conc_fan_in_try_recv(m, &v, NULL), CONC_CLOSED);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 3);
}

Test(fan_in, closed_input_is_drained_before_it_leaves, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(4, 8), new_chan(4, 8)};
	struct conc_fan_in *m = new_merge(in, 2);
	put(in[0], 1);
	put(in[0], 2);
	close_all(in, 2);
	uint64_t v;
	size_t from;
	cr_assert_eq(conc_fan_in_recv(m, &v, &from), CONC_OK);
	cr_assert_eq(v, 1u);
	cr_assert_eq(from, 0u);
	cr_assert_eq(conc_fan_in_try_recv(m, &v, &from), CONC_OK);
	cr_assert_eq(v, 2u);
	cr_assert_eq(conc_fan_in_recv(m, &v, &from), CONC_CLOSED);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 2);
}

Test(fan_in, on_caller_memory, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(2, 4), new_chan(0, 4)};
	size_t need = conc_fan_in_buf_size(2, 4);
	cr_assert_gt(need, 0u);
	uint64_t buf[256];
	cr_assert_leq(need, sizeof buf);
	struct conc_fan_in m;
	cr_assert_eq(conc_fan_in_init(&m, in, 2, buf, need - 1), CONC_OVERFLOW);
	cr_assert_eq(conc_fan_in_init(&m, in, 2, (char *)buf + 4, need), CONC_INVALID, "misaligned");
	cr_assert_eq(conc_fan_in_init(&m, in, 2, buf, need), CONC_OK);
	uint32_t x = 7, y = 0;
	cr_assert_eq(conc_chan_try_send(in[0], &x), CONC_OK);
	size_t from = 9;
	cr_assert_eq(conc_fan_in_recv(&m, &y, &from), CONC_OK);
	cr_assert_eq(y, 7u);
	cr_assert_eq(from, 0u);
	cr_assert_eq(conc_fan_in_free(&m), CONC_INVALID, "not from new");
	cr_assert_eq(conc_fan_in_destroy(&m), CONC_OK);
	cr_assert_eq(conc_fan_in_destroy(&m), CONC_INVALID, "twice");
	cr_assert_eq(conc_fan_in_recv(&m, &y, &from), CONC_INVALID, "after destroy");
	cr_assert_eq(conc_fan_in_count(&m, 0), 0u);
	free_all(in, 2);
}

Test(fan_in, bad_input, .timeout = 120)
{
	struct conc_chan *in[3] = {new_chan(2, 8), new_chan(2, 8), new_chan(2, 4)};
	struct conc_chan *with_null[2] = {in[0], NULL};
	struct conc_fan_in *m = NULL;
	uint64_t buf[64];
	struct conc_fan_in mm;
	cr_assert_eq(conc_fan_in_new(NULL, in, 2), CONC_INVALID);
	cr_assert_eq(conc_fan_in_new(&m, NULL, 2), CONC_INVALID);
	cr_assert_eq(conc_fan_in_new(&m, in, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_in_new(&m, in, 3), CONC_INVALID, "element sizes differ");
	cr_assert_eq(conc_fan_in_new(&m, with_null, 2), CONC_INVALID);
	cr_assert_eq(conc_fan_in_new(&m, in, CONC_SELECT_MAX_CASES + 1), CONC_INVALID);
	cr_assert_null(m, "*out untouched on failure");
	cr_assert_eq(conc_fan_in_init(NULL, in, 2, buf, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_fan_in_init(&mm, in, 2, NULL, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_fan_in_init(&mm, NULL, 2, buf, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_fan_in_init(&mm, with_null, 2, buf, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_fan_in_buf_size(0, 8), 0u);
	cr_assert_eq(conc_fan_in_buf_size(2, 0), 0u);
	cr_assert_eq(conc_fan_in_buf_size(SIZE_MAX / 2, 8), 0u, "overflow");
	cr_assert_eq(conc_fan_in_buf_size(2, SIZE_MAX - 4), 0u, "overflow");

	m = new_merge(in, 2);
	uint64_t v;
	cr_assert_eq(conc_fan_in_recv(NULL, &v, NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_in_recv(m, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_in_try_recv(NULL, &v, NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_in_try_recv(m, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_in_pump(NULL, in[0]), CONC_INVALID);
	cr_assert_eq(conc_fan_in_pump(m, NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_in_pump(m, in[1]), CONC_INVALID, "the output is one of the inputs");
	cr_assert_eq(conc_fan_in_pump(m, in[2]), CONC_INVALID, "4-byte output for 8-byte inputs");
	struct conc_chan *wide = new_chan(2, 17 + 8);
	cr_assert_eq(conc_fan_in_pump(m, wide), CONC_INVALID, "wider than a tagged element");
	cr_assert_eq(conc_fan_in_count(NULL, 0), 0u);
	cr_assert_eq(conc_fan_in_count(m, 2), 0u, "out of range");
	cr_assert_eq(conc_fan_in_open(NULL), 0u);
	cr_assert_not(conc_fan_in_pending(NULL));
	cr_assert_eq(conc_fan_in_destroy(m), CONC_INVALID, "from new: use free");
	cr_assert_eq(conc_fan_in_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_in_free(NULL), CONC_OK);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_chan(wide);
	free_all(in, 3);
}

Test(fan_in, allocation_failure_is_nomem, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(2, 8), new_chan(2, 8)};
	struct conc_fan_in *m = NULL;
	alloc_fail = 1;
	enum conc_status s = conc_fan_in_new(&m, in, 2);
	alloc_fail = 0;
	cr_assert_eq(s, CONC_NOMEM);
	cr_assert_null(m);
	free_all(in, 2);
}

Test(fan_in, blocked_recv_wakes_on_a_send_from_another_thread, .timeout = 120)
{
	struct conc_chan *in[3] = {new_chan(1, 8), new_chan(0, 8), new_chan(3, 8)};
	struct conc_fan_in *m = new_merge(in, 3);
	for (size_t i = 0; i < 3; i++) {
		struct merge_call c;
		merge_call_start(&c, m, NULL, conc_deadline_forever(), NULL);
		wait_merge_parked(in, 3);
		uint64_t v = 100 + i;
		if (i == 1)
			cr_assert_eq(conc_chan_send(in[i], &v), CONC_OK, "the parked merge takes it");
		else
			put(in[i], v);
		join(c.thread);
		cr_assert_eq(c.result, CONC_OK);
		cr_assert_eq(c.v, 100 + i);
		cr_assert_eq(c.origin, i);
	}
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 3);
}

Test(fan_in, blocked_recv_ends_when_the_last_input_closes, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(2, 8), new_chan(0, 8)};
	struct conc_fan_in *m = new_merge(in, 2);
	struct merge_call c;
	merge_call_start(&c, m, NULL, conc_deadline_forever(), NULL);
	wait_merge_parked(in, 2);
	cr_assert_eq(conc_chan_close(in[1]), CONC_OK);
	conc_test_wait_chan_parked(in[0], false, 1); /* parked again, on the input left */
	cr_assert_eq(conc_chan_close(in[0]), CONC_OK);
	join(c.thread);
	cr_assert_eq(c.result, CONC_CLOSED);
	cr_assert_eq(conc_fan_in_open(m), 0u);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 2);
}

Test(fan_in, blocked_recv_is_canceled_from_another_thread, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(2, 8), new_chan(0, 8)};
	struct conc_fan_in *m = new_merge(in, 2);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct merge_call c;
	merge_call_start(&c, m, NULL, conc_deadline_forever(), &ctx);
	wait_merge_parked(in, 2);
	uint64_t v;
	cr_assert_eq(conc_fan_in_try_recv(m, &v, NULL), CONC_BUSY, "a second receiver is refused");
	cr_assert_eq(conc_fan_in_free(m), CONC_BUSY, "not while a call runs");
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(c.thread);
	cr_assert_eq(c.result, CONC_CANCELED);
	cr_assert_eq(conc_fan_in_recv_until(m, &v, NULL, conc_deadline_forever(), &ctx), CONC_CANCELED,
		     "a done context fails the call first");
	put(in[0], 5);
	cr_assert_eq(conc_fan_in_recv(m, &v, NULL), CONC_OK, "the merge is still usable");
	cr_assert_eq(v, 5u);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 2);
}

Test(fan_in, deadlines_on_the_call_and_on_the_context, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(2, 8), new_chan(2, 8)};
	struct conc_fan_in *m = new_merge(in, 2);
	uint64_t v;
	cr_assert_eq(conc_fan_in_recv_until(m, &v, NULL, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_fan_in_recv_until(m, &v, NULL, conc_deadline_in_ms(5), NULL), CONC_TIMEDOUT);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ms(5)), CONC_OK);
	struct merge_call c;
	merge_call_start(&c, m, NULL, conc_deadline_forever(), &ctx);
	join(c.thread);
	cr_assert_eq(c.result, CONC_TIMEDOUT, "the context's deadline: %s", conc_strerror(c.result));
	put(in[1], 3);
	cr_assert_eq(conc_fan_in_recv_until(m, &v, NULL, conc_deadline_poll(), NULL), CONC_OK,
		     "a passed deadline still tries once");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 2);
}

Test(fan_in, fair_among_ready_inputs, .timeout = 120)
{
	enum { CAP = 128 };
	struct conc_chan *in[2] = {new_chan(CAP, 8), new_chan(CAP, 8)};
	struct conc_fan_in *m = new_merge(in, 2);
	for (uint64_t k = 0; k < CAP; k++) {
		put(in[0], k);
		put(in[1], k);
	}
	for (int k = 0; k < CAP; k++) {
		uint64_t v;
		cr_assert_eq(conc_fan_in_recv(m, &v, NULL), CONC_OK);
	}
	/* Binomial(128, 1/2): fewer than 32 from one side is 5.7 sigma away. */
	cr_assert_geq(conc_fan_in_count(m, 0), 32u, "input 0 got %llu of %d",
		      (unsigned long long)conc_fan_in_count(m, 0), CAP);
	cr_assert_geq(conc_fan_in_count(m, 1), 32u, "input 1 got %llu of %d",
		      (unsigned long long)conc_fan_in_count(m, 1), CAP);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, 2);
}

/* Producers on rendezvous and buffered inputs, merged on the test's thread:
 * per-input order, every item once, the right origin. */
struct producer {
	struct conc_chan *ch;
	size_t id, count;
	enum conc_status result;
	pthread_t thread;
};

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	p->result = CONC_OK;
	for (size_t k = 0; k < p->count && p->result == CONC_OK; k++) {
		uint64_t v = CONC_TEST_ITEM(p->id, k);
		p->result = conc_chan_send(p->ch, &v);
	}
	if (p->result == CONC_OK)
		p->result = conc_chan_close(p->ch);
	return NULL;
}

Test(fan_in, producers_on_rendezvous_and_buffered_inputs, .timeout = 120)
{
	enum { N = 4 };
	size_t per = 2000 * CONC_STRESS_SCALE;
	struct conc_chan *in[N] = {new_chan(0, 8), new_chan(1, 8), new_chan(0, 8), new_chan(16, 8)};
	struct conc_fan_in *m = new_merge(in, N);
	struct producer p[N];
	for (size_t i = 0; i < N; i++) {
		p[i] = (struct producer){in[i], i, per, CONC_STATUS_COUNT__, 0};
		start(&p[i].thread, producer_main, &p[i]);
	}
	struct conc_test_ledger l;
	conc_test_ledger_init(&l, N, per);
	size_t last[N];
	for (size_t i = 0; i < N; i++)
		last[i] = SIZE_MAX;
	uint64_t v;
	size_t from, got = 0;
	enum conc_status s;
	while ((s = conc_fan_in_recv(m, &v, &from)) == CONC_OK) {
		cr_assert_eq(conc_test_ledger_mark(&l, v), 0, "duplicate p%zu #%zu", CONC_TEST_PRODUCER(v),
			     CONC_TEST_SEQ(v));
		cr_assert_eq(CONC_TEST_PRODUCER(v), from);
		cr_assert(conc_test_fifo_ok(last, v), "order of input %zu", from);
		got++;
	}
	cr_assert_eq(s, CONC_CLOSED);
	cr_assert_eq(got, N * per);
	cr_assert_eq(conc_test_ledger_missing(&l), 0u);
	for (size_t i = 0; i < N; i++) {
		join(p[i].thread);
		cr_assert_eq(p[i].result, CONC_OK);
		cr_assert_eq(conc_fan_in_count(m, i), per);
	}
	conc_test_ledger_free(&l);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_all(in, N);
}

Test(fan_in, pump_forwards_payloads_and_closes_the_output, .timeout = 120)
{
	struct conc_chan *in[3] = {new_chan(4, 8), new_chan(4, 8), new_chan(4, 8)};
	struct conc_chan *out = new_chan(16, 8);
	struct conc_fan_in *m = new_merge(in, 3);
	for (uint64_t i = 0; i < 3; i++)
		for (uint64_t k = 0; k < 4; k++)
			put(in[i], CONC_TEST_ITEM(i, k));
	close_all(in, 3);
	cr_assert_eq(conc_fan_in_pump(m, out), CONC_OK);
	cr_assert(conc_chan_is_closed(out));
	cr_assert_eq(conc_chan_len(out), 12u);
	size_t last[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
	uint64_t v;
	while (conc_chan_try_recv(out, &v) == CONC_OK)
		cr_assert(conc_test_fifo_ok(last, v));
	cr_assert_eq(conc_fan_in_pump(m, out), CONC_OK, "done: closing again is fine");
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_chan(out);
	free_all(in, 3);
}

struct tagged_u32 CONC_FAN_TAGGED(uint32_t);

Test(fan_in, pump_tags_each_element_with_its_origin, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(4, 4), new_chan(0, 4)};
	struct conc_chan *out = new_chan(2, sizeof(struct tagged_u32));
	struct conc_fan_in *m = new_merge(in, 2);
	struct merge_call c;
	merge_call_start(&c, m, out, conc_deadline_forever(), NULL);
	uint32_t x = 11;
	cr_assert_eq(conc_chan_send(in[0], &x), CONC_OK);
	x = 22;
	cr_assert_eq(conc_chan_send(in[1], &x), CONC_OK);
	struct tagged_u32 t[2];
	cr_assert_eq(conc_chan_recv(out, &t[0]), CONC_OK);
	cr_assert_eq(conc_chan_recv(out, &t[1]), CONC_OK);
	for (int k = 0; k < 2; k++)
		cr_assert_eq(t[k].item, t[k].origin == 0 ? 11u : 22u, "origin %llu item %u",
			     (unsigned long long)t[k].origin, t[k].item);
	cr_assert_neq(t[0].origin, t[1].origin);
	close_all(in, 2);
	join(c.thread);
	cr_assert_eq(c.result, CONC_OK);
	cr_assert_eq(conc_chan_recv(out, &t[0]), CONC_CLOSED);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_chan(out);
	free_all(in, 2);
}

Test(fan_in, canceled_pump_keeps_the_element_in_hand, .timeout = 120)
{
	struct conc_chan *in[2] = {new_chan(4, 8), new_chan(4, 8)};
	struct conc_chan *out = new_chan(1, 8);
	struct conc_fan_in *m = new_merge(in, 2);
	put(out, 999); /* full: the pump will block sending */
	put(in[1], 42);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct merge_call c;
	merge_call_start(&c, m, out, conc_deadline_forever(), &ctx);
	conc_test_wait_chan_parked(out, true, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(c.thread);
	cr_assert_eq(c.result, CONC_CANCELED);
	cr_assert(conc_fan_in_pending(m), "42 is in hand");
	cr_assert_not(conc_chan_is_closed(out), "a canceled pump does not close its output");
	/* A pump with a passed deadline: still full, so 42 stays. */
	cr_assert_eq(conc_fan_in_pump_until(m, out, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert(conc_fan_in_pending(m));
	uint64_t v;
	size_t from = 9;
	cr_assert_eq(conc_fan_in_recv(m, &v, &from), CONC_OK, "recv delivers the element in hand");
	cr_assert_eq(v, 42u);
	cr_assert_eq(from, 1u);
	cr_assert_not(conc_fan_in_pending(m));
	/* And a pump delivers it too, before anything else. */
	put(in[0], 7);
	cr_assert_eq(conc_fan_in_pump_until(m, out, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert(conc_fan_in_pending(m));
	expect(out, 999);
	put(in[0], 8);
	close_all(in, 2);
	struct conc_chan *big = new_chan(4, 8);
	cr_assert_eq(conc_fan_in_pump(m, big), CONC_OK);
	expect(big, 7);
	expect(big, 8);
	cr_assert(conc_chan_is_closed(big));
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_chan(big);
	free_chan(out);
	free_all(in, 2);
}

Test(fan_in, pump_reports_an_output_closed_by_someone_else, .timeout = 120)
{
	struct conc_chan *in[1] = {new_chan(4, 8)};
	struct conc_chan *out = new_chan(4, 8);
	struct conc_fan_in *m = new_merge(in, 1);
	put(in[0], 1);
	cr_assert_eq(conc_chan_close(out), CONC_OK);
	cr_assert_eq(conc_fan_in_pump(m, out), CONC_CLOSED);
	cr_assert(conc_fan_in_pending(m));
	uint64_t v;
	cr_assert_eq(conc_fan_in_try_recv(m, &v, NULL), CONC_OK);
	cr_assert_eq(v, 1u);
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	free_chan(out);
	free_all(in, 1);
}

/* ----------------------------------------------------------------- fan-out */

struct job_ctx {
	uint64_t fail_on;     /* an item that makes fn fail (0: none) */
	int fail_with;
	bool block;           /* fn blocks until canceled */
	atomic_size_t blocked; /* fns blocked now */
	atomic_size_t dropped;
	atomic_size_t handled;
};

/* Double the item and send (worker << 32 | 2 item), blocking with ctx. */
static int job_fn(void *arg, struct conc_ctx *ctx, size_t worker, void *item, struct conc_chan *out)
{
	struct job_ctx *j = arg;
	uint64_t v;
	memcpy(&v, item, sizeof v);
	atomic_fetch_add(&j->handled, 1);
	if (j->fail_on && v == j->fail_on)
		return j->fail_with;
	if (j->block) {
		atomic_fetch_add(&j->blocked, 1);
		enum conc_status s = conc_ctx_wait_until(ctx, conc_deadline_forever());
		atomic_fetch_sub(&j->blocked, 1);
		return (int)s;
	}
	if (!out)
		return 0;
	uint64_t r = ((uint64_t)worker << 32) | (2 * v);
	return (int)conc_chan_send_until(out, &r, conc_deadline_forever(), ctx);
}

static void job_drop(void *arg, void *item)
{
	(void)item;
	atomic_fetch_add(&((struct job_ctx *)arg)->dropped, 1);
}

static struct conc_fan_out *start_fan(struct conc_chan *in, struct conc_chan *out, struct conc_chan **outs,
				      size_t n, struct job_ctx *j, struct conc_ctx *parent, unsigned flags)
{
	struct conc_fan_out *f = NULL;
	struct conc_fan_out_fns fns = {job_fn, job_drop, j};
	cr_assert_eq(conc_fan_out_start(&f, in, out, outs, n, &fns, parent, flags), CONC_OK);
	cr_assert_not_null(f);
	return f;
}

static int wait_fan(struct conc_fan_out *f)
{
	int err = -12345;
	cr_assert_eq(conc_fan_out_wait(f, &err), CONC_OK);
	return err;
}

Test(fan_out, workers_process_every_job_and_close_the_output, .timeout = 120)
{
	enum { JOBS = 100, WORKERS = 5 };
	struct conc_chan *in = new_chan(8, 8), *out = new_chan(JOBS, 8);
	struct job_ctx j = {0};
	struct conc_fan_out *f = start_fan(in, out, NULL, WORKERS, &j, NULL, 0);
	cr_assert_eq(conc_fan_out_workers(f), (size_t)WORKERS);
	for (uint64_t v = 1; v <= JOBS; v++)
		cr_assert_eq(conc_chan_send(in, &v), CONC_OK);
	cr_assert_eq(conc_chan_close(in), CONC_OK);
	cr_assert_eq(wait_fan(f), 0);
	cr_assert(conc_chan_is_closed(out), "the last worker closed the output");
	uint64_t sum = 0, r, counted = 0, per[WORKERS] = {0};
	size_t n = 0;
	while (conc_chan_try_recv(out, &r) == CONC_OK) {
		cr_assert_lt(r >> 32, (uint64_t)WORKERS);
		per[r >> 32]++;
		sum += r & 0xffffffffu;
		n++;
	}
	cr_assert_eq(n, (size_t)JOBS);
	cr_assert_eq(sum, (uint64_t)JOBS * (JOBS + 1));
	for (size_t w = 0; w < WORKERS; w++) {
		cr_assert_eq(conc_fan_out_count(f, w), per[w], "worker %zu's count", w);
		counted += conc_fan_out_count(f, w);
	}
	cr_assert_eq(counted, (uint64_t)JOBS);
	cr_assert_eq(atomic_load(&j.dropped), 0u);
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_chan(in);
	free_chan(out);
}

Test(fan_out, per_worker_outputs_merged_by_fan_in, .timeout = 120)
{
	enum { JOBS = 300, WORKERS = 4 };
	struct conc_chan *in = new_chan(4, 8);
	struct conc_chan *outs[WORKERS];
	for (size_t w = 0; w < WORKERS; w++)
		outs[w] = new_chan(w == 0 ? 0 : 2, 8);
	struct job_ctx j = {0};
	struct conc_fan_out *f = start_fan(in, NULL, outs, WORKERS, &j, NULL, 0);
	struct conc_fan_in *m = new_merge(outs, WORKERS);
	struct producer p = {in, 0, JOBS, CONC_STATUS_COUNT__, 0};
	start(&p.thread, producer_main, &p); /* items 1..: CONC_TEST_ITEM(0, k) = k */
	uint64_t r, sum = 0;
	size_t from, n = 0;
	enum conc_status s;
	while ((s = conc_fan_in_recv(m, &r, &from)) == CONC_OK) {
		cr_assert_eq(r >> 32, (uint64_t)from, "origin is the worker that sent it");
		sum += r & 0xffffffffu;
		n++;
	}
	cr_assert_eq(s, CONC_CLOSED, "every worker's output closed");
	cr_assert_eq(n, (size_t)JOBS);
	cr_assert_eq(sum, (uint64_t)JOBS * (JOBS - 1));
	join(p.thread);
	cr_assert_eq(p.result, CONC_OK);
	cr_assert_eq(wait_fan(f), 0);
	for (size_t w = 0; w < WORKERS; w++)
		cr_assert_eq(conc_fan_out_count(f, w), conc_fan_in_count(m, w));
	cr_assert_eq(conc_fan_in_free(m), CONC_OK);
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_all(outs, WORKERS);
	free_chan(in);
}

Test(fan_out, first_error_cancels_the_others_and_is_reported, .timeout = 120)
{
	enum { WORKERS = 4 };
	struct conc_chan *in = new_chan(8, 8), *out = new_chan(64, 8);
	struct job_ctx j = {0};
	j.fail_on = 7;
	j.fail_with = 4242;
	struct conc_fan_out *f = start_fan(in, out, NULL, WORKERS, &j, NULL, 0);
	conc_test_wait_chan_parked(in, false, WORKERS);
	/* The input stays open: only the error can end the workers. */
	for (uint64_t v = 1; v <= 7; v++)
		cr_assert_eq(conc_chan_send(in, &v), CONC_OK);
	cr_assert_eq(wait_fan(f), 4242);
	cr_assert(conc_chan_is_closed(out));
	cr_assert_not(conc_chan_is_closed(in), "the input is the caller's");
	uint64_t handled = 0;
	for (size_t w = 0; w < WORKERS; w++)
		handled += conc_fan_out_count(f, w);
	uint64_t v;
	size_t left = 0;
	while (conc_chan_try_recv(in, &v) == CONC_OK)
		left++;
	cr_assert_eq(handled + atomic_load(&j.dropped) + left, 7u, "every job handled, dropped or left");
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_chan(in);
	free_chan(out);
}

Test(fan_out, workers_blocked_in_fn_are_canceled_from_another_thread, .timeout = 120)
{
	enum { WORKERS = 3 };
	struct conc_chan *in = new_chan(8, 8);
	struct job_ctx j = {0};
	j.block = true;
	struct conc_fan_out *f = start_fan(in, NULL, NULL, WORKERS, &j, NULL, 0);
	for (uint64_t v = 1; v <= WORKERS; v++)
		cr_assert_eq(conc_chan_send(in, &v), CONC_OK);
	while (atomic_load(&j.blocked) < WORKERS)
		conc_yield();
	int err = 0;
	cr_assert_eq(conc_fan_out_wait_until(f, conc_deadline_poll(), NULL, &err), CONC_TIMEDOUT);
	cr_assert_eq(conc_fan_out_wait_until(f, conc_deadline_in_ms(2), NULL, &err), CONC_TIMEDOUT);
	struct conc_ctx wctx;
	cr_assert_eq(conc_ctx_init_root(&wctx), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&wctx, 0), CONC_OK);
	cr_assert_eq(conc_fan_out_wait_until(f, conc_deadline_forever(), &wctx, &err), CONC_CANCELED,
		     "the wait's own context");
	cr_assert_eq(conc_ctx_destroy(&wctx), CONC_OK);
	cr_assert_eq(conc_fan_out_free(f), CONC_BUSY, "workers still running");
	cr_assert_eq(conc_fan_out_cancel(f, 77), CONC_OK);
	cr_assert_eq(conc_fan_out_cancel(f, 78), CONC_CANCELED, "already canceled");
	cr_assert_eq(wait_fan(f), 77);
	cr_assert_eq(wait_fan(f), 77, "waiting again");
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_chan(in);
}

Test(fan_out, parent_cancel_and_deadline_end_the_workers, .timeout = 120)
{
	struct conc_chan *in = new_chan(8, 8);
	struct job_ctx j = {0};
	struct conc_ctx parent;
	cr_assert_eq(conc_ctx_init_root(&parent), CONC_OK);
	struct conc_fan_out *f = start_fan(in, NULL, NULL, 3, &j, &parent, 0);
	conc_test_wait_chan_parked(in, false, 3);
	cr_assert_eq(conc_ctx_cancel(&parent, 5150), CONC_OK);
	cr_assert_eq(wait_fan(f), 5150, "the parent's cause");
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK);
	free_chan(in);
}

Test(fan_out, a_done_parent_starts_nothing, .timeout = 120)
{
	struct conc_chan *in = new_chan(8, 8);
	struct job_ctx j = {0};
	struct conc_ctx parent;
	cr_assert_eq(conc_ctx_init_root(&parent), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&parent, 0), CONC_OK);
	struct conc_fan_out *f = NULL;
	struct conc_fan_out_fns fns = {job_fn, NULL, &j};
	cr_assert_eq(conc_fan_out_start(&f, in, NULL, NULL, 2, &fns, &parent, 0), CONC_CANCELED);
	cr_assert_null(f);
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK);

	cr_assert_eq(conc_ctx_init(&parent, NULL, conc_deadline_in_ms(5)), CONC_OK);
	enum conc_status s = conc_fan_out_start(&f, in, NULL, NULL, 2, &fns, &parent, 0);
	if (s == CONC_OK) {
		cr_assert_eq(wait_fan(f), CONC_TIMEDOUT, "the deadline ends the workers");
		cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	} else {
		cr_assert_eq(s, CONC_TIMEDOUT, "the 5 ms were over before the start (a loaded machine)");
	}
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK);
	free_chan(in);
}

Test(fan_out, keep_open_leaves_the_outputs_to_the_caller, .timeout = 120)
{
	struct conc_chan *in = new_chan(8, 8), *out = new_chan(8, 8);
	struct job_ctx j = {0};
	struct conc_fan_out *f = start_fan(in, out, NULL, 2, &j, NULL, CONC_FAN_KEEP_OPEN);
	uint64_t v = 4;
	cr_assert_eq(conc_chan_send(in, &v), CONC_OK);
	cr_assert_eq(conc_chan_close(in), CONC_OK);
	cr_assert_eq(wait_fan(f), 0);
	cr_assert_not(conc_chan_is_closed(out));
	cr_assert_eq(conc_chan_recv(out, &v), CONC_OK);
	cr_assert_eq(v & 0xffffffffu, 8u);
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_chan(in);
	free_chan(out);
}

/*
 * An element sent just as the fan-out is canceled never reaches fn: either a
 * worker woken by the cancel takes it in a retried receive and hands it to
 * drop, or it stays in the input.  Which one happens is up to timing, so each
 * round checks the accounting, not which way it went (stress-fan's storm
 * scenario counts the drops under load).
 */
Test(fan_out, an_element_sent_at_cancel_is_dropped_or_left_never_run, .timeout = 120)
{
	struct conc_chan *in = new_chan(1, 8);
	for (int round = 0; round < 500; round++) {
		struct job_ctx j = {0};
		struct conc_fan_out *f = start_fan(in, NULL, NULL, 1, &j, NULL, 0);
		conc_test_wait_chan_parked(in, false, 1);
		cr_assert_eq(conc_fan_out_cancel(f, 0), CONC_OK);
		uint64_t v = 1;
		cr_assert_eq(conc_chan_try_send(in, &v), CONC_OK);
		cr_assert_eq(wait_fan(f), CONC_CANCELED);
		cr_assert_eq(atomic_load(&j.handled), 0u, "round %d: fn ran after the cancel", round);
		size_t left = conc_chan_try_recv(in, &v) == CONC_OK;
		cr_assert_eq(atomic_load(&j.dropped) + left, 1u, "round %d: dropped or left in the input", round);
		cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	}
	free_chan(in);
}

Test(fan_out, bad_input, .timeout = 120)
{
	struct conc_chan *in = new_chan(2, 8), *out = new_chan(2, 8);
	struct conc_chan *outs[2] = {out, NULL};
	struct job_ctx j = {0};
	struct conc_fan_out_fns fns = {job_fn, NULL, &j}, nofn = {NULL, NULL, &j};
	struct conc_fan_out *f = NULL;
	cr_assert_eq(conc_fan_out_start(NULL, in, out, NULL, 2, &fns, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_out_start(&f, NULL, out, NULL, 2, &fns, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_out_start(&f, in, out, NULL, 0, &fns, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_out_start(&f, in, out, NULL, 2, NULL, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_out_start(&f, in, out, NULL, 2, &nofn, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_out_start(&f, in, out, outs, 1, &fns, NULL, 0), CONC_INVALID, "out and outs");
	cr_assert_eq(conc_fan_out_start(&f, in, NULL, outs, 2, &fns, NULL, 0), CONC_INVALID, "NULL in outs");
	cr_assert_eq(conc_fan_out_start(&f, in, out, NULL, 2, &fns, NULL, 0x80), CONC_INVALID, "flags");
	cr_assert_eq(conc_fan_out_start(&f, in, in, NULL, 2, &fns, NULL, 0), CONC_INVALID, "out is in");
	struct conc_chan *outs_in[2] = {out, in};
	cr_assert_eq(conc_fan_out_start(&f, in, NULL, outs_in, 2, &fns, NULL, 0), CONC_INVALID, "outs has in");
	cr_assert_eq(conc_fan_out_start(&f, in, out, NULL, SIZE_MAX / 2, &fns, NULL, 0), CONC_OVERFLOW);
	cr_assert_null(f);
	int err = 5;
	cr_assert_eq(conc_fan_out_wait(NULL, &err), CONC_INVALID);
	cr_assert_eq(err, 5);
	cr_assert_eq(conc_fan_out_wait_until(NULL, conc_deadline_poll(), NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_fan_out_cancel(NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_fan_out_count(NULL, 0), 0u);
	cr_assert_eq(conc_fan_out_workers(NULL), 0u);
	cr_assert_eq(conc_fan_out_free(NULL), CONC_OK);
	f = start_fan(in, out, NULL, 1, &j, NULL, 0);
	cr_assert_eq(conc_fan_out_count(f, 1), 0u, "out of range");
	cr_assert_eq(conc_chan_close(in), CONC_OK);
	cr_assert_eq(conc_fan_out_wait(f, NULL), CONC_OK, "err may be NULL");
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_chan(in);
	free_chan(out);
}

Test(fan_out, allocation_failure_is_nomem, .timeout = 120)
{
	struct conc_chan *in = new_chan(2, 8);
	struct job_ctx j = {0};
	struct conc_fan_out_fns fns = {job_fn, NULL, &j};
	struct conc_fan_out *f = NULL;
	alloc_fail = 1;
	enum conc_status s = conc_fan_out_start(&f, in, NULL, NULL, 3, &fns, NULL, 0);
	alloc_fail = 0;
	cr_assert_eq(s, CONC_NOMEM);
	cr_assert_null(f);
	free_chan(in);
}

Test(fan_out, thread_creation_failure_takes_nothing_and_leaves_nothing, .timeout = 120)
{
	struct conc_chan *in = new_chan(8, 8), *out = new_chan(8, 8);
	struct conc_chan *outs[4] = {new_chan(1, 8), new_chan(1, 8), new_chan(1, 8), new_chan(1, 8)};
	struct conc_ctx parent;
	cr_assert_eq(conc_ctx_init_root(&parent), CONC_OK);
	for (uint64_t v = 1; v <= 5; v++)
		put(in, v);
	struct job_ctx j = {0};
	struct conc_fan_out_fns fns = {job_fn, job_drop, &j};
	for (int budget = 0; budget < 4; budget++) {
		struct conc_fan_out *f = NULL;
		thread_budget = budget;
		enum conc_status s = conc_fan_out_start(&f, in, budget % 2 ? out : NULL, budget % 2 ? NULL : outs,
							4, &fns, &parent, 0);
		thread_budget = -1;
		cr_assert_eq(s, CONC_NOMEM, "thread %d of 4 failed: %s", budget, conc_strerror(s));
		cr_assert_null(f);
		cr_assert_eq(conc_chan_len(in), 5u, "no element taken");
		cr_assert_not(conc_chan_is_closed(out), "no output touched");
		for (int w = 0; w < 4; w++)
			cr_assert_not(conc_chan_is_closed(outs[w]));
	}
	cr_assert_eq(atomic_load(&j.handled) + atomic_load(&j.dropped), 0u);
	cr_assert_eq(conc_ctx_err(&parent), CONC_OK, "the parent is not canceled");
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK, "nothing left attached to it");
	free_all(outs, 4);
	free_chan(in);
	free_chan(out);
}

Test(fan_out, more_workers_than_cores, .timeout = 120)
{
	enum { WORKERS = 16 };
	size_t jobs = 5000 * CONC_STRESS_SCALE;
	struct conc_chan *in = new_chan(4, 8), *out = new_chan(3, 8);
	struct job_ctx j = {0};
	struct conc_fan_out *f = start_fan(in, out, NULL, WORKERS, &j, NULL, 0);
	struct producer p = {in, 0, jobs, CONC_STATUS_COUNT__, 0};
	start(&p.thread, producer_main, &p);
	struct conc_test_ledger l;
	conc_test_ledger_init(&l, 1, jobs);
	uint64_t r;
	size_t n = 0;
	while (conc_chan_recv(out, &r) == CONC_OK) {
		cr_assert_eq(conc_test_ledger_mark(&l, (r & 0xffffffffu) / 2), 0);
		n++;
	}
	cr_assert_eq(n, jobs);
	cr_assert_eq(conc_test_ledger_missing(&l), 0u);
	join(p.thread);
	cr_assert_eq(wait_fan(f), 0);
	uint64_t total = 0;
	for (size_t w = 0; w < WORKERS; w++)
		total += conc_fan_out_count(f, w);
	cr_assert_eq(total, (uint64_t)jobs);
	conc_test_ledger_free(&l);
	cr_assert_eq(conc_fan_out_free(f), CONC_OK);
	free_chan(in);
	free_chan(out);
}
