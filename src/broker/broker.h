/*
 * broker.h: where page tasks wait, are leased, and their results are kept.
 *
 * Backends are sibling files behind one table of function pointers
 * (ocp_broker_ops): broker_sqlite.c (one machine, a file) and
 * broker_redis.c (several machines: Redis with Celery's protocol v2 and
 * kombu's key layout, so Celery producers and consumers interoperate).
 * Task lifecycle:
 *
 *   submit --> READY --lease--> LEASED --ack (result stored)--> DONE
 *                ^                 |  '--fail (bad input)-----> FAILED
 *                |                 |--release (worker lost, lease
 *                |                 |   expired)--> READY, deliveries kept
 *                '-----------------'--deliveries >= max --> BURIED
 *
 * Every lease counts a delivery. A lease expires unless its owner renews
 * it; an expired lease is leased again by anyone. Results are idempotent
 * per task id: the first ack stores the result, later ones change nothing.
 *
 * Every change to a leased task checks its owner, atomically with the
 * change: a handle acts for the owner it last leased (renewed, acked early)
 * for, and its ack, fail, release and started count only while the task is
 * still leased to that owner. A stale node's late word (its lease expired
 * and the task was leased again by another owner, given back to the queue,
 * or finished) is logged (a warning) and ignored, and the call returns 0: it
 * never overwrites, buries or re-queues another owner's lease, and never
 * overwrites a finished result. A handle that has leased nothing finishes
 * nothing.
 * Times are seconds since the epoch (leases are shared between processes).
 */
#ifndef OCP_BROKER_BROKER_H
#define OCP_BROKER_BROKER_H

#include "core/failure.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum ocp_task_state {
    OCP_TASK_READY = 0,
    OCP_TASK_LEASED = 1,
    OCP_TASK_DONE = 2,
    OCP_TASK_FAILED = 3,
    OCP_TASK_BURIED = 4,
} ocp_task_state;

/* A leased task. Open type; strings are owned (ocp_task_fini frees them). */
typedef struct ocp_task {
    char *id;
    char *group;
    int priority;
    int deliveries; /* including this one */
    char *payload;  /* JSON: what the page is (source, page, lang, size, settings) */
} ocp_task;

void ocp_task_fini(ocp_task *t);

/* Counts of a group's (or all) tasks by state. Open type. */
typedef struct ocp_counts {
    long ready, leased, done, failed, buried;
} ocp_counts;

/* One task as seen by status and result. Open type; strings owned (fini). result is the
 * result's text as stored (not parsed by the broker: whoever uses it parses it). */
typedef struct ocp_task_info {
    char *id, *group, *payload, *result, *error, *lease_owner;
    int state, priority, deliveries, worker_pid;
    ocp_failure failure; /* FAILED or BURIED: why (the human reason is error); READY
                          * after a release (SQLite): its last failure's kind */
    double created, started, finished, lease_expires;
    long peak_rss_kb;
} ocp_task_info;

void ocp_task_info_fini(ocp_task_info *i);
const char *ocp_task_state_name(int state);
/* The failure kind's name of a FAILED or BURIED task ("memory_limit"), else NULL. Static. */
const char *ocp_task_failure_name(const ocp_task_info *i);

/* A new task. Open type; strings borrowed. */
typedef struct ocp_task_spec {
    const char *id; /* NULL = a new UUID */
    const char *group;
    int priority; /* 0..9, higher first */
    const char *payload;
} ocp_task_spec;

typedef struct ocp_broker ocp_broker;

/* What a backend may need beside its URL (Redis/Celery). Open type; strings borrowed.
 * NULL or zero fields mean the defaults in brackets. */
typedef struct ocp_broker_opts {
    const char *queues;          /* Celery queues consumed, in order; the first is where
                                  * submit writes ["celery"] */
    const char *task_name;       /* ["ocrpool.ocr_page"] */
    const char *lang;            /* language of a message that names none ["eng"] */
    double visibility_timeout_s; /* kombu's visibility_timeout [3600] */
    double result_expires_s;     /* result keys' time to live, <0 = never [86400] */
    bool track_started;          /* store STARTED when a page starts */
    size_t max_message_bytes;    /* larger messages are dead-lettered [512 MB] */
    size_t max_inline_bytes;     /* inline page bytes ({"b64": ...}) [32 MB] */
    size_t max_eta_messages;     /* messages with a future eta held in the node [1000]; more
                                  * are left in Redis until their eta */
    size_t max_eta_bytes;        /* and their bytes [64 MB] */
} ocp_broker_opts;

