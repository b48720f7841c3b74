/* SPDX-License-Identifier: MIT */
#ifndef CONC_FAN_H
#define CONC_FAN_H

/*
 * conc/fan.h: fan-in (merge N channels into one stream) and fan-out (one
 * channel consumed by N worker threads), Go's fan-out/fan-in pattern without
 * Go's thread per input.
 *
 * Fan-in: struct conc_fan_in is a merge over N input channels of one element
 * size.  No thread at all: each conc_fan_in_recv_until() runs one fair select
 * (conc/select.h) over the inputs still open, says which input the element
 * came from (its origin, the index in the array given at init), and drops an
 * input from the set once it is closed and drained; when every input is,
 * the merge reports CONC_CLOSED.  The open inputs are kept at the front of
 * the case array (a drained one is swapped out), so a select never walks a
 * case that can no longer fire.  Fair: among the inputs ready at a call each
 * is taken with equal probability (select's fair mode), so a busy input
 * cannot starve a quiet one.  Each input is FIFO and the merge has one
 * receiver at a time, so the items of one input come out in the order they
 * were sent.
 *
 *   struct conc_fan_in *m;
 *   conc_fan_in_new(&m, inputs, 3);
 *   size_t from; struct result r;
 *   while (conc_fan_in_recv(m, &r, &from) == CONC_OK)
 *           use(r, from);                       // from: 0, 1 or 2
 *   conc_fan_in_free(m);                        // inputs are the caller's
 *
 * conc_fan_in_pump_until() forwards instead, into an output channel, and
 * closes that channel once every input is closed: Go's fanIn with one thread
 * (the caller's, or one the caller starts) instead of one per input.  The
 * output carries the payload alone (same element size as the inputs) or,
 * with an element of CONC_FAN_TAGGED(T) (8 + esize bytes up to the next
 * multiple of 8), the origin as a uint64_t first and the payload at byte 8.
 * An element received but not yet forwarded when the pump is canceled or
 * times out is kept in the merge and is the first thing the next pump (or
 * recv) delivers: nothing is lost.
 *
 * Who may call what (fan-in): one receiving call (recv, try_recv, pump) at a
 * time; a second one that overlaps it returns CONC_BUSY rather than racing.
 * conc_fan_in_count may be called by any thread at any time; open and
 * pending by the receiving thread, or any thread while no call runs.  The
 * senders and closers of the inputs are any threads.  The merge never closes
 * or frees its inputs; they must outlive it.
 *
 * Fan-out: conc_fan_out_start() starts N worker threads that all receive
 * from one input channel (the MPMC channel distributes: no dispatcher
 * thread) and call fn(arg, ctx, worker, item, out) for each element.  fn
 * sends what it produces to `out`: one output channel shared by all workers,
 * or, given an array `outs`, worker i's own channel outs[i] (Go's fanOut,
 * whose per-worker outputs a fan-in then merges with the worker as origin).
 * When the input is closed and drained the workers end, and the last one to
 * end closes the output(s), unless CONC_FAN_KEEP_OPEN (per-worker outputs
 * too are closed once every worker has ended, so a downstream merge sees
 * them close together).  The first non-zero value fn returns cancels the
 * fan-out's context (every blocked worker and every fn watching ctx
 * returns) and is the error conc_fan_out_wait_until() reports; so is the
 * cause when the parent context is canceled or conc_fan_out_cancel() is
 * called.  An element a worker received but did not give to fn because the
 * fan-out was canceled meanwhile goes to the drop callback (if any); once fn
 * is called the element is fn's.  Elements still in the input channel stay
 * there: it is the caller's.
 *
 * Who may call what (fan-out): start, then any threads may wait, cancel and
 * query concurrently; conc_fan_out_free() once, by one thread, after a wait
 * returned CONC_OK (it returns CONC_BUSY before the workers have ended).
 * fn runs on the worker threads, any number at once, so what it shares
 * through arg must be thread-safe.
 *
 * Progress: blocking (select, channels and contexts); a blocked receiver,
 * pump, worker or waiter uses no CPU.  Every blocking call takes an absolute
 * deadline and a context.  Memory: conc_fan_in_new and conc_fan_out_start
 * allocate once, through CONC_ALIGNED_ALLOC/CONC_FREE (chan.h; overridable
 * to inject failures); conc_fan_in_init works on caller memory.  Nothing
 * allocates after that.  Threads are created through CONC_THREAD_CREATE,
 * overridable likewise.
 */

