/*
 * http.c: the HTTP API over libmicrohttpd (http.h).
 *
 *   GET  /healthz, /readyz
 *   GET  /metrics                       Prometheus text format
 *   GET  /                              the dashboard (from the binary)
 *   GET  /v1/stats, /v1/failures        what the dashboard polls
 *   POST /v1/ocr                        one page now (raw body or multipart)
 *   POST /v1/jobs                       multipart files, or JSON {"paths": [...]}
 *   GET  /v1/jobs/ID, /v1/jobs/ID/result?format=F, /v1/groups/ID
 *
 * A thread per connection (capped); every endpoint but /healthz needs
 * "Authorization: Bearer TOKEN" when a token is set; bodies are capped;
 * paths outside --allow-root are refused; nothing runs a shell.
 */
#include "http/http.h"
#include "broker/broker.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/result.h"
#include "pool/control.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct upload {
    char *path; /* spool file */
    char *name; /* as sent */
    int fd;
    long size;
} upload;

typedef struct req {
    char *body;
    size_t len;
    int too_big;
    int refused; /* a response is queued already */
    struct MHD_PostProcessor *pp;
    upload files[64];
    int nfiles;
    const ocp_http_conf *hc;
} req;

static const ocp_http_conf *g_hc;
static volatile sig_atomic_t g_stop;

static void on_stop(int s)
{
    (void)s;
    g_stop = 1;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    enum MHD_Result r = reply(c, status, "application/json", s ? s : "{}", s ? strlen(s) : 2);
    free(s);
    json_decref(o);
    return r;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return reply_json(c, status, json_pack("{s:s, s:i}", "error", msg, "status", status));
}

static ocp_broker *broker(char *err, size_t len)
{
    ocp_broker *b = NULL;
    if (ocp_broker_open(g_hc->broker_url, g_hc->broker_opts, &b, err, len))
        return NULL;
    return b;
}

/* The master's figures, or NULL without a pool. */
static json_t *master_stats(void)
{
    if (!g_hc->control_path)
        return NULL;
    json_t *ask = json_pack("{s:s}", "cmd", "stats"), *rep = NULL;
    int rc = ocp_control_call(g_hc->control_path, ask, &rep, 3.0);
    json_decref(ask);
    if (rc || !json_is_true(json_object_get(rep, "ok"))) {
        json_decref(rep);
        return NULL;
    }
    return rep;
}

static int bearer_ok(struct MHD_Connection *c)
{
    if (!g_hc->token || !*g_hc->token)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return 0;
    const char *t = h + 7, *want = g_hc->token;
    size_t n = strlen(want), m = strlen(t);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++) /* constant time over the token's length */
        diff |= (unsigned char)(want[i] ^ (i < m ? t[i] : 0));
    return diff == 0;
}

/* A new spool file for an upload; its path in *path (new). */
static int spool_file(const char *name, char **path)
{
    char uuid[37];
    ocp_uuid4(uuid);
    const char *dot = name ? strrchr(name, '.') : NULL;
    char ext[12] = "";
    if (dot && strlen(dot) < sizeof ext &&
        strspn(dot + 1, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == strlen(dot + 1))
        snprintf(ext, sizeof ext, "%s", dot);
    *path = ocp_xasprintf("%s/%s%s", g_hc->spool_dir, uuid, ext);
    int fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        free(*path);
        *path = NULL;
        return -errno;
    }
    return fd;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *ctype, const char *encoding,
                                 const char *data, uint64_t off, size_t size)
{
    (void)kind;
    (void)key;
    (void)ctype;
    (void)encoding;
    req *r = cls;
    if (!filename)
        return MHD_YES; /* ordinary form fields are ignored */
    upload *u = r->nfiles ? &r->files[r->nfiles - 1] : NULL;
    if (off == 0 || !u || strcmp(u->name, filename) != 0 || u->fd < 0) {
        if (r->nfiles == 64)
            return MHD_NO;
        u = &r->files[r->nfiles++];
        memset(u, 0, sizeof *u);
        u->name = ocp_xstrdup(filename);
        u->fd = spool_file(filename, &u->path);
        if (u->fd < 0)
            return MHD_NO;
    }
    u->size += (long)size;
    r->len += size;
    if ((long)r->len > r->hc->max_body) {
        r->too_big = 1;
        return MHD_NO;
    }
    while (size > 0) {
        ssize_t w = write(u->fd, data, size);
        if (w <= 0)
            return MHD_NO;
        data += w;
        size -= (size_t)w;
    }
    return MHD_YES;
}

