/*
 * master.c: the master of a node (pool.h): ocp_pool_run, its signals,
 * reload and shutdown. The master is one single-threaded event loop
 * (loop.h); its parts register their descriptors and timers on it
 * (master_int.h): processes (proc.c), pages (dispatch.c), the watchdog
 * (watchdog.c), the figures and the control socket (stats.c). After each
 * turn of the loop the master reacts to signals, tends its zygotes, spawns
 * missing workers and gives waiting pages to idle ones; a command's sidecar
 * process (serve's HTTP API) is kept running beside them (sidecar.c).
 *
 * Shutdown: warm (SIGTERM, SIGINT, `stop`): no new leases, pages not
 * started go back at once, running pages finish, idle workers leave; the
 * node ends when no worker is left. Cold (a second SIGTERM, SIGQUIT,
 * `stop --now`): workers are killed, their pages go back uncounted.
 */
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "pool/master_int.h"
#include "pool/remote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t sig_term, sig_quit, sig_hup;
/* A warm stop asked on the control socket: apart from sig_term, so that it and a SIGTERM
 * (a service manager's, to the whole group at once) make one warm stop in either order. */
static volatile sig_atomic_t ctl_stop;
static int sig_pipe[2] = {-1, -1};
static ocp_loop_io sig_io;

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

void ocp__master_request_stop(int cold)
{
    if (cold)
        sig_quit = 1;
    else
        ctl_stop = 1;
}

void ocp__master_request_reload(void)
{
    sig_hup = 1;
}

static void sig_readable(ocp_loop_io *io, short revents)
{
    char buf[64];
    (void)revents;
    while (read(io->fd, buf, sizeof buf) > 0) {
    }
}

static int signals_start(master *m, char *err, size_t errlen)
{
    sig_term = sig_quit = sig_hup = ctl_stop = 0;
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
    ocp_loop_io_init(&sig_io);
    ocp_loop_io_start(m->loop, &sig_io, sig_pipe[0], POLLIN, sig_readable, m);
    return 0;
}

static void signals_stop(master *m)
{
    ocp_loop_io_stop(m->loop, &sig_io);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    sig_pipe[0] = sig_pipe[1] = -1;
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
}

/* SIGHUP: a fresh configuration from the hook and a new zygote for it, loading while the
 * loop goes on; once it is loaded, ocp__reload_commit makes it current. */
static void reload(master *m)
{
    ocp_pool_conf npc;
    char err[600];
    if (!m->hooks || !m->hooks->reload || m->draining)
        return;
    if (m->hooks->reload(m->hooks->ctx, &npc) != 0) {
        OCP_LOG(OCP_LOG_ERROR, "reload: the configuration is not valid; keeping the running one");
        return;
    }
    /* A reload during a reload: every zygote still loading a newer generation goes (however
     * many there are: none may outlive its reload), then the oldest when two are left. */
    for (int i = m->nz - 1; i >= 0; i--)
        if (m->z[i].gen > m->gen)
            ocp__retire_zygote(m, i);
    if (m->nz == 2)
        ocp__retire_zygote(m, m->z[0].gen < m->z[1].gen ? 0 : 1);
    if (m->reloading)
        ocp_pool_conf_fini(&m->next_pc);
    m->reloading = 0;
    if (ocp__start_zygote(m, &npc, ++m->last_gen, 0, err, sizeof err)) {
        OCP_LOG(OCP_LOG_ERROR, "reload: %s; keeping the running configuration", err);
        ocp_pool_conf_fini(&npc);
        return;
    }
    m->next_pc = npc;
    m->reloading = 1;
}

void ocp__reload_commit(master *m, zyg *z)
{
    int old = m->gen;
    if (!m->reloading)
        return;
    if (m->pc_owned)
        ocp_pool_conf_fini(&m->pc);
    m->pc = m->next_pc;
    m->pc_owned = 1;
    m->reloading = 0;
    m->gen = z->gen;
    OCP_LOG(OCP_LOG_WARN, "reload: configuration re-read, replacing workers");
    for (worker *w = m->workers; w; w = w->next)
        if (w->gen == old && w->state == W_IDLE)
            ocp__send_exit(m, w);
}

void ocp__reload_abandon(master *m, zyg *z)
{
    OCP_LOG(OCP_LOG_ERROR, "reload: %s; keeping the running configuration", z->why);
    if (m->reloading)
        ocp_pool_conf_fini(&m->next_pc);
    m->reloading = 0;
}

static void handle_signals(master *m)
{
    if (sig_hup) {
        sig_hup = 0;
        reload(m);
    }
    if ((sig_term >= 2 || sig_quit) && !m->cold) {
        m->cold = m->draining = 1;
        OCP_LOG(OCP_LOG_WARN, "cold shutdown: stopping running pages, they go back to the queue");
        for (worker *w = m->workers; w; w = w->next)
            if (w->pid > 0)
                kill(w->pid, SIGKILL);
    } else if ((sig_term == 1 || ctl_stop) && !m->draining) {
        m->draining = 1;
        /* Said as a warning only when it holds pages (a node that runs out of work is stopped
         * so by `ocr`). */
        OCP_LOG(m->n_held ? OCP_LOG_WARN : OCP_LOG_INFO,
                "warm shutdown: no new pages; running pages finish (again for cold)");
    }
    if (!m->draining)
        return;
    /* Pages held but not started go back at once, not counted as deliveries. */
    for (held *h = m->held, *next; h; h = next) {
        next = h->next;
        if (h->state == H_WAITING)
            ocp__release_task(m, h, OCP_FAIL_SHUTDOWN, "node shutting down", 1);
    }
    for (worker *w = m->workers; w; w = w->next)
        if (w->state == W_IDLE)
            ocp__send_exit(m, w);
}

