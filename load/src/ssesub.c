/* ssesub: single-threaded epoll Server-Sent Events subscriber load generator.
 *
 * Opens N HTTP/1.1 connections to loopback SSE endpoints, parses every stream (identity or
 * chunked transfer coding; LF, CRLF or CR line endings; frames split across reads), counts data
 * events per connection, counts `broker.dropped` notices, and records publish-to-deliver latency
 * from a `"t":<CLOCK_MONOTONIC ns>` field that the publisher puts in the event data.
 *
 * Cost model: one fixed read buffer per connection (--bufsize, default 4 KiB), no allocation per
 * event, one clock read per read() call, edge-triggered epoll once streaming. A line longer than
 * the buffer is handled by its prefix (field name, first bytes of the value); the rest is skipped.
 *
 * Output: one JSON object on stdout at exit (duration over, --expect reached, --linger silence,
 * every connection gone, or SIGINT/SIGTERM). A line "ready ok=.. failed=.. stalled=.." goes to
 * stderr once every connection has been attempted and none is still connecting.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

enum { S_NEW = 0, S_CONNECTING, S_SENDING, S_HEADERS, S_STREAM, S_STALLED, S_CLOSED, S_FAILED };
enum { K_MESSAGE = 0, K_USER, K_DROPPED, K_BROKER };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t stall;
    uint8_t chunked;
    uint8_t skip_line;
    uint8_t last_cr;
    uint8_t ev_kind;
    uint8_t has_data;
    uint8_t has_t;
    uint8_t has_dropped;
    uint8_t complete;
    uint16_t req_sent;
    uint32_t len;      /* bytes in buf: head bytes, then an unfinished line */
    chunk_t ck;
    int64_t t_ns;      /* "t" of the event being parsed */
    int64_t dropped_n; /* "dropped" of the event being parsed */
    int64_t start_ns;
    uint64_t events;
    uint64_t dropped;  /* sum of broker.dropped counts on this connection */
} conn_t;

typedef struct {
    struct sockaddr_in addr;
    char hostport[96];
    char path[1024];
} target_t;

/* ---- configuration ---- */
static target_t *targets;
static int ntargets;
static char **topics;
static int ntopics;
static long nconns = 1;
static double duration_s = 10.0;
static double ramp = 0;          /* connections per second, 0 = as fast as allowed */
static long max_pending = 256;   /* connections between connect() and response head */
static long long expect_n = 0;
static double stall_fraction = 0;
static int idle_mode = 0;
static double linger_s = 0;
static double connect_timeout_s = 10.0;
static size_t bufsize = 4096;
static const char *hist_path = NULL;
static int progress = 0;
static char extra_headers[2048];

/* ---- state ---- */
static conn_t *conns;
static char *bufs;
static int epfd;
static volatile sig_atomic_t stop_signal = 0;
static hist_t lat;
static int64_t t0, now_cached;
static long opened, pending, n_ok, n_failed, n_refused, n_timeout, n_http, n_early_close, n_other_fail;
static long n_closed_by_server, n_proto_error, n_stalled, n_readers_dead, n_complete, n_readers_planned;
static int last_bad_status;
static uint64_t total_events, total_bytes, dropped_notices, dropped_total, broker_events;
static int64_t first_event_ns, last_event_ns, ready_ns;
static char scratch[65536];
static uint64_t n_reads, n_wakeups;
static long coalesce_us = 0;
static int hold = 0;
static int stall_rcvbuf = 0;
static int64_t complete_ns;

