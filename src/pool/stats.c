/*
 * stats.c: the node's figures (build_stats, for `ocrpool monitor` and the
 * HTTP metrics) and the control socket's server (control.h), on the
 * master's loop (master_int.h).
 *
 * The server never blocks the master: the listening socket and every
 * client are non-blocking and watched by the loop; a client has
 * OCP__CTL_DEADLINE seconds from its connection to send its request and
 * read the answer, or it is dropped; at most OCP__CTL_CLIENTS are served
 * at once. When that many are connected, a new connection takes the place
 * of the oldest client that has not sent a whole request (a request is
 * answered as soon as it is whole; the others wait in the listen backlog
 * while every client is being answered), and a request already sent is read
 * as its client is accepted: silent clients cannot keep `ocrpool monitor`
 * waiting behind them for their deadlines.
 */
#include "core/log.h"
#include "core/memstat.h"
#include "core/util.h"
#include "gpu/gpu.h"
#include "pool/control.h"
#include "pool/master_int.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct ctl_client {
    master *m;
    int fd;
    ocp_loop_io io;
    ocp_loop_timer deadline;
    ocp_proto_reader rd;
    unsigned char *out; /* the framed answer, once there is one */
    size_t out_len, out_off;
    ctl_client *next;
};

static json_t *memjson(pid_t pid)
{
    ocp_memstat ms;
    if (ocp_memstat_read(pid, 1, &ms))
        return json_null();
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "rss_kb", (json_int_t)ms.rss_kb, "pss_kb",
                     (json_int_t)ms.pss_kb, "swap_kb", (json_int_t)ms.swap_kb, "peak_rss_kb",
                     (json_int_t)ms.peak_rss_kb, "shared_kb", (json_int_t)ms.shared_kb);
}

static json_t *settings_json(const ocp_pool_conf *pc)
{
    return json_pack("{s:s, s:s, s:i, s:i, s:b, s:i, s:I, s:I, s:I, s:f, s:f, s:i}", "engine",
                     pc->engine, "lang", pc->ep.lang, "concurrency", pc->concurrency,
                     "prefetch_multiplier", pc->prefetch_multiplier, "acks_late", pc->acks_late,
                     "max_tasks_per_child", pc->max_tasks_per_child, "max_memory_per_child_kb",
                     (json_int_t)pc->max_memory_per_child, "hard_memory_limit_mb",
                     (json_int_t)pc->hard_memory_limit_mb, "memory_budget_mb",
                     (json_int_t)pc->memory_budget_mb, "time_limit_s", pc->time_limit_s,
                     "lease_timeout_s", pc->lease_timeout_s, "max_deliveries", pc->max_deliveries);
}

/* GPUs, when NVML is there: each device's memory and use. */
static json_t *gpus_json(const ocp_gpu_list *gl)
{
    json_t *gj = json_array();
    for (int i = 0; i < gl->n; i++) {
        const ocp_gpu_device *d = &gl->dev[i];
        json_array_append_new(
            gj, json_pack("{s:i, s:s, s:s, s:I, s:I, s:i, s:i}", "index", d->index, "name", d->name,
                          "uuid", d->uuid, "memory_total_bytes", (json_int_t)d->mem_total,
                          "memory_used_bytes", (json_int_t)d->mem_used, "utilization_gpu_percent",
                          d->util_gpu, "temperature_c", d->temp_c));
    }
    return gj;
}

