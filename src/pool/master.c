/*
 * master.c: the master of a node: one single-threaded poll loop (pool.h).
 *
 * A held page goes through:
 *
 *   lease() --> WAITING --admit (budget) + idle worker--> RUNNING
 *                 |                                       |  done ok  --> ack (DONE)
 *                 |                                       |  done err --> fail (FAILED)
 *                 |                                       |  worker lost --> release
 *                 |                                       |     (READY again, or BURIED
 *                 |                                       |      after max deliveries)
 *                 '--warm/cold stop--> release, delivery not counted
 *
 * The master renews the lease of every page it holds every lease_timeout/3,
 * so a long page is never handed to a second node while its worker lives.
 * Its watchdog samples each busy worker's RSS every 50 ms (hard memory
 * limit) and the page's age (hard time limit), and kills the worker when
 * either is crossed; the page is then retried or buried.
 */
#include "gpu/gpu.h"
#include "pool/control.h"
#include "core/memstat.h"
#include "pool/pool.h"
#include "pool/proto.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { H_WAITING, H_RUNNING };
#define SOLO 256 /* pages remembered to run alone */
enum { W_STARTING, W_IDLE, W_BUSY, W_EXITING };

typedef struct held {
    ocp_task t;
    int state;
    double est_bytes; /* estimated peak memory of the page */
    double started;      /* monotonic, when given to a worker */
    double started_wall; /* the same, wall clock (for the results) */
    json_t *payload; /* parsed once, at lease: sent to the worker as it is */
    char *source;    /* from the payload, for monitor */
    int page;
    double time_limit; /* the page's own hard limit (a Celery message's timelimit), 0 = none */
    struct held *next;
    struct held *bnext; /* the next page of the batch its worker was given */
    int solo;           /* it failed in a batch before: it runs alone */
} held;

typedef struct zyg {
    int pid, fd, gen, ready, dead;
    ocp_proto_reader rd;
} zyg;

typedef struct worker {
    int slot, pid, fd, gen, state;
    ocp_proto_reader rd;
    held *task; /* the page it reads, the first of its batch (bnext), or NULL */
    int tasks_done;
    long batch_peak_kb; /* the highest peak its batch's pages reported so far */
    char peak_page[80]; /* the page that reported it */
    int exit_after;     /* send it "exit" once its batch is answered */
    long baseline_kb; /* PSS when idle, for the budget */
    long sampled_peak_kb;
    char kill_reason[300];
    int eof;
    struct worker *next;
} worker;

typedef struct master {
    ocp_pool_conf pc;
    const ocp_pool_hooks *hooks;
    ocp_broker *b;
    char owner[160];
    zyg z[2]; /* current and, during a reload, the previous */
    int nz;
    int gen;
    worker *workers;
    held *held;
    int n_held;
    int draining, cold;
    double last_renew, last_lease, last_watch, last_expire;
    int spawn_failures;
    double spawn_backoff_until;
    double lease_interval; /* grows while the queue is empty, up to 0.5 s */
    int lease_failing;     /* the last lease failed (said once, until it works again) */
    /* The control socket and the figures it reports. */
    int ctl_fd;
    char ctl_path[256];
    double started_wall, started_mono;
    long pages_done, pages_failed;
    double dur_sum;
    long peak_max_kb;    /* the highest page peak RSS seen */
    long dur_buckets[9]; /* page durations: <= 0.25 0.5 1 2 5 10 30 60 s, and more */
    long recycles[5];
    /* Pages whose batch failed as a whole (a crash, a limit): run alone next time, so that
     * only a page that fails alone is counted (and buried) for it. A ring of ids. */
    char *solo[SOLO];
    int solo_next;
} master;

enum { R_MAX_TASKS, R_MAX_MEMORY, R_HARD_MEMORY, R_TIME_LIMIT, R_CRASHED };
static const char *const recycle_names[] = {"max_tasks_per_child", "max_memory_per_child",
                                            "hard_memory_limit", "time_limit", "crashed"};

static volatile sig_atomic_t sig_term, sig_quit, sig_hup;
static int sig_pipe[2] = {-1, -1};

static void on_signal(int s)
{
    int e = errno;
    if (s == SIGTERM || s == SIGINT)
        sig_term++;
    else if (s == SIGQUIT)
        sig_quit = 1;
    else if (s == SIGHUP)
        sig_hup = 1;
    if (sig_pipe[1] >= 0) {
        ssize_t w = write(sig_pipe[1], "x", 1);
        (void)w;
    }
    errno = e;
}

void ocp_pool_conf_from_config(ocp_pool_conf *pc, const ocp_config *cfg)
{
    memset(pc, 0, sizeof *pc);
    pc->engine = ocp_config_str(cfg, OCP_S_ENGINE);
    pc->ep.lang = ocp_config_str(cfg, OCP_S_LANG);
    pc->ep.tessdata_dir = ocp_config_str(cfg, OCP_S_TESSDATA_DIR);
    pc->ep.psm = (int)ocp_config_int(cfg, OCP_S_PSM);
    pc->lim.max_pixels = ocp_config_int(cfg, OCP_S_MAX_PIXELS);
    pc->lim.max_pages = (int)ocp_config_int(cfg, OCP_S_MAX_PAGES);
    pc->lim.pdf_dpi = (int)ocp_config_int(cfg, OCP_S_PDF_DPI);
    pc->lim.max_image_size = (int)ocp_config_int(cfg, OCP_S_MAX_IMAGE_SIZE);
    pc->soft_timeout_s = ocp_config_double(cfg, OCP_S_PAGE_TIMEOUT);
    pc->concurrency = (int)ocp_config_int(cfg, OCP_S_CONCURRENCY);
    pc->prefetch_multiplier = (int)ocp_config_int(cfg, OCP_S_PREFETCH_MULTIPLIER);
    pc->batch_pages = (int)ocp_config_int(cfg, OCP_S_BATCH_PAGES);
    pc->acks_late = ocp_config_bool(cfg, OCP_S_ACKS_LATE);
    pc->max_tasks_per_child = (int)ocp_config_int(cfg, OCP_S_MAX_TASKS_PER_CHILD);
    pc->max_memory_per_child = (long)ocp_config_int(cfg, OCP_S_MAX_MEMORY_PER_CHILD);
    pc->hard_memory_limit_mb = (long)ocp_config_int(cfg, OCP_S_HARD_MEMORY_LIMIT);
    pc->memory_budget_mb = (long)ocp_config_int(cfg, OCP_S_MEMORY_BUDGET);
    pc->page_memory_factor = ocp_config_double(cfg, OCP_S_PAGE_MEMORY_FACTOR);
    pc->max_deliveries = (int)ocp_config_int(cfg, OCP_S_MAX_DELIVERIES);
    pc->lease_timeout_s = ocp_config_double(cfg, OCP_S_LEASE_TIMEOUT);
    pc->time_limit_s = ocp_config_double(cfg, OCP_S_TIME_LIMIT);
    pc->result_expires_s = ocp_config_double(cfg, OCP_S_RESULT_EXPIRES);
    pc->cgroup_root = ocp_config_str(cfg, OCP_S_CGROUP_ROOT);
    ocp_pool_broker_opts(&pc->broker, cfg);
}

