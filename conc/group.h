/* SPDX-License-Identifier: MIT */
#ifndef CONC_GROUP_H
#define CONC_GROUP_H

/*
 * conc/group.h: error groups (Go's golang.org/x/sync/errgroup) and bounded
 * parallelism, on a worker pool.
 *
 * A group runs tasks int fn(struct conc_ctx *ctx, void *arg) on a
 * conc_pool, at most `limit` at a time (a conc_sem of that size: "run these
 * N tasks, K at a time" is a group with limit K).  A task returns 0 or an
 * error: a conc_status or any non-zero code of the caller's.
 *  - The first error cancels the group's context, with the error as its
 *    cause; tasks see it through their ctx argument, and tasks not yet
 *    started do not start (they count as skipped).
 *  - conc_group_wait returns the first error once every task has returned.
 *  - Every error can also be kept, tagged with its task (the order of the
 *    conc_group_go calls, from 0, and the task's arg), in a buffer the
 *    caller gives at init; those that do not fit are counted as dropped.
 *  - conc_group_go blocks while `limit` tasks are in flight (first come,
 *    first served), until the call's deadline or the group's context is
 *    done; conc_group_try_go never blocks.
 *
 * What Go's errgroup gets wrong here, and this does not: a task whose
 * group already failed still runs there (its goroutine has started); a
 * limited Go blocks with no way to time out or be canceled.
 *
 * Lifetime: init, go from any thread (also from inside a task, but a task
 * that waits for a slot while every slot is held by tasks doing the same
 * deadlocks, as in Go), wait once, destroy.  Calling go concurrently with
 * wait, other than from a task of the group, races like Go's WaitGroup.
 * The pool must outlive the group; a pool shut down in abort mode drops the
 * group's queued tasks, which then count as failed with CONC_CANCELED.
 *
 * Progress: blocking only where it says so; no lock is held while a task
 * runs.  Allocates at init only (one record per slot).
 */

#include "pool.h"
#include "sem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An error kept by the group: the task's status and which task it was. */
struct conc_group_error {
	int status;
	uint64_t task; /* 0 for the first conc_group_go, 1 for the next... */
	void *arg;     /* the task's arg */
};

struct conc__group_task {
	struct conc_group *g;
	int (*fn)(struct conc_ctx *ctx, void *arg);
	void *arg;
	uint64_t id;
	uint32_t slot;
};

struct conc_group {
	struct conc_ctx ctx;      /* the group's: a child of the parent given at init */
	struct conc_pool *pool;
	struct conc_sem limit;    /* one unit per slot */
	struct conc_chan *free;   /* indices of free slots (never blocks: the sem counts them) */
	struct conc__group_task *tasks; /* limit slots */
	struct conc_group_error *errs;  /* caller's buffer, errs_cap entries */
	size_t errs_cap;
	_Atomic(uint64_t) next_id;
	_Atomic(size_t) nerrs;      /* errors seen (kept or dropped) */
	_Atomic(int) first;         /* the first error, 0 while none */
	_Atomic(uint64_t) skipped;  /* tasks not started because the group failed */
	_Atomic(size_t) pending;    /* tasks accepted by go and not finished */
	_Atomic(size_t) finishing;  /* tasks between their last two steps */
	struct conc_waitq idle;     /* conc_group_wait's waiters */
};

/*
 * Initialise g to run tasks on pool, at most limit (>= 1) at a time, with
 * a context that is a child of parent (NULL for none: then only the first
 * error or conc_group_cancel cancels it).  errs / errs_cap: where to keep
 * every error (NULL / 0 to keep only the first, which wait returns).
 * Returns CONC_OK, CONC_INVALID (NULL g or pool, limit 0 or > UINT32_MAX,
 * errs NULL with errs_cap > 0), CONC_OVERFLOW (limit's slots do not fit in
 * memory's size type), CONC_NOMEM.  Allocates limit slots and a channel.
 */
