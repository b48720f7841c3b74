/* SPDX-License-Identifier: MIT */
#ifndef CONC_PUBSUB_H
#define CONC_PUBSUB_H

/*
 * conc/pubsub.h: publish/subscribe on subjects, with NATS-style wildcards,
 * a bounded queue per subscriber and a policy for slow subscribers.
 *
 * NEEDS liburcu (userspace RCU, https://liburcu.org, >= 0.13): link with
 * liburcu-bp and liburcu-cds (pkg-config: liburcu-bp liburcu-cds; Meson's
 * dependency('conc') carries them when they were found).  It is the only
 * conc header that does; conc.h includes it only when <urcu/urcu-bp.h> is
 * available and CONC_NO_PUBSUB is not defined, and a program that calls
 * nothing here needs no liburcu at link time (everything is static inline).
 * This header includes <urcu/urcu-bp.h>, not <urcu-bp.h>: liburcu's short
 * names (rcu_read_lock, call_rcu...) are not defined in your program by it.
 * It does not define _LGPL_SOURCE, so liburcu's code is called, not inlined.
 *
 * Structure:
 *  - Topics (exact subjects) live in liburcu's lock-free resizable hash table
 *    (cds_lfht), keyed by subject.  Each topic holds a singly linked list of
 *    its subscribers.  Subscriptions whose pattern has a wildcard live in one
 *    more list, matched against every published subject.  Publishers read
 *    the table and the lists inside an RCU read-side section of the "bp"
 *    (bulletproof) flavour, which needs no thread registration: any thread,
 *    including ones conc never saw, may publish.  Publishers take no lock.
 *  - Subscribe, close and unsubscribe change the lists under one lock per
 *    pubsub (never taken by publishers, never held while anything waits).
 *    A subscriber is unlinked, then its memory (and its topic's, when the
 *    topic has no subscriber left: empty topics are removed) is freed by
 *    urcu_bp_call_rcu after a grace period, once no publisher can still be
 *    looking at it.  So publishing never blocks subscribing or unsubscribing
 *    and vice versa.
 *  - Each subscriber has a bounded conc channel of struct conc_msg pointers
 *    and a policy for when it is full (enum conc_sub_policy): block the
 *    publisher (bounded by the publisher's deadline and context), drop the
 *    new message, drop the oldest queued one, or keep only the latest.  A
 *    subscriber counts the messages it lost (conc_sub_lost).
 *  - A message (struct conc_msg) is made once and shared by reference count:
 *    each subscriber's channel holds a pointer and one reference, which the
 *    receiver gives back with conc_msg_release.  Nothing is copied per
 *    subscriber, and no reference leaks under any policy: a message dropped,
 *    evicted, refused by a closed channel or left in a channel at
 *    unsubscribe is released by conc.
 *
 * Subjects are tokens separated by '.': "orders.eu.new".  Tokens are
 * non-empty and contain no space, control character, '*' or '>'.  A pattern
 * (what a subscriber gives) may also have wildcard tokens: "*" matches
 * exactly one token, ">" matches one or more tokens and may only be the last
 * token ("orders.*.new", "orders.>").  '*' and '>' inside a longer token are
 * rejected (CONC_INVALID), as are empty tokens ("a..b", ".a", "a.").
 *
 * Delivery: a publish offers the message once to every subscriber whose
 * pattern matches (exact subscribers of the subject in subscription order,
 * then wildcard ones in subscription order).  "Delivered" counts the
 * subscribers whose channel accepted it: they will receive it unless they
 * unsubscribe first.  A subscriber that misses it because of its policy (or
 * a BLOCK subscriber that could not take it before the publisher's deadline
 * or context ended) counts one more lost message; DROP_OLDEST and
 * KEEP_LATEST deliver the new message and count the evicted one as lost.
 * A subscriber closed while the publish runs neither receives nor loses.
 * So, per subscriber: received + lost + (left at unsubscribe) == published
 * to it while subscribed.  Messages of one publisher reach one subscriber in
 * publish order (less the lost ones).
 *
 * Progress: publish takes no lock (the hash lookup and the list walks
 * are lock-free RCU reads); it blocks only for a full BLOCK subscriber
 * (until room, its deadline or context, or that subscriber's close).  A
 * DROP_OLDEST/KEEP_LATEST offer is lock-free (evict, retry).  A publisher
 * blocked on a full BLOCK subscriber stays inside its RCU read-side section,
 * which RCU allows but which delays every pubsub reclamation of the process
 * (not correctness) until it returns; closing or unsubscribing that
 * subscriber wakes it at once with nothing delivered to it.
 *
 *   call                          who may call it, concurrently with what
 *   conc_pubsub_new/free          free: once, when nothing else can run on ps
 *   conc_pubsub_publish*          any threads, with every other call but free
 *   conc_pubsub_subscribe         any threads, with every other call but free
 *   conc_sub_recv*, conc_sub_chan any threads (one subscription may have many
 *                                 receivers), until conc_pubsub_unsubscribe
 *   conc_sub_close                any thread, any time before unsubscribe;
 *                                 receivers drain, then get CONC_CLOSED
 *   conc_pubsub_unsubscribe       once per subscription, when no other call
 *                                 on that subscription runs (publishers may)
 *   conc_msg_*                    any threads; release once per reference
 *
 * Ownership: conc_pubsub_publish* borrows the caller's reference (the caller
 * still releases its own).  A received message is the receiver's: one
 * conc_msg_release each.  conc_pubsub_free unsubscribes and frees every
 * subscription still there; their pointers are invalid afterwards.  A
 * message's release callback, and so its payload's end of life, may run on
 * any thread that drops the last reference: a receiver, a publisher evicting
 * or dropping (inside its RCU read-side section: the callback must not call
 * conc_pubsub_free), or the unsubscribing thread.
 *
 * Memory: conc_pubsub_new, conc_pubsub_subscribe (the subscriber, its pattern
 * and channel; its topic when new) and conc_msg_new* allocate, through
 * conc/chan.h's CONC_ALIGNED_ALLOC and CONC_FREE.  Publish and receive do
 * not allocate.  liburcu allocates for the hash table and its call_rcu
 * thread on its own (malloc).
 *
 * ThreadSanitizer: liburcu is not instrumented, so TSan cannot see the
 * ordering it provides (a node published by cds_lfht_add and found by a
 * lookup; a grace period between the last reader and a call_rcu callback).
 * When built with TSan, this header tells TSan about exactly those edges
 * with __tsan_release/__tsan_acquire (see CONC__TSAN_*); nothing else.
 */

