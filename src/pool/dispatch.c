/*
 * dispatch.c: the master's pages (master_int.h): leased from the broker
 * up to the node's capacity (a timer whose period grows while the queue
 * is empty), given to idle workers within the memory budget (one page, or
 * a batch of batch-pages), their results stored and acknowledged or their
 * failures recorded by kind, and their leases renewed every
 * lease_timeout/3 while they are held; finished pages expire by timer.
 * The answers of one turn of the loop (every worker's) and the lease of
 * the room they leave are written to the queue together (one broker batch:
 * one SQLite commit per turn, not two per page), before the turn's pages
 * are given out.
 */
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image.h"
#include "pool/master_int.h"
#include "pool/remote.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ocp__capacity(const master *m)
{
    int batch = m->pc.batch_pages > 1 ? m->pc.batch_pages : 1;
    /* Autoscaling prefetches for its most workers, as Celery's: pages that wait are what
     * makes it grow. */
    int conc = m->pc.autoscale_max > m->pc.concurrency ? m->pc.autoscale_max : m->pc.concurrency;
    return m->pc.prefetch_multiplier > 0 ? conc * m->pc.prefetch_multiplier * batch : 100000;
}

static int is_solo(const master *m, const char *id)
{
    for (int i = 0; i < OCP__SOLO; i++)
        if (m->solo[i] && strcmp(m->solo[i], id) == 0)
            return 1;
    return 0;
}

void ocp__add_solo(master *m, const char *id)
{
    if (is_solo(m, id))
        return;
    free(m->solo[m->solo_next]);
    m->solo[m->solo_next] = ocp_xstrdup(id);
    m->solo_next = (m->solo_next + 1) % OCP__SOLO;
}

int ocp__batch_len(const worker *w)
{
    int n = 0;
    for (const held *h = w->task; h; h = h->bnext)
        n++;
    return n;
}

/* Estimated peak bytes of a page from the size its producer read from the header; also
 * takes the page's source and number for monitor. */
static double estimate(const ocp_pool_conf *pc, const char *payload, held *hd)
{
    json_t *p = json_loads(payload, 0, NULL);
    double est = 0;
    hd->payload = p;
    if (p) {
        const char *src = json_string_value(json_object_get(p, "source"));
        hd->source = src ? ocp_xstrdup(src) : NULL;
        hd->page = (int)json_integer_value(json_object_get(p, "page")) + 1;
        hd->time_limit = json_number_value(json_object_get(p, "time_limit"));
        json_int_t pw = json_integer_value(json_object_get(p, "width"));
        json_int_t ph = json_integer_value(json_object_get(p, "height"));
        json_t *jm = json_object_get(p, "max_image_size");
        int max = pc->lim.max_image_size; /* a task's may only shrink it, as the worker's */
        if (json_is_integer(jm) && json_integer_value(jm) >= 1 &&
            (max == 0 || json_integer_value(jm) < max))
            max = (int)json_integer_value(jm);
        if (pw > 0 && ph > 0 && pw < 1000000 && ph < 1000000) {
            int nw, nh; /* the worker fails a page larger than this (page.c) */
            ocp_image_fit((int)pw, (int)ph, max, &nw, &nh);
            est = (double)nw * nh * pc->page_memory_factor;
        } else { /* no size declared: the largest page the limits let through */
            double px = (double)pc->lim.max_pixels;
            est = (max > 0 && (double)max * max < px ? (double)max * max : px) *
                  pc->page_memory_factor;
        }
    }
    return est;
}

void ocp__drop_held(master *m, held *h)
{
    for (held **pp = &m->held; *pp; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    }
    ocp_task_fini(&h->t);
    json_decref(h->payload);
    free(h->source);
    free(h);
    m->n_held--;
}