CONC_NODISCARD static inline enum conc_status conc_group_init(struct conc_group *g, struct conc_pool *pool,
							      struct conc_ctx *parent, size_t limit,
							      struct conc_group_error *errs, size_t errs_cap)
{
	if (!g || !pool || limit == 0 || limit > UINT32_MAX || (!errs && errs_cap))
		return CONC_INVALID;
	if (limit > (SIZE_MAX - CONC_CACHELINE) / sizeof(struct conc__group_task))
		return CONC_OVERFLOW;
	/* aligned_alloc wants a multiple of the alignment. */
	size_t bytes = (limit * sizeof(struct conc__group_task) + CONC_CACHELINE - 1) / CONC_CACHELINE * CONC_CACHELINE;
	enum conc_status st;
	g->tasks = (struct conc__group_task *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, bytes);
	if (!g->tasks)
		return CONC_NOMEM;
	if ((st = conc_chan_new(&g->free, limit, sizeof(uint32_t))) != CONC_OK) {
		CONC_FREE(g->tasks);
		return st;
	}
	for (uint32_t i = 0; i < limit; i++) {
		st = conc_chan_try_send(g->free, &i);
		CONC_ASSERT(st == CONC_OK);
	}
	st = conc_sem_init(&g->limit, limit, limit);
	CONC_ASSERT(st == CONC_OK);
	st = conc_ctx_init(&g->ctx, parent, conc_deadline_forever());
	CONC_ASSERT(st == CONC_OK);
	(void)st;
	g->pool = pool;
	g->errs = errs;
	g->errs_cap = errs_cap;
	atomic_init(&g->next_id, 0);
	atomic_init(&g->nerrs, 0);
	atomic_init(&g->first, 0);
	atomic_init(&g->skipped, 0);
	atomic_init(&g->pending, 0);
	atomic_init(&g->finishing, 0);
	conc_waitq_init(&g->idle);
	return CONC_OK;
}

/* The group's context: canceled by the first error (cause: the error), by
 * conc_group_cancel, or by its parent.  Tasks get it as their ctx. */
static inline struct conc_ctx *conc_group_ctx(struct conc_group *g)
{
	return g ? &g->ctx : NULL;
}

/* Cancel the group's context with cause (0: CONC_CANCELED): running tasks
 * see it, queued ones do not start, blocked conc_group_go calls return. */
static inline enum conc_status conc_group_cancel(struct conc_group *g, int cause)
{
	return g ? conc_ctx_cancel(&g->ctx, cause) : CONC_INVALID;
}

/* Record a task's error: the first one cancels the group. */
static inline void conc__group_fail(struct conc_group *g, struct conc__group_task *t, int status)
{
	int none = 0;
	/* Relaxed: wait reads it after the pending handshake (G1/G2). */
	if (atomic_compare_exchange_strong_explicit(&g->first, &none, status, memory_order_relaxed,
						    memory_order_relaxed))
		(void)conc_ctx_cancel(&g->ctx, status);
	/* Relaxed: only hands out distinct indices. */
	size_t k = atomic_fetch_add_explicit(&g->nerrs, 1, memory_order_relaxed);
	if (k < g->errs_cap) {
		g->errs[k].status = status;
		g->errs[k].task = t->id;
		g->errs[k].arg = t->arg;
	}
}

/* One fewer task in flight; the last wakes conc_group_wait. */
static inline void conc__group_done(struct conc_group *g)
{
	/* G1 seq_cst: the state change of the waitq handshake, after
	 * everything this task wrote (errors, counts); pairs with G2 in
	 * conc_group_wait_until(). */
	if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_seq_cst) == 1)
		conc_waitq_wake_all(&g->idle);
}

/* Give a task's slot back and finish it.  `finishing` covers the last
 * steps, so that a waiter that saw pending reach 0 does not let the group
 * be destroyed while this thread still touches it. */
static inline void conc__group_release(struct conc__group_task *t)
{
	struct conc_group *g = t->g;
	uint32_t slot = t->slot;
	/* Relaxed: read-modify-writes on one counter; the G3 decrement below
	 * releases. */
	atomic_fetch_add_explicit(&g->finishing, 1, memory_order_relaxed);
	enum conc_status st = conc_chan_try_send(g->free, &slot);
	CONC_ASSERT(st == CONC_OK);
	st = conc_sem_release(&g->limit, 1);
	CONC_ASSERT(st == CONC_OK);
	(void)st;
	conc__group_done(g);
	/* G3 release: this thread's last touch of g; pairs with G4 in
	 * conc_group_wait_until(). */
	atomic_fetch_sub_explicit(&g->finishing, 1, memory_order_release);
}

/* The pool runs this for each task. */
static inline void conc__group_run(void *arg)
{
	struct conc__group_task *t = (struct conc__group_task *)arg;
	struct conc_group *g = t->g;
	if (conc_ctx_err(&g->ctx) != CONC_OK) {
		/* Relaxed: a statistic, read after wait. */
		atomic_fetch_add_explicit(&g->skipped, 1, memory_order_relaxed);
	} else {
		int status = t->fn(&g->ctx, t->arg);
		if (status != 0)
			conc__group_fail(g, t, status);
	}
	conc__group_release(t);
}

