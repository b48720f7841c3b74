/* SPDX-License-Identifier: MIT */
/*
 * Graceful shutdown (conc/shutdown.h): registration, the reverse-order stop
 * run and its report, drain deadlines, waiting (deadline, context, trigger
 * and signal from other threads, the converter handoff), signal ownership
 * and restoration, the second signal's exit (in a forked child), and bad
 * input.  Criterion runs each test in its own process, so signal
 * dispositions do not leak between tests.  No test times anything or
 * sleeps: "while it is blocked" steps wait until the thread is parked.
 */
#include "conc.h"

#include <criterion/criterion.h>
#include <sys/wait.h>

#include "util.h"

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	cr_assert_eq(pthread_create(t, NULL, fn, arg), 0, "pthread_create");
}

static void join(pthread_t t)
{
	cr_assert_eq(pthread_join(t, NULL), 0, "pthread_join");
}

/* ------------------------------------------------------------- components */

#define MAXC 8

struct rec {
	size_t order[MAXC];         /* which component ran k-th */
	struct conc_deadline got[MAXC];
	_Atomic(size_t) n;
};

struct comp {
	struct rec *rec;
	size_t id;
	enum conc_status ret;     /* what stop returns */
	bool wait_deadline;       /* wait (on a context) until the drain deadline first */
	struct conc_shutdown *sd; /* for the calls made from inside stop */
	enum conc_status reg;     /* what a register from inside stop returned */
	enum conc_status destroy; /* what a destroy from inside stop returned */
	size_t reported;          /* what a report from inside stop returned */
	bool raise_term;          /* raise SIGTERM from inside stop */
};

static enum conc_status comp_stop(void *arg, struct conc_deadline drain)
{
	struct comp *c = arg;
	size_t k = atomic_fetch_add(&c->rec->n, 1);
	c->rec->order[k] = c->id;
	c->rec->got[k] = drain;
	if (c->wait_deadline) {
		struct conc_ctx ctx;
		cr_assert_eq(conc_ctx_init(&ctx, NULL, drain), CONC_OK);
		cr_assert_eq(conc_ctx_wait_until(&ctx, conc_deadline_forever()), CONC_TIMEDOUT);
		cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	}
	if (c->sd) {
		c->reg = conc_shutdown_register(c->sd, "late", comp_stop, c);
		c->destroy = conc_shutdown_destroy(c->sd);
		struct conc_shutdown_result r[MAXC];
		c->reported = conc_shutdown_report(c->sd, r, MAXC);
	}
	if (c->raise_term)
		raise(SIGTERM);
	return c->ret;
}

static const char *names[MAXC] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};

static void setup(struct conc_shutdown *sd, struct conc_shutdown_slot *slots, struct comp *c, struct rec *rec,
		  size_t n)
{
	memset(rec, 0, sizeof *rec);
	cr_assert_eq(conc_shutdown_init(sd, slots, MAXC), CONC_OK);
	for (size_t i = 0; i < n; i++) {
		memset(&c[i], 0, sizeof c[i]);
		c[i].rec = rec;
		c[i].id = i;
		c[i].ret = CONC_OK;
		cr_assert_eq(conc_shutdown_register(sd, names[i], comp_stop, &c[i]), CONC_OK);
	}
}

/* ------------------------------------------------------------ bad input */