void ocp__release_task(master *m, held *h, ocp_failure kind, const char *reason, int uncount)
{
    int buried = 0;
    int rc =
        ocp_broker_release(m->b, h->t.id, kind, reason, uncount, m->pc.max_deliveries, &buried);
    if (rc)
        OCP_LOG(OCP_LOG_ERROR, "release %s: %s", h->t.id, ocp_broker_errmsg(m->b));
    else if (buried)
        OCP_LOG(OCP_LOG_WARN, "page %s buried after %d deliveries: %s", h->t.id, h->t.deliveries,
                reason);
    else if (!uncount)
        OCP_LOG(OCP_LOG_WARN, "page %s goes back to the queue (delivery %d of %d): %s", h->t.id,
                h->t.deliveries, m->pc.max_deliveries, reason);
    /* Celery's events: a page lost with its worker is retried, or failed once buried. */
    if (!rc && kind != OCP_FAIL_SHUTDOWN) {
        if (buried)
            ocp__remote_done(m, h, 0, reason, 0, NULL);
        else
            ocp__remote_retried(m, h, reason);
    }
    ocp__drop_held(m, h);
}

/* The worker's batch is answered: it goes idle, or is replaced by Celery's rules (checked
 * after the batch, on its highest page peak), or leaves (a reload, a shutdown, scaled down,
 * or a page that failed for memory). */
void ocp__batch_done(master *m, worker *w)
{
    long peak = w->batch_peak_kb;
    w->state = W_IDLE;
    ocp__lease_soon(m); /* room for more: ask at once */
    if (w->exit_after) {
        ocp__send_exit(m, w);
    } else if (m->pc.max_memory_per_child > 0 && peak > m->pc.max_memory_per_child) {
        OCP_LOG(OCP_LOG_WARN,
                "replacing worker %d: peak RSS %ld KiB during page %s over max-memory-per-child "
                "%ld KiB",
                w->pid, peak, w->peak_page, m->pc.max_memory_per_child);
        m->recycles_max_memory++;
        ocp__send_exit(m, w);
    } else if (m->pc.max_tasks_per_child > 0 && w->tasks_done >= m->pc.max_tasks_per_child) {
        OCP_LOG(OCP_LOG_INFO, "replacing worker %d after %d page%s (max-tasks-per-child)", w->pid,
                w->tasks_done, w->tasks_done == 1 ? "" : "s");
        m->recycles_max_tasks++;
        ocp__send_exit(m, w);
    } else if (w->gen != m->gen || m->draining ||
               ocp__live_workers(m, m->gen) > m->pc.concurrency) {
        ocp__send_exit(m, w); /* a reload, a shutdown, or scaled down */
    }
}

/* The figures of a page whose result or failure is stored. */
static void count_page(master *m, int ok, double seconds, long peak)
{
    if (peak > m->peak_max_kb)
        m->peak_max_kb = peak;
    if (!ok) {
        m->pages_failed++;
        return;
    }
    int bk = 0;
    while (bk < OCP_DURATION_NB && seconds > ocp_duration_le[bk])
        bk++;
    m->dur_buckets[bk]++;
    m->pages_done++;
    m->dur_sum += seconds;
}

/* Takes the page a "done" message answers out of w's batch; NULL when w was not given it. */
static held *answered(worker *w, const char *id)
{
    held **pp = &w->task;
    while (*pp && (!id || strcmp(id, (*pp)->t.id) != 0))
        pp = &(*pp)->bnext;
    held *h = *pp;
    if (h) {
        *pp = h->bnext;
        h->bnext = NULL;
    }
    return h;
}

/* A page's answer: {"t":"done","id","ok","result":{...}} or {..., "failure","error"}. Its
 * result is stored (serialised once, by the broker) and acknowledged; a failure whose kind
 * is retried goes back to the queue, any other is recorded as the page's. */
