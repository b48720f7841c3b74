/* SPDX-License-Identifier: MIT */
/*
 * stress-fan: fan-in and fan-out under load, as a plain program (Criterion
 * does not start under ThreadSanitizer).  Every scenario runs more threads
 * than cores and checks, with the ledger of util.h, that every item arrives
 * exactly once, with the right origin, and (through a merge) in its
 * producer's order.
 *
 *   merge order       6 producers on 6 inputs (capacities 0, 1, 2, 3, 8, 64)
 *                     merged by one receiver with recv, try_recv and
 *                     recv_until with short deadlines and contexts
 *   pump relay        the same inputs forwarded by one pump thread (restarted
 *                     on short deadlines, so elements in hand carry over) into
 *                     a tagged output read by 3 consumers
 *   fan-out/fan-in    3 producers, 12 workers on one input, per-worker
 *                     outputs merged back: the origin is the worker
 *   close/cancel race rounds of producers closing their inputs at random
 *                     points while a context under the merge is canceled at
 *                     a random point; the merge resumes and drains
 *   fan-out storm     rounds of 1..8 workers, fn failing at random, a cancel
 *                     at a random point: every item is handled, dropped or
 *                     left in the input, the error is one that was raised,
 *                     and the output is closed
 *
 * No sleep stands in for synchronisation, and no timing is asserted.  Seed,
 * scale, verbosity and scenario selection as in the other stress programs
 * (CONC_STRESS_SEED, CONC_STRESS_SCALE, CONC_STRESS_VERBOSE,
 * CONC_STRESS_ONLY).
 */

#include "conc.h"

#include "util.h"

#define STRESS_PROG "stress-fan"
#include "stress.h"

#define INPUTS 6
static const size_t input_caps[INPUTS] = {0, 1, 2, 3, 8, 64};

/* --------------------------------------------------------------- producers */

struct producer {
	struct conc_chan *ch;
	size_t id, count;
	bool close_at_end;
	size_t close_after; /* close_at_end: close after this many (random) */
	atomic_size_t sent;
	pthread_barrier_t *start;
	pthread_t thread;
};

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	if (p->start)
		pthread_barrier_wait(p->start);
	size_t n = p->close_at_end ? p->close_after : p->count;
	for (size_t k = 0; k < n; k++) {
		uint64_t v = CONC_TEST_ITEM(p->id, k);
		enum conc_status s = conc_chan_send(p->ch, &v);
		if (s != CONC_OK) {
			fail("producer %zu: send gave %s", p->id, conc_strerror(s));
			break;
		}
		atomic_store(&p->sent, k + 1);
	}
	if (p->close_at_end && conc_chan_close(p->ch) != CONC_OK)
		fail("producer %zu: close failed", p->id);
	return NULL;
}

static void new_inputs(struct conc_chan **in)
{
	for (size_t i = 0; i < INPUTS; i++)
		if (conc_chan_new(&in[i], input_caps[i], sizeof(uint64_t)) != CONC_OK) {
			fprintf(stderr, STRESS_PROG ": conc_chan_new failed\n");
			exit(2);
		}
}

static void free_inputs(struct conc_chan **in, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (conc_chan_free(in[i]) != CONC_OK)
			fail("conc_chan_free of input %zu failed", i);
}

static void start_producers(struct producer *p, struct conc_chan **in, size_t per, pthread_barrier_t *b)
{
	for (size_t i = 0; i < INPUTS; i++) {
		p[i].ch = in[i];
		p[i].id = i;
		p[i].count = per;
		p[i].close_at_end = true;
		p[i].close_after = per;
		atomic_init(&p[i].sent, 0);
		p[i].start = b;
		spawn(&p[i].thread, producer_main, &p[i]);
	}
}

static size_t *fifo_table(size_t n)
{
	size_t *last = xcalloc(n, sizeof *last);
	for (size_t i = 0; i < n; i++)
		last[i] = SIZE_MAX;
	return last;
}

