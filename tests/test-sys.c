/* SPDX-License-Identifier: MIT */
/*
 * The platform layer and the waiter protocol: deadlines and the monotonic
 * clock, conc_lock, the parker's token, conc_waitq (including greedy
 * waiters), and conc_strerror.
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

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	cr_assert_eq(pthread_create(t, NULL, fn, arg), 0, "pthread_create");
}

static void join(pthread_t t)
{
	cr_assert_eq(pthread_join(t, NULL), 0, "pthread_join");
}

/* ---------------------------------------------------------------- deadlines */

Test(sys, deadline_forever_and_poll, .timeout = 120)
{
	struct conc_deadline f = conc_deadline_forever();
	cr_assert_eq(f.ns, INT64_MAX);
	cr_assert(conc_deadline_is_forever(f));
	cr_assert_not(conc_deadline_expired(f), "forever never expires");

	struct conc_deadline p = conc_deadline_poll();
	cr_assert_eq(p.ns, INT64_MIN);
	cr_assert_not(conc_deadline_is_forever(p));
	cr_assert(conc_deadline_expired(p), "poll has always passed");

	cr_assert_eq(conc_deadline_at_ns(12345).ns, 12345);
	cr_assert(conc_deadline_is_forever(conc_deadline_at_ns(INT64_MAX)));
	cr_assert_not(conc_deadline_is_forever(conc_deadline_at_ns(INT64_MAX - 1)));
}

Test(sys, deadline_in_ns_is_now_plus_ns, .timeout = 120)
{
	const int64_t delta = 1000000000; /* 1 s */
	int64_t before = conc_now_ns();
	struct conc_deadline d = conc_deadline_in_ns(delta);
	int64_t after = conc_now_ns();
	cr_assert_geq(d.ns, before + delta);
	cr_assert_leq(d.ns, after + delta);
	cr_assert_not(conc_deadline_expired(d));

	before = conc_now_ns();
	d = conc_deadline_in_ns(0);
	after = conc_now_ns();
	cr_assert_geq(d.ns, before);
	cr_assert_leq(d.ns, after);
	cr_assert(conc_deadline_expired(d), "a deadline of now has passed once asked");
}

Test(sys, deadline_in_ns_saturates_at_forever, .timeout = 120)
{
	cr_assert(conc_deadline_is_forever(conc_deadline_in_ns(INT64_MAX)));
	cr_assert(conc_deadline_is_forever(conc_deadline_in_ns(INT64_MAX - 1)));
	/* now is positive, so anything above INT64_MAX - now saturates. */
	cr_assert(conc_deadline_is_forever(conc_deadline_in_ns(INT64_MAX - conc_now_ns() + 1)));
	struct conc_deadline big = conc_deadline_in_ns(INT64_MAX / 2);
	cr_assert_not(conc_deadline_is_forever(big));
	cr_assert_gt(big.ns, INT64_MAX / 2, "no wrap-around to a negative deadline");
}

Test(sys, deadline_in_ms_scales_and_handles_overflow, .timeout = 120)
{
	int64_t before = conc_now_ns();
	struct conc_deadline d = conc_deadline_in_ms(250);
	int64_t after = conc_now_ns();
	cr_assert_geq(d.ns, before + 250 * INT64_C(1000000));
	cr_assert_leq(d.ns, after + 250 * INT64_C(1000000));

	cr_assert(conc_deadline_is_forever(conc_deadline_in_ms(INT64_MAX)));
	cr_assert(conc_deadline_is_forever(conc_deadline_in_ms(INT64_MAX / 1000000 + 1)),
		  "ms * 1e6 would overflow: saturate");
	cr_assert(conc_deadline_is_forever(conc_deadline_in_ms(INT64_MAX / 1000000)),
		  "ms * 1e6 fits, now + that does not: saturate");

	struct conc_deadline m = conc_deadline_in_ms(INT64_MIN);
	cr_assert_eq(m.ns, INT64_MIN, "the most negative ms is poll");
	cr_assert(conc_deadline_expired(m));
	m = conc_deadline_in_ms(INT64_MIN / 1000000 - 1);
	cr_assert_eq(m.ns, INT64_MIN);
	m = conc_deadline_in_ms(INT64_MIN / 1000000);
	cr_assert(conc_deadline_expired(m), "largest negative ms that fits: in the past");
	cr_assert_not(conc_deadline_is_forever(m));
}

