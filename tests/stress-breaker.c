/* SPDX-License-Identifier: MIT */
/*
 * stress-breaker: circuit breaker stress scenarios as a plain program
 * (Criterion does not start under ThreadSanitizer).  8 threads on a 2-core
 * machine, on a hand-moved clock shared by all threads.
 *
 *   closed count window
 *   closed time window
 *                     8 threads allow and report (successes, a few
 *                     failures and ignored calls, never enough to trip)
 *                     while, for the time window, a clock thread moves time
 *                     across bucket boundaries: every call is admitted, the
 *                     breaker stays closed, and at the end the window's
 *                     totals equal what its ring slots or buckets hold (no
 *                     drift), and a COUNT window holds exactly its size
 *   half-open no herd 8 threads hammer a breaker of 3 probes that keeps
 *                     tripping (a closed call fails at random), while a
 *                     clock thread moves time past open_ns and, now and
 *                     then, past the probe lease: in no generation are
 *                     more than 3 probes out at once, and with no ignored
 *                     reports no generation admits more than 3 probes in
 *                     all; every generation that closed got exactly 3
 *                     successful probe reports; the events form one chain
 *                     (generations 2, 3, ... each once, each change starting
 *                     where the one before ended)
 *   generations racing reset
 *                     the same, with a thread that resets, forces open and
 *                     forces closed at random points: the event chain still
 *                     holds, every change was either sent or counted
 *                     dropped, and the window's totals still equal its
 *                     contents
 *
 * No sleep stands in for synchronisation and no timing is asserted.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-breaker"
#include "stress.h"

#define THREADS 8
#define OPEN_NS 1000
#define LEASE_NS 100000
#define MAX_GEN 65536

static struct conc_test_clock tclock;
static struct conc_clock clock_;

/* The window's totals must equal its contents once nothing is in flight. */
static void check_window(struct conc_breaker *b)
{
	int64_t c = 0, f = 0, s = 0;
	if (!b->rates)
		return;
	for (uint32_t i = 0; i < b->window_size; i++) {
		if (b->window_kind == CONC_BREAKER_WINDOW_COUNT) {
			unsigned v = atomic_load(&b->ring[i]);
			c += (v & 1u) != 0;
			f += (v & 2u) != 0;
			s += (v & 4u) != 0;
		} else {
			c += atomic_load(&b->buckets[i].calls);
			f += atomic_load(&b->buckets[i].failures);
			s += atomic_load(&b->buckets[i].slow);
		}
	}
	int64_t tc = atomic_load(&b->calls), tf = atomic_load(&b->failures), ts = atomic_load(&b->slow);
	if (c != tc || f != tf || s != ts)
		fail("window drift: totals %" PRId64 "/%" PRId64 "/%" PRId64 ", contents %" PRId64 "/%" PRId64
		     "/%" PRId64, tc, tf, ts, c, f, s);
}

/* Drain the events channel and check that the changes form one chain from
 * generation 2 up to the breaker's generation; by_gen[g] (MAX_GEN entries,
 * zeroed) receives the event that started generation g. */
static void check_events(struct conc_breaker *b, struct conc_chan *ev, struct conc_breaker_event *by_gen)
{
	struct conc_breaker_metrics m;
	if (conc_breaker_metrics(b, &m) != CONC_OK) {
		fail("metrics");
		return;
	}
	uint64_t last = m.generation;
	if (last >= MAX_GEN) {
		fail("generation %" PRIu64 " beyond the test's table", last);
		return;
	}
	struct conc_breaker_event e;
	uint64_t n = 0;
	while (conc_chan_try_recv(ev, &e) == CONC_OK) {
		n++;
		if (e.generation < 2 || e.generation > last || by_gen[e.generation].generation) {
			fail("event for generation %" PRIu64 " (last %" PRIu64 ") out of range or twice", e.generation,
			     last);
			break;
		}
		by_gen[e.generation] = e;
	}
	if (m.events_dropped)
		fail("%" PRIu64 " events dropped (channel sized for all)", m.events_dropped);
	if (n != m.transitions || n != last - 1)
		fail("%" PRIu64 " events, %" PRIu64 " transitions, generation %" PRIu64, n, m.transitions, last);
	enum conc_breaker_state prev = CONC_BREAKER_CLOSED;
	for (uint64_t g = 2; g <= last && !atomic_load(&failed_flag); g++) {
		if (by_gen[g].from != prev)
			fail("generation %" PRIu64 " starts in %s, the one before ended in %s", g,
			     conc_breaker_state_name(by_gen[g].from), conc_breaker_state_name(prev));
		prev = by_gen[g].to;
	}
	if (prev != m.state)
		fail("last event ends in %s, the breaker is %s", conc_breaker_state_name(prev),
		     conc_breaker_state_name(m.state));
}

