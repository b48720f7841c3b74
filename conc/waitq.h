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
 * A select (conc/select.h) puts one waiter per case on several queues, all
 * pointing at one state word (claim).  A waker must win that word with a
 * CAS (CONC__SEL_WAITING -> CONC__SEL_WOKEN | tag) before it may dequeue
 * and wake such a waiter; if the CAS fails, the select has already been
 * claimed through another queue (or gave up) and the waker skips it and
 * wakes the next one, so no wake-up is spent on it.
 *
 * Progress: blocking (a short lock on the slow path).  Any thread may call
 * anything here; a waiter struct belongs to one thread at a time.
 */

#include "sys.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CONC_WAITER_GREEDY 1u

/* A select's state word (struct conc_waiter.claim): WAITING until one
 * thing claims it.  The low 30 bits of WOKEN and DONE carry the case tag. */
#define CONC__SEL_WAITING 0u
#define CONC__SEL_WOKEN 0x40000000u   /* | tag: woken through case tag, retry */
#define CONC__SEL_DONE 0x80000000u    /* | tag: a partner completed case tag */
#define CONC__SEL_BUSY 0xC0000000u    /* a partner is completing a case now */
#define CONC__SEL_ABORTED 0xC0000001u /* the owner gave up this round */
#define CONC__SEL_TAG 0x3FFFFFFFu

struct conc_waiter {
	struct conc_waiter *next, *prev; /* under the queue lock */
	struct conc_parker *parker;      /* the owner's; set at init */
	unsigned flags;                  /* CONC_WAITER_*; set at init */
	bool woken;                      /* under the queue lock */
	/* Select only (NULL otherwise): the select's state word, this
	 * waiter's case tag, and the case's element buffer. */
	_Atomic(uint32_t) *claim;
	uint32_t tag;
	void *buf;
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
	w->claim = NULL;
	w->tag = 0;
	w->buf = NULL;
}

/* Win w's select for value (a waker's or partner's claim); plain waiters
 * always win.  Under the queue lock, while w is queued (so alive). */
static inline bool conc__waiter_claim(struct conc_waiter *w, uint32_t value)
{
	if (!w->claim)
		return true;
	uint32_t expected = CONC__SEL_WAITING;
	/* C2 acq_rel: release publishes what the claimer did before (the state
	 * change it wakes for); pairs with C3 in the select's wait.  Acquire:
	 * the select's registration is visible. */
	return atomic_compare_exchange_strong_explicit(w->claim, &expected, value, memory_order_acq_rel,
						       memory_order_relaxed);
}

/* Whether anyone waits (a hint; W2 ordering as in wake_one). */
static inline bool conc_waitq_has_waiters(struct conc_waitq *q)
{
	/* W2 seq_cst: see the header comment. */
	return atomic_load_explicit(&q->count, memory_order_seq_cst) != 0;
}

/* Append w to q (lock held). */
static inline void conc__waitq_link(struct conc_waitq *q, struct conc_waiter *w)
{
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
}

/* Queue w (not queued already).  The caller must re-check its condition
 * with a seq_cst load before parking, and always finish with
 * conc_waitq_remove(). */
static inline void conc_waitq_enqueue(struct conc_waitq *q, struct conc_waiter *w)
{
	conc_lock_acquire(&q->lock);
	conc__waitq_link(q, w);
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

/* Dequeue w (already claimed) and give it a token (lock held); k collects
 * the wake-up system calls to make once the lock is dropped. */
static inline void conc__waitq_take(struct conc_waitq *q, struct conc_waiter *w, struct conc__kicks *k)
{
	conc__waitq_unlink(q, w);
	w->woken = true;
	if (conc__parker_notify(w->parker)) {
		if (k->n == sizeof k->p / sizeof k->p[0])
			conc__parker_kick(w->parker); /* list full: kick under the lock */
		else
			k->p[k->n++] = w->parker;
	}
}

static inline void conc__waitq_kick_all(struct conc__kicks *k)
{
	for (size_t i = 0; i < k->n; i++)
		conc__parker_kick(k->p[i]);
}

/* Wake up to n ordinary waiters of q, in queue order (lock held): skip a
 * select already claimed elsewhere.  Returns the number woken. */
static inline size_t conc__waitq_wake_locked(struct conc_waitq *q, size_t n, struct conc__kicks *k)
{
	size_t woken = 0, ordinary = 0;
	struct conc_waiter *w = q->head, *next;
	for (; w && ordinary < n; w = next) {
		next = w->next;
		if (!conc__waiter_claim(w, CONC__SEL_WOKEN | w->tag))
			continue;
		conc__waitq_take(q, w, k);
		woken++;
		if (!(w->flags & CONC_WAITER_GREEDY))
			ordinary++;
	}
	return woken;
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
	conc_lock_acquire(&q->lock);
	size_t woken = conc__waitq_wake_locked(q, n, &k);
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
