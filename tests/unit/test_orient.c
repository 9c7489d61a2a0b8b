/*
 * test_orient.c: the geometry of rotate-pages and deskew (image/orient.h):
 * quarter turns move each pixel where the mapping says, boxes on the turned
 * and deskewed pixels map back to the page's, the skew and the lines' axis
 * of drawn lines are found, the band of lines, and the rotation in the
 * result's renderings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <glib.h>
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "engine/result.h"
#include "image/orient.h"

/* A w x h page of one band, white. */
static ocp_page_image page(int w, int h)
{
    ocp_page_image img = {0};
    img.pixels = g_malloc((size_t)w * h);
    memset(img.pixels, 255, (size_t)w * h);
    img.width = img.orig_width = w;
    img.height = img.orig_height = h;
    img.bands = 1;
    img.scale_x = img.scale_y = 1.0;
    return img;
}

static void dot(ocp_page_image *img, double x, double y, int r)
{
    for (int j = (int)y - r; j <= (int)y + r; j++)
        for (int i = (int)x - r; i <= (int)x + r; i++)
            if (i >= 0 && j >= 0 && i < img->width && j < img->height)
                img->pixels[(size_t)j * img->width + i] = 0;
}

/* Lines of "words" (bars 22 rows high, with gaps for letters and words) every 60 rows,
 * tilted deg anticlockwise (rising to the right), as text lines are. */
static void draw_lines(ocp_page_image *img, double deg)
{
    double t = tan(deg * M_PI / 180.0);
    for (int base = 120; base < img->height - 120; base += 60)
        for (int x = 80; x < img->width - 80; x++) {
            if ((x / 37) % 5 == 4 || (x % 37) % 9 == 8)
                continue; /* gaps between words and letters */
            for (int k = 0; k < 22; k++) {
                int y = (int)lround(base - k - x * t + img->width * t / 2);
                if (y >= 0 && y < img->height)
                    img->pixels[(size_t)y * img->width + x] = 0;
            }
        }
}

static void test_quarter_turns(void **state)
{
    (void)state;
    for (int deg = 90; deg <= 270; deg += 90) {
        ocp_page_image img = page(5, 3);
        for (int i = 0; i < 15; i++)
            img.pixels[i] = (unsigned char)i;
        ocp_orient_xform x;
        ocp_orient_xform_init(&x, 5, 3);
        assert_int_equal(ocp_orient_turn(&img, deg, &x), 0);
        assert_int_equal(x.rotation, deg);
        assert_int_equal(img.width, deg == 180 ? 5 : 3);
        assert_int_equal(img.height, deg == 180 ? 3 : 5);
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 5; i++) {
                /* The pixel's centre goes where the mapping says, and its box comes back. */
                double px = i + 0.5, py = j + 0.5;
                ocp_orient_point_fwd(&x, &px, &py);
                int di = (int)floor(px), dj = (int)floor(py);
                assert_int_equal(img.pixels[(size_t)dj * img.width + di], j * 5 + i);
                int x1 = di, y1 = dj, x2 = di + 1, y2 = dj + 1;
                ocp_orient_box_back(&x, &x1, &y1, &x2, &y2);
                assert_int_equal(x1, i);
                assert_int_equal(y1, j);
                assert_int_equal(x2, i + 1);
                assert_int_equal(y2, j + 1);
            }
        ocp_page_image_fini(&img);
    }
}

static void test_turns_compose(void **state)
{
    (void)state;
    /* 90 then 180 is 270: the same pixel mapping as one turn of 270. */
    ocp_page_image a = page(7, 4), b = page(7, 4);
    for (int i = 0; i < 28; i++)
        a.pixels[i] = b.pixels[i] = (unsigned char)(i * 9);
    ocp_orient_xform xa, xb;
    ocp_orient_xform_init(&xa, 7, 4);
    ocp_orient_xform_init(&xb, 7, 4);
    assert_int_equal(ocp_orient_turn(&a, 90, &xa), 0);
    assert_int_equal(ocp_orient_turn(&a, 180, &xa), 0);
    assert_int_equal(ocp_orient_turn(&b, 270, &xb), 0);
    assert_int_equal(xa.rotation, 270);
    assert_int_equal(a.width, b.width);
    assert_memory_equal(a.pixels, b.pixels, 28);
    assert_memory_equal(&xa.w1, &xb.w1, sizeof(int) * 4);
    ocp_page_image_fini(&a);
    ocp_page_image_fini(&b);
}

