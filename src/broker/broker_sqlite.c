/*
 * broker_sqlite.c: the embedded broker, one SQLite file (WAL) that several
 * nodes of one machine may share (broker.h).
 *
 * Schema version OCP_SQLITE_SCHEMA, kept in PRAGMA user_version. Migration
 * rule: a file of an older version is brought up step by step by
 * migrate(), each step (steps[v] takes version v to v + 1) in one
 * transaction; a file of a newer version is refused (an older ocrpool must
 * not write it). Versions:
 *   1  the tasks table
 *   2  tasks.failure: the kind (failure.h, by name) of a FAILED or BURIED
 *      task, and of a READY one's last failure (a burial at lease time
 *      keeps it); rows failed before it are 'engine', buried ones 'crashed'
 *   3  index tasks_finished on (grp, finished): a group's tasks finished
 *      since a time (list_finished); finished rows without a finished time
 *      get their start (or creation) time
 *   4  partial indexes, each holding the rows of one state, so that a task
 *      changing state touches fewer index pages (a write of the queue costs
 *      its pages): tasks_ready (priority DESC) of the READY rows replaces
 *      tasks_queue, its entries in lease order (an index ends with the
 *      rowid: a lease reads the first ones instead of sorting the whole
 *      queue, whose cost grew with it); tasks_leased (lease_expires) of the
 *      LEASED rows replaces tasks_lease; tasks_finished keeps only finished
 *      rows (its use: list_finished)
 *   5  tasks_group on (grp) alone: with the state in it, every lease and every
 *      ack moved the row's entry between parts of that index (6.1 pages
 *      written a task with it, 3.9 without, by strace; the pool's empty
 *      tasks/s +16 %); a group's counts read its rows instead (34 ms for
 *      100,000 rows, against 6)
 *
 * All writes that must be atomic (lease, ack) run in BEGIN IMMEDIATE
 * transactions or in one statement; readers and writers wait up to
 * busy_timeout for each other. Every change to a leased task (renew, ack,
 * fail, release) names its owner in the same statement or transaction: a
 * stale owner's late word changes nothing (broker.h).
 *
 * The file is created 0600 (its -wal and -shm take the file's mode): tasks
 * name files and carry results that are nobody else's to read.
 */
#include "broker/broker.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OCP_SQLITE_SCHEMA 5

/* The statements run per task, prepared once per handle (SQLITE_PREPARE_PERSISTENT) instead of
 * once per call: preparing cost as much as running them. */
typedef enum stmt_id {
    ST_SUBMIT,
    ST_LEASE_SELECT,
    ST_LEASE_UPDATE,
    ST_LEASE_BURY,
    ST_FINISH,
    ST_BEGIN, /* the transactions' own: run once or twice a change, parsed once */
    ST_COMMIT,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_COUNT
} stmt_id;

typedef struct sq {
    sqlite3 *db;
    sqlite3_stmt *stmts[ST_COUNT];
    int batch; /* a submit batch's transaction is open (sq_batch) */
    char errmsg[512];
} sq;

static const char schema_v1[] =
    "CREATE TABLE tasks ("
    " id TEXT PRIMARY KEY,"
    " grp TEXT NOT NULL DEFAULT '',"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " state INTEGER NOT NULL DEFAULT 0," /* ocp_task_state */
    " deliveries INTEGER NOT NULL DEFAULT 0,"
    " lease_owner TEXT,"
    " lease_expires REAL,"
    " not_before REAL NOT NULL DEFAULT 0,"
    " payload TEXT NOT NULL,"
    " result TEXT,"
    " error TEXT,"
    " created REAL NOT NULL,"
    " started REAL,"
    " finished REAL,"
    " peak_rss_kb INTEGER,"
    " worker_pid INTEGER);"
    "CREATE INDEX tasks_queue ON tasks(state, priority DESC, not_before);"
    "CREATE INDEX tasks_group ON tasks(grp, state);"
    "CREATE INDEX tasks_lease ON tasks(state, lease_expires);";

static const char schema_v2[] = "ALTER TABLE tasks ADD COLUMN failure TEXT;"
                                "UPDATE tasks SET failure = 'engine' WHERE state = 3;"
                                "UPDATE tasks SET failure = 'crashed' WHERE state = 4;";

