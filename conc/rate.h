/* SPDX-License-Identifier: MIT */
#ifndef CONC_RATE_H
#define CONC_RATE_H

/*
 * conc/rate.h: a lock-free rate limiter (the generic cell rate algorithm)
 * and a ticker without a thread.
 *
 * RATE LIMITER.  A limiter admits `events` per `period_ns` on average, and up
 * to `burst` at once after a quiet spell: a token bucket of `burst` tokens
 * that refills one token every T = period_ns / events nanoseconds.
 *
 *   struct conc_rate l;
 *   conc_rate_init(&l, 5, 1000000000, 3, NULL);    // 5 per second, burst 3
 *   if (conc_rate_allow(&l) == CONC_OK) serve();  // never blocks
 *   conc_rate_wait_n_until(&l, 1, d, ctx);        // waits its turn, or fails at once
 *
 * Algorithm: GCRA (ITU-T I.371's virtual scheduling), with the bucket kept as
 * one time Z in one atomic word, updated by compare-and-swap.  Z is the time,
 * on the limiter's clock, at which the bucket would have been empty had it
 * filled at the steady rate ever since:
 *
 *   tokens(now)   = min(burst, floor((now - Z) / T))
 *   take n at now: Z' = max(Z, now - burst*T) + n*T, allowed iff Z' <= now
 *
 * which is GCRA's theoretical arrival time less the bucket: tat = Z + burst*T
 * (so the classic tolerance is tau = (burst - 1)*T: a request conforms when
 * now >= tat - tau).  Keeping Z rather than tat means an admission never
 * moves the word past `now`: a period of INT64_MAX ns with burst 1 works, it
 * admits one event and then none for 292 years.  Every step is integer
 * arithmetic with overflow checks; nothing accumulates, so the admitted rate
 * does not drift.
 *
 * T is a whole number of nanoseconds: period_ns / events, rounded up when it
 * does not divide, so the limiter never admits more than the configured rate
 * (it errs low by less than 1/T: under 0.01% below a million per second).
 * More than one event per nanosecond is CONC_INVALID (count in larger units).
 *
 * Stale clock readings never create tokens: `now` is read once, before the
 * CAS loop; a thread whose reading is older than one that already moved Z
 * sees fewer tokens, never more, and Z never moves backwards for an
 * admission (max(Z, ...) + n*T > Z).  A clock that goes backwards likewise
 * only withholds tokens.  Any request admitted at `now` leaves Z' <= now, so
 * from init (Z = now0 - burst*T) to any time t the events admitted number at
 * most burst + (t - now0) / T: that bound is exact.
 *
 * Reservations (conc_rate_reserve, and conc_rate_wait_n_until on top of it)
 * take tokens that have not accrued yet: Z may then run ahead of now, and the
 * reservation says how long to wait.  conc_rate_cancel gives the tokens back
 * only while nothing was taken after them (Z is still where this reservation
 * left it) and the reservation's time has not come; otherwise it keeps them
 * (CONC_BUSY).  Giving back tokens that a later reservation was scheduled
 * behind would let a newcomer take the same slot as that later reservation:
 * two events at one instant with burst 1.  (Go's x/time/rate gives back a
 * part instead; in GCRA terms that part is always zero in exactly the cases
 * this rule refuses.)
 *
 * Changing the rate and burst (conc_rate_set) keeps the tokens in the bucket,
 * capped at the new burst, as Go's SetLimit/SetBurst do: it never creates
 * tokens (lowering the rate does not turn waiting time into tokens; raising
 * the burst lets the extra tokens accrue at the rate, not appear at once).
 * Tokens owed by reservations stay owed, repriced at the new rate.  The
 * configuration (T, burst) lives in a two-copy latch (Linux's
 * seqcount_latch): readers never wait, and always see one whole
 * configuration, old or new, never a mix.  set_rate publishes the new
 * configuration, then rescales Z.  An admission that overlaps a set_rate may
 * be priced under the configuration it read against a Z of the other scale;
 * that is the only imprecision, it touches only calls that overlap the
 * set_rate, and it is bounded by a burst or two of the configurations
 * involved per set_rate (lock-free admission and a rescale of the one word
 * cannot be one atomic step without a second word in the CAS).
 *
 * Progress: allow, allow_n, reserve, cancel and tokens are lock-free (a CAS
 * fails only because another call succeeded; a latch read retries only
 * because a set_rate completed).  set_rate takes a short lock against other
 * set_rates only.  wait_n_until blocks, parked (no CPU), cancelable by ctx.
 *
 * TICKER.  struct conc_ticker is Go's time.Ticker without a goroutine: a
 * start time and a period on the injected clock, and the index of the next
 * tick, which whoever takes the tick advances by CAS.  Tick k is at exactly
 * start + k*period (no drift from late takes).  A receiver
 *   - selects on it: conc_ticker_case(t) is a conc_select_timer case for the
 *     next tick, which mixes with channel cases in conc_select; when that case
 *     fires, conc_ticker_take(t, &missed) takes the tick;
 *   - or blocks on it: conc_ticker_wait_until(t, &missed, d, ctx).
 * A slow receiver gets the tick that came due first and is told how many
 * more came due meanwhile (missed); those are dropped, like Go's ticker
 * channel of capacity 1, and the next tick is the first one after now.
 * Several receivers may share a ticker: each tick is taken by exactly one of
 * them (the CAS on the index), a loser sees CONC_WOULDBLOCK and waits for the
 * next.  Reset and stop wake receivers blocked in conc_ticker_wait_until.  A
 * select case is a timer fixed when it is built: a select already waiting
 * does not see a reset or stop made meanwhile, and wakes at the tick it was
 * built for (then take says what happened: the new tick's index, or
 * CONC_CLOSED).  A loop that rebuilds the case each time follows a reset
 * from its next round; to follow one at once, select on a channel the
 * resetting thread sends to as well.
 *
 * The ticker's word is a reset generation (16 bits) and the next tick's index
 * (48 bits); (start, period) live in two slots picked by the generation's
 * low bit, so a take reads a consistent pair and a reset between its read and
 * its CAS makes the CAS fail.  An index that reaches 2^47 is rebased (a new
 * generation starting at that tick) under the reset lock.
 *
 * Clocks: both take a const struct conc_clock * at init (copied; NULL is
 * CLOCK_MONOTONIC).  All decisions use that clock; real waiting turns a span
 * on it into a real deadline (conc_deadline_in_ns), so with a test clock that
 * a test moves by hand, a wait lasts as long on the real clock as the span it
 * computed.
 *
 * Ownership: both live in caller memory; nothing is allocated.  Destroy only
 * when no call can still run on the object.
 */

