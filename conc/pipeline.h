/* SPDX-License-Identifier: MIT */
#ifndef CONC_PIPELINE_H
#define CONC_PIPELINE_H

/*
 * conc/pipeline.h: stages connected by channels, each stage run by K worker
 * threads that the pipeline starts itself (Go's pipeline pattern, with the
 * cancellation, ordering and accounting Go leaves to the user).
 *
 *   caller --push--> [input] -> stage 0 (K0 workers) -> [chan] -> stage 1 ...
 *                                                      ... -> [output] --pull--> caller
 *
 *   struct conc_pipeline *p;
 *   conc_pipeline_new(&p, &(struct conc_pipeline_config){ .esize = sizeof(int) });
 *   conc_pipeline_add_stage(p, &(struct conc_stage_config){ .fn = square, .workers = 4,
 *                                                            .ordered = true });
 *   conc_pipeline_start(p);
 *   push items, conc_pipeline_close_input(p), pull until CONC_CLOSED;
 *   conc_pipeline_wait(p, &err); conc_pipeline_free(p);
 *
 * Elements are fixed-size byte copies, as in conc channels: the pipeline's
 * input has esize bytes per item, each stage's output out_esize bytes (0:
 * the same as its input).  A stage function
 *
 *   int fn(void *arg, struct conc_ctx *ctx, const void *in, void *out)
 *
 * reads one input item and returns 0 to pass the item it wrote to *out on,
 * CONC_STAGE_SKIP to pass nothing on (a filter), or any other value (a
 * conc_status or a code of the caller's) as an error: the first error
 * cancels the pipeline's context with that value as the cause, and
 * conc_pipeline_wait reports it.  ctx is the pipeline's context: a function
 * that blocks should block with it (conc_*_until(..., ctx),
 * conc_ctx_wait_until) so that cancellation reaches it; child contexts it
 * makes of ctx must be destroyed before it returns.  Several workers call fn
 * at once, each with its own in and out.  One input gives at most one
 * output (no flat-map: emit a batch struct instead).
 *
 * Ownership: the pipeline owns every item from a successful push until a
 * successful pull.  When fn returns 0, its input counts as consumed (moved
 * into *out: a pointer item may be passed on as is) and *out is owned by the
 * pipeline.  Every item the pipeline owns and does not pass on goes to the
 * destructor of its type exactly once: an input fn skipped or failed on,
 * items received but not passed on when the pipeline is canceled (whole
 * batches in a worker's hands, items waiting in a reorder window), and items
 * left in the channels when the pipeline is freed.  The destructor of the
 * input type is conc_pipeline_config.drop, that of stage i's output type is
 * stage i's conc_stage_config.drop; NULL means "nothing to free".  So with a
 * counting destructor, pushed == pulled + dropped, exactly.
 *
 * Workers move items in batches: a worker receives up to `batch` items with
 * one burst receive (conc_chan_recv_burst_until), runs fn on each, and sends
 * the outputs with one burst send.  The per-item path takes no lock, makes
 * no system call and allocates nothing while the channels have items and
 * room; a worker blocks (parked, no CPU) only on an empty input, a full
 * output, or the reorder window.
 *
 * Ordered stages (ordered = true, workers > 1): the output keeps the order
 * of the stage's input channel.  Receiving is serialised by a token (the
 * next sequence number, the only element of a capacity-1 channel): the
 * holder receives a batch, numbers it, and hands the token on before it
 * works, so workers still run fn in parallel.  A worker waits (cancelably,
 * parked) until its item's number is less than released + window, writes
 * fn's output straight into reorder slot seq % window, and publishes it;
 * one worker at a time (a "draining" flag, Dekker-paired with the slot
 * publication so no ready slot is left behind) sends the ready run of slots
 * downstream in order with burst sends and advances released.  The window
 * bounds the items a stage holds out of order.  The lowest unreleased item
 * is always inside the window, so the worker holding it never waits on the
 * window: no deadlock.  End-to-end order holds through stages that are
 * ordered or have one worker (a one-worker stage is always in order).
 *
 * Lifetime and termination: a stage's output channel closes when its last
 * worker ends, so closing the input (conc_pipeline_close_input) drains the
 * pipeline stage by stage and pulls end with CONC_CLOSED.  The pipeline's
 * context is a child of the parent given at creation; any stage's error,
 * conc_pipeline_cancel, or the parent's cancel or deadline cancels it, and
 * every worker returns promptly: all their blocking calls (receive, send,
 * token, window) wait with that context.  A worker that ends by
 * cancellation also closes the input and output channels so that callers
 * blocked in push or pull return.  conc_pipeline_wait_until waits for every
 * worker to end (on a rendezvous channel the last worker closes) and gives
 * the pipeline's error: 0 after a clean finish, else the cause (fn's code,
 * the cancel cause, CONC_TIMEDOUT for a deadline).
 *
 * Statistics: per worker counters, written by their worker only (relaxed
 * stores) and summed by conc_pipeline_stats: items in and out, skipped,
 * errors, dropped, and the time spent blocked on input (empty channel, the
 * order token) and on output (full channel, reorder window).  The clock is
 * read only on those slow paths.  The stage with the most time blocked on
 * output is ahead of its consumer; the stage whose consumers are blocked on
 * input and whose producers are blocked on output is the bottleneck.
 *
 * Who may call what: build (new, add_stage, start) from one thread;
 * afterwards push, pull, close_input, cancel, wait, err and stats from any
 * threads at once.  free only when no other call on the pipeline can still
 * run; it cancels a pipeline that has not finished, joins its workers, and
 * drops what is left.
 *
 * Allocation: only new and add_stage allocate (through chan.h's
 * CONC_ALIGNED_ALLOC/CONC_FREE hooks); start creates the threads (through
 * the overridable CONC_THREAD_CREATE).  Progress: blocking.
 */

