/* SPDX-License-Identifier: MIT */
/*
 * Select and rendezvous (capacity 0) channels, checked against what Go's
 * channel tests demand (runtime/chan_test.go and the programs under
 * test/chan), re-done for conc's API: blocking and non-blocking behaviour
 * at every capacity, close, races between try calls and other threads,
 * self-select, fairness, duplicate channels, pipelines (prime sieve, double
 * select, multi-consumer), mixed stress, deadlines, cancellation, timers
 * and bad input.  Built twice: on the futex parker and, as
 * test-select-nofutex, on the portable pthread one.
 *
 * Waiting for another thread is never a sleep: the test waits until the
 * thread is parked in the channel's queue (conc_test_wait_chan_parked),
 * joins it, or meets it at a barrier.  Timing is asserted only as "returned
 * no earlier than its deadline".  Worker threads never assert (Criterion's
 * asserts belong to the test's own thread): they record what they saw, and
 * the test asserts after joining.
 */
#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

#ifndef CONC_STRESS_SCALE
#define CONC_STRESS_SCALE 1
#endif

#define SCALED(n) ((size_t)(n) * (size_t)CONC_STRESS_SCALE)

/* A receive buffer no send ever writes: "this case did not happen". */
#define UNSET UINT64_C(0x5eed5eed5eed5eed)

/* The capacities every basic test runs at: rendezvous, tiny, odd, larger. */
static const size_t caps[] = {0, 1, 2, 3, 10};
#define NCAPS (sizeof caps / sizeof caps[0])

/* ------------------------------------------------------------------ helpers */

/* Nobody is queued on either side of c (no registration left behind). */
static void assert_idle(struct conc_chan *c)
{
	cr_assert_eq(atomic_load(&c->sendq.count), 0u, "a sender registration was left on the channel");
	cr_assert_eq(atomic_load(&c->recvq.count), 0u, "a receiver registration was left on the channel");
}

/* Abort with a message well before Criterion's timeout if a thread hangs. */
static void watchdog(const char *name)
{
	conc_test_watchdog(name, 100);
}

/* |count / trials - num / den| <= 0.022, in integers. */
static bool share_near(size_t count, size_t trials, int64_t num, int64_t den)
{
	int64_t diff = (int64_t)count * den - (int64_t)trials * num;
	if (diff < 0)
		diff = -diff;
	return diff * 1000 <= 22 * (int64_t)trials * den;
}

/*
 * One blocking call on its own thread: a plain send or receive, or a select
 * over cases[0..n-1].  Send values and receive buffers live in buf[], one
 * per case (buf[0] for the plain calls), so the op owns everything the call
 * touches for as long as it runs.
 */
enum op_kind { OP_SEND, OP_RECV, OP_SELECT };

struct op {
	enum op_kind kind;
	struct conc_chan *ch;
	struct conc_select_case cases[4];
	size_t n;
	unsigned flags;
	struct conc_deadline d;
	struct conc_ctx *ctx;
	uint64_t buf[4];
	size_t chosen;
	enum conc_status result;
	_Atomic(int) finished;
	pthread_t thread;
};

static void *op_main(void *arg)
{
	struct op *op = arg;
	switch (op->kind) {
	case OP_SEND:
		op->result = conc_chan_send_until(op->ch, &op->buf[0], op->d, op->ctx);
		break;
	case OP_RECV:
		op->result = conc_chan_recv_until(op->ch, &op->buf[0], op->d, op->ctx);
		break;
	case OP_SELECT:
		op->result = conc_select_until(op->cases, op->n, op->flags, op->d, op->ctx, &op->chosen);
		break;
	}
	atomic_store(&op->finished, 1);
	return NULL;
}

/* An op not started yet: every buffer UNSET, no deadline, no context. */
static void op_init(struct op *op)
{
	memset(op, 0, sizeof *op);
	for (size_t i = 0; i < 4; i++)
		op->buf[i] = UNSET;
	op->d = conc_deadline_forever();
	op->chosen = SIZE_MAX;
	op->result = CONC_INVALID;
	atomic_init(&op->finished, 0);
}

static void op_send(struct op *op, struct conc_chan *c, uint64_t v, struct conc_deadline d, struct conc_ctx *ctx)
{
	op_init(op);
	op->kind = OP_SEND;
	op->ch = c;
	op->buf[0] = v;
	op->d = d;
	op->ctx = ctx;
	start(&op->thread, op_main, op);
}

static void op_recv(struct op *op, struct conc_chan *c, struct conc_deadline d, struct conc_ctx *ctx)
{
	op_init(op);
	op->kind = OP_RECV;
	op->ch = c;
	op->d = d;
	op->ctx = ctx;
	start(&op->thread, op_main, op);
}

/* Case i of op (after op_init): receive from c into buf[i], or send v. */
static void sel_recv(struct op *op, size_t i, struct conc_chan *c)
{
	op->cases[i] = conc_select_recv(c, &op->buf[i]);
}

static void sel_send(struct op *op, size_t i, struct conc_chan *c, uint64_t v)
{
	op->buf[i] = v;
	op->cases[i] = conc_select_send(c, &op->buf[i]);
}

/* Run the select over the cases set so far. */
static void op_select(struct op *op, size_t n, unsigned flags, struct conc_deadline d, struct conc_ctx *ctx)
{
	op->kind = OP_SELECT;
	op->n = n;
	op->flags = flags;
	op->d = d;
	op->ctx = ctx;
	start(&op->thread, op_main, op);
}

static void op_join(struct op *op)
{
	join(op->thread);
}

/* One blocking receive from c (send false) or send of v on c: a plain call
 * (form 0), or a select with it as case 1 beside a nil receive case 0
 * (form 1). */
static void op_either_form(struct op *op, struct conc_chan *c, bool send, uint64_t v, int form)
{
	if (form == 0 && send) {
		op_send(op, c, v, conc_deadline_forever(), NULL);
	} else if (form == 0) {
		op_recv(op, c, conc_deadline_forever(), NULL);
	} else {
		op_init(op);
		sel_recv(op, 0, NULL);
		if (send)
			sel_send(op, 1, c, v);
		else
			sel_recv(op, 1, c);
		op_select(op, 2, 0, conc_deadline_forever(), NULL);
	}
}

/* --------------------------------------------------------- every capacity */

/*
 * Go: TestChan, "receive from an empty channel blocks".  At every capacity a
 * plain receiver, then a select receiver (beside a nil case), stays parked
 * on the empty channel until a send, then returns exactly the value sent.
 */
Test(select, recv_on_empty_blocks_until_a_send, .timeout = 120)
{
	watchdog("recv_on_empty_blocks_until_a_send");
	for (size_t k = 0; k < NCAPS; k++) {
		struct conc_chan *c = new_chan(caps[k], 8);
		for (int form = 0; form < 2; form++) {
			struct op r;
			op_either_form(&r, c, false, 0, form);
			conc_test_wait_chan_parked(c, false, 1);
			cr_assert_eq(atomic_load(&r.finished), 0, "cap %zu: a receive on an empty channel returned",
				     caps[k]);
			uint64_t v = 100 + (uint64_t)form;
			cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
			op_join(&r);
			cr_assert_eq(r.result, CONC_OK, "cap %zu form %d: %s", caps[k], form, conc_strerror(r.result));
			cr_assert_eq(r.buf[form], v, "cap %zu form %d", caps[k], form);
			if (form == 1) {
				cr_assert_eq(r.chosen, 1u);
				cr_assert_eq(r.buf[0], UNSET, "the nil case's buffer was written");
			}
			cr_assert_eq(conc_chan_len(c), 0u);
			assert_idle(c);
		}
		free_chan(c);
	}
}

/*
 * Go: TestChan, "send to a full channel blocks" (capacity 0: every send
 * blocks until a receiver comes).  At every capacity, cap sends go through
 * without waiting (a past deadline), the next one cannot; a plain sender and
 * a select sender then stay parked until one receive makes room, and the
 * channel stays FIFO throughout.
 */
Test(select, send_blocks_exactly_when_full, .timeout = 120)
{
	watchdog("send_blocks_exactly_when_full");
	for (size_t k = 0; k < NCAPS; k++) {
		size_t cap = caps[k];
		struct conc_chan *c = new_chan(cap, 8);
		uint64_t fifo[16];
		size_t head = 0, tail = 0;
		for (uint64_t i = 0; i < cap; i++) {
			cr_assert_eq(conc_chan_send_until(c, &i, conc_deadline_poll(), NULL), CONC_OK,
				     "cap %zu: send %llu found no room", cap, (unsigned long long)i);
			fifo[tail++] = i;
		}
		cr_assert_eq(conc_chan_len(c), cap);
		cr_assert_eq(conc_chan_cap(c), cap);
		uint64_t v = 99;
		cr_assert_eq(conc_chan_send_until(c, &v, conc_deadline_poll(), NULL), CONC_TIMEDOUT,
			     "cap %zu: a send past capacity did not have to wait", cap);
		for (int form = 0; form < 2; form++) {
			struct op s;
			uint64_t sent = 1000 + (uint64_t)form;
			op_either_form(&s, c, true, sent, form);
			conc_test_wait_chan_parked(c, true, 1);
			cr_assert_eq(atomic_load(&s.finished), 0);
			cr_assert_eq(conc_chan_len(c), cap, "a blocked sender's element is in the channel");
			uint64_t got = UNSET;
			cr_assert_eq(conc_chan_recv(c, &got), CONC_OK);
			op_join(&s);
			cr_assert_eq(s.result, CONC_OK, "cap %zu form %d: %s", cap, form, conc_strerror(s.result));
			if (form == 1)
				cr_assert_eq(s.chosen, 1u);
			fifo[tail++] = sent;
			cr_assert_eq(got, fifo[head], "cap %zu: received %llu out of order", cap,
				     (unsigned long long)got);
			head++;
		}
		while (head < tail)
			expect(c, fifo[head++]);
		cr_assert_eq(conc_chan_len(c), 0u);
		assert_idle(c);
		free_chan(c);
	}
}

/*
 * Go: test/chan/nonblock.go and TestChan's non-blocking cases.  At every
 * capacity, try_send/try_recv and conc_select_try never wait: EMPTY /
 * WOULDBLOCK on an empty channel, FULL / WOULDBLOCK on a full one (a
 * rendezvous channel with nobody waiting is both), and they succeed when a
 * partner is parked on the other side.  A case that did not happen leaves
 * its buffer alone.
 */
Test(select, try_ops_never_block, .timeout = 120)
{
	watchdog("try_ops_never_block");
	for (size_t k = 0; k < NCAPS; k++) {
		size_t cap = caps[k];
		struct conc_chan *c = new_chan(cap, 8);
		uint64_t v = 7, out = UNSET;
		size_t i = 0;
		struct conc_select_case rk[1] = {conc_select_recv(c, &out)};
		struct conc_select_case sk[1] = {conc_select_send(c, &v)};

		cr_assert_eq(conc_chan_try_recv(c, &out), CONC_EMPTY, "cap %zu", cap);
		cr_assert_eq(conc_select_try(rk, 1, 0, &i), CONC_WOULDBLOCK, "cap %zu", cap);
		cr_assert_eq(i, 1u);
		cr_assert_eq(out, UNSET, "a receive that did not happen wrote its buffer");

		for (size_t j = 0; j < cap; j++) {
			v = j;
			if (j % 2)
				cr_assert_eq(conc_chan_try_send(c, &v), CONC_OK);
			else
				cr_assert_eq(conc_select_try(sk, 1, 0, &i), CONC_OK);
		}
		v = 77;
		cr_assert_eq(conc_chan_try_send(c, &v), CONC_FULL, "cap %zu", cap);
		i = 0;
		cr_assert_eq(conc_select_try(sk, 1, 0, &i), CONC_WOULDBLOCK, "cap %zu", cap);
		cr_assert_eq(i, 1u);
		cr_assert_eq(conc_chan_len(c), cap);
		for (size_t j = 0; j < cap; j++) {
			out = UNSET;
			if (j % 2)
				cr_assert_eq(conc_chan_try_recv(c, &out), CONC_OK);
			else
				cr_assert_eq(conc_select_try(rk, 1, 0, &i), CONC_OK);
			cr_assert_eq(out, j);
		}

		/* A receiver is parked: a non-blocking send goes through (on a
		 * rendezvous channel, only then). */
		for (int form = 0; form < 2; form++) {
			struct op r;
			op_recv(&r, c, conc_deadline_forever(), NULL);
			conc_test_wait_chan_parked(c, false, 1);
			v = 200 + (uint64_t)form;
			if (form == 0)
				cr_assert_eq(conc_chan_try_send(c, &v), CONC_OK, "cap %zu", cap);
			else
				cr_assert_eq(conc_select_try(sk, 1, 0, &i), CONC_OK, "cap %zu", cap);
			op_join(&r);
			cr_assert_eq(r.result, CONC_OK);
			cr_assert_eq(r.buf[0], v);
		}

		/* A sender is parked on a full channel: a non-blocking receive
		 * goes through and the sender completes. */
		for (int form = 0; form < 2; form++) {
			for (uint64_t j = 0; j < cap; j++)
				put(c, 300 + j);
			struct op s;
			op_send(&s, c, 400 + (uint64_t)form, conc_deadline_forever(), NULL);
			conc_test_wait_chan_parked(c, true, 1);
			out = UNSET;
			if (form == 0)
				cr_assert_eq(conc_chan_try_recv(c, &out), CONC_OK, "cap %zu", cap);
			else
				cr_assert_eq(conc_select_try(rk, 1, 0, &i), CONC_OK, "cap %zu", cap);
			cr_assert_eq(out, cap ? 300 : 400 + (uint64_t)form);
			op_join(&s);
			cr_assert_eq(s.result, CONC_OK);
			for (uint64_t j = 1; j < cap; j++)
				expect(c, 300 + j);
			if (cap)
				expect(c, 400 + (uint64_t)form);
		}
		cr_assert_eq(conc_chan_try_recv(c, &out), CONC_EMPTY);
		assert_idle(c);
		free_chan(c);
	}
}

/* A thread that sends CONC_TEST_ITEM(id, 0..n-1) on c, by plain sends or by
 * selects (with a nil case beside the real one). */
struct seq_sender {
	struct conc_chan *c;
	size_t id, n;
	bool use_select;
	enum conc_status err;
	pthread_t t;
};

static void *seq_sender_main(void *arg)
{
	struct seq_sender *s = arg;
	s->err = CONC_OK;
	for (size_t i = 0; i < s->n; i++) {
		uint64_t v = CONC_TEST_ITEM(s->id, i);
		enum conc_status st;
		if (s->use_select) {
			struct conc_select_case k[2] = {conc_select_send(NULL, &v), conc_select_send(s->c, &v)};
			size_t ch = 0;
			st = conc_select(k, 2, 0, &ch);
			if (st == CONC_OK && ch != 1)
				st = CONC_INVALID;
		} else {
			st = conc_chan_send(s->c, &v);
		}
		if (st != CONC_OK) {
			s->err = st;
			return NULL;
		}
	}
	return NULL;
}

