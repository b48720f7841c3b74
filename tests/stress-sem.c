/* SPDX-License-Identifier: MIT */
/*
 * stress-sem: semaphore stress scenarios as a plain program (Criterion does
 * not start under ThreadSanitizer).
 *
 *   limit holds       8 threads take 1..3 units of a size-3 semaphore by
 *                     every route (blocking, try, short deadline, context
 *                     canceled by a neighbour) and check that the units held
 *                     at once never exceed 3; at the end all 3 are free and
 *                     nobody is in line
 *   big not starved   one thread takes all 4 units of a size-4 semaphore,
 *                     over and over, while 7 threads take 1 unit in a tight
 *                     loop until it is done: first come, first served means
 *                     it gets through (a starving version hangs, and the
 *                     watchdog fails it)
 *   free units reach a queued waiter
 *                     a thread writes a payload and releases 1 unit of 2 on
 *                     the fast path; a waiter for 2 then queues (1 free) and
 *                     is granted when the main thread releases the second
 *                     unit; it reads the payload, which ThreadSanitizer
 *                     reports as a race unless the first release happens
 *                     before the grant
 *   cancel storm      waiters for 1..2 units with contexts that a canceler
 *                     thread cancels at random points while a poster releases
 *                     units one at a time: every unit is either still free or
 *                     was taken by a waiter that reported CONC_OK, exactly
 *
 * No sleep stands in for synchronisation and no timing is asserted.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-sem"
#include "stress.h"

/* ------------------------------------------------------------ limit holds */

#define LIM_THREADS 8
#define LIM_SIZE 3

struct lim {
	struct conc_sem sem;
	_Atomic(uint64_t) in_use;
	_Atomic(uint64_t) taken, timeouts, cancels;
	size_t rounds;
	pthread_barrier_t start;
};

struct lim_worker {
	struct lim *l;
	struct rng rng;
	pthread_t thread;
};

/* One acquire of n units by a route picked at random; CONC_OK or why not. */
static enum conc_status lim_acquire(struct lim *l, struct rng *r, uint64_t n)
{
	switch (rng_below(r, 4)) {
	case 0:
		return conc_sem_acquire(&l->sem, n);
	case 1: {
		enum conc_status s = conc_sem_try_acquire(&l->sem, n);
		return s == CONC_WOULDBLOCK ? CONC_TIMEDOUT : s;
	}
	case 2:
		return conc_sem_acquire_until(&l->sem, n, stress_short_deadline(r), NULL);
	default: {
		/* A context that this thread cancels at once half the time: the
		 * call then fails before it tries. */
		struct conc_ctx ctx;
		if (conc_ctx_init(&ctx, NULL, stress_short_deadline(r)) != CONC_OK) {
			fail("conc_ctx_init failed");
			return CONC_INVALID;
		}
		if (rng_below(r, 2))
			(void)conc_ctx_cancel(&ctx, 0);
		enum conc_status s = conc_sem_acquire_until(&l->sem, n, conc_deadline_forever(), &ctx);
		if (conc_ctx_destroy(&ctx) != CONC_OK)
			fail("a context still had a waiter after acquire returned");
		return s;
	}
	}
}

static void *lim_main(void *arg)
{
	struct lim_worker *w = arg;
	struct lim *l = w->l;
	pthread_barrier_wait(&l->start);
	for (size_t i = 0; i < l->rounds && !atomic_load(&failed_flag); i++) {
		uint64_t n = 1 + rng_below(&w->rng, LIM_SIZE);
		enum conc_status s = lim_acquire(l, &w->rng, n);
		if (s == CONC_TIMEDOUT) {
			atomic_fetch_add(&l->timeouts, 1);
			continue;
		}
		if (s == CONC_CANCELED) {
			atomic_fetch_add(&l->cancels, 1);
			continue;
		}
		if (s != CONC_OK) {
			fail("acquire of %" PRIu64 " gave %s", n, conc_strerror(s));
			return NULL;
		}
		uint64_t now = atomic_fetch_add(&l->in_use, n) + n;
		if (now > LIM_SIZE)
			fail("%" PRIu64 " units held at once, size %d", now, LIM_SIZE);
		spin_random(&w->rng);
		atomic_fetch_sub(&l->in_use, n);
		atomic_fetch_add(&l->taken, 1);
		if ((s = conc_sem_release(&l->sem, n)) != CONC_OK)
			fail("release of %" PRIu64 " gave %s", n, conc_strerror(s));
	}
	return NULL;
}

