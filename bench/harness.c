/* SPDX-License-Identifier: MIT */
/*
 * bench/harness.c: threads, timing, statistics and output for the benchmark.
 *
 * Everything here aborts on failure (bench_die): a benchmark that cannot
 * create a thread or write its table has nothing trustworthy to report.
 * The plot is the exception: without gnuplot it is skipped with a message.
 */
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

/* ----------------------------------------------------------------- threads */

void bench_die(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs("conc-bench: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* The CPUs threads are pinned to, in order; none while pinning is off. */
static int pin_cpus[CPU_SETSIZE];
static int pin_count;

int bench_set_pinning(bool on)
{
	cpu_set_t set;
	pin_count = 0;
	if (!on || sched_getaffinity(0, sizeof set, &set) != 0)
		return 0;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &set))
			pin_cpus[pin_count++] = cpu;
	return pin_count;
}

void bench_spawn(pthread_t *t, void *(*fn)(void *), void *arg, int slot)
{
	pthread_attr_t attr;
	int e = pthread_attr_init(&attr);
	if (!e && slot >= 0 && pin_count > 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(pin_cpus[slot % pin_count], &set);
		e = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
	}
	if (!e)
		e = pthread_create(t, &attr, fn, arg);
	if (e)
		bench_die("pthread_create: %s", strerror(e));
	pthread_attr_destroy(&attr);
}

void bench_pin_self(int slot)
{
	if (slot < 0 || pin_count == 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(pin_cpus[slot % pin_count], &set);
	int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
	if (e)
		bench_die("pthread_setaffinity_np: %s", strerror(e));
}

void bench_join(pthread_t t)
{
	int e = pthread_join(t, NULL);
	if (e)
		bench_die("pthread_join: %s", strerror(e));
}

void bench_barrier_init(pthread_barrier_t *b, unsigned count)
{
	int e = pthread_barrier_init(b, NULL, count);
	if (e)
		bench_die("pthread_barrier_init: %s", strerror(e));
}

void bench_barrier_wait(pthread_barrier_t *b)
{
	int e = pthread_barrier_wait(b);
	if (e && e != PTHREAD_BARRIER_SERIAL_THREAD)
		bench_die("pthread_barrier_wait: %s", strerror(e));
}

void bench_cond_init(pthread_mutex_t *m, pthread_cond_t *c)
{
	pthread_condattr_t attr;
	if (pthread_mutex_init(m, NULL) || pthread_condattr_init(&attr) ||
	    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) || pthread_cond_init(c, &attr))
		bench_die("pthread mutex or condition variable init failed");
	pthread_condattr_destroy(&attr);
}

void *bench_alloc(size_t size)
{
	/* aligned_alloc wants a multiple of the alignment. */
	size_t rounded = (size + CONC_CACHELINE - 1) & ~(size_t)(CONC_CACHELINE - 1);
	void *p = rounded >= size ? aligned_alloc(CONC_CACHELINE, rounded ? rounded : CONC_CACHELINE) : NULL;
	if (!p)
		bench_die("out of memory (%zu bytes)", size);
	memset(p, 0, rounded);
	return p;
}

/* ------------------------------------------------------------------ timing */

void bench_sleep(double s)
{
	struct timespec ts;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Total and idle (idle + iowait) jiffies of all CPUs, from /proc/stat. */
static bool cpu_jiffies(unsigned long long *total, unsigned long long *idle)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return false;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		       &v[6], &v[7]);
	fclose(f);
	if (n < 5)
		return false;
	*total = 0;
	for (int i = 0; i < 8; i++)
		*total += v[i];
	*idle = v[3] + v[4];
	return true;
}

double bench_cpu_busy(double s)
{
	unsigned long long t0, i0, t1, i1;
	if (!cpu_jiffies(&t0, &i0))
		return -1;
	bench_sleep(s);
	if (!cpu_jiffies(&t1, &i1) || t1 <= t0)
		return -1;
	return 1.0 - (double)(i1 - i0) / (double)(t1 - t0);
}