Test(shutdown, bad_input, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[2];
	cr_assert_eq(conc_shutdown_init(NULL, slots, 2), CONC_INVALID);
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 2), CONC_INVALID);
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK, "no components: no slots needed");
	cr_assert_eq(conc_shutdown_register(&sd, "x", comp_stop, NULL), CONC_FULL);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);

	cr_assert_eq(conc_shutdown_register(NULL, "x", comp_stop, NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_trigger(NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_shutdown_wait_until(NULL, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_wait(NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_run(NULL, conc_deadline_forever()), CONC_INVALID);
	cr_assert_eq(conc_shutdown_report(NULL, NULL, 0), 0);
	cr_assert_eq(conc_shutdown_destroy(NULL), CONC_INVALID);
	cr_assert_null(conc_shutdown_ctx(NULL));
	cr_assert_eq(conc_shutdown_signal(NULL), 0);
	static const int sigs[] = {SIGTERM};
	cr_assert_eq(conc_shutdown_signals(NULL, sigs, 1), CONC_INVALID);

	/* A destroyed shutdown refuses everything (its memory left alone). */
	cr_assert_eq(conc_shutdown_register(&sd, "x", comp_stop, NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_trigger(&sd, 0), CONC_INVALID);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_poll(), NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_forever()), CONC_INVALID);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_INVALID);
	cr_assert_null(conc_shutdown_ctx(&sd));
	cr_assert_eq(conc_shutdown_signals(&sd, sigs, 1), CONC_INVALID);

	cr_assert_eq(conc_shutdown_init(&sd, slots, 2), CONC_OK);
	cr_assert_eq(conc_shutdown_register(&sd, NULL, comp_stop, NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_register(&sd, "x", NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_shutdown_register(&sd, "a", comp_stop, NULL), CONC_OK);
	cr_assert_eq(conc_shutdown_register(&sd, "b", comp_stop, NULL), CONC_OK);
	cr_assert_eq(conc_shutdown_register(&sd, "c", comp_stop, NULL), CONC_FULL, "too many components");
	struct conc_shutdown_result r;
	cr_assert_eq(conc_shutdown_report(&sd, NULL, 1), 0);
	cr_assert_eq(conc_shutdown_report(&sd, &r, 1), 0, "nothing stopped yet");
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, cause_encoding, .timeout = 60)
{
	cr_assert_eq(conc_shutdown_cause_signal(CONC_SHUTDOWN_SIGNAL_CAUSE(SIGTERM)), SIGTERM);
	cr_assert_eq(conc_shutdown_cause_signal(CONC_SHUTDOWN_SIGNAL_CAUSE(SIGINT)), SIGINT);
	cr_assert_eq(conc_shutdown_cause_signal(CONC_CANCELED), 0);
	cr_assert_eq(conc_shutdown_cause_signal(0), 0);
	cr_assert_eq(conc_shutdown_cause_signal(-5), 0);
	cr_assert_eq(conc_shutdown_cause_signal(12345), 0);
}

/* ---------------------------------------------------------- registration */

Test(shutdown, register_closes_at_trigger, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 2);
	cr_assert_eq(conc_shutdown_trigger(&sd, 77), CONC_OK);
	cr_assert_eq(conc_shutdown_register(&sd, "late", comp_stop, &c[0]), CONC_CLOSED);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_forever()), CONC_OK);
	cr_assert_eq(atomic_load(&rec.n), 2, "only the components registered before the trigger");
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, register_closes_when_root_canceled_directly, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 1);
	cr_assert_eq(conc_ctx_cancel(conc_shutdown_ctx(&sd), 5), CONC_OK);
	cr_assert_eq(conc_shutdown_register(&sd, "late", comp_stop, &c[0]), CONC_CLOSED);
	cr_assert_eq(conc_shutdown_trigger(&sd, 6), CONC_CANCELED, "already started");
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_forever()), CONC_OK);
	cr_assert_eq(conc_ctx_cause(conc_shutdown_ctx(&sd)), 5);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, register_after_run_and_from_stop, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 3);
	c[0].sd = &sd; /* stopped last: sees two results before it */
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_forever()), CONC_OK);
	cr_assert_eq(c[0].reg, CONC_CLOSED, "register from a stop function");
	cr_assert_eq(c[0].destroy, CONC_BUSY, "destroy while run runs");
	cr_assert_eq(c[0].reported, 2, "report during run shows the components stopped so far");
	cr_assert_eq(conc_shutdown_register(&sd, "late", comp_stop, &c[0]), CONC_CLOSED);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

/* ------------------------------------------------------------------ run */

