/* SPDX-License-Identifier: MIT */
/*
 * bench/workloads.c: what is measured, written once for every contender.
 *
 *  - throughput P/C: P producers send distinct counters (together 0 .. n-1)
 *    through one channel of capacity 1024 to C consumers; the harness closes
 *    the channel once every producer has returned and the consumers drain it.
 *    Timed from the start barrier to the last consumer's exit.  n comes from
 *    a pilot run (main.c) so a run lasts about 0.3 s; a run that falls far
 *    behind its pilot is cut at a time limit (run_throughput).  The received
 *    count and sum are checked: a lost or doubled item aborts the run.
 *  - burst: the same with one producer and one consumer moving 32 elements
 *    per call through send_burst/recv_burst.
 *  - select K: K channels of capacity 1024, one producer per channel (the
 *    same counters, split among them), and one consumer that receives from
 *    all K through the contender's select until every channel is closed and
 *    drained.  Sized, cut off, timed and checked as throughput.
 *  - ping-pong: two threads, two channels of capacity 1; A sends, B echoes.
 *    Every round trip is timed (one clock read per trip); the row is the
 *    median trip.
 *  - rendezvous: the same over two rendezvous (capacity 0) channels, so
 *    every send waits for the echo thread to take the element.  Under the
 *    table, each contender's rendezvous round trip over its ping-pong one
 *    (bench_notes).
 *  - latency: a producer sends its send time, one message every 20 us on an
 *    absolute schedule kept by spinning on the clock; the consumer records
 *    now - sent.  Capacity 1024, so the producer never waits for room and
 *    only the consumer's wake-up is measured.  Rows: p50, p99, p99.9.
 *  - idle: a receiver blocks on an empty channel; about a second later the
 *    CPU time its thread has used since just before its recv call is read
 *    (pthread_getcpuclockid), then the channel is closed to release it.
 *    Row: microseconds of CPU per second of blocking.
 *
 *  - pool, semaphore, pipeline: the pattern layers against their mutex
 *    baselines; see patterns.c.
 *  - limiter, breaker, publish: the resilience and messaging layers against
 *    their mutex baselines; see resilience.c.
 *
 * Threads are pinned (bench_spawn): the producers to slots 0 .. P-1, then the
 * consumers to slots P .. P+C-1, round-robin over the CPUs, so with 1P/1C on
 * two cores the producer and the consumer sit on different cores every time
 * (select K: the consumer is slot K); the ping-pong, rendezvous and latency
 * pairs go to slots 0 and 1.  --no-pin leaves placement to the scheduler.
 *
 * A contender without select or rendezvous channels (ck_ring) gets NAN in
 * those rows, shown as "-".
 */
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#define TP_CAP 1024
#define MAX_BURST 32
#define MAX_SELECT 4

enum {
	ROW_TP_1,
	ROW_TP_2,
	ROW_TP_8,
	ROW_BURST,
	ROW_SELECT_2,
	ROW_SELECT_4,
	ROW_PINGPONG,
	ROW_RENDEZVOUS,
	ROW_LATENCY, /* p50, p99, p99.9 */
	ROW_IDLE = ROW_LATENCY + 3,
	ROW_POOL_2,
	ROW_POOL_8,
	ROW_SEM,
	ROW_SEM_CONTENDED,
	ROW_PIPELINE,
	ROW_RATE_1,
	ROW_RATE_8,
	ROW_RATE_1_SLOW,
	ROW_RATE_8_SLOW,
	ROW_BREAKER_1,
	ROW_BREAKER_8,
	ROW_PUB_1,
	ROW_PUB_8,
	ROW_PUB_64,
};