void ocp_pool_broker_opts(ocp_broker_opts *o, const ocp_config *cfg)
{
    memset(o, 0, sizeof *o);
    o->queues = ocp_config_str(cfg, OCP_S_QUEUES);
    o->task_name = ocp_config_str(cfg, OCP_S_TASK_NAME);
    o->lang = ocp_config_str(cfg, OCP_S_LANG);
    o->visibility_timeout_s = ocp_config_double(cfg, OCP_S_VISIBILITY_TIMEOUT);
    double ex = ocp_config_double(cfg, OCP_S_RESULT_EXPIRES);
    o->result_expires_s = ex > 0 ? ex : -1;
    o->track_started = ocp_config_bool(cfg, OCP_S_TRACK_STARTED);
    o->max_message_bytes = (size_t)ocp_config_int(cfg, OCP_S_MAX_INPUT_SIZE) << 20;
}

static int capacity(const master *m)
{
    int batch = m->pc.batch_pages > 1 ? m->pc.batch_pages : 1;
    return m->pc.prefetch_multiplier > 0
               ? m->pc.concurrency * m->pc.prefetch_multiplier * batch
               : 100000;
}

static int is_solo(const master *m, const char *id)
{
    for (int i = 0; i < SOLO; i++)
        if (m->solo[i] && strcmp(m->solo[i], id) == 0)
            return 1;
    return 0;
}

static void add_solo(master *m, const char *id)
{
    if (is_solo(m, id))
        return;
    free(m->solo[m->solo_next]);
    m->solo[m->solo_next] = ocp_xstrdup(id);
    m->solo_next = (m->solo_next + 1) % SOLO;
}

static int batch_len(const worker *w)
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
        int max = json_is_integer(jm) ? (int)json_integer_value(jm) : pc->lim.max_image_size;
        if (pw > 0 && ph > 0 && pw < 1000000 && ph < 1000000) {
            int nw, nh;
            ocp_image_fit((int)pw, (int)ph, max, &nw, &nh);
            est = (double)nw * nh * pc->page_memory_factor;
        }
    }
    return est;
}

static zyg *current_zyg(master *m)
{
    for (int i = 0; i < m->nz; i++)
        if (m->z[i].gen == m->gen && !m->z[i].dead)
            return &m->z[i];
    return NULL;
}

static int start_zygote(master *m, char *err, size_t errlen)
{
    zyg *z = &m->z[m->nz];
    memset(z, 0, sizeof *z);
    int rc = ocp__zygote_start(&m->pc, &z->fd, &z->pid, err, errlen);
    if (rc)
        return rc;
    z->gen = m->gen;
    ocp_proto_reader_init(&z->rd);
    /* Wait for the engine to load: the first message says whether it could. */
    json_t *msg = NULL;
    rc = ocp_proto_recv(z->fd, &z->rd, &msg);
    const char *t = msg ? json_string_value(json_object_get(msg, "t")) : NULL;
    if (rc || !t || strcmp(t, "ready") != 0) {
        const char *e = msg ? json_string_value(json_object_get(msg, "error")) : NULL;
        ocp_errf(OCP_E_ENGINE, err, errlen, "%s",
                 e ? e : "the zygote died while loading the engine");
        json_decref(msg);
        close(z->fd);
        ocp_proto_reader_fini(&z->rd);
        waitpid(z->pid, NULL, 0);
        return OCP_E_ENGINE;
    }
    json_decref(msg);
    fcntl(z->fd, F_SETFL, fcntl(z->fd, F_GETFL) | O_NONBLOCK);
    z->ready = 1;
    m->nz++;
    return 0;
}

static int live_workers(const master *m, int gen)
{
    int n = 0;
    for (const worker *w = m->workers; w; w = w->next)
        if (w->gen == gen && w->state != W_EXITING)
            n++;
    return n;
}

static void spawn_missing(master *m)
{
    zyg *z = current_zyg(m);
    if (!z || m->draining || ocp_now() < m->spawn_backoff_until)
        return;
    /* A run that ends when the queue is done (ocr) starts workers only for pages. */
    if (m->hooks && m->hooks->exit_when_idle && m->n_held == 0)
        return;
    int have = live_workers(m, m->gen);
    for (int slot = 0; have < m->pc.concurrency && slot < 4 * m->pc.concurrency + 4; slot++) {
        int used = 0;
        for (worker *w = m->workers; w; w = w->next)
            if (w->gen == m->gen && w->slot == slot && w->state != W_EXITING)
                used = 1;
        if (used)
            continue;
        worker *w = ocp_xcalloc(1, sizeof *w);
        w->slot = slot;
        w->gen = m->gen;
        w->pid = -1;
        w->fd = -1;
        w->state = W_STARTING;
        ocp_proto_reader_init(&w->rd);
        w->next = m->workers;
        m->workers = w;
        const char *vis = m->pc.n_visible ? m->pc.visible[slot % m->pc.n_visible] : "";
        json_t *msg = json_pack("{s:s, s:i, s:s}", "t", "spawn", "slot", slot, "visible", vis);
        ocp_proto_send(z->fd, msg, -1);
        json_decref(msg);
        have++;
    }
}

static void drop_held(master *m, held *h)
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

static void release_task(master *m, held *h, const char *reason, int uncount)
{
    int buried = 0;
    int rc = ocp_broker_release(m->b, h->t.id, OCP_FAIL_CRASHED, reason, uncount,
                                m->pc.max_deliveries, &buried);
    if (rc)
        OCP_LOG(OCP_LOG_ERROR, "release %s: %s", h->t.id, ocp_broker_errmsg(m->b));
    else if (buried) {
        OCP_LOG(OCP_LOG_WARN, "page %s buried after %d deliveries: %s", h->t.id, h->t.deliveries,
                reason);
        if (m->hooks && m->hooks->on_result) {
            char why[600];
            snprintf(why, sizeof why, "buried after %d deliveries: %s", h->t.deliveries, reason);
            m->hooks->on_result(m->hooks->ctx, h->t.id, 0, why);
        }
    } else if (!uncount)
        OCP_LOG(OCP_LOG_WARN, "page %s goes back to the queue (delivery %d of %d): %s", h->t.id,
                h->t.deliveries, m->pc.max_deliveries, reason);
    drop_held(m, h);
}

