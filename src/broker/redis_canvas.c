/*
 * redis_canvas.c: Celery's canvas on the Redis backend (redis_int.h): when
 * a held page's result or failure is stored, what its message set off
 * (celery.h, canvas.c builds the messages) happens in the same script as
 * the store, and only when the meta was stored by that script, so a page
 * delivered twice sets nothing off twice:
 *   - SUCCESS: the next signature of its chain, and each linked callback,
 *     applied to the result, are pushed on their queues;
 *   - SUCCESS or FAILURE of a chord's header part: [1, id, state, result]
 *     goes in "celery-taskset-meta-<group>.j" (a sorted set by group_index,
 *     Celery's result_chord_ordered default), the group's keys get the
 *     results' expiry, and when the set holds the chord's size (".s" plus
 *     ".t") and the claim ".c" is free, the parts are read, the keys deleted
 *     and ".c" set "done" in that same script (canvas_lua: Celery 5.2's keys
 *     and 5.7's ".d" and ".c"); the node then pushes the body applied to
 *     the list of results, or stores the body's FAILURE (ChordError) when a
 *     part failed.
 * Errbacks (link_error) are not applied: said in the log.
 */
#include "broker/celery.h"
#include "broker/redis_int.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FOLLOW 16 /* messages one result may set off (its chain's next and its links) */

/*
 * KEYS: unacked, unacked_index, owners, meta, deliveries, the group's j, t, s, d and c, then a
 *       list per follow-up
 * ARGV: tag ("" = none), meta, expires, claim ("" = no check), label, part ("" = none), score,
 *       follow-ups' count, the task id, then the follow-ups' messages
 * Returns {stored, 0} or, when the chord is complete, {stored, 1, parts}, or STALE.
 * The chord part follows both Celery 5.2 (".j" sorted set, ".s" size, ".t" diff) and 5.7
 * (".d" the parts seen as "id:score", so a part is counted once; ".c" the claim of the
 * worker that sends the body, then "done" so a late part sets nothing off), so a chord whose
 * parts run on ocrpool and on Python workers of either version completes once.
 */
/* clang-format off */
static const char canvas_lua[] =
    LUA_STORE_META
    "if stored == 0 then return {0, 0} end\n"
    "for i = 1, tonumber(ARGV[8]) do redis.call('LPUSH', KEYS[10 + i], ARGV[9 + i]) end\n"
    "if ARGV[6] == '' or redis.call('GET', KEYS[10]) == 'done' then return {1, 0} end\n"
    "local member = ARGV[9] .. ':' .. ARGV[7]\n"
    "if redis.call('SISMEMBER', KEYS[9], member) == 0 then\n"
    "  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[6])\n"
    "  redis.call('SADD', KEYS[9], member)\n"
    "end\n"
    "local ready = redis.call('ZCOUNT', KEYS[6], '-inf', '+inf')\n"
    "local tdiff = tonumber(redis.call('GET', KEYS[7]) or '0') or 0\n"
    "local size = tonumber(redis.call('GET', KEYS[8]) or '')\n"
    "if ex > 0 then for k = 6, 9 do redis.call('EXPIRE', KEYS[k], ex) end end\n"
    "if size and ready == size + tdiff and redis.call('SET', KEYS[10], 'ocrpool', 'NX', 'EX', 10) "
    "then\n"
    "  local parts = redis.call('ZRANGE', KEYS[6], 0, -1)\n"
    "  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8], KEYS[9])\n"
    "  redis.call('SET', KEYS[10], 'done', 'EX', 300)\n"
    "  return {1, 1, parts}\n"
    "end\n"
    "return {1, 0}\n";
/* clang-format on */