Test(shutdown, trigger_cancels_root_and_descendants, .timeout = 60)
{
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	struct conc_ctx child;
	cr_assert_eq(conc_ctx_init(&child, conc_shutdown_ctx(&sd), conc_deadline_forever()), CONC_OK);
	cr_assert_eq(conc_ctx_err(&child), CONC_OK);
	cr_assert_eq(conc_shutdown_trigger(&sd, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_trigger(&sd, 9), CONC_CANCELED);
	cr_assert_eq(conc_ctx_err(&child), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(&child), CONC_CANCELED, "cause 0 means CONC_CANCELED");
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_BUSY, "the root still has a child");
	cr_assert_eq(conc_ctx_destroy(&child), CONC_OK);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, run_stops_in_reverse_order_with_one_deadline, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 5);
	struct conc_deadline drain = conc_deadline_in_ms(60000);
	cr_assert_eq(conc_shutdown_run(&sd, drain), CONC_OK);
	cr_assert_eq(conc_ctx_err(conc_shutdown_ctx(&sd)), CONC_CANCELED, "run triggers");
	cr_assert_eq(conc_ctx_cause(conc_shutdown_ctx(&sd)), CONC_CANCELED);
	cr_assert_eq(atomic_load(&rec.n), 5);
	for (size_t k = 0; k < 5; k++) {
		cr_assert_eq(rec.order[k], 4 - k, "stop %zu was component %zu", k, rec.order[k]);
		cr_assert_eq(rec.got[k].ns, drain.ns, "every stop gets the same drain deadline");
	}
	struct conc_shutdown_result r[MAXC];
	cr_assert_eq(conc_shutdown_report(&sd, r, MAXC), 5);
	int64_t prev = 0;
	for (size_t k = 0; k < 5; k++) {
		cr_assert_str_eq(r[k].name, names[4 - k]);
		cr_assert_eq(r[k].status, CONC_OK);
		cr_assert_not(r[k].missed);
		cr_assert_geq(r[k].finished_ns, prev, "finished in stop order");
		prev = r[k].finished_ns;
	}
	cr_assert_eq(conc_shutdown_report(&sd, r, 2), 5, "the count, even when only cap are written");
	cr_assert_eq(conc_shutdown_run(&sd, drain), CONC_BUSY, "the stops run once");
	cr_assert_eq(atomic_load(&rec.n), 5);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, run_reports_missed_deadlines, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 4);
	c[1].ret = CONC_TIMEDOUT;    /* says it missed */
	c[2].wait_deadline = true;   /* returns CONC_OK, but after the deadline */
	c[3].ret = CONC_REJECTED;    /* fails in time */
	struct conc_deadline drain = conc_deadline_in_ms(20);
	cr_assert_eq(conc_shutdown_run(&sd, drain), CONC_TIMEDOUT, "a miss wins over other failures");
	struct conc_shutdown_result r[MAXC];
	cr_assert_eq(conc_shutdown_report(&sd, r, MAXC), 4);
	cr_assert_str_eq(r[0].name, "c3");
	cr_assert_eq(r[0].status, CONC_REJECTED);
	cr_assert_not(r[0].missed);
	cr_assert_str_eq(r[1].name, "c2");
	cr_assert_eq(r[1].status, CONC_OK);
	cr_assert(r[1].missed, "finished at or after the deadline");
	cr_assert_geq(r[1].finished_ns, drain.ns);
	cr_assert_str_eq(r[2].name, "c1");
	cr_assert_eq(r[2].status, CONC_TIMEDOUT);
	cr_assert(r[2].missed);
	cr_assert_str_eq(r[3].name, "c0");
	cr_assert(r[3].missed, "called after the deadline passed: still called, and late");
	cr_assert_eq(atomic_load(&rec.n), 4, "every component is stopped, deadline or not");
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, run_returns_first_failure, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 3);
	c[0].ret = CONC_INVALID;
	c[1].ret = CONC_REJECTED; /* stopped before c0 */
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_forever()), CONC_REJECTED);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, run_with_passed_deadline_calls_every_stop, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 3);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_poll()), CONC_TIMEDOUT);
	struct conc_shutdown_result r[MAXC];
	cr_assert_eq(conc_shutdown_report(&sd, r, MAXC), 3);
	for (size_t k = 0; k < 3; k++)
		cr_assert(r[k].missed && r[k].status == CONC_OK);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, run_with_nothing_registered, .timeout = 60)
{
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_poll()), CONC_OK);
	cr_assert_eq(conc_ctx_err(conc_shutdown_ctx(&sd)), CONC_CANCELED);
	cr_assert_eq(conc_shutdown_report(&sd, NULL, 0), 0);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

/* ------------------------------------------------------------- waiting */

struct waiter_arg {
	struct conc_shutdown *sd;
	struct conc_ctx *ctx;
	struct conc_deadline d;
	enum conc_status result;
};

static void *waiter(void *p)
{
	struct waiter_arg *a = p;
	a->result = conc_shutdown_wait_until(a->sd, a->d, a->ctx);
	return NULL;
}

