/* SPDX-License-Identifier: MIT */
#ifndef CONC_SYS_H
#define CONC_SYS_H

/*
 * conc/sys.h: the platform layer.  Everything above it waits through what is
 * here, and through nothing else.
 *
 *  - CONC_CACHELINE and CONC_ALIGNED(): padding that keeps fields written by
 *    different threads on different cache lines.
 *  - conc_cpu_relax() and struct conc_backoff: bounded spinning.  A backoff
 *    spins with exponentially more pause instructions, then yields the CPU;
 *    callers use it only for waits that another thread's progress ends (a
 *    neighbour finishing a copy it started), never to wait for an event.
 *  - Time: CLOCK_MONOTONIC nanoseconds and struct conc_deadline, the one
 *    absolute deadline type of the toolkit, with a "forever" value and a
 *    "poll" value (already passed: try once, never wait).  Relative waits are
 *    built on deadlines, never the reverse.  Wall-clock time is never used, so
 *    setting the clock does not shorten or stretch a wait.
 *  - struct conc_lock: a small mutex for slow paths (waiter lists, context
 *    trees).  It spins briefly, then sleeps in the kernel.  It is never held
 *    across a wait or a call into user code.
 *  - struct conc_parker: one per thread (conc_parker_self()).  Every blocking
 *    call in conc parks its thread here and is woken by conc_parker_unpark.
 *    A parker holds one token: an unpark before the park makes the park
 *    return at once, so a wake-up between "register" and "park" is not lost.
 *    Parks may also return spuriously; callers re-check their condition.
 *
 * On Linux, the lock and the parker sleep on private futexes with absolute
 * CLOCK_MONOTONIC timeouts (FUTEX_WAIT_BITSET); EINTR, EAGAIN and spurious
 * returns are absorbed by the callers' re-check loops.  Elsewhere, or when
 * CONC_NO_FUTEX is defined, they use a pthread mutex and a condition variable
 * on CLOCK_MONOTONIC (pthread_condattr_setclock).
 *
 * Feature macros: conc needs POSIX (clock_gettime, pthreads) and, on Linux,
 * syscall().  This header defines _DEFAULT_SOURCE when nothing else was
 * chosen, which works when conc.h is included before any system header;
 * otherwise compile with -D_DEFAULT_SOURCE (or -std=gnu11).
 *
 * Thread safety: conc_lock and conc_parker_unpark may be used from any
 * thread; conc_parker_park_until only by the thread that owns the parker.
 */

#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE) && \
	!defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <pthread.h>

