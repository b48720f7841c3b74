/* SPDX-License-Identifier: MIT */
/*
 * bench/main.c: conc-bench, the benchmark driver.
 *
 * Runs every workload for every contender in this one process, so the ratios
 * compare runs made on the same machine moments apart.  First a pilot run per
 * throughput workload and contender, cut off after target_s, measures its
 * rate, which sizes the item count of the real runs (and warms up).  Then,
 * for each repetition, every workload runs every contender in turn, so slow
 * drifts of the machine (frequency, noisy neighbours) spread over all
 * contenders instead of landing on one.  The table reports medians.
 *
 *   conc-bench [--reps N] [--quick] [--no-pin] [--only WORD] [--out DIR]
 */
#include "harness.h"

#include "bench-config.h" /* BENCH_PLOT_SCRIPT, from bench/meson.build */

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct bench_ops *const contenders[] = {
	&bench_conc_ops, /* first: every ratio is conc against the others */
	&bench_mutex_ops,
#ifdef BENCH_HAVE_CK
	&bench_ck_ops,
#endif
};
#define NCONT (sizeof contenders / sizeof contenders[0])

static _Noreturn void usage(int status)
{
	fputs("usage: conc-bench [--reps N] [--quick] [--no-pin] [--only WORD] [--out DIR]\n"
	      "  --reps N     repetitions per workload and contender (default 5; --quick: 1)\n"
	      "  --quick      short runs: a smoke test of a few seconds, numbers are rough\n"
	      "  --no-pin     let the scheduler place the threads (default: pinned round-robin)\n"
	      "  --only WORD  run only the workloads whose name contains WORD (throughput,\n"
	      "               8P/8C, burst, select, ping-pong, rendezvous, latency, idle,\n"
	      "               pool, semaphore, pipeline);\n"
	      "               the others show as -\n"
	      "  --out DIR    where bench.csv, bench.md and the plot go (default bench/out)\n",
	      status ? stderr : stdout);
	exit(status);
}

static void parse_args(int argc, char **argv, struct bench_config *cfg)
{
	int reps = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--quick")) {
			cfg->quick = true;
		} else if (!strcmp(a, "--no-pin")) {
			cfg->pin = false;
		} else if (!strcmp(a, "--reps") && i + 1 < argc) {
			char *end;
			long n = strtol(argv[++i], &end, 10);
			if (*end || n < 1 || n > 1000)
				usage(2);
			reps = (int)n;
		} else if (!strcmp(a, "--only") && i + 1 < argc) {
			cfg->only = argv[++i];
		} else if (!strcmp(a, "--out") && i + 1 < argc && argv[i + 1][0]) {
			cfg->out_dir = argv[++i];
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(0);
		} else {
			usage(2);
		}
	}
	if (cfg->quick) {
		cfg->reps = 1;
		cfg->target_s = 0.02;
		cfg->limit_s = 0.25;
		cfg->pingpong_s = 0.02;
		cfg->latency_s = 0.05;
		cfg->idle_s = 0.05;
	}
	if (reps)
		cfg->reps = reps;
}

static bool selected(const struct bench_config *cfg, const struct bench_workload *w)
{
	return !cfg->only || strstr(w->name, cfg->only);
}

/* Items for a throughput run of about cfg->target_s at the pilot's rate. */
static uint64_t sized(const struct bench_config *cfg, double mops)
{
	double n = mops * 1e6 * cfg->target_s;
	if (!(n >= 1e4))
		n = 1e4;
	if (n > 1e10)
		n = 1e10;
	return (uint64_t)n;
}

