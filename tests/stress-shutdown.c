/* SPDX-License-Identifier: MIT */
/*
 * stress-shutdown: graceful-shutdown stress scenarios as a plain program
 * (Criterion does not start under ThreadSanitizer).  Every scenario runs
 * more threads than the machine has cores.
 *
 *   trigger racing register and wait
 *                  registrants register until refused, waiters wait (some
 *                  forever, some in short rounds that leave and come back,
 *                  then leave for good),
 *                  and a thread triggers at a random point: every waiter
 *                  returns CONC_OK, every accepted component is stopped
 *                  exactly once and in reverse order, no refused one is
 *                  stopped, and nothing is accepted after the trigger
 *   signal racing register and wait
 *                  the same with SIGTERM/SIGINT sent to the process from a
 *                  thread (and, in half the rounds, a programmatic trigger
 *                  racing it): the waiters that come and go hand the
 *                  converter role on, so the signal always reaches one,
 *                  even after all but the forever waiters have left
 *   report racing run
 *                  readers call conc_shutdown_report while run stops the
 *                  components: every report is a prefix of the final one
 *   second signal (forked children; not under ThreadSanitizer)
 *                  two threads of a child send a signal each (the second
 *                  once the first was caught) while others wait and run:
 *                  the child always exits with 128 + signo
 *
 * No sleep stands in for synchronisation and no timing is asserted.
 * Sizes scale with CONC_STRESS_SCALE; under ThreadSanitizer they shrink.
 * CONC_STRESS_SEED, CONC_STRESS_VERBOSE and CONC_STRESS_ONLY work as in the
 * other stress programs.
 */

#include "conc.h"

#include <sys/wait.h>

#include "util.h"

#define STRESS_PROG "stress-shutdown"
#include "stress.h"

#define REGISTRANTS 4
#define PER_REG 16
#define WAITERS 5

static const int term_int[] = {SIGTERM, SIGINT};

struct scomp {
	_Atomic(unsigned) stops;   /* times its stop ran */
	_Atomic(size_t) stop_seq;  /* when (global order of stops) */
	enum conc_status reg;      /* what its register returned */
};

struct round {
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[REGISTRANTS * PER_REG];
	struct scomp comp[REGISTRANTS][PER_REG];
	_Atomic(size_t) seq;
	enum conc_status wait_result[WAITERS];
	pthread_barrier_t start;
	uint64_t round;
	int mode; /* 0: trigger only; 1: signal only; 2: signal and trigger */
};

struct targ {
	struct round *r;
	size_t id;
};

/* The round whose run is going on: its seq numbers the stops. */
static struct round *current;

static enum conc_status scomp_stop_seq(void *arg, struct conc_deadline drain)
{
	(void)drain;
	struct scomp *c = arg;
	atomic_store_explicit(&c->stop_seq, atomic_fetch_add_explicit(&current->seq, 1, memory_order_relaxed),
			      memory_order_relaxed);
	atomic_fetch_add_explicit(&c->stops, 1, memory_order_relaxed);
	return CONC_OK;
}

static void *registrant(void *p)
{
	struct targ *a = p;
	struct round *r = a->r;
	struct rng g = rng_for(r->round * 64 + a->id);
	pthread_barrier_wait(&r->start);
	size_t k = 0;
	for (; k < PER_REG; k++) {
		if (rng_below(&g, 4) == 0)
			spin_random(&g);
		enum conc_status s = conc_shutdown_register(&r->sd, "c", scomp_stop_seq, &r->comp[a->id][k]);
		r->comp[a->id][k].reg = s;
		if (s == CONC_CLOSED)
			break;
		if (s != CONC_OK)
			fail("register gave %s", conc_strerror(s));
	}
	/* Once refused, always refused. */
	for (k++; k < PER_REG; k++) {
		enum conc_status s = conc_shutdown_register(&r->sd, "c", scomp_stop_seq, &r->comp[a->id][k]);
		r->comp[a->id][k].reg = s;
		if (s != CONC_CLOSED)
			fail("register after a refusal gave %s", conc_strerror(s));
	}
	return NULL;
}

