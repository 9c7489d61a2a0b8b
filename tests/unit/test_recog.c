/*
 * test_recog.c: the shared recognizer (src/recog): its request checks, and a
 * real recognizer process (ocp_recog_main, forked here) serving clients
 * (ocp_recog_client_forward) in other processes: every line's outputs bit
 * for bit what the forward pass gives in the client's own process; lines of
 * two clients in shared batches; a client that dies with lines queued costs
 * the others nothing; a recognizer that is gone leaves every line to the
 * client. The models are Debian's eng (skipped, with the reason, when it is
 * not installed).
 */
#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/model.h"
#include "engine/lstm/remote.h"
#include "pool/proto.h"
#include "recog/recog.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static const char *tessdata(void)
{
    const char *p = getenv("TESSDATA_PREFIX");
    return p && *p ? p : "/usr/share/tesseract-ocr/5/tessdata";
}

static int parse(const char *text, int height, ocp_recog_req *req)
{
    json_t *msg = json_loads(text, 0, NULL);
    assert_non_null(msg);
    char err[300] = "";
    int rc = ocp_recog_parse_request(msg, 65536, height, req, err, sizeof err);
    if (rc)
        assert_true(strlen(err) > 0);
    json_decref(msg);
    return rc;
}

static void test_parse(void **state)
{
    (void)state;
    ocp_recog_req r;
    assert_int_equal(parse("{\"t\":\"lines\",\"id\":5,\"model\":\"script/Devanagari\",\"out\":8000,"
                           "\"lines\":[[0,100],[3648,120]]}",
                           36, &r),
                     0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.id, 5);
    assert_string_equal(r.model, "script/Devanagari");
    assert_int_equal(r.line[1].off, 3648);
    assert_int_equal(r.line[1].w, 120);
    free(r.line);
    /* 3648 + 120 x 36 = 7968 <= 8000; at 48 rows it runs past the outputs' start. */
    assert_int_equal(parse("{\"t\":\"lines\",\"id\":5,\"model\":\"eng\",\"out\":8000,"
                           "\"lines\":[[3648,120]]}",
                           48, &r),
                     OCP_E_MESSAGE);
    static const char *const bad[] = {
        /* outputs past the arena */
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":65537,\"lines\":[[0,1]]}",
        /* a negative offset, a zero width, a width past the cap, a huge one */
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":100,\"lines\":[[-1,1]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":100,\"lines\":[[0,0]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":65536,\"lines\":[[0,100001]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":100,"
        "\"lines\":[[0,9223372036854775807]]}",
        /* an offset past the outputs' start; a line that is not a pair */
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":100,\"lines\":[[101,1]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":100,\"lines\":[[0,1,2]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":100,\"lines\":[]}",
        /* names that could leave tessdata or are not names */
        "{\"t\":\"lines\",\"id\":1,\"model\":\"../eng\",\"out\":100,\"lines\":[[0,1]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"/etc/x\",\"out\":100,\"lines\":[[0,1]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"a/b/c\",\"out\":100,\"lines\":[[0,1]]}",
        "{\"t\":\"lines\",\"id\":1,\"model\":\"\",\"out\":100,\"lines\":[[0,1]]}",
        /* not a request */
        "{\"t\":\"hello\",\"id\":1,\"model\":\"eng\",\"out\":100,\"lines\":[[0,1]]}",
        "{\"t\":\"lines\",\"id\":\"1\",\"model\":\"eng\",\"out\":100,\"lines\":[[0,1]]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        print_message("refused: %s\n", bad[i]);
        assert_int_equal(parse(bad[i], 36, &r), OCP_E_MESSAGE);
        assert_null(r.line);
    }
    /* More lines than a request may have. */
    ocp_sb sb;
    ocp_sb_init(&sb);
    ocp_sb_puts(&sb, "{\"t\":\"lines\",\"id\":1,\"model\":\"eng\",\"out\":65536,\"lines\":[");
    for (int i = 0; i <= OCP_RECOG_MAX_LINES; i++)
        ocp_sb_puts(&sb, i ? ",[0,1]" : "[0,1]");
    ocp_sb_puts(&sb, "]}");
    assert_int_equal(parse(sb.buf, 36, &r), OCP_E_MESSAGE);
    ocp_sb_fini(&sb);
}

/* ---- a real recognizer ----------------------------------------------------------------- */

/* How a test's recognizer batches (cmocka's prestate; NULL: QUICK). */
typedef struct batching {
    int lines;
    double wait_s;
} batching;
static const batching QUICK = {16, 0.02};

