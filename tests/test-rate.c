/* SPDX-License-Identifier: MIT */
/*
 * test-rate: the GCRA rate limiter and the ticker (conc/rate.h), on a test
 * clock moved by hand, so every count and span is exact.  Threads that must
 * be blocked before the test acts are waited for until they are parked (no
 * sleep); nothing is timed.
 */
#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)
#define HOUR (3600 * SEC)

/* A limiter of events per period, burst, on test clock tc started at start. */
static void rate_init(struct conc_rate *l, struct conc_test_clock *tc, int64_t start, uint64_t events,
		      int64_t period, uint32_t burst)
{
	struct conc_clock clk = conc_test_clock_init(tc, start);
	cr_assert_eq(conc_rate_init(l, events, period, burst, &clk), CONC_OK);
}

/* allow_n must give status want; returns the info. */
static struct conc_rate_info allow_n(struct conc_rate *l, uint64_t n, enum conc_status want)
{
	struct conc_rate_info info;
	memset(&info, 0xa5, sizeof info);
	enum conc_status s = conc_rate_allow_n(l, n, &info);
	cr_assert_eq(s, want, "allow_n(%llu): %s, expected %s", (unsigned long long)n, conc_strerror(s),
		     conc_strerror(want));
	return info;
}

/* The retry-after a 1-token allow reports now (it must be refused). */
static int64_t retry_after(struct conc_rate *l)
{
	return allow_n(l, 1, CONC_WOULDBLOCK).retry_after_ns;
}

