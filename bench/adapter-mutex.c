/* SPDX-License-Identifier: MIT */
/*
 * bench/adapter-mutex.c: the baseline, the textbook bounded channel.
 *
 * A ring buffer guarded by one pthread mutex, with two condition variables:
 * senders wait on not_full, receivers on not_empty, each re-checking its
 * condition in a loop.  Every send signals not_empty and every receive
 * signals not_full (after unlocking, so the woken thread does not run into a
 * mutex that is still held); close broadcasts both.  Nothing is tuned either
 * way: default mutex and condition variable attributes.
 *
 * The burst calls move as many elements as they can under one lock hold,
 * as conc's burst calls do with one claim, and broadcast when they moved
 * more than one (several waiters may now proceed).
 *
 * Capacity 0, the rendezvous channel, is the textbook hand-off slot with the
 * same mutex and two condition variables: a sender waits for the slot to be
 * empty, puts its element there with a ticket number, and waits on not_full
 * until the receivers' count of taken elements reaches its ticket; a
 * receiver waits on not_empty for a full slot, takes the element, and
 * broadcasts not_full (the sender whose element it took and the senders
 * waiting for the empty slot wait there alike).
 *
 * Select is built the simple way on top of these channels: poll every
 * channel in turn, each under its own lock, and take the first element
 * found.  When no channel had one, the selecting thread must sleep until
 * one may have, and the channels must tell it so.  The choice here: the
 * selector has its own mutex, condition variable and event count, and every
 * channel it watches points to it; each send and close on such a channel,
 * after releasing the channel's lock, bumps the count under the selector's
 * mutex and signals the condition variable if the selector sleeps.  The
 * selector reads the count before polling and sleeps only while it is
 * unchanged, so an element sent during the poll is never slept through.
 * This is the plain "shared something-arrived condition variable"; the
 * alternative, sleeping on one channel's not_empty with a short timeout,
 * needs no hook in the channel but wakes late (up to the timeout) for the
 * other channels and wakes up periodically when all are idle.  The cost is
 * paid by the senders: one more lock round trip per send while a selector
 * watches the channel.  Tried on two cores, the timed-wait version (100 us)
 * gave the baseline lower select throughput than this one, so this choice
 * does not handicap it.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

struct mutex_sel;

struct mutex_chan {
	pthread_mutex_t lock;
	pthread_cond_t not_full, not_empty;
	size_t cap, esize;
	size_t head, len;      /* under lock; rendezvous: len is 1 while the slot is full */
	bool closed;           /* under lock */
	struct mutex_sel *sel; /* under lock: the selector watching this ring channel, or NULL */
	uint64_t sent, taken;  /* under lock, rendezvous only: tickets put in the slot, taken out */
	unsigned char *buf;    /* cap elements; rendezvous: the slot, one element */
};

/* A selector: see the top comment. */
struct mutex_sel {
	pthread_mutex_t lock;
	pthread_cond_t arrived;
	uint64_t events; /* under lock: sends and closes on the watched channels */
	bool waiting;    /* under lock: the selecting thread sleeps on arrived */
	void *out;
	size_t next;     /* selecting thread only: where the next poll starts */
	size_t live, n;
	struct {
		struct mutex_chan *c;
		bool live; /* not yet found closed and drained */
	} chans[];
};

static void *mutex_create(size_t cap, size_t esize)
{
	if (esize == 0 || cap > SIZE_MAX / esize)
		return NULL;
	struct mutex_chan *c = bench_alloc(sizeof *c);
	c->buf = bench_alloc((cap ? cap : 1) * esize);
	c->cap = cap;
	c->esize = esize;
	if (pthread_mutex_init(&c->lock, NULL) || pthread_cond_init(&c->not_full, NULL) ||
	    pthread_cond_init(&c->not_empty, NULL))
		bench_die("mutex channel: pthread init failed");
	return c;
}

/* Index of the i-th element after head, wrapping once. */
static size_t mutex_slot(const struct mutex_chan *c, size_t i)
{
	size_t s = c->head + i;
	return s < c->cap ? s : s - c->cap;
}

/* Elements are copied with memcpy, with the 8-byte case spelled out so the
 * compiler inlines it (as conc does for its common sizes): the baseline
 * should lose on locking, not on a library call per element. */
static void mutex_copy(void *dst, const void *src, size_t n)
{
	if (n == 8)
		memcpy(dst, src, 8);
	else
		memcpy(dst, src, n);
}

