/*
 * fuzz_http.c: one HTTP connection's bytes through the real request handler
 * (src/http/http.c) and libmicrohttpd's parser: a daemon without a listening
 * socket is handed one end of a socket pair (MHD_add_connection), the input
 * is written to the other end, which then shuts down, and the daemon runs
 * until it closes the connection. The broker is a SQLite file and the spool
 * is a temporary folder, both emptied after each input; the token is "t0k"
 * (the seeds send it); --allow-root is the temporary folder.
 *
 * http.c is compiled into this harness (its handler is static): the same
 * code the server runs, with no entry point added for the test. A waiting
 * POST /v1/ocr polls the queue once and answers 504, as during a shutdown
 * (g_stop), so one input takes milliseconds, not page-timeout. With FZ_VERBOSE
 * set, the server's replies go to standard error.
 *
 * Besides the sanitizers, the replies are checked (check_replies): every
 * JSON body parses, and a 202 lists a task with an id for each page queued
 * (issue 15, point 4: a filename that is not UTF-8 got a 202 with no ids).
 */
#include "../src/http/http.c"

#include "common.h"

#include <netinet/in.h>
#include <sys/socket.h>

static struct MHD_Daemon *daemon_;
static ocp_http_conf conf;
static ocp_broker_opts bopts;
static char url[4200];

static void start(void)
{
    ocp_log_level = -1; /* quiet: the fuzzer prints its own lines */
    ocp_image_global_init("fuzz_http");
    ocp_config *cfg = ocp_config_create();
    ocp_config_finish(cfg);
    snprintf(url, sizeof url, "sqlite://%s/queue.db", fz_dir());
    bopts = (ocp_broker_opts){.lang = "eng", .result_expires_s = -1};
    conf = (ocp_http_conf){
        .listen = "127.0.0.1:1",
        .broker_url = url,
        .broker_opts = &bopts,
        .token = "t0k",
        .allow_root = fz_dir(),
        .spool_dir = fz_dir(),
        .max_body = 1 << 20,
        .max_connections = 4,
        .cfg = cfg,
    };
    g_hc = &conf;
    g_stop = 1;
    daemon_ = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, handler, NULL,
                               MHD_OPTION_CONNECTION_LIMIT, 4u, MHD_OPTION_CONNECTION_TIMEOUT, 5u,
                               MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
    if (!daemon_)
        abort();
}

/* A header's value in the block [h, end) (case-insensitive name), or NULL. */
static const char *header(const char *h, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = h; p && p + n < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p += *p == '\n';
        if (strncasecmp(p, name, n) == 0 && p[n] == ':')
            return p + n + 1;
    }
    return NULL;
}

/* Checks each reply of the connection (see the top); aborts on a wrong one. */
static void check_replies(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    while (p < end && strncmp(p, "HTTP/1.1 ", 9) == 0) {
        int status = atoi(p + 9);
        const char *body = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!body)
            return;
        body += 4;
        const char *cl = header(p, body, "Content-Length");
        const char *ct = header(p, body, "Content-Type");
        if (!cl)
            return;
        size_t n = strtoul(cl, NULL, 10);
        if (n > (size_t)(end - body))
            return; /* cut short: the client went away */
        json_t *o = NULL;
        if (ct && strncmp(ct + strspn(ct, " "), "application/json", 16) == 0 &&
            !(o = json_loadb(body, n, 0, NULL))) {
            fprintf(stderr, "fuzz_http: a JSON reply that does not parse\n");
            abort();
        }
        json_t *tasks = json_object_get(o, "tasks"), *t;
        size_t i;
        if (status == 202 && json_array_size(tasks) == 0) {
            fprintf(stderr, "fuzz_http: a 202 without tasks\n");
            abort();
        }
        for (i = 0; i < json_array_size(tasks); i++) {
            t = json_array_get(tasks, i);
            if (!json_is_string(json_object_get(t, "id"))) {
                fprintf(stderr, "fuzz_http: a 202 with a task without an id\n");
                abort();
            }
        }
        json_decref(o);
        p = body + n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!daemon_)
        start();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (MHD_add_connection(daemon_, sv[1], (struct sockaddr *)&peer, sizeof peer) != MHD_YES) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    int shut = 0;
    char sink[16384];
    const int verbose = getenv("FZ_VERBOSE") != NULL;
    ocp_sb replies;
    ocp_sb_init(&replies);
    for (int round = 0; round < 20000; round++) {
        if (sent < size) {
            ssize_t w = write(sv[0], data + sent, size - sent);
            if (w > 0)
                sent += (size_t)w;
        }
        if (sent == size && !shut) {
            shutdown(sv[0], SHUT_WR);
            shut = 1;
        }
        MHD_run(daemon_);
        ssize_t r = read(sv[0], sink, sizeof sink);
        if (r > 0 && verbose)
            fwrite(sink, 1, (size_t)r, stderr);
        if (r > 0 && replies.len < (1u << 20))
            ocp_sb_append(&replies, sink, (size_t)r);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            break; /* the server closed the connection */
    }
    close(sv[0]);
    for (int i = 0; i < 4; i++)
        MHD_run(daemon_); /* the connection's end: completed() frees the request */
    fz_clear();
    check_replies(replies.buf, replies.len);
    ocp_sb_fini(&replies);
    return 0;
}
