/*
 * submit.c: turning input files into page tasks on a broker (submit.h):
 * one task per page, with the page's size read from its header and the
 * per-page settings in the payload; and the default places of the queue
 * and of uploads.
 */
#include "app/submit.h"
#include "core/error.h"
#include "core/util.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* A task id that is the same for the same file (path, size, time), page and settings. */
static void stable_id(const char *key, char out[64])
{
    uint64_t a = fnv1a(14695981039346656037ULL, key, strlen(key));
    uint64_t b = fnv1a(a ^ 0x9e3779b97f4a7c15ULL, key, strlen(key));
    snprintf(out, 64, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xffff, (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffULL));
}

/* The payload of page p: what the page is and the settings it runs with. New (free). */
static char *page_payload(ocp_doc *doc, const char *abs, int p, const ocp_submit_opts *o)
{
    int w = 0, h = 0;
    char perr[300] = "";
    /* A PDF page's size depends on the pdf-dpi of the node that renders it: none declared
     * (the node estimates it at the largest page its limits allow), and none read here
     * (each page's header read would cost more than queueing it). A page whose header cannot
     * be read still becomes a task: the worker fails it with the reason, where its status can
     * be seen. */
    if (strcmp(ocp_doc_format(doc), "pdf") != 0)
        ocp_doc_page_size(doc, p, &w, &h, perr, sizeof perr);
    json_t *pl = json_pack("{s:s, s:i, s:s}", "source", abs, "page", p, "lang", o->lang);
    if (w > 0 && h > 0) {
        json_object_set_new(pl, "width", json_integer(w));
        json_object_set_new(pl, "height", json_integer(h));
    }
    if (o->max_image_size >= 0)
        json_object_set_new(pl, "max_image_size", json_integer(o->max_image_size));
    char *payload = json_dumps(pl, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(pl);
    return payload;
}

/*
 * The page's task existed already (stable ids: an earlier run on the same queue). Kept when
 * it is done or in this run's group. Otherwise it belongs to another run's group (a run of
 * another set of files in the same folder) that this run's node does not work: the page
 * gets a task of its own in this group, with an id from the group too (the same one each
 * time this set of files is run again). out_id receives the id to follow.
 */
static int regroup_unfinished(ocp_broker *b, long long size, const struct timespec *mtim,
                              const char *abs, const char *payload, ocp_task_spec *spec,
                              char out_id[64])
{
    ocp_task_info info;
    memset(&info, 0, sizeof info);
    int rc = ocp_broker_get(b, out_id, &info), inserted = 0;
    int keep = rc != 0 || info.state == OCP_TASK_DONE ||
               (info.group && strcmp(info.group, spec->group) == 0);
    ocp_task_info_fini(&info);
    if (rc)
        return rc;
    if (keep)
        return 0;
    char idbuf[64];
    char *key = ocp_xasprintf("%s\n%lld\n%lld.%09ld\n%s\ngroup %s", abs, size,
                              (long long)mtim->tv_sec, mtim->tv_nsec, payload, spec->group);
    stable_id(key, idbuf);
    free(key);
    spec->id = idbuf;
    return ocp_broker_submit(b, spec, out_id, &inserted);
}

/*
 * realpath(path) into abs (PATH_MAX), with the last folder resolved remembered: a list of
 * files in one folder resolves it once, not once per file (realpath reads every component's
 * link). A name that is itself a link, or a "." or "..", is resolved in full. Per thread (the
 * HTTP front end submits from several). Returns abs, or NULL with errno set.
 */
/* path names the same folder as the inode *at does (stat follows every link in it). */
static int same_dir(const char *path, const struct stat *at)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_dev == at->st_dev && st.st_ino == at->st_ino;
}

