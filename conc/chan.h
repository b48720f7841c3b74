/* SPDX-License-Identifier: MIT */
#ifndef CONC_CHAN_H
#define CONC_CHAN_H

/*
 * conc/chan.h: a bounded multi-producer multi-consumer channel of fixed-size
 * elements.
 *
 * Algorithm: Dmitry Vyukov's bounded MPMC queue (1024cores.net, "Bounded
 * MPMC queue"): a ring of cells, each with an atomic sequence stamp that says
 * whose turn the cell is.  A sender claims the cell at the send position
 * (tail) with one CAS, copies the element in, and publishes it by storing the
 * stamp; a receiver does the mirror image at the receive position (head).
 * As in crossbeam-channel's array flavour, a position encodes (lap, index)
 * rather than a plain counter: index in the low bits, then one "closed" bit,
 * then the lap.  So any capacity >= 1 is exact (the textbook ring, comparing
 * stamps with pos and pos + 1, overwrites at capacity 1), and no modulo is
 * needed on the hot path.  Positions and stamps are 64-bit; they advance by
 * at most 4 per element, so they cannot wrap within 2^62 operations.
 *
 *   cell stamp == pos          free, the sender at pos may fill it
 *   cell stamp == pos + 1      full, the receiver at pos may empty it
 *   next lap: pos + one_lap    (one_lap = 2 * next_pow2(cap + 1))
 *
 * close sets the closed bit of the send position with one atomic OR: every
 * sender that has not claimed a cell by then sees it and fails; receivers
 * drain what was sent before, then meet the closed send position and report
 * CONC_CLOSED.  So close is linearizable with sends.
 *
 * Try operations are linearizable: they never report CONC_EMPTY while an item
 * whose send has returned is in the channel, nor CONC_FULL while there is
 * room.  When the cell they need is claimed by another thread that has not
 * finished its copy, they wait for that thread (spinning, then yielding the
 * CPU), so a try call can take as long as a neighbour needs to finish an
 * element copy it has already started, longer if that thread is preempted.
 *
 * Blocking: a blocked call spins a short, bounded while, then parks on the
 * thread's parker through the waiter protocol of conc/waitq.h; the other side
 * wakes one waiter per element (close and cancel wake all).  When nobody
 * waits, send and receive take no lock and make no system call: one CAS on
 * the position, the copy, one store to the stamp, one load of the waiter
 * count.  A parked thread uses no CPU.
 *
 * Capacity 0 is a rendezvous channel (Go's unbuffered channel): no ring; a
 * send completes only when a receiver takes the element, which is copied
 * straight from the sender's buffer into the receiver's.  Blocked parties
 * wait in the channel's queues as one-case selects (see "the select engine"
 * below); that path takes the channel's one lock briefly.
 *
 * Progress: try operations are lock-free except for the in-flight wait
 * above; blocking ones block.  Any number of threads may send, receive and
 * close concurrently.  Memory: capacity * (8 + element size rounded up to 8)
 * bytes of ring (conc_chan_buf_size()) plus sizeof(struct conc_chan), which is
 * five cache lines.  Nothing allocates except conc_chan_new.
 *
 * Ownership: a successful send copies the element in (the caller keeps its
 * buffer); on any failure nothing was copied.  A received element is the
 * caller's at once.  Destroy only when no call on the channel can still run.
 */

#include "status.h"
#include "sys.h" /* first: it sets the feature macros */
#include "waitq.h"
#include "ctx.h"

#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

struct conc_chan {
	/* Send position and closed bit.  Written by senders (CAS) and close. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) tail;
	/* Receive position.  Written by receivers (CAS). */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) head;
	/* Fixed at init; read-only after. */
	CONC_ALIGNED(CONC_CACHELINE) unsigned char *cells;
	size_t cap;        /* capacity in elements, >= 1 */
	size_t esize;      /* element size in bytes */
	size_t stride;     /* bytes per cell: 8 + esize rounded up to 8 */
	uint64_t mark;     /* closed bit of tail; index bits are below it */
	uint64_t one_lap;  /* 2 * mark */
	unsigned lap_shift;/* log2(one_lap) */
	bool owned;        /* allocated by conc_chan_new */
	/* Senders waiting for room: woken by receivers and close. */
	CONC_ALIGNED(CONC_CACHELINE) struct conc_waitq sendq;
	/* Receivers waiting for elements: woken by senders and close. */
	CONC_ALIGNED(CONC_CACHELINE) struct conc_waitq recvq;
};

/*
 * One case of a select (the API is in conc/select.h; the engine is here,
 * because a blocking call on a rendezvous channel is a one-case select).
 * Build cases with conc_select_recv/send/timer().
 */
#define CONC_SELECT_RECV 1
#define CONC_SELECT_SEND 2
#define CONC_SELECT_TIMER 3
#define CONC_SELECT_BIASED 1u                /* flag: try cases in array order */
#define CONC_SELECT_MAX_CASES ((size_t)1 << 24) /* case tags must fit CONC__SEL_TAG */

struct conc_select_case {
	int op;                  /* CONC_SELECT_RECV, _SEND or _TIMER */
	struct conc_chan *chan;  /* RECV/SEND; NULL: never ready */
	void *buf;               /* RECV: destination; SEND: the element */
	struct conc_deadline at; /* TIMER: when it fires */
	/* Private to the engine during a call: the case's registration on its
	 * channel and the poll order. */
	struct conc_waiter conc__w;
	size_t conc__order;
	uint64_t conc__seen[2];
};

/* Ring bytes for a channel, for static buffers (no overflow check: use
 * conc_chan_buf_size() for run-time sizes). */
#define CONC_CHAN_BUF_SIZE(cap, esize) ((size_t)(cap) * (8 + (((size_t)(esize) + 7) & ~(size_t)7)))

/* Largest capacity: keeps one_lap and the lap count comfortably in 64 bits
 * (2^40, or SIZE_MAX where size_t is narrower). */
#define CONC_CHAN_MAX_CAP ((size_t)(SIZE_MAX > 0xffffffffffull ? 0x10000000000ull : SIZE_MAX))

/*
 * The number of ring bytes conc_chan_init needs for cap elements of esize
 * bytes, or 0 if cap is 0 (a rendezvous channel has no ring), esize is 0,
 * cap > CONC_CHAN_MAX_CAP, or the size overflows size_t.
 */
static inline size_t conc_chan_buf_size(size_t cap, size_t esize)
{
	if (cap == 0 || esize == 0 || cap > CONC_CHAN_MAX_CAP || esize > SIZE_MAX - 16)
		return 0;
	size_t stride = 8 + ((esize + 7) & ~(size_t)7);
	if (cap > SIZE_MAX / stride)
		return 0;
	return cap * stride;
}

/* --------------------------------------------------------------- internals */

struct conc__cell {
	_Atomic(uint64_t) stamp;
	/* the element follows, at offset 8 */
};

static inline struct conc__cell *conc__chan_cell(const struct conc_chan *c, uint64_t pos)
{
	return (struct conc__cell *)(c->cells + (size_t)(pos & (c->mark - 1)) * c->stride);
}

static inline unsigned char *conc__cell_data(struct conc__cell *cell)
{
	return (unsigned char *)cell + 8;
}

/* The position after pos (never has the closed bit). */
static inline uint64_t conc__chan_next(const struct conc_chan *c, uint64_t pos)
{
	uint64_t index = pos & (c->mark - 1);
	return index + 1 < c->cap ? pos + 1 : (pos & ~(c->one_lap - 1)) + c->one_lap;
}

/* Positions as plain element counts, for bulk calls (division only there). */
static inline uint64_t conc__chan_lin(const struct conc_chan *c, uint64_t pos)
{
	return (pos >> c->lap_shift) * c->cap + (pos & (c->mark - 1));
}

static inline uint64_t conc__chan_pos(const struct conc_chan *c, uint64_t lin)
{
	return ((lin / c->cap) << c->lap_shift) | (lin % c->cap);
}

