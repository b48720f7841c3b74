/* SPDX-License-Identifier: MIT */
/*
 * test-sem: the weighted semaphore (conc/sem.h).  Threads that must be
 * blocked before the test acts are waited for until they are parked (no
 * sleep); nothing is timed.
 */
#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

/* How many waiters are queued on s and asleep in their parker. */
static size_t sem_parked(struct conc_sem *s)
{
	size_t n = 0;
	conc_lock_acquire(&s->lock);
	for (struct conc__sem_waiter *w = s->head; w; w = w->next)
		if (atomic_load_explicit(&w->parker->state, memory_order_relaxed) == CONC__PARK_PARKED)
			n++;
	conc_lock_release(&s->lock);
	return n;
}

static void wait_sem_parked(struct conc_sem *s, size_t n)
{
	while (sem_parked(s) < n)
		conc_yield();
}

static void sem_init(struct conc_sem *s, uint64_t size, uint64_t avail)
{
	cr_assert_eq(conc_sem_init(s, size, avail), CONC_OK);
}

static void sem_destroy(struct conc_sem *s)
{
	cr_assert_eq(conc_sem_destroy(s), CONC_OK);
}

/* A thread that acquires n units (with ctx, no deadline) and records what it
 * got and when, in grant order. */
struct taker {
	struct conc_sem *s;
	uint64_t n;
	struct conc_ctx *ctx;
	enum conc_status st;
	pthread_t thread;
	_Atomic(int) *order; /* shared grant counter */
	int rank;            /* 1 + the counter's value when this one got in */
};

static void *taker_main(void *arg)
{
	struct taker *t = arg;
	t->st = conc_sem_acquire_until(t->s, t->n, conc_deadline_forever(), t->ctx);
	if (t->st == CONC_OK && t->order)
		t->rank = atomic_fetch_add(t->order, 1) + 1;
	return NULL;
}

static void take_async(struct taker *t, struct conc_sem *s, uint64_t n, struct conc_ctx *ctx, _Atomic(int) *order)
{
	t->s = s;
	t->n = n;
	t->ctx = ctx;
	t->st = CONC_INVALID;
	t->order = order;
	t->rank = 0;
	start(&t->thread, taker_main, t);
}

Test(sem, bad_input)
{
	struct conc_sem s;
	cr_assert_eq(conc_sem_init(NULL, 1, 1), CONC_INVALID);
	cr_assert_eq(conc_sem_init(&s, 0, 0), CONC_INVALID, "size 0 could never be acquired");
	cr_assert_eq(conc_sem_init(&s, 2, 3), CONC_INVALID, "more free than the size");
	cr_assert_eq(conc_sem_init(&s, CONC_SEM_MAX + 1, 0), CONC_OVERFLOW);
	cr_assert_eq(conc_sem_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_sem_try_acquire(NULL, 1), CONC_INVALID);
	cr_assert_eq(conc_sem_acquire(NULL, 1), CONC_INVALID);
	cr_assert_eq(conc_sem_acquire_until(NULL, 1, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_sem_release(NULL, 1), CONC_INVALID);
	cr_assert_eq(conc_sem_available(NULL), 0);
	cr_assert_eq(conc_sem_size(NULL), 0);

	sem_init(&s, 3, 3);
	cr_assert_eq(conc_sem_try_acquire(&s, 4), CONC_INVALID, "more than the size can never succeed");
	cr_assert_eq(conc_sem_acquire(&s, 4), CONC_INVALID, "and must not hang");
	cr_assert_eq(conc_sem_available(&s), 3);
	sem_destroy(&s);
}

Test(sem, largest_size)
{
	struct conc_sem s;
	sem_init(&s, CONC_SEM_MAX, CONC_SEM_MAX);
	cr_assert_eq(conc_sem_try_acquire(&s, CONC_SEM_MAX), CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 0);
	cr_assert_eq(conc_sem_release(&s, CONC_SEM_MAX), CONC_OK);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OVERFLOW);
	cr_assert_eq(conc_sem_release(&s, UINT64_MAX), CONC_OVERFLOW, "no wrap-around");
	cr_assert_eq(conc_sem_available(&s), CONC_SEM_MAX);
	sem_destroy(&s);
}

