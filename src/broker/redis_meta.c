/*
 * redis_meta.c: the Redis backend's results (redis_int.h), as Celery's Redis
 * result backend stores them: a task meta per id (celery-task-meta-<id>,
 * SETEX then PUBLISH on the channel of the same name, once: a final meta is
 * never overwritten). Here a page is started, acknowledged with its result,
 * failed, released to its queue or buried, and a meta is read back as an
 * ocp_task_info.
 *
 * Failure kinds: a FAILURE meta carries Celery's exception (the type that
 * Python's AsyncResult raises, picked from the kind by ocp_celery_exc_of)
 * and, beside it, "ocrpool_failure": the kind's name, and for a burial
 * "ocrpool_buried": true, so both read back exactly (celery.h).
 */
#include "broker/celery.h"
#include "broker/redis_int.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Finish: if the tag is still the claimant's (LUA_OWNED), stores a task meta
 * unless a final one (SUCCESS, FAILURE, REVOKED) is there already (results
 * are stored once), publishes it, and acknowledges the tag. Returns 1 when
 * stored, or the STALE status.
 * KEYS: unacked, unacked_index, owners, meta, deliveries
 * ARGV: tag ("" = none), meta json, expires (s, <= 0 = never), claim ("" = no check), label
 */
/* clang-format off */
static const char finish_lua[] =
    LUA_STORE_META
    "return stored\n";
/* clang-format on */

int ocp__rd_finish(rs *s, const char *id, const char *meta, const char *tag, const char *claim,
                   const char *what)
{
    char metakey[300], delkey[300], ex[32], label[700];
    snprintf(metakey, sizeof metakey, META_PREFIX "%s", id);
    snprintf(delkey, sizeof delkey, "ocrpool.deliveries.%s", id);
    snprintf(ex, sizeof ex, "%.0f", s->expires);
    /* The owner's name is its claim up to its score (LUA_OWNED). */
    snprintf(label, sizeof label, "task %s: a late %s from %.*s", id, what ? what : "result",
             claim ? (int)strcspn(claim, "\t") : 0, claim ? claim : "");
    const char *a[] = {"EVAL",         finish_lua, "5",     K_UNACKED,
                       K_INDEX,        K_OWNERS,   metakey, delkey,
                       tag ? tag : "", meta,       ex,      claim && tag ? claim : "",
                       label};
    return ocp__rd_must_write(s, (int)(sizeof a / sizeof a[0]), a, NULL);
}

/*
 * Started: stores a STARTED meta unless the tag is not the owner's any more (LUA_OWNED) or
 * the task has a final meta already (it never overwrites a result).
 * KEYS: unacked, unacked_index, owners, meta
 * ARGV: tag ("" = none), owner ("" = no check), label, meta json, expires (s)
 */
/* clang-format off */
static const char started_lua[] =
    "if ARGV[1] ~= '' then\n"
    LUA_OWNED("1", "2", "3")
    "end\n"
    "local old = redis.call('GET', KEYS[4])\n"
    "if old then\n"
    "  local ok, v = pcall(cjson.decode, old)\n"
    "  if ok and type(v) == 'table' and (v.status == 'SUCCESS' or v.status == 'FAILURE' or "
    "v.status == 'REVOKED') then\n"
    "    return {ok = 'STALE ' .. ARGV[3] .. ' ignored: the task is finished'}\n"
    "  end\n"
    "end\n"
    "redis.call('SETEX', KEYS[4], ARGV[5], ARGV[4])\n"
    "redis.call('PUBLISH', KEYS[4], ARGV[4])\n"
    "return 1\n";
/* clang-format on */

/* Says (a warning) that what this node says of held message m (what: "ack") is ignored. */
static void lost_word(const rmsg *m, const char *what)
{
    OCP_LOG(OCP_LOG_WARN,
            "task %s: a late %s from %s ignored: its message is held by another consumer now",
            m->id, what, m->owner);
}

char *ocp__rd_fail_meta(const char *id, const char *group, ocp_failure kind, const char *type,
                        const char *module, const char *message)
{
    return ocp_celery_meta(id, "FAILURE", ocp_celery_exc(type, module, message), group, kind,
                           false);
}

