/* SPDX-License-Identifier: MIT */
/*
 * test-breaker: the circuit breaker (conc/breaker.h), driven by a clock the
 * test moves by hand, so every trip, every window roll-off and every
 * open/half-open boundary is checked at its exact nanosecond and call.
 * Single-threaded except the call-wrapper cancellation test.
 */

/* Allocation hook (chan.h lets it be overridden): CONC_NOMEM without asking
 * the system for an impossible block. */
static int brk_alloc_fail;
#define CONC_ALIGNED_ALLOC(align, size) (brk_alloc_fail ? NULL : aligned_alloc((align), (size)))
#define CONC_FREE(p) free(p)

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

#define OPEN_NS 1000
#define LEASE_NS 500

static struct conc_test_clock tc;
static struct conc_clock clk;

/* A configuration with only the consecutive-failure criterion. */
static struct conc_breaker_config base_cfg(uint32_t consecutive)
{
	struct conc_breaker_config c;
	memset(&c, 0, sizeof c);
	c.consecutive_failures = consecutive;
	c.open_ns = OPEN_NS;
	c.probes = 1;
	c.probe_lease_ns = LEASE_NS;
	c.clock = &clk;
	return c;
}

static struct conc_breaker *mk(const struct conc_breaker_config *c)
{
	struct conc_breaker *b = NULL;
	cr_assert_eq(conc_breaker_new(&b, c), CONC_OK);
	cr_assert_not_null(b);
	return b;
}

static struct conc_breaker_ticket admit(struct conc_breaker *b)
{
	struct conc_breaker_ticket t;
	cr_assert_eq(conc_breaker_allow(b, &t), CONC_OK, "allow refused in state %s",
		     conc_breaker_state_name(conc_breaker_state(b)));
	cr_assert_neq(t.generation, 0);
	return t;
}

static int64_t refused(struct conc_breaker *b)
{
	struct conc_breaker_ticket t;
	cr_assert_eq(conc_breaker_allow(b, &t), CONC_REJECTED, "allow admitted in state %s",
		     conc_breaker_state_name(conc_breaker_state(b)));
	cr_assert_eq(t.generation, 0);
	return t.retry_after_ns;
}

/* One admitted call reported with outcome o, taking dur ns of clock. */
static void one(struct conc_breaker *b, enum conc_breaker_outcome o, int64_t dur)
{
	struct conc_breaker_ticket t = admit(b);
	conc_test_clock_advance(&tc, dur);
	cr_assert_eq(conc_breaker_done(b, &t, o), CONC_OK);
}

static struct conc_breaker_metrics metrics(struct conc_breaker *b)
{
	struct conc_breaker_metrics m;
	cr_assert_eq(conc_breaker_metrics(b, &m), CONC_OK);
	return m;
}

static void setup(void)
{
	clk = conc_test_clock_init(&tc, 1000000);
	brk_alloc_fail = 0;
}

TestSuite(breaker, .init = setup, .timeout = 60);

