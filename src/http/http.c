/*
 * http.c: the HTTP API over libmicrohttpd (http.h).
 *
 *   GET  /healthz, /readyz
 *   GET  /metrics                       Prometheus text format
 *   GET  /                              the dashboard (from the binary)
 *   GET  /v1/stats, /v1/failures        what the dashboard polls
 *   POST /v1/ocr                        one page now (raw body or multipart)
 *   POST /v1/jobs[?pdf=1]               multipart files (and a field pdf=1), or JSON
 *                                       {"paths": [...]}
 *   GET  /v1/jobs/ID, /v1/jobs/ID/result?format=F, /v1/groups/ID
 *   GET  /v1/groups/ID/result?format=pdf  the group's document as a searchable PDF
 *
 * Each endpoint is a row of one route table (method, path pattern, whether
 * it needs the token, handler); the handlers are small and the Prometheus
 * exposition is metrics.c. Submitting pages and rendering results are
 * app/'s, shared with the command line.
 *
 * A thread per connection (capped, and closed when silent for the
 * connection timeout: a client that stalls holds a slot that long at most);
 * every endpoint but /healthz and the dashboard's page needs "Authorization:
 * Bearer TOKEN" when a token is set; every string taken from a request is
 * checked as UTF-8 text before it is used (input.h); bodies are capped;
 * paths outside --allow-root are refused; nothing runs a shell. Uploads wait
 * in the spool until their pages have finished (spool.c); one sent with
 * pdf=1 leaves its searchable PDF there in its stead, made once, served by
 * GET /v1/groups/ID/result?format=pdf, deleted after its first download or
 * the result lifetime (spool.h).
 */
#include "http/http.h"
#include "app/output.h"
#include "app/submit.h"
#include "broker/broker.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/engine.h"
#include "engine/result.h"
#include "http/input.h"
#include "http/metrics.h"
#include "http/spool.h"
#include "image/image.h"
#include "pool/control.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct upload {
    char *path; /* spool file */
    char *name; /* as sent */
    int fd;
    long size;
    int kept; /* pages of it are queued: the sweep deletes it (spool.h), not its request */
} upload;

typedef struct req {
    char *body;
    size_t len;
    int too_big;
    int refused;     /* a response is queued already */
    const char *bad; /* why the request is refused (400), found while its body was read */
    struct MHD_PostProcessor *pp;
    upload files[64];
    int nfiles;
    char pdf[8]; /* the value of the multipart field pdf, when pdf_sent */
    size_t pdf_len;
    int pdf_sent;
    const ocp_http_conf *hc;
} req;

static const ocp_http_conf *g_hc;
static volatile sig_atomic_t g_stop;
/* The node's control socket (control.h: <folder>/<pid>.sock), made once at the start;
 * "" = no node. */
static char g_control_path[4200];

static void on_stop(int s)
{
    (void)s;
    g_stop = 1;
}

/* Queues response r (its headers added here) and lets it go. */
static enum MHD_Result queue_reply(struct MHD_Connection *c, unsigned status, const char *type,
                                   struct MHD_Response *r)
{
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *body, size_t len)
{
    return queue_reply(c, status, type,
                       MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY));
}

/* Replies with the file open on fd (taken: libmicrohttpd closes it once sent), read from
 * the descriptor as it is sent: a deletion meanwhile does not cut it short. */
