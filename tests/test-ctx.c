/* SPDX-License-Identifier: MIT */
/*
 * Cancellation contexts: the tree, causes, deadlines, destroy, waiting, and
 * cancellation of threads blocked in channel calls with a descendant context.
 *
 * Worker threads never assert (Criterion's asserts belong to the test's own
 * thread): they record what they saw, and the test asserts after joining.
 */
#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"

#ifndef CONC_STRESS_SCALE
#define CONC_STRESS_SCALE 1
#endif

#define SEC INT64_C(1000000000)

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	cr_assert_eq(pthread_create(t, NULL, fn, arg), 0, "pthread_create");
}

static void join(pthread_t t)
{
	cr_assert_eq(pthread_join(t, NULL), 0, "pthread_join");
}

static void init_child(struct conc_ctx *c, struct conc_ctx *parent)
{
	cr_assert_eq(conc_ctx_init(c, parent, conc_deadline_forever()), CONC_OK);
}

static void destroy_ok(struct conc_ctx *c)
{
	cr_assert_eq(conc_ctx_destroy(c), CONC_OK);
}

/* Wait (on the clock, not on another thread) until d has passed. */
static void wait_past(struct conc_deadline d)
{
	while (!conc_deadline_expired(d))
		(void)conc_parker_park_until(conc_parker_self(), d);
}

/* ------------------------------------------------------------- tree, cause */

Test(ctx, init_root_and_child, .timeout = 120)
{
	struct conc_ctx root, child;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	cr_assert_eq(conc_ctx_err(&root), CONC_OK);
	cr_assert_eq(conc_ctx_cause(&root), CONC_OK);
	cr_assert(conc_deadline_is_forever(conc_ctx_deadline(&root)));

	cr_assert_eq(conc_ctx_init(&child, &root, conc_deadline_forever()), CONC_OK);
	cr_assert_eq(conc_ctx_err(&child), CONC_OK);
	cr_assert_eq(conc_ctx_cause(&child), CONC_OK);
	cr_assert(conc_deadline_is_forever(conc_ctx_deadline(&child)));

	cr_assert_eq(conc_ctx_destroy(&root), CONC_BUSY, "root still has a child");
	destroy_ok(&child);
	destroy_ok(&root);
}

Test(ctx, null_and_self_parent_are_invalid, .timeout = 120)
{
	struct conc_ctx c;
	cr_assert_eq(conc_ctx_init(NULL, NULL, conc_deadline_forever()), CONC_INVALID);
	cr_assert_eq(conc_ctx_init_root(NULL), CONC_INVALID);
	cr_assert_eq(conc_ctx_init(&c, &c, conc_deadline_forever()), CONC_INVALID, "its own parent");
	cr_assert_eq(conc_ctx_err(NULL), CONC_INVALID);
	cr_assert_eq(conc_ctx_cause(NULL), CONC_INVALID);
	cr_assert_eq(conc_ctx_cancel(NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_ctx_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_ctx_wait_until(NULL, conc_deadline_poll()), CONC_INVALID);
	cr_assert(conc_deadline_is_forever(conc_ctx_deadline(NULL)));
}

Test(ctx, cancel_default_cause_is_canceled, .timeout = 120)
{
	struct conc_ctx c;
	cr_assert_eq(conc_ctx_init_root(&c), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&c, 0), CONC_OK);
	cr_assert_eq(conc_ctx_err(&c), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(&c), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cancel(&c, 42), CONC_CANCELED, "already done: reports why");
	cr_assert_eq(conc_ctx_cause(&c), CONC_CANCELED, "a second cancel changes nothing");
	destroy_ok(&c);
}

