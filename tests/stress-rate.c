/* SPDX-License-Identifier: MIT */
/*
 * stress-rate: rate limiter and ticker stress scenarios as a plain program
 * (Criterion does not start under ThreadSanitizer).  More threads than
 * cores throughout.
 *
 *   allow bound        8 threads take 1..3 tokens at a time on a test clock
 *                      that a clock thread moves on by random steps: the
 *                      tokens admitted never exceed burst + elapsed/T (the
 *                      exact GCRA bound), and no call reports more remaining
 *                      than the burst
 *   reserve and cancel 8 threads allow, reserve, and cancel half of their
 *                      reservations at once, racing: the tokens kept (allowed,
 *                      or reserved and not given back) times T never exceed
 *                      how far the bucket's time moved (Z_end - Z_start): a
 *                      cancel gives back only what nobody depends on
 *   set storm          8 threads allow while a setter switches between two
 *                      configurations: admissions stay within a (loose) bound
 *                      of the fastest configuration plus one burst per change,
 *                      and the limiter ends with the last configuration
 *   wait and cancel    8 threads wait_n_until on the real clock under a
 *                      context that the main thread cancels once enough have
 *                      been served; every waiter returns (no hang), the ones
 *                      served stay within the bound, and the reservations of
 *                      the canceled ones were all given back or kept by rule
 *   ticker, each tick once
 *                      6 receivers take ticks of a test-clock ticker that a
 *                      clock thread moves on: the ticks taken plus the ticks
 *                      reported missed equal exactly the ticks that came due
 *   ticker, stop wakes 6 receivers block in wait_until on a real-clock
 *                      ticker while a thread resets it at random; stop wakes
 *                      every one of them with CONC_CLOSED
 *
 * No sleep stands in for synchronisation and no timing is asserted.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-rate"
#include "stress.h"

#define THREADS 8

struct hammer {
	struct conc_rate l;
	struct conc_test_clock tc;
	_Atomic(bool) done;
	_Atomic(uint64_t) admitted; /* tokens */
	_Atomic(uint64_t) kept;     /* tokens of reservations not given back */
	_Atomic(uint64_t) given_back, busy;
	size_t steps;
	int64_t max_step;
	pthread_barrier_t start;
	bool reserve;
};

struct hammer_worker {
	struct hammer *h;
	struct rng rng;
	pthread_t thread;
};

/* Moves the test clock on by random steps, then says done. */
static void *clock_main(void *arg)
{
	struct hammer_worker *w = arg;
	struct hammer *h = w->h;
	pthread_barrier_wait(&h->start);
	for (size_t i = 0; i < h->steps && !atomic_load(&failed_flag); i++) {
		conc_test_clock_advance(&h->tc, (int64_t)rng_below(&w->rng, (size_t)h->max_step + 1));
		spin_random(&w->rng);
	}
	atomic_store(&h->done, true);
	return NULL;
}

static void *hammer_main(void *arg)
{
	struct hammer_worker *w = arg;
	struct hammer *h = w->h;
	pthread_barrier_wait(&h->start);
	for (unsigned i = 1; !atomic_load(&h->done) && !atomic_load(&failed_flag); i++) {
		uint64_t n = 1 + rng_below(&w->rng, 3);
		if (i % 64 == 0) /* 8 threads on 2 cores: let the clock thread run */
			conc_yield();
		if (h->reserve && rng_below(&w->rng, 2)) {
			struct conc_rate_reservation r;
			enum conc_status s = conc_rate_reserve(&h->l, n, &r);
			if (s != CONC_OK) {
				fail("reserve %" PRIu64 ": %s", n, conc_strerror(s));
				return NULL;
			}
			if (rng_below(&w->rng, 2)) {
				if (rng_below(&w->rng, 16) == 0)
					spin_random(&w->rng); /* let others reserve behind it */
				s = conc_rate_cancel(&h->l, &r);
				if (s == CONC_OK) {
					atomic_fetch_add(&h->given_back, 1);
					continue;
				}
				if (s != CONC_BUSY) {
					fail("cancel: %s", conc_strerror(s));
					return NULL;
				}
				atomic_fetch_add(&h->busy, 1);
			}
			atomic_fetch_add(&h->kept, n);
			continue;
		}
		struct conc_rate_info info;
		enum conc_status s = conc_rate_allow_n(&h->l, n, &info);
		if (s == CONC_OK)
			atomic_fetch_add(&h->admitted, n);
		else if (s != CONC_WOULDBLOCK)
			fail("allow_n %" PRIu64 ": %s", n, conc_strerror(s));
		if (info.remaining > info.limit)
			fail("%" PRIu64 " remaining, burst %" PRIu32, info.remaining, info.limit);
	}
	return NULL;
}