/* One merged item: exactly once, from its producer's input, in order. */
static void take(struct conc_test_ledger *l, size_t *last, uint64_t v, size_t from)
{
	if (conc_test_ledger_mark(l, v) != 0)
		fail("item p%zu #%zu received twice (or never sent)", CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v));
	else if (CONC_TEST_PRODUCER(v) != from)
		fail("item of input %zu reported from input %zu", CONC_TEST_PRODUCER(v), from);
	else if (!conc_test_fifo_ok(last, v))
		fail("order: p%zu #%zu after #%zu", CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v), last[from]);
}

/* ------------------------------------------------------------- merge order */

static void scenario_merge_order(size_t arg)
{
	(void)arg;
	size_t per = SIZED(40000, 4000);
	struct conc_chan *in[INPUTS];
	new_inputs(in);
	struct conc_fan_in *m;
	if (conc_fan_in_new(&m, in, INPUTS) != CONC_OK) {
		fail("conc_fan_in_new failed");
		return;
	}
	struct conc_test_ledger l;
	conc_test_ledger_init(&l, INPUTS, per);
	size_t *last = fifo_table(INPUTS);
	pthread_barrier_t b;
	barrier_init(&b, INPUTS + 1);
	struct producer p[INPUTS];
	start_producers(p, in, per, &b);
	pthread_barrier_wait(&b);
	struct rng r = rng_for(1);
	size_t got = 0, timeouts = 0, empties = 0;
	for (;;) {
		uint64_t v;
		size_t from = SIZE_MAX;
		enum conc_status s;
		size_t how = rng_below(&r, 8);
		if (how == 0) {
			s = conc_fan_in_try_recv(m, &v, &from);
			if (s == CONC_EMPTY) {
				empties++;
				conc_yield();
				continue;
			}
		} else if (how == 1) {
			struct conc_ctx ctx;
			if (conc_ctx_init(&ctx, NULL, stress_short_deadline(&r)) != CONC_OK)
				fail("conc_ctx_init failed");
			s = conc_fan_in_recv_until(m, &v, &from, conc_deadline_forever(), &ctx);
			if (conc_ctx_destroy(&ctx) != CONC_OK)
				fail("conc_ctx_destroy after the call failed");
		} else if (how == 2) {
			s = conc_fan_in_recv_until(m, &v, &from, stress_short_deadline(&r), NULL);
		} else {
			s = conc_fan_in_recv(m, &v, &from);
		}
		if (s == CONC_TIMEDOUT) {
			timeouts++;
			continue;
		}
		if (s == CONC_CLOSED)
			break;
		if (s != CONC_OK) {
			fail("merge receive gave %s", conc_strerror(s));
			break;
		}
		take(&l, last, v, from);
		got++;
	}
	for (size_t i = 0; i < INPUTS; i++) {
		join(p[i].thread);
		if (conc_fan_in_count(m, i) != per)
			fail("input %zu: count %llu, sent %zu", i, (unsigned long long)conc_fan_in_count(m, i), per);
	}
	if (got != INPUTS * per || conc_test_ledger_missing(&l))
		fail("received %zu of %zu, %zu missing", got, INPUTS * per, conc_test_ledger_missing(&l));
	note("%zu items, %zu timeouts, %zu empty tries", got, timeouts, empties);
	pthread_barrier_destroy(&b);
	free(last);
	conc_test_ledger_free(&l);
	if (conc_fan_in_free(m) != CONC_OK)
		fail("conc_fan_in_free failed");
	free_inputs(in, INPUTS);
}

/* -------------------------------------------------------------- pump relay */

struct tagged CONC_FAN_TAGGED(uint64_t);

struct relay {
	struct conc_fan_in *m;
	struct conc_chan *out;
	struct conc_test_ledger ledger;
	atomic_size_t got;
	size_t restarts;
};

