/* SPDX-License-Identifier: MIT */
/*
 * breaker: a circuit breaker around a service that fails for a while and
 * then recovers.  A client sends a request every 100 ms; the service is
 * down from 0.5 s to 2.5 s.  The breaker trips after 3 failures in a row,
 * stays open for 1 s (requests refused at once, the service left alone),
 * then lets 2 probe requests through; when both succeed it closes again.
 *
 * The breaker reads a clock this program moves by hand (struct conc_clock),
 * so the run is the same on any machine, however loaded.  State changes
 * arrive as events on a channel, read after each request.
 */
#include "conc.h"

#include <inttypes.h>
#include <stdio.h>

#define MS INT64_C(1000000)

static int64_t sim_now; /* the hand-moved clock, in ns */

static int64_t sim_clock(void *arg)
{
	(void)arg;
	return sim_now;
}

/* The protected service: down between 0.5 s and 2.5 s. */
static int service(struct conc_ctx *ctx, void *arg)
{
	(void)ctx;
	int *served = arg;
	if (sim_now >= 500 * MS && sim_now < 2500 * MS)
		return CONC_TIMEDOUT; /* the service's own timeout: a failure */
	++*served;
	return CONC_OK;
}

static const char *reason_name(enum conc_breaker_reason r)
{
	switch (r) {
	case CONC_BREAKER_REASON_CONSECUTIVE_FAILURES: return "3 failures in a row";
	case CONC_BREAKER_REASON_OPEN_ELAPSED:         return "open time elapsed";
	case CONC_BREAKER_REASON_PROBES_SUCCEEDED:     return "both probes succeeded";
	case CONC_BREAKER_REASON_PROBE_FAILED:         return "a probe failed";
	default:                                       return "other";
	}
}

int main(void)
{
	struct conc_clock clock = {sim_clock, NULL};
	struct conc_chan *events = NULL;
	if (conc_chan_new(&events, 16, sizeof(struct conc_breaker_event)) != CONC_OK)
		return 1;
	struct conc_breaker_config cfg = {
		.consecutive_failures = 3,
		.open_ns = 1000 * MS,
		.probes = 2,
		.probe_lease_ns = 5000 * MS,
		.clock = &clock,
		.events = events,
	};
	struct conc_breaker *b = NULL;
	if (conc_breaker_new(&b, &cfg) != CONC_OK)
		return 1;

	int served = 0, failed = 0, refused = 0;
	for (int i = 0; i < 40; i++, sim_now += 100 * MS) {
		struct conc_breaker_ticket info;
		int r = conc_breaker_call(b, service, &served, NULL, &info);
		const char *what = r == CONC_OK ? "ok" : r == CONC_REJECTED ? "refused" : "failed";
		if (r == CONC_REJECTED)
			refused++;
		else if (r != CONC_OK)
			failed++;
		printf("%4" PRId64 " ms  request %2d  %s%s\n", sim_now / MS, i, what,
		       r != CONC_REJECTED && info.probe ? " (probe)" : "");
		struct conc_breaker_event e;
		while (conc_chan_try_recv(events, &e) == CONC_OK)
			printf("%4" PRId64 " ms  breaker %s -> %s (%s)\n", e.at_ns / MS, conc_breaker_state_name(e.from),
			       conc_breaker_state_name(e.to), reason_name(e.reason));
	}
	printf("served %d, failed %d, refused %d: of the 20 requests made while the service was down, %d reached it\n",
	       served, failed, refused, failed);
	if (conc_breaker_free(b) != CONC_OK || conc_chan_free(events) != CONC_OK)
		return 1;
	return 0;
}
