/*
 * celery.c: Celery protocol v2 messages and result metas (celery.h).
 */
#include "broker/celery.h"
#include "broker/broker.h"
#include "core/error.h"
#include "core/failure.h"
#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void ocp_celery_msg_fini(ocp_celery_msg *m)
{
    json_decref(m->root);
    json_decref(m->args);
    json_decref(m->kwargs);
    json_decref(m->embed);
    memset(m, 0, sizeof *m);
}

double ocp_iso8601_parse(const char *s)
{
    int Y, M, D, h, mi, n = 0;
    double sec;
    if (!s || sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%lf%n", &Y, &M, &D, &h, &mi, &sec, &n) != 6)
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || sec < 0 || sec >= 61)
        return -1;
    const char *z = s + n;
    double off = 0;
    if (*z == 'Z' || *z == 'z') {
        z++;
    } else if (*z == '+' || *z == '-') {
        int oh, om = 0, k = 0;
        if (sscanf(z + 1, "%2d:%2d%n", &oh, &om, &k) == 2 ||
            sscanf(z + 1, "%2d%2d%n", &oh, &om, &k) == 2) {
            off = (oh * 3600.0 + om * 60.0) * (*z == '-' ? -1 : 1);
            z += 1 + k;
        } else {
            return -1;
        }
    }
    if (*z)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = mi};
    double whole = floor(sec);
    tm.tm_sec = (int)whole;
    return (double)timegm(&tm) + (sec - whole) - off;
}

void ocp_iso8601_format(double t, char out[40])
{
    time_t s = (time_t)floor(t);
    long us = lround((t - (double)s) * 1e6);
    if (us >= 1000000) {
        s++;
        us -= 1000000;
    }
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%06d", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(us % 1000000));
}

/* A header that may be null or an ISO time; -1 when it is neither. */
static double header_time(json_t *h, const char *key)
{
    json_t *v = json_object_get(h, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_number(v)) /* a few producers send epoch seconds */
        return json_number_value(v) > 0 ? json_number_value(v) : -1;
    return ocp_iso8601_parse(json_string_value(v));
}

static double limit_value(json_t *v)
{
    return json_is_number(v) && json_number_value(v) > 0 ? json_number_value(v) : 0;
}

