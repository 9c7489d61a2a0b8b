/*
 * forward.cu: the kernels of the CUDA forward pass and the walk of the network's tree over
 * a batch of lines (cuda_forward.h), mirroring engine/lstm/forward.c step by step.
 *
 * Bit parity with the CPU: the int8 products are exact int32 sums (dp4a); every float step
 * is written with __fmul_rn / __fadd_rn / __fsub_rn (never contracted into a fused
 * multiply-add, whatever the flags) in the CPU's order; the activation tables are the
 * CPU's (ctx.cu checks them); the softmax runs on the CPU, with glibc's expf, as forward.c
 * does it. Each line's arithmetic does not depend on the others', so the batch's lines may
 * run in any order and grouping.
 *
 * The lines' tensors of a layer lie one after the other in one device buffer (line i's
 * h x w x d bytes, row-major, as forward.c's), so a fully connected layer is one product
 * over every position of the batch. The LSTMs run one sequence (a row of a line) per block
 * (or a few per block, to share the weights' loads), all time steps in one launch: a step
 * needs only its own sequence's previous output, which stays in the block's shared memory.
 */
#include "gpu/cuda/internal.h"

extern "C" {
#include "core/error.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/kernels.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#define THREADS 256
/* A batch goes through in parts that hold at most this in host memory (images, products,
 * probabilities); each part splits again when it does not fit under the GPU memory cap. */
#define PART_BYTES ((double)(128 << 20))

/* ---- the arithmetic: the CPU's, operation by operation ---------------------------------
 * Every kernel's body is a __host__ __device__ function over (first, stride) of its
 * elements: on the GPU each thread takes its own, and the emulation (ocp_cuda_open_emulated,
 * for tests on machines without a GPU) runs the same bodies on the CPU with first 0 and
 * stride 1. Its float operations are then the host compiler's, unfused (-ffp-contract=off;
 * x86-64's baseline has no FMA), which is what __fmul_rn and __fadd_rn do on the device. */

#ifdef __CUDA_ARCH__
#define FMUL(a, b)    __fmul_rn(a, b)
#define FADD(a, b)    __fadd_rn(a, b)
#define FSUB(a, b)    __fsub_rn(a, b)
#define I2F(x)        __int2float_rn(x)
#define DP4A(a, b, c) __dp4a(a, b, c)
#define SYNC()        __syncthreads()
#else
#define FMUL(a, b)    ((float)(a) * (float)(b))
#define FADD(a, b)    ((float)(a) + (float)(b))
#define FSUB(a, b)    ((float)(a) - (float)(b))
#define I2F(x)        ((float)(x))
#define DP4A(a, b, c) dp4a_host(a, b, c)
#define SYNC()                                                                                     \
    do {                                                                                           \
    } while (0)
static inline int32_t dp4a_host(int32_t a, int32_t b, int32_t c)
{
    for (int k = 0; k < 4; k++)
        c += (int32_t)(int8_t)(a >> (8 * k)) * (int32_t)(int8_t)(b >> (8 * k));
    return c;
}
#endif
#define HD __host__ __device__ __forceinline__

/* engine/lstm/kernels.c lookup(): f(x) for x >= 0, index trunc(x * 256), linear between
 * entries, 1 from index 4095 on. */
HD float lookup(const float *t, float x)
{
    float s = FMUL(x, 256.0f);
    int i = s < (float)(OCP_CUDA_TABLE - 1) ? (int)s : OCP_CUDA_TABLE - 1;
    int i0 = i < OCP_CUDA_TABLE - 1 ? i : OCP_CUDA_TABLE - 2;
    float a = t[i0], b = t[i0 + 1];
    float v = FADD(a, FMUL(FSUB(b, a), FSUB(s, (float)i0)));
    return i >= OCP_CUDA_TABLE - 1 ? 1.0f : v;
}

HD float tanh_of(const float *tab, float x)
{
    float v = lookup(tab, x < 0 ? -x : x);
    return x < 0 ? -v : v;
}

HD float logistic_of(const float *tab, float x)
{
    float v = lookup(tab + OCP_CUDA_TABLE, x < 0 ? -x : x);
    return x < 0 ? FSUB(1.0f, v) : v;
}

/* ocp__lstm_quantise: in float, the product rounded, then |v| + 0.5 rounded and truncated. */
HD int8_t q8(float x)
{
    float v = FMUL(x, 127.0f);
    float a = FADD(v < 0 ? -v : v, 0.5f);
    int r = a < 127.0f ? (int)a : 127;
    return (int8_t)(v < 0 ? -r : r);
}

/* A row's finish (kernels.c finish_row): the bias times 127 added to the exact sum, the
 * int32 made a float, times the row's scale. */
HD float finish(int32_t s, int32_t bias, float scale)
{
    return FMUL(I2F(s + bias * 127), scale);
}

/* 4 bytes at any address, as the little-endian int32 of the packed weights. */
HD int32_t load4(const int8_t *p)
{
    return (int32_t)((uint32_t)(uint8_t)p[0] | (uint32_t)(uint8_t)p[1] << 8 |
                     (uint32_t)(uint8_t)p[2] << 16 | (uint32_t)(uint8_t)p[3] << 24);
}

/* ---- kernels ----------------------------------------------------------------------------
 * The per-line kernels take one block column a line (blockIdx.x) and stride over its
 * elements with blockIdx.y. */

struct lmeta {
    long long in, out, aux; /* the line's tensor in the input and output buffers; its
                               border tables (convolution) */
    int h, w;               /* the input's shape */
};

#define ELEMENTS(total) for (long long e = first; e < (total); e += stride)
#define LINE_FIRST      ((long long)blockIdx.y * blockDim.x + threadIdx.x)
#define LINE_STRIDE     ((long long)gridDim.y * blockDim.x)

/* forward.c convolve(): each output stacks the kx x ky neighbourhood, index (dx + hx) x ky +
 * (dy + hy); a neighbour outside the image takes the next border value. The pixels with such
 * neighbours are the border pixels: numbered row by row (rows[y] is the number before row y;
 * a row is all border when y < hy, y >= h - hy or w <= 2 hx, else its hx first and hx last),
 * boff[k] is the index of border pixel k's first value in the line's sequence. */
HD void conv_body(lmeta m, long long first, long long stride, const int8_t *in, int8_t *out,
                  const int *aux, const int8_t *draws, int d, int hx, int hy)
{
    int kx = 2 * hx + 1, ky = 2 * hy + 1, D = d * kx * ky;
    const int *rows = aux + m.aux, *boff = rows + m.h;
    ELEMENTS((long long)m.h * m.w)
    {
        int y = (int)(e / m.w), x = (int)(e % m.w);
        int8_t *dst = out + m.out + e * D;
        bool full = y < hy || y >= m.h - hy || m.w <= 2 * hx;
        bool border = full || x < hx || x >= m.w - hx;
        int k0 = 0;
        if (border)
            k0 = boff[rows[y] + (full || x < hx ? x : hx + x - (m.w - hx))];
        for (int dx = -hx; dx <= hx; dx++)
            for (int dy = -hy; dy <= hy; dy++) {
                int8_t *o = dst + ((dx + hx) * ky + (dy + hy)) * d;
                int yy = y + dy, xx = x + dx;
                if (yy >= 0 && yy < m.h && xx >= 0 && xx < m.w) {
                    const int8_t *s = in + m.in + ((long long)yy * m.w + xx) * d;
                    for (int k = 0; k < d; k++)
                        o[k] = s[k];
                } else
                    for (int k = 0; k < d; k++)
                        o[k] = draws[k0++];
            }
    }
}

__global__ void conv_k(const lmeta *L, const int8_t *in, int8_t *out, const int *aux,
                       const int8_t *draws, int d, int hx, int hy)
{
    conv_body(L[blockIdx.x], LINE_FIRST, LINE_STRIDE, in, out, aux, draws, d, hx, hy);
}

/* forward.c maxpool(): int8 max over xs x ys; output h / ys x w / xs. */
HD void maxpool_body(lmeta m, long long first, long long stride, const int8_t *in, int8_t *out,
                     int d, int xs, int ys)
{
    int oh = m.h / ys, ow = m.w / xs;
    ELEMENTS((long long)oh * ow * d)
    {
        int k = (int)(e % d);
        long long pos = e / d;
        int oy = (int)(pos / ow), ox = (int)(pos % ow);
        int8_t v = in[m.in + ((long long)(oy * ys) * m.w + ox * xs) * d + k];
        for (int j = 0; j < ys; j++)
            for (int i = 0; i < xs; i++) {
                int8_t u = in[m.in + ((long long)(oy * ys + j) * m.w + ox * xs + i) * d + k];
                v = u > v ? u : v;
            }
        out[m.out + e] = v;
    }
}

__global__ void maxpool_k(const lmeta *L, const int8_t *in, int8_t *out, int d, int xs, int ys)
{
    maxpool_body(L[blockIdx.x], LINE_FIRST, LINE_STRIDE, in, out, d, xs, ys);
}

/* forward.c transpose(), reverse_x(), reverse_y(): 0, 1, 2. */
HD void transform_body(lmeta m, long long first, long long stride, const int8_t *in, int8_t *out,
                       int d, int kind)
{
    ELEMENTS((long long)m.h * m.w * d)
    {
        int k = (int)(e % d);
        long long pos = e / d;
        int y = (int)(pos / m.w), x = (int)(pos % m.w);
        long long to = kind == 0   ? (long long)x * m.h + y
                       : kind == 1 ? (long long)y * m.w + (m.w - 1 - x)
                                   : (long long)(m.h - 1 - y) * m.w + x;
        out[m.out + to * d + k] = in[m.in + e];
    }
}

__global__ void transform_k(const lmeta *L, const int8_t *in, int8_t *out, int d, int kind)
{
    transform_body(L[blockIdx.x], LINE_FIRST, LINE_STRIDE, in, out, d, kind);
}

/* forward.c fully_connected(): every position p of the batch (P of them, inputs d apart)
 * times the matrix; row r of position p to out[p * R + r]: q8(f(product)) with f 0
 * identity, 1 tanh, 2 logistic, 3 relu, or the float itself into logits (the softmax's). */
HD void fc_body(const ocp_cuda_mat &w, long long first, long long stride, const float *tab,
                const int8_t *x, int d, long long P, int act, int8_t *out, float *logits)
{
    ELEMENTS(P * w.R)
    {
        long long p = e / w.R;
        int r = (int)(e % w.R);
        const int8_t *xp = x + p * d;
        int32_t s = 0;
        for (int g = 0; g < w.G; g++)
            s = DP4A(w.w4[(size_t)g * w.R + r], load4(xp + 4 * g), s);
        float f = finish(s, w.bias[r], w.scale[r]);
        if (logits) {
            logits[e] = f;
            continue;
        }
        if (act == 1)
            f = tanh_of(tab, f);
        else if (act == 2)
            f = logistic_of(tab, f);
        else if (act == 3)
            f = f < 0 ? 0.0f : f;
        out[e] = q8(f);
    }
}

__global__ void fc_k(ocp_cuda_mat w, const float *tab, const int8_t *x, int d, long long P, int act,
                     int8_t *out, float *logits)
{
    fc_body(w, (long long)blockIdx.x * blockDim.x + threadIdx.x, (long long)gridDim.x * blockDim.x,
            tab, x, d, P, act, out, logits);
}

/* One sequence of an LSTM: its inputs (len steps, ni apart), and where its outputs go. */
struct seqd {
    long long in, out;
    int len;
};

/* The shared memory of an LSTM block of S sequences, in bytes. */
static size_t lstm_smem(int S, const ocp_cuda_mat &w, int ns)
{
    return (size_t)S * (4 * (size_t)w.G + 4 * (size_t)w.R + 4 * (size_t)ns);
}

/* forward.c lstm() and kernels.c lstm_cell_scalar(): S sequences a block (block `blk`,
 * thread tid of bd), every step in one launch. Shared memory sh: src[S][4G] bytes ([x_t,
 * h_{t-1}], zero-padded to whole groups), gates[S][R] floats (CI, GI, GF1, GO), cell[S][ns]
 * floats. */
template <int S>
HD void lstm_block(const ocp_cuda_mat &w, const float *tab, const seqd *sq, int nseq, int ni,
                   int ns, int summarise, const int8_t *in, int8_t *out, int blk, int tid, int bd,
                   int32_t *sh)
{
    const int G = w.G, R = w.R;
    int32_t *src = sh;
    float *gates = (float *)(src + S * G);
    float *cell = gates + S * R;
    int8_t *srcb = (int8_t *)src;
    int len[S], maxlen = 0;
    seqd q[S];
    for (int s = 0; s < S; s++) {
        int i = blk * S + s;
        q[s] = i < nseq ? sq[i] : seqd{0, 0, 0};
        len[s] = q[s].len;
        maxlen = len[s] > maxlen ? len[s] : maxlen;
    }
    for (int i = tid; i < S * G; i += bd)
        src[i] = 0;
    for (int i = tid; i < S * ns; i += bd)
        cell[i] = 0.0f;
    SYNC();
    for (int t = 0; t < maxlen; t++) {
        for (int i = tid; i < S * ni; i += bd) {
            int s = i / ni, j = i % ni;
            if (t < len[s])
                srcb[s * 4 * G + j] = in[q[s].in + (long long)t * ni + j];
        }
        SYNC();
        for (int r = tid; r < R; r += bd) {
            int32_t acc[S];
            for (int s = 0; s < S; s++)
                acc[s] = 0;
#ifdef __CUDA_ARCH__
#pragma unroll 4
#endif
            for (int g = 0; g < G; g++) {
                int32_t wv = w.w4[(size_t)g * R + r];
                for (int s = 0; s < S; s++)
                    acc[s] = DP4A(wv, src[s * G + g], acc[s]);
            }
            int32_t b = w.bias[r];
            float sc = w.scale[r];
            for (int s = 0; s < S; s++)
                gates[s * R + r] = finish(acc[s], b, sc);
        }
        SYNC();
        for (int i = tid; i < S * ns; i += bd) {
            int s = i / ns, j = i % ns;
            const float *g = gates + s * R;
            float ci = tanh_of(tab, g[j]), gi = logistic_of(tab, g[ns + j]);
            float gf = logistic_of(tab, g[2 * ns + j]), go = logistic_of(tab, g[3 * ns + j]);
            float cv = FMUL(cell[i], gf);
            float add = FMUL(ci, gi);
            cv = FADD(cv, add);
            cv = cv > 100.0f ? 100.0f : cv < -100.0f ? -100.0f : cv;
            cell[i] = cv;
            int8_t h = q8(FMUL(tanh_of(tab, cv), go));
            srcb[s * 4 * G + ni + j] = h;
            if (t < len[s] && (!summarise || t == len[s] - 1))
                out[q[s].out + (summarise ? 0 : (long long)t * ns) + j] = h;
        }
        SYNC();
    }
}

template <int S>
__global__ void lstm_k(ocp_cuda_mat w, const float *tab, const seqd *sq, int nseq, int ni, int ns,
                       int summarise, const int8_t *in, int8_t *out)
{
    extern __shared__ int32_t sh[];
    lstm_block<S>(w, tab, sq, nseq, ni, ns, summarise, in, out, blockIdx.x, threadIdx.x, blockDim.x,
                  sh);
}

/* ---- the walk ----------------------------------------------------------------------------
 * As forward.c's run(), over lines [a, b) of the batch: the tensors of every line at each
 * node, one device buffer a layer. */

namespace
{

struct shape {
    int h, w;
};

struct walk {
    ocp_cuda_ctx *c;
    const ocp_lstm_model *m;
    ocp_cuda_model *cm;
    int n;                     /* lines */
    std::vector<shape> s;      /* each line's tensor */
    int d;                     /* their depth (the same for every line) */
    int8_t *buf = nullptr;     /* the lines' tensors, one after the other */
    const ocp_lstm_node *last; /* the network's last layer */
    float **probs;
    int *steps;
    char *err;
    size_t errlen;
    std::vector<void *> temp; /* freed at the end of the node */
};

size_t tensor_bytes(const walk &k, const std::vector<shape> &s, int d)
{
    size_t b = 0;
    for (const shape &x : s)
        b += (size_t)x.h * x.w * d;
    return b;
}

/* A device buffer for tensors of `bytes` (with the padding the 4-byte loads read past the
 * end), or OCP_CUDA_NOFIT. */
int new_buf(walk &k, size_t bytes, int8_t **out)
{
    *out = (int8_t *)ocp__cuda_alloc(k.c, bytes + OCP_LSTM_PAD);
    return *out ? 0 : OCP_CUDA_NOFIT;
}

/* Host data to the device, in memory freed at the end of the node. */
template <typename T> int upload(walk &k, const std::vector<T> &v, T **out)
{
    size_t bytes = std::max(v.size(), (size_t)1) * sizeof(T);
    *out = (T *)ocp__cuda_alloc(k.c, bytes);
    if (!*out)
        return OCP_CUDA_NOFIT;
    k.temp.push_back(*out);
    if (v.empty())
        return 0;
    return ocp__cuda_h2d(k.c, *out, v.data(), bytes, k.err, k.errlen);
}

void end_node(walk &k)
{
    for (void *p : k.temp)
        ocp__cuda_free(k.c, p);
    k.temp.clear();
}

/* Per-line metadata for the line kernels, output tensors of out_d bytes a position in
 * shapes `to`. */
std::vector<lmeta> metas(const walk &k, const std::vector<shape> &to, int out_d)
{
    std::vector<lmeta> L(k.n);
    long long in = 0, out = 0;
    for (int i = 0; i < k.n; i++) {
        L[i] = lmeta{in, out, 0, k.s[i].h, k.s[i].w};
        in += (long long)k.s[i].h * k.s[i].w * k.d;
        out += (long long)to[i].h * to[i].w * out_d;
    }
    return L;
}

dim3 line_grid(const walk &k, long long most)
{
    long long blocks = (most + THREADS - 1) / THREADS;
    return dim3((unsigned)k.n, (unsigned)std::min(std::max(blocks, 1LL), 65535LL));
}

/* The new tensors replace the old. */
void replace(walk &k, int8_t *buf, const std::vector<shape> &s, int d)
{
    ocp__cuda_free(k.c, k.buf);
    k.buf = buf;
    k.s = s;
    k.d = d;
}

int launched(walk &k, const char *what)
{
    return k.c->emulate ? 0 : ocp__cuda_check(k.c, cudaGetLastError(), what, k.err, k.errlen);
}

int transform(walk &k, int kind)
{
    std::vector<shape> to = k.s;
    if (kind == 0)
        for (shape &x : to)
            std::swap(x.h, x.w);
    size_t bytes = tensor_bytes(k, to, k.d);
    int8_t *o;
    lmeta *L;
    long long most = 0;
    for (const shape &x : k.s)
        most = std::max(most, (long long)x.h * x.w * k.d);
    int rc = new_buf(k, bytes, &o);
    if (!rc && (rc = upload(k, metas(k, to, k.d), &L)))
        ocp__cuda_free(k.c, o);
    if (rc)
        return rc;
    if (k.c->emulate)
        for (int i = 0; i < k.n; i++)
            transform_body(L[i], 0, 1, k.buf, o, k.d, kind);
    else
        transform_k<<<line_grid(k, most), THREADS, 0, k.c->st>>>(L, k.buf, o, k.d, kind);
    replace(k, o, to, k.d);
    return launched(k, "transform kernel");
}

int convolve(walk &k, const ocp_lstm_node *nd)
{
    int hx = nd->half_x, hy = nd->half_y, kx = 2 * hx + 1, ky = 2 * hy + 1, d = k.d;
    std::vector<lmeta> L = metas(k, k.s, d * kx * ky);
    /* The border tables, line by line: rows[h], then boff[border pixels]. */
    std::vector<int> aux;
    size_t draws = 0;
    long long most = 0;
    for (int i = 0; i < k.n; i++) {
        int h = k.s[i].h, w = k.s[i].w;
        most = std::max(most, (long long)h * w);
        L[i].aux = (long long)aux.size();
        size_t rows_at = aux.size();
        aux.resize(aux.size() + h);
        std::vector<int> boff;
        long long drawn = 0;
        for (int y = 0; y < h; y++) {
            aux[rows_at + y] = (int)boff.size();
            bool full = y < hy || y >= h - hy || w <= 2 * hx;
            for (int x = 0; x < w; x++) {
                if (!full && x >= hx && x < w - hx) {
                    x = w - hx - 1; /* the row's interior: no border value */
                    continue;
                }
                boff.push_back((int)drawn);
                for (int dx = -hx; dx <= hx; dx++)
                    for (int dy = -hy; dy <= hy; dy++)
                        if (y + dy < 0 || y + dy >= h || x + dx < 0 || x + dx >= w)
                            drawn += d;
            }
        }
        aux.insert(aux.end(), boff.begin(), boff.end());
        draws = std::max(draws, (size_t)drawn);
    }
    int rc = ocp__cuda_draws(k.c, k.m, k.cm, std::max(draws, (size_t)1), k.err, k.errlen);
    if (rc)
        return rc;
    int8_t *o;
    lmeta *dl;
    int *da;
    if ((rc = upload(k, L, &dl)) || (rc = upload(k, aux, &da)))
        return rc;
    std::vector<shape> to = k.s;
    if ((rc = new_buf(k, tensor_bytes(k, to, d * kx * ky), &o)))
        return rc;
    if (k.c->emulate)
        for (int i = 0; i < k.n; i++)
            conv_body(dl[i], 0, 1, k.buf, o, da, k.cm->draws, d, hx, hy);
    else
        conv_k<<<line_grid(k, most), THREADS, 0, k.c->st>>>(dl, k.buf, o, da, k.cm->draws, d, hx,
                                                            hy);
    replace(k, o, to, d * kx * ky);
    return launched(k, "convolution kernel");
}

int maxpool(walk &k, const ocp_lstm_node *nd)
{
    std::vector<shape> to = k.s;
    long long most = 0;
    for (shape &x : to) {
        x.h /= nd->y_scale;
        x.w /= nd->x_scale;
        most = std::max(most, (long long)x.h * x.w * k.d);
    }
    int8_t *o;
    lmeta *L;
    int rc = upload(k, metas(k, to, k.d), &L);
    if (rc || (rc = new_buf(k, tensor_bytes(k, to, k.d), &o)))
        return rc;
    if (k.c->emulate)
        for (int i = 0; i < k.n; i++)
            maxpool_body(L[i], 0, 1, k.buf, o, k.d, nd->x_scale, nd->y_scale);
    else
        maxpool_k<<<line_grid(k, most), THREADS, 0, k.c->st>>>(L, k.buf, o, k.d, nd->x_scale,
                                                               nd->y_scale);
    replace(k, o, to, k.d);
    return launched(k, "maxpool kernel");
}

unsigned fc_blocks(const walk &k, long long work)
{
    long long b = (work + THREADS - 1) / THREADS;
    return (unsigned)std::min(std::max(b, 1LL), (long long)k.c->sms * 64);
}

/* forward.c's softmax over the np steps of one line: logits in, probabilities out (and
 * their int8 values into q, unless NULL). */
void softmax_line(const float *logits, float *probs, int np, int no, int8_t *q)
{
    memcpy(probs, logits, (size_t)np * no * sizeof(float));
    for (int t = 0; t < np; t++) {
        float *p = probs + (size_t)t * no;
        float mx = p[0], sum = 0;
        for (int j = 1; j < no; j++)
            if (p[j] > mx)
                mx = p[j];
        for (int j = 0; j < no; j++) {
            float dd = p[j] - mx;
            p[j] = expf(dd < -86.0f ? -86.0f : dd);
            sum += p[j];
        }
        for (int j = 0; j < no; j++) {
            p[j] /= sum;
            if (q)
                q[(size_t)t * no + j] = ocp__lstm_quantise(p[j]);
        }
    }
}

/* Threads for the softmax: OCRPOOL_CUDA_SOFTMAX_THREADS, else half the CPUs, 1 to 8. */
int softmax_threads()
{
    static int n = 0;
    if (!n) {
        const char *e = getenv("OCRPOOL_CUDA_SOFTMAX_THREADS");
        long v = e && *e ? strtol(e, nullptr, 10) : (long)std::thread::hardware_concurrency() / 2;
        n = (int)std::max(1L, std::min(8L, v));
    }
    return n;
}

/* The softmax: the products on the GPU, then forward.c's loop on the CPU with glibc's expf
 * (CUDA's differs in the last bit), into each line's probabilities. */
int softmax(walk &k, const ocp_lstm_node *nd, const ocp_cuda_mat &w)
{
    for (int i = 0; i < k.n; i++)
        if (k.s[i].h != 1)
            return ocp_errf(OCP_E_ENGINE, k.err, k.errlen,
                            "softmax over %d rows: the network did not collapse the height",
                            k.s[i].h);
    long long P = 0;
    for (const shape &x : k.s)
        P += x.w;
    int no = nd->no;
    size_t bytes = (size_t)std::max(P, 1LL) * no * sizeof(float);
    float *logits = (float *)ocp__cuda_alloc(k.c, bytes);
    if (!logits)
        return OCP_CUDA_NOFIT;
    k.temp.push_back(logits);
    float *host = (float *)ocp__cuda_pinned(k.c, bytes);
    if (!host)
        return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "no pinned host memory for %zu bytes",
                        bytes);
    if (k.c->emulate)
        fc_body(w, 0, 1, k.c->tables, k.buf, k.d, P, 0, nullptr, logits);
    else
        fc_k<<<fc_blocks(k, P * no), THREADS, 0, k.c->st>>>(w, k.c->tables, k.buf, k.d, P, 0,
                                                            nullptr, logits);
    int rc = launched(k, "softmax products kernel");
    if (!rc)
        rc = ocp__cuda_d2h(k.c, host, logits, (size_t)P * no * sizeof(float), k.err, k.errlen);
    if (!rc)
        rc = ocp__cuda_sync(k.c, k.err, k.errlen);
    if (rc)
        return rc;
    bool more = nd != k.last; /* a layer after the softmax takes its quantised outputs */
    std::vector<int8_t> q(more ? (size_t)P * no : 0);
    std::vector<long long> at(k.n + 1, 0);
    for (int i = 0; i < k.n; i++) {
        at[i + 1] = at[i] + k.s[i].w;
        size_t np = (size_t)k.s[i].w;
        free(k.probs[i]);
        k.probs[i] = (float *)malloc((np ? np : 1) * no * sizeof(float));
        if (!k.probs[i])
            return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "out of memory");
        k.steps[i] = (int)np;
    }
    /* glibc's expf over every output is most of the batch's time on a fast GPU: the lines are
     * shared among a few threads (each line's arithmetic stays the CPU's). */
    std::atomic<int> next(0);
    auto work = [&]() {
        for (int i; (i = next++) < k.n;)
            softmax_line(host + at[i] * no, k.probs[i], k.s[i].w, no,
                         more ? q.data() + at[i] * no : nullptr);
    };
    int nt = (int)std::min<long long>(softmax_threads(), P * no / (1 << 18) + 1);
    std::vector<std::thread> th;
    for (int t = 1; t < nt; t++)
        th.emplace_back(work);
    work();
    for (auto &t : th)
        t.join();
    if (!more) /* nothing reads the softmax's int8 outputs */
        return 0;
    std::vector<shape> to = k.s;
    int8_t *o;
    if ((rc = new_buf(k, tensor_bytes(k, to, no), &o)))
        return rc;
    replace(k, o, to, no);
    return ocp__cuda_h2d(k.c, o, q.data(), q.size(), k.err, k.errlen);
}

