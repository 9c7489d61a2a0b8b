/*
 * test_lstm_forward.c: the arithmetic of our LSTM forward pass
 * (src/engine/lstm/forward.c, kernels.c): activation tables, re-quantisation,
 * the int8 matrix-vector product, each CPU kernel against the portable one
 * (skipped where the CPU has no other), and the forward pass's refusals. The pass as a whole is
 * compared with libtesseract in tests/integration/test_lstm.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/kernels.h"
#include "lstm_toy.h"

static void test_tables(void **state)
{
    (void)state;
    for (float x = 0; x < 20; x += 0.037f) {
        assert_true(fabsf(ocp_lstm_tanh(x) - tanhf(x)) < 2e-5f);
        assert_true(fabsf(ocp_lstm_logistic(x) - 1.0f / (1.0f + expf(-x))) < 2e-5f);
        assert_true(ocp_lstm_tanh(-x) == -ocp_lstm_tanh(x));               /* odd */
        assert_true(ocp_lstm_logistic(-x) == 1.0f - ocp_lstm_logistic(x)); /* 1 - L(-x) */
    }
    /* Entries are f(i / 256); between them, linear; from index 4095 on, 1. */
    assert_true(ocp_lstm_tanh(1.0f) == (float)tanh(1.0));
    float mid = ocp_lstm_tanh(1.5f / 256.0f);
    assert_true(fabsf(mid - ((float)tanh(1 / 256.0) + (float)tanh(2 / 256.0)) / 2) < 1e-7f);
    assert_true(ocp_lstm_tanh(4095.0f / 256.0f) == 1.0f);
    assert_true(ocp_lstm_logistic(100.0f) == 1.0f);
}

static void test_quantise(void **state)
{
    (void)state;
    assert_int_equal(ocp_lstm_quantise(0.0f), 0);
    assert_int_equal(ocp_lstm_quantise(1.0f), 127);
    assert_int_equal(ocp_lstm_quantise(5.0f), 127); /* clipped */
    assert_int_equal(ocp_lstm_quantise(-5.0f), -127);
    assert_int_equal(ocp_lstm_quantise(0.5f), 64); /* 63.5: half away from zero */
    assert_int_equal(ocp_lstm_quantise(-0.5f), -64);
    assert_int_equal(ocp_lstm_quantise(0.4f / 127.0f), 0);
    assert_int_equal(ocp_lstm_quantise(0.6f / 127.0f), 1);
}

static void test_matvec(void **state)
{
    (void)state;
    int8_t w[2 * 4] = {1, 2, 3, 4, -127, 127, -1, 0};
    float scales[2] = {0.5f, 0.25f};
    ocp_lstm_matrix m = {.rows = 2, .cols = 4, .w = w, .scales = scales};
    int8_t x[3] = {10, -20, 127};
    float out[2];
    ocp_lstm_matvec(&m, x, out);
    /* (1*10 + 2*-20 + 3*127 + 4*127) * 0.5 and (-1270 - 2540 - 127 + 0) * 0.25 */
    assert_true(out[0] == (float)(10 - 40 + 381 + 508) * 0.5f);
    assert_true(out[1] == (float)(-1270 - 2540 - 127) * 0.25f);
}

/* The kernels this CPU has beside the portable one, each named once: levels[i] is the cap
 * that selects it (ocp_lstm_kernel_cap). Returns how many (0 on a CPU with neither AVX2 nor
 * AVX-512 VNNI, or with them turned off by OCRPOOL_NO_AVX2 / OCRPOOL_NO_AVX512). */
static int other_kernels(int levels[2])
{
    int n = 0;
    const char *seen = "portable";
    for (int cap = 1; cap <= 2; cap++) {
        int old = ocp_lstm_kernel_cap(cap);
        const char *name = ocp_lstm_kernel_name();
        ocp_lstm_kernel_cap(old);
        if (strcmp(name, seen) != 0)
            levels[n++] = cap;
        seen = name;
    }
    return n;
}

/* AVX2 (8 rows at a time) and AVX-512 VNNI (tiles of 16 to 48 rows by 1, 4 or 8 vectors,
 * inputs as x + 128) give the portable path's floats, bit for bit, on matrices of awkward
 * sizes with extreme values, one vector at a time and several (the batch product, 1 to 21
 * vectors with a stride: every tile and the tails after them). The portable
 * path is the reference, so a CPU without the others has nothing to compare: skipped. */
