/* SPDX-License-Identifier: MIT */
#ifndef CONC_TEST_UNIT_H
#define CONC_TEST_UNIT_H

/*
 * Helpers of the Criterion suites, for the test's own thread only: each
 * asserts, so a failure names the call.  Each suite uses some of them.
 * Include after conc.h and <criterion/criterion.h>.
 */

#include <pthread.h>

CONC__UNUSED static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	cr_assert_eq(pthread_create(t, NULL, fn, arg), 0, "pthread_create");
}

CONC__UNUSED static void join(pthread_t t)
{
	cr_assert_eq(pthread_join(t, NULL), 0, "pthread_join");
}

CONC__UNUSED static struct conc_chan *new_chan(size_t cap, size_t esize)
{
	struct conc_chan *c = NULL;
	cr_assert_eq(conc_chan_new(&c, cap, esize), CONC_OK);
	cr_assert_not_null(c);
	return c;
}

CONC__UNUSED static void free_chan(struct conc_chan *c)
{
	cr_assert_eq(conc_chan_free(c), CONC_OK);
}

/* Send v without blocking; it must fit. */
CONC__UNUSED static void put(struct conc_chan *c, uint64_t v)
{
	cr_assert_eq(conc_chan_try_send(c, &v), CONC_OK, "try_send %llu", (unsigned long long)v);
}

/* Receive without blocking; it must be want. */
CONC__UNUSED static void expect(struct conc_chan *c, uint64_t want)
{
	uint64_t v = ~want;
	cr_assert_eq(conc_chan_try_recv(c, &v), CONC_OK, "try_recv (expected %llu)", (unsigned long long)want);
	cr_assert_eq(v, want, "received %llu, expected %llu", (unsigned long long)v, (unsigned long long)want);
}

#endif /* CONC_TEST_UNIT_H */
