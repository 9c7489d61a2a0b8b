/*
 * test_config.c: the settings table: defaults, precedence (default < file
 * < environment < flag), the reference's environment aliases, validation
 * messages, presets.
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

#include "config/config.h"
#include "core/error.h"
#include "core/util.h"

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/ocp-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void clear_env(void)
{
    unsetenv("OCRPOOL_MAX_IMAGE_SIZE");
    unsetenv("SURYA_MAX_IMAGE_SIZE");
    unsetenv("SURYA_GPU_MEMORY_FRACTION");
    unsetenv("OCRPOOL_CONCURRENCY");
    unsetenv("SURYA_GPU_DEVICE");
    unsetenv("COMPILE_LAYOUT");
    unsetenv("OCRPOOL_PRESET");
    unsetenv("OCRPOOL_ALLOW_ROOT");
}

static void test_defaults(void **state)
{
    (void)state;
    ocp_config *c = ocp_config_create();
    assert_int_equal(ocp_config_int(c, OCP_S_CONCURRENCY), 2);
    assert_int_equal(ocp_config_int(c, OCP_S_PREFETCH_MULTIPLIER), 1);
    assert_true(ocp_config_bool(c, OCP_S_ACKS_LATE));
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_TASKS_PER_CHILD), 50);
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_MEMORY_PER_CHILD), 200000);
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_IMAGE_SIZE), 2048);
    assert_int_equal(ocp_config_int(c, OCP_S_PSM), 3);
    assert_string_equal(ocp_config_str(c, OCP_S_DEVICE), "auto");
    assert_true(ocp_config_double(c, OCP_S_GPU_MEMORY_FRACTION) == 0.8);
    assert_int_equal(ocp_config_int(c, OCP_S_GPU_MAX_MEMORY_MB), 0);
    assert_true(ocp_config_bool(c, OCP_S_GPU_ALLOW_GROWTH));
    assert_int_equal(ocp_config_source(c, OCP_S_CONCURRENCY), OCP_SRC_DEFAULT);
    assert_string_equal(ocp_config_origin(c, OCP_S_CONCURRENCY), "default");
    ocp_config_destroy(c);
}

static void test_precedence(void **state)
{
    (void)state;
    clear_env();
    ocp_config *c = ocp_config_create();
    char *path = write_tmp("# comment\n[worker]\nmax_image_size = 1500\nconcurrency: 3\n"
                           "lang = \"san+eng\"\n");
    assert_int_equal(ocp_config_load_file(c, path), 0);
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_IMAGE_SIZE), 1500);
    assert_int_equal(ocp_config_source(c, OCP_S_MAX_IMAGE_SIZE), OCP_SRC_FILE);
    assert_string_equal(ocp_config_str(c, OCP_S_LANG), "san+eng");
    assert_non_null(strstr(ocp_config_origin(c, OCP_S_CONCURRENCY), ":4"));

    /* The environment beats the file; ocrpool's own name beats the alias. */
    setenv("SURYA_MAX_IMAGE_SIZE", "1200", 1);
    assert_int_equal(ocp_config_load_env(c), 0);
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_IMAGE_SIZE), 1200);
    assert_string_equal(ocp_config_origin(c, OCP_S_MAX_IMAGE_SIZE),
                        "environment SURYA_MAX_IMAGE_SIZE");
    setenv("OCRPOOL_MAX_IMAGE_SIZE", "1100", 1);
    assert_int_equal(ocp_config_load_env(c), 0);
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_IMAGE_SIZE), 1100);

    /* A flag beats the environment; a later file value cannot undo it. */
    assert_int_equal(
        ocp_config_set(c, OCP_S_MAX_IMAGE_SIZE, "900", OCP_SRC_FLAG, "flag --max-image-size"), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_MAX_IMAGE_SIZE, "800", OCP_SRC_FILE, "file x:1"), 0);
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_IMAGE_SIZE), 900);
    assert_int_equal(ocp_config_source(c, OCP_S_MAX_IMAGE_SIZE), OCP_SRC_FLAG);
    /* The file's concurrency stays where nothing above set it. */
    assert_int_equal(ocp_config_int(c, OCP_S_CONCURRENCY), 3);
    unlink(path);
    clear_env();
    ocp_config_destroy(c);
}

