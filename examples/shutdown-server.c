/* SPDX-License-Identifier: MIT */
/*
 * shutdown-server: graceful shutdown of a small line-protocol TCP server on
 * 127.0.0.1 (port 0: the kernel picks a free one).
 *
 * Components, in order of registration (they stop in reverse):
 *   metrics   pretends to push its counters to a host that never answers:
 *             its stop waits for the drain deadline and reports
 *             CONC_TIMEDOUT, so the report shows a component that missed it
 *   log       a thread that receives log lines from the handlers on a conc
 *             channel; stop closes the channel, and the thread drains it
 *   handlers  one thread per connection; stop waits for them to finish
 *   listener  the accept loop; stop wakes it and joins it
 *
 * No blocking call here polls with a sleep: the accept loop and the
 * handlers block in poll(2) on their socket plus the read end of a "wake"
 * pipe, which the listener's stop writes once (and nobody reads, so it stays
 * readable: every poll on it returns from then on).  Handlers observe the
 * root context: the slow request's work ends when shutdown starts.
 *
 * The client thread makes three requests, then a slow one, and once the
 * server has that request in flight it sends SIGTERM to its own process
 * (raise).
 * The main thread, blocked in conc_shutdown_wait, turns the signal into the
 * cancellation of the root context, then runs the components' stops.
 * Nothing that depends on timing is printed: only the main thread prints
 * after the signal, and the client's last answer is printed after it is
 * joined.
 */
#include <conc.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONN 16

static struct conc_shutdown sd;

struct server {
	int lfd;
	int wake[2];                 /* listener's stop writes wake[1] once */
	struct sockaddr_in addr;
	pthread_t acceptor;
	pthread_t handler[MAX_CONN]; /* written by the acceptor only */
	int conn[MAX_CONN];
	size_t nconn;                /* read by others after the acceptor is joined */
	struct conc_chan *exited;    /* the acceptor's last word (capacity 1) */
	struct conc_chan *done;      /* one token per finished handler */
	struct conc_chan *inflight;  /* "the slow request is in flight" */
	struct conc_chan *log;       /* log lines (char[64]) for the log thread */
	pthread_t logger;
	struct conc_chan *log_exited;
	size_t log_lines;            /* the log thread's, read after it exits */
	char log_text[1024];
};

static struct server srv;

/* Wait until fd is readable or the server is told to stop.  Returns true if
 * fd is readable (preferred when both are). */
static bool wait_readable(int fd)
{
	struct pollfd p[2] = {{fd, POLLIN, 0}, {srv.wake[0], POLLIN, 0}};
	for (;;) {
		if (poll(p, 2, -1) < 0)
			continue; /* EINTR: the SIGTERM landed on this thread */
		if (p[0].revents)
			return true;
		if (p[1].revents)
			return false;
	}
}

static void log_line(const char *text)
{
	char line[64] = {0};
	snprintf(line, sizeof line, "%s", text);
	if (conc_chan_send_until(srv.log, line, conc_deadline_forever(), NULL) != CONC_OK)
		fprintf(stderr, "log closed early\n");
}

/* --------------------------------------------------------------- handlers */

