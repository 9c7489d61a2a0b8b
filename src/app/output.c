/*
 * output.c: reading a finished page back from the queue and rendering it
 * (output.h), for `ocrpool ocr`, `ocrpool result` and the HTTP API.
 */
#include "app/output.h"
#include "app/pdf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int ocp_app_page_get(ocp_broker *b, const char *id, int parse, ocp_app_page *pg)
{
    memset(pg, 0, sizeof *pg);
    ocp_result_init(&pg->res);
    int rc = ocp_broker_get(b, id, &pg->info);
    if (rc) {
        memset(&pg->info, 0, sizeof pg->info);
        return rc;
    }
    if (!parse || pg->info.state != OCP_TASK_DONE)
        return 0;
    if (!pg->info.result || ocp_result_from_json(&pg->res, pg->info.result) != 0)
        return OCP_E_DECODE;
    pg->parsed = 1;
    return 0;
}

void ocp_app_page_fini(ocp_app_page *pg)
{
    ocp_task_info_fini(&pg->info);
    ocp_result_fini(&pg->res);
    pg->parsed = 0;
}

void ocp_app_render(const char *json, const ocp_result *res, int fmt, ocp_sb *out)
{
    if (fmt == OCP_FMT_JSON)
        ocp_sb_puts(out, json ? json : "");
    else
        ocp_result_render(res, fmt, out);
}

const char *ocp_app_format_type(int fmt)
{
    switch (fmt) {
    case OCP_FMT_TXT:
        return "text/plain; charset=utf-8";
    case OCP_FMT_JSON:
        return "application/json";
    case OCP_FMT_HOCR:
        return "text/html; charset=utf-8";
    case OCP_FMT_ALTO:
        return "application/xml";
    case OCP_FMT_TSV:
        return "text/tab-separated-values; charset=utf-8";
    }
    return "application/octet-stream";
}

int ocp_app_write_page(const char *outdir, const char *stem, int page, int pages, int fmts,
                       const char *json, const ocp_result *res, int only_missing, char *err,
                       size_t errlen)
{
    ocp_sb sb;
    int rc = 0;
    ocp_sb_init(&sb);
    for (int f = 1; f <= OCP_FMT_TSV && !rc; f <<= 1) {
        if (!(fmts & f))
            continue;
        char *path = pages > 1
                         ? ocp_xasprintf("%s/%s-p%d.%s", outdir, stem, page + 1, ocp_format_ext(f))
                         : ocp_xasprintf("%s/%s.%s", outdir, stem, ocp_format_ext(f));
        if (!(only_missing && access(path, F_OK) == 0)) {
            ocp_sb_reset(&sb);
            ocp_app_render(json, res, f, &sb);
            rc = ocp_write_file(path, sb.buf, sb.len);
            if (rc)
                ocp_errf(rc, err, errlen, "cannot write %s: %s", path, ocp_strerror(rc));
        }
        free(path);
    }
    ocp_sb_fini(&sb);
    return rc;
}

int ocp_app_write_text(FILE *f, char *const *texts, int n)
{
    for (int k = 0; k < n; k++) {
        if (k)
            fputc('\f', f);
        if (texts[k])
            fputs(texts[k], f);
    }
    if (fflush(f) != 0 || ferror(f))
        return -(errno ? errno : EIO);
    return 0;
}

int ocp_app_format_parse(const char *list)
{
    int mask = 0;
    char *copy = ocp_xstrdup(list), *save = NULL;
    /* An empty name ("txt,,json") is refused, as ocp_format_parse refuses it. */
    size_t n = strlen(copy);
    if (n == 0 || copy[0] == ',' || copy[n - 1] == ',' || strstr(copy, ",,")) {
        free(copy);
        return -1;
    }
    for (char *f = strtok_r(copy, ",", &save); f && mask >= 0; f = strtok_r(NULL, ",", &save)) {
        int one = strcmp(f, "pdf") == 0 ? OCP_APP_FMT_PDF : ocp_format_parse(f);
        mask = one < 0 ? -1 : mask | one;
    }
    free(copy);
    return mask;
}

/* ---- Searchable PDFs ------------------------------------------------------------------ */

