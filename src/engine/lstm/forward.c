/*
 * forward.c: the int8 forward pass (forward.h).
 */
#include "engine/lstm/forward.h"
#include "core/error.h"
#include "core/util.h"

#include <errno.h>
#include <leptonica/allheaders.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- activation tables and arithmetic ------------------------------------------------ */

#define TABLE 4096
static float tanh_t[TABLE], logistic_t[TABLE];

__attribute__((constructor)) static void build_tables(void)
{
    for (int i = 0; i < TABLE; i++) {
        double x = i / 256.0;
        tanh_t[i] = (float)tanh(x);
        logistic_t[i] = (float)(1.0 / (1.0 + exp(-x)));
    }
}

/* f(x) for x >= 0 from table t: index trunc(x * 256), linear between entries, 1 from index
 * TABLE - 1 on. */
static inline __attribute__((always_inline)) float lookup(const float *t, float x)
{
    float s = x * 256.0f;
    int i = s < (float)(TABLE - 1) ? (int)s : TABLE - 1;
    int i0 = i < TABLE - 1 ? i : TABLE - 2;
    float v = t[i0] + (t[i0 + 1] - t[i0]) * (s - (float)i0);
    return i >= TABLE - 1 ? 1.0f : v;
}

static inline __attribute__((always_inline)) float tanh_of(float x)
{
    float v = lookup(tanh_t, x < 0 ? -x : x);
    return x < 0 ? -v : v;
}

static inline __attribute__((always_inline)) float logistic_of(float x)
{
    float v = lookup(logistic_t, x < 0 ? -x : x);
    return x < 0 ? 1.0f - v : v;
}

float ocp_lstm_tanh(float x)
{
    return tanh_of(x);
}

float ocp_lstm_logistic(float x)
{
    return logistic_of(x);
}

/* Round half away from zero (as floor(|v| + 0.5) with the sign), by truncation: |v| + 0.5
 * is never negative, so the cast is the floor, without a call into libm. */
static int round_away(double v)
{
    return v < 0 ? -(int)(-v + 0.5) : (int)(v + 0.5);
}

/* clip(round-half-away(x * 127), -127, 127) as libtesseract computes it, in float: the
 * product rounded to a float, then |v| + 0.5 rounded to a float and truncated. (In double,
 * exact, it differs on rare values near a half, enough to change 4-10 % of whole lines.) */
static inline __attribute__((always_inline)) int8_t quantise(float x)
{
    float v = x * 127.0f;
    float a = (v < 0 ? -v : v) + 0.5f;
    int r = a < 127.0f ? (int)a : 127;
    return (int8_t)(v < 0 ? -r : r);
}

int8_t ocp_lstm_quantise(float x)
{
    return quantise(x);
}

/* ---- element-wise loops ----------------------------------------------------------------
 * Over a whole layer: scalar, and AVX-512 (16 lanes, gathers from the tables) where the
 * products use AVX-512 too; the same float and double operations in the same order, so the
 * same bits. */

/* out[k] = q8(f(a[k])), f: 0 identity, 1 tanh, 2 logistic, 3 relu. */
static void activate_scalar(int act, const float *a, int8_t *out, int n)
{
    if (act == 1)
        for (int k = 0; k < n; k++)
            out[k] = quantise(tanh_of(a[k]));
    else if (act == 2)
        for (int k = 0; k < n; k++)
            out[k] = quantise(logistic_of(a[k]));
    else if (act == 3)
        for (int k = 0; k < n; k++)
            out[k] = quantise(a[k] < 0 ? 0 : a[k]);
    else
        for (int k = 0; k < n; k++)
            out[k] = quantise(a[k]);
}

/* One LSTM step of ns units from the four gates' products: c = c x f, then c += ci x gi
 * (a multiply and an add, never fused: -std=c17 keeps contraction off), clipped at +-100;
 * h = q8(tanh(c) x o). */