static const char schema_v3[] =
    "CREATE INDEX tasks_finished ON tasks(grp, finished);"
    "UPDATE tasks SET finished = coalesce(started, created) WHERE state >= 2 AND finished IS NULL;";

static const char schema_v4[] =
    "DROP INDEX tasks_queue;"
    "DROP INDEX tasks_lease;"
    "DROP INDEX tasks_finished;"
    "CREATE INDEX tasks_ready ON tasks(priority DESC) WHERE state = 0;"
    "CREATE INDEX tasks_leased ON tasks(lease_expires) WHERE state = 1;"
    "CREATE INDEX tasks_finished ON tasks(grp, finished) WHERE state >= 2;";

static const char schema_v5[] = "DROP INDEX tasks_group;"
                                "CREATE INDEX tasks_group ON tasks(grp);";

static const char *const steps[OCP_SQLITE_SCHEMA] = {schema_v1, schema_v2, schema_v3, schema_v4,
                                                     schema_v5};

/*
 * The lease's candidates, best first: the READY tasks whose time has come (tasks_ready, read
 * in order: no sort of the whole queue) and the LEASED ones whose lease expired
 * (tasks_leased), each side at most ?2 rows, merged by priority, then age (rowid).
 */
static const char lease_select_sql[] =
    "SELECT id, grp, priority, deliveries, payload, state, error FROM ("
    " SELECT * FROM (SELECT rowid AS r, * FROM tasks INDEXED BY tasks_ready"
    "  WHERE state = 0 AND not_before <= ?1 AND (?3 IS NULL OR grp = ?3)"
    "  ORDER BY priority DESC, rowid LIMIT ?2)"
    " UNION ALL"
    " SELECT * FROM (SELECT rowid AS r, * FROM tasks INDEXED BY tasks_leased"
    "  WHERE state = 1 AND lease_expires < ?1 AND (?3 IS NULL OR grp = ?3) LIMIT ?2))"
    " ORDER BY priority DESC, r LIMIT ?2";

static const char *const stmt_sql[ST_COUNT] = {
    [ST_SUBMIT] = "INSERT OR IGNORE INTO tasks(id, grp, priority, payload, created) "
                  "VALUES (?, ?, ?, ?, ?)",
    [ST_LEASE_SELECT] = lease_select_sql,
    [ST_LEASE_UPDATE] = "UPDATE tasks SET state = 1, lease_owner = ?, lease_expires = ?, "
                        "deliveries = deliveries + 1 WHERE id = ?",
    [ST_LEASE_BURY] = "UPDATE tasks SET state = 4, lease_owner = NULL, finished = ?, "
                      "error = ?, failure = coalesce(failure, 'crashed') WHERE id = ?",
    [ST_FINISH] = "UPDATE tasks SET state = ?, result = ?, error = ?, started = ?, "
                  "finished = ?, peak_rss_kb = ?, worker_pid = ?, lease_owner = NULL, "
                  "failure = ? WHERE id = ? AND state = 1 AND lease_owner = ?",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_SAVEPOINT] = "SAVEPOINT change",
    [ST_RELEASE] = "RELEASE change",
};

static int fail_db(sq *s, const char *what)
{
    int code = sqlite3_errcode(s->db);
    snprintf(s->errmsg, sizeof s->errmsg, "%s: %s", what, sqlite3_errmsg(s->db));
    if (code == SQLITE_FULL)
        return -ENOSPC;
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return -EBUSY;
    if (code == SQLITE_NOMEM)
        return -ENOMEM;
    return -EIO;
}

/* Statement which of s, prepared on first use, reset and unbound; NULL (the reason in errmsg,
 * what the caller's step) when it cannot be prepared. The caller resets it after use: a
 * statement left mid-way would keep its read open. */
static sqlite3_stmt *stmt(sq *s, stmt_id which, const char *what)
{
    sqlite3_stmt **q = &s->stmts[which];
    if (!*q && sqlite3_prepare_v3(s->db, stmt_sql[which], -1, SQLITE_PREPARE_PERSISTENT, q,
                                  NULL) != SQLITE_OK) {
        fail_db(s, what);
        *q = NULL;
        return NULL;
    }
    sqlite3_reset(*q);
    sqlite3_clear_bindings(*q);
    return *q;
}