static void req_free(req *r)
{
    if (!r)
        return;
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    for (int i = 0; i < r->nfiles; i++) {
        if (r->files[i].fd >= 0)
            close(r->files[i].fd);
        free(r->files[i].path);
        free(r->files[i].name);
    }
    free(r->body);
    free(r);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req_free(*con_cls);
    *con_cls = NULL;
}

typedef struct queued {
    json_t *tasks;
    const char *name;
} queued;

static void note_task(void *ctx, const char *id, int page, int pages, int inserted)
{
    (void)pages;
    (void)inserted;
    queued *q = ctx;
    json_array_append_new(
        q->tasks, json_pack("{s:s, s:s, s:i}", "id", id, "source", q->name, "page", page + 1));
}

static ocp_submit_opts submit_opts(struct MHD_Connection *c, const char *group, int priority)
{
    const char *lang = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "lang");
    ocp_submit_opts so = {
        .lang = lang && *lang ? lang : ocp_config_str(g_hc->cfg, OCP_S_LANG),
        .group = group,
        .priority = priority,
        .max_image_size = -1,
    };
    return so;
}

/* Queues the uploads (or paths) of r; fills tasks; returns an HTTP status. */
static unsigned submit_all(struct MHD_Connection *c, req *r, ocp_broker *b, const char *group,
                           int priority, json_t *paths, json_t *tasks, char *err, size_t errlen)
{
    ocp_image_limits lim = ocp_cli_limits(g_hc->cfg);
    ocp_submit_opts so = submit_opts(c, group, priority);
    if (!so.lang || strpbrk(so.lang, "./") == so.lang || strstr(so.lang, "..")) {
        snprintf(err, errlen, "bad lang");
        return 400;
    }
    queued q = {tasks, NULL};
    for (int i = 0; i < r->nfiles; i++) {
        q.name = r->files[i].name;
        close(r->files[i].fd);
        r->files[i].fd = -1;
        if (ocp_cli_submit_file(b, r->files[i].path, &lim, &so, note_task, &q, err, errlen))
            return 422;
    }
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p)
    {
        const char *path = json_string_value(p);
        char real[PATH_MAX], root[PATH_MAX];
        if (!path) {
            snprintf(err, errlen, "paths must be strings");
            return 400;
        }
        if (!g_hc->allow_root || !*g_hc->allow_root || !realpath(g_hc->allow_root, root)) {
            snprintf(err, errlen, "no --allow-root: paths are not accepted");
            return 403;
        }
        size_t rl = strlen(root);
        if (!realpath(path, real) || strncmp(real, root, rl) != 0 ||
            (real[rl] != '/' && real[rl] != '\0')) {
            snprintf(err, errlen, "path outside --allow-root: %.200s", path);
            return 403;
        }
        q.name = path;
        if (ocp_cli_submit_file(b, real, &lim, &so, note_task, &q, err, errlen))
            return 422;
    }
    return 202;
}

static int keep_failure(void *ctx, const ocp_task_info *i);
static int page_row(void *ctx, const ocp_task_info *i);

static enum MHD_Result route(struct MHD_Connection *c, const char *url, const char *method, req *r)
{
    char err[700];
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

