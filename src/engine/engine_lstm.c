/*
 * engine_lstm.c: the `lstm` engine: Tesseract finds the page's layout (its
 * "combo words", tess_layout.h, with the first language's parameters); our
 * own code (src/engine/lstm) crops each to its row's band, normalises it,
 * runs the model's network on batches of lines (forward.h) and decodes them
 * with the model's dictionaries (beam.h). With several languages ("san+eng")
 * each line is read by the models in order until one is sure of it, else the
 * surest reading is kept; after a page's first lines, in the order of the
 * models that won its last lines (read_all).
 */
#include "engine/engine.h"
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/lstm/beam.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/model.h"
#include "engine/lstm/remote.h"
#include "engine/tess_layout.h"

#include <leptonica/allheaders.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tesseract/capi.h>

int ocp__tess_resolve(const ocp_engine_params *p, char dirbuf[4096], char **langs, char *err,
                      size_t errlen);

#define MAX_MODELS 4
#define CONFIDENT 0.95
#define DOUBTFUL 0.7

typedef struct lstm_state {
    TessBaseAPI *layout; /* Tesseract for page layout only: it loads no model */
    ocp_lstm_model *model[MAX_MODELS];
    char *name[MAX_MODELS]; /* each model's language, as a recognizer is asked for it */
    int n_models;
    long passes[MAX_MODELS]; /* lines each model has read (its forward passes, a line each;
                                inverted readings too), logged at debug per batch of pages */
} lstm_state;

/* The remote forward pass of this process (remote.h), when a shared recognizer reads the
 * lines; NULL: the network runs here. */
static ocp_lstm_remote_fn remote_fn;
static void *remote_ctx;

void ocp_lstm_set_remote(ocp_lstm_remote_fn fn, void *ctx)
{
    remote_fn = fn;
    remote_ctx = ctx;
}

/* The models open in this process, by language: what a recognizer forked from the zygote
 * finds there (remote.h). A process opens a few engines at most (a worker: 3). */
#define REGISTRY 16
static struct {
    const char *name;
    const ocp_lstm_model *m;
} registry[REGISTRY];

static void registry_set(const char *name, const ocp_lstm_model *m)
{
    for (int i = 0; i < REGISTRY; i++)
        if (m ? !registry[i].m : registry[i].m && registry[i].name == name) {
            registry[i].name = m ? name : NULL;
            registry[i].m = m;
            return;
        }
}

const ocp_lstm_model *ocp_lstm_find_loaded(const char *name)
{
    for (int i = 0; i < REGISTRY; i++)
        if (registry[i].m && strcmp(registry[i].name, name) == 0)
            return registry[i].m;
    return NULL;
}

static void lstm_close(void *state)
{
    lstm_state *st = state;
    if (!st)
        return;
    for (int i = 0; i < st->n_models; i++) {
        registry_set(st->name[i], NULL);
        free(st->name[i]);
        ocp_lstm_model_free(st->model[i]);
    }
    if (st->layout) {
        TessBaseAPIEnd(st->layout);
        TessBaseAPIDelete(st->layout);
    }
    free(st);
}

