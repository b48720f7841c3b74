/* SPDX-License-Identifier: MIT */
/*
 * stress-pubsub: pub/sub stress scenarios as a plain program (Criterion does
 * not start under ThreadSanitizer).  More threads than cores in each.
 *
 *   block exactly once   4 publishers, 4 BLOCK subscribers (2 exact, 2
 *                        wildcard) with small queues read by their own
 *                        threads: every publish reaches all 4, every
 *                        subscriber gets every message exactly once and in
 *                        per-publisher order, nothing is lost
 *   drop policies        4 publishers, subscribers with DROP_NEWEST,
 *                        DROP_OLDEST and KEEP_LATEST read by threads that
 *                        dawdle: per subscriber, received + lost == published,
 *                        no duplicates, per-publisher order kept
 *   churn                publishers on 8 subjects while churn threads
 *                        subscribe (exact and wildcard, every policy, topics
 *                        made and removed), read a little, close from another
 *                        thread or not, and unsubscribe: publishers blocked on
 *                        a BLOCK subscriber being unsubscribed wake; a steady
 *                        BLOCK subscriber still gets everything exactly once
 *                        in order; every message is released by the end
 *
 * Messages carry CONC_TEST_ITEM(publisher, sequence) by reference with a
 * counting release callback: made == released after conc_pubsub_free, and
 * ASan sees no leak.  No sleep stands in for synchronisation and no timing
 * is asserted.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-pubsub"
#include "stress.h"

static _Atomic(uint64_t) made, released;

static void count_release(void *arg)
{
	(void)arg;
	atomic_fetch_add_explicit(&released, 1, memory_order_relaxed);
}

static struct conc_msg *make(const char *subject, uint64_t item)
{
	struct conc_msg *m = NULL;
	enum conc_status s = conc_msg_new_ref(&m, subject, (const void *)(uintptr_t)item, 0, count_release, NULL);
	if (s != CONC_OK) {
		fprintf(stderr, STRESS_PROG ": conc_msg_new_ref: %s\n", conc_strerror(s));
		exit(2);
	}
	atomic_fetch_add_explicit(&made, 1, memory_order_relaxed);
	return m;
}

static uint64_t item_of(const struct conc_msg *m)
{
	return (uint64_t)(uintptr_t)conc_msg_data(m);
}

static void check_balanced(void)
{
	uint64_t a = atomic_load(&made), b = atomic_load(&released);
	if (a != b)
		fail("%" PRIu64 " messages made, %" PRIu64 " released", a, b);
}

static struct conc_pubsub *new_ps(void)
{
	struct conc_pubsub *ps = NULL;
	if (conc_pubsub_new(&ps) != CONC_OK) {
		fprintf(stderr, STRESS_PROG ": conc_pubsub_new failed\n");
		exit(2);
	}
	return ps;
}

static struct conc_sub *subscribe(struct conc_pubsub *ps, const char *pattern, size_t cap, enum conc_sub_policy pol)
{
	struct conc_sub *s = NULL;
	enum conc_status st = conc_pubsub_subscribe(ps, pattern, cap, pol, &s);
	if (st != CONC_OK) {
		fprintf(stderr, STRESS_PROG ": subscribe %s: %s\n", pattern, conc_strerror(st));
		exit(2);
	}
	return s;
}

/* ------------------------------------------------------------ publishers */

#define PUBS 4

struct pubber {
	struct conc_pubsub *ps;
	size_t id, count;
	size_t expect;      /* delivered count every publish must report (SIZE_MAX: any) */
	const char *const *subjects;
	size_t nsubjects;
	struct rng rng;
	_Atomic(bool) *stop; /* NULL: publish count messages */
	uint64_t published;  /* per subject index: see pub_counts */
	uint64_t *per_subject;
	pthread_barrier_t *start;
	pthread_t thread;
};