Test(rate, bad_input, .timeout = 60)
{
	struct conc_rate l, other;
	struct conc_test_clock tc;
	struct conc_clock clk = conc_test_clock_init(&tc, 0);
	struct conc_rate_reservation r;
	cr_assert_eq(conc_rate_init(NULL, 1, SEC, 1, &clk), CONC_INVALID);
	cr_assert_eq(conc_rate_init(&l, 0, SEC, 1, &clk), CONC_INVALID, "no events");
	cr_assert_eq(conc_rate_init(&l, 1, 0, 1, &clk), CONC_INVALID, "no period");
	cr_assert_eq(conc_rate_init(&l, 1, -5, 1, &clk), CONC_INVALID, "negative period");
	cr_assert_eq(conc_rate_init(&l, 1, SEC, 0, &clk), CONC_INVALID, "no burst: nothing could pass");
	cr_assert_eq(conc_rate_init(&l, 11, 10, 1, &clk), CONC_INVALID, "more than one per ns");
	cr_assert_eq(conc_rate_allow(NULL), CONC_INVALID);
	cr_assert_eq(conc_rate_allow_n(NULL, 1, NULL), CONC_INVALID);
	cr_assert_eq(conc_rate_reserve(NULL, 1, &r), CONC_INVALID);
	cr_assert_eq(conc_rate_wait_n_until(NULL, 1, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_rate_wait(NULL), CONC_INVALID);
	cr_assert_eq(conc_rate_tokens(NULL), 0);
	cr_assert_eq(conc_rate_set(NULL, 1, SEC, 1), CONC_INVALID);
	cr_assert_eq(conc_rate_destroy(NULL), CONC_INVALID);

	cr_assert_eq(conc_rate_init(&l, 10, 10, 3, &clk), CONC_OK, "one per ns is the fastest");
	cr_assert_eq(conc_rate_reserve(&l, 1, NULL), CONC_INVALID);
	cr_assert_eq(conc_rate_cancel(NULL, &r), CONC_INVALID);
	cr_assert_eq(conc_rate_cancel(&l, NULL), CONC_INVALID);
	cr_assert_eq(conc_rate_set(&l, 0, SEC, 1), CONC_INVALID);
	cr_assert_eq(conc_rate_set(&l, 1, SEC, 0), CONC_INVALID);
	cr_assert_eq(conc_rate_set(&l, 2, 1, 1), CONC_INVALID);
	cr_assert_eq(conc_rate_tokens(&l), 3, "a failed set changes nothing");

	/* A reservation of another limiter, and one canceled twice. */
	cr_assert_eq(conc_rate_init(&other, 1, SEC, 1, &clk), CONC_OK);
	cr_assert_eq(conc_rate_reserve(&other, 1, &r), CONC_OK);
	cr_assert_eq(conc_rate_cancel(&l, &r), CONC_INVALID);
	cr_assert_eq(conc_rate_cancel(&other, &r), CONC_OK);
	cr_assert_eq(conc_rate_cancel(&other, &r), CONC_INVALID, "spent");
	cr_assert_eq(conc_rate_destroy(&other), CONC_OK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, more_than_burst_fails_at_once, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	struct conc_rate_reservation r;
	rate_init(&l, &tc, 0, 1, HOUR, 3);
	struct conc_rate_info i = allow_n(&l, 4, CONC_INVALID);
	cr_assert_eq(i.retry_after_ns, INT64_MAX, "never");
	cr_assert_eq(i.remaining, 3);
	cr_assert_eq(conc_rate_reserve(&l, 4, &r), CONC_INVALID);
	cr_assert_eq(conc_rate_wait_n_until(&l, 4, conc_deadline_forever(), NULL), CONC_INVALID,
		     "a wait that can never succeed must not hang");
	cr_assert_eq(conc_rate_tokens(&l), 3, "nothing taken");
	allow_n(&l, 0, CONC_OK);
	cr_assert_eq(conc_rate_tokens(&l), 3, "zero tokens take nothing");
	allow_n(&l, 3, CONC_OK);
	allow_n(&l, 0, CONC_OK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, burst_then_refill_after_exact_ns, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	rate_init(&l, &tc, 1000, 5, SEC, 3); /* T = 200 ms */
	cr_assert_eq(conc_rate_tokens(&l), 3, "starts full");
	struct conc_rate_info i = allow_n(&l, 1, CONC_OK);
	cr_assert_eq(i.retry_after_ns, 0);
	cr_assert_eq(i.remaining, 2);
	cr_assert_eq(i.reset_after_ns, 200 * MS);
	cr_assert_eq(i.limit, 3);
	i = allow_n(&l, 2, CONC_OK);
	cr_assert_eq(i.remaining, 0);
	cr_assert_eq(i.reset_after_ns, 600 * MS);
	i = allow_n(&l, 1, CONC_WOULDBLOCK);
	cr_assert_eq(i.retry_after_ns, 200 * MS);
	cr_assert_eq(i.remaining, 0);
	cr_assert_eq(i.reset_after_ns, 600 * MS);
	cr_assert_eq(allow_n(&l, 3, CONC_WOULDBLOCK).retry_after_ns, 600 * MS);

	conc_test_clock_advance(&tc, 200 * MS - 1);
	cr_assert_eq(retry_after(&l), 1, "one nanosecond early");
	conc_test_clock_advance(&tc, 1);
	i = allow_n(&l, 1, CONC_OK);
	cr_assert_eq(i.remaining, 0);
	cr_assert_eq(retry_after(&l), 200 * MS);

	/* A long quiet spell fills the bucket to the burst, no further. */
	conc_test_clock_advance(&tc, 10 * SEC);
	cr_assert_eq(conc_rate_tokens(&l), 3);
	i = allow_n(&l, 1, CONC_OK);
	cr_assert_eq(i.remaining, 2);
	cr_assert_eq(i.reset_after_ns, 200 * MS);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, rounds_the_interval_up, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	rate_init(&l, &tc, 0, 3, SEC, 1); /* T = 333333333.3 ns -> 333333334 */
	allow_n(&l, 1, CONC_OK);
	cr_assert_eq(retry_after(&l), 333333334);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

/* Greedy takers over a long run admit exactly burst + elapsed/T: no drift. */
Test(rate, long_run_is_exact, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	rate_init(&l, &tc, 12345, 1, 7, 5);
	uint64_t admitted = 0;
	for (int step = 0; step < 10000; step++) {
		while (conc_rate_allow(&l) == CONC_OK)
			admitted++;
		conc_test_clock_advance(&tc, 3);
	}
	while (conc_rate_allow(&l) == CONC_OK)
		admitted++;
	cr_assert_eq(admitted, 5 + 30000 / 7);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, stale_readings_create_no_tokens, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	rate_init(&l, &tc, 0, 1, 100, 1);
	allow_n(&l, 1, CONC_OK); /* at 0 */
	conc_test_clock_set(&tc, 100);
	allow_n(&l, 1, CONC_OK); /* at 100: the next token is due at 200 */
	/* A thread that read the clock before that admission comes in late,
	 * and a clock that steps backwards: refused, and Z is not moved. */
	conc_test_clock_set(&tc, 50);
	cr_assert_eq(retry_after(&l), 150);
	cr_assert_eq(conc_rate_tokens(&l), 0);
	conc_test_clock_set(&tc, -1000000);
	cr_assert_eq(retry_after(&l), 1000200);
	allow_n(&l, 0, CONC_OK);
	conc_test_clock_set(&tc, 199);
	cr_assert_eq(retry_after(&l), 1);
	conc_test_clock_set(&tc, 200);
	allow_n(&l, 1, CONC_OK);
	allow_n(&l, 1, CONC_WOULDBLOCK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, huge_periods_do_not_overflow, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	struct conc_rate_reservation r;
	/* One event per INT64_MAX ns: one now, then none for 292 years. */
	rate_init(&l, &tc, SEC, 1, INT64_MAX, 1);
	allow_n(&l, 1, CONC_OK);
	struct conc_rate_info i = allow_n(&l, 1, CONC_WOULDBLOCK);
	cr_assert_eq(i.retry_after_ns, INT64_MAX);
	cr_assert_eq(i.remaining, 0);
	cr_assert_eq(conc_rate_reserve(&l, 1, &r), CONC_OVERFLOW, "its time does not fit");
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_forever(), NULL), CONC_OVERFLOW);
	conc_test_clock_advance(&tc, INT64_C(1000000000000000000));
	allow_n(&l, 1, CONC_WOULDBLOCK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);

	/* burst*T past int64_t: the bucket reads less full, never more. */
	rate_init(&l, &tc, 0, 1, INT64_C(1) << 62, 4);
	cr_assert_eq(conc_rate_tokens(&l), 2);
	allow_n(&l, 3, CONC_WOULDBLOCK);
	allow_n(&l, 2, CONC_OK);
	allow_n(&l, 1, CONC_WOULDBLOCK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);

	/* A clock at the very end of int64_t. */
	rate_init(&l, &tc, INT64_MAX - 10, 1, 100, 2);
	allow_n(&l, 1, CONC_OK);
	allow_n(&l, 1, CONC_OK);
	cr_assert_eq(retry_after(&l), INT64_MAX);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, set_keeps_tokens, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	rate_init(&l, &tc, SEC, 10, SEC, 10); /* T = 100 ms */
	allow_n(&l, 5, CONC_OK);
	cr_assert_eq(conc_rate_tokens(&l), 5);
	cr_assert_eq(conc_rate_set(&l, 1, SEC, 10), CONC_OK);
	cr_assert_eq(conc_rate_tokens(&l), 5, "a lower rate creates no tokens");
	allow_n(&l, 5, CONC_OK);
	cr_assert_eq(retry_after(&l), SEC, "and refills at the new rate");
	conc_test_clock_advance(&tc, SEC);
	cr_assert_eq(conc_rate_tokens(&l), 1);
	cr_assert_eq(conc_rate_set(&l, 10, SEC, 10), CONC_OK);
	cr_assert_eq(conc_rate_tokens(&l), 1, "a higher rate neither");
	conc_test_clock_advance(&tc, 400 * MS);
	cr_assert_eq(conc_rate_tokens(&l), 5);
	cr_assert_eq(conc_rate_set(&l, 10, SEC, 3), CONC_OK);
	cr_assert_eq(conc_rate_tokens(&l), 3, "capped at a lower burst");
	cr_assert_eq(conc_rate_set(&l, 10, SEC, 20), CONC_OK);
	cr_assert_eq(conc_rate_tokens(&l), 3, "a higher burst fills at the rate");
	conc_test_clock_advance(&tc, 100 * MS);
	cr_assert_eq(conc_rate_tokens(&l), 4);
	conc_test_clock_advance(&tc, 10 * SEC);
	cr_assert_eq(conc_rate_tokens(&l), 20);
	cr_assert_eq(allow_n(&l, 20, CONC_OK).limit, 20);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, set_reprices_what_is_owed, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	struct conc_rate_reservation r;
	rate_init(&l, &tc, SEC, 10, SEC, 1); /* T = 100 ms */
	allow_n(&l, 1, CONC_OK);
	cr_assert_eq(conc_rate_reserve(&l, 1, &r), CONC_OK);
	cr_assert_eq(r.delay_ns, 100 * MS);
	cr_assert_eq(conc_rate_set(&l, 5, SEC, 1), CONC_OK); /* T = 200 ms */
	cr_assert_eq(retry_after(&l), 400 * MS, "the token owed is owed at the new price");
	cr_assert_eq(conc_rate_cancel(&l, &r), CONC_BUSY, "priced under the old rate: kept");
	cr_assert_eq(retry_after(&l), 400 * MS);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, reserve_and_cancel, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	struct conc_rate_reservation r1, r2, r3, r4;
	const int64_t n0 = 5 * SEC;
	rate_init(&l, &tc, n0, 5, SEC, 3); /* T = 200 ms */
	cr_assert_eq(conc_rate_reserve(&l, 3, &r1), CONC_OK);
	cr_assert_eq(r1.n, 3);
	cr_assert_eq(r1.delay_ns, 0);
	cr_assert_eq(r1.at_ns, n0);
	cr_assert_eq(conc_rate_reserve(&l, 1, &r2), CONC_OK);
	cr_assert_eq(r2.delay_ns, 200 * MS);
	cr_assert_eq(r2.at_ns, n0 + 200 * MS);
	cr_assert_eq(conc_rate_cancel(&l, &r2), CONC_OK, "the latest: given back");
	cr_assert_eq(retry_after(&l), 200 * MS);

	cr_assert_eq(conc_rate_reserve(&l, 1, &r2), CONC_OK);
	cr_assert_eq(conc_rate_reserve(&l, 2, &r3), CONC_OK);
	cr_assert_eq(r3.delay_ns, 600 * MS);
	cr_assert_eq(conc_rate_cancel(&l, &r2), CONC_BUSY, "r3 is scheduled behind it");
	cr_assert_eq(conc_rate_cancel(&l, &r3), CONC_OK);
	cr_assert_eq(retry_after(&l), 400 * MS, "r2's token stays taken");
	cr_assert_eq(conc_rate_cancel(&l, &r1), CONC_BUSY);

	/* A reservation whose time has passed keeps its tokens; one canceled
	 * at its time exactly gives them back. */
	cr_assert_eq(conc_rate_reserve(&l, 1, &r4), CONC_OK);
	cr_assert_eq(r4.at_ns, n0 + 400 * MS);
	conc_test_clock_set(&tc, r4.at_ns);
	cr_assert_eq(conc_rate_cancel(&l, &r4), CONC_OK);
	cr_assert_eq(conc_rate_reserve(&l, 1, &r4), CONC_OK);
	cr_assert_eq(r4.delay_ns, 0);
	conc_test_clock_advance(&tc, 1);
	cr_assert_eq(conc_rate_cancel(&l, &r4), CONC_BUSY);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, wait_fails_at_once_past_its_deadline, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	struct conc_ctx ctx;
	rate_init(&l, &tc, 0, 1, 24 * HOUR, 1);
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_poll(), NULL), CONC_OK,
		     "a passed deadline still takes a token that is there");
	int64_t before = retry_after(&l);
	cr_assert_eq(before, 24 * HOUR);
	/* Waiting would take a day: an hour's deadline fails now, not in an
	 * hour (a waiting implementation runs into the test's timeout). */
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_in_ns(HOUR), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ns(HOUR)), CONC_OK);
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_forever(), &ctx), CONC_TIMEDOUT,
		     "the context's deadline counts");
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_forever(), &ctx), CONC_CANCELED);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(retry_after(&l), before, "nothing was taken");
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