static void *pump_main(void *arg)
{
	struct relay *rl = arg;
	struct rng r = rng_for(2);
	enum conc_status s;
	/* Short deadlines and contexts: the pump gives up often, sometimes
	 * with an element in hand, and the next call must send it first. */
	for (;;) {
		if (rng_below(&r, 2)) {
			s = conc_fan_in_pump_until(rl->m, rl->out, stress_short_deadline(&r), NULL);
		} else {
			struct conc_ctx ctx;
			if (conc_ctx_init(&ctx, NULL, stress_short_deadline(&r)) != CONC_OK)
				fail("conc_ctx_init failed");
			s = conc_fan_in_pump_until(rl->m, rl->out, conc_deadline_forever(), &ctx);
			if (conc_ctx_destroy(&ctx) != CONC_OK)
				fail("conc_ctx_destroy after the pump failed");
		}
		if (s != CONC_TIMEDOUT)
			break;
		rl->restarts++;
	}
	if (s != CONC_OK)
		fail("pump gave %s", conc_strerror(s));
	return NULL;
}

static void *relay_consumer(void *arg)
{
	struct relay *rl = arg;
	size_t *last = fifo_table(INPUTS);
	struct tagged t;
	enum conc_status s;
	while ((s = conc_chan_recv(rl->out, &t)) == CONC_OK) {
		if (t.origin >= INPUTS)
			fail("origin %llu out of range", (unsigned long long)t.origin);
		else
			take(&rl->ledger, last, t.item, (size_t)t.origin);
		atomic_fetch_add(&rl->got, 1);
	}
	if (s != CONC_CLOSED)
		fail("consumer recv gave %s", conc_strerror(s));
	free(last);
	return NULL;
}

static void scenario_pump_relay(size_t arg)
{
	(void)arg;
	enum { CONSUMERS = 3 };
	size_t per = SIZED(20000, 2000);
	struct conc_chan *in[INPUTS];
	new_inputs(in);
	struct relay rl;
	atomic_init(&rl.got, 0);
	rl.restarts = 0;
	if (conc_fan_in_new(&rl.m, in, INPUTS) != CONC_OK || conc_chan_new(&rl.out, 4, sizeof(struct tagged)) != CONC_OK) {
		fail("setup failed");
		return;
	}
	conc_test_ledger_init(&rl.ledger, INPUTS, per);
	struct producer p[INPUTS];
	start_producers(p, in, per, NULL);
	pthread_t pump, cons[CONSUMERS];
	spawn(&pump, pump_main, &rl);
	for (size_t c = 0; c < CONSUMERS; c++)
		spawn(&cons[c], relay_consumer, &rl);
	for (size_t i = 0; i < INPUTS; i++)
		join(p[i].thread);
	join(pump);
	for (size_t c = 0; c < CONSUMERS; c++)
		join(cons[c]);
	if (atomic_load(&rl.got) != INPUTS * per || conc_test_ledger_missing(&rl.ledger))
		fail("relayed %zu of %zu", atomic_load(&rl.got), INPUTS * per);
	if (conc_fan_in_pending(rl.m))
		fail("an element left in hand");
	note("%zu items, %zu pump restarts", atomic_load(&rl.got), rl.restarts);
	conc_test_ledger_free(&rl.ledger);
	if (conc_fan_in_free(rl.m) != CONC_OK || conc_chan_free(rl.out) != CONC_OK)
		fail("free failed");
	free_inputs(in, INPUTS);
}

/* ---------------------------------------------------------- fan-out/fan-in */

/* Forward the item as (worker << 48 | item): the merge's origin must be
 * the worker. */
static int tag_worker(void *arg, struct conc_ctx *ctx, size_t worker, void *item, struct conc_chan *out)
{
	(void)arg;
	uint64_t v;
	memcpy(&v, item, sizeof v);
	v |= (uint64_t)worker << 48;
	return (int)conc_chan_send_until(out, &v, conc_deadline_forever(), ctx);
}