#include "status.h"
#include "sys.h" /* first: it sets the feature macros */
#include "ctx.h"
#include "chan.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <urcu/urcu-bp.h>
#include <urcu/rculfhash.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__SANITIZE_THREAD__)
#define CONC__PUBSUB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONC__PUBSUB_TSAN 1
#endif
#endif

#ifdef CONC__PUBSUB_TSAN
/* ThreadSanitizer's interface (<sanitizer/tsan_interface.h>). */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CONC__TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define CONC__TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define CONC__TSAN_ACQUIRE(p) ((void)0)
#define CONC__TSAN_RELEASE(p) ((void)0)
#endif

/* What a publisher does when a subscriber's channel is full. */
enum conc_sub_policy {
	CONC_SUB_BLOCK = 0,   /* wait for room, until the publisher's deadline/context */
	CONC_SUB_DROP_NEWEST, /* drop the new message (the queue keeps the oldest) */
	CONC_SUB_DROP_OLDEST, /* evict the oldest queued message, queue the new one */
	CONC_SUB_KEEP_LATEST, /* capacity 1: only the newest message is kept */
	CONC_SUB_POLICY_COUNT__
};

/*
 * A message: a subject and a payload, shared by reference count.  Made by
 * conc_msg_new (payload copied once, into the message's own block) or
 * conc_msg_new_ref (payload referenced; a callback ends its life).  The
 * fields are read-only to users; use the accessors.
 */
struct conc_msg {
	_Atomic(size_t) refs;
	const char *subject;  /* validated; in the message's block */
	const void *data;     /* the payload (NULL only if len is 0) */
	size_t len;
	unsigned long hash;   /* of subject, for the topic table */
	void (*release)(void *arg); /* conc_msg_new_ref's callback, or NULL */
	void *arg;
};

struct conc__topic;
struct conc_pubsub;

/* A subscription.  Opaque: use the conc_sub_* functions. */
struct conc_sub {
	/* Next in its topic's or the wildcard list.  Written under ps->lock
	 * (release), read by publishers under RCU (acquire). */
	_Atomic(struct conc_sub *) next;
	/* Messages lost to the policy; publishers add, anyone reads. */
	_Atomic(uint64_t) lost;
	/* Fixed at subscribe. */
	struct conc_pubsub *ps;
	struct conc_chan *ch;        /* of struct conc_msg *; freed after a grace period */
	const char *pattern;         /* in the subscription's block */
	enum conc_sub_policy policy;
	bool wild;                   /* pattern has a wildcard: in ps->wild */
	/* Under ps->lock. */
	bool linked;                 /* in a list publishers read */
	struct conc__topic *topic;   /* exact subscriptions, while linked */
	struct conc_sub *all_prev, *all_next; /* ps->all: not yet unsubscribed */
	struct rcu_head rcu;
};

/* A topic: the subscribers of one exact subject.  Internal. */
struct conc__topic {
	struct cds_lfht_node node;      /* in ps->topics; liburcu's */
	_Atomic(struct conc_sub *) subs; /* as conc_sub.next */
	size_t nsubs;                   /* under ps->lock */
	struct conc_pubsub *ps;
	const char *subject;            /* in the topic's block */
	struct rcu_head rcu;
};

