/*
 * spool.c: the uploads the HTTP API keeps for the workers (spool.h): made
 * when a request's body arrives, noted with the ids of their pages once
 * queued, and deleted by the sweep once those pages have all finished.
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

int ocp__spool_note(const char *path, json_t *ids)
{
    /* Written whole, then renamed: the sweep never reads a part of the list. */
    char *ipath = ocp_xasprintf("%s" IDS_EXT ".part", path);
    ocp_sb sb;
    size_t i;
    json_t *id;
    ocp_sb_init(&sb);
    json_array_foreach(ids, i, id) ocp_sb_printf(&sb, "%s\n", json_string_value(id));
    int rc = 0, fd = open(ipath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || (sb.len && write(fd, sb.buf, sb.len) != (ssize_t)sb.len))
        rc = -errno;
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = -errno;
    char *final = ocp_xasprintf("%s" IDS_EXT, path);
    if (!rc && rename(ipath, final) < 0)
        rc = -errno;
    if (rc)
        unlink(ipath);
    ocp_sb_fini(&sb);
    free(final);
    free(ipath);
    return rc;
}

/* The text of a small file (NUL-terminated; new), or NULL. */
static char *read_small(const char *path)
{
    FILE *f = fopen(path, "re");
    struct stat st;
    char *buf = NULL;
    if (f && fstat(fileno(f), &st) == 0 && st.st_size <= IDS_MAX) {
        buf = ocp_xcalloc(1, (size_t)st.st_size + 1);
        if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
            free(buf);
            buf = NULL;
        }
    }
    if (f)
        fclose(f);
    return buf;
}

/* Whether every page an ids file names has finished (see spool.h). */
static int all_finished(ocp_broker *b, const char *ids_path, int forgets, double expires,
                        double age)
{
    char *text = read_small(ids_path), *save = NULL;
    int done = text != NULL;
    for (char *id = text ? strtok_r(text, "\n", &save) : NULL; id && done;
         id = strtok_r(NULL, "\n", &save)) {
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

/* Uploads without an ids file (their process died before it noted them, or an older
 * version spooled them). */
static long sweep_orphans(ocp_broker *b, const char *dir, double expires)
{
    json_t *used = json_object();
    int rc = ocp_broker_list(b, NULL, 0, note_source, used);
    if (rc && rc != OCP_E_UNSUPPORTED) {
        json_decref(used);
        return 0;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    time_t now = time(NULL);
    long n = 0;
    while (d && (e = readdir(d))) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && orphan(path, rc ? NULL : used, expires, now) &&
            unlink(path) == 0)
            n++;
    }
    if (d)
        closedir(d);
    json_decref(used);
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