    if (get && strcmp(url, "/healthz") == 0)
        return reply(c, 200, "text/plain; charset=utf-8", "ok\n", 3);
    if (get && strcmp(url, "/") == 0)
        return reply(c, 200, "text/html; charset=utf-8", ocp_dashboard_html,
                     strlen(ocp_dashboard_html));
    if (get && strcmp(url, "/readyz") == 0) {
        ocp_broker *b = broker(err, sizeof err);
        json_t *st = master_stats();
        int ok = b && (st || !g_hc->control_path);
        ocp_broker_close(b);
        json_decref(st);
        return reply_json(c, ok ? 200 : 503, json_pack("{s:b}", "ready", ok));
    }
    if (get && strcmp(url, "/metrics") == 0) {
        ocp_broker *b = broker(err, sizeof err);
        if (!b)
            return reply_error(c, 503, err);
        ocp_counts n;
        ocp_broker_counts(b, NULL, &n);
        ocp_broker_close(b);
        ocp_sb sb;
        ocp_sb_init(&sb);
        ocp_sb_printf(&sb,
                      "# HELP ocrpool_tasks Pages in the queue by state.\n"
                      "# TYPE ocrpool_tasks gauge\n"
                      "ocrpool_tasks{state=\"ready\"} %ld\nocrpool_tasks{state=\"leased\"} %ld\n",
                      n.ready, n.leased);
        /* A broker that does not count finished pages (redis: expiring result keys) leaves
         * those series out rather than report a number it does not know. */
        if (n.done >= 0)
            ocp_sb_printf(&sb,
                          "ocrpool_tasks{state=\"done\"} %ld\nocrpool_tasks{state=\"failed\"} "
                          "%ld\nocrpool_tasks{state=\"buried\"} %ld\n",
                          n.done, n.failed, n.buried);
        ocp_sb_printf(&sb,
                      "# HELP ocrpool_queue_depth Pages waiting or running.\n"
                      "# TYPE ocrpool_queue_depth gauge\nocrpool_queue_depth %ld\n",
                      n.ready + n.leased);
        json_t *st = master_stats();
        if (st) {
            json_t *pg = json_object_get(st, "pages");
            ocp_sb_printf(&sb,
                          "# HELP ocrpool_pages_total Pages this node finished.\n"
                          "# TYPE ocrpool_pages_total counter\n"
                          "ocrpool_pages_total{result=\"done\"} %lld\n"
                          "ocrpool_pages_total{result=\"failed\"} %lld\n"
                          "# HELP ocrpool_pages_per_second Pages per second since the node "
                          "started.\n# TYPE ocrpool_pages_per_second gauge\n"
                          "ocrpool_pages_per_second %.6f\n",
                          (long long)json_integer_value(json_object_get(pg, "done")),
                          (long long)json_integer_value(json_object_get(pg, "failed")),
                          json_real_value(json_object_get(pg, "per_second")));
            static const char *const le[9] = {"0.25", "0.5", "1",  "2",   "5",
                                              "10",   "30",  "60", "+Inf"};
            json_t *hb = json_object_get(st, "duration_buckets");
            long long cum = 0;
            ocp_sb_puts(&sb, "# HELP ocrpool_page_duration_seconds Time to OCR a page.\n"
                             "# TYPE ocrpool_page_duration_seconds histogram\n");
            for (int i = 0; i < 9; i++) {
                cum += json_integer_value(json_array_get(hb, (size_t)i));
                ocp_sb_printf(&sb, "ocrpool_page_duration_seconds_bucket{le=\"%s\"} %lld\n", le[i],
                              cum);
            }
            ocp_sb_printf(&sb,
                          "ocrpool_page_duration_seconds_sum %.6f\n"
                          "ocrpool_page_duration_seconds_count %lld\n",
                          json_real_value(json_object_get(st, "duration_sum")), cum);
            size_t i;
            json_t *w;
            static const struct {
                const char *name, *help, *key;
            } wm[] = {
                {"ocrpool_worker_rss_bytes", "Resident size of each worker.", "rss_kb"},
                {"ocrpool_worker_pss_bytes",
                 "Proportional size of each worker (shared pages divided among sharers).",
                 "pss_kb"},
            };
            for (size_t k = 0; k < sizeof wm / sizeof wm[0]; k++) {
                ocp_sb_printf(&sb, "# HELP %s %s\n# TYPE %s gauge\n", wm[k].name, wm[k].help,
                              wm[k].name);
                json_array_foreach(json_object_get(st, "workers"), i, w)
                {
                    json_t *m = json_object_get(w, "memory");
                    ocp_sb_printf(&sb, "%s{pid=\"%lld\",slot=\"%lld\"} %lld\n", wm[k].name,
                                  (long long)json_integer_value(json_object_get(w, "pid")),
                                  (long long)json_integer_value(json_object_get(w, "slot")),
                                  (long long)json_integer_value(json_object_get(m, wm[k].key)) *
                                      1024);
                }
            }
            ocp_sb_puts(&sb, "# HELP ocrpool_recycles_total Workers replaced, by reason.\n"
                             "# TYPE ocrpool_recycles_total counter\n");
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(st, "recycles"), k, v)
                ocp_sb_printf(&sb, "ocrpool_recycles_total{reason=\"%s\"} %lld\n", k,
                              (long long)json_integer_value(v));
            ocp_sb_puts(&sb,
                        "# HELP ocrpool_worker_gpu_memory_bytes GPU memory of each worker "
                        "(NVML's process list).\n# TYPE ocrpool_worker_gpu_memory_bytes gauge\n");
            json_array_foreach(json_object_get(st, "workers"), i, w) ocp_sb_printf(
                &sb, "ocrpool_worker_gpu_memory_bytes{pid=\"%lld\"} %lld\n",
                (long long)json_integer_value(json_object_get(w, "pid")),
                (long long)json_integer_value(json_object_get(w, "gpu_memory_bytes")));
            ocp_sb_puts(&sb, "# HELP ocrpool_gpu_memory_used_bytes Memory used on each GPU.\n"
                             "# TYPE ocrpool_gpu_memory_used_bytes gauge\n"
                             "# HELP ocrpool_gpu_utilization_percent Each GPU's utilisation.\n"
                             "# TYPE ocrpool_gpu_utilization_percent gauge\n");
            json_array_foreach(json_object_get(st, "gpus"), i, w)
            {
                long long idx = (long long)json_integer_value(json_object_get(w, "index"));
                ocp_sb_printf(
                    &sb, "ocrpool_gpu_memory_used_bytes{gpu=\"%lld\"} %lld\n", idx,
                    (long long)json_integer_value(json_object_get(w, "memory_used_bytes")));
                ocp_sb_printf(
                    &sb, "ocrpool_gpu_memory_total_bytes{gpu=\"%lld\"} %lld\n", idx,
                    (long long)json_integer_value(json_object_get(w, "memory_total_bytes")));
                ocp_sb_printf(
                    &sb, "ocrpool_gpu_utilization_percent{gpu=\"%lld\"} %lld\n", idx,
                    (long long)json_integer_value(json_object_get(w, "utilization_gpu_percent")));
            }
            json_t *bg = json_object_get(st, "budget");
            ocp_sb_printf(&sb,
                          "# HELP ocrpool_memory_budget_bytes The memory budget and the "
                          "estimate in use.\n# TYPE ocrpool_memory_budget_bytes gauge\n"
                          "ocrpool_memory_budget_bytes{kind=\"limit\"} %lld\n"
                          "ocrpool_memory_budget_bytes{kind=\"in_use\"} %.0f\n",
                          (long long)json_integer_value(json_object_get(bg, "limit_mb")) << 20,
                          json_real_value(json_object_get(bg, "in_use_mb")) * 1048576.0);
            json_decref(st);
        }
        enum MHD_Result ret =
            reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", sb.buf, sb.len);
        ocp_sb_fini(&sb);
        return ret;
    }
    if (get && strcmp(url, "/v1/stats") == 0) {
        json_t *st = master_stats();
        return reply_json(c, 200, st ? st : json_pack("{s:b}", "workers", 0));
    }
    if (get && strcmp(url, "/v1/failures") == 0) {
        ocp_broker *b = broker(err, sizeof err);
        if (!b)
            return reply_error(c, 503, err);
        json_t *all = json_array();
        ocp_broker_list(b, NULL, 0, keep_failure, all);
        ocp_broker_close(b);
        while (json_array_size(all) > 20)
            json_array_remove(all, 0);
        return reply_json(c, 200, all);
    }
    if (post && (strcmp(url, "/v1/jobs") == 0 || strcmp(url, "/v1/ocr") == 0)) {
        int now = strcmp(url, "/v1/ocr") == 0;
        json_t *paths = NULL;
        if (!r->pp && r->len && !now) {
            json_error_t je;
            json_t *body = json_loadb(r->body, r->len, 0, &je);
            if (!json_is_object(body) || !json_is_array(json_object_get(body, "paths"))) {
                json_decref(body);
                return reply_error(c, 400, "expected multipart files or JSON {\"paths\": [...]}");
            }
            paths = json_incref(json_object_get(body, "paths"));
            json_decref(body);
        } else if (!r->pp && r->len && now) {
            /* A raw image or PDF in the body. */
            upload *u = &r->files[r->nfiles++];
            memset(u, 0, sizeof *u);
            u->name = ocp_xstrdup("upload");
            u->fd = spool_file(NULL, &u->path);
            if (u->fd < 0 || write(u->fd, r->body, r->len) != (ssize_t)r->len)
                return reply_error(c, 507, "cannot keep the upload");
        }
        if (r->nfiles == 0 && json_array_size(paths) == 0) {
            json_decref(paths);
            return reply_error(c, 400, "nothing to OCR");
        }
        ocp_broker *b = broker(err, sizeof err);
        if (!b) {
            json_decref(paths);
            return reply_error(c, 503, err);
        }
        char group[48], uuid[37];
        ocp_uuid4(uuid);
        snprintf(group, sizeof group, "%s%s", now ? "now-" : "", uuid);
        json_t *tasks = json_array();
        unsigned st = submit_all(c, r, b, group, now ? 9 : 5, paths, tasks, err, sizeof err);
        json_decref(paths);
        if (st != 202) {
            ocp_broker_close(b);
            json_decref(tasks);
            return reply_error(c, st, err);
        }
        if (!now) {
            ocp_broker_close(b);
            return reply_json(c, 202, json_pack("{s:s, s:o}", "group", group, "tasks", tasks));
        }
        /* OCR now: wait for the page (the first one) to finish. */
        const char *id = json_string_value(json_object_get(json_array_get(tasks, 0), "id"));
        double limit = ocp_config_double(g_hc->cfg, OCP_S_PAGE_TIMEOUT) + 60;
        double t0 = ocp_now();
        enum MHD_Result ret = MHD_NO;
        for (;;) {
            ocp_task_info info;
            if (ocp_broker_get(b, id, &info) == 0) {
                if (info.state == OCP_TASK_DONE) {
                    ret = reply(c, 200, "application/json", info.result, strlen(info.result));
                    ocp_task_info_fini(&info);
                    break;
                }
                if (info.state >= OCP_TASK_FAILED) {
                    ret = reply_error(c, 422, info.error ? info.error : "failed");
                    ocp_task_info_fini(&info);
                    break;
                }
                ocp_task_info_fini(&info);
            }
            if (ocp_now() - t0 > limit || g_stop) {
                ret = reply_error(c, 504, "the page did not finish in time");
                break;
            }
            usleep(50000);
        }
        ocp_broker_close(b);
        json_decref(tasks);
        return ret;
    }
    if (get && strncmp(url, "/v1/jobs/", 9) == 0) {
        char id[80];
        const char *rest = url + 9, *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        int want_result = slash && strcmp(slash, "/result") == 0;
        if (n == 0 || n >= sizeof id || (slash && !want_result))
            return reply_error(c, 404, "no such resource");
        memcpy(id, rest, n);
        id[n] = '\0';
        ocp_broker *b = broker(err, sizeof err);
        if (!b)
            return reply_error(c, 503, err);
        ocp_task_info info;
        int rc = ocp_broker_get(b, id, &info);
        ocp_broker_close(b);
        if (rc)
            return reply_error(c, 404, "no such job");
        enum MHD_Result ret;
        if (!want_result) {
            json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i}", "id", info.id, "group", info.group,
                                  "state", ocp_task_state_name(info.state), "deliveries",
                                  info.deliveries, "priority", info.priority);
            json_object_set_new(o, "error", info.error ? json_string(info.error) : json_null());
            json_object_set_new(o, "started",
                                info.started > 0 ? json_real(info.started) : json_null());
            json_object_set_new(o, "finished",
                                info.finished > 0 ? json_real(info.finished) : json_null());
            ret = reply_json(c, 200, o);
        } else if (info.state != OCP_TASK_DONE || !info.result) {
            snprintf(err, sizeof err, "job is %s%s%s", ocp_task_state_name(info.state),
                     info.error ? ": " : "", info.error ? info.error : "");
            ret = reply_error(c, 409, err);
        } else {
            const char *f = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
            int fmt = f ? ocp_format_parse(f) : OCP_FMT_JSON;
            if (fmt <= 0 || (fmt & (fmt - 1))) {
                ret = reply_error(c, 400, "format: one of txt, json, hocr, alto, tsv");
            } else if (fmt == OCP_FMT_JSON) {
                ret = reply(c, 200, "application/json", info.result, strlen(info.result));
            } else {
                static const char *const types[] = {"",
                                                    "text/plain; charset=utf-8",
                                                    "",
                                                    "",
                                                    "text/html; charset=utf-8",
                                                    "",
                                                    "",
                                                    "",
                                                    "application/xml",
                                                    "",
                                                    "",
                                                    "",
                                                    "",
                                                    "",
                                                    "",
                                                    "",
                                                    "text/tab-separated-values; charset=utf-8"};
                ocp_result res;
                ocp_sb sb;
                ocp_result_init(&res);
                ocp_sb_init(&sb);
                ocp_result_from_json(&res, info.result);
                ocp_result_render(&res, fmt, &sb);
                ret = reply(c, 200, types[fmt], sb.buf, sb.len);
                ocp_sb_fini(&sb);
                ocp_result_fini(&res);
            }
        }
        ocp_task_info_fini(&info);
        return ret;
    }
    if (get && strncmp(url, "/v1/groups/", 11) == 0) {
        const char *g = url + 11;
        if (!*g || strchr(g, '/'))
            return reply_error(c, 404, "no such resource");
        ocp_broker *b = broker(err, sizeof err);
        if (!b)
            return reply_error(c, 503, err);
        ocp_counts n;
        ocp_broker_counts(b, g, &n);
        json_t *pages = json_array();
        ocp_broker_list(b, g, 0, page_row, pages);
        ocp_broker_close(b);
        if (json_array_size(pages) == 0) {
            json_decref(pages);
            return reply_error(c, 404, "no such group");
        }
        return reply_json(c, 200,
                          json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "group", g, "total",
                                    (json_int_t)json_array_size(pages), "queued",
                                    (json_int_t)n.ready, "running", (json_int_t)n.leased, "done",
                                    (json_int_t)n.done, "failed", (json_int_t)n.failed, "buried",
                                    (json_int_t)n.buried, "pages", pages));
    }
    return reply_error(c, get || post ? 404 : 405,
                       get || post ? "no such resource" : "method not allowed");
}

