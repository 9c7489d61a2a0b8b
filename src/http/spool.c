/*
 * spool.c: the uploads the HTTP API keeps for the workers (spool.h): made
 * when a request's body arrives, noted with the ids of their pages once
 * queued, and deleted by the sweep once those pages have all finished; for
 * an upload sent for its PDF, that PDF made once and kept a while in its
 * stead (pdf/).
 */
#include "http/spool.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IDS_EXT ".ids"
#define IDS_MAX (8L << 20) /* the largest ids file read (200,000 pages) */

int ocp__spool_create(const char *dir, const char *name, char **path)
{
    char uuid[37];
    ocp_uuid4(uuid);
    const char *dot = name ? strrchr(name, '.') : NULL;
    char ext[12] = "";
    if (dot && strlen(dot) < sizeof ext &&
        strspn(dot + 1, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == strlen(dot + 1) &&
        strcmp(dot, IDS_EXT) != 0)
        snprintf(ext, sizeof ext, "%s", dot);
    *path = ocp_xasprintf("%s/%s%s", dir, uuid, ext);
    int fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        int e = errno;
        free(*path);
        *path = NULL;
        return -e;
    }
    return fd;
}

/* Writes final: head (a line, when not NULL), then the ids (strings), one a line. Written
 * whole, then renamed: the sweep never reads a part of the list. Returns 0 or -errno. */
static int write_list(const char *final, const char *head, json_t *ids)
{
    char *part = ocp_xasprintf("%s.part", final);
    ocp_sb sb;
    size_t i;
    json_t *id;
    ocp_sb_init(&sb);
    if (head)
        ocp_sb_printf(&sb, "%s\n", head);
    json_array_foreach(ids, i, id) ocp_sb_printf(&sb, "%s\n", json_string_value(id));
    int rc = 0, fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || (sb.len && write(fd, sb.buf, sb.len) != (ssize_t)sb.len))
        rc = -errno;
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = -errno;
    if (!rc && rename(part, final) < 0)
        rc = -errno;
    if (rc)
        unlink(part);
    ocp_sb_fini(&sb);
    free(part);
    return rc;
}

int ocp__spool_note(const char *path, json_t *ids)
{
    char *final = ocp_xasprintf("%s" IDS_EXT, path);
    int rc = write_list(final, NULL, ids);
    free(final);
    return rc;
}

/* The text of a small open file (NUL-terminated; new), or NULL. */
static char *read_fd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size > IDS_MAX)
        return NULL;
    char *buf = ocp_xcalloc(1, (size_t)st.st_size + 1);
    if (pread(fd, buf, (size_t)st.st_size, 0) != (ssize_t)st.st_size) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* The text of a small file (NUL-terminated; new), or NULL. */
static char *read_small(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = fd >= 0 ? read_fd(fd) : NULL;
    if (fd >= 0)
        close(fd);
    return buf;
}

/* Whether every page of text (ids, one a line; its buffer is cut up) has finished (see
 * spool.h); age: of the list's file. */
static int ids_finished(ocp_broker *b, char *text, int forgets, double expires, double age)
{
    char *save = NULL;
    int done = 1;
    for (char *id = strtok_r(text, "\n", &save); id && done; id = strtok_r(NULL, "\n", &save)) {
        ocp_task_info info;
        memset(&info, 0, sizeof info);
        int rc = ocp_broker_get(b, id, &info);
        if (rc == 0)
            done = info.state >= OCP_TASK_DONE;
        else if (rc == OCP_E_NOPAGE)
            done = !forgets || (expires > 0 && age > 2 * expires);
        else
            done = 0; /* the broker does not answer: next time */
        ocp_task_info_fini(&info);
    }
    return done;
}

/* Whether every page an ids file names has finished (see spool.h). */
static int all_finished(ocp_broker *b, const char *ids_path, int forgets, double expires,
                        double age)
{
    char *text = read_small(ids_path);
    int done = text && ids_finished(b, text, forgets, expires, age);
    free(text);
    return done;
}

