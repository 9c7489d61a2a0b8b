/*
 * kernels.c: the hot loops of the lstm engine's forward pass (forward.h, kernels.h):
 * the activation tables, the element-wise loops (scalar, AVX-512) and the int8 products
 * (portable, AVX2, AVX-512 VNNI), one table of kernels per CPU level, chosen at run time.
 * The layers that call them are in forward.c.
 */
#include "engine/lstm/forward.h"
#include "engine/lstm/kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- activation tables and arithmetic ------------------------------------------------ */

#define TABLE 4096
static float tanh_t[TABLE], logistic_t[TABLE];
/* The same tables as pairs (t[i], t[i + 1]), 8 bytes an entry: one 64-bit gather fetches
 * both ends of a lane's interval (the AVX-512 loops: half the gathered elements). */
static float tanh_p[2 * TABLE], logistic_p[2 * TABLE];

__attribute__((constructor)) static void build_tables(void)
{
    for (int i = 0; i < TABLE; i++) {
        double x = i / 256.0;
        tanh_t[i] = (float)tanh(x);
        logistic_t[i] = (float)(1.0 / (1.0 + exp(-x)));
    }
    for (int i = 0; i < TABLE; i++) {
        tanh_p[2 * i] = tanh_t[i];
        tanh_p[2 * i + 1] = i + 1 < TABLE ? tanh_t[i + 1] : 1.0f;
        logistic_p[2 * i] = logistic_t[i];
        logistic_p[2 * i + 1] = i + 1 < TABLE ? logistic_t[i + 1] : 1.0f;
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

int8_t ocp_lstm_quantise(float x)
{
    return ocp__lstm_quantise(x);
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
            out[k] = ocp__lstm_quantise(tanh_of(a[k]));
    else if (act == 2)
        for (int k = 0; k < n; k++)
            out[k] = ocp__lstm_quantise(logistic_of(a[k]));
    else if (act == 3)
        for (int k = 0; k < n; k++)
            out[k] = ocp__lstm_quantise(a[k] < 0 ? 0 : a[k]);
    else
        for (int k = 0; k < n; k++)
            out[k] = ocp__lstm_quantise(a[k]);
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
        h[j] = ocp__lstm_quantise(tanh_of(cv) * go);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

/* From a pair table (tanh_p, logistic_p): two gathers of 8 pairs, split into the lanes' t[i]
 * and t[i + 1]. */
AVX512 static inline __m512 lookup16(const float *pairs, __m512 x) /* x >= 0 */
{
    __m512 s = _mm512_mul_ps(x, _mm512_set1_ps(256.0f));
    __mmask16 past = _mm512_cmp_ps_mask(s, _mm512_set1_ps((float)(TABLE - 1)), _CMP_NLT_UQ);
    __m512i i = _mm512_cvttps_epi32(_mm512_mask_blend_ps(past, s, _mm512_setzero_ps()));
    __m512 lo = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_castsi512_si256(i), pairs, 8));
    __m512 hi = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_extracti64x4_epi64(i, 1), pairs, 8));
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    __m512 t0 = _mm512_permutex2var_ps(lo, even, hi);
    __m512 t1 = _mm512_permutex2var_ps(lo, _mm512_add_epi32(even, _mm512_set1_epi32(1)), hi);
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
    __m512 v = lookup16(tanh_p, abs16(x, &neg));
    return _mm512_mask_sub_ps(v, neg, _mm512_setzero_ps(), v);
}

AVX512 static inline __m512 logistic16(__m512 x)
{
    __mmask16 neg;
    __m512 v = lookup16(logistic_p, abs16(x, &neg));
    return _mm512_mask_sub_ps(v, neg, _mm512_set1_ps(1.0f), v);
}

