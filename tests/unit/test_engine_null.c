/*
 * test_engine_null.c: the null engine's test-only behaviour (engine_null.c):
 * OCRPOOL_NULL_SLEEP_MS makes each page take that long, OCRPOOL_NULL_LOG
 * gets one "ID PID.N" line per page and the text "null PID.N" (each run a
 * mark of its own, even across a second open), a bad sleep refuses to open,
 * and without them the page is empty at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "engine/engine.h"

static const ocp_engine_params params = {.lang = "eng"};

/* One page through e with task id id; returns its text (new: free it). */
static char *one_page(ocp_engine *e, const char *id)
{
    ocp_result res;
    ocp_page_image img = {0};
    ocp_ocr_params op = {0};
    ocp_result_init(&res);
    ocp_result_set(&res.id, id);
    assert_int_equal(ocp_engine_ocr(e, &img, &op, &res), 0);
    char *text = strdup(res.text ? res.text : "(null)");
    ocp_result_fini(&res);
    return text;
}

static void test_plain(void **state)
{
    (void)state;
    char err[256] = "";
    ocp_engine *e = NULL;
    unsetenv("OCRPOOL_NULL_SLEEP_MS");
    unsetenv("OCRPOOL_NULL_LOG");
    assert_int_equal(ocp_engine_open("null", &params, &e, err, sizeof err), 0);
    double t0 = ocp_now();
    char *text = one_page(e, "a");
    assert_true(ocp_now() - t0 < 0.05);
    assert_string_equal(text, "");
    free(text);
    ocp_engine_close(e);
}

static void test_sleep_and_log(void **state)
{
    (void)state;
    char dir[] = "/tmp/ocp-null-XXXXXX", log[64], err[256] = "", want[64];
    assert_non_null(mkdtemp(dir));
    snprintf(log, sizeof log, "%s/runs.log", dir);
    setenv("OCRPOOL_NULL_SLEEP_MS", "120", 1);
    setenv("OCRPOOL_NULL_LOG", log, 1);
    ocp_engine *e = NULL;
    assert_int_equal(ocp_engine_open("null", &params, &e, err, sizeof err), 0);
    double t0 = ocp_now();
    char *t1 = one_page(e, "task-1");
    assert_true(ocp_now() - t0 >= 0.115);
    ocp_engine_close(e);
    /* A second open in the same process goes on counting: no mark twice. */
    setenv("OCRPOOL_NULL_SLEEP_MS", "0", 1);
    assert_int_equal(ocp_engine_open("null", &params, &e, err, sizeof err), 0);
    char *t2 = one_page(e, "task-1");
    ocp_engine_close(e);
    assert_string_not_equal(t1, t2);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char line[128];
    assert_non_null(fgets(line, sizeof line, f));
    snprintf(want, sizeof want, "task-1 %s\n", t1 + strlen("null "));
    assert_string_equal(line, want);
    assert_non_null(fgets(line, sizeof line, f));
    snprintf(want, sizeof want, "task-1 %s\n", t2 + strlen("null "));
    assert_string_equal(line, want);
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
    snprintf(want, sizeof want, "null %ld.", (long)getpid());
    assert_memory_equal(t1, want, strlen(want));
    free(t1);
    free(t2);
    unlink(log);
    rmdir(dir);
    unsetenv("OCRPOOL_NULL_LOG");
    unsetenv("OCRPOOL_NULL_SLEEP_MS");
}

static void test_bad_sleep(void **state)
{
    (void)state;
    const char *bad[] = {"ten", "-1", "60001", "5ms"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        ocp_engine *e = NULL;
        setenv("OCRPOOL_NULL_SLEEP_MS", bad[i], 1);
        assert_int_not_equal(ocp_engine_open("null", &params, &e, err, sizeof err), 0);
        assert_non_null(strstr(err, "OCRPOOL_NULL_SLEEP_MS"));
        assert_null(e);
    }
    unsetenv("OCRPOOL_NULL_SLEEP_MS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_sleep_and_log),
        cmocka_unit_test(test_bad_sleep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