/* Waiters 0 and 1 wait forever; the others wait in short rounds (a
 * deadline, or a context with one) and come back, a random number of times,
 * then leave for good.  So the converter role changes hands all the time,
 * and once the short waiters have left, a signal reaches the forever
 * waiters only if the role was handed on to one of them. */
#define FOREVER_WAITERS 2

static void *waiter(void *p)
{
	struct targ *a = p;
	struct round *r = a->r;
	struct rng g = rng_for(r->round * 64 + 32 + a->id);
	pthread_barrier_wait(&r->start);
	enum conc_status s;
	if (a->id < FOREVER_WAITERS) {
		s = conc_shutdown_wait(&r->sd);
	} else {
		size_t times = 1 + rng_below(&g, 16);
		do {
			struct conc_deadline d = stress_short_deadline(&g);
			if (rng_below(&g, 3) == 0) {
				struct conc_ctx ctx;
				if (conc_ctx_init(&ctx, NULL, d) != CONC_OK) {
					fail("ctx init");
					return NULL;
				}
				s = conc_shutdown_wait_until(&r->sd, conc_deadline_forever(), &ctx);
				if (conc_ctx_destroy(&ctx) != CONC_OK)
					fail("ctx destroy");
			} else {
				s = conc_shutdown_wait_until(&r->sd, d, NULL);
			}
			if (s != CONC_OK && s != CONC_TIMEDOUT)
				fail("wait_until gave %s", conc_strerror(s));
		} while (s == CONC_TIMEDOUT && --times > 0);
		if (s == CONC_TIMEDOUT)
			s = CONC_OK; /* left before the shutdown: fine */
	}
	r->wait_result[a->id] = s;
	return NULL;
}

static void *trigger(void *p)
{
	struct targ *a = p;
	struct round *r = a->r;
	struct rng g = rng_for(r->round * 64 + 63);
	pthread_barrier_wait(&r->start);
	spin_random(&g);
	if (r->mode != 0)
		kill(getpid(), rng_below(&g, 2) ? SIGTERM : SIGINT);
	if (r->mode != 1) {
		spin_random(&g);
		enum conc_status s = conc_shutdown_trigger(&r->sd, 4242);
		if (s != CONC_OK && s != CONC_CANCELED)
			fail("trigger gave %s", conc_strerror(s));
		if (s == CONC_CANCELED && r->mode == 0)
			fail("the only trigger found shutdown started");
	}
	return NULL;
}

