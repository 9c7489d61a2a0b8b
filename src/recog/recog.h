/*
 * recog.h: the shared recognizer (README "Shared recognizer"): one process
 * per device that runs the LSTM network for the lines of every worker of the
 * node, in batches, and the workers' side of it.
 *
 *   worker (engine lstm: layout, crops, normalised int8 lines, beam decode)
 *     |  unix socket (abstract name, one per recognizer) + a memfd arena
 *     |  of the worker's own, passed once (SCM_RIGHTS): lines in, per-step
 *     |  outputs back, in the arena; small JSON frames (proto.h) say where
 *     v
 *   recognizer (recog.c): queues the lines of all workers, batches them
 *     |  (recognizer-batch lines, or recognizer-wait-ms after the oldest;
 *     |  longest first), runs them through its backend
 *     v
 *   backend (ocp_recog_backend: forward_batch): the CPU's forward pass, or on
 *     a GPU (CUDA_VISIBLE_DEVICES names one) the CUDA kernels
 *     (gpu/cuda/cuda_forward.h), whose context this process alone opens; a GPU
 *     that cannot be opened, or fails, leaves the CPU's backend reading
 *
 * The recognizer is a child of the zygote (forked from it on the master's
 * request, so on the CPU the models' pages are the zygote's, shared
 * copy-on-write); the master watches it through a socket of its own and
 * restarts it (recognizer.c in src/pool).
 */
#ifndef OCP_RECOG_RECOG_H
#define OCP_RECOG_RECOG_H

#include "engine/lstm/model.h"
#include "gpu/cuda/cuda_forward.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A forward-pass backend: n lines of model m together, as ocp_lstm_forward_batch (whose
 * contract it keeps: probs[i] (free()) bit for bit what line i alone gives). Open type. */
typedef struct ocp_recog_backend {
    const char *name;
    void *ctx;
    int (*forward_batch)(void *ctx, const ocp_lstm_model *m, int n, const int8_t *const *img,
                         const int *w, float **probs, int *steps, char *err, size_t errlen);
} ocp_recog_backend;

/* The CPU's backend (ocp_lstm_forward_batch). */
extern const ocp_recog_backend ocp_recog_backend_cpu;

/* The batch-size histogram's upper bounds (lines), the last bucket open. */
#define OCP_RECOG_HIST_NB 7
extern const int ocp_recog_hist_le[OCP_RECOG_HIST_NB];

/* The most lines of one request, and the widest line (columns at the model's height). */
#define OCP_RECOG_MAX_LINES 4096
#define OCP_RECOG_MAX_WIDTH 100000

/* What a recognizer runs with. Open type; strings borrowed. */
typedef struct ocp_recog_conf {
    int index;        /* its device's place in the plan (0 for the CPU) */
    const char *addr; /* its socket's abstract name (without the leading NUL) */
    const char *tessdata_dir;
    const char *langs;  /* the pool's languages, ready before the first request */
    int batch_lines;    /* a batch runs when this many lines wait ... */
    double wait_s;      /* ... or the oldest has waited this long */
    double batch_bytes; /* the forward pass's buffers of one batch, at most */
    size_t max_arena;   /* the largest arena a worker may hand over */
    /* On a GPU: the cap on its memory = min(gpu_fraction x the device's total, gpu_max_mb
     * MiB when > 0); gpu_growth: take it in steps (else all at start). */
    double gpu_fraction;
    long long gpu_max_mb;
    int gpu_growth;
} ocp_recog_conf;

/* Tests: OCRPOOL_CUDA_FAULT=N makes a recognizer's GPU lost after N stream operations once
 * its models are uploaded (ocp_cuda_inject_fault). */

/* The GPU memory cap for a device of total bytes under these settings. */
size_t ocp_recog_gpu_cap(unsigned long long total, double fraction, long long max_mb);

/*
 * Opens the GPU that CUDA_VISIBLE_DEVICES names (a UUID; an OCP_GPU_EMULATED_UUID one opens
 * an emulated context, for tests), capped as ocp_recog_gpu_cap says. *total receives the
 * device's memory, *name its name (borrowed from the process). 0, or an error with the
 * reason (no device named, not found, CUDA not usable: the caller reads on the CPU).
 * OCRPOOL_CUDA_REAL_CONTEXT=1 opens a real context on an emulated device (tests: CUDA not
 * usable, as where there is no driver).
 */
int ocp_recog_gpu_open(double fraction, long long max_mb, int growth, ocp_cuda_ctx **out,
                       unsigned long long *total, char *err, size_t errlen);

/*
 * The recognizer process's body (never returns): listens on rc->addr, tells the master on
 * master_fd {"t":"ready","pid":P} (or {"t":"fatal","error":E} and exits OCP_EXIT_FATAL),
 * then {"t":"stats",...} every second, and serves workers until master_fd closes.
 */
void ocp_recog_main(const ocp_recog_conf *rc, int master_fd) __attribute__((noreturn));

/* One line of a request, checked (ocp_recog_parse_request). */
typedef struct ocp_recog_line {
    size_t off; /* its pixels in the arena: w x height bytes */
    int w;
} ocp_recog_line;

/* A worker's request, checked: {"t":"lines","id":I,"model":NAME,"out":OFF,
 * "lines":[[OFF,W],...]}. */
typedef struct ocp_recog_req {
    long long id;
    char model[64];
    size_t out; /* where the outputs may go: from here to the arena's end */
    int n;
    ocp_recog_line *line; /* n (free()) */
} ocp_recog_req;

/*
 * Checks a request from a worker (untrusted: a worker reads hostile pages) against its
 * arena of arena_len bytes and a model input height: every line's pixels inside the arena
 * and before `out`, widths 1..OCP_RECOG_MAX_WIDTH, at most OCP_RECOG_MAX_LINES lines, a
 * model name of letters, digits, '_', '-' and one '/' at most. Fills *req (line: free()).
 * Returns 0 or OCP_E_INPUT with the reason in err.
 */
int ocp_recog_parse_request(const json_t *msg, size_t arena_len, int height, ocp_recog_req *req,
                            char *err, size_t errlen);

/* An arena's head: its first OCP_RECOG_HEAD bytes are the recognizer's (a uint32 at 0: the
 * lines waiting in its queue, written as it changes), the worker's lines come after. */
#define OCP_RECOG_HEAD 64

/* The most recognizers a worker is given (one per device). */
#define OCP_RECOG_MAX_PEERS 16

/* The worker's side: a connection to each recognizer of the node, with an arena each. */
typedef struct ocp_recog_client ocp_recog_client;

/* A client of the recognizers at addrs ("A[,B...]": one per device; each connected on first
 * use, again after it is lost), with an arena of arena_bytes for each. Each request goes to
 * the recognizer with the shortest queue now. New (ocp_recog_client_destroy). */
ocp_recog_client *ocp_recog_client_create(const char *addrs, size_t arena_bytes);
void ocp_recog_client_destroy(ocp_recog_client *c);
/* An ocp_lstm_remote_fn (engine/lstm/remote.h) with ctx = the client. */
int ocp_recog_client_forward(void *ctx, const char *name, const ocp_lstm_model *m, int n,
                             const int8_t *const *img, const int *w, float **probs, int *steps,
                             double deadline);
/* Lines this client had read by the recognizer, and read here instead. */
void ocp_recog_client_counts(const ocp_recog_client *c, long *remote, long *local);

#endif