int fully_connected(walk &k, const ocp_lstm_node *nd)
{
    const ocp_cuda_mat &w = k.cm->mats.at(nd);
    if (k.d != nd->ni)
        return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "%s: %d inputs where %d are expected",
                        nd->name, k.d, nd->ni);
    if (strncmp(nd->type, "Softmax", 7) == 0)
        return softmax(k, nd, w);
    int act = strcmp(nd->type, "Tanh") == 0       ? 1
              : strcmp(nd->type, "Logistic") == 0 ? 2
              : strcmp(nd->type, "Relu") == 0     ? 3
                                                  : 0;
    long long P = 0;
    for (const shape &x : k.s)
        P += (long long)x.h * x.w;
    int8_t *o;
    int rc = new_buf(k, (size_t)P * nd->no, &o);
    if (rc)
        return rc;
    if (k.c->emulate)
        fc_body(w, 0, 1, k.c->tables, k.buf, k.d, P, act, o, nullptr);
    else
        fc_k<<<fc_blocks(k, P * nd->no), THREADS, 0, k.c->st>>>(w, k.c->tables, k.buf, k.d, P, act,
                                                                o, nullptr);
    replace(k, o, k.s, nd->no);
    return launched(k, "fully connected kernel");
}

template <int S>
int launch_lstm(walk &k, const ocp_lstm_node *nd, const ocp_cuda_mat &w, const seqd *sq, int nseq,
                int8_t *o)
{
    size_t smem = lstm_smem(S, w, nd->no);
    if (smem > k.c->smem_max)
        return ocp_errf(OCP_E_ENGINE, k.err, k.errlen,
                        "%s: %zu bytes of shared memory a block, more than the GPU's %zu", nd->name,
                        smem, k.c->smem_max);
    if (k.c->emulate) {
        std::vector<int32_t> sh(smem / 4 + 1);
        for (int b = 0; b < (nseq + S - 1) / S; b++)
            lstm_block<S>(w, k.c->tables, sq, nseq, nd->ni, nd->no, nd->summarise, k.buf, o, b, 0,
                          1, sh.data());
        return 0;
    }
    if (smem > (48 << 10)) {
        int rc = OCP_CK(
            k.c,
            cudaFuncSetAttribute(lstm_k<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            k.err, k.errlen);
        if (rc)
            return rc;
    }
    int threads = std::min(1024, (w.R + 31) / 32 * 32);
    lstm_k<S><<<(nseq + S - 1) / S, threads, smem, k.c->st>>>(w, k.c->tables, sq, nseq, nd->ni,
                                                              nd->no, nd->summarise, k.buf, o);
    return launched(k, "LSTM kernel");
}

int lstm(walk &k, const ocp_lstm_node *nd)
{
    if (nd->two_d)
        return ocp_errf(OCP_E_ENGINE, k.err, k.errlen,
                        "%s: 2-D LSTMs are not supported yet (Debian's models have none)",
                        nd->name);
    if (k.d != nd->ni)
        return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "%s: %d inputs where %d are expected",
                        nd->name, k.d, nd->ni);
    const ocp_cuda_mat &w = k.cm->mats.at(nd);
    int ns = nd->no;
    std::vector<shape> to = k.s;
    if (nd->summarise)
        for (shape &x : to)
            x.w = 1;
    /* Every row of every line, longest first so that a block's sequences end together. */
    std::vector<seqd> q;
    long long in = 0, out = 0;
    for (int i = 0; i < k.n; i++) {
        for (int y = 0; y < k.s[i].h; y++)
            if (k.s[i].w > 0)
                q.push_back(seqd{in + (long long)y * k.s[i].w * k.d,
                                 out + (long long)y * to[i].w * ns, k.s[i].w});
        in += (long long)k.s[i].h * k.s[i].w * k.d;
        out += (long long)to[i].h * to[i].w * ns;
    }
    std::stable_sort(q.begin(), q.end(),
                     [](const seqd &a, const seqd &b) { return a.len > b.len; });
    int8_t *o;
    seqd *dq;
    size_t bytes = tensor_bytes(k, to, ns);
    int rc = upload(k, q, &dq);
    if (rc || (rc = new_buf(k, bytes, &o)))
        return rc;
    /* A summarising LSTM over rows of no columns leaves its outputs 0, as the CPU's. */
    rc = ocp__cuda_memset(k.c, o, 0, bytes, k.err, k.errlen);
    int nseq = (int)q.size();
    /* Several sequences a block share each weight load (the steps are bound by reading the
     * weights from L2), as long as there are still a block or more for each SM. */
    if (!rc && nseq > 0)
        rc = nseq >= 4 * k.c->sms   ? launch_lstm<4>(k, nd, w, dq, nseq, o)
             : nseq >= 2 * k.c->sms ? launch_lstm<2>(k, nd, w, dq, nseq, o)
                                    : launch_lstm<1>(k, nd, w, dq, nseq, o);
    if (rc) {
        ocp__cuda_free(k.c, o);
        return rc;
    }
    replace(k, o, to, ns);
    return 0;
}