#include "status.h"
#include "sys.h" /* first: it sets the feature macros */
#include "waitq.h"
#include "ctx.h"
#include "chan.h"

#include <limits.h>
#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A stage function's "pass nothing on" result. */
#define CONC_STAGE_SKIP INT_MIN

/* Channel capacity when a config says 0. */
#define CONC_PIPELINE_DEFAULT_CAP 64
/* Bounds on a stage's configuration. */
#define CONC_PIPELINE_MAX_WORKERS 1024
#define CONC_PIPELINE_MAX_BATCH 1024
#define CONC_PIPELINE_MAX_WINDOW ((size_t)1 << 20)


struct conc_pipeline_config {
	size_t esize;              /* bytes per input item (> 0) */
	size_t queue_cap;          /* input channel capacity (0: CONC_PIPELINE_DEFAULT_CAP) */
	void (*drop)(void *elem, void *arg); /* destructor of input items (NULL: none) */
	void *drop_arg;
	struct conc_ctx *parent;   /* the pipeline's context is its child (NULL: a root) */
};

struct conc_stage_config {
	/* 0: pass *out on; CONC_STAGE_SKIP: nothing; anything else: error. */
	int (*fn)(void *arg, struct conc_ctx *ctx, const void *in, void *out);
	void *arg;
	size_t workers;            /* K, 1..CONC_PIPELINE_MAX_WORKERS */
	size_t out_esize;          /* bytes per output item (0: as the input) */
	size_t queue_cap;          /* output channel capacity (0: CONC_PIPELINE_DEFAULT_CAP) */
	size_t batch;              /* items per burst (0: input capacity / (2 K), in 1..16) */
	bool ordered;              /* keep input order at the output (with K > 1) */
	size_t window;             /* ordered: reorder window (0: 2 K batch); rounded up to 2^n */
	void (*drop)(void *elem, void *arg); /* destructor of this stage's outputs (NULL: none) */
	void *drop_arg;
};

struct conc_stage_stats {
	size_t workers;
	uint64_t items_in;       /* received from the input channel */
	uint64_t items_out;      /* sent to the output channel */
	uint64_t skipped;        /* fn returned CONC_STAGE_SKIP */
	uint64_t errors;         /* fn returned an error */
	uint64_t dropped;        /* inputs and outputs dropped on cancellation (not at free) */
	uint64_t ns_blocked_in;  /* summed over workers: waiting for input (and the order token) */
	uint64_t ns_blocked_out; /* summed over workers: waiting for room (and the reorder window) */
};

/* ---------------------------------------------------------------- internals */

struct conc__pipe_stage;

struct conc__pipe_worker {
	/* Written by the worker only (relaxed stores); read by stats. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) items_in;
	_Atomic(uint64_t) items_out;
	_Atomic(uint64_t) skipped;
	_Atomic(uint64_t) errors;
	_Atomic(uint64_t) dropped;
	_Atomic(uint64_t) ns_in;
	_Atomic(uint64_t) ns_out;
	/* Fixed before the thread starts. */
	struct conc__pipe_stage *st;
	unsigned char *inbuf, *outbuf; /* batch items each */
	pthread_t thread;
	bool created, joined;
};

struct conc__pipe_stage {
	/* Fixed at add_stage. */
	struct conc_pipeline *p;
	struct conc__pipe_stage *next;
	int (*fn)(void *arg, struct conc_ctx *ctx, const void *in, void *out);
	void *arg;
	struct conc_chan *in, *out;
	size_t in_esize, out_esize, batch, nworkers;
	void (*drop_in)(void *elem, void *arg);
	void *drop_in_arg;
	void (*drop_out)(void *elem, void *arg);
	void *drop_out_arg;
	struct conc__pipe_worker *workers;
	unsigned char *bufs; /* the workers' buffers and the slots, one block */
	bool ordered;
	struct conc_chan *token; /* ordered: holds the next sequence number */
	uint64_t window;         /* ordered: a power of two */
	_Atomic(uint64_t) *slot_state; /* ordered: 2 (seq + 1) | skip; 0 never used */
	unsigned char *slot_data;      /* ordered: window items, contiguous */
	/* Workers still running; the last one closes out. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(size_t) live;
	/* Ordered: the next sequence number to send; written by the drainer. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) released;
	_Atomic(int) draining;
	struct conc_waitq window_q; /* workers waiting for the window */
};

struct conc_pipeline {
	struct conc_ctx ctx;
	struct conc_chan *input;
	struct conc_chan *done; /* capacity 0; closed when the last worker ends */
	struct conc__pipe_stage *first, *last;
	size_t nstages, in_esize;
	void (*drop)(void *elem, void *arg);
	void *drop_arg;
	unsigned char *scratch; /* one input item, to drain the input at free */
	bool started;
	_Atomic(size_t) live;  /* workers still running */
	_Atomic(int) err;      /* set by the last worker, before finished */
	_Atomic(bool) finished;
};

