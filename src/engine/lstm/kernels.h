/*
 * kernels.h: inside the lstm engine's forward pass (not for the rest of the program).
 * The arithmetic that the layers (forward.c) and the kernels (kernels.c) share, and the
 * table of kernels: the int8 products and the element-wise loops of one CPU level,
 * portable, AVX2 or AVX-512 VNNI, all giving the same bits.
 */
#ifndef OCP_ENGINE_LSTM_KERNELS_H
#define OCP_ENGINE_LSTM_KERNELS_H

#include "engine/lstm/model.h"

#include <stddef.h>
#include <stdint.h>

/* Round half away from zero (as floor(|v| + 0.5) with the sign), by truncation: |v| + 0.5
 * is never negative, so the cast is the floor, without a call into libm. */
static inline int ocp__lstm_round_away(double v)
{
    return v < 0 ? -(int)(-v + 0.5) : (int)(v + 0.5);
}

/* clip(round-half-away(x * 127), -127, 127) as libtesseract computes it, in float: the
 * product rounded to a float, then |v| + 0.5 rounded to a float and truncated. (In double,
 * exact, it differs on rare values near a half, enough to change 4-10 % of whole lines.) */
static inline __attribute__((always_inline)) int8_t ocp__lstm_quantise(float x)
{
    float v = x * 127.0f;
    float a = (v < 0 ? -v : v) + 0.5f;
    int r = a < 127.0f ? (int)a : 127;
    return (int8_t)(v < 0 ? -r : r);
}

/* The kernels of one CPU level. The products take nv vectors x, x + stride, ... into
 * out[v * rows + i] (ocp_lstm_matmul); activate writes out[k] = q8(f(a[k])), f: 0 identity,
 * 1 tanh, 2 logistic, 3 relu; cell is one LSTM step of ns units from the four gates'
 * products g0..g3: c = c x f + ci x gi clipped at +-100, h = q8(tanh(c) x o). */
typedef struct ocp__lstm_kernels {
    const char *name;
    /* Needs the matrix's w8 layout except at the portable level. */
    void (*matmul)(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride, float *out);
    void (*activate)(int act, const float *a, int8_t *out, int n);
    void (*cell)(int ns, const float *g0, const float *g1, const float *g2, const float *g3,
                 float *cell, int8_t *h);
} ocp__lstm_kernels;

/* The kernels in use: the CPU's best level, less what OCRPOOL_NO_AVX2 / OCRPOOL_NO_AVX512
 * turn off and ocp_lstm_kernel_cap caps. Borrowed (static). */
const ocp__lstm_kernels *ocp__lstm_kernels_now(void);

#endif
