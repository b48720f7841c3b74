/* SPDX-License-Identifier: MIT */
/*
 * stress-select: select and rendezvous stress scenarios as a plain program
 * (Criterion does not start under ThreadSanitizer).  Each scenario
 * oversubscribes the CPUs and checks, with the ledger of util.h, that every
 * item sent is received exactly once and, where an order is defined, that
 * the items one producer sends on one channel reach each consumer in order.
 * Every select is also checked against its contract: CONC_OK and CONC_CLOSED
 * name a live case, every other result names n, and no receive buffer is
 * written except the one of the case that happened.
 *
 *   select stress       Go's TestSelectStress: channels of capacity 0, 0, 2
 *                       and 3; per channel a plain sender and receiver, plus
 *                       selects sending to and receiving from all four
 *   fan-in              producers on their own channels (capacity 0, 1, 4),
 *                       one or two consumers selecting over all of them and
 *                       dropping each channel as it closes
 *   rendezvous MPMC     4 senders, 4 receivers on a capacity-0 channel with
 *                       plain calls and short deadlines, retried: a send
 *                       that timed out must not have delivered its item
 *   close racing select rounds of selects (and plain calls) blocked on a
 *                       rendezvous and a buffered channel while both close
 *   cancel racing select the same with a context canceled under them: what
 *                       was not received is still in the channel
 *   timers under load   selects with a short timer case against producers
 *                       that send with gaps: a timer case never consumes
 *   try never misses    conc_select_try over one case kept ready throughout
 *                       and several never ready: never CONC_WOULDBLOCK
 *   wake pass-on        a select woken through one channel that takes
 *                       another case passes the wake-up on to the plain
 *                       waiter behind it (a lost one is a hang)
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

#define STRESS_PROG "stress-select"
#include "stress.h"

/* ------------------------------------------------------------- helpers */

/* What a receive buffer holds until a case writes it (no item is this). */
#define NOTHING UINT64_MAX

static size_t *fifo_table(size_t producers)
{
	size_t *last = xcalloc(producers, sizeof *last);
	for (size_t p = 0; p < producers; p++)
		last[p] = SIZE_MAX;
	return last;
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

static unsigned random_flags(struct rng *r)
{
	return rng_below(r, 2) ? CONC_SELECT_BIASED : 0;
}

/*
 * One select, checked against its contract.  poll_only: conc_select_try;
 * else conc_select when d is forever and ctx NULL, conc_select_until
 * otherwise.  Every receive case's buffer (a uint64_t of its own) is set to
 * NOTHING first; after the call only the chosen case's may differ.  Returns
 * the select's status, or CONC_INVALID (after fail()) if the result breaks
 * the contract.
 */
static enum conc_status do_select(struct conc_select_case *cs, size_t n, unsigned flags, bool poll_only,
				  struct conc_deadline d, struct conc_ctx *ctx, size_t *chosen)
{
	for (size_t j = 0; j < n; j++)
		if (cs[j].op == CONC_SELECT_RECV)
			*(uint64_t *)cs[j].buf = NOTHING;
	size_t i = SIZE_MAX;
	enum conc_status s;
	if (poll_only)
		s = conc_select_try(cs, n, flags, &i);
	else if (!ctx && conc_deadline_is_forever(d))
		s = conc_select(cs, n, flags, &i);
	else
		s = conc_select_until(cs, n, flags, d, ctx, &i);
	*chosen = i;
	bool happened = s == CONC_OK || s == CONC_CLOSED;
	if (happened && i >= n) {
		fail("select gave %s with chosen %zu of %zu cases", conc_strerror(s), i, n);
		return CONC_INVALID;
	}
	if (happened && (cs[i].op == CONC_SELECT_TIMER ? s != CONC_OK : !cs[i].chan)) {
		fail("select gave %s for case %zu (op %d, channel %p)", conc_strerror(s), i, cs[i].op,
		     (void *)cs[i].chan);
		return CONC_INVALID;
	}
	if (!happened && i != n) {
		fail("select gave %s with chosen %zu, not %zu", conc_strerror(s), i, n);
		return CONC_INVALID;
	}
	/* A CLOSED receive case may not have written its buffer either, but
	 * an item lost that way is the ledger's to find. */
	for (size_t j = 0; j < n; j++)
		if (cs[j].op == CONC_SELECT_RECV && !(happened && j == i) && *(uint64_t *)cs[j].buf != NOTHING) {
			fail("select gave %s (case %zu) but wrote receive case %zu's buffer (p%zu #%zu)",
			     conc_strerror(s), i, j, CONC_TEST_PRODUCER(*(uint64_t *)cs[j].buf),
			     CONC_TEST_SEQ(*(uint64_t *)cs[j].buf));
			return CONC_INVALID;
		}
	return s;
}

/* A channel of uint64_t; false (after fail()) if it could not be made. */
static bool make_chan(struct conc_chan **ch, size_t cap)
{
	if (conc_chan_new(ch, cap, sizeof(uint64_t)) == CONC_OK)
		return true;
	fail("conc_chan_new(%zu) failed", cap);
	return false;
}

/* After a failure: close every channel, so every thread returns. */
static void close_all(struct conc_chan *const *ch, size_t n)
{
	for (size_t k = 0; k < n; k++)
		(void)conc_chan_close(ch[k]);
}

/* A producer has sent all it had: the last of *left (those still sending
 * on ch) closes ch. */
static void close_if_last(atomic_size_t *left, struct conc_chan *ch)
{
	if (atomic_fetch_sub(left, 1) == 1 && conc_chan_close(ch) != CONC_OK)
		fail("close did not return OK");
}

/* take_item() for an item that came through channel `via`, whose producer
 * sends on channel `home`. */
static void take_item_via(struct conc_test_ledger *l, size_t *last, uint64_t v, size_t via, size_t home)
{
	if (via != home)
		fail("item p%zu #%zu came through channel %zu, not %zu", CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v), via,
		     home);
	take_item(l, last, v);
}

/* stress_deadline_call() until it does not time out, with the same item
 * (a timed-out send that delivered shows up as a duplicate); each retry
 * is counted in *retries. */
static enum conc_status deadline_call_retried(struct rng *r, struct conc_chan *ch, uint64_t *v, bool send,
					      atomic_size_t *retries)
{
	enum conc_status s;
	while ((s = stress_deadline_call(r, ch, v, send)) == CONC_TIMEDOUT)
		atomic_fetch_add_explicit(retries, 1, memory_order_relaxed);
	return s;
}

/* ---------------------------------------------------------------- crews */

/*
 * The threads of one run of a scenario (select stress, fan-in, rendezvous,
 * timers, try): the scenario sets each worker's fn and id, run_crew() does
 * the rest.  Worker t of a crew draws from rng_for(seed + t), so a run
 * replays from its seed.
 */
#define WORKER_CHANS 4

struct worker {
	void *(*fn)(void *); /* its thread (argument: this worker) */
	size_t id; /* its index among the workers of its role */
	void *shared; /* the scenario's state */
	struct rng rng;
	size_t moved[WORKER_CHANS]; /* items it moved per channel, where a scenario counts them */
	pthread_barrier_t *start; /* wait here once, before the first step */
	pthread_t thread;
};

/* Start w[0..n-1] together and return when every one has returned. */
static void run_crew(struct worker *w, size_t n, void *shared, uint64_t seed)
{
	pthread_barrier_t start;
	barrier_init(&start, (unsigned)n);
	for (size_t t = 0; t < n; t++) {
		w[t].shared = shared;
		w[t].rng = rng_for(seed + t);
		memset(w[t].moved, 0, sizeof w[t].moved);
		w[t].start = &start;
		spawn(&w[t].thread, w[t].fn, &w[t]);
	}
	for (size_t t = 0; t < n; t++)
		join(w[t].thread);
	pthread_barrier_destroy(&start);
}

/* run_crew() with the usual cast: `consumers` workers running consumer,
 * then `producers` running producer, each role numbered from 0. */
static void run_split_crew(struct worker *w, size_t consumers, void *(*consumer)(void *), size_t producers,
			   void *(*producer)(void *), void *shared, uint64_t seed)
{
	for (size_t t = 0; t < consumers + producers; t++) {
		w[t].fn = t < consumers ? consumer : producer;
		w[t].id = t < consumers ? t : t - consumers;
	}
	run_crew(w, consumers + producers, shared, seed);
}

/*
 * A producer's items: CONC_TEST_ITEM(w->id, 0..n-1), in order, each through
 * send().  On a failure, close the run's channels so that every thread
 * returns.  Returns how many were sent (n unless one failed).
 */
static size_t send_items(struct worker *w, size_t n, enum conc_status (*send)(struct worker *w, uint64_t *v),
			 struct conc_chan *const *chans, size_t nchans)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = CONC_TEST_ITEM(w->id, i);
		enum conc_status s = send(w, &v);
		if (s != CONC_OK) {
			fail("producer %zu: item #%zu gave %s", w->id, i, conc_strerror(s));
			close_all(chans, nchans);
			return i;
		}
	}
	return n;
}

/* After a crew: every item of the ledger arrived exactly once, and
 * `received` (the consumers' count) agrees.  Returns the number sent. */
