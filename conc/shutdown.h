/* SPDX-License-Identifier: MIT */
#ifndef CONC_SHUTDOWN_H
#define CONC_SHUTDOWN_H

/*
 * conc/shutdown.h: graceful shutdown.  SIGINT/SIGTERM (or a programmatic
 * trigger) become the cancellation of one root context; registered
 * components are then stopped in reverse order of registration, all against
 * one drain deadline, and a report says which of them missed it.  A second
 * signal ends the process at once.
 *
 *   struct conc_shutdown sd;
 *   struct conc_shutdown_slot slots[4];
 *   static const int sigs[] = {SIGINT, SIGTERM};
 *   conc_shutdown_init(&sd, slots, 4);
 *   conc_shutdown_signals(&sd, sigs, 2);
 *   conc_shutdown_register(&sd, "db", db_stop, &db);          // stopped last
 *   conc_shutdown_register(&sd, "listener", srv_stop, &srv);  // stopped first
 *   ... start threads that watch conc_shutdown_ctx(&sd) ...
 *   conc_shutdown_wait(&sd);                    // a signal or a trigger
 *   conc_shutdown_run(&sd, conc_deadline_in_ms(5000));
 *   conc_shutdown_report(&sd, results, 4);      // name, status, missed
 *   conc_shutdown_destroy(&sd);                 // restores the old handlers
 *
 * How a signal becomes cancellation.  A signal handler may only do
 * async-signal-safe work, and conc_ctx_cancel takes locks, so the handler
 * does not cancel.  It does three things, all lock-free: a CAS that records
 * the first signal's number (sd->sig); _exit(128 + signo) if a signal was
 * recorded already (the second signal: "exit at once", with the status a
 * shell gives a process killed by that signal, and without running atexit
 * handlers or flushing stdio; made as the exit_group system call, because
 * sanitizers intercept _exit with code that is not async-signal-safe); and
 * an unpark (one atomic exchange and a
 * futex wake system call) of the thread that is blocked in
 * conc_shutdown_wait_until, if any.  That thread, the "converter", turns the
 * recorded signal into conc_ctx_cancel(root, CONC_SHUTDOWN_SIGNAL_CAUSE(sig)).
 * So there is no hidden thread, and the price is this rule: a signal
 * cancels the root context only once some thread calls
 * conc_shutdown_wait_until (or conc_shutdown_run); until then it is only
 * recorded.  A program that wants a dedicated watcher starts one itself, a
 * thread that calls conc_shutdown_wait.
 *
 * Any number of threads may wait at once.  One of them (whoever claims the
 * sd->converter slot first) is the one the handler wakes; the others wait on
 * the root context and on a handoff queue.  When the converter leaves
 * (timeout or its own context canceled) it clears the slot, waits out any
 * handler that might still be using its parker, and wakes one handoff
 * waiter, which claims the slot.  A signal that lands while the slot is
 * empty is not lost: handler and claimer form a Dekker handshake (handler:
 * record the signal, then read the slot; claimer: claim the slot, then read
 * the signal; both seq_cst), so one of them sees the other.
 *
 * Signals.  conc_shutdown_signals installs the handler with sigaction for up
 * to CONC_SHUTDOWN_MAX_SIGNALS signals, with every one of them in sa_mask
 * (a second signal waits until the first handler returns, then exits) and
 * SA_RESTART (system calls interrupted in other threads restart instead of
 * failing with EINTR: a program learns about the shutdown through the root
 * context, not through EINTR; conc's own waits absorb EINTR either way).
 * Signal dispositions are process-global, so only one conc_shutdown may own
 * signals at a time; another gets CONC_BUSY until the owner is destroyed,
 * which restores the previous dispositions.  Where the compiler supports
 * weak symbols (gcc, clang) the owner record is one per process, shared by
 * every translation unit; elsewhere it is one per translation unit, so keep
 * signal ownership in one file.  The handler needs the futex parker: on
 * builds without it (CONC_NO_FUTEX, non-Linux) conc_shutdown_signals returns
 * CONC_UNSUPPORTED, and programmatic triggers still work.  Only the first
 * signal counts as a request; a programmatic trigger does not make the next
 * signal a "second" one.  Under ThreadSanitizer, which delivers a signal
 * only when the receiving thread is inside an intercepted call, a signal
 * that the kernel gives to a thread parked in conc's raw futex wait stays
 * pending until that thread wakes; raise() (which signals the calling
 * thread) is delivered at once.
 *
 * Components.  conc_shutdown_register(sd, name, stop, arg) appends to the
 * caller's slot array given at init (no allocation, ever).  Registration is
 * open until shutdown is triggered (by a signal's conversion,
 * conc_shutdown_trigger or conc_shutdown_run): after that it returns
 * CONC_CLOSED, so the set conc_shutdown_run stops is fixed and every
 * component whose registration succeeded is stopped exactly once.
 * conc_shutdown_run calls each stop(arg, drain) in reverse order of
 * registration, on the calling thread, one after another, each with the same
 * absolute drain deadline.  A stop function should stop taking new work and
 * wait for work in flight until the deadline (through conc's _until calls),
 * returning CONC_OK, or CONC_TIMEDOUT if work was still in flight at the
 * deadline (then abandon or force it and return).  A component "missed the
 * deadline" if it returned CONC_TIMEDOUT or returned at or after the
 * deadline; it is still called when the deadline has already passed (a
 * passed deadline means "stop now, do not wait"), as conc's "try once".
 *
 * Who may call what:
 *   init, destroy          one thread, with no other call on sd running
 *   signals                any one thread (it is process-global)
 *   register, trigger,     any thread, concurrently with each other and
 *   wait_until, report,    with signals
 *   ctx, signal
 *   run                    any thread; the first call runs, later ones
 *                          return CONC_BUSY
 * None of these may be called from a signal handler: use the installed
 * handler.  Stop functions run on run's thread with no conc lock held; they
 * may call anything here except run and destroy (register returns
 * CONC_CLOSED).
 *
 * Progress: the handler is lock-free and async-signal-safe (it uses only
 * lock-free atomics, the futex system call and _exit, and keeps errno).
 * register and trigger take a short lock; wait_until blocks (parked, no CPU)
 * until a trigger, its deadline or its context; run blocks as long as the
 * stop functions do.
 *
 * Ownership: sd and the slot array are the caller's and must outlive every
 * call on sd; names are kept by pointer.  The root context lives in sd:
 * contexts derived from it must be destroyed before conc_shutdown_destroy.
 */

