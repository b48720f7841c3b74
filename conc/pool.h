/* SPDX-License-Identifier: MIT */
#ifndef CONC_POOL_H
#define CONC_POOL_H

/*
 * conc/pool.h: a fixed pool of worker threads fed by a bounded conc channel,
 * after Go's worker pool (jobs <-chan, N goroutines ranging over it), with
 * what C needs on top: back-pressure with deadlines and cancellation, waiting
 * for idle, a drain or abort shutdown that accounts for every task, and a
 * parallel-for in which the calling thread takes part.
 *
 *   struct conc_pool *p;
 *   struct conc_pool_config cfg = {.threads = 4, .queue_cap = 64};
 *   if (conc_pool_new(&p, &cfg) != CONC_OK) ...;
 *   if (conc_pool_submit(p, work, item, free_item) != CONC_OK) free_item(item);
 *   (void)conc_pool_wait_idle(p);              // queued + running == 0
 *   (void)conc_pool_free(p);                   // drains, joins, frees
 *
 * Algorithm.  A task is three words {fn, arg, drop}, copied into the pool's
 * channel (conc/chan.h, a Vyukov ring; no allocation per task).  Each worker
 * loops on conc_chan_recv(), which spins briefly and then parks, so an idle
 * worker uses no CPU, and a submit to a pool whose workers are busy makes no
 * system call and takes no lock.  Two counters, on cache lines of their own,
 * say how much work is outstanding: `submitted` (incremented by submitters
 * before they send) and `completed` (incremented by workers after a task ran
 * or was dropped, and by a submit that failed, to undo its increment); the
 * pool is idle when they are equal.  wait_idle parks on a conc_waitq; a
 * worker looks at that queue's waiter count (one load of a line nobody writes
 * while nobody waits) and only then reads `submitted` and wakes the waiters.
 *
 * Own workers.  A task that submits into its own pool while the queue is full
 * would deadlock if every worker did it, so a plain or _until submit from one
 * of the pool's workers that finds the queue full runs the task inline
 * instead (nested inline runs use the worker's stack, so a task tree that
 * keeps the queue full nests as deep as the tree).  "Own worker" is decided
 * by comparing pthread_self() against the pool's thread ids (a thread-local
 * in a header function would be one copy per translation unit); that scan
 * happens only on the full path, in wait_idle and in shutdown.
 *
 * Shutdown closes the channel: every later or blocked submit fails with
 * CONC_CLOSED, and the task is neither run nor dropped (its arg is still the
 * caller's); that includes tasks submitted by running tasks during a DRAIN.
 * DRAIN lets the workers run what is queued; ABORT cancels the pool's context
 * (conc_pool_ctx(), cause CONC_CLOSED, for running tasks that want to stop
 * early) and runs drop(arg) instead of fn(arg) for every task still queued.
 * Then it joins the workers.  So every accepted task (submit returned
 * CONC_OK) runs exactly once or is dropped exactly once.
 *
 * Progress and who may call what:
 *   conc_pool_submit*, try_submit, parallel_for  any thread, concurrently,
 *                                    including the pool's own tasks
 *   conc_pool_wait_idle*             any thread but the pool's workers
 *                                    (CONC_BUSY: it would wait for itself)
 *   conc_pool_shutdown*              any thread but the pool's workers
 *                                    (CONC_BUSY); the first call does it,
 *                                    a later or concurrent one gets CONC_CLOSED
 *   conc_pool_free                   once, when no other call on the pool can
 *                                    still run
 *   on_start/on_stop hooks           run on the worker thread, before its
 *                                    first and after its last task; they must
 *                                    not call this pool's functions
 * try_submit never blocks (it is the channel's try_send); the rest blocks
 * (and, where it can wait for other threads, takes a deadline and a
 * context).  Joining the workers cannot be bounded: shutdown returns only
 * after every task that had started has returned.
 *
 * Memory: conc_pool_new allocates one block (the pool, the thread table and
 * the ring; through CONC_ALIGNED_ALLOC/CONC_FREE of conc/chan.h) and starts
 * the threads (through CONC_THREAD_CREATE, overridable like the
 * allocation hooks).  conc_pool_parallel_for allocates one small block per
 * call when helpers are used (and does the work alone if it cannot).
 * Nothing else allocates.
 */