/* ------------------------------------------------------------ closed */

struct closed {
	struct conc_breaker *b;
	size_t rounds;
	_Atomic(uint64_t) refused, reported, running;
	pthread_barrier_t start;
};

struct closed_worker {
	struct closed *c;
	struct rng rng;
	pthread_t thread;
};

static void *closed_main(void *arg)
{
	struct closed_worker *w = arg;
	struct closed *c = w->c;
	pthread_barrier_wait(&c->start);
	for (size_t i = 0; i < c->rounds; i++) {
		struct conc_breaker_ticket t;
		if (conc_breaker_allow(c->b, &t) != CONC_OK) {
			atomic_fetch_add(&c->refused, 1);
			continue;
		}
		size_t k = rng_below(&w->rng, 16);
		enum conc_breaker_outcome o = k == 0 ? CONC_BREAKER_FAILURE : k == 1 ? CONC_BREAKER_IGNORED
										 : CONC_BREAKER_SUCCESS;
		if (conc_breaker_done(c->b, &t, o) != CONC_OK)
			fail("done refused a fresh ticket");
		atomic_fetch_add(&c->reported, 1);
	}
	atomic_fetch_sub(&c->running, 1);
	return NULL;
}

/* Moves the clock by 37 ns steps (crossing 100 ns buckets) while workers run. */
static void *clock_mover(void *arg)
{
	_Atomic(uint64_t) *running = arg;
	while (atomic_load(running) > 0) {
		conc_test_clock_advance(&tclock, 37);
		conc_yield();
	}
	return NULL;
}

static void run_closed(size_t kind)
{
	clock_ = conc_test_clock_init(&tclock, 0);
	struct conc_breaker_config cfg = {
		.consecutive_failures = 1000000, /* never */
		.failure_rate_pct = 90,
		.window_kind = (enum conc_breaker_window)kind,
		.window_size = kind == CONC_BREAKER_WINDOW_COUNT ? 64 : 10,
		.window_ns = 1000,
		.min_calls = 8,
		.open_ns = OPEN_NS,
		.probes = 1,
		.probe_lease_ns = LEASE_NS,
		.clock = &clock_,
	};
	struct closed c = {.rounds = SIZED(200000, 20000)};
	if (conc_breaker_new(&c.b, &cfg) != CONC_OK) {
		fail("conc_breaker_new");
		return;
	}
	atomic_init(&c.running, THREADS);
	barrier_init(&c.start, THREADS);
	struct closed_worker w[THREADS];
	for (size_t i = 0; i < THREADS; i++) {
		w[i].c = &c;
		w[i].rng = rng_for(i + 1);
		spawn(&w[i].thread, closed_main, &w[i]);
	}
	pthread_t mover;
	bool timed = kind == CONC_BREAKER_WINDOW_TIME;
	if (timed)
		spawn(&mover, clock_mover, &c.running);
	for (size_t i = 0; i < THREADS; i++)
		join(w[i].thread);
	if (timed)
		join(mover);
	pthread_barrier_destroy(&c.start);
	if (atomic_load(&c.refused))
		fail("%" PRIu64 " calls refused by a closed breaker", atomic_load(&c.refused));
	if (conc_breaker_state(c.b) != CONC_BREAKER_CLOSED)
		fail("tripped: %s", conc_breaker_state_name(conc_breaker_state(c.b)));
	check_window(c.b);
	if (!timed && atomic_load(&c.b->calls) != 64)
		fail("a full COUNT window holds %" PRId64 " calls, not 64", atomic_load(&c.b->calls));
	note("%" PRIu64 " calls reported", atomic_load(&c.reported));
	if (conc_breaker_free(c.b) != CONC_OK)
		fail("free");
}

/* ------------------------------------------------------- half-open, reset */

#define PROBES 3

