/* SPDX-License-Identifier: MIT */
/*
 * stress-chan: channel stress scenarios as a plain program (Criterion does
 * not start under ThreadSanitizer).  Each scenario oversubscribes the CPUs
 * (more threads than cores) and checks, with the ledger of util.h, that every
 * item sent is received exactly once and that the items of one producer reach
 * one consumer in order.
 *
 *   blocking mix      6 producers, 6 consumers, send/recv; capacities 1, 3, 64
 *   try mix           the same with try_send/try_recv and conc_yield()
 *   bulk mix          send_n/send_burst against recv_burst/recv_n/recv
 *   deadline mix      send_until/recv_until with deadlines of a few µs: a send
 *                     that timed out is never received, one that did not is
 *                     received exactly once
 *   close storm       thousands of rounds of close against blocked senders
 *                     and receivers on a capacity-2 channel
 *   cancel storm      the same with a context canceled under them
 *   capacity-1 blend  4 producers, 4 consumers, every kind of call, capacity 1
 *   wake-up relay     one side all parked, the other moves 1 to 3 items, and
 *                     the step ends only when it has been answered: a lost
 *                     wake-up is a hang (the watchdog reports it)
 *
 * No sleep stands in for synchronisation: threads meet at barriers, and a
 * "while they are blocked" step waits until they are parked.  No timing is
 * asserted.  Sizes scale with CONC_STRESS_SCALE; under ThreadSanitizer they
 * shrink.  The seed comes from CONC_STRESS_SEED (or the clock) and is printed
 * on stderr and in every failure; CONC_STRESS_VERBOSE=1 prints statistics;
 * CONC_STRESS_ONLY=text runs only the scenarios whose name contains text.
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-chan"
#include "stress.h"

/* ------------------------------------------------------- channel helpers */

static void wait_flag(atomic_int *flag)
{
	while (!atomic_load(flag))
		conc_yield();
}

/* Record one received item in the ledger and the consumer's order table. */
static void take_item(struct conc_test_ledger *l, size_t *last, uint64_t v)
{
	if (conc_test_ledger_mark(l, v) != 0) {
		fail("item p%zu #%zu received twice (or never sent)", CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v));
		return;
	}
	size_t before = last[CONC_TEST_PRODUCER(v)];
	if (!conc_test_fifo_ok(last, v))
		fail("order: p%zu #%zu after #%zu", CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v), before);
}

static size_t *fifo_table(size_t producers)
{
	size_t *last = xcalloc(producers, sizeof *last);
	for (size_t p = 0; p < producers; p++)
		last[p] = SIZE_MAX;
	return last;
}

/* A closed, drained channel: receives report CLOSED, sends too, len is 0. */
static void check_closed_and_drained(struct conc_chan *ch)
{
	uint64_t v = 0;
	enum conc_status s = conc_chan_try_recv(ch, &v);
	if (s != CONC_CLOSED)
		fail("after the run try_recv gave %s (item p%zu #%zu?), not CLOSED", conc_strerror(s),
		     CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v));
	if ((s = conc_chan_try_send(ch, &v)) != CONC_CLOSED)
		fail("after close try_send gave %s", conc_strerror(s));
	if (conc_chan_len(ch) != 0)
		fail("after the run len is %zu", conc_chan_len(ch));
}

/* ------------------------------------------------- producer/consumer mixes */

/*
 * One harness for the throughput-shaped scenarios: P producers each send
 * per_producer items, C consumers receive until CONC_CLOSED.  `kind` picks
 * the calls both sides use.  Each scenario runs twice, with half the items:
 *
 *  - close_when_drained: the consumer that takes the last item closes.  Until
 *    then nothing but sends and receives wakes anyone (in the blocking and
 *    bulk kinds, which use no deadlines), so a lost wake-up (items waiting
 *    while every consumer sleeps, or room while every producer sleeps) is a
 *    hang, which the watchdog reports.
 *  - otherwise the last producer to finish closes, racing the receives.
 */
enum mix_kind {
	MIX_BLOCKING, /* send / recv */
	MIX_TRY,      /* try_send / try_recv, conc_yield() on FULL / EMPTY */
	MIX_BULK,     /* send_n / send_burst; recv_burst / recv_n / recv */
	MIX_BLEND,    /* all of the above, and _until forms, chosen per call */
};

struct mix {
	struct conc_chan *ch;
	struct conc_test_ledger ledger;
	size_t producers, consumers, per_producer, cap;
	enum mix_kind kind;
	bool close_when_drained;
	atomic_size_t producers_left;
	atomic_size_t received;
	atomic_size_t waits; /* FULL / EMPTY answers retried (try forms) */
	/* MIX_TRY only: calls that moved an item, calls in progress. */
	atomic_size_t send_ok, recv_ok, sending, receiving;
	pthread_barrier_t start; /* every worker starts at once */
};

/*
 * The try calls are documented linearizable: never CONC_EMPTY while an item
 * whose send has returned is in the channel, never CONC_FULL while there is
 * room.  In MIX_TRY every call is counted (in progress, then done), which
 * bounds the channel's contents during a call from outside:
 *
 *   EMPTY is wrong if  sends done before the call
 *                      > receives done after it + receives then in progress
 *   FULL is wrong if   sends done after the call + sends then in progress
 *                      < receives done before it + capacity
 *
 * (each thread makes one call at a time, counts an item as done before it
 * leaves "in progress", and reads "in progress" before "done").  The bounds
 * are loose, so this catches gross errors only, but it never accuses a
 * correct channel.
 */
static enum conc_status mix_try_send(struct mix *m, const uint64_t *v)
{
	size_t recv_before = atomic_load(&m->recv_ok);
	atomic_fetch_add(&m->sending, 1);
	enum conc_status s = conc_chan_try_send(m->ch, v);
	if (s == CONC_OK)
		atomic_fetch_add(&m->send_ok, 1);
	atomic_fetch_sub(&m->sending, 1);
	if (s == CONC_FULL) {
		size_t others = atomic_load(&m->sending), sent = atomic_load(&m->send_ok);
		if (sent + others < recv_before + m->cap)
			fail("try_send reported FULL with at most %zu of %zu cells taken",
			     sent + others - recv_before, m->cap);
	}
	return s;
}

