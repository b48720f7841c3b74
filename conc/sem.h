/* SPDX-License-Identifier: MIT */
#ifndef CONC_SEM_H
#define CONC_SEM_H

/*
 * conc/sem.h: a weighted counting semaphore with first-come, first-served
 * waiters (Go's golang.org/x/sync/semaphore, without its one mutex on every
 * call).
 *
 * A semaphore has a size (the most units it can hold) and a number of units
 * available.  conc_sem_acquire(s, n) takes n units, waiting while fewer are
 * free; conc_sem_release(s, n) gives n back.  n = 1 everywhere is the plain
 * counting semaphore; a semaphore of size K around a task is "at most K of
 * these at a time" (bounded parallelism; conc/group.h builds it in).
 *
 * Algorithm.  One 64-bit word holds the available count (low 63 bits) and a
 * QUEUED bit that is set exactly while the waiter list is non-empty.
 *  - Nobody waits (QUEUED clear): acquire and release are one compare-and-
 *    swap each on the word.  No lock, no system call.
 *  - Somebody waits (QUEUED set): acquirers never take units past the queue
 *    (no barging, so a large request is not starved by a stream of small
 *    ones) and releasers take the list's lock, add their units and hand
 *    them to the waiters at the head, in order, while they fit.  While QUEUED
 *    is set the word changes only under the lock.
 *  - A waiter that gives up (deadline, context) leaves the list under the
 *    lock; if it was at the head, the waiters behind it that now fit are
 *    granted at once.  A waiter granted in the same instant it gave up keeps
 *    the units and reports success (as Go's semaphore does).
 * Before it queues, an acquirer spins and yields the CPU a few times,
 * retrying the fast path: a queued waiter is served in order, which costs a
 * wake-up per hand-off, so a short wait should not queue at all (with 8
 * threads on 2 units and 2 cores this is the difference between 0.7 and 60+
 * million acquire/release pairs per second).  Once queued it spins and
 * yields again, then parks on its thread's parker; the granter sets its flag
 * and unparks it.  An idle waiter uses no CPU.
 *
 * Progress: try_acquire and release with nobody waiting are lock-free;
 * everything else takes a short lock (never held while user code runs).
 *
 * Concurrency: any thread may call anything except init and destroy, which
 * must not race other calls.  A semaphore lives in caller memory; destroy
 * it only when no call on it can still run (a granted waiter may still be
 * leaving acquire): its CONC_BUSY while threads wait is a diagnostic of
 * misuse, not a signal to retry.
 */

#include "ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest size (the count's 63 bits). */
#define CONC_SEM_MAX (UINT64_MAX >> 1)

#define CONC__SEM_QUEUED (UINT64_C(1) << 63)

struct conc__sem_waiter {
	struct conc__sem_waiter *next, *prev; /* under the lock */
	struct conc_parker *parker;           /* the owner's */
	uint64_t n;                           /* units wanted */
	_Atomic(bool) granted;                /* set under the lock, read by the owner */
};

struct conc_sem {
	/* Available units | CONC__SEM_QUEUED.  Written by CAS when QUEUED is
	 * clear, only under the lock while it is set. */
	_Atomic(uint64_t) word;
	uint64_t size;                         /* fixed at init */
	struct conc_lock lock;                 /* guards the list */
	struct conc__sem_waiter *head, *tail;  /* FIFO, under the lock */
};

/*
 * Initialise s with room for size units, avail of them free now (size for
 * a pool of K slots; 0 for a signal that release() posts).  Returns
 * CONC_INVALID for NULL, size 0 or avail > size, CONC_OVERFLOW for size >
 * CONC_SEM_MAX.  Does not allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_sem_init(struct conc_sem *s, uint64_t size, uint64_t avail)
{
	if (!s || size == 0 || avail > size)
		return CONC_INVALID;
	if (size > CONC_SEM_MAX)
		return CONC_OVERFLOW;
	atomic_init(&s->word, avail);
	s->size = size;
	conc_lock_init(&s->lock);
	s->head = s->tail = NULL;
	return CONC_OK;
}

/* Release s's resources.  Only when no other call on s can still run;
 * CONC_BUSY (nothing changes) if threads are found waiting, CONC_INVALID for
 * NULL. */
CONC_NODISCARD static inline enum conc_status conc_sem_destroy(struct conc_sem *s)
{
	if (!s)
		return CONC_INVALID;
	conc_lock_acquire(&s->lock);
	bool busy = s->head != NULL;
	conc_lock_release(&s->lock);
	if (busy)
		return CONC_BUSY;
	conc_lock_destroy(&s->lock);
	return CONC_OK;
}

/* Units free now (a snapshot); 0 for NULL. */
static inline uint64_t conc_sem_available(struct conc_sem *s)
{
	/* Relaxed: a snapshot, publishing nothing. */
	return s ? atomic_load_explicit(&s->word, memory_order_relaxed) & ~CONC__SEM_QUEUED : 0;
}

