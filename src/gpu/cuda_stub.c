/*
 * cuda_stub.c: the CUDA forward pass's functions (gpu/cuda/cuda_forward.h) in a build
 * without CUDA (no nvcc found, or make CUDA=0): every one fails with "built without CUDA",
 * so the recognizer goes on with the CPU path. The Makefile leaves this file out when it
 * builds src/gpu/cuda/.
 */
#include "gpu/cuda/cuda_forward.h"
#include "core/error.h"

#include <stdlib.h>

int ocp_cuda_built(void)
{
    return 0;
}

const char *ocp_cuda_runtime_version(void)
{
    return "none";
}

int ocp_cuda_open(int device, size_t cap_bytes, int allow_growth, ocp_cuda_ctx **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    return ocp_errf(OCP_E_ENGINE, err, errlen, "built without CUDA");
}

int ocp_cuda_open_emulated(size_t cap_bytes, int allow_growth, ocp_cuda_ctx **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    return ocp_errf(OCP_E_ENGINE, err, errlen, "built without CUDA");
}

void ocp_cuda_inject_fault(ocp_cuda_ctx *ctx, int after)
{
}

void ocp_cuda_close(ocp_cuda_ctx *ctx)
{
}

const char *ocp_cuda_device_name(const ocp_cuda_ctx *ctx)
{
    return "";
}

size_t ocp_cuda_mem_used(const ocp_cuda_ctx *ctx)
{
    return 0;
}

void ocp_cuda_mem_stats(const ocp_cuda_ctx *ctx, ocp_cuda_mem *out)
{
    *out = (ocp_cuda_mem){0};
}

void ocp_cuda_trim(ocp_cuda_ctx *ctx)
{
}

int ocp_cuda_lost(const ocp_cuda_ctx *ctx)
{
    return 0;
}

int ocp_cuda_upload_model(ocp_cuda_ctx *ctx, const ocp_lstm_model *m, char *err, size_t errlen)
{
    return ocp_errf(OCP_E_ENGINE, err, errlen, "built without CUDA");
}

void ocp_cuda_forget_model(ocp_cuda_ctx *ctx, const ocp_lstm_model *m)
{
}

int ocp_cuda_forward_batch(ocp_cuda_ctx *ctx, const ocp_lstm_model *m, int n,
                           const int8_t *const *img, const int *w, float **probs, int *steps,
                           char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        probs[i] = NULL;
        steps[i] = 0;
    }
    return ocp_errf(OCP_E_ENGINE, err, errlen, "built without CUDA");
}