/*
 * Go: TestChan, "values arrive uncorrupted in FIFO order" and "what four
 * senders send is what arrives".  At every capacity: one sender's 100
 * values arrive in order through plain and select receives; then four
 * senders (two plain, two by select) send 250 each and every value arrives
 * exactly once, each sender's in its order.
 */
Test(select, fifo_and_many_senders_every_capacity, .timeout = 120)
{
	watchdog("fifo_and_many_senders_every_capacity");
	for (size_t k = 0; k < NCAPS; k++) {
		struct conc_chan *c = new_chan(caps[k], 8);
		struct seq_sender one = {.c = c, .id = 0, .n = 100, .use_select = false};
		start(&one.t, seq_sender_main, &one);
		for (size_t i = 0; i < 100; i++) {
			uint64_t v = UNSET;
			if (i % 2) {
				cr_assert_eq(conc_chan_recv(c, &v), CONC_OK);
			} else {
				struct conc_select_case rk[2] = {conc_select_recv(NULL, &v), conc_select_recv(c, &v)};
				size_t ch = 0;
				cr_assert_eq(conc_select(rk, 2, 0, &ch), CONC_OK);
				cr_assert_eq(ch, 1u);
			}
			cr_assert_eq(v, CONC_TEST_ITEM(0, i), "cap %zu: value %zu out of order or corrupted", caps[k],
				     i);
		}
		join(one.t);
		cr_assert_eq(one.err, CONC_OK);

		enum { SENDERS = 4, EACH = 250 };
		struct seq_sender s[SENDERS];
		struct conc_test_ledger ledger;
		conc_test_ledger_init(&ledger, SENDERS, EACH);
		for (size_t p = 0; p < SENDERS; p++) {
			s[p] = (struct seq_sender){.c = c, .id = p, .n = EACH, .use_select = p % 2 == 1};
			start(&s[p].t, seq_sender_main, &s[p]);
		}
		size_t last[SENDERS];
		for (size_t p = 0; p < SENDERS; p++)
			last[p] = SIZE_MAX;
		for (size_t i = 0; i < SENDERS * EACH; i++) {
			uint64_t v = UNSET;
			struct conc_select_case rk[1] = {conc_select_recv(c, &v)};
			if (i % 3)
				cr_assert_eq(conc_chan_recv(c, &v), CONC_OK);
			else
				cr_assert_eq(conc_select(rk, 1, 0, NULL), CONC_OK);
			cr_assert_eq(conc_test_ledger_mark(&ledger, v), 0, "cap %zu: duplicate or bogus value %llx",
				     caps[k], (unsigned long long)v);
			cr_assert(conc_test_fifo_ok(last, v), "cap %zu: a sender's values arrived out of order",
				  caps[k]);
		}
		for (size_t p = 0; p < SENDERS; p++) {
			join(s[p].t);
			cr_assert_eq(s[p].err, CONC_OK, "sender %zu: %s", p, conc_strerror(s[p].err));
		}
		cr_assert_eq(conc_test_ledger_missing(&ledger), 0u);
		conc_test_ledger_free(&ledger);
		cr_assert_eq(conc_chan_len(c), 0u);
		assert_idle(c);
		free_chan(c);
	}
}

/* One link of fifo.go's synchronous chain: wait for the token on in, send
 * val on ch, pass the token on out. */
struct chain_link {
	struct conc_chan *ch, *in, *out;
	uint64_t val;
	enum conc_status err;
	pthread_t t;
};

static void *chain_link_main(void *arg)
{
	struct chain_link *l = arg;
	uint64_t token = 0;
	l->err = conc_chan_recv(l->in, &token);
	if (l->err == CONC_OK)
		l->err = conc_chan_send(l->ch, &l->val);
	if (l->err == CONC_OK)
		l->err = conc_chan_send(l->out, &token);
	return NULL;
}

/*
 * Go: test/chan/fifo.go.  Asynchronous: a buffered channel hands back what
 * was sent in order.  Synchronous: a chain of threads over rendezvous
 * channels, each sending its number on a shared channel only after the
 * previous one has, delivers 0..N-1 in order.  And senders parked one after
 * another on a rendezvous channel are served in the order they queued.
 */
