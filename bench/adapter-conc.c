/* SPDX-License-Identifier: MIT */
/*
 * bench/adapter-conc.c: conc's channel as a contender.
 *
 * Plain use of the public API, nothing tuned: conc_chan_new for the channel,
 * the blocking conc_chan_send/conc_chan_recv, and the burst calls, which wait
 * for at least one element and then move as many as they can with one claim.
 */
#include "harness.h"

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

const struct bench_ops bench_conc_ops = {
	.name = "conc",
	.create = conc_create,
	.send = conc_send,
	.recv = conc_recv,
	.send_burst = conc_send_burst,
	.recv_burst = conc_recv_burst,
	.close = conc_close,
	.destroy = conc_destroy,
};
