/* SPDX-License-Identifier: MIT */
/*
 * test-pubsub: publish/subscribe on liburcu (conc/pubsub.h).  Exact delivery
 * and delivered counts, each slow-subscriber policy message by message,
 * BLOCK with a deadline and with a context canceled from another thread,
 * the wildcard matching table, subject validation, reference counts (a
 * counting release callback), a subscriber that never reads, unsubscribe
 * while a publisher is blocked, bad input, and allocation failure.  Threads
 * that must be blocked first are waited for until parked (no sleep);
 * nothing is timed.
 */
static int alloc_fail_at; /* fail the n-th allocation from now (0: never) */
#define CONC_ALIGNED_ALLOC(align, size) \
	(alloc_fail_at > 0 && --alloc_fail_at == 0 ? NULL : aligned_alloc((align), (size)))
#define CONC_FREE(p) free(p)

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

/* ------------------------------------------------------------- helpers */

static struct conc_pubsub *new_ps(void)
{
	struct conc_pubsub *ps = NULL;
	cr_assert_eq(conc_pubsub_new(&ps), CONC_OK);
	cr_assert_not_null(ps);
	return ps;
}

static void free_ps(struct conc_pubsub *ps)
{
	cr_assert_eq(conc_pubsub_free(ps), CONC_OK);
}

static struct conc_sub *sub(struct conc_pubsub *ps, const char *pattern, size_t cap, enum conc_sub_policy pol)
{
	struct conc_sub *s = NULL;
	cr_assert_eq(conc_pubsub_subscribe(ps, pattern, cap, pol, &s), CONC_OK, "subscribe %s", pattern);
	cr_assert_not_null(s);
	return s;
}

/* Payloads are counted: each message made by msg() bumps made, and its
 * release callback bumps released; balanced at the end of every test. */
static _Atomic(int) made, released;

static void count_release(void *arg)
{
	(void)arg;
	atomic_fetch_add(&released, 1);
}

/* A message on subject whose payload is the number v (by reference). */
static struct conc_msg *msg(const char *subject, uintptr_t v)
{
	struct conc_msg *m = NULL;
	cr_assert_eq(conc_msg_new_ref(&m, subject, (const void *)v, 0, count_release, NULL), CONC_OK);
	atomic_fetch_add(&made, 1);
	return m;
}

static uintptr_t val(const struct conc_msg *m)
{
	return (uintptr_t)conc_msg_data(m);
}

/* Publish v on subject (no deadline); returns the delivered count. */
static size_t pub(struct conc_pubsub *ps, const char *subject, uintptr_t v)
{
	struct conc_msg *m = msg(subject, v);
	size_t n = 99;
	cr_assert_eq(conc_pubsub_publish(ps, m, &n), CONC_OK, "publish %s %lu", subject, (unsigned long)v);
	conc_msg_release(m);
	return n;
}

/* The next message of s must carry v. */
static void got(struct conc_sub *s, uintptr_t v)
{
	struct conc_msg *m = NULL;
	cr_assert_eq(conc_sub_try_recv(s, &m), CONC_OK, "expected %lu", (unsigned long)v);
	cr_assert_eq(val(m), v, "got %lu, expected %lu", (unsigned long)val(m), (unsigned long)v);
	conc_msg_release(m);
}

static void empty(struct conc_sub *s)
{
	struct conc_msg *m = NULL;
	cr_assert_eq(conc_sub_try_recv(s, &m), CONC_EMPTY);
}

static void balanced(void)
{
	cr_assert_eq(atomic_load(&released), atomic_load(&made), "released %d of %d messages",
		     atomic_load(&released), atomic_load(&made));
}

/* ------------------------------------------------------------- delivery */