#include "status.h"
#include "sys.h"
#include "ctx.h"
#include "chan.h"
#include "select.h"

#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ fan-in */

struct conc_fan_in {
	size_t n;                       /* inputs given at init; 0 once destroyed */
	size_t esize;                   /* their element size */
	size_t open;                    /* inputs not yet closed and drained */
	struct conc_select_case *cases; /* n cases; the open ones are cases[0, open) */
	size_t *origin;                 /* origin[k]: the input index of cases[k] */
	_Atomic(uint64_t) *counts;      /* counts[i]: elements received from input i */
	unsigned char *hold;            /* the pump's element in hand: origin, payload */
	bool holding;                   /* hold has an element not yet delivered */
	bool owned;                     /* allocated by conc_fan_in_new */
	/* Set while a receiving call runs: refuses an overlapping one and
	 * hands the fields above from one receiving thread to the next. */
	_Atomic(bool) busy;
};

/* The offset of the payload in a tagged element (after a uint64_t origin). */
#define CONC_FAN_TAG_SIZE 8u

/* A tagged element, as conc_fan_in_pump_until() writes into its output:
 * `struct tagged CONC_FAN_TAGGED(int);` declares struct tagged with fields
 * origin and item; make the output with sizeof(struct tagged).  T's
 * alignment must be at most 8, so that item sits at byte 8. */
#define CONC_FAN_TAGGED(T) { uint64_t origin; T item; }

static inline size_t conc__fan_round8(size_t x)
{
	return (x + 7) & ~(size_t)7;
}

/* The hold buffer: origin, payload, padding to a multiple of 8. */
static inline size_t conc__fan_hold_size(size_t esize)
{
	return conc__fan_round8(CONC_FAN_TAG_SIZE + esize);
}

/*
 * The number of bytes conc_fan_in_init needs for n inputs of esize-byte
 * elements, or 0 if n or esize is 0, n > CONC_SELECT_MAX_CASES, or the size
 * overflows size_t.
 */
static inline size_t conc_fan_in_buf_size(size_t n, size_t esize)
{
	if (n == 0 || esize == 0 || n > CONC_SELECT_MAX_CASES || esize > SIZE_MAX / 2)
		return 0;
	size_t per = sizeof(struct conc_select_case) + sizeof(size_t) + sizeof(uint64_t);
	size_t hold = conc__fan_hold_size(esize);
	if (n > (SIZE_MAX - hold) / per)
		return 0;
	return n * per + hold;
}

/*
 * Initialise the merge m over the n channels inputs[0..n) (all of the same
 * element size; the array is copied, the channels are not), on the caller's
 * buffer buf (8-byte aligned) of bufsize >= conc_fan_in_buf_size(n, esize)
 * bytes.  Returns CONC_OK; CONC_INVALID for NULL m, inputs or buf, n == 0,
 * n > CONC_SELECT_MAX_CASES, a NULL input, element sizes that differ, or a
 * misaligned buf; CONC_OVERFLOW if bufsize is too small or the
 * size overflows.  No allocation.  Not thread-safe: nothing else may use m
 * during init.  The inputs must outlive m.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_in_init(struct conc_fan_in *m, struct conc_chan *const *inputs,
							       size_t n, void *buf, size_t bufsize)
{
	if (!m || !inputs || !buf || n == 0 || n > CONC_SELECT_MAX_CASES || ((uintptr_t)buf & 7))
		return CONC_INVALID;
	size_t esize = conc_chan_elem_size(inputs[0]);
	for (size_t i = 0; i < n; i++)
		if (!inputs[i] || conc_chan_elem_size(inputs[i]) != esize || esize == 0)
			return CONC_INVALID;
	size_t need = conc_fan_in_buf_size(n, esize);
	if (need == 0 || bufsize < need)
		return CONC_OVERFLOW;
	unsigned char *p = (unsigned char *)buf;
	m->cases = (struct conc_select_case *)(void *)p;
	p += n * sizeof(struct conc_select_case);
	m->origin = (size_t *)(void *)p;
	p += n * sizeof(size_t);
	m->counts = (_Atomic(uint64_t) *)(void *)p;
	p += n * sizeof(uint64_t);
	m->hold = p;
	memset(m->hold, 0, conc__fan_hold_size(esize));
	for (size_t i = 0; i < n; i++) {
		m->cases[i] = conc_select_recv(inputs[i], NULL);
		m->origin[i] = i;
		atomic_init(&m->counts[i], 0);
	}
	m->n = n;
	m->esize = esize;
	m->open = n;
	m->holding = false;
	m->owned = false;
	atomic_init(&m->busy, false);
	return CONC_OK;
}

/*
 * Allocate a merge over inputs[0..n) (as conc_fan_in_init, in one block) and
 * store it in *out.  Returns CONC_OK, CONC_INVALID or CONC_OVERFLOW (as
 * init), or CONC_NOMEM; *out is set only on success.  Free with
 * conc_fan_in_free.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_in_new(struct conc_fan_in **out,
							      struct conc_chan *const *inputs, size_t n)
{
	if (!out || !inputs || n == 0 || !inputs[0])
		return CONC_INVALID;
	size_t need = conc_fan_in_buf_size(n, conc_chan_elem_size(inputs[0]));
	size_t head = conc__fan_round8(sizeof(struct conc_fan_in));
	if (need == 0)
		return n > CONC_SELECT_MAX_CASES || conc_chan_elem_size(inputs[0]) == 0 ? CONC_INVALID
											 : CONC_OVERFLOW;
	if (need > SIZE_MAX - head - CONC_CACHELINE)
		return CONC_OVERFLOW;
	size_t total = (head + need + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	unsigned char *mem = (unsigned char *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, total);
	if (!mem)
		return CONC_NOMEM;
	struct conc_fan_in *m = (struct conc_fan_in *)(void *)mem;
	enum conc_status s = conc_fan_in_init(m, inputs, n, mem + head, need);
	if (s != CONC_OK) {
		CONC_FREE(mem);
		return s;
	}
	m->owned = true;
	*out = m;
	return CONC_OK;
}

/* Take the merge for one receiving call; false if another one runs. */
static inline bool conc__fan_in_enter(struct conc_fan_in *m)
{
	/* F1 acquire: sees what the previous receiving call wrote (open, the
	 * case order, hold); pairs with F2 in conc__fan_in_leave(). */
	return !atomic_exchange_explicit(&m->busy, true, memory_order_acquire);
}