#include "select.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================== rate limiter */

struct conc__rate_cfg {
	_Atomic(int64_t) t;      /* ns per token, >= 1 */
	_Atomic(uint32_t) burst; /* >= 1 */
};

struct conc_rate {
	/* The bucket (see the header comment).  Written by every admission. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(int64_t) z;
	/* The configuration latch: seq's low bit picks the copy readers use;
	 * set_rate writes the other.  Written by set_rate only. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) seq;
	struct conc__rate_cfg cfg[2];
	struct conc_lock lock; /* serialises set_rate */
	struct conc_clock clk; /* fixed at init */
};

/* What an allow_n saw.  All spans are on the limiter's clock. */
struct conc_rate_info {
	int64_t retry_after_ns; /* 0 if admitted; else when the same call would be */
	int64_t reset_after_ns; /* until the bucket is full again */
	uint64_t remaining;     /* tokens left now, after this call */
	uint32_t limit;         /* the burst */
};

/* A reservation of n tokens (conc_rate_reserve).  The public fields are for
 * the caller to read; the conc__ ones belong to the limiter. */
struct conc_rate_reservation {
	uint64_t n;       /* tokens reserved */
	int64_t delay_ns; /* how long to wait, from the reservation, before acting */
	int64_t at_ns;    /* when to act, on the limiter's clock */
	struct conc_rate *conc__l; /* NULL once canceled */
	int64_t conc__z;           /* Z just after this reservation */
	uint64_t conc__cost;       /* n*T */
	uint64_t conc__version;    /* configuration it was priced under */
};

/* ------------------------------------------------------------ arithmetic */

/* a*b, or false if it does not fit in uint64_t. */
static inline bool conc__rate_mul(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return false;
	*out = a * b;
	return true;
}

/* a + d for a signed time a and an unsigned span d, or false if the result
 * leaves int64_t.  (uint64_t arithmetic is modulo 2^64, so the sum's bits
 * are right whenever the true sum fits.) */
static inline bool conc__rate_add(int64_t a, uint64_t d, int64_t *out)
{
	if (d > (uint64_t)INT64_MAX - (uint64_t)a) /* INT64_MAX - a, exact */
		return false;
	*out = (int64_t)((uint64_t)a + d);
	return true;
}

/* a - d, saturating at INT64_MIN. */
static inline int64_t conc__rate_sub_sat(int64_t a, uint64_t d)
{
	if (d > (uint64_t)a - (uint64_t)INT64_MIN) /* a - INT64_MIN, exact */
		return INT64_MIN;
	return (int64_t)((uint64_t)a - d);
}

/* b - a for a <= b, exact as uint64_t. */
static inline uint64_t conc__rate_span(int64_t a, int64_t b)
{
	return (uint64_t)b - (uint64_t)a;
}