Test(ctx, cancel_cause_is_inherited_by_descendants, .timeout = 120)
{
	struct conc_ctx root, a, b, c, sib, sibchild;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	init_child(&a, &root);
	init_child(&b, &a);
	init_child(&c, &b);
	init_child(&sib, &root);
	init_child(&sibchild, &sib);

	cr_assert_eq(conc_ctx_cancel(&a, 4242), CONC_OK);
	struct conc_ctx *sub[] = {&a, &b, &c};
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(conc_ctx_err(sub[i]), CONC_CANCELED, "level %d", i + 1);
		cr_assert_eq(conc_ctx_cause(sub[i]), 4242, "level %d", i + 1);
	}
	cr_assert_eq(conc_ctx_err(&root), CONC_OK, "cancel does not go up");
	cr_assert_eq(conc_ctx_err(&sib), CONC_OK, "nor sideways");
	cr_assert_eq(conc_ctx_err(&sibchild), CONC_OK);

	/* A descendant that is done already keeps its cause. */
	cr_assert_eq(conc_ctx_cancel(&b, 9), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cancel(&root, 7), CONC_OK);
	cr_assert_eq(conc_ctx_cause(&root), 7);
	cr_assert_eq(conc_ctx_cause(&sib), 7);
	cr_assert_eq(conc_ctx_cause(&sibchild), 7);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(conc_ctx_cause(sub[i]), 4242, "level %d changed cause", i + 1);

	destroy_ok(&c);
	destroy_ok(&b);
	destroy_ok(&a);
	destroy_ok(&sibchild);
	destroy_ok(&sib);
	destroy_ok(&root);
}

Test(ctx, err_and_cause_are_stable_once_done, .timeout = 120)
{
	struct conc_ctx c;
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_ctx_init(&c, NULL, d), CONC_OK);
	enum conc_status first = conc_ctx_cancel(&c, 31);
	/* On a loaded machine the 20 ms may already be over. */
	cr_assert(first == CONC_OK || first == CONC_TIMEDOUT, "%s", conc_strerror(first));
	enum conc_status err = conc_ctx_err(&c);
	int cause = conc_ctx_cause(&c);
	cr_assert(err == CONC_CANCELED || err == CONC_TIMEDOUT);
	cr_assert_eq(cause, err == CONC_CANCELED ? 31 : CONC_TIMEDOUT);
	wait_past(d);
	for (int i = 0; i < 1000; i++) {
		cr_assert_eq(conc_ctx_err(&c), err, "the deadline passing after cancel changed err");
		cr_assert_eq(conc_ctx_cause(&c), cause);
	}
	cr_assert_eq(conc_ctx_cancel(&c, 5), err);
	cr_assert_eq(conc_ctx_cause(&c), cause);
	destroy_ok(&c);
}

/* ---------------------------------------------------------------- deadlines */

Test(ctx, deadline_is_the_earlier_of_parent_and_own, .timeout = 120)
{
	int64_t now = conc_now_ns();
	struct conc_deadline hour = conc_deadline_at_ns(now + 3600 * SEC);
	struct conc_deadline half = conc_deadline_at_ns(now + 1800 * SEC);
	struct conc_deadline two = conc_deadline_at_ns(now + 7200 * SEC);
	struct conc_ctx root, p, later, earlier, none, grand;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	cr_assert_eq(conc_ctx_init(&p, &root, hour), CONC_OK);
	cr_assert_eq(conc_ctx_deadline(&p).ns, hour.ns);
	cr_assert_eq(conc_ctx_init(&later, &p, two), CONC_OK);
	cr_assert_eq(conc_ctx_deadline(&later).ns, hour.ns, "the parent's is earlier");
	cr_assert_eq(conc_ctx_init(&earlier, &p, half), CONC_OK);
	cr_assert_eq(conc_ctx_deadline(&earlier).ns, half.ns, "its own is earlier");
	cr_assert_eq(conc_ctx_init(&none, &p, conc_deadline_forever()), CONC_OK);
	cr_assert_eq(conc_ctx_deadline(&none).ns, hour.ns, "no own deadline: the parent's");
	cr_assert_eq(conc_ctx_init(&grand, &none, two), CONC_OK);
	cr_assert_eq(conc_ctx_deadline(&grand).ns, hour.ns, "inherited over two levels");
	cr_assert_eq(conc_ctx_err(&grand), CONC_OK);
	destroy_ok(&grand);
	destroy_ok(&none);
	destroy_ok(&earlier);
	destroy_ok(&later);
	destroy_ok(&p);
	destroy_ok(&root);
}