struct herd {
	struct conc_breaker *b;
	struct conc_chan *events;
	bool ignores;  /* workers may report IGNORED */
	bool manual;   /* a thread resets and forces at random */
	size_t target; /* stop after this many state changes */
	_Atomic(int) stop;
	_Atomic(uint64_t) running;
	_Atomic(uint32_t) out[MAX_GEN];      /* probes out now, per generation */
	_Atomic(uint32_t) admitted[MAX_GEN]; /* probes admitted, per generation */
	_Atomic(uint32_t) succeeded[MAX_GEN];/* successful probe reports, per generation */
	pthread_barrier_t start;
};

struct herd_worker {
	struct herd *h;
	struct rng rng;
	pthread_t thread;
};

static bool herd_done(struct herd *h)
{
	struct conc_breaker_metrics m;
	if (conc_breaker_metrics(h->b, &m) != CONC_OK)
		return true;
	return m.transitions >= h->target || m.generation >= MAX_GEN - 64 || atomic_load(&failed_flag);
}

static void *herd_main(void *arg)
{
	struct herd_worker *w = arg;
	struct herd *h = w->h;
	pthread_barrier_wait(&h->start);
	while (!atomic_load(&h->stop)) {
		struct conc_breaker_ticket t;
		if (conc_breaker_allow(h->b, &t) != CONC_OK) {
			conc_yield();
			continue;
		}
		uint64_t g = t.generation;
		if (g >= MAX_GEN) {
			fail("generation %" PRIu64 " beyond the test's table", g);
			break;
		}
		enum conc_breaker_outcome o;
		if (t.probe) {
			uint32_t now_out = atomic_fetch_add(&h->out[g], 1) + 1;
			uint32_t all = atomic_fetch_add(&h->admitted[g], 1) + 1;
			if (now_out > PROBES)
				fail("herd: %u probes out at once in generation %" PRIu64, now_out, g);
			if (!h->ignores && all > PROBES)
				fail("herd: %u probes admitted in generation %" PRIu64, all, g);
			spin_random(&w->rng);
			size_t k = rng_below(&w->rng, 10);
			o = k == 0 ? CONC_BREAKER_FAILURE
			    : (k == 1 && h->ignores) ? CONC_BREAKER_IGNORED
						     : CONC_BREAKER_SUCCESS;
			if (o == CONC_BREAKER_SUCCESS)
				atomic_fetch_add(&h->succeeded[g], 1);
			atomic_fetch_sub(&h->out[g], 1);
		} else {
			o = rng_below(&w->rng, 8) == 0 ? CONC_BREAKER_FAILURE : CONC_BREAKER_SUCCESS;
		}
		if (conc_breaker_done(h->b, &t, o) != CONC_OK)
			fail("done refused a fresh ticket");
	}
	atomic_fetch_sub(&h->running, 1);
	return NULL;
}

/* Moves time: past open_ns while the breaker is open, past the lease now
 * and then while it is half-open; ends the run at the target. */
static void *herd_clock(void *arg)
{
	struct herd *h = arg;
	struct rng r = rng_for(1000);
	while (!herd_done(h)) {
		enum conc_breaker_state s = conc_breaker_state(h->b);
		if (s == CONC_BREAKER_OPEN)
			conc_test_clock_advance(&tclock, OPEN_NS);
		else if (s == CONC_BREAKER_HALF_OPEN && rng_below(&r, 64) == 0)
			conc_test_clock_advance(&tclock, LEASE_NS);
		else if (s == CONC_BREAKER_FORCED_OPEN && !h->manual)
			fail("forced open without a manual thread");
		conc_yield();
	}
	atomic_store(&h->stop, 1);
	return NULL;
}

static void *herd_manual(void *arg)
{
	struct herd *h = arg;
	struct rng r = rng_for(2000);
	uint64_t seen = 0;
	while (!atomic_load(&h->stop)) {
		/* Let 1 to 4 other state changes happen (none come while
		 * forced), then act at a random point (a short spin, no yield:
		 * with 10 runnable threads on 2 cores a yield costs whole time
		 * slices). */
		uint64_t next = seen + 1 + rng_below(&r, 4);
		while (!atomic_load(&h->stop) && atomic_load(&h->b->transitions) < next) {
			enum conc_breaker_state st = conc_breaker_state(h->b);
			if (st == CONC_BREAKER_FORCED_OPEN || st == CONC_BREAKER_FORCED_CLOSED)
				break;
			conc_yield();
		}
		for (size_t i = rng_below(&r, 2048); i > 0; i--)
			conc_cpu_relax();
		switch (rng_below(&r, 4)) {
		case 0: (void)conc_breaker_force_open(h->b); break;
		case 1: (void)conc_breaker_force_closed(h->b); break;
		default: (void)conc_breaker_reset(h->b); break;
		}
		seen = atomic_load(&h->b->transitions);
	}
	return NULL;
}