Test(pubsub, exact_and_wildcard_delivery, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *exact = sub(ps, "orders.eu.new", 4, CONC_SUB_BLOCK);
	struct conc_sub *star = sub(ps, "orders.*.new", 4, CONC_SUB_BLOCK);
	struct conc_sub *tail = sub(ps, "orders.>", 4, CONC_SUB_BLOCK);
	struct conc_sub *other = sub(ps, "orders.us.new", 4, CONC_SUB_BLOCK);

	cr_assert_eq(pub(ps, "orders.eu.new", 1), 3);
	cr_assert_eq(pub(ps, "orders.us.new", 2), 3);
	cr_assert_eq(pub(ps, "orders.eu.old", 3), 1);
	cr_assert_eq(pub(ps, "orders", 4), 0);
	cr_assert_eq(pub(ps, "trades.eu.new", 5), 0);

	got(exact, 1);
	empty(exact);
	got(star, 1);
	got(star, 2);
	empty(star);
	got(tail, 1);
	got(tail, 2);
	got(tail, 3);
	empty(tail);
	got(other, 2);
	empty(other);
	cr_assert_str_eq(conc_sub_pattern(star), "orders.*.new");
	cr_assert_eq(conc_sub_lost(exact) + conc_sub_lost(star) + conc_sub_lost(tail) + conc_sub_lost(other), 0);
	free_ps(ps);
	balanced();
}

Test(pubsub, payload_is_shared_not_copied, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *a = sub(ps, "x", 1, CONC_SUB_BLOCK);
	struct conc_sub *b = sub(ps, "x", 1, CONC_SUB_DROP_NEWEST);
	struct conc_sub *c = sub(ps, ">", 1, CONC_SUB_KEEP_LATEST);
	static const char text[] = "hello";
	struct conc_msg *m = NULL;
	cr_assert_eq(conc_msg_new(&m, "x", text, sizeof text), CONC_OK);
	cr_assert_neq(conc_msg_data(m), (const void *)text); /* copied once, at new */
	size_t n = 0;
	cr_assert_eq(conc_pubsub_publish(ps, m, &n), CONC_OK);
	cr_assert_eq(n, 3);
	struct conc_sub *subs[] = {a, b, c};
	for (int i = 0; i < 3; i++) {
		struct conc_msg *r = NULL;
		cr_assert_eq(conc_sub_try_recv(subs[i], &r), CONC_OK);
		cr_assert_eq(r, m, "subscriber %d got another message object", i);
		cr_assert_str_eq(conc_msg_subject(r), "x");
		cr_assert_eq(conc_msg_len(r), sizeof text);
		cr_assert_str_eq((const char *)conc_msg_data(r), "hello");
		conc_msg_release(r);
	}
	conc_msg_release(m);
	free_ps(ps);
}

Test(pubsub, release_runs_once_after_the_last_reference, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *a = sub(ps, "x", 2, CONC_SUB_BLOCK);
	struct conc_sub *b = sub(ps, "*", 2, CONC_SUB_DROP_OLDEST);
	int before = atomic_load(&released);
	struct conc_msg *m = msg("x", 7);
	cr_assert_eq(conc_msg_retain(m), m);
	conc_msg_release(m); /* the extra reference */
	size_t n = 0;
	cr_assert_eq(conc_pubsub_publish(ps, m, &n), CONC_OK);
	cr_assert_eq(n, 2);
	conc_msg_release(m); /* the publisher's */
	cr_assert_eq(atomic_load(&released), before, "released while subscribers hold it");
	struct conc_msg *r;
	cr_assert_eq(conc_sub_try_recv(a, &r), CONC_OK);
	conc_msg_release(r);
	cr_assert_eq(atomic_load(&released), before);
	cr_assert_eq(conc_sub_try_recv(b, &r), CONC_OK);
	conc_msg_release(r);
	cr_assert_eq(atomic_load(&released), before + 1);
	free_ps(ps);
	balanced();
}

/* --------------------------------------------------------------- policies */

Test(pubsub, drop_newest_keeps_the_first, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *s = sub(ps, "t", 2, CONC_SUB_DROP_NEWEST);
	size_t want[] = {1, 1, 0, 0, 0};
	for (uintptr_t v = 1; v <= 5; v++)
		cr_assert_eq(pub(ps, "t", v), want[v - 1], "publish %lu", (unsigned long)v);
	cr_assert_eq(conc_sub_lost(s), 3);
	got(s, 1);
	got(s, 2);
	empty(s);
	cr_assert_eq(pub(ps, "t", 6), 1);
	got(s, 6);
	cr_assert_eq(conc_sub_lost(s), 3);
	free_ps(ps);
	balanced();
}

