/*
 * broker_redis.c: the Redis backend (broker.h), speaking Celery's protocol
 * v2 with kombu's key layout, so that a Python app's send_task() reaches
 * ocrpool's workers and AsyncResult reads what they store.
 *
 * Keys (kombu's Redis transport and Celery's Redis result backend):
 *   <queue>, <queue>\x06\x16{3,6,9}  lists of messages; producers LPUSH,
 *                                    consumers pop from the right, step 0
 *                                    first
 *   unacked (hash tag -> [message, exchange, routing_key]) and
 *   unacked_index (zset tag -> time)  delivered, not yet acknowledged
 *   unacked_mutex                    the lock of a visibility restore
 *   celery-task-meta-<id>            results (SETEX, then PUBLISH on the
 *                                    channel of the same name)
 * and ocrpool's own, beside them:
 *   ocrpool.unacked_owner (hash tag -> "host:pid:start")  who holds a tag,
 *                                    so a node restarted on the same host
 *                                    restores its dead predecessor's pages
 *                                    at once instead of after the timeout
 *   ocrpool.deliveries.<id>          deliveries of a task (poison pages)
 *   ocrpool.group.<group>            a group's task ids (status, HTTP)
 *   ocrpool.deadletter               malformed messages, with the reason
 *
 * A lease pops and records the message in unacked in one Lua script, so a
 * node that dies at any point loses nothing: the message is in a queue or
 * in unacked, from where the visibility restore (ours, or any Python
 * worker's, under the same mutex and rules) puts it back. While a page
 * runs, the master's renewals keep its unacked_index score fresh.
 *
 * The connection: hiredis, synchronous, with timeouts. When Redis goes
 * away, calls fail fast while the reconnection backs off (0.1 s doubling to
 * 5 s); results, failures and restores that could not be written wait in an
 * outbox, in order, and are written first after reconnecting. Debian's
 * hiredis 0.14 has no TLS: rediss:// is refused with that reason.
 */
#include "broker/broker.h"
#include "broker/celery.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define K_UNACKED "unacked"
#define K_INDEX "unacked_index"
#define K_MUTEX "unacked_mutex"
#define K_OWNERS "ocrpool.unacked_owner"
#define K_DEAD "ocrpool.deadletter"
#define META_PREFIX "celery-task-meta-"
#define MAX_QUEUES 16

/* A message this node took from a queue. */
typedef struct rmsg {
    char *id, *tag, *raw, *queue, *group;
    int priority;
    double eta;  /* > 0: waits in the node until then, as wait */
    ocp_task wait;
    bool early_acked;
    struct rmsg *next;
} rmsg;

/* A write that waits for the connection to come back. */
typedef struct pending {
    int argc;
    char **argv;
    size_t *lens;
    struct pending *next;
} pending;

typedef struct rs {
    char host[256], *user, *password;
    int port, db;
    redisContext *c;
    double next_try, backoff;
    bool was_up;
    char err[700];
    char *queues[MAX_QUEUES];
    int nq;
    char *task_name, *lang;
    double vis, expires, last_restore, last_renew;
    bool track_started;
    size_t max_msg, max_inline;
    rmsg *held;
    pending *outbox, **tail;
    int n_outbox;
} rs;

static void set_err(rs *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(rs *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
}

static void drop_conn(rs *s, const char *reason)
{
    char why[300];
    snprintf(why, sizeof why, "%s", reason); /* reason may live in s->c, freed below */
    if (s->c) {
        redisFree(s->c);
        s->c = NULL;
    }
    s->backoff = s->backoff > 0 ? fmin(5.0, s->backoff * 2) : 0.1;
    s->next_try = ocp_now() + s->backoff;
    set_err(s, "redis %s:%d: %s", s->host, s->port, why);
    if (s->was_up)
        OCP_LOG(OCP_LOG_WARN, "%s; reconnecting", s->err);
    s->was_up = false;
}

static redisReply *raw_cmd(rs *s, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(s->c, argc, argv, lens);
    if (!r) {
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
        return NULL;
    }
    return r;
}

static int flush_outbox(rs *s);

/* Errors that mean "not now" (a Redis loading its data after a restart, a replica
 * without its master, a busy script): the write is kept and tried again. */
static bool transient(const redisReply *r)
{
    static const char *const now_now[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
                                          "READONLY"};
    for (size_t i = 0; i < sizeof now_now / sizeof now_now[0]; i++)
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, now_now[i], strlen(now_now[i])) == 0)
            return true;
    return false;
}
static void rd_close(void *st);
static int renew_held(rs *s);

/* Connects when not connected (at most as often as the backoff allows). */
static int conn(rs *s)
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

/* A command on a live connection; NULL (with the reason in s->err) when there is none. */
static redisReply *cmdv(rs *s, int argc, const char **argv, const size_t *lens)
{
    if (conn(s))
        return NULL;
    redisReply *r = raw_cmd(s, argc, argv, lens);
    if (r && r->type == REDIS_REPLY_ERROR) {
        set_err(s, "redis: %s", r->str);
        OCP_LOG(OCP_LOG_ERROR, "redis %s: %s", argv[0], r->str);
    }
    return r;
}

static redisReply *cmd(rs *s, const char *fmt, ...)
{
    if (conn(s))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(s->c, fmt, ap);
    va_end(ap);
    if (!r)
        drop_conn(s, s->c->errstr[0] ? s->c->errstr : "connection lost");
    else if (r->type == REDIS_REPLY_ERROR)
        set_err(s, "redis: %s", r->str);
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
        freeReplyObject(r);
        s->outbox = p->next;
        if (!s->outbox)
            s->tail = &s->outbox;
        s->n_outbox--;
        pending_free(p);
    }
    return 0;
}

/*
 * Runs a write that must happen: now when Redis is there (and nothing waits
 * before it), else later, in order, after reconnecting. 0 either way, or
 * OCP_E_BROKER when Redis answered with an error.
 */