static void page_done(master *m, worker *w, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    held *h = answered(w, id);
    if (!h) {
        OCP_LOG(OCP_LOG_ERROR, "worker %d answered for a page it was not given", w->pid);
        return;
    }
    w->tasks_done++;
    int ok = json_is_true(json_object_get(msg, "ok"));
    double started = json_real_value(json_object_get(msg, "started"));
    double finished = json_real_value(json_object_get(msg, "finished"));
    long peak = (long)json_integer_value(json_object_get(msg, "peak_rss_kb"));
    long after = (long)json_integer_value(json_object_get(msg, "rss_after_kb"));
    const char *why = json_string_value(json_object_get(msg, "error"));
    ocp_failure kind = ocp_failure_parse(json_string_value(json_object_get(msg, "failure")));
    if (!ok && kind == OCP_FAIL_NONE)
        kind = OCP_FAIL_ENGINE;
    id = h->t.id; /* the page's own id from here on (the message's may be NULL) */
    if (peak > w->batch_peak_kb) {
        w->batch_peak_kb = peak;
        snprintf(w->peak_page, sizeof w->peak_page, "%s", id);
    }
    if (json_is_true(json_object_get(msg, "recycle")) && !w->exit_after) {
        /* It loaded a model of its own, which its zygote now shares (zygote.c). */
        OCP_LOG(OCP_LOG_INFO, "replacing worker %d once idle: its own copy of a model the "
                              "zygote now shares",
                w->pid);
        w->exit_after = 1;
    }
    if (!ok && ocp_failure_retried(kind)) {
        /* Not the page's content: deliver it again (or bury it after max deliveries). */
        ocp__release_task(m, h, kind, why ? why : "failed", 0);
        w->exit_after = 1; /* a worker that hit its memory limit starts afresh */
        if (!w->task)
            ocp__batch_done(m, w);
        return;
    }
    json_t *res = json_object_get(msg, "result");
    res = json_is_object(res) ? json_incref(res) : json_object();
    int rc = ok ? ocp_broker_ack(m->b, id, res, started, finished, peak, w->pid)
                : ocp_broker_fail(m->b, id, kind, why ? why : "failed", started, finished, w->pid);
    json_decref(res);
    if (rc) {
        /* Not stored: do not acknowledge; the lease runs out and the page is done again. */
        OCP_LOG(OCP_LOG_ERROR, "page %s: cannot store its result: %s", id, ocp_broker_errmsg(m->b));
    } else {
        if (ok && m->hooks && m->hooks->page_stored)
            m->hooks->page_stored(m->hooks->ctx, &m->pc, h->t.group, h->payload);
        count_page(m, ok, finished - started, peak);
        ocp__remote_done(m, h, ok, why, finished - started, res);
        OCP_LOG(OCP_LOG_INFO, "page %s %s by worker %d in %.2f s, peak RSS %ld KiB, %ld KiB after",
                id, ok ? "done" : "failed", w->pid, finished - started, peak, after);
    }
    ocp__drop_held(m, h);
    if (!w->task)
        ocp__batch_done(m, w);
}

/* A worker said it is ready: its idle size counts in the budget. */
static void worker_ready(master *m, worker *w, json_t *msg)
{
    w->baseline_kb = (long)json_integer_value(json_object_get(msg, "pss_kb"));
    if (w->baseline_kb <= 0)
        w->baseline_kb = (long)json_integer_value(json_object_get(msg, "rss_kb"));
    if (w->state == W_STARTING)
        w->state = W_IDLE;
    m->spawn_failures = 0;
    OCP_LOG(OCP_LOG_INFO, "worker %d ready: RSS %lld KiB, PSS %lld KiB", w->pid,
            (long long)json_integer_value(json_object_get(msg, "rss_kb")),
            (long long)json_integer_value(json_object_get(msg, "pss_kb")));
}

static int lease_more(master *m);
static void lease_tick(ocp_loop_timer *t);

/* Drops the last n held pages if they are still waiting: leased in a batch that was not
 * written, so they are not this node's (their results would be ignored). */
static void drop_unwritten(master *m, int n)
{
    int skip = m->n_held - n;
    held *h = m->held;
    while (h && skip-- > 0)
        h = h->next;
    while (h) {
        held *next = h->next;
        if (h->state == H_WAITING)
            ocp__drop_held(m, h);
        h = next;
    }
}

/* Ends the batch begun for this turn's answers: the room they left is leased first, in the
 * same write (then the lease timer goes on from there). */