Test(pubsub, drop_oldest_keeps_the_last, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *s = sub(ps, "t", 2, CONC_SUB_DROP_OLDEST);
	for (uintptr_t v = 1; v <= 5; v++)
		cr_assert_eq(pub(ps, "t", v), 1, "publish %lu", (unsigned long)v);
	cr_assert_eq(conc_sub_lost(s), 3);
	cr_assert_eq(atomic_load(&released), 3, "evicted messages are released at once");
	got(s, 4);
	got(s, 5);
	empty(s);
	free_ps(ps);
	balanced();
}

Test(pubsub, keep_latest_keeps_one, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *s = sub(ps, "t", 0, CONC_SUB_KEEP_LATEST);
	struct conc_sub *s1 = sub(ps, "t", 1, CONC_SUB_KEEP_LATEST);
	struct conc_sub *bad = NULL;
	cr_assert_eq(conc_pubsub_subscribe(ps, "t", 2, CONC_SUB_KEEP_LATEST, &bad), CONC_INVALID);
	cr_assert_null(bad);
	cr_assert_eq(conc_chan_cap(conc_sub_chan(s)), 1);
	for (uintptr_t v = 1; v <= 5; v++)
		cr_assert_eq(pub(ps, "t", v), 2);
	cr_assert_eq(conc_sub_lost(s), 4);
	cr_assert_eq(conc_sub_lost(s1), 4);
	got(s, 5);
	empty(s);
	got(s1, 5);
	cr_assert_eq(pub(ps, "t", 6), 2);
	got(s, 6);
	free_ps(ps); /* s1 still holds 6: released by free */
	balanced();
}

Test(pubsub, block_try_publish_reports_full, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *blk = sub(ps, "t", 2, CONC_SUB_BLOCK);
	struct conc_sub *drop = sub(ps, "t", 8, CONC_SUB_DROP_NEWEST);
	size_t n = 99;
	for (uintptr_t v = 1; v <= 2; v++) {
		struct conc_msg *m = msg("t", v);
		cr_assert_eq(conc_pubsub_try_publish(ps, m, &n), CONC_OK);
		cr_assert_eq(n, 2);
		conc_msg_release(m);
	}
	struct conc_msg *m = msg("t", 3);
	cr_assert_eq(conc_pubsub_try_publish(ps, m, &n), CONC_FULL);
	cr_assert_eq(n, 1, "the drop subscriber still gets it");
	cr_assert_eq(conc_sub_lost(blk), 1);
	/* A passed deadline tries once: CONC_TIMEDOUT, the same accounting. */
	cr_assert_eq(conc_pubsub_publish_until(ps, m, conc_deadline_poll(), NULL, &n), CONC_TIMEDOUT);
	cr_assert_eq(n, 1);
	cr_assert_eq(conc_pubsub_publish_until(ps, m, conc_deadline_in_ms(1), NULL, &n), CONC_TIMEDOUT);
	cr_assert_eq(n, 1);
	conc_msg_release(m);
	cr_assert_eq(conc_sub_lost(blk), 3);
	got(blk, 1);
	got(blk, 2);
	empty(blk);
	got(drop, 1);
	got(drop, 2);
	got(drop, 3);
	got(drop, 3);
	got(drop, 3);
	empty(drop);
	free_ps(ps);
	balanced();
}

/* ----------------------------------------------- blocking from threads */

struct publisher {
	struct conc_pubsub *ps;
	struct conc_msg *m;
	struct conc_ctx *ctx;
	struct conc_deadline d;
	enum conc_status st;
	size_t delivered;
	pthread_t thread;
};

static void *publisher_main(void *arg)
{
	struct publisher *p = arg;
	p->st = conc_pubsub_publish_until(p->ps, p->m, p->d, p->ctx, &p->delivered);
	return NULL;
}

/* Start a publisher of v on subject and wait until it is parked on the full
 * BLOCK subscriber blk. */
static void start_blocked(struct publisher *p, struct conc_pubsub *ps, struct conc_sub *blk, const char *subject,
			  uintptr_t v, struct conc_ctx *ctx)
{
	p->ps = ps;
	p->m = msg(subject, v);
	p->ctx = ctx;
	p->d = conc_deadline_forever();
	p->st = CONC_INVALID;
	p->delivered = 99;
	start(&p->thread, publisher_main, p);
	conc_test_wait_chan_parked(conc_sub_chan(blk), true, 1);
}

static void finish(struct publisher *p)
{
	join(p->thread);
	conc_msg_release(p->m);
}

