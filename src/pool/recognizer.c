/*
 * recognizer.c: the master's side of the shared recognizers (recog/recog.h,
 * README "Shared recognizer"): one per device of the plan (one on the CPU),
 * each forked by the current zygote on our request, so that on the CPU it
 * shares the zygote's models copy-on-write and nothing of a GPU ever exists
 * in the master or the zygote. The zygote passes us a socket to it (as for a
 * worker); on it the recognizer says "ready" (or "fatal") and sends its
 * figures every second; its end is its death.
 *
 * A recognizer that dies is started again after a delay that doubles (0.25 s
 * to 30 s); the pages whose lines it held lose nothing: each worker reads
 * the lines it did not get back itself, with the same bits (recog/client.c),
 * so no page is delivered again and none twice. One that cannot start
 * ("fatal": a model that does not load) or that dies OCP__RECOG_DEATHS times
 * in a row within OCP__RECOG_QUICK seconds of starting is given up: the node
 * falls back to reading in the workers, logged and counted (stats:
 * recognizer.fallbacks), until it restarts or reloads.
 */
#include "core/log.h"
#include "core/memstat.h"
#include "core/util.h"
#include "pool/master_int.h"
#include "recog/recog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const rstates[] = {"down", "starting", "loading", "ready"};

void ocp__recog_init(master *m)
{
    m->n_rec = 0;
    if (!m->pc.recognizer_shared)
        return;
    /* One per distinct device of the workers' plan; the CPU (no plan) has one. */
    int n = m->pc.n_visible ? m->pc.n_visible : 1;
    for (int i = 0; i < n && m->n_rec < OCP__MAX_RECOG; i++) {
        const char *vis = m->pc.n_visible ? m->pc.visible[i] : "";
        int seen = 0;
        for (int k = 0; k < m->n_rec; k++)
            seen |= strcmp(m->rec[k].visible, vis) == 0;
        if (seen)
            continue;
        recognizer *r = &m->rec[m->n_rec];
        memset(r, 0, sizeof *r);
        r->index = m->n_rec++;
        r->fd = -1;
        r->pid = -1;
        snprintf(r->visible, sizeof r->visible, "%s", vis);
        /* Abstract names: no file to clean up, gone with the process; unique per node. */
        snprintf(r->addr, sizeof r->addr, "ocrpool-recog-%d-%d", (int)getpid(), r->index);
        ocp_proto_reader_init(&r->rd);
        ocp_loop_io_init(&r->io);
    }
    OCP_LOG(OCP_LOG_INFO, "recognizer shared: %d recognizer(s), batches of %d lines or %.1f ms",
            m->n_rec, m->pc.recognizer_batch, m->pc.recognizer_wait_s * 1000);
}

/* Every worker is given every recognizer ("A,B,..."): each of its requests goes to the one
 * with the shortest queue (recog/client.c), not to a fixed one, so that a device whose
 * queue grows (a slower GPU, one reading on the CPU after a failure) gets fewer lines. */
