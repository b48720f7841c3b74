/* SPDX-License-Identifier: MIT */
#ifndef CONC_RESULT_H
#define CONC_RESULT_H

/*
 * conc/result.h: an outcome to send over a channel (the seed's
 * `Result{Value, Err}` from processAsync): a value, a status and where it
 * came from.
 *
 * struct conc_result carries the value as a pointer; CONC_RESULT_TYPED
 * declares a result struct whose value is any type, stored inline (a channel
 * of those moves the value with the status, no allocation):
 *
 *   CONC_RESULT_TYPED(int_result, int);          // struct int_result
 *   struct int_result r = {CONC_OK, 7, 49};      // status, origin, value
 *
 * status is CONC_OK or an error: a conc_status or any non-zero code of the
 * caller's.  origin says which task, item or input produced it (an index the
 * producer chooses).  Pure data: no functions block, allocate or lock.
 */

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A result struct named `struct name` with a value of type T. */
#define CONC_RESULT_TYPED(name, T) \
	struct name {              \
		int status;        \
		uint64_t origin;   \
		T value;           \
	}

CONC_RESULT_TYPED(conc_result, void *);

/* A success from origin, with value. */
static inline struct conc_result conc_result_ok(uint64_t origin, void *value)
{
	struct conc_result r = {CONC_OK, origin, value};
	return r;
}

/* A failure from origin with status (non-zero; CONC_OK becomes CONC_INVALID,
 * so a failure never reads as a success). */
static inline struct conc_result conc_result_err(uint64_t origin, int status)
{
	struct conc_result r = {status ? status : CONC_INVALID, origin, NULL};
	return r;
}

/* Whether r is a success. */
static inline int conc_result_is_ok(const struct conc_result *r)
{
	return r && r->status == CONC_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* CONC_RESULT_H */