int run(walk &k, const ocp_lstm_node *nd);

int run_node(walk &k, const ocp_lstm_node *nd)
{
    int rc = 0;
    switch (nd->kind) {
    case OCP_LSTM_INPUT:
        if (k.d != (nd->shape[3] > 0 ? nd->shape[3] : 1))
            return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "input depth %d, the model wants %d",
                            k.d, nd->shape[3]);
        return 0;
    case OCP_LSTM_SERIES:
        for (int i = 0; i < nd->n_children && !rc; i++)
            rc = run(k, &nd->children[i]);
        return rc;
    case OCP_LSTM_WRAP: {
        int kind = strcmp(nd->type, "XYTranspose") == 0   ? 0
                   : strcmp(nd->type, "RTLReversed") == 0 ? 1
                   : strcmp(nd->type, "TTBReversed") == 0 ? 2
                                                          : -1;
        if (kind < 0)
            return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "%s: not supported yet", nd->type);
        if ((rc = transform(k, kind)) || (rc = run(k, &nd->children[0])))
            return rc;
        return transform(k, kind);
    }
    case OCP_LSTM_CONVOLVE:
        return convolve(k, nd);
    case OCP_LSTM_MAXPOOL:
        return maxpool(k, nd);
    case OCP_LSTM_FC:
        return fully_connected(k, nd);
    case OCP_LSTM_LSTM:
        return lstm(k, nd);
    case OCP_LSTM_PARALLEL:
        break;
    }
    return ocp_errf(OCP_E_ENGINE, k.err, k.errlen, "%s: not supported yet", nd->type);
}

