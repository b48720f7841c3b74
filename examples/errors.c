/* SPDX-License-Identifier: MIT */
/* Error handling: the seed's processAsync (results carry a value, a status
 * and where they came from, over a channel), then an error group whose
 * first failure cancels the tasks still running and is what wait returns. */
#include <conc.h>
#include <pthread.h>
#include <stdio.h>

#define E_NEGATIVE 1001 /* the caller's own error code */

CONC_RESULT_TYPED(sqrt_result, int);

static const int items[] = {16, 9, -4, 25, -1, 36};
#define NITEMS (sizeof items / sizeof items[0])

/* process: the integer square root of a perfect square, or an error. */
static int process(int x, int *out)
{
	if (x < 0)
		return E_NEGATIVE;
	int r = 0;
	while ((r + 1) * (r + 1) <= x)
		r++;
	*out = r;
	return 0;
}

static void *process_async(void *arg)
{
	struct conc_chan *results = arg;
	for (size_t i = 0; i < NITEMS; i++) {
		struct sqrt_result r = {0, i, 0};
		r.status = process(items[i], &r.value);
		if (conc_chan_send(results, &r) != CONC_OK)
			break;
	}
	conc_chan_close(results);
	return NULL;
}

/* A task of the group: item 2 fails; the others wait for work that never
 * comes until the group is canceled, and then stop without an error. */
static int task(struct conc_ctx *ctx, void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	int v;
	if (process(items[i], &v) != 0)
		return E_NEGATIVE;
	(void)conc_ctx_wait_until(ctx, conc_deadline_forever());
	return 0;
}

static const char *name(int status)
{
	return status == E_NEGATIVE ? "negative input" : conc_strerror(status);
}

int main(void)
{
	struct conc_chan *results;
	if (conc_chan_new(&results, 0, sizeof(struct sqrt_result)) != CONC_OK)
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, process_async, results);
	struct sqrt_result r;
	while (conc_chan_recv(results, &r) == CONC_OK) {
		if (r.status == CONC_OK)
			printf("item %llu: sqrt %d\n", (unsigned long long)r.origin, r.value);
		else
			printf("item %llu: error: %s\n", (unsigned long long)r.origin, name(r.status));
	}
	pthread_join(t, NULL);
	conc_chan_free(results);

	struct conc_pool *pool;
	struct conc_pool_config cfg = {.threads = 3, .queue_cap = 8};
	struct conc_group g;
	struct conc_group_error errs[8];
	if (conc_pool_new(&pool, &cfg) != CONC_OK || conc_group_init(&g, pool, NULL, 3, errs, 8) != CONC_OK)
		return 1;
	for (size_t i = 0; i < 3; i++)
		if (conc_group_go(&g, task, (void *)(uintptr_t)i) != CONC_OK)
			return 1;
	int first = conc_group_wait(&g);
	size_t n;
	conc_group_errors(&g, &n, NULL);
	printf("group: first error: %s (task %llu), %zu error(s) in all, context %s\n", name(first),
	       (unsigned long long)errs[0].task, n, conc_strerror(conc_ctx_err(conc_group_ctx(&g))));
	return conc_group_destroy(&g) == CONC_OK && conc_pool_free(pool) == CONC_OK ? 0 : 1;
}