static inline int64_t conc__rate_clamp(uint64_t v)
{
	return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* floor(a*b/c) (round_up false) or ceil(a*b/c), saturating at UINT64_MAX;
 * c > 0.  A 128-bit product from 32-bit halves, then long division: only
 * set_rate uses it, so plainness beats speed. */
static inline uint64_t conc__rate_muldiv(uint64_t a, uint64_t b, uint64_t c, bool round_up)
{
	uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
	uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
	uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
	uint64_t lo = (mid << 32) | (p00 & 0xffffffffu);
	uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
	if (hi >= c)
		return UINT64_MAX; /* the quotient needs more than 64 bits */
	uint64_t q = 0, r = hi;
	for (int i = 63; i >= 0; i--) {
		bool carry = r >> 63;
		r = (r << 1) | ((lo >> i) & 1u);
		q <<= 1;
		if (carry || r >= c) {
			r -= c; /* modulo 2^64: exact, the true remainder is < c */
			q |= 1u;
		}
	}
	if (round_up && r != 0)
		return q == UINT64_MAX ? q : q + 1;
	return q;
}

/* T for events per period_ns (rounded up), or 0 if the input is bad. */
static inline int64_t conc__rate_interval(uint64_t events, int64_t period_ns)
{
	if (events == 0 || period_ns <= 0 || events > (uint64_t)period_ns)
		return 0;
	uint64_t p = (uint64_t)period_ns;
	return (int64_t)(p / events + (p % events != 0));
}

/* --------------------------------------------------- configuration latch */

/* Read a whole configuration; returns the latch sequence it came from (the
 * configuration's version: it changes with every set_rate). */
static inline uint64_t conc__rate_cfg_read(struct conc_rate *l, int64_t *t, uint32_t *burst)
{
	for (;;) {
		/* Q1 acquire: the copy this value selects was completed before
		 * it was stored; pairs with Q2 in conc__rate_cfg_write(). */
		uint64_t s = atomic_load_explicit(&l->seq, memory_order_acquire);
		const struct conc__rate_cfg *c = &l->cfg[s & 1u];
		/* Q3 acquire: if these loads see a later writer's values, they
		 * synchronise with its Q4, so the re-read of seq below sees
		 * that writer's bump and the torn copy is dropped.  (Acquire
		 * loads instead of a fence: ThreadSanitizer models these.) */
		*t = atomic_load_explicit(&c->t, memory_order_acquire);
		*burst = atomic_load_explicit(&c->burst, memory_order_acquire);
		/* Relaxed: Q3 orders it. */
		if (atomic_load_explicit(&l->seq, memory_order_relaxed) == s)
			return s;
	}
}

static inline void conc__rate_cfg_store(struct conc__rate_cfg *c, int64_t t, uint32_t burst)
{
	/* Q4 release: the seq bump before it comes first; pairs with Q3. */
	atomic_store_explicit(&c->t, t, memory_order_release);
	atomic_store_explicit(&c->burst, burst, memory_order_release);
}

/* Publish a configuration (caller holds l->lock): move readers to the copy
 * not being written, rewrite the other, then the first, as the latch does. */
static inline void conc__rate_cfg_write(struct conc_rate *l, int64_t t, uint32_t burst)
{
	/* Relaxed: only lock holders write seq. */
	uint64_t s = atomic_load_explicit(&l->seq, memory_order_relaxed);
	for (int i = 1; i <= 2; i++) {
		/* Q2 release: the copy readers now select is complete; pairs
		 * with Q1.  The other copy's stores (Q4) come after it. */
		atomic_store_explicit(&l->seq, s + (uint64_t)i, memory_order_release);
		conc__rate_cfg_store(&l->cfg[(s + (uint64_t)i + 1) & 1u], t, burst);
	}
}

/* ---------------------------------------------------------------- the core */

/* tokens(now) for bucket z: min(burst, floor((now - z) / t)), 0 if z > now. */
static inline uint64_t conc__rate_tokens_at(int64_t z, int64_t now, int64_t t, uint32_t burst)
{
	if (z >= now)
		return 0;
	uint64_t k = conc__rate_span(z, now) / (uint64_t)t;
	return k < burst ? k : burst;
}

/* What conc__rate_take saw and did. */
struct conc__rate_take {
	int64_t z;        /* Z after the take (CONC_OK) */
	int64_t wait;     /* delay until the tokens are due (saturated) */
	uint64_t cost;    /* n*T */
	uint64_t version; /* the configuration's latch sequence */
	int64_t t;        /* the configuration: T and burst */
	uint32_t burst;
};

/*
 * Take n tokens at the limiter's time now, waiting at most max_wait for
 * them (0: only tokens there now; a reservation runs ahead of now by up to
 * max_wait).  CONC_OK: taken.  CONC_WOULDBLOCK: the wait would exceed
 * max_wait (r->wait says how long it would be); nothing taken.  CONC_INVALID:
 * n > burst.  CONC_OVERFLOW: max_wait is unbounded but the new Z does not fit
 * in int64_t.  (With max_wait 0 it cannot overflow: an admitted Z is <= now.)
 */
static inline enum conc_status conc__rate_take(struct conc_rate *l, uint64_t n, int64_t now, int64_t max_wait,
					       struct conc__rate_take *r)
{
	r->version = conc__rate_cfg_read(l, &r->t, &r->burst);
	r->wait = 0;
	r->cost = 0;
	if (n > r->burst) {
		r->wait = INT64_MAX;
		return CONC_INVALID;
	}
	if (n == 0) { /* always there; Z stays.  Relaxed: a snapshot. */
		r->z = atomic_load_explicit(&l->z, memory_order_relaxed);
		return CONC_OK;
	}
	uint64_t full;
	/* n <= burst < 2^32 and T < 2^63: n*T < 2^95 need not fit; if it
	 * does not, no Z can hold the take. */
	bool fits = conc__rate_mul(n, (uint64_t)r->t, &r->cost);
	/* now - burst*T: the Z of a full bucket.  Saturating makes a bucket
	 * that cannot be full within int64_t look less full: safe. */
	int64_t floor_z = conc__rate_mul(r->burst, (uint64_t)r->t, &full) ? conc__rate_sub_sat(now, full) : INT64_MIN;
	/* Relaxed: Z carries no data but itself; the CAS's atomicity orders
	 * the admissions, and nothing else is published through them. */
	int64_t z = atomic_load_explicit(&l->z, memory_order_relaxed);
	for (;;) {
		int64_t base = z > floor_z ? z : floor_z, nz;
		if (!fits || !conc__rate_add(base, r->cost, &nz)) {
			r->wait = INT64_MAX;
			return max_wait == INT64_MAX ? CONC_OVERFLOW : CONC_WOULDBLOCK;
		}
		int64_t w = nz > now ? conc__rate_clamp(conc__rate_span(now, nz)) : 0;
		if (w > max_wait) {
			r->wait = w;
			return CONC_WOULDBLOCK;
		}
		/* Relaxed, as above. */
		if (atomic_compare_exchange_weak_explicit(&l->z, &z, nz, memory_order_relaxed,
							  memory_order_relaxed)) {
			r->z = nz;
			r->wait = w;
			return CONC_OK;
		}
	}
}

/*
 * Initialise l to admit events per period_ns, up to burst at once, on clock
 * clk (copied; NULL for CLOCK_MONOTONIC).  The bucket starts full.  Returns
 * CONC_OK, or CONC_INVALID for NULL, events 0, period_ns <= 0, burst 0, or
 * more than one event per nanosecond.  Does not allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_rate_init(struct conc_rate *l, uint64_t events, int64_t period_ns,
							     uint32_t burst, const struct conc_clock *clk)
{
	int64_t t = conc__rate_interval(events, period_ns);
	if (!l || t == 0 || burst == 0)
		return CONC_INVALID;
	memset(&l->clk, 0, sizeof l->clk);
	if (clk)
		l->clk = *clk;
	conc_lock_init(&l->lock);
	atomic_init(&l->seq, 0);
	for (int i = 0; i < 2; i++) {
		atomic_init(&l->cfg[i].t, t);
		atomic_init(&l->cfg[i].burst, burst);
	}
	uint64_t full;
	int64_t now = conc_clock_now(&l->clk);
	atomic_init(&l->z, conc__rate_mul(burst, (uint64_t)t, &full) ? conc__rate_sub_sat(now, full) : INT64_MIN);
	return CONC_OK;
}

/* Release l.  Only when no call on it can still run.  CONC_INVALID for NULL. */
static inline enum conc_status conc_rate_destroy(struct conc_rate *l)
{
	if (!l)
		return CONC_INVALID;
	conc_lock_destroy(&l->lock);
	return CONC_OK;
}

/*
 * Change the rate to events per period_ns and the burst, keeping the tokens
 * in the bucket (capped at the new burst) and the tokens owed by
 * reservations (repriced at the new rate; rounded against the caller).
 * Returns CONC_OK, or CONC_INVALID (NULL or bad values, as for init; nothing
 * changes).  Any thread, concurrently with everything but init and destroy;
 * calls that overlap it see the old or the new configuration (see the
 * header comment).  Takes a short lock against other set_rates; never blocks
 * an allow.
 */
CONC_NODISCARD static inline enum conc_status conc_rate_set(struct conc_rate *l, uint64_t events, int64_t period_ns,
							    uint32_t burst)
{
	int64_t t2 = conc__rate_interval(events, period_ns);
	if (!l || t2 == 0 || burst == 0)
		return CONC_INVALID;
	conc_lock_acquire(&l->lock);
	int64_t t1;
	uint32_t b1;
	(void)conc__rate_cfg_read(l, &t1, &b1);
	conc__rate_cfg_write(l, t2, burst);
	int64_t now = conc_clock_now(&l->clk);
	/* Relaxed, as in conc__rate_take(). */
	int64_t z = atomic_load_explicit(&l->z, memory_order_relaxed), nz;
	do {
		/* The fill now - z is tokens*t1 in time; the same tokens are
		 * fill*t2/t1 at the new rate.  A positive fill rounds down and a
		 * negative one (owed) rounds up: fewer tokens either way. */
		uint64_t cap_old, cap_new;
		if (z < now) {
			uint64_t fill = conc__rate_span(z, now);
			if (conc__rate_mul(b1, (uint64_t)t1, &cap_old) && fill > cap_old)
				fill = cap_old;
			fill = conc__rate_muldiv(fill, (uint64_t)t2, (uint64_t)t1, false);
			if (conc__rate_mul(burst, (uint64_t)t2, &cap_new) && fill > cap_new)
				fill = cap_new;
			nz = conc__rate_sub_sat(now, fill);
		} else {
			uint64_t owed = conc__rate_muldiv(conc__rate_span(now, z), (uint64_t)t2, (uint64_t)t1, true);
			if (!conc__rate_add(now, owed, &nz))
				nz = INT64_MAX;
		}
		/* Relaxed, as in conc__rate_take(). */
	} while (!atomic_compare_exchange_weak_explicit(&l->z, &z, nz, memory_order_relaxed, memory_order_relaxed));
	conc_lock_release(&l->lock);
	return CONC_OK;
}

/*
 * Take n tokens if they are there now; never blocks.  Returns CONC_OK
 * (taken), CONC_WOULDBLOCK (too few; nothing taken), or CONC_INVALID (NULL
 * l, or n > burst: it could never succeed).  n == 0 is CONC_OK.  info (may
 * be NULL) gets the retry-after (0 when taken; INT64_MAX for CONC_INVALID
 * or when the tokens would come after the end of int64_t), the
 * reset-after, the tokens remaining and the burst, all as this call saw
 * them.  Lock-free; any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_rate_allow_n(struct conc_rate *l, uint64_t n,
								struct conc_rate_info *info)
{
	if (!l)
		return CONC_INVALID;
	int64_t now = conc_clock_now(&l->clk);
	struct conc__rate_take r;
	enum conc_status s = conc__rate_take(l, n, now, 0, &r);
	if (info) {
		if (s != CONC_OK) /* Relaxed: a snapshot for the report. */
			r.z = atomic_load_explicit(&l->z, memory_order_relaxed);
		uint64_t full;
		int64_t floor_z = conc__rate_mul(r.burst, (uint64_t)r.t, &full) ? conc__rate_sub_sat(now, full)
										 : INT64_MIN;
		info->retry_after_ns = s == CONC_OK ? 0 : r.wait;
		info->remaining = conc__rate_tokens_at(r.z, now, r.t, r.burst);
		info->reset_after_ns = r.z > floor_z ? conc__rate_clamp(conc__rate_span(floor_z, r.z)) : 0;
		info->limit = r.burst;
	}
	return s;
}