static void answers_written(master *m)
{
    int leased = 0;
    if (!m->answers_batch)
        return;
    m->answers_batch = 0;
    if (!m->draining && m->lease_interval == 0) {
        leased = lease_more(m);
        ocp_loop_timer_start(m->loop, &m->lease_timer, m->lease_interval, lease_tick, m);
    }
    if (ocp_broker_batch_end(m->b)) {
        /* Nothing of the batch is stored: the pages answered run again when their leases
         * run out, and the pages just leased are not ours. */
        OCP_LOG(OCP_LOG_ERROR, "cannot store the pages' results: %s", ocp_broker_errmsg(m->b));
        drop_unwritten(m, leased);
    }
}

void ocp__worker_readable(ocp_loop_io *io, short revents)
{
    (void)revents;
    master *m = io->data;
    worker *w = (worker *)((char *)io - offsetof(worker, io));
    int r, rc;
    if (!m->answers_batch)
        m->answers_batch = ocp_broker_batch_begin(m->b) == 0;
    /* Read until a read leaves room in the buffer: the socket had no more then (the loop's
     * poll is level-triggered: what comes after is the next turn's), which saves each
     * message a second read answering EAGAIN. */
    while ((r = ocp_proto_fill(&w->rd, w->fd)) > 0 && w->rd.len == w->rd.cap) {
    }
    if (r == 0 || (r < 0 && r != -EAGAIN)) {
        w->eof = 1; /* the zygote's "exited" tells the rest */
        ocp_loop_io_stop(m->loop, &w->io);
    }
    json_t *msg;
    while ((rc = ocp_proto_next(&w->rd, &msg)) == 0 && msg) {
        const char *t = json_string_value(json_object_get(msg, "t"));
        if (t && strcmp(t, "ready") == 0)
            worker_ready(m, w, msg);
        else if (t && strcmp(t, "done") == 0)
            page_done(m, w, msg);
        json_decref(msg);
    }
    if (rc) {
        w->eof = 1; /* its stream is unusable: nothing more is read from it */
        ocp__worker_lost(m, w, "sent a malformed message");
    }
}

double ocp__in_flight_bytes(const master *m)
{
    double sum = ocp__recog_bytes(m); /* a shared recognizer counts as a worker does */
    for (const worker *w = m->workers; w; w = w->next) {
        sum += (double)w->baseline_kb * 1024;
        for (const held *h = w->task; h; h = h->bnext)
            sum += h->est_bytes;
    }
    return sum;
}

/* A waiting page that cannot run: malformed, or larger than the budget allows beside the
 * workers' idle sizes. Fails it and returns 1; 0 when it may run. */
static int refuse(master *m, held *h, double budget, double base)
{
    char why[300];
    ocp_failure kind;
    if (ocp__remote_is_revoked(m, h->t.id)) {
        /* Celery's revoke: checked as the page would start (it may have been leased
         * before it was revoked). */
        OCP_LOG(OCP_LOG_INFO, "page %s was revoked: not started", h->t.id);
        ocp__remote_revoked(m, h);
        kind = OCP_FAIL_REVOKED;
        snprintf(why, sizeof why, "revoked");
    } else if (!json_is_object(h->payload)) {
        kind = OCP_FAIL_MALFORMED;
        snprintf(why, sizeof why, "malformed task payload: not a JSON object");
    } else if (budget > 0 && base + h->est_bytes > budget) {
        kind = OCP_FAIL_BUDGET;
        snprintf(why, sizeof why,
                 "page needs about %.0f MB, more than memory-budget %ld MB leaves beside the "
                 "workers' %.0f MB",
                 h->est_bytes / 1048576.0, m->pc.memory_budget_mb, base / 1048576.0);
        OCP_LOG(OCP_LOG_WARN, "page %s: %s", h->t.id, why);
    } else {
        return 0;
    }
    ocp_broker_fail(m->b, h->t.id, kind, why, ocp_wall_now(), ocp_wall_now(), 0);
    ocp__drop_held(m, h);
    return 1;
}

/* Picks up to most waiting pages for one idle worker within the budget (a page that failed
 * in a batch goes alone). Returns the count, or -1 when a page was refused (the list
 * changed: start again next turn). */
