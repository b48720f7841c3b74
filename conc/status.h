/* SPDX-License-Identifier: MIT */
#ifndef CONC_STATUS_H
#define CONC_STATUS_H

/*
 * conc/status.h: the one status enum of the whole toolkit.
 *
 * Every fallible conc function returns an enum conc_status (bulk calls
 * return a count and report the status through an out-parameter).  Zero is
 * success.  New codes are only ever appended, so a value keeps its meaning
 * across versions.  conc_strerror() names each code; it never returns NULL.
 *
 * Thread safety: everything here is pure.
 */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CONC_NODISCARD __attribute__((warn_unused_result))
#else
#define CONC_NODISCARD
#endif

enum conc_status {
	CONC_OK = 0,      /* success */
	CONC_CLOSED,      /* the channel is closed (and, for receives, drained) */
	CONC_FULL,        /* a try_ send found no room */
	CONC_EMPTY,       /* a try_ receive found nothing */
	CONC_TIMEDOUT,    /* the deadline (the call's or the context's) passed */
	CONC_CANCELED,    /* the context was canceled */
	CONC_INVALID,     /* bad argument: NULL, zero size, bad alignment... */
	CONC_NOMEM,       /* allocation failed */
	CONC_OVERFLOW,    /* a size computation would overflow */
	CONC_BUSY,        /* the object is still in use (destroy with waiters) */
	CONC_REJECTED,    /* refused by policy (e.g. an open circuit breaker) */
	CONC_UNSUPPORTED, /* not implemented for this input or platform */
	CONC_WOULDBLOCK,  /* a non-blocking call found nothing ready (select, semaphore) */
	CONC_STATUS_COUNT__
};

/* The name and meaning of a status, e.g. "CONC_CLOSED: channel closed". */
static inline const char *conc_strerror(int status)
{
	switch (status) {
	case CONC_OK:          return "CONC_OK: success";
	case CONC_CLOSED:      return "CONC_CLOSED: channel closed";
	case CONC_FULL:        return "CONC_FULL: no room (would block)";
	case CONC_EMPTY:       return "CONC_EMPTY: nothing to receive (would block)";
	case CONC_TIMEDOUT:    return "CONC_TIMEDOUT: deadline passed";
	case CONC_CANCELED:    return "CONC_CANCELED: context canceled";
	case CONC_INVALID:     return "CONC_INVALID: invalid argument";
	case CONC_NOMEM:       return "CONC_NOMEM: out of memory";
	case CONC_OVERFLOW:    return "CONC_OVERFLOW: size overflow";
	case CONC_BUSY:        return "CONC_BUSY: still in use";
	case CONC_REJECTED:    return "CONC_REJECTED: rejected";
	case CONC_UNSUPPORTED: return "CONC_UNSUPPORTED: not supported";
	case CONC_WOULDBLOCK:  return "CONC_WOULDBLOCK: not ready now (would block)";
	default:               return "CONC_?: unknown status";
	}
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_STATUS_H */
