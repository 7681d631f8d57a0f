/* pubload: HTTP/1.1 keep-alive publisher load generator.
 *
 * K connections, one request in flight per connection (no pipelining). Each request publishes
 * one event (POST PATH, body {"t":<CLOCK_MONOTONIC ns>,"seq":N,"pad":"..."}) or, with
 * --batch B > 1, B events in one POST /publish {"events":[{"topic":T,"data":{...}}, ...]}.
 * With --rate R the events are paced at R/s overall (idle connections take turns, round-robin);
 * without it every connection sends its next request as soon as the previous answer is in.
 * Responses are framed by Content-Length, chunked coding, or connection close.
 *
 * Output: one JSON object on stdout (accepted = events in 2xx answers, rejected by status,
 * events/s, response time percentiles, own CPU seconds).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

enum { P_DOWN = 0, P_CONNECTING, P_IDLE, P_SENDING, P_WAITING };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t head_done;
    uint8_t chunked;
    uint8_t conn_close;
    uint8_t until_close;
    int status;
    chunk_t ck;
    int64_t body_left;
    char *req;
    size_t req_len, req_sent;
    char *rbuf;
    size_t rlen;
    int64_t sent_ns;
    int64_t retry_at;
    int nev;
} pconn_t;

static int nconns = 1;
static long long max_events = 1000;
static double rate = 0;
static double duration_s = 60;
static const char *path = NULL;
static int batch = 1;
static const char *batch_topic = "bench";
static size_t pad_size = 0;
static const char *content_type = "application/json";
static char hostport[64];
static struct sockaddr_in addr;
static char extra_headers[1024];
static char **topics;
static int ntopics;

static pconn_t *conns;
static int epfd;
static volatile sig_atomic_t stop_signal;
static hist_t resp;
static char *pad;
static char *body;
static size_t body_cap, req_cap;
static int *idleq;
static int iq_head, iq_len;
static long long events_sent, requests_sent, accepted_events, accepted_requests, rejected_events;
static long long errors, reconnects, connect_failures, responses;
static long long status_count[600];
static char last_error[256];
static int64_t t_start, t_first_send, t_last_done;
static long live;

#define DRAIN_NS 5000000000LL

static void on_signal(int sig)
{
    UNUSED(sig);
    stop_signal++; /* a second signal ends the drain too */
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pubload --port P [options]\n"
            "  --host H          loopback address (default 127.0.0.1)\n"
            "  --path PATH       request target (default /topics/bench, or /publish with --batch);\n"
            "                    {topic} takes the next entry of --topics (by sequence number)\n"
            "  --topics a,b      topics for {topic}\n"
            "  -k K              connections (default 1)\n"
            "  -m M              events in total (default 1000)\n"
            "  --rate R          events per second over all connections (default: as fast as possible)\n"
            "  --duration S      stop sending after S seconds even if M is not reached (default 60);\n"
            "                    answers to requests in flight are awaited up to 5 s more\n"
            "  --batch B         events per request via POST /publish (default 1)\n"
            "  --topic T         topic of batch events (default bench)\n"
            "  --size S          pad each event's data to about S bytes\n"
            "  --content-type T  (default application/json)\n"
            "  --header 'K: V'   extra request header (repeatable)\n");
    exit(2);
}

static void iq_push(int i)
{
    idleq[(iq_head + iq_len) % nconns] = i;
    iq_len++;
}

static int iq_pop(void)
{
    int i = idleq[iq_head];
    iq_head = (iq_head + 1) % nconns;
    iq_len--;
    return i;
}

static void conn_close(int i)
{
    pconn_t *c = &conns[i];
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == P_IDLE) {
        /* remove from the idle queue */
        int n = iq_len;
        for (int k = 0; k < n; k++) {
            int j = iq_pop();
            if (j != i)
                iq_push(j);
        }
    }
    if (c->state != P_DOWN && c->state != P_CONNECTING)
        live--;
    c->state = P_DOWN;
}

