/*
 * internal.h: inside the CUDA forward pass (the .cu files of src/gpu/cuda only; C++ with the CUDA
 * runtime). The context, its allocator, the models' weights on the device, and the checks
 * that turn a CUDA error into our error value.
 */
#ifndef OCP_GPU_CUDA_INTERNAL_H
#define OCP_GPU_CUDA_INTERNAL_H

#include "gpu/cuda/cuda_forward.h"

#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

#include <unordered_map>
#include <vector>

/* The activation tables' size: as the CPU's (engine/lstm/kernels.c). */
#define OCP_CUDA_TABLE 4096

/* Returned inside the pass when an allocation does not fit under the cap: the batch is
 * split (never seen by callers). */
#define OCP_CUDA_NOFIT 1

/* One weight matrix on the device, or the four gates of an LSTM stacked (rows CI, GI, GF1,
 * GO): R rows of n inputs, the inputs in G groups of 4. w4[g * R + r] packs row r's weights
 * 4g..4g+3 (zero past n) as the 4 bytes of an int32, so that the threads of a warp, one row
 * each, read consecutive words; bias[r] is the row's last column (int8) and scale[r] its
 * float scale. */
struct ocp_cuda_mat {
    int R = 0, G = 0, n = 0;
    int32_t *w4 = nullptr, *bias = nullptr;
    float *scale = nullptr;
};

/* A model's weights on the device: one matrix per FC or LSTM node; and its pseudo-random
 * border values, the same sequence for every line (each line's generator starts from the
 * model's seed): the first draws_n of it, on the device. */
struct ocp_cuda_model {
    std::unordered_map<const ocp_lstm_node *, ocp_cuda_mat> mats;
    std::vector<int8_t> draws_host;
    int8_t *draws = nullptr;
    size_t draws_n = 0;
};

/* One piece of device memory taken from CUDA: [base, base + size), handed out in ranges
 * (first fit, kept sorted by offset). */
struct ocp_cuda_chunk {
    char *base = nullptr;
    size_t size = 0;
    std::vector<std::pair<size_t, size_t>> used; /* (offset, size), sorted */
};

struct ocp_cuda_ctx {
    int device = 0;
    char name[256] = "";
    int sms = 1;
    size_t smem_max = 48 << 10; /* dynamic shared memory a block may opt in to */
    size_t cap = 0;
    int allow_growth = 0;
    int lost = 0;
    int emulate = 0;   /* ocp_cuda_open_emulated: host memory, the kernels run on the CPU */
    int fault_in = -1; /* ocp_cuda_inject_fault: the stream operations before a fault */
    char lost_why[256] = "";
    cudaStream_t st = nullptr;
    std::vector<ocp_cuda_chunk> chunks;
    std::unordered_map<void *, size_t> sizes; /* live allocations */
    size_t held = 0, in_use = 0, peak_held = 0, peak_in_use = 0;
    long splits = 0;
    /* The activation tables (tanh, logistic) on the device. */
    float *tables = nullptr;
    /* Pinned host memory for the results coming back. */
    void *pinned = nullptr;
    size_t pinned_size = 0;
    std::unordered_map<const ocp_lstm_model *, ocp_cuda_model *> models;
};

/* The allocator (ctx.cu): device memory under the cap, 256-byte aligned; NULL when it does
 * not fit (or CUDA refuses more in growth mode). Freeing is immediate: everything of a
 * context runs on its one stream, so a range handed out again is written only after the
 * kernels that read it before. */
void *ocp__cuda_alloc(ocp_cuda_ctx *c, size_t bytes);
void ocp__cuda_free(ocp_cuda_ctx *c, void *p);

/* Turns a CUDA error into our error value: OCP_E_ENGINE with "what: CUDA's text"; an error
 * that leaves the device unusable marks the context lost. Returns 0 for cudaSuccess. */
int ocp__cuda_check(ocp_cuda_ctx *c, cudaError_t e, const char *what, char *err, size_t errlen);
#define OCP_CK(c, call, err, errlen) ocp__cuda_check((c), (call), #call, (err), (errlen))

/* The context's stream operations (host copies when emulated): 0 or an error. */
int ocp__cuda_h2d(ocp_cuda_ctx *c, void *dst, const void *src, size_t n, char *err, size_t errlen);
int ocp__cuda_d2h(ocp_cuda_ctx *c, void *dst, const void *src, size_t n, char *err, size_t errlen);
int ocp__cuda_memset(ocp_cuda_ctx *c, void *dst, int v, size_t n, char *err, size_t errlen);
int ocp__cuda_sync(ocp_cuda_ctx *c, char *err, size_t errlen);

/* The model's device weights, uploaded if not yet (ctx.cu). */
int ocp__cuda_model(ocp_cuda_ctx *c, const ocp_lstm_model *m, ocp_cuda_model **out, char *err,
                    size_t errlen);

/* Makes the first n border values of the model's sequence present on the device. */
int ocp__cuda_draws(ocp_cuda_ctx *c, const ocp_lstm_model *m, ocp_cuda_model *cm, size_t n,
                    char *err, size_t errlen);

/* Pinned host memory of at least bytes (the context keeps it), or NULL. */
void *ocp__cuda_pinned(ocp_cuda_ctx *c, size_t bytes);

#endif
