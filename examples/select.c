/* SPDX-License-Identifier: MIT */
/*
 * select: a worker hands results over a rendezvous channel while the main
 * thread also watches a second, buffered channel of log lines and a timer.
 * Run it: it prints the results, the log lines and how the select ended.
 */
#include <conc.h>
#include <pthread.h>
#include <stdio.h>

struct work {
	struct conc_chan *results; /* capacity 0: each send waits for the receiver */
	struct conc_chan *logs;    /* capacity 4 */
};

static void *worker(void *arg)
{
	struct work *w = arg;
	for (int i = 1; i <= 3; i++) {
		int r = i * 10;
		if (conc_chan_send(w->results, &r) != CONC_OK)
			break;
		char line[16];
		snprintf(line, sizeof line, "sent %d", r);
		if (conc_chan_send(w->logs, line) != CONC_OK)
			break;
	}
	conc_chan_close(w->results);
	conc_chan_close(w->logs);
	return NULL;
}

int main(void)
{
	struct work w;
	if (conc_chan_new(&w.results, 0, sizeof(int)) != CONC_OK ||
	    conc_chan_new(&w.logs, 4, 16) != CONC_OK)
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, worker, &w);

	int result;
	char line[16];
	struct conc_select_case cases[] = {
		conc_select_recv(w.results, &result),
		conc_select_recv(w.logs, line),
		conc_select_timer(conc_deadline_in_ms(10000)), /* a watchdog, like time.After */
	};
	int sum = 0, open = 2;
	while (open > 0) {
		size_t i;
		/* BIASED: take results before log lines when both are ready. */
		enum conc_status s = conc_select(cases, 3, CONC_SELECT_BIASED, &i);
		if (s == CONC_CLOSED) {
			cases[i].chan = NULL; /* a NULL channel is never ready again */
			open--;
		} else if (i == 0) {
			sum += result;
		} else if (i == 1) {
			printf("log: %s\n", line);
		} else {
			printf("timed out\n");
			break;
		}
	}
	printf("sum %d\n", sum);
	pthread_join(t, NULL);
	conc_chan_free(w.results);
	conc_chan_free(w.logs);
	return 0;
}