/* Take one token if there is one now.  CONC_OK, CONC_WOULDBLOCK or
 * CONC_INVALID (NULL).  Lock-free; any thread. */
CONC_NODISCARD static inline enum conc_status conc_rate_allow(struct conc_rate *l)
{
	return conc_rate_allow_n(l, 1, NULL);
}

/* Tokens in the bucket now (a snapshot); 0 for NULL.  Lock-free. */
static inline uint64_t conc_rate_tokens(struct conc_rate *l)
{
	if (!l)
		return 0;
	int64_t t;
	uint32_t burst;
	(void)conc__rate_cfg_read(l, &t, &burst);
	int64_t now = conc_clock_now(&l->clk);
	/* Relaxed: a snapshot. */
	return conc__rate_tokens_at(atomic_load_explicit(&l->z, memory_order_relaxed), now, t, burst);
}

static inline void conc__rate_reservation_fill(struct conc_rate_reservation *r, struct conc_rate *l, uint64_t n,
					       int64_t now, const struct conc__rate_take *t)
{
	r->n = n;
	r->delay_ns = t->wait;
	r->at_ns = now + t->wait; /* fits: it is at most Z */
	r->conc__l = l;
	r->conc__z = t->z;
	r->conc__cost = t->cost;
	r->conc__version = t->version;
}