int ocp_celery_parse(const char *raw, size_t len, ocp_celery_msg *m, char *err, size_t errlen)
{
    json_error_t je;
    memset(m, 0, sizeof *m);
    m->root = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &je);
    if (!m->root)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "not JSON: %s", je.text);
    json_t *hd = json_object_get(m->root, "headers");
    json_t *pr = json_object_get(m->root, "properties");
    json_t *body = json_object_get(m->root, "body");
    if (!json_is_object(m->root) || !json_is_object(hd))
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "no headers object");
    m->id = json_string_value(json_object_get(hd, "id"));
    if (!m->id || !*m->id || strlen(m->id) > 255) {
        m->id = NULL;
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "headers.id: not a task id");
    }
    m->task = json_string_value(json_object_get(hd, "task"));
    if (!m->task)
        return ocp_errf(OCP_E_MESSAGE, err, errlen,
                        "headers.task missing: not a Celery protocol 2 message");
    /* Bounded as the id is: the chord's Redis keys are the group id plus a few bytes, built in
     * fixed buffers (redis_canvas.c); a longer one would cut them all to one key. */
    m->group = json_string_value(json_object_get(hd, "group"));
    if (m->group && (!*m->group || strlen(m->group) > 255)) {
        m->group = NULL;
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "headers.group: not 1 to 255 bytes");
    }
    m->root_id = json_string_value(json_object_get(hd, "root_id"));
    json_t *gi = json_object_get(hd, "group_index");
    m->group_index =
        json_is_integer(gi) && json_integer_value(gi) >= 0 ? (double)json_integer_value(gi) : -1;
    if ((m->eta = header_time(hd, "eta")) < 0)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "headers.eta: not an ISO 8601 time");
    if ((m->expires = header_time(hd, "expires")) < 0)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "headers.expires: not an ISO 8601 time");
    json_t *tl = json_object_get(hd, "timelimit");
    if (json_is_array(tl)) {
        m->time_limit = limit_value(json_array_get(tl, 0)); /* [hard, soft] */
        m->soft_time_limit = limit_value(json_array_get(tl, 1));
    }
    if (pr && !json_is_object(pr))
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "properties: not an object");
    m->priority = (int)json_integer_value(json_object_get(pr, "priority"));
    const char *ct = json_string_value(json_object_get(m->root, "content-type"));
    if (ct && strcmp(ct, "application/json") != 0)
        return ocp_errf(OCP_E_MESSAGE, err, errlen,
                        "content-type %s: only application/json is accepted (task_serializer = "
                        "'json')",
                        ct);
    if (!json_is_string(body))
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "body: not a string");
    const char *enc = json_string_value(json_object_get(pr, "body_encoding"));
    const char *btxt = json_string_value(body);
    size_t blen = json_string_length(body);
    unsigned char *dec = NULL;
    if (enc && strcmp(enc, "base64") == 0) {
        dec = ocp_b64_decode(btxt, blen, &blen);
        if (!dec)
            return ocp_errf(OCP_E_MESSAGE, err, errlen, "body: bad base64");
        btxt = (const char *)dec;
    } else if (enc) {
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "body_encoding %s: not base64", enc);
    }
    json_t *b = json_loadb(btxt, blen, 0, &je);
    free(dec);
    if (!b)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "body: not JSON: %s", je.text);
    json_t *a = json_array_get(b, 0), *k = json_array_get(b, 1);
    if (!json_is_array(b) || json_array_size(b) != 3 || !json_is_array(a) || !json_is_object(k)) {
        json_decref(b);
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "body: not [args, kwargs, embed]");
    }
    m->args = json_incref(a);
    m->kwargs = json_incref(k);
    json_t *e = json_array_get(b, 2);
    m->embed = json_is_object(e) ? json_incref(e) : NULL;
    json_decref(b);
    return 0;
}

/* Sets a TypeError or ValueError and returns OCP_E_MESSAGE. */
static int arg_error(char exc_type[32], const char *type, char *err, size_t errlen, const char *fmt,
                     const char *what) __attribute__((format(printf, 5, 0)));
static int arg_error(char exc_type[32], const char *type, char *err, size_t errlen, const char *fmt,
                     const char *what)
{
    snprintf(exc_type, 32, "%s", type);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    return ocp_errf(OCP_E_MESSAGE, err, errlen, fmt, what);
#pragma GCC diagnostic pop
}

static int int_arg(json_t *v, const char *name, long lo, long hi, long *out, char exc_type[32],
                   char *err, size_t errlen)
{
    if (!json_is_integer(v))
        return arg_error(exc_type, "TypeError", err, errlen, "%s: not an integer", name);
    if (json_integer_value(v) < lo || json_integer_value(v) > hi)
        return arg_error(exc_type, "ValueError", err, errlen, "%s: out of range", name);
    *out = (long)json_integer_value(v);
    return 0;
}

/* Checks the names of the positional and keyword arguments (Python's rules for
 * ocr_page(source, lang, **known)); *src and *lang from either (borrowed, may be NULL). */
static int check_args(const ocp_celery_msg *m, json_t **src, json_t **lang, char exc_type[32],
                      char *err, size_t errlen)
{
    static const char *const known[] = {"source", "lang",   "page",      "formats",
                                        "max_image_size", "width", "height", "output_pdf"};
    const size_t nknown = sizeof known / sizeof known[0];
    const char *key;
    json_t *v;
    size_t na = json_array_size(m->args);
    if (na > 2) {
        snprintf(exc_type, 32, "TypeError");
        return ocp_errf(OCP_E_MESSAGE, err, errlen,
                        "ocr_page() takes 2 positional arguments (source, lang) but %zu were "
                        "given",
                        na);
    }
    *src = json_array_get(m->args, 0);
    *lang = json_array_get(m->args, 1);
    json_object_foreach(m->kwargs, key, v)
    {
        size_t i = 0;
        while (i < nknown && strcmp(key, known[i]) != 0)
            i++;
        if (i == nknown)
            return arg_error(exc_type, "TypeError", err, errlen,
                             "ocr_page() got an unexpected keyword argument '%s'", key);
        if ((i == 0 && *src) || (i == 1 && *lang))
            return arg_error(exc_type, "TypeError", err, errlen,
                             "ocr_page() got multiple values for argument '%s'", key);
    }
    if (!*src)
        *src = json_object_get(m->kwargs, "source");
    if (!*lang)
        *lang = json_object_get(m->kwargs, "lang");
    return 0;
}

