/*
 * recog.c: the shared recognizer process (recog.h; README "Shared
 * recognizer"): one per device, a child of the zygote, single-threaded.
 *
 * Design. Workers lay pages out and prepare lines as before; each hands its
 * normalised int8 lines to the recognizer through an arena of its own (a
 * memfd, sealed against shrinking and passed once when it connects), so a
 * worker that dies takes only its arena and its queued lines with it: its
 * socket closes, its lines leave the queue, nothing of another worker's is
 * touched. Lines of all workers wait in one queue; a batch runs when
 * `batch_lines` lines wait or the oldest has waited `wait_s`. A batch is the
 * oldest line's model, its lines sorted widest first, the window of similar
 * widths that holds the oldest line (so that no line waits behind a stream
 * of wider ones), capped by `batch_lines` and `batch_bytes`. Its per-step
 * outputs go back into each worker's arena, after the worker's lines, and a
 * request is answered once all its lines are read; a worker that does not
 * take its (tiny) answer at once is let go, so a slow worker holds no one.
 *
 * Per-step outputs, not decoded text, go back: the beam search needs the
 * worker's page state (its dictionaries' walk per line, the reading kept
 * across models), it costs a tenth of the network on the CPU, and the
 * outputs being the forward pass's own bits is what makes `shared` read
 * exactly as `worker` does.
 *
 *   worker -> {"t":"hello","arena":BYTES} + the memfd (SCM_RIGHTS), once
 *   worker -> {"t":"lines","id":I,"model":"eng","out":OFF,"lines":[[OFF,W],...]}
 *             (line k: W x height int8 pixels at OFF; outputs may go from out on)
 *   recog  -> {"t":"done","id":I,"lines":[[S,OFF,STEPS],...]}
 *             S 0: STEPS x classes floats at OFF; 1: not read here (no room, no
 *             model): read it yourself; 2: the line cannot be read (skipped)
 *   recog  -> master: {"t":"ready","pid":P} | {"t":"fatal","error":E};
 *             {"t":"stats",...} every second
 */
#include "recog/recog.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memstat.h"
#include "core/util.h"
#include "engine/engine.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/remote.h"
#include "gpu/gpu.h"
#include "pool/pool.h"
#include "pool/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int ocp__tess_resolve(const ocp_engine_params *p, char dirbuf[4096], char **langs, char *err,
                      size_t errlen);

const int ocp_recog_hist_le[OCP_RECOG_HIST_NB] = {1, 2, 4, 8, 16, 32, 1 << 30};

#define MAX_CLIENTS 256
#define MAX_MODELS  16

static int cpu_forward(void *ctx, const ocp_lstm_model *m, int n, const int8_t *const *img,
                       const int *w, float **probs, int *steps, char *err, size_t errlen)
{
    (void)ctx;
    return ocp_lstm_forward_batch(m, n, img, w, probs, steps, err, errlen);
}

const ocp_recog_backend ocp_recog_backend_cpu = {"cpu", NULL, cpu_forward};

/* ---- requests -------------------------------------------------------------------------- */

static int model_name_ok(const char *s)
{
    size_t n = strlen(s);
    int slashes = 0;
    if (n == 0 || n >= 64 || s[0] == '/' || s[n - 1] == '/')
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '/')
            slashes++;
        else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return 0;
    }
    return slashes <= 1;
}

int ocp_recog_parse_request(const json_t *msg, size_t arena_len, int height, ocp_recog_req *req,
                            char *err, size_t errlen)
{
    memset(req, 0, sizeof *req);
    const char *t = json_string_value(json_object_get(msg, "t"));
    const char *model = json_string_value(json_object_get(msg, "model"));
    json_t *id = json_object_get(msg, "id"), *out = json_object_get(msg, "out");
    json_t *lines = json_object_get(msg, "lines");
    if (!t || strcmp(t, "lines") != 0 || !json_is_integer(id) || !json_is_integer(out) ||
        !json_is_array(lines) || !model)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "recognizer: not a request of lines");
    if (!model_name_ok(model))
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "recognizer: bad model name");
    size_t n = json_array_size(lines);
    if (n == 0 || n > OCP_RECOG_MAX_LINES)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "recognizer: %zu lines (1 to %d)", n,
                        OCP_RECOG_MAX_LINES);
    if (json_integer_value(out) < 0 || (unsigned long long)json_integer_value(out) > arena_len)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "recognizer: outputs outside the arena");
    if (height < 1 || height > OCP_LSTM_MAX_HEIGHT)
        return ocp_errf(OCP_E_MESSAGE, err, errlen, "recognizer: bad model height");
    req->id = json_integer_value(id);
    snprintf(req->model, sizeof req->model, "%s", model);
    req->out = (size_t)json_integer_value(out);
    req->line = ocp_xcalloc(n, sizeof *req->line);
    for (size_t i = 0; i < n; i++) {
        json_t *l = json_array_get(lines, i);
        json_t *jo = json_array_get(l, 0), *jw = json_array_get(l, 1);
        if (!json_is_array(l) || json_array_size(l) != 2 || !json_is_integer(jo) ||
            !json_is_integer(jw))
            goto bad;
        json_int_t off = json_integer_value(jo), w = json_integer_value(jw);
        /* Every line inside the arena and before the outputs: sizes checked against each
         * other before any product of them is trusted. */
        if (off < 0 || w < 1 || w > OCP_RECOG_MAX_WIDTH || (unsigned long long)off > req->out ||
            (unsigned long long)w * (unsigned)height > req->out - (size_t)off)
            goto bad;
        req->line[i] = (ocp_recog_line){(size_t)off, (int)w};
    }
    req->n = (int)n;
    return 0;
