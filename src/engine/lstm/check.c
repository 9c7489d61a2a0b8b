/*
 * check.c: a model's sizes checked against each other before anything runs
 * (ocp__lstm_model_check in model.h). The reader (model.c) checks each size
 * against the bytes left in the file; this pass checks that they agree:
 *
 *   Input       ni = the input height, no = its depth (1: the lines fed are grey)
 *   Series      child 0 takes the series' ni, child k takes child k-1's no, the
 *               last child's no is the series' no
 *   XYTranspose, RTLReversed, TTBReversed: the child's ni and no are the node's
 *               (Parallel and Reversed, which the forward pass cannot run, are refused)
 *   Convolve    no = ni x (2 half_x + 1) x (2 half_y + 1)
 *   Maxpool     no = ni, and the fixed side it pools keeps at least one row
 *   Tanh, ..., Softmax: the matrix is no x (ni + 1)
 *   LSTM        na = ni + no, four no x (na + 1) gates (a 2-D LSTM is refused:
 *               the forward pass has none)
 *   every node  its num_weights is the sum of its matrices' sizes
 *   the network its Input comes first and only there, its Softmax last, with
 *               the height collapsed to 1 row; the classes (the network's no) are
 *               the softmax's outputs and the recoder's code range (the largest
 *               code or the null, plus one)
 *   the unicharset and the recoder have one entry per unichar, entry 0 is the
 *               space; every code is a class
 *
 * It also bounds what the forward pass allocates per column of a line: no layer
 * holds more than MAX_COLUMN values for one column, and the classes are at most
 * OCP_LSTM_MAX_CLASSES. The same walk sums what a line costs (ocp__lstm_line_cost): the
 * bytes held per column of the line at the layer that holds the most (its int8 tensors in
 * and out, an LSTM's state and gates, the softmax's float probabilities and the decoder's
 * per-step work), and what a line holds whatever its width; forward.c refuses a line whose
 * total is over OCP_LSTM_LINE_BYTES before it allocates anything for it.
 */
#include "engine/lstm/model.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_COLUMN 16384 /* values of one layer for one column of the line (eng: 576) */
#define VAR        -1    /* a side that follows the line's width */
/* What the decoder keeps per step besides the probabilities: the kept paths' records of 12
 * bytes (beam.c compacts the arena to those when it has doubled: 4 times, with the room its
 * growth leaves), the best path's class and probability, its character. */
#define HEAPS_X_WIDTH 30 /* beam.c's HEAPS x WIDTH */
#define BEAM_STEP     (HEAPS_X_WIDTH * 12 * 4 + 8 + 32)
#define BEAM_FIXED    (4 << 20) /* per line: the records between compactions, the tables */

/* What flows from one layer to the next: rows, columns (VAR: as long as the line) and
 * values per position. */
typedef struct flow {
    int h, w, d;
    double div; /* columns of the line per column here (the pooling along the line so far) */
} flow;

typedef struct ck {
    int leaves;                   /* leaves walked so far */
    const ocp_lstm_node *softmax; /* the softmax, once walked */
    double per_column;            /* bytes a layer holds per column of the line, the most */
    double fixed;                 /* and per line whatever its width, the most */
    char *err;
    size_t errlen;
} ck;

