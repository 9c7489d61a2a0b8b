/*
 * forward.c: the int8 forward pass and a greedy decoder (forward.h).
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

/* f(x) for x >= 0 from table t: index trunc(x * 256), linear between entries, 1 past the
 * end. */
static float lookup(const float *t, float x)
{
    float s = x * 256.0f;
    int i = (int)s;
    if (i >= TABLE - 1)
        return 1.0f;
    return t[i] + (t[i + 1] - t[i]) * (s - (float)i);
}

float ocp_lstm_tanh(float x)
{
    return x < 0 ? -lookup(tanh_t, -x) : lookup(tanh_t, x);
}

float ocp_lstm_logistic(float x)
{
    return x < 0 ? 1.0f - lookup(logistic_t, -x) : lookup(logistic_t, x);
}

/* Round half away from zero (as floor(|v| + 0.5) with the sign), by truncation: |v| + 0.5
 * is never negative, so the cast is the floor, without a call into libm. */
static int round_away(double v)
{
    return v < 0 ? -(int)(-v + 0.5) : (int)(v + 0.5);
}

int8_t ocp_lstm_quantise(float x)
{
    int v = round_away((double)x * 127.0);
    return (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
}

/* The one hot loop: int8 x int8 sums into int32, exact on every path. The portable one is
 * compiled twice (AVX2 and baseline x86-64, chosen at load time) for the vectoriser. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default"), optimize("O3")))
#endif
static void matvec_rows(const ocp_lstm_matrix *m, const int8_t *x, float *out)
{
    int n = m->cols - 1;
    for (int i = 0; i < m->rows; i++) {
        const int8_t *w = m->w + (size_t)i * m->cols;
        int32_t s = 0;
        for (int j = 0; j < n; j++)
            s += (int32_t)w[j] * x[j];
        s += (int32_t)w[n] * 127;
        out[i] = (float)s * m->scales[i];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* AVX2, 8 rows at once (the w8 layout): each group of 4 inputs is broadcast; |x| (unsigned)
 * times the weights with x's signs (signed) gives 16-bit pair sums (at most 2 x 127 x 128,
 * no saturation), summed again to one 32-bit sum per row: 32 products an instruction and no
 * horizontal sums. */
__attribute__((target("avx2"))) static void matvec_avx2(const ocp_lstm_matrix *m,
                                                         const int8_t *x, float *out)
{
    const __m256i ones = _mm256_set1_epi16(1);
    int n = m->cols - 1;
    for (int b = 0; b < m->blocks; b++) {
        const int8_t *w = m->w8 + (size_t)b * m->groups * 32;
        __m256i acc = _mm256_setzero_si256();
        for (int g = 0; g < m->groups; g++) {
            int32_t four;
            memcpy(&four, x + 4 * g, 4);
            __m256i xb = _mm256_set1_epi32(four);
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (size_t)g * 32));
            __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(xb, xb), _mm256_sign_epi8(wv, xb));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        int32_t s[8];
        _mm256_storeu_si256((__m256i *)s, acc);
        for (int k = 0; k < 8 && b * 8 + k < m->rows; k++) {
            int i = b * 8 + k;
            s[k] += (int32_t)m->w[(size_t)i * m->cols + n] * 127;
            out[i] = (float)s[k] * m->scales[i];
        }
    }
}
#endif

void ocp_lstm_matvec(const ocp_lstm_matrix *m, const int8_t *x, float *out)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int avx2 = -1;
    if (avx2 < 0) {
        const char *off = getenv("OCRPOOL_NO_AVX2"); /* to measure and test the other path */
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") && !(off && *off);
    }
    if (avx2 && m->w8) {
        matvec_avx2(m, x, out);
        return;
    }
#endif
    matvec_rows(m, x, out);
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

/* ---- the run -------------------------------------------------------------------------- */

typedef struct run_ctx {
    uint64_t rng; /* minstd_rand state */
    float *probs; /* the softmax output, when the net ends in one */
    int steps, classes;
    char *err;
    size_t errlen;
} run_ctx;

static uint32_t minstd(run_ctx *c)
{
    c->rng = c->rng * 48271u % 2147483647u;
    return (uint32_t)c->rng;
}

/* A pseudo-random int8 for a neighbour outside the image. */
static int8_t border_value(run_ctx *c)
{
    double r = (double)minstd(c);
    return (int8_t)round_away(127.0 * 2.0 * r / 2147483647.0 - 127.0);
}

static int run(const ocp_lstm_node *n, tens *t, run_ctx *c);