Test(breaker, trips_at_exactly_n_consecutive_failures)
{
	struct conc_breaker_config c = base_cfg(3);
	struct conc_breaker *b = mk(&c);
	one(b, CONC_BREAKER_FAILURE, 0);
	one(b, CONC_BREAKER_FAILURE, 0);
	one(b, CONC_BREAKER_SUCCESS, 0); /* breaks the run */
	cr_assert_eq(metrics(b).consecutive_failures, 0);
	one(b, CONC_BREAKER_FAILURE, 0);
	one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	cr_assert_eq(metrics(b).consecutive_failures, 2);
	one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(refused(b), OPEN_NS);
	struct conc_breaker_metrics m = metrics(b);
	cr_assert_eq(m.generation, 2);
	cr_assert_eq(m.rejected, 1);
	cr_assert_eq(m.transitions, 1);
	cr_assert_eq(m.consecutive_failures, 0, "emptied on the trip");
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

static struct conc_breaker_config rate_cfg(uint32_t pct, uint32_t size, uint32_t min)
{
	struct conc_breaker_config c = base_cfg(0);
	c.failure_rate_pct = pct;
	c.window_kind = CONC_BREAKER_WINDOW_COUNT;
	c.window_size = size;
	c.min_calls = min;
	return c;
}

Test(breaker, failure_rate_only_after_min_calls)
{
	struct conc_breaker_config c = rate_cfg(50, 10, 5);
	struct conc_breaker *b = mk(&c);
	for (int i = 0; i < 4; i++)
		one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED, "4 of 4 failed but min_calls is 5");
	cr_assert_eq(metrics(b).window_failures, 4);
	one(b, CONC_BREAKER_SUCCESS, 0); /* 4 of 5: the success that reaches min_calls trips it */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(metrics(b).window_calls, 0, "window emptied on the trip");
	cr_assert_eq(conc_breaker_free(b), CONC_OK);

	b = mk(&c);
	for (int i = 0; i < 3; i++)
		one(b, CONC_BREAKER_SUCCESS, 0);
	one(b, CONC_BREAKER_FAILURE, 0);
	one(b, CONC_BREAKER_FAILURE, 0); /* 2 of 5 = 40% */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	one(b, CONC_BREAKER_FAILURE, 0); /* 3 of 6 = 50% */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, count_window_slides_exactly)
{
	struct conc_breaker_config c = rate_cfg(100, 4, 4);
	struct conc_breaker *b = mk(&c);
	static const int seq[] = {1, 1, 1, 0, 0, 1, 1, 1}; /* 1 = failure */
	for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++)
		one(b, seq[i] ? CONC_BREAKER_FAILURE : CONC_BREAKER_SUCCESS, 0);
	struct conc_breaker_metrics m = metrics(b);
	cr_assert_eq(m.state, CONC_BREAKER_CLOSED);
	cr_assert_eq(m.window_calls, 4);
	cr_assert_eq(m.window_failures, 3, "the first three failures slid out");
	one(b, CONC_BREAKER_FAILURE, 0); /* the last success slides out: 4 of 4 */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, slow_call_rate)
{
	struct conc_breaker_config c = base_cfg(0);
	c.slow_rate_pct = 50;
	c.slow_ns = 100;
	c.window_kind = CONC_BREAKER_WINDOW_COUNT;
	c.window_size = 4;
	c.min_calls = 2;
	struct conc_chan *ev = new_chan(4, sizeof(struct conc_breaker_event));
	c.events = ev;
	struct conc_breaker *b = mk(&c);
	one(b, CONC_BREAKER_SUCCESS, 99);
	cr_assert_eq(metrics(b).window_slow, 0, "99 ns is not slow");
	one(b, CONC_BREAKER_SUCCESS, 99);
	one(b, CONC_BREAKER_SUCCESS, 100); /* 1 of 3 slow */
	cr_assert_eq(metrics(b).window_slow, 1);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	one(b, CONC_BREAKER_SUCCESS, 250); /* 2 of 4 = 50% */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	struct conc_breaker_event e;
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_SLOW_RATE);

	/* A slow probe fails the half-open test. */
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket t = admit(b);
	cr_assert(t.probe);
	conc_test_clock_advance(&tc, 100);
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.to, CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_PROBE_SLOW);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
	free_chan(ev);
}

static struct conc_breaker_config time_cfg(void)
{
	struct conc_breaker_config c = base_cfg(0);
	c.failure_rate_pct = 100;
	c.window_kind = CONC_BREAKER_WINDOW_TIME;
	c.window_size = 10;
	c.window_ns = 1000; /* buckets of 100 ns */
	c.min_calls = 3;
	return c;
}

/* One call reported with outcome o at t0 + at. */
static void at(struct conc_breaker *b, enum conc_breaker_outcome o, int64_t t0, int64_t at_ns)
{
	conc_test_clock_set(&tc, t0 + at_ns);
	one(b, o, 0);
}