/* The pool runs this for each task it drops (shut down in abort mode). */
static inline void conc__group_drop(void *arg)
{
	struct conc__group_task *t = (struct conc__group_task *)arg;
	conc__group_fail(t->g, t, CONC_CANCELED);
	conc__group_release(t);
}

/* Start a task in a slot the caller holds (a unit of g->limit). */
static inline enum conc_status conc__group_submit(struct conc_group *g, int (*fn)(struct conc_ctx *, void *),
						  void *arg, bool wait, struct conc_deadline d)
{
	uint32_t slot;
	enum conc_status st = conc_chan_try_recv(g->free, &slot);
	CONC_ASSERT(st == CONC_OK); /* the semaphore counts free slots */
	struct conc__group_task *t = &g->tasks[slot];
	t->g = g;
	t->fn = fn;
	t->arg = arg;
	t->slot = slot;
	/* Relaxed: only hands out distinct ids. */
	t->id = atomic_fetch_add_explicit(&g->next_id, 1, memory_order_relaxed);
	st = wait ? conc_pool_submit_until(g->pool, conc__group_run, t, conc__group_drop, d, &g->ctx)
		  : conc_pool_try_submit(g->pool, conc__group_run, t, conc__group_drop);
	if (st == CONC_FULL)
		st = CONC_WOULDBLOCK;
	if (st != CONC_OK)
		conc__group_release(t); /* not started: the caller still owns arg */
	return st;
}

static inline enum conc_status conc__group_go(struct conc_group *g, int (*fn)(struct conc_ctx *, void *), void *arg,
					      bool wait, struct conc_deadline d)
{
	if (!g || !fn)
		return CONC_INVALID;
	enum conc_status st = conc_ctx_err(&g->ctx);
	if (st != CONC_OK)
		return st;
	/* Counted before anything can fail or finish, so wait cannot return
	 * in between; relaxed: the decrement (G1) is what wait synchronises
	 * with, and it follows this in the counter's modification order. */
	atomic_fetch_add_explicit(&g->pending, 1, memory_order_relaxed);
	st = wait ? conc_sem_acquire_until(&g->limit, 1, d, &g->ctx) : conc_sem_try_acquire(&g->limit, 1);
	if (st != CONC_OK) {
		/* Counted out under `finishing`, as a task is: a wait that sees
		 * pending reach 0 must not free g while this thread is still in
		 * conc__group_done (G3/G4). */
		atomic_fetch_add_explicit(&g->finishing, 1, memory_order_relaxed);
		conc__group_done(g);
		atomic_fetch_sub_explicit(&g->finishing, 1, memory_order_release);
		return st;
	}
	return conc__group_submit(g, fn, arg, wait, d);
}

/*
 * Run fn(group ctx, arg) on the pool once fewer than limit tasks are in
 * flight, waiting for a slot (and for room in the pool's queue) until the
 * deadline d or the group's context is done.  Returns CONC_OK when the task
 * is queued (it will run, or be skipped if the group fails first);
 * CONC_CANCELED (or the context's err) if the group's context is done, then
 * the task does not start; CONC_TIMEDOUT; CONC_CLOSED if the pool is shut
 * down; CONC_INVALID for NULL g or fn.  Unless CONC_OK, the caller still
 * owns arg.  Any thread (see the header comment).
 */
CONC_NODISCARD static inline enum conc_status conc_group_go_until(struct conc_group *g,
								  int (*fn)(struct conc_ctx *ctx, void *arg),
								  void *arg, struct conc_deadline d)
{
	return conc__group_go(g, fn, arg, true, d);
}

/* conc_group_go_until with no deadline. */
CONC_NODISCARD static inline enum conc_status conc_group_go(struct conc_group *g,
							    int (*fn)(struct conc_ctx *ctx, void *arg), void *arg)
{
	return conc__group_go(g, fn, arg, true, conc_deadline_forever());
}

/* conc_group_go without waiting: CONC_WOULDBLOCK when limit tasks are in
 * flight or the pool's queue is full. */
CONC_NODISCARD static inline enum conc_status conc_group_try_go(struct conc_group *g,
								int (*fn)(struct conc_ctx *ctx, void *arg), void *arg)
{
	return conc__group_go(g, fn, arg, false, conc_deadline_poll());
}

/*
 * Wait until every task started with go has returned (or was skipped or
 * dropped), until the deadline d or ctx (NULL for none) is done.  Returns
 * CONC_OK once they have, then *first_error (if not NULL) is the first
 * task error (0 if none), and the group's context is canceled (as Go's
 * Wait does): the group is spent, later go calls return CONC_CANCELED.
 * Returns CONC_TIMEDOUT or ctx's err if the wait ends first (the tasks go
 * on; wait again later); CONC_INVALID for NULL g.  Blocks without using
 * CPU.  Not from a task of the group: it would wait for itself (until d).
 */
