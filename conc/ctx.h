/* SPDX-License-Identifier: MIT */
#ifndef CONC_CTX_H
#define CONC_CTX_H

/*
 * conc/ctx.h: cancellation contexts, after Go's context package.
 *
 * A context is a node in a tree, on caller memory.  It is done when it is
 * canceled (by conc_ctx_cancel on it or on any ancestor) or when its deadline
 * passes; its deadline is the earlier of its own and its parent's.  Every
 * blocking call in conc takes an optional context: a thread blocked with a
 * context (or a descendant of it) returns promptly with CONC_CANCELED when it
 * is canceled, or CONC_TIMEDOUT when its deadline passes.
 *
 *   conc_ctx_err()      CONC_OK while live, then CONC_CANCELED or CONC_TIMEDOUT
 *   conc_ctx_cause()    the cause given to cancel (inherited by descendants),
 *                       or the err code if none was given; CONC_OK while live
 *   conc_ctx_deadline() the effective deadline
 *
 * How waiting works: a blocked thread registers a waiter on its context
 * (conc_ctx_watch), re-checks conc_ctx_err, and parks with the context's
 * deadline folded into its own.  Cancel marks every node of the subtree done
 * and wakes all waiters of each.  Deadlines need no timer thread: the done
 * state is computed from the clock when asked, and waiters park with the
 * deadline as their timeout.  Once done, a context stays done with the same
 * err and cause (a deadline that passed wins over a later cancel).
 *
 * Concurrency: any thread may cancel, query, watch or create children at any
 * time.  conc_ctx_destroy detaches a node from its parent and is safe while
 * the parent is being canceled; it refuses (CONC_BUSY) while the node has
 * children or waiters.  A parent must outlive its children.
 *
 * Progress: queries are lock-free; cancel, init and destroy take the short
 * per-node locks (cancel holds the locks of one root-to-node path at a time,
 * always parent before child), never while running user code.
 */

#include "status.h"
#include "waitq.h"

#ifdef __cplusplus
extern "C" {
#endif

struct conc_ctx {
	/* err in the high 32 bits, cause in the low 32: one word, so they are
	 * set together and read consistently.  0 while live. */
	_Atomic(uint64_t) state;
	struct conc_deadline deadline; /* effective; fixed at init */
	struct conc_lock lock;         /* guards the child links below */
	struct conc_ctx *parent;       /* fixed at init */
	struct conc_ctx *child, *next, *prev; /* children; siblings */
	struct conc_ctx *cursor;       /* cancel's walk, under lock */
	struct conc_waitq waiters;     /* threads blocked with this context */
};

static inline uint64_t conc__ctx_pack(int err, int cause)
{
	return ((uint64_t)(uint32_t)err << 32) | (uint32_t)cause;
}

/*
 * Initialise ctx as a child of parent (NULL for a root), done at deadline d
 * (conc_deadline_forever() for none) or at the parent's, whichever is first.
 * A child of a context that is already done starts done, with its cause.
 * Returns CONC_OK or CONC_INVALID (ctx NULL).  Does not block or allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_ctx_init(struct conc_ctx *ctx, struct conc_ctx *parent,
							    struct conc_deadline d)
{
	if (!ctx || ctx == parent)
		return CONC_INVALID;
	conc_lock_init(&ctx->lock);
	conc_waitq_init(&ctx->waiters);
	ctx->parent = parent;
	ctx->child = ctx->next = ctx->prev = ctx->cursor = NULL;
	ctx->deadline = parent ? conc_deadline_min(d, parent->deadline) : d;
	atomic_store_explicit(&ctx->state, 0, memory_order_relaxed);
	if (parent) {
		conc_lock_acquire(&parent->lock);
		/* The parent's lock orders this with its cancel, which sets the
		 * state under the same lock; relaxed is enough. */
		atomic_store_explicit(&ctx->state, atomic_load_explicit(&parent->state, memory_order_relaxed),
				      memory_order_relaxed);
		ctx->next = parent->child;
		if (parent->child)
			parent->child->prev = ctx;
		parent->child = ctx;
		conc_lock_release(&parent->lock);
	}
	return CONC_OK;
}

