/* SPDX-License-Identifier: MIT */
/*
 * bench/resilience.c: the rate limiter, the circuit breaker and pub/sub
 * against their mutex baselines, built the usual way.  As in patterns.c, the
 * conc contender runs conc's layer, the mutex contender the baseline, and any
 * other contender writes NAN ("-").
 *
 *  - limiter allow, 1 and 8 threads: each thread calls allow in a loop for
 *    a fixed time on one limiter of burst 64 and a rate (the workload's
 *    burst field) of 10 events per microsecond, where about a third of the
 *    calls are admitted, each admission a CAS on the one shared word, and of
 *    1 per microsecond, where most are refused (the overload a limiter is
 *    there for; a refusal is a load).  Row: allow calls per second.  Baseline: a token bucket (tokens in
 *    fixed point, last refill time) under a mutex; the clock is read before
 *    the lock, as conc reads it before its compare-and-swap.
 *  - breaker admission, 1 and 8 threads, closed state: each thread admits a
 *    no-op call and reports its success in a loop.  Row: calls per second.
 *    Both trip on 5 consecutive failures and stay open a second (the seed's
 *    configuration; conc then lets one probe through, the seed everyone).
 *    Baseline: the seed's breaker, its mutex held across the call.
 *  - publish to 1, 8 and 64 subscribers: one publisher (slot 0) publishes
 *    to one topic, one thread per subscriber receives and releases; each
 *    subscriber's queue holds 1024 and blocks the publisher when full, so
 *    nothing is dropped and every message reaches every subscriber (checked).
 *    Row: messages published per second.  Baseline: the seed's shape in C: a
 *    topic map (chained hash) and subscriber lists under a reader-writer
 *    lock, each subscriber a mutex+condvar queue (the mutex channel of this
 *    benchmark), the message shared by a reference count as conc shares it.
 *
 * Limiter accuracy (the notes under the table): 8 threads call allow for
 * one second on a limiter of 100,000 events per second, burst 100; the number
 * admitted is compared with what the configured rate allows in the time
 * from the limiter's start until the last caller returned (rate x elapsed +
 * burst): an upper bound that a correct limiter never passes, and that it
 * meets within scheduling gaps longer than the burst (1 ms).
 */
#define _GNU_SOURCE 1
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool is_conc(const struct bench_ops *ops)
{
	return ops == &bench_conc_ops;
}

static bool is_mutex(const struct bench_ops *ops)
{
	return ops == &bench_mutex_ops;
}

/* ------------------------------------------------------------ limiter */

#define RATE_PERIOD_NS 1000 /* events per microsecond: the workload's burst field */
#define RATE_BURST 64

/* The baseline: a token bucket under a mutex.  Tokens are kept in units of
 * 1/period_ns of a token, so refill is exact integer arithmetic. */
struct mbucket {
	pthread_mutex_t lock;
	int64_t events, period_ns, burst;
	int64_t scaled;  /* tokens x period_ns */
	int64_t last_ns; /* time of the last refill */
};

static void mbucket_init(struct mbucket *b, int64_t events, int64_t period_ns, int64_t burst)
{
	pthread_mutex_init(&b->lock, NULL);
	b->events = events;
	b->period_ns = period_ns;
	b->burst = burst;
	b->scaled = burst * period_ns;
	b->last_ns = bench_now_ns();
}

static bool mbucket_allow(struct mbucket *b)
{
	int64_t now = bench_now_ns();
	bool ok = false;
	pthread_mutex_lock(&b->lock);
	if (now > b->last_ns) {
		int64_t full = b->burst * b->period_ns;
		int64_t add = (now - b->last_ns) * b->events;
		b->scaled = add >= full - b->scaled ? full : b->scaled + add;
		b->last_ns = now;
	}
	if (b->scaled >= b->period_ns) {
		b->scaled -= b->period_ns;
		ok = true;
	}
	pthread_mutex_unlock(&b->lock);
	return ok;
}

struct limiter_any {
	struct conc_rate conc;
	struct mbucket mutex;
	bool is_conc;
	_Atomic(uint64_t) admitted;
};