static void test_aliases(void **state)
{
    (void)state;
    clear_env();
    setenv("SURYA_GPU_MEMORY_FRACTION", "0.25", 1);
    setenv("SURYA_GPU_DEVICE", "cuda:0,1", 1);
    setenv("COMPILE_LAYOUT", "yes", 1);
    ocp_config *c = ocp_config_create();
    assert_int_equal(ocp_config_load_env(c), 0);
    assert_true(ocp_config_double(c, OCP_S_GPU_MEMORY_FRACTION) == 0.25);
    assert_string_equal(ocp_config_str(c, OCP_S_DEVICE), "cuda:0,1");
    assert_true(ocp_config_bool(c, OCP_S_COMPILE_LAYOUT));
    clear_env();
    ocp_config_destroy(c);
}

/* Sets a bad value and checks the one-line message names setting, origin and what is allowed. */
static void expect_refused(ocp_setting_id id, const char *value, const char *allowed_part)
{
    ocp_config *c = ocp_config_create();
    int rc = ocp_config_set(c, id, value, OCP_SRC_FLAG, "flag --x");
    assert_int_equal(rc, OCP_E_CONFIG);
    const char *m = ocp_config_errmsg(c);
    assert_non_null(strstr(m, ocp_config_name(id)));
    assert_non_null(strstr(m, "flag --x"));
    assert_non_null(strstr(m, value));
    assert_non_null(strstr(m, allowed_part));
    assert_null(strchr(m, '\n'));
    ocp_config_destroy(c);
}

static void test_validation(void **state)
{
    (void)state;
    expect_refused(OCP_S_GPU_MEMORY_FRACTION, "1.5", "0.01 to 1");
    expect_refused(OCP_S_GPU_MEMORY_FRACTION, "abc", "0.01 to 1");
    expect_refused(OCP_S_GPU_MAX_MEMORY_MB, "-5", "0 to");
    expect_refused(OCP_S_MAX_MEMORY_PER_CHILD, "-1", "KiB");
    expect_refused(OCP_S_CONCURRENCY, "0", "1 to 1024");
    /* The maximum is the pool's OCP_MAX_WORKERS: that many is taken, one more refused. */
    char most[32];
    snprintf(most, sizeof most, "%d", OCP_MAX_WORKERS + 1);
    expect_refused(OCP_S_CONCURRENCY, most, "1 to 1024");
    snprintf(most, sizeof most, "%d", OCP_MAX_WORKERS);
    ocp_config *top = ocp_config_create();
    assert_int_equal(ocp_config_set(top, OCP_S_CONCURRENCY, most, OCP_SRC_FLAG, "flag -c"), 0);
    assert_int_equal(ocp_config_int(top, OCP_S_CONCURRENCY), OCP_MAX_WORKERS);
    ocp_config_destroy(top);
    expect_refused(OCP_S_CONCURRENCY, "2x", "whole number");
    expect_refused(OCP_S_PRESET, "turbo", "conservative,balanced,performance,cpu");
    expect_refused(OCP_S_DEVICE, "cuda:x", "cuda:N");
    expect_refused(OCP_S_DEVICE, "gpu", "cuda:N");
    expect_refused(OCP_S_DEVICE, "cuda:0,", "cuda:N");
    expect_refused(OCP_S_ACKS_LATE, "maybe", "true/false");
    expect_refused(OCP_S_FORMAT, "txt,docx", "txt,json,hocr,alto,tsv,pdf");
    expect_refused(OCP_S_LANG, "../etc/passwd", "language");
    expect_refused(OCP_S_LANG, "eng+", "language");

    /* The same from the environment names the variable. */
    clear_env();
    setenv("SURYA_GPU_MEMORY_FRACTION", "1.5", 1);
    ocp_config *c = ocp_config_create();
    assert_int_equal(ocp_config_load_env(c), OCP_E_CONFIG);
    assert_non_null(strstr(ocp_config_errmsg(c), "environment SURYA_GPU_MEMORY_FRACTION"));
    ocp_config_destroy(c);
    clear_env();

    /* And from a file, file and line; unknown keys are refused. */
    c = ocp_config_create();
    char *path = write_tmp("psm = 3\npreset = turbo\n");
    assert_int_equal(ocp_config_load_file(c, path), OCP_E_CONFIG);
    assert_non_null(strstr(ocp_config_errmsg(c), ":2"));
    unlink(path);
    path = write_tmp("no_such_thing = 1\n");
    assert_int_equal(ocp_config_load_file(c, path), OCP_E_CONFIG);
    assert_non_null(strstr(ocp_config_errmsg(c), "unknown setting"));
    unlink(path);
    ocp_config_destroy(c);
}