static int keep_failure(void *ctx, const ocp_task_info *i)
{
    if (i->state == OCP_TASK_FAILED || i->state == OCP_TASK_BURIED)
        json_array_append_new(ctx, json_pack("{s:s, s:s, s:s?, s:f}", "id", i->id, "state",
                                             ocp_task_state_name(i->state), "reason", i->error,
                                             "finished", i->finished));
    return 0;
}

static int page_row(void *ctx, const ocp_task_info *i)
{
    json_t *p = i->payload ? json_loads(i->payload, 0, NULL) : NULL;
    json_array_append_new(
        ctx, json_pack("{s:s, s:s, s:i, s:s?}", "id", i->id, "state", ocp_task_state_name(i->state),
                       "page", p ? (int)json_integer_value(json_object_get(p, "page")) + 1 : 0,
                       "reason", i->error));
    json_decref(p);
    return 0;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **con_cls)
{
    (void)cls;
    (void)version;
    req *r = *con_cls;
    if (!r) {
        r = ocp_xcalloc(1, sizeof *r);
        r->hc = g_hc;
        *con_cls = r;
        /* /healthz, and the dashboard's page itself (static, no data: a browser cannot add a
         * header to a navigation; the page sends the token, from #token=, on its calls). */
        int open_path =
            strcmp(url, "/healthz") == 0 || (strcmp(url, "/") == 0 && strcmp(method, "GET") == 0);
        if (!open_path && !bearer_ok(c)) {
            r->refused = 1;
            return reply_error(c, 401, "missing or wrong bearer token");
        }
        const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (len && atoll(len) > g_hc->max_body) {
            r->refused = 1;
            return reply_error(c, 413, "body over the size cap");
        }
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (strcmp(method, "POST") == 0 && ct && strncmp(ct, "multipart/form-data", 19) == 0)
            r->pp = MHD_create_post_processor(c, 65536, post_iter, r);
        return MHD_YES;
    }
    if (r->refused) {
        *size = 0; /* drain what the client still sends */
        return MHD_YES;
    }
    if (*size) {
        if (r->pp) {
            if (MHD_post_process(r->pp, data, *size) != MHD_YES && !r->too_big)
                r->too_big = -1; /* malformed multipart */
        } else if (!r->too_big) {
            if ((long)(r->len + *size) > g_hc->max_body) {
                r->too_big = 1;
            } else {
                r->body = ocp_xrealloc(r->body, r->len + *size + 1);
                memcpy(r->body + r->len, data, *size);
                r->len += *size;
            }
        }
        *size = 0;
        return MHD_YES;
    }
    if (r->too_big > 0)
        return reply_error(c, 413, "body over the size cap");
    if (r->too_big < 0)
        return reply_error(c, 400, "malformed multipart body");
    return route(c, url, method, r);
}

