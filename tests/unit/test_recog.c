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

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
    fixture *f = ocp_xcalloc(1, sizeof *f);
    if (ocp_lstm_model_load(path, &f->m, err, sizeof err))
        fail_msg("%s", err);
    snprintf(f->addr, sizeof f->addr, "ocrpool-test-recog-%d", (int)getpid());
    f->rc = (ocp_recog_conf){.addr = f->addr,
                             .tessdata_dir = tessdata(),
                             .langs = "eng",
                             .batch_lines = 16,
                             .wait_s = 0.02,
                             .batch_bytes = 256.0 * 1048576,
                             .max_arena = 64u << 20};
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

/* n lines of pseudo-random pixels (seeded), widths 40..439. */
static void make_lines(const ocp_lstm_model *m, unsigned seed, int n, int8_t **img, int *w)
{
    for (int i = 0; i < n; i++) {
        w[i] = 40 + (int)((seed * 7919u + (unsigned)i * 104729u) % 400u);
        size_t px = (size_t)w[i] * (size_t)m->input_height;
        img[i] = ocp_xmalloc(px + OCP_LSTM_PAD);
        unsigned s = seed * 31u + (unsigned)i;
        for (size_t k = 0; k < px; k++) {
            s = s * 1103515245u + 12345u;
            img[i][k] = (int8_t)((int)((s >> 16) % 255u) - 127);
        }
    }
}

/* Reads n lines through the recognizer and checks each against the forward pass here: 0
 * when every line came back from it and equal to the bit; else the count of those that did
 * not. */
static int through(const fixture *f, ocp_recog_client *c, unsigned seed, int n)
{
    int8_t *img[64];
    int w[64], steps[64], bad = 0;
    float *probs[64];
    make_lines(f->m, seed, n, img, w);
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

/* The figures the recognizer sends its master every second: the last of them after
 * `after` seconds. */
static json_t *figures(const fixture *f, double after)
{
    ocp_proto_reader rd;
    ocp_proto_reader_init(&rd);
    json_t *last = NULL, *msg = NULL;
    double end = ocp_now() + after;
    while (ocp_now() < end && ocp_proto_recv_timed(f->fd, &rd, &msg, end - ocp_now()) == 0) {
        json_decref(last);
        last = msg;
    }
    ocp_proto_reader_fini(&rd);
    assert_non_null(last);
    return last;
}

static void test_two_workers(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* Two client processes at once, each 3 rounds of 12 lines: batches of both. */
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
    json_t *s = figures(f, 1.5);
    char *text = json_dumps(s, JSON_COMPACT);
    print_message("figures: %s\n", text);
    free(text);
    assert_int_equal(json_integer_value(json_object_get(s, "lines")), 72);
    assert_true(json_integer_value(json_object_get(s, "multi_worker_batches")) > 0);
    json_decref(s);
}

static void test_client_dies(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    /* A worker that asks for 64 lines and dies at once: its lines go, nobody else's. */
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        ocp_recog_client *c = ocp_recog_client_create(f->addr, 16u << 20);
        int8_t *img[64];
        int w[64], steps[64];
        float *probs[64];
        make_lines(f->m, 7, 64, img, w);
        /* A deadline that passes at once: the request goes, the answer is not waited for. */
        ocp_recog_client_forward(c, "eng", f->m, 64, (const int8_t *const *)img, w, probs, steps,
                                 ocp_now() + 0.001);
        _exit(0);
    }
    int st;
    waitpid(kid, &st, 0);
    ocp_recog_client *c = ocp_recog_client_create(f->addr, 8u << 20);
    assert_int_equal(through(f, c, 8, 10), 0);
    ocp_recog_client_destroy(c);
    assert_int_equal(kill(f->pid, 0), 0); /* still there */
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
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test_setup_teardown(test_bit_equal, start, stop),
        cmocka_unit_test_setup_teardown(test_two_workers, start, stop),
        cmocka_unit_test_setup_teardown(test_client_dies, start, stop),
        cmocka_unit_test_setup_teardown(test_recognizer_gone, start, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