Test(pubsub, block_waits_for_room, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *blk = sub(ps, "t", 1, CONC_SUB_BLOCK);
	cr_assert_eq(pub(ps, "t", 1), 1);
	struct publisher p;
	start_blocked(&p, ps, blk, "t", 2, NULL);
	got(blk, 1); /* room: the publisher goes on */
	finish(&p);
	cr_assert_eq(p.st, CONC_OK);
	cr_assert_eq(p.delivered, 1);
	got(blk, 2);
	cr_assert_eq(conc_sub_lost(blk), 0);
	free_ps(ps);
	balanced();
}

Test(pubsub, block_canceled_from_another_thread, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *blk = sub(ps, "t", 1, CONC_SUB_BLOCK);     /* exact: offered first */
	struct conc_sub *blk2 = sub(ps, "*", 4, CONC_SUB_BLOCK);    /* room, but after the cancel */
	struct conc_sub *full2 = sub(ps, ">", 1, CONC_SUB_BLOCK);   /* no room, after the cancel */
	struct conc_sub *drop = sub(ps, ">", 4, CONC_SUB_DROP_NEWEST);
	cr_assert_eq(pub(ps, "t", 1), 4);
	got(blk2, 1);
	got(drop, 1);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_forever()), CONC_OK);
	struct publisher p;
	start_blocked(&p, ps, blk, "t", 2, &ctx);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	finish(&p);
	cr_assert_eq(p.st, CONC_CANCELED);
	/* blk missed it; blk2 and drop took it without waiting; full2 was
	 * full and is not waited for once the publish has failed. */
	cr_assert_eq(p.delivered, 2);
	cr_assert_eq(conc_sub_lost(blk), 1);
	cr_assert_eq(conc_sub_lost(full2), 1);
	got(blk, 1);
	empty(blk);
	got(blk2, 2);
	got(drop, 2);
	got(full2, 1);
	empty(full2);
	/* A context already done: nothing offered, nothing lost. */
	struct conc_msg *m = msg("t", 3);
	size_t n = 99;
	cr_assert_eq(conc_pubsub_publish_until(ps, m, conc_deadline_forever(), &ctx, &n), CONC_CANCELED);
	cr_assert_eq(n, 0);
	conc_msg_release(m);
	cr_assert_eq(conc_sub_lost(blk) + conc_sub_lost(full2), 2);
	empty(drop);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	free_ps(ps);
	balanced();
}

Test(pubsub, block_deadline_from_a_context, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *blk = sub(ps, "t", 1, CONC_SUB_BLOCK);
	cr_assert_eq(pub(ps, "t", 1), 1);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ms(20)), CONC_OK);
	struct conc_msg *m = msg("t", 2);
	size_t n = 99;
	cr_assert_eq(conc_pubsub_publish_until(ps, m, conc_deadline_forever(), &ctx, &n), CONC_TIMEDOUT);
	cr_assert_eq(n, 0);
	cr_assert_eq(conc_sub_lost(blk), 1);
	conc_msg_release(m);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	free_ps(ps);
	balanced();
}

Test(pubsub, close_wakes_a_blocked_publisher, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *blk = sub(ps, "t", 1, CONC_SUB_BLOCK);
	struct conc_sub *drop = sub(ps, "t", 4, CONC_SUB_DROP_NEWEST);
	cr_assert_eq(pub(ps, "t", 1), 2);
	struct publisher p;
	start_blocked(&p, ps, blk, "t", 2, NULL);
	cr_assert_eq(conc_sub_close(blk), CONC_OK);
	cr_assert_eq(conc_sub_close(blk), CONC_CLOSED);
	finish(&p);
	/* A closed subscriber is gone: not delivered, not lost, no failure. */
	cr_assert_eq(p.st, CONC_OK);
	cr_assert_eq(p.delivered, 1);
	cr_assert_eq(conc_sub_lost(blk), 0);
	got(blk, 1); /* drains what was queued, then reports closed */
	struct conc_msg *m;
	cr_assert_eq(conc_sub_try_recv(blk, &m), CONC_CLOSED);
	cr_assert_eq(conc_sub_recv(blk, &m), CONC_CLOSED);
	cr_assert_eq(pub(ps, "t", 3), 1);
	cr_assert_eq(conc_pubsub_unsubscribe(blk), CONC_OK);
	got(drop, 1);
	got(drop, 2);
	got(drop, 3);
	free_ps(ps);
	balanced();
}