Test(breaker, time_window_buckets_roll_off_exactly)
{
	struct conc_breaker_config c = time_cfg();
	int64_t t0 = atomic_load(&tc.ns);
	/* At t0 + 999 the window still holds bucket 0 (t0 .. t0 + 99). */
	struct conc_breaker *b = mk(&c);
	at(b, CONC_BREAKER_FAILURE, t0, 0);
	at(b, CONC_BREAKER_FAILURE, t0, 950);
	at(b, CONC_BREAKER_FAILURE, t0, 999);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);

	/* At t0 + 1000 bucket 0 has slid out. */
	conc_test_clock_set(&tc, t0);
	b = mk(&c);
	at(b, CONC_BREAKER_FAILURE, t0, 0);
	at(b, CONC_BREAKER_FAILURE, t0, 950);
	at(b, CONC_BREAKER_FAILURE, t0, 1000);
	struct conc_breaker_metrics m = metrics(b);
	cr_assert_eq(m.state, CONC_BREAKER_CLOSED);
	cr_assert_eq(m.window_calls, 2);
	at(b, CONC_BREAKER_FAILURE, t0, 1050);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_reset(b), CONC_OK);

	/* A long silence empties every bucket at the next report. */
	one(b, CONC_BREAKER_SUCCESS, 0);
	one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(metrics(b).window_calls, 2);
	conc_test_clock_advance(&tc, 123456);
	one(b, CONC_BREAKER_FAILURE, 0);
	m = metrics(b);
	cr_assert_eq(m.window_calls, 1);
	cr_assert_eq(m.window_failures, 1);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);

	/* Old successes sliding out raise the rate: a success can trip it. */
	c.failure_rate_pct = 50;
	c.min_calls = 2; /* so the report below is not the min_calls crossing */
	conc_test_clock_set(&tc, t0);
	b = mk(&c);
	for (int i = 0; i < 3; i++)
		at(b, CONC_BREAKER_SUCCESS, t0, 0);
	at(b, CONC_BREAKER_FAILURE, t0, 900);
	at(b, CONC_BREAKER_FAILURE, t0, 910); /* 2 of 5 */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	at(b, CONC_BREAKER_SUCCESS, t0, 1000); /* bucket 0 out: 2 of 3 */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

/* Trip a consecutive(1) breaker now; returns the time of the trip. */
static int64_t trip(struct conc_breaker *b)
{
	one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	return atomic_load(&tc.ns);
}