Test(shutdown, wait_deadline_and_context, .timeout = 60)
{
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_poll(), NULL), CONC_TIMEDOUT);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_in_ms(5), NULL), CONC_TIMEDOUT);
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init(&ctx, NULL, conc_deadline_in_ms(5)), CONC_OK);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_forever(), &ctx), CONC_TIMEDOUT,
		     "the context's deadline");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_forever(), &ctx), CONC_CANCELED);
	cr_assert_eq(conc_shutdown_trigger(&sd, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_poll(), NULL), CONC_OK, "started: at once");
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_forever(), &ctx), CONC_OK,
		     "a started shutdown wins over a done context");
	cr_assert_eq(conc_shutdown_wait(&sd), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, wait_canceled_from_another_thread, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_ctx ctx;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	struct waiter_arg a = {&sd, &ctx, conc_deadline_forever(), CONC_INVALID};
	pthread_t t;
	start(&t, waiter, &a);
	conc_test_wait_parked(&ctx.waiters, 1);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_BUSY, "a thread waits");
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	join(t);
	cr_assert_eq(a.result, CONC_CANCELED);
	cr_assert_eq(conc_ctx_err(conc_shutdown_ctx(&sd)), CONC_OK, "the shutdown did not start");
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, trigger_from_another_thread_wakes_every_waiter, .timeout = 60)
{
	enum { N = 6 };
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	struct waiter_arg a[N];
	pthread_t t[N];
	for (size_t i = 0; i < N; i++) {
		a[i] = (struct waiter_arg){&sd, NULL, conc_deadline_forever(), CONC_INVALID};
		start(&t[i], waiter, &a[i]);
	}
	conc_test_wait_parked(&sd.root.waiters, N);
	cr_assert_eq(conc_shutdown_trigger(&sd, 1234), CONC_OK);
	for (size_t i = 0; i < N; i++) {
		join(t[i]);
		cr_assert_eq(a[i].result, CONC_OK);
	}
	cr_assert_eq(conc_ctx_cause(conc_shutdown_ctx(&sd)), 1234);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

/* ------------------------------------------------------------- signals */

static const int term_int[] = {SIGTERM, SIGINT};

struct killer_arg {
	struct conc_waitq *q;
	size_t parked;
	int sig;
};

static void *killer(void *p)
{
	struct killer_arg *k = p;
	conc_test_wait_parked(k->q, k->parked);
	kill(getpid(), k->sig);
	return NULL;
}

Test(shutdown, signal_from_another_thread_wakes_the_waiter, .timeout = 60)
{
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_signals(&sd, term_int, 2), CONC_OK);
	struct killer_arg k = {&sd.root.waiters, 1, SIGTERM};
	pthread_t t;
	start(&t, killer, &k);
	cr_assert_eq(conc_shutdown_wait(&sd), CONC_OK);
	join(t);
	cr_assert_eq(conc_shutdown_signal(&sd), SIGTERM);
	int cause = conc_ctx_cause(conc_shutdown_ctx(&sd));
	cr_assert_eq(cause, CONC_SHUTDOWN_SIGNAL_CAUSE(SIGTERM));
	cr_assert_eq(conc_shutdown_cause_signal(cause), SIGTERM);
	cr_assert_eq(conc_shutdown_register(&sd, "late", comp_stop, NULL), CONC_CLOSED);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, signal_with_nobody_waiting_is_recorded, .timeout = 60)
{
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_signals(&sd, term_int, 2), CONC_OK);
	cr_assert_eq(raise(SIGINT), 0);
	cr_assert_eq(conc_shutdown_signal(&sd), SIGINT);
	cr_assert_eq(conc_ctx_err(conc_shutdown_ctx(&sd)), CONC_OK, "only a waiter turns it into cancellation");
	cr_assert_eq(conc_shutdown_wait_until(&sd, conc_deadline_poll(), NULL), CONC_OK);
	cr_assert_eq(conc_ctx_cause(conc_shutdown_ctx(&sd)), CONC_SHUTDOWN_SIGNAL_CAUSE(SIGINT));
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, run_turns_a_recorded_signal_into_the_cause, .timeout = 60)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[MAXC];
	struct comp c[MAXC];
	struct rec rec;
	setup(&sd, slots, c, &rec, 1);
	cr_assert_eq(conc_shutdown_signals(&sd, term_int, 2), CONC_OK);
	cr_assert_eq(raise(SIGTERM), 0);
	cr_assert_eq(conc_shutdown_run(&sd, conc_deadline_forever()), CONC_OK);
	cr_assert_eq(conc_ctx_cause(conc_shutdown_ctx(&sd)), CONC_SHUTDOWN_SIGNAL_CAUSE(SIGTERM));
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, converter_hands_off_when_it_leaves, .timeout = 60)
{
	/* Two waiters: A (with a context) and B (forever).  Whichever of them
	 * the handler would wake, A leaves first; the signal that comes after
	 * must still reach B. */
	for (int round = 0; round < 20; round++) {
		struct conc_shutdown sd;
		struct conc_ctx ctx;
		cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
		cr_assert_eq(conc_shutdown_signals(&sd, term_int, 2), CONC_OK);
		cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
		struct waiter_arg a = {&sd, &ctx, conc_deadline_forever(), CONC_INVALID};
		struct waiter_arg b = {&sd, NULL, conc_deadline_forever(), CONC_INVALID};
		pthread_t ta, tb;
		if (round % 2) {
			start(&ta, waiter, &a);
			conc_test_wait_parked(&sd.root.waiters, 1);
			start(&tb, waiter, &b);
		} else {
			start(&tb, waiter, &b);
			conc_test_wait_parked(&sd.root.waiters, 1);
			start(&ta, waiter, &a);
		}
		conc_test_wait_parked(&sd.root.waiters, 2);
		cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
		join(ta);
		cr_assert_eq(a.result, CONC_CANCELED);
		conc_test_wait_parked(&sd.root.waiters, 1);
		cr_assert_eq(kill(getpid(), SIGTERM), 0);
		join(tb);
		cr_assert_eq(b.result, CONC_OK);
		cr_assert_eq(conc_ctx_cause(conc_shutdown_ctx(&sd)), CONC_SHUTDOWN_SIGNAL_CAUSE(SIGTERM));
		cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
		cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
	}
}

