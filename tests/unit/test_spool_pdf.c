/*
 * test_spool_pdf.c: the spool's searchable PDFs of uploads sent with pdf=1
 * (http/spool.h), on a real SQLite queue: a job's PDF is made once, when its
 * pages have all finished (by the sweep) or on a GET that finds them done,
 * the upload deleted then and not before; the PDF goes 30 s after its first
 * download or after the result lifetime; a failed page's reason is kept; a
 * broker that does not answer keeps the job for later; a group that is not
 * a plain name never reaches the file system.
 *
 * The PDF itself is app/pdf.c's (tested in test_pdf and the integration test
 * test_pdf.sh): here build is a function that records its calls and answers
 * what the test sets, so each transition can be driven and seen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "queue_state.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include "broker/broker.h"
#include "core/error.h"
#include "http/spool.h"

/* What the fake build answers, and how often it was called. */
typedef struct fake {
    int rc; /* 0: writes BYTES */
    int calls;
} fake;

#define BYTES "%PDF-1.7 not really"

static int build(void *ctx, ocp_broker *b, const char *group, ocp_sb *out, char *err, size_t errlen)
{
    (void)b;
    fake *f = ctx;
    f->calls++;
    if (f->rc == 0) {
        ocp_sb_printf(out, "%s", BYTES);
        return 0;
    }
    return ocp_errf(f->rc, err, errlen, "group %s: page 2 is failed", group);
}


typedef struct env {
    char dir[64], spool[300];
    ocp_broker *b;
} env;

/* spool/pdf/<g><ext> into p. */
static void pdf_file(char p[600], const env *e, const char *g, const char *ext)
{
    snprintf(p, 600, "%s/pdf/%s%s", e->spool, g, ext);
}

static int exists_pdf(const env *e, const char *g, const char *ext)
{
    char p[600];
    pdf_file(p, e, g, ext);
    return access(p, F_OK) == 0;
}

/* Sets path's times back by s seconds. */
static void age_path(const char *path, int s)
{
    struct utimbuf t = {time(NULL) - s, time(NULL) - s};
    assert_int_equal(utime(path, &t), 0);
}

static void age_pdf(const env *e, const char *g, const char *ext, int s)
{
    char p[600];
    pdf_file(p, e, g, ext);
    age_path(p, s);
}

static void env_open(env *e)
{
    char url[300], err[300];
    snprintf(e->dir, sizeof e->dir, "/tmp/ocp-test-spdf-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(url, sizeof url, "sqlite://%s/q.db", e->dir);
    snprintf(e->spool, sizeof e->spool, "%s/spool", e->dir);
    assert_int_equal(mkdir(e->spool, 0700), 0);
    ocp_broker_opts o = {0};
    e->b = NULL;
    assert_int_equal(ocp_broker_open(url, &o, &e->b, err, sizeof err), 0);
}

static void env_close(env *e)
{
    char cmd[400];
    ocp_broker_close(e->b);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
}

/* An upload of n pages queued as group g, noted for its PDF; its path in *up (new), the
 * page ids in id. */
static void job(env *e, const char *g, int n, char id[][64], char **up)
{
    int fd = ocp__spool_create(e->spool, "doc.pdf", up);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "%PDF", 4), 4);
    close(fd);
    json_t *ids = json_array();
    for (int i = 0; i < n; i++) {
        ocp_task_spec spec = {.group = g, .payload = "{}"};
        int inserted = 0;
        assert_int_equal(ocp_broker_submit(e->b, &spec, id[i], &inserted), 0);
        json_array_append_new(ids, json_string(id[i]));
    }
    assert_int_equal(ocp__spool_keep_pdf(e->spool, g, *up, ids), 0);
    json_decref(ids);
}

/* Made once by the sweep when every page has finished, the upload deleted then; served
 * without building again; gone 30 s after the first download, a reason said after that;
 * the reason gone after the result lifetime. */
static void test_sweep_makes_once(void **state)
{
    (void)state;
    env e;
    env_open(&e);
    fake f = {OCP_E_EMPTY, 0};
    char id[2][64], *up = NULL, err[300], buf[64];
    const char *g = "6f1c8c2e-0c57-4e3b-9d49-1f5a1c1e7a11";
    job(&e, g, 2, id, &up);
    assert_true(exists_pdf(&e, g, ".job"));

    /* Pages waiting: the sweep makes nothing, the upload stays, the ordinary sweep leaves
     * it (no ids file, but a PDF job names it: not an orphan, however old). */
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 0);
    assert_int_equal(f.calls, 0);
    age_path(up, 7200);
    assert_int_equal(ocp__spool_sweep(e.b, e.spool, 0, 3600, 1), 0);
    assert_int_equal(access(up, F_OK), 0);

    /* A GET meanwhile: pages not done (build says so), nothing kept. */
    int fd = -1;
    assert_int_equal(ocp__spool_pdf(e.b, e.spool, g, 0, build, &f, &fd, err, sizeof err),
                     OCP_E_EMPTY);
    assert_int_equal(fd, -1);
    assert_int_equal(f.calls, 1);
    assert_true(exists_pdf(&e, g, ".job"));
    assert_int_equal(access(up, F_OK), 0);

    /* One done, one running: still nothing. */
    set_state(e.dir, id[0], OCP_TASK_DONE);
    set_state(e.dir, id[1], OCP_TASK_LEASED);
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 0);
    assert_int_equal(f.calls, 1);

    /* Both done: made, the upload and its job deleted. */
    set_state(e.dir, id[1], OCP_TASK_DONE);
    f.rc = 0;
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 1);
    assert_int_equal(f.calls, 2);
    assert_int_equal(access(up, F_OK), -1);
    assert_false(exists_pdf(&e, g, ".job"));
    assert_true(exists_pdf(&e, g, ".pdf"));

    /* Served as made, not made again; a second sweep makes nothing. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ocp__spool_pdf(e.b, e.spool, g, 0, build, &f, &fd, err, sizeof err), 0);
        assert_true(fd >= 0);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        assert_int_equal(n, (ssize_t)strlen(BYTES));
        buf[n] = '\0';
        assert_string_equal(buf, BYTES);
    }
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 0);
    assert_int_equal(f.calls, 2);

    /* Fetched: kept OCP__SPOOL_FETCHED_S more, then deleted, and a GET told why. */
    ocp__spool_pdf_fetched(e.spool, g);
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 0);
    assert_true(exists_pdf(&e, g, ".pdf"));
    age_pdf(&e, g, ".fetched", OCP__SPOOL_FETCHED_S + 1);
    ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f);
    assert_false(exists_pdf(&e, g, ".pdf"));
    assert_false(exists_pdf(&e, g, ".fetched"));
    assert_int_equal(ocp__spool_pdf(e.b, e.spool, g, 0, build, &f, &fd, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "after its first download"));

    /* The reason goes after the result lifetime; then the spool holds nothing for g. */
    age_pdf(&e, g, ".err", 3601);
    ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f);
    assert_int_equal(ocp__spool_pdf(e.b, e.spool, g, 0, build, &f, &fd, err, sizeof err), 1);
    assert_int_equal(f.calls, 2);
    free(up);
    env_close(&e);
}