static void scenario_limit(size_t unused)
{
	(void)unused;
	struct lim l;
	memset(&l, 0, sizeof l);
	l.rounds = SIZED(20000, 3000);
	if (conc_sem_init(&l.sem, LIM_SIZE, LIM_SIZE) != CONC_OK) {
		fail("conc_sem_init failed");
		return;
	}
	barrier_init(&l.start, LIM_THREADS);
	struct lim_worker w[LIM_THREADS];
	for (size_t t = 0; t < LIM_THREADS; t++) {
		w[t].l = &l;
		w[t].rng = rng_for(100 + t);
		spawn(&w[t].thread, lim_main, &w[t]);
	}
	for (size_t t = 0; t < LIM_THREADS; t++)
		join(w[t].thread);
	pthread_barrier_destroy(&l.start);
	if (conc_sem_available(&l.sem) != LIM_SIZE)
		fail("%" PRIu64 " units free at the end, expected %d", conc_sem_available(&l.sem), LIM_SIZE);
	if (conc_sem_destroy(&l.sem) != CONC_OK)
		fail("a waiter was left in line");
	note("%" PRIu64 " acquired, %" PRIu64 " timed out, %" PRIu64 " canceled", atomic_load(&l.taken),
	     atomic_load(&l.timeouts), atomic_load(&l.cancels));
}

/* -------------------------------------------------------- big not starved */

#define BIG_LIGHT 7
#define BIG_SIZE 4

struct big {
	struct conc_sem sem;
	atomic_bool done;
	_Atomic(uint64_t) light_rounds;
	pthread_barrier_t start;
};

static void *big_light(void *arg)
{
	struct big *b = arg;
	pthread_barrier_wait(&b->start);
	while (!atomic_load(&b->done)) {
		enum conc_status s = conc_sem_acquire(&b->sem, 1);
		if (s != CONC_OK) {
			fail("light acquire gave %s", conc_strerror(s));
			return NULL;
		}
		atomic_fetch_add_explicit(&b->light_rounds, 1, memory_order_relaxed);
		if ((s = conc_sem_release(&b->sem, 1)) != CONC_OK)
			fail("light release gave %s", conc_strerror(s));
	}
	return NULL;
}

static void scenario_big(size_t unused)
{
	(void)unused;
	struct big b;
	memset(&b, 0, sizeof b);
	if (conc_sem_init(&b.sem, BIG_SIZE, BIG_SIZE) != CONC_OK) {
		fail("conc_sem_init failed");
		return;
	}
	barrier_init(&b.start, BIG_LIGHT + 1);
	pthread_t light[BIG_LIGHT];
	for (size_t t = 0; t < BIG_LIGHT; t++)
		spawn(&light[t], big_light, &b);
	pthread_barrier_wait(&b.start);
	size_t rounds = SIZED(2000, 300);
	for (size_t i = 0; i < rounds; i++) {
		enum conc_status s = conc_sem_acquire(&b.sem, BIG_SIZE);
		if (s != CONC_OK) {
			fail("big acquire gave %s", conc_strerror(s));
			break;
		}
		if (conc_sem_available(&b.sem) != 0)
			fail("the big holder sees free units");
		if ((s = conc_sem_release(&b.sem, BIG_SIZE)) != CONC_OK)
			fail("big release gave %s", conc_strerror(s));
	}
	atomic_store(&b.done, true);
	for (size_t t = 0; t < BIG_LIGHT; t++)
		join(light[t]);
	pthread_barrier_destroy(&b.start);
	if (conc_sem_available(&b.sem) != BIG_SIZE)
		fail("%" PRIu64 " units free at the end", conc_sem_available(&b.sem));
	if (conc_sem_destroy(&b.sem) != CONC_OK)
		fail("a waiter was left in line");
	note("%zu big rounds beside %" PRIu64 " light ones", rounds, atomic_load(&b.light_rounds));
}

/* ---------------------------------------- free units reach a queued waiter */

struct hb {
	struct conc_sem sem;
	uint64_t payload; /* plain: ordered only through the semaphore */
	uint64_t seen;
};

static void *hb_releaser(void *arg)
{
	struct hb *h = arg;
	h->payload = 42;
	if (conc_sem_release(&h->sem, 1) != CONC_OK)
		fail("release failed");
	return NULL;
}

static void *hb_waiter(void *arg)
{
	struct hb *h = arg;
	while (conc_sem_available(&h->sem) != 1) /* the releaser's unit is free */
		conc_yield();
	enum conc_status s = conc_sem_acquire(&h->sem, 2); /* queues: only 1 free */
	if (s != CONC_OK)
		fail("acquire of 2 gave %s", conc_strerror(s));
	h->seen = h->payload;
	return NULL;
}

static void scenario_hb(size_t unused)
{
	(void)unused;
	size_t rounds = SIZED(2000, 200);
	for (size_t r = 0; r < rounds && !atomic_load(&failed_flag); r++) {
		struct hb h;
		memset(&h, 0, sizeof h);
		if (conc_sem_init(&h.sem, 2, 0) != CONC_OK) {
			fail("conc_sem_init failed");
			return;
		}
		pthread_t a, b;
		spawn(&b, hb_waiter, &h);
		spawn(&a, hb_releaser, &h);
		/* Wait until the waiter is in line (QUEUED), then give the second
		 * unit through the locked path. */
		while (!(atomic_load_explicit(&h.sem.word, memory_order_relaxed) & CONC__SEM_QUEUED))
			conc_yield();
		if (conc_sem_release(&h.sem, 1) != CONC_OK)
			fail("second release failed");
		join(b);
		join(a);
		if (h.seen != 42)
			fail("round %zu: the waiter read %" PRIu64, r, h.seen);
		if (conc_sem_destroy(&h.sem) != CONC_OK)
			fail("a waiter was left in line");
	}
}