static int must_write(rs *s, int argc, const char **argv, const size_t *lens)
{
    if (!s->outbox && conn(s) == 0) {
        redisReply *r = raw_cmd(s, argc, argv, lens);
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
                set_err(s, "redis: %s", r->str);
            freeReplyObject(r);
            return rc;
        }
    }
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
    *s->tail = p;
    s->tail = &p->next;
    s->n_outbox++;
    OCP_LOG(OCP_LOG_WARN, "%s: a write waits for the connection (%d waiting)", s->err,
            s->n_outbox);
    return 0;
}

/* ---- scripts ------------------------------------------------------------------------- */

/*
 * Lease: pops up to ARGV[1] messages, step 0 first, and records each in
 * unacked/unacked_index/owners in the same atomic step. Text that is not a
 * JSON object, or is over the size limit, goes to the dead-letter list
 * instead. Returns {{tag1, msg1, queue1, tag2, ...}, {reason1, queue1, reason2, ...}}:
 * the messages taken, and why any were dead-lettered.
 * KEYS: unacked, unacked_index, owners, deadletter, list 1..n
 * ARGV: max, now, owner, max bytes, queue name of list 1..n
 */
static const char lease_lua[] =
    "local out = {}\n"
    "local dead = {}\n"
    "local max = tonumber(ARGV[1])\n"
    "local cap = tonumber(ARGV[4])\n"
    "local n = 0\n"
    "for i = 5, #KEYS do\n"
    "  while n < max do\n"
    "    local m = redis.call('RPOP', KEYS[i])\n"
    "    if not m then break end\n"
    "    local q = ARGV[i]\n"
    "    local why = nil\n"
    "    local d = nil\n"
    "    if #m > cap then\n"
    "      why = 'message of ' .. #m .. ' bytes, over the limit of ' .. cap\n"
    "    else\n"
    "      local ok, v = pcall(cjson.decode, m)\n"
    "      if not ok or type(v) ~= 'table' then why = 'not a JSON object' else d = v end\n"
    "    end\n"
    "    if why then\n"
    "      redis.call('LPUSH', KEYS[4], cjson.encode({reason = why, queue = q, time = "
    "tonumber(ARGV[2]), message = m}))\n"
    "      dead[#dead + 1] = why\n"
    "      dead[#dead + 1] = q\n"
    "    else\n"
    "      local tag = nil\n"
    "      if type(d.properties) == 'table' then tag = d.properties.delivery_tag end\n"
    "      if type(tag) ~= 'string' or tag == '' or redis.call('HEXISTS', KEYS[1], tag) == 1 then\n"
    "        tag = 'ocrpool-' .. redis.call('INCR', 'ocrpool.tagseq')\n"
    "      end\n"
    "      redis.call('HSET', KEYS[1], tag, '[' .. m .. ', \"\", ' .. cjson.encode(q) .. ']')\n"
    "      redis.call('ZADD', KEYS[2], ARGV[2], tag)\n"
    "      redis.call('HSET', KEYS[3], tag, ARGV[3])\n"
    "      out[#out + 1] = tag\n"
    "      out[#out + 1] = m\n"
    "      out[#out + 1] = q\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {out, dead}\n";

/*
 * Every script that acknowledges or restores a tag takes the same first three keys,
 * unacked, unacked_index and the owners hash, and forgets the tag (ARGV[1]) in all three
 * with this snippet, so no path can leave one of them behind.
 */
#define LUA_FORGET                                                                                 \
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"                                                      \
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"                                                      \
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"

/* Forget: acknowledges a tag without a result (acks-late off, an unreadable record).
 * KEYS: unacked, unacked_index, owners.  ARGV: tag */
static const char forget_lua[] = LUA_FORGET "return 1\n";

/*
 * Finish: stores a task meta unless a final one (SUCCESS, FAILURE, REVOKED)
 * is there already (results are stored once), publishes it, and
 * acknowledges the tag. Returns 1 when stored.
 * KEYS: unacked, unacked_index, owners, meta, deliveries
 * ARGV: tag ("" = none), meta json, expires (s, <= 0 = never)
 */
static const char finish_lua[] =
    "local stored = 0\n"
    "local old = redis.call('GET', KEYS[4])\n"
    "local final = false\n"
    "if old then\n"
    "  local ok, v = pcall(cjson.decode, old)\n"
    "  if ok and type(v) == 'table' and (v.status == 'SUCCESS' or v.status == 'FAILURE' or "
    "v.status == 'REVOKED') then final = true end\n"
    "end\n"
    "if not final then\n"
    "  local ex = tonumber(ARGV[3])\n"
    "  if ex > 0 then redis.call('SETEX', KEYS[4], ex, ARGV[2]) else redis.call('SET', KEYS[4], "
    "ARGV[2]) end\n"
    "  redis.call('PUBLISH', KEYS[4], ARGV[2])\n"
    "  stored = 1\n"
    "end\n"
    "if ARGV[1] ~= '' then\n" LUA_FORGET "end\n"
    "redis.call('DEL', KEYS[5])\n"
    "return stored\n";

/*
 * Restore: puts a delivered message back at the head of its list (kombu's
 * restore_by_tag), if the tag is still unacknowledged and, for a
 * visibility restore, still stale (its score at or below ARGV[3]).
 * KEYS: unacked, unacked_index, owners, target list
 * ARGV: tag, message (redelivered set), ceiling ("" = any)
 */
static const char restore_lua[] =
    "if ARGV[3] ~= '' then\n"
    "  local sc = redis.call('ZSCORE', KEYS[2], ARGV[1])\n"
    "  if sc and tonumber(sc) > tonumber(ARGV[3]) then return 0 end\n"
    "end\n"
    "local p = redis.call('HGET', KEYS[1], ARGV[1])\n" LUA_FORGET
    "if not p then return 0 end\n"
    "redis.call('RPUSH', KEYS[4], ARGV[2])\n"
    "return 1\n";