static void test_presets(void **state)
{
    (void)state;
    ocp_config *c = ocp_config_create();
    assert_int_equal(ocp_config_set(c, OCP_S_PRESET, "conservative", OCP_SRC_FLAG, "flag --preset"),
                     0);
    /* An explicit flag at the same level wins over the preset. */
    assert_int_equal(ocp_config_set(c, OCP_S_GPU_MAX_MEMORY_MB, "2048", OCP_SRC_FLAG,
                                    "flag --gpu-max-memory-mb"),
                     0);
    assert_int_equal(ocp_config_finish(c), 0);
    assert_true(ocp_config_double(c, OCP_S_GPU_MEMORY_FRACTION) == 0.5);
    assert_false(ocp_config_bool(c, OCP_S_GPU_ALLOW_GROWTH));
    assert_int_equal(ocp_config_int(c, OCP_S_GPU_MAX_MEMORY_MB), 2048);
    assert_non_null(strstr(ocp_config_origin(c, OCP_S_GPU_MEMORY_FRACTION), "preset conservative"));
    ocp_config_destroy(c);

    c = ocp_config_create();
    ocp_config_set(c, OCP_S_PRESET, "performance", OCP_SRC_ENV, "environment OCRPOOL_PRESET");
    /* A file value is below the preset's level: the preset wins. */
    ocp_config_set(c, OCP_S_GPU_MEMORY_FRACTION, "0.3", OCP_SRC_FILE, "file f:1");
    assert_int_equal(ocp_config_finish(c), 0);
    assert_true(ocp_config_double(c, OCP_S_GPU_MEMORY_FRACTION) == 1.0);
    assert_true(ocp_config_bool(c, OCP_S_GPU_ALLOW_GROWTH));
    ocp_config_destroy(c);

    c = ocp_config_create();
    ocp_config_set(c, OCP_S_PRESET, "cpu", OCP_SRC_FLAG, "flag --preset");
    assert_int_equal(ocp_config_finish(c), 0);
    assert_string_equal(ocp_config_str(c, OCP_S_DEVICE), "cpu");
    ocp_config_destroy(c);

    c = ocp_config_create();
    ocp_config_set(c, OCP_S_PRESET, "balanced", OCP_SRC_FLAG, "flag --preset");
    assert_int_equal(ocp_config_finish(c), 0);
    assert_true(ocp_config_double(c, OCP_S_GPU_MEMORY_FRACTION) == 0.8);
    assert_int_equal(ocp_config_int(c, OCP_S_GPU_MAX_MEMORY_MB), 0);
    assert_true(ocp_config_bool(c, OCP_S_GPU_ALLOW_GROWTH));
    ocp_config_destroy(c);
}

static void test_show(void **state)
{
    (void)state;
    ocp_config *c = ocp_config_create();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ocp_config_show(c, f, false, "tesseract", 0);
    fclose(f);
    assert_non_null(strstr(buf, "max-memory-per-child   200000 KiB"));
    assert_non_null(strstr(buf, "math-mode"));
    /* Every setting is listed, one per line. */
    int lines = 0;
    for (char *p = buf; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, OCP_S__COUNT);
    const char *mm = strstr(buf, "math-mode");
    assert_non_null(strstr(mm, "accepted, not used by engine tesseract"));
    free(buf);

    f = open_memstream(&buf, &len);
    ocp_config_show(c, f, false, "future-gpu-engine",
                    OCP_FEAT_GPU | OCP_FEAT_MATH | OCP_FEAT_COMPILE);
    fclose(f);
    assert_null(strstr(buf, "not used"));
    free(buf);
    ocp_config_destroy(c);
}