static int convolve(const ocp_lstm_node *n, tens *t, run_ctx *c)
{
    int kx = 2 * n->half_x + 1, ky = 2 * n->half_y + 1;
    tens o;
    tens_new(&o, t->h, t->w, t->d * kx * ky);
    for (int y = 0; y < t->h; y++) {
        for (int x = 0; x < t->w; x++) {
            int8_t *dst = at(&o, y, x);
            for (int dx = -n->half_x; dx <= n->half_x; dx++) {
                for (int dy = -n->half_y; dy <= n->half_y; dy++) {
                    int8_t *d = dst + ((dx + n->half_x) * ky + (dy + n->half_y)) * t->d;
                    int yy = y + dy, xx = x + dx;
                    if (yy >= 0 && yy < t->h && xx >= 0 && xx < t->w) {
                        const int8_t *src = at(t, yy, xx);
                        for (int k = 0; k < t->d; k++)
                            d[k] = src[k];
                    } else
                        for (int k = 0; k < t->d; k++)
                            d[k] = border_value(c);
                }
            }
        }
    }
    tens_replace(t, &o);
    return 0;
}

static void maxpool(const ocp_lstm_node *n, tens *t)
{
    tens o;
    tens_new(&o, t->h / n->y_scale, t->w / n->x_scale, t->d);
    for (int y = 0; y < o.h; y++) {
        for (int x = 0; x < o.w; x++) {
            int8_t *dst = at(&o, y, x);
            for (int k = 0; k < t->d; k++) {
                int8_t best = -128;
                for (int j = 0; j < n->y_scale; j++)
                    for (int i = 0; i < n->x_scale; i++) {
                        int8_t v = at(t, y * n->y_scale + j, x * n->x_scale + i)[k];
                        if (v > best)
                            best = v;
                    }
                dst[k] = best;
            }
        }
    }
    tens_replace(t, &o);
}

static int fully_connected(const ocp_lstm_node *n, tens *t, run_ctx *c)
{
    int softmax = strncmp(n->type, "Softmax", 7) == 0;
    /* The activation, named once here rather than at every element. */
    int act = strcmp(n->type, "Tanh") == 0       ? 1
              : strcmp(n->type, "Logistic") == 0 ? 2
              : strcmp(n->type, "Relu") == 0     ? 3
                                                 : 0;
    float *acc = ocp_xmalloc((size_t)n->no * sizeof *acc);
    tens o;
    tens_new(&o, t->h, t->w, n->no);
    if (softmax) {
        if (t->h != 1) {
            free(acc);
            free(o.v);
            return ocp_errf(OCP_E_ENGINE, c->err, c->errlen,
                            "softmax over %d rows: the network did not collapse the height", t->h);
        }
        free(c->probs);
        c->probs = ocp_xmalloc((size_t)t->w * n->no * sizeof *c->probs);
        c->steps = t->w;
        c->classes = n->no;
    }
    for (int y = 0; y < t->h; y++) {
        for (int x = 0; x < t->w; x++) {
            ocp_lstm_matvec(&n->fc, at(t, y, x), acc);
            int8_t *dst = at(&o, y, x);
            if (softmax) {
                float mx = acc[0], sum = 0;
                for (int k = 1; k < n->no; k++)
                    if (acc[k] > mx)
                        mx = acc[k];
                float *p = c->probs + (size_t)x * n->no;
                for (int k = 0; k < n->no; k++) {
                    float d = acc[k] - mx;
                    p[k] = expf(d < -86.0f ? -86.0f : d);
                    sum += p[k];
                }
                for (int k = 0; k < n->no; k++) {
                    p[k] /= sum;
                    dst[k] = ocp_lstm_quantise(p[k]);
                }
                continue;
            }
            for (int k = 0; k < n->no; k++) {
                float v = acc[k];
                if (act == 1)
                    v = ocp_lstm_tanh(v);
                else if (act == 2)
                    v = ocp_lstm_logistic(v);
                else if (act == 3)
                    v = v < 0 ? 0 : v;
                dst[k] = ocp_lstm_quantise(v);
            }
        }
    }
    free(acc);
    tens_replace(t, &o);
    return 0;
}

/* A 1-D LSTM along x of every row, state reset per row; a summarising one keeps only the
 * last step of each row. */