/* source (a path, or inline bytes under max_inline) and lang into p. */
static int source_lang_args(json_t *src, json_t *lang, const char *default_lang, size_t max_inline,
                            json_t *p, char exc_type[32], char *err, size_t errlen)
{
    if (json_is_string(src) && json_string_length(src) > 0) {
        json_object_set(p, "source", src);
    } else if (json_is_object(src) && json_is_string(json_object_get(src, "b64"))) {
        json_t *b = json_object_get(src, "b64");
        if (json_string_length(b) / 4 * 3 > max_inline) {
            snprintf(exc_type, 32, "ValueError");
            return ocp_errf(OCP_E_MESSAGE, err, errlen,
                            "source: inline bytes over the %zu byte limit: put the page on "
                            "shared storage and send its path",
                            max_inline);
        }
        json_object_set_new(p, "source", json_string("inline"));
        json_object_set(p, "data_b64", b);
    } else {
        return arg_error(exc_type, "TypeError", err, errlen,
                         "%s: a path or {\"b64\": \"...\"} is needed", "source");
    }
    if (lang && !json_is_null(lang)) {
        if (!json_is_string(lang) || json_string_length(lang) == 0 ||
            json_string_length(lang) > 200)
            return arg_error(exc_type, "TypeError", err, errlen, "%s: not a language string",
                             "lang");
        json_object_set(p, "lang", lang);
    } else {
        json_object_set_new(p, "lang", json_string(default_lang));
    }
    return 0;
}

/* page (1-based outside, 0-based in p), max_image_size, width and height into p. */
static int number_args(json_t *kwargs, json_t *p, char exc_type[32], char *err, size_t errlen)
{
    json_t *v;
    long page = 1, n;
    int rc;
    if ((v = json_object_get(kwargs, "page")) &&
        (rc = int_arg(v, "page (1 = the first)", 1, 1000000, &page, exc_type, err, errlen)))
        return rc;
    json_object_set_new(p, "page", json_integer(page - 1));
    if ((v = json_object_get(kwargs, "max_image_size"))) {
        /* 1 and up: a task may shrink its page (the worker keeps the node's own
         * max-image-size as the most), never ask for it unresized (0). */
        if ((rc = int_arg(v, "max_image_size (1 to 65535)", 1, 65535, &n, exc_type, err,
                          errlen)))
            return rc;
        json_object_set_new(p, "max_image_size", json_integer(n));
    }
    static const char *const dims[2] = {"width", "height"};
    for (int i = 0; i < 2; i++) {
        if ((v = json_object_get(kwargs, dims[i]))) {
            if ((rc = int_arg(v, dims[i], 1, 1000000, &n, exc_type, err, errlen)))
                return rc;
            json_object_set_new(p, dims[i], json_integer(n));
        }
    }
    return 0;
}

