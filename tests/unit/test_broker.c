/*
 * test_broker.c: the broker interface (src/broker/broker.h) on a real
 * backend: a failure's kind is stored and read back (get and list) with the
 * task's state, a burial keeps the kind of the failure that buried it, a
 * result comes back as the text that was stored, a group's tasks finished
 * since a time come in order of finished time (SQLite; Redis refuses), and
 * the SQLite file's schema is migrated from version 1 (a newer file is
 * refused), the file is created 0600. Every change to a leased task checks
 * its owner: a stale node's late ack, fail, release or STARTED (its lease
 * ran out and another node leased the task) changes nothing, on SQLite and
 * on Redis. On Redis, a dead node's message is reclaimed at once unless a
 * Python worker took it again under the same tag, and a renewal whose
 * answer was lost leaves the node what it holds; messages with a future
 * eta are held in the node only up to a count and a size; the rest wait in
 * Redis until their eta.
 *
 *   test_broker                 the SQLite backend, on temporary files; then
 *                               the Redis cases on a redis-server of its own
 *                               (a free loopback port, no persistence) when
 *                               redis-server is installed
 *   test_broker redis URL       the Redis cases on a real Redis
 *                               (tests/integration/test_redis.sh starts
 *                               one); prints "# kind ID" for each failed task
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/celery.h"
#include "broker/redis_int.h" /* ocp__rd_lose_renew_replies */
#include "core/error.h"
#include "core/failure.h"
#include "core/util.h"
#include "own_redis.h"

static const char *redis_url; /* NULL: SQLite */
static char db_path[256];

/* Opens the broker under test with o. */
static ocp_broker *open_broker_with(const ocp_broker_opts *o)
{
    char url[512], err[512] = "";
    ocp_broker *b = NULL;
    if (redis_url)
        snprintf(url, sizeof url, "%s", redis_url);
    else
        snprintf(url, sizeof url, "sqlite://%s", db_path);
    if (ocp_broker_open(url, o, &b, err, sizeof err))
        fail_msg("open %s: %s", url, err);
    return b;
}

static ocp_broker *open_broker(void)
{
    ocp_broker_opts o = {.queues = "ocrpool-test-kinds"};
    return open_broker_with(&o);
}

