/*
 * redis_int.h: what the files of the Redis backend share (not a public
 * header: only src/broker/broker_redis.c and its redis_*.c siblings include
 * it). The backend is one table, ocp_broker_redis (broker_redis.c), over:
 *
 *   redis_conn.c   the connection (hiredis, with timeouts and backoff), the
 *                  commands, the outbox of writes that wait for Redis, URLs
 *   redis_take.c   taking messages from the queues, holding them while their
 *                  pages run, renewing, restoring and acknowledging them
 *   redis_meta.c   results and task metas: started, ack, fail, release (and
 *                  burial), and reading a meta back as an ocp_task_info
 *   broker_redis.c open, close, submit, queries and maintenance, the table
 *
 * The key layout is described at the top of broker_redis.c.
 */
#ifndef OCP_BROKER_REDIS_INT_H
#define OCP_BROKER_REDIS_INT_H

#include "broker/broker.h"

#include <hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#define K_UNACKED   "unacked"
#define K_INDEX     "unacked_index"
#define K_MUTEX     "unacked_mutex"
#define K_OWNERS    "ocrpool.unacked_owner"
#define K_DEAD      "ocrpool.deadletter"
#define META_PREFIX "celery-task-meta-"
#define MAX_QUEUES  16
#define MAX_TRIED   3

/*
 * Every script that acknowledges or restores a tag takes the same first three keys,
 * unacked, unacked_index and the owners hash, and forgets the tag (ARGV[1]) in all three
 * with this snippet, so no path can leave one of them behind.
 */
#define LUA_FORGET                                                                                 \
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"                                                       \
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"                                                       \
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"

/*
 * The owner check of the scripts that change a leased message (acknowledge, store a result,
 * restore, STARTED, renew): a Lua function not_owned(tag, claim), nil when claim still holds
 * tag, else why not. A claim (ocp__rd_claim) is "owner\tscore" (the unacked_index score this
 * owner last wrote for the tag), followed by "\ttried" for each renewal whose answer was lost
 * since (Redis may hold its score instead, rmsg.tried), or the owners hash's own value (a dead
 * node's, reclaim_dead). Every script that writes a score for its owner also writes
 * "owner\tscore" in the owners hash (KEYS[3]), so a tag is the claimant's when it is still in
 * unacked (KEYS[1]), the owners hash names the claimant with the score unacked_index (KEYS[2])
 * has now (a message keeps its tag when it is restored, and a Python consumer that takes it
 * again writes a new score but leaves our owners hash as it was), and that score is one the
 * claim names. An owners value without a score (written before scores were stored) proves
 * nothing to a claim without one.
 */
#define LUA_NOT_OWNED                                                                              \
    "local function not_owned(tag, claim)\n"                                                       \
    "  local f = {}\n"                                                                             \
    "  for p in string.gmatch(claim, '[^\\t]+') do f[#f + 1] = p end\n"                            \
    "  if redis.call('HEXISTS', KEYS[1], tag) == 0 then\n"                                         \
    "    return 'its message is not unacknowledged any more (given back to its queue, or "         \
    "finished)'\n"                                                                                 \
    "  end\n"                                                                                      \
    "  local o = redis.call('HGET', KEYS[3], tag) or ''\n"                                         \
    "  local t = string.find(o, '\\t', 1, true)\n"                                                 \
    "  local who, sc = o, nil\n"                                                                   \
    "  if t then who = string.sub(o, 1, t - 1); sc = tonumber(string.sub(o, t + 1)) end\n"         \
    "  if who ~= f[1] then\n"                                                                      \
    "    if who == '' then who = 'another consumer' end\n"                                         \
    "    return 'its message is held by ' .. who .. ' now'\n"                                      \
    "  end\n"                                                                                      \
    "  local z = tonumber(redis.call('ZSCORE', KEYS[2], tag) or '')\n"                             \
    "  local ok = z ~= nil and (sc == z or (sc == nil and #f > 1))\n"                              \
    "  if ok and #f > 1 then\n"                                                                    \
    "    ok = false\n"                                                                             \
    "    for i = 2, #f do if tonumber(f[i]) == z then ok = true end end\n"                         \
    "  end\n"                                                                                      \
    "  if not ok then\n"                                                                           \
    "    return 'its message was given back to its queue and taken again by another consumer, or " \
    "waits in Redis for its eta'\n"                                                                \
    "  end\n"                                                                                      \
    "  return nil\n"                                                                               \
    "end\n"

