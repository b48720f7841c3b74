/* SPDX-License-Identifier: MIT */
/*
 * bench/patterns.c: the pattern layers against their mutex baselines, built
 * the usual way.  Each run function is a struct bench_workload's: for the
 * conc contender it runs conc's layer, for the mutex contender the
 * baseline, and for any other contender (ck_ring has no such layers) it
 * writes NAN, shown as "-".
 *
 *  - pool: one submitter (slot 0) submits no-op tasks to a pool of W workers
 *    (W = the workload's consumers: 2 or 8; workers pinned to slots 1..W),
 *    queue capacity 1024, then waits until the pool is idle.  Row: tasks/s.
 *    Baseline: a task ring under one mutex with three condition variables
 *    (not empty, not full, idle).
 *  - semaphore, uncontended: one thread acquires and releases one unit in a
 *    loop.  Row: ns per acquire+release.  Baseline: a count under a mutex
 *    and a condition variable.  The same run also times POSIX sem_t
 *    (sem_wait+sem_post) and a bare atomic fetch_add+fetch_sub pair on one
 *    word, which the notes under the table compare with conc.
 *  - semaphore, contended: 8 threads on 2 units, each acquiring and releasing
 *    one in a loop for a fixed time.  Row: acquire+release pairs per second.
 *  - pipeline: a pusher, 3 stages of one worker each adding 1, and a puller
 *    that checks the sum.  conc: conc_pipeline (stages move items in bursts).
 *    Baseline: the same threads over mutex+condvar channels, one item per
 *    call, as Go's pattern is written.  Row: items/s.
 */
#define _GNU_SOURCE 1
#include "harness.h"

#include <math.h>
#include <semaphore.h>
#include <stdlib.h>

/* Extra timings of the uncontended semaphore run, per repetition, for the
 * notes: sem_t and the atomic pair. */
#define EXTRA_MAX 1000
static double extra_semt[EXTRA_MAX], extra_atomic[EXTRA_MAX];
static size_t extra_n;

static bool is_conc(const struct bench_ops *ops)
{
	return ops == &bench_conc_ops;
}

static bool is_mutex(const struct bench_ops *ops)
{
	return ops == &bench_mutex_ops;
}

/* Whether a throughput run should stop: the time limit, checked every 1024
 * steps. */
static bool past(uint64_t i, int64_t t0, double limit_s)
{
	return (i & 1023) == 0 && bench_seconds(bench_now_ns() - t0) > limit_s;
}

/* ------------------------------------------------------------ mutex pool */

#define MPOOL_CAP 1024
#define MAX_WORKERS 8

struct mpool_task {
	void (*fn)(void *);
	void *arg;
};

struct mpool {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full, idle;
	struct mpool_task ring[MPOOL_CAP];
	size_t head, count, running;
	bool stop;
	size_t nthreads;
	pthread_t threads[MAX_WORKERS];
};

static void *mpool_worker(void *arg)
{
	struct mpool *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->count == 0 && !p->stop)
			pthread_cond_wait(&p->not_empty, &p->lock);
		if (p->count == 0)
			break;
		struct mpool_task t = p->ring[p->head];
		p->head = (p->head + 1) % MPOOL_CAP;
		p->count--;
		p->running++;
		pthread_cond_signal(&p->not_full);
		pthread_mutex_unlock(&p->lock);
		t.fn(t.arg);
		pthread_mutex_lock(&p->lock);
		if (--p->running == 0 && p->count == 0)
			pthread_cond_broadcast(&p->idle);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void mpool_start(struct mpool *p, size_t n)
{
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->not_empty, NULL);
	pthread_cond_init(&p->not_full, NULL);
	pthread_cond_init(&p->idle, NULL);
	p->head = p->count = p->running = 0;
	p->stop = false;
	p->nthreads = n;
	for (size_t i = 0; i < n; i++)
		bench_spawn(&p->threads[i], mpool_worker, p, (int)i + 1);
}

static void mpool_submit(struct mpool *p, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&p->lock);
	while (p->count == MPOOL_CAP)
		pthread_cond_wait(&p->not_full, &p->lock);
	p->ring[(p->head + p->count) % MPOOL_CAP] = (struct mpool_task){fn, arg};
	p->count++;
	pthread_cond_signal(&p->not_empty);
	pthread_mutex_unlock(&p->lock);
}

static void mpool_wait_idle(struct mpool *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->count || p->running)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

static void mpool_stop(struct mpool *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->not_empty);
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < p->nthreads; i++)
		bench_join(p->threads[i]);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->not_empty);
	pthread_cond_destroy(&p->not_full);
	pthread_cond_destroy(&p->idle);
}

/* ------------------------------------------------------------------ pool */

/* Tasks count themselves on one of 64 padded counters (by arg), so the
 * count proves every task ran without one shared line dominating. */