#include "ctx.h" /* first: sys.h sets the feature macros */

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#if ATOMIC_INT_LOCK_FREE != 2 || ATOMIC_POINTER_LOCK_FREE != 2
#error "conc/shutdown.h needs lock-free int and pointer atomics (the signal handler uses them)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* How many signals one conc_shutdown can handle. */
#define CONC_SHUTDOWN_MAX_SIGNALS 8

/* The cancellation cause of a shutdown started by signal sig: outside the
 * range of conc_status values; conc_shutdown_cause_signal() inverts it. */
#define CONC_SHUTDOWN_SIGNAL_BASE 0x10000
#define CONC_SHUTDOWN_SIGNAL_CAUSE(sig) (CONC_SHUTDOWN_SIGNAL_BASE + (sig))

/* What conc_shutdown_run recorded for one component. */
struct conc_shutdown_result {
	const char *name;        /* as registered */
	enum conc_status status; /* what its stop function returned */
	int64_t finished_ns;     /* CLOCK_MONOTONIC when it returned */
	bool missed;             /* CONC_TIMEDOUT, or returned at/after the drain deadline */
};

/* One registration (caller's memory, given to conc_shutdown_init; the
 * fields are private). */
struct conc_shutdown_slot {
	const char *name;
	enum conc_status (*stop)(void *arg, struct conc_deadline drain);
	void *arg;
	struct conc_shutdown_result result; /* written by run before it publishes it */
};