/* 16 lanes as ocp__lstm_quantise() does it, in float. */
AVX512 static inline __m128i quantise16(__m512 x)
{
    __m512 v = _mm512_mul_ps(x, _mm512_set1_ps(127.0f));
    __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 a =
        _mm512_add_ps(_mm512_mask_sub_ps(v, neg, _mm512_setzero_ps(), v), _mm512_set1_ps(0.5f));
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
        cv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(cv, _mm512_set1_ps(-100.0f), _CMP_LT_OQ), cv,
                                  _mm512_set1_ps(-100.0f));
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
static void
matmul_rows(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride, float *out)
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
#define AVX2_BLOCK(NV)                                                                             \
    __attribute__((target("avx2"))) static void avx2_block##NV(                                    \
        const ocp_lstm_matrix *m, int b, const int8_t *x, size_t stride, float *out)               \
    {                                                                                              \
        const __m256i ones = _mm256_set1_epi16(1);                                                 \
        const int8_t *w = m->w8 + (size_t)(b / 2) * m->groups * 64 + (b % 2) * 32;                 \
        __m256i acc[NV];                                                                           \
        for (int k = 0; k < NV; k++)                                                               \
            acc[k] = _mm256_setzero_si256();                                                       \
        for (int g = 0; g < m->groups; g++) {                                                      \
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (size_t)g * 64));                \
            for (int k = 0; k < NV; k++) {                                                         \
                __m256i xb = _mm256_set1_epi32(four_at(x + (size_t)k * stride, g));                \
                __m256i p =                                                                        \
                    _mm256_maddubs_epi16(_mm256_sign_epi8(xb, xb), _mm256_sign_epi8(wv, xb));      \
                acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(p, ones));                     \
            }                                                                                      \
        }                                                                                          \
        for (int k = 0; k < NV; k++) {                                                             \
            int32_t s[8];                                                                          \
            _mm256_storeu_si256((__m256i *)s, acc[k]);                                             \
            for (int r = 0; r < 8 && b * 8 + r < m->rows; r++)                                     \
                finish_row(m, b * 8 + r, s[r], out + (size_t)k * m->rows);                         \
        }                                                                                          \
    }
AVX2_BLOCK(1)
AVX2_BLOCK(4)