/* memcpy, with the common small sizes inlined.  (No 16-byte case: gcc -O3
 * then warns -Warray-bounds wherever a channel of 8-byte elements is used
 * through a path it cannot prove never copies 16.) */
static inline void conc__copy(void *dst, const void *src, size_t n)
{
	switch (n) {
	case 4: memcpy(dst, src, 4); break;
	case 8: memcpy(dst, src, 8); break;
	default: memcpy(dst, src, n); break;
	}
}

/* ---------------------------------------------------------- init / destroy */

/*
 * Initialise c with room for cap elements of esize bytes, on the caller's
 * buffer buf (8-byte aligned; cache-line alignment is faster) of bufsize >=
 * conc_chan_buf_size(cap, esize) bytes.  No allocation ever.  cap 0 makes a
 * rendezvous channel: no ring (buf and bufsize are ignored; pass NULL, 0);
 * a send completes only when a receiver takes the element, copied straight
 * from the sender's buffer to the receiver's.
 * Returns CONC_OK; CONC_INVALID for NULL c, NULL buf with cap > 0, esize 0,
 * cap > CONC_CHAN_MAX_CAP or a misaligned buf; CONC_OVERFLOW if the ring
 * size overflows or bufsize is too small.
 * Not thread-safe: no other call on c may run during init.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_init(struct conc_chan *c, size_t cap, size_t esize,
							     void *buf, size_t bufsize)
{
	if (!c || (cap && !buf) || esize == 0 || cap > CONC_CHAN_MAX_CAP || ((uintptr_t)buf & 7))
		return CONC_INVALID;
	if (esize > SIZE_MAX - 16)
		return CONC_OVERFLOW;
	if (cap == 0) {
		/* Rendezvous: no ring.  cells only marks the channel live; the
		 * closed bit is bit 0 of tail. */
		c->cells = (unsigned char *)c;
		c->cap = 0;
		c->owned = false;
		atomic_store_explicit(&c->tail, 0, memory_order_relaxed);
		atomic_store_explicit(&c->head, 0, memory_order_relaxed);
		c->esize = esize;
		c->stride = 8 + ((esize + 7) & ~(size_t)7);
		c->mark = 1;
		c->one_lap = 2;
		c->lap_shift = 1;
		conc_waitq_init(&c->sendq);
		conc_waitq_init(&c->recvq);
		return CONC_OK;
	}
	size_t need = conc_chan_buf_size(cap, esize);
	if (need == 0 || bufsize < need)
		return CONC_OVERFLOW;
	uint64_t mark = 1;
	while (mark < (uint64_t)cap + 1)
		mark <<= 1;
	unsigned shift = 0;
	while (((uint64_t)1 << shift) < 2 * mark)
		shift++;
	c->cells = (unsigned char *)buf;
	c->cap = cap;
	c->esize = esize;
	c->stride = 8 + ((esize + 7) & ~(size_t)7);
	c->mark = mark;
	c->one_lap = 2 * mark;
	c->lap_shift = shift;
	c->owned = false;
	for (size_t i = 0; i < cap; i++)
		atomic_store_explicit(&conc__chan_cell(c, i)->stamp, i, memory_order_relaxed);
	atomic_store_explicit(&c->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&c->head, 0, memory_order_relaxed);
	conc_waitq_init(&c->sendq);
	conc_waitq_init(&c->recvq);
	/* Whoever hands c to other threads publishes it (thread creation or a
	 * release store of their own). */
	return CONC_OK;
}

/*
 * Tear down a channel made by conc_chan_init.  Returns CONC_BUSY (and
 * changes nothing) while a thread is blocked on it, CONC_INVALID for NULL or
 * a channel from conc_chan_new (use conc_chan_free).  Elements still inside
 * are discarded.  Calls racing with destroy are undefined; calls after it
 * return CONC_INVALID as long as the struct's memory is left alone.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_destroy(struct conc_chan *c)
{
	if (!c || !c->cells || c->owned)
		return CONC_INVALID;
	if (conc_waitq_has_waiters(&c->sendq) || conc_waitq_has_waiters(&c->recvq))
		return CONC_BUSY;
	conc_waitq_destroy(&c->sendq);
	conc_waitq_destroy(&c->recvq);
	c->cells = NULL;
	c->cap = 0;
	return CONC_OK;
}

/* Allocation hooks, overridable one by one (e.g. to inject failures in
 * tests); a replacement CONC_ALIGNED_ALLOC needs a matching CONC_FREE. */
#ifndef CONC_ALIGNED_ALLOC
#define CONC_ALIGNED_ALLOC(align, size) aligned_alloc((align), (size))
#endif
#ifndef CONC_FREE
#define CONC_FREE(p) free(p)
#endif

/*
 * Allocate and initialise a channel (struct and ring in one block, cache-line
 * aligned) and store it in *out.  Returns CONC_OK, CONC_INVALID,
 * CONC_OVERFLOW (as conc_chan_init) or CONC_NOMEM; *out is set only on success.
 * Free with conc_chan_free.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_new(struct conc_chan **out, size_t cap, size_t esize)
{
	if (!out || esize == 0 || cap > CONC_CHAN_MAX_CAP)
		return CONC_INVALID;
	size_t ring = conc_chan_buf_size(cap, esize);
	size_t head = (sizeof(struct conc_chan) + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	if ((cap && ring == 0) || ring > SIZE_MAX - head - CONC_CACHELINE || esize > SIZE_MAX - 16)
		return CONC_OVERFLOW;
	size_t total = (head + ring + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	unsigned char *mem = (unsigned char *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, total);
	if (!mem)
		return CONC_NOMEM;
	struct conc_chan *c = (struct conc_chan *)mem;
	enum conc_status s = conc_chan_init(c, cap, esize, cap ? mem + head : NULL, ring);
	CONC_ASSERT(s == CONC_OK);
	(void)s;
	c->owned = true;
	*out = c;
	return CONC_OK;
}

/* Out of line, so a compiler that inlines conc_chan_free into a call on a
 * stack or static channel (which returns CONC_INVALID before this) does not
 * warn about freeing non-heap memory. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline, unused))
#endif
static void conc__chan_release(struct conc_chan *c)
{
	CONC_FREE(c);
}

/* Free a channel from conc_chan_new.  Same rules as conc_chan_destroy; NULL
 * is a no-op returning CONC_OK, like free(NULL). */
static inline enum conc_status conc_chan_free(struct conc_chan *c)
{
	if (!c)
		return CONC_OK;
	if (!c->cells || !c->owned)
		return CONC_INVALID;
	if (conc_waitq_has_waiters(&c->sendq) || conc_waitq_has_waiters(&c->recvq))
		return CONC_BUSY;
	conc_waitq_destroy(&c->sendq);
	conc_waitq_destroy(&c->recvq);
	c->cells = NULL;
	conc__chan_release(c);
	return CONC_OK;
}

/* ----------------------------------------------------------------- queries */

/* Capacity in elements; 0 for NULL. */
static inline size_t conc_chan_cap(const struct conc_chan *c)
{
	return c ? c->cap : 0;
}

/* Element size in bytes; 0 for NULL. */
static inline size_t conc_chan_elem_size(const struct conc_chan *c)
{
	return c ? c->esize : 0;
}

/* Whether close has been called (false for NULL).  Elements may remain. */
static inline bool conc_chan_is_closed(struct conc_chan *c)
{
	/* Relaxed: a snapshot; nothing else is read on the strength of it. */
	return c && c->cells && (atomic_load_explicit(&c->tail, memory_order_relaxed) & c->mark);
}

/* Elements in the channel, including ones being copied in right now; a
 * snapshot that may be stale by the time it returns.  0 for NULL. */