Test(select, fifo_async_sync_and_queued_senders, .timeout = 120)
{
	watchdog("fifo_async_sync_and_queued_senders");
	enum { N = 16 };
	struct conc_chan *a = new_chan(N, 8);
	for (uint64_t i = 0; i < N; i++)
		put(a, i);
	for (uint64_t i = 0; i < N; i++)
		expect(a, i);
	free_chan(a);

	struct conc_chan *ch = new_chan(0, 8), *links[N + 1];
	for (size_t i = 0; i <= N; i++)
		links[i] = new_chan(0, 8);
	struct chain_link l[N];
	for (size_t i = 0; i < N; i++) {
		l[i] = (struct chain_link){
			.ch = ch, .in = links[i], .out = links[i + 1], .val = i, .err = CONC_INVALID};
		start(&l[i].t, chain_link_main, &l[i]);
	}
	uint64_t token = 1, v;
	cr_assert_eq(conc_chan_send(links[0], &token), CONC_OK);
	for (uint64_t i = 0; i < N; i++) {
		v = UNSET;
		cr_assert_eq(conc_chan_recv(ch, &v), CONC_OK);
		cr_assert_eq(v, i, "synchronous fifo: got %llu, expected %llu", (unsigned long long)v,
			     (unsigned long long)i);
	}
	cr_assert_eq(conc_chan_recv(links[N], &v), CONC_OK);
	for (size_t i = 0; i < N; i++) {
		join(l[i].t);
		cr_assert_eq(l[i].err, CONC_OK, "link %zu: %s", i, conc_strerror(l[i].err));
	}
	for (size_t i = 0; i <= N; i++)
		free_chan(links[i]);

	/* Queue N senders one by one, each parked before the next starts. */
	struct op s[N];
	for (size_t i = 0; i < N; i++) {
		op_send(&s[i], ch, 500 + i, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(ch, true, i + 1);
	}
	for (uint64_t i = 0; i < N; i++) {
		v = UNSET;
		cr_assert_eq(conc_chan_recv(ch, &v), CONC_OK);
		cr_assert_eq(v, 500 + i, "queued senders served out of order: got %llu, expected %llu",
			     (unsigned long long)v, (unsigned long long)(500 + i));
	}
	for (size_t i = 0; i < N; i++) {
		op_join(&s[i]);
		cr_assert_eq(s[i].result, CONC_OK);
	}
	assert_idle(ch);
	free_chan(ch);
}

/* -------------------------------------------------------------------- close */

/*
 * Go: TestChan, "receive from a closed channel yields what is left, then
 * closed", and "send on a closed channel" (a panic in Go, CONC_CLOSED here).
 * At every capacity: close reports OK once and CLOSED after; plain and
 * select receives drain in order, then report CLOSED with the case's index;
 * sends of every kind report CLOSED, with the case's index for a select.
 */
Test(select, close_drains_then_reports_closed, .timeout = 120)
{
	watchdog("close_drains_then_reports_closed");
	for (size_t k = 0; k < NCAPS; k++) {
		size_t cap = caps[k];
		struct conc_chan *c = new_chan(cap, 8);
		for (uint64_t i = 0; i < cap; i++)
			put(c, 10 + i);
		cr_assert_not(conc_chan_is_closed(c));
		cr_assert_eq(conc_chan_close(c), CONC_OK, "cap %zu", cap);
		cr_assert_eq(conc_chan_close(c), CONC_CLOSED, "cap %zu: second close", cap);
		cr_assert(conc_chan_is_closed(c));
		cr_assert_eq(conc_chan_len(c), cap);

		uint64_t v = 5, out = UNSET;
		size_t i = 0;
		struct conc_select_case sk[2] = {conc_select_recv(NULL, &out), conc_select_send(c, &v)};
		cr_assert_eq(conc_chan_send(c, &v), CONC_CLOSED);
		cr_assert_eq(conc_chan_try_send(c, &v), CONC_CLOSED);
		cr_assert_eq(conc_chan_send_until(c, &v, conc_deadline_poll(), NULL), CONC_CLOSED);
		cr_assert_eq(conc_select(sk, 2, 0, &i), CONC_CLOSED, "cap %zu", cap);
		cr_assert_eq(i, 1u);
		i = 0;
		cr_assert_eq(conc_select_try(sk, 2, 0, &i), CONC_CLOSED);
		cr_assert_eq(i, 1u);

		struct conc_select_case rk[2] = {conc_select_recv(NULL, &v), conc_select_recv(c, &out)};
		for (uint64_t j = 0; j < cap; j++) {
			out = UNSET;
			if (j % 2) {
				cr_assert_eq(conc_chan_recv(c, &out), CONC_OK);
			} else {
				i = 0;
				cr_assert_eq(conc_select(rk, 2, 0, &i), CONC_OK, "cap %zu: draining", cap);
				cr_assert_eq(i, 1u);
			}
			cr_assert_eq(out, 10 + j, "cap %zu", cap);
		}
		cr_assert_eq(conc_chan_recv(c, &out), CONC_CLOSED, "cap %zu", cap);
		cr_assert_eq(conc_chan_try_recv(c, &out), CONC_CLOSED);
		cr_assert_eq(conc_chan_recv_until(c, &out, conc_deadline_forever(), NULL), CONC_CLOSED);
		i = 0;
		cr_assert_eq(conc_select(rk, 2, 0, &i), CONC_CLOSED, "cap %zu: drained", cap);
		cr_assert_eq(i, 1u);
		i = 0;
		cr_assert_eq(conc_select_try(rk, 2, 0, &i), CONC_CLOSED);
		cr_assert_eq(i, 1u);
		i = 0;
		cr_assert_eq(conc_select_until(rk, 2, CONC_SELECT_BIASED, conc_deadline_poll(), NULL, &i), CONC_CLOSED);
		cr_assert_eq(i, 1u);
		cr_assert_eq(conc_chan_len(c), 0u);
		free_chan(c);
	}
}

#define WAKE_ALL 4

/*
 * Go: TestChan, "close unblocks receive", for rendezvous channels on both
 * sides: close wakes every parked receiver and every parked sender with
 * CONC_CLOSED, and no sender's value went anywhere.
 */
Test(select, close_wakes_blocked_rendezvous_parties, .timeout = 120)
{
	watchdog("close_wakes_blocked_rendezvous_parties");
	struct conc_chan *rc = new_chan(0, 8), *sc = new_chan(0, 8);
	struct op r[WAKE_ALL], s[WAKE_ALL];
	for (size_t i = 0; i < WAKE_ALL; i++) {
		op_recv(&r[i], rc, conc_deadline_forever(), NULL);
		op_send(&s[i], sc, 10 + i, conc_deadline_forever(), NULL);
	}
	conc_test_wait_chan_parked(rc, false, WAKE_ALL);
	conc_test_wait_chan_parked(sc, true, WAKE_ALL);
	cr_assert_eq(conc_chan_close(rc), CONC_OK);
	cr_assert_eq(conc_chan_close(sc), CONC_OK);
	for (size_t i = 0; i < WAKE_ALL; i++) {
		op_join(&r[i]);
		op_join(&s[i]);
		cr_assert_eq(r[i].result, CONC_CLOSED, "receiver %zu: %s", i, conc_strerror(r[i].result));
		cr_assert_eq(r[i].buf[0], UNSET);
		cr_assert_eq(s[i].result, CONC_CLOSED, "sender %zu: %s", i, conc_strerror(s[i].result));
	}
	uint64_t v;
	cr_assert_eq(conc_chan_try_recv(sc, &v), CONC_CLOSED, "a closed sender's value is not in the channel");
	assert_idle(rc);
	assert_idle(sc);
	free_chan(rc);
	free_chan(sc);
}

/*
 * Go: TestChan's close cases, through selects.  At every capacity, selects
 * parked on a receive (the closed channel first or second in the array, a
 * never-ready rendezvous channel beside it) and a plain receiver all wake
 * on close with CONC_CLOSED and the closed case's index; a select parked on
 * a send to the full channel wakes with CONC_CLOSED too, and the elements
 * already in the channel are still drained in order.
 */
Test(select, close_wakes_blocked_selects, .timeout = 120)
{
	watchdog("close_wakes_blocked_selects");
	for (size_t k = 0; k < NCAPS; k++) {
		size_t cap = caps[k];
		struct conc_chan *c = new_chan(cap, 8), *idle = new_chan(0, 8);
		struct op s1, s2, plain;
		op_init(&s1);
		sel_recv(&s1, 0, c);
		sel_recv(&s1, 1, idle);
		op_select(&s1, 2, 0, conc_deadline_forever(), NULL);
		op_init(&s2);
		sel_recv(&s2, 0, idle);
		sel_recv(&s2, 1, c);
		op_select(&s2, 2, CONC_SELECT_BIASED, conc_deadline_forever(), NULL);
		op_recv(&plain, c, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, false, 3);
		cr_assert_eq(conc_chan_close(c), CONC_OK);
		op_join(&s1);
		op_join(&s2);
		op_join(&plain);
		cr_assert_eq(s1.result, CONC_CLOSED, "cap %zu: %s", cap, conc_strerror(s1.result));
		cr_assert_eq(s1.chosen, 0u);
		cr_assert_eq(s2.result, CONC_CLOSED, "cap %zu: %s", cap, conc_strerror(s2.result));
		cr_assert_eq(s2.chosen, 1u);
		cr_assert_eq(plain.result, CONC_CLOSED);
		assert_idle(idle);
		free_chan(c);

		c = new_chan(cap, 8);
		for (uint64_t i = 0; i < cap; i++)
			put(c, 20 + i);
		struct op s3;
		op_init(&s3);
		sel_recv(&s3, 0, idle);
		sel_send(&s3, 1, c, 99);
		op_select(&s3, 2, 0, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, true, 1);
		cr_assert_eq(conc_chan_close(c), CONC_OK);
		op_join(&s3);
		cr_assert_eq(s3.result, CONC_CLOSED, "cap %zu: %s", cap, conc_strerror(s3.result));
		cr_assert_eq(s3.chosen, 1u);
		for (uint64_t i = 0; i < cap; i++)
			expect(c, 20 + i);
		uint64_t v;
		cr_assert_eq(conc_chan_try_recv(c, &v), CONC_CLOSED, "the closed select's element was sent");
		assert_idle(c);
		assert_idle(idle);
		free_chan(c);
		free_chan(idle);
	}
}

/* -------------------------------------------------------- non-blocking races */

/* Wait until *a == want: spin (so both threads leave within a few hundred
 * nanoseconds of each other), yielding now and then for a single core. */
static void spin_until(_Atomic(size_t) *a, size_t want)
{
	for (unsigned n = 1; atomic_load(a) != want; n++) {
		if (n % 256 == 0)
			conc_yield();
		else
			conc_cpu_relax();
	}
}

/*
 * A helper thread that runs poll(arg) once a round, in step with the test:
 * round r (from 1) starts when the test calls lockstep_go(r) and is over
 * when lockstep_wait(r) returns, so the test may set up before the one and
 * check after the other.
 */
struct lockstep {
	void (*poll)(void *arg);
	void *arg;
	size_t rounds;
	_Atomic(size_t) go, done;
	pthread_t t;
};

static void *lockstep_main(void *arg)
{
	struct lockstep *l = arg;
	for (size_t r = 1; r <= l->rounds; r++) {
		spin_until(&l->go, r);
		l->poll(l->arg);
		atomic_store(&l->done, r);
	}
	return NULL;
}

static void lockstep_start(struct lockstep *l, size_t rounds, void (*poll)(void *arg), void *arg)
{
	l->poll = poll;
	l->arg = arg;
	l->rounds = rounds;
	atomic_init(&l->go, 0);
	atomic_init(&l->done, 0);
	start(&l->t, lockstep_main, l);
}

/* Start round r, then spin `delay` times: what the test does next meets
 * the poll at a different stage as the delay changes from round to round. */
static void lockstep_go(struct lockstep *l, size_t r, size_t delay)
{
	atomic_store(&l->go, r);
	for (size_t j = 0; j < delay; j++)
		conc_cpu_relax();
}

static void lockstep_wait(struct lockstep *l, size_t r)
{
	spin_until(&l->done, r);
}

/* The poll of nonblock_recv_race. */
struct nbr {
	struct conc_chan *c;
	enum conc_status last;
	size_t chosen;
};

static void nbr_poll(void *arg)
{
	struct nbr *x = arg;
	uint64_t v = UNSET;
	struct conc_select_case k[2] = {conc_select_recv(NULL, &v), conc_select_recv(x->c, &v)};
	x->last = conc_select_try(k, 2, 0, &x->chosen);
}

/*
 * Go: TestNonblockRecvRace.  A channel of capacity 1 holds one element; one
 * thread polls it with conc_select_try while the test closes it and
 * receives.  At every moment the channel either has the element or is
 * closed, so the poll must never say WOULDBLOCK; and exactly one of the two
 * gets the element.  Both sides start each round together (a spin
 * handshake), the test a little later each round, so the poll meets every
 * stage of close-then-receive.
 */
Test(select, nonblock_recv_race, .timeout = 120)
{
	watchdog("nonblock_recv_race");
	struct nbr x;
	memset(&x, 0, sizeof x);
	struct lockstep ls;
	lockstep_start(&ls, SCALED(20000), nbr_poll, &x);
	for (size_t r = 1; r <= ls.rounds; r++) {
		x.c = new_chan(1, 8);
		put(x.c, 1);
		lockstep_go(&ls, r, r % 128);
		cr_assert_eq(conc_chan_close(x.c), CONC_OK);
		uint64_t v = UNSET;
		enum conc_status mine = conc_chan_recv(x.c, &v);
		lockstep_wait(&ls, r);
		cr_assert_neq(x.last, CONC_WOULDBLOCK, "round %zu: select_try found nothing ready on a channel that "
						       "always had an element or was closed", r);
		cr_assert(x.last == CONC_OK || x.last == CONC_CLOSED, "round %zu: %s", r, conc_strerror(x.last));
		cr_assert_eq(x.chosen, 1u);
		cr_assert(mine == CONC_OK || mine == CONC_CLOSED, "round %zu: %s", r, conc_strerror(mine));
		cr_assert_eq((x.last == CONC_OK) + (mine == CONC_OK), 1, "round %zu: the element was taken %s", r,
			     mine == CONC_OK ? "twice" : "by nobody");
		free_chan(x.c);
	}
	join(ls.t);
}

/* select_try_finds_a_case_that_stays_ready: shared state and one worker. */
enum { READY_THREADS = 4 };

enum ready_phase { READY_RECV, READY_SEND, READY_MIXED };

struct ready {
	struct conc_chan *a;     /* always holds >= 1 element */
	struct conc_chan *room;  /* always has >= 1 free slot */
	struct conc_chan *never; /* empty; nobody sends */
	enum ready_phase phase;
	size_t iters;
	_Atomic(size_t) wouldblock;
	_Atomic(int) errors;
};

static void *ready_main(void *arg)
{
	struct ready *x = arg;
	for (size_t it = 0; it < x->iters; it++) {
		uint64_t got = UNSET, give = it, back = UNSET;
		/* Only the cases of the phase take part; the others are nil. */
		struct conc_select_case k[4] = {
			conc_select_recv(x->never, &back),
			conc_select_recv(x->phase == READY_SEND ? NULL : x->a, &got),
			conc_select_send(x->phase == READY_RECV ? NULL : x->room, &give),
			conc_select_send(NULL, &give),
		};
		size_t ch = 4;
		enum conc_status s = conc_select_try(k, 4, it % 3 ? 0 : CONC_SELECT_BIASED, &ch);
		if (s == CONC_WOULDBLOCK) {
			atomic_fetch_add(&x->wouldblock, 1);
			continue;
		}
		if (s != CONC_OK || ch == 0 || ch == 3) {
			atomic_fetch_add(&x->errors, 1);
			continue;
		}
		/* Undo it, so the invariants hold for the others. */
		if (ch == 1 && conc_chan_send(x->a, &got) != CONC_OK)
			atomic_fetch_add(&x->errors, 1);
		if (ch == 2 && conc_chan_recv(x->room, &back) != CONC_OK)
			atomic_fetch_add(&x->errors, 1);
	}
	return NULL;
}

static void run_ready(enum ready_phase phase)
{
	struct ready x;
	x.a = new_chan(2 * READY_THREADS, 8);
	x.room = new_chan(READY_THREADS + 1, 8);
	x.never = new_chan(1, 8);
	x.phase = phase;
	x.iters = SCALED(50000);
	atomic_init(&x.wouldblock, 0);
	atomic_init(&x.errors, 0);
	for (uint64_t i = 0; i <= READY_THREADS; i++)
		put(x.a, i);
	pthread_t t[READY_THREADS];
	for (size_t i = 0; i < READY_THREADS; i++)
		start(&t[i], ready_main, &x);
	for (size_t i = 0; i < READY_THREADS; i++)
		join(t[i]);
	cr_assert_eq(atomic_load(&x.wouldblock), 0u, "phase %d: select_try missed a case that was ready all along",
		     (int)phase);
	cr_assert_eq(atomic_load(&x.errors), 0, "phase %d", (int)phase);
	cr_assert_eq(conc_chan_len(x.a), READY_THREADS + 1u);
	cr_assert_eq(conc_chan_len(x.room), 0u);
	cr_assert_eq(conc_chan_len(x.never), 0u);
	uint64_t seen = 0;
	for (size_t i = 0; i <= READY_THREADS; i++) {
		uint64_t v = UNSET;
		cr_assert_eq(conc_chan_try_recv(x.a, &v), CONC_OK);
		cr_assert_lt(v, READY_THREADS + 1u);
		seen |= UINT64_C(1) << v;
	}
	cr_assert_eq(seen, (UINT64_C(1) << (READY_THREADS + 1)) - 1, "A's elements were lost or duplicated");
	free_chan(x.a);
	free_chan(x.room);
	free_chan(x.never);
}

/* The poll of nonblock_select_race: one conc_select_try over c1, c2. */
struct nsr {
	struct conc_chan *c1, *c2;
	enum conc_status last;
	size_t chosen;
	uint64_t got;
};

static void nsr_poll(void *arg)
{
	struct nsr *x = arg;
	x->got = UNSET;
	struct conc_select_case k[2] = {conc_select_recv(x->c1, &x->got), conc_select_recv(x->c2, &x->got)};
	x->last = conc_select_try(k, 2, 0, &x->chosen);
}

/*
 * Go: TestNonblockSelectRace.  c1 holds an element; while one thread polls
 * c1 and c2 with conc_select_try, the test sends to c2 and only then takes
 * c1's element (try_recv).  At every instant c1 or c2 has an element, so the
 * poll must never say WOULDBLOCK, although each channel alone may go empty
 * or fill during it: the answer must hold for one instant for all cases at
 * once.  Every element is taken exactly once.
 */
Test(select, nonblock_select_race, .timeout = 120)
{
	watchdog("nonblock_select_race");
	struct nsr x;
	memset(&x, 0, sizeof x);
	struct lockstep ls;
	lockstep_start(&ls, SCALED(20000), nsr_poll, &x);
	for (size_t r = 1; r <= ls.rounds; r++) {
		x.c1 = new_chan(1, 8);
		x.c2 = new_chan(1, 8);
		put(x.c1, 1);
		lockstep_go(&ls, r, r % 64);
		put(x.c2, 2);
		uint64_t v = UNSET;
		enum conc_status mine = conc_chan_try_recv(x.c1, &v);
		lockstep_wait(&ls, r);
		cr_assert_neq(x.last, CONC_WOULDBLOCK, "round %zu: select_try found neither c1 nor c2 ready", r);
		cr_assert_eq(x.last, CONC_OK, "round %zu: %s", r, conc_strerror(x.last));
		cr_assert_eq(x.got, x.chosen + 1, "round %zu: case %zu received %llu", r, x.chosen,
			     (unsigned long long)x.got);
		/* c1's element: taken by exactly one of the two. */
		cr_assert_eq((mine == CONC_OK) + (x.chosen == 0), 1, "round %zu: c1's element taken %s", r,
			     mine == CONC_OK ? "twice" : "by nobody");
		free_chan(x.c1);
		free_chan(x.c2);
	}
	join(ls.t);
}

/*
 * Go: TestNonblockSelectRace's other half: a conc_select_try finds a case
 * that stays ready the whole time.  Four threads poll, then undo what they
 * did.  A starts with threads + 1 elements, so it is never empty; R has
 * threads + 1 slots, so it is never full.  Phases: receive from A (beside a
 * never-ready channel), send to R, and both at once.  No poll may report
 * WOULDBLOCK.
 */
Test(select, select_try_finds_a_case_that_stays_ready, .timeout = 120)
{
	watchdog("select_try_finds_a_case_that_stays_ready");
	run_ready(READY_RECV);
	run_ready(READY_SEND);
	run_ready(READY_MIXED);
}

/* -------------------------------------------------------------- self-select */

struct self_sel {
	struct conc_chan *c;
	struct conc_ctx ctx;
	size_t threads, per;
	struct conc_test_ledger ledger;
	_Atomic(size_t) finished, sends, recvs;
	_Atomic(int) self_recv, errors;
};

struct self_worker {
	struct self_sel *x;
	size_t id, sent;
	pthread_t t;
};

static void *self_main(void *arg)
{
	struct self_worker *w = arg;
	struct self_sel *x = w->x;
	bool rdv = conc_chan_cap(x->c) == 0;
	for (size_t i = 0; i < x->per; i++) {
		uint64_t out = CONC_TEST_ITEM(w->id, w->sent), in = UNSET;
		/* Both orders of the two cases, as Go's test does. */
		size_t si = w->id == 0 || i % 2 == 0 ? 0 : 1;
		struct conc_select_case k[2];
		k[si] = conc_select_send(x->c, &out);
		k[1 - si] = conc_select_recv(x->c, &in);
		size_t ch = 2;
		enum conc_status s = conc_select_until(k, 2, 0, conc_deadline_forever(), &x->ctx, &ch);
		if (s == CONC_CANCELED)
			break;
		if (s != CONC_OK) {
			atomic_fetch_add(&x->errors, 1);
			break;
		}
		if (ch == si) {
			w->sent++;
			atomic_fetch_add(&x->sends, 1);
			continue;
		}
		atomic_fetch_add(&x->recvs, 1);
		if (rdv && CONC_TEST_PRODUCER(in) == w->id)
			atomic_fetch_add(&x->self_recv, 1);
		if (conc_test_ledger_mark(&x->ledger, in) != 0)
			atomic_fetch_add(&x->errors, 1);
	}
	/* Once one thread is left, nothing can pair with its rendezvous
	 * select: release it. */
	if (atomic_fetch_add(&x->finished, 1) + 1 == x->threads - 1)
		(void)conc_ctx_cancel(&x->ctx, 0);
	return NULL;
}

static void run_self_select(size_t cap)
{
	enum { THREADS = 4 };
	struct self_sel x;
	memset(&x, 0, sizeof x);
	x.c = new_chan(cap, 8);
	x.threads = THREADS;
	x.per = SCALED(cap ? 10000 : 4000);
	cr_assert_eq(conc_ctx_init_root(&x.ctx), CONC_OK);
	conc_test_ledger_init(&x.ledger, THREADS, x.per);
	atomic_init(&x.finished, 0);
	atomic_init(&x.sends, 0);
	atomic_init(&x.recvs, 0);
	atomic_init(&x.self_recv, 0);
	atomic_init(&x.errors, 0);
	struct self_worker w[THREADS];
	for (size_t i = 0; i < THREADS; i++) {
		w[i] = (struct self_worker){.x = &x, .id = i};
		start(&w[i].t, self_main, &w[i]);
	}
	for (size_t i = 0; i < THREADS; i++)
		join(w[i].t);
	cr_assert_eq(atomic_load(&x.errors), 0, "cap %zu: unexpected status or duplicate value", cap);
	cr_assert_eq(atomic_load(&x.self_recv), 0, "a rendezvous select completed with itself");
	size_t sends = atomic_load(&x.sends), recvs = atomic_load(&x.recvs);
	cr_assert_geq(sends + recvs, (THREADS - 1) * x.per, "cap %zu: threads stopped early", cap);
	size_t left = conc_chan_len(x.c);
	cr_assert_eq(sends, recvs + left, "cap %zu: %zu sends, %zu receives, %zu left", cap, sends, recvs, left);
	for (size_t i = 0; i < left; i++) {
		uint64_t v = UNSET;
		cr_assert_eq(conc_chan_try_recv(x.c, &v), CONC_OK);
		cr_assert_eq(conc_test_ledger_mark(&x.ledger, v), 0);
	}
	/* Every value sent arrived exactly once, and nothing else did. */
	for (size_t p = 0; p < THREADS; p++)
		for (size_t i = 0; i < x.per; i++)
			cr_assert_eq(atomic_load(&x.ledger.seen[p * x.per + i]), i < w[p].sent ? 1 : 0,
				     "cap %zu: thread %zu value %zu (it sent %zu)", cap, p, i, w[p].sent);
	assert_idle(x.c);
	conc_test_ledger_free(&x.ledger);
	cr_assert_eq(conc_ctx_destroy(&x.ctx), CONC_OK);
	free_chan(x.c);
}

/*
 * Go: TestSelfSelect.  Four threads each run selects with a send and a
 * receive case on the same channel.  On a rendezvous channel a select must
 * pair with another thread's, never with itself; every completed send is
 * matched by one receive of the same value.  On a buffered channel (where
 * receiving one's own value is fine) sends = receives + what is left.
 */
Test(select, self_select_pairs_only_with_partners, .timeout = 120)
{
	watchdog("self_select_pairs_only_with_partners");
	run_self_select(0);
	run_self_select(10);
}

/* ----------------------------------------------------------------- fairness */

/*
 * The fairness bound: each share within 0.5 +- 0.022.  Go's test uses
 * 10,000 trials and a bound of 9 standard deviations.  At 10,000 trials
 * 0.022 is only 4.4 standard deviations (a fair select would fail about
 * once in 90,000 runs), so these run 40,000 trials: 0.022 is then 8.8
 * standard deviations (sd = 0.5 / sqrt(40,000) = 0.0025), a false failure
 * below 1e-17 per check, while a select that favours one case by 3% or more
 * still fails.
 */
#define FAIR_TRIALS 40000

/*
 * Go: TestSelectFairness.  Two buffered channels that always have elements
 * and two rendezvous channels that never do: each ready case is taken
 * (0.5 +- 0.022) of the time, and the never-ready ones never.
 */
Test(select, fair_select_is_uniform_among_ready_cases, .timeout = 120)
{
	watchdog("fair_select_is_uniform_among_ready_cases");
	struct conc_chan *c1 = new_chan(FAIR_TRIALS, 8), *c2 = new_chan(FAIR_TRIALS, 8);
	struct conc_chan *c3 = new_chan(0, 8), *c4 = new_chan(0, 8);
	for (size_t i = 0; i < FAIR_TRIALS; i++) {
		put(c1, 1);
		put(c2, 2);
	}
	uint64_t b = UNSET;
	struct conc_select_case k[4] = {
		conc_select_recv(c3, &b),
		conc_select_recv(c4, &b),
		conc_select_recv(c1, &b),
		conc_select_recv(c2, &b),
	};
	size_t cnt[4] = {0};
	for (size_t t = 0; t < FAIR_TRIALS; t++) {
		size_t i = 4;
		b = UNSET;
		cr_assert_eq(conc_select(k, 4, 0, &i), CONC_OK);
		cr_assert(i == 2 || i == 3, "took never-ready case %zu", i);
		cr_assert_eq(b, i - 1, "case %zu happened but the value came from elsewhere", i);
		cnt[i]++;
	}
	cr_assert(share_near(cnt[2], FAIR_TRIALS, 1, 2), "unfair select: %zu vs %zu of %d", cnt[2], cnt[3],
		  FAIR_TRIALS);
	assert_idle(c3);
	assert_idle(c4);
	free_chan(c1);
	free_chan(c2);
	free_chan(c3);
	free_chan(c4);
}

/*
 * Go: TestSelectFairness, "uniform among the ready cases only".  Three
 * cases of which the middle one is an empty buffered channel: the other two
 * are taken (0.5 +- 0.022) each.  Then four cases of which three are ready:
 * each (1/3 +- 0.022).  Through conc_select_try as well as conc_select.
 */
Test(select, fair_select_ignores_cases_not_ready, .timeout = 120)
{
	watchdog("fair_select_ignores_cases_not_ready");
	/* c[0] and c[2] serve both rounds (at most 2 * FAIR_TRIALS draws),
	 * c[3] only the second; c[1] stays empty. */
	struct conc_chan *c[4] = {
		new_chan(2 * FAIR_TRIALS, 8),
		new_chan(1, 8),
		new_chan(2 * FAIR_TRIALS, 8),
		new_chan(FAIR_TRIALS, 8),
	};
	for (size_t i = 0; i < 2 * FAIR_TRIALS; i++) {
		put(c[0], 0);
		put(c[2], 2);
	}
	for (size_t i = 0; i < FAIR_TRIALS; i++)
		put(c[3], 3);
	uint64_t b = UNSET;
	struct conc_select_case k[4] = {
		conc_select_recv(c[0], &b),
		conc_select_recv(c[1], &b),
		conc_select_recv(c[2], &b),
		conc_select_recv(c[3], &b),
	};
	size_t cnt[4] = {0};
	for (size_t t = 0; t < FAIR_TRIALS; t++) {
		size_t i = 4;
		cr_assert_eq(t % 2 ? conc_select(k, 3, 0, &i) : conc_select_try(k, 3, 0, &i), CONC_OK);
		cr_assert_eq(b, i);
		cnt[i]++;
	}
	cr_assert_eq(cnt[1], 0u, "took the empty channel's case");
	cr_assert(share_near(cnt[0], FAIR_TRIALS, 1, 2), "unfair: %zu vs %zu", cnt[0], cnt[2]);

	memset(cnt, 0, sizeof cnt);
	for (size_t t = 0; t < FAIR_TRIALS; t++) {
		size_t i = 4;
		cr_assert_eq(t % 2 ? conc_select(k, 4, 0, &i) : conc_select_try(k, 4, 0, &i), CONC_OK);
		cr_assert_eq(b, i);
		cnt[i]++;
	}
	cr_assert_eq(cnt[1], 0u);
	/* One third each: sd = sqrt((1/3)(2/3) / 40,000) = 0.0024, so 0.022
	 * is 9.3 standard deviations. */
	static const size_t ready[3] = {0, 2, 3};
	for (size_t j = 0; j < 3; j++)
		cr_assert(share_near(cnt[ready[j]], FAIR_TRIALS, 1, 3), "case %zu taken %zu of %d times", ready[j],
			  cnt[ready[j]], FAIR_TRIALS);
	for (size_t j = 0; j < 4; j++)
		free_chan(c[j]);
}

/*
 * conc's priority mode (no Go counterpart): CONC_SELECT_BIASED takes the
 * first ready case in array order, every time, whether receiving or sending,
 * blocking or not; when that case stops being ready, the next one.
 */
Test(select, biased_select_takes_first_ready_case, .timeout = 120)
{
	watchdog("biased_select_takes_first_ready_case");
	struct conc_chan *empty = new_chan(4, 8), *c1 = new_chan(100, 8), *c2 = new_chan(100, 8);
	for (size_t i = 0; i < 50; i++) {
		put(c1, 1);
		put(c2, 2);
	}
	uint64_t b = UNSET;
	struct conc_select_case rk[3] = {
		conc_select_recv(empty, &b),
		conc_select_recv(c1, &b),
		conc_select_recv(c2, &b),
	};
	for (size_t t = 0; t < 100; t++) {
		size_t i = 3;
		enum conc_status s = t % 2 ? conc_select(rk, 3, CONC_SELECT_BIASED, &i)
					   : conc_select_try(rk, 3, CONC_SELECT_BIASED, &i);
		cr_assert_eq(s, CONC_OK);
		cr_assert_eq(i, t < 50 ? 1u : 2u, "trial %zu took case %zu", t, i);
		cr_assert_eq(b, i);
	}
	/* Sends: c1 and c2 are empty again, "empty" is made full. */
	for (size_t i = 0; i < 4; i++)
		put(empty, 9);
	uint64_t v = 5;
	struct conc_select_case sk[3] = {
		conc_select_send(empty, &v),
		conc_select_send(c1, &v),
		conc_select_send(c2, &v),
	};
	for (size_t t = 0; t < 100; t++) {
		size_t i = 3;
		cr_assert_eq(conc_select(sk, 3, CONC_SELECT_BIASED, &i), CONC_OK);
		cr_assert_eq(i, 1u, "trial %zu took case %zu", t, i);
	}
	cr_assert_eq(conc_chan_len(c1), 100u);
	cr_assert_eq(conc_chan_len(c2), 0u);
	free_chan(empty);
	free_chan(c1);
	free_chan(c2);
}

/* ------------------------------------------------------ pseudo-random send */

/*
 * The bound of the pseudo-random send tests: each value at least 10% of n.
 * For a fair choice the count of one value is Binomial(n, 1/2); by
 * Hoeffding, P(count <= n/10) <= exp(-2 n (0.4)^2), which is exp(-3200) for
 * n = 10,000 and exp(-640) for n = 2,000: a false failure cannot happen.
 */
static void assert_both_values(size_t n0, size_t n1, size_t n, const char *what)
{
	cr_assert_eq(n0 + n1, n, "%s: values other than 0 and 1 arrived", what);
	cr_assert(n0 >= n / 10 && n1 >= n / 10, "%s: want pseudo-random, got %zu zeros and %zu ones", what, n0, n1);
}

/*
 * Go: TestPseudoRandomSend, buffered: 10,000 selects with the two cases
 * "send 0" and "send 1" to the same channel, which has room for all of
 * them; both values are sent a fair share of the time.
 */
Test(select, pseudo_random_send_buffered, .timeout = 120)
{
	watchdog("pseudo_random_send_buffered");
	enum { N = 10000 };
	struct conc_chan *c = new_chan(N, 8);
	uint64_t zero = 0, one = 1;
	struct conc_select_case k[2] = {conc_select_send(c, &zero), conc_select_send(c, &one)};
	for (size_t t = 0; t < N; t++) {
		size_t i = 2;
		cr_assert_eq(conc_select(k, 2, 0, &i), CONC_OK);
		cr_assert_lt(i, 2u);
	}
	size_t n[2] = {0, 0};
	for (size_t t = 0; t < N; t++) {
		uint64_t v = UNSET;
		cr_assert_eq(conc_chan_try_recv(c, &v), CONC_OK);
		cr_assert_lt(v, 2u);
		n[v]++;
	}
	assert_both_values(n[0], n[1], N, "buffered");
	free_chan(c);
}

/* A receiver thread for the rendezvous pseudo-random send tests: n plain
 * receives, counting the values. */
struct counter {
	struct conc_chan *c;
	size_t n, got[2], bad;
	pthread_t t;
};

static void *counter_main(void *arg)
{
	struct counter *x = arg;
	for (size_t i = 0; i < x->n; i++) {
		uint64_t v = UNSET;
		if (conc_chan_recv(x->c, &v) != CONC_OK || v > 1)
			x->bad++;
		else
			x->got[v]++;
	}
	return NULL;
}

/*
 * Go: TestPseudoRandomSend on an unbuffered channel, with the receiver
 * there first: before each select the receiver is parked, so both cases
 * are ready when the select looks, and each must be chosen a fair share.
 */
Test(select, pseudo_random_send_to_a_waiting_receiver, .timeout = 120)
{
	watchdog("pseudo_random_send_to_a_waiting_receiver");
	enum { N = 2000 };
	struct counter x = {.c = new_chan(0, 8), .n = N};
	start(&x.t, counter_main, &x);
	uint64_t zero = 0, one = 1;
	struct conc_select_case k[2] = {conc_select_send(x.c, &zero), conc_select_send(x.c, &one)};
	size_t n[2] = {0, 0};
	for (size_t t = 0; t < N; t++) {
		conc_test_wait_chan_parked(x.c, false, 1);
		size_t i = 2;
		cr_assert_eq(conc_select(k, 2, 0, &i), CONC_OK);
		cr_assert_lt(i, 2u);
		n[i]++;
	}
	join(x.t);
	cr_assert_eq(x.bad, 0u);
	cr_assert_eq(x.got[0], n[0], "the receiver got a value the select did not choose");
	assert_both_values(x.got[0], x.got[1], N, "rendezvous, receiver first");
	free_chan(x.c);
}

/* The select side of pseudo_random_send_from_a_parked_select. */
struct rsend {
	struct conc_chan *c;
	size_t n, bad;
	pthread_t t;
};

static void *rsend_main(void *arg)
{
	struct rsend *x = arg;
	uint64_t zero = 0, one = 1;
	struct conc_select_case k[2] = {conc_select_send(x->c, &zero), conc_select_send(x->c, &one)};
	for (size_t t = 0; t < x->n; t++) {
		size_t i = 2;
		if (conc_select(k, 2, 0, &i) != CONC_OK || i > 1)
			x->bad++;
	}
	return NULL;
}

/*
 * Go: TestPseudoRandomSend on an unbuffered channel as Go runs it: the
 * receiver is slow (Go yields before each receive), so the select is
 * usually parked with both cases queued on the channel when the receiver
 * comes.  Go queues the cases of one channel in a random order for exactly
 * this.  Here the receiver waits until the select is parked every time; the
 * value it gets must still be 0 or 1 with a fair share each.
 */
Test(select, pseudo_random_send_from_a_parked_select, .timeout = 120)
{
	watchdog("pseudo_random_send_from_a_parked_select");
	enum { N = 2000 };
	struct rsend x = {.c = new_chan(0, 8), .n = N};
	start(&x.t, rsend_main, &x);
	size_t n[2] = {0, 0};
	for (size_t t = 0; t < N; t++) {
		conc_test_wait_chan_parked(x.c, true, 2); /* both cases queued, asleep */
		uint64_t v = UNSET;
		cr_assert_eq(conc_chan_recv(x.c, &v), CONC_OK);
		cr_assert_lt(v, 2u);
		n[v]++;
	}
	join(x.t);
	cr_assert_eq(x.bad, 0u);
	assert_both_values(n[0], n[1], N, "rendezvous, select parked first");
	assert_idle(x.c);
	free_chan(x.c);
}

/* ----------------------------------------------------------- multi-consumer */

/* The end of a pipeline, on the test's thread: receive from c until it
 * reports closed; what arrives is CONC_TEST_ITEM(0, 0..n-1), each once. */
static void recv_each_once_until_closed(struct conc_chan *c, size_t n, const char *what)
{
	struct conc_test_ledger ledger;
	conc_test_ledger_init(&ledger, 1, n);
	size_t got = 0;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_chan_recv(c, &v)) == CONC_OK) {
		cr_assert_eq(conc_test_ledger_mark(&ledger, v), 0, "%s: duplicate or bogus value %llx", what,
			     (unsigned long long)v);
		got++;
	}
	cr_assert_eq(s, CONC_CLOSED, "%s: the receive ended with %s", what, conc_strerror(s));
	cr_assert_eq(got, n, "%s: %zu of %zu values arrived", what, got, n);
	cr_assert_eq(conc_test_ledger_missing(&ledger), 0u, "%s", what);
	conc_test_ledger_free(&ledger);
}

