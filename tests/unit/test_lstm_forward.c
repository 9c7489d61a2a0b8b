/*
 * test_lstm_forward.c: the arithmetic of our LSTM forward pass
 * (src/engine/lstm/forward.c): activation tables, re-quantisation, the
 * int8 matrix-vector product, the greedy decoder, and the forward pass's
 * refusals. The pass as a whole is compared with libtesseract in
 * tests/integration/test_lstm.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "engine/lstm/forward.h"

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

/* The portable path, AVX2 (8 rows at a time) and AVX-512 VNNI (16 rows, inputs as x + 128)
 * give the same floats, bit for bit, on matrices of awkward sizes with extreme values, one
 * vector at a time and several (the batch product, 1 to 6 vectors with a stride). */
static void test_matvec_paths(void **state)
{
    (void)state;
    unsigned seed = 7;
    static const int sizes[][2] = {{1, 2}, {7, 10}, {8, 5}, {9, 66}, {16, 10}, {111, 193},
                                   {96, 145}, {13, 289}, {17, 3}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int rows = sizes[t][0], cols = sizes[t][1], nv = 1 + (int)(t % 6);
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
        float a[6 * 400], b[6 * 400];
        for (int v = 0; v < nv; v++) /* no w8 yet: the row-by-row path, a vector at a time */
            ocp_lstm_matvec(&m, x + (size_t)v * stride, a + (size_t)v * rows);
        ocp_lstm_matrix_layout(&m);
        for (int cap = 2; cap >= 0; cap--) {
            int old = ocp_lstm_kernel_cap(cap);
            memset(b, 0, sizeof b);
            ocp_lstm_matmul(&m, x, nv, stride, b);
            assert_memory_equal(a, b, sizeof(float) * (size_t)rows * nv);
            ocp_lstm_kernel_cap(old);
        }
        free(m.w);
        free(m.scales);
        free(m.w8);
        free(m.rowsum);
        free(x);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    ocp_lstm_model m;
    memset(&m, 0, sizeof m);
    m.input_height = 36;
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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),  cmocka_unit_test(test_quantise),
        cmocka_unit_test(test_matvec),  cmocka_unit_test(test_matvec_paths),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
