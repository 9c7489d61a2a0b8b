/*
 * cuda_forward.h: the lstm engine's forward pass on an NVIDIA GPU (issue 17), behind the
 * same batch interface as the CPU's ocp_lstm_forward_batch (engine/lstm/forward.h): the
 * recognizer process (one per device) opens a context, uploads each model's weights once
 * and runs its batches of lines through it. Outputs are the CPU path's, bit for bit: exact
 * int8 products (dp4a), the same float operations in the same order (no fused
 * multiply-add), the CPU's activation tables, and the softmax's expf done on the CPU.
 *
 * Nothing CUDA appears here: the rest of the program includes this header whether or not
 * CUDA is built (src/gpu/cuda_stub.c provides the same functions, failing with "built
 * without CUDA"). The CUDA runtime is linked statically and creates nothing at load time:
 * the context exists only in the process that calls ocp_cuda_open (the recognizer, after
 * fork), and a machine without an NVIDIA driver gets an error from it, not a crash.
 *
 * A context belongs to one thread at a time.
 *
 * Memory: every device allocation of the context goes through its allocator, which never
 * holds more than the cap. allow_growth 0 reserves the whole cap at open; 1 takes it in
 * steps as batches need it and gives back the steps left empty at ocp_cuda_trim (the
 * recognizer calls it when idle). A batch that does not fit under the cap is split and run
 * in parts; a line that does not fit alone fails the batch with the reason. The CUDA context
 * itself (some hundreds of MB that the driver keeps) is outside the cap.
 *
 * Errors: 0, or an ocrpool error code with the reason in err. A device that fails (an Xid,
 * a lost device, a kernel fault) marks the context lost: that call and every later one
 * fail with "GPU lost: ...", and ocp_cuda_lost() says so, so the caller can go on with the
 * CPU path and open a new context later.
 */
#ifndef OCP_GPU_CUDA_FORWARD_H
#define OCP_GPU_CUDA_FORWARD_H

#include "engine/lstm/model.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ocp_cuda_ctx ocp_cuda_ctx;

/* 1 when this binary was built with CUDA support, 0 when not (the stub). */
int ocp_cuda_built(void);

/* The CUDA runtime's version this binary was built with ("13.0"), or "none". Static. */
const char *ocp_cuda_runtime_version(void);

/* Opens device `device` (the CUDA runtime's index: the recognizer runs with
 * CUDA_VISIBLE_DEVICES naming its GPU, so 0) with a cap of cap_bytes for everything the
 * context allocates (weights, batches). *out receives a new context (ocp_cuda_close). Fails
 * soft where there is no driver ("no CUDA driver"), no such device, or, with allow_growth
 * 0, when the cap cannot be reserved. */
int ocp_cuda_open(int device, size_t cap_bytes, int allow_growth, ocp_cuda_ctx **out, char *err,
                  size_t errlen);

/* For tests on machines without a GPU: a context whose "device" memory is host memory (the
 * same allocator and cap) and whose kernels run on the CPU: the same kernel bodies, walk,
 * border values and softmax as on a GPU, one thread. It checks the CUDA path's arithmetic
 * and indexing against the CPU path's, not the GPU's execution (launches, shared memory). */
int ocp_cuda_open_emulated(size_t cap_bytes, int allow_growth, ocp_cuda_ctx **out, char *err,
                           size_t errlen);

/* For tests: the context's stream operations (copies, synchronisations) fail as a lost
 * device would after `after` more of them succeed (-1: never). */
void ocp_cuda_inject_fault(ocp_cuda_ctx *ctx, int after);

/* Frees everything of the context, its device memory included. NULL does nothing. */
void ocp_cuda_close(ocp_cuda_ctx *ctx);

/* The device's name ("NVIDIA H200"). Borrowed from ctx. */
const char *ocp_cuda_device_name(const ocp_cuda_ctx *ctx);

/* Device memory the allocator holds now (reserved from CUDA, used or not): never above the
 * cap. */
size_t ocp_cuda_mem_used(const ocp_cuda_ctx *ctx);

/* The allocator's figures. Open type. */
typedef struct ocp_cuda_mem {
    size_t cap;         /* the cap given to ocp_cuda_open */
    size_t held;        /* reserved from CUDA now (= ocp_cuda_mem_used) */
    size_t in_use;      /* of it, handed out now (weights and any batch in flight) */
    size_t peak_held;   /* the most ever held */
    size_t peak_in_use; /* the most ever handed out */
    long splits;        /* batches split because they did not fit under the cap */
} ocp_cuda_mem;
void ocp_cuda_mem_stats(const ocp_cuda_ctx *ctx, ocp_cuda_mem *out);

/* With allow_growth, gives the steps that hold nothing back to CUDA (without it, nothing). */
void ocp_cuda_trim(ocp_cuda_ctx *ctx);

/* 1 once the device has failed (see the top); every call then fails. */
int ocp_cuda_lost(const ocp_cuda_ctx *ctx);

/* Uploads the weights of model m (borrowed: it must outlive its upload, or be forgotten
 * first) once; a second call for the same model does nothing. Forward passes upload a model
 * they have not seen. Fails when the weights do not fit under the cap, or the model has a
 * layer the CUDA path does not run (2-D LSTMs, Parallel). */
int ocp_cuda_upload_model(ocp_cuda_ctx *ctx, const ocp_lstm_model *m, char *err, size_t errlen);

/* Frees model m's weights on the device (before the model is freed). */
void ocp_cuda_forget_model(ocp_cuda_ctx *ctx, const ocp_lstm_model *m);

/*
 * ocp_lstm_forward_batch on the GPU, with its contract: n line images (img[i]: width w[i],
 * height m->input_height, int8) through the network; probs[i] (free()) receives steps[i] x
 * m->classes softmax outputs of line i, bit for bit the CPU path's. The same lines are
 * refused, in the same words (ocp_lstm_line_fits). A batch over OCP_LSTM_LINE_BYTES, which
 * the CPU refuses, runs here: its tensors are in device memory under the cap, and it goes
 * through in parts of at most 128 MB of host memory (images and outputs), each split again
 * when it does not fit under the cap. Returns 0 or an error code with the reason (then no
 * probs).
 */
int ocp_cuda_forward_batch(ocp_cuda_ctx *ctx, const ocp_lstm_model *m, int n,
                           const int8_t *const *img, const int *w, float **probs, int *steps,
                           char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