static int setup(void **state)
{
    (void)state;
    if (!redis_url) {
        const char *tmp = getenv("TMPDIR");
        snprintf(db_path, sizeof db_path, "%s/ocp-test-broker-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        int fd = mkstemp(db_path);
        assert_true(fd >= 0);
        close(fd);
        unlink(db_path);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!redis_url) {
        char p[300];
        unlink(db_path);
        snprintf(p, sizeof p, "%s-wal", db_path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", db_path);
        unlink(p);
    }
    return 0;
}

/* Submits one page of group and leases it: its id in id. */
static void submit_lease(ocp_broker *b, const char *group, char id[64])
{
    const char *payload = "{\"source\":\"/nowhere/page.png\",\"lang\":\"eng\",\"page\":0}";
    ocp_task_spec spec = {.group = group, .payload = payload};
    int inserted = 0, n = 0;
    assert_int_equal(ocp_broker_submit(b, &spec, id, &inserted), 0);
    assert_int_equal(inserted, 1);
    ocp_task t[4];
    /* Redis cannot lease by group (its queue is for this test alone). */
    assert_int_equal(ocp_broker_lease(b, "test:1:1", redis_url ? NULL : group, 4, 60, 5, t, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].id, id);
    ocp_task_fini(&t[0]);
}

static void expect(ocp_broker *b, const char *id, int state, ocp_failure kind, const char *reason)
{
    ocp_task_info i;
    assert_int_equal(ocp_broker_get(b, id, &i), 0);
    if (i.state != state || i.failure != kind)
        fail_msg("task %s: %s/%s, not %s/%s", id, ocp_task_state_name(i.state),
                 ocp_failure_name(i.failure), ocp_task_state_name(state), ocp_failure_name(kind));
    if (reason && (!i.error || !strstr(i.error, reason)))
        fail_msg("task %s: error '%s' lacks '%s'", id, i.error ? i.error : "(none)", reason);
    ocp_task_info_fini(&i);
}

typedef struct seen {
    int n;
    char ids[16][64];
    ocp_failure kinds[16];
    int states[16];
} seen;

static int collect(void *ctx, const ocp_task_info *i)
{
    seen *s = ctx;
    if (s->n < 16) {
        snprintf(s->ids[s->n], 64, "%s", i->id);
        s->kinds[s->n] = i->failure;
        s->states[s->n] = i->state;
        s->n++;
    }
    return 0;
}

/* fail with each kind, and release to burial with one: get and list give the kinds back. */
static void test_failure_kinds(void **state)
{
    (void)state;
    ocp_broker *b = open_broker();
    char group[64], id[64];
    ocp_uuid4(group);
    static const ocp_failure kinds[] = {OCP_FAIL_INPUT, OCP_FAIL_SOFT_TIME_LIMIT, OCP_FAIL_BUDGET,
                                        OCP_FAIL_MALFORMED, OCP_FAIL_CRASHED};
    char ids[6][64];
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        submit_lease(b, group, ids[k]);
        char why[64];
        snprintf(why, sizeof why, "reason %zu", k);
        double now = ocp_wall_now();
        assert_int_equal(ocp_broker_fail(b, ids[k], kinds[k], why, now, now, 1), 0);
        expect(b, ids[k], OCP_TASK_FAILED, kinds[k], why);
        if (redis_url)
            printf("# %s %s\n", ocp_failure_name(kinds[k]), ids[k]);
    }
    /* Released once with max_deliveries 1: buried, with the kind that buried it. */
    submit_lease(b, group, id);
    int buried = 0;
    assert_int_equal(
        ocp_broker_release(b, id, OCP_FAIL_MEMORY_LIMIT, "over the cap", 0, 1, &buried), 0);
    assert_int_equal(buried, 1);
    expect(b, id, OCP_TASK_BURIED, OCP_FAIL_MEMORY_LIMIT, "over the cap");
    if (redis_url)
        printf("# buried-%s %s\n", ocp_failure_name(OCP_FAIL_MEMORY_LIMIT), id);
    snprintf(ids[5], 64, "%s", id);

    seen s = {0};
    assert_int_equal(ocp_broker_list(b, group, 0, collect, &s), 0);
    assert_int_equal(s.n, 6);
    for (int k = 0; k < 6; k++) {
        int j = 0;
        while (j < s.n && strcmp(s.ids[j], ids[k]) != 0)
            j++;
        assert_true(j < s.n);
        ocp_failure want = k < 5 ? kinds[k] : OCP_FAIL_MEMORY_LIMIT;
        if (s.kinds[j] != want)
            fail_msg("list: task %d is %s, not %s", k, ocp_failure_name(s.kinds[j]),
                     ocp_failure_name(want));
        assert_int_equal(s.states[j], k < 5 ? OCP_TASK_FAILED : OCP_TASK_BURIED);
    }
    ocp_broker_close(b);
}

/* A result comes back as the text it was stored as, and a DONE task has no failure. */
static void test_result_text(void **state)
{
    (void)state;
    ocp_broker *b = open_broker();
    char group[64], id[64];
    ocp_uuid4(group);
    submit_lease(b, group, id);
    const char *text = "{\"text\":\"a \\\"b\\\" } ]\",\"lines\":[{\"bbox\":[1,2,3,4]}],\"c\":91.5}";
    json_t *res = json_loads(text, 0, NULL);
    double now = ocp_wall_now();
    assert_int_equal(ocp_broker_ack(b, id, res, now, now, 1000, 1), 0);
    json_decref(res);
    ocp_task_info i;
    assert_int_equal(ocp_broker_get(b, id, &i), 0);
    assert_int_equal(i.state, OCP_TASK_DONE);
    assert_int_equal(i.failure, OCP_FAIL_NONE);
    assert_non_null(i.result);
    assert_string_equal(i.result, text);
    ocp_task_info_fini(&i);
    ocp_broker_close(b);
}

/* SQLite: a page released (not buried) keeps its failure's kind, and a burial at lease time
 * (the last delivery's node lost) keeps it; requeue forgets it. */
static void test_sqlite_lease_burial(void **state)
{
    (void)state;
    ocp_broker *b = open_broker();
    char id[64];
    submit_lease(b, "g-burial", id);
    int buried = 1, n = 0;
    assert_int_equal(ocp_broker_release(b, id, OCP_FAIL_TIME_LIMIT, "too slow", 0, 5, &buried), 0);
    assert_int_equal(buried, 0);
    expect(b, id, OCP_TASK_READY, OCP_FAIL_TIME_LIMIT, "too slow");
    ocp_task t[2];
    /* Delivered once already: with max_deliveries 1 the next lease buries it. */
    assert_int_equal(ocp_broker_lease(b, "test:1:1", "g-burial", 2, 60, 1, t, &n), 0);
    assert_int_equal(n, 0);
    expect(b, id, OCP_TASK_BURIED, OCP_FAIL_TIME_LIMIT, "buried after 1 deliveries: too slow");
    long moved = 0;
    assert_int_equal(ocp_broker_requeue(b, "g-burial", 1u << OCP_TASK_BURIED, &moved), 0);
    assert_int_equal(moved, 1);
    expect(b, id, OCP_TASK_READY, OCP_FAIL_NONE, NULL);
    /* A lease that expires with no failure before it: buried as its node lost. */
    assert_int_equal(ocp_broker_lease(b, "test:1:1", "g-burial", 2, -1, 5, t, &n), 0);
    assert_int_equal(n, 1);
    ocp_task_fini(&t[0]);
    assert_int_equal(ocp_broker_lease(b, "test:1:1", "g-burial", 2, 60, 1, t, &n), 0);
    assert_int_equal(n, 0);
    expect(b, id, OCP_TASK_BURIED, OCP_FAIL_CRASHED, "lease expired");
    ocp_broker_close(b);
}

/* list_finished: the group's finished tasks from a time on, by finished time; a task failed
 * without a finished time gets one; not ready or leased ones, not other groups'. */
static void test_sqlite_list_finished(void **state)
{
    (void)state;
    ocp_broker *b = open_broker();
    char a[64], c[64], d[64], e[64], other[64], ready[64];
    int inserted = 0;
    double t0 = ocp_wall_now();
    submit_lease(b, "g-fin", a);
    json_t *res = json_pack("{s:s}", "text", "x");
    assert_int_equal(ocp_broker_ack(b, a, res, 300, 300, 0, 0), 0);
    submit_lease(b, "g-fin", c);
    assert_int_equal(ocp_broker_fail(b, c, OCP_FAIL_INPUT, "bad", 100, 100, 0), 0);
    submit_lease(b, "g-fin", d);
    assert_int_equal(ocp_broker_ack(b, d, res, 200, 200, 0, 0), 0);
    submit_lease(b, "g-fin", e);
    assert_int_equal(ocp_broker_fail(b, e, OCP_FAIL_BUDGET, "no memory", 0, 0, 0), 0);
    submit_lease(b, "g-fin-other", other);
    assert_int_equal(ocp_broker_ack(b, other, res, 250, 250, 0, 0), 0);
    ocp_task_spec spec = {.group = "g-fin", .payload = "{}"};
    assert_int_equal(ocp_broker_submit(b, &spec, ready, &inserted), 0);
    json_decref(res);

    seen s = {0};
    assert_int_equal(ocp_broker_list_finished(b, "g-fin", 150, collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], d);
    assert_string_equal(s.ids[1], a);
    assert_string_equal(s.ids[2], e); /* failed with no time: now */
    assert_int_equal(s.states[2], OCP_TASK_FAILED);
    memset(&s, 0, sizeof s);
    assert_int_equal(ocp_broker_list_finished(b, "g-fin", 0, collect, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.ids[0], c);
    memset(&s, 0, sizeof s);
    assert_int_equal(ocp_broker_list_finished(b, "g-fin", t0 - 1, collect, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], e);
    ocp_broker_close(b);
}

/* Redis keeps no index of finished times: refused. */
static void test_redis_list_finished(void **state)
{
    (void)state;
    ocp_broker *b = open_broker();
    seen s = {0};
    assert_int_equal(ocp_broker_list_finished(b, "g-fin", 0, collect, &s), OCP_E_UNSUPPORTED);
    ocp_broker_close(b);
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int user_version(void)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* A version 1 file (as ocrpool 0.1 wrote it) is brought up to version 5: its failed and
 * buried tasks get the kinds they stand for (2), an index on group and finished time and
 * finished rows without a finished time their start or creation time (3), the indexes of
 * one state each (4), the group's index without the state (5); a newer file is refused. */
static void test_sqlite_migration(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    exec_sql(db, "CREATE TABLE tasks (id TEXT PRIMARY KEY, grp TEXT NOT NULL DEFAULT '',"
                 " priority INTEGER NOT NULL DEFAULT 0, state INTEGER NOT NULL DEFAULT 0,"
                 " deliveries INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires REAL,"
                 " not_before REAL NOT NULL DEFAULT 0, payload TEXT NOT NULL, result TEXT,"
                 " error TEXT, created REAL NOT NULL, started REAL, finished REAL,"
                 " peak_rss_kb INTEGER, worker_pid INTEGER);"
                 "CREATE INDEX tasks_queue ON tasks(state, priority DESC, not_before);"
                 "CREATE INDEX tasks_group ON tasks(grp, state);"
                 "CREATE INDEX tasks_lease ON tasks(state, lease_expires);"
                 "INSERT INTO tasks(id, state, payload, error, created) VALUES"
                 " ('old-failed', 3, '{}', 'bad page', 1), ('old-buried', 4, '{}', 'lost', 1),"
                 " ('old-done', 2, '{}', NULL, 1);"
                 "PRAGMA user_version = 1;");
    sqlite3_close(db);
    ocp_broker *b = open_broker();
    assert_int_equal(user_version(), 5);
    expect(b, "old-failed", OCP_TASK_FAILED, OCP_FAIL_ENGINE, "bad page");
    expect(b, "old-buried", OCP_TASK_BURIED, OCP_FAIL_CRASHED, "lost");
    expect(b, "old-done", OCP_TASK_DONE, OCP_FAIL_NONE, NULL);
    seen s = {0};
    assert_int_equal(ocp_broker_list_finished(b, "", 1, collect, &s), 0);
    assert_int_equal(s.n, 3);
    ocp_broker_close(b);
    b = open_broker(); /* opened again: nothing to do */
    ocp_broker_close(b);
    assert_int_equal(user_version(), 5);

    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                        "AND name IN ('tasks_finished', 'tasks_ready', "
                                        "'tasks_leased')",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 3);
    sqlite3_finalize(q);
    /* tasks_group holds the group alone: a change of state does not touch it */
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT group_concat(name) FROM "
                                        "pragma_index_info('tasks_group')",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "grp");
    sqlite3_finalize(q);
    exec_sql(db, "PRAGMA user_version = 6;");
    sqlite3_close(db);
    char url[512], err[512] = "";
    snprintf(url, sizeof url, "sqlite://%s", db_path);
    assert_int_equal(ocp_broker_open(url, NULL, &b, err, sizeof err), OCP_E_CONFIG);
    if (!strstr(err, "schema version 6 is newer than this ocrpool's (5)"))
        fail_msg("refusal: %s", err);
}

/* ---- the lease owner: a stale node's late word changes nothing ------------------------- */

static const char page_payload[] = "{\"source\":\"/nowhere/page.png\",\"lang\":\"eng\",\"page\":0}";

/* Leases on b for owner the one task there is (of group; NULL on Redis): its id must be id.
 * Returns its deliveries. */
static int lease_as(ocp_broker *b, const char *owner, const char *group, double lease_s,
                    const char *id)
{
    ocp_task t[2];
    int n = 0;
    assert_int_equal(ocp_broker_lease(b, owner, group, 2, lease_s, 5, t, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].id, id);
    int d = t[0].deliveries;
    ocp_task_fini(&t[0]);
    return d;
}

/* id is in state, leased to owner when owner is not NULL. */
static void expect_owner(ocp_broker *b, const char *id, int state, const char *owner)
{
    ocp_task_info i;
    assert_int_equal(ocp_broker_get(b, id, &i), 0);
    if (i.state != state)
        fail_msg("task %s is %s, not %s (error %s)", id, ocp_task_state_name(i.state),
                 ocp_task_state_name(state), i.error ? i.error : "none");
    if (owner && (!i.lease_owner || strcmp(i.lease_owner, owner) != 0))
        fail_msg("task %s is leased to %s, not %s", id, i.lease_owner ? i.lease_owner : "nobody",
                 owner);
    ocp_task_info_fini(&i);
}

/* id is DONE with the result {"by": by}. */
static void expect_done_by(ocp_broker *b, const char *id, const char *by)
{
    ocp_task_info i;
    assert_int_equal(ocp_broker_get(b, id, &i), 0);
    if (i.state != OCP_TASK_DONE)
        fail_msg("task %s is %s, not done (error %s)", id, ocp_task_state_name(i.state),
                 i.error ? i.error : "none");
    json_t *r = json_loads(i.result ? i.result : "", 0, NULL);
    const char *got = json_string_value(json_object_get(r, "by"));
    if (!got || strcmp(got, by) != 0)
        fail_msg("task %s: the result is %s's, not %s's", id, got ? got : "nobody", by);
    json_decref(r);
    ocp_task_info_fini(&i);
}

/*
 * SQLite: two nodes on one file. A's lease runs out (A froze) and B leases the page; A's late
 * release (that would bury it), fail and ack change nothing: B's lease stands. B's ack wins,
 * and A's word after it does not overwrite B's result. A node whose lease ran out with nobody
 * taking its page over still finishes it.
 */
static void test_sqlite_stale_owner(void **state)
{
    (void)state;
    ocp_broker *a = open_broker(), *b = open_broker();
    const char *na = "node-a:1:1", *nb = "node-b:2:2";
    char id[64], id2[64];
    int inserted = 0, buried = 0;
    ocp_task_spec spec = {.group = "g-stale", .payload = page_payload};
    assert_int_equal(ocp_broker_submit(a, &spec, id, &inserted), 0);
    lease_as(a, na, "g-stale", -1, id); /* runs out at once */
    assert_int_equal(lease_as(b, nb, "g-stale", 60, id), 2);
    assert_int_equal(ocp_broker_release(a, id, OCP_FAIL_CRASHED, "worker lost", 0, 1, &buried), 0);
    assert_int_equal(buried, 0);
    expect_owner(b, id, OCP_TASK_LEASED, nb);
    double now = ocp_wall_now();
    assert_int_equal(ocp_broker_fail(a, id, OCP_FAIL_INPUT, "bad page", now, now, 1), 0);
    expect_owner(b, id, OCP_TASK_LEASED, nb);
    json_t *ra = json_pack("{s:s}", "by", "a"), *rb = json_pack("{s:s}", "by", "b");
    assert_int_equal(ocp_broker_ack(a, id, ra, now, now, 1, 1), 0);
    expect_owner(b, id, OCP_TASK_LEASED, nb);
    assert_int_equal(ocp_broker_ack(b, id, rb, now, now, 1, 2), 0);
    expect_done_by(b, id, "b");
    /* After B's result: A's word still changes nothing. */
    assert_int_equal(ocp_broker_ack(a, id, ra, now, now, 1, 1), 0);
    assert_int_equal(ocp_broker_fail(a, id, OCP_FAIL_INPUT, "bad page", now, now, 1), 0);
    assert_int_equal(ocp_broker_release(a, id, OCP_FAIL_CRASHED, "worker lost", 0, 1, &buried), 0);
    expect_done_by(b, id, "b");
    /* B renews nothing of A's, A nothing of B's. */
    assert_int_equal(ocp_broker_submit(a, &spec, id2, &inserted), 0);
    lease_as(a, na, "g-stale", -1, id2);
    assert_int_equal(ocp_broker_ack(a, id2, ra, now, now, 1, 1), 0);
    expect_done_by(a, id2, "a");
    json_decref(ra);
    json_decref(rb);
    ocp_broker_close(a);
    ocp_broker_close(b);
}

/* SQLite: the queue file is created 0600 whatever the umask leaves, and so are its -wal and
 * -shm files (they hold the same tasks and results). */
static void test_sqlite_file_mode(void **state)
{
    (void)state;
    mode_t old = umask(022);
    ocp_broker *b = open_broker();
    char id[64];
    submit_lease(b, "g-mode", id);
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t k = 0; k < 3; k++) {
        char p[300];
        struct stat st;
        snprintf(p, sizeof p, "%s%s", db_path, suffix[k]);
        assert_int_equal(stat(p, &st), 0);
        if ((st.st_mode & 0777) != 0600)
            fail_msg("%s is created %03o, not 600", p, (unsigned)(st.st_mode & 0777));
    }
    ocp_broker_close(b);
    umask(old);
}