struct conc_shutdown {
	struct conc_ctx root;              /* canceled when shutdown starts */
	struct conc_lock lock;             /* guards count and closed */
	struct conc_shutdown_slot *slots;  /* fixed at init */
	size_t cap;                        /* fixed at init */
	size_t count;                      /* registered; under lock */
	bool closed;                       /* registration closed; under lock */
	size_t run_count;                  /* components run stops; published by stopped */
	_Atomic(size_t) stopped;           /* results published so far, in stop order */
	_Atomic(unsigned) run_state;       /* 0 not run, 1 running, 2 done */
	_Atomic(int) sig;                  /* first signal caught (0: none); written by the handler */
	_Atomic(struct conc_parker *) converter; /* the parker the handler wakes */
	_Atomic(unsigned) waiting;         /* threads inside wait_until */
	struct conc_waitq handoff;         /* waiters that may take over as converter */
	size_t nsig;                       /* signals owned (0: none) */
	int sigs[CONC_SHUTDOWN_MAX_SIGNALS];
	struct sigaction old[CONC_SHUTDOWN_MAX_SIGNALS]; /* restored by destroy */
	uint32_t magic;                    /* CONC__SHUTDOWN_MAGIC between init and destroy */
};

#define CONC__SHUTDOWN_MAGIC 0x5d0a7e11u

/*
 * The process-wide owner of the signals and the number of handlers running
 * now.  Weak definitions, so every translation unit that includes this
 * header shares one of each (see the header comment).
 */
#if defined(__GNUC__) || defined(__clang__)
#define CONC__SHUTDOWN_GLOBAL __attribute__((weak))
#else
#define CONC__SHUTDOWN_GLOBAL static
#endif
CONC__SHUTDOWN_GLOBAL _Atomic(struct conc_shutdown *) conc__shutdown_owner;
CONC__SHUTDOWN_GLOBAL _Atomic(unsigned) conc__shutdown_inflight;

static inline bool conc__shutdown_ok(const struct conc_shutdown *sd)
{
	return sd && sd->magic == CONC__SHUTDOWN_MAGIC;
}

/* The signal number behind a shutdown cause, or 0 if the cause is not a
 * signal's (a programmatic trigger's, CONC_CANCELED...). */
static inline int conc_shutdown_cause_signal(int cause)
{
	return cause > CONC_SHUTDOWN_SIGNAL_BASE && cause < CONC_SHUTDOWN_SIGNAL_BASE + 1024
		       ? cause - CONC_SHUTDOWN_SIGNAL_BASE
		       : 0;
}

/*
 * Initialise sd with room for cap components in slots (caller's memory;
 * NULL if cap is 0).  The root context starts live, with no deadline.
 * Returns CONC_OK or CONC_INVALID (sd NULL, slots NULL with cap > 0).
 * Owns no signals yet (conc_shutdown_signals).  Does not block or allocate.
 * Not thread-safe: no other call on sd may run during init.
 */
CONC_NODISCARD static inline enum conc_status conc_shutdown_init(struct conc_shutdown *sd,
								 struct conc_shutdown_slot *slots, size_t cap)
{
	if (!sd || (!slots && cap))
		return CONC_INVALID;
	if (conc_ctx_init_root(&sd->root) != CONC_OK)
		return CONC_INVALID;
	conc_lock_init(&sd->lock);
	conc_waitq_init(&sd->handoff);
	sd->slots = slots;
	sd->cap = cap;
	sd->count = 0;
	sd->closed = false;
	sd->run_count = 0;
	sd->nsig = 0;
	atomic_store_explicit(&sd->stopped, 0, memory_order_relaxed);
	atomic_store_explicit(&sd->run_state, 0, memory_order_relaxed);
	atomic_store_explicit(&sd->sig, 0, memory_order_relaxed);
	atomic_store_explicit(&sd->converter, NULL, memory_order_relaxed);
	atomic_store_explicit(&sd->waiting, 0, memory_order_relaxed);
	sd->magic = CONC__SHUTDOWN_MAGIC;
	return CONC_OK;
}

/* The root context: canceled when shutdown starts, with the cause given to
 * conc_shutdown_trigger or CONC_SHUTDOWN_SIGNAL_CAUSE(signo).  Components
 * pass it (or children of it) to their blocking calls.  NULL for a NULL or
 * uninitialised sd.  Valid until conc_shutdown_destroy. */
static inline struct conc_ctx *conc_shutdown_ctx(struct conc_shutdown *sd)
{
	return conc__shutdown_ok(sd) ? &sd->root : NULL;
}

/* The first signal the handler caught for sd (0 if none yet, or for a NULL
 * sd).  Lock-free; any thread. */
static inline int conc_shutdown_signal(struct conc_shutdown *sd)
{
	if (!conc__shutdown_ok(sd))
		return 0;
	/* Relaxed: only the number is read; the conversion that acts on it
	 * reads it again with H2's order. */
	return atomic_load_explicit(&sd->sig, memory_order_relaxed);
}