static enum conc_status mix_try_recv(struct mix *m, uint64_t *v)
{
	size_t sent_before = atomic_load(&m->send_ok);
	atomic_fetch_add(&m->receiving, 1);
	enum conc_status s = conc_chan_try_recv(m->ch, v);
	if (s == CONC_OK)
		atomic_fetch_add(&m->recv_ok, 1);
	atomic_fetch_sub(&m->receiving, 1);
	if (s == CONC_EMPTY) {
		size_t others = atomic_load(&m->receiving), got = atomic_load(&m->recv_ok);
		if (sent_before > got + others)
			fail("try_recv reported EMPTY with at least %zu sent items inside",
			     sent_before - got - others);
	}
	return s;
}

struct mix_worker {
	struct mix *m;
	size_t id;
	struct rng rng;
	pthread_t thread;
};

#define MIX_MAX_BATCH 64

/* Send items [i, i + n) of producer w->id with one call; returns how many
 * were sent, 0 after a failure (already reported). */
static size_t mix_send(struct mix_worker *w, size_t i, size_t left)
{
	struct mix *m = w->m;
	struct conc_chan *ch = m->ch;
	uint64_t items[MIX_MAX_BATCH];
	size_t op;
	switch (m->kind) {
	case MIX_BLOCKING: op = 0; break;
	case MIX_TRY: op = 1; break;
	case MIX_BULK: op = 4 + rng_below(&w->rng, 2); break;
	default: op = rng_below(&w->rng, 7); break;
	}
	size_t n = 1;
	if (op >= 4) {
		size_t most = m->cap < MIX_MAX_BATCH ? m->cap : MIX_MAX_BATCH;
		n = 1 + rng_below(&w->rng, most);
		if (n > left)
			n = left;
	}
	for (size_t k = 0; k < n; k++)
		items[k] = CONC_TEST_ITEM(w->id, i + k);
	enum conc_status s;
	size_t sent = 0;
	switch (op) {
	case 0:
		s = conc_chan_send(ch, items);
		sent = s == CONC_OK;
		break;
	case 1:
		while ((s = m->kind == MIX_TRY ? mix_try_send(m, items) : conc_chan_try_send(ch, items)) ==
		       CONC_FULL) {
			atomic_fetch_add_explicit(&m->waits, 1, memory_order_relaxed);
			conc_yield();
		}
		sent = s == CONC_OK;
		break;
	case 2:
		s = conc_chan_send_until(ch, items, conc_deadline_forever(), NULL);
		sent = s == CONC_OK;
		break;
	case 3:
		/* A short deadline, retried: must behave as a plain send. */
		while ((s = conc_chan_send_until(ch, items, conc_deadline_in_ns(20000), NULL)) == CONC_TIMEDOUT)
			atomic_fetch_add_explicit(&m->waits, 1, memory_order_relaxed);
		sent = s == CONC_OK;
		break;
	case 4:
		s = conc_chan_send_n(ch, items, n);
		sent = s == CONC_OK ? n : 0;
		break;
	case 5:
		sent = conc_chan_send_burst(ch, items, n, &s);
		if (s == CONC_OK && (sent == 0 || sent > n))
			fail("send_burst of %zu reported OK with %zu sent", n, sent);
		break;
	default:
		while ((sent = conc_chan_try_send_burst(ch, items, n, &s)) == 0 && s == CONC_FULL) {
			atomic_fetch_add_explicit(&m->waits, 1, memory_order_relaxed);
			conc_yield();
		}
		break;
	}
	if (s != CONC_OK) {
		fail("producer %zu: send op %zu of %zu item(s) gave %s", w->id, op, n, conc_strerror(s));
		return 0;
	}
	return sent;
}

static void *mix_producer(void *arg)
{
	struct mix_worker *w = arg;
	struct mix *m = w->m;
	pthread_barrier_wait(&m->start);
	for (size_t i = 0; i < m->per_producer;) {
		size_t sent = mix_send(w, i, m->per_producer - i);
		if (sent == 0) {
			(void)conc_chan_close(m->ch); /* failed: let everyone finish */
			break;
		}
		i += sent;
	}
	if (atomic_fetch_sub(&m->producers_left, 1) == 1 && !m->close_when_drained) {
		enum conc_status s = conc_chan_close(m->ch);
		if (s != CONC_OK)
			fail("close gave %s", conc_strerror(s));
	}
	return NULL;
}

/*
 * Receive with one call into items[]; returns the count, and sets *done when
 * the channel reported closed and drained.  recv_n may report CLOSED with
 * fewer than n items left: then *drain switches this consumer to calls that
 * take what is left.  Consumer 0 never uses recv_n, so some consumer always
 * takes single items and an all-or-nothing send always finds room in the end.
 */