/*
 * Dead letter: records a delivered message with the reason and drops it from unacked.
 * KEYS: unacked, unacked_index, owners, deadletter.  ARGV: tag, record json
 */
static const char dead_lua[] = "redis.call('LPUSH', KEYS[4], ARGV[2])\n" LUA_FORGET "return 1\n";

/*
 * Deliver: counts a delivery of a task (poison pages are buried after max-deliveries) and
 * files it under its group (status and the HTTP API list groups), in one round trip.
 * KEYS: deliveries, group set ("" = none).  ARGV: id, deliveries ttl, group ttl
 * Returns the count.
 */
static const char deliver_lua[] = "local n = redis.call('INCR', KEYS[1])\n"
                                  "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
                                  "if KEYS[2] ~= '' then\n"
                                  "  redis.call('SADD', KEYS[2], ARGV[1])\n"
                                  "  redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
                                  "end\n"
                                  "return n\n";

/* Releases the restore mutex if it is still ours (redis-py's Lock.release). */
static const char unlock_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                 "  return redis.call('DEL', KEYS[1])\n"
                                 "end\n"
                                 "return 0\n";

/* ---- held messages ------------------------------------------------------------------- */

static void rmsg_free(rmsg *m)
{
    free(m->id);
    free(m->tag);
    free(m->raw);
    free(m->queue);
    free(m->group);
    ocp_task_fini(&m->wait);
    free(m);
}

static rmsg *find_held(rs *s, const char *id)
{
    for (rmsg *m = s->held; m; m = m->next)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

static void unlink_held(rs *s, rmsg *m)
{
    for (rmsg **pp = &s->held; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            return;
        }
    }
}

/* ---- writes -------------------------------------------------------------------------- */

/* Stores meta for id (SETEX + PUBLISH, once) and acknowledges tag (may be NULL). */
static int finish(rs *s, const char *id, const char *meta, const char *tag)
{
    char metakey[300], delkey[300], ex[32];
    snprintf(metakey, sizeof metakey, META_PREFIX "%s", id);
    snprintf(delkey, sizeof delkey, "ocrpool.deliveries.%s", id);
    snprintf(ex, sizeof ex, "%.0f", s->expires);
    const char *a[] = {"EVAL",  finish_lua, "5",           K_UNACKED, K_INDEX, K_OWNERS,
                       metakey, delkey,     tag ? tag : "", meta,      ex};
    return must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
}

/* Acknowledges tag without a result. */
static int forget(rs *s, const char *tag)
{
    const char *a[] = {"EVAL", forget_lua, "3", K_UNACKED, K_INDEX, K_OWNERS, tag};
    return must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
}

/* The message text with headers.redelivered and delivery_info.redelivered set, as kombu's
 * restore writes it. New string. */
static char *redelivered(const char *raw)
{
    json_t *m = json_loads(raw, 0, NULL);
    if (!json_is_object(m)) {
        json_decref(m);
        return ocp_xstrdup(raw);
    }
    json_t *h = json_object_get(m, "headers");
    if (json_is_object(h))
        json_object_set_new(h, "redelivered", json_true());
    json_t *di = json_object_get(json_object_get(m, "properties"), "delivery_info");
    if (json_is_object(di))
        json_object_set_new(di, "redelivered", json_true());
    char *out = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return out;
}

/* Puts a delivered message back onto the head of its list. */
static int restore(rs *s, const char *tag, const char *raw, const char *queue, int priority,
                   const char *ceiling, bool must)
{
    char list[600];
    ocp_celery_queue_key(queue, priority, list, sizeof list);
    char *msg = redelivered(raw);
    const char *a[] = {"EVAL", restore_lua, "4", K_UNACKED, K_INDEX, K_OWNERS,
                       list,   tag,         msg, ceiling};
    int rc = 0;
    if (must) {
        rc = must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    } else {
        redisReply *r = cmdv(s, (int)(sizeof a / sizeof a[0]), a, NULL);
        rc = !r || r->type == REDIS_REPLY_ERROR ? OCP_E_BROKER : (int)r->integer;
        if (r)
            freeReplyObject(r);
    }
    free(msg);
    return rc;
}

/* Records a malformed message in the dead-letter list with the reason. */
static void dead_letter(rs *s, const char *tag, const char *raw, const char *queue,
                        const char *reason)
{
    json_t *rec = json_pack("{s:s, s:s, s:f, s:s}", "reason", reason, "queue", queue, "time",
                            ocp_wall_now(), "message", raw);
    char *txt = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    const char *a[] = {"EVAL", dead_lua, "4", K_UNACKED, K_INDEX, K_OWNERS, K_DEAD, tag, txt};
    must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    free(txt);
    OCP_LOG(OCP_LOG_WARN, "message from queue %s dead-lettered (%s): %s", queue, K_DEAD, reason);
}

static char *fail_meta(const char *id, const char *group, const char *type, const char *module,
                       const char *message)
{
    return ocp_celery_meta(id, "FAILURE", ocp_celery_exc(type, module, message), NULL, group);
}

/* ---- open, close --------------------------------------------------------------------- */

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

static int parse_url(rs *s, const char *t, char *err, size_t errlen)
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