static void scenario_fan_out_in(size_t arg)
{
	(void)arg;
	enum { PRODUCERS = 3, WORKERS = 12 };
	size_t per = SIZED(30000, 3000);
	struct conc_chan *in, *outs[WORKERS];
	if (conc_chan_new(&in, 8, sizeof(uint64_t)) != CONC_OK) {
		fail("setup failed");
		return;
	}
	for (size_t w = 0; w < WORKERS; w++)
		if (conc_chan_new(&outs[w], w % 3, sizeof(uint64_t)) != CONC_OK) {
			fail("setup failed");
			return;
		}
	struct conc_fan_out *f;
	struct conc_fan_out_fns fns = {tag_worker, NULL, NULL};
	struct conc_fan_in *m;
	if (conc_fan_out_start(&f, in, NULL, outs, WORKERS, &fns, NULL, 0) != CONC_OK ||
	    conc_fan_in_new(&m, outs, WORKERS) != CONC_OK) {
		fail("start failed");
		return;
	}
	struct producer p[PRODUCERS];
	for (size_t i = 0; i < PRODUCERS; i++) {
		p[i] = (struct producer){.ch = in, .id = i, .count = per};
		spawn(&p[i].thread, producer_main, &p[i]);
	}
	/* The last producer to finish closes the input: join, then close. */
	struct conc_test_ledger l;
	conc_test_ledger_init(&l, PRODUCERS, per);
	size_t got = 0, closed_in = 0;
	uint64_t v;
	size_t from;
	enum conc_status s;
	for (;;) {
		if (!closed_in && got >= PRODUCERS * per) {
			for (size_t i = 0; i < PRODUCERS; i++)
				join(p[i].thread);
			(void)conc_chan_close(in);
			closed_in = 1;
		}
		s = conc_fan_in_recv(m, &v, &from);
		if (s != CONC_OK)
			break;
		if ((size_t)(v >> 48) != from)
			fail("item from worker %zu reported from %zu", (size_t)(v >> 48), from);
		v &= (UINT64_C(1) << 48) - 1;
		if (conc_test_ledger_mark(&l, v) != 0)
			fail("item p%zu #%zu twice", CONC_TEST_PRODUCER(v), CONC_TEST_SEQ(v));
		got++;
	}
	if (s != CONC_CLOSED)
		fail("merge gave %s", conc_strerror(s));
	int err = -1;
	if (conc_fan_out_wait(f, &err) != CONC_OK || err != 0)
		fail("fan-out wait: err %d", err);
	uint64_t handled = 0;
	for (size_t w = 0; w < WORKERS; w++) {
		handled += conc_fan_out_count(f, w);
		if (conc_fan_out_count(f, w) != conc_fan_in_count(m, w))
			fail("worker %zu handled %llu, merged %llu", w, (unsigned long long)conc_fan_out_count(f, w),
			     (unsigned long long)conc_fan_in_count(m, w));
	}
	if (got != PRODUCERS * per || handled != got || conc_test_ledger_missing(&l))
		fail("got %zu, handled %llu, of %zu", got, (unsigned long long)handled, PRODUCERS * per);
	note("%zu items through %d workers", got, WORKERS);
	conc_test_ledger_free(&l);
	if (conc_fan_in_free(m) != CONC_OK || conc_fan_out_free(f) != CONC_OK)
		fail("free failed");
	free_inputs(outs, WORKERS);
	(void)conc_chan_free(in);
}

/* -------------------------------------------------------- close/cancel race */

struct canceler {
	struct conc_ctx *ctx;
	struct rng r;
	pthread_barrier_t *start;
};

static void *canceler_main(void *arg)
{
	struct canceler *c = arg;
	pthread_barrier_wait(c->start);
	spin_random(&c->r);
	(void)conc_ctx_cancel(c->ctx, 0);
	return NULL;
}

