/*
 * proc.c: the master's processes (master_int.h): the zygote (started,
 * watched, replaced when it dies, a second one during a reload) and the
 * workers it forks on request (spawned up to concurrency, with a growing
 * delay after failed starts; reaped by the zygote, whose "exited" message
 * tells how each ended; a lost worker's pages go back to the queue).
 */
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "pool/master_int.h"
#include "pool/zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void zygote_readable(ocp_loop_io *io, short revents);

zyg *ocp__current_zyg(master *m)
{
    for (int i = 0; i < m->nz; i++)
        if (m->z[i].gen == m->gen && !m->z[i].dead && !m->z[i].loading)
            return &m->z[i];
    return NULL;
}

static zyg *loading_zyg(master *m)
{
    for (int i = 0; i < m->nz; i++)
        if (m->z[i].loading && !m->z[i].dead)
            return &m->z[i];
    return NULL;
}

static void watch_zygote(master *m, zyg *z)
{
    ocp_loop_io_init(&z->io);
    ocp_loop_io_start(m->loop, &z->io, z->fd, POLLIN, zygote_readable, m);
}

/* The first message of a zygote: "ready", or "fatal" with the engine's error. 1 when
 * ready; else z->why says why. */
static int loaded(zyg *z, json_t *msg)
{
    const char *t = msg ? json_string_value(json_object_get(msg, "t")) : NULL;
    if (t && strcmp(t, "ready") == 0)
        return 1;
    const char *e = msg ? json_string_value(json_object_get(msg, "error")) : NULL;
    snprintf(z->why, sizeof z->why, "%s", e ? e : "the zygote died while loading the engine");
    return 0;
}

int ocp__start_zygote(master *m, const ocp_pool_conf *pc, int gen, int wait, char *err,
                      size_t errlen)
{
    zyg *z = &m->z[m->nz];
    memset(z, 0, sizeof *z);
    int rc = ocp__zygote_start(pc, &z->fd, &z->pid, err, errlen);
    if (rc)
        return rc;
    z->gen = gen;
    z->loading = 1;
    ocp_proto_reader_init(&z->rd);
    if (wait) {
        json_t *msg = NULL;
        rc = ocp_proto_recv(z->fd, &z->rd, &msg);
        int ok = !rc && loaded(z, msg);
        json_decref(msg);
        if (!ok) {
            ocp_errf(OCP_E_ENGINE, err, errlen, "%s", z->why);
            close(z->fd);
            ocp_proto_reader_fini(&z->rd);
            waitpid(z->pid, NULL, 0);
            return OCP_E_ENGINE;
        }
        z->loading = 0;
    }
    fcntl(z->fd, F_SETFL, fcntl(z->fd, F_GETFL) | O_NONBLOCK);
    m->nz++;
    watch_zygote(m, z);
    return 0;
}

int ocp__live_workers(const master *m, int gen)
{
    int n = 0;
    for (const worker *w = m->workers; w; w = w->next)
        if (w->gen == gen && w->state != W_EXITING)
            n++;
    return n;
}

static int slot_used(const master *m, int slot)
{
    for (const worker *w = m->workers; w; w = w->next)
        if (w->gen == m->gen && w->slot == slot && w->state != W_EXITING)
            return 1;
    return 0;
}

/* Asks the current zygote for workers up to concurrency, each in the lowest free slot. */
void ocp__spawn_missing(master *m)
{
    zyg *z = ocp__current_zyg(m);
    if (!z || m->draining || ocp_now() < m->spawn_backoff_until)
        return;
    int have = ocp__live_workers(m, m->gen);
    for (int slot = 0; have < m->pc.concurrency && slot < 4 * m->pc.concurrency + 4; slot++) {
        if (slot_used(m, slot))
            continue;
        worker *w = ocp_xcalloc(1, sizeof *w);
        w->slot = slot;
        w->gen = m->gen;
        w->pid = -1;
        w->fd = -1;
        w->state = W_STARTING;
        ocp_proto_reader_init(&w->rd);
        ocp_loop_io_init(&w->io);
        w->next = m->workers;
        m->workers = w;
        const char *vis = m->pc.n_visible ? m->pc.visible[slot % m->pc.n_visible] : "";
        json_t *msg = json_pack("{s:s, s:i, s:s, s:s}", "t", "spawn", "slot", slot, "visible", vis,
                                "recog", ocp__recog_addr_for(m, slot));
        int rc = ocp_proto_send_timed(z->fd, msg, -1, OCP__SEND_DEADLINE);
        json_decref(msg);
        if (rc) {
            /* It does not read (or its stream is cut mid-frame): it goes, and a new one
             * starts (ocp__tend_zygotes). */
            OCP_LOG_ERR(OCP_LOG_ERROR, rc, "zygote %d does not take requests: stopping it", z->pid);
            z->dead = 1;
            ocp_loop_io_stop(m->loop, &z->io);
            kill(z->pid, SIGKILL);
            return;
        }
        have++;
    }
}