Test(rate, wait_sleeps_its_span, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	rate_init(&l, &tc, 0, 1000, SEC, 1); /* T = 1 ms, slept on the real clock */
	allow_n(&l, 1, CONC_OK);
	cr_assert_eq(conc_rate_wait_n_until(&l, 1, conc_deadline_in_ns(HOUR), NULL), CONC_OK);
	cr_assert_eq(retry_after(&l), 2 * MS, "the token was reserved, due at 1 ms");
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);

	struct conc_rate real;
	cr_assert_eq(conc_rate_init(&real, 1000, SEC, 2, NULL), CONC_OK);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(conc_rate_wait(&real), CONC_OK);
	cr_assert_eq(conc_rate_destroy(&real), CONC_OK);
}

struct waiter {
	struct conc_rate *l;
	struct conc_ctx *ctx;
	enum conc_status st;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	w->st = conc_rate_wait_n_until(w->l, 1, conc_deadline_forever(), w->ctx);
	return NULL;
}

Test(rate, wait_canceled_gives_its_tokens_back, .timeout = 60)
{
	struct conc_rate l;
	struct conc_test_clock tc;
	struct conc_ctx ctx;
	pthread_t th;
	rate_init(&l, &tc, 0, 1, HOUR, 1);
	allow_n(&l, 1, CONC_OK);
	int64_t before = retry_after(&l);
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct waiter w = {&l, &ctx, CONC_INVALID};
	start(&th, wait_main, &w);
	conc_test_wait_parked(&ctx.waiters, 1); /* reserved, asleep for an hour */
	cr_assert_eq(retry_after(&l), before + HOUR, "it holds a reservation");
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(th);
	cr_assert_eq(w.st, CONC_CANCELED);
	cr_assert_eq(retry_after(&l), before, "given back");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_rate_destroy(&l), CONC_OK);
}