static inline void conc__fan_in_leave(struct conc_fan_in *m)
{
	/* F2 release: publishes this call's writes to the next; pairs with F1. */
	atomic_store_explicit(&m->busy, false, memory_order_release);
}

/*
 * One element from the open inputs into dst: a select over them (fair), a
 * drained input swapped out of the set, until an element comes, every input
 * is drained (CONC_CLOSED), or the select gives up.  try: never block
 * (CONC_EMPTY when nothing is ready).  Called inside enter/leave.
 */
static inline enum conc_status conc__fan_in_next(struct conc_fan_in *m, void *dst, size_t *origin,
						 struct conc_deadline d, struct conc_ctx *ctx, bool try_only)
{
	for (;;) {
		if (m->open == 0)
			return CONC_CLOSED;
		for (size_t k = 0; k < m->open; k++)
			m->cases[k].buf = dst;
		size_t k = m->open;
		enum conc_status s = try_only ? conc_select_try(m->cases, m->open, 0, &k)
					      : conc_select_until(m->cases, m->open, 0, d, ctx, &k);
		if (s == CONC_OK) {
			size_t i = m->origin[k];
			/* Relaxed: a statistic; only this call writes it. */
			atomic_fetch_add_explicit(&m->counts[i], 1, memory_order_relaxed);
			if (origin)
				*origin = i;
			return CONC_OK;
		}
		if (s != CONC_CLOSED)
			return s == CONC_WOULDBLOCK ? CONC_EMPTY : s;
		/* Input origin[k] is closed and drained: swap it out of the set. */
		m->open--;
		struct conc_select_case c = m->cases[k];
		size_t o = m->origin[k];
		m->cases[k] = m->cases[m->open];
		m->origin[k] = m->origin[m->open];
		m->cases[m->open] = c;
		m->origin[m->open] = o;
	}
}

/* Deliver the element in hand (left by a pump that gave up) into out. */
static inline void conc__fan_in_unhold(struct conc_fan_in *m, void *out, size_t *origin)
{
	uint64_t tag;
	memcpy(&tag, m->hold, sizeof tag);
	memcpy(out, m->hold + CONC_FAN_TAG_SIZE, m->esize);
	if (origin)
		*origin = (size_t)tag;
	m->holding = false;
}

/* recv_until and try_recv: the one-receiver guard, a held element first,
 * then one select over the open inputs (try: without waiting). */
