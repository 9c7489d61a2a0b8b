/*
 * test_app.c: what the front ends share (src/app): a finished page read back
 * from a queue and parsed once, its renderings, the per-page output files,
 * a document's text in page order, the default places of the queue and
 * of uploads, queueing a document's pages (stopped by its callback), and a
 * node run in a child process (its error relayed, its end reaped, stops).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#include "app/node.h"
#include "app/output.h"
#include "app/submit.h"
#include "core/error.h"
#include "core/util.h"

static const char *result_json =
    "{\"id\":\"t1\",\"source\":\"/x/a.png\",\"page\":1,\"width\":100,\"height\":50,"
    "\"lang\":\"eng\",\"engine\":\"tesseract\",\"text\":\"hello world\\n\","
    "\"mean_confidence\":90.0,\"lines\":[{\"bbox\":[1,2,30,12],\"text\":\"hello world\","
    "\"confidence\":90.0,\"words\":[{\"bbox\":[1,2,12,12],\"text\":\"hello\",\"confidence\":"
    "91.0},{\"bbox\":[14,2,30,12],\"text\":\"world\",\"confidence\":89.0}]}],"
    "\"elapsed_ms\":1500.0,\"peak_rss_kb\":4242}";

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static char *tmpdir(void)
{
    char *d = strdup("/tmp/ocp-test-app-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rmtree(const char *d)
{
    char *cmd = ocp_xasprintf("rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

/* A page acknowledged on a SQLite queue reads back parsed once, with every field. */
static void test_page_get(void **state)
{
    (void)state;
    char *d = tmpdir(), err[300], id[64];
    char *url = ocp_xasprintf("sqlite://%s/q.db", d);
    ocp_broker *b = NULL;
    assert_int_equal(ocp_broker_open(url, NULL, &b, err, sizeof err), 0);
    ocp_task_spec spec = {.group = "g", .payload = "{\"source\":\"/x/a.png\",\"page\":0}"};
    int inserted = 0;
    assert_int_equal(ocp_broker_submit(b, &spec, id, &inserted), 0);
    ocp_app_page pg;
    /* Not finished: read, nothing parsed. */
    assert_int_equal(ocp_app_page_get(b, id, 1, &pg), 0);
    assert_int_equal(pg.info.state, OCP_TASK_READY);
    assert_int_equal(pg.parsed, 0);
    ocp_app_page_fini(&pg);
    ocp_task t[1];
    int n = 0;
    assert_int_equal(ocp_broker_lease(b, "me", NULL, 1, 60, 3, t, &n), 0);
    assert_int_equal(n, 1);
    json_t *res = json_loads(result_json, 0, NULL);
    assert_non_null(res);
    assert_int_equal(ocp_broker_ack(b, id, res, 1, 2, 4242, 1), 0);
    json_decref(res);
    ocp_task_fini(&t[0]);
    assert_int_equal(ocp_app_page_get(b, id, 1, &pg), 0);
    assert_int_equal(pg.info.state, OCP_TASK_DONE);
    assert_int_equal(pg.parsed, 1);
    assert_string_equal(pg.res.text, "hello world\n");
    assert_int_equal(pg.res.n_lines, 1);
    assert_int_equal(pg.res.n_words, 2);
    assert_int_equal(pg.res.peak_rss_kb, 4242);
    ocp_app_page_fini(&pg);
    /* Without parse, the stored text only. */
    assert_int_equal(ocp_app_page_get(b, id, 0, &pg), 0);
    assert_int_equal(pg.parsed, 0);
    assert_non_null(pg.info.result);
    ocp_app_page_fini(&pg);
    assert_int_equal(ocp_app_page_get(b, "no-such-task", 1, &pg), OCP_E_NOPAGE);
    ocp_app_page_fini(&pg);
    ocp_broker_close(b);
    free(url);
    rmtree(d);
    free(d);
}