/* A publish/subscribe hub.  Opaque: use the conc_pubsub_* functions. */
struct conc_pubsub {
	struct cds_lfht *topics;         /* fixed at new */
	_Atomic(struct conc_sub *) wild; /* wildcard subscriptions, as conc_sub.next */
	struct conc_lock lock;           /* subscribe/close/unsubscribe: list changes */
	struct conc_sub *all;            /* every subscription not yet unsubscribed */
	char tsan_gp;                    /* ThreadSanitizer's name for "a grace period" */
};

/* ---------------------------------------------------------------- internals */

/* Allocation of one block of size bytes, for structs with strings after
 * them (aligned_alloc wants a multiple of the alignment). */
#define CONC__PUBSUB_ALIGN 16u

static inline void *conc__pubsub_alloc(size_t size)
{
	if (size > SIZE_MAX - CONC__PUBSUB_ALIGN)
		return NULL;
	return CONC_ALIGNED_ALLOC(CONC__PUBSUB_ALIGN, (size + CONC__PUBSUB_ALIGN - 1) & ~(size_t)(CONC__PUBSUB_ALIGN - 1));
}

/*
 * Check a subject (allow_wild false) or a pattern (true).  Returns 0 if it
 * is invalid, 1 for a subject without wildcards, 2 for a pattern with at
 * least one; stores its length in *len.
 */
static inline int conc__pubsub_scan(const char *s, bool allow_wild, size_t *len)
{
	if (!s || !*s)
		return 0;
	int kind = 1;
	const char *tok = s, *p = s;
	for (;; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '.' || c == '\0') {
			if (p == tok)
				return 0; /* empty token */
			if (c == '\0')
				break;
			tok = p + 1;
			continue;
		}
		if (c <= ' ' || c == 0x7f)
			return 0;
		if (c == '*' || c == '>') {
			if (!allow_wild || p != tok || (p[1] != '.' && p[1] != '\0'))
				return 0; /* not a whole token */
			if (c == '>' && p[1] != '\0')
				return 0; /* '>' only last */
			kind = 2;
		}
	}
	*len = (size_t)(p - s);
	return kind;
}

/* FNV-1a, 64-bit where unsigned long is. */
static inline unsigned long conc__pubsub_hash(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
	return (unsigned long)(h ^ (h >> 32));
}

static inline int conc__pubsub_topic_match(struct cds_lfht_node *node, const void *key)
{
	struct conc__topic *t = (struct conc__topic *)((char *)node - offsetof(struct conc__topic, node));
	/* Pairs with the release before cds_lfht_add in conc__pubsub_link():
	 * liburcu publishes the node, TSan cannot see it. */
	CONC__TSAN_ACQUIRE(t);
	return strcmp(t->subject, (const char *)key) == 0;
}

/* The topic of subject, or NULL.  Inside an RCU read-side section. */
static inline struct conc__topic *conc__pubsub_lookup(struct conc_pubsub *ps, const char *subject, unsigned long hash)
{
	struct cds_lfht_iter it;
	cds_lfht_lookup(ps->topics, hash, conc__pubsub_topic_match, subject, &it);
	struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
	return node ? (struct conc__topic *)((char *)node - offsetof(struct conc__topic, node)) : NULL;
}

/* ------------------------------------------------------------- subjects */

/* Whether s is a valid subject to publish on (no wildcards). */
static inline bool conc_pubsub_subject_valid(const char *s)
{
	size_t len;
	return conc__pubsub_scan(s, false, &len) == 1;
}

/* Whether p is a valid subscription pattern (a subject, or one with '*'
 * tokens and/or a final '>'). */
static inline bool conc_pubsub_pattern_valid(const char *p)
{
	size_t len;
	return conc__pubsub_scan(p, true, &len) != 0;
}

/*
 * Whether pattern matches subject: token by token, "*" matches any one
 * token, a final ">" matches one or more remaining tokens.  False if either
 * is invalid.  Pure; any thread.
 */
static inline bool conc_pubsub_match(const char *pattern, const char *subject)
{
	if (!conc_pubsub_pattern_valid(pattern) || !conc_pubsub_subject_valid(subject))
		return false;
	const char *p = pattern, *s = subject;
	/* Both at the start of a token; every subject token is non-empty. */
	for (;;) {
		if (p[0] == '>')
			return true; /* s has at least one token left */
		if (p[0] == '*' && (p[1] == '.' || p[1] == '\0')) {
			p++;
			while (*s && *s != '.')
				s++;
		} else {
			while (*p && *p != '.' && *p == *s) {
				p++;
				s++;
			}
			if ((*p && *p != '.') || (*s && *s != '.'))
				return false;
		}
		if (*p == '\0' || *s == '\0')
			return *p == *s;
		p++;
		s++;
	}
}

/* ------------------------------------------------------------- messages */

