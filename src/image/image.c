/*
 * image.c: decoding, limits and resizing with libvips (image.h).
 *
 * The flow for one page:
 *
 *   source --sniff--> loader (whitelist) --header--> w x h <= max_pixels?
 *     --decode (fail on errors and truncation, in memory)--> autorot
 *     --> 8-bit sRGB or grey --> flatten alpha on white --> resize (Lanczos3)
 *     --> contiguous pixels for the engine
 *
 * libvips evaluates lazily: opening an image reads only its header, so the
 * pixel check runs before a single row is decoded.
 */
#include "image/image.h"
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>
#include <zlib.h>

struct ocp_doc {
    VipsSource *src; /* NULL until a page is opened when the header was read here (quick_header):
                      * then made from fd or buf (doc_source) */
    int fd;          /* the file read (owned), or -1 */
    const void *buf; /* or the bytes (borrowed), or NULL */
    size_t len;
    const char *format;
    int pages;
    int w0, h0; /* page 0's size, read by doc_open: not read again for it */
    ocp_image_limits lim;
};

typedef struct loader_name {
    const char *prefix; /* of the libvips loader's class name */
    const char *format;
    int paged; /* takes "page" and counts pages */
} loader_name;

/* The formats we accept. Every other loader libvips has (SVG, ImageMagick,
 * FITS, matrix/CSV text, ...) is refused: a smaller attack surface. */
static const loader_name loaders[] = {
    {"VipsForeignLoadPng", "png", 0},   {"VipsForeignLoadJpeg", "jpeg", 0},
    {"VipsForeignLoadTiff", "tiff", 1}, {"VipsForeignLoadWebp", "webp", 0},
    {"VipsForeignLoadPpm", "pnm", 0},   {"VipsForeignLoadNsgif", "gif", 0},
    {"VipsForeignLoadGif", "gif", 0},   {"VipsForeignLoadPdf", "pdf", 1},
};

static void vips_log_handler(const gchar *domain, GLogLevelFlags level, const gchar *msg,
                             gpointer data)
{
    (void)level;
    (void)data;
    OCP_LOG(OCP_LOG_DEBUG, "%s: %s", domain ? domain : "glib", msg);
}

int ocp_image_global_init(const char *argv0)
{
    static int done;
    if (done)
        return 0;
    if (VIPS_INIT(argv0 ? argv0 : "ocrpool"))
        return OCP_E_DECODE;
    vips_concurrency_set(1);
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    /*
     * libvips marks PDF and PNM loading "untrusted" along with the loaders we
     * never want; so block every loader, then allow back the ones we accept.
     * find_loader() refuses any other format by name as well.
     */
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++)
        vips_operation_block_set(loaders[i].prefix, FALSE);
    vips_leak_set(FALSE);
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                      vips_log_handler, NULL);
    done = 1;
    return 0;
}

/* The first line of libvips's error buffer, cleaned, into err; then clears it. */
static int vips_reason(int code, const char *what, char *err, size_t errlen)
{
    const char *buf = vips_error_buffer();
    char line[240];
    size_t n = 0;
    while (*buf == '\n' || *buf == ' ')
        buf++;
    while (buf[n] && buf[n] != '\n' && n < sizeof line - 1) {
        line[n] = (unsigned char)buf[n] < 0x20 ? ' ' : buf[n];
        n++;
    }
    line[n] = '\0';
    vips_error_clear();
    if (n == 0)
        return ocp_errf(code, err, errlen, "%s", what);
    return ocp_errf(code, err, errlen, "%s: %s", what, line);
}

int ocp_image_check_pixels(int64_t w, int64_t h, int64_t max_pixels)
{
    if (w <= 0 || h <= 0)
        return OCP_E_DECODE;
    if (w > INT32_MAX || h > INT32_MAX || w * h > max_pixels)
        return OCP_E_TOOBIG;
    return 0;
}

void ocp_image_fit(int w, int h, int max_side, int *nw, int *nh)
{
    int longest = w > h ? w : h;
    if (max_side <= 0 || longest <= max_side) {
        *nw = w;
        *nh = h;
        return;
    }
    double f = (double)max_side / (double)longest;
    *nw = w >= h ? max_side : (int)lround(w * f);
    *nh = h >= w ? max_side : (int)lround(h * f);
    if (*nw < 1)
        *nw = 1;
    if (*nh < 1)
        *nh = 1;
}