static void run_round(struct round *r)
{
	if (conc_shutdown_init(&r->sd, r->slots, REGISTRANTS * PER_REG) != CONC_OK) {
		fail("init");
		return;
	}
	if (r->mode != 0 && conc_shutdown_signals(&r->sd, term_int, 2) != CONC_OK) {
		fail("signals");
		return;
	}
	current = r;
	atomic_store(&r->seq, 0);
	memset(r->comp, 0, sizeof r->comp);
	size_t nthreads = REGISTRANTS + WAITERS + 1;
	barrier_init(&r->start, (unsigned)nthreads);
	pthread_t t[REGISTRANTS + WAITERS + 1];
	struct targ a[REGISTRANTS + WAITERS + 1];
	for (size_t i = 0; i < nthreads; i++) {
		a[i].r = r;
		a[i].id = i < REGISTRANTS ? i : i < REGISTRANTS + WAITERS ? i - REGISTRANTS : 0;
		spawn(&t[i], i < REGISTRANTS ? registrant : i < REGISTRANTS + WAITERS ? waiter : trigger, &a[i]);
	}
	for (size_t i = 0; i < nthreads; i++)
		join(t[i]);
	pthread_barrier_destroy(&r->start);
	for (size_t w = 0; w < WAITERS; w++)
		if (r->wait_result[w] != CONC_OK)
			fail("waiter %zu ended with %s", w, conc_strerror(r->wait_result[w]));
	enum conc_status s = conc_shutdown_run(&r->sd, conc_deadline_forever());
	if (s != CONC_OK)
		fail("run gave %s", conc_strerror(s));
	size_t accepted = 0;
	for (size_t i = 0; i < REGISTRANTS; i++) {
		size_t prev_seq = SIZE_MAX;
		for (size_t k = 0; k < PER_REG; k++) {
			struct scomp *c = &r->comp[i][k];
			unsigned stops = atomic_load(&c->stops);
			if (c->reg == CONC_OK) {
				accepted++;
				if (stops != 1)
					fail("accepted component %zu/%zu stopped %u times", i, k, stops);
				size_t seq = atomic_load(&c->stop_seq);
				if (prev_seq != SIZE_MAX && seq >= prev_seq)
					fail("component %zu/%zu stopped before one registered earlier", i, k);
				prev_seq = seq;
			} else if (stops != 0) {
				fail("refused component %zu/%zu stopped", i, k);
			}
		}
	}
	struct conc_shutdown_result res[1];
	if (conc_shutdown_report(&r->sd, res, 1) != accepted)
		fail("report counts %zu, %zu accepted", conc_shutdown_report(&r->sd, res, 1), accepted);
	int cause = conc_ctx_cause(conc_shutdown_ctx(&r->sd));
	int sig = conc_shutdown_cause_signal(cause);
	if (r->mode == 0 && cause != 4242)
		fail("cause %d, want the trigger's", cause);
	if (r->mode == 1 && sig != SIGTERM && sig != SIGINT)
		fail("cause %d, want a signal's", cause);
	if (r->mode == 2 && cause != 4242 && sig != SIGTERM && sig != SIGINT)
		fail("cause %d", cause);
	if (r->mode != 0) {
		/* The signal may still be on its way to some thread (a process
		 * signal picks one): wait until the handler ran, so it does not
		 * land on the restored default disposition. */
		while (conc_shutdown_signal(&r->sd) == 0)
			conc_yield();
	}
	if (conc_shutdown_destroy(&r->sd) != CONC_OK)
		fail("destroy");
}

static void scenario_race(size_t mode)
{
	struct round *r = xcalloc(1, sizeof *r);
	size_t rounds = SIZED(2000, 100);
	for (size_t i = 0; i < rounds && !atomic_load(&failed_flag); i++) {
		r->round = i;
		r->mode = mode == 0 ? 0 : (int)(1 + i % 2);
		run_round(r);
	}
	free(r);
	note("%zu rounds", rounds);
}

/* ------------------------------------------------------- report racing run */

#define READERS 4
#define RCOMP 64

struct rrun {
	struct conc_shutdown sd;
	struct conc_shutdown_slot slots[RCOMP];
	char names[RCOMP][8];
	_Atomic(bool) done;
	pthread_barrier_t start;
};

static enum conc_status yield_stop(void *arg, struct conc_deadline drain)
{
	(void)arg;
	(void)drain;
	conc_yield();
	return CONC_OK;
}

static void *reader(void *p)
{
	struct rrun *r = p;
	struct conc_shutdown_result res[RCOMP];
	size_t last = 0;
	pthread_barrier_wait(&r->start);
	for (;;) {
		bool done = atomic_load(&r->done);
		size_t n = conc_shutdown_report(&r->sd, res, RCOMP);
		if (n < last || n > RCOMP)
			fail("report went from %zu to %zu", last, n);
		for (size_t i = 0; i < n && i < RCOMP; i++)
			if (res[i].name != r->names[RCOMP - 1 - i] || res[i].status != CONC_OK || res[i].missed)
				fail("report entry %zu of %zu is wrong", i, n);
		last = n;
		if (done)
			break;
		conc_yield(); /* more readers than cores: let run progress */
	}
	if (last != RCOMP)
		fail("final report has %zu of %d", last, RCOMP);
	return NULL;
}