Test(sys, deadline_negative_is_in_the_past, .timeout = 120)
{
	int64_t before = conc_now_ns();
	struct conc_deadline d = conc_deadline_in_ns(-1);
	cr_assert_lt(d.ns, conc_now_ns());
	cr_assert(conc_deadline_expired(d));

	d = conc_deadline_in_ms(-1000);
	cr_assert_lt(d.ns, before);
	cr_assert(conc_deadline_expired(d));

	d = conc_deadline_in_ns(INT64_MIN);
	cr_assert(conc_deadline_expired(d));
	cr_assert_not(conc_deadline_is_forever(d));
	cr_assert(conc_deadline_expired(conc_deadline_at_ns(-5)));
	cr_assert(conc_deadline_expired(conc_deadline_at_ns(0)));
}

Test(sys, deadline_expired_compares_with_now, .timeout = 120)
{
	int64_t now = conc_now_ns();
	cr_assert(conc_deadline_expired(conc_deadline_at_ns(now - 1)));
	cr_assert(conc_deadline_expired(conc_deadline_at_ns(now)));
	cr_assert_not(conc_deadline_expired(conc_deadline_at_ns(now + 3600 * INT64_C(1000000000))));
	cr_assert_not(conc_deadline_expired(conc_deadline_in_ms(60000)));
}

Test(sys, deadline_min_picks_the_earlier, .timeout = 120)
{
	struct conc_deadline a = conc_deadline_at_ns(100), b = conc_deadline_at_ns(200);
	cr_assert_eq(conc_deadline_min(a, b).ns, 100);
	cr_assert_eq(conc_deadline_min(b, a).ns, 100);
	cr_assert_eq(conc_deadline_min(a, a).ns, 100);
	cr_assert_eq(conc_deadline_min(conc_deadline_forever(), b).ns, 200);
	cr_assert_eq(conc_deadline_min(b, conc_deadline_forever()).ns, 200);
	cr_assert(conc_deadline_is_forever(conc_deadline_min(conc_deadline_forever(), conc_deadline_forever())));
	cr_assert_eq(conc_deadline_min(conc_deadline_poll(), a).ns, INT64_MIN);
	cr_assert_eq(conc_deadline_min(conc_deadline_at_ns(-7), a).ns, -7);
}

Test(sys, now_ns_is_monotonic, .timeout = 120)
{
	int64_t prev = conc_now_ns();
	cr_assert_gt(prev, 0);
	for (int i = 0; i < 100000; i++) {
		int64_t t = conc_now_ns();
		cr_assert_geq(t, prev, "CLOCK_MONOTONIC went back at sample %d", i);
		prev = t;
	}
}

Test(sys, backoff_spins_out_after_the_budget, .timeout = 120)
{
	struct conc_backoff b = {0};
	for (int i = 0; i < CONC_SPIN_SHIFT + 1; i++) {
		cr_assert_not(conc_backoff_spun_out(&b), "spun out after %d spins", i);
		conc_backoff_spin(&b);
	}
	cr_assert(conc_backoff_spun_out(&b));
	conc_backoff_snooze(&b); /* past the budget: yields, stays spun out */
	conc_backoff_snooze(&b);
	conc_backoff_snooze(&b);
	cr_assert(conc_backoff_spun_out(&b));

	struct conc_backoff s = {0};
	for (int i = 0; i < CONC_SPIN_SHIFT + 1; i++)
		conc_backoff_snooze(&s);
	cr_assert(conc_backoff_spun_out(&s), "snooze spends the same budget first");
}

/* --------------------------------------------------------------------- lock */

#define LOCK_THREADS 8

struct lock_test {
	struct conc_lock lock;
	unsigned long counter; /* plain: only the lock protects it */
	_Atomic(int) inside;
	_Atomic(int) overlaps;
	unsigned long iters;
};