/* A plain connection to the Redis under test (its database selected). */
static redisContext *raw_redis(void)
{
    char host[64];
    int port = 0, db = 0;
    if (sscanf(redis_url, "redis://%63[^:]:%d/%d", host, &port, &db) < 2)
        fail_msg("test URL %s", redis_url);
    redisContext *c = redisConnect(host, port);
    assert_true(c && !c->err);
    redisReply *r = redisCommand(c, "SELECT %d", db);
    assert_non_null(r);
    freeReplyObject(r);
    return c;
}

/* The length of a reply to fmt (LLEN, HLEN), or -1 for nil, or the string's length. */
static long long raw_len(redisContext *c, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(c, fmt, arg);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                  : r->type == REDIS_REPLY_STRING ? (long long)r->len
                                                  : -1;
    freeReplyObject(r);
    return v;
}

/*
 * Redis: A takes a page and freezes past the visibility timeout; B's lease restores the
 * message and takes it (it keeps its tag). A's late release (that would bury it), fail, or
 * STARTED and ack after B's result change nothing: no meta of A's, nothing back in the queue,
 * B's result stands.
 */
static void test_redis_stale_owner(void **state)
{
    (void)state;
    redisContext *c = raw_redis();
    ocp_broker_opts o = {
        .queues = "ocrpool-test-stale", .visibility_timeout_s = 1, .track_started = true};
    json_t *ra = json_pack("{s:s}", "by", "a"), *rb = json_pack("{s:s}", "by", "b");
    for (int k = 0; k < 3; k++) {
        ocp_broker *a = open_broker_with(&o), *b = open_broker_with(&o);
        char id[64], meta[128];
        int inserted = 0, buried = 0;
        ocp_task_spec spec = {.payload = page_payload};
        assert_int_equal(ocp_broker_submit(a, &spec, id, &inserted), 0);
        snprintf(meta, sizeof meta, "celery-task-meta-%s", id);
        lease_as(a, "node-a:1:1", NULL, 60, id);
        usleep(1300 * 1000); /* A is frozen past the visibility timeout */
        assert_int_equal(lease_as(b, "node-b:2:2", NULL, 60, id), 2);
        double now = ocp_wall_now();
        if (k == 0)
            assert_int_equal(
                ocp_broker_release(a, id, OCP_FAIL_CRASHED, "worker lost", 0, 1, &buried), 0);
        else if (k == 1)
            assert_int_equal(ocp_broker_fail(a, id, OCP_FAIL_INPUT, "bad page", now, now, 1), 0);
        if (k < 2) {
            assert_int_equal(raw_len(c, "GET %s", meta), -1);
            assert_int_equal(raw_len(c, "LLEN %s", "ocrpool-test-stale"), 0);
            assert_int_equal(raw_len(c, "HLEN %s", "unacked"), 1);
            assert_int_equal(ocp_broker_ack(b, id, rb, now, now, 1, 2), 0);
        } else {
            assert_int_equal(ocp_broker_ack(b, id, rb, now, now, 1, 2), 0);
            assert_int_equal(ocp_broker_started(a, id, 42), 0);
            assert_int_equal(ocp_broker_ack(a, id, ra, now, now, 1, 1), 0);
        }
        expect_done_by(b, id, "b");
        assert_int_equal(raw_len(c, "LLEN %s", "ocrpool-test-stale"), 0);
        assert_int_equal(raw_len(c, "HLEN %s", "unacked"), 0);
        ocp_broker_close(a);
        ocp_broker_close(b);
    }
    json_decref(ra);
    json_decref(rb);
    redisFree(c);
}