static int rd_open(const char *target, const ocp_broker_opts *o, void **out, char *err,
                   size_t errlen)
{
    rs *s = ocp_xcalloc(1, sizeof *s);
    s->tail = &s->outbox;
    int rc = parse_url(s, target, err, errlen);
    if (rc)
        goto bad;
    char *qs = ocp_xstrdup(o->queues && *o->queues ? o->queues : "celery"), *save = NULL;
    for (char *q = strtok_r(qs, ", ", &save); q; q = strtok_r(NULL, ", ", &save)) {
        if (s->nq == MAX_QUEUES) {
            free(qs);
            rc = ocp_errf(OCP_E_CONFIG, err, errlen, "queues: at most %d", MAX_QUEUES);
            goto bad;
        }
        s->queues[s->nq++] = ocp_xstrdup(q);
    }
    free(qs);
    if (!s->nq)
        s->queues[s->nq++] = ocp_xstrdup("celery");
    s->task_name = ocp_xstrdup(o->task_name && *o->task_name ? o->task_name : "ocrpool.ocr_page");
    s->lang = ocp_xstrdup(o->lang && *o->lang ? o->lang : "eng");
    s->vis = o->visibility_timeout_s > 0 ? o->visibility_timeout_s : 3600;
    s->expires = o->result_expires_s > 0 ? o->result_expires_s : o->result_expires_s < 0 ? 0 : 86400;
    s->track_started = o->track_started;
    s->max_msg = o->max_message_bytes ? o->max_message_bytes : (size_t)512 << 20;
    s->max_inline = o->max_inline_bytes ? o->max_inline_bytes : (size_t)32 << 20;
    /* The first connection must work: a wrong URL is said at once. */
    if (conn(s)) {
        rc = ocp_errf(OCP_E_BROKER, err, errlen, "%s", s->err);
        goto bad;
    }
    *out = s;
    return 0;
bad:
    rd_close(s);
    return rc;
}

static void rd_close(void *st)
{
    rs *s = st;
    /* Messages still waiting for their eta go back to their queue. */
    for (rmsg *m = s->held, *next; m; m = next) {
        next = m->next;
        if (m->eta > 0 && !m->early_acked)
            restore(s, m->tag, m->raw, m->queue, m->priority, "", true);
        rmsg_free(m);
    }
    if (s->outbox) {
        s->next_try = 0;
        if (conn(s) || s->outbox)
            OCP_LOG(OCP_LOG_ERROR,
                    "redis %s:%d: %d writes (results or restores) could not be made; their "
                    "pages go back to their queue after the visibility timeout",
                    s->host, s->port, s->n_outbox);
    }
    for (pending *p = s->outbox, *next; p; p = next) {
        next = p->next;
        pending_free(p);
    }
    if (s->c)
        redisFree(s->c);
    for (int i = 0; i < s->nq; i++)
        free(s->queues[i]);
    free(s->task_name);
    free(s->lang);
    free(s->user);
    free(s->password);
    free(s);
}

static const char *rd_errmsg(void *st)
{
    return ((rs *)st)->err;
}

/* How long a group's list of ids lives: as long as its results. */
static double group_ttl(const rs *s)
{
    return s->expires > 0 ? s->expires : 86400.0 * 365;
}

/* ---- producer ------------------------------------------------------------------------ */

static int rd_submit(void *st, const ocp_task_spec *spec, const char *id, int *inserted)
{
    rs *s = st;
    json_t *args = NULL, *kwargs = NULL;
    *inserted = 0;
    if (ocp_celery_args_from_payload(spec->payload, &args, &kwargs)) {
        set_err(s, "submit: the page payload has no source");
        return OCP_E_MESSAGE;
    }
    ocp_celery_new n = {.id = id,
                        .task = s->task_name,
                        .queue = s->queues[0],
                        .group = spec->group,
                        .priority = spec->priority,
                        .args = args,
                        .kwargs = kwargs};
    char *msg = ocp_celery_message(&n);
    json_decref(args);
    json_decref(kwargs);
    char list[600];
    ocp_celery_queue_key(s->queues[0], spec->priority, list, sizeof list);
    int rc = 0;
    if (spec->group) {
        /* Filed now, so `status GROUP` shows pages still queued (a worker files them too,
         * for groups of Celery producers). */
        redisReply *r = cmd(s, "SADD ocrpool.group.%s %s", spec->group, id);
        if (r)
            freeReplyObject(r);
        r = cmd(s, "EXPIRE ocrpool.group.%s %.0f", spec->group, group_ttl(s));
        if (r)
            freeReplyObject(r);
    }
    redisReply *r = cmd(s, "LPUSH %s %s", list, msg);
    if (!r || r->type == REDIS_REPLY_ERROR)
        rc = OCP_E_BROKER;
    else
        *inserted = 1;
    if (r)
        freeReplyObject(r);
    free(msg);
    return rc;
}

/* ---- consumer ------------------------------------------------------------------------ */

/* Restores tag from its unacked record (kombu's restore_by_tag); ceiling as in restore().
 * 1 when a message went back. A record that cannot be read is dropped. */
static int restore_tag(rs *s, const char *tag, const char *ceiling)
{
    redisReply *h = cmd(s, "HGET " K_UNACKED " %s", tag);
    if (!h)
        return OCP_E_BROKER;
    json_t *v = h->type == REDIS_REPLY_STRING ? json_loads(h->str, 0, NULL) : NULL;
    freeReplyObject(h);
    json_t *msg = json_array_get(v, 0);
    const char *q = json_string_value(json_array_get(v, 2));
    char *txt = json_is_object(msg) ? json_dumps(msg, JSON_COMPACT) : NULL;
    int rc = 0;
    if (txt && q) {
        int pri = (int)json_integer_value(
            json_object_get(json_object_get(msg, "properties"), "priority"));
        rc = restore(s, tag, txt, q, pri, ceiling, false);
    } else {
        OCP_LOG(OCP_LOG_WARN, "unacked record %s is unreadable: dropped from the index", tag);
        forget(s, tag);
    }
    free(txt);
    json_decref(v);
    return rc;
}

/* kombu's restore_visible: under unacked_mutex, messages whose score is older than the
 * visibility timeout go back to their queue. */
