/*
 * lstm_cuda MODE MODEL IMAGE...: the CUDA forward pass (src/gpu/cuda) against the CPU's on
 * line images (each IMAGE one text line, as bench/lstm_parity.sh renders them; each is also
 * run inverted, as the engine reruns a doubtful line). Run by scripts/gpu-device-check.sh on
 * the GPU machine. Modes:
 *   parity   every line through the CPU (ocp_lstm_forward) and the GPU (batches of 1, 7 and
 *            64, and the widest lines under a small memory cap, which splits them): the
 *            outputs must be equal bit for bit; exits 1 at the first difference
 *   speed    lines/s of the forward pass, CPU (one thread) and GPU, at batch sizes 1 to 256
 *            (LSTM_CUDA_SECONDS each, 1 by default)
 *   memory   the GPU memory the context holds under caps of 32 MB to 2 GB, with and without
 *            allow growth (the allocator's figures, and NVML's for this process): never above
 *            the cap; exits 1 when it is
 * Without a CUDA device (or built without CUDA) it prints "skipped: no CUDA device (reason)"
 * and exits 77. LSTM_CUDA_EMULATE=1 runs it on the emulated context instead (the kernels on
 * the CPU: to check this tool and the lines where there is no GPU; its speed means nothing).
 */
#include "core/error.h"
#include "engine/lstm/forward.h"
#include "gpu/cuda/cuda_forward.h"
#include "gpu/gpu.h"

#include <leptonica/allheaders.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SKIP 77

typedef struct lines {
    int n;
    int8_t **img;
    int *w;
} lines;

