/*
 * pidbox.c: Celery's remote control over Redis (pidbox.h): the parser of
 * control messages (untrusted: fuzz/fuzz_pidbox.c calls the same
 * function), kombu's envelope, and the mailbox's two non-blocking Redis
 * connections: one subscribed to the pidbox channel, one that sends
 * replies and events (events.c builds those). Nothing here waits on
 * Redis: a connection that cannot take a write now keeps it in hiredis's
 * buffer (bounded), one that is down drops it and comes back with a
 * back-off of 0.5 s doubling to 10 s. Not on DNS either: hiredis resolves
 * with a blocking getaddrinfo even when it connects without blocking, so
 * the host is resolved once, at the open (as the broker's first connection
 * just did), and every reconnect goes to that address.
 */
#include "broker/pidbox.h"
#include "broker/celery.h"
#include "broker/redis_int.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <hiredis.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_FIELD   256       /* method, ticket, reply_to's names, a destination */
#define MAX_PATTERN 128       /* a pattern matched against the node's name */
#define MAX_INBOX   64        /* requests read and not yet taken by ocp_pidbox_next */
#define MAX_OBUF    (8 << 20) /* bytes a connection may hold unsent */

/* ---- the parser ------------------------------------------------------------------------- */

void ocp_pidbox_req_fini(ocp_pidbox_req *r)
{
    if (!r)
        return;
    free(r->method);
    json_decref(r->arguments);
    free(r->ticket);
    free(r->reply_exchange);
    free(r->reply_key);
    memset(r, 0, sizeof *r);
}

/* A string member of o no longer than MAX_FIELD: 0 with *out (borrowed, NULL when absent or
 * null), or -1 when it is there but is not such a string. */
static int short_string(json_t *o, const char *key, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > MAX_FIELD ||
        strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* Whether node matches pattern under matcher ("glob" or "pcre"); -1 when they are refused. */
static int pattern_match(const char *node, const char *pattern, const char *matcher)
{
    if (strlen(pattern) > MAX_PATTERN)
        return -1;
    if (strcmp(matcher, "glob") == 0)
        return fnmatch(pattern, node, 0) == 0;
    if (strcmp(matcher, "pcre") != 0)
        return -1;
    /* Bounded repetitions ({m,n}) can make an automaton of any size from a short pattern:
     * refused, as are back-references (not POSIX ERE). */
    if (strchr(pattern, '{') || strchr(pattern, '\\'))
        return -1;
    char anchored[MAX_PATTERN + 8];
    snprintf(anchored, sizeof anchored, "^(%s)", pattern); /* Python's re.match */
    regex_t re;
    if (regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB))
        return -1;
    int m = regexec(&re, node, 0, NULL, 0) == 0;
    regfree(&re);
    return m;
}

/* Whether the body's addressing (destination, pattern and matcher) names node; -1 when it is
 * malformed (why in err). */
static int addressed(json_t *body, const char *node, char *err, size_t errlen)
{
    json_t *dest = json_object_get(body, "destination");
    if (dest && !json_is_null(dest)) {
        if (!json_is_array(dest))
            return ocp_errf(-1, err, errlen, "destination: not a list");
        int hit = 0;
        size_t i;
        json_t *d;
        json_array_foreach(dest, i, d)
        {
            if (!json_is_string(d))
                return ocp_errf(-1, err, errlen, "destination: not a list of names");
            if (strcmp(json_string_value(d), node) == 0)
                hit = 1;
        }
        /* An empty list names nobody in kombu ("if destination:" is false for []: everyone). */
        return json_array_size(dest) == 0 ? 1 : hit;
    }
    const char *pattern, *matcher;
    if (short_string(body, "pattern", &pattern) || short_string(body, "matcher", &matcher))
        return ocp_errf(-1, err, errlen, "pattern or matcher: not a short string");
    if (!pattern || !matcher)
        return 1;
    int m = pattern_match(node, pattern, matcher);
    if (m < 0)
        return ocp_errf(-1, err, errlen,
                        "pattern: matcher must be glob or pcre, and a pcre pattern short, "
                        "without {m,n} or backslashes");
    return m;
}

