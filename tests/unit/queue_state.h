/*
 * queue_state.h: for the unit tests, puts a task of a SQLite queue file (DIR/q.db) in a state
 * as a node would, by its own route (the broker's ack and fail are tested in test_broker).
 */
#ifndef OCP_TESTS_QUEUE_STATE_H
#define OCP_TESTS_QUEUE_STATE_H

#include <sqlite3.h>
#include <stdio.h>

static void set_state(const char *dir, const char *id, int state)
{
    char path[300];
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    snprintf(path, sizeof path, "%s/q.db", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE tasks SET state = ? WHERE id = ?", -1, &q, NULL), SQLITE_OK);
    sqlite3_bind_int(q, 1, state);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

#endif
