/*
 * node.h: a node (ocp_pool_run) run in a child process for a front end that
 * follows its own queue (`ocrpool ocr`). It sits above pool/ and below cli/.
 *
 * The node has a process group of its own, so a terminal's signals reach the
 * caller only, which passes stops on (ocp_app_node_stop); its standard input
 * is /dev/null and its standard output and error are a pipe the caller
 * relays (ocp_app_node_relay): outside the terminal's foreground group it
 * must not touch the terminal. It dies with its parent.
 *
 *   ocp_app_node_start ──> running ──(_stop: SIGTERM warm, then SIGQUIT cold)
 *        |                    | _reap (never blocks) or _wait sees it end
 *        |                    v
 *        |                  ended ──> ocp_app_node_destroy
 *
 * Signal handlers stay with the caller: this module sends signals, it
 * catches none.
 */
#ifndef OCP_APP_NODE_H
#define OCP_APP_NODE_H

#include "config/config.h"

#include <stddef.h>

typedef struct ocp_app_node ocp_app_node;

/*
 * Forks a node that works broker url, leasing only group's pages (NULL = any), with the
 * pool's settings from cfg (resolved in the node, so the device plan is made there).
 * Call it before libvips, an engine or the broker is started in this process: the node
 * forks its zygote from this state. flags: OCP_NODE_CLEAR_LINE, what is passed on first
 * clears the terminal's current line (a progress line on standard error);
 * OCP_NODE_RAW_LOG, the node's log lines are passed on as they are (otherwise an error is
 * said as "ocrpool: message", the first warning too, and the rest of the log is not
 * passed on: ocp_app_node_hidden counts the warnings left out). cfg, group and url are
 * read in the child only. Returns 0 and *out (new, freed by ocp_app_node_destroy), or a
 * negative errno with the reason ("pipe: ...", "fork: ...") in err.
 */
enum { OCP_NODE_CLEAR_LINE = 1, OCP_NODE_RAW_LOG = 2 };
int ocp_app_node_start(const ocp_config *cfg, const char *group, const char *url, int flags,
                       ocp_app_node **out, char *err, size_t errlen);

/*
 * Passes on to standard error what the node wrote (drops it unless show), waiting up to
 * wait_ms for something to come (just waits when the stream has ended). Returns 0 at the
 * end of the stream (the node and its zygote and workers all gone), 1 otherwise.
 */
int ocp_app_node_relay(ocp_app_node *n, int show, int wait_ms);

/* The node's warnings the relay did not pass on (without OCP_NODE_RAW_LOG). */
long ocp_app_node_hidden(const ocp_app_node *n);

/* How hard a stop is: warm (running pages finish), cold (running pages go back), kill. */
enum { OCP_NODE_RUN = 0, OCP_NODE_WARM = 1, OCP_NODE_COLD = 2, OCP_NODE_KILL = 3 };

/*
 * Asks the node to stop at level: warm (the control socket's "stop", which the node takes
 * once however often it comes, so a SIGTERM that reached the node too does not make it
 * cold; SIGTERM while the node has no socket yet), cold (SIGQUIT), or kill (SIGKILL to
 * its whole process group: zygote and workers too). Stops only escalate: each is sent
 * once, and a lower one after a higher one does nothing; a stop asked for after the node
 * has ended is only recorded (a signal it dies of then is ours).
 */
void ocp_app_node_stop(ocp_app_node *n, int level);

/*
 * Reaps the node if it has ended, without waiting. Returns 1 when it has ended (now or
 * before), 0 while it runs. *failed (when not NULL) is 1 once the node has ended with an
 * error (it said why) or been killed by a signal other than the stop asked for (said on
 * standard error), else 0.
 */
int ocp_app_node_reap(ocp_app_node *n, int *failed);

/* 1 until ocp_app_node_reap or ocp_app_node_wait has seen the node end. */
int ocp_app_node_running(const ocp_app_node *n);

/* What the caller's signals ask for: an OCP_NODE_ level. */
typedef int (*ocp_app_node_stop_fn)(void *ctx);

/*
 * Waits for the node to end, passing on what it writes (unless not show) and the stops
 * stop_fn (optional) asks for meanwhile (a second ^C makes a warm stop cold, a third kills
 * it); then what it
 * (and its zygote and workers) still has to say, for a few seconds at most.
 */
void ocp_app_node_wait(ocp_app_node *n, int show, ocp_app_node_stop_fn stop_fn, void *ctx);

/* Closes the relay and frees n; a node still running is stopped warm and reaped first,
 * what it says dropped. NULL does nothing. */
void ocp_app_node_destroy(ocp_app_node *n);

#endif