bad:
    free(req->line);
    req->line = NULL;
    return ocp_errf(OCP_E_MESSAGE, err, errlen, "recognizer: a line outside the arena");
}

/* ---- the process's state --------------------------------------------------------------- */

typedef struct client {
    int fd;
    unsigned char *arena;
    size_t len;
    ocp_proto_reader rd;
    /* The request being read (req.n == 0: none): each line's answer, the outputs' next
     * place, the lines not answered yet. */
    ocp_recog_req req;
    const ocp_lstm_model *m;
    int (*ans)[3];
    size_t cursor;
    int left;
} client;

typedef struct qline {
    client *c;
    int k;      /* the line of c's request */
    double enq; /* when it was queued */
} qline;

typedef struct model_slot {
    char name[64];
    const ocp_lstm_model *m;
    ocp_lstm_model *owned; /* loaded here (not the zygote's) */
} model_slot;

/* The GPU this recognizer reads on (CUDA_VISIBLE_DEVICES names one), or why it does not. */
typedef struct gpu_state {
    ocp_cuda_ctx *ctx; /* NULL: none (the CPU), or closed after it failed */
    int asked;         /* a GPU was named */
    char device[128];  /* CUDA_VISIBLE_DEVICES */
    char name[96];
    unsigned long long total;
    ocp_cuda_mem mem; /* the last figures (kept when the context is closed) */
    long failures;    /* batches the GPU failed (read again on the CPU) */
    int lost;         /* it was lost: the CPU reads from then on */
    char why[400];    /* why the CPU reads ("" while the GPU does) */
    int util;         /* NVML's utilisation, percent; -1: n/a */
    double last_batch;
    int trimmed;
} gpu_state;

typedef struct recog {
    const ocp_recog_conf *rc;
    const ocp_recog_backend *be;
    ocp_recog_backend gpu_be;
    gpu_state gpu;
    int master_fd, listen_fd;
    client *cl[MAX_CLIENTS];
    int ncl;
    qline *q;
    int nq, capq;
    model_slot models[MAX_MODELS];
    int nmodels;
    /* The figures the master reads every second. */
    long lines, batches, multi, hist[OCP_RECOG_HIST_NB], failed, clients_total;
    double wait_sum, wait_max, busy_s;
} recog;

/* The model called name: one the zygote loaded (shared), else loaded here once after the
 * same check as a task's languages. NULL with err when it cannot be had. */