static const loader_name *find_loader(const char *nick)
{
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++)
        if (strncmp(nick, loaders[i].prefix, strlen(loaders[i].prefix)) == 0)
            return &loaders[i];
    return NULL;
}

/* The doc's libvips source, made on first use when its header was read by quick_header;
 * NULL (libvips's reason in its error buffer) when it cannot be made. Borrowed. */
static VipsSource *doc_source(ocp_doc *doc)
{
    if (!doc->src && doc->fd >= 0)
        doc->src = vips_source_new_from_descriptor(doc->fd); /* it reads a dup of fd */
    else if (!doc->src && doc->buf)
        doc->src = vips_source_new_from_memory(doc->buf, doc->len);
    return doc->src;
}

/* Opens page of the doc lazily at resolution dpi (PDF only): only the header is read. */
static VipsImage *open_page_at(ocp_doc *doc, int page, double dpi, char *err, size_t errlen,
                               int *rc)
{
    VipsImage *img;
    if (!doc_source(doc)) {
        *rc = vips_reason(-EIO, "cannot open", err, errlen);
        return NULL;
    }
    if (strcmp(doc->format, "pdf") == 0)
        img = vips_image_new_from_source(doc->src, "", "page", page, "n", 1, "dpi", dpi,
                                         "fail_on", VIPS_FAIL_ON_ERROR, "memory", TRUE, NULL);
    else if (strcmp(doc->format, "tiff") == 0)
        img = vips_image_new_from_source(doc->src, "", "page", page, "n", 1, "fail_on",
                                         VIPS_FAIL_ON_ERROR, "memory", TRUE, NULL);
    else
        img = vips_image_new_from_source(doc->src, "", "fail_on", VIPS_FAIL_ON_ERROR, "memory",
                                         TRUE, NULL);
    if (!img)
        *rc = vips_reason(OCP_E_DECODE, "cannot read the header", err, errlen);
    return img;
}

/* Opens page of the doc lazily (a PDF page at pdf-dpi): only the header is read. */
static VipsImage *open_page(ocp_doc *doc, int page, char *err, size_t errlen, int *rc)
{
    return open_page_at(doc, page, (double)doc->lim.pdf_dpi, err, errlen, rc);
}

/*
 * The quick header read: a PNG's or a baseline or progressive JPEG's size from its first
 * bytes, without libvips (whose loader lookup and header read cost more than queueing the
 * page: `ocrpool submit` reads every file's header). It answers only for a header that is
 * whole and valid by the format's rules, with a size libvips gives too (the same fields);
 * anything else (another format, a header it does not know or that is not whole in the
 * bytes given, a size past 1000000 pixels a side) is left to libvips, whose answer and
 * reasons stay what they were. A page opened this way is read by libvips as before when it
 * is decoded, and its size checked against max-pixels from libvips's own header then.
 * Returns 1 with *format, *w and *h set, or 0.
 */
