/* SPDX-License-Identifier: MIT */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

/*
 * bench/harness.h: what the benchmark's files share.
 *
 * Every contender (conc's channel, the textbook mutex channel, ck_ring) sits
 * behind one small table of functions, struct bench_ops, so that a workload
 * is written once and runs every contender through the same indirect calls
 * (the cost of the indirection is paid equally).  The harness supplies
 * threads, a start barrier, timing, statistics and output; workloads.c holds
 * the workloads; main.c runs them, interleaving the contenders within each
 * repetition so that drifting machine noise hits them all alike.
 *
 * Elements are 8 bytes (uint64_t) in every workload.
 */

/* conc.h first: it sets the feature macros for the system headers (the
 * bench is built with _GNU_SOURCE, for pthread_attr_setaffinity_np). */
#include "conc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * One contender.  The semantics are Go's, as conc has them:
 *  - send/recv block; send returns false once the channel is closed, recv
 *    returns false once it is closed and drained.
 *  - send_burst/recv_burst block until at least one element can move, then
 *    move as many of the n as they can at once; they return the count, 0 only
 *    when closed (and, for recv, drained).
 *  - close wakes everyone; the harness closes only after every sender has
 *    returned, so adapters may rely on that (ck_ring's does).
 *  - create(0, esize) makes a rendezvous channel (a send completes when a
 *    receiver takes the element), for contenders with has_rendezvous set.
 *  - A selector receives from any of k channels, as Go's select with k
 *    receive cases in a loop: select_create binds the channels and the one
 *    element buffer out (the selector is built once and reused);
 *    select_recv blocks until one of its channels has an element, writes it
 *    to out and returns true, and leaves out each channel it finds closed
 *    and drained, returning false once all of them are.  One thread uses a
 *    selector; the channels' senders and close run concurrently with it.
 *    select_destroy runs after the channels are closed and before they are
 *    destroyed.  Contenders without select leave the three NULL; their
 *    select rows show "-".
 */
struct bench_ops {
	const char *name;
	bool has_rendezvous;
	void *(*create)(size_t cap, size_t esize); /* NULL on failure */
	bool (*send)(void *ch, const void *elem);
	bool (*recv)(void *ch, void *out);
	size_t (*send_burst)(void *ch, const void *elems, size_t n);
	size_t (*recv_burst)(void *ch, void *out, size_t n);
	void (*close)(void *ch);
	void (*destroy)(void *ch);
	void *(*select_create)(void *const *chans, size_t k, void *out); /* NULL on failure */
	bool (*select_recv)(void *sel);
	void (*select_destroy)(void *sel);
};

extern const struct bench_ops bench_conc_ops;
extern const struct bench_ops bench_mutex_ops;
#ifdef BENCH_HAVE_CK
extern const struct bench_ops bench_ck_ops;
#endif

/* How long each kind of run lasts; --quick shrinks all of them. */
struct bench_config {
	int reps;
	bool quick;
	bool pin;             /* pin threads to CPUs (bench_spawn) */
	double target_s;      /* throughput runs: items are sized to last about this */
	double limit_s;       /* throughput runs stop sending after this long */
	bool pilot;           /* this run only measures the rate (no notes) */
	double pingpong_s;
	double latency_s;
	int64_t latency_period_ns; /* one message every this many ns */
	double idle_s;
	const char *only;     /* run only workloads whose name contains this */
	const char *out_dir;
};

/* ----------------------------------------------------------------- threads */

/* Print "conc-bench: " and the message to stderr, then abort: a benchmark
 * that lost an item or failed a call must not print a number. */
#if defined(__GNUC__) || defined(__clang__)
#define BENCH_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BENCH_PRINTF(f, a)
#endif
_Noreturn void bench_die(const char *fmt, ...) BENCH_PRINTF(1, 2);

/*
 * Start fn(arg).  With pinning on (the default; bench_set_pinning), the
 * thread is bound to the (slot mod n)-th of the n CPUs this process may use,
 * so that, say, a producer in slot 0 and a consumer in slot 1 run on
 * different cores in every run and for every contender, rather than wherever
 * the scheduler's wake-up heuristics put them that time.  slot < 0: never
 * pinned.
 */
void bench_spawn(pthread_t *t, void *(*fn)(void *), void *arg, int slot);

/* Pin the calling thread as bench_spawn pins slot (for threads that a layer
 * under test starts itself, from its start hook). */
void bench_pin_self(int slot);
/* Turn pinning on or off; returns the number of CPUs threads are pinned to
 * (0 when off or impossible). */
int bench_set_pinning(bool on);
void bench_join(pthread_t t);
void bench_barrier_init(pthread_barrier_t *b, unsigned count);
void bench_barrier_wait(pthread_barrier_t *b);
/* A mutex and a condition variable whose timed waits take CLOCK_MONOTONIC
 * (bench_now_ns) deadlines. */
void bench_cond_init(pthread_mutex_t *m, pthread_cond_t *c);
void *bench_alloc(size_t size); /* cache-line aligned, zeroed; dies on failure */

/* ------------------------------------------------------------------ timing */

static inline int64_t bench_now_ns(void)
{
	return conc_now_ns();
}

static inline double bench_seconds(int64_t ns)
{
	return (double)ns / 1e9;
}

/* A bench_now_ns() time as a CLOCK_MONOTONIC timespec. */
static inline struct timespec bench_timespec(int64_t ns)
{
	struct timespec ts;
	ts.tv_sec = (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	return ts;
}

/* Sleep (this is a benchmark: sleeping is fine) for s seconds. */
void bench_sleep(double s);

/* The fraction of all CPUs' time spent busy over the next s seconds (from
 * /proc/stat), or -1 where that cannot be read. */
double bench_cpu_busy(double s);

/* CPU time a thread has used so far, in ns. */
int64_t bench_thread_cpu_ns(pthread_t t);

/* ------------------------------------------------------------------- stats */

/* The k-th smallest of v[lo..n) (quickselect; reorders v so that everything
 * before index k is <= v[k] and everything after is >= v[k]). */
uint32_t bench_select(uint32_t *v, size_t lo, size_t n, size_t k);

/* Percentiles q[0] < q[1] < ... (each in [0, 1]) of v[0..n), into out[];
 * reorders v.  n must be > 0. */
void bench_percentiles(uint32_t *v, size_t n, const double *q, size_t nq, double *out);

/*
 * Run step(state) in a loop on `threads` threads (pinned to slots
 * 0..threads-1, at most BENCH_LOOP_MAX_THREADS) for about `seconds`, and
 * return the operations per second: the sum of what the calls of step
 * returned (each call does a batch and says how many operations it did).
 */
#define BENCH_LOOP_MAX_THREADS 8
double bench_run_loop(int threads, double seconds, uint64_t (*step)(void *state), void *state);

/* Median of v[0..n) (n > 0); reorders v. */
double bench_median(double *v, size_t n);

/* ------------------------------------------------------------ rows, results */

/* A row of the results table.  better_lower: latencies and CPU time, where the
 * ratio is other/conc; otherwise it is conc/other.  Either way > 1 means conc
 * is better.  panel: which plot panel the row goes to. */
enum bench_panel {
	BENCH_PANEL_THROUGHPUT,
	BENCH_PANEL_SELECT,
	BENCH_PANEL_LATENCY,
	BENCH_PANEL_CPU,
	BENCH_PANEL_PATTERNS,
	BENCH_PANEL_RESILIENCE,
	BENCH_PANEL_COUNT
};

struct bench_row {
	const char *label; /* in the table, followed by the unit */
	const char *tag;   /* shorter, under the plot's bars */
	const char *unit;
	bool better_lower;
	enum bench_panel panel;
};

/* Medians per row and contender (NAN where a value is missing). */
struct bench_results {
	size_t nrows, ncont;
	const struct bench_row *rows; /* nrows */
	const char *const *names;     /* ncont contender names, conc first */
	const double *median;         /* [row * ncont + contender] */
	const double *const *raw;     /* [row * ncont + contender] -> reps values */
	int reps;
	const char *notes;            /* printed under the table; "" for none */
};

/* ---------------------------------------------------------------- workloads */

/*
 * A workload runs one contender once and writes its rows' values to out[]
 * (rows first_row .. first_row + nrows - 1 of bench_rows).  Throughput
 * workloads (calibrate) move `items` elements; main.c sizes it from a
 * pilot run so that each run lasts about cfg->target_s whatever the
 * contender's speed.
 */
struct bench_workload {
	const char *name;
	size_t first_row, nrows;
	bool calibrate;
	int producers, consumers;
	size_t burst; /* 1: send/recv; more: send_burst/recv_burst of this many */
	void (*run)(const struct bench_workload *w, const struct bench_ops *ops,
		    const struct bench_config *cfg, uint64_t items, double *out);
};

extern const struct bench_row bench_rows[];
extern const size_t bench_nrows;
extern const struct bench_workload bench_workloads[];
extern const size_t bench_nworkloads;

/* The pattern workloads (patterns.c): worker pool, semaphore uncontended
 * and contended, 3-stage pipeline. */
void bench_run_pool(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		    uint64_t items, double *out);
void bench_run_sem(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		   uint64_t items, double *out);
void bench_run_sem_contended(const struct bench_workload *w, const struct bench_ops *ops,
			     const struct bench_config *cfg, uint64_t items, double *out);
void bench_run_pipeline(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
			uint64_t items, double *out);
/* The resilience workloads (resilience.c): limiter allow and breaker
 * admission from w->producers threads, publish to w->consumers subscribers. */
void bench_run_limiter(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		       uint64_t items, double *out);
void bench_run_breaker(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		       uint64_t items, double *out);
void bench_run_publish(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		       uint64_t items, double *out);
/* The limiter's accuracy over about a second (shorter with --quick), as a
 * line into buf; returns its length. */
size_t bench_resilience_notes(const struct bench_config *cfg, char *buf, size_t size);

/* A note comparing conc's uncontended semaphore (median ns) with sem_t and
 * a bare atomic pair timed in the same runs, into buf; returns its length
 * (0 if the semaphore workload did not run). */
size_t bench_patterns_notes(double conc_sem_ns, char *buf, size_t size);

/* Lines derived from several rows of r (the rendezvous round trip over the
 * buffered one), each ending in a newline, into buf ("" if none). */
void bench_notes(const struct bench_results *r, char *buf, size_t size);

/* ------------------------------------------------------------------ output */

/* "2 CPUs, AMD EPYC, Linux 6.1.0, gcc 12.2.0, 2025-01-31 12:00 UTC" (static buffer). */
const char *bench_machine(void);

void bench_print_table(FILE *f, const struct bench_results *r);
/* Writes bench.csv, bench-raw.csv, bench.md and bench-plot.dat into dir
 * (created if needed), then runs gnuplot on plot_script there, if it can. */
void bench_write_outputs(const char *dir, const struct bench_results *r, const char *plot_script);

#endif /* BENCH_HARNESS_H */
