/*
 * cmd_serve.c: `ocrpool serve`: the HTTP API with an embedded pool (or, with
 * --no-workers, the API alone on a queue other nodes work).
 *
 * The API runs in a child process, the pool master's sidecar (pool.h): forked
 * before the zygote, restarted with back-off when it dies, stopped with the
 * node; so the master stays single-threaded. It reaches the master through
 * the master's control socket and the queue through its own connections.
 *
 * The token never needs the command line (where `ps` shows it): OCRPOOL_TOKEN
 * or --token-file FILE give it too.
 */
#include "app/submit.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "pool/pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    K_LISTEN = 1,
    K_TOKEN,
    K_TOKEN_FILE,
    K_NOWORK,
    K_BODY,
    K_CONN,
    K_SPOOL,
    K_CTIME,
    K_API_OF
};

typedef struct serve_ctx {
    const char *listen, *token, *token_file, *spool;
    int no_workers;
    long max_body_mb;
    int max_conn, conn_timeout;
    long api_of;          /* this process is the API of node api_of (the node runs it: pool.h) */
    char token_buf[1024]; /* the token read from token_file */
} serve_ctx;

static const ocp_cli_opt serve_opts[] = {
    {"listen", 0, 1, K_LISTEN},
    {"token", 0, 1, K_TOKEN},
    {"token-file", 0, 1, K_TOKEN_FILE},
    {"no-workers", 0, 0, K_NOWORK},
    {"max-body", 0, 1, K_BODY},
    {"max-connections", 0, 1, K_CONN},
    {"connection-timeout", 0, 1, K_CTIME},
    {"spool-dir", 0, 1, K_SPOOL},
    {"api-of", 0, 1, K_API_OF},
    {NULL, 0, 0, 0},
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
    case K_TOKEN_FILE:
        c->token_file = arg;
        break;
    case K_NOWORK:
        c->no_workers = 1;
        break;
    case K_SPOOL:
        c->spool = arg;
        break;
    case K_API_OF:
        if (!ocp_parse_i64(arg, &v) || v < 1 || v > 0x7fffffff) {
            fprintf(stderr, "ocrpool: --api-of: '%s' is not a pid\n", arg);
            return 1;
        }
        c->api_of = (long)v;
        break;
    case K_BODY:
    case K_CONN:
    case K_CTIME:
        if (!ocp_parse_i64(arg, &v) || v < 1 || v > 100000) {
            fprintf(stderr, "ocrpool: --%s: '%s' is not allowed: a whole number from 1 to 100000\n",
                    key == K_BODY   ? "max-body"
                    : key == K_CONN ? "max-connections"
                                    : "connection-timeout",
                    arg);
            return 1;
        }
        if (key == K_BODY)
            c->max_body_mb = (long)v;
        else if (key == K_CONN)
            c->max_conn = (int)v;
        else
            c->conn_timeout = (int)v;
        break;
    }
    return 0;
}

static void serve_help(void)
{
    printf("usage: ocrpool serve [--listen 127.0.0.1:8080] [--broker URL] [--no-workers]\n"
           "       [--token-file FILE | --token TOKEN] [--allow-root DIR]... [--max-body MB]\n"
           "       [--max-connections N] [--connection-timeout S] [--spool-dir DIR]\n"
           "       [pool settings: -c, --max-memory-per-child, ...]\n\n"
           "The HTTP API (GET / is the dashboard, GET /metrics for Prometheus) with a pool\n"
           "of workers, or the API alone with --no-workers. With workers, the node restarts\n"
           "the API process when it dies (1 s, doubling to 30 s; /metrics counts restarts).\n\n"
           "  --allow-root DIR        paths in JSON jobs and in Celery tasks must resolve\n"
           "                          under one (repeatable; none: uploads only)\n"
           "  --token-file FILE       the bearer token: FILE's first line\n"
           "  --token TOKEN           the same, on the command line (seen in `ps`: prefer\n"
           "                          the file or the environment variable OCRPOOL_TOKEN)\n"
           "  --max-body MB           the largest request body (64)\n"
           "  --max-connections N     connections served at once (32)\n"
           "  --connection-timeout S  a connection silent for S seconds is closed (30)\n"
           "  --api-of PID            (how a node starts its API process: the API of node PID)\n");
}

/* The token from --token, --token-file or OCRPOOL_TOKEN, in that order (at most one of
 * the first two) into c->token. 0, or 1 with the reason said. */