static char *resolve(const char *path, char *abs)
{
    static _Thread_local char dir[PATH_MAX], real_dir[PATH_MAX];
    static _Thread_local struct stat dir_st;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    size_t dl = slash ? (size_t)(slash - path) : 0;
    struct stat lst;
    if (!slash || dl == 0 || dl >= sizeof dir || !*name || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return realpath(path, abs);
    char d[PATH_MAX];
    memcpy(d, path, dl);
    d[dl] = '\0';
    /* The remembered folder still stands: its name and its resolved path both lead to the
     * folder resolved then (a long-running serve outlives renames and relinked folders). */
    if (strcmp(dir, d) != 0 || !same_dir(d, &dir_st) || !same_dir(real_dir, &dir_st)) {
        dir[0] = '\0';
        if (!realpath(d, real_dir) || stat(real_dir, &dir_st) < 0)
            return realpath(path, abs); /* says why */
        memcpy(dir, d, dl + 1);
    }
    int n = snprintf(abs, PATH_MAX, "%s/%s", strcmp(real_dir, "/") == 0 ? "" : real_dir, name);
    if (n < 0 || n >= PATH_MAX || lstat(abs, &lst) < 0 || S_ISLNK(lst.st_mode))
        return realpath(path, abs);
    return abs;
}

int ocp_app_submit_file(ocp_broker *b, const char *path, const ocp_image_limits *lim,
                        const ocp_submit_opts *o, ocp_submit_fn fn, void *ctx, char *err,
                        size_t errlen)
{
    char abs[PATH_MAX];
    struct stat st;
    ocp_doc *doc = NULL;
    int rc;
    if (!resolve(path, abs) || stat(abs, &st) < 0)
        return ocp_errf(OCP_E_FORMAT, err, errlen, "cannot open: %s", strerror(errno));
    rc = ocp_doc_open_file(abs, lim, &doc, err, errlen);
    if (rc)
        return rc;
    int pages = ocp_doc_pages(doc);
    for (int p = 0; p < pages && !rc; p++) {
        char *payload = page_payload(doc, abs, p, o);
        char idbuf[64];
        const char *id = NULL;
        if (o->stable_ids) {
            char *key = ocp_xasprintf("%s\n%lld\n%lld.%09ld\n%s", abs, (long long)st.st_size,
                                      (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, payload);
            stable_id(key, idbuf);
            free(key);
            id = idbuf;
        }
        ocp_task_spec spec = {
            .id = id, .group = o->group, .priority = o->priority, .payload = payload};
        char out_id[64];
        int inserted = 0;
        rc = ocp_broker_submit(b, &spec, out_id, &inserted);
        if (!rc && o->stable_ids && !inserted && o->group)
            rc = regroup_unfinished(b, st.st_size, &st.st_mtim, abs, payload, &spec, out_id);
        free(payload);
        if (rc)
            ocp_errf(rc, err, errlen, "cannot queue: %s", ocp_broker_errmsg(b));
        else if (fn && fn(ctx, out_id, p, pages, inserted))
            rc = ocp_errf(-EINTR, err, errlen, "stopped");
    }
    ocp_doc_destroy(doc);
    return rc;
}

void ocp_app_data_dir(char *buf, size_t len)
{
    const char *x = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    if (x && *x)
        snprintf(buf, len, "%s/ocrpool", x);
    else
        snprintf(buf, len, "%s/.local/share/ocrpool", home && *home ? home : "/tmp");
}

const char *ocp_app_broker_url(const ocp_config *cfg, char *buf, size_t len)
{
    const char *u = ocp_config_str(cfg, OCP_S_BROKER);
    if (u && *u) {
        /* A file queue's folder is created as the default queue's is (quietly too). */
        const char *path = strncmp(u, "sqlite://", 9) == 0 ? u + 9 : strstr(u, "://") ? NULL : u;
        const char *slash = path ? strrchr(path, '/') : NULL;
        if (slash && slash > path && (size_t)(slash - path) < len) {
            snprintf(buf, len, "%.*s", (int)(slash - path), path);
            ocp_mkdir_p(buf, 0755);
        }
        return u;
    }
    char dir[4096];
    ocp_app_data_dir(dir, sizeof dir);
    /* Created quietly: opening the queue says what went wrong. */
    ocp_mkdir_p(dir, 0755);
    snprintf(buf, len, "sqlite://%s/queue.db", dir);
    return buf;
}

void ocp_app_spool_dir(const char *url, char *buf, size_t len)
{
    if (strstr(url, "://") && strncmp(url, "sqlite://", 9) != 0) {
        /* A network broker: the data folder (workers elsewhere need --spool-dir on shared
         * storage). */
        char dir[4096];
        ocp_app_data_dir(dir, sizeof dir);
        snprintf(buf, len, "%s/spool", dir);
        return;
    }
    /* Beside a file queue. */
    const char *p = strncmp(url, "sqlite://", 9) == 0 ? url + 9 : url;
    const char *slash = strrchr(p, '/');
    if (slash)
        snprintf(buf, len, "%.*s/spool", (int)(slash - p), p);
    else
        snprintf(buf, len, "spool");
}