static size_t check_all_delivered(struct conc_test_ledger *l, size_t received)
{
	size_t total = l->producers * l->per_producer, missing = conc_test_ledger_missing(l);
	if (received != total || missing)
		fail("received %zu of %zu items, %zu never arrived", received, total, missing);
	return total;
}

/* After a crew: each channel answers try_recv with `left` (CONC_CLOSED:
 * closed and drained; CONC_EMPTY: open and drained). */
static void check_chans_left(struct conc_chan *const *ch, size_t n, enum conc_status left)
{
	for (size_t k = 0; k < n; k++) {
		uint64_t v;
		enum conc_status s = conc_chan_try_recv(ch[k], &v);
		if (s != left)
			fail("channel %zu: try_recv after the run gave %s, not %s", k, conc_strerror(s),
			     conc_strerror(left));
	}
}

/* Free the channels of a finished run; CONC_OK means no waiter was left. */
static void free_chans(struct conc_chan *const *ch, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		enum conc_status s = conc_chan_free(ch[k]);
		if (s != CONC_OK)
			fail("channel %zu: conc_chan_free gave %s", k, conc_strerror(s));
	}
}

/* ------------------------------------------------------- select stress */

/*
 * Go's TestSelectStress, widened: channels of capacity 0, 0, 2 and 3.  For
 * each channel k a plain sender sends n items and a plain receiver takes n;
 * two select senders each send n items to every channel through one select
 * over the four send cases, and two select receivers each take n from every
 * channel through one select over the four receive cases; a case whose
 * channel is finished is set to NULL.  Sends and receives per channel
 * balance (3n each), so nothing is left blocked.  One select sender and one
 * select receiver are fair, the other biased; one call in 8 (plain or
 * select) carries a short deadline and is retried on CONC_TIMEDOUT with the
 * same item, so a timed-out send that delivered shows up as a duplicate.
 *
 * Producer ids: plain sender k is k; select sender s on channel k is
 * 4 + 4s + k (one id per channel, as order is defined per channel only).
 */
#define SS_CHANS 4
#define SS_SELECTS 2
#define SS_PRODUCERS (SS_CHANS + SS_SELECTS * SS_CHANS)
#define SS_WORKERS (2 * SS_CHANS + 2 * SS_SELECTS)

_Static_assert(SS_CHANS <= WORKER_CHANS, "a worker counts its items per channel");

static const size_t ss_caps[SS_CHANS] = {0, 0, 2, 3};

enum ss_role { SS_SEND, SS_RECV, SS_SELECT_SEND, SS_SELECT_RECV };

struct ss {
	struct conc_chan *ch[SS_CHANS];
	struct conc_test_ledger ledger;
	size_t n;
	atomic_size_t retries;
};

/* Worker t: the plain sender and receiver of each channel in turn, then
 * each select sender and receiver in turn.  Its id is the channel (plain)
 * or the select's index. */
static enum ss_role ss_role(size_t t)
{
	return t < 2 * SS_CHANS ? (enum ss_role)(t % 2) : (enum ss_role)(2 + t % 2);
}

static size_t ss_id(size_t t)
{
	return t < 2 * SS_CHANS ? t / 2 : (t - 2 * SS_CHANS) / 2;
}

static size_t ss_channel_of(size_t producer)
{
	return producer < SS_CHANS ? producer : (producer - SS_CHANS) % SS_CHANS;
}

static void ss_take(struct worker *w, size_t *last, size_t k, uint64_t v)
{
	struct ss *ss = w->shared;
	take_item_via(&ss->ledger, last, v, k, ss_channel_of(CONC_TEST_PRODUCER(v)));
	w->moved[k]++;
}

/* A plain worker's call on its channel: one in 8 carries a short deadline
 * and is retried. */
static enum conc_status ss_call(struct worker *w, uint64_t *v, bool send)
{
	struct ss *ss = w->shared;
	struct conc_chan *ch = ss->ch[w->id];
	if (rng_below(&w->rng, 8) == 0)
		return deadline_call_retried(&w->rng, ch, v, send, &ss->retries);
	return send ? conc_chan_send(ch, v) : conc_chan_recv(ch, v);
}

/* A select worker's select over its four cases: one in 8 carries a short
 * deadline and is retried (drawing again) on CONC_TIMEDOUT. */
static enum conc_status ss_select(struct worker *w, struct conc_select_case *cs, unsigned flags, size_t *i)
{
	struct ss *ss = w->shared;
	for (;;) {
		bool timed = rng_below(&w->rng, 8) == 0;
		enum conc_status s = do_select(cs, SS_CHANS, flags, false,
					       timed ? stress_short_deadline(&w->rng) : conc_deadline_forever(), NULL, i);
		if (s != CONC_TIMEDOUT || !timed)
			return s;
		atomic_fetch_add_explicit(&ss->retries, 1, memory_order_relaxed);
	}
}

static enum conc_status ss_send(struct worker *w, uint64_t *v)
{
	return ss_call(w, v, true);
}

static void *ss_sender(void *arg)
{
	struct worker *w = arg;
	struct ss *ss = w->shared;
	pthread_barrier_wait(w->start);
	w->moved[w->id] = send_items(w, ss->n, ss_send, ss->ch, SS_CHANS);
	return NULL;
}

static void *ss_receiver(void *arg)
{
	struct worker *w = arg;
	struct ss *ss = w->shared;
	size_t *last = fifo_table(SS_PRODUCERS);
	pthread_barrier_wait(w->start);
	for (size_t i = 0; i < ss->n; i++) {
		uint64_t v;
		enum conc_status s = ss_call(w, &v, false);
		if (s != CONC_OK) {
			fail("receiver %zu: receive %zu gave %s", w->id, i, conc_strerror(s));
			close_all(ss->ch, SS_CHANS);
			break;
		}
		ss_take(w, last, w->id, v);
		if (atomic_load(&failed_flag)) {
			close_all(ss->ch, SS_CHANS); /* counts are off now: let everyone finish */
			break;
		}
	}
	free(last);
	return NULL;
}

static void *ss_select_sender(void *arg)
{
	struct worker *w = arg;
	struct ss *ss = w->shared;
	uint64_t items[SS_CHANS];
	struct conc_select_case cs[SS_CHANS];
	for (size_t k = 0; k < SS_CHANS; k++) {
		items[k] = CONC_TEST_ITEM(SS_CHANS + w->id * SS_CHANS + k, 0);
		cs[k] = conc_select_send(ss->ch[k], &items[k]);
	}
	unsigned flags = w->id % 2 ? CONC_SELECT_BIASED : 0;
	pthread_barrier_wait(w->start);
	for (size_t done = 0; done < SS_CHANS * ss->n; done++) {
		size_t i;
		enum conc_status s = ss_select(w, cs, flags, &i);
		if (s != CONC_OK) {
			fail("select sender %zu: %s (case %zu) after %zu items", w->id, conc_strerror(s), i, done);
			close_all(ss->ch, SS_CHANS);
			break;
		}
		if (++w->moved[i] == ss->n)
			cs[i].chan = NULL;
		else
			items[i]++;
	}
	return NULL;
}

static void *ss_select_receiver(void *arg)
{
	struct worker *w = arg;
	struct ss *ss = w->shared;
	size_t *last = fifo_table(SS_PRODUCERS);
	uint64_t out[SS_CHANS];
	struct conc_select_case cs[SS_CHANS];
	for (size_t k = 0; k < SS_CHANS; k++)
		cs[k] = conc_select_recv(ss->ch[k], &out[k]);
	unsigned flags = w->id % 2 ? CONC_SELECT_BIASED : 0;
	pthread_barrier_wait(w->start);
	for (size_t done = 0; done < SS_CHANS * ss->n; done++) {
		size_t i;
		enum conc_status s = ss_select(w, cs, flags, &i);
		if (s != CONC_OK) {
			fail("select receiver %zu: %s (case %zu) after %zu items", w->id, conc_strerror(s), i, done);
			close_all(ss->ch, SS_CHANS);
			break;
		}
		ss_take(w, last, i, out[i]);
		if (atomic_load(&failed_flag)) {
			close_all(ss->ch, SS_CHANS);
			break;
		}
		if (w->moved[i] == ss->n)
			cs[i].chan = NULL;
	}
	free(last);
	return NULL;
}