Test(ctx, past_deadline_reports_timedout, .timeout = 120)
{
	struct conc_ctx root, c, child;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	cr_assert_eq(conc_ctx_init(&c, &root, conc_deadline_at_ns(conc_now_ns() - 1)), CONC_OK);
	cr_assert_eq(conc_ctx_err(&c), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cause(&c), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_err(&root), CONC_OK, "a child's deadline is not the parent's");
	init_child(&child, &c);
	cr_assert_eq(conc_ctx_err(&child), CONC_TIMEDOUT, "the child inherits the passed deadline");

	cr_assert_eq(conc_ctx_cancel(&c, 17), CONC_TIMEDOUT, "already done: nothing changes");
	cr_assert_eq(conc_ctx_err(&c), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cause(&c), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cancel(&root, 18), CONC_OK);
	cr_assert_eq(conc_ctx_err(&c), CONC_TIMEDOUT, "an ancestor's cancel does not change it either");
	cr_assert_eq(conc_ctx_err(&child), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cause(&child), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cause(&root), 18);
	destroy_ok(&child);
	destroy_ok(&c);
	destroy_ok(&root);
}

/* The deadline has passed but nobody asked conc_ctx_err yet: the context is
 * done all the same (ctx.h: "done when ... its deadline passes"), so cancel
 * must say it was done already, not that it canceled it. */
Test(ctx, cancel_after_unobserved_deadline_reports_timedout, .timeout = 120)
{
	struct conc_ctx c;
	cr_assert_eq(conc_ctx_init(&c, NULL, conc_deadline_at_ns(conc_now_ns() - 1)), CONC_OK);
	enum conc_status s = conc_ctx_cancel(&c, 17);
	cr_assert_eq(conc_ctx_err(&c), CONC_TIMEDOUT, "the passed deadline wins over cancel");
	cr_assert_eq(conc_ctx_cause(&c), CONC_TIMEDOUT);
	cr_assert_eq(s, CONC_TIMEDOUT, "cancel of a context whose deadline passed returned %s",
		     conc_strerror(s));
	destroy_ok(&c);
}

Test(ctx, near_deadline_times_out, .timeout = 120)
{
	struct conc_ctx root, c, child;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	int64_t t0 = conc_now_ns();
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_ctx_init(&c, &root, d), CONC_OK);
	init_child(&child, &c);
	cr_assert_eq(conc_ctx_wait_until(&child, conc_deadline_forever()), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns, "woke before the context's deadline");
	cr_assert_geq(conc_now_ns() - t0, 20 * INT64_C(1000000));
	cr_assert_eq(conc_ctx_err(&c), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cause(&child), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_err(&root), CONC_OK);
	destroy_ok(&child);
	destroy_ok(&c);
	destroy_ok(&root);
}

Test(ctx, wait_until_own_deadline, .timeout = 120)
{
	struct conc_ctx c;
	cr_assert_eq(conc_ctx_init_root(&c), CONC_OK);
	cr_assert_eq(conc_ctx_wait_until(&c, conc_deadline_poll()), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_wait_until(&c, conc_deadline_at_ns(conc_now_ns() - 1)), CONC_TIMEDOUT);
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_eq(conc_ctx_wait_until(&c, d), CONC_TIMEDOUT);
	cr_assert_geq(conc_now_ns(), d.ns);
	cr_assert_eq(conc_ctx_err(&c), CONC_OK, "the call's deadline is not the context's");
	cr_assert_not(conc_waitq_has_waiters(&c.waiters), "the waiter left");

	cr_assert_eq(conc_ctx_cancel(&c, 3), CONC_OK);
	cr_assert_eq(conc_ctx_wait_until(&c, conc_deadline_forever()), CONC_CANCELED, "done: returns at once");
	cr_assert_eq(conc_ctx_wait_until(&c, conc_deadline_poll()), CONC_CANCELED, "done wins over poll");
	destroy_ok(&c);
}