typedef struct fixture {
    ocp_lstm_model *m;
    pid_t pid;
    int fd; /* the master's end */
    char addr[64];
    ocp_recog_conf rc;
} fixture;

static int start(void **state)
{
    char path[4200], err[400] = "";
    snprintf(path, sizeof path, "%s/eng.traineddata", tessdata());
    if (access(path, R_OK) != 0) {
        print_message("skipped: %s is not installed\n", path);
        *state = NULL;
        return 0;
    }
    const batching *b = *state ? *state : &QUICK;
    fixture *f = ocp_xcalloc(1, sizeof *f);
    if (ocp_lstm_model_load(path, &f->m, err, sizeof err))
        fail_msg("%s", err);
    snprintf(f->addr, sizeof f->addr, "ocrpool-test-recog-%d", (int)getpid());
    f->rc = (ocp_recog_conf){.addr = f->addr,
                             .tessdata_dir = tessdata(),
                             .langs = "eng",
                             .batch_lines = b->lines,
                             .wait_s = b->wait_s,
                             .batch_bytes = 256.0 * 1048576,
                             .max_arena = 256u << 20};
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    fflush(NULL);
    f->pid = fork();
    if (f->pid == 0) {
        close(sp[0]);
        ocp_recog_main(&f->rc, sp[1]);
    }
    close(sp[1]);
    f->fd = sp[0];
    ocp_proto_reader rd;
    ocp_proto_reader_init(&rd);
    json_t *msg = NULL;
    assert_int_equal(ocp_proto_recv_timed(f->fd, &rd, &msg, 30), 0);
    assert_string_equal(json_string_value(json_object_get(msg, "t")), "ready");
    json_decref(msg);
    ocp_proto_reader_fini(&rd);
    *state = f;
    return 0;
}

static int stop(void **state)
{
    fixture *f = *state;
    if (!f)
        return 0;
    close(f->fd); /* it ends when its master's socket closes */
    if (f->pid > 0)
        waitpid(f->pid, NULL, 0);
    ocp_lstm_model_free(f->m);
    free(f);
    return 0;
}

/* n lines of pseudo-random pixels (seeded), each `width` columns wide (0: 40..439). */
static void make_lines_of(const ocp_lstm_model *m, unsigned seed, int n, int width, int8_t **img,
                          int *w)
{
    for (int i = 0; i < n; i++) {
        w[i] = width ? width : 40 + (int)((seed * 7919u + (unsigned)i * 104729u) % 400u);
        size_t px = (size_t)w[i] * (size_t)m->input_height;
        img[i] = ocp_xmalloc(px + OCP_LSTM_PAD);
        unsigned s = seed * 31u + (unsigned)i;
        for (size_t k = 0; k < px; k++) {
            s = s * 1103515245u + 12345u;
            img[i][k] = (int8_t)((int)((s >> 16) % 255u) - 127);
        }
    }
}

static void make_lines(const ocp_lstm_model *m, unsigned seed, int n, int8_t **img, int *w)
{
    make_lines_of(m, seed, n, 0, img, w);
}

/* Reads n lines (at most 128) of `width` columns (0: 40..439) through the recognizer and
 * checks each against the forward pass here: 0 when every line came back from it and equal
 * to the bit; else the count of those that did not. */
static int through_of(const fixture *f, ocp_recog_client *c, unsigned seed, int n, int width)
{
    int8_t *img[128];
    int w[128], steps[128], bad = 0;
    float *probs[128];
    assert_true(n <= 128);
    make_lines_of(f->m, seed, n, width, img, w);
    int rc = ocp_recog_client_forward(c, "eng", f->m, n, (const int8_t *const *)img, w, probs,
                                      steps, ocp_now() + 60);
    for (int i = 0; i < n; i++) {
        float *mine;
        int my_steps;
        char err[300];
        if (rc || !probs[i] ||
            ocp_lstm_forward(f->m, img[i], w[i], &mine, &my_steps, err, sizeof err)) {
            bad++;
        } else {
            bad += my_steps != steps[i] ||
                   memcmp(mine, probs[i], (size_t)my_steps * f->m->classes * sizeof(float)) != 0;
            free(mine);
        }
        free(probs[i]);
        free(img[i]);
    }
    return bad;
}

static int through(const fixture *f, ocp_recog_client *c, unsigned seed, int n)
{
    return through_of(f, c, seed, n, 0);
}