struct pool_counts {
	struct {
		CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) n;
	} c[64];
};

static struct pool_counts pool_counts;

static void pool_task(void *arg)
{
	atomic_fetch_add_explicit(&pool_counts.c[(uintptr_t)arg & 63].n, 1, memory_order_relaxed);
}

static void pool_pin(void *hook_arg, size_t worker)
{
	(void)hook_arg;
	bench_pin_self((int)worker + 1);
}

struct pool_run {
	const struct bench_ops *ops;
	size_t workers;
	uint64_t items, done;
	double limit_s;
	double seconds;
};

static void *pool_submitter(void *arg)
{
	struct pool_run *r = arg;
	struct conc_pool *cp = NULL;
	struct mpool *mp = NULL;
	if (is_conc(r->ops)) {
		struct conc_pool_config cfg = {.threads = r->workers, .queue_cap = MPOOL_CAP, .on_start = pool_pin};
		if (conc_pool_new(&cp, &cfg) != CONC_OK)
			bench_die("conc_pool_new failed");
	} else {
		mp = bench_alloc(sizeof *mp);
		mpool_start(mp, r->workers);
	}
	int64_t t0 = bench_now_ns();
	uint64_t i = 0;
	for (; i < r->items && !past(i, t0, r->limit_s); i++) {
		if (cp) {
			if (conc_pool_submit(cp, pool_task, (void *)(uintptr_t)i, NULL) != CONC_OK)
				bench_die("conc_pool_submit failed");
		} else {
			mpool_submit(mp, pool_task, (void *)(uintptr_t)i);
		}
	}
	if (cp) {
		if (conc_pool_wait_idle(cp) != CONC_OK)
			bench_die("conc_pool_wait_idle failed");
	} else {
		mpool_wait_idle(mp);
	}
	r->seconds = bench_seconds(bench_now_ns() - t0);
	r->done = i;
	if (cp) {
		if (conc_pool_free(cp) != CONC_OK)
			bench_die("conc_pool_free failed");
	} else {
		mpool_stop(mp);
		free(mp);
	}
	return NULL;
}

void bench_run_pool(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		    uint64_t items, double *out)
{
	if (!is_conc(ops) && !is_mutex(ops)) {
		out[0] = NAN;
		return;
	}
	memset(&pool_counts, 0, sizeof pool_counts);
	struct pool_run r = {ops, (size_t)w->consumers, items, 0, cfg->limit_s, 0};
	pthread_t t;
	bench_spawn(&t, pool_submitter, &r, 0);
	bench_join(t);
	uint64_t ran = 0;
	for (size_t k = 0; k < 64; k++)
		ran += atomic_load_explicit(&pool_counts.c[k].n, memory_order_relaxed);
	if (ran != r.done)
		bench_die("pool: %llu tasks submitted, %llu ran", (unsigned long long)r.done, (unsigned long long)ran);
	out[0] = (double)r.done / r.seconds / 1e6;
}

/* ------------------------------------------------------- mutex semaphore */

struct msem {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t count;
	size_t waiting;
};

static void msem_init(struct msem *s, uint64_t n)
{
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->count = n;
	s->waiting = 0;
}

static void msem_acquire(struct msem *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->count == 0) {
		s->waiting++;
		pthread_cond_wait(&s->cond, &s->lock);
		s->waiting--;
	}
	s->count--;
	pthread_mutex_unlock(&s->lock);
}