static void on_signal(int sig)
{
    UNUSED(sig);
    stop_signal = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ssesub [--host H --port P --path PATH | --url-list FILE] [options]\n"
            "  -n N                 connections (default 1)\n"
            "  --path PATH          request target; {i} = connection index, {i%%K} = index mod K,\n"
            "                       {topic} = entry (index mod count) of --topics\n"
            "  --topics a,b,c       topic list for {topic}\n"
            "  --url-list FILE      one http://127.0.0.1:PORT/PATH per line; connection i uses line i mod lines\n"
            "  --duration S         stop after S seconds (default 10)\n"
            "  --ramp R             open R connections per second (default: as fast as possible)\n"
            "  --max-pending M      at most M connections handshaking at once (default 256)\n"
            "  --expect E           stop when every reading connection got E events (+ dropped)\n"
            "  --linger S           stop when no data event arrived for S seconds (after the first)\n"
            "  --stall-fraction F   that fraction of connections never read after sending the request\n"
            "  --stall-rcvbuf B     SO_RCVBUF of the stalled connections (default: kernel default), so\n"
            "                       that the server meets a full window after B bytes, not megabytes\n"
            "  --idle               hold connections and count bytes, no parsing\n"
            "  --connect-timeout S  connect + response head timeout (default 10)\n"
            "  --bufsize B          read buffer per connection (default 4096)\n"
            "  --header 'K: V'      extra request header (repeatable)\n"
            "  --hist FILE          write latency histogram buckets as JSON\n"
            "  --progress           print a progress line to stderr every second\n"
            "  --hold               when --expect/--linger is met, print \"complete\" to stderr and keep\n"
            "                       the connections open until --duration or SIGTERM\n"
            "  --coalesce-us U      after a wakeup with fewer than 64 ready sockets, sleep U µs so that\n"
            "                       the next wakeup finds more (fewer context switches; adds up to U µs\n"
            "                       to the latency of events that arrive meanwhile; default 0)\n");
    exit(2);
}

static int parse_url(const char *url, target_t *t)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0)
        return -1;
    p += 7;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof t->hostport)
        return -1;
    char hp[64];
    if (hl >= sizeof hp)
        return -1;
    memcpy(hp, p, hl);
    hp[hl] = 0;
    char *colon = strrchr(hp, ':');
    int port = 80;
    if (colon) {
        *colon = 0;
        port = atoi(colon + 1);
    }
    memset(&t->addr, 0, sizeof t->addr);
    t->addr.sin_family = AF_INET;
    t->addr.sin_port = htons((uint16_t)port);
    if (parse_loopback(hp, &t->addr.sin_addr) != 0)
        return -2;
    snprintf(t->hostport, sizeof t->hostport, "%s:%d", hp, port);
    snprintf(t->path, sizeof t->path, "%s", slash ? slash : "/");
    return 0;
}

/* Expands {i}, {i%K} and {topic} in the path template for connection i. */
static size_t expand_path(const char *tmpl, long i, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 24 < cap;) {
        if (p[0] == '{' && p[1] == 'i' && p[2] == '}') {
            o += (size_t)snprintf(out + o, cap - o, "%ld", i);
            p += 3;
        } else if (p[0] == '{' && p[1] == 'i' && p[2] == '%') {
            char *end;
            long k = strtol(p + 3, &end, 10);
            if (*end == '}' && k > 0) {
                o += (size_t)snprintf(out + o, cap - o, "%ld", i % k);
                p = end + 1;
            } else {
                out[o++] = *p++;
            }
        } else if (strncmp(p, "{topic}", 7) == 0 && ntopics > 0) {
            o += (size_t)snprintf(out + o, cap - o, "%s", topics[i % ntopics]);
            p += 7;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    return o;
}

static size_t build_request(long i, char *out, size_t cap)
{
    const target_t *t = &targets[i % ntargets];
    char path[1536];
    expand_path(t->path, i, path, sizeof path);
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\nUser-Agent: ssesub\r\n%s\r\n",
                     path, t->hostport, extra_headers);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static inline char *cbuf(long i) { return bufs + (size_t)i * bufsize; }

static int is_pending(const conn_t *c)
{
    return c->state == S_CONNECTING || c->state == S_SENDING || c->state == S_HEADERS;
}

/* Ends a connection. `fail_kind`: 0 = it was streaming (closed), else a failure counter. */
static void conn_end(long i, long *fail_counter)
{
    conn_t *c = &conns[i];
    int was_pending = is_pending(c);
    int was_stream = c->state == S_STREAM;
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (was_pending)
        pending--;
    if (was_stream) {
        c->state = S_CLOSED;
        if (!c->complete)
            n_readers_dead++;
        if (fail_counter)
            (*fail_counter)++;
        else
            n_closed_by_server++;
    } else {
        c->state = S_FAILED;
        n_failed++;
        if (!c->stall)
            n_readers_dead++;
        if (fail_counter)
            (*fail_counter)++;
    }
}

static void check_complete(conn_t *c)
{
    if (expect_n > 0 && !c->complete && (long long)(c->events + c->dropped) >= expect_n) {
        c->complete = 1;
        n_complete++;
    }
}

/* Parses a decimal integer after `"key"` and optional blanks and a colon. */
static int find_json_int(const char *v, size_t n, const char *key, size_t kl, int64_t *out)
{
    const char *end = v + n;
    const char *p = v;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), key, kl);
        if (!q)
            return 0;
        q += kl;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
            if (q < end && *q >= '0' && *q <= '9') {
                int64_t x = 0;
                while (q < end && *q >= '0' && *q <= '9')
                    x = x * 10 + (*q++ - '0');
                *out = x;
                return 1;
            }
        }
        p = q;
    }
    return 0;
}