static void test_bit_equal(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 8u << 20);
    assert_int_equal(through(f, c, 1, 20), 0);
    assert_int_equal(through(f, c, 2, 3), 0);
    long remote, local;
    ocp_recog_client_counts(c, &remote, &local);
    assert_int_equal(remote, 23);
    assert_int_equal(local, 0);
    /* An arena too small for every line: the recognizer reads what fits, a line that does
     * not fit at all is left to us (OCP_LSTM_REMOTE_HERE). */
    ocp_recog_client *small = ocp_recog_client_create(f->addr, 64u << 10);
    int8_t *img[4];
    int w[4], steps[4];
    float *probs[4];
    make_lines(f->m, 3, 4, img, w);
    w[3] = 400; /* 400 x 36 pixels fit; its outputs (up to 408 x 111 floats) do not */
    assert_int_equal(ocp_recog_client_forward(small, "eng", f->m, 4, (const int8_t *const *)img, w,
                                              probs, steps, 0),
                     0);
    assert_null(probs[3]);
    assert_int_equal(steps[3], OCP_LSTM_REMOTE_HERE);
    for (int i = 0; i < 4; i++) {
        free(probs[i]);
        free(img[i]);
    }
    ocp_recog_client_destroy(small);
    ocp_recog_client_destroy(c);
}

/* The figures the recognizer sends its master every second: the first whose `key` is
 * at least `want`, or the last of them after `limit` seconds (a busy machine may take long). */
static json_t *figures_until(const fixture *f, const char *key, long want, double limit)
{
    ocp_proto_reader rd;
    ocp_proto_reader_init(&rd);
    json_t *last = NULL, *msg = NULL;
    double end = ocp_now() + limit;
    while (ocp_now() < end && ocp_proto_recv_timed(f->fd, &rd, &msg, end - ocp_now()) == 0) {
        json_decref(last);
        last = msg;
        if (json_integer_value(json_object_get(last, key)) >= want)
            break;
    }
    ocp_proto_reader_fini(&rd);
    assert_non_null(last);
    char *text = json_dumps(last, JSON_COMPACT);
    print_message("figures: %s\n", text);
    free(text);
    return last;
}

static const batching TWO_WORKERS = {24, 30.0};