static void msem_release(struct msem *s)
{
	pthread_mutex_lock(&s->lock);
	s->count++;
	if (s->waiting)
		pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void msem_destroy(struct msem *s)
{
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}

/* ------------------------------------------------------------- semaphore */

enum sem_kind { SEM_CONC, SEM_MUTEX, SEM_POSIX, SEM_ATOMIC };

struct sem_any {
	enum sem_kind kind;
	struct conc_sem conc;
	struct msem mutex;
	sem_t posix;
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(uint64_t) word;
};

static void sem_any_init(struct sem_any *s, enum sem_kind kind, unsigned n)
{
	s->kind = kind;
	if (kind == SEM_CONC && conc_sem_init(&s->conc, n, n) != CONC_OK)
		bench_die("conc_sem_init failed");
	if (kind == SEM_MUTEX)
		msem_init(&s->mutex, n);
	if (kind == SEM_POSIX && sem_init(&s->posix, 0, n) != 0)
		bench_die("sem_init failed");
	atomic_init(&s->word, 0);
}

static void sem_any_destroy(struct sem_any *s)
{
	if (s->kind == SEM_CONC && conc_sem_destroy(&s->conc) != CONC_OK)
		bench_die("conc_sem_destroy failed");
	if (s->kind == SEM_MUTEX)
		msem_destroy(&s->mutex);
	if (s->kind == SEM_POSIX)
		sem_destroy(&s->posix);
}

/* n acquire+release pairs; each kind's loop is its own, so the compiler
 * sees straight-line calls (the atomic pair is what a semaphore's fast path
 * costs at the least: one read-modify-write each way). */
static void sem_pairs(struct sem_any *s, uint64_t n)
{
	switch (s->kind) {
	case SEM_CONC:
		for (uint64_t i = 0; i < n; i++) {
			if (conc_sem_acquire(&s->conc, 1) != CONC_OK)
				bench_die("conc_sem_acquire failed");
			(void)conc_sem_release(&s->conc, 1);
		}
		break;
	case SEM_MUTEX:
		for (uint64_t i = 0; i < n; i++) {
			msem_acquire(&s->mutex);
			msem_release(&s->mutex);
		}
		break;
	case SEM_POSIX:
		for (uint64_t i = 0; i < n; i++) {
			while (sem_wait(&s->posix) != 0)
				;
			sem_post(&s->posix);
		}
		break;
	case SEM_ATOMIC:
		for (uint64_t i = 0; i < n; i++) {
			atomic_fetch_add_explicit(&s->word, 1, memory_order_acquire);
			atomic_fetch_sub_explicit(&s->word, 1, memory_order_release);
		}
		break;
	}
}

/* ns per pair, single thread, for about `seconds`. */
static double sem_uncontended(enum sem_kind kind, double seconds)
{
	struct sem_any *s = bench_alloc(sizeof *s);
	sem_any_init(s, kind, 1);
	sem_pairs(s, 10000); /* warm up */
	uint64_t n = 0, step = 1 << 14;
	int64_t t0 = bench_now_ns(), t;
	do {
		sem_pairs(s, step);
		n += step;
	} while (bench_seconds((t = bench_now_ns()) - t0) < seconds);
	sem_any_destroy(s);
	free(s);
	return (double)(t - t0) / (double)n;
}

void bench_run_sem(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		   uint64_t items, double *out)
{
	(void)w;
	(void)items;
	double s = cfg->pingpong_s;
	if (is_conc(ops)) {
		out[0] = sem_uncontended(SEM_CONC, s);
		if (extra_n < EXTRA_MAX) {
			extra_semt[extra_n] = sem_uncontended(SEM_POSIX, s);
			extra_atomic[extra_n++] = sem_uncontended(SEM_ATOMIC, s);
		}
	} else {
		out[0] = is_mutex(ops) ? sem_uncontended(SEM_MUTEX, s) : NAN;
	}
}

#define SEMC_THREADS 8
#define SEMC_UNITS 2

static uint64_t semc_step(void *sem)
{
	sem_pairs(sem, 64);
	return 64;
}

void bench_run_sem_contended(const struct bench_workload *w, const struct bench_ops *ops,
			     const struct bench_config *cfg, uint64_t items, double *out)
{
	(void)w;
	(void)items;
	if (!is_conc(ops) && !is_mutex(ops)) {
		out[0] = NAN;
		return;
	}
	struct sem_any *sem = bench_alloc(sizeof *sem);
	sem_any_init(sem, is_conc(ops) ? SEM_CONC : SEM_MUTEX, SEMC_UNITS);
	out[0] = bench_run_loop(SEMC_THREADS, cfg->target_s, semc_step, sem) / 1e6;
	sem_any_destroy(sem);
	free(sem);
}

/* -------------------------------------------------------------- pipeline */

#define PIPE_STAGES 3
#define PIPE_CAP 1024

static int pipe_add1(void *arg, struct conc_ctx *ctx, const void *in, void *out)
{
	(void)arg;
	(void)ctx;
	uint64_t v;
	memcpy(&v, in, sizeof v);
	v++;
	memcpy(out, &v, sizeof v);
	return 0;
}

struct pipe_run {
	const struct bench_ops *ops;
	void *chans[PIPE_STAGES + 1]; /* mutex: stage i reads chans[i], writes chans[i + 1] */
	struct conc_pipeline *p;      /* conc */
	uint64_t items, pushed, sum;
	double limit_s;
	pthread_barrier_t start;
};

static void *pipe_pusher(void *arg)
{
	struct pipe_run *r = arg;
	bench_barrier_wait(&r->start);
	int64_t t0 = bench_now_ns();
	uint64_t i = 0;
	for (; i < r->items && !past(i, t0, r->limit_s); i++) {
		bool ok = r->p ? conc_pipeline_push(r->p, &i) == CONC_OK : r->ops->send(r->chans[0], &i);
		if (!ok)
			bench_die("pipeline push failed");
	}
	r->pushed = i;
	if (r->p)
		(void)conc_pipeline_close_input(r->p);
	else
		r->ops->close(r->chans[0]);
	return NULL;
}

struct pipe_stage_arg {
	struct pipe_run *r;
	size_t i;
};

static void *pipe_mutex_stage(void *arg)
{
	struct pipe_stage_arg *a = arg;
	const struct bench_ops *ops = a->r->ops;
	uint64_t v;
	while (ops->recv(a->r->chans[a->i], &v)) {
		v++;
		if (!ops->send(a->r->chans[a->i + 1], &v))
			bench_die("pipeline stage send failed");
	}
	ops->close(a->r->chans[a->i + 1]);
	return NULL;
}

static void *pipe_puller(void *arg)
{
	struct pipe_run *r = arg;
	bench_barrier_wait(&r->start);
	uint64_t v, sum = 0;
	if (r->p) {
		while (conc_pipeline_pull(r->p, &v) == CONC_OK)
			sum += v;
	} else {
		while (r->ops->recv(r->chans[PIPE_STAGES], &v))
			sum += v;
	}
	r->sum = sum;
	return NULL;
}

void bench_run_pipeline(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
			uint64_t items, double *out)
{
	(void)w;
	if (!is_conc(ops) && !is_mutex(ops)) {
		out[0] = NAN;
		return;
	}
	struct pipe_run *r = bench_alloc(sizeof *r);
	r->ops = ops;
	r->items = items;
	r->limit_s = cfg->limit_s;
	pthread_t stage[PIPE_STAGES];
	struct pipe_stage_arg sa[PIPE_STAGES];
	if (is_conc(ops)) {
		struct conc_pipeline_config pc = {.esize = sizeof(uint64_t), .queue_cap = PIPE_CAP};
		if (conc_pipeline_new(&r->p, &pc) != CONC_OK)
			bench_die("conc_pipeline_new failed");
		for (size_t i = 0; i < PIPE_STAGES; i++) {
			struct conc_stage_config sc = {.fn = pipe_add1, .workers = 1, .queue_cap = PIPE_CAP};
			if (conc_pipeline_add_stage(r->p, &sc) != CONC_OK)
				bench_die("conc_pipeline_add_stage failed");
		}
		if (conc_pipeline_start(r->p) != CONC_OK)
			bench_die("conc_pipeline_start failed");
	} else {
		for (size_t i = 0; i <= PIPE_STAGES; i++)
			if (!(r->chans[i] = ops->create(PIPE_CAP, sizeof(uint64_t))))
				bench_die("pipeline channel create failed");
		for (size_t i = 0; i < PIPE_STAGES; i++) {
			sa[i] = (struct pipe_stage_arg){r, i};
			bench_spawn(&stage[i], pipe_mutex_stage, &sa[i], -1);
		}
	}
	bench_barrier_init(&r->start, 3);
	pthread_t push, pull;
	bench_spawn(&push, pipe_pusher, r, -1);
	bench_spawn(&pull, pipe_puller, r, -1);
	bench_barrier_wait(&r->start);
	int64_t t0 = bench_now_ns();
	bench_join(push);
	bench_join(pull);
	double secs = bench_seconds(bench_now_ns() - t0);
	if (r->p) {
		int err = 0;
		if (conc_pipeline_wait(r->p, &err) != CONC_OK || err != 0 || conc_pipeline_free(r->p) != CONC_OK)
			bench_die("conc pipeline did not finish cleanly");
	} else {
		for (size_t i = 0; i < PIPE_STAGES; i++)
			bench_join(stage[i]);
		for (size_t i = 0; i <= PIPE_STAGES; i++)
			ops->destroy(r->chans[i]);
	}
	/* sum of (i + 3) for i < pushed */
	uint64_t n = r->pushed, want = n * (n - 1) / 2 + PIPE_STAGES * n;
	if (r->sum != want)
		bench_die("pipeline lost or changed items: sum %llu, expected %llu", (unsigned long long)r->sum,
			  (unsigned long long)want);
	pthread_barrier_destroy(&r->start);
	free(r);
	out[0] = (double)n / secs / 1e6;
}

/* ----------------------------------------------------------------- notes */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median_of(double *v, size_t n)
{
	qsort(v, n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

size_t bench_patterns_notes(double conc_sem_ns, char *buf, size_t size)
{
	if (extra_n == 0 || !(conc_sem_ns > 0))
		return 0;
	double semt = median_of(extra_semt, extra_n), atom = median_of(extra_atomic, extra_n);
	int k = snprintf(buf, size,
			 "semaphore uncontended, ns per acquire+release (this run): conc %.1f, sem_t %.1f, "
			 "bare atomic fetch_add+fetch_sub %.1f; conc / atomic pair %.2f, sem_t / conc %.2f\n",
			 conc_sem_ns, semt, atom, conc_sem_ns / atom, semt / conc_sem_ns);
	return k > 0 && (size_t)k < size ? (size_t)k : 0;
}