static inline size_t conc_chan_len(struct conc_chan *c)
{
	if (!c || !c->cells || c->cap == 0)
		return 0;
	for (;;) {
		/* seq_cst: a consistent (tail, head) pair needs tail unchanged
		 * across the head load. */
		uint64_t t = atomic_load_explicit(&c->tail, memory_order_seq_cst);
		uint64_t h = atomic_load_explicit(&c->head, memory_order_seq_cst);
		if (atomic_load_explicit(&c->tail, memory_order_seq_cst) == t) {
			uint64_t n = conc__chan_lin(c, t & ~c->mark) - conc__chan_lin(c, h);
			return n > c->cap ? c->cap : (size_t)n;
		}
	}
}

/* ------------------------------------------------------------- try, single */

/* One try_send, elem already validated.  Wakes a receiver on success. */
static inline enum conc_status conc__chan_try_send(struct conc_chan *c, const void *elem)
{
	struct conc_backoff b = {0};
	/* Relaxed: only a guess; the CAS below validates it. */
	uint64_t tail = atomic_load_explicit(&c->tail, memory_order_relaxed);
	for (;;) {
		if (tail & c->mark)
			return CONC_CLOSED;
		struct conc__cell *cell = conc__chan_cell(c, tail);
		/* A2 acquire: the receiver that freed the cell is done reading it;
		 * pairs with R3 in conc__chan_try_recv(). */
		uint64_t stamp = atomic_load_explicit(&cell->stamp, memory_order_acquire);
		if (stamp == tail) {
			/* S1 seq_cst: claims the cell.  Also the state change of the
			 * waitq handshake (a receiver re-checks tail with S4 after W1). */
			if (atomic_compare_exchange_weak_explicit(&c->tail, &tail, conc__chan_next(c, tail),
								  memory_order_seq_cst, memory_order_relaxed)) {
				conc__copy(conc__cell_data(cell), elem, c->esize);
				/* R1 release: publishes the element; pairs with A1. */
				atomic_store_explicit(&cell->stamp, tail + 1, memory_order_release);
				conc_waitq_wake_one(&c->recvq);
				return CONC_OK;
			}
			conc_backoff_spin(&b);
		} else if (stamp + c->one_lap == tail + 1) {
			/* The cell still holds last lap's element.  S3 seq_cst: pairs
			 * with S2 through the waitq handshake on sendq. */
			uint64_t head = atomic_load_explicit(&c->head, memory_order_seq_cst);
			/* S6 seq_cst: our tail came from a relaxed load; re-read it in
			 * the seq_cst order before saying "full", so a blocked sender's
			 * re-check after W1 cannot miss a close (S5) or a claim. */
			uint64_t now = atomic_load_explicit(&c->tail, memory_order_seq_cst);
			if (now != tail) {
				tail = now;
				continue;
			}
			if (head + c->one_lap == tail)
				return CONC_FULL;
			/* A receiver has claimed the cell but not finished: wait. */
			conc_backoff_snooze(&b);
			tail = atomic_load_explicit(&c->tail, memory_order_relaxed);
		} else {
			/* Our tail is stale: another sender took this cell. */
			conc_backoff_snooze(&b);
			tail = atomic_load_explicit(&c->tail, memory_order_relaxed);
		}
	}
}

/* One try_recv, out already validated.  Wakes a sender on success. */
static inline enum conc_status conc__chan_try_recv(struct conc_chan *c, void *out)
{
	struct conc_backoff b = {0};
	/* Relaxed: only a guess; the CAS below validates it. */
	uint64_t head = atomic_load_explicit(&c->head, memory_order_relaxed);
	for (;;) {
		struct conc__cell *cell = conc__chan_cell(c, head);
		/* A1 acquire: pairs with R1 (the element is there). */
		uint64_t stamp = atomic_load_explicit(&cell->stamp, memory_order_acquire);
		if (stamp == head + 1) {
			/* S2 seq_cst: claims the element.  Also the state change of the
			 * waitq handshake (a sender re-checks head with S3 after W1). */
			if (atomic_compare_exchange_weak_explicit(&c->head, &head, conc__chan_next(c, head),
								  memory_order_seq_cst, memory_order_relaxed)) {
				conc__copy(out, conc__cell_data(cell), c->esize);
				/* R3 release: frees the cell for the next lap; pairs with A2. */
				atomic_store_explicit(&cell->stamp, head + c->one_lap, memory_order_release);
				conc_waitq_wake_one(&c->sendq);
				return CONC_OK;
			}
			conc_backoff_spin(&b);
		} else if (stamp == head) {
			/* The cell is empty.  S4 seq_cst: pairs with S1 and with close
			 * through the waitq handshake on recvq. */
			uint64_t tail = atomic_load_explicit(&c->tail, memory_order_seq_cst);
			if ((tail & ~c->mark) == head)
				return (tail & c->mark) ? CONC_CLOSED : CONC_EMPTY;
			/* A sender has claimed the cell but not finished: wait. */
			conc_backoff_snooze(&b);
			head = atomic_load_explicit(&c->head, memory_order_relaxed);
		} else {
			/* Our head is stale: another receiver took this cell. */
			conc_backoff_snooze(&b);
			head = atomic_load_explicit(&c->head, memory_order_relaxed);
		}
	}
}

/* -------------------------------------------------------------- rendezvous */

/*
 * A rendezvous channel (capacity 0) has no ring: its two queues hold the
 * blocked senders and receivers, every one a select waiter (a blocking call
 * is a one-case select), and sendq's lock guards both queues and the closed
 * bit.  An operation that finds a waiting partner claims the partner's state
 * word (CONC__SEL_WAITING -> BUSY), copies the element between the two
 * callers' buffers, and publishes CONC__SEL_DONE | tag; the partner, which
 * never leaves while its word is BUSY, then returns.
 */

/* One attempt, not registered anywhere: hand over to a waiting partner.
 * Returns CONC_OK, CONC_CLOSED, or CONC_FULL/CONC_EMPTY if nobody waits. */
static inline enum conc_status conc__rdv_try(struct conc_chan *c, bool send, void *buf)
{
	struct conc_waitq *peers = send ? &c->recvq : &c->sendq;
	enum conc_status s = send ? CONC_FULL : CONC_EMPTY;
	/* W2 seq_cst: pairs with W1 when a partner registers; one that is not
	 * counted yet re-checks under the lock after registering and finds
	 * us (if we are registering) or is simply later than this try. */
	if (atomic_load_explicit(&peers->count, memory_order_seq_cst) == 0)
		/* Relaxed: close sets the bit before it wakes anyone; a try
		 * racing with close may order either way. */
		return (atomic_load_explicit(&c->tail, memory_order_relaxed) & c->mark) ? CONC_CLOSED : s;
	struct conc__kicks k;
	k.n = 0;
	conc_lock_acquire(&c->sendq.lock);
	/* Relaxed: the bit is written under this lock. */
	if (atomic_load_explicit(&c->tail, memory_order_relaxed) & c->mark) {
		s = CONC_CLOSED;
	} else {
		for (struct conc_waiter *w = peers->head; w; w = w->next) {
			if (!conc__waiter_claim(w, CONC__SEL_BUSY))
				continue; /* claimed through another case, or gave up */
			if (send)
				conc__copy(w->buf, buf, c->esize);
			else
				conc__copy(buf, w->buf, c->esize);
			_Atomic(uint32_t) *claim = w->claim;
			uint32_t tag = w->tag;
			conc__waitq_take(peers, w, &k);
			/* C4 release: the copy is done; pairs with C3 in
			 * conc__select_wait().  The partner may return after this. */
			atomic_store_explicit(claim, CONC__SEL_DONE | tag, memory_order_release);
			s = CONC_OK;
			break;
		}
	}
	conc_lock_release(&c->sendq.lock);
	conc__waitq_kick_all(&k);
	return s;
}

