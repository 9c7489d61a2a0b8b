/*
 * ctx.cu: the host side of the CUDA forward pass (cuda_forward.h): the context, its
 * allocator under the memory cap, the checks that turn CUDA errors into ours, the models'
 * weights on the device, the activation tables and the convolution's border values. The
 * kernels and the walk of the network are in forward.cu.
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

#define ALIGN 256

/* Under AddressSanitizer (make asan), the emulated context's memory is poisoned except what
 * is handed out, to the byte asked for: the kernels' indexing is checked there too. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(c, p, n)                                                                            \
    do {                                                                                           \
        if ((c)->emulate)                                                                          \
            ASAN_POISON_MEMORY_REGION((p), (n));                                                   \
    } while (0)
#define UNPOISON(c, p, n)                                                                          \
    do {                                                                                           \
        if ((c)->emulate)                                                                          \
            ASAN_UNPOISON_MEMORY_REGION((p), (n));                                                 \
    } while (0)
#else
#define POISON(c, p, n)   ((void)0)
#define UNPOISON(c, p, n) ((void)0)
#endif
/* With allow_growth, memory is taken from CUDA in steps of this (or a quarter of the cap
 * when that is less, so that the weights' step stays apart from the batches' and these
 * can be given back), or of what one allocation needs, in 2 MB units (CUDA's). */
#define GROWTH_STEP ((size_t)64 << 20)

/* ---- errors ----------------------------------------------------------------------------- */

int ocp__cuda_check(ocp_cuda_ctx *c, cudaError_t e, const char *what, char *err, size_t errlen)
{
    if (e == cudaSuccess)
        return 0;
    /* Only a refused allocation leaves the context as it was; anything else (a kernel
     * fault, an Xid, a device gone) may have broken it: the context is lost, and the
     * caller goes on without it. */
    if (e != cudaErrorMemoryAllocation && c && !c->lost) {
        c->lost = 1;
        snprintf(c->lost_why, sizeof c->lost_why, "%s: %s (%s)", what, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    }
    cudaGetLastError(); /* clears a non-sticky error */
    if (c && c->lost)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "GPU lost: %s", c->lost_why);
    return ocp_errf(OCP_E_ENGINE, err, errlen, "%s: %s", what, cudaGetErrorString(e));
}

/* ---- the allocator ---------------------------------------------------------------------- */

static void count(ocp_cuda_ctx *c)
{
    c->peak_held = std::max(c->peak_held, c->held);
    c->peak_in_use = std::max(c->peak_in_use, c->in_use);
}

/* First fit in a chunk: the offset of a free range of `bytes`, or SIZE_MAX. */
static size_t fit(const ocp_cuda_chunk &k, size_t bytes)
{
    size_t at = 0;
    for (const auto &u : k.used) {
        if (u.first - at >= bytes)
            return at;
        at = u.first + u.second;
    }
    return k.size - at >= bytes ? at : SIZE_MAX;
}

static int new_chunk(ocp_cuda_ctx *c, size_t size)
{
    void *p = nullptr;
    if (c->emulate) {
        if (!(p = calloc(1, size)))
            return -1;
    } else if (cudaMalloc(&p, size) != cudaSuccess) {
        cudaGetLastError(); /* the device is full: not fatal, the batch is split */
        return -1;
    }
    POISON(c, p, size);
    ocp_cuda_chunk k;
    k.base = (char *)p;
    k.size = size;
    c->chunks.push_back(k);
    c->held += size;
    count(c);
    return 0;
}

void *ocp__cuda_alloc(ocp_cuda_ctx *c, size_t bytes)
{
    [[maybe_unused]] size_t asked = bytes; /* (AddressSanitizer: the bytes asked for) */
    bytes = (std::max(bytes, (size_t)1) + ALIGN - 1) / ALIGN * ALIGN;
    for (int pass = 0; pass < 2; pass++) {
        for (auto &k : c->chunks) {
            size_t at = fit(k, bytes);
            if (at == SIZE_MAX)
                continue;
            auto pos =
                std::lower_bound(k.used.begin(), k.used.end(), std::make_pair(at, (size_t)0));
            k.used.insert(pos, std::make_pair(at, bytes));
            c->sizes[k.base + at] = bytes;
            c->in_use += bytes;
            count(c);
            UNPOISON(c, k.base + at, asked);
            return k.base + at;
        }
        /* Nothing free: with allow_growth, one more step if the cap allows it. */
        if (pass || !c->allow_growth)
            return nullptr;
        size_t mb2 = (size_t)2 << 20, small = std::min(GROWTH_STEP, c->cap / 4 / mb2 * mb2);
        size_t step = std::max(small, (bytes + mb2 - 1) / mb2 * mb2);
        if (c->held + step > c->cap)
            step = (c->cap - c->held) / ALIGN * ALIGN;
        if (step < bytes || new_chunk(c, step))
            return nullptr;
    }
    return nullptr;
}

