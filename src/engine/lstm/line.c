/*
 * line.c: a line image made ready for the forward pass (ocp_lstm_prepare_line in forward.h):
 * scaled with leptonica to the model's height, made grey and contrast-normalised to int8
 * as libtesseract does before its network.
 */
#include "engine/lstm/forward.h"
#include "core/error.h"
#include "core/util.h"

#include <errno.h>
#include <leptonica/allheaders.h>
#include <stdint.h>
#include <stdlib.h>

/* The frac-th percentile of n values in a histogram of 255 buckets (0..254; a 255 counts
 * in the last), interpolated within the bucket where the running count reaches
 * round(frac * n) (at least 1): the bucket's index plus one, less the share of it beyond
 * that count. Found by black-box tests against libtesseract (see test_lstm.sh). */
static float percentile(const long *hist, long n, double frac)
{
    double target = frac * (double)n;
    if (target < 1)
        target = 1;
    if (target > n)
        target = (double)n;
    long sum = 0;
    int i = 0;
    while (i < 256 && sum < target)
        sum += hist[i++];
    if (i == 0 || hist[i - 1] == 0)
        return (float)i;
    return (float)(i - (double)(sum - target) / (double)hist[i - 1]);
}

/* The line's pixels as a leptonica image, 32-bit colour (bands 3 or 4) or 8-bit grey; NULL
 * when it cannot be allocated. */
static PIX *line_pix(const uint8_t *px, int w, int h, int stride, int bands)
{
    int colour = bands >= 3;
    PIX *pix = pixCreate(w, h, colour ? 32 : 8);
    if (!pix)
        return NULL;
    l_uint32 *data = pixGetData(pix);
    int wpl = pixGetWpl(pix);
    for (int y = 0; y < h; y++) {
        const uint8_t *row = px + (size_t)y * stride;
        l_uint32 *line = data + (size_t)y * wpl;
        for (int x = 0; x < w; x++) {
            const uint8_t *q = row + (size_t)x * bands;
            if (colour)
                composeRGBPixel(q[0], q[1], q[2], &line[x]);
            else
                SET_DATA_BYTE(line, x, q[0]);
        }
    }
    return pix;
}

/* Black and white from the middle row: the 25th percentile of its local minima, the
 * 75th of its local maxima, where a minimum is a pixel below the one before it and not
 * above the one after it (a maximum the other way round): one per run of equal values. */
static void black_and_white(PIX *g8, float *black, float *white)
{
    int W = pixGetWidth(g8), H = pixGetHeight(g8);
    long hmin[256] = {0}, hmax[256] = {0}, nmin = 0, nmax = 0;
    if (W >= 3) {
        const l_uint32 *mid = pixGetData(g8) + (size_t)(H / 2) * pixGetWpl(g8);
        int prev = GET_DATA_BYTE(mid, 0), cur = GET_DATA_BYTE(mid, 1), next;
        for (int x = 1; x + 1 < W; x++) {
            next = GET_DATA_BYTE(mid, x + 1);
            if (cur < prev && cur <= next) {
                hmin[cur]++;
                nmin++;
            }
            if (cur > prev && cur >= next) {
                hmax[cur]++;
                nmax++;
            }
            prev = cur;
            cur = next;
        }
    }
    if (!nmin) {
        hmin[0] = 1;
        nmin = 1;
    }
    if (!nmax) {
        hmax[255] = 1;
        nmax = 1;
    }
    *black = percentile(hmin, nmin, 0.25);
    *white = percentile(hmax, nmax, 0.75);
}

int ocp_lstm_prepare_line(const ocp_lstm_model *m, const uint8_t *px, int w, int h, int stride,
                          int bands, int invert, int8_t **out, int *ow, char *err, size_t errlen)
{
    *out = NULL;
    if (w < 1 || h < 1 || w > 100000 || h > 10000)
        return ocp_errf(OCP_E_RANGE, err, errlen, "line image %d x %d", w, h);
    if (bands != 1 && bands != 3 && bands != 4)
        return ocp_errf(OCP_E_RANGE, err, errlen, "line image of %d bands", bands);
    /* A line the forward pass would refuse at the model's height (over 100000 columns, or
     * over what one line may take) is refused before it is scaled. The scaled width is
     * within a column of this. */
    char why[240];
    double columns = (double)w * m->input_height / h;
    int rc = ocp_lstm_line_fits(m, columns + 1, why, sizeof why);
    if (rc)
        return ocp_errf(rc, err, errlen,
                        "line image %d x %d: %.0f columns at the model's height: %s", w, h, columns,
                        why);
    PIX *pix = line_pix(px, w, h, stride, bands);
    if (!pix)
        return ocp_errf(-ENOMEM, err, errlen, "cannot allocate a %d x %d line", w, h);
    float f = (float)m->input_height / (float)h;
    PIX *sc = pixScale(pix, f, f);
    pixDestroy(&pix);
    if (!sc)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot scale the line");
    if (invert)
        pixInvert(sc, sc);
    /* Colour to grey as leptonica's pixConvertTo8 does it (its luminance weights). */
    PIX *g8 = pixGetDepth(sc) == 8 ? pixClone(sc) : pixConvertTo8(sc, 0);
    pixDestroy(&sc);
    if (!g8)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot make the line grey");
    int W = pixGetWidth(g8), H = pixGetHeight(g8);
    if (H != m->input_height) {
        pixDestroy(&g8);
        return ocp_errf(OCP_E_ENGINE, err, errlen, "scaled line is %d high, not %d", H,
                        m->input_height);
    }
    float black, white;
    black_and_white(g8, &black, &white);
    float contrast = (white - black) / 2.0f;
    if (contrast <= 0)
        contrast = 1;
    int8_t *img = ocp_xmalloc((size_t)W * H);
    const l_uint32 *data = pixGetData(g8);
    int wpl = pixGetWpl(g8);
    for (int y = 0; y < H; y++) {
        const l_uint32 *line = data + (size_t)y * wpl;
        for (int x = 0; x < W; x++) {
            l_uint32 v = GET_DATA_BYTE(line, x);
            /* Into [-1, 1], then x 128 (as the reference says), rounded half away from
             * zero in float as ocp__lstm_quantise (kernels.h) does, and clipped to +-127: on grey
             * lines only this, with the percentiles above interpolated at the exact fraction of the
             * count over all 256 levels, gives libtesseract's outputs to the last bit
             * (black-and-white lines cannot tell 127 from 128). */
            float fp = 128.0f * (((float)v - black) / contrast - 1.0f);
            float a = (fp < 0 ? -fp : fp) + 0.5f;
            int q = a < 127.0f ? (int)a : 127;
            img[(size_t)y * W + x] = (int8_t)(fp < 0 ? -q : q);
        }
    }
    pixDestroy(&g8);
    *out = img;
    *ow = W;
    return 0;
}