enum { MC_WORKERS = 6 };

struct mc {
	struct conc_chan *q, *r;
	size_t items;
	pthread_t workers[MC_WORKERS];
	_Atomic(int) errors;
};

struct mc_worker {
	struct mc *mc;
	size_t id;
};

/* Take work with a select (beside a nil case) until q is closed; forward. */
static void *mc_worker_main(void *arg)
{
	struct mc_worker *w = arg;
	struct mc *mc = w->mc;
	for (;;) {
		uint64_t v = UNSET;
		struct conc_select_case k[2] = {conc_select_recv(NULL, &v), conc_select_recv(mc->q, &v)};
		size_t ch = 2;
		enum conc_status s = conc_select(k, 2, 0, &ch);
		if (s == CONC_CLOSED && ch == 1)
			break;
		if (s != CONC_OK || ch != 1) {
			atomic_fetch_add(&mc->errors, 1);
			break;
		}
		/* Upset the queue order now and then, as Go's test does. */
		if (CONC_TEST_SEQ(v) % 7 == w->id)
			conc_yield();
		if (conc_chan_send(mc->r, &v) != CONC_OK)
			atomic_fetch_add(&mc->errors, 1);
	}
	return NULL;
}

/* Feed q, close it, wait for the workers, close r (Go's feeder and closer). */
static void *mc_feeder_main(void *arg)
{
	struct mc *mc = arg;
	for (size_t i = 0; i < mc->items; i++) {
		uint64_t v = CONC_TEST_ITEM(0, i);
		if (conc_chan_send(mc->q, &v) != CONC_OK)
			atomic_fetch_add(&mc->errors, 1);
	}
	if (conc_chan_close(mc->q) != CONC_OK)
		atomic_fetch_add(&mc->errors, 1);
	for (size_t i = 0; i < MC_WORKERS; i++)
		if (pthread_join(mc->workers[i], NULL) != 0)
			atomic_fetch_add(&mc->errors, 1);
	if (conc_chan_close(mc->r) != CONC_OK)
		atomic_fetch_add(&mc->errors, 1);
	return NULL;
}