/* Uploads with an ids file: deleted once their pages have all finished. */
static long sweep_noted(ocp_broker *b, const char *dir, int forgets, double expires)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    long n = 0;
    time_t now = time(NULL);
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name), x = strlen(IDS_EXT);
        if (e->d_name[0] == '.' || l <= x || strcmp(e->d_name + l - x, IDS_EXT) != 0)
            continue;
        char ids[PATH_MAX], up[PATH_MAX];
        struct stat st;
        snprintf(ids, sizeof ids, "%s/%s", dir, e->d_name);
        snprintf(up, sizeof up, "%s/%.*s", dir, (int)(l - x), e->d_name);
        if (lstat(ids, &st) < 0 || !S_ISREG(st.st_mode) ||
            !all_finished(b, ids, forgets, expires, difftime(now, st.st_mtime)))
            continue;
        if (unlink(up) == 0 || errno == ENOENT)
            n++;
        unlink(ids);
    }
    if (d)
        closedir(d);
    return n;
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

/* Whether upload path (no ids file) may go: older than expires, and no page names it
 * (used NULL: the broker cannot list its pages). */
static int orphan(const char *path, json_t *used, double expires, time_t now)
{
    char ids[PATH_MAX + 8], real[PATH_MAX];
    struct stat st;
    size_t l = strlen(path), x = strlen(IDS_EXT);
    if (l > x && strcmp(path + l - x, IDS_EXT) == 0)
        return 0;
    snprintf(ids, sizeof ids, "%s" IDS_EXT, path);
    if (access(ids, F_OK) == 0 || lstat(path, &st) < 0 || !S_ISREG(st.st_mode) ||
        difftime(now, st.st_mtime) < expires)
        return 0;
    return !(used && realpath(path, real) && json_object_get(used, real));
}

static json_t *pdf_job_uploads(const char *dir);

/* Uploads without an ids file (their process died before it noted them, or an older
 * version spooled them), and without a PDF job (whose upload has none). */
static long sweep_orphans(ocp_broker *b, const char *dir, double expires)
{
    json_t *used = json_object(), *pending = pdf_job_uploads(dir);
    int rc = ocp_broker_list(b, NULL, 0, note_source, used);
    if (rc && rc != OCP_E_UNSUPPORTED) {
        json_decref(used);
        json_decref(pending);
        return 0;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    time_t now = time(NULL);
    long n = 0;
    while (d && (e = readdir(d))) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && !json_object_get(pending, e->d_name) &&
            orphan(path, rc ? NULL : used, expires, now) && unlink(path) == 0)
            n++;
    }
    if (d)
        closedir(d);
    json_decref(used);
    json_decref(pending);
    return n;
}

long ocp__spool_sweep(ocp_broker *b, const char *dir, int forgets, double expires, int orphans)
{
    long n = sweep_noted(b, dir, forgets, expires), o = 0;
    if (n)
        OCP_LOG(OCP_LOG_INFO, "%ld uploads deleted: their pages have finished", n);
    if (orphans && expires > 0 && (o = sweep_orphans(b, dir, expires)) > 0)
        OCP_LOG(OCP_LOG_INFO, "%ld uploads deleted: no page names them any more", o);
    return n + o;
}

/* ---- Searchable PDFs of uploads (spool.h: pdf/<group>.job, .pdf, .err, .fetched) ---- */

#define PDF_DIR        "pdf"
#define PDF_LIFE_NEVER 86400.0          /* how long a PDF is kept when results never expire */
#define PDF_PATH       (PATH_MAX + 300) /* room for dir/pdf/<a file name> */

/* Whether s may name a file in the spool: a group made by POST /v1/jobs (a uuid) or an
 * upload's name (a uuid and a short extension) is; a path, a hidden name or a long one is
 * not. */
static int plain_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= 100 && s[0] != '.' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyz"
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

/* dir/pdf/<group><ext> into out. */
static void pdf_path(char out[PDF_PATH], const char *dir, const char *group, const char *ext)
{
    snprintf(out, PDF_PATH, "%s/" PDF_DIR "/%s%s", dir, group, ext);
}

/* The names of the uploads that pending PDF jobs name (a set: a JSON object; new). */
static json_t *pdf_job_uploads(const char *dir)
{
    json_t *set = json_object();
    char pdir[PATH_MAX];
    snprintf(pdir, sizeof pdir, "%s/" PDF_DIR, dir);
    DIR *d = opendir(pdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[PDF_PATH];
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l <= 4 || strcmp(e->d_name + l - 4, ".job") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", pdir, e->d_name);
        char *text = read_small(path), *nl = text ? strchr(text, '\n') : NULL;
        if (nl) {
            *nl = '\0';
            json_object_set_new(set, text, json_true());
        }
        free(text);
    }
    if (d)
        closedir(d);
    return set;
}