static void scenario_report(size_t arg)
{
	(void)arg;
	static struct rrun r;
	size_t rounds = SIZED(200, 20);
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		if (conc_shutdown_init(&r.sd, r.slots, RCOMP) != CONC_OK) {
			fail("init");
			return;
		}
		for (size_t i = 0; i < RCOMP; i++) {
			snprintf(r.names[i], sizeof r.names[i], "c%zu", i);
			if (conc_shutdown_register(&r.sd, r.names[i], yield_stop, NULL) != CONC_OK)
				fail("register");
		}
		atomic_store(&r.done, false);
		barrier_init(&r.start, READERS + 1);
		pthread_t t[READERS];
		for (size_t i = 0; i < READERS; i++)
			spawn(&t[i], reader, &r);
		pthread_barrier_wait(&r.start);
		if (conc_shutdown_run(&r.sd, conc_deadline_forever()) != CONC_OK)
			fail("run");
		atomic_store(&r.done, true);
		for (size_t i = 0; i < READERS; i++)
			join(t[i]);
		pthread_barrier_destroy(&r.start);
		if (conc_shutdown_destroy(&r.sd) != CONC_OK)
			fail("destroy");
	}
	note("%zu rounds", rounds);
}

/* ---------------------------------------------------------- second signal */

struct child {
	struct conc_shutdown sd;
	pthread_barrier_t start;
	int sig[2];
};

static void *child_killer(void *p)
{
	struct child *c = p;
	static _Atomic(int) which;
	int k = atomic_fetch_add(&which, 1) & 1;
	pthread_barrier_wait(&c->start);
	/* Two of the same standard signal sent before the first is delivered
	 * merge into one (POSIX does not queue them): the second is sent once
	 * the first has been caught, as a second ^C would be. */
	if (k == 1)
		while (conc_shutdown_signal(&c->sd) == 0)
			conc_yield();
	kill(getpid(), c->sig[k]);
	return NULL;
}

static void *child_waiter(void *p)
{
	struct child *c = p;
	pthread_barrier_wait(&c->start);
	if (conc_shutdown_wait(&c->sd) == CONC_OK && conc_shutdown_run(&c->sd, conc_deadline_forever()) == CONC_INVALID)
		_exit(11);
	return NULL;
}

static void scenario_second_signal(size_t arg)
{
	(void)arg;
	if (STRESS_TSAN) {
		note("skipped under ThreadSanitizer (threads in a forked child)");
		return;
	}
	size_t rounds = SIZED(40, 0);
	for (size_t round = 0; round < rounds && !atomic_load(&failed_flag); round++) {
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0) {
			fail("fork");
			return;
		}
		if (pid == 0) {
			static struct child c;
			alarm(60); /* a lost signal fails the parent's check, not the machine */
			c.sig[0] = round % 2 ? SIGTERM : SIGINT;
			c.sig[1] = round % 3 ? SIGTERM : SIGINT;
			if (conc_shutdown_init(&c.sd, NULL, 0) != CONC_OK ||
			    conc_shutdown_signals(&c.sd, term_int, 2) != CONC_OK)
				_exit(10);
			pthread_barrier_init(&c.start, NULL, 5);
			pthread_t t[5];
			for (int i = 0; i < 5; i++)
				pthread_create(&t[i], NULL, i < 2 ? child_killer : child_waiter, &c);
			for (int i = 0; i < 5; i++)
				pthread_join(t[i], NULL);
			/* Both signals are sent; the second may still be on its
			 * way to some thread.  Wait for it (the exit). */
			for (;;)
				pause();
		}
		int st;
		if (waitpid(pid, &st, 0) != pid) {
			fail("waitpid");
			return;
		}
		if (!WIFEXITED(st) || (WEXITSTATUS(st) != 128 + SIGTERM && WEXITSTATUS(st) != 128 + SIGINT))
			fail("child ended with status %#x, want exit 128 + signo", st);
	}
	note("%zu children", rounds);
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{"trigger racing register and wait", scenario_race, 0},
		{"signal racing register and wait", scenario_race, 1},
		{"report racing run", scenario_report, 0},
		{"second signal", scenario_second_signal, 0},
	};
	return stress_main(scenarios, sizeof scenarios / sizeof scenarios[0], "");
}
