/* SPDX-License-Identifier: MIT */
#ifndef CONC_BREAKER_H
#define CONC_BREAKER_H

/*
 * conc/breaker.h: a circuit breaker (closed, open, half-open) whose admission
 * is lock-free and which never holds anything while the protected call runs.
 *
 * Use: conc_breaker_allow() hands out a ticket or refuses (CONC_REJECTED,
 * with a retry-after hint); the caller makes its call with no lock held and
 * reports the outcome with conc_breaker_done(): SUCCESS, FAILURE or IGNORED
 * (the caller's own cancellation: never counted).  conc_breaker_call() wraps
 * the two around a function.
 *
 *   CLOSED     every call admitted; outcomes recorded.  Trips to OPEN on
 *              `consecutive_failures` failures in a row, or when, with at least
 *              `min_calls` calls in the sliding window, failures (or slow calls,
 *              duration >= slow_ns) reach failure_rate_pct (slow_rate_pct)
 *              percent of them.  The window is the last N calls (COUNT) or the
 *              last window_ns in window_size buckets (TIME).
 *   OPEN       every call refused, for open_ns on the breaker's clock.  The
 *              first allow at or after that moves to HALF_OPEN (no timer).
 *   HALF_OPEN  at most `probes` probe calls admitted, the rest refused.  All
 *              `probes` probes succeed: CLOSED with an empty window.  Any probe
 *              fails (or is slow, when slow_rate_pct is set): OPEN again.  A
 *              probe reported IGNORED gives its permit back.  A probe that
 *              never reports is counted as failed once probe_lease_ns has
 *              passed since the latest probe admission (checked by allow calls
 *              that find every permit taken; no thread).
 *   forced     conc_breaker_force_open() / force_closed() pin the breaker open
 *              (refuse all) or closed (admit all, record nothing) until
 *              conc_breaker_reset() (CLOSED, empty window) or the other force.
 *
 * Algorithm.  One atomic 64-bit word holds the state (2 bits), a forced bit,
 * the probes admitted and the probes that succeeded (12 bits each) and a
 * generation (37 bits).  Every state change is one CAS on the word that also
 * bumps the generation; admitting a probe is a CAS that increments the
 * admitted count, so `probes` caps the probes in flight exactly, however many
 * threads race (no herd).  A ticket carries the generation it was issued in;
 * a report from an older generation changes nothing (counted as stale).
 * In the closed state allow is one load of the word (acquire), plus a clock
 * read when slow calls or a time window need a start time.
 *
 * Times that go with the word but do not fit in it are monotone maxima,
 * written with CAS-max, so a late writer can only push them later, never
 * earlier: `open_until` (when OPEN may end; published with the generation it
 * belongs to in `open_gen`, and published by any allow that finds it missing,
 * so a preempted tripper delays half-open at most by its own delay), and
 * `last_admit` (raised *before* the CAS that admits a probe, so whoever sees
 * the probe in the word also sees its admission time: a lease never expires
 * early; it may expire later by the time between the lost probe's admission
 * and the latest one).  The clock must be monotonic.
 *
 * Closed-state recording is lock-free and allocation-free.  The window's
 * totals (calls, failures, slow) are three atomic counters next to the
 * ring (COUNT: one byte per call slot, swapped in with an exchange) or the
 * buckets (TIME: {epoch, calls, failures, slow}; a bucket is recycled by the
 * thread that wins a CAS on its epoch).  Every unit is added to the totals by
 * whoever puts it in a slot and subtracted by whoever takes it out (exchange),
 * so the totals equal the window's contents whenever no report is in flight:
 * no drift.  Single-threaded, everything is exact.  Approximations, only
 * while reports race: the three totals are read one after another, so a
 * decision may see a report half applied; a report racing the recycling of
 * its TIME bucket may land in the recycled bucket or be dropped with it; with
 * more than N reports in flight at once a COUNT ring slot may keep the older
 * of two outcomes; a report that passed its generation check in the instant
 * the breaker tripped or closed may land in the next window (the window is
 * emptied on each trip and each close).  "Consecutive" means consecutive in
 * the order the reports' atomic updates happen.
 *
 * Events.  Each state change is sent as a struct conc_breaker_event to the
 * optional `events` channel with conc_chan_try_send (never blocks; a full
 * or closed channel counts the event as dropped), by the thread whose CAS
 * made the change, after the CAS.  Two changes made by different threads may
 * arrive out of order: order them by generation.  No callback ever runs.
 *
 * Progress: allow, done and the manual calls are lock-free (CAS loops on the
 * word; each retry means another thread changed it).  Emptying the window on
 * a transition is O(window_size), on the transitioning thread only.  Nothing
 * here blocks; conc_breaker_call runs the caller's function, unlocked.
 *
 * Concurrency: any thread may call anything except init/new and
 * destroy/free, which must not race other calls.  A ticket belongs to one
 * call: report it once (a second done returns CONC_INVALID).  The breaker
 * lives on caller memory (conc_breaker_init with conc_breaker_buf_size()
 * bytes of window buffer) or is allocated (conc_breaker_new); the events
 * channel is the caller's and must outlive the breaker.
 */

#include "chan.h"