static inline size_t conc__pipe_round(size_t n)
{
	return (n + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
}

/* a * b, or false on overflow. */
static inline bool conc__pipe_mul(size_t a, size_t b, size_t *r)
{
	if (b && a > SIZE_MAX / b)
		return false;
	*r = a * b;
	return true;
}

/* Counters have one writer: a relaxed load and store, no RMW.  Relaxed:
 * they are statistics, read as a snapshot. */
static inline void conc__pipe_count(_Atomic(uint64_t) *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void conc__pipe_drop(void (*drop)(void *, void *), void *arg, unsigned char *items, size_t n,
				   size_t esize)
{
	if (drop)
		for (size_t i = 0; i < n; i++)
			drop(items + i * esize, arg);
}

/* Inputs (or outputs) the worker received and will not pass on. */
static inline void conc__pipe_drop_in(struct conc__pipe_worker *w, unsigned char *items, size_t n)
{
	struct conc__pipe_stage *st = w->st;
	conc__pipe_drop(st->drop_in, st->drop_in_arg, items, n, st->in_esize);
	conc__pipe_count(&w->dropped, n);
}

static inline void conc__pipe_drop_out(struct conc__pipe_worker *w, unsigned char *items, size_t n)
{
	struct conc__pipe_stage *st = w->st;
	conc__pipe_drop(st->drop_out, st->drop_out_arg, items, n, st->out_esize);
	conc__pipe_count(&w->dropped, n);
}

/* Wake callers blocked in push or pull: the pipeline is canceled. */
static inline void conc__pipe_abort(struct conc_pipeline *p)
{
	(void)conc_chan_close(p->input);
	if (p->last)
		(void)conc_chan_close(p->last->out);
}

/* Receive a batch into buf: try first, block (timed) only if empty.
 * Returns the count; *s says why 0. */
static inline size_t conc__pipe_recv(struct conc__pipe_worker *w, struct conc_chan *in, unsigned char *buf,
				     size_t max, enum conc_status *s)
{
	size_t n = conc_chan_try_recv_burst(in, buf, max, s);
	if (n == 0 && *s == CONC_EMPTY) {
		int64_t t0 = conc_now_ns();
		n = conc_chan_recv_burst_until(in, buf, max, conc_deadline_forever(), &w->st->p->ctx, s);
		conc__pipe_count(&w->ns_in, (uint64_t)(conc_now_ns() - t0));
	}
	return n;
}

/* Send n items of buf to out, in order: bursts, blocking (timed) only when
 * full.  Returns how many were sent (n unless canceled or closed). */
static inline size_t conc__pipe_send(struct conc__pipe_worker *w, struct conc_chan *out, unsigned char *buf,
				     size_t n)
{
	size_t sent = 0, esize = w->st->out_esize;
	enum conc_status s;
	while (sent < n) {
		size_t k = conc_chan_try_send_burst(out, buf + sent * esize, n - sent, &s);
		if (k == 0) {
			if (s != CONC_FULL)
				break;
			int64_t t0 = conc_now_ns();
			k = conc_chan_send_burst_until(out, buf + sent * esize, n - sent, conc_deadline_forever(),
						       &w->st->p->ctx, &s);
			conc__pipe_count(&w->ns_out, (uint64_t)(conc_now_ns() - t0));
			if (k == 0)
				break;
		}
		sent += k;
	}
	conc__pipe_count(&w->items_out, sent);
	return sent;
}

/* fn returned r != 0 for the input at in: drop it; an error cancels. */
static inline bool conc__pipe_failed(struct conc__pipe_worker *w, unsigned char *in, int r)
{
	struct conc__pipe_stage *st = w->st;
	conc__pipe_drop(st->drop_in, st->drop_in_arg, in, 1, st->in_esize);
	if (r == CONC_STAGE_SKIP) {
		conc__pipe_count(&w->skipped, 1);
		return false;
	}
	conc__pipe_count(&w->errors, 1);
	/* The first cancel wins: its cause is the pipeline's error. */
	(void)conc_ctx_cancel(&st->p->ctx, r);
	return true;
}

/* An unordered worker.  Returns true if it ended because its input was
 * closed and drained, false on cancellation. */
static inline bool conc__pipe_run(struct conc__pipe_worker *w)
{
	struct conc__pipe_stage *st = w->st;
	struct conc_ctx *ctx = &st->p->ctx;
	for (;;) {
		/* Once per batch: a canceled pipeline takes no more input. */
		if (conc_ctx_err(ctx) != CONC_OK)
			return false;
		enum conc_status s;
		size_t n = conc__pipe_recv(w, st->in, w->inbuf, st->batch, &s);
		if (n == 0)
			return s == CONC_CLOSED;
		conc__pipe_count(&w->items_in, n);
		size_t j = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char *in = w->inbuf + i * st->in_esize;
			int r = st->fn(st->arg, ctx, in, w->outbuf + j * st->out_esize);
			if (r == 0) {
				j++;
			} else if (conc__pipe_failed(w, in, r)) {
				conc__pipe_drop_in(w, in + st->in_esize, n - i - 1);
				conc__pipe_drop_out(w, w->outbuf, j);
				return false;
			}
		}
		size_t sent = conc__pipe_send(w, st->out, w->outbuf, j);
		if (sent < j) {
			conc__pipe_drop_out(w, w->outbuf + sent * st->out_esize, j - sent);
			return false;
		}
	}
}

/* Whether item seq may enter the reorder window. */
static inline bool conc__pipe_window_open(struct conc__pipe_stage *st, uint64_t seq)
{
	/* O3 seq_cst: acquire pairs with O2 in conc__pipe_drain_ready() (the
	 * slot's old item has been sent); seq_cst as the re-check of the
	 * waitq handshake after W1. */
	return seq - atomic_load_explicit(&st->released, memory_order_seq_cst) < st->window;
}

/* Wait, parked, until seq may enter the window or the pipeline is
 * canceled.  Returns CONC_OK, CONC_CANCELED or CONC_TIMEDOUT. */
static inline enum conc_status conc__pipe_window_wait(struct conc__pipe_worker *w, uint64_t seq)
{
	struct conc__pipe_stage *st = w->st;
	struct conc_ctx *ctx = &st->p->ctx;
	if (CONC__LIKELY(conc__pipe_window_open(st, seq)))
		return CONC_OK;
	int64_t t0 = conc_now_ns();
	enum conc_status e = CONC_OK;
	struct conc_backoff b = {0};
	while (e == CONC_OK && !conc__pipe_window_open(st, seq)) {
		if (conc_backoff_wait(&b)) {
			e = conc_ctx_err(ctx);
			continue;
		}
		struct conc_waiter wq, wc;
		conc_waiter_init(&wq, 0);
		conc_waiter_init(&wc, 0);
		conc_waitq_enqueue(&st->window_q, &wq);
		e = conc_ctx_watch(ctx, &wc);
		/* The re-check after W1 (O3). */
		if (e == CONC_OK && !conc__pipe_window_open(st, seq))
			conc_parker_park_until(wq.parker, conc_ctx_deadline(ctx));
		/* The drainer wakes all waiters: no wake to pass on. */
		(void)conc_waitq_remove(&st->window_q, &wq);
		conc_ctx_unwatch(ctx, &wc);
		if (e == CONC_OK)
			e = conc_ctx_err(ctx);
	}
	conc__pipe_count(&w->ns_out, (uint64_t)(conc_now_ns() - t0));
	return e;
}

/* The drainer (holding the draining flag): send the ready slots from
 * released on, in order, and advance released. */
static inline enum conc_status conc__pipe_drain_ready(struct conc__pipe_worker *w)
{
	struct conc__pipe_stage *st = w->st;
	uint64_t mask = st->window - 1;
	for (;;) {
		/* Relaxed: only the drainer writes released, and the flag's
		 * exchange ordered us after the previous drainer. */
		uint64_t r = atomic_load_explicit(&st->released, memory_order_relaxed);
		size_t idx = (size_t)(r & mask), run = 0;
		bool skip = false;
		while (idx + run < st->window) {
			/* O1 seq_cst: acquire pairs with O0 in
			 * conc__pipe_run_ordered() (the slot's data is written). */
			uint64_t s = atomic_load_explicit(&st->slot_state[idx + run], memory_order_seq_cst);
			if (s >> 1 != r + run + 1)
				break;
			if (s & 1) {
				skip = run == 0;
				break;
			}
			run++;
		}
		if (run == 0 && !skip)
			return CONC_OK;
		size_t sent = run ? conc__pipe_send(w, st->out, st->slot_data + idx * st->out_esize, run) : 1;
		/* O2 seq_cst: release pairs with O3 (the window waiters may
		 * reuse the slots); seq_cst as the state change of the waitq
		 * handshake before W2. */
		atomic_store_explicit(&st->released, r + sent, memory_order_seq_cst);
		conc_waitq_wake_all(&st->window_q);
		if (sent < run)
			return CONC_CANCELED;
	}
}

/* After publishing a slot: drain, unless another worker is draining (it
 * will see the slot: see the flag's handshake below). */
static inline enum conc_status conc__pipe_drain(struct conc__pipe_worker *w)
{
	struct conc__pipe_stage *st = w->st;
	for (;;) {
		/* D1 seq_cst: Dekker with D2.  A depositor stores its slot (O0)
		 * then swaps the flag; a drainer clears the flag (D2) then
		 * re-reads the next slot.  In the seq_cst order either the
		 * depositor finds the flag clear and drains, or the drainer's
		 * re-read sees the slot.  Acquire: after the previous drainer. */
		if (atomic_exchange_explicit(&st->draining, 1, memory_order_seq_cst))
			return CONC_OK;
		enum conc_status s = conc__pipe_drain_ready(w);
		/* D2 seq_cst: see D1.  Release: hands released on. */
		atomic_store_explicit(&st->draining, 0, memory_order_seq_cst);
		if (s != CONC_OK)
			return s;
		/* Relaxed: a stale value only costs one more round. */
		uint64_t r = atomic_load_explicit(&st->released, memory_order_relaxed);
		/* O1 seq_cst, as in drain_ready. */
		if (atomic_load_explicit(&st->slot_state[r & (st->window - 1)], memory_order_seq_cst) >> 1 != r + 1)
			return CONC_OK;
	}
}

/* An ordered worker: as conc__pipe_run, with the token and the window. */
static inline bool conc__pipe_run_ordered(struct conc__pipe_worker *w)
{
	struct conc__pipe_stage *st = w->st;
	struct conc_ctx *ctx = &st->p->ctx;
	uint64_t mask = st->window - 1;
	for (;;) {
		if (conc_ctx_err(ctx) != CONC_OK)
			return false;
		uint64_t seq;
		enum conc_status s;
		if (conc__pipe_recv(w, st->token, (unsigned char *)&seq, 1, &s) == 0)
			return false; /* the token channel is never closed: canceled */
		size_t n = conc__pipe_recv(w, st->in, w->inbuf, st->batch, &s);
		uint64_t next = seq + n;
		/* Never full: this worker took the only token. */
		enum conc_status ts = conc_chan_try_send(st->token, &next);
		CONC_ASSERT(ts == CONC_OK);
		(void)ts;
		if (n == 0)
			return s == CONC_CLOSED;
		conc__pipe_count(&w->items_in, n);
		for (size_t i = 0; i < n; i++) {
			unsigned char *in = w->inbuf + i * st->in_esize;
			if (conc__pipe_window_wait(w, seq + i) != CONC_OK) {
				conc__pipe_drop_in(w, in, n - i);
				return false;
			}
			size_t idx = (size_t)((seq + i) & mask);
			uint64_t state = (seq + i + 1) << 1;
			int r = st->fn(st->arg, ctx, in, st->slot_data + idx * st->out_esize);
			bool failed = r != 0 && conc__pipe_failed(w, in, r);
			if (r != 0)
				state |= 1;
			/* O0 seq_cst: release publishes the slot's data; pairs
			 * with O1.  seq_cst: the depositor's half of D1. */
			atomic_store_explicit(&st->slot_state[idx], state, memory_order_seq_cst);
			if (failed || conc__pipe_drain(w) != CONC_OK) {
				conc__pipe_drop_in(w, in + st->in_esize, n - i - 1);
				return false;
			}
		}
	}
}

/* A worker's end: the last of its stage closes the stage's output, the last
 * of the pipeline records the error and closes done. */
static inline void conc__pipe_worker_exit(struct conc__pipe_stage *st, bool clean)
{
	struct conc_pipeline *p = st->p;
	if (!clean)
		conc__pipe_abort(p);
	/* acq_rel: the last worker of the stage sees the others' sends (all
	 * drained) before it closes. */
	if (atomic_fetch_sub_explicit(&st->live, 1, memory_order_acq_rel) == 1)
		(void)conc_chan_close(st->out);
	/* acq_rel: the last worker sees every other worker's end. */
	if (atomic_fetch_sub_explicit(&p->live, 1, memory_order_acq_rel) == 1) {
		int e = conc_ctx_err(&p->ctx) == CONC_OK ? 0 : conc_ctx_cause(&p->ctx);
		/* Relaxed: published by the release store of finished. */
		atomic_store_explicit(&p->err, e, memory_order_relaxed);
		/* F1 release: pairs with F2 in conc_pipeline_err(). */
		atomic_store_explicit(&p->finished, true, memory_order_release);
		(void)conc_chan_close(p->done);
	}
}

static inline void *conc__pipe_worker_main(void *arg)
{
	struct conc__pipe_worker *w = (struct conc__pipe_worker *)arg;
	bool clean = w->st->ordered ? conc__pipe_run_ordered(w) : conc__pipe_run(w);
	conc__pipe_worker_exit(w->st, clean);
	return NULL;
}

static inline void conc__pipe_stage_free(struct conc__pipe_stage *st)
{
	(void)conc_chan_free(st->out);
	(void)conc_chan_free(st->token);
	if (st->bufs)
		CONC_FREE(st->bufs);
	if (st->workers)
		CONC_FREE(st->workers);
	conc_waitq_destroy(&st->window_q);
	CONC_FREE(st);
}

/* Drop what is left in channel c (no thread uses it any more). */
static inline void conc__pipe_drain_chan(struct conc_chan *c, unsigned char *buf, size_t max,
					 void (*drop)(void *, void *), void *arg)
{
	size_t n;
	while ((n = conc_chan_try_recv_burst(c, buf, max, NULL)) > 0)
		conc__pipe_drop(drop, arg, buf, n, conc_chan_elem_size(c));
}

/* ------------------------------------------------------------------- API */

/*
 * Create a pipeline with no stages yet: its input channel (cfg->esize bytes
 * per item, cfg->queue_cap items) and its context (a child of cfg->parent,
 * which must outlive the pipeline).  Returns CONC_OK and sets *out;
 * CONC_INVALID (NULL out or cfg, esize 0, queue_cap > CONC_CHAN_MAX_CAP),
 * CONC_OVERFLOW or CONC_NOMEM, with nothing allocated.  Allocates; does not
 * block.  Free with conc_pipeline_free.
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_new(struct conc_pipeline **out,
								const struct conc_pipeline_config *cfg)
{
	if (!out || !cfg || cfg->esize == 0 || cfg->queue_cap > CONC_CHAN_MAX_CAP)
		return CONC_INVALID;
	if (cfg->esize > SIZE_MAX / 2 - 2 * CONC_CACHELINE)
		return CONC_OVERFLOW;
	size_t head = conc__pipe_round(sizeof(struct conc_pipeline));
	unsigned char *mem = (unsigned char *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, head + conc__pipe_round(cfg->esize));
	if (!mem)
		return CONC_NOMEM;
	struct conc_pipeline *p = (struct conc_pipeline *)mem;
	memset((void *)p, 0, sizeof *p);
	p->scratch = mem + head;
	p->in_esize = cfg->esize;
	p->drop = cfg->drop;
	p->drop_arg = cfg->drop_arg;
	/* Relaxed: no other thread sees p before it is returned. */
	atomic_store_explicit(&p->live, 0, memory_order_relaxed);
	atomic_store_explicit(&p->err, 0, memory_order_relaxed);
	atomic_store_explicit(&p->finished, false, memory_order_relaxed);
	enum conc_status s = conc_chan_new(&p->input, cfg->queue_cap ? cfg->queue_cap : CONC_PIPELINE_DEFAULT_CAP,
					   cfg->esize);
	if (s == CONC_OK && (s = conc_chan_new(&p->done, 0, 1)) != CONC_OK)
		(void)conc_chan_free(p->input);
	if (s == CONC_OK && (s = conc_ctx_init(&p->ctx, cfg->parent, conc_deadline_forever())) != CONC_OK) {
		(void)conc_chan_free(p->input);
		(void)conc_chan_free(p->done);
	}
	if (s != CONC_OK) {
		CONC_FREE(mem);
		return s;
	}
	*out = p;
	return CONC_OK;
}