static void scenario_select_stress(size_t unused)
{
	(void)unused;
	struct ss ss;
	memset(&ss, 0, sizeof ss);
	ss.n = SIZED(60000, 30000);
	atomic_init(&ss.retries, 0);
	for (size_t k = 0; k < SS_CHANS; k++)
		if (!make_chan(&ss.ch[k], ss_caps[k]))
			return;
	conc_test_ledger_init(&ss.ledger, SS_PRODUCERS, ss.n);
	static void *(*const fns[])(void *) = {ss_sender, ss_receiver, ss_select_sender, ss_select_receiver};
	struct worker w[SS_WORKERS];
	for (size_t t = 0; t < SS_WORKERS; t++) {
		w[t].fn = fns[ss_role(t)];
		w[t].id = ss_id(t);
	}
	run_crew(w, SS_WORKERS, &ss, 100);

	if (!atomic_load(&failed_flag)) {
		size_t sent[SS_CHANS] = {0}, got[SS_CHANS] = {0}, received = 0;
		for (size_t t = 0; t < SS_WORKERS; t++)
			for (size_t k = 0; k < SS_CHANS; k++) {
				enum ss_role role = ss_role(t);
				bool mine = role >= SS_SELECT_SEND || k == w[t].id;
				if (w[t].moved[k] != (mine ? ss.n : 0))
					fail("worker %zu (role %d) moved %zu items on channel %zu, not %zu", t, (int)role,
					     w[t].moved[k], k, mine ? ss.n : 0);
				*(role == SS_SEND || role == SS_SELECT_SEND ? &sent[k] : &got[k]) += w[t].moved[k];
			}
		for (size_t k = 0; k < SS_CHANS; k++) {
			if (sent[k] != got[k])
				fail("channel %zu: %zu sent, %zu received", k, sent[k], got[k]);
			received += got[k];
		}
		check_all_delivered(&ss.ledger, received);
	}
	check_chans_left(ss.ch, SS_CHANS, CONC_EMPTY);
	free_chans(ss.ch, SS_CHANS);
	note("%zu items per producer, %zu timed-out calls retried", ss.n, atomic_load(&ss.retries));
	conc_test_ledger_free(&ss.ledger);
}

/* --------------------------------------------------------------- fan-in */

/*
 * 6 producers, each on its own channel (capacities 0, 1, 4, 0, 1, 4), send
 * n items with a random mix of send, send_until with a short deadline, a
 * one-case select, a select with a short timer case and a select with a
 * short deadline (all retried until the item is sent), then close their
 * channel.  One or two consumers select over the six receive cases (the
 * second consumer biased); a case reporting CONC_CLOSED is set to NULL, and
 * a consumer stops when all six have.  Every item arrives once, in order per
 * producer and consumer, and through its producer's channel.
 */
#define FI_PRODUCERS 6

static const size_t fi_caps[FI_PRODUCERS] = {0, 1, 4, 0, 1, 4};

struct fi {
	struct conc_chan *ch[FI_PRODUCERS];
	struct conc_test_ledger ledger;
	size_t n;
	atomic_size_t received, retries;
};

/* A producer's send on its channel, by one of five means, retried until
 * the item is sent or the channel fails. */
static enum conc_status fi_send(struct worker *w, uint64_t *v)
{
	struct fi *fi = w->shared;
	struct conc_chan *ch = fi->ch[w->id];
	for (;;) {
		struct conc_select_case cs[2] = {conc_select_send(ch, v), conc_select_timer(conc_deadline_poll())};
		size_t op = rng_below(&w->rng, 10), i;
		enum conc_status s;
		switch (op) {
		case 0:
			s = stress_deadline_call(&w->rng, ch, v, true);
			break;
		case 1:
			s = do_select(cs, 1, 0, false, conc_deadline_forever(), NULL, &i);
			break;
		case 2:
			cs[1] = conc_select_timer(stress_short_deadline(&w->rng));
			s = do_select(cs, 2, random_flags(&w->rng), false, conc_deadline_forever(), NULL, &i);
			if (s == CONC_OK && i == 1)
				s = CONC_TIMEDOUT; /* the timer: not sent, retry */
			break;
		case 3:
			s = do_select(cs, 1, 0, false, stress_short_deadline(&w->rng), NULL, &i);
			break;
		default:
			s = conc_chan_send(ch, v);
			break;
		}
		if (s != CONC_TIMEDOUT)
			return s;
		atomic_fetch_add_explicit(&fi->retries, 1, memory_order_relaxed);
	}
}

static void *fi_producer(void *arg)
{
	struct worker *w = arg;
	struct fi *fi = w->shared;
	pthread_barrier_wait(w->start);
	if (send_items(w, fi->n, fi_send, fi->ch, FI_PRODUCERS) < fi->n)
		return NULL;
	enum conc_status s = conc_chan_close(fi->ch[w->id]);
	if (s != CONC_OK)
		fail("producer %zu: close gave %s", w->id, conc_strerror(s));
	return NULL;
}

static void *fi_consumer(void *arg)
{
	struct worker *w = arg;
	struct fi *fi = w->shared;
	size_t *last = fifo_table(FI_PRODUCERS);
	uint64_t out[FI_PRODUCERS];
	struct conc_select_case cs[FI_PRODUCERS];
	for (size_t p = 0; p < FI_PRODUCERS; p++)
		cs[p] = conc_select_recv(fi->ch[p], &out[p]);
	unsigned flags = w->id == 1 ? CONC_SELECT_BIASED : 0;
	pthread_barrier_wait(w->start);
	for (size_t open = FI_PRODUCERS; open > 0;) {
		size_t i;
		enum conc_status s = CONC_WOULDBLOCK;
		if (rng_below(&w->rng, 16) == 0)
			s = do_select(cs, FI_PRODUCERS, flags, true, conc_deadline_poll(), NULL, &i);
		if (s == CONC_WOULDBLOCK)
			s = do_select(cs, FI_PRODUCERS, flags, false, conc_deadline_forever(), NULL, &i);
		if (s == CONC_OK) {
			take_item_via(&fi->ledger, last, out[i], i, CONC_TEST_PRODUCER(out[i]));
			atomic_fetch_add_explicit(&fi->received, 1, memory_order_relaxed);
		} else if (s == CONC_CLOSED) {
			cs[i].chan = NULL;
			open--;
		} else {
			fail("consumer %zu: select gave %s", w->id, conc_strerror(s));
		}
		if (atomic_load(&failed_flag)) {
			close_all(fi->ch, FI_PRODUCERS);
			break;
		}
	}
	free(last);
	return NULL;
}

static void scenario_fan_in(size_t consumers)
{
	struct fi fi;
	memset(&fi, 0, sizeof fi);
	fi.n = SIZED(50000, 30000);
	atomic_init(&fi.received, 0);
	atomic_init(&fi.retries, 0);
	for (size_t p = 0; p < FI_PRODUCERS; p++)
		if (!make_chan(&fi.ch[p], fi_caps[p]))
			return;
	conc_test_ledger_init(&fi.ledger, FI_PRODUCERS, fi.n);
	struct worker w[FI_PRODUCERS + 2];
	run_split_crew(w, consumers, fi_consumer, FI_PRODUCERS, fi_producer, &fi, 200 + consumers * 20);

	size_t total = check_all_delivered(&fi.ledger, atomic_load(&fi.received));
	check_chans_left(fi.ch, FI_PRODUCERS, CONC_CLOSED);
	free_chans(fi.ch, FI_PRODUCERS);
	note("%zu consumer(s), %zu items, %zu timed-out sends retried", consumers, total,
	     atomic_load(&fi.retries));
	conc_test_ledger_free(&fi.ledger);
}

/* ------------------------------------------------------ rendezvous MPMC */

/*
 * 4 senders and 4 receivers on one capacity-0 channel.  Each call is, at
 * random, a plain send/recv, one with no deadline through send_until /
 * recv_until, or one with a deadline a few µs away (on the call or on a
 * context), retried on CONC_TIMEDOUT with the same item.  A send that timed
 * out but delivered would be received twice; a receive that timed out but
 * took an item would lose it.  The last sender closes; receivers stop at
 * CONC_CLOSED.
 */
#define RV_SENDERS 4
#define RV_RECEIVERS 4

struct rv {
	struct conc_chan *ch;
	struct conc_test_ledger ledger;
	size_t n;
	atomic_size_t senders_left, received, send_retries, recv_retries;
};

/* One send or receive, retried until it does not time out. */
static enum conc_status rv_call(struct worker *w, uint64_t *v, bool send)
{
	struct rv *rv = w->shared;
	switch (rng_below(&w->rng, 4)) {
	case 0:
		return send ? conc_chan_send(rv->ch, v) : conc_chan_recv(rv->ch, v);
	case 1:
		return send ? conc_chan_send_until(rv->ch, v, conc_deadline_forever(), NULL)
			    : conc_chan_recv_until(rv->ch, v, conc_deadline_forever(), NULL);
	default:
		return deadline_call_retried(&w->rng, rv->ch, v, send, send ? &rv->send_retries : &rv->recv_retries);
	}
}

static enum conc_status rv_send(struct worker *w, uint64_t *v)
{
	return rv_call(w, v, true);
}

static void *rv_sender(void *arg)
{
	struct worker *w = arg;
	struct rv *rv = w->shared;
	pthread_barrier_wait(w->start);
	if (send_items(w, rv->n, rv_send, &rv->ch, 1) == rv->n)
		close_if_last(&rv->senders_left, rv->ch);
	return NULL;
}

static void *rv_receiver(void *arg)
{
	struct worker *w = arg;
	struct rv *rv = w->shared;
	size_t *last = fifo_table(RV_SENDERS);
	pthread_barrier_wait(w->start);
	for (;;) {
		uint64_t v;
		enum conc_status s = rv_call(w, &v, false);
		if (s == CONC_OK) {
			take_item(&rv->ledger, last, v);
			atomic_fetch_add_explicit(&rv->received, 1, memory_order_relaxed);
			if (atomic_load(&failed_flag))
				(void)conc_chan_close(rv->ch);
		} else {
			if (s != CONC_CLOSED)
				fail("receiver %zu: %s", w->id, conc_strerror(s));
			break;
		}
	}
	free(last);
	return NULL;
}