Test(pubsub, unsubscribe_while_a_publisher_is_blocked, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *blk = sub(ps, "t.x", 1, CONC_SUB_BLOCK);
	struct conc_sub *wild = sub(ps, "t.*", 1, CONC_SUB_BLOCK);
	cr_assert_eq(pub(ps, "t.x", 1), 2);
	got(wild, 1);
	struct publisher p;
	start_blocked(&p, ps, blk, "t.x", 2, NULL);
	/* blk still holds message 1: unsubscribe releases it, and frees blk
	 * only after the publisher has left it. */
	cr_assert_eq(conc_pubsub_unsubscribe(blk), CONC_OK);
	finish(&p);
	cr_assert_eq(p.st, CONC_OK);
	cr_assert_eq(p.delivered, 1);
	got(wild, 2);
	/* The topic left with its last exact subscriber; a new one makes it. */
	cr_assert_eq(pub(ps, "t.x", 3), 1);
	struct conc_sub *again = sub(ps, "t.x", 1, CONC_SUB_BLOCK);
	got(wild, 3);
	cr_assert_eq(pub(ps, "t.x", 4), 2);
	got(again, 4);
	got(wild, 4);
	cr_assert_eq(conc_pubsub_unsubscribe(wild), CONC_OK);
	cr_assert_eq(pub(ps, "t.x", 5), 1);
	free_ps(ps);
	balanced();
}

struct receiver {
	struct conc_sub *s;
	struct conc_ctx *ctx;
	enum conc_status st;
	struct conc_msg *m;
	pthread_t thread;
};

static void *receiver_main(void *arg)
{
	struct receiver *r = arg;
	r->st = conc_sub_recv_until(r->s, &r->m, conc_deadline_forever(), r->ctx);
	return NULL;
}

Test(pubsub, receive_wakes_on_publish_cancel_and_close, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *s = sub(ps, "t", 2, CONC_SUB_BLOCK);
	struct conc_msg *m = NULL;
	cr_assert_eq(conc_sub_recv_until(s, &m, conc_deadline_poll(), NULL), CONC_TIMEDOUT);

	struct receiver r = {s, NULL, CONC_INVALID, NULL, 0};
	start(&r.thread, receiver_main, &r);
	conc_test_wait_chan_parked(conc_sub_chan(s), false, 1);
	cr_assert_eq(pub(ps, "t", 1), 1);
	join(r.thread);
	cr_assert_eq(r.st, CONC_OK);
	cr_assert_eq(val(r.m), 1);
	conc_msg_release(r.m);

	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_forever()), CONC_OK);
	r.ctx = &ctx;
	start(&r.thread, receiver_main, &r);
	conc_test_wait_chan_parked(conc_sub_chan(s), false, 1);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(r.thread);
	cr_assert_eq(r.st, CONC_CANCELED);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);

	r.ctx = NULL;
	start(&r.thread, receiver_main, &r);
	conc_test_wait_chan_parked(conc_sub_chan(s), false, 1);
	cr_assert_eq(conc_sub_close(s), CONC_OK);
	join(r.thread);
	cr_assert_eq(r.st, CONC_CLOSED);
	free_ps(ps);
	balanced();
}

Test(pubsub, select_over_subscriptions, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *a = sub(ps, "a", 1, CONC_SUB_BLOCK);
	struct conc_sub *b = sub(ps, "b", 1, CONC_SUB_BLOCK);
	cr_assert_eq(pub(ps, "b", 9), 1);
	struct conc_msg *ma = NULL, *mb = NULL;
	struct conc_select_case cases[2] = {conc_select_recv(conc_sub_chan(a), &ma),
					    conc_select_recv(conc_sub_chan(b), &mb)};
	size_t which = 99;
	cr_assert_eq(conc_select_try(cases, 2, 0, &which), CONC_OK);
	cr_assert_eq(which, 1);
	cr_assert_eq(val(mb), 9);
	conc_msg_release(mb);
	free_ps(ps);
	balanced();
}

/* --------------------------------------------------- never-reading subscriber */

