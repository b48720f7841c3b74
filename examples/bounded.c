/* SPDX-License-Identifier: MIT */
/* Bounded parallelism (the seed's "10 tasks, 3 at a time"): a group with a
 * limit of 3 on a pool of 4 workers.  The limit is a conc_sem; go() waits
 * for a free slot, first come, first served. */
#include <conc.h>
#include <stdio.h>

#define TASKS 10
#define LIMIT 3

static _Atomic(int) running, most;
static int result[TASKS + 1];

static int process(struct conc_ctx *ctx, void *arg)
{
	(void)ctx;
	int id = (int)(intptr_t)arg;
	int now = atomic_fetch_add(&running, 1) + 1;
	int seen = atomic_load(&most);
	while (now > seen && !atomic_compare_exchange_weak(&most, &seen, now))
		;
	result[id] = id * id; /* the work */
	atomic_fetch_sub(&running, 1);
	return 0;
}

int main(void)
{
	struct conc_pool *pool;
	struct conc_pool_config cfg = {.threads = 4, .queue_cap = 16};
	if (conc_pool_new(&pool, &cfg) != CONC_OK)
		return 1;
	struct conc_group g;
	if (conc_group_init(&g, pool, NULL, LIMIT, NULL, 0) != CONC_OK)
		return 1;
	for (int id = 1; id <= TASKS; id++)
		if (conc_group_go(&g, process, (void *)(intptr_t)id) != CONC_OK)
			return 1;
	int err = conc_group_wait(&g); /* every task has returned */
	for (int id = 1; id <= TASKS; id++)
		printf("processed task %d: %d\n", id, result[id]);
	printf("at most %d at a time: %s\n", LIMIT, atomic_load(&most) <= LIMIT ? "yes" : "NO");
	printf("first error: %s\n", conc_strerror(err));
	return conc_group_destroy(&g) == CONC_OK && conc_pool_free(pool) == CONC_OK ? 0 : 1;
}
