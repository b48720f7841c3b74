/* SPDX-License-Identifier: MIT */
/*
 * bench/adapter-ck.c: Concurrency Kit's ck_ring, MPMC flavour, as a contender.
 *
 * ck_ring is a non-blocking ring: enqueue fails when it is full, dequeue when
 * it is empty, and there is no close.  A user who wants a channel out of it
 * retries, and that is what this adapter does: spin with a pause a bounded
 * number of times, then sched_yield() on every further retry, so that with
 * more threads than cores a waiting thread gives its core to the one it
 * waits for.  It never sleeps, so a "blocked" ck thread keeps using CPU (the
 * idle workload measures how much).
 *
 * Elements go through the typed interface (CK_RING_PROTOTYPE) as 8-byte
 * structs, copied into the ring's own slots.  The ring size must be a power
 * of two and a ring of size s holds s - 1 elements; a capacity of cap gets
 * size max(2, next power of two >= cap): 1023 elements for 1024, 1 for 1.
 *
 * Close is a flag of this adapter.  A receiver that finds the ring empty and
 * the flag set dequeues once more and then reports closed; that drains
 * everything only because the harness closes after every sender has
 * returned (struct bench_ops' contract), which a general channel could not
 * assume.
 */
#include "harness.h"

#include <ck_pr.h>
#include <ck_ring.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct ck_item {
	uint64_t v;
};

CK_RING_PROTOTYPE(bench, ck_item)

struct ck_chan {
	struct ck_ring ring; /* ck pads its producer and consumer fields apart */
	/* Set once by close; read by every retry loop, so on a line of its own. */
	CONC_ALIGNED(CONC_CACHELINE) _Atomic(bool) closed;
	struct ck_item *slots;
};

/* Failed attempts, each followed by one pause, before the retry loop yields. */
#define CK_SPINS 128

struct ck_retry {
	unsigned spins;
};

static void ck_retry_wait(struct ck_retry *r)
{
	if (r->spins < CK_SPINS) {
		r->spins++;
		ck_pr_stall();
	} else {
		sched_yield();
	}
}

static bool ck_closed(struct ck_chan *c)
{
	/* Acquire: pairs with the release in ck_close(), so a receiver that sees
	 * the flag also sees every element the senders enqueued before it. */
	return atomic_load_explicit(&c->closed, memory_order_acquire);
}

static void *ck_create(size_t cap, size_t esize)
{
	if (esize != sizeof(struct ck_item) || cap == 0 || cap > UINT_MAX / 2 + 1)
		return NULL;
	unsigned size = 2;
	while (size < cap)
		size *= 2;
	struct ck_chan *c = bench_alloc(sizeof *c);
	c->slots = bench_alloc(size * sizeof *c->slots);
	ck_ring_init(&c->ring, size);
	atomic_store_explicit(&c->closed, false, memory_order_relaxed);
	return c;
}

/* Through a local item: ck's typed enqueue takes a non-const pointer, and the
 * harness's elements are plain uint64_t.  The copies compile to moves. */
static bool ck_enqueue(struct ck_chan *c, const void *elem)
{
	struct ck_item it;
	memcpy(&it, elem, sizeof it);
	return ck_ring_enqueue_mpmc_bench(&c->ring, c->slots, &it);
}

static bool ck_dequeue(struct ck_chan *c, void *out)
{
	struct ck_item it;
	if (!ck_ring_dequeue_mpmc_bench(&c->ring, c->slots, &it))
		return false;
	memcpy(out, &it, sizeof it);
	return true;
}

static bool ck_send(void *ch, const void *elem)
{
	struct ck_chan *c = ch;
	struct ck_retry r = {0};
	for (;;) {
		if (ck_closed(c))
			return false;
		if (ck_enqueue(c, elem))
			return true;
		ck_retry_wait(&r);
	}
}

static bool ck_recv(void *ch, void *out)
{
	struct ck_chan *c = ch;
	struct ck_retry r = {0};
	for (;;) {
		if (ck_dequeue(c, out))
			return true;
		if (ck_closed(c))
			return ck_dequeue(c, out);
		ck_retry_wait(&r);
	}
}

/* ck_ring has no bulk MPMC calls: a burst is a loop of single ones. */
static size_t ck_send_burst(void *ch, const void *elems, size_t n)
{
	struct ck_chan *c = ch;
	const unsigned char *src = elems;
	struct ck_retry r = {0};
	for (;;) {
		if (ck_closed(c))
			return 0;
		size_t k = 0;
		while (k < n && ck_enqueue(c, src + k * sizeof(struct ck_item)))
			k++;
		if (k > 0)
			return k;
		ck_retry_wait(&r);
	}
}

static size_t ck_recv_burst(void *ch, void *out, size_t n)
{
	struct ck_chan *c = ch;
	unsigned char *dst = out;
	struct ck_retry r = {0};
	for (;;) {
		bool closed = ck_closed(c);
		size_t k = 0;
		while (k < n && ck_dequeue(c, dst + k * sizeof(struct ck_item)))
			k++;
		if (k > 0 || closed)
			return k;
		ck_retry_wait(&r);
	}
}

static void ck_close(void *ch)
{
	struct ck_chan *c = ch;
	/* Release: pairs with the acquire in ck_closed(). */
	atomic_store_explicit(&c->closed, true, memory_order_release);
}

static void ck_destroy(void *ch)
{
	struct ck_chan *c = ch;
	free(c->slots);
	free(c);
}

const struct bench_ops bench_ck_ops = {
	.name = "ck_ring",
	.create = ck_create,
	.send = ck_send,
	.recv = ck_recv,
	.send_burst = ck_send_burst,
	.recv_burst = ck_recv_burst,
	.close = ck_close,
	.destroy = ck_destroy,
};
