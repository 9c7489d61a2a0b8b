/*
 * remote.c: the master's side of Celery's remote control (remote.h): the
 * mailbox's descriptors and timers on the master's loop, the answers to
 * `celery inspect` / `celery control` from the master's own state, the
 * events, the revoked ids, and autoscaling.
 *
 * Nothing here waits on Redis: the mailbox (broker/pidbox.c) is
 * non-blocking, and what it cannot send now it drops. The revoked ids are
 * Celery's LimitedSet: at most OCP__REVOKES_MAX, each forgotten
 * OCP__REVOKE_EXPIRES seconds after it was revoked (Celery's defaults,
 * 50000 and 3 hours), kept in insertion order (a jansson object keeps
 * it), written to --statedb (a JSON file, written to a temporary name,
 * synced and renamed) at most every OCP__STATEDB_PERIOD seconds while it
 * changes, and at the stop: 50000 ids are some 15 MB, and a client that
 * keeps revoking must not make the master write them every second.
 *
 * Autoscaling (Celery's --autoscale MAX,MIN): every second, while pages
 * wait and fewer than MAX workers run, concurrency grows by the pages
 * waiting (up to MAX), but only by workers that --memory-budget can hold
 * beside the pages in flight; after OCP__AUTOSCALE_IDLE seconds without a
 * waiting page and with an idle worker, it shrinks by one, down to MIN.
 */
#include "pool/remote.h"
#include "broker/celery.h"
#include "broker/pidbox.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define OCP__REVOKES_MAX     50000
#define OCP__REVOKE_EXPIRES  10800.0
#define OCP__HEARTBEAT       2.0  /* Celery's worker-heartbeat period (freq) */
#define OCP__AUTOSCALE_IDLE  10.0 /* seconds idle before a worker is let go */
#define OCP__STATEDB_VERSION 1
#define OCP__STATEDB_MAX     (64 << 20)
#define OCP__STATEDB_PERIOD  20.0 /* seconds between two writes of a changing statedb */

static struct remote {
    int on;
    master *m;
    ocp_pidbox *pb;
    ocp_loop_io io[2];
    ocp_loop_timer tick, heartbeat;
    char node[256];
    int task_events;
    long processed;
    json_t *revoked;  /* id -> the time it was revoked, oldest first */
    int dirty;        /* revoked changed since the statedb was written */
    double saved;     /* monotonic: when the statedb was last written (or loaded) */
    double last_busy; /* monotonic: the last tick a page waited or every worker was busy */
} R;

/* ---- the node's name -------------------------------------------------------------------- */

/* Celery's node name forms: %h the host name, %n its first label, %d the rest, %% a '%'. */
static void expand_name(const char *fmt, char *out, size_t len)
{
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    const char *dot = strchr(host, '.');
    size_t o = 0;
    for (const char *p = fmt; *p && o + 1 < len; p++) {
        char piece[256] = "";
        if (*p == '%' && p[1]) {
            p++;
            if (*p == 'h')
                snprintf(piece, sizeof piece, "%s", host);
            else if (*p == 'n')
                snprintf(piece, sizeof piece, "%.*s", dot ? (int)(dot - host) : (int)strlen(host),
                         host);
            else if (*p == 'd')
                snprintf(piece, sizeof piece, "%s", dot ? dot + 1 : "");
            else
                snprintf(piece, sizeof piece, "%c", *p);
        } else {
            piece[0] = *p;
            piece[1] = '\0';
        }
        o += (size_t)snprintf(out + o, len - o, "%s", piece);
        if (o >= len)
            o = len - 1;
    }
    out[o] = '\0';
    if (!strchr(out, '@')) { /* Celery: a name without '@' gets "celery@" */
        char tmp[256];
        snprintf(tmp, sizeof tmp, "celery@%.240s", out);
        snprintf(out, len, "%s", tmp);
    }
}

/* ---- revoked ids ------------------------------------------------------------------------ */

/* Forgets ids revoked longer ago than the expiry, and the oldest beyond the bound. */
static void revoked_purge(void)
{
    double old = ocp_wall_now() - OCP__REVOKE_EXPIRES;
    for (;;) {
        void *it = json_object_iter(R.revoked);
        if (!it)
            break;
        double t = json_number_value(json_object_iter_value(it));
        if (t >= old && json_object_size(R.revoked) <= OCP__REVOKES_MAX)
            break;
        json_object_del(R.revoked, json_object_iter_key(it));
        R.dirty = 1;
    }
}

static void revoke_id(const char *id, double when)
{
    if (!id || !*id || strlen(id) > 255)
        return;
    json_object_del(R.revoked, id); /* again: it moves to the newest */
    json_object_set_new(R.revoked, id, json_real(when));
    R.dirty = 1;
    revoked_purge();
}

