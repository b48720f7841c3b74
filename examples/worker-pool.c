/* SPDX-License-Identifier: MIT */
/*
 * The seed's worker pool (jobs in, results out over a channel): 3 workers
 * process 10 jobs, each sending {job, result} on a results channel; main
 * collects them and prints them in job order, so the output does not depend
 * on which worker ran what.  Then a parallel-for in which main takes part.
 */
#include <conc.h>
#include <stdio.h>

struct result {
	int job;
	int value;
};

CONC_CHAN_TYPED(resultchan, struct result)

struct job {
	int id;
	struct resultchan *results;
};

static void process(void *arg) /* Go's worker body: results <- process(job) */
{
	struct job *j = arg;
	struct result r = {j->id, j->id * 2};
	if (resultchan_send(j->results, r) != CONC_OK)
		fprintf(stderr, "job %d: result lost\n", j->id);
}

static void square(void *arg, size_t i)
{
	long *out = arg;
	out[i] = (long)(i * i);
}

int main(void)
{
	enum { NJOBS = 10 };
	struct conc_pool *pool;
	struct conc_pool_config cfg = {.threads = 3, .queue_cap = 4};
	struct resultchan *results;
	if (conc_pool_new(&pool, &cfg) != CONC_OK || resultchan_new(&results, NJOBS) != CONC_OK)
		return 1;

	struct job jobs[NJOBS];
	for (int i = 0; i < NJOBS; i++) {
		jobs[i] = (struct job){i + 1, results};
		/* Blocks while the queue is full: back-pressure, as a Go channel. */
		if (conc_pool_submit(pool, process, &jobs[i], NULL) != CONC_OK)
			return 1;
	}

	int by_job[NJOBS + 1] = {0};
	for (int i = 0; i < NJOBS; i++) {
		struct result r;
		if (resultchan_recv(results, &r) != CONC_OK)
			return 1;
		by_job[r.job] = r.value;
	}
	for (int j = 1; j <= NJOBS; j++)
		printf("job %2d -> %d\n", j, by_job[j]);

	long sq[100];
	if (conc_pool_parallel_for(pool, 100, square, sq, NULL) != CONC_OK)
		return 1;
	long sum = 0;
	for (int i = 0; i < 100; i++)
		sum += sq[i];
	printf("sum of squares below 100: %ld\n", sum);

	printf("shutdown: %s\n", conc_strerror(conc_pool_shutdown(pool, CONC_POOL_DRAIN)));
	printf("submit after shutdown: %s\n", conc_strerror(conc_pool_submit(pool, process, &jobs[0], NULL)));
	resultchan_free(results);
	return conc_pool_free(pool) == CONC_OK ? 0 : 1;
}