/* Runs THREADS hammers and a clock thread on h (initialised but for the
 * limiter, which the caller set up). */
static void hammer_run(struct hammer *h, void *(*extra)(void *), void *extra_arg)
{
	size_t parties = THREADS + 1 + (extra != NULL);
	barrier_init(&h->start, (unsigned)parties);
	struct hammer_worker w[THREADS + 1];
	pthread_t ex;
	for (size_t t = 0; t <= THREADS; t++) {
		w[t].h = h;
		w[t].rng = rng_for(t + 1);
		spawn(&w[t].thread, t == THREADS ? clock_main : hammer_main, &w[t]);
	}
	if (extra)
		spawn(&ex, extra, extra_arg);
	for (size_t t = 0; t <= THREADS; t++)
		join(w[t].thread);
	if (extra)
		join(ex);
	pthread_barrier_destroy(&h->start);
}

static void hammer_init(struct hammer *h, uint64_t events, int64_t period, uint32_t burst)
{
	memset(h, 0, sizeof *h);
	struct conc_clock clk = conc_test_clock_init(&h->tc, 1000);
	if (conc_rate_init(&h->l, events, period, burst, &clk) != CONC_OK)
		fail("conc_rate_init failed");
	h->steps = SIZED(20000, 3000);
	h->max_step = 2 * period / (int64_t)events;
}

static void scenario_allow(size_t unused)
{
	(void)unused;
	static struct hammer h;
	hammer_init(&h, 1, 1000, 5); /* T = 1000 ns */
	hammer_run(&h, NULL, NULL);
	int64_t elapsed = conc_test_clock_read(&h.tc) - 1000;
	uint64_t admitted = atomic_load(&h.admitted), bound = 5 + (uint64_t)elapsed / 1000;
	if (admitted > bound)
		fail("%" PRIu64 " tokens admitted in %" PRId64 " ns, at most %" PRIu64 " allowed", admitted, elapsed,
		     bound);
	if (admitted == 0)
		fail("nothing admitted");
	note("%" PRIu64 " admitted of a bound of %" PRIu64, admitted, bound);
	(void)conc_rate_destroy(&h.l);
}

static void scenario_reserve(size_t unused)
{
	(void)unused;
	static struct hammer h;
	hammer_init(&h, 1, 1000, 5);
	h.reserve = true;
	int64_t z0 = atomic_load(&h.l.z);
	hammer_run(&h, NULL, NULL);
	int64_t z1 = atomic_load(&h.l.z);
	uint64_t kept = atomic_load(&h.admitted) + atomic_load(&h.kept);
	if (kept * 1000 > (uint64_t)(z1 - z0))
		fail("%" PRIu64 " tokens kept but the bucket moved only %" PRId64 " ns", kept, z1 - z0);
	if (atomic_load(&h.given_back) == 0)
		fail("no cancel gave tokens back");
	note("%" PRIu64 " kept, %" PRIu64 " given back, %" PRIu64 " refused", kept, atomic_load(&h.given_back),
	     atomic_load(&h.busy));
	(void)conc_rate_destroy(&h.l);
}

struct setter {
	struct hammer *h;
	_Atomic(uint64_t) sets;
};