int ocp__remote_is_revoked(master *m, const char *id)
{
    (void)m;
    if (!R.on || !json_object_get(R.revoked, id))
        return 0;
    revoked_purge();
    return json_object_get(R.revoked, id) != NULL;
}

static void statedb_load(const char *path)
{
    json_error_t je;
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno != ENOENT)
            OCP_LOG_ERR(OCP_LOG_WARN, -errno, "statedb %s: cannot read", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    json_t *o = size >= 0 && size <= OCP__STATEDB_MAX ? json_loadf(f, 0, &je) : NULL;
    fclose(f);
    json_t *rv = json_object_get(o, "revoked");
    if (json_integer_value(json_object_get(o, "version")) != OCP__STATEDB_VERSION ||
        !json_is_object(rv)) {
        OCP_LOG(OCP_LOG_WARN, "statedb %s: not an ocrpool statedb (version %d): ignored", path,
                OCP__STATEDB_VERSION);
        json_decref(o);
        return;
    }
    const char *id;
    json_t *t;
    json_object_foreach(rv, id, t)
    {
        if (json_is_number(t))
            revoke_id(id, json_number_value(t));
    }
    json_decref(o);
    R.dirty = 0;
    R.saved = ocp_now();
    OCP_LOG(OCP_LOG_INFO, "statedb %s: %zu revoked ids", path, json_object_size(R.revoked));
}

/* Writes the revoked ids when they changed: at once when force (the stop), else at most every
 * OCP__STATEDB_PERIOD seconds. The temporary file is synced before the rename, so a crash
 * leaves the old statedb or the new one, never an empty one. */
static void statedb_save(const char *path, int force)
{
    if (!path || !*path || !R.dirty)
        return;
    if (!force && ocp_now() - R.saved < OCP__STATEDB_PERIOD)
        return;
    R.saved = ocp_now();
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    json_t *o = json_pack("{s:i, s:O}", "version", OCP__STATEDB_VERSION, "revoked", R.revoked);
    FILE *f = fopen(tmp, "we");
    int bad = !f || json_dumpf(o, f, JSON_COMPACT) || fflush(f) || fsync(fileno(f));
    int e = errno;
    if (f && fclose(f) && !bad) {
        bad = 1;
        e = errno;
    }
    if (!bad && rename(tmp, path)) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        OCP_LOG_ERR(OCP_LOG_WARN, -e, "statedb %s: cannot write", path);
        if (f)
            unlink(tmp);
    } else {
        R.dirty = 0;
    }
    json_decref(o);
}

/* ---- what the answers say --------------------------------------------------------------- */

/* Celery's request info of a held page. */
static json_t *request_json(master *m, const held *h, int pid)
{
    json_t *args = NULL, *kwargs = NULL;
    if (!h->t.payload || ocp_celery_args_from_payload(h->t.payload, &args, &kwargs)) {
        args = json_array();
        kwargs = json_object();
    }
    return json_pack(
        "{s:s, s:s, s:o, s:o, s:s, s:s, s:o?, s:b, s:{s:s, s:s, s:i, s:b}, s:o?}", "id", h->t.id,
        "name", m->pc.broker.task_name ? m->pc.broker.task_name : "ocrpool.ocr_page", "args", args,
        "kwargs", kwargs, "type",
        m->pc.broker.task_name ? m->pc.broker.task_name : "ocrpool.ocr_page", "hostname", R.node,
        "time_start", h->state == H_RUNNING ? json_real(h->started_wall) : NULL, "acknowledged",
        h->acked_early, "delivery_info", "exchange", "", "routing_key", "", "priority",
        h->t.priority, "redelivered", h->t.deliveries > 1, "worker_pid",
        pid > 0 ? json_integer(pid) : NULL);
}

static int running_pid(master *m, const held *h)
{
    for (worker *w = m->workers; w; w = w->next)
        for (held *x = w->task; x; x = x->bnext)
            if (x == h)
                return w->pid;
    return 0;
}

static json_t *list_held(master *m, int state)
{
    json_t *a = json_array();
    for (held *h = m->held; h; h = h->next)
        if (h->state == state)
            json_array_append_new(a, request_json(m, h, running_pid(m, h)));
    return a;
}

static int one_scheduled(void *ctx, const char *id, double eta, int priority, const char *payload)
{
    master *m = ((void **)ctx)[0];
    json_t *a = ((void **)ctx)[1];
    held fake;
    memset(&fake, 0, sizeof fake);
    fake.t.id = (char *)id;
    fake.t.payload = (char *)payload;
    fake.t.priority = priority;
    fake.state = H_WAITING;
    char iso[40];
    ocp_iso8601_format(eta, iso);
    json_array_append_new(a, json_pack("{s:s, s:i, s:o}", "eta", iso, "priority", priority,
                                       "request", request_json(m, &fake, 0)));
    return 0;
}

