/*
 * page.c: one page task in this process (page.h).
 */
#include "pool/page.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memstat.h"
#include "core/util.h"
#include "config/config.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* What a reading of a band says: the mean of its words' confidences weighted by their
 * characters, and the share of its characters in words read below OCP_ORIENT_LOW_CONF. */
typedef struct band_score {
    double conf, low;
    long chars;
} band_score;

static long utf8_chars(const char *s)
{
    long n = 0;
    for (; s && *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* The recognizer's reading of band; conf -1 when it read nothing. */
static band_score band_read(ocp_engine *eng, const ocp_page_image *band, double timeout_s)
{
    ocp_result r;
    ocp_ocr_params op = {.timeout_s = timeout_s};
    band_score s = {.conf = -1, .low = 1};
    double sum = 0, low = 0;
    ocp_result_init(&r);
    if (ocp_engine_ocr(eng, band, &op, &r) == 0)
        for (size_t i = 0; i < r.n_words; i++) {
            long n = utf8_chars(r.words[i].text);
            sum += (double)n * r.words[i].conf;
            low += r.words[i].conf < OCP_ORIENT_LOW_CONF ? n : 0;
            s.chars += n;
        }
    if (s.chars > 0)
        s.conf = sum / s.chars, s.low = low / s.chars;
    ocp_result_fini(&r);
    return s;
}

/* A reading the page as it stands can rest on: enough characters, a high mean, and hardly
 * any of them in words the recognizer doubts. Text read upside down always has some. */
static bool sure(const band_score *s)
{
    return s->chars >= OCP_ORIENT_SURE_CHARS && s->conf >= OCP_ORIENT_SURE_CONF &&
           s->low <= OCP_ORIENT_SURE_LOW;
}

/* Reads the band of nlines lines from the middle of img as it stands into *a and, unless
 * that reading is sure, turned by half a turn into *b. Returns 0 (when img shows no line,
 * both stay as they were), or -ENOMEM. */
static int read_both(ocp_engine *eng, const ocp_page_task *t, const ocp_page_image *img, int nlines,
                     band_score *a, band_score *b)
{
    ocp_page_image band;
    ocp_orient_xform bx;
    int rc = ocp_orient_line_band(img, nlines, &band);
    if (rc)
        return rc == -ENOMEM ? rc : 0;
    *a = band_read(eng, &band, t->timeout_s);
    if (!sure(a)) {
        ocp_orient_xform_init(&bx, band.width, band.height);
        if ((rc = ocp_orient_turn(&band, 180, &bx)) == 0)
            *b = band_read(eng, &band, t->timeout_s);
    }
    ocp_page_image_fini(&band);
    return rc;
}

/*
 * Up or down, for a page whose lines are now horizontal. The ink's geometry cannot tell a
 * page from itself upside down; a recognizer reading text upside down is unsure of many of
 * its letters, whatever the script. So the recognizer reads one line from the middle of
 * the page, cut clean of its neighbours (ocp_orient_line_band): a sure reading (sure())
 * ends it there, one band read for an upright page. Otherwise the line is read turned as
 * well, and when neither reading beats the other by the threshold (or nothing was read as
 * it stands and the turned reading is not sure), a band of
 * OCP_ORIENT_MORE_LINES lines both ways decides, into *a and *b (*lines: the band's). The
 * page is to be turned when the turned reading's mean is higher by the threshold
 * (turn_over()).
 *
 * The mean weights each word by its characters: our recognizer is sure of a lone mark read
 * from text upside down (a danda at 86) as of any letter, and a plain mean of
 * words lets those few short words outweigh the long ones it doubts.
 */
static int read_up_or_down(ocp_engine *eng, const ocp_page_task *t, const ocp_page_image *img,
                           band_score *a, band_score *b, int *lines)
{
    *a = *b = (band_score){.conf = -1, .low = 1};
    *lines = 1;
    int rc = read_both(eng, t, img, 1, a, b);
    if (rc == 0 && b->conf >= 0 &&
        (fabs(b->conf - fmax(a->conf, 0)) < t->orient->threshold || (a->conf < 0 && !sure(b)))) {
        *a = *b = (band_score){.conf = -1, .low = 1};
        *lines = OCP_ORIENT_MORE_LINES;
        rc = read_both(eng, t, img, OCP_ORIENT_MORE_LINES, a, b);
    }
    return rc;
}

/* Nothing read as it stands (a grainy or shaded background can leave the layout no line
 * in the band) is no sign of a page upside down: then only a sure reading turned turns it.
 * A scan-like upright page read -1 as it stood and 14 to 57 turned (bench/mix.sh). */
static bool turn_over(const ocp_page_task *t, const band_score *a, const band_score *b)
{
    if (b->conf < 0)
        return false;
    if (a->conf < 0)
        return sure(b);
    return b->conf - a->conf >= t->orient->threshold;
}

static int up_or_down(ocp_engine *eng, const ocp_page_task *t, ocp_page_image *img,
                      ocp_orient_xform *x)
{
    band_score a, b;
    int rc = read_up_or_down(eng, t, img, &a, &b, &x->band_lines);
    x->conf_as_is = a.conf;
    x->conf_turned = b.conf;
    if (rc == 0 && turn_over(t, &a, &b))
        rc = ocp_orient_turn(img, 180, x);
    return rc;
}

/*
 * Lines that all hold the same text (a form, bench/bigpdf.py's test page) line their letters
 * up in columns as sharp as their rows, and the ink alone takes them for vertical lines; the
 * recognizer can even be sure of a column of such letters turned (a row of "3"s: an "m" on
 * its side). So before a quarter turn the page's middle line is read as it stands into *h,
 * when it looks like a line (a band of at most 1/OCP_ORIENT_LINE_SHARE of the page's height:
 * across vertical lines the rows of ink run into one block); the page is turned back when
 * that reading is sure and beats the quarter turn's (ocp_page_orient). h->conf -1: not read.
 * Returns 0 or -ENOMEM.
 */
static int read_as_it_stands(ocp_engine *eng, const ocp_page_task *t, const ocp_page_image *img,
                             band_score *h)
{
    int y0, y1, rc;
    ocp_page_image band;
    *h = (band_score){.conf = -1, .low = 1};
    if (ocp_orient_text_band(img, 1, &y0, &y1) || (y1 - y0) * OCP_ORIENT_LINE_SHARE > img->height)
        return 0;
    if ((rc = ocp_orient_line_band(img, 1, &band)))
        return rc == -ENOMEM ? rc : 0;
    *h = band_read(eng, &band, t->timeout_s);
    ocp_page_image_fini(&band);
    return 0;
}

int ocp_page_orient(ocp_engine *eng, const ocp_page_task *t, ocp_page_image *img,
                    ocp_orient_xform *x, char *err, size_t errlen)
{
    ocp_orient_xform_init(x, img->width, img->height);
    x->conf_as_is = x->conf_turned = -1;
    if (!t->orient || !img->pixels || (!t->orient->rotate_pages && !t->orient->deskew))
        return 0;
    double t0 = ocp_now(), t1, t2;
    ocp_orient_lines ln = {0};
    int rc = 0;
    if (t->orient->rotate_pages)
        ocp_orient_find_lines(img, OCP_ORIENT_MAX_SKEW, &ln);
    else
        ln.skew = ocp_orient_find_skew(img, OCP_ORIENT_MAX_SKEW);
    /* A page turned a quarter and then straightened cannot be turned back a quarter: such a
     * page keeps its quarter turn unchecked. */
    band_score h = {.conf = -1, .low = 1};
    bool check = ln.vertical && eng && !(t->orient->deskew && fabs(ln.skew) >= OCP_ORIENT_MIN_SKEW);
    if (check)
        rc = read_as_it_stands(eng, t, img, &h);
    if (rc == 0 && ln.vertical)
        rc = ocp_orient_turn(img, 90, x);
    if (rc == 0 && t->orient->deskew && fabs(ln.skew) >= OCP_ORIENT_MIN_SKEW) {
        rc = ocp_orient_deskew(img, ln.skew, x);
        if (rc == OCP_E_TOOBIG) { /* a long thin page: read tilted */
            OCP_LOG(OCP_LOG_INFO,
                    "page %dx%d not straightened (%.2f degrees): its canvas would be over "
                    "twice its size",
                    img->width, img->height, ln.skew);
            rc = 0;
        }
    }
    t1 = ocp_now();
    if (rc == 0 && t->orient->rotate_pages && ln.found && eng) {
        rc = up_or_down(eng, t, img, x);
        if (rc == 0 && check && x->skew == 0 && sure(&h) &&
            h.conf > fmax(x->conf_as_is, x->conf_turned)) {
            OCP_LOG(OCP_LOG_DEBUG,
                    "orientation: lines taken for vertical, read at %.1f turned a quarter, "
                    "%.1f as they stood: not turned",
                    fmax(x->conf_as_is, x->conf_turned), h.conf);
            if ((rc = ocp_orient_turn(img, 360 - x->rotation, x)) == 0) {
                x->conf_as_is = h.conf;
                x->conf_turned = -1;
                x->band_lines = 1;
            }
        }
    }
    t2 = ocp_now();
    const char *axis = !ln.found ? "not found" : ln.vertical ? "vertical" : "horizontal";
    OCP_LOG(OCP_LOG_DEBUG,
            "orientation: lines %s (sharper by %.2f), skew %.2f; band of %d line(s) read at "
            "%.1f as it stood, %.1f turned; turned %d, straightened %.2f; %.0f + %.0f ms",
            axis, ln.ratio, ln.skew, x->band_lines, x->conf_as_is, x->conf_turned, x->rotation,
            x->skew, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0);
    if (rc)
        return ocp_errf(rc, err, errlen, "not enough memory to turn the page upright");
    return 0;
}

int ocp_page_load(ocp_engine *eng, ocp_doc *doc, const ocp_page_task *t, ocp_result *res,
                  ocp_page_image *img, ocp_orient_xform *x, char *err, size_t errlen)
{
    char uuid[37];
    memset(img, 0, sizeof *img);
    ocp_orient_xform_init(x, 0, 0);
    if (!t->id)
        ocp_uuid4(uuid);
    ocp_result_set(&res->id, t->id ? t->id : uuid);
    ocp_result_set(&res->source, t->source);
    ocp_result_set(&res->lang, t->lang);
    res->page = t->page + 1;
    if (ocp_engine_features(eng) & OCP_FEAT_NO_PIXELS)
        return 0; /* the null engine: no decoding, an empty page */
    int rc = ocp_doc_load_page(doc, t->page, img, err, errlen);
    if (rc)
        return rc;
    OCP_LOG(OCP_LOG_DEBUG, "%s page %d: %dx%d -> %dx%d, %d bands, %d dpi", t->source, t->page + 1,
            img->orig_width, img->orig_height, img->width, img->height, img->bands, img->dpi);
    res->width = img->orig_width;
    res->height = img->orig_height;
    return ocp_page_orient(eng, t, img, x, err, errlen);
}

void ocp_page_finish(ocp_result *res, ocp_page_image *img, const ocp_orient_xform *x, int rc,
                     double t0)
{
    if (rc == 0 && img->pixels) {
        /* Turned pixels back to the resized page, then the resize back to the original. */
        ocp_result_turn_back(res, x);
        ocp_result_rescale(res, img->scale_x, img->scale_y, img->orig_width, img->orig_height);
    }
    ocp_page_image_fini(img);
    res->elapsed_ms = (ocp_now() - t0) * 1000.0;
    res->peak_rss_kb = ocp_self_peak_rss_kb();
}

int ocp_page_run(ocp_engine *eng, ocp_doc *doc, const ocp_page_task *t, ocp_result *res, char *err,
                 size_t errlen)
{
    ocp_page_image img;
    ocp_orient_xform x;
    if (!t->keep_peak)
        ocp_self_reset_peak_rss();
    double t0 = ocp_now();
    int rc = ocp_page_load(eng, doc, t, res, &img, &x, err, errlen);
    if (rc == 0) {
        ocp_ocr_params op = {.timeout_s = t->timeout_s};
        rc = ocp_engine_ocr(eng, &img, &op, res);
        if (rc)
            snprintf(err, errlen, "%s", ocp_engine_errmsg(eng));
    }
    ocp_page_finish(res, &img, &x, rc, t0);
    /* Give freed page buffers back to the system: a worker's size between pages should be
     * its models, not its biggest page so far. */
    malloc_trim(0);
    return rc;
}

int ocp_page_check_declared(ocp_doc *doc, int page, long dw, long dh, int max_side, char *err,
                            size_t errlen)
{
    int w, h, rw, rh, fw, fh;
    /* A PDF page too, at this node's pdf-dpi: a task that declares a size is held to it
     * (ocrpool's own producers declare none for PDF pages). */
    if (dw <= 0 || dh <= 0)
        return 0;
    int rc = ocp_doc_page_size(doc, page, &w, &h, err, errlen);
    if (rc)
        return rc;
    /* Declared sizes past the pixel types are as large as a page gets. */
    if (dw > 1000000 || dh > 1000000)
        return 0;
    ocp_image_fit(w, h, max_side, &rw, &rh);
    ocp_image_fit((int)dw, (int)dh, max_side, &fw, &fh);
    if ((double)rw * rh <= (double)fw * fh)
        return 0;
    return ocp_errf(OCP_E_TOOBIG, err, errlen,
                    "page is %d x %d, larger than the %ld x %ld its task declared (its memory "
                    "was estimated from that)",
                    w, h, dw, dh);
}