static const ocp_lstm_model *model_get(recog *r, const char *name, char *err, size_t errlen)
{
    for (int i = 0; i < r->nmodels; i++)
        if (strcmp(r->models[i].name, name) == 0)
            return r->models[i].m;
    if (r->nmodels == MAX_MODELS) {
        ocp_errf(OCP_E_LANG, err, errlen, "recognizer: %d models at most", MAX_MODELS);
        return NULL;
    }
    model_slot *s = &r->models[r->nmodels];
    s->m = ocp_lstm_find_loaded(name);
    if (!s->m) {
        ocp_engine_params ep = {.lang = name, .tessdata_dir = r->rc->tessdata_dir};
        char dir[4096], *langs = NULL, path[4200];
        if (ocp_engine_check_langs(r->rc->tessdata_dir, name, 1, err, errlen) ||
            ocp__tess_resolve(&ep, dir, &langs, err, errlen))
            return NULL;
        free(langs);
        snprintf(path, sizeof path, "%s/%s.traineddata", dir, name);
        if (ocp_lstm_model_load(path, &s->owned, err, errlen))
            return NULL;
        s->m = s->owned;
        OCP_LOG(OCP_LOG_INFO, "recognizer: model %s loaded", name);
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    r->nmodels++;
    return s->m;
}

/* The queue's length into the head of every worker's arena (recog.h: OCP_RECOG_HEAD): a
 * worker with several recognizers (one per device) sends its lines to the shortest queue. */
static void publish_queue(const recog *r)
{
    for (int i = 0; i < r->ncl; i++)
        if (r->cl[i]->arena)
            __atomic_store_n((uint32_t *)r->cl[i]->arena, (uint32_t)r->nq, __ATOMIC_RELAXED);
}

static void drop_client(recog *r, int i, const char *why)
{
    client *c = r->cl[i];
    if (why)
        OCP_LOG(OCP_LOG_WARN, "recognizer: a worker let go: %s", why);
    /* Its queued lines go with it; no other worker's are touched. */
    int k = 0;
    for (int j = 0; j < r->nq; j++)
        if (r->q[j].c != c)
            r->q[k++] = r->q[j];
    r->nq = k;
    close(c->fd);
    if (c->arena)
        munmap(c->arena, c->len);
    ocp_proto_reader_fini(&c->rd);
    free(c->req.line);
    free(c->ans);
    free(c);
    r->cl[i] = r->cl[--r->ncl];
    publish_queue(r);
}

static int client_index(const recog *r, const client *c)
{
    for (int i = 0; i < r->ncl; i++)
        if (r->cl[i] == c)
            return i;
    return -1;
}

/* A request whose lines are all answered: the answer goes at once, or the worker goes. */
static void answer(recog *r, client *c)
{
    json_t *ls = json_array();
    for (int k = 0; k < c->req.n; k++)
        json_array_append_new(
            ls, json_pack("[i, I, i]", c->ans[k][0], (json_int_t)c->ans[k][1], c->ans[k][2]));
    json_t *msg =
        json_pack("{s:s, s:I, s:o}", "t", "done", "id", (json_int_t)c->req.id, "lines", ls);
    int rc = ocp_proto_send_timed(c->fd, msg, -1, 0);
    json_decref(msg);
    free(c->req.line);
    free(c->ans);
    c->req = (ocp_recog_req){0};
    c->ans = NULL;
    if (rc)
        drop_client(r, client_index(r, c), "it does not read its answers");
}

static void hello(recog *r, client *c, json_t *msg)
{
    json_t *ja = json_object_get(msg, "arena");
    int fd = c->rd.passed_fd;
    c->rd.passed_fd = -1;
    struct stat st;
    int seals = fd >= 0 ? fcntl(fd, F_GET_SEALS) : -1;
    /* Sealed against shrinking: a worker cannot cut the mapping from under us (SIGBUS). */
    if (fd < 0 || !json_is_integer(ja) || json_integer_value(ja) < 4096 ||
        (size_t)json_integer_value(ja) > r->rc->max_arena || fstat(fd, &st) < 0 ||
        st.st_size < json_integer_value(ja) || seals < 0 || !(seals & F_SEAL_SHRINK)) {
        if (fd >= 0)
            close(fd);
        return;
    }
    c->len = (size_t)json_integer_value(ja);
    void *p = mmap(NULL, c->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    c->arena = p == MAP_FAILED ? NULL : p;
}

/* A worker's request: checked, its lines queued (or answered at once when none can run). */
static int request(recog *r, client *c, json_t *msg, double now)
{
    char err[300];
    if (!c->arena || c->req.n)
        return ocp_errf(OCP_E_MESSAGE, err, sizeof err, "a request before its arena, or two");
    const char *name = json_string_value(json_object_get(msg, "model"));
    const ocp_lstm_model *m =
        name && model_name_ok(name) ? model_get(r, name, err, sizeof err) : NULL;
    int height = m ? m->input_height : 1;
    int rc = ocp_recog_parse_request(msg, c->len, height, &c->req, err, sizeof err);
    if (rc) {
        OCP_LOG(OCP_LOG_WARN, "recognizer: %s", err);
        return rc;
    }
    c->m = m;
    c->ans = ocp_xcalloc((size_t)c->req.n, sizeof *c->ans);
    c->cursor = (c->req.out + 63) & ~(size_t)63;
    c->left = 0;
    for (int k = 0; k < c->req.n; k++) {
        char why[300];
        if (!m) {
            c->ans[k][0] = 1; /* no model here: the worker has it */
        } else if (ocp_lstm_line_fits(m, c->req.line[k].w, why, sizeof why)) {
            c->ans[k][0] = 2;
            r->failed++;
        } else {
            if (r->nq == r->capq) {
                r->capq = r->capq ? r->capq * 2 : 256;
                r->q = ocp_xrealloc(r->q, (size_t)r->capq * sizeof *r->q);
            }
            r->q[r->nq++] = (qline){c, k, now};
            c->left++;
        }
    }
    if (!m)
        OCP_LOG(OCP_LOG_WARN, "recognizer: model %s: %s: its worker reads it", name ? name : "?",
                err);
    publish_queue(r);
    if (!c->left)
        answer(r, c);
    return 0;
}

/* The largest frame a worker may send us. proto.h's cap (64 MiB, for page results) would let
 * one worker make us buffer 64 MiB and have jansson build a tree of millions of tiny arrays
 * (1-2 GB) before the line count is checked. A request's largest honest frame: at most
 * OCP_RECOG_MAX_LINES lines of "[OFF,W]," (30 bytes with a 20-digit offset and a 6-digit
 * width) plus the rest (model, id, out: under 300 bytes) is 123 KB; hello is tiny. */
#define RECOG_FRAME_MAX (256u << 10)

/* Whether the frame at the head of rd claims more than RECOG_FRAME_MAX: read on its 4-byte
 * header, before the reader's buffer grows for it (each fill reads at most 128 KiB more). */
static int frame_too_big(const ocp_proto_reader *rd)
{
    if (rd->len < 4)
        return 0;
    size_t n = ((size_t)rd->buf[0] << 24) | ((size_t)rd->buf[1] << 16) | ((size_t)rd->buf[2] << 8) |
               rd->buf[3];
    return n > RECOG_FRAME_MAX;
}

static void client_readable(recog *r, int i, double now)
{
    client *c = r->cl[i];
    int n = ocp_proto_fill(&c->rd, c->fd);
    if (n == 0 || (n < 0 && n != -EAGAIN)) {
        drop_client(r, i, c->req.n ? "it ended with lines queued" : NULL);
        return;
    }
    json_t *msg;
    int rc = 0;
    while (!frame_too_big(&c->rd) && (rc = ocp_proto_next(&c->rd, &msg)) == 0 && msg) {
        const char *t = json_string_value(json_object_get(msg, "t"));
        int bad = 0;
        if (t && strcmp(t, "hello") == 0 && !c->arena)
            hello(r, c, msg);
        else if (t && strcmp(t, "lines") == 0)
            bad = request(r, c, msg, now) != 0;
        else
            bad = 1;
        json_decref(msg);
        if (bad) {
            drop_client(r, i, "it sent a message that is not a request");
            return;
        }
        if (client_index(r, c) < 0)
            return; /* it was let go while answering */
    }
    if (frame_too_big(&c->rd))
        drop_client(r, i, "it sent a frame larger than any request");
    else if (rc)
        drop_client(r, i, "it sent a frame that is not JSON");
}

static void accept_clients(recog *r)
{
    for (;;) {
        int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        /* An abstract name is open to the machine's other users: only ours are served. */
        struct ucred cr;
        socklen_t crl = sizeof cr;
        if (r->ncl == MAX_CLIENTS || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 ||
            cr.uid != getuid()) {
            close(fd);
            continue;
        }
        client *c = ocp_xcalloc(1, sizeof *c);
        c->fd = fd;
        ocp_proto_reader_init(&c->rd);
        r->cl[r->ncl++] = c;
        r->clients_total++;
    }
}

/* ---- batches --------------------------------------------------------------------------- */

static int cmp_width_desc(const void *a, const void *b, void *ctx)
{
    const qline *x = a, *y = b;
    (void)ctx;
    int wx = x->c->req.line[x->k].w, wy = y->c->req.line[y->k].w;
    return wx < wy ? 1 : wx > wy ? -1 : (x->enq > y->enq) - (x->enq < y->enq);
}

static int batch_due(const recog *r, double now)
{
    if (!r->nq)
        return 0;
    if (r->nq >= r->rc->batch_lines)
        return 1;
    for (int i = 0; i < r->nq; i++)
        if (now - r->q[i].enq >= r->rc->wait_s)
            return 1;
    return 0;
}

/* Writes line b of a batch back: its outputs into its worker's arena when they fit. */
static void put_back(recog *r, qline *ql, float *probs, int steps)
{
    client *c = ql->c;
    size_t bytes = (size_t)steps * (size_t)c->m->classes * sizeof(float);
    int *a = c->ans[ql->k];
    if (!probs) {
        a[0] = 2;
    } else if (c->cursor <= c->len && bytes <= c->len - c->cursor) {
        memcpy(c->arena + c->cursor, probs, bytes);
        a[0] = 0;
        a[1] = (int)c->cursor;
        a[2] = steps;
        c->cursor = (c->cursor + bytes + 63) & ~(size_t)63;
        r->lines++;
    } else {
        a[0] = 1; /* no room left: the worker reads it */
    }
    free(probs);
    c->left--;
}

/* The lines of c among the first n of pick. */
static int taken_by(const qline *pick, int n, const client *c)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += pick[i].c == c;
    return k;
}

/* Client pointers in address order (qsort, bsearch). */
static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const client *const *)a,
              y = (uintptr_t) * (const client *const *)b;
    return (x > y) - (x < y);
}