static void free_worker(master *m, worker *w)
{
    for (worker **pp = &m->workers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    if (w->fd >= 0)
        close(w->fd);
    ocp_proto_reader_fini(&w->rd);
    free(w);
}

/*
 * Lets zygote i go: its workers (its children, dead or dying with it) are
 * forgotten and their pages go back to the queue, their delivery not
 * counted (not the pages' fault); then it is stopped and reaped.
 */
static void retire_zygote(master *m, int i)
{
    zyg *z = &m->z[i];
    for (worker *w = m->workers, *next; w; w = next) {
        next = w->next;
        if (w->gen != z->gen)
            continue;
        while (w->task) {
            held *h = w->task;
            w->task = h->bnext;
            release_task(m, h, "its worker's zygote ended", 1);
        }
        if (w->pid > 0)
            kill(w->pid, SIGKILL);
        free_worker(m, w);
    }
    close(z->fd);
    ocp_proto_reader_fini(&z->rd);
    kill(z->pid, SIGTERM);
    waitpid(z->pid, NULL, 0);
    m->z[i] = m->z[m->nz - 1];
    m->nz--;
}

static worker *find_worker(master *m, int pid)
{
    for (worker *w = m->workers; w; w = w->next)
        if (w->pid == pid)
            return w;
    return NULL;
}

static const char *signame(int s)
{
    const char *n = sigabbrev_np(s);
    return n ? n : "?";
}

/* A worker ended (the zygote reaped it): its page goes back or is buried. */
static void worker_exited(master *m, worker *w, int status, long maxrss_kb)
{
    char reason[400];
    if (w->kill_reason[0])
        snprintf(reason, sizeof reason, "%s", w->kill_reason);
    else if (WIFSIGNALED(status))
        snprintf(reason, sizeof reason,
                 "worker %d crashed: killed by signal %d (SIG%s) during the page", w->pid,
                 WTERMSIG(status), signame(WTERMSIG(status)));
    else
        snprintf(reason, sizeof reason, "worker %d exited with status %d during the page", w->pid,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (w->task && !m->cold)
        m->recycles[w->kill_reason[0]
                        ? (strncmp(w->kill_reason, "time", 4) == 0 ? R_TIME_LIMIT : R_HARD_MEMORY)
                        : R_CRASHED]++;
    /* A batch that ended so is not any one page's fault: its pages go back uncounted, to
     * run alone (a poison page then fails alone and is counted and buried as ever). */
    int batch = batch_len(w);
    while (w->task) {
        held *h = w->task;
        w->task = h->bnext;
        if (m->cold)
            release_task(m, h, "cold shutdown", 1);
        else if (!m->pc.acks_late) {
            /* Acknowledged on receipt (acks-late off): the page is not delivered again. */
            ocp_broker_fail(m->b, h->t.id, OCP_FAIL_CRASHED, reason, h->started_wall,
                            ocp_wall_now(), w->pid);
            if (m->hooks && m->hooks->on_result)
                m->hooks->on_result(m->hooks->ctx, h->t.id, 0, reason);
            drop_held(m, h);
        } else if (batch > 1) {
            char why[600];
            snprintf(why, sizeof why, "%s (%d pages read together: each runs alone next)",
                     reason, batch);
            add_solo(m, h->t.id);
            OCP_LOG(OCP_LOG_WARN, "page %s goes back to the queue, not counted: %s", h->t.id,
                    why);
            release_task(m, h, why, 1);
        } else
            release_task(m, h, reason, 0);
    }
    if (!batch && w->state == W_STARTING && !m->draining) {
        /* Died before it was ready: do not respawn in a tight loop. */
        m->spawn_failures++;
        double delay = fmin(30.0, 0.1 * pow(2, m->spawn_failures));
        m->spawn_backoff_until = ocp_now() + delay;
        OCP_LOG(OCP_LOG_ERROR, "worker %d died while starting (%s); next try in %.1f s", w->pid,
                reason, delay);
    }
    if (w->state != W_EXITING || batch)
        OCP_LOG(OCP_LOG_INFO, "worker %d ended: %s (peak RSS %ld KiB)", w->pid,
                WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "exited" : reason, maxrss_kb);
    free_worker(m, w);
}

static void handle_zygote(master *m, zyg *z)
{
    /* One read at a time, then its messages: a passed descriptor belongs to the message
     * it came with, and the kernel ends a read at a message that carries one. */
    for (;;) {
        int r = ocp_proto_fill(&z->rd, z->fd);
        if (r == 0 || (r < 0 && r != -EAGAIN)) {
            OCP_LOG(OCP_LOG_ERROR, "zygote %d is gone", z->pid);
            z->dead = 1;
        }
        json_t *msg;
        while (ocp_proto_next(&z->rd, &msg) == 0 && msg) {
            const char *t = json_string_value(json_object_get(msg, "t"));
            int pid = (int)json_integer_value(json_object_get(msg, "pid"));
            if (t && strcmp(t, "spawned") == 0) {
                int slot = (int)json_integer_value(json_object_get(msg, "slot"));
                int fd = z->rd.passed_fd;
                z->rd.passed_fd = -1;
                worker *w = NULL;
                for (worker *x = m->workers; x; x = x->next)
                    if (x->gen == z->gen && x->slot == slot && x->pid < 0)
                        w = x;
                if (!w || fd < 0) {
                    if (fd >= 0)
                        close(fd);
                    kill(pid, SIGKILL);
                } else {
                    w->pid = pid;
                    w->fd = fd;
                    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                    OCP_LOG(OCP_LOG_INFO, "worker %d started (slot %d)", pid, slot);
                }
            } else if (t && strcmp(t, "exited") == 0) {
                worker *w = find_worker(m, pid);
                if (w)
                    worker_exited(m, w, (int)json_integer_value(json_object_get(msg, "status")),
                                  (long)json_integer_value(json_object_get(msg, "maxrss_kb")));
            }
            json_decref(msg);
        }
        if (r <= 0)
            break;
    }
}

static void send_exit(worker *w)
{
    json_t *msg = json_pack("{s:s}", "t", "exit");
    ocp_proto_send(w->fd, msg, -1);
    json_decref(msg);
    w->state = W_EXITING;
}

/* The worker's batch is answered: it goes idle, or is replaced by Celery's rules (checked
 * after the batch, on its highest page peak), or leaves (a reload, a shutdown, scaled down,
 * or a page that failed for memory). */
static void batch_done(master *m, worker *w)
{
    long peak = w->batch_peak_kb;
    w->state = W_IDLE;
    m->lease_interval = 0; /* room for more: ask at once */
    if (w->exit_after) {
        send_exit(w);
    } else if (m->pc.max_memory_per_child > 0 && peak > m->pc.max_memory_per_child) {
        OCP_LOG(OCP_LOG_WARN,
                "replacing worker %d: peak RSS %ld KiB during page %s over max-memory-per-child "
                "%ld KiB",
                w->pid, peak, w->peak_page, m->pc.max_memory_per_child);
        m->recycles[R_MAX_MEMORY]++;
        send_exit(w);
    } else if (m->pc.max_tasks_per_child > 0 && w->tasks_done >= m->pc.max_tasks_per_child) {
        OCP_LOG(OCP_LOG_INFO, "replacing worker %d after %d pages (max-tasks-per-child)", w->pid,
                w->tasks_done);
        m->recycles[R_MAX_TASKS]++;
        send_exit(w);
    } else if (w->gen != m->gen || m->draining || live_workers(m, m->gen) > m->pc.concurrency) {
        send_exit(w); /* a reload, a shutdown, or scaled down */
    }
}

static void page_done(master *m, worker *w, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    held **pp = &w->task;
    while (*pp && (!id || strcmp(id, (*pp)->t.id) != 0))
        pp = &(*pp)->bnext;
    held *h = *pp;
    if (!h) {
        OCP_LOG(OCP_LOG_ERROR, "worker %d answered for a page it was not given", w->pid);
        return;
    }
    *pp = h->bnext; /* answered: out of the batch */
    h->bnext = NULL;
    w->tasks_done++;
    int ok = json_is_true(json_object_get(msg, "ok"));
    double started = json_real_value(json_object_get(msg, "started"));
    double finished = json_real_value(json_object_get(msg, "finished"));
    long peak = (long)json_integer_value(json_object_get(msg, "peak_rss_kb"));
    long after = (long)json_integer_value(json_object_get(msg, "rss_after_kb"));
    const char *text = json_string_value(json_object_get(msg, ok ? "result" : "error"));
    if (peak > w->batch_peak_kb) {
        w->batch_peak_kb = peak;
        snprintf(w->peak_page, sizeof w->peak_page, "%s", id);
    }
    if (!ok && json_is_true(json_object_get(msg, "retry"))) {
        /* Not the page's content: deliver it again (or bury it after max deliveries). */
        release_task(m, h, text ? text : "failed", 0);
        w->exit_after = 1; /* a worker that hit its memory limit starts afresh */
        if (!w->task)
            batch_done(m, w);
        return;
    }
    json_t *res = ok && text ? json_loads(text, 0, NULL) : NULL;
    int rc = ok ? ocp_broker_ack(m->b, id, res ? res : json_object(), started, finished, peak,
                                 w->pid)
                : ocp_broker_fail(m->b, id, OCP_FAIL_ENGINE, text ? text : "failed", started,
                                  finished, w->pid);
    json_decref(res);
    if (rc) {
        /* Not stored: do not acknowledge; the lease runs out and the page is done again. */
        OCP_LOG(OCP_LOG_ERROR, "page %s: cannot store its result: %s", id, ocp_broker_errmsg(m->b));
    } else {
        if (peak > m->peak_max_kb)
            m->peak_max_kb = peak;
        if (ok) {
            static const double le[8] = {0.25, 0.5, 1, 2, 5, 10, 30, 60};
            int bk = 0;
            while (bk < 8 && finished - started > le[bk])
                bk++;
            m->dur_buckets[bk]++;
            m->pages_done++;
            m->dur_sum += finished - started;
        } else {
            m->pages_failed++;
        }
        OCP_LOG(OCP_LOG_INFO, "page %s %s by worker %d in %.2f s, peak RSS %ld KiB, %ld KiB after",
                id, ok ? "done" : "failed", w->pid, finished - started, peak, after);
        if (m->hooks && m->hooks->on_result)
            m->hooks->on_result(m->hooks->ctx, id, ok, text ? text : "");
    }
    drop_held(m, h);
    if (!w->task)
        batch_done(m, w);
}

static void handle_worker(master *m, worker *w)
{
    int r;
    while ((r = ocp_proto_fill(&w->rd, w->fd)) > 0) {
    }
    if (r == 0 || (r < 0 && r != -EAGAIN))
        w->eof = 1; /* the zygote's "exited" tells the rest */
    json_t *msg;
    int rc;
    while ((rc = ocp_proto_next(&w->rd, &msg)) == 0 && msg) {
        const char *t = json_string_value(json_object_get(msg, "t"));
        if (t && strcmp(t, "ready") == 0) {
            w->baseline_kb = (long)json_integer_value(json_object_get(msg, "pss_kb"));
            if (w->baseline_kb <= 0)
                w->baseline_kb = (long)json_integer_value(json_object_get(msg, "rss_kb"));
            if (w->state == W_STARTING)
                w->state = W_IDLE;
            m->spawn_failures = 0;
            OCP_LOG(OCP_LOG_INFO, "worker %d ready: RSS %lld KiB, PSS %lld KiB", w->pid,
                    (long long)json_integer_value(json_object_get(msg, "rss_kb")),
                    (long long)json_integer_value(json_object_get(msg, "pss_kb")));
        } else if (t && strcmp(t, "done") == 0) {
            page_done(m, w, msg);
        }
        json_decref(msg);
    }
    if (rc) {
        OCP_LOG(OCP_LOG_ERROR, "worker %d sent a malformed message: killing it", w->pid);
        snprintf(w->kill_reason, sizeof w->kill_reason, "worker %d sent a malformed message",
                 w->pid);
        kill(w->pid, SIGKILL);
    }
}

static double in_flight_bytes(const master *m)
{
    double sum = 0;
    for (const worker *w = m->workers; w; w = w->next) {
        sum += (double)w->baseline_kb * 1024;
        for (const held *h = w->task; h; h = h->bnext)
            sum += h->est_bytes;
    }
    return sum;
}

/* Gives idle workers waiting pages: each up to batch-pages of them (a page that failed in a
 * batch goes alone), within the memory budget. */
static void dispatch(master *m)
{
    double budget = (double)m->pc.memory_budget_mb * 1048576.0;
    int most = m->pc.batch_pages > 1 ? m->pc.batch_pages : 1;
    held **pick = ocp_xcalloc((size_t)most, sizeof *pick);
    for (worker *w = m->workers; w; w = w->next) {
        if (w->state != W_IDLE || w->gen != m->gen || m->draining)
            continue;
        int np = 0;
        /* The workers' idle sizes, and what pages in flight are expected to add. */
        double base = 0, load = budget > 0 ? in_flight_bytes(m) : 0;
        for (const worker *x = m->workers; x && budget > 0; x = x->next)
            base += (double)x->baseline_kb * 1024;
        for (held *h = m->held; h && np < most; h = h->next) {
            if (h->state != H_WAITING)
                continue;
            if (!json_is_object(h->payload)) {
                char why[300];
                snprintf(why, sizeof why, "malformed task payload: not a JSON object");
                ocp_broker_fail(m->b, h->t.id, OCP_FAIL_MALFORMED, why, ocp_wall_now(),
                                ocp_wall_now(), 0);
                drop_held(m, h);
                free(pick);
                return; /* the list changed: start again next turn */
            }
            if (np > 0 && h->solo)
                continue; /* it runs alone */
            if (budget > 0) {
                if (base + h->est_bytes > budget) {
                    char why[300];
                    snprintf(why, sizeof why,
                             "page needs about %.0f MB, more than memory-budget %ld MB leaves "
                             "beside the workers' %.0f MB",
                             h->est_bytes / 1048576.0, m->pc.memory_budget_mb, base / 1048576.0);
                    ocp_broker_fail(m->b, h->t.id, OCP_FAIL_BUDGET, why, ocp_wall_now(),
                                    ocp_wall_now(), 0);
                    if (m->hooks && m->hooks->on_result)
                        m->hooks->on_result(m->hooks->ctx, h->t.id, 0, why);
                    OCP_LOG(OCP_LOG_WARN, "page %s: %s", h->t.id, why);
                    drop_held(m, h);
                    free(pick);
                    return; /* the list changed: start again next turn */
                }
                if (load + h->est_bytes > budget)
                    continue; /* waits; a smaller page may fit now */
            }
            pick[np++] = h;
            load += h->est_bytes;
            if (h->solo)
                break;
        }
        if (!np)
            break;
        json_t *msg;
        if (np == 1) {
            msg = json_pack("{s:s, s:s, s:O}", "t", "task", "id", pick[0]->t.id, "payload",
                            pick[0]->payload);
        } else {
            json_t *arr = json_array();
            for (int i = 0; i < np; i++)
                json_array_append_new(arr, json_pack("{s:s, s:O}", "id", pick[i]->t.id,
                                                     "payload", pick[i]->payload));
            msg = json_pack("{s:s, s:o}", "t", "tasks", "tasks", arr);
        }
        int rc = ocp_proto_send(w->fd, msg, -1);
        json_decref(msg);
        if (rc) {
            OCP_LOG_ERR(OCP_LOG_WARN, rc, "worker %d: cannot send a page", w->pid);
            continue;
        }
        double now = ocp_now(), wall = ocp_wall_now();
        for (int i = np - 1; i >= 0; i--) {
            pick[i]->state = H_RUNNING;
            pick[i]->started = now;
            pick[i]->started_wall = wall;
            pick[i]->bnext = i + 1 < np ? pick[i + 1] : NULL;
            ocp_broker_started(m->b, pick[i]->t.id, w->pid);
        }
        w->task = pick[0];
        w->state = W_BUSY;
        w->sampled_peak_kb = 0;
        w->batch_peak_kb = 0;
        w->peak_page[0] = '\0';
    }
    free(pick);
}

static void lease_more(master *m)
{
    if (m->draining)
        return;
    int want = capacity(m) - m->n_held;
    if (want <= 0)
        return;
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
        return;
    }
    if (m->lease_failing)
        OCP_LOG(OCP_LOG_WARN, "lease: the broker answers again");
    m->lease_failing = 0;
    for (int i = 0; i < n; i++) {
        held *h = ocp_xcalloc(1, sizeof *h);
        h->t = got[i];
        h->state = H_WAITING;
        h->est_bytes = estimate(&m->pc, h->t.payload, h);
        h->solo = m->pc.batch_pages > 1 && is_solo(m, h->t.id);
        /* Append: pages start in the order they were leased (priority, then age). */
        held **pp = &m->held;
        while (*pp)
            pp = &(*pp)->next;
        *pp = h;
        m->n_held++;
        if (!m->pc.acks_late) {
            /* Acknowledged on receipt: a lost page is not delivered again. */
            ocp_broker_ack_early(m->b, m->owner, h->t.id);
        }
    }
    if (n)
        OCP_LOG(OCP_LOG_INFO, "lease: %d more, holding %d (limit %d)", n, m->n_held, capacity(m));
    /* An empty queue is asked less often (each ask takes the write lock). */
    m->lease_interval = n ? 0.02 : fmin(0.5, m->lease_interval * 2 + 0.02);
    free(got);
}

static void renew_all(master *m)
{
    if (!m->n_held)
        return;
    char **ids = ocp_xcalloc((size_t)m->n_held, sizeof *ids);
    int n = 0;
    for (held *h = m->held; h; h = h->next)
        ids[n++] = h->t.id;
    if (ocp_broker_renew(m->b, m->owner, ids, n, m->pc.lease_timeout_s))
        OCP_LOG(OCP_LOG_ERROR, "renew: %s", ocp_broker_errmsg(m->b));
    free(ids);
}

static void watchdog(master *m)
{
    double now = ocp_now();
    for (worker *w = m->workers; w; w = w->next) {
        if (w->state != W_BUSY || !w->task || w->kill_reason[0])
            continue;
        if (m->pc.hard_memory_limit_mb > 0) {
            long rss = ocp_memstat_rss(w->pid);
            if (rss > w->sampled_peak_kb)
                w->sampled_peak_kb = rss;
            if (rss > m->pc.hard_memory_limit_mb * 1024) {
                snprintf(
                    w->kill_reason, sizeof w->kill_reason,
                    "memory limit: worker %d reached %ld MB RSS, over hard-memory-limit %ld MB",
                    w->pid, rss / 1024, m->pc.hard_memory_limit_mb);
                OCP_LOG(OCP_LOG_WARN, "page %s: %s: killing it", w->task->t.id, w->kill_reason);
                kill(w->pid, SIGKILL);
                continue;
            }
        }
        /* A batch has the sum of its pages' limits (none when a page has none). */
        double limit = 0;
        int n = 0;
        for (const held *h = w->task; h && limit >= 0; h = h->bnext, n++) {
            double l = m->pc.time_limit_s;
            if (h->time_limit > 0 && (l <= 0 || h->time_limit < l))
                l = h->time_limit;
            limit = l > 0 ? limit + l : -1;
        }
        if (limit > 0 && now - w->task->started > limit) {
            if (n > 1)
                snprintf(w->kill_reason, sizeof w->kill_reason,
                         "time limit: %d pages read together ran over %.1f s (their limits "
                         "summed)",
                         n, limit);
            else
                snprintf(w->kill_reason, sizeof w->kill_reason,
                         "time limit: the page ran over %.1f s (%s)", limit,
                         limit == m->pc.time_limit_s ? "time-limit" : "the task's time_limit");
            OCP_LOG(OCP_LOG_WARN, "page %s: %s: killing worker %d", w->task->t.id, w->kill_reason,
                    w->pid);
            kill(w->pid, SIGKILL);
        }
    }
}

static json_t *memjson(pid_t pid)
{
    ocp_memstat ms;
    if (ocp_memstat_read(pid, 1, &ms))
        return json_null();
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "rss_kb", (json_int_t)ms.rss_kb, "pss_kb",
                     (json_int_t)ms.pss_kb, "swap_kb", (json_int_t)ms.swap_kb, "peak_rss_kb",
                     (json_int_t)ms.peak_rss_kb, "shared_kb", (json_int_t)ms.shared_kb);
}

