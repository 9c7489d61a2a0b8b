/*
 * test_image.c: pixel limits and resize geometry, and decoding of images
 * made in memory: resize, bands, alpha, 16-bit, resolution, refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>
#include <zlib.h>

#include "config/config.h"
#include "core/error.h"
#include "image/image.h"
#include "pool/page.h"

static const ocp_image_limits lim = {
    .max_pixels = 80000000, .max_pages = 100, .pdf_dpi = 200, .max_image_size = 2048};

static void test_fit(void **state)
{
    (void)state;
    int w, h;
    ocp_image_fit(2480, 3508, 2048, &w, &h); /* A4 at 300 dpi */
    assert_int_equal(h, 2048);
    assert_int_equal(w, 1448);
    ocp_image_fit(3508, 2480, 2048, &w, &h);
    assert_int_equal(w, 2048);
    assert_int_equal(h, 1448);
    ocp_image_fit(1000, 500, 2048, &w, &h);
    assert_int_equal(w, 1000);
    assert_int_equal(h, 500);
    ocp_image_fit(5000, 5000, 2048, &w, &h);
    assert_int_equal(w, 2048);
    assert_int_equal(h, 2048);
    ocp_image_fit(4000, 10, 100, &w, &h);
    assert_int_equal(w, 100);
    assert_int_equal(h, 1);               /* never 0 */
    ocp_image_fit(9000, 7000, 0, &w, &h); /* 0 = never resize */
    assert_int_equal(w, 9000);
    assert_int_equal(h, 7000);
}

static void test_check_pixels(void **state)
{
    (void)state;
    assert_int_equal(ocp_image_check_pixels(7016, 9921, 80000000), 0); /* A3 at 600 dpi */
    assert_int_equal(ocp_image_check_pixels(30000, 30000, 80000000), OCP_E_TOOBIG);
    assert_int_equal(ocp_image_check_pixels(65535, 65535, 80000000), OCP_E_TOOBIG);
    assert_int_equal(ocp_image_check_pixels(INT64_C(1) << 40, 1, INT64_MAX), OCP_E_TOOBIG);
    assert_int_equal(ocp_image_check_pixels(0, 10, 80000000), OCP_E_DECODE);
    assert_int_equal(ocp_image_check_pixels(8000, 10000, 80000000), 0);
    assert_int_equal(ocp_image_check_pixels(8000, 10001, 80000000), OCP_E_TOOBIG);
}

/* A PNG of w x h with bands and 8 or 16 bits, value v, resolution dpi (0 = none). A colour
 * one (3 or 4 bands) is tinted: its green is not its red, so it stays colour (an RGB page
 * whose pixels are all grey reaches the engine as one band: test_lean.sh). */
static void *make_png(int w, int h, int bands, int bits, double v, double alpha, int dpi,
                      size_t *len)
{
    VipsImage *img, *t;
    void *buf = NULL;
    assert_int_equal(vips_black(&img, w, h, "bands", bands, NULL), 0);
    double vals[4] = {v, bands >= 3 ? v * 0.5 + 10 : v, v, alpha};
    double ones[4] = {0, 0, 0, 0};
    assert_int_equal(vips_linear(img, &t, ones, vals, bands, NULL), 0);
    g_object_unref(img);
    img = t;
    VipsInterpretation in =
        bands >= 3 ? (bits == 16 ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_sRGB)
                   : (bits == 16 ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_B_W);
    assert_int_equal(vips_cast(img, &t, bits == 16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR, NULL),
                     0);
    g_object_unref(img);
    img = t;
    assert_int_equal(vips_copy(img, &t, "interpretation", in, "xres", dpi ? dpi / 25.4 : 72 / 25.4,
                               "yres", dpi ? dpi / 25.4 : 72 / 25.4, NULL),
                     0);
    g_object_unref(img);
    img = t;
    assert_int_equal(vips_pngsave_buffer(img, &buf, len, NULL), 0);
    g_object_unref(img);
    return buf;
}