static void dispatch(conn_t *c)
{
    if (c->has_data) {
        switch (c->ev_kind) {
        case K_DROPPED:
            dropped_notices++;
            if (c->has_dropped) {
                dropped_total += (uint64_t)c->dropped_n;
                c->dropped += (uint64_t)c->dropped_n;
            }
            check_complete(c);
            break;
        case K_BROKER:
            broker_events++;
            break;
        default:
            c->events++;
            total_events++;
            if (c->has_t)
                hist_add(&lat, (now_cached - c->t_ns) / 1000);
            if (!first_event_ns)
                first_event_ns = now_cached;
            last_event_ns = now_cached;
            check_complete(c);
            break;
        }
    }
    c->has_data = c->has_t = c->has_dropped = 0;
    c->ev_kind = K_MESSAGE;
}

static void handle_line(conn_t *c, const char *p, size_t n)
{
    if (n == 0) {
        dispatch(c);
        return;
    }
    if (p[0] == ':')
        return;
    if (n >= 4 && memcmp(p, "data", 4) == 0 && (n == 4 || p[4] == ':')) {
        const char *v = p + 5;
        size_t vl = n > 5 ? n - 5 : 0;
        if (vl && *v == ' ')
            v++, vl--;
        c->has_data = 1;
        if (!c->has_t && vl > 4 && find_json_int(v, vl, "\"t\"", 3, &c->t_ns))
            c->has_t = 1;
        else if (!c->has_dropped && vl > 10 && find_json_int(v, vl, "\"dropped\"", 9, &c->dropped_n))
            c->has_dropped = 1;
    } else if (n >= 5 && memcmp(p, "event", 5) == 0 && (n == 5 || p[5] == ':')) {
        const char *v = p + 6;
        size_t vl = n > 6 ? n - 6 : 0;
        if (vl && *v == ' ')
            v++, vl--;
        if (vl == 14 && memcmp(v, "broker.dropped", 14) == 0)
            c->ev_kind = K_DROPPED;
        else if (vl >= 7 && memcmp(v, "broker.", 7) == 0)
            c->ev_kind = K_BROKER;
        else if ((vl == 7 && memcmp(v, "message", 7) == 0) || vl == 0)
            c->ev_kind = K_MESSAGE;
        else
            c->ev_kind = K_USER;
    }
}