#include "status.h"
#include "sys.h" /* first: it sets the feature macros */
#include "waitq.h"
#include "ctx.h"
#include "chan.h"

#ifdef __cplusplus
extern "C" {
#endif


/* How conc_pool_shutdown treats what is still queued. */
enum conc_pool_mode {
	CONC_POOL_DRAIN, /* run every queued task, then stop */
	CONC_POOL_ABORT  /* run drop(arg) of every queued task instead of fn */
};

struct conc_pool_config {
	size_t threads;   /* workers, >= 1 */
	size_t queue_cap; /* queued tasks before submit blocks, >= 1 */
	/* Optional; run on each worker thread (worker = 0 .. threads-1) before
	 * its first task and after its last one.  They must not call this
	 * pool's functions. */
	void (*on_start)(void *hook_arg, size_t worker);
	void (*on_stop)(void *hook_arg, size_t worker);
	void *hook_arg;
};

/* The element of the pool's channel. */
struct conc__pool_task {
	void (*fn)(void *arg);
	void *arg;
	void (*drop)(void *arg);
};

/* One per worker: what its thread needs, and its id for "own worker". */
struct conc__pool_slot {
	struct conc_pool *pool;
	size_t index;
	pthread_t tid; /* written by conc_pool_new before the pool is published */
};

#define CONC__POOL_RUNNING 0
#define CONC__POOL_CLOSING 1 /* shutdown begun */
#define CONC__POOL_DONE 2    /* workers joined */

struct conc_pool {
	/* The task queue; its send and receive positions have lines of their own. */
	struct conc_chan queue;
	/* Tasks counted in: written (fetch_add) by submitters. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) submitted;
	/* Tasks counted out (ran, dropped, or a failed submit's undo): written
	 * by workers, by shutdown and by failing submitters. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) completed;
	/* wait_idle callers; its count is read by every worker after each task
	 * and written only when someone waits. */
	CONC_ALIGNED(CONC_CACHELINE) struct conc_waitq idleq;
	/* Read-mostly from here on. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(int) state; /* CONC__POOL_*; CAS by shutdown */
	_Atomic(bool) aborting;                           /* set once by an ABORT */
	size_t nthreads;
	struct conc__pool_slot *slots;
	void (*on_start)(void *hook_arg, size_t worker);
	void (*on_stop)(void *hook_arg, size_t worker);
	void *hook_arg;
	struct conc_ctx ctx; /* canceled by ABORT; conc_pool_ctx() */
};

/* ---------------------------------------------------------------- internals */

/* Count one task out; wake wait_idle callers if that made the pool idle. */
static inline void conc__pool_complete(struct conc_pool *p)
{
	/* K1 seq_cst: the state change of the waitq handshake on idleq; pairs
	 * with W1 and the re-check K3 in conc__pool_wait_idle(). */
	uint64_t done = atomic_fetch_add_explicit(&p->completed, 1, memory_order_seq_cst) + 1;
	/* W2 seq_cst (inside has_waiters): nobody waits, nothing more to do. */
	if (CONC__LIKELY(!conc_waitq_has_waiters(&p->idleq)))
		return;
	/* K2 seq_cst: a waiter exists; it only needs waking if we made the pool
	 * idle.  A newer submit (submitted > done) will be counted out later by
	 * whoever completes it, and that one wakes them. */
	if (atomic_load_explicit(&p->submitted, memory_order_seq_cst) == done)
		conc_waitq_wake_all(&p->idleq);
}

/* Whether the pool is idle: completed read before submitted, so equal
 * values mean there was an instant with nothing queued or running
 * (completed <= submitted always holds, and both only grow). */
static inline bool conc__pool_idle(struct conc_pool *p)
{
	/* K3 seq_cst: the waiter's re-check after W1; pairs with K1. */
	uint64_t c = atomic_load_explicit(&p->completed, memory_order_seq_cst);
	/* seq_cst, read after c: a completion counted in c had its submit
	 * counted before it (the task came through the channel, R1/A1), so
	 * this load sees that submit too. */
	uint64_t s = atomic_load_explicit(&p->submitted, memory_order_seq_cst);
	return c == s;
}

/* Whether the calling thread is one of p's workers (not yet joined). */
static inline bool conc__pool_is_worker(const struct conc_pool *p)
{
	/* Acquire: pairs with the DONE store in conc__pool_join(); after it,
	 * the ids may be reused by unrelated threads. */
	if (atomic_load_explicit(&p->state, memory_order_acquire) == CONC__POOL_DONE)
		return false;
	pthread_t self = pthread_self();
	for (size_t i = 0; i < p->nthreads; i++)
		if (pthread_equal(p->slots[i].tid, self))
			return true;
	return false;
}

/* Run or drop one received task, then count it out. */
static inline void conc__pool_run(struct conc_pool *p, const struct conc__pool_task *t)
{
	/* Relaxed: only the flag itself is read; a task received just before an
	 * ABORT may run, one received after it is dropped, either is fine. */
	if (CONC__UNLIKELY(atomic_load_explicit(&p->aborting, memory_order_relaxed))) {
		if (t->drop)
			t->drop(t->arg);
	} else {
		t->fn(t->arg);
	}
	conc__pool_complete(p);
}

static inline void *conc__pool_worker(void *arg)
{
	struct conc__pool_slot *slot = (struct conc__pool_slot *)arg;
	struct conc_pool *p = slot->pool;
	if (p->on_start)
		p->on_start(p->hook_arg, slot->index);
	struct conc__pool_task t;
	/* Receives until the channel is closed and drained. */
	while (conc_chan_recv(&p->queue, &t) == CONC_OK)
		conc__pool_run(p, &t);
	if (p->on_stop)
		p->on_stop(p->hook_arg, slot->index);
	return NULL;
}

/* Join the first n workers; the channel must be closed. */
static inline void conc__pool_join(struct conc_pool *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		(void)pthread_join(p->slots[i].tid, NULL);
	/* Release: pairs with the acquire in conc__pool_is_worker(). */
	atomic_store_explicit(&p->state, CONC__POOL_DONE, memory_order_release);
}

/* Out of line for the same reason as conc__chan_release(). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline, unused))
#endif
static void conc__pool_release(struct conc_pool *p)
{
	CONC_FREE(p);
}

/* Tear down and free a pool whose workers are joined and whose context is
 * destroyed (or was never handed out). */
static inline void conc__pool_destroy(struct conc_pool *p)
{
	enum conc_status s = conc_chan_destroy(&p->queue);
	CONC_ASSERT(s == CONC_OK); /* nobody can be blocked on it any more */
	(void)s;
	conc_waitq_destroy(&p->idleq);
	conc__pool_release(p);
}

/* Wait until idle, the deadline, or ctx done; no "own worker" check. */
static inline enum conc_status conc__pool_wait_idle(struct conc_pool *p, struct conc_deadline d,
						     struct conc_ctx *ctx)
{
	enum conc_status s = ctx ? conc_ctx_err(ctx) : CONC_OK;
	if (s != CONC_OK)
		return s;
	struct conc_backoff b = {0};
	for (;;) {
		if (conc__pool_idle(p))
			return CONC_OK;
		if (conc_deadline_expired(d))
			return CONC_TIMEDOUT;
		if (!conc_backoff_wait(&b))
			break;
	}
	struct conc_deadline until = conc_deadline_min(d, conc_ctx_deadline(ctx));
	struct conc_waiter w, cw;
	conc_waiter_init(&w, 0);
	conc_waiter_init(&cw, 0);
	enum conc_status cs = conc_ctx_watch(ctx, &cw);
	for (;;) {
		conc_waitq_enqueue(&p->idleq, &w);
		/* The re-check after W1 (K3). */
		if (conc__pool_idle(p))
			s = CONC_OK;
		else if (ctx && (cs != CONC_OK || (cs = conc_ctx_err(ctx)) != CONC_OK))
			s = cs;
		else if (conc_deadline_expired(d))
			s = CONC_TIMEDOUT;
		else
			s = CONC_WOULDBLOCK; /* internal: keep waiting */
		if (s == CONC_WOULDBLOCK)
			conc_parker_park_until(w.parker, until);
		/* Idle wake-ups are wake_all: nothing to pass on. */
		(void)conc_waitq_remove(&p->idleq, &w);
		if (s != CONC_WOULDBLOCK)
			break;
	}
	conc_ctx_unwatch(ctx, &cw);
	return s;
}

/* Run drop() of every task still queued (the channel is closed). */
static inline void conc__pool_drop_queued(struct conc_pool *p)
{
	struct conc__pool_task t;
	while (conc_chan_try_recv(&p->queue, &t) == CONC_OK) {
		if (t.drop)
			t.drop(t.arg);
		conc__pool_complete(p);
	}
}

/* Switch to ABORT: later receives drop, running tasks are asked to stop. */
static inline void conc__pool_abort(struct conc_pool *p)
{
	/* Relaxed: see conc__pool_run(). */
	atomic_store_explicit(&p->aborting, true, memory_order_relaxed);
	(void)conc_ctx_cancel(&p->ctx, CONC_CLOSED);
	conc__pool_drop_queued(p);
}

/* ------------------------------------------------------------- lifecycle */

/*
 * Create a pool of cfg->threads workers and a queue of cfg->queue_cap tasks,
 * and start the threads.  *out is set only on success.
 * Returns CONC_OK; CONC_INVALID for NULL out or cfg, threads == 0,
 * queue_cap == 0 or queue_cap > CONC_CHAN_MAX_CAP; CONC_OVERFLOW if the
 * sizes overflow; CONC_NOMEM if the allocation fails or a thread cannot be
 * created (the threads already started are stopped and joined, having run
 * their hooks, and everything is freed).
 * Allocates; blocks only to join threads on failure.  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_new(struct conc_pool **out,
							    const struct conc_pool_config *cfg)
{
	if (!out || !cfg || cfg->threads == 0 || cfg->queue_cap == 0 || cfg->queue_cap > CONC_CHAN_MAX_CAP)
		return CONC_INVALID;
	const size_t line = CONC_CACHELINE;
	size_t ring = conc_chan_buf_size(cfg->queue_cap, sizeof(struct conc__pool_task));
	size_t head = (sizeof(struct conc_pool) + line - 1) & ~(line - 1);
	if (ring == 0 || cfg->threads > (SIZE_MAX - line) / sizeof(struct conc__pool_slot))
		return CONC_OVERFLOW;
	size_t slots = (cfg->threads * sizeof(struct conc__pool_slot) + line - 1) & ~(line - 1);
	if (slots > SIZE_MAX - head || ring > SIZE_MAX - head - slots - line)
		return CONC_OVERFLOW;
	size_t total = (head + slots + ring + line - 1) & ~(line - 1);
	unsigned char *mem = (unsigned char *)CONC_ALIGNED_ALLOC(line, total);
	if (!mem)
		return CONC_NOMEM;
	struct conc_pool *p = (struct conc_pool *)mem;
	enum conc_status s = conc_chan_init(&p->queue, cfg->queue_cap, sizeof(struct conc__pool_task),
					    mem + head + slots, ring);
	CONC_ASSERT(s == CONC_OK);
	s = conc_ctx_init_root(&p->ctx);
	CONC_ASSERT(s == CONC_OK);
	(void)s;
	atomic_store_explicit(&p->submitted, 0, memory_order_relaxed);
	atomic_store_explicit(&p->completed, 0, memory_order_relaxed);
	conc_waitq_init(&p->idleq);
	atomic_store_explicit(&p->state, CONC__POOL_RUNNING, memory_order_relaxed);
	atomic_store_explicit(&p->aborting, false, memory_order_relaxed);
	p->nthreads = cfg->threads;
	p->slots = (struct conc__pool_slot *)(mem + head);
	p->on_start = cfg->on_start;
	p->on_stop = cfg->on_stop;
	p->hook_arg = cfg->hook_arg;
	for (size_t i = 0; i < cfg->threads; i++) {
		p->slots[i].pool = p;
		p->slots[i].index = i;
	}
	/* Thread creation publishes everything above to each worker.  A
	 * worker reads the ids only while running a task, which reached it
	 * through the channel after this function returned. */
	for (size_t i = 0; i < cfg->threads; i++) {
		pthread_t tid;
		if (CONC_THREAD_CREATE(&tid, conc__pool_worker, &p->slots[i]) != 0) {
			(void)conc_chan_close(&p->queue);
			conc__pool_join(p, i);
			s = conc_ctx_destroy(&p->ctx);
			CONC_ASSERT(s == CONC_OK); /* never handed out */
			conc__pool_destroy(p);
			return CONC_NOMEM;
		}
		p->slots[i].tid = tid;
	}
	*out = p;
	return CONC_OK;
}