static void scenario_close_cancel_race(size_t arg)
{
	(void)arg;
	size_t rounds = SIZED(2000, 200), per = 64;
	size_t cancels = 0;
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		struct rng r = rng_for(100 + round);
		struct conc_chan *in[INPUTS];
		new_inputs(in);
		struct conc_fan_in *m;
		if (conc_fan_in_new(&m, in, INPUTS) != CONC_OK) {
			fail("conc_fan_in_new failed");
			return;
		}
		struct conc_ctx ctx;
		if (conc_ctx_init_root(&ctx) != CONC_OK)
			fail("conc_ctx_init failed");
		pthread_barrier_t b;
		barrier_init(&b, INPUTS + 2);
		struct producer p[INPUTS];
		start_producers(p, in, per, &b);
		for (size_t i = 0; i < INPUTS; i++)
			p[i].close_after = rng_below(&r, per + 1); /* read after the barrier */
		struct canceler c = {&ctx, rng_for(7 + round), &b};
		pthread_t ct;
		spawn(&ct, canceler_main, &c);
		struct conc_test_ledger l;
		conc_test_ledger_init(&l, INPUTS, per);
		size_t *last = fifo_table(INPUTS);
		pthread_barrier_wait(&b);
		bool canceled = false;
		enum conc_status s;
		uint64_t v;
		size_t from;
		for (;;) {
			s = conc_fan_in_recv_until(m, &v, &from, conc_deadline_forever(), canceled ? NULL : &ctx);
			if (s == CONC_CANCELED && !canceled) {
				canceled = true;
				cancels++;
				continue;
			}
			if (s != CONC_OK)
				break;
			take(&l, last, v, from);
		}
		if (s != CONC_CLOSED)
			fail("round %zu: merge ended with %s", round, conc_strerror(s));
		join(ct);
		size_t expected = 0;
		for (size_t i = 0; i < INPUTS; i++) {
			join(p[i].thread);
			size_t sent = atomic_load(&p[i].sent);
			expected += sent;
			if (conc_fan_in_count(m, i) != sent)
				fail("round %zu: input %zu sent %zu, merged %llu", round, i, sent,
				     (unsigned long long)conc_fan_in_count(m, i));
		}
		if (conc_test_ledger_missing(&l) != INPUTS * per - expected)
			fail("round %zu: items lost", round);
		pthread_barrier_destroy(&b);
		free(last);
		conc_test_ledger_free(&l);
		if (conc_ctx_destroy(&ctx) != CONC_OK || conc_fan_in_free(m) != CONC_OK)
			fail("round %zu: teardown failed", round);
		free_inputs(in, INPUTS);
	}
	note("%zu rounds, %zu merges canceled", rounds, cancels);
}

/* ---------------------------------------------------------- fan-out storm */

struct storm {
	struct rng r[8];
	uint64_t fail_code;     /* the code fn fails with: 1000 + item */
	size_t fail_on;         /* the item that fails; SIZE_MAX: none */
	atomic_size_t dropped;
	atomic_size_t handled;
};

static int storm_fn(void *arg, struct conc_ctx *ctx, size_t worker, void *item, struct conc_chan *out)
{
	struct storm *st = arg;
	uint64_t v;
	memcpy(&v, item, sizeof v);
	atomic_fetch_add(&st->handled, 1);
	if (CONC_TEST_SEQ(v) == st->fail_on)
		return (int)(1000 + CONC_TEST_SEQ(v));
	if (worker % 3 == 0)
		conc_yield();
	return (int)conc_chan_send_until(out, &v, conc_deadline_forever(), ctx);
}

static void storm_drop(void *arg, void *item)
{
	(void)item;
	atomic_fetch_add(&((struct storm *)arg)->dropped, 1);
}