static void *lock_worker(void *arg)
{
	struct lock_test *t = arg;
	for (unsigned long i = 0; i < t->iters; i++) {
		conc_lock_acquire(&t->lock);
		if (atomic_fetch_add_explicit(&t->inside, 1, memory_order_relaxed) != 0)
			atomic_fetch_add_explicit(&t->overlaps, 1, memory_order_relaxed);
		unsigned long v = t->counter;
		/* Now and then give the CPU away while holding the lock, so the
		 * others reach the sleeping path of conc_lock_acquire. */
		if ((i & 127) == 0)
			conc_yield();
		t->counter = v + 1;
		atomic_fetch_sub_explicit(&t->inside, 1, memory_order_relaxed);
		conc_lock_release(&t->lock);
	}
	return NULL;
}

Test(sys, lock_mutual_exclusion, .timeout = 120)
{
	static struct lock_test t;
	conc_lock_init(&t.lock);
	t.counter = 0;
	t.iters = 20000UL * CONC_STRESS_SCALE;
	atomic_init(&t.inside, 0);
	atomic_init(&t.overlaps, 0);
	pthread_t th[LOCK_THREADS];
	for (int i = 0; i < LOCK_THREADS; i++)
		start(&th[i], lock_worker, &t);
	for (int i = 0; i < LOCK_THREADS; i++)
		join(th[i]);
	cr_assert_eq(atomic_load(&t.overlaps), 0, "two threads inside the lock at once");
	cr_assert_eq(t.counter, LOCK_THREADS * t.iters, "lost increments: %lu of %lu", t.counter,
		     LOCK_THREADS * t.iters);
	conc_lock_destroy(&t.lock);
}

/* ------------------------------------------------------------------- parker */

Test(sys, parker_token_before_park_returns_at_once, .timeout = 120)
{
	struct conc_parker *p = conc_parker_self();
	cr_assert_not_null(p);
	cr_assert_eq(conc_parker_self(), p, "one parker per thread");
	conc_parker_unpark(p);
	cr_assert(conc_parker_park_until(p, conc_deadline_forever()), "the token is consumed at once");
	cr_assert_not(conc_parker_park_until(p, conc_deadline_poll()), "and it is gone");

	/* Tokens do not accumulate: two unparks leave one. */
	conc_parker_unpark(p);
	conc_parker_unpark(p);
	cr_assert(conc_parker_park_until(p, conc_deadline_poll()));
	cr_assert_not(conc_parker_park_until(p, conc_deadline_poll()));
}

Test(sys, parker_past_deadline_returns_false, .timeout = 120)
{
	struct conc_parker *p = conc_parker_self();
	cr_assert_not(conc_parker_park_until(p, conc_deadline_poll()));
	cr_assert_not(conc_parker_park_until(p, conc_deadline_at_ns(conc_now_ns() - 1)));
	cr_assert_not(conc_parker_park_until(p, conc_deadline_at_ns(0)));
	cr_assert_not(conc_parker_park_until(p, conc_deadline_in_ns(-1000)));
	/* A token still wins over a past deadline. */
	conc_parker_unpark(p);
	cr_assert(conc_parker_park_until(p, conc_deadline_poll()));
}

Test(sys, parker_near_deadline_times_out, .timeout = 120)
{
	struct conc_parker *p = conc_parker_self();
	int64_t t0 = conc_now_ns();
	struct conc_deadline d = conc_deadline_in_ms(20);
	cr_assert_not(conc_parker_park_until(p, d), "no token: the park times out");
	int64_t t1 = conc_now_ns();
	cr_assert_geq(t1, d.ns, "returned before its deadline");
	cr_assert_geq(t1 - t0, 20 * INT64_C(1000000));
}

/* A thread that blocks through the waiter protocol on q, so that
 * conc_test_wait_parked can see it parked. */
struct blocker {
	struct conc_waitq *q;
	_Atomic(int) *go;                   /* the condition it waits for */
	_Atomic(struct conc_parker *) self; /* its parker, published before it queues */
	bool parked_true;                   /* what park_until returned last */
	bool woken;                         /* what conc_waitq_remove said */
};

