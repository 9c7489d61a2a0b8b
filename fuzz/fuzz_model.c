/*
 * fuzz_model.c: a traineddata file (src/engine/lstm/model.c) as a task's
 * language would select it: loaded from the buffer (container, network,
 * unicharset, recoder, config, dictionaries), described, and, when the
 * network is small enough to run in a millisecond, run over a short line of
 * pixels made from the input and decoded (greedy, beam, beam with the
 * dictionaries): a model whose sizes disagree must be refused at load, not
 * crash the forward pass or the beam (issue 15, point 5). A model that loads
 * although its classes disagree with its softmax's outputs (or its recoder's
 * codes fall outside them) aborts the harness: a plain replay of
 * fuzz/regress/model fails without sanitizers if the check is lost.
 */
#include "core/util.h"
#include "engine/lstm/beam.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COST 400000 /* multiply-adds per time step of the networks run */
#define LINE_W   24

/* The network's last softmax (an FC node whose type starts "Softmax"), depth first; NULL
 * when there is none. Written apart from check.c's walk, so as not to share its faults. */
static const ocp_lstm_node *last_softmax(const ocp_lstm_node *n)
{
    const ocp_lstm_node *found = NULL;
    if (n->kind == OCP_LSTM_FC && strncmp(n->type, "Softmax", 7) == 0)
        found = n;
    for (int i = 0; i < n->n_children; i++) {
        const ocp_lstm_node *c = last_softmax(&n->children[i]);
        if (c)
            found = c;
    }
    return found;
}

/* A loaded model's classes agree with its softmax and its recoder, or the harness aborts:
 * the loader must have refused it (issue 15, point 5: the top network's outputs 65536, the
 * softmax's 111). */
static void assert_sizes_agree(const ocp_lstm_model *m)
{
    const ocp_lstm_node *sm = last_softmax(&m->net);
    if (!sm || m->classes != m->net.no || sm->no != m->classes || sm->fc.rows != sm->no ||
        m->classes > OCP_LSTM_MAX_CLASSES || m->null_char < 0 || m->null_char >= m->classes)
        abort();
    for (int i = 0; i < m->recoder.n; i++)
        for (int j = 0; j < m->recoder.length[i]; j++)
            if (m->recoder.code[i][j] < 0 || m->recoder.code[i][j] >= m->classes)
                abort();
}

static void run(const ocp_lstm_model *m, const uint8_t *data, size_t size)
{
    size_t n = (size_t)m->input_height * LINE_W;
    int8_t *img = calloc(n + OCP_LSTM_PAD, 1);
    for (size_t i = 0; i < n && size; i++)
        img[i] = (int8_t)data[i % size];
    float *probs = NULL;
    int steps = 0;
    char err[512];
    if (ocp_lstm_forward(m, img, LINE_W, &probs, &steps, err, sizeof err) == 0) {
        for (int dict = 0; dict < 2; dict++) {
            ocp_lstm_char *chars = NULL;
            int nc = 0;
            ocp_lstm_beam(m, probs, steps, dict, &chars, &nc);
            free(ocp_lstm_chars_text(chars, nc));
            free(chars);
        }
        ocp_lstm_char *chars = NULL;
        int nc = 0;
        ocp_lstm_greedy_chars(m, probs, steps, &chars, &nc);
        free(ocp_lstm_chars_text(chars, nc));
        free(chars);
        ocp_lstm_mean_best(m, probs, steps);
    }
    free(probs);
    free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes: a read past the end is caught. */
    unsigned char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    char err[512];
    ocp_lstm_model *m = NULL;
    if (ocp_lstm_model_load_buffer(buf, size, &m, err, sizeof err) == 0) {
        assert_sizes_agree(m);
        ocp_sb sb;
        ocp_sb_init(&sb);
        long cost = ocp_lstm_model_describe(m, &sb);
        ocp_sb_fini(&sb);
        if (cost >= 0 && cost <= MAX_COST && m->input_height > 0 && m->input_height <= 64)
            run(m, data, size);
        ocp_lstm_model_free(m);
    }
    free(buf);
    return 0;
}