/* Splits buf[0..end) into lines (LF, CRLF or CR), keeps an unfinished line at the front. */
static void parse_lines(conn_t *c, char *b, size_t end)
{
    size_t ls = 0;
    if (c->last_cr && end > 0) {
        if (b[0] == '\n')
            ls = 1;
        c->last_cr = 0;
    }
    while (ls < end) {
        char *p = b + ls;
        size_t avail = end - ls;
        char *nl = memchr(p, '\n', avail);
        size_t scan = nl ? (size_t)(nl - p) : avail;
        char *cr = memchr(p, '\r', scan);
        size_t llen, adv;
        if (cr) {
            llen = (size_t)(cr - p);
            if (llen + 1 < avail) {
                adv = llen + 1 + (cr[1] == '\n');
            } else {
                adv = llen + 1;
                c->last_cr = 1;
            }
        } else if (nl) {
            llen = scan;
            adv = scan + 1;
        } else {
            break;
        }
        if (c->skip_line)
            c->skip_line = 0;
        else
            handle_line(c, p, llen);
        ls += adv;
    }
    size_t rest = end - ls;
    if (rest == bufsize) {
        /* A line longer than the buffer: use its prefix, skip the rest. */
        if (!c->skip_line)
            handle_line(c, b, rest);
        c->skip_line = 1;
        rest = 0;
    } else if (rest && ls) {
        memmove(b, b + ls, rest);
    }
    c->len = (uint32_t)rest;
}

/* New raw body bytes are at buf[len .. len+n). Returns -1 if the stream ended or is broken. */
static int stream_feed(long i, size_t n)
{
    conn_t *c = &conns[i];
    char *b = cbuf(i);
    total_bytes += n;
    size_t dn = n;
    int ended = 0;
    if (c->chunked) {
        size_t used;
        dn = chunk_decode(&c->ck, b + c->len, n, b + c->len, &used);
        if (c->ck.state == CK_ERROR) {
            n_proto_error++;
            return -1;
        }
        if (c->ck.state == CK_DONE)
            ended = 1;
    }
    parse_lines(c, b, c->len + dn);
    return ended ? -1 : 0;
}

static void set_ready_if_done(void)
{
    if (!ready_ns && opened == nconns && pending == 0) {
        ready_ns = now_ns();
        fprintf(stderr, "ready ok=%ld failed=%ld stalled=%ld t=%.3f\n", n_ok, n_failed, n_stalled,
                (double)(ready_ns - t0) / 1e9);
        fflush(stderr);
    }
}

static void send_request(long i)
{
    conn_t *c = &conns[i];
    char req[4096];
    size_t rl = build_request(i, req, sizeof req);
    while (c->req_sent < rl) {
        ssize_t w = send(c->fd, req + c->req_sent, rl - c->req_sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                c->state = S_SENDING;
                return;
            }
            if (errno == EINTR)
                continue;
            conn_end(i, errno == ECONNREFUSED ? &n_refused : &n_other_fail);
            return;
        }
        c->req_sent = (uint16_t)(c->req_sent + w);
    }
    if (c->stall) {
        /* A frozen client: never read again, keep the socket open. */
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->state = S_STALLED;
        pending--;
        n_stalled++;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = S_HEADERS;
}

static void start_conn(long i)
{
    conn_t *c = &conns[i];
    const target_t *t = &targets[i % ntargets];
    c->start_ns = now_ns();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    opened++;
    pending++;
    c->state = S_CONNECTING;
    if (c->fd < 0) {
        conn_end(i, &n_other_fail);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->stall && stall_rcvbuf > 0) /* before connect, so the advertised window is small too */
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &stall_rcvbuf, sizeof stall_rcvbuf);
    int r = connect(c->fd, (const struct sockaddr *)&t->addr, sizeof t->addr);
    if (r != 0 && errno != EINPROGRESS) {
        conn_end(i, errno == ECONNREFUSED ? &n_refused : &n_other_fail);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        conn_end(i, &n_other_fail);
        return;
    }
}

static void on_writable(long i)
{
    conn_t *c = &conns[i];
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_end(i, err == ECONNREFUSED ? &n_refused : &n_other_fail);
            return;
        }
        c->state = S_SENDING;
    }
    if (c->state == S_SENDING)
        send_request(i);
}