/* The number of worker threads; 0 for NULL. */
static inline size_t conc_pool_threads(const struct conc_pool *p)
{
	return p ? p->nthreads : 0;
}

/* Tasks queued or running right now (a snapshot); 0 for NULL. */
static inline size_t conc_pool_pending(struct conc_pool *p)
{
	if (!p)
		return 0;
	/* Relaxed: a snapshot; completed first keeps it from going negative. */
	uint64_t c = atomic_load_explicit(&p->completed, memory_order_relaxed);
	uint64_t s = atomic_load_explicit(&p->submitted, memory_order_relaxed);
	return s > c ? (size_t)(s - c) : 0;
}

/*
 * The pool's context: canceled (err CONC_CANCELED, cause CONC_CLOSED) when
 * an ABORT shutdown begins, or when a DRAIN shutdown_until gives up and
 * switches to abort.  Tasks that block may pass it (or a child of it) to
 * their own waits so that an abort stops them.  Children of it must be
 * destroyed before conc_pool_free.  NULL for NULL.
 */
static inline struct conc_ctx *conc_pool_ctx(struct conc_pool *p)
{
	return p ? &p->ctx : NULL;
}

/*
 * Shut the pool down: stop accepting tasks (every later or blocked submit
 * returns CONC_CLOSED; its task is neither run nor dropped), then
 * DRAIN: let the workers run every queued task, waiting until d passes or
 * ctx is done; if that happens first, switch to ABORT for what is left.
 * ABORT: cancel conc_pool_ctx() (cause CONC_CLOSED) and run drop(arg) (when
 * not NULL) instead of fn(arg) for every task still queued.
 * In both modes it then joins every worker (each runs on_stop), which waits,
 * without bound, for running tasks to return.
 * Returns CONC_OK when done as asked; CONC_TIMEDOUT or CONC_CANCELED when a
 * DRAIN had to abort (the pool is shut down all the same); CONC_CLOSED if
 * shutdown had already begun (nothing done; another call may still be
 * joining); CONC_BUSY when called from one of the pool's workers (nothing
 * done); CONC_INVALID for NULL p or a bad mode.
 * Any thread but the pool's workers; one call does the work.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_shutdown_until(struct conc_pool *p, enum conc_pool_mode mode,
								       struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!p || (mode != CONC_POOL_DRAIN && mode != CONC_POOL_ABORT))
		return CONC_INVALID;
	if (conc__pool_is_worker(p))
		return CONC_BUSY;
	int expected = CONC__POOL_RUNNING;
	/* Relaxed: the CAS only elects the one caller that shuts down; the
	 * channel close below orders the rest. */
	if (!atomic_compare_exchange_strong_explicit(&p->state, &expected, CONC__POOL_CLOSING,
						     memory_order_relaxed, memory_order_relaxed))
		return CONC_CLOSED;
	enum conc_status s = CONC_OK;
	if (mode == CONC_POOL_ABORT)
		atomic_store_explicit(&p->aborting, true, memory_order_relaxed); /* as conc__pool_abort() */
	(void)conc_chan_close(&p->queue);
	if (mode == CONC_POOL_DRAIN)
		s = conc__pool_wait_idle(p, d, ctx);
	if (mode == CONC_POOL_ABORT || s != CONC_OK)
		conc__pool_abort(p);
	conc__pool_join(p, p->nthreads);
	return s;
}

