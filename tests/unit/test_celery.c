/*
 * test_celery.c: base64, ISO 8601 times, and Celery protocol v2 messages
 * and result metas (src/broker/celery.c): what ocrpool writes parses back,
 * a message as Celery 5's send_task writes it parses, every kind of bad
 * message and bad argument gives its reason, and a meta read back gives the
 * result's stored text as it is and the failure kind that was written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/celery.h"
#include "core/error.h"
#include "core/util.h"

static void test_b64(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = ocp_b64_encode(plain[i], strlen(plain[i]));
        assert_string_equal(e, coded[i]);
        size_t n = 99;
        unsigned char *d = ocp_b64_decode(e, strlen(e), &n);
        assert_non_null(d);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(d, plain[i], n);
        free(d);
        free(e);
    }
    size_t n;
    unsigned char *d = ocp_b64_decode("Zm9v\nYmFy", 9, &n); /* line breaks are skipped */
    assert_non_null(d);
    assert_int_equal(n, 6);
    free(d);
    assert_null(ocp_b64_decode("Zm9v!", 5, &n));  /* not the alphabet */
    assert_null(ocp_b64_decode("Zg==Zg", 6, &n)); /* data after padding */
    assert_null(ocp_b64_decode("Z", 1, &n));      /* a lone sextet */
}

static void test_iso8601(void **state)
{
    (void)state;
    assert_true(fabs(ocp_iso8601_parse("1970-01-01T00:00:00") - 0) < 1e-9);
    assert_true(fabs(ocp_iso8601_parse("2026-11-27T01:44:29.5+00:00") - 1795743869.5) < 1e-6);
    assert_true(fabs(ocp_iso8601_parse("2026-11-27T01:44:29.5Z") - 1795743869.5) < 1e-6);
    assert_true(fabs(ocp_iso8601_parse("2026-11-27T02:44:29.5+01:00") - 1795743869.5) < 1e-6);
    assert_true(ocp_iso8601_parse("yesterday") < 0);
    assert_true(ocp_iso8601_parse("2026-13-01T00:00:00") < 0);
    assert_true(ocp_iso8601_parse("2026-11-27T01:44:29 trailing") < 0);
    char out[40];
    ocp_iso8601_format(1795743869.25, out);
    assert_string_equal(out, "2026-11-27T01:44:29.250000");
    assert_true(fabs(ocp_iso8601_parse(out) - 1795743869.25) < 1e-6);
}

/* A message as Celery 5.2's send_task writes it (fields in its order). */
static char *celery_message(const char *id, const char *task, const char *body_json,
                            const char *eta, const char *expires)
{
    char *b64 = ocp_b64_encode(body_json, strlen(body_json));
    char *m = ocp_xasprintf(
        "{\"body\": \"%s\", \"content-encoding\": \"utf-8\", \"content-type\": "
        "\"application/json\", \"headers\": {\"lang\": \"py\", \"task\": \"%s\", \"id\": \"%s\", "
        "\"shadow\": null, \"eta\": %s, \"expires\": %s, \"group\": \"g-1\", \"group_index\": 0, "
        "\"retries\": 0, \"timelimit\": [30, 20], \"root_id\": \"%s\", \"parent_id\": null, "
        "\"argsrepr\": \"\", \"kwargsrepr\": \"{}\", \"origin\": \"gen1@host\", "
        "\"ignore_result\": false}, \"properties\": {\"correlation_id\": \"%s\", \"reply_to\": "
        "\"r\", \"delivery_mode\": 2, \"delivery_info\": {\"exchange\": \"\", \"routing_key\": "
        "\"celery\"}, \"priority\": 3, \"body_encoding\": \"base64\", \"delivery_tag\": \"t-1\"}}",
        b64, task, id, eta, expires, id, id);
    free(b64);
    return m;
}