/*
 * LUA_NOT_OWNED for tag ARGV[T] and claim ARGV[O] ("" = no check): when the claim does not
 * hold the tag, the script changes nothing and answers the status "STALE <ARGV[L]> ignored:
 * <why>", which ocp__rd_stale() logs: the lease ran out and the visibility restore gave the
 * message back (it waits in its queue, or another consumer took it), or it was finished.
 */
/* clang-format off */
#define LUA_OWNED(T, O, L)                                                                         \
    "if ARGV[" O "] ~= '' then\n"                                                                  \
    LUA_NOT_OWNED                                                                                  \
    "  local why = not_owned(ARGV[" T "], ARGV[" O "])\n"                                          \
    "  if why then return {ok = 'STALE ' .. ARGV[" L "] .. ' ignored: ' .. why} end\n"             \
    "end\n"
/* The start of the scripts that store a result (finish_lua, canvas_lua): the owner check when
 * a tag is given (KEYS[1], ARGV[4], ARGV[5]), then `final`: whether KEYS[4] already holds a
 * final state (SUCCESS, FAILURE, REVOKED), which a late store must not overwrite. */
#define LUA_STORE_PRELUDE                                                                          \
    "if ARGV[1] ~= '' then\n"                                                                      \
    LUA_OWNED("1", "4", "5")                                                                       \
    "end\n"                                                                                        \
    "local stored = 0\n"                                                                           \
    "local old = redis.call('GET', KEYS[4])\n"                                                     \
    "local final = false\n"                                                                        \
    "if old then\n"                                                                                \
    "  local ok, v = pcall(cjson.decode, old)\n"                                                   \
    "  if ok and type(v) == 'table' and (v.status == 'SUCCESS' or v.status == 'FAILURE' or "       \
    "v.status == 'REVOKED') then final = true end\n"                                               \
    "end\n"
/* The whole store (finish_lua, canvas_lua): LUA_STORE_PRELUDE, then the meta set (ARGV[2], for
 * ARGV[3] s; <= 0 = no expiry) and published unless a final state is there (`stored` says
 * whether it was), the tag forgotten, the deliveries' count (KEYS[5]) deleted. `ex` stays
 * defined for what follows. */
#define LUA_STORE_META                                                                             \
    LUA_STORE_PRELUDE                                                                              \
    "local ex = tonumber(ARGV[3])\n"                                                               \
    "if not final then\n"                                                                          \
    "  if ex > 0 then redis.call('SETEX', KEYS[4], ex, ARGV[2]) else redis.call('SET', KEYS[4], "  \
    "ARGV[2]) end\n"                                                                               \
    "  redis.call('PUBLISH', KEYS[4], ARGV[2])\n"                                                  \
    "  stored = 1\n"                                                                               \
    "end\n"                                                                                        \
    "if ARGV[1] ~= '' then\n"                                                                      \
    LUA_FORGET                                                                                     \
    "end\n"                                                                                        \
    "redis.call('DEL', KEYS[5])\n"
/* clang-format on */