static json_t *scheduled(master *m)
{
    json_t *a = json_array();
    void *ctx[2] = {m, a};
    ocp_broker_scheduled(m->b, one_scheduled, ctx);
    return a;
}

static int count_state(master *m, int state)
{
    int n = 0;
    for (held *h = m->held; h; h = h->next)
        n += h->state == state;
    return n;
}

static json_t *stats(master *m)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    json_t *procs = json_array();
    for (worker *w = m->workers; w; w = w->next)
        if (w->pid > 0)
            json_array_append_new(procs, json_integer(w->pid));
    json_t *own = ocp__build_stats(m); /* each worker's memory, the pages' figures */
    json_t *total = json_object();
    json_object_set_new(total, m->pc.broker.task_name ? m->pc.broker.task_name : "ocrpool.ocr_page",
                        json_integer(R.processed));
    json_t *o = json_pack(
        "{s:o, s:i, s:s, s:I, s:{s:i, s:o, s:s, s:b, s:[f,f], s:i, s:o?, s:o?}, s:{s:s, s:s},"
        " s:i, s:{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I}}",
        "total", total, "pid", (int)getpid(), "clock", "0", "uptime",
        (json_int_t)(ocp_wall_now() - m->started_wall), "pool", "max-concurrency",
        m->pc.concurrency, "processes", procs, "max-tasks-per-child",
        m->pc.max_tasks_per_child > 0 ? "" : "N/A", "put-guarded-by-semaphore", 0, "timeouts",
        m->pc.soft_timeout_s, m->pc.time_limit_s, "memory-budget-mb", (int)m->pc.memory_budget_mb,
        "autoscale-max", m->pc.autoscale_max > 0 ? json_integer(m->pc.autoscale_max) : NULL,
        "autoscale-min", m->pc.autoscale_max > 0 ? json_integer(m->pc.autoscale_min) : NULL,
        "broker", "transport", "redis", "hostname", "", "prefetch_count", ocp__capacity(m),
        "rusage", "utime", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, "stime",
        ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, "maxrss", (json_int_t)ru.ru_maxrss,
        "minflt", (json_int_t)ru.ru_minflt, "majflt", (json_int_t)ru.ru_majflt, "nvcsw",
        (json_int_t)ru.ru_nvcsw, "nivcsw", (json_int_t)ru.ru_nivcsw, "nsignals",
        (json_int_t)ru.ru_nsignals);
    char clk[32], vhost[16];
    snprintf(clk, sizeof clk, "%lld", ocp_pidbox_clock(R.pb));
    json_object_set_new(o, "clock", json_string(clk));
    const char *host;
    int port, db;
    ocp_pidbox_broker(R.pb, &host, &port, &db);
    snprintf(vhost, sizeof vhost, "%d", db);
    json_object_set_new(o, "broker",
                        json_pack("{s:s, s:i, s:s, s:s, s:b}", "hostname", host, "port", port,
                                  "virtual_host", vhost, "transport", "redis", "ssl", 0));
    if (m->pc.max_tasks_per_child > 0)
        json_object_set_new(json_object_get(o, "pool"), "max-tasks-per-child",
                            json_integer(m->pc.max_tasks_per_child));
    /* ocrpool's own figures beside Celery's: each worker's memory (RSS, PSS), the pages. */
    json_object_set_new(o, "ocrpool",
                        json_pack("{s:O, s:O?, s:s}", "workers", json_object_get(own, "workers"),
                                  "pages", json_object_get(own, "pages"), "owner", m->owner));
    json_decref(own);
    return o;
}

static json_t *active_queues(master *m)
{
    const char *names[32];
    int n = 0;
    json_t *a = json_array();
    ocp_broker_queues(m->b, 0, NULL, names, 32, &n);
    for (int i = 0; i < n; i++)
        json_array_append_new(
            a,
            json_pack("{s:s, s:{s:s, s:s, s:n, s:b, s:b, s:b, s:n, s:b}, s:s, s:n, s:n, s:n,"
                      " s:b, s:b, s:b, s:b, s:n, s:[], s:n, s:n, s:n, s:n, s:n, s:n}",
                      "name", names[i], "exchange", "name", names[i], "type", "direct", "arguments",
                      "durable", 1, "passive", 0, "auto_delete", 0, "delivery_mode", "no_declare",
                      0, "routing_key", names[i], "queue_arguments", "binding_arguments",
                      "consumer_arguments", "durable", 1, "exclusive", 0, "auto_delete", 0,
                      "no_ack", 0, "alias", "bindings", "no_declare", "expires", "message_ttl",
                      "max_length", "max_length_bytes", "max_priority"));
    return a;
}

