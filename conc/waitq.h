/* SPDX-License-Identifier: MIT */
#ifndef CONC_WAITQ_H
#define CONC_WAITQ_H

/*
 * conc/waitq.h: the waiter protocol every blocking call in conc uses.
 *
 * A thread that must wait puts a struct conc_waiter (on its own stack,
 * pointing at its parker) into a conc_waitq, RE-CHECKS the condition it waits
 * for, and only then parks.  A thread that changes that condition calls
 * conc_waitq_wake_one/_n/_all afterwards.  The handshake is Dekker-shaped:
 *
 *   waiter:  count += 1 (seq_cst, W1)      ; re-check state (seq_cst load)
 *   waker:   change state (seq_cst RMW)    ; load count (seq_cst, W2)
 *
 * In the single total order of seq_cst operations, either the waiter's
 * re-check sees the new state, or the waker's load sees the waiter: no
 * wake-up is lost.  When nobody waits the waker pays one load, no lock and no
 * system call.
 *
 * The list itself is guarded by a conc_lock and touched only on slow paths.
 * Wakers give tokens under the lock, while the waiter is still queued and so
 * alive, and make any wake-up system call after unlocking.  A waiter always
 * leaves through conc_waitq_remove(), which takes the lock: once it returns,
 * no waker touches the waiter again.  It also says whether the waiter was
 * woken (dequeued by a waker): a woken waiter that gives up without using
 * what it was woken for must pass the wake-up on with conc_waitq_wake_one(),
 * so none is swallowed.
 *
 * A CONC_WAITER_GREEDY waiter needs more than one unit of what it waits for
 * (an all-or-nothing bulk call).  conc_waitq_wake_one() wakes every greedy
 * waiter it meets at the head and keeps going until it has woken one
 * ordinary waiter, so a greedy waiter that cannot proceed yet never holds
 * up one that could.
 *
 * Progress: blocking (a short lock on the slow path).  Any thread may call
 * anything here; a waiter struct belongs to one thread at a time.
 */

#include "sys.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CONC_WAITER_GREEDY 1u

struct conc_waiter {
	struct conc_waiter *next, *prev; /* under the queue lock */
	struct conc_parker *parker;      /* the owner's; set at init */
	unsigned flags;                  /* CONC_WAITER_*; set at init */
	bool woken;                      /* under the queue lock */
};

struct conc_waitq {
	/* Number of queued waiters.  Written under the lock; read without it
	 * by wakers (W2) to skip the lock when nobody waits. */
	_Atomic(uint32_t) count;
	struct conc_lock lock;
	struct conc_waiter *head, *tail; /* under the lock */
};

static inline void conc_waitq_init(struct conc_waitq *q)
{
	atomic_store_explicit(&q->count, 0, memory_order_relaxed);
	conc_lock_init(&q->lock);
	q->head = q->tail = NULL;
}

static inline void conc_waitq_destroy(struct conc_waitq *q)
{
	conc_lock_destroy(&q->lock);
}

/* Prepare a waiter for the calling thread.  flags: 0 or CONC_WAITER_GREEDY. */
static inline void conc_waiter_init(struct conc_waiter *w, unsigned flags)
{
	w->next = w->prev = NULL;
	w->parker = conc_parker_self();
	w->flags = flags;
	w->woken = false;
}

/* Whether anyone waits (a hint; W2 ordering as in wake_one). */
static inline bool conc_waitq_has_waiters(struct conc_waitq *q)
{
	/* W2 seq_cst: see the header comment. */
	return atomic_load_explicit(&q->count, memory_order_seq_cst) != 0;
}

/* Queue w (not queued already).  The caller must re-check its condition
 * with a seq_cst load before parking, and always finish with
 * conc_waitq_remove(). */
static inline void conc_waitq_enqueue(struct conc_waitq *q, struct conc_waiter *w)
{
	conc_lock_acquire(&q->lock);
	w->woken = false;
	w->next = NULL;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	/* W1 seq_cst: the waiter's half of the handshake; pairs with W2 in
	 * conc_waitq_wake_*() (see the header comment). */
	atomic_fetch_add_explicit(&q->count, 1, memory_order_seq_cst);
	conc_lock_release(&q->lock);
}

static inline void conc__waitq_unlink(struct conc_waitq *q, struct conc_waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->next = w->prev = NULL;
	/* Under the lock; a stale non-zero count only sends a waker into the
	 * lock to find nobody, so relaxed is enough. */
	atomic_fetch_sub_explicit(&q->count, 1, memory_order_relaxed);
}

/* Take w out of q.  Returns true if a waker had already dequeued (woken) it.
 * After this returns, no waker will touch w or its parker. */
static inline bool conc_waitq_remove(struct conc_waitq *q, struct conc_waiter *w)
{
	conc_lock_acquire(&q->lock);
	bool woken = w->woken;
	if (!woken)
		conc__waitq_unlink(q, w);
	conc_lock_release(&q->lock);
	return woken;
}

/* Parkers that still need a wake-up system call once the lock is dropped. */
struct conc__kicks {
	size_t n;
	struct conc_parker *p[16];
};

/* Dequeue the head waiter and give it a token (lock held). */
static inline struct conc_waiter *conc__waitq_pop(struct conc_waitq *q, struct conc__kicks *k)
{
	struct conc_waiter *w = q->head;
	if (!w)
		return NULL;
	conc__waitq_unlink(q, w);
	w->woken = true;
	if (conc__parker_notify(w->parker)) {
		if (k->n == sizeof k->p / sizeof k->p[0])
			conc__parker_kick(w->parker); /* list full: kick under the lock */
		else
			k->p[k->n++] = w->parker;
	}
	return w;
}

static inline void conc__waitq_kick_all(struct conc__kicks *k)
{
	for (size_t i = 0; i < k->n; i++)
		conc__parker_kick(k->p[i]);
}

/*
 * Wake up to n ordinary waiters (and every greedy waiter met before the n-th
 * one).  Call after making the awaited state change with a seq_cst
 * operation.  Returns the number of waiters woken.
 */
static inline size_t conc_waitq_wake_n(struct conc_waitq *q, size_t n)
{
	/* W2 seq_cst: pairs with W1 in conc_waitq_enqueue(). */
	if (n == 0 || atomic_load_explicit(&q->count, memory_order_seq_cst) == 0)
		return 0;
	struct conc__kicks k;
	k.n = 0;
	size_t woken = 0, ordinary = 0;
	conc_lock_acquire(&q->lock);
	while (ordinary < n) {
		struct conc_waiter *w = conc__waitq_pop(q, &k);
		if (!w)
			break;
		woken++;
		if (!(w->flags & CONC_WAITER_GREEDY))
			ordinary++;
	}
	conc_lock_release(&q->lock);
	conc__waitq_kick_all(&k);
	return woken;
}

static inline bool conc_waitq_wake_one(struct conc_waitq *q)
{
	return conc_waitq_wake_n(q, 1) != 0;
}

static inline size_t conc_waitq_wake_all(struct conc_waitq *q)
{
	return conc_waitq_wake_n(q, SIZE_MAX);
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_WAITQ_H */