/* The next batch's lines into pick (room for batch_lines), widest first; returns how many
 * (0: none) and their model in *mp. The workers with queued lines take turns, each turn starting at
 * that worker's oldest line, so that one worker's long request (up to OCP_RECOG_MAX_LINES narrow
 * lines) does not hold the lines others queued after it (until their pages' deadlines). The batch:
 * that line's model, the lines of the nearest widths around it (so that no line waits behind
 * a stream of wider ones), each worker's lines capped at a fair share (the batch size over
 * the workers with lines of the model; what one does not use the others fill), at most
 * batch_lines and batch_bytes. */
static int pick_batch(recog *r, qline *pick, const ocp_lstm_model **mp)
{
    static int turn; /* the next worker's place in r->cl (one recognizer a process) */
    /* The workers with queued lines, sorted (a search each, not a pass over the queue). */
    const client **owner = ocp_xcalloc((size_t)r->nq, sizeof *owner);
    for (int i = 0; i < r->nq; i++)
        owner[i] = r->q[i].c;
    qsort(owner, (size_t)r->nq, sizeof *owner, cmp_ptr);
    const client *who = NULL;
    for (int j = 0; j < r->ncl && !who; j++) {
        int at = (turn + j) % r->ncl;
        if (bsearch(&r->cl[at], owner, (size_t)r->nq, sizeof *owner, cmp_ptr)) {
            who = r->cl[at];
            turn = at + 1;
        }
    }
    if (!who) {
        free(owner);
        return 0;
    }
    const ocp_lstm_model *m = who->m;
    int workers = 0; /* with lines of m */
    for (int i = 0; i < r->nq; i++)
        workers += (i == 0 || owner[i] != owner[i - 1]) && owner[i]->m == m;
    free(owner);
    int oldest = -1;
    for (int i = 0; i < r->nq; i++)
        if (r->q[i].c == who && (oldest < 0 || r->q[i].enq < r->q[oldest].enq))
            oldest = i;
    qline *cand = ocp_xcalloc((size_t)r->nq, sizeof *cand);
    int nc = 0, at = 0;
    for (int i = 0; i < r->nq; i++)
        if (r->q[i].c->m == m)
            cand[nc++] = r->q[i];
    qline old = r->q[oldest];
    qsort_r(cand, (size_t)nc, sizeof *cand, cmp_width_desc, NULL);
    for (int i = 0; i < nc; i++)
        if (cand[i].c == old.c && cand[i].k == old.k)
            at = i;
    int share = (r->rc->batch_lines + workers - 1) / workers;
    int n = 0, pos[2] = {at - 1, at + 1}, open[2] = {1, 1};
    double bytes = ocp_lstm_line_bytes(m, old.c->req.line[old.k].w);
    pick[n++] = cand[at];
    /* Outwards from that line: the next wider line and the next narrower one in turn. */
    while (n < r->rc->batch_lines && (open[0] || open[1]))
        for (int d = 0; d < 2 && n < r->rc->batch_lines; d++)
            while (open[d]) {
                if (pos[d] < 0 || pos[d] >= nc) {
                    open[d] = 0;
                    break;
                }
                const qline *ql = &cand[pos[d]];
                pos[d] += d ? 1 : -1;
                if (taken_by(pick, n, ql->c) >= share)
                    continue;
                double b = ocp_lstm_line_bytes(m, ql->c->req.line[ql->k].w);
                if (bytes + b > r->rc->batch_bytes) {
                    open[d] = 0;
                    break;
                }
                bytes += b;
                pick[n++] = *ql;
                break;
            }
    qsort_r(pick, (size_t)n, sizeof *pick, cmp_width_desc, NULL);
    free(cand);
    *mp = m;
    return n;
}