static inline enum conc_status conc__fan_in_recv(struct conc_fan_in *m, void *out, size_t *origin,
						 struct conc_deadline d, struct conc_ctx *ctx, bool try_only)
{
	if (!m || !out || m->n == 0)
		return CONC_INVALID;
	if (!conc__fan_in_enter(m))
		return CONC_BUSY;
	enum conc_status s = CONC_OK;
	if (m->holding)
		conc__fan_in_unhold(m, out, origin);
	else
		s = conc__fan_in_next(m, out, origin, d, ctx, try_only);
	conc__fan_in_leave(m);
	return s;
}

/*
 * Receive the next element of any input into out (esize bytes) and its
 * input's index into *origin (may be NULL), waiting until the absolute
 * deadline d or until ctx (NULL for none) is done.  Fair among the inputs
 * ready at the call; the elements of one input come in their send order.
 * Returns CONC_OK; CONC_CLOSED once every input is closed and drained (and
 * forever after); CONC_TIMEDOUT (d or ctx's deadline passed; a passed d
 * means "try once"); CONC_CANCELED; CONC_BUSY if another receiving call on
 * m is running; CONC_INVALID for NULL m or out, a destroyed merge, or an
 * input destroyed under it.  A done context fails the call before it tries.
 * One receiving thread at a time; uses no CPU while it waits; allocates
 * nothing.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_in_recv_until(struct conc_fan_in *m, void *out,
								     size_t *origin, struct conc_deadline d,
								     struct conc_ctx *ctx)
{
	return conc__fan_in_recv(m, out, origin, d, ctx, false);
}

/* Receive, waiting as long as it takes: CONC_OK, CONC_CLOSED, CONC_BUSY or
 * CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_fan_in_recv(struct conc_fan_in *m, void *out, size_t *origin)
{
	return conc_fan_in_recv_until(m, out, origin, conc_deadline_forever(), NULL);
}

/* Never block: CONC_OK, CONC_EMPTY (nothing ready at one instant),
 * CONC_CLOSED, CONC_BUSY or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_fan_in_try_recv(struct conc_fan_in *m, void *out, size_t *origin)
{
	return conc__fan_in_recv(m, out, origin, conc_deadline_poll(), NULL, true);
}

/*
 * Forward every element of the inputs into out, then close out once every
 * input is closed and drained.  out's element size is either the inputs'
 * (the payload alone) or from 8 + esize up to the next multiple of 8 (a
 * CONC_FAN_TAGGED element: the origin as a uint64_t, the payload at byte 8,
 * zero padding).  Blocks on the inputs and on out until d or until ctx is
 * done; an element received but not yet sent then stays in the merge and is
 * sent first by the next pump (or returned by the next recv).
 * Returns CONC_OK (every input drained, out closed by this call or before);
 * CONC_CLOSED (out was closed by someone else first; the element in hand, if
 * any, stays in the merge); CONC_TIMEDOUT; CONC_CANCELED; CONC_BUSY (another
 * receiving call runs); CONC_INVALID (NULL m or out, a bad element size, out
 * one of the open inputs, a destroyed merge or channel).  Run it on one
 * thread (the caller's, or one it starts): one thread for any number of
 * inputs.  Allocates nothing.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_in_pump_until(struct conc_fan_in *m, struct conc_chan *out,
								     struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!m || !out || m->n == 0)
		return CONC_INVALID;
	size_t oes = conc_chan_elem_size(out);
	bool tagged = oes != m->esize;
	if (tagged && (oes < CONC_FAN_TAG_SIZE + m->esize || oes > conc__fan_hold_size(m->esize)))
		return CONC_INVALID;
	if (!conc__fan_in_enter(m))
		return CONC_BUSY;
	enum conc_status s = CONC_OK;
	for (size_t k = 0; k < m->open; k++)
		if (m->cases[k].chan == out)
			s = CONC_INVALID;
	while (s == CONC_OK) {
		if (!m->holding) {
			size_t from = 0;
			s = conc__fan_in_next(m, m->hold + CONC_FAN_TAG_SIZE, &from, d, ctx, false);
			if (s == CONC_CLOSED) {
				s = conc_chan_close(out) == CONC_INVALID ? CONC_INVALID : CONC_OK;
				break;
			}
			if (s != CONC_OK)
				break;
			uint64_t tag = from;
			memcpy(m->hold, &tag, sizeof tag);
			m->holding = true;
		}
		s = conc_chan_send_until(out, tagged ? m->hold : m->hold + CONC_FAN_TAG_SIZE, d, ctx);
		if (s == CONC_OK)
			m->holding = false;
	}
	conc__fan_in_leave(m);
	return s;
}

/* Forward as long as it takes: CONC_OK, CONC_CLOSED, CONC_BUSY or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_fan_in_pump(struct conc_fan_in *m, struct conc_chan *out)
{
	return conc_fan_in_pump_until(m, out, conc_deadline_forever(), NULL);
}

/* Elements received from input i so far (a snapshot; any thread); 0 for
 * NULL m or i out of range. */