static void scenario_rendezvous(size_t unused)
{
	(void)unused;
	struct rv rv;
	memset(&rv, 0, sizeof rv);
	rv.n = SIZED(60000, 30000);
	atomic_init(&rv.senders_left, RV_SENDERS);
	atomic_init(&rv.received, 0);
	atomic_init(&rv.send_retries, 0);
	atomic_init(&rv.recv_retries, 0);
	if (!make_chan(&rv.ch, 0))
		return;
	conc_test_ledger_init(&rv.ledger, RV_SENDERS, rv.n);
	struct worker w[RV_SENDERS + RV_RECEIVERS];
	run_split_crew(w, RV_RECEIVERS, rv_receiver, RV_SENDERS, rv_sender, &rv, 300);

	size_t total = check_all_delivered(&rv.ledger, atomic_load(&rv.received));
	check_chans_left(&rv.ch, 1, CONC_CLOSED);
	free_chans(&rv.ch, 1);
	note("%zu items, %zu send and %zu receive timeouts retried", total, atomic_load(&rv.send_retries),
	     atomic_load(&rv.recv_retries));
	conc_test_ledger_free(&rv.ledger);
}

/* -------------------------------------------- close and cancel rounds */

/*
 * The shared shape of "close racing select" and "cancel racing select":
 * rounds on a rendezvous channel R and a buffered channel B (capacity 2 for
 * close, 3 for cancel; partly prefilled) with persistent worker threads in
 * two sides, each released by the main thread through its own barrier:
 *
 *   receive side  2 selects over {recv R, recv B}; a plain receiver on R
 *                 and one on B (close only); for close, a "mixed" select over
 *                 {send B, recv R} that sends its own items
 *   send side     2 selects over {send R, send B}; a plain sender on R and
 *                 one on B; 3 (close) or 4 (cancel) items each
 *
 * Every worker runs until the round's close or cancel stops it: receivers
 * drop a case at CONC_CLOSED and stop when none is left (or at CONC_CANCELED),
 * senders stop when their items are sent or every case is closed (canceled).
 * The main thread acts (close both channels in a random order; or cancel the
 * root or the middle of the context tree the workers block with) at a moment
 * picked per round:
 *
 *   mode 0  both sides start; act after a random spin
 *   mode 1  the receive side starts and blocks; the send side starts; act
 *           after a random spin
 *   mode 2  the send side starts and blocks (R has no receiver, B fills);
 *           the receive side starts; act after a random spin
 *   mode 3  the send side blocks; act; the receive side starts
 *   mode 4  the receive side blocks; act; the send side starts
 *   mode 5  both sides start; once every item has been received and the
 *           receivers block again, act (until then only sends and receives
 *           wake anyone: a lost wake-up is a hang)
 *
 * Checks, per round: every worker returned, with a status it may give
 * (receivers CLOSED or CANCELED; senders OK with every item sent, or
 * CLOSED/CANCELED); an item was received (by a worker or, after a cancel,
 * drained from B by the main thread) exactly once if its send reported OK or
 * it was prefilled, never otherwise, and through the channel its send chose;
 * order holds per producer, channel and consumer; both channels and every
 * context are then destroyed with CONC_OK (no waiter left behind).
 */
enum { RD_R, RD_B }; /* the channels, also their case index in two-case selects */

enum rd_role { RD_SELECT_RECV, RD_RECV_R, RD_RECV_B, RD_MIXED, RD_SELECT_SEND, RD_SEND_R, RD_SEND_B };

#define RD_MAX_K 4
#define RD_MAX_CAP 3
#define RD_WORKERS 9
#define RD_PRODUCERS 6 /* 2 select senders, plain R, plain B, mixed, prefill */
#define RD_PREFILL_ID 5
#define RD_MAX_ITEMS (RD_PRODUCERS * RD_MAX_K)

struct rd;

struct rd_worker {
	struct rd *rd;
	enum rd_role role;
	size_t id; /* producer id, for those that send */
	struct rng rng;
	struct conc_ctx leaf; /* cancel: this worker's own context */
	/* One round's results. */
	uint64_t got[RD_MAX_ITEMS];
	unsigned char got_ch[RD_MAX_ITEMS];
	size_t ngot, sent;
	unsigned char sent_ch[RD_MAX_K];
	enum conc_status last;
	pthread_t thread;
};

struct rd {
	bool cancel; /* the cancel scenario (else close) */
	size_t k, cap;
	struct conc_chan ch[2];
	uint64_t buf[CONC_CHAN_BUF_SIZE(RD_MAX_CAP, sizeof(uint64_t)) / sizeof(uint64_t)];
	struct conc_ctx root, mid;
	/* Per round, written by the main thread before the go barriers. */
	bool use_leaves, stop;
	atomic_size_t received;
	pthread_barrier_t go_recv, go_send, end;
	size_t nrecv, nsend;
	struct rd_worker w[RD_WORKERS];
};

static struct conc_ctx *rd_ctx(struct rd_worker *w)
{
	struct rd *rd = w->rd;
	return !rd->cancel ? NULL : rd->use_leaves ? &w->leaf : &rd->mid;
}

static void rd_got(struct rd_worker *w, uint64_t v, unsigned ch)
{
	if (w->ngot < RD_MAX_ITEMS) {
		w->got[w->ngot] = v;
		w->got_ch[w->ngot++] = (unsigned char)ch;
	} else {
		fail("worker %zu received more items than were sent", w->id);
	}
	atomic_fetch_add(&w->rd->received, 1);
}

/* The end of every call is the round's close or cancel, so a status
 * other than OK ends the worker's loop (CLOSED only drops a case). */
static void rd_select_receiver(struct rd_worker *w)
{
	struct rd *rd = w->rd;
	uint64_t out[2];
	struct conc_select_case cs[3] = {conc_select_recv(&rd->ch[RD_R], &out[0]),
					 conc_select_recv(&rd->ch[RD_B], &out[1])};
	/* Sometimes a far timer as well: it only changes how long the
	 * select parks.  Should it fire, it is dropped. */
	size_t n = 2, open = 2;
	if (rng_below(&w->rng, 2)) {
		cs[2] = conc_select_timer(conc_deadline_in_ms(60000));
		n = 3;
	}
	enum conc_status s;
	for (;;) {
		size_t i;
		s = do_select(cs, n, random_flags(&w->rng), false, conc_deadline_forever(), rd_ctx(w), &i);
		if (s == CONC_OK && i == 2) {
			n = 2;
		} else if (s == CONC_OK) {
			rd_got(w, out[i], (unsigned)i);
		} else if (s == CONC_CLOSED) {
			cs[i].chan = NULL;
			if (--open == 0)
				break;
		} else {
			break;
		}
	}
	w->last = s;
}

static void rd_plain_receiver(struct rd_worker *w, unsigned ch)
{
	struct rd *rd = w->rd;
	struct conc_ctx *ctx = rd_ctx(w);
	enum conc_status s;
	for (;;) {
		uint64_t v;
		s = ctx ? conc_chan_recv_until(&rd->ch[ch], &v, conc_deadline_forever(), ctx)
			: conc_chan_recv(&rd->ch[ch], &v);
		if (s != CONC_OK)
			break;
		rd_got(w, v, ch);
	}
	w->last = s;
}

/* Sends its items on B while it receives from R. */
static void rd_mixed(struct rd_worker *w)
{
	struct rd *rd = w->rd;
	uint64_t item = CONC_TEST_ITEM(w->id, 0), out;
	struct conc_select_case cs[2] = {conc_select_send(&rd->ch[RD_B], &item),
					 conc_select_recv(&rd->ch[RD_R], &out)};
	size_t open = 2;
	enum conc_status s;
	for (;;) {
		size_t i;
		s = do_select(cs, 2, random_flags(&w->rng), false, conc_deadline_forever(), NULL, &i);
		if (s == CONC_OK && i == 0) {
			w->sent_ch[w->sent++] = RD_B;
			item = CONC_TEST_ITEM(w->id, w->sent);
			if (w->sent == rd->k) {
				cs[0].chan = NULL;
				if (--open == 0)
					break;
			}
		} else if (s == CONC_OK) {
			rd_got(w, out, RD_R);
		} else if (s == CONC_CLOSED) {
			cs[i].chan = NULL;
			if (--open == 0)
				break;
		} else {
			break;
		}
	}
	w->last = s;
}

static void rd_select_sender(struct rd_worker *w)
{
	struct rd *rd = w->rd;
	uint64_t item = CONC_TEST_ITEM(w->id, 0);
	struct conc_select_case cs[2] = {conc_select_send(&rd->ch[RD_R], &item),
					 conc_select_send(&rd->ch[RD_B], &item)};
	size_t open = 2;
	enum conc_status s = CONC_OK;
	while (w->sent < rd->k) {
		size_t i;
		s = do_select(cs, 2, random_flags(&w->rng), false, conc_deadline_forever(), rd_ctx(w), &i);
		if (s == CONC_OK) {
			w->sent_ch[w->sent++] = (unsigned char)i;
			item = CONC_TEST_ITEM(w->id, w->sent);
		} else if (s == CONC_CLOSED) {
			cs[i].chan = NULL;
			if (--open == 0)
				break;
		} else {
			break;
		}
	}
	w->last = s;
}

