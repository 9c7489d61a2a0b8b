/*
 * redis_conn.c: the Redis backend's connection (redis_int.h): hiredis,
 * synchronous, with timeouts. When Redis goes away, calls fail fast while
 * the reconnection backs off (0.1 s doubling to 5 s); results, failures and
 * restores that could not be written wait in an outbox, in order, and are
 * written first after reconnecting. Also the redis:// URL.
 *
 * Round trips: inside a batch (the master's turn of answers, ocp__rd_batch)
 * those writes are pipelined: appended, sent with the next command (the
 * lease that fills the room they left), whose answer is read after theirs,
 * or sent at the batch's end and answered with whatever command comes next.
 * Their answers are still read and said (errors, STALE); until then each is
 * kept, and a connection lost first puts them back in the outbox.
 */
#include "broker/redis_int.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <ctype.h>
#include <hiredis.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ocp__rd_set_err(rs *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
}

static void pending_free(pending *p);

/* Puts the sent writes whose answers were not read back at the head of the outbox (they are
 * older than anything in it): whether Redis ran them is not known, and each may run again
 * (a result is stored once; a tag forgotten already makes a STALE answer). */
static void unsend(rs *s)
{
    if (!s->sent)
        return;
    *s->sent_tail = s->outbox;
    if (!s->outbox)
        s->tail = s->sent_tail;
    s->outbox = s->sent;
    s->n_outbox += s->n_sent;
    s->sent = NULL;
    s->sent_tail = &s->sent;
    s->n_sent = 0;
}

static void drop_conn(rs *s, const char *reason)
{
    char why[300];
    snprintf(why, sizeof why, "%s", reason); /* reason may live in s->c, freed below */
    unsend(s);
    if (s->c) {
        redisFree(s->c);
        s->c = NULL;
    }
    s->backoff = s->backoff > 0 ? fmin(5.0, s->backoff * 2) : 0.1;
    s->next_try = ocp_now() + s->backoff;
    ocp__rd_set_err(s, "redis %s:%d: %s", s->host, s->port, why);
    if (s->was_up)
        OCP_LOG(OCP_LOG_WARN, "%s; reconnecting", s->err);
    s->was_up = false;
}

static redisReply *raw_cmd(rs *s, int argc, const char **argv, const size_t *lens)
{
    s->n_req++;
    s->n_rtt++;
    redisReply *r = redisCommandArgv(s->c, argc, argv, lens);
    if (!r) {
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
        return NULL;
    }
    return r;
}

static int flush_outbox(rs *s);

bool ocp__rd_stale(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_STATUS || strncmp(r->str, "STALE ", 6) != 0)
        return false;
    OCP_LOG(OCP_LOG_WARN, "%s", r->str + 6);
    return true;
}

/* Errors that mean "not now" (a Redis loading its data after a restart, a replica
 * without its master, a busy script): the write is kept and tried again. */
static bool transient(const redisReply *r)
{
    static const char *const now_now[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY"};
    for (size_t i = 0; i < sizeof now_now / sizeof now_now[0]; i++)
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, now_now[i], strlen(now_now[i])) == 0)
            return true;
    return false;
}

/* Reads the answers of the sent writes, in order, as ocp__rd_must_write reads its own: an
 * error is said (and the write dropped), a STALE answer said; a write answered "not now"
 * goes back to the outbox and *again is set (the caller drops the connection once it has
 * read what it waits for, so the backoff applies). 0, or OCP_E_BROKER when a write was
 * answered with an error or the connection was lost (the unanswered ones are in the
 * outbox then). */