/*
 * Reserve n tokens now, whenever they accrue: r->delay_ns says how long to
 * wait before acting (0: at once), r->at_ns when, on the limiter's clock.
 * Returns CONC_OK, CONC_INVALID (NULL, or n > burst) or CONC_OVERFLOW (the
 * time to act does not fit in int64_t; nothing reserved).  The caller must
 * act no earlier than at_ns, or give the tokens back with conc_rate_cancel.
 * Never blocks; lock-free; any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_rate_reserve(struct conc_rate *l, uint64_t n,
								struct conc_rate_reservation *r)
{
	if (!l || !r)
		return CONC_INVALID;
	int64_t now = conc_clock_now(&l->clk);
	struct conc__rate_take t;
	enum conc_status s = conc__rate_take(l, n, now, INT64_MAX, &t);
	memset(r, 0, sizeof *r); /* a failed reservation is spent: cancel says CONC_INVALID */
	if (s == CONC_OK)
		conc__rate_reservation_fill(r, l, n, now, &t);
	return s;
}

/*
 * Give a reservation's tokens back.  Returns CONC_OK if they went back:
 * nothing was taken after them, the rate was not changed since, and the
 * reservation's time (at_ns) has not passed.  CONC_BUSY otherwise: the tokens
 * stay taken (the caller may still act at at_ns).  Either way r is spent: a
 * second cancel is CONC_INVALID, as are NULL and a reservation of another
 * limiter.  Lock-free; any thread, but one call per reservation.
 */
static inline enum conc_status conc_rate_cancel(struct conc_rate *l, struct conc_rate_reservation *r)
{
	if (!l || !r || r->conc__l != l)
		return CONC_INVALID;
	r->conc__l = NULL;
	if (r->conc__cost == 0)
		return CONC_OK;
	int64_t now = conc_clock_now(&l->clk), t;
	uint32_t burst;
	if (now > r->at_ns || conc__rate_cfg_read(l, &t, &burst) != r->conc__version)
		return CONC_BUSY;
	int64_t z = r->conc__z;
	/* Relaxed, as in conc__rate_take().  Z equal to this reservation's
	 * value means every take after it was given back too (takes only
	 * raise Z; only cancels of the latest take lower it).  Z - cost is
	 * the take's base, so it fits. */
	return atomic_compare_exchange_strong_explicit(&l->z, &z, (int64_t)((uint64_t)z - r->conc__cost),
						       memory_order_relaxed, memory_order_relaxed)
		       ? CONC_OK
		       : CONC_BUSY;
}

/* Sleep until the real deadline `until` or until ctx is done.  Returns
 * CONC_OK when until passed, else ctx's err. */
static inline enum conc_status conc__rate_sleep(struct conc_deadline until, struct conc_ctx *ctx)
{
	if (ctx) {
		enum conc_status s = conc_ctx_wait_until(ctx, until);
		/* A ctx deadline at the same instant as until counts as until. */
		return s == CONC_TIMEDOUT && conc_deadline_expired(until) ? CONC_OK : s;
	}
	while (!conc_deadline_expired(until))
		(void)conc_parker_park_until(conc_parker_self(), until);
	return CONC_OK;
}

