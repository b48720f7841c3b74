/* SPDX-License-Identifier: MIT */
/* Pub/sub with a fast and a slow subscriber (the seed's pub/sub, without a
 * thread per message).  The fast one (BLOCK, room for 1) is read by its own
 * thread as ticks arrive; the publisher waits for it when it falls behind.
 * The slow one ("prices.*", DROP_OLDEST, room for 2) is read only after
 * publishing ends: it keeps the two newest ticks and counts the rest lost.
 * The publisher never waits for it.  Needs liburcu. */
#include <conc.h>
#include <stdio.h>

#define TICKS 6

static void *fast_reader(void *arg)
{
	struct conc_sub *fast = arg;
	struct conc_msg *m;
	while (conc_sub_recv(fast, &m) == CONC_OK) { /* CONC_CLOSED ends it */
		printf("fast got %s = %.*s\n", conc_msg_subject(m), (int)conc_msg_len(m), (const char *)conc_msg_data(m));
		conc_msg_release(m);
	}
	return NULL;
}

int main(void)
{
	struct conc_pubsub *ps;
	struct conc_sub *fast, *slow;
	if (conc_pubsub_new(&ps) != CONC_OK ||
	    conc_pubsub_subscribe(ps, "prices.eur", 1, CONC_SUB_BLOCK, &fast) != CONC_OK ||
	    conc_pubsub_subscribe(ps, "prices.*", 2, CONC_SUB_DROP_OLDEST, &slow) != CONC_OK)
		return 1;
	pthread_t t;
	if (pthread_create(&t, NULL, fast_reader, fast))
		return 1;
	size_t delivered[TICKS];
	for (int i = 0; i < TICKS; i++) {
		char price[16];
		int n = snprintf(price, sizeof price, "1.%02d", 10 + i);
		struct conc_msg *m; /* made once, shared by both subscribers */
		if (conc_msg_new(&m, "prices.eur", price, (size_t)n) != CONC_OK ||
		    conc_pubsub_publish(ps, m, &delivered[i]) != CONC_OK)
			return 1;
		conc_msg_release(m); /* the publisher's reference */
	}
	(void)conc_sub_close(fast); /* its reader drains, then stops */
	pthread_join(t, NULL);
	for (int i = 0; i < TICKS; i++)
		printf("tick %d delivered to %zu subscribers\n", i + 1, delivered[i]);
	struct conc_msg *m;
	while (conc_sub_try_recv(slow, &m) == CONC_OK) {
		printf("slow got %s = %.*s\n", conc_msg_subject(m), (int)conc_msg_len(m), (const char *)conc_msg_data(m));
		conc_msg_release(m);
	}
	printf("slow lost %llu ticks, fast lost %llu\n", (unsigned long long)conc_sub_lost(slow),
	       (unsigned long long)conc_sub_lost(fast));
	(void)conc_pubsub_unsubscribe(slow);
	return conc_pubsub_free(ps) == CONC_OK ? 0 : 1; /* unsubscribes fast */
}
