/*
 * forward.c: the int8 forward pass (forward.h): the tensors, the layers and the walk of the
 * network's tree over a batch of lines. The products and element-wise loops it calls are
 * the kernels of kernels.c (kernels.h); the line preparation before it is in line.c.
 */
#include "engine/lstm/forward.h"
#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensors -------------------------------------------------------------------------- */

/* h rows x w columns x d features, int8, row-major. */
typedef struct tens {
    int h, w, d;
    int8_t *v;
} tens;

static int8_t *at(const tens *t, int y, int x)
{
    return t->v + ((size_t)y * t->w + x) * t->d;
}

static void tens_new(tens *t, int h, int w, int d)
{
    t->h = h;
    t->w = w;
    t->d = d;
    t->v = ocp_xcalloc((size_t)h * w * d + OCP_LSTM_PAD, 1);
}

static void tens_replace(tens *t, tens *n)
{
    free(t->v);
    *t = *n;
}

static void transpose(tens *t)
{
    tens n;
    tens_new(&n, t->w, t->h, t->d);
    for (int y = 0; y < t->h; y++)
        for (int x = 0; x < t->w; x++)
            memcpy(at(&n, x, y), at(t, y, x), (size_t)t->d);
    tens_replace(t, &n);
}

static void reverse_x(tens *t)
{
    int8_t *tmp = ocp_xmalloc((size_t)t->d + 1);
    for (int y = 0; y < t->h; y++) {
        for (int a = 0, b = t->w - 1; a < b; a++, b--) {
            memcpy(tmp, at(t, y, a), (size_t)t->d);
            memcpy(at(t, y, a), at(t, y, b), (size_t)t->d);
            memcpy(at(t, y, b), tmp, (size_t)t->d);
        }
    }
    free(tmp);
}

static void reverse_y(tens *t)
{
    transpose(t);
    reverse_x(t);
    transpose(t);
}

/* ---- the run --------------------------------------------------------------------------
 * A batch of lines goes through the tree together: each node takes every line's tensor.
 * Convolution, pooling and the transforms work line by line (the borders' pseudo-random
 * values are drawn per line); the fully connected layers take every position of a line in
 * one product; the LSTMs run time-major over the sequences of all lines at once (every row
 * of every line), longest first, so that the sequences still running at a step are the
 * first k: one product of k vectors per gate and step. The arithmetic of each sequence is
 * the one-line arithmetic, so a batch gives every line's outputs bit for bit. */

typedef struct line_ctx {
    uint64_t rng; /* minstd_rand state */
    float *probs; /* the softmax output */
    int steps;
} line_ctx;

typedef struct run_ctx {
    int n;
    tens *t;        /* n tensors, one a line */
    line_ctx *line; /* n */
    char *err;
    size_t errlen;
} run_ctx;

static uint32_t minstd(line_ctx *c)
{
    c->rng = c->rng * 48271u % 2147483647u;
    return (uint32_t)c->rng;
}

/* A pseudo-random int8 for a neighbour outside the image. */
static int8_t border_value(line_ctx *c)
{
    double r = (double)minstd(c);
    return (int8_t)ocp__lstm_round_away(127.0 * 2.0 * r / 2147483647.0 - 127.0);
}

static int run(const ocp_lstm_node *n, run_ctx *c);

static void convolve(const ocp_lstm_node *n, tens *t, line_ctx *c)
{
    int kx = 2 * n->half_x + 1, ky = 2 * n->half_y + 1;
    tens o;
    tens_new(&o, t->h, t->w, t->d * kx * ky);
    /* In locals: a store through an int8_t pointer may alias any field. */
    const int hx = n->half_x, hy = n->half_y, th = t->h, tw = t->w;
    const int8_t *tv = t->v;
    for (int y = 0; y < th; y++) {
        for (int x = 0; x < tw; x++) {
            int8_t *dst = at(&o, y, x);
            if (t->d == 1 && y >= hy && y < th - hy && x >= hx && x < tw - hx) {
                /* Inside the image (most pixels): no border value to draw. */
                for (int dx = -hx; dx <= hx; dx++)
                    for (int dy = -hy; dy <= hy; dy++)
                        dst[(dx + hx) * ky + dy + hy] = tv[(size_t)(y + dy) * tw + x + dx];
                continue;
            }
            for (int dx = -n->half_x; dx <= n->half_x; dx++) {
                for (int dy = -n->half_y; dy <= n->half_y; dy++) {
                    int8_t *d = dst + ((dx + n->half_x) * ky + (dy + n->half_y)) * t->d;
                    int yy = y + dy, xx = x + dx;
                    if (yy >= 0 && yy < t->h && xx >= 0 && xx < t->w) {
                        memcpy(d, at(t, yy, xx), (size_t)t->d);
                    } else
                        for (int k = 0; k < t->d; k++)
                            d[k] = border_value(c);
                }
            }
        }
    }
    tens_replace(t, &o);
}