static void scenario_fan_out_storm(size_t arg)
{
	(void)arg;
	size_t rounds = SIZED(1500, 150), per = 200;
	size_t errors = 0, cancels = 0, drops = 0;
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		struct rng r = rng_for(5000 + round);
		size_t workers = 1 + rng_below(&r, 8);
		struct conc_chan *in, *out;
		if (conc_chan_new(&in, per, sizeof(uint64_t)) != CONC_OK ||
		    conc_chan_new(&out, per, sizeof(uint64_t)) != CONC_OK) {
			fail("setup failed");
			return;
		}
		struct storm st;
		st.fail_on = rng_below(&r, 3) == 0 ? rng_below(&r, per) : SIZE_MAX;
		atomic_init(&st.dropped, 0);
		atomic_init(&st.handled, 0);
		struct conc_ctx parent;
		if (conc_ctx_init_root(&parent) != CONC_OK)
			fail("conc_ctx_init failed");
		bool under_parent = rng_below(&r, 2);
		struct conc_fan_out *f;
		struct conc_fan_out_fns fns = {storm_fn, storm_drop, &st};
		if (conc_fan_out_start(&f, in, out, NULL, workers, &fns, under_parent ? &parent : NULL, 0) !=
		    CONC_OK) {
			fail("start failed");
			return;
		}
		pthread_barrier_t b;
		barrier_init(&b, 2);
		struct producer p = {.ch = in, .id = 0, .count = per, .close_at_end = true, .close_after = per,
				     .start = &b};
		atomic_init(&p.sent, 0);
		spawn(&p.thread, producer_main, &p);
		/* None, the fan-out (cause 77) or its parent (cause 88), at a
		 * random point while the workers run. */
		size_t cancel = rng_below(&r, 3);
		pthread_barrier_wait(&b);
		spin_random(&r);
		if (cancel == 1)
			(void)conc_fan_out_cancel(f, 77);
		else if (cancel == 2)
			(void)conc_ctx_cancel(&parent, 88);
		int err = -1;
		if (conc_fan_out_wait(f, &err) != CONC_OK)
			fail("round %zu: wait failed", round);
		join(p.thread);
		size_t left = 0, outs = 0;
		uint64_t v;
		while (conc_chan_try_recv(in, &v) == CONC_OK)
			left++;
		enum conc_status s;
		while ((s = conc_chan_try_recv(out, &v)) == CONC_OK)
			outs++;
		if (s != CONC_CLOSED)
			fail("round %zu: output not closed (%s)", round, conc_strerror(s));
		size_t handled = atomic_load(&st.handled), dropped = atomic_load(&st.dropped);
		uint64_t counted = 0;
		for (size_t w = 0; w < workers; w++)
			counted += conc_fan_out_count(f, w);
		if (handled + dropped + left != per || counted != handled || outs > handled)
			fail("round %zu: %zu sent, %zu handled (%llu counted), %zu dropped, %zu left, %zu out", round,
			     per, handled, (unsigned long long)counted, dropped, left, outs);
		bool ok_err = err == 0 || (cancel == 1 && err == 77) || (cancel == 2 && under_parent && err == 88) ||
			      (st.fail_on != SIZE_MAX && err == (int)(1000 + st.fail_on));
		if (!ok_err)
			fail("round %zu: error %d (cancel %zu, parent %d, failing item %zu)", round, err, cancel,
			     under_parent, st.fail_on);
		if (err == 0 && (outs != per || handled != per))
			fail("round %zu: no error but %zu of %zu results", round, outs, per);
		errors += err >= 1000;
		cancels += err == 77 || err == 88;
		drops += dropped;
		pthread_barrier_destroy(&b);
		if (conc_fan_out_free(f) != CONC_OK || conc_ctx_destroy(&parent) != CONC_OK)
			fail("round %zu: teardown failed", round);
		(void)conc_chan_free(in);
		(void)conc_chan_free(out);
	}
	note("%zu rounds: %zu fn errors, %zu cancels, %zu elements dropped", rounds, errors, cancels, drops);
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"merge order", scenario_merge_order, 0},
		{"pump relay", scenario_pump_relay, 0},
		{"fan-out/fan-in", scenario_fan_out_in, 0},
		{"close/cancel race", scenario_close_cancel_race, 0},
		{"fan-out storm", scenario_fan_out_storm, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