/* ----------------------------------------------------------- cancel storm */

#define STORM_WAITERS 6
#define STORM_SIZE 64

struct storm {
	struct conc_sem sem;
	struct conc_ctx ctx[STORM_WAITERS];
	atomic_bool ctx_live[STORM_WAITERS];
	_Atomic(uint64_t) units_taken; /* by successful acquires */
	_Atomic(uint64_t) canceled;
	atomic_bool posting_done;
	size_t posts;
	pthread_barrier_t start;
};

struct storm_worker {
	struct storm *st;
	size_t id;
	struct rng rng;
	pthread_t thread;
};

static void *storm_waiter(void *arg)
{
	struct storm_worker *w = arg;
	struct storm *st = w->st;
	pthread_barrier_wait(&st->start);
	while (!atomic_load(&st->posting_done) && !atomic_load(&failed_flag)) {
		struct conc_ctx *ctx = &st->ctx[w->id];
		if (conc_ctx_init_root(ctx) != CONC_OK) {
			fail("conc_ctx_init failed");
			return NULL;
		}
		atomic_store(&st->ctx_live[w->id], true);
		uint64_t n = 1 + rng_below(&w->rng, 2);
		enum conc_status s = conc_sem_acquire_until(&st->sem, n, conc_deadline_in_ms(2), ctx);
		/* Wait for the canceler to be done with this context. */
		bool expected = true;
		while (!atomic_compare_exchange_weak(&st->ctx_live[w->id], &expected, false)) {
			expected = true;
			conc_yield();
		}
		if (s == CONC_OK)
			atomic_fetch_add(&st->units_taken, n);
		else if (s == CONC_CANCELED)
			atomic_fetch_add(&st->canceled, 1);
		else if (s != CONC_TIMEDOUT)
			fail("acquire gave %s", conc_strerror(s));
		if (conc_ctx_destroy(ctx) != CONC_OK)
			fail("a context still had a waiter after acquire returned");
	}
	return NULL;
}

static void *storm_canceler(void *arg)
{
	struct storm_worker *w = arg;
	struct storm *st = w->st;
	pthread_barrier_wait(&st->start);
	while (!atomic_load(&st->posting_done)) {
		size_t k = rng_below(&w->rng, STORM_WAITERS);
		/* Hold the context alive (the flag) while canceling it. */
		bool expected = true;
		if (atomic_compare_exchange_strong(&st->ctx_live[k], &expected, false)) {
			(void)conc_ctx_cancel(&st->ctx[k], 0);
			atomic_store(&st->ctx_live[k], true);
		}
		spin_random(&w->rng);
	}
	return NULL;
}

static void scenario_storm(size_t unused)
{
	(void)unused;
	struct storm st;
	memset(&st, 0, sizeof st);
	st.posts = SIZED(20000, 3000);
	if (conc_sem_init(&st.sem, UINT64_C(1) << 40, 0) != CONC_OK) {
		fail("conc_sem_init failed");
		return;
	}
	barrier_init(&st.start, STORM_WAITERS + 2);
	struct storm_worker w[STORM_WAITERS + 1];
	for (size_t t = 0; t <= STORM_WAITERS; t++) {
		w[t].st = &st;
		w[t].id = t;
		w[t].rng = rng_for(700 + t);
		spawn(&w[t].thread, t < STORM_WAITERS ? storm_waiter : storm_canceler, &w[t]);
	}
	pthread_barrier_wait(&st.start);
	struct rng r = rng_for(799);
	for (size_t i = 0; i < st.posts; i++) {
		enum conc_status s = conc_sem_release(&st.sem, 1);
		if (s != CONC_OK)
			fail("post gave %s", conc_strerror(s));
		if (rng_below(&r, 8) == 0)
			spin_random(&r);
	}
	atomic_store(&st.posting_done, true);
	for (size_t t = 0; t <= STORM_WAITERS; t++)
		join(w[t].thread);
	pthread_barrier_destroy(&st.start);
	uint64_t left = conc_sem_available(&st.sem), taken = atomic_load(&st.units_taken);
	if (left + taken != st.posts)
		fail("%" PRIu64 " units free + %" PRIu64 " taken != %zu posted", left, taken, st.posts);
	if (conc_sem_destroy(&st.sem) != CONC_OK)
		fail("a waiter was left in line");
	note("%zu posted, %" PRIu64 " taken, %" PRIu64 " canceled waits", st.posts, taken, atomic_load(&st.canceled));
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"limit holds", scenario_limit, 0},
		{"big not starved", scenario_big, 0},
		{"free units reach a queued waiter", scenario_hb, 0},
		{"cancel storm", scenario_storm, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
