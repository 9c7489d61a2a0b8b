/*
 * watchdog.c: the master's watch over busy workers (master_int.h): a
 * timer every 50 ms, while a worker is busy, samples each busy worker's RSS against
 * hard-memory-limit and its batch's age against the time limits, and
 * kills a worker over either. The kill's failure kind and reason stay on
 * the worker until the zygote reports its end (proc.c), which sends its
 * pages back to the queue or buries them.
 */
#include "core/log.h"
#include "core/memstat.h"
#include "core/util.h"
#include "pool/master_int.h"

#include <signal.h>
#include <stdio.h>

static void kill_worker(worker *w, ocp_failure kind)
{
    w->kill_kind = kind;
    kill(w->pid, SIGKILL);
}

/* Hard memory limit: 1 when w was killed for it. */
static int check_memory(master *m, worker *w)
{
    if (m->pc.hard_memory_limit_mb <= 0)
        return 0;
    long rss = ocp_memstat_rss(w->pid);
    if (rss > w->sampled_peak_kb)
        w->sampled_peak_kb = rss;
    if (rss <= m->pc.hard_memory_limit_mb * 1024)
        return 0;
    snprintf(w->kill_reason, sizeof w->kill_reason,
             "memory limit: worker %d reached %ld MB RSS, over hard-memory-limit %ld MB", w->pid,
             rss / 1024, m->pc.hard_memory_limit_mb);
    OCP_LOG(OCP_LOG_WARN, "page %s: %s: killing it", w->task->t.id, w->kill_reason);
    kill_worker(w, OCP_FAIL_MEMORY_LIMIT);
    return 1;
}

/* Hard time limit: a batch has the sum of its pages' limits (none when a page has none). */
static void check_time(master *m, worker *w, double now)
{
    double limit = 0;
    int n = 0;
    for (const held *h = w->task; h && limit >= 0; h = h->bnext, n++) {
        double l = m->pc.time_limit_s;
        if (h->time_limit > 0 && (l <= 0 || h->time_limit < l))
            l = h->time_limit;
        limit = l > 0 ? limit + l : -1;
    }
    if (limit <= 0 || now - w->task->started <= limit)
        return;
    if (n > 1)
        snprintf(w->kill_reason, sizeof w->kill_reason,
                 "time limit: %d pages read together ran over %.1f s (their limits summed)", n,
                 limit);
    else
        snprintf(w->kill_reason, sizeof w->kill_reason, "time limit: the page ran over %.1f s (%s)",
                 limit, limit == m->pc.time_limit_s ? "time-limit" : "the task's time_limit");
    OCP_LOG(OCP_LOG_WARN, "page %s: %s: killing worker %d", w->task->t.id, w->kill_reason, w->pid);
    kill_worker(w, OCP_FAIL_TIME_LIMIT);
}

static void watch_tick(ocp_loop_timer *t)
{
    master *m = t->data;
    double now = ocp_now();
    int busy = 0;
    for (worker *w = m->workers; w; w = w->next) {
        if (w->state != W_BUSY || !w->task)
            continue;
        busy = 1;
        if (w->kill_kind == OCP_FAIL_NONE && !check_memory(m, w))
            check_time(m, w, now);
    }
    /* An idle node is not woken for nothing: ocp__watchdog_busy starts it again. */
    if (busy)
        ocp_loop_timer_start(m->loop, t, OCP__WATCH_PERIOD, watch_tick, m);
}

void ocp__watchdog_start(master *m)
{
    ocp_loop_timer_init(&m->watch_timer);
}

void ocp__watchdog_busy(master *m)
{
    if (!ocp_loop_timer_active(&m->watch_timer))
        ocp_loop_timer_start(m->loop, &m->watch_timer, OCP__WATCH_PERIOD, watch_tick, m);
}