/* Celery's setting names with ocrpool's values. */
static json_t *conf(master *m)
{
    const ocp_pool_conf *pc = &m->pc;
    return json_pack(
        "{s:i, s:i, s:b, s:I, s:i, s:f, s:f, s:b, s:s, s:{s:f}, s:s, s:I}", "worker_concurrency",
        pc->concurrency, "worker_prefetch_multiplier", pc->prefetch_multiplier, "task_acks_late",
        pc->acks_late, "worker_max_memory_per_child", (json_int_t)pc->max_memory_per_child,
        "worker_max_tasks_per_child", pc->max_tasks_per_child, "task_soft_time_limit",
        pc->soft_timeout_s, "task_time_limit", pc->time_limit_s, "task_track_started",
        pc->broker.track_started, "ocrpool_queues",
        pc->broker.queues ? pc->broker.queues : "celery", "broker_transport_options",
        "visibility_timeout", pc->broker.visibility_timeout_s, "ocrpool_engine",
        pc->engine ? pc->engine : "", "ocrpool_memory_budget_mb", (json_int_t)pc->memory_budget_mb);
}

static json_t *report(master *m)
{
    char text[1200];
    snprintf(text, sizeof text,
             "\nsoftware -> ocrpool:%s (a Celery worker for %s)\n"
             "platform -> system:Linux\n"
             "settings -> transport:redis results:redis\n"
             "node     -> %s pid:%d workers:%d engine:%s\n",
             OCP_VERSION, m->pc.broker.task_name ? m->pc.broker.task_name : "ocrpool.ocr_page",
             R.node, (int)getpid(), m->pc.concurrency, m->pc.engine ? m->pc.engine : "");
    return json_pack("{s:s}", "ok", text);
}

static json_t *ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *ok(const char *fmt, ...)
{
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return json_pack("{s:s}", "ok", buf);
}

static json_t *error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *error(const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return json_pack("{s:s}", "error", buf);
}

/* ---- control ---------------------------------------------------------------------------- */

/* Whether the memory budget holds one more worker beside what is in flight: its idle size
 * (the mean of the others') and the smallest waiting page. */
static int budget_allows_one(master *m)
{
    if (m->pc.memory_budget_mb <= 0)
        return 1;
    double budget = (double)m->pc.memory_budget_mb * 1048576.0, base = 0, page = 0;
    int n = 0;
    for (worker *w = m->workers; w; w = w->next, n++)
        base += (double)w->baseline_kb * 1024;
    for (held *h = m->held; h; h = h->next)
        if (h->state == H_WAITING && (page == 0 || h->est_bytes < page))
            page = h->est_bytes;
    return ocp__in_flight_bytes(m) + (n ? base / n : 0) + page <= budget;
}

/* Sets the concurrency; idle workers beyond it go now, busy ones after their page. */
static void set_concurrency(master *m, int n, const char *why)
{
    if (n == m->pc.concurrency)
        return;
    OCP_LOG(OCP_LOG_INFO, "%s: concurrency %d -> %d", why, m->pc.concurrency, n);
    m->pc.concurrency = n;
    R.last_busy = ocp_now(); /* the autoscaler leaves a change alone while it is fresh */
    int live = ocp__live_workers(m, m->gen);
    for (worker *w = m->workers; w && live > n; w = w->next)
        if (w->gen == m->gen && w->state == W_IDLE) {
            ocp__send_exit(m, w);
            live--;
        }
    ocp__lease_soon(m);
}

/* The argument n of pool_grow/pool_shrink: 1 when absent or null, -1 when it is not a whole
 * number (a string or 2.5 is refused, not taken for 1). */
