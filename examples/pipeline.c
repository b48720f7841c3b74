/* SPDX-License-Identifier: MIT */
/*
 * pipeline: Go's gen -> sq pipeline (gen(2, 3), then square), then a longer
 * run: 1..12 through a parallel ordered square stage (4 workers) and a
 * one-worker "+1" stage; the output keeps the input order.
 */
#include <conc.h>
#include <stdio.h>

static int sq(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg;
	(void)ctx;
	int n = *(const int *)in;
	*(int *)out = n * n;
	return 0;
}

static int plus1(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg;
	(void)ctx;
	*(int *)out = *(const int *)in + 1;
	return 0;
}

/* Push nums into a pipeline of the given stages and print what comes out. */
static int run(const int *nums, int count, const struct conc_stage_config *stages, int nstages)
{
	struct conc_pipeline *p;
	if (conc_pipeline_new(&p, &(struct conc_pipeline_config){.esize = sizeof(int)}) != CONC_OK)
		return 1;
	for (int i = 0; i < nstages; i++)
		if (conc_pipeline_add_stage(p, &stages[i]) != CONC_OK)
			return 1;
	if (conc_pipeline_start(p) != CONC_OK)
		return 1;
	for (int i = 0; i < count; i++) /* the generator */
		if (conc_pipeline_push(p, &nums[i]) != CONC_OK)
			return 1;
	conc_pipeline_close_input(p);
	int v, err;
	while (conc_pipeline_pull(p, &v) == CONC_OK)
		printf("%d\n", v);
	if (conc_pipeline_wait(p, &err) != CONC_OK || err != 0)
		return 1;
	return conc_pipeline_free(p) == CONC_OK ? 0 : 1;
}

int main(void)
{
	int gen[] = {2, 3};
	struct conc_stage_config square = {.fn = sq, .workers = 1};
	if (run(gen, 2, &square, 1))
		return 1;

	printf("--\n");
	int nums[12];
	for (int i = 0; i < 12; i++)
		nums[i] = i + 1;
	struct conc_stage_config stages[] = {
		{.fn = sq, .workers = 4, .ordered = true, .batch = 1},
		{.fn = plus1, .workers = 1},
	};
	return run(nums, 12, stages, 2);
}