Test(breaker, half_open_at_exactly_open_ns)
{
	struct conc_breaker_config c = base_cfg(1);
	struct conc_breaker *b = mk(&c);
	trip(b);
	conc_test_clock_advance(&tc, OPEN_NS - 1);
	cr_assert_eq(refused(b), 1);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	conc_test_clock_advance(&tc, 1);
	struct conc_breaker_ticket t = admit(b);
	cr_assert(t.probe);
	cr_assert_eq(t.state, CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(metrics(b).generation, 3);
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, probe_cap_and_all_probes_must_succeed)
{
	struct conc_breaker_config c = base_cfg(1);
	c.probes = 3;
	struct conc_breaker *b = mk(&c);
	trip(b);
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket p[3];
	for (int i = 0; i < 3; i++) {
		p[i] = admit(b);
		cr_assert(p[i].probe);
	}
	cr_assert_eq(refused(b), LEASE_NS, "no fourth probe");
	cr_assert_eq(metrics(b).probes_admitted, 3);
	cr_assert_eq(conc_breaker_done(b, &p[0], CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_done(b, &p[1], CONC_BREAKER_SUCCESS), CONC_OK);
	struct conc_breaker_metrics m = metrics(b);
	cr_assert_eq(m.state, CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(m.probes_succeeded, 2);
	(void)refused(b); /* a finished probe does not free a permit */
	cr_assert_eq(conc_breaker_done(b, &p[2], CONC_BREAKER_SUCCESS), CONC_OK);
	m = metrics(b);
	cr_assert_eq(m.state, CONC_BREAKER_CLOSED);
	cr_assert_eq(m.generation, 4);
	cr_assert_eq(m.consecutive_failures, 0);
	struct conc_breaker_ticket t = admit(b);
	cr_assert_not(t.probe);
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, probe_failure_reopens_for_open_ns)
{
	struct conc_breaker_config c = base_cfg(1);
	c.probes = 2;
	struct conc_breaker *b = mk(&c);
	trip(b);
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket p1 = admit(b), p2 = admit(b);
	cr_assert_eq(conc_breaker_done(b, &p1, CONC_BREAKER_SUCCESS), CONC_OK);
	conc_test_clock_advance(&tc, 7);
	cr_assert_eq(conc_breaker_done(b, &p2, CONC_BREAKER_FAILURE), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(metrics(b).generation, 4);
	cr_assert_eq(refused(b), OPEN_NS, "open_ns counted from the failed probe");
	conc_test_clock_advance(&tc, OPEN_NS - 1);
	cr_assert_eq(refused(b), 1);
	conc_test_clock_advance(&tc, 1);
	struct conc_breaker_ticket t = admit(b);
	cr_assert(t.probe);
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_IGNORED), CONC_OK);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, probe_lease_expiry_counts_as_failure)
{
	struct conc_breaker_config c = base_cfg(1);
	struct conc_chan *ev = new_chan(8, sizeof(struct conc_breaker_event));
	c.events = ev;
	struct conc_breaker *b = mk(&c);
	trip(b);
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket lost = admit(b);
	conc_test_clock_advance(&tc, LEASE_NS - 1);
	cr_assert_eq(refused(b), 1);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_HALF_OPEN);
	conc_test_clock_advance(&tc, 1);
	cr_assert_eq(refused(b), OPEN_NS, "the lease ran out: open again");
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	struct conc_breaker_event e;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.from, CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(e.to, CONC_BREAKER_OPEN);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_PROBE_LEASE_EXPIRED);
	cr_assert_eq(e.at_ns, atomic_load(&tc.ns));
	/* The lost probe reports at last: stale. */
	cr_assert_eq(conc_breaker_done(b, &lost, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(metrics(b).stale, 1);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);

	/* With two probes the lease runs from the newer admission (never early). */
	conc_test_clock_advance(&tc, OPEN_NS);
	c.probes = 2;
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
	b = mk(&c);
	trip(b);
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket a = admit(b);
	conc_test_clock_advance(&tc, 300);
	struct conc_breaker_ticket d = admit(b);
	conc_test_clock_advance(&tc, LEASE_NS - 300);
	cr_assert_eq(refused(b), 300, "d's lease still runs");
	conc_test_clock_advance(&tc, 300);
	(void)refused(b);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_done(b, &a, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_done(b, &d, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(metrics(b).stale, 2);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
	free_chan(ev);
}

Test(breaker, stale_generation_is_ignored)
{
	struct conc_breaker_config c = base_cfg(2);
	struct conc_breaker *b = mk(&c);
	struct conc_breaker_ticket old1 = admit(b), old2 = admit(b);
	cr_assert_eq(conc_breaker_reset(b), CONC_OK);
	cr_assert_eq(conc_breaker_done(b, &old1, CONC_BREAKER_FAILURE), CONC_OK);
	cr_assert_eq(conc_breaker_done(b, &old2, CONC_BREAKER_FAILURE), CONC_OK);
	struct conc_breaker_metrics m = metrics(b);
	cr_assert_eq(m.state, CONC_BREAKER_CLOSED);
	cr_assert_eq(m.stale, 2);
	cr_assert_eq(m.consecutive_failures, 0);

	/* A probe of an earlier half-open cannot close a later one. */
	one(b, CONC_BREAKER_FAILURE, 0);
	one(b, CONC_BREAKER_FAILURE, 0);
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket p = admit(b);
	cr_assert_eq(conc_breaker_done(b, &p, CONC_BREAKER_FAILURE), CONC_OK);
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket q = admit(b);
	struct conc_breaker_ticket copy = p;
	copy.generation = q.generation - 2; /* the first half-open's */
	cr_assert_eq(conc_breaker_done(b, &copy, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(metrics(b).stale, 3);
	cr_assert_eq(conc_breaker_done(b, &q, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, ignored_outcome_is_not_counted)
{
	struct conc_breaker_config c = base_cfg(2);
	struct conc_breaker *b = mk(&c);
	one(b, CONC_BREAKER_FAILURE, 0);
	one(b, CONC_BREAKER_IGNORED, 0); /* neither breaks nor extends the run */
	cr_assert_eq(metrics(b).consecutive_failures, 1);
	cr_assert_eq(metrics(b).ignored, 1);
	one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);

	/* An ignored probe gives its permit back. */
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket p = admit(b);
	(void)refused(b);
	cr_assert_eq(conc_breaker_done(b, &p, CONC_BREAKER_IGNORED), CONC_OK);
	cr_assert_eq(metrics(b).probes_admitted, 0);
	struct conc_breaker_ticket q = admit(b);
	cr_assert(q.probe);
	cr_assert_eq(conc_breaker_done(b, &q, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);

	/* Rate windows do not see ignored calls either. */
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
	c = rate_cfg(50, 4, 2);
	b = mk(&c);
	for (int i = 0; i < 5; i++)
		one(b, CONC_BREAKER_IGNORED, 0);
	cr_assert_eq(metrics(b).window_calls, 0);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, force_open_force_closed_reset)
{
	struct conc_breaker_config c = base_cfg(1);
	struct conc_breaker *b = mk(&c);
	struct conc_breaker_ticket t = admit(b);
	cr_assert_eq(conc_breaker_force_open(b), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_FORCED_OPEN);
	cr_assert_eq(refused(b), CONC_BREAKER_RETRY_NEVER);
	conc_test_clock_advance(&tc, 100 * OPEN_NS);
	cr_assert_eq(refused(b), CONC_BREAKER_RETRY_NEVER, "forced open does not half-open");
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_FAILURE), CONC_OK);
	cr_assert_eq(metrics(b).stale, 1);

	cr_assert_eq(conc_breaker_force_closed(b), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_FORCED_CLOSED);
	for (int i = 0; i < 5; i++)
		one(b, CONC_BREAKER_FAILURE, 0);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_FORCED_CLOSED, "forced closed never trips");
	t = admit(b);
	cr_assert_eq(t.state, CONC_BREAKER_FORCED_CLOSED);

	uint64_t g = metrics(b).generation;
	cr_assert_eq(conc_breaker_reset(b), CONC_OK);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	cr_assert_eq(metrics(b).generation, g + 1);
	cr_assert_eq(conc_breaker_reset(b), CONC_OK);
	cr_assert_eq(metrics(b).generation, g + 2, "reset always starts a generation");
	cr_assert_eq(conc_breaker_done(b, &t, CONC_BREAKER_SUCCESS), CONC_OK);
	trip(b);
	cr_assert_eq(conc_breaker_metrics(b, &(struct conc_breaker_metrics){0}), CONC_OK);
	cr_assert_eq(metrics(b).transitions, 5);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, events_on_a_channel_and_dropped_when_full)
{
	struct conc_chan *ev = new_chan(2, sizeof(struct conc_breaker_event));
	struct conc_breaker_config c = base_cfg(1);
	c.events = ev;
	struct conc_breaker *b = mk(&c);
	int64_t at = trip(b);                                   /* 1: closed -> open */
	conc_test_clock_advance(&tc, OPEN_NS);
	struct conc_breaker_ticket p = admit(b);                 /* 2: open -> half-open */
	cr_assert_eq(conc_breaker_done(b, &p, CONC_BREAKER_FAILURE), CONC_OK); /* 3: dropped */
	cr_assert_eq(metrics(b).events_dropped, 1);
	struct conc_breaker_event e;
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.from, CONC_BREAKER_CLOSED);
	cr_assert_eq(e.to, CONC_BREAKER_OPEN);
	cr_assert_eq(e.generation, 2);
	cr_assert_eq(e.at_ns, at);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_CONSECUTIVE_FAILURES);
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.from, CONC_BREAKER_OPEN);
	cr_assert_eq(e.to, CONC_BREAKER_HALF_OPEN);
	cr_assert_eq(e.generation, 3);
	cr_assert_eq(e.at_ns, at + OPEN_NS);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_OPEN_ELAPSED);
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_EMPTY);

	cr_assert_eq(conc_breaker_reset(b), CONC_OK);
	cr_assert_eq(conc_chan_try_recv(ev, &e), CONC_OK);
	cr_assert_eq(e.from, CONC_BREAKER_OPEN);
	cr_assert_eq(e.to, CONC_BREAKER_CLOSED);
	cr_assert_eq(e.generation, 5);
	cr_assert_eq(e.reason, CONC_BREAKER_REASON_RESET);
	/* A closed channel drops events too, and never blocks the breaker. */
	cr_assert_eq(conc_chan_close(ev), CONC_OK);
	cr_assert_eq(conc_breaker_force_open(b), CONC_OK);
	cr_assert_eq(metrics(b).events_dropped, 2);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
	free_chan(ev);
}

