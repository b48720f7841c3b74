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
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

struct mutex_chan {
	pthread_mutex_t lock;
	pthread_cond_t not_full, not_empty;
	size_t cap, esize;
	size_t head, len; /* under lock */
	bool closed;      /* under lock */
	unsigned char *buf;
};

static void *mutex_create(size_t cap, size_t esize)
{
	if (cap == 0 || esize == 0 || cap > SIZE_MAX / esize)
		return NULL;
	struct mutex_chan *c = bench_alloc(sizeof *c);
	c->buf = bench_alloc(cap * esize);
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

static size_t mutex_send_burst(void *ch, const void *elems, size_t n)
{
	struct mutex_chan *c = ch;
	const unsigned char *src = elems;
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
	pthread_mutex_unlock(&c->lock);
	mutex_wake(&c->not_empty, k);
	return k;
}

static size_t mutex_recv_burst(void *ch, void *out, size_t n)
{
	struct mutex_chan *c = ch;
	unsigned char *dst = out;
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
	pthread_mutex_lock(&c->lock);
	while (c->len == c->cap && !c->closed)
		pthread_cond_wait(&c->not_full, &c->lock);
	if (c->closed) {
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	mutex_copy(c->buf + mutex_slot(c, c->len) * c->esize, elem, c->esize);
	c->len++;
	pthread_mutex_unlock(&c->lock);
	pthread_cond_signal(&c->not_empty);
	return true;
}

static bool mutex_recv(void *ch, void *out)
{
	struct mutex_chan *c = ch;
	pthread_mutex_lock(&c->lock);
	while (c->len == 0 && !c->closed)
		pthread_cond_wait(&c->not_empty, &c->lock);
	if (c->len == 0) { /* closed and drained */
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	mutex_copy(out, c->buf + c->head * c->esize, c->esize);
	c->head = mutex_slot(c, 1);
	c->len--;
	pthread_mutex_unlock(&c->lock);
	pthread_cond_signal(&c->not_full);
	return true;
}

static void mutex_close(void *ch)
{
	struct mutex_chan *c = ch;
	pthread_mutex_lock(&c->lock);
	c->closed = true;
	pthread_mutex_unlock(&c->lock);
	pthread_cond_broadcast(&c->not_full);
	pthread_cond_broadcast(&c->not_empty);
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
	.create = mutex_create,
	.send = mutex_send,
	.recv = mutex_recv,
	.send_burst = mutex_send_burst,
	.recv_burst = mutex_recv_burst,
	.close = mutex_close,
	.destroy = mutex_destroy,
};