/*
 * Append a stage; its input is the previous stage's output (or the
 * pipeline's input).  Allocates the stage's output channel, its workers'
 * batch buffers and, if ordered, its reorder window; threads start with
 * conc_pipeline_start.  Returns CONC_OK; CONC_INVALID (NULL p, cfg or fn,
 * workers 0 or > CONC_PIPELINE_MAX_WORKERS, batch > CONC_PIPELINE_MAX_BATCH,
 * window > CONC_PIPELINE_MAX_WINDOW, queue_cap > CONC_CHAN_MAX_CAP);
 * CONC_BUSY once started; CONC_OVERFLOW; CONC_NOMEM (the pipeline is left
 * as it was).  The builder's thread only.
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_add_stage(struct conc_pipeline *p,
								      const struct conc_stage_config *cfg)
{
	if (!p || !cfg || !cfg->fn || cfg->workers == 0 || cfg->workers > CONC_PIPELINE_MAX_WORKERS ||
	    cfg->batch > CONC_PIPELINE_MAX_BATCH || cfg->window > CONC_PIPELINE_MAX_WINDOW ||
	    cfg->queue_cap > CONC_CHAN_MAX_CAP)
		return CONC_INVALID;
	if (p->started)
		return CONC_BUSY;
	struct conc_chan *in = p->last ? p->last->out : p->input;
	size_t in_esize = conc_chan_elem_size(in);
	size_t out_esize = cfg->out_esize ? cfg->out_esize : in_esize;
	size_t k = cfg->workers;
	size_t batch = cfg->batch;
	if (batch == 0) {
		batch = conc_chan_cap(in) / (2 * k);
		batch = batch < 1 ? 1 : batch > 16 ? 16 : batch;
	}
	bool ordered = cfg->ordered && k > 1;
	uint64_t window = 1;
	if (ordered) {
		size_t want = cfg->window ? cfg->window : 2 * k * batch;
		if (want > CONC_PIPELINE_MAX_WINDOW)
			want = CONC_PIPELINE_MAX_WINDOW;
		while (window < want)
			window <<= 1;
	}
	/* One block: per worker an input and an output batch, then the slots. */
	size_t inb, outb, slots = 0, states = 0, per, total;
	if (out_esize > SIZE_MAX / 2 - 2 * CONC_CACHELINE || !conc__pipe_mul(batch, in_esize, &inb) ||
	    !conc__pipe_mul(batch, out_esize, &outb) || inb > SIZE_MAX / 4 || outb > SIZE_MAX / 4 ||
	    (ordered && (!conc__pipe_mul((size_t)window, out_esize, &slots) || slots > SIZE_MAX / 4)))
		return CONC_OVERFLOW;
	inb = conc__pipe_round(inb);
	outb = conc__pipe_round(ordered ? 0 : outb);
	slots = conc__pipe_round(slots);
	states = conc__pipe_round(ordered ? (size_t)window * sizeof(uint64_t) : 0);
	per = inb + outb;
	if (!conc__pipe_mul(per, k, &total) || total > SIZE_MAX - slots - states - CONC_CACHELINE)
		return CONC_OVERFLOW;
	total += slots + states;

	struct conc__pipe_stage *st = (struct conc__pipe_stage *)CONC_ALIGNED_ALLOC(
		CONC_CACHELINE, conc__pipe_round(sizeof(struct conc__pipe_stage)));
	if (!st)
		return CONC_NOMEM;
	memset((void *)st, 0, sizeof *st);
	conc_waitq_init(&st->window_q);
	st->workers = (struct conc__pipe_worker *)CONC_ALIGNED_ALLOC(
		CONC_CACHELINE, conc__pipe_round(k * sizeof(struct conc__pipe_worker)));
	st->bufs = (unsigned char *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, total ? total : CONC_CACHELINE);
	enum conc_status s = st->workers && st->bufs ? CONC_OK : CONC_NOMEM;
	if (s == CONC_OK)
		s = conc_chan_new(&st->out, cfg->queue_cap ? cfg->queue_cap : CONC_PIPELINE_DEFAULT_CAP, out_esize);
	if (s == CONC_OK && ordered)
		s = conc_chan_new(&st->token, 1, sizeof(uint64_t));
	if (s != CONC_OK) {
		conc__pipe_stage_free(st);
		return s;
	}
	st->p = p;
	st->fn = cfg->fn;
	st->arg = cfg->arg;
	st->in = in;
	st->in_esize = in_esize;
	st->out_esize = out_esize;
	st->batch = batch;
	st->nworkers = k;
	st->drop_in = p->last ? p->last->drop_out : p->drop;
	st->drop_in_arg = p->last ? p->last->drop_out_arg : p->drop_arg;
	st->drop_out = cfg->drop;
	st->drop_out_arg = cfg->drop_arg;
	st->ordered = ordered;
	st->window = window;
	memset((void *)st->workers, 0, k * sizeof(struct conc__pipe_worker));
	for (size_t i = 0; i < k; i++) {
		struct conc__pipe_worker *w = &st->workers[i];
		w->st = st;
		w->inbuf = st->bufs + i * per;
		w->outbuf = ordered ? NULL : w->inbuf + inb;
	}
	if (ordered) {
		st->slot_data = st->bufs + k * per;
		st->slot_state = (_Atomic(uint64_t) *)(void *)(st->slot_data + slots);
		/* Relaxed, as the stores below: the workers do not exist yet;
		 * thread creation in conc_pipeline_start publishes them. */
		for (size_t i = 0; i < window; i++)
			atomic_store_explicit(&st->slot_state[i], 0, memory_order_relaxed);
		uint64_t zero = 0;
		s = conc_chan_try_send(st->token, &zero);
		CONC_ASSERT(s == CONC_OK);
	}
	atomic_store_explicit(&st->released, 0, memory_order_relaxed);
	atomic_store_explicit(&st->draining, 0, memory_order_relaxed);
	atomic_store_explicit(&st->live, 0, memory_order_relaxed);
	if (p->last)
		p->last->next = st;
	else
		p->first = st;
	p->last = st;
	p->nstages++;
	return CONC_OK;
}