const char *ocp__recog_addr_for(const master *m, int slot)
{
    static char list[OCP__MAX_RECOG * 66];
    (void)slot;
    if (!m->n_rec || m->rec_fallback)
        return "";
    size_t n = 0;
    list[0] = '\0';
    for (int k = 0; k < m->n_rec && n < sizeof list; k++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", k ? "," : "", m->rec[k].addr);
    return list;
}

/* The node gives up its recognizers: workers read their own lines from now on (those
 * running see the sockets close and do so at once; new ones are given no address). */
static void fall_back(master *m, const char *why)
{
    if (m->rec_fallback)
        return;
    m->rec_fallback = 1;
    m->rec_fallbacks++;
    snprintf(m->rec_why, sizeof m->rec_why, "%s", why);
    OCP_LOG(OCP_LOG_ERROR, "recognizer: %s: the workers read their lines themselves from now on",
            why);
}

static void closed(master *m, recognizer *r)
{
    ocp_loop_io_stop(m->loop, &r->io);
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    ocp_proto_reader_fini(&r->rd);
    ocp_proto_reader_init(&r->rd);
}

/* It ended (its socket closed, or its zygote reaped it): restart after the back-off, or give
 * up after too many quick deaths. pid names it in the log (r->pid is -1 once it is reaped). */
static void died(master *m, recognizer *r, int pid, const char *why)
{
    if (r->state == R_DOWN)
        return;
    int was_ready = r->state == R_READY;
    if (r->pid > 0 && r->state != R_ASKED && r->fd >= 0) {
        /* Our end of its socket failed: it may still run. We are not its parent: the zygote
         * reaps it, after which its pid may be another process's, so a plain kill(pid) may
         * hit a stranger. A pidfd names the process it was opened on; it is ours to signal if
         * the recognizer was alive when it was opened, which its end of the socket still open
         * afterwards proves (it alone holds that end, until it exits). An end that closed: it
         * has exited or is exiting, nothing to signal. Its zygote reaps it either way. */
        int pfd = (int)pidfd_open(r->pid, 0);
        struct pollfd p = {r->fd, POLLIN | POLLRDHUP, 0};
        if (pfd >= 0 && poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
            pidfd_send_signal(pfd, SIGKILL, NULL, 0);
        if (pfd >= 0)
            close(pfd);
    }
    closed(m, r);
    r->state = R_DOWN;
    double lived = ocp_now() - r->started;
    if (r->zgen != m->gen) {
        /* Its zygote was retired after a reload (it died with it): not a failure; the
         * current zygote starts the next one at once. */
        OCP_LOG(OCP_LOG_INFO, "recognizer %d (pid %d) of the previous configuration %s", r->index,
                pid, why);
        r->restart_at = 0;
        return;
    }
    r->quick_deaths = lived < OCP__RECOG_QUICK ? r->quick_deaths + 1 : 1;
    double delay = fmin(30.0, 0.25 * pow(2, r->quick_deaths - 1));
    r->restart_at = ocp_now() + delay;
    if (m->draining)
        return;
    OCP_LOG(OCP_LOG_ERROR, "recognizer %d (pid %d) %s after %.1f s%s; the workers read its lines",
            r->index, pid, why, lived, was_ready ? "" : " (not ready)");
    if (r->quick_deaths >= OCP__RECOG_DEATHS) {
        char msg[200];
        snprintf(msg, sizeof msg, "recognizer %d died %d times in a row, each within %.0f s",
                 r->index, r->quick_deaths, OCP__RECOG_QUICK);
        fall_back(m, msg);
    } else {
        OCP_LOG(OCP_LOG_WARN, "recognizer %d: next start in %.2f s", r->index, delay);
    }
}

/* Reads what r sent (one read) and acts on its messages; returns the read's result. */
static int drain(master *m, recognizer *r)
{
    int n = ocp_proto_fill(&r->rd, r->fd);
    json_t *msg;
    while (r->fd >= 0 && ocp_proto_next(&r->rd, &msg) == 0 && msg) {
        const char *t = json_string_value(json_object_get(msg, "t"));
        if (t && strcmp(t, "ready") == 0) {
            r->state = R_READY;
            OCP_LOG(OCP_LOG_INFO, "recognizer %d ready (pid %d, @%s)", r->index, r->pid, r->addr);
        } else if (t && strcmp(t, "fatal") == 0) {
            const char *e = json_string_value(json_object_get(msg, "error"));
            char why[400];
            snprintf(why, sizeof why, "recognizer %d cannot start: %s", r->index, e ? e : "?");
            closed(m, r);
            r->state = R_DOWN;
            fall_back(m, why);
        } else if (t && strcmp(t, "stats") == 0) {
            double now = ocp_now();
            long lines = (long)json_integer_value(json_object_get(msg, "lines"));
            if (r->last_at > 0 && now > r->last_at)
                r->rate = (double)(lines - r->last_lines) / (now - r->last_at);
            r->last_lines = lines;
            r->last_at = now;
            ocp_memstat ms;
            if (ocp_memstat_read(r->pid, 1, &ms) == 0)
                r->pss_kb = ms.pss_kb > 0 ? ms.pss_kb : ms.rss_kb;
            json_decref(r->stats);
            r->stats = json_incref(msg);
        }
        json_decref(msg);
    }
    return n;
}

static void rec_readable(ocp_loop_io *io, short revents)
{
    (void)revents;
    master *m = io->data;
    recognizer *r = (recognizer *)((char *)io - offsetof(recognizer, io));
    int n = drain(m, r);
    if (r->fd >= 0 && (n == 0 || (n < 0 && n != -EAGAIN)))
        died(m, r, r->pid, "ended");
}

int ocp__recog_zygote_msg(master *m, zyg *z, json_t *msg)
{
    const char *t = json_string_value(json_object_get(msg, "t"));
    int pid = (int)json_integer_value(json_object_get(msg, "pid"));
    if (t && strcmp(t, "recog_spawned") == 0) {
        int idx = (int)json_integer_value(json_object_get(msg, "index"));
        int fd = z->rd.passed_fd;
        z->rd.passed_fd = -1;
        recognizer *r = idx >= 0 && idx < m->n_rec ? &m->rec[idx] : NULL;
        if (!r || r->state != R_ASKED || fd < 0) {
            if (fd >= 0)
                close(fd);
            if (pid > 0)
                kill(pid, SIGKILL);
            return 1;
        }
        r->pid = pid;
        r->fd = fd;
        r->state = R_LOADING;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        ocp_loop_io_start(m->loop, &r->io, fd, POLLIN, rec_readable, m);
        return 1;
    }
    if (t && strcmp(t, "exited") == 0) {
        for (int k = 0; k < m->n_rec; k++) {
            recognizer *r = &m->rec[k];
            int gone = pid > 0 && r->gone_pid == pid;
            if (!gone && (r->pid != pid || r->zgen != z->gen))
                continue;
            int st = (int)json_integer_value(json_object_get(msg, "status"));
            char why[120];
            if (WIFSIGNALED(st))
                snprintf(why, sizeof why, "was killed by signal %d (SIG%s)", WTERMSIG(st),
                         sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
            else
                snprintf(why, sizeof why, "exited with status %d", WEXITSTATUS(st));
            if (gone) {
                /* Its socket's end told first and the next one is asked for already: only
                 * how it ended is left to say. */
                OCP_LOG(OCP_LOG_ERROR, "recognizer %d (pid %d) %s", r->index, pid, why);
                r->gone_pid = -1;
                return 1;
            }
            /* What it said before it went is read first (a "fatal" says why). */
            if (r->fd >= 0)
                drain(m, r);
            if (r->state == R_DOWN) /* its socket's end told first: now how it ended */
                OCP_LOG(OCP_LOG_ERROR, "recognizer %d (pid %d) %s", r->index, pid, why);
            r->pid = -1; /* reaped: the pid is no longer ours to signal */
            died(m, r, pid, why);
            return 1;
        }
    }
    return 0;
}

void ocp__recog_tend(master *m)
{
    if (!m->n_rec || m->rec_fallback || m->draining)
        return;
    zyg *z = ocp__current_zyg(m);
    double now = ocp_now();
    for (int k = 0; k < m->n_rec; k++) {
        recognizer *r = &m->rec[k];
        if (r->state == R_ASKED && (!z || z->gen != r->zgen))
            r->state = R_DOWN; /* its zygote went before it answered */
        if (r->state != R_DOWN || !z || now < r->restart_at)
            continue;
        json_t *msg = json_pack("{s:s, s:i, s:s, s:s, s:i, s:f, s:I, s:I}", "t", "recognizer",
                                "index", r->index, "addr", r->addr, "visible", r->visible, "batch",
                                m->pc.recognizer_batch, "wait_s", m->pc.recognizer_wait_s,
                                "batch_mb", (json_int_t)m->pc.recognizer_batch_mb, "arena_mb",
                                (json_int_t)m->pc.recognizer_arena_mb);
        int rc = ocp_proto_send_timed(z->fd, msg, -1, OCP__SEND_DEADLINE);
        json_decref(msg);
        if (rc)
            return; /* the zygote's own trouble: ocp__spawn_missing deals with it */
        if (r->started > 0)
            r->restarts++;
        r->state = R_ASKED;
        r->zgen = z->gen;
        r->started = now;
        r->gone_pid = r->pid;
        r->pid = -1;
    }
}

double ocp__recog_bytes(const master *m)
{
    double sum = 0;
    for (int k = 0; k < m->n_rec; k++)
        if (m->rec[k].state != R_DOWN)
            sum += (double)m->rec[k].pss_kb * 1024;
    return sum;
}

static json_t *one_json(const recognizer *r)
{
    json_t *o = json_pack("{s:i, s:i, s:s, s:s, s:I, s:f}", "index", r->index, "pid", r->pid,
                          "state", rstates[r->state], "device", r->visible[0] ? r->visible : "cpu",
                          "restarts", (json_int_t)r->restarts, "lines_per_second", r->rate);
    ocp_memstat ms;
    if (r->pid > 0 && r->state != R_DOWN && ocp_memstat_read(r->pid, 1, &ms) == 0)
        json_object_set_new(o, "memory",
                            json_pack("{s:I, s:I, s:I, s:I}", "rss_kb", (json_int_t)ms.rss_kb,
                                      "pss_kb", (json_int_t)ms.pss_kb, "peak_rss_kb",
                                      (json_int_t)ms.peak_rss_kb, "shared_kb",
                                      (json_int_t)ms.shared_kb));
    else
        json_object_set_new(o, "memory", json_null());
    if (r->stats) {
        static const char *const keep[] = {"lines",      "batches",    "multi_worker_batches",
                                           "failed",     "batch_hist", "wait_sum_s",
                                           "wait_max_s", "busy_s",     "clients",
                                           "queued",     "models",     "backend",
                                           "gpu"};
        for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) {
            json_t *v = json_object_get(r->stats, keep[i]);
            if (v)
                json_object_set(o, keep[i], v);
        }
        long lines = (long)json_integer_value(json_object_get(r->stats, "lines"));
        double ws = json_number_value(json_object_get(r->stats, "wait_sum_s"));
        json_object_set_new(o, "wait_mean_ms", json_real(lines > 0 ? ws * 1000 / lines : 0));
        long b = (long)json_integer_value(json_object_get(r->stats, "batches"));
        json_object_set_new(o, "mean_batch", json_real(b > 0 ? (double)lines / b : 0));
    }
    return o;
}

json_t *ocp__recog_json(const master *m)
{
    json_t *rs = json_array();
    for (int k = 0; k < m->n_rec; k++)
        json_array_append_new(rs, one_json(&m->rec[k]));
    json_t *le = json_array();
    for (int b = 0; b < OCP_RECOG_HIST_NB; b++) /* -1: the open bucket */
        json_array_append_new(le,
                              json_integer(b < OCP_RECOG_HIST_NB - 1 ? ocp_recog_hist_le[b] : -1));
    return json_pack("{s:s, s:b, s:I, s:s, s:o, s:o}", "mode",
                     m->pc.recognizer_shared ? "shared" : "worker", "fallback", m->rec_fallback,
                     "fallbacks", (json_int_t)m->rec_fallbacks, "fallback_reason", m->rec_why,
                     "batch_le", le, "recognizers", rs);
}

void ocp__recog_stop(master *m)
{
    for (int k = 0; k < m->n_rec; k++) {
        recognizer *r = &m->rec[k];
        if (r->fd >= 0 && r->state == R_READY) {
            /* Our end closed for writing: it sends its last figures and goes; they are
             * logged, as the node's account of what it read (a second at most). */
            shutdown(r->fd, SHUT_WR);
            double end = ocp_now() + 1.0;
            json_t *msg = NULL;
            fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) & ~O_NONBLOCK);
            while (ocp_now() < end &&
                   ocp_proto_recv_timed(r->fd, &r->rd, &msg, end - ocp_now()) == 0) {
                if (json_integer_value(json_object_get(msg, "lines")) >=
                    json_integer_value(json_object_get(r->stats, "lines"))) {
                    json_decref(r->stats);
                    r->stats = json_incref(msg);
                }
                json_decref(msg);
            }
        }
        json_t *g = r->stats ? json_object_get(r->stats, "gpu") : NULL;
        if (json_is_object(g))
            OCP_LOG(OCP_LOG_INFO,
                    "recognizer %d GPU %s: %s, cap %lld bytes, peak held %lld bytes, peak in "
                    "use %lld bytes, %lld batches split, %lld failed%s%s",
                    r->index, json_string_value(json_object_get(g, "device")),
                    json_is_true(json_object_get(g, "active")) ? "in use" : "given up",
                    (long long)json_integer_value(json_object_get(g, "cap_bytes")),
                    (long long)json_integer_value(json_object_get(g, "peak_held_bytes")),
                    (long long)json_integer_value(json_object_get(g, "peak_in_use_bytes")),
                    (long long)json_integer_value(json_object_get(g, "splits")),
                    (long long)json_integer_value(json_object_get(g, "failures")),
                    *json_string_value(json_object_get(g, "why")) ? ": " : "",
                    json_string_value(json_object_get(g, "why")));
        if (r->stats)
            OCP_LOG(
                OCP_LOG_INFO,
                "recognizer %d ends: %lld lines in %lld batches (%lld of lines of more than "
                "one worker), %.1f s in the network, %ld restarts",
                r->index, (long long)json_integer_value(json_object_get(r->stats, "lines")),
                (long long)json_integer_value(json_object_get(r->stats, "batches")),
                (long long)json_integer_value(json_object_get(r->stats, "multi_worker_batches")),
                json_number_value(json_object_get(r->stats, "busy_s")), r->restarts);
        closed(m, &m->rec[k]);
        json_decref(m->rec[k].stats);
        m->rec[k].stats = NULL;
        ocp_proto_reader_fini(&m->rec[k].rd);
    }
}