static void test_deskew_maps_back(void **state)
{
    (void)state;
    const double skews[] = {7.0, -4.5, 15.0, 0.8};
    for (size_t s = 0; s < sizeof skews / sizeof skews[0]; s++) {
        for (int turn = 0; turn < 360; turn += 90) {
            ocp_page_image img = page(300, 200);
            dot(&img, 60, 40, 2); /* covers [58, 63) x [38, 43): centre 60.5, 40.5 */
            ocp_orient_xform x;
            ocp_orient_xform_init(&x, 300, 200);
            assert_int_equal(ocp_orient_turn(&img, turn, &x), 0);
            assert_int_equal(ocp_orient_deskew(&img, skews[s], &x), 0);
            /* The canvas holds the whole page. */
            double a = fabs(skews[s]) * M_PI / 180.0;
            assert_true(img.width >= x.w1 * cos(a) + x.h1 * sin(a) - 1e-6);
            /* The dot's centroid on the deskewed pixels maps back to where it was. */
            double sx = 0, sy = 0, n = 0;
            for (int j = 0; j < img.height; j++)
                for (int i = 0; i < img.width; i++) {
                    double ink = 255 - img.pixels[(size_t)j * img.width + i];
                    sx += ink * (i + 0.5), sy += ink * (j + 0.5), n += ink;
                }
            assert_true(n > 0);
            double cx = sx / n, cy = sy / n;
            ocp_orient_point_back(&x, &cx, &cy);
            assert_true(fabs(cx - 60.5) < 0.5 && fabs(cy - 40.5) < 0.5);
            /* Forward then back is the identity. */
            double px = 123.25, py = 77.5;
            ocp_orient_point_fwd(&x, &px, &py);
            ocp_orient_point_back(&x, &px, &py);
            assert_true(fabs(px - 123.25) < 1e-9 && fabs(py - 77.5) < 1e-9);
            /* The dot's box on the turned pixels maps back around the dot, not much more. */
            int x1 = img.width, y1 = img.height, x2 = 0, y2 = 0;
            for (int j = 0; j < img.height; j++)
                for (int i = 0; i < img.width; i++)
                    if (img.pixels[(size_t)j * img.width + i] < 128) {
                        x1 = i < x1 ? i : x1, y1 = j < y1 ? j : y1;
                        x2 = i + 1 > x2 ? i + 1 : x2, y2 = j + 1 > y2 ? j + 1 : y2;
                    }
            ocp_orient_box_back(&x, &x1, &y1, &x2, &y2);
            assert_true(x1 >= 55 && x1 <= 59 && y1 >= 35 && y1 <= 39);
            assert_true(x2 >= 62 && x2 <= 66 && y2 >= 42 && y2 <= 46);
            ocp_page_image_fini(&img);
        }
    }
}

static void test_box_back_clips(void **state)
{
    (void)state;
    ocp_orient_xform x;
    ocp_orient_xform_init(&x, 100, 50);
    ocp_page_image img = page(100, 50);
    assert_int_equal(ocp_orient_turn(&img, 90, &x), 0);
    assert_int_equal(ocp_orient_deskew(&img, 10, &x), 0);
    /* The whole canvas maps back to at most the page. */
    int x1 = 0, y1 = 0, x2 = img.width, y2 = img.height;
    ocp_orient_box_back(&x, &x1, &y1, &x2, &y2);
    assert_int_equal(x1, 0);
    assert_int_equal(y1, 0);
    assert_int_equal(x2, 100);
    assert_int_equal(y2, 50);
    /* A long thin page is not given a canvas many times its size. */
    ocp_page_image thin = page(2000, 20);
    ocp_orient_xform tx;
    ocp_orient_xform_init(&tx, 2000, 20);
    assert_int_equal(ocp_orient_deskew(&thin, 10, &tx), OCP_E_TOOBIG);
    assert_true(thin.width == 2000 && tx.skew == 0 && tx.w2 == 2000);
    ocp_page_image_fini(&thin);
    /* 90 or 270 after a deskew does not compose. */
    assert_int_equal(ocp_orient_turn(&img, 90, &x), -EINVAL);
    ocp_page_image_fini(&img);
}

static void test_find_skew(void **state)
{
    (void)state;
    const double tilts[] = {0, 2.0, -3.5, 5.0, -9.0, 14.0};
    for (size_t i = 0; i < sizeof tilts / sizeof tilts[0]; i++) {
        ocp_page_image img = page(1400, 1100);
        draw_lines(&img, tilts[i]);
        double s = ocp_orient_find_skew(&img, 15);
        assert_true(fabs(s - tilts[i]) <= 0.15);
        /* The same page turned a quarter: the lines are vertical, the tilt the same once
         * they are turned back. */
        ocp_orient_lines ln;
        ocp_orient_find_lines(&img, 15, &ln);
        assert_true(ln.found && !ln.vertical && fabs(ln.skew - tilts[i]) <= 0.15);
        ocp_orient_xform x;
        ocp_orient_xform_init(&x, img.width, img.height);
        assert_int_equal(ocp_orient_turn(&img, 270, &x), 0);
        ocp_orient_find_lines(&img, 15, &ln);
        assert_true(ln.found && ln.vertical && fabs(ln.skew - tilts[i]) <= 0.15);
        ocp_page_image_fini(&img);
    }
    /* A blank page, and one with a few specks: nothing to tell. */
    ocp_page_image img = page(800, 600);
    assert_true(ocp_orient_find_skew(&img, 15) == 0);
    ocp_orient_lines ln;
    ocp_orient_find_lines(&img, 15, &ln);
    assert_false(ln.found);
    dot(&img, 100, 100, 1);
    dot(&img, 400, 333, 1);
    ocp_orient_find_lines(&img, 15, &ln);
    assert_false(ln.found);
    ocp_page_image_fini(&img);
}