static json_int_t pool_n(json_t *args)
{
    json_t *v = json_object_get(args, "n");
    if (!v || json_is_null(v))
        return 1;
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static json_t *pool_grow(master *m, json_t *args)
{
    json_int_t n = pool_n(args);
    int most = m->pc.autoscale_max > 0 ? m->pc.autoscale_max : OCP_MAX_WORKERS;
    /* Compared as most - concurrency: concurrency + n overflows for a huge n. */
    if (n < 1 || n > most - m->pc.concurrency)
        return error("pool_grow: n must be a whole number, and the pool may hold 1 to %d "
                     "workers (now %d)",
                     most, m->pc.concurrency);
    if (!budget_allows_one(m))
        return error("pool_grow: memory-budget %ld MB holds no more workers",
                     m->pc.memory_budget_mb);
    set_concurrency(m, m->pc.concurrency + (int)n, "pool_grow");
    return ok("pool will grow");
}

static json_t *pool_shrink(master *m, json_t *args)
{
    json_int_t n = pool_n(args);
    int least = m->pc.autoscale_max > 0 ? m->pc.autoscale_min : 1;
    if (n < 1 || n > m->pc.concurrency - least)
        return error("pool_shrink: n must be a whole number, and the pool keeps at least %d "
                     "workers (now %d)",
                     least, m->pc.concurrency);
    set_concurrency(m, m->pc.concurrency - (int)n, "pool_shrink");
    return ok("pool will shrink");
}

static json_t *autoscale(master *m, json_t *args)
{
    json_t *jmax = json_object_get(args, "max"), *jmin = json_object_get(args, "min");
    if (m->pc.autoscale_max <= 0)
        return error("Autoscale not enabled (start the worker with --autoscale MAX,MIN)");
    if (!json_is_integer(jmax) || !json_is_integer(jmin) || json_integer_value(jmin) < 1 ||
        json_integer_value(jmin) > json_integer_value(jmax) ||
        json_integer_value(jmax) > OCP_MAX_WORKERS)
        return error("autoscale: max and min must be whole numbers, 1 <= min <= max <= %d",
                     OCP_MAX_WORKERS);
    m->pc.autoscale_max = (int)json_integer_value(jmax);
    m->pc.autoscale_min = (int)json_integer_value(jmin);
    R.last_busy = ocp_now(); /* as after any change: left alone while it is fresh */
    if (m->pc.concurrency > m->pc.autoscale_max)
        set_concurrency(m, m->pc.autoscale_max, "autoscale");
    else if (m->pc.concurrency < m->pc.autoscale_min)
        set_concurrency(m, m->pc.autoscale_min, "autoscale");
    return ok("autoscale now max=%d min=%d", m->pc.autoscale_max, m->pc.autoscale_min);
}

static json_t *consumer(master *m, json_t *args, int add)
{
    const char *q = json_string_value(json_object_get(args, "queue"));
    const char *names[32];
    int n = 0;
    if (!q)
        return error("%s: no queue named", add ? "add_consumer" : "cancel_consumer");
    if (ocp_broker_queues(m->b, add ? 1 : -1, q, names, 32, &n))
        return error("%s", ocp_broker_errmsg(m->b));
    OCP_LOG(OCP_LOG_INFO, "%s %s: consuming from %d queues",
            add ? "add_consumer" : "cancel_consumer", q, n);
    if (add)
        ocp__lease_soon(m);
    return add ? ok("add consumer %s", q) : ok("no longer consuming from %s", q);
}

/* Stops the worker running id's page (revoke with terminate): the page is stored REVOKED now
 * and taken out of the worker's batch, then the worker is killed and replaced. 1 when found. */
static int terminate(master *m, const char *id)
{
    for (worker *w = m->workers; w; w = w->next) {
        for (held **pp = &w->task; *pp; pp = &(*pp)->bnext) {
            held *h = *pp;
            if (strcmp(h->t.id, id) != 0)
                continue;
            *pp = h->bnext;
            h->bnext = NULL;
            double now = ocp_wall_now();
            OCP_LOG(OCP_LOG_WARN, "page %s revoked with terminate: stopping worker %d", id, w->pid);
            ocp_broker_fail(m->b, id, OCP_FAIL_REVOKED, "terminated", h->started_wall, now, w->pid);
            if (R.task_events)
                ocp_celery_event(R.pb, "task-revoked",
                                 json_pack("{s:s, s:b, s:i, s:b}", "uuid", id, "terminated", 1,
                                           "signum", SIGKILL, "expired", 0));
            ocp__drop_held(m, h);
            w->kill_kind = OCP_FAIL_SHUTDOWN;
            snprintf(w->kill_reason, sizeof w->kill_reason,
                     "worker %d stopped: page %s of its batch was revoked with terminate", w->pid,
                     id);
            w->state = W_EXITING;
            if (w->pid > 0)
                kill(w->pid, SIGKILL);
            return 1;
        }
    }
    return 0;
}

static json_t *do_revoke(master *m, json_t *args)
{
    json_t *ids = json_object_get(args, "task_id"), *one = NULL;
    if (json_is_string(ids))
        ids = one = json_pack("[O]", ids);
    if (!json_is_array(ids) || json_array_size(ids) == 0)
        return error("revoke: task_id must be an id or a list of ids");
    char list[1000] = "", done[1000] = "";
    size_t i, nl = 0, nd = 0;
    json_t *v;
    int term = json_is_true(json_object_get(args, "terminate"));
    json_array_foreach(ids, i, v)
    {
        const char *id = json_string_value(v);
        if (!id || !*id || strlen(id) > 255)
            continue;
        revoke_id(id, ocp_wall_now());
        nl += (size_t)snprintf(list + nl, nl < sizeof list ? sizeof list - nl : 0, "%s%s",
                               nl ? ", " : "", id);
        if (term && terminate(m, id))
            nd += (size_t)snprintf(done + nd, nd < sizeof done ? sizeof done - nd : 0, "%s%s",
                                   nd ? ", " : "", id);
    }
    json_decref(one);
    OCP_LOG(OCP_LOG_INFO, "tasks flagged as revoked: %s", list);
    if (term)
        return nd ? ok("terminate: %s", done) : ok("terminate: tasks unknown");
    return ok("tasks %s flagged as revoked", list);
}

static void heartbeat_event(master *m, const char *type);

static json_t *hello(master *m, json_t *args)
{
    const char *from = json_string_value(json_object_get(args, "from_node"));
    if (!from || strcmp(from, R.node) == 0)
        return NULL;
    json_t *rv = json_object_get(args, "revoked");
    const char *id;
    json_t *t;
    json_object_foreach(rv, id, t)
    {
        if (json_is_number(t))
            revoke_id(id, json_number_value(t));
    }
    revoked_purge();
    OCP_LOG(OCP_LOG_INFO, "sync with %s", from);
    return json_pack("{s:O, s:I}", "revoked", R.revoked, "clock",
                     (json_int_t)ocp_pidbox_clock(R.pb));
}

static json_t *revoked_list(void)
{
    json_t *a = json_array();
    const char *id;
    json_t *t;
    revoked_purge();
    json_object_foreach(R.revoked, id, t) json_array_append_new(a, json_string(id));
    return a;
}

/* The answer to req (new), NULL for null; *no_reply for shutdown (Celery never answers it). */
static json_t *answer(master *m, const ocp_pidbox_req *req, int *no_reply)
{
    const char *c = req->method;
    json_t *a = req->arguments;
    *no_reply = 0;
    if (!strcmp(c, "ping"))
        return ok("pong");
    if (!strcmp(c, "stats"))
        return stats(m);
    if (!strcmp(c, "active"))
        return list_held(m, H_RUNNING);
    if (!strcmp(c, "reserved"))
        return list_held(m, H_WAITING);
    if (!strcmp(c, "scheduled"))
        return scheduled(m);
    if (!strcmp(c, "registered"))
        return json_pack("[s]",
                         m->pc.broker.task_name ? m->pc.broker.task_name : "ocrpool.ocr_page");
    if (!strcmp(c, "active_queues"))
        return active_queues(m);
    if (!strcmp(c, "conf"))
        return conf(m);
    if (!strcmp(c, "report"))
        return report(m);
    if (!strcmp(c, "revoked"))
        return revoked_list();
    if (!strcmp(c, "revoke"))
        return do_revoke(m, a);
    if (!strcmp(c, "pool_grow"))
        return pool_grow(m, a);
    if (!strcmp(c, "pool_shrink"))
        return pool_shrink(m, a);
    if (!strcmp(c, "autoscale"))
        return autoscale(m, a);
    if (!strcmp(c, "add_consumer"))
        return consumer(m, a, 1);
    if (!strcmp(c, "cancel_consumer"))
        return consumer(m, a, 0);
    if (!strcmp(c, "hello"))
        return hello(m, a);
    if (!strcmp(c, "enable_events")) {
        int was = R.task_events;
        R.task_events = 1;
        if (!was)
            OCP_LOG(OCP_LOG_INFO, "task events enabled");
        return ok(was ? "task events already enabled" : "task events enabled");
    }
    if (!strcmp(c, "disable_events")) {
        int was = R.task_events;
        R.task_events = 0;
        if (was)
            OCP_LOG(OCP_LOG_INFO, "task events disabled");
        return ok(was ? "task events disabled" : "task events already disabled");
    }
    if (!strcmp(c, "heartbeat")) {
        heartbeat_event(m, "worker-heartbeat");
        return NULL;
    }
    if (!strcmp(c, "shutdown")) {
        OCP_LOG(OCP_LOG_WARN, "remote control: shutdown (warm)");
        ocp__master_request_stop(0);
        *no_reply = 1;
        return NULL;
    }
    return error("no such control command: %s (ocrpool answers ping, inspect and control "
                 "commands of Celery's worker)",
                 c);
}

/* ---- events ----------------------------------------------------------------------------- */

static void heartbeat_event(master *m, const char *type)
{
    double la[3] = {0, 0, 0};
    getloadavg(la, 3);
    int active = 0;
    for (worker *w = m->workers; w; w = w->next)
        for (held *h = w->task; h; h = h->bnext)
            active++;
    ocp_celery_event(R.pb, type,
                     json_pack("{s:f, s:i, s:I, s:[f,f,f], s:s, s:s, s:s}", "freq", OCP__HEARTBEAT,
                               "active", active, "processed", (json_int_t)R.processed, "loadavg",
                               round(la[0] * 100) / 100, round(la[1] * 100) / 100,
                               round(la[2] * 100) / 100, "sw_ident", "ocrpool", "sw_ver",
                               OCP_VERSION, "sw_sys", "Linux"));
}

static char *payload_args(const held *h, int kw)
{
    json_t *args = NULL, *kwargs = NULL;
    if (!h->t.payload || ocp_celery_args_from_payload(h->t.payload, &args, &kwargs))
        return ocp_xstrdup(kw ? "{}" : "[]");
    char *s = json_dumps(kw ? kwargs : args, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(args);
    json_decref(kwargs);
    return s;
}

void ocp__remote_received(master *m, const held *h)
{
    if (!R.on || !R.task_events)
        return;
    char *args = payload_args(h, 0), *kwargs = payload_args(h, 1);
    ocp_celery_event(
        R.pb, "task-received",
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:n, s:i, s:n, s:n}", "uuid", h->t.id, "name",
                  m->pc.broker.task_name ? m->pc.broker.task_name : "ocrpool.ocr_page", "args",
                  args, "kwargs", kwargs, "root_id", h->t.id, "parent_id", "retries",
                  h->t.deliveries > 1 ? h->t.deliveries - 1 : 0, "eta", "expires"));
    free(args);
    free(kwargs);
}