const struct bench_row bench_rows[] = {
	[ROW_TP_1] = {"throughput 1P/1C", "1P/1C", "Mops/s", false, BENCH_PANEL_THROUGHPUT},
	[ROW_TP_2] = {"throughput 2P/2C", "2P/2C", "Mops/s", false, BENCH_PANEL_THROUGHPUT},
	[ROW_TP_8] = {"throughput 8P/8C", "8P/8C", "Mops/s", false, BENCH_PANEL_THROUGHPUT},
	[ROW_BURST] = {"burst 1P/1C x32", "burst x32", "Mops/s", false, BENCH_PANEL_THROUGHPUT},
	[ROW_SELECT_2] = {"select 2 chans 2P/1C", "select 2", "Mops/s", false, BENCH_PANEL_SELECT},
	[ROW_SELECT_4] = {"select 4 chans 4P/1C", "select 4", "Mops/s", false, BENCH_PANEL_SELECT},
	[ROW_PINGPONG] = {"ping-pong round trip", "ping-pong RTT", "ns", true, BENCH_PANEL_LATENCY},
	[ROW_RENDEZVOUS] = {"rendezvous round trip", "rendezvous RTT", "ns", true, BENCH_PANEL_LATENCY},
	[ROW_LATENCY] = {"latency p50", "p50", "ns", true, BENCH_PANEL_LATENCY},
	[ROW_LATENCY + 1] = {"latency p99", "p99", "ns", true, BENCH_PANEL_LATENCY},
	[ROW_LATENCY + 2] = {"latency p99.9", "p99.9", "ns", true, BENCH_PANEL_LATENCY},
	[ROW_IDLE] = {"idle receiver", "idle receiver", "\xc2\xb5s CPU/s", true, BENCH_PANEL_CPU},
	[ROW_POOL_2] = {"pool 2 workers", "pool 2w", "Mtasks/s", false, BENCH_PANEL_PATTERNS},
	[ROW_POOL_8] = {"pool 8 workers", "pool 8w", "Mtasks/s", false, BENCH_PANEL_PATTERNS},
	[ROW_SEM] = {"semaphore uncontended", "sem", "ns", true, BENCH_PANEL_LATENCY},
	[ROW_SEM_CONTENDED] = {"semaphore 8 threads 2 units", "sem 8T/2", "Mops/s", false, BENCH_PANEL_PATTERNS},
	[ROW_PIPELINE] = {"pipeline 3 stages", "pipeline 3", "Mitems/s", false, BENCH_PANEL_PATTERNS},
	[ROW_RATE_1] = {"limiter allow 1 thread, 10/us", "lim 1T 10", "Mcalls/s", false, BENCH_PANEL_RESILIENCE},
	[ROW_RATE_8] = {"limiter allow 8 threads, 10/us", "lim 8T 10", "Mcalls/s", false, BENCH_PANEL_RESILIENCE},
	[ROW_RATE_1_SLOW] = {"limiter allow 1 thread, 1/us", "lim 1T 1", "Mcalls/s", false,
			     BENCH_PANEL_RESILIENCE},
	[ROW_RATE_8_SLOW] = {"limiter allow 8 threads, 1/us", "lim 8T 1", "Mcalls/s", false,
			     BENCH_PANEL_RESILIENCE},
	[ROW_BREAKER_1] = {"breaker admission 1 thread", "brk 1T", "Mcalls/s", false, BENCH_PANEL_RESILIENCE},
	[ROW_BREAKER_8] = {"breaker admission 8 threads", "brk 8T", "Mcalls/s", false, BENCH_PANEL_RESILIENCE},
	[ROW_PUB_1] = {"publish to 1 subscriber", "pub 1", "Mmsgs/s", false, BENCH_PANEL_RESILIENCE},
	[ROW_PUB_8] = {"publish to 8 subscribers", "pub 8", "Mmsgs/s", false, BENCH_PANEL_RESILIENCE},
	[ROW_PUB_64] = {"publish to 64 subscribers", "pub 64", "Mmsgs/s", false, BENCH_PANEL_RESILIENCE},
};
const size_t bench_nrows = sizeof bench_rows / sizeof bench_rows[0];

