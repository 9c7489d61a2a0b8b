/*
 * test_http.c: the HTTP API's checks of request strings (http/input.h) and
 * its spool of uploads (http/spool.h) on a real SQLite queue: an upload is
 * deleted once every page its ids file names has finished, and not before.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "queue_state.h"

#include <jansson.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "http/input.h"
#include "http/spool.h"

static void test_text_ok(void **state)
{
    (void)state;
    assert_true(ocp__http_text_ok("page.png", 255));
    assert_true(ocp__http_text_ok("", 255));
    assert_true(ocp__http_text_ok("\xe0\xa4\xb8\xe0\xa4\x82.png", 255)); /* Devanagari */
    assert_true(ocp__http_text_ok("\xf0\x9f\x93\x84", 255));             /* U+1F4C4 */
    assert_false(ocp__http_text_ok("a\xff\xfe.png", 255));               /* not UTF-8 */
    assert_false(ocp__http_text_ok("\xc0\xaf", 255));                    /* overlong '/' */
    assert_false(ocp__http_text_ok("\xe0\x80\xaf", 255));                /* overlong '/' */
    assert_false(ocp__http_text_ok("\xed\xa0\x80", 255));                /* a surrogate */
    assert_false(ocp__http_text_ok("\xf4\x90\x80\x80", 255));            /* past U+10FFFF */
    assert_false(ocp__http_text_ok("\xe0\xa4", 255));                    /* cut short */
    assert_false(ocp__http_text_ok("a\x01", 255));                       /* control */
    assert_false(ocp__http_text_ok("a\nb", 255));
    assert_false(ocp__http_text_ok("\xc2\x85", 255)); /* C1 control (NEL) */
    assert_true(ocp__http_text_ok("abcd", 4));
    assert_false(ocp__http_text_ok("abcde", 4));
}

static void test_lang_ok(void **state)
{
    (void)state;
    assert_true(ocp__http_lang_ok("eng"));
    assert_true(ocp__http_lang_ok("san+eng"));
    assert_true(ocp__http_lang_ok("chi_sim"));
    assert_true(ocp__http_lang_ok("script/Devanagari"));
    assert_false(ocp__http_lang_ok(NULL));
    assert_false(ocp__http_lang_ok(""));
    assert_false(ocp__http_lang_ok("../../x"));
    assert_false(ocp__http_lang_ok("eng/../../x"));
    assert_false(ocp__http_lang_ok("/etc/x"));
    assert_false(ocp__http_lang_ok("+eng"));
    assert_false(ocp__http_lang_ok("eng x"));
    char longl[200];
    memset(longl, 'a', sizeof longl - 1);
    longl[sizeof longl - 1] = '\0';
    assert_false(ocp__http_lang_ok(longl));
}

static int count_files(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}


/* Two pages queued from one upload: kept until both have finished (one done, one failed),
 * then deleted with its ids file; an upload without an ids file is left alone while young. */
static void test_spool_sweep(void **state)
{
    (void)state;
    char dir[] = "/tmp/ocp-test-spool-XXXXXX", url[300], *up = NULL, *young = NULL;
    assert_non_null(mkdtemp(dir));
    snprintf(url, sizeof url, "sqlite://%s/q.db", dir);
    char spool[300];
    snprintf(spool, sizeof spool, "%s/spool", dir);
    assert_int_equal(mkdir(spool, 0700), 0);
    ocp_broker_opts o = {0};
    ocp_broker *b = NULL;
    char err[300];
    assert_int_equal(ocp_broker_open(url, &o, &b, err, sizeof err), 0);
    int fd = ocp__spool_create(spool, "page.png", &up);
    assert_true(fd >= 0);
    close(fd);
    assert_non_null(strstr(up, ".png"));
    fd = ocp__spool_create(spool, "x.ids", &young); /* ".ids" is never an upload's name */
    assert_true(fd >= 0);
    close(fd);
    assert_null(strstr(young, ".ids"));
    json_t *ids = json_array();
    char id[2][64];
    for (int i = 0; i < 2; i++) {
        ocp_task_spec spec = {.group = "g", .payload = "{}"};
        int inserted = 0;
        assert_int_equal(ocp_broker_submit(b, &spec, id[i], &inserted), 0);
        json_array_append_new(ids, json_string(id[i]));
    }
    assert_int_equal(ocp__spool_note(up, ids), 0);
    json_decref(ids);
    assert_int_equal(count_files(spool), 3);
    assert_int_equal(ocp__spool_sweep(b, spool, 0, 3600, 1), 0); /* both pages wait */
    assert_int_equal(count_files(spool), 3);
    set_state(dir, id[0], OCP_TASK_LEASED);
    set_state(dir, id[1], OCP_TASK_DONE);
    assert_int_equal(ocp__spool_sweep(b, spool, 0, 3600, 1), 0); /* one still runs */
    set_state(dir, id[0], OCP_TASK_FAILED);
    assert_int_equal(ocp__spool_sweep(b, spool, 0, 3600, 1), 1);
    assert_int_equal(count_files(spool), 1); /* the young upload without ids stays */
    assert_int_equal(access(up, F_OK), -1);
    ocp_broker_close(b);
    free(up);
    free(young);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_ok),
        cmocka_unit_test(test_lang_ok),
        cmocka_unit_test(test_spool_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
