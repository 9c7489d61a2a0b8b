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
 *   ocrpool.unacked_owner (hash tag -> "host:pid:start\tscore")  who holds
 *                                    a tag, and the unacked_index score it
 *                                    last wrote (a message that still has
 *                                    it is still that owner's), so a node
 *                                    restarted on the same host restores
 *                                    its dead predecessor's pages at once
 *                                    instead of after the timeout
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
 * The backend's files (redis_int.h): this one opens, closes, submits,
 * answers the queries and holds the table; redis_conn.c is the connection
 * and its outbox (Debian's hiredis 0.14 has no TLS: rediss:// is refused
 * with that reason), redis_take.c the messages taken and held,
 * redis_meta.c the results and task metas.
 */
#include "broker/celery.h"
#include "broker/redis_int.h"
#include "core/error.h"
#include "core/util.h"

#include <hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rd_close(void *st);

static int rd_open(const char *target, const ocp_broker_opts *o, void **out, char *err,
                   size_t errlen)
{
    rs *s = ocp_xcalloc(1, sizeof *s);
    s->tail = &s->outbox;
    s->sent_tail = &s->sent;
    int rc = ocp__rd_parse_url(s, target, err, errlen);
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
    s->expires = o->result_expires_s > 0   ? o->result_expires_s
                 : o->result_expires_s < 0 ? 0
                                           : 86400;
    s->track_started = o->track_started;
    s->max_msg = o->max_message_bytes ? o->max_message_bytes : (size_t)512 << 20;
    s->max_inline = o->max_inline_bytes ? o->max_inline_bytes : (size_t)32 << 20;
    s->max_eta_n = o->max_eta_messages ? o->max_eta_messages : 1000;
    s->max_eta_bytes = o->max_eta_bytes ? o->max_eta_bytes : (size_t)64 << 20;
    /* The first connection must work: a wrong URL is said at once. */
    if (ocp__rd_conn(s)) {
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
    if (!s)
        return;
    ocp__rd_drop_all_held(s);
    ocp__rd_disconnect(s);
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
double ocp__rd_group_ttl(const rs *s)
{
    return s->expires > 0 ? s->expires : 86400.0 * 365;
}

/* ---- producer ------------------------------------------------------------------------ */

/*
 * Submit: files the id under its group (a failure there does not stop the page) and queues
 * the message, in one round trip (three before: SADD, EXPIRE, LPUSH).
 * KEYS: list, group set ("" = none).  ARGV: message, id, group ttl
 */
static const char submit_lua[] = "if KEYS[2] ~= '' then\n"
                                 "  redis.pcall('SADD', KEYS[2], ARGV[2])\n"
                                 "  redis.pcall('EXPIRE', KEYS[2], ARGV[3])\n"
                                 "end\n"
                                 "return redis.call('LPUSH', KEYS[1], ARGV[1])\n";

static int rd_submit(void *st, const ocp_task_spec *spec, const char *id, int *inserted)
{
    rs *s = st;
    json_t *args = NULL, *kwargs = NULL;
    *inserted = 0;
    if (ocp_celery_args_from_payload(spec->payload, &args, &kwargs)) {
        ocp__rd_set_err(s, "submit: the page payload has no source");
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
    char list[600], gkey[600] = "", gttl[32];
    ocp_celery_queue_key(s->queues[0], spec->priority, list, sizeof list);
    int rc = 0;
    /* Filed now, so `status GROUP` shows pages still queued (a worker files them too, for
     * groups of Celery producers). */
    if (spec->group)
        snprintf(gkey, sizeof gkey, "ocrpool.group.%s", spec->group);
    snprintf(gttl, sizeof gttl, "%.0f", ocp__rd_group_ttl(s));
    const char *a[] = {"EVAL", submit_lua, "2", list, gkey, msg, id, gttl};
    redisReply *r = ocp__rd_cmdv(s, (int)(sizeof a / sizeof a[0]), a, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR)
        rc = OCP_E_BROKER;
    else
        *inserted = 1;
    if (r)
        freeReplyObject(r);
    free(msg);
    return rc;
}

static int rd_get(void *st, const char *id, ocp_task_info *info)
{
    rs *s = st;
    redisReply *r = ocp__rd_cmd(s, "GET " META_PREFIX "%s", id);
    if (!r)
        return OCP_E_BROKER;
    int rc = ocp__rd_info(s, id, r->type == REDIS_REPLY_STRING ? r->str : NULL,
                          r->type == REDIS_REPLY_STRING ? r->len : 0, info);
    freeReplyObject(r);
    if (rc) /* no such task: nothing for the caller to fini (ocp__rd_info filled the id) */
        ocp_task_info_fini(info);
    return rc;
}

/* Calls fn for each task of group with its info: the ids from the group's set, their metas
 * read MGET by MGET (a few round trips for a book, not one per page). Stops at fn's first
 * non-zero answer, which it returns. */
static int each_member(rs *s, const char *group, int (*fn)(void *ctx, ocp_task_info *i), void *ctx)
{
    redisReply *r = ocp__rd_cmd(s, "SMEMBERS ocrpool.group.%s", group);
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
        redisReply *g = ocp__rd_cmdv(s, (int)n + 1, a, NULL);
        for (size_t j = 0; j < n; j++)
            free(keys[j]);
        if (!g || g->type != REDIS_REPLY_ARRAY || g->elements != n) {
            rc = OCP_E_BROKER;
        } else {
            for (size_t j = 0; j < n && !rc; j++) {
                ocp_task_info i;
                redisReply *e = g->element[j];
                ocp__rd_info(s, r->element[k0 + j]->str,
                             e->type == REDIS_REPLY_STRING ? e->str : NULL,
                             e->type == REDIS_REPLY_STRING ? e->len : 0, &i);
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
        ocp__rd_set_err(s, "redis: tasks are listed by group (--group G): results live in "
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
            redisReply *r = ocp__rd_cmd(s, "LLEN %s", list);
            if (!r)
                return OCP_E_BROKER;
            c->ready += r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 0;
            freeReplyObject(r);
        }
    }
    redisReply *r = ocp__rd_cmd(s, "HLEN " K_UNACKED);
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
    ocp__rd_set_err(s,
                    "redis: requeue is not offered: send the pages again (a new task id each, as "
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
    redisReply *r = ocp__rd_cmd(s, "HGETALL " K_OWNERS);
    if (!r)
        return OCP_E_BROKER;
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k + 1 < r->elements; k += 2) {
        /* The owners hash holds "owner\tscore", the score that owner last wrote. */
        const char *tag = r->element[k]->str, *held = r->element[k + 1]->str;
        char owner[300];
        snprintf(owner, sizeof owner, "%.*s", (int)strcspn(held, "\t"), held);
        if (!ocp__owner_is_dead(owner))
            continue;
        /* Only while that owner still holds it with that score (LUA_NOT_OWNED): the message
         * may have been restored since and taken again, under the same tag, by another node
         * or by a Python worker (which leaves the owners hash as it was). */
        if (ocp__rd_restore_tag(s, tag, "", held) == 1)
            (*n)++;
    }
    freeReplyObject(r);
    return 0;
}

/* Celery's add_consumer and cancel_consumer: the queues the lease script pops from. */
static int rd_queues(void *st, int op, const char *queue, const char **names, int max, int *n)
{
    rs *s = st;
    int at = -1;
    for (int i = 0; queue && i < s->nq; i++)
        if (strcmp(s->queues[i], queue) == 0)
            at = i;
    if (op > 0 && at < 0) {
        /* A name is a Redis key of ours and goes in a Lua script's keys: printable, short. */
        size_t len = strlen(queue);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)queue[i] <= ' ' || queue[i] == ',' || queue[i] == 0x7f)
                len = 0;
        if (len == 0 || len > 200) {
            ocp__rd_set_err(s, "queue name: 1 to 200 printable characters, no spaces or commas");
            return OCP_E_CONFIG;
        }
        if (s->nq == MAX_QUEUES) {
            ocp__rd_set_err(s, "queues: at most %d", MAX_QUEUES);
            return OCP_E_CONFIG;
        }
        s->queues[s->nq++] = ocp_xstrdup(queue);
    } else if (op < 0 && at >= 0) {
        if (s->nq == 1) {
            ocp__rd_set_err(s, "%s is the only queue consumed: it stays", queue);
            return OCP_E_CONFIG;
        }
        free(s->queues[at]);
        memmove(&s->queues[at], &s->queues[at + 1], (size_t)(s->nq - at - 1) * sizeof s->queues[0]);
        s->nq--;
    }
    for (int i = 0; i < s->nq && i < max; i++)
        names[(*n)++] = s->queues[i];
    return 0;
}

static int rd_scheduled(void *st,
                        int (*fn)(void *ctx, const char *id, double eta, int priority,
                                  const char *payload),
                        void *ctx)
{
    rs *s = st;
    for (rmsg *m = s->held; m; m = m->next)
        if (m->eta > 0 && fn(ctx, m->id, m->eta, m->priority, m->wait.payload))
            break;
    return 0;
}

const ocp_broker_ops ocp_broker_redis = {
    .scheme = "redis",
    .open = rd_open,
    .close = rd_close,
    .errmsg = rd_errmsg,
    .submit = rd_submit,
    .batch = ocp__rd_batch,
    .lease = ocp__rd_lease,
    .renew = ocp__rd_renew,
    .ack_early = ocp__rd_ack_early,
    .started = ocp__rd_started,
    .ack = ocp__rd_ack,
    .fail = ocp__rd_fail,
    .release = ocp__rd_release,
    .counts = rd_counts,
    .list = rd_list,
    .get = rd_get,
    .requeue = rd_requeue,
    .expire = rd_expire,
    .reclaim_dead = rd_reclaim_dead,
    .queues = rd_queues,
    .scheduled = rd_scheduled,
};