static enum MHD_Result reply_file(struct MHD_Connection *c, unsigned status, const char *type,
                                  int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return MHD_NO;
    }
    return queue_reply(c, status, type, MHD_create_response_from_fd((uint64_t)st.st_size, fd));
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *o)
{
    /* 15 digits: a time keeps 10 us (6 gave 1.79618e9, hours), a short number stays short. */
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
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

/* The master's figures, or NULL without a pool (or while it does not answer: the node
 * may start listening after this process). */
static json_t *master_stats(void)
{
    if (!g_control_path[0])
        return NULL;
    json_t *ask = json_pack("{s:s}", "cmd", "stats"), *rep = NULL;
    int rc = ocp_control_call(g_control_path, ask, &rep, 3.0);
    json_decref(ask);
    if (rc || !json_is_true(json_object_get(rep, "ok"))) {
        json_decref(rep);
        rep = NULL;
    }
    return rep;
}

/* Where the node's control socket is (the name its node gives it, control.c). */
static void find_control_path(void)
{
    char dir[4096];
    g_control_path[0] = '\0';
    if (g_hc->control_pid > 0 && ocp_control_dir(dir, sizeof dir, 0) == 0)
        snprintf(g_control_path, sizeof g_control_path, "%s/%ld.sock", dir, g_hc->control_pid);
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
    return ocp__spool_create(g_hc->spool_dir, name, path);
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *ctype, const char *encoding,
                                 const char *data, uint64_t off, size_t size)
{
    (void)kind;
    (void)ctype;
    (void)encoding;
    req *r = cls;
    if ((key && !ocp__http_text_ok(key, 255)) || (filename && !ocp__http_text_ok(filename, 255))) {
        r->bad = "a multipart field name or filename is not UTF-8 text (or is over 255 bytes)";
        return MHD_NO;
    }
    if (!filename && key && strcmp(key, "pdf") == 0) {
        /* The one form field read: whether the document's PDF is kept (post_jobs). */
        if (r->pdf_len + size >= sizeof r->pdf) {
            r->bad = "the field pdf is 1 or 0";
            return MHD_NO;
        }
        memcpy(r->pdf + r->pdf_len, data, size);
        r->pdf_len += size;
        r->pdf_sent = 1;
        return MHD_YES;
    }
    if (!filename)
        return MHD_YES; /* other form fields are ignored */
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

/* Deletes r's uploads that queued nothing, before the reply goes (it is sent after the
 * handler returns): a client that has its answer finds no trace of them. */
static void drop_unkept(req *r)
{
    for (int i = 0; i < r->nfiles; i++) {
        upload *u = &r->files[i];
        if (u->fd >= 0)
            close(u->fd);
        u->fd = -1;
        if (u->path && !u->kept) {
            unlink(u->path);
            free(u->path);
            u->path = NULL;
        }
    }
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
        if (r->files[i].path && !r->files[i].kept)
            unlink(r->files[i].path); /* nothing of it queued: nobody needs it */
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
    json_t *ids; /* of the file being queued */
    const char *name;
    const char *group; /* the request's */
    int pdf;           /* keep an upload's PDF (pdf=1): spool.h */
    int broken;        /* a task could not be noted: the request fails */
} queued;

/* Notes a queued page; stops the queueing (non-zero) when it cannot (its strings are
 * checked before, so this does not happen: a submission never answers without its ids). */
static int note_task(void *ctx, const char *id, int page, int pages, int inserted)
{
    (void)pages;
    (void)inserted;
    queued *q = ctx;
    json_t *t = json_pack("{s:s, s:s, s:i}", "id", id, "source", q->name, "page", page + 1);
    if (!t || json_array_append_new(q->tasks, t) || json_array_append_new(q->ids, json_string(id)))
        q->broken = 1;
    return q->broken;
}

/* Queues upload or path real (name: as sent); its pages' ids into q (and, for an
 * upload, beside its spool file). Returns 0, or an HTTP status with err. */
static unsigned submit_one(ocp_broker *b, const char *real, const char *name, upload *u,
                           const ocp_image_limits *lim, const ocp_submit_opts *so, queued *q,
                           char *err, size_t errlen)
{
    q->name = name;
    q->ids = json_array();
    int rc = ocp_app_submit_file(b, real, lim, so, note_task, q, err, errlen);
    if (u && json_array_size(q->ids)) {
        /* Pages of it are queued: it stays until they have all finished (and its PDF is
         * made then, when asked for). */
        u->kept = 1;
        int nrc = q->pdf ? ocp__spool_keep_pdf(g_hc->spool_dir, q->group, u->path, q->ids) : 0;
        if (nrc)
            OCP_LOG_ERR(OCP_LOG_WARN, nrc, "cannot keep the PDF job of upload %s", u->path);
        if (!q->pdf || nrc) /* then it goes as any upload: a GET makes its PDF until then */
            nrc = ocp__spool_note(u->path, q->ids);
        if (nrc)
            OCP_LOG_ERR(OCP_LOG_WARN, nrc, "cannot note the pages of upload %s", u->path);
    }
    json_decref(q->ids);
    q->ids = NULL;
    if (q->broken) {
        snprintf(err, errlen, "cannot note the queued pages of %.200s", name);
        return 500;
    }
    return rc ? 422 : 0;
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
                           int priority, int pdf, json_t *paths, json_t *tasks, char *err,
                           size_t errlen)
{
    ocp_image_limits lim = ocp_image_limits_from_config(g_hc->cfg);
    ocp_submit_opts so = submit_opts(c, group, priority);
    if (!ocp__http_lang_ok(so.lang)) {
        snprintf(err, errlen, "bad lang: model names (letters, digits, _ and -) joined by +");
        return 400;
    }
    /* Installed models only, at most max-languages: what a worker would refuse anyway. */
    if (ocp_engine_check_langs(ocp_config_str(g_hc->cfg, OCP_S_TESSDATA_DIR), so.lang,
                               (int)ocp_config_int(g_hc->cfg, OCP_S_MAX_LANGUAGES), err,
                               errlen) != 0)
        return 400;
    queued q = {.tasks = tasks, .group = group, .pdf = pdf};
    unsigned st;
    for (int i = 0; i < r->nfiles; i++) {
        close(r->files[i].fd);
        r->files[i].fd = -1;
        if ((st = submit_one(b, r->files[i].path, r->files[i].name, &r->files[i], &lim, &so, &q,
                             err, errlen)))
            return st;
    }
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p)
    {
        const char *path = json_string_value(p), *roots = g_hc->allow_root;
        char real[PATH_MAX];
        if (!path) {
            snprintf(err, errlen, "paths must be strings");
            return 400;
        }
        if (!roots || !*roots) {
            snprintf(err, errlen, "no --allow-root: paths are not accepted");
            return 403;
        }
        /* A relative path would be the server's folder's: said as what it is, whatever
         * the folder holds. */
        if (path[0] != '/') {
            snprintf(err, errlen, "relative path: %.200s: paths must be absolute", path);
            return 400;
        }
        /* Under a root (resolved), a readable regular file: else one reason whatever the
         * path is. The worker checks again when it opens it. */
        int fd = ocp_image_open_under(path, roots, err, errlen);
        if (fd < 0 || !realpath(path, real)) {
            if (fd >= 0)
                close(fd);
            snprintf(err, errlen, "path not allowed: %.200s", path);
            return 403;
        }
        close(fd);
        if ((st = submit_one(b, real, path, NULL, &lim, &so, &q, err, errlen)))
            return st;
    }
    if (json_array_size(tasks) == 0) {
        /* Nothing queued (a document of no pages) is not a job. */
        snprintf(err, errlen, "no page to OCR in what was sent");
        return 422;
    }
    return 202;
}

static int keep_failure(void *ctx, const ocp_task_info *i)
{
    if (i->state == OCP_TASK_FAILED || i->state == OCP_TASK_BURIED)
        json_array_append_new(ctx, json_pack("{s:s, s:s, s:s?, s:s?, s:f}", "id", i->id, "state",
                                             ocp_task_state_name(i->state), "failure",
                                             ocp_task_failure_name(i), "reason", i->error,
                                             "finished", i->finished));
    return 0;
}

static int page_row(void *ctx, const ocp_task_info *i)
{
    json_t *p = i->payload ? json_loads(i->payload, 0, NULL) : NULL;
    json_array_append_new(ctx,
                          json_pack("{s:s, s:s, s:i, s:s?, s:s?}", "id", i->id, "state",
                                    ocp_task_state_name(i->state), "page",
                                    p ? (int)json_integer_value(json_object_get(p, "page")) + 1 : 0,
                                    "failure", ocp_task_failure_name(i), "reason", i->error));
    json_decref(p);
    return 0;
}

/* ---- Handlers: one per route ----------------------------------------------------------
 * Each gets the connection, the request (body and uploads) and the path's one wildcard
 * segment (arg: an id or a group; "" when the pattern has none). */

typedef enum MHD_Result (*route_fn)(struct MHD_Connection *c, req *r, const char *arg);

static enum MHD_Result get_healthz(struct MHD_Connection *c, req *r, const char *arg)
{
    return reply(c, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

static enum MHD_Result get_dashboard(struct MHD_Connection *c, req *r, const char *arg)
{
    return reply(c, 200, "text/html; charset=utf-8", ocp_dashboard_html,
                 strlen(ocp_dashboard_html));
}

static enum MHD_Result get_readyz(struct MHD_Connection *c, req *r, const char *arg)
{
    char err[700];
    ocp_broker *b = broker(err, sizeof err);
    json_t *st = master_stats();
    int ok = b && (st || g_hc->control_pid <= 0);
    ocp_broker_close(b);
    json_decref(st);
    return reply_json(c, ok ? 200 : 503, json_pack("{s:b}", "ready", ok));
}

static enum MHD_Result get_metrics(struct MHD_Connection *c, req *r, const char *arg)
{
    char err[700];
    ocp_broker *b = broker(err, sizeof err);
    if (!b)
        return reply_error(c, 503, err);
    ocp_counts n;
    ocp_broker_counts(b, NULL, &n);
    ocp_broker_close(b);
    json_t *st = master_stats();
    ocp_sb sb;
    ocp_sb_init(&sb);
    ocp__http_metrics(&sb, &n, st);
    json_decref(st);
    enum MHD_Result ret = reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", sb.buf, sb.len);
    ocp_sb_fini(&sb);
    return ret;
}

static enum MHD_Result get_stats(struct MHD_Connection *c, req *r, const char *arg)
{
    json_t *st = master_stats();
    return reply_json(c, 200, st ? st : json_pack("{s:b}", "workers", 0));
}

static enum MHD_Result get_failures(struct MHD_Connection *c, req *r, const char *arg)
{
    char err[700];
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

/* The paths of a JSON body {"paths": [...]}: new, or NULL when the body is not that. */
static json_t *body_paths(req *r)
{
    json_error_t je;
    json_t *body = json_loadb(r->body, r->len, 0, &je), *paths = NULL;
    if (json_is_object(body) && json_is_array(json_object_get(body, "paths")))
        paths = json_incref(json_object_get(body, "paths"));
    json_decref(body);
    return paths;
}

/* Queues what r holds as a new group (prefix + uuid) at priority (an upload's PDF kept when
 * pdf); *tasks is new. Returns 202 or an HTTP status with the reason in err. */
static unsigned queue_request(struct MHD_Connection *c, req *r, json_t *paths, const char *prefix,
                              int priority, int pdf, char group[48], json_t **tasks, char *err,
                              size_t errlen)
{
    if (r->nfiles == 0 && json_array_size(paths) == 0) {
        snprintf(err, errlen, "nothing to OCR");
        return 400;
    }
    ocp_broker *b = broker(err, errlen);
    if (!b)
        return 503;
    char uuid[37];
    ocp_uuid4(uuid);
    snprintf(group, 48, "%s%s", prefix, uuid);
    *tasks = json_array();
    unsigned st = submit_all(c, r, b, group, priority, pdf, paths, *tasks, err, errlen);
    ocp_broker_close(b);
    return st;
}

/* Whether r asks for its upload's PDF to be kept (pdf=1, in the query or a form field): 1,
 * 0, or -1 when the value is neither. */
static int wants_pdf(struct MHD_Connection *c, req *r)
{
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "pdf");
    int fq = q ? ocp__http_flag(q) : 0, ff = 0;
    if (r->pdf_sent) {
        r->pdf[r->pdf_len] = '\0';
        ff = ocp__http_flag(r->pdf);
    }
    return fq < 0 || ff < 0 ? -1 : fq || ff;
}

static enum MHD_Result post_jobs(struct MHD_Connection *c, req *r, const char *arg)
{
    char err[700], group[48];
    json_t *paths = NULL, *tasks = NULL;
    int pdf = wants_pdf(c, r);
    if (pdf < 0)
        return reply_error(c, 400, "pdf: 1 (keep the document's searchable PDF) or 0");
    /* A PDF is of one document (ocp_app_group_pdf); a path's is made from the path, when
     * asked for, with nothing to keep. */
    if (pdf && r->nfiles > 1)
        return reply_error(c, 400, "pdf=1 keeps the PDF of one document: send one file a job");
    if (!r->pp && r->len && !(paths = body_paths(r)))
        return reply_error(c, 400, "expected multipart files or JSON {\"paths\": [...]}");
    unsigned st = queue_request(c, r, paths, "", 5, pdf, group, &tasks, err, sizeof err);
    json_decref(paths);
    if (st != 202) {
        json_decref(tasks);
        return reply_error(c, st, err);
    }
    return reply_json(c, 202, json_pack("{s:s, s:o}", "group", group, "tasks", tasks));
}

/* Waits for task id to finish (page-timeout and a minute at most) and replies with its
 * result, stored text as it is. */
static enum MHD_Result await_page(struct MHD_Connection *c, const char *id)
{
    char err[700];
    ocp_broker *b = broker(err, sizeof err);
    if (!b)
        return reply_error(c, 503, err);
    double limit = ocp_config_double(g_hc->cfg, OCP_S_PAGE_TIMEOUT) + 60, t0 = ocp_now();
    enum MHD_Result ret = MHD_NO;
    for (;;) {
        ocp_task_info info;
        int st = -1;
        if (ocp_broker_get(b, id, &info) == 0) {
            st = info.state;
            if (st == OCP_TASK_DONE && !info.result) /* an expired result (Redis) */
                ret = reply_error(c, 502, "result missing");
            else if (st == OCP_TASK_DONE)
                ret = reply(c, 200, "application/json", info.result, strlen(info.result));
            else if (st >= OCP_TASK_FAILED)
                ret = reply_error(c, 422, info.error ? info.error : "failed");
            ocp_task_info_fini(&info);
        }
        if (st >= OCP_TASK_DONE)
            break;
        if (ocp_now() - t0 > limit || g_stop) {
            ret = reply_error(c, 504, "the page did not finish in time");
            break;
        }
        usleep(50000);
    }
    ocp_broker_close(b);
    return ret;
}

/* The pages of r's uploads together (a file that does not open counts one: queueing it
 * says why). */
static int upload_pages(req *r)
{
    ocp_image_limits lim = ocp_image_limits_from_config(g_hc->cfg);
    int n = 0;
    for (int i = 0; i < r->nfiles; i++) {
        ocp_doc *doc = NULL;
        char err[300];
        if (ocp_doc_open_file(r->files[i].path, &lim, &doc, err, sizeof err) == 0) {
            n += ocp_doc_pages(doc);
            ocp_doc_destroy(doc);
        } else {
            n++;
        }
    }
    return n;
}

/* OCR one page now. A document of several pages (or several files) is refused before
 * anything is queued: a synchronous call at priority 9 would put a whole book ahead of
 * every queued page and hold its connection for all of it; /v1/jobs is for documents. */
static enum MHD_Result post_ocr(struct MHD_Connection *c, req *r, const char *arg)
{
    char err[700], group[48];
    json_t *tasks = NULL;
    if (!r->pp && r->len) {
        /* A raw image or PDF in the body. */
        upload *u = &r->files[r->nfiles++];
        memset(u, 0, sizeof *u);
        u->name = ocp_xstrdup("upload");
        u->fd = spool_file(NULL, &u->path);
        if (u->fd < 0 || write(u->fd, r->body, r->len) != (ssize_t)r->len)
            return reply_error(c, 507, "cannot keep the upload");
    }
    int pages = upload_pages(r);
    if (pages > 1) {
        snprintf(err, sizeof err,
                 "/v1/ocr takes one page and this upload has %d: POST documents of several "
                 "pages to /v1/jobs (then GET /v1/groups/GROUP)",
                 pages);
        return reply_error(c, 422, err);
    }
    unsigned st = queue_request(c, r, NULL, "now-", 9, 0, group, &tasks, err, sizeof err);
    if (st != 202) {
        json_decref(tasks);
        return reply_error(c, st, err);
    }
    /* OCR now: wait for the page to finish. */
    const char *id = json_string_value(json_object_get(json_array_get(tasks, 0), "id"));
    enum MHD_Result ret = id ? await_page(c, id) : reply_error(c, 500, "no page was queued");
    json_decref(tasks);
    return ret;
}

/* Reads task id into pg (its result parsed when parse; a result that does not parse
 * renders empty). Returns 0, or -1 with an error reply queued (*ret). */
static int find_task(struct MHD_Connection *c, const char *id, int parse, ocp_app_page *pg,
                     enum MHD_Result *ret)
{
    char err[700];
    ocp_broker *b = broker(err, sizeof err);
    if (!b) {
        *ret = reply_error(c, 503, err);
        return -1;
    }
    int rc = ocp_app_page_get(b, id, parse, pg);
    ocp_broker_close(b);
    if (rc && rc != OCP_E_DECODE) {
        ocp_app_page_fini(pg);
        *ret = reply_error(c, 404, "no such job");
        return -1;
    }
    return 0;
}

static enum MHD_Result get_job(struct MHD_Connection *c, req *r, const char *id)
{
    ocp_app_page pg;
    enum MHD_Result ret;
    if (find_task(c, id, 0, &pg, &ret) < 0)
        return ret;
    const ocp_task_info *i = &pg.info;
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i}", "id", i->id, "group", i->group, "state",
                          ocp_task_state_name(i->state), "deliveries", i->deliveries, "priority",
                          i->priority);
    json_object_set_new(o, "error", i->error ? json_string(i->error) : json_null());
    const char *kind = ocp_task_failure_name(i);
    json_object_set_new(o, "failure", kind ? json_string(kind) : json_null());
    json_object_set_new(o, "started", i->started > 0 ? json_real(i->started) : json_null());
    json_object_set_new(o, "finished", i->finished > 0 ? json_real(i->finished) : json_null());
    ocp_app_page_fini(&pg);
    return reply_json(c, 200, o);
}

static enum MHD_Result get_result(struct MHD_Connection *c, req *r, const char *id)
{
    const char *f = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    int fmt = f ? ocp_format_parse(f) : OCP_FMT_JSON;
    ocp_app_page pg;
    enum MHD_Result ret;
    if (find_task(c, id, fmt > 0 && fmt != OCP_FMT_JSON, &pg, &ret) < 0)
        return ret;
    char err[700];
    if (pg.info.state != OCP_TASK_DONE || !pg.info.result) {
        snprintf(err, sizeof err, "job is %s%s%s", ocp_task_state_name(pg.info.state),
                 pg.info.error ? ": " : "", pg.info.error ? pg.info.error : "");
        ret = reply_error(c, 409, err);
    } else if (fmt <= 0 || (fmt & (fmt - 1))) {
        ret = reply_error(c, 400, "format: one of txt, json, hocr, alto, tsv");
    } else {
        ocp_sb sb;
        ocp_sb_init(&sb);
        ocp_app_render(pg.info.result, &pg.res, fmt, &sb);
        ret = reply(c, 200, ocp_app_format_type(fmt), sb.buf ? sb.buf : "", sb.len);
        ocp_sb_fini(&sb);
    }
    ocp_app_page_fini(&pg);
    return ret;
}

static enum MHD_Result get_group(struct MHD_Connection *c, req *r, const char *g)
{
    char err[700];
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
                                (json_int_t)json_array_size(pages), "queued", (json_int_t)n.ready,
                                "running", (json_int_t)n.leased, "done", (json_int_t)n.done,
                                "failed", (json_int_t)n.failed, "buried", (json_int_t)n.buried,
                                "pages", pages));
}