void ocp__remote_started(master *m, const held *h, int pid)
{
    (void)m;
    if (R.on && R.task_events)
        ocp_celery_event(R.pb, "task-started",
                         json_pack("{s:s, s:i}", "uuid", h->t.id, "pid", pid));
}

/* The length of s's longest prefix of at most max bytes that does not end inside a UTF-8
 * character: a cut mid-character would make the text invalid, and jansson refuses it. */
static int utf8_prefix(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n > max) {
        n = max;
        for (int back = 0; back < 3 && n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80; back++)
            n--;
    }
    return (int)n;
}

json_t *ocp__remote_task_fields(const char *type, const char *id, const char *text, double runtime)
{
    if (!text)
        text = "";
    char buf[1100];
    if (strcmp(type, "task-succeeded") == 0) {
        /* The result's repr, as Celery's (saferepr, bounded): its text, its first 1000 bytes. */
        snprintf(buf, sizeof buf, "{'text': '%.*s'}", utf8_prefix(text, 1000), text);
        return json_pack("{s:s, s:s, s:f}", "uuid", id, "result", buf, "runtime", runtime);
    }
    snprintf(buf, sizeof buf, "%s('%.*s')",
             strcmp(type, "task-retried") == 0 ? "WorkerLostError" : "OCRError",
             utf8_prefix(text, 600), text);
    return json_pack("{s:s, s:s, s:s}", "uuid", id, "exception", buf, "traceback", text);
}

