/*
 * fuzz_proto.c: the control socket's requests (proto.c's frames, stats.c's
 * answers) as a peer sends them: the bytes go down a socket pair in pieces
 * (sizes from the input's first byte), and the master's own control reader,
 * ocp__control_read (fill, the size check, the next frame, the answer of
 * ocp__control_answer, framed), reads them as it does for a client of its
 * control socket. As the server does, a client is let go once answered (what
 * it sent after its request is lost) or refused; the rest of the input is
 * then the next client's.
 *
 * The master is set up here, with nothing running: no loop, no process, a
 * SQLite queue in the harness's folder (its counts in "stats"), one emulated
 * GPU (OCRPOOL_CUDA_EMULATE), and five workers whose pid
 * is 0 and which are marked reaped, so that what scale does to them ("exit")
 * sends nothing and signals no one: it only changes their state, which is
 * checked. Stop, stop-now and reload set the flags the master's loop reads
 * (master.c), and nothing reads them here. Everything is set up again for
 * each client.
 *
 * Each answer is checked (check_answer) against the request, read again from
 * the same bytes by a second reader: its frame, "ok", each command's reply,
 * and scale's effect on the concurrency and the workers. With FZ_VERBOSE set, each request
 * and its answer go to standard error.
 */
#include "common.h"
#include "core/log.h"
#include "pool/master_int.h"
#include "pool/proto.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONCURRENCY 3
#define N_WORKERS   5

static ocp_broker *broker;
static master m;
static worker ws[N_WORKERS];
static held busy_page;

static void start(void)
{
    char url[4200], err[300];
    ocp_log_level = -1; /* quiet: the fuzzer prints its own lines */
    setenv("OCRPOOL_CUDA_EMULATE", "512", 1);
    snprintf(url, sizeof url, "sqlite://%s/queue.db", fz_dir());
    static const ocp_broker_opts bopts = {.lang = "eng", .result_expires_s = -1};
    if (ocp_broker_open(url, &bopts, &broker, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_proto: %s\n", err);
        abort();
    }
}

/* A master of generation 2 with CONCURRENCY live workers (idle, busy with a page,
 * starting), one exiting, and one idle of the previous generation. */
static void setup(void)
{
    static const int gen[N_WORKERS] = {2, 2, 2, 2, 1};
    static const int state[N_WORKERS] = {W_IDLE, W_BUSY, W_STARTING, W_EXITING, W_IDLE};
    memset(&m, 0, sizeof m);
    m.b = broker;
    m.ctl_fd = -1;
    m.gen = m.last_gen = 2;
    m.started_mono = ocp_now();
    snprintf(m.owner, sizeof m.owner, "fuzz_proto");
    m.pc.engine = "tesseract";
    m.pc.ep.lang = "eng";
    m.pc.concurrency = CONCURRENCY;
    memset(&busy_page, 0, sizeof busy_page);
    busy_page.t.id = "page-1";
    busy_page.source = "doc.pdf";
    busy_page.state = H_RUNNING;
    busy_page.est_bytes = 1 << 20;
    busy_page.started = ocp_now();
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < N_WORKERS; i++) {
        worker *w = &ws[i];
        w->slot = i;
        w->gen = gen[i];
        w->state = state[i];
        w->fd = -1;
        w->reaped = 1; /* nothing is sent to it, no signal */
        ocp_proto_reader_init(&w->rd);
        w->next = i + 1 < N_WORKERS ? &ws[i + 1] : NULL;
    }
    ws[1].task = &busy_page;
    m.workers = ws;
}

static void fail(const char *what, const json_t *req, const json_t *ans)
{
    char *rq = req ? json_dumps(req, JSON_COMPACT) : NULL;
    char *an = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
    fprintf(stderr, "fuzz_proto: %s\n  request %s\n  answer  %s\n", what, rq ? rq : "(none)",
            an ? an : "(none)");
    abort();
}

/* Workers of the current generation that are not exiting, and those of them that are idle. */
static void count(int *live, int *idle)
{
    *live = *idle = 0;
    for (int i = 0; i < N_WORKERS; i++)
        if (ws[i].gen == m.gen && ws[i].state != W_EXITING) {
            (*live)++;
            *idle += ws[i].state == W_IDLE;
        }
}

/* Scale's effect: the concurrency is n, idle workers beyond it were sent "exit", no other
 * worker changed. */
static void check_scale(json_int_t n, const json_t *req, const json_t *ans)
{
    static const int state[N_WORKERS] = {W_IDLE, W_BUSY, W_STARTING, W_EXITING, W_IDLE};
    int live, idle;
    count(&live, &idle);
    if (m.pc.concurrency != n || json_integer_value(json_object_get(ans, "concurrency")) != n)
        fail("scale: the concurrency is not n", req, ans);
    if (live > n && idle > 0)
        fail("scale: an idle worker beyond n was kept", req, ans);
    for (int i = 0; i < N_WORKERS; i++) {
        int exited = i == 0 && n < CONCURRENCY; /* the only idle worker of generation 2 */
        if (ws[i].state != (exited ? W_EXITING : state[i]))
            fail("scale: a worker it should not touch changed", req, ans);
    }
}

