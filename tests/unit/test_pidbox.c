/*
 * test_pidbox.c: Celery's remote control messages (src/broker/pidbox.c)
 * and canvas (src/broker/canvas.c): a control message as Celery 5.2 and
 * 5.7 publish it is read for the nodes it names (destination, glob and
 * pcre patterns) and not after its expiry; every malformed one gives its
 * reason; the reply's envelope decodes to {node: value}; a chain's next
 * task gets the result first in its args, keeps the rest of the chain and
 * the producer's frozen id; a chord's parts give the body's list, or the
 * failed part's ChordError reason. A group id longer than the chord's keys
 * allow is refused; a task event's text is cut at a UTF-8 character's end
 * (Devanagari, Tamil); the mailbox looks its Redis host up once, not at
 * each reconnect (getaddrinfo is counted here: hiredis's blocks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/celery.h"
#include "broker/pidbox.h"
#include "core/error.h"
#include "core/util.h"
#include "pool/remote.h"

/* A control message as kombu publishes it: body (JSON text) base64 in the envelope. */
static char *envelope_of(const char *body, double expires)
{
    char *b64 = ocp_b64_encode(body, strlen(body));
    json_t *e =
        json_pack("{s:s, s:s, s:s, s:{s:i, s:f}, s:{s:i, s:s}}", "body", b64, "content-encoding",
                  "utf-8", "content-type", "application/json", "headers", "clock", 7, "expires",
                  expires, "properties", "delivery_mode", 2, "body_encoding", "base64");
    char *out = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    free(b64);
    return out;
}

static int parse(const char *body, const char *node, double expires, ocp_pidbox_req *req, char *err)
{
    char *raw = envelope_of(body, expires);
    int for_us = -1;
    int rc = ocp_pidbox_parse(raw, strlen(raw), node, 1000.0, req, &for_us, err, 300);
    free(raw);
    return rc ? -1 : for_us;
}

static void test_parse_addressing(void **state)
{
    (void)state;
    ocp_pidbox_req r;
    char err[300];
    const char *ping = "{\"method\": \"ping\", \"arguments\": {}, \"destination\": null, "
                       "\"pattern\": null, \"matcher\": null, \"ticket\": \"t1\", \"reply_to\": "
                       "{\"exchange\": \"reply.celery.pidbox\", \"routing_key\": \"k1\"}}";
    assert_int_equal(parse(ping, "ocr1@vm", 0, &r, err), 1);
    assert_string_equal(r.method, "ping");
    assert_string_equal(r.ticket, "t1");
    assert_string_equal(r.reply_exchange, "reply.celery.pidbox");
    assert_string_equal(r.reply_key, "k1");
    assert_int_equal(r.clock, 7);
    ocp_pidbox_req_fini(&r);
    /* Expired (headers.expires before now): nobody's. */
    assert_int_equal(parse(ping, "ocr1@vm", 999.0, &r, err), 0);
    assert_int_equal(parse(ping, "ocr1@vm", 1001.0, &r, err), 1);
    ocp_pidbox_req_fini(&r);
    const char *dest = "{\"method\": \"stats\", \"destination\": [\"w1@x\", \"ocr1@vm\"]}";
    assert_int_equal(parse(dest, "ocr1@vm", 0, &r, err), 1);
    assert_null(r.ticket); /* a cast: no reply */
    assert_true(json_is_object(r.arguments));
    ocp_pidbox_req_fini(&r);
    assert_int_equal(parse(dest, "ocr2@vm", 0, &r, err), 0);
    const char *glob = "{\"method\": \"ping\", \"pattern\": \"ocr*@*\", \"matcher\": \"glob\"}";
    assert_int_equal(parse(glob, "ocr1@vm", 0, &r, err), 1);
    ocp_pidbox_req_fini(&r);
    assert_int_equal(parse(glob, "celery@vm", 0, &r, err), 0);
    const char *pcre = "{\"method\": \"ping\", \"pattern\": \"(w|ocr)[0-9]@\", \"matcher\": "
                       "\"pcre\"}";
    assert_int_equal(parse(pcre, "ocr1@vm", 0, &r, err), 1);
    ocp_pidbox_req_fini(&r);
    assert_int_equal(parse(pcre, "xocr1@vm", 0, &r, err), 0); /* re.match: anchored */
    /* 5.7's revoke: task_id a list, no terminate key. */
    const char *rv = "{\"method\": \"revoke\", \"arguments\": {\"task_id\": [\"a\", \"b\"]}}";
    assert_int_equal(parse(rv, "ocr1@vm", 0, &r, err), 1);
    assert_int_equal(json_array_size(json_object_get(r.arguments, "task_id")), 2);
    ocp_pidbox_req_fini(&r);
}