/* A root context with no deadline. */
CONC_NODISCARD static inline enum conc_status conc_ctx_init_root(struct conc_ctx *ctx)
{
	return conc_ctx_init(ctx, NULL, conc_deadline_forever());
}

/*
 * CONC_OK while ctx is live; CONC_CANCELED or CONC_TIMEDOUT once done (and
 * forever after); CONC_INVALID for NULL.  Lock-free; reads the clock only if
 * the context has a deadline and is not yet marked done.
 */
CONC_NODISCARD static inline enum conc_status conc_ctx_err(struct conc_ctx *ctx)
{
	if (!ctx)
		return CONC_INVALID;
	/* C1 seq_cst: a waiter's re-check after W1; pairs with C2 in
	 * conc__ctx_mark() through the waitq handshake. */
	uint64_t s = atomic_load_explicit(&ctx->state, memory_order_seq_cst);
	if (CONC__LIKELY(s == 0)) {
		if (CONC__LIKELY(conc_deadline_is_forever(ctx->deadline)) || !conc_deadline_expired(ctx->deadline))
			return CONC_OK;
		uint64_t done = conc__ctx_pack(CONC_TIMEDOUT, CONC_TIMEDOUT);
		/* Latch the timeout so err and cause never change again; if a
		 * cancel got in first, s receives its state.  Relaxed: nothing is
		 * published with this word but the word itself. */
		if (atomic_compare_exchange_strong_explicit(&ctx->state, &s, done, memory_order_relaxed,
							    memory_order_relaxed))
			return CONC_TIMEDOUT;
	}
	return (enum conc_status)(s >> 32);
}

/* The cause: what conc_ctx_cancel was given (a conc_status or any non-zero
 * code of the caller's), inherited from the ancestor that was canceled;
 * CONC_TIMEDOUT after a deadline; CONC_OK while live; CONC_INVALID for NULL. */
CONC_NODISCARD static inline int conc_ctx_cause(struct conc_ctx *ctx)
{
	enum conc_status e = conc_ctx_err(ctx);
	if (e == CONC_OK || e == CONC_INVALID)
		return (int)e;
	/* Relaxed: the word is final once err is set, and carries no other data. */
	return (int)(uint32_t)atomic_load_explicit(&ctx->state, memory_order_relaxed);
}

/* The effective deadline (forever if none); forever for NULL. */
static inline struct conc_deadline conc_ctx_deadline(const struct conc_ctx *ctx)
{
	return ctx ? ctx->deadline : conc_deadline_forever();
}

/* Mark one node done (its lock held) and wake its waiters.  Returns false if
 * it was done already: its subtree was marked by the cancel that did it. */
static inline bool conc__ctx_mark(struct conc_ctx *ctx, uint64_t done)
{
	uint64_t s = 0;
	if (conc_deadline_expired(ctx->deadline))
		done = conc__ctx_pack(CONC_TIMEDOUT, CONC_TIMEDOUT);
	/* C2 seq_cst: the waker's state change before W2 in wake_all; pairs
	 * with C1 in conc_ctx_err() through the waitq handshake. */
	if (!atomic_compare_exchange_strong_explicit(&ctx->state, &s, done, memory_order_seq_cst,
						     memory_order_relaxed))
		return false;
	conc_waitq_wake_all(&ctx->waiters);
	return true;
}

/*
 * Cancel ctx and all its descendants with the given cause (0 means
 * CONC_CANCELED) and wake every thread blocked with any of them.  Returns
 * CONC_OK if this call canceled it, CONC_CANCELED or CONC_TIMEDOUT if it was
 * already done (nothing changes; a passed deadline counts as done), and
 * CONC_INVALID for NULL.  A descendant whose own, earlier deadline has passed
 * stays CONC_TIMEDOUT: done is final, whichever came first.  Any thread; does
 * not allocate; iterative, so a deep tree cannot overflow the stack.
 */