static int exec(sq *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        int code = sqlite3_errcode(s->db);
        return code == SQLITE_FULL ? -ENOSPC
               : code == SQLITE_BUSY || code == SQLITE_LOCKED ? -EBUSY
                                                              : -EIO;
    }
    return 0;
}

/* Runs the statement which (one of the transactions' own, without rows), as exec would. */
static int run(sq *s, stmt_id which)
{
    sqlite3_stmt *q = stmt(s, which, "transaction");
    if (!q)
        return -EIO;
    int r = sqlite3_step(q);
    sqlite3_reset(q);
    if (r == SQLITE_DONE)
        return 0;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", sqlite3_errmsg(s->db));
    return sqlite3_errcode(s->db) == SQLITE_FULL ? -ENOSPC : -EIO;
}

/*
 * The transaction of one change (lease, renew, release, reclaim). Inside a batch (sq_batch)
 * it is a savepoint of the batch's transaction: its changes are written with the batch's,
 * and a failure undoes its own changes only.
 */
typedef enum txn_step { TXN_BEGIN, TXN_COMMIT, TXN_ROLLBACK } txn_step;

static int txn(sq *s, txn_step step)
{
    static const stmt_id plain[] = {ST_BEGIN, ST_COMMIT}, nested[] = {ST_SAVEPOINT, ST_RELEASE};
    if (step == TXN_ROLLBACK)
        return exec(s, s->batch ? "ROLLBACK TO change; RELEASE change" : "ROLLBACK");
    return run(s, (s->batch ? nested : plain)[step]);
}

static int read_version(sq *s, int *version)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return fail_db(s, "cannot read the schema version");
    *version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (*version < 0) { /* not one of ours: no step of the migration takes it */
        snprintf(s->errmsg, sizeof s->errmsg, "queue schema version %d is not valid", *version);
        return OCP_E_CONFIG;
    }
    return 0;
}

static int migrate(sq *s)
{
    int version, rc;
    if ((rc = read_version(s, &version)))
        return rc;
    while (version < OCP_SQLITE_SCHEMA) {
        if ((rc = exec(s, "BEGIN IMMEDIATE")))
            return rc;
        /* Re-read under the lock: another node may have migrated meanwhile. */
        if ((rc = read_version(s, &version)) == 0 && version < OCP_SQLITE_SCHEMA &&
            (rc = exec(s, steps[version])) == 0) {
            char sql[64];
            snprintf(sql, sizeof sql, "PRAGMA user_version = %d", version + 1);
            rc = exec(s, sql);
        }
        if (rc) {
            exec(s, "ROLLBACK");
            return rc;
        }
        if ((rc = exec(s, "COMMIT")) || (rc = read_version(s, &version)))
            return rc;
    }
    if (version > OCP_SQLITE_SCHEMA) {
        snprintf(s->errmsg, sizeof s->errmsg,
                 "queue schema version %d is newer than this ocrpool's (%d)", version,
                 OCP_SQLITE_SCHEMA);
        return OCP_E_CONFIG;
    }
    return 0;
}

/*
 * Creates the queue file 0600 when it is not there, before SQLite does (SQLite would create
 * it 0644 less the umask; its -wal and -shm files take the database file's mode). A file that
 * exists keeps the mode its owner gave it. A failure here is left to sqlite3_open to say.
 */
static void create_private(const char *path)
{
    if (strcmp(path, ":memory:") == 0)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0)
        close(fd);
}