int run(walk &k, const ocp_lstm_node *nd)
{
    int rc = run_node(k, nd);
    end_node(k);
    return rc;
}

/* The network's last layer (a leaf): after it, nothing reads the tensors. */
const ocp_lstm_node *last_leaf(const ocp_lstm_node *nd)
{
    while ((nd->kind == OCP_LSTM_SERIES || nd->kind == OCP_LSTM_WRAP) && nd->n_children > 0)
        nd = &nd->children[nd->n_children - 1];
    return nd;
}

/* Lines [a, a + n) of the batch through the network: 0, an error, or OCP_CUDA_NOFIT when
 * something did not fit under the cap (nothing is then kept). */
int run_part(ocp_cuda_ctx *c, const ocp_lstm_model *m, ocp_cuda_model *cm, int n,
             const int8_t *const *img, const int *w, float **probs, int *steps, char *err,
             size_t errlen)
{
    walk k;
    k.c = c;
    k.m = m;
    k.cm = cm;
    k.n = n;
    k.d = 1;
    k.last = last_leaf(&m->net);
    k.probs = probs;
    k.steps = steps;
    k.err = err;
    k.errlen = errlen;
    k.s.resize(n);
    std::vector<int8_t> host;
    for (int i = 0; i < n; i++) {
        k.s[i] = shape{m->input_height, w[i]};
        host.insert(host.end(), img[i], img[i] + (size_t)m->input_height * w[i]);
    }
    int rc = new_buf(k, host.size(), &k.buf);
    if (!rc)
        rc = ocp__cuda_h2d(c, k.buf, host.data(), host.size(), err, errlen);
    if (!rc)
        rc = run(k, &m->net);
    if (!rc)
        rc = ocp__cuda_sync(c, err, errlen);
    end_node(k);
    ocp__cuda_free(c, k.buf);
    for (int i = 0; i < n && !rc; i++)
        if (!probs[i])
            rc = ocp_errf(OCP_E_ENGINE, err, errlen, "the network does not end in a softmax");
    if (rc)
        for (int i = 0; i < n; i++) {
            free(probs[i]);
            probs[i] = nullptr;
            steps[i] = 0;
        }
    return rc;
}