/* Close a rendezvous channel: set the bit and wake every waiter to retry. */
static inline enum conc_status conc__rdv_close(struct conc_chan *c)
{
	struct conc__kicks k;
	k.n = 0;
	conc_lock_acquire(&c->sendq.lock);
	/* S5 seq_cst, as for a ring: lock-free readers (conc__rdv_try's fast
	 * path, is_closed) see the bit in the same order as the counts. */
	uint64_t old = atomic_fetch_or_explicit(&c->tail, c->mark, memory_order_seq_cst);
	if (!(old & c->mark)) {
		(void)conc__waitq_wake_locked(&c->sendq, SIZE_MAX, &k);
		(void)conc__waitq_wake_locked(&c->recvq, SIZE_MAX, &k);
	}
	conc_lock_release(&c->sendq.lock);
	conc__waitq_kick_all(&k);
	return (old & c->mark) ? CONC_CLOSED : CONC_OK;
}

/*
 * Send a copy of the element at elem (conc_chan_elem_size() bytes) if there
 * is room, without blocking.  Returns CONC_OK, CONC_FULL, CONC_CLOSED, or
 * CONC_INVALID (NULL argument or destroyed channel).  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_try_send(struct conc_chan *c, const void *elem)
{
	if (CONC__UNLIKELY(!c || !elem || !c->cells))
		return CONC_INVALID;
	if (CONC__UNLIKELY(c->cap == 0))
		return conc__rdv_try(c, true, (void *)(uintptr_t)elem);
	return conc__chan_try_send(c, elem);
}

/*
 * Receive one element into out if one is there, without blocking.  Returns
 * CONC_OK, CONC_EMPTY, CONC_CLOSED (closed and drained) or CONC_INVALID.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_try_recv(struct conc_chan *c, void *out)
{
	if (CONC__UNLIKELY(!c || !out || !c->cells))
		return CONC_INVALID;
	if (CONC__UNLIKELY(c->cap == 0))
		return conc__rdv_try(c, false, out);
	return conc__chan_try_recv(c, out);
}

/* ------------------------------------------------------------- try, bulk */

/*
 * Claim up to n elements (sending: room; receiving: items) with one CAS, then
 * copy them.  all: n or nothing.  *done gets the count.  Returns CONC_OK if
 * at least one (all: n) moved; otherwise CONC_FULL/CONC_EMPTY, or CONC_CLOSED.
 */
static inline enum conc_status conc__chan_try_send_bulk(struct conc_chan *c, const unsigned char *src,
							 size_t n, bool all, size_t *done)
{
	*done = 0;
	/* S6 seq_cst, as in conc__chan_try_send(): a "full" answer must rest on
	 * a tail read in the seq_cst order. */
	uint64_t tail = atomic_load_explicit(&c->tail, memory_order_seq_cst);
	uint64_t take;
	for (;;) {
		if (tail & c->mark)
			return CONC_CLOSED;
		/* S3 seq_cst, as in conc__chan_try_send(). */
		uint64_t head = atomic_load_explicit(&c->head, memory_order_seq_cst);
		uint64_t lt = conc__chan_lin(c, tail), lh = conc__chan_lin(c, head);
		if (lh > lt || lt - lh > c->cap) { /* one of the two is stale */
			tail = atomic_load_explicit(&c->tail, memory_order_relaxed);
			continue;
		}
		uint64_t room = c->cap - (lt - lh);
		take = room < n ? room : n;
		if (take == 0 || (all && take < n)) {
			/* S6 seq_cst: confirm tail before saying "full". */
			uint64_t now = atomic_load_explicit(&c->tail, memory_order_seq_cst);
			if (now == tail)
				return CONC_FULL;
			tail = now;
			continue;
		}
		/* S1 seq_cst: claims take cells at once. */
		if (atomic_compare_exchange_weak_explicit(&c->tail, &tail, conc__chan_pos(c, lt + take),
							  memory_order_seq_cst, memory_order_relaxed))
			break;
	}
	struct conc_backoff b = {0};
	uint64_t pos = tail;
	for (uint64_t i = 0; i < take; i++, pos = conc__chan_next(c, pos)) {
		struct conc__cell *cell = conc__chan_cell(c, pos);
		/* A2 acquire: wait out a receiver still reading last lap's element. */
		while (atomic_load_explicit(&cell->stamp, memory_order_acquire) != pos)
			conc_backoff_snooze(&b);
		conc__copy(conc__cell_data(cell), src + i * c->esize, c->esize);
		/* R1 release: publishes this element. */
		atomic_store_explicit(&cell->stamp, pos + 1, memory_order_release);
	}
	conc_waitq_wake_n(&c->recvq, (size_t)take);
	*done = (size_t)take;
	return CONC_OK;
}

static inline enum conc_status conc__chan_try_recv_bulk(struct conc_chan *c, unsigned char *dst, size_t n,
							 bool all, size_t *done)
{
	*done = 0;
	/* Relaxed: validated by the CAS. */
	uint64_t head = atomic_load_explicit(&c->head, memory_order_relaxed);
	uint64_t take;
	for (;;) {
		/* S4 seq_cst, as in conc__chan_try_recv().  Read after head, so
		 * tail (less the closed bit) is never behind it. */
		uint64_t tail = atomic_load_explicit(&c->tail, memory_order_seq_cst);
		uint64_t lt = conc__chan_lin(c, tail & ~c->mark), lh = conc__chan_lin(c, head);
		if (lh > lt) {
			/* Without an acquire on head, tail may still look older than
			 * head on weakly ordered CPUs: read head again. */
			head = atomic_load_explicit(&c->head, memory_order_seq_cst);
			continue;
		}
		uint64_t avail = lt - lh;
		take = avail < n ? avail : n;
		if (take == 0 || (all && take < n))
			return (tail & c->mark) ? CONC_CLOSED : CONC_EMPTY;
		/* S2 seq_cst: claims take elements at once. */
		if (atomic_compare_exchange_weak_explicit(&c->head, &head, conc__chan_pos(c, conc__chan_lin(c, head) + take),
							  memory_order_seq_cst, memory_order_relaxed))
			break;
	}
	struct conc_backoff b = {0};
	uint64_t pos = head;
	for (uint64_t i = 0; i < take; i++, pos = conc__chan_next(c, pos)) {
		struct conc__cell *cell = conc__chan_cell(c, pos);
		/* A1 acquire: wait out a sender still copying this element in. */
		while (atomic_load_explicit(&cell->stamp, memory_order_acquire) != pos + 1)
			conc_backoff_snooze(&b);
		conc__copy(dst + i * c->esize, conc__cell_data(cell), c->esize);
		/* R3 release: frees the cell. */
		atomic_store_explicit(&cell->stamp, pos + c->one_lap, memory_order_release);
	}
	conc_waitq_wake_n(&c->sendq, (size_t)take);
	*done = (size_t)take;
	return CONC_OK;
}

/* ---------------------------------------------------------------- blocking */

/* One attempt of a blocking call; returns wouldblock to keep waiting. */
struct conc__chan_op {
	enum conc_status (*attempt)(struct conc_chan *c, struct conc__chan_op *op);
	void *buf;
	size_t n, done;
	bool all;
};

static inline enum conc_status conc__chan_op_send(struct conc_chan *c, struct conc__chan_op *op)
{
	if (op->n == 1 && !op->all) {
		enum conc_status s = conc__chan_try_send(c, op->buf);
		op->done = s == CONC_OK;
		return s;
	}
	return conc__chan_try_send_bulk(c, (const unsigned char *)op->buf, op->n, op->all, &op->done);
}

static inline enum conc_status conc__chan_op_recv(struct conc_chan *c, struct conc__chan_op *op)
{
	if (op->n == 1 && !op->all) {
		enum conc_status s = conc__chan_try_recv(c, op->buf);
		op->done = s == CONC_OK;
		return s;
	}
	return conc__chan_try_recv_bulk(c, (unsigned char *)op->buf, op->n, op->all, &op->done);
}

/*
 * The slow path of every blocking call: spin a bounded while, then register
 * on q (and on the context), re-check, park; repeat until the attempt stops
 * returning wouldblock, the deadline passes or the context is done.
 */