int main(int argc, char **argv)
{
	struct bench_config cfg = {
		.reps = 5,
		.pin = true,
		.target_s = 0.3,
		.limit_s = 1.5,
		.pingpong_s = 0.25,
		.latency_s = 0.5,
		.latency_period_ns = 20000,
		.idle_s = 1.0,
		.out_dir = "bench/out",
	};
	parse_args(argc, argv, &cfg);
	setvbuf(stdout, NULL, _IOLBF, 0);

	printf("conc-bench: %s\n", bench_machine());
	/* Anything else running skews the numbers; say so where it shows. */
	double busy = bench_cpu_busy(0.25);
	if (busy >= 0)
		printf("CPU busy before start: %.0f%%%s\n", busy * 100,
		       busy > 0.1 ? " (other work is running: expect noisy numbers)" : "");
	printf("contenders:");
	for (size_t c = 0; c < NCONT; c++)
		printf(" %s", contenders[c]->name);
#ifndef BENCH_HAVE_CK
	printf(" (ck_ring absent: Concurrency Kit was not found at build time)");
#endif
	printf("\n%d repetition%s%s; throughput and select runs of ~%.2f s at capacity 1024, ping-pong at\n"
	       "capacity 1, rendezvous at capacity 0\n",
	       cfg.reps, cfg.reps == 1 ? "" : "s", cfg.quick ? " (quick: rough numbers)" : "", cfg.target_s);
	int pinned = bench_set_pinning(cfg.pin);
	if (pinned)
		printf("threads pinned round-robin to the %d CPU%s this process may use\n", pinned,
		       pinned == 1 ? "" : "s");
	else
		printf("threads not pinned: the scheduler places them\n");

	size_t nw = bench_nworkloads, nr = bench_nrows;
	uint64_t *items = calloc(nw * NCONT, sizeof *items);
	double *median = calloc(nr * NCONT, sizeof *median);
	double **raw = calloc(nr * NCONT, sizeof *raw);
	if (!items || !median || !raw)
		bench_die("out of memory");
	for (size_t i = 0; i < nr * NCONT; i++) {
		if (!(raw[i] = calloc((size_t)cfg.reps, sizeof **raw)))
			bench_die("out of memory");
		for (int k = 0; k < cfg.reps; k++)
			raw[i][k] = NAN; /* workloads left out by --only */
	}

	double out[8];
	struct bench_config pilot = cfg;
	pilot.limit_s = cfg.target_s;
	pilot.pilot = true;
	fprintf(stderr, "calibrating...\n");
	for (size_t w = 0; w < nw; w++) {
		if (!bench_workloads[w].calibrate || !selected(&cfg, &bench_workloads[w]))
			continue;
		for (size_t c = 0; c < NCONT; c++) {
			/* More items than any run could move: the deadline ends it. */
			bench_workloads[w].run(&bench_workloads[w], contenders[c], &pilot, UINT64_C(1) << 40, out);
			items[w * NCONT + c] = sized(&cfg, out[0]);
		}
	}
	for (int rep = 0; rep < cfg.reps; rep++) {
		fprintf(stderr, "repetition %d/%d...\n", rep + 1, cfg.reps);
		for (size_t w = 0; w < nw; w++) {
			const struct bench_workload *wl = &bench_workloads[w];
			if (!selected(&cfg, wl))
				continue;
			for (size_t c = 0; c < NCONT; c++) {
				wl->run(wl, contenders[c], &cfg, items[w * NCONT + c], out);
				for (size_t k = 0; k < wl->nrows; k++)
					raw[(wl->first_row + k) * NCONT + c][rep] = out[k];
			}
		}
	}

	double *tmp = calloc((size_t)cfg.reps, sizeof *tmp);
	const char *names[NCONT];
	if (!tmp)
		bench_die("out of memory");
	for (size_t c = 0; c < NCONT; c++)
		names[c] = contenders[c]->name;
	for (size_t i = 0; i < nr * NCONT; i++) {
		memcpy(tmp, raw[i], (size_t)cfg.reps * sizeof *tmp);
		median[i] = bench_median(tmp, (size_t)cfg.reps);
	}
	char notes[2048];
	struct bench_results res = {nr, NCONT, bench_rows, names, median, (const double *const *)raw, cfg.reps, notes};
	bench_notes(&res, notes, sizeof notes);
	/* The limiter's accuracy, unless --only picked workloads other than the limiter's. */
	if (!cfg.only || strstr("limiter accuracy", cfg.only)) {
		size_t len = strlen(notes);
		bench_resilience_notes(&cfg, notes + len, sizeof notes - len);
	}
	putchar('\n');
	bench_print_table(stdout, &res);
	putchar('\n');
	bench_write_outputs(cfg.out_dir, &res, BENCH_PLOT_SCRIPT);

	for (size_t i = 0; i < nr * NCONT; i++)
		free(raw[i]);
	free(raw);
	free(tmp);
	free(median);
	free(items);
	return 0;
}