static void test_parse_celery(void **state)
{
    (void)state;
    char *raw = celery_message(
        "id-1", "ocrpool.ocr_page",
        "[[\"/data/a.pdf\", \"san\"], {\"page\": 3, \"formats\": [\"txt\", \"hocr\"]}, "
        "{\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]",
        "\"2026-11-27T01:44:29.5+00:00\"", "null");
    ocp_celery_msg m;
    char err[300];
    assert_int_equal(ocp_celery_parse(raw, strlen(raw), &m, err, sizeof err), 0);
    assert_string_equal(m.id, "id-1");
    assert_string_equal(m.task, "ocrpool.ocr_page");
    assert_string_equal(m.group, "g-1");
    assert_true(fabs(m.eta - 1795743869.5) < 1e-6);
    assert_true(m.expires == 0);
    assert_true(m.time_limit == 30 && m.soft_time_limit == 20); /* [hard, soft] */
    assert_int_equal(m.priority, 3);

    char *payload = NULL, exc[32] = "";
    assert_int_equal(ocp_celery_payload(&m, "eng", 1000, &payload, exc, err, sizeof err), 0);
    json_t *p = json_loads(payload, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(p, "source")), "/data/a.pdf");
    assert_string_equal(json_string_value(json_object_get(p, "lang")), "san");
    assert_int_equal(json_integer_value(json_object_get(p, "page")), 2); /* 0-based inside */
    assert_int_equal(json_array_size(json_object_get(p, "formats")), 2);
    /* The message's time limits ride along in the payload, [hard, soft]. */
    assert_true(json_real_value(json_object_get(p, "time_limit")) == 30);
    assert_true(json_real_value(json_object_get(p, "soft_time_limit")) == 20);
    json_object_del(p, "time_limit");
    json_object_del(p, "soft_time_limit");
    char *untimed = json_dumps(p, JSON_COMPACT);
    json_decref(p);

    /* ocrpool's own producer writes what parses back to the same payload. */
    json_t *args, *kwargs;
    assert_int_equal(ocp_celery_args_from_payload(payload, &args, &kwargs), 0);
    ocp_celery_new n = {.id = "id-2",
                        .task = "ocrpool.ocr_page",
                        .queue = "ocr",
                        .group = NULL,
                        .priority = 0,
                        .args = args,
                        .kwargs = kwargs};
    char *mine = ocp_celery_message(&n);
    ocp_celery_msg m2;
    assert_int_equal(ocp_celery_parse(mine, strlen(mine), &m2, err, sizeof err), 0);
    char *payload2 = NULL;
    assert_int_equal(ocp_celery_payload(&m2, "eng", 1000, &payload2, exc, err, sizeof err), 0);
    assert_string_equal(untimed, payload2); /* it sends no time limits */
    free(untimed);
    assert_null(m2.group);
    json_t *mj = json_loads(mine, 0, NULL);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(mj, "properties"), "delivery_info"), "routing_key")),
        "ocr");
    assert_true(json_is_array(json_object_get(json_object_get(mj, "headers"), "timelimit")));
    json_decref(mj);
    json_decref(args);
    json_decref(kwargs);
    free(mine);
    free(payload2);
    ocp_celery_msg_fini(&m2);
    free(payload);
    ocp_celery_msg_fini(&m);
    free(raw);
}