static inline uint64_t conc_fan_in_count(struct conc_fan_in *m, size_t i)
{
	if (!m || i >= m->n)
		return 0;
	/* Relaxed: a snapshot of a statistic. */
	return atomic_load_explicit(&m->counts[i], memory_order_relaxed);
}

/* Inputs not yet seen closed and drained; 0 for NULL.  For the receiving
 * thread, or any thread while no receiving call runs. */
static inline size_t conc_fan_in_open(struct conc_fan_in *m)
{
	return m ? m->open : 0;
}

/* Whether an element received by a pump that gave up is waiting in the
 * merge (the next recv or pump delivers it).  Same rule as open. */
static inline bool conc_fan_in_pending(struct conc_fan_in *m)
{
	return m && m->holding;
}

/*
 * Tear down a merge made by conc_fan_in_init.  Returns CONC_OK, CONC_BUSY
 * (a receiving call runs; nothing changes) or CONC_INVALID (NULL, already
 * destroyed, or made by conc_fan_in_new).  An element still in hand
 * (conc_fan_in_pending) is discarded; the inputs are untouched.  Calls after
 * it return CONC_INVALID as long as the struct's memory is left alone.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_in_destroy(struct conc_fan_in *m)
{
	if (!m || m->n == 0 || m->owned)
		return CONC_INVALID;
	if (!conc__fan_in_enter(m))
		return CONC_BUSY;
	m->n = 0;
	m->open = 0;
	m->holding = false;
	conc__fan_in_leave(m);
	return CONC_OK;
}

/* Out of line, as conc__chan_release: a call inlined on a merge that is not
 * on the heap (which returns CONC_INVALID first) then does not warn. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline, unused))
#endif
static void conc__fan_release(void *p)
{
	CONC_FREE(p);
}

/* Free a merge from conc_fan_in_new: CONC_OK, CONC_BUSY (a receiving call
 * runs; nothing changes) or CONC_INVALID; NULL is a no-op returning CONC_OK. */
static inline enum conc_status conc_fan_in_free(struct conc_fan_in *m)
{
	if (!m)
		return CONC_OK;
	if (m->n == 0 || !m->owned)
		return CONC_INVALID;
	if (!conc__fan_in_enter(m))
		return CONC_BUSY;
	m->n = 0;
	conc__fan_release(m);
	return CONC_OK;
}

/* ----------------------------------------------------------------- fan-out */


/* Flag of conc_fan_out_start: leave the output channel(s) open when the
 * workers end (the caller closes them). */
#define CONC_FAN_KEEP_OPEN 1u

/*
 * A worker's function, called once per element received: item points to the
 * worker's copy (in_esize bytes, fn may change it; it is fn's from the call
 * on); out is the shared output or this worker's own (NULL if none); ctx is
 * the fan-out's context, canceled when the fan-out is: pass it to every
 * blocking call (e.g. conc_chan_send_until(out, &r, forever, ctx)).  Return 0
 * to go on, anything else (a conc_status or a code of the caller's) to stop
 * every worker: the first such value is the fan-out's error, unless the
 * fan-out was canceled already (fn is then taken to have given up because
 * of it, and the error is the cancel's cause).
 */
struct conc_fan_out_fns {
	int (*fn)(void *arg, struct conc_ctx *ctx, size_t worker, void *item, struct conc_chan *out);
	/* Optional: an element received but not given to fn because the
	 * fan-out was canceled in between (free what it owns). */
	void (*drop)(void *arg, void *item);
	void *arg;
};

struct conc__fan_worker {
	struct conc_fan_out *f;
	size_t index;
	pthread_t thread;
	_Atomic(uint64_t) items; /* elements given to fn; written by this worker */
	unsigned char *buf;      /* the worker's element buffer */
};