/* The node's figures for `ocrpool monitor` (and the HTTP API to come). */
static json_t *build_stats(master *m)
{
    static const char *const states[] = {"starting", "idle", "busy", "exiting"};
    double now = ocp_now();
    json_t *o = json_object(), *ws = json_array(), *zs = json_array(), *rec = json_object();
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "owner", json_string(m->owner));
    json_object_set_new(o, "started", json_real(m->started_wall));
    json_object_set_new(o, "state",
                        json_string(m->cold       ? "stopping-cold"
                                    : m->draining ? "stopping"
                                                  : "running"));
    json_object_set_new(o, "settings",
                        json_pack("{s:s, s:s, s:i, s:i, s:b, s:i, s:I, s:I, s:I, s:f, s:f, s:i}",
                                  "engine", m->pc.engine, "lang", m->pc.ep.lang, "concurrency",
                                  m->pc.concurrency, "prefetch_multiplier",
                                  m->pc.prefetch_multiplier, "acks_late", m->pc.acks_late,
                                  "max_tasks_per_child", m->pc.max_tasks_per_child,
                                  "max_memory_per_child_kb", (json_int_t)m->pc.max_memory_per_child,
                                  "hard_memory_limit_mb", (json_int_t)m->pc.hard_memory_limit_mb,
                                  "memory_budget_mb", (json_int_t)m->pc.memory_budget_mb,
                                  "time_limit_s", m->pc.time_limit_s, "lease_timeout_s",
                                  m->pc.lease_timeout_s, "max_deliveries", m->pc.max_deliveries));
    for (int i = 0; i < m->nz; i++) {
        json_t *z = json_pack("{s:i, s:i, s:b}", "pid", m->z[i].pid, "generation", m->z[i].gen,
                              "current", m->z[i].gen == m->gen);
        json_object_set_new(z, "memory", memjson(m->z[i].pid));
        json_array_append_new(zs, z);
    }
    json_object_set_new(o, "zygotes", zs);
    /* GPUs, when NVML is there: each device's memory and use, each worker's memory on it. */
    ocp_gpu_list *gl = ocp_xcalloc(1, sizeof *gl);
    ocp_gpu_discover(gl);
    json_t *gj = json_array();
    for (int i = 0; i < gl->n; i++) {
        const ocp_gpu_device *d = &gl->dev[i];
        json_array_append_new(
            gj, json_pack("{s:i, s:s, s:s, s:I, s:I, s:i, s:i}", "index", d->index, "name", d->name,
                          "uuid", d->uuid, "memory_total_bytes", (json_int_t)d->mem_total,
                          "memory_used_bytes", (json_int_t)d->mem_used, "utilization_gpu_percent",
                          d->util_gpu, "temperature_c", d->temp_c));
    }
    json_object_set_new(o, "gpus", gj);
    double in_flight = 0;
    for (worker *w = m->workers; w; w = w->next) {
        json_t *wj = json_pack("{s:i, s:i, s:s, s:i, s:I}", "pid", w->pid, "slot", w->slot, "state",
                               states[w->state], "pages_done", w->tasks_done, "baseline_pss_kb",
                               (json_int_t)w->baseline_kb);
        json_object_set_new(wj, "memory", w->pid > 0 ? memjson(w->pid) : json_null());
        json_object_set_new(
            wj, "gpu_memory_bytes",
            json_integer(w->pid > 0 ? (json_int_t)ocp_gpu_proc_bytes(gl, (unsigned)w->pid) : 0));
        if (w->task) {
            json_object_set_new(wj, "task",
                                json_pack("{s:s, s:s?, s:i, s:f, s:f, s:i}", "id", w->task->t.id,
                                          "source", w->task->source, "page", w->task->page, "age_s",
                                          now - w->task->started, "estimated_mb",
                                          w->task->est_bytes / 1048576.0, "batch_pages",
                                          batch_len(w)));
            for (const held *h = w->task; h; h = h->bnext)
                in_flight += h->est_bytes;
        }
        json_array_append_new(ws, wj);
    }
    json_object_set_new(o, "workers", ws);
    free(gl);
    for (int i = 0; i < 5; i++)
        json_object_set_new(rec, recycle_names[i], json_integer(m->recycles[i]));
    json_object_set_new(o, "recycles", rec);
    double up = now - m->started_mono;
    json_object_set_new(
        o, "pages",
        json_pack("{s:I, s:I, s:f, s:f, s:i, s:I}", "done", (json_int_t)m->pages_done, "failed",
                  (json_int_t)m->pages_failed, "per_second",
                  up > 0 ? (m->pages_done + m->pages_failed) / up : 0.0, "mean_seconds",
                  m->pages_done ? m->dur_sum / m->pages_done : 0.0, "held", m->n_held,
                  "peak_rss_kb_max", (json_int_t)m->peak_max_kb));
    json_t *hist = json_array();
    for (int i = 0; i < 9; i++)
        json_array_append_new(hist, json_integer(m->dur_buckets[i]));
    json_object_set_new(o, "duration_buckets", hist);
    json_object_set_new(o, "duration_sum", json_real(m->dur_sum));
    ocp_counts c;
    if (ocp_broker_counts(m->b, m->pc.only_group, &c) == 0)
        json_object_set_new(o, "queue",
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "ready", (json_int_t)c.ready,
                                      "leased", (json_int_t)c.leased, "done", (json_int_t)c.done,
                                      "failed", (json_int_t)c.failed, "buried",
                                      (json_int_t)c.buried));
    double base = 0;
    for (worker *w = m->workers; w; w = w->next)
        base += (double)w->baseline_kb * 1024;
    json_object_set_new(o, "budget",
                        json_pack("{s:I, s:f, s:f}", "limit_mb", (json_int_t)m->pc.memory_budget_mb,
                                  "in_use_mb", (base + in_flight) / 1048576.0, "pages_mb",
                                  in_flight / 1048576.0));
    return o;
}