void ocp__worker_lost(master *m, worker *w, const char *why)
{
    OCP_LOG(OCP_LOG_ERROR, "worker %d %s: killing it", w->pid, why);
    if (w->kill_kind == OCP_FAIL_NONE) {
        w->kill_kind = OCP_FAIL_CRASHED;
        snprintf(w->kill_reason, sizeof w->kill_reason, "worker %d %s", w->pid, why);
    }
    ocp_loop_io_stop(m->loop, &w->io);
    if (w->pid > 0 && !w->reaped)
        kill(w->pid, SIGKILL);
}

int ocp__send_worker(master *m, worker *w, json_t *msg)
{
    if (w->reaped)
        return -EPIPE;
    int rc = ocp_proto_send_timed(w->fd, msg, -1, OCP__SEND_DEADLINE);
    if (rc) {
        char why[120];
        if (rc == -ETIMEDOUT)
            snprintf(why, sizeof why, "does not take messages (none read for %.0f s)",
                     OCP__SEND_DEADLINE);
        else
            snprintf(why, sizeof why, "does not take messages (%s)", strerror(-rc));
        if (rc == -EPIPE || rc == -ECONNRESET) {
            /* It closed its end: it is ending or ended, and the zygote's "exited" tells why
             * (no signal: the pid may be reaped and taken already). */
            OCP_LOG(OCP_LOG_WARN, "worker %d %s", w->pid, why);
            ocp_loop_io_stop(m->loop, &w->io);
        } else {
            ocp__worker_lost(m, w, why);
        }
        w->state = W_EXITING; /* given nothing more; a new one takes its slot */
    }
    return rc;
}

void ocp__send_exit(master *m, worker *w)
{
    json_t *msg = json_pack("{s:s}", "t", "exit");
    ocp__send_worker(m, w, msg);
    json_decref(msg);
    w->state = W_EXITING;
}