/* The answer in out (a frame) to req, the request the server read. */
static void check_answer(const unsigned char *out, size_t len, const json_t *req)
{
    if (len < 4)
        fail("the answer is not a frame", req, NULL);
    size_t n = ((size_t)out[0] << 24) | ((size_t)out[1] << 16) | ((size_t)out[2] << 8) | out[3];
    json_t *ans = n == len - 4 ? json_loadb((const char *)out + 4, n, 0, NULL) : NULL;
    if (!json_is_object(ans))
        fail("the answer is not one framed JSON object", req, ans);
    if (!req)
        fail("answered, but its request does not read as one", req, ans);
    if (getenv("FZ_VERBOSE")) {
        char *rq = json_dumps(req, JSON_COMPACT), *an = json_dumps(ans, JSON_COMPACT);
        fprintf(stderr, "fuzz_proto: %s -> %.300s\n", rq ? rq : "?", an ? an : "?");
        free(rq);
        free(an);
    }
    json_t *ok = json_object_get(ans, "ok");
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    const char *state = json_string_value(json_object_get(ans, "state"));
    if (!json_is_boolean(ok))
        fail("no \"ok\" in the answer", req, ans);
    if (!json_is_true(ok) && !json_is_string(json_object_get(ans, "error")))
        fail("a refusal without its error", req, ans);
    if (!cmd || (strcmp(cmd, "stats") && strcmp(cmd, "stop") && strcmp(cmd, "stop-now") &&
                 strcmp(cmd, "reload") && strcmp(cmd, "scale"))) {
        if (json_is_true(ok))
            fail("an unknown command was taken", req, ans);
    } else if (strcmp(cmd, "stats") == 0) {
        json_t *w = json_object_get(ans, "workers");
        if (!json_is_true(ok) || json_integer_value(json_object_get(ans, "pid")) != getpid() ||
            json_array_size(w) != N_WORKERS || !json_is_object(json_object_get(ans, "queue")) ||
            json_array_size(json_object_get(ans, "gpus")) < 1 ||
            !json_is_object(json_object_get(json_array_get(w, 1), "task")))
            fail("stats: not the node's figures", req, ans);
    } else if (strcmp(cmd, "stop") == 0 || strcmp(cmd, "stop-now") == 0) {
        const char *want = cmd[4] ? "stopping-cold" : "stopping";
        if (!json_is_true(ok) || !state || strcmp(state, want) != 0)
            fail("stop: not stopping", req, ans);
    } else if (strcmp(cmd, "reload") == 0) {
        if (!json_is_true(ok))
            fail("reload: refused", req, ans);
    } else {
        json_t *nj = json_object_get(req, "n");
        json_int_t want = json_is_integer(nj) ? json_integer_value(nj) : 0;
        if (want >= 1 && want <= OCP_MAX_WORKERS) {
            if (!json_is_true(ok))
                fail("scale: a good n refused", req, ans);
            check_scale(want, req, ans);
        } else if (json_is_true(ok) || m.pc.concurrency != CONCURRENCY) {
            fail("scale: a bad n taken", req, ans);
        }
    }
    json_decref(ans);
}

/* Bytes waiting on fd. */
static int pending(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

/* One client: a connection (sv[0] the peer's end, sv[1] the server's) and a second reader
 * (mirror) of the same bytes, which finds the request the server answers. */
typedef struct client {
    int sv[2], mv[2];
    ocp_proto_reader rd, mirror;
} client;

static void client_open(client *c)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, c->sv) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, c->mv) < 0)
        abort();
    ocp_proto_reader_init(&c->rd);
    ocp_proto_reader_init(&c->mirror);
    setup();
}

static void client_close(client *c)
{
    for (int i = 0; i < 2; i++) {
        if (c->sv[i] >= 0)
            close(c->sv[i]);
        close(c->mv[i]);
    }
    ocp_proto_reader_fini(&c->rd);
    ocp_proto_reader_fini(&c->mirror);
}

/* The server's turns while fd has bytes (or once, at the end of the stream): 1 when the
 * client is done with (answered or dropped). */
static int serve(client *c, int eof)
{
    for (;;) {
        unsigned char *out = NULL;
        size_t len = 0;
        int rc = ocp__control_read(&m, &c->rd, c->sv[1], &out, &len);
        if (rc > 0) {
            json_t *req = NULL;
            if (ocp_proto_next(&c->mirror, &req) != 0)
                req = NULL;
            check_answer(out, len, req);
            json_decref(req);
            free(out);
        }
        if (rc != 0)
            return 1;
        if (!eof && pending(c->sv[1]) == 0)
            return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!broker)
        start();
    if (size < 1)
        return 0;
    size_t piece = 1 + data[0] % 64 * 97;
    data++;
    size--;
    while (size > 0) {
        client c;
        client_open(&c);
        int done = 0;
        while (size > 0 && !done) {
            size_t k = size < piece ? size : piece;
            ssize_t w = write(c.sv[0], data, k);
            if (w <= 0 || write(c.mv[0], data, (size_t)w) != w)
                abort(); /* a piece fits in an empty socket's buffer */
            while (ocp_proto_fill(&c.mirror, c.mv[1]) > 0) {
            }
            data += w;
            size -= (size_t)w;
            done = serve(&c, 0);
        }
        if (!done) {
            close(c.sv[0]); /* the peer is done sending: the request ends here */
            c.sv[0] = -1;
            serve(&c, 1);
        }
        client_close(&c);
    }
    return 0;
}