static void *blocker_main(void *arg)
{
	struct blocker *b = arg;
	struct conc_waiter w;
	conc_waiter_init(&w, 0);
	atomic_store(&b->self, w.parker);
	conc_waitq_enqueue(b->q, &w);
	/* Re-check after enqueueing (seq_cst), then park. */
	while (!atomic_load(b->go))
		b->parked_true = conc_parker_park_until(w.parker, conc_deadline_forever());
	b->woken = conc_waitq_remove(b->q, &w);
	return NULL;
}

Test(sys, parker_unpark_from_another_thread, .timeout = 120)
{
	struct conc_waitq q;
	conc_waitq_init(&q);
	_Atomic(int) go = 0;
	struct blocker b = {.q = &q, .go = &go};
	atomic_init(&b.self, NULL);
	pthread_t t;
	start(&t, blocker_main, &b);
	conc_test_wait_parked(&q, 1);
	struct conc_parker *p = atomic_load(&b.self);
	cr_assert_not_null(p);
	cr_assert_neq(p, conc_parker_self(), "each thread has its own parker");
	cr_assert_eq(atomic_load(&p->state), CONC__PARK_PARKED);
	atomic_store(&go, 1);
	conc_parker_unpark(p);
	join(t);
	cr_assert(b.parked_true, "the parked thread consumed the token");
	cr_assert_not(b.woken, "it was unparked directly, not dequeued by a waker");
	cr_assert_not(conc_waitq_has_waiters(&q));
	conc_waitq_destroy(&q);
}

/* -------------------------------------------------------------------- waitq */

Test(sys, waitq_empty, .timeout = 120)
{
	struct conc_waitq q;
	conc_waitq_init(&q);
	cr_assert_not(conc_waitq_has_waiters(&q));
	cr_assert_not(conc_waitq_wake_one(&q));
	cr_assert_eq(conc_waitq_wake_n(&q, 5), 0);
	cr_assert_eq(conc_waitq_wake_all(&q), 0);
	cr_assert_not(conc_parker_park_until(conc_parker_self(), conc_deadline_poll()), "no token was handed out");
	conc_waitq_destroy(&q);
}

Test(sys, waitq_enqueue_remove_keeps_fifo, .timeout = 120)
{
	struct conc_waitq q;
	struct conc_waiter w[4];
	conc_waitq_init(&q);
	for (int i = 0; i < 4; i++) {
		conc_waiter_init(&w[i], 0);
		cr_assert_eq(w[i].parker, conc_parker_self());
		cr_assert_eq(w[i].flags, 0u);
		conc_waitq_enqueue(&q, &w[i]);
	}
	cr_assert(conc_waitq_has_waiters(&q));
	cr_assert_eq(atomic_load(&q.count), 4u);

	/* Take out the middle, the head and the tail, leaving w[2] alone. */
	cr_assert_not(conc_waitq_remove(&q, &w[1]), "not woken");
	cr_assert_not(conc_waitq_remove(&q, &w[0]));
	cr_assert_not(conc_waitq_remove(&q, &w[3]));
	cr_assert_eq(atomic_load(&q.count), 1u);
	cr_assert(conc_waitq_wake_one(&q));
	cr_assert(w[2].woken);
	cr_assert_not(w[0].woken || w[1].woken || w[3].woken, "removed waiters are never woken");
	cr_assert(conc_waitq_remove(&q, &w[2]), "remove reports the wake-up");
	cr_assert_not(conc_waitq_has_waiters(&q));

	/* A removed waiter can queue again, at the tail. */
	conc_waitq_enqueue(&q, &w[0]);
	conc_waitq_enqueue(&q, &w[1]);
	cr_assert(conc_waitq_wake_one(&q));
	cr_assert(w[0].woken, "FIFO: the first queued is woken first");
	cr_assert_not(w[1].woken);
	cr_assert(conc_waitq_remove(&q, &w[0]));
	cr_assert_not(conc_waitq_remove(&q, &w[1]));
	cr_assert_not(conc_waitq_has_waiters(&q));
	/* Every waiter here is this thread's: it holds one token. */
	cr_assert(conc_parker_park_until(conc_parker_self(), conc_deadline_poll()));
	conc_waitq_destroy(&q);
}