Test(ctx, child_of_done_parent_starts_done, .timeout = 120)
{
	struct conc_ctx p, c, g;
	cr_assert_eq(conc_ctx_init_root(&p), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&p, 55), CONC_OK);
	init_child(&c, &p);
	cr_assert_eq(conc_ctx_err(&c), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(&c), 55);
	init_child(&g, &c);
	cr_assert_eq(conc_ctx_err(&g), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(&g), 55);
	cr_assert_eq(conc_ctx_cancel(&g, 1), CONC_CANCELED);
	destroy_ok(&g);
	destroy_ok(&c);
	destroy_ok(&p);

	struct conc_ctx t, tc;
	cr_assert_eq(conc_ctx_init(&t, NULL, conc_deadline_poll()), CONC_OK);
	cr_assert_eq(conc_ctx_err(&t), CONC_TIMEDOUT);
	init_child(&tc, &t);
	cr_assert_eq(conc_ctx_err(&tc), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cause(&tc), CONC_TIMEDOUT);
	destroy_ok(&tc);
	destroy_ok(&t);
}

/* ------------------------------------------------------------------ destroy */

Test(ctx, destroy_is_busy_while_children_exist, .timeout = 120)
{
	struct conc_ctx root, a, b, aa;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	init_child(&a, &root);
	init_child(&b, &root);
	init_child(&aa, &a);
	cr_assert_eq(conc_ctx_destroy(&root), CONC_BUSY);
	cr_assert_eq(conc_ctx_destroy(&a), CONC_BUSY);
	destroy_ok(&b);
	cr_assert_eq(conc_ctx_destroy(&root), CONC_BUSY, "a is left");
	/* BUSY changed nothing: the tree still cancels through a. */
	cr_assert_eq(conc_ctx_cancel(&root, 8), CONC_OK);
	cr_assert_eq(conc_ctx_cause(&aa), 8);
	destroy_ok(&aa);
	destroy_ok(&a);
	destroy_ok(&root);
}

/* A detached child is no longer reached by its old parent's cancel. */
Test(ctx, destroyed_child_is_detached, .timeout = 120)
{
	struct conc_ctx root, a, b, c;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	init_child(&a, &root);
	init_child(&b, &root);
	init_child(&c, &root);
	destroy_ok(&b); /* middle of the sibling list */
	memset(&b, 0xa5, sizeof b); /* the memory is the caller's again */
	destroy_ok(&c); /* head of the list */
	memset(&c, 0xa5, sizeof c);
	cr_assert_eq(conc_ctx_cancel(&root, 0), CONC_OK);
	cr_assert_eq(conc_ctx_err(&a), CONC_CANCELED);
	destroy_ok(&a);
	destroy_ok(&root);
}

struct ctx_waiter {
	struct conc_ctx *ctx;
	struct conc_deadline d;
	enum conc_status result;
};

static void *ctx_wait_main(void *arg)
{
	struct ctx_waiter *w = arg;
	w->result = conc_ctx_wait_until(w->ctx, w->d);
	return NULL;
}

Test(ctx, destroy_is_busy_while_a_thread_waits, .timeout = 120)
{
	struct conc_ctx c;
	cr_assert_eq(conc_ctx_init_root(&c), CONC_OK);
	struct ctx_waiter w = {&c, conc_deadline_forever(), CONC_OK};
	pthread_t t;
	start(&t, ctx_wait_main, &w);
	conc_test_wait_parked(&c.waiters, 1);
	cr_assert_eq(conc_ctx_destroy(&c), CONC_BUSY);
	cr_assert_eq(conc_ctx_cancel(&c, 0), CONC_OK);
	join(t);
	cr_assert_eq(w.result, CONC_CANCELED);
	destroy_ok(&c);
}

/* -------------------------------------------------------- waking on cancel */