static int note_source(void *ctx, const ocp_task_info *i)
{
    json_t *p = i->payload ? json_loads(i->payload, 0, NULL) : NULL;
    const char *src = p ? json_string_value(json_object_get(p, "source")) : NULL;
    if (src)
        json_object_set_new(ctx, src, json_true());
    json_decref(p);
    return 0;
}

/* Deletes spool files no task refers to any more, once older than the result lifetime
 * (a file just uploaded may not be queued yet). */
static void sweep_spool(double expires)
{
    char err[600];
    ocp_broker *b = broker(err, sizeof err);
    if (!b)
        return;
    json_t *used = json_object();
    int rc = ocp_broker_list(b, NULL, 0, note_source, used);
    ocp_broker_close(b);
    DIR *d = rc ? NULL : opendir(g_hc->spool_dir);
    struct dirent *e;
    time_t now = time(NULL);
    long n = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", g_hc->spool_dir, e->d_name);
        char real[PATH_MAX];
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || difftime(now, st.st_mtime) < expires)
            continue;
        if (realpath(path, real) && json_object_get(used, real))
            continue;
        if (unlink(path) == 0)
            n++;
    }
    if (d)
        closedir(d);
    json_decref(used);
    if (n)
        OCP_LOG(OCP_LOG_INFO, "%ld uploads deleted: their pages expired", n);
}