static void restore_visible(rs *s)
{
    char token[37], ceil[64];
    ocp_uuid4(token);
    redisReply *r = cmd(s, "SET " K_MUTEX " %s NX PX 300000", token);
    int got = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    if (!got)
        return;
    snprintf(ceil, sizeof ceil, "%.6f", ocp_wall_now() - s->vis);
    r = cmd(s, "ZRANGEBYSCORE " K_INDEX " -inf %s LIMIT 0 100", ceil);
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++)
            if (restore_tag(s, r->element[i]->str, ceil) == 1)
                OCP_LOG(OCP_LOG_WARN,
                        "restored an unacknowledged message to its queue after the visibility "
                        "timeout (%.0f s)",
                        s->vis);
    }
    if (r)
        freeReplyObject(r);
    const char *a[] = {"EVAL", unlock_lua, "1", K_MUTEX, token};
    r = cmdv(s, 5, a, NULL);
    if (r)
        freeReplyObject(r);
}

/* Settles a message that will not run: stores its meta and acknowledges it. */
static void settle(rs *s, const char *id, const char *tag, char *meta)
{
    finish(s, id, meta, tag);
    free(meta);
}

/* Takes one popped message: returns 1 when it is a page to hand out (in *t). */
static int take(rs *s, const char *tag, const char *raw, size_t len, const char *queue,
                int max_deliveries, ocp_task *t)
{
    ocp_celery_msg m;
    char err[600], exc[32] = "";
    int rc = ocp_celery_parse(raw, len, &m, err, sizeof err);
    if (rc) {
        dead_letter(s, tag, raw, queue, err);
        if (m.id) { /* the producer waits for this id: say why it will never run */
            char why[700];
            snprintf(why, sizeof why, "malformed message: %s", err);
            char *meta = fail_meta(m.id, m.group, "MalformedMessage", "ocrpool", why);
            finish(s, m.id, meta, NULL);
            free(meta);
        }
        ocp_celery_msg_fini(&m);
        return 0;
    }
    if (strcmp(m.task, s->task_name) != 0) {
        char why[600];
        snprintf(why, sizeof why, "%s", m.task);
        OCP_LOG(OCP_LOG_WARN, "task %s: %s is not registered here (only %s)", m.id, m.task,
                s->task_name);
        settle(s, m.id, tag, fail_meta(m.id, m.group, "NotRegistered", "celery.exceptions", why));
        ocp_celery_msg_fini(&m);
        return 0;
    }
    double now = ocp_wall_now();
    if (m.expires > 0 && m.expires <= now) {
        OCP_LOG(OCP_LOG_INFO, "task %s expired before it ran: revoked", m.id);
        settle(s, m.id, tag,
               ocp_celery_meta(m.id, "REVOKED",
                               ocp_celery_exc("TaskRevokedError", "celery.exceptions", "expired"),
                               NULL, m.group));
        ocp_celery_msg_fini(&m);
        return 0;
    }
    char *payload = NULL;
    if (ocp_celery_payload(&m, s->lang, s->max_inline, &payload, exc, err, sizeof err)) {
        OCP_LOG(OCP_LOG_WARN, "task %s: %s: %s", m.id, exc, err);
        settle(s, m.id, tag, fail_meta(m.id, m.group, exc, "builtins", err));
        ocp_celery_msg_fini(&m);
        return 0;
    }
    /* Count the delivery (poison pages are buried after max-deliveries) and file the page
     * under its group: one round trip. */
    long deliveries = 1;
    char dkey[300], gkey[600] = "", dttl[32], gttl[32];
    snprintf(dkey, sizeof dkey, "ocrpool.deliveries.%s", m.id);
    if (m.group)
        snprintf(gkey, sizeof gkey, "ocrpool.group.%s", m.group);
    snprintf(dttl, sizeof dttl, "%.0f", fmax(s->vis * 4, 86400));
    snprintf(gttl, sizeof gttl, "%.0f", group_ttl(s));
    const char *da[] = {"EVAL", deliver_lua, "2", dkey, gkey, m.id, dttl, gttl};
    redisReply *r = cmdv(s, (int)(sizeof da / sizeof da[0]), da, NULL);
    if (r && r->type == REDIS_REPLY_INTEGER)
        deliveries = (long)r->integer;
    if (r)
        freeReplyObject(r);
    if (max_deliveries > 0 && deliveries > max_deliveries) {
        char why[300];
        snprintf(why, sizeof why,
                 "buried: delivered %ld times (max-deliveries %d); each time its worker or node "
                 "was lost",
                 deliveries, max_deliveries);
        OCP_LOG(OCP_LOG_WARN, "page %s %s", m.id, why);
        settle(s, m.id, tag, fail_meta(m.id, m.group, "WorkerLostError", "billiard.exceptions", why));
        free(payload);
        ocp_celery_msg_fini(&m);
        return 0;
    }
    /* Per-task time limits ride along in the payload. */
    if (m.time_limit > 0 || m.soft_time_limit > 0) {
        json_t *p = json_loads(payload, 0, NULL);
        if (m.time_limit > 0)
            json_object_set_new(p, "time_limit", json_real(m.time_limit));
        if (m.soft_time_limit > 0)
            json_object_set_new(p, "soft_time_limit", json_real(m.soft_time_limit));
        free(payload);
        payload = json_dumps(p, JSON_COMPACT);
        json_decref(p);
    }
    rmsg *h = ocp_xcalloc(1, sizeof *h);
    h->id = ocp_xstrdup(m.id);
    h->tag = ocp_xstrdup(tag);
    h->raw = ocp_xstrndup(raw, len);
    h->queue = ocp_xstrdup(queue);
    h->group = m.group ? ocp_xstrdup(m.group) : NULL;
    h->priority = m.priority;
    h->next = s->held;
    s->held = h;
    memset(t, 0, sizeof *t);
    t->id = ocp_xstrdup(m.id);
    t->group = m.group ? ocp_xstrdup(m.group) : NULL;
    t->priority = m.priority;
    t->deliveries = (int)deliveries;
    t->payload = payload;
    double eta = m.eta;
    ocp_celery_msg_fini(&m);
    if (eta > now) {
        OCP_LOG(OCP_LOG_INFO, "task %s waits for its eta (in %.1f s)", h->id, eta - now);
        h->eta = eta;
        h->wait = *t;
        memset(t, 0, sizeof *t);
        return 0;
    }
    return 1;
}