int64_t bench_thread_cpu_ns(pthread_t t)
{
	clockid_t cid;
	struct timespec ts;
	int e = pthread_getcpuclockid(t, &cid);
	if (e)
		bench_die("pthread_getcpuclockid: %s", strerror(e));
	if (clock_gettime(cid, &ts) != 0)
		bench_die("clock_gettime(thread CPU clock): %s", strerror(errno));
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------- stats */

uint32_t bench_select(uint32_t *v, size_t lo, size_t n, size_t k)
{
	/* Hoare partitioning around a median of three; signed indices because
	 * j may step below lo. */
	ptrdiff_t l = (ptrdiff_t)lo, h = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
	while (l < h) {
		uint32_t a = v[l], b = v[l + (h - l) / 2], c = v[h];
		uint32_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
		ptrdiff_t i = l, j = h;
		while (i <= j) {
			while (v[i] < pivot)
				i++;
			while (v[j] > pivot)
				j--;
			if (i <= j) {
				uint32_t x = v[i];
				v[i++] = v[j];
				v[j--] = x;
			}
		}
		/* Now v[l..j] <= pivot <= v[i..h], and v[j+1..i-1] == pivot. */
		if (kk <= j)
			h = j;
		else if (kk >= i)
			l = i;
		else
			break;
	}
	return v[k];
}

void bench_percentiles(uint32_t *v, size_t n, const double *q, size_t nq, double *out)
{
	if (n == 0)
		bench_die("percentile of no samples");
	size_t lo = 0;
	for (size_t i = 0; i < nq; i++) {
		/* Nearest rank: the smallest sample with at least q of them at or
		 * below it. */
		double r = ceil(q[i] * (double)n);
		size_t k = r < 1 ? 0 : (size_t)r - 1;
		if (k >= n)
			k = n - 1;
		/* Samples past the previous rank are all >= it: select among them. */
		out[i] = (double)bench_select(v, lo, n, k);
		lo = k;
	}
}

double bench_median(double *v, size_t n)
{
	for (size_t i = 1; i < n; i++) /* insertion sort: n is the repetitions */
		for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double x = v[j];
			v[j] = v[j - 1];
			v[j - 1] = x;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ----------------------------------------------------------------- machine */

static void cpu_model(char *buf, size_t size)
{
	snprintf(buf, size, "unknown CPU");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		/* x86 says "model name", some Arm kernels "Model" or "Hardware". */
		if (strncmp(line, "model name", 10) && strncmp(line, "Model", 5) && strncmp(line, "Hardware", 8))
			continue;
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		char *s = colon + 1;
		s += strspn(s, " \t");
		s[strcspn(s, "\n")] = '\0';
		if (*s) {
			snprintf(buf, size, "%s", s);
			break;
		}
	}
	fclose(f);
}

const char *bench_machine(void)
{
	static char buf[640];
	char model[256], date[64] = "unknown date";
	cpu_model(model, sizeof model);
	time_t now = time(NULL);
	struct tm tm;
	if (gmtime_r(&now, &tm))
		strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm);
	struct utsname u;
	char kernel[160] = "unknown kernel";
	if (uname(&u) == 0)
		snprintf(kernel, sizeof kernel, "%s %s", u.sysname, u.release);
#if defined(__clang__)
	const char *compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
	const char *compiler = "gcc " __VERSION__;
#else
	const char *compiler = "unknown compiler";
#endif
	snprintf(buf, sizeof buf, "%ld CPUs, %s, %s, %s, %s", sysconf(_SC_NPROCESSORS_ONLN), model, kernel,
		 compiler, date);
	return buf;
}

/* ------------------------------------------------------------------ output */

/* conc's advantage over contender c on row i, oriented so > 1 means conc
 * is better; NAN if a value is missing, INFINITY if conc used nothing. */
static double ratio(const struct bench_results *r, size_t i, size_t c)
{
	double conc = r->median[i * r->ncont], other = r->median[i * r->ncont + c];
	if (isnan(conc) || isnan(other))
		return NAN;
	double num = r->rows[i].better_lower ? other : conc, den = r->rows[i].better_lower ? conc : other;
	return den > 0 ? num / den : (num > 0 ? INFINITY : NAN);
}