/* conc_pool_shutdown_until with no deadline and no context: DRAIN runs
 * everything queued.  Same returns (never CONC_TIMEDOUT/CONC_CANCELED). */
CONC_NODISCARD static inline enum conc_status conc_pool_shutdown(struct conc_pool *p, enum conc_pool_mode mode)
{
	return conc_pool_shutdown_until(p, mode, conc_deadline_forever(), NULL);
}

/*
 * Shut down (DRAIN) if that has not begun, and free the pool.  NULL is a
 * no-op returning CONC_OK.  Returns CONC_BUSY (and frees nothing) from one of
 * the pool's workers, or if conc_pool_ctx() still has children or waiters.
 * Only when no other call on the pool can run; blocks while draining.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_free(struct conc_pool *p)
{
	if (!p)
		return CONC_OK;
	enum conc_status s = conc_pool_shutdown(p, CONC_POOL_DRAIN);
	if (s == CONC_BUSY || s == CONC_INVALID)
		return s;
	if (conc_ctx_destroy(&p->ctx) != CONC_OK)
		return CONC_BUSY;
	conc__pool_destroy(p);
	return CONC_OK;
}

/* -------------------------------------------------------------- submit */

/*
 * Queue fn(arg) to run on a worker, waiting for room until the absolute
 * deadline d passes or ctx (may be NULL) is done.  If the task is later
 * discarded by an ABORT shutdown, drop(arg) runs instead (drop may be NULL).
 * From one of the pool's own workers, a full queue does not block: the task
 * runs inline, in the caller, before this returns CONC_OK (a task that
 * submits into its own full pool cannot deadlock it).
 * Returns CONC_OK (queued, or run inline); CONC_CLOSED once shutdown has
 * begun, also for a submit blocked at that moment; CONC_TIMEDOUT;
 * CONC_CANCELED; CONC_INVALID for NULL p or fn.  On any failure the task was
 * neither run nor dropped: arg is still the caller's.  A done ctx fails the
 * call before it tries.  Any thread; no allocation; when the queue has room,
 * no lock and no system call unless a worker is parked.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_submit_until(struct conc_pool *p, void (*fn)(void *),
								     void *arg, void (*drop)(void *),
								     struct conc_deadline d, struct conc_ctx *ctx)
{
	if (CONC__UNLIKELY(!p || !fn))
		return CONC_INVALID;
	enum conc_status s;
	if (ctx && (s = conc_ctx_err(ctx)) != CONC_OK)
		return s;
	struct conc__pool_task t = {fn, arg, drop};
	/* Relaxed: counted before the send, which publishes it (R1) to the
	 * worker that counts the task out; see conc__pool_idle(). */
	atomic_fetch_add_explicit(&p->submitted, 1, memory_order_relaxed);
	s = conc_chan_try_send(&p->queue, &t);
	if (CONC__LIKELY(s == CONC_OK))
		return CONC_OK;
	if (s == CONC_FULL) {
		if (conc__pool_is_worker(p)) {
			conc__pool_complete(p); /* not queued: our own task keeps the pool busy */
			fn(arg);
			return CONC_OK;
		}
		s = conc_chan_send_until(&p->queue, &t, d, ctx);
		if (s == CONC_OK)
			return CONC_OK;
	}
	conc__pool_complete(p);
	return s;
}