static uint64_t limiter_step(void *state)
{
	struct limiter_any *l = state;
	uint64_t ok = 0;
	for (int i = 0; i < 64; i++)
		ok += l->is_conc ? conc_rate_allow(&l->conc) == CONC_OK : mbucket_allow(&l->mutex);
	atomic_fetch_add_explicit(&l->admitted, ok, memory_order_relaxed);
	return 64;
}

static void limiter_init(struct limiter_any *l, bool conc, int64_t events, int64_t period_ns, int64_t burst)
{
	l->is_conc = conc;
	atomic_init(&l->admitted, 0);
	if (!conc) {
		mbucket_init(&l->mutex, events, period_ns, burst);
		return;
	}
	if (conc_rate_init(&l->conc, (uint64_t)events, period_ns, (uint32_t)burst, NULL) != CONC_OK)
		bench_die("conc_rate_init failed");
}

static void limiter_destroy(struct limiter_any *l)
{
	if (!l->is_conc)
		pthread_mutex_destroy(&l->mutex.lock);
}

void bench_run_limiter(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		       uint64_t items, double *out)
{
	(void)items;
	if (!is_conc(ops) && !is_mutex(ops)) {
		out[0] = NAN;
		return;
	}
	struct limiter_any *l = bench_alloc(sizeof *l);
	limiter_init(l, is_conc(ops), (int64_t)w->burst, RATE_PERIOD_NS, RATE_BURST);
	out[0] = bench_run_loop(w->producers, cfg->target_s, limiter_step, l) / 1e6;
	limiter_destroy(l);
	free(l);
}

/* The accuracy run: see the top of the file.  Writes the admitted count and
 * the count the rate allows over the time that actually elapsed. */
#define ACC_EVENTS 100000
#define ACC_PERIOD_NS 1000000000
#define ACC_THREADS 8
#define ACC_BURST 100 /* 1 ms of events: absorbs scheduling gaps without tokens going to waste */

static void limiter_accuracy(double seconds, double *admitted, double *allowed)
{
	struct limiter_any *l = bench_alloc(sizeof *l);
	/* From the limiter's start until the last caller has returned (a
	 * caller that sees the stop signal still finishes its batch of 64),
	 * plus the burst the bucket holds at the start. */
	int64_t t0 = bench_now_ns();
	limiter_init(l, true, ACC_EVENTS, ACC_PERIOD_NS, ACC_BURST);
	(void)bench_run_loop(ACC_THREADS, seconds, limiter_step, l);
	int64_t t1 = bench_now_ns();
	*admitted = (double)atomic_load(&l->admitted);
	*allowed = (double)(t1 - t0) * ACC_EVENTS / ACC_PERIOD_NS + ACC_BURST;
	limiter_destroy(l);
	free(l);
}

/* ------------------------------------------------------------ breaker */

/* The baseline: the seed's circuit breaker, in C.  Its mutex is held across
 * the protected call. */
struct mbreaker {
	pthread_mutex_t lock;
	int max_failures;
	int64_t reset_ns;
	int failures;
	int64_t last_fail_ns;
};

static int mbreaker_call(struct mbreaker *b, int (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&b->lock);
	if (b->failures >= b->max_failures) {
		if (bench_now_ns() - b->last_fail_ns < b->reset_ns) {
			pthread_mutex_unlock(&b->lock);
			return -1;
		}
		b->failures = 0;
	}
	int err = fn(arg);
	if (err != 0) {
		b->failures++;
		b->last_fail_ns = bench_now_ns();
	} else {
		b->failures = 0;
	}
	pthread_mutex_unlock(&b->lock);
	return err;
}

static int noop_call(void *arg)
{
	(void)arg;
	return 0;
}

struct breaker_any {
	struct conc_breaker *conc;
	struct mbreaker mutex;
	bool is_conc;
};

static uint64_t breaker_step(void *state)
{
	struct breaker_any *b = state;
	for (int i = 0; i < 64; i++) {
		if (b->is_conc) {
			struct conc_breaker_ticket t;
			if (conc_breaker_allow(b->conc, &t) != CONC_OK)
				bench_die("conc breaker refused in the closed state");
			if (noop_call(NULL) != 0)
				bench_die("unreachable");
			if (conc_breaker_done(b->conc, &t, CONC_BREAKER_SUCCESS) != CONC_OK)
				bench_die("conc_breaker_done failed");
		} else if (mbreaker_call(&b->mutex, noop_call, NULL) != 0) {
			bench_die("mutex breaker refused in the closed state");
		}
	}
	return 64;
}