static void control_request(master *m, int fd)
{
    ocp_proto_reader rd;
    json_t *req = NULL, *reply = NULL;
    ocp_proto_reader_init(&rd);
    if (ocp_proto_recv_timed(fd, &rd, &req, 1.0) != 0) {
        ocp_proto_reader_fini(&rd);
        return;
    }
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (!cmd) {
        reply = json_pack("{s:b, s:s}", "ok", 0, "error", "no cmd");
    } else if (strcmp(cmd, "stats") == 0) {
        reply = build_stats(m);
        json_object_set_new(reply, "ok", json_true());
    } else if (strcmp(cmd, "stop") == 0) {
        if (sig_term < 1)
            sig_term = 1;
        reply = json_pack("{s:b, s:s}", "ok", 1, "state", "stopping");
    } else if (strcmp(cmd, "stop-now") == 0) {
        sig_quit = 1;
        reply = json_pack("{s:b, s:s}", "ok", 1, "state", "stopping-cold");
    } else if (strcmp(cmd, "reload") == 0) {
        sig_hup = 1;
        reply = json_pack("{s:b}", "ok", 1);
    } else if (strcmp(cmd, "scale") == 0) {
        json_int_t n = json_integer_value(json_object_get(req, "n"));
        if (n < 1 || n > 1024) {
            reply = json_pack("{s:b, s:s}", "ok", 0, "error", "scale: n must be 1 to 1024");
        } else {
            OCP_LOG(OCP_LOG_WARN, "scale: concurrency %d -> %d", m->pc.concurrency, (int)n);
            m->pc.concurrency = (int)n;
            /* Fewer: idle workers beyond n go now, busy ones after their page. */
            int live = live_workers(m, m->gen);
            for (worker *w = m->workers; w && live > n; w = w->next)
                if (w->gen == m->gen && w->state == W_IDLE) {
                    send_exit(w);
                    live--;
                }
            reply = json_pack("{s:b, s:i}", "ok", 1, "concurrency", (int)n);
        }
    } else {
        reply = json_pack("{s:b, s:s}", "ok", 0, "error", "unknown command");
    }
    ocp_proto_send(fd, reply, -1);
    json_decref(reply);
    json_decref(req);
    ocp_proto_reader_fini(&rd);
}