/* Each worker: its state, memory (and GPU memory), and the page it reads. */
static json_t *workers_json(const master *m, const ocp_gpu_list *gl, double now)
{
    static const char *const states[] = {"starting", "idle", "busy", "exiting"};
    json_t *ws = json_array();
    for (const worker *w = m->workers; w; w = w->next) {
        json_t *wj = json_pack("{s:i, s:i, s:s, s:i, s:I}", "pid", w->pid, "slot", w->slot, "state",
                               states[w->state], "pages_done", w->tasks_done, "baseline_pss_kb",
                               (json_int_t)w->baseline_kb);
        json_object_set_new(wj, "memory", w->pid > 0 ? memjson(w->pid) : json_null());
        json_object_set_new(
            wj, "gpu_memory_bytes",
            json_integer(w->pid > 0 ? (json_int_t)ocp_gpu_proc_bytes(gl, (unsigned)w->pid) : 0));
        if (w->task)
            json_object_set_new(wj, "task",
                                json_pack("{s:s, s:s?, s:i, s:f, s:f, s:i}", "id", w->task->t.id,
                                          "source", w->task->source, "page", w->task->page, "age_s",
                                          now - w->task->started, "estimated_mb",
                                          w->task->est_bytes / 1048576.0, "batch_pages",
                                          ocp__batch_len(w)));
        json_array_append_new(ws, wj);
    }
    return ws;
}

static json_t *recycles_json(const master *m)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "max_tasks_per_child",
                     (json_int_t)m->recycles_max_tasks, "max_memory_per_child",
                     (json_int_t)m->recycles_max_memory, "hard_memory_limit",
                     (json_int_t)m->recycles_kind[OCP_FAIL_MEMORY_LIMIT], "time_limit",
                     (json_int_t)m->recycles_kind[OCP_FAIL_TIME_LIMIT], "crashed",
                     (json_int_t)m->recycles_kind[OCP_FAIL_CRASHED]);
}

/* Pages done and failed, their rate, durations and the budget's use. */
static void pages_json(master *m, json_t *o, double now)
{
    double up = now - m->started_mono;
    json_object_set_new(
        o, "pages",
        json_pack("{s:I, s:I, s:f, s:f, s:i, s:I}", "done", (json_int_t)m->pages_done, "failed",
                  (json_int_t)m->pages_failed, "per_second",
                  up > 0 ? (m->pages_done + m->pages_failed) / up : 0.0, "mean_seconds",
                  m->pages_done ? m->dur_sum / m->pages_done : 0.0, "held", m->n_held,
                  "peak_rss_kb_max", (json_int_t)m->peak_max_kb));
    json_t *hist = json_array();
    for (int i = 0; i <= OCP_DURATION_NB; i++)
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
    double base = 0, in_flight = ocp__in_flight_bytes(m);
    for (worker *w = m->workers; w; w = w->next)
        base += (double)w->baseline_kb * 1024;
    base += ocp__recog_bytes(m);
    in_flight -= base;
    json_object_set_new(o, "budget",
                        json_pack("{s:I, s:f, s:f}", "limit_mb", (json_int_t)m->pc.memory_budget_mb,
                                  "in_use_mb", (base + in_flight) / 1048576.0, "pages_mb",
                                  in_flight / 1048576.0));
}

json_t *ocp__build_stats(master *m)
{
    double now = ocp_now();
    json_t *o = json_object(), *zs = json_array();
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "owner", json_string(m->owner));
    json_object_set_new(o, "started", json_real(m->started_wall));
    json_object_set_new(o, "state",
                        json_string(m->cold       ? "stopping-cold"
                                    : m->draining ? "stopping"
                                                  : "running"));
    json_object_set_new(o, "settings", settings_json(&m->pc));
    for (int i = 0; i < m->nz; i++) {
        json_t *z = json_pack("{s:i, s:i, s:b}", "pid", m->z[i].pid, "generation", m->z[i].gen,
                              "current", m->z[i].gen == m->gen);
        json_object_set_new(z, "memory", memjson(m->z[i].pid));
        json_array_append_new(zs, z);
    }
    json_object_set_new(o, "zygotes", zs);
    ocp_gpu_list *gl = ocp_xcalloc(1, sizeof *gl);
    ocp_gpu_discover(gl);
    json_object_set_new(o, "gpus", gpus_json(gl));
    json_object_set_new(o, "workers", workers_json(m, gl, now));
    free(gl);
    json_object_set_new(o, "recycles", recycles_json(m));
    json_object_set_new(o, "recognizer", ocp__recog_json(m));
    pages_json(m, o, now);
    if (m->side_path)
        json_object_set_new(o, "sidecar",
                            json_pack("{s:s, s:i, s:I}", "name", m->side_name, "pid", m->side_pid,
                                      "restarts", (json_int_t)m->side_restarts));
    return o;
}