void bench_run_breaker(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		       uint64_t items, double *out)
{
	(void)items;
	if (!is_conc(ops) && !is_mutex(ops)) {
		out[0] = NAN;
		return;
	}
	struct breaker_any *b = bench_alloc(sizeof *b);
	b->is_conc = is_conc(ops);
	if (b->is_conc) {
		/* The seed's configuration: trip on 5 consecutive failures, open
		 * for a second; then one probe (the seed has no half-open). */
		struct conc_breaker_config bc = {0};
		bc.consecutive_failures = 5;
		bc.open_ns = 1000000000;
		bc.probes = 1;
		bc.probe_lease_ns = 1000000000;
		if (conc_breaker_new(&b->conc, &bc) != CONC_OK)
			bench_die("conc_breaker_new failed");
	} else {
		pthread_mutex_init(&b->mutex.lock, NULL);
		b->mutex.max_failures = 5;
		b->mutex.reset_ns = 1000000000;
	}
	out[0] = bench_run_loop(w->producers, cfg->target_s, breaker_step, b) / 1e6;
	if (b->is_conc)
		(void)conc_breaker_free(b->conc);
	else
		pthread_mutex_destroy(&b->mutex.lock);
	free(b);
}

/* ------------------------------------------------------------ pub/sub */

#define PUB_CAP 1024
#define PUB_MAX_SUBS 64
#define MPS_BUCKETS 64

/* A message of the baseline: shared by all subscribers, freed by the last. */
struct mmsg {
	_Atomic(size_t) refs;
	uint64_t seq;
};

static void mmsg_release(struct mmsg *m)
{
	/* acq_rel: the last releaser sees every other subscriber's reads done. */
	if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}

struct mtopic {
	struct mtopic *next;
	char *subject;
	void **subs; /* mutex channels of struct mmsg * */
	size_t nsubs, cap;
};

/* The baseline's pub/sub: topic map and lists under a reader-writer lock. */
struct mpubsub {
	pthread_rwlock_t lock;
	struct mtopic *buckets[MPS_BUCKETS];
};

static size_t mps_hash(const char *s)
{
	size_t h = 5381;
	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h % MPS_BUCKETS;
}

static struct mtopic *mps_find(struct mpubsub *ps, const char *subject)
{
	for (struct mtopic *t = ps->buckets[mps_hash(subject)]; t; t = t->next)
		if (strcmp(t->subject, subject) == 0)
			return t;
	return NULL;
}

static void *mps_subscribe(struct mpubsub *ps, const char *subject)
{
	void *ch = bench_mutex_ops.create(PUB_CAP, sizeof(struct mmsg *));
	if (!ch)
		bench_die("mutex channel");
	pthread_rwlock_wrlock(&ps->lock);
	struct mtopic *t = mps_find(ps, subject);
	if (!t) {
		t = calloc(1, sizeof *t);
		if (!t || !(t->subject = strdup(subject)))
			bench_die("out of memory");
		size_t h = mps_hash(subject);
		t->next = ps->buckets[h];
		ps->buckets[h] = t;
	}
	if (t->nsubs == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 4;
		t->subs = realloc(t->subs, t->cap * sizeof *t->subs);
		if (!t->subs)
			bench_die("out of memory");
	}
	t->subs[t->nsubs++] = ch;
	pthread_rwlock_unlock(&ps->lock);
	return ch;
}

/* Returns how many subscribers got the message. */
static size_t mps_publish(struct mpubsub *ps, const char *subject, uint64_t seq)
{
	size_t n = 0;
	pthread_rwlock_rdlock(&ps->lock);
	struct mtopic *t = mps_find(ps, subject);
	if (t && t->nsubs > 0) {
		struct mmsg *m = malloc(sizeof *m);
		if (!m)
			bench_die("out of memory");
		atomic_init(&m->refs, t->nsubs);
		m->seq = seq;
		for (size_t i = 0; i < t->nsubs; i++) {
			if (!bench_mutex_ops.send(t->subs[i], &m))
				bench_die("mutex subscriber closed");
			n++;
		}
	}
	pthread_rwlock_unlock(&ps->lock);
	return n;
}