static void on_head(long i)
{
    conn_t *c = &conns[i];
    char *b = cbuf(i);
    ssize_t r = read(c->fd, b + c->len, bufsize - c->len);
    if (r == 0) {
        conn_end(i, &n_early_close);
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        conn_end(i, &n_early_close);
        return;
    }
    c->len += (uint32_t)r;
    size_t he = http_head_end(b, c->len);
    if (!he) {
        if (c->len >= bufsize)
            conn_end(i, &n_other_fail);
        return;
    }
    int st = http_status(b, he);
    if (st != 200) {
        last_bad_status = st;
        conn_end(i, &n_http);
        return;
    }
    size_t vl;
    const char *te = http_header(b, he, "Transfer-Encoding", &vl);
    c->chunked = te && value_has_token(te, vl, "chunked");
    memset(&c->ck, 0, sizeof c->ck);
    pending--;
    n_ok++;
    c->state = S_STREAM;
    /* Edge-triggered from now on: a short read means the socket is drained, and epoll does not
     * poll every ready socket a second time on the next wait. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = (uint64_t)i};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    size_t rest = c->len - he;
    if (idle_mode) {
        total_bytes += rest;
        c->len = 0;
        return;
    }
    memmove(b, b + he, rest);
    c->len = 0;
    now_cached = now_ns();
    if (rest && stream_feed(i, rest) < 0)
        conn_end(i, NULL);
}

static void on_stream(long i)
{
    conn_t *c = &conns[i];
    char *b = cbuf(i);
    for (;;) {
        char *dst = idle_mode ? scratch : b + c->len;
        size_t room = idle_mode ? sizeof scratch : bufsize - c->len;
        ssize_t r = read(c->fd, dst, room);
        n_reads++;
        if (r == 0) {
            conn_end(i, NULL);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_end(i, NULL);
            return;
        }
        if (idle_mode) {
            total_bytes += (uint64_t)r;
            if ((size_t)r < room)
                break;
            continue;
        }
        now_cached = now_ns(); /* the delivery time of what this read returned */
        if (stream_feed(i, (size_t)r) < 0) {
            conn_end(i, NULL);
            return;
        }
        if ((size_t)r < room)
            break; /* drained (edge-triggered: new data raises a new event) */
    }
}

static void check_timeouts(int64_t now)
{
    if (pending == 0)
        return;
    int64_t limit = (int64_t)(connect_timeout_s * 1e9);
    for (long i = 0; i < opened; i++)
        if (is_pending(&conns[i]) && now - conns[i].start_ns > limit)
            conn_end(i, &n_timeout);
}