/* conc_pool_submit_until with no deadline and no context.  Returns CONC_OK,
 * CONC_CLOSED or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_pool_submit(struct conc_pool *p, void (*fn)(void *), void *arg,
							       void (*drop)(void *))
{
	return conc_pool_submit_until(p, fn, arg, drop, conc_deadline_forever(), NULL);
}

/*
 * Queue fn(arg) if there is room now; never blocks, never runs the task
 * inline (also from a worker).  Returns CONC_OK, CONC_FULL, CONC_CLOSED or
 * CONC_INVALID; on failure arg is still the caller's.  Lock-free.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_try_submit(struct conc_pool *p, void (*fn)(void *),
								   void *arg, void (*drop)(void *))
{
	if (CONC__UNLIKELY(!p || !fn))
		return CONC_INVALID;
	struct conc__pool_task t = {fn, arg, drop};
	/* Relaxed: as in conc_pool_submit_until(). */
	atomic_fetch_add_explicit(&p->submitted, 1, memory_order_relaxed);
	enum conc_status s = conc_chan_try_send(&p->queue, &t);
	if (s != CONC_OK)
		conc__pool_complete(p);
	return s;
}

/* ------------------------------------------------------------ wait idle */

/*
 * Wait until nothing is queued or running (including tasks submitted while
 * it waits), until d passes or ctx is done.  Returns CONC_OK (there was an
 * instant at which the pool was idle), CONC_TIMEDOUT, CONC_CANCELED,
 * CONC_BUSY when called from one of the pool's workers (it would wait for
 * itself), CONC_INVALID for NULL.  Also works during and after shutdown
 * (dropped tasks count as done).  A done ctx fails the call before it looks.
 * Uses no CPU while parked.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_wait_idle_until(struct conc_pool *p, struct conc_deadline d,
									struct conc_ctx *ctx)
{
	if (!p)
		return CONC_INVALID;
	if (conc__pool_is_worker(p))
		return CONC_BUSY;
	return conc__pool_wait_idle(p, d, ctx);
}

/* conc_pool_wait_idle_until with no deadline and no context. */
CONC_NODISCARD static inline enum conc_status conc_pool_wait_idle(struct conc_pool *p)
{
	return conc_pool_wait_idle_until(p, conc_deadline_forever(), NULL);
}