#define QUICK_HEAD 4096  /* bytes read first */
#define QUICK_JPEG 65536 /* at most, for a JPEG whose metadata comes before its frame */
#define QUICK_SIDE 1000000

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int quick_png(const unsigned char *p, size_t n, int *w, int *h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    /* The signature, then the IHDR chunk: length 13, type, 13 bytes of data, its CRC. */
    if (n < 33 || memcmp(p, sig, 8) != 0 || be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
        return 0;
    if (crc32(crc32(0, NULL, 0), p + 12, 17) != be32(p + 29))
        return 0;
    uint32_t pw = be32(p + 16), ph = be32(p + 20);
    int depth = p[24], type = p[25];
    int ok_depth;
    switch (type) {
    case 0: /* grey */
        ok_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
        break;
    case 3: /* palette */
        ok_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8;
        break;
    case 2: /* RGB, grey + alpha, RGBA */
    case 4:
    case 6:
        ok_depth = depth == 8 || depth == 16;
        break;
    default:
        ok_depth = 0;
    }
    if (!ok_depth || p[26] != 0 || p[27] != 0 || p[28] > 1 || pw < 1 || ph < 1 || pw > QUICK_SIDE ||
        ph > QUICK_SIDE)
        return 0;
    *w = (int)pw;
    *h = (int)ph;
    return 1;
}

/*
 * A JPEG's markers from SOI to SOS: the frame (SOF0, SOF1 or SOF2: 8-bit baseline, extended
 * or progressive, 1, 3 or 4 components) must come before the scan, and every segment up to
 * the scan's must be whole in the n bytes. Returns 1 (size set), 0 (not answered here).
 */
static int quick_jpeg(const unsigned char *p, size_t n, int *w, int *h)
{
    size_t i = 2;
    int fw = 0, fh = 0;
    if (n < 4 || p[0] != 0xff || p[1] != 0xd8)
        return 0;
    for (;;) {
        if (i + 4 > n || p[i] != 0xff)
            return 0;
        while (i + 4 <= n && p[i + 1] == 0xff) /* fill bytes */
            i++;
        if (i + 4 > n)
            return 0;
        int m = p[i + 1];
        size_t len = (size_t)p[i + 2] << 8 | p[i + 3];
        /* A marker without a segment (TEM, RSTn, SOI, EOI) has no place here. */
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd9) || len < 2 || i + 2 + len > n)
            return 0;
        const unsigned char *seg = p + i + 4;
        if (m == 0xc0 || m == 0xc1 || m == 0xc2) {
            int nf = len >= 8 ? seg[5] : 0;
            if (fw || seg[0] != 8 || (nf != 1 && nf != 3 && nf != 4) || len != 8 + 3 * (size_t)nf)
                return 0;
            fh = seg[1] << 8 | seg[2];
            fw = seg[3] << 8 | seg[4];
            /* libjpeg's own limits: a side of 65500, sampling factors 1 to 4. */
            if (fw < 1 || fh < 1 || fw > 65500 || fh > 65500)
                return 0;
            for (int k = 0; k < nf; k++) {
                int hs = seg[7 + 3 * k] >> 4, vs = seg[7 + 3 * k] & 15;
                if (hs < 1 || hs > 4 || vs < 1 || vs > 4)
                    return 0;
            }
        } else if ((m >= 0xc3 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc)) {
            return 0; /* another kind of frame: libvips says what it makes of it */
        } else if (m == 0xda) {
            if (!fw)
                return 0;
            *w = fw;
            *h = fh;
            return 1;
        }
        i += 2 + len;
    }
}

/* The quick header of the n bytes at p (quick_png, quick_jpeg). */
static int quick_header(const unsigned char *p, size_t n, const char **format, int *w, int *h)
{
    if (quick_png(p, n, w, h)) {
        *format = "png";
        return 1;
    }
    if (quick_jpeg(p, n, w, h)) {
        *format = "jpeg";
        return 1;
    }
    return 0;
}

/* A doc of one page whose header quick_header read: its source is made when a page is
 * opened. Takes fd (closed by ocp_doc_destroy) or borrows buf. */
static ocp_doc *quick_doc(const char *format, int w, int h, int fd, const void *buf, size_t len,
                          const ocp_image_limits *lim)
{
    ocp_doc *doc = ocp_xcalloc(1, sizeof *doc);
    doc->fd = fd;
    doc->buf = buf;
    doc->len = len;
    doc->format = format;
    doc->lim = *lim;
    doc->pages = 1;
    doc->w0 = w;
    doc->h0 = h;
    return doc;
}

/* The quick header of the file open at fd (its first bytes, read where they are: the
 * descriptor's offset is left alone). 1 (format and size set) or 0. */
static int quick_file(int fd, const char **format, int *w, int *h)
{
    unsigned char head[QUICK_HEAD];
    ssize_t n = pread(fd, head, sizeof head, 0);
    if (n <= 0)
        return 0;
    if (quick_header(head, (size_t)n, format, w, h))
        return 1;
    if ((size_t)n < sizeof head || head[0] != 0xff || head[1] != 0xd8)
        return 0;
    /* A JPEG whose frame is further on (EXIF with a thumbnail, an ICC profile). */
    unsigned char *more = malloc(QUICK_JPEG);
    int ok = 0;
    if (more && (n = pread(fd, more, QUICK_JPEG, 0)) > 0)
        ok = quick_header(more, (size_t)n, format, w, h);
    free(more);
    return ok;
}

