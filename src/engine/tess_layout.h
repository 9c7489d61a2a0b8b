/*
 * tess_layout.h: what the `lstm` engine asks of Tesseract's layout analysis
 * beyond its C API (tess_layout.cpp, C++): the page's "combo words" (the
 * words of a row merged where a line recognizer should read them together,
 * Tesseract's AnalyseLayout(merge_similar_words)), each with its row's
 * baseline and heights, so that the engine crops each as libtesseract's own
 * LSTM recognizer does.
 */
#ifndef OCP_ENGINE_TESS_LAYOUT_H
#define OCP_ENGINE_TESS_LAYOUT_H

#include <tesseract/capi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One combo word, in image coordinates (y down, x2/y2 exclusive). Open type. */
typedef struct ocp_tess_unit {
    int x1, y1, x2, y2;
    int block, para, line; /* block and text line on the page, paragraph in its block,
                              counting from 0 */
    float baseline;        /* the row's baseline at the box's middle x (y, image) */
    float x_height, ascenders, descenders; /* the row's: ascenders above the x-height,
                                              descenders below the baseline (<= 0) */
} ocp_tess_unit;

/*
 * Runs the layout analysis on the image already set in api and lists the
 * combo words in reading order: *out (free()) receives them. Returns their
 * number (0 for an empty page), or -1 when the analysis fails. The api's
 * page stays until TessBaseAPIClear.
 */
int ocp__tess_layout_units(TessBaseAPI *api, ocp_tess_unit **out);

#ifdef __cplusplus
}
#endif

#endif