/* The body of an envelope as a JSON object (new reference), or NULL with err. */
static json_t *open_body(json_t *env, char *err, size_t errlen)
{
    json_t *props = json_object_get(env, "properties");
    json_t *b = json_object_get(env, "body");
    const char *ct = json_string_value(json_object_get(env, "content-type"));
    if (ct && strcmp(ct, "application/json") != 0) {
        ocp_errf(-1, err, errlen, "content-type %.60s: only application/json is read", ct);
        return NULL;
    }
    if (json_is_object(b)) /* a body left as JSON (body_encoding absent) */
        return json_incref(b);
    if (!json_is_string(b)) {
        ocp_errf(-1, err, errlen, "body: not a string");
        return NULL;
    }
    const char *enc = json_string_value(json_object_get(props, "body_encoding"));
    const char *text = json_string_value(b);
    size_t n = json_string_length(b);
    unsigned char *dec = NULL;
    if (enc && strcmp(enc, "base64") == 0) {
        dec = ocp_b64_decode(text, n, &n);
        if (!dec) {
            ocp_errf(-1, err, errlen, "body: bad base64");
            return NULL;
        }
        text = (const char *)dec;
    } else if (enc) {
        ocp_errf(-1, err, errlen, "body_encoding %.40s: not base64", enc);
        return NULL;
    }
    json_error_t je;
    json_t *o = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
    free(dec);
    if (!json_is_object(o)) {
        json_decref(o);
        ocp_errf(-1, err, errlen, "body: not a JSON object");
        return NULL;
    }
    return o;
}

/* Fills req from a body addressed to us; -1 with err when a field is malformed. */
static int read_request(json_t *body, ocp_pidbox_req *req, char *err, size_t errlen)
{
    const char *method, *ticket, *ex = NULL, *key = NULL;
    if (short_string(body, "method", &method) || !method)
        return ocp_errf(-1, err, errlen, "method: missing, or not a short string");
    if (short_string(body, "ticket", &ticket))
        return ocp_errf(-1, err, errlen, "ticket: not a short string");
    json_t *args = json_object_get(body, "arguments");
    if (args && !json_is_null(args) && !json_is_object(args))
        return ocp_errf(-1, err, errlen, "arguments: not an object");
    json_t *rt = json_object_get(body, "reply_to");
    if (ticket) {
        if (!json_is_object(rt) || short_string(rt, "exchange", &ex) ||
            short_string(rt, "routing_key", &key) || !ex || !key)
            return ocp_errf(-1, err, errlen, "reply_to: not {exchange, routing_key}");
    }
    req->method = ocp_xstrdup(method);
    req->arguments = json_is_object(args) ? json_incref(args) : json_object();
    if (ticket) {
        req->ticket = ocp_xstrdup(ticket);
        req->reply_exchange = ocp_xstrdup(ex);
        req->reply_key = ocp_xstrdup(key);
    }
    return 0;
}

int ocp_pidbox_parse(const char *raw, size_t len, const char *node, double now, ocp_pidbox_req *req,
                     int *for_us, char *err, size_t errlen)
{
    memset(req, 0, sizeof *req);
    *for_us = 0;
    if (len > OCP_PIDBOX_MAX_MESSAGE)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "message of %zu bytes: more than %d", len,
                        OCP_PIDBOX_MAX_MESSAGE);
    json_error_t je;
    json_t *env = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(env)) {
        json_decref(env);
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "not a JSON object");
    }
    int rc = 0;
    json_t *body = open_body(env, err, errlen);
    if (!body) {
        rc = OCP_E_MESSAGE;
        goto out;
    }
    json_t *h = json_object_get(env, "headers");
    json_t *ex = json_object_get(h, "expires");
    double expires = json_is_number(ex) ? json_number_value(ex) : 0;
    json_t *clk = json_object_get(h, "clock");
    int a = addressed(body, node, err, errlen);
    if (a < 0) {
        rc = OCP_E_MESSAGE;
    } else if (a > 0 && !(expires > 0 && expires < now)) {
        if (read_request(body, req, err, errlen)) {
            ocp_pidbox_req_fini(req);
            rc = OCP_E_MESSAGE;
        } else {
            req->expires = expires;
            req->clock = json_is_integer(clk) && json_integer_value(clk) > 0
                             ? (long long)json_integer_value(clk)
                             : 0;
            *for_us = 1;
        }
    }
    json_decref(body);
out:
    json_decref(env);
    return rc;
}