/* formats (a list of names, or one string of names separated by commas) into p. */
static int formats_arg(json_t *v, json_t *p, char exc_type[32], char *err, size_t errlen)
{
    static const char *const names[] = {"txt", "json", "hocr", "alto", "tsv"};
    const size_t nnames = sizeof names / sizeof names[0];
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) && !json_is_array(v))
        return arg_error(exc_type, "TypeError", err, errlen, "%s: a list of format names",
                         "formats");
    if (json_is_array(v) && json_array_size(v) > nnames)
        return arg_error(exc_type, "ValueError", err, errlen,
                         "%s: at most 5 names, each once (txt, json, hocr, alto, tsv)", "formats");
    json_t *list = json_array();
    char *copy = json_is_string(v) ? ocp_xstrdup(json_string_value(v)) : NULL, *save = NULL;
    const char *f = copy ? strtok_r(copy, ",", &save) : NULL;
    int rc = 0;
    unsigned seen = 0;
    for (size_t idx = 0;;) {
        if (!copy) {
            if (idx >= json_array_size(v))
                break;
            f = json_string_value(json_array_get(v, idx++));
        } else if (!f) {
            break;
        }
        size_t i = 0;
        while (f && i < nnames && strcmp(f, names[i]) != 0)
            i++;
        if (i == nnames || !f) {
            rc = arg_error(exc_type, "ValueError", err, errlen,
                           "formats: '%s' is not one of txt, json, hocr, alto, tsv",
                           f ? f : "(not a string)");
            break;
        }
        if (seen & (1u << i)) {
            rc = arg_error(exc_type, "ValueError", err, errlen, "formats: '%s' given twice", f);
            break;
        }
        seen |= 1u << i;
        json_array_append_new(list, json_string(f));
        if (copy)
            f = strtok_r(NULL, ",", &save);
    }
    free(copy);
    if (rc)
        json_decref(list);
    else
        json_object_set_new(p, "formats", list);
    return rc;
}

/* output_pdf (where the node writes the document's searchable PDF once every page of the
 * message's group is done: an absolute path of text) into p. */
static int output_pdf_arg(json_t *v, json_t *p, char exc_type[32], char *err, size_t errlen)
{
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) != strlen(s) || s[0] != '/' || strlen(s) > 4000)
        return arg_error(exc_type, "ValueError", err, errlen, "%s: an absolute path",
                         "output_pdf");
    json_object_set(p, "output_pdf", v);
    return 0;
}

int ocp_celery_payload(const ocp_celery_msg *m, const char *default_lang, size_t max_inline,
                       char **payload, char exc_type[32], char *err, size_t errlen)
{
    json_t *src = NULL, *lang = NULL;
    *payload = NULL;
    int rc = check_args(m, &src, &lang, exc_type, err, errlen);
    if (rc)
        return rc;
    json_t *p = json_object();
    if ((rc = source_lang_args(src, lang, default_lang, max_inline, p, exc_type, err, errlen)) ||
        (rc = number_args(m->kwargs, p, exc_type, err, errlen)) ||
        (rc = formats_arg(json_object_get(m->kwargs, "formats"), p, exc_type, err, errlen)) ||
        (rc = output_pdf_arg(json_object_get(m->kwargs, "output_pdf"), p, exc_type, err, errlen))) {
        json_decref(p);
        return rc;
    }
    /* Per-task time limits ride along in the payload. */
    if (m->time_limit > 0)
        json_object_set_new(p, "time_limit", json_real(m->time_limit));
    if (m->soft_time_limit > 0)
        json_object_set_new(p, "soft_time_limit", json_real(m->soft_time_limit));
    *payload = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return 0;
}

int ocp_celery_args_from_payload(const char *payload, json_t **args, json_t **kwargs)
{
    json_t *p = json_loads(payload, 0, NULL);
    json_t *src = json_object_get(p, "source");
    if (!json_is_object(p) || !json_is_string(src)) {
        json_decref(p);
        return OCP_E_MESSAGE;
    }
    *args = json_pack("[O, O]", src, json_object_get(p, "lang"));
    *kwargs = json_object();
    json_t *pg = json_object_get(p, "page");
    json_object_set_new(*kwargs, "page", json_integer(json_integer_value(pg) + 1));
    static const char *const keep[] = {"max_image_size", "width", "height", "formats",
                                       "output_pdf"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        json_t *v = json_object_get(p, keep[i]);
        /* max_image_size 0 (submit --max-image-size 0: never resize) is not sent: a task may
         * only shrink a page, so the node's own setting applies. */
        if (v && !(i == 0 && json_integer_value(v) < 1))
            json_object_set(*kwargs, keep[i], v);
    }
    json_decref(p);
    return 0;
}

void ocp_celery_queue_key(const char *queue, int priority, char *out, size_t len)
{
    /* kombu's priority_steps [0, 3, 6, 9]: a priority falls to the step at or below it. */
    int step = priority >= 9 ? 9 : priority >= 6 ? 6 : priority >= 3 ? 3 : 0;
    if (step == 0)
        snprintf(out, len, "%s", queue);
    else
        snprintf(out, len, "%s%s%d", queue, OCP_CELERY_PRI_SEP, step);
}

