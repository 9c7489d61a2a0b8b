/*
 * broker.c: the broker wrapper: URL -> backend, task ids, owner names
 * (broker.h).
 */
#include "broker/broker.h"
#include "core/error.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

struct ocp_broker {
    const ocp_broker_ops *ops;
    void *st;
    char *owner; /* whom this handle last leased for: ack, fail and release act for it */
};

static const ocp_broker_ops *const backends[] = {&ocp_broker_sqlite, &ocp_broker_redis};

double ocp_wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void ocp_task_fini(ocp_task *t)
{
    free(t->id);
    free(t->group);
    free(t->payload);
    memset(t, 0, sizeof *t);
}

void ocp_task_info_fini(ocp_task_info *i)
{
    free(i->id);
    free(i->group);
    free(i->payload);
    free(i->result);
    free(i->error);
    free(i->lease_owner);
    memset(i, 0, sizeof *i);
}

const char *ocp_task_failure_name(const ocp_task_info *i)
{
    return i->state == OCP_TASK_FAILED || i->state == OCP_TASK_BURIED ? ocp_failure_name(i->failure)
                                                                      : NULL;
}

const char *ocp_task_state_name(int state)
{
    static const char *const names[] = {"ready", "leased", "done", "failed", "buried"};
    return state >= 0 && state <= 4 ? names[state] : "unknown";
}

int ocp_broker_open(const char *url, const ocp_broker_opts *opts, ocp_broker **out, char *err,
                    size_t errlen)
{
    char shown[512];
    const ocp_broker_ops *ops = NULL;
    const char *target = url;
    if (strncmp(url, "rediss://", 9) == 0)
        return ocp_errf(OCP_E_CONFIG, err, errlen,
                        "broker '%s': TLS (rediss://) is not supported: Debian 12's hiredis "
                        "(0.14) has no TLS; reach Redis over a private network or a tunnel",
                        ocp_url_shown(url, shown, sizeof shown));
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        size_t n = strlen(backends[i]->scheme);
        if (strncmp(url, backends[i]->scheme, n) == 0 && strncmp(url + n, "://", 3) == 0) {
            ops = backends[i];
            target = url + n + 3;
        }
    }
    if (!ops) {
        if (strstr(url, "://"))
            return ocp_errf(OCP_E_CONFIG, err, errlen,
                            "broker '%s': unknown scheme (sqlite:///path/to/queue.db or "
                            "redis://host:6379/0)",
                            ocp_url_shown(url, shown, sizeof shown));
        ops = &ocp_broker_sqlite; /* a plain path */
    }
    void *st = NULL;
    static const ocp_broker_opts none;
    int rc = ops->open(target, opts ? opts : &none, &st, err, errlen);
    if (rc)
        return rc;
    ocp_broker *b = ocp_xcalloc(1, sizeof *b);
    b->ops = ops;
    b->st = st;
    *out = b;
    return 0;
}

void ocp_broker_close(ocp_broker *b)
{
    if (!b)
        return;
    b->ops->close(b->st);
    free(b->owner);
    free(b);
}

const char *ocp_broker_errmsg(const ocp_broker *b)
{
    return b->ops->errmsg(b->st);
}

int ocp_broker_submit(ocp_broker *b, const ocp_task_spec *spec, char id_out[64], int *inserted)
{
    char uuid[37];
    const char *id = spec->id;
    if (!id) {
        ocp_uuid4(uuid);
        id = uuid;
    }
    snprintf(id_out, 64, "%s", id);
    return b->ops->submit(b->st, spec, id, inserted);
}

int ocp_broker_batch_begin(ocp_broker *b)
{
    return b->ops->batch ? b->ops->batch(b->st, 1) : 0;
}

int ocp_broker_batch_end(ocp_broker *b)
{
    return b->ops->batch ? b->ops->batch(b->st, 0) : 0;
}

/* Remembers owner as the one this handle acts for (a node has one name all its life). */
static void set_owner(ocp_broker *b, const char *owner)
{
    if (owner && (!b->owner || strcmp(b->owner, owner) != 0)) {
        free(b->owner);
        b->owner = ocp_xstrdup(owner);
    }
}

int ocp_broker_lease(ocp_broker *b, const char *owner, const char *group, int max, double lease_s,
                     int max_deliveries, ocp_task *out, int *n)
{
    set_owner(b, owner);
    return b->ops->lease(b->st, owner, group, max, lease_s, max_deliveries, out, n);
}