/*
 * Make a message on subject with a copy of len bytes at data (data may be
 * NULL when len is 0), in one allocation, with one reference (the caller's).
 * Returns CONC_OK (and *out), CONC_INVALID (NULL out, invalid subject, NULL
 * data with len > 0), CONC_OVERFLOW or CONC_NOMEM.  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_msg_new(struct conc_msg **out, const char *subject,
							   const void *data, size_t len)
{
	size_t slen;
	if (!out || conc__pubsub_scan(subject, false, &slen) != 1 || (!data && len))
		return CONC_INVALID;
	size_t head = sizeof(struct conc_msg);
	if (slen > SIZE_MAX / 4 || len > SIZE_MAX / 4) /* so the sum below cannot wrap */
		return CONC_OVERFLOW;
	unsigned char *mem = (unsigned char *)conc__pubsub_alloc(head + slen + 1 + len);
	if (!mem)
		return CONC_NOMEM;
	struct conc_msg *m = (struct conc_msg *)mem;
	char *subj = (char *)(mem + head);
	memcpy(subj, subject, slen + 1);
	unsigned char *payload = mem + head + slen + 1;
	if (len)
		memcpy(payload, data, len);
	atomic_init(&m->refs, 1);
	m->subject = subj;
	m->data = len ? payload : NULL;
	m->len = len;
	m->hash = conc__pubsub_hash(subj);
	m->release = NULL;
	m->arg = NULL;
	*out = m;
	return CONC_OK;
}

/*
 * Make a message on subject (copied) whose payload is len bytes at data,
 * not copied: release(arg) is called once, on whichever thread drops the
 * last reference (release may be NULL for data that outlives every
 * message).  On any failure nothing was taken: release is not called and
 * the caller still owns the payload.  Returns as conc_msg_new.
 */
CONC_NODISCARD static inline enum conc_status conc_msg_new_ref(struct conc_msg **out, const char *subject,
							       const void *data, size_t len,
							       void (*release)(void *arg), void *arg)
{
	size_t slen;
	if (!out || conc__pubsub_scan(subject, false, &slen) != 1 || (!data && len))
		return CONC_INVALID;
	size_t head = sizeof(struct conc_msg);
	if (slen > SIZE_MAX / 4)
		return CONC_OVERFLOW;
	unsigned char *mem = (unsigned char *)conc__pubsub_alloc(head + slen + 1);
	if (!mem)
		return CONC_NOMEM;
	struct conc_msg *m = (struct conc_msg *)mem;
	char *subj = (char *)(mem + head);
	memcpy(subj, subject, slen + 1);
	atomic_init(&m->refs, 1);
	m->subject = subj;
	m->data = data;
	m->len = len;
	m->hash = conc__pubsub_hash(subj);
	m->release = release;
	m->arg = arg;
	*out = m;
	return CONC_OK;
}

/* Take one more reference to m (NULL is ignored); returns m.  Only a holder
 * of a reference may call it.  Any thread; never blocks. */