static void print_result(const char *reason, int64_t end_ns)
{
    double cu, cs;
    cpu_times(&cu, &cs);
    uint64_t emin = 0, emax = 0;
    int seen = 0;
    for (long i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->stall || (c->state != S_STREAM && c->state != S_CLOSED))
            continue;
        if (!seen || c->events < emin)
            emin = c->events;
        if (!seen || c->events > emax)
            emax = c->events;
        seen = 1;
    }
    /* What happened to the frozen clients: still open, or closed by the server? */
    long st_open = 0, st_closed = 0;
    unsigned long long st_queued = 0;
    for (long i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state != S_STALLED || c->fd < 0)
            continue;
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        int q = 0;
        if (ioctl(c->fd, FIONREAD, &q) == 0 && q > 0)
            st_queued += (unsigned long long)q;
        if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state != TCP_ESTABLISHED)
            st_closed++;
        else
            st_open++;
    }
    FILE *f = stdout;
    fprintf(f, "{\"tool\":\"ssesub\",\"target\":\"");
    json_str(f, targets[0].hostport);
    fprintf(f, "\",\"path\":\"");
    json_str(f, targets[0].path);
    fprintf(f, "\",\"connections\":%ld,\"opened\":%ld,\"ok\":%ld,\"failed\":%ld,", nconns, opened, n_ok, n_failed);
    fprintf(f,
            "\"fail_refused\":%ld,\"fail_timeout\":%ld,\"fail_http\":%ld,\"last_bad_status\":%d,"
            "\"fail_early_close\":%ld,\"fail_other\":%ld,",
            n_refused, n_timeout, n_http, last_bad_status, n_early_close, n_other_fail);
    fprintf(f, "\"closed_by_server\":%ld,\"protocol_errors\":%ld,\"stalled\":%ld,\"complete\":%ld,",
            n_closed_by_server, n_proto_error, n_stalled, n_complete);
    fprintf(f, "\"stalled_open\":%ld,\"stalled_closed_by_server\":%ld,\"stalled_queued_bytes\":%llu,",
            st_open, st_closed, st_queued);
    fprintf(f,
            "\"events\":%llu,\"events_min\":%llu,\"events_max\":%llu,\"dropped_notices\":%llu,"
            "\"dropped\":%llu,\"broker_events\":%llu,\"bytes\":%llu,",
            (unsigned long long)total_events, (unsigned long long)emin, (unsigned long long)emax,
            (unsigned long long)dropped_notices, (unsigned long long)dropped_total,
            (unsigned long long)broker_events, (unsigned long long)total_bytes);
    hist_print_json(f, "latency_ms", &lat);
    double window = first_event_ns && last_event_ns > first_event_ns
                        ? (double)(last_event_ns - first_event_ns) / 1e9 : 0.0;
    fprintf(f,
            ",\"first_event_mono_ns\":%lld,\"last_event_mono_ns\":%lld,\"start_mono_ns\":%lld,"
            "\"event_window_s\":%.6f,\"events_per_s\":%.1f,",
            (long long)first_event_ns, (long long)last_event_ns, (long long)t0, window,
            window > 0 ? (double)total_events / window : 0.0);
    fprintf(f,
            "\"ready_s\":%.3f,\"elapsed_s\":%.3f,\"exit_reason\":\"%s\",\"cpu_s\":%.3f,"
            "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"maxrss_kib\":%ld,\"reads\":%llu,\"wakeups\":%llu}\n",
            ready_ns ? (double)(ready_ns - t0) / 1e9 : -1.0, (double)(end_ns - t0) / 1e9, reason, cu + cs, cu,
            cs, maxrss_kib(), (unsigned long long)n_reads, (unsigned long long)n_wakeups);
    fflush(f);
    if (hist_path && hist_dump(hist_path, &lat) != 0)
        fprintf(stderr, "ssesub: cannot write %s: %s\n", hist_path, strerror(errno));
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/", *url_list = NULL, *topic_list = NULL;
    int port = 0;
    size_t hl = 0;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