void ocp__cuda_free(ocp_cuda_ctx *c, void *p)
{
    if (!p)
        return;
    auto it = c->sizes.find(p);
    if (it == c->sizes.end())
        return;
    for (auto &k : c->chunks) {
        if ((char *)p < k.base || (char *)p >= k.base + k.size)
            continue;
        size_t at = (size_t)((char *)p - k.base);
        for (auto u = k.used.begin(); u != k.used.end(); ++u)
            if (u->first == at) {
                k.used.erase(u);
                break;
            }
        break;
    }
    POISON(c, p, it->second);
    c->in_use -= it->second;
    c->sizes.erase(it);
}

void ocp_cuda_trim(ocp_cuda_ctx *c)
{
    if (!c || !c->allow_growth)
        return;
    if (!c->emulate)
        cudaSetDevice(c->device);
    for (size_t i = c->chunks.size(); i-- > 0;) {
        if (!c->chunks[i].used.empty())
            continue;
        if (c->emulate) {
            UNPOISON(c, c->chunks[i].base, c->chunks[i].size);
            free(c->chunks[i].base);
        } else
            cudaFree(c->chunks[i].base); /* synchronises: nothing in flight uses it */
        c->held -= c->chunks[i].size;
        c->chunks.erase(c->chunks.begin() + (long)i);
    }
}

void *ocp__cuda_pinned(ocp_cuda_ctx *c, size_t bytes)
{
    if (c->pinned_size >= bytes)
        return c->pinned;
    if (c->pinned)
        c->emulate ? free(c->pinned) : (void)cudaFreeHost(c->pinned);
    c->pinned = nullptr;
    c->pinned_size = 0;
    size_t size = std::max(bytes, (size_t)1 << 20);
    if (c->emulate) {
        if (!(c->pinned = malloc(size)))
            return nullptr;
    } else if (cudaMallocHost(&c->pinned, size) != cudaSuccess) {
        cudaGetLastError();
        c->pinned = nullptr;
        return nullptr;
    }
    c->pinned_size = size;
    return c->pinned;
}

/* ---- the stream's operations --------------------------------------------------------------
 * Asynchronous on the context's stream. A copy from pageable host memory is staged by the
 * driver before the call returns, so the caller may free its buffer at once. */

/* The injected fault (ocp_cuda_inject_fault), as the device would report one: 0 until it
 * is due. */
static int injected(ocp_cuda_ctx *c, char *err, size_t errlen)
{
    if (c->fault_in < 0 || c->fault_in-- > 0)
        return 0;
    return ocp__cuda_check(c, cudaErrorLaunchFailure, "injected fault", err, errlen);
}

extern "C" void ocp_cuda_inject_fault(ocp_cuda_ctx *c, int after)
{
    c->fault_in = after;
}

int ocp__cuda_h2d(ocp_cuda_ctx *c, void *dst, const void *src, size_t n, char *err, size_t errlen)
{
    if (injected(c, err, errlen))
        return OCP_E_ENGINE;
    if (c->emulate) {
        memcpy(dst, src, n);
        return 0;
    }
    return OCP_CK(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->st), err, errlen);
}

int ocp__cuda_d2h(ocp_cuda_ctx *c, void *dst, const void *src, size_t n, char *err, size_t errlen)
{
    if (c->emulate) {
        memcpy(dst, src, n);
        return 0;
    }
    return OCP_CK(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->st), err, errlen);
}

int ocp__cuda_memset(ocp_cuda_ctx *c, void *dst, int v, size_t n, char *err, size_t errlen)
{
    if (c->emulate) {
        memset(dst, v, n);
        return 0;
    }
    return OCP_CK(c, cudaMemsetAsync(dst, v, n, c->st), err, errlen);
}

int ocp__cuda_sync(ocp_cuda_ctx *c, char *err, size_t errlen)
{
    if (injected(c, err, errlen))
        return OCP_E_ENGINE;
    return c->emulate ? 0 : OCP_CK(c, cudaStreamSynchronize(c->st), err, errlen);
}

/* ---- the context ------------------------------------------------------------------------ */