/* Three significant digits or so, without an exponent. */
static void fmt_value(char *buf, size_t size, double v)
{
	if (isnan(v))
		snprintf(buf, size, "-");
	else if (isinf(v))
		snprintf(buf, size, "inf");
	else if (fabs(v) >= 100)
		snprintf(buf, size, "%.0f", v);
	else if (fabs(v) >= 10)
		snprintf(buf, size, "%.1f", v);
	else if (fabs(v) >= 1 || v == 0)
		snprintf(buf, size, "%.2f", v);
	else
		snprintf(buf, size, "%.3g", v);
}

/* Columns of UTF-8 text (every byte but continuation bytes). */
static size_t text_width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void pad(FILE *f, const char *s, size_t width, bool left)
{
	size_t w = text_width(s);
	if (!left)
		for (; w < width; w++)
			fputc(' ', f);
	fputs(s, f);
	if (left)
		for (; w < width; w++)
			fputc(' ', f);
}

void bench_print_table(FILE *f, const struct bench_results *r)
{
	char buf[96];
	size_t lw = 8;
	for (size_t i = 0; i < r->nrows; i++) {
		snprintf(buf, sizeof buf, "%s (%s)", r->rows[i].label, r->rows[i].unit);
		if (text_width(buf) > lw)
			lw = text_width(buf);
	}
	pad(f, "workload", lw, true);
	for (size_t c = 0; c < r->ncont; c++)
		pad(f, r->names[c], 11, false);
	for (size_t c = 1; c < r->ncont; c++) {
		snprintf(buf, sizeof buf, "conc/%s", r->names[c]);
		pad(f, buf, 14, false);
	}
	fputc('\n', f);
	for (size_t i = 0; i < r->nrows; i++) {
		snprintf(buf, sizeof buf, "%s (%s)", r->rows[i].label, r->rows[i].unit);
		pad(f, buf, lw, true);
		for (size_t c = 0; c < r->ncont; c++) {
			fmt_value(buf, sizeof buf, r->median[i * r->ncont + c]);
			pad(f, buf, 11, false);
		}
		for (size_t c = 1; c < r->ncont; c++) {
			double x = ratio(r, i, c);
			fmt_value(buf, sizeof buf, x);
			if (isfinite(x))
				strcat(buf, "x");
			pad(f, buf, 14, false);
		}
		fputc('\n', f);
	}
	fprintf(f, "Medians of %d repetition%s.  Ratios > 1 mean conc is better: conc/other for throughput,\n"
		   "other/conc for latency and CPU time.\n",
		r->reps, r->reps == 1 ? "" : "s");
	fputs(r->notes, f);
}

/* mkdir -p */
static void make_dirs(const char *dir)
{
	char *p = strdup(dir);
	if (!p)
		bench_die("out of memory");
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0777) != 0 && errno != EEXIST)
			bench_die("cannot create %s: %s", p, strerror(errno));
		*s = c;
		if (!c)
			break;
	}
	free(p);
}

