/*
 * page.c: one page task in this process (page.h).
 */
#include "pool/page.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "config/config.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>

int ocp_page_load(ocp_engine *eng, ocp_doc *doc, const ocp_page_task *t, ocp_result *res,
                  ocp_page_image *img, char *err, size_t errlen)
{
    char uuid[37];
    memset(img, 0, sizeof *img);
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
    return 0;
}

void ocp_page_finish(ocp_result *res, ocp_page_image *img, int rc, double t0)
{
    if (rc == 0 && img->pixels)
        ocp_result_rescale(res, img->scale_x, img->scale_y, img->orig_width, img->orig_height);
    ocp_page_image_fini(img);
    res->elapsed_ms = (ocp_now() - t0) * 1000.0;
    res->peak_rss_kb = ocp_self_peak_rss_kb();
}

int ocp_page_run(ocp_engine *eng, ocp_doc *doc, const ocp_page_task *t, ocp_result *res, char *err,
                 size_t errlen)
{
    ocp_page_image img;
    if (!t->keep_peak)
        ocp_self_reset_peak_rss();
    double t0 = ocp_now();
    int rc = ocp_page_load(eng, doc, t, res, &img, err, errlen);
    if (rc == 0) {
        ocp_ocr_params op = {.timeout_s = t->timeout_s};
        rc = ocp_engine_ocr(eng, &img, &op, res);
        if (rc)
            snprintf(err, errlen, "%s", ocp_engine_errmsg(eng));
    }
    ocp_page_finish(res, &img, rc, t0);
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
