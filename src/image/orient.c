/*
 * orient.c: quarter turns, skew finding and deskew of a page's pixels, and
 * the mapping of boxes back to the page (orient.h).
 *
 * Coordinates are continuous: pixel (i, j) covers [i, i+1) x [j, j+1), so a
 * box's exclusive end maps like any other point. The buffers are the
 * decoder's kind (g_malloc/g_free: ocp_page_image_fini frees them), and each
 * step frees the buffer it replaces before it returns, so a page never has
 * more than two copies of its pixels at once.
 */
#include "image/orient.h"
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <glib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

ocp_orient_conf ocp_orient_conf_from_config(const ocp_config *cfg)
{
    return (ocp_orient_conf){
        .rotate_pages = ocp_config_bool(cfg, OCP_S_ROTATE_PAGES),
        .threshold = ocp_config_double(cfg, OCP_S_ROTATE_PAGES_THRESHOLD),
        .deskew = ocp_config_bool(cfg, OCP_S_DESKEW),
    };
}

void ocp_orient_xform_init(ocp_orient_xform *x, int w, int h)
{
    memset(x, 0, sizeof *x);
    x->w0 = x->w1 = x->w2 = w;
    x->h0 = x->h1 = x->h2 = h;
}

/* ---- the mapping ------------------------------------------------------------------------ */

static void turn_fwd(int deg, int w0, int h0, double *px, double *py)
{
    double x = *px, y = *py;
    switch (deg) {
    case 90:
        *px = h0 - y, *py = x;
        break;
    case 180:
        *px = w0 - x, *py = h0 - y;
        break;
    case 270:
        *px = y, *py = w0 - x;
        break;
    default:
        break;
    }
}

static void turn_back(int deg, int w0, int h0, double *px, double *py)
{
    double x = *px, y = *py;
    switch (deg) {
    case 90:
        *px = y, *py = h0 - x;
        break;
    case 180:
        *px = w0 - x, *py = h0 - y;
        break;
    case 270:
        *px = w0 - y, *py = x;
        break;
    default:
        break;
    }
}

/* Clockwise by skew degrees (y down) about the centre of w1 x h1, onto w2 x h2 (dir 1), or
 * the inverse (dir -1). */
static void skew_map(const ocp_orient_xform *x, int dir, double *px, double *py)
{
    double a = x->skew * M_PI / 180.0, c = cos(a), s = sin(a) * dir;
    double cx_from = dir > 0 ? x->w1 / 2.0 : x->w2 / 2.0,
           cy_from = dir > 0 ? x->h1 / 2.0 : x->h2 / 2.0;
    double cx_to = dir > 0 ? x->w2 / 2.0 : x->w1 / 2.0, cy_to = dir > 0 ? x->h2 / 2.0 : x->h1 / 2.0;
    double dx = *px - cx_from, dy = *py - cy_from;
    *px = cx_to + dx * c - dy * s;
    *py = cy_to + dx * s + dy * c;
}

void ocp_orient_point_fwd(const ocp_orient_xform *x, double *px, double *py)
{
    turn_fwd(x->rotation, x->w0, x->h0, px, py);
    if (x->skew != 0)
        skew_map(x, 1, px, py);
}

void ocp_orient_point_back(const ocp_orient_xform *x, double *px, double *py)
{
    if (x->skew != 0)
        skew_map(x, -1, px, py);
    turn_back(x->rotation, x->w0, x->h0, px, py);
}

static int clip(double v, int hi)
{
    return v < 0 ? 0 : v > hi ? hi : (int)v;
}