/* The one tag in unacked, in tag. */
static void the_tag(redisContext *c, char *tag, size_t len)
{
    redisReply *r = redisCommand(c, "HKEYS unacked");
    assert_true(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    snprintf(tag, len, "%s", r->element[0]->str);
    freeReplyObject(r);
}

/* Forgets every unacknowledged message and what waits in queue. */
static void clear_unacked(redisContext *c, const char *queue)
{
    redisReply *r = redisCommand(c, "DEL unacked unacked_index ocrpool.unacked_owner %s", queue);
    freeReplyObject(r);
}

/*
 * Redis: A takes a page and freezes; kombu's visibility restore (a Python worker's: it
 * leaves ocrpool's owners hash as it was) gives the message back and a Python worker takes it
 * again, under the same tag. A's late ack changes nothing: no meta of A's, the Python
 * worker's unacked record stays.
 */
static void test_redis_python_took_it(void **state)
{
    (void)state;
    redisContext *c = raw_redis();
    ocp_broker_opts o = {.queues = "ocrpool-test-stale"};
    ocp_broker *a = open_broker_with(&o);
    char id[64], meta[128];
    int inserted = 0;
    ocp_task_spec spec = {.payload = page_payload};
    assert_int_equal(ocp_broker_submit(a, &spec, id, &inserted), 0);
    snprintf(meta, sizeof meta, "celery-task-meta-%s", id);
    lease_as(a, "node-a:1:1", NULL, 60, id);
    char tag[256];
    the_tag(c, tag, sizeof tag);
    /* kombu's restore (HDEL, ZREM, LPUSH) and a Python worker's take (RPOP, HSET, ZADD). */
    redisReply *r = redisCommand(c, "HGET unacked %s", tag);
    assert_true(r && r->type == REDIS_REPLY_STRING);
    redisReply *x = redisCommand(c, "HSET unacked %s %b", tag, r->str, r->len);
    freeReplyObject(x);
    freeReplyObject(r);
    r = redisCommand(c, "ZADD unacked_index %f %s", ocp_wall_now() + 0.5, tag);
    freeReplyObject(r);
    json_t *ra = json_pack("{s:s}", "by", "a");
    assert_int_equal(ocp_broker_ack(a, id, ra, 1, 1, 1, 1), 0);
    assert_int_equal(raw_len(c, "GET %s", meta), -1);
    assert_int_equal(raw_len(c, "HLEN %s", "unacked"), 1);
    clear_unacked(c, "ocrpool-test-stale");
    json_decref(ra);
    ocp_broker_close(a);
    redisFree(c);
}

/*
 * Redis: node A of this host dies holding a page. A message it still holds is reclaimed by
 * the next node at once; one that kombu's visibility restore gave back and a Python worker
 * took again, under the same tag (kombu's restore leaves ocrpool's owners hash naming A), is
 * not: it stays the Python worker's, nothing goes back to the queue.
 */
static void test_redis_reclaim_dead(void **state)
{
    (void)state;
    redisContext *c = raw_redis();
    const char *q = "ocrpool-test-reclaim";
    ocp_broker_opts o = {.queues = q};
    char dead[300], tag[256], host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(dead, sizeof dead, "%s:%d:1", host, (int)getpid()); /* started at another time */
    for (int python = 0; python < 2; python++) {
        ocp_broker *a = open_broker_with(&o), *b = open_broker_with(&o);
        char id[64];
        int inserted = 0;
        ocp_task_spec spec = {.payload = page_payload};
        assert_int_equal(ocp_broker_submit(a, &spec, id, &inserted), 0);
        lease_as(a, dead, NULL, 60, id);
        ocp_broker_close(a); /* A is gone */
        the_tag(c, tag, sizeof tag);
        if (python) { /* kombu's restore, then a Python worker's take: a new score */
            redisReply *r = redisCommand(c, "ZADD unacked_index %f %s", ocp_wall_now() + 0.5, tag);
            freeReplyObject(r);
        }
        long n = -1;
        assert_int_equal(ocp_broker_reclaim_dead(b, &n), 0);
        assert_int_equal(n, python ? 0 : 1);
        assert_int_equal(raw_len(c, "LLEN %s", q), python ? 0 : 1);
        assert_int_equal(raw_len(c, "HLEN %s", "unacked"), python ? 1 : 0);
        clear_unacked(c, q);
        ocp_broker_close(b);
    }
    redisFree(c);
}

/*
 * Redis: the answer to A's renewal is lost after the script ran (a timeout, a dropped
 * connection), so Redis has a score A was not told of. A still holds its page: its ack right
 * after, after the next renewal (answered), or after more renewals whose answers are lost
 * too (2, and 5: more than the scores a node keeps), lands, and nothing is left
 * unacknowledged.
 */
static void test_redis_renew_lost(void **state)
{
    (void)state;
    redisContext *c = raw_redis();
    const char *q = "ocrpool-test-renew";
    ocp_broker_opts o = {.queues = q};
    json_t *ra = json_pack("{s:s}", "by", "a");
    static const int lose[4] = {1, 1, 2, 5};
    char tag[256];
    for (int k = 0; k < 4; k++) {
        ocp_broker *a = open_broker_with(&o);
        char id[64], *ids[1] = {id};
        int inserted = 0;
        ocp_task_spec spec = {.payload = page_payload};
        assert_int_equal(ocp_broker_submit(a, &spec, id, &inserted), 0);
        lease_as(a, "node-a:1:1", NULL, 60, id);
        the_tag(c, tag, sizeof tag);
        ocp__rd_lose_renew_replies = lose[k];
        for (int j = 0; j < lose[k]; j++) {
            redisReply *before = redisCommand(c, "ZSCORE unacked_index %s", tag);
            usleep(5 * 1000);
            assert_int_equal(ocp_broker_renew(a, "node-a:1:1", ids, 1, 60), OCP_E_BROKER);
            redisReply *after = redisCommand(c, "ZSCORE unacked_index %s", tag);
            assert_true(before && after && before->str && after->str);
            if (j < 3) /* the script ran: a fresh score */
                assert_string_not_equal(before->str, after->str);
            else /* past the scores a node keeps, the third one again */
                assert_string_equal(before->str, after->str);
            freeReplyObject(before);
            freeReplyObject(after);
        }
        assert_int_equal(ocp__rd_lose_renew_replies, 0);
        if (k == 1)
            assert_int_equal(ocp_broker_renew(a, "node-a:1:1", ids, 1, 60), 0);
        assert_int_equal(ocp_broker_ack(a, id, ra, 1, 1, 1, 1), 0);
        expect_done_by(a, id, "a");
        assert_int_equal(raw_len(c, "HLEN %s", "unacked"), 0);
        assert_int_equal(raw_len(c, "HLEN %s", "ocrpool.unacked_owner"), 0);
        ocp_broker_close(a);
    }
    json_decref(ra);
    redisFree(c);
}

/* LPUSHes a task message of id on queue with an eta (seconds since the epoch). */
static void push_eta(redisContext *c, const char *queue, const char *id, double eta)
{
    json_t *args = NULL, *kwargs = NULL;
    assert_int_equal(ocp_celery_args_from_payload(page_payload, &args, &kwargs), 0);
    ocp_celery_new n = {
        .id = id, .task = "ocrpool.ocr_page", .queue = queue, .args = args, .kwargs = kwargs};
    char *msg = ocp_celery_message(&n);
    json_t *m = json_loads(msg, 0, NULL);
    json_object_set_new(json_object_get(m, "headers"), "eta", json_real(eta));
    char *txt = json_dumps(m, JSON_COMPACT);
    redisReply *r = redisCommand(c, "LPUSH %s %s", queue, txt);
    assert_non_null(r);
    freeReplyObject(r);
    free(txt);
    json_decref(m);
    free(msg);
    json_decref(args);
    json_decref(kwargs);
}

/* How many of ids[0..n) this node holds (get: LEASED); the others are not known to it. */
static int held_here(ocp_broker *b, char ids[][37], int n)
{
    int held = 0;
    for (int k = 0; k < n; k++) {
        ocp_task_info i;
        int rc = ocp_broker_get(b, ids[k], &i);
        if (rc == 0) {
            held += i.state == OCP_TASK_LEASED;
            ocp_task_info_fini(&i);
        } else {
            assert_int_equal(rc, OCP_E_NOPAGE);
        }
    }
    return held;
}

/* Leases until n pages came (each delivered once) or 10 s passed; acknowledges each. */
static void lease_all(ocp_broker *b, int n)
{
    int got = 0;
    double until = ocp_wall_now() + 10;
    json_t *res = json_pack("{s:s}", "by", "eta");
    while (got < n && ocp_wall_now() < until) {
        ocp_task t[4];
        int k = 0;
        assert_int_equal(ocp_broker_lease(b, "node-eta:3:3", NULL, 4, 60, 5, t, &k), 0);
        for (int j = 0; j < k; j++) {
            assert_int_equal(t[j].deliveries, 1);
            assert_int_equal(ocp_broker_ack(b, t[j].id, res, 1, 1, 1, 1), 0);
            ocp_task_fini(&t[j]);
        }
        got += k;
        usleep(100 * 1000);
    }
    json_decref(res);
    assert_int_equal(got, n);
}

/*
 * Redis: messages with a future eta are held in the node up to max_eta_messages (and
 * max_eta_bytes); the others stay in Redis, not in the node's memory, and all run at their
 * eta, each delivered once.
 */
static void test_redis_eta_cap(void **state)
{
    (void)state;
    redisContext *c = raw_redis();
    ocp_broker_opts o = {
        .queues = "ocrpool-test-eta", .visibility_timeout_s = 1, .max_eta_messages = 2};
    ocp_broker *b = open_broker_with(&o);
    char ids[3][37];
    double eta = ocp_wall_now() + 2.5;
    for (int k = 0; k < 3; k++) {
        ocp_uuid4(ids[k]);
        push_eta(c, "ocrpool-test-eta", ids[k], eta);
    }
    ocp_task t[4];
    int n = -1;
    assert_int_equal(ocp_broker_lease(b, "node-eta:3:3", NULL, 4, 60, 5, t, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(held_here(b, ids, 3), 2);
    lease_all(b, 3);
    ocp_broker_close(b);
    /* By size: a cap of one byte holds none. */
    o.max_eta_messages = 0;
    o.max_eta_bytes = 1;
    b = open_broker_with(&o);
    push_eta(c, "ocrpool-test-eta", ids[0], ocp_wall_now() + 1.5);
    assert_int_equal(ocp_broker_lease(b, "node-eta:3:3", NULL, 4, 60, 5, t, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(held_here(b, ids, 1), 0);
    lease_all(b, 1);
    ocp_broker_close(b);
    assert_int_equal(raw_len(c, "HLEN %s", "unacked"), 0);
    redisFree(c);
}

/* ---- a redis-server of this test's own (own_redis.h) ----------------------------------- */

/* Runs a Redis case on this test's own redis-server, or skips it when there is none. */
#define ON_OWN_REDIS(fn)                                                                           \
    static void own_##fn(void **state)                                                             \
    {                                                                                              \
        if (!own_url[0])                                                                           \
            skip();                                                                                \
        redis_url = own_url;                                                                       \
        fn(state);                                                                                 \
    }
ON_OWN_REDIS(test_failure_kinds)
ON_OWN_REDIS(test_result_text)
ON_OWN_REDIS(test_redis_stale_owner)
ON_OWN_REDIS(test_redis_python_took_it)
ON_OWN_REDIS(test_redis_eta_cap)
ON_OWN_REDIS(test_redis_reclaim_dead)
ON_OWN_REDIS(test_redis_renew_lost)

static int off_redis(void **state)
{
    (void)state;
    redis_url = NULL;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "redis") == 0) {
        redis_url = argv[2];
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_failure_kinds),       cmocka_unit_test(test_result_text),
            cmocka_unit_test(test_redis_list_finished), cmocka_unit_test(test_redis_stale_owner),
            cmocka_unit_test(test_redis_eta_cap),       cmocka_unit_test(test_redis_reclaim_dead),
            cmocka_unit_test(test_redis_renew_lost),
        };
        return cmocka_run_group_tests_name("broker on redis", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failure_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_lease_burial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_list_finished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_stale_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_file_mode, setup, teardown),
        cmocka_unit_test_teardown(own_test_failure_kinds, off_redis),
        cmocka_unit_test_teardown(own_test_result_text, off_redis),
        cmocka_unit_test_teardown(own_test_redis_stale_owner, off_redis),
        cmocka_unit_test_teardown(own_test_redis_python_took_it, off_redis),
        cmocka_unit_test_teardown(own_test_redis_eta_cap, off_redis),
        cmocka_unit_test_teardown(own_test_redis_reclaim_dead, off_redis),
        cmocka_unit_test_teardown(own_test_redis_renew_lost, off_redis),
    };
    start_own_redis();
    if (!own_url[0])
        printf("# no redis-server could be started here: the Redis cases are skipped\n");
    int rc = cmocka_run_group_tests_name("broker on sqlite, then on a redis-server of its own",
                                         tests, NULL, NULL);
    stop_own_redis();
    return rc;
}