static void test_bad_messages(void **state)
{
    (void)state;
    static const struct {
        const char *raw, *why;
        int has_id;
    } bad[] = {
        {"not json", "not JSON", 0},
        {"[1,2]", "no headers", 0},
        {"{\"headers\": {\"task\": \"x\"}}", "headers.id", 0},
        {"{\"headers\": {\"id\": \"i\"}, \"body\": \"\"}", "headers.task missing", 1},
        {"{\"headers\": {\"id\": \"i\", \"task\": \"t\"}, \"body\": 5}", "body: not a string", 1},
        {"{\"headers\": {\"id\": \"i\", \"task\": \"t\", \"eta\": \"soon\"}, \"body\": \"\"}",
         "headers.eta", 1},
        {"{\"headers\": {\"id\": \"i\", \"task\": \"t\"}, \"body\": \"!!\", \"properties\": "
         "{\"body_encoding\": \"base64\"}}",
         "bad base64", 1},
        {"{\"headers\": {\"id\": \"i\", \"task\": \"t\"}, \"body\": \"{}\"}",
         "not [args, kwargs, embed]", 1},
        {"{\"headers\": {\"id\": \"i\", \"task\": \"t\"}, \"body\": \"x\", \"content-type\": "
         "\"application/x-python-serialize\"}",
         "only application/json", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ocp_celery_msg m;
        char err[300] = "";
        assert_int_equal(ocp_celery_parse(bad[i].raw, strlen(bad[i].raw), &m, err, sizeof err),
                         OCP_E_MESSAGE);
        if (!strstr(err, bad[i].why))
            fail_msg("message %zu: reason '%s' lacks '%s'", i, err, bad[i].why);
        assert_int_equal(m.id != NULL, bad[i].has_id);
        ocp_celery_msg_fini(&m);
    }
}

/* A payload of submit --max-image-size 0 (never resize) goes out without max_image_size,
 * which a worker would refuse (a task may only shrink a page); 1 and up go out as they are. */
static void test_args_max_image_size(void **state)
{
    (void)state;
    json_t *args, *kwargs;
    assert_int_equal(ocp_celery_args_from_payload(
                         "{\"source\": \"/d/a.png\", \"lang\": \"eng\", \"page\": 0, "
                         "\"max_image_size\": 0, \"width\": 10, \"height\": 20}",
                         &args, &kwargs),
                     0);
    assert_null(json_object_get(kwargs, "max_image_size"));
    assert_int_equal(json_integer_value(json_object_get(kwargs, "width")), 10);
    json_decref(args);
    json_decref(kwargs);
    assert_int_equal(
        ocp_celery_args_from_payload(
            "{\"source\": \"/d/a.png\", \"lang\": \"eng\", \"page\": 0, \"max_image_size\": 900}",
            &args, &kwargs),
        0);
    assert_int_equal(json_integer_value(json_object_get(kwargs, "max_image_size")), 900);
    json_decref(args);
    json_decref(kwargs);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    static const struct {
        const char *body, *exc, *why;
    } bad[] = {
        {"[[\"a\", \"eng\", 3], {}, {}]", "TypeError", "takes 2 positional"},
        {"[[], {}, {}]", "TypeError", "source"},
        {"[[5], {}, {}]", "TypeError", "source"},
        {"[[\"a\"], {\"colour\": 1}, {}]", "TypeError", "unexpected keyword argument 'colour'"},
        {"[[\"a\"], {\"source\": \"b\"}, {}]", "TypeError", "multiple values"},
        {"[[\"a\"], {\"page\": 0}, {}]", "ValueError", "page"},
        {"[[\"a\"], {\"page\": \"2\"}, {}]", "TypeError", "page"},
        {"[[\"a\"], {\"formats\": [\"pdfa\"]}, {}]", "ValueError", "pdfa"},
        {"[[\"a\"], {\"formats\": [\"txt\", 7]}, {}]", "ValueError", "(not a string)"},
        {"[[\"a\"], {\"formats\": 7}, {}]", "TypeError", "a list of format names"},
        {"[[\"a\"], {\"max_image_size\": -1}, {}]", "ValueError", "max_image_size"},
        /* issue 15: 0 (never resize) would bypass the node's max-image-size */
        {"[[\"a\"], {\"max_image_size\": 0}, {}]", "ValueError", "max_image_size"},
        /* issue 15: formats is bounded: known names, each once, at most five */
        {"[[\"a\"], {\"formats\": [\"txt\", \"txt\"]}, {}]", "ValueError", "'txt' given twice"},
        {"[[\"a\"], {\"formats\": \"json,tsv,json\"}, {}]", "ValueError", "'json' given twice"},
        {"[[\"a\"], {\"formats\": [\"txt\", \"json\", \"hocr\", \"alto\", \"tsv\", \"txt\"]}, {}]",
         "ValueError", "at most 5"},
        {"[[{\"b64\": \"QUJDRA==QUJDRA==QUJDRA==\"}], {}, {}]", "ValueError", "inline bytes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *raw = celery_message("i", "t", bad[i].body, "null", "null");
        ocp_celery_msg m;
        char err[300] = "", exc[32] = "";
        char *payload = NULL;
        assert_int_equal(ocp_celery_parse(raw, strlen(raw), &m, err, sizeof err), 0);
        assert_int_equal(ocp_celery_payload(&m, "eng", 8, &payload, exc, err, sizeof err),
                         OCP_E_MESSAGE);
        assert_null(payload);
        assert_string_equal(exc, bad[i].exc);
        if (!strstr(err, bad[i].why))
            fail_msg("arguments %zu: reason '%s' lacks '%s'", i, err, bad[i].why);
        ocp_celery_msg_fini(&m);
        free(raw);
    }
    /* Inline bytes under the cap, language from the default, formats as a string. */
    char *raw = celery_message("i", "t", "[[{\"b64\": \"QUJD\"}], {\"formats\": \"txt,alto\"}, {}]",
                               "null", "null");
    ocp_celery_msg m;
    char err[300], exc[32], *payload = NULL;
    assert_int_equal(ocp_celery_parse(raw, strlen(raw), &m, err, sizeof err), 0);
    assert_int_equal(ocp_celery_payload(&m, "hin", 8, &payload, exc, err, sizeof err), 0);
    json_t *p = json_loads(payload, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(p, "data_b64")), "QUJD");
    assert_string_equal(json_string_value(json_object_get(p, "lang")), "hin");
    assert_int_equal(json_array_size(json_object_get(p, "formats")), 2);
    json_decref(p);
    free(payload);
    ocp_celery_msg_fini(&m);
    free(raw);
}

static void test_meta_and_queues(void **state)
{
    (void)state;
    char *meta = ocp_celery_meta("id-9", "FAILURE",
                                 ocp_celery_exc("NotRegistered", "celery.exceptions", "x.y"), "grp",
                                 OCP_FAIL_MALFORMED, false);
    json_t *m = json_loads(meta, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(m, "status")), "FAILURE");
    assert_string_equal(json_string_value(json_object_get(m, "task_id")), "id-9");
    assert_string_equal(json_string_value(json_object_get(m, "group_id")), "grp");
    assert_true(json_is_null(json_object_get(m, "traceback")));
    assert_int_equal(json_array_size(json_object_get(m, "children")), 0);
    assert_true(json_is_array(json_object_get(m, "children")));
    assert_true(ocp_iso8601_parse(json_string_value(json_object_get(m, "date_done"))) > 0);
    json_t *r = json_object_get(m, "result");
    assert_string_equal(json_string_value(json_object_get(r, "exc_type")), "NotRegistered");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "exc_message"), 0)),
                        "x.y");
    assert_string_equal(json_string_value(json_object_get(m, "ocrpool_failure")), "malformed");
    assert_null(json_object_get(m, "ocrpool_buried"));
    json_decref(m);
    free(meta);
    meta = ocp_celery_meta("id-9", "STARTED", NULL, NULL, OCP_FAIL_NONE, false);
    m = json_loads(meta, 0, NULL);
    assert_true(json_is_null(json_object_get(m, "date_done"))); /* not a ready state */
    assert_null(json_object_get(m, "group_id"));
    assert_null(json_object_get(m, "ocrpool_failure"));
    json_decref(m);
    free(meta);

    char key[64];
    static const struct {
        int pri;
        const char *key;
    } q[] = {{0, "celery"},
             {2, "celery"},
             {3, "celery\x06\x16"
                 "3"},
             {5, "celery\x06\x16"
                 "3"},
             {6, "celery\x06\x16"
                 "6"},
             {9, "celery\x06\x16"
                 "9"}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        ocp_celery_queue_key("celery", q[i].pri, key, sizeof key);
        assert_string_equal(key, q[i].key);
    }
}

