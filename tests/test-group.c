/* SPDX-License-Identifier: MIT */
/*
 * test-group: error groups and bounded parallelism (conc/group.h), and the
 * result type (conc/result.h).  Tasks that must be running before the test
 * acts block on a gate (a context the test cancels) and are counted in; no
 * sleep, nothing timed.
 */

/* Allocation hook: the nth allocation from now fails (0: none). */
static int alloc_fail_at;
#define CONC_ALIGNED_ALLOC(align, size) \
	(alloc_fail_at > 0 && --alloc_fail_at == 0 ? NULL : aligned_alloc((align), (size)))
#define CONC_FREE(p) free(p)

#include "conc.h"

#include <criterion/criterion.h>

#include "util.h"
#include "unit.h"

#define TASKS 64

static struct conc_pool *new_pool(size_t threads, size_t queue)
{
	struct conc_pool *p = NULL;
	struct conc_pool_config cfg = {.threads = threads, .queue_cap = queue};
	cr_assert_eq(conc_pool_new(&p, &cfg), CONC_OK);
	return p;
}

static void free_pool(struct conc_pool *p)
{
	cr_assert_eq(conc_pool_free(p), CONC_OK);
}

/* What the tasks share: who ran, how many at once, and a gate. */
struct board {
	_Atomic(int) ran[TASKS];
	_Atomic(int) running, most;
	_Atomic(int) entered;
	struct conc_ctx gate; /* tasks that wait, wait for this to be canceled */
	int fail_with[TASKS]; /* what task i returns */
	bool wait_gate[TASKS];
	bool wait_group[TASKS]; /* block until the group's context is done */
	struct conc_group *g;   /* for tasks that start tasks */
	int spawn[TASKS];       /* task i starts tasks 2i+1 and 2i+2 */
};

struct job {
	struct board *b;
	int i;
};

static int job_main(struct conc_ctx *ctx, void *arg)
{
	struct job *j = arg;
	struct board *b = j->b;
	int now = atomic_fetch_add(&b->running, 1) + 1;
	int most = atomic_load(&b->most);
	while (now > most && !atomic_compare_exchange_weak(&b->most, &most, now))
		;
	atomic_fetch_add(&b->ran[j->i], 1);
	atomic_fetch_add(&b->entered, 1);
	if (b->spawn[j->i])
		for (int k = 2 * j->i + 1; k <= 2 * j->i + 2; k++)
			if (conc_group_go(b->g, job_main, j - j->i + k) != CONC_OK)
				return -1000 - k;
	if (b->wait_gate[j->i])
		(void)conc_ctx_wait_until(&b->gate, conc_deadline_forever());
	if (b->wait_group[j->i])
		(void)conc_ctx_wait_until(ctx, conc_deadline_forever());
	atomic_fetch_sub(&b->running, 1);
	return b->fail_with[j->i];
}

static void board_init(struct board *b, struct job *jobs)
{
	memset(b, 0, sizeof *b);
	cr_assert_eq(conc_ctx_init_root(&b->gate), CONC_OK);
	for (int i = 0; i < TASKS; i++) {
		jobs[i].b = b;
		jobs[i].i = i;
	}
}

static void wait_entered(struct board *b, int n)
{
	while (atomic_load(&b->entered) < n)
		conc_yield();
}

/* What most tests set up: a board of tasks, a pool and a group on it. */
struct fix {
	struct board b;
	struct job jobs[TASKS];
	struct conc_pool *p;
	struct conc_group g;
	struct conc_group_error errs[8];
};

/* threads and queue for the pool; limit and errs_cap (<= 8) for the group. */
static void fix_up(struct fix *f, size_t threads, size_t queue, size_t limit, size_t errs_cap,
		   struct conc_ctx *parent)
{
	board_init(&f->b, f->jobs);
	f->p = new_pool(threads, queue);
	cr_assert_leq(errs_cap, 8);
	cr_assert_eq(conc_group_init(&f->g, f->p, parent, limit, errs_cap ? f->errs : NULL, errs_cap), CONC_OK);
}