/* ---------------------------------------------------------- parallel for */

/*
 * The state of one parallel_for shared with its helper tasks.  It lives on
 * the heap so that helpers still queued when the call returns (their pool
 * was busy) find it; the last of the caller and the helpers frees it.
 *
 * Indices are handed out in chunks from next (CAS, never past n).  A helper
 * raises in_flight before it tries to claim and lowers it when it stops; the
 * caller, once next has reached n, waits for in_flight == 0.  So a helper
 * touches body, arg and ctx only while the caller is still inside the call.
 */
struct conc__pfor {
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(size_t) next;
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(size_t) in_flight;
	_Atomic(size_t) refs;
	_Atomic(bool) cut; /* some claimed or unclaimed index was not run */
	size_t n, chunk;
	void (*body)(void *arg, size_t i);
	void *arg;
	struct conc_ctx *ctx;
	struct conc_waitq waitq; /* the caller, waiting for in_flight == 0 */
	bool heap;
};

/* Claim the next chunk: [*lo, *hi).  False once every index is handed out. */
static inline bool conc__pfor_claim(struct conc__pfor *f, size_t *lo, size_t *hi)
{
	/* Relaxed: the CAS validates it. */
	size_t cur = atomic_load_explicit(&f->next, memory_order_relaxed);
	while (cur < f->n) {
		size_t end = f->n - cur > f->chunk ? cur + f->chunk : f->n;
		/* seq_cst: orders the claim against the caller's in_flight
		 * check (P2) after it saw next == n; see conc__pfor_helper(). */
		if (atomic_compare_exchange_weak_explicit(&f->next, &cur, end, memory_order_seq_cst,
							  memory_order_relaxed)) {
			*lo = cur;
			*hi = end;
			return true;
		}
	}
	return false;
}

