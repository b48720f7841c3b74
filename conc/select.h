/* SPDX-License-Identifier: MIT */
#ifndef CONC_SELECT_H
#define CONC_SELECT_H

/*
 * conc/select.h: wait on several channel operations and timers at once, as
 * Go's select statement does.
 *
 *   int got; struct job j;
 *   struct conc_select_case cases[] = {
 *           conc_select_recv(results, &got),
 *           conc_select_send(jobs, &j),
 *           conc_select_timer(conc_deadline_in_ms(50)),
 *   };
 *   size_t i;
 *   enum conc_status s = conc_select(cases, 3, 0, &i);
 *   // s == CONC_OK: case i happened (received, sent, or the timer fired)
 *   // s == CONC_CLOSED: case i's channel is closed (and drained, for a recv)
 *
 * Semantics (Go's, where Go has them):
 *  - Exactly one case happens per call, or none (timeout, cancel, would
 *    block).  A receive case's buffer is written only if that case happened.
 *  - A case whose channel is NULL is never ready (Go's nil channel).  The
 *    same channel may appear in several cases, in both directions.
 *  - Fair by default: among the cases ready at the moment of the call, each
 *    is taken with equal probability (the cases are tried in a fresh
 *    pseudo-random order every call).  CONC_SELECT_BIASED tries them in array
 *    order instead, for priority selection.
 *  - conc_select_try never blocks (Go's default): it reports
 *    CONC_WOULDBLOCK only if there was one instant at which no case at all
 *    was ready (it looks again until two looks agree; Go's
 *    TestNonblockSelectRace), so a set of channels of which one always has
 *    an element never gives CONC_WOULDBLOCK.  If the channels keep changing
 *    under it, it gives up after CONC_SELECT_POLL_PASSES looks.
 *  - A timer case is ready once its absolute deadline has passed (Go's
 *    time.After, without a thread per timer: the select parks until the
 *    earliest of its timers, its deadline and its context's deadline).
 *  - Zero cases, or only cases that can never become ready, with no
 *    deadline and no context, is CONC_INVALID, not a hang.
 *
 * Algorithm: try every case in poll order; if none is ready, register one
 * waiter record (the select's state word) on every channel involved and
 * re-check; park.  The first channel that completes or wakes a case claims
 * the state word with one CAS; the other registrations are then inert and
 * are removed.  There is no global lock and no locking of all channels in
 * address order: each channel's own queue lock is taken alone, briefly.
 * Rendezvous (capacity 0) channels hand the element over directly from the
 * sender's buffer to the receiver's.  The engine lives in conc/chan.h,
 * because a blocking operation on a rendezvous channel is a one-case select.
 *
 * Progress: blocking.  Any number of threads may select on the same channels
 * concurrently with sends, receives and close.  Memory: none allocated; the
 * case array (caller's memory) holds each case's registration, so it must
 * stay put and unused by others during the call.  Cancelable through ctx.
 */

#include "chan.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A receive case: when it happens, one element is written to out. */
static inline struct conc_select_case conc_select_recv(struct conc_chan *c, void *out)
{
	struct conc_select_case k;
	memset(&k, 0, sizeof k);
	k.op = CONC_SELECT_RECV;
	k.chan = c;
	k.buf = out;
	return k;
}

/* A send case: when it happens, a copy of *elem is sent. */
static inline struct conc_select_case conc_select_send(struct conc_chan *c, const void *elem)
{
	struct conc_select_case k;
	memset(&k, 0, sizeof k);
	k.op = CONC_SELECT_SEND;
	k.chan = c;
	k.buf = (void *)(uintptr_t)elem;
	return k;
}

/* A timer case: ready once the absolute deadline at has passed. */
static inline struct conc_select_case conc_select_timer(struct conc_deadline at)
{
	struct conc_select_case k;
	memset(&k, 0, sizeof k);
	k.op = CONC_SELECT_TIMER;
	k.at = at;
	return k;
}

/*
 * Wait until one of the n cases happens, the absolute deadline d passes, or
 * ctx (NULL for none) is done.  flags: 0 (fair) or CONC_SELECT_BIASED.
 * *chosen (may be NULL) gets the index of the case that happened, or n if
 * none did.
 *
 * Returns CONC_OK (case *chosen happened), CONC_CLOSED (case *chosen's
 * channel is closed: a receive found it drained, a send found it closed),
 * CONC_TIMEDOUT (d or ctx's deadline passed; a deadline already passed
 * means "try once"), CONC_CANCELED, or CONC_INVALID (NULL cases with n > 0,
 * n > CONC_SELECT_MAX_CASES, a case with a bad op, a channel case with a
 * NULL buffer or a destroyed channel, or nothing that could ever end the
 * wait).  A done context fails the call before it tries.  Any thread; uses
 * no CPU while parked; allocates nothing.
 */
CONC_NODISCARD static inline enum conc_status conc_select_until(struct conc_select_case *cases, size_t n,
								unsigned flags, struct conc_deadline d,
								struct conc_ctx *ctx, size_t *chosen)
{
	return conc__chan_select(cases, n, flags, d, ctx, chosen);
}

/* Wait as long as it takes.  CONC_OK, CONC_CLOSED or CONC_INVALID. */
CONC_NODISCARD static inline enum conc_status conc_select(struct conc_select_case *cases, size_t n, unsigned flags,
							  size_t *chosen)
{
	return conc__chan_select(cases, n, flags, conc_deadline_forever(), NULL, chosen);
}

/* Never block (Go's default case): CONC_OK, CONC_CLOSED, CONC_WOULDBLOCK
 * (no case ready; *chosen = n) or CONC_INVALID.  Zero cases: CONC_WOULDBLOCK. */
CONC_NODISCARD static inline enum conc_status conc_select_try(struct conc_select_case *cases, size_t n,
							      unsigned flags, size_t *chosen)
{
	if (n == 0 && chosen)
		*chosen = 0;
	if (n == 0)
		return CONC_WOULDBLOCK;
	enum conc_status s = conc__chan_select(cases, n, flags, conc_deadline_poll(), NULL, chosen);
	return s == CONC_TIMEDOUT ? CONC_WOULDBLOCK : s;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_SELECT_H */