/* The max over each cell's values: written as a select so that the compiler vectorizes it
 * (a conditional store it would not; the max is exact, the bits the same). */
__attribute__((target_clones("avx2", "default"), optimize("O3"))) static void
maxpool(const ocp_lstm_node *n, tens *t)
{
    tens o;
    tens_new(&o, t->h / n->y_scale, t->w / n->x_scale, t->d);
    /* Bounds in locals: a store through an int8_t pointer may alias any field. */
    const int d = t->d, oh = o.h, ow = o.w, ys = n->y_scale, xs = n->x_scale;
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int8_t *restrict dst = at(&o, y, x);
            memcpy(dst, at(t, y * ys, x * xs), (size_t)d);
            for (int j = 0; j < ys; j++)
                for (int i = 0; i < xs; i++) {
                    const int8_t *restrict v = at(t, y * ys + j, x * xs + i);
                    for (int k = 0; k < d; k++)
                        dst[k] = v[k] > dst[k] ? v[k] : dst[k];
                }
        }
    }
    tens_replace(t, &o);
}

static int fully_connected(const ocp_lstm_node *n, tens *t, line_ctx *c, char *err, size_t errlen)
{
    int softmax = strncmp(n->type, "Softmax", 7) == 0;
    /* The activation, named once here rather than at every element. */
    int act = strcmp(n->type, "Tanh") == 0       ? 1
              : strcmp(n->type, "Logistic") == 0 ? 2
              : strcmp(n->type, "Relu") == 0     ? 3
                                                 : 0;
    if (t->d != n->ni)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "%s: %d inputs where %d are expected", n->name,
                        t->d, n->ni);
    if (softmax && t->h != 1)
        return ocp_errf(OCP_E_ENGINE, err, errlen,
                        "softmax over %d rows: the network did not collapse the height", t->h);
    size_t np = (size_t)t->h * t->w;
    tens o;
    tens_new(&o, t->h, t->w, n->no);
    if (!softmax) {
        /* A few thousand positions a product: the floats stay small and in cache. */
        size_t chunk = 65536 / (size_t)n->no + 1;
        float *acc = ocp_xmalloc(chunk * n->no * sizeof *acc);
        for (size_t q0 = 0; q0 < np; q0 += chunk) {
            size_t k = np - q0 < chunk ? np - q0 : chunk;
            ocp_lstm_matmul(&n->fc, t->v + q0 * t->d, (int)k, (size_t)t->d, acc);
            ocp__lstm_kernels_now()->activate(act, acc, o.v + q0 * n->no, (int)(k * n->no));
        }
        free(acc);
        tens_replace(t, &o);
        return 0;
    }
    /* The softmax: products straight into the line's probabilities, normalised in place. */
    free(c->probs);
    c->probs = ocp_xmalloc((np ? np : 1) * n->no * sizeof *c->probs);
    c->steps = t->w;
    ocp_lstm_matmul(&n->fc, t->v, (int)np, (size_t)t->d, c->probs);
    for (size_t q = 0; q < np; q++) {
        float *p = c->probs + q * n->no;
        int8_t *dst = o.v + q * n->no;
        float mx = p[0], sum = 0;
        for (int k = 1; k < n->no; k++)
            if (p[k] > mx)
                mx = p[k];
        for (int k = 0; k < n->no; k++) {
            float d = p[k] - mx;
            p[k] = expf(d < -86.0f ? -86.0f : d);
            sum += p[k];
        }
        for (int k = 0; k < n->no; k++) {
            p[k] /= sum;
            dst[k] = ocp__lstm_quantise(p[k]);
        }
    }
    tens_replace(t, &o);
    return 0;
}

/* One sequence of an LSTM's batch: row y of line `line`, len steps. */
typedef struct seq {
    int line, y, len;
} seq;

static int by_len_desc(const void *a, const void *b)
{
    const seq *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? 1 : -1;
    return x->line != y->line ? (x->line < y->line ? -1 : 1) : (x->y < y->y ? -1 : 1);
}

/* 1-D LSTMs along x of every row of every line, state reset per row; a summarising one keeps
 * only the last step of each row. */
