/*
 * page.c: one page task in this process (page.h).
 */
#include "pool/page.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "config/config.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* The recognizer's mean confidence on band (0..100), or -1 when it read nothing. */
static double band_conf(ocp_engine *eng, const ocp_page_image *band, double timeout_s)
{
    ocp_result r;
    ocp_ocr_params op = {.timeout_s = timeout_s};
    ocp_result_init(&r);
    double c = ocp_engine_ocr(eng, band, &op, &r) == 0 && r.n_words ? r.mean_conf : -1;
    ocp_result_fini(&r);
    return c;
}

/*
 * Up or down, for a page whose lines are now horizontal: the recognizer reads a band of
 * lines from the middle of the page as it stands and, unless that reading is sure
 * already, turned by half a turn; the page is turned when the second reading is more
 * confident by the threshold. The ink's geometry cannot tell a page from itself upside
 * down, and a recognizer reading text upside down is unsure of every letter, whatever
 * the script.
 */
static int up_or_down(ocp_engine *eng, const ocp_page_task *t, ocp_page_image *img,
                      ocp_orient_xform *x)
{
    int y0, y1, rc;
    ocp_page_image band;
    ocp_orient_xform bx;
    x->conf_as_is = x->conf_turned = -1;
    if (ocp_orient_text_band(img, OCP_ORIENT_BAND_LINES, &y0, &y1))
        return 0;
    if ((rc = ocp_orient_band(img, y0, y1, &band)))
        return rc;
    x->conf_as_is = band_conf(eng, &band, t->timeout_s);
    if (x->conf_as_is < OCP_ORIENT_SURE_CONF) {
        ocp_orient_xform_init(&bx, band.width, band.height);
        if ((rc = ocp_orient_turn(&band, 180, &bx)) == 0)
            x->conf_turned = band_conf(eng, &band, t->timeout_s);
    }
    ocp_page_image_fini(&band);
    if (rc == 0 && x->conf_turned >= 0 &&
        x->conf_turned - (x->conf_as_is < 0 ? 0 : x->conf_as_is) >= t->orient->threshold)
        rc = ocp_orient_turn(img, 180, x);
    return rc;
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
    if (ln.vertical)
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
    if (rc == 0 && t->orient->rotate_pages && ln.found && eng)
        rc = up_or_down(eng, t, img, x);
    t2 = ocp_now();
    const char *axis = !ln.found ? "not found" : ln.vertical ? "vertical" : "horizontal";
    OCP_LOG(OCP_LOG_DEBUG,
            "orientation: lines %s (sharper by %.2f), skew %.2f; band read at %.1f as it "
            "stood, %.1f turned; turned %d, straightened %.2f; %.0f + %.0f ms",
            axis, ln.ratio, ln.skew, x->conf_as_is, x->conf_turned, x->rotation, x->skew,
            (t1 - t0) * 1000.0, (t2 - t1) * 1000.0);
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