void ocp__free_worker(master *m, worker *w)
{
    for (worker **pp = &m->workers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    ocp_loop_io_stop(m->loop, &w->io);
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
void ocp__retire_zygote(master *m, int i)
{
    zyg *z = &m->z[i];
    for (worker *w = m->workers, *next; w; w = next) {
        next = w->next;
        if (w->gen != z->gen)
            continue;
        while (w->task) {
            held *h = w->task;
            w->task = h->bnext;
            ocp__release_task(m, h, OCP_FAIL_CRASHED, "its worker's zygote ended", 1);
        }
        if (w->pid > 0)
            kill(w->pid, SIGKILL);
        ocp__free_worker(m, w);
    }
    ocp_loop_io_stop(m->loop, &z->io);
    close(z->fd);
    ocp_proto_reader_fini(&z->rd);
    /* SIGKILL: a zygote ignores SIGTERM (a stop is the master's to decide), and one still
     * loading a model would hold the master here until it is done. It has nothing to keep:
     * its workers went above. Its pid is reaped here only, so it is still its own. */
    kill(z->pid, SIGKILL);
    while (waitpid(z->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    if (i != m->nz - 1) {
        /* The last one moves into the gap: its handle moves with it. */
        ocp_loop_io_stop(m->loop, &m->z[m->nz - 1].io);
        m->z[i] = m->z[m->nz - 1];
        if (!m->z[i].dead)
            watch_zygote(m, &m->z[i]);
    }
    m->nz--;
}

int ocp__tend_zygotes(master *m, char *err, size_t errlen)
{
    for (int i = 0; i < m->nz; i++) {
        if (!m->z[i].dead)
            continue;
        if (m->z[i].fatal && m->z[i].gen == m->gen) {
            /* The current generation's engine cannot load (it did before): give up. */
            ocp_errf(OCP_E_ENGINE, err, errlen, "%s", m->z[i].why);
            ocp__retire_zygote(m, i);
            return OCP_E_ENGINE;
        }
        ocp__retire_zygote(m, i);
        i--;
    }
    if (!ocp__current_zyg(m) && !loading_zyg(m) && !m->draining) {
        /* Its workers went with it; a new one loads while the loop goes on. */
        OCP_LOG(OCP_LOG_ERROR, "the zygote died: starting a new one");
        m->gen = ++m->last_gen;
        int rc = ocp__start_zygote(m, &m->pc, m->gen, 0, err, errlen);
        if (rc)
            return rc;
    }
    /* An old zygote whose workers are all gone after a reload: let it go. */
    for (int i = 0; i < m->nz; i++) {
        int anyw = 0;
        for (worker *w = m->workers; w; w = w->next)
            anyw |= w->gen == m->z[i].gen;
        if (m->z[i].gen < m->gen && !anyw) {
            ocp__retire_zygote(m, i);
            i--;
        }
    }
    return 0;
}

/* The worker pid of zygote z's generation (a pid may have been reused by another
 * generation's worker). */
static worker *find_worker(master *m, const zyg *z, int pid)
{
    for (worker *w = m->workers; w; w = w->next)
        if (w->pid == pid && w->gen == z->gen)
            return w;
    return NULL;
}

static const char *signame(int s)
{
    const char *n = sigabbrev_np(s);
    return n ? n : "?";
}

/* The pages of a worker that ended during them: back to the queue (uncounted after a cold
 * stop, or when they were read together: not any one page's fault, so each runs alone
 * next), or failed when they were acknowledged as they were given (acks-late off). */
static void pages_lost(master *m, worker *w, ocp_failure kind, const char *reason)
{
    int batch = ocp__batch_len(w);
    while (w->task) {
        held *h = w->task;
        w->task = h->bnext;
        if (m->cold) {
            ocp__release_task(m, h, OCP_FAIL_SHUTDOWN, "cold shutdown", 1);
        } else if (!m->pc.acks_late) {
            /* Acknowledged when given (acks-late off): the page is not delivered again. */
            ocp_broker_fail(m->b, h->t.id, kind, reason, h->started_wall, ocp_wall_now(), w->pid);
            ocp__drop_held(m, h);
        } else if (batch > 1) {
            char why[600];
            snprintf(why, sizeof why, "%s (%d pages read together: each runs alone next)", reason,
                     batch);
            ocp__add_solo(m, h->t.id);
            OCP_LOG(OCP_LOG_WARN, "page %s goes back to the queue, not counted: %s", h->t.id, why);
            ocp__release_task(m, h, kind, why, 1);
        } else {
            ocp__release_task(m, h, kind, reason, 0);
        }
    }
}

/* A worker ended (the zygote reaped it): its pages go back or are buried. */
static void worker_exited(master *m, worker *w, int status, long maxrss_kb)
{
    char reason[400];
    /* What it said before it ended is read first: a page it answered is not lost. */
    w->reaped = 1;
    if (w->fd >= 0 && !w->eof)
        ocp__worker_readable(&w->io, POLLIN);
    ocp_failure kind = w->kill_kind != OCP_FAIL_NONE ? w->kill_kind : OCP_FAIL_CRASHED;
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
        m->recycles_kind[kind]++;
    int batch = ocp__batch_len(w);
    pages_lost(m, w, kind, reason);
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
    ocp__free_worker(m, w);
}

/* The zygote forked a worker: its socket came with the message. */
static void worker_spawned(master *m, zyg *z, json_t *msg)
{
    int pid = (int)json_integer_value(json_object_get(msg, "pid"));
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
        return;
    }
    w->pid = pid;
    w->fd = fd;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    ocp_loop_io_start(m->loop, &w->io, fd, POLLIN, ocp__worker_readable, m);
    OCP_LOG(OCP_LOG_INFO, "worker %d started (slot %d)", pid, slot);
}

/* The first message of a zygote started while the loop runs (a reload's, or one replacing a
 * zygote that died). msg NULL: it ended before it said anything. */
static void zygote_loaded(master *m, zyg *z, json_t *msg)
{
    z->loading = 0;
    if (loaded(z, msg)) {
        OCP_LOG(OCP_LOG_INFO, "zygote %d loaded its engine", z->pid);
        if (z->gen > m->gen)
            ocp__reload_commit(m, z);
        return;
    }
    z->dead = z->fatal = 1;
    ocp_loop_io_stop(m->loop, &z->io);
    if (z->gen > m->gen)
        ocp__reload_abandon(m, z);
}

static void zygote_readable(ocp_loop_io *io, short revents)
{
    (void)revents;
    master *m = io->data;
    zyg *z = (zyg *)((char *)io - offsetof(zyg, io));
    /* One read at a time, then its messages: a passed descriptor belongs to the message
     * it came with, and the kernel ends a read at a message that carries one. */
    for (;;) {
        int r = ocp_proto_fill(&z->rd, z->fd);
        if (r == 0 || (r < 0 && r != -EAGAIN)) {
            if (z->loading)
                zygote_loaded(m, z, NULL);
            else
                OCP_LOG(OCP_LOG_ERROR, "zygote %d is gone", z->pid);
            z->dead = 1;
            ocp_loop_io_stop(m->loop, &z->io);
        }
        json_t *msg;
        while (ocp_proto_next(&z->rd, &msg) == 0 && msg) {
            const char *t = json_string_value(json_object_get(msg, "t"));
            if (z->loading) {
                zygote_loaded(m, z, msg);
            } else if (ocp__recog_zygote_msg(m, z, msg)) {
                /* about a recognizer (recognizer.c) */
            } else if (t && strcmp(t, "spawned") == 0) {
                worker_spawned(m, z, msg);
            } else if (t && strcmp(t, "exited") == 0) {
                worker *w = find_worker(m, z, (int)json_integer_value(json_object_get(msg, "pid")));
                if (w)
                    worker_exited(m, w, (int)json_integer_value(json_object_get(msg, "status")),
                                  (long)json_integer_value(json_object_get(msg, "maxrss_kb")));
            }
            json_decref(msg);
        }
        if (r <= 0 || z->dead)
            break;
    }
}
