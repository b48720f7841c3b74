/* SPDX-License-Identifier: MIT */
/*
 * stress.h: the harness shared by the plain stress programs (stress-chan,
 * stress-ctx): sizes (SIZED, smaller under ThreadSanitizer), the first-failure
 * record (fail) and verbose notes (note), a seeded splitmix64 stream per
 * thread, thread and barrier helpers that exit(2) on error, and
 * stress_main(), which runs a table of scenarios under the watchdog and
 * handles CONC_STRESS_SEED, CONC_STRESS_VERBOSE and CONC_STRESS_ONLY.
 *
 * Include after conc.h and util.h, with STRESS_PROG defined to the program's
 * name (a string literal), which prefixes its messages.
 */
#ifndef CONC_TEST_STRESS_H
#define CONC_TEST_STRESS_H

#ifndef STRESS_PROG
#error "define STRESS_PROG (the program's name) before including stress.h"
#endif

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CONC_STRESS_SCALE
#define CONC_STRESS_SCALE 1
#endif

#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
#ifndef STRESS_TSAN
#define STRESS_TSAN 0
#endif

/* For stress_main's banner: which parker the program was built on. */
#ifdef CONC_HAVE_FUTEX
#define STRESS_PARKER ""
#else
#define STRESS_PARKER ", pthread parker"
#endif

/* A count at scale 1: `plain` normally, `tsan` under ThreadSanitizer. */
#define SIZED(plain, tsan) ((size_t)(STRESS_TSAN ? (tsan) : (plain)) * (size_t)CONC_STRESS_SCALE)

#if defined(__GNUC__) || defined(__clang__)
#define STRESS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define STRESS_PRINTF(a, b)
#endif

/* ------------------------------------------------------------ the harness */

static const char *scenario_name = "";
static uint64_t seed_base;
static bool verbose;

/* The first failure of the running scenario.  It is printed on stderr at
 * once (a hang that follows it then still shows why), and in the FAIL line. */
static atomic_int failed_flag;
static char failed_msg[256];

STRESS_PRINTF(1, 2) static void fail(const char *fmt, ...)
{
	int expected = 0;
	if (!atomic_compare_exchange_strong(&failed_flag, &expected, 1))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(failed_msg, sizeof failed_msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, STRESS_PROG ": %s: %s\n", scenario_name, failed_msg);
}

STRESS_PRINTF(1, 2) CONC__UNUSED static void note(const char *fmt, ...)
{
	if (!verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "  %s: ", scenario_name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* splitmix64: one independent stream per thread, from the seed. */
struct rng {
	uint64_t s;
};

CONC__UNUSED static struct rng rng_for(uint64_t stream)
{
	struct rng r = {seed_base ^ (stream * UINT64_C(0xd1342543de82ef95))};
	return r;
}

CONC__UNUSED static uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform enough in [0, n), n > 0. */
CONC__UNUSED static size_t rng_below(struct rng *r, size_t n)
{
	return (size_t)(rng_next(r) % n);
}

/* Burn a random short while (the "random point" of a close or cancel). */
CONC__UNUSED static void spin_random(struct rng *r)
{
	size_t n = rng_below(r, 4096);
	for (size_t i = 0; i < n; i++) {
		conc_cpu_relax();
		if (i % 512 == 511)
			conc_yield();
	}
}

CONC__UNUSED static void spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int e = pthread_create(t, NULL, fn, arg);
	if (e) {
		fprintf(stderr, STRESS_PROG ": pthread_create: %s\n", strerror(e));
		exit(2);
	}
}

CONC__UNUSED static void join(pthread_t t)
{
	int e = pthread_join(t, NULL);
	if (e) {
		fprintf(stderr, STRESS_PROG ": pthread_join: %s\n", strerror(e));
		exit(2);
	}
}

CONC__UNUSED static void barrier_init(pthread_barrier_t *b, unsigned n)
{
	if (pthread_barrier_init(b, NULL, n)) {
		fprintf(stderr, STRESS_PROG ": pthread_barrier_init failed\n");
		exit(2);
	}
}

CONC__UNUSED static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p) {
		fprintf(stderr, STRESS_PROG ": out of memory\n");
		exit(2);
	}
	return p;
}

