/*
 * http.h: the HTTP API (libmicrohttpd): jobs, results, Prometheus metrics,
 * health, and the dashboard.
 *
 * It runs in a process of its own (the pool's master keeps it running as its
 * sidecar, pool.h; or alone with --no-workers), so the master stays a
 * single-threaded loop: it reads the queue
 * through its own broker connection (one per request, as requests run in
 * threads) and asks the master for figures through the control socket.
 */
#ifndef OCP_HTTP_HTTP_H
#define OCP_HTTP_HTTP_H

#include "broker/broker.h"
#include "config/config.h"

/* What the server needs. Open type; strings borrowed. */
typedef struct ocp_http_conf {
    const char *listen; /* "127.0.0.1:8080" */
    const char *broker_url;
    const ocp_broker_opts *broker_opts;
    const char *token;      /* NULL/"" = none */
    const char *allow_root; /* folders joined by ':'; NULL/"" = no paths accepted in JSON jobs */
    const char *spool_dir;  /* where uploads are kept for the workers */
    long control_pid;       /* the node whose figures are shown (its control socket is
                             * found by pid); 0 = none (--no-workers) */
    long max_body;          /* bytes */
    int max_connections;
    int connection_timeout_s; /* a connection silent this long is closed (a request sent
                               * half, a reply not read); 0 = 30 */
    const ocp_config *cfg;    /* defaults for submitted pages */
} ocp_http_conf;

/* Serves until SIGTERM/SIGINT. Returns 0, or a negative code with err set. */
int ocp_http_serve(const ocp_http_conf *hc, char *err, size_t errlen);

/* The dashboard page (dashboard.c). */
extern const char ocp_dashboard_html[];

#endif