char *ocp_celery_message(const ocp_celery_new *n)
{
    char host[128] = "localhost", origin[200], tag[37], reply[37];
    gethostname(host, sizeof host - 1);
    snprintf(origin, sizeof origin, "%d@%s", (int)getpid(), host);
    ocp_uuid4(tag);
    ocp_uuid4(reply);
    json_t *embed = json_pack("{s:n, s:n, s:n, s:n}", "callbacks", "errbacks", "chain", "chord");
    json_t *body = json_pack("[O, O, o]", n->args, n->kwargs, embed);
    char *btxt = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    char *b64 = ocp_b64_encode(btxt, strlen(btxt));
    char *argsrepr = json_dumps(n->args, JSON_COMPACT | JSON_ENCODE_ANY);
    char *kwrepr = json_dumps(n->kwargs, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *headers = json_pack(
        "{s:s, s:s, s:s, s:n, s:n, s:n, s:o, s:n, s:i, s:[n, n], s:s, s:n, s:s, s:s, s:s, s:b}",
        "lang", "py", "task", n->task, "id", n->id, "shadow", "eta", "expires", "group",
        n->group ? json_string(n->group) : json_null(), "group_index", "retries", 0, "timelimit",
        "root_id", n->id, "parent_id", "argsrepr", argsrepr, "kwargsrepr", kwrepr, "origin", origin,
        "ignore_result", 0);
    json_t *props = json_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:i, s:s, s:s}", "correlation_id",
                              n->id, "reply_to", reply, "delivery_mode", 2, "delivery_info",
                              "exchange", "", "routing_key", n->queue, "priority", n->priority,
                              "body_encoding", "base64", "delivery_tag", tag);
    json_t *msg =
        json_pack("{s:s, s:s, s:s, s:o, s:o}", "body", b64, "content-encoding", "utf-8",
                  "content-type", "application/json", "headers", headers, "properties", props);
    char *out = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    json_decref(body);
    free(btxt);
    free(b64);
    free(argsrepr);
    free(kwrepr);
    return out;
}

char *ocp_celery_meta(const char *id, const char *status, json_t *result, const char *group,
                      ocp_failure failure, bool buried)
{
    char when[40];
    int ready = strcmp(status, "SUCCESS") == 0 || strcmp(status, "FAILURE") == 0 ||
                strcmp(status, "REVOKED") == 0;
    ocp_iso8601_format(ocp_wall_now(), when);
    json_t *m = json_pack("{s:s, s:o, s:n, s:[], s:o, s:s}", "status", status, "result",
                          result ? result : json_null(), "traceback", "children", "date_done",
                          ready ? json_string(when) : json_null(), "task_id", id);
    if (group)
        json_object_set_new(m, "group_id", json_string(group));
    if (failure != OCP_FAIL_NONE)
        json_object_set_new(m, "ocrpool_failure", json_string(ocp_failure_name(failure)));
    if (buried)
        json_object_set_new(m, "ocrpool_buried", json_true());
    char *out = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return out;
}

json_t *ocp_celery_exc(const char *type, const char *module, const char *message)
{
    return json_pack("{s:s, s:[s], s:s}", "exc_type", type, "exc_message", message, "exc_module",
                     module);
}

/* The kinds with a Celery exception of their own; every other kind is ocrpool's OCRError. */
static const struct {
    ocp_failure kind;
    const char *type, *module;
} exc_table[] = {
    {OCP_FAIL_MEMORY_LIMIT, "MemoryLimitExceeded", "ocrpool"},
    {OCP_FAIL_TIME_LIMIT, "TimeLimitExceeded", "celery.exceptions"},
    {OCP_FAIL_SOFT_TIME_LIMIT, "SoftTimeLimitExceeded", "celery.exceptions"},
    {OCP_FAIL_CRASHED, "WorkerLostError", "billiard.exceptions"},
    {OCP_FAIL_REVOKED, "TaskRevokedError", "celery.exceptions"},
};