static size_t mix_recv(struct mix_worker *w, uint64_t *items, bool *drain, bool *done)
{
	struct mix *m = w->m;
	struct conc_chan *ch = m->ch;
	size_t op;
	switch (m->kind) {
	case MIX_BLOCKING: op = 0; break;
	case MIX_TRY: op = 1; break;
	case MIX_BULK: op = (size_t[]){0, 4, 4, 5, 5, 5}[rng_below(&w->rng, 6)]; break;
	default: op = rng_below(&w->rng, 7); break;
	}
	if (op == 5 && (w->id == 0 || *drain))
		op = 4;
	size_t most = m->cap < MIX_MAX_BATCH ? m->cap : MIX_MAX_BATCH;
	size_t n = op >= 4 ? 1 + rng_below(&w->rng, op == 5 ? most : MIX_MAX_BATCH) : 1;
	enum conc_status s;
	size_t got = 0;
	switch (op) {
	case 0:
		s = conc_chan_recv(ch, items);
		got = s == CONC_OK;
		break;
	case 1:
		while ((s = m->kind == MIX_TRY ? mix_try_recv(m, items) : conc_chan_try_recv(ch, items)) ==
		       CONC_EMPTY) {
			atomic_fetch_add_explicit(&m->waits, 1, memory_order_relaxed);
			conc_yield();
		}
		got = s == CONC_OK;
		break;
	case 2:
		s = conc_chan_recv_until(ch, items, conc_deadline_forever(), NULL);
		got = s == CONC_OK;
		break;
	case 3:
		while ((s = conc_chan_recv_until(ch, items, conc_deadline_in_ns(20000), NULL)) == CONC_TIMEDOUT)
			atomic_fetch_add_explicit(&m->waits, 1, memory_order_relaxed);
		got = s == CONC_OK;
		break;
	case 4:
		got = conc_chan_recv_burst(ch, items, n, &s);
		if (s == CONC_OK && (got == 0 || got > n))
			fail("recv_burst of %zu reported OK with %zu", n, got);
		break;
	case 5:
		s = conc_chan_recv_n(ch, items, n);
		if (s == CONC_CLOSED) {
			*drain = true; /* items may be left: take them with the others */
			return 0;
		}
		got = s == CONC_OK ? n : 0;
		break;
	default:
		got = conc_chan_try_recv_burst(ch, items, n, &s);
		if (s == CONC_EMPTY) {
			atomic_fetch_add_explicit(&m->waits, 1, memory_order_relaxed);
			conc_yield();
			return 0;
		}
		break;
	}
	if (s == CONC_CLOSED) {
		*done = true;
		return 0;
	}
	if (s != CONC_OK) {
		fail("consumer %zu: receive op %zu gave %s", w->id, op, conc_strerror(s));
		(void)conc_chan_close(ch); /* let everyone finish */
		*done = true;
	}
	return got;
}

static void *mix_consumer(void *arg)
{
	struct mix_worker *w = arg;
	struct mix *m = w->m;
	size_t *last = fifo_table(m->producers);
	uint64_t items[MIX_MAX_BATCH];
	bool drain = false, done = false;
	pthread_barrier_wait(&m->start);
	size_t all = m->producers * m->per_producer;
	while (!done) {
		size_t got = mix_recv(w, items, &drain, &done);
		for (size_t k = 0; k < got; k++)
			take_item(&m->ledger, last, items[k]);
		if (got && atomic_fetch_add(&m->received, got) + got == all && m->close_when_drained) {
			enum conc_status s = conc_chan_close(m->ch);
			if (s != CONC_OK)
				fail("close gave %s", conc_strerror(s));
		}
	}
	free(last);
	return NULL;
}

static void mix_once(enum mix_kind kind, size_t cap, size_t producers, size_t consumers, size_t per_producer,
		     bool close_when_drained)
{
	struct mix m;
	memset(&m, 0, sizeof m);
	m.kind = kind;
	m.close_when_drained = close_when_drained;
	m.cap = cap;
	m.producers = producers;
	m.consumers = consumers;
	m.per_producer = per_producer;
	atomic_init(&m.producers_left, producers);
	atomic_init(&m.received, 0);
	atomic_init(&m.waits, 0);
	atomic_init(&m.send_ok, 0);
	atomic_init(&m.recv_ok, 0);
	atomic_init(&m.sending, 0);
	atomic_init(&m.receiving, 0);
	enum conc_status s = conc_chan_new(&m.ch, cap, sizeof(uint64_t));
	if (s != CONC_OK) {
		fail("conc_chan_new(%zu) gave %s", cap, conc_strerror(s));
		return;
	}
	conc_test_ledger_init(&m.ledger, producers, per_producer);

	size_t n = producers + consumers;
	struct mix_worker *w = xcalloc(n, sizeof *w);
	barrier_init(&m.start, (unsigned)n);
	for (size_t i = 0; i < n; i++) {
		w[i].m = &m;
		w[i].id = i < consumers ? i : i - consumers;
		w[i].rng = rng_for(cap * 1000 + kind * 100 + close_when_drained * 50 + i);
	}
	for (size_t i = 0; i < n; i++)
		spawn(&w[i].thread, i < consumers ? mix_consumer : mix_producer, &w[i]);
	for (size_t i = 0; i < n; i++)
		join(w[i].thread);
	pthread_barrier_destroy(&m.start);

	size_t total = producers * per_producer;
	size_t got = atomic_load(&m.received), missing = conc_test_ledger_missing(&m.ledger);
	if (got != total || missing != 0)
		fail("received %zu of %zu items, %zu never arrived", got, total, missing);
	check_closed_and_drained(m.ch);
	if ((s = conc_chan_free(m.ch)) != CONC_OK)
		fail("conc_chan_free gave %s", conc_strerror(s));
	note("cap %zu: %zu items, close %s, %zu FULL/EMPTY/TIMEDOUT retries", cap, total,
	     close_when_drained ? "when drained" : "racing", atomic_load(&m.waits));
	conc_test_ledger_free(&m.ledger);
	free(w);
}

static void run_mix(enum mix_kind kind, size_t cap, size_t producers, size_t consumers, size_t per_producer)
{
	mix_once(kind, cap, producers, consumers, per_producer / 2, true);
	if (!atomic_load(&failed_flag))
		mix_once(kind, cap, producers, consumers, per_producer / 2, false);
}

static void scenario_blocking(size_t cap)
{
	run_mix(MIX_BLOCKING, cap, 6, 6, SIZED(30000, 16000));
}

static void scenario_try(size_t cap)
{
	run_mix(MIX_TRY, cap, 6, 6, SIZED(20000, 10000));
}

static void scenario_bulk(size_t cap)
{
	run_mix(MIX_BULK, cap, 6, 6, SIZED(30000, 8000));
}

static void scenario_cap1(size_t cap)
{
	run_mix(MIX_BLEND, cap, 4, 4, SIZED(30000, 16000));
}

/* ---------------------------------------------------------- deadline mix */

/*
 * Every send and receive carries a deadline a few microseconds away (or
 * already passed), some through a context's deadline instead of the call's.
 * Each item gets one attempt: sent_ok records whether send_until returned
 * CONC_OK.  Consumers retry on CONC_TIMEDOUT until CONC_CLOSED.  Then an item
 * was received exactly once if its send returned OK, and never if it timed
 * out: a timeout racing a send must not leave the item behind.
 */