/* One batch (pick_batch): run, its lines put back, the finished requests answered. */
static void run_batch(recog *r, double now)
{
    qline *pick = ocp_xcalloc((size_t)r->rc->batch_lines, sizeof *pick);
    const ocp_lstm_model *m = NULL;
    int n = pick_batch(r, pick, &m);
    if (!n) {
        free(pick);
        return;
    }
    const int8_t **img = ocp_xcalloc((size_t)n, sizeof *img);
    int *w = ocp_xcalloc((size_t)n, sizeof *w), *steps = ocp_xcalloc((size_t)n, sizeof *steps);
    float **probs = ocp_xcalloc((size_t)n, sizeof *probs);
    int distinct = 0;
    for (int j = 0; j < n; j++) {
        qline *ql = &pick[j];
        const ocp_recog_line *l = &ql->c->req.line[ql->k];
        size_t px = (size_t)l->w * (size_t)m->input_height;
        /* A private copy: the worker may write its arena while we read (garbage in, garbage
         * out, never a stray read), and the products read OCP_LSTM_PAD bytes past it. */
        int8_t *copy = ocp_xmalloc(px + OCP_LSTM_PAD);
        memcpy(copy, ql->c->arena + l->off, px);
        memset(copy + px, 0, OCP_LSTM_PAD);
        img[j] = copy;
        w[j] = l->w;
        double waited = now - ql->enq;
        r->wait_sum += waited;
        if (waited > r->wait_max)
            r->wait_max = waited;
        int seen = 0;
        for (int i = 0; i < j; i++)
            seen |= pick[i].c == ql->c;
        distinct += !seen;
    }
    double t0 = ocp_now();
    char err[300];
    if (r->be->forward_batch(r->be->ctx, m, n, img, w, probs, steps, err, sizeof err)) {
        OCP_LOG(OCP_LOG_WARN, "recognizer: a batch of %d lines failed: %s", n, err);
        memset(probs, 0, (size_t)n * sizeof *probs);
        r->failed += n;
    }
    r->busy_s += ocp_now() - t0;
    r->gpu.last_batch = ocp_now();
    r->gpu.trimmed = 0;
    r->batches++;
    r->multi += distinct > 1;
    for (int b = 0; b < OCP_RECOG_HIST_NB; b++)
        if (n <= ocp_recog_hist_le[b]) {
            r->hist[b]++;
            break;
        }
    /* Out of the queue, back to their workers. */
    for (int j = 0; j < n; j++) {
        put_back(r, &pick[j], probs[j], steps[j]);
        free((void *)img[j]);
        for (int i = 0; i < r->nq; i++)
            if (r->q[i].c == pick[j].c && r->q[i].k == pick[j].k) {
                r->q[i] = r->q[--r->nq];
                break;
            }
    }
    publish_queue(r);
    for (int j = 0; j < n; j++) {
        client *c = pick[j].c;
        if (client_index(r, c) >= 0 && c->req.n && c->left == 0)
            answer(r, c);
    }
    free(img);
    free(w);
    free(steps);
    free(probs);
    free(pick);
}