/* The size given at init; 0 for NULL. */
static inline uint64_t conc_sem_size(const struct conc_sem *s)
{
	return s ? s->size : 0;
}

static inline enum conc_status conc__sem_check(struct conc_sem *s, uint64_t n)
{
	if (!s)
		return CONC_INVALID;
	/* More than the size could never be granted: bad input, not a hang. */
	return n > s->size ? CONC_INVALID : CONC_OK;
}

/* Take n units if nobody queues and n are free.  One CAS when it works. */
static inline bool conc__sem_take(struct conc_sem *s, uint64_t n)
{
	/* Relaxed: only a guess for the CAS, which checks it. */
	uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
	while (!(w & CONC__SEM_QUEUED) && w >= n) {
		/* S1 acquire: what the releaser of these units did before is
		 * visible; pairs with S2 in conc_sem_release(). */
		if (atomic_compare_exchange_weak_explicit(&s->word, &w, w - n, memory_order_acquire,
							  memory_order_relaxed))
			return true;
	}
	return false;
}

/*
 * Take n units without waiting.  CONC_OK, or CONC_WOULDBLOCK when fewer are
 * free or other threads are already waiting (they come first).  n == 0 is
 * CONC_OK; CONC_INVALID for NULL or n > size.  Lock-free; any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_sem_try_acquire(struct conc_sem *s, uint64_t n)
{
	enum conc_status st = conc__sem_check(s, n);
	if (st != CONC_OK)
		return st;
	return n == 0 || conc__sem_take(s, n) ? CONC_OK : CONC_WOULDBLOCK;
}

/* Grant units to the waiters at the head, in order, while they fit; clear
 * QUEUED once the list is empty.  Lock held, QUEUED set (the word is ours). */
static inline void conc__sem_grant_locked(struct conc_sem *s)
{
	/* Relaxed: while QUEUED is set only lock holders write the word, and
	 * the lock orders them. */
	uint64_t avail = atomic_load_explicit(&s->word, memory_order_relaxed) & ~CONC__SEM_QUEUED;
	struct conc__sem_waiter *first = s->head, *rest = first;
	for (; rest && rest->n <= avail; rest = rest->next)
		avail -= rest->n;
	s->head = rest;
	if (rest)
		rest->prev = NULL;
	else
		s->tail = NULL;
	/* The count first, so a granted waiter never sees its own units as
	 * free.  S2' release, as S2: a fast-path acquirer that sees QUEUED
	 * clear takes units added under the lock. */
	atomic_store_explicit(&s->word, avail | (rest ? CONC__SEM_QUEUED : 0), memory_order_release);
	for (struct conc__sem_waiter *w = first, *next; w != rest; w = next) {
		/* Once the flag is set the owner may return: read w first. */
		next = w->next;
		struct conc_parker *p = w->parker;
		/* S3 release: the units and what their releaser did are the
		 * waiter's; pairs with S4 in conc_sem_acquire_until(). */
		atomic_store_explicit(&w->granted, true, memory_order_release);
		/* Under the lock: the owner passes through it before returning,
		 * so its thread (and parker) is alive here. */
		conc_parker_unpark(p);
	}
}

/* Queue w, or take the units if that became possible.  Returns true if it
 * took them (w not queued). */
static inline bool conc__sem_enqueue(struct conc_sem *s, struct conc__sem_waiter *w)
{
	conc_lock_acquire(&s->lock);
	uint64_t v = atomic_load_explicit(&s->word, memory_order_relaxed);
	for (;;) {
		if (!(v & CONC__SEM_QUEUED) && v >= w->n) {
			/* S1 acquire, as in conc__sem_take(). */
			if (atomic_compare_exchange_weak_explicit(&s->word, &v, v - w->n, memory_order_acquire,
								  memory_order_relaxed)) {
				conc_lock_release(&s->lock);
				return true;
			}
			continue;
		}
		/* S1' acquire, as S1: units already free when the list forms
		 * may go to a queued waiter through the lock, so whoever
		 * released them must happen before the granter hands them on
		 * (S2 pairs with this; later releasers come through the lock). */
		if ((v & CONC__SEM_QUEUED) ||
		    atomic_compare_exchange_weak_explicit(&s->word, &v, v | CONC__SEM_QUEUED, memory_order_acquire,
							  memory_order_relaxed))
			break;
	}
	w->next = NULL;
	w->prev = s->tail;
	if (s->tail)
		s->tail->next = w;
	else
		s->head = w;
	s->tail = w;
	conc_lock_release(&s->lock);
	return false;
}

/* Leave the list after giving up.  Returns true if the units were granted
 * meanwhile (then they are the caller's). */
static inline bool conc__sem_leave(struct conc_sem *s, struct conc__sem_waiter *w)
{
	conc_lock_acquire(&s->lock);
	/* Relaxed: the lock orders this with the granter's store. */
	bool granted = atomic_load_explicit(&w->granted, memory_order_relaxed);
	if (!granted) {
		if (w->prev)
			w->prev->next = w->next;
		else
			s->head = w->next;
		if (w->next)
			w->next->prev = w->prev;
		else
			s->tail = w->prev;
		/* The ones behind a departed head may fit now; an empty list
		 * clears QUEUED. */
		conc__sem_grant_locked(s);
	}
	conc_lock_release(&s->lock);
	return granted;
}