static void *setter_main(void *arg)
{
	struct setter *s = arg;
	pthread_barrier_wait(&s->h->start);
	for (uint64_t i = 0; !atomic_load(&s->h->done) && !atomic_load(&failed_flag); i++) {
		/* T = 1000 ns, burst 5 and T = 300 ns, burst 8, in turn. */
		if (conc_rate_set(&s->h->l, i % 2 ? 1 : 10, i % 2 ? 1000 : 3000, i % 2 ? 5 : 8) != CONC_OK)
			fail("set failed");
		atomic_fetch_add(&s->sets, 1);
		conc_yield();
	}
	if (conc_rate_set(&s->h->l, 1, 1000, 5) != CONC_OK)
		fail("set failed");
	atomic_fetch_add(&s->sets, 1);
	return NULL;
}

static void scenario_set(size_t unused)
{
	(void)unused;
	static struct hammer h;
	static struct setter s;
	hammer_init(&h, 1, 1000, 5);
	h.max_step = 600;
	s.h = &h;
	atomic_store(&s.sets, 0);
	hammer_run(&h, setter_main, &s);
	int64_t elapsed = conc_test_clock_read(&h.tc) - 1000;
	uint64_t sets = atomic_load(&s.sets), admitted = atomic_load(&h.admitted);
	/* Fastest rate, and per change one burst of either (the window of a
	 * set that overlaps calls) and one of rounding: loose, but it fails a
	 * set that hands out a fresh burst every time. */
	uint64_t bound = 8 + (uint64_t)elapsed / 300 + sets * (2 * 8 + 1);
	if (admitted > bound)
		fail("%" PRIu64 " admitted in %" PRId64 " ns over %" PRIu64 " sets; bound %" PRIu64, admitted, elapsed,
		     sets, bound);
	struct conc_rate_info info;
	if (conc_rate_allow_n(&h.l, 0, &info) != CONC_OK || info.limit != 5)
		fail("burst %" PRIu32 " after the last set, expected 5", info.limit);
	note("%" PRIu64 " admitted, bound %" PRIu64 ", %" PRIu64 " sets", admitted, bound, sets);
	(void)conc_rate_destroy(&h.l);
}

/* ----------------------------------------------------------- wait/cancel */

struct waits {
	struct conc_rate l;
	struct conc_ctx *root;
	_Atomic(uint64_t) served, canceled;
	pthread_barrier_t start, round_end;
	size_t rounds;
};

struct waits_worker {
	struct waits *w;
	struct rng rng;
	pthread_t thread;
};

static void *waits_main(void *arg)
{
	struct waits_worker *ww = arg;
	struct waits *w = ww->w;
	for (size_t round = 0; round < w->rounds; round++) {
		pthread_barrier_wait(&w->start);
		for (;;) {
			struct conc_deadline d =
				rng_below(&ww->rng, 4) ? conc_deadline_forever() : stress_short_deadline(&ww->rng);
			enum conc_status s = conc_rate_wait_n_until(&w->l, 1, d, w->root);
			if (s == CONC_OK) {
				atomic_fetch_add(&w->served, 1);
			} else if (s == CONC_CANCELED) {
				atomic_fetch_add(&w->canceled, 1);
				break;
			} else if (s != CONC_TIMEDOUT) {
				fail("wait: %s", conc_strerror(s));
				break;
			}
		}
		pthread_barrier_wait(&w->round_end);
	}
	return NULL;
}