static void start_connect(int i, int64_t now)
{
    pconn_t *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->retry_at = 0;
    if (c->fd < 0) {
        connect_failures++;
        c->retry_at = now + 200000000LL;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
    if (r != 0 && errno != EINPROGRESS) {
        snprintf(last_error, sizeof last_error, "connect: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        connect_failures++;
        c->retry_at = now + 200000000LL;
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->state = P_CONNECTING;
}

static void become_idle(int i)
{
    pconn_t *c = &conns[i];
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = P_IDLE;
    iq_push(i);
}

/* Appends one event's data object at b; returns its length. */
static size_t put_event(char *b, int64_t t, long long seq)
{
    if (pad_size)
        return (size_t)sprintf(b, "{\"t\":%lld,\"seq\":%lld,\"pad\":\"%s\"}", (long long)t, seq, pad);
    return (size_t)sprintf(b, "{\"t\":%lld,\"seq\":%lld}", (long long)t, seq);
}

static void expand_path(char *out, size_t cap, long long seq)
{
    const char *p = strstr(path, "{topic}");
    if (p && ntopics > 0)
        snprintf(out, cap, "%.*s%s%s", (int)(p - path), path, topics[seq % ntopics], p + 7);
    else
        snprintf(out, cap, "%s", path);
}

static void send_more(int i);

static void send_next(int i, int64_t now)
{
    pconn_t *c = &conns[i];
    int nev = batch;
    if (events_sent + nev > max_events)
        nev = (int)(max_events - events_sent);
    size_t bl = 0;
    if (batch > 1) {
        bl += (size_t)sprintf(body + bl, "{\"events\":[");
        for (int k = 0; k < nev; k++) {
            bl += (size_t)sprintf(body + bl, "%s{\"topic\":\"%s\",\"data\":", k ? "," : "", batch_topic);
            bl += put_event(body + bl, now, events_sent + k);
            body[bl++] = '}';
        }
        bl += (size_t)sprintf(body + bl, "]}");
    } else {
        bl = put_event(body, now, events_sent);
    }
    char target[1024];
    expand_path(target, sizeof target, events_sent);
    int hl = snprintf(c->req, req_cap,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "User-Agent: pubload\r\n%s\r\n",
                      target, hostport, content_type, bl, extra_headers);
    memcpy(c->req + hl, body, bl);
    c->req_len = (size_t)hl + bl;
    c->req_sent = 0;
    c->nev = nev;
    c->sent_ns = now;
    c->head_done = 0;
    c->rlen = 0;
    events_sent += nev;
    requests_sent++;
    if (!t_first_send)
        t_first_send = now;
    c->state = P_SENDING;
    send_more(i);
}

static void request_failed(int i, const char *what)
{
    pconn_t *c = &conns[i];
    errors++;
    snprintf(last_error, sizeof last_error, "%s", what);
    if (c->state == P_SENDING || c->state == P_WAITING)
        rejected_events += c->nev;
    conn_close(i);
    reconnects++;
    c->retry_at = now_ns();
}

static void send_more(int i)
{
    pconn_t *c = &conns[i];
    while (c->req_sent < c->req_len) {
        ssize_t w = send(c->fd, c->req + c->req_sent, c->req_len - c->req_sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                return;
            }
            if (errno == EINTR)
                continue;
            request_failed(i, "send failed");
            return;
        }
        c->req_sent += (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = P_WAITING;
}

static void response_done(int i, int64_t now)
{
    pconn_t *c = &conns[i];
    responses++;
    hist_add(&resp, (now - c->sent_ns) / 1000);
    t_last_done = now;
    int st = c->status;
    if (st >= 0 && st < 600)
        status_count[st]++;
    if (st >= 200 && st < 300) {
        accepted_events += c->nev;
        accepted_requests++;
    } else {
        rejected_events += c->nev;
        if (!last_error[0] || st >= 0) {
            size_t he = http_head_end(c->rbuf, c->rlen);
            size_t bl = c->rlen > he ? c->rlen - he : 0;
            if (bl > 160)
                bl = 160;
            snprintf(last_error, sizeof last_error, "HTTP %d: %.*s", st, (int)bl, c->rbuf + he);
        }
    }
    if (c->conn_close) {
        conn_close(i);
        c->retry_at = now;
        reconnects++;
    } else {
        become_idle(i);
    }
}

/* Consumes body bytes in rbuf[from..rlen); returns 1 when the response is complete. */
static int body_feed(pconn_t *c, size_t from)
{
    size_t n = c->rlen - from;
    if (c->until_close)
        return 0;
    if (c->chunked) {
        size_t used;
        chunk_decode(&c->ck, c->rbuf + from, n, NULL, &used);
        return c->ck.state == CK_DONE || c->ck.state == CK_ERROR;
    }
    c->body_left -= (int64_t)n;
    return c->body_left <= 0;
}

static void on_readable(int i, int64_t now)
{
    pconn_t *c = &conns[i];
    if (c->state == P_IDLE) {
        /* keep-alive close by the server (or stray bytes): reconnect */
        char tmp[512];
        ssize_t r = read(c->fd, tmp, sizeof tmp);
        if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)))
            return;
        conn_close(i);
        c->retry_at = now;
        reconnects++;
        return;
    }
    if (c->state != P_WAITING)
        return;
    size_t room = 16384 - c->rlen;
    if (room < 1024 && c->head_done) {
        /* body bytes past the head are only counted: keep the head, drop the rest */
        size_t he = http_head_end(c->rbuf, c->rlen);
        c->rlen = he;
        room = 16384 - c->rlen;
    }
    ssize_t r = read(c->fd, c->rbuf + c->rlen, room);
    if (r == 0) {
        if (c->head_done && c->until_close) {
            c->conn_close = 1;
            response_done(i, now);
            return;
        }
        request_failed(i, "connection closed before the response ended");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        request_failed(i, "read error");
        return;
    }
    size_t old = c->rlen;
    c->rlen += (size_t)r;
    if (!c->head_done) {
        size_t he = http_head_end(c->rbuf, c->rlen);
        if (!he) {
            if (c->rlen >= 16384)
                request_failed(i, "response head too large");
            return;
        }
        c->head_done = 1;
        c->status = http_status(c->rbuf, he);
        size_t vl;
        const char *v;
        c->chunked = 0;
        c->until_close = 0;
        c->conn_close = 0;
        c->body_left = 0;
        if ((v = http_header(c->rbuf, he, "Connection", &vl)) && value_has_token(v, vl, "close"))
            c->conn_close = 1;
        if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
            c->body_left = 0;
        } else if ((v = http_header(c->rbuf, he, "Transfer-Encoding", &vl)) && value_has_token(v, vl, "chunked")) {
            c->chunked = 1;
            memset(&c->ck, 0, sizeof c->ck);
        } else if ((v = http_header(c->rbuf, he, "Content-Length", &vl))) {
            c->body_left = strtoll(v, NULL, 10);
        } else {
            c->until_close = 1;
        }
        old = he;
    }
    if (body_feed(c, old))
        response_done(i, now);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *topic_list = NULL;
    int port = 0;
    size_t hl = 0;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
#define NEEDV() do { if (!v) usage(); a++; } while (0)
        if (!strcmp(o, "--host")) { NEEDV(); host = v; }
        else if (!strcmp(o, "--port")) { NEEDV(); port = (int)arg_ll(o, v); }
        else if (!strcmp(o, "--path")) { NEEDV(); path = v; }
        else if (!strcmp(o, "--topics")) { NEEDV(); topic_list = v; }
        else if (!strcmp(o, "-k")) { NEEDV(); nconns = (int)arg_ll(o, v); }
        else if (!strcmp(o, "-m")) { NEEDV(); max_events = arg_ll(o, v); }
        else if (!strcmp(o, "--rate")) { NEEDV(); rate = arg_double(o, v); }
        else if (!strcmp(o, "--duration")) { NEEDV(); duration_s = arg_double(o, v); }
        else if (!strcmp(o, "--batch")) { NEEDV(); batch = (int)arg_ll(o, v); }
        else if (!strcmp(o, "--topic")) { NEEDV(); batch_topic = v; }
        else if (!strcmp(o, "--size")) { NEEDV(); pad_size = (size_t)arg_ll(o, v); }
        else if (!strcmp(o, "--content-type")) { NEEDV(); content_type = v; }
        else if (!strcmp(o, "--header")) {
            NEEDV();
            if (strchr(v, '\r') || strchr(v, '\n') || hl + strlen(v) + 3 >= sizeof extra_headers) usage();
            hl += (size_t)snprintf(extra_headers + hl, sizeof extra_headers - hl, "%s\r\n", v);
        }
        else usage();
#undef NEEDV
    }
    if (port <= 0 || port > 65535 || nconns < 1 || batch < 1 || max_events < 1 || pad_size > (1 << 20))
        usage();
    if (!path)
        path = batch > 1 ? "/publish" : "/topics/bench";
    if (strlen(batch_topic) > 256 || strchr(batch_topic, '"') || strchr(batch_topic, '\\'))
        usage();
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    int pr = parse_loopback(host, &addr.sin_addr);
    if (pr) {
        fprintf(stderr, "pubload: %s: %s\n", pr == -2 ? "not a loopback address" : "bad host", host);
        return 2;
    }
    snprintf(hostport, sizeof hostport, "%s:%d", host, port);
    if (topic_list) {
        char *dup = strdup(topic_list);
        for (char *s = strtok(dup, ","); s; s = strtok(NULL, ","))
            ntopics++;
        free(dup);
        topics = calloc((size_t)ntopics, sizeof *topics);
        dup = strdup(topic_list);
        int k = 0;
        for (char *s = strtok(dup, ","); s; s = strtok(NULL, ","))
            topics[k++] = s;
    }
    /* data object: {"t":<=20 digits,"seq":<=20 digits,"pad":"..."} */
    size_t pad_len = pad_size > 48 ? pad_size - 48 : (pad_size ? 1 : 0);
    pad = malloc(pad_len + 1);
    if (!pad) {
        fprintf(stderr, "pubload: out of memory\n");
        return 1;
    }
    memset(pad, 'x', pad_len);
    pad[pad_len] = 0;
    body_cap = (size_t)batch * (pad_len + strlen(batch_topic) + 96) + 64;
    req_cap = body_cap + 2048 + strlen(extra_headers);
    body = malloc(body_cap);

    raise_nofile(nconns + 64);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    conns = calloc((size_t)nconns, sizeof *conns);
    idleq = calloc((size_t)nconns, sizeof *idleq);
    if (!body || !conns || !idleq) {
        fprintf(stderr, "pubload: out of memory\n");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int64_t t0 = now_ns();
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].req = malloc(req_cap);
        conns[i].rbuf = malloc(16384);
        if (!conns[i].req || !conns[i].rbuf) {
            fprintf(stderr, "pubload: out of memory\n");
            return 1;
        }
        start_connect(i, t0);
    }
    int64_t deadline = t0 + (int64_t)(duration_s * 1e9);
    int64_t connect_deadline = t0 + 5000000000LL;
    const char *reason = "done";
    int stopping = 0;
    int64_t drain_until = 0;
    struct epoll_event evs[256];

    for (;;) {
        int64_t now = now_ns();
        /* At the deadline (or on a signal) stop sending, but wait up to DRAIN_NS for the answers
         * to requests in flight: the server has usually acted on them already. */
        if (!stopping && (stop_signal || now >= deadline)) {
            stopping = 1;
            reason = stop_signal ? "signal" : "duration";
            drain_until = now + DRAIN_NS;
        }
        if (stopping && (now >= drain_until || stop_signal > 1))
            break;
        if (!t_start) {
            /* start the clock once every connection is up (or after 5 s with those that are) */
            if (live == nconns || (now >= connect_deadline && live > 0))
                t_start = now;
            else if (now >= connect_deadline) {
                reason = "connect_failed";
                break;
            }
        }
        int in_flight = 0;
        for (int i = 0; i < nconns; i++) {
            pconn_t *c = &conns[i];
            if (c->state == P_DOWN && c->retry_at && now >= c->retry_at && events_sent < max_events && !stopping)
                start_connect(i, now);
            if (c->state == P_SENDING || c->state == P_WAITING)
                in_flight++;
        }
        if ((events_sent >= max_events || stopping) && in_flight == 0) {
            if (!stopping)
                reason = "done";
            break;
        }
        if (t_start && live == 0 && now - t_start > 3000000000LL && connect_failures > 0) {
            reason = "server_unreachable";
            break;
        }
        int64_t wait_ns = 100000000LL;
        if (t_start && !stopping) {
            while (iq_len > 0 && events_sent < max_events) {
                if (rate > 0) {
                    int64_t due = t_start + (int64_t)((double)events_sent / rate * 1e9);
                    if (due > now) {
                        if (due - now < wait_ns)
                            wait_ns = due - now;
                        break;
                    }
                }
                send_next(iq_pop(), now);
                now = now_ns();
            }
        }
        int64_t limit = stopping ? drain_until : deadline;
        if (limit - now < wait_ns)
            wait_ns = limit - now;
        if (wait_ns < 0)
            wait_ns = 0;
        struct timespec ts = {.tv_sec = wait_ns / 1000000000LL, .tv_nsec = wait_ns % 1000000000LL};
        int n = epoll_pwait2(epfd, evs, 256, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_pwait2");
            reason = "error";
            break;
        }
        now = now_ns();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u64;
            pconn_t *c = &conns[i];
            uint32_t e = evs[k].events;
            if (c->state == P_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    snprintf(last_error, sizeof last_error, "connect: %s", strerror(err));
                    close(c->fd);
                    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    c->fd = -1;
                    c->state = P_DOWN;
                    c->retry_at = now + 200000000LL;
                    connect_failures++;
                    continue;
                }
                live++;
                become_idle(i);
            } else if (c->state == P_SENDING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    send_more(i);
                if (c->state == P_WAITING && (e & EPOLLIN))
                    on_readable(i, now);
            } else if (c->state == P_WAITING || c->state == P_IDLE) {
                on_readable(i, now);
            }
        }
    }
    int64_t t_end = now_ns();
    double cu, cs;
    cpu_times(&cu, &cs);
    int64_t from = t_first_send ? t_first_send : t_end;
    int64_t to = t_last_done > from ? t_last_done : t_end;
    double elapsed = (double)(to - from) / 1e9;
    FILE *f = stdout;
    fprintf(f, "{\"tool\":\"pubload\",\"target\":\"%s\",\"path\":\"", hostport);
    json_str(f, path);
    fprintf(f, "\",\"connections\":%d,\"batch\":%d,\"target_rate\":%.1f,\"events_sent\":%lld,\"requests\":%lld,",
            nconns, batch, rate, events_sent, requests_sent);
    fprintf(f, "\"responses\":%lld,\"accepted\":%lld,\"accepted_requests\":%lld,\"rejected_events\":%lld,",
            responses, accepted_events, accepted_requests, rejected_events);
    fprintf(f, "\"rejected\":{");
    int first = 1;
    for (int s = 0; s < 600; s++) {
        if (status_count[s] && (s < 200 || s >= 300)) {
            fprintf(f, "%s\"%d\":%lld", first ? "" : ",", s, status_count[s]);
            first = 0;
        }
    }
    fprintf(f, "},\"errors\":%lld,\"reconnects\":%lld,\"connect_failures\":%lld,\"last_error\":\"", errors,
            reconnects, connect_failures);
    json_str(f, last_error);
    fprintf(f, "\",\"elapsed_s\":%.6f,\"events_per_s\":%.1f,\"requests_per_s\":%.1f,", elapsed,
            elapsed > 0 ? (double)accepted_events / elapsed : 0.0,
            elapsed > 0 ? (double)accepted_requests / elapsed : 0.0);
    hist_print_json(f, "resp_ms", &resp);
    fprintf(f,
            ",\"first_send_mono_ns\":%lld,\"last_done_mono_ns\":%lld,\"exit_reason\":\"%s\","
            "\"cpu_s\":%.3f,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n",
            (long long)t_first_send, (long long)t_last_done, reason, cu + cs, cu, cs);
    fflush(f);
    return 0;
}