static void control_accept(master *m)
{
    for (;;) {
        int fd = accept4(m->ctl_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        /* Only this user may talk to the node (the socket is 0600 in a 0700 folder). */
        struct ucred cr;
        socklen_t cl = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 && cr.uid == geteuid())
            control_request(m, fd);
        close(fd);
    }
}

static int handle_signals(master *m)
{
    if (sig_hup) {
        sig_hup = 0;
        if (m->hooks && m->hooks->reload && !m->draining) {
            ocp_pool_conf npc;
            if (m->hooks->reload(m->hooks->ctx, &npc) == 0) {
                char err[600];
                int old = m->gen;
                ocp_pool_conf saved = m->pc;
                m->pc = npc;
                m->gen++;
                if (m->nz == 2) {
                    /* A reload during a reload: the oldest zygote goes now. */
                    retire_zygote(m, m->z[0].gen < m->z[1].gen ? 0 : 1);
                }
                if (start_zygote(m, err, sizeof err)) {
                    OCP_LOG(OCP_LOG_ERROR, "reload: %s; keeping the running configuration", err);
                    m->pc = saved;
                    m->gen = old;
                } else {
                    OCP_LOG(OCP_LOG_WARN, "reload: configuration re-read, replacing workers");
                    for (worker *w = m->workers; w; w = w->next)
                        if (w->gen == old && w->state == W_IDLE)
                            send_exit(w);
                }
            } else {
                OCP_LOG(OCP_LOG_ERROR, "reload: the configuration is not valid; keeping the "
                                       "running one");
            }
        }
    }
    if ((sig_term >= 2 || sig_quit) && !m->cold) {
        m->cold = m->draining = 1;
        OCP_LOG(OCP_LOG_WARN, "cold shutdown: stopping running pages, they go back to the queue");
        for (worker *w = m->workers; w; w = w->next)
            if (w->pid > 0)
                kill(w->pid, SIGKILL);
    } else if (sig_term == 1 && !m->draining) {
        m->draining = 1;
        OCP_LOG(OCP_LOG_WARN, "warm shutdown: no new pages; running pages finish (again for cold)");
    }
    if (m->draining) {
        /* Pages held but not started go back at once, not counted as deliveries. */
        for (held *h = m->held, *next; h; h = next) {
            next = h->next;
            if (h->state == H_WAITING)
                release_task(m, h, "node shutting down", 1);
        }
        for (worker *w = m->workers; w; w = w->next)
            if (w->state == W_IDLE)
                send_exit(w);
    }
    return 0;
}