static inline struct conc_msg *conc_msg_retain(struct conc_msg *m)
{
	/* Relaxed: a new reference is made from one the caller holds, so the
	 * count cannot reach zero meanwhile; nothing is published by it. */
	if (m)
		atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

/* Give back one reference to m (NULL is ignored).  The last one runs the
 * release callback (conc_msg_new_ref) and frees the message.  Any thread. */
static inline void conc_msg_release(struct conc_msg *m)
{
	if (!m)
		return;
	/* M1 acq_rel: release orders this holder's reads of the message before
	 * the free; acquire (on the last one) sees every other holder's M1. */
	if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (m->release)
		m->release(m->arg);
	CONC_FREE(m);
}

/* The subject of m ("" for NULL). */
static inline const char *conc_msg_subject(const struct conc_msg *m)
{
	return m ? m->subject : "";
}

/* The payload of m (NULL for NULL or an empty payload). */
static inline const void *conc_msg_data(const struct conc_msg *m)
{
	return m ? m->data : NULL;
}

/* The payload's length in bytes (0 for NULL). */
static inline size_t conc_msg_len(const struct conc_msg *m)
{
	return m ? m->len : 0;
}

/* ------------------------------------------------------ reclamation (RCU) */

static inline void conc__pubsub_topic_free_cb(struct rcu_head *h)
{
	struct conc__topic *t = (struct conc__topic *)((char *)h - offsetof(struct conc__topic, rcu));
	/* Pairs with the release before urcu_bp_call_rcu (the handoff to this
	 * thread), then with every reader's release before its read unlock
	 * (the grace period). */
	CONC__TSAN_ACQUIRE(t);
	CONC__TSAN_ACQUIRE(&t->ps->tsan_gp);
	CONC_FREE(t);
}

static inline void conc__pubsub_sub_free_cb(struct rcu_head *h)
{
	struct conc_sub *s = (struct conc_sub *)((char *)h - offsetof(struct conc_sub, rcu));
	/* As in conc__pubsub_topic_free_cb. */
	CONC__TSAN_ACQUIRE(s);
	CONC__TSAN_ACQUIRE(&s->ps->tsan_gp);
	/* No publisher is inside the channel any more (the grace period), and
	 * unsubscribe's contract leaves no receiver. */
	enum conc_status st = conc_chan_free(s->ch);
	CONC_ASSERT(st == CONC_OK);
	(void)st;
	CONC_FREE(s);
}

/* Remove s from the list publishers read (under ps->lock); a topic left
 * without subscribers leaves the table.  Both are freed after a grace
 * period (the topic here, s by the caller). */
static inline void conc__pubsub_unlink(struct conc_sub *s)
{
	struct conc_pubsub *ps = s->ps;
	struct conc__topic *t = s->topic;
	_Atomic(struct conc_sub *) *pp = t ? &t->subs : &ps->wild;
	/* Relaxed: the list only changes under ps->lock, which we hold. */
	struct conc_sub *cur;
	while ((cur = atomic_load_explicit(pp, memory_order_relaxed)) != s)
		pp = &cur->next;
	/* L2 release: pairs with L3 in conc__pubsub_offer_all(): a reader that
	 * reaches s's successor through this link sees it initialised.  s->next
	 * stays, so a reader standing on s goes on. */
	atomic_store_explicit(pp, atomic_load_explicit(&s->next, memory_order_relaxed), memory_order_release);
	s->linked = false;
	s->topic = NULL;
	if (t && --t->nsubs == 0) {
		urcu_bp_read_lock();
		int r = cds_lfht_del(ps->topics, &t->node);
		urcu_bp_read_unlock();
		CONC_ASSERT(r == 0);
		(void)r;
		CONC__TSAN_RELEASE(t); /* pairs with conc__pubsub_topic_free_cb */
		urcu_bp_call_rcu(&t->rcu, conc__pubsub_topic_free_cb);
	}
}

/* Close s for publishers (under nothing); idempotent. */
static inline enum conc_status conc__pubsub_close(struct conc_sub *s)
{
	conc_lock_acquire(&s->ps->lock);
	if (s->linked)
		conc__pubsub_unlink(s);
	conc_lock_release(&s->ps->lock);
	/* Wakes a publisher blocked on s (it gets CONC_CLOSED) and receivers. */
	return conc_chan_close(s->ch);
}

/* Unsubscribe s for good (its own or ps's caller, no other call on s). */
static inline void conc__pubsub_retire(struct conc_sub *s)
{
	struct conc_pubsub *ps = s->ps;
	conc_lock_acquire(&ps->lock);
	if (s->linked)
		conc__pubsub_unlink(s);
	if (s->all_prev)
		s->all_prev->all_next = s->all_next;
	else
		ps->all = s->all_next;
	if (s->all_next)
		s->all_next->all_prev = s->all_prev;
	conc_lock_release(&ps->lock);
	(void)conc_chan_close(s->ch);
	/* Release what is left.  After close a try_recv returns each element
	 * sent before (waiting out a send in progress), then CONC_CLOSED. */
	struct conc_msg *m;
	while (conc_chan_try_recv(s->ch, &m) == CONC_OK)
		conc_msg_release(m);
	CONC__TSAN_RELEASE(s); /* pairs with conc__pubsub_sub_free_cb */
	urcu_bp_call_rcu(&s->rcu, conc__pubsub_sub_free_cb);
}

/* ------------------------------------------------------------- lifetime */

/*
 * Make a pubsub and store it in *out.  Returns CONC_OK, CONC_INVALID (NULL
 * out) or CONC_NOMEM (*out untouched).  Allocates (the hub, and liburcu's
 * hash table).  Any thread.
 */
CONC_NODISCARD static inline enum conc_status conc_pubsub_new(struct conc_pubsub **out)
{
	if (!out)
		return CONC_INVALID;
	struct conc_pubsub *ps = (struct conc_pubsub *)conc__pubsub_alloc(sizeof *ps);
	if (!ps)
		return CONC_NOMEM;
	ps->topics = cds_lfht_new_flavor(16, 16, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, &urcu_bp_flavor, NULL);
	if (!ps->topics) {
		CONC_FREE(ps);
		return CONC_NOMEM;
	}
	atomic_init(&ps->wild, NULL);
	conc_lock_init(&ps->lock);
	ps->all = NULL;
	ps->tsan_gp = 0;
	*out = ps;
	return CONC_OK;
}

/*
 * Unsubscribe every subscription still there (their queued messages are
 * released; their pointers become invalid), wait for every pending RCU
 * callback of the process (urcu_bp_barrier) and free ps.  Returns CONC_OK,
 * or CONC_INVALID for NULL.  Only when no other call on ps or its
 * subscriptions can run; not from a message's release callback nor from
 * inside another RCU read-side section (it waits for a grace period).
 */
static inline enum conc_status conc_pubsub_free(struct conc_pubsub *ps)
{
	if (!ps)
		return CONC_INVALID;
	while (ps->all)
		conc__pubsub_retire(ps->all);
	/* Every topic left with its last subscriber: the table is empty.  The
	 * barrier runs the callbacks that free them, and those of earlier
	 * unsubscribes, before ps (which they read) goes. */
	urcu_bp_barrier();
	int r = cds_lfht_destroy(ps->topics, NULL);
	CONC_ASSERT(r == 0);
	(void)r;
	conc_lock_destroy(&ps->lock);
	CONC_FREE(ps);
	return CONC_OK;
}

/* -------------------------------------------------------------- subscribe */

/*
 * Subscribe to pattern (a subject, or one with "*" / final ">" wildcards)
 * with a queue of capacity messages and a policy for when it is full;
 * store the subscription in *out.  capacity must be >= 1 (at most
 * CONC_CHAN_MAX_CAP); CONC_SUB_KEEP_LATEST takes 0 or 1 and keeps 1.
 * Messages published after this returns (and some racing with it) reach
 * the subscription.  Returns CONC_OK, CONC_INVALID (NULL ps/pattern/out,
 * invalid pattern or policy, bad capacity), CONC_OVERFLOW or CONC_NOMEM
 * (nothing left allocated, *out untouched).  Any thread, concurrently with
 * publishers (which it never waits for) and other subscribes; takes ps's
 * list lock briefly; allocates.
 */
CONC_NODISCARD static inline enum conc_status conc_pubsub_subscribe(struct conc_pubsub *ps, const char *pattern,
								    size_t capacity, enum conc_sub_policy policy,
								    struct conc_sub **out)
{
	size_t plen;
	int kind = conc__pubsub_scan(pattern, true, &plen);
	if (!ps || !out || kind == 0 || (unsigned)policy >= CONC_SUB_POLICY_COUNT__)
		return CONC_INVALID;
	if (policy == CONC_SUB_KEEP_LATEST) {
		if (capacity > 1)
			return CONC_INVALID;
		capacity = 1;
	}
	if (capacity == 0 || capacity > CONC_CHAN_MAX_CAP)
		return CONC_INVALID;
	if (plen > SIZE_MAX / 4)
		return CONC_OVERFLOW;
	unsigned char *mem = (unsigned char *)conc__pubsub_alloc(sizeof(struct conc_sub) + plen + 1);
	if (!mem)
		return CONC_NOMEM;
	struct conc_sub *s = (struct conc_sub *)mem;
	struct conc_chan *ch = NULL;
	enum conc_status st = conc_chan_new(&ch, capacity, sizeof(struct conc_msg *));
	if (st != CONC_OK) {
		CONC_FREE(mem);
		return st;
	}
	char *pat = (char *)(mem + sizeof(struct conc_sub));
	memcpy(pat, pattern, plen + 1);
	atomic_init(&s->next, NULL);
	atomic_init(&s->lost, 0);
	s->ps = ps;
	s->ch = ch;
	s->pattern = pat;
	s->policy = policy;
	s->wild = kind == 2;
	s->linked = false;
	s->topic = NULL;
	s->all_prev = NULL;
	s->all_next = NULL;

	conc_lock_acquire(&ps->lock);
	_Atomic(struct conc_sub *) *pp = &ps->wild;
	if (!s->wild) {
		unsigned long hash = conc__pubsub_hash(pat);
		urcu_bp_read_lock();
		struct conc__topic *t = conc__pubsub_lookup(ps, pat, hash);
		if (!t) {
			t = (struct conc__topic *)conc__pubsub_alloc(sizeof *t + plen + 1);
			if (!t) {
				urcu_bp_read_unlock();
				conc_lock_release(&ps->lock);
				(void)conc_chan_free(ch);
				CONC_FREE(mem);
				return CONC_NOMEM;
			}
			char *subj = (char *)(t + 1);
			memcpy(subj, pattern, plen + 1);
			cds_lfht_node_init(&t->node);
			atomic_init(&t->subs, NULL);
			t->nsubs = 0;
			t->ps = ps;
			t->subject = subj;
			/* Pairs with conc__pubsub_topic_match(): liburcu's
			 * publication of the node, which TSan cannot see. */
			CONC__TSAN_RELEASE(t);
			/* Unique: topics are added only under ps->lock. */
			cds_lfht_add(ps->topics, hash, &t->node);
		}
		urcu_bp_read_unlock();
		t->nsubs++;
		s->topic = t;
		pp = &t->subs;
	}
	/* Append: publishers offer in subscription order. */
	struct conc_sub *cur;
	while ((cur = atomic_load_explicit(pp, memory_order_relaxed)) != NULL)
		pp = &cur->next; /* relaxed: the lists change only under ps->lock */
	/* L1 release: publishes s (and its channel); pairs with L3 in
	 * conc__pubsub_offer_all(). */
	atomic_store_explicit(pp, s, memory_order_release);
	s->linked = true;
	s->all_next = ps->all;
	if (ps->all)
		ps->all->all_prev = s;
	ps->all = s;
	conc_lock_release(&ps->lock);
	*out = s;
	return CONC_OK;
}

/*
 * Stop delivery to sub: unlink it and close its channel.  A publisher
 * blocked on it wakes (nothing delivered, nothing lost); receivers drain what
 * is queued, then get CONC_CLOSED.  The subscription stays valid (receive,
 * conc_sub_lost) until conc_pubsub_unsubscribe.  Returns CONC_OK, CONC_CLOSED
 * if it was closed already, CONC_INVALID for NULL.  Any thread, concurrently
 * with publishers and receivers; takes ps's list lock briefly.
 */
static inline enum conc_status conc_sub_close(struct conc_sub *sub)
{
	if (!sub)
		return CONC_INVALID;
	return conc__pubsub_close(sub);
}

/*
 * End sub: close it (as conc_sub_close), release the messages still queued
 * and free it after a grace period (urcu_bp_call_rcu), when no publisher can
 * still hold it.  Returns CONC_OK or CONC_INVALID (NULL).  Once per
 * subscription, before conc_pubsub_free, when no other call on sub runs or
 * will run (publishers on its pubsub may run).  Never waits for a publisher.
 */
static inline enum conc_status conc_pubsub_unsubscribe(struct conc_sub *sub)
{
	if (!sub)
		return CONC_INVALID;
	conc__pubsub_retire(sub);
	return CONC_OK;
}

/* ---------------------------------------------------------------- publish */

struct conc__pubsub_pub {
	struct conc_msg *m;
	struct conc_deadline d;
	struct conc_ctx *ctx;
	bool wait;                /* BLOCK subscribers may still be waited for */
	enum conc_status status;  /* the first BLOCK failure */
	size_t delivered;
};

/* Offer p->m to s once, by s's policy. */
static inline void conc__pubsub_offer(struct conc_sub *s, struct conc__pubsub_pub *p)
{
	struct conc_msg *m = conc_msg_retain(p->m); /* the channel's reference */
	enum conc_status st;
	switch (s->policy) {
	case CONC_SUB_BLOCK:
		st = p->wait ? conc_chan_send_until(s->ch, &m, p->d, p->ctx) : conc_chan_try_send(s->ch, &m);
		if (st == CONC_TIMEDOUT || st == CONC_CANCELED || st == CONC_FULL) {
			/* Later BLOCK subscribers are tried without waiting. */
			if (p->status == CONC_OK)
				p->status = p->wait ? st : CONC_FULL;
			p->wait = false;
		}
		break;
	case CONC_SUB_DROP_NEWEST:
		st = conc_chan_try_send(s->ch, &m);
		break;
	default: /* DROP_OLDEST, KEEP_LATEST: evict until the new one fits */
		while ((st = conc_chan_try_send(s->ch, &m)) == CONC_FULL) {
			struct conc_msg *old;
			if (conc_chan_try_recv(s->ch, &old) == CONC_OK) {
				/* Relaxed: a counter; readers need no order. */
				atomic_fetch_add_explicit(&s->lost, 1, memory_order_relaxed);
				conc_msg_release(old);
			}
		}
		break;
	}
	if (st == CONC_OK) {
		p->delivered++;
		return;
	}
	if (st != CONC_CLOSED) /* a closed subscriber is gone, not behind */
		atomic_fetch_add_explicit(&s->lost, 1, memory_order_relaxed); /* relaxed: a counter */
	conc_msg_release(m); /* never the last: the publisher holds one */
}

/* Offer to every subscriber of list head whose pattern matches (match:
 * wildcard list).  Inside an RCU read-side section. */
static inline void conc__pubsub_offer_all(_Atomic(struct conc_sub *) *head, struct conc__pubsub_pub *p, bool match)
{
	/* L3 acquire: pairs with L1 in conc_pubsub_subscribe() and L2 in
	 * conc__pubsub_unlink(): the subscriber found is initialised. */
	for (struct conc_sub *s = atomic_load_explicit(head, memory_order_acquire); s;
	     s = atomic_load_explicit(&s->next, memory_order_acquire))
		if (!match || conc_pubsub_match(s->pattern, p->m->subject))
			conc__pubsub_offer(s, p);
}

/*
 * Publish m to every subscriber whose pattern matches m's subject (see
 * "Delivery" above), waiting for room in full BLOCK subscribers until the
 * absolute deadline d or until ctx (NULL for none) is done; once that
 * happens, the remaining BLOCK subscribers are tried without waiting.  The
 * caller keeps its reference to m.  *delivered (if not NULL) gets the number
 * of subscribers that accepted m.
 * Returns CONC_OK when no BLOCK subscriber missed m (drop policies never
 * fail a publish); CONC_TIMEDOUT or CONC_CANCELED when some BLOCK
 * subscriber missed it for that reason (a done context at entry: nothing is
 * offered, *delivered 0); CONC_INVALID for NULL ps or m.
 * Any threads, concurrently with everything but conc_pubsub_free; takes no
 * lock; blocks only on full BLOCK subscribers, parked (no CPU), and wakes
 * if such a subscriber is closed; does not allocate.
 */
CONC_NODISCARD static inline enum conc_status conc_pubsub_publish_until(struct conc_pubsub *ps, struct conc_msg *m,
									struct conc_deadline d, struct conc_ctx *ctx,
									size_t *delivered)
{
	if (delivered)
		*delivered = 0;
	if (!ps || !m)
		return CONC_INVALID;
	if (ctx) {
		enum conc_status e = conc_ctx_err(ctx);
		if (e != CONC_OK)
			return e;
	}
	struct conc__pubsub_pub p = {m, d, ctx, true, CONC_OK, 0};
	urcu_bp_read_lock();
	struct conc__topic *t = conc__pubsub_lookup(ps, m->subject, m->hash);
	if (t)
		conc__pubsub_offer_all(&t->subs, &p, false);
	conc__pubsub_offer_all(&ps->wild, &p, true);
	/* Pairs with the callbacks' acquire: what this section read happens
	 * before any free after the grace period (TSan only). */
	CONC__TSAN_RELEASE(&ps->tsan_gp);
	urcu_bp_read_unlock();
	if (delivered)
		*delivered = p.delivered;
	return p.status;
}

/* Publish, waiting as long as full BLOCK subscribers need.  CONC_OK or
 * CONC_INVALID.  As conc_pubsub_publish_until. */
CONC_NODISCARD static inline enum conc_status conc_pubsub_publish(struct conc_pubsub *ps, struct conc_msg *m,
								  size_t *delivered)
{
	return conc_pubsub_publish_until(ps, m, conc_deadline_forever(), NULL, delivered);
}

/* Publish without ever waiting: a full BLOCK subscriber misses m (and counts
 * it lost).  Returns CONC_OK, CONC_FULL (some BLOCK subscriber was full) or
 * CONC_INVALID.  As conc_pubsub_publish_until otherwise. */
CONC_NODISCARD static inline enum conc_status conc_pubsub_try_publish(struct conc_pubsub *ps, struct conc_msg *m,
								      size_t *delivered)
{
	if (delivered)
		*delivered = 0;
	if (!ps || !m)
		return CONC_INVALID;
	struct conc__pubsub_pub p = {m, conc_deadline_poll(), NULL, false, CONC_OK, 0};
	urcu_bp_read_lock();
	struct conc__topic *t = conc__pubsub_lookup(ps, m->subject, m->hash);
	if (t)
		conc__pubsub_offer_all(&t->subs, &p, false);
	conc__pubsub_offer_all(&ps->wild, &p, true);
	CONC__TSAN_RELEASE(&ps->tsan_gp); /* as in conc_pubsub_publish_until */
	urcu_bp_read_unlock();
	if (delivered)
		*delivered = p.delivered;
	return p.status;
}

/* ---------------------------------------------------------------- receive */

/*
 * Receive the next message of sub into *out, waiting until the absolute
 * deadline d or until ctx (NULL for none) is done.  The message is the
 * caller's: conc_msg_release it.  Returns CONC_OK, CONC_CLOSED (sub closed
 * and drained), CONC_TIMEDOUT, CONC_CANCELED or CONC_INVALID.  Any threads
 * until unsubscribe; parks without CPU; a done context fails it first.
 */
CONC_NODISCARD static inline enum conc_status conc_sub_recv_until(struct conc_sub *sub, struct conc_msg **out,
								  struct conc_deadline d, struct conc_ctx *ctx)
{
	if (!sub || !out)
		return CONC_INVALID;
	return conc_chan_recv_until(sub->ch, out, d, ctx);
}

/* Receive, waiting as long as it takes.  CONC_OK, CONC_CLOSED or
 * CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_sub_recv(struct conc_sub *sub, struct conc_msg **out)
{
	return conc_sub_recv_until(sub, out, conc_deadline_forever(), NULL);
}

/* Receive without waiting.  CONC_OK, CONC_EMPTY, CONC_CLOSED (closed and
 * drained) or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_sub_try_recv(struct conc_sub *sub, struct conc_msg **out)
{
	if (!sub || !out)
		return CONC_INVALID;
	return conc_chan_try_recv(sub->ch, out);
}

/*
 * The channel sub's messages arrive on (elements: struct conc_msg *), for
 * conc_select and the other receive calls of conc/chan.h.  Only receive from
 * it (each message received is the receiver's to release); never send,
 * close or free it.  Valid until conc_pubsub_unsubscribe.  NULL for NULL.
 */
static inline struct conc_chan *conc_sub_chan(struct conc_sub *sub)
{
	return sub ? sub->ch : NULL;
}

/*
 * How many messages sub has lost so far: dropped or evicted by its policy,
 * or (BLOCK) not taken before a publisher's deadline or context ended.
 * Monotonic; a snapshot.  0 for NULL.  Any thread.
 */
static inline uint64_t conc_sub_lost(struct conc_sub *sub)
{
	/* Relaxed: a counter; callers that need it exact synchronise with the
	 * publishers first (e.g. join them). */
	return sub ? atomic_load_explicit(&sub->lost, memory_order_relaxed) : 0;
}

/* The pattern sub was made with ("" for NULL). */
static inline const char *conc_sub_pattern(const struct conc_sub *sub)
{
	return sub ? sub->pattern : "";
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_PUBSUB_H */