/* The chord is complete: its body applied to the parts' results, or its FAILURE stored. */
static void fire_chord(rs *s, const ocp_celery_msg *msg, redisReply *parts)
{
    json_t *body = json_object_get(msg->embed, "chord");
    size_t n = parts->elements;
    char **texts = ocp_xcalloc(n ? n : 1, sizeof *texts);
    size_t *lens = ocp_xcalloc(n ? n : 1, sizeof *lens);
    for (size_t i = 0; i < n; i++) {
        texts[i] = parts->element[i]->str;
        lens[i] = parts->element[i]->len;
    }
    char err[600], queue[300], id[64], *text = NULL;
    json_t *resl = ocp_celery_chord_results(texts, lens, n, err, sizeof err);
    int rc = resl ? ocp_celery_apply(body, resl, msg->id, msg->root_id, NULL, &text, queue, id, err,
                                     sizeof err)
                  : OCP_E_MESSAGE;
    if (rc == 0) {
        const char *a[] = {"LPUSH", queue, text};
        ocp__rd_must_write(s, 3, a, NULL);
        OCP_LOG(OCP_LOG_INFO, "chord %s complete (%zu parts): its body %s sent to %s", msg->group,
                n, id, queue);
    } else {
        /* Celery's chord_error_from_stack: the body fails with ChordError. */
        const char *cid =
            json_string_value(json_object_get(json_object_get(body, "options"), "task_id"));
        OCP_LOG(OCP_LOG_WARN, "chord %s: its body fails: %s", msg->group, err);
        if (cid && strlen(cid) < 200) {
            char *meta = ocp__rd_fail_meta(cid, NULL, OCP_FAIL_ENGINE, "ChordError",
                                           "celery.exceptions", err);
            ocp__rd_finish(s, cid, meta, NULL, NULL, NULL);
            free(meta);
        }
    }
    json_decref(resl);
    free(text);
    free(texts);
    free(lens);
}

/* Fills keys/args from a[k..] with the follow-ups of msg's result (SUCCESS only): its chain's
 * next, then its links. Returns how many. */
static int follow_ups(const ocp_celery_msg *msg, json_t *value, char *queues[MAX_FOLLOW],
                      char *texts[MAX_FOLLOW])
{
    json_t *chain = json_object_get(msg->embed, "chain");
    json_t *links = json_object_get(msg->embed, "callbacks");
    int n = 0;
    char err[300], id[64];
    if (json_is_array(chain) && json_array_size(chain) > 0) {
        size_t last = json_array_size(chain) - 1;
        json_t *rest = json_array();
        for (size_t i = 0; i < last; i++)
            json_array_append(rest, json_array_get(chain, i));
        queues[n] = ocp_xmalloc(300);
        if (ocp_celery_apply(json_array_get(chain, last), value, msg->id, msg->root_id, rest,
                             &texts[n], queues[n], id, err, sizeof err) == 0)
            n++;
        else {
            free(queues[n]);
            OCP_LOG(OCP_LOG_WARN, "task %s: its chain's next task is not sent: %s", msg->id, err);
        }
        json_decref(rest);
    }
    size_t i;
    json_t *sig;
    json_array_foreach(links, i, sig)
    {
        if (n == MAX_FOLLOW)
            break;
        queues[n] = ocp_xmalloc(300);
        if (ocp_celery_apply(sig, value, msg->id, msg->root_id, NULL, &texts[n], queues[n], id, err,
                             sizeof err) == 0)
            n++;
        else {
            free(queues[n]);
            OCP_LOG(OCP_LOG_WARN, "task %s: a linked callback is not sent: %s", msg->id, err);
        }
    }
    return n;
}

