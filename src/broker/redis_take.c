/*
 * redis_take.c: the Redis backend's messages (redis_int.h): taking them
 * from the queue lists into unacked (one Lua script, so a node that dies at
 * any point loses nothing), holding them while their pages run (and while
 * an eta is awaited), renewing their unacked_index scores, restoring them
 * to their queue (a released page, a dead node's, kombu's visibility
 * restore), and acknowledging them. Each of these names the owner that
 * took the message (LUA_OWNED in redis_int.h), so a node whose lease ran out
 * never acknowledges, restores or renews a message another consumer holds
 * now.
 *
 * Messages with a future eta wait in the node, as in Celery's worker, up to
 * max_eta_n messages and max_eta_bytes bytes; beyond that a message is left
 * in unacked, not held, with the score that makes the visibility restore
 * (ours or any Python worker's) give it back to its queue at its eta.
 */
#include "broker/celery.h"
#include "broker/redis_int.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <hiredis.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Lease: pops up to ARGV[1] messages, step 0 first, and records each in
 * unacked/unacked_index/owners in the same atomic step. Text that is not a
 * JSON object, or is over the size limit, goes to the dead-letter list
 * instead. A delivery tag already in unacked (or none) is replaced by a fresh one (HSETNX:
 * one command for the check and the record). In the same step, a message whose headers.id is a
 * string of 1 to 255 bytes (ocp_celery_parse's rule; without NUL) has its delivery counted
 * (ocrpool.deliveries.<id>, for ARGV[n + 1] s) and, with a headers.group of the same kind, is filed
 * under its group (ocrpool.group.<group>, for ARGV[n + 2] s), which took a round trip of its own
 * per page before; take() checks that the id and group it parses are these, and undoes or redoes
 * what they are not (counted). Returns {{tag1, msg1, queue1, id1, group1, count1, added1,
 * tag2, ...}, {reason1, queue1, reason2, ...}}: the messages taken (id and group "" when
 * not counted or filed; added 1 when the id was new in its group's set), and why any were
 * dead-lettered. The owners hash holds "owner\tscore" (LUA_NOT_OWNED).
 * KEYS: unacked, unacked_index, owners, deadletter, list 1..n
 * ARGV: max, now, owner, max bytes, queue name of list 1..n, deliveries ttl, group ttl
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
    "      local rec = '[' .. m .. ', \"\", ' .. cjson.encode(q) .. ']'\n"
    "      if type(tag) ~= 'string' or tag == '' or redis.call('HSETNX', KEYS[1], tag, rec) == 0 "
    "then\n"
    "        repeat tag = 'ocrpool-' .. redis.call('INCR', 'ocrpool.tagseq')\n"
    "        until redis.call('HSETNX', KEYS[1], tag, rec) == 1\n"
    "      end\n"
    "      redis.call('ZADD', KEYS[2], ARGV[2], tag)\n"
    "      redis.call('HSET', KEYS[3], tag, ARGV[3] .. '\\t' .. ARGV[2])\n"
    "      local id, grp, cnt, added = '', '', 0, 0\n"
    "      if type(d.headers) == 'table' then\n"
    "        local hid, hg = d.headers.id, d.headers.group\n"
    "        if type(hid) == 'string' and #hid > 0 and #hid <= 255 and not string.find(hid, "
    "'\\0', 1, true) then\n"
    "          id = hid\n"
    "          cnt = redis.call('INCR', 'ocrpool.deliveries.' .. id)\n"
    "          redis.call('EXPIRE', 'ocrpool.deliveries.' .. id, ARGV[#KEYS + 1])\n"
    "          if type(hg) == 'string' and #hg > 0 and #hg <= 255 and not string.find(hg, "
    "'\\0', 1, true) then\n"
    "            grp = hg\n"
    "            added = redis.call('SADD', 'ocrpool.group.' .. grp, id)\n"
    "            redis.call('EXPIRE', 'ocrpool.group.' .. grp, ARGV[#KEYS + 2])\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "      out[#out + 1] = tag\n"
    "      out[#out + 1] = m\n"
    "      out[#out + 1] = q\n"
    "      out[#out + 1] = id\n"
    "      out[#out + 1] = grp\n"
    "      out[#out + 1] = cnt\n"
    "      out[#out + 1] = added\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {out, dead}\n";

/* Forget: acknowledges a tag without a result (acks-late off, an unreadable record), if it is
 * still the owner's.
 * KEYS: unacked, unacked_index, owners.  ARGV: tag, claim (LUA_OWNED; "" = no check), label */
static const char forget_lua[] = LUA_OWNED("1", "2", "3") LUA_FORGET "return 1\n";

/*
 * Restore: puts a delivered message back at the head of its list (kombu's
 * restore_by_tag), if the tag is still unacknowledged, still the owner's
 * (when one is named) and, for a visibility restore, still stale (its score
 * at or below ARGV[3]); uncount: gives back the delivery it counted.
 * KEYS: unacked, unacked_index, owners, target list, deliveries
 * ARGV: tag, message (redelivered set), ceiling ("" = any), claim ("" = no check), label,
 *       uncount ("1")
 */
/* clang-format off */
static const char restore_lua[] =
    "if ARGV[3] ~= '' then\n"
    "  local sc = redis.call('ZSCORE', KEYS[2], ARGV[1])\n"
    "  if sc and tonumber(sc) > tonumber(ARGV[3]) then return 0 end\n"
    "end\n"
    LUA_OWNED("1", "4", "5")
    "local p = redis.call('HGET', KEYS[1], ARGV[1])\n"
    LUA_FORGET
    "if not p then return 0 end\n"
    "redis.call('RPUSH', KEYS[4], ARGV[2])\n"
    "if ARGV[6] == '1' and tonumber(redis.call('GET', KEYS[5]) or '0') > 0 then\n"
    "  redis.call('DECR', KEYS[5])\n"
    "end\n"
    "return 1\n";
/* clang-format on */

/*
 * Renew: a fresh score (ARGV[1]) for each tag that its claim (LUA_NOT_OWNED) still holds,
 * written in unacked_index and, with its owner, in the owners hash; returns the tags that
 * another consumer holds now (or nobody: they went back to their queue).
 * KEYS: unacked, unacked_index, owners.  ARGV: now, then tag, claim pairs
 */
static const char renew_lua[] = LUA_NOT_OWNED
    "local lost = {}\n"
    "for i = 2, #ARGV - 1, 2 do\n"
    "  local tag, claim = ARGV[i], ARGV[i + 1]\n"
    "  if not_owned(tag, claim) then\n"
    "    lost[#lost + 1] = tag\n"
    "  else\n"
    "    redis.call('ZADD', KEYS[2], 'XX', ARGV[1], tag)\n"
    "    redis.call('HSET', KEYS[3], tag, string.match(claim, '^[^\\t]+') .. '\\t' .. ARGV[1])\n"
    "  end\n"
    "end\n"
    "return lost\n";

/* Undoes the lease script's count of a delivery (KEYS[n], "" = none). */
#define LUA_UNCOUNT(N)                                                                             \
    "if KEYS[" N "] ~= '' and redis.call('DECR', KEYS[" N "]) <= 0 then redis.call('DEL', KEYS[" N \
    "]) end\n"

/*
 * Dead letter: records a delivered message with the reason and drops it from unacked; undoes
 * what the lease script counted for an id that the message turned out not to have: its
 * delivery (KEYS[5], "" = none) and its filing in a group (KEYS[6], "" = none: not added).
 * KEYS: unacked, unacked_index, owners, deadletter, deliveries, group set
 * ARGV: tag, record json, id
 */
static const char dead_lua[] = "redis.call('LPUSH', KEYS[4], ARGV[2])\n" LUA_FORGET LUA_UNCOUNT(
    "5") "if KEYS[6] ~= '' then redis.call('SREM', KEYS[6], ARGV[3]) end\n"
         "return 1\n";

/*
 * Park: a message left in unacked until its eta (park()) gets the score that gives it back
 * then, and its delivery, counted by the lease script, is given back (KEYS[2], "" = none).
 * KEYS: unacked_index, deliveries.  ARGV: score, tag
 */
static const char park_lua[] =
    "redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2])\n" LUA_UNCOUNT("2") "return 1\n";

/*
 * Deliver: counts a delivery of a task (poison pages are buried after max-deliveries) and
 * files it under its group (status and the HTTP API list groups), in one round trip; only
 * where the lease script could not (counted).
 * KEYS: deliveries ("" = not counted here), group set ("" = none).
 * ARGV: id, deliveries ttl, group ttl
 * Returns the count.
 */
static const char deliver_lua[] = "local n = 0\n"
                                  "if KEYS[1] ~= '' then\n"
                                  "  n = redis.call('INCR', KEYS[1])\n"
                                  "  redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
                                  "end\n"
                                  "if KEYS[2] ~= '' then\n"
                                  "  redis.call('SADD', KEYS[2], ARGV[1])\n"
                                  "  redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
                                  "end\n"
                                  "return n\n";

/*
 * Restore scan: takes the restore mutex (ARGV[1], for 300 s, as kombu's restore_visible takes
 * it with redis-py's Lock) and reads up to 100 tags whose score is at or below ARGV[2]; with
 * none, the mutex is let go at once. One round trip for the common case (nothing to
 * restore), which took three (lock, range, unlock). Returns nil when the mutex is another's,
 * else the tags (a non-empty list: the mutex is held, unlock_lua lets it go).
 * KEYS: unacked_mutex, unacked_index.  ARGV: token, ceiling
 */
static const char scan_lua[] =
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 300000) then return false end\n"
    "local tags = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 100)\n"
    "if #tags == 0 then redis.call('DEL', KEYS[1]) end\n"
    "return tags\n";

/* Releases the restore mutex if it is still ours (redis-py's Lock.release). */
static const char unlock_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                 "  return redis.call('DEL', KEYS[1])\n"
                                 "end\n"
                                 "return 0\n";

/* ---- held messages ------------------------------------------------------------------- */

static void rmsg_free(rmsg *m)
{
    free(m->id);
    free(m->owner);
    free(m->tag);
    free(m->raw);
    free(m->queue);
    free(m->group);
    ocp_task_fini(&m->wait);
    free(m);
}

rmsg *ocp__rd_find_held(rs *s, const char *id)
{
    for (rmsg *m = s->held; m; m = m->next)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

const char *ocp__rd_claim(const rmsg *m, char *buf, size_t len)
{
    int k = snprintf(buf, len, "%s\t%s", m->owner, m->score);
    for (int i = 0; i < m->n_tried && k >= 0 && (size_t)k < len; i++)
        k += snprintf(buf + k, len - (size_t)k, "\t%s", m->tried[i]);
    return buf;
}

/* m stops waiting for its eta (handed out, or dropped). */
static void eta_over(rs *s, rmsg *m)
{
    if (m->eta > 0) {
        s->eta_n--;
        s->eta_bytes -= m->bytes;
        m->eta = 0;
    }
}

void ocp__rd_drop_held(rs *s, rmsg *m)
{
    for (rmsg **pp = &s->held; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    eta_over(s, m);
    rmsg_free(m);
}

/* Acknowledges tag without a result (an unreadable record: whoever holds it). */
static int forget(rs *s, const char *tag)
{
    const char *a[] = {"EVAL", forget_lua, "3", K_UNACKED, K_INDEX, K_OWNERS, tag, "", ""};
    return ocp__rd_must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
}

/* Sets headers.redelivered and delivery_info.redelivered in message m, as kombu's restore
 * writes it, and returns its text (new string). */
static char *redelivered(json_t *m)
{
    json_t *h = json_object_get(m, "headers");
    if (json_is_object(h))
        json_object_set_new(h, "redelivered", json_true());
    json_t *di = json_object_get(json_object_get(m, "properties"), "delivery_info");
    if (json_is_object(di))
        json_object_set_new(di, "redelivered", json_true());
    return json_dumps(m, JSON_COMPACT);
}

/* How a restore is made: the visibility ceiling ("" = any score), the claim (LUA_NOT_OWNED)
 * that must still hold the tag ("" = any), the delivery counter to give back one of (NULL:
 * none), and must: through the outbox. */
typedef struct restore_how {
    const char *ceiling, *claim, *uncount_key;
    bool must;
} restore_how;

/* Puts msg (marked redelivered) back at the head of its list, as how says. */
static int restore_text(rs *s, const char *tag, const char *msg, const char *queue, int priority,
                        const restore_how *how)
{
    char list[600], label[700];
    ocp_celery_queue_key(queue, priority, list, sizeof list);
    snprintf(label, sizeof label, "message %s: a late restore from %.*s", tag,
             (int)strcspn(how->claim, "\t"), how->claim);
    /* Without uncount the counter is not touched: any key name will do. */
    const char *del = how->uncount_key ? how->uncount_key : "ocrpool.deliveries.";
    const char *a[] = {
        "EVAL", restore_lua, "5", K_UNACKED,    K_INDEX,    K_OWNERS, list,
        del,    tag,         msg, how->ceiling, how->claim, label,    how->uncount_key ? "1" : "0"};
    if (how->must)
        return ocp__rd_must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    redisReply *r = ocp__rd_cmdv(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    int rc = !r || r->type == REDIS_REPLY_ERROR ? OCP_E_BROKER
             : ocp__rd_stale(r)                 ? 0
                                                : (int)r->integer;
    if (r)
        freeReplyObject(r);
    return rc;
}

int ocp__rd_restore(rs *s, const rmsg *h, bool uncount)
{
    json_t *m = json_loads(h->raw, 0, NULL);
    char *msg = json_is_object(m) ? redelivered(m) : ocp_xstrdup(h->raw);
    json_decref(m);
    char dkey[300], claim[400];
    snprintf(dkey, sizeof dkey, "ocrpool.deliveries.%s", h->id);
    restore_how how = {"", ocp__rd_claim(h, claim, sizeof claim), uncount ? dkey : NULL, true};
    int rc = restore_text(s, h->tag, msg, h->queue, h->priority, &how);
    free(msg);
    return rc;
}

/* What the lease script counted for a message it took (borrowed from its answer): the id
 * ("" = nothing counted) whose delivery it counted, the count, and the group ("" = none) it
 * filed the id under (added: the id was new in that group's set). */
typedef struct counted {
    const char *id, *group;
    long n;
    bool added;
} counted;

/* Whether the lease script counted the delivery of id (as parsed here). */
static bool counted_id(const counted *c, const char *id)
{
    return c->id[0] && id && strcmp(c->id, id) == 0;
}

/* Records a malformed message in the dead-letter list with the reason; undoes what the lease
 * script counted for it when no id could be read here (none will be stored for it). */
static void dead_letter(rs *s, const char *tag, const char *raw, const char *queue,
                        const char *reason, const counted *c, bool has_id)
{
    json_t *rec = json_pack("{s:s, s:s, s:f, s:s}", "reason", reason, "queue", queue, "time",
                            ocp_wall_now(), "message", raw);
    char *txt = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    char dkey[300] = "", gkey[600] = "";
    if (!has_id && c->id[0]) {
        snprintf(dkey, sizeof dkey, "ocrpool.deliveries.%s", c->id);
        if (c->group[0] && c->added)
            snprintf(gkey, sizeof gkey, "ocrpool.group.%s", c->group);
    }
    const char *a[] = {"EVAL", dead_lua, "6",  K_UNACKED, K_INDEX, K_OWNERS,
                       K_DEAD, dkey,     gkey, tag,       txt,     c->id};
    ocp__rd_must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    free(txt);
    OCP_LOG(OCP_LOG_WARN, "message from queue %s dead-lettered (%s): %s", queue, K_DEAD, reason);
}

/* ---- consumer ------------------------------------------------------------------------ */

/* Restores tag from its unacked record (kombu's restore_by_tag); ceiling as in restore().
 * 1 when a message went back. A record that cannot be read is dropped. */
int ocp__rd_restore_tag(rs *s, const char *tag, const char *ceiling, const char *claim)
{
    redisReply *h = ocp__rd_cmd(s, "HGET " K_UNACKED " %s", tag);
    if (!h)
        return OCP_E_BROKER;
    json_t *v = h->type == REDIS_REPLY_STRING ? json_loads(h->str, 0, NULL) : NULL;
    freeReplyObject(h);
    json_t *msg = json_array_get(v, 0);
    const char *q = json_string_value(json_array_get(v, 2));
    int rc = 0;
    if (json_is_object(msg) && q) {
        int pri = (int)json_integer_value(
            json_object_get(json_object_get(msg, "properties"), "priority"));
        char *txt = redelivered(msg);
        restore_how how = {ceiling, claim, NULL, false};
        rc = restore_text(s, tag, txt, q, pri, &how);
        free(txt);
    } else {
        OCP_LOG(OCP_LOG_WARN, "unacked record %s is unreadable: dropped from the index", tag);
        forget(s, tag);
    }
    json_decref(v);
    return rc;
}

/* kombu's restore_visible: under unacked_mutex, messages whose score is older than the
 * visibility timeout go back to their queue. */
static void restore_visible(rs *s)
{
    char token[37], ceil[64];
    ocp_uuid4(token);
    snprintf(ceil, sizeof ceil, "%.6f", ocp_wall_now() - s->vis);
    const char *sa[] = {"EVAL", scan_lua, "2", K_MUTEX, K_INDEX, token, ceil};
    redisReply *r = ocp__rd_cmdv(s, (int)(sizeof sa / sizeof sa[0]), sa, NULL);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        if (r)
            freeReplyObject(r);
        return; /* another's mutex, nothing stale (let go already), or no answer */
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            ocp__rd_restore_tag(s, r->element[i]->str, ceil, "") == 1)
            OCP_LOG(OCP_LOG_WARN,
                    "restored an unacknowledged message to its queue: the visibility timeout "
                    "(%.0f s) ran out, or the eta it waited for in Redis came",
                    s->vis);
    freeReplyObject(r);
    const char *a[] = {"EVAL", unlock_lua, "1", K_MUTEX, token};
    r = ocp__rd_cmdv(s, 5, a, NULL);
    if (r)
        freeReplyObject(r);
}

/* Settles a message that will not run: stores its meta (taken) and acknowledges it. */
static void settle(rs *s, const char *id, const char *tag, char *meta)
{
    ocp__rd_finish(s, id, meta, tag, NULL, NULL); /* just taken: ours */
    free(meta);
}

/*
 * Parses a popped message into *m (the caller finis it) and settles it when it cannot run:
 * malformed (dead-lettered), not our task, expired, or with bad arguments. 1 when it was
 * settled so; 0 when it can run, with its page's payload in *payload (new string). What the
 * lease script counted (c) goes with the settlement: its store deletes the delivery count.
 */
static int refuse(rs *s, const char *tag, const char *raw, size_t len, const char *queue,
                  const counted *c, ocp_celery_msg *m, char **payload)
{
    char err[600], exc[32] = "";
    *payload = NULL;
    if (ocp_celery_parse(raw, len, m, err, sizeof err)) {
        /* With an id, the failure meta stored below deletes its count (LUA_STORE_META). */
        dead_letter(s, tag, raw, queue, err, c, m->id != NULL);
        if (m->id) { /* the producer waits for this id: say why it will never run */
            char why[700];
            snprintf(why, sizeof why, "malformed message: %s", err);
            char *meta = ocp__rd_fail_meta(m->id, m->group, OCP_FAIL_MALFORMED, "MalformedMessage",
                                           "ocrpool", why);
            ocp__rd_finish(s, m->id, meta, NULL, NULL, NULL);
            free(meta);
        }
        return 1;
    }
    if (strcmp(m->task, s->task_name) != 0) {
        OCP_LOG(OCP_LOG_WARN, "task %s: %s is not registered here (only %s)", m->id, m->task,
                s->task_name);
        settle(s, m->id, tag,
               ocp__rd_fail_meta(m->id, m->group, OCP_FAIL_MALFORMED, "NotRegistered",
                                 "celery.exceptions", m->task));
        return 1;
    }
    if (m->expires > 0 && m->expires <= ocp_wall_now()) {
        OCP_LOG(OCP_LOG_INFO, "task %s expired before it ran: revoked", m->id);
        settle(s, m->id, tag,
               ocp_celery_meta(m->id, "REVOKED",
                               ocp_celery_exc("TaskRevokedError", "celery.exceptions", "expired"),
                               m->group, OCP_FAIL_REVOKED, false));
        return 1;
    }
    if (ocp_celery_payload(m, s->lang, s->max_inline, payload, exc, err, sizeof err)) {
        OCP_LOG(OCP_LOG_WARN, "task %s: %s: %s", m->id, exc, err);
        settle(s, m->id, tag,
               ocp__rd_fail_meta(m->id, m->group, OCP_FAIL_MALFORMED, exc, "builtins", err));
        return 1;
    }
    return 0;
}

/* Counts a delivery of id (poison pages are buried after max-deliveries; count: false when
 * the lease script did) and files it under its group (NULL: none), in one round trip. The
 * count (1 when Redis did not answer). */
static long count_delivery(rs *s, const char *id, const char *group, bool count)
{
    long deliveries = 1;
    char dkey[300] = "", gkey[600] = "", dttl[32], gttl[32];
    if (count)
        snprintf(dkey, sizeof dkey, "ocrpool.deliveries.%s", id);
    if (group)
        snprintf(gkey, sizeof gkey, "ocrpool.group.%s", group);
    snprintf(dttl, sizeof dttl, "%.0f", fmax(s->vis * 4, 86400));
    snprintf(gttl, sizeof gttl, "%.0f", ocp__rd_group_ttl(s));
    const char *da[] = {"EVAL", deliver_lua, "2", dkey, gkey, id, dttl, gttl};
    redisReply *r = ocp__rd_cmdv(s, (int)(sizeof da / sizeof da[0]), da, NULL);
    if (r && r->type == REDIS_REPLY_INTEGER)
        deliveries = (long)r->integer;
    if (r)
        freeReplyObject(r);
    return deliveries;
}

/*
 * Whether a message of bytes bytes that waits for its eta finds no room in the node (more
 * than max_eta_n messages or max_eta_bytes bytes would wait); then it is parked: left in
 * unacked, not held, with the score eta - visibility timeout, so that the visibility restore
 * gives it back to its queue at its eta (kombu's rule: a score older than the timeout). Its
 * delivery is not counted (the lease script's count is given back). 1 when parked.
 */
static int park(rs *s, const char *tag, const ocp_celery_msg *m, size_t bytes, const counted *c)
{
    if (s->eta_n < s->max_eta_n && s->eta_bytes + bytes <= s->max_eta_bytes)
        return 0;
    char score[64], dkey[300] = "";
    snprintf(score, sizeof score, "%.6f", m->eta - s->vis);
    if (counted_id(c, m->id))
        snprintf(dkey, sizeof dkey, "ocrpool.deliveries.%s", m->id);
    const char *a[] = {"EVAL", park_lua, "2", K_INDEX, dkey, score, tag};
    redisReply *r = ocp__rd_cmdv(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    if (r)
        freeReplyObject(r);
    OCP_LOG(OCP_LOG_INFO,
            "task %s waits for its eta (in %.1f s) in Redis: %zu messages (%zu bytes) wait here "
            "already",
            m->id, m->eta - ocp_wall_now(), s->eta_n, s->eta_bytes);
    return 1;
}

/* Holds the message for claim ("owner\tscore": who took it, with what score) while its page
 * runs (or waits for its eta) and fills *t with the page, taking payload. 1 when *t is to be
 * handed out now; 0 when it waits for its eta. */
static int hold(rs *s, const char *claim, const char *tag, const char *raw, size_t len,
                const char *queue, const ocp_celery_msg *m, long deliveries, char *payload,
                ocp_task *t)
{
    double now = ocp_wall_now();
    rmsg *h = ocp_xcalloc(1, sizeof *h);
    h->id = ocp_xstrdup(m->id);
    const char *tab = strchr(claim, '\t');
    h->owner = ocp_xstrndup(claim, (size_t)(tab - claim));
    snprintf(h->score, sizeof h->score, "%s", tab + 1);
    h->tag = ocp_xstrdup(tag);
    h->raw = ocp_xstrndup(raw, len);
    h->queue = ocp_xstrdup(queue);
    h->group = m->group ? ocp_xstrdup(m->group) : NULL;
    h->priority = m->priority;
    h->next = s->held;
    s->held = h;
    memset(t, 0, sizeof *t);
    t->id = ocp_xstrdup(m->id);
    t->group = m->group ? ocp_xstrdup(m->group) : NULL;
    t->priority = m->priority;
    t->deliveries = (int)deliveries;
    t->payload = payload;
    if (m->eta > now) {
        OCP_LOG(OCP_LOG_INFO, "task %s waits for its eta (in %.1f s)", h->id, m->eta - now);
        h->eta = m->eta;
        h->bytes = len + strlen(payload);
        s->eta_n++;
        s->eta_bytes += h->bytes;
        h->wait = *t;
        memset(t, 0, sizeof *t);
        return 0;
    }
    return 1;
}

/* Takes one popped message for claim (hold()): returns 1 when it is a page to hand out (in
 * *t). */
static int take(rs *s, const char *claim, const char *tag, const char *raw, size_t len,
                const char *queue, const counted *c, int max_deliveries, ocp_task *t)
{
    ocp_celery_msg m;
    char *payload = NULL;
    int rc = 0;
    if (refuse(s, tag, raw, len, queue, c, &m, &payload))
        goto out;
    if (m.eta > ocp_wall_now() && park(s, tag, &m, len + strlen(payload), c)) {
        free(payload);
        goto out;
    }
    /* Counted and filed by the lease script, unless the id or group parsed here is not the
     * one it read (a message only a crafted one could be: then counted here). */
    long deliveries;
    if (!counted_id(c, m.id))
        deliveries = count_delivery(s, m.id, m.group, true);
    else {
        deliveries = c->n;
        if (m.group && strcmp(m.group, c->group) != 0)
            count_delivery(s, m.id, m.group, false);
    }
    if (max_deliveries > 0 && deliveries > max_deliveries) {
        char why[300];
        snprintf(why, sizeof why,
                 "buried: delivered %ld times (max-deliveries %d); each time its worker or node "
                 "was lost",
                 deliveries, max_deliveries);
        OCP_LOG(OCP_LOG_WARN, "page %s %s", m.id, why);
        const char *type, *module;
        ocp_celery_exc_of(OCP_FAIL_CRASHED, &type, &module);
        settle(s, m.id, tag,
               ocp_celery_meta(m.id, "FAILURE", ocp_celery_exc(type, module, why), m.group,
                               OCP_FAIL_CRASHED, true));
        free(payload);
        goto out;
    }
    rc = hold(s, claim, tag, raw, len, queue, &m, deliveries, payload, t);
out:
    ocp_celery_msg_fini(&m);
    return rc;
}

/* Marks the held message of tag lost (another consumer holds it now: its lease ran out), and
 * says so once. One that only waited for its eta is dropped: it is the other's to run. */
static void lost(rs *s, const char *tag)
{
    for (rmsg *m = s->held, *next; m; m = next) {
        next = m->next;
        if (m->early_acked || m->lost || strcmp(m->tag, tag) != 0)
            continue;
        OCP_LOG(OCP_LOG_WARN,
                "task %s: its lease ran out (visibility timeout %.0f s) and its message was given "
                "back to its queue; what this node says of it is ignored",
                m->id, s->vis);
        m->lost = true;
        if (m->eta > 0)
            ocp__rd_drop_held(s, m);
    }
}

int ocp__rd_lose_renew_replies;

/* Whether m is renewed (not acknowledged early, not another's now). */
static bool renewable(const rmsg *m)
{
    return !m->early_acked && !m->lost;
}

/* A renewal that tried score now was not answered (a timeout, a dropped connection, an
 * error): its script may have run, so each tag it named has its score, or now, in Redis. */
static void renew_unanswered(rs *s, const char *now)
{
    s->lost_renews++;
    snprintf(s->retry, sizeof s->retry, "%s", now);
    for (rmsg *m = s->held; m; m = m->next) {
        if (!renewable(m) || strcmp(m->score, now) == 0)
            continue;
        int known = 0;
        for (int i = 0; i < m->n_tried; i++)
            known |= strcmp(m->tried[i], now) == 0;
        if (!known && m->n_tried < MAX_TRIED)
            snprintf(m->tried[m->n_tried++], sizeof m->tried[0], "%s", now);
    }
}

/* The answer of a renewal that tried score now: what the script renewed has now, what it did
 * not is another's. Without one, every score it may have written is claimed from then on
 * (renew_unanswered). */
static int renew_answer(rs *s, redisReply *r, const char *now)
{
    if (r && ocp__rd_lose_renew_replies > 0) {
        ocp__rd_lose_renew_replies--;
        ocp__rd_set_err(s, "redis: the answer to a renewal was lost (test)");
        freeReplyObject(r);
        r = NULL;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        renew_unanswered(s, now);
        if (r)
            freeReplyObject(r);
        return OCP_E_BROKER;
    }
    s->lost_renews = 0;
    for (rmsg *m = s->held; m; m = m->next) {
        if (renewable(m)) {
            snprintf(m->score, sizeof m->score, "%s", now);
            m->n_tried = 0;
        }
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            lost(s, r->element[i]->str);
    freeReplyObject(r);
    return 0;
}

/* Every message this node holds, those waiting for an eta included, gets a fresh score: the
 * time of its last sign of life (kombu's restore takes scores older than the timeout), in one
 * script that renews only what its owner still holds. */
static int renew_held(rs *s)
{
    int n = 0, k = 0;
    for (rmsg *m = s->held; m; m = m->next)
        n += renewable(m);
    s->last_renew = ocp_wall_now();
    if (!n) {
        s->lost_renews = 0;
        return 0;
    }
    char now[32];
    if (s->lost_renews >= MAX_TRIED)
        snprintf(now, sizeof now, "%s", s->retry);
    else
        snprintf(now, sizeof now, "%.6f", ocp_wall_now());
    const char **a = ocp_xcalloc((size_t)(7 + 2 * n), sizeof *a);
    char(*claims)[400] = ocp_xcalloc((size_t)n, sizeof *claims);
    a[k++] = "EVAL";
    a[k++] = renew_lua;
    a[k++] = "3";
    a[k++] = K_UNACKED;
    a[k++] = K_INDEX;
    a[k++] = K_OWNERS;
    a[k++] = now;
    for (rmsg *m = s->held; m; m = m->next) {
        if (renewable(m)) {
            a[k++] = m->tag;
            a[k] = ocp__rd_claim(m, claims[(k - 7) / 2], sizeof claims[0]);
            k++;
        }
    }
    redisReply *r = ocp__rd_cmdv(s, k, a, NULL);
    free(a);
    free(claims);
    return renew_answer(s, r, now);
}

/* Runs the lease script: pops up to max messages from the queues into unacked for owner.
 * The script's reply (new), or NULL with the reason in s->err. */
static redisReply *pop(rs *s, const char *owner, int max, double now)
{
    /* KEYS: unacked, index, owners, deadletter, then each queue's lists, step 0 first. */
    static const int steps[4] = {0, 3, 6, 9};
    int nl = s->nq * 4, k = 0;
    const char **a = ocp_xcalloc((size_t)(3 + 4 + nl + 4 + nl + 2), sizeof *a);
    char(*lists)[600] = ocp_xcalloc((size_t)nl, sizeof *lists);
    char nkeys[16], smax[16], snow[64], scap[32], dttl[32], gttl[32];
    snprintf(nkeys, sizeof nkeys, "%d", 4 + nl);
    snprintf(smax, sizeof smax, "%d", max);
    snprintf(snow, sizeof snow, "%.6f", now);
    snprintf(scap, sizeof scap, "%zu", s->max_msg);
    snprintf(dttl, sizeof dttl, "%.0f", fmax(s->vis * 4, 86400));
    snprintf(gttl, sizeof gttl, "%.0f", ocp__rd_group_ttl(s));
    a[k++] = "EVAL";
    a[k++] = lease_lua;
    a[k++] = nkeys;
    a[k++] = K_UNACKED;
    a[k++] = K_INDEX;
    a[k++] = K_OWNERS;
    a[k++] = K_DEAD;
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
    a[k++] = dttl;
    a[k++] = gttl;
    redisReply *r = ocp__rd_cmdv(s, k, a, NULL);
    free(a);
    free(lists);
    if (r &&
        (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
         r->element[0]->type != REDIS_REPLY_ARRAY || r->element[1]->type != REDIS_REPLY_ARRAY)) {
        ocp__rd_set_err(s, "redis: the lease script answered in an unexpected shape");
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

/*
 * The queue lists are not kept per group (a Celery producer writes every page of every group
 * to its queue), so a lease cannot choose a group: one with a group is refused. lease_s is
 * not used either: the visibility timeout (--visibility-timeout) is the lease on Redis, and
 * renew_held() keeps a held message's score fresh.
 */
int ocp__rd_lease(void *st, const char *owner, const char *group, int max, double lease_s,
                  int max_deliveries, ocp_task *out, int *n)
{
    rs *s = st;
    *n = 0;
    if (group) {
        ocp__rd_set_err(s, "redis: pages cannot be leased by group (its queues are not kept "
                           "per group)");
        return OCP_E_UNSUPPORTED;
    }
    if (ocp__rd_conn(s))
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
            eta_over(s, m);
            out[(*n)++] = m->wait;
            memset(&m->wait, 0, sizeof m->wait);
        }
    }
    if (*n >= max)
        return 0;
    redisReply *r = pop(s, owner, max - *n, now);
    if (!r)
        return OCP_E_BROKER;
    redisReply *dead = r->element[1];
    for (size_t i = 0; i + 1 < dead->elements; i += 2)
        OCP_LOG(OCP_LOG_WARN, "message from queue %s dead-lettered (" K_DEAD "): %s",
                dead->element[i + 1]->str, dead->element[i]->str);
    redisReply *got = r->element[0];
    char *claim = ocp_xasprintf("%s\t%.6f", owner, now); /* the score pop() wrote */
    for (size_t i = 0; i + 6 < got->elements; i += 7) {
        redisReply **e = got->element + i;
        if (e[3]->type != REDIS_REPLY_STRING || e[4]->type != REDIS_REPLY_STRING ||
            e[5]->type != REDIS_REPLY_INTEGER || e[6]->type != REDIS_REPLY_INTEGER)
            continue; /* not this script's answer: cannot happen */
        counted c = {e[3]->str, e[4]->str, (long)e[5]->integer, e[6]->integer == 1};
        if (take(s, claim, e[0]->str, e[1]->str, e[1]->len, e[2]->str, &c, max_deliveries,
                 &out[*n]))
            (*n)++;
    }
    free(claim);
    freeReplyObject(r);
    return 0;
}

/* Renews every message this node holds, whatever ids says: a score is a node's sign of life,
 * and the visibility timeout, not lease_s, is how long it lasts. */
int ocp__rd_renew(void *st, const char *owner, char *const *ids, int n, double lease_s)
{
    rs *s = st;
    if (ocp__rd_conn(s))
        return OCP_E_BROKER;
    return renew_held(s);
}

/* acks-late off: acknowledged on receipt, as Celery does; a lost page is lost. */
int ocp__rd_ack_early(void *st, const char *owner, const char *id)
{
    rs *s = st;
    if (ocp__rd_conn(s))
        return OCP_E_BROKER;
    rmsg *m = ocp__rd_find_held(s, id);
    if (!m || m->early_acked || m->lost)
        return 0;
    char label[700], claim[400];
    snprintf(label, sizeof label, "task %s: a late acknowledgement from %s", m->id, m->owner);
    const char *a[] = {"EVAL",  forget_lua, "3",    K_UNACKED,
                       K_INDEX, K_OWNERS,   m->tag, ocp__rd_claim(m, claim, sizeof claim),
                       label};
    redisReply *r = ocp__rd_cmdv(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    if (ocp__rd_stale(r))
        m->lost = true; /* another consumer's now: this node's result will not count */
    else if (r)
        m->early_acked = true;
    if (r)
        freeReplyObject(r);
    return r ? 0 : OCP_E_BROKER;
}

void ocp__rd_drop_all_held(rs *s)
{
    /* Messages still waiting for their eta go back to their queue. */
    for (rmsg *m = s->held, *next; m; m = next) {
        next = m->next;
        if (m->eta > 0 && !m->early_acked && !m->lost)
            ocp__rd_restore(s, m, false);
        rmsg_free(m);
    }
    s->held = NULL;
    s->eta_n = s->eta_bytes = 0;
}
