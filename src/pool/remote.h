/*
 * remote.h: the master's side of Celery's remote control and events
 * (remote.c; internal to src/pool, beside master_int.h). On a redis://
 * broker the node is a Celery worker named pc.node_name: it answers
 * `celery inspect` and `celery control` (broker/pidbox.h), sends worker
 * events always and task events with -E or enable_events, keeps the
 * revoked task ids (bounded, expiring, optionally in --statedb); on any
 * broker it scales its workers with --autoscale. One node per process: the state is
 * this file's, as master.c's signal flags are.
 *
 * On any other broker only autoscaling runs; the other functions do nothing.
 */
#ifndef OCP_POOL_REMOTE_H
#define OCP_POOL_REMOTE_H

#include "pool/master_int.h"

/* Starts the autoscaler's tick, and opens the mailbox on the master's loop when url is
 * redis:// (a warning when it cannot). */
void ocp__remote_start(master *m, const char *url);
/* worker-offline, the statedb written, the mailbox closed. */
void ocp__remote_stop(master *m);

/* The pages' events (task events only while they are on). */
void ocp__remote_received(master *m, const held *h);
void ocp__remote_started(master *m, const held *h, int pid);
/* A page's result (ok) or failure was stored: task-succeeded or task-failed. */
void ocp__remote_done(master *m, const held *h, int ok, const char *why, double runtime,
                      json_t *result);
/* A page goes back to its queue to be delivered again: task-retried. */
void ocp__remote_retried(master *m, const held *h, const char *why);
/* The fields of a task event of type task-succeeded (text: the result's text), task-failed or
 * task-retried (text: the reason), each text cut at a UTF-8 character's end; new, or NULL when
 * they cannot be built (text not UTF-8). Internal: for the unit test. */
json_t *ocp__remote_task_fields(const char *type, const char *id, const char *text, double runtime);

/* Whether id was revoked (and has not expired): then its page must not start. */
int ocp__remote_is_revoked(master *m, const char *id);
/* A revoked page was refused before it started (task-revoked). */
void ocp__remote_revoked(master *m, const held *h);

#endif