int ocp__rd_canvas_finish(rs *s, const rmsg *m, const char *meta, const char *tag,
                          const char *claim, const char *what, const char *state, json_t *value,
                          int *rc)
{
    ocp_celery_msg msg;
    char err[300];
    if (!m->raw || ocp_celery_parse(m->raw, strlen(m->raw), &msg, err, sizeof err) || !msg.embed) {
        ocp_celery_msg_fini(&msg);
        return 0;
    }
    json_t *chord = json_object_get(msg.embed, "chord");
    json_t *eb = json_object_get(msg.embed, "errbacks");
    int ok = strcmp(state, "SUCCESS") == 0;
    char *queues[MAX_FOLLOW], *texts[MAX_FOLLOW];
    int nf = ok ? follow_ups(&msg, value, queues, texts) : 0;
    int has_chord = json_is_object(chord) && msg.group;
    if (!ok && json_array_size(eb))
        OCP_LOG(OCP_LOG_WARN, "task %s: its errbacks (link_error) are not applied by ocrpool",
                msg.id);
    if (!nf && !has_chord) {
        ocp_celery_msg_fini(&msg);
        return 0;
    }
    char metakey[300], delkey[300], ex[32], label[700], j[300], t[300], sk[300], dk[300], ck[300],
        score[32], nfs[16];
    snprintf(metakey, sizeof metakey, META_PREFIX "%s", m->id);
    snprintf(delkey, sizeof delkey, "ocrpool.deliveries.%s", m->id);
    snprintf(ex, sizeof ex, "%.0f", s->expires);
    snprintf(label, sizeof label, "task %s: a late %s from %s", m->id, what, m->owner);
    snprintf(j, sizeof j, "celery-taskset-meta-%s.j", has_chord ? msg.group : "");
    snprintf(t, sizeof t, "celery-taskset-meta-%s.t", has_chord ? msg.group : "");
    snprintf(sk, sizeof sk, "celery-taskset-meta-%s.s", has_chord ? msg.group : "");
    snprintf(dk, sizeof dk, "celery-taskset-meta-%s.d", has_chord ? msg.group : "");
    snprintf(ck, sizeof ck, "celery-taskset-meta-%s.c", has_chord ? msg.group : "");
    if (msg.group_index >= 0)
        snprintf(score, sizeof score, "%.0f", msg.group_index);
    else
        snprintf(score, sizeof score, "+inf");
    snprintf(nfs, sizeof nfs, "%d", nf);
    char *part = has_chord ? ocp_celery_chord_part(m->id, state, value) : ocp_xstrdup("");
    const char *a[3 + 10 + 9 + 2 * MAX_FOLLOW];
    int k = 0, nkeys = 10 + nf;
    char nk[16];
    snprintf(nk, sizeof nk, "%d", nkeys);
    a[k++] = "EVAL";
    a[k++] = canvas_lua;
    a[k++] = nk;
    a[k++] = K_UNACKED;
    a[k++] = K_INDEX;
    a[k++] = K_OWNERS;
    a[k++] = metakey;
    a[k++] = delkey;
    a[k++] = j;
    a[k++] = t;
    a[k++] = sk;
    a[k++] = dk;
    a[k++] = ck;
    for (int i = 0; i < nf; i++)
        a[k++] = queues[i];
    a[k++] = tag ? tag : "";
    a[k++] = meta;
    a[k++] = ex;
    a[k++] = claim && tag ? claim : "";
    a[k++] = label;
    a[k++] = part;
    a[k++] = score;
    a[k++] = nfs;
    a[k++] = m->id;
    for (int i = 0; i < nf; i++)
        a[k++] = texts[i];
    *rc = 0;
    if (!s->outbox && ocp__rd_conn(s) == 0) {
        redisReply *r = ocp__rd_cmdv(s, k, a, NULL);
        if (!r) {
            *rc = ocp__rd_must_write(s, k, a, NULL); /* the connection broke: later */
        } else {
            if (r->type == REDIS_REPLY_ERROR)
                *rc = OCP_E_BROKER;
            else if (!ocp__rd_stale(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                     r->element[1]->integer == 1 && r->element[2]->type == REDIS_REPLY_ARRAY)
                fire_chord(s, &msg, r->element[2]);
            freeReplyObject(r);
        }
    } else {
        *rc = ocp__rd_must_write(s, k, a, NULL);
        if (has_chord)
            OCP_LOG(OCP_LOG_WARN,
                    "task %s: stored once Redis is back; if it completes chord %s, the chord's "
                    "body is not sent (its answer is lost with the connection)",
                    m->id, msg.group);
    }
    for (int i = 0; i < nf; i++) {
        free(queues[i]);
        free(texts[i]);
    }
    free(part);
    ocp_celery_msg_fini(&msg);
    return 1;
}
