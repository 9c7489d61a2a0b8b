/*
 * client.c: the worker's side of the shared recognizer (recog.h, recog.c
 * for the protocol). The engine's remote forward pass (engine/lstm/remote.h):
 * the lines go into this worker's own arena (a sealed memfd), a request
 * names them, the answer says where each line's per-step outputs are.
 *
 * Whatever happens to the recognizer, the page goes on: a line it does not
 * read (it is not there, it died mid-request, it had no room) comes back as
 * OCP_LSTM_REMOTE_HERE and the engine reads it in this process, with the
 * same bits. A recognizer that cannot be reached is tried again after a
 * second, not on every line.
 */
#include "recog/recog.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/lstm/remote.h"
#include "pool/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RETRY_S 1.0
/* The longest wait for an answer: this much, plus a second for every ANSWER_COLS_PER_S
 * columns of the request (a fifth of what one CPU core reads, so that a fair share among a
 * few workers fits). Past it the recognizer is stuck or swamped (a model it loads, another
 * worker's flood): the lines are read here rather than when the page's deadline ends it. */
#define ANSWER_WAIT_S     5.0
#define ANSWER_COLS_PER_S 20000.0

/* One recognizer's connection and this worker's arena for it. */
typedef struct conn {
    char addr[100];
    size_t len;
    unsigned char *arena;
    int memfd, fd;
    ocp_proto_reader rd;
    long long next_id;
    double retry_at;
    long remote, local;
} conn;

/* Every recognizer of the node (one per device): each request goes to the one whose queue
 * is the shortest now, which each publishes in the head of the arenas it maps. */
struct ocp_recog_client {
    conn c[OCP_RECOG_MAX_PEERS];
    int n;
    unsigned turn; /* ties go round, from a place of this process's own */
};

ocp_recog_client *ocp_recog_client_create(const char *addrs, size_t arena_bytes)
{
    ocp_recog_client *cl = ocp_xcalloc(1, sizeof *cl);
    char *list = ocp_xstrdup(addrs), *save = NULL;
    for (char *a = strtok_r(list, ",", &save); a && cl->n < OCP_RECOG_MAX_PEERS;
         a = strtok_r(NULL, ",", &save)) {
        conn *c = &cl->c[cl->n++];
        snprintf(c->addr, sizeof c->addr, "%s", a);
        c->len = arena_bytes;
        c->memfd = c->fd = -1;
        ocp_proto_reader_init(&c->rd);
    }
    free(list);
    cl->turn = (unsigned)getpid();
    return cl;
}

/* The connection and its arena go together: the recognizer may still be in a forward pass
 * of this connection's lines (we gave up on it after a time limit or a bad answer) and writes
 * their outputs into the arena it mapped when it is done. Those writes must land in memory
 * that no later request uses, so the next connection gets a fresh memfd; the old one is
 * freed when the recognizer lets go of it too. */
static void disconnect(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    ocp_proto_reader_fini(&c->rd);
    ocp_proto_reader_init(&c->rd);
    if (c->arena)
        munmap(c->arena, c->len);
    c->arena = NULL;
    if (c->memfd >= 0)
        close(c->memfd);
    c->memfd = -1;
}

void ocp_recog_client_destroy(ocp_recog_client *cl)
{
    if (!cl)
        return;
    for (int i = 0; i < cl->n; i++) {
        disconnect(&cl->c[i]);
        ocp_proto_reader_fini(&cl->c[i].rd);
    }
    free(cl);
}

void ocp_recog_client_counts(const ocp_recog_client *cl, long *remote, long *local)
{
    *remote = *local = 0;
    for (int i = 0; cl && i < cl->n; i++) {
        *remote += cl->c[i].remote;
        *local += cl->c[i].local;
    }
}

/* The arena, made once per connection (disconnect): sealed so that its size cannot change
 * under the recognizer. */
static int make_arena(conn *c)
{
    if (c->arena)
        return 0;
    int fd = memfd_create("ocrpool-lines", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)c->len) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    void *p = mmap(NULL, c->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = -errno;
        close(fd);
        return e;
    }
    c->arena = p;
    c->memfd = fd;
    return 0;
}