static inline enum conc_status conc__chan_block(struct conc_chan *c, struct conc_waitq *q,
						 enum conc_status wouldblock, struct conc__chan_op *op,
						 struct conc_deadline d, struct conc_ctx *ctx)
{
	enum conc_status s;
	struct conc_backoff b = {0};
	/* The caller has tried once; a deadline already passed stops here. */
	if (conc_deadline_expired(d))
		return CONC_TIMEDOUT;
	while (conc_backoff_wait(&b)) {
		if ((s = op->attempt(c, op)) != wouldblock)
			return s;
	}
	if (conc_deadline_expired(d))
		return CONC_TIMEDOUT;
	struct conc_deadline until = conc_deadline_min(d, conc_ctx_deadline(ctx));
	struct conc_waiter w, cw;
	conc_waiter_init(&w, op->all && op->n > 1 ? CONC_WAITER_GREEDY : 0);
	conc_waiter_init(&cw, 0);
	enum conc_status cs = conc_ctx_watch(ctx, &cw);
	for (;;) {
		conc_waitq_enqueue(q, &w);
		/* The re-check after W1 (its seq_cst loads are S3/S4/C1). */
		s = op->attempt(c, op);
		/* Took or failed before parking: a wake aimed at us while still
		 * queued went to the wrong thread and must be passed on. */
		bool early = s != wouldblock;
		if (s == wouldblock) {
			if (cs == CONC_OK && ctx)
				cs = conc_ctx_err(ctx);
			if (cs != CONC_OK)
				s = cs;
			else if (conc_deadline_expired(d))
				s = CONC_TIMEDOUT;
			else
				conc_parker_park_until(w.parker, until);
		}
		bool woken = conc_waitq_remove(q, &w);
		if (s == wouldblock)
			s = op->attempt(c, op);
		if (s == wouldblock) {
			if (ctx && (cs = conc_ctx_err(ctx)) != CONC_OK)
				s = cs;
			else if (conc_deadline_expired(d))
				s = CONC_TIMEDOUT;
		}
		if (s != wouldblock) {
			/* Woken for room or an element we did not take (we failed,
			 * or our re-check had already succeeded): pass it on. */
			if (woken && (s != CONC_OK || early))
				conc_waitq_wake_one(q);
			break;
		}
	}
	conc_ctx_unwatch(ctx, &cw);
	return s;
}

/* ------------------------------------------------------ the select engine */

/* Whether a ring send (or receive) could proceed now: the select's re-check
 * after registering.  May say yes spuriously, never no wrongly. */
static inline bool conc__chan_ready(struct conc_chan *c, bool send)
{
	/* S3/S4 seq_cst: read after W1, as a blocked sender's or receiver's
	 * re-check (see conc__chan_try_send() and conc__chan_try_recv()). */
	uint64_t tail = atomic_load_explicit(&c->tail, memory_order_seq_cst);
	uint64_t head = atomic_load_explicit(&c->head, memory_order_seq_cst);
	if (tail & c->mark)
		return true;
	uint64_t lt = conc__chan_lin(c, tail), lh = conc__chan_lin(c, head);
	if (lh > lt)
		return true; /* tail read before head moved past it: look again */
	return send ? lt - lh < c->cap : lt != lh;
}

/* Per-thread xorshift64 for the poll order; quality is ample for fairness. */
static inline size_t conc__rand_below(size_t n)
{
	static CONC__THREAD_LOCAL uint64_t x;
	if (CONC__UNLIKELY(x == 0))
		x = ((uint64_t)(uintptr_t)&x ^ (uint64_t)conc_now_ns()) | 1;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return (size_t)(((x >> 32) * (uint64_t)n) >> 32);
}

/* One attempt at case k while unregistered: CONC_OK or CONC_CLOSED if it
 * happened, else CONC_WOULDBLOCK. */
static inline enum conc_status conc__select_try_case(struct conc_select_case *k)
{
	struct conc_chan *c = k->chan;
	enum conc_status s;
	if (k->op == CONC_SELECT_TIMER)
		return conc_deadline_expired(k->at) ? CONC_OK : CONC_WOULDBLOCK;
	if (!c)
		return CONC_WOULDBLOCK;
	if (k->op == CONC_SELECT_SEND)
		s = c->cap ? conc__chan_try_send(c, k->buf) : conc__rdv_try(c, true, k->buf);
	else
		s = c->cap ? conc__chan_try_recv(c, k->buf) : conc__rdv_try(c, false, k->buf);
	return s == CONC_FULL || s == CONC_EMPTY ? CONC_WOULDBLOCK : s;
}

/* What a case's readiness depends on: the channel's positions and closed bit
 * (a rendezvous channel counts registrations in head). */
static inline void conc__select_look(const struct conc_select_case *k, uint64_t v[2])
{
	v[0] = v[1] = 0;
	if (k->op == CONC_SELECT_TIMER || !k->chan)
		return;
	/* seq_cst: ordered with the claims S1/S2, close (S5) and R5 in the
	 * single total order, so an unchanged pair means no change between
	 * the two looks. */
	v[0] = atomic_load_explicit(&k->chan->tail, memory_order_seq_cst);
	v[1] = atomic_load_explicit(&k->chan->head, memory_order_seq_cst);
}

/* Try every case in poll order.  look: first note what each case depends
 * on, for conc__select_unchanged(). */
static inline enum conc_status conc__select_try_all(struct conc_select_case *cs, size_t n, bool look,
						    size_t *chosen)
{
	for (size_t j = 0; j < n; j++) {
		size_t i = cs[j].conc__order;
		if (look)
			conc__select_look(&cs[i], cs[i].conc__seen);
		enum conc_status s = conc__select_try_case(&cs[i]);
		if (s != CONC_WOULDBLOCK) {
			*chosen = i;
			return s;
		}
	}
	return CONC_WOULDBLOCK;
}

/*
 * Whether no case's channel changed since conc__select_try_all(look) found
 * none ready.  If so, there was one instant at which no case was ready (each
 * stayed unready from its first look to its second, and those intervals all
 * contain the moment the pass ended), so "would block" is a linearizable
 * answer, even for a set of channels of which one always had an element (Go's
 * TestNonblockSelectRace).  Positions only grow, so equal means unchanged.
 */
static inline bool conc__select_unchanged(struct conc_select_case *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v[2];
		conc__select_look(&cs[i], v);
		if (v[0] != cs[i].conc__seen[0] || v[1] != cs[i].conc__seen[1])
			return false;
	}
	return true;
}

/* Bound on the passes of a non-blocking select whose channels keep changing
 * under it; past it, it reports the last pass's "would block". */
#ifndef CONC_SELECT_POLL_PASSES
#define CONC_SELECT_POLL_PASSES 64
#endif

/*
 * Register case i's waiter on its channel (state: the select's word), then
 * re-check.  Returns true if the case looks ready: the caller must then give
 * up this round (claim its own word) and retry unregistered.
 *
 * On a rendezvous channel, two selects registering at once could each see
 * the other waiting; if both gave up, both could retry in lockstep forever.
 * So only the one whose state word has the lower address gives up (and then
 * completes with the other from its retry); the higher one wakes the lower
 * one, in case it registered first and is parked, and stays.
 */
