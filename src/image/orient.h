/*
 * orient.h: turning a page's pixels so that the recognizer reads them
 * upright and straight, and mapping what it found back to the page.
 *
 *   ocp_orient_turn()        a quarter turn (90/180/270 degrees clockwise),
 *                            pixels moved exactly
 *   ocp_orient_find_lines()  the axis of the text lines and their tilt (up to
 *                            +-15 degrees), by projection profiles of the ink
 *   ocp_orient_text_band()   rows holding a few lines, for the recognizer to
 *                            read both ways up
 *   ocp_orient_deskew()      rotation by that tilt onto a larger white canvas
 *                            (bilinear)
 *   ocp_orient_box_back()    a box on the turned pixels -> the box on the
 *                            page before any turn (the box around the
 *                            mapped corners)
 *
 * Only what the recognizer sees is turned: every output image and every box
 * stays in the original page's pixels. Which way is up is not told here (the
 * ink's geometry shows the lines' axis, not their top): the page's
 * recognizer reads a line of the page both ways (pool/page.c).
 */
#ifndef OCP_IMAGE_ORIENT_H
#define OCP_IMAGE_ORIENT_H

#include <stdbool.h>

#include "image/image.h"

/* The settings rotate-pages, rotate-pages-threshold and deskew. Open type. */
typedef struct ocp_orient_conf {
    bool rotate_pages;
    double threshold; /* confidence points the other way up must win by to turn the page */
    bool deskew;
} ocp_orient_conf;

struct ocp_config;
ocp_orient_conf ocp_orient_conf_from_config(const struct ocp_config *cfg);

/*
 * What was done to a page's pixels before the recognizer read them, and so
 * how its boxes map back. Open type; zeroed = nothing done.
 *   rotation: 0, 90, 180 or 270, degrees clockwise the page was turned to
 *             read it upright (the page's text was turned that many degrees
 *             anticlockwise: hOCR's textangle, ALTO's ROTATION);
 *   skew:     degrees the text lines were tilted after that turn,
 *             anticlockwise positive (rising to the right); the deskew turned
 *             the pixels clockwise by it;
 *   w0 x h0:  the pixels before the quarter turn, w1 x h1 after it, w2 x h2
 *             after the deskew (the canvas holding the whole rotated page).
 */
typedef struct ocp_orient_xform {
    int rotation;
    double skew;
    double conf_as_is, conf_turned; /* the recognizer's mean confidence (each word weighted
                                       by its characters) on a band of the page as it stood
                                       and turned by half a turn (-1 when not read); for
                                       the log and the benchmarks */
    int band_lines;                 /* the lines of that band (0: none read) */
    int w0, h0, w1, h1, w2, h2;
} ocp_orient_xform;

/* Sets x to "nothing done yet" on a w x h page. */
void ocp_orient_xform_init(ocp_orient_xform *x, int w, int h);

/*
 * Turns img's pixels degrees clockwise (0, 90, 180, 270) into a new buffer,
 * freeing the old one at once (one page's copy at a time), and adds the turn
 * to x. After a deskew only 180 is allowed (it commutes with the deskew: both
 * turn about the centre). Returns 0, -EINVAL (90 or 270 after a deskew), or
 * -ENOMEM with img unchanged.
 */
int ocp_orient_turn(ocp_page_image *img, int degrees, ocp_orient_xform *x);

/* What the ink of a page says about its text lines. Open type. */
typedef struct ocp_orient_lines {
    int found;    /* 0: too little ink, or no direction of lines stands out */
    int vertical; /* the lines run down the page: it must be turned 90 or 270 degrees */
    double skew;  /* the lines' tilt, anticlockwise positive, once they are horizontal
                     (after turning 90 clockwise when vertical; a half turn keeps it) */
    double ratio; /* how much sharper the rows of the winning axis are than the other's */
} ocp_orient_lines;

/*
 * The direction and tilt of img's text lines from projection profiles of its
 * ink (a copy reduced to about 1000 pixels, thresholded by Otsu): for each
 * axis, the angle within +-max_deg (at most 15) whose rows of ink are
 * sharpest, and the axis whose best rows are sharper by OCP_ORIENT_AXIS_RATIO.
 * It cannot tell up from down: that is the recognizer's (page.c).
 */