static int bad(ck *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(ck *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return OCP_E_FORMAT;
}

static int check_node(const ocp_lstm_node *n, flow *f, ck *c);

/* The weights a node's file says it has (num_weights) against its matrices. */
static long matrix_size(const ocp_lstm_matrix *m)
{
    return (long)m->rows * m->cols;
}

static int check_weights(const ocp_lstm_node *n, ck *c)
{
    long have = matrix_size(&n->fc);
    for (int g = 0; g < 5; g++)
        have += matrix_size(&n->gate[g]);
    for (int i = 0; i < n->n_children; i++)
        have += n->children[i].num_weights;
    if (have != n->num_weights)
        return bad(c, "layer '%s' (%s) says it has %ld weights, its %s hold %ld", n->name, n->type,
                   n->num_weights, n->n_children ? "layers" : "matrices", have);
    return 0;
}

static int check_series(const ocp_lstm_node *n, flow *f, ck *c)
{
    for (int i = 0; i < n->n_children; i++) {
        const ocp_lstm_node *k = &n->children[i];
        int takes = i == 0 ? n->ni : n->children[i - 1].no;
        if (k->ni != takes)
            return i == 0 ? bad(c, "layer '%s' (%s) takes %d inputs, its series '%s' takes %d",
                                k->name, k->type, k->ni, n->name, takes)
                          : bad(c, "layer '%s' (%s) outputs %d, the next layer '%s' (%s) takes %d",
                                n->children[i - 1].name, n->children[i - 1].type, takes, k->name,
                                k->type, k->ni);
        if (check_node(k, f, c))
            return OCP_E_FORMAT;
    }
    const ocp_lstm_node *last = &n->children[n->n_children - 1];
    if (last->no != n->no)
        return bad(c, "layer '%s' (%s) outputs %d, its series '%s' says it outputs %d", last->name,
                   last->type, last->no, n->name, n->no);
    return 0;
}

static void swap_sides(flow *f)
{
    int t = f->h;
    f->h = f->w;
    f->w = t;
}

/* The positions of a layer's tensor per column of its own: the side that does not follow
 * the line (1 when it has been summarised away). */
static double fixed_side(const flow *f)
{
    return f->h == VAR ? (f->w == VAR ? 1 : f->w) : f->h;
}

/* Keeps the most a layer holds: col bytes per column of the layer (so col / div per column
 * of the line), fix bytes per line whatever its width. */
static void hold(ck *c, const flow *f, double col, double fix)
{
    if (col / f->div > c->per_column)
        c->per_column = col / f->div;
    if (fix > c->fixed)
        c->fixed = fix;
}

static int check_wrap(const ocp_lstm_node *n, flow *f, ck *c)
{
    int xy = strcmp(n->type, "XYTranspose") == 0;
    if (!xy && strcmp(n->type, "RTLReversed") != 0 && strcmp(n->type, "TTBReversed") != 0)
        return bad(c, "layer '%s': %s is not supported", n->name, n->type);
    const ocp_lstm_node *k = &n->children[0];
    if (k->ni != n->ni || k->no != n->no)
        return bad(c, "layer '%s' (%s) maps %d to %d, inside '%s' (%s) that maps %d to %d", k->name,
                   k->type, k->ni, k->no, n->name, n->type, n->ni, n->no);
    /* The transforms copy the tensor: both held for a moment. */
    hold(c, f, 2 * fixed_side(f) * f->d, 0);
    if (xy)
        swap_sides(f);
    if (check_node(k, f, c))
        return OCP_E_FORMAT;
    if (xy)
        swap_sides(f);
    return 0;
}

/* What a leaf holds for a line while it runs: its input and output tensors (int8), an
 * LSTM's sequences (the [x, h] row, h, the cell and four gates in float; one a row, so per
 * column when the rows follow the line), a fully connected layer's float products (a
 * bounded chunk) or the softmax's probabilities and the decoder's work per step. */
static void leaf_cost(const ocp_lstm_node *n, const flow *in, const flow *out, ck *c)
{
    double col = fixed_side(in) * in->d + fixed_side(out) * out->d, fix = 0;
    if (n->kind == OCP_LSTM_LSTM) {
        double seq = (double)((n->na + 3) / 4 * 4) + 21.0 * n->no + 12;
        if (in->h == VAR)
            col += seq;
        else
            fix += in->h * seq;
    } else if (n->kind == OCP_LSTM_FC) {
        if (c->softmax == n) {
            col += 4.0 * n->no + BEAM_STEP;
            fix += BEAM_FIXED;
        } else
            fix += (65536.0 + n->no) * 4;
    }
    hold(c, in, col, fix);
}

/* Rows or columns after pooling by s: a fixed side must keep one. */
static int pool_side(int side, int s)
{
    return side == VAR ? VAR : side / s;
}

static int check_matrix(const ocp_lstm_node *n, const ocp_lstm_matrix *m, int rows, int cols, ck *c)
{
    if (m->rows != rows || m->cols != cols || !m->w || !m->scales)
        return bad(c, "layer '%s' (%s): a %d x %d weight matrix where %d x %d fits", n->name,
                   n->type, m->rows, m->cols, rows, cols);
    return 0;
}

static int check_lstm(const ocp_lstm_node *n, flow *f, ck *c)
{
    if (n->two_d)
        return bad(c, "layer '%s' (%s): a 2-D LSTM, not supported", n->name, n->type);
    if (n->na != n->ni + n->no)
        return bad(c, "layer '%s' (%s): %d gate inputs for %d inputs and %d outputs", n->name,
                   n->type, n->na, n->ni, n->no);
    for (int g = 0; g < 4; g++)
        if (check_matrix(n, &n->gate[g], n->no, n->na + 1, c))
            return OCP_E_FORMAT;
    if (n->summarise)
        f->w = 1;
    return 0;
}

/* The first leaf: the line as the engine feeds it (grey, the model's height). */
static int check_input(const ocp_lstm_node *n, flow *f, ck *c)
{
    if (c->leaves != 0)
        return bad(c, "layer '%s': an Input inside the network", n->name);
    int height = n->shape[1], depth = n->shape[3];
    if (height < 1 || height > OCP_LSTM_MAX_HEIGHT)
        return bad(c, "the input is %d rows high: 1 to %d are supported", height,
                   OCP_LSTM_MAX_HEIGHT);
    if (depth != 1)
        return bad(c, "the input has depth %d: the lines fed are grey (depth 1)", depth);
    if (n->ni != height || n->no != depth)
        return bad(c, "the Input takes %d and outputs %d, its shape says %d rows of depth %d",
                   n->ni, n->no, height, depth);
    *f = (flow){height, VAR, depth, 1};
    return 0;
}

static int check_leaf(const ocp_lstm_node *n, flow *f, ck *c)
{
    if (c->softmax)
        return bad(c, "layer '%s' (%s) comes after the softmax '%s'", n->name, n->type,
                   c->softmax->name);
    if (n->kind == OCP_LSTM_INPUT)
        return check_input(n, f, c);
    if (c->leaves == 0)
        return bad(c, "the network starts with '%s' (%s), not an Input", n->name, n->type);
    if (f->d != n->ni)
        return bad(c, "layer '%s' (%s) takes %d inputs, the layer before it outputs %d", n->name,
                   n->type, n->ni, f->d);
    flow in = *f;
    switch (n->kind) {
    case OCP_LSTM_CONVOLVE: {
        long want = (long)n->ni * (2 * n->half_x + 1) * (2 * n->half_y + 1);
        if (n->no != want)
            return bad(c, "layer '%s' (Convolve %dx%d) outputs %d, where %d inputs make %ld",
                       n->name, 2 * n->half_x + 1, 2 * n->half_y + 1, n->no, n->ni, want);
        break;
    }
    case OCP_LSTM_MAXPOOL:
        if (n->no != n->ni)
            return bad(c, "layer '%s' (Maxpool) takes %d and outputs %d", n->name, n->ni, n->no);
        f->div *= f->w == VAR ? n->x_scale : n->y_scale;
        f->h = pool_side(f->h, n->y_scale);
        f->w = pool_side(f->w, n->x_scale);
        if (f->h == 0 || f->w == 0)
            return bad(c, "layer '%s' (Maxpool %dx%d) pools the line to nothing", n->name,
                       n->x_scale, n->y_scale);
        break;
    case OCP_LSTM_FC:
        if (check_matrix(n, &n->fc, n->no, n->ni + 1, c))
            return OCP_E_FORMAT;
        if (strncmp(n->type, "Softmax", 7) == 0) {
            if (f->h != 1)
                return bad(c,
                           "the softmax '%s' sees %s rows: the network does not collapse "
                           "the height to 1",
                           n->name, f->h == VAR ? "a line's width of" : "more than one");
            c->softmax = n;
        }
        break;
    case OCP_LSTM_LSTM:
        if (check_lstm(n, f, c))
            return OCP_E_FORMAT;
        break;
    default:
        return bad(c, "layer '%s': %s is not supported", n->name, n->type);
    }
    f->d = n->no;
    leaf_cost(n, &in, f, c);
    return 0;
}

static int check_node(const ocp_lstm_node *n, flow *f, ck *c)
{
    int rc;
    switch (n->kind) {
    case OCP_LSTM_SERIES:
        rc = check_series(n, f, c);
        break;
    case OCP_LSTM_WRAP:
        rc = check_wrap(n, f, c);
        break;
    case OCP_LSTM_PARALLEL:
        return bad(c, "layer '%s': Parallel is not supported", n->name);
    default:
        rc = check_leaf(n, f, c);
        c->leaves++;
        break;
    }
    if (rc || (rc = check_weights(n, c)))
        return rc;
    long column = (long)(f->h == VAR ? 1 : f->h) * (f->w == VAR ? 1 : f->w) * f->d;
    if (column > MAX_COLUMN)
        return bad(c, "layer '%s' (%s) holds %ld values per column of the line, more than %d",
                   n->name, n->type, column, MAX_COLUMN);
    return 0;
}

/* The network against the character set: classes, null, recoder, unicharset. */
static int check_classes(const ocp_lstm_model *m, ck *c)
{
    const ocp_lstm_node *sm = c->softmax;
    if (sm->no > OCP_LSTM_MAX_CLASSES)
        return bad(c, "the softmax '%s' outputs %d classes, more than %d", sm->name, sm->no,
                   OCP_LSTM_MAX_CLASSES);
    if (m->classes != sm->no)
        return bad(c, "the network outputs %d classes, its softmax '%s' %d", m->classes, sm->name,
                   sm->no);
    if (m->null_char < 0 || m->null_char >= m->classes)
        return bad(c, "null char %d outside %d classes", m->null_char, m->classes);
    if (m->recoder.n != m->unicharset.n)
        return bad(c, "the recoder spells %d unichars, the unicharset has %d", m->recoder.n,
                   m->unicharset.n);
    if (strcmp(m->unicharset.text[0], " ") != 0)
        return bad(c, "unicharset entry 0 is '%s', not the space (NULL)", m->unicharset.text[0]);
    int range = m->null_char + 1;
    for (int i = 0; i < m->recoder.n; i++)
        for (int j = 0; j < m->recoder.length[i]; j++) {
            int code = m->recoder.code[i][j];
            if (code < 0 || code >= m->classes)
                return bad(c, "recoder entry %d: code %d outside %d classes", i, code, m->classes);
            if (code + 1 > range)
                range = code + 1;
        }
    if (range != m->classes)
        return bad(c,
                   "the softmax '%s' outputs %d classes, the recoder's codes and the null "
                   "need %d",
                   sm->name, m->classes, range);
    return 0;
}

/* The walk of the network: sizes checked, costs summed. */
static int walk(const ocp_lstm_model *m, ck *c)
{
    flow f = {0, 0, 0, 1};
    if (check_node(&m->net, &f, c))
        return OCP_E_FORMAT;
    if (!c->softmax)
        return bad(c, "the network does not end in a softmax");
    return check_classes(m, c);
}

int ocp__lstm_model_check(const ocp_lstm_model *m, char *err, size_t errlen)
{
    ck c = {.err = err, .errlen = errlen};
    if (walk(m, &c))
        return OCP_E_FORMAT;
    if (c.fixed + c.per_column + m->input_height > OCP_LSTM_LINE_BYTES)
        return bad(&c, "a line of one column would hold %.0f bytes, more than %d",
                   c.fixed + c.per_column + m->input_height, OCP_LSTM_LINE_BYTES);
    return 0;
}

int ocp__lstm_line_cost(const ocp_lstm_model *m, double *per_column, double *fixed, char *err,
                        size_t errlen)
{
    ck c = {.err = err, .errlen = errlen};
    *per_column = *fixed = 0;
    if (walk(m, &c))
        return OCP_E_FORMAT;
    /* The line's int8 image stays with the caller all along. */
    *per_column = c.per_column + m->input_height;
    *fixed = c.fixed;
    return 0;
}