static void fix_down(struct fix *f)
{
	cr_assert_eq(conc_group_destroy(&f->g), CONC_OK);
	cr_assert_eq(conc_ctx_destroy(&f->b.gate), CONC_OK);
	free_pool(f->p);
}

Test(group, bad_input)
{
	struct conc_pool *p = new_pool(1, 4);
	struct conc_group g;
	struct conc_group_error errs[2];
	cr_assert_eq(conc_group_init(NULL, p, NULL, 1, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_group_init(&g, NULL, NULL, 1, NULL, 0), CONC_INVALID);
	cr_assert_eq(conc_group_init(&g, p, NULL, 0, NULL, 0), CONC_INVALID, "limit 0 could run nothing");
	cr_assert_eq(conc_group_init(&g, p, NULL, 1, NULL, 2), CONC_INVALID, "a capacity without a buffer");
	cr_assert_eq(conc_group_init(&g, p, NULL, (size_t)UINT32_MAX + 1, errs, 2), CONC_INVALID);
	cr_assert_eq(conc_group_go(NULL, job_main, NULL), CONC_INVALID);
	cr_assert_eq(conc_group_try_go(NULL, job_main, NULL), CONC_INVALID);
	cr_assert_eq(conc_group_wait(NULL), CONC_INVALID);
	cr_assert_eq(conc_group_destroy(NULL), CONC_INVALID);
	cr_assert_eq(conc_group_cancel(NULL, 0), CONC_INVALID);
	cr_assert_null(conc_group_ctx(NULL));
	cr_assert_eq(conc_group_skipped(NULL), 0);
	size_t n = 9;
	uint64_t dropped = 9;
	cr_assert_null(conc_group_errors(NULL, &n, &dropped));
	cr_assert_eq(n, 0);
	cr_assert_eq(dropped, 0);

	cr_assert_eq(conc_group_init(&g, p, NULL, 2, errs, 2), CONC_OK);
	cr_assert_eq(conc_group_go(&g, NULL, NULL), CONC_INVALID);
	cr_assert_eq(conc_group_wait(&g), 0);
	cr_assert_eq(conc_group_destroy(&g), CONC_OK);
	free_pool(p);
}

Test(group, allocation_failure_leaks_nothing)
{
	struct conc_pool *p = new_pool(1, 4);
	struct conc_group g;
	for (int k = 1; k <= 2; k++) {
		alloc_fail_at = k; /* the slots, then the free-slot channel */
		cr_assert_eq(conc_group_init(&g, p, NULL, 3, NULL, 0), CONC_NOMEM, "failing allocation %d", k);
	}
	alloc_fail_at = 0;
	free_pool(p);
}

Test(group, runs_every_task_once_at_most_limit_at_a_time)
{
	struct fix f;
	fix_up(&f, 6, 8, 3, 0, NULL);
	for (int i = 0; i < TASKS; i++)
		cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[i]), CONC_OK);
	cr_assert_eq(conc_group_wait(&f.g), 0);
	for (int i = 0; i < TASKS; i++)
		cr_assert_eq(atomic_load(&f.b.ran[i]), 1, "task %d ran %d times", i, atomic_load(&f.b.ran[i]));
	cr_assert_leq(atomic_load(&f.b.most), 3, "%d tasks ran at once, limit 3", atomic_load(&f.b.most));
	size_t n;
	uint64_t dropped;
	conc_group_errors(&f.g, &n, &dropped);
	cr_assert_eq(n, 0);
	cr_assert_eq(dropped, 0);
	fix_down(&f);
}