int ocp__spool_keep_pdf(const char *dir, const char *group, const char *path, json_t *ids)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!plain_name(group) || !plain_name(base))
        return -EINVAL;
    char job[PDF_PATH];
    snprintf(job, sizeof job, "%s/" PDF_DIR, dir);
    /* Made at the first such job: a spool that never held one looks as it always did. */
    if (mkdir(job, 0750) < 0 && errno != EEXIST)
        return -errno;
    pdf_path(job, dir, group, ".job");
    return write_list(job, base, ids);
}

/* Writes group's reason (code, then the text) to pdf/<group>.err. Returns 0 or -errno. */
static int write_reason(const char *dir, const char *group, int code, const char *why)
{
    char path[PDF_PATH];
    pdf_path(path, dir, group, ".err");
    char *text = ocp_xasprintf("%d\n%s", code, why);
    int rc = ocp_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

/* Whether build's code ends the job: a page not done yet, or a broker that does not
 * answer, is asked again later (unless final: every page has finished, so a page not done
 * is one that failed). */
static int settled(int rc, int final)
{
    return rc != OCP_E_BROKER && (rc != OCP_E_EMPTY || final);
}

/*
 * Makes the PDF of job jfd (open on pdf/<group>.job), under its lock: the sweep and each
 * GET may try at once, one makes it and the others find it made (the job file unlinked).
 * Returns 0 when the job is over (its PDF or its reason kept, the upload deleted), or the
 * code of an attempt that kept nothing (reason in err).
 */
static int assemble(ocp_broker *b, const char *dir, const char *group, int jfd, int final,
                    ocp__spool_build_fn build, void *ctx, char *err, size_t errlen)
{
    struct stat st;
    if (flock(jfd, LOCK_EX) < 0)
        return ocp_errf(-errno, err, errlen, "cannot lock the PDF job of group %s", group);
    if (fstat(jfd, &st) < 0 || st.st_nlink == 0)
        return 0; /* another made it while this one waited */
    char *text = read_fd(jfd), *nl = text ? strchr(text, '\n') : NULL;
    if (!nl) {
        free(text);
        return ocp_errf(OCP_E_DECODE, err, errlen, "the PDF job of group %s does not read", group);
    }
    *nl = '\0';
    char up[PDF_PATH], job[PDF_PATH];
    /* Written by ocp__spool_keep_pdf, but read as any file: a name that is not plain
     * deletes nothing. */
    up[0] = '\0';
    if (plain_name(text))
        snprintf(up, sizeof up, "%s/%s", dir, text);
    pdf_path(job, dir, group, ".job");
    free(text);
    ocp_sb sb;
    ocp_sb_init(&sb);
    int rc = build(ctx, b, group, &sb, err, errlen), kept;
    if (rc && !settled(rc, final)) {
        ocp_sb_fini(&sb);
        return rc;
    }
    if (rc == 0) {
        char path[PDF_PATH];
        pdf_path(path, dir, group, ".pdf");
        kept = ocp_write_file(path, sb.buf, sb.len);
    } else {
        kept = write_reason(dir, group, rc, err);
    }
    if (kept) {
        /* The disk is full, say: the upload stays, the next sweep tries again. */
        ocp_sb_fini(&sb);
        return ocp_errf(kept, err, errlen, "cannot keep the PDF of group %s", group);
    }
    if (rc == 0)
        OCP_LOG(OCP_LOG_INFO, "group %s: searchable PDF kept (%zu bytes), its upload deleted",
                group, sb.len);
    else
        OCP_LOG(OCP_LOG_INFO, "group %s: no PDF (%s), its upload deleted", group, err);
    ocp_sb_fini(&sb);
    if (up[0])
        unlink(up);
    unlink(job);
    return 0;
}

/* What the spool keeps for group, made: see ocp__spool_pdf. */
static int kept_pdf(const char *dir, const char *group, int *fd, char *err, size_t errlen)
{
    char path[PDF_PATH];
    pdf_path(path, dir, group, ".pdf");
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0)
        return 0;
    pdf_path(path, dir, group, ".err");
    char *text = read_small(path), *end = NULL;
    if (!text)
        return 1;
    long code = strtol(text, &end, 10);
    /* Our own file, but read as any other: a code out of range reads as a bad document. */
    if (end == text || *end != '\n' || code >= 0 || code < -100000)
        code = OCP_E_DECODE, end = NULL;
    ocp_errf((int)code, err, errlen, "%s", end ? end + 1 : "no PDF for this group");
    free(text);
    return (int)code;
}

