/* SPDX-License-Identifier: MIT */
/*
 * stress-group: error groups under oversubscription, as a plain program
 * (Criterion does not start under ThreadSanitizer).
 *
 *   accounting   rounds of 4 submitter threads each starting 200 tasks into
 *                one group (limit 3) on a pool of 6 workers; some tasks fail,
 *                and some rounds cancel the group from another thread at a
 *                random point.  Every task accepted by go either ran once or
 *                was skipped, never both; never more than 3 ran at once; the
 *                errors counted are exactly the failures returned; go refused
 *                only after the group was done; wait returns an error that
 *                some task returned (or the cancel's cause).
 *
 * No sleep stands in for synchronisation and no timing is asserted.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-group"
#include "stress.h"

#define SUBMITTERS 4
#define LIMIT 3
#define CANCEL_CAUSE 5555

struct acc {
	struct conc_group g;
	size_t per;                       /* tasks per submitter */
	_Atomic(unsigned char) *ran;      /* per task: times run */
	bool *fails;                      /* per task: returns an error */
	_Atomic(int) running, most;
	_Atomic(uint64_t) accepted, refused, failed;
	pthread_barrier_t start;
};

struct acc_task {
	struct acc *a;
	size_t id;
};

struct acc_worker {
	struct acc *a;
	size_t id;
	struct acc_task *tasks;
	struct rng rng;
	pthread_t thread;
};

static int acc_task_main(struct conc_ctx *ctx, void *arg)
{
	(void)ctx;
	struct acc_task *t = arg;
	struct acc *a = t->a;
	int now = atomic_fetch_add(&a->running, 1) + 1;
	int most = atomic_load(&a->most);
	while (now > most && !atomic_compare_exchange_weak(&a->most, &most, now))
		;
	atomic_fetch_add(&a->ran[t->id], 1);
	atomic_fetch_sub(&a->running, 1);
	if (a->fails[t->id]) {
		atomic_fetch_add(&a->failed, 1);
		return 1000 + (int)(t->id % 1000);
	}
	return 0;
}

static void *acc_submitter(void *arg)
{
	struct acc_worker *w = arg;
	struct acc *a = w->a;
	pthread_barrier_wait(&a->start);
	for (size_t i = 0; i < a->per; i++) {
		struct acc_task *t = &w->tasks[i];
		t->a = a;
		t->id = w->id * a->per + i;
		enum conc_status s = rng_below(&w->rng, 4) ? conc_group_go(&a->g, acc_task_main, t)
							   : conc_group_go_until(&a->g, acc_task_main, t,
										 stress_short_deadline(&w->rng));
		if (s == CONC_OK) {
			atomic_fetch_add(&a->accepted, 1);
		} else if (s == CONC_CANCELED || s == CONC_TIMEDOUT) {
			if (s == CONC_CANCELED && conc_ctx_err(conc_group_ctx(&a->g)) == CONC_OK)
				fail("go said CANCELED while the group is live");
			atomic_fetch_add(&a->refused, 1);
		} else {
			fail("go gave %s", conc_strerror(s));
		}
	}
	return NULL;
}

struct canceler {
	struct conc_group *g;
	struct rng rng;
};

static void *acc_canceler(void *arg)
{
	struct canceler *c = arg;
	for (size_t k = rng_below(&c->rng, 8); k > 0; k--)
		spin_random(&c->rng);
	(void)conc_group_cancel(c->g, CANCEL_CAUSE);
	return NULL;
}