static void scenario_waits(size_t unused)
{
	(void)unused;
	static struct waits w;
	memset(&w, 0, sizeof w);
	w.rounds = SIZED(40, 10);
	int64_t t0 = conc_now_ns(); /* before init: the bucket starts no earlier */
	/* T = 20 us on the real clock, burst 2. */
	if (conc_rate_init(&w.l, 50000, 1000000000, 2, NULL) != CONC_OK) {
		fail("conc_rate_init failed");
		return;
	}
	int64_t z0 = atomic_load(&w.l.z);
	barrier_init(&w.start, THREADS + 1);
	barrier_init(&w.round_end, THREADS + 1);
	struct waits_worker ww[THREADS];
	struct conc_ctx root;
	for (size_t t = 0; t < THREADS; t++) {
		ww[t].w = &w;
		ww[t].rng = rng_for(50 + t);
		spawn(&ww[t].thread, waits_main, &ww[t]);
	}
	struct rng r = rng_for(99);
	for (size_t round = 0; round < w.rounds && !atomic_load(&failed_flag); round++) {
		if (conc_ctx_init_root(&root) != CONC_OK)
			fail("conc_ctx_init failed");
		w.root = &root;
		uint64_t target = atomic_load(&w.served) + 1 + rng_below(&r, 20);
		pthread_barrier_wait(&w.start);
		while (atomic_load(&w.served) < target && !atomic_load(&failed_flag))
			conc_yield();
		spin_random(&r);
		(void)conc_ctx_cancel(&root, 0);
		pthread_barrier_wait(&w.round_end);
		if (conc_ctx_destroy(&root) != CONC_OK)
			fail("a waiter was left on the context");
	}
	for (size_t t = 0; t < THREADS; t++)
		join(ww[t].thread);
	int64_t t1 = conc_now_ns(), z1 = atomic_load(&w.l.z);
	uint64_t served = atomic_load(&w.served);
	/* Served tokens were due by the time they returned: Z moved by at
	 * least their cost, and no further than the real clock allows plus
	 * what canceled waits kept by rule. */
	if (served * 20000 > (uint64_t)(z1 - z0))
		fail("%" PRIu64 " served but the bucket moved %" PRId64 " ns", served, z1 - z0);
	uint64_t bound = 2 + (uint64_t)(t1 - t0) / 20000;
	if (served > bound)
		fail("%" PRIu64 " served in %" PRId64 " ns, bound %" PRIu64, served, t1 - t0, bound);
	pthread_barrier_destroy(&w.start);
	pthread_barrier_destroy(&w.round_end);
	note("%" PRIu64 " served, %" PRIu64 " canceled", served, atomic_load(&w.canceled));
	(void)conc_rate_destroy(&w.l);
}

/* ---------------------------------------------------------------- ticker */

#define RECEIVERS 6

struct ticks {
	struct conc_ticker t;
	struct conc_test_clock tc;
	_Atomic(bool) done;
	_Atomic(uint64_t) ticks; /* taken + missed */
	_Atomic(uint64_t) closed;
	pthread_barrier_t start;
	size_t steps;
};

struct ticks_worker {
	struct ticks *k;
	struct rng rng;
	pthread_t thread;
};

static void *tick_clock_main(void *arg)
{
	struct ticks_worker *w = arg;
	pthread_barrier_wait(&w->k->start);
	for (size_t i = 0; i < w->k->steps && !atomic_load(&failed_flag); i++) {
		conc_test_clock_advance(&w->k->tc, (int64_t)rng_below(&w->rng, 350));
		spin_random(&w->rng);
	}
	atomic_store(&w->k->done, true);
	return NULL;
}

static void *tick_take_main(void *arg)
{
	struct ticks_worker *w = arg;
	pthread_barrier_wait(&w->k->start);
	uint64_t mine = 0;
	while (!atomic_load(&w->k->done) && !atomic_load(&failed_flag)) {
		uint64_t missed;
		enum conc_status s = conc_ticker_take(&w->k->t, &missed);
		if (s == CONC_OK)
			mine += 1 + missed;
		else if (s == CONC_WOULDBLOCK)
			conc_yield();
		else
			fail("take: %s", conc_strerror(s));
	}
	atomic_fetch_add(&w->k->ticks, mine);
	return NULL;
}