struct dl {
	struct conc_chan *ch;
	struct conc_test_ledger ledger;
	size_t producers, attempts;
	unsigned char *sent_ok; /* [producer * attempts + seq]; written by its producer */
	atomic_size_t producers_left;
	atomic_size_t send_timeouts, recv_timeouts, received;
};

struct dl_worker {
	struct dl *d;
	size_t id;
	struct rng rng;
	pthread_t thread;
};

static void *dl_producer(void *arg)
{
	struct dl_worker *w = arg;
	struct dl *d = w->d;
	for (size_t i = 0; i < d->attempts; i++) {
		uint64_t v = CONC_TEST_ITEM(w->id, i);
		enum conc_status s = stress_deadline_call(&w->rng, d->ch, &v, true);
		if (s == CONC_OK)
			d->sent_ok[w->id * d->attempts + i] = 1;
		else if (s == CONC_TIMEDOUT)
			atomic_fetch_add_explicit(&d->send_timeouts, 1, memory_order_relaxed);
		else
			fail("producer %zu: send_until gave %s", w->id, conc_strerror(s));
	}
	if (atomic_fetch_sub(&d->producers_left, 1) == 1 && conc_chan_close(d->ch) != CONC_OK)
		fail("close did not return OK");
	return NULL;
}

static void *dl_consumer(void *arg)
{
	struct dl_worker *w = arg;
	struct dl *d = w->d;
	size_t *last = fifo_table(d->producers);
	size_t total = 0;
	for (;;) {
		/* Now and then stop taking for a while, so the channel fills
		 * and senders time out too. */
		if (rng_below(&w->rng, 64) == 0)
			for (size_t k = rng_below(&w->rng, 64); k > 0; k--)
				conc_yield();
		uint64_t v;
		enum conc_status s = stress_deadline_call(&w->rng, d->ch, &v, false);
		if (s == CONC_OK) {
			take_item(&d->ledger, last, v);
			total++;
		} else if (s == CONC_TIMEDOUT) {
			atomic_fetch_add_explicit(&d->recv_timeouts, 1, memory_order_relaxed);
		} else {
			if (s != CONC_CLOSED)
				fail("consumer %zu: recv_until gave %s", w->id, conc_strerror(s));
			break;
		}
	}
	atomic_fetch_add(&d->received, total);
	free(last);
	return NULL;
}

static void scenario_deadline(size_t cap)
{
	struct dl d;
	memset(&d, 0, sizeof d);
	d.producers = 4;
	d.attempts = SIZED(10000, 5000);
	atomic_init(&d.producers_left, d.producers);
	atomic_init(&d.send_timeouts, 0);
	atomic_init(&d.recv_timeouts, 0);
	atomic_init(&d.received, 0);
	if (conc_chan_new(&d.ch, cap, sizeof(uint64_t)) != CONC_OK) {
		fail("conc_chan_new failed");
		return;
	}
	conc_test_ledger_init(&d.ledger, d.producers, d.attempts);
	d.sent_ok = xcalloc(d.producers * d.attempts, 1);
	const size_t consumers = 4, n = d.producers + consumers;
	struct dl_worker w[8];
	for (size_t i = 0; i < n; i++) {
		w[i].d = &d;
		w[i].id = i < consumers ? i : i - consumers;
		w[i].rng = rng_for(7000 + cap * 16 + i);
		spawn(&w[i].thread, i < consumers ? dl_consumer : dl_producer, &w[i]);
	}
	for (size_t i = 0; i < n; i++)
		join(w[i].thread);

	size_t ok = 0, wrong = 0, first = SIZE_MAX;
	for (size_t k = 0; k < d.producers * d.attempts; k++) {
		unsigned seen = atomic_load_explicit(&d.ledger.seen[k], memory_order_relaxed);
		ok += d.sent_ok[k];
		if (seen != d.sent_ok[k]) {
			wrong++;
			if (first == SIZE_MAX)
				first = k;
		}
	}
	if (wrong)
		fail("%zu items disagree with their send's result; first p%zu #%zu: send %s, received %u times",
		     wrong, first / d.attempts, first % d.attempts, d.sent_ok[first] ? "OK" : "TIMEDOUT",
		     (unsigned)atomic_load(&d.ledger.seen[first]));
	if (atomic_load(&d.received) != ok)
		fail("%zu sends returned OK but %zu items were received", ok, atomic_load(&d.received));
	check_closed_and_drained(d.ch);
	if (conc_chan_free(d.ch) != CONC_OK)
		fail("conc_chan_free failed");
	note("cap %zu: %zu attempts, %zu sent, %zu send timeouts, %zu receive timeouts", cap,
	     d.producers * d.attempts, ok, atomic_load(&d.send_timeouts), atomic_load(&d.recv_timeouts));
	conc_test_ledger_free(&d.ledger);
	free(d.sent_ok);
}

/* ------------------------------------------------- close and cancel storms */

/*
 * Rounds on a capacity-2 channel, partly filled, with 3 senders and 3
 * receivers; the main thread closes it (close storm) or cancels the parent of
 * the context they block with (cancel storm, sometimes also closing) at a
 * moment picked per round:
 *
 *   mode 0  everyone starts at once; act after a random spin
 *   mode 1  receivers start and block on the empty channel; then senders
 *           start; act after a random spin
 *   mode 2  senders start and block on the full channel; then receivers
 *           start; act after a random spin
 *   mode 3  senders block; act; then receivers start
 *   mode 4  receivers block; act; then senders start
 *   mode 5  everyone starts; once every item has been received and the
 *           receivers block again, act (until then only sends and receives
 *           wake anyone: a lost wake-up is a hang)
 *
 * flavour 0: send / recv; 1: send_n of 2 against recv_n of 2 and
 * recv_burst; 2: send_burst against recv_burst.  Every thread must return;
 * the items received (plus, after a cancel, the ones drained afterwards) must
 * be exactly the prefilled ones and those whose send returned OK, once each.
 * Worker threads persist across rounds and meet the main thread at barriers.
 */
