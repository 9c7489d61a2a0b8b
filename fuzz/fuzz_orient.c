/*
 * fuzz_orient.c: rotate-pages' and deskew's geometry (src/image/orient.h) on
 * pixels from outside, as a worker runs it on any decoded page: the lines'
 * axis and skew, the band of lines and the middle lines' band, quarter turns, the deskew, and boxes
 * mapped back, which must stay on the page. Input: width and height (one
 * byte each, 1..256), bands (1 or 3), a turn (0..3 quarters), a skew in
 * tenths of a degree (signed byte), then the pixels (repeated to fill the
 * page).
 */
#include "core/log.h"
#include "image/orient.h"

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void box_on_page(const ocp_orient_xform *x, int a, int b, int c, int d)
{
    int x1 = a, y1 = b, x2 = c, y2 = d;
    ocp_orient_box_back(x, &x1, &y1, &x2, &y2);
    if (x1 < 0 || y1 < 0 || x2 > x->w0 || y2 > x->h0 || (a <= c && x1 > x2) || (b <= d && y1 > y2))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ocp_log_level = -1;
    if (size < 6)
        return 0;
    int w = data[0] + 1, h = data[1] + 1, bands = data[2] & 1 ? 3 : 1, turn = (data[3] & 3) * 90;
    double skew = (int8_t)data[4] / 10.0;
    const uint8_t *px = data + 5;
    size_t npx = size - 5, n = (size_t)w * h * bands;
    ocp_page_image img = {0};
    img.pixels = g_malloc(n);
    for (size_t i = 0; i < n; i++)
        img.pixels[i] = px[i % npx];
    img.width = img.orig_width = w;
    img.height = img.orig_height = h;
    img.bands = bands;
    img.scale_x = img.scale_y = 1.0;

    ocp_orient_lines ln;
    ocp_orient_find_lines(&img, 15, &ln);
    if (ln.found && (ln.skew < -15.01 || ln.skew > 15.01))
        abort();
    double s = ocp_orient_find_skew(&img, 15);
    if (s < -15.01 || s > 15.01)
        abort();
    ocp_orient_xform x;
    ocp_orient_xform_init(&x, w, h);
    if (ocp_orient_turn(&img, turn, &x) == 0 && ocp_orient_deskew(&img, skew, &x) == 0) {
        int y0, y1;
        if (ocp_orient_text_band(&img, 2, &y0, &y1) == 0) {
            ocp_page_image band;
            if (y0 < 0 || y1 > img.height || y0 >= y1 || ocp_orient_band(&img, y0, y1, &band))
                abort();
            ocp_page_image_fini(&band);
        }
        /* The middle lines between white margins: a new image, never wider than the page. */
        ocp_page_image lb;
        int nl = 1 + data[2] % 5;
        if (ocp_orient_line_band(&img, nl, &lb) == 0) {
            if (lb.width < 1 || lb.height < 1 || lb.width != img.width || !lb.pixels)
                abort();
            ocp_page_image_fini(&lb);
        }
        box_on_page(&x, 0, 0, img.width, img.height);
        box_on_page(&x, data[0] % (img.width + 1), data[1] % (img.height + 1), img.width,
                    img.height);
        box_on_page(&x, -5, -5, img.width + 5, img.height + 5);
        ocp_orient_turn(&img, 180, &x);
        box_on_page(&x, 1, 1, 2, 2);
    }
    ocp_page_image_fini(&img);
    return 0;
}