static void test_two_workers(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* Two client processes at once, each 3 rounds of 12 lines: batches of both (a batch is
     * 24 lines and waits long, so each holds both clients' round). */
    pid_t kid[2];
    for (int k = 0; k < 2; k++) {
        fflush(NULL);
        kid[k] = fork();
        if (kid[k] == 0) {
            ocp_recog_client *c = ocp_recog_client_create(f->addr, 8u << 20);
            int bad = 0;
            for (int r = 0; r < 3; r++)
                bad += through(f, c, 100u + (unsigned)(k * 10 + r), 12);
            ocp_recog_client_destroy(c);
            _exit(bad ? 1 : 0);
        }
    }
    for (int k = 0; k < 2; k++) {
        int st = -1;
        waitpid(kid[k], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    json_t *s = figures_until(f, "lines", 72, 60);
    assert_int_equal(json_integer_value(json_object_get(s, "lines")), 72);
    assert_int_equal(json_integer_value(json_object_get(s, "multi_worker_batches")), 3);
    json_decref(s);
}

/* Lines wait in the recognizer until 33 are there (or an hour). */
static const batching CLIENT_DIES = {33, 3600};

static void test_client_dies(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* A worker whose 32 lines wait in the recognizer (its figures say so) is killed: its
     * lines go, nobody else's; the next worker's 33 lines (a batch at once) are read, they
     * alone, and nothing stays queued. */
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        ocp_recog_client *c = ocp_recog_client_create(f->addr, 16u << 20);
        int8_t *img[32];
        int w[32], steps[32];
        float *probs[32];
        make_lines(f->m, 7, 32, img, w);
        ocp_recog_client_forward(c, "eng", f->m, 32, (const int8_t *const *)img, w, probs, steps,
                                 0);
        _exit(0);
    }
    json_t *s = figures_until(f, "queued", 32, 60);
    assert_int_equal(json_integer_value(json_object_get(s, "queued")), 32);
    json_decref(s);
    assert_int_equal(kill(kid, SIGKILL), 0);
    int st = 0;
    waitpid(kid, &st, 0);
    assert_true(WIFSIGNALED(st));
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 32u << 20);
    assert_int_equal(through(f, c, 8, 33), 0);
    ocp_recog_client_destroy(c);
    s = figures_until(f, "lines", 33, 60);
    assert_int_equal(json_integer_value(json_object_get(s, "lines")), 33);
    assert_int_equal(json_integer_value(json_object_get(s, "queued")), 0);
    json_decref(s);
    assert_int_equal(kill(f->pid, 0), 0); /* still there */
}

static const batching RECONNECT = {16, 0.001};

static void test_reconnect_fresh_arena(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* A request given up (its page's time limit) while the recognizer runs its lines: the
     * next request goes on a new connection, its lines packed from the arena's start, and
     * reach past where the old request's outputs go. The old outputs, written late, must not
     * land on them. 16 lines of 2000 columns keep the recognizer busy for a good part of a
     * second; we give up after 30 ms. */
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 32u << 20);
    int8_t *img[16];
    int w[16], steps[16];
    float *probs[16];
    make_lines_of(f->m, 11, 16, 2000, img, w);
    double t0 = ocp_now();
    int frc = ocp_recog_client_forward(c, "eng", f->m, 16, (const int8_t *const *)img, w, probs,
                                       steps, ocp_now() + 0.03);
    print_message("gave up after %.3f s\n", ocp_now() - t0);
    assert_int_equal(frc, OCP_E_TIMEOUT);
    for (int i = 0; i < 16; i++) {
        free(probs[i]);
        free(img[i]);
    }
    assert_int_equal(through_of(f, c, 12, 24, 2000), 0);
    json_t *s = figures_until(f, "lines", 40, 60);
    print_message("the first request's lines were run: %lld of 40 lines\n",
                  (long long)json_integer_value(json_object_get(s, "lines")));
    json_decref(s);
    ocp_recog_client_destroy(c);
}

static void test_frame_cap(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* A frame that says it is 48 MiB: the worker is let go on its header, after 64 KiB of it
     * (proto.h's own cap, 64 MiB, would have the recognizer read it all and parse it). */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t an = strlen(f->addr);
    memcpy(sa.sun_path + 1, f->addr, an);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa,
                             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + an)),
                     0);
    static char body[4 + 65536];
    body[0] = 3; /* 3 << 24 bytes */
    for (size_t i = 4; i + 6 <= sizeof body; i += 6)
        memcpy(body + i, "[0,1],", 6);
    assert_int_equal(write(fd, body, sizeof body), (ssize_t)sizeof body);
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 10000), 1);
    char x;
    ssize_t n = read(fd, &x, 1);
    assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
    close(fd);
    /* The most lines a request may have, OCP_RECOG_MAX_LINES, are well under the cap: the
     * request is answered (every line read there, or refused), none left to us. */
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 128u << 20);
    int nl = OCP_RECOG_MAX_LINES;
    int8_t **img = ocp_xcalloc((size_t)nl, sizeof *img);
    int *w = ocp_xcalloc((size_t)nl, sizeof *w), *steps = ocp_xcalloc((size_t)nl, sizeof *steps);
    float **probs = ocp_xcalloc((size_t)nl, sizeof *probs);
    for (int i = 0; i < nl; i++) {
        w[i] = 40;
        img[i] = ocp_xcalloc((size_t)w[i] * f->m->input_height + OCP_LSTM_PAD, 1);
    }
    assert_int_equal(ocp_recog_client_forward(c, "eng", f->m, nl, (const int8_t *const *)img, w,
                                              probs, steps, ocp_now() + 60),
                     0);
    int here = 0;
    for (int i = 0; i < nl; i++) {
        here += steps[i] == OCP_LSTM_REMOTE_HERE;
        free(probs[i]);
        free(img[i]);
    }
    assert_int_equal(here, 0);
    free(img);
    free(w);
    free(steps);
    free(probs);
    assert_int_equal(through(f, c, 13, 4), 0);
    ocp_recog_client_destroy(c);
}

#define FLOOD 4000
/* A's lines' width: wide enough that the recognizer needs well over a second for them
 * (about 2 s here), so that a second's figures see 1000 or more of them waiting (with 60
 * columns they took 1.2 s, and one run in three saw no figures in that window). */
#define FLOOD_W 100