Test(sys, waitq_wake_n_and_wake_all, .timeout = 120)
{
	struct conc_waitq q;
	struct conc_waiter w[6];
	conc_waitq_init(&q);
	for (int i = 0; i < 6; i++) {
		conc_waiter_init(&w[i], 0);
		conc_waitq_enqueue(&q, &w[i]);
	}
	cr_assert_eq(conc_waitq_wake_n(&q, 0), 0);
	cr_assert_eq(atomic_load(&q.count), 6u);
	cr_assert_eq(conc_waitq_wake_n(&q, 2), 2);
	cr_assert(w[0].woken && w[1].woken);
	cr_assert_not(w[2].woken);
	cr_assert_eq(atomic_load(&q.count), 4u);
	cr_assert_eq(conc_waitq_wake_n(&q, 10), 4, "wake_n stops when the queue is empty");
	cr_assert_not(conc_waitq_has_waiters(&q));
	for (int i = 0; i < 6; i++)
		cr_assert(conc_waitq_remove(&q, &w[i]), "waiter %d", i);

	for (int i = 0; i < 6; i++)
		conc_waitq_enqueue(&q, &w[i]);
	cr_assert_not(w[0].woken, "enqueue clears the woken flag");
	cr_assert_eq(conc_waitq_wake_all(&q), 6);
	for (int i = 0; i < 6; i++) {
		cr_assert(w[i].woken);
		cr_assert(conc_waitq_remove(&q, &w[i]));
	}
	cr_assert_eq(atomic_load(&q.count), 0u);
	conc_waitq_destroy(&q);
}

Test(sys, waitq_greedy_waiters, .timeout = 120)
{
	struct conc_waitq q;
	conc_waitq_init(&q);
	/* Queue: G G O G O O */
	const unsigned flags[6] = {CONC_WAITER_GREEDY, CONC_WAITER_GREEDY, 0, CONC_WAITER_GREEDY, 0, 0};
	struct conc_waiter w[6];
	for (int i = 0; i < 6; i++) {
		conc_waiter_init(&w[i], flags[i]);
		cr_assert_eq(w[i].flags, flags[i]);
		conc_waitq_enqueue(&q, &w[i]);
	}

	/* wake_one: both greedy ones at the head, then the first ordinary one. */
	cr_assert(conc_waitq_wake_one(&q));
	cr_assert(w[0].woken && w[1].woken && w[2].woken);
	cr_assert_not(w[3].woken || w[4].woken || w[5].woken);
	cr_assert_eq(atomic_load(&q.count), 3u);

	/* wake_n(1): the greedy one in the way, plus one ordinary: 2 woken. */
	cr_assert_eq(conc_waitq_wake_n(&q, 1), 2);
	cr_assert(w[3].woken && w[4].woken);
	cr_assert_not(w[5].woken);
	cr_assert_eq(conc_waitq_wake_all(&q), 1);
	for (int i = 0; i < 6; i++)
		cr_assert(conc_waitq_remove(&q, &w[i]), "waiter %d", i);

	/* Only greedy waiters: wake_one wakes them all (no ordinary one to stop at). */
	struct conc_waiter g[3];
	for (int i = 0; i < 3; i++) {
		conc_waiter_init(&g[i], CONC_WAITER_GREEDY);
		conc_waitq_enqueue(&q, &g[i]);
	}
	cr_assert(conc_waitq_wake_one(&q));
	cr_assert_eq(atomic_load(&q.count), 0u);
	for (int i = 0; i < 3; i++)
		cr_assert(conc_waitq_remove(&q, &g[i]));

	/* wake_n(2) over O G O G O: O, G, O. */
	const unsigned f2[5] = {0, CONC_WAITER_GREEDY, 0, CONC_WAITER_GREEDY, 0};
	for (int i = 0; i < 5; i++) {
		conc_waiter_init(&w[i], f2[i]);
		conc_waitq_enqueue(&q, &w[i]);
	}
	cr_assert_eq(conc_waitq_wake_n(&q, 2), 3);
	cr_assert(w[0].woken && w[1].woken && w[2].woken);
	cr_assert_not(w[3].woken || w[4].woken);
	cr_assert(conc_waitq_remove(&q, &w[0]));
	cr_assert_not(conc_waitq_remove(&q, &w[3]));
	cr_assert_not(conc_waitq_remove(&q, &w[4]));
	cr_assert(conc_waitq_remove(&q, &w[1]) && conc_waitq_remove(&q, &w[2]));
	cr_assert_not(conc_waitq_has_waiters(&q));
	conc_waitq_destroy(&q);
}

