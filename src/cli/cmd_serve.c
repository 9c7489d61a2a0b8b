/*
 * cmd_serve.c: `ocrpool serve`: the HTTP API with an embedded pool (or, with
 * --no-workers, the API alone on a queue other nodes work).
 *
 * The API runs in a child process forked first, before the pool starts, so
 * the master stays single-threaded; it reaches the master through the
 * master's control socket and the queue through its own connections.
 */
#include "app/submit.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "pool/pool.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { K_LISTEN = 1, K_TOKEN, K_ALLOW, K_NOWORK, K_BODY, K_CONN, K_SPOOL };

typedef struct serve_ctx {
    const char *listen, *token, *allow_root, *spool;
    int no_workers;
    long max_body_mb;
    int max_conn;
} serve_ctx;

static const ocp_cli_opt serve_opts[] = {
    {"listen", 0, 1, K_LISTEN},    {"token", 0, 1, K_TOKEN},
    {"allow-root", 0, 1, K_ALLOW}, {"no-workers", 0, 0, K_NOWORK},
    {"max-body", 0, 1, K_BODY},    {"max-connections", 0, 1, K_CONN},
    {"spool-dir", 0, 1, K_SPOOL},  {NULL, 0, 0, 0},
};

static int serve_handler(void *vctx, int key, const char *arg)
{
    serve_ctx *c = vctx;
    int64_t v;
    switch (key) {
    case K_LISTEN:
        c->listen = arg;
        break;
    case K_TOKEN:
        c->token = arg;
        break;
    case K_ALLOW:
        c->allow_root = arg;
        break;
    case K_NOWORK:
        c->no_workers = 1;
        break;
    case K_SPOOL:
        c->spool = arg;
        break;
    case K_BODY:
    case K_CONN:
        if (!ocp_parse_i64(arg, &v) || v < 1 || v > 100000) {
            fprintf(stderr, "ocrpool: --%s: '%s' is not allowed: a whole number from 1 to 100000\n",
                    key == K_BODY ? "max-body" : "max-connections", arg);
            return 1;
        }
        if (key == K_BODY)
            c->max_body_mb = (long)v;
        else
            c->max_conn = (int)v;
        break;
    }
    return 0;
}

static void serve_help(void)
{
    printf("usage: ocrpool serve [--listen 127.0.0.1:8080] [--broker URL] [--no-workers]\n"
           "       [--token TOKEN] [--allow-root DIR] [--max-body MB] [--max-connections N]\n"
           "       [--spool-dir DIR] [pool settings: -c, --max-memory-per-child, ...]\n\n"
           "The HTTP API (GET / is the dashboard, GET /metrics for Prometheus) with a pool\n"
           "of workers, or the API alone with --no-workers. OCRPOOL_TOKEN also sets the token.\n");
}

int ocp_cmd_serve(int argc, char **argv)
{
    serve_ctx c = {.listen = "127.0.0.1:8080", .max_body_mb = 64, .max_conn = 32};
    ocp_config *cfg;
    char **pos, buf[4200], err[600], spool[4200];
    int npos;
    int rc =
        ocp_cli_parse(argc, argv, serve_opts, serve_handler, &c, serve_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    if (!c.token && getenv("OCRPOOL_TOKEN"))
        c.token = getenv("OCRPOOL_TOKEN");
    const char *url = ocp_app_broker_url(cfg, buf, sizeof buf);
    if (c.spool)
        snprintf(spool, sizeof spool, "%s", c.spool);
    else
        ocp_app_spool_dir(url, spool, sizeof spool);
    if ((rc = ocp_mkdir_p(spool, 0750)) != 0) {
        fprintf(stderr, "ocrpool: cannot create %s: %s\n", spool, ocp_strerror(rc));
        ocp_config_destroy(cfg);
        free(pos);
        return OCP_EXIT_FAILED;
    }
    if (ocp_log_level < OCP_LOG_INFO && ocp_config_source(cfg, OCP_S_LOG_LEVEL) == OCP_SRC_DEFAULT)
        ocp_log_level = OCP_LOG_INFO;
    ocp_broker_opts bopts;
    ocp_pool_broker_opts(&bopts, cfg);
    ocp_http_conf hc = {
        .listen = c.listen,
        .broker_url = url,
        .broker_opts = &bopts,
        .token = c.token,
        .allow_root = c.allow_root,
        .spool_dir = spool,
        .control_pid = 0,
        .max_body = c.max_body_mb << 20,
        .max_connections = c.max_conn,
        .cfg = cfg,
    };
    if (c.no_workers) {
        if (ocp_http_serve(&hc, err, sizeof err)) {
            fprintf(stderr, "ocrpool: serve: %s\n", err);
            rc = OCP_EXIT_FAILED;
        }
        goto out;
    }
    if ((rc = ocp_cli_check_device(cfg)) != 0)
        goto out;
    /* The node is this process: the API finds its control socket by its pid. */
    hc.control_pid = (long)getpid();
    fflush(NULL);
    pid_t api = fork();
    if (api == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        ocp_log_set_role('H');
        _exit(ocp_http_serve(&hc, err, sizeof err)
                  ? (fprintf(stderr, "ocrpool: serve: %s\n", err), OCP_EXIT_FATAL)
                  : 0);
    }
    if (api < 0) {
        fprintf(stderr, "ocrpool: serve: fork: %s\n", strerror(errno));
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    ocp_pool_conf pc;
    ocp_pool_conf_from_config(&pc, cfg);
    if (ocp_pool_run(&pc, url, NULL, err, sizeof err)) {
        fprintf(stderr, "ocrpool: serve: %s\n", err);
        rc = OCP_EXIT_FAILED;
    }
    ocp_pool_conf_fini(&pc);
    kill(api, SIGTERM);
    waitpid(api, NULL, 0);
out:
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}