#ifdef __cplusplus
#include <stdatomic.h> /* C++23 and later */
#define CONC_ALIGNED(n) alignas(n)
#define CONC__THREAD_LOCAL thread_local
extern "C" {
#else
#include <stdatomic.h>
#include <stdalign.h>
#define CONC_ALIGNED(n) _Alignas(n)
#define CONC__THREAD_LOCAL _Thread_local
#endif

#if defined(__linux__) && !defined(CONC_NO_FUTEX)
#define CONC_HAVE_FUTEX 1
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if !defined(CLOCK_MONOTONIC)
#error "conc needs POSIX clocks: include conc.h before system headers, or compile with -D_DEFAULT_SOURCE"
#endif

#ifndef CONC_ASSERT
#include <assert.h>
/* Internal invariants; define CONC_ASSERT before including conc to route them elsewhere. */
#define CONC_ASSERT(x) assert(x)
#endif

/* Padding unit between fields written by different threads.  64 bytes is the
 * line size of current x86-64 and most Arm cores; override if yours differs. */
/* How the layers that start threads (pool, pipeline, fan-out) create them:
 * returns 0 or an error number, as pthread_create.  Define it before
 * including conc to route thread creation elsewhere (tests inject failures
 * this way). */
#ifndef CONC_THREAD_CREATE
#define CONC_THREAD_CREATE(thread, fn, arg) pthread_create((thread), NULL, (fn), (arg))
#endif

#ifndef CONC_CACHELINE
#define CONC_CACHELINE 64
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CONC__UNUSED __attribute__((unused))
#define CONC__LIKELY(x) __builtin_expect(!!(x), 1)
#define CONC__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CONC__UNUSED
#define CONC__LIKELY(x) (x)
#define CONC__UNLIKELY(x) (x)
#endif

/* ---------------------------------------------------------------- spinning */

/* Tell the CPU we are in a spin loop (x86 PAUSE, Arm YIELD). */
static inline void conc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Give the CPU to another runnable thread. */
static inline void conc_yield(void)
{
	sched_yield();
}

/*
 * Exponential backoff for short waits on another thread's progress.
 * conc_backoff_spin() pauses 1, 2, 4 ... 2^CONC_SPIN_SHIFT times;
 * conc_backoff_snooze() does the same, then yields the CPU once the spin
 * budget is spent (so a preempted neighbour can run, which matters with more
 * threads than cores).  conc_backoff_spun_out() says the budget is spent: a
 * caller that waits for an event should park now.
 */
#ifndef CONC_SPIN_SHIFT
#define CONC_SPIN_SHIFT 6
#endif

struct conc_backoff {
	unsigned step;
};

static inline void conc_backoff_spin(struct conc_backoff *b)
{
	unsigned n = 1u << (b->step < CONC_SPIN_SHIFT ? b->step : CONC_SPIN_SHIFT);
	for (unsigned i = 0; i < n; i++)
		conc_cpu_relax();
	if (b->step <= CONC_SPIN_SHIFT)
		b->step++;
}

static inline void conc_backoff_snooze(struct conc_backoff *b)
{
	if (b->step <= CONC_SPIN_SHIFT) {
		conc_backoff_spin(b);
	} else {
		conc_yield();
		if (b->step <= CONC_SPIN_SHIFT + 2)
			b->step++;
	}
}

#ifndef CONC_YIELD_LIMIT
#define CONC_YIELD_LIMIT 4
#endif

/*
 * One step of waiting for an event before parking: spin as conc_backoff_spin,
 * then yield the CPU CONC_YIELD_LIMIT times (with more threads than cores the
 * thread that will produce the event may be waiting for this CPU; a yield
 * lets it run without the cost of a sleep and a wake-up).  Returns false
 * once both budgets are spent: park now.
 */
static inline bool conc_backoff_wait(struct conc_backoff *b)
{
	if (b->step <= CONC_SPIN_SHIFT) {
		conc_backoff_spin(b);
		return true;
	}
	if (b->step <= CONC_SPIN_SHIFT + CONC_YIELD_LIMIT) {
		conc_yield();
		b->step++;
		return true;
	}
	return false;
}

static inline bool conc_backoff_spun_out(const struct conc_backoff *b)
{
	return b->step > CONC_SPIN_SHIFT;
}

/* -------------------------------------------------------------------- time */

/* Nanoseconds on CLOCK_MONOTONIC. */
static inline int64_t conc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * An absolute point on CLOCK_MONOTONIC.  ns == INT64_MAX is "forever";
 * any value at or before now (conc_deadline_poll() is INT64_MIN) means
 * "do not wait": a call tries once, then reports CONC_TIMEDOUT.
 */
struct conc_deadline {
	int64_t ns;
};

static inline struct conc_deadline conc_deadline_at_ns(int64_t monotonic_ns)
{
	struct conc_deadline d;
	d.ns = monotonic_ns;
	return d;
}

static inline struct conc_deadline conc_deadline_forever(void)
{
	return conc_deadline_at_ns(INT64_MAX);
}

static inline struct conc_deadline conc_deadline_poll(void)
{
	return conc_deadline_at_ns(INT64_MIN);
}

/* now + ns, saturating at forever; a negative ns gives a deadline in the past. */
static inline struct conc_deadline conc_deadline_in_ns(int64_t ns)
{
	int64_t now = conc_now_ns();
	if (ns > 0 && now > INT64_MAX - ns)
		return conc_deadline_forever();
	return conc_deadline_at_ns(now + ns);
}

static inline struct conc_deadline conc_deadline_in_ms(int64_t ms)
{
	if (ms > INT64_MAX / 1000000)
		return conc_deadline_forever();
	if (ms < INT64_MIN / 1000000)
		return conc_deadline_poll();
	return conc_deadline_in_ns(ms * 1000000);
}

static inline bool conc_deadline_is_forever(struct conc_deadline d)
{
	return d.ns == INT64_MAX;
}

static inline bool conc_deadline_expired(struct conc_deadline d)
{
	return !conc_deadline_is_forever(d) && conc_now_ns() >= d.ns;
}

static inline struct conc_deadline conc_deadline_min(struct conc_deadline a, struct conc_deadline b)
{
	return a.ns < b.ns ? a : b;
}

/*
 * An injectable clock for time-dependent logic (rate limiters, breakers):
 * now_ns returns nanoseconds on any monotonic scale the caller likes.  A
 * NULL clock, or one whose now_ns is NULL, is CLOCK_MONOTONIC.  Tests pass
 * a clock they advance by hand, so rate and state decisions are exact.
 * Waiting still happens on the real clock: a layer that must wait turns a
 * span measured on its clock into a real deadline.
 */
struct conc_clock {
	int64_t (*now_ns)(void *arg);
	void *arg;
};

static inline int64_t conc_clock_now(const struct conc_clock *c)
{
	if (c == NULL || c->now_ns == NULL)
		return conc_now_ns();
	return c->now_ns(c->arg);
}

static inline struct timespec conc__timespec(struct conc_deadline d)
{
	struct timespec ts;
	int64_t ns = d.ns < 0 ? 0 : d.ns;
	ts.tv_sec = (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	return ts;
}

/* ------------------------------------------------------------------- futex */

#ifdef CONC_HAVE_FUTEX
/*
 * Sleep while *word == expected, until woken or until the deadline.
 * Returns on a wake, a timeout, a signal (EINTR), a changed value (EAGAIN),
 * or spuriously; the caller re-checks its own condition in every case.
 */
static inline void conc__futex_wait(_Atomic(uint32_t) *word, uint32_t expected, struct conc_deadline d)
{
	struct timespec ts, *tsp = NULL;
	if (!conc_deadline_is_forever(d)) {
		ts = conc__timespec(d);
		tsp = &ts;
	}
	/* FUTEX_WAIT_BITSET takes an absolute timeout on CLOCK_MONOTONIC. */
	(void)syscall(SYS_futex, (void *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
		      expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* Wake up to n threads sleeping on word.  A private futex key is the address
 * alone, so waking an address whose owner has gone is harmless: at worst a
 * later sleeper there wakes spuriously and re-checks. */
static inline void conc__futex_wake(_Atomic(uint32_t) *word, int n)
{
	(void)syscall(SYS_futex, (void *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}
#endif

/* -------------------------------------------------------------------- lock */

/*
 * A mutex for short critical sections on slow paths.  On Linux it is the
 * classic three-state futex lock (0 free, 1 held, 2 held and maybe sleepers),
 * spinning for a bounded while before it sleeps.
 */
struct conc_lock {
#ifdef CONC_HAVE_FUTEX
	_Atomic(uint32_t) word;
#else
	pthread_mutex_t mutex;
#endif
};

static inline void conc_lock_init(struct conc_lock *l)
{
#ifdef CONC_HAVE_FUTEX
	atomic_store_explicit(&l->word, 0, memory_order_relaxed);
#else
	pthread_mutex_init(&l->mutex, NULL);
#endif
}

static inline void conc_lock_destroy(struct conc_lock *l)
{
#ifdef CONC_HAVE_FUTEX
	(void)l;
#else
	pthread_mutex_destroy(&l->mutex);
#endif
}

static inline void conc_lock_acquire(struct conc_lock *l)
{
#ifdef CONC_HAVE_FUTEX
	uint32_t expected = 0;
	/* L1 acquire: pairs with L2 in conc_lock_release(). */
	if (CONC__LIKELY(atomic_compare_exchange_strong_explicit(&l->word, &expected, 1,
								  memory_order_acquire, memory_order_relaxed)))
		return;
	struct conc_backoff b = {0};
	while (!conc_backoff_spun_out(&b)) {
		conc_backoff_spin(&b);
		expected = 0;
		/* L1 acquire, as above. */
		if (atomic_load_explicit(&l->word, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(&l->word, &expected, 1, memory_order_acquire,
							    memory_order_relaxed))
			return;
	}
	/* L1 acquire, as above.  Taking it as 2 may cost one needless wake later;
	 * it never loses one. */
	while (atomic_exchange_explicit(&l->word, 2, memory_order_acquire) != 0)
		conc__futex_wait(&l->word, 2, conc_deadline_forever());
#else
	pthread_mutex_lock(&l->mutex);
#endif
}

static inline void conc_lock_release(struct conc_lock *l)
{
#ifdef CONC_HAVE_FUTEX
	/* L2 release: publishes the critical section; pairs with L1. */
	if (atomic_exchange_explicit(&l->word, 0, memory_order_release) == 2)
		conc__futex_wake(&l->word, 1);
#else
	pthread_mutex_unlock(&l->mutex);
#endif
}

/* ------------------------------------------------------------------ parker */

#define CONC__PARK_EMPTY 0u
#define CONC__PARK_NOTIFIED 1u
#define CONC__PARK_PARKED UINT32_MAX /* EMPTY - 1, so one fetch_sub moves both ways */

struct conc_parker {
	_Atomic(uint32_t) state;
#ifndef CONC_HAVE_FUTEX
	bool ready;
	pthread_mutex_t mutex;
	pthread_cond_t cond;
#endif
};

/*
 * The calling thread's parker.  It lives as long as the thread.  (Each
 * translation unit has its own copy; a waiter always records the parker it
 * parks on, so that is harmless.)  With the pthread fallback the mutex and
 * condition variable are created on first use and, like any thread-local,
 * not destroyed at thread exit (nothing to free on glibc or musl).
 */
static inline struct conc_parker *conc_parker_self(void)
{
	static CONC__THREAD_LOCAL struct conc_parker self;
#ifndef CONC_HAVE_FUTEX
	if (CONC__UNLIKELY(!self.ready)) {
		pthread_condattr_t attr;
		pthread_condattr_init(&attr);
		pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		pthread_cond_init(&self.cond, &attr);
		pthread_condattr_destroy(&attr);
		pthread_mutex_init(&self.mutex, NULL);
		self.ready = true;
	}
#endif
	return &self;
}

/*
 * Park the calling thread, which must own p, until a token is available or
 * the deadline passes.  Returns true if it consumed a token, false on
 * timeout.  May also return true/false early on a spurious wake-up only in
 * the sense that the caller's condition may still be false: always re-check.
 */
static inline bool conc_parker_park_until(struct conc_parker *p, struct conc_deadline d)
{
#ifdef CONC_HAVE_FUTEX
	/* P1 acquire: a token seen here makes the unparker's earlier writes
	 * visible; pairs with P2 in conc__parker_notify().  NOTIFIED -> EMPTY
	 * consumes the token; EMPTY -> PARKED announces a sleeper. */
	if (atomic_fetch_sub_explicit(&p->state, 1, memory_order_acquire) == CONC__PARK_NOTIFIED)
		return true;
	for (;;) {
		if (conc_deadline_expired(d))
			/* P1 acquire, as above. */
			return atomic_exchange_explicit(&p->state, CONC__PARK_EMPTY, memory_order_acquire) ==
			       CONC__PARK_NOTIFIED;
		conc__futex_wait(&p->state, CONC__PARK_PARKED, d);
		uint32_t expected = CONC__PARK_NOTIFIED;
		/* P1 acquire, as above. */
		if (atomic_compare_exchange_strong_explicit(&p->state, &expected, CONC__PARK_EMPTY,
							    memory_order_acquire, memory_order_relaxed))
			return true;
	}
#else
	bool got = false;
	struct timespec ts = conc__timespec(d);
	pthread_mutex_lock(&p->mutex);
	for (;;) {
		/* The mutex orders this with conc__parker_notify(); relaxed is enough. */
		if (atomic_load_explicit(&p->state, memory_order_relaxed) == CONC__PARK_NOTIFIED) {
			got = true;
			break;
		}
		if (conc_deadline_expired(d))
			break;
		/* Asleep: the same state word the futex parker shows. */
		atomic_store_explicit(&p->state, CONC__PARK_PARKED, memory_order_relaxed);
		if (conc_deadline_is_forever(d))
			pthread_cond_wait(&p->cond, &p->mutex);
		else
			pthread_cond_timedwait(&p->cond, &p->mutex, &ts);
	}
	atomic_store_explicit(&p->state, CONC__PARK_EMPTY, memory_order_relaxed);
	pthread_mutex_unlock(&p->mutex);
	return got;
#endif
}

/*
 * Unparking in two steps lets a waiter list hand out tokens under its lock
 * (while the waiter, and so its parker, is known to be alive) and make the
 * wake-up system call after dropping it.  conc__parker_notify() gives the
 * token and says whether conc__parker_kick() must follow.
 */
static inline bool conc__parker_notify(struct conc_parker *p)
{
#ifdef CONC_HAVE_FUTEX
	/* P2 release: pairs with P1 in conc_parker_park_until(). */
	return atomic_exchange_explicit(&p->state, CONC__PARK_NOTIFIED, memory_order_release) ==
	       CONC__PARK_PARKED;
#else
	pthread_mutex_lock(&p->mutex);
	atomic_store_explicit(&p->state, CONC__PARK_NOTIFIED, memory_order_relaxed);
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->mutex);
	return false;
#endif
}

static inline void conc__parker_kick(struct conc_parker *p)
{
#ifdef CONC_HAVE_FUTEX
	conc__futex_wake(&p->state, 1);
#else
	(void)p;
#endif
}

/* Give p a token, waking its thread if it sleeps.  The caller must know the
 * parker's thread is alive (its waiter is still registered somewhere). */
static inline void conc_parker_unpark(struct conc_parker *p)
{
	if (conc__parker_notify(p))
		conc__parker_kick(p);
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_SYS_H */