static void rd_plain_sender(struct rd_worker *w, unsigned ch)
{
	struct rd *rd = w->rd;
	struct conc_ctx *ctx = rd_ctx(w);
	enum conc_status s = CONC_OK;
	while (w->sent < rd->k) {
		uint64_t v = CONC_TEST_ITEM(w->id, w->sent);
		s = ctx ? conc_chan_send_until(&rd->ch[ch], &v, conc_deadline_forever(), ctx)
			: conc_chan_send(&rd->ch[ch], &v);
		if (s != CONC_OK)
			break;
		w->sent_ch[w->sent++] = (unsigned char)ch;
	}
	w->last = s;
}

static void *rd_main(void *arg)
{
	struct rd_worker *w = arg;
	struct rd *rd = w->rd;
	bool sender = w->role >= RD_SELECT_SEND;
	for (;;) {
		pthread_barrier_wait(sender ? &rd->go_send : &rd->go_recv);
		if (rd->stop)
			break;
		w->ngot = w->sent = 0;
		w->last = CONC_INVALID;
		switch (w->role) {
		case RD_SELECT_RECV: rd_select_receiver(w); break;
		case RD_RECV_R: rd_plain_receiver(w, RD_R); break;
		case RD_RECV_B: rd_plain_receiver(w, RD_B); break;
		case RD_MIXED: rd_mixed(w); break;
		case RD_SELECT_SEND: rd_select_sender(w); break;
		case RD_SEND_R: rd_plain_sender(w, RD_R); break;
		default: rd_plain_sender(w, RD_B); break;
		}
		pthread_barrier_wait(&rd->end);
	}
	return NULL;
}

/* Close (both channels, random order) or cancel (root or mid). */
static void rd_act(struct rd *rd, struct rng *rng, int cause)
{
	if (rd->cancel) {
		enum conc_status s = conc_ctx_cancel(rng_below(rng, 2) ? &rd->root : &rd->mid, cause);
		if (s != CONC_OK)
			fail("cancel gave %s", conc_strerror(s));
		return;
	}
	size_t first = rng_below(rng, 2);
	for (size_t j = 0; j < 2; j++) {
		if (j == 1 && rng_below(rng, 2))
			spin_random(rng);
		enum conc_status s = conc_chan_close(&rd->ch[first ^ j]);
		if (s != CONC_OK)
			fail("close gave %s", conc_strerror(s));
	}
}

/* Wait until the receive side (send false) or the send side is parked:
 * every one of its workers blocked on each channel it waits on. */
static void rd_wait_side(struct rd *rd, bool send)
{
	if (send) {
		/* select senders + plain sender of each channel (B is full) */
		conc_test_wait_chan_parked(&rd->ch[RD_R], true, 3);
		conc_test_wait_chan_parked(&rd->ch[RD_B], true, 3);
	} else if (rd->cancel) {
		conc_test_wait_chan_parked(&rd->ch[RD_R], false, 3); /* select receivers + plain R */
		conc_test_wait_chan_parked(&rd->ch[RD_B], false, 2); /* select receivers */
	} else {
		conc_test_wait_chan_parked(&rd->ch[RD_R], false, 4); /* select receivers + plain R + mixed */
		conc_test_wait_chan_parked(&rd->ch[RD_B], false, 3); /* select receivers + plain B */
	}
}

/* One round's checks, after the end barrier. */
static void rd_check(struct rd *rd, size_t round, unsigned mode, size_t prefill, int cause)
{
	unsigned seen[RD_PRODUCERS][RD_MAX_K];
	unsigned char via[RD_PRODUCERS][RD_MAX_K];
	memset(seen, 0, sizeof seen);
	memset(via, 0, sizeof via);

	/* After a cancel, what is left in B is drained as one more consumer. */
	struct rd_worker drained;
	drained.ngot = 0;
	drained.id = SIZE_MAX;
	uint64_t v;
	enum conc_status s;
	while ((s = conc_chan_try_recv(&rd->ch[RD_B], &v)) == CONC_OK)
		if (drained.ngot < RD_MAX_ITEMS) {
			drained.got[drained.ngot] = v;
			drained.got_ch[drained.ngot++] = RD_B;
		}
	if (s != (rd->cancel ? CONC_EMPTY : CONC_CLOSED))
		fail("round %zu (mode %u): draining B ended with %s", round, mode, conc_strerror(s));
	if (!rd->cancel && drained.ngot)
		fail("round %zu (mode %u): %zu items left in B after every receiver saw CLOSED", round, mode,
		     drained.ngot);
	if ((s = conc_chan_try_recv(&rd->ch[RD_R], &v)) != (rd->cancel ? CONC_EMPTY : CONC_CLOSED))
		fail("round %zu (mode %u): try_recv on R gave %s", round, mode, conc_strerror(s));

	enum conc_status end = rd->cancel ? CONC_CANCELED : CONC_CLOSED;
	for (size_t t = 0; t <= rd->nrecv + rd->nsend; t++) {
		struct rd_worker *w = t < rd->nrecv + rd->nsend ? &rd->w[t] : &drained;
		if (w != &drained) {
			bool sends = w->role >= RD_MIXED;
			/* Senders may finish (the mixed select, if R closed
			 * before its last send); else the act stopped them. */
			bool done = sends && w->last == CONC_OK && w->sent == rd->k;
			if (!done && (w->last != end || (sends && w->sent >= rd->k && w->role != RD_MIXED)))
				fail("round %zu (mode %u): worker %zu (role %d) ended with %s after %zu sends",
				     round, mode, t, (int)w->role, conc_strerror(w->last), w->sent);
			if (w->role == RD_MIXED && w->sent > rd->k)
				fail("round %zu: the mixed select sent %zu items", round, w->sent);
		}
		size_t last[2][RD_PRODUCERS];
		for (size_t p = 0; p < RD_PRODUCERS; p++)
			last[0][p] = last[1][p] = SIZE_MAX;
		for (size_t j = 0; j < w->ngot; j++) {
			size_t p = CONC_TEST_PRODUCER(w->got[j]), i = CONC_TEST_SEQ(w->got[j]);
			if (p >= RD_PRODUCERS || i >= RD_MAX_K) {
				fail("round %zu: junk item %#" PRIx64, round, w->got[j]);
				continue;
			}
			if (seen[p][i]++)
				fail("round %zu (mode %u): item p%zu #%zu received twice", round, mode, p, i);
			via[p][i] = w->got_ch[j];
			if (!conc_test_fifo_ok(last[w->got_ch[j]], w->got[j]))
				fail("round %zu (mode %u): order broken at p%zu #%zu on channel %u", round, mode, p,
				     i, (unsigned)w->got_ch[j]);
		}
	}
	for (size_t i = 0; i < RD_MAX_K; i++)
		if (seen[RD_PREFILL_ID][i] != (i < prefill) || (i < prefill && via[RD_PREFILL_ID][i] != RD_B))
			fail("round %zu (mode %u): prefilled item #%zu received %u times", round, mode, i,
			     seen[RD_PREFILL_ID][i]);
	for (size_t t = 0; t < rd->nrecv + rd->nsend; t++) {
		struct rd_worker *w = &rd->w[t];
		if (w->role < RD_MIXED)
			continue;
		for (size_t i = 0; i < RD_MAX_K; i++) {
			bool sent = i < w->sent;
			if (seen[w->id][i] != sent)
				fail("round %zu (mode %u): p%zu #%zu sent %s, received %u times", round, mode, w->id,
				     i, sent ? "OK" : "never", seen[w->id][i]);
			else if (sent && via[w->id][i] != w->sent_ch[i])
				fail("round %zu (mode %u): p%zu #%zu sent on channel %u, received on %u", round, mode,
				     w->id, i, (unsigned)w->sent_ch[i], (unsigned)via[w->id][i]);
		}
	}
	if (rd->cancel) {
		for (size_t t = 0; t < rd->nrecv + rd->nsend; t++) {
			struct conc_ctx *c = &rd->w[t].leaf;
			if (conc_ctx_err(c) != CONC_CANCELED || conc_ctx_cause(c) != cause)
				fail("round %zu: a leaf context has err %s cause %d, not CANCELED %d", round,
				     conc_strerror(conc_ctx_err(c)), conc_ctx_cause(c), cause);
			if ((s = conc_ctx_destroy(c)) != CONC_OK)
				fail("round %zu: destroying a leaf context gave %s", round, conc_strerror(s));
		}
		if ((s = conc_ctx_destroy(&rd->mid)) != CONC_OK || (s = conc_ctx_destroy(&rd->root)) != CONC_OK)
			fail("round %zu: destroying a context gave %s", round, conc_strerror(s));
	}
	for (size_t c = 0; c < 2; c++)
		if ((s = conc_chan_destroy(&rd->ch[c])) != CONC_OK)
			fail("round %zu: conc_chan_destroy gave %s (a waiter left behind?)", round, conc_strerror(s));
}