static int sq_open(const char *target, const ocp_broker_opts *opts, void **out, char *err,
                   size_t errlen)
{
    sq *s = ocp_xcalloc(1, sizeof *s);
    int rc;
    if (!*target) {
        free(s);
        return ocp_errf(OCP_E_CONFIG, err, errlen, "broker: no database file named");
    }
    create_private(target);
    if (sqlite3_open_v2(target, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = ocp_errf(-EIO, err, errlen, "cannot open queue %s: %s", target,
                      s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite3_close(s->db);
        free(s);
        return rc;
    }
    sqlite3_busy_timeout(s->db, 10000);
    /* Two processes opening a new queue at once (`ocr` and its node): SQLite can answer the
     * one turning it to WAL "database is locked" at once, without its busy handler (seen in
     * test_gpu). Such an open is tried again for as long as the busy timeout. */
    double t0 = ocp_now();
    while (((rc = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")) ||
            (rc = migrate(s))) &&
           rc == -EBUSY && ocp_now() - t0 < 10.0)
        usleep(20000);
    if (rc) {
        ocp_errf(rc, err, errlen, "queue %s: %s", target, s->errmsg);
        sqlite3_close(s->db);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void sq_close(void *st)
{
    sq *s = st;
    if (!s)
        return;
    if (s->batch)
        exec(s, "COMMIT");
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    sqlite3_close(s->db);
    free(s);
}

static const char *sq_errmsg(void *st)
{
    return ((sq *)st)->errmsg;
}

static int sq_submit(void *st, const ocp_task_spec *spec, const char *id, int *inserted)
{
    sq *s = st;
    sqlite3_stmt *q = stmt(s, ST_SUBMIT, "submit");
    int rc = 0;
    if (!q)
        return -EIO;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, spec->group ? spec->group : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, spec->priority);
    sqlite3_bind_text(q, 4, spec->payload, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 5, ocp_wall_now());
    if (sqlite3_step(q) != SQLITE_DONE)
        rc = fail_db(s, "submit");
    else if (inserted)
        *inserted = sqlite3_changes(s->db) > 0;
    sqlite3_reset(q);
    return rc;
}

/*
 * A submit batch: begin opens one transaction for the submits that follow, end commits it
 * (one commit, not one per task: WAL frames and the write lock once). A failed submit inside
 * leaves the batch's other tasks in place; end after any failure still commits them. When the
 * commit fails, the batch's tasks are not queued (rolled back) and end says so.
 */
static int sq_batch(void *st, int begin)
{
    sq *s = st;
    int rc;
    if (begin) {
        if (s->batch)
            return 0;
        if ((rc = run(s, ST_BEGIN)))
            return rc;
        s->batch = 1;
        return 0;
    }
    if (!s->batch)
        return 0;
    s->batch = 0;
    if (sqlite3_get_autocommit(s->db)) { /* SQLite rolled it back itself (a full disk) */
        snprintf(s->errmsg, sizeof s->errmsg, "the batch's transaction was rolled back: %s",
                 sqlite3_errmsg(s->db));
        return -EIO;
    }
    if ((rc = run(s, ST_COMMIT))) {
        exec(s, "ROLLBACK");
        return rc;
    }
    return 0;
}

static char *col_text(sqlite3_stmt *q, int i)
{
    const unsigned char *t = sqlite3_column_text(q, i);
    return t ? ocp_xstrdup((const char *)t) : NULL;
}

/*
 * Buries the task of the row sel stands on (handed out max times and never finished: do not
 * loop on it) with bury. It keeps the kind of its last failure, or is 'crashed' when it had
 * none (its lease expired: its node was lost).
 */
static int bury_row(sq *s, sqlite3_stmt *sel, sqlite3_stmt *bury, double now)
{
    const char *id = (const char *)sqlite3_column_text(sel, 0);
    int deliveries = sqlite3_column_int(sel, 3);
    int was_leased = sqlite3_column_int(sel, 5) == 1;
    const char *last = (const char *)sqlite3_column_text(sel, 6);
    char reason[600];
    snprintf(reason, sizeof reason, "buried after %d deliveries%s%s", deliveries,
             last ? ": " : (was_leased ? ": its lease expired (node lost)" : ""), last ? last : "");
    sqlite3_bind_double(bury, 1, now);
    sqlite3_bind_text(bury, 2, reason, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(bury, 3, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(bury) == SQLITE_DONE ? 0 : fail_db(s, "lease");
    sqlite3_reset(bury);
    return rc;
}

static int sq_lease(void *st, const char *owner, const char *group, int max, double lease_s,
                    int max_deliveries, ocp_task *out, int *n)
{
    sq *s = st;
    sqlite3_stmt *sel = NULL, *upd = NULL, *bury = NULL;
    double now = ocp_wall_now();
    int rc = 0, got = 0;
    *n = 0;
    if (max <= 0)
        return 0;
    if ((rc = txn(s, TXN_BEGIN)))
        return rc;
    if (!(sel = stmt(s, ST_LEASE_SELECT, "lease")) || !(upd = stmt(s, ST_LEASE_UPDATE, "lease")) ||
        !(bury = stmt(s, ST_LEASE_BURY, "lease"))) {
        rc = -EIO;
        goto out;
    }
    sqlite3_bind_double(sel, 1, now);
    sqlite3_bind_int(sel, 2, max);
    if (group)
        sqlite3_bind_text(sel, 3, group, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(sel, 3);
    while (got < max) {
        int r = sqlite3_step(sel);
        if (r == SQLITE_DONE)
            break;
        if (r != SQLITE_ROW) {
            rc = fail_db(s, "lease");
            goto out;
        }
        int deliveries = sqlite3_column_int(sel, 3);
        if (deliveries >= max_deliveries) {
            if ((rc = bury_row(s, sel, bury, now)))
                goto out;
            continue;
        }
        ocp_task *t = &out[got];
        t->id = col_text(sel, 0);
        t->group = col_text(sel, 1);
        t->priority = sqlite3_column_int(sel, 2);
        t->deliveries = deliveries + 1;
        t->payload = col_text(sel, 4);
        sqlite3_bind_text(upd, 1, owner, -1, SQLITE_STATIC);
        sqlite3_bind_double(upd, 2, now + lease_s);
        sqlite3_bind_text(upd, 3, t->id, -1, SQLITE_STATIC);
        if (sqlite3_step(upd) != SQLITE_DONE) {
            ocp_task_fini(t);
            rc = fail_db(s, "lease");
            goto out;
        }
        sqlite3_reset(upd);
        got++;
    }
out:
    if (sel)
        sqlite3_reset(sel);
    if (upd)
        sqlite3_reset(upd);
    if (rc) {
        for (int i = 0; i < got; i++)
            ocp_task_fini(&out[i]);
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    if ((rc = txn(s, TXN_COMMIT))) {
        for (int i = 0; i < got; i++)
            ocp_task_fini(&out[i]);
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    *n = got;
    return 0;
}

static int sq_renew(void *st, const char *owner, char *const *ids, int n, double lease_s)
{
    sq *s = st;
    sqlite3_stmt *q;
    int rc;
    if ((rc = txn(s, TXN_BEGIN)))
        return rc;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE tasks SET lease_expires = ? WHERE id = ? AND state = 1 AND "
                           "lease_owner = ?",
                           -1, &q, NULL) != SQLITE_OK) {
        rc = fail_db(s, "renew");
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    double until = ocp_wall_now() + lease_s;
    for (int i = 0; i < n && !rc; i++) {
        sqlite3_bind_double(q, 1, until);
        sqlite3_bind_text(q, 2, ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, owner, -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE)
            rc = fail_db(s, "renew");
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    if (rc) {
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    return txn(s, TXN_COMMIT);
}

/* Binds kind's name at i, or NULL for OCP_FAIL_NONE. */
static void bind_failure(sqlite3_stmt *q, int i, ocp_failure kind)
{
    if (kind == OCP_FAIL_NONE)
        sqlite3_bind_null(q, i);
    else
        sqlite3_bind_text(q, i, ocp_failure_name(kind), -1, SQLITE_STATIC);
}

/*
 * Says (a warning) why owner's late word on task id (what: "ack", "fail", "release") was
 * ignored: the task is leased to another owner, back in the queue, or finished.
 */
static void ignored(sq *s, const char *owner, const char *id, const char *what)
{
    sqlite3_stmt *q;
    char now[300] = "there is no such task";
    if (sqlite3_prepare_v2(s->db, "SELECT state, lease_owner FROM tasks WHERE id = ?", -1, &q,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW) {
            const char *o = (const char *)sqlite3_column_text(q, 1);
            int state = sqlite3_column_int(q, 0);
            if (state == OCP_TASK_LEASED)
                snprintf(now, sizeof now, "it is leased to %s now", o ? o : "(none)");
            else
                snprintf(now, sizeof now, "it is %s now", ocp_task_state_name(state));
        }
        sqlite3_finalize(q);
    }
    OCP_LOG(OCP_LOG_WARN, "task %s: a late %s from %s ignored: %s", id, what,
            owner ? owner : "a node that leased nothing", now);
}

/*
 * Sets a finished state once, for owner's lease only: a task already DONE/FAILED/BURIED, back
 * in the queue, or leased to another owner is left as it is (and that is said).
 */
static int finish(sq *s, const char *owner, const char *id, int state, const char *result,
                  ocp_failure kind, const char *error, double started, double finished, long peak,
                  int pid)
{
    sqlite3_stmt *q = stmt(s, ST_FINISH, "store result");
    int rc = 0;
    if (!q)
        return -EIO;
    sqlite3_bind_int(q, 1, state);
    if (result)
        sqlite3_bind_text(q, 2, result, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 2);
    if (error)
        sqlite3_bind_text(q, 3, error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 3);
    sqlite3_bind_double(q, 4, started);
    /* Every finished task has a finished time: list_finished finds it by that. */
    sqlite3_bind_double(q, 5, finished > 0 ? finished : ocp_wall_now());
    sqlite3_bind_int64(q, 6, peak);
    sqlite3_bind_int(q, 7, pid);
    bind_failure(q, 8, kind);
    sqlite3_bind_text(q, 9, id, -1, SQLITE_STATIC);
    if (owner)
        sqlite3_bind_text(q, 10, owner, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 10); /* matches no row */
    if (sqlite3_step(q) != SQLITE_DONE)
        rc = fail_db(s, "store result");
    else if (sqlite3_changes(s->db) == 0)
        ignored(s, owner, id, state == OCP_TASK_DONE ? "ack" : "fail");
    sqlite3_reset(q);
    return rc;
}

/* acks-late off: the lease never runs out, so the page is not delivered again. */
static int sq_ack_early(void *st, const char *owner, const char *id)
{
    char *ids[1] = {(char *)id};
    return sq_renew(st, owner, ids, 1, 1e9);
}

static int sq_ack(void *st, const char *owner, const char *id, json_t *result, double started,
                  double finished, long peak, int pid)
{
    char *text = json_dumps(result, JSON_COMPACT);
    int rc = finish(st, owner, id, OCP_TASK_DONE, text ? text : "{}", OCP_FAIL_NONE, NULL, started,
                    finished, peak, pid);
    free(text);
    return rc;
}

static int sq_fail(void *st, const char *owner, const char *id, ocp_failure kind,
                   const char *reason, double started, double finished, int pid)
{
    return finish(st, owner, id, OCP_TASK_FAILED, NULL, kind, reason, started, finished, -1, pid);
}

static int sq_release(void *st, const char *owner, const char *id, ocp_failure kind,
                      const char *reason, int uncount, int max_deliveries, int *buried)
{
    sq *s = st;
    sqlite3_stmt *q;
    int rc;
    double now = ocp_wall_now();
    *buried = 0;
    if ((rc = txn(s, TXN_BEGIN)))
        return rc;
    /* Under the write lock: the task stays owner's until the update below. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT deliveries FROM tasks WHERE id = ? AND state = 1 AND "
                           "lease_owner = ?",
                           -1, &q, NULL) != SQLITE_OK) {
        rc = fail_db(s, "release");
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    if (owner)
        sqlite3_bind_text(q, 2, owner, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 2);
    int deliveries = -1;
    if (sqlite3_step(q) == SQLITE_ROW)
        deliveries = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (deliveries < 0) { /* not owner's any more (finished, or taken over): nothing to do */
        ignored(s, owner, id, "release");
        return txn(s, TXN_COMMIT);
    }
    if (uncount && deliveries > 0)
        deliveries--;
    if (!uncount && deliveries >= max_deliveries) {
        char why[600];
        snprintf(why, sizeof why, "buried after %d deliveries: %s", deliveries,
                 reason ? reason : "worker lost");
        rc = sqlite3_prepare_v2(s->db,
                                "UPDATE tasks SET state = 4, error = ?, finished = ?, "
                                "lease_owner = NULL, failure = ? WHERE id = ?",
                                -1, &q, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(q, 1, why, -1, SQLITE_TRANSIENT);
            sqlite3_bind_double(q, 2, now);
            bind_failure(q, 3, kind != OCP_FAIL_NONE ? kind : OCP_FAIL_CRASHED);
            sqlite3_bind_text(q, 4, id, -1, SQLITE_STATIC);
        }
        *buried = 1;
    } else {
        rc = sqlite3_prepare_v2(s->db,
                                "UPDATE tasks SET state = 0, deliveries = ?, error = ?, "
                                "not_before = ?, lease_owner = NULL, lease_expires = NULL, "
                                "failure = coalesce(?, failure) WHERE id = ?",
                                -1, &q, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int(q, 1, deliveries);
            if (reason)
                sqlite3_bind_text(q, 2, reason, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(q, 2);
            sqlite3_bind_double(q, 3, now);
            bind_failure(q, 4, uncount ? OCP_FAIL_NONE : kind); /* uncounted: kept as was */
            sqlite3_bind_text(q, 5, id, -1, SQLITE_STATIC);
        }
    }
    if (rc != SQLITE_OK || sqlite3_step(q) != SQLITE_DONE) {
        rc = fail_db(s, "release");
        if (q)
            sqlite3_finalize(q);
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    sqlite3_finalize(q);
    return txn(s, TXN_COMMIT);
}

static int sq_counts(void *st, const char *group, ocp_counts *c)
{
    sq *s = st;
    sqlite3_stmt *q;
    memset(c, 0, sizeof *c);
    if (sqlite3_prepare_v2(s->db,
                           group ? "SELECT state, count(*) FROM tasks WHERE grp = ? GROUP BY state"
                                 : "SELECT state, count(*) FROM tasks GROUP BY state",
                           -1, &q, NULL) != SQLITE_OK)
        return fail_db(s, "count");
    if (group)
        sqlite3_bind_text(q, 1, group, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        long v = (long)sqlite3_column_int64(q, 1);
        switch (sqlite3_column_int(q, 0)) {
        case OCP_TASK_READY:
            c->ready = v;
            break;
        case OCP_TASK_LEASED:
            c->leased = v;
            break;
        case OCP_TASK_DONE:
            c->done = v;
            break;
        case OCP_TASK_FAILED:
            c->failed = v;
            break;
        case OCP_TASK_BURIED:
            c->buried = v;
            break;
        }
    }
    int rc = r == SQLITE_DONE ? 0 : fail_db(s, "count");
    sqlite3_finalize(q);
    return rc;
}

#define INFO_COLS                                                                                  \
    "id, grp, payload, error, lease_owner, state, priority, deliveries, worker_pid, created, "     \
    "started, finished, lease_expires, peak_rss_kb, failure"

static void read_info(sqlite3_stmt *q, ocp_task_info *i, int with_result)
{
    memset(i, 0, sizeof *i);
    i->id = col_text(q, 0);
    i->group = col_text(q, 1);
    i->payload = col_text(q, 2);
    i->error = col_text(q, 3);
    i->lease_owner = col_text(q, 4);
    i->state = sqlite3_column_int(q, 5);
    i->priority = sqlite3_column_int(q, 6);
    i->deliveries = sqlite3_column_int(q, 7);
    i->worker_pid = sqlite3_column_int(q, 8);
    i->created = sqlite3_column_double(q, 9);
    i->started = sqlite3_column_double(q, 10);
    i->finished = sqlite3_column_double(q, 11);
    i->lease_expires = sqlite3_column_double(q, 12);
    i->peak_rss_kb = (long)sqlite3_column_int64(q, 13);
    i->failure = ocp_failure_parse((const char *)sqlite3_column_text(q, 14));
    if (with_result)
        i->result = col_text(q, 15);
}

static int sq_list(void *st, const char *group, int want_result,
                   int (*fn)(void *ctx, const ocp_task_info *i), void *ctx)
{
    sq *s = st;
    sqlite3_stmt *q;
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT " INFO_COLS "%s FROM tasks %s ORDER BY rowid",
             want_result ? ", result" : "", group ? "WHERE grp = ?" : "");
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
        return fail_db(s, "list");
    if (group)
        sqlite3_bind_text(q, 1, group, -1, SQLITE_STATIC);
    int r, rc = 0;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        ocp_task_info i;
        read_info(q, &i, want_result);
        rc = fn(ctx, &i);
        ocp_task_info_fini(&i);
        if (rc)
            break;
    }
    if (!rc && r != SQLITE_DONE)
        rc = fail_db(s, "list");
    sqlite3_finalize(q);
    return rc;
}

/* DONE, FAILED and BURIED tasks of group finished at since or later, by finished time. */
static int sq_list_finished(void *st, const char *group, double since,
                            int (*fn)(void *ctx, const ocp_task_info *i), void *ctx)
{
    sq *s = st;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT " INFO_COLS " FROM tasks INDEXED BY tasks_finished "
                           "WHERE grp = ? AND finished >= ? AND state >= 2 ORDER BY finished",
                           -1, &q, NULL) != SQLITE_OK)
        return fail_db(s, "list finished");
    sqlite3_bind_text(q, 1, group, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 2, since);
    int r, rc = 0;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        ocp_task_info i;
        read_info(q, &i, 0);
        rc = fn(ctx, &i);
        ocp_task_info_fini(&i);
        if (rc)
            break;
    }
    if (!rc && r != SQLITE_DONE)
        rc = fail_db(s, "list finished");
    sqlite3_finalize(q);
    return rc;
}

static int sq_get(void *st, const char *id, ocp_task_info *info)
{
    sq *s = st;
    sqlite3_stmt *q;
    int rc = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT " INFO_COLS ", result FROM tasks WHERE id = ?", -1, &q,
                           NULL) != SQLITE_OK)
        return fail_db(s, "get");
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(q);
    if (r == SQLITE_ROW)
        read_info(q, info, 1);
    else if (r == SQLITE_DONE) {
        snprintf(s->errmsg, sizeof s->errmsg, "no task %s", id);
        rc = OCP_E_NOPAGE;
    } else
        rc = fail_db(s, "get");
    sqlite3_finalize(q);
    return rc;
}

static int sq_requeue(void *st, const char *group, unsigned mask, long *n)
{
    sq *s = st;
    sqlite3_stmt *q;
    char sql[400];
    snprintf(sql, sizeof sql,
             "UPDATE tasks SET state = 0, deliveries = 0, not_before = 0, error = NULL, "
             "failure = NULL, result = NULL, lease_owner = NULL WHERE ((1 << state) & %u) != 0 %s",
             mask, group ? "AND grp = ?" : "");
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
        return fail_db(s, "requeue");
    if (group)
        sqlite3_bind_text(q, 1, group, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q) == SQLITE_DONE ? 0 : fail_db(s, "requeue");
    *n = rc ? 0 : sqlite3_changes(s->db);
    sqlite3_finalize(q);
    return rc;
}

static int sq_expire(void *st, double older_than, long *n)
{
    sq *s = st;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM tasks WHERE state >= 2 AND finished < ?", -1, &q,
                           NULL) != SQLITE_OK)
        return fail_db(s, "expire");
    sqlite3_bind_double(q, 1, older_than);
    int rc = sqlite3_step(q) == SQLITE_DONE ? 0 : fail_db(s, "expire");
    *n = rc ? 0 : sqlite3_changes(s->db);
    sqlite3_finalize(q);
    return rc;
}

static int sq_reclaim_dead(void *st, long *n)
{
    sq *s = st;
    sqlite3_stmt *q, *u;
    int rc;
    *n = 0;
    if ((rc = txn(s, TXN_BEGIN)))
        return rc;
    if (sqlite3_prepare_v2(s->db, "SELECT DISTINCT lease_owner FROM tasks WHERE state = 1", -1, &q,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db,
                           "UPDATE tasks SET lease_expires = 0 WHERE state = 1 AND lease_owner = ?",
                           -1, &u, NULL) != SQLITE_OK) {
        rc = fail_db(s, "reclaim");
        txn(s, TXN_ROLLBACK);
        return rc;
    }
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(q, 0);
        if (owner && ocp__owner_is_dead(owner)) {
            /* An expired lease: the next lease() takes it, counting the delivery. */
            sqlite3_bind_text(u, 1, owner, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(u) == SQLITE_DONE)
                *n += sqlite3_changes(s->db);
            sqlite3_reset(u);
        }
    }
    sqlite3_finalize(q);
    sqlite3_finalize(u);
    return txn(s, TXN_COMMIT);
}

const ocp_broker_ops ocp_broker_sqlite = {
    .scheme = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .submit = sq_submit,
    .batch = sq_batch,
    .lease = sq_lease,
    .renew = sq_renew,
    .ack_early = sq_ack_early,
    .ack = sq_ack,
    .fail = sq_fail,
    .release = sq_release,
    .counts = sq_counts,
    .list = sq_list,
    .list_finished = sq_list_finished,
    .get = sq_get,
    .requeue = sq_requeue,
    .expire = sq_expire,
    .reclaim_dead = sq_reclaim_dead,
};