/* Stop handing out indices (ctx done): those not yet claimed are never run. */
static inline void conc__pfor_close(struct conc__pfor *f)
{
	/* seq_cst: as the claims it races with. */
	if (atomic_exchange_explicit(&f->next, f->n, memory_order_seq_cst) < f->n)
		atomic_store_explicit(&f->cut, true, memory_order_relaxed); /* read after the joins below */
}

/* Claim and run chunks until none is left or ctx is done. */
static inline void conc__pfor_work(struct conc__pfor *f)
{
	size_t lo, hi;
	while (conc__pfor_claim(f, &lo, &hi)) {
		if (f->ctx && conc_ctx_err(f->ctx) != CONC_OK) {
			/* Relaxed: read by the caller after in_flight (P1/P2) or
			 * its own close orders it. */
			atomic_store_explicit(&f->cut, true, memory_order_relaxed);
			conc__pfor_close(f);
			return;
		}
		for (size_t i = lo; i < hi; i++)
			f->body(f->arg, i);
	}
}

static inline void conc__pfor_unref(void *arg)
{
	struct conc__pfor *f = (struct conc__pfor *)arg;
	/* acq_rel: the release publishes this holder's use of f; the acquire
	 * makes every other holder's visible to the one that frees it. */
	if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
		conc_waitq_destroy(&f->waitq);
		CONC_FREE(f);
	}
}

/* A helper task: work while the caller is still inside the call. */
static inline void conc__pfor_helper(void *arg)
{
	struct conc__pfor *f = (struct conc__pfor *)arg;
	/* P1 seq_cst: announced before claiming, so a caller that saw next == n
	 * and then in_flight == 0 (P2) knows no claim of ours can succeed. */
	atomic_fetch_add_explicit(&f->in_flight, 1, memory_order_seq_cst);
	conc__pfor_work(f);
	/* P1 seq_cst: also the state change of the waitq handshake with the
	 * caller (W1, then its P2 re-check). */
	if (atomic_fetch_sub_explicit(&f->in_flight, 1, memory_order_seq_cst) == 1)
		conc_waitq_wake_all(&f->waitq);
	conc__pfor_unref(f);
}