static void *pubber_main(void *arg)
{
	struct pubber *p = arg;
	pthread_barrier_wait(p->start);
	for (size_t i = 0; i < p->count; i++) {
		if (p->stop && atomic_load_explicit(p->stop, memory_order_relaxed))
			break;
		size_t k = p->nsubjects > 1 ? rng_below(&p->rng, p->nsubjects) : 0;
		struct conc_msg *m = make(p->subjects[k], CONC_TEST_ITEM(p->id, i));
		size_t n = SIZE_MAX;
		enum conc_status s = conc_pubsub_publish(p->ps, m, &n);
		conc_msg_release(m);
		if (s != CONC_OK)
			fail("publisher %zu: publish %zu: %s", p->id, i, conc_strerror(s));
		if (p->expect != SIZE_MAX && n != p->expect)
			fail("publisher %zu: publish %zu delivered to %zu, expected %zu", p->id, i, n, p->expect);
		if (p->per_subject)
			p->per_subject[k]++;
		p->published++;
	}
	return NULL;
}

/* ------------------------------------------------------------- readers */

struct reader {
	struct conc_sub *sub;
	size_t last[PUBS];  /* per-publisher order */
	struct conc_test_ledger ledger;
	uint64_t received;
	bool dawdle;
	struct rng rng;
	pthread_t thread;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct conc_msg *m;
	enum conc_status s;
	while ((s = conc_sub_recv(r->sub, &m)) == CONC_OK) {
		uint64_t v = item_of(m);
		conc_msg_release(m);
		if (conc_test_ledger_mark(&r->ledger, v) != 0)
			fail("%s: item %zu/%zu twice or out of range", conc_sub_pattern(r->sub), CONC_TEST_PRODUCER(v),
			     CONC_TEST_SEQ(v));
		else if (!conc_test_fifo_ok(r->last, v))
			fail("%s: item %zu/%zu after %zu", conc_sub_pattern(r->sub), CONC_TEST_PRODUCER(v),
			     CONC_TEST_SEQ(v), r->last[CONC_TEST_PRODUCER(v)]);
		r->received++;
		if (r->dawdle)
			spin_random(&r->rng);
	}
	if (s != CONC_CLOSED)
		fail("reader: recv: %s", conc_strerror(s));
	return NULL;
}

static void reader_start(struct reader *r, struct conc_sub *sub, size_t per_pub, bool dawdle, uint64_t stream)
{
	r->sub = sub;
	for (size_t p = 0; p < PUBS; p++)
		r->last[p] = SIZE_MAX;
	conc_test_ledger_init(&r->ledger, PUBS, per_pub);
	r->received = 0;
	r->dawdle = dawdle;
	r->rng = rng_for(stream);
	spawn(&r->thread, reader_main, r);
}

/* PUBS publishers of `count` messages each on subjects, every publish
 * expecting `expect` deliveries (SIZE_MAX: any); returns when all are done,
 * after closing the readers' subscriptions so they drain and stop. */
static void publish_then_close(struct conc_pubsub *ps, size_t count, size_t expect, const char *const *subjects,
			       size_t nsubjects, struct reader *readers, size_t nreaders)
{
	pthread_barrier_t start;
	barrier_init(&start, PUBS);
	struct pubber pubs[PUBS];
	for (size_t p = 0; p < PUBS; p++) {
		pubs[p] = (struct pubber){ps, p, count, expect, subjects, nsubjects, rng_for(p), NULL, 0, NULL, &start, 0};
		spawn(&pubs[p].thread, pubber_main, &pubs[p]);
	}
	for (size_t p = 0; p < PUBS; p++)
		join(pubs[p].thread);
	for (size_t i = 0; i < nreaders; i++)
		(void)conc_sub_close(readers[i].sub);
	pthread_barrier_destroy(&start);
}

/* ------------------------------------------------------ block exactly once */