/*
 * Start every stage's workers.  Returns CONC_OK; CONC_INVALID (NULL p, no
 * stages); CONC_BUSY if already started; CONC_NOMEM if a thread could not
 * be created: then the pipeline is canceled with cause CONC_NOMEM, the
 * workers already started end, and conc_pipeline_wait/free work as usual.
 * The builder's thread only.
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_start(struct conc_pipeline *p)
{
	if (!p || !p->first)
		return CONC_INVALID;
	if (p->started)
		return CONC_BUSY;
	size_t total = 0;
	for (struct conc__pipe_stage *st = p->first; st; st = st->next) {
		atomic_store_explicit(&st->live, st->nworkers, memory_order_relaxed);
		total += st->nworkers;
	}
	/* Relaxed: thread creation publishes everything set up to here. */
	atomic_store_explicit(&p->live, total, memory_order_relaxed);
	p->started = true;
	for (struct conc__pipe_stage *st = p->first; st; st = st->next) {
		for (size_t i = 0; i < st->nworkers; i++) {
			struct conc__pipe_worker *w = &st->workers[i];
			if (CONC_THREAD_CREATE(&w->thread, conc__pipe_worker_main, w) == 0) {
				w->created = true;
				continue;
			}
			/* Cancel, and end the workers that never started. */
			(void)conc_ctx_cancel(&p->ctx, CONC_NOMEM);
			for (struct conc__pipe_stage *s2 = st; s2; s2 = s2->next)
				for (size_t j = s2 == st ? i : 0; j < s2->nworkers; j++)
					conc__pipe_worker_exit(s2, false);
			return CONC_NOMEM;
		}
	}
	return CONC_OK;
}

