/*
 * test_pdf.c: the searchable PDF writer (src/app/pdf.c), read back with
 * qpdf's own C API: a page made from pixels (its size from the dpi, the
 * image deflated, the layer's font and its ToUnicode CMap for Devanagari
 * and a character past the BMP); a layer grafted onto a PDF whose page
 * inherits its resources and box and turns by /Rotate 90 (the old content
 * kept as the same object, the layer's matrix turning it back, a font name
 * that does not clash); a PDF qpdf cannot read; the JPEG header reader;
 * ocp_app_format_parse; and the layer of a page turned 90/180/270 (the text matrix
 * turned by the result's rotation, each word from its baseline turned the same way)
 * and of a tilted one (the matrix along the skew).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <qpdf/qpdf-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/output.h"
#include "app/pdf.h"
#include "core/error.h"
#include "core/util.h"

/* A result of one line of two words on a w x h page. */
static void two_words(ocp_result *r, int w, int h, const char *a, const char *b)
{
    ocp_result_init(r);
    r->width = w;
    r->height = h;
    ocp_result_add_line(r, (ocp_box){10, 20, 90, 40}, "line", 90, 0, 0);
    ocp_result_add_word(r, (ocp_box){10, 20, 40, 40}, a, 90);
    ocp_result_add_word(r, (ocp_box){50, 20, 90, 40}, b, 90);
}

/* The written bytes read by qpdf; its page n's key (unparsed, resolved) into buf. */
static void page_key(qpdf_data q, int n, const char *key, char *buf, size_t len)
{
    qpdf_oh pg = qpdf_get_page_n(q, (size_t)n);
    snprintf(buf, len, "%s", qpdf_oh_unparse_resolved(q, qpdf_oh_get_key(q, pg, key)));
}

static qpdf_data read_back(const ocp_sb *sb)
{
    qpdf_data q = qpdf_init();
    qpdf_silence_errors(q);
    assert_false(qpdf_read_memory(q, "out", sb->buf, sb->len, "") & QPDF_ERRORS);
    assert_false(qpdf_more_warnings(q));
    return q;
}

/* The decoded data of stream s into a new buffer (free). */
static char *stream_text(qpdf_data q, qpdf_oh s)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(qpdf_oh_get_stream_data(q, s, qpdf_dl_generalized, NULL, &buf, &len), 0);
    char *t = ocp_xstrndup((const char *)buf, len);
    free(buf);
    return t;
}