/* Builds group's searchable PDF (app/output.h; an ocp__spool_build_fn): its file is read
 * where a worker could read it, under --allow-root or in the spool. */
static int build_pdf(void *ctx, ocp_broker *b, const char *g, ocp_sb *out, char *err, size_t errlen)
{
    (void)ctx;
    char *roots =
        ocp_xasprintf("%s%s%s", g_hc->spool_dir, g_hc->allow_root && *g_hc->allow_root ? ":" : "",
                      g_hc->allow_root ? g_hc->allow_root : "");
    ocp_image_limits lim = ocp_image_limits_from_config(g_hc->cfg);
    lim.allow_roots = roots;
    size_t max = (size_t)ocp_config_int(g_hc->cfg, OCP_S_MAX_INPUT_SIZE) << 20;
    int rc = ocp_app_group_pdf(b, g, &lim, max, out, err, errlen);
    free(roots);
    return rc;
}

/*
 * The searchable PDF of a group's document, once every page is done: the one the spool
 * keeps for an upload sent with pdf=1 (made now if the sweep has not made it yet), else
 * made from the document's file (a path job; an upload sent without pdf=1 is deleted once
 * its pages have finished, and then has none).
 */
static enum MHD_Result get_group_result(struct MHD_Connection *c, req *r, const char *g)
{
    const char *f = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    if (!f || strcmp(f, "pdf") != 0)
        return reply_error(c, 400, "format: pdf (a page's other formats: /v1/jobs/ID/result)");
    char err[700];
    ocp_broker *b = broker(err, sizeof err);
    if (!b)
        return reply_error(c, 503, err);
    int fd = -1;
    ocp_sb sb;
    ocp_sb_init(&sb);
    int rc = ocp__spool_pdf(b, g_hc->spool_dir, g, 0, build_pdf, NULL, &fd, err, sizeof err);
    if (rc == 1)
        rc = build_pdf(NULL, b, g, &sb, err, sizeof err);
    ocp_broker_close(b);
    enum MHD_Result ret;
    if (rc == 0 && fd >= 0) {
        ocp__spool_pdf_fetched(g_hc->spool_dir, g);
        ret = reply_file(c, 200, "application/pdf", fd);
    } else if (rc == 0) {
        ret = reply(c, 200, "application/pdf", sb.buf, sb.len);
    } else {
        ret = reply_error(c,
                          rc == OCP_E_NOPAGE  ? 404
                          : rc == OCP_E_EMPTY ? 409
                          : rc == -EACCES || rc == -ENOENT ? 410
                          : rc == OCP_E_BROKER ? 503
                                               : 422,
                          err);
    }
    ocp_sb_fini(&sb);
    return ret;
}