struct conc_fan_out {
	struct conc_ctx ctx;       /* child of the parent; canceled on the first error */
	struct conc_chan gate;     /* closed by start once every worker exists */
	struct conc_chan done;     /* closed by the last worker to end */
	uint64_t gate_ring[2], done_ring[2]; /* their rings: capacity 1, one byte */
	struct conc_chan *in, *out;
	struct conc_chan **outs;   /* per-worker outputs (copied), or NULL */
	struct conc_fan_out_fns fns;
	unsigned flags;
	bool aborted;              /* start failed: touch no output */
	bool joined;               /* free has joined the threads */
	size_t workers;
	_Atomic(size_t) live;      /* workers not yet ended, + 1 while starting */
	_Atomic(int) err;          /* the first error; 0 while none */
	struct conc__fan_worker *w;
};

/* Record err as the fan-out's error unless one is recorded already. */
static inline void conc__fan_out_fail(struct conc_fan_out *f, int err)
{
	int none = 0;
	/* Relaxed: err is read after the workers' end, which is ordered by E1
	 * and the done channel's close. */
	atomic_compare_exchange_strong_explicit(&f->err, &none, err, memory_order_relaxed, memory_order_relaxed);
}

/* Drop one reference to the running fan-out; the last closes the outputs
 * and the done channel. */
static inline void conc__fan_out_unref(struct conc_fan_out *f)
{
	/* E1 acq_rel: the last worker to end sees every other worker's writes
	 * (err, counts) before it closes done; pairs with itself in the others. */
	if (atomic_fetch_sub_explicit(&f->live, 1, memory_order_acq_rel) != 1)
		return;
	/* aborted was written by start before its own unref: ordered by E1. */
	if (!f->aborted && !(f->flags & CONC_FAN_KEEP_OPEN)) {
		if (f->out)
			(void)conc_chan_close(f->out);
		for (size_t i = 0; f->outs && i < f->workers; i++)
			(void)conc_chan_close(f->outs[i]);
	}
	(void)conc_chan_close(&f->done);
}

static inline void *conc__fan_out_main(void *arg)
{
	struct conc__fan_worker *w = (struct conc__fan_worker *)arg;
	struct conc_fan_out *f = w->f;
	struct conc_chan *out = f->outs ? f->outs[w->index] : f->out;
	int err = 0;
	unsigned char gate;
	/* Wait until start has made every worker.  If it gave up, it canceled
	 * the context before opening the gate, so this fails (or the receive
	 * below does) and no element is taken. */
	enum conc_status s = conc_chan_recv_until(&f->gate, &gate, conc_deadline_forever(), &f->ctx);
	if (s == CONC_CLOSED) {
		for (;;) {
			s = conc_chan_recv_until(f->in, w->buf, conc_deadline_forever(), &f->ctx);
			if (s != CONC_OK)
				break; /* CONC_CLOSED: drained, a normal end */
			if (conc_ctx_err(&f->ctx) != CONC_OK) {
				/* Canceled between the receive and fn: fn never sees it. */
				if (f->fns.drop)
					f->fns.drop(f->fns.arg, w->buf);
				s = CONC_CANCELED;
				break;
			}
			/* Relaxed: a statistic; only this worker writes it. */
			atomic_fetch_add_explicit(&w->items, 1, memory_order_relaxed);
			err = f->fns.fn(f->fns.arg, &f->ctx, w->index, w->buf, out);
			if (err != 0) {
				/* An fn that gave up because the fan-out was
				 * canceled reports the cancel's cause. */
				if (conc_ctx_err(&f->ctx) != CONC_OK)
					err = conc_ctx_cause(&f->ctx);
				break;
			}
		}
	}
	if (err == 0 && s != CONC_CLOSED) {
		/* The context is done (or the input is unusable): the cause is
		 * the error (the fn error that canceled it, the cancel's cause,
		 * CONC_TIMEDOUT for a deadline). */
		int cause = conc_ctx_cause(&f->ctx);
		err = cause != CONC_OK ? cause : (int)s;
	}
	if (err != 0) {
		conc__fan_out_fail(f, err);
		(void)conc_ctx_cancel(&f->ctx, err);
	}
	conc__fan_out_unref(f);
	return NULL;
}

/* Tear down the two channels of a fan-out whose threads are all joined. */
static inline void conc__fan_out_teardown(struct conc_fan_out *f)
{
	enum conc_status s = conc_chan_destroy(&f->gate);
	CONC_ASSERT(s == CONC_OK);
	s = conc_chan_destroy(&f->done);
	CONC_ASSERT(s == CONC_OK);
	(void)s;
}