/* ------------------------------------------------------------ the handler */

/* Wait until no handler is running (one might still hold a parker or sd
 * it read before the caller unpublished it).  A handler runs a handful of
 * instructions; this waits only while one is preempted mid-way. */
static inline void conc__shutdown_quiesce(void)
{
	struct conc_backoff b = {0};
	/* H4 seq_cst: Dekker with H1 in conc__shutdown_on_signal(): after the
	 * caller's seq_cst unpublish, a handler that could still see the old
	 * value has already counted itself here. */
	while (atomic_load_explicit(&conc__shutdown_inflight, memory_order_seq_cst) != 0)
		conc_backoff_snooze(&b);
}

#ifdef CONC_HAVE_FUTEX
/* _exit(status), as the exit_group system call itself: sanitizers intercept
 * _exit to run leak checks, which take locks and can hang in a handler. */
static inline void conc__shutdown_exit(int status)
{
#ifdef SYS_exit_group
	(void)syscall(SYS_exit_group, status);
#endif
	_exit(status);
}

/* The signal handler: async-signal-safe (see the header comment). */
CONC__UNUSED static void conc__shutdown_on_signal(int signo)
{
	int saved = errno; /* the futex system call may set it */
	/* H1 seq_cst: announces this handler before it reads the owner and the
	 * converter; pairs with H4 in conc__shutdown_quiesce(). */
	atomic_fetch_add_explicit(&conc__shutdown_inflight, 1, memory_order_seq_cst);
	/* H1 seq_cst, as above. */
	struct conc_shutdown *sd = atomic_load_explicit(&conc__shutdown_owner, memory_order_seq_cst);
	if (sd) {
		int none = 0;
		/* H2 seq_cst: record the signal, then read the converter slot;
		 * pairs with H3 (claim the slot, then read the signal) in
		 * conc_shutdown_wait_until(). */
		if (!atomic_compare_exchange_strong_explicit(&sd->sig, &none, signo, memory_order_seq_cst,
							     memory_order_relaxed))
			conc__shutdown_exit(128 + signo);
		/* H2 seq_cst, as above. */
		struct conc_parker *p = atomic_load_explicit(&sd->converter, memory_order_seq_cst);
		if (p)
			conc_parker_unpark(p); /* futex parker: an exchange and a futex wake */
	}
	/* Release: the handler's accesses to sd and the parker happen before
	 * quiesce returns (its seq_cst load is also an acquire). */
	atomic_fetch_sub_explicit(&conc__shutdown_inflight, 1, memory_order_release);
	errno = saved;
}
#endif

/* Restore the dispositions sd replaced (the first n) and give up ownership. */
static inline void conc__shutdown_release_signals(struct conc_shutdown *sd, size_t n)
{
	for (size_t i = n; i-- > 0;)
		(void)sigaction(sd->sigs[i], &sd->old[i], NULL);
	/* Seq_cst: the unpublish half of the H1/H4 Dekker. */
	atomic_store_explicit(&conc__shutdown_owner, NULL, memory_order_seq_cst);
	conc__shutdown_quiesce();
	sd->nsig = 0;
}

/*
 * Make sd the owner of the n signals sigs[] (e.g. SIGINT and SIGTERM): the
 * first of them to arrive requests shutdown, the second exits the process
 * with status 128 + signo.  The previous dispositions are saved and put back
 * by conc_shutdown_destroy.
 * Returns CONC_OK; CONC_INVALID (sd or sigs NULL, n 0 or above
 * CONC_SHUTDOWN_MAX_SIGNALS, a duplicate, or a signal that cannot be caught
 * such as SIGKILL: nothing changes); CONC_BUSY if some conc_shutdown
 * (this one included) owns signals already; CONC_UNSUPPORTED without the
 * futex parker.  Process-global; does not block or allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_shutdown_signals(struct conc_shutdown *sd, const int *sigs,
								    size_t n)
{
	if (!conc__shutdown_ok(sd) || !sigs || n == 0 || n > CONC_SHUTDOWN_MAX_SIGNALS)
		return CONC_INVALID;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < n; i++) {
		if (sigs[i] <= 0 || sigs[i] == SIGKILL || sigs[i] == SIGSTOP || sigaddset(&sa.sa_mask, sigs[i]) != 0)
			return CONC_INVALID;
		for (size_t j = 0; j < i; j++)
			if (sigs[j] == sigs[i])
				return CONC_INVALID;
	}
#ifndef CONC_HAVE_FUTEX
	return CONC_UNSUPPORTED;
#else
	struct conc_shutdown *none = NULL;
	/* Seq_cst: the publish half of the H1/H4 Dekker (a handler that sees
	 * sd is waited out by the release). */
	if (!atomic_compare_exchange_strong_explicit(&conc__shutdown_owner, &none, sd, memory_order_seq_cst,
						     memory_order_relaxed))
		return CONC_BUSY;
	sa.sa_handler = conc__shutdown_on_signal;
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < n; i++) {
		sd->sigs[i] = sigs[i];
		if (sigaction(sigs[i], &sa, &sd->old[i]) != 0) {
			conc__shutdown_release_signals(sd, i);
			return CONC_INVALID;
		}
	}
	sd->nsig = n;
	return CONC_OK;