static void test_image_page(void **state)
{
    (void)state;
    unsigned char px[300 * 150];
    memset(px, 200, sizeof px);
    ocp_pdf *p;
    char err[300], buf[4096];
    assert_int_equal(ocp_pdf_create(&p, err, sizeof err), 0);
    ocp_result r;
    two_words(&r, 300, 150, "नमस्ते", "\xf0\x9f\x93\x96"); /* U+1F4D6 */
    ocp_pdf_image img = {px, sizeof px, 0, 300, 150, 1, 150};
    assert_int_equal(ocp_pdf_add_image(p, &img, &r, err, sizeof err), 0);
    /* Pixels that are not width x height x bands: refused. */
    img.len--;
    assert_int_equal(ocp_pdf_add_image(p, &img, &r, err, sizeof err), OCP_E_RANGE);
    ocp_sb sb;
    ocp_sb_init(&sb);
    assert_int_equal(ocp_pdf_write(p, &sb, err, sizeof err), 0);
    ocp_pdf_destroy(p);
    qpdf_data q = read_back(&sb);
    assert_int_equal(qpdf_get_num_pages(q), 1);
    page_key(q, 0, "/MediaBox", buf, sizeof buf);
    assert_string_equal(buf, "[ 0 0 144.00 72.00 ]"); /* 300 x 150 px at 150 dpi */
    qpdf_oh pg = qpdf_get_page_n(q, 0);
    qpdf_oh font = qpdf_oh_get_key(
        q, qpdf_oh_get_key(q, qpdf_oh_get_key(q, pg, "/Resources"), "/Font"), "/OcpText0");
    assert_true(qpdf_oh_is_name_and_equals(q, qpdf_oh_get_key(q, font, "/Subtype"), "/Type0"));
    assert_true(
        qpdf_oh_is_name_and_equals(q, qpdf_oh_get_key(q, font, "/Encoding"), "/Identity-H"));
    char *cmap = stream_text(q, qpdf_oh_get_key(q, font, "/ToUnicode"));
    /* Codes in order of first sight: न म स ् त े, the space, then the book past the BMP. */
    assert_non_null(strstr(cmap, "<0001> <0928>"));
    assert_non_null(strstr(cmap, "<0006> <0947>"));
    assert_non_null(strstr(cmap, "<0007> <0020>"));
    assert_non_null(strstr(cmap, "<0008> <D83DDCD6>"));
    free(cmap);
    char *content = stream_text(q, qpdf_oh_get_key(q, pg, "/Contents"));
    assert_non_null(strstr(content, "/Im0 Do"));
    assert_non_null(strstr(content, "3 Tr"));
    /* नमस्ते + space: 7 codes, as one string. */
    assert_non_null(strstr(content, "<0001000200030004000500060007> Tj"));
    free(content);
    qpdf_oh im = qpdf_oh_get_key(
        q, qpdf_oh_get_key(q, qpdf_oh_get_key(q, pg, "/Resources"), "/XObject"), "/Im0");
    qpdf_oh d = qpdf_oh_get_dict(q, im);
    assert_true(qpdf_oh_is_name_and_equals(q, qpdf_oh_get_key(q, d, "/Filter"), "/FlateDecode"));
    assert_true(qpdf_oh_is_name_and_equals(q, qpdf_oh_get_key(q, d, "/ColorSpace"), "/DeviceGray"));
    qpdf_cleanup(&q);
    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

/* A page that inherits its /Resources (with a font named as ours), /MediaBox and
 * /Rotate 90 from its /Pages, and a second page with no content at all. */
static const char rotated[] =
    "%PDF-1.4\n"
    "1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    "2 0 obj << /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 /MediaBox [0 0 200 100] /Rotate 90 "
    "/Resources << /Font << /OcpText0 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> "
    ">> >> endobj\n"
    "3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n"
    "4 0 obj << /Length 8 >> stream\n0 0 m S\n\nendstream endobj\n"
    "5 0 obj << /Type /Page /Parent 2 0 R >> endobj\n"
    "trailer << /Root 1 0 R /Size 6 >>\n%%EOF\n";

static void test_graft_rotated(void **state)
{
    (void)state;
    ocp_pdf *p;
    char err[300], buf[4096];
    assert_int_equal(ocp_pdf_open(rotated, sizeof rotated - 1, &p, err, sizeof err), 0);
    assert_int_equal(ocp_pdf_pages(p), 2);
    ocp_result r;
    /* Rendered upright: 100 x 200 points shown, at 2 px per point. */
    two_words(&r, 200, 400, "ab", "c");
    assert_int_equal(ocp_pdf_graft(p, 0, &r, err, sizeof err), 0);
    assert_int_equal(ocp_pdf_graft(p, 1, &r, err, sizeof err), 0);
    assert_int_equal(ocp_pdf_graft(p, 2, &r, err, sizeof err), OCP_E_NOPAGE);
    ocp_sb sb;
    ocp_sb_init(&sb);
    assert_int_equal(ocp_pdf_write(p, &sb, err, sizeof err), 0);
    ocp_pdf_destroy(p);
    qpdf_data q = read_back(&sb);
    assert_int_equal(qpdf_get_num_pages(q), 2);
    qpdf_oh pg = qpdf_get_page_n(q, 0);
    qpdf_oh contents = qpdf_oh_get_key(q, pg, "/Contents");
    /* q, the old content (kept whole), Q + the layer. */
    assert_int_equal(qpdf_oh_get_array_n_items(q, contents), 3);
    char *old = stream_text(q, qpdf_oh_get_array_item(q, contents, 1));
    assert_string_equal(old, "0 0 m S\n");
    free(old);
    char *layer = stream_text(q, qpdf_oh_get_array_item(q, contents, 2));
    /* Displayed (dx, dy) -> user (200 - dy, dx); the page's own OcpText0 kept: ours is 1. */
    assert_non_null(strstr(layer, "q 0.00 1.00 -1.00 0.00 200.00 0.00 cm"));
    assert_non_null(strstr(layer, "/OcpText1 10.00 Tf"));
    /* "ab " spans from x 10 px to the next word at 50: 20 pt for 3 codes of 5 pt. */
    assert_non_null(strstr(layer, "133.33 Tz 1 0 0 1 5.00 182.00 Tm <000100020003> Tj"));
    free(layer);
    page_key(q, 0, "/Resources", buf, sizeof buf);
    assert_non_null(strstr(buf, "/OcpText0"));
    assert_non_null(strstr(buf, "/OcpText1"));
    /* The page without content gets the layer alone. */
    assert_true(qpdf_oh_is_array(q, qpdf_oh_get_key(q, qpdf_get_page_n(q, 1), "/Contents")));
    qpdf_cleanup(&q);
    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

/* A point (x, y) of a w x h image (pixels, y down) in the image turned anticlockwise by
 * r degrees (0/90/180/270). */
static void turn_point(int r, int w, int h, int x, int y, int *ox, int *oy)
{
    *ox = r == 90 ? y : r == 180 ? w - x : r == 270 ? h - y : x;
    *oy = r == 90 ? w - x : r == 180 ? h - y : r == 270 ? x : y;
}

static ocp_box turn_box(int r, int w, int h, ocp_box b)
{
    int x1, y1, x2, y2;
    turn_point(r, w, h, b.x1, b.y1, &x1, &y1);
    turn_point(r, w, h, b.x2, b.y2, &x2, &y2);
    return (ocp_box){x1 < x2 ? x1 : x2, y1 < y2 ? y1 : y2, x1 < x2 ? x2 : x1, y1 < y2 ? y2 : y1};
}

/* The layer of one image page at 72 dpi (a pixel a point) showing r. */
static char *layer_of(const ocp_result *r)
{
    static unsigned char px[200 * 200];
    ocp_pdf *p;
    char err[300];
    assert_int_equal(ocp_pdf_create(&p, err, sizeof err), 0);
    ocp_pdf_image img = {px, (size_t)r->width * (size_t)r->height, 0, r->width, r->height, 1, 72};
    assert_int_equal(ocp_pdf_add_image(p, &img, r, err, sizeof err), 0);
    ocp_sb sb;
    ocp_sb_init(&sb);
    assert_int_equal(ocp_pdf_write(p, &sb, err, sizeof err), 0);
    ocp_pdf_destroy(p);
    qpdf_data q = read_back(&sb);
    char *t = stream_text(q, qpdf_oh_get_key(q, qpdf_get_page_n(q, 0), "/Contents"));
    qpdf_cleanup(&q);
    ocp_sb_fini(&sb);
    return t;
}

/*
 * A page of one line ("ab" and "c") turned by a quarter turn: the result says rotation r
 * and its boxes are the upright ones turned anticlockwise by r, as the OCR maps them back.
 * Each word is drawn along the reading direction (the text matrix turned by r), from the
 * upright baseline's start turned the same way, at the same size and Tz as upright.
 */
static void test_turned_layer(void **state)
{
    (void)state;
    const int W = 200, H = 100;
    /* Upright, a pixel a point: "ab " from x 10 to the next word at 110 (100 pt for 3
     * codes of 10 pt: Tz 333.33), baseline a fifth of the 20 pt line over its bottom. */
    const ocp_box line = {10, 20, 190, 40}, a = {10, 20, 90, 40}, c = {110, 20, 190, 40};
    static const char *mat[4] = {"1 0 0 1", "0.0000 1.0000 -1.0000 0.0000",
                                 "-1.0000 0.0000 0.0000 -1.0000", "0.0000 -1.0000 1.0000 0.0000"};
    for (int q = 0; q < 4; q++) {
        int rot = 90 * q, pw = q % 2 ? H : W, ph = q % 2 ? W : H;
        ocp_result r;
        ocp_result_init(&r);
        r.width = pw;
        r.height = ph;
        r.rotation = rot;
        ocp_result_add_line(&r, turn_box(rot, W, H, line), "line", 90, 0, 0);
        ocp_result_add_word(&r, turn_box(rot, W, H, a), "ab", 90);
        ocp_result_add_word(&r, turn_box(rot, W, H, c), "c", 90);
        int ox, oy;
        turn_point(rot, W, H, 10, 40 - 4, &ox, &oy);
        char want[200];
        snprintf(want, sizeof want,
                 "/OcpText0 20.00 Tf 333.33 Tz %s %.2f %.2f Tm <000100020003> Tj", mat[q],
                 (double)ox, (double)(ph - oy));
        char *t = layer_of(&r);
        if (!strstr(t, want))
            fail_msg("rotation %d: no \"%s\" in:\n%s", rot, want, t);
        free(t);
        ocp_result_fini(&r);
    }
}

/*
 * A line tilted 5 degrees anticlockwise (rising to the right): its boxes are the upright
 * bounds of the tilted rectangles. The text matrix is turned 5 degrees, the words start
 * where they start along the line (within a point), at the line's thickness as the size.
 */
static void test_tilted_layer(void **state)
{
    (void)state;
    const double deg = 5, cs = cos(deg * M_PI / 180), sn = sin(deg * M_PI / 180);
    /* The upright layout above, tilted about (100, 100) of a 200 x 200 page (y down: an
     * anticlockwise tilt is y - ...). */
    double ux[3][2] = {{10, 190}, {10, 90}, {110, 190}}, uy[2] = {20 + 50, 40 + 50};
    ocp_box b[3];
    for (int i = 0; i < 3; i++) {
        double lx = 1e9, ly = 1e9, hx = -1e9, hy = -1e9;
        for (int k = 0; k < 4; k++) {
            double x = ux[i][k & 1] - 100, y = uy[k >> 1] - 100;
            double tx = 100 + x * cs + y * sn, ty = 100 - x * sn + y * cs;
            lx = fmin(lx, tx), ly = fmin(ly, ty), hx = fmax(hx, tx), hy = fmax(hy, ty);
        }
        b[i] = (ocp_box){(int)floor(lx), (int)floor(ly), (int)ceil(hx), (int)ceil(hy)};
    }
    ocp_result r;
    ocp_result_init(&r);
    r.width = r.height = 200;
    r.skew = deg;
    ocp_result_add_line(&r, b[0], "line", 90, 0, 0);
    ocp_result_add_word(&r, b[1], "ab", 90);
    ocp_result_add_word(&r, b[2], "c", 90);
    char *t = layer_of(&r);
    double size, tz, m[6];
    const char *at = strstr(t, "Tf ");
    assert_non_null(at);
    while (at > t && at[-1] != '/')
        at--;
    assert_int_equal(sscanf(at, "OcpText0 %lf Tf %lf Tz %lf %lf %lf %lf %lf %lf Tm", &size, &tz,
                            &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]),
                     8);
    print_message("# tilted: size %.2f Tz %.2f Tm %.4f %.4f %.4f %.4f %.2f %.2f\n", size, tz, m[0],
                  m[1], m[2], m[3], m[4], m[5]);
    assert_true(fabs(m[0] - cs) < 1e-4 && fabs(m[1] - sn) < 1e-4);
    assert_true(fabs(m[2] + sn) < 1e-4 && fabs(m[3] - cs) < 1e-4);
    /* The baseline's start: upright (10, 86) tilted, in y-up points (page 200 high). */
    double x = 10 - 100, y = 86 - 100;
    double want_x = 100 + x * cs + y * sn, want_y = 200 - (100 - x * sn + y * cs);
    assert_true(fabs(m[4] - want_x) < 1.0 && fabs(m[5] - want_y) < 1.0);
    assert_true(fabs(size - 20) < 1.0);
    assert_true(fabs(tz - 333.33) < 333.33 * 0.02);
    free(t);
    ocp_result_fini(&r);
}

static void test_not_a_pdf(void **state)
{
    (void)state;
    ocp_pdf *p = (ocp_pdf *)1;
    char err[300] = "";
    assert_int_equal(ocp_pdf_open("%PDF-1.4\nnothing", 17, &p, err, sizeof err), OCP_E_FORMAT);
    assert_null(p);
    assert_non_null(strstr(err, "cannot read the PDF"));
}

static void test_jpeg_info(void **state)
{
    (void)state;
    /* SOI, APP1 Exif (big-endian, orientation 6), SOF0 640 x 480 x 3, SOS. */
    static const unsigned char j[] = {
        0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x22, 'E',  'x',  'i', 'f',  0,    0, 'M',
        'M',  0,    42,   0,    0,    0,    8,    0,    1,   0x01, 0x12, 0, 3,
        0,    0,    0,    1,    0,    6,    0,    0,    0,   0,    0,    0, 0xFF,
        0xC0, 0x00, 0x11, 8,    0x01, 0xE0, 0x02, 0x80, 3,   1,    0x22, 0, 2,
        0x11, 1,    3,    0x11, 1,    0xFF, 0xDA, 0x00, 0x02};
    int w = 0, h = 0, c = 0, o = 0;
    assert_int_equal(ocp_pdf_jpeg_info(j, sizeof j, &w, &h, &c, &o), 0);
    assert_int_equal(w, 640);
    assert_int_equal(h, 480);
    assert_int_equal(c, 3);
    assert_int_equal(o, 6);
    /* Cut inside the frame header, or before it: not a JPEG that reads. */
    for (size_t n = 0; n < 50; n++)
        assert_int_equal(ocp_pdf_jpeg_info(j, n, &w, &h, &c, &o), OCP_E_DECODE);
    /* A 12-bit frame: not passed through. */
    unsigned char t[sizeof j];
    memcpy(t, j, sizeof j);
    t[42] = 12;
    assert_int_equal(ocp_pdf_jpeg_info(t, sizeof t, &w, &h, &c, &o), OCP_E_DECODE);
}

static void test_format_parse(void **state)
{
    (void)state;
    assert_int_equal(ocp_app_format_parse("pdf"), OCP_APP_FMT_PDF);
    assert_int_equal(ocp_app_format_parse("txt,pdf,json"),
                     OCP_APP_FMT_PDF | OCP_FMT_TXT | OCP_FMT_JSON);
    assert_int_equal(ocp_app_format_parse("txt,docx"), -1);
    assert_int_equal(ocp_app_format_parse("pdf,"), -1);
    assert_int_equal(ocp_app_format_parse(""), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_page),   cmocka_unit_test(test_graft_rotated),
        cmocka_unit_test(test_not_a_pdf),    cmocka_unit_test(test_jpeg_info),
        cmocka_unit_test(test_format_parse), cmocka_unit_test(test_turned_layer),
        cmocka_unit_test(test_tilted_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