static FILE *open_out(const char *dir, const char *name, char *path, size_t size)
{
	snprintf(path, size, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (!f)
		bench_die("cannot write %s: %s", path, strerror(errno));
	return f;
}

static void close_out(FILE *f, const char *path)
{
	if (ferror(f) | fclose(f))
		bench_die("error writing %s", path);
}

static void write_csv(const char *dir, const struct bench_results *r)
{
	char path[4096];
	FILE *f = open_out(dir, "bench.csv", path, sizeof path);
	fputs("workload,unit,better", f);
	for (size_t c = 0; c < r->ncont; c++)
		fprintf(f, ",%s", r->names[c]);
	for (size_t c = 1; c < r->ncont; c++)
		fprintf(f, ",conc/%s", r->names[c]);
	fputc('\n', f);
	for (size_t i = 0; i < r->nrows; i++) {
		fprintf(f, "%s,%s,%s", r->rows[i].label, r->rows[i].unit, r->rows[i].better_lower ? "lower" : "higher");
		for (size_t c = 0; c < r->ncont; c++)
			fprintf(f, ",%.6g", r->median[i * r->ncont + c]);
		for (size_t c = 1; c < r->ncont; c++)
			fprintf(f, ",%.6g", ratio(r, i, c));
		fputc('\n', f);
	}
	close_out(f, path);

	/* Every repetition, for anyone who wants the spread and not the median. */
	f = open_out(dir, "bench-raw.csv", path, sizeof path);
	fputs("workload,unit,contender,rep,value\n", f);
	for (size_t i = 0; i < r->nrows; i++)
		for (size_t c = 0; c < r->ncont; c++)
			for (int k = 0; k < r->reps; k++)
				fprintf(f, "%s,%s,%s,%d,%.6g\n", r->rows[i].label, r->rows[i].unit, r->names[c], k + 1,
					r->raw[i * r->ncont + c][k]);
	close_out(f, path);
}

static void write_markdown(const char *dir, const struct bench_results *r)
{
	char path[4096], buf[64];
	FILE *f = open_out(dir, "bench.md", path, sizeof path);
	fprintf(f, "Medians of %d repetition%s on %s.\n", r->reps, r->reps == 1 ? "" : "s", bench_machine());
	fputs("Ratios > 1 mean conc is better (conc/other for throughput, other/conc for latency and CPU).\n\n", f);
	fputs("| workload |", f);
	for (size_t c = 0; c < r->ncont; c++)
		fprintf(f, " %s |", r->names[c]);
	for (size_t c = 1; c < r->ncont; c++)
		fprintf(f, " conc vs %s |", r->names[c]);
	fputs("\n| --- |", f);
	for (size_t c = 0; c < 2 * r->ncont - 1; c++)
		fputs(" ---: |", f);
	fputc('\n', f);
	for (size_t i = 0; i < r->nrows; i++) {
		fprintf(f, "| %s (%s) |", r->rows[i].label, r->rows[i].unit);
		for (size_t c = 0; c < r->ncont; c++) {
			fmt_value(buf, sizeof buf, r->median[i * r->ncont + c]);
			fprintf(f, " %s |", buf);
		}
		for (size_t c = 1; c < r->ncont; c++) {
			double x = ratio(r, i, c);
			fmt_value(buf, sizeof buf, x);
			fprintf(f, " %s%s |", buf, isfinite(x) ? "\xc3\x97" : "");
		}
		fputc('\n', f);
	}
	if (*r->notes)
		fprintf(f, "\n%s", r->notes);
	close_out(f, path);
}

/* One gnuplot data block per panel (selected with `index`), each opening
 * with a header line that names the columns. */
static void write_plot_data(const char *dir, const struct bench_results *r)
{
	static const char *const titles[BENCH_PANEL_COUNT] = {"throughput", "select", "latency", "CPU", "patterns", "resilience"};
	char path[4096];
	FILE *f = open_out(dir, "bench-plot.dat", path, sizeof path);
	for (int p = BENCH_PANEL_THROUGHPUT; p < BENCH_PANEL_COUNT; p++) {
		fprintf(f, "# %s\nworkload", titles[p]);
		for (size_t c = 0; c < r->ncont; c++)
			fprintf(f, " %s", r->names[c]);
		fputc('\n', f);
		for (size_t i = 0; i < r->nrows; i++) {
			if (r->rows[i].panel != (enum bench_panel)p)
				continue;
			fprintf(f, "\"%s\"", r->rows[i].tag);
			for (size_t c = 0; c < r->ncont; c++) {
				double v = r->median[i * r->ncont + c];
				if (isnan(v))
					fputs(" NaN", f);
				else
					fprintf(f, " %.6g", v);
			}
			fputc('\n', f);
		}
		fputs("\n\n", f);
	}
	close_out(f, path);
}

/* printf at buf + *off, advancing *off; dies if it does not fit. */
static void append(char *buf, size_t size, size_t *off, const char *fmt, ...) BENCH_PRINTF(4, 5);
static void append(char *buf, size_t size, size_t *off, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = *off < size ? vsnprintf(buf + *off, size - *off, fmt, ap) : -1;
	va_end(ap);
	if (n < 0 || (size_t)n >= size - *off)
		bench_die("plot arguments too long");
	*off += (size_t)n;
}

/* The gnuplot variables the script takes: ncont, and per panel the data
 * columns (contenders) with at least one value there.  gnuplot cannot draw a
 * histogram series without a valid point, so the others get no bars: a
 * contender without the feature (ck_ring has no select), or every contender
 * in a panel that --only left out. */
static void plot_vars(const struct bench_results *r, char *buf, size_t size)
{
	size_t off = 0;
	append(buf, size, &off, "ncont=%zu; array cols[%d] = [", r->ncont, BENCH_PANEL_COUNT);
	for (int p = BENCH_PANEL_THROUGHPUT; p < BENCH_PANEL_COUNT; p++) {
		append(buf, size, &off, "%s'", p ? ", " : "");
		for (size_t c = 0; c < r->ncont; c++) {
			bool any = false;
			for (size_t i = 0; i < r->nrows; i++)
				any = any || (r->rows[i].panel == (enum bench_panel)p && !isnan(r->median[i * r->ncont + c]));
			if (any)
				append(buf, size, &off, " %zu", c + 2);
		}
		append(buf, size, &off, "'");
	}
	append(buf, size, &off, "]");
}

/* Run gnuplot on script inside dir (so no path needs quoting for gnuplot);
 * returns whether it made the plot. */
static bool run_gnuplot(const char *dir, const char *script, const struct bench_results *r)
{
	char *abs = realpath(script, NULL);
	if (!abs) {
		printf("plot skipped: no gnuplot script at %s\n", script);
		return false;
	}
	char arg[512];
	plot_vars(r, arg, sizeof arg);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		if (chdir(dir) != 0)
			_exit(126);
		execlp("gnuplot", "gnuplot", "-e", arg, abs, (char *)NULL);
		_exit(127);
	}
	free(abs);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			bench_die("waitpid: %s", strerror(errno));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return true;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
		printf("plot skipped: gnuplot not found (install gnuplot-nox)\n");
	else
		printf("plot skipped: gnuplot failed (status %d)\n", st);
	return false;
}