void ocp_celery_exc_of(ocp_failure kind, const char **type, const char **module)
{
    for (size_t i = 0; i < sizeof exc_table / sizeof exc_table[0]; i++) {
        if (exc_table[i].kind == kind) {
            *type = exc_table[i].type;
            *module = exc_table[i].module;
            return;
        }
    }
    *type = "OCRError";
    *module = "ocrpool";
}

ocp_failure ocp_celery_failure_of_exc(const char *type)
{
    static const char *const refused[] = {"MalformedMessage", "NotRegistered", "TypeError",
                                          "ValueError"};
    if (!type)
        return OCP_FAIL_ENGINE;
    for (size_t i = 0; i < sizeof exc_table / sizeof exc_table[0]; i++)
        if (strcmp(type, exc_table[i].type) == 0)
            return exc_table[i].kind;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strcmp(type, refused[i]) == 0)
            return OCP_FAIL_MALFORMED;
    return OCP_FAIL_ENGINE;
}

/* ---- reading a meta back: a scanner of the top level ------------------------------------ */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The end of the JSON string that opens at p ('"'); NULL when it does not close. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The end of the JSON value that starts at p (its brackets matched, its strings closed, no
 * deeper than 64; not checked further); NULL when it is not so before end, with *deep set
 * when it is only too deep for this scanner. */
static const char *skip_value(const char *p, const char *end, int *deep)
{
    char open[64];
    int depth = 0;
    if (p < end && *p != '{' && *p != '[' && *p != '"') { /* a number or a literal */
        while (p < end && !strchr(",}] \t\n\r", *p))
            p++;
        return p;
    }
    while (p < end) {
        if (*p == '"') {
            if (!(p = skip_string(p, end)))
                return NULL;
            if (depth == 0)
                return p;
            continue;
        }
        if (*p == '{' || *p == '[') {
            if (depth == (int)sizeof open) {
                *deep = 1;
                return NULL;
            }
            open[depth++] = *p == '{' ? '}' : ']';
        } else if (*p == '}' || *p == ']') {
            if (*p != open[--depth])
                return NULL;
            if (depth == 0)
                return p + 1;
        }
        p++;
    }
    return NULL;
}

/* A small member's value, parsed (new reference; NULL when it is not JSON). */
static json_t *member(const char *v, const char *vend)
{
    return json_loadb(v, (size_t)(vend - v), JSON_DECODE_ANY, NULL);
}

static char *member_str(const char *v, const char *vend)
{
    json_t *j = member(v, vend);
    char *out = json_is_string(j) ? ocp_xstrdup(json_string_value(j)) : NULL;
    json_decref(j);
    return out;
}

/* What the result member says for a state other than SUCCESS (an exception, or STARTED's
 * {pid, hostname}): small, so parsed. */
static int read_non_success(const char *v, const char *vend, ocp_celery_meta_info *i)
{
    json_t *r = member(v, vend);
    if (!r)
        return OCP_E_MESSAGE; /* not JSON */
    const char *t = json_string_value(json_object_get(r, "exc_type"));
    json_t *msg = json_array_get(json_object_get(r, "exc_message"), 0);
    i->exc_type = t ? ocp_xstrdup(t) : NULL;
    i->exc_message = json_is_string(msg) ? ocp_xstrdup(json_string_value(msg)) : NULL;
    i->pid = (int)json_integer_value(json_object_get(r, "pid"));
    json_decref(r);
    return 0;
}

/* What the status makes of the result member (res .. res_end, NULL when none) and the
 * ocrpool_failure member (failure, NULL when none). A result that is not JSON: OCP_E_MESSAGE
 * (a SUCCESS result is checked once here, and then passed on as its text). */