/* Shut down with nothing running, and no worker left (warm) or at once (cold). */
static int ended(const master *m)
{
    if (!m->draining)
        return 0;
    for (const worker *w = m->workers; w; w = w->next)
        if (w->task || !m->cold)
            return 0;
    return 1;
}

/* The node is up: its name, figures, control socket and periodic jobs. */
static void start(master *m, const char *url)
{
    ocp_broker_owner_name(m->owner, sizeof m->owner);
    m->started_wall = ocp_wall_now();
    m->started_mono = ocp_now();
    ocp__control_start(m);
    long n = 0;
    ocp_broker_reclaim_dead(m->b, &n);
    if (n)
        OCP_LOG(OCP_LOG_WARN,
                "%ld page%s leased by nodes of this host that are gone: back in the queue", n,
                n == 1 ? "" : "s");
    ocp__dispatch_start(m);
    ocp__watchdog_start(m);
    ocp__remote_start(m, url); /* Celery's inspect, control and events (redis) */
    char shown[512];
    OCP_LOG(OCP_LOG_INFO, "node %s: %d worker%s, prefetch %d, broker %s", m->owner,
            m->pc.concurrency, m->pc.concurrency == 1 ? "" : "s", m->pc.prefetch_multiplier,
            ocp_url_shown(url, shown, sizeof shown)); /* never its password */
}

/* The loop's turns until the end; 0, or an error with err. */
static int run(master *m, char *err, size_t errlen)
{
    int rc = 0;
    for (;;) {
        ocp_loop_run_once(m->loop, 0.1);
        handle_signals(m);
        if ((rc = ocp__tend_zygotes(m, err, errlen)))
            break;
        ocp__sidecar_tend(m);
        ocp__recog_tend(m);
        if (m->hooks && m->hooks->tick)
            m->hooks->tick(m->hooks->ctx, &m->pc);
        ocp__spawn_missing(m);
        ocp__dispatch(m);
        if (ended(m))
            break;
    }
    /* Cold, or an error: what is still held goes back, not counted. */
    while (m->held)
        ocp__release_task(m, m->held, OCP_FAIL_SHUTDOWN, "node stopped", 1);
    return rc;
}

/* An orderly end: workers see their sockets close and exit; each zygote sees its socket
 * close, reaps its workers (killing stragglers) and exits; we reap it. */
static void shutdown_node(master *m)
{
    ocp__sidecar_stop(m);
    if (m->hooks && m->hooks->stop)
        m->hooks->stop(m->hooks->ctx);
    ocp__recog_stop(m); /* they end as their sockets close; their zygote reaps them */
    for (worker *w = m->workers, *next; w; w = next) {
        next = w->next;
        if (w->pid > 0 && w->task)
            kill(w->pid, SIGKILL); /* only after a cold stop or an error */
        ocp__free_worker(m, w);
    }
    for (int i = 0; i < m->nz; i++) {
        ocp_loop_io_stop(m->loop, &m->z[i].io);
        close(m->z[i].fd);
        ocp_proto_reader_fini(&m->z[i].rd);
        waitpid(m->z[i].pid, NULL, 0);
    }
    ocp__remote_stop(m);
    ocp_broker_close(m->b);
    for (int i = 0; i < OCP__SOLO; i++)
        free(m->solo[i]);
    ocp__control_stop(m);
    signals_stop(m);
    if (m->pc_owned)
        ocp_pool_conf_fini(&m->pc);
    if (m->reloading)
        ocp_pool_conf_fini(&m->next_pc);
    ocp_loop_destroy(m->loop);
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
    m->loop = ocp_loop_create();
    ocp_loop_io_init(&m->ctl_io);
    if ((rc = signals_start(m, err, errlen))) {
        ocp_loop_destroy(m->loop);
        return rc;
    }
    ocp_log_set_role('M');
    /* The sidecar and the zygote first, before this process opens the broker or any
     * library state (the sidecar answers while the engine loads). */
    ocp__sidecar_start(m);
    if ((rc = ocp__start_zygote(m, &m->pc, m->gen, 1, err, errlen)) == 0 &&
        (rc = ocp_broker_open(url, &m->pc.broker, &m->b, err, errlen)) == 0) {
        start(m, url);
        ocp__recog_init(m);
        rc = run(m, err, errlen);
    }
    if (!rc && m->side_why[0])
        rc = ocp_errf(OCP_E_CONFIG, err, errlen, "%s", m->side_why);
    shutdown_node(m);
    return rc;
}