/* arg 0: close racing select; 1: cancel racing select. */
static void scenario_rounds(size_t arg)
{
	static struct rd rd;
	memset(&rd, 0, sizeof rd);
	rd.cancel = arg != 0;
	rd.k = rd.cancel ? 4 : 3;
	rd.cap = rd.cancel ? 3 : 2;
	atomic_init(&rd.received, 0);
	/* Roles: receive side first, then send side; producer ids as in
	 * RD_PRODUCERS. */
	static const enum rd_role close_roles[] = {RD_SELECT_RECV, RD_SELECT_RECV, RD_RECV_R, RD_RECV_B, RD_MIXED,
						   RD_SELECT_SEND, RD_SELECT_SEND, RD_SEND_R, RD_SEND_B};
	static const enum rd_role cancel_roles[] = {RD_SELECT_RECV, RD_SELECT_RECV, RD_RECV_R,
						    RD_SELECT_SEND, RD_SELECT_SEND, RD_SEND_R, RD_SEND_B};
	const enum rd_role *roles = rd.cancel ? cancel_roles : close_roles;
	rd.nrecv = rd.cancel ? 3 : 5;
	rd.nsend = 4;
	barrier_init(&rd.go_recv, (unsigned)rd.nrecv + 1);
	barrier_init(&rd.go_send, (unsigned)rd.nsend + 1);
	barrier_init(&rd.end, (unsigned)(rd.nrecv + rd.nsend) + 1);
	size_t selects = 0;
	for (size_t t = 0; t < rd.nrecv + rd.nsend; t++) {
		struct rd_worker *w = &rd.w[t];
		w->rd = &rd;
		w->role = roles[t];
		w->rng = rng_for(400 + arg * 50 + t);
		switch (w->role) {
		case RD_SELECT_SEND: w->id = selects++; break;
		case RD_SEND_R: w->id = 2; break;
		case RD_SEND_B: w->id = 3; break;
		case RD_MIXED: w->id = 4; break;
		default: w->id = SIZE_MAX; break;
		}
		spawn(&w->thread, rd_main, w);
	}
	struct rng rng = rng_for(499 + arg * 50);
	size_t rounds = SIZED(10000, 5000), modes[6] = {0};
	const size_t items = (rd.nsend + !rd.cancel) * rd.k; /* sent in a round with no act */
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		if (conc_chan_init(&rd.ch[RD_R], 0, sizeof(uint64_t), NULL, 0) != CONC_OK ||
		    conc_chan_init(&rd.ch[RD_B], rd.cap, sizeof(uint64_t), rd.buf, sizeof rd.buf) != CONC_OK) {
			fail("conc_chan_init failed");
			break;
		}
		int cause = 1000 + (int)(round % 1000);
		if (rd.cancel) {
			rd.use_leaves = rng_below(&rng, 2);
			if (conc_ctx_init_root(&rd.root) != CONC_OK ||
			    conc_ctx_init(&rd.mid, &rd.root, conc_deadline_forever()) != CONC_OK)
				fail("conc_ctx_init failed");
			for (size_t t = 0; t < rd.nrecv + rd.nsend; t++)
				if (conc_ctx_init(&rd.w[t].leaf, &rd.mid, conc_deadline_forever()) != CONC_OK)
					fail("conc_ctx_init failed");
		}
		size_t prefill = rng_below(&rng, rd.cap + 1);
		for (size_t i = 0; i < prefill; i++) {
			uint64_t v = CONC_TEST_ITEM(RD_PREFILL_ID, i);
			if (conc_chan_try_send(&rd.ch[RD_B], &v) != CONC_OK)
				fail("prefill failed");
		}
		atomic_store(&rd.received, 0);
		unsigned mode = (unsigned)rng_below(&rng, 6);
		modes[mode]++;
		switch (mode) {
		case 0:
			pthread_barrier_wait(&rd.go_recv);
			pthread_barrier_wait(&rd.go_send);
			spin_random(&rng);
			rd_act(&rd, &rng, cause);
			break;
		case 1:
		case 2:
			pthread_barrier_wait(mode == 1 ? &rd.go_recv : &rd.go_send);
			rd_wait_side(&rd, mode == 2);
			pthread_barrier_wait(mode == 1 ? &rd.go_send : &rd.go_recv);
			spin_random(&rng);
			rd_act(&rd, &rng, cause);
			break;
		case 3:
		case 4:
			pthread_barrier_wait(mode == 4 ? &rd.go_recv : &rd.go_send);
			rd_wait_side(&rd, mode == 3);
			rd_act(&rd, &rng, cause);
			pthread_barrier_wait(mode == 4 ? &rd.go_send : &rd.go_recv);
			break;
		default:
			pthread_barrier_wait(&rd.go_recv);
			pthread_barrier_wait(&rd.go_send);
			while (atomic_load(&rd.received) < prefill + items)
				conc_yield();
			rd_wait_side(&rd, false);
			rd_act(&rd, &rng, cause);
			break;
		}
		pthread_barrier_wait(&rd.end);
		rd_check(&rd, round, mode, prefill, cause);
	}
	rd.stop = true;
	pthread_barrier_wait(&rd.go_recv);
	pthread_barrier_wait(&rd.go_send);
	for (size_t t = 0; t < rd.nrecv + rd.nsend; t++)
		join(rd.w[t].thread);
	pthread_barrier_destroy(&rd.go_recv);
	pthread_barrier_destroy(&rd.go_send);
	pthread_barrier_destroy(&rd.end);
	note("%zu rounds; modes %zu/%zu/%zu/%zu/%zu/%zu", rounds, modes[0], modes[1], modes[2], modes[3], modes[4],
	     modes[5]);
}

/* ---------------------------------------------------- timers under load */

/*
 * 4 producers send n items each, producers 0 and 2 on a capacity-2 channel
 * B, 1 and 3 on a rendezvous channel R, with random gaps; a send is a plain
 * send or a select of the send case and a short timer case, retried with the
 * same item when the timer wins.  3 consumers select over {recv B, recv R,
 * a timer a few µs away} (or the two receive cases with a short deadline);
 * a timer case or a timeout is counted and retried.  The last producer on a
 * channel closes it; consumers drop it at CONC_CLOSED.  A timer case that
 * consumed an item (or a send it beat that still delivered) shows up in the
 * ledger as a loss (or duplicate); do_select checks the receive buffers.
 */
#define TL_PRODUCERS 4
#define TL_CONSUMERS 3

struct tl {
	struct conc_chan *ch[2]; /* [0] B (capacity 2), [1] R (capacity 0) */
	struct conc_test_ledger ledger;
	size_t n;
	atomic_size_t left[2], received, send_timers, recv_timers, timeouts;
};

/* A producer's send, after a random gap: plain, or a select with a short
 * timer case, retried with the same item while the timer wins. */
static enum conc_status tl_send(struct worker *w, uint64_t *v)
{
	struct tl *tl = w->shared;
	struct conc_chan *ch = tl->ch[w->id % 2];
	if (rng_below(&w->rng, 4) == 0)
		spin_random(&w->rng);
	if (rng_below(&w->rng, 3) == 0)
		return conc_chan_send(ch, v);
	for (;;) {
		struct conc_select_case cs[2] = {conc_select_send(ch, v), conc_select_timer(stress_short_deadline(&w->rng))};
		size_t c;
		enum conc_status s = do_select(cs, 2, random_flags(&w->rng), false, conc_deadline_forever(), NULL, &c);
		if (s != CONC_OK || c == 0)
			return s;
		atomic_fetch_add_explicit(&tl->send_timers, 1, memory_order_relaxed);
	}
}

static void *tl_producer(void *arg)
{
	struct worker *w = arg;
	struct tl *tl = w->shared;
	pthread_barrier_wait(w->start);
	if (send_items(w, tl->n, tl_send, tl->ch, 2) == tl->n)
		close_if_last(&tl->left[w->id % 2], tl->ch[w->id % 2]);
	return NULL;
}

static void *tl_consumer(void *arg)
{
	struct worker *w = arg;
	struct tl *tl = w->shared;
	size_t *last = fifo_table(TL_PRODUCERS);
	uint64_t out[2];
	struct conc_select_case cs[3] = {conc_select_recv(tl->ch[0], &out[0]), conc_select_recv(tl->ch[1], &out[1])};
	pthread_barrier_wait(w->start);
	for (size_t open = 2; open > 0;) {
		bool timer = rng_below(&w->rng, 4) != 0;
		cs[2] = conc_select_timer(stress_short_deadline(&w->rng));
		size_t i;
		enum conc_status s = do_select(cs, timer ? 3 : 2, random_flags(&w->rng), false,
					       timer ? conc_deadline_forever() : stress_short_deadline(&w->rng), NULL, &i);
		if (s == CONC_OK && i == 2) {
			atomic_fetch_add_explicit(&tl->recv_timers, 1, memory_order_relaxed);
		} else if (s == CONC_OK) {
			take_item_via(&tl->ledger, last, out[i], i, CONC_TEST_PRODUCER(out[i]) % 2);
			atomic_fetch_add_explicit(&tl->received, 1, memory_order_relaxed);
		} else if (s == CONC_CLOSED) {
			cs[i].chan = NULL;
			open--;
		} else if (s == CONC_TIMEDOUT && !timer) {
			atomic_fetch_add_explicit(&tl->timeouts, 1, memory_order_relaxed);
		} else {
			fail("consumer %zu: select gave %s", w->id, conc_strerror(s));
		}
		if (atomic_load(&failed_flag)) {
			close_all(tl->ch, 2);
			break;
		}
	}
	free(last);
	return NULL;
}

