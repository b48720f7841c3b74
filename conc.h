/* SPDX-License-Identifier: MIT */
#ifndef CONC_H
#define CONC_H

/*
 * conc.h: Go's concurrency toolkit for C11, in one include.
 * Each layer is a header of its own under conc/; see README.md.
 */

#include "conc/status.h"
#include "conc/sys.h"
#include "conc/waitq.h"
#include "conc/ctx.h"
#include "conc/chan.h"
#include "conc/select.h"
#include "conc/sem.h"
#include "conc/fan.h"
#include "conc/pipeline.h"
#include "conc/pool.h"
#include "conc/result.h"
#include "conc/group.h"
#include "conc/shutdown.h"
#include "conc/breaker.h"
#include "conc/rate.h"
/* Pub/sub needs liburcu: included where its headers are, unless
 * CONC_NO_PUBSUB is defined. */
#if !defined(CONC_NO_PUBSUB) && defined(__has_include)
#if __has_include(<urcu/urcu-bp.h>)
#include "conc/pubsub.h"
#endif
#endif

#endif /* CONC_H */
