/* SPDX-License-Identifier: MIT */
/*
 * timeout: Go's doWorkWithTimeout.  The work runs on its own thread and
 * reports on a channel of capacity 1, so its send never blocks even when
 * nobody is listening any more; the caller waits for the result or for its
 * context (a child of the caller's, with the timeout as its deadline),
 * whichever comes first.  Then it cancels the child (Go's `defer cancel()`),
 * which tells the work to give up, and joins the thread: nothing leaks.
 *
 * Three runs: work that completes in time, work that is slow (it waits on
 * its context, so it is slow by construction: it only ends when the context
 * does) and times out, and slow work whose caller is canceled from another
 * thread.  The output does not depend on timing.
 */
#include <conc.h>
#include <pthread.h>
#include <stdio.h>

struct result {
	enum conc_status err; /* CONC_OK, or why the work gave up */
	int value;
};

struct work {
	struct conc_ctx *ctx;
	struct conc_chan *result; /* capacity 1 */
	struct conc_chan *started; /* NULL, or capacity 1: "the work runs" */
	bool slow;
	int input;
};

/* doWork: fast work computes at once; slow work waits for its context to
 * end (as a slow network call with a context would) and reports why. */
static void *do_work(void *arg)
{
	struct work *w = arg;
	int one = 1;
	if (w->started && conc_chan_try_send(w->started, &one) != CONC_OK)
		return NULL; /* cannot happen: capacity 1, one send */
	struct result r = {CONC_OK, w->input * 2};
	if (w->slow)
		r.err = conc_ctx_wait_until(w->ctx, conc_deadline_forever());
	/* Capacity 1 and one send: never blocks, never fails, even when the
	 * caller has stopped listening. */
	if (conc_chan_try_send(w->result, &r) != CONC_OK)
		fprintf(stderr, "result channel full?\n");
	return NULL;
}

/*
 * Run the work with a timeout under parent (NULL for none).  Returns
 * CONC_OK and *value, or CONC_TIMEDOUT / CONC_CANCELED.  started, if not
 * NULL, gets a token once the work runs.
 */
static enum conc_status do_work_with_timeout(struct conc_ctx *parent, int64_t timeout_ms, bool slow, int input,
					     struct conc_chan *started, int *value)
{
	struct conc_ctx ctx;
	if (conc_ctx_init(&ctx, parent, conc_deadline_in_ms(timeout_ms)) != CONC_OK)
		return CONC_INVALID;
	struct conc_chan *result;
	if (conc_chan_new(&result, 1, sizeof(struct result)) != CONC_OK)
		return conc_ctx_destroy(&ctx) == CONC_OK ? CONC_NOMEM : CONC_BUSY;
	struct work w = {&ctx, result, started, slow, input};
	pthread_t t;
	pthread_create(&t, NULL, do_work, &w);

	/* select { case r := <-result: ...; case <-ctx.Done(): ... } */
	struct result r;
	enum conc_status s = conc_chan_recv_until(result, &r, conc_deadline_forever(), &ctx);
	if (s == CONC_OK) {
		s = r.err;
		*value = r.value;
	}

	conc_ctx_cancel(&ctx, 0); /* defer cancel(): the work stops if it still runs */
	pthread_join(t, NULL);
	conc_chan_free(result); /* a result nobody took is freed with it */
	return conc_ctx_destroy(&ctx) == CONC_OK ? s : CONC_BUSY;
}

struct canceler {
	struct conc_ctx *ctx;
	struct conc_chan *started;
};

static void *cancel_when_started(void *arg)
{
	struct canceler *c = arg;
	int one;
	if (conc_chan_recv(c->started, &one) == CONC_OK)
		conc_ctx_cancel(c->ctx, 0);
	return NULL;
}

int main(void)
{
	int value = 0;
	enum conc_status s = do_work_with_timeout(NULL, 10000, false, 21, NULL, &value);
	printf("fast work, 10 s timeout: %s, value %d\n", conc_strerror(s), value);

	s = do_work_with_timeout(NULL, 20, true, 21, NULL, &value);
	printf("slow work, 20 ms timeout: %s\n", conc_strerror(s));

	/* The caller's own context is canceled by another thread once the
	 * work has started; the work's timeout (10 s) does not matter. */
	struct conc_ctx request;
	struct conc_chan *started;
	if (conc_ctx_init_root(&request) != CONC_OK || conc_chan_new(&started, 1, sizeof(int)) != CONC_OK)
		return 1;
	struct canceler c = {&request, started};
	pthread_t t;
	pthread_create(&t, NULL, cancel_when_started, &c);
	s = do_work_with_timeout(&request, 10000, true, 21, started, &value);
	printf("slow work, canceled by another thread: %s\n", conc_strerror(s));
	pthread_join(t, NULL);
	conc_chan_free(started);
	return conc_ctx_destroy(&request) == CONC_OK ? 0 : 1;
}