/* A GET that finds the pages done makes the PDF itself (the sweep then has nothing to
 * do); an unfetched PDF goes after the result lifetime (a day when results never
 * expire). */
static void test_get_makes_it(void **state)
{
    (void)state;
    env e;
    env_open(&e);
    fake f = {0, 0};
    char id[1][64], *up = NULL, err[300];
    const char *g = "g-get";
    job(&e, g, 1, id, &up);
    set_state(e.dir, id[0], OCP_TASK_DONE);
    int fd = -1;
    assert_int_equal(ocp__spool_pdf(e.b, e.spool, g, 0, build, &f, &fd, err, sizeof err), 0);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(f.calls, 1);
    assert_int_equal(access(up, F_OK), -1);
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 0);
    assert_int_equal(f.calls, 1);
    /* Results never expire (0): kept a day at most. */
    age_pdf(&e, g, ".pdf", 3601);
    ocp__spool_sweep_pdf(e.b, e.spool, 0, 0, build, &f);
    assert_true(exists_pdf(&e, g, ".pdf"));
    age_pdf(&e, g, ".pdf", 86401);
    ocp__spool_sweep_pdf(e.b, e.spool, 0, 0, build, &f);
    assert_false(exists_pdf(&e, g, ".pdf"));
    free(up);
    env_close(&e);
}

/* A page failed: the sweep (every page finished) keeps the reason and deletes the upload;
 * a GET is told the reason without building. A broker that does not answer keeps the job
 * (and its upload) for the next sweep. */
static void test_failed_and_broker_down(void **state)
{
    (void)state;
    env e;
    env_open(&e);
    fake f = {OCP_E_EMPTY, 0};
    char id[2][64], *up = NULL, *up2 = NULL, err[300];
    job(&e, "g-failed", 2, id, &up);
    set_state(e.dir, id[0], OCP_TASK_DONE);
    set_state(e.dir, id[1], OCP_TASK_FAILED);
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 1);
    assert_int_equal(access(up, F_OK), -1);
    int fd = -1;
    assert_int_equal(ocp__spool_pdf(e.b, e.spool, "g-failed", 0, build, &f, &fd, err, sizeof err),
                     OCP_E_EMPTY);
    assert_non_null(strstr(err, "page 2 is failed"));
    assert_int_equal(f.calls, 1);

    job(&e, "g-down", 1, id, &up2);
    set_state(e.dir, id[0], OCP_TASK_DONE);
    f.rc = OCP_E_BROKER;
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 0);
    assert_int_equal(access(up2, F_OK), 0);
    assert_true(exists_pdf(&e, "g-down", ".job"));
    f.rc = 0;
    assert_int_equal(ocp__spool_sweep_pdf(e.b, e.spool, 0, 3600, build, &f), 1);
    assert_int_equal(access(up2, F_OK), -1);
    free(up);
    free(up2);
    env_close(&e);
}

/* Groups that are not plain names: never a file name (no job kept, nothing found). */
static void test_names(void **state)
{
    (void)state;
    env e;
    env_open(&e);
    fake f = {0, 0};
    char err[300], *up = NULL;
    int fd = ocp__spool_create(e.spool, "a.png", &up);
    close(fd);
    json_t *ids = json_array();
    const char *bad[] = {"", ".hidden", "../x", "a/b", "x\n", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(ocp__spool_keep_pdf(e.spool, bad[i], up, ids), -EINVAL);
        assert_int_equal(ocp__spool_pdf(e.b, e.spool, bad[i], 0, build, &f, &fd, err, sizeof err),
                         1);
    }
    char longg[150];
    memset(longg, 'a', sizeof longg - 1);
    longg[sizeof longg - 1] = '\0';
    assert_int_equal(ocp__spool_keep_pdf(e.spool, longg, up, ids), -EINVAL);
    assert_int_equal(f.calls, 0);
    /* A spool that never held a PDF job has no pdf/ folder. */
    char p[400];
    snprintf(p, sizeof p, "%s/pdf", e.spool);
    assert_int_equal(access(p, F_OK), -1);
    json_decref(ids);
    free(up);
    env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_makes_once),
        cmocka_unit_test(test_get_makes_it),
        cmocka_unit_test(test_failed_and_broker_down),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