static void scenario_timers(size_t unused)
{
	(void)unused;
	struct tl tl;
	memset(&tl, 0, sizeof tl);
	tl.n = SIZED(10000, 8000);
	for (size_t c = 0; c < 2; c++)
		atomic_init(&tl.left[c], TL_PRODUCERS / 2);
	atomic_init(&tl.received, 0);
	atomic_init(&tl.send_timers, 0);
	atomic_init(&tl.recv_timers, 0);
	atomic_init(&tl.timeouts, 0);
	if (!make_chan(&tl.ch[0], 2) || !make_chan(&tl.ch[1], 0))
		return;
	conc_test_ledger_init(&tl.ledger, TL_PRODUCERS, tl.n);
	struct worker w[TL_PRODUCERS + TL_CONSUMERS];
	run_split_crew(w, TL_CONSUMERS, tl_consumer, TL_PRODUCERS, tl_producer, &tl, 600);

	size_t total = check_all_delivered(&tl.ledger, atomic_load(&tl.received));
	check_chans_left(tl.ch, 2, CONC_CLOSED);
	free_chans(tl.ch, 2);
	note("%zu items; timer cases won %zu sends and %zu receives, %zu receive timeouts", total,
	     atomic_load(&tl.send_timers), atomic_load(&tl.recv_timers), atomic_load(&tl.timeouts));
	conc_test_ledger_free(&tl.ledger);
}

/* -------------------------------------------------------- wake pass-on */

/*
 * A select woken through one ring channel's queue that then takes another
 * case must pass the wake-up on, or a plain waiter behind it sleeps with its
 * channel ready.  Rounds on two capacity-1 channels B and C: a select X over
 * {C, B} (biased: C first) parks on both, then a plain P parks on B.
 *
 *   send  both full; the main thread takes one item from B (which wakes X,
 *         the head of B's queue) and at once one from C
 *   recv  both empty; the main thread sends one item to B, then one to C
 *
 * X usually runs only after both, tries C first and takes it: then only the
 * wake-up X passes on reaches P, whose B is ready; if it is lost, P sleeps
 * forever and the watchdog reports it.  When X takes B instead, the main
 * thread makes B ready for P once more.  Every item ends where it should.
 */
struct po {
	struct conc_chan b, c;
	uint64_t bbuf[CONC_CHAN_BUF_SIZE(1, sizeof(uint64_t)) / sizeof(uint64_t)];
	uint64_t cbuf[CONC_CHAN_BUF_SIZE(1, sizeof(uint64_t)) / sizeof(uint64_t)];
	bool send, stop;
	/* Results of a round. */
	enum conc_status xs, ps;
	size_t chosen;
	uint64_t xgot, pgot;
	pthread_barrier_t go_x, go_p, x_done, end;
};

static void *po_x(void *arg)
{
	struct po *po = arg;
	for (;;) {
		pthread_barrier_wait(&po->go_x);
		if (po->stop)
			break;
		uint64_t item = CONC_TEST_ITEM(0, 0), out[2];
		struct conc_select_case cs[2];
		if (po->send) {
			cs[0] = conc_select_send(&po->c, &item);
			cs[1] = conc_select_send(&po->b, &item);
		} else {
			cs[0] = conc_select_recv(&po->c, &out[0]);
			cs[1] = conc_select_recv(&po->b, &out[1]);
		}
		po->xs = do_select(cs, 2, CONC_SELECT_BIASED, false, conc_deadline_forever(), NULL, &po->chosen);
		if (!po->send && po->xs == CONC_OK)
			po->xgot = out[po->chosen];
		pthread_barrier_wait(&po->x_done);
		pthread_barrier_wait(&po->end);
	}
	return NULL;
}

static void *po_p(void *arg)
{
	struct po *po = arg;
	for (;;) {
		pthread_barrier_wait(&po->go_p);
		if (po->stop)
			break;
		uint64_t item = CONC_TEST_ITEM(1, 0);
		po->ps = po->send ? conc_chan_send(&po->b, &item) : conc_chan_recv(&po->b, &po->pgot);
		pthread_barrier_wait(&po->end);
	}
	return NULL;
}

/* Expect ch to hold exactly want (NOTHING: to be empty). */
static void po_expect(struct conc_chan *ch, const char *name, uint64_t want, size_t round)
{
	uint64_t v = NOTHING;
	enum conc_status s = conc_chan_try_recv(ch, &v);
	if (want == NOTHING ? s != CONC_EMPTY : s != CONC_OK || v != want)
		fail("round %zu: %s held %#" PRIx64 " (%s), not %#" PRIx64, round, name, v, conc_strerror(s), want);
	else if (want != NOTHING && (s = conc_chan_try_recv(ch, &v)) != CONC_EMPTY)
		fail("round %zu: %s held a second item (%s)", round, name, conc_strerror(s));
}

static void scenario_pass_on(size_t unused)
{
	(void)unused;
	static struct po po;
	memset(&po, 0, sizeof po);
	barrier_init(&po.go_x, 2);
	barrier_init(&po.go_p, 2);
	barrier_init(&po.x_done, 2);
	barrier_init(&po.end, 3);
	pthread_t x, p;
	spawn(&x, po_x, &po);
	spawn(&p, po_p, &po);
	struct rng rng = rng_for(800);
	size_t rounds = SIZED(3000, 3000), took_c = 0;
	const uint64_t mine0 = CONC_TEST_ITEM(2, 0), mine1 = CONC_TEST_ITEM(2, 1), mine2 = CONC_TEST_ITEM(2, 2);
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		if (conc_chan_init(&po.b, 1, sizeof(uint64_t), po.bbuf, sizeof po.bbuf) != CONC_OK ||
		    conc_chan_init(&po.c, 1, sizeof(uint64_t), po.cbuf, sizeof po.cbuf) != CONC_OK) {
			fail("conc_chan_init failed");
			break;
		}
		po.send = rng_below(&rng, 2);
		po.xgot = po.pgot = NOTHING;
		if (po.send && (conc_chan_try_send(&po.b, &mine0) != CONC_OK ||
				conc_chan_try_send(&po.c, &mine1) != CONC_OK))
			fail("round %zu: filling B and C failed", round);
		pthread_barrier_wait(&po.go_x);
		conc_test_wait_chan_parked(&po.c, po.send, 1);
		conc_test_wait_chan_parked(&po.b, po.send, 1);
		pthread_barrier_wait(&po.go_p);
		conc_test_wait_chan_parked(&po.b, po.send, 2);
		uint64_t v;
		if (po.send) {
			if (conc_chan_try_recv(&po.b, &v) != CONC_OK || v != mine0 ||
			    conc_chan_try_recv(&po.c, &v) != CONC_OK || v != mine1)
				fail("round %zu: taking the items of B and C failed", round);
		} else if (conc_chan_try_send(&po.b, &mine0) != CONC_OK || conc_chan_try_send(&po.c, &mine1) != CONC_OK) {
			fail("round %zu: sending to B and C failed", round);
		}
		pthread_barrier_wait(&po.x_done);
		bool x_took_b = po.xs == CONC_OK && po.chosen == 1;
		if (po.xs != CONC_OK)
			fail("round %zu: the select gave %s", round, conc_strerror(po.xs));
		took_c += po.xs == CONC_OK && po.chosen == 0;
		/* X took what P waits for: give P its own. */
		if (x_took_b && po.send && (conc_chan_try_recv(&po.b, &v) != CONC_OK || v != CONC_TEST_ITEM(0, 0)))
			fail("round %zu: the select's item is not in B", round);
		if (x_took_b && !po.send && conc_chan_try_send(&po.b, &mine2) != CONC_OK)
			fail("round %zu: sending P's item failed", round);
		pthread_barrier_wait(&po.end);

		if (po.ps != CONC_OK)
			fail("round %zu: P's %s gave %s", round, po.send ? "send" : "receive", conc_strerror(po.ps));
		if (po.send) {
			po_expect(&po.b, "B", CONC_TEST_ITEM(1, 0), round);
			po_expect(&po.c, "C", x_took_b ? NOTHING : CONC_TEST_ITEM(0, 0), round);
		} else {
			if (po.xgot != (x_took_b ? mine0 : mine1) || po.pgot != (x_took_b ? mine2 : mine0))
				fail("round %zu: the select received %#" PRIx64 ", P %#" PRIx64, round, po.xgot,
				     po.pgot);
			po_expect(&po.b, "B", NOTHING, round);
			po_expect(&po.c, "C", x_took_b ? mine1 : NOTHING, round);
		}
		if (conc_chan_destroy(&po.b) != CONC_OK || conc_chan_destroy(&po.c) != CONC_OK)
			fail("round %zu: conc_chan_destroy failed (a waiter left behind?)", round);
	}
	po.stop = true;
	pthread_barrier_wait(&po.go_x);
	pthread_barrier_wait(&po.go_p);
	join(x);
	join(p);
	pthread_barrier_destroy(&po.go_x);
	pthread_barrier_destroy(&po.go_p);
	pthread_barrier_destroy(&po.x_done);
	pthread_barrier_destroy(&po.end);
	note("%zu rounds, the select took C (so only a passed-on wake-up freed P) in %zu", rounds, took_c);
}