#define STORM_CAP 2
#define STORM_SENDERS 3
#define STORM_RECEIVERS 3
#define STORM_PER_SENDER 4
#define STORM_PREFILL_ID STORM_SENDERS /* producer id of the prefilled items */
#define STORM_ITEMS (STORM_CAP + STORM_SENDERS * STORM_PER_SENDER)

struct storm;

struct storm_sender {
	struct storm *st;
	size_t id;
	struct rng rng;
	size_t ok;             /* items whose send returned OK */
	enum conc_status last; /* status that ended the sends (OK: all sent) */
	pthread_t thread;
};

struct storm_receiver {
	struct storm *st;
	size_t id;
	struct rng rng;
	uint64_t got[STORM_ITEMS];
	size_t n;
	enum conc_status last;
	pthread_t thread;
};

struct storm {
	bool use_ctx;
	struct conc_chan ch;
	uint64_t buf[CONC_CHAN_BUF_SIZE(STORM_CAP, sizeof(uint64_t)) / sizeof(uint64_t)];
	struct conc_ctx root, child; /* the workers block with child */
	/* Per round, written by the main thread before the start barrier. */
	unsigned mode, flavour;
	atomic_int open_send, open_recv;
	atomic_size_t received;
	bool stop;
	pthread_barrier_t start, end;
	struct storm_sender senders[STORM_SENDERS];
	struct storm_receiver receivers[STORM_RECEIVERS];
};

static enum conc_status storm_send(struct storm_sender *w, uint64_t *items, size_t n, size_t *sent)
{
	struct storm *st = w->st;
	struct conc_ctx *ctx = st->use_ctx ? &st->child : NULL;
	struct conc_deadline forever = conc_deadline_forever();
	enum conc_status s;
	switch (st->flavour) {
	case 0:
		s = ctx ? conc_chan_send_until(&st->ch, items, forever, ctx) : conc_chan_send(&st->ch, items);
		*sent = s == CONC_OK;
		break;
	case 1:
		s = ctx ? conc_chan_send_n_until(&st->ch, items, n, forever, ctx) : conc_chan_send_n(&st->ch, items, n);
		*sent = s == CONC_OK ? n : 0;
		break;
	default:
		*sent = conc_chan_send_burst_until(&st->ch, items, n, forever, ctx, &s);
		break;
	}
	return s;
}

static void *storm_sender_main(void *arg)
{
	struct storm_sender *w = arg;
	struct storm *st = w->st;
	for (;;) {
		pthread_barrier_wait(&st->start);
		if (st->stop)
			break;
		wait_flag(&st->open_send);
		enum conc_status s = CONC_OK;
		size_t i = 0;
		while (i < STORM_PER_SENDER) {
			uint64_t items[2] = {CONC_TEST_ITEM(w->id, i), CONC_TEST_ITEM(w->id, i + 1)};
			size_t n = st->flavour == 0 || i + 1 == STORM_PER_SENDER ? 1 : 2, sent = 0;
			s = storm_send(w, items, n, &sent);
			i += sent;
			if (s != CONC_OK)
				break;
		}
		w->ok = i;
		w->last = s;
		pthread_barrier_wait(&st->end);
	}
	return NULL;
}

static void *storm_receiver_main(void *arg)
{
	struct storm_receiver *w = arg;
	struct storm *st = w->st;
	struct conc_deadline forever = conc_deadline_forever();
	for (;;) {
		pthread_barrier_wait(&st->start);
		if (st->stop)
			break;
		struct conc_ctx *ctx = st->use_ctx ? &st->child : NULL;
		w->n = 0;
		wait_flag(&st->open_recv);
		bool drain = false;
		enum conc_status s;
		for (;;) {
			uint64_t items[3];
			size_t got = 0;
			if (st->flavour == 0) {
				s = ctx ? conc_chan_recv_until(&st->ch, items, forever, ctx) : conc_chan_recv(&st->ch, items);
				got = s == CONC_OK;
			} else if (st->flavour == 1 && !drain && rng_below(&w->rng, 2) == 0) {
				s = ctx ? conc_chan_recv_n_until(&st->ch, items, 2, forever, ctx)
					: conc_chan_recv_n(&st->ch, items, 2);
				got = s == CONC_OK ? 2 : 0;
				if (s == CONC_CLOSED) {
					drain = true; /* one item may be left */
					continue;
				}
			} else {
				got = conc_chan_recv_burst_until(&st->ch, items, 3, forever, ctx, &s);
			}
			for (size_t k = 0; k < got && w->n < STORM_ITEMS; k++)
				w->got[w->n++] = items[k];
			atomic_fetch_add(&st->received, got);
			if (s != CONC_OK)
				break;
		}
		w->last = s;
		pthread_barrier_wait(&st->end);
	}
	return NULL;
}

/* Close and/or cancel, as the scenario and `how` say. */
static void storm_act(struct storm *st, int cause, unsigned how)
{
	if (!st->use_ctx || how == 1)
		if (conc_chan_close(&st->ch) != CONC_OK)
			fail("close did not return OK");
	if (st->use_ctx) {
		enum conc_status s = conc_ctx_cancel(&st->root, cause);
		if (s != CONC_OK)
			fail("cancel gave %s", conc_strerror(s));
		if (how == 2 && conc_chan_close(&st->ch) != CONC_OK)
			fail("close did not return OK");
	}
}