/*
 * Opens the broker of url ("sqlite:///abs/path.db", "sqlite://rel.db", a
 * plain path, or "redis://[[user]:password@]host[:port][/db]"). opts may be
 * NULL. *out is new (ocp_broker_close frees it); on failure the reason is in
 * err.
 */
int ocp_broker_open(const char *url, const ocp_broker_opts *opts, ocp_broker **out, char *err,
                    size_t errlen);
void ocp_broker_close(ocp_broker *b);
/* The reason of the last failure on b. Borrowed. */
const char *ocp_broker_errmsg(const ocp_broker *b);

/* Producer. id_out (37 bytes) receives the task id; *inserted is 0 when
 * a task with that id existed already (then nothing changes). */
int ocp_broker_submit(ocp_broker *b, const ocp_task_spec *spec, char id_out[64], int *inserted);
/*
 * Submit batches. ocp_broker_batch_begin groups the submits that follow into one write
 * (SQLite: one transaction, one commit, instead of one per task); ocp_broker_batch_end
 * writes them. Until then consumers do not see them, and the batch holds the queue's write
 * lock: keep a batch short (a few hundred tasks, a fraction of a second). A failed submit
 * inside leaves the others; when end fails, none of the batch's tasks is queued. On Redis
 * a batch pipelines instead: the writes inside it (submits, and the master's results, fails
 * and acks of one turn) go with the next command or at the batch's end, one round trip
 * (redis_conn.c); an ack inside returns 0 before Redis answers, and a write Redis then
 * refuses is logged, its page run again after the visibility timeout.
 */
int ocp_broker_batch_begin(ocp_broker *b);
int ocp_broker_batch_end(ocp_broker *b);

/*
 * Consumer. Leases up to max tasks for owner (READY ones whose time has
 * come, and LEASED ones whose lease expired), highest priority first, then
 * oldest; only group's when group is not NULL. A task found with
 * deliveries >= max_deliveries is buried instead.
 * out has room for max; *n receives the count. The caller finis each.
 * The Redis backend keeps no queue per group and refuses a group
 * (OCP_E_UNSUPPORTED); its lease is the visibility timeout, not lease_s.
 */
int ocp_broker_lease(ocp_broker *b, const char *owner, const char *group, int max, double lease_s,
                     int max_deliveries, ocp_task *out, int *n);
/* Extends owner's leases of ids by lease_s from now (Redis: renews every message this node
 * holds, for the visibility timeout). */
int ocp_broker_renew(ocp_broker *b, const char *owner, char *const *ids, int n, double lease_s);
/* Acknowledges owner's leased task id on receipt (acks-late off): it is not delivered again,
 * even if this node dies before its result is stored. */
int ocp_broker_ack_early(ocp_broker *b, const char *owner, const char *id);
/* A worker started the page (Celery's STARTED with track_started); optional. */
int ocp_broker_started(ocp_broker *b, const char *id, int worker_pid);
/* Stores the result (borrowed; serialised here, once, in the backend's form) and marks the
 * task DONE, once. */
int ocp_broker_ack(ocp_broker *b, const char *id, json_t *result, double started, double finished,
                   long peak_rss_kb, int worker_pid);
/* Marks the task FAILED with its kind and reason (retrying will not help). */
int ocp_broker_fail(ocp_broker *b, const char *id, ocp_failure kind, const char *reason,
                    double started, double finished, int worker_pid);
/*
 * Gives a leased task back: READY again, or BURIED (with kind and reason)
 * when it has had max_deliveries deliveries. uncount gives back the
 * delivery (a shutdown, not the page's fault). *buried tells which happened.
 */
int ocp_broker_release(ocp_broker *b, const char *id, ocp_failure kind, const char *reason,
                       int uncount, int max_deliveries, int *buried);

/* Queries and maintenance. group NULL = all groups. */
int ocp_broker_counts(ocp_broker *b, const char *group, ocp_counts *c);
/* Calls fn for each task of group in submission order (with its result only if want_result). */
int ocp_broker_list(ocp_broker *b, const char *group, int want_result,
                    int (*fn)(void *ctx, const ocp_task_info *i), void *ctx);
/*
 * Calls fn for each DONE, FAILED or BURIED task of group (not NULL) whose
 * finished time is since or later, in order of finished time, without its
 * result. Every finished task has a finished time. A task's finished time
 * is its worker's, set before the task is stored: a poller keeps the largest
 * finished time it has seen minus a few seconds' overlap, and ignores what
 * it saw already. SQLite only (an index on group and finished time); Redis
 * returns OCP_E_UNSUPPORTED.
 */
int ocp_broker_list_finished(ocp_broker *b, const char *group, double since,
                             int (*fn)(void *ctx, const ocp_task_info *i), void *ctx);