static void run_multi_consumer(size_t qcap)
{
	struct mc mc;
	memset(&mc, 0, sizeof mc);
	mc.q = new_chan(qcap, 8);
	mc.r = new_chan(3 * MC_WORKERS, 8);
	mc.items = SCALED(20000);
	atomic_init(&mc.errors, 0);
	struct mc_worker w[MC_WORKERS];
	for (size_t i = 0; i < MC_WORKERS; i++) {
		w[i] = (struct mc_worker){&mc, i};
		start(&mc.workers[i], mc_worker_main, &w[i]);
	}
	pthread_t feeder;
	start(&feeder, mc_feeder_main, &mc);
	char what[32];
	snprintf(what, sizeof what, "q cap %zu", qcap);
	recv_each_once_until_closed(mc.r, mc.items, what);
	join(feeder);
	cr_assert_eq(atomic_load(&mc.errors), 0, "q cap %zu", qcap);
	assert_idle(mc.q);
	assert_idle(mc.r);
	free_chan(mc.q);
	free_chan(mc.r);
}

/*
 * Go: TestMultiConsumer.  One feeder, six workers taking work from q by
 * select and forwarding it on r, the test consuming r; q is closed after
 * the last item, r after the last worker.  Every item arrives exactly once.
 * With q buffered (as in Go) and with q a rendezvous channel.
 */
Test(select, multi_consumer_exactly_once, .timeout = 120)
{
	watchdog("multi_consumer_exactly_once");
	run_multi_consumer(3 * MC_WORKERS);
	run_multi_consumer(0);
}

/* ------------------------------------------------------- duplicate channels */

/*
 * Go: TestSelectDuplicateChannel.  Select A is parked with two receive
 * cases on c and one on d; plain receiver B is parked on c behind it.  A
 * send on d completes A (case 2) and A leaves c's queue; a send on c must
 * then reach B, not A's stale registrations.  On rendezvous and on buffered
 * channels.
 */
Test(select, duplicate_channel_in_one_select, .timeout = 120)
{
	watchdog("duplicate_channel_in_one_select");
	for (size_t cap = 0; cap < 2; cap++) {
		struct conc_chan *c = new_chan(cap, 8), *d = new_chan(cap, 8);
		struct op a, b;
		op_init(&a);
		sel_recv(&a, 0, c);
		sel_recv(&a, 1, c);
		sel_recv(&a, 2, d);
		op_select(&a, 3, 0, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, false, 2);
		op_recv(&b, c, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, false, 3);
		uint64_t v = 7;
		cr_assert_eq(conc_chan_send(d, &v), CONC_OK);
		op_join(&a);
		cr_assert_eq(a.result, CONC_OK);
		cr_assert_eq(a.chosen, 2u);
		cr_assert_eq(a.buf[2], 7u);
		cr_assert_eq(a.buf[0], UNSET);
		cr_assert_eq(a.buf[1], UNSET);
		v = 8;
		cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
		op_join(&b);
		cr_assert_eq(b.result, CONC_OK, "cap %zu: %s", cap, conc_strerror(b.result));
		cr_assert_eq(b.buf[0], 8u);
		assert_idle(c);
		assert_idle(d);
		free_chan(c);
		free_chan(d);
	}
}

/*
 * The same channel in a send and a receive case of one select.  Buffered:
 * on an empty channel only the send can happen, on a full one only the
 * receive (and it gets what the send put there).  Rendezvous: alone, the
 * select can never pair with itself (WOULDBLOCK, TIMEDOUT); with a parked
 * receiver it sends, with a parked sender it receives.
 */
Test(select, same_channel_send_and_recv_cases, .timeout = 120)
{
	watchdog("same_channel_send_and_recv_cases");
	for (unsigned flags = 0; flags <= CONC_SELECT_BIASED; flags++) {
		struct conc_chan *c = new_chan(1, 8);
		uint64_t x = 41, y = UNSET;
		struct conc_select_case k[2] = {conc_select_recv(c, &y), conc_select_send(c, &x)};
		size_t i = 2;
		cr_assert_eq(conc_select(k, 2, flags, &i), CONC_OK);
		cr_assert_eq(i, 1u, "empty: only the send can happen");
		cr_assert_eq(y, UNSET);
		x = 42;
		i = 2;
		cr_assert_eq(conc_select(k, 2, flags, &i), CONC_OK);
		cr_assert_eq(i, 0u, "full: only the receive can happen");
		cr_assert_eq(y, 41u);
		cr_assert_eq(conc_chan_len(c), 0u);
		free_chan(c);

		c = new_chan(0, 8);
		y = UNSET;
		struct conc_select_case r[2] = {conc_select_send(c, &x), conc_select_recv(c, &y)};
		cr_assert_eq(conc_select_try(r, 2, flags, &i), CONC_WOULDBLOCK);
		cr_assert_eq(i, 2u);
		struct conc_deadline d = conc_deadline_in_ms(5);
		cr_assert_eq(conc_select_until(r, 2, flags, d, NULL, &i), CONC_TIMEDOUT, "paired with itself?");
		cr_assert_eq(i, 2u);
		cr_assert_geq(conc_now_ns(), d.ns);
		cr_assert_eq(y, UNSET);
		assert_idle(c);

		struct op p;
		op_recv(&p, c, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, false, 1);
		cr_assert_eq(conc_select(r, 2, flags, &i), CONC_OK);
		cr_assert_eq(i, 0u);
		op_join(&p);
		cr_assert_eq(p.buf[0], x);
		op_send(&p, c, 77, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, true, 1);
		cr_assert_eq(conc_select(r, 2, flags, &i), CONC_OK);
		cr_assert_eq(i, 1u);
		cr_assert_eq(y, 77u);
		op_join(&p);
		cr_assert_eq(p.result, CONC_OK);
		assert_idle(c);
		free_chan(c);
	}
}

/*
 * Two receive cases on the same channel (Go allows a channel in several
 * cases): exactly one of them happens per select and only its buffer is
 * written, both get picked over many trials, and on a rendezvous channel a
 * select parked with both cases takes exactly one element from a sender.
 */
Test(select, duplicate_recv_cases_take_one_element, .timeout = 120)
{
	watchdog("duplicate_recv_cases_take_one_element");
	struct conc_chan *c = new_chan(4, 8);
	size_t hits[2] = {0, 0};
	for (uint64_t t = 0; t < 1000; t++) {
		uint64_t b[2] = {UNSET, UNSET};
		struct conc_select_case k[2] = {conc_select_recv(c, &b[0]), conc_select_recv(c, &b[1])};
		put(c, t);
		put(c, t + 10000);
		size_t i = 2;
		cr_assert_eq(conc_select(k, 2, 0, &i), CONC_OK);
		cr_assert_lt(i, 2u);
		cr_assert_eq(b[i], t);
		cr_assert_eq(b[1 - i], UNSET, "two cases happened");
		hits[i]++;
		expect(c, t + 10000);
	}
	/* A fair choice misses a case in 1000 trials with probability 2^-999. */
	cr_assert(hits[0] > 0 && hits[1] > 0, "one duplicate case is never chosen: %zu / %zu", hits[0], hits[1]);
	free_chan(c);

	c = new_chan(0, 8);
	for (int t = 0; t < 20; t++) {
		struct op s;
		op_init(&s);
		sel_recv(&s, 0, c);
		sel_recv(&s, 1, c);
		op_select(&s, 2, t % 2 ? CONC_SELECT_BIASED : 0, conc_deadline_forever(), NULL);
		conc_test_wait_chan_parked(c, false, 2);
		uint64_t v = 500 + (uint64_t)t;
		cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
		op_join(&s);
		cr_assert_eq(s.result, CONC_OK);
		cr_assert_lt(s.chosen, 2u);
		cr_assert_eq(s.buf[s.chosen], v);
		cr_assert_eq(s.buf[1 - s.chosen], UNSET, "two cases happened");
		assert_idle(c);
		cr_assert_eq(conc_chan_try_send(c, &v), CONC_FULL, "a stale registration took an element");
	}
	free_chan(c);
}

/*
 * Go: test/chan/select6.go (issue 2075: a select that fails a case corrupts
 * that channel's queue when it is last in it).  R1 is parked on c1; select
 * S parks on c1 (behind R1) and c2; a send on c2 completes S, which then
 * parks on c1 again with a plain receive.  Two sends on c1 must reach both.
 */
struct s6 {
	struct conc_chan *c1, *c2;
	size_t chosen;
	uint64_t b1, b2, again;
	enum conc_status sel, recv;
	pthread_t t;
};

static void *s6_main(void *arg)
{
	struct s6 *x = arg;
	struct conc_select_case k[2] = {conc_select_recv(x->c1, &x->b1), conc_select_recv(x->c2, &x->b2)};
	x->sel = conc_select(k, 2, 0, &x->chosen);
	x->recv = conc_chan_recv(x->c1, &x->again);
	return NULL;
}