static int pick_pages(master *m, held **pick, int most)
{
    double budget = (double)m->pc.memory_budget_mb * 1048576.0;
    double base = ocp__recog_bytes(m), load = budget > 0 ? ocp__in_flight_bytes(m) : 0;
    int np = 0;
    /* The workers' idle sizes, and what pages in flight are expected to add. */
    for (const worker *x = m->workers; x && budget > 0; x = x->next)
        base += (double)x->baseline_kb * 1024;
    for (held *h = m->held; h && np < most; h = h->next) {
        if (h->state != H_WAITING)
            continue;
        if (refuse(m, h, budget, base))
            return -1;
        if (np > 0 && h->solo)
            continue; /* it runs alone */
        if (budget > 0 && load + h->est_bytes > budget)
            continue; /* waits; a smaller page may fit now */
        pick[np++] = h;
        load += h->est_bytes;
        if (h->solo)
            break;
    }
    return np;
}

/* Sends w the np pages of pick and marks them running. */
static void give(master *m, worker *w, held **pick, int np)
{
    json_t *msg;
    if (np == 1) {
        msg = json_pack("{s:s, s:s, s:O}", "t", "task", "id", pick[0]->t.id, "payload",
                        pick[0]->payload);
    } else {
        json_t *arr = json_array();
        for (int i = 0; i < np; i++)
            json_array_append_new(
                arr, json_pack("{s:s, s:O}", "id", pick[i]->t.id, "payload", pick[i]->payload));
        msg = json_pack("{s:s, s:o}", "t", "tasks", "tasks", arr);
    }
    int rc = ocp__send_worker(m, w, msg);
    json_decref(msg);
    if (rc)
        return; /* the worker is let go; its pages wait for another */
    double now = ocp_now(), wall = ocp_wall_now();
    for (int i = np - 1; i >= 0; i--) {
        pick[i]->state = H_RUNNING;
        pick[i]->started = now;
        pick[i]->started_wall = wall;
        pick[i]->bnext = i + 1 < np ? pick[i + 1] : NULL;
        ocp_broker_started(m->b, pick[i]->t.id, w->pid);
        ocp__remote_started(m, pick[i], w->pid);
        if (!m->pc.acks_late && !pick[i]->acked_early) {
            /* acks-late off: acknowledged as it is given to its worker (not at lease: a
             * page never started goes back at a shutdown); a lost page is not delivered
             * again, and its lease is no longer renewed. */
            if (ocp_broker_ack_early(m->b, m->owner, pick[i]->t.id))
                OCP_LOG(OCP_LOG_ERROR, "ack %s: %s", pick[i]->t.id, ocp_broker_errmsg(m->b));
            pick[i]->acked_early = 1;
        }
    }
    w->task = pick[0];
    w->state = W_BUSY;
    ocp__watchdog_busy(m);
    w->sampled_peak_kb = 0;
    w->batch_peak_kb = 0;
    w->peak_page[0] = '\0';
}

/* Gives idle workers waiting pages: each up to batch-pages of them, within the budget. */
void ocp__dispatch(master *m)
{
    answers_written(m);
    if (m->draining)
        return;
    int most = m->pc.batch_pages > 1 ? m->pc.batch_pages : 1;
    held **pick = ocp_xcalloc((size_t)most, sizeof *pick);
    for (worker *w = m->workers; w; w = w->next) {
        if (w->state != W_IDLE || w->gen != m->gen)
            continue;
        int np = pick_pages(m, pick, most);
        if (np <= 0)
            break;
        give(m, w, pick, np);
    }
    free(pick);
}

/* Takes the n tasks leased into got as held pages, in lease order. */
static void hold(master *m, ocp_task *got, int n)
{
    held **tail = &m->held;
    while (*tail)
        tail = &(*tail)->next;
    for (int i = 0; i < n; i++) {
        held *h = ocp_xcalloc(1, sizeof *h);
        h->t = got[i];
        h->state = H_WAITING;
        h->est_bytes = estimate(&m->pc, h->t.payload, h);
        h->solo = m->pc.batch_pages > 1 && is_solo(m, h->t.id);
        ocp__remote_received(m, h);
        /* Appended: pages start in the order they were leased (priority, then age). */
        *tail = h;
        tail = &h->next;
        m->n_held++;
    }
}