Test(shutdown, signals_bad_input_changes_nothing, .timeout = 60)
{
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	struct sigaction before, after;
	cr_assert_eq(sigaction(SIGTERM, NULL, &before), 0);
	const int kill9[] = {SIGTERM, SIGKILL};
	const int stop[] = {SIGSTOP};
	const int zero[] = {SIGTERM, 0};
	const int neg[] = {-1};
	const int huge[] = {SIGTERM, 100000};
	const int dup[] = {SIGTERM, SIGINT, SIGTERM};
	const int many[CONC_SHUTDOWN_MAX_SIGNALS + 1] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGALRM,
							  SIGPIPE, SIGCHLD};
	cr_assert_eq(conc_shutdown_signals(&sd, NULL, 1), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, term_int, 0), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, many, CONC_SHUTDOWN_MAX_SIGNALS + 1), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, kill9, 2), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, stop, 1), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, zero, 2), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, neg, 1), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, huge, 2), CONC_INVALID);
	cr_assert_eq(conc_shutdown_signals(&sd, dup, 3), CONC_INVALID);
	cr_assert_eq(sigaction(SIGTERM, NULL, &after), 0);
	cr_assert_eq(after.sa_handler, before.sa_handler, "a refused call installs nothing");
	cr_assert_eq(conc_shutdown_signals(&sd, term_int, 2), CONC_OK, "and does not take ownership");
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
}

Test(shutdown, one_owner_at_a_time, .timeout = 60)
{
	struct conc_shutdown a, b;
	cr_assert_eq(conc_shutdown_init(&a, NULL, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_init(&b, NULL, 0), CONC_OK);
	cr_assert_eq(conc_shutdown_signals(&a, term_int, 2), CONC_OK);
	cr_assert_eq(conc_shutdown_signals(&a, term_int, 1), CONC_BUSY, "owns already");
	const int usr1[] = {SIGUSR1};
	cr_assert_eq(conc_shutdown_signals(&b, usr1, 1), CONC_BUSY, "another owns signals");
	cr_assert_eq(conc_shutdown_destroy(&a), CONC_OK);
	cr_assert_eq(conc_shutdown_signals(&b, term_int, 2), CONC_OK, "free again after destroy");
	cr_assert_eq(raise(SIGTERM), 0);
	cr_assert_eq(conc_shutdown_signal(&b), SIGTERM);
	cr_assert_eq(conc_shutdown_destroy(&b), CONC_OK);
}

static atomic_int usr1_seen;

static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&usr1_seen, 1);
}