/* All of source into a new buffer (free), opened as the workers open it. */
static int read_source(const char *source, const ocp_image_limits *lim, size_t max_bytes,
                       char **buf, size_t *len, char *err, size_t errlen)
{
    int fd = lim->allow_roots && *lim->allow_roots
                 ? ocp_image_open_under(source, lim->allow_roots, err, errlen)
                 : open(source, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fd == -EACCES && lim->allow_roots && *lim->allow_roots
                   ? fd
                   : ocp_errf(-errno, err, errlen, "cannot open %s: %s", source, strerror(errno));
    int rc = ocp_read_fd(fd, max_bytes, buf, len);
    close(fd);
    if (rc)
        ocp_errf(rc, err, errlen, "cannot read %s: %s", source, ocp_strerror(rc));
    return rc;
}

/* The original file of a JPEG page, when its bytes can stand for the pixels the OCR saw:
 * 8-bit grey or colour, the same size, no EXIF turn. */
static int jpeg_as_is(const char *source, const ocp_image_limits *lim, size_t max_bytes,
                      const ocp_page_image *img, char **buf, size_t *len)
{
    char err[300];
    int w, h, comps, orient;
    if (read_source(source, lim, max_bytes, buf, len, err, sizeof err) != 0)
        return 0;
    if (ocp_pdf_jpeg_info((const unsigned char *)*buf, *len, &w, &h, &comps, &orient) == 0 &&
        orient == 1 && comps == img->bands && w == img->width && h == img->height)
        return 1;
    free(*buf);
    *buf = NULL;
    return 0;
}

/* The pages of an image document, each with its layer: JPEG passed through, the rest
 * deflated from the decoded pixels (at full size: nothing is resized for the PDF). */
static int images_pdf(ocp_doc *doc, const char *source, const ocp_image_limits *lim,
                      size_t max_bytes, const ocp_result *const *res, int npages, ocp_pdf *pdf,
                      char *err, size_t errlen)
{
    int pages = ocp_doc_pages(doc), rc = 0;
    int jpeg = strcmp(ocp_doc_format(doc), "jpeg") == 0 && pages == 1;
    for (int i = 0; i < pages && !rc; i++) {
        ocp_page_image img;
        if ((rc = ocp_doc_load_page(doc, i, &img, err, errlen)) != 0)
            break;
        char *file = NULL;
        size_t flen = 0;
        ocp_pdf_image pi = {img.pixels, (size_t)img.width * (size_t)img.height * (size_t)img.bands,
                            0,          img.width,
                            img.height, img.bands,
                            img.dpi};
        if (jpeg && jpeg_as_is(source, lim, max_bytes, &img, &file, &flen)) {
            pi.data = (const unsigned char *)file;
            pi.len = flen;
            pi.jpeg = 1;
        }
        rc = ocp_pdf_add_image(pdf, &pi, i < npages ? res[i] : NULL, err, errlen);
        free(file);
        ocp_page_image_fini(&img);
    }
    return rc;
}

/* Every page of the document has its result: 0, or OCP_E_EMPTY naming the first not. */
static int all_pages(const ocp_result *const *res, int npages, int pages, char *err, size_t errlen)
{
    for (int i = 0; i < pages; i++)
        if (i >= npages || !res[i])
            return ocp_errf(OCP_E_EMPTY, err, errlen, "page %d of %d is not done", i + 1, pages);
    return 0;
}

static int pdf_document(const char *source, const ocp_image_limits *lim, size_t max_bytes,
                        const ocp_result *const *res, int npages, int need_all, ocp_sb *out,
                        char *err, size_t errlen)
{
    ocp_image_limits full = *lim;
    ocp_doc *doc = NULL;
    ocp_pdf *pdf = NULL;
    char *buf = NULL;
    size_t len = 0;
    full.max_image_size = 0;
    int rc = ocp_doc_open_file(source, &full, &doc, err, errlen);
    if (rc)
        return rc;
    if (need_all && (rc = all_pages(res, npages, ocp_doc_pages(doc), err, errlen)))
        goto out;
    if (strcmp(ocp_doc_format(doc), "pdf") == 0) {
        if ((rc = read_source(source, lim, max_bytes, &buf, &len, err, errlen)) ||
            (rc = ocp_pdf_open(buf, len, &pdf, err, errlen)))
            goto out;
        for (int i = 0; i < npages && i < ocp_pdf_pages(pdf) && !rc; i++)
            rc = ocp_pdf_graft(pdf, i, res[i], err, errlen);
    } else {
        if (!(rc = ocp_pdf_create(&pdf, err, errlen)))
            rc = images_pdf(doc, source, lim, max_bytes, res, npages, pdf, err, errlen);
    }
    if (!rc)
        rc = ocp_pdf_write(pdf, out, err, errlen);
out:
    ocp_pdf_destroy(pdf);
    free(buf);
    ocp_doc_destroy(doc);
    return rc;
}

int ocp_app_pdf_document(const char *source, const ocp_image_limits *lim, size_t max_bytes,
                         const ocp_result *const *res, int npages, ocp_sb *out, char *err,
                         size_t errlen)
{
    return pdf_document(source, lim, max_bytes, res, npages, 0, out, err, errlen);
}

/* A group's tasks as ocp_app_group_pdf gathers them. */
typedef struct group_pages {
    char *source;
    int n, cap, bad; /* bad: several sources, or an inline one */
    int not_done, first_not_done;
    const char *state;
    char **results; /* by page (0-based); NULL = not done */
} group_pages;

/* A task's source and page (0-based): from its payload, or (Redis keeps no payload once
 * a page is done) from its result. 0, or -1 when neither says. */
static int task_page(const ocp_task_info *i, char **src, json_int_t *page)
{
    json_t *p = i->payload ? json_loads(i->payload, 0, NULL) : NULL;
    json_int_t one = 0;
    if (!json_is_string(json_object_get(p, "source"))) {
        json_decref(p);
        p = i->result ? json_loads(i->result, 0, NULL) : NULL;
        one = 1; /* a result counts pages from 1 */
    }
    const char *s = json_string_value(json_object_get(p, "source"));
    json_t *pg = json_object_get(p, "page");
    int rc = s && json_is_integer(pg) ? 0 : -1;
    *src = rc ? NULL : ocp_xstrdup(s);
    *page = rc ? 0 : json_integer_value(pg) - one;
    json_decref(p);
    return rc;
}

static int gather(void *ctx, const ocp_task_info *i)
{
    group_pages *g = ctx;
    char *src = NULL;
    json_int_t page = 0;
    int known = task_page(i, &src, &page) == 0;
    int done = i->state == OCP_TASK_DONE && i->result;
    g->n++;
    if (!known) {
        /* Not done and nothing says which page (a Redis task still queued): not done. */
        g->bad |= done;
        if (!done && !g->not_done++)
            g->first_not_done = -1, g->state = ocp_task_state_name(i->state);
        return 0;
    }
    if (strcmp(src, "inline") == 0 || (g->source && strcmp(g->source, src) != 0) || page < 0 ||
        page >= 1000000)
        g->bad = 1;
    if (!g->bad && !g->source)
        g->source = ocp_xstrdup(src);
    free(src);
    while (!g->bad && page >= g->cap) {
        int cap = g->cap ? g->cap * 2 : 16;
        g->results = ocp_xrealloc(g->results, (size_t)cap * sizeof *g->results);
        memset(g->results + g->cap, 0, (size_t)(cap - g->cap) * sizeof *g->results);
        g->cap = cap;
    }
    if (g->bad)
        return 0;
    if (!done) {
        if (!g->not_done++ || page < g->first_not_done)
            g->first_not_done = (int)page, g->state = ocp_task_state_name(i->state);
    } else if (!g->results[page]) {
        g->results[page] = ocp_xstrdup(i->result);
    }
    return 0;
}

static int group_pdf(ocp_broker *b, const char *group, const ocp_image_limits *lim,
                     size_t max_bytes, ocp_sb *out, char *err, size_t errlen)
{
    group_pages g = {0};
    ocp_result *res = NULL;
    const ocp_result **rp = NULL;
    int rc = ocp_broker_list(b, group, 1, gather, &g), pages = 0;
    if (rc) {
        ocp_errf(rc, err, errlen, "%s", ocp_broker_errmsg(b));
        goto out;
    }
    if (g.n == 0) {
        rc = ocp_errf(OCP_E_NOPAGE, err, errlen, "no such group");
        goto out;
    }
    if (g.bad) {
        rc = ocp_errf(OCP_E_UNSUPPORTED, err, errlen,
                      "a PDF is made of one document sent as a file: this group holds several, "
                      "or pages sent inline");
        goto out;
    }
    if (g.not_done) {
        rc = ocp_errf(OCP_E_EMPTY, err, errlen, "%d page%s not done (page %d is %s)", g.not_done,
                      g.not_done == 1 ? "" : "s",
                      g.first_not_done + 1, g.state);
        if (g.first_not_done < 0)
            ocp_errf(OCP_E_EMPTY, err, errlen, "%d page%s not done", g.not_done,
                     g.not_done == 1 ? "" : "s");
        goto out;
    }
    for (int i = 0; i < g.cap; i++)
        if (g.results[i])
            pages = i + 1;
    res = ocp_xcalloc((size_t)pages + 1, sizeof *res);
    rp = ocp_xcalloc((size_t)pages + 1, sizeof *rp);
    for (int i = 0; i < pages; i++) {
        ocp_result_init(&res[i]);
        if (g.results[i] && ocp_result_from_json(&res[i], g.results[i]) == 0)
            rp[i] = &res[i];
    }
    /* Every page of the document, not only of the group: a Celery group's pages join it as
     * they are delivered, so a group can look complete before its last pages are. */
    rc = pdf_document(g.source, lim, max_bytes, rp, pages, 1, out, err, errlen);
out:
    for (int i = 0; i < pages; i++)
        ocp_result_fini(&res[i]);
    for (int i = 0; i < g.cap; i++)
        free(g.results[i]);
    free(g.results);
    free(g.source);
    free(res);
    free(rp);
    return rc;
}

int ocp_app_group_pdf(ocp_broker *b, const char *group, const ocp_image_limits *lim,
                      size_t max_bytes, ocp_sb *out, char *err, size_t errlen)
{
    return group_pdf(b, group, lim, max_bytes, out, err, errlen);
}

/* Whether the real path dir lies under one of roots (':'-joined; "/" = any folder). */
static int under_roots(const char *dir, const char *roots)
{
    char root[PATH_MAX];
    int ok = 0;
    char *list = ocp_xstrdup(roots), *save = NULL;
    for (char *r = strtok_r(list, ":", &save); r && !ok; r = strtok_r(NULL, ":", &save)) {
        if (!realpath(r, root))
            continue;
        size_t n = strlen(root);
        ok = strcmp(root, "/") == 0 ||
             (strncmp(dir, root, n) == 0 && (dir[n] == '\0' || dir[n] == '/'));
    }
    free(list);
    return ok;
}

/* out's folder, opened (O_PATH), when it is under out_roots and nothing is at out yet; its
 * last component in *base. The opened folder's own path is what is checked, so a folder
 * swapped for a symlink after the check cannot move the write elsewhere. A descriptor, or
 * a negative code with the reason in err. */
static int open_out_dir(const char *out, const char *out_roots, const char **base, char *err,
                        size_t errlen)
{
    if (!out_roots || !*out_roots)
        return ocp_errf(-EACCES, err, errlen,
                        "output_pdf %s: this node writes no PDFs (it has no --output-root)", out);
    const char *slash = strrchr(out, '/');
    *base = slash ? slash + 1 : out;
    if (!slash || !**base || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0)
        return ocp_errf(-EINVAL, err, errlen, "output_pdf %s: not a file's path", out);
    char *dir = slash == out ? ocp_xstrdup("/") : ocp_xstrndup(out, (size_t)(slash - out));
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC), e = errno;
    free(dir);
    if (fd < 0)
        return ocp_errf(-e, err, errlen, "output_pdf %s: its folder cannot be opened: %s", out,
                        strerror(e));
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    if (n < 0 || (real[n] = '\0', !under_roots(real, out_roots))) {
        close(fd);
        return ocp_errf(-EACCES, err, errlen,
                        "output_pdf %s: its folder is not under --output-root", out);
    }
    struct stat st;
    int there = fstatat(fd, *base, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (there || errno != ENOENT) {
        e = errno;
        close(fd);
        return there ? ocp_errf(-EEXIST, err, errlen,
                                "output_pdf %s: something is there already (ocrpool never "
                                "replaces a file)",
                                out)
                     : ocp_errf(-e, err, errlen, "output_pdf %s: %s", out, strerror(e));
    }
    return fd;
}

int ocp_app_pdf_check(const char *out, const char *out_roots, char *err, size_t errlen)
{
    const char *base;
    int fd = open_out_dir(out, out_roots, &base, err, errlen);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

/* buf as a new file base of folder dirfd: written under a fresh name there (O_EXCL, so
 * no planted name or symlink is written through), then linked to base, which fails with
 * -EEXIST when anything is there: never replaced, and whole when there. 0 or -errno. */
static int write_new(int dirfd, const char *base, const char *buf, size_t len)
{
    char tmp[80], id[37];
    int fd = -1;
    for (int k = 0; k < 8 && fd < 0; k++) {
        ocp_uuid4(id);
        snprintf(tmp, sizeof tmp, ".ocrpool-%s.tmp", id);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    int rc = 0;
    while (len > 0 && !rc) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno != EINTR)
            rc = -errno;
        else if (w > 0)
            buf += w, len -= (size_t)w;
    }
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && !rc)
        rc = -errno;
    if (!rc && linkat(dirfd, tmp, dirfd, base, 0) < 0)
        rc = -errno;
    unlinkat(dirfd, tmp, 0);
    return rc;
}