static int connect_once(conn *c)
{
    if (c->fd >= 0)
        return 0;
    if (ocp_now() < c->retry_at)
        return -EAGAIN;
    int rc = make_arena(c);
    if (rc)
        return rc;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(c->addr);
    memcpy(sa.sun_path + 1, c->addr, n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0) {
        rc = -errno;
        close(fd);
        c->retry_at = ocp_now() + RETRY_S;
        return rc;
    }
    /* Non-blocking: a wait for an answer ends at its deadline (ocp_proto_recv_timed polls;
     * a blocking read would wait for the recognizer however long it takes). */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    json_t *hello = json_pack("{s:s, s:I}", "t", "hello", "arena", (json_int_t)c->len);
    rc = ocp_proto_send(fd, hello, c->memfd);
    json_decref(hello);
    if (rc) {
        disconnect(c);
        c->retry_at = ocp_now() + RETRY_S;
    }
    return rc;
}

/* Lines [a, b) packed into the arena from 0 (64-byte aligned), the outputs after them:
 * returns b, the first line that did not fit with the room its outputs may take (steps <=
 * columns + 8, bounded loosely: the recognizer says when it ran out), *out the outputs'
 * start. */
static int pack(conn *c, const ocp_lstm_model *m, int a, int n, const int8_t *const *img,
                const int *w, size_t *off, size_t *out)
{
    size_t in = OCP_RECOG_HEAD, need = 0;
    int b = a;
    for (; b < n && b - a < OCP_RECOG_MAX_LINES; b++) {
        size_t px = (size_t)w[b] * (size_t)m->input_height;
        size_t o = (in + 63) & ~(size_t)63;
        size_t more = ((size_t)w[b] + 8) * (size_t)m->classes * sizeof(float) + 64;
        if (w[b] > OCP_RECOG_MAX_WIDTH || o + px + 64 + need + more > c->len)
            break;
        off[b] = o;
        in = o + px;
        need += more;
    }
    for (int k = a; k < b; k++)
        memcpy(c->arena + off[k], img[k], (size_t)w[k] * (size_t)m->input_height);
    *out = (in + 63) & ~(size_t)63;
    return b;
}

/* The answer to request id for lines [a, b): each line's outputs copied out, or left to
 * this process. 0, or an error (the connection is then unusable). */
static int take_answer(conn *c, const ocp_lstm_model *m, long long id, int a, int b, const int *w,
                       float **probs, int *steps, double deadline)
{
    json_t *msg = NULL;
    double left = deadline > 0 ? deadline - ocp_now() : -1;
    int rc = ocp_proto_recv_timed(c->fd, &c->rd, &msg, deadline > 0 ? (left > 0 ? left : 0) : -1);
    if (rc)
        return rc;
    json_t *ls = json_object_get(msg, "lines");
    if (json_integer_value(json_object_get(msg, "id")) != id ||
        json_array_size(ls) != (size_t)(b - a)) {
        json_decref(msg);
        return OCP_E_MESSAGE;
    }
    for (int k = a; k < b; k++) {
        json_t *l = json_array_get(ls, (size_t)(k - a));
        json_int_t st = json_integer_value(json_array_get(l, 0));
        json_int_t off = json_integer_value(json_array_get(l, 1));
        json_int_t ns = json_integer_value(json_array_get(l, 2));
        size_t bytes = (size_t)ns * (size_t)m->classes * sizeof(float);
        if (st == 0 && off >= 0 && ns > 0 && ns <= w[k] + 8 && (size_t)off <= c->len &&
            bytes <= c->len - (size_t)off) {
            probs[k] = ocp_xmalloc(bytes);
            memcpy(probs[k], c->arena + off, bytes);
            steps[k] = (int)ns;
            c->remote++;
        } else {
            steps[k] = st == 2 ? OCP_LSTM_REMOTE_FAILED : OCP_LSTM_REMOTE_HERE;
        }
    }
    json_decref(msg);
    return 0;
}

/* The queue recognizer c published last (lines waiting); an unknown one counts as empty, one
 * that cannot be reached now as full. */