/* A message this node took from a queue (strings owned). */
typedef struct rmsg {
    char *id, *tag, *raw, *queue, *group;
    char *owner;    /* who took it: every change to it names this owner (LUA_OWNED) */
    char score[32]; /* the unacked_index score this node last wrote for it */
    /* The scores of renewals whose answers were lost since the last answered one: Redis holds
     * score or one of these, and all are claimed until a renewal is answered. */
    char tried[MAX_TRIED][32];
    int n_tried;
    int priority;
    double eta;   /* > 0: waits in the node until then, as wait (counted in eta_n, eta_bytes) */
    size_t bytes; /* what it costs the node while it waits for its eta */
    ocp_task wait;
    bool early_acked;
    bool lost; /* a renewal found it held by another owner: whatever this node says of it
                * is ignored */
    struct rmsg *next;
} rmsg;

/* A write that waits for the connection to come back (strings owned). */
typedef struct pending {
    int argc;
    char **argv;
    size_t *lens;
    struct pending *next;
} pending;

/* The backend's state. */
typedef struct rs {
    /* redis_conn.c */
    char host[256], *user, *password;
    int port, db;
    redisContext *c;
    double next_try, backoff;
    bool was_up;
    char err[700];
    pending *outbox, **tail;
    int n_outbox;
    /* Writes sent (or in hiredis's output buffer) whose answers are not read yet: inside a
     * batch (ocp__rd_batch) a must-write goes out with what follows it, and its answer is
     * read with the next command's, one round trip for both. Kept (copies) until answered,
     * so that a connection lost before then puts them back in the outbox. */
    pending *sent, **sent_tail;
    int n_sent;
    bool batch;
    /* What this connection cost: commands sent, and waits for answers (a pipelined run of
     * commands is one), said at disconnect. */
    unsigned long n_req, n_rtt;
    /* the settings (broker_redis.c) */
    char *queues[MAX_QUEUES];
    int nq;
    char *task_name, *lang;
    double vis, expires;
    bool track_started;
    size_t max_msg, max_inline;
    size_t max_eta_n, max_eta_bytes; /* the most messages (bytes) held for their eta */
    /* redis_take.c */
    double last_restore, last_renew;
    /* Renewals in a row whose answers were lost, and the score the last of them tried: past
     * MAX_TRIED, the next renewals write that score again instead of a fresh one, so that
     * the scores a held tag may have stay known and few. */
    int lost_renews;
    char retry[32];
    rmsg *held;
    size_t eta_n, eta_bytes; /* held messages that wait for their eta */
} rs;