/* ---- The route table ------------------------------------------------------------------
 * A pattern's '*' is one path segment without '/', of 1 to arg_max - 1 bytes (a job id:
 * 79; a group name: up to ARG_MAX - 1). Routes are tried in order; a path no route has
 * is 404, a method other than GET and POST is 405. */

#define ARG_MAX 1024
#define JOB_ARG 80
#define SWEEP_S 2.0 /* seconds between looks at the uploads' pages */

static const struct route {
    const char *method, *pattern;
    int open; /* served without the bearer token */
    route_fn fn;
    size_t arg_max; /* the '*' segment's room, its NUL included */
} routes[] = {
    {"GET", "/healthz", 1, get_healthz, 0},
    /* The dashboard's page is static, with no data: a browser cannot add a header to a
     * navigation; the page sends the token, from #token=, on its calls. */
    {"GET", "/", 1, get_dashboard, 0},
    {"GET", "/readyz", 0, get_readyz, 0},
    {"GET", "/metrics", 0, get_metrics, 0},
    {"GET", "/v1/stats", 0, get_stats, 0},
    {"GET", "/v1/failures", 0, get_failures, 0},
    {"POST", "/v1/jobs", 0, post_jobs, 0},
    {"POST", "/v1/ocr", 0, post_ocr, 0},
    {"GET", "/v1/jobs/*", 0, get_job, JOB_ARG},
    {"GET", "/v1/jobs/*/result", 0, get_result, JOB_ARG},
    {"GET", "/v1/groups/*", 0, get_group, ARG_MAX},
    {"GET", "/v1/groups/*/result", 0, get_group_result, ARG_MAX},
};