static void test_matvec_paths(void **state)
{
    (void)state;
    int levels[2], nk = other_kernels(levels);
    if (nk == 0)
        skip();
    unsigned seed = 7;
    static const int sizes[][2] = {{1, 2},    {7, 10},    {8, 5},    {9, 66},  {16, 10},
                                   {111, 193}, {96, 145}, {13, 289}, {17, 3},  {40, 20},
                                   {48, 65},   {192, 289}, {33, 7},  {80, 41}, {64, 9}};
    static const int nvs[] = {1, 2, 3, 4, 5, 6, 8, 9, 12, 13, 17, 21};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0] * 2; t++) {
        int rows = sizes[t / 2][0], cols = sizes[t / 2][1];
        int nv = nvs[(t * 5) % (sizeof nvs / sizeof nvs[0])];
        size_t stride = (size_t)cols + 3;
        ocp_lstm_matrix m = {.rows = rows, .cols = cols};
        m.w = malloc((size_t)rows * cols);
        m.scales = malloc(sizeof(float) * (size_t)rows);
        int8_t *x = calloc(stride * (size_t)nv + OCP_LSTM_PAD, 1);
        for (int i = 0; i < rows * cols; i++) {
            seed = seed * 1103515245u + 12345u;
            m.w[i] = (int8_t)((int)(seed >> 16) % 255 - 127); /* -127..127 */
        }
        for (int i = 0; i < rows; i++)
            m.scales[i] = 0.001f * (float)(i + 1);
        for (int v = 0; v < nv; v++)
            for (int j = 0; j < cols - 1; j++) {
                seed = seed * 1103515245u + 12345u;
                x[(size_t)v * stride + j] =
                    (int8_t)(j % 5 == 0 ? (j % 2 ? 127 : -127) : (int)(seed >> 16) % 255 - 127);
            }
        static float a[21 * 400], b[21 * 400];
        for (int v = 0; v < nv; v++) /* no w8 yet: the row-by-row path, a vector at a time */
            ocp_lstm_matvec(&m, x + (size_t)v * stride, a + (size_t)v * rows);
        ocp_lstm_matrix_layout(&m);
        for (int k = 0; k < nk; k++) {
            int old = ocp_lstm_kernel_cap(levels[k]);
            memset(b, 0, sizeof b);
            ocp_lstm_matmul(&m, x, nv, stride, b);
            assert_memory_equal(a, b, sizeof(float) * (size_t)rows * nv);
            ocp_lstm_kernel_cap(old);
        }
        free(m.w);
        free(m.scales);
        free(m.w8);
        free(m.fix);
        free(x);
    }
}

/* The element-wise loops of the AVX-512 level (activations and the LSTM cell, 16 lanes with
 * gathers from the tables) give the scalar loops' bits, on values across the tables, at
 * their ends and past them, and lengths that leave a scalar tail. Skipped where the CPU has
 * no AVX-512 level (or it is turned off): the scalar loops would be compared with
 * themselves. */
static void test_elementwise_paths(void **state)
{
    (void)state;
    int old = ocp_lstm_kernel_cap(2);
    const ocp__lstm_kernels *fast = ocp__lstm_kernels_now();
    ocp_lstm_kernel_cap(0);
    const ocp__lstm_kernels *slow = ocp__lstm_kernels_now();
    ocp_lstm_kernel_cap(old);
    if (fast->activate == slow->activate && fast->cell == slow->cell)
        skip();
    enum { N = 16 * 40 + 7 };
    static float g[4][N], c1[N], c2[N];
    static int8_t o1[N], o2[N];
    unsigned seed = 11;
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < N; k++) {
            seed = seed * 1103515245u + 12345u;
            /* -20..20 in steps finer than the tables' 1/256, and their exact ends. */
            g[i][k] = k % 50 == 0   ? (k % 100 ? 4095.0f / 256.0f : -4095.0f / 256.0f)
                      : k % 51 == 0 ? (float)(k % 7) / 256.0f
                                    : ((float)(seed >> 8 & 0xffff) / 65536.0f - 0.5f) * 40.0f;
        }
    for (int act = 0; act <= 3; act++) {
        fast->activate(act, g[act], o1, N);
        slow->activate(act, g[act], o2, N);
        assert_memory_equal(o1, o2, N);
    }
    for (int k = 0; k < N; k++) /* cells from 0, and near the +-100 clip */
        c1[k] = c2[k] = k % 3 == 0 ? 0.0f : (k % 3 == 1 ? 99.5f : -99.9f);
    for (int step = 0; step < 3; step++) {
        fast->cell(N, g[0], g[1], g[2], g[3], c1, o1);
        slow->cell(N, g[0], g[1], g[2], g[3], c2, o2);
        assert_memory_equal(c1, c2, sizeof c1);
        assert_memory_equal(o1, o2, N);
    }
}

static ocp_lstm_model *eng(void)
{
    const char *p = getenv("TESSDATA_PREFIX");
    char path[4096], err[400] = "";
    snprintf(path, sizeof path, "%s/eng.traineddata",
             p && *p ? p : "/usr/share/tesseract-ocr/5/tessdata");
    ocp_lstm_model *m = NULL;
    if (ocp_lstm_model_load(path, &m, err, sizeof err))
        fail_msg("%s", err);
    return m;
}