/* ---- redis_conn.c ---- */
void ocp__rd_set_err(rs *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Connects when not connected (at most as often as the backoff allows), then writes what
 * waits in the outbox. 0, or OCP_E_BROKER with the reason in s->err. */
int ocp__rd_conn(rs *s);
/* A command on a live connection: a new reply (freeReplyObject), or NULL (with the reason in
 * s->err) when there is no connection. An error reply is returned too, its text in s->err. */
redisReply *ocp__rd_cmdv(rs *s, int argc, const char **argv, const size_t *lens);
redisReply *ocp__rd_cmd(rs *s, const char *fmt, ...);
/* A write that must happen: now when Redis is there (and nothing waits before it), else
 * later, in order, after reconnecting (argv copied). 0 either way, or OCP_E_BROKER when Redis
 * answered with an error. */
int ocp__rd_must_write(rs *s, int argc, const char **argv, const size_t *lens);
/* broker.h's batch: begin makes the must-writes that follow (results, acknowledgements,
 * restores) go out with the next command, or at end, which sends them without waiting for
 * their answers (read with the next command's: errors and STALE answers are said then). */
int ocp__rd_batch(void *st, int begin);
/* A write whose answer is only said (STALE, an error), never waited for: sent now (inside a
 * batch: with the next command), its answer read with the next command's. Dropped when
 * there is no connection (OCP_E_BROKER); put in the outbox if the connection is lost before
 * it is answered. */
int ocp__rd_send(rs *s, int argc, const char **argv, const size_t *lens);
/* Fills host, port, db, user and password from what follows "redis://". */
int ocp__rd_parse_url(rs *s, const char *target, char *err, size_t errlen);
/* Writes what still waits (once more), says what could not be, and disconnects. */
void ocp__rd_disconnect(rs *s);
/* Whether r is a script's "STALE ..." answer (LUA_OWNED); when it is, says it (a warning). */
bool ocp__rd_stale(const redisReply *r);

/* ---- redis_take.c ---- */
rmsg *ocp__rd_find_held(rs *s, const char *id);
/* The claim of held message m that LUA_OWNED checks: "owner\tscore", then "\ttried" for each
 * renewal whose answer was lost (rmsg.tried), in buf. */
const char *ocp__rd_claim(const rmsg *m, char *buf, size_t len);
/* Takes m out of the held list and frees it. */
void ocp__rd_drop_held(rs *s, rmsg *m);
/* Puts back the messages that wait for their eta and frees every held one (close). */
void ocp__rd_drop_all_held(rs *s);
/* Puts held message m back at the head of its list, through the outbox, if it is still
 * m->owner's; uncount: gives back the delivery it counted. */
int ocp__rd_restore(rs *s, const rmsg *m, bool uncount);
/* Restores tag from its unacked record (claim: only if it still holds the tag, LUA_NOT_OWNED;
 * "" = any holder); 1 when a message went back. */
int ocp__rd_restore_tag(rs *s, const char *tag, const char *ceiling, const char *claim);
int ocp__rd_lease(void *st, const char *owner, const char *group, int max, double lease_s,
                  int max_deliveries, ocp_task *out, int *n);
int ocp__rd_renew(void *st, const char *owner, char *const *ids, int n, double lease_s);
/* For tests (test_broker): how many of the next renewals lose their answer after the script
 * ran, as a timeout or a dropped connection would. 0 otherwise. */
extern int ocp__rd_lose_renew_replies;
int ocp__rd_ack_early(void *st, const char *owner, const char *id);

/* ---- redis_meta.c ---- */
/* Stores meta (borrowed) for id, once, publishes it, and acknowledges tag (NULL: none), if
 * claim (ocp__rd_claim; NULL: no check) still holds tag; what says what it is ("ack") when it
 * does not. */
int ocp__rd_finish(rs *s, const char *id, const char *meta, const char *tag, const char *claim,
                   const char *what);
/* A FAILURE meta of kind with Celery's exception type and module. New string. */
char *ocp__rd_fail_meta(const char *id, const char *group, ocp_failure kind, const char *type,
                        const char *module, const char *message);
/* Fills i from the meta text (len bytes) of id (NULL: Redis has none); OCP_E_NOPAGE when
 * there is none and this node does not hold the task either (Celery's PENDING). */
int ocp__rd_info(rs *s, const char *id, const char *text, size_t len, ocp_task_info *i);
int ocp__rd_started(void *st, const char *owner, const char *id, int worker_pid);
int ocp__rd_ack(void *st, const char *owner, const char *id, json_t *result, double started,
                double finished, long peak_rss_kb, int worker_pid);
int ocp__rd_fail(void *st, const char *owner, const char *id, ocp_failure kind, const char *reason,
                 double started, double finished, int worker_pid);
int ocp__rd_release(void *st, const char *owner, const char *id, ocp_failure kind,
                    const char *reason, int uncount, int max_deliveries, int *buried);

/* ---- redis_canvas.c ---- */
/* Stores meta for held m as ocp__rd_finish does and, only when this stored it, sets off what
 * m's message asks for after it ends in state with value (borrowed): its chain's next task,
 * its links, its chord part (and the chord's body once complete). Returns 1 with *rc when
 * it did (m's message has a canvas), 0 when the caller stores the meta itself. */
int ocp__rd_canvas_finish(rs *s, const rmsg *m, const char *meta, const char *tag,
                          const char *claim, const char *what, const char *state, json_t *value,
                          int *rc);

/* ---- broker_redis.c ---- */
/* How long a group's list of ids lives: as long as its results. */
double ocp__rd_group_ttl(const rs *s);

#endif