#ifdef __cplusplus
extern "C" {
#endif

enum conc_breaker_state {
	CONC_BREAKER_CLOSED = 0,
	CONC_BREAKER_OPEN = 1,
	CONC_BREAKER_HALF_OPEN = 2,
	CONC_BREAKER_FORCED_OPEN = 3,  /* by conc_breaker_force_open, until reset */
	CONC_BREAKER_FORCED_CLOSED = 4 /* by conc_breaker_force_closed, until reset */
};

enum conc_breaker_outcome {
	CONC_BREAKER_SUCCESS = 0,
	CONC_BREAKER_FAILURE = 1,
	CONC_BREAKER_IGNORED = 2 /* not a verdict on the service (the caller gave up) */
};

enum conc_breaker_window {
	CONC_BREAKER_WINDOW_COUNT = 0, /* the last window_size calls */
	CONC_BREAKER_WINDOW_TIME = 1   /* the last window_ns, in window_size buckets */
};

/* Why the state changed (struct conc_breaker_event). */
enum conc_breaker_reason {
	CONC_BREAKER_REASON_CONSECUTIVE_FAILURES = 1,
	CONC_BREAKER_REASON_FAILURE_RATE,
	CONC_BREAKER_REASON_SLOW_RATE,
	CONC_BREAKER_REASON_OPEN_ELAPSED,     /* OPEN -> HALF_OPEN */
	CONC_BREAKER_REASON_PROBES_SUCCEEDED, /* HALF_OPEN -> CLOSED */
	CONC_BREAKER_REASON_PROBE_FAILED,     /* HALF_OPEN -> OPEN */
	CONC_BREAKER_REASON_PROBE_SLOW,       /* HALF_OPEN -> OPEN (slow_rate_pct set) */
	CONC_BREAKER_REASON_PROBE_LEASE_EXPIRED,
	CONC_BREAKER_REASON_FORCED_OPEN,
	CONC_BREAKER_REASON_FORCED_CLOSED,
	CONC_BREAKER_REASON_RESET
};

/* The most probes half-open admits at once (12 bits of the word). */
#define CONC_BREAKER_MAX_PROBES 4095u

/* retry_after_ns of a refusal while forced open: not before a manual call. */
#define CONC_BREAKER_RETRY_NEVER INT64_MAX

struct conc_breaker_config {
	/* Trip criteria; at least one must be set.  0 = off. */
	uint32_t consecutive_failures; /* trip at this many failures in a row */
	uint32_t failure_rate_pct;     /* 1..100: trip when failures >= this % of window calls */
	uint32_t slow_rate_pct;        /* 1..100: trip when slow calls >= this % of window calls */
	int64_t slow_ns;               /* > 0 with slow_rate_pct: a call this long or longer is slow */
	/* The sliding window (needed only for the rates). */
	enum conc_breaker_window window_kind;
	uint32_t window_size;          /* COUNT: calls; TIME: buckets */
	int64_t window_ns;             /* TIME: span, a multiple of window_size */
	uint32_t min_calls;            /* >= 1: rates judged only on this many calls or more */
	/* Open and half-open. */
	int64_t open_ns;               /* > 0: time spent OPEN before half-open */
	uint32_t probes;               /* 1..CONC_BREAKER_MAX_PROBES */
	int64_t probe_lease_ns;        /* > 0: a probe silent this long counts as failed */
	const struct conc_clock *clock;/* NULL: CLOCK_MONOTONIC; copied at init */
	struct conc_chan *events;      /* NULL, or a channel of struct conc_breaker_event */
};

/* A state change, as sent to the events channel. */
struct conc_breaker_event {
	enum conc_breaker_state from, to;
	uint64_t generation; /* the new state's generation */
	int64_t at_ns;       /* on the breaker's clock */
	enum conc_breaker_reason reason;
};

/*
 * What conc_breaker_allow fills in.  Admitted: generation, probe and
 * start_ns (0 when nothing needs a start time) identify the call for
 * conc_breaker_done.  Refused: generation is 0 and retry_after_ns says how
 * long until the state may change (OPEN: until half-open; HALF_OPEN: until
 * the probes' lease runs out; forced open: CONC_BREAKER_RETRY_NEVER).
 * state is the state the decision was made in.  Treat as read-only.
 */
struct conc_breaker_ticket {
	uint64_t generation;
	int64_t start_ns;
	int64_t retry_after_ns;
	enum conc_breaker_state state;
	bool probe;
};

/* A snapshot (see conc_breaker_metrics); each field is read on its own. */
struct conc_breaker_metrics {
	enum conc_breaker_state state;
	uint64_t generation;
	uint32_t probes_admitted, probes_succeeded; /* HALF_OPEN */
	uint32_t consecutive_failures;
	uint64_t window_calls, window_failures, window_slow;
	uint64_t rejected;       /* allow calls refused */
	uint64_t ignored;        /* IGNORED reports */
	uint64_t stale;          /* reports from an older generation, dropped */
	uint64_t transitions;    /* state changes */
	uint64_t events_dropped; /* events the channel had no room for */
};

/* One TIME bucket: the calls whose bucket index was `epoch`. */
struct conc__breaker_bucket {
	_Atomic(int64_t) epoch;
	_Atomic(int64_t) calls, failures, slow;
};

struct conc_breaker {
	/* The word (see "Algorithm").  CAS by transitions, probe admission and
	 * probe reports; loaded by every allow and done. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) word;
	/* Fixed at init; read-only after (same line: allow reads both). */
	struct conc_clock clock;
	struct conc_chan *events;
	int64_t slow_ns, window_ns, bucket_ns, open_ns, lease_ns, t0;
	uint32_t consecutive, failure_pct, slow_pct, window_size, min_calls, probes;
	enum conc_breaker_window window_kind;
	bool rates;      /* a window is kept */
	bool start_time; /* closed calls need a start time */
	bool owned, live;
	_Atomic(unsigned char) *ring;          /* COUNT: window_size slots */
	struct conc__breaker_bucket *buckets;  /* TIME: window_size buckets */
	/* Times that go with the word; CAS-max only.  Written on transitions
	 * and half-open admissions. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(int64_t) open_until;
	_Atomic(uint64_t) open_gen;
	_Atomic(int64_t) last_admit;
	/* Closed-state recording, written by done. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) cursor; /* COUNT: next slot */
	_Atomic(int64_t) swept;                                  /* TIME: newest swept epoch */
	_Atomic(int64_t) calls, failures, slow;                  /* the window's totals */
	_Atomic(uint32_t) consec;
	/* Counters for conc_breaker_metrics. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) rejected;
	_Atomic(uint64_t) ignored, stale, transitions, dropped;
};

/* ------------------------------------------------------------ the word */

#define CONC__BRK_STATE 3u
#define CONC__BRK_FORCED 4u
#define CONC__BRK_ADM_SHIFT 3
#define CONC__BRK_SUC_SHIFT 15
#define CONC__BRK_GEN_SHIFT 27
#define CONC__BRK_COUNT_MASK UINT64_C(0xfff)
#define CONC__BRK_GEN_MASK ((UINT64_C(1) << 37) - 1)

static inline unsigned conc__brk_state(uint64_t w) { return (unsigned)(w & CONC__BRK_STATE); }
static inline bool conc__brk_forced(uint64_t w) { return (w & CONC__BRK_FORCED) != 0; }
static inline uint32_t conc__brk_adm(uint64_t w) { return (uint32_t)((w >> CONC__BRK_ADM_SHIFT) & CONC__BRK_COUNT_MASK); }
static inline uint32_t conc__brk_suc(uint64_t w) { return (uint32_t)((w >> CONC__BRK_SUC_SHIFT) & CONC__BRK_COUNT_MASK); }
static inline uint64_t conc__brk_gen(uint64_t w) { return w >> CONC__BRK_GEN_SHIFT; }

static inline uint64_t conc__brk_pack(unsigned state, bool forced, uint32_t adm, uint32_t suc, uint64_t gen)
{
	return (uint64_t)state | (forced ? CONC__BRK_FORCED : 0) | ((uint64_t)adm << CONC__BRK_ADM_SHIFT) |
	       ((uint64_t)suc << CONC__BRK_SUC_SHIFT) | (gen << CONC__BRK_GEN_SHIFT);
}

/* The generation after g: 37 bits, skipping 0 (a ticket's "none"). */
static inline uint64_t conc__brk_next_gen(uint64_t g)
{
	g = (g + 1) & CONC__BRK_GEN_MASK;
	return g ? g : 1;
}

static inline enum conc_breaker_state conc__brk_public_state(uint64_t w)
{
	unsigned s = conc__brk_state(w);
	if (conc__brk_forced(w))
		return s == CONC_BREAKER_OPEN ? CONC_BREAKER_FORCED_OPEN : CONC_BREAKER_FORCED_CLOSED;
	return (enum conc_breaker_state)s;
}

static inline int64_t conc__brk_add_sat(int64_t a, int64_t b)
{
	if (b > 0 && a > INT64_MAX - b)
		return INT64_MAX;
	return a + b;
}

/* *a = max(*a, v).  Relaxed: callers order it with the word (see the
 * call sites). */
static inline void conc__brk_max(_Atomic(int64_t) *a, int64_t v)
{
	int64_t cur = atomic_load_explicit(a, memory_order_relaxed);
	while (cur < v &&
	       !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed, memory_order_relaxed))
		;
}

/* ------------------------------------------------------------ init / free */

static inline bool conc__brk_config_ok(const struct conc_breaker_config *c)
{
	if (!c)
		return false;
	if (!c->consecutive_failures && !c->failure_rate_pct && !c->slow_rate_pct)
		return false;
	if (c->failure_rate_pct > 100 || c->slow_rate_pct > 100)
		return false;
	if (c->slow_ns < 0 || (c->slow_rate_pct && c->slow_ns == 0))
		return false;
	if (c->open_ns <= 0 || c->probe_lease_ns <= 0 || c->probes == 0 || c->probes > CONC_BREAKER_MAX_PROBES)
		return false;
	if (c->events && conc_chan_elem_size(c->events) != sizeof(struct conc_breaker_event))
		return false;
	if (c->failure_rate_pct || c->slow_rate_pct) {
		if (c->window_size == 0 || c->min_calls == 0)
			return false;
		if (c->window_kind == CONC_BREAKER_WINDOW_COUNT)
			return c->min_calls <= c->window_size;
		if (c->window_kind != CONC_BREAKER_WINDOW_TIME)
			return false;
		return c->window_ns > 0 && c->window_ns % c->window_size == 0;
	}
	return true;
}

/*
 * Bytes of window buffer conc_breaker_init needs for cfg: 0 when no rate is
 * set (no window), window_size bytes for a COUNT window, window_size * 32 for
 * a TIME window.  0 also for an invalid cfg (init then says why).
 */
static inline size_t conc_breaker_buf_size(const struct conc_breaker_config *cfg)
{
	if (!conc__brk_config_ok(cfg) || (!cfg->failure_rate_pct && !cfg->slow_rate_pct))
		return 0;
	if (cfg->window_kind == CONC_BREAKER_WINDOW_COUNT)
		return cfg->window_size;
	uint64_t n = (uint64_t)cfg->window_size * sizeof(struct conc__breaker_bucket);
	size_t size = (size_t)n;
	return (uint64_t)size == n ? size : 0; /* 0: too big for size_t */
}

/* Empty the window and the consecutive count.  Only whoever just changed the
 * state calls it (see "Approximations" at the top). */
static inline void conc__brk_drain(struct conc_breaker *b)
{
	/* Relaxed throughout: these counters publish nothing; decisions go
	 * through the word. */
	atomic_store_explicit(&b->consec, 0, memory_order_relaxed);
	if (!b->rates)
		return;
	int64_t dc = 0, df = 0, ds = 0;
	if (b->window_kind == CONC_BREAKER_WINDOW_COUNT) {
		for (uint32_t i = 0; i < b->window_size; i++) {
			unsigned v = atomic_exchange_explicit(&b->ring[i], 0, memory_order_relaxed);
			dc += (v & 1u) != 0;
			df += (v & 2u) != 0;
			ds += (v & 4u) != 0;
		}
	} else {
		for (uint32_t i = 0; i < b->window_size; i++) {
			struct conc__breaker_bucket *k = &b->buckets[i];
			dc += atomic_exchange_explicit(&k->calls, 0, memory_order_relaxed);
			df += atomic_exchange_explicit(&k->failures, 0, memory_order_relaxed);
			ds += atomic_exchange_explicit(&k->slow, 0, memory_order_relaxed);
		}
	}
	atomic_fetch_sub_explicit(&b->calls, dc, memory_order_relaxed);
	atomic_fetch_sub_explicit(&b->failures, df, memory_order_relaxed);
	atomic_fetch_sub_explicit(&b->slow, ds, memory_order_relaxed);
}

/*
 * Initialise b from cfg, with its window on the caller's buffer buf (8-byte
 * aligned, bufsize >= conc_breaker_buf_size(cfg); NULL and 0 when no rate is
 * set).  The breaker starts CLOSED, generation 1.  The clock is copied (the
 * struct it points to may go; what its arg points to must stay).
 * Returns CONC_OK; CONC_INVALID for NULL b or cfg, no trip criterion, a rate
 * over 100, slow_rate_pct without slow_ns > 0, open_ns or probe_lease_ns
 * <= 0, probes 0 or > CONC_BREAKER_MAX_PROBES, a rate without window_size
 * and min_calls, a COUNT window smaller than min_calls, a TIME window whose window_ns is not a positive multiple
 * of window_size, an unknown window kind, an events channel whose element is
 * not a struct conc_breaker_event, or a NULL or misaligned buf when one is
 * needed; CONC_OVERFLOW if the buffer size overflows or bufsize is too small.
 * Does not allocate.  Not thread-safe: nothing else may use b meanwhile.
 */
CONC_NODISCARD static inline enum conc_status conc_breaker_init(struct conc_breaker *b,
								const struct conc_breaker_config *cfg,
								void *buf, size_t bufsize)
{
	if (!b || !conc__brk_config_ok(cfg))
		return CONC_INVALID;
	bool rates = cfg->failure_rate_pct || cfg->slow_rate_pct;
	size_t need = conc_breaker_buf_size(cfg);
	if (rates) {
		if (need == 0)
			return CONC_OVERFLOW;
		if (!buf || ((uintptr_t)buf & 7))
			return CONC_INVALID;
		if (bufsize < need)
			return CONC_OVERFLOW;
	}
	memset((void *)b, 0, sizeof *b);
	if (cfg->clock)
		b->clock = *cfg->clock;
	b->events = cfg->events;
	b->slow_ns = cfg->slow_rate_pct ? cfg->slow_ns : 0;
	b->window_ns = cfg->window_ns;
	b->bucket_ns = cfg->window_kind == CONC_BREAKER_WINDOW_TIME ? cfg->window_ns / cfg->window_size : 0;
	b->open_ns = cfg->open_ns;
	b->lease_ns = cfg->probe_lease_ns;
	b->consecutive = cfg->consecutive_failures;
	b->failure_pct = cfg->failure_rate_pct;
	b->slow_pct = cfg->slow_rate_pct;
	b->window_size = rates ? cfg->window_size : 0;
	b->min_calls = cfg->min_calls;
	b->probes = cfg->probes;
	b->window_kind = cfg->window_kind;
	b->rates = rates;
	b->start_time = cfg->slow_rate_pct != 0;
	b->t0 = conc_clock_now(&b->clock);
	atomic_init(&b->word, conc__brk_pack(CONC_BREAKER_CLOSED, false, 0, 0, 1));
	atomic_init(&b->open_until, INT64_MIN);
	atomic_init(&b->open_gen, 0);
	atomic_init(&b->last_admit, INT64_MIN);
	atomic_init(&b->cursor, 0);
	atomic_init(&b->swept, 0);
	atomic_init(&b->calls, 0);
	atomic_init(&b->failures, 0);
	atomic_init(&b->slow, 0);
	atomic_init(&b->consec, 0);
	atomic_init(&b->rejected, 0);
	atomic_init(&b->ignored, 0);
	atomic_init(&b->stale, 0);
	atomic_init(&b->transitions, 0);
	atomic_init(&b->dropped, 0);
	if (rates && cfg->window_kind == CONC_BREAKER_WINDOW_COUNT) {
		b->ring = (_Atomic(unsigned char) *)buf;
		for (uint32_t i = 0; i < cfg->window_size; i++)
			atomic_init(&b->ring[i], 0);
	} else if (rates) {
		b->buckets = (struct conc__breaker_bucket *)buf;
		/* Bucket i starts as the (empty) bucket of epoch i. */
		for (uint32_t i = 0; i < cfg->window_size; i++) {
			atomic_init(&b->buckets[i].epoch, (int64_t)i);
			atomic_init(&b->buckets[i].calls, 0);
			atomic_init(&b->buckets[i].failures, 0);
			atomic_init(&b->buckets[i].slow, 0);
		}
	}
	b->live = true;
	/* Whoever hands b to other threads publishes it (thread creation or a
	 * release store of their own). */
	return CONC_OK;
}

/* Tear down a breaker made by conc_breaker_init.  Only when no call on it can
 * still run; later calls return CONC_INVALID while its memory is left alone.
 * Returns CONC_OK, or CONC_INVALID for NULL, a dead breaker, or one from
 * conc_breaker_new (use conc_breaker_free). */
CONC_NODISCARD static inline enum conc_status conc_breaker_destroy(struct conc_breaker *b)
{
	if (!b || !b->live || b->owned)
		return CONC_INVALID;
	b->live = false;
	return CONC_OK;
}

/*
 * Allocate (CONC_ALIGNED_ALLOC: breaker and window in one block) and
 * initialise a breaker; *out is set only on success.  Returns CONC_OK,
 * CONC_INVALID or CONC_OVERFLOW (as conc_breaker_init), CONC_NOMEM.  Free
 * with conc_breaker_free.
 */
CONC_NODISCARD static inline enum conc_status conc_breaker_new(struct conc_breaker **out,
							       const struct conc_breaker_config *cfg)
{
	if (!out || !conc__brk_config_ok(cfg))
		return CONC_INVALID;
	bool rates = cfg->failure_rate_pct || cfg->slow_rate_pct;
	size_t win = conc_breaker_buf_size(cfg);
	if (rates && win == 0)
		return CONC_OVERFLOW;
	size_t head = (sizeof(struct conc_breaker) + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	if (win > SIZE_MAX - head - CONC_CACHELINE)
		return CONC_OVERFLOW;
	size_t total = (head + win + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	unsigned char *mem = (unsigned char *)CONC_ALIGNED_ALLOC(CONC_CACHELINE, total);
	if (!mem)
		return CONC_NOMEM;
	struct conc_breaker *b = (struct conc_breaker *)mem;
	enum conc_status s = conc_breaker_init(b, cfg, rates ? mem + head : NULL, win);
	CONC_ASSERT(s == CONC_OK);
	(void)s;
	b->owned = true;
	*out = b;
	return CONC_OK;
}

/* Out of line, as conc__chan_release (no free-of-non-heap warning when the
 * caller's breaker is on the stack). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline, unused))
#endif
static void conc__breaker_release(struct conc_breaker *b)
{
	CONC_FREE(b);
}

/* Free a breaker from conc_breaker_new, under conc_breaker_destroy's rules.
 * NULL is a no-op returning CONC_OK; CONC_INVALID for a breaker from init. */
static inline enum conc_status conc_breaker_free(struct conc_breaker *b)
{
	if (!b)
		return CONC_OK;
	if (!b->live || !b->owned)
		return CONC_INVALID;
	b->live = false;
	conc__breaker_release(b);
	return CONC_OK;
}

/* ---------------------------------------------------------- transitions */

static inline void conc__brk_emit(struct conc_breaker *b, uint64_t from, uint64_t to, int64_t at,
				  enum conc_breaker_reason why)
{
	/* Relaxed counters: statistics only. */
	atomic_fetch_add_explicit(&b->transitions, 1, memory_order_relaxed);
	if (!b->events)
		return;
	struct conc_breaker_event ev;
	memset(&ev, 0, sizeof ev);
	ev.from = conc__brk_public_state(from);
	ev.to = conc__brk_public_state(to);
	ev.generation = conc__brk_gen(to);
	ev.at_ns = at;
	ev.reason = why;
	if (conc_chan_try_send(b->events, &ev) != CONC_OK)
		atomic_fetch_add_explicit(&b->dropped, 1, memory_order_relaxed);
}

/* Publish when OPEN generation gen may end: open_ns after `now`, or later if
 * someone published later already. */
static inline void conc__brk_publish_open(struct conc_breaker *b, uint64_t gen, int64_t now)
{
	conc__brk_max(&b->open_until, conc__brk_add_sat(now, b->open_ns));
	uint64_t cur = atomic_load_explicit(&b->open_gen, memory_order_relaxed);
	/* O1 release: open_until above is written before the tag; pairs with
	 * O2 in conc__brk_open_until(). */
	while (cur < gen && !atomic_compare_exchange_weak_explicit(&b->open_gen, &cur, gen, memory_order_release,
								    memory_order_relaxed))
		;
}

/* When OPEN generation gen ends; publishes it (from now) if its tripper has
 * not yet. */
static inline int64_t conc__brk_open_until(struct conc_breaker *b, uint64_t gen, int64_t now)
{
	/* O2 acquire: pairs with O1; open_until read below is then at least the
	 * value published with gen. */
	if (atomic_load_explicit(&b->open_gen, memory_order_acquire) < gen)
		conc__brk_publish_open(b, gen, now);
	return atomic_load_explicit(&b->open_until, memory_order_relaxed);
}

/*
 * Move from w (not forced) to OPEN with a new generation, if the word is
 * still in w's generation and state (exact: still exactly w).  The winner
 * empties the window (when leaving CLOSED), publishes open_until and sends
 * the event.  Returns true if this call made the change.
 */
static inline bool conc__brk_trip(struct conc_breaker *b, uint64_t w, int64_t now, enum conc_breaker_reason why,
				  bool exact)
{
	uint64_t gen = conc__brk_gen(w), first = w;
	unsigned state = conc__brk_state(w);
	for (;;) {
		if (conc__brk_gen(w) != gen || conc__brk_state(w) != state || conc__brk_forced(w) ||
		    (exact && w != first))
			return false;
		uint64_t nw = conc__brk_pack(CONC_BREAKER_OPEN, false, 0, 0, conc__brk_next_gen(gen));
		/* T1 acq_rel: the state change; acquire orders what this thread
		 * does next after everything the word's earlier writers did
		 * (last_admit, see A1); release pairs with the acquire loads of
		 * the word in allow and done. */
		if (atomic_compare_exchange_weak_explicit(&b->word, &w, nw, memory_order_acq_rel,
							  memory_order_acquire)) {
			conc__brk_publish_open(b, conc__brk_gen(nw), now);
			if (state == CONC_BREAKER_CLOSED)
				conc__brk_drain(b);
			conc__brk_emit(b, w, nw, now, why);
			return true;
		}
	}
}

/* Set the word to `nw_state`/`forced` with a new generation, whatever it was
 * (manual calls).  Returns the old word. */
static inline uint64_t conc__brk_force(struct conc_breaker *b, unsigned nw_state, bool forced, uint64_t *nwp)
{
	/* Acquire: see T1. */
	uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
	for (;;) {
		uint64_t nw = conc__brk_pack(nw_state, forced, 0, 0, conc__brk_next_gen(conc__brk_gen(w)));
		/* T1 acq_rel, as in conc__brk_trip(). */
		if (atomic_compare_exchange_weak_explicit(&b->word, &w, nw, memory_order_acq_rel,
							  memory_order_acquire)) {
			*nwp = nw;
			return w;
		}
	}
}

/* -------------------------------------------------------------- allow */

/*
 * Ask to make a call.  Returns CONC_OK with t filled in (report it with
 * conc_breaker_done, exactly once), CONC_REJECTED when the breaker refuses
 * (t->retry_after_ns says how long until the state may change; t->state
 * why), or CONC_INVALID (NULL b or t, destroyed breaker).
 * In OPEN, the first call at or after open_ns moves the breaker to
 * HALF_OPEN and is admitted as its first probe.  In HALF_OPEN, a call that
 * finds every permit taken checks the probes' lease and, if it ran out,
 * reopens the breaker (then refuses).  Lock-free, never blocks, any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_breaker_allow(struct conc_breaker *b,
								 struct conc_breaker_ticket *t)
{
	if (CONC__UNLIKELY(!b || !t || !b->live))
		return CONC_INVALID;
	/* A1 acquire: pairs with T1/A2 (the CAS of whoever changed the word
	 * last), so last_admit read below covers every probe counted in w. */
	uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
	t->probe = false;
	t->retry_after_ns = 0;
	if (CONC__LIKELY(conc__brk_state(w) == CONC_BREAKER_CLOSED)) {
		t->generation = conc__brk_gen(w);
		t->start_ns = b->start_time ? conc_clock_now(&b->clock) : 0;
		t->state = conc__brk_public_state(w);
		return CONC_OK;
	}
	int64_t now = conc_clock_now(&b->clock);
	for (;;) {
		unsigned state = conc__brk_state(w);
		uint64_t gen = conc__brk_gen(w);
		t->state = conc__brk_public_state(w);
		if (state == CONC_BREAKER_CLOSED) {
			t->generation = gen;
			t->start_ns = b->start_time ? now : 0;
			return CONC_OK;
		}
		if (state == CONC_BREAKER_OPEN && conc__brk_forced(w)) {
			t->retry_after_ns = CONC_BREAKER_RETRY_NEVER;
			break;
		}
		if (state == CONC_BREAKER_OPEN) {
			int64_t until = conc__brk_open_until(b, gen, now);
			if (now < until) {
				t->retry_after_ns = until - now;
				break;
			}
			/* Half-open, with this call as its first probe.  last_admit
			 * is raised before the CAS (see A2). */
			conc__brk_max(&b->last_admit, now);
			uint64_t nw = conc__brk_pack(CONC_BREAKER_HALF_OPEN, false, 1, 0, conc__brk_next_gen(gen));
			/* A2 acq_rel: release publishes last_admit with the probe
			 * count (pairs with A1); acquire as T1. */
			if (atomic_compare_exchange_strong_explicit(&b->word, &w, nw, memory_order_acq_rel,
								    memory_order_acquire)) {
				conc__brk_emit(b, w, nw, now, CONC_BREAKER_REASON_OPEN_ELAPSED);
				t->generation = conc__brk_gen(nw);
				t->probe = true;
				t->start_ns = now;
				t->state = CONC_BREAKER_HALF_OPEN;
				return CONC_OK;
			}
			continue;
		}
		/* HALF_OPEN */
		uint32_t adm = conc__brk_adm(w);
		if (adm < b->probes) {
			conc__brk_max(&b->last_admit, now);
			/* A2 acq_rel, as above. */
			if (atomic_compare_exchange_weak_explicit(&b->word, &w, w + ((uint64_t)1 << CONC__BRK_ADM_SHIFT),
								  memory_order_acq_rel, memory_order_acquire)) {
				t->generation = gen;
				t->probe = true;
				t->start_ns = now;
				return CONC_OK;
			}
			continue;
		}
		/* Every permit taken (and not all succeeded, or it would be
		 * CLOSED): has the newest probe's lease run out? */
		int64_t expiry = conc__brk_add_sat(atomic_load_explicit(&b->last_admit, memory_order_relaxed), b->lease_ns);
		if (now >= expiry) {
			if (!conc__brk_trip(b, w, now, CONC_BREAKER_REASON_PROBE_LEASE_EXPIRED, true)) {
				w = atomic_load_explicit(&b->word, memory_order_acquire); /* A1, as above */
				continue;
			}
			t->state = CONC_BREAKER_OPEN;
			t->retry_after_ns = b->open_ns;
			break;
		}
		t->retry_after_ns = expiry - now;
		break;
	}
	t->generation = 0;
	t->start_ns = 0;
	atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed); /* statistics */
	return CONC_REJECTED;
}

/* --------------------------------------------------------------- done */

/* The bucket index of time now (now before init counts as 0). */
static inline int64_t conc__brk_epoch(const struct conc_breaker *b, int64_t now)
{
	return now <= b->t0 ? 0 : (now - b->t0) / b->bucket_ns;
}

/* Give bucket k its new epoch e (if it still has epoch old) and take its
 * counts out of the totals. */
static inline void conc__brk_recycle(struct conc_breaker *b, struct conc__breaker_bucket *k, int64_t old, int64_t e)
{
	/* Relaxed: the epoch CAS only elects the recycler; the counts move by
	 * exchange, each unit subtracted once. */
	if (!atomic_compare_exchange_strong_explicit(&k->epoch, &old, e, memory_order_relaxed, memory_order_relaxed))
		return;
	int64_t c = atomic_exchange_explicit(&k->calls, 0, memory_order_relaxed);
	int64_t f = atomic_exchange_explicit(&k->failures, 0, memory_order_relaxed);
	int64_t s = atomic_exchange_explicit(&k->slow, 0, memory_order_relaxed);
	if (c)
		atomic_fetch_sub_explicit(&b->calls, c, memory_order_relaxed);
	if (f)
		atomic_fetch_sub_explicit(&b->failures, f, memory_order_relaxed);
	if (s)
		atomic_fetch_sub_explicit(&b->slow, s, memory_order_relaxed);
}

/* Record one closed-state outcome in the window; returns whether the rates
 * should be judged now: the outcome was bad, the window just reached
 * min_calls, or (TIME) always, since old calls sliding out can raise a rate
 * at any report.  A COUNT window's rates only fall on a good report once it
 * holds min_calls.  All relaxed: counters publishing nothing (see the top). */
static inline bool conc__brk_record(struct conc_breaker *b, int64_t now, bool failed, bool slow)
{
	int64_t dc, df, ds;
	if (b->window_kind == CONC_BREAKER_WINDOW_COUNT) {
		uint64_t pos = atomic_fetch_add_explicit(&b->cursor, 1, memory_order_relaxed) % b->window_size;
		unsigned v = 1u | (failed ? 2u : 0u) | (slow ? 4u : 0u);
		unsigned old = atomic_exchange_explicit(&b->ring[pos], (unsigned char)v, memory_order_relaxed);
		dc = 1 - ((old & 1u) != 0);
		df = (int64_t)failed - ((old & 2u) != 0);
		ds = (int64_t)slow - ((old & 4u) != 0);
	} else {
		int64_t e = conc__brk_epoch(b, now);
		int64_t seen = atomic_load_explicit(&b->swept, memory_order_relaxed);
		int64_t n = (int64_t)b->window_size;
		/* Retried while this epoch is newer than the one swept: a report
		 * of an older epoch that won the CAS must not leave this one
		 * judging totals that still hold buckets out of its window. */
		bool sweep = false;
		while (e > seen && !sweep)
			sweep = atomic_compare_exchange_weak_explicit(&b->swept, &seen, e, memory_order_relaxed,
								      memory_order_relaxed);
		if (sweep) {
			/* Empty every bucket that slid out of the window
			 * (epoch <= e - n), giving it its epoch in the window. */
			for (int64_t i = 0; i < n; i++) {
				struct conc__breaker_bucket *k = &b->buckets[i];
				int64_t old = atomic_load_explicit(&k->epoch, memory_order_relaxed);
				if (old <= e - n && e >= i)
					conc__brk_recycle(b, k, old, e - (e - i) % n);
			}
		}
		struct conc__breaker_bucket *k = &b->buckets[e % n];
		int64_t old = atomic_load_explicit(&k->epoch, memory_order_relaxed);
		while (old < e) {
			conc__brk_recycle(b, k, old, e);
			old = atomic_load_explicit(&k->epoch, memory_order_relaxed);
		}
		/* old > e: a newer report recycled it first; count this one there
		 * (it is at most a bucket old). */
		atomic_fetch_add_explicit(&k->calls, 1, memory_order_relaxed);
		if (failed)
			atomic_fetch_add_explicit(&k->failures, 1, memory_order_relaxed);
		if (slow)
			atomic_fetch_add_explicit(&k->slow, 1, memory_order_relaxed);
		dc = 1;
		df = failed;
		ds = slow;
	}
	bool judge = failed || slow || b->window_kind == CONC_BREAKER_WINDOW_TIME;
	if (dc) {
		int64_t c = atomic_fetch_add_explicit(&b->calls, dc, memory_order_relaxed) + dc;
		judge = judge || c == (int64_t)b->min_calls;
	}
	if (df)
		atomic_fetch_add_explicit(&b->failures, df, memory_order_relaxed);
	if (ds)
		atomic_fetch_add_explicit(&b->slow, ds, memory_order_relaxed);
	return judge;
}

/* A total, read on its own (relaxed: a statistic); negative only while
 * reports race, read as 0. */
static inline uint64_t conc__brk_total(_Atomic(int64_t) *a)
{
	int64_t v = atomic_load_explicit(a, memory_order_relaxed);
	return v < 0 ? 0 : (uint64_t)v;
}

static inline void conc__brk_judge(struct conc_breaker *b, uint64_t w, int64_t now)
{
	uint64_t calls = conc__brk_total(&b->calls);
	if (calls == 0 || calls < b->min_calls)
		return;
	if (b->failure_pct && conc__brk_total(&b->failures) * 100 >= (uint64_t)b->failure_pct * calls)
		(void)conc__brk_trip(b, w, now, CONC_BREAKER_REASON_FAILURE_RATE, false);
	else if (b->slow_pct && conc__brk_total(&b->slow) * 100 >= (uint64_t)b->slow_pct * calls)
		(void)conc__brk_trip(b, w, now, CONC_BREAKER_REASON_SLOW_RATE, false);
}

static inline void conc__brk_probe_done(struct conc_breaker *b, uint64_t w, uint64_t gen, bool bad, bool slow,
					int64_t now)
{
	if (bad) {
		(void)conc__brk_trip(b, w, now, slow ? CONC_BREAKER_REASON_PROBE_SLOW : CONC_BREAKER_REASON_PROBE_FAILED,
				     false);
		return;
	}
	for (;;) {
		if (conc__brk_gen(w) != gen || conc__brk_state(w) != CONC_BREAKER_HALF_OPEN) {
			atomic_fetch_add_explicit(&b->stale, 1, memory_order_relaxed); /* statistics */
			return;
		}
		uint64_t nw;
		bool closes = conc__brk_suc(w) + 1 >= b->probes;
		if (closes)
			nw = conc__brk_pack(CONC_BREAKER_CLOSED, false, 0, 0, conc__brk_next_gen(gen));
		else
			nw = w + ((uint64_t)1 << CONC__BRK_SUC_SHIFT);
		/* T1 acq_rel, as in conc__brk_trip(). */
		if (atomic_compare_exchange_weak_explicit(&b->word, &w, nw, memory_order_acq_rel, memory_order_acquire)) {
			if (closes) {
				conc__brk_drain(b);
				conc__brk_emit(b, w, nw, now, CONC_BREAKER_REASON_PROBES_SUCCEEDED);
			}
			return;
		}
	}
}

/*
 * Report how the call of ticket t went: CONC_BREAKER_SUCCESS, _FAILURE, or
 * _IGNORED (the caller gave up on its own: canceled, its own deadline; never
 * counted; an ignored probe gives its permit back).  A call is slow when it
 * took slow_ns or more (from t->start_ns, on the breaker's clock; only with
 * slow_rate_pct).  A report from an older generation than the breaker's
 * changes nothing (counted in metrics.stale).  In CLOSED, a failure may trip
 * the breaker; in HALF_OPEN, a probe's report may close or reopen it.
 * Returns CONC_OK (also for an ignored or stale report), or CONC_INVALID for
 * NULL b or t, a ticket already reported or never admitted, an unknown
 * outcome, or a destroyed breaker.  Marks t reported.  Lock-free, any thread.
 */
static inline enum conc_status conc_breaker_done(struct conc_breaker *b, struct conc_breaker_ticket *t,
						 enum conc_breaker_outcome outcome)
{
	if (CONC__UNLIKELY(!b || !t || !b->live || t->generation == 0))
		return CONC_INVALID;
	if (CONC__UNLIKELY(outcome != CONC_BREAKER_SUCCESS && outcome != CONC_BREAKER_FAILURE &&
			   outcome != CONC_BREAKER_IGNORED))
		return CONC_INVALID;
	uint64_t gen = t->generation;
	bool probe = t->probe;
	t->generation = 0;
	/* A1 acquire, as in allow. */
	uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
	/* Statistics counters below are relaxed. */
	if (conc__brk_gen(w) != gen) {
		atomic_fetch_add_explicit(&b->stale, 1, memory_order_relaxed);
		return CONC_OK;
	}
	if (outcome == CONC_BREAKER_IGNORED) {
		atomic_fetch_add_explicit(&b->ignored, 1, memory_order_relaxed);
		/* Give the probe's permit back. */
		while (probe && conc__brk_gen(w) == gen && conc__brk_state(w) == CONC_BREAKER_HALF_OPEN &&
		       /* A2 acq_rel: a permit count change, as in allow. */
		       !atomic_compare_exchange_weak_explicit(&b->word, &w, w - ((uint64_t)1 << CONC__BRK_ADM_SHIFT),
							      memory_order_acq_rel, memory_order_acquire))
			;
		return CONC_OK;
	}
	if (conc__brk_forced(w))
		return CONC_OK;
	bool failed = outcome == CONC_BREAKER_FAILURE;
	bool need_now = probe || b->start_time || (b->rates && b->window_kind == CONC_BREAKER_WINDOW_TIME);
	int64_t now = need_now ? conc_clock_now(&b->clock) : 0;
	bool slow = b->slow_ns > 0 && now - t->start_ns >= b->slow_ns;
	if (probe) {
		conc__brk_probe_done(b, w, gen, failed || slow, !failed && slow, now);
		return CONC_OK;
	}
	bool trip = false;
	if (failed) {
		/* Relaxed: a counter; the trip itself is the word's CAS. */
		uint32_t c = atomic_fetch_add_explicit(&b->consec, 1, memory_order_relaxed) + 1;
		trip = b->consecutive && c >= b->consecutive;
	} else if (atomic_load_explicit(&b->consec, memory_order_relaxed) != 0) {
		atomic_store_explicit(&b->consec, 0, memory_order_relaxed);
	}
	if (trip) {
		if (!need_now)
			now = conc_clock_now(&b->clock);
		(void)conc__brk_trip(b, w, now, CONC_BREAKER_REASON_CONSECUTIVE_FAILURES, false);
		return CONC_OK;
	}
	if (b->rates && conc__brk_record(b, now, failed, slow)) {
		if (!need_now)
			now = conc_clock_now(&b->clock);
		conc__brk_judge(b, w, now);
	}
	return CONC_OK;
}

/* ---------------------------------------------------------------- call */

/*
 * Run fn(ctx, arg) under the breaker: allow, call (no lock held), done.
 * fn returns 0 (CONC_OK) for success, any other int for failure.  Mapping
 * to outcomes: 0 is SUCCESS; CONC_CANCELED is IGNORED (cancellation is
 * never the service's fault); any other non-zero is IGNORED if ctx is done
 * when fn returns (the caller's own deadline or cancel: fn's CONC_TIMEDOUT
 * then is the caller's), FAILURE otherwise.
 * Returns fn's result; CONC_REJECTED if refused (fn not called);
 * conc_ctx_err(ctx) if ctx was already done (fn not called, nothing taken);
 * CONC_INVALID for NULL b or fn.  info (may be NULL) receives the ticket as
 * allow filled it (retry_after_ns on refusal).  ctx may be NULL.  Blocks
 * only as long as fn does.
 */
CONC_NODISCARD static inline int conc_breaker_call(struct conc_breaker *b, int (*fn)(struct conc_ctx *ctx, void *arg),
						   void *arg, struct conc_ctx *ctx, struct conc_breaker_ticket *info)
{
	if (!b || !fn)
		return CONC_INVALID;
	if (ctx) {
		enum conc_status e = conc_ctx_err(ctx);
		if (e != CONC_OK)
			return (int)e;
	}
	struct conc_breaker_ticket t;
	enum conc_status s = conc_breaker_allow(b, &t);
	if (info)
		*info = t;
	if (s != CONC_OK)
		return (int)s;
	int r = fn(ctx, arg);
	enum conc_breaker_outcome o = CONC_BREAKER_SUCCESS;
	if (r != 0)
		o = (r == (int)CONC_CANCELED || (ctx && conc_ctx_err(ctx) != CONC_OK)) ? CONC_BREAKER_IGNORED
											 : CONC_BREAKER_FAILURE;
	(void)conc_breaker_done(b, &t, o);
	return r;
}

/* ------------------------------------------------------------- manual */

/* Pin the breaker OPEN (every allow refused, retry_after NEVER) until
 * conc_breaker_reset or force_closed.  New generation; outstanding tickets
 * go stale.  Returns CONC_OK or CONC_INVALID.  Lock-free, any thread. */
static inline enum conc_status conc_breaker_force_open(struct conc_breaker *b)
{
	if (!b || !b->live)
		return CONC_INVALID;
	uint64_t nw;
	uint64_t w = conc__brk_force(b, CONC_BREAKER_OPEN, true, &nw);
	conc__brk_emit(b, w, nw, conc_clock_now(&b->clock), CONC_BREAKER_REASON_FORCED_OPEN);
	return CONC_OK;
}

/* Pin the breaker CLOSED (every allow admitted, nothing recorded, never
 * trips) until conc_breaker_reset or force_open.  New generation.  Returns
 * CONC_OK or CONC_INVALID.  Lock-free, any thread. */
static inline enum conc_status conc_breaker_force_closed(struct conc_breaker *b)
{
	if (!b || !b->live)
		return CONC_INVALID;
	uint64_t nw;
	uint64_t w = conc__brk_force(b, CONC_BREAKER_CLOSED, true, &nw);
	conc__brk_drain(b);
	conc__brk_emit(b, w, nw, conc_clock_now(&b->clock), CONC_BREAKER_REASON_FORCED_CLOSED);
	return CONC_OK;
}

/* Back to plain CLOSED with an empty window and a new generation, from any
 * state (outstanding tickets go stale).  Returns CONC_OK or CONC_INVALID.
 * Lock-free, any thread. */
static inline enum conc_status conc_breaker_reset(struct conc_breaker *b)
{
	if (!b || !b->live)
		return CONC_INVALID;
	uint64_t nw;
	uint64_t w = conc__brk_force(b, CONC_BREAKER_CLOSED, false, &nw);
	conc__brk_drain(b);
	conc__brk_emit(b, w, nw, conc_clock_now(&b->clock), CONC_BREAKER_REASON_RESET);
	return CONC_OK;
}

/* ------------------------------------------------------------ queries */

/* The state now (a snapshot); CONC_BREAKER_CLOSED for NULL.  Does not move
 * an OPEN breaker to HALF_OPEN (only allow does). */
static inline enum conc_breaker_state conc_breaker_state(struct conc_breaker *b)
{
	if (!b)
		return CONC_BREAKER_CLOSED;
	/* Relaxed: a snapshot. */
	return conc__brk_public_state(atomic_load_explicit(&b->word, memory_order_relaxed));
}

/* Fill *m with a snapshot of b's state and counters (each field read on its
 * own, relaxed).  Returns CONC_OK or CONC_INVALID (NULL). */
static inline enum conc_status conc_breaker_metrics(struct conc_breaker *b, struct conc_breaker_metrics *m)
{
	if (!b || !m || !b->live)
		return CONC_INVALID;
	uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
	m->state = conc__brk_public_state(w);
	m->generation = conc__brk_gen(w);
	m->probes_admitted = conc__brk_state(w) == CONC_BREAKER_HALF_OPEN ? conc__brk_adm(w) : 0;
	m->probes_succeeded = conc__brk_state(w) == CONC_BREAKER_HALF_OPEN ? conc__brk_suc(w) : 0;
	m->consecutive_failures = atomic_load_explicit(&b->consec, memory_order_relaxed);
	m->window_calls = conc__brk_total(&b->calls);
	m->window_failures = conc__brk_total(&b->failures);
	m->window_slow = conc__brk_total(&b->slow);
	m->rejected = atomic_load_explicit(&b->rejected, memory_order_relaxed);
	m->ignored = atomic_load_explicit(&b->ignored, memory_order_relaxed);
	m->stale = atomic_load_explicit(&b->stale, memory_order_relaxed);
	m->transitions = atomic_load_explicit(&b->transitions, memory_order_relaxed);
	m->events_dropped = atomic_load_explicit(&b->dropped, memory_order_relaxed);
	return CONC_OK;
}

/* A name for a state ("closed", "open", "half-open", "forced-open",
 * "forced-closed"); never NULL. */
static inline const char *conc_breaker_state_name(enum conc_breaker_state s)
{
	switch (s) {
	case CONC_BREAKER_CLOSED:        return "closed";
	case CONC_BREAKER_OPEN:          return "open";
	case CONC_BREAKER_HALF_OPEN:     return "half-open";
	case CONC_BREAKER_FORCED_OPEN:   return "forced-open";
	case CONC_BREAKER_FORCED_CLOSED: return "forced-closed";
	default:                         return "?";
	}
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_BREAKER_H */