/* The pipeline's input channel (cfg.esize bytes per item), e.g. for a
 * select; NULL for NULL.  Items sent to it belong to the pipeline. */
static inline struct conc_chan *conc_pipeline_input(struct conc_pipeline *p)
{
	return p ? p->input : NULL;
}

/* The last stage's output channel; NULL for NULL or with no stages.  Items
 * received from it are the caller's. */
static inline struct conc_chan *conc_pipeline_output(struct conc_pipeline *p)
{
	return p && p->last ? p->last->out : NULL;
}

/* The number of stages; 0 for NULL. */
static inline size_t conc_pipeline_stages(const struct conc_pipeline *p)
{
	return p ? p->nstages : 0;
}

/* The pipeline's error: once finished, 0 for a clean finish or the cause
 * (the first error of a stage fn, the cancel cause, CONC_TIMEDOUT); before
 * that, 0 while live or the cause once canceled.  CONC_INVALID for NULL. */
static inline int conc_pipeline_err(struct conc_pipeline *p)
{
	if (!p)
		return CONC_INVALID;
	/* F2 acquire: pairs with F1 in conc__pipe_worker_exit(). */
	if (atomic_load_explicit(&p->finished, memory_order_acquire))
		return atomic_load_explicit(&p->err, memory_order_relaxed); /* relaxed: after F2 */
	return conc_ctx_err(&p->ctx) == CONC_OK ? 0 : conc_ctx_cause(&p->ctx);
}