/* allow-root is a list: repeated at one level it grows (flags, file lines), a higher level
 * replaces it, the environment takes ':'-joined folders; empty parts are refused. */
static void test_allow_root_list(void **state)
{
    (void)state;
    clear_env();
    ocp_config *c = ocp_config_create();
    assert_string_equal(ocp_config_str(c, OCP_S_ALLOW_ROOT), "");
    char *path = write_tmp("allow-root = /srv/a\nallow_root = /srv/b\n");
    assert_int_equal(ocp_config_load_file(c, path), 0);
    assert_string_equal(ocp_config_str(c, OCP_S_ALLOW_ROOT), "/srv/a:/srv/b");
    unlink(path);
    setenv("OCRPOOL_ALLOW_ROOT", "/e1:/e2", 1);
    assert_int_equal(ocp_config_load_env(c), 0);
    assert_string_equal(ocp_config_str(c, OCP_S_ALLOW_ROOT), "/e1:/e2");
    assert_int_equal(ocp_config_set(c, OCP_S_ALLOW_ROOT, "/f1", OCP_SRC_FLAG, "flag"), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_ALLOW_ROOT, "/f2", OCP_SRC_FLAG, "flag"), 0);
    assert_string_equal(ocp_config_str(c, OCP_S_ALLOW_ROOT), "/f1:/f2");
    clear_env();
    ocp_config_destroy(c);
    expect_refused(OCP_S_ALLOW_ROOT, "/a::/b", "folders joined with ':'");
    expect_refused(OCP_S_ALLOW_ROOT, ":/a", "folders joined with ':'");
}

/* lang names at most max-languages languages (each a model to load): checked once every
 * source is read, so a flag raising the limit counts wherever it stands. */
static void test_max_languages(void **state)
{
    (void)state;
    clear_env();
    ocp_config *c = ocp_config_create();
    assert_int_equal(ocp_config_int(c, OCP_S_MAX_LANGUAGES), 4);
    assert_int_equal(ocp_config_lang_count("san+eng"), 2);
    assert_int_equal(ocp_config_lang_count("eng"), 1);
    assert_int_equal(ocp_config_lang_count(""), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_LANG, "a+b+c+d", OCP_SRC_FLAG, "flag -l"), 0);
    assert_int_equal(ocp_config_finish(c), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_LANG, "a+b+c+d+e", OCP_SRC_FLAG, "flag -l"), 0);
    assert_int_equal(ocp_config_finish(c), OCP_E_CONFIG);
    assert_non_null(strstr(ocp_config_errmsg(c), "max-languages 4"));
    assert_non_null(strstr(ocp_config_errmsg(c), "flag -l"));
    assert_int_equal(ocp_config_set(c, OCP_S_MAX_LANGUAGES, "5", OCP_SRC_FLAG, "flag"), 0);
    assert_int_equal(ocp_config_finish(c), 0);
    ocp_config_destroy(c);
}

static void test_find(void **state)
{
    (void)state;
    assert_int_equal(ocp_config_find("max-image-size"), OCP_S_MAX_IMAGE_SIZE);
    assert_int_equal(ocp_config_find("MAX_IMAGE_SIZE"), OCP_S_MAX_IMAGE_SIZE);
    assert_int_equal(ocp_config_find("nope"), -1);
    assert_int_equal(ocp_config_find_short('l'), OCP_S_LANG);
    assert_int_equal(ocp_config_find_short('c'), OCP_S_CONCURRENCY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults), cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_aliases),  cmocka_unit_test(test_validation),
        cmocka_unit_test(test_presets),  cmocka_unit_test(test_show),
        cmocka_unit_test(test_find),     cmocka_unit_test(test_allow_root_list),
        cmocka_unit_test(test_max_languages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