static int rd_lease(void *st, const char *owner, const char *group, int max, double lease_s,
                    int max_deliveries, ocp_task *out, int *n)
{
    rs *s = st;
    *n = 0;
    if (conn(s))
        return OCP_E_BROKER;
    double now = ocp_wall_now();
    if (now - s->last_restore >= fmin(10.0, fmax(1.0, s->vis / 4))) {
        s->last_restore = now;
        restore_visible(s);
    }
    if (s->held && now - s->last_renew >= fmin(10.0, s->vis / 10))
        renew_held(s);
    /* Messages whose eta has come first. */
    for (rmsg *m = s->held; m && *n < max; m = m->next) {
        if (m->eta > 0 && m->eta <= now) {
            m->eta = 0;
            out[(*n)++] = m->wait;
            memset(&m->wait, 0, sizeof m->wait);
        }
    }
    if (*n >= max)
        return 0;
    /* KEYS: unacked, index, owners, deadletter, then each queue's lists, step 0 first. */
    int nl = s->nq * 4;
    int argc = 3 + 4 + nl + 4 + nl;
    const char **a = ocp_xcalloc((size_t)argc, sizeof *a);
    char (*lists)[600] = ocp_xcalloc((size_t)nl, sizeof *lists);
    char nkeys[16], smax[16], snow[64], scap[32];
    int k = 0;
    snprintf(nkeys, sizeof nkeys, "%d", 4 + nl);
    snprintf(smax, sizeof smax, "%d", max - *n);
    snprintf(snow, sizeof snow, "%.6f", now);
    snprintf(scap, sizeof scap, "%zu", s->max_msg);
    a[k++] = "EVAL";
    a[k++] = lease_lua;
    a[k++] = nkeys;
    a[k++] = K_UNACKED;
    a[k++] = K_INDEX;
    a[k++] = K_OWNERS;
    a[k++] = K_DEAD;
    static const int steps[4] = {0, 3, 6, 9};
    for (int q = 0; q < s->nq; q++) {
        for (int i = 0; i < 4; i++) {
            ocp_celery_queue_key(s->queues[q], steps[i], lists[q * 4 + i], sizeof lists[0]);
            a[k++] = lists[q * 4 + i];
        }
    }
    a[k++] = smax;
    a[k++] = snow;
    a[k++] = owner;
    a[k++] = scap;
    for (int q = 0; q < s->nq; q++)
        for (int i = 0; i < 4; i++)
            a[k++] = s->queues[q];
    redisReply *r = cmdv(s, k, a, NULL);
    free(a);
    free(lists);
    if (!r)
        return OCP_E_BROKER;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[1]->type != REDIS_REPLY_ARRAY) {
        set_err(s, "redis: the lease script answered in an unexpected shape");
        freeReplyObject(r);
        return OCP_E_BROKER;
    }
    redisReply *dead = r->element[1];
    for (size_t i = 0; i + 1 < dead->elements; i += 2)
        OCP_LOG(OCP_LOG_WARN, "message from queue %s dead-lettered (" K_DEAD "): %s",
                dead->element[i + 1]->str, dead->element[i]->str);
    redisReply *got = r->element[0];
    for (size_t i = 0; i + 2 < got->elements; i += 3) {
        redisReply *tag = got->element[i], *msg = got->element[i + 1], *q = got->element[i + 2];
        if (take(s, tag->str, msg->str, msg->len, q->str, max_deliveries, &out[*n]))
            (*n)++;
    }
    freeReplyObject(r);
    (void)group;
    (void)lease_s;
    return 0;
}

/* Every message this node holds, those waiting for an eta included, gets a fresh score: the
 * time of its last sign of life (kombu's restore takes scores older than the timeout). */
static int renew_held(rs *s)
{
    char now[64];
    int rc = 0;
    snprintf(now, sizeof now, "%.6f", ocp_wall_now());
    s->last_renew = ocp_wall_now();
    for (rmsg *m = s->held; m; m = m->next) {
        if (m->early_acked)
            continue;
        redisReply *r = cmd(s, "ZADD " K_INDEX " XX %s %s", now, m->tag);
        if (!r)
            return OCP_E_BROKER;
        if (r->type == REDIS_REPLY_ERROR)
            rc = OCP_E_BROKER;
        freeReplyObject(r);
    }
    return rc;
}

static int rd_renew(void *st, const char *owner, char *const *ids, int n, double lease_s)
{
    rs *s = st;
    if (conn(s))
        return OCP_E_BROKER;
    return renew_held(s);
}

/* acks-late off: acknowledged on receipt, as Celery does; a lost page is lost. */
static int rd_ack_early(void *st, const char *owner, const char *id)
{
    rs *s = st;
    if (conn(s))
        return OCP_E_BROKER;
    rmsg *m = find_held(s, id);
    if (m && !m->early_acked) {
        forget(s, m->tag);
        m->early_acked = true;
    }
    return 0;
}

static int rd_started(void *st, const char *id, int worker_pid)
{
    rs *s = st;
    rmsg *m = find_held(s, id);
    if (!s->track_started || !m)
        return 0;
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    char *meta = ocp_celery_meta(
        id, "STARTED", json_pack("{s:i, s:s}", "pid", worker_pid, "hostname", host), NULL,
        m->group);
    char key[300], ex[32];
    snprintf(key, sizeof key, META_PREFIX "%s", id);
    snprintf(ex, sizeof ex, "%.0f", s->expires > 0 ? s->expires : 86400.0 * 365);
    const char *a[] = {"SETEX", key, ex, meta};
    redisReply *r = cmdv(s, 4, a, NULL);
    if (r)
        freeReplyObject(r);
    const char *p[] = {"PUBLISH", key, meta};
    r = cmdv(s, 3, p, NULL);
    if (r)
        freeReplyObject(r);
    free(meta);
    return 0;
}