Test(pubsub, subscriber_that_never_reads, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *dn = sub(ps, "feed", 4, CONC_SUB_DROP_NEWEST);
	struct conc_sub *dold = sub(ps, "feed", 4, CONC_SUB_DROP_OLDEST);
	struct conc_sub *kl = sub(ps, "feed", 1, CONC_SUB_KEEP_LATEST);
	enum { N = 1000 };
	for (uintptr_t v = 0; v < N; v++) /* never blocks: this loop ends */
		cr_assert_eq(pub(ps, "feed", v), v < 4 ? 3 : 2);
	cr_assert_eq(conc_sub_lost(dn), N - 4);
	cr_assert_eq(conc_sub_lost(dold), N - 4);
	cr_assert_eq(conc_sub_lost(kl), N - 1);
	struct conc_sub *blk = sub(ps, "feed", 4, CONC_SUB_BLOCK);
	for (uintptr_t v = 0; v < 4; v++)
		cr_assert_eq(pub(ps, "feed", v), 3);
	struct conc_msg *m = msg("feed", N);
	size_t n = 99;
	cr_assert_eq(conc_pubsub_publish_until(ps, m, conc_deadline_in_ms(5), NULL, &n), CONC_TIMEDOUT);
	cr_assert_eq(n, 2);
	conc_msg_release(m);
	cr_assert_eq(conc_sub_lost(blk), 1);
	/* Still held, shared where several queues hold one: the first round's
	 * 0..3 (dn), the second round's 0..3 (blk; 1..3 also in dold) and N
	 * (dold, kl).  All released by unsubscribe and free. */
	cr_assert_eq(atomic_load(&made) - atomic_load(&released), 4 + 4 + 1);
	cr_assert_eq(conc_pubsub_unsubscribe(dn), CONC_OK);
	free_ps(ps);
	balanced();
}

/* ----------------------------------------------------- subjects and matching */