/*
 * Take n units, waiting in line (first come, first served) while fewer are
 * free, until the deadline d or ctx (NULL for none) is done.
 * Returns CONC_OK, CONC_TIMEDOUT, CONC_CANCELED (ctx's err), or CONC_INVALID
 * for NULL or n > size (it could never succeed).  n == 0 is CONC_OK at once.
 * A done context fails the call before it tries.  Blocks; spins and yields
 * briefly, then parks (no CPU while it waits).  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_sem_acquire_until(struct conc_sem *s, uint64_t n,
								     struct conc_deadline d, struct conc_ctx *ctx)
{
	enum conc_status st = conc__sem_check(s, n);
	if (st != CONC_OK || (ctx && (st = conc_ctx_err(ctx)) != CONC_OK))
		return st;
	if (n == 0 || conc__sem_take(s, n))
		return CONC_OK;
	if (conc_deadline_expired(d)) /* a passed deadline: tried once */
		return CONC_TIMEDOUT;
	struct conc_backoff b = {0};
	while (conc_backoff_wait(&b))
		if (conc__sem_take(s, n))
			return CONC_OK;

	struct conc__sem_waiter w;
	w.parker = conc_parker_self();
	w.n = n;
	atomic_init(&w.granted, false);
	if (conc__sem_enqueue(s, &w))
		return CONC_OK;

	struct conc_waiter cw;
	conc_waiter_init(&cw, 0);
	st = conc_ctx_watch(ctx, &cw);
	struct conc_deadline until = conc_deadline_min(d, conc_ctx_deadline(ctx));
	b.step = 0;
	for (;;) {
		/* S4 acquire: pairs with S3 in conc__sem_grant_locked(). */
		if (atomic_load_explicit(&w.granted, memory_order_acquire)) {
			/* Wait out the granter's unpark of our parker. */
			conc_lock_acquire(&s->lock);
			conc_lock_release(&s->lock);
			st = CONC_OK;
			break;
		}
		if (st != CONC_OK)
			break;
		if (conc_deadline_expired(until)) {
			st = ctx && conc_ctx_err(ctx) != CONC_OK ? conc_ctx_err(ctx) : CONC_TIMEDOUT;
			break;
		}
		if (!conc_backoff_wait(&b))
			conc_parker_park_until(w.parker, until);
		if (ctx)
			st = conc_ctx_err(ctx);
	}
	conc_ctx_unwatch(ctx, &cw);
	if (st != CONC_OK && conc__sem_leave(s, &w))
		st = CONC_OK;
	return st;
}

/* Take n units, waiting as long as it takes.  See conc_sem_acquire_until. */
CONC_NODISCARD static inline enum conc_status conc_sem_acquire(struct conc_sem *s, uint64_t n)
{
	return conc_sem_acquire_until(s, n, conc_deadline_forever(), NULL);
}

/*
 * Give n units back, handing them to waiters in line as they fit.  Returns
 * CONC_OK; CONC_OVERFLOW if that would leave more than size units free (a
 * release of units nobody acquired: nothing changes); CONC_INVALID for NULL.
 * n == 0 is CONC_OK.  Never blocks; lock-free while nobody waits.
 */
static inline enum conc_status conc_sem_release(struct conc_sem *s, uint64_t n)
{
	if (!s)
		return CONC_INVALID;
	if (n == 0)
		return CONC_OK;
	/* Relaxed: only a guess for the CAS, which checks it. */
	uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
	while (!(w & CONC__SEM_QUEUED)) {
		if (n > s->size - w)
			return CONC_OVERFLOW;
		/* S2 release: what this thread did while holding the units
		 * happens before the next acquirer's S1. */
		if (atomic_compare_exchange_weak_explicit(&s->word, &w, w + n, memory_order_release,
							  memory_order_relaxed))
			return CONC_OK;
	}
	conc_lock_acquire(&s->lock);
	/* Relaxed: the word may have changed (QUEUED cleared) before we got
	 * the lock; under it, QUEUED set means only we write. */
	w = atomic_load_explicit(&s->word, memory_order_relaxed);
	uint64_t avail = w & ~CONC__SEM_QUEUED;
	enum conc_status st = CONC_OK;
	if (n > s->size - avail) {
		st = CONC_OVERFLOW;
	} else if (!(w & CONC__SEM_QUEUED)) {
		/* The list emptied before we got the lock: the CAS path again. */
		conc_lock_release(&s->lock);
		return conc_sem_release(s, n);
	} else {
		atomic_store_explicit(&s->word, (avail + n) | CONC__SEM_QUEUED, memory_order_relaxed);
		conc__sem_grant_locked(s);
	}
	conc_lock_release(&s->lock);
	return st;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_SEM_H */