char *ocp_pidbox_envelope(json_t *body, json_t *headers, const char *exchange,
                          const char *routing_key, int delivery_mode)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    char *b64 = ocp_b64_encode(text, strlen(text));
    char tag[37];
    ocp_uuid4(tag);
    json_t *env =
        json_pack("{s:s, s:s, s:s, s:o, s:{s:i, s:{s:s, s:s}, s:i, s:s, s:s}}", "body", b64,
                  "content-encoding", "utf-8", "content-type", "application/json", "headers",
                  headers ? json_incref(headers) : json_object(), "properties", "delivery_mode",
                  delivery_mode, "delivery_info", "exchange", exchange, "routing_key", routing_key,
                  "priority", 0, "body_encoding", "base64", "delivery_tag", tag);
    char *out = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    free(b64);
    free(text);
    return out;
}

/* ---- the connections -------------------------------------------------------------------- */

typedef struct pconn {
    redisContext *c;
    int connecting; /* connect() in progress: the first POLLOUT tells how it ended */
    int ready;      /* subscribed (the subscriber), or connected (the publisher) */
    double next_try, backoff;
} pconn;

struct ocp_pidbox {
    char host[256], *user, *password;
    char addr[256]; /* host's address, resolved at the open: what conn_open uses */
    int port, db;
    char node[256];
    char channel[300]; /* "/<db>.celery.pidbox" */
    pconn sub, pub;
    long long clock;
    long dropped;
    redisReply *inbox[MAX_INBOX]; /* messages read, in order, from in_head */
    int in_head, in_n;
    bool said_down;
};

static const char reply_lua[] =
    "local n = 0\n"
    "for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local a = string.find(m, ARGV[3], 1, true)\n"
    "  if a and string.sub(m, 1, a - 1) == ARGV[1] then\n"
    "    local rest = string.sub(m, a + #ARGV[3])\n"
    "    local b = string.find(rest, ARGV[3], 1, true)\n"
    "    if b then\n"
    "      redis.call('LPUSH', string.sub(rest, b + #ARGV[3]), ARGV[2])\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return n\n";

static void conn_drop(ocp_pidbox *p, pconn *k, const char *why)
{
    if (k->c) {
        if (!p->said_down)
            OCP_LOG(OCP_LOG_WARN, "remote control: redis %s:%d: %s; reconnecting", p->host, p->port,
                    why);
        p->said_down = true;
        redisFree(k->c);
    }
    k->c = NULL;
    k->connecting = k->ready = 0;
    k->backoff = k->backoff > 0 ? fmin(10.0, k->backoff * 2) : 0.5;
    k->next_try = ocp_now() + k->backoff;
}

/* Appends a command to k's buffer (sent when the descriptor is writable); 0, or -1 when k
 * cannot take it now (down, or too much unsent). */
