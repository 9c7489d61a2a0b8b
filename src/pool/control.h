/*
 * control.h: each node's control socket, and the client side that
 * `ocrpool monitor` and `ocrpool stop` use.
 *
 * A node (master) listens on a Unix socket named after its pid, mode 0600,
 * in a folder of mode 0700: $XDG_RUNTIME_DIR/ocrpool, else /run/ocrpool for
 * root, else /tmp/ocrpool-UID. A client connects, sends one framed JSON
 * request (proto.h) and reads one reply:
 *   {"cmd":"stats"}           the node's figures (see stats.c)
 *   {"cmd":"stop"}            warm shutdown     {"cmd":"stop-now"}  cold
 *   {"cmd":"reload"}          as SIGHUP         {"cmd":"scale","n":N} concurrency N
 * Replies are {"ok":true,...} or {"ok":false,"error":"..."}.
 */
#ifndef OCP_POOL_CONTROL_H
#define OCP_POOL_CONTROL_H

#include <jansson.h>
#include <stddef.h>

/* The control folder into buf; created (0700) when create. 0 or -errno. */
int ocp_control_dir(char *buf, size_t len, int create);

/* Listens on the folder's socket for this process; its path goes to path. Returns the
 * listening fd (non-blocking) or -errno. */
int ocp_control_listen(char *path, size_t len);

/* A node found in the control folder. Open type. */
typedef struct ocp_control_node {
    long pid;
    char path[300]; /* its socket */
} ocp_control_node;

/*
 * The nodes of this user that are alive, with their sockets: fills up to max
 * entries of out, in pid order; returns the count (0 when the folder is
 * missing). With remove_stale, sockets of nodes that are gone are deleted.
 */
int ocp_control_nodes(ocp_control_node *out, int max, int remove_stale);

/* One request to the node at path; *reply is new (json_decref). 0 or -errno. */
int ocp_control_call(const char *path, json_t *req, json_t **reply, double timeout_s);

#endif