#endif
}

/* ------------------------------------------------------------ components */

/*
 * Register a component: stop(arg, drain) will be called by
 * conc_shutdown_run, after the stop functions of every component registered
 * later.  name (kept by pointer, must outlive sd) names it in the report.
 * Returns CONC_OK; CONC_INVALID (sd, name or stop NULL); CONC_CLOSED once
 * shutdown has been triggered; CONC_FULL when all cap slots are taken.
 * Any thread; takes a short lock; does not allocate.
 */
CONC_NODISCARD static inline enum conc_status
conc_shutdown_register(struct conc_shutdown *sd, const char *name,
		       enum conc_status (*stop)(void *arg, struct conc_deadline drain), void *arg)
{
	if (!conc__shutdown_ok(sd) || !name || !stop)
		return CONC_INVALID;
	enum conc_status s = CONC_OK;
	conc_lock_acquire(&sd->lock);
	/* A root canceled directly (conc_ctx_cancel on conc_shutdown_ctx)
	 * also closes registration. */
	if (sd->closed || conc_ctx_err(&sd->root) != CONC_OK) {
		s = CONC_CLOSED;
	} else if (sd->count == sd->cap) {
		s = CONC_FULL;
	} else {
		struct conc_shutdown_slot *slot = &sd->slots[sd->count++];
		slot->name = name;
		slot->stop = stop;
		slot->arg = arg;
	}
	conc_lock_release(&sd->lock);
	return s;
}

/*
 * Start shutdown: close registration and cancel the root context with cause
 * (0 means CONC_CANCELED; any other code of the caller's is kept as given),
 * waking every thread blocked with it or a descendant.  Returns CONC_OK if
 * this call started it, CONC_CANCELED if shutdown had started already
 * (nothing changes), CONC_INVALID for NULL.  Any thread (not a signal
 * handler); takes short locks; does not allocate.
 */
static inline enum conc_status conc_shutdown_trigger(struct conc_shutdown *sd, int cause)
{
	if (!conc__shutdown_ok(sd))
		return CONC_INVALID;
	if (conc_ctx_err(&sd->root) != CONC_OK)
		return CONC_CANCELED;
	conc_lock_acquire(&sd->lock);
	sd->closed = true;
	conc_lock_release(&sd->lock);
	enum conc_status s = conc_ctx_cancel(&sd->root, cause);
	return s == CONC_OK ? CONC_OK : CONC_CANCELED;
}

/* Turn a recorded signal into the trigger, if one is pending. */
static inline void conc__shutdown_convert(struct conc_shutdown *sd)
{
	/* H3 seq_cst: pairs with H2 in conc__shutdown_on_signal(). */
	int sig = atomic_load_explicit(&sd->sig, memory_order_seq_cst);
	if (sig != 0)
		(void)conc_shutdown_trigger(sd, CONC_SHUTDOWN_SIGNAL_CAUSE(sig));
}