/* One round's checks, after the end barrier. */
static void storm_check(struct storm *st, size_t round, size_t prefill, int cause, bool closed)
{
	unsigned char seen[STORM_SENDERS + 1][STORM_PER_SENDER];
	memset(seen, 0, sizeof seen);
	size_t total = 0;
	const char *what = st->use_ctx ? "cancel" : "close";
	bool ok_status[CONC_STATUS_COUNT__] = {false};
	ok_status[CONC_OK] = true;
	ok_status[CONC_CLOSED] = closed;
	ok_status[CONC_CANCELED] = st->use_ctx;

	/* Items drained after the round come after the receivers' in the
	 * channel, so they form one more consumer. */
	struct storm_receiver drained;
	drained.n = 0;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_chan_try_recv(&st->ch, &v)) == CONC_OK)
		if (drained.n < STORM_ITEMS)
			drained.got[drained.n++] = v;
	if (s != (closed ? CONC_CLOSED : CONC_EMPTY))
		fail("round %zu: draining ended with %s", round, conc_strerror(s));
	if (!st->use_ctx && drained.n)
		fail("round %zu: %zu items left after every receiver saw CLOSED", round, drained.n);

	for (size_t r = 0; r <= STORM_RECEIVERS; r++) {
		struct storm_receiver *w = r < STORM_RECEIVERS ? &st->receivers[r] : &drained;
		size_t last[STORM_SENDERS + 1];
		for (size_t p = 0; p <= STORM_SENDERS; p++)
			last[p] = SIZE_MAX;
		if (r < STORM_RECEIVERS && (w->last == CONC_OK || !ok_status[w->last] ||
					    (!st->use_ctx && w->last != CONC_CLOSED)))
			fail("round %zu (mode %u, flavour %u): receiver %zu ended with %s", round, st->mode,
			     st->flavour, r, conc_strerror(w->last));
		for (size_t k = 0; k < w->n; k++) {
			size_t p = CONC_TEST_PRODUCER(w->got[k]), i = CONC_TEST_SEQ(w->got[k]);
			if (p > STORM_SENDERS || i >= STORM_PER_SENDER) {
				fail("round %zu: junk item %#" PRIx64, round, w->got[k]);
				continue;
			}
			if (seen[p][i]++)
				fail("round %zu (mode %u, flavour %u): item p%zu #%zu received twice", round,
				     st->mode, st->flavour, p, i);
			if (!conc_test_fifo_ok(last, w->got[k]))
				fail("round %zu: order broken at p%zu #%zu", round, p, i);
			total++;
		}
	}
	size_t expected = prefill;
	for (size_t i = 0; i < STORM_PER_SENDER; i++)
		if (seen[STORM_PREFILL_ID][i] != (i < prefill))
			fail("round %zu: prefilled item #%zu received %u times", round, i,
			     (unsigned)seen[STORM_PREFILL_ID][i]);
	for (size_t p = 0; p < STORM_SENDERS; p++) {
		struct storm_sender *w = &st->senders[p];
		if (!ok_status[w->last] || (w->last == CONC_OK) != (w->ok == STORM_PER_SENDER))
			fail("round %zu (mode %u, flavour %u): sender %zu ended with %s after %zu items", round,
			     st->mode, st->flavour, p, conc_strerror(w->last), w->ok);
		expected += w->ok;
		for (size_t i = 0; i < STORM_PER_SENDER; i++)
			if (seen[p][i] != (i < w->ok))
				fail("round %zu (mode %u, flavour %u): p%zu #%zu sent %s, received %u times", round,
				     st->mode, st->flavour, p, i, i < w->ok ? "OK" : "never", (unsigned)seen[p][i]);
	}
	if (total != expected)
		fail("round %zu: %zu items received, %zu sent", round, total, expected);
	if (st->use_ctx) {
		if (conc_ctx_err(&st->child) != CONC_CANCELED || conc_ctx_cause(&st->child) != cause)
			fail("round %zu: child context err %s cause %d after the %s", round,
			     conc_strerror(conc_ctx_err(&st->child)), conc_ctx_cause(&st->child), what);
		if ((s = conc_ctx_destroy(&st->child)) != CONC_OK)
			fail("round %zu: destroying the child context gave %s", round, conc_strerror(s));
		if ((s = conc_ctx_destroy(&st->root)) != CONC_OK)
			fail("round %zu: destroying the root context gave %s", round, conc_strerror(s));
	}
	if ((s = conc_chan_destroy(&st->ch)) != CONC_OK)
		fail("round %zu: conc_chan_destroy gave %s (a waiter left behind?)", round, conc_strerror(s));
}