Test(pubsub, wildcard_matching_table, .timeout = 60)
{
	static const struct {
		const char *pattern, *subject;
		bool match;
	} table[] = {
		{"a", "a", true},
		{"a", "b", false},
		{"a", "ab", false},
		{"ab", "a", false},
		{"a.b", "a.b", true},
		{"a.b", "a", false},
		{"a", "a.b", false},
		{"a.b", "a.bc", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"*.b", "a.b", true},
		{"*.b", "a.c", false},
		{"a.*.c", "a.x.c", true},
		{"a.*.c", "a.x.y.c", false},
		{"*.*", "a.b", true},
		{"*.*", "a", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c.d", true},
		{"a.>", "a", false},
		{"a.>", "b.c", false},
		{"a.*.>", "a.b.c", true},
		{"a.*.>", "a.b", false},
		{"*.>", "a.b", true},
		{"*.>", "a", false},
		{"orders.eu", "orders.eu", true},
		{"orders.eu", "orders.eun", false},
		/* invalid input never matches */
		{"a.>.b", "a.x.b", false},
		{"a*", "a*", false},
		{"a", "a.*", false},
		{"", "", false},
		{"a..b", "a..b", false},
	};
	for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
		cr_expect_eq(conc_pubsub_match(table[i].pattern, table[i].subject), table[i].match,
			     "match(\"%s\", \"%s\") should be %d", table[i].pattern, table[i].subject,
			     table[i].match);
	cr_assert_not(conc_pubsub_match(NULL, "a"));
	cr_assert_not(conc_pubsub_match("a", NULL));
}

Test(pubsub, wildcards_through_publish, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *s1 = sub(ps, "a.*.c", 8, CONC_SUB_BLOCK);
	struct conc_sub *s2 = sub(ps, "a.>", 8, CONC_SUB_BLOCK);
	struct conc_sub *s3 = sub(ps, "*", 8, CONC_SUB_BLOCK);
	cr_assert_eq(pub(ps, "a.b.c", 1), 2);
	cr_assert_eq(pub(ps, "a.b", 2), 1);
	cr_assert_eq(pub(ps, "a", 3), 1);
	cr_assert_eq(pub(ps, "a.b.c.d", 4), 1);
	cr_assert_eq(pub(ps, "b.b.c", 5), 0);
	got(s1, 1);
	empty(s1);
	got(s2, 1);
	got(s2, 2);
	got(s2, 4);
	empty(s2);
	got(s3, 3);
	empty(s3);
	free_ps(ps);
	balanced();
}

Test(pubsub, subject_validation, .timeout = 60)
{
	static const char *const good_subjects[] = {"a", "a.b", "orders.eu.new", "a-b_c.1", "x.y.z.w.v"};
	static const char *const bad_subjects[] = {"", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\nb", "*", "a.*",
						   ">", "a.>", "a*", "a.b>", "\x7f"};
	static const char *const good_patterns[] = {"a", "*", ">", "a.*", "*.b", "a.>", "*.*.>", "a.*.c"};
	static const char *const bad_patterns[] = {"", "a.", ".a", "a..b", ">.a", "a.>.b", "a*", "*a", "a.b*",
						   "a>", ">>", "**", "a b"};
	for (size_t i = 0; i < sizeof good_subjects / sizeof *good_subjects; i++) {
		cr_expect(conc_pubsub_subject_valid(good_subjects[i]), "%s", good_subjects[i]);
		cr_expect(conc_pubsub_pattern_valid(good_subjects[i]), "%s", good_subjects[i]);
	}
	for (size_t i = 0; i < sizeof bad_subjects / sizeof *bad_subjects; i++) {
		cr_expect_not(conc_pubsub_subject_valid(bad_subjects[i]), "%s", bad_subjects[i]);
		struct conc_msg *m = NULL;
		cr_expect_eq(conc_msg_new(&m, bad_subjects[i], "x", 1), CONC_INVALID, "%s", bad_subjects[i]);
		cr_expect_eq(conc_msg_new_ref(&m, bad_subjects[i], "x", 1, count_release, NULL), CONC_INVALID);
		cr_expect_null(m);
	}
	struct conc_pubsub *ps = new_ps();
	for (size_t i = 0; i < sizeof good_patterns / sizeof *good_patterns; i++) {
		cr_expect(conc_pubsub_pattern_valid(good_patterns[i]), "%s", good_patterns[i]);
		struct conc_sub *s = NULL;
		cr_expect_eq(conc_pubsub_subscribe(ps, good_patterns[i], 1, CONC_SUB_BLOCK, &s), CONC_OK);
		cr_expect_eq(conc_pubsub_unsubscribe(s), CONC_OK);
	}
	for (size_t i = 0; i < sizeof bad_patterns / sizeof *bad_patterns; i++) {
		cr_expect_not(conc_pubsub_pattern_valid(bad_patterns[i]), "%s", bad_patterns[i]);
		struct conc_sub *s = NULL;
		cr_expect_eq(conc_pubsub_subscribe(ps, bad_patterns[i], 1, CONC_SUB_BLOCK, &s), CONC_INVALID, "%s",
			     bad_patterns[i]);
		cr_expect_null(s);
	}
	cr_assert_not(conc_pubsub_subject_valid(NULL));
	cr_assert_not(conc_pubsub_pattern_valid(NULL));
	free_ps(ps);
}

/* -------------------------------------------------------------- bad input */

Test(pubsub, bad_input, .timeout = 60)
{
	struct conc_pubsub *ps = new_ps();
	struct conc_sub *s = NULL;
	struct conc_msg *m = NULL;
	size_t n = 99;
	cr_assert_eq(conc_pubsub_new(NULL), CONC_INVALID);
	cr_assert_eq(conc_pubsub_free(NULL), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(NULL, "a", 1, CONC_SUB_BLOCK, &s), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, NULL, 1, CONC_SUB_BLOCK, &s), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a", 1, CONC_SUB_BLOCK, NULL), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a", 0, CONC_SUB_BLOCK, &s), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a", 0, CONC_SUB_DROP_OLDEST, &s), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a", CONC_CHAN_MAX_CAP + 1, CONC_SUB_BLOCK, &s), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a", 1, (enum conc_sub_policy)42, &s), CONC_INVALID);
	cr_assert_eq(conc_pubsub_subscribe(ps, "a", 1, (enum conc_sub_policy)-1, &s), CONC_INVALID);
	cr_assert_null(s);
	cr_assert_eq(conc_msg_new(NULL, "a", "x", 1), CONC_INVALID);
	cr_assert_eq(conc_msg_new(&m, "a", NULL, 1), CONC_INVALID);
	cr_assert_eq(conc_msg_new_ref(&m, "a", NULL, 1, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_msg_new(&m, "a", "x", SIZE_MAX), CONC_OVERFLOW);
	cr_assert_null(m);
	cr_assert_eq(conc_msg_new(&m, "a", NULL, 0), CONC_OK); /* an empty payload */
	cr_assert_null(conc_msg_data(m));
	cr_assert_eq(conc_msg_len(m), 0);
	cr_assert_eq(conc_pubsub_publish(NULL, m, &n), CONC_INVALID);
	cr_assert_eq(n, 0);
	cr_assert_eq(conc_pubsub_publish(ps, NULL, &n), CONC_INVALID);
	cr_assert_eq(conc_pubsub_try_publish(NULL, m, &n), CONC_INVALID);
	cr_assert_eq(conc_pubsub_publish_until(ps, NULL, conc_deadline_poll(), NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_pubsub_publish(ps, m, NULL), CONC_OK); /* delivered is optional */
	conc_msg_release(m);
	conc_msg_release(NULL);
	cr_assert_null(conc_msg_retain(NULL));
	cr_assert_str_eq(conc_msg_subject(NULL), "");
	cr_assert_null(conc_msg_data(NULL));
	cr_assert_eq(conc_msg_len(NULL), 0);
	cr_assert_eq(conc_sub_recv(NULL, &m), CONC_INVALID);
	cr_assert_eq(conc_sub_try_recv(NULL, &m), CONC_INVALID);
	cr_assert_eq(conc_sub_recv_until(NULL, &m, conc_deadline_poll(), NULL), CONC_INVALID);
	s = sub(ps, "a", 1, CONC_SUB_BLOCK);
	cr_assert_eq(conc_sub_recv(s, NULL), CONC_INVALID);
	cr_assert_eq(conc_sub_try_recv(s, NULL), CONC_INVALID);
	cr_assert_eq(conc_sub_close(NULL), CONC_INVALID);
	cr_assert_eq(conc_pubsub_unsubscribe(NULL), CONC_INVALID);
	cr_assert_null(conc_sub_chan(NULL));
	cr_assert_eq(conc_sub_lost(NULL), 0);
	cr_assert_str_eq(conc_sub_pattern(NULL), "");
	free_ps(ps);
}

/* ------------------------------------------------------- allocation failure */

Test(pubsub, allocation_failure_leaks_nothing, .timeout = 60)
{
	struct conc_pubsub *ps = NULL;
	alloc_fail_at = 1;
	cr_assert_eq(conc_pubsub_new(&ps), CONC_NOMEM);
	cr_assert_null(ps);
	alloc_fail_at = 0;
	ps = new_ps();

	/* An exact subscription on a new topic allocates three blocks: the
	 * subscription, its channel, the topic.  Fail each in turn. */
	for (int k = 1; k <= 3; k++) {
		struct conc_sub *s = NULL;
		alloc_fail_at = k;
		cr_assert_eq(conc_pubsub_subscribe(ps, "new.topic", 1, CONC_SUB_BLOCK, &s), CONC_NOMEM, "k = %d", k);
		cr_assert_null(s);
		alloc_fail_at = 0;
		cr_assert_eq(pub(ps, "new.topic", 1), 0, "a failed subscribe left a subscriber");
	}
	/* A wildcard one allocates two. */
	for (int k = 1; k <= 2; k++) {
		struct conc_sub *s = NULL;
		alloc_fail_at = k;
		cr_assert_eq(conc_pubsub_subscribe(ps, "new.*", 1, CONC_SUB_BLOCK, &s), CONC_NOMEM, "k = %d", k);
		alloc_fail_at = 0;
	}
	struct conc_msg *m = NULL;
	alloc_fail_at = 1;
	cr_assert_eq(conc_msg_new(&m, "a", "x", 1), CONC_NOMEM);
	alloc_fail_at = 1;
	cr_assert_eq(conc_msg_new_ref(&m, "a", "x", 1, count_release, NULL), CONC_NOMEM);
	cr_assert_null(m);
	alloc_fail_at = 0;
	struct conc_sub *s = sub(ps, "new.topic", 1, CONC_SUB_BLOCK);
	cr_assert_eq(pub(ps, "new.topic", 2), 1);
	got(s, 2);
	free_ps(ps);
	balanced();
}