/* ---------------------------------------------------- try never misses */

/*
 * conc_select_try must find a case that is ready throughout the call.  Each
 * of 6 workers repeats one of two steps, at random:
 *
 *   A  send an item of its own into A (capacity 7: never blocks), then
 *      conc_select_try with a receive case on A among never-ready cases
 *   S  receive an item from S (capacity 7, prefilled full: never blocks),
 *      then conc_select_try with a send case on S among never-ready cases
 *
 * Each worker's own send into A has returned and its receive from it has not
 * happened, while the others never receive more than they sent, so A holds
 * an item whose send returned throughout the try; S likewise has room.  The
 * never-ready cases (shuffled with the ready one; fair or biased): receive
 * from an empty channel and from a rendezvous channel nobody sends on, send
 * to a full channel and to that rendezvous channel, a NULL channel, and a
 * timer that never fires.  Every try must report CONC_OK with the ready
 * case; every item of A and S arrives exactly once, in order per producer.
 */
#define NB_WORKERS 6
#define NB_CAP (NB_WORKERS + 1)
#define NB_CASES 7

enum { NB_A, NB_S }; /* a worker's moved[]: the items it sent into A and into S */

struct nb {
	struct conc_chan *a, *s, *empty, *full, *rdv;
	struct conc_test_ledger la, ls; /* ls: producer NB_WORKERS is the prefill */
	size_t n;
	atomic_size_t misses;
};

/* Build the cases, the ready one at a random place; returns its index. */
static size_t nb_cases(struct worker *w, struct conc_select_case *cs, struct conc_select_case ready,
		       uint64_t *junk, const uint64_t *elem)
{
	struct nb *nb = w->shared;
	cs[0] = ready;
	cs[1] = conc_select_recv(nb->empty, &junk[0]);
	cs[2] = conc_select_recv(nb->rdv, &junk[1]);
	cs[3] = conc_select_send(nb->full, elem);
	cs[4] = conc_select_send(nb->rdv, elem);
	cs[5] = conc_select_recv(NULL, &junk[2]);
	cs[6] = conc_select_timer(conc_deadline_forever());
	size_t at = 0;
	for (size_t j = NB_CASES - 1; j > 0; j--) {
		size_t r = rng_below(&w->rng, j + 1);
		struct conc_select_case t = cs[j];
		cs[j] = cs[r];
		cs[r] = t;
		at = at == j ? r : at == r ? j : at;
	}
	return at;
}

static void *nb_main(void *arg)
{
	struct worker *w = arg;
	struct nb *nb = w->shared;
	size_t *last_a = fifo_table(NB_WORKERS), *last_s = fifo_table(NB_WORKERS + 1);
	pthread_barrier_wait(w->start);
	for (size_t step = 0; step < nb->n && !atomic_load(&failed_flag); step++) {
		struct conc_select_case cs[NB_CASES];
		uint64_t out, junk[3], v;
		size_t at, i;
		enum conc_status s;
		if (rng_below(&w->rng, 2)) {
			v = CONC_TEST_ITEM(w->id, w->moved[NB_A]);
			if ((s = conc_chan_send(nb->a, &v)) != CONC_OK) {
				fail("send into A gave %s", conc_strerror(s));
				break;
			}
			w->moved[NB_A]++;
			at = nb_cases(w, cs, conc_select_recv(nb->a, &out), junk, &v);
			s = do_select(cs, NB_CASES, random_flags(&w->rng), true, conc_deadline_poll(), NULL, &i);
			if (s != CONC_OK || i != at) {
				atomic_fetch_add(&nb->misses, 1);
				fail("try with a receive ready throughout gave %s, case %zu (not %zu)",
				     conc_strerror(s), i, at);
				break;
			}
			take_item(&nb->la, last_a, out);
		} else {
			if ((s = conc_chan_recv(nb->s, &out)) != CONC_OK) {
				fail("receive from S gave %s", conc_strerror(s));
				break;
			}
			take_item(&nb->ls, last_s, out);
			v = CONC_TEST_ITEM(w->id, w->moved[NB_S]);
			at = nb_cases(w, cs, conc_select_send(nb->s, &v), junk, &v);
			s = do_select(cs, NB_CASES, random_flags(&w->rng), true, conc_deadline_poll(), NULL, &i);
			if (s != CONC_OK || i != at) {
				atomic_fetch_add(&nb->misses, 1);
				fail("try with a send ready throughout gave %s, case %zu (not %zu)", conc_strerror(s),
				     i, at);
				break;
			}
			w->moved[NB_S]++;
		}
	}
	free(last_a);
	free(last_s);
	return NULL;
}

static void scenario_try(size_t unused)
{
	(void)unused;
	struct nb nb;
	memset(&nb, 0, sizeof nb);
	nb.n = SIZED(300000, 100000);
	atomic_init(&nb.misses, 0);
	if (!make_chan(&nb.a, NB_CAP) || !make_chan(&nb.s, NB_CAP) || !make_chan(&nb.empty, 4) ||
	    !make_chan(&nb.full, 1) || !make_chan(&nb.rdv, 0))
		return;
	conc_test_ledger_init(&nb.la, NB_WORKERS, nb.n);
	conc_test_ledger_init(&nb.ls, NB_WORKERS + 1, nb.n > NB_CAP ? nb.n : NB_CAP);
	uint64_t v = CONC_TEST_ITEM(NB_WORKERS, 0);
	if (conc_chan_try_send(nb.full, &v) != CONC_OK)
		fail("filling the full channel failed");
	for (size_t i = 0; i < NB_CAP; i++) {
		v = CONC_TEST_ITEM(NB_WORKERS, i);
		if (conc_chan_try_send(nb.s, &v) != CONC_OK)
			fail("prefilling S failed");
	}
	struct worker w[NB_WORKERS];
	for (size_t t = 0; t < NB_WORKERS; t++) {
		w[t].fn = nb_main; /* each worker both sends and receives */
		w[t].id = t;
	}
	run_crew(w, NB_WORKERS, &nb, 700);

	/* What S still holds is one more consumer's. */
	size_t *last = fifo_table(NB_WORKERS + 1), left = 0;
	enum conc_status s;
	while ((s = conc_chan_try_recv(nb.s, &v)) == CONC_OK) {
		take_item(&nb.ls, last, v);
		left++;
	}
	free(last);
	if (!atomic_load(&failed_flag)) {
		if (left != NB_CAP)
			fail("S holds %zu items after the run, not %d", left, NB_CAP);
		if ((s = conc_chan_try_recv(nb.a, &v)) != CONC_EMPTY)
			fail("A after the run: try_recv gave %s", conc_strerror(s));
		size_t sent_a = 0, sent_s = NB_CAP;
		for (size_t t = 0; t < NB_WORKERS; t++) {
			sent_a += w[t].moved[NB_A];
			sent_s += w[t].moved[NB_S];
		}
		size_t missing_a = conc_test_ledger_missing(&nb.la), missing_s = conc_test_ledger_missing(&nb.ls);
		if (missing_a != NB_WORKERS * nb.n - sent_a)
			fail("A: %zu items sent, %zu never arrived", sent_a, missing_a - (NB_WORKERS * nb.n - sent_a));
		if (missing_s != (NB_WORKERS + 1) * nb.ls.per_producer - sent_s)
			fail("S: %zu items sent, %zu never arrived", sent_s,
			     missing_s - ((NB_WORKERS + 1) * nb.ls.per_producer - sent_s));
	}
	struct conc_chan *chans[] = {nb.a, nb.s, nb.empty, nb.full, nb.rdv};
	free_chans(chans, sizeof chans / sizeof chans[0]);
	note("%zu steps per worker, %zu misses", nb.n, atomic_load(&nb.misses));
	conc_test_ledger_free(&nb.la);
	conc_test_ledger_free(&nb.ls);
}

/* ----------------------------------------------------------------- main */

static const struct scenario scenarios[] = {
	{"select stress", scenario_select_stress, 0},
	{"fan-in, 1 consumer", scenario_fan_in, 1},
	{"fan-in, 2 consumers", scenario_fan_in, 2},
	{"rendezvous MPMC", scenario_rendezvous, 0},
	{"close racing select", scenario_rounds, 0},
	{"cancel racing select", scenario_rounds, 1},
	{"timers under load", scenario_timers, 0},
	{"try never misses", scenario_try, 0},
	{"wake pass-on", scenario_pass_on, 0},
};

int main(void)
{
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], STRESS_PARKER);
}