static inline enum conc_status conc_ctx_cancel(struct conc_ctx *ctx, int cause)
{
	if (!ctx)
		return CONC_INVALID;
	uint64_t done = conc__ctx_pack(CONC_CANCELED, cause ? cause : CONC_CANCELED);
	conc_lock_acquire(&ctx->lock);
	/* A deadline that already passed makes this context done: latch it
	 * (conc_ctx_err does) and report it instead of canceling. */
	if (conc_ctx_err(ctx) != CONC_OK || !conc__ctx_mark(ctx, done)) {
		conc_lock_release(&ctx->lock);
		return conc_ctx_err(ctx);
	}
	/* Depth-first over the subtree, holding the locks of the path from ctx
	 * down to the current node so no node on it can be detached. */
	struct conc_ctx *cur = ctx;
	cur->cursor = cur->child;
	while (cur) {
		struct conc_ctx *c = cur->cursor;
		if (c) {
			cur->cursor = c->next;
			conc_lock_acquire(&c->lock);
			if (conc__ctx_mark(c, done)) {
				c->cursor = c->child;
				cur = c;
			} else {
				conc_lock_release(&c->lock);
			}
		} else {
			struct conc_ctx *up = cur == ctx ? NULL : cur->parent;
			conc_lock_release(&cur->lock);
			cur = up;
		}
	}
	return CONC_OK;
}

/*
 * Detach ctx from its parent.  Returns CONC_BUSY (and changes nothing) while
 * it has children or blocked waiters, CONC_INVALID for NULL.  Safe while the
 * parent is being canceled.  After CONC_OK the memory is the caller's again.
 */
CONC_NODISCARD static inline enum conc_status conc_ctx_destroy(struct conc_ctx *ctx)
{
	if (!ctx)
		return CONC_INVALID;
	struct conc_ctx *p = ctx->parent;
	if (p)
		conc_lock_acquire(&p->lock);
	conc_lock_acquire(&ctx->lock);
	bool busy = ctx->child != NULL || atomic_load_explicit(&ctx->waiters.count, memory_order_relaxed);
	if (!busy && p) {
		if (ctx->prev)
			ctx->prev->next = ctx->next;
		else
			p->child = ctx->next;
		if (ctx->next)
			ctx->next->prev = ctx->prev;
	}
	conc_lock_release(&ctx->lock);
	if (p)
		conc_lock_release(&p->lock);
	if (busy)
		return CONC_BUSY;
	conc_waitq_destroy(&ctx->waiters);
	conc_lock_destroy(&ctx->lock);
	return CONC_OK;
}

/*
 * For blocking calls built on conc_waitq: register w (initialised by the
 * caller's thread) to be woken when ctx is canceled, and return conc_ctx_err
 * as seen after registering.  A NULL ctx is never done.  Always pair with
 * conc_ctx_unwatch, whatever this returned.
 */
static inline enum conc_status conc_ctx_watch(struct conc_ctx *ctx, struct conc_waiter *w)
{
	if (!ctx)
		return CONC_OK;
	conc_waitq_enqueue(&ctx->waiters, w);
	return conc_ctx_err(ctx);
}

static inline void conc_ctx_unwatch(struct conc_ctx *ctx, struct conc_waiter *w)
{
	if (ctx)
		(void)conc_waitq_remove(&ctx->waiters, w);
}

/*
 * Block until ctx is done or the deadline d passes (Go's <-ctx.Done()).
 * Returns ctx's err once done, CONC_TIMEDOUT if d passed first, CONC_INVALID
 * for NULL.  Uses no CPU while it waits.
 */
static inline enum conc_status conc_ctx_wait_until(struct conc_ctx *ctx, struct conc_deadline d)
{
	if (!ctx)
		return CONC_INVALID;
	struct conc_waiter w;
	conc_waiter_init(&w, 0);
	struct conc_deadline until = conc_deadline_min(d, ctx->deadline);
	enum conc_status s;
	while ((s = conc_ctx_watch(ctx, &w)) == CONC_OK && !conc_deadline_expired(until)) {
		conc_parker_park_until(w.parker, until);
		conc_ctx_unwatch(ctx, &w);
	}
	conc_ctx_unwatch(ctx, &w);
	if (s == CONC_OK)
		s = conc_ctx_err(ctx); /* a cancel may have landed after the check */
	return s != CONC_OK ? s : CONC_TIMEDOUT;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_CTX_H */