Test(sem, counts_units)
{
	struct conc_sem s;
	sem_init(&s, 10, 10);
	cr_assert_eq(conc_sem_size(&s), 10);
	cr_assert_eq(conc_sem_try_acquire(&s, 0), CONC_OK, "zero units is a no-op");
	cr_assert_eq(conc_sem_try_acquire(&s, 7), CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 3);
	cr_assert_eq(conc_sem_try_acquire(&s, 4), CONC_WOULDBLOCK);
	cr_assert_eq(conc_sem_available(&s), 3, "a failed try takes nothing");
	cr_assert_eq(conc_sem_try_acquire(&s, 3), CONC_OK);
	cr_assert_eq(conc_sem_try_acquire(&s, 1), CONC_WOULDBLOCK);
	cr_assert_eq(conc_sem_acquire_until(&s, 1, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_sem_release(&s, 0), CONC_OK);
	cr_assert_eq(conc_sem_release(&s, 6), CONC_OK);
	cr_assert_eq(conc_sem_acquire(&s, 6), CONC_OK);
	cr_assert_eq(conc_sem_release(&s, 10), CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 10);
	sem_destroy(&s);
}

Test(sem, over_release_is_an_error_and_changes_nothing)
{
	struct conc_sem s;
	sem_init(&s, 4, 2);
	cr_assert_eq(conc_sem_release(&s, 3), CONC_OVERFLOW, "2 free + 3 > 4");
	cr_assert_eq(conc_sem_available(&s), 2);
	cr_assert_eq(conc_sem_release(&s, 2), CONC_OK);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OVERFLOW);
	cr_assert_eq(conc_sem_available(&s), 4);
	sem_destroy(&s);
}

Test(sem, over_release_while_waiters_queue)
{
	struct conc_sem s;
	sem_init(&s, 4, 1);
	struct taker t;
	take_async(&t, &s, 4, NULL, NULL);
	wait_sem_parked(&s, 1);
	cr_assert_eq(conc_sem_release(&s, 4), CONC_OVERFLOW, "1 free + 4 > 4, on the locked path");
	cr_assert_eq(conc_sem_available(&s), 1);
	cr_assert_eq(conc_sem_release(&s, 3), CONC_OK, "exactly fills the size: the waiter's 4");
	join(t.thread);
	cr_assert_eq(t.st, CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 0);
	cr_assert_eq(conc_sem_release(&s, 4), CONC_OK);
	sem_destroy(&s);
}

Test(sem, starts_empty_as_a_signal)
{
	struct conc_sem s;
	sem_init(&s, 1, 0);
	cr_assert_eq(conc_sem_try_acquire(&s, 1), CONC_WOULDBLOCK);
	struct taker t;
	take_async(&t, &s, 1, NULL, NULL);
	wait_sem_parked(&s, 1);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK);
	join(t.thread);
	cr_assert_eq(t.st, CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 0, "the posted unit went to the waiter");
	sem_destroy(&s);
}

/* What a releaser wrote before release is visible to the acquirer. */
struct handoff {
	struct conc_sem *s;
	uint64_t payload;
	uint64_t seen;
};

static void *handoff_reader(void *arg)
{
	struct handoff *h = arg;
	cr_assert_eq(conc_sem_acquire(h->s, 1), CONC_OK);
	h->seen = h->payload;
	return NULL;
}

Test(sem, release_publishes_to_the_acquirer)
{
	struct conc_sem s;
	sem_init(&s, 1, 0);
	struct handoff h = {&s, 0, 0};
	pthread_t r;
	start(&r, handoff_reader, &h);
	wait_sem_parked(&s, 1);
	h.payload = 42;
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK);
	join(r);
	cr_assert_eq(h.seen, 42);
	sem_destroy(&s);
}

Test(sem, no_barging_past_a_waiter)
{
	struct conc_sem s;
	sem_init(&s, 4, 0);
	struct taker big;
	take_async(&big, &s, 3, NULL, NULL);
	wait_sem_parked(&s, 1);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 1, "1 free, not enough for the waiter's 3");
	cr_assert_eq(conc_sem_try_acquire(&s, 1), CONC_WOULDBLOCK, "the waiter came first");
	cr_assert_eq(conc_sem_acquire_until(&s, 1, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_sem_release(&s, 2), CONC_OK);
	join(big.thread);
	cr_assert_eq(big.st, CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 0);
	cr_assert_eq(conc_sem_try_acquire(&s, 1), CONC_WOULDBLOCK);
	cr_assert_eq(conc_sem_release(&s, 5), CONC_OVERFLOW, "more than the size can never be held");
	cr_assert_eq(conc_sem_release(&s, 3), CONC_OK);
	cr_assert_eq(conc_sem_try_acquire(&s, 1), CONC_OK, "nobody queues now");
	sem_destroy(&s);
}