/*
 * Feed one item (esize bytes, copied) into the pipeline, waiting for room
 * until d or until ctx (the caller's, NULL for none) is done.  Returns
 * CONC_OK (the item is the pipeline's), CONC_CLOSED (the input was closed),
 * CONC_CANCELED (the pipeline is canceled or failed: see
 * conc_pipeline_err), CONC_TIMEDOUT or CONC_CANCELED from d or ctx, or
 * CONC_INVALID.  On failure the caller keeps the item.  Any thread; may be
 * called before start (items wait in the input channel).
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_push_until(struct conc_pipeline *p, const void *elem,
								       struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!p || !elem)
		return CONC_INVALID;
	if (conc_pipeline_err(p) != 0)
		return CONC_CANCELED;
	enum conc_status s = conc_chan_send_until(p->input, elem, d, ctx);
	if (s == CONC_CLOSED && conc_pipeline_err(p) != 0)
		return CONC_CANCELED;
	return s;
}

CONC_NODISCARD static inline enum conc_status conc_pipeline_push(struct conc_pipeline *p, const void *elem)
{
	return conc_pipeline_push_until(p, elem, conc_deadline_forever(), NULL);
}

/*
 * Take one item from the last stage's output into out, waiting until d or
 * until ctx (the caller's) is done.  Returns CONC_OK (the item is the
 * caller's), CONC_CLOSED (the pipeline finished cleanly and everything was
 * pulled), CONC_CANCELED (the pipeline is canceled or failed; what is left
 * is dropped at free), CONC_TIMEDOUT/CONC_CANCELED from d or ctx, or
 * CONC_INVALID (also with no stages).  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_pull_until(struct conc_pipeline *p, void *out,
								       struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!p || !out || !p->last)
		return CONC_INVALID;
	if (conc_pipeline_err(p) != 0)
		return CONC_CANCELED;
	enum conc_status s = conc_chan_recv_until(p->last->out, out, d, ctx);
	if (s == CONC_CLOSED && conc_pipeline_err(p) != 0)
		return CONC_CANCELED;
	return s;
}

CONC_NODISCARD static inline enum conc_status conc_pipeline_pull(struct conc_pipeline *p, void *out)
{
	return conc_pipeline_pull_until(p, out, conc_deadline_forever(), NULL);
}

/* No more input: the stages drain and end, and pulls then report
 * CONC_CLOSED.  Returns CONC_OK, CONC_CLOSED if already closed (or closed
 * by cancellation), CONC_INVALID for NULL.  Any thread; idempotent. */
static inline enum conc_status conc_pipeline_close_input(struct conc_pipeline *p)
{
	return p ? conc_chan_close(p->input) : CONC_INVALID;
}