/* Stores the final meta of a held page and forgets it. */
static int finish_held(rs *s, const char *id, char *meta)
{
    rmsg *m = find_held(s, id);
    int rc = finish(s, id, meta, m && !m->early_acked ? m->tag : NULL);
    free(meta);
    if (m) {
        unlink_held(s, m);
        rmsg_free(m);
    }
    return rc;
}

static int rd_ack(void *st, const char *id, json_t *result, double started, double finished,
                  long peak_rss_kb, int worker_pid)
{
    rs *s = st;
    rmsg *m = find_held(s, id);
    return finish_held(s, id,
                       ocp_celery_meta(id, "SUCCESS", json_incref(result), NULL,
                                       m ? m->group : NULL));
}

/* The Celery exception a failure kind is reported as: its type and module. */
static void celery_exc(ocp_failure kind, const char **type, const char **module)
{
    *module = "celery.exceptions";
    switch (kind) {
    case OCP_FAIL_MEMORY_LIMIT:
        *type = "MemoryLimitExceeded";
        *module = "ocrpool";
        break;
    case OCP_FAIL_TIME_LIMIT:
        *type = "TimeLimitExceeded";
        break;
    case OCP_FAIL_SOFT_TIME_LIMIT:
        *type = "SoftTimeLimitExceeded";
        break;
    case OCP_FAIL_CRASHED:
        *type = "WorkerLostError";
        *module = "billiard.exceptions";
        break;
    default:
        *type = "OCRError";
        *module = "ocrpool";
        break;
    }
}

static int rd_fail(void *st, const char *id, ocp_failure kind, const char *reason,
                   double started, double finished, int worker_pid)
{
    rs *s = st;
    rmsg *m = find_held(s, id);
    const char *type, *module;
    celery_exc(kind, &type, &module);
    return finish_held(s, id, fail_meta(id, m ? m->group : NULL, type, module, reason));
}

static int rd_release(void *st, const char *id, ocp_failure kind, const char *reason,
                      int uncount, int max_deliveries, int *buried)
{
    rs *s = st;
    rmsg *m = find_held(s, id);
    *buried = 0;
    if (!m)
        return 0;
    if (!uncount && max_deliveries > 0 && m->wait.id == NULL) {
        long d = 0;
        redisReply *r = cmd(s, "GET ocrpool.deliveries.%s", id);
        if (r && r->type == REDIS_REPLY_STRING)
            d = strtol(r->str, NULL, 10);
        if (r)
            freeReplyObject(r);
        if (d >= max_deliveries) {
            char why[900];
            snprintf(why, sizeof why, "buried after %ld deliveries: %s", d, reason);
            *buried = 1;
            /* Buried, as Celery reports a task whose worker kept being lost. */
            const char *type, *module;
            celery_exc(OCP_FAIL_CRASHED, &type, &module);
            return finish_held(s, id, fail_meta(id, m->group, type, module, why));
        }
    }
    if (uncount) {
        redisReply *r = cmd(s, "DECR ocrpool.deliveries.%s", id);
        if (r)
            freeReplyObject(r);
    }
    int rc = 0;
    if (!m->early_acked)
        rc = restore(s, m->tag, m->raw, m->queue, m->priority, "", true);
    unlink_held(s, m);
    rmsg_free(m);
    return rc;
}

/* ---- queries ------------------------------------------------------------------------- */

/* Fills i from the task meta text of id (NULL: Redis has none); OCP_E_NOPAGE when there is
 * none and this node does not hold the task either (Celery's PENDING). */
static int parse_meta(rs *s, const char *id, const char *text, ocp_task_info *i)
{
    memset(i, 0, sizeof *i);
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    i->id = ocp_xstrdup(id);
    rmsg *m = find_held(s, id);
    if (!v) {
        i->state = m ? OCP_TASK_LEASED : OCP_TASK_READY;
        if (m)
            i->payload = m->wait.payload ? ocp_xstrdup(m->wait.payload) : NULL;
        if (!m)
            set_err(s, "no task %s: Redis has no result for it (PENDING: not finished yet, "
                       "unknown, or expired after result-expires)", id);
        return m ? 0 : OCP_E_NOPAGE;
    }
    const char *st = json_string_value(json_object_get(v, "status"));
    const char *g = json_string_value(json_object_get(v, "group_id"));
    i->group = g ? ocp_xstrdup(g) : NULL;
    json_t *res = json_object_get(v, "result");
    if (st && strcmp(st, "SUCCESS") == 0) {
        i->state = OCP_TASK_DONE;
        i->result = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
    } else if (st && (strcmp(st, "FAILURE") == 0 || strcmp(st, "REVOKED") == 0)) {
        const char *t = json_string_value(json_object_get(res, "exc_type"));
        json_t *msg = json_array_get(json_object_get(res, "exc_message"), 0);
        i->state = t && strcmp(t, "WorkerLostError") == 0 ? OCP_TASK_BURIED : OCP_TASK_FAILED;
        i->error = ocp_xasprintf("%s: %s", t ? t : st,
                                 json_is_string(msg) ? json_string_value(msg) : "");
    } else {
        i->state = st && strcmp(st, "STARTED") == 0 ? OCP_TASK_LEASED : OCP_TASK_READY;
        i->worker_pid = (int)json_integer_value(json_object_get(res, "pid"));
    }
    const char *dd = json_string_value(json_object_get(v, "date_done"));
    if (dd)
        i->finished = ocp_iso8601_parse(dd);
    json_decref(v);
    return 0;
}

static int rd_get(void *st, const char *id, ocp_task_info *info)
{
    rs *s = st;
    redisReply *r = cmd(s, "GET " META_PREFIX "%s", id);
    if (!r)
        return OCP_E_BROKER;
    int rc = parse_meta(s, id, r->type == REDIS_REPLY_STRING ? r->str : NULL, info);
    freeReplyObject(r);
    return rc;
}