/* JSON is the stored text as it is (no parse and dump); the others come from the parse. */
static void test_render(void **state)
{
    (void)state;
    ocp_result r;
    ocp_sb sb;
    ocp_result_init(&r);
    ocp_sb_init(&sb);
    assert_int_equal(ocp_result_from_json(&r, result_json), 0);
    ocp_app_render(result_json, &r, OCP_FMT_JSON, &sb);
    assert_string_equal(sb.buf, result_json);
    ocp_sb_reset(&sb);
    ocp_app_render(result_json, &r, OCP_FMT_TXT, &sb);
    assert_string_equal(sb.buf, "hello world\n");
    ocp_sb_reset(&sb);
    ocp_app_render(result_json, &r, OCP_FMT_HOCR, &sb);
    assert_non_null(strstr(sb.buf, "ocrx_word"));
    assert_string_equal(ocp_app_format_type(OCP_FMT_ALTO), "application/xml");
    assert_string_equal(ocp_app_format_type(OCP_FMT_TSV),
                        "text/tab-separated-values; charset=utf-8");
    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

/* Files per page and format: stem.ext alone, stem-pN.ext in a document of several pages;
 * only_missing keeps what is there. */
static void test_write_page(void **state)
{
    (void)state;
    char *d = tmpdir(), err[300];
    ocp_result r;
    ocp_result_init(&r);
    assert_int_equal(ocp_result_from_json(&r, result_json), 0);
    assert_int_equal(ocp_app_write_page(d, "a", 0, 1, OCP_FMT_TXT | OCP_FMT_JSON, result_json, &r,
                                        0, err, sizeof err),
                     0);
    char *p = ocp_xasprintf("%s/a.txt", d), *got = slurp(p);
    assert_string_equal(got, "hello world\n");
    free(got);
    free(p);
    p = ocp_xasprintf("%s/a.json", d);
    got = slurp(p);
    assert_string_equal(got, result_json);
    free(got);
    free(p);
    assert_int_equal(
        ocp_app_write_page(d, "b", 1, 3, OCP_FMT_TXT, result_json, &r, 0, err, sizeof err), 0);
    p = ocp_xasprintf("%s/b-p2.txt", d);
    assert_int_equal(access(p, F_OK), 0);
    /* Kept when only the missing ones are wanted. */
    assert_int_equal(ocp_write_file(p, "old", 3), 0);
    assert_int_equal(
        ocp_app_write_page(d, "b", 1, 3, OCP_FMT_TXT, result_json, &r, 1, err, sizeof err), 0);
    got = slurp(p);
    assert_string_equal(got, "old");
    free(got);
    free(p);
    /* A folder that is not there: the reason names the file. */
    assert_int_not_equal(ocp_app_write_page("/nonexistent/dir", "c", 0, 1, OCP_FMT_TXT, result_json,
                                            &r, 0, err, sizeof err),
                         0);
    assert_non_null(strstr(err, "/nonexistent/dir/c.txt"));
    ocp_result_fini(&r);
    rmtree(d);
    free(d);
}

/* A document's text: pages in order, form feeds between, a failed page empty. */
static void test_write_text(void **state)
{
    (void)state;
    char buf[64] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");
    char *texts[] = {"one", NULL, "three"};
    assert_int_equal(ocp_app_write_text(f, texts, 3), 0);
    fclose(f);
    assert_string_equal(buf, "one\f\fthree");
}

/* The default queue and upload places: one copy of the data folder's rule. */
static void test_places(void **state)
{
    (void)state;
    char *d = tmpdir(), buf[4200];
    setenv("XDG_DATA_HOME", d, 1);
    ocp_config *cfg = ocp_config_create();
    assert_int_equal(ocp_config_finish(cfg), 0);
    char *want = ocp_xasprintf("sqlite://%s/ocrpool/queue.db", d);
    assert_string_equal(ocp_app_broker_url(cfg, buf, sizeof buf), want);
    free(want);
    char *dir = ocp_xasprintf("%s/ocrpool", d);
    assert_int_equal(access(dir, F_OK), 0); /* made for the queue */
    free(dir);
    ocp_app_spool_dir("redis://127.0.0.1:6379/0", buf, sizeof buf);
    want = ocp_xasprintf("%s/ocrpool/spool", d);
    assert_string_equal(buf, want);
    free(want);
    ocp_app_spool_dir("sqlite:///srv/q/queue.db", buf, sizeof buf);
    assert_string_equal(buf, "/srv/q/spool");
    ocp_app_spool_dir("queue.db", buf, sizeof buf);
    assert_string_equal(buf, "spool");
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/someone", 1);
    ocp_app_data_dir(buf, sizeof buf);
    assert_string_equal(buf, "/home/someone/.local/share/ocrpool");
    ocp_config_destroy(cfg);
    rmtree(d);
    free(d);
}

typedef struct counted {
    int n, stop_after;
} counted;

static int count_page(void *ctx, const char *id, int page, int pages, int inserted)
{
    counted *k = ctx;
    (void)id;
    assert_int_equal(page, k->n);
    assert_int_equal(pages, 3);
    assert_int_equal(inserted, 1);
    return ++k->n == k->stop_after;
}

/* Every page of a three-page TIFF becomes a task; a callback that returns non-zero stops
 * the queueing there (-EINTR), the pages before it queued. */
static void test_submit_stop(void **state)
{
    (void)state;
    char *d = tmpdir(), err[600] = "";
    char *tif = ocp_xasprintf("%s/three.tif", d), *url = ocp_xasprintf("sqlite://%s/q.db", d);
    VipsImage *im = NULL;
    assert_int_equal(ocp_image_global_init("test_app"), 0);
    assert_int_equal(vips_black(&im, 16, 48, NULL), 0);
    assert_int_equal(vips_tiffsave(im, tif, "page_height", 16, NULL), 0);
    g_object_unref(im);
    ocp_broker *b = NULL;
    assert_int_equal(ocp_broker_open(url, NULL, &b, err, sizeof err), 0);
    ocp_config *cfg = ocp_config_create();
    assert_int_equal(ocp_config_finish(cfg), 0);
    ocp_image_limits lim = ocp_image_limits_from_config(cfg);
    ocp_submit_opts all = {.lang = "eng", .group = "all", .max_image_size = -1};
    ocp_submit_opts two = {.lang = "eng", .group = "two", .max_image_size = -1};
    counted k = {0, 0};
    assert_int_equal(ocp_app_submit_file(b, tif, &lim, &all, count_page, &k, err, sizeof err), 0);
    assert_int_equal(k.n, 3);
    k = (counted){0, 2};
    assert_int_equal(ocp_app_submit_file(b, tif, &lim, &two, count_page, &k, err, sizeof err),
                     -EINTR);
    assert_int_equal(k.n, 2);
    ocp_counts n;
    assert_int_equal(ocp_broker_counts(b, "all", &n), 0);
    assert_int_equal(n.ready, 3);
    assert_int_equal(ocp_broker_counts(b, "two", &n), 0);
    assert_int_equal(n.ready, 2);
    ocp_broker_close(b);
    ocp_config_destroy(cfg);
    free(tif);
    free(url);
    rmtree(d);
    free(d);
}

static int last_source(void *ctx, const ocp_task_info *i)
{
    json_t *p = json_loads(i->payload, 0, NULL);
    snprintf(ctx, PATH_MAX, "%s", json_string_value(json_object_get(p, "source")));
    json_decref(p);
    return 0;
}

/* A page's source is its file's real path, whichever way it was named: through a linked
 * folder, as a link, in a folder named before (its resolution remembered) or not. */
static void test_submit_paths(void **state)
{
    (void)state;
    char *d = tmpdir(), err[600] = "", real[PATH_MAX], got[PATH_MAX];
    assert_non_null(realpath(d, real));
    char *sub = ocp_xasprintf("%s/real", d), *png = ocp_xasprintf("%s/real/a.png", d);
    char *url = ocp_xasprintf("sqlite://%s/q.db", d), *want = ocp_xasprintf("%s/real/a.png", real);
    char *dirlink = ocp_xasprintf("%s/link", d), *filelink = ocp_xasprintf("%s/real/l.png", d);
    assert_int_equal(mkdir(sub, 0755), 0);
    VipsImage *im = NULL;
    assert_int_equal(ocp_image_global_init("test_app"), 0);
    assert_int_equal(vips_black(&im, 16, 16, NULL), 0);
    assert_int_equal(vips_pngsave(im, png, NULL), 0);
    g_object_unref(im);
    assert_int_equal(symlink("real", dirlink), 0);
    assert_int_equal(symlink("a.png", filelink), 0);
    ocp_broker *b = NULL;
    assert_int_equal(ocp_broker_open(url, NULL, &b, err, sizeof err), 0);
    ocp_config *cfg = ocp_config_create();
    assert_int_equal(ocp_config_finish(cfg), 0);
    ocp_image_limits lim = ocp_image_limits_from_config(cfg);
    const char *names[] = {"/link/a.png",   "/real/l.png", "/real/a.png",
                           "/real/./a.png", "/link/a.png", "/real/../link/l.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = ocp_xasprintf("%s%s", d, names[i]);
        ocp_submit_opts o = {.lang = "eng", .group = "g", .max_image_size = -1};
        assert_int_equal(ocp_app_submit_file(b, path, &lim, &o, NULL, NULL, err, sizeof err), 0);
        assert_int_equal(ocp_broker_list(b, "g", 0, last_source, got), 0);
        assert_string_equal(got, want);
        free(path);
    }
    /* The linked folder now leads elsewhere: the remembered resolution is not used. */
    char *other = ocp_xasprintf("%s/other", d), *opng = ocp_xasprintf("%s/other/a.png", d);
    char *owant = ocp_xasprintf("%s/other/a.png", real), *lpath = ocp_xasprintf("%s/link/a.png", d);
    assert_int_equal(mkdir(other, 0755), 0);
    assert_int_equal(vips_black(&im, 8, 8, NULL), 0);
    assert_int_equal(vips_pngsave(im, opng, NULL), 0);
    g_object_unref(im);
    ocp_submit_opts o = {.lang = "eng", .group = "g", .max_image_size = -1};
    assert_int_equal(ocp_app_submit_file(b, lpath, &lim, &o, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(unlink(dirlink), 0);
    assert_int_equal(symlink("other", dirlink), 0);
    assert_int_equal(ocp_app_submit_file(b, lpath, &lim, &o, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(ocp_broker_list(b, "g", 0, last_source, got), 0);
    assert_string_equal(got, owant);
    free(other);
    free(opng);
    free(owant);
    free(lpath);
    ocp_broker_close(b);
    ocp_config_destroy(cfg);
    free(sub);
    free(png);
    free(url);
    free(want);
    free(dirlink);
    free(filelink);
    rmtree(d);
    free(d);
}

/* Runs fn with standard error in a file; returns what was written there (new). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char *d = tmpdir(), *path = ocp_xasprintf("%s/err", d);
    fflush(stderr);
    int saved = dup(STDERR_FILENO), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *text = slurp(path);
    free(path);
    rmtree(d);
    free(d);
    return text;
}

static void wait_shown(void *n)
{
    ocp_app_node_wait(n, 1, NULL, NULL);
}

/* A node that cannot open its queue ends failed; what it said comes through the relay, and
 * the end is reaped once (later reaps say the same, without waiting). */
static void test_node_fails(void **state)
{
    (void)state;
    char err[300] = "";
    ocp_config *cfg = ocp_config_create();
    assert_int_equal(ocp_config_finish(cfg), 0);
    ocp_app_node *n = NULL;
    assert_int_equal(ocp_app_node_start(cfg, "g", "nosuch://queue", 0, &n, err, sizeof err), 0);
    assert_non_null(n);
    char *said = capture_stderr(wait_shown, n);
    assert_non_null(said);
    assert_non_null(strstr(said, "ocrpool: "));
    free(said);
    assert_int_equal(ocp_app_node_running(n), 0);
    int failed = 0;
    assert_int_equal(ocp_app_node_reap(n, &failed), 1);
    assert_int_equal(failed, 1);
    assert_int_equal(ocp_app_node_relay(n, 1, 0), 0); /* the stream has ended */
    ocp_app_node_destroy(n);
    ocp_app_node_destroy(NULL);
    ocp_config_destroy(cfg);
}

static int want_cold(void *ctx)
{
    (void)ctx;
    return OCP_NODE_COLD;
}

/* A node that ends of the stops asked for (warm, escalated to cold while waiting) has not
 * failed; a reap while it runs does not wait; destroy stops and reaps a running node. */
static void test_node_stop(void **state)
{
    (void)state;
    char *d = tmpdir(), err[300] = "", *url = ocp_xasprintf("sqlite://%s/q.db", d);
    ocp_config *cfg = ocp_config_create();
    assert_int_equal(ocp_config_finish(cfg), 0);
    ocp_app_node *n = NULL;
    int failed = -1;
    assert_int_equal(ocp_app_node_start(cfg, "g", url, 0, &n, err, sizeof err), 0);
    assert_int_equal(ocp_app_node_running(n), 1);
    ocp_app_node_stop(n, OCP_NODE_WARM);
    ocp_app_node_wait(n, 0, want_cold, NULL); /* escalates to cold while it waits */
    assert_int_equal(ocp_app_node_reap(n, &failed), 1);
    assert_int_equal(failed, 0);
    ocp_app_node_destroy(n);

    assert_int_equal(ocp_app_node_start(cfg, "g", url, 0, &n, err, sizeof err), 0);
    ocp_app_node_relay(n, 0, 200);
    assert_int_equal(ocp_app_node_reap(n, &failed), 0); /* still running: no wait */
    ocp_app_node_destroy(n);                            /* stopped warm and reaped */

    /* Killed (a third ^C): the node's whole group ends at once, and it is our doing. */
    assert_int_equal(ocp_app_node_start(cfg, "g", url, 0, &n, err, sizeof err), 0);
    ocp_app_node_relay(n, 0, 200);
    ocp_app_node_stop(n, OCP_NODE_KILL);
    ocp_app_node_wait(n, 0, NULL, NULL);
    assert_int_equal(ocp_app_node_reap(n, &failed), 1);
    assert_int_equal(failed, 0);
    ocp_app_node_destroy(n);
    ocp_config_destroy(cfg);
    free(url);
    rmtree(d);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_get),     cmocka_unit_test(test_render),
        cmocka_unit_test(test_write_page),   cmocka_unit_test(test_write_text),
        cmocka_unit_test(test_places),       cmocka_unit_test(test_submit_stop),
        cmocka_unit_test(test_submit_paths), cmocka_unit_test(test_node_fails),
        cmocka_unit_test(test_node_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