#define NEEDV() do { if (!v) usage(); a++; } while (0)
        if (!strcmp(o, "--host")) { NEEDV(); host = v; }
        else if (!strcmp(o, "--port")) { NEEDV(); port = (int)arg_ll(o, v); }
        else if (!strcmp(o, "--path")) { NEEDV(); path = v; }
        else if (!strcmp(o, "--url-list")) { NEEDV(); url_list = v; }
        else if (!strcmp(o, "--topics")) { NEEDV(); topic_list = v; }
        else if (!strcmp(o, "-n")) { NEEDV(); nconns = (long)arg_ll(o, v); }
        else if (!strcmp(o, "--duration")) { NEEDV(); duration_s = arg_double(o, v); }
        else if (!strcmp(o, "--ramp")) { NEEDV(); ramp = arg_double(o, v); }
        else if (!strcmp(o, "--max-pending")) { NEEDV(); max_pending = (long)arg_ll(o, v); }
        else if (!strcmp(o, "--expect")) { NEEDV(); expect_n = arg_ll(o, v); }
        else if (!strcmp(o, "--linger")) { NEEDV(); linger_s = arg_double(o, v); }
        else if (!strcmp(o, "--stall-fraction")) { NEEDV(); stall_fraction = arg_double(o, v); }
        else if (!strcmp(o, "--idle")) { idle_mode = 1; }
        else if (!strcmp(o, "--connect-timeout")) { NEEDV(); connect_timeout_s = arg_double(o, v); }
        else if (!strcmp(o, "--bufsize")) { NEEDV(); bufsize = (size_t)arg_ll(o, v); }
        else if (!strcmp(o, "--hist")) { NEEDV(); hist_path = v; }
        else if (!strcmp(o, "--progress")) { progress = 1; }
        else if (!strcmp(o, "--hold")) { hold = 1; }
        else if (!strcmp(o, "--stall-rcvbuf")) { NEEDV(); stall_rcvbuf = (int)arg_ll(o, v); }
        else if (!strcmp(o, "--coalesce-us")) { NEEDV(); coalesce_us = (long)arg_ll(o, v); }
        else if (!strcmp(o, "--header")) {
            NEEDV();
            if (strchr(v, '\r') || strchr(v, '\n') || hl + strlen(v) + 3 >= sizeof extra_headers) usage();
            hl += (size_t)snprintf(extra_headers + hl, sizeof extra_headers - hl, "%s\r\n", v);
        }
        else usage();