static void scenario_ticks(size_t unused)
{
	(void)unused;
	static struct ticks k;
	memset(&k, 0, sizeof k);
	k.steps = SIZED(20000, 3000);
	struct conc_clock clk = conc_test_clock_init(&k.tc, 777);
	if (conc_ticker_init(&k.t, 100, &clk) != CONC_OK) {
		fail("conc_ticker_init failed");
		return;
	}
	barrier_init(&k.start, RECEIVERS + 1);
	struct ticks_worker w[RECEIVERS + 1];
	for (size_t t = 0; t <= RECEIVERS; t++) {
		w[t].k = &k;
		w[t].rng = rng_for(200 + t);
		spawn(&w[t].thread, t == RECEIVERS ? tick_clock_main : tick_take_main, &w[t]);
	}
	for (size_t t = 0; t <= RECEIVERS; t++)
		join(w[t].thread);
	uint64_t total = atomic_load(&k.ticks), missed;
	while (conc_ticker_take(&k.t, &missed) == CONC_OK)
		total += 1 + missed;
	uint64_t due = (uint64_t)(conc_test_clock_read(&k.tc) - 777) / 100;
	if (total != due)
		fail("%" PRIu64 " ticks taken or missed, %" PRIu64 " came due", total, due);
	pthread_barrier_destroy(&k.start);
	if (conc_ticker_destroy(&k.t) != CONC_OK)
		fail("destroy");
	note("%" PRIu64 " ticks", total);
}

static void *tick_wait_main(void *arg)
{
	struct ticks_worker *w = arg;
	pthread_barrier_wait(&w->k->start);
	for (;;) {
		uint64_t missed;
		enum conc_status s = conc_ticker_wait(&w->k->t, &missed);
		if (s == CONC_OK) {
			atomic_fetch_add(&w->k->ticks, 1 + missed);
		} else if (s == CONC_CLOSED) {
			atomic_fetch_add(&w->k->closed, 1);
			return NULL;
		} else {
			fail("wait: %s", conc_strerror(s));
			return NULL;
		}
	}
}

static void *tick_reset_main(void *arg)
{
	struct ticks_worker *w = arg;
	pthread_barrier_wait(&w->k->start);
	while (!atomic_load(&w->k->done))
		if (rng_below(&w->rng, 64) == 0) {
			if (conc_ticker_reset(&w->k->t, 20000 + (int64_t)rng_below(&w->rng, 20000)) != CONC_OK)
				fail("reset");
		} else {
			conc_yield();
		}
	return NULL;
}

static void scenario_stop(size_t unused)
{
	(void)unused;
	static struct ticks k;
	memset(&k, 0, sizeof k);
	if (conc_ticker_init(&k.t, 20000, NULL) != CONC_OK) { /* 20 us, real clock */
		fail("conc_ticker_init failed");
		return;
	}
	barrier_init(&k.start, RECEIVERS + 2);
	struct ticks_worker w[RECEIVERS + 1];
	for (size_t t = 0; t <= RECEIVERS; t++) {
		w[t].k = &k;
		w[t].rng = rng_for(300 + t);
		spawn(&w[t].thread, t == RECEIVERS ? tick_reset_main : tick_wait_main, &w[t]);
	}
	pthread_barrier_wait(&k.start);
	uint64_t target = SIZED(2000, 300);
	while (atomic_load(&k.ticks) < target && !atomic_load(&failed_flag))
		conc_yield();
	atomic_store(&k.done, true);
	join(w[RECEIVERS].thread);
	if (conc_ticker_stop(&k.t) != CONC_OK)
		fail("stop");
	for (size_t t = 0; t < RECEIVERS; t++)
		join(w[t].thread);
	if (atomic_load(&k.closed) != RECEIVERS)
		fail("%" PRIu64 " receivers saw the stop", atomic_load(&k.closed));
	pthread_barrier_destroy(&k.start);
	if (conc_ticker_destroy(&k.t) != CONC_OK)
		fail("a receiver was left blocked");
	note("%" PRIu64 " ticks", atomic_load(&k.ticks));
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"allow bound", scenario_allow, 0},
		{"reserve and cancel", scenario_reserve, 0},
		{"set storm", scenario_set, 0},
		{"wait and cancel", scenario_waits, 0},
		{"ticker, each tick once", scenario_ticks, 0},
		{"ticker, stop wakes", scenario_stop, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