static inline bool conc__select_register(struct conc_select_case *k, uint32_t tag, _Atomic(uint32_t) *state)
{
	struct conc_chan *c = k->chan;
	bool send = k->op == CONC_SELECT_SEND;
	struct conc_waiter *w = &k->conc__w;
	conc_waiter_init(w, 0);
	w->claim = state;
	w->tag = tag;
	w->buf = k->buf;
	if (c->cap) {
		conc_waitq_enqueue(send ? &c->sendq : &c->recvq, w);
		return conc__chan_ready(c, send);
	}
	struct conc_waitq *peers = send ? &c->recvq : &c->sendq;
	struct conc__kicks kicks;
	kicks.n = 0;
	bool ready = false;
	conc_lock_acquire(&c->sendq.lock);
	conc__waitq_link(send ? &c->sendq : &c->recvq, w);
	/* R5 seq_cst: count registrations, so that a non-blocking select
	 * sees a partner arrive between two looks (conc__select_look). */
	atomic_fetch_add_explicit(&c->head, 1, memory_order_seq_cst);
	/* Relaxed: the bit is written under this lock. */
	if (atomic_load_explicit(&c->tail, memory_order_relaxed) & c->mark) {
		ready = true;
	} else {
		for (struct conc_waiter *p = peers->head; p; p = p->next) {
			/* Relaxed: a hint; every decision on it is made by a CAS. */
			if (p->claim == state || atomic_load_explicit(p->claim, memory_order_relaxed) != CONC__SEL_WAITING)
				continue;
			if ((uintptr_t)state < (uintptr_t)p->claim)
				ready = true;
			else if (conc__waiter_claim(p, CONC__SEL_WOKEN | p->tag))
				conc__waitq_take(peers, p, &kicks);
			break;
		}
	}
	conc_lock_release(&c->sendq.lock);
	conc__waitq_kick_all(&kicks);
	return ready;
}

static inline void conc__select_unregister(struct conc_select_case *k)
{
	struct conc_waiter *w = &k->conc__w;
	struct conc_chan *c = k->chan;
	struct conc_waitq *q = k->op == CONC_SELECT_SEND ? &c->sendq : &c->recvq;
	if (c->cap) {
		(void)conc_waitq_remove(q, w);
	} else {
		conc_lock_acquire(&c->sendq.lock);
		if (!w->woken)
			conc__waitq_unlink(q, w);
		conc_lock_release(&c->sendq.lock);
	}
	w->claim = NULL;
}

/*
 * Register on every channel, re-check, and park until something claims the
 * select's word or it must give up (ready case seen, ctx done, deadline or a
 * timer passed).  Returns the final word: DONE | i (a partner completed case
 * i), WOKEN | i (retry; i == CONC__SEL_TAG for the context), or ABORTED.
 * Every registration is removed before it returns.
 */
static inline uint32_t conc__select_wait(struct conc_select_case *cs, size_t n, struct conc_deadline until,
					 struct conc_ctx *ctx)
{
	_Atomic(uint32_t) state;
	atomic_init(&state, CONC__SEL_WAITING);
	bool give_up = false;
	/* In poll order: a partner takes the first claimable waiter of a
	 * queue, so several cases on one channel are then chosen fairly too. */
	for (size_t j = 0; j < n && !give_up; j++) {
		size_t i = cs[j].conc__order;
		if (cs[i].chan && cs[i].op != CONC_SELECT_TIMER)
			give_up = conc__select_register(&cs[i], (uint32_t)i, &state);
	}
	struct conc_waiter cw;
	conc_waiter_init(&cw, 0);
	cw.claim = &state;
	cw.tag = CONC__SEL_TAG;
	if (conc_ctx_watch(ctx, &cw) != CONC_OK)
		give_up = true;
	struct conc_backoff b = {0};
	uint32_t st;
	for (;;) {
		/* C3 acquire: pairs with C2 (a claim: what the waker changed is
		 * visible) and C4 (a hand-off: the element is in place). */
		st = atomic_load_explicit(&state, memory_order_acquire);
		if (st != CONC__SEL_WAITING)
			break;
		if (give_up || (ctx && conc_ctx_err(ctx) != CONC_OK) || conc_deadline_expired(until)) {
			/* C3 acquire on failure, as above (on success
			 * nothing is read). */
			if (atomic_compare_exchange_strong_explicit(&state, &st, CONC__SEL_ABORTED,
								    memory_order_acquire, memory_order_acquire))
				st = CONC__SEL_ABORTED;
			break;
		}
		if (!conc_backoff_wait(&b))
			conc_parker_park_until(conc_parker_self(), until);
	}
	/* A partner is copying: it finishes without blocking. */
	while (st == CONC__SEL_BUSY) {
		conc_backoff_snooze(&b);
		/* C3 acquire, as above. */
		st = atomic_load_explicit(&state, memory_order_acquire);
	}
	conc_ctx_unwatch(ctx, &cw);
	for (size_t i = 0; i < n; i++) {
		if (!cs[i].conc__w.claim)
			continue;
		if (st == (CONC__SEL_DONE | (uint32_t)i))
			/* The partner dequeued it before C4 (which our C3
			 * synchronised with) and never touches it again. */
			cs[i].conc__w.claim = NULL;
		else
			conc__select_unregister(&cs[i]);
	}
	return st;
}

/* Validate cases; say whether anything could ever end a blocking wait. */
static inline enum conc_status conc__select_check(struct conc_select_case *cs, size_t n, bool *can_end,
						  bool *has_ring)
{
	if ((n && !cs) || n > CONC_SELECT_MAX_CASES)
		return CONC_INVALID;
	for (size_t i = 0; i < n; i++) {
		struct conc_select_case *k = &cs[i];
		k->conc__w.claim = NULL;
		if (k->op == CONC_SELECT_TIMER) {
			*can_end = *can_end || !conc_deadline_is_forever(k->at);
		} else if (k->op == CONC_SELECT_RECV || k->op == CONC_SELECT_SEND) {
			if (!k->chan)
				continue;
			if (!k->buf || !k->chan->cells)
				return CONC_INVALID;
			*can_end = true;
			*has_ring = *has_ring || k->chan->cap;
		} else {
			return CONC_INVALID;
		}
	}
	return CONC_OK;
}

/* The earliest timer of the cases, folded into d. */
static inline struct conc_deadline conc__select_until(struct conc_select_case *cs, size_t n,
						      struct conc_deadline d, struct conc_ctx *ctx)
{
	d = conc_deadline_min(d, conc_ctx_deadline(ctx));
	for (size_t i = 0; i < n; i++)
		if (cs[i].op == CONC_SELECT_TIMER)
			d = conc_deadline_min(d, cs[i].at);
	return d;
}

/*
 * The engine under conc_select_until() (see conc/select.h for the contract)
 * and under blocking calls on rendezvous channels.
 *
 * Round: try every case in poll order; if none happened, spin a little (when
 * a ring channel is involved: a partner may be about to act), then register
 * and wait.  A wake-up through a ring channel's queue that this select does
 * not use (it took another case, or nothing) is passed on to that queue, as
 * for any woken waiter that gives up.
 */
static inline enum conc_status conc__chan_select(struct conc_select_case *cs, size_t n, unsigned flags,
						 struct conc_deadline d, struct conc_ctx *ctx, size_t *chosen)
{
	size_t i = n;
	bool can_end = ctx || !conc_deadline_is_forever(d), has_ring = false;
	enum conc_status s = conc__select_check(cs, n, &can_end, &has_ring);
	if (s == CONC_OK && !can_end)
		s = CONC_INVALID; /* would wait forever */
	if (s == CONC_OK && ctx)
		s = conc_ctx_err(ctx);
	if (s != CONC_OK) {
		if (chosen)
			*chosen = n;
		return s;
	}
	for (size_t j = 0; j < n; j++) {
		/* Inside-out Fisher-Yates: a uniformly random permutation. */
		size_t r = flags & CONC_SELECT_BIASED ? j : conc__rand_below(j + 1);
		cs[j].conc__order = cs[r].conc__order;
		cs[r].conc__order = j;
	}
	struct conc_deadline until = conc__select_until(cs, n, d, ctx);
	struct conc_backoff b = {0};
	size_t woke = n; /* a ring case whose queue woke us: pass it on unless used */
	unsigned passes = 0;
	for (;;) {
		bool last_try = conc_deadline_expired(d);
		s = conc__select_try_all(cs, n, last_try, &i);
		if (woke != n && (s == CONC_WOULDBLOCK || i != woke))
			conc_waitq_wake_one(cs[woke].op == CONC_SELECT_SEND ? &cs[woke].chan->sendq
									    : &cs[woke].chan->recvq);
		woke = n;
		if (s != CONC_WOULDBLOCK)
			break;
		i = n;
		if (ctx && (s = conc_ctx_err(ctx)) != CONC_OK)
			break;
		if (last_try) {
			if (!conc__select_unchanged(cs, n) && ++passes < CONC_SELECT_POLL_PASSES)
				continue;
			s = CONC_TIMEDOUT;
			break;
		}
		if (has_ring && conc_backoff_wait(&b))
			continue;
		uint32_t st = conc__select_wait(cs, n, until, ctx);
		uint32_t tag = st & CONC__SEL_TAG;
		if ((st & ~CONC__SEL_TAG) == CONC__SEL_DONE) {
			i = tag;
			s = CONC_OK;
			break;
		}
		if ((st & ~CONC__SEL_TAG) == CONC__SEL_WOKEN && tag != CONC__SEL_TAG && cs[tag].chan->cap)
			woke = tag;
	}
	if (chosen)
		*chosen = i;
	return s;
}

