/*
 * lstm_toy.h: a model made by hand for the lstm unit tests (test_lstm_model.c,
 * test_lstm_forward.c), static functions: Input (1 row) | [a Tanh of `wide`
 * outputs] | Softmax of `classes`, zero weights; unichar i is class i, the
 * null the last class. Its sizes agree; ocp_lstm_model_free frees it.
 */
#ifndef OCP_TEST_LSTM_TOY_H
#define OCP_TEST_LSTM_TOY_H

#include "core/util.h"
#include "engine/lstm/model.h"

#include <stdio.h>
#include <string.h>

static void toy_matrix(ocp_lstm_matrix *x, int rows, int cols)
{
    x->rows = rows;
    x->cols = cols;
    x->w = ocp_xcalloc((size_t)rows * cols, 1);
    x->scales = ocp_xcalloc((size_t)rows, sizeof *x->scales);
    ocp_lstm_matrix_layout(x);
}

static void toy_leaf(ocp_lstm_node *n, const char *type, int ni, int no)
{
    n->kind = strcmp(type, "Input") == 0 ? OCP_LSTM_INPUT : OCP_LSTM_FC;
    snprintf(n->type, sizeof n->type, "%s", type);
    snprintf(n->name, sizeof n->name, "toy%s", type);
    n->ni = ni;
    n->no = no;
    if (n->kind == OCP_LSTM_FC) {
        toy_matrix(&n->fc, no, ni + 1);
        n->num_weights = (long)no * (ni + 1);
    } else {
        n->shape[0] = n->shape[1] = n->shape[3] = 1;
    }
}

static ocp_lstm_model *toy_model(int wide, int classes)
{
    ocp_lstm_model *m = ocp_xcalloc(1, sizeof *m);
    ocp_lstm_node *s = &m->net;
    s->kind = OCP_LSTM_SERIES;
    snprintf(s->type, sizeof s->type, "Series");
    s->n_children = wide ? 3 : 2;
    s->children = ocp_xcalloc((size_t)s->n_children, sizeof *s->children);
    toy_leaf(&s->children[0], "Input", 1, 1);
    if (wide)
        toy_leaf(&s->children[1], "Tanh", 1, wide);
    toy_leaf(&s->children[s->n_children - 1], "Softmax", wide ? wide : 1, classes);
    for (int i = 0; i < s->n_children; i++)
        s->num_weights += s->children[i].num_weights;
    s->ni = 1;
    s->no = classes;
    m->input_height = 1;
    m->classes = classes;
    m->null_char = classes - 1;
    int n = classes - 1;
    m->unicharset.n = m->recoder.n = n;
    m->unicharset.text = ocp_xcalloc((size_t)n, sizeof *m->unicharset.text);
    m->unicharset.script = ocp_xcalloc((size_t)n, sizeof *m->unicharset.script);
    m->unicharset.is_digit = ocp_xcalloc((size_t)n, 1);
    m->recoder.length = ocp_xcalloc((size_t)n, sizeof *m->recoder.length);
    m->recoder.code = ocp_xcalloc((size_t)n, sizeof *m->recoder.code);
    for (int i = 0; i < n; i++) {
        char t[16];
        snprintf(t, sizeof t, i ? "u%d" : " ", i);
        m->unicharset.text[i] = ocp_xstrdup(t);
        m->unicharset.script[i] = ocp_xstrdup("");
        m->recoder.length[i] = 1;
        m->recoder.code[i] = ocp_xcalloc(1, sizeof **m->recoder.code);
        m->recoder.code[i][0] = i;
    }
    ocp_lstm_model_index(m);
    return m;
}

#endif