Test(shutdown, destroy_restores_previous_handlers, .timeout = 60)
{
	struct sigaction mine;
	memset(&mine, 0, sizeof mine);
	mine.sa_handler = on_usr1;
	sigemptyset(&mine.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &mine, NULL), 0);
	struct conc_shutdown sd;
	cr_assert_eq(conc_shutdown_init(&sd, NULL, 0), CONC_OK);
	const int usr1[] = {SIGUSR1, SIGUSR2};
	cr_assert_eq(conc_shutdown_signals(&sd, usr1, 2), CONC_OK);
	cr_assert_eq(raise(SIGUSR1), 0);
	cr_assert_eq(atomic_load(&usr1_seen), 0, "conc's handler owns it now");
	cr_assert_eq(conc_shutdown_signal(&sd), SIGUSR1);
	cr_assert_eq(conc_shutdown_destroy(&sd), CONC_OK);
	cr_assert_eq(raise(SIGUSR1), 0);
	cr_assert_eq(atomic_load(&usr1_seen), 1, "the previous handler is back");
	struct sigaction now;
	cr_assert_eq(sigaction(SIGUSR2, NULL, &now), 0);
	cr_assert_eq(now.sa_handler, SIG_DFL);
}

/* Run body in a forked child; return its wait status. */
static int in_child(void (*body)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork");
	if (pid == 0) {
		body();
		_exit(0);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

static void two_signals(void)
{
	struct conc_shutdown sd;
	if (conc_shutdown_init(&sd, NULL, 0) != CONC_OK || conc_shutdown_signals(&sd, term_int, 2) != CONC_OK)
		_exit(10);
	raise(SIGINT);
	if (conc_shutdown_signal(&sd) != SIGINT)
		_exit(11);
	raise(SIGTERM); /* exits at once */
	_exit(12);
}

static void second_signal_during_run(void)
{
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[1];
	struct rec rec;
	struct comp c;
	memset(&rec, 0, sizeof rec);
	memset(&c, 0, sizeof c);
	c.rec = &rec;
	c.raise_term = true; /* a drain that hangs, and the operator presses ^C again */
	if (conc_shutdown_init(&sd, slots, 1) != CONC_OK || conc_shutdown_signals(&sd, term_int, 2) != CONC_OK ||
	    conc_shutdown_register(&sd, "stuck", comp_stop, &c) != CONC_OK)
		_exit(10);
	raise(SIGTERM);
	if (conc_shutdown_wait(&sd) != CONC_OK)
		_exit(11);
	if (conc_shutdown_run(&sd, conc_deadline_forever()) != CONC_OK)
		_exit(12);
	_exit(13);
}

static void trigger_then_one_signal(void)
{
	struct conc_shutdown sd;
	if (conc_shutdown_init(&sd, NULL, 0) != CONC_OK || conc_shutdown_signals(&sd, term_int, 2) != CONC_OK)
		_exit(10);
	if (conc_shutdown_trigger(&sd, 0) != CONC_OK)
		_exit(11);
	raise(SIGTERM); /* the first signal: recorded, no exit */
	if (conc_shutdown_signal(&sd) != SIGTERM || conc_ctx_cause(conc_shutdown_ctx(&sd)) != CONC_CANCELED)
		_exit(12);
	if (conc_shutdown_destroy(&sd) != CONC_OK)
		_exit(13);
}

Test(shutdown, second_signal_exits_at_once, .timeout = 60)
{
	int st = in_child(two_signals);
	cr_assert(WIFEXITED(st), "status %#x", st);
	cr_assert_eq(WEXITSTATUS(st), 128 + SIGTERM);

	st = in_child(second_signal_during_run);
	cr_assert(WIFEXITED(st), "status %#x", st);
	cr_assert_eq(WEXITSTATUS(st), 128 + SIGTERM);

	st = in_child(trigger_then_one_signal);
	cr_assert(WIFEXITED(st), "status %#x", st);
	cr_assert_eq(WEXITSTATUS(st), 0, "a trigger does not make the next signal the second");
}