/* A context on device 0, or the emulated one (LSTM_CUDA_EMULATE). */
static int open_ctx(size_t cap, int growth, ocp_cuda_ctx **ctx, char *err, size_t errlen)
{
    const char *e = getenv("LSTM_CUDA_EMULATE");
    if (e && *e && strcmp(e, "0") != 0)
        return ocp_cuda_open_emulated(cap, growth, ctx, err, errlen);
    return ocp_cuda_open(0, cap, growth, ctx, err, errlen);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* The image at path as 8-bit grey (malloc), or NULL. */
static unsigned char *read_grey(const char *path, int *w, int *h)
{
    PIX *p = pixRead(path);
    PIX *g = p ? pixConvertTo8(p, 0) : NULL;
    pixDestroy(&p);
    if (!g)
        return NULL;
    *w = pixGetWidth(g);
    *h = pixGetHeight(g);
    unsigned char *grey = malloc((size_t)*w * *h);
    for (int y = 0; y < *h; y++)
        for (int x = 0; x < *w; x++) {
            l_uint32 v;
            pixGetPixel(g, x, y, &v);
            grey[(size_t)y * *w + x] = (unsigned char)v;
        }
    pixDestroy(&g);
    return grey;
}

/* Every image prepared for the model, then every one inverted. */
static int read_lines(const ocp_lstm_model *m, int nimg, char **paths, lines *L)
{
    L->img = calloc((size_t)nimg * 2 + 1, sizeof *L->img);
    L->w = calloc((size_t)nimg * 2 + 1, sizeof *L->w);
    L->n = 0;
    for (int inv = 0; inv < 2; inv++)
        for (int i = 0; i < nimg; i++) {
            int w = 0, h = 0;
            char err[300];
            unsigned char *grey = read_grey(paths[i], &w, &h);
            if (!grey) {
                fprintf(stderr, "%s: cannot read\n", paths[i]);
                return 1;
            }
            if (ocp_lstm_prepare_line(m, grey, w, h, w, 1, inv, &L->img[L->n], &L->w[L->n], err,
                                      sizeof err)) {
                fprintf(stderr, "%s: %s\n", paths[i], err);
                free(grey);
                return 1;
            }
            L->n++;
            free(grey);
        }
    return 0;
}

/* Lines [first, first + n) through the GPU in batches of `batch`, each compared with cpu[]:
 * the number of lines that differ (the first one described on stdout), -1 on an error. */
static int compare(ocp_cuda_ctx *ctx, const ocp_lstm_model *m, const lines *L, int first, int n,
                   int batch, float **cpu, const int *cpu_steps)
{
    int bad = 0;
    float **pr = calloc((size_t)batch, sizeof *pr);
    int *st = calloc((size_t)batch, sizeof *st);
    for (int a = first; a < first + n; a += batch) {
        int k = first + n - a < batch ? first + n - a : batch;
        char err[400];
        int rc = ocp_cuda_forward_batch(ctx, m, k, (const int8_t *const *)L->img + a, L->w + a, pr,
                                        st, err, sizeof err);
        if (rc) {
            printf("  batch of %d from line %d: %s\n", k, a, err);
            bad = -1;
            break;
        }
        for (int i = 0; i < k; i++) {
            int l = a + i;
            size_t len = (size_t)st[i] * m->classes;
            if (st[i] == cpu_steps[l] && !memcmp(pr[i], cpu[l], len * sizeof(float))) {
                free(pr[i]);
                continue;
            }
            if (!bad) {
                size_t at = 0;
                float md = 0;
                for (size_t j = 0; st[i] == cpu_steps[l] && j < len; j++) {
                    float d = pr[i][j] > cpu[l][j] ? pr[i][j] - cpu[l][j] : cpu[l][j] - pr[i][j];
                    if (d > md) {
                        md = d;
                        at = j;
                    }
                }
                printf("  line %d (%d columns): steps %d / CPU %d, first step differing %zu, "
                       "max |diff| %g\n",
                       l, L->w[l], st[i], cpu_steps[l], at / (size_t)m->classes, md);
            }
            bad++;
            free(pr[i]);
        }
    }
    free(pr);
    free(st);
    return bad;
}

static int parity(const ocp_lstm_model *m, const char *name, const lines *L, size_t cap)
{
    char err[400];
    float **cpu = calloc((size_t)L->n + 1, sizeof *cpu);
    int *cs = calloc((size_t)L->n + 1, sizeof *cs);
    long steps = 0;
    for (int i = 0; i < L->n; i++) {
        if (ocp_lstm_forward(m, L->img[i], L->w[i], &cpu[i], &cs[i], err, sizeof err)) {
            printf("CPU, line %d: %s\n", i, err);
            return 1;
        }
        steps += cs[i];
    }
    ocp_cuda_ctx *ctx;
    if (open_ctx(cap, 0, &ctx, err, sizeof err)) {
        printf("cuda: %s\n", err);
        return 1;
    }
    int fail = 0;
    static const int batches[] = {1, 7, 64};
    for (int b = 0; b < 3; b++) {
        int n = batches[b] == 1 && L->n > 40 ? 40 : L->n; /* one by one: the first 40 */
        int bad = compare(ctx, m, L, 0, n, batches[b], cpu, cs);
        printf("parity %s: batches of %3d: %d lines, %d equal to the CPU's bit for bit\n", name,
               batches[b], n, bad < 0 ? 0 : n - bad);
        fail |= bad != 0;
    }
    ocp_cuda_close(ctx);
    /* Under an 8 MB cap, batches of 64 split (the widest lines' tensors alone take more). */
    if (open_ctx((size_t)8 << 20, 0, &ctx, err, sizeof err)) {
        printf("cuda (8 MB): %s\n", err);
        return 1;
    }
    int bad = compare(ctx, m, L, 0, L->n, 64, cpu, cs);
    ocp_cuda_mem mem;
    ocp_cuda_mem_stats(ctx, &mem);
    printf("parity %s: 8 MB cap, batches of 64: %d lines, %d equal, %ld splits, peak %zu bytes\n",
           name, L->n, bad < 0 ? 0 : L->n - bad, mem.splits, mem.peak_held);
    fail |= bad != 0 || mem.peak_held > mem.cap;
    ocp_cuda_close(ctx);
    printf("parity %s: %s (%d lines, %ld time steps)\n", name, fail ? "FAIL" : "PASS", L->n, steps);
    for (int i = 0; i < L->n; i++)
        free(cpu[i]);
    free(cpu);
    free(cs);
    return fail;
}

/* Lines/s of `batch` lines at a time, cycling through L, for about `secs` (*cps: columns/s).
 * gpu NULL: the CPU. 0 on an error. */
static double rate(ocp_cuda_ctx *gpu, const ocp_lstm_model *m, const lines *L, int batch,
                   double secs, double *cps)
{
    const int8_t **img = calloc((size_t)batch, sizeof *img);
    int *w = calloc((size_t)batch, sizeof *w), *st = calloc((size_t)batch, sizeof *st);
    float **pr = calloc((size_t)batch, sizeof *pr);
    long done = 0, at = 0, cols = 0;
    double t0 = now(), t = t0;
    int warm = gpu != NULL;
    while (t - t0 < secs || done < 3L * batch) {
        for (int i = 0; i < batch; i++, at++) {
            img[i] = L->img[at % L->n];
            w[i] = L->w[at % L->n];
        }
        char err[400];
        int rc = gpu ? ocp_cuda_forward_batch(gpu, m, batch, img, w, pr, st, err, sizeof err)
                     : ocp_lstm_forward_batch(m, batch, img, w, pr, st, err, sizeof err);
        if (rc) {
            printf("  batch %d: %s\n", batch, err);
            done = 0;
            break;
        }
        for (int i = 0; i < batch; i++)
            free(pr[i]);
        if (warm) { /* the first batch uploads the weights: not counted */
            warm = 0;
            t0 = now();
            t = t0;
            continue;
        }
        done += batch;
        for (int i = 0; i < batch; i++)
            cols += w[i];
        t = now();
    }
    free(img);
    free(w);
    free(st);
    free(pr);
    *cps = done ? cols / (t - t0) : 0;
    return done ? done / (t - t0) : 0;
}

static int speed(const ocp_lstm_model *m, const char *name, const lines *L)
{
    const char *s = getenv("LSTM_CUDA_SECONDS");
    double secs = s && *s ? atof(s) : 1.0;
    double cps;
    double cpu1 = rate(NULL, m, L, 1, secs, &cps);
    double cpu16 = rate(NULL, m, L, 16, secs, &cps);
    printf("speed %s: CPU (%s, one thread): %.1f lines/s at batch 1, %.1f at batch 16\n", name,
           ocp_lstm_kernel_name(), cpu1, cpu16);
    ocp_cuda_ctx *ctx;
    char err[400];
    if (open_ctx((size_t)4 << 30, 0, &ctx, err, sizeof err)) {
        printf("cuda: %s\n", err);
        return 1;
    }
    printf("speed %s: %-6s %12s %12s %10s\n", name, "batch", "lines/s", "columns/s", "x CPU");
    for (int b = 1; b <= 256; b *= 2) {
        double gcps, r = rate(ctx, m, L, b, secs, &gcps);
        printf("speed %s: %-6d %12.1f %12.0f %10.1f\n", name, b, r, gcps, cpu1 > 0 ? r / cpu1 : 0);
    }
    ocp_cuda_close(ctx);
    return 0;
}

static int memory(const ocp_lstm_model *m, const char *name, const lines *L)
{
    static const size_t mb[] = {32, 128, 512, 2048};
    int fail = 0;
    printf("memory %s: %-7s %-6s %6s %10s %10s %10s %7s %10s %10s\n", name, "cap MB", "growth",
           "batch", "held MB", "peak MB", "in use MB", "splits", "NVML MB", "trimmed MB");
    for (int g = 0; g < 2; g++)
        for (int c = 0; c < 4; c++) {
            ocp_cuda_ctx *ctx;
            char err[400];
            if (open_ctx(mb[c] << 20, g, &ctx, err, sizeof err)) {
                printf("memory %s: cap %zu MB: %s\n", name, mb[c], err);
                fail = 1;
                continue;
            }
            for (int b = 16; b <= 256; b *= 4) {
                double cps;
                if (rate(ctx, m, L, b, 0.2, &cps) == 0)
                    fail = 1;
                ocp_cuda_mem mem;
                ocp_cuda_mem_stats(ctx, &mem);
                ocp_gpu_list *gl = calloc(1, sizeof *gl);
                ocp_gpu_discover(gl);
                unsigned long long nv = ocp_gpu_proc_bytes(gl, (unsigned)getpid());
                ocp_cuda_trim(ctx);
                size_t trimmed = ocp_cuda_mem_used(ctx);
                printf("memory %s: %-7zu %-6s %6d %10.1f %10.1f %10.1f %7ld %10.1f %10.1f%s\n",
                       name, mb[c], g ? "true" : "false", b, mem.held / 1048576.0,
                       mem.peak_held / 1048576.0, mem.in_use / 1048576.0, mem.splits,
                       nv / 1048576.0, trimmed / 1048576.0,
                       mem.peak_held > mem.cap ? "  OVER THE CAP" : "");
                fail |= mem.peak_held > mem.cap;
                free(gl);
            }
            ocp_cuda_close(ctx);
        }
    return fail;
}

int main(int argc, char **argv)
{
    if (argc < 4 ||
        (strcmp(argv[1], "parity") && strcmp(argv[1], "speed") && strcmp(argv[1], "memory"))) {
        fprintf(stderr, "usage: lstm_cuda parity|speed|memory MODEL IMAGE...\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line as it comes, through a pipe too */
    char err[400];
    ocp_cuda_ctx *probe;
    if (open_ctx((size_t)16 << 20, 1, &probe, err, sizeof err)) {
        printf("skipped: no CUDA device (%s)\n", err);
        return SKIP;
    }
    printf("# %s, CUDA %s\n", ocp_cuda_device_name(probe), ocp_cuda_runtime_version());
    ocp_cuda_close(probe);
    ocp_lstm_model *m = NULL;
    if (ocp_lstm_model_load(argv[2], &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    const char *name = strrchr(argv[2], '/') ? strrchr(argv[2], '/') + 1 : argv[2];
    lines L;
    if (read_lines(m, argc - 3, argv + 3, &L))
        return 2;
    int rc = strcmp(argv[1], "parity") == 0  ? parity(m, name, &L, (size_t)2 << 30)
             : strcmp(argv[1], "speed") == 0 ? speed(m, name, &L)
                                             : memory(m, name, &L);
    for (int i = 0; i < L.n; i++)
        free(L.img[i]);
    free(L.img);
    free(L.w);
    ocp_lstm_model_free(m);
    return rc;
}