/*
 * Take n tokens, waiting for them until the absolute deadline d or until ctx
 * (NULL for none) is done.  If the tokens would come later than d or ctx's
 * deadline, it fails at once with CONC_TIMEDOUT and takes nothing.
 * Otherwise it reserves them and sleeps until they are due; if ctx is
 * canceled meanwhile it gives them back (conc_rate_cancel's rule) and
 * returns ctx's err.  Returns CONC_OK, CONC_TIMEDOUT, CONC_CANCELED,
 * CONC_INVALID (NULL, n > burst: it could never succeed), or CONC_OVERFLOW.
 * A done ctx fails the call before it takes anything.  Blocks, parked (no
 * CPU); any thread.  The span is measured on the limiter's clock and slept
 * on the real one.
 */
CONC_NODISCARD static inline enum conc_status conc_rate_wait_n_until(struct conc_rate *l, uint64_t n,
								     struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!l)
		return CONC_INVALID;
	enum conc_status s;
	if (ctx && (s = conc_ctx_err(ctx)) != CONC_OK)
		return s;
	struct conc_deadline limit = conc_deadline_min(d, conc_ctx_deadline(ctx));
	/* The limiter's clock first, then the real one: the sleep below ends
	 * at real + wait, which is then no later than the limit by
	 * construction, however long the limiter's clock took to read or this
	 * thread was descheduled before the take. */
	int64_t now = conc_clock_now(&l->clk);
	int64_t real = conc_now_ns(); /* the deadline's clock */
	int64_t max_wait = INT64_MAX;
	if (!conc_deadline_is_forever(limit))
		max_wait = limit.ns <= real ? 0 : limit.ns - real;
	struct conc__rate_take t;
	s = conc__rate_take(l, n, now, max_wait, &t);
	if (s == CONC_WOULDBLOCK)
		return CONC_TIMEDOUT;
	if (s != CONC_OK || t.wait == 0)
		return s;
	struct conc_rate_reservation r;
	conc__rate_reservation_fill(&r, l, n, now, &t);
	struct conc_deadline until =
		t.wait > INT64_MAX - real ? conc_deadline_forever() : conc_deadline_at_ns(real + t.wait);
	s = conc__rate_sleep(until, ctx);
	if (s != CONC_OK)
		(void)conc_rate_cancel(l, &r);
	return s;
}

/* Take one token, waiting as long as it takes.  CONC_OK, CONC_INVALID, or
 * CONC_OVERFLOW (the token's time does not fit in int64_t: a huge period). */
CONC_NODISCARD static inline enum conc_status conc_rate_wait(struct conc_rate *l)
{
	return conc_rate_wait_n_until(l, 1, conc_deadline_forever(), NULL);
}

/* ================================================================ ticker */

#define CONC__TICK_INDEX_BITS 48
#define CONC__TICK_INDEX_MASK ((UINT64_C(1) << CONC__TICK_INDEX_BITS) - 1u)
#define CONC__TICK_REBASE (UINT64_C(1) << (CONC__TICK_INDEX_BITS - 1))

struct conc__tick_cfg {
	_Atomic(int64_t) start;  /* tick k is at start + k*period */
	_Atomic(int64_t) period; /* 0: stopped */
};

struct conc_ticker {
	/* generation << 48 | index of the next tick.  CAS by takes; reset,
	 * stop and rebase (under lock) start a new generation. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) state;
	struct conc__tick_cfg cfg[2]; /* cfg[generation & 1]; written under lock */
	struct conc_lock lock;        /* serialises reset, stop, rebase */
	struct conc_waitq waiters;    /* receivers blocked in wait_until */
	struct conc_clock clk;        /* fixed at init */
};

/* Read the state and its (start, period).  Returns the state word. */
static inline uint64_t conc__tick_read(struct conc_ticker *t, int64_t *start, int64_t *period)
{
	/* K1 seq_cst: acquire pairs with K2 (the slot of this generation is
	 * written); seq_cst because a blocked receiver's re-check after W1
	 * pairs with K2 through the waitq handshake. */
	uint64_t s = atomic_load_explicit(&t->state, memory_order_seq_cst);
	const struct conc__tick_cfg *c = &t->cfg[(s >> CONC__TICK_INDEX_BITS) & 1u];
	/* K3 acquire: a value stored by a later reset (K4) makes that
	 * reset's predecessor's K2 happen before the caller's CAS on state,
	 * which then fails: torn pairs are dropped. */
	*start = atomic_load_explicit(&c->start, memory_order_acquire);
	*period = atomic_load_explicit(&c->period, memory_order_acquire);
	return s;
}

/* Time of tick k, or false if it is past the end of int64_t (never). */
static inline bool conc__tick_at(int64_t start, int64_t period, uint64_t k, int64_t *at)
{
	uint64_t off;
	return conc__rate_mul(k, (uint64_t)period, &off) && conc__rate_add(start, off, at);
}

/* Start a new generation (lock held): tick `index` of (start, period) is
 * next.  Wakes blocked receivers. */