int ocp_pool_run(const ocp_pool_conf *pc, const char *url, const ocp_pool_hooks *hooks, char *err,
                 size_t errlen)
{
    master mm, *m = &mm;
    int rc;
    memset(m, 0, sizeof *m);
    m->ctl_fd = -1;
    m->pc = *pc;
    m->hooks = hooks;
    sig_term = sig_quit = sig_hup = 0;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return ocp_errf(-errno, err, errlen, "pipe: %s", strerror(errno));
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    ocp_log_set_role('M');

    /* The zygote first, before this process opens the broker or any library state. */
    if ((rc = start_zygote(m, err, errlen)))
        goto out;
    if ((rc = ocp_broker_open(url, &m->pc.broker, &m->b, err, errlen)))
        goto out;
    ocp_broker_owner_name(m->owner, sizeof m->owner);
    m->started_wall = ocp_wall_now();
    m->started_mono = ocp_now();
    m->ctl_fd = ocp_control_listen(m->ctl_path, sizeof m->ctl_path);
    if (m->ctl_fd < 0) {
        OCP_LOG_ERR(OCP_LOG_WARN, m->ctl_fd,
                    "no control socket (monitor and stop cannot reach "
                    "this node)");
        m->ctl_path[0] = '\0';
    }
    long n = 0;
    ocp_broker_reclaim_dead(m->b, &n);
    if (n)
        OCP_LOG(OCP_LOG_WARN,
                "%ld pages leased by nodes of this host that are gone: back in the queue", n);
    if (hooks && hooks->prepare && (rc = hooks->prepare(hooks->ctx, m->b)) != 0) {
        ocp_errf(rc, err, errlen, "stopped before starting");
        goto out;
    }
    OCP_LOG(OCP_LOG_INFO, "node %s: %d workers, prefetch %d, broker %s", m->owner,
            m->pc.concurrency, m->pc.prefetch_multiplier, url);
    for (;;) {
        double now = ocp_now();
        spawn_missing(m);
        if (now - m->last_lease >= m->lease_interval) {
            lease_more(m);
            m->last_lease = now;
        }
        dispatch(m);

        /* The end: idle (ocr), or shut down with nothing running. */
        int running = 0;
        for (worker *w = m->workers; w; w = w->next)
            running += batch_len(w);
        if (m->draining && !running) {
            int alive = 0;
            for (worker *w = m->workers; w; w = w->next)
                alive++;
            if (!alive || m->cold)
                break;
        }
        if (hooks && hooks->exit_when_idle && m->n_held == 0 && !m->draining) {
            ocp_counts c;
            if (ocp_broker_counts(m->b, m->pc.only_group, &c) == 0 && c.ready == 0 && c.leased == 0)
                break;
        }

        struct pollfd pf[3 + 2 + 1024];
        worker *wmap[1024];
        int np = 0;
        pf[np++] = (struct pollfd){sig_pipe[0], POLLIN, 0};
        pf[np++] = (struct pollfd){m->ctl_fd, POLLIN, 0};
        int zbase = np;
        for (int i = 0; i < m->nz; i++)
            pf[np++] = (struct pollfd){m->z[i].dead ? -1 : m->z[i].fd, POLLIN, 0};
        int wbase = np;
        for (worker *w = m->workers; w && np < (int)(sizeof pf / sizeof pf[0]); w = w->next) {
            wmap[np - wbase] = w;
            pf[np++] = (struct pollfd){w->fd >= 0 && !w->eof ? w->fd : -1, POLLIN, 0};
        }
        int timeout = m->held && m->n_held < capacity(m) ? 50 : 100;
        poll(pf, (nfds_t)np, timeout);
        if (pf[0].revents & POLLIN) {
            char buf[64];
            while (read(sig_pipe[0], buf, sizeof buf) > 0) {
            }
        }
        if (pf[1].revents & POLLIN)
            control_accept(m);
        handle_signals(m);
        for (int i = 0; i < m->nz; i++)
            if (pf[zbase + i].revents)
                handle_zygote(m, &m->z[i]);
        for (int i = wbase; i < np; i++) {
            worker *w = wmap[i - wbase];
            /* A worker may have been freed by the zygote's "exited" above. */
            int alive = 0;
            for (worker *x = m->workers; x; x = x->next)
                alive |= x == w;
            if (alive && pf[i].revents)
                handle_worker(m, w);
        }
        for (int i = 0; i < m->nz; i++) {
            if (m->z[i].dead) {
                retire_zygote(m, i);
                i--;
            }
        }
        if (current_zyg(m) == NULL && !m->draining) {
            OCP_LOG(OCP_LOG_ERROR, "the zygote died: starting a new one");
            char e2[600];
            m->gen++;
            if (start_zygote(m, e2, sizeof e2)) {
                rc = ocp_errf(OCP_E_ENGINE, err, errlen, "%s", e2);
                break;
            }
        }
        /* An old zygote whose workers are all gone after a reload: let it go. */
        for (int i = 0; i < m->nz; i++) {
            int anyw = 0;
            for (worker *w = m->workers; w; w = w->next)
                anyw |= w->gen == m->z[i].gen;
            if (m->z[i].gen != m->gen && !anyw) {
                retire_zygote(m, i);
                i--;
            }
        }
        now = ocp_now();
        if (now - m->last_watch >= 0.05) {
            watchdog(m);
            m->last_watch = now;
        }
        if (now - m->last_renew >= m->pc.lease_timeout_s / 3) {
            renew_all(m);
            m->last_renew = now;
        }
        if (m->pc.result_expires_s > 0 &&
            now - m->last_expire >= fmin(60, fmax(0.5, m->pc.result_expires_s / 2))) {
            long gone = 0;
            ocp_broker_expire(m->b, ocp_wall_now() - m->pc.result_expires_s, &gone);
            if (gone)
                OCP_LOG(OCP_LOG_INFO, "%ld finished pages expired (result-expires)", gone);
            m->last_expire = now;
        }
    }
    /* Cold: what is still held goes back, not counted. */
    while (m->held)
        release_task(m, m->held, "node stopped", 1);
out:
    /* An orderly end: workers see their sockets close and exit; each zygote sees its
     * socket close, reaps its workers (killing stragglers) and exits; we reap it. */
    for (worker *w = m->workers, *next; w; w = next) {
        next = w->next;
        if (w->pid > 0 && w->task)
            kill(w->pid, SIGKILL); /* only after a cold stop or an error */
        free_worker(m, w);
    }
    for (int i = 0; i < m->nz; i++) {
        close(m->z[i].fd);
        ocp_proto_reader_fini(&m->z[i].rd);
        waitpid(m->z[i].pid, NULL, 0);
    }
    ocp_broker_close(m->b);
    for (int i = 0; i < SOLO; i++)
        free(m->solo[i]);
    if (m->ctl_fd >= 0) {
        close(m->ctl_fd);
        unlink(m->ctl_path);
    }
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    sig_pipe[0] = sig_pipe[1] = -1;
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    return rc;
}