static void lstm_cell_scalar(int ns, const float *g0, const float *g1, const float *g2,
                             const float *g3, float *cell, int8_t *h)
{
    for (int j = 0; j < ns; j++) {
        float ci = tanh_of(g0[j]), gi = logistic_of(g1[j]);
        float gf = logistic_of(g2[j]), go = logistic_of(g3[j]);
        float cv = cell[j] * gf;
        float add = ci * gi;
        cv = cv + add;
        cv = cv > 100.0f ? 100.0f : cv < -100.0f ? -100.0f : cv;
        cell[j] = cv;
        h[j] = quantise(tanh_of(cv) * go);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 lookup16(const float *t, __m512 x) /* x >= 0 */
{
    __m512 s = _mm512_mul_ps(x, _mm512_set1_ps(256.0f));
    __mmask16 past = _mm512_cmp_ps_mask(s, _mm512_set1_ps((float)(TABLE - 1)), _CMP_NLT_UQ);
    __m512i i = _mm512_cvttps_epi32(_mm512_mask_blend_ps(past, s, _mm512_setzero_ps()));
    __m512 t0 = _mm512_i32gather_ps(i, t, 4);
    __m512 t1 = _mm512_i32gather_ps(_mm512_add_epi32(i, _mm512_set1_epi32(1)), t, 4);
    __m512 v = _mm512_add_ps(
        t0, _mm512_mul_ps(_mm512_sub_ps(t1, t0), _mm512_sub_ps(s, _mm512_cvtepi32_ps(i))));
    return _mm512_mask_blend_ps(past, v, _mm512_set1_ps(1.0f));
}

AVX512 static inline __m512 abs16(__m512 x, __mmask16 *neg)
{
    *neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_sub_ps(x, *neg, _mm512_setzero_ps(), x);
}

AVX512 static inline __m512 tanh16(__m512 x)
{
    __mmask16 neg;
    __m512 v = lookup16(tanh_t, abs16(x, &neg));
    return _mm512_mask_sub_ps(v, neg, _mm512_setzero_ps(), v);
}

AVX512 static inline __m512 logistic16(__m512 x)
{
    __mmask16 neg;
    __m512 v = lookup16(logistic_t, abs16(x, &neg));
    return _mm512_mask_sub_ps(v, neg, _mm512_set1_ps(1.0f), v);
}

/* 16 lanes as quantise() does it, in float. */
AVX512 static inline __m128i quantise16(__m512 x)
{
    __m512 v = _mm512_mul_ps(x, _mm512_set1_ps(127.0f));
    __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 a = _mm512_add_ps(_mm512_mask_sub_ps(v, neg, _mm512_setzero_ps(), v),
                             _mm512_set1_ps(0.5f));
    __m512i r = _mm512_cvttps_epi32(_mm512_min_ps(a, _mm512_set1_ps(127.0f)));
    r = _mm512_mask_sub_epi32(r, neg, _mm512_setzero_si512(), r);
    return _mm512_cvtepi32_epi8(r);
}

AVX512 static void activate_avx512(int act, const float *a, int8_t *out, int n)
{
    int k = 0;
    for (; act == 1 && k + 16 <= n; k += 16)
        _mm_storeu_si128((__m128i *)(out + k), quantise16(tanh16(_mm512_loadu_ps(a + k))));
    activate_scalar(act, a + k, out + k, n - k);
}

AVX512 static void lstm_cell_avx512(int ns, const float *g0, const float *g1, const float *g2,
                                    const float *g3, float *cell, int8_t *h)
{
    int j = 0;
    for (; j + 16 <= ns; j += 16) {
        __m512 ci = tanh16(_mm512_loadu_ps(g0 + j)), gi = logistic16(_mm512_loadu_ps(g1 + j));
        __m512 gf = logistic16(_mm512_loadu_ps(g2 + j)), go = logistic16(_mm512_loadu_ps(g3 + j));
        __m512 cv = _mm512_mul_ps(_mm512_loadu_ps(cell + j), gf);
        cv = _mm512_add_ps(cv, _mm512_mul_ps(ci, gi));
        cv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(cv, _mm512_set1_ps(100.0f), _CMP_GT_OQ), cv,
                                  _mm512_set1_ps(100.0f));
        cv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(cv, _mm512_set1_ps(-100.0f), _CMP_LT_OQ),
                                  cv, _mm512_set1_ps(-100.0f));
        _mm512_storeu_ps(cell + j, cv);
        _mm_storeu_si128((__m128i *)(h + j), quantise16(_mm512_mul_ps(tanh16(cv), go)));
    }
    lstm_cell_scalar(ns - j, g0 + j, g1 + j, g2 + j, g3 + j, cell + j, h + j);
}
#endif