/* {"cmd":"scale","n":N}: fewer workers: idle ones beyond n go now, busy ones after their
 * page; more: the next turn spawns them. */
static json_t *scale(master *m, json_t *req)
{
    json_int_t n = json_integer_value(json_object_get(req, "n"));
    if (n < 1 || n > OCP_MAX_WORKERS) {
        char why[80];
        snprintf(why, sizeof why, "scale: n must be 1 to %d", OCP_MAX_WORKERS);
        return json_pack("{s:b, s:s}", "ok", 0, "error", why);
    }
    OCP_LOG(OCP_LOG_WARN, "scale: concurrency %d -> %d", m->pc.concurrency, (int)n);
    m->pc.concurrency = (int)n;
    int live = ocp__live_workers(m, m->gen);
    for (worker *w = m->workers; w && live > n; w = w->next)
        if (w->gen == m->gen && w->state == W_IDLE) {
            ocp__send_exit(m, w);
            live--;
        }
    return json_pack("{s:b, s:i}", "ok", 1, "concurrency", (int)n);
}

json_t *ocp__control_answer(master *m, json_t *req)
{
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    json_t *reply;
    if (!cmd) {
        reply = json_pack("{s:b, s:s}", "ok", 0, "error", "no cmd");
    } else if (strcmp(cmd, "stats") == 0) {
        reply = ocp__build_stats(m);
        json_object_set_new(reply, "ok", json_true());
    } else if (strcmp(cmd, "stop") == 0) {
        ocp__master_request_stop(0);
        reply = json_pack("{s:b, s:s}", "ok", 1, "state", "stopping");
    } else if (strcmp(cmd, "stop-now") == 0) {
        ocp__master_request_stop(1);
        reply = json_pack("{s:b, s:s}", "ok", 1, "state", "stopping-cold");
    } else if (strcmp(cmd, "reload") == 0) {
        ocp__master_request_reload();
        reply = json_pack("{s:b}", "ok", 1);
    } else if (strcmp(cmd, "scale") == 0) {
        reply = scale(m, req);
    } else {
        reply = json_pack("{s:b, s:s}", "ok", 0, "error", "unknown command");
    }
    return reply;
}

static void client_close(ctl_client *c)
{
    master *m = c->m;
    for (ctl_client **pp = &m->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    ocp_loop_io_stop(m->loop, &c->io);
    ocp_loop_timer_stop(m->loop, &c->deadline);
    close(c->fd);
    ocp_proto_reader_fini(&c->rd);
    free(c->out);
    free(c);
    if (m->n_clients-- == OCP__CTL_CLIENTS && m->ctl_fd >= 0)
        ocp_loop_io_set(&m->ctl_io, POLLIN); /* room again: accept the next */
}

static void client_late(ocp_loop_timer *t)
{
    ctl_client *c = t->data;
    OCP_LOG(OCP_LOG_DEBUG, "control: a client took over %.0f s: dropped", OCP__CTL_DEADLINE);
    client_close(c);
}

/* Writes what the socket takes of the answer; closes the client when it is all out. */
static void client_write(ctl_client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* the rest when it is writable */
        if (w <= 0)
            break;
        c->out_off += (size_t)w;
    }
    client_close(c);
}

/* A request is small: one announced or buffered over OCP__CTL_MAX is not ours (nor is the
 * memory it would take). */
static int too_big(const ocp_proto_reader *rd)
{
    if (rd->len > 4 + (size_t)OCP__CTL_MAX)
        return 1;
    if (rd->len < 4)
        return 0;
    size_t n = ((size_t)rd->buf[0] << 24) | ((size_t)rd->buf[1] << 16) | ((size_t)rd->buf[2] << 8) |
               rd->buf[3];
    return n > OCP__CTL_MAX;
}