/* The child's work: the PDF of group at out, when the document is complete. Returns its
 * exit status. */
static int pdf_job(const char *url, const ocp_broker_opts *opts, const ocp_image_limits *lim,
                   const char *out_roots, const char *group, const char *out)
{
    char err[700];
    ocp_broker *b = NULL;
    const char *base;
    ocp_sb sb;
    int dirfd = open_out_dir(out, out_roots, &base, err, sizeof err), rc = 0;
    if (dirfd < 0) {
        /* A later job of a group whose PDF is written already finds it there. */
        OCP_LOG(dirfd == -EEXIST ? OCP_LOG_WARN : OCP_LOG_ERROR, "group %s: no PDF: %s", group,
                err);
        return 1;
    }
    if (ocp_image_global_init("ocrpool") || ocp_broker_open(url, opts, &b, err, sizeof err)) {
        OCP_LOG(OCP_LOG_ERROR, "group %s: no PDF: %s", group, b ? err : "cannot start libvips");
        close(dirfd);
        return 1;
    }
    ocp_sb_init(&sb);
    /* The source is read whole, as a worker would read it (1 GiB at most). */
    rc = ocp_app_group_pdf(b, group, lim, (size_t)1 << 30, &sb, err, sizeof err);
    if (rc == OCP_E_EMPTY) {
        OCP_LOG(OCP_LOG_DEBUG, "group %s: no PDF yet: %s", group, err);
        rc = 0;
    } else if (rc) {
        OCP_LOG(OCP_LOG_ERROR, "group %s: no PDF: %s", group, err);
    } else if ((rc = write_new(dirfd, base, sb.buf, sb.len)) == -EEXIST) {
        OCP_LOG(OCP_LOG_WARN, "group %s: output_pdf %s appeared meanwhile: not replaced", group,
                out);
    } else if (rc) {
        OCP_LOG_ERR(OCP_LOG_ERROR, rc, "group %s: cannot write %s", group, out);
    } else {
        OCP_LOG(OCP_LOG_INFO, "group %s: searchable PDF %s (%zu bytes)", group, out, sb.len);
    }
    close(dirfd);
    ocp_sb_fini(&sb);
    ocp_broker_close(b);
    return rc ? 1 : 0;
}

pid_t ocp_app_pdf_start(const char *url, const ocp_broker_opts *opts, const ocp_image_limits *lim,
                        const char *out_roots, const char *group, const char *out)
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0)
        return pid;
    /* The job is its own process: the caller's descriptors closed (its queue connection is
     * not used here: the job opens its own), signals at their defaults. */
    syscall(SYS_close_range, 3U, ~0U, 0U);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    _exit(pdf_job(url, opts, lim, out_roots, group, out));
}