int ocp__spool_pdf(ocp_broker *b, const char *dir, const char *group, int final,
                   ocp__spool_build_fn build, void *ctx, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (!plain_name(group))
        return 1;
    char job[PDF_PATH];
    pdf_path(job, dir, group, ".job");
    int jfd = open(job, O_RDONLY | O_CLOEXEC);
    if (jfd >= 0) {
        int rc = assemble(b, dir, group, jfd, final, build, ctx, err, errlen);
        close(jfd); /* and its lock */
        if (rc)
            return rc;
    }
    /* The job is written before its PDF is asked for and unlinked only after its PDF or
     * reason is kept: with no job here, what there is to find is there. */
    return kept_pdf(dir, group, fd, err, errlen);
}

void ocp__spool_pdf_fetched(const char *dir, const char *group)
{
    char path[PDF_PATH];
    if (!plain_name(group))
        return;
    pdf_path(path, dir, group, ".fetched");
    /* O_EXCL: the first download counts; later ones do not keep it longer. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd >= 0)
        close(fd);
}

/* The sweep's look at one pending job (name: "<group>.job"). Returns 1 when the job is
 * over (its PDF or its reason kept, here or by a GET meanwhile). */
static int sweep_job(ocp_broker *b, const char *dir, const char *name, int forgets, double expires,
                     double age, ocp__spool_build_fn build, void *ctx)
{
    char group[256], path[PDF_PATH], err[700] = "";
    snprintf(group, sizeof group, "%.*s", (int)(strlen(name) - 4), name);
    pdf_path(path, dir, group, ".job");
    char *text = read_small(path), *ids = text ? strchr(text, '\n') : NULL;
    int done = ids && ids_finished(b, ids + 1, forgets, expires, age), fd = -1;
    free(text);
    if (!done)
        return 0;
    ocp__spool_pdf(b, dir, group, 1, build, ctx, &fd, err, sizeof err);
    if (fd >= 0)
        close(fd);
    if (access(path, F_OK) == 0) {
        OCP_LOG(OCP_LOG_WARN, "group %s: its PDF is not made yet: %s", group, err);
        return 0;
    }
    return 1;
}

/* A PDF fetched OCP__SPOOL_FETCHED_S ago (name: "<group>.fetched") goes; its reason says
 * so to a later GET, until the result lifetime. */
static void sweep_fetched(const char *dir, const char *name)
{
    char group[256], path[PDF_PATH];
    snprintf(group, sizeof group, "%.*s", (int)(strlen(name) - 8), name);
    pdf_path(path, dir, group, ".pdf");
    if (unlink(path) == 0) {
        char why[200];
        snprintf(why, sizeof why,
                 "this PDF was deleted %d s after its first download: send the document again",
                 OCP__SPOOL_FETCHED_S);
        write_reason(dir, group, -ENOENT, why);
    }
    pdf_path(path, dir, group, ".fetched");
    unlink(path);
}

long ocp__spool_sweep_pdf(ocp_broker *b, const char *dir, int forgets, double expires,
                          ocp__spool_build_fn build, void *ctx)
{
    char pdir[PATH_MAX];
    snprintf(pdir, sizeof pdir, "%s/" PDF_DIR, dir);
    DIR *d = opendir(pdir);
    struct dirent *e;
    double life = expires > 0 ? expires : PDF_LIFE_NEVER;
    time_t now = time(NULL);
    long n = 0;
    while (d && (e = readdir(d))) {
        char path[PDF_PATH];
        struct stat st;
        size_t l = strlen(e->d_name);
        snprintf(path, sizeof path, "%s/%s", pdir, e->d_name);
        if (e->d_name[0] == '.' || lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        double age = difftime(now, st.st_mtime);
        if (l > 4 && strcmp(e->d_name + l - 4, ".job") == 0)
            n += sweep_job(b, dir, e->d_name, forgets, expires, age, build, ctx);
        else if (l > 8 && strcmp(e->d_name + l - 8, ".fetched") == 0 && age >= OCP__SPOOL_FETCHED_S)
            sweep_fetched(dir, e->d_name);
        else if (age >= life) /* a PDF, a reason, a list or PDF cut short by a crash */
            unlink(path);
    }
    if (d)
        closedir(d);
    return n;
}