static void test_decode_resize(void **state)
{
    (void)state;
    size_t len;
    void *png = make_png(3000, 1000, 3, 8, 200, 0, 300, &len);
    ocp_doc *doc = NULL;
    ocp_page_image img;
    char err[256];
    assert_int_equal(ocp_doc_open_buffer(png, len, &lim, &doc, err, sizeof err), 0);
    assert_string_equal(ocp_doc_format(doc), "png");
    assert_int_equal(ocp_doc_pages(doc), 1);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), 0);
    assert_int_equal(img.width, 2048);
    assert_int_equal(img.height, 683);
    assert_int_equal(img.orig_width, 3000);
    assert_int_equal(img.orig_height, 1000);
    assert_int_equal(img.bands, 3);
    assert_true(img.scale_x > 1.464 && img.scale_x < 1.466);
    /* The resolution follows the resize: 300 dpi shrunk by 1.46 is about 205 dpi. */
    assert_int_equal(img.dpi, 205);
    assert_int_equal(img.pixels[0], 200);
    assert_int_equal(img.pixels[(size_t)img.width * img.height * 3 - 1], 200);
    ocp_page_image_fini(&img);
    assert_int_equal(ocp_doc_load_page(doc, 1, &img, err, sizeof err), OCP_E_NOPAGE);
    ocp_doc_destroy(doc);
    g_free(png);
}

static void test_decode_kinds(void **state)
{
    (void)state;
    size_t len;
    ocp_doc *doc = NULL;
    ocp_page_image img;
    char err[256];
    ocp_image_limits nolim = lim;
    nolim.max_image_size = 0;

    /* 16-bit grey becomes 8-bit grey; no resolution in the file: unknown (0). */
    void *png = make_png(50, 40, 1, 16, 65535 * 0.5, 0, 0, &len);
    assert_int_equal(ocp_doc_open_buffer(png, len, &nolim, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), 0);
    assert_int_equal(img.bands, 1);
    assert_int_equal(img.width, 50);
    assert_true(img.pixels[0] >= 126 && img.pixels[0] <= 129);
    assert_int_equal(img.dpi, 0);
    ocp_page_image_fini(&img);
    ocp_doc_destroy(doc);
    g_free(png);

    /* RGBA fully transparent is flattened on white: all grey then, so one band. */
    png = make_png(20, 20, 4, 8, 0, 0, 300, &len);
    assert_int_equal(ocp_doc_open_buffer(png, len, &nolim, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), 0);
    assert_int_equal(img.bands, 1);
    assert_int_equal(img.pixels[0], 255);
    assert_int_equal(img.dpi, 300);
    ocp_page_image_fini(&img);
    ocp_doc_destroy(doc);
    g_free(png);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Appends a PNG chunk at buf + n; returns the new length. */
static size_t chunk(unsigned char *buf, size_t n, const char *type, const unsigned char *data,
                    size_t len)
{
    put32(buf + n, (uint32_t)len);
    memcpy(buf + n + 4, type, 4);
    if (len)
        memcpy(buf + n + 8, data, len);
    put32(buf + n + 8 + len, (uint32_t)crc32(0, buf + n + 4, (uInt)(len + 4)));
    return n + 12 + len;
}

static void test_refusals(void **state)
{
    (void)state;
    ocp_doc *doc = NULL;
    ocp_page_image img;
    char err[256];

    /* A PNG header claiming 65535 x 65535 with a few bytes of data: refused from the header. */
    unsigned char png[128];
    size_t n = 0;
    unsigned char ihdr[13] = {0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 8, 0, 0, 0, 0};
    unsigned char raw[64] = {0}, z[128];
    uLongf zlen = sizeof z;
    assert_int_equal(compress(z, &zlen, raw, sizeof raw), Z_OK);
    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    n = chunk(png, n, "IHDR", ihdr, sizeof ihdr);
    n = chunk(png, n, "IDAT", z, zlen);
    n = chunk(png, n, "IEND", NULL, 0);
    int orc = ocp_doc_open_buffer(png, n, &lim, &doc, err, sizeof err);
    if (orc)
        print_error("%s\n", err);
    assert_int_equal(orc, 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), OCP_E_TOOBIG);
    assert_non_null(strstr(err, "65535 x 65535"));
    assert_null(img.pixels);
    ocp_doc_destroy(doc);

    const char text[] = "just some text, not an image at all\n";
    assert_int_equal(ocp_doc_open_buffer(text, sizeof text - 1, &lim, &doc, err, sizeof err),
                     OCP_E_FORMAT);
    assert_int_equal(ocp_doc_open_buffer(text, 0, &lim, &doc, err, sizeof err), OCP_E_EMPTY);
    /* An SVG is a format libvips reads, but not one we accept. */
    const char svg[] = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>";
    assert_true(ocp_doc_open_buffer(svg, sizeof svg - 1, &lim, &doc, err, sizeof err) ==
                OCP_E_FORMAT);
    assert_int_equal(ocp_doc_open_file("/nonexistent/x.png", &lim, &doc, err, sizeof err), -ENOENT);
}