static int lstm(const ocp_lstm_node *n, run_ctx *c)
{
    if (n->two_d)
        return ocp_errf(OCP_E_ENGINE, c->err, c->errlen,
                        "%s: 2-D LSTMs are not supported yet (Debian's models have none)", n->name);
    const ocp__lstm_kernels *kern = ocp__lstm_kernels_now();
    int ns = n->no, nq = 0, maxlen = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->t[i].d != n->ni)
            return ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "%s: %d inputs where %d are expected",
                            n->name, c->t[i].d, n->ni);
        nq += c->t[i].h;
    }
    seq *q = ocp_xmalloc(((size_t)nq + 1) * sizeof *q);
    nq = 0;
    for (int i = 0; i < c->n; i++)
        for (int y = 0; y < c->t[i].h; y++) {
            q[nq++] = (seq){i, y, c->t[i].w};
            if (c->t[i].w > maxlen)
                maxlen = c->t[i].w;
        }
    qsort(q, (size_t)nq, sizeof *q, by_len_desc);
    tens *o = ocp_xcalloc((size_t)c->n + 1, sizeof *o);
    for (int i = 0; i < c->n; i++)
        tens_new(&o[i], c->t[i].h, n->summarise ? 1 : c->t[i].w, ns);
    /* Time-major: at each step, row k of src is sequence k's [x_t, h_{t-1}]. */
    size_t stride = ((size_t)n->na + 3) / 4 * 4;
    int8_t *src = ocp_xcalloc((size_t)nq * stride + OCP_LSTM_PAD, 1);
    int8_t *h = ocp_xcalloc((size_t)nq * ns + 1, 1);
    float *cell = ocp_xcalloc((size_t)nq * ns + 1, sizeof *cell);
    float *g[4];
    for (int i = 0; i < 4; i++)
        g[i] = ocp_xmalloc(((size_t)nq * ns + 1) * sizeof **g);
    int k = nq;
    for (int x = 0; x < maxlen; x++) {
        while (k > 0 && q[k - 1].len <= x)
            k--; /* the sequences that have ended */
        for (int s = 0; s < k; s++) {
            int8_t *row = src + (size_t)s * stride;
            memcpy(row, at(&c->t[q[s].line], q[s].y, x), (size_t)n->ni);
            memcpy(row + n->ni, h + (size_t)s * ns, (size_t)ns);
        }
        for (int i = 0; i < 4; i++)
            ocp_lstm_matmul(&n->gate[i], src, k, stride, g[i]);
        for (int s = 0; s < k; s++) {
            const seq *sq = &q[s];
            int8_t *hs = h + (size_t)s * ns;
            float *cs = cell + (size_t)s * ns;
            const float *g0 = g[0] + (size_t)s * ns, *g1 = g[1] + (size_t)s * ns;
            const float *g2 = g[2] + (size_t)s * ns, *g3 = g[3] + (size_t)s * ns;
            int last = x == sq->len - 1;
            int8_t *dst = n->summarise ? (last ? at(&o[sq->line], sq->y, 0) : NULL)
                                       : at(&o[sq->line], sq->y, x);
            kern->cell(ns, g0, g1, g2, g3, cs, hs);
            if (dst)
                memcpy(dst, hs, (size_t)ns);
        }
    }
    for (int i = 0; i < c->n; i++)
        tens_replace(&c->t[i], &o[i]);
    free(o);
    free(q);
    free(src);
    free(h);
    free(cell);
    for (int i = 0; i < 4; i++)
        free(g[i]);
    return 0;
}

static int run(const ocp_lstm_node *n, run_ctx *c)
{
    int rc = 0;
    switch (n->kind) {
    case OCP_LSTM_INPUT:
        for (int i = 0; i < c->n; i++)
            if (c->t[i].d != (n->shape[3] > 0 ? n->shape[3] : 1))
                return ocp_errf(OCP_E_ENGINE, c->err, c->errlen,
                                "input depth %d, the model wants %d", c->t[i].d, n->shape[3]);
        return 0;
    case OCP_LSTM_SERIES:
        for (int i = 0; i < n->n_children && !rc; i++)
            rc = run(&n->children[i], c);
        return rc;
    case OCP_LSTM_WRAP: {
        void (*f)(tens *) = strcmp(n->type, "XYTranspose") == 0   ? transpose
                            : strcmp(n->type, "RTLReversed") == 0 ? reverse_x
                            : strcmp(n->type, "TTBReversed") == 0 ? reverse_y
                                                                  : NULL;
        if (!f)
            return ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "%s: not supported yet", n->type);
        for (int i = 0; i < c->n; i++)
            f(&c->t[i]);
        rc = run(&n->children[0], c);
        for (int i = 0; i < c->n; i++)
            f(&c->t[i]);
        return rc;
    }
    case OCP_LSTM_CONVOLVE:
        for (int i = 0; i < c->n; i++)
            convolve(n, &c->t[i], &c->line[i]);
        return 0;
    case OCP_LSTM_MAXPOOL:
        for (int i = 0; i < c->n; i++)
            maxpool(n, &c->t[i]);
        return 0;
    case OCP_LSTM_FC:
        for (int i = 0; i < c->n && !rc; i++)
            rc = fully_connected(n, &c->t[i], &c->line[i], c->err, c->errlen);
        return rc;
    case OCP_LSTM_LSTM:
        return lstm(n, c);
    case OCP_LSTM_PARALLEL:
        break;
    }
    return ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "%s: not supported yet", n->type);
}