/* ---- the products ----------------------------------------------------------------------
 * The one hot loop: int8 x int8 sums into int32, exact on every path, so every kernel gives
 * the same floats bit for bit. nv input vectors at x, x + stride, ...; out[v * rows + i].
 * Several vectors at a time reuse each weight load (the batch's point on a CPU). */

static void finish_row(const ocp_lstm_matrix *m, int i, int32_t s, float *out)
{
    s += (int32_t)m->w[(size_t)i * m->cols + m->cols - 1] * 127;
    out[i] = (float)s * m->scales[i];
}

/* The portable one, compiled twice (AVX2 and baseline x86-64, chosen at load time) for the
 * vectoriser. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default"), optimize("O3")))
#endif
static void matmul_rows(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride,
                        float *out)
{
    int n = m->cols - 1;
    for (int v = 0; v < nv; v++) {
        const int8_t *xv = x + (size_t)v * stride;
        for (int i = 0; i < m->rows; i++) {
            const int8_t *w = m->w + (size_t)i * m->cols;
            int32_t s = 0;
            for (int j = 0; j < n; j++)
                s += (int32_t)w[j] * xv[j];
            finish_row(m, i, s, out + (size_t)v * m->rows);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)

static int32_t four_at(const int8_t *x, int g)
{
    int32_t four;
    memcpy(&four, x + 4 * g, 4);
    return four;
}

/* AVX2, 8 rows at once (the w8 layout), NV vectors: each group of 4 inputs is broadcast;
 * |x| (unsigned) times the weights with x's signs (signed) gives 16-bit pair sums (at most
 * 2 x 127 x 127, no saturation: the file's weights are -127..127), summed again to one
 * 32-bit sum per row: 32 products an instruction and no horizontal sums. */
#define AVX2_BLOCK(NV)                                                                          \
    __attribute__((target("avx2"))) static void avx2_block##NV(                                 \
        const ocp_lstm_matrix *m, int b, const int8_t *x, size_t stride, float *out)            \
    {                                                                                           \
        const __m256i ones = _mm256_set1_epi16(1);                                              \
        const int8_t *w = m->w8 + (size_t)b * m->groups * 32;                                   \
        __m256i acc[NV];                                                                        \
        for (int k = 0; k < NV; k++)                                                            \
            acc[k] = _mm256_setzero_si256();                                                    \
        for (int g = 0; g < m->groups; g++) {                                                   \
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (size_t)g * 32));             \
            for (int k = 0; k < NV; k++) {                                                      \
                __m256i xb = _mm256_set1_epi32(four_at(x + (size_t)k * stride, g));             \
                __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(xb, xb),                      \
                                                 _mm256_sign_epi8(wv, xb));                     \
                acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(p, ones));                  \
            }                                                                                   \
        }                                                                                       \
        for (int k = 0; k < NV; k++) {                                                          \
            int32_t s[8];                                                                       \
            _mm256_storeu_si256((__m256i *)s, acc[k]);                                          \
            for (int r = 0; r < 8 && b * 8 + r < m->rows; r++)                                  \
                finish_row(m, b * 8 + r, s[r], out + (size_t)k * m->rows);                      \
        }                                                                                       \
    }
AVX2_BLOCK(1)
AVX2_BLOCK(4)