static int conn_append(pconn *k, int argc, const char **argv, const size_t *lens)
{
    if (!k->c || sdslen(k->c->obuf) > MAX_OBUF)
        return -1;
    return redisAppendCommandArgv(k->c, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

static void conn_open(ocp_pidbox *p, pconn *k, int subscriber)
{
    if (k->c || ocp_now() < k->next_try)
        return;
    redisContext *c = redisConnectNonBlock(p->addr, p->port);
    if (!c || c->err) {
        char why[300];
        snprintf(why, sizeof why, "cannot connect: %s", c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        k->c = NULL;
        conn_drop(p, k, why);
        return;
    }
    k->c = c;
    k->connecting = 1;
    if (p->password) {
        const char *a[3] = {"AUTH", p->user ? p->user : p->password, p->password};
        conn_append(k, p->user ? 3 : 2, a, NULL);
    }
    if (subscriber) {
        const char *a[2] = {"PSUBSCRIBE", p->channel};
        conn_append(k, 2, a, NULL);
    } else if (p->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", p->db);
        const char *a[2] = {"SELECT", db};
        conn_append(k, 2, a, NULL);
    }
}

/* Resolves host once into addr (IPv4 first, as hiredis prefers it). When that fails, addr
 * keeps the name: reconnects then resolve it each time, as hiredis would, and it is said. */
static void resolve(const char *host, char *addr, size_t len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    snprintf(addr, len, "%s", host);
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc) {
        OCP_LOG(OCP_LOG_WARN,
                "remote control: redis host %s: %s; each reconnect looks it up again "
                "(and may wait for DNS)",
                host, gai_strerror(rc));
        return;
    }
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    const void *in = pick->ai_family == AF_INET
                         ? (const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr
                         : (const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
    char buf[INET6_ADDRSTRLEN];
    if ((pick->ai_family == AF_INET || pick->ai_family == AF_INET6) &&
        inet_ntop(pick->ai_family, in, buf, sizeof buf))
        snprintf(addr, len, "%s", buf);
    freeaddrinfo(res);
}

int ocp_pidbox_open(const char *url, const char *node, ocp_pidbox **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strncmp(url, "redis://", 8) != 0)
        return ocp_errf(OCP_E_CONFIG, err, errlen, "remote control needs a redis:// broker");
    rs tmp;
    memset(&tmp, 0, sizeof tmp);
    int rc = ocp__rd_parse_url(&tmp, url + 8, err, errlen);
    if (rc) {
        free(tmp.user);
        free(tmp.password);
        return rc;
    }
    ocp_pidbox *p = ocp_xcalloc(1, sizeof *p);
    snprintf(p->host, sizeof p->host, "%s", tmp.host);
    resolve(p->host, p->addr, sizeof p->addr);
    p->port = tmp.port;
    p->db = tmp.db;
    p->user = tmp.user;
    p->password = tmp.password;
    snprintf(p->node, sizeof p->node, "%s", node);
    snprintf(p->channel, sizeof p->channel, "/%d.celery.pidbox", p->db);
    conn_open(p, &p->sub, 1);
    conn_open(p, &p->pub, 0);
    *out = p;
    return 0;
}

void ocp_pidbox_close(ocp_pidbox *p, double linger_s)
{
    if (!p)
        return;
    double until = ocp_now() + linger_s;
    while (p->pub.c && !p->pub.connecting && sdslen(p->pub.c->obuf) > 0 && ocp_now() < until) {
        struct pollfd pf = {p->pub.c->fd, POLLOUT, 0};
        if (poll(&pf, 1, (int)fmax(1, (until - ocp_now()) * 1000)) <= 0)
            break;
        ocp_pidbox_io(p, pf.fd, pf.revents);
    }
    for (int i = 0; i < p->in_n; i++)
        freeReplyObject(p->inbox[(p->in_head + i) % MAX_INBOX]);
    if (p->sub.c)
        redisFree(p->sub.c);
    if (p->pub.c)
        redisFree(p->pub.c);
    free(p->user);
    free(p->password);
    free(p);
}

int ocp_pidbox_fd(const ocp_pidbox *p, int i, short *events)
{
    const pconn *k = i == 0 ? &p->sub : &p->pub;
    *events = 0;
    if (!k->c)
        return -1;
    *events = POLLIN;
    if (k->connecting || sdslen(k->c->obuf) > 0)
        *events |= POLLOUT;
    return k->c->fd;
}

/* A reply on the subscriber: a message is kept for ocp_pidbox_next (taken: 1), the
 * subscription's confirmation said. */
static int sub_reply(ocp_pidbox *p, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        OCP_LOG(OCP_LOG_ERROR, "remote control: redis: %s", r->str);
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "psubscribe") == 0) {
        p->sub.ready = 1;
        if (p->said_down)
            OCP_LOG(OCP_LOG_WARN, "remote control: redis %s:%d: connected again", p->host, p->port);
        p->said_down = false;
        OCP_LOG(OCP_LOG_INFO, "remote control: %s listens on %s", p->node, p->channel);
        return 0;
    }
    if (strcmp(kind, "pmessage") != 0 || r->elements < 4 ||
        r->element[3]->type != REDIS_REPLY_STRING)
        return 0;
    if (p->in_n == MAX_INBOX) {
        p->dropped++;
        OCP_LOG(OCP_LOG_WARN, "remote control: %d requests wait: one more dropped", MAX_INBOX);
        return 0;
    }
    p->inbox[(p->in_head + p->in_n++) % MAX_INBOX] = r;
    return 1;
}

static void conn_io(ocp_pidbox *p, pconn *k, short revents, int subscriber)
{
    if (k->connecting && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(k->c->fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        if (e) {
            char why[300];
            snprintf(why, sizeof why, "cannot connect: %s", strerror(e));
            conn_drop(p, k, why);
            return;
        }
        k->connecting = 0;
        if (!subscriber)
            k->ready = 1;
    }
    if (revents & POLLOUT) {
        int done = 0;
        if (redisBufferWrite(k->c, &done) != REDIS_OK) {
            conn_drop(p, k, k->c->errstr[0] ? k->c->errstr : "write failed");
            return;
        }
    }
    if (revents & (POLLIN | POLLERR | POLLHUP)) {
        if (redisBufferRead(k->c) != REDIS_OK) {
            conn_drop(p, k, k->c->errstr[0] ? k->c->errstr : "connection lost");
            return;
        }
        void *v;
        while (k->c && redisGetReply(k->c, &v) == REDIS_OK && v) {
            redisReply *r = v;
            if (subscriber) {
                if (!sub_reply(p, r))
                    freeReplyObject(r);
            } else {
                if (r->type == REDIS_REPLY_ERROR)
                    OCP_LOG(OCP_LOG_ERROR, "remote control: redis: %s", r->str);
                freeReplyObject(r);
            }
        }
        if (k->c && k->c->err)
            conn_drop(p, k, k->c->errstr);
    }
}

void ocp_pidbox_io(ocp_pidbox *p, int fd, short revents)
{
    if (p->sub.c && p->sub.c->fd == fd)
        conn_io(p, &p->sub, revents, 1);
    else if (p->pub.c && p->pub.c->fd == fd)
        conn_io(p, &p->pub, revents, 0);
}

void ocp_pidbox_tick(ocp_pidbox *p)
{
    conn_open(p, &p->sub, 1);
    conn_open(p, &p->pub, 0);
}

void ocp_pidbox_broker(const ocp_pidbox *p, const char **host, int *port, int *db)
{
    *host = p->host;
    *port = p->port;
    *db = p->db;
}

bool ocp_pidbox_up(const ocp_pidbox *p)
{
    return p->sub.ready && p->pub.ready;
}

long ocp_pidbox_dropped(const ocp_pidbox *p)
{
    return p->dropped;
}

long long ocp_pidbox_clock(ocp_pidbox *p)
{
    return ++p->clock;
}

int ocp_pidbox_next(ocp_pidbox *p, ocp_pidbox_req *req)
{
    while (p->in_n) {
        redisReply *r = p->inbox[p->in_head];
        p->in_head = (p->in_head + 1) % MAX_INBOX;
        p->in_n--;
        redisReply *data = r->element[3];
        char err[300];
        int for_us = 0;
        int rc = ocp_pidbox_parse(data->str, data->len, p->node, ocp_wall_now(), req, &for_us, err,
                                  sizeof err);
        freeReplyObject(r);
        if (rc) {
            OCP_LOG(OCP_LOG_WARN, "remote control: a malformed message ignored: %s", err);
            continue;
        }
        if (!for_us)
            continue;
        if (req->clock > p->clock) /* Lamport: the later of the two, then one more */
            p->clock = req->clock;
        p->clock++;
        return 1;
    }
    return 0;
}

/* Sends the command on the publisher, or counts it dropped. */
static void send_or_drop(ocp_pidbox *p, int argc, const char **argv)
{
    if (!p->pub.c || conn_append(&p->pub, argc, argv, NULL)) {
        p->dropped++;
        return;
    }
    if (!p->pub.connecting) { /* write now what the socket takes; the rest at POLLOUT */
        int done = 0;
        if (redisBufferWrite(p->pub.c, &done) != REDIS_OK)
            conn_drop(p, &p->pub, p->pub.c->errstr[0] ? p->pub.c->errstr : "write failed");
    }
}

void ocp_pidbox_reply(ocp_pidbox *p, const ocp_pidbox_req *req, json_t *value)
{
    if (!req->ticket) {
        json_decref(value);
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, p->node, value ? value : json_null());
    json_t *h =
        json_pack("{s:s, s:I}", "ticket", req->ticket, "clock", (json_int_t)ocp_pidbox_clock(p));
    char *msg = ocp_pidbox_envelope(body, h, req->reply_exchange, req->reply_key, 1);
    char key[MAX_FIELD + 40];
    snprintf(key, sizeof key, "_kombu.binding.%s", req->reply_exchange);
    const char *a[] = {"EVAL", reply_lua, "1", key, req->reply_key, msg, OCP_CELERY_PRI_SEP};
    send_or_drop(p, 7, a);
    free(msg);
    json_decref(h);
    json_decref(body);
}

void ocp__pidbox_publish(ocp_pidbox *p, const char *exchange, const char *routing_key,
                         const char *text)
{
    char chan[400];
    snprintf(chan, sizeof chan, "/%d.%s/%s", p->db, exchange, routing_key);
    const char *a[] = {"PUBLISH", chan, text};
    send_or_drop(p, 3, a);
}

const char *ocp__pidbox_node(const ocp_pidbox *p)
{
    return p->node;
}