static void test_refusals(void **state)
{
    (void)state;
    ocp_lstm_model *e = eng(), m = *e; /* 36 rows */
    float *probs;
    int steps;
    char err[200];
    int8_t img[36] = {0};
    assert_int_equal(ocp_lstm_forward(&m, img, 0, &probs, &steps, err, sizeof err), OCP_E_RANGE);
    int8_t *out;
    int ow;
    uint8_t grey[4] = {0};
    assert_int_equal(ocp_lstm_prepare_line(&m, grey, 0, 4, 1, 1, 0, &out, &ow, err, sizeof err),
                     OCP_E_RANGE);
    /* A line 3000 wide and 1 high is 108000 columns at 36 rows, more than the forward pass
     * takes: refused before it is scaled (a tall model would scale it to gigabytes). */
    uint8_t *thin = ocp_xcalloc(3000, 1);
    assert_int_equal(
        ocp_lstm_prepare_line(&m, thin, 3000, 1, 3000, 1, 0, &out, &ow, err, sizeof err),
        OCP_E_RANGE);
    assert_non_null(strstr(err, "108000 columns"));
    /* 2700 x 1 is 97200 columns: made. */
    assert_int_equal(
        ocp_lstm_prepare_line(&m, thin, 2700, 1, 2700, 1, 0, &out, &ow, err, sizeof err), 0);
    assert_true(ow > 90000 && ow <= 100000);
    free(out);
    free(thin);
    ocp_lstm_model_free(e);
}

/* Issue 15, point 5: a model with a layer of 16000 values a column (within the per-layer
 * bound of 16384) made a line of 100000 columns take 1.6 GB of int8 and as much again in its
 * softmax's products. A line that would take more than OCP_LSTM_LINE_BYTES is refused, by the
 * forward pass and by the line preparation, before anything is allocated for it, and so is a
 * batch whose lines would together; a narrower line runs. */
static void test_wide_line_refused(void **state)
{
    (void)state;
    ocp_lstm_model *m = toy_model(16000, 3);
    char err[400] = "";
    assert_int_equal(ocp__lstm_model_check(m, err, sizeof err), 0);
    double pc, fx;
    assert_int_equal(ocp__lstm_line_cost(m, &pc, &fx, err, sizeof err), 0);
    assert_true(pc > 16000); /* the Tanh's 16000 int8 a column, the softmax's input */
    int limit = (int)((OCP_LSTM_LINE_BYTES - fx) / pc);
    assert_true(limit > 1000 && limit < 25000);
    print_message("16000 values a column: %.0f bytes a column, %d columns at most\n", pc, limit);
    int w = limit + 2;
    int8_t *img = ocp_xcalloc((size_t)w, 1);
    float *probs = NULL;
    int steps = -1;
    assert_int_equal(ocp_lstm_forward(m, img, w, &probs, &steps, err, sizeof err), OCP_E_RANGE);
    assert_non_null(strstr(err, "more than 256 MB"));
    assert_null(probs);
    assert_int_equal(steps, 0);
    print_message("refused: %s\n", err);
    /* The same line as an image: refused before it is scaled. */
    uint8_t *grey = ocp_xcalloc((size_t)w, 1);
    int8_t *out = NULL;
    int ow = 0;
    assert_int_equal(ocp_lstm_prepare_line(m, grey, w, 1, w, 1, 0, &out, &ow, err, sizeof err),
                     OCP_E_RANGE);
    assert_null(out);
    /* One line too wide in a batch fails the batch; alone, a narrower line runs. */
    const int8_t *two[2] = {img, img};
    int ws[2] = {100, w}, st[2];
    float *pr[2];
    assert_int_equal(ocp_lstm_forward_batch(m, 2, two, ws, pr, st, err, sizeof err), OCP_E_RANGE);
    assert_non_null(strstr(err, "line 1"));
    /* Two lines that fit one by one but not together (the batch holds both at once). */
    int half = limit * 3 / 5;
    int ws2[2] = {half, half};
    assert_int_equal(ocp_lstm_forward_batch(m, 2, two, ws2, pr, st, err, sizeof err), OCP_E_RANGE);
    assert_non_null(strstr(err, "2 lines together"));
    assert_true(ocp_lstm_line_bytes(m, half) < OCP_LSTM_LINE_BYTES);
    print_message("refused: %s\n", err);
    assert_int_equal(ocp_lstm_forward(m, img, 1000, &probs, &steps, err, sizeof err), 0);
    assert_int_equal(steps, 1000);
    free(probs);
    free(grey);
    free(img);
    ocp_lstm_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_quantise),
        cmocka_unit_test(test_matvec),
        cmocka_unit_test(test_matvec_paths),
        cmocka_unit_test(test_elementwise_paths),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_wide_line_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