Test(ctx, wait_until_wakes_on_cancel_from_another_thread, .timeout = 120)
{
	struct conc_ctx root, mid, leaf;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	init_child(&mid, &root);
	init_child(&leaf, &mid);
	struct ctx_waiter w[5] = {
		{&root, conc_deadline_forever(), CONC_OK},
		{&mid, conc_deadline_forever(), CONC_OK},
		{&leaf, conc_deadline_forever(), CONC_OK},
		{&leaf, conc_deadline_in_ms(3600 * 1000), CONC_OK},
		{&leaf, conc_deadline_forever(), CONC_OK},
	};
	pthread_t t[5];
	for (int i = 0; i < 5; i++)
		start(&t[i], ctx_wait_main, &w[i]);
	conc_test_wait_parked(&root.waiters, 1);
	conc_test_wait_parked(&mid.waiters, 1);
	conc_test_wait_parked(&leaf.waiters, 3);

	/* Cancel the middle: the three on leaf and the one on mid wake. */
	cr_assert_eq(conc_ctx_cancel(&mid, 64), CONC_OK);
	for (int i = 1; i < 5; i++) {
		join(t[i]);
		cr_assert_eq(w[i].result, CONC_CANCELED, "waiter %d: %s", i, conc_strerror(w[i].result));
	}
	cr_assert_eq(conc_ctx_cause(&leaf), 64);
	cr_assert_eq(conc_ctx_err(&root), CONC_OK);
	conc_test_wait_parked(&root.waiters, 1); /* still blocked */
	cr_assert_eq(conc_ctx_cancel(&root, 0), CONC_OK);
	join(t[0]);
	cr_assert_eq(w[0].result, CONC_CANCELED);
	destroy_ok(&leaf);
	destroy_ok(&mid);
	destroy_ok(&root);
}

/* A thread blocked in a channel call with a context. */
struct chan_op {
	struct conc_chan *ch;
	struct conc_ctx *ctx;
	bool send;
	uint64_t value; /* sent, or received */
	enum conc_status result;
};

static void *chan_op_main(void *arg)
{
	struct chan_op *op = arg;
	if (op->send)
		op->result = conc_chan_send_until(op->ch, &op->value, conc_deadline_forever(), op->ctx);
	else
		op->result = conc_chan_recv_until(op->ch, &op->value, conc_deadline_forever(), op->ctx);
	return NULL;
}

Test(ctx, cancel_of_ancestor_wakes_blocked_channel_calls, .timeout = 120)
{
	struct conc_ctx root, a, b, c;
	cr_assert_eq(conc_ctx_init_root(&root), CONC_OK);
	init_child(&a, &root);
	init_child(&b, &a);
	init_child(&c, &b);
	struct conc_ctx *ctxs[3] = {&a, &b, &c};

	struct conc_chan *empty, *full;
	cr_assert_eq(conc_chan_new(&empty, 4, sizeof(uint64_t)), CONC_OK);
	cr_assert_eq(conc_chan_new(&full, 2, sizeof(uint64_t)), CONC_OK);
	uint64_t v = 1001;
	cr_assert_eq(conc_chan_try_send(full, &v), CONC_OK);
	v = 1002;
	cr_assert_eq(conc_chan_try_send(full, &v), CONC_OK);

	struct chan_op ops[6];
	pthread_t t[6];
	for (int i = 0; i < 3; i++) {
		ops[i] = (struct chan_op){empty, ctxs[i], false, 0, CONC_OK};
		ops[3 + i] = (struct chan_op){full, ctxs[i], true, 2000 + (uint64_t)i, CONC_OK};
	}
	for (int i = 0; i < 6; i++)
		start(&t[i], chan_op_main, &ops[i]);
	conc_test_wait_parked(&empty->recvq, 3);
	conc_test_wait_parked(&full->sendq, 3);
	cr_assert_eq(conc_ctx_cancel(&root, 0), CONC_OK);
	for (int i = 0; i < 6; i++) {
		join(t[i]);
		cr_assert_eq(ops[i].result, CONC_CANCELED, "%s %d: %s", ops[i].send ? "sender" : "receiver", i % 3,
			     conc_strerror(ops[i].result));
	}

	/* The receivers took nothing: a new element is still there. */
	cr_assert_eq(conc_chan_len(empty), 0u);
	v = 77;
	cr_assert_eq(conc_chan_try_send(empty, &v), CONC_OK);
	v = 0;
	cr_assert_eq(conc_chan_try_recv(empty, &v), CONC_OK);
	cr_assert_eq(v, 77);
	/* The senders put nothing in: only the original two are there. */
	cr_assert_eq(conc_chan_len(full), 2u);
	cr_assert_eq(conc_chan_try_recv(full, &v), CONC_OK);
	cr_assert_eq(v, 1001);
	cr_assert_eq(conc_chan_try_recv(full, &v), CONC_OK);
	cr_assert_eq(v, 1002);
	cr_assert_eq(conc_chan_try_recv(full, &v), CONC_EMPTY, "a canceled sender's element got in");

	cr_assert_eq(conc_chan_free(empty), CONC_OK);
	cr_assert_eq(conc_chan_free(full), CONC_OK);
	destroy_ok(&c);
	destroy_ok(&b);
	destroy_ok(&a);
	destroy_ok(&root);
}