/* ---------------------------------------------------------------- ticker */

static void ticker_init(struct conc_ticker *t, struct conc_test_clock *tc, int64_t start, int64_t period)
{
	struct conc_clock clk = conc_test_clock_init(tc, start);
	cr_assert_eq(conc_ticker_init(t, period, &clk), CONC_OK);
}

static uint64_t take(struct conc_ticker *t, enum conc_status want)
{
	uint64_t missed = 12345;
	enum conc_status s = conc_ticker_take(t, &missed);
	cr_assert_eq(s, want, "take: %s, expected %s", conc_strerror(s), conc_strerror(want));
	return missed;
}

Test(ticker, bad_input, .timeout = 60)
{
	struct conc_ticker t;
	uint64_t missed;
	cr_assert_eq(conc_ticker_init(NULL, 1, NULL), CONC_INVALID);
	cr_assert_eq(conc_ticker_init(&t, 0, NULL), CONC_INVALID);
	cr_assert_eq(conc_ticker_init(&t, -1, NULL), CONC_INVALID);
	cr_assert_eq(conc_ticker_take(NULL, &missed), CONC_INVALID);
	cr_assert_eq(conc_ticker_wait_until(NULL, &missed, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_ticker_wait(NULL, &missed), CONC_INVALID);
	cr_assert_eq(conc_ticker_reset(NULL, 1), CONC_INVALID);
	cr_assert_eq(conc_ticker_stop(NULL), CONC_INVALID);
	cr_assert_eq(conc_ticker_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_ticker_next(NULL), INT64_MAX);
	struct conc_select_case k = conc_ticker_case(NULL);
	cr_assert_eq(k.op, CONC_SELECT_TIMER);
	cr_assert(conc_deadline_is_forever(k.at));
	cr_assert_eq(conc_ticker_init(&t, SEC, NULL), CONC_OK);
	cr_assert_eq(conc_ticker_reset(&t, 0), CONC_INVALID);
	cr_assert_eq(conc_ticker_take(&t, NULL), CONC_WOULDBLOCK, "missed may be NULL");
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

Test(ticker, missed_ticks_are_counted_exactly, .timeout = 60)
{
	struct conc_ticker t;
	struct conc_test_clock tc;
	ticker_init(&t, &tc, 1000, 100);
	cr_assert_eq(conc_ticker_next(&t), 1100);
	take(&t, CONC_WOULDBLOCK);
	conc_test_clock_advance(&tc, 99);
	take(&t, CONC_WOULDBLOCK);
	conc_test_clock_advance(&tc, 1);
	cr_assert_eq(take(&t, CONC_OK), 0);
	take(&t, CONC_WOULDBLOCK);
	cr_assert_eq(conc_ticker_next(&t), 1200);
	/* A slow receiver: ticks at 1200, 1300, 1400 are due at 1450; it gets
	 * one and is told two were dropped.  The schedule does not drift. */
	conc_test_clock_set(&tc, 1450);
	cr_assert_eq(take(&t, CONC_OK), 2);
	take(&t, CONC_WOULDBLOCK);
	cr_assert_eq(conc_ticker_next(&t), 1500);
	conc_test_clock_set(&tc, 1500);
	cr_assert_eq(take(&t, CONC_OK), 0);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

Test(ticker, reset_and_stop, .timeout = 60)
{
	struct conc_ticker t;
	struct conc_test_clock tc;
	uint64_t missed;
	ticker_init(&t, &tc, 0, 100);
	conc_test_clock_set(&tc, 250);
	cr_assert_eq(conc_ticker_reset(&t, 30), CONC_OK);
	cr_assert_eq(conc_ticker_next(&t), 280, "one new period from now");
	take(&t, CONC_WOULDBLOCK); /* the ticks due before the reset are gone */
	conc_test_clock_set(&tc, 330);
	cr_assert_eq(take(&t, CONC_OK), 1, "310 came due too");
	cr_assert_eq(conc_ticker_next(&t), 340);
	cr_assert_eq(conc_ticker_stop(&t), CONC_OK);
	cr_assert_eq(conc_ticker_stop(&t), CONC_OK, "idempotent");
	cr_assert_eq(conc_ticker_next(&t), INT64_MAX);
	conc_test_clock_set(&tc, 100000);
	take(&t, CONC_CLOSED);
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_forever(), NULL), CONC_CLOSED);
	cr_assert(conc_deadline_is_forever(conc_ticker_case(&t).at), "a stopped ticker's case never fires");
	cr_assert_eq(conc_ticker_reset(&t, 10), CONC_OK, "a reset restarts it");
	take(&t, CONC_WOULDBLOCK);
	conc_test_clock_advance(&tc, 10);
	cr_assert_eq(take(&t, CONC_OK), 0);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

Test(ticker, index_rebases_without_losing_a_tick, .timeout = 60)
{
	struct conc_ticker t;
	struct conc_test_clock tc;
	ticker_init(&t, &tc, 0, 1);
	int64_t jump = (INT64_C(1) << 47) + 5;
	conc_test_clock_set(&tc, jump);
	cr_assert_eq(take(&t, CONC_OK), (uint64_t)jump - 1);
	cr_assert_eq(conc_ticker_next(&t), jump + 1);
	take(&t, CONC_WOULDBLOCK);
	conc_test_clock_advance(&tc, 1);
	cr_assert_eq(take(&t, CONC_OK), 0);
	/* A jump far past the 48-bit index: each take reports at most 2^48
	 * ticks, and the takes together account for every one. */
	int64_t from = conc_ticker_next(&t), to = from + (INT64_C(1) << 50);
	conc_test_clock_set(&tc, to);
	uint64_t ticks = 0, missed;
	int takes = 0;
	while (conc_ticker_take(&t, &missed) == CONC_OK)
		ticks += 1 + missed, takes++;
	cr_assert_eq(ticks, (uint64_t)(to - from) + 1);
	cr_assert_gt(takes, 4);
	cr_assert_eq(conc_ticker_next(&t), to + 1);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

Test(ticker, select_mixes_a_ticker_and_a_channel, .timeout = 60)
{
	struct conc_ticker t;
	struct conc_test_clock tc;
	struct conc_chan *c = new_chan(1, sizeof(uint64_t));
	uint64_t v = 0;
	size_t chosen;
	ticker_init(&t, &tc, 0, HOUR);
	put(c, 7);
	struct conc_select_case k[2] = {conc_ticker_case(&t), conc_select_recv(c, &v)};
	cr_assert_eq(conc_select(k, 2, 0, &chosen), CONC_OK);
	cr_assert_eq(chosen, 1, "the tick is an hour away");
	cr_assert_eq(v, 7);
	k[0] = conc_ticker_case(&t);
	cr_assert_eq(conc_select_try(k, 2, 0, &chosen), CONC_WOULDBLOCK);

	conc_test_clock_advance(&tc, 3 * HOUR);
	k[0] = conc_ticker_case(&t);
	cr_assert_eq(conc_select(k, 2, 0, &chosen), CONC_OK);
	cr_assert_eq(chosen, 0);
	cr_assert_eq(take(&t, CONC_OK), 2);
	put(c, 8);
	conc_test_clock_advance(&tc, HOUR);
	k[0] = conc_ticker_case(&t);
	cr_assert_eq(conc_select(k, 2, CONC_SELECT_BIASED, &chosen), CONC_OK);
	cr_assert_eq(chosen, 0, "both ready: biased takes the first");
	cr_assert_eq(take(&t, CONC_OK), 0);
	cr_assert_eq(take(&t, CONC_WOULDBLOCK), 12345, "missed untouched when nothing is taken");
	expect(c, 8);
	free_chan(c);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

Test(ticker, wait_until_real_ticks, .timeout = 60)
{
	struct conc_ticker t;
	uint64_t missed, total = 0;
	cr_assert_eq(conc_ticker_init(&t, MS, NULL), CONC_OK);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(conc_ticker_wait(&t, &missed), CONC_OK);
		total += 1 + missed;
	}
	cr_assert_geq(total, 3);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

Test(ticker, wait_until_fails_at_once_past_its_deadline, .timeout = 60)
{
	struct conc_ticker t;
	struct conc_test_clock tc;
	struct conc_ctx ctx;
	uint64_t missed = 99;
	ticker_init(&t, &tc, 0, 24 * HOUR);
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_in_ns(HOUR), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ns(HOUR)), CONC_OK);
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_forever(), &ctx), CONC_TIMEDOUT);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_forever(), &ctx), CONC_CANCELED);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(missed, 99);
	conc_test_clock_set(&tc, 24 * HOUR);
	cr_assert_eq(conc_ticker_wait_until(&t, &missed, conc_deadline_poll(), NULL), CONC_OK, "a due tick is taken");
	cr_assert_eq(missed, 0);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}