static void *handle(void *arg)
{
	int fd = *(int *)arg;
	char req[64];
	size_t len = 0;
	while (len < sizeof req - 1 && !memchr(req, '\n', len) && wait_readable(fd)) {
		ssize_t r = read(fd, req + len, sizeof req - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	req[len] = '\0';
	char answer[96];
	if (strncmp(req, "GET /slow", 9) == 0) {
		int one = 1;
		if (conc_chan_try_send(srv.inflight, &one) != CONC_OK)
			fprintf(stderr, "inflight full?\n");
		/* The slow work: it runs until the server shuts down, then wraps
		 * up what it has (as work with a context would). */
		enum conc_status s = conc_ctx_wait_until(conc_shutdown_ctx(&sd), conc_deadline_forever());
		snprintf(answer, sizeof answer, "200 slow work cut short (%s)\n",
			 s == CONC_CANCELED ? "server shutting down" : "?");
		log_line("GET /slow: cut short by shutdown");
	} else if (strncmp(req, "GET /hello", 10) == 0) {
		snprintf(answer, sizeof answer, "200 hello\n");
		log_line("GET /hello: 200");
	} else {
		snprintf(answer, sizeof answer, "400 bad request\n");
		log_line("bad request: 400");
	}
	if (write(fd, answer, strlen(answer)) < 0)
		perror("write");
	close(fd);
	int one = 1;
	if (conc_chan_send(srv.done, &one) != CONC_OK)
		fprintf(stderr, "done closed?\n");
	return NULL;
}

static enum conc_status handlers_stop(void *arg, struct conc_deadline drain)
{
	(void)arg;
	/* The listener stopped first, so nconn is final. */
	for (size_t i = 0; i < srv.nconn; i++) {
		int one;
		enum conc_status s = conc_chan_recv_until(srv.done, &one, drain, NULL);
		if (s != CONC_OK) {
			printf("handlers: %zu of %zu still running at the deadline\n", srv.nconn - i, srv.nconn);
			return s;
		}
	}
	for (size_t i = 0; i < srv.nconn; i++)
		pthread_join(srv.handler[i], NULL);
	printf("handlers: all %zu connections finished\n", srv.nconn);
	return CONC_OK;
}

/* --------------------------------------------------------------- listener */

static void *accept_loop(void *arg)
{
	(void)arg;
	while (wait_readable(srv.lfd)) {
		int fd = accept(srv.lfd, NULL, NULL);
		if (fd < 0)
			continue; /* EINTR, or the client gave up */
		if (srv.nconn == MAX_CONN) {
			close(fd);
			continue;
		}
		srv.conn[srv.nconn] = fd;
		if (pthread_create(&srv.handler[srv.nconn], NULL, handle, &srv.conn[srv.nconn]) != 0) {
			close(fd);
			continue;
		}
		srv.nconn++;
	}
	int one = 1;
	if (conc_chan_try_send(srv.exited, &one) != CONC_OK)
		fprintf(stderr, "exited full?\n");
	return NULL;
}

static enum conc_status listener_stop(void *arg, struct conc_deadline drain)
{
	(void)arg;
	if (write(srv.wake[1], "x", 1) != 1) /* wakes the accept loop and idle handlers */
		return CONC_INVALID;
	int one;
	enum conc_status s = conc_chan_recv_until(srv.exited, &one, drain, NULL);
	if (s != CONC_OK)
		return s;
	pthread_join(srv.acceptor, NULL);
	close(srv.lfd);
	printf("listener: stopped accepting after %zu connections\n", srv.nconn);
	return CONC_OK;
}

/* -------------------------------------------------------------------- log */

static void *log_loop(void *arg)
{
	(void)arg;
	char line[64];
	size_t used = 0;
	while (conc_chan_recv(srv.log, line) == CONC_OK) { /* until closed and drained */
		int n = snprintf(srv.log_text + used, sizeof srv.log_text - used, "  log: %s\n", line);
		if (n > 0 && (size_t)n < sizeof srv.log_text - used)
			used += (size_t)n;
		srv.log_lines++;
	}
	int one = 1;
	if (conc_chan_try_send(srv.log_exited, &one) != CONC_OK)
		fprintf(stderr, "log_exited full?\n");
	return NULL;
}

static enum conc_status log_stop(void *arg, struct conc_deadline drain)
{
	(void)arg;
	conc_chan_close(srv.log); /* the handlers have stopped: nobody sends now */
	int one;
	enum conc_status s = conc_chan_recv_until(srv.log_exited, &one, drain, NULL);
	if (s != CONC_OK)
		return s;
	pthread_join(srv.logger, NULL);
	printf("log: flushed %zu lines\n%s", srv.log_lines, srv.log_text);
	return CONC_OK;
}

/* ---------------------------------------------------------------- metrics */

/* Its remote never answers: it waits for the drain deadline, then gives up. */
static enum conc_status metrics_stop(void *arg, struct conc_deadline drain)
{
	(void)arg;
	struct conc_ctx push;
	if (conc_ctx_init(&push, NULL, drain) != CONC_OK)
		return CONC_INVALID;
	enum conc_status s = conc_ctx_wait_until(&push, conc_deadline_forever());
	printf("metrics: push gave up: %s\n", conc_strerror(s));
	return conc_ctx_destroy(&push) == CONC_OK ? s : CONC_BUSY;
}

/* ----------------------------------------------------------------- client */

struct client {
	char last[128]; /* the slow request's answer, printed by main */
};

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&srv.addr, sizeof srv.addr) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Read the whole answer (the server closes the connection after it). */
static void read_all(int fd, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t r;
	while (len < size - 1 && (r = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)r;
	buf[len] = '\0';
}

static void *client(void *arg)
{
	struct client *c = arg;
	char answer[128];
	for (int i = 1; i <= 3; i++) {
		int fd = dial();
		if (fd < 0 || write(fd, "GET /hello\n", 11) != 11) {
			perror("client");
			return NULL;
		}
		read_all(fd, answer, sizeof answer);
		close(fd);
		printf("client: GET /hello -> %s", answer);
	}
	int fd = dial();
	if (fd < 0 || write(fd, "GET /slow\n", 10) != 10) {
		perror("client");
		return NULL;
	}
	int one;
	if (conc_chan_recv(srv.inflight, &one) != CONC_OK)
		return NULL;
	printf("client: GET /slow is in flight; sending SIGTERM to this process\n");
	/* raise(): the signal goes to this thread, which is in no conc wait.
	 * (kill(getpid(), ...) works as well; ThreadSanitizer, though, only
	 * delivers a signal to a thread inside an intercepted call, and a
	 * thread parked in conc's futex wait is not.) */
	raise(SIGTERM);
	read_all(fd, c->last, sizeof c->last);
	close(fd);
	return NULL;
}

/* ------------------------------------------------------------------- main */

static int fail(const char *what)
{
	perror(what);
	return 1;
}

int main(void)
{
	static struct conc_shutdown_slot slots[4];
	static const int sigs[] = {SIGINT, SIGTERM};
	if (conc_shutdown_init(&sd, slots, 4) != CONC_OK || conc_shutdown_signals(&sd, sigs, 2) != CONC_OK)
		return fail("conc_shutdown");
	if (conc_chan_new(&srv.exited, 1, sizeof(int)) != CONC_OK ||
	    conc_chan_new(&srv.done, MAX_CONN, sizeof(int)) != CONC_OK ||
	    conc_chan_new(&srv.inflight, 1, sizeof(int)) != CONC_OK ||
	    conc_chan_new(&srv.log, 8, 64) != CONC_OK || conc_chan_new(&srv.log_exited, 1, sizeof(int)) != CONC_OK)
		return fail("conc_chan_new");

	srv.addr.sin_family = AF_INET;
	srv.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof srv.addr;
	srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&srv.addr, sizeof srv.addr) != 0 ||
	    listen(srv.lfd, 16) != 0 || getsockname(srv.lfd, (struct sockaddr *)&srv.addr, &alen) != 0)
		return fail("listen");
	if (pipe(srv.wake) != 0)
		return fail("pipe");

	/* Registered first, stopped last. */
	if (conc_shutdown_register(&sd, "metrics", metrics_stop, NULL) != CONC_OK ||
	    conc_shutdown_register(&sd, "log", log_stop, NULL) != CONC_OK ||
	    conc_shutdown_register(&sd, "handlers", handlers_stop, NULL) != CONC_OK ||
	    conc_shutdown_register(&sd, "listener", listener_stop, NULL) != CONC_OK)
		return fail("register");
	pthread_create(&srv.logger, NULL, log_loop, NULL);
	pthread_create(&srv.acceptor, NULL, accept_loop, NULL);
	struct client c = {{0}};
	pthread_t cl;
	pthread_create(&cl, NULL, client, &c);

	if (conc_shutdown_wait(&sd) != CONC_OK)
		return fail("wait");
	int cause = conc_ctx_cause(conc_shutdown_ctx(&sd));
	int sig = conc_shutdown_cause_signal(cause);
	printf("main: shutdown requested by %s; stopping components (drain deadline 1 s)\n",
	       sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a trigger");

	enum conc_status s = conc_shutdown_run(&sd, conc_deadline_in_ms(1000));
	pthread_join(cl, NULL);
	printf("client: GET /slow -> %s", c.last);

	struct conc_shutdown_result r[4];
	size_t n = conc_shutdown_report(&sd, r, 4);
	printf("report (stop order), run returned %s:\n", conc_strerror(s));
	for (size_t i = 0; i < n && i < 4; i++)
		printf("  %-8s %-40s %s\n", r[i].name, conc_strerror(r[i].status),
		       r[i].missed ? "MISSED the drain deadline" : "in time");

	conc_chan_free(srv.exited);
	conc_chan_free(srv.done);
	conc_chan_free(srv.inflight);
	conc_chan_free(srv.log);
	conc_chan_free(srv.log_exited);
	close(srv.wake[0]);
	close(srv.wake[1]);
	if (conc_shutdown_destroy(&sd) != CONC_OK)
		return fail("destroy");
	printf("main: clean exit\n");
	return 0;
}