CONC_NODISCARD static inline enum conc_status conc_group_wait_until(struct conc_group *g, struct conc_deadline d,
								    struct conc_ctx *ctx, int *first_error)
{
	if (!g)
		return CONC_INVALID;
	struct conc_waiter w, cw;
	conc_waiter_init(&w, 0);
	conc_waiter_init(&cw, 0);
	enum conc_status st = conc_ctx_watch(ctx, &cw);
	struct conc_deadline until = conc_deadline_min(d, conc_ctx_deadline(ctx));
	for (;;) {
		conc_waitq_enqueue(&g->idle, &w);
		/* G2 seq_cst: the waiter's re-check after registering; pairs
		 * with G1 in conc__group_done(). */
		bool idle = atomic_load_explicit(&g->pending, memory_order_seq_cst) == 0;
		if (!idle && st == CONC_OK && !conc_deadline_expired(until))
			conc_parker_park_until(w.parker, until);
		(void)conc_waitq_remove(&g->idle, &w);
		if (idle) {
			st = CONC_OK;
			break;
		}
		if (ctx && st == CONC_OK)
			st = conc_ctx_err(ctx);
		if (st != CONC_OK)
			break;
		if (conc_deadline_expired(until)) {
			st = CONC_TIMEDOUT;
			break;
		}
	}
	conc_ctx_unwatch(ctx, &cw);
	if (st != CONC_OK)
		return st;
	/* G4 acquire: every finishing task's last touch of g is done; pairs
	 * with G3.  A few instructions at most: snooze. */
	struct conc_backoff b = {0};
	while (atomic_load_explicit(&g->finishing, memory_order_acquire) != 0)
		conc_backoff_snooze(&b);
	(void)conc_ctx_cancel(&g->ctx, 0);
	if (first_error)
		*first_error = atomic_load_explicit(&g->first, memory_order_relaxed);
	return CONC_OK;
}

/* Wait for every task, as long as it takes; returns the first task error
 * (0 if none).  See conc_group_wait_until.  CONC_INVALID for NULL. */
CONC_NODISCARD static inline int conc_group_wait(struct conc_group *g)
{
	int first = 0;
	enum conc_status st = conc_group_wait_until(g, conc_deadline_forever(), NULL, &first);
	return st != CONC_OK ? (int)st : first;
}

/*
 * The errors kept (after a successful wait): *count of them in the buffer
 * given at init (in the order they happened), *dropped how many did not fit.
 * Returns the buffer (NULL if none was given).
 */
static inline const struct conc_group_error *conc_group_errors(struct conc_group *g, size_t *count,
							       uint64_t *dropped)
{
	size_t n = g ? atomic_load_explicit(&g->nerrs, memory_order_relaxed) : 0;
	size_t kept = g && n < g->errs_cap ? n : (g ? g->errs_cap : 0);
	if (count)
		*count = kept;
	if (dropped)
		*dropped = n - kept;
	return g ? g->errs : NULL;
}

/* Tasks that did not start because the group had failed (after wait). */
static inline uint64_t conc_group_skipped(struct conc_group *g)
{
	return g ? atomic_load_explicit(&g->skipped, memory_order_relaxed) : 0;
}

/*
 * Release g's resources.  CONC_BUSY (nothing changes) while tasks are in
 * flight or threads wait on it; CONC_INVALID for NULL.  The context must
 * have no children left.  After CONC_OK the memory is the caller's.
 */
CONC_NODISCARD static inline enum conc_status conc_group_destroy(struct conc_group *g)
{
	if (!g)
		return CONC_INVALID;
	if (atomic_load_explicit(&g->pending, memory_order_acquire) != 0 ||
	    atomic_load_explicit(&g->finishing, memory_order_acquire) != 0 || conc_waitq_has_waiters(&g->idle))
		return CONC_BUSY;
	enum conc_status st = conc_ctx_destroy(&g->ctx);
	if (st != CONC_OK)
		return st;
	st = conc_sem_destroy(&g->limit);
	CONC_ASSERT(st == CONC_OK);
	st = conc_chan_free(g->free);
	CONC_ASSERT(st == CONC_OK);
	(void)st;
	conc_waitq_destroy(&g->idle);
	CONC_FREE(g->tasks);
	return CONC_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_GROUP_H */