/* Every failure kind written in a meta reads back as itself, buried or not. */
static void test_meta_kinds(void **state)
{
    (void)state;
    for (int k = OCP_FAIL_NONE + 1; k < OCP_FAIL__COUNT; k++) {
        for (int buried = 0; buried < 2; buried++) {
            const char *type, *module;
            ocp_celery_exc_of((ocp_failure)k, &type, &module);
            char *meta = ocp_celery_meta("id-k", "FAILURE", ocp_celery_exc(type, module, "why"),
                                         "g", (ocp_failure)k, buried);
            ocp_celery_meta_info i;
            assert_int_equal(ocp_celery_meta_read(meta, strlen(meta), &i), 0);
            assert_string_equal(i.status, "FAILURE");
            assert_string_equal(i.group, "g");
            assert_string_equal(i.exc_type, type);
            assert_string_equal(i.exc_message, "why");
            if (i.failure != (ocp_failure)k)
                fail_msg("kind %s read back as %s", ocp_failure_name((ocp_failure)k),
                         ocp_failure_name(i.failure));
            assert_int_equal(i.buried, buried);
            assert_null(i.result);
            assert_true(i.date_done > 0);
            ocp_celery_meta_info_fini(&i);
            free(meta);
        }
    }
    /* The exceptions of their own and their kinds, both ways. */
    static const ocp_failure own[] = {OCP_FAIL_MEMORY_LIMIT, OCP_FAIL_TIME_LIMIT,
                                      OCP_FAIL_SOFT_TIME_LIMIT, OCP_FAIL_CRASHED, OCP_FAIL_REVOKED};
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++) {
        const char *type, *module;
        ocp_celery_exc_of(own[k], &type, &module);
        assert_int_equal(ocp_celery_failure_of_exc(type), own[k]);
    }
    const char *type, *module;
    ocp_celery_exc_of(OCP_FAIL_INPUT, &type, &module);
    assert_string_equal(type, "OCRError");
    assert_string_equal(module, "ocrpool");
}

