/*
 * test_pdfout.c: where a Celery task's output_pdf may be written (app/output.h
 * ocp_app_pdf_check: only under output-root, never over anything that is there, a symlink
 * included) and ocp_write_file's temporary file (a name planted beside the target, even a
 * symlink, is never written through).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/output.h"
#include "core/util.h"

static char dir[PATH_MAX];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/ocp-pdfout-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char *cmd = ocp_xasprintf("rm -rf '%s'", dir);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

static char *at(const char *name)
{
    return ocp_xasprintf("%s/%s", dir, name);
}

static char *slurp(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    buf = calloc(1, 4096);
    len = fread(buf, 1, 4095, f);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_check(void **state)
{
    (void)state;
    char err[700];
    char *out = at("out"), *other = at("other"), *pdf = at("out/book.pdf");
    assert_int_equal(mkdir(out, 0755), 0);
    assert_int_equal(mkdir(other, 0755), 0);

    /* No output-root: refused, whatever the path. */
    assert_int_equal(ocp_app_pdf_check(pdf, "", err, sizeof err), -EACCES);
    assert_non_null(strstr(err, "no --output-root"));
    assert_int_equal(ocp_app_pdf_check(pdf, NULL, err, sizeof err), -EACCES);

    /* Under a root (of several), nothing there: allowed. */
    char *roots = ocp_xasprintf("%s:%s", other, out);
    assert_int_equal(ocp_app_pdf_check(pdf, roots, err, sizeof err), 0);

    /* A folder outside the roots, or reached through .. out of them: refused. */
    char *outside = ocp_xasprintf("%s/x.pdf", dir);
    assert_int_equal(ocp_app_pdf_check(outside, out, err, sizeof err), -EACCES);
    assert_non_null(strstr(err, "not under --output-root"));
    char *dotdot = ocp_xasprintf("%s/../x.pdf", out);
    assert_int_equal(ocp_app_pdf_check(dotdot, out, err, sizeof err), -EACCES);

    /* A folder that is a symlink out of the roots: its real path counts. */
    char *ln = at("out/away");
    assert_int_equal(symlink(dir, ln), 0);
    char *via = ocp_xasprintf("%s/x.pdf", ln);
    assert_int_equal(ocp_app_pdf_check(via, out, err, sizeof err), -EACCES);

    /* A file there already, or a symlink (even dangling, even into the root): never
     * replaced. */
    char *victim = at("victim");
    put(victim, "keep");
    char *lnk = at("out/link.pdf"), *dangling = at("out/dangling.pdf"), *file = at("out/f.pdf");
    assert_int_equal(symlink(victim, lnk), 0);
    assert_int_equal(symlink("/nonexistent/x", dangling), 0);
    put(file, "keep");
    assert_int_equal(ocp_app_pdf_check(lnk, out, err, sizeof err), -EEXIST);
    assert_non_null(strstr(err, "never replaces a file"));
    assert_int_equal(ocp_app_pdf_check(dangling, out, err, sizeof err), -EEXIST);
    assert_int_equal(ocp_app_pdf_check(file, out, err, sizeof err), -EEXIST);

    /* Not a file's path. */
    char *slash = ocp_xasprintf("%s/", out);
    assert_int_equal(ocp_app_pdf_check(slash, out, err, sizeof err), -EINVAL);
    char *dot = ocp_xasprintf("%s/..", out);
    assert_int_equal(ocp_app_pdf_check(dot, out, err, sizeof err), -EINVAL);

    /* "/" as a root is any folder. */
    assert_int_equal(ocp_app_pdf_check(outside, "/", err, sizeof err), 0);

    char *kept = slurp(victim);
    assert_string_equal(kept, "keep");
    free(kept);
    free(out), free(other), free(pdf), free(roots), free(outside), free(dotdot), free(ln);
    free(via), free(victim), free(lnk), free(dangling), free(file), free(slash), free(dot);
}

/* The old temporary name was path.tmp.PID, opened with O_TRUNC: a symlink planted there
 * wrote through to its target. */
static void test_write_file_tmp(void **state)
{
    (void)state;
    char *path = at("page.txt"), *victim = at("victim2");
    char *planted = ocp_xasprintf("%s.tmp.%d", path, (int)getpid());
    put(victim, "keep");
    assert_int_equal(symlink(victim, planted), 0);
    assert_int_equal(ocp_write_file(path, "new", 3), 0);
    char *v = slurp(victim), *p = slurp(path);
    assert_string_equal(v, "keep");
    assert_string_equal(p, "new");
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    /* Written again: replaced (ocp_write_file's callers own their outputs). */
    assert_int_equal(ocp_write_file(path, "newer", 5), 0);
    free(p);
    p = slurp(path);
    assert_string_equal(p, "newer");
    free(v), free(p), free(path), free(victim), free(planted);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_file_tmp, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