/* arg 0: close storm; 1: cancel storm. */
static void scenario_storm(size_t arg)
{
	bool use_ctx = arg != 0;
	static struct storm st;
	memset(&st, 0, sizeof st);
	st.use_ctx = use_ctx;
	atomic_init(&st.open_send, 0);
	atomic_init(&st.open_recv, 0);
	unsigned parties = 1 + STORM_SENDERS + STORM_RECEIVERS;
	barrier_init(&st.start, parties);
	barrier_init(&st.end, parties);
	for (size_t i = 0; i < STORM_SENDERS; i++) {
		st.senders[i].st = &st;
		st.senders[i].id = i;
		st.senders[i].rng = rng_for(9000 + use_ctx * 100 + i);
		spawn(&st.senders[i].thread, storm_sender_main, &st.senders[i]);
	}
	for (size_t i = 0; i < STORM_RECEIVERS; i++) {
		st.receivers[i].st = &st;
		st.receivers[i].id = i;
		st.receivers[i].rng = rng_for(9050 + use_ctx * 100 + i);
		spawn(&st.receivers[i].thread, storm_receiver_main, &st.receivers[i]);
	}
	struct rng rng = rng_for(9099 + use_ctx * 100);
	size_t rounds = SIZED(3000, 1500), modes[6] = {0};
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		if (conc_chan_init(&st.ch, STORM_CAP, sizeof(uint64_t), st.buf, sizeof st.buf) != CONC_OK) {
			fail("conc_chan_init failed");
			break;
		}
		int cause = 1000 + (int)(round % 1000);
		unsigned how = (unsigned)rng_below(&rng, 4); /* cancel storm: 1 close first, 2 close after */
		bool closed = !use_ctx || how == 1 || how == 2;
		if (use_ctx && (conc_ctx_init_root(&st.root) != CONC_OK ||
				conc_ctx_init(&st.child, &st.root, conc_deadline_forever()) != CONC_OK)) {
			fail("conc_ctx_init failed");
			break;
		}
		size_t prefill = rng_below(&rng, STORM_CAP + 1);
		for (size_t i = 0; i < prefill; i++) {
			uint64_t v = CONC_TEST_ITEM(STORM_PREFILL_ID, i);
			if (conc_chan_try_send(&st.ch, &v) != CONC_OK)
				fail("prefill failed");
		}
		st.mode = (unsigned)rng_below(&rng, 6);
		st.flavour = (unsigned)rng_below(&rng, 3);
		/* Mode 5 waits for every item: recv_n of 2 could leave one
		 * item to receivers that all wait for two. */
		if (st.mode == 5 && st.flavour == 1)
			st.flavour = 2;
		modes[st.mode]++;
		atomic_store(&st.received, 0);
		atomic_store(&st.open_send, st.mode == 0 || st.mode == 2 || st.mode == 3 || st.mode == 5);
		atomic_store(&st.open_recv, st.mode == 0 || st.mode == 1 || st.mode == 4 || st.mode == 5);
		pthread_barrier_wait(&st.start);
		switch (st.mode) {
		case 0:
			spin_random(&rng);
			storm_act(&st, cause, how);
			break;
		case 1:
		case 2:
			/* Every worker of the started side ends up blocked: the
			 * receivers on an empty channel, the senders (4 items each,
			 * at most 2 of them fit) on a full one. */
			conc_test_wait_parked(st.mode == 1 ? &st.ch.recvq : &st.ch.sendq, 3);
			atomic_store(st.mode == 1 ? &st.open_send : &st.open_recv, 1);
			spin_random(&rng);
			storm_act(&st, cause, how);
			break;
		case 3:
		case 4:
			conc_test_wait_parked(st.mode == 3 ? &st.ch.sendq : &st.ch.recvq, 3);
			storm_act(&st, cause, how);
			atomic_store(st.mode == 3 ? &st.open_recv : &st.open_send, 1);
			break;
		default:
			while (atomic_load(&st.received) < prefill + STORM_SENDERS * STORM_PER_SENDER)
				conc_yield();
			conc_test_wait_parked(&st.ch.recvq, 3);
			storm_act(&st, cause, how);
			break;
		}
		pthread_barrier_wait(&st.end);
		storm_check(&st, round, prefill, cause, closed);
	}
	st.stop = true;
	pthread_barrier_wait(&st.start);
	for (size_t i = 0; i < STORM_SENDERS; i++)
		join(st.senders[i].thread);
	for (size_t i = 0; i < STORM_RECEIVERS; i++)
		join(st.receivers[i].thread);
	pthread_barrier_destroy(&st.start);
	pthread_barrier_destroy(&st.end);
	note("%zu rounds; modes %zu/%zu/%zu/%zu/%zu/%zu", rounds, modes[0], modes[1], modes[2], modes[3], modes[4],
	     modes[5]);
}

/* ------------------------------------------------------- wake-up relay */

/*
 * Precise lost-wake-up checks.  In the mixes and storms a lost wake-up is
 * usually repaid by later traffic or by close; here every step starts with
 * one side all asleep and ends only when the other side's action has been
 * fully answered, so one lost wake-up is a hang the watchdog reports.
 *
 * receivers: 4 receivers block on an empty channel (receiver 0 in recv_n of
 * 2, a greedy waiter, where the capacity allows; receiver 1 in recv_burst;
 * the others in recv).  Each step: wait until all 4 are parked, send 1 to 3
 * items (send, send_n or send_burst), wait until all are received.
 *
 * senders: 4 senders block on a full channel (sender 0 in send_n of 2,
 * sender 1 in send_burst, the others in send), each sending its own
 * sequence.  Each step: wait until the channel is full and all 4 are parked,
 * take 1 to 3 items (try_recv, try_recv_n or try_recv_burst), and the next
 * step waits until the senders have filled it again.
 *
 * Then close: every thread returns CONC_CLOSED; every item is received
 * exactly once, in order per producer.
 */
#define RELAY_THREADS 4

struct relay {
	struct conc_chan *ch;
	struct conc_test_ledger ledger;
	size_t cap;
	atomic_size_t received;
	size_t sent[RELAY_THREADS]; /* senders side: items each sender got in */
};

struct relay_worker {
	struct relay *r;
	size_t id;
	pthread_t thread;
};

static void *relay_receiver(void *arg)
{
	struct relay_worker *w = arg;
	struct relay *r = w->r;
	size_t *last = fifo_table(1);
	bool greedy = w->id == 0 && r->cap >= 2;
	for (;;) {
		uint64_t items[3];
		size_t got = 0;
		enum conc_status s;
		if (greedy) {
			s = conc_chan_recv_n(r->ch, items, 2);
			got = s == CONC_OK ? 2 : 0;
			if (s == CONC_CLOSED) {
				greedy = false; /* take what is left one by one */
				continue;
			}
		} else if (w->id == 1) {
			got = conc_chan_recv_burst(r->ch, items, 3, &s);
		} else {
			s = conc_chan_recv(r->ch, items);
			got = s == CONC_OK;
		}
		for (size_t k = 0; k < got; k++)
			take_item(&r->ledger, last, items[k]);
		atomic_fetch_add(&r->received, got);
		if (s != CONC_OK) {
			if (s != CONC_CLOSED)
				fail("receiver %zu: %s", w->id, conc_strerror(s));
			break;
		}
	}
	free(last);
	return NULL;
}

static void *relay_sender(void *arg)
{
	struct relay_worker *w = arg;
	struct relay *r = w->r;
	size_t i = 0;
	for (;;) {
		uint64_t items[2] = {CONC_TEST_ITEM(w->id, i), CONC_TEST_ITEM(w->id, i + 1)};
		enum conc_status s;
		if (w->id == 0 && r->cap >= 2) {
			s = conc_chan_send_n(r->ch, items, 2);
			i += s == CONC_OK ? 2 : 0;
		} else if (w->id == 1) {
			i += conc_chan_send_burst(r->ch, items, 2, &s);
		} else {
			s = conc_chan_send(r->ch, items);
			i += s == CONC_OK;
		}
		if (i + 2 > r->ledger.per_producer) {
			fail("sender %zu: sent more than the receiver ever took", w->id);
			break;
		}
		if (s != CONC_OK) {
			if (s != CONC_CLOSED)
				fail("sender %zu: %s", w->id, conc_strerror(s));
			break;
		}
	}
	r->sent[w->id] = i;
	return NULL;
}