/* Sends a task event, or says why not: an event without its uuid would be worse than none. */
static void task_event(const char *type, const char *id, const char *text, double runtime)
{
    json_t *f = ocp__remote_task_fields(type, id, text, runtime);
    if (!f) {
        OCP_LOG(OCP_LOG_WARN, "task %s: its %s event is not sent (a field is not UTF-8 text)", id,
                type);
        return;
    }
    ocp_celery_event(R.pb, type, f);
}

void ocp__remote_done(master *m, const held *h, int ok_, const char *why, double runtime,
                      json_t *result)
{
    (void)m;
    if (!R.on)
        return;
    if (ok_)
        R.processed++;
    if (!R.task_events)
        return;
    if (ok_)
        task_event("task-succeeded", h->t.id, json_string_value(json_object_get(result, "text")),
                   runtime);
    else
        task_event("task-failed", h->t.id, why ? why : "failed", 0);
}

void ocp__remote_retried(master *m, const held *h, const char *why)
{
    (void)m;
    if (R.on && R.task_events)
        task_event("task-retried", h->t.id, why, 0);
}

void ocp__remote_revoked(master *m, const held *h)
{
    (void)m;
    if (R.on && R.task_events)
        ocp_celery_event(R.pb, "task-revoked",
                         json_pack("{s:s, s:b, s:n, s:b}", "uuid", h->t.id, "terminated", 0,
                                   "signum", "expired", 0));
}

/* ---- the loop --------------------------------------------------------------------------- */

static void on_io(ocp_loop_io *io, short revents);

/* Watches the mailbox's descriptors as they are now (a reconnect changes them). */
static void sync_io(void)
{
    for (int i = 0; i < 2; i++) {
        short ev;
        int fd = ocp_pidbox_fd(R.pb, i, &ev);
        if (fd < 0) {
            ocp_loop_io_stop(R.m->loop, &R.io[i]);
        } else if (R.io[i].slot < 0 || R.io[i].fd != fd) {
            ocp_loop_io_stop(R.m->loop, &R.io[i]);
            ocp_loop_io_start(R.m->loop, &R.io[i], fd, ev, on_io, R.m);
        } else {
            ocp_loop_io_set(&R.io[i], ev);
        }
    }
}