void ocp_orient_find_lines(const ocp_page_image *img, double max_deg, ocp_orient_lines *out);

/*
 * The tilt of img's text lines in degrees, anticlockwise positive, within
 * +-max_deg, taking the lines as horizontal (find_lines without the other
 * axis). 0 when the page has too little ink to tell, or no angle stands out.
 */
double ocp_orient_find_skew(const ocp_page_image *img, double max_deg);

/*
 * Rotates img's pixels clockwise by skew degrees (undoing an anticlockwise
 * tilt) onto a canvas that holds the whole page, white where the page was
 * not; the old buffer is freed at once. Records it in x. Returns 0, or
 * -ENOMEM, or OCP_E_TOOBIG (a canvas over twice the page's pixels: a long thin
 * page), with img and x unchanged.
 */
int ocp_orient_deskew(ocp_page_image *img, double skew, ocp_orient_xform *x);

/*
 * Rows [*y0, *y1) of img holding nlines lines of text from the middle of the
 * page (fewer when it has fewer), with half a line of margin: what the
 * recognizer reads to tell up from down. Returns 0, or -1 when img shows no
 * line of ink.
 */
int ocp_orient_text_band(const ocp_page_image *img, int nlines, int *y0, int *y1);

/*
 * A new image (ocp_page_image_fini frees it) of nlines lines of text from the middle of
 * img (fewer when it has fewer), as ocp_orient_text_band finds them, between margins of
 * half a line of white: the rows of the lines' neighbours, which a band cut from the page
 * would show in part (halves of letters a recognizer reads as anything, sure of nothing),
 * are left out. Returns 0, -1 when img shows no line of ink, or -ENOMEM.
 */
int ocp_orient_line_band(const ocp_page_image *img, int nlines, ocp_page_image *out);

/* A copy of rows [y0, y1) of img into out (ocp_page_image_fini frees it). Returns 0,
 * -EINVAL (rows outside img) or -ENOMEM. */
int ocp_orient_band(const ocp_page_image *img, int y0, int y1, ocp_page_image *out);

/*
 * Maps the box [x1, x2) x [y1, y2) on the pixels x describes the end of back
 * to the pixels before any turn: the box around its four mapped corners,
 * clipped to w0 x h0, whole pixels (floor, ceil).
 */
void ocp_orient_box_back(const ocp_orient_xform *x, int *x1, int *y1, int *x2, int *y2);

/* One point, as above, without rounding or clipping (for tests). */
void ocp_orient_point_back(const ocp_orient_xform *x, double *px, double *py);
/* The other way: a point on the page before any turn to the turned pixels. */
void ocp_orient_point_fwd(const ocp_orient_xform *x, double *px, double *py);

/* Skews smaller than this (degrees) are left alone: the recognizer's own line finding
 * copes, and a resampled page is a little softer. */
#define OCP_ORIENT_MIN_SKEW 0.3
/* The largest tilt looked for. */
#define OCP_ORIENT_MAX_SKEW 15.0
/* How much sharper the rows of one axis must be than the other's to call it the lines'. */
#define OCP_ORIENT_AXIS_RATIO 1.3
/* Up or down (pool/page.c): the recognizer reads one line from the middle of the page; the
 * page as it stands needs no second reading when that line has OCP_ORIENT_SURE_CHARS
 * characters or more, their mean confidence (0..100, each word weighted by its characters)
 * is OCP_ORIENT_SURE_CONF or more, and at most the share OCP_ORIENT_SURE_LOW of them are in
 * words read below OCP_ORIENT_LOW_CONF. When the line read both ways does not tell (the
 * readings within rotate-pages-threshold of each other), a band of OCP_ORIENT_MORE_LINES
 * lines does. */
#define OCP_ORIENT_SURE_CHARS 10
#define OCP_ORIENT_SURE_CONF  80.0
#define OCP_ORIENT_SURE_LOW   0.05
#define OCP_ORIENT_LOW_CONF   50.0
#define OCP_ORIENT_MORE_LINES 5
/* Before a quarter turn the page's middle line is read as it stands as well, when its band
 * is at most this share of the page's height (pool/page.c). */
#define OCP_ORIENT_LINE_SHARE 4

#endif
