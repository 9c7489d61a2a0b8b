/*
 * engine_null.c: an engine that returns an empty page at once without
 * reading it (OCP_FEAT_NO_PIXELS), so a benchmark measures what the pool
 * and the queue cost per page, and tests can run many pages fast.
 *
 * Test-only behaviour (tests/chaos.sh), read from the environment when the
 * engine is opened (in the zygote, so every worker it forks shares it):
 *   OCRPOOL_NULL_SLEEP_MS=N  each page takes N ms (0..60000), so a page is
 *                            in flight long enough to be killed under.
 *   OCRPOOL_NULL_LOG=FILE    each page that completes appends one line,
 *                            "TASK_ID PID.N", to FILE (O_APPEND, one write),
 *                            and the page's text is "null PID.N": every run
 *                            of a page leaves a result of its own, so a
 *                            result stored twice or overwritten by another
 *                            run can be told apart from a page run twice.
 * Without them the engine is as before: no sleep, no file, empty text.
 */
#include "config/config.h"
#include "engine/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct null_state {
    long sleep_ms;
    const char *log; /* borrowed from the environment, or NULL */
} null_state;

static null_state state_;
/* Pages this process completed, over every null engine it opened (a worker
 * forked from the zygote starts at 0: the zygote runs no page). */
static unsigned long runs_;

static int null_open(const ocp_engine_params *p, void **state, char *err, size_t errlen)
{
    (void)p;
    const char *s = getenv("OCRPOOL_NULL_SLEEP_MS");
    char *end = NULL;
    long ms = s && *s ? strtol(s, &end, 10) : 0;
    if (s && *s && (*end || ms < 0 || ms > 60000)) {
        snprintf(err, errlen, "OCRPOOL_NULL_SLEEP_MS: not a number of ms in 0..60000: %.40s", s);
        return -1;
    }
    const char *log = getenv("OCRPOOL_NULL_LOG");
    state_ = (null_state){.sleep_ms = ms, .log = log && *log ? log : NULL};
    *state = &state_;
    return 0;
}

/* Appends "ID PID.N\n" to the log in one write (O_APPEND: lines never interleave). */
static void note_run(const char *log, const char *id, const char *mark)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%s %s\n", id ? id : "-", mark);
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    if (n > 0 && (size_t)n < sizeof line && write(fd, line, (size_t)n) < 0)
        n = -1; /* a test's log: nothing to do about a failed write */
    close(fd);
}

static int null_ocr(void *state, const ocp_page_image *img, const ocp_ocr_params *p,
                    ocp_result *res, char *err, size_t errlen)
{
    null_state *st = state;
    (void)img;
    (void)p;
    (void)err;
    (void)errlen;
    if (st->sleep_ms > 0) {
        struct timespec ts = {st->sleep_ms / 1000, (st->sleep_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (!st->log) {
        ocp_result_set(&res->text, "");
        return 0;
    }
    char mark[64], text[80];
    snprintf(mark, sizeof mark, "%ld.%lu", (long)getpid(), ++runs_);
    snprintf(text, sizeof text, "null %s", mark);
    ocp_result_set(&res->text, text);
    note_run(st->log, res->id, mark);
    return 0;
}

static void null_close(void *state)
{
    (void)state;
}

const ocp_engine_ops ocp_engine_null = {
    .name = "null",
    .features = OCP_FEAT_NO_PIXELS,
    .open = null_open,
    .ocr = null_ocr,
    .close = null_close,
};