void ocp_orient_box_back(const ocp_orient_xform *x, int *x1, int *y1, int *x2, int *y2)
{
    double cx[4] = {*x1, *x2, *x2, *x1}, cy[4] = {*y1, *y1, *y2, *y2};
    double lx = INFINITY, ly = INFINITY, hx = -INFINITY, hy = -INFINITY;
    for (int i = 0; i < 4; i++) {
        ocp_orient_point_back(x, &cx[i], &cy[i]);
        lx = fmin(lx, cx[i]), ly = fmin(ly, cy[i]);
        hx = fmax(hx, cx[i]), hy = fmax(hy, cy[i]);
    }
    /* A hair of slack: a corner that maps to 12.0000001 is pixel 12's edge, not 13's. */
    *x1 = clip(floor(lx + 1e-6), x->w0);
    *y1 = clip(floor(ly + 1e-6), x->h0);
    *x2 = clip(ceil(hx - 1e-6), x->w0);
    *y2 = clip(ceil(hy - 1e-6), x->h0);
}

int ocp_orient_band(const ocp_page_image *img, int y0, int y1, ocp_page_image *out)
{
    memset(out, 0, sizeof *out);
    if (y0 < 0 || y1 > img->height || y0 >= y1)
        return -EINVAL;
    size_t row = (size_t)img->width * img->bands;
    unsigned char *p = g_try_malloc(row * (size_t)(y1 - y0));
    if (!p)
        return -ENOMEM;
    memcpy(p, img->pixels + row * (size_t)y0, row * (size_t)(y1 - y0));
    *out = *img;
    out->pixels = p;
    out->height = y1 - y0;
    out->orig_height = y1 - y0;
    out->orig_width = img->width;
    out->scale_x = out->scale_y = 1.0;
    return 0;
}

/* ---- quarter turns ---------------------------------------------------------------------- */

int ocp_orient_turn(ocp_page_image *img, int degrees, ocp_orient_xform *x)
{
    if (degrees != 90 && degrees != 180 && degrees != 270)
        return 0;
    /* After a deskew only a half turn composes (about the canvas's centre, as the deskew). */
    if (x->skew != 0 && degrees != 180)
        return -EINVAL;
    int w = img->width, h = img->height, b = img->bands;
    unsigned char *dst = g_try_malloc((size_t)w * h * b);
    if (!dst)
        return -ENOMEM;
    int nw = degrees == 180 ? w : h, nh = degrees == 180 ? h : w;
    const unsigned char *src = img->pixels;
    for (int j = 0; j < h; j++) {
        const unsigned char *row = src + (size_t)j * w * b;
        for (int i = 0; i < w; i++) {
            int di, dj;
            if (degrees == 90)
                di = h - 1 - j, dj = i;
            else if (degrees == 180)
                di = w - 1 - i, dj = h - 1 - j;
            else
                di = j, dj = w - 1 - i;
            memcpy(dst + ((size_t)dj * nw + di) * b, row + (size_t)i * b, (size_t)b);
        }
    }
    g_free(img->pixels);
    img->pixels = dst;
    img->width = nw;
    img->height = nh;
    x->rotation = (x->rotation + degrees) % 360;
    if (x->skew == 0) {
        x->w1 = x->w2 = nw;
        x->h1 = x->h2 = nh;
    }
    return 0;
}

/* ---- skew ------------------------------------------------------------------------------- */

/* The grey of pixel (i, j) (the mean of its bands). */
static int grey_at(const ocp_page_image *img, int i, int j)
{
    const unsigned char *p = img->pixels + ((size_t)j * img->width + i) * img->bands;
    if (img->bands < 3)
        return p[0];
    return (p[0] + p[1] + p[2]) / 3;
}

/* Otsu's threshold of a 256-bin histogram of n pixels; *sep: the means' distance. */
static int otsu(const long *hist, long n, double *sep)
{
    double sum = 0, sum_b = 0, best = -1;
    long w_b = 0;
    int t_best = 128;
    for (int i = 0; i < 256; i++)
        sum += (double)i * hist[i];
    *sep = 0;
    for (int t = 0; t < 256; t++) {
        w_b += hist[t];
        if (w_b == 0)
            continue;
        long w_f = n - w_b;
        if (w_f == 0)
            break;
        sum_b += (double)t * hist[t];
        double m_b = sum_b / w_b, m_f = (sum - sum_b) / w_f;
        double between = (double)w_b * w_f * (m_b - m_f) * (m_b - m_f);
        if (between > best) {
            best = between;
            t_best = t;
            *sep = m_f - m_b;
        }
    }
    return t_best;
}