/* ---------------------------------------------------------------- deep tree */

struct deep {
	struct conc_ctx *ctx;
	enum conc_status result;
};

static void *deep_cancel_main(void *arg)
{
	struct deep *d = arg;
	d->result = conc_ctx_cancel(d->ctx, 99);
	return NULL;
}

Test(ctx, deep_chain_cancel_does_not_overflow_the_stack, .timeout = 120)
{
	const size_t n = 20000;
	struct conc_ctx *chain = calloc(n, sizeof *chain);
	cr_assert_not_null(chain);
	cr_assert_eq(conc_ctx_init_root(&chain[0]), CONC_OK);
	for (size_t i = 1; i < n; i++)
		cr_assert_eq(conc_ctx_init(&chain[i], &chain[i - 1], conc_deadline_forever()), CONC_OK);

	struct ctx_waiter w = {&chain[n - 1], conc_deadline_forever(), CONC_OK};
	pthread_t waiter;
	start(&waiter, ctx_wait_main, &w);
	conc_test_wait_parked(&chain[n - 1].waiters, 1);

	/* Cancel on a thread with a small stack: a recursive walk of 20000
	 * levels needs more than 256 KiB. */
	pthread_attr_t attr;
	cr_assert_eq(pthread_attr_init(&attr), 0);
	cr_assert_eq(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
	struct deep d = {&chain[0], CONC_INVALID};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, &attr, deep_cancel_main, &d), 0);
	pthread_attr_destroy(&attr);
	join(t);
	cr_assert_eq(d.result, CONC_OK);
	join(waiter);
	cr_assert_eq(w.result, CONC_CANCELED, "the leaf's waiter woke");

	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(conc_ctx_err(&chain[i]), CONC_CANCELED, "level %zu", i);
		cr_assert_eq(conc_ctx_cause(&chain[i]), 99, "level %zu", i);
	}
	cr_assert_eq(conc_ctx_destroy(&chain[0]), CONC_BUSY);
	for (size_t i = n; i-- > 0;)
		cr_assert_eq(conc_ctx_destroy(&chain[i]), CONC_OK, "level %zu", i);
	free(chain);
}

/* ------------------------------------------------- destroy racing a cancel */

#define RACE_KIDS 32
#define RACE_NEW 8
#define RACE_DESTROYERS 3

struct race {
	struct conc_ctx *root, *parent;
	struct conc_ctx *kid[RACE_KIDS], *grand[RACE_KIDS]; /* malloc'd: ASan sees a late touch */
	struct conc_ctx *fresh[RACE_NEW];
	pthread_barrier_t go;
	_Atomic(int) destroy_failures;
	_Atomic(int) init_failures;
	enum conc_status cancel_result;
};

struct destroyer {
	struct race *r;
	int first;
};

static void *race_destroy_main(void *arg)
{
	struct destroyer *d = arg;
	struct race *r = d->r;
	pthread_barrier_wait(&r->go);
	/* Even kids are destroyed (leaf first), odd kids are kept. */
	for (int i = d->first; i < RACE_KIDS; i += 2 * RACE_DESTROYERS) {
		if (conc_ctx_destroy(r->grand[i]) != CONC_OK || conc_ctx_destroy(r->kid[i]) != CONC_OK) {
			atomic_fetch_add(&r->destroy_failures, 1);
			continue;
		}
		free(r->grand[i]);
		free(r->kid[i]);
		r->grand[i] = r->kid[i] = NULL;
	}
	return NULL;
}