int ocp__control_read(master *m, ocp_proto_reader *rd, int fd, unsigned char **out, size_t *out_len)
{
    json_t *req = NULL;
    int r = ocp_proto_fill(rd, fd);
    if (too_big(rd)) {
        OCP_LOG(OCP_LOG_DEBUG, "control: a request over %d bytes: client dropped", OCP__CTL_MAX);
        return -1;
    }
    int rc = ocp_proto_next(rd, &req);
    if (rc || (!req && (r == 0 || (r < 0 && r != -EAGAIN))))
        return -1; /* gone, or not our protocol */
    if (!req)
        return 0; /* the rest of the request later */
    json_t *reply = ocp__control_answer(m, req);
    json_decref(req);
    *out = ocp_proto_frame(reply, out_len);
    json_decref(reply);
    return *out ? 1 : -1;
}

static void client_io(ocp_loop_io *io, short revents)
{
    ctl_client *c = (ctl_client *)((char *)io - offsetof(ctl_client, io));
    (void)revents;
    if (c->out) {
        client_write(c);
        return;
    }
    int rc = ocp__control_read(c->m, &c->rd, c->fd, &c->out, &c->out_len);
    if (rc < 0) {
        client_close(c);
        return;
    }
    if (rc == 0)
        return;
    ocp_loop_io_set(&c->io, POLLOUT);
    client_write(c);
}

/* The client connected longest ago that has not sent a whole request (it has no answer), or
 * NULL (the list is newest first). */
static ctl_client *oldest_silent(master *m)
{
    ctl_client *old = NULL;
    for (ctl_client *c = m->clients; c; c = c->next)
        if (!c->out)
            old = c;
    return old;
}

static void control_accept(ocp_loop_io *io, short revents)
{
    (void)revents;
    master *m = io->data;
    for (;;) {
        ctl_client *victim = NULL;
        if (m->n_clients >= OCP__CTL_CLIENTS && !(victim = oldest_silent(m)))
            break;
        int fd = accept4(m->ctl_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        /* Only this user may talk to the node (the socket is 0600 in a 0700 folder). */
        struct ucred cr;
        socklen_t cl = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 || cr.uid != geteuid()) {
            close(fd);
            continue;
        }
        if (victim) {
            OCP_LOG(OCP_LOG_DEBUG, "control: %d clients: the oldest silent one dropped",
                    OCP__CTL_CLIENTS);
            client_close(victim);
        }
        ctl_client *c = ocp_xcalloc(1, sizeof *c);
        c->m = m;
        c->fd = fd;
        ocp_proto_reader_init(&c->rd);
        ocp_loop_io_init(&c->io);
        ocp_loop_timer_init(&c->deadline);
        ocp_loop_io_start(m->loop, &c->io, fd, POLLIN, client_io, c);
        ocp_loop_timer_start(m->loop, &c->deadline, OCP__CTL_DEADLINE, client_late, c);
        c->next = m->clients;
        m->clients = c;
        m->n_clients++;
        client_io(&c->io, POLLIN); /* its request, if it is there (it may be answered now) */
    }
    ocp_loop_io_set(&m->ctl_io, 0); /* all being answered: the next wait in the backlog */
}

void ocp__control_start(master *m)
{
    ocp_loop_io_init(&m->ctl_io);
    m->ctl_fd = ocp_control_listen(m->ctl_path, sizeof m->ctl_path);
    if (m->ctl_fd < 0) {
        OCP_LOG_ERR(OCP_LOG_WARN, m->ctl_fd,
                    "no control socket (monitor and stop cannot reach this node)");
        m->ctl_path[0] = '\0';
        return;
    }
    ocp_loop_io_start(m->loop, &m->ctl_io, m->ctl_fd, POLLIN, control_accept, m);
}

void ocp__control_stop(master *m)
{
    while (m->clients)
        client_close(m->clients);
    ocp_loop_io_stop(m->loop, &m->ctl_io);
    if (m->ctl_fd >= 0) {
        close(m->ctl_fd);
        unlink(m->ctl_path);
    }
    m->ctl_fd = -1;
}