/* A blocking call on a rendezvous channel: a one-case select. */
static inline enum conc_status conc__rdv_block(struct conc_chan *c, bool send, void *buf, struct conc_deadline d,
					       struct conc_ctx *ctx)
{
	struct conc_select_case k;
	memset(&k, 0, sizeof k);
	k.op = send ? CONC_SELECT_SEND : CONC_SELECT_RECV;
	k.chan = c;
	k.buf = buf;
	return conc__chan_select(&k, 1, CONC_SELECT_BIASED, d, ctx, NULL);
}

/* What every call that may block checks first: a done context wins. */
static inline enum conc_status conc__chan_check(struct conc_chan *c, const void *p, struct conc_ctx *ctx)
{
	if (CONC__UNLIKELY(!c || !p || !c->cells))
		return CONC_INVALID;
	return ctx ? conc_ctx_err(ctx) : CONC_OK;
}

/*
 * Send a copy of *elem, waiting for room until the absolute deadline d or
 * until ctx (NULL for none) is done.  Returns CONC_OK, CONC_CLOSED,
 * CONC_TIMEDOUT (d or ctx's deadline passed; a deadline already passed means
 * "try once"), CONC_CANCELED, or CONC_INVALID.  A done context fails the call
 * before it tries.  Any thread; uses no CPU while parked.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_send_until(struct conc_chan *c, const void *elem,
								   struct conc_deadline d, struct conc_ctx *ctx)
{
	enum conc_status s = conc__chan_check(c, elem, ctx);
	if (s != CONC_OK)
		return s;
	if (CONC__UNLIKELY(c->cap == 0))
		return conc__rdv_block(c, true, (void *)(uintptr_t)elem, d, ctx);
	s = conc__chan_try_send(c, elem);
	if (CONC__LIKELY(s != CONC_FULL))
		return s;
	struct conc__chan_op op = {conc__chan_op_send, (void *)(uintptr_t)elem, 1, 0, false};
	return conc__chan_block(c, &c->sendq, CONC_FULL, &op, d, ctx);
}

/* Receive into out, waiting until d or until ctx is done; as send_until.
 * Returns CONC_OK, CONC_CLOSED (closed and drained), CONC_TIMEDOUT,
 * CONC_CANCELED or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_chan_recv_until(struct conc_chan *c, void *out,
								   struct conc_deadline d, struct conc_ctx *ctx)
{
	enum conc_status s = conc__chan_check(c, out, ctx);
	if (s != CONC_OK)
		return s;
	if (CONC__UNLIKELY(c->cap == 0))
		return conc__rdv_block(c, false, out, d, ctx);
	s = conc__chan_try_recv(c, out);
	if (CONC__LIKELY(s != CONC_EMPTY))
		return s;
	struct conc__chan_op op = {conc__chan_op_recv, out, 1, 0, false};
	return conc__chan_block(c, &c->recvq, CONC_EMPTY, &op, d, ctx);
}

/* Send, waiting as long as it takes.  CONC_OK, CONC_CLOSED or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_chan_send(struct conc_chan *c, const void *elem)
{
	return conc_chan_send_until(c, elem, conc_deadline_forever(), NULL);
}

/* Receive, waiting as long as it takes.  CONC_OK, CONC_CLOSED or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_chan_recv(struct conc_chan *c, void *out)
{
	return conc_chan_recv_until(c, out, conc_deadline_forever(), NULL);
}

/* ------------------------------------------------------------ bulk, public */

/* Shared body of the bulk calls: validate, try, then block if allowed. */
static inline enum conc_status conc__chan_bulk(struct conc_chan *c, void *buf, size_t n, bool send, bool all,
						bool block, struct conc_deadline d, struct conc_ctx *ctx,
						size_t *done)
{
	struct conc__chan_op op = {send ? conc__chan_op_send : conc__chan_op_recv, buf, n, 0, all};
	enum conc_status s = block ? conc__chan_check(c, buf, ctx)
				   : (!c || !buf || !c->cells ? CONC_INVALID : CONC_OK);
	if (s == CONC_OK && all && n > (c->cap ? c->cap : 1))
		s = CONC_INVALID; /* could never succeed */
	if (s == CONC_OK && n > 0 && c->cap == 0) {
		/* Rendezvous: one element at a time, the first one as asked
		 * (blocking or not), the rest of a burst only to partners
		 * already waiting. */
		unsigned char *p = (unsigned char *)buf;
		s = block ? conc__rdv_block(c, send, p, d, ctx) : conc__rdv_try(c, send, p);
		op.done = s == CONC_OK;
		while (s == CONC_OK && op.done < n && conc__rdv_try(c, send, p + op.done * c->esize) == CONC_OK)
			op.done++;
	} else if (s == CONC_OK && n > 0) {
		enum conc_status wouldblock = send ? CONC_FULL : CONC_EMPTY;
		s = op.attempt(c, &op);
		if (s == wouldblock && block)
			s = conc__chan_block(c, send ? &c->sendq : &c->recvq, wouldblock, &op, d, ctx);
	}
	if (done)
		*done = op.done;
	return s;
}

/*
 * All-or-nothing bulk: send the n elements at elems (contiguous, each
 * conc_chan_elem_size() bytes) in order, with one claim, or none of them.
 * n == 0 is a no-op returning CONC_OK; n > capacity is CONC_INVALID (it could
 * never fit).  The _until form waits for room for all n, as send_until.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_try_send_n(struct conc_chan *c, const void *elems, size_t n)
{
	return conc__chan_bulk(c, (void *)(uintptr_t)elems, n, true, true, false, conc_deadline_poll(), NULL, NULL);
}

CONC_NODISCARD static inline enum conc_status conc_chan_send_n_until(struct conc_chan *c, const void *elems,
								     size_t n, struct conc_deadline d,
								     struct conc_ctx *ctx)
{
	return conc__chan_bulk(c, (void *)(uintptr_t)elems, n, true, true, true, d, ctx, NULL);
}

CONC_NODISCARD static inline enum conc_status conc_chan_send_n(struct conc_chan *c, const void *elems, size_t n)
{
	return conc_chan_send_n_until(c, elems, n, conc_deadline_forever(), NULL);
}

/*
 * All-or-nothing bulk receive of n elements into out.  A closed channel with
 * fewer than n elements left reports CONC_CLOSED and leaves them for
 * conc_chan_recv or the burst calls.
 */
CONC_NODISCARD static inline enum conc_status conc_chan_try_recv_n(struct conc_chan *c, void *out, size_t n)
{
	return conc__chan_bulk(c, out, n, false, true, false, conc_deadline_poll(), NULL, NULL);
}

CONC_NODISCARD static inline enum conc_status conc_chan_recv_n_until(struct conc_chan *c, void *out, size_t n,
								     struct conc_deadline d, struct conc_ctx *ctx)
{
	return conc__chan_bulk(c, out, n, false, true, true, d, ctx, NULL);
}

CONC_NODISCARD static inline enum conc_status conc_chan_recv_n(struct conc_chan *c, void *out, size_t n)
{
	return conc_chan_recv_n_until(c, out, n, conc_deadline_forever(), NULL);
}

