/* Shared helpers for the load tools: clock, CPU accounting, fd limit, a log-linear latency
 * histogram, an in-place HTTP chunked-body decoder and a tiny JSON writer.
 *
 * Everything here is header-only (static functions) so each tool stays a single translation
 * unit plus this file, built with plain gcc and no dependencies.
 */
#ifndef LOAD_COMMON_H
#define LOAD_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#define UNUSED(x) ((void)(x))

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Own CPU time (user, system) in seconds. */
static inline void cpu_times(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static inline long maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Raise RLIMIT_NOFILE to at least `want` (up to the hard limit). Returns the new soft limit. */
static inline long raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur < want) {
        rlim_t target = (rlim_t)want;
        if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max)
            target = rl.rlim_max;
        rl.rlim_cur = target;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            /* Root may raise the hard limit too. */
            struct rlimit r2 = {(rlim_t)want, (rlim_t)want};
            if (setrlimit(RLIMIT_NOFILE, &r2) != 0)
                return -1;
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

/* Only loopback targets are allowed: these tools are load generators. */
static inline int parse_loopback(const char *host, struct in_addr *out)
{
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, out) != 1)
        return -1;
    if ((ntohl(out->s_addr) >> 24) != 127)
        return -2;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Log-linear histogram of microsecond values, 0 .. 60 s.
 * Values below 128 µs have their own bucket; above, each power of two is split in 64 buckets
 * (relative error < 1.6 %). 1344 buckets cover up to 2^26 µs (67 s); larger values are clamped.
 */
#define HIST_N 1344
#define HIST_MAX_US 60000000ULL

typedef struct {
    uint64_t c[HIST_N];
    uint64_t count;
    uint64_t max_us;
    uint64_t min_us;
    double sum_us;
} hist_t;

static inline int hist_index(uint64_t v)
{
    if (v < 128)
        return (int)v;
    int m = 63 - __builtin_clzll(v);
    int idx = (m - 5) * 64 + (int)((v >> (m - 6)) - 64);
    return idx >= HIST_N ? HIST_N - 1 : idx;
}

static inline uint64_t hist_low(int idx)
{
    if (idx < 128)
        return (uint64_t)idx;
    int m = idx / 64 + 5;
    uint64_t s = (uint64_t)(idx % 64 + 64);
    return s << (m - 6);
}

static inline uint64_t hist_width(int idx)
{
    if (idx < 128)
        return 1;
    return 1ULL << (idx / 64 + 5 - 6);
}

static inline void hist_add(hist_t *h, int64_t v_us)
{
    uint64_t v = v_us < 0 ? 0 : (uint64_t)v_us;
    if (v > HIST_MAX_US)
        v = HIST_MAX_US;
    h->c[hist_index(v)]++;
    if (h->count == 0 || v < h->min_us)
        h->min_us = v;
    h->count++;
    h->sum_us += (double)v;
    if (v > h->max_us)
        h->max_us = v;
}

/* Value (µs) at quantile q: the middle of the bucket holding the ceil(q*count)-th value. */
static inline double hist_quantile(const hist_t *h, double q)
{
    if (h->count == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t cum = 0;
    for (int i = 0; i < HIST_N; i++) {
        cum += h->c[i];
        if (cum >= rank) {
            double v = (double)hist_low(i) + (double)(hist_width(i) - 1) / 2.0;
            if (v > (double)h->max_us)
                v = (double)h->max_us;
            if (v < (double)h->min_us)
                v = (double)h->min_us;
            return v;
        }
    }
    return (double)h->max_us;
}

/* Prints `"name":{"count":..,"p50":..,...}` with values in milliseconds. */
static inline void hist_print_json(FILE *f, const char *name, const hist_t *h)
{
    fprintf(f,
            "\"%s\":{\"count\":%llu,\"mean\":%.3f,\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,"
            "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
            name, (unsigned long long)h->count, h->count ? h->sum_us / (double)h->count / 1000.0 : 0.0,
            (double)h->min_us / 1000.0, hist_quantile(h, 0.50) / 1000.0, hist_quantile(h, 0.90) / 1000.0,
            hist_quantile(h, 0.99) / 1000.0, hist_quantile(h, 0.999) / 1000.0, (double)h->max_us / 1000.0);
}

/* Writes the non-empty buckets as JSON: {"unit":"us","buckets":[[low,width,count],...]}. */
static inline int hist_dump(const char *path, const hist_t *h)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\"unit\":\"us\",\"count\":%llu,\"max\":%llu,\"buckets\":[", (unsigned long long)h->count,
            (unsigned long long)h->max_us);
    int first = 1;
    for (int i = 0; i < HIST_N; i++) {
        if (!h->c[i])
            continue;
        fprintf(f, "%s[%llu,%llu,%llu]", first ? "" : ",", (unsigned long long)hist_low(i),
                (unsigned long long)hist_width(i), (unsigned long long)h->c[i]);
        first = 0;
    }
    fprintf(f, "]}\n");
    return fclose(f);
}

/* ---------------------------------------------------------------------------------------
 * Incremental HTTP/1.1 chunked-body decoder. Decodes in place: `out` may equal `in` (the
 * output never runs ahead of the input). `out` may be NULL to discard the payload.
 */