/*
 * Block until shutdown has started (a signal, conc_shutdown_trigger, run, or
 * a cancel of the root context), the absolute deadline d passes, or ctx
 * (NULL for none) is done.  A caught signal is turned into the cancellation
 * of the root context here: see the header comment.
 * Returns CONC_OK once shutdown has started (also at once if it had);
 * CONC_TIMEDOUT (d or ctx's deadline passed; a passed d means "check once");
 * CONC_CANCELED (ctx canceled; shutdown had not started); CONC_INVALID for
 * a NULL or uninitialised sd.  Any number of threads at once; uses no CPU
 * while it waits; does not allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_shutdown_wait_until(struct conc_shutdown *sd,
								       struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!conc__shutdown_ok(sd))
		return CONC_INVALID;
	struct conc_deadline until = conc_deadline_min(d, conc_ctx_deadline(ctx));
	struct conc_parker *self = conc_parker_self();
	bool converter = false, handed = false;
	enum conc_status s;
	/* Relaxed: only destroy's "still in use" check reads it. */
	atomic_fetch_add_explicit(&sd->waiting, 1, memory_order_relaxed);
	for (;;) {
		conc__shutdown_convert(sd);
		if (conc_ctx_err(&sd->root) != CONC_OK) {
			s = CONC_OK;
			break;
		}
		if (ctx && (s = conc_ctx_err(ctx)) != CONC_OK)
			break;
		if (conc_deadline_expired(until)) {
			s = CONC_TIMEDOUT;
			break;
		}
		if (!converter) {
			struct conc_parker *none = NULL;
			/* H3 seq_cst: claim the slot, then (at the top of the
			 * loop) read the signal; pairs with H2. */
			if (atomic_compare_exchange_strong_explicit(&sd->converter, &none, self, memory_order_seq_cst,
								    memory_order_relaxed)) {
				converter = true;
				handed = false;
				continue;
			}
		}
		struct conc_waiter wr, wc, wh;
		conc_waiter_init(&wr, 0);
		conc_waiter_init(&wc, 0);
		conc_waiter_init(&wh, 0);
		bool idle = conc_ctx_watch(&sd->root, &wr) == CONC_OK;
		idle = conc_ctx_watch(ctx, &wc) == CONC_OK && idle;
		if (!converter) {
			conc_waitq_enqueue(&sd->handoff, &wh);
			/* H5 seq_cst: re-check after registering (W1); pairs
			 * with the converter's clear before its wake (H6). */
			idle = idle && atomic_load_explicit(&sd->converter, memory_order_seq_cst) != NULL;
		}
		/* H3 seq_cst: a signal recorded before the claim or the
		 * registration is seen here or at the top. */
		idle = idle && atomic_load_explicit(&sd->sig, memory_order_seq_cst) == 0;
		if (idle)
			conc_parker_park_until(self, until);
		conc_ctx_unwatch(&sd->root, &wr);
		conc_ctx_unwatch(ctx, &wc);
		if (!converter && conc_waitq_remove(&sd->handoff, &wh))
			handed = true;
	}
	if (converter) {
		/* H6 seq_cst: unpublish the parker (the H1/H4 Dekker), then let
		 * a handoff waiter claim the slot (its H5 re-check sees NULL,
		 * or this wake sees it). */
		atomic_store_explicit(&sd->converter, NULL, memory_order_seq_cst);
		conc__shutdown_quiesce();
		conc_waitq_wake_one(&sd->handoff);
	} else if (handed) {
		conc_waitq_wake_one(&sd->handoff); /* pass on a handoff this thread did not use */
	}
	/* Release: this thread's last touch of sd happens before a destroy
	 * that reads 0 (with acquire). */
	atomic_fetch_sub_explicit(&sd->waiting, 1, memory_order_release);
	return s;
}

/* Wait as long as it takes (a thread's conc_shutdown_wait_until with no
 * deadline and no context): CONC_OK or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_shutdown_wait(struct conc_shutdown *sd)
{
	return conc_shutdown_wait_until(sd, conc_deadline_forever(), NULL);
}

/*
 * Run the shutdown: trigger it if it has not started (a recorded signal's
 * cause first, else CONC_CANCELED), then call every registered component's
 * stop(arg, drain) in reverse order of registration, on this thread, and
 * record each result (conc_shutdown_report).  drain is the absolute
 * deadline shared by all of them (conc_deadline_in_ms(5000), say).
 * Returns CONC_OK if every component returned CONC_OK before the deadline;
 * CONC_TIMEDOUT if any missed it; otherwise the first other status a
 * component returned (in stop order); CONC_BUSY if run was called before
 * (running or done: the stops run once); CONC_INVALID for a NULL or
 * uninitialised sd.  Blocks as long as the stop functions do; allocates
 * nothing.
 */