static unsigned queue_of(const conn *c)
{
    if (c->fd < 0 && ocp_now() < c->retry_at)
        return UINT32_MAX;
    if (!c->arena || c->fd < 0)
        return 0;
    return __atomic_load_n((const uint32_t *)c->arena, __ATOMIC_RELAXED);
}

static int forward_on(conn *c, const char *name, const ocp_lstm_model *m, int n,
                      const int8_t *const *img, const int *w, float **probs, int *steps,
                      double deadline);

int ocp_recog_client_forward(void *ctx, const char *name, const ocp_lstm_model *m, int n,
                             const int8_t *const *img, const int *w, float **probs, int *steps,
                             double deadline)
{
    ocp_recog_client *cl = ctx;
    int best = 0;
    unsigned bq = UINT32_MAX;
    cl->turn++;
    for (int k = 0; k < cl->n; k++) {
        int i = (int)((cl->turn + (unsigned)k) % (unsigned)cl->n);
        unsigned q = queue_of(&cl->c[i]);
        if (q < bq) {
            bq = q;
            best = i;
        }
    }
    return forward_on(&cl->c[best], name, m, n, img, w, probs, steps, deadline);
}

static int forward_on(conn *c, const char *name, const ocp_lstm_model *m, int n,
                      const int8_t *const *img, const int *w, float **probs, int *steps,
                      double deadline)
{
    int rc = 0;
    size_t *off = ocp_xcalloc((size_t)n + 1, sizeof *off);
    for (int k = 0; k < n; k++) {
        probs[k] = NULL;
        steps[k] = OCP_LSTM_REMOTE_HERE;
    }
    for (int a = 0; a < n && connect_once(c) == 0;) {
        size_t out;
        int b = pack(c, m, a, n, img, w, off, &out);
        if (b == a) { /* one line wider than the arena: read here */
            a++;
            continue;
        }
        json_t *ls = json_array();
        for (int k = a; k < b; k++)
            json_array_append_new(ls, json_pack("[I, i]", (json_int_t)off[k], w[k]));
        double cols = 0;
        for (int k = a; k < b; k++)
            cols += w[k];
        double bound = ocp_now() + ANSWER_WAIT_S + cols / ANSWER_COLS_PER_S;
        int bounded = deadline <= 0 || bound < deadline;
        long long id = ++c->next_id;
        json_t *req = json_pack("{s:s, s:I, s:s, s:I, s:o}", "t", "lines", "id", (json_int_t)id,
                                "model", name, "out", (json_int_t)out, "lines", ls);
        int e = ocp_proto_send(c->fd, req, -1);
        json_decref(req);
        if (!e)
            e = take_answer(c, m, id, a, b, w, probs, steps, bounded ? bound : deadline);
        if (e) {
            /* The recognizer went (or timed out, or spoke nonsense): closing our socket
             * drops whatever of ours it still queues. The rest is read here. */
            if (e == -ETIMEDOUT && !bounded) {
                rc = OCP_E_TIMEOUT;
            } else if (e == -ETIMEDOUT) {
                OCP_LOG(OCP_LOG_WARN,
                        "recognizer @%s: no answer to %d lines in %.1f s: lines read in this "
                        "worker",
                        c->addr, b - a, ANSWER_WAIT_S + cols / ANSWER_COLS_PER_S);
                c->retry_at = ocp_now() + RETRY_S;
            } else {
                OCP_LOG(OCP_LOG_WARN, "recognizer @%s: %s: lines read in this worker", c->addr,
                        e == -EPIPE ? "gone" : ocp_strerror(e));
            }
            disconnect(c);
            break;
        }
        a = b;
    }
    for (int k = 0; k < n; k++)
        c->local += steps[k] == OCP_LSTM_REMOTE_HERE;
    /* The arena's pages back to the system until the next lines: touched shared memory
     * stays with the file (and counts in both processes' PSS) until it is punched out. The
     * head (the recognizer's queue) stays. */
    if (c->memfd >= 0 && c->len > 4096)
        fallocate(c->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, (off_t)c->len - 4096);
    free(off);
    return rc;
}