#undef NEEDV
    }
    if (nconns < 1 || bufsize < 256 || bufsize > (1 << 20) || max_pending < 1 || stall_fraction < 0 ||
        stall_fraction > 1)
        usage();

    if (topic_list) {
        char *dup = strdup(topic_list);
        for (char *s = strtok(dup, ","); s; s = strtok(NULL, ","))
            ntopics++;
        topics = calloc((size_t)ntopics, sizeof *topics);
        free(dup);
        dup = strdup(topic_list);
        int k = 0;
        for (char *s = strtok(dup, ","); s; s = strtok(NULL, ","))
            topics[k++] = s;
    }
    if (url_list) {
        FILE *f = fopen(url_list, "r");
        if (!f) {
            perror(url_list);
            return 2;
        }
        char line[1200];
        int cap = 16;
        targets = calloc((size_t)cap, sizeof *targets);
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (!line[0] || line[0] == '#')
                continue;
            if (ntargets == cap)
                targets = realloc(targets, (size_t)(cap *= 2) * sizeof *targets);
            int r = parse_url(line, &targets[ntargets]);
            if (r) {
                fprintf(stderr, "ssesub: %s: %s\n", r == -2 ? "not a loopback address" : "bad url", line);
                return 2;
            }
            ntargets++;
        }
        fclose(f);
        if (!ntargets) {
            fprintf(stderr, "ssesub: empty url list\n");
            return 2;
        }
    } else {
        if (port <= 0 || port > 65535)
            usage();
        char url[1400];
        snprintf(url, sizeof url, "http://%s:%d%s", host, port, path);
        targets = calloc(1, sizeof *targets);
        int r = parse_url(url, &targets[0]);
        if (r) {
            fprintf(stderr, "ssesub: %s: %s\n", r == -2 ? "not a loopback address" : "bad target", url);
            return 2;
        }
        ntargets = 1;
    }

    long lim = raise_nofile(nconns + 64);
    if (lim < nconns + 16) {
        fprintf(stderr, "ssesub: RLIMIT_NOFILE is %ld, need %ld\n", lim, nconns + 16);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    conns = calloc((size_t)nconns, sizeof *conns);
    bufs = calloc((size_t)nconns, bufsize); /* pages are touched only by connections that read */
    if (!conns || !bufs) {
        fprintf(stderr, "ssesub: out of memory\n");
        return 1;
    }
    long nstall = 0;
    for (long i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        /* spread stalled connections evenly over the index range */
        long want = (long)((double)(i + 1) * stall_fraction);
        if (want > nstall) {
            conns[i].stall = 1;
            nstall++;
        }
    }
    n_readers_planned = nconns - nstall;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event evs[1024];
    t0 = now_ns();
    int64_t deadline = t0 + (int64_t)(duration_s * 1e9);
    int64_t next_tick = t0 + 100000000LL, next_progress = t0 + 1000000000LL;
    const char *reason = "duration";
    uint64_t prev_events = 0;

    for (;;) {
        int64_t now = now_ns();
        if (stop_signal) {
            reason = "signal";
            break;
        }
        if (now >= deadline)
            break;
        /* open new connections */
        long target_open = nconns;
        if (ramp > 0) {
            double allowed = (double)(now - t0) / 1e9 * ramp + 1.0;
            if (allowed < (double)nconns)
                target_open = (long)allowed;
        }
        while (opened < target_open && pending < max_pending)
            start_conn(opened);
        set_ready_if_done();
        if (now >= next_tick) {
            check_timeouts(now);
            next_tick = now + 100000000LL;
        }
        if (progress && now >= next_progress) {
            fprintf(stderr, "t=%.1f open=%ld ok=%ld failed=%ld pending=%ld events=%llu (+%llu/s) lat_p99=%.1fms\n",
                    (double)(now - t0) / 1e9, opened, n_ok, n_failed, pending, (unsigned long long)total_events,
                    (unsigned long long)(total_events - prev_events), hist_quantile(&lat, 0.99) / 1000.0);
            prev_events = total_events;
            next_progress = now + 1000000000LL;
        }
        if (opened == nconns && pending == 0) {
            if (n_ok + n_stalled == 0 && n_failed == nconns) {
                reason = "all_failed";
                break;
            }
            if (n_readers_dead >= n_readers_planned && n_stalled == 0) {
                reason = "all_closed";
                break;
            }
            if (expect_n > 0 && n_complete > 0 && n_complete + n_readers_dead >= n_readers_planned) {
                if (!hold) {
                    reason = "expect";
                    break;
                }
                if (!complete_ns) {
                    complete_ns = now;
                    fprintf(stderr, "complete reason=expect t=%.3f\n", (double)(now - t0) / 1e9);
                    fflush(stderr);
                }
            }
        }
        if (linger_s > 0 && last_event_ns && now - last_event_ns > (int64_t)(linger_s * 1e9)) {
            if (!hold) {
                reason = "linger";
                break;
            }
            if (!complete_ns) {
                complete_ns = now;
                fprintf(stderr, "complete reason=linger t=%.3f\n", (double)(now - t0) / 1e9);
                fflush(stderr);
            }
        }
        int64_t wait_ns = next_tick - now;
        if (deadline - now < wait_ns)
            wait_ns = deadline - now;
        if (opened < nconns && pending < max_pending && ramp > 0) {
            int64_t next_open = t0 + (int64_t)((double)opened / ramp * 1e9);
            if (next_open - now < wait_ns)
                wait_ns = next_open - now;
        }
        if (wait_ns < 0)
            wait_ns = 0;
        struct timespec ts = {.tv_sec = wait_ns / 1000000000LL, .tv_nsec = wait_ns % 1000000000LL};
        int n = epoll_pwait2(epfd, evs, 1024, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_pwait2");
            reason = "error";
            break;
        }
        now_cached = now_ns();
        n_wakeups++;
        for (int k = 0; k < n; k++) {
            long i = (long)evs[k].data.u64;
            conn_t *c = &conns[i];
            uint32_t e = evs[k].events;
            switch (c->state) {
            case S_CONNECTING:
            case S_SENDING:
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_writable(i);
                break;
            case S_HEADERS:
                on_head(i);
                break;
            case S_STREAM:
                on_stream(i);
                break;
            default:
                break;
            }
        }
        if (coalesce_us > 0 && n > 0 && n < 64) {
            /* few sockets were ready: let more data gather before the next wait */
            struct timespec cs = {.tv_sec = 0, .tv_nsec = coalesce_us * 1000};
            nanosleep(&cs, NULL);
        }
    }
    print_result(reason, now_ns());
    return 0;
}