static void test_parse_refused(void **state)
{
    (void)state;
    ocp_pidbox_req r;
    char err[300];
    struct {
        const char *body, *why;
    } bad[] = {
        {"{\"arguments\": {}}", "method"},
        {"{\"method\": 3}", "method"},
        {"{\"method\": \"ping\", \"arguments\": [1]}", "arguments"},
        {"{\"method\": \"ping\", \"destination\": \"ocr1@vm\"}", "destination"},
        {"{\"method\": \"ping\", \"ticket\": \"t\"}", "reply_to"},
        {"{\"method\": \"ping\", \"pattern\": \"a{1,99}\", \"matcher\": \"pcre\"}", "pattern"},
        {"{\"method\": \"ping\", \"pattern\": \"a\", \"matcher\": \"lua\"}", "pattern"},
        {"[1, 2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i].body, "ocr1@vm", 0, &r, err), -1);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: reason '%s' lacks '%s'", bad[i].body, err, bad[i].why);
    }
    int for_us;
    const char *raw = "{\"body\": \"!!!\", \"properties\": {\"body_encoding\": \"base64\"}}";
    assert_int_equal(ocp_pidbox_parse(raw, strlen(raw), "n@h", 0, &r, &for_us, err, sizeof err),
                     OCP_E_MESSAGE);
    assert_non_null(strstr(err, "base64"));
    raw = "{\"body\": \"x\", \"content-type\": \"application/x-python-serialize\"}";
    assert_int_equal(ocp_pidbox_parse(raw, strlen(raw), "n@h", 0, &r, &for_us, err, sizeof err),
                     OCP_E_MESSAGE);
    assert_non_null(strstr(err, "only application/json"));
}

static void test_envelope(void **state)
{
    (void)state;
    json_t *body = json_pack("{s:{s:s}}", "ocr1@vm", "ok", "pong");
    json_t *h = json_pack("{s:s, s:i}", "ticket", "t1", "clock", 3);
    char *text = ocp_pidbox_envelope(body, h, "reply.celery.pidbox", "k1", 1);
    json_t *e = json_loads(text, 0, NULL);
    assert_non_null(e);
    const char *b64 = json_string_value(json_object_get(e, "body"));
    size_t n;
    unsigned char *dec = ocp_b64_decode(b64, strlen(b64), &n);
    json_t *back = json_loadb((const char *)dec, n, 0, NULL);
    assert_true(json_equal(back, body));
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "headers"), "ticket")),
                        "t1");
    json_t *di = json_object_get(json_object_get(e, "properties"), "delivery_info");
    assert_string_equal(json_string_value(json_object_get(di, "routing_key")), "k1");
    json_decref(back);
    free(dec);
    json_decref(e);
    free(text);
    json_decref(h);
    json_decref(body);
    json_t *ev =
        ocp_celery_event_body("ocr1@vm", 9, "task-succeeded", json_pack("{s:s}", "uuid", "u1"));
    assert_string_equal(json_string_value(json_object_get(ev, "type")), "task-succeeded");
    assert_string_equal(json_string_value(json_object_get(ev, "hostname")), "ocr1@vm");
    assert_int_equal(json_integer_value(json_object_get(ev, "clock")), 9);
    assert_true(json_is_real(json_object_get(ev, "timestamp")));
    json_decref(ev);
}

/* The body [args, kwargs, embed] and headers of a message text. */
static void open_msg(const char *text, json_t **body, json_t **headers)
{
    ocp_celery_msg m;
    char err[300];
    assert_int_equal(ocp_celery_parse(text, strlen(text), &m, err, sizeof err), 0);
    *body = json_pack("[O, O, O]", m.args, m.kwargs, m.embed ? m.embed : json_null());
    *headers = json_incref(json_object_get(m.root, "headers"));
    ocp_celery_msg_fini(&m);
}