int ocp__rd_started(void *st, const char *owner, const char *id, int worker_pid)
{
    rs *s = st;
    (void)owner; /* the held message's own owner is checked */
    rmsg *m = ocp__rd_find_held(s, id);
    if (!s->track_started || !m)
        return 0;
    if (m->lost) {
        lost_word(m, "STARTED");
        return 0;
    }
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    char *meta =
        ocp_celery_meta(id, "STARTED", json_pack("{s:i, s:s}", "pid", worker_pid, "hostname", host),
                        m->group, OCP_FAIL_NONE, false);
    char key[300], ex[32], label[700], claim[400];
    snprintf(key, sizeof key, META_PREFIX "%s", id);
    snprintf(ex, sizeof ex, "%.0f", s->expires > 0 ? s->expires : 86400.0 * 365);
    snprintf(label, sizeof label, "task %s: a late STARTED from %s", id, m->owner);
    const char *a[] = {"EVAL",
                       started_lua,
                       "4",
                       K_UNACKED,
                       K_INDEX,
                       K_OWNERS,
                       key,
                       m->early_acked ? "" : m->tag,
                       ocp__rd_claim(m, claim, sizeof claim),
                       label,
                       meta,
                       ex};
    /* Not waited for: its answer (STALE, said) is read with the next command's. */
    ocp__rd_send(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    free(meta);
    return 0;
}

/* Stores the final meta (taken) of held page m, if it is still m's owner's, and forgets the
 * page. what: "ack", "fail" or "release". */
static int finish_held(rs *s, rmsg *m, char *meta, const char *what, const char *state,
                       json_t *value)
{
    int rc = 0;
    if (m->lost)
        lost_word(m, what);
    else {
        char claim[400];
        const char *tag = m->early_acked ? NULL : m->tag;
        ocp__rd_claim(m, claim, sizeof claim);
        /* A message with a chain, links or a chord sets them off with the store. */
        if (!ocp__rd_canvas_finish(s, m, meta, tag, claim, what, state, value, &rc))
            rc = ocp__rd_finish(s, m->id, meta, tag, claim, what);
    }
    free(meta);
    ocp__rd_drop_held(s, m);
    return rc;
}

/* The held message of id, or NULL when this node holds none (then what it says is ignored,
 * and that is said). */
static rmsg *held_or_say(rs *s, const char *id, const char *what)
{
    rmsg *m = ocp__rd_find_held(s, id);
    if (!m)
        OCP_LOG(OCP_LOG_WARN, "task %s: a %s ignored: this node does not hold its message", id,
                what);
    return m;
}

int ocp__rd_ack(void *st, const char *owner, const char *id, json_t *result, double started,
                double finished, long peak_rss_kb, int worker_pid)
{
    rs *s = st;
    (void)owner; /* the held message's own owner is checked */
    rmsg *m = held_or_say(s, id, "ack");
    if (!m)
        return 0;
    return finish_held(
        s, m, ocp_celery_meta(id, "SUCCESS", json_incref(result), m->group, OCP_FAIL_NONE, false),
        "ack", "SUCCESS", result);
}

int ocp__rd_fail(void *st, const char *owner, const char *id, ocp_failure kind, const char *reason,
                 double started, double finished, int worker_pid)
{
    rs *s = st;
    (void)owner;
    rmsg *m = held_or_say(s, id, "fail");
    if (!m)
        return 0;
    const char *type, *module;
    ocp_celery_exc_of(kind, &type, &module);
    /* A revoked page (Celery's revoke, with terminate or before it started) reads as Celery
     * stores one: REVOKED with TaskRevokedError, so AsyncResult.get raises that. */
    char *meta = kind == OCP_FAIL_REVOKED
                     ? ocp_celery_meta(id, "REVOKED", ocp_celery_exc(type, module, reason),
                                       m->group, kind, false)
                     : ocp__rd_fail_meta(id, m->group, kind, type, module, reason);
    json_t *exc = ocp_celery_exc(type, module, reason);
    int rc = finish_held(s, m, meta, "fail", kind == OCP_FAIL_REVOKED ? "REVOKED" : "FAILURE", exc);
    json_decref(exc);
    return rc;
}

/* Buries held page m after d deliveries: a FAILURE with WorkerLostError, as Celery reports a
 * task whose worker kept being lost, that keeps the kind of the failure that buried it. */
static int bury(rs *s, rmsg *m, long d, ocp_failure kind, const char *reason)
{
    char why[900];
    const char *type, *module;
    snprintf(why, sizeof why, "buried after %ld deliveries: %s", d,
             reason ? reason : "worker lost");
    ocp_celery_exc_of(OCP_FAIL_CRASHED, &type, &module);
    json_t *exc = ocp_celery_exc(type, module, why);
    int rc = finish_held(s, m,
                         ocp_celery_meta(m->id, "FAILURE", json_incref(exc), m->group,
                                         kind != OCP_FAIL_NONE ? kind : OCP_FAIL_CRASHED, true),
                         "release", "FAILURE", exc);
    json_decref(exc);
    return rc;
}

int ocp__rd_release(void *st, const char *owner, const char *id, ocp_failure kind,
                    const char *reason, int uncount, int max_deliveries, int *buried)
{
    rs *s = st;
    (void)owner;
    *buried = 0;
    rmsg *m = held_or_say(s, id, "release");
    if (!m)
        return 0;
    if (m->lost) {
        lost_word(m, "release");
        ocp__rd_drop_held(s, m);
        return 0;
    }
    if (!uncount && max_deliveries > 0 && m->wait.id == NULL) {
        long d = 0;
        redisReply *r = ocp__rd_cmd(s, "GET ocrpool.deliveries.%s", id);
        if (r && r->type == REDIS_REPLY_STRING)
            d = strtol(r->str, NULL, 10);
        if (r)
            freeReplyObject(r);
        if (d >= max_deliveries) {
            *buried = 1;
            return bury(s, m, d, kind, reason);
        }
    }
    int rc = 0;
    if (!m->early_acked)
        rc = ocp__rd_restore(s, m, uncount); /* gives the delivery back with it */
    ocp__rd_drop_held(s, m);
    return rc;
}

/* ---- reading a meta back ---------------------------------------------------------------- */

int ocp__rd_info(rs *s, const char *id, const char *text, size_t len, ocp_task_info *i)
{
    ocp_celery_meta_info mi;
    memset(i, 0, sizeof *i);
    i->id = ocp_xstrdup(id);
    if (!text || ocp_celery_meta_read(text, len, &mi)) {
        rmsg *m = ocp__rd_find_held(s, id);
        i->state = m ? OCP_TASK_LEASED : OCP_TASK_READY;
        if (m)
            i->payload = m->wait.payload ? ocp_xstrdup(m->wait.payload) : NULL;
        else
            ocp__rd_set_err(s,
                            "no task %s: Redis has no result for it (PENDING: not finished "
                            "yet, unknown, or expired after result-expires)",
                            id);
        return m ? 0 : OCP_E_NOPAGE;
    }
    i->group = mi.group;
    mi.group = NULL;
    if (strcmp(mi.status, "SUCCESS") == 0) {
        i->state = OCP_TASK_DONE;
        i->result = mi.result; /* the stored text, as it is */
        mi.result = NULL;
    } else if (strcmp(mi.status, "FAILURE") == 0 || strcmp(mi.status, "REVOKED") == 0) {
        i->state = mi.buried ? OCP_TASK_BURIED : OCP_TASK_FAILED;
        i->failure = mi.failure;
        i->error = ocp_xasprintf("%s: %s", mi.exc_type ? mi.exc_type : mi.status,
                                 mi.exc_message ? mi.exc_message : "");
    } else {
        i->state = strcmp(mi.status, "STARTED") == 0 ? OCP_TASK_LEASED : OCP_TASK_READY;
        i->worker_pid = mi.pid;
    }
    i->finished = mi.date_done;
    ocp_celery_meta_info_fini(&mi);
    return 0;
}