static int lstm_open(const ocp_engine_params *p, void **state, char *err, size_t errlen)
{
    char dir[4096], *langs = NULL, *save = NULL;
    int rc = ocp__tess_resolve(p, dir, &langs, err, errlen);
    if (rc)
        return rc;
    /* Leptonica's own messages would go to stderr; our reasons say enough. */
    if (ocp_log_level < OCP_LOG_DEBUG)
        setMsgSeverity(L_SEVERITY_NONE);
    lstm_state *st = ocp_xcalloc(1, sizeof *st);
    st->layout = TessBaseAPICreate();
    TessBaseAPISetVariable(st->layout, "debug_file", "/dev/null");
    TessBaseAPIInitForAnalysePage(st->layout);
    TessBaseAPISetPageSegMode(st->layout, (TessPageSegMode)p->psm);
    for (char *l = strtok_r(langs, "+", &save); l && !rc; l = strtok_r(NULL, "+", &save)) {
        if (st->n_models == MAX_MODELS) {
            rc = ocp_errf(OCP_E_LANG, err, errlen, "lstm engine: at most %d languages",
                          MAX_MODELS);
            break;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s.traineddata", dir, l);
        /* Each file read is named, as the tesseract engine names its languages: a model
         * read for a language that should have been refused shows in the log. */
        OCP_LOG(OCP_LOG_INFO, "lstm engine: loading %s", path);
        rc = ocp_lstm_model_load(path, &st->model[st->n_models], err, errlen);
        if (!rc) {
            st->name[st->n_models] = ocp_xstrdup(l);
            registry_set(st->name[st->n_models], st->model[st->n_models]);
            st->n_models++;
        }
    }
    free(langs);
    if (rc) {
        lstm_close(st);
        return rc;
    }
    /* The first language's parameters (its traineddata's config) shape the layout as they
     * do in a Tesseract initialised for it: Devanagari's split the headline while segmenting
     * and space words their own way. Those only an initialisation may set are skipped. */
    const ocp_lstm_model *first = st->model[0];
    for (int i = 0; i < first->n_params; i++)
        if (!TessBaseAPISetVariable(st->layout, first->params[i].name, first->params[i].value))
            OCP_LOG(OCP_LOG_DEBUG, "lstm: layout parameter %s not set", first->params[i].name);
    /* Every row is taken as proportional: Tesseract's fixed-pitch test (tune_row_pitch, a
     * dynamic programme over each row's cuts) is about a sixth of its layout's time, and its
     * verdict only decides how a row is cut into words. Rows it would not call fixed come
     * out the same; a row it would (a monospaced page) goes to the proportional word maker
     * instead of being chopped at pitch cells, which had left a line's trailing comma or
     * full stop out of its box. */
    TessBaseAPISetVariable(st->layout, "textord_all_prop", "1");
    OCP_LOG(OCP_LOG_INFO, "lstm engine: %d model(s) read by ocrpool, layout by tesseract",
            st->n_models);
    *state = st;
    return 0;
}

/* The page's pixel at (x, y) in grey (colour weighted 299/587/114). */
static inline uint8_t grey_at(const ocp_page_image *img, int x, int y)
{
    const uint8_t *px =
        (const uint8_t *)img->pixels + ((size_t)y * img->width + x) * img->bands;
    return img->bands >= 3 ? (uint8_t)((px[0] * 299 + px[1] * 587 + px[2] * 114 + 500) / 1000)
                           : px[0];
}

/* The pixels of box (clipped to the page), in the page's own bands, as a new buffer. */
static uint8_t *crop_pixels(const ocp_page_image *img, ocp_box b)
{
    size_t row = (size_t)(b.x2 - b.x1) * img->bands;
    uint8_t *out = ocp_xmalloc(row * (size_t)(b.y2 - b.y1) + 1);
    for (int y = b.y1; y < b.y2; y++)
        memcpy(out + (size_t)(y - b.y1) * row,
               (const uint8_t *)img->pixels + ((size_t)y * img->width + b.x1) * img->bands, row);
    return out;
}

/* A combo word of the page (a text line, or the part of one a wide gap leaves) on its way
 * through the models. */
typedef struct pline {
    const ocp_page_image *img; /* its page */
    ocp_box b, p;    /* the layout's box, and the crop (its row's band, padded, clipped) */
    int block, par, line;
    int dark;        /* the crop is mostly dark: light text on a dark ground, read turned
                        over */
    int skip;        /* too small to read */
    float ink_row;   /* the share of ink in the crop's inkiest row (read_all's routing) */
    /* Each model's score of the line as it read it (the surer of its two readings when
     * it read it inverted too), in the order they read it: read_all's bar. */
    const ocp_lstm_model *sm[MAX_MODELS];
    float sc[MAX_MODELS];
    int n_sc;
    /* The best reading so far: its characters, the normalised width, the mean best
     * probability over its steps, the model. */
    ocp_lstm_char *chars;
    int n, w;
    double score;
    const ocp_lstm_model *m;
} pline;

#define BATCH_LINES 8          /* lines a forward pass takes together */
#define BATCH_PIXELS (1 << 19) /* and their normalised pixels, which bounds the batch's memory */
/* and what they hold together in the forward pass: no more than one line may
 * (OCP_LSTM_LINE_BYTES; a model of wide layers holds much more per pixel than Debian's) */

/* A line's reading by model m (probs: steps x classes, freed here): it replaces the line's
 * best when it is surer. */
static void take_reading(const ocp_lstm_model *m, pline *l, float *probs, int steps, int w)
{
    double score = ocp_lstm_mean_best(m, probs, steps);
    int k = 0;
    while (k < l->n_sc && l->sm[k] != m)
        k++;
    if (k == l->n_sc && k < MAX_MODELS) {
        l->sm[k] = m;
        l->sc[k] = (float)score;
        l->n_sc++;
    } else if (k < l->n_sc && score > l->sc[k]) {
        l->sc[k] = (float)score;
    }
    if (!l->m || score > l->score) {
        free(l->chars);
        ocp_lstm_beam(m, probs, steps, 1, &l->chars, &l->n);
        l->w = w;
        l->score = score;
        l->m = m;
    }
    free(probs);
}

/* The order of lines idx[0..n) by the width they will have at m's height, widest first
 * (insertion sort: tens of lines); *ew (free()) receives those widths. New array (free()). */
static int *width_order(const ocp_lstm_model *m, const pline *lines, const int *idx, int n,
                        double **ew_out)
{
    int *order = ocp_xcalloc((size_t)n + 1, sizeof *order);
    double *ew = ocp_xcalloc((size_t)n + 1, sizeof *ew);
    for (int i = 0; i < n; i++) {
        const ocp_box *p = &lines[idx[i]].p;
        ew[i] = (double)(p->x2 - p->x1) * m->input_height / (p->y2 - p->y1);
        order[i] = i;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ew[order[j - 1]] < ew[order[j]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    *ew_out = ew;
    return order;
}

/* Line l's crop prepared for m (turned over once more when invert): 0, or non-zero (the
 * line is skipped, as libtesseract skips a line it cannot normalise). */
static int prepare(const ocp_lstm_model *m, const pline *l, int invert, int8_t **img, int *w)
{
    int gw = l->p.x2 - l->p.x1, gh = l->p.y2 - l->p.y1;
    uint8_t *crop = crop_pixels(l->img, l->p);
    char why[300];
    int rc = ocp_lstm_prepare_line(m, crop, gw, gh, gw * l->img->bands, l->img->bands,
                                   l->dark != invert, img, w, why, sizeof why);
    if (rc)
        OCP_LOG(OCP_LOG_DEBUG, "lstm: a line skipped: %s", why);
    free(crop);
    return rc;
}

/* The shared recognizer's way (remote.h): every line prepared at once (at the model's
 * height they weigh little beside the page), handed over together so that the recognizer
 * can batch them with other workers' lines, decoded here as they come back. A line the
 * recognizer did not read (it is gone, or had no room) is read here, in batches as
 * read_lines makes them: its outputs are the same bits either way. */
static int read_lines_remote(const ocp_lstm_model *m, const char *name, pline *lines,
                             const int *idx, int n, int invert, double deadline, char *err,
                             size_t errlen)
{
    double *ew;
    int *order = width_order(m, lines, idx, n, &ew);
    int8_t **img = ocp_xcalloc((size_t)n + 1, sizeof *img);
    int *w = ocp_xcalloc((size_t)n + 1, sizeof *w),
        *steps = ocp_xcalloc((size_t)n + 1, sizeof *steps);
    int *who = ocp_xcalloc((size_t)n + 1, sizeof *who), nr = 0;
    float **probs = ocp_xcalloc((size_t)n + 1, sizeof *probs);
    for (int a = 0; a < n; a++)
        if (!prepare(m, &lines[idx[order[a]]], invert, &img[nr], &w[nr]))
            who[nr++] = idx[order[a]];
    int rc = nr ? remote_fn(remote_ctx, name, m, nr, (const int8_t *const *)img, w, probs, steps,
                            deadline)
                : 0;
    if (rc == OCP_E_TIMEOUT)
        ocp_errf(rc, err, errlen, "page timeout");
    for (int a = 0; a < nr && !rc;) {
        /* Lines left to this process: batches of similar widths, as read_lines makes. */
        if (probs[a] || steps[a] != OCP_LSTM_REMOTE_HERE) {
            a++;
            continue;
        }
        int b = a, k = 0;
        double bytes = 0;
        const int8_t *bi[BATCH_LINES];
        int bw[BATCH_LINES], bs[BATCH_LINES], bk[BATCH_LINES];
        float *bp[BATCH_LINES];
        for (; b < nr && k < BATCH_LINES; b++) {
            if (probs[b] || steps[b] != OCP_LSTM_REMOTE_HERE)
                continue;
            if (k && bytes + ocp_lstm_line_bytes(m, w[b]) > OCP_LSTM_LINE_BYTES)
                break;
            bytes += ocp_lstm_line_bytes(m, w[b]);
            bi[k] = img[b];
            bw[k] = w[b];
            bk[k++] = b;
        }
        char why[300];
        if (ocp_lstm_forward_batch(m, k, bi, bw, bp, bs, why, sizeof why)) {
            OCP_LOG(OCP_LOG_DEBUG, "lstm: %d line(s) skipped: %s", k, why);
            for (int j = 0; j < k; j++)
                steps[bk[j]] = OCP_LSTM_REMOTE_FAILED;
        } else {
            for (int j = 0; j < k; j++) {
                probs[bk[j]] = bp[j];
                steps[bk[j]] = bs[j];
            }
        }
        a = b;
        if (deadline > 0 && ocp_now() > deadline)
            rc = ocp_errf(OCP_E_TIMEOUT, err, errlen, "page timeout");
    }
    for (int k = 0; k < nr; k++) {
        if (probs[k] && !rc)
            take_reading(m, &lines[who[k]], probs[k], steps[k], w[k]);
        else
            free(probs[k]);
        free(img[k]);
    }
    free(img);
    free(w);
    free(steps);
    free(who);
    free(probs);
    free(order);
    free(ew);
    return rc;
}

/* Reads lines idx[0..n) (of one page or several) with model m (the crops turned over once
 * more when `invert`), in batches of similar widths; a reading surer than a line's best
 * replaces it. The crops are made here, a line at a time, not kept: a page's lines in grey
 * weigh as much as the page. */
static int read_lines(const ocp_lstm_model *m, const char *name, pline *lines, const int *idx,
                      int n, int invert, double deadline, char *err, size_t errlen)
{
    if (remote_fn)
        return read_lines_remote(m, name, lines, idx, n, invert, deadline, err, errlen);
    /* Similar widths together, by the width the line will have at the model's height; each
     * batch's lines prepared only when it runs. */
    double *ew;
    int *order = width_order(m, lines, idx, n, &ew);
    int rc = 0;
    for (int a = 0; a < n && !rc;) {
        int8_t *bimg[BATCH_LINES];
        int bw[BATCH_LINES], steps[BATCH_LINES], who[BATCH_LINES], nb = 0;
        float *probs[BATCH_LINES];
        long px = 0;
        double bytes = 0;
        for (; a < n && nb < BATCH_LINES &&
               (nb == 0 || (px + (long)ew[order[a]] * m->input_height <= BATCH_PIXELS &&
                            bytes + ocp_lstm_line_bytes(m, ew[order[a]] + 1) <=
                                OCP_LSTM_LINE_BYTES));
             a++) {
            if (!prepare(m, &lines[idx[order[a]]], invert, &bimg[nb], &bw[nb])) {
                px += (long)bw[nb] * m->input_height;
                bytes += ocp_lstm_line_bytes(m, bw[nb]);
                who[nb++] = idx[order[a]];
            }
        }
        char why[300];
        if (nb && ocp_lstm_forward_batch(m, nb, (const int8_t *const *)bimg, bw, probs, steps,
                                         why, sizeof why)) {
            OCP_LOG(OCP_LOG_DEBUG, "lstm: %d line(s) skipped: %s", nb, why);
        } else {
            for (int k = 0; k < nb; k++)
                take_reading(m, &lines[who[k]], probs[k], steps[k], bw[k]);
        }
        for (int k = 0; k < nb; k++)
            free(bimg[k]);
        if (deadline > 0 && ocp_now() > deadline)
            rc = ocp_errf(OCP_E_TIMEOUT, err, errlen, "page timeout");
    }
    free(order);
    free(ew);
    return rc;
}

/* Confidence as libtesseract reports it for its LSTM (the project's reference): a word's
 * certainty is the lowest step certainty (log p - 0.085, p as the beam scored the step) of
 * its characters (their steps and the nulls before them) and of the space before it, times
 * 7; confidence = 100 + 5 x certainty, clipped to 0..100. */
static double word_certainty(float p)
{
    return 7.0 * (log(p > 1e-30f ? p : 1e-30f) - 0.085);
}

static float confidence(double certainty)
{
    double c = 100.0 + 5.0 * certainty;
    return (float)(c < 0 ? 0 : c > 100 ? 100 : c);
}

/* A word of a read line, on its way into the result. */
typedef struct lword {
    ocp_box box;
    char *text;
    double cert;
} lword;

/* Appends the words of a read combo word to *w (*n of them, *cap allocated). */
static void split_words(const pline *l, lword **w, int *n, int *cap)
{
    const ocp_lstm_char *c = l->chars;
    ocp_box b = l->b, p = l->p;
    /* A step is 3 pixels of the normalised line; back to the page. */
    double per_step = 3.0 * (double)(p.x2 - p.x1) / (l->w > 0 ? l->w : 1);
    float space = 1.0f;
    for (int k = 0; k < l->n;) {
        for (; k < l->n && strcmp(c[k].text, " ") == 0; k++)
            if (c[k].prob < space)
                space = c[k].prob;
        if (k >= l->n)
            break;
        int e = k;
        float wp = space;
        ocp_sb wt;
        ocp_sb_init(&wt);
        for (; e < l->n && strcmp(c[e].text, " ") != 0; e++) {
            ocp_sb_puts(&wt, c[e].text);
            if (c[e].prob < wp)
                wp = c[e].prob;
        }
        ocp_box wb = {p.x1 + (int)(c[k].first * per_step), b.y1,
                      p.x1 + (int)((c[e - 1].last + 1) * per_step + 0.5), b.y2};
        if (wb.x1 < b.x1)
            wb.x1 = b.x1;
        if (wb.x2 > b.x2)
            wb.x2 = b.x2;
        if (wb.x2 <= wb.x1)
            wb.x2 = wb.x1 + 1;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 32;
            *w = ocp_xrealloc(*w, (size_t)*cap * sizeof **w);
        }
        (*w)[(*n)++] = (lword){wb, ocp_xstrdup(wt.buf ? wt.buf : ""), word_certainty(wp)};
        ocp_sb_fini(&wt);
        space = 1.0f;
        k = e;
    }
}

/* Adds one text line, read as combo words g[0..ng), and its words to res, its text to sb:
 * the combo words' texts joined by a space, the union of their boxes, the confidence of
 * the words' mean certainty. */
static void emit_line(const pline *g, int ng, ocp_result *res, ocp_sb *text, double *conf_sum,
                      int *n_words)
{
    ocp_sb t;
    ocp_sb_init(&t);
    ocp_box box = g[0].b;
    lword *w = NULL;
    int nw = 0, cap = 0;
    double cert = 0;
    for (int i = 0; i < ng; i++) {
        char *part = ocp_lstm_chars_text(g[i].chars, g[i].n);
        if (*part && t.len)
            ocp_sb_putc(&t, ' ');
        ocp_sb_puts(&t, part);
        free(part);
        box.x1 = g[i].b.x1 < box.x1 ? g[i].b.x1 : box.x1;
        box.y1 = g[i].b.y1 < box.y1 ? g[i].b.y1 : box.y1;
        box.x2 = g[i].b.x2 > box.x2 ? g[i].b.x2 : box.x2;
        box.y2 = g[i].b.y2 > box.y2 ? g[i].b.y2 : box.y2;
        split_words(&g[i], &w, &nw, &cap);
    }
    for (int i = 0; i < nw; i++)
        cert += w[i].cert;
    ocp_result_add_line(res, box, t.buf ? t.buf : "", nw ? confidence(cert / nw) : 0,
                        g[0].block, g[0].par);
    for (int i = 0; i < nw; i++) {
        float conf = confidence(w[i].cert);
        ocp_result_add_word(res, w[i].box, w[i].text, conf);
        *conf_sum += conf;
        free(w[i].text);
    }
    *n_words += nw;
    free(w);
    ocp_sb_puts(text, t.buf ? t.buf : "");
    ocp_sb_putc(text, '\n');
    ocp_sb_fini(&t);
}

/* The crop of combo word u as libtesseract's recognizer makes it: its box, taken down to
 * the row's descender line and up to its ascender line where it stops short of them (the
 * baseline at the box's middle), padded by 4 px and clipped to the page. (The project's
 * reference says the box is cut back to those lines; libtesseract's page outputs say it
 * grows to them: on four Sanskrit pages at the default 2048 px, lines identical to --engine
 * tesseract 51 % -> 85 %.)
 * And whether the crop is mostly dark (light text on a dark ground, which the models read
 * turned over). */
static void crop_line(const ocp_page_image *img, const ocp_tess_unit *u, pline *l)
{
    ocp_box b = l->b;
    if (u->x_height > 0) {
        /* The band's edges are truncated in Tesseract's coordinates (y up): here, rounded
         * down the page. (Truncating the baseline first, as the reference has it, read a
         * little worse: 88 against 89 lines of 100 on those pages at full resolution.) */
        int bottom = (int)ceilf(u->baseline - u->descenders);
        int top = (int)ceilf(u->baseline - u->x_height - u->ascenders);
        if (bottom > b.y2)
            b.y2 = bottom;
        if (top < b.y1)
            b.y1 = top;
    }
    OCP_LOG(OCP_LOG_DEBUG,
            "lstm: line %d: box %d,%d-%d,%d, baseline %.2f, x-height %.2f, ascenders %.2f, "
            "descenders %.2f: band %d-%d",
            l->line, l->b.x1, l->b.y1, l->b.x2, l->b.y2, u->baseline, u->x_height, u->ascenders,
            u->descenders, b.y1, b.y2);
    ocp_box p = {b.x1 - 4, b.y1 - 4, b.x2 + 4, b.y2 + 4};
    if (p.x1 < 0)
        p.x1 = 0;
    if (p.y1 < 0)
        p.y1 = 0;
    if (p.x2 > img->width)
        p.x2 = img->width;
    if (p.y2 > img->height)
        p.y2 = img->height;
    l->p = p;
    if (p.x2 - p.x1 < 2 || p.y2 - p.y1 < 2) {
        l->skip = 1;
        return;
    }
    uint64_t total = 0;
    int max_below = 0, min_below = p.x2 - p.x1; /* a row's pixels darker than 128 */
    for (int y = p.y1; y < p.y2; y++) {
        int below = 0;
        for (int x = p.x1; x < p.x2; x++) {
            uint8_t g = grey_at(img, x, y);
            total += g;
            below += g < 128;
        }
        max_below = below > max_below ? below : max_below;
        min_below = below < min_below ? below : min_below;
    }
    l->dark = total < (uint64_t)(p.x2 - p.x1) * (uint64_t)(p.y2 - p.y1) * 128;
    /* The ink is what is light on a dark crop. */
    l->ink_row = (float)(l->dark ? p.x2 - p.x1 - min_below : max_below) / (float)(p.x2 - p.x1);
}

/* The page's combo words (Tesseract's words of a row merged where a line recognizer reads
 * them together: whole lines but for wide gaps) as lines to read, *out (free()); returns
 * their number, or -1 with the reason in err. */
static int layout_page(lstm_state *st, const ocp_page_image *img, pline **out, char *err,
                       size_t errlen)
{
    TessBaseAPI *api = st->layout;
    *out = NULL;
    TessBaseAPISetImage(api, img->pixels, img->width, img->height, img->bands,
                        img->width * img->bands);
    if (img->dpi > 0)
        TessBaseAPISetSourceResolution(api, img->dpi);
    ocp_tess_unit *units = NULL;
    int nl = ocp__tess_layout_units(api, &units);
    /* The layout is all Tesseract gives here: its copies of the page go before our tensors
     * come (the worker's peak memory). */
    TessBaseAPIClear(api);
    if (nl < 0) {
        ocp_errf(OCP_E_ENGINE, err, errlen, "tesseract: layout analysis failed");
        return -1;
    }
    pline *lines = ocp_xcalloc((size_t)nl + 1, sizeof *lines);
    for (int i = 0; i < nl; i++)
        lines[i] = (pline){.img = img,
                           .b = {units[i].x1, units[i].y1, units[i].x2, units[i].y2},
                           .block = units[i].block,
                           .par = units[i].para,
                           .line = units[i].line};
    int *hs = ocp_xcalloc((size_t)nl + 1, sizeof *hs);
    for (int i = 0; i < nl; i++)
        hs[i] = lines[i].b.y2 - lines[i].b.y1;
    for (int i = 1; i < nl; i++) /* insertion sort: a page has tens of lines */
        for (int j = i; j > 0 && hs[j - 1] > hs[j]; j--) {
            int t = hs[j];
            hs[j] = hs[j - 1];
            hs[j - 1] = t;
        }
    int median = nl ? hs[nl / 2] : 0;
    free(hs);
    /* A box far lower than the page's usual one is a fragment (a rule, specks, a
     * Devanagari headline the layout split off): left out. */
    for (int i = 0; i < nl; i++) {
        if ((lines[i].b.y2 - lines[i].b.y1) * 5 < median * 2)
            lines[i].skip = 1;
        else
            crop_line(img, &units[i], &lines[i]);
    }
    free(units);
    *out = lines;
    return nl;
}

/* Fewer forward passes with several languages (issue 18). A line is read by the models in
 * order until one is sure of it, the surest reading kept; but "sure" (a mean best
 * probability of CONFIDENT) is rare: on clean 300 dpi pages no line of eng, san or a mix
 * reached 0.94, so every line went through every model. Hence, per page:
 *
 * - Which model reads a line first. A page's first SAMPLE_LINES readable lines are the
 *   sample: every model reads them in the user's order, as before. Each later line is read
 *   first by the model that won (gave the kept reading of) most of the K_NEAREST lines of
 *   its page already read that look most like it, then by the others in the order of their
 *   votes, then of their wins on the page, then in the user's order. What "looks like"
 *   means costs no forward pass: the share of ink in the inkiest row of the line's crop
 *   (pline.ink_row), high where a headline joins the letters (Devanagari's: 0.76 to 0.93 on
 *   bench/models.sh's pages) and low in Latin letters (0.49 to 0.60). No script is named
 *   here: the page's read lines say which model goes with which value.
 * - When the others are spared. The lines read by every model show how high a reading
 *   that lost can score on this page (san reading English lines: up to 0.85; eng reading
 *   Devanagari: up to 0.81; the winners 0.82 to 0.93). Once MIN_LOSING such readings are
 *   known, the first model's reading of a line whose K_NEAREST lines it all won, none
 *   further than NEAR in ink_row, is taken as sure when it scores BAR_MARGIN above the
 *   highest of them: the models after it do not read the line. Otherwise (a line unlike
 *   those its first model won, or below the bar) the line goes through the others as before
 *   and the surest reading is kept. A reading above every losing one of the page, on a
 *   line like those its model won, is the page's winner unless two models both read the
 *   line well (a number, a short word), where the one taken is the one tried first.
 *
 * Lines are read a chunk at a time so that each chunk learns from the ones before; a chunk
 * is read for every page of a batch at once, a model's lines of all pages sharing its
 * batches (the sample is a batch, a later chunk two). A page of up to SAMPLE_LINES lines
 * is read as before.
 *
 *   lines of a page:  | sample (user's order) | chunk 2 (by the sample) | chunk 3 (by both) ...
 */
#define SAMPLE_LINES 8
#define CHUNK_LINES  16
#define K_NEAREST    5
#define MIN_LOSING   8
#define BAR_MARGIN   0.02
#define NEAR         0.05

/* The index of model m in st, or -1. */
static int model_index(const lstm_state *st, const ocp_lstm_model *m)
{
    for (int i = 0; i < st->n_models; i++)
        if (st->model[i] == m)
            return i;
    return -1;
}

/* order[0..n_models): the models by votes, then by wins, then in the user's order (insertion
 * sort over at most MAX_MODELS). */
static void rank_models(const lstm_state *st, const int *votes, const int *won, int *order)
{
    for (int i = 0; i < st->n_models; i++)
        order[i] = i;
    for (int i = 1; i < st->n_models; i++)
        for (int j = i; j > 0; j--) {
            int a = order[j - 1], b = order[j];
            if (votes[b] < votes[a] || (votes[b] == votes[a] && won[b] <= won[a]))
                break;
            order[j - 1] = b;
            order[j] = a;
        }
}

/* Line i's order of models (order[0..n_models)) from the lines of [first, end) already read
 * (done[j], their winners win[j]): the K_NEAREST of them by ink_row vote; won: the page's
 * wins. Returns 1 when those K_NEAREST lines are all the first model's and all within NEAR
 * of the line (the bar may spare the others), else 0. */
static int line_order(const lstm_state *st, const pline *lines, int i, int first, int end,
                      const char *done, const int *win, const int *won, int *order)
{
    double best[K_NEAREST];
    int who[K_NEAREST], k = 0, votes[MAX_MODELS] = {0};
    for (int j = first; j < end; j++) {
        if (!done[j] || win[j] < 0)
            continue;
        double d = fabs(lines[j].ink_row - lines[i].ink_row);
        if (k == K_NEAREST && d >= best[k - 1])
            continue;
        int at = k < K_NEAREST ? k++ : k - 1;
        for (; at > 0 && best[at - 1] > d; at--) {
            best[at] = best[at - 1];
            who[at] = who[at - 1];
        }
        best[at] = d;
        who[at] = j;
    }
    for (int n = 0; n < k; n++)
        votes[win[who[n]]]++;
    rank_models(st, votes, won, order);
    return k == K_NEAREST && votes[order[0]] == K_NEAREST && best[k - 1] <= NEAR;
}

/* What read_all knows of a batch's lines as it goes: per line, whether it is in the chunk
 * being read, read already, its winner (a model index, or -1), its order of models and
 * line_order's answer; per page, its next line, its wins per model and its bar. */
typedef struct chunk_state {
    char *in_chunk, *done, *agree;
    int *win, *order, *next, *won;
    double *sure;
} chunk_state;

/* Marks the next chunk of every page (the sample first) and gives each of its lines its order
 * of models. Returns 0 when no page has a readable line left. */
static int next_chunk(const lstm_state *st, const pline *lines, const int *first, int np, int nl,
                      chunk_state *c)
{
    int any = 0;
    memset(c->in_chunk, 0, (size_t)nl + 1);
    for (int p = 0; p < np; p++) {
        int sample = c->next[p] == first[p];
        /* One model has no order to learn: all the page's lines in one chunk (one batch). */
        int size = st->n_models == 1 ? INT_MAX : sample ? SAMPLE_LINES : CHUNK_LINES;
        for (int k = 0; c->next[p] < first[p + 1] && k < size; c->next[p]++) {
            int i = c->next[p];
            if (lines[i].skip)
                continue;
            c->in_chunk[i] = 1;
            k++;
            any = 1;
            int *o = c->order + (size_t)i * MAX_MODELS;
            if (sample)
                for (int m = 0; m < st->n_models; m++)
                    o[m] = m;
            else
                c->agree[i] = (char)line_order(st, lines, i, first[p], first[p + 1], c->done,
                                               c->win, c->won + (size_t)p * MAX_MODELS, o);
        }
    }
    return any;
}

/* After a chunk: its lines' winners, and each page's bar from the losing readings of the
 * lines every model read, for the lines after it. */
static void learn_chunk(const lstm_state *st, const pline *lines, const int *first, int np,
                        chunk_state *c)
{
    for (int p = 0; p < np; p++) {
        int losing = 0;
        double ceiling = 0;
        for (int i = first[p]; i < first[p + 1]; i++) {
            if (c->in_chunk[i]) {
                c->done[i] = 1;
                c->win[i] = model_index(st, lines[i].m);
                if (c->win[i] >= 0)
                    c->won[(size_t)p * MAX_MODELS + c->win[i]]++;
            }
            if (!c->done[i] || lines[i].n_sc < st->n_models)
                continue;
            for (int k = 0; k < lines[i].n_sc; k++)
                if (lines[i].sm[k] != lines[i].m) {
                    losing++;
                    ceiling = lines[i].sc[k] > ceiling ? lines[i].sc[k] : ceiling;
                }
        }
        if (losing >= MIN_LOSING && ceiling + BAR_MARGIN < CONFIDENT)
            c->sure[p] = ceiling + BAR_MARGIN;
    }
}

/* Reads lines[0..nl) (np pages of a batch, page p the lines [first[p], first[p + 1])): chunk
 * by chunk, each line with the models in its order (see SAMPLE_LINES); in each round, each
 * model reads (in batches) the lines that have it at that place in their order and that no
 * model before was sure of. Counts the lines each model read in st->passes. */
static int read_all(lstm_state *st, pline *lines, int nl, const int *first, int np, double deadline,
                    char *err, size_t errlen)
{
    int rc = 0;
    int *idx = ocp_xcalloc((size_t)nl + 1, sizeof *idx);
    int *doubt = ocp_xcalloc((size_t)nl + 1, sizeof *doubt);
    int *page_of = ocp_xcalloc((size_t)nl + 1, sizeof *page_of);
    chunk_state c = {
        .in_chunk = ocp_xcalloc((size_t)nl + 1, 1),
        .done = ocp_xcalloc((size_t)nl + 1, 1),
        .agree = ocp_xcalloc((size_t)nl + 1, 1),
        .win = ocp_xcalloc((size_t)nl + 1, sizeof *c.win),
        .order = ocp_xcalloc(((size_t)nl + 1) * MAX_MODELS, sizeof *c.order),
        .next = ocp_xcalloc((size_t)np + 1, sizeof *c.next),
        .won = ocp_xcalloc(((size_t)np + 1) * MAX_MODELS, sizeof *c.won),
        .sure = ocp_xcalloc((size_t)np + 1, sizeof *c.sure),
    };
    for (int p = 0; p < np; p++) {
        c.next[p] = first[p];
        c.sure[p] = CONFIDENT;
        for (int i = first[p]; i < first[p + 1]; i++)
            page_of[i] = p;
    }
    while (!rc && next_chunk(st, lines, first, np, nl, &c)) {
        for (int r = 0; r < st->n_models && !rc; r++)
            for (int mi = 0; mi < st->n_models && !rc; mi++) {
                int n = 0, nd = 0;
                for (int i = 0; i < nl; i++)
                    if (c.in_chunk[i] && c.order[(size_t)i * MAX_MODELS + r] == mi &&
                        (!lines[i].m ||
                         lines[i].score < (c.agree[i] ? c.sure[page_of[i]] : CONFIDENT)))
                        idx[n++] = i;
                if (!n)
                    continue;
                st->passes[mi] += n;
                rc = read_lines(st->model[mi], st->name[mi], lines, idx, n, 0, deadline, err,
                                errlen);
                /* Light text on a dark ground, perhaps: doubtful lines are read inverted too,
                 * the surer reading kept (as Tesseract does below the same mean
                 * probability). */
                for (int k = 0; k < n && !rc; k++)
                    if (lines[idx[k]].m == st->model[mi] && lines[idx[k]].score < DOUBTFUL)
                        doubt[nd++] = idx[k];
                if (nd && !rc) {
                    st->passes[mi] += nd;
                    rc = read_lines(st->model[mi], st->name[mi], lines, doubt, nd, 1, deadline, err,
                                    errlen);
                }
            }
        learn_chunk(st, lines, first, np, &c);
    }
    free(idx);
    free(doubt);
    free(page_of);
    free(c.in_chunk);
    free(c.done);
    free(c.agree);
    free(c.win);
    free(c.order);
    free(c.next);
    free(c.won);
    free(c.sure);
    return rc;
}

/* One page's result from its read lines (freeing their readings). */
static void emit_page(pline *lines, int nl, ocp_result *res)
{
    ocp_sb text;
    ocp_sb_init(&text);
    double conf_sum = 0;
    int n_words = 0, last_block = 0;
    pline *group = ocp_xcalloc((size_t)nl + 1, sizeof *group);
    for (int i = 0; i < nl;) {
        /* The read combo words of one text line. */
        int ng = 0, j = i;
        for (; j < nl && lines[j].line == lines[i].line; j++)
            if (!lines[j].skip && lines[j].m)
                group[ng++] = lines[j];
        if (ng) {
            if (group[0].block != last_block && text.len)
                ocp_sb_putc(&text, '\n');
            last_block = group[0].block;
            emit_line(group, ng, res, &text, &conf_sum, &n_words);
        }
        for (; i < j; i++) {
            free(lines[i].chars);
            lines[i].chars = NULL;
        }
    }
    free(group);
    ocp_result_set(&res->text, text.buf ? text.buf : "");
    ocp_result_set(&res->engine, "lstm");
    res->mean_conf = n_words ? (float)(conf_sum / n_words) : 0;
    ocp_sb_fini(&text);
}

/* The pages of a batch: each laid out on its own, all their lines read together (the
 * forward passes take lines of several pages), each page's result made from its lines. */
static void lstm_ocr_batch(void *state, ocp_batch_page *pages, int n, const ocp_ocr_params *op)
{
    lstm_state *st = state;
    double t0 = ocp_now();
    int *first = ocp_xcalloc((size_t)n + 1, sizeof *first), nl = 0;
    pline *all = NULL;
    for (int i = 0; i < n; i++) {
        pline *lines = NULL;
        int k = layout_page(st, pages[i].img, &lines, pages[i].err, sizeof pages[i].err);
        first[i] = nl;
        if (k < 0) {
            pages[i].rc = OCP_E_ENGINE;
            continue;
        }
        all = ocp_xrealloc(all, ((size_t)nl + k + 1) * sizeof *all);
        if (k)
            memcpy(all + nl, lines, (size_t)k * sizeof *all);
        nl += k;
        free(lines);
    }
    first[n] = nl;
    double deadline = op->timeout_s > 0 ? t0 + op->timeout_s * n : 0;
    char err[512] = "";
    long before[MAX_MODELS];
    memcpy(before, st->passes, sizeof before);
    int rc = read_all(st, all, nl, first, n, deadline, err, sizeof err);
    if (ocp_log_level >= OCP_LOG_DEBUG) {
        /* What the model order saves is seen here: the lines each model read (the tests
         * and bench/models.sh count them). */
        ocp_sb sb;
        ocp_sb_init(&sb);
        int readable = 0;
        for (int i = 0; i < nl; i++)
            readable += !all[i].skip;
        for (int i = 0; i < st->n_models; i++) {
            char part[160];
            snprintf(part, sizeof part, " %s %ld", st->name[i], st->passes[i] - before[i]);
            ocp_sb_puts(&sb, part);
        }
        OCP_LOG(OCP_LOG_DEBUG, "lstm: %d line(s) on %d page(s), lines read per model:%s", readable,
                n, sb.buf ? sb.buf : "");
        ocp_sb_fini(&sb);
    }
    if (rc == OCP_E_TIMEOUT)
        snprintf(err, sizeof err, "page timeout: OCR stopped after %.1f s (page-timeout %g s%s)",
                 ocp_now() - t0, op->timeout_s, n > 1 ? " a page, pages read together" : "");
    for (int i = 0; i < n; i++) {
        if (pages[i].rc)
            continue;
        emit_page(all + first[i], first[i + 1] - first[i], pages[i].res);
        if (rc) {
            pages[i].rc = rc;
            snprintf(pages[i].err, sizeof pages[i].err, "%s", err);
        }
    }
    for (int i = 0; i < nl; i++)
        free(all[i].chars);
    free(all);
    free(first);
    for (int i = 0; i < st->n_models; i++)
        ocp_lstm_model_drop_pages(st->model[i]);
}

static int lstm_ocr(void *state, const ocp_page_image *img, const ocp_ocr_params *op,
                    ocp_result *res, char *err, size_t errlen)
{
    ocp_batch_page one = {.img = img, .res = res};
    lstm_ocr_batch(state, &one, 1, op);
    if (one.rc)
        snprintf(err, errlen, "%s", one.err);
    return one.rc;
}

const ocp_engine_ops ocp_engine_lstm = {
    .name = "lstm",
    .features = OCP_FEAT_GPU, /* its network runs on a GPU in the shared recognizer */
    .open = lstm_open,
    .ocr = lstm_ocr,
    .ocr_batch = lstm_ocr_batch,
    .close = lstm_close,
};