static void run_relay(size_t cap, bool senders)
{
	struct relay r;
	memset(&r, 0, sizeof r);
	r.cap = cap;
	atomic_init(&r.received, 0);
	if (conc_chan_new(&r.ch, cap, sizeof(uint64_t)) != CONC_OK) {
		fail("conc_chan_new failed");
		return;
	}
	size_t steps = SIZED(5000, 2500), most = cap < 3 ? cap : 3;
	/* senders: 3 items a step at most, plus what refills the channel. */
	conc_test_ledger_init(&r.ledger, senders ? RELAY_THREADS : 1, steps * 3 + cap + 2);
	struct relay_worker w[RELAY_THREADS];
	for (size_t i = 0; i < RELAY_THREADS; i++) {
		w[i].r = &r;
		w[i].id = i;
		spawn(&w[i].thread, senders ? relay_sender : relay_receiver, &w[i]);
	}
	struct rng rng = rng_for(11000 + cap * 2 + senders);
	size_t *last = fifo_table(RELAY_THREADS);
	size_t moved = 0;
	for (size_t step = 0; step < steps && !atomic_load(&failed_flag); step++) {
		size_t k = 1 + rng_below(&rng, most), how = rng_below(&rng, 3), done = 0;
		uint64_t items[3];
		enum conc_status s = CONC_OK;
		if (!senders) {
			conc_test_wait_parked(&r.ch->recvq, RELAY_THREADS);
			for (size_t j = 0; j < k; j++)
				items[j] = CONC_TEST_ITEM(0, moved + j);
			if (how == 0)
				for (; done < k && (s = conc_chan_send(r.ch, &items[done])) == CONC_OK; done++)
					;
			else if (how == 1)
				done = (s = conc_chan_send_n(r.ch, items, k)) == CONC_OK ? k : 0;
			else
				done = conc_chan_send_burst(r.ch, items, k, &s);
			moved += done;
			if (done != k)
				fail("step %zu: sent %zu of %zu into an empty channel (%s)", step, done, k,
				     conc_strerror(s));
			/* A lost wake-up leaves an item here with every receiver asleep. */
			while (atomic_load(&r.received) < moved)
				conc_yield();
		} else {
			/* A lost wake-up leaves room here with every sender asleep. */
			while (conc_chan_len(r.ch) < cap)
				conc_yield();
			conc_test_wait_parked(&r.ch->sendq, RELAY_THREADS);
			if (how == 0)
				for (; done < k && (s = conc_chan_try_recv(r.ch, &items[done])) == CONC_OK; done++)
					;
			else if (how == 1)
				done = (s = conc_chan_try_recv_n(r.ch, items, k)) == CONC_OK ? k : 0;
			else
				done = conc_chan_try_recv_burst(r.ch, items, k, &s);
			if (done != k)
				fail("step %zu: took %zu of %zu from a full channel (%s)", step, done, k, conc_strerror(s));
			for (size_t j = 0; j < done; j++)
				take_item(&r.ledger, last, items[j]);
			moved += done;
		}
	}
	if (conc_chan_close(r.ch) != CONC_OK)
		fail("close did not return OK");
	for (size_t i = 0; i < RELAY_THREADS; i++)
		join(w[i].thread);
	if (senders) {
		uint64_t v;
		enum conc_status s;
		while ((s = conc_chan_try_recv(r.ch, &v)) == CONC_OK)
			take_item(&r.ledger, last, v);
		if (s != CONC_CLOSED)
			fail("draining ended with %s", conc_strerror(s));
		size_t expected = 0;
		for (size_t p = 0; p < RELAY_THREADS; p++) {
			expected += r.sent[p];
			for (size_t i = 0; i < r.ledger.per_producer; i++) {
				unsigned seen = atomic_load(&r.ledger.seen[p * r.ledger.per_producer + i]);
				if (seen != (i < r.sent[p]))
					fail("sender %zu: item #%zu (of %zu sent) received %u times", p, i, r.sent[p], seen);
			}
		}
		note("cap %zu: %zu steps, %zu items sent", cap, steps, expected);
	} else {
		size_t missing = conc_test_ledger_missing(&r.ledger), want = r.ledger.per_producer - moved;
		if (atomic_load(&r.received) != moved || missing != want)
			fail("%zu items sent, %zu received, %zu missing", moved, atomic_load(&r.received),
			     missing - want);
		note("cap %zu: %zu steps, %zu items sent", cap, steps, moved);
	}
	check_closed_and_drained(r.ch);
	if (conc_chan_free(r.ch) != CONC_OK)
		fail("conc_chan_free failed");
	conc_test_ledger_free(&r.ledger);
	free(last);
}

static void scenario_relay_receivers(size_t cap)
{
	run_relay(cap, false);
}

static void scenario_relay_senders(size_t cap)
{
	run_relay(cap, true);
}

/* ----------------------------------------------------------------- main */

static const struct scenario scenarios[] = {
	{"blocking mix, capacity 1", scenario_blocking, 1},
	{"blocking mix, capacity 3", scenario_blocking, 3},
	{"blocking mix, capacity 64", scenario_blocking, 64},
	{"try mix, capacity 1", scenario_try, 1},
	{"try mix, capacity 3", scenario_try, 3},
	{"try mix, capacity 64", scenario_try, 64},
	{"bulk mix, capacity 3", scenario_bulk, 3},
	{"bulk mix, capacity 64", scenario_bulk, 64},
	{"deadline mix, capacity 2", scenario_deadline, 2},
	{"deadline mix, capacity 16", scenario_deadline, 16},
	{"close storm", scenario_storm, 0},
	{"cancel storm", scenario_storm, 1},
	{"capacity-1 blend", scenario_cap1, 1},
	{"wake-up relay, receivers, capacity 1", scenario_relay_receivers, 1},
	{"wake-up relay, receivers, capacity 4", scenario_relay_receivers, 4},
	{"wake-up relay, senders, capacity 1", scenario_relay_senders, 1},
	{"wake-up relay, senders, capacity 4", scenario_relay_senders, 4},
};

int main(void)
{
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], STRESS_PARKER);
}