int ocp_broker_renew(ocp_broker *b, const char *owner, char *const *ids, int n, double lease_s)
{
    set_owner(b, owner);
    return n ? b->ops->renew(b->st, owner, ids, n, lease_s) : 0;
}

int ocp_broker_started(ocp_broker *b, const char *id, int worker_pid)
{
    return b->ops->started ? b->ops->started(b->st, b->owner, id, worker_pid) : 0;
}

int ocp_broker_ack_early(ocp_broker *b, const char *owner, const char *id)
{
    set_owner(b, owner);
    return b->ops->ack_early(b->st, owner, id);
}

int ocp_broker_ack(ocp_broker *b, const char *id, json_t *result, double started, double finished,
                   long peak_rss_kb, int worker_pid)
{
    return b->ops->ack(b->st, b->owner, id, result, started, finished, peak_rss_kb, worker_pid);
}

int ocp_broker_fail(ocp_broker *b, const char *id, ocp_failure kind, const char *reason,
                    double started, double finished, int worker_pid)
{
    return b->ops->fail(b->st, b->owner, id, kind, reason, started, finished, worker_pid);
}

int ocp_broker_release(ocp_broker *b, const char *id, ocp_failure kind, const char *reason,
                       int uncount, int max_deliveries, int *buried)
{
    return b->ops->release(b->st, b->owner, id, kind, reason, uncount, max_deliveries, buried);
}

int ocp_broker_counts(ocp_broker *b, const char *group, ocp_counts *c)
{
    return b->ops->counts(b->st, group, c);
}

int ocp_broker_list(ocp_broker *b, const char *group, int want_result,
                    int (*fn)(void *ctx, const ocp_task_info *i), void *ctx)
{
    return b->ops->list(b->st, group, want_result, fn, ctx);
}

int ocp_broker_list_finished(ocp_broker *b, const char *group, double since,
                             int (*fn)(void *ctx, const ocp_task_info *i), void *ctx)
{
    if (!b->ops->list_finished || !group)
        return OCP_E_UNSUPPORTED;
    return b->ops->list_finished(b->st, group, since, fn, ctx);
}

int ocp_broker_get(ocp_broker *b, const char *id, ocp_task_info *info)
{
    return b->ops->get(b->st, id, info);
}

int ocp_broker_requeue(ocp_broker *b, const char *group, unsigned states_mask, long *n)
{
    return b->ops->requeue(b->st, group, states_mask, n);
}

int ocp_broker_expire(ocp_broker *b, double older_than, long *n)
{
    return b->ops->expire(b->st, older_than, n);
}

int ocp_broker_reclaim_dead(ocp_broker *b, long *n)
{
    return b->ops->reclaim_dead(b->st, n);
}

int ocp_broker_queues(ocp_broker *b, int op, const char *queue, const char **names, int max, int *n)
{
    *n = 0;
    return b->ops->queues ? b->ops->queues(b->st, op, queue, names, max, n) : OCP_E_UNSUPPORTED;
}

int ocp_broker_scheduled(ocp_broker *b,
                         int (*fn)(void *ctx, const char *id, double eta, int priority,
                                   const char *payload),
                         void *ctx)
{
    return b->ops->scheduled ? b->ops->scheduled(b->st, fn, ctx) : OCP_E_UNSUPPORTED;
}

/* The start time of pid in clock ticks since boot (field 22 of /proc/PID/stat), or 0. */
static unsigned long long start_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long long v = 0;
    /* After ") " come fields 3.. ; starttime is field 22. */
    int field = 2;
    for (char *s = p + 1; *s && field < 22; s++) {
        if (*s == ' ') {
            field++;
            if (field == 22)
                v = strtoull(s + 1, NULL, 10);
        }
    }
    return v;
}

void ocp_broker_owner_name(char *buf, size_t len)
{
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(buf, len, "%s:%d:%llu", host, (int)getpid(), start_ticks(getpid()));
}

/* Used by backends: is owner ("host:pid:start") a process of this host that is gone? */
int ocp__owner_is_dead(const char *owner)
{
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    size_t hl = strlen(host);
    if (strncmp(owner, host, hl) != 0 || owner[hl] != ':')
        return 0;
    char *end;
    long pid = strtol(owner + hl + 1, &end, 10);
    if (*end != ':' || pid <= 0)
        return 0;
    unsigned long long start = strtoull(end + 1, NULL, 10);
    unsigned long long now_start = start_ticks((pid_t)pid);
    /* Gone, or the pid was reused by a process started at another time. */
    return now_start == 0 || now_start != start;
}
