/*
 * result.h: the result of one page, whatever engine made it, and its
 * renderings (JSON, plain text, hOCR, ALTO, TSV).
 *
 * Open types: engines fill them through ocp_result_add_line/_add_word.
 * Boxes are [x1, y1, x2, y2) in pixels, x2/y2 exclusive. An engine reports
 * them on the pixels it saw; ocp_result_rescale() maps them to the original
 * page, which is what every rendering shows.
 */
#ifndef OCP_ENGINE_RESULT_H
#define OCP_ENGINE_RESULT_H

#include <jansson.h>
#include <stddef.h>

#include "core/util.h"
#include "image/orient.h"

typedef struct ocp_box {
    int x1, y1, x2, y2;
} ocp_box;

typedef struct ocp_word {
    ocp_box bbox;
    char *text;
    float conf; /* 0..100 */
} ocp_word;

typedef struct ocp_line {
    ocp_box bbox;
    char *text; /* without the trailing newline */
    float conf;
    int block, par;    /* 0-based numbers of the block and paragraph holding the line */
    size_t first_word; /* index into ocp_result.words */
    size_t n_words;
} ocp_line;

typedef struct ocp_result {
    char *id;          /* task id */
    char *source;      /* file name or "-" */
    int page;          /* 1-based */
    int width, height; /* of the original page */
    int rotation;      /* 0/90/180/270: degrees clockwise the page was turned to be read
                          (its text is turned that many degrees anticlockwise on the page) */
    double skew;       /* degrees the lines were tilted (anticlockwise +) and straightened */
    char *lang;
    char *engine;
    char *text; /* the engine's full text of the page */
    float mean_conf;
    ocp_line *lines;
    size_t n_lines, cap_lines;
    ocp_word *words;
    size_t n_words, cap_words;
    double elapsed_ms;
    long peak_rss_kb;
} ocp_result;

/* Renderings a result can have; a bit mask of these is a "format set". */
enum ocp_format {
    OCP_FMT_TXT = 1,
    OCP_FMT_JSON = 2,
    OCP_FMT_HOCR = 4,
    OCP_FMT_ALTO = 8,
    OCP_FMT_TSV = 16,
};

void ocp_result_init(ocp_result *r);
void ocp_result_fini(ocp_result *r);
/* Sets a string field: frees the old value, copies s (NULL allowed). */
void ocp_result_set(char **field, const char *s);
/* Appends a line (text copied) and returns it; its words follow with add_word. */
ocp_line *ocp_result_add_line(ocp_result *r, ocp_box bbox, const char *text, float conf, int block,
                              int par);
/* Appends a word to the last line (text copied). */
void ocp_result_add_word(ocp_result *r, ocp_box bbox, const char *text, float conf);

/*
 * Maps a box from resized pixels back to the original page: x * sx, y * sy,
 * widening to whole pixels (floor for the start, ceil for the end) and
 * clipping to [0, w] x [0, h].
 */
ocp_box ocp_box_rescale(ocp_box b, double sx, double sy, int w, int h);
/* Rescales every box of r and sets r->width/height to w/h. */
void ocp_result_rescale(ocp_result *r, double sx, double sy, int w, int h);

/*
 * Maps every box of r from the pixels the recognizer read (turned and deskewed as x says)
 * back to the pixels before the turn (the box around each box's mapped corners), and
 * records x's rotation and skew in r. Call it before ocp_result_rescale.
 */
void ocp_result_turn_back(ocp_result *r, const ocp_orient_xform *x);

/* Parses "txt,json,..." into a format mask; -1 on an unknown name. */
int ocp_format_parse(const char *list);
/* File extension of one format ("txt", "json", "hocr", "xml", "tsv"). */
const char *ocp_format_ext(int fmt);
const char *ocp_format_name(int fmt);

/*
 * Fills r (initialised by the caller) from the JSON rendering of a result.
 * Returns 0, or OCP_E_DECODE when json is not a page result.
 */
int ocp_result_from_json(ocp_result *r, const char *json);

/* The JSON rendering of r as a new value (json_decref): the fields ocp_result_render
 * (OCP_FMT_JSON) writes, which writes this value. */
json_t *ocp_result_json(const ocp_result *r);

/* Appends the rendering fmt (one format) of r to out. */
void ocp_result_render(const ocp_result *r, int fmt, ocp_sb *out);

#endif