/* ---- the GPU ------------------------------------------------------------------------------ */

size_t ocp_recog_gpu_cap(unsigned long long total, double fraction, long long max_mb)
{
    unsigned long long cap = (unsigned long long)((double)total * fraction);
    if (max_mb > 0 && (unsigned long long)max_mb << 20 < cap)
        cap = (unsigned long long)max_mb << 20;
    return (size_t)cap;
}

int ocp_recog_gpu_open(double fraction, long long max_mb, int growth, ocp_cuda_ctx **out,
                       unsigned long long *total, char *err, size_t errlen)
{
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    *out = NULL;
    *total = 0;
    if (!vis || !*vis)
        return ocp_errf(OCP_E_CONFIG, err, errlen, "no GPU named (CUDA_VISIBLE_DEVICES empty)");
    /* The device's total memory from NVML (which ignores CUDA_VISIBLE_DEVICES and names each
     * device by its UUID), as the plan that gave us this device saw it. */
    ocp_gpu_list *gl = ocp_xcalloc(1, sizeof *gl);
    ocp_gpu_discover(gl);
    const ocp_gpu_device *d = NULL;
    for (int i = 0; i < gl->n && !d; i++)
        if (strcmp(gl->dev[i].uuid, vis) == 0)
            d = &gl->dev[i];
    if (!d) {
        ocp_errf(OCP_E_ENGINE, err, errlen, "GPU %s not found (%s)", vis,
                 gl->n ? "not among the devices NVML lists" : gl->why);
        free(gl);
        return OCP_E_ENGINE;
    }
    *total = d->mem_total;
    size_t cap = ocp_recog_gpu_cap(d->mem_total, fraction, max_mb);
    /* OCRPOOL_CUDA_REAL_CONTEXT (tests): an emulated device listed, a real context asked for,
     * as on a machine whose NVML lists a GPU that CUDA cannot open (no driver here). */
    const char *real = getenv("OCRPOOL_CUDA_REAL_CONTEXT");
    int emulated = strncmp(d->uuid, OCP_GPU_EMULATED_UUID, strlen(OCP_GPU_EMULATED_UUID)) == 0 &&
                   !(real && *real && strcmp(real, "0") != 0);
    free(gl);
    int rc = emulated ? ocp_cuda_open_emulated(cap, growth, out, err, errlen)
                      : ocp_cuda_open(0, cap, growth, out, err, errlen);
    return rc;
}

static void gpu_snapshot(recog *r)
{
    if (r->gpu.ctx)
        ocp_cuda_mem_stats(r->gpu.ctx, &r->gpu.mem);
}

/* The GPU is given up: the CPU's backend reads from now on (logged; the figures say why). */
static void gpu_give_up(recog *r, const char *why)
{
    gpu_snapshot(r);
    r->gpu.lost |= r->gpu.ctx && ocp_cuda_lost(r->gpu.ctx);
    ocp_cuda_close(r->gpu.ctx);
    r->gpu.ctx = NULL;
    r->be = &ocp_recog_backend_cpu;
    snprintf(r->gpu.why, sizeof r->gpu.why, "%s", why);
    OCP_LOG(OCP_LOG_ERROR, "recognizer %d: GPU %s: %s: its lines are read on the CPU from now on",
            r->rc->index, r->gpu.device, why);
}

/* The GPU's backend: a batch it fails (a lost device, a line over the cap) is read again on
 * the CPU, with the same bits, so that the pages are still right; a lost device is given up. */
static int gpu_forward(void *ctx, const ocp_lstm_model *m, int n, const int8_t *const *img,
                       const int *w, float **probs, int *steps, char *err, size_t errlen)
{
    recog *r = ctx;
    int rc = ocp_cuda_forward_batch(r->gpu.ctx, m, n, img, w, probs, steps, err, errlen);
    gpu_snapshot(r);
    if (!rc)
        return 0;
    r->gpu.failures++;
    if (ocp_cuda_lost(r->gpu.ctx)) {
        char why[400];
        snprintf(why, sizeof why, "a batch of %d lines failed: %s", n, err);
        gpu_give_up(r, why);
    } else {
        OCP_LOG(OCP_LOG_WARN, "recognizer %d: a GPU batch of %d lines failed: %s: read on the CPU",
                r->rc->index, n, err);
    }
    return ocp_lstm_forward_batch(m, n, img, w, probs, steps, err, errlen);
}

/* A GPU named in CUDA_VISIBLE_DEVICES: its context opened here (never in the master or the
 * zygote: a CUDA context does not survive a fork), the preloaded models uploaded once. One
 * that cannot be used leaves the CPU's backend reading, logged. */