static void test_text_band(void **state)
{
    (void)state;
    ocp_page_image img = page(1000, 900);
    draw_lines(&img, 0);
    int y0, y1;
    assert_int_equal(ocp_orient_text_band(&img, 2, &y0, &y1), 0);
    /* Lines at 120, 180, ..., 780 (their ink 21 rows above): 12 lines; two from the middle,
     * with half a line of margin. */
    assert_true(y1 - y0 >= 2 * 22 + 60 - 22 && y1 - y0 <= 2 * 60 + 22);
    assert_true(y0 > 300 && y1 < 600);
    ocp_page_image band;
    assert_int_equal(ocp_orient_band(&img, y0, y1, &band), 0);
    assert_int_equal(band.height, y1 - y0);
    assert_memory_equal(band.pixels, img.pixels + (size_t)y0 * 1000, (size_t)(y1 - y0) * 1000);
    assert_int_equal(ocp_orient_band(&img, 10, 5, &(ocp_page_image){0}), -EINVAL);
    ocp_page_image_fini(&band);
    /* The same lines cut clean: the rows of their ink as they are on the page, half a line
     * of white above and below, where the band above shows parts of the neighbours. */
    assert_int_equal(ocp_orient_line_band(&img, 2, &band), 0);
    int pad = 22 / 2 + 2, lines = band.height - 2 * pad;
    assert_int_equal(lines, 60 + 22);
    for (int j = 0; j < band.height; j++)
        for (int i = 0; i < 1000; i++)
            if (j < pad || j >= pad + lines)
                assert_int_equal(band.pixels[(size_t)j * 1000 + i], 255);
    int a = y0 + (y1 - y0 - lines) / 2; /* the band above is centred on the same lines */
    assert_memory_equal(band.pixels + (size_t)pad * 1000, img.pixels + (size_t)a * 1000,
                        (size_t)lines * 1000);
    ocp_page_image_fini(&band);
    /* A blank page has no band. */
    memset(img.pixels, 255, 1000 * 900);
    assert_int_equal(ocp_orient_text_band(&img, 2, &y0, &y1), -1);
    assert_int_equal(ocp_orient_line_band(&img, 2, &band), -1);
    ocp_page_image_fini(&img);
}

static void test_result_turn_back(void **state)
{
    (void)state;
    ocp_result r;
    ocp_result_init(&r);
    r.page = 1;
    r.width = 400;
    r.height = 200;
    ocp_orient_xform x;
    ocp_orient_xform_init(&x, 400, 200);
    ocp_page_image img = page(400, 200);
    assert_int_equal(ocp_orient_turn(&img, 90, &x), 0);
    ocp_page_image_fini(&img);
    /* A box on the turned page (200 x 400) maps back by (X, Y) -> (Y, 200 - X). */
    ocp_result_add_line(&r, (ocp_box){20, 100, 30, 110}, "a", 90, 0, 0);
    ocp_result_add_word(&r, (ocp_box){20, 100, 30, 110}, "a", 90);
    ocp_result_turn_back(&r, &x);
    assert_int_equal(r.rotation, 90);
    assert_int_equal(r.lines[0].bbox.x1, 100);
    assert_int_equal(r.lines[0].bbox.y1, 170);
    assert_int_equal(r.lines[0].bbox.x2, 110);
    assert_int_equal(r.lines[0].bbox.y2, 180);
    assert_memory_equal(&r.words[0].bbox, &r.lines[0].bbox, sizeof(ocp_box));
    ocp_sb sb;
    ocp_sb_init(&sb);
    ocp_result_render(&r, OCP_FMT_JSON, &sb);
    assert_non_null(strstr(sb.buf, "\"rotation\":90,\"skew\":0.0"));
    ocp_result r2;
    ocp_result_init(&r2);
    assert_int_equal(ocp_result_from_json(&r2, sb.buf), 0);
    assert_int_equal(r2.rotation, 90);
    ocp_result_fini(&r2);
    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_HOCR, &sb);
    assert_non_null(strstr(sb.buf, "ppageno 0; textangle 90\""));
    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_ALTO, &sb);
    assert_non_null(strstr(sb.buf, "ROTATION=\"90\""));
    assert_non_null(strstr(sb.buf, "<processingStepSettings>rotation 90; skew 0.00<"));
    /* A page read as it stood says nothing of it in hOCR and ALTO. */
    r.rotation = 0;
    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_ALTO, &sb);
    assert_null(strstr(sb.buf, "ROTATION"));
    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quarter_turns),    cmocka_unit_test(test_turns_compose),
        cmocka_unit_test(test_deskew_maps_back), cmocka_unit_test(test_box_back_clips),
        cmocka_unit_test(test_find_skew),        cmocka_unit_test(test_text_band),
        cmocka_unit_test(test_result_turn_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