static void serve_requests(master *m)
{
    ocp_pidbox_req req;
    while (ocp_pidbox_next(R.pb, &req)) {
        int no_reply = 0;
        json_t *v = answer(m, &req, &no_reply);
        if (no_reply)
            json_decref(v);
        else
            ocp_pidbox_reply(R.pb, &req, v);
        ocp_pidbox_req_fini(&req);
    }
}

static void on_io(ocp_loop_io *io, short revents)
{
    master *m = io->data;
    ocp_pidbox_io(R.pb, io->fd, revents);
    serve_requests(m);
    sync_io();
}

static void autoscale_tick(master *m)
{
    if (m->pc.autoscale_max <= 0 || m->draining)
        return;
    double now = ocp_now();
    int waiting = count_state(m, H_WAITING), idle = 0;
    for (worker *w = m->workers; w; w = w->next)
        idle += w->state == W_IDLE && w->gen == m->gen;
    if (waiting > 0 || idle == 0)
        R.last_busy = now;
    if (waiting > 0 && m->pc.concurrency < m->pc.autoscale_max && budget_allows_one(m)) {
        int n = m->pc.concurrency + waiting;
        set_concurrency(m, n < m->pc.autoscale_max ? n : m->pc.autoscale_max, "autoscale up");
    } else if (waiting == 0 && idle > 0 && m->pc.concurrency > m->pc.autoscale_min &&
               now - R.last_busy >= OCP__AUTOSCALE_IDLE) {
        set_concurrency(m, m->pc.concurrency - 1, "autoscale down");
        R.last_busy = now;
    }
}

static void tick(ocp_loop_timer *t)
{
    master *m = t->data;
    if (R.on) {
        ocp_pidbox_tick(R.pb);
        serve_requests(m);
        sync_io();
        statedb_save(m->pc.statedb, 0);
    }
    autoscale_tick(m);
    ocp_loop_timer_start(m->loop, t, 1.0, tick, m);
}

static void heartbeat_tick(ocp_loop_timer *t)
{
    master *m = t->data;
    heartbeat_event(m, "worker-heartbeat");
    sync_io();
    ocp_loop_timer_start(m->loop, t, OCP__HEARTBEAT, heartbeat_tick, m);
}

void ocp__remote_start(master *m, const char *url)
{
    char err[600];
    memset(&R, 0, sizeof R);
    R.m = m;
    R.last_busy = ocp_now();
    ocp_loop_io_init(&R.io[0]);
    ocp_loop_io_init(&R.io[1]);
    ocp_loop_timer_init(&R.tick);
    ocp_loop_timer_init(&R.heartbeat);
    /* The tick runs on any broker: autoscaling is not Redis's. */
    ocp_loop_timer_start(m->loop, &R.tick, 0.2, tick, m);
    if (strncmp(url, "redis://", 8) != 0)
        return;
    R.revoked = json_object();
    expand_name(m->pc.node_name && *m->pc.node_name ? m->pc.node_name : "celery@%h", R.node,
                sizeof R.node);
    if (ocp_pidbox_open(url, R.node, &R.pb, err, sizeof err)) {
        OCP_LOG(OCP_LOG_WARN, "remote control: %s (celery inspect/control will not see this node)",
                err);
        json_decref(R.revoked);
        R.revoked = NULL;
        return;
    }
    R.on = 1;
    R.task_events = m->pc.events;
    if (m->pc.statedb && *m->pc.statedb)
        statedb_load(m->pc.statedb);
    sync_io();
    heartbeat_event(m, "worker-online"); /* Celery's carries the heartbeat's fields */
    heartbeat_event(m, "worker-heartbeat");
    ocp_loop_timer_start(m->loop, &R.heartbeat, OCP__HEARTBEAT, heartbeat_tick, m);
    OCP_LOG(OCP_LOG_INFO, "celery node %s: remote control on, task events %s%s", R.node,
            R.task_events ? "on" : "off (-E or enable_events)",
            m->pc.autoscale_max > 0 ? ", autoscale" : "");
}

void ocp__remote_stop(master *m)
{
    if (R.m != m) /* not started (the node stopped before it was up) */
        return;
    ocp_loop_timer_stop(m->loop, &R.tick);
    R.m = NULL;
    if (!R.on)
        return;
    ocp_loop_timer_stop(m->loop, &R.heartbeat);
    ocp_loop_io_stop(m->loop, &R.io[0]);
    ocp_loop_io_stop(m->loop, &R.io[1]);
    heartbeat_event(m, "worker-offline");
    ocp_pidbox_close(R.pb, 1.0); /* worker-offline gets a second to leave */
    R.pb = NULL;
    statedb_save(m->pc.statedb, 1);
    json_decref(R.revoked);
    R.revoked = NULL;
    R.on = 0;
}