Test(select, failed_case_leaves_the_queue_intact, .timeout = 120)
{
	watchdog("failed_case_leaves_the_queue_intact");
	struct s6 x = {.c1 = new_chan(0, 8), .c2 = new_chan(0, 8), .chosen = 9,
		       .b1 = UNSET, .b2 = UNSET, .again = UNSET, .sel = CONC_INVALID, .recv = CONC_INVALID};
	struct op r1;
	op_recv(&r1, x.c1, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(x.c1, false, 1);
	start(&x.t, s6_main, &x);
	conc_test_wait_chan_parked(x.c1, false, 2);
	conc_test_wait_chan_parked(x.c2, false, 1);
	uint64_t v = 1;
	cr_assert_eq(conc_chan_send(x.c2, &v), CONC_OK);
	conc_test_wait_chan_parked(x.c1, false, 2); /* R1 and S's plain receive */
	v = 2;
	cr_assert_eq(conc_chan_send(x.c1, &v), CONC_OK);
	v = 3;
	cr_assert_eq(conc_chan_send(x.c1, &v), CONC_OK);
	op_join(&r1);
	join(x.t);
	cr_assert_eq(x.sel, CONC_OK);
	cr_assert_eq(x.chosen, 1u);
	cr_assert_eq(x.b2, 1u);
	cr_assert_eq(x.b1, UNSET);
	cr_assert_eq(r1.result, CONC_OK);
	cr_assert_eq(x.recv, CONC_OK);
	cr_assert_eq(r1.buf[0], 2u, "R1 was first in the queue");
	cr_assert_eq(x.again, 3u);
	assert_idle(x.c1);
	assert_idle(x.c2);
	free_chan(x.c1);
	free_chan(x.c2);
}

/*
 * Go: test/chan/select7.go.  Every pairing of a receiver form (plain, a
 * one-case select, a select with a second never-ready rendezvous case) with
 * a sender form (the same three) on a rendezvous channel, with either side
 * parked first: the value goes across and the right case is reported.
 */
Test(select, every_sender_and_receiver_form_pairs, .timeout = 120)
{
	watchdog("every_sender_and_receiver_form_pairs");
	/* Each party's second case has a rendezvous channel of its own, so the
	 * two cannot pair through it. */
	struct conc_chan *c = new_chan(0, 8), *never = new_chan(0, 8), *never2 = new_chan(0, 8);
	for (int rf = 0; rf < 3; rf++)
		for (int sf = 0; sf < 3; sf++)
			for (int recv_first = 0; recv_first < 2; recv_first++) {
				uint64_t val = (uint64_t)(100 * rf + 10 * sf + recv_first);
				int pf = recv_first ? rf : sf; /* the parked party's form */
				struct op p;
				if (pf == 0 && recv_first) {
					op_recv(&p, c, conc_deadline_forever(), NULL);
				} else if (pf == 0) {
					op_send(&p, c, val, conc_deadline_forever(), NULL);
				} else {
					op_init(&p);
					if (recv_first)
						sel_recv(&p, 0, c);
					else
						sel_send(&p, 0, c, val);
					if (recv_first)
						sel_recv(&p, 1, never);
					else
						sel_send(&p, 1, never, 0);
					op_select(&p, (size_t)pf, 0, conc_deadline_forever(), NULL);
				}
				conc_test_wait_chan_parked(c, !recv_first, 1);
				/* The other party, on this thread: its partner waits. */
				int of = recv_first ? sf : rf;
				uint64_t got = UNSET, send = val;
				struct conc_select_case k[2];
				k[0] = recv_first ? conc_select_send(c, &send) : conc_select_recv(c, &got);
				k[1] = recv_first ? conc_select_send(never2, &send) : conc_select_recv(never2, &got);
				size_t i = 2;
				enum conc_status s;
				if (of == 0)
					s = recv_first ? conc_chan_send(c, &send) : conc_chan_recv(c, &got);
				else
					s = conc_select(k, (size_t)of, 0, &i);
				cr_assert_eq(s, CONC_OK, "rf %d sf %d recv_first %d", rf, sf, recv_first);
				if (of)
					cr_assert_eq(i, 0u);
				op_join(&p);
				cr_assert_eq(p.result, CONC_OK);
				if (pf)
					cr_assert_eq(p.chosen, 0u);
				cr_assert_eq(recv_first ? p.buf[0] : got, val, "rf %d sf %d recv_first %d", rf, sf,
					     recv_first);
				assert_idle(c);
				assert_idle(never);
				assert_idle(never2);
			}
	free_chan(c);
	free_chan(never);
	free_chan(never2);
}

/*
 * Go: test/chan/select.go.  Two buffered channels of capacity 1 and a
 * select_try with a send case to each; a case that happened has its channel
 * set to NULL (Go's nil) for the next round.  Exactly two sends happen, then
 * WOULDBLOCK, and each channel holds the value of the round it was sent in.
 */
Test(select, nil_cases_drop_out, .timeout = 120)
{
	watchdog("nil_cases_drop_out");
	struct conc_chan *a = new_chan(1, 8), *b = new_chan(1, 8);
	uint64_t va = 0, vb = 0;
	struct conc_select_case k[2] = {conc_select_send(a, &va), conc_select_send(b, &vb)};
	size_t sent = 0, i = 2;
	uint64_t shift = 0;
	for (;;) {
		va = vb = UINT64_C(1) << shift;
		enum conc_status s = conc_select_try(k, 2, 0, &i);
		if (s == CONC_WOULDBLOCK)
			break;
		cr_assert_eq(s, CONC_OK);
		cr_assert_neq(k[i].chan, NULL, "a nil case happened");
		k[i].chan = NULL;
		sent++;
		shift++;
		cr_assert_leq(sent, 2u);
	}
	cr_assert_eq(i, 2u);
	cr_assert_eq(sent, 2u);
	uint64_t x = 0, y = 0;
	cr_assert_eq(conc_chan_try_recv(a, &x), CONC_OK);
	cr_assert_eq(conc_chan_try_recv(b, &y), CONC_OK);
	cr_assert_eq(x | y, 3u, "values %llu and %llu", (unsigned long long)x, (unsigned long long)y);
	free_chan(a);
	free_chan(b);
}

/* ------------------------------------------------------------- pipelines */

/* One stage of the prime sieve: the generator (prime 0) or a filter.  It
 * waits in selects that also receive from quit, so closing quit ends it. */
struct sieve_stage {
	struct conc_chan *in, *out, *quit;
	uint64_t prime;
	enum conc_status err;
	pthread_t t;
};

/* Send v on out, unless quit is closed first.  false: stop. */
static bool sieve_emit(struct sieve_stage *st, uint64_t v)
{
	uint64_t dummy;
	struct conc_select_case k[2] = {conc_select_send(st->out, &v), conc_select_recv(st->quit, &dummy)};
	size_t i = 2;
	enum conc_status s = conc_select(k, 2, 0, &i);
	if (s == CONC_OK && i == 0)
		return true;
	if (!(s == CONC_CLOSED && i == 1))
		st->err = s == CONC_OK ? CONC_INVALID : s;
	return false;
}

static void *sieve_main(void *arg)
{
	struct sieve_stage *st = arg;
	st->err = CONC_OK;
	if (st->prime == 0) {
		for (uint64_t n = 2;; n++)
			if (!sieve_emit(st, n))
				return NULL;
	}
	for (;;) {
		uint64_t v = UNSET, dummy;
		struct conc_select_case k[2] = {conc_select_recv(st->in, &v), conc_select_recv(st->quit, &dummy)};
		size_t i = 2;
		enum conc_status s = conc_select(k, 2, 0, &i);
		if (s == CONC_CLOSED && i == 1)
			return NULL;
		if (s != CONC_OK || i != 0) {
			st->err = s == CONC_OK ? CONC_INVALID : s;
			return NULL;
		}
		if (v % st->prime && !sieve_emit(st, v))
			return NULL;
	}
}

/*
 * Go: test/chan/sieve1.go.  A generator of 2, 3, 4, ... and one filter
 * thread per prime found, chained by rendezvous channels: the first 50
 * numbers out of the chain are the first 50 primes.  Closing a quit channel
 * that every stage selects on then stops all 50 threads.
 */
Test(select, prime_sieve, .timeout = 120)
{
	watchdog("prime_sieve");
	enum { PRIMES = 50 };
	uint64_t want[PRIMES];
	for (uint64_t n = 2, found = 0; found < PRIMES; n++) {
		bool prime = true;
		for (uint64_t d = 2; d * d <= n; d++)
			prime = prime && n % d != 0;
		if (prime)
			want[found++] = n;
	}
	struct conc_chan *quit = new_chan(0, 1), *chans[PRIMES];
	struct sieve_stage st[PRIMES];
	chans[0] = new_chan(0, 8);
	st[0] = (struct sieve_stage){.out = chans[0], .quit = quit, .prime = 0, .err = CONC_INVALID};
	start(&st[0].t, sieve_main, &st[0]);
	struct conc_chan *ch = chans[0];
	for (size_t i = 0; i < PRIMES; i++) {
		uint64_t p = UNSET;
		cr_assert_eq(conc_chan_recv(ch, &p), CONC_OK);
		cr_assert_eq(p, want[i], "prime %zu: got %llu, expected %llu", i, (unsigned long long)p,
			     (unsigned long long)want[i]);
		if (i + 1 == PRIMES)
			break;
		chans[i + 1] = new_chan(0, 8);
		st[i + 1] = (struct sieve_stage){
			.in = ch, .out = chans[i + 1], .quit = quit, .prime = p, .err = CONC_INVALID};
		start(&st[i + 1].t, sieve_main, &st[i + 1]);
		ch = chans[i + 1];
	}
	cr_assert_eq(conc_chan_close(quit), CONC_OK);
	for (size_t i = 0; i < PRIMES; i++) {
		join(st[i].t);
		cr_assert_eq(st[i].err, CONC_OK, "stage %zu: %s", i, conc_strerror(st[i].err));
	}
	for (size_t i = 0; i < PRIMES; i++) {
		assert_idle(chans[i]);
		free_chan(chans[i]);
	}
	assert_idle(quit);
	free_chan(quit);
}

/* doubleselect: the sender and a mux. */
struct dsel {
	struct conc_chan *c[4], *out;
	size_t n;
	_Atomic(int) muxes_left, errors;
};

static void *dsel_sender_main(void *arg)
{
	struct dsel *x = arg;
	uint64_t v;
	struct conc_select_case k[4];
	for (size_t j = 0; j < 4; j++)
		k[j] = conc_select_send(x->c[j], &v);
	for (size_t i = 0; i < x->n; i++) {
		v = CONC_TEST_ITEM(0, i);
		if (conc_select(k, 4, 0, NULL) != CONC_OK)
			atomic_fetch_add(&x->errors, 1);
	}
	for (size_t j = 0; j < 4; j++)
		if (conc_chan_close(x->c[j]) != CONC_OK)
			atomic_fetch_add(&x->errors, 1);
	return NULL;
}

struct dsel_mux {
	struct dsel *x;
	struct conc_chan *in;
	pthread_t t;
};

static void *dsel_mux_main(void *arg)
{
	struct dsel_mux *m = arg;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_chan_recv(m->in, &v)) == CONC_OK)
		if (conc_chan_send(m->x->out, &v) != CONC_OK)
			atomic_fetch_add(&m->x->errors, 1);
	if (s != CONC_CLOSED)
		atomic_fetch_add(&m->x->errors, 1);
	if (atomic_fetch_sub(&m->x->muxes_left, 1) == 1 && conc_chan_close(m->x->out) != CONC_OK)
		atomic_fetch_add(&m->x->errors, 1);
	return NULL;
}

/*
 * Go: test/chan/doubleselect.go (two cases of one select must never both
 * happen).  A sender selects over sends to four rendezvous channels; four
 * muxes forward what they receive onto one channel; the test receives every
 * value exactly once, and the pipeline shuts down by close.
 */
Test(select, double_select_delivers_each_value_once, .timeout = 120)
{
	watchdog("double_select_delivers_each_value_once");
	struct dsel x;
	memset(&x, 0, sizeof x);
	x.n = SCALED(10000);
	for (size_t j = 0; j < 4; j++)
		x.c[j] = new_chan(0, 8);
	x.out = new_chan(0, 8);
	atomic_init(&x.muxes_left, 4);
	atomic_init(&x.errors, 0);
	struct dsel_mux m[4];
	for (size_t j = 0; j < 4; j++) {
		m[j] = (struct dsel_mux){.x = &x, .in = x.c[j]};
		start(&m[j].t, dsel_mux_main, &m[j]);
	}
	pthread_t sender;
	start(&sender, dsel_sender_main, &x);
	recv_each_once_until_closed(x.out, x.n, "double select");
	join(sender);
	for (size_t j = 0; j < 4; j++)
		join(m[j].t);
	cr_assert_eq(atomic_load(&x.errors), 0);
	for (size_t j = 0; j < 4; j++)
		free_chan(x.c[j]);
	free_chan(x.out);
}

/* One request of the send-select barrier test: a fresh rendezvous channel,
 * a thread that selects {send the answer, receive done}, a receive. */
struct req {
	struct conc_chan *ch, *done;
	uint64_t answer;
	enum conc_status s;
};

static void *req_answer_main(void *arg)
{
	struct req *r = arg;
	uint64_t dummy;
	struct conc_select_case k[2] = {conc_select_send(r->ch, &r->answer), conc_select_recv(r->done, &dummy)};
	size_t i = 2;
	r->s = conc_select(k, 2, 0, &i);
	if (r->s == CONC_OK && i != 0)
		r->s = CONC_INVALID;
	return NULL;
}

struct requester {
	size_t id, n;
	int errors;
	pthread_t t;
};

static void *requester_main(void *arg)
{
	struct requester *q = arg;
	for (size_t i = 0; i < q->n; i++) {
		struct req r = {NULL, NULL, CONC_TEST_ITEM(q->id, i), CONC_INVALID};
		if (conc_chan_new(&r.ch, 0, 8) != CONC_OK || conc_chan_new(&r.done, 0, 1) != CONC_OK) {
			q->errors++;
			return NULL;
		}
		pthread_t t;
		if (pthread_create(&t, NULL, req_answer_main, &r) != 0) {
			q->errors++;
			return NULL;
		}
		uint64_t v = UNSET;
		if (conc_chan_recv(r.ch, &v) != CONC_OK || v != r.answer)
			q->errors++;
		if (pthread_join(t, NULL) != 0 || r.s != CONC_OK)
			q->errors++;
		/* Freed at once: nothing of the select may still touch them. */
		if (conc_chan_free(r.ch) != CONC_OK || conc_chan_free(r.done) != CONC_OK)
			q->errors++;
	}
	return NULL;
}

/*
 * Go: TestChanSendSelectBarrier.  Many short-lived request/answer pairs,
 * each on a fresh rendezvous channel freed right after the answer arrives:
 * the answer is exact, the answering select reports its send case, and
 * (under AddressSanitizer) nothing touches a channel or a select's state
 * after its call returned.
 */
Test(select, send_select_barrier, .timeout = 120)
{
	watchdog("send_select_barrier");
	enum { REQUESTERS = 4 };
	struct requester q[REQUESTERS];
	for (size_t i = 0; i < REQUESTERS; i++) {
		q[i] = (struct requester){.id = i, .n = SCALED(200)};
		start(&q[i].t, requester_main, &q[i]);
	}
	for (size_t i = 0; i < REQUESTERS; i++) {
		join(q[i].t);
		cr_assert_eq(q[i].errors, 0, "requester %zu", i);
	}
}

/* ------------------------------------------------------------ select stress */

struct stress {
	struct conc_chan *c[4];
	size_t n;
	struct conc_test_ledger ledger;
	_Atomic(int) errors;
};

struct stress_worker {
	struct stress *x;
	size_t k;
	pthread_t t;
};

/* Check one received value: sent on channel k, never seen before. */
static void stress_take(struct stress *x, size_t k, uint64_t v)
{
	if (CONC_TEST_PRODUCER(v) / 2 != k || conc_test_ledger_mark(&x->ledger, v) != 0)
		atomic_fetch_add(&x->errors, 1);
}

static void *stress_plain_sender(void *arg)
{
	struct stress_worker *w = arg;
	for (size_t i = 0; i < w->x->n; i++) {
		uint64_t v = CONC_TEST_ITEM(2 * w->k, i);
		if (conc_chan_send(w->x->c[w->k], &v) != CONC_OK)
			atomic_fetch_add(&w->x->errors, 1);
	}
	return NULL;
}

static void *stress_plain_receiver(void *arg)
{
	struct stress_worker *w = arg;
	for (size_t i = 0; i < w->x->n; i++) {
		uint64_t v = UNSET;
		if (conc_chan_recv(w->x->c[w->k], &v) != CONC_OK)
			atomic_fetch_add(&w->x->errors, 1);
		else
			stress_take(w->x, w->k, v);
	}
	return NULL;
}

/* n sends on each channel through one select; a channel's case goes nil
 * once its n are done. */
static void *stress_select_sender(void *arg)
{
	struct stress *x = arg;
	uint64_t v[4];
	size_t sent[4] = {0};
	struct conc_select_case k[4];
	for (size_t j = 0; j < 4; j++)
		k[j] = conc_select_send(x->c[j], &v[j]);
	for (size_t i = 0; i < 4 * x->n; i++) {
		for (size_t j = 0; j < 4; j++)
			v[j] = CONC_TEST_ITEM(2 * j + 1, sent[j]);
		size_t ch = 4;
		if (conc_select(k, 4, 0, &ch) != CONC_OK || ch >= 4) {
			atomic_fetch_add(&x->errors, 1);
			return NULL;
		}
		if (++sent[ch] == x->n)
			k[ch].chan = NULL;
	}
	return NULL;
}

static void *stress_select_receiver(void *arg)
{
	struct stress *x = arg;
	uint64_t v[4];
	size_t got[4] = {0};
	struct conc_select_case k[4];
	for (size_t j = 0; j < 4; j++)
		k[j] = conc_select_recv(x->c[j], &v[j]);
	for (size_t i = 0; i < 4 * x->n; i++) {
		size_t ch = 4;
		if (conc_select(k, 4, 0, &ch) != CONC_OK || ch >= 4) {
			atomic_fetch_add(&x->errors, 1);
			return NULL;
		}
		stress_take(x, ch, v[ch]);
		if (++got[ch] == x->n)
			k[ch].chan = NULL;
	}
	return NULL;
}

/*
 * Go: TestSelectStress.  Channels of capacities 0, 0, 2, 3; on each a plain
 * sender and a plain receiver of n values; one thread sends n values on
 * each through a single select, one receives n from each the same way (a
 * channel's case goes nil once its n are done).  Ten threads on the cores
 * there are: every value arrives exactly once on the channel it was sent
 * on, and nobody is left waiting.
 */