static int drain(rs *s, bool *again)
{
    int rc = 0;
    pending *retry = NULL, **rtail = &retry;
    int n_retry = 0;
    while (s->sent && s->c) {
        void *v = NULL;
        if (redisGetReply(s->c, &v) != REDIS_OK || !v) {
            drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
            rc = OCP_E_BROKER;
            break;
        }
        redisReply *r = v;
        pending *p = s->sent;
        s->sent = p->next;
        if (!s->sent)
            s->sent_tail = &s->sent;
        s->n_sent--;
        p->next = NULL;
        if (transient(r)) {
            ocp__rd_set_err(s, "redis: %s", r->str);
            *rtail = p;
            rtail = &p->next;
            n_retry++;
            *again = true;
        } else {
            if (r->type == REDIS_REPLY_ERROR) {
                ocp__rd_set_err(s, "redis: %s", r->str);
                OCP_LOG(OCP_LOG_ERROR, "redis: a pipelined write failed: %s", r->str);
                rc = OCP_E_BROKER;
            }
            ocp__rd_stale(r);
            pending_free(p);
        }
        freeReplyObject(r);
    }
    if (retry) { /* older than what waits in the outbox */
        *rtail = s->outbox;
        if (!s->outbox)
            s->tail = rtail;
        s->outbox = retry;
        s->n_outbox += n_retry;
    }
    return rc;
}

/* The answer to the command just appended (after the sent writes' answers): one round
 * trip for all of them. NULL when the connection was lost. */
static redisReply *appended_reply(rs *s)
{
    bool again = false;
    s->n_rtt++;
    drain(s, &again);
    if (!s->c)
        return NULL;
    void *v = NULL;
    if (redisGetReply(s->c, &v) != REDIS_OK || !v) {
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
        return NULL;
    }
    if (again)
        drop_conn(s, "a pipelined write was answered \"not now\"; it is made again");
    return v;
}

/* A command on the live connection, after the sent writes (one round trip for all). */
static redisReply *exchange(rs *s, int argc, const char **argv, const size_t *lens)
{
    if (!s->sent)
        return raw_cmd(s, argc, argv, lens);
    s->n_req++;
    if (redisAppendCommandArgv(s->c, argc, argv, lens) != REDIS_OK) {
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "out of memory");
        return NULL;
    }
    return appended_reply(s);
}

int ocp__rd_conn(rs *s)
{
    if (s->c)
        return 0;
    double now = ocp_now();
    if (now < s->next_try)
        return OCP_E_BROKER;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) {
        char why[300];
        snprintf(why, sizeof why, "cannot connect: %s", c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        s->c = NULL;
        drop_conn(s, why);
        return OCP_E_BROKER;
    }
    struct timeval cmd_tv = {15, 0};
    redisSetTimeout(c, cmd_tv);
    redisEnableKeepAlive(c);
    s->c = c;
    if (s->password) {
        const char *a[3] = {"AUTH", s->user ? s->user : s->password, s->password};
        redisReply *r = raw_cmd(s, s->user ? 3 : 2, a, NULL);
        if (!r)
            return OCP_E_BROKER;
        if (r->type == REDIS_REPLY_ERROR) {
            char why[300];
            snprintf(why, sizeof why, "AUTH: %s", r->str);
            freeReplyObject(r);
            drop_conn(s, why);
            return OCP_E_BROKER;
        }
        freeReplyObject(r);
    }
    if (s->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", s->db);
        const char *a[2] = {"SELECT", db};
        redisReply *r = raw_cmd(s, 2, a, NULL);
        if (!r)
            return OCP_E_BROKER;
        if (r->type == REDIS_REPLY_ERROR) {
            char why[300];
            snprintf(why, sizeof why, "SELECT %d: %s", s->db, r->str);
            freeReplyObject(r);
            drop_conn(s, why);
            return OCP_E_BROKER;
        }
        freeReplyObject(r);
    }
    if (!s->was_up && s->backoff > 0)
        OCP_LOG(OCP_LOG_WARN, "redis %s:%d: connected again", s->host, s->port);
    s->was_up = true;
    s->backoff = 0;
    return flush_outbox(s);
}

redisReply *ocp__rd_cmdv(rs *s, int argc, const char **argv, const size_t *lens)
{
    if (ocp__rd_conn(s))
        return NULL;
    redisReply *r = exchange(s, argc, argv, lens);
    if (r && r->type == REDIS_REPLY_ERROR) {
        ocp__rd_set_err(s, "redis: %s", r->str);
        OCP_LOG(OCP_LOG_ERROR, "redis %s: %s", argv[0], r->str);
    }
    return r;
}