static void gpu_start(recog *r)
{
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    r->gpu.util = -1;
    if (!vis || !*vis)
        return;
    r->gpu.asked = 1;
    snprintf(r->gpu.device, sizeof r->gpu.device, "%s", vis);
    char err[400];
    if (ocp_recog_gpu_open(r->rc->gpu_fraction, r->rc->gpu_max_mb, r->rc->gpu_growth, &r->gpu.ctx,
                           &r->gpu.total, err, sizeof err)) {
        char why[500];
        snprintf(why, sizeof why, "CUDA not usable: %s", err);
        gpu_give_up(r, why);
        return;
    }
    snprintf(r->gpu.name, sizeof r->gpu.name, "%s", ocp_cuda_device_name(r->gpu.ctx));
    for (int i = 0; i < r->nmodels; i++)
        if (ocp_cuda_upload_model(r->gpu.ctx, r->models[i].m, err, sizeof err)) {
            char why[500];
            snprintf(why, sizeof why, "model %s: %s", r->models[i].name, err);
            gpu_give_up(r, why);
            return;
        }
    const char *f = getenv("OCRPOOL_CUDA_FAULT"); /* tests: the device lost mid-run */
    if (f && *f)
        ocp_cuda_inject_fault(r->gpu.ctx, atoi(f));
    r->gpu_be = (ocp_recog_backend){"cuda", r, gpu_forward};
    r->be = &r->gpu_be;
    gpu_snapshot(r);
    OCP_LOG(OCP_LOG_INFO,
            "recognizer %d on GPU %s (%s): cap %zu MiB (fraction %.2f of %llu MiB%s), growth %s, "
            "%zu MiB held",
            r->rc->index, r->gpu.device, r->gpu.name, r->gpu.mem.cap >> 20, r->rc->gpu_fraction,
            r->gpu.total >> 20, r->rc->gpu_max_mb > 0 ? ", max-memory-mb applies" : "",
            r->rc->gpu_growth ? "on" : "off", r->gpu.mem.held >> 20);
}

/* Idle for a second: the memory of growth steps that hold nothing goes back to CUDA. */
static void gpu_idle(recog *r, double now)
{
    if (!r->gpu.ctx || r->nq || r->gpu.trimmed || now - r->gpu.last_batch < 1.0)
        return;
    ocp_cuda_trim(r->gpu.ctx);
    gpu_snapshot(r);
    r->gpu.trimmed = 1;
}

/* NVML's utilisation of our device (n/a for an emulated one, or without NVML). */
static void gpu_util(recog *r)
{
    r->gpu.util = -1;
    if (!r->gpu.ctx ||
        strncmp(r->gpu.device, OCP_GPU_EMULATED_UUID, strlen(OCP_GPU_EMULATED_UUID)) == 0)
        return;
    ocp_gpu_list *gl = ocp_xcalloc(1, sizeof *gl);
    ocp_gpu_discover(gl);
    for (int i = 0; i < gl->n; i++)
        if (strcmp(gl->dev[i].uuid, r->gpu.device) == 0)
            r->gpu.util = gl->dev[i].util_gpu;
    free(gl);
}

static json_t *gpu_json(recog *r)
{
    if (!r->gpu.asked)
        return json_null();
    gpu_util(r);
    const ocp_cuda_mem *g = &r->gpu.mem;
    json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:b, s:s}",
                          "device", r->gpu.device, "name", r->gpu.name, "active",
                          r->gpu.ctx != NULL, "total_bytes", (json_int_t)r->gpu.total, "cap_bytes",
                          (json_int_t)g->cap, "held_bytes", (json_int_t)g->held, "in_use_bytes",
                          (json_int_t)g->in_use, "peak_held_bytes", (json_int_t)g->peak_held,
                          "peak_in_use_bytes", (json_int_t)g->peak_in_use, "splits",
                          (json_int_t)g->splits, "growth", r->rc->gpu_growth != 0, "failures",
                          (json_int_t)r->gpu.failures, "lost", r->gpu.lost != 0, "why", r->gpu.why);
    json_object_set_new(o, "util_percent",
                        r->gpu.util >= 0 ? json_integer(r->gpu.util) : json_null());
    return o;
}

/* ---- the process ----------------------------------------------------------------------- */

static void send_stats(recog *r)
{
    json_t *h = json_array();
    for (int b = 0; b < OCP_RECOG_HIST_NB; b++)
        json_array_append_new(h, json_integer(r->hist[b]));
    json_t *msg = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:o, s:f, s:f, s:f, s:i, s:i, s:i, s:I}", "t", "stats", "lines",
        (json_int_t)r->lines, "batches", (json_int_t)r->batches, "multi_worker_batches",
        (json_int_t)r->multi, "failed", (json_int_t)r->failed, "batch_hist", h, "wait_sum_s",
        r->wait_sum, "wait_max_s", r->wait_max, "busy_s", r->busy_s, "clients", r->ncl, "queued",
        r->nq, "models", r->nmodels, "clients_total", (json_int_t)r->clients_total);
    json_object_set_new(msg, "backend", json_string(r->be->name));
    json_object_set_new(msg, "gpu", gpu_json(r));
    if (ocp_proto_send_timed(r->master_fd, msg, -1, 1.0))
        _exit(0); /* the master is gone */
    json_decref(msg);
}

