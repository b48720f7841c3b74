/* SPDX-License-Identifier: MIT */
/* The README example: a producer thread, a typed channel, close, and a
 * receive bounded by a context's deadline. */
#include <conc.h>
#include <pthread.h>
#include <stdio.h>

CONC_CHAN_TYPED(intchan, int)

static void *producer(void *arg)
{
	struct intchan *ch = arg;
	for (int i = 1; i <= 5; i++)
		if (intchan_send(ch, i * i) != CONC_OK)
			break;
	intchan_close(ch); /* receivers drain, then see CONC_CLOSED */
	return NULL;
}

int main(void)
{
	struct intchan *ch;
	if (intchan_new(&ch, 2) != CONC_OK)
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, producer, ch);

	int v, sum = 0;
	enum conc_status s;
	while ((s = intchan_recv(ch, &v)) == CONC_OK)
		sum += v;
	printf("sum of squares: %d (%s)\n", sum, conc_strerror(s));
	pthread_join(t, NULL);

	/* Every blocking call takes a deadline and a context. */
	struct conc_ctx ctx;
	if (conc_ctx_init(&ctx, NULL, conc_deadline_in_ms(10)) != CONC_OK)
		return 1;
	struct intchan *idle;
	if (intchan_new(&idle, 1) != CONC_OK)
		return 1;
	s = intchan_recv_until(idle, &v, conc_deadline_forever(), &ctx);
	printf("idle receive: %s\n", conc_strerror(s));

	intchan_free(idle);
	intchan_free(ch);
	return conc_ctx_destroy(&ctx) == CONC_OK ? 0 : 1;
}