double ocp_lstm_line_bytes(const ocp_lstm_model *m, double columns)
{
    double per_column, fixed;
    char err[8];
    if (ocp__lstm_line_cost(m, &per_column, &fixed, err, sizeof err))
        return -1;
    return per_column * columns + fixed;
}

int ocp_lstm_line_fits(const ocp_lstm_model *m, double columns, char *err, size_t errlen)
{
    double per_column, fixed;
    int rc = ocp__lstm_line_cost(m, &per_column, &fixed, err, errlen);
    if (rc)
        return rc;
    if (columns > 100000)
        return ocp_errf(OCP_E_RANGE, err, errlen, "a line of %.0f columns: 100000 at most",
                        columns);
    double bytes = per_column * columns + fixed;
    if (bytes > OCP_LSTM_LINE_BYTES)
        return ocp_errf(OCP_E_RANGE, err, errlen,
                        "a line of %.0f columns would take %.1f MB for this model, more than "
                        "%d MB (%.0f bytes a column)",
                        columns, bytes / (1 << 20), OCP_LSTM_LINE_BYTES >> 20, per_column);
    return 0;
}

int ocp_lstm_forward_batch(const ocp_lstm_model *m, int n, const int8_t *const *img, const int *w,
                           float **probs, int *steps, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        probs[i] = NULL;
        steps[i] = 0;
    }
    if (n < 1)
        return 0;
    for (int i = 0; i < n; i++) {
        if (w[i] < 1)
            return ocp_errf(OCP_E_RANGE, err, errlen, "line %d: width %d", i, w[i]);
        char why[240];
        int rc = ocp_lstm_line_fits(m, w[i], why, sizeof why);
        if (rc)
            return ocp_errf(rc, err, errlen, "line %d: %s", i, why);
    }
    double bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += ocp_lstm_line_bytes(m, w[i]);
    if (bytes > OCP_LSTM_LINE_BYTES)
        return ocp_errf(OCP_E_RANGE, err, errlen,
                        "%d lines together would take %.1f MB, more than %d MB: fewer at a time", n,
                        bytes / (1 << 20), OCP_LSTM_LINE_BYTES >> 20);
    run_ctx c = {.n = n, .err = err, .errlen = errlen};
    c.t = ocp_xcalloc((size_t)n, sizeof *c.t);
    c.line = ocp_xcalloc((size_t)n, sizeof *c.line);
    /* minstd_rand seeded per line with sample_iteration x 0x10000001, one draw discarded. */
    uint64_t seed = ((uint64_t)(uint32_t)m->sample_iteration * 0x10000001ULL) % 2147483647u;
    for (int i = 0; i < n; i++) {
        tens_new(&c.t[i], m->input_height, w[i], 1);
        memcpy(c.t[i].v, img[i], (size_t)m->input_height * w[i]);
        c.line[i].rng = seed ? seed : 1;
        minstd(&c.line[i]);
    }
    int rc = run(&m->net, &c);
    for (int i = 0; i < n; i++) {
        free(c.t[i].v);
        if (!rc && !c.line[i].probs)
            rc = ocp_errf(OCP_E_ENGINE, err, errlen, "the network does not end in a softmax");
    }
    for (int i = 0; i < n; i++) {
        if (rc) {
            free(c.line[i].probs);
            continue;
        }
        probs[i] = c.line[i].probs;
        steps[i] = c.line[i].steps;
    }
    free(c.t);
    free(c.line);
    return rc;
}

int ocp_lstm_forward(const ocp_lstm_model *m, const int8_t *img, int w, float **probs, int *steps,
                     char *err, size_t errlen)
{
    return ocp_lstm_forward_batch(m, 1, &img, &w, probs, steps, err, errlen);
}