/* The shape (h, w) a line of h x w leaves node nd with: at the softmax, w is its steps. */
void out_shape(const ocp_lstm_node *nd, int h, int w, int *oh, int *ow)
{
    switch (nd->kind) {
    case OCP_LSTM_SERIES:
        for (int i = 0; i < nd->n_children; i++)
            out_shape(&nd->children[i], h, w, &h, &w);
        break;
    case OCP_LSTM_WRAP:
        if (strcmp(nd->type, "XYTranspose") == 0) {
            out_shape(&nd->children[0], w, h, &w, &h);
        } else if (nd->n_children > 0)
            out_shape(&nd->children[0], h, w, &h, &w);
        break;
    case OCP_LSTM_MAXPOOL:
        h /= nd->y_scale > 0 ? nd->y_scale : 1;
        w /= nd->x_scale > 0 ? nd->x_scale : 1;
        break;
    case OCP_LSTM_LSTM:
        if (nd->summarise)
            w = 1;
        break;
    default:
        break;
    }
    *oh = h;
    *ow = w;
}

/* Splits a batch that does not fit in halves, down to one line. */
int run_split(ocp_cuda_ctx *c, const ocp_lstm_model *m, ocp_cuda_model *cm, int first, int n,
              const int8_t *const *img, const int *w, float **probs, int *steps, char *err,
              size_t errlen)
{
    int rc = run_part(c, m, cm, n, img, w, probs, steps, err, errlen);
    if (rc != OCP_CUDA_NOFIT)
        return rc;
    if (c->lost)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "GPU lost: %s", c->lost_why);
    if (n == 1)
        return ocp_errf(OCP_E_RANGE, err, errlen,
                        "line %d (%d columns) does not fit under the GPU memory cap (%zu MB)",
                        first, w[0], c->cap >> 20);
    c->splits++;
    int h = n / 2;
    rc = run_split(c, m, cm, first, h, img, w, probs, steps, err, errlen);
    if (!rc)
        rc = run_split(c, m, cm, first + h, n - h, img + h, w + h, probs + h, steps + h, err,
                       errlen);
    return rc;
}

} // namespace

