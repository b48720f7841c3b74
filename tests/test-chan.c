/* SPDX-License-Identifier: MIT */
/*
 * The channel: every operation and status, single-threaded first, then
 * blocked threads (woken by the other side, by close, by cancel), then
 * several producers and consumers checking exactly-once delivery and
 * per-producer order.  Built twice: on the futex parker and, as
 * test-chan-nofutex, on the portable pthread one.
 *
 * Worker threads never assert (Criterion's asserts belong to the test's own
 * thread): they record what they saw, and the test asserts after joining.
 */

/* Allocation hook (chan.h lets it be overridden) so that CONC_NOMEM can be
 * tested without asking the system for an impossible block. */
static int chan_alloc_fail;
#define CONC_ALIGNED_ALLOC(align, size) (chan_alloc_fail ? NULL : aligned_alloc((align), (size)))
#define CONC_FREE(p) free(p)

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

#ifndef CONC_STRESS_SCALE
#define CONC_STRESS_SCALE 1
#endif

#define MS INT64_C(1000000)

/* ------------------------------------------------------------------ helpers */

static void expect_empty(struct conc_chan *c)
{
	uint64_t v;
	cr_assert_eq(conc_chan_try_recv(c, &v), CONC_EMPTY);
	cr_assert_eq(conc_chan_len(c), 0u);
}

/* One channel call on its own thread, so that it can block. */
enum op_kind { OP_SEND, OP_RECV, OP_SEND_N, OP_RECV_N, OP_SEND_BURST, OP_RECV_BURST };

struct op {
	struct conc_chan *ch;
	enum op_kind kind;
	size_t n;
	struct conc_deadline d;
	struct conc_ctx *ctx;
	uint64_t buf[8];
	size_t done; /* bursts: the count */
	enum conc_status result;
	_Atomic(int) finished;
	pthread_t thread;
};

static void *op_main(void *arg)
{
	struct op *op = arg;
	switch (op->kind) {
	case OP_SEND:
		op->result = conc_chan_send_until(op->ch, op->buf, op->d, op->ctx);
		break;
	case OP_RECV:
		op->result = conc_chan_recv_until(op->ch, op->buf, op->d, op->ctx);
		break;
	case OP_SEND_N:
		op->result = conc_chan_send_n_until(op->ch, op->buf, op->n, op->d, op->ctx);
		break;
	case OP_RECV_N:
		op->result = conc_chan_recv_n_until(op->ch, op->buf, op->n, op->d, op->ctx);
		break;
	case OP_SEND_BURST:
		op->done = conc_chan_send_burst_until(op->ch, op->buf, op->n, op->d, op->ctx, &op->result);
		break;
	case OP_RECV_BURST:
		op->done = conc_chan_recv_burst_until(op->ch, op->buf, op->n, op->d, op->ctx, &op->result);
		break;
	}
	atomic_store(&op->finished, 1);
	return NULL;
}

/* Start op on its thread.  Sends send first, first + 1, ... */
static void op_start(struct op *op, struct conc_chan *ch, enum op_kind kind, size_t n, struct conc_deadline d,
		     struct conc_ctx *ctx, uint64_t first)
{
	cr_assert_leq(n, sizeof op->buf / sizeof op->buf[0]);
	memset(op, 0, sizeof *op);
	op->ch = ch;
	op->kind = kind;
	op->n = n;
	op->d = d;
	op->ctx = ctx;
	for (size_t i = 0; i < n; i++)
		op->buf[i] = first + i;
	op->result = CONC_INVALID;
	atomic_init(&op->finished, 0);
	start(&op->thread, op_main, op);
}

static void op_join(struct op *op)
{
	join(op->thread);
}

/* ---------------------------------------------------- init, new, destroy */