/* Whether url matches pattern; the '*' segment goes to arg. */
static int match(const char *pattern, const char *url, char arg[ARG_MAX], size_t arg_max)
{
    const char *star = strchr(pattern, '*');
    arg[0] = '\0';
    if (!star)
        return strcmp(pattern, url) == 0;
    size_t pre = (size_t)(star - pattern);
    if (strncmp(pattern, url, pre) != 0)
        return 0;
    const char *seg = url + pre, *end = strchr(seg, '/');
    size_t n = end ? (size_t)(end - seg) : strlen(seg);
    if (n == 0 || n >= arg_max || n >= ARG_MAX || strcmp(star + 1, seg + n) != 0)
        return 0;
    memcpy(arg, seg, n);
    arg[n] = '\0';
    return 1;
}

static const struct route *find_route(const char *method, const char *url, char arg[ARG_MAX])
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(routes[i].method, method) == 0 &&
            match(routes[i].pattern, url, arg, routes[i].arg_max))
            return &routes[i];
    return NULL;
}

static enum MHD_Result route(struct MHD_Connection *c, const char *url, const char *method, req *r)
{
    char arg[ARG_MAX];
    const struct route *rt = find_route(method, url, arg);
    const char *f = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "lang");
    const char *p = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "pdf");
    if (rt && (!ocp__http_text_ok(arg, ARG_MAX) || (f && !ocp__http_text_ok(f, 64)) ||
               (l && !ocp__http_text_ok(l, 100)) || (p && !ocp__http_text_ok(p, 64))))
        return reply_error(c, 400, "the path or a query value is not UTF-8 text");
    if (rt) {
        enum MHD_Result ret = rt->fn(c, r, arg);
        drop_unkept(r);
        return ret;
    }
    int known = strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0;
    return reply_error(c, known ? 404 : 405, known ? "no such resource" : "method not allowed");
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
        char arg[ARG_MAX];
        const struct route *rt = find_route(method, url, arg);
        if (!(rt && rt->open) && !bearer_ok(c)) {
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
    if (r->too_big || r->bad)
        drop_unkept(r);
    if (r->too_big > 0)
        return reply_error(c, 413, "body over the size cap");
    if (r->bad)
        return reply_error(c, 400, r->bad);
    if (r->too_big < 0)
        return reply_error(c, 400, "malformed multipart body");
    return route(c, url, method, r);
}