__attribute__((target("avx2"))) static void matmul_avx2(const ocp_lstm_matrix *m,
                                                         const int8_t *x, int nv, size_t stride,
                                                         float *out)
{
    int v = 0;
    for (; v + 4 <= nv; v += 4)
        for (int b = 0; b < m->blocks; b++)
            avx2_block4(m, b, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
    for (; v < nv; v++)
        for (int b = 0; b < m->blocks; b++)
            avx2_block1(m, b, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
}

/* AVX-512 VNNI, 16 rows (two w8 blocks) at once: vpdpbusd multiplies unsigned by signed
 * bytes and sums fours into 32 bits with no intermediate saturation, so the inputs go in as
 * x + 128 (unsigned) and 128 x the row's weight sum comes off after. */
#define VNNI_PAIR(NV)                                                                           \
    __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void vnni_pair##NV(           \
        const ocp_lstm_matrix *m, int pb, const int8_t *x, size_t stride, float *out)           \
    {                                                                                           \
        const int8_t *w0 = m->w8 + (size_t)(2 * pb) * m->groups * 32;                          \
        const int8_t *w1 = w0 + (size_t)m->groups * 32;                                         \
        __m512i acc[NV];                                                                        \
        for (int k = 0; k < NV; k++)                                                            \
            acc[k] = _mm512_setzero_si512();                                                    \
        for (int g = 0; g < m->groups; g++) {                                                   \
            __m512i wv = _mm512_inserti64x4(                                                    \
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w0 + g * 32))),     \
                _mm256_loadu_si256((const __m256i *)(w1 + g * 32)), 1);                         \
            for (int k = 0; k < NV; k++) {                                                      \
                __m512i xb = _mm512_set1_epi32(four_at(x + (size_t)k * stride, g) ^             \
                                               (int32_t)0x80808080u);                           \
                acc[k] = _mm512_dpbusd_epi32(acc[k], xb, wv);                                   \
            }                                                                                   \
        }                                                                                       \
        for (int k = 0; k < NV; k++) {                                                          \
            int32_t s[16];                                                                      \
            _mm512_storeu_si512(s, acc[k]);                                                     \
            for (int r = 0; r < 16 && pb * 16 + r < m->rows; r++)                               \
                finish_row(m, pb * 16 + r, s[r] - 128 * m->rowsum[pb * 16 + r],                 \
                           out + (size_t)k * m->rows);                                          \
        }                                                                                       \
    }
VNNI_PAIR(1)
VNNI_PAIR(4)

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
matmul_vnni(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride, float *out)
{
    int pairs = (m->blocks + 1) / 2, v = 0;
    for (; v + 4 <= nv; v += 4)
        for (int pb = 0; pb < pairs; pb++)
            vnni_pair4(m, pb, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
    for (; v < nv; v++)
        for (int pb = 0; pb < pairs; pb++)
            vnni_pair1(m, pb, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
}
#endif

/* 0 portable, 1 AVX2, 2 AVX-512 VNNI: what the CPU has, less what the environment turns off
 * (OCRPOOL_NO_AVX2, OCRPOOL_NO_AVX512: to measure and test the other paths) or a test caps. */
static int kernel_level = -1, kernel_cap = 2;

static int kernel(void)
{
    if (kernel_level < 0) {
        int level = 0;
#if defined(__x86_64__) && defined(__GNUC__)
        const char *no2 = getenv("OCRPOOL_NO_AVX2"), *no512 = getenv("OCRPOOL_NO_AVX512");
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && !(no2 && *no2))
            level = 1;
        if (level == 1 && __builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni") &&
            !(no512 && *no512))
            level = 2;
#endif
        kernel_level = level;
    }
    return kernel_level < kernel_cap ? kernel_level : kernel_cap;
}

const char *ocp_lstm_kernel_name(void)
{
    static const char *const names[] = {"portable", "avx2", "avx512-vnni"};
    return names[kernel()];
}

int ocp_lstm_kernel_cap(int level)
{
    int old = kernel_cap;
    kernel_cap = level;
    return old;
}

static void activate(int act, const float *a, int8_t *out, int n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (kernel() == 2) {
        activate_avx512(act, a, out, n);
        return;
    }
#endif
    activate_scalar(act, a, out, n);
}

static void lstm_cell(int ns, const float *g0, const float *g1, const float *g2,
                      const float *g3, float *cell, int8_t *h)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (kernel() == 2) {
        lstm_cell_avx512(ns, g0, g1, g2, g3, cell, h);
        return;
    }
#endif
    lstm_cell_scalar(ns, g0, g1, g2, g3, cell, h);
}

void ocp_lstm_matmul(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride,
                     float *out)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (m->w8) {
        int k = kernel();
        if (k == 2) {
            matmul_vnni(m, x, nv, stride, out);
            return;
        }
        if (k == 1) {
            matmul_avx2(m, x, nv, stride, out);
            return;
        }
    }
#endif
    matmul_rows(m, x, nv, stride, out);
}

void ocp_lstm_matvec(const ocp_lstm_matrix *m, const int8_t *x, float *out)
{
    ocp_lstm_matmul(m, x, 1, 0, out);
}

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
    return (int8_t)round_away(127.0 * 2.0 * r / 2147483647.0 - 127.0);
}

static int run(const ocp_lstm_node *n, run_ctx *c);