CONC_NODISCARD static inline enum conc_status conc_shutdown_run(struct conc_shutdown *sd, struct conc_deadline drain)
{
	if (!conc__shutdown_ok(sd))
		return CONC_INVALID;
	unsigned idle = 0;
	/* Relaxed: the CAS only elects the one runner; the lock below orders
	 * the registrations it reads. */
	if (!atomic_compare_exchange_strong_explicit(&sd->run_state, &idle, 1, memory_order_relaxed,
						     memory_order_relaxed))
		return CONC_BUSY;
	conc__shutdown_convert(sd);
	(void)conc_shutdown_trigger(sd, 0);
	conc_lock_acquire(&sd->lock);
	sd->closed = true; /* the root may have been canceled directly */
	size_t n = sd->count;
	conc_lock_release(&sd->lock);
	sd->run_count = n;
	bool missed = false;
	enum conc_status first = CONC_OK;
	for (size_t k = 0; k < n; k++) {
		struct conc_shutdown_slot *slot = &sd->slots[n - 1 - k];
		enum conc_status s = slot->stop(slot->arg, drain);
		int64_t t = conc_now_ns();
		slot->result.name = slot->name;
		slot->result.status = s;
		slot->result.finished_ns = t;
		slot->result.missed = s == CONC_TIMEDOUT || (!conc_deadline_is_forever(drain) && t >= drain.ns);
		missed = missed || slot->result.missed;
		if (first == CONC_OK && s != CONC_OK && s != CONC_TIMEDOUT)
			first = s;
		/* R1 release: publishes the result and run_count; pairs with
		 * R2 in conc_shutdown_report(). */
		atomic_store_explicit(&sd->stopped, k + 1, memory_order_release);
	}
	/* Release: pairs with the acquire in conc_shutdown_destroy(). */
	atomic_store_explicit(&sd->run_state, 2, memory_order_release);
	return missed ? CONC_TIMEDOUT : first;
}

/*
 * Copy the results recorded so far by conc_shutdown_run, in stop order
 * (the last registered first), into out[0 .. cap) and return how many there
 * are (which may exceed cap: only cap are written).  0 before run, or for a
 * NULL sd or a NULL out with cap > 0.  Any thread, also while run is going
 * on (it sees the components finished so far); lock-free.
 */
static inline size_t conc_shutdown_report(struct conc_shutdown *sd, struct conc_shutdown_result *out, size_t cap)
{
	if (!conc__shutdown_ok(sd) || (!out && cap))
		return 0;
	/* R2 acquire: pairs with R1 in conc_shutdown_run(). */
	size_t k = atomic_load_explicit(&sd->stopped, memory_order_acquire);
	for (size_t i = 0; i < k && i < cap; i++)
		out[i] = sd->slots[sd->run_count - 1 - i].result;
	return k;
}

/*
 * Tear sd down: give back the signals it owns (restoring the previous
 * dispositions; a signal from now on gets them) and destroy the root
 * context.  Returns CONC_OK; CONC_BUSY (nothing changes) while a thread
 * waits in conc_shutdown_wait_until, run is running, or the root context
 * still has children or waiters; CONC_INVALID for a NULL or uninitialised
 * sd.  Calls racing with destroy are undefined; calls after it return
 * CONC_INVALID as long as the memory is left alone.
 */
CONC_NODISCARD static inline enum conc_status conc_shutdown_destroy(struct conc_shutdown *sd)
{
	if (!conc__shutdown_ok(sd))
		return CONC_INVALID;
	/* Acquire: pairs with the releases at the end of wait_until and run. */
	if (atomic_load_explicit(&sd->waiting, memory_order_acquire) != 0 ||
	    atomic_load_explicit(&sd->run_state, memory_order_acquire) == 1)
		return CONC_BUSY;
	if (conc_ctx_destroy(&sd->root) != CONC_OK)
		return CONC_BUSY;
	if (sd->nsig)
		conc__shutdown_release_signals(sd, sd->nsig);
	conc_waitq_destroy(&sd->handoff);
	conc_lock_destroy(&sd->lock);
	sd->magic = 0;
	return CONC_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_SHUTDOWN_H */