/*
 * Start `workers` threads that receive from in and call fns->fn(fns->arg,
 * ctx, worker, item, out) for each element, and store the fan-out in *f.
 * Outputs: give either out (shared by all workers) or outs, an array of
 * `workers` channels (copied; worker i gets outs[i]), or neither (fn gets
 * NULL); the outputs are closed when the last worker ends, whatever ended
 * it.  flags: 0 or CONC_FAN_KEEP_OPEN (close no output).  parent (may be
 * NULL): canceling it cancels the fan-out; it must outlive the fan-out.
 * Returns CONC_OK; CONC_INVALID (NULL f, in, fns or fns->fn, workers 0, both
 * out and outs, a NULL entry in outs, an output that is the input, unknown
 * flags); CONC_CANCELED or
 * CONC_TIMEDOUT (parent already done: nothing started);
 * CONC_NOMEM (allocation or thread creation failed: then no element was
 * taken from in, no output was touched, and nothing is left behind);
 * CONC_OVERFLOW (sizes overflow).  Allocates once; any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_out_start(struct conc_fan_out **f, struct conc_chan *in,
								 struct conc_chan *out, struct conc_chan *const *outs,
								 size_t workers, const struct conc_fan_out_fns *fns,
								 struct conc_ctx *parent, unsigned flags)
{
	if (!f || !in || !fns || !fns->fn || workers == 0 || (out && outs) || (flags & ~CONC_FAN_KEEP_OPEN))
		return CONC_INVALID;
	size_t esize = conc_chan_elem_size(in);
	if (esize == 0)
		return CONC_INVALID;
	if (out == in)
		return CONC_INVALID;
	if (outs)
		for (size_t i = 0; i < workers; i++)
			if (!outs[i] || outs[i] == in)
				return CONC_INVALID;
	if (parent && conc_ctx_err(parent) != CONC_OK)
		return conc_ctx_err(parent);
	size_t head = conc__fan_round8(sizeof(struct conc_fan_out));
	size_t per = sizeof(struct conc__fan_worker) + (outs ? sizeof(struct conc_chan *) : 0);
	size_t ebuf = conc__fan_round8(esize);
	if (ebuf < esize || workers > (SIZE_MAX - head - CONC_CACHELINE) / (per + ebuf))
		return CONC_OVERFLOW;
	size_t total = head + workers * (per + ebuf);
	total = (total + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	unsigned char *mem = (unsigned char *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, total);
	if (!mem)
		return CONC_NOMEM;
	memset(mem, 0, head);
	struct conc_fan_out *fo = (struct conc_fan_out *)(void *)mem;
	unsigned char *p = mem + head;
	fo->w = (struct conc__fan_worker *)(void *)p;
	p += workers * sizeof(struct conc__fan_worker);
	if (outs) {
		fo->outs = (struct conc_chan **)(void *)p;
		memcpy(fo->outs, outs, workers * sizeof *outs);
		p += workers * sizeof(struct conc_chan *);
	}
	fo->in = in;
	fo->out = out;
	fo->fns = *fns;
	fo->flags = flags;
	fo->workers = workers;
	atomic_init(&fo->err, 0);
	enum conc_status s = conc_ctx_init(&fo->ctx, parent, conc_deadline_forever());
	CONC_ASSERT(s == CONC_OK);
	s = conc_chan_init(&fo->gate, 1, 1, fo->gate_ring, sizeof fo->gate_ring);
	CONC_ASSERT(s == CONC_OK);
	s = conc_chan_init(&fo->done, 1, 1, fo->done_ring, sizeof fo->done_ring);
	CONC_ASSERT(s == CONC_OK);
	(void)s;
	/* The starter's own reference keeps done open until every thread
	 * that will run exists. */
	atomic_init(&fo->live, 1);
	size_t started = 0;
	for (; started < workers; started++) {
		struct conc__fan_worker *w = &fo->w[started];
		w->f = fo;
		w->index = started;
		w->buf = p + started * ebuf;
		atomic_init(&w->items, 0);
		/* Relaxed: thread creation orders it before the worker runs. */
		atomic_fetch_add_explicit(&fo->live, 1, memory_order_relaxed);
		if (CONC_THREAD_CREATE(&w->thread, conc__fan_out_main, w) != 0) {
			atomic_fetch_sub_explicit(&fo->live, 1, memory_order_relaxed);
			break;
		}
	}
	if (started < workers) {
		/* Abort: cancel before opening the gate, so no worker that
		 * passes it takes an element (its receive fails on the done
		 * context first); the outputs are left alone. */
		fo->aborted = true;
		(void)conc_ctx_cancel(&fo->ctx, CONC_NOMEM);
	}
	(void)conc_chan_close(&fo->gate);
	conc__fan_out_unref(fo);
	if (started < workers) {
		/* Once they are joined, nothing touches fo: every unref, the
		 * last included, is done. */
		for (size_t i = 0; i < started; i++)
			pthread_join(fo->w[i].thread, NULL);
		s = conc_ctx_destroy(&fo->ctx);
		CONC_ASSERT(s == CONC_OK);
		conc__fan_out_teardown(fo);
		CONC_FREE(mem);
		return CONC_NOMEM;
	}
	*f = fo;
	return CONC_OK;
}