Test(group, go_waits_for_a_slot_and_try_go_does_not)
{
	struct fix f;
	fix_up(&f, 4, 8, 2, 0, NULL);
	f.b.wait_gate[0] = f.b.wait_gate[1] = true;
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[0]), CONC_OK);
	cr_assert_eq(conc_group_try_go(&f.g, job_main, &f.jobs[1]), CONC_OK);
	wait_entered(&f.b, 2);
	cr_assert_eq(conc_group_try_go(&f.g, job_main, &f.jobs[2]), CONC_WOULDBLOCK, "both slots are held");
	cr_assert_eq(conc_group_go_until(&f.g, job_main, &f.jobs[2], conc_deadline_poll()), CONC_TIMEDOUT);
	cr_assert_eq(conc_group_go_until(&f.g, job_main, &f.jobs[2], conc_deadline_in_ms(2)), CONC_TIMEDOUT);
	cr_assert_eq(atomic_load(&f.b.ran[2]), 0);
	cr_assert_eq(conc_ctx_cancel(&f.b.gate, 0), CONC_OK);
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[2]), CONC_OK, "a slot comes free");
	cr_assert_eq(conc_group_wait(&f.g), 0);
	cr_assert_eq(atomic_load(&f.b.ran[2]), 1);
	fix_down(&f);
}

Test(group, first_error_cancels_the_others_and_is_returned)
{
	struct fix f;
	fix_up(&f, 4, 8, 4, 0, NULL);
	for (int i = 0; i < 3; i++)
		f.b.wait_group[i] = true; /* run until the group is canceled */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[i]), CONC_OK);
	wait_entered(&f.b, 3);
	f.b.fail_with[3] = 42;
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[3]), CONC_OK);
	cr_assert_eq(conc_group_wait(&f.g), 42);
	cr_assert_eq(conc_ctx_err(conc_group_ctx(&f.g)), CONC_CANCELED);
	cr_assert_eq(conc_ctx_cause(conc_group_ctx(&f.g)), 42, "the error is the cause");
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[4]), CONC_CANCELED, "a spent group starts nothing");
	cr_assert_eq(atomic_load(&f.b.ran[4]), 0);
	fix_down(&f);
}

Test(group, tasks_not_started_do_not_start_after_an_error)
{
	struct fix f;
	fix_up(&f, 1, 16, 16, 4, NULL);
	/* Task 0 holds the only worker until the other nine are queued, then
	 * fails: they must not start. */
	f.b.wait_gate[0] = true;
	for (int i = 0; i < 10; i++) {
		f.b.fail_with[i] = 100 + i;
		cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[i]), CONC_OK);
	}
	wait_entered(&f.b, 1);
	cr_assert_eq(conc_ctx_cancel(&f.b.gate, 0), CONC_OK);
	cr_assert_eq(conc_group_wait(&f.g), 100);
	size_t n;
	uint64_t dropped;
	const struct conc_group_error *e = conc_group_errors(&f.g, &n, &dropped);
	cr_assert_eq(e, f.errs);
	cr_assert_eq(n, 1);
	cr_assert_eq(dropped, 0);
	cr_assert_eq(e[0].status, 100);
	cr_assert_eq(e[0].task, 0);
	cr_assert_eq(e[0].arg, &f.jobs[0]);
	for (int i = 1; i < 10; i++)
		cr_assert_eq(atomic_load(&f.b.ran[i]), 0, "task %d started after the group failed", i);
	cr_assert_eq(conc_group_skipped(&f.g), 9);
	fix_down(&f);
}