static int resolve_token(serve_ctx *c)
{
    if (c->token && c->token_file) {
        fprintf(stderr, "ocrpool: serve: --token and --token-file: give one\n");
        return 1;
    }
    if (c->token_file) {
        FILE *f = fopen(c->token_file, "re");
        int ok = f && fgets(c->token_buf, sizeof c->token_buf, f);
        int e = errno;
        if (f)
            fclose(f);
        c->token_buf[strcspn(c->token_buf, "\r\n")] = '\0';
        if (!ok || !c->token_buf[0]) {
            fprintf(stderr, "ocrpool: serve: --token-file %s: %s\n", c->token_file,
                    !f ? strerror(e) : "no token on its first line");
            return 1;
        }
        c->token = c->token_buf;
    }
    if (!c->token && getenv("OCRPOOL_TOKEN"))
        c->token = getenv("OCRPOOL_TOKEN");
    return 0;
}

/* The API process's command line (new; free the array): this command's, as the API of
 * node pid (--api-of first: a "--" among the arguments ends the options). */
static char **api_argv(int argc, char **argv, char pid[24])
{
    char **av = ocp_xcalloc((size_t)argc + 5, sizeof *av);
    snprintf(pid, 24, "%ld", (long)getpid());
    av[0] = "ocrpool";
    av[1] = "serve";
    av[2] = "--api-of";
    av[3] = pid;
    for (int i = 0; i < argc; i++)
        av[4 + i] = argv[i];
    return av;
}

int ocp_cmd_serve(int argc, char **argv)
{
    serve_ctx c = {
        .listen = "127.0.0.1:8080", .max_body_mb = 64, .max_conn = 32, .conn_timeout = 30};
    ocp_config *cfg;
    char **pos, buf[4200], err[600], spool[4200];
    int npos;
    int rc =
        ocp_cli_parse(argc, argv, serve_opts, serve_handler, &c, serve_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    if (resolve_token(&c)) {
        ocp_config_destroy(cfg);
        free(pos);
        return OCP_EXIT_USAGE;
    }
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
    if ((rc = ocp_cli_allow_roots(cfg, "serve", 0)) != 0) {
        ocp_config_destroy(cfg);
        free(pos);
        return rc;
    }
    ocp_broker_opts bopts;
    ocp_pool_broker_opts(&bopts, cfg);
    ocp_http_conf hc = {
        .listen = c.listen,
        .broker_url = url,
        .broker_opts = &bopts,
        .token = c.token,
        .allow_root = ocp_config_str(cfg, OCP_S_ALLOW_ROOT),
        .spool_dir = spool,
        .control_pid = 0,
        .max_body = c.max_body_mb << 20,
        .max_connections = c.max_conn,
        .connection_timeout_s = c.conn_timeout,
        .cfg = cfg,
    };
    if (c.no_workers || c.api_of) {
        /* The API alone; or the API of a node, which started it (a failure to start is
         * fatal there: it is not restarted, and the node stops). */
        hc.control_pid = c.api_of;
        if (c.api_of)
            ocp_log_set_role('H');
        if (ocp_http_serve(&hc, err, sizeof err)) {
            fprintf(stderr, "ocrpool: serve: %s\n", err);
            rc = c.api_of ? OCP_EXIT_FATAL : OCP_EXIT_FAILED;
        }
        goto out;
    }
    if ((rc = ocp_cli_check_device(cfg)) != 0)
        goto out;
    /* The node is this process; it runs the API as its sidecar: this program again, told
     * the node's pid (the API finds its control socket by it). */
    char pid[24];
    char **av = api_argv(argc, argv, pid);
    ocp_pool_conf pc;
    ocp_pool_conf_from_config(&pc, cfg);
    /* Its workers read uploads from the spool, and a task's path (a JSON job's, or a
     * Celery task's on a shared Redis) only under an allow-root. */
    const char *roots = ocp_config_str(cfg, OCP_S_ALLOW_ROOT);
    char *wroots = ocp_xasprintf("%s%s%s", roots, *roots ? ":" : "", spool);
    pc.lim.allow_roots = wroots;
    pc.sidecar_path = "/proc/self/exe";
    pc.sidecar_argv = av;
    pc.sidecar_name = "HTTP API";
    if (ocp_pool_run(&pc, url, NULL, err, sizeof err)) {
        fprintf(stderr, "ocrpool: serve: %s\n", err);
        rc = OCP_EXIT_FAILED;
    }
    ocp_pool_conf_fini(&pc);
    free(wroots);
    free(av);
out:
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}