/* A SUCCESS meta gives its result's text as stored, byte for byte, whatever it holds. */
static void test_meta_result_text(void **state)
{
    (void)state;
    const char *result_text = "{\"text\":\"a } ] \\\" \\\\ {[ , : \\u00e9 \xe0\xa4\x85\","
                              "\"lines\":[{\"bbox\":[1,2,3,4],\"confidence\":91.5,\"w\":[]}],"
                              "\"n\":null,\"ok\":true,\"e\":-1.5e-3}";
    json_t *res = json_loads(result_text, 0, NULL);
    assert_non_null(res);
    char *meta = ocp_celery_meta("id-r", "SUCCESS", res, NULL, OCP_FAIL_NONE, false);
    ocp_celery_meta_info i;
    assert_int_equal(ocp_celery_meta_read(meta, strlen(meta), &i), 0);
    assert_string_equal(i.status, "SUCCESS");
    assert_null(i.group);
    assert_int_equal(i.failure, OCP_FAIL_NONE);
    json_t *back = json_loads(i.result, 0, NULL);
    json_t *want = json_loads(result_text, 0, NULL);
    assert_true(json_equal(back, want));
    char *dumped = json_dumps(want, JSON_COMPACT);
    assert_string_equal(i.result, dumped); /* the text as written, not written again */
    free(dumped);
    json_decref(back);
    json_decref(want);
    ocp_celery_meta_info_fini(&i);
    free(meta);

    /* A meta as Python's Celery writes it: spaces, other key order, no ocrpool keys. */
    static const char py[] =
        "{\"status\": \"SUCCESS\", \"result\": {\"peer\": \"python-celery\", \"page\": 2}, "
        "\"traceback\": null, \"children\": [], \"date_done\": \"2026-11-27T01:44:29.5\", "
        "\"task_id\": \"t\"}";
    assert_int_equal(ocp_celery_meta_read(py, strlen(py), &i), 0);
    assert_string_equal(i.result, "{\"peer\": \"python-celery\", \"page\": 2}");
    assert_true(fabs(i.date_done - 1795743869.5) < 1e-6);
    ocp_celery_meta_info_fini(&i);
    static const char py_fail[] =
        "{\"result\": {\"exc_type\": \"TimeLimitExceeded\", \"exc_message\": [\"30\"], "
        "\"exc_module\": \"celery.exceptions\"}, \"status\": \"FAILURE\", \"task_id\": \"t\"}";
    assert_int_equal(ocp_celery_meta_read(py_fail, strlen(py_fail), &i), 0);
    assert_int_equal(i.failure, OCP_FAIL_TIME_LIMIT); /* from its exception */
    assert_false(i.buried);
    assert_string_equal(i.exc_message, "30");
    ocp_celery_meta_info_fini(&i);
    static const char py_lost[] =
        "{\"status\": \"FAILURE\", \"result\": {\"exc_type\": \"WorkerLostError\", "
        "\"exc_message\": [\"lost\"]}}";
    assert_int_equal(ocp_celery_meta_read(py_lost, strlen(py_lost), &i), 0);
    assert_int_equal(i.failure, OCP_FAIL_CRASHED);
    assert_true(i.buried); /* an older meta's burial */
    ocp_celery_meta_info_fini(&i);
    static const char started[] =
        "{\"status\":\"STARTED\",\"result\":{\"pid\":4242,\"hostname\":\"h\"},\"date_done\":null}";
    assert_int_equal(ocp_celery_meta_read(started, strlen(started), &i), 0);
    assert_int_equal(i.pid, 4242);
    assert_int_equal(i.failure, OCP_FAIL_NONE);
    assert_true(i.date_done == 0);
    ocp_celery_meta_info_fini(&i);

    /* Not a meta: refused, and nothing is left to free. */
    static const char *const bad[] = {
        "",
        "[]",
        "{\"status\": \"SUCCESS\", \"result\": {\"a\": 1}",
        "{}",
        "{\"result\": 1}",
        "{\"status\": \"SUCCESS\", \"result\": \"open}",
        "{\"status\" \"SUCCESS\"}",
        "{\"status\": \"SUCCESS\",, \"result\": 1}",
        "{\"status\": \"SUCCESS\", \"result\": {\"a\": [1, 2}}",
        "{\"status\": \"SUCCESS\" \"result\": 1}",
        "{status: \"SUCCESS\"}",
        "{\"status\": \"SUCCESS\", \"result\": {\"a\": [1, 2}]}}",
        /* Brackets and strings matched, but not JSON: the result is checked. */
        "{\"status\": \"SUCCESS\", \"result\": {\"a\" \"b\"}}",
        "{\"status\": \"SUCCESS\", \"result\": tru}",
        "{\"status\": \"SUCCESS\", \"result\": [1 2]}",
        "{\"status\": \"FAILURE\", \"result\": {\"exc_type\" 1}}",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        if (ocp_celery_meta_read(bad[k], strlen(bad[k]), &i) != OCP_E_MESSAGE)
            fail_msg("'%s' was read as a meta", bad[k]);
        assert_null(i.status);
        assert_null(i.result);
    }
}