static void acc_round(struct conc_pool *pool, size_t round)
{
	struct acc a;
	memset(&a, 0, sizeof a);
	a.per = SIZED(200, 50);
	size_t total = SUBMITTERS * a.per;
	a.ran = xcalloc(total, sizeof *a.ran);
	a.fails = xcalloc(total, sizeof *a.fails);
	struct rng r = rng_for(1000 + round);
	bool failing = rng_below(&r, 2), canceling = rng_below(&r, 3) == 0;
	for (size_t i = 0; i < total; i++)
		a.fails[i] = failing && rng_below(&r, 64) == 0;
	struct conc_group_error errs[16];
	if (conc_group_init(&a.g, pool, NULL, LIMIT, errs, 16) != CONC_OK) {
		fail("conc_group_init failed");
		return;
	}
	barrier_init(&a.start, SUBMITTERS);
	struct acc_worker w[SUBMITTERS];
	for (size_t t = 0; t < SUBMITTERS; t++) {
		w[t].a = &a;
		w[t].id = t;
		w[t].tasks = xcalloc(a.per, sizeof *w[t].tasks);
		w[t].rng = rng_for(1100 + round * SUBMITTERS + t);
		spawn(&w[t].thread, acc_submitter, &w[t]);
	}
	struct canceler c = {&a.g, rng_for(1200 + round)};
	pthread_t ct;
	if (canceling)
		spawn(&ct, acc_canceler, &c);
	for (size_t t = 0; t < SUBMITTERS; t++)
		join(w[t].thread);
	if (canceling)
		join(ct);
	int first = conc_group_wait(&a.g);

	uint64_t ran = 0;
	for (size_t i = 0; i < total; i++) {
		unsigned char n = atomic_load(&a.ran[i]);
		if (n > 1)
			fail("task %zu ran %u times", i, n);
		ran += n;
	}
	uint64_t accepted = atomic_load(&a.accepted), skipped = conc_group_skipped(&a.g);
	if (ran + skipped != accepted)
		fail("%" PRIu64 " ran + %" PRIu64 " skipped != %" PRIu64 " accepted", ran, skipped, accepted);
	if (accepted + atomic_load(&a.refused) != total)
		fail("%" PRIu64 " accepted + %" PRIu64 " refused != %zu", accepted, atomic_load(&a.refused), total);
	if (atomic_load(&a.most) > LIMIT)
		fail("%d tasks ran at once, limit %d", atomic_load(&a.most), LIMIT);
	size_t kept;
	uint64_t dropped;
	conc_group_errors(&a.g, &kept, &dropped);
	if (kept + dropped != atomic_load(&a.failed))
		fail("%zu kept + %" PRIu64 " dropped errors != %" PRIu64 " failures", kept, dropped,
		     atomic_load(&a.failed));
	for (size_t k = 0; k < kept; k++) {
		const struct acc_task *t = errs[k].arg;
		if (errs[k].status != 1000 + (int)(t->id % 1000) || !a.fails[t->id])
			fail("error %d kept for task %zu", errs[k].status, t->id);
	}
	int cause = conc_ctx_cause(conc_group_ctx(&a.g));
	if (first != 0 && first != CANCEL_CAUSE && (first < 1000 || first >= 2000))
		fail("wait returned %d, which no task returned", first);
	if (first == 0 && atomic_load(&a.failed))
		fail("wait returned 0 after %" PRIu64 " failures", atomic_load(&a.failed));
	if (first != 0 && first != cause)
		fail("wait returned %d but the group's cause is %d", first, cause);
	if (conc_group_destroy(&a.g) != CONC_OK)
		fail("conc_group_destroy failed after wait");
	pthread_barrier_destroy(&a.start);
	for (size_t t = 0; t < SUBMITTERS; t++)
		free(w[t].tasks);
	free(a.ran);
	free(a.fails);
	note("round %zu: %" PRIu64 " ran, %" PRIu64 " skipped, %" PRIu64 " refused, first %d", round, ran, skipped,
	     atomic_load(&a.refused), first);
}

static void scenario_accounting(size_t unused)
{
	(void)unused;
	struct conc_pool *pool;
	struct conc_pool_config cfg = {.threads = 6, .queue_cap = 8};
	if (conc_pool_new(&pool, &cfg) != CONC_OK) {
		fail("conc_pool_new failed");
		return;
	}
	size_t rounds = SIZED(40, 8);
	for (size_t r = 0; r < rounds && !atomic_load(&failed_flag); r++)
		acc_round(pool, r);
	if (conc_pool_free(pool) != CONC_OK)
		fail("conc_pool_free failed");
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"accounting", scenario_accounting, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