Test(select, select_stress_mixed_capacities, .timeout = 120)
{
	watchdog("select_stress_mixed_capacities");
	static const size_t scaps[4] = {0, 0, 2, 3};
	struct stress x;
	memset(&x, 0, sizeof x);
	x.n = SCALED(4000);
	for (size_t j = 0; j < 4; j++)
		x.c[j] = new_chan(scaps[j], 8);
	conc_test_ledger_init(&x.ledger, 8, x.n);
	atomic_init(&x.errors, 0);
	struct stress_worker s[4], r[4];
	pthread_t ss, sr;
	for (size_t j = 0; j < 4; j++) {
		s[j] = (struct stress_worker){.x = &x, .k = j};
		r[j] = (struct stress_worker){.x = &x, .k = j};
		start(&s[j].t, stress_plain_sender, &s[j]);
		start(&r[j].t, stress_plain_receiver, &r[j]);
	}
	start(&ss, stress_select_sender, &x);
	start(&sr, stress_select_receiver, &x);
	for (size_t j = 0; j < 4; j++) {
		join(s[j].t);
		join(r[j].t);
	}
	join(ss);
	join(sr);
	cr_assert_eq(atomic_load(&x.errors), 0, "a value arrived twice, on the wrong channel, or a call failed");
	cr_assert_eq(conc_test_ledger_missing(&x.ledger), 0u);
	for (size_t j = 0; j < 4; j++) {
		cr_assert_eq(conc_chan_len(x.c[j]), 0u);
		assert_idle(x.c[j]);
		free_chan(x.c[j]);
	}
	conc_test_ledger_free(&x.ledger);
}

/* ------------------------------------------------------------- rendezvous */

/* Element k of size es: a pattern that differs between elements and bytes. */
static void fill(unsigned char *p, size_t es, size_t k)
{
	for (size_t b = 0; b < es; b++)
		p[b] = (unsigned char)(k * 151 + b * 7 + (b >> 8) * 13 + es);
}

/* One side of a rendezvous of arbitrary element size, on its own thread. */
struct xfer {
	struct conc_chan *c, *never;
	bool send, use_select;
	unsigned char *buf;
	size_t chosen;
	enum conc_status result;
	pthread_t t;
};

static void *xfer_main(void *arg)
{
	struct xfer *x = arg;
	if (!x->use_select) {
		x->result = x->send ? conc_chan_send(x->c, x->buf) : conc_chan_recv(x->c, x->buf);
		return NULL;
	}
	struct conc_select_case k[2];
	k[0] = x->send ? conc_select_send(x->never, x->buf) : conc_select_recv(x->never, x->buf);
	k[1] = x->send ? conc_select_send(x->c, x->buf) : conc_select_recv(x->c, x->buf);
	x->result = conc_select(k, 2, 0, &x->chosen);
	return NULL;
}

static void check_rendezvous_size(size_t es)
{
	const size_t guard = 16;
	/* Each side's select has a never-ready rendezvous channel of its own. */
	struct conc_chan *c = new_chan(0, es), *never = new_chan(0, es), *never2 = new_chan(0, es);
	unsigned char *in = malloc(es), *want = malloc(es), *out = malloc(es + guard);
	cr_assert(in && want && out);
	size_t k = 0;
	/* 0: the receiver parks first; 1: the sender does.  The parked side
	 * is plain or a select; the other side is plain or a select. */
	for (int order = 0; order < 2; order++)
		for (int form = 0; form < 4; form++, k++) {
			fill(in, es, k);
			memcpy(want, in, es);
			memset(out, 0xee, es + guard);
			bool parked_sel = form & 1, other_sel = form & 2;
			struct xfer x = {.c = c, .never = never, .send = order == 1, .use_select = parked_sel,
					  .buf = order == 1 ? in : out, .chosen = 9, .result = CONC_INVALID};
			start(&x.t, xfer_main, &x);
			conc_test_wait_chan_parked(c, order == 1, 1);
			struct xfer me = {.c = c, .never = never2, .send = order == 0, .use_select = other_sel,
					   .buf = order == 0 ? in : out, .chosen = 9, .result = CONC_INVALID};
			xfer_main(&me);
			join(x.t);
			cr_assert_eq(x.result, CONC_OK, "esize %zu", es);
			cr_assert_eq(me.result, CONC_OK, "esize %zu", es);
			if (parked_sel)
				cr_assert_eq(x.chosen, 1u);
			if (other_sel)
				cr_assert_eq(me.chosen, 1u);
			cr_assert_arr_eq(out, want, es, "esize %zu order %d form %d: element corrupted", es, order,
					 form);
			cr_assert_arr_eq(in, want, es, "esize %zu: the sender's buffer was changed", es);
			for (size_t b = es; b < es + guard; b++)
				cr_assert_eq(out[b], 0xee, "esize %zu: the receive wrote past the element", es);
			assert_idle(c);
			assert_idle(never);
			assert_idle(never2);
		}
	free(in);
	free(want);
	free(out);
	free_chan(c);
	free_chan(never);
	free_chan(never2);
}

/*
 * Rendezvous hand-over (Go: every unbuffered-channel test relies on it):
 * elements of 1, 8, 24 and 4096 bytes (and odd sizes) go straight from the
 * sender's buffer to the receiver's, exact to the byte, with nothing written
 * past the element and the sender's buffer untouched: receiver or sender
 * parked first, each side a plain call or a select.
 */
Test(select, rendezvous_hands_over_exact_bytes, .timeout = 120)
{
	watchdog("rendezvous_hands_over_exact_bytes");
	static const size_t sizes[] = {1, 8, 24, 4096, 3, 13, 4097};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		check_rendezvous_size(sizes[i]);
}

/*
 * Deadlines on a rendezvous channel (Go: select with time.After, and
 * TestChan's timeouts).  A past deadline with no partner times out at once,
 * for plain calls and selects; with a partner already parked it still
 * succeeds (a past deadline means "try once").  A 20 ms deadline with no
 * partner times out no earlier than the deadline and leaves nothing queued.
 */
Test(select, rendezvous_deadlines, .timeout = 120)
{
	watchdog("rendezvous_deadlines");
	struct conc_chan *c = new_chan(0, 8);
	uint64_t v = 3, out = UNSET;
	size_t i = 0;
	struct conc_select_case k[2] = {conc_select_send(c, &v), conc_select_recv(c, &out)};
	struct conc_deadline past[2] = {conc_deadline_poll(), conc_deadline_in_ns(-1000)};
	for (int j = 0; j < 2; j++) {
		cr_assert_eq(conc_chan_send_until(c, &v, past[j], NULL), CONC_TIMEDOUT);
		cr_assert_eq(conc_chan_recv_until(c, &out, past[j], NULL), CONC_TIMEDOUT);
		cr_assert_eq(conc_select_until(k, 2, 0, past[j], NULL, &i), CONC_TIMEDOUT);
		cr_assert_eq(i, 2u);
		cr_assert_eq(out, UNSET);
		assert_idle(c);
	}

	struct op p;
	op_recv(&p, c, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(c, false, 1);
	cr_assert_eq(conc_chan_send_until(c, &v, conc_deadline_poll(), NULL), CONC_OK, "a receiver was waiting");
	op_join(&p);
	cr_assert_eq(p.buf[0], v);
	op_send(&p, c, 4, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(c, true, 1);
	cr_assert_eq(conc_select_until(k, 2, 0, conc_deadline_poll(), NULL, &i), CONC_OK, "a sender was waiting");
	cr_assert_eq(i, 1u);
	cr_assert_eq(out, 4u);
	op_join(&p);
	cr_assert_eq(p.result, CONC_OK);

	out = UNSET;
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_chan_send_until(c, &v, d, NULL), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns, "send_until returned before its deadline");
	d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_chan_recv_until(c, &out, d, NULL), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns, "recv_until returned before its deadline");
	d = conc_deadline_in_ms(20);
	i = 0;
	cr_assert_eq(conc_select_until(k, 2, 0, d, NULL, &i), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns, "select_until returned before its deadline");
	cr_assert_eq(i, 2u);
	cr_assert_eq(out, UNSET);
	assert_idle(c);
	free_chan(c);
}

/*
 * A far deadline does not stop a rendezvous that happens: a receiver, a
 * sender and a select, each with a 10-minute deadline, complete when their
 * partner arrives.
 */
Test(select, rendezvous_far_deadline_succeeds, .timeout = 120)
{
	watchdog("rendezvous_far_deadline_succeeds");
	struct conc_chan *c = new_chan(0, 8);
	struct conc_deadline far = conc_deadline_in_ms(600000);
	struct op p;
	uint64_t v = 11;
	op_recv(&p, c, far, NULL);
	conc_test_wait_chan_parked(c, false, 1);
	cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
	op_join(&p);
	cr_assert_eq(p.result, CONC_OK);
	cr_assert_eq(p.buf[0], 11u);

	op_send(&p, c, 12, far, NULL);
	conc_test_wait_chan_parked(c, true, 1);
	cr_assert_eq(conc_chan_recv(c, &v), CONC_OK);
	op_join(&p);
	cr_assert_eq(p.result, CONC_OK);
	cr_assert_eq(v, 12u);

	op_init(&p);
	sel_recv(&p, 0, c);
	sel_send(&p, 1, NULL, 0);
	op_select(&p, 2, 0, far, NULL);
	conc_test_wait_chan_parked(c, false, 1);
	v = 13;
	cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
	op_join(&p);
	cr_assert_eq(p.result, CONC_OK);
	cr_assert_eq(p.chosen, 0u);
	cr_assert_eq(p.buf[0], 13u);
	assert_idle(c);
	free_chan(c);
}

/*
 * Cancellation (Go: select on ctx.Done()).  A plain receiver and a plain
 * sender parked on rendezvous channels, a select parked on both of them,
 * and a select with no cases at all, share one context (the last through a
 * child): one cancel from this thread wakes all four with CONC_CANCELED, a
 * select with *chosen = n; nothing was handed over, nothing stays queued
 * and the contexts can be destroyed.
 */
Test(select, cancel_wakes_blocked_rendezvous_calls_and_selects, .timeout = 120)
{
	watchdog("cancel_wakes_blocked_rendezvous_calls_and_selects");
	struct conc_ctx ctx, child;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_init(&child, &ctx, conc_deadline_forever()), CONC_OK);
	struct conc_chan *rc = new_chan(0, 8), *sc = new_chan(0, 8);
	struct op r, s, sel, empty;
	op_recv(&r, rc, conc_deadline_forever(), &ctx);
	op_send(&s, sc, 5, conc_deadline_forever(), &ctx);
	op_init(&sel);
	sel_recv(&sel, 0, rc);
	sel_send(&sel, 1, sc, 6);
	op_select(&sel, 2, 0, conc_deadline_forever(), &ctx);
	op_init(&empty);
	op_select(&empty, 0, 0, conc_deadline_forever(), &child);
	conc_test_wait_chan_parked(rc, false, 2);
	conc_test_wait_chan_parked(sc, true, 2);
	conc_test_wait_parked(&child.waiters, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	op_join(&r);
	op_join(&s);
	op_join(&sel);
	op_join(&empty);
	cr_assert_eq(r.result, CONC_CANCELED, "%s", conc_strerror(r.result));
	cr_assert_eq(r.buf[0], UNSET);
	cr_assert_eq(s.result, CONC_CANCELED, "%s", conc_strerror(s.result));
	cr_assert_eq(sel.result, CONC_CANCELED, "%s", conc_strerror(sel.result));
	cr_assert_eq(sel.chosen, 2u);
	cr_assert_eq(sel.buf[0], UNSET);
	cr_assert_eq(empty.result, CONC_CANCELED, "%s", conc_strerror(empty.result));
	cr_assert_eq(empty.chosen, 0u);
	assert_idle(rc);
	assert_idle(sc);
	uint64_t v = 1;
	cr_assert_eq(conc_chan_try_send(rc, &v), CONC_FULL, "a canceled receiver is still waiting");
	cr_assert_eq(conc_chan_try_recv(sc, &v), CONC_EMPTY, "a canceled sender is still waiting");
	cr_assert_eq(conc_ctx_destroy(&child), CONC_OK, "a waiter is still registered on the child");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK, "a waiter is still registered on the context");
	free_chan(rc);
	free_chan(sc);
}

/*
 * A context that is already done fails the call before it tries, even when
 * the call could complete: a send to a parked receiver, a receive from a
 * parked sender, a select with a ready buffered case.  A canceled context
 * gives CONC_CANCELED, an expired one CONC_TIMEDOUT; the partners stay
 * parked and the element stays where it was.  A context whose deadline
 * passes while a rendezvous call waits ends it with CONC_TIMEDOUT.
 */
Test(select, done_context_fails_before_trying, .timeout = 120)
{
	watchdog("done_context_fails_before_trying");
	struct conc_ctx canceled, expired;
	cr_assert_eq(conc_ctx_init_root(&canceled), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&canceled, 0), CONC_OK);
	cr_assert_eq(conc_ctx_init(&expired, NULL, conc_deadline_poll()), CONC_OK);
	struct conc_ctx *ctxs[2] = {&canceled, &expired};
	const enum conc_status want[2] = {CONC_CANCELED, CONC_TIMEDOUT};
	struct conc_chan *c = new_chan(0, 8), *b = new_chan(2, 8);
	put(b, 50);
	struct op r, s;
	op_recv(&r, c, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(c, false, 1);
	uint64_t v = 9, out = UNSET;
	for (int j = 0; j < 2; j++) {
		size_t i = 0;
		struct conc_select_case k[2] = {conc_select_recv(b, &out), conc_select_send(c, &v)};
		cr_assert_eq(conc_chan_send_until(c, &v, conc_deadline_forever(), ctxs[j]), want[j]);
		cr_assert_eq(conc_select_until(k, 2, 0, conc_deadline_forever(), ctxs[j], &i), want[j]);
		cr_assert_eq(i, 2u);
		cr_assert_eq(out, UNSET);
	}
	cr_assert_eq(atomic_load(&c->recvq.count), 1u, "a failed call handed its element to the receiver");
	cr_assert_eq(conc_chan_len(b), 1u);
	v = 10;
	cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
	op_join(&r);
	cr_assert_eq(r.buf[0], 10u);

	op_send(&s, c, 20, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(c, true, 1);
	for (int j = 0; j < 2; j++)
		cr_assert_eq(conc_chan_recv_until(c, &out, conc_deadline_forever(), ctxs[j]), want[j]);
	cr_assert_eq(out, UNSET);
	cr_assert_eq(conc_chan_recv(c, &out), CONC_OK);
	op_join(&s);
	cr_assert_eq(out, 20u);

	struct conc_ctx soon;
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_ctx_init(&soon, NULL, d), CONC_OK);
	cr_assert_eq(conc_chan_recv_until(c, &out, conc_deadline_forever(), &soon), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);
	struct conc_select_case k[1] = {conc_select_send(c, &v)};
	cr_assert_eq(conc_select_until(k, 1, 0, conc_deadline_forever(), &soon, NULL), CONC_TIMEDOUT);
	assert_idle(c);
	expect(b, 50);
	cr_assert_eq(conc_ctx_destroy(&soon), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&canceled), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&expired), CONC_OK);
	free_chan(c);
	free_chan(b);
}