static void block_exactly_once(size_t arg)
{
	(void)arg;
	const size_t per_pub = SIZED(20000, 2000);
	static const char *const subj[] = {"s.x"};
	static const char *const patterns[] = {"s.x", "s.x", "s.*", ">"};
	enum { SUBS = 4 };
	struct conc_pubsub *ps = new_ps();
	struct reader readers[SUBS];
	for (size_t i = 0; i < SUBS; i++)
		reader_start(&readers[i], subscribe(ps, patterns[i], 1 + i * 3, CONC_SUB_BLOCK), per_pub, i == 3, 100 + i);
	publish_then_close(ps, per_pub, SUBS, subj, 1, readers, SUBS);
	for (size_t i = 0; i < SUBS; i++) {
		join(readers[i].thread);
		size_t missing = conc_test_ledger_missing(&readers[i].ledger);
		if (missing || conc_sub_lost(readers[i].sub))
			fail("subscriber %zu (%s): %zu missing, %" PRIu64 " lost", i, patterns[i], missing,
			     conc_sub_lost(readers[i].sub));
		conc_test_ledger_free(&readers[i].ledger);
		note("subscriber %zu received %" PRIu64, i, readers[i].received);
	}
	if (conc_pubsub_free(ps) != CONC_OK)
		fail("conc_pubsub_free");
	check_balanced();
}

/* ----------------------------------------------------------- drop policies */

static void drop_policies(size_t arg)
{
	(void)arg;
	const size_t per_pub = SIZED(20000, 2000);
	static const char *const subj[] = {"d.x"};
	static const struct {
		const char *pattern;
		size_t cap;
		enum conc_sub_policy pol;
	} subs[] = {
		{"d.x", 4, CONC_SUB_DROP_NEWEST},
		{"d.*", 4, CONC_SUB_DROP_OLDEST},
		{"d.x", 1, CONC_SUB_KEEP_LATEST},
		{">", 1, CONC_SUB_DROP_OLDEST},
	};
	enum { SUBS = sizeof subs / sizeof subs[0] };
	struct conc_pubsub *ps = new_ps();
	struct reader readers[SUBS];
	for (size_t i = 0; i < SUBS; i++)
		reader_start(&readers[i], subscribe(ps, subs[i].pattern, subs[i].cap, subs[i].pol), per_pub, true, 200 + i);
	/* Drop policies deliver to all but DROP_NEWEST when full: any count. */
	publish_then_close(ps, per_pub, SIZE_MAX, subj, 1, readers, SUBS);
	for (size_t i = 0; i < SUBS; i++) {
		join(readers[i].thread);
		uint64_t lost = conc_sub_lost(readers[i].sub);
		if (readers[i].received + lost != PUBS * per_pub)
			fail("subscriber %zu (%s): received %" PRIu64 " + lost %" PRIu64 " != published %zu", i,
			     subs[i].pattern, readers[i].received, lost, PUBS * per_pub);
		conc_test_ledger_free(&readers[i].ledger);
		note("subscriber %zu received %" PRIu64 ", lost %" PRIu64, i, readers[i].received, lost);
	}
	if (conc_pubsub_free(ps) != CONC_OK)
		fail("conc_pubsub_free");
	check_balanced();
}

/* ------------------------------------------------------------------- churn */

#define CHURNERS 3

static const char *const churn_subjects[] = {"c.0", "c.1", "c.2", "c.3", "c.4", "c.5", "c.6", "c.7"};
static const char *const churn_patterns[] = {"c.0", "c.1", "c.2", "c.3", "c.4", "c.5", "c.6", "c.7",
					     "c.*", ">", "*.3", "c.>"};

struct churner {
	struct conc_pubsub *ps;
	struct rng rng;
	_Atomic(bool) *stop;
	size_t rounds;
	uint64_t got;
	pthread_t thread;
};

struct closer {
	struct conc_sub *sub;
	pthread_t thread;
};

static void *closer_main(void *arg)
{
	struct closer *c = arg;
	(void)conc_sub_close(c->sub);
	return NULL;
}

