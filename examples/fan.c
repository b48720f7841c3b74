/* SPDX-License-Identifier: MIT */
/*
 * fan: the seed's fan-out/fan-in.  Jobs 1..10 go to 3 workers that double
 * them (fan-out: the workers share the jobs channel, no dispatcher); each
 * worker writes to its own results channel, and a merge (fan-in: one select
 * over the 3 channels, no thread per input) collects them, saying which
 * worker each result came from.  Which worker gets which job varies from run
 * to run, so the results are printed sorted by job, with totals.
 */
#include <conc.h>
#include <stdio.h>
#include <stdlib.h>

#define JOBS 10
#define WORKERS 3

struct result {
	int job, value;
	size_t worker; /* who computed it, to check the merge's origin */
};

/* One job: double it and send the result on this worker's channel. */
static int double_job(void *arg, struct conc_ctx *ctx, size_t worker, void *item, struct conc_chan *out)
{
	(void)arg;
	int job = *(int *)item;
	struct result r = {job, 2 * job, worker};
	return conc_chan_send_until(out, &r, conc_deadline_forever(), ctx);
}

static int by_job(const void *a, const void *b)
{
	return ((const struct result *)a)->job - ((const struct result *)b)->job;
}

int main(void)
{
	struct conc_chan *jobs, *results[WORKERS];
	if (conc_chan_new(&jobs, JOBS, sizeof(int)) != CONC_OK)
		return 1;
	for (int i = 0; i < WORKERS; i++)
		if (conc_chan_new(&results[i], 2, sizeof(struct result)) != CONC_OK)
			return 1;

	struct conc_fan_out *workers;
	struct conc_fan_out_fns fns = {double_job, NULL, NULL};
	if (conc_fan_out_start(&workers, jobs, NULL, results, WORKERS, &fns, NULL, 0) != CONC_OK)
		return 1;
	for (int j = 1; j <= JOBS; j++)
		if (conc_chan_send(jobs, &j) != CONC_OK)
			return 1;
	conc_chan_close(jobs); /* the workers end when it is drained, then close results */

	struct conc_fan_in *merge;
	if (conc_fan_in_new(&merge, results, WORKERS) != CONC_OK)
		return 1;
	struct result got[JOBS];
	int n = 0, origin_ok = 1;
	size_t from;
	struct result r;
	while (n < JOBS && conc_fan_in_recv(merge, &r, &from) == CONC_OK) {
		origin_ok &= from == r.worker;
		got[n++] = r;
	}
	int closed = conc_fan_in_recv(merge, &r, &from) == CONC_CLOSED;

	int err = -1;
	if (conc_fan_out_wait(workers, &err) != CONC_OK || err != 0)
		return 1;
	uint64_t done = 0, merged = 0;
	for (size_t w = 0; w < WORKERS; w++) {
		done += conc_fan_out_count(workers, w);
		merged += conc_fan_in_count(merge, w);
	}

	qsort(got, (size_t)n, sizeof got[0], by_job);
	int sum = 0;
	for (int i = 0; i < n; i++) {
		printf("job %2d -> %2d\n", got[i].job, got[i].value);
		sum += got[i].value;
	}
	printf("%d results, sum %d\n", n, sum);
	printf("worker counts add up to %llu, merged %llu\n", (unsigned long long)done, (unsigned long long)merged);
	printf("every origin is the worker that computed it: %s\n", origin_ok ? "yes" : "no");
	printf("merge closed after the last result: %s\n", closed ? "yes" : "no");

	conc_fan_in_free(merge);
	conc_fan_out_free(workers);
	for (int i = 0; i < WORKERS; i++)
		conc_chan_free(results[i]);
	conc_chan_free(jobs);
	return 0;
}