static int read_result(const char *res, const char *res_end, const char *failure,
                       ocp_celery_meta_info *out)
{
    if (strcmp(out->status, "SUCCESS") == 0) {
        if (!res) {
            out->result = ocp_xstrdup("null");
            return 0;
        }
        json_t *check = member(res, res_end);
        if (!check)
            return OCP_E_MESSAGE;
        json_decref(check);
        out->result = ocp_xstrndup(res, (size_t)(res_end - res));
        return 0;
    }
    if (res && read_non_success(res, res_end, out))
        return OCP_E_MESSAGE;
    if (strcmp(out->status, "FAILURE") == 0 || strcmp(out->status, "REVOKED") == 0) {
        out->failure =
            failure ? ocp_failure_parse(failure) : ocp_celery_failure_of_exc(out->exc_type);
        if (!failure)
            out->buried = out->exc_type && strcmp(out->exc_type, "WorkerLostError") == 0;
    }
    return 0;
}

/* A meta nested deeper than the scanner follows: parsed whole (rare: a result of a deep
 * structure), with the same reading as the scanner's. */
static int read_parsed(const char *text, size_t len, ocp_celery_meta_info *out)
{
    json_t *root = json_loadb(text, len, 0, NULL);
    const char *status = json_string_value(json_object_get(root, "status"));
    const char *group = json_string_value(json_object_get(root, "group_id"));
    const char *dd = json_string_value(json_object_get(root, "date_done"));
    json_t *res = json_object_get(root, "result");
    char *rtext = res ? json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    int rc = OCP_E_MESSAGE;
    if (status && (!res || rtext)) {
        out->status = ocp_xstrdup(status);
        out->group = group ? ocp_xstrdup(group) : NULL;
        out->buried = json_is_true(json_object_get(root, "ocrpool_buried"));
        double t = dd ? ocp_iso8601_parse(dd) : 0;
        out->date_done = t > 0 ? t : 0;
        rc = read_result(rtext, rtext ? rtext + strlen(rtext) : NULL,
                         json_string_value(json_object_get(root, "ocrpool_failure")), out);
    }
    free(rtext);
    json_decref(root);
    if (rc)
        ocp_celery_meta_info_fini(out);
    return rc;
}

int ocp_celery_meta_read(const char *text, size_t len, ocp_celery_meta_info *out)
{
    const char *p = text, *end = text + len, *res = NULL, *res_end = NULL;
    char *failure = NULL;
    int deep = 0;
    memset(out, 0, sizeof *out);
    p = skip_ws(p, end);
    if (p == end || *p++ != '{')
        return OCP_E_MESSAGE;
    for (p = skip_ws(p, end); p < end && *p != '}';) {
        const char *k = p, *kend = *p == '"' ? skip_string(p, end) : NULL;
        if (!kend || (p = skip_ws(kend, end)) == end || *p != ':')
            goto bad;
        const char *v = skip_ws(p + 1, end), *vend = skip_value(v, end, &deep);
        if (!vend || vend == v)
            goto bad;
        char *key = member_str(k, kend);
        if (key && strcmp(key, "status") == 0 && !out->status)
            out->status = member_str(v, vend);
        else if (key && strcmp(key, "group_id") == 0 && !out->group)
            out->group = member_str(v, vend);
        else if (key && strcmp(key, "ocrpool_failure") == 0 && !failure)
            failure = member_str(v, vend);
        else if (key && strcmp(key, "ocrpool_buried") == 0)
            out->buried = vend - v == 4 && memcmp(v, "true", 4) == 0;
        else if (key && strcmp(key, "date_done") == 0 && !out->date_done) {
            char *dd = member_str(v, vend);
            double t = dd ? ocp_iso8601_parse(dd) : 0;
            out->date_done = t > 0 ? t : 0;
            free(dd);
        } else if (key && strcmp(key, "result") == 0) {
            res = v;
            res_end = vend;
        }
        free(key);
        p = skip_ws(vend, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        else if (p < end && *p != '}')
            goto bad;
    }
    if (p == end || !out->status || read_result(res, res_end, failure, out))
        goto bad;
    free(failure);
    return 0;
bad:
    free(failure);
    ocp_celery_meta_info_fini(out);
    return deep ? read_parsed(text, len, out) : OCP_E_MESSAGE;
}

void ocp_celery_meta_info_fini(ocp_celery_meta_info *i)
{
    free(i->status);
    free(i->group);
    free(i->result);
    free(i->exc_type);
    free(i->exc_message);
    memset(i, 0, sizeof *i);
}