Test(sem, waiters_are_served_in_arrival_order)
{
	struct conc_sem s;
	sem_init(&s, 4, 0);
	_Atomic(int) order = 0;
	struct taker t[4];
	uint64_t want[4] = {4, 1, 2, 1};
	for (size_t i = 0; i < 4; i++) {
		take_async(&t[i], &s, want[i], NULL, &order);
		wait_sem_parked(&s, i + 1); /* queued in this order */
	}
	/* The head wants all 4: the small ones behind it wait, though 1, 2, 3
	 * free units would fit them. */
	cr_assert_eq(conc_sem_release(&s, 3), CONC_OK);
	cr_assert_eq(sem_parked(&s), 4);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK);
	join(t[0].thread);
	cr_assert_eq(t[0].rank, 1, "the big request went first");
	cr_assert_eq(conc_sem_release(&s, 4), CONC_OK); /* 1 + 2 + 1 fit at once */
	for (size_t i = 1; i < 4; i++) {
		join(t[i].thread);
		cr_assert_eq(t[i].st, CONC_OK);
	}
	cr_assert_eq(conc_sem_available(&s), 0);
	sem_destroy(&s);
}

Test(sem, canceled_head_lets_the_ones_behind_proceed)
{
	struct conc_sem s;
	sem_init(&s, 4, 1);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct taker head, small;
	take_async(&head, &s, 4, &ctx, NULL);
	wait_sem_parked(&s, 1);
	take_async(&small, &s, 1, NULL, NULL);
	wait_sem_parked(&s, 2);
	cr_assert_eq(conc_sem_available(&s), 1, "free, but the head's 4 do not fit");
	cr_assert_eq(conc_ctx_cancel(&ctx, 77), CONC_OK);
	join(head.thread);
	cr_assert_eq(head.st, CONC_CANCELED);
	join(small.thread);
	cr_assert_eq(small.st, CONC_OK, "the departed head's place went to the next in line");
	cr_assert_eq(conc_sem_available(&s), 0);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK);
	cr_assert_eq(conc_sem_try_acquire(&s, 1), CONC_OK, "QUEUED was cleared: the fast path works");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	sem_destroy(&s);
}

Test(sem, deadline_returns_timedout_and_leaves_no_waiter)
{
	struct conc_sem s;
	sem_init(&s, 1, 0);
	struct conc_deadline d = conc_deadline_in_ms(5);
	cr_assert_eq(conc_sem_acquire_until(&s, 1, d, NULL), CONC_TIMEDOUT);
	cr_assert(conc_deadline_expired(d));
	cr_assert_eq(sem_parked(&s), 0);
	cr_assert_null(s.head);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK);
	cr_assert_eq(conc_sem_available(&s), 1, "nobody was left in line to take it");
	sem_destroy(&s);
}

Test(sem, context_deadline_returns_timedout)
{
	struct conc_sem s;
	sem_init(&s, 1, 0);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ms(5)), CONC_OK);
	cr_assert_eq(conc_sem_acquire_until(&s, 1, conc_deadline_forever(), &ctx), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_err(&ctx), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK, "the waiter left the context");
	sem_destroy(&s);
}

Test(sem, a_done_context_fails_before_trying)
{
	struct conc_sem s;
	sem_init(&s, 1, 1);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	cr_assert_eq(conc_sem_acquire_until(&s, 1, conc_deadline_forever(), &ctx), CONC_CANCELED);
	cr_assert_eq(conc_sem_available(&s), 1);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	sem_destroy(&s);
}

Test(sem, cancel_from_another_thread_wakes_every_waiter)
{
	struct conc_sem s;
	sem_init(&s, 3, 0);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct taker t[3];
	for (size_t i = 0; i < 3; i++)
		take_async(&t[i], &s, i + 1, &ctx, NULL);
	wait_sem_parked(&s, 3);
	cr_assert_eq(conc_ctx_cancel(&ctx, 5), CONC_OK);
	for (size_t i = 0; i < 3; i++) {
		join(t[i].thread);
		cr_assert_eq(t[i].st, CONC_CANCELED);
	}
	cr_assert_null(s.head, "every waiter left the line");
	cr_assert_eq(conc_sem_release(&s, 3), CONC_OK);
	cr_assert_eq(conc_sem_try_acquire(&s, 3), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	sem_destroy(&s);
}

Test(sem, destroy_with_a_waiter_is_busy)
{
	struct conc_sem s;
	sem_init(&s, 1, 0);
	struct taker t;
	take_async(&t, &s, 1, NULL, NULL);
	wait_sem_parked(&s, 1);
	cr_assert_eq(conc_sem_destroy(&s), CONC_BUSY);
	cr_assert_eq(conc_sem_release(&s, 1), CONC_OK, "still usable after BUSY");
	join(t.thread);
	cr_assert_eq(t.st, CONC_OK);
	sem_destroy(&s);
}