static void test_fair_share(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* Worker A asks for FLOOD narrow lines (FLOOD_W columns); while 1000 or more of them wait in
     * the recognizer, worker B asks for 8 (40 columns): B's come back long before A's
     * (batches in turn, a fair share of each), not after all of them. */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        close(pfd[0]);
        ocp_recog_client *c = ocp_recog_client_create(f->addr, 256u << 20);
        int8_t **img = ocp_xcalloc(FLOOD, sizeof *img);
        int *w = ocp_xcalloc(FLOOD, sizeof *w), *steps = ocp_xcalloc(FLOOD, sizeof *steps);
        float **probs = ocp_xcalloc(FLOOD, sizeof *probs);
        make_lines_of(f->m, 21, FLOOD, FLOOD_W, img, w);
        double t0 = ocp_now();
        int rc = ocp_recog_client_forward(c, "eng", f->m, FLOOD, (const int8_t *const *)img, w,
                                          probs, steps, 0);
        double t[3] = {ocp_now(), ocp_now() - t0, rc};
        for (int i = 0; i < FLOOD; i++)
            t[2] += steps[i] < 0; /* left to us */
        if (write(pfd[1], t, sizeof t) != (ssize_t)sizeof t)
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    json_t *s = figures_until(f, "queued", 1000, 60);
    assert_true(json_integer_value(json_object_get(s, "queued")) >= 1000);
    json_decref(s);
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 8u << 20);
    double t0 = ocp_now();
    assert_int_equal(through_of(f, c, 22, 8, 40), 0);
    double tb = ocp_now();
    ocp_recog_client_destroy(c);
    double ta[3];
    assert_int_equal(read(pfd[0], ta, sizeof ta), (ssize_t)sizeof ta);
    close(pfd[0]);
    int st = 0;
    waitpid(kid, &st, 0);
    print_message("B's 8 lines back after %.3f s; A's %d after %.3f s, %.3f s after B's; A's "
                  "error %g, left to A %g\n",
                  tb - t0, FLOOD, ta[1], ta[0] - tb, ta[2] > 0 ? 1.0 : 0.0, ta[2]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* After B's lines A still had more to wait than B waited (before: B's came back in the
     * last batches of A's, after nearly all of them). */
    assert_true(ta[0] - tb > tb - t0);
}

/* Batches of 1000 lines or after an hour: nothing is answered in time. */
static const batching STUCK = {1000, 3600};

static void test_bounded_wait(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* A recognizer that does not answer: without a page deadline the client waits a bounded
     * time (5 s and a little per column), then the lines are left to it, not waited for
     * without end. */
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 8u << 20);
    int8_t *img[4];
    int w[4], steps[4];
    float *probs[4];
    make_lines(f->m, 14, 4, img, w);
    double t0 = ocp_now();
    assert_int_equal(
        ocp_recog_client_forward(c, "eng", f->m, 4, (const int8_t *const *)img, w, probs, steps, 0),
        0);
    double dt = ocp_now() - t0;
    print_message("lines left to the client after %.2f s\n", dt);
    for (int i = 0; i < 4; i++) {
        assert_null(probs[i]);
        assert_int_equal(steps[i], OCP_LSTM_REMOTE_HERE);
        free(img[i]);
    }
    assert_true(dt >= 5.0 && dt < 30.0);
    long remote, local;
    ocp_recog_client_counts(c, &remote, &local);
    assert_int_equal(local, 4);
    ocp_recog_client_destroy(c);
}

static void test_recognizer_gone(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 8u << 20);
    assert_int_equal(through(f, c, 9, 4), 0);
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    int8_t *img[5];
    int w[5], steps[5];
    float *probs[5];
    make_lines(f->m, 10, 5, img, w);
    assert_int_equal(
        ocp_recog_client_forward(c, "eng", f->m, 5, (const int8_t *const *)img, w, probs, steps, 0),
        0);
    for (int i = 0; i < 5; i++) {
        assert_null(probs[i]);
        assert_int_equal(steps[i], OCP_LSTM_REMOTE_HERE);
        free(img[i]);
    }
    long remote, local;
    ocp_recog_client_counts(c, &remote, &local);
    assert_int_equal(remote, 4);
    assert_int_equal(local, 5);
    ocp_recog_client_destroy(c);
    /* stop() reaps nothing more: the pid is gone. */
    f->pid = -1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER")) /* one test, to look at it alone */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test_setup_teardown(test_bit_equal, start, stop),
        cmocka_unit_test_prestate_setup_teardown(test_two_workers, start, stop,
                                                 (void *)&TWO_WORKERS),
        cmocka_unit_test_prestate_setup_teardown(test_client_dies, start, stop,
                                                 (void *)&CLIENT_DIES),
        cmocka_unit_test_prestate_setup_teardown(test_reconnect_fresh_arena, start, stop,
                                                 (void *)&RECONNECT),
        cmocka_unit_test_setup_teardown(test_frame_cap, start, stop),
        cmocka_unit_test_setup_teardown(test_fair_share, start, stop),
        cmocka_unit_test_prestate_setup_teardown(test_bounded_wait, start, stop, (void *)&STUCK),
        cmocka_unit_test_setup_teardown(test_recognizer_gone, start, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
