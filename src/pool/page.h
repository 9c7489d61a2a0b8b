/*
 * page.h: running one page task, start to end, in the calling process:
 * decode -> resize -> OCR -> boxes back to original pixels -> result.
 * The command line runs it in-process; pool workers will run it too.
 */
#ifndef OCP_POOL_PAGE_H
#define OCP_POOL_PAGE_H

#include <stddef.h>

#include "engine/engine.h"
#include "image/image.h"
#include "image/orient.h"

/* One page to do. Open type; strings are borrowed. */
typedef struct ocp_page_task {
    const char *id;     /* task id; NULL = a new UUID */
    const char *source; /* shown in results ("book.pdf", "-") */
    int page;           /* 0-based */
    const char *lang;
    double timeout_s;
    int keep_peak; /* the caller reset the peak RSS already (do not reset it again) */
    /* rotate-pages and deskew (NULL = neither). Borrowed. */
    const ocp_orient_conf *orient;
} ocp_page_task;

/*
 * Runs t on doc with eng into res (initialised by the caller, filled here
 * also on failure with what is known). Returns 0, or a negative code with
 * a one-line reason in err. Resets this process's peak RSS first, so
 * res->peak_rss_kb is the peak of this page.
 */
int ocp_page_run(ocp_engine *eng, ocp_doc *doc, const ocp_page_task *t, ocp_result *res, char *err,
                 size_t errlen);

/* The two halves of ocp_page_run, for a worker that reads several pages together: load
 * fills res with what t says and decodes the page into img (left empty for an engine that
 * needs no pixels), turned upright and deskewed as t->orient says (what was done in *x);
 * finish takes res's boxes back to the original pixels through x and the resize (when rc is
 * 0), frees img and sets res's time (since t0) and peak; the caller gives the freed memory
 * back (malloc_trim) once for all its pages. */
int ocp_page_load(ocp_engine *eng, ocp_doc *doc, const ocp_page_task *t, ocp_result *res,
                  ocp_page_image *img, ocp_orient_xform *x, char *err, size_t errlen);
void ocp_page_finish(ocp_result *res, ocp_page_image *img, const ocp_orient_xform *x, int rc,
                     double t0);

/*
 * Turns img upright and straight as t->orient says, recording what was done in x (set to
 * "nothing done" first): rotate-pages finds the axis of its lines from the ink
 * (image/orient.h) and up from down by eng's confidence on a line of it read both ways
 * (a half turn taken when it wins by rotate-pages-threshold points); deskew straightens
 * the lines' tilt. Each step replaces img's pixels and frees the old ones at once.
 * Returns 0, or a negative code with the reason in err (memory).
 */
int ocp_page_orient(ocp_engine *eng, const ocp_page_task *t, ocp_page_image *img,
                    ocp_orient_xform *x, char *err, size_t errlen);

/*
 * A page whose task declared its size (width, height: what the master's memory estimate
 * counted) is checked against its real size from the header before anything is decoded:
 * fitted into max_side (0 = never resize), the real page may not be larger than the
 * declared one, or a false size would slip a big page past --memory-budget. dw or dh 0 =
 * none declared (nothing to check: the master then counted the largest page the limits let
 * through). A PDF's page is not checked: its size is the node's pdf-dpi's, which its
 * producer need not share (max-pixels still bounds it). Returns 0, or OCP_E_TOOBIG with the
 * reason in err.
 */
int ocp_page_check_declared(ocp_doc *doc, int page, long dw, long dh, int max_side, char *err,
                            size_t errlen);

#endif
