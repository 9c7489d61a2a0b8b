/*
 * test_broker.c: the broker interface (src/broker/broker.h) on a real
 * backend: a failure's kind is stored and read back (get and list) with the
 * task's state, a burial keeps the kind of the failure that buried it, a
 * result comes back as the text that was stored, a group's tasks finished
 * since a time come in order of finished time (SQLite; Redis refuses), and
 * the SQLite file's schema is migrated from version 1 (a newer file is
 * refused).
 *
 *   test_broker                 the SQLite backend, on temporary files
 *   test_broker redis URL       the same round trips on a real Redis
 *                               (tests/integration/test_redis.sh starts
 *                               one); prints "# kind ID" for each failed task
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "core/error.h"
#include "core/failure.h"
#include "core/util.h"

static const char *redis_url; /* NULL: SQLite */
static char db_path[256];

static ocp_broker *open_broker(void)
{
    char url[512], err[512] = "";
    ocp_broker *b = NULL;
    ocp_broker_opts o = {.queues = "ocrpool-test-kinds"};
    if (redis_url)
        snprintf(url, sizeof url, "%s", redis_url);
    else
        snprintf(url, sizeof url, "sqlite://%s", db_path);
    if (ocp_broker_open(url, &o, &b, err, sizeof err))
        fail_msg("open %s: %s", url, err);
    return b;
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

/* A version 1 file (as ocrpool 0.1 wrote it) is brought up to version 3: its failed and
 * buried tasks get the kinds they stand for (2), an index on group and finished time and
 * finished rows without a finished time their start or creation time (3); a newer file is
 * refused. */
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
    assert_int_equal(user_version(), 3);
    expect(b, "old-failed", OCP_TASK_FAILED, OCP_FAIL_ENGINE, "bad page");
    expect(b, "old-buried", OCP_TASK_BURIED, OCP_FAIL_CRASHED, "lost");
    expect(b, "old-done", OCP_TASK_DONE, OCP_FAIL_NONE, NULL);
    seen s = {0};
    assert_int_equal(ocp_broker_list_finished(b, "", 1, collect, &s), 0);
    assert_int_equal(s.n, 3);
    ocp_broker_close(b);
    b = open_broker(); /* opened again: nothing to do */
    ocp_broker_close(b);
    assert_int_equal(user_version(), 3);

    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                        "AND name = 'tasks_finished'",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    exec_sql(db, "PRAGMA user_version = 4;");
    sqlite3_close(db);
    char url[512], err[512] = "";
    snprintf(url, sizeof url, "sqlite://%s", db_path);
    assert_int_equal(ocp_broker_open(url, NULL, &b, err, sizeof err), OCP_E_CONFIG);
    if (!strstr(err, "schema version 4 is newer than this ocrpool's (3)"))
        fail_msg("refusal: %s", err);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "redis") == 0) {
        redis_url = argv[2];
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_failure_kinds),
            cmocka_unit_test(test_result_text),
            cmocka_unit_test(test_redis_list_finished),
        };
        return cmocka_run_group_tests_name("broker on redis", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failure_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_lease_burial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_list_finished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_migration, setup, teardown),
    };
    return cmocka_run_group_tests_name("broker on sqlite", tests, NULL, NULL);
}