struct call_arg {
	int ret;
	int calls;
	struct conc_ctx *cancel; /* canceled inside the call, if set */
};

static int call_fn(struct conc_ctx *ctx, void *arg)
{
	struct call_arg *a = arg;
	(void)ctx;
	a->calls++;
	if (a->cancel)
		(void)conc_ctx_cancel(a->cancel, CONC_CANCELED);
	return a->ret;
}

Test(breaker, call_wrapper_maps_outcomes)
{
	struct conc_breaker_config c = base_cfg(2);
	struct conc_breaker *b = mk(&c);
	struct call_arg a = {0, 0, NULL};
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, NULL, NULL), 0);
	a.ret = 42;
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, NULL, NULL), 42);
	cr_assert_eq(metrics(b).consecutive_failures, 1, "a non-zero result is a failure");
	a.ret = CONC_CANCELED;
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, NULL, NULL), CONC_CANCELED);
	cr_assert_eq(metrics(b).ignored, 1, "CONC_CANCELED is not a failure");

	/* The caller's context ends during the call: its timeout is not a failure. */
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	a.ret = CONC_TIMEDOUT;
	a.cancel = &ctx;
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, &ctx, NULL), CONC_TIMEDOUT);
	cr_assert_eq(metrics(b).ignored, 2);
	cr_assert_eq(metrics(b).consecutive_failures, 1);
	/* Already done: fn is not called, nothing is taken. */
	int before = a.calls;
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, &ctx, NULL), CONC_CANCELED);
	cr_assert_eq(a.calls, before);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);

	a.cancel = NULL;
	a.ret = 1;
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, NULL, NULL), 1);
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_OPEN);
	struct conc_breaker_ticket info;
	before = a.calls;
	cr_assert_eq(conc_breaker_call(b, call_fn, &a, NULL, &info), CONC_REJECTED);
	cr_assert_eq(a.calls, before, "refused: not called");
	cr_assert_eq(info.retry_after_ns, OPEN_NS);
	cr_assert_eq(info.state, CONC_BREAKER_OPEN);
	cr_assert_eq(conc_breaker_call(NULL, call_fn, &a, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_breaker_call(b, NULL, &a, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

/* The protected call waits on its context until another thread cancels it. */
static int wait_fn(struct conc_ctx *ctx, void *arg)
{
	(void)arg;
	return conc_ctx_wait_until(ctx, conc_deadline_forever());
}

struct caller {
	struct conc_breaker *b;
	struct conc_ctx *ctx;
	int result;
};

static void *caller_main(void *arg)
{
	struct caller *c = arg;
	c->result = conc_breaker_call(c->b, wait_fn, NULL, c->ctx, NULL);
	return NULL;
}

Test(breaker, call_canceled_from_another_thread_is_ignored)
{
	struct conc_breaker_config c = base_cfg(1);
	struct conc_breaker *b = mk(&c);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct caller k = {b, &ctx, -1};
	pthread_t th;
	start(&th, caller_main, &k);
	conc_test_wait_parked(&ctx.waiters, 1); /* inside the call, no lock held */
	cr_assert_eq(conc_breaker_state(b), CONC_BREAKER_CLOSED);
	one(b, CONC_BREAKER_SUCCESS, 0); /* others are admitted meanwhile */
	cr_assert_eq(conc_ctx_cancel(&ctx, CONC_CANCELED), CONC_OK);
	join(th);
	cr_assert_eq(k.result, CONC_CANCELED);
	struct conc_breaker_metrics m = metrics(b);
	cr_assert_eq(m.state, CONC_BREAKER_CLOSED, "a canceled call is not a failure (threshold 1)");
	cr_assert_eq(m.ignored, 1);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, bad_input)
{
	struct conc_breaker *b = NULL;
	struct conc_breaker_config c = base_cfg(1);
	struct conc_breaker_config bad;
	cr_assert_eq(conc_breaker_new(NULL, &c), CONC_INVALID);
	cr_assert_eq(conc_breaker_new(&b, NULL), CONC_INVALID);
#define BAD(field, value)                                                        \
	do {                                                                     \
		bad = c;                                                         \
		bad.field = value;                                               \
		cr_assert_eq(conc_breaker_new(&b, &bad), CONC_INVALID, #field);  \
		cr_assert_null(b);                                               \
	} while (0)
	BAD(consecutive_failures, 0); /* no criterion at all */
	BAD(probes, 0);
	BAD(probes, CONC_BREAKER_MAX_PROBES + 1);
	BAD(open_ns, 0);
	BAD(open_ns, -5);
	BAD(probe_lease_ns, 0);
	BAD(failure_rate_pct, 101);
	BAD(slow_rate_pct, 101);
	BAD(slow_ns, -1);
	c = rate_cfg(50, 4, 2);
	BAD(window_size, 0);
	BAD(min_calls, 0);
	BAD(min_calls, 5); /* more than a COUNT window holds */
	BAD(window_kind, (enum conc_breaker_window)7);
	c = time_cfg();
	BAD(window_ns, 0);
	BAD(window_ns, 1005); /* not a multiple of 10 buckets */
	c = base_cfg(1);
	c.slow_rate_pct = 10; /* without slow_ns */
	c.window_size = 4;
	c.min_calls = 1;
	cr_assert_eq(conc_breaker_new(&b, &c), CONC_INVALID);
	struct conc_chan *wrong = new_chan(1, 8);
	c = base_cfg(1);
	c.events = wrong;
	cr_assert_eq(conc_breaker_new(&b, &c), CONC_INVALID, "events channel of the wrong element");
	free_chan(wrong);

	/* Caller memory. */
	struct conc_breaker sb;
	c = rate_cfg(50, 16, 2);
	size_t need = conc_breaker_buf_size(&c);
	cr_assert_eq(need, 16);
	uint64_t buf[4];
	cr_assert_eq(conc_breaker_init(&sb, &c, NULL, need), CONC_INVALID);
	cr_assert_eq(conc_breaker_init(&sb, &c, (char *)buf + 1, need), CONC_INVALID);
	cr_assert_eq(conc_breaker_init(&sb, &c, buf, need - 1), CONC_OVERFLOW);
	cr_assert_eq(conc_breaker_init(NULL, &c, buf, need), CONC_INVALID);
	cr_assert_eq(conc_breaker_buf_size(NULL), 0);
	c = time_cfg();
	cr_assert_eq(conc_breaker_buf_size(&c), 10 * sizeof(struct conc__breaker_bucket));
	c = base_cfg(3);
	cr_assert_eq(conc_breaker_buf_size(&c), 0, "no rate, no window");
	cr_assert_eq(conc_breaker_init(&sb, &c, NULL, 0), CONC_OK);
	cr_assert_eq(conc_breaker_free(&sb), CONC_INVALID, "not allocated");

	struct conc_breaker_ticket t;
	cr_assert_eq(conc_breaker_allow(NULL, &t), CONC_INVALID);
	cr_assert_eq(conc_breaker_allow(&sb, NULL), CONC_INVALID);
	t = admit(&sb);
	struct conc_breaker_ticket t2 = t;
	cr_assert_eq(conc_breaker_done(&sb, &t, (enum conc_breaker_outcome)9), CONC_INVALID);
	cr_assert_eq(conc_breaker_done(NULL, &t, CONC_BREAKER_SUCCESS), CONC_INVALID);
	cr_assert_eq(conc_breaker_done(&sb, NULL, CONC_BREAKER_SUCCESS), CONC_INVALID);
	cr_assert_eq(conc_breaker_done(&sb, &t, CONC_BREAKER_SUCCESS), CONC_OK);
	cr_assert_eq(conc_breaker_done(&sb, &t, CONC_BREAKER_SUCCESS), CONC_INVALID, "reported twice");
	(void)t2;
	cr_assert_eq(conc_breaker_force_open(&sb), CONC_OK);
	cr_assert_eq(conc_breaker_allow(&sb, &t), CONC_REJECTED);
	cr_assert_eq(conc_breaker_done(&sb, &t, CONC_BREAKER_FAILURE), CONC_INVALID, "a refused ticket");
	cr_assert_eq(conc_breaker_metrics(&sb, NULL), CONC_INVALID);
	cr_assert_eq(conc_breaker_metrics(NULL, &(struct conc_breaker_metrics){0}), CONC_INVALID);
	cr_assert_eq(conc_breaker_state(NULL), CONC_BREAKER_CLOSED);
	cr_assert_eq(conc_breaker_force_open(NULL), CONC_INVALID);
	cr_assert_eq(conc_breaker_force_closed(NULL), CONC_INVALID);
	cr_assert_eq(conc_breaker_reset(NULL), CONC_INVALID);
	cr_assert_str_eq(conc_breaker_state_name(CONC_BREAKER_HALF_OPEN), "half-open");
	cr_assert_str_eq(conc_breaker_state_name((enum conc_breaker_state)42), "?");

	cr_assert_eq(conc_breaker_destroy(&sb), CONC_OK);
	cr_assert_eq(conc_breaker_destroy(&sb), CONC_INVALID);
	cr_assert_eq(conc_breaker_allow(&sb, &t), CONC_INVALID, "after destroy");
	cr_assert_eq(conc_breaker_reset(&sb), CONC_INVALID);
	cr_assert_eq(conc_breaker_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_breaker_free(NULL), CONC_OK);

	b = mk(&c);
	cr_assert_eq(conc_breaker_destroy(b), CONC_INVALID, "allocated: use free");
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
#undef BAD
}

Test(breaker, out_of_memory)
{
	struct conc_breaker_config c = time_cfg();
	struct conc_breaker *b = NULL;
	brk_alloc_fail = 1;
	cr_assert_eq(conc_breaker_new(&b, &c), CONC_NOMEM);
	cr_assert_null(b);
	brk_alloc_fail = 0;
	cr_assert_eq(conc_breaker_new(&b, &c), CONC_OK);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}

Test(breaker, real_clock_by_default)
{
	struct conc_breaker_config c = base_cfg(1);
	c.clock = NULL;
	c.open_ns = INT64_MAX; /* saturates; never half-opens in this test */
	struct conc_breaker *b = mk(&c);
	one(b, CONC_BREAKER_FAILURE, 0);
	int64_t r = refused(b);
	cr_assert_gt(r, INT64_MAX / 2);
	cr_assert_eq(conc_breaker_free(b), CONC_OK);
}