/* Fills info for id; returns OCP_E_NOPAGE when there is no such task. */
int ocp_broker_get(ocp_broker *b, const char *id, ocp_task_info *info);
/* Puts the tasks of group in any state of states_mask (1 << state) back to READY with
 * no deliveries. *n receives how many. */
int ocp_broker_requeue(ocp_broker *b, const char *group, unsigned states_mask, long *n);
/* Deletes finished (DONE, FAILED, BURIED) tasks older than older_than. */
int ocp_broker_expire(ocp_broker *b, double older_than, long *n);
/* Makes LEASED tasks whose owner is a process of this host that no longer
 * exists READY again at once (instead of waiting for the lease to expire). */
int ocp_broker_reclaim_dead(ocp_broker *b, long *n);

/*
 * Celery's add_consumer / cancel_consumer (Redis): op 1 adds queue to those consumed (after
 * the others), op -1 stops consuming it, op 0 changes nothing; then names (room for max)
 * receives the queues consumed now, borrowed until the next call, and *n their count.
 * OCP_E_UNSUPPORTED on SQLite; OCP_E_CONFIG when the queue cannot be added (too many, a bad
 * name) or is the last one left.
 */
int ocp_broker_queues(ocp_broker *b, int op, const char *queue, const char **names, int max,
                      int *n);
/* Calls fn for each message this node holds until its eta (Celery's "scheduled"): its id,
 * eta (seconds since the epoch), priority and payload. OCP_E_UNSUPPORTED on SQLite. */
int ocp_broker_scheduled(ocp_broker *b,
                         int (*fn)(void *ctx, const char *id, double eta, int priority,
                                   const char *payload),
                         void *ctx);

/* This process's lease owner name: "host:pid:starttime". */
void ocp_broker_owner_name(char *buf, size_t len);

/* Backend table (broker_sqlite.c fills one). */
typedef struct ocp_broker_ops {
    const char *scheme;
    int (*open)(const char *target, const ocp_broker_opts *opts, void **st, char *err,
                size_t errlen);
    void (*close)(void *st);
    const char *(*errmsg)(void *st);
    int (*submit)(void *st, const ocp_task_spec *spec, const char *id, int *inserted);
    int (*batch)(void *st, int begin); /* NULL: no batches */
    int (*lease)(void *st, const char *owner, const char *group, int max, double lease_s,
                 int max_deliveries, ocp_task *out, int *n);
    int (*renew)(void *st, const char *owner, char *const *ids, int n, double lease_s);
    int (*ack_early)(void *st, const char *owner, const char *id);
    /* started, ack, fail and release act for owner (NULL: the handle leased nothing). */
    int (*started)(void *st, const char *owner, const char *id,
                   int worker_pid); /* NULL: not recorded */
    int (*ack)(void *st, const char *owner, const char *id, json_t *result, double started,
               double finished, long peak_rss_kb, int worker_pid);
    int (*fail)(void *st, const char *owner, const char *id, ocp_failure kind, const char *reason,
                double started, double finished, int worker_pid);
    int (*release)(void *st, const char *owner, const char *id, ocp_failure kind,
                   const char *reason, int uncount, int max_deliveries, int *buried);
    int (*counts)(void *st, const char *group, ocp_counts *c);
    int (*list)(void *st, const char *group, int want_result,
                int (*fn)(void *ctx, const ocp_task_info *i), void *ctx);
    /* NULL: ocp_broker_list_finished returns OCP_E_UNSUPPORTED (Redis). */
    int (*list_finished)(void *st, const char *group, double since,
                         int (*fn)(void *ctx, const ocp_task_info *i), void *ctx);
    int (*get)(void *st, const char *id, ocp_task_info *info);
    int (*requeue)(void *st, const char *group, unsigned states_mask, long *n);
    int (*expire)(void *st, double older_than, long *n);
    int (*reclaim_dead)(void *st, long *n);
    /* NULL: OCP_E_UNSUPPORTED (SQLite). */
    int (*queues)(void *st, int op, const char *queue, const char **names, int max, int *n);
    int (*scheduled)(void *st,
                     int (*fn)(void *ctx, const char *id, double eta, int priority,
                               const char *payload),
                     void *ctx);
} ocp_broker_ops;

extern const ocp_broker_ops ocp_broker_sqlite;
extern const ocp_broker_ops ocp_broker_redis;

/* Whether owner ("host:pid:starttime") is a process of this host that is gone. */
int ocp__owner_is_dead(const char *owner);

/* Seconds since the epoch, as a double. */
double ocp_wall_now(void);

#endif
