/*
 * lstm_line MODEL IMAGE [STEPS]: our recognizer (src/engine/lstm) on IMAGE read as one text
 * line: prints three readings, one a line: the beam search without the model's dictionaries,
 * with them, and the greedy best path. With STEPS (tess_timesteps's output for the same
 * image), also compares, step by step, libtesseract's listed probabilities with ours (both
 * sorted, so the two sides' symbol names need not agree) and prints the largest difference;
 * exits 1 when it is over 1e-5 or the step counts differ.
 */
#include "engine/lstm/beam.h"
#include "engine/lstm/forward.h"

#include <leptonica/allheaders.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Each step's three likeliest classes, to stderr (LSTM_LINE_DUMP). */
static void dump_steps(const ocp_lstm_model *m, const float *probs, int steps)
{
    for (int t = 0; t < steps; t++) {
        const float *q = probs + (size_t)t * m->classes;
        int b[3] = {-1, -1, -1};
        for (int k = 0; k < m->classes; k++)
            for (int i = 0; i < 3; i++)
                if (b[i] < 0 || q[k] > q[b[i]]) {
                    for (int j = 2; j > i; j--)
                        b[j] = b[j - 1];
                    b[i] = k;
                    break;
                }
        fprintf(stderr, "%d", t);
        for (int i = 0; i < 3; i++) {
            int id = m->code_uni[b[i]];
            const char *name = b[i] == m->null_char ? "_" : id >= 0 ? m->unicharset.text[id] : "?";
            fprintf(stderr, "\t%s %.4f", name, q[b[i]]);
        }
        fprintf(stderr, "\n");
    }
}

/* Compares our steps with tess_timesteps's output in path (see the top): 0 when they agree,
 * 1 when not, 2 when the file cannot be read. */
static int compare_steps(const ocp_lstm_model *m, const float *probs, int steps, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 2;
    char line[65536];
    int t = 0, n = 0, first = -1;
    double maxd = 0;
    float *mine = malloc(sizeof(float) * (size_t)m->classes);
    while (fgets(line, sizeof line, f)) {
        float tp[64];
        int k = 0;
        char *save = NULL;
        for (char *tok = strtok_r(line, "\t\n", &save); tok && k < 64;
             tok = strtok_r(NULL, "\t\n", &save)) {
            char *us = strchr(tok, '\x1f');
            if (us)
                tp[k++] = (float)atof(us + 1);
        }
        if (t < steps) {
            qsort(tp, (size_t)k, sizeof *tp, desc);
            memcpy(mine, probs + (size_t)t * m->classes, sizeof(float) * (size_t)m->classes);
            qsort(mine, (size_t)m->classes, sizeof *mine, desc);
            for (int i = 0; i < k; i++) {
                double d = fabs(tp[i] - mine[i]);
                if (d > maxd)
                    maxd = d;
                if (d > 1e-5 && first < 0)
                    first = t;
                n++;
            }
        }
        t++;
    }
    fclose(f);
    free(mine);
    fprintf(stderr,
            "steps: ours %d, libtesseract %d; %d probabilities compared, first step over "
            "1e-5 %d, max |diff| %.3g\n",
            steps, t, n, first, maxd);
    return t != steps || n == 0 || maxd > 1e-5;
}

/* The image at path as 8-bit grey (malloc), or NULL. */
static unsigned char *read_grey(const char *path, int *w, int *h)
{
    PIX *p = pixRead(path);
    PIX *g = p ? pixConvertTo8(p, 0) : NULL;
    pixDestroy(&p);
    if (!g)
        return NULL;
    *w = pixGetWidth(g);
    *h = pixGetHeight(g);
    unsigned char *grey = malloc((size_t)*w * *h);
    for (int y = 0; y < *h; y++)
        for (int x = 0; x < *w; x++) {
            l_uint32 v;
            pixGetPixel(g, x, y, &v);
            grey[(size_t)y * *w + x] = (unsigned char)v;
        }
    pixDestroy(&g);
    return grey;
}

int main(int argc, char **argv)
{
    char err[400];
    ocp_lstm_model *m = NULL;
    if (argc < 3) {
        fprintf(stderr, "usage: lstm_line MODEL IMAGE [STEPS]\n");
        return 2;
    }
    if (ocp_lstm_model_load(argv[1], &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int w = 0, h = 0;
    unsigned char *grey = read_grey(argv[2], &w, &h);
    if (!grey) {
        fprintf(stderr, "%s: cannot read\n", argv[2]);
        return 2;
    }
    int8_t *img = NULL;
    int ow = 0, steps = 0;
    float *probs = NULL;
    if (ocp_lstm_prepare_line(m, grey, w, h, w, 1, 0, &img, &ow, err, sizeof err) ||
        ocp_lstm_forward(m, img, ow, &probs, &steps, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    ocp_lstm_char *gchars = NULL;
    int gn = 0;
    ocp_lstm_greedy_chars(m, probs, steps, &gchars, &gn);
    char *text = ocp_lstm_chars_text(gchars, gn);
    free(gchars);
    if (getenv("LSTM_LINE_DUMP"))
        dump_steps(m, probs, steps);
    for (int dict = 0; dict < 2; dict++) {
        ocp_lstm_char *chars = NULL;
        int n = 0;
        ocp_lstm_beam(m, probs, steps, dict, &chars, &n);
        char *t = ocp_lstm_chars_text(chars, n);
        printf("%s\n", t);
        free(t);
        free(chars);
    }
    printf("%s\n", text);
    int rc = argc > 3 ? compare_steps(m, probs, steps, argv[3]) : 0;
    free(text);
    free(probs);
    free(img);
    free(grey);
    ocp_lstm_model_free(m);
    return rc;
}