static void test_canvas_chain(void **state)
{
    (void)state;
    /* chain(ocr_page, words, collect) as Celery keeps it: the rest in reverse. */
    json_t *words = json_pack("{s:s, s:[], s:{}, s:{s:s, s:s}, s:n, s:b}", "task", "tools.words",
                              "args", "kwargs", "options", "task_id", "id-2", "queue", "py",
                              "subtask_type", "immutable", 0);
    json_t *collect =
        json_pack("{s:s, s:[i], s:{}, s:{s:s}, s:n, s:b}", "task", "tools.collect", "args", 5,
                  "kwargs", "options", "task_id", "id-3", "subtask_type", "immutable", 0);
    json_t *rest = json_pack("[O]", collect);
    json_t *result = json_pack("{s:s}", "text", "quick brown fox");
    char *msg, queue[300], id[64], err[300];
    assert_int_equal(
        ocp_celery_apply(words, result, "id-1", "id-1", rest, &msg, queue, id, err, sizeof err), 0);
    assert_string_equal(queue, "py");
    assert_string_equal(id, "id-2"); /* frozen by the producer: the client waits on it */
    json_t *body, *h;
    open_msg(msg, &body, &h);
    assert_true(json_equal(json_array_get(json_array_get(body, 0), 0), result));
    json_t *chain = json_object_get(json_array_get(body, 2), "chain");
    assert_int_equal(json_array_size(chain), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(chain, 0), "task")),
                        "tools.collect");
    assert_string_equal(json_string_value(json_object_get(h, "task")), "tools.words");
    assert_string_equal(json_string_value(json_object_get(h, "parent_id")), "id-1");
    assert_string_equal(json_string_value(json_object_get(h, "root_id")), "id-1");
    json_decref(body);
    json_decref(h);
    free(msg);
    /* Immutable: its own args only; no queue: "celery". */
    json_object_set_new(collect, "immutable", json_true());
    assert_int_equal(
        ocp_celery_apply(collect, result, "id-2", "id-1", NULL, &msg, queue, id, err, sizeof err),
        0);
    assert_string_equal(queue, "celery");
    open_msg(msg, &body, &h);
    assert_int_equal(json_array_size(json_array_get(body, 0)), 1);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(body, 0), 0)), 5);
    json_decref(body);
    json_decref(h);
    free(msg);
    /* A group as a callback is refused with its reason. */
    json_t *grp = json_pack("{s:s, s:s}", "task", "celery.group", "subtask_type", "group");
    assert_int_equal(
        ocp_celery_apply(grp, result, "id-2", "id-1", NULL, &msg, queue, id, err, sizeof err),
        OCP_E_MESSAGE);
    assert_non_null(strstr(err, "plain task signatures"));
    json_decref(grp);
    json_decref(result);
    json_decref(rest);
    json_decref(collect);
    json_decref(words);
}

static void test_canvas_chord(void **state)
{
    (void)state;
    json_t *r1 = json_pack("{s:s}", "text", "a"), *r2 = json_pack("{s:s}", "text", "b");
    char *p[2] = {ocp_celery_chord_part("t1", "SUCCESS", r1),
                  ocp_celery_chord_part("t2", "SUCCESS", r2)};
    size_t lens[2] = {strlen(p[0]), strlen(p[1])};
    char err[300];
    json_t *l = ocp_celery_chord_results(p, lens, 2, err, sizeof err);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), 2);
    assert_true(json_equal(json_array_get(l, 1), r2));
    json_decref(l);
    free(p[1]);
    json_t *exc = ocp_celery_exc("OCRError", "ocrpool", "path not allowed");
    p[1] = ocp_celery_chord_part("t2", "FAILURE", exc);
    lens[1] = strlen(p[1]);
    assert_null(ocp_celery_chord_results(p, lens, 2, err, sizeof err));
    assert_non_null(strstr(err, "Dependency t2 raised OCRError(path not allowed)"));
    json_decref(exc);
    free(p[0]);
    free(p[1]);
    json_decref(r1);
    json_decref(r2);
}

/* A task message whose headers.group is group (b64 body [[], {}, {}]). New text. */
static char *message_in_group(const char *group)
{
    const char *body = "[[], {}, {}]";
    char *b64 = ocp_b64_encode(body, strlen(body));
    json_t *e = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:{s:s}}", "body", b64, "content-type",
                          "application/json", "headers", "id", "t1", "task", "ocrpool.ocr_page",
                          "group", group, "properties", "body_encoding", "base64");
    char *out = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    free(b64);
    return out;
}

static void test_group_id_bound(void **state)
{
    (void)state;
    char g[300], err[300];
    ocp_celery_msg m;
    memset(g, 'g', 255);
    g[255] = '\0';
    char *raw = message_in_group(g);
    assert_int_equal(ocp_celery_parse(raw, strlen(raw), &m, err, sizeof err), 0);
    assert_int_equal(strlen(m.group), 255);
    ocp_celery_msg_fini(&m);
    free(raw);
    /* 278 bytes and more made the chord's five keys one: refused, saying why. */
    memset(g, 'g', 290);
    g[290] = '\0';
    raw = message_in_group(g);
    assert_int_equal(ocp_celery_parse(raw, strlen(raw), &m, err, sizeof err), OCP_E_MESSAGE);
    assert_non_null(strstr(err, "headers.group"));
    assert_null(m.group);
    ocp_celery_msg_fini(&m);
    free(raw);
}