static void mps_destroy(struct mpubsub *ps)
{
	for (size_t h = 0; h < MPS_BUCKETS; h++) {
		struct mtopic *t = ps->buckets[h];
		while (t) {
			struct mtopic *next = t->next;
			for (size_t i = 0; i < t->nsubs; i++)
				bench_mutex_ops.destroy(t->subs[i]);
			free(t->subs);
			free(t->subject);
			free(t);
			t = next;
		}
	}
	pthread_rwlock_destroy(&ps->lock);
}

struct pub_run {
	bool is_conc;
	struct mpubsub mps;
	struct conc_pubsub *cps; /* conc (when conc.h has pub/sub) */
	size_t nsubs;
	uint64_t items, published;
	double limit_s;
	pthread_barrier_t start;
};

struct pub_sub {
	struct pub_run *r;
	void *mch;             /* mutex */
	struct conc_sub *csub; /* conc */
	uint64_t got, next;    /* messages received; the sequence expected next */
	pthread_t thread;
};

static const char pub_subject[] = "bench.orders.eu";

/* The conc side of each step, where conc.h has pub/sub (CONC_PUBSUB_H: it
 * does when liburcu's headers were found); without it the conc contender's
 * publish rows are missing ("-"). */
#ifdef CONC_PUBSUB_H
#define HAVE_CONC_PUBSUB true

static bool cps_recv(struct pub_sub *s, uint64_t *seq)
{
	struct conc_msg *m;
	if (conc_sub_recv(s->csub, &m) != CONC_OK)
		return false;
	memcpy(seq, conc_msg_data(m), sizeof *seq);
	conc_msg_release(m);
	return true;
}

static size_t cps_publish(struct pub_run *r, uint64_t i)
{
	struct conc_msg *m;
	size_t got;
	if (conc_msg_new(&m, pub_subject, &i, sizeof i) != CONC_OK)
		bench_die("conc_msg_new failed");
	if (conc_pubsub_publish(r->cps, m, &got) != CONC_OK)
		bench_die("conc publish failed");
	conc_msg_release(m);
	return got;
}

static void cps_setup(struct pub_run *r, struct pub_sub *subs)
{
	if (conc_pubsub_new(&r->cps) != CONC_OK)
		bench_die("conc_pubsub_new failed");
	for (size_t i = 0; i < r->nsubs; i++)
		if (conc_pubsub_subscribe(r->cps, pub_subject, PUB_CAP, CONC_SUB_BLOCK, &subs[i].csub) != CONC_OK)
			bench_die("conc subscribe failed");
}

static void cps_close(struct pub_sub *s)
{
	if (conc_sub_close(s->csub) != CONC_OK)
		bench_die("conc_sub_close failed");
}

static void cps_teardown(struct pub_run *r, struct pub_sub *subs)
{
	for (size_t i = 0; i < r->nsubs; i++)
		if (conc_pubsub_unsubscribe(subs[i].csub) != CONC_OK)
			bench_die("conc_pubsub_unsubscribe failed");
	if (conc_pubsub_free(r->cps) != CONC_OK)
		bench_die("conc_pubsub_free failed");
}
#else
#define HAVE_CONC_PUBSUB false
static bool cps_recv(struct pub_sub *s, uint64_t *seq) { (void)s; (void)seq; return false; }
static size_t cps_publish(struct pub_run *r, uint64_t i) { (void)r; (void)i; return 0; }
static void cps_setup(struct pub_run *r, struct pub_sub *subs) { (void)r; (void)subs; }
static void cps_close(struct pub_sub *s) { (void)s; }
static void cps_teardown(struct pub_run *r, struct pub_sub *subs) { (void)r; (void)subs; }
#endif