/* One sweep of the spool (spool.h); orphans too when asked (a slower cadence). */
static void sweep_spool(double expires, int orphans)
{
    char err[600];
    ocp_broker *b = broker(err, sizeof err);
    if (!b)
        return;
    /* A network broker (Redis) cannot tell a page not started from one that expired. */
    const char *u = g_hc->broker_url;
    int forgets = strstr(u, "://") && strncmp(u, "sqlite://", 9) != 0;
    ocp__spool_sweep(b, g_hc->spool_dir, forgets, expires, orphans);
    ocp__spool_sweep_pdf(b, g_hc->spool_dir, forgets, expires, build_pdf, NULL);
    ocp_broker_close(b);
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
    find_control_path();
    if (parse_listen(hc->listen, &sa))
        return ocp_errf(OCP_E_CONFIG, err, errlen, "--listen '%s': expected IPV4:PORT", hc->listen);
    if (ocp_image_global_init("ocrpool"))
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot start libvips");
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG,
        ntohs(sa.sin_port), NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)hc->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(hc->connection_timeout_s > 0 ? hc->connection_timeout_s : 30),
        MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
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
    /* Uploads whose pages have all finished are deleted (their PDF made first, for a job
     * sent with pdf=1) every SWEEP_S; uploads no page names any more (their process died
     * before it noted them) every half result lifetime (at most 5 minutes). */
    double expires = ocp_config_double(hc->cfg, OCP_S_RESULT_EXPIRES);
    double every =
        expires > 0 ? (expires / 2 < 300 ? (expires / 2 < 1 ? 1 : expires / 2) : 300) : 300;
    double last_orphans = ocp_now();
    while (!g_stop) {
        for (double t = 0; t < SWEEP_S && !g_stop; t += 0.2)
            usleep(200000);
        int orphans = ocp_now() - last_orphans >= every;
        if (orphans)
            last_orphans = ocp_now();
        if (!g_stop)
            sweep_spool(expires, orphans);
    }
    MHD_stop_daemon(d);
    return 0;
}