static inline void conc__tick_publish(struct conc_ticker *t, int64_t start, int64_t period, uint64_t index)
{
	/* Relaxed: only lock holders change the generation. */
	uint64_t s = atomic_load_explicit(&t->state, memory_order_relaxed);
	uint64_t gen = ((s >> CONC__TICK_INDEX_BITS) + 1u) & 0xffffu;
	struct conc__tick_cfg *c = &t->cfg[gen & 1u];
	/* K4 release: pairs with K3; the slot is published by K2. */
	atomic_store_explicit(&c->start, start, memory_order_release);
	atomic_store_explicit(&c->period, period, memory_order_release);
	/* K2 seq_cst: release publishes the slot (pairs with K1); seq_cst for
	 * the waitq handshake before W2 in wake_all.  An exchange, not a CAS:
	 * a take that races it loses its CAS. */
	atomic_exchange_explicit(&t->state, (gen << CONC__TICK_INDEX_BITS) | index, memory_order_seq_cst);
	conc_waitq_wake_all(&t->waiters);
}

/*
 * Initialise t to tick every period_ns on clock clk (copied; NULL for
 * CLOCK_MONOTONIC), the first tick one period from now.  Returns CONC_OK or
 * CONC_INVALID (NULL, period_ns <= 0).  Does not allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_ticker_init(struct conc_ticker *t, int64_t period_ns,
							       const struct conc_clock *clk)
{
	if (!t || period_ns <= 0)
		return CONC_INVALID;
	memset(&t->clk, 0, sizeof t->clk);
	if (clk)
		t->clk = *clk;
	conc_lock_init(&t->lock);
	conc_waitq_init(&t->waiters);
	int64_t now = conc_clock_now(&t->clk);
	for (int i = 0; i < 2; i++) {
		atomic_init(&t->cfg[i].start, now);
		atomic_init(&t->cfg[i].period, period_ns);
	}
	atomic_init(&t->state, 1);
	return CONC_OK;
}

/* Release t.  Only when no call on it can still run: CONC_BUSY (nothing
 * changes) if receivers are found blocked, CONC_INVALID for NULL. */
CONC_NODISCARD static inline enum conc_status conc_ticker_destroy(struct conc_ticker *t)
{
	if (!t)
		return CONC_INVALID;
	/* Relaxed: a diagnostic of misuse, as in conc_ctx_destroy. */
	if (atomic_load_explicit(&t->waiters.count, memory_order_relaxed))
		return CONC_BUSY;
	conc_waitq_destroy(&t->waiters);
	conc_lock_destroy(&t->lock);
	return CONC_OK;
}

/*
 * Restart t with a new period: the next tick is period_ns from now (Go's
 * Reset); also restarts a stopped ticker.  Ticks due before and not taken are
 * dropped without being counted as missed.  Returns CONC_OK or CONC_INVALID
 * (NULL, period_ns <= 0).  Wakes blocked receivers, which then wait for the
 * new schedule.  Any thread; a short lock against other resets and stops.
 */
CONC_NODISCARD static inline enum conc_status conc_ticker_reset(struct conc_ticker *t, int64_t period_ns)
{
	if (!t || period_ns <= 0)
		return CONC_INVALID;
	conc_lock_acquire(&t->lock);
	conc__tick_publish(t, conc_clock_now(&t->clk), period_ns, 1);
	conc_lock_release(&t->lock);
	return CONC_OK;
}

/* Stop t: no more ticks; take and wait_until report CONC_CLOSED (blocked
 * receivers wake to it) and its select case never fires, until a reset.
 * Idempotent.  CONC_OK or CONC_INVALID (NULL).  Any thread. */
static inline enum conc_status conc_ticker_stop(struct conc_ticker *t)
{
	if (!t)
		return CONC_INVALID;
	conc_lock_acquire(&t->lock);
	conc__tick_publish(t, 0, 0, 0);
	conc_lock_release(&t->lock);
	return CONC_OK;
}

/* An index at 2^47 starts a new generation at the same tick, so the 48-bit
 * index never wraps (every 2^47 ticks: 39 hours at one tick a nanosecond).
 * A CAS, not an exchange: a take that moves the index on meanwhile must not
 * be rolled back. */
static inline void conc__tick_rebase(struct conc_ticker *t)
{
	conc_lock_acquire(&t->lock);
	for (;;) {
		int64_t start, period, at;
		uint64_t s = conc__tick_read(t, &start, &period), k = s & CONC__TICK_INDEX_MASK;
		if (period == 0 || k < CONC__TICK_REBASE || !conc__tick_at(start, period, k, &at))
			break;
		uint64_t gen = ((s >> CONC__TICK_INDEX_BITS) + 1u) & 0xffffu;
		struct conc__tick_cfg *c = &t->cfg[gen & 1u];
		/* K4 release, as in conc__tick_publish(). */
		atomic_store_explicit(&c->start, at, memory_order_release);
		atomic_store_explicit(&c->period, period, memory_order_release);
		/* K2' seq_cst, as K2 in conc__tick_publish(). */
		if (atomic_compare_exchange_strong_explicit(&t->state, &s, gen << CONC__TICK_INDEX_BITS,
							    memory_order_seq_cst, memory_order_relaxed)) {
			conc_waitq_wake_all(&t->waiters);
			break;
		}
	}
	conc_lock_release(&t->lock);
}

/*
 * The next tick's time on t's clock: INT64_MAX if stopped (or past the end
 * of int64_t).  Any thread; lock-free.
 */
static inline int64_t conc_ticker_next(struct conc_ticker *t)
{
	int64_t start, period, at;
	if (!t)
		return INT64_MAX;
	uint64_t s = conc__tick_read(t, &start, &period);
	if (period == 0 || !conc__tick_at(start, period, s & CONC__TICK_INDEX_MASK, &at))
		return INT64_MAX;
	return at;
}