static void convolve(const ocp_lstm_node *n, tens *t, line_ctx *c)
{
    int kx = 2 * n->half_x + 1, ky = 2 * n->half_y + 1;
    tens o;
    tens_new(&o, t->h, t->w, t->d * kx * ky);
    int hx = n->half_x, hy = n->half_y;
    for (int y = 0; y < t->h; y++) {
        for (int x = 0; x < t->w; x++) {
            int8_t *dst = at(&o, y, x);
            if (t->d == 1 && y >= hy && y < t->h - hy && x >= hx && x < t->w - hx) {
                /* Inside the image (most pixels): no border value to draw. */
                for (int dx = -hx; dx <= hx; dx++)
                    for (int dy = -hy; dy <= hy; dy++)
                        dst[(dx + hx) * ky + dy + hy] = t->v[(size_t)(y + dy) * t->w + x + dx];
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

static void maxpool(const ocp_lstm_node *n, tens *t)
{
    tens o;
    tens_new(&o, t->h / n->y_scale, t->w / n->x_scale, t->d);
    for (int y = 0; y < o.h; y++) {
        for (int x = 0; x < o.w; x++) {
            int8_t *dst = at(&o, y, x);
            memcpy(dst, at(t, y * n->y_scale, x * n->x_scale), (size_t)t->d);
            for (int j = 0; j < n->y_scale; j++)
                for (int i = 0; i < n->x_scale; i++) {
                    const int8_t *v = at(t, y * n->y_scale + j, x * n->x_scale + i);
                    for (int k = 0; k < t->d; k++)
                        if (v[k] > dst[k])
                            dst[k] = v[k];
                }
        }
    }
    tens_replace(t, &o);
}

static int fully_connected(const ocp_lstm_node *n, tens *t, line_ctx *c, char *err,
                           size_t errlen)
{
    int softmax = strncmp(n->type, "Softmax", 7) == 0;
    /* The activation, named once here rather than at every element. */
    int act = strcmp(n->type, "Tanh") == 0       ? 1
              : strcmp(n->type, "Logistic") == 0 ? 2
              : strcmp(n->type, "Relu") == 0     ? 3
                                                 : 0;
    if (t->d != n->ni)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "%s: %d inputs where %d are expected",
                        n->name, t->d, n->ni);
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
            activate(act, acc, o.v + q0 * n->no, (int)(k * n->no));
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
            dst[k] = quantise(p[k]);
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
                        "%s: 2-D LSTMs are not supported yet (Debian's models have none)",
                        n->name);
    int ns = n->no, nq = 0, maxlen = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->t[i].d != n->ni)
            return ocp_errf(OCP_E_ENGINE, c->err, c->errlen,
                            "%s: %d inputs where %d are expected", n->name, c->t[i].d, n->ni);
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
            lstm_cell(ns, g0, g1, g2, g3, cs, hs);
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

int ocp_lstm_forward_batch(const ocp_lstm_model *m, int n, const int8_t *const *img,
                           const int *w, float **probs, int *steps, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        probs[i] = NULL;
        steps[i] = 0;
    }
    if (n < 1)
        return 0;
    for (int i = 0; i < n; i++)
        if (w[i] < 1 || w[i] > 100000)
            return ocp_errf(OCP_E_RANGE, err, errlen, "line %d: width %d", i, w[i]);
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

int ocp_lstm_forward(const ocp_lstm_model *m, const int8_t *img, int w, float **probs,
                     int *steps, char *err, size_t errlen)
{
    return ocp_lstm_forward_batch(m, 1, &img, &w, probs, steps, err, errlen);
}

/* The frac-th percentile of n values in a histogram of 255 buckets (0..254; a 255 counts
 * in the last), interpolated within the bucket where the running count reaches
 * round(frac * n) (at least 1): the bucket's index plus one, less the share of it beyond
 * that count. Found by black-box tests against libtesseract (see test_lstm.sh). */
static float percentile(const long *hist, long n, double frac)
{
    double target = frac * (double)n;
    if (target < 1)
        target = 1;
    if (target > n)
        target = (double)n;
    long sum = 0;
    int i = 0;
    while (i < 256 && sum < target)
        sum += hist[i++];
    if (i == 0 || hist[i - 1] == 0)
        return (float)i;
    return (float)(i - (double)(sum - target) / (double)hist[i - 1]);
}

int ocp_lstm_prepare_line(const ocp_lstm_model *m, const uint8_t *px, int w, int h, int stride,
                          int bands, int invert, int8_t **out, int *ow, char *err,
                          size_t errlen)
{
    *out = NULL;
    if (w < 1 || h < 1 || w > 100000 || h > 10000)
        return ocp_errf(OCP_E_RANGE, err, errlen, "line image %d x %d", w, h);
    if (bands != 1 && bands != 3 && bands != 4)
        return ocp_errf(OCP_E_RANGE, err, errlen, "line image of %d bands", bands);
    int colour = bands >= 3;
    PIX *pix = pixCreate(w, h, colour ? 32 : 8);
    if (!pix)
        return ocp_errf(-ENOMEM, err, errlen, "cannot allocate a %d x %d line", w, h);
    for (int y = 0; y < h; y++) {
        const uint8_t *row = px + (size_t)y * stride;
        for (int x = 0; x < w; x++) {
            const uint8_t *q = row + (size_t)x * bands;
            l_uint32 v;
            if (colour)
                composeRGBPixel(q[0], q[1], q[2], &v);
            else
                v = q[0];
            pixSetPixel(pix, x, y, v);
        }
    }
    float f = (float)m->input_height / (float)h;
    PIX *sc = pixScale(pix, f, f);
    pixDestroy(&pix);
    if (!sc)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot scale the line");
    if (invert)
        pixInvert(sc, sc);
    /* Colour to grey as leptonica's pixConvertTo8 does it (its luminance weights). */
    PIX *g8 = pixGetDepth(sc) == 8 ? pixClone(sc) : pixConvertTo8(sc, 0);
    pixDestroy(&sc);
    if (!g8)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot make the line grey");
    int W = pixGetWidth(g8), H = pixGetHeight(g8);
    if (H != m->input_height) {
        pixDestroy(&g8);
        return ocp_errf(OCP_E_ENGINE, err, errlen, "scaled line is %d high, not %d", H,
                        m->input_height);
    }
    /* Black and white from the middle row: the 25th percentile of its local minima, the
     * 75th of its local maxima, where a minimum is a pixel below the one before it and not
     * above the one after it (a maximum the other way round): one per run of equal values. */
    long hmin[256] = {0}, hmax[256] = {0}, nmin = 0, nmax = 0;
    if (W >= 3) {
        l_uint32 v;
        int prev, cur, next;
        pixGetPixel(g8, 0, H / 2, &v);
        prev = (int)v;
        pixGetPixel(g8, 1, H / 2, &v);
        cur = (int)v;
        for (int x = 1; x + 1 < W; x++) {
            pixGetPixel(g8, x + 1, H / 2, &v);
            next = (int)v;
            if (cur < prev && cur <= next) {
                hmin[cur]++;
                nmin++;
            }
            if (cur > prev && cur >= next) {
                hmax[cur]++;
                nmax++;
            }
            prev = cur;
            cur = next;
        }
    }
    if (!nmin) {
        hmin[0] = 1;
        nmin = 1;
    }
    if (!nmax) {
        hmax[255] = 1;
        nmax = 1;
    }
    float black = percentile(hmin, nmin, 0.25), white = percentile(hmax, nmax, 0.75);
    float contrast = (white - black) / 2.0f;
    if (contrast <= 0)
        contrast = 1;
    int8_t *img = ocp_xmalloc((size_t)W * H);
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            l_uint32 v;
            pixGetPixel(g8, x, y, &v);
            /* Into [-1, 1], then x 128 (as the reference says), rounded half away from
             * zero in float as quantise() does, and clipped to +-127: on grey lines only
             * this, with the percentiles above interpolated at the exact fraction of the
             * count over all 256 levels, gives libtesseract's outputs to the last bit
             * (black-and-white lines cannot tell 127 from 128). */
            float fp = 128.0f * (((float)v - black) / contrast - 1.0f);
            float a = (fp < 0 ? -fp : fp) + 0.5f;
            int q = a < 127.0f ? (int)a : 127;
            img[(size_t)y * W + x] = (int8_t)(fp < 0 ? -q : q);
        }
    }
    pixDestroy(&g8);
    *out = img;
    *ow = W;
    return 0;
}