static void fatal(int fd, const char *why)
{
    OCP_LOG(OCP_LOG_ERROR, "recognizer cannot start: %s", why);
    json_t *m = json_pack("{s:s, s:s}", "t", "fatal", "error", why);
    ocp_proto_send(fd, m, -1);
    json_decref(m);
    _exit(OCP_EXIT_FATAL);
}

static int listen_on(const char *addr)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(addr);
    if (n + 1 > sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path + 1, addr, n); /* abstract: no file, gone with the process */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0 ||
        listen(fd, 64) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* The pool's languages, ready before the first request: one that does not load is a
 * recognizer that cannot start. */
static void preload(recog *r)
{
    char *langs = ocp_xstrdup(r->rc->langs ? r->rc->langs : ""), *save = NULL, err[600];
    const char *f = getenv("OCRPOOL_FAULT");
    if (f && strcmp(f, "recognizer-bad-model") == 0)
        fatal(r->master_fd, "fault injection: recognizer-bad-model");
    for (char *l = strtok_r(langs, "+", &save); l; l = strtok_r(NULL, "+", &save))
        if (!model_get(r, l, err, sizeof err))
            fatal(r->master_fd, err);
    free(langs);
}

void ocp_recog_main(const ocp_recog_conf *rc, int master_fd)
{
    recog rr = {.rc = rc, .be = &ocp_recog_backend_cpu, .master_fd = master_fd}, *r = &rr;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ocp_log_set_role('R');
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN); /* as the zygote: we end when the master closes our socket */
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    preload(r);
    gpu_start(r);
    r->listen_fd = listen_on(rc->addr);
    if (r->listen_fd < 0) {
        char why[300];
        snprintf(why, sizeof why, "cannot listen on @%s: %s", rc->addr, strerror(-r->listen_fd));
        fatal(master_fd, why);
    }
    json_t *ready =
        json_pack("{s:s, s:i, s:s}", "t", "ready", "pid", (int)getpid(), "backend", r->be->name);
    ocp_proto_send(master_fd, ready, -1);
    json_decref(ready);
    OCP_LOG(OCP_LOG_INFO, "recognizer %d ready on @%s (%s, batches of %d lines, %.0f ms)",
            rc->index, rc->addr, r->be->name, rc->batch_lines, rc->wait_s * 1000);
    const char *f = getenv("OCRPOOL_FAULT");
    if (f && strcmp(f, "recognizer-crash") == 0) {
        OCP_LOG(OCP_LOG_WARN, "fault injection: recognizer crashing");
        raise(SIGSEGV);
    }
    fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);
    ocp_proto_reader mrd;
    ocp_proto_reader_init(&mrd);
    double next_stats = ocp_now() + 1.0;
    struct pollfd *p = ocp_xcalloc(MAX_CLIENTS + 2, sizeof *p);
    for (;;) {
        double now = ocp_now(), due = next_stats;
        if (r->nq) {
            double oldest = r->q[0].enq;
            for (int i = 1; i < r->nq; i++)
                oldest = r->q[i].enq < oldest ? r->q[i].enq : oldest;
            due = oldest + rc->wait_s < due ? oldest + rc->wait_s : due;
        }
        int ms = batch_due(r, now) ? 0 : due > now ? (int)((due - now) * 1000) + 1 : 0;
        int ncl = r->ncl;
        p[0] = (struct pollfd){master_fd, POLLIN, 0};
        p[1] = (struct pollfd){r->listen_fd, POLLIN, 0};
        client *polled[MAX_CLIENTS];
        for (int i = 0; i < ncl; i++) {
            p[2 + i] = (struct pollfd){r->cl[i]->fd, POLLIN, 0};
            polled[i] = r->cl[i];
        }
        poll(p, (nfds_t)ncl + 2, ms);
        now = ocp_now();
        if (p[0].revents) {
            int n = ocp_proto_fill(&mrd, master_fd);
            if (n == 0 || (n < 0 && n != -EAGAIN)) {
                /* The master (or the node) is done: our last figures to it (it waits for
                 * them when it stops the node: ocp__recog_stop), then we go. */
                send_stats(r);
                OCP_LOG(OCP_LOG_DEBUG,
                        "recognizer %d ends: %ld lines in %ld batches (%ld of lines of more "
                        "than one worker), %.1f s in the network",
                        rc->index, r->lines, r->batches, r->multi, r->busy_s);
                _exit(0);
            }
        }
        for (int i = 0; i < ncl; i++)
            if (p[2 + i].revents) {
                int at = client_index(r, polled[i]);
                if (at >= 0)
                    client_readable(r, at, now);
            }
        if (p[1].revents)
            accept_clients(r);
        /* One batch a turn: the lines that came meanwhile (another worker's) join the queue
         * before the next batch is chosen, so that no worker's long page holds the others'. */
        if (batch_due(r, ocp_now()))
            run_batch(r, ocp_now());
        gpu_idle(r, ocp_now());
        if (ocp_now() >= next_stats) {
            send_stats(r);
            next_stats = ocp_now() + 1.0;
        }
    }
}