static void *pub_receiver(void *arg)
{
	struct pub_sub *s = arg;
	bench_barrier_wait(&s->r->start);
	for (;;) {
		uint64_t seq;
		if (s->r->is_conc) {
			if (!cps_recv(s, &seq))
				break;
		} else {
			struct mmsg *m;
			if (!bench_mutex_ops.recv(s->mch, &m))
				break;
			seq = m->seq;
			mmsg_release(m);
		}
		if (seq != s->next)
			bench_die("pub/sub: subscriber got %llu, expected %llu", (unsigned long long)seq,
				  (unsigned long long)s->next);
		s->next++;
		s->got++;
	}
	return NULL;
}

static void *pub_publisher(void *arg)
{
	struct pub_run *r = arg;
	bench_barrier_wait(&r->start);
	int64_t t0 = bench_now_ns();
	uint64_t i = 0;
	for (; i < r->items && !((i & 255) == 0 && bench_seconds(bench_now_ns() - t0) > r->limit_s); i++) {
		size_t got = r->is_conc ? cps_publish(r, i) : mps_publish(&r->mps, pub_subject, i);
		if (got != r->nsubs)
			bench_die("pub/sub: a message reached %zu of %zu subscribers", got, r->nsubs);
	}
	r->published = i;
	return NULL;
}

void bench_run_publish(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		       uint64_t items, double *out)
{
	if (!(is_conc(ops) && HAVE_CONC_PUBSUB) && !is_mutex(ops)) {
		out[0] = NAN;
		return;
	}
	struct pub_run *r = bench_alloc(sizeof *r);
	r->is_conc = is_conc(ops);
	r->nsubs = (size_t)w->consumers;
	r->items = items;
	r->limit_s = cfg->limit_s;
	struct pub_sub *subs = bench_alloc(r->nsubs * sizeof *subs);
	for (size_t i = 0; i < r->nsubs; i++)
		subs[i].r = r;
	if (r->is_conc) {
		cps_setup(r, subs);
	} else {
		pthread_rwlock_init(&r->mps.lock, NULL);
		for (size_t i = 0; i < r->nsubs; i++)
			subs[i].mch = mps_subscribe(&r->mps, pub_subject);
	}
	bench_barrier_init(&r->start, (unsigned)r->nsubs + 2);
	for (size_t i = 0; i < r->nsubs; i++)
		bench_spawn(&subs[i].thread, pub_receiver, &subs[i], 1 + (int)i);
	pthread_t pub;
	bench_spawn(&pub, pub_publisher, r, 0);
	bench_barrier_wait(&r->start);
	int64_t t0 = bench_now_ns();
	bench_join(pub);
	/* Every message is queued; closing lets the receivers drain and stop. */
	for (size_t i = 0; i < r->nsubs; i++) {
		if (r->is_conc)
			cps_close(&subs[i]);
		else
			bench_mutex_ops.close(subs[i].mch);
	}
	for (size_t i = 0; i < r->nsubs; i++) {
		bench_join(subs[i].thread);
		if (subs[i].got != r->published)
			bench_die("pub/sub: a subscriber got %llu of %llu messages", (unsigned long long)subs[i].got,
				  (unsigned long long)r->published);
	}
	double secs = bench_seconds(bench_now_ns() - t0);
	if (r->is_conc)
		cps_teardown(r, subs);
	else
		mps_destroy(&r->mps);
	pthread_barrier_destroy(&r->start);
	out[0] = (double)r->published / secs / 1e6;
	free(subs);
	free(r);
}

/* ------------------------------------------------------------ notes */

size_t bench_resilience_notes(const struct bench_config *cfg, char *buf, size_t size)
{
	if (size == 0)
		return 0;
	double admitted, allowed;
	limiter_accuracy(cfg->quick ? 0.2 : 1.0, &admitted, &allowed);
	int k = snprintf(buf, size,
			 "limiter accuracy: %d threads calling allow on %d/s, burst %d, for %.1f s: admitted %.0f of "
			 "the %.1f the rate allows (%+.3f%%)\n",
			 ACC_THREADS, ACC_EVENTS, ACC_BURST, cfg->quick ? 0.2 : 1.0, admitted, allowed,
			 100.0 * (admitted - allowed) / allowed);
	return k > 0 ? ((size_t)k < size ? (size_t)k : size - 1) : 0;
}