static int lstm(const ocp_lstm_node *n, tens *t, run_ctx *c)
{
    if (n->two_d)
        return ocp_errf(OCP_E_ENGINE, c->err, c->errlen,
                        "%s: 2-D LSTMs are not supported yet (Debian's models have none)",
                        n->name);
    if (t->d != n->ni)
        return ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "%s: %d inputs where %d are expected",
                        n->name, t->d, n->ni);
    int ns = n->no;
    tens o;
    tens_new(&o, t->h, n->summarise ? 1 : t->w, ns);
    int8_t *src = ocp_xcalloc((size_t)n->na + OCP_LSTM_PAD, 1);
    float *g[4], *cell = ocp_xcalloc((size_t)ns, sizeof *cell);
    for (int i = 0; i < 4; i++)
        g[i] = ocp_xcalloc((size_t)ns, sizeof **g);
    for (int y = 0; y < t->h; y++) {
        memset(cell, 0, (size_t)ns * sizeof *cell);
        memset(src + n->ni, 0, (size_t)ns); /* the previous output starts at zero */
        for (int x = 0; x < t->w; x++) {
            memcpy(src, at(t, y, x), (size_t)n->ni);
            for (int i = 0; i < 4; i++)
                ocp_lstm_matvec(&n->gate[i], src, g[i]);
            int8_t *dst = at(&o, y, n->summarise ? 0 : x);
            for (int k = 0; k < ns; k++) {
                float ci = ocp_lstm_tanh(g[0][k]), gi = ocp_lstm_logistic(g[1][k]);
                float gf = ocp_lstm_logistic(g[2][k]), go = ocp_lstm_logistic(g[3][k]);
                float cv = cell[k] * gf;
                float add = ci * gi;
                cv = cv + add;
                if (cv > 100.0f)
                    cv = 100.0f;
                else if (cv < -100.0f)
                    cv = -100.0f;
                cell[k] = cv;
                float h = ocp_lstm_tanh(cv) * go;
                int8_t q = ocp_lstm_quantise(h);
                src[n->ni + k] = q;
                if (!n->summarise || x == t->w - 1)
                    dst[k] = q;
            }
        }
    }
    free(src);
    free(cell);
    for (int i = 0; i < 4; i++)
        free(g[i]);
    tens_replace(t, &o);
    return 0;
}

static int run(const ocp_lstm_node *n, tens *t, run_ctx *c)
{
    int rc = 0;
    switch (n->kind) {
    case OCP_LSTM_INPUT:
        if (t->d != (n->shape[3] > 0 ? n->shape[3] : 1))
            return ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "input depth %d, the model wants %d",
                            t->d, n->shape[3]);
        return 0;
    case OCP_LSTM_SERIES:
        for (int i = 0; i < n->n_children && !rc; i++)
            rc = run(&n->children[i], t, c);
        return rc;
    case OCP_LSTM_WRAP:
        if (strcmp(n->type, "XYTranspose") == 0) {
            transpose(t);
            rc = run(&n->children[0], t, c);
            transpose(t);
        } else if (strcmp(n->type, "RTLReversed") == 0) {
            reverse_x(t);
            rc = run(&n->children[0], t, c);
            reverse_x(t);
        } else if (strcmp(n->type, "TTBReversed") == 0) {
            reverse_y(t);
            rc = run(&n->children[0], t, c);
            reverse_y(t);
        } else {
            rc = ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "%s: not supported yet", n->type);
        }
        return rc;
    case OCP_LSTM_CONVOLVE:
        return convolve(n, t, c);
    case OCP_LSTM_MAXPOOL:
        maxpool(n, t);
        return 0;
    case OCP_LSTM_FC:
        return fully_connected(n, t, c);
    case OCP_LSTM_LSTM:
        return lstm(n, t, c);
    case OCP_LSTM_PARALLEL:
        break;
    }
    return ocp_errf(OCP_E_ENGINE, c->err, c->errlen, "%s: not supported yet", n->type);
}

int ocp_lstm_forward(const ocp_lstm_model *m, const int8_t *img, int w, float **probs,
                     int *steps, char *err, size_t errlen)
{
    *probs = NULL;
    *steps = 0;
    if (w < 1 || w > 100000)
        return ocp_errf(OCP_E_RANGE, err, errlen, "line width %d", w);
    tens t;
    tens_new(&t, m->input_height, w, 1);
    memcpy(t.v, img, (size_t)m->input_height * w);
    run_ctx c = {.err = err, .errlen = errlen};
    /* minstd_rand seeded per line with sample_iteration x 0x10000001, one draw discarded. */
    uint64_t seed = ((uint64_t)(uint32_t)m->sample_iteration * 0x10000001ULL) % 2147483647u;
    c.rng = seed ? seed : 1;
    minstd(&c);
    int rc = run(&m->net, &t, &c);
    free(t.v);
    if (!rc && !c.probs)
        rc = ocp_errf(OCP_E_ENGINE, err, errlen, "the network does not end in a softmax");
    if (rc) {
        free(c.probs);
        return rc;
    }
    *probs = c.probs;
    *steps = c.steps;
    return 0;
}

