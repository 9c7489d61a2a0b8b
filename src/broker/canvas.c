/*
 * canvas.c: what a finished task sets off in Celery's canvas (celery.h),
 * as pure functions on JSON so each rule is unit tested; redis_meta.c
 * sends what they build. Celery's worker, after a task's result is
 * stored, applies the next signature of the message's embedded chain
 * (the last element: the chain is kept in reverse) to the result, applies
 * each linked callback to it, and, when the task is part of a chord's
 * header, adds [1, id, state, result] to the group's ".j" sorted set
 * (score: group_index) and applies the chord's body to the list of the
 * results once the set holds the chord's size (the group's ".s" plus
 * ".t"). Only plain task signatures are applied: a body that is itself a
 * group or chain is refused with that reason.
 */
#include "broker/celery.h"
#include "core/error.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *opt_str(json_t *opts, const char *key)
{
    const char *v = json_string_value(json_object_get(opts, key));
    return v && *v && strlen(v) < 256 ? v : NULL;
}

/* The body [args, kwargs, embed] of the message applying sig. New reference. */
static json_t *apply_body(json_t *sig, json_t *retval, json_t *chain)
{
    json_t *opts = json_object_get(sig, "options");
    json_t *args = json_object_get(sig, "args");
    json_t *kwargs = json_object_get(sig, "kwargs");
    json_t *a = json_array();
    if (retval && !json_is_true(json_object_get(sig, "immutable")))
        json_array_append(a, retval);
    if (json_is_array(args))
        json_array_extend(a, args);
    json_t *link = json_object_get(opts, "link"), *err = json_object_get(opts, "link_error");
    json_t *chord = json_object_get(opts, "chord");
    json_t *embed =
        json_pack("{s:O, s:O, s:O, s:O}", "callbacks", json_is_array(link) ? link : json_null(),
                  "errbacks", json_is_array(err) ? err : json_null(), "chain",
                  json_is_array(chain) && json_array_size(chain) ? chain : json_null(), "chord",
                  json_is_object(chord) ? chord : json_null());
    return json_pack("[o, o, o]", a, json_is_object(kwargs) ? json_incref(kwargs) : json_object(),
                     embed);
}

int ocp_celery_apply(json_t *sig, json_t *retval, const char *parent_id, const char *root_id,
                     json_t *chain, char **msg, char queue[300], char id[64], char *err,
                     size_t errlen)
{
    *msg = NULL;
    json_t *st = json_object_get(sig, "subtask_type");
    const char *task = json_string_value(json_object_get(sig, "task"));
    if (!json_is_object(sig) || (st && !json_is_null(st)) || !task || !*task || strlen(task) > 255)
        return ocp_errf(OCP_E_MESSAGE, err, errlen,
                        "ocrpool applies plain task signatures only (not a group, chain or "
                        "chord as a callback)");
    json_t *opts = json_object_get(sig, "options");
    const char *tid = opt_str(opts, "task_id");
    if (tid)
        snprintf(id, 64, "%.63s", tid);
    else
        ocp_uuid4(id);
    const char *q = opt_str(opts, "queue");
    if (!q)
        q = opt_str(opts, "routing_key");
    json_t *pri = json_object_get(opts, "priority");
    int priority = json_is_integer(pri) ? (int)json_integer_value(pri) : 0;
    ocp_celery_queue_key(q ? q : "celery", priority < 0 ? 0 : priority, queue, 300);
    const char *group = opt_str(opts, "group_id");
    json_t *gi = json_object_get(opts, "group_index");

    char host[128] = "localhost", origin[200], tag[37];
    gethostname(host, sizeof host - 1);
    snprintf(origin, sizeof origin, "%d@%s", (int)getpid(), host);
    ocp_uuid4(tag);
    json_t *body = apply_body(sig, retval, chain);
    char *btxt = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    char *b64 = ocp_b64_encode(btxt, strlen(btxt));
    char *argsrepr = json_dumps(json_array_get(body, 0), JSON_COMPACT | JSON_ENCODE_ANY);
    char *kwrepr = json_dumps(json_array_get(body, 1), JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *headers = json_pack(
        "{s:s, s:s, s:s, s:n, s:n, s:n, s:o, s:o, s:i, s:[n, n], s:s, s:s, s:s, s:s, s:s, s:b}",
        "lang", "py", "task", task, "id", id, "shadow", "eta", "expires", "group",
        group ? json_string(group) : json_null(), "group_index",
        json_is_integer(gi) ? json_incref(gi) : json_null(), "retries", 0, "timelimit", "root_id",
        root_id ? root_id : id, "parent_id", parent_id, "argsrepr", argsrepr, "kwargsrepr", kwrepr,
        "origin", origin, "ignore_result", 0);
    const char *rk = q ? q : "celery";
    json_t *props =
        json_pack("{s:s, s:i, s:{s:s, s:s}, s:i, s:s, s:s}", "correlation_id", id, "delivery_mode",
                  2, "delivery_info", "exchange", "", "routing_key", rk, "priority",
                  priority < 0 ? 0 : priority, "body_encoding", "base64", "delivery_tag", tag);
    json_t *m =
        json_pack("{s:s, s:s, s:s, s:o, s:o}", "body", b64, "content-encoding", "utf-8",
                  "content-type", "application/json", "headers", headers, "properties", props);
    *msg = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    json_decref(body);
    free(btxt);
    free(b64);
    free(argsrepr);
    free(kwrepr);
    return 0;
}

char *ocp_celery_chord_part(const char *id, const char *state, json_t *result)
{
    json_t *a = json_pack("[i, s, s, O]", 1, id, state, result ? result : json_null());
    char *s = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(a);
    return s;
}

json_t *ocp_celery_chord_results(char *const *parts, const size_t *lens, size_t n, char *err,
                                 size_t errlen)
{
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_loadb(parts[i], lens[i], 0, NULL);
        const char *id = json_string_value(json_array_get(p, 1));
        const char *state = json_string_value(json_array_get(p, 2));
        if (!json_is_array(p) || json_array_size(p) != 4 || !id || !state) {
            json_decref(p);
            json_decref(out);
            ocp_errf(OCP_E_MESSAGE, err, errlen, "a chord part is not [1, id, state, result]");
            return NULL;
        }
        if (strcmp(state, "FAILURE") == 0 || strcmp(state, "REVOKED") == 0) {
            json_t *r = json_array_get(p, 3);
            ocp_errf(OCP_E_MESSAGE, err, errlen, "Dependency %.100s raised %.60s(%.300s)", id,
                     json_string_value(json_object_get(r, "exc_type"))
                         ? json_string_value(json_object_get(r, "exc_type"))
                         : "Exception",
                     json_string_value(json_array_get(json_object_get(r, "exc_message"), 0))
                         ? json_string_value(json_array_get(json_object_get(r, "exc_message"), 0))
                         : "");
            json_decref(p);
            json_decref(out);
            return NULL;
        }
        json_array_append(out, json_array_get(p, 3));
        json_decref(p);
    }
    return out;
}