typedef struct ink {
    int16_t *x, *y;
    int n, w, h; /* points, and the reduced page's size */
} ink;

/* The dark pixels of img reduced by f (block means), thresholded by Otsu; at most
 * max_points of them (every k-th). Returns 0, or -1 when the page cannot tell a tilt (too
 * little ink, too much, too little contrast) or memory is short. */
static int ink_points(const ocp_page_image *img, int f, int max_points, ink *out)
{
    int rw = img->width / f, rh = img->height / f;
    memset(out, 0, sizeof *out);
    if (rw < 16 || rh < 16)
        return -1;
    unsigned char *g = malloc((size_t)rw * rh);
    if (!g)
        return -1;
    long hist[256] = {0}, n = (long)rw * rh;
    for (int j = 0; j < rh; j++)
        for (int i = 0; i < rw; i++) {
            int s = 0;
            for (int v = 0; v < f; v++)
                for (int u = 0; u < f; u++)
                    s += grey_at(img, i * f + u, j * f + v);
            g[(size_t)j * rw + i] = (unsigned char)(s / (f * f));
            hist[g[(size_t)j * rw + i]]++;
        }
    double sep;
    int t = otsu(hist, n, &sep);
    long dark = 0;
    for (int i = 0; i <= t; i++)
        dark += hist[i];
    /* Ink is a small share of a text page and stands well apart from the paper. */
    if (sep < 40 || dark < n / 1000 || dark > n * 2 / 5 || dark < 50) {
        free(g);
        return -1;
    }
    int step = (int)(dark / max_points) + 1;
    out->x = malloc(sizeof *out->x * (size_t)(dark / step + 1));
    out->y = malloc(sizeof *out->y * (size_t)(dark / step + 1));
    if (!out->x || !out->y) {
        free(out->x), free(out->y), free(g);
        return -1;
    }
    long k = 0;
    for (int j = 0; j < rh; j++)
        for (int i = 0; i < rw; i++)
            if (g[(size_t)j * rw + i] <= t && k++ % step == 0) {
                out->x[out->n] = (int16_t)i;
                out->y[out->n++] = (int16_t)j;
            }
    out->w = rw;
    out->h = rh;
    free(g);
    return 0;
}

/* How sharp the rows of ink are when the page is tilted deg anticlockwise: the ink of a
 * line rising to the right lies on y + x tan(deg) = const; the sum of squared differences
 * of neighbouring rows' counts (Leptonica's measure) peaks when the rows follow the lines. */