/* ----------------------------------------------------------------- main */

struct scenario {
	const char *name;
	void (*run)(size_t arg);
	size_t arg;
};

/*
 * Run the scenarios (those whose name contains CONC_STRESS_ONLY, if set)
 * under a watchdog of 240 s at scale 1, print "ok" or "FAIL" for each and a
 * final count; `banner` is appended to the seed line on stderr.  Returns
 * main's exit status: 1 if any scenario failed.
 */
static int stress_main(const struct scenario *scenarios, size_t count, const char *banner)
{
	/* 240 s at scale 1: a hang fails the run instead of stalling CI. */
	conc_test_watchdog(STRESS_PROG, 240u * CONC_STRESS_SCALE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *env = getenv("CONC_STRESS_SEED");
	seed_base = env ? strtoull(env, NULL, 0) : (uint64_t)conc_now_ns() ^ ((uint64_t)getpid() << 32);
	verbose = getenv("CONC_STRESS_VERBOSE") != NULL;
	const char *only = getenv("CONC_STRESS_ONLY");
	fprintf(stderr, STRESS_PROG ": seed %#" PRIx64 ", scale %d%s%s\n", seed_base, CONC_STRESS_SCALE,
		STRESS_TSAN ? ", ThreadSanitizer sizes" : "", banner);
	size_t passed = 0, failed = 0;
	for (size_t i = 0; i < count; i++) {
		scenario_name = scenarios[i].name;
		if (only && !strstr(scenario_name, only))
			continue;
		/* The watchdog then names the scenario that hung. */
		static char label[128];
		snprintf(label, sizeof label, STRESS_PROG " (scenario \"%s\")", scenario_name);
		conc_test_watchdog_name = label;
		atomic_store(&failed_flag, 0);
		failed_msg[0] = '\0';
		int64_t t0 = conc_now_ns();
		scenarios[i].run(scenarios[i].arg);
		if (atomic_load(&failed_flag)) {
			printf("FAIL %s: %s (seed %#" PRIx64 ")\n", scenario_name, failed_msg, seed_base);
			failed++;
		} else {
			printf("ok   %s\n", scenario_name);
			passed++;
		}
		note("%.2f s", (double)(conc_now_ns() - t0) / 1e9);
	}
	printf("%zu passed, %zu failed\n", passed, failed);
	return failed ? 1 : 0;
}

/* ------------------------------------------------------- channel helpers */

/* A deadline between "already passed" and a few hundred µs from now. */
CONC__UNUSED static struct conc_deadline stress_short_deadline(struct rng *r)
{
	CONC__UNUSED static const int64_t ns[] = {-1000, 0, 2000, 5000, 20000, 50000, 50000, 200000};
	size_t k = rng_below(r, sizeof ns / sizeof ns[0]);
	return k == 0 ? conc_deadline_poll() : conc_deadline_in_ns(ns[k]);
}

/* One call with a short deadline: on the call (ctx NULL) or on a fresh
 * context (call deadline forever), chosen at random. */
CONC__UNUSED static enum conc_status stress_deadline_call(struct rng *r, struct conc_chan *ch, uint64_t *v, bool send)
{
	struct conc_deadline d = stress_short_deadline(r);
	if (rng_below(r, 4) != 0)
		return send ? conc_chan_send_until(ch, v, d, NULL) : conc_chan_recv_until(ch, v, d, NULL);
	struct conc_ctx ctx;
	if (conc_ctx_init(&ctx, NULL, d) != CONC_OK) {
		fail("conc_ctx_init failed");
		return CONC_INVALID;
	}
	enum conc_status s = send ? conc_chan_send_until(ch, v, conc_deadline_forever(), &ctx)
				  : conc_chan_recv_until(ch, v, conc_deadline_forever(), &ctx);
	enum conc_status ds = conc_ctx_destroy(&ctx);
	if (ds != CONC_OK)
		fail("destroying a deadline context after the call gave %s", conc_strerror(ds));
	return s;
}

#endif