Test(chan, init_rejects_bad_arguments, .timeout = 120)
{
	static _Alignas(64) unsigned char buf[4096];
	struct conc_chan c;
	size_t need = conc_chan_buf_size(4, 8);
	cr_assert_eq(need, 4u * 16u);

	cr_assert_eq(conc_chan_init(NULL, 4, 8, buf, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_chan_init(&c, 4, 8, NULL, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_chan_init(&c, 0, 0, NULL, 0), CONC_INVALID, "rendezvous, esize 0");
	cr_assert_eq(conc_chan_init(&c, 0, 8, buf + 4, 0), CONC_INVALID, "rendezvous, misaligned buf");
	cr_assert_eq(conc_chan_init(&c, 0, SIZE_MAX, NULL, 0), CONC_OVERFLOW, "rendezvous, huge esize");
	cr_assert_eq(conc_chan_init(&c, 4, 0, buf, sizeof buf), CONC_INVALID, "esize 0");
	cr_assert_eq(conc_chan_init(&c, 4, 8, buf + 1, sizeof buf - 1), CONC_INVALID, "misaligned by 1");
	cr_assert_eq(conc_chan_init(&c, 4, 8, buf + 4, sizeof buf - 4), CONC_INVALID, "misaligned by 4");
	cr_assert_eq(conc_chan_init(&c, CONC_CHAN_MAX_CAP + 1, 8, buf, sizeof buf), CONC_INVALID);
	cr_assert_eq(conc_chan_init(&c, SIZE_MAX, 8, buf, sizeof buf), CONC_INVALID);

	cr_assert_eq(conc_chan_init(&c, 4, 8, buf, need - 1), CONC_OVERFLOW, "buffer one byte short");
	cr_assert_eq(conc_chan_init(&c, 4, 8, buf, 0), CONC_OVERFLOW);
	cr_assert_eq(conc_chan_init(&c, 4, SIZE_MAX, buf, sizeof buf), CONC_OVERFLOW, "huge esize");
	cr_assert_eq(conc_chan_init(&c, 4, SIZE_MAX - 16, buf, sizeof buf), CONC_OVERFLOW, "cap * stride overflows");
	cr_assert_eq(conc_chan_init(&c, CONC_CHAN_MAX_CAP, SIZE_MAX / 1024, buf, sizeof buf), CONC_OVERFLOW);
	cr_assert_eq(conc_chan_init(&c, CONC_CHAN_MAX_CAP, 1, buf, sizeof buf), CONC_OVERFLOW,
		     "a valid size, a buffer too small");

	/* Exactly enough, 8-byte (not cache-line) alignment: fine. */
	cr_assert_eq(conc_chan_init(&c, 4, 8, buf + 8, need), CONC_OK);
	cr_assert_eq(conc_chan_cap(&c), 4u);
	cr_assert_eq(conc_chan_elem_size(&c), 8u);
	cr_assert_eq(conc_chan_len(&c), 0u);
	cr_assert_not(conc_chan_is_closed(&c));
	for (uint64_t i = 0; i < 4; i++)
		put(&c, i);
	uint64_t v = 9;
	cr_assert_eq(conc_chan_try_send(&c, &v), CONC_FULL);
	for (uint64_t i = 0; i < 4; i++)
		expect(&c, i);
	cr_assert_eq(conc_chan_destroy(&c), CONC_OK);
}

Test(chan, buf_size_matches_macro_and_rejects_bad_sizes, .timeout = 120)
{
	static const size_t caps[] = {1, 2, 3, 7, 1000, 1024};
	static const size_t sizes[] = {1, 3, 7, 8, 9, 16, 24, 100, 4096};
	for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
		for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
			size_t cap = caps[i], es = sizes[j];
			size_t stride = 8 + (es + 7) / 8 * 8;
			cr_assert_eq(conc_chan_buf_size(cap, es), cap * stride, "cap %zu esize %zu", cap, es);
			cr_assert_eq(CONC_CHAN_BUF_SIZE(cap, es), conc_chan_buf_size(cap, es), "cap %zu esize %zu", cap,
				     es);
		}
	/* A compile-time constant, for static buffers. */
	static unsigned char ring[CONC_CHAN_BUF_SIZE(3, 5)];
	cr_assert_eq(sizeof ring, 3u * 16u);

	cr_assert_eq(conc_chan_buf_size(0, 8), 0u);
	cr_assert_eq(conc_chan_buf_size(8, 0), 0u);
	cr_assert_eq(conc_chan_buf_size(CONC_CHAN_MAX_CAP + 1, 8), 0u);
	cr_assert_eq(conc_chan_buf_size(SIZE_MAX, 1), 0u);
	cr_assert_eq(conc_chan_buf_size(1, SIZE_MAX), 0u);
	cr_assert_eq(conc_chan_buf_size(1, SIZE_MAX - 7), 0u);
	cr_assert_eq(conc_chan_buf_size(2, SIZE_MAX / 2), 0u);
	cr_assert_eq(conc_chan_buf_size(CONC_CHAN_MAX_CAP, SIZE_MAX / 1024), 0u);
	cr_assert_eq(conc_chan_buf_size(CONC_CHAN_MAX_CAP, 8), CONC_CHAN_MAX_CAP * 16);
}

Test(chan, new_rejects_bad_arguments, .timeout = 120)
{
	struct conc_chan *const sentinel = (struct conc_chan *)(uintptr_t)0x1000;
	struct conc_chan *c = sentinel;
	cr_assert_eq(conc_chan_new(NULL, 4, 8), CONC_INVALID);
	cr_assert_eq(conc_chan_new(&c, 0, 0), CONC_INVALID);
	cr_assert_eq(conc_chan_new(&c, 0, SIZE_MAX), CONC_OVERFLOW);
	cr_assert_eq(conc_chan_new(&c, 4, 0), CONC_INVALID);
	cr_assert_eq(conc_chan_new(&c, CONC_CHAN_MAX_CAP + 1, 8), CONC_INVALID);
	cr_assert_eq(conc_chan_new(&c, 4, SIZE_MAX), CONC_OVERFLOW);
	cr_assert_eq(conc_chan_new(&c, CONC_CHAN_MAX_CAP, SIZE_MAX / 1024), CONC_OVERFLOW);
	chan_alloc_fail = 1;
	cr_assert_eq(conc_chan_new(&c, 4, 8), CONC_NOMEM);
	chan_alloc_fail = 0;
	cr_assert_eq(c, sentinel, "*out is set only on success");

	cr_assert_eq(conc_chan_new(&c, 5, 24), CONC_OK);
	cr_assert_neq(c, sentinel);
	cr_assert_eq((uintptr_t)c % CONC_CACHELINE, 0u, "cache-line aligned");
	cr_assert_eq(conc_chan_cap(c), 5u);
	cr_assert_eq(conc_chan_elem_size(c), 24u);
	free_chan(c);
}

Test(chan, layout_keeps_indices_on_separate_cache_lines, .timeout = 120)
{
	size_t t = offsetof(struct conc_chan, tail), h = offsetof(struct conc_chan, head);
	size_t d = t > h ? t - h : h - t;
	cr_assert_geq(d, (size_t)CONC_CACHELINE);
	cr_assert_eq(_Alignof(struct conc_chan), (size_t)CONC_CACHELINE);
}

Test(chan, destroy_and_free_check_ownership, .timeout = 120)
{
	cr_assert_eq(conc_chan_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_free(NULL), CONC_OK, "like free(NULL)");

	struct conc_chan *a = new_chan(4, 8);
	cr_assert_eq(conc_chan_destroy(a), CONC_INVALID, "allocated: use conc_chan_free");
	put(a, 1); /* still usable */
	expect(a, 1);
	free_chan(a);

	/* The struct on the heap, the ring on the caller's buffer: still not
	 * conc_chan_new's.  (On the stack, GCC warns about the free() in
	 * conc_chan_free that this call never reaches.) */
	static _Alignas(64) unsigned char buf[CONC_CHAN_BUF_SIZE(4, 8)];
	struct conc_chan *c = aligned_alloc(CONC_CACHELINE, sizeof *c);
	cr_assert_not_null(c);
	cr_assert_eq(conc_chan_init(c, 4, 8, buf, sizeof buf), CONC_OK);
	cr_assert_eq(conc_chan_free(c), CONC_INVALID, "caller memory: use conc_chan_destroy");
	put(c, 2);
	expect(c, 2);
	cr_assert_eq(conc_chan_destroy(c), CONC_OK);
	cr_assert_eq(conc_chan_destroy(c), CONC_INVALID, "destroyed already");
	cr_assert_eq(conc_chan_free(c), CONC_INVALID);
	free(c);
}

Test(chan, calls_after_destroy_are_invalid, .timeout = 120)
{
	static _Alignas(64) unsigned char buf[CONC_CHAN_BUF_SIZE(4, 8)];
	struct conc_chan c;
	cr_assert_eq(conc_chan_init(&c, 4, 8, buf, sizeof buf), CONC_OK);
	put(&c, 1);
	put(&c, 2);
	cr_assert_eq(conc_chan_destroy(&c), CONC_OK, "elements inside are discarded");

	uint64_t v[4] = {0};
	enum conc_status s = CONC_OK;
	cr_assert_eq(conc_chan_try_send(&c, v), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv(&c, v), CONC_INVALID);
	cr_assert_eq(conc_chan_send(&c, v), CONC_INVALID);
	cr_assert_eq(conc_chan_recv(&c, v), CONC_INVALID);
	cr_assert_eq(conc_chan_send_until(&c, v, conc_deadline_forever(), NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_until(&c, v, conc_deadline_forever(), NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send_n(&c, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv_n(&c, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_send_n(&c, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_n(&c, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_send_n_until(&c, v, 2, conc_deadline_forever(), NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_n_until(&c, v, 2, conc_deadline_forever(), NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send_burst(&c, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_try_recv_burst(&c, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_send_burst(&c, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_recv_burst(&c, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_send_burst_until(&c, v, 2, conc_deadline_forever(), NULL, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_recv_burst_until(&c, v, 2, conc_deadline_forever(), NULL, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	cr_assert_eq(conc_chan_close(&c), CONC_INVALID);
	cr_assert_eq(conc_chan_len(&c), 0u);
	cr_assert_not(conc_chan_is_closed(&c));
	cr_assert_eq(conc_chan_destroy(&c), CONC_INVALID);
}

Test(chan, null_arguments_are_invalid, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	uint64_t v[4] = {0};
	enum conc_status s = CONC_OK;
	struct conc_deadline f = conc_deadline_forever();

	cr_assert_eq(conc_chan_try_send(NULL, v), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send(c, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv(NULL, v), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv(c, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_send(NULL, v), CONC_INVALID);
	cr_assert_eq(conc_chan_send(c, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_recv(NULL, v), CONC_INVALID);
	cr_assert_eq(conc_chan_recv(c, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_send_until(NULL, v, f, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_send_until(c, NULL, f, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_until(NULL, v, f, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_until(c, NULL, f, NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send_n(NULL, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send_n(c, NULL, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv_n(NULL, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv_n(c, NULL, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_send_n(NULL, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_send_n(c, NULL, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_n(NULL, v, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_n(c, NULL, 2), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send_burst(NULL, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_try_recv_burst(c, NULL, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_send_burst(c, NULL, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	s = CONC_OK;
	cr_assert_eq(conc_chan_recv_burst(NULL, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_INVALID);
	cr_assert_eq(conc_chan_close(NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_len(NULL), 0u);
	cr_assert_eq(conc_chan_cap(NULL), 0u);
	cr_assert_eq(conc_chan_elem_size(NULL), 0u);
	cr_assert_not(conc_chan_is_closed(NULL));
	/* None of that touched the channel. */
	cr_assert_eq(conc_chan_len(c), 0u);
	cr_assert_not(conc_chan_is_closed(c));
	free_chan(c);
}

Test(chan, destroy_while_a_thread_is_blocked_is_busy, .timeout = 120)
{
	/* A receiver blocked on a channel made by init. */
	static _Alignas(64) unsigned char buf[CONC_CHAN_BUF_SIZE(1, 8)];
	struct conc_chan c;
	cr_assert_eq(conc_chan_init(&c, 1, 8, buf, sizeof buf), CONC_OK);
	struct op r;
	op_start(&r, &c, OP_RECV, 1, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c.recvq, 1);
	cr_assert_eq(conc_chan_destroy(&c), CONC_BUSY);
	put(&c, 41); /* BUSY changed nothing: the channel still works */
	op_join(&r);
	cr_assert_eq(r.result, CONC_OK);
	cr_assert_eq(r.buf[0], 41);
	cr_assert_eq(conc_chan_destroy(&c), CONC_OK);

	/* A sender blocked on a channel made by new. */
	struct conc_chan *a = new_chan(1, 8);
	put(a, 1);
	struct op s;
	op_start(&s, a, OP_SEND, 1, conc_deadline_forever(), NULL, 2);
	conc_test_wait_parked(&a->sendq, 1);
	cr_assert_eq(conc_chan_free(a), CONC_BUSY);
	expect(a, 1);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);
	expect(a, 2);
	free_chan(a);
}

/* --------------------------------------------------------------- capacity */

/* Fill to exactly cap, check FULL and len, drain in order, check EMPTY;
 * several laps, with the start moved around the ring between them. */
static void check_capacity(size_t cap)
{
	size_t bytes = conc_chan_buf_size(cap, sizeof(uint64_t));
	cr_assert_eq(bytes, cap * 16);
	void *buf = malloc(bytes); /* 8-byte alignment is all init needs */
	cr_assert_not_null(buf);
	struct conc_chan c;
	cr_assert_eq(conc_chan_init(&c, cap, sizeof(uint64_t), buf, bytes), CONC_OK);
	cr_assert_eq(conc_chan_cap(&c), cap);
	uint64_t next_in = 1, next_out = 1;
	for (int lap = 0; lap < 4; lap++) {
		for (size_t i = 0; i < cap; i++) {
			put(&c, next_in++);
			cr_assert_eq(conc_chan_len(&c), i + 1, "cap %zu lap %d", cap, lap);
		}
		uint64_t extra = 0xdead;
		cr_assert_eq(conc_chan_try_send(&c, &extra), CONC_FULL, "cap %zu lap %d", cap, lap);
		cr_assert_eq(conc_chan_len(&c), cap);
		for (size_t i = 0; i < cap; i++) {
			expect(&c, next_out++);
			cr_assert_eq(conc_chan_len(&c), cap - i - 1);
		}
		expect_empty(&c);
		/* Move the ring's start by a different amount each lap. */
		size_t shift = (cap / 2 + 1 + (size_t)lap) % cap;
		for (size_t i = 0; i < shift; i++)
			put(&c, next_in++);
		for (size_t i = 0; i < shift; i++)
			expect(&c, next_out++);
	}
	cr_assert_eq(conc_chan_destroy(&c), CONC_OK);
	free(buf);
}

Test(chan, capacity_1, .timeout = 120) { check_capacity(1); }
Test(chan, capacity_2, .timeout = 120) { check_capacity(2); }
Test(chan, capacity_3, .timeout = 120) { check_capacity(3); }
Test(chan, capacity_1000, .timeout = 120) { check_capacity(1000); }
Test(chan, capacity_1024, .timeout = 120) { check_capacity(1024); }

/* Element k of size es: a pattern that differs between elements and bytes. */
static void fill(unsigned char *p, size_t es, size_t k)
{
	for (size_t b = 0; b < es; b++)
		p[b] = (unsigned char)(k * 151 + b * 7 + (b >> 8) * 13 + es);
}

static void check_elem_size(size_t es)
{
	const size_t cap = 4, guard = 16;
	struct conc_chan *c = new_chan(cap, es);
	cr_assert_eq(conc_chan_elem_size(c), es);
	unsigned char *in = malloc(es), *want = malloc(es), *out = malloc(es + guard);
	cr_assert(in && want && out);
	size_t sent = 0, got = 0;
	for (int lap = 0; lap < 3; lap++) {
		for (size_t j = 0; j < cap; j++) {
			fill(in, es, sent++);
			cr_assert_eq(conc_chan_try_send(c, in), CONC_OK);
		}
		memset(in, 0, es); /* the channel holds copies */
		cr_assert_eq(conc_chan_try_send(c, in), CONC_FULL);
		for (size_t j = 0; j < cap; j++) {
			memset(out, 0xee, es + guard);
			cr_assert_eq(conc_chan_try_recv(c, out), CONC_OK);
			fill(want, es, got++);
			cr_assert_arr_eq(out, want, es, "esize %zu: element %zu corrupted", es, got - 1);
			for (size_t b = es; b < es + guard; b++)
				cr_assert_eq(out[b], 0xee, "esize %zu: receive wrote past the element", es);
		}
		cr_assert_eq(conc_chan_try_recv(c, out), CONC_EMPTY);
	}
	free(in);
	free(want);
	free(out);
	free_chan(c);
}

Test(chan, element_size_1, .timeout = 120) { check_elem_size(1); }
Test(chan, element_size_8, .timeout = 120) { check_elem_size(8); }
Test(chan, element_size_24, .timeout = 120) { check_elem_size(24); }
Test(chan, element_size_4096, .timeout = 120) { check_elem_size(4096); }
Test(chan, element_sizes_not_multiple_of_8, .timeout = 120)
{
	check_elem_size(3);
	check_elem_size(13);
	check_elem_size(4097);
}

/* -------------------------------------------------------------------- close */

Test(chan, close_with_items_drains_then_reports_closed, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	put(c, 1);
	put(c, 2);
	put(c, 3);
	cr_assert_not(conc_chan_is_closed(c));
	cr_assert_eq(conc_chan_close(c), CONC_OK);
	cr_assert(conc_chan_is_closed(c));
	cr_assert_eq(conc_chan_close(c), CONC_CLOSED, "second close");
	cr_assert_eq(conc_chan_len(c), 3u);

	uint64_t v[4] = {9, 9, 9, 9};
	enum conc_status s = CONC_OK;
	cr_assert_eq(conc_chan_try_send(c, v), CONC_CLOSED);
	cr_assert_eq(conc_chan_send(c, v), CONC_CLOSED);
	cr_assert_eq(conc_chan_send_until(c, v, conc_deadline_poll(), NULL), CONC_CLOSED);
	cr_assert_eq(conc_chan_try_send_n(c, v, 1), CONC_CLOSED);
	cr_assert_eq(conc_chan_send_n(c, v, 1), CONC_CLOSED);
	cr_assert_eq(conc_chan_try_send_burst(c, v, 1, &s), 0u);
	cr_assert_eq(s, CONC_CLOSED);
	s = CONC_OK;
	cr_assert_eq(conc_chan_send_burst(c, v, 2, &s), 0u);
	cr_assert_eq(s, CONC_CLOSED);
	cr_assert_eq(conc_chan_len(c), 3u, "no failed send got in");

	cr_assert_eq(conc_chan_recv(c, v), CONC_OK);
	cr_assert_eq(v[0], 1);
	cr_assert_eq(conc_chan_recv_until(c, v, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(v[0], 2);
	expect(c, 3);
	cr_assert_eq(conc_chan_try_recv(c, v), CONC_CLOSED);
	cr_assert_eq(conc_chan_recv(c, v), CONC_CLOSED, "does not block once drained");
	cr_assert_eq(conc_chan_recv_until(c, v, conc_deadline_forever(), NULL), CONC_CLOSED);
	cr_assert_eq(conc_chan_recv_n(c, v, 1), CONC_CLOSED);
	cr_assert_eq(conc_chan_try_recv_n(c, v, 1), CONC_CLOSED);
	s = CONC_OK;
	cr_assert_eq(conc_chan_recv_burst(c, v, 4, &s), 0u);
	cr_assert_eq(s, CONC_CLOSED);
	s = CONC_OK;
	cr_assert_eq(conc_chan_try_recv_burst(c, v, 4, &s), 0u);
	cr_assert_eq(s, CONC_CLOSED);
	cr_assert(conc_chan_is_closed(c));
	cr_assert_eq(conc_chan_close(c), CONC_CLOSED);
	free_chan(c);
}

Test(chan, close_of_an_empty_channel, .timeout = 120)
{
	struct conc_chan *c = new_chan(1, 8);
	cr_assert_eq(conc_chan_close(c), CONC_OK);
	uint64_t v = 5;
	cr_assert_eq(conc_chan_try_recv(c, &v), CONC_CLOSED);
	cr_assert_eq(conc_chan_recv(c, &v), CONC_CLOSED);
	cr_assert_eq(conc_chan_try_send(c, &v), CONC_CLOSED);
	cr_assert_eq(conc_chan_len(c), 0u);
	free_chan(c);
}

Test(chan, closed_recv_n_leaves_a_short_remainder, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	put(c, 1);
	put(c, 2);
	put(c, 3);
	cr_assert_eq(conc_chan_close(c), CONC_OK);
	uint64_t v[4] = {0};
	cr_assert_eq(conc_chan_try_recv_n(c, v, 4), CONC_CLOSED, "fewer than n left");
	cr_assert_eq(conc_chan_recv_n(c, v, 4), CONC_CLOSED);
	cr_assert_eq(conc_chan_len(c), 3u, "and they are left");
	cr_assert_eq(conc_chan_recv_n(c, v, 2), CONC_OK);
	cr_assert_eq(v[0], 1);
	cr_assert_eq(v[1], 2);
	enum conc_status s = CONC_INVALID;
	cr_assert_eq(conc_chan_recv_burst(c, v, 4, &s), 1u);
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(v[0], 3);
	cr_assert_eq(conc_chan_try_recv_n(c, v, 1), CONC_CLOSED);
	free_chan(c);
}

/* ---------------------------------------------------------------- deadlines */

Test(chan, past_deadline_on_full_or_empty_times_out, .timeout = 120)
{
	struct conc_deadline past[] = {conc_deadline_poll(), conc_deadline_at_ns(conc_now_ns() - 1),
				       conc_deadline_at_ns(0), conc_deadline_in_ms(-5)};
	struct conc_chan *c = new_chan(2, 8);
	uint64_t v[2] = {100, 101};
	enum conc_status s;
	for (size_t i = 0; i < sizeof past / sizeof past[0]; i++) {
		struct conc_deadline d = past[i];
		cr_assert_eq(conc_chan_recv_until(c, v, d, NULL), CONC_TIMEDOUT, "deadline %zu", i);
		cr_assert_eq(conc_chan_recv_n_until(c, v, 1, d, NULL), CONC_TIMEDOUT);
		s = CONC_OK;
		cr_assert_eq(conc_chan_recv_burst_until(c, v, 2, d, NULL, &s), 0u);
		cr_assert_eq(s, CONC_TIMEDOUT);
	}
	put(c, 1);
	put(c, 2);
	for (size_t i = 0; i < sizeof past / sizeof past[0]; i++) {
		struct conc_deadline d = past[i];
		v[0] = 100;
		cr_assert_eq(conc_chan_send_until(c, v, d, NULL), CONC_TIMEDOUT, "deadline %zu", i);
		cr_assert_eq(conc_chan_send_n_until(c, v, 2, d, NULL), CONC_TIMEDOUT);
		s = CONC_OK;
		cr_assert_eq(conc_chan_send_burst_until(c, v, 2, d, NULL, &s), 0u);
		cr_assert_eq(s, CONC_TIMEDOUT);
	}
	expect(c, 1);
	/* One free cell: an all-or-nothing send of two still times out. */
	cr_assert_eq(conc_chan_send_n_until(c, v, 2, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_chan_recv_n_until(c, v, 2, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_chan_len(c), 1u);
	expect(c, 2);
	expect_empty(c);
	free_chan(c);
}

Test(chan, past_deadline_still_succeeds_when_possible, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	struct conc_deadline d = conc_deadline_poll();
	uint64_t v[3] = {1, 2, 3};
	enum conc_status s = CONC_INVALID;
	cr_assert_eq(conc_chan_send_until(c, v, d, NULL), CONC_OK);
	cr_assert_eq(conc_chan_send_n_until(c, v + 1, 2, d, NULL), CONC_OK);
	v[0] = 4;
	cr_assert_eq(conc_chan_send_burst_until(c, v, 3, d, NULL, &s), 1u, "room for one");
	cr_assert_eq(s, CONC_OK);
	uint64_t o[4] = {0};
	cr_assert_eq(conc_chan_recv_until(c, o, conc_deadline_at_ns(conc_now_ns() - 1), NULL), CONC_OK);
	cr_assert_eq(o[0], 1);
	cr_assert_eq(conc_chan_recv_n_until(c, o, 2, d, NULL), CONC_OK);
	cr_assert_eq(o[0], 2);
	cr_assert_eq(o[1], 3);
	s = CONC_INVALID;
	cr_assert_eq(conc_chan_recv_burst_until(c, o, 4, d, NULL, &s), 1u);
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(o[0], 4);
	free_chan(c);
}

/* Each call blocks until its 20 ms deadline: at least that much passes. */
Test(chan, near_deadline_times_out, .timeout = 120)
{
	struct conc_chan *c = new_chan(2, 8);
	uint64_t v[2] = {7, 8};
	enum conc_status s;
	struct conc_deadline d;

	d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_chan_recv_until(c, v, d, NULL), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns, "recv_until returned before its deadline");
	d = conc_deadline_in_ms(20);
	s = CONC_OK;
	cr_assert_eq(conc_chan_recv_burst_until(c, v, 2, d, NULL, &s), 0u);
	cr_assert_eq(s, CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);

	put(c, 1);
	d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_chan_recv_n_until(c, v, 2, d, NULL), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_eq(conc_chan_len(c), 1u, "the element is still there");
	d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_chan_send_n_until(c, v, 2, d, NULL), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_eq(conc_chan_len(c), 1u, "nothing was sent");

	put(c, 2);
	int64_t t0 = conc_now_ns();
	d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_chan_send_until(c, v, d, NULL), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_geq(conc_now_ns() - t0, 20 * MS);
	d = conc_deadline_in_ms(20);
	s = CONC_OK;
	cr_assert_eq(conc_chan_send_burst_until(c, v, 2, d, NULL, &s), 0u);
	cr_assert_eq(s, CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);

	expect(c, 1);
	expect(c, 2);
	expect_empty(c);
	free_chan(c);
}

Test(chan, far_deadline_succeeds_when_another_thread_provides, .timeout = 120)
{
	struct conc_chan *c = new_chan(1, 8);
	struct op r;
	op_start(&r, c, OP_RECV, 1, conc_deadline_in_ms(600000), NULL, 0);
	conc_test_wait_parked(&c->recvq, 1);
	uint64_t v = 31;
	cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
	op_join(&r);
	cr_assert_eq(r.result, CONC_OK);
	cr_assert_eq(r.buf[0], 31);

	put(c, 32);
	struct op s;
	op_start(&s, c, OP_SEND, 1, conc_deadline_in_ms(600000), NULL, 33);
	conc_test_wait_parked(&c->sendq, 1);
	cr_assert_eq(conc_chan_recv(c, &v), CONC_OK);
	cr_assert_eq(v, 32);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);
	expect(c, 33);
	free_chan(c);
}

/* ------------------------------------------------------------- cancellation */

Test(chan, cancel_wakes_a_blocked_sender, .timeout = 120)
{
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct conc_chan *c = new_chan(2, 8);
	put(c, 1);
	put(c, 2);
	struct op s;
	op_start(&s, c, OP_SEND, 1, conc_deadline_forever(), &ctx, 3);
	conc_test_wait_parked(&c->sendq, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	op_join(&s);
	cr_assert_eq(s.result, CONC_CANCELED);
	cr_assert_eq(conc_chan_len(c), 2u);
	expect(c, 1);
	expect(c, 2);
	expect_empty(c); /* the canceled element is not in the channel */
	free_chan(c);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK, "the sender unregistered from the context");
}

Test(chan, cancel_wakes_a_blocked_receiver, .timeout = 120)
{
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct conc_chan *c = new_chan(2, 8);
	struct op r;
	op_start(&r, c, OP_RECV, 1, conc_deadline_forever(), &ctx, 0);
	conc_test_wait_parked(&c->recvq, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 12), CONC_OK);
	op_join(&r);
	cr_assert_eq(r.result, CONC_CANCELED);
	put(c, 5); /* the canceled receiver does not take it */
	expect(c, 5);
	free_chan(c);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
}

Test(chan, cancel_wakes_blocked_bulk_calls, .timeout = 120)
{
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct conc_chan *full = new_chan(4, 8), *part = new_chan(4, 8);
	for (uint64_t i = 0; i < 3; i++)
		put(full, i);
	put(part, 50);
	struct op sn, rn, sb, rb;
	op_start(&sn, full, OP_SEND_N, 2, conc_deadline_forever(), &ctx, 100); /* needs 2, 1 free */
	op_start(&rn, part, OP_RECV_N, 3, conc_deadline_forever(), &ctx, 0);   /* needs 3, 1 there */
	conc_test_wait_parked(&full->sendq, 1);
	conc_test_wait_parked(&part->recvq, 1);
	put(full, 3);
	struct conc_chan *empty = new_chan(4, 8);
	op_start(&sb, full, OP_SEND_BURST, 2, conc_deadline_forever(), &ctx, 200);
	op_start(&rb, empty, OP_RECV_BURST, 4, conc_deadline_forever(), &ctx, 0);
	conc_test_wait_parked(&full->sendq, 2);
	conc_test_wait_parked(&empty->recvq, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	op_join(&sn);
	op_join(&rn);
	op_join(&sb);
	op_join(&rb);
	cr_assert_eq(sn.result, CONC_CANCELED);
	cr_assert_eq(rn.result, CONC_CANCELED);
	cr_assert_eq(sb.result, CONC_CANCELED);
	cr_assert_eq(sb.done, 0u);
	cr_assert_eq(rb.result, CONC_CANCELED);
	cr_assert_eq(rb.done, 0u);
	for (uint64_t i = 0; i < 4; i++)
		expect(full, i);
	expect_empty(full);
	expect(part, 50);
	expect_empty(part);
	free_chan(full);
	free_chan(part);
	free_chan(empty);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
}

Test(chan, context_deadline_bounds_a_blocked_call, .timeout = 120)
{
	struct conc_ctx root, ctx;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_ctx_init(&ctx, &root, d), CONC_OK);
	struct conc_chan *c = new_chan(1, 8);
	uint64_t v = 0;
	cr_assert_eq(conc_chan_recv_until(c, &v, conc_deadline_forever(), &ctx), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_eq(conc_ctx_err(&ctx), CONC_TIMEDOUT);
	put(c, 1);
	cr_assert_eq(conc_chan_send_until(c, &v, conc_deadline_forever(), &ctx), CONC_TIMEDOUT);
	expect(c, 1);
	expect_empty(c);
	free_chan(c);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&root), CONC_OK);
}

Test(chan, done_context_fails_the_call_before_it_tries, .timeout = 120)
{
	struct conc_ctx canceled, expired;
	cr_assert_eq(conc_ctx_init_root(&canceled), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&canceled, 0), CONC_OK);
	cr_assert_eq(conc_ctx_init(&expired, NULL, conc_deadline_poll()), CONC_OK);
	struct conc_ctx *ctxs[2] = {&canceled, &expired};
	const enum conc_status want[2] = {CONC_CANCELED, CONC_TIMEDOUT};

	struct conc_chan *c = new_chan(4, 8);
	put(c, 1);
	put(c, 2);
	uint64_t v[2] = {90, 91};
	enum conc_status s;
	for (int i = 0; i < 2; i++) {
		struct conc_ctx *x = ctxs[i];
		struct conc_deadline f = conc_deadline_forever();
		cr_assert_eq(conc_chan_send_until(c, v, f, x), want[i], "room, but the context is done");
		cr_assert_eq(conc_chan_recv_until(c, v, f, x), want[i], "items, but the context is done");
		cr_assert_eq(conc_chan_send_n_until(c, v, 2, f, x), want[i]);
		cr_assert_eq(conc_chan_recv_n_until(c, v, 2, f, x), want[i]);
		s = CONC_OK;
		cr_assert_eq(conc_chan_send_burst_until(c, v, 2, f, x, &s), 0u);
		cr_assert_eq(s, want[i]);
		s = CONC_OK;
		cr_assert_eq(conc_chan_recv_burst_until(c, v, 2, f, x, &s), 0u);
		cr_assert_eq(s, want[i]);
	}
	cr_assert_eq(conc_chan_len(c), 2u, "nothing moved");
	cr_assert_eq(conc_chan_close(c), CONC_OK);
	cr_assert_eq(conc_chan_send_until(c, v, conc_deadline_forever(), &canceled), CONC_CANCELED,
		     "the context wins over closed");
	expect(c, 1);
	expect(c, 2);
	free_chan(c);
	cr_assert_eq(conc_ctx_destroy(&canceled), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&expired), CONC_OK);
}

/* ------------------------------------------------------- close wakes all */

#define WAKE_ALL 6

Test(chan, close_wakes_all_blocked_receivers, .timeout = 120)
{
	struct conc_chan *c = new_chan(2, 8);
	struct op r[WAKE_ALL];
	for (int i = 0; i < WAKE_ALL; i++)
		op_start(&r[i], c, OP_RECV, 1, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c->recvq, WAKE_ALL);
	cr_assert_eq(conc_chan_close(c), CONC_OK);
	for (int i = 0; i < WAKE_ALL; i++) {
		op_join(&r[i]);
		cr_assert_eq(r[i].result, CONC_CLOSED, "receiver %d: %s", i, conc_strerror(r[i].result));
	}
	free_chan(c);
}

Test(chan, close_wakes_all_blocked_senders, .timeout = 120)
{
	struct conc_chan *c = new_chan(3, 8);
	put(c, 1);
	put(c, 2);
	put(c, 3);
	struct op s[WAKE_ALL];
	for (int i = 0; i < WAKE_ALL; i++)
		op_start(&s[i], c, OP_SEND, 1, conc_deadline_forever(), NULL, 100 + (uint64_t)i);
	conc_test_wait_parked(&c->sendq, WAKE_ALL);
	cr_assert_eq(conc_chan_close(c), CONC_OK);
	for (int i = 0; i < WAKE_ALL; i++) {
		op_join(&s[i]);
		cr_assert_eq(s[i].result, CONC_CLOSED, "sender %d: %s", i, conc_strerror(s[i].result));
	}
	cr_assert_eq(conc_chan_len(c), 3u);
	uint64_t v = 9;
	cr_assert_eq(conc_chan_try_send(c, &v), CONC_CLOSED, "full and closed: closed wins");
	cr_assert_eq(conc_chan_try_send_n(c, &v, 1), CONC_CLOSED);
	expect(c, 1);
	expect(c, 2);
	expect(c, 3);
	cr_assert_eq(conc_chan_try_recv(c, &v), CONC_CLOSED);
	free_chan(c);
}

Test(chan, close_wakes_blocked_bulk_waiters, .timeout = 120)
{
	struct conc_chan *full = new_chan(3, 8), *one = new_chan(3, 8);
	put(full, 1);
	put(full, 2);
	put(full, 3);
	put(one, 9);
	struct op s[4], r[3];
	op_start(&s[0], full, OP_SEND_N, 2, conc_deadline_forever(), NULL, 10);
	op_start(&s[1], full, OP_SEND_N, 3, conc_deadline_forever(), NULL, 20);
	op_start(&s[2], full, OP_SEND_BURST, 3, conc_deadline_forever(), NULL, 30);
	op_start(&s[3], full, OP_SEND, 1, conc_deadline_forever(), NULL, 40);
	op_start(&r[0], one, OP_RECV_N, 2, conc_deadline_forever(), NULL, 0);
	op_start(&r[1], one, OP_RECV_N, 3, conc_deadline_forever(), NULL, 0);
	op_start(&r[2], one, OP_RECV_N, 2, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&full->sendq, 4);
	conc_test_wait_parked(&one->recvq, 3);
	cr_assert_eq(conc_chan_close(full), CONC_OK);
	cr_assert_eq(conc_chan_close(one), CONC_OK);
	for (int i = 0; i < 4; i++) {
		op_join(&s[i]);
		cr_assert_eq(s[i].result, CONC_CLOSED, "sender %d: %s", i, conc_strerror(s[i].result));
	}
	cr_assert_eq(s[2].done, 0u);
	for (int i = 0; i < 3; i++) {
		op_join(&r[i]);
		cr_assert_eq(r[i].result, CONC_CLOSED, "receiver %d: %s", i, conc_strerror(r[i].result));
	}
	expect(full, 1);
	expect(full, 2);
	expect(full, 3);
	expect(one, 9);
	free_chan(full);
	free_chan(one);
}

/* --------------------------------------------------------------------- bulk */

Test(chan, send_n_is_all_or_nothing, .timeout = 120)
{
	struct conc_chan *c = new_chan(8, 8);
	uint64_t v[9];
	for (uint64_t i = 0; i < 9; i++)
		v[i] = i;
	cr_assert_eq(conc_chan_try_send_n(c, v, 0), CONC_OK, "n == 0 is a no-op");
	cr_assert_eq(conc_chan_send_n(c, v, 0), CONC_OK);
	cr_assert_eq(conc_chan_len(c), 0u);
	cr_assert_eq(conc_chan_try_send_n(c, v, 9), CONC_INVALID, "n > cap could never fit");
	cr_assert_eq(conc_chan_send_n(c, v, 9), CONC_INVALID);
	cr_assert_eq(conc_chan_send_n_until(c, v, 9, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_chan_try_send_n(c, v, 5), CONC_OK);
	cr_assert_eq(conc_chan_len(c), 5u);
	cr_assert_eq(conc_chan_try_send_n(c, v + 5, 4), CONC_FULL, "room for 3 of 4");
	cr_assert_eq(conc_chan_len(c), 5u, "nothing was sent");
	cr_assert_eq(conc_chan_try_send_n(c, v + 5, 3), CONC_OK);
	cr_assert_eq(conc_chan_try_send_n(c, v + 8, 1), CONC_FULL);
	for (uint64_t i = 0; i < 8; i++)
		expect(c, i);
	expect_empty(c);
	cr_assert_eq(conc_chan_send_n(c, v, 8), CONC_OK, "exactly cap");
	cr_assert_eq(conc_chan_len(c), 8u);
	free_chan(c);
}

Test(chan, recv_n_is_all_or_nothing, .timeout = 120)
{
	struct conc_chan *c = new_chan(8, 8);
	for (uint64_t i = 0; i < 8; i++)
		put(c, i);
	uint64_t o[9] = {0};
	cr_assert_eq(conc_chan_try_recv_n(c, o, 0), CONC_OK);
	cr_assert_eq(conc_chan_recv_n(c, o, 0), CONC_OK);
	cr_assert_eq(conc_chan_len(c), 8u);
	cr_assert_eq(conc_chan_try_recv_n(c, o, 9), CONC_INVALID);
	cr_assert_eq(conc_chan_recv_n(c, o, 9), CONC_INVALID);
	cr_assert_eq(conc_chan_try_recv_n(c, o, 3), CONC_OK);
	for (uint64_t i = 0; i < 3; i++)
		cr_assert_eq(o[i], i);
	memset(o, 0, sizeof o);
	cr_assert_eq(conc_chan_try_recv_n(c, o, 6), CONC_EMPTY, "5 there, 6 asked");
	cr_assert_eq(o[0], 0u, "nothing was written");
	cr_assert_eq(conc_chan_len(c), 5u, "nothing was taken");
	cr_assert_eq(conc_chan_recv_n(c, o, 5), CONC_OK);
	for (uint64_t i = 0; i < 5; i++)
		cr_assert_eq(o[i], 3 + i);
	expect_empty(c);
	free_chan(c);
}

Test(chan, bulk_wraps_around_the_ring_end, .timeout = 120)
{
	static const size_t caps[] = {1, 3, 5, 8};
	for (size_t ci = 0; ci < sizeof caps / sizeof caps[0]; ci++) {
		size_t cap = caps[ci];
		struct conc_chan *c = new_chan(cap, 8);
		uint64_t in = 0, out = 0, buf[9];
		for (int round = 0; round < 200; round++) {
			size_t room = cap - conc_chan_len(c);
			cr_assert_gt(room, 0u);
			size_t k = 1 + (size_t)(round * 7) % room;
			for (size_t i = 0; i < room + 1; i++)
				buf[i] = in + i;
			if (room < cap)
				cr_assert_eq(conc_chan_try_send_n(c, buf, room + 1), CONC_FULL, "cap %zu round %d", cap,
					     round);
			cr_assert_eq(conc_chan_try_send_n(c, buf, k), CONC_OK, "cap %zu round %d", cap, round);
			in += k;
			/* Take back a different amount, so the start keeps moving. */
			size_t m = conc_chan_len(c);
			size_t r = round % 2 ? m : 1 + (size_t)round % m;
			if (round % 3 == 0) {
				cr_assert_eq(conc_chan_try_recv_n(c, buf, r), CONC_OK);
			} else {
				enum conc_status s = CONC_INVALID;
				cr_assert_eq(conc_chan_try_recv_burst(c, buf, r, &s), r);
				cr_assert_eq(s, CONC_OK);
			}
			for (size_t i = 0; i < r; i++)
				cr_assert_eq(buf[i], out + i, "cap %zu round %d: order", cap, round);
			out += r;
			/* Single calls mixed in, to cross the end one at a time too. */
			put(c, in++);
			if (conc_chan_len(c) == cap) {
				uint64_t x = 0;
				cr_assert_eq(conc_chan_try_send_n(c, &x, 1), CONC_FULL);
			}
			expect(c, out++);
		}
		enum conc_status s = CONC_INVALID;
		size_t left = conc_chan_try_recv_burst(c, buf, 8, &s);
		cr_assert_eq(left, (size_t)(in - out));
		for (size_t i = 0; i < left; i++)
			cr_assert_eq(buf[i], out + i);
		expect_empty(c);
		free_chan(c);
	}
}

/* Bulk copies are contiguous in the caller's array but strided in the ring:
 * an element size that is not a multiple of 8 tells the two apart. */
Test(chan, bulk_with_odd_element_size, .timeout = 120)
{
	const size_t es = 13, cap = 5;
	struct conc_chan *c = new_chan(cap, es);
	unsigned char in[5 * 13], out[5 * 13 + 16], want[13];
	size_t sent = 0, got = 0;
	for (int round = 0; round < 40; round++) {
		size_t k = 1 + (size_t)round % 3;
		for (size_t i = 0; i < k; i++)
			fill(in + i * es, es, sent + i);
		if (round % 2) {
			cr_assert_eq(conc_chan_try_send_n(c, in, k), CONC_OK, "round %d", round);
		} else {
			enum conc_status s = CONC_INVALID;
			cr_assert_eq(conc_chan_try_send_burst(c, in, k, &s), k, "round %d", round);
		}
		sent += k;
		size_t r = conc_chan_len(c) > 2 ? conc_chan_len(c) - 1 : 1;
		memset(out, 0xee, sizeof out);
		if (round % 3) {
			cr_assert_eq(conc_chan_try_recv_n(c, out, r), CONC_OK, "round %d", round);
		} else {
			enum conc_status s = CONC_INVALID;
			cr_assert_eq(conc_chan_try_recv_burst(c, out, r, &s), r, "round %d", round);
		}
		for (size_t i = 0; i < r; i++) {
			fill(want, es, got++);
			cr_assert_arr_eq(out + i * es, want, es, "round %d: element %zu corrupted", round, got - 1);
		}
		for (size_t b = r * es; b < sizeof out; b++)
			cr_assert_eq(out[b], 0xee, "round %d: wrote past %zu elements", round, r);
	}
	cr_assert_eq(conc_chan_len(c), sent - got);
	free_chan(c);
}

Test(chan, try_bursts_count_and_status, .timeout = 120)
{
	struct conc_chan *c = new_chan(5, 8);
	uint64_t v[12], o[12];
	for (uint64_t i = 0; i < 12; i++)
		v[i] = 10 + i;
	enum conc_status s = CONC_INVALID;
	cr_assert_eq(conc_chan_try_send_burst(c, v, 3, &s), 3u);
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(conc_chan_try_send_burst(c, v + 3, 4, &s), 2u, "room for 2 of 4");
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(conc_chan_try_send_burst(c, v + 5, 1, &s), 0u);
	cr_assert_eq(s, CONC_FULL);
	cr_assert_eq(conc_chan_try_send_burst(c, v + 5, 1, NULL), 0u, "status may be NULL");

	cr_assert_eq(conc_chan_try_recv_burst(c, o, 2, &s), 2u);
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(o[0], 10);
	cr_assert_eq(o[1], 11);
	cr_assert_eq(conc_chan_try_recv_burst(c, o, 12, &s), 3u, "n > cap is fine: up to n");
	cr_assert_eq(s, CONC_OK);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(o[i], 12u + (unsigned)i);
	cr_assert_eq(conc_chan_try_recv_burst(c, o, 4, &s), 0u);
	cr_assert_eq(s, CONC_EMPTY);
	cr_assert_eq(conc_chan_try_recv_burst(c, o, 4, NULL), 0u);

	cr_assert_eq(conc_chan_try_send_burst(c, v, 12, &s), 5u, "n > cap: fills it");
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(conc_chan_recv_burst(c, o, 12, &s), 5u);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(o[i], 10u + (unsigned)i);
	cr_assert_eq(conc_chan_send_burst(c, v, 2, &s), 2u, "blocking form with room");
	cr_assert_eq(s, CONC_OK);
	cr_assert_eq(conc_chan_try_recv_burst(c, o, 12, &s), 2u);
	free_chan(c);
}

Test(chan, blocking_recv_burst_waits_for_one_then_takes_what_is_there, .timeout = 120)
{
	struct conc_chan *c = new_chan(8, 8);
	struct op r;
	op_start(&r, c, OP_RECV_BURST, 8, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c->recvq, 1);
	cr_assert_eq(atomic_load(&r.finished), 0);
	uint64_t v[3] = {5, 6, 7};
	cr_assert_eq(conc_chan_try_send_n(c, v, 3), CONC_OK);
	op_join(&r);
	cr_assert_eq(r.result, CONC_OK);
	cr_assert_eq(r.done, 3u, "took the 3 there were, did not wait for 8");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(r.buf[i], v[i]);
	expect_empty(c);
	free_chan(c);
}

Test(chan, blocking_send_burst_waits_for_room_then_sends_what_fits, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	for (uint64_t i = 0; i < 4; i++)
		put(c, i);
	struct op s;
	op_start(&s, c, OP_SEND_BURST, 6, conc_deadline_forever(), NULL, 100);
	conc_test_wait_parked(&c->sendq, 1);
	uint64_t o[2];
	cr_assert_eq(conc_chan_try_recv_n(c, o, 2), CONC_OK);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);
	cr_assert_eq(s.done, 2u, "room for 2 of 6");
	expect(c, 2);
	expect(c, 3);
	expect(c, 100);
	expect(c, 101);
	expect_empty(c);
	free_chan(c);
}

Test(chan, blocking_recv_n_waits_for_all_n, .timeout = 120)
{
	struct conc_chan *c = new_chan(8, 8);
	struct op r;
	op_start(&r, c, OP_RECV_N, 4, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c->recvq, 1);
	for (uint64_t i = 0; i < 3; i++) {
		put(c, 20 + i); /* wakes the greedy receiver, which goes back to sleep */
		conc_test_wait_parked(&c->recvq, 1);
		cr_assert_eq(atomic_load(&r.finished), 0, "recv_n(4) returned with %llu there",
			     (unsigned long long)i + 1);
		cr_assert_eq(conc_chan_len(c), i + 1, "and took nothing");
	}
	put(c, 23);
	op_join(&r);
	cr_assert_eq(r.result, CONC_OK);
	for (uint64_t i = 0; i < 4; i++)
		cr_assert_eq(r.buf[i], 20 + i);
	expect_empty(c);
	free_chan(c);
}

Test(chan, blocking_send_n_waits_for_room_for_all_n, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	for (uint64_t i = 0; i < 4; i++)
		put(c, i);
	struct op s;
	op_start(&s, c, OP_SEND_N, 3, conc_deadline_forever(), NULL, 50);
	conc_test_wait_parked(&c->sendq, 1);
	for (uint64_t i = 0; i < 2; i++) {
		expect(c, i);
		conc_test_wait_parked(&c->sendq, 1);
		cr_assert_eq(atomic_load(&s.finished), 0);
		cr_assert_eq(conc_chan_len(c), 3 - i);
	}
	expect(c, 2);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);
	expect(c, 3);
	expect(c, 50);
	expect(c, 51);
	expect(c, 52);
	expect_empty(c);
	free_chan(c);
}

/* A greedy recv_n at the head of the queue must not hold up a single
 * receiver behind it that could take the one element there. */
Test(chan, greedy_recv_n_does_not_starve_a_single_receiver, .timeout = 120)
{
	struct conc_chan *c = new_chan(8, 8);
	struct op g, r;
	op_start(&g, c, OP_RECV_N, 4, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c->recvq, 1);
	op_start(&r, c, OP_RECV, 1, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c->recvq, 2);
	put(c, 70);
	op_join(&r);
	cr_assert_eq(r.result, CONC_OK);
	cr_assert_eq(r.buf[0], 70);
	conc_test_wait_parked(&c->recvq, 1);
	cr_assert_eq(atomic_load(&g.finished), 0);
	uint64_t v[4] = {71, 72, 73, 74};
	cr_assert_eq(conc_chan_try_send_n(c, v, 4), CONC_OK);
	op_join(&g);
	cr_assert_eq(g.result, CONC_OK);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(g.buf[i], v[i]);
	free_chan(c);
}

#ifdef CONC_HAVE_FUTEX
/* Wait until some thread waits for the futex lock l, which the test holds
 * (the futex lock's word reads 2 once a second thread has come for it). */
static void wait_lock_contended(struct conc_lock *l)
{
	while (atomic_load(&l->word) != 2)
		conc_yield();
}

/*
 * A receiver queued on recvq whose re-check before parking already took an
 * element can still be popped by a sender's wake meant for the next queued
 * receiver; it must pass that wake on.  The test holds the queue locks to
 * stop R1 in the two windows that matter: before it queues (so e1 is sent
 * with nobody to wake) and after its re-check took e1 (blocked in its own
 * wake of sendq, where a stand-in waiter keeps the count non-zero).  Only the
 * futex lock shows a thread waiting for it; the fallback runs the same
 * conc__chan_block code.
 */
Test(chan, a_receiver_that_took_early_passes_a_stolen_wake_on, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	struct conc_waiter stand_in;
	conc_waiter_init(&stand_in, 0);
	conc_waitq_enqueue(&c->sendq, &stand_in);
	conc_lock_acquire(&c->sendq.lock);
	conc_lock_acquire(&c->recvq.lock);
	struct op r1, r2;
	op_start(&r1, c, OP_RECV, 1, conc_deadline_forever(), NULL, 0);
	wait_lock_contended(&c->recvq.lock); /* R1 spun out, queuing */
	put(c, 1);                           /* nobody queued: no wake */
	conc_lock_release(&c->recvq.lock);   /* R1 queues, its re-check takes 1 */
	wait_lock_contended(&c->sendq.lock); /* R1 waking sendq, still queued */
	op_start(&r2, c, OP_RECV, 1, conc_deadline_forever(), NULL, 0);
	conc_test_wait_parked(&c->recvq, 1); /* R2 queued behind R1, asleep */
	put(c, 2);                           /* its wake pops the head: R1 */
	conc_lock_release(&c->sendq.lock);
	op_join(&r1);
	cr_assert_eq(r1.result, CONC_OK);
	cr_assert_eq(r1.buf[0], 1);
	/* R1 has returned: R2 must have been woken by now, not left queued. */
	cr_assert_eq(atomic_load(&c->recvq.count), 0u, "R2 is still queued: the wake was swallowed");
	op_join(&r2);
	cr_assert_eq(r2.result, CONC_OK);
	cr_assert_eq(r2.buf[0], 2);
	(void)conc_waitq_remove(&c->sendq, &stand_in);
	free_chan(c);
}
#endif

Test(chan, greedy_send_n_does_not_starve_a_single_sender, .timeout = 120)
{
	struct conc_chan *c = new_chan(4, 8);
	for (uint64_t i = 0; i < 4; i++)
		put(c, i);
	struct op g, s;
	op_start(&g, c, OP_SEND_N, 3, conc_deadline_forever(), NULL, 100);
	conc_test_wait_parked(&c->sendq, 1);
	op_start(&s, c, OP_SEND, 1, conc_deadline_forever(), NULL, 200);
	conc_test_wait_parked(&c->sendq, 2);
	expect(c, 0);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);
	conc_test_wait_parked(&c->sendq, 1);
	cr_assert_eq(atomic_load(&g.finished), 0);
	uint64_t o[3];
	cr_assert_eq(conc_chan_try_recv_n(c, o, 3), CONC_OK);
	cr_assert_eq(o[0], 1);
	cr_assert_eq(o[2], 3);
	op_join(&g);
	cr_assert_eq(g.result, CONC_OK);
	expect(c, 200);
	expect(c, 100);
	expect(c, 101);
	expect(c, 102);
	expect_empty(c);
	free_chan(c);
}

/* -------------------------------------------------------------------- typed */

struct point {
	int32_t x;
	double y;
	char tag[6];
};

CONC_CHAN_TYPED(pointchan, struct point)

static struct point pt(int i)
{
	struct point p;
	memset(&p, 0, sizeof p);
	p.x = i;
	p.y = i * 0.5;
	p.tag[0] = 'p';
	p.tag[1] = (char)('a' + i % 26);
	p.tag[2] = (char)('0' + i % 10);
	return p;
}

static void expect_pt(struct point got, int i)
{
	struct point want = pt(i);
	cr_assert_eq(got.x, want.x);
	cr_assert_eq(got.y, want.y);
	cr_assert_str_eq(got.tag, want.tag);
}

Test(chan, typed_wrapper_every_function, .timeout = 120)
{
	static _Alignas(64) unsigned char buf[CONC_CHAN_BUF_SIZE(4, sizeof(struct point))];
	/* On the heap: see destroy_and_free_check_ownership. */
	struct pointchan *pc = aligned_alloc(CONC_CACHELINE, sizeof *pc);
	cr_assert_not_null(pc);
	cr_assert_eq(pointchan_init(pc, 4, buf, sizeof buf), CONC_OK);
	cr_assert_eq(pointchan_init(NULL, 4, buf, sizeof buf), CONC_INVALID);
	cr_assert_eq(pointchan_chan(pc), &pc->chan);
	cr_assert_null(pointchan_chan(NULL));
	cr_assert_eq(pointchan_cap(pc), 4u);
	cr_assert_eq(conc_chan_elem_size(pointchan_chan(pc)), sizeof(struct point));
	cr_assert_eq(pointchan_len(pc), 0u);

	struct point p;
	cr_assert_eq(pointchan_send(pc, pt(0)), CONC_OK);
	cr_assert_eq(pointchan_try_send(pc, pt(1)), CONC_OK);
	cr_assert_eq(pointchan_send_until(pc, pt(2), conc_deadline_poll(), NULL), CONC_OK);
	struct point three = pt(3);
	cr_assert_eq(pointchan_send_n(pc, &three, 1), CONC_OK);
	cr_assert_eq(pointchan_len(pc), 4u);
	cr_assert_eq(pointchan_try_send(pc, pt(9)), CONC_FULL);
	cr_assert_eq(pointchan_send_until(pc, pt(9), conc_deadline_poll(), NULL), CONC_TIMEDOUT);

	cr_assert_eq(pointchan_recv(pc, &p), CONC_OK);
	expect_pt(p, 0);
	cr_assert_eq(pointchan_try_recv(pc, &p), CONC_OK);
	expect_pt(p, 1);
	cr_assert_eq(pointchan_recv_until(pc, &p, conc_deadline_poll(), NULL), CONC_OK);
	expect_pt(p, 2);
	cr_assert_eq(pointchan_recv_n(pc, &p, 1), CONC_OK);
	expect_pt(p, 3);

	cr_assert_eq(pointchan_try_send(pc, pt(4)), CONC_OK);
	struct point many[4] = {pt(5), pt(6), pt(7), pt(8)};
	enum conc_status s = CONC_INVALID;
	cr_assert_eq(pointchan_send_burst(pc, many, 4, &s), 3u, "one cell holds pt(4)");
	cr_assert_eq(s, CONC_OK);
	struct point out[4];
	s = CONC_INVALID;
	cr_assert_eq(pointchan_recv_burst(pc, out, 4, &s), 4u);
	cr_assert_eq(s, CONC_OK);
	for (int i = 0; i < 4; i++)
		expect_pt(out[i], 4 + i);
	cr_assert_eq(pointchan_try_recv(pc, &p), CONC_EMPTY);
	cr_assert_eq(pointchan_recv_until(pc, &p, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(pointchan_send_n(pc, many, 4), CONC_OK);
	cr_assert_eq(pointchan_recv_n(pc, out, 4), CONC_OK);
	for (int i = 0; i < 4; i++)
		expect_pt(out[i], 5 + i);

	cr_assert_eq(pointchan_send(pc, pt(10)), CONC_OK);
	cr_assert_eq(pointchan_close(pc), CONC_OK);
	cr_assert_eq(pointchan_close(pc), CONC_CLOSED);
	cr_assert_eq(pointchan_send(pc, pt(11)), CONC_CLOSED);
	cr_assert_eq(pointchan_recv(pc, &p), CONC_OK);
	expect_pt(p, 10);
	cr_assert_eq(pointchan_recv(pc, &p), CONC_CLOSED);
	cr_assert_eq(pointchan_free(pc), CONC_INVALID, "not allocated");
	cr_assert_eq(pointchan_destroy(pc), CONC_OK);
	free(pc);

	struct pointchan *const sentinel = (struct pointchan *)(uintptr_t)0x1000;
	struct pointchan *pp = sentinel;
	cr_assert_eq(pointchan_new(NULL, 2), CONC_INVALID);
	cr_assert_eq(pp, sentinel);
	cr_assert_eq(pointchan_new(&pp, 2), CONC_OK);
	cr_assert_neq(pp, sentinel);
	cr_assert_eq(pointchan_cap(pp), 2u);
	cr_assert_eq(pointchan_try_send(pp, pt(20)), CONC_OK);
	cr_assert_eq(pointchan_try_recv(pp, &p), CONC_OK);
	expect_pt(p, 20);
	cr_assert_eq(pointchan_destroy(pp), CONC_INVALID, "allocated: use free");
	cr_assert_eq(pointchan_free(pp), CONC_OK);
	cr_assert_eq(pointchan_free(NULL), CONC_OK);
}

/* ------------------------------------------------------------ multi-thread */

#define PRODUCERS 4
#define CONSUMERS 4

enum mt_mode { MT_BLOCKING, MT_TRY, MT_BULK };

struct mt {
	struct conc_chan *ch;
	enum mt_mode mode;
	size_t per_producer;
	struct conc_test_ledger ledger;
	_Atomic(size_t) received;
	_Atomic(int) errors;
};

struct mt_worker {
	struct mt *mt;
	size_t id;
};

static void mt_error(struct mt *mt)
{
	atomic_fetch_add(&mt->errors, 1);
}

static void *mt_producer(void *arg)
{
	struct mt_worker *w = arg;
	struct mt *mt = w->mt;
	size_t i = 0, step = 0;
	uint64_t items[4];
	while (i < mt->per_producer) {
		enum conc_status s;
		if (mt->mode == MT_BLOCKING) {
			items[0] = CONC_TEST_ITEM(w->id, i);
			if (conc_chan_send(mt->ch, items) != CONC_OK)
				mt_error(mt);
			i++;
			continue;
		}
		if (mt->mode == MT_TRY) {
			items[0] = CONC_TEST_ITEM(w->id, i);
			while ((s = conc_chan_try_send(mt->ch, items)) == CONC_FULL)
				conc_yield();
			if (s != CONC_OK)
				mt_error(mt);
			i++;
			continue;
		}
		/* MT_BULK.  All-or-nothing calls ask for at most 2 on a
		 * channel of 4, and all-or-nothing receivers for at most 2,
		 * so the two sides can never wait for each other. */
		size_t kind = step++ % 3;
		size_t k = kind == 1 ? 1 + (step * 5 + w->id) % 4 : 1 + (step + w->id) % 2;
		if (k > mt->per_producer - i)
			k = mt->per_producer - i;
		for (size_t j = 0; j < k; j++)
			items[j] = CONC_TEST_ITEM(w->id, i + j);
		if (kind == 0) {
			if (conc_chan_send_n(mt->ch, items, k) != CONC_OK)
				mt_error(mt);
		} else if (kind == 1) {
			size_t sent = 0;
			while (sent < k) {
				sent += conc_chan_send_burst(mt->ch, items + sent, k - sent, &s);
				if (s != CONC_OK) {
					mt_error(mt);
					break;
				}
			}
		} else {
			while ((s = conc_chan_try_send_n(mt->ch, items, k)) == CONC_FULL)
				conc_yield();
			if (s != CONC_OK)
				mt_error(mt);
		}
		i += k;
	}
	return NULL;
}

static void mt_take(struct mt *mt, size_t *last, const uint64_t *v, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		if (conc_test_ledger_mark(&mt->ledger, v[j]) != 0 || !conc_test_fifo_ok(last, v[j]))
			mt_error(mt);
	}
	atomic_fetch_add(&mt->received, n);
}

static void *mt_consumer(void *arg)
{
	struct mt_worker *w = arg;
	struct mt *mt = w->mt;
	size_t last[PRODUCERS];
	for (size_t p = 0; p < PRODUCERS; p++)
		last[p] = SIZE_MAX;
	uint64_t buf[4];
	bool draining = false;
	enum conc_status s;
	/* Until the channel is closed and drained; any other failure is an error. */
	for (size_t step = 0;; step++) {
		size_t got = 0;
		if (mt->mode == MT_BLOCKING) {
			s = conc_chan_recv(mt->ch, buf);
			got = s == CONC_OK;
		} else if (mt->mode == MT_TRY) {
			s = conc_chan_try_recv(mt->ch, buf);
			got = s == CONC_OK;
			if (s == CONC_EMPTY) {
				conc_yield();
				continue;
			}
		} else if (draining || step % 2 == 0) {
			got = conc_chan_recv_burst(mt->ch, buf, 4, &s);
		} else {
			size_t k = 1 + step % 4 / 2;
			s = conc_chan_recv_n(mt->ch, buf, k);
			if (s == CONC_CLOSED) {
				draining = true; /* fewer than k may be left: take them by burst */
				continue;
			}
			got = s == CONC_OK ? k : 0;
		}
		if (s == CONC_CLOSED)
			break;
		if (s != CONC_OK) {
			mt_error(mt);
			break;
		}
		mt_take(mt, last, buf, got);
	}
	return NULL;
}

static void run_mpmc(enum mt_mode mode, size_t per_producer)
{
	struct mt mt;
	memset(&mt, 0, sizeof mt);
	mt.ch = new_chan(4, sizeof(uint64_t));
	mt.mode = mode;
	mt.per_producer = per_producer;
	conc_test_ledger_init(&mt.ledger, PRODUCERS, per_producer);
	atomic_init(&mt.received, 0);
	atomic_init(&mt.errors, 0);
	struct mt_worker prod[PRODUCERS], cons[CONSUMERS];
	pthread_t pt[PRODUCERS], ct[CONSUMERS];
	for (size_t i = 0; i < CONSUMERS; i++) {
		cons[i] = (struct mt_worker){&mt, i};
		start(&ct[i], mt_consumer, &cons[i]);
	}
	for (size_t i = 0; i < PRODUCERS; i++) {
		prod[i] = (struct mt_worker){&mt, i};
		start(&pt[i], mt_producer, &prod[i]);
	}
	for (size_t i = 0; i < PRODUCERS; i++)
		join(pt[i]);
	cr_assert_eq(conc_chan_close(mt.ch), CONC_OK);
	for (size_t i = 0; i < CONSUMERS; i++)
		join(ct[i]);
	cr_assert_eq(atomic_load(&mt.errors), 0, "duplicates, disorder or unexpected statuses");
	cr_assert_eq(conc_test_ledger_missing(&mt.ledger), 0u, "items lost");
	cr_assert_eq(atomic_load(&mt.received), PRODUCERS * per_producer);
	cr_assert_eq(conc_chan_len(mt.ch), 0u);
	conc_test_ledger_free(&mt.ledger);
	free_chan(mt.ch);
}

Test(chan, mpmc_blocking_exactly_once_in_order, .timeout = 120)
{
	run_mpmc(MT_BLOCKING, 5000 * CONC_STRESS_SCALE);
}

Test(chan, mpmc_try_with_yield_exactly_once_in_order, .timeout = 120)
{
	run_mpmc(MT_TRY, 5000 * CONC_STRESS_SCALE);
}

Test(chan, mpmc_bulk_and_burst_exactly_once_in_order, .timeout = 120)
{
	run_mpmc(MT_BULK, 5000 * CONC_STRESS_SCALE);
}

/* Short deadlines racing the other side: a send that returned CONC_OK is
 * received exactly once, one that timed out never. */
struct tr {
	struct conc_chan *ch;
	size_t per_producer;
	unsigned char *sent_ok; /* [producer * per_producer + seq], written by its producer */
	struct conc_test_ledger ledger;
	_Atomic(int) producers_done;
	_Atomic(int) errors;
	_Atomic(size_t) ok_sends, timeouts;
};

struct tr_worker {
	struct tr *tr;
	size_t id;
};

static struct conc_deadline tr_deadline(size_t i)
{
	switch (i % 5) {
	case 0: return conc_deadline_poll();
	case 1: return conc_deadline_in_ns(1000);
	case 2: return conc_deadline_in_ns(20000);
	case 3: return conc_deadline_in_ns(100000);
	default: return conc_deadline_in_ns(0);
	}
}

static void *tr_producer(void *arg)
{
	struct tr_worker *w = arg;
	struct tr *tr = w->tr;
	for (size_t i = 0; i < tr->per_producer; i++) {
		uint64_t v = CONC_TEST_ITEM(w->id, i);
		enum conc_status s = conc_chan_send_until(tr->ch, &v, tr_deadline(i + w->id), NULL);
		if (s == CONC_OK) {
			tr->sent_ok[w->id * tr->per_producer + i] = 1;
			atomic_fetch_add(&tr->ok_sends, 1);
		} else if (s == CONC_TIMEDOUT) {
			atomic_fetch_add(&tr->timeouts, 1);
		} else {
			atomic_fetch_add(&tr->errors, 1);
		}
	}
	return NULL;
}

static void *tr_consumer(void *arg)
{
	struct tr_worker *w = arg;
	struct tr *tr = w->tr;
	size_t last[PRODUCERS];
	for (size_t p = 0; p < PRODUCERS; p++)
		last[p] = SIZE_MAX;
	for (size_t i = 0;; i++) {
		uint64_t v;
		enum conc_status s = conc_chan_recv_until(tr->ch, &v, conc_deadline_in_ns(i % 3 ? 30000 : 0), NULL);
		if (s == CONC_OK) {
			if (conc_test_ledger_mark(&tr->ledger, v) != 0 || !conc_test_fifo_ok(last, v))
				atomic_fetch_add(&tr->errors, 1);
		} else if (s == CONC_TIMEDOUT) {
			/* Stop once the producers are done; what is left stays in
			 * the channel for the test to count. */
			if (atomic_load(&tr->producers_done))
				break;
		} else {
			atomic_fetch_add(&tr->errors, 1);
			break;
		}
	}
	return NULL;
}

Test(chan, timeouts_racing_sends_and_receives, .timeout = 120)
{
	struct tr tr;
	memset(&tr, 0, sizeof tr);
	tr.ch = new_chan(2, sizeof(uint64_t));
	tr.per_producer = 2000 * CONC_STRESS_SCALE;
	tr.sent_ok = calloc(PRODUCERS * tr.per_producer, 1);
	cr_assert_not_null(tr.sent_ok);
	conc_test_ledger_init(&tr.ledger, PRODUCERS, tr.per_producer);
	atomic_init(&tr.producers_done, 0);
	atomic_init(&tr.errors, 0);
	atomic_init(&tr.ok_sends, 0);
	atomic_init(&tr.timeouts, 0);
	struct tr_worker pw[PRODUCERS], cw[CONSUMERS];
	pthread_t pt[PRODUCERS], ct[CONSUMERS];
	for (size_t i = 0; i < CONSUMERS; i++) {
		cw[i] = (struct tr_worker){&tr, i};
		start(&ct[i], tr_consumer, &cw[i]);
	}
	for (size_t i = 0; i < PRODUCERS; i++) {
		pw[i] = (struct tr_worker){&tr, i};
		start(&pt[i], tr_producer, &pw[i]);
	}
	for (size_t i = 0; i < PRODUCERS; i++)
		join(pt[i]);
	atomic_store(&tr.producers_done, 1);
	for (size_t i = 0; i < CONSUMERS; i++)
		join(ct[i]);
	cr_assert_eq(conc_chan_close(tr.ch), CONC_OK);
	size_t last[PRODUCERS], left = 0;
	for (size_t p = 0; p < PRODUCERS; p++)
		last[p] = SIZE_MAX;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_chan_try_recv(tr.ch, &v)) == CONC_OK) {
		left++;
		cr_assert_eq(conc_test_ledger_mark(&tr.ledger, v), 0, "left-over item seen twice");
		cr_assert(conc_test_fifo_ok(last, v));
	}
	cr_assert_eq(s, CONC_CLOSED);
	cr_assert_leq(left, 2u);
	cr_assert_eq(atomic_load(&tr.errors), 0, "duplicates, disorder or unexpected statuses");
	cr_assert_eq(atomic_load(&tr.ok_sends) + atomic_load(&tr.timeouts), PRODUCERS * tr.per_producer);
	for (size_t k = 0; k < PRODUCERS * tr.per_producer; k++) {
		unsigned seen = atomic_load(&tr.ledger.seen[k]);
		cr_assert_eq(seen, tr.sent_ok[k], "producer %zu item %zu: sent %s, received %u times",
			     k / tr.per_producer, k % tr.per_producer, tr.sent_ok[k] ? "OK" : "TIMEDOUT", seen);
	}
	conc_test_ledger_free(&tr.ledger);
	free(tr.sent_ok);
	free_chan(tr.ch);
}

/* Close while senders and receivers are busy: every send that returned
 * CONC_OK is received exactly once; a send that returned CONC_CLOSED is not. */
struct cr {
	struct conc_chan *ch;
	size_t per_producer;
	size_t sent[PRODUCERS]; /* written by producer p */
	struct conc_test_ledger ledger;
	_Atomic(size_t) received;
	_Atomic(int) errors;
};

struct cr_worker {
	struct cr *cr;
	size_t id;
};

static void *cr_producer(void *arg)
{
	struct cr_worker *w = arg;
	struct cr *cr = w->cr;
	for (size_t i = 0; i < cr->per_producer; i++) {
		uint64_t v = CONC_TEST_ITEM(w->id, i);
		enum conc_status s = conc_chan_send(cr->ch, &v);
		if (s == CONC_CLOSED)
			break;
		if (s != CONC_OK)
			atomic_fetch_add(&cr->errors, 1);
		cr->sent[w->id] = i + 1;
	}
	return NULL;
}

static void *cr_consumer(void *arg)
{
	struct cr_worker *w = arg;
	struct cr *cr = w->cr;
	size_t last[PRODUCERS];
	for (size_t p = 0; p < PRODUCERS; p++)
		last[p] = SIZE_MAX;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_chan_recv(cr->ch, &v)) == CONC_OK) {
		if (conc_test_ledger_mark(&cr->ledger, v) != 0 || !conc_test_fifo_ok(last, v))
			atomic_fetch_add(&cr->errors, 1);
		atomic_fetch_add(&cr->received, 1);
	}
	if (s != CONC_CLOSED)
		atomic_fetch_add(&cr->errors, 1);
	return NULL;
}

Test(chan, close_racing_busy_senders_and_receivers, .timeout = 120)
{
	struct cr cr;
	memset(&cr, 0, sizeof cr);
	cr.ch = new_chan(3, sizeof(uint64_t));
	cr.per_producer = 100000 * CONC_STRESS_SCALE;
	conc_test_ledger_init(&cr.ledger, PRODUCERS, cr.per_producer);
	atomic_init(&cr.received, 0);
	atomic_init(&cr.errors, 0);
	struct cr_worker pw[PRODUCERS], cw[3];
	pthread_t pt[PRODUCERS], ct[3];
	for (size_t i = 0; i < 3; i++) {
		cw[i] = (struct cr_worker){&cr, i};
		start(&ct[i], cr_consumer, &cw[i]);
	}
	for (size_t i = 0; i < PRODUCERS; i++) {
		pw[i] = (struct cr_worker){&cr, i};
		start(&pt[i], cr_producer, &pw[i]);
	}
	/* Close mid-stream: once some items have gone through. */
	while (atomic_load(&cr.received) < 2000)
		conc_yield();
	cr_assert_eq(conc_chan_close(cr.ch), CONC_OK);
	for (size_t i = 0; i < PRODUCERS; i++)
		join(pt[i]);
	for (size_t i = 0; i < 3; i++)
		join(ct[i]);
	cr_assert_eq(atomic_load(&cr.errors), 0);
	size_t total = 0;
	for (size_t p = 0; p < PRODUCERS; p++) {
		total += cr.sent[p];
		for (size_t i = 0; i < cr.per_producer; i++) {
			unsigned seen = atomic_load(&cr.ledger.seen[p * cr.per_producer + i]);
			cr_assert_eq(seen, i < cr.sent[p] ? 1u : 0u, "producer %zu item %zu (sent %zu): received %u times",
				     p, i, cr.sent[p], seen);
		}
	}
	cr_assert_eq(atomic_load(&cr.received), total);
	conc_test_ledger_free(&cr.ledger);
	free_chan(cr.ch);
}