enum { CK_SIZE = 0, CK_EXT, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE, CK_ERROR };

typedef struct {
    uint8_t state;
    uint8_t trailer_nonempty; /* current trailer line has bytes */
    uint8_t size_digits;
    uint64_t left;            /* bytes left in the current chunk */
} chunk_t;

static inline int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static inline void chunk_size_done(chunk_t *ck)
{
    if (ck->size_digits == 0) {
        ck->state = CK_ERROR;
        return;
    }
    ck->state = ck->left == 0 ? CK_TRAILER : CK_DATA;
    ck->trailer_nonempty = 0;
}

/* Feeds n raw bytes. Returns the number of payload bytes written to out. Stops consuming at the
 * end of the body (state CK_DONE); *consumed tells how many input bytes were used. */
static inline size_t chunk_decode(chunk_t *ck, const char *in, size_t n, char *out, size_t *consumed)
{
    size_t i = 0, o = 0;
    while (i < n && ck->state != CK_DONE && ck->state != CK_ERROR) {
        char ch;
        int v;
        switch (ck->state) {
        case CK_SIZE:
            ch = in[i++];
            v = hexval(ch);
            if (v >= 0) {
                if (ck->size_digits >= 15) {
                    ck->state = CK_ERROR;
                    break;
                }
                ck->left = ck->left * 16 + (uint64_t)v;
                ck->size_digits++;
            } else if (ch == '\n') {
                chunk_size_done(ck);
            } else if (ch == '\r' || ch == ';' || ch == ' ' || ch == '\t') {
                ck->state = CK_EXT;
            } else {
                ck->state = CK_ERROR;
            }
            break;
        case CK_EXT:
            if (in[i++] == '\n')
                chunk_size_done(ck);
            break;
        case CK_DATA: {
            size_t m = n - i;
            if ((uint64_t)m > ck->left)
                m = (size_t)ck->left;
            if (out && m) {
                if (out + o != in + i)
                    memmove(out + o, in + i, m);
            }
            o += m;
            i += m;
            ck->left -= m;
            if (ck->left == 0)
                ck->state = CK_DATA_END;
            break;
        }
        case CK_DATA_END:
            ch = in[i++];
            if (ch == '\n') {
                ck->state = CK_SIZE;
                ck->left = 0;
                ck->size_digits = 0;
            } else if (ch != '\r') {
                ck->state = CK_ERROR;
            }
            break;
        case CK_TRAILER:
            ch = in[i++];
            if (ch == '\n') {
                if (!ck->trailer_nonempty)
                    ck->state = CK_DONE;
                ck->trailer_nonempty = 0;
            } else if (ch != '\r') {
                ck->trailer_nonempty = 1;
            }
            break;
        default:
            break;
        }
    }
    if (consumed)
        *consumed = i;
    return out ? o : o;
}

/* ---------------------------------------------------------------------------------------
 * HTTP response head helpers. */

/* Position just past the blank line ending the head, or 0 if not complete yet. Accepts CRLF and
 * bare LF line endings. */
static inline size_t http_head_end(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != '\n')
            continue;
        if (i + 1 < n && b[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Status code from "HTTP/1.x NNN ...", or -1. */
static inline int http_status(const char *b, size_t n)
{
    if (n < 12 || strncmp(b, "HTTP/1.", 7) != 0)
        return -1;
    int s = 0;
    for (int i = 9; i < 12; i++) {
        if (b[i] < '0' || b[i] > '9')
            return -1;
        s = s * 10 + (b[i] - '0');
    }
    return s;
}

/* Finds header `name` (case-insensitive, without colon) in the head; returns a pointer to its
 * value (leading blanks skipped) and its length, or NULL. */
static const char *http_header(const char *b, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    size_t i = 0;
    /* skip the status line */
    while (i < n && b[i] != '\n')
        i++;
    i++;
    while (i < n) {
        size_t ls = i;
        while (i < n && b[i] != '\n')
            i++;
        size_t le = i; /* at '\n' */
        if (le > ls && b[le - 1] == '\r')
            le--;
        if (le == ls)
            return NULL;
        if (le - ls > nl && b[ls + nl] == ':' && strncasecmp(b + ls, name, nl) == 0) {
            size_t v = ls + nl + 1;
            while (v < le && (b[v] == ' ' || b[v] == '\t'))
                v++;
            *vlen = le - v;
            return b + v;
        }
        i++;
    }
    return NULL;
}

static inline int value_has_token(const char *v, size_t vl, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= vl; i++)
        if (strncasecmp(v + i, tok, tl) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Option parsing helpers. */
static inline double arg_double(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "bad value for %s: %s\n", opt, v);
        exit(2);
    }
    return d;
}

static inline long long arg_ll(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end); /* accept 1e6 */
    if (errno || end == v || *end || d < 0) {
        fprintf(stderr, "bad value for %s: %s\n", opt, v);
        exit(2);
    }
    return (long long)d;
}

/* Writes s as a JSON string body (no quotes added). */
static inline void json_str(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
}

#endif