/* Whether the doc opened from buf says what libvips says of the same bytes: both refuse, or
 * both read the one page at the same size. */
static void same_as_libvips(const void *buf, size_t len)
{
    ocp_doc *doc = NULL;
    char err[256];
    int w = 0, h = 0;
    VipsImage *ref = vips_image_new_from_buffer(buf, len, "", "fail_on", VIPS_FAIL_ON_ERROR, NULL);
    vips_error_clear();
    int rc = ocp_doc_open_buffer(buf, len, &lim, &doc, err, sizeof err);
    if (!ref) {
        assert_int_not_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(ocp_doc_pages(doc), 1);
    assert_int_equal(ocp_doc_page_size(doc, 0, &w, &h, err, sizeof err), 0);
    assert_int_equal(w, vips_image_get_width(ref));
    assert_int_equal(h, vips_image_get_height(ref));
    g_object_unref(ref);
    ocp_doc_destroy(doc);
}

/* A JPEG of w x h with bands (1 or 3), progressive or not. New (g_free). */
static void *make_jpeg(int w, int h, int bands, int progressive, size_t *len)
{
    VipsImage *img, *t;
    void *buf = NULL;
    assert_int_equal(vips_black(&img, w, h, "bands", bands, NULL), 0);
    assert_int_equal(vips_cast(img, &t, VIPS_FORMAT_UCHAR, NULL), 0);
    g_object_unref(img);
    assert_int_equal(vips_jpegsave_buffer(t, &buf, len, "interlace", progressive, NULL), 0);
    g_object_unref(t);
    return buf;
}

/* The quick header read (PNG, JPEG: their size from the first bytes, without libvips) says
 * the size libvips says, and leaves to libvips what it does not know: a bad IHDR CRC, a
 * truncated JPEG, a frame kind it does not read. A page opened that way decodes as any. */
static void test_quick_header(void **state)
{
    (void)state;
    size_t len;
    unsigned char *b;
    int kinds[][3] = {{1, 8}, {3, 8}, {4, 8}, {1, 16}, {3, 16}, {2, 8}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        b = make_png(37 + (int)i, 1001, kinds[i][0], kinds[i][1], 100, 255, 300, &len);
        same_as_libvips(b, len);
        g_free(b);
    }
    for (int prog = 0; prog < 2; prog++) {
        b = make_jpeg(1234, 567, prog ? 3 : 1, prog, &len);
        same_as_libvips(b, len);
        /* Cut before its scan: libvips decides, as before. */
        for (size_t cut = 2; cut < len && cut < 700; cut += 97)
            same_as_libvips(b, cut);
        /* SOF0 made SOF3 (lossless): left to libvips. */
        for (size_t k = 2; k + 1 < len; k++)
            if (b[k] == 0xff && (b[k + 1] == 0xc0 || b[k + 1] == 0xc2)) {
                b[k + 1] = 0xc3;
                break;
            }
        same_as_libvips(b, len);
        g_free(b);
    }
    /* A bad IHDR CRC: not read quickly; libvips says what it says. */
    b = make_png(50, 60, 1, 8, 100, 255, 0, &len);
    b[30] ^= 0x55;
    same_as_libvips(b, len);
    /* Truncated in IHDR. */
    same_as_libvips(b, 20);
    g_free(b);
    /* A page whose header was read quickly decodes, from memory and from a file. */
    b = make_png(300, 200, 1, 8, 100, 255, 0, &len);
    ocp_doc *doc = NULL;
    ocp_page_image img;
    char err[256], path[] = "/tmp/ocp-test-quick-XXXXXX";
    assert_int_equal(ocp_doc_open_buffer(b, len, &lim, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), 0);
    assert_int_equal(img.width, 300);
    assert_int_equal(img.height, 200);
    ocp_page_image_fini(&img);
    ocp_doc_destroy(doc);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
    assert_int_equal(ocp_doc_open_file(path, &lim, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), 0);
    assert_int_equal(img.width, 300);
    ocp_page_image_fini(&img);
    ocp_doc_destroy(doc);
    unlink(path);
    g_free(b);
}

/* The limits come from their four settings, each from its own (distinct values, so a
 * setting read for another shows). */
static void test_limits_from_config(void **state)
{
    (void)state;
    ocp_config *c = ocp_config_create();
    assert_int_equal(ocp_config_set(c, OCP_S_MAX_PIXELS, "1234567", OCP_SRC_FLAG, "flag"), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_MAX_PAGES, "77", OCP_SRC_FLAG, "flag"), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_PDF_DPI, "150", OCP_SRC_FLAG, "flag"), 0);
    assert_int_equal(ocp_config_set(c, OCP_S_MAX_IMAGE_SIZE, "999", OCP_SRC_FLAG, "flag"), 0);
    ocp_image_limits l = ocp_image_limits_from_config(c);
    assert_int_equal(l.max_pixels, 1234567);
    assert_int_equal(l.max_pages, 77);
    assert_int_equal(l.pdf_dpi, 150);
    assert_int_equal(l.max_image_size, 999);
    assert_true(l.decode_timeout_s == 60); /* decode-timeout's default */
    ocp_config_destroy(c);
}