extern "C" int ocp_cuda_forward_batch(ocp_cuda_ctx *c, const ocp_lstm_model *m, int n,
                                      const int8_t *const *img, const int *w, float **probs,
                                      int *steps, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        probs[i] = nullptr;
        steps[i] = 0;
    }
    if (n < 1)
        return 0;
    if (c->lost)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "GPU lost: %s", c->lost_why);
    /* The CPU path's refusals of a line, in its words (forward.c ocp_lstm_forward_batch).
     * A batch whose lines together would hold more than OCP_LSTM_LINE_BYTES on the CPU is not
     * refused: its tensors are in device memory, under the cap (split to fit), and what it
     * holds in host memory is bounded below. */
    for (int i = 0; i < n; i++) {
        if (w[i] < 1)
            return ocp_errf(OCP_E_RANGE, err, errlen, "line %d: width %d", i, w[i]);
        char why[240];
        int rc = ocp_lstm_line_fits(m, w[i], why, sizeof why);
        if (rc)
            return ocp_errf(rc, err, errlen, "line %d: %s", i, why);
    }
    int rc = c->emulate ? 0 : OCP_CK(c, cudaSetDevice(c->device), err, errlen);
    ocp_cuda_model *cm = nullptr;
    if (!rc)
        rc = ocp__cuda_model(c, m, &cm, err, errlen);
    /* In parts of at most PART_BYTES of host memory: the images going, the products and
     * probabilities coming back. */
    for (int a = 0; a < n && !rc;) {
        int k = 0;
        double bytes = 0;
        while (a + k < n) {
            int sh = 0, sw = 0;
            out_shape(&m->net, m->input_height, w[a + k], &sh, &sw);
            double b = (double)m->input_height * w[a + k] + 2.0 * sw * m->classes * sizeof(float);
            if (k > 0 && bytes + b > PART_BYTES)
                break;
            bytes += b;
            k++;
        }
        rc = run_split(c, m, cm, a, k, img + a, w + a, probs + a, steps + a, err, errlen);
        a += k;
    }
    if (rc)
        for (int i = 0; i < n; i++) {
            free(probs[i]);
            probs[i] = nullptr;
            steps[i] = 0;
        }
    return rc;
}
