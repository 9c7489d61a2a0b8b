/*
 * test_langs.c: the check of a task's languages (ocp_engine_check_langs) on a
 * tessdata folder made here: installed models only (script/X as the engines
 * resolve it), '+'-joined, each once, at most max-languages, and one reason
 * for every refusal. Nothing is loaded, so the model files are empty.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "engine/engine.h"

static char dir[] = "/tmp/ocp-test-langs-XXXXXX";

static void touch(const char *name)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    close(fd);
}

static int setup(void **state)
{
    (void)state;
    char path[200];
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/script", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/sub.traineddata", dir); /* a folder, not a model */
    mkdir(path, 0755);
    touch("eng.traineddata");
    touch("san.traineddata");
    touch("hin.traineddata");
    touch("tam.traineddata");
    touch("chi_sim.traineddata");
    touch("Devanagari.traineddata");   /* Debian: tessdata/Devanagari */
    touch("script/Latin.traineddata"); /* upstream: tessdata/script/Latin */
    /* A file outside tessdata that a path trick would reach. */
    touch("evil.traineddata");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static void ok(const char *langs, int max)
{
    char err[128] = "";
    int rc = ocp_engine_check_langs(dir, langs, max, err, sizeof err);
    if (rc)
        fail_msg("'%s' (max %d) refused: %s", langs, max, err);
}

static void refused(const char *langs, int max)
{
    char err[128] = "";
    int rc = ocp_engine_check_langs(dir, langs, max, err, sizeof err);
    if (rc != OCP_E_LANG || strcmp(err, "invalid language") != 0)
        fail_msg("'%s' (max %d): %d '%s'", langs ? langs : "(null)", max, rc, err);
}

static void test_installed(void **state)
{
    (void)state;
    ok("eng", 4);
    ok("san+eng", 4);
    ok("chi_sim", 4);
    ok("script/Devanagari", 4); /* falls back to tessdata/Devanagari, as the engines do */
    ok("script/Latin+eng", 4);
    ok("Devanagari", 4);
    refused("kat", 4);   /* not installed */
    refused("Latin", 4); /* only as script/Latin */
    refused("sub", 4);   /* a folder */
    refused("script/kat", 4);
}

/* The reproduction of issue 15: paths to models anywhere are refused, and the answer is the
 * same whether the file exists or not. */
static void test_paths(void **state)
{
    (void)state;
    char evil[300];
    snprintf(evil, sizeof evil, "../../../../..%s/evil", dir);
    refused(evil, 4);
    refused("../../../../etc/passwd", 4);
    refused("../../../../no/such/file", 4);
    refused("/etc/passwd", 4);
    snprintf(evil, sizeof evil, "%s/evil", dir);
    refused(evil, 4);
    refused("script/../eng", 4);
    refused("./eng", 4);
    refused("eng\n", 4);
    refused("eng ", 4);
    refused("script/", 4);
    refused("script/script/Latin", 4);
}

static void test_shape(void **state)
{
    (void)state;
    refused("", 4);
    refused(NULL, 4);
    refused("+eng", 4);
    refused("eng+", 4);
    refused("eng++san", 4);
    refused("eng+eng", 4); /* each once */
    ok("eng+san+hin+tam", 4);
    refused("eng+san+hin+tam+chi_sim", 4); /* issue 15: six languages loaded six models */
    ok("eng+san+hin+tam+chi_sim", 5);
    ok("eng+san+hin+tam", 0); /* 0: the default, 4 */
    refused("eng+san+hin+tam+chi_sim", 0);
    refused("eng+san", 1);
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    refused(big, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_installed),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_shape),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