void ocp_lstm_greedy_chars(const ocp_lstm_model *m, const float *probs, int steps,
                           ocp_lstm_char **chars, int *n, float *mean)
{
    /* Code (class) -> unichar id: the recoder spells each id with one code here. */
    int *inv = ocp_xmalloc((size_t)m->classes * sizeof *inv);
    for (int k = 0; k < m->classes; k++)
        inv[k] = -1;
    for (int id = 0; id < m->recoder.n && id < m->unicharset.n; id++)
        if (m->recoder.length[id] == 1)
            inv[m->recoder.code[id][0]] = id;
    ocp_lstm_char *out = ocp_xcalloc((size_t)steps + 1, sizeof *out);
    int k = 0, prev = -1;
    double sum = 0;
    for (int s = 0; s < steps; s++) {
        const float *p = probs + (size_t)s * m->classes;
        int best = 0;
        for (int j = 1; j < m->classes; j++)
            if (p[j] > p[best])
                best = j;
        sum += p[best];
        if (best == prev && k > 0 && out[k - 1].last == s - 1) {
            out[k - 1].last = s; /* the same character goes on */
            if (p[best] < out[k - 1].prob)
                out[k - 1].prob = p[best];
        } else if (best != m->null_char && inv[best] >= 0) {
            out[k].text = m->unicharset.text[inv[best]];
            out[k].first = out[k].last = s;
            out[k].prob = p[best];
            k++;
        }
        prev = best;
    }
    free(inv);
    if (mean)
        *mean = steps ? (float)(sum / steps) : 0;
    *chars = out;
    *n = k;
}

char *ocp_lstm_greedy(const ocp_lstm_model *m, const float *probs, int steps, float *conf)
{
    ocp_lstm_char *chars;
    int n;
    ocp_lstm_greedy_chars(m, probs, steps, &chars, &n, conf);
    ocp_sb sb;
    ocp_sb_init(&sb);
    ocp_sb_puts(&sb, "");
    for (int k = 0; k < n; k++)
        ocp_sb_puts(&sb, chars[k].text);
    free(chars);
    return ocp_sb_steal(&sb);
}

/* The frac-th percentile of n values in a histogram of 255 buckets (0..254; a 255 counts
 * in the last), interpolated within the bucket where the running count reaches
 * round(frac * n) (at least 1): the bucket's index plus one, less the share of it beyond
 * that count. Found by black-box tests against libtesseract (see test_lstm.sh). */
static float percentile(const long *hist, long n, double frac)
{
    long target = round_away(frac * (double)n);
    if (target < 1)
        target = 1;
    if (target > n)
        target = n;
    long sum = 0;
    int i = 0;
    while (i < 255 && sum < target)
        sum += hist[i++];
    if (i == 0 || hist[i - 1] == 0)
        return (float)i;
    return (float)(i - (double)(sum - target) / (double)hist[i - 1]);
}

int ocp_lstm_prepare_line(const ocp_lstm_model *m, const uint8_t *grey, int w, int h, int stride,
                          int8_t **out, int *ow, char *err, size_t errlen)
{
    *out = NULL;
    if (w < 1 || h < 1 || w > 100000 || h > 10000)
        return ocp_errf(OCP_E_RANGE, err, errlen, "line image %d x %d", w, h);
    PIX *pix = pixCreate(w, h, 8);
    if (!pix)
        return ocp_errf(-ENOMEM, err, errlen, "cannot allocate a %d x %d line", w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            pixSetPixel(pix, x, y, grey[(size_t)y * stride + x]);
    float f = (float)m->input_height / (float)h;
    PIX *sc = pixScale(pix, f, f);
    pixDestroy(&pix);
    if (!sc)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "cannot scale the line");
    PIX *g8 = pixGetDepth(sc) == 8 ? pixClone(sc) : pixConvertTo8(sc, 0);
    pixDestroy(&sc);
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
                hmin[cur > 254 ? 254 : cur]++;
                nmin++;
            }
            if (cur > prev && cur >= next) {
                hmax[cur > 254 ? 254 : cur]++;
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
        hmax[254] = 1;
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
            /* Into [-1, 1], then the network's own int8 quantisation (x 127): black-box
             * tests against libtesseract show 127 here, where the reference says 128. */
            img[(size_t)y * W + x] = ocp_lstm_quantise(((float)v - black) / contrast - 1.0f);
        }
    }
    pixDestroy(&g8);
    *out = img;
    *ow = W;
    return 0;
}