static void run_herd(size_t mode)
{
	clock_ = conc_test_clock_init(&tclock, 0);
	struct herd *h = xcalloc(1, sizeof *h);
	h->ignores = mode >= 1;
	h->manual = mode == 2;
	h->target = h->manual ? SIZED(5000, 500) : SIZED(20000, 2000);
	if (conc_chan_new(&h->events, MAX_GEN, sizeof(struct conc_breaker_event)) != CONC_OK) {
		fail("conc_chan_new");
		free(h);
		return;
	}
	struct conc_breaker_config cfg = {
		.consecutive_failures = 2,
		.failure_rate_pct = 50,
		.window_kind = CONC_BREAKER_WINDOW_COUNT,
		.window_size = 16,
		.min_calls = 16,
		.open_ns = OPEN_NS,
		.probes = PROBES,
		.probe_lease_ns = LEASE_NS,
		.clock = &clock_,
		.events = h->events,
	};
	if (conc_breaker_new(&h->b, &cfg) != CONC_OK) {
		fail("conc_breaker_new");
		return;
	}
	atomic_init(&h->running, THREADS);
	barrier_init(&h->start, THREADS);
	struct herd_worker w[THREADS];
	for (size_t i = 0; i < THREADS; i++) {
		w[i].h = h;
		w[i].rng = rng_for(i + 1);
		spawn(&w[i].thread, herd_main, &w[i]);
	}
	pthread_t clk, man;
	spawn(&clk, herd_clock, h);
	if (h->manual)
		spawn(&man, herd_manual, h);
	for (size_t i = 0; i < THREADS; i++)
		join(w[i].thread);
	join(clk);
	if (h->manual)
		join(man);
	pthread_barrier_destroy(&h->start);

	struct conc_breaker_event *by_gen = xcalloc(MAX_GEN, sizeof *by_gen);
	check_events(h->b, h->events, by_gen);
	check_window(h->b);
	struct conc_breaker_metrics m = {0};
	(void)conc_breaker_metrics(h->b, &m);
	uint64_t half = 0, closes = 0;
	for (uint64_t g = 2; g + 1 < MAX_GEN && g <= m.generation; g++) {
		uint32_t s = atomic_load(&h->succeeded[g]), a = atomic_load(&h->admitted[g]);
		if (a)
			half++;
		if (by_gen[g].to != CONC_BREAKER_HALF_OPEN && a)
			fail("generation %" PRIu64 " (%s) admitted %u probes", g, conc_breaker_state_name(by_gen[g].to), a);
		if (!h->ignores && a > PROBES)
			fail("generation %" PRIu64 ": %u probes", g, a);
		if (g == m.generation || by_gen[g + 1].reason != CONC_BREAKER_REASON_PROBES_SUCCEEDED)
			continue;
		/* Closed by its probes: PROBES successes were counted, so at least
		 * PROBES were reported; with no ignored probes, exactly PROBES
		 * were admitted and all of them succeeded. */
		closes++;
		if (s < PROBES || (!h->ignores && (a != PROBES || s != PROBES)))
			fail("generation %" PRIu64 " closed with %u probes admitted, %u succeeded", g, a, s);
	}
	if (!h->manual && closes == 0)
		fail("no half-open generation ever closed");
	free(by_gen);
	note("%" PRIu64 " state changes, %" PRIu64 " half-open generations with probes, %" PRIu64
	     " closed by probes, %" PRIu64 " stale reports",
	     m.transitions, half, closes, m.stale);
	if (conc_breaker_free(h->b) != CONC_OK || conc_chan_free(h->events) != CONC_OK)
		fail("free");
	free(h);
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"closed count window", run_closed, CONC_BREAKER_WINDOW_COUNT},
		{"closed time window", run_closed, CONC_BREAKER_WINDOW_TIME},
		{"half-open no herd", run_herd, 0},
		{"half-open no herd, ignored probes", run_herd, 1},
		{"generations racing reset", run_herd, 2},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], STRESS_PARKER);
}