extern "C" int ocp_cuda_built(void)
{
    return 1;
}

extern "C" const char *ocp_cuda_runtime_version(void)
{
    static char v[16];
    snprintf(v, sizeof v, "%d.%d", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    return v;
}

/* The CPU's tables (engine/lstm/kernels.c builds them the same way, with the same libm),
 * checked against the CPU's own lookups at every entry they can show. */
static int upload_tables(ocp_cuda_ctx *c, char *err, size_t errlen)
{
    std::vector<float> t(2 * OCP_CUDA_TABLE);
    for (int i = 0; i < OCP_CUDA_TABLE; i++) {
        double x = i / 256.0;
        t[i] = (float)tanh(x);
        t[OCP_CUDA_TABLE + i] = (float)(1.0 / (1.0 + exp(-x)));
    }
    for (int i = 0; i < OCP_CUDA_TABLE - 1; i++) {
        float x = (float)i / 256.0f;
        if (ocp_lstm_tanh(x) != t[i] || ocp_lstm_logistic(x) != t[OCP_CUDA_TABLE + i])
            return ocp_errf(OCP_E_ENGINE, err, errlen,
                            "the activation tables differ from the CPU's at entry %d", i);
    }
    c->tables = (float *)ocp__cuda_alloc(c, t.size() * sizeof(float));
    if (!c->tables)
        return ocp_errf(OCP_E_RANGE, err, errlen, "the GPU memory cap (%zu bytes) is too small",
                        c->cap);
    return ocp__cuda_h2d(c, c->tables, t.data(), t.size() * sizeof(float), err, errlen);
}

extern "C" int ocp_cuda_open(int device, size_t cap_bytes, int allow_growth, ocp_cuda_ctx **out,
                             char *err, size_t errlen)
{
    *out = nullptr;
    int dv = 0, n = 0;
    /* The static runtime loads libcuda.so.1 here, not at program start: without a driver
     * this is the first and only CUDA call. */
    if (cudaDriverGetVersion(&dv) != cudaSuccess || dv == 0) {
        cudaGetLastError();
        return ocp_errf(OCP_E_ENGINE, err, errlen, "no CUDA driver");
    }
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return ocp_errf(OCP_E_ENGINE, err, errlen, "no CUDA device: %s", cudaGetErrorString(e));
    }
    if (device < 0 || device >= n)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "no CUDA device %d (%d found)", device, n);
    if (cap_bytes < ((size_t)4 << 20))
        return ocp_errf(OCP_E_RANGE, err, errlen, "a GPU memory cap of %zu bytes: 4 MB at least",
                        cap_bytes);
    ocp_cuda_ctx *c = new ocp_cuda_ctx;
    c->device = device;
    c->cap = cap_bytes / ALIGN * ALIGN;
    c->allow_growth = allow_growth != 0;
    cudaDeviceProp p;
    int rc = OCP_CK(c, cudaSetDevice(device), err, errlen);
    if (!rc)
        rc = OCP_CK(c, cudaGetDeviceProperties(&p, device), err, errlen);
    if (!rc) {
        snprintf(c->name, sizeof c->name, "%s", p.name);
        c->sms = p.multiProcessorCount;
        c->smem_max = p.sharedMemPerBlockOptin;
        if (p.major * 10 + p.minor < 61)
            rc = ocp_errf(OCP_E_ENGINE, err, errlen,
                          "%s: compute capability %d.%d, the int8 products need 6.1", p.name,
                          p.major, p.minor);
    }
    if (!rc)
        rc = OCP_CK(c, cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking), err, errlen);
    if (!rc && !c->allow_growth && new_chunk(c, c->cap))
        rc = ocp_errf(OCP_E_RANGE, err, errlen, "cannot reserve %zu MB on %s (allow growth off)",
                      c->cap >> 20, c->name);
    if (!rc)
        rc = upload_tables(c, err, errlen);
    if (rc) {
        ocp_cuda_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

extern "C" int ocp_cuda_open_emulated(size_t cap_bytes, int allow_growth, ocp_cuda_ctx **out,
                                      char *err, size_t errlen)
{
    *out = nullptr;
    if (cap_bytes < ((size_t)4 << 20))
        return ocp_errf(OCP_E_RANGE, err, errlen, "a GPU memory cap of %zu bytes: 4 MB at least",
                        cap_bytes);
    ocp_cuda_ctx *c = new ocp_cuda_ctx;
    c->emulate = 1;
    snprintf(c->name, sizeof c->name, "emulated on the CPU");
    c->sms = 2; /* few, so that small batches take every LSTM kernel (1, 2, 4 a block) */
    c->cap = cap_bytes / ALIGN * ALIGN;
    c->allow_growth = allow_growth != 0;
    int rc = 0;
    if (!c->allow_growth && new_chunk(c, c->cap))
        rc = ocp_errf(OCP_E_RANGE, err, errlen, "cannot reserve %zu MB", c->cap >> 20);
    if (!rc)
        rc = upload_tables(c, err, errlen);
    if (rc) {
        ocp_cuda_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void free_model(ocp_cuda_ctx *c, ocp_cuda_model *cm)
{
    for (auto &kv : cm->mats)
        ocp__cuda_free(c, kv.second.w4);
    ocp__cuda_free(c, cm->draws);
    delete cm;
}

extern "C" void ocp_cuda_close(ocp_cuda_ctx *c)
{
    if (!c)
        return;
    for (auto &kv : c->models)
        free_model(c, kv.second);
    if (c->emulate) {
        for (auto &k : c->chunks) {
            UNPOISON(c, k.base, k.size);
            free(k.base);
        }
        free(c->pinned);
        delete c;
        return;
    }
    cudaSetDevice(c->device);
    if (c->st)
        cudaStreamDestroy(c->st);
    for (auto &k : c->chunks)
        cudaFree(k.base);
    if (c->pinned)
        cudaFreeHost(c->pinned);
    cudaGetLastError();
    delete c;
}

extern "C" const char *ocp_cuda_device_name(const ocp_cuda_ctx *c)
{
    return c ? c->name : "";
}

extern "C" size_t ocp_cuda_mem_used(const ocp_cuda_ctx *c)
{
    return c ? c->held : 0;
}

extern "C" void ocp_cuda_mem_stats(const ocp_cuda_ctx *c, ocp_cuda_mem *out)
{
    *out = ocp_cuda_mem{};
    if (!c)
        return;
    out->cap = c->cap;
    out->held = c->held;
    out->in_use = c->in_use;
    out->peak_held = c->peak_held;
    out->peak_in_use = c->peak_in_use;
    out->splits = c->splits;
}

extern "C" int ocp_cuda_lost(const ocp_cuda_ctx *c)
{
    return c && c->lost;
}

/* ---- models ----------------------------------------------------------------------------- */

/* Packs `parts` matrices of the same inputs, stacked, into one device matrix (see
 * ocp_cuda_mat). */
static int upload_mat(ocp_cuda_ctx *c, const ocp_lstm_matrix *const *parts, int np,
                      ocp_cuda_mat *out, char *err, size_t errlen)
{
    int n = parts[0]->cols - 1, R = 0;
    for (int i = 0; i < np; i++)
        R += parts[i]->rows;
    int G = (n + 3) / 4;
    std::vector<int32_t> w4((size_t)G * R + 2 * (size_t)R);
    int32_t *bias = w4.data() + (size_t)G * R;
    float *scale = (float *)(bias + R);
    int r = 0;
    for (int i = 0; i < np; i++) {
        const ocp_lstm_matrix *m = parts[i];
        for (int row = 0; row < m->rows; row++, r++) {
            const int8_t *w = m->w + (size_t)row * m->cols;
            for (int g = 0; g < G; g++) {
                uint32_t word = 0;
                for (int b = 0; b < 4; b++)
                    if (4 * g + b < n)
                        word |= (uint32_t)(uint8_t)w[4 * g + b] << (8 * b);
                w4[(size_t)g * R + r] = (int32_t)word;
            }
            bias[r] = w[n];
            scale[r] = m->scales[row];
        }
    }
    size_t bytes = w4.size() * sizeof(int32_t);
    out->R = R;
    out->G = G;
    out->n = n;
    out->w4 = (int32_t *)ocp__cuda_alloc(c, bytes);
    if (!out->w4)
        return ocp_errf(OCP_E_RANGE, err, errlen,
                        "the model's weights do not fit under the GPU memory cap (%zu MB)",
                        c->cap >> 20);
    out->bias = out->w4 + (size_t)G * R;
    out->scale = (float *)(out->bias + R);
    int rc = ocp__cuda_h2d(c, out->w4, w4.data(), bytes, err, errlen);
    return rc ? rc : ocp__cuda_sync(c, err, errlen); /* w4 is freed on return */
}

static int upload_node(ocp_cuda_ctx *c, const ocp_lstm_node *nd, ocp_cuda_model *cm, char *err,
                       size_t errlen)
{
    int rc = 0;
    switch (nd->kind) {
    case OCP_LSTM_SERIES:
    case OCP_LSTM_WRAP:
        for (int i = 0; i < nd->n_children && !rc; i++)
            rc = upload_node(c, &nd->children[i], cm, err, errlen);
        return rc;
    case OCP_LSTM_FC: {
        const ocp_lstm_matrix *p[1] = {&nd->fc};
        return upload_mat(c, p, 1, &cm->mats[nd], err, errlen);
    }
    case OCP_LSTM_LSTM: {
        if (nd->two_d)
            return ocp_errf(OCP_E_ENGINE, err, errlen,
                            "%s: 2-D LSTMs are not supported yet (Debian's models have none)",
                            nd->name);
        const ocp_lstm_matrix *p[4] = {&nd->gate[0], &nd->gate[1], &nd->gate[2], &nd->gate[3]};
        for (int i = 0; i < 4; i++)
            if (p[i]->rows != nd->no || p[i]->cols - 1 != nd->na || nd->na != nd->ni + nd->no)
                return ocp_errf(OCP_E_ENGINE, err, errlen, "%s: gate %d is %dx%d", nd->name, i,
                                p[i]->rows, p[i]->cols);
        return upload_mat(c, p, 4, &cm->mats[nd], err, errlen);
    }
    case OCP_LSTM_PARALLEL:
        return ocp_errf(OCP_E_ENGINE, err, errlen, "%s: not supported yet", nd->type);
    default:
        return 0;
    }
}

int ocp__cuda_model(ocp_cuda_ctx *c, const ocp_lstm_model *m, ocp_cuda_model **out, char *err,
                    size_t errlen)
{
    auto it = c->models.find(m);
    if (it != c->models.end()) {
        *out = it->second;
        return 0;
    }
    ocp_cuda_model *cm = new ocp_cuda_model;
    int rc = upload_node(c, &m->net, cm, err, errlen);
    if (rc) {
        free_model(c, cm);
        return rc;
    }
    c->models[m] = cm;
    *out = cm;
    return 0;
}

extern "C" int ocp_cuda_upload_model(ocp_cuda_ctx *c, const ocp_lstm_model *m, char *err,
                                     size_t errlen)
{
    if (c->lost)
        return ocp_errf(OCP_E_ENGINE, err, errlen, "GPU lost: %s", c->lost_why);
    if (!c->emulate)
        cudaSetDevice(c->device);
    ocp_cuda_model *cm;
    return ocp__cuda_model(c, m, &cm, err, errlen);
}

extern "C" void ocp_cuda_forget_model(ocp_cuda_ctx *c, const ocp_lstm_model *m)
{
    if (!c)
        return;
    auto it = c->models.find(m);
    if (it == c->models.end())
        return;
    if (!c->emulate) {
        cudaSetDevice(c->device);
        cudaStreamSynchronize(c->st);
    }
    free_model(c, it->second);
    c->models.erase(it);
}

/* ---- the convolution's border values ----------------------------------------------------
 * As forward.c draws them: minstd_rand seeded with sample_iteration x 0x10000001, one draw
 * discarded, then round-half-away(127 x 2 x r / INT32_MAX - 127) in double for each value.
 * Every line starts from the same seed, so the values of any line are a prefix of one
 * sequence: made here once, as long as the widest line needs. */

int ocp__cuda_draws(ocp_cuda_ctx *c, const ocp_lstm_model *m, ocp_cuda_model *cm, size_t n,
                    char *err, size_t errlen)
{
    if (n <= cm->draws_n)
        return 0;
    n = std::max(n, cm->draws_n * 2);
    uint64_t rng = ((uint64_t)(uint32_t)m->sample_iteration * 0x10000001ULL) % 2147483647u;
    if (!rng)
        rng = 1;
    rng = rng * 48271u % 2147483647u;
    cm->draws_host.resize(n);
    for (size_t i = 0; i < n; i++) {
        rng = rng * 48271u % 2147483647u;
        double r = (double)(uint32_t)rng;
        cm->draws_host[i] = (int8_t)ocp__lstm_round_away(127.0 * 2.0 * r / 2147483647.0 - 127.0);
    }
    int8_t *d = (int8_t *)ocp__cuda_alloc(c, n);
    if (!d)
        return OCP_CUDA_NOFIT;
    ocp__cuda_free(c, cm->draws);
    cm->draws = d;
    cm->draws_n = n;
    return ocp__cuda_h2d(c, d, cm->draws_host.data(), n, err, errlen);
}