void bench_write_outputs(const char *dir, const struct bench_results *r, const char *plot_script)
{
	make_dirs(dir);
	write_csv(dir, r);
	write_markdown(dir, r);
	write_plot_data(dir, r);
	printf("table: %s/bench.md, %s/bench.csv (every repetition: %s/bench-raw.csv)\n", dir, dir, dir);
	if (run_gnuplot(dir, plot_script, r))
		printf("plot:  %s/bench.png, %s/bench.svg\n", dir, dir);
}

/* ------------------------------------------------------------- timed loops */

/* bench_run_loop's threads (see harness.h). */
struct loop_shared {
	uint64_t (*step)(void *state);
	void *state;
	pthread_barrier_t start;
	_Atomic(bool) stop;
};

struct loop_worker {
	struct loop_shared *sh;
	uint64_t ops;
	pthread_t thread;
};

static void *loop_main(void *arg)
{
	struct loop_worker *w = arg;
	struct loop_shared *sh = w->sh;
	bench_barrier_wait(&sh->start);
	uint64_t n = 0;
	while (!atomic_load_explicit(&sh->stop, memory_order_relaxed))
		n += sh->step(sh->state);
	w->ops = n;
	return NULL;
}

double bench_run_loop(int threads, double seconds, uint64_t (*step)(void *), void *state)
{
	if (threads < 1 || threads > BENCH_LOOP_MAX_THREADS)
		bench_die("bench_run_loop: %d threads", threads);
	struct loop_shared *sh = bench_alloc(sizeof *sh);
	sh->step = step;
	sh->state = state;
	bench_barrier_init(&sh->start, (unsigned)threads + 1);
	struct loop_worker wk[BENCH_LOOP_MAX_THREADS];
	for (int i = 0; i < threads; i++) {
		wk[i].sh = sh;
		bench_spawn(&wk[i].thread, loop_main, &wk[i], i);
	}
	bench_barrier_wait(&sh->start);
	int64_t t0 = bench_now_ns();
	bench_sleep(seconds);
	atomic_store(&sh->stop, true);
	uint64_t total = 0;
	for (int i = 0; i < threads; i++) {
		bench_join(wk[i].thread);
		total += wk[i].ops;
	}
	double secs = bench_seconds(bench_now_ns() - t0);
	pthread_barrier_destroy(&sh->start);
	free(sh);
	return (double)total / secs;
}