/*
 * Burst: move as many of the n elements as possible with one claim and
 * return how many (0..n), the first ones of the array, in order.  *status
 * (may be NULL) gets CONC_OK if any moved, else why not (CONC_FULL/EMPTY for
 * the try forms, CONC_CLOSED, CONC_TIMEDOUT, CONC_CANCELED, CONC_INVALID).
 * The blocking forms wait until at least one element can move, then move as
 * many as they can at that moment.
 */
static inline size_t conc_chan_try_send_burst(struct conc_chan *c, const void *elems, size_t n,
					      enum conc_status *status)
{
	size_t done;
	enum conc_status s = conc__chan_bulk(c, (void *)(uintptr_t)elems, n, true, false, false,
					     conc_deadline_poll(), NULL, &done);
	if (status)
		*status = s;
	return done;
}

static inline size_t conc_chan_send_burst_until(struct conc_chan *c, const void *elems, size_t n,
						struct conc_deadline d, struct conc_ctx *ctx,
						enum conc_status *status)
{
	size_t done;
	enum conc_status s = conc__chan_bulk(c, (void *)(uintptr_t)elems, n, true, false, true, d, ctx, &done);
	if (status)
		*status = s;
	return done;
}

static inline size_t conc_chan_send_burst(struct conc_chan *c, const void *elems, size_t n,
					  enum conc_status *status)
{
	return conc_chan_send_burst_until(c, elems, n, conc_deadline_forever(), NULL, status);
}

static inline size_t conc_chan_try_recv_burst(struct conc_chan *c, void *out, size_t n, enum conc_status *status)
{
	size_t done;
	enum conc_status s = conc__chan_bulk(c, out, n, false, false, false, conc_deadline_poll(), NULL, &done);
	if (status)
		*status = s;
	return done;
}

static inline size_t conc_chan_recv_burst_until(struct conc_chan *c, void *out, size_t n, struct conc_deadline d,
						struct conc_ctx *ctx, enum conc_status *status)
{
	size_t done;
	enum conc_status s = conc__chan_bulk(c, out, n, false, false, true, d, ctx, &done);
	if (status)
		*status = s;
	return done;
}

static inline size_t conc_chan_recv_burst(struct conc_chan *c, void *out, size_t n, enum conc_status *status)
{
	return conc_chan_recv_burst_until(c, out, n, conc_deadline_forever(), NULL, status);
}

/* ------------------------------------------------------------------- close */

/*
 * Close the channel: later sends fail with CONC_CLOSED; receivers drain what
 * is left, then get CONC_CLOSED; every blocked sender and receiver wakes.
 * Returns CONC_OK if this call closed it, CONC_CLOSED if it was closed
 * already (nothing changes), CONC_INVALID for NULL.  Any thread, any time.
 */
static inline enum conc_status conc_chan_close(struct conc_chan *c)
{
	if (!c || !c->cells)
		return CONC_INVALID;
	if (c->cap == 0)
		return conc__rdv_close(c);
	/* S5 seq_cst: the state change of the waitq handshake for both queues
	 * (blocked threads re-check with S3/S4). */
	uint64_t old = atomic_fetch_or_explicit(&c->tail, c->mark, memory_order_seq_cst);
	if (old & c->mark)
		return CONC_CLOSED;
	conc_waitq_wake_all(&c->sendq);
	conc_waitq_wake_all(&c->recvq);
	return CONC_OK;
}

/* --------------------------------------------------------------- typed API */

/*
 * CONC_CHAN_TYPED(name, T) defines struct name, a channel of T, and type-safe
 * wrappers name_init/new/free/destroy/send/recv/try_send/try_recv/send_until/
 * recv_until/send_n/recv_n/send_burst/recv_burst/close/len/cap, plus
 * name_chan() for the generic struct conc_chan underneath.
 *
 *   CONC_CHAN_TYPED(intchan, int)
 *   struct intchan *ch; intchan_new(&ch, 64); intchan_send(ch, 42);
 */
#define CONC_CHAN_TYPED(name, T)                                                                            \
	struct name {                                                                                       \
		struct conc_chan chan;                                                                      \
	};                                                                                                  \
	CONC__UNUSED static inline struct conc_chan *name##_chan(struct name *c)                                        \
	{                                                                                                   \
		return c ? &c->chan : NULL;                                                                 \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_init(struct name *c, size_t cap, void *buf,   \
								  size_t bufsize)                           \
	{                                                                                                   \
		return conc_chan_init(name##_chan(c), cap, sizeof(T), buf, bufsize);                        \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_new(struct name **out, size_t cap)            \
	{                                                                                                   \
		struct conc_chan *c = NULL;                                                                 \
		enum conc_status s = out ? conc_chan_new(&c, cap, sizeof(T)) : CONC_INVALID;                \
		if (s == CONC_OK)                                                                           \
			*out = (struct name *)(void *)c;                                                    \
		return s;                                                                                   \
	}                                                                                                   \
	CONC__UNUSED static inline enum conc_status name##_free(struct name *c)                                         \
	{                                                                                                   \
		return conc_chan_free(name##_chan(c));                                                      \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_destroy(struct name *c)                       \
	{                                                                                                   \
		return conc_chan_destroy(name##_chan(c));                                                   \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_send(struct name *c, T v)                     \
	{                                                                                                   \
		return conc_chan_send(name##_chan(c), &v);                                                  \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_recv(struct name *c, T *out)                  \
	{                                                                                                   \
		return conc_chan_recv(name##_chan(c), out);                                                 \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_try_send(struct name *c, T v)                 \
	{                                                                                                   \
		return conc_chan_try_send(name##_chan(c), &v);                                              \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_try_recv(struct name *c, T *out)              \
	{                                                                                                   \
		return conc_chan_try_recv(name##_chan(c), out);                                             \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_send_until(                                   \
		struct name *c, T v, struct conc_deadline d, struct conc_ctx *ctx)                          \
	{                                                                                                   \
		return conc_chan_send_until(name##_chan(c), &v, d, ctx);                                    \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_recv_until(                                   \
		struct name *c, T *out, struct conc_deadline d, struct conc_ctx *ctx)                       \
	{                                                                                                   \
		return conc_chan_recv_until(name##_chan(c), out, d, ctx);                                   \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_send_n(struct name *c, const T *v, size_t n)  \
	{                                                                                                   \
		return conc_chan_send_n(name##_chan(c), v, n);                                              \
	}                                                                                                   \
	CONC_NODISCARD CONC__UNUSED static inline enum conc_status name##_recv_n(struct name *c, T *out, size_t n)      \
	{                                                                                                   \
		return conc_chan_recv_n(name##_chan(c), out, n);                                            \
	}                                                                                                   \
	CONC__UNUSED static inline size_t name##_send_burst(struct name *c, const T *v, size_t n,                      \
					       enum conc_status *status)                                    \
	{                                                                                                   \
		return conc_chan_send_burst(name##_chan(c), v, n, status);                                  \
	}                                                                                                   \
	CONC__UNUSED static inline size_t name##_recv_burst(struct name *c, T *out, size_t n, enum conc_status *status) \
	{                                                                                                   \
		return conc_chan_recv_burst(name##_chan(c), out, n, status);                                \
	}                                                                                                   \
	CONC__UNUSED static inline enum conc_status name##_close(struct name *c)                                        \
	{                                                                                                   \
		return conc_chan_close(name##_chan(c));                                                     \
	}                                                                                                   \
	CONC__UNUSED static inline size_t name##_len(struct name *c)                                                    \
	{                                                                                                   \
		return conc_chan_len(name##_chan(c));                                                       \
	}                                                                                                   \
	CONC__UNUSED static inline size_t name##_cap(struct name *c)                                                    \
	{                                                                                                   \
		return conc_chan_cap(name##_chan(c));                                                       \
	}

#ifdef __cplusplus
}
#endif

#endif /* CONC_CHAN_H */