/* A sample in nanoseconds, clamped into 32 bits (4.29 s). */
static uint32_t clamp32(int64_t v)
{
	return v < 0 ? 0 : v > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* -------------------------------------------------------------- throughput */

struct tp_shared {
	const struct bench_ops *ops;
	void *chans[MAX_SELECT]; /* nchan: one, or one per producer (select) */
	size_t nchan;
	size_t burst;
	pthread_barrier_t start;
	/* Producers still sending, under lock; the last one signals done. */
	pthread_mutex_t lock;
	pthread_cond_t done;
	size_t running;
	/* Set by the main thread at the time limit (see run_throughput).  Read
	 * by the producers before every send, written once: its own line. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(bool) stop;
};

/* One per thread, each on its own cache lines: the counters must not
 * false-share. */
struct tp_thread {
	CONC_ALIGNED(CONC_CACHELINE) struct tp_shared *sh;
	void *ch; /* the channel it sends to or receives from (not select) */
	pthread_t tid;
	uint64_t first, count; /* producer: sends first .. first + count - 1 */
	uint64_t n, sum;       /* producer: what it sent; consumer: received */
};

/* Relaxed: the flag only asks producers to stop sending; what they sent is
 * published to the main thread by pthread_join. */
static bool tp_stopped(struct tp_shared *sh)
{
	return atomic_load_explicit(&sh->stop, memory_order_relaxed);
}

static void *tp_producer(void *arg)
{
	struct tp_thread *t = arg;
	const struct bench_ops *ops = t->sh->ops;
	void *ch = t->ch;
	size_t burst = t->sh->burst;
	uint64_t v = t->first, end = t->first + t->count;
	bench_barrier_wait(&t->sh->start);
	if (burst == 1) {
		for (; v < end && !tp_stopped(t->sh); v++) {
			if (!ops->send(ch, &v))
				bench_die("%s: send failed on an open channel", ops->name);
		}
	} else {
		uint64_t buf[MAX_BURST];
		while (v < end && !tp_stopped(t->sh)) {
			size_t n = end - v < burst ? (size_t)(end - v) : burst;
			for (size_t i = 0; i < n; i++)
				buf[i] = v + i;
			for (size_t off = 0; off < n;) {
				size_t m = ops->send_burst(ch, buf + off, n - off);
				if (m == 0)
					bench_die("%s: send_burst failed on an open channel", ops->name);
				off += m;
			}
			v += n;
		}
	}
	/* Sent first .. v - 1. */
	t->n = v - t->first;
	t->sum = t->n % 2 ? t->n * ((t->first + v - 1) / 2) : (t->n / 2) * (t->first + v - 1);
	pthread_mutex_lock(&t->sh->lock);
	if (--t->sh->running == 0)
		pthread_cond_signal(&t->sh->done);
	pthread_mutex_unlock(&t->sh->lock);
	return NULL;
}

static void *tp_consumer(void *arg)
{
	struct tp_thread *t = arg;
	const struct bench_ops *ops = t->sh->ops;
	void *ch = t->ch;
	size_t burst = t->sh->burst;
	uint64_t n = 0, sum = 0;
	bench_barrier_wait(&t->sh->start);
	if (burst == 1) {
		uint64_t v;
		while (ops->recv(ch, &v)) {
			n++;
			sum += v;
		}
	} else {
		uint64_t buf[MAX_BURST];
		size_t m;
		while ((m = ops->recv_burst(ch, buf, burst)) > 0) {
			n += m;
			for (size_t i = 0; i < m; i++)
				sum += buf[i];
		}
	}
	t->n = n;
	t->sum = sum;
	return NULL;
}

/* The select workloads' one consumer.  The selector is built before the
 * start barrier (outside the timed run) and reused for every element. */
static void *tp_select_consumer(void *arg)
{
	struct tp_thread *t = arg;
	const struct bench_ops *ops = t->sh->ops;
	uint64_t v, n = 0, sum = 0;
	void *sel = ops->select_create(t->sh->chans, t->sh->nchan, &v);
	if (!sel)
		bench_die("%s: select_create over %zu channels failed", ops->name, t->sh->nchan);
	bench_barrier_wait(&t->sh->start);
	while (ops->select_recv(sel)) {
		n++;
		sum += v;
	}
	ops->select_destroy(sel); /* every channel is closed by now */
	t->n = n;
	t->sum = sum;
	return NULL;
}

/*
 * Producers stop at a time limit even if they have not sent all their items:
 * ck_ring's MPMC enqueue makes every producer wait, spinning, for the ones
 * that reserved slots before it to finish, and with more threads than cores
 * the one it waits for is often not running, so a run can crawl for
 * minutes.  The main thread sleeps until the producers are done or the limit
 * passes, then raises the stop flag; they check it before every send (a
 * clock read per send would cost more than some sends).  A run cut short
 * reports what it moved in the time it had, and says so on stderr.
 *
 * nchan 1: every thread uses the one channel.  Otherwise (select) producer i
 * sends to channel i and the one consumer selects over all of them.
 */
static void throughput(const struct bench_workload *w, const struct bench_ops *ops,
		       const struct bench_config *cfg, uint64_t items, size_t nchan, double *out)
{
	size_t np = (size_t)w->producers, nc = (size_t)w->consumers;
	struct tp_shared sh = {.ops = ops, .nchan = nchan, .burst = w->burst};
	for (size_t i = 0; i < nchan; i++)
		if (!(sh.chans[i] = ops->create(TP_CAP, sizeof(uint64_t))))
			bench_die("%s: create(%d, 8) failed", ops->name, TP_CAP);
	bench_barrier_init(&sh.start, (unsigned)(np + nc + 1));
	bench_cond_init(&sh.lock, &sh.done);
	sh.running = np;
	atomic_init(&sh.stop, false);
	struct tp_thread *t = bench_alloc((np + nc) * sizeof *t);
	uint64_t first = 0;
	for (size_t i = 0; i < np; i++) {
		t[i].sh = &sh;
		t[i].first = first;
		t[i].count = items / np + (i < items % np);
		first += t[i].count;
	}
	for (size_t i = 0; i < np + nc; i++) {
		t[i].sh = &sh;
		t[i].ch = sh.chans[nchan > 1 && i < np ? i : 0];
	}
	for (size_t i = 0; i < np + nc; i++)
		bench_spawn(&t[i].tid, i < np ? tp_producer : nchan > 1 ? tp_select_consumer : tp_consumer, &t[i],
			    (int)i);
	bench_barrier_wait(&sh.start);
	int64_t t0 = bench_now_ns();
	struct timespec limit = bench_timespec(t0 + (int64_t)(cfg->limit_s * 1e9));
	pthread_mutex_lock(&sh.lock);
	while (sh.running > 0 && pthread_cond_timedwait(&sh.done, &sh.lock, &limit) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&sh.lock);
	atomic_store_explicit(&sh.stop, true, memory_order_relaxed);
	for (size_t i = 0; i < np; i++)
		bench_join(t[i].tid);
	for (size_t i = 0; i < nchan; i++)
		ops->close(sh.chans[i]);
	for (size_t i = np; i < np + nc; i++)
		bench_join(t[i].tid);
	int64_t t1 = bench_now_ns();

	/* Exactly once: the consumers got as many items as the producers sent,
	 * with the same sum (mod 2^64). */
	uint64_t sent = 0, want = 0, got = 0, sum = 0;
	for (size_t i = 0; i < np; i++) {
		sent += t[i].n;
		want += t[i].sum;
	}
	for (size_t i = np; i < np + nc; i++) {
		got += t[i].n;
		sum += t[i].sum;
	}
	if (got != sent || sum != want)
		bench_die("%s: %s lost or duplicated items: received %llu (sum %llu), sent %llu (sum %llu)",
			  ops->name, w->name, (unsigned long long)got, (unsigned long long)sum,
			  (unsigned long long)sent, (unsigned long long)want);
	if (sent < items && !cfg->pilot)
		fprintf(stderr, "  %s, %s: stopped at the %.2f s time limit after %llu of %llu items\n", w->name,
			ops->name, cfg->limit_s, (unsigned long long)sent, (unsigned long long)items);
	for (size_t i = 0; i < nchan; i++)
		ops->destroy(sh.chans[i]);
	pthread_barrier_destroy(&sh.start);
	pthread_cond_destroy(&sh.done);
	pthread_mutex_destroy(&sh.lock);
	free(t);
	out[0] = (double)sent * 1e3 / (double)(t1 - t0); /* items per ns * 1e3 = Mops/s */
}

static void run_throughput(const struct bench_workload *w, const struct bench_ops *ops,
			   const struct bench_config *cfg, uint64_t items, double *out)
{
	throughput(w, ops, cfg, items, 1, out);
}

/* One producer per channel, one selecting consumer. */
static void run_select(const struct bench_workload *w, const struct bench_ops *ops,
		       const struct bench_config *cfg, uint64_t items, double *out)
{
	if (!ops->select_create) {
		out[0] = NAN;
		return;
	}
	if (w->consumers != 1 || w->producers < 2 || w->producers > MAX_SELECT)
		bench_die("%s: select workloads take 2 .. %d producers and 1 consumer", w->name, MAX_SELECT);
	throughput(w, ops, cfg, items, (size_t)w->producers, out);
}

/* --------------------------------------------------------------- ping-pong */

/* Enough for 0.25 s of 60 ns round trips; a run stops early when full. */
#define PP_MAX_SAMPLES ((size_t)1 << 22)

struct pp_shared {
	const struct bench_ops *ops;
	void *ab, *ba; /* A to B, B to A: capacity 1 (ping-pong) or 0 (rendezvous) each */
	int64_t duration_ns;
	uint32_t *samples;
	size_t n;
	pthread_barrier_t start;
};

static void *pp_echo(void *arg)
{
	struct pp_shared *sh = arg;
	uint64_t v;
	bench_barrier_wait(&sh->start);
	while (sh->ops->recv(sh->ab, &v))
		if (!sh->ops->send(sh->ba, &v))
			bench_die("%s: ping-pong echo failed", sh->ops->name);
	return NULL;
}

static void *pp_ping(void *arg)
{
	struct pp_shared *sh = arg;
	const struct bench_ops *ops = sh->ops;
	size_t n = 0;
	bench_barrier_wait(&sh->start);
	int64_t start = bench_now_ns(), prev = start;
	for (uint64_t i = 0; n < PP_MAX_SAMPLES; i++) {
		uint64_t v;
		if (!ops->send(sh->ab, &i) || !ops->recv(sh->ba, &v) || v != i)
			bench_die("%s: ping-pong lost its ball at trip %llu", ops->name, (unsigned long long)i);
		int64_t now = bench_now_ns();
		sh->samples[n++] = clamp32(now - prev);
		prev = now;
		if (now - start >= sh->duration_ns)
			break;
	}
	sh->n = n;
	ops->close(sh->ab); /* releases the echo thread */
	return NULL;
}

static void pingpong(const struct bench_ops *ops, const struct bench_config *cfg, size_t cap, double *out)
{
	struct pp_shared sh = {
		.ops = ops,
		.ab = ops->create(cap, sizeof(uint64_t)),
		.ba = ops->create(cap, sizeof(uint64_t)),
		.duration_ns = (int64_t)(cfg->pingpong_s * 1e9),
		.samples = bench_alloc(PP_MAX_SAMPLES * sizeof(uint32_t)),
	};
	if (!sh.ab || !sh.ba)
		bench_die("%s: create(%zu, 8) failed", ops->name, cap);
	bench_barrier_init(&sh.start, 2);
	pthread_t a, b;
	bench_spawn(&b, pp_echo, &sh, 1);
	bench_spawn(&a, pp_ping, &sh, 0);
	bench_join(a);
	bench_join(b);
	double q = 0.5;
	bench_percentiles(sh.samples, sh.n, &q, 1, out);
	ops->destroy(sh.ab);
	ops->destroy(sh.ba);
	pthread_barrier_destroy(&sh.start);
	free(sh.samples);
}

static void run_pingpong(const struct bench_workload *w, const struct bench_ops *ops,
			 const struct bench_config *cfg, uint64_t items, double *out)
{
	(void)w;
	(void)items;
	pingpong(ops, cfg, 1, out);
}

static void run_rendezvous(const struct bench_workload *w, const struct bench_ops *ops,
			   const struct bench_config *cfg, uint64_t items, double *out)
{
	(void)w;
	(void)items;
	if (!ops->has_rendezvous)
		out[0] = NAN;
	else
		pingpong(ops, cfg, 0, out);
}

/* ----------------------------------------------------------------- latency */

struct lat_shared {
	const struct bench_ops *ops;
	void *ch;
	int64_t period_ns;
	size_t count; /* messages to send */
	uint32_t *samples;
	size_t n;
	pthread_barrier_t start;
};

static void *lat_producer(void *arg)
{
	struct lat_shared *sh = arg;
	bench_barrier_wait(&sh->start);
	/* Start one period in, so the consumer has had time to block. */
	int64_t start = bench_now_ns() + sh->period_ns;
	for (size_t i = 0; i < sh->count; i++) {
		int64_t due = start + (int64_t)i * sh->period_ns, ts;
		/* Spin, not sleep: a sleeping producer would add its own wake-up
		 * jitter to the schedule. */
		while ((ts = bench_now_ns()) < due)
			conc_cpu_relax();
		if (!sh->ops->send(sh->ch, &ts))
			bench_die("%s: latency send failed", sh->ops->name);
	}
	sh->ops->close(sh->ch);
	return NULL;
}

static void *lat_consumer(void *arg)
{
	struct lat_shared *sh = arg;
	size_t n = 0;
	int64_t ts;
	bench_barrier_wait(&sh->start);
	while (sh->ops->recv(sh->ch, &ts)) {
		int64_t now = bench_now_ns();
		if (n < sh->count)
			sh->samples[n] = clamp32(now - ts);
		n++;
	}
	sh->n = n;
	return NULL;
}

static void run_latency(const struct bench_workload *w, const struct bench_ops *ops,
			const struct bench_config *cfg, uint64_t items, double *out)
{
	(void)w;
	(void)items;
	size_t count = (size_t)(cfg->latency_s * 1e9 / (double)cfg->latency_period_ns);
	if (count == 0)
		count = 1;
	struct lat_shared sh = {
		.ops = ops,
		.ch = ops->create(TP_CAP, sizeof(uint64_t)),
		.period_ns = cfg->latency_period_ns,
		.count = count,
		.samples = bench_alloc(count * sizeof(uint32_t)),
	};
	if (!sh.ch)
		bench_die("%s: create(%d, 8) failed", ops->name, TP_CAP);
	bench_barrier_init(&sh.start, 2);
	pthread_t p, c;
	bench_spawn(&c, lat_consumer, &sh, 1);
	bench_spawn(&p, lat_producer, &sh, 0);
	bench_join(p);
	bench_join(c);
	if (sh.n != count)
		bench_die("%s: latency: received %zu of %zu messages", ops->name, sh.n, count);
	static const double q[] = {0.5, 0.99, 0.999};
	bench_percentiles(sh.samples, sh.n, q, 3, out);
	ops->destroy(sh.ch);
	pthread_barrier_destroy(&sh.start);
	free(sh.samples);
}

/* -------------------------------------------------------------------- idle */

struct idle_shared {
	const struct bench_ops *ops;
	void *ch;
	int64_t cpu0, t0; /* the receiver's CPU clock and the time, just before recv */
	_Atomic(bool) ready;
};

static void *idle_receiver(void *arg)
{
	struct idle_shared *sh = arg;
	struct timespec ts;
	uint64_t v;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		bench_die("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
	sh->cpu0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	sh->t0 = bench_now_ns();
	/* Release: publishes cpu0 and t0; pairs with the acquire in run_idle(). */
	atomic_store_explicit(&sh->ready, true, memory_order_release);
	if (sh->ops->recv(sh->ch, &v))
		bench_die("%s: idle receiver got an element from an empty channel", sh->ops->name);
	return NULL;
}

static void run_idle(const struct bench_workload *w, const struct bench_ops *ops, const struct bench_config *cfg,
		     uint64_t items, double *out)
{
	(void)w;
	(void)items;
	struct idle_shared sh = {.ops = ops, .ch = ops->create(TP_CAP, sizeof(uint64_t))};
	if (!sh.ch)
		bench_die("%s: create(%d, 8) failed", ops->name, TP_CAP);
	atomic_init(&sh.ready, false);
	pthread_t r;
	bench_spawn(&r, idle_receiver, &sh, -1);
	/* Acquire: pairs with the release in idle_receiver(). */
	while (!atomic_load_explicit(&sh.ready, memory_order_acquire))
		bench_sleep(0.001);
	/* Counted from just before the recv call, so the cost of blocking (a
	 * spin phase, then sleeping or retrying) is all in. */
	bench_sleep(cfg->idle_s);
	int64_t cpu1 = bench_thread_cpu_ns(r), t1 = bench_now_ns();
	ops->close(sh.ch);
	bench_join(r);
	ops->destroy(sh.ch);
	out[0] = (double)(cpu1 - sh.cpu0) * 1e6 / (double)(t1 - sh.t0); /* us of CPU per s */
}

/* ---------------------------------------------------------------- the list */

const struct bench_workload bench_workloads[] = {
	{"throughput 1P/1C", ROW_TP_1, 1, true, 1, 1, 1, run_throughput},
	{"throughput 2P/2C", ROW_TP_2, 1, true, 2, 2, 1, run_throughput},
	{"throughput 8P/8C", ROW_TP_8, 1, true, 8, 8, 1, run_throughput},
	{"burst 1P/1C x32", ROW_BURST, 1, true, 1, 1, MAX_BURST, run_throughput},
	{"select 2", ROW_SELECT_2, 1, true, 2, 1, 1, run_select},
	{"select 4", ROW_SELECT_4, 1, true, 4, 1, 1, run_select},
	{"ping-pong", ROW_PINGPONG, 1, false, 1, 1, 1, run_pingpong},
	{"rendezvous", ROW_RENDEZVOUS, 1, false, 1, 1, 1, run_rendezvous},
	{"latency", ROW_LATENCY, 3, false, 1, 1, 1, run_latency},
	{"idle receiver", ROW_IDLE, 1, false, 0, 1, 1, run_idle},
	{"pool 2 workers", ROW_POOL_2, 1, true, 1, 2, 1, bench_run_pool},
	{"pool 8 workers", ROW_POOL_8, 1, true, 1, 8, 1, bench_run_pool},
	{"semaphore", ROW_SEM, 1, false, 1, 0, 1, bench_run_sem},
	{"semaphore contended", ROW_SEM_CONTENDED, 1, false, 8, 0, 1, bench_run_sem_contended},
	{"pipeline", ROW_PIPELINE, 1, true, 1, 1, 1, bench_run_pipeline},
	/* The limiter's burst field is its rate, in events per microsecond. */
	{"limiter 1 fast", ROW_RATE_1, 1, false, 1, 0, 10, bench_run_limiter},
	{"limiter 8 fast", ROW_RATE_8, 1, false, 8, 0, 10, bench_run_limiter},
	{"limiter 1 slow", ROW_RATE_1_SLOW, 1, false, 1, 0, 1, bench_run_limiter},
	{"limiter 8 slow", ROW_RATE_8_SLOW, 1, false, 8, 0, 1, bench_run_limiter},
	{"breaker 1", ROW_BREAKER_1, 1, false, 1, 0, 1, bench_run_breaker},
	{"breaker 8", ROW_BREAKER_8, 1, false, 8, 0, 1, bench_run_breaker},
	{"publish 1", ROW_PUB_1, 1, true, 1, 1, 1, bench_run_publish},
	{"publish 8", ROW_PUB_8, 1, true, 1, 8, 1, bench_run_publish},
	{"publish 64", ROW_PUB_64, 1, true, 1, 64, 1, bench_run_publish},
};
const size_t bench_nworkloads = sizeof bench_workloads / sizeof bench_workloads[0];

void bench_notes(const struct bench_results *r, char *buf, size_t size)
{
	/* A ratio of the two rows' medians, as the table shows them. */
	size_t off = 0;
	buf[0] = '\0';
	for (size_t c = 0; c < r->ncont && off < size; c++) {
		double rdv = r->median[ROW_RENDEZVOUS * r->ncont + c], pp = r->median[ROW_PINGPONG * r->ncont + c];
		if (!(rdv > 0 && pp > 0)) /* missing (NAN) */
			continue;
		int k = snprintf(buf + off, size - off, "%s%s %.2f",
				 off ? ", " : "rendezvous round trip / ping-pong round trip (capacity 0 over 1, this run): ",
				 r->names[c], rdv / pp);
		off += k > 0 ? (size_t)k : 0;
	}
	if (off > 0 && off + 1 < size) {
		buf[off++] = '\n';
		buf[off] = '\0';
	}
	if (off < size)
		bench_patterns_notes(r->median[ROW_SEM * r->ncont], buf + off, size - off);
}