/*
 * Wait until every worker has ended (the input closed and drained, or the
 * fan-out canceled or failed), until the absolute deadline d, or until ctx
 * (NULL for none) is done.  On CONC_OK, *err (may be NULL) gets the
 * fan-out's error: 0 if every worker ended because the input was drained,
 * else the first non-zero value fn returned, or the cause of the
 * cancellation (conc_fan_out_cancel's cause, the parent's, CONC_TIMEDOUT for
 * a deadline).  Returns CONC_OK, CONC_TIMEDOUT or CONC_CANCELED (the wait
 * gave up; the workers run on), CONC_INVALID (NULL f).  Any number of
 * threads may wait at once; uses no CPU while it waits.
 */
CONC_NODISCARD static inline enum conc_status conc_fan_out_wait_until(struct conc_fan_out *f, struct conc_deadline d,
								      struct conc_ctx *ctx, int *err)
{
	if (!f)
		return CONC_INVALID;
	unsigned char x;
	enum conc_status s = conc_chan_try_recv(&f->done, &x);
	if (s == CONC_EMPTY)
		s = conc_chan_recv_until(&f->done, &x, d, ctx);
	if (s != CONC_CLOSED)
		return s == CONC_OK ? CONC_INVALID : s;
	if (err)
		*err = atomic_load_explicit(&f->err, memory_order_relaxed); /* see conc__fan_out_fail */
	return CONC_OK;
}

/* Wait as long as it takes: CONC_OK or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_fan_out_wait(struct conc_fan_out *f, int *err)
{
	return conc_fan_out_wait_until(f, conc_deadline_forever(), NULL, err);
}

/*
 * Cancel the fan-out: its context is canceled with cause (0 means
 * CONC_CANCELED), which becomes the error unless one came first; blocked
 * workers return, and fn sees ctx done.  Returns as conc_ctx_cancel:
 * CONC_OK if this call canceled it, CONC_CANCELED/CONC_TIMEDOUT if it was
 * done already, CONC_INVALID for NULL.  Does not wait: use wait.  Any thread.
 */
static inline enum conc_status conc_fan_out_cancel(struct conc_fan_out *f, int cause)
{
	return f ? conc_ctx_cancel(&f->ctx, cause) : CONC_INVALID;
}

/* Elements worker i has given to fn so far (a snapshot; any thread); 0 for
 * NULL f or i out of range. */
static inline uint64_t conc_fan_out_count(struct conc_fan_out *f, size_t i)
{
	if (!f || i >= f->workers)
		return 0;
	/* Relaxed: a snapshot of a statistic. */
	return atomic_load_explicit(&f->w[i].items, memory_order_relaxed);
}

/* The number of workers; 0 for NULL. */
static inline size_t conc_fan_out_workers(const struct conc_fan_out *f)
{
	return f ? f->workers : 0;
}

/*
 * Join the worker threads and free the fan-out.  Returns CONC_OK, or
 * CONC_BUSY (a worker has not ended yet: cancel and wait first; or a context
 * fn made under the fan-out's is still alive); after CONC_BUSY nothing is
 * freed and free may be called again.  NULL is a no-op returning CONC_OK.
 * One thread; no other call on f may run during or after it.
 */
static inline enum conc_status conc_fan_out_free(struct conc_fan_out *f)
{
	if (!f)
		return CONC_OK;
	unsigned char x;
	if (conc_chan_try_recv(&f->done, &x) != CONC_CLOSED)
		return CONC_BUSY;
	if (!f->joined) {
		for (size_t i = 0; i < f->workers; i++)
			pthread_join(f->w[i].thread, NULL);
		f->joined = true;
	}
	/* Busy only while a context made under f's (by fn) is still alive. */
	if (conc_ctx_destroy(&f->ctx) != CONC_OK)
		return CONC_BUSY;
	conc__fan_out_teardown(f);
	CONC_FREE(f);
	return CONC_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_FAN_H */