redisReply *ocp__rd_cmd(rs *s, const char *fmt, ...)
{
    if (ocp__rd_conn(s))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = NULL;
    s->n_req++;
    if (!s->sent) {
        s->n_rtt++;
        r = redisvCommand(s->c, fmt, ap);
        if (!r)
            drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
    } else if (redisvAppendCommand(s->c, fmt, ap) != REDIS_OK) {
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "out of memory");
    } else {
        r = appended_reply(s);
    }
    va_end(ap);
    if (r && r->type == REDIS_REPLY_ERROR)
        ocp__rd_set_err(s, "redis: %s", r->str);
    return r;
}

/* ---- the outbox ---------------------------------------------------------------------- */

static void pending_free(pending *p)
{
    for (int i = 0; i < p->argc; i++)
        free(p->argv[i]);
    free(p->argv);
    free(p->lens);
    free(p);
}

static int flush_outbox(rs *s)
{
    while (s->outbox) {
        pending *p = s->outbox;
        redisReply *r = raw_cmd(s, p->argc, (const char **)p->argv, p->lens);
        if (!r)
            return OCP_E_BROKER; /* still down: the rest waits */
        if (transient(r)) {
            char why[300];
            snprintf(why, sizeof why, "%s", r->str);
            freeReplyObject(r);
            drop_conn(s, why);
            return OCP_E_BROKER;
        }
        if (r->type == REDIS_REPLY_ERROR)
            OCP_LOG(OCP_LOG_ERROR, "redis: a delayed write failed: %s", r->str);
        ocp__rd_stale(r);
        freeReplyObject(r);
        s->outbox = p->next;
        if (!s->outbox)
            s->tail = &s->outbox;
        s->n_outbox--;
        pending_free(p);
    }
    return 0;
}

static pending *pending_new(int argc, const char **argv, const size_t *lens)
{
    pending *p = ocp_xcalloc(1, sizeof *p);
    p->argc = argc;
    p->argv = ocp_xcalloc((size_t)argc, sizeof *p->argv);
    p->lens = ocp_xcalloc((size_t)argc, sizeof *p->lens);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        p->argv[i] = ocp_xmalloc(n + 1);
        memcpy(p->argv[i], argv[i], n);
        p->argv[i][n] = '\0';
        p->lens[i] = n;
    }
    return p;
}

/* Appends a write to the pipeline (its answer read with the next command's): 0, or
 * OCP_E_BROKER when hiredis could not (the connection is dropped then). */
static int append_sent(rs *s, int argc, const char **argv, const size_t *lens)
{
    if (redisAppendCommandArgv(s->c, argc, argv, lens) != REDIS_OK) {
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "out of memory");
        return OCP_E_BROKER;
    }
    pending *p = pending_new(argc, argv, lens);
    *s->sent_tail = p;
    s->sent_tail = &p->next;
    s->n_sent++;
    s->n_req++;
    return 0;
}

/* Writes what hiredis holds for the connection, without waiting for an answer. */
static void write_out(rs *s)
{
    int done = 0;
    while (s->c && !done) {
        if (redisBufferWrite(s->c, &done) != REDIS_OK)
            drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
    }
}

int ocp__rd_send(rs *s, int argc, const char **argv, const size_t *lens)
{
    if (s->outbox || ocp__rd_conn(s) || append_sent(s, argc, argv, lens))
        return OCP_E_BROKER;
    if (!s->batch)
        write_out(s);
    return 0;
}