/* The real deadline of t's clock time `at`. */
static inline struct conc_deadline conc__tick_deadline(struct conc_ticker *t, int64_t at)
{
	if (at == INT64_MAX)
		return conc_deadline_forever();
	int64_t now = conc_clock_now(&t->clk);
	if (at <= now)
		return conc_deadline_poll();
	return conc_deadline_in_ns(conc__rate_clamp(conc__rate_span(now, at)));
}

/*
 * A select case (conc_select_timer) that fires when t's next tick is due: a
 * stopped ticker's case never fires.  After conc_select reports it, call
 * conc_ticker_take: CONC_WOULDBLOCK there means another receiver took the
 * tick, or a reset moved it: build a new case and select again.  NULL t is
 * a case that never fires.  The case is the tick due when it is built: a
 * reset or stop while the select waits is seen when that time comes, not
 * before (see TICKER at the top).
 */
static inline struct conc_select_case conc_ticker_case(struct conc_ticker *t)
{
	return conc_select_timer(t ? conc__tick_deadline(t, conc_ticker_next(t)) : conc_deadline_forever());
}

/*
 * Take the tick that is due, if one is: CONC_OK, and *missed (may be NULL)
 * gets how many more ticks came due since and are dropped; the next tick is
 * the first one after now.  CONC_WOULDBLOCK: none is due (or another
 * receiver took it).  CONC_CLOSED: stopped.  CONC_INVALID: NULL.  Each tick
 * is taken by one receiver only.  Never blocks; lock-free (but for the
 * rebase every 2^47 ticks); any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_ticker_take(struct conc_ticker *t, uint64_t *missed)
{
	if (!t)
		return CONC_INVALID;
	int64_t now = conc_clock_now(&t->clk);
	for (;;) {
		int64_t start, period, at;
		uint64_t s = conc__tick_read(t, &start, &period), k = s & CONC__TICK_INDEX_MASK;
		if (period == 0)
			return CONC_CLOSED;
		if (!conc__tick_at(start, period, k, &at) || at > now)
			return CONC_WOULDBLOCK;
		/* Ticks k+1 .. k+more are also due: dropped. */
		uint64_t more = conc__rate_span(at, now) / (uint64_t)period;
		uint64_t next = k + more + 1u;
		if (next > CONC__TICK_INDEX_MASK) /* only after a clock jump of 2^48 periods */
			next = CONC__TICK_INDEX_MASK, more = next - k - 1u;
		/* Relaxed on success: a tick publishes nothing.  K1 (the read
		 * above) ordered the slot; a reset since makes this fail. */
		if (atomic_compare_exchange_strong_explicit(&t->state, &s, (s & ~CONC__TICK_INDEX_MASK) | next,
							    memory_order_relaxed, memory_order_relaxed)) {
			if (missed)
				*missed = more;
			if (next >= CONC__TICK_REBASE)
				conc__tick_rebase(t);
			return CONC_OK;
		}
	}
}

/*
 * Block until a tick is due and take it (see conc_ticker_take for *missed),
 * or until the absolute deadline d or ctx (NULL for none) is done.  If the
 * next tick comes after d or ctx's deadline it fails at once with
 * CONC_TIMEDOUT.  Returns CONC_OK, CONC_TIMEDOUT, CONC_CANCELED, CONC_CLOSED
 * (stopped, before or during the wait), or CONC_INVALID (NULL).  Blocks,
 * parked (no CPU); a reset or stop wakes it.  Any thread; several receivers
 * share the ticks, one tick each.
 */
CONC_NODISCARD static inline enum conc_status conc_ticker_wait_until(struct conc_ticker *t, uint64_t *missed,
								     struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!t)
		return CONC_INVALID;
	struct conc_deadline limit = conc_deadline_min(d, conc_ctx_deadline(ctx));
	struct conc_waiter w, cw;
	conc_waiter_init(&w, 0);
	conc_waiter_init(&cw, 0);
	enum conc_status s = conc_ctx_watch(ctx, &cw); /* a done ctx fails first */
	while (s == CONC_OK) {
		s = conc_ticker_take(t, missed);
		if (s != CONC_WOULDBLOCK || (ctx && (s = conc_ctx_err(ctx)) != CONC_OK))
			break;
		s = CONC_OK;
		conc_waitq_enqueue(&t->waiters, &w);
		/* K1 inside: the re-check after W1, so a reset or stop from here
		 * on wakes us. */
		int64_t start, period, at;
		uint64_t st = conc__tick_read(t, &start, &period);
		if (period != 0) { /* stopped: take reports it next round */
			struct conc_deadline due = conc__tick_at(start, period, st & CONC__TICK_INDEX_MASK, &at)
							   ? conc__tick_deadline(t, at)
							   : conc_deadline_forever();
			if (due.ns > limit.ns)
				s = CONC_TIMEDOUT; /* the tick would come too late */
			else
				(void)conc_parker_park_until(w.parker, due);
		}
		(void)conc_waitq_remove(&t->waiters, &w);
	}
	conc_ctx_unwatch(ctx, &cw);
	return s;
}

/* Block until a tick is due and take it.  CONC_OK, CONC_CLOSED or
 * CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_ticker_wait(struct conc_ticker *t, uint64_t *missed)
{
	return conc_ticker_wait_until(t, missed, conc_deadline_forever(), NULL);
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_RATE_H */