#define WQ_THREADS 20 /* more than the 16 wake-ups wake_n batches */

Test(sys, waitq_wakes_parked_threads, .timeout = 120)
{
	struct conc_waitq q;
	conc_waitq_init(&q);
	_Atomic(int) go = 0;
	struct blocker b[WQ_THREADS];
	pthread_t t[WQ_THREADS];
	for (int i = 0; i < WQ_THREADS; i++) {
		b[i] = (struct blocker){.q = &q, .go = &go};
		atomic_init(&b[i].self, NULL);
		start(&t[i], blocker_main, &b[i]);
	}
	conc_test_wait_parked(&q, WQ_THREADS);
	atomic_store(&go, 1);

	cr_assert(conc_waitq_wake_one(&q));
	cr_assert_eq(atomic_load(&q.count), WQ_THREADS - 1u, "wake_one dequeues exactly one");
	cr_assert_eq(conc_waitq_wake_n(&q, 3), 3);
	cr_assert_eq(atomic_load(&q.count), WQ_THREADS - 4u);
	cr_assert_eq(conc_waitq_wake_all(&q), WQ_THREADS - 4u);
	for (int i = 0; i < WQ_THREADS; i++)
		join(t[i]);
	for (int i = 0; i < WQ_THREADS; i++) {
		cr_assert(b[i].woken, "thread %d was not woken by the queue", i);
		cr_assert(b[i].parked_true, "thread %d: its park did not consume a token", i);
	}
	cr_assert_not(conc_waitq_has_waiters(&q));
	conc_waitq_destroy(&q);
}

/* ------------------------------------------------------------------- status */

Test(sys, strerror_names_every_status, .timeout = 120)
{
	static const char *const names[] = {
		"CONC_OK",      "CONC_CLOSED",   "CONC_FULL",     "CONC_EMPTY",
		"CONC_TIMEDOUT", "CONC_CANCELED", "CONC_INVALID",  "CONC_NOMEM",
		"CONC_OVERFLOW", "CONC_BUSY",     "CONC_REJECTED", "CONC_UNSUPPORTED", "CONC_WOULDBLOCK",
	};
	cr_assert_eq(sizeof names / sizeof names[0], (size_t)CONC_STATUS_COUNT__,
		     "a status was added: name it here too");
	const char *unknown = conc_strerror(-1);
	cr_assert_not_null(unknown);
	for (int s = 0; s < CONC_STATUS_COUNT__; s++) {
		const char *m = conc_strerror(s);
		cr_assert_not_null(m);
		size_t n = strlen(names[s]);
		cr_assert(strncmp(m, names[s], n) == 0 && m[n] == ':', "status %d reads \"%s\"", s, m);
		cr_assert_gt(strlen(m), n + 2, "a meaning follows the name");
		cr_assert_str_neq(m, unknown);
		for (int o = 0; o < s; o++)
			cr_assert_str_neq(m, conc_strerror(o));
	}
	cr_assert_eq(CONC_OK, 0, "zero is success");
}

Test(sys, strerror_out_of_range_is_unknown, .timeout = 120)
{
	const int bad[] = {-1, CONC_STATUS_COUNT__, CONC_STATUS_COUNT__ + 1, 1000, INT32_MAX, INT32_MIN};
	const char *unknown = conc_strerror(bad[0]);
	cr_assert_not_null(unknown);
	cr_assert(strstr(unknown, "unknown") != NULL, "\"%s\"", unknown);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *m = conc_strerror(bad[i]);
		cr_assert_not_null(m, "conc_strerror(%d)", bad[i]);
		cr_assert_str_eq(m, unknown, "conc_strerror(%d)", bad[i]);
	}
}