static int parse_listen(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || colon - s >= (long)sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    long port = strtol(colon + 1, NULL, 10);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return 0;
}

int ocp_http_serve(const ocp_http_conf *hc, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    g_hc = hc;
    if (parse_listen(hc->listen, &sa))
        return ocp_errf(OCP_E_CONFIG, err, errlen, "--listen '%s': expected IPV4:PORT", hc->listen);
    if (ocp_image_global_init("ocrpool"))
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot start libvips");
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        ntohs(sa.sin_port), NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)hc->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
    if (!d)
        return ocp_errf(-EADDRINUSE, err, errlen, "cannot listen on %s", hc->listen);
    OCP_LOG(OCP_LOG_WARN, "HTTP API on http://%s/ (%s)", hc->listen,
            hc->token && *hc->token ? "bearer token required" : "no token");
    if (ntohl(sa.sin_addr.s_addr) >> 24 != 127 && !(hc->token && *hc->token))
        OCP_LOG(OCP_LOG_WARN,
                "listening beyond loopback without --token: anyone who can reach "
                "%s can submit pages and read results",
                hc->listen);
    struct sigaction act = {0};
    act.sa_handler = on_stop;
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    /* Uploads whose pages are gone from the queue (results expired) are deleted. */
    double expires = ocp_config_double(hc->cfg, OCP_S_RESULT_EXPIRES);
    double every =
        expires > 0 ? (expires / 2 < 300 ? (expires / 2 < 1 ? 1 : expires / 2) : 300) : 300;
    while (!g_stop) {
        for (double t = 0; t < every && !g_stop; t += 0.2)
            usleep(200000);
        if (!g_stop && expires > 0)
            sweep_spool(expires);
    }
    MHD_stop_daemon(d);
    return 0;
}
