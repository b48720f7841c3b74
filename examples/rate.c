/* SPDX-License-Identifier: MIT */
/*
 * rate: Go's rate-limiting seeds.  Five requests, one per 200 ms, with a
 * burst of 3: the first three go at once, the fourth 200 ms later, the fifth
 * 200 ms after that.  Each request asks the limiter for its slot
 * (conc_rate_reserve never blocks; it says when) and is served then.  The
 * slots printed are the limiter's arithmetic, not measured times, so the
 * output does not depend on how loaded the machine is.
 *
 * Then a wait that could never succeed (more than the burst) and one that
 * would pass its deadline both fail at once, taking nothing; and the seed's
 * time.NewTicker form: a ticker selected on (no thread behind it), one
 * request per tick, then stopped.
 */
#include <conc.h>
#include <stdio.h>

#define MS INT64_C(1000000)

/* Sleep until the absolute deadline d (a select on one timer case). */
static void sleep_until(struct conc_deadline d)
{
	struct conc_select_case k = conc_select_timer(d);
	if (conc_select(&k, 1, 0, NULL) != CONC_OK)
		fprintf(stderr, "select failed\n");
}

int main(void)
{
	struct conc_rate l;
	if (conc_rate_init(&l, 5, 1000 * MS, 3, NULL) != CONC_OK) /* 5 per second, burst 3 */
		return 1;
	printf("rate limiter: 5 per second (one per 200 ms), burst 3\n");
	/* Five requests arrive together: each is given its slot at once (the
	 * reservations are made back to back, so a slow machine cannot spread
	 * them), then served when its slot comes. */
	struct conc_rate_reservation r[5];
	for (int i = 0; i < 5; i++)
		if (conc_rate_reserve(&l, 1, &r[i]) != CONC_OK)
			return 1;
	for (int i = 0; i < 5; i++) {
		sleep_until(conc_deadline_at_ns(r[i].at_ns)); /* the limiter's clock: CLOCK_MONOTONIC */
		int64_t slot = (r[i].at_ns - r[0].at_ns + 50 * MS) / (100 * MS) * 100;
		printf("request %d: served in slot %lld ms\n", i + 1, (long long)slot);
	}
	printf("4 at once (burst 3): %s\n",
	       conc_strerror(conc_rate_wait_n_until(&l, 4, conc_deadline_forever(), NULL)));
	if (conc_rate_destroy(&l) != CONC_OK)
		return 1;

	struct conc_rate hourly;
	if (conc_rate_init(&hourly, 1, 3600000 * MS, 1, NULL) != CONC_OK ||
	    conc_rate_wait_n_until(&hourly, 1, conc_deadline_in_ms(100), NULL) != CONC_OK)
		return 1;
	printf("one per hour, again within 100 ms: %s (at once, nothing taken)\n",
	       conc_strerror(conc_rate_wait_n_until(&hourly, 1, conc_deadline_in_ms(100), NULL)));
	if (conc_rate_destroy(&hourly) != CONC_OK)
		return 1;

	struct conc_ticker t;
	if (conc_ticker_init(&t, 200 * MS, NULL) != CONC_OK)
		return 1;
	printf("ticker: one request per 200 ms tick\n");
	for (int i = 1; i <= 5;) {
		struct conc_select_case k = conc_ticker_case(&t);
		uint64_t missed;
		if (conc_select(&k, 1, 0, NULL) != CONC_OK)
			return 1;
		if (conc_ticker_take(&t, &missed) == CONC_OK) /* else not ours: select again */
			printf("request %d: served on a tick\n", i++);
	}
	if (conc_ticker_stop(&t) != CONC_OK)
		return 1;
	printf("after stop: %s\n", conc_strerror(conc_ticker_take(&t, NULL)));
	return conc_ticker_destroy(&t) == CONC_OK ? 0 : 1;
}