__attribute__((target("avx2"))) static void matmul_avx2(const ocp_lstm_matrix *m, const int8_t *x,
                                                        int nv, size_t stride, float *out)
{
    int v = 0;
    for (; v + 4 <= nv; v += 4)
        for (int b = 0; b < m->blocks; b++)
            avx2_block4(m, b, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
    for (; v < nv; v++)
        for (int b = 0; b < m->blocks; b++)
            avx2_block1(m, b, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
}

/* AVX-512 VNNI: a tile of P pairs of w8 blocks (16 P rows) by V vectors, its P x V sums in
 * registers (at most 24 of the 32). vpdpbusd multiplies unsigned by signed bytes and sums
 * fours into 32 bits with no intermediate saturation, so the inputs go in as x + 128
 * (unsigned) and m->fix (127 x bias - 128 x the row's weight sum) is added after; then
 * (float)s x scale, 16 rows an instruction, the same bits as finish_row. Each group of 4
 * inputs: P weight loads, V broadcasts, P x V products. */
#define VNNI_TILE(P, V)                                                                            \
    __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void vnni_tile##P##V(            \
        const ocp_lstm_matrix *m, int pb, const int8_t *x, size_t stride, float *out)              \
    {                                                                                              \
        const int8_t *w = m->w8 + (size_t)pb * m->groups * 64;                                     \
        const size_t pstep = (size_t)m->groups * 64;                                               \
        const __m512i flip = _mm512_set1_epi32((int32_t)0x80808080u);                              \
        __m512i acc[P][V];                                                                         \
        _Pragma("GCC unroll 24") for (int p = 0; p < P; p++)                                       \
            _Pragma("GCC unroll 8") for (int k = 0; k < V; k++) acc[p][k] = _mm512_setzero_si512(); \
        for (int g = 0; g < m->groups; g++) {                                                      \
            __m512i wv[P];                                                                         \
            _Pragma("GCC unroll 3") for (int p = 0; p < P; p++) wv[p] =                            \
                _mm512_loadu_si512(w + p * pstep + (size_t)g * 64);                                \
            _Pragma("GCC unroll 8") for (int k = 0; k < V; k++)                                    \
            {                                                                                      \
                __m512i xb = _mm512_xor_si512(                                                     \
                    _mm512_set1_epi32(four_at(x + (size_t)k * stride, g)), flip);                  \
                _Pragma("GCC unroll 3") for (int p = 0; p < P; p++) acc[p][k] =                    \
                    _mm512_dpbusd_epi32(acc[p][k], xb, wv[p]);                                     \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 3") for (int p = 0; p < P; p++)                                        \
        {                                                                                          \
            int r0 = (pb + p) * 16, left = m->rows - r0;                                           \
            __mmask16 keep = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);       \
            __m512i fix = _mm512_loadu_si512(m->fix + r0);                                         \
            __m512 scale = _mm512_maskz_loadu_ps(keep, m->scales + r0);                            \
            _Pragma("GCC unroll 8") for (int k = 0; k < V; k++) _mm512_mask_storeu_ps(             \
                out + (size_t)k * m->rows + r0, keep,                                              \
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[p][k], fix)), scale));       \
        }                                                                                          \
    }
VNNI_TILE(3, 8)
VNNI_TILE(3, 4)
VNNI_TILE(3, 1)
VNNI_TILE(2, 8)
VNNI_TILE(2, 4)
VNNI_TILE(2, 1)
VNNI_TILE(1, 8)
VNNI_TILE(1, 4)
VNNI_TILE(1, 1)

typedef void vnni_tile_fn(const ocp_lstm_matrix *, int, const int8_t *, size_t, float *);

/* The pairs in tiles of 3 (and one of 1 or 2 for the rest), the vectors in 8s, then a 4,
 * then one at a time. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
matmul_vnni(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride, float *out)
{
    static vnni_tile_fn *const tiles[3][3] = {
        {vnni_tile11, vnni_tile14, vnni_tile18},
        {vnni_tile21, vnni_tile24, vnni_tile28},
        {vnni_tile31, vnni_tile34, vnni_tile38},
    };
    int pairs = (m->blocks + 1) / 2;
    for (int v = 0; v < nv;) {
        int col = nv - v >= 8 ? 2 : nv - v >= 4 ? 1 : 0, step = col == 2 ? 8 : col == 1 ? 4 : 1;
        for (int pb = 0; pb < pairs;) {
            int p = pairs - pb >= 3 ? 3 : pairs - pb;
            tiles[p - 1][col](m, pb, x + (size_t)v * stride, stride, out + (size_t)v * m->rows);
            pb += p;
        }
        v += step;
    }
}
#endif

/* The kernels of each level: 0 portable, 1 AVX2 (the products; the element-wise loops stay
 * scalar), 2 AVX-512 VNNI (the products and the element-wise loops). */
static const ocp__lstm_kernels levels[] = {
    {"portable", matmul_rows, activate_scalar, lstm_cell_scalar},
#if defined(__x86_64__) && defined(__GNUC__)
    {"avx2", matmul_avx2, activate_scalar, lstm_cell_scalar},
    {"avx512-vnni", matmul_vnni, activate_avx512, lstm_cell_avx512},
#endif
};

/* What the CPU has, less what the environment turns off (OCRPOOL_NO_AVX2, OCRPOOL_NO_AVX512:
 * to measure and test the other paths) or a test caps. */
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
        if (level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vnni") && !(no512 && *no512))
            level = 2;
#endif
        kernel_level = level;
    }
    return kernel_level < kernel_cap ? kernel_level : kernel_cap;
}

const ocp__lstm_kernels *ocp__lstm_kernels_now(void)
{
    return &levels[kernel()];
}

const char *ocp_lstm_kernel_name(void)
{
    return levels[kernel()].name;
}

int ocp_lstm_kernel_cap(int level)
{
    int old = kernel_cap;
    kernel_cap = level;
    return old;
}

void ocp_lstm_matmul(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride, float *out)
{
    /* A matrix without the w8 layout has only the row-by-row product. */
    (m->w8 ? levels[kernel()].matmul : matmul_rows)(m, x, nv, stride, out);
}

void ocp_lstm_matvec(const ocp_lstm_matrix *m, const int8_t *x, float *out)
{
    ocp_lstm_matmul(m, x, 1, 0, out);
}