/* text: n copies of piece after prefix. New. */
static char *repeat(const char *prefix, const char *piece, int n)
{
    size_t pl = strlen(prefix), l = strlen(piece);
    char *s = malloc(pl + l * (size_t)n + 1);
    memcpy(s, prefix, pl);
    for (int i = 0; i < n; i++)
        memcpy(s + pl + l * (size_t)i, piece, l);
    s[pl + l * (size_t)n] = '\0';
    return s;
}

static void test_event_text_utf8(void **state)
{
    (void)state;
    /* Devanagari: 3 bytes a letter, so byte 1000 is inside one. */
    char *hin = repeat("", "\xe0\xa4\x95", 400); /* "क" x 400: 1200 bytes */
    json_t *f = ocp__remote_task_fields("task-succeeded", "id-hin", hin, 1.5);
    assert_non_null(f);
    assert_string_equal(json_string_value(json_object_get(f, "uuid")), "id-hin");
    const char *r = json_string_value(json_object_get(f, "result"));
    assert_int_equal(strlen(r), strlen("{'text': '") + 999 + 2); /* 333 whole letters */
    assert_memory_equal(r + strlen("{'text': '"), hin, 999);
    json_decref(f);
    /* Tamil, after one ASCII byte: byte 600 is inside a letter. */
    char *tam = repeat("x", "\xe0\xae\xa4", 300); /* "த" */
    f = ocp__remote_task_fields("task-failed", "id-tam", tam, 0);
    assert_non_null(f);
    assert_string_equal(json_string_value(json_object_get(f, "uuid")), "id-tam");
    const char *exc = json_string_value(json_object_get(f, "exception"));
    assert_int_equal(strlen(exc), strlen("OCRError('") + 598 + 2);
    assert_string_equal(json_string_value(json_object_get(f, "traceback")), tam);
    json_decref(f);
    f = ocp__remote_task_fields("task-retried", "id-tam", tam, 0);
    assert_non_null(f);
    assert_non_null(
        strstr(json_string_value(json_object_get(f, "exception")), "WorkerLostError('x"));
    json_decref(f);
    /* Short texts whole; a text that is not UTF-8 gives no fields (the event is not sent). */
    f = ocp__remote_task_fields("task-succeeded", "id-s", "fox", 0);
    assert_string_equal(json_string_value(json_object_get(f, "result")), "{'text': 'fox'}");
    json_decref(f);
    assert_null(ocp__remote_task_fields("task-failed", "id-bad", "bad \xff byte", 0));
    free(hin);
    free(tam);
}

/* getaddrinfo, counted: lookups of a name (not a numeric address) and of an address. */
static int name_lookups, addr_lookups;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    unsigned char buf[sizeof(struct in6_addr)];
    if (node && (inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1))
        addr_lookups++;
    else if (node)
        name_lookups++;
    return real(node, service, hints, res);
}

static void test_reconnect_without_dns(void **state)
{
    (void)state;
    /* A port bound and not listening: each connect is refused, so the mailbox reconnects. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    char url[64], err[300];
    snprintf(url, sizeof url, "redis://localhost:%d/0", ntohs(a.sin_port));
    name_lookups = addr_lookups = 0;
    ocp_pidbox *p;
    assert_int_equal(ocp_pidbox_open(url, "ocr1@vm", &p, err, sizeof err), 0);
    assert_int_equal(name_lookups, 1);
    /* 0.5 s, then 1 s of back-off: three connects of each connection within 2 s. */
    double until = ocp_now() + 2.0;
    while (ocp_now() < until) {
        ocp_pidbox_tick(p);
        for (int i = 0; i < 2; i++) {
            short ev;
            int fd = ocp_pidbox_fd(p, i, &ev);
            struct pollfd pf = {fd, ev, 0};
            if (fd >= 0 && poll(&pf, 1, 10) > 0)
                ocp_pidbox_io(p, fd, pf.revents);
        }
        usleep(20000);
    }
    assert_false(ocp_pidbox_up(p));
    assert_true(addr_lookups >= 4);    /* it did reconnect... */
    assert_int_equal(name_lookups, 1); /* ...to the address found at the open */
    ocp_pidbox_close(p, 0);
    close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addressing), cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_envelope),         cmocka_unit_test(test_canvas_chain),
        cmocka_unit_test(test_canvas_chord),     cmocka_unit_test(test_group_id_bound),
        cmocka_unit_test(test_event_text_utf8),  cmocka_unit_test(test_reconnect_without_dns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