static int doc_open(VipsSource *src, const ocp_image_limits *lim, ocp_doc **out, char *err,
                    size_t errlen)
{
    const char *nick = vips_foreign_find_load_source(src);
    const loader_name *ln;
    ocp_doc *doc;
    VipsImage *img;
    int rc = 0;

    if (!nick) {
        vips_error_clear();
        g_object_unref(src);
        return ocp_errf(OCP_E_FORMAT, err, errlen,
                        "not a supported image or PDF (PNG, JPEG, TIFF, WebP, PNM, GIF, PDF)");
    }
    ln = find_loader(nick);
    if (!ln) {
        g_object_unref(src);
        return ocp_errf(OCP_E_FORMAT, err, errlen,
                        "format of loader %s is not accepted (PNG, JPEG, TIFF, WebP, PNM, GIF, "
                        "PDF are)",
                        nick);
    }
    doc = ocp_xcalloc(1, sizeof *doc);
    doc->src = src;
    doc->fd = -1;
    doc->format = ln->format;
    doc->lim = *lim;
    doc->pages = 1;
    img = open_page(doc, 0, err, errlen, &rc);
    if (!img) {
        ocp_doc_destroy(doc);
        return rc;
    }
    if (ln->paged)
        doc->pages = vips_image_get_n_pages(img);
    doc->w0 = vips_image_get_width(img);
    doc->h0 = vips_image_get_height(img);
    g_object_unref(img);
    if (doc->pages < 1)
        doc->pages = 1;
    if (doc->pages > lim->max_pages) {
        rc = ocp_errf(OCP_E_PAGES, err, errlen, "document has %d pages, more than max-pages %d",
                      doc->pages, lim->max_pages);
        ocp_doc_destroy(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

/* Whether real (a resolved path) lies under one of roots (':'-joined, each resolved). */
static int under_roots(const char *real, const char *roots)
{
    for (const char *p = roots; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char root[PATH_MAX], rr[PATH_MAX];
        if (n > 0 && n < sizeof root) {
            memcpy(root, p, n);
            root[n] = '\0';
            if (realpath(root, rr)) {
                size_t rl = strlen(rr);
                if (strcmp(rr, "/") == 0 ||
                    (strncmp(real, rr, rl) == 0 && (real[rl] == '/' || real[rl] == '\0')))
                    return 1;
            }
        }
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

int ocp_image_open_under(const char *path, const char *roots, char *err, size_t errlen)
{
    char real[PATH_MAX], again[PATH_MAX], link[64];
    struct stat st;
    int fd = -1, fl;
    ssize_t n;
    if (!path || !*path || !roots || !realpath(path, real) || !under_roots(real, roots))
        goto refuse;
    /* O_NONBLOCK: a FIFO swapped in does not hang the open; O_NOFOLLOW: nor a last symlink. */
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        goto refuse;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    if ((n = readlink(link, again, sizeof again - 1)) <= 0)
        goto refuse;
    again[n] = '\0';
    if (!under_roots(again, roots) || (fl = fcntl(fd, F_GETFL)) < 0 ||
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        goto refuse;
    return fd;
refuse:
    if (fd >= 0)
        close(fd);
    return ocp_errf(-EACCES, err, errlen, "path not allowed");
}

/* Opens path under lim's roots (ocp_image_open_under) as a libvips source. */
static int open_under_roots(const char *path, const ocp_image_limits *lim, ocp_doc **out,
                            char *err, size_t errlen)
{
    struct stat st;
    int fd = ocp_image_open_under(path, lim->allow_roots, err, errlen);
    if (fd < 0)
        return fd;
    if (fstat(fd, &st) == 0 && st.st_size == 0) {
        close(fd);
        return ocp_errf(OCP_E_EMPTY, err, errlen, "empty file");
    }
    const char *format;
    int w, h;
    if (quick_file(fd, &format, &w, &h)) {
        *out = quick_doc(format, w, h, fd, NULL, 0, lim);
        return 0;
    }
    VipsSource *src = vips_source_new_from_descriptor(fd); /* it reads a dup of fd */
    close(fd);
    if (!src)
        return vips_reason(-EIO, "cannot open", err, errlen);
    return doc_open(src, lim, out, err, errlen);
}

int ocp_doc_open_file(const char *path, const ocp_image_limits *lim, ocp_doc **out, char *err,
                      size_t errlen)
{
    struct stat st;
    VipsSource *src;
    if (lim->allow_roots && *lim->allow_roots)
        return open_under_roots(path, lim, out, err, errlen);
    /* Without roots the path itself is said: a worker's task names it, and "No such file"
     * alone hides which one (under roots every refusal has the one reason, above). */
    if (stat(path, &st) < 0)
        return ocp_errf(-errno, err, errlen, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ocp_errf(OCP_E_FORMAT, err, errlen, "not a regular file");
    if (st.st_size == 0)
        return ocp_errf(OCP_E_EMPTY, err, errlen, "empty file");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        const char *format;
        int w, h;
        if (quick_file(fd, &format, &w, &h)) {
            *out = quick_doc(format, w, h, fd, NULL, 0, lim);
            return 0;
        }
        close(fd);
    }
    src = vips_source_new_from_file(path);
    if (!src)
        return vips_reason(-EIO, "cannot open", err, errlen);
    return doc_open(src, lim, out, err, errlen);
}

int ocp_doc_open_buffer(const void *buf, size_t len, const ocp_image_limits *lim, ocp_doc **out,
                        char *err, size_t errlen)
{
    VipsSource *src;
    if (len == 0)
        return ocp_errf(OCP_E_EMPTY, err, errlen, "empty input");
    const char *format;
    int w, h;
    if (quick_header(buf, len, &format, &w, &h)) {
        *out = quick_doc(format, w, h, -1, buf, len, lim);
        return 0;
    }
    src = vips_source_new_from_memory(buf, len);
    if (!src)
        return vips_reason(-ENOMEM, "cannot open", err, errlen);
    return doc_open(src, lim, out, err, errlen);
}

void ocp_doc_destroy(ocp_doc *doc)
{
    if (!doc)
        return;
    if (doc->src)
        g_object_unref(doc->src);
    if (doc->fd >= 0)
        close(doc->fd);
    free(doc);
}

int ocp_doc_pages(const ocp_doc *doc)
{
    return doc->pages;
}

const char *ocp_doc_format(const ocp_doc *doc)
{
    return doc->format;
}

/* Replaces *img by next (taking next's reference), or fails with the libvips reason. */
static int step(VipsImage **img, VipsImage **next, int ok, const char *what, char *err,
                size_t errlen)
{
    /* *next is read here, after the operation (an argument) has run and set it. */
    if (ok != 0)
        return vips_reason(OCP_E_DECODE, what, err, errlen);
    g_object_unref(*img);
    *img = *next;
    *next = NULL;
    return 0;
}

/* libvips says 72 dpi (2.835 px/mm) or 1 px/mm when a file names no resolution. */
static int dpi_of(VipsImage *img)
{
    double res = vips_image_get_yres(img);
    int dpi = (int)lround(res * 25.4);
    if (dpi < 70 || dpi == 72 || dpi > 2400)
        return 0;
    return dpi;
}

int ocp_doc_page_size(ocp_doc *doc, int page, int *w, int *h, char *err, size_t errlen)
{
    int rc = 0;
    if (page < 0 || page >= doc->pages)
        return ocp_errf(OCP_E_NOPAGE, err, errlen, "no page %d (document has %d)", page + 1,
                        doc->pages);
    if (page == 0) {
        *w = doc->w0;
        *h = doc->h0;
        return 0;
    }
    VipsImage *img = open_page(doc, page, err, errlen, &rc);
    if (!img)
        return rc;
    *w = vips_image_get_width(img);
    *h = vips_image_get_height(img);
    g_object_unref(img);
    return 0;
}

/* The page's size against max-pixels, with the reason in err. */
static int check_size(const ocp_doc *doc, VipsImage *img, char *err, size_t errlen)
{
    int w = vips_image_get_width(img), h = vips_image_get_height(img);
    int rc = ocp_image_check_pixels(w, h, doc->lim.max_pixels);
    if (rc == OCP_E_TOOBIG)
        return ocp_errf(rc, err, errlen,
                        "page is %d x %d = %.1f megapixels, over the limit of %.1f (max-pixels)", w,
                        h, (double)w * h / 1e6, (double)doc->lim.max_pixels / 1e6);
    if (rc)
        return ocp_errf(rc, err, errlen, "page has no pixels (%d x %d)", w, h);
    return 0;
}

/*
 * The factor a JPEG page of w x h is shrunk by while it is decoded (libjpeg's DCT scaling:
 * 1, 2, 4 or 8): the largest that leaves it at least its target size (max-image-size), so
 * the Lanczos resize still makes the last step. A page of 4000 x 6000 going to 2048 is
 * decoded at 2000 x 3000: a quarter of the pixels, and a quarter of the time.
 */
static int jpeg_shrink(const ocp_doc *doc, int w, int h)
{
    int nw, nh, f = 8;
    if (strcmp(doc->format, "jpeg") != 0)
        return 1;
    ocp_image_fit(w, h, doc->lim.max_image_size, &nw, &nh);
    while (f > 1 && (w / f < nw || h / f < nh))
        f /= 2;
    return f;
}

/*
 * The page opened again to be decoded at the size it is needed at, and a few lines at a
 * time where it can be:
 *  - a PDF page is rendered at the resolution at which its longest side is max-image-size
 *    (at most pdf-dpi), not at pdf-dpi and then shrunk: a 30 x 30 inch page at 200 dpi
 *    would be 6000 x 6000 RGBA (144 MB) before its resize to 2048;
 *  - a JPEG page is shrunk while decoded (jpeg_shrink);
 *  - an image not to be rotated is decoded top to bottom through the resize, instead of
 *    the whole page at full size first (6 to 9 MB less for an A4 page at 300 dpi).
 * w x h is the page's size at full size (its header). Keeps *img as it is where none of
 * that applies or it cannot be done.
 */
static void open_reduced(ocp_doc *doc, int page, int w, int h, VipsImage **img)
{
    VipsImage *again = NULL;
    int rotated = vips_image_get_orientation(*img) > 1;
    VipsAccess access = rotated ? VIPS_ACCESS_RANDOM : VIPS_ACCESS_SEQUENTIAL;
    if (strcmp(doc->format, "pdf") == 0) {
        int nw, nh, rc = 0;
        ocp_image_fit(w, h, doc->lim.max_image_size, &nw, &nh);
        if (nw == w && nh == h)
            return;
        double f = fmax((double)nw / w, (double)nh / h);
        char ignored[8];
        again = open_page_at(doc, page, doc->lim.pdf_dpi * f, ignored, sizeof ignored, &rc);
    } else if (strcmp(doc->format, "jpeg") == 0) {
        int shrink = jpeg_shrink(doc, w, h);
        if (shrink == 1 && rotated)
            return;
        again = vips_image_new_from_source(doc->src, "", "fail_on", VIPS_FAIL_ON_ERROR, "access",
                                           access, "shrink", shrink, "memory", TRUE, NULL);
    } else if (rotated) {
        return;
    } else if (strcmp(doc->format, "tiff") == 0) {
        again = vips_image_new_from_source(doc->src, "", "page", page, "n", 1, "fail_on",
                                           VIPS_FAIL_ON_ERROR, "access", access, NULL);
    } else {
        again = vips_image_new_from_source(doc->src, "", "fail_on", VIPS_FAIL_ON_ERROR, "access",
                                           access, NULL);
    }
    if (again) {
        g_object_unref(*img);
        *img = again;
    } else {
        vips_error_clear();
    }
}

/* *img made 8-bit sRGB or grey, alpha flattened on white, 1 or 3 bands. */
static int to_rgb_or_grey(VipsImage **img, char *err, size_t errlen)
{
    VipsImage *t = NULL;
    int rc, bands = vips_image_get_bands(*img);
    VipsInterpretation want = bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W;
    if (vips_image_get_interpretation(*img) != want ||
        vips_image_get_format(*img) != VIPS_FORMAT_UCHAR) {
        if (vips_colourspace(*img, &t, want, NULL) == 0) {
            g_object_unref(*img);
            *img = t;
        } else {
            vips_error_clear();
        }
    }
    if (vips_image_hasalpha(*img)) {
        VipsArrayDouble *bg = vips_array_double_newv(1, 255.0);
        int ok = vips_flatten(*img, &t, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if ((rc = step(img, &t, ok, "cannot decode", err, errlen)))
            return rc;
    }
    if (vips_image_get_format(*img) != VIPS_FORMAT_UCHAR &&
        (rc = step(img, &t, vips_cast_uchar(*img, &t, NULL), "cannot decode", err, errlen)))
        return rc;
    /* Anything still not 1 or 3 bands (2-band grey without alpha flag, CMYK left over). */
    bands = vips_image_get_bands(*img);
    if (bands != 1 && bands != 3) {
        int n = bands >= 3 ? 3 : 1;
        if ((rc = step(img, &t, vips_extract_band(*img, &t, 0, "n", n, NULL), "cannot decode", err,
                       errlen)))
            return rc;
    }
    return 0;
}

/*
 * *img resized (Lanczos3) so that the page of uw x uh (upright, at full size: *img may be
 * smaller, reduced on load) fits max-image-size; uw x uh in out->orig_*. An image reduced
 * on load to within a pixel of its target (a PDF page rendered at the resolution of the
 * target, rounded) is cut or padded with white to it instead: no resampling at a scale of 1.
 */
static int fit(const ocp_doc *doc, VipsImage **img, int uw, int uh, ocp_page_image *out,
               char *err, size_t errlen)
{
    VipsImage *t = NULL;
    int nw, nh;
    int cw = vips_image_get_width(*img), ch = vips_image_get_height(*img);
    out->orig_width = uw;
    out->orig_height = uh;
    ocp_image_fit(uw, uh, doc->lim.max_image_size, &nw, &nh);
    if (nw == cw && nh == ch)
        return 0;
    if (abs(nw - cw) <= 1 && abs(nh - ch) <= 1 && (cw != uw || ch != uh)) {
        VipsArrayDouble *white = vips_array_double_newv(1, 255.0);
        int ok = vips_gravity(*img, &t, VIPS_COMPASS_DIRECTION_NORTH_WEST, nw, nh, "extend",
                              VIPS_EXTEND_BACKGROUND, "background", white, NULL);
        vips_area_unref(VIPS_AREA(white));
        return step(img, &t, ok, "cannot resize", err, errlen);
    }
    double hs = (double)nw / cw, vs = (double)nh / ch;
    return step(img, &t,
                vips_resize(*img, &t, hs, "vscale", vs, "kernel", VIPS_KERNEL_LANCZOS3, NULL),
                "cannot resize", err, errlen);
}

/* The decode deadline of one page: libvips signals "eval" on the image being computed as
 * its tiles are made; past the deadline the computation is killed (vips_image_set_kill) and
 * the write fails. One tile's own work (a loader inside one call) is not interrupted: the
 * hard time-limit is the backstop for that. */
typedef struct deadline {
    double until;
    int hit;
} deadline;

static void on_eval(VipsImage *image, VipsProgress *progress, void *data)
{
    (void)progress;
    deadline *d = data;
    if (!d->hit && ocp_now() > d->until) {
        d->hit = 1;
        vips_image_set_kill(image, TRUE);
    }
}

/* img's pixels in memory (g_free), within lim's decode deadline; NULL with the reason. */
static void *decode(const ocp_doc *doc, VipsImage *img, double t0, size_t *size, int *rc,
                    char *err, size_t errlen)
{
    deadline d = {t0 + doc->lim.decode_timeout_s, 0};
    gulong h = 0;
    if (doc->lim.decode_timeout_s > 0) {
        vips_image_set_progress(img, TRUE);
        h = g_signal_connect(img, "eval", G_CALLBACK(on_eval), &d);
    }
    void *mem = vips_image_write_to_memory(img, size);
    if (h)
        g_signal_handler_disconnect(img, h);
    if (!mem && d.hit) {
        vips_error_clear();
        *rc = ocp_errf(OCP_E_DECODE, err, errlen,
                       "decoding the page took longer than decode-timeout %g s",
                       doc->lim.decode_timeout_s);
    } else if (!mem) {
        *rc = vips_reason(OCP_E_DECODE, "cannot decode", err, errlen);
    }
    return mem;
}

/*
 * A colour page whose every pixel is grey (R = G = B: a PDF page rendered in RGB, a scan
 * saved in colour) made one band, in place: a third of the bytes, and the engines' own
 * copies shrink with it (Tesseract keeps 4 bytes a pixel of a colour page, 1 of a grey
 * one). Every value is kept, so what the engines read is the same.
 */
static void grey_if_grey(ocp_page_image *img)
{
    size_t n = (size_t)img->width * img->height;
    unsigned char *p = img->pixels;
    if (img->bands != 3)
        return;
    for (size_t i = 0; i < n; i++)
        if (p[3 * i] != p[3 * i + 1] || p[3 * i] != p[3 * i + 2])
            return;
    for (size_t i = 1; i < n; i++)
        p[i] = p[3 * i];
    img->bands = 1;
    unsigned char *smaller = g_try_realloc(p, n);
    if (smaller)
        img->pixels = smaller;
}

int ocp_doc_load_page(ocp_doc *doc, int page, ocp_page_image *out, char *err, size_t errlen)
{
    VipsImage *img, *t = NULL;
    int rc = 0, dpi;
    size_t size;
    void *mem;

    double t0 = ocp_now();
    memset(out, 0, sizeof *out);
    if (page < 0 || page >= doc->pages)
        return ocp_errf(OCP_E_NOPAGE, err, errlen, "no page %d (document has %d)", page + 1,
                        doc->pages);
    img = open_page(doc, page, err, errlen, &rc);
    if (!img)
        return rc;
    if ((rc = check_size(doc, img, err, errlen)))
        goto fail;
    dpi = strcmp(doc->format, "pdf") == 0 ? doc->lim.pdf_dpi : dpi_of(img);
    /* The page's size upright and at full size: boxes are reported in its coordinates. */
    int w = vips_image_get_width(img), h = vips_image_get_height(img);
    int turned = vips_image_get_orientation(img) >= 5; /* EXIF 5..8: a quarter turn */
    open_reduced(doc, page, w, h, &img);
    if ((rc = step(&img, &t, vips_autorot(img, &t, NULL), "cannot decode", err, errlen)) ||
        (rc = to_rgb_or_grey(&img, err, errlen)) ||
        (rc = fit(doc, &img, turned ? h : w, turned ? w : h, out, err, errlen)))
        goto fail;
    if (!(mem = decode(doc, img, t0, &size, &rc, err, errlen)))
        goto fail;
    out->pixels = mem;
    out->width = vips_image_get_width(img);
    out->height = vips_image_get_height(img);
    out->bands = vips_image_get_bands(img);
    grey_if_grey(out);
    out->scale_x = (double)out->orig_width / out->width;
    out->scale_y = (double)out->orig_height / out->height;
    out->dpi = dpi ? (int)lround(dpi / out->scale_y) : 0;
    g_object_unref(img);
    return 0;
fail:
    g_object_unref(img);
    return rc;
}

void ocp_page_image_fini(ocp_page_image *img)
{
    if (img->pixels)
        g_free(img->pixels);
    memset(img, 0, sizeof *img);
}

ocp_image_limits ocp_image_limits_from_config(const ocp_config *cfg)
{
    return (ocp_image_limits){
        .max_pixels = ocp_config_int(cfg, OCP_S_MAX_PIXELS),
        .max_pages = (int)ocp_config_int(cfg, OCP_S_MAX_PAGES),
        .pdf_dpi = (int)ocp_config_int(cfg, OCP_S_PDF_DPI),
        .max_image_size = (int)ocp_config_int(cfg, OCP_S_MAX_IMAGE_SIZE),
        .decode_timeout_s = ocp_config_double(cfg, OCP_S_DECODE_TIMEOUT),
    };
}