/* ------------------------------------------------------------------ timers */

/*
 * Go: select on time.After alone.  A select whose only case is a timer
 * returns CONC_OK with that case's index, no earlier than the timer's
 * deadline; conc_select_try reports WOULDBLOCK before the timer is due and
 * OK once it has passed.  A timer beside an idle channel fires the same way.
 */
Test(select, timer_only_select_fires_after_its_deadline, .timeout = 120)
{
	watchdog("timer_only_select_fires_after_its_deadline");
	struct conc_deadline d = conc_deadline_in_ms(20);
	struct conc_select_case k[1] = {conc_select_timer(d)};
	size_t i = 5;
	cr_assert_eq(conc_select(k, 1, 0, &i), CONC_OK);
	cr_assert_eq(i, 0u);
	cr_assert_geq(conc_now_ns(), d.ns, "the timer fired before its deadline");
	i = 5;
	cr_assert_eq(conc_select_try(k, 1, 0, &i), CONC_OK, "a passed timer is ready");
	cr_assert_eq(i, 0u);

	struct conc_select_case later[1] = {conc_select_timer(conc_deadline_in_ms(600000))};
	cr_assert_eq(conc_select_try(later, 1, 0, &i), CONC_WOULDBLOCK);
	cr_assert_eq(i, 1u);

	struct conc_chan *c = new_chan(2, 8), *r = new_chan(0, 8);
	uint64_t out = UNSET;
	d = conc_deadline_in_ms(20);
	struct conc_select_case mixed[3] = {conc_select_recv(c, &out), conc_select_recv(r, &out), conc_select_timer(d)};
	cr_assert_eq(conc_select_until(mixed, 3, 0, conc_deadline_in_ms(600000), NULL, &i), CONC_OK);
	cr_assert_eq(i, 2u);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_eq(out, UNSET);
	assert_idle(c);
	assert_idle(r);
	free_chan(c);
	free_chan(r);
}

/*
 * Go: select { case v := <-c: ... case <-time.After(...): }.  With a
 * sender parked on the rendezvous channel before the select, the receive
 * is taken, not the (far) timer; with the select parked first, a sender
 * that arrives completes the receive too.
 */
Test(select, ready_recv_wins_over_a_pending_timer, .timeout = 120)
{
	watchdog("ready_recv_wins_over_a_pending_timer");
	struct conc_chan *c = new_chan(0, 8);
	struct op s;
	op_send(&s, c, 61, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(c, true, 1);
	uint64_t out = UNSET;
	struct conc_select_case k[2] = {conc_select_recv(c, &out), conc_select_timer(conc_deadline_in_ms(600000))};
	size_t i = 2;
	cr_assert_eq(conc_select(k, 2, 0, &i), CONC_OK);
	cr_assert_eq(i, 0u);
	cr_assert_eq(out, 61u);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);

	struct op sel;
	op_init(&sel);
	sel.cases[0] = conc_select_timer(conc_deadline_in_ms(600000));
	sel_recv(&sel, 1, c);
	op_select(&sel, 2, 0, conc_deadline_forever(), NULL);
	conc_test_wait_chan_parked(c, false, 1);
	uint64_t v = 62;
	cr_assert_eq(conc_chan_send(c, &v), CONC_OK);
	op_join(&sel);
	cr_assert_eq(sel.result, CONC_OK);
	cr_assert_eq(sel.chosen, 1u);
	cr_assert_eq(sel.buf[1], 62u);
	assert_idle(c);
	free_chan(c);
}

/*
 * Several timers in one select: the earliest fires first.  A 1 ms timer
 * beside one that never fires and one 10 minutes away is the one taken,
 * wherever it sits in the array and in both modes, and not before its
 * deadline.
 */
Test(select, earliest_timer_fires_first, .timeout = 120)
{
	watchdog("earliest_timer_fires_first");
	for (size_t pos = 0; pos < 3; pos++)
		for (unsigned flags = 0; flags <= CONC_SELECT_BIASED; flags++) {
			struct conc_deadline soon = conc_deadline_in_ms(1);
			struct conc_select_case k[3];
			k[pos] = conc_select_timer(soon);
			k[(pos + 1) % 3] = conc_select_timer(conc_deadline_forever());
			k[(pos + 2) % 3] = conc_select_timer(conc_deadline_in_ms(600000));
			size_t i = 3;
			cr_assert_eq(conc_select(k, 3, flags, &i), CONC_OK);
			cr_assert_eq(i, pos, "the wrong timer fired");
			cr_assert_geq(conc_now_ns(), soon.ns);
		}
}

/* --------------------------------------------------------------- bad input */

/*
 * Every CONC_INVALID of the select contract: NULL cases with n > 0, n over
 * CONC_SELECT_MAX_CASES, a bad op, a channel case with a NULL buffer, a
 * destroyed channel, and a blocking select that nothing could ever end (no
 * cases, only nil channels, only a timer that never fires).  *chosen is n
 * and may be NULL; an invalid case anywhere stops the call before a ready
 * case happens.  A NULL buffer is fine on a nil channel.
 */
Test(select, bad_input_is_invalid, .timeout = 120)
{
	watchdog("bad_input_is_invalid");
	struct conc_chan *c = new_chan(2, 8);
	put(c, 1);
	uint64_t out = UNSET;
	size_t i = 0;
	struct conc_select_case ok[1] = {conc_select_recv(c, &out)};

	cr_assert_eq(conc_select(NULL, 1, 0, &i), CONC_INVALID);
	cr_assert_eq(i, 1u);
	cr_assert_eq(conc_select_try(NULL, 2, 0, &i), CONC_INVALID);
	cr_assert_eq(i, 2u);
	cr_assert_eq(conc_select_until(NULL, 3, 0, conc_deadline_in_ms(5), NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_select(ok, CONC_SELECT_MAX_CASES + 1, 0, &i), CONC_INVALID);
	cr_assert_eq(i, CONC_SELECT_MAX_CASES + 1);
	cr_assert_eq(conc_select_try(ok, SIZE_MAX, 0, NULL), CONC_INVALID);

	struct conc_select_case bad[2] = {conc_select_recv(c, &out), conc_select_recv(c, &out)};
	int ops[] = {0, 4, -1, 99};
	for (size_t j = 0; j < sizeof ops / sizeof ops[0]; j++) {
		bad[1].op = ops[j];
		cr_assert_eq(conc_select(bad, 2, 0, &i), CONC_INVALID, "op %d", ops[j]);
		cr_assert_eq(i, 2u);
		cr_assert_eq(conc_select_try(bad, 2, CONC_SELECT_BIASED, NULL), CONC_INVALID);
	}
	bad[1] = conc_select_send(c, NULL);
	cr_assert_eq(conc_select(bad, 2, 0, &i), CONC_INVALID, "send case with a NULL element");
	bad[1] = conc_select_recv(c, NULL);
	cr_assert_eq(conc_select(bad, 2, 0, &i), CONC_INVALID, "receive case with a NULL buffer");
	cr_assert_eq(conc_select_until(bad, 2, 0, conc_deadline_poll(), NULL, &i), CONC_INVALID);
	cr_assert_eq(out, UNSET, "the valid case happened");
	cr_assert_eq(conc_chan_len(c), 1u);

	static _Alignas(64) unsigned char ring[CONC_CHAN_BUF_SIZE(2, 8)];
	struct conc_chan dead, dead0;
	cr_assert_eq(conc_chan_init(&dead, 2, 8, ring, sizeof ring), CONC_OK);
	cr_assert_eq(conc_chan_destroy(&dead), CONC_OK);
	cr_assert_eq(conc_chan_init(&dead0, 0, 8, NULL, 0), CONC_OK);
	cr_assert_eq(conc_chan_destroy(&dead0), CONC_OK);
	struct conc_select_case gone[2] = {conc_select_recv(c, &out), conc_select_recv(&dead, &out)};
	cr_assert_eq(conc_select(gone, 2, 0, &i), CONC_INVALID, "destroyed channel");
	cr_assert_eq(i, 2u);
	gone[1] = conc_select_send(&dead0, &out);
	cr_assert_eq(conc_select_try(gone, 2, 0, &i), CONC_INVALID, "destroyed rendezvous channel");
	cr_assert_eq(out, UNSET);

	/* Nothing could ever end these. */
	cr_assert_eq(conc_select(NULL, 0, 0, &i), CONC_INVALID, "no cases");
	cr_assert_eq(i, 0u);
	cr_assert_eq(conc_select_until(NULL, 0, 0, conc_deadline_forever(), NULL, NULL), CONC_INVALID);
	struct conc_select_case nils[3] = {
		conc_select_recv(NULL, &out),
		conc_select_send(NULL, NULL),
		conc_select_timer(conc_deadline_forever()),
	};
	cr_assert_eq(conc_select(nils, 3, 0, &i), CONC_INVALID, "only never-ready cases");
	cr_assert_eq(i, 3u);
	cr_assert_eq(conc_select(nils, 2, CONC_SELECT_BIASED, &i), CONC_INVALID);
	cr_assert_eq(i, 2u);

	/* NULL chosen with a case that happens. */
	cr_assert_eq(conc_select(ok, 1, 0, NULL), CONC_OK);
	cr_assert_eq(out, 1u);
	free_chan(c);
}

/*
 * Selects that can only end by their deadline (Go: select {} with a
 * timeout, and a select over nil channels): zero cases with a deadline time
 * out no earlier than it; conc_select_try with zero cases says WOULDBLOCK
 * with *chosen = 0; cases that are all nil channels time out with
 * *chosen = n, and with conc_select_try say WOULDBLOCK.
 */
Test(select, empty_and_never_ready_selects_end_by_deadline, .timeout = 120)
{
	watchdog("empty_and_never_ready_selects_end_by_deadline");
	size_t i = 7;
	struct conc_deadline d = conc_deadline_in_ms(10);
	cr_assert_eq(conc_select_until(NULL, 0, 0, d, NULL, &i), CONC_TIMEDOUT);
	cr_assert_eq(i, 0u);
	cr_assert_geq(conc_now_ns(), d.ns);
	i = 7;
	cr_assert_eq(conc_select_try(NULL, 0, 0, &i), CONC_WOULDBLOCK);
	cr_assert_eq(i, 0u);
	cr_assert_eq(conc_select_try(NULL, 0, 0, NULL), CONC_WOULDBLOCK);

	uint64_t out = UNSET, v = 1;
	struct conc_select_case nils[3] = {
		conc_select_recv(NULL, &out),
		conc_select_send(NULL, &v),
		conc_select_recv(NULL, NULL),
	};
	d = conc_deadline_in_ms(10);
	cr_assert_eq(conc_select_until(nils, 3, 0, d, NULL, &i), CONC_TIMEDOUT);
	cr_assert_eq(i, 3u);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_eq(conc_select_until(nils, 3, CONC_SELECT_BIASED, conc_deadline_poll(), NULL, &i), CONC_TIMEDOUT);
	cr_assert_eq(conc_select_try(nils, 3, 0, &i), CONC_WOULDBLOCK);
	cr_assert_eq(i, 3u);
	cr_assert_eq(out, UNSET);
}

/* ---------------------------------------------------------- passing wakes */

/*
 * A select woken through one channel that takes another case must pass the
 * wake-up on (no Go counterpart: Go's select locks every channel at once and
 * cannot be woken for an element it does not take).
 *
 * Receive side.  Channels A and B (capacity 1), select S biased {recv B,
 * recv A}, plain receiver R.  A stand-in waiter of this thread is queued on
 * B before S, so that B's element wakes the stand-in and not S.  Queues:
 * B: [stand-in, S], A: [S, R], S and R asleep.  One element into B (wakes
 * the stand-in), then one into A (wakes S, first on A).  S retries in array
 * order and takes B's element, so A's element is R's: by the time S's
 * select returns, it must have passed A's wake-up to R, which is then no
 * longer queued.  Without the pass-on R would stay parked while A holds an
 * element.
 *
 * Send side: the mirror image, with A and B full, S biased {send B, send A}
 * and R a plain sender.
 */
static void check_pass_on(bool send)
{
	struct conc_chan *a = new_chan(1, 8), *b = new_chan(1, 8);
	struct conc_waitq *aq = send ? &a->sendq : &a->recvq, *bq = send ? &b->sendq : &b->recvq;
	if (send) {
		put(a, 1);
		put(b, 2);
	}
	struct conc_waiter stand_in;
	conc_waiter_init(&stand_in, 0);
	conc_waitq_enqueue(bq, &stand_in);
	struct op s, r;
	op_init(&s);
	if (send) {
		sel_send(&s, 0, b, 20);
		sel_send(&s, 1, a, 10);
	} else {
		sel_recv(&s, 0, b);
		sel_recv(&s, 1, a);
	}
	op_select(&s, 2, CONC_SELECT_BIASED, conc_deadline_forever(), NULL);
	conc_test_wait_parked(aq, 1);
	conc_test_wait_parked(bq, 1);
	if (send)
		op_send(&r, a, 11, conc_deadline_forever(), NULL);
	else
		op_recv(&r, a, conc_deadline_forever(), NULL);
	conc_test_wait_parked(aq, 2);

	uint64_t v = UNSET;
	if (send)
		expect(b, 2); /* room in B: wakes the stand-in */
	else
		put(b, 200);
	cr_assert(conc_parker_park_until(conc_parker_self(), conc_deadline_poll()),
		  "B's wake-up did not reach the stand-in");
	cr_assert(conc_waitq_remove(bq, &stand_in));
	cr_assert_eq(atomic_load(&s.finished), 0);
	if (send)
		expect(a, 1); /* room in A: wakes S */
	else
		put(a, 100);
	op_join(&s);
	cr_assert_eq(s.result, CONC_OK);
	cr_assert_eq(s.chosen, 0u, "S did not take B's %s", send ? "room" : "element");
	cr_assert_eq(atomic_load(&aq->count), 0u,
		     "S took B and returned, but R is still queued on A: the wake-up was swallowed");
	op_join(&r);
	cr_assert_eq(r.result, CONC_OK);
	if (send) {
		expect(b, 20);
		expect(a, 11);
	} else {
		cr_assert_eq(s.buf[0], 200u);
		cr_assert_eq(r.buf[0], 100u);
	}
	cr_assert_eq(conc_chan_try_recv(a, &v), CONC_EMPTY);
	cr_assert_eq(conc_chan_try_recv(b, &v), CONC_EMPTY);
	assert_idle(a);
	assert_idle(b);
	free_chan(a);
	free_chan(b);
}

Test(select, woken_select_taking_another_case_passes_the_wake_on, .timeout = 120)
{
	watchdog("woken_select_taking_another_case_passes_the_wake_on");
	check_pass_on(false);
	check_pass_on(true);
}