static void put_file(const char *path, const void *buf, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

/* Opens path under roots through ocp_doc_open_file; its code, err filled. */
static int open_under(const char *path, const char *roots, char *err, size_t errlen)
{
    ocp_image_limits l = lim;
    ocp_doc *doc = NULL;
    l.allow_roots = roots;
    err[0] = '\0';
    int rc = ocp_doc_open_file(path, &l, &doc, err, errlen);
    ocp_doc_destroy(doc);
    return rc;
}

/* A refused path gets -EACCES and the one reason whatever the file is. */
static void expect_not_allowed(const char *path, const char *roots)
{
    char err[256];
    int rc = open_under(path, roots, err, sizeof err);
    if (rc != -EACCES || strcmp(err, "path not allowed") != 0)
        fail_msg("%s under %s: %d '%s'", path, roots, rc, err);
}

/* allow-root: a file is read only when its resolved path is under a root; missing files,
 * folders, FIFOs, unreadable files, paths out through .. or a symlink, and a root that does
 * not exist all get the same reason. */
static void test_allow_roots(void **state)
{
    (void)state;
    char tmp[] = "/tmp/ocp-test-roots-XXXXXX", root[64], p[4][200], err[256];
    assert_non_null(mkdtemp(tmp));
    size_t len;
    void *png = make_png(40, 30, 1, 8, 128, 255, 0, &len);
    snprintf(root, sizeof root, "%s/root", tmp);
    assert_int_equal(mkdir(root, 0700), 0);
    snprintf(p[1], sizeof p[1], "%s/root/dir", tmp);
    assert_int_equal(mkdir(p[1], 0700), 0);
    snprintf(p[1], sizeof p[1], "%s/root/ok.png", tmp);
    put_file(p[1], png, len, 0600);
    snprintf(p[1], sizeof p[1], "%s/outside.png", tmp);
    put_file(p[1], png, len, 0600);
    snprintf(p[1], sizeof p[1], "%s/root/secret.png", tmp);
    put_file(p[1], png, len, 0000);
    snprintf(p[1], sizeof p[1], "%s/root/fifo", tmp);
    assert_int_equal(mkfifo(p[1], 0600), 0);
    snprintf(p[1], sizeof p[1], "%s/root/out.png", tmp);
    assert_int_equal(symlink("../outside.png", p[1]), 0);
    snprintf(p[1], sizeof p[1], "%s/root/in.png", tmp);
    assert_int_equal(symlink("ok.png", p[1]), 0);
    snprintf(p[1], sizeof p[1], "%s/rootlink", tmp);
    assert_int_equal(symlink("root", p[1]), 0);
    g_free(png);

    snprintf(p[2], sizeof p[2], "%s/nowhere:%s", tmp, root); /* a missing root, then root */
    static const char *const bad[] = {"outside.png",  "root/missing.png", "root/dir",
                                      "root/fifo",    "root/out.png",     "root/../outside.png",
                                      "root/dir/../../outside.png"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(p[1], sizeof p[1], "%s/%s", tmp, bad[i]);
        expect_not_allowed(p[1], root);
        expect_not_allowed(p[1], p[2]);
    }
    expect_not_allowed("", root);
    snprintf(p[1], sizeof p[1], "%s/root/ok.png", tmp);
    snprintf(p[3], sizeof p[3], "%s/nowhere", tmp);
    expect_not_allowed(p[1], p[3]); /* under no root that exists */
    snprintf(p[3], sizeof p[3], "%s/roo", tmp);
    expect_not_allowed(p[1], p[3]); /* a prefix of the name is not a folder above it */
    if (geteuid() != 0) {          /* root reads a 0000 file */
        snprintf(p[1], sizeof p[1], "%s/root/secret.png", tmp);
        expect_not_allowed(p[1], root);
    }
    /* Allowed: under the root, through a symlink inside it, through a root that is a
     * symlink, with any root '/', and with no roots at all (ocr, submit, a local worker). */
    static const char *const good[] = {"root/ok.png", "root/in.png", "rootlink/ok.png",
                                       "root/dir/../ok.png"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(p[1], sizeof p[1], "%s/%s", tmp, good[i]);
        assert_int_equal(open_under(p[1], root, err, sizeof err), 0);
        assert_int_equal(open_under(p[1], p[2], err, sizeof err), 0);
    }
    snprintf(p[3], sizeof p[3], "%s/rootlink", tmp);
    snprintf(p[1], sizeof p[1], "%s/root/ok.png", tmp);
    assert_int_equal(open_under(p[1], p[3], err, sizeof err), 0);
    snprintf(p[1], sizeof p[1], "%s/outside.png", tmp);
    assert_int_equal(open_under(p[1], "/", err, sizeof err), 0);
    assert_int_equal(open_under(p[1], "", err, sizeof err), 0);
    /* The descriptor is a regular file's, blocking, close-on-exec. */
    int fd = ocp_image_open_under(p[1], tmp, err, sizeof err);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
}

/* A worker checks a page against the size its task declared (pool/page.c) before decoding:
 * a false small size would slip a big page past the memory budget. */
static void test_declared_size(void **state)
{
    (void)state;
    size_t len;
    char err[256];
    ocp_doc *doc = NULL;
    void *png = make_png(400, 300, 1, 8, 128, 255, 0, &len);
    assert_int_equal(ocp_doc_open_buffer(png, len, &lim, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_page_check_declared(doc, 0, 400, 300, 2048, err, sizeof err), 0);
    assert_int_equal(ocp_page_check_declared(doc, 0, 300, 400, 2048, err, sizeof err), 0);
    assert_int_equal(ocp_page_check_declared(doc, 0, 0, 0, 2048, err, sizeof err), 0);
    assert_int_equal(ocp_page_check_declared(doc, 0, 10, 10, 2048, err, sizeof err),
                     OCP_E_TOOBIG);
    assert_non_null(strstr(err, "page is 400 x 300, larger than the 10 x 10 its task declared"));
    assert_int_equal(ocp_page_check_declared(doc, 0, 399, 300, 0, err, sizeof err),
                     OCP_E_TOOBIG);
    /* Fitted into 100: 100 x 75 is more than 100 x 10. */
    assert_int_equal(ocp_page_check_declared(doc, 0, 1000, 100, 100, err, sizeof err),
                     OCP_E_TOOBIG);
    assert_int_equal(ocp_page_check_declared(doc, 0, 4000, 3000, 100, err, sizeof err), 0);
    ocp_doc_destroy(doc);
    g_free(png);
}

/* decode-timeout: a decode past its deadline is stopped and fails with the reason; within
 * it, the page decodes. */
static void test_decode_deadline(void **state)
{
    (void)state;
    size_t len;
    char err[256];
    ocp_doc *doc = NULL;
    ocp_page_image img;
    void *png = make_png(3000, 3000, 1, 8, 128, 255, 0, &len);
    ocp_image_limits l = lim;
    l.max_image_size = 0;
    l.decode_timeout_s = 1e-9;
    assert_int_equal(ocp_doc_open_buffer(png, len, &l, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), OCP_E_DECODE);
    assert_non_null(strstr(err, "longer than decode-timeout"));
    assert_null(img.pixels);
    ocp_doc_destroy(doc);
    l.decode_timeout_s = 60;
    assert_int_equal(ocp_doc_open_buffer(png, len, &l, &doc, err, sizeof err), 0);
    assert_int_equal(ocp_doc_load_page(doc, 0, &img, err, sizeof err), 0);
    assert_int_equal(img.width, 3000);
    ocp_page_image_fini(&img);
    ocp_doc_destroy(doc);
    g_free(png);
}

static int setup(void **state)
{
    (void)state;
    return ocp_image_global_init("test_image");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit),
        cmocka_unit_test(test_check_pixels),
        cmocka_unit_test(test_decode_resize),
        cmocka_unit_test(test_decode_kinds),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits_from_config),
        cmocka_unit_test(test_allow_roots),
        cmocka_unit_test(test_declared_size),
        cmocka_unit_test(test_decode_deadline),
        cmocka_unit_test(test_quick_header),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