/*
 * Cancel the pipeline with cause (0 means CONC_CANCELED): every worker
 * returns promptly, dropping the items in its hands, and callers blocked in
 * push and pull return.  Returns CONC_OK if this call canceled it, else the
 * context's err (already done), CONC_INVALID for NULL.  Any thread, any time.
 */
static inline enum conc_status conc_pipeline_cancel(struct conc_pipeline *p, int cause)
{
	if (!p)
		return CONC_INVALID;
	enum conc_status s = conc_ctx_cancel(&p->ctx, cause);
	conc__pipe_abort(p);
	return s;
}

/*
 * Wait until every worker has ended, until d, or until ctx (the caller's)
 * is done.  Returns CONC_OK when the pipeline has finished, and stores its
 * error (as conc_pipeline_err: 0 or the cause) in *err (may be NULL);
 * CONC_TIMEDOUT or CONC_CANCELED if the wait gave up (the pipeline runs
 * on); CONC_INVALID for NULL or a pipeline not started.  Any threads at
 * once; no CPU while waiting.
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_wait_until(struct conc_pipeline *p, struct conc_deadline d,
								       struct conc_ctx *ctx, int *err)
{
	if (!p || !p->started)
		return CONC_INVALID;
	unsigned char b;
	enum conc_status s = conc_chan_recv_until(p->done, &b, d, ctx);
	if (s != CONC_CLOSED)
		return s == CONC_OK ? CONC_INVALID : s; /* nobody sends on done */
	if (err)
		*err = conc_pipeline_err(p);
	return CONC_OK;
}

CONC_NODISCARD static inline enum conc_status conc_pipeline_wait(struct conc_pipeline *p, int *err)
{
	return conc_pipeline_wait_until(p, conc_deadline_forever(), NULL, err);
}

/*
 * Stage i's counters, summed over its workers (a snapshot while running;
 * exact once finished).  Returns CONC_OK, or CONC_INVALID (NULL p or out,
 * i out of range).  Any thread; lock-free.
 */
CONC_NODISCARD static inline enum conc_status conc_pipeline_stats(struct conc_pipeline *p, size_t i,
								  struct conc_stage_stats *out)
{
	if (!p || !out || i >= p->nstages)
		return CONC_INVALID;
	struct conc__pipe_stage *st = p->first;
	while (i--)
		st = st->next;
	memset(out, 0, sizeof *out);
	out->workers = st->nworkers;
	for (size_t k = 0; k < st->nworkers; k++) {
		struct conc__pipe_worker *w = &st->workers[k];
		/* Relaxed: statistics. */
		out->items_in += atomic_load_explicit(&w->items_in, memory_order_relaxed);
		out->items_out += atomic_load_explicit(&w->items_out, memory_order_relaxed);
		out->skipped += atomic_load_explicit(&w->skipped, memory_order_relaxed);
		out->errors += atomic_load_explicit(&w->errors, memory_order_relaxed);
		out->dropped += atomic_load_explicit(&w->dropped, memory_order_relaxed);
		out->ns_blocked_in += atomic_load_explicit(&w->ns_in, memory_order_relaxed);
		out->ns_blocked_out += atomic_load_explicit(&w->ns_out, memory_order_relaxed);
	}
	return CONC_OK;
}

/*
 * Tear the pipeline down: cancel it if it has not finished, join its
 * workers (blocks until they return: promptly, unless a stage fn ignores
 * its ctx), hand every item left in the channels and reorder windows to its
 * destructor, and free everything.  Returns CONC_OK (NULL is a no-op), or
 * CONC_BUSY if a stage fn left a child context of the pipeline's context
 * alive (nothing is freed; destroy it and call again).  No other call on p
 * may run during or after free.
 */
static inline enum conc_status conc_pipeline_free(struct conc_pipeline *p)
{
	if (!p)
		return CONC_OK;
	if (p->started) {
		/* Relaxed: only decides whether to cancel. */
		if (!atomic_load_explicit(&p->finished, memory_order_relaxed))
			(void)conc_pipeline_cancel(p, CONC_CANCELED);
		for (struct conc__pipe_stage *st = p->first; st; st = st->next)
			for (size_t i = 0; i < st->nworkers; i++) {
				struct conc__pipe_worker *w = &st->workers[i];
				if (w->created && !w->joined) {
					(void)pthread_join(w->thread, NULL);
					w->joined = true;
				}
			}
	}
	if (conc_ctx_destroy(&p->ctx) != CONC_OK)
		return CONC_BUSY;
	conc__pipe_drain_chan(p->input, p->scratch, 1, p->drop, p->drop_arg);
	struct conc__pipe_stage *st = p->first;
	while (st) {
		struct conc__pipe_stage *next = st->next;
		if (st->ordered) {
			/* Deposited but never sent: seq >= released, not skipped. */
			/* Relaxed: the workers were joined. */
			uint64_t r = atomic_load_explicit(&st->released, memory_order_relaxed);
			for (size_t i = 0; i < st->window; i++) {
				uint64_t s = atomic_load_explicit(&st->slot_state[i], memory_order_relaxed);
				if (s && (s >> 1) - 1 >= r && !(s & 1) && st->drop_out)
					st->drop_out(st->slot_data + i * st->out_esize, st->drop_out_arg);
			}
		}
		unsigned char *buf = next ? next->workers[0].inbuf : (st->ordered ? st->slot_data : st->workers[0].outbuf);
		size_t max = next ? next->batch : (st->ordered ? (size_t)st->window : st->batch);
		conc__pipe_drain_chan(st->out, buf, max, st->drop_out, st->drop_out_arg);
		conc__pipe_stage_free(st);
		st = next;
	}
	(void)conc_chan_free(p->input);
	(void)conc_chan_free(p->done);
	CONC_FREE(p);
	return CONC_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_PIPELINE_H */