/* The caller's wait for in_flight == 0 (helpers finishing their chunks). */
static inline void conc__pfor_wait(struct conc__pfor *f)
{
	struct conc_backoff b = {0};
	/* P2 seq_cst: pairs with P1. */
	while (atomic_load_explicit(&f->in_flight, memory_order_seq_cst) != 0) {
		if (conc_backoff_wait(&b))
			continue;
		struct conc_waiter w;
		conc_waiter_init(&w, 0);
		conc_waitq_enqueue(&f->waitq, &w);
		/* P2, the re-check after W1. */
		if (atomic_load_explicit(&f->in_flight, memory_order_seq_cst) != 0)
			conc_parker_park_until(w.parker, conc_deadline_forever());
		(void)conc_waitq_remove(&f->waitq, &w);
	}
}

/*
 * Run body(arg, i) for every i in [0, n), in chunks, on the calling thread
 * and on up to conc_pool_threads(p) helper tasks submitted with
 * conc_pool_try_submit (a full, busy or shut-down pool just means fewer
 * helpers: the caller can always do all the work itself, so this works from
 * inside the pool's own tasks and with p == NULL, where the caller does
 * everything).  Returns when every body call has returned.  Each index runs
 * at most once; all of them run unless ctx is done: then no new chunk is
 * started (the chunks running finish) and the call returns ctx's err.
 * Returns CONC_OK; CONC_CANCELED or CONC_TIMEDOUT (ctx done, including
 * before the call: then nothing runs); CONC_INVALID for NULL body.  n == 0
 * is CONC_OK with no calls.  body runs concurrently with itself on different
 * i.  Allocates one small block per call when p has threads (if that fails,
 * the caller does all the work).  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_pool_parallel_for(struct conc_pool *p, size_t n,
								     void (*body)(void *arg, size_t i), void *arg,
								     struct conc_ctx *ctx)
{
	if (!body)
		return CONC_INVALID;
	enum conc_status s = ctx ? conc_ctx_err(ctx) : CONC_OK;
	if (s != CONC_OK || n == 0)
		return s;
	size_t helpers = p ? p->nthreads : 0;
	if (helpers > n - 1)
		helpers = n - 1;
	struct conc__pfor local, *f = &local;
	if (helpers) {
		f = (struct conc__pfor *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, (sizeof *f + CONC_CACHELINE - 1) &
									   ~(size_t)(CONC_CACHELINE - 1));
		if (!f) {
			f = &local;
			helpers = 0;
		}
	}
	f->heap = f != &local;
	f->n = n;
	/* About four chunks per participant: balance against claim traffic. */
	f->chunk = n / ((helpers + 1) * 4);
	if (f->chunk == 0)
		f->chunk = 1;
	f->body = body;
	f->arg = arg;
	f->ctx = ctx;
	conc_waitq_init(&f->waitq);
	atomic_store_explicit(&f->next, 0, memory_order_relaxed);
	atomic_store_explicit(&f->in_flight, 0, memory_order_relaxed);
	atomic_store_explicit(&f->cut, false, memory_order_relaxed);
	/* One reference for the caller and one per helper it may submit; the
	 * ones not submitted are given back below.  Relaxed: the submit (R1)
	 * publishes f to each helper. */
	atomic_store_explicit(&f->refs, helpers + 1, memory_order_relaxed);
	size_t sent = 0;
	while (sent < helpers && conc_pool_try_submit(p, conc__pfor_helper, f, conc__pfor_unref) == CONC_OK)
		sent++;
	if (f->heap && sent < helpers)
		/* Relaxed: the caller still holds its own reference. */
		atomic_fetch_sub_explicit(&f->refs, helpers - sent, memory_order_relaxed);

	size_t lo, hi;
	while (conc__pfor_claim(f, &lo, &hi)) {
		if (ctx && conc_ctx_err(ctx) != CONC_OK) {
			atomic_store_explicit(&f->cut, true, memory_order_relaxed);
			conc__pfor_close(f);
			break;
		}
		for (size_t i = lo; i < hi; i++)
			body(arg, i);
	}
	/* next == n: no new claim can succeed; wait out the running chunks. */
	conc__pfor_wait(f);
	/* Relaxed: every store to cut came before a helper's P1 decrement
	 * (read by P2) or was this thread's own. */
	bool cut = atomic_load_explicit(&f->cut, memory_order_relaxed);
	if (f->heap)
		conc__pfor_unref(f);
	else
		conc_waitq_destroy(&f->waitq);
	return cut ? conc_ctx_err(ctx) : CONC_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_POOL_H */