int ocp__rd_must_write(rs *s, int argc, const char **argv, const size_t *lens)
{
    /* In a batch: pipelined, out with the next command (its answer is read then). */
    if (s->batch && !s->outbox && ocp__rd_conn(s) == 0 && append_sent(s, argc, argv, lens) == 0)
        return 0;
    if (!s->outbox && ocp__rd_conn(s) == 0) {
        redisReply *r = exchange(s, argc, argv, lens);
        if (r && transient(r)) {
            char why[300];
            snprintf(why, sizeof why, "%s", r->str);
            freeReplyObject(r);
            drop_conn(s, why);
            r = NULL;
        }
        if (r) {
            int rc = r->type == REDIS_REPLY_ERROR ? OCP_E_BROKER : 0;
            if (rc)
                ocp__rd_set_err(s, "redis: %s", r->str);
            ocp__rd_stale(r);
            freeReplyObject(r);
            return rc;
        }
    }
    pending *p = pending_new(argc, argv, lens);
    *s->tail = p;
    s->tail = &p->next;
    s->n_outbox++;
    OCP_LOG(OCP_LOG_WARN, "%s: a write waits for the connection (%d waiting)", s->err, s->n_outbox);
    return 0;
}

/* A new string of n bytes of s with %XX escapes decoded, as redis-py reads URL passwords. */
static char *unescape(const char *s, size_t n)
{
    char *out = ocp_xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            *o++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

int ocp__rd_parse_url(rs *s, const char *t, char *err, size_t errlen)
{
    /* t is what follows "redis://": [[user]:password@]host[:port][/db][?...] */
    const char *at = strrchr(t, '@');
    const char *hp = t;
    if (at) {
        const char *colon = memchr(t, ':', (size_t)(at - t));
        if (colon) {
            if (colon > t)
                s->user = unescape(t, (size_t)(colon - t));
            s->password = unescape(colon + 1, (size_t)(at - colon - 1));
        } else {
            s->password = unescape(t, (size_t)(at - t));
        }
        hp = at + 1;
    }
    size_t hl = strcspn(hp, ":/?");
    if (hl >= sizeof s->host)
        return ocp_errf(OCP_E_CONFIG, err, errlen, "broker: host name too long");
    memcpy(s->host, hp, hl);
    s->host[hl] = '\0';
    if (!s->host[0])
        snprintf(s->host, sizeof s->host, "localhost");
    const char *p = hp + hl;
    s->port = 6379;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v <= 0 || v > 65535)
            return ocp_errf(OCP_E_CONFIG, err, errlen, "broker: bad port in redis URL");
        s->port = (int)v;
        p = end;
    }
    if (*p == '/' && p[1] && p[1] != '?') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 0 || v > 100000 || (*end && *end != '?'))
            return ocp_errf(OCP_E_CONFIG, err, errlen,
                            "broker: bad database number in redis URL (redis://host:6379/0)");
        s->db = (int)v;
    }
    return 0;
}

int ocp__rd_batch(void *st, int begin)
{
    rs *s = st;
    s->batch = begin != 0;
    if (!begin && s->sent)
        write_out(s); /* their answers are read with the next command's (no wait here) */
    return 0;
}

void ocp__rd_disconnect(rs *s)
{
    s->batch = false;
    if (s->sent && s->c) {
        bool again = false;
        s->n_rtt++;
        drain(s, &again);
        if (again)
            drop_conn(s, "the last writes are answered \"not now\"");
    }
    if (s->n_req)
        OCP_LOG(OCP_LOG_DEBUG, "redis: %lu requests in %lu round trips", s->n_req, s->n_rtt);
    if (s->outbox) {
        s->next_try = 0;
        if (ocp__rd_conn(s) || s->outbox)
            OCP_LOG(OCP_LOG_ERROR,
                    "redis %s:%d: %d writes (results or restores) could not be made; their "
                    "pages go back to their queue after the visibility timeout",
                    s->host, s->port, s->n_outbox);
    }
    for (pending *p = s->outbox, *next; p; p = next) {
        next = p->next;
        pending_free(p);
    }
    s->outbox = NULL;
    s->tail = &s->outbox;
    s->n_outbox = 0;
    if (s->c)
        redisFree(s->c);
    s->c = NULL;
}