static double sharpness(const ink *k, double deg, long *bins, int nbins, int off, int stride)
{
    double t = tan(deg * M_PI / 180.0);
    memset(bins, 0, sizeof *bins * (size_t)nbins);
    for (int i = 0; i < k->n; i += stride) {
        int b = (int)lround(k->y[i] + k->x[i] * t) + off;
        if (b >= 0 && b < nbins)
            bins[b]++;
    }
    double s = 0;
    for (int b = 1; b < nbins; b++)
        s += (double)(bins[b] - bins[b - 1]) * (double)(bins[b] - bins[b - 1]);
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The sharpest angle of k's rows within +-max_deg: a coarse sweep in half degrees, then
 * twentieths around its best. *best_s is its sharpness, *stands_out whether it is well
 * above the sweep's median (a picture or specks have no sharp angle). */
static double sweep(const ink *k, double max_deg, double *best_s, int *stands_out)
{
    int off = (int)ceil(k->w * tan(max_deg * M_PI / 180.0)) + 2;
    int nbins = k->h + 2 * off;
    long *bins = malloc(sizeof *bins * (size_t)nbins);
    double best = 0, coarse[128];
    int nc = 0;
    *best_s = -1;
    *stands_out = 0;
    if (!bins)
        return 0;
    /* The coarse sweep looks at every fourth point: the rows of a page's lines stand out
     * from a quarter of its ink as well, in a quarter of the time. */
    for (double a = -max_deg; a <= max_deg + 1e-9 && nc < 128; a += 0.5) {
        double s = sharpness(k, a, bins, nbins, off, 4);
        coarse[nc++] = s;
        if (s > *best_s)
            *best_s = s, best = a;
    }
    double centre = best;
    qsort(coarse, (size_t)nc, sizeof *coarse, cmp_double);
    *stands_out = *best_s >= 1.5 * coarse[nc / 2];
    /* The fine sweep on every point; its best sharpness is what the axes compare. */
    *best_s = -1;
    for (double a = centre - 0.5; a <= centre + 0.5 + 1e-9; a += 0.05) {
        if (fabs(a) > max_deg + 1e-9)
            continue;
        double s = sharpness(k, a, bins, nbins, off, 1);
        if (s > *best_s)
            *best_s = s, best = a;
    }
    free(bins);
    return round(best * 100.0) / 100.0 + 0.0; /* never -0 */
}

/* k turned 90 degrees clockwise, in place: the columns become rows. */
static void ink_turn(ink *k)
{
    for (int i = 0; i < k->n; i++) {
        int16_t x = k->x[i];
        k->x[i] = (int16_t)(k->h - 1 - k->y[i]);
        k->y[i] = x;
    }
    int w = k->w;
    k->w = k->h;
    k->h = w;
}

static int page_ink(const ocp_page_image *img, ink *k)
{
    int longest = img->width > img->height ? img->width : img->height;
    int f = (longest + 999) / 1000;
    if (!img->pixels)
        return -1;
    return ink_points(img, f < 1 ? 1 : f, 250000, k);
}

static double clamp_max(double max_deg)
{
    return max_deg > OCP_ORIENT_MAX_SKEW ? OCP_ORIENT_MAX_SKEW : max_deg;
}

double ocp_orient_find_skew(const ocp_page_image *img, double max_deg)
{
    ink k;
    double s, best;
    int sure;
    max_deg = clamp_max(max_deg);
    if (max_deg <= 0 || page_ink(img, &k))
        return 0;
    best = sweep(&k, max_deg, &s, &sure);
    free(k.x);
    free(k.y);
    return sure ? best : 0;
}

void ocp_orient_find_lines(const ocp_page_image *img, double max_deg, ocp_orient_lines *out)
{
    ink k;
    double sh, sv, ah, av;
    int ok_h, ok_v;
    memset(out, 0, sizeof *out);
    max_deg = clamp_max(max_deg);
    if (page_ink(img, &k))
        return;
    ah = sweep(&k, max_deg, &sh, &ok_h);
    ink_turn(&k);
    av = sweep(&k, max_deg, &sv, &ok_v);
    free(k.x);
    free(k.y);
    /* Lines of text make far sharper rows than columns: the axis whose rows are sharper,
     * when its angle stands out of its own sweep. */
    out->vertical = sv > sh;
    out->ratio = out->vertical ? (sh > 0 ? sv / sh : 1e9) : (sv > 0 ? sh / sv : 1e9);
    out->skew = out->vertical ? av : ah;
    out->found = (out->vertical ? ok_v : ok_h) && out->ratio >= OCP_ORIENT_AXIS_RATIO;
    if (!out->found)
        out->vertical = 0, out->skew = 0;
}

/* The rows of nlines lines of text from the middle of img: [*a, *b) holds their ink, *pad
 * is half a line's height (the margin a recognizer wants around a line). Returns 0, or -1
 * when img shows no line of ink (or memory is short). */
static int middle_lines(const ocp_page_image *img, int nlines, int *a, int *b, int *pad)
{
    int w = img->width, h = img->height;
    long hist[256] = {0}, n = 0;
    if (!img->pixels || w < 8 || h < 8 || nlines < 1)
        return -1;
    for (int j = 0; j < h; j += 3)
        for (int i = 0; i < w; i += 3, n++)
            hist[grey_at(img, i, j)]++;
    double sep;
    int t = otsu(hist, n, &sep);
    if (sep < 40)
        return -1;
    /* Rows with ink (every other column looked at), then their runs: the lines. */
    int *run_a = malloc(sizeof *run_a * (size_t)h), *run_b = malloc(sizeof *run_b * (size_t)h);
    int nr = 0, in = 0, min_ink = w / 200 + 1;
    if (!run_a || !run_b) {
        free(run_a), free(run_b);
        return -1;
    }
    for (int j = 0; j < h; j++) {
        int c = 0;
        for (int i = 0; i < w; i += 2)
            c += grey_at(img, i, j) <= t;
        if (c >= min_ink && !in)
            run_a[nr] = j, in = 1;
        else if (c < min_ink && in)
            run_b[nr++] = j, in = 0;
    }
    if (in)
        run_b[nr++] = h;
    int rc = -1;
    if (nr > 0) {
        /* Marks above and below a line (dots, vowel signs) make runs of their own: a gap
         * under a third of the tallest run's height joins them to it, when one of the two
         * is under half that height (a mark, or a line with its marks so far). Two whole
         * lines set close stay apart. */
        int tallest = 0, m = 0;
        for (int r = 0; r < nr; r++)
            tallest = run_b[r] - run_a[r] > tallest ? run_b[r] - run_a[r] : tallest;
        for (int r = 0; r < nr; r++) {
            int thin = m > 0 && (run_b[r] - run_a[r] < tallest / 2 ||
                                 run_b[m - 1] - run_a[m - 1] < tallest / 2);
            if (thin && run_a[r] - run_b[m - 1] < tallest / 3)
                run_b[m - 1] = run_b[r];
            else
                run_a[m] = run_a[r], run_b[m++] = run_b[r];
        }
        /* nlines lines from the middle of the page's. */
        int first = m > nlines ? (m - nlines) / 2 : 0, last = first + nlines - 1;
        if (last >= m)
            last = m - 1;
        *pad = (run_b[first] - run_a[first]) / 2 + 2;
        *a = run_a[first];
        *b = run_b[last];
        rc = 0;
    }
    free(run_a);
    free(run_b);
    return rc;
}

int ocp_orient_text_band(const ocp_page_image *img, int nlines, int *y0, int *y1)
{
    int a, b, pad;
    *y0 = *y1 = 0;
    if (middle_lines(img, nlines, &a, &b, &pad))
        return -1;
    *y0 = a - pad < 0 ? 0 : a - pad;
    *y1 = b + pad > img->height ? img->height : b + pad;
    return 0;
}

int ocp_orient_line_band(const ocp_page_image *img, int nlines, ocp_page_image *out)
{
    int a, b, pad;
    memset(out, 0, sizeof *out);
    if (middle_lines(img, nlines, &a, &b, &pad))
        return -1;
    size_t row = (size_t)img->width * img->bands;
    int h = b - a + 2 * pad;
    unsigned char *p = g_try_malloc(row * (size_t)h);
    if (!p)
        return -ENOMEM;
    /* The margins take the lines' own ground (their median level), not white: on a grey,
     * grainy scan, white margins beside a ground of 190 made the layout's threshold fall
     * between the two, and the whole band one block of "ink" with no line in it. */
    const unsigned char *src = img->pixels + row * (size_t)a;
    size_t n = row * (size_t)(b - a), hist[256] = {0}, acc = 0;
    for (size_t i = 0; i < n; i++)
        hist[src[i]]++;
    int ground = 255;
    for (int v = 0; v < 256; v++)
        if ((acc += hist[v]) * 2 >= n) {
            ground = v;
            break;
        }
    memset(p, ground, row * (size_t)pad);
    memcpy(p + row * (size_t)pad, src, n);
    memset(p + row * (size_t)(pad + b - a), ground, row * (size_t)pad);
    *out = *img;
    out->pixels = p;
    out->height = out->orig_height = h;
    out->orig_width = img->width;
    out->scale_x = out->scale_y = 1.0;
    return 0;
}

/* ---- deskew ----------------------------------------------------------------------------- */

int ocp_orient_deskew(ocp_page_image *img, double skew, ocp_orient_xform *x)
{
    if (skew == 0)
        return 0;
    double a = skew * M_PI / 180.0, c = cos(a), s = sin(a);
    int w1 = img->width, h1 = img->height, b = img->bands;
    double fw = ceil(w1 * fabs(c) + h1 * fabs(s) - 1e-6),
           fh = ceil(w1 * fabs(s) + h1 * fabs(c) - 1e-6);
    if (fw > 65535 * 2.0 || fh > 65535 * 2.0)
        return OCP_E_TOOBIG;
    /* A long thin page tilted would need a canvas many times its size: such a page is
     * read as it is rather than given memory its estimate never counted (a square page's
     * canvas at 15 degrees is 1.5 times the page). */
    if (fw * fh > 2.0 * w1 * h1 + 4096.0)
        return OCP_E_TOOBIG;
    int w2 = (int)fw, h2 = (int)fh;
    unsigned char *dst = g_try_malloc((size_t)w2 * h2 * b);
    if (!dst)
        return -ENOMEM;
    const unsigned char *src = img->pixels;
    double cx1 = w1 / 2.0, cy1 = h1 / 2.0, cx2 = w2 / 2.0, cy2 = h2 / 2.0;
    /* The inverse rotation gives each pixel's source point, stepping by (c, -s) along a
     * row; in 16.16 fixed point, the pixel-centre grid offset by half a pixel. Bilinear,
     * white outside the page. */
    const int64_t one = 1 << 16, dxs = llround(c * one), dys = llround(-s * one);
    for (int j = 0; j < h2; j++) {
        double dy = j + 0.5 - cy2, dx = 0.5 - cx2;
        int64_t sx = llround((cx1 + dx * c + dy * s - 0.5) * one);
        int64_t sy = llround((cy1 - dx * s + dy * c - 0.5) * one);
        unsigned char *o = dst + (size_t)j * w2 * b;
        for (int i = 0; i < w2; i++, sx += dxs, sy += dys, o += b) {
            int64_t x0 = sx >> 16, y0 = sy >> 16, fx = sx & (one - 1), fy = sy & (one - 1);
            if (x0 >= 0 && y0 >= 0 && x0 + 1 < w1 && y0 + 1 < h1) {
                const unsigned char *p = src + ((size_t)y0 * w1 + (size_t)x0) * b;
                const unsigned char *q = p + (size_t)w1 * b;
                for (int ch = 0; ch < b; ch++) {
                    int64_t top = p[ch] * (one - fx) + p[ch + b] * fx;
                    int64_t bot = q[ch] * (one - fx) + q[ch + b] * fx;
                    o[ch] = (unsigned char)((top * (one - fy) + bot * fy + (one << 15)) >> 32);
                }
                continue;
            }
            if (x0 < -1 || y0 < -1 || x0 >= w1 || y0 >= h1) {
                memset(o, 255, (size_t)b);
                continue;
            }
            /* The page's edge: the taps outside it are white. */
            for (int ch = 0; ch < b; ch++) {
                int64_t v = 0;
                for (int k = 0; k < 4; k++) {
                    int64_t xi = x0 + (k & 1), yi = y0 + (k >> 1);
                    int64_t wx = (k & 1) ? fx : one - fx, wy = (k >> 1) ? fy : one - fy;
                    int px = (xi < 0 || yi < 0 || xi >= w1 || yi >= h1)
                                 ? 255
                                 : src[((size_t)yi * w1 + (size_t)xi) * b + ch];
                    v += px * wx * wy;
                }
                o[ch] = (unsigned char)((v + (one << 31)) >> 32);
            }
        }
    }
    g_free(img->pixels);
    img->pixels = dst;
    img->width = w2;
    img->height = h2;
    x->skew = skew;
    x->w1 = w1;
    x->h1 = h1;
    x->w2 = w2;
    x->h2 = h2;
    return 0;
}