static void *churner_main(void *arg)
{
	struct churner *c = arg;
	while (!atomic_load_explicit(c->stop, memory_order_relaxed)) {
		const char *pat = churn_patterns[rng_below(&c->rng, sizeof churn_patterns / sizeof *churn_patterns)];
		enum conc_sub_policy pol = (enum conc_sub_policy)rng_below(&c->rng, CONC_SUB_POLICY_COUNT__);
		size_t cap = pol == CONC_SUB_KEEP_LATEST ? 1 : 1 + rng_below(&c->rng, 4);
		struct conc_sub *s = subscribe(c->ps, pat, cap, pol);
		size_t last[PUBS];
		for (size_t p = 0; p < PUBS; p++)
			last[p] = SIZE_MAX;
		/* Read a few, or none (publishers then block on a full BLOCK
		 * subscriber until the unsubscribe below wakes them). */
		size_t reads = rng_below(&c->rng, 8);
		for (size_t i = 0; i < reads; i++) {
			struct conc_msg *m;
			if (conc_sub_recv_until(s, &m, stress_short_deadline(&c->rng), NULL) != CONC_OK)
				continue;
			if (!conc_test_fifo_ok(last, item_of(m)))
				fail("churn %s: out of order", pat);
			conc_msg_release(m);
			c->got++;
		}
		switch (rng_below(&c->rng, 3)) {
		case 0: { /* close from another thread while we may be receiving */
			struct closer cl = {s, 0};
			spawn(&cl.thread, closer_main, &cl);
			struct conc_msg *m;
			enum conc_status st;
			while ((st = conc_sub_recv(s, &m)) == CONC_OK) {
				if (!conc_test_fifo_ok(last, item_of(m)))
					fail("churn %s: out of order while draining", pat);
				conc_msg_release(m);
				c->got++;
			}
			if (st != CONC_CLOSED)
				fail("churn: recv after close: %s", conc_strerror(st));
			join(cl.thread);
			break;
		}
		case 1:
			(void)conc_sub_close(s);
			break;
		default:
			break; /* unsubscribe with messages queued */
		}
		if (conc_pubsub_unsubscribe(s) != CONC_OK)
			fail("unsubscribe");
		c->rounds++;
	}
	return NULL;
}

static void churn(size_t arg)
{
	(void)arg;
	const size_t per_pub = SIZED(30000, 3000);
	struct conc_pubsub *ps = new_ps();
	/* The steady subscriber: BLOCK on c.3, must see every c.3 message. */
	struct reader steady;
	reader_start(&steady, subscribe(ps, "c.3", 2, CONC_SUB_BLOCK), per_pub, false, 300);
	_Atomic(bool) stop = false;
	pthread_barrier_t start;
	barrier_init(&start, PUBS);
	struct pubber pubs[PUBS];
	uint64_t per_subject[PUBS][8];
	memset(per_subject, 0, sizeof per_subject);
	for (size_t p = 0; p < PUBS; p++) {
		pubs[p] = (struct pubber){ps, p, per_pub, SIZE_MAX, churn_subjects, 8, rng_for(p), NULL, 0, per_subject[p], &start, 0};
		spawn(&pubs[p].thread, pubber_main, &pubs[p]);
	}
	struct churner ch[CHURNERS];
	for (size_t i = 0; i < CHURNERS; i++) {
		ch[i] = (struct churner){ps, rng_for(400 + i), &stop, 0, 0, 0};
		spawn(&ch[i].thread, churner_main, &ch[i]);
	}
	for (size_t p = 0; p < PUBS; p++)
		join(pubs[p].thread);
	atomic_store(&stop, true);
	size_t rounds = 0;
	for (size_t i = 0; i < CHURNERS; i++) {
		join(ch[i].thread);
		rounds += ch[i].rounds;
	}
	(void)conc_sub_close(steady.sub);
	join(steady.thread);
	uint64_t want = 0;
	for (size_t p = 0; p < PUBS; p++)
		want += per_subject[p][3];
	if (steady.received != want || conc_sub_lost(steady.sub) != 0)
		fail("steady subscriber: received %" PRIu64 " of %" PRIu64 ", lost %" PRIu64, steady.received, want,
		     conc_sub_lost(steady.sub));
	conc_test_ledger_free(&steady.ledger);
	note("%zu subscribe/unsubscribe rounds", rounds);
	if (rounds == 0)
		note("no churn round completed (a slow machine): the scenario checked little");
	if (conc_pubsub_free(ps) != CONC_OK)
		fail("conc_pubsub_free");
	pthread_barrier_destroy(&start);
	check_balanced();
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"block exactly once", block_exactly_once, 0},
		{"drop policies", drop_policies, 0},
		{"churn", churn, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