static void mutex_wake(pthread_cond_t *cond, size_t moved)
{
	if (moved == 1)
		pthread_cond_signal(cond);
	else if (moved > 1)
		pthread_cond_broadcast(cond);
}

/* Something happened on a channel that sel watches (NULL: none does).
 * Called after releasing the channel's lock. */
static void mutex_sel_notify(struct mutex_sel *sel)
{
	if (!sel)
		return;
	pthread_mutex_lock(&sel->lock);
	sel->events++;
	bool sleeping = sel->waiting;
	pthread_mutex_unlock(&sel->lock);
	if (sleeping)
		pthread_cond_signal(&sel->arrived);
}

static bool mutex_rdv_send(struct mutex_chan *c, const void *elem)
{
	pthread_mutex_lock(&c->lock);
	while (c->len && !c->closed)
		pthread_cond_wait(&c->not_full, &c->lock);
	if (c->closed) {
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	mutex_copy(c->buf, elem, c->esize);
	c->len = 1;
	uint64_t ticket = ++c->sent;
	pthread_cond_signal(&c->not_empty);
	while (c->taken < ticket && !c->closed)
		pthread_cond_wait(&c->not_full, &c->lock);
	bool taken = c->taken >= ticket;
	if (!taken)
		c->len = 0; /* closed before anyone took it: take it back */
	pthread_mutex_unlock(&c->lock);
	return taken;
}

static bool mutex_rdv_recv(struct mutex_chan *c, void *out)
{
	pthread_mutex_lock(&c->lock);
	while (!c->len && !c->closed)
		pthread_cond_wait(&c->not_empty, &c->lock);
	if (!c->len) { /* closed */
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	mutex_copy(out, c->buf, c->esize);
	c->len = 0;
	c->taken++;
	pthread_mutex_unlock(&c->lock);
	pthread_cond_broadcast(&c->not_full);
	return true;
}

static size_t mutex_send_burst(void *ch, const void *elems, size_t n)
{
	struct mutex_chan *c = ch;
	const unsigned char *src = elems;
	if (c->cap == 0)
		return n && mutex_rdv_send(c, elems);
	pthread_mutex_lock(&c->lock);
	while (c->len == c->cap && !c->closed)
		pthread_cond_wait(&c->not_full, &c->lock);
	size_t k = 0;
	if (!c->closed) {
		k = c->cap - c->len < n ? c->cap - c->len : n;
		for (size_t i = 0; i < k; i++)
			mutex_copy(c->buf + mutex_slot(c, c->len + i) * c->esize, src + i * c->esize, c->esize);
		c->len += k;
	}
	struct mutex_sel *sel = c->sel;
	pthread_mutex_unlock(&c->lock);
	mutex_wake(&c->not_empty, k);
	if (k)
		mutex_sel_notify(sel);
	return k;
}

static size_t mutex_recv_burst(void *ch, void *out, size_t n)
{
	struct mutex_chan *c = ch;
	unsigned char *dst = out;
	if (c->cap == 0)
		return n && mutex_rdv_recv(c, out);
	pthread_mutex_lock(&c->lock);
	while (c->len == 0 && !c->closed)
		pthread_cond_wait(&c->not_empty, &c->lock);
	/* Closed: drain what is left, then report 0. */
	size_t k = c->len < n ? c->len : n;
	for (size_t i = 0; i < k; i++)
		mutex_copy(dst + i * c->esize, c->buf + mutex_slot(c, i) * c->esize, c->esize);
	c->head = mutex_slot(c, k);
	c->len -= k;
	pthread_mutex_unlock(&c->lock);
	mutex_wake(&c->not_full, k);
	return k;
}

static bool mutex_send(void *ch, const void *elem)
{
	struct mutex_chan *c = ch;
	if (c->cap == 0)
		return mutex_rdv_send(c, elem);
	pthread_mutex_lock(&c->lock);
	while (c->len == c->cap && !c->closed)
		pthread_cond_wait(&c->not_full, &c->lock);
	if (c->closed) {
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	mutex_copy(c->buf + mutex_slot(c, c->len) * c->esize, elem, c->esize);
	c->len++;
	struct mutex_sel *sel = c->sel;
	pthread_mutex_unlock(&c->lock);
	pthread_cond_signal(&c->not_empty);
	mutex_sel_notify(sel);
	return true;
}

/* Take the oldest element of a ring channel, with its lock held. */
static void mutex_take_locked(struct mutex_chan *c, void *out)
{
	mutex_copy(out, c->buf + c->head * c->esize, c->esize);
	c->head = mutex_slot(c, 1);
	c->len--;
}

static bool mutex_recv(void *ch, void *out)
{
	struct mutex_chan *c = ch;
	if (c->cap == 0)
		return mutex_rdv_recv(c, out);
	pthread_mutex_lock(&c->lock);
	while (c->len == 0 && !c->closed)
		pthread_cond_wait(&c->not_empty, &c->lock);
	if (c->len == 0) { /* closed and drained */
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	mutex_take_locked(c, out);
	pthread_mutex_unlock(&c->lock);
	pthread_cond_signal(&c->not_full);
	return true;
}

static void mutex_close(void *ch)
{
	struct mutex_chan *c = ch;
	pthread_mutex_lock(&c->lock);
	c->closed = true;
	struct mutex_sel *sel = c->sel;
	pthread_mutex_unlock(&c->lock);
	pthread_cond_broadcast(&c->not_full);
	pthread_cond_broadcast(&c->not_empty);
	mutex_sel_notify(sel);
}

/* ------------------------------------------------------------------ select */

static void *mutex_select_create(void *const *chans, size_t k, void *out)
{
	for (size_t i = 0; i < k; i++)
		if (((struct mutex_chan *)chans[i])->cap == 0)
			return NULL; /* ring channels only: the poll takes from the ring */
	struct mutex_sel *s = bench_alloc(sizeof *s + k * sizeof s->chans[0]);
	bench_cond_init(&s->lock, &s->arrived);
	s->out = out;
	s->live = s->n = k;
	for (size_t i = 0; i < k; i++) {
		struct mutex_chan *c = chans[i];
		s->chans[i].c = c;
		s->chans[i].live = true;
		pthread_mutex_lock(&c->lock);
		c->sel = s;
		pthread_mutex_unlock(&c->lock);
	}
	return s;
}

/* One pass over the live channels, starting after the one that gave the
 * last element (round-robin, so no channel is favoured).  Returns whether
 * it took an element; drops the channels it finds closed and drained. */
static bool mutex_select_poll(struct mutex_sel *s)
{
	for (size_t j = 0; j < s->n; j++) {
		size_t i = (s->next + j) % s->n;
		struct mutex_chan *c = s->chans[i].c;
		if (!s->chans[i].live)
			continue;
		pthread_mutex_lock(&c->lock);
		if (c->len > 0) {
			mutex_take_locked(c, s->out);
			pthread_mutex_unlock(&c->lock);
			pthread_cond_signal(&c->not_full);
			s->next = i + 1;
			return true;
		}
		bool drained = c->closed;
		pthread_mutex_unlock(&c->lock);
		if (drained) {
			s->chans[i].live = false;
			s->live--;
		}
	}
	return false;
}

static bool mutex_select_recv(void *sel)
{
	struct mutex_sel *s = sel;
	while (s->live > 0) {
		pthread_mutex_lock(&s->lock);
		uint64_t seen = s->events;
		pthread_mutex_unlock(&s->lock);
		if (mutex_select_poll(s))
			return true;
		if (s->live == 0)
			break;
		/* Nothing anywhere: sleep until a send or close happens after
		 * the count was read (it may already have). */
		pthread_mutex_lock(&s->lock);
		s->waiting = true;
		while (s->events == seen)
			pthread_cond_wait(&s->arrived, &s->lock);
		s->waiting = false;
		pthread_mutex_unlock(&s->lock);
	}
	return false;
}

static void mutex_select_destroy(void *sel)
{
	struct mutex_sel *s = sel;
	for (size_t i = 0; i < s->n; i++) {
		struct mutex_chan *c = s->chans[i].c;
		pthread_mutex_lock(&c->lock);
		c->sel = NULL;
		pthread_mutex_unlock(&c->lock);
	}
	pthread_cond_destroy(&s->arrived);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static void mutex_destroy(void *ch)
{
	struct mutex_chan *c = ch;
	pthread_cond_destroy(&c->not_empty);
	pthread_cond_destroy(&c->not_full);
	pthread_mutex_destroy(&c->lock);
	free(c->buf);
	free(c);
}

const struct bench_ops bench_mutex_ops = {
	.name = "mutex",
	.has_rendezvous = true,
	.create = mutex_create,
	.send = mutex_send,
	.recv = mutex_recv,
	.send_burst = mutex_send_burst,
	.recv_burst = mutex_recv_burst,
	.close = mutex_close,
	.destroy = mutex_destroy,
	.select_create = mutex_select_create,
	.select_recv = mutex_select_recv,
	.select_destroy = mutex_select_destroy,
};