/* Leases what there is room for; returns how many were leased. */
static int lease_more(master *m)
{
    int want = ocp__capacity(m) - m->n_held;
    if (want <= 0) {
        /* Full (or scaled down): a page that finishes asks again at once (batch_done). */
        m->lease_interval = OCP__LEASE_IDLE;
        return 0;
    }
    if (want > 256)
        want = 256;
    ocp_task *got = ocp_xcalloc((size_t)want, sizeof *got);
    int n = 0;
    if (ocp_broker_lease(m->b, m->owner, m->pc.only_group, want, m->pc.lease_timeout_s,
                         m->pc.max_deliveries, got, &n)) {
        if (!m->lease_failing)
            OCP_LOG(OCP_LOG_ERROR, "lease: %s (running pages go on; asking again)",
                    ocp_broker_errmsg(m->b));
        m->lease_failing = 1;
        m->lease_interval = fmin(2.0, m->lease_interval * 2 + 0.1);
        free(got);
        return 0;
    }
    if (m->lease_failing)
        OCP_LOG(OCP_LOG_WARN, "lease: the broker answers again");
    m->lease_failing = 0;
    hold(m, got, n);
    if (n)
        OCP_LOG(OCP_LOG_INFO, "lease: %d more, holding %d (limit %d)", n, m->n_held,
                ocp__capacity(m));
    /* An empty queue is asked less often (each ask takes the write lock). */
    m->lease_interval = n ? 0.02 : fmin(OCP__LEASE_IDLE, m->lease_interval * 2 + 0.02);
    free(got);
    return n;
}

static void lease_tick(ocp_loop_timer *t)
{
    master *m = t->data;
    if (m->draining)
        return; /* no new leases: the timer stops */
    lease_more(m);
    ocp_loop_timer_start(m->loop, t, m->lease_interval, lease_tick, m);
}

void ocp__lease_soon(master *m)
{
    m->lease_interval = 0;
    ocp_loop_timer_start(m->loop, &m->lease_timer, 0, lease_tick, m);
}

/* Every lease_timeout/3: the leases of every page held are extended (but those acknowledged
 * early). */
static void renew_tick(ocp_loop_timer *t)
{
    master *m = t->data;
    if (m->n_held) {
        char **ids = ocp_xcalloc((size_t)m->n_held, sizeof *ids);
        int n = 0;
        for (held *h = m->held; h; h = h->next)
            if (!h->acked_early) /* its lease is the broker's "early ack": left alone */
                ids[n++] = h->t.id;
        if (n && ocp_broker_renew(m->b, m->owner, ids, n, m->pc.lease_timeout_s))
            OCP_LOG(OCP_LOG_ERROR, "renew: %s", ocp_broker_errmsg(m->b));
        free(ids);
    }
    ocp_loop_timer_start(m->loop, t, m->pc.lease_timeout_s / 3, renew_tick, m);
}

/* result-expires: finished pages older than it are deleted, every half of it (0.5 to 60 s). */
static void expire_tick(ocp_loop_timer *t)
{
    master *m = t->data;
    if (m->pc.result_expires_s > 0) {
        long gone = 0;
        ocp_broker_expire(m->b, ocp_wall_now() - m->pc.result_expires_s, &gone);
        if (gone)
            OCP_LOG(OCP_LOG_INFO, "%ld finished pages expired (result-expires)", gone);
    }
    double period = fmin(60, fmax(0.5, m->pc.result_expires_s / 2));
    ocp_loop_timer_start(m->loop, t, period, expire_tick, m);
}

void ocp__dispatch_start(master *m)
{
    ocp_loop_timer_init(&m->lease_timer);
    ocp_loop_timer_init(&m->renew_timer);
    ocp_loop_timer_init(&m->expire_timer);
    ocp_loop_timer_start(m->loop, &m->lease_timer, 0, lease_tick, m);
    ocp_loop_timer_start(m->loop, &m->renew_timer, 0, renew_tick, m);
    ocp_loop_timer_start(m->loop, &m->expire_timer, 0, expire_tick, m);
}