static void *race_cancel_main(void *arg)
{
	struct race *r = arg;
	pthread_barrier_wait(&r->go);
	r->cancel_result = conc_ctx_cancel(r->root, 123);
	return NULL;
}

static void *race_create_main(void *arg)
{
	struct race *r = arg;
	pthread_barrier_wait(&r->go);
	for (int i = 0; i < RACE_NEW; i++)
		if (conc_ctx_init(r->fresh[i], r->parent, conc_deadline_forever()) != CONC_OK)
			atomic_fetch_add(&r->init_failures, 1);
	return NULL;
}

static struct conc_ctx *new_ctx(void)
{
	struct conc_ctx *c = malloc(sizeof *c);
	cr_assert_not_null(c);
	return c;
}

Test(ctx, destroy_racing_cancel_of_parent, .timeout = 120)
{
	const int rounds = 200 * CONC_STRESS_SCALE;
	for (int round = 0; round < rounds; round++) {
		struct race r;
		memset(&r, 0, sizeof r);
		r.root = new_ctx();
		r.parent = new_ctx();
		cr_assert_eq(conc_ctx_init_root(r.root), CONC_OK);
		init_child(r.parent, r.root);
		for (int i = 0; i < RACE_KIDS; i++) {
			r.kid[i] = new_ctx();
			r.grand[i] = new_ctx();
			init_child(r.kid[i], r.parent);
			init_child(r.grand[i], r.kid[i]);
		}
		for (int i = 0; i < RACE_NEW; i++)
			r.fresh[i] = new_ctx();
		atomic_init(&r.destroy_failures, 0);
		atomic_init(&r.init_failures, 0);
		r.cancel_result = CONC_INVALID;
		cr_assert_eq(pthread_barrier_init(&r.go, NULL, RACE_DESTROYERS + 2), 0);

		struct destroyer d[RACE_DESTROYERS];
		pthread_t t[RACE_DESTROYERS + 2];
		for (int i = 0; i < RACE_DESTROYERS; i++) {
			d[i] = (struct destroyer){&r, 2 * i};
			start(&t[i], race_destroy_main, &d[i]);
		}
		start(&t[RACE_DESTROYERS], race_cancel_main, &r);
		start(&t[RACE_DESTROYERS + 1], race_create_main, &r);
		for (int i = 0; i < RACE_DESTROYERS + 2; i++)
			join(t[i]);
		pthread_barrier_destroy(&r.go);

		cr_assert_eq(r.cancel_result, CONC_OK, "round %d", round);
		cr_assert_eq(atomic_load(&r.destroy_failures), 0, "round %d", round);
		cr_assert_eq(atomic_load(&r.init_failures), 0, "round %d", round);
		for (int i = 0; i < RACE_KIDS; i++) {
			if (i % 2 == 0) {
				cr_assert_null(r.kid[i], "round %d: kid %d was not destroyed", round, i);
				continue;
			}
			cr_assert_eq(conc_ctx_cause(r.kid[i]), 123, "round %d: kept kid %d", round, i);
			cr_assert_eq(conc_ctx_cause(r.grand[i]), 123, "round %d: kept grandchild %d", round, i);
			destroy_ok(r.grand[i]);
			destroy_ok(r.kid[i]);
			free(r.grand[i]);
			free(r.kid[i]);
		}
		for (int i = 0; i < RACE_NEW; i++) {
			cr_assert_eq(conc_ctx_err(r.fresh[i]), CONC_CANCELED,
				     "round %d: a child created during the cancel is live", round);
			cr_assert_eq(conc_ctx_cause(r.fresh[i]), 123);
			destroy_ok(r.fresh[i]);
			free(r.fresh[i]);
		}
		cr_assert_eq(conc_ctx_cause(r.parent), 123);
		destroy_ok(r.parent); /* OK only if every child was detached */
		destroy_ok(r.root);
		free(r.parent);
		free(r.root);
	}
}
