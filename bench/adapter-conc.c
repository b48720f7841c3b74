/* SPDX-License-Identifier: MIT */
/*
 * bench/adapter-conc.c: conc's channel as a contender.
 *
 * Plain use of the public API, nothing tuned: conc_chan_new for the channel,
 * the blocking conc_chan_send/conc_chan_recv, and the burst calls, which wait
 * for at least one element and then move as many as they can with one claim.
 * Capacity 0 is conc's own rendezvous channel.  The selector is an array of
 * conc_select_recv cases built once and passed to conc_select (fair) on every
 * call; a channel found closed and drained leaves the select by having its
 * case's channel set to NULL (Go's nil channel: never ready).
 */
#include "harness.h"

#include <stdlib.h>

static void *conc_create(size_t cap, size_t esize)
{
	struct conc_chan *c;
	return conc_chan_new(&c, cap, esize) == CONC_OK ? c : NULL;
}

static bool conc_send(void *ch, const void *elem)
{
	return conc_chan_send(ch, elem) == CONC_OK;
}

static bool conc_recv(void *ch, void *out)
{
	return conc_chan_recv(ch, out) == CONC_OK;
}

static size_t conc_send_burst(void *ch, const void *elems, size_t n)
{
	return conc_chan_send_burst(ch, elems, n, NULL);
}

static size_t conc_recv_burst(void *ch, void *out, size_t n)
{
	return conc_chan_recv_burst(ch, out, n, NULL);
}

static void conc_close(void *ch)
{
	(void)conc_chan_close(ch);
}

static void conc_destroy(void *ch)
{
	enum conc_status s = conc_chan_free(ch);
	if (s != CONC_OK)
		bench_die("conc_chan_free: %s", conc_strerror(s));
}

struct conc_selector {
	size_t live; /* cases whose channel is not yet closed and drained */
	size_t n;
	struct conc_select_case cases[];
};

static void *conc_select_create(void *const *chans, size_t k, void *out)
{
	struct conc_selector *s = bench_alloc(sizeof *s + k * sizeof s->cases[0]);
	s->live = s->n = k;
	for (size_t i = 0; i < k; i++)
		s->cases[i] = conc_select_recv(chans[i], out);
	return s;
}

static bool conc_select_recv_any(void *sel)
{
	struct conc_selector *s = sel;
	while (s->live > 0) {
		size_t i;
		enum conc_status st = conc_select(s->cases, s->n, 0, &i);
		if (st == CONC_OK)
			return true;
		if (st != CONC_CLOSED)
			bench_die("conc_select: %s", conc_strerror(st));
		s->cases[i].chan = NULL;
		s->live--;
	}
	return false;
}

static void conc_select_destroy(void *sel)
{
	free(sel);
}

const struct bench_ops bench_conc_ops = {
	.name = "conc",
	.has_rendezvous = true,
	.create = conc_create,
	.send = conc_send,
	.recv = conc_recv,
	.send_burst = conc_send_burst,
	.recv_burst = conc_recv_burst,
	.close = conc_close,
	.destroy = conc_destroy,
	.select_create = conc_select_create,
	.select_recv = conc_select_recv_any,
	.select_destroy = conc_select_destroy,
};