/* Calls fn for each task of group with its info: the ids from the group's set, their metas
 * read MGET by MGET (a few round trips for a book, not one per page). Stops at fn's first
 * non-zero answer, which it returns. */
static int each_member(rs *s, const char *group, int (*fn)(void *ctx, ocp_task_info *i),
                       void *ctx)
{
    redisReply *r = cmd(s, "SMEMBERS ocrpool.group.%s", group);
    if (!r)
        return OCP_E_BROKER;
    int rc = 0;
    enum { CHUNK = 256 };
    const char *a[CHUNK + 1];
    char *keys[CHUNK];
    for (size_t k0 = 0; r->type == REDIS_REPLY_ARRAY && k0 < r->elements && !rc; k0 += CHUNK) {
        size_t n = r->elements - k0 < CHUNK ? r->elements - k0 : CHUNK;
        a[0] = "MGET";
        for (size_t j = 0; j < n; j++) {
            keys[j] = ocp_xasprintf(META_PREFIX "%s", r->element[k0 + j]->str);
            a[j + 1] = keys[j];
        }
        redisReply *g = cmdv(s, (int)n + 1, a, NULL);
        for (size_t j = 0; j < n; j++)
            free(keys[j]);
        if (!g || g->type != REDIS_REPLY_ARRAY || g->elements != n) {
            rc = OCP_E_BROKER;
        } else {
            for (size_t j = 0; j < n && !rc; j++) {
                ocp_task_info i;
                redisReply *e = g->element[j];
                parse_meta(s, r->element[k0 + j]->str,
                           e->type == REDIS_REPLY_STRING ? e->str : NULL, &i);
                if (!i.group)
                    i.group = ocp_xstrdup(group);
                rc = fn(ctx, &i);
                ocp_task_info_fini(&i);
            }
        }
        if (g)
            freeReplyObject(g);
    }
    freeReplyObject(r);
    return rc;
}

typedef struct list_ctx {
    int want_result;
    int (*fn)(void *ctx, const ocp_task_info *i);
    void *ctx;
} list_ctx;

static int list_one(void *vctx, ocp_task_info *i)
{
    list_ctx *l = vctx;
    if (!l->want_result) {
        free(i->result);
        i->result = NULL;
    }
    return l->fn(l->ctx, i);
}

static int rd_list(void *st, const char *group, int want_result,
                   int (*fn)(void *ctx, const ocp_task_info *i), void *ctx)
{
    rs *s = st;
    if (!group) {
        set_err(s, "redis: tasks are listed by group (--group G): results live in "
                   "celery-task-meta-<id> keys, not in one table");
        return OCP_E_UNSUPPORTED;
    }
    list_ctx l = {want_result, fn, ctx};
    return each_member(s, group, list_one, &l);
}

static int count_one(void *vctx, ocp_task_info *i)
{
    ocp_counts *c = vctx;
    long *slot[5] = {&c->ready, &c->leased, &c->done, &c->failed, &c->buried};
    (*slot[i->state])++;
    return 0;
}

static int rd_counts(void *st, const char *group, ocp_counts *c)
{
    rs *s = st;
    memset(c, 0, sizeof *c);
    if (group)
        return each_member(s, group, count_one, c);
    static const int steps[4] = {0, 3, 6, 9};
    for (int q = 0; q < s->nq; q++) {
        for (int k = 0; k < 4; k++) {
            char list[600];
            ocp_celery_queue_key(s->queues[q], steps[k], list, sizeof list);
            redisReply *r = cmd(s, "LLEN %s", list);
            if (!r)
                return OCP_E_BROKER;
            c->ready += r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 0;
            freeReplyObject(r);
        }
    }
    redisReply *r = cmd(s, "HLEN " K_UNACKED);
    if (!r)
        return OCP_E_BROKER;
    c->leased = r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 0;
    freeReplyObject(r);
    /* Finished pages are keys with a time to live, not counted here. */
    c->done = c->failed = c->buried = -1;
    return 0;
}

static int rd_requeue(void *st, const char *group, unsigned states_mask, long *n)
{
    rs *s = st;
    *n = 0;
    set_err(s, "redis: requeue is not offered: send the pages again (a new task id each, as "
               "Celery does)");
    return OCP_E_UNSUPPORTED;
}

static int rd_expire(void *st, double older_than, long *n)
{
    *n = 0; /* Redis expires result keys itself (SETEX result-expires). */
    return 0;
}

/* Restores the messages held by nodes of this host that are gone (a node restarted after a
 * crash), instead of waiting for the visibility timeout. */
static int rd_reclaim_dead(void *st, long *n)
{
    rs *s = st;
    *n = 0;
    redisReply *r = cmd(s, "HGETALL " K_OWNERS);
    if (!r)
        return OCP_E_BROKER;
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k + 1 < r->elements; k += 2) {
        const char *tag = r->element[k]->str, *owner = r->element[k + 1]->str;
        if (!ocp__owner_is_dead(owner))
            continue;
        if (restore_tag(s, tag, "") == 1)
            (*n)++;
    }
    freeReplyObject(r);
    return 0;
}

const ocp_broker_ops ocp_broker_redis = {
    .scheme = "redis",
    .open = rd_open,
    .close = rd_close,
    .errmsg = rd_errmsg,
    .submit = rd_submit,
    .lease = rd_lease,
    .renew = rd_renew,
    .ack_early = rd_ack_early,
    .started = rd_started,
    .ack = rd_ack,
    .fail = rd_fail,
    .release = rd_release,
    .counts = rd_counts,
    .list = rd_list,
    .get = rd_get,
    .requeue = rd_requeue,
    .expire = rd_expire,
    .reclaim_dead = rd_reclaim_dead,
};