Test(group, every_error_is_kept_with_its_task_or_counted_as_dropped)
{
	struct fix f;
	fix_up(&f, 6, 16, 6, 4, NULL);
	/* Six tasks all running at the gate, each then failing: all six
	 * errors happen; four fit, two are dropped. */
	for (int i = 0; i < 6; i++) {
		f.b.wait_gate[i] = true;
		f.b.fail_with[i] = 200 + i;
		cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[i]), CONC_OK);
	}
	wait_entered(&f.b, 6);
	cr_assert_eq(conc_ctx_cancel(&f.b.gate, 0), CONC_OK);
	int first = conc_group_wait(&f.g);
	cr_assert(first >= 200 && first < 206);
	size_t n;
	uint64_t dropped;
	const struct conc_group_error *e = conc_group_errors(&f.g, &n, &dropped);
	cr_assert_eq(n, 4);
	cr_assert_eq(dropped, 2);
	cr_assert_eq(e[0].status, first, "the first kept is the first error");
	for (size_t k = 0; k < n; k++) {
		cr_assert_eq(e[k].status, 200 + (int)e[k].task, "error %d tagged with task %llu", e[k].status,
			     (unsigned long long)e[k].task);
		cr_assert_eq(e[k].arg, &f.jobs[e[k].task]);
	}
	fix_down(&f);
}

struct go_call {
	struct conc_group *g;
	struct job *job;
	enum conc_status st;
};

static void *go_main(void *arg)
{
	struct go_call *c = arg;
	c->st = conc_group_go(c->g, job_main, c->job);
	return NULL;
}

Test(group, a_blocked_go_returns_when_the_group_is_canceled)
{
	struct conc_ctx parent;
	cr_assert_eq(conc_ctx_init_root(&parent), CONC_OK);
	struct fix f;
	fix_up(&f, 2, 4, 1, 0, &parent);
	f.b.wait_group[0] = true;
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[0]), CONC_OK);
	wait_entered(&f.b, 1);
	struct go_call c = {&f.g, &f.jobs[1], CONC_OK};
	pthread_t t;
	start(&t, go_main, &c);
	while (!conc_waitq_has_waiters(&f.g.ctx.waiters)) /* the go parked on the slot */
		conc_yield();
	cr_assert_eq(conc_ctx_cancel(&parent, 9), CONC_OK, "canceling the parent cancels the group");
	join(t);
	cr_assert_eq(c.st, CONC_CANCELED);
	cr_assert_eq(conc_group_wait(&f.g), 0, "task 0 returned 0 when canceled");
	cr_assert_eq(conc_ctx_cause(conc_group_ctx(&f.g)), 9);
	cr_assert_eq(atomic_load(&f.b.ran[1]), 0);
	fix_down(&f);
	cr_assert_eq(conc_ctx_destroy(&parent), CONC_OK);
}

Test(group, wait_times_out_and_destroy_is_busy_while_tasks_run)
{
	struct fix f;
	fix_up(&f, 2, 4, 2, 0, NULL);
	f.b.wait_gate[0] = true;
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[0]), CONC_OK);
	wait_entered(&f.b, 1);
	int first = 5;
	cr_assert_eq(conc_group_wait_until(&f.g, conc_deadline_in_ms(2), NULL, &first), CONC_TIMEDOUT);
	cr_assert_eq(first, 5, "untouched when the wait did not finish");
	struct conc_ctx ctx;
	cr_assert_eq(conc_ctx_init_root(&ctx), CONC_OK);
	cr_assert_eq(conc_ctx_cancel(&ctx, 0), CONC_OK);
	cr_assert_eq(conc_group_wait_until(&f.g, conc_deadline_forever(), &ctx, NULL), CONC_CANCELED);
	cr_assert_eq(conc_group_destroy(&f.g), CONC_BUSY);
	cr_assert_eq(conc_ctx_err(conc_group_ctx(&f.g)), CONC_OK, "a wait that gave up leaves the group live");
	cr_assert_eq(conc_ctx_cancel(&f.b.gate, 0), CONC_OK);
	cr_assert_eq(conc_group_wait_until(&f.g, conc_deadline_forever(), NULL, &first), CONC_OK);
	cr_assert_eq(first, 0);
	fix_down(&f);
	cr_assert_eq(conc_ctx_destroy(&ctx), CONC_OK);
}

struct shutdown_call {
	struct conc_pool *p;
	enum conc_status st;
};