struct receiver {
	struct conc_ticker *t;
	struct conc_ctx *ctx;
	enum conc_status st;
};

static void *receive_main(void *arg)
{
	struct receiver *r = arg;
	uint64_t missed;
	r->st = conc_ticker_wait_until(r->t, &missed, conc_deadline_forever(), r->ctx);
	return NULL;
}

Test(ticker, blocked_receivers_wake_on_stop_and_cancel, .timeout = 60)
{
	struct conc_ticker t;
	struct conc_test_clock tc;
	struct conc_ctx ctx;
	pthread_t a, b;
	ticker_init(&t, &tc, 0, HOUR);
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct receiver ra = {&t, &ctx, CONC_INVALID}, rb = {&t, NULL, CONC_INVALID};
	start(&a, receive_main, &ra);
	start(&b, receive_main, &rb);
	conc_test_wait_parked(&t.waiters, 2);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(a);
	cr_assert_eq(ra.st, CONC_CANCELED);
	/* A reset wakes the other, which goes back to sleep for the new tick. */
	cr_assert_eq(conc_ticker_reset(&t, 2 * HOUR), CONC_OK);
	conc_test_wait_parked(&t.waiters, 1);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_BUSY, "a receiver is blocked");
	cr_assert_eq(conc_ticker_stop(&t), CONC_OK);
	join(b);
	cr_assert_eq(rb.st, CONC_CLOSED);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_ticker_destroy(&t), CONC_OK);
}
