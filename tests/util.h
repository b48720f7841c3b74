/* SPDX-License-Identifier: MIT */
#ifndef CONC_TEST_UTIL_H
#define CONC_TEST_UTIL_H

/*
 * Helpers shared by the Criterion tests and the plain stress programs:
 * a deadlock watchdog, a wait for threads to be parked (synchronisation,
 * not a sleep), and an exactly-once / per-producer-order checker.
 * Include after conc.h.
 */

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Abort the process with a message if it is still running after `seconds`:
 * a hang fails the test instead of stalling CI. */
static const char *conc_test_watchdog_name = "test";

static void conc_test_watchdog_fire(int sig)
{
	(void)sig;
	static const char msg1[] = "\nDEADLOCK WATCHDOG: ";
	static const char msg2[] = " did not finish in time (a blocked thread never woke?)\n";
	ssize_t r = write(2, msg1, sizeof msg1 - 1);
	r = write(2, conc_test_watchdog_name, strlen(conc_test_watchdog_name));
	r = write(2, msg2, sizeof msg2 - 1);
	(void)r;
	_exit(3);
}

static inline void conc_test_watchdog(const char *name, unsigned seconds)
{
	conc_test_watchdog_name = name;
	signal(SIGALRM, conc_test_watchdog_fire);
	alarm(seconds);
}

/* How many waiters of q are queued and asleep in their parker right now. */
static inline size_t conc_test_parked(struct conc_waitq *q)
{
	size_t n = 0;
	conc_lock_acquire(&q->lock);
	for (struct conc_waiter *w = q->head; w; w = w->next)
		if (atomic_load_explicit(&w->parker->state, memory_order_relaxed) == CONC__PARK_PARKED)
			n++;
	conc_lock_release(&q->lock);
	return n;
}

/* Wait (yielding, no sleep) until at least n waiters of q are parked, so the
 * test then acts on threads that are really blocked.  The watchdog bounds it. */
static inline void conc_test_wait_parked(struct conc_waitq *q, size_t n)
{
	while (conc_test_parked(q) < n)
		conc_yield();
}

/* The lock that guards a channel queue: a rendezvous channel (capacity 0)
 * guards both of its queues with sendq's lock. */
static inline struct conc_lock *conc_test_queue_lock(struct conc_chan *c, struct conc_waitq *q)
{
	return c->cap == 0 ? &c->sendq.lock : &q->lock;
}

/* conc_test_parked() for a channel's queue: senders (send) or receivers,
 * plain or select waiters alike. */
static inline size_t conc_test_chan_parked(struct conc_chan *c, bool send)
{
	struct conc_waitq *q = send ? &c->sendq : &c->recvq;
	struct conc_lock *l = conc_test_queue_lock(c, q);
	size_t n = 0;
	conc_lock_acquire(l);
	for (struct conc_waiter *w = q->head; w; w = w->next)
		if (atomic_load_explicit(&w->parker->state, memory_order_relaxed) == CONC__PARK_PARKED)
			n++;
	conc_lock_release(l);
	return n;
}

/* Wait (yielding) until at least n senders (send) or receivers of c are
 * parked; works for rendezvous channels and for select waiters. */
static inline void conc_test_wait_chan_parked(struct conc_chan *c, bool send, size_t n)
{
	while (conc_test_chan_parked(c, send) < n)
		conc_yield();
}

/* A clock the test moves by hand (for struct conc_clock): reads and
 * advances are atomic so stress threads may share it. */
struct conc_test_clock {
	_Atomic int64_t ns;
};

static inline int64_t conc_test_clock_read(void *arg)
{
	return atomic_load_explicit(&((struct conc_test_clock *)arg)->ns, memory_order_relaxed);
}

static inline struct conc_clock conc_test_clock_init(struct conc_test_clock *tc, int64_t start_ns)
{
	struct conc_clock c;
	atomic_init(&tc->ns, start_ns);
	c.now_ns = conc_test_clock_read;
	c.arg = tc;
	return c;
}

static inline void conc_test_clock_advance(struct conc_test_clock *tc, int64_t ns)
{
	atomic_fetch_add_explicit(&tc->ns, ns, memory_order_relaxed);
}

static inline void conc_test_clock_set(struct conc_test_clock *tc, int64_t ns)
{
	atomic_store_explicit(&tc->ns, ns, memory_order_relaxed);
}

/* Items are (producer << 40 | sequence). */
#define CONC_TEST_ITEM(p, i) (((uint64_t)(p) << 40) | (uint64_t)(i))
#define CONC_TEST_PRODUCER(v) ((size_t)((v) >> 40))
#define CONC_TEST_SEQ(v) ((size_t)((v) & ((UINT64_C(1) << 40) - 1)))

/* Exactly-once bookkeeping: one counter per (producer, sequence). */
struct conc_test_ledger {
	size_t producers, per_producer;
	_Atomic(unsigned char) *seen;
};

static inline void conc_test_ledger_init(struct conc_test_ledger *l, size_t producers, size_t per_producer)
{
	l->producers = producers;
	l->per_producer = per_producer;
	l->seen = (_Atomic(unsigned char) *)calloc(producers * per_producer, 1);
	if (!l->seen) {
		fprintf(stderr, "ledger: out of memory\n");
		exit(2);
	}
}

static inline void conc_test_ledger_free(struct conc_test_ledger *l)
{
	free((void *)l->seen);
}

/* Record one received item; returns 0, or -1 if it is out of range or a
 * duplicate. */
static inline int conc_test_ledger_mark(struct conc_test_ledger *l, uint64_t v)
{
	size_t p = CONC_TEST_PRODUCER(v), i = CONC_TEST_SEQ(v);
	if (p >= l->producers || i >= l->per_producer)
		return -1;
	return atomic_fetch_add_explicit(&l->seen[p * l->per_producer + i], 1, memory_order_relaxed) == 0 ? 0 : -1;
}

/* Number of items never received (0 when every item arrived exactly once). */
static inline size_t conc_test_ledger_missing(struct conc_test_ledger *l)
{
	size_t missing = 0;
	for (size_t k = 0; k < l->producers * l->per_producer; k++)
		missing += atomic_load_explicit(&l->seen[k], memory_order_relaxed) == 0;
	return missing;
}

/* Per-consumer FIFO check: items of one producer seen by one consumer must
 * come in increasing sequence.  last[] has one slot per producer, all
 * initialised to -1 (as size_t: SIZE_MAX). */
static inline int conc_test_fifo_ok(size_t *last, uint64_t v)
{
	size_t p = CONC_TEST_PRODUCER(v), i = CONC_TEST_SEQ(v);
	if (last[p] != SIZE_MAX && i <= last[p])
		return 0;
	last[p] = i;
	return 1;
}

#endif /* CONC_TEST_UTIL_H */