static void *shutdown_main(void *arg)
{
	struct shutdown_call *c = arg;
	c->st = conc_pool_shutdown(c->p, CONC_POOL_ABORT);
	return NULL;
}

Test(group, a_pool_aborted_under_queued_tasks_fails_them)
{
	struct fix f;
	fix_up(&f, 1, 8, 8, 8, NULL);
	f.b.wait_gate[0] = true;
	for (int i = 0; i < 4; i++)
		cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[i]), CONC_OK);
	wait_entered(&f.b, 1);
	/* Abort from another thread while task 0 holds the only worker: the
	 * three queued tasks are dropped (and fail), then shutdown waits for
	 * task 0, which the gate lets go. */
	struct shutdown_call c = {f.p, CONC_INVALID};
	pthread_t t;
	start(&t, shutdown_main, &c);
	size_t n = 0;
	while (conc_group_errors(&f.g, &n, NULL), n < 3)
		conc_yield();
	cr_assert_eq(conc_ctx_cancel(&f.b.gate, 0), CONC_OK);
	join(t);
	cr_assert_eq(c.st, CONC_OK);
	cr_assert_eq(conc_group_wait(&f.g), CONC_CANCELED);
	uint64_t dropped;
	const struct conc_group_error *e = conc_group_errors(&f.g, &n, &dropped);
	cr_assert_eq(n, 3);
	for (size_t k = 0; k < n; k++) {
		cr_assert_eq(e[k].status, CONC_CANCELED);
		cr_assert_eq(atomic_load(&f.b.ran[e[k].task]), 0, "dropped task %llu ran",
			     (unsigned long long)e[k].task);
	}
	cr_assert_eq(atomic_load(&f.b.ran[0]), 1);
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[5]), CONC_CANCELED);
	fix_down(&f);
}

Test(group, tasks_may_start_tasks)
{
	struct fix f;
	fix_up(&f, 3, 64, 64, 0, NULL);
	f.b.g = &f.g;
	/* A binary tree of 31 tasks, each inner one starting its two children
	 * while it runs: wait still sees all of them. */
	for (int i = 0; i < 15; i++)
		f.b.spawn[i] = 1;
	cr_assert_eq(conc_group_go(&f.g, job_main, &f.jobs[0]), CONC_OK);
	cr_assert_eq(conc_group_wait(&f.g), 0);
	for (int i = 0; i < 31; i++)
		cr_assert_eq(atomic_load(&f.b.ran[i]), 1, "task %d", i);
	cr_assert_eq(atomic_load(&f.b.ran[31]), 0);
	fix_down(&f);
}

Test(result, carries_status_origin_and_value)
{
	int x = 3;
	struct conc_result r = conc_result_ok(7, &x);
	cr_assert(conc_result_is_ok(&r));
	cr_assert_eq(r.origin, 7);
	cr_assert_eq(r.value, &x);
	r = conc_result_err(8, CONC_TIMEDOUT);
	cr_assert_not(conc_result_is_ok(&r));
	cr_assert_eq(r.status, CONC_TIMEDOUT);
	cr_assert_eq(r.origin, 8);
	r = conc_result_err(9, 0);
	cr_assert_not(conc_result_is_ok(&r), "an error made from 0 is still an error");
	cr_assert_not(conc_result_is_ok(NULL));

	CONC_RESULT_TYPED(sq_result, int);
	struct conc_chan *c = new_chan(2, sizeof(struct sq_result));
	struct sq_result in = {CONC_OK, 4, 16}, out;
	cr_assert_eq(conc_chan_send(c, &in), CONC_OK);
	cr_assert_eq(conc_chan_recv(c, &out), CONC_OK);
	cr_assert_eq(out.status, CONC_OK);
	cr_assert_eq(out.origin, 4);
	cr_assert_eq(out.value, 16);
	free_chan(c);
}