/* A result nested deeper than the scanner follows is read by a full parse, not refused. */
static void test_meta_deep_result(void **state)
{
    (void)state;
    char res[1024] = "", text[1200];
    for (int d = 0; d < 100; d++)
        strcat(res, "[");
    strcat(res, "7");
    for (int d = 0; d < 100; d++)
        strcat(res, "]");
    snprintf(text, sizeof text,
             "{\"status\": \"SUCCESS\", \"result\": %s, \"group_id\": \"g\", "
             "\"date_done\": \"2026-11-27T01:44:29.5\"}",
             res);
    ocp_celery_meta_info i;
    assert_int_equal(ocp_celery_meta_read(text, strlen(text), &i), 0);
    assert_string_equal(i.status, "SUCCESS");
    assert_string_equal(i.group, "g");
    assert_string_equal(i.result, res);
    assert_true(i.date_done > 0);
    ocp_celery_meta_info_fini(&i);
    /* Deep and broken: still refused. */
    text[strlen(text) - 1] = '\0';
    assert_int_equal(ocp_celery_meta_read(text, strlen(text), &i), OCP_E_MESSAGE);
    assert_null(i.status);
    /* A deep failure keeps its kind. */
    snprintf(text, sizeof text,
             "{\"status\": \"REVOKED\", \"x\": %s, \"result\": {\"exc_type\": "
             "\"TaskRevokedError\", \"exc_message\": [\"expired\"]}}",
             res);
    assert_int_equal(ocp_celery_meta_read(text, strlen(text), &i), 0);
    assert_int_equal(i.failure, OCP_FAIL_REVOKED);
    assert_string_equal(i.exc_message, "expired");
    ocp_celery_meta_info_fini(&i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_parse_celery),
        cmocka_unit_test(test_bad_messages),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_args_max_image_size),
        cmocka_unit_test(test_meta_and_queues),
        cmocka_unit_test(test_meta_kinds),
        cmocka_unit_test(test_meta_result_text),
        cmocka_unit_test(test_meta_deep_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
