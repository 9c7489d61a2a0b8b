/*
 * sidecar.c: the optional process the master keeps beside its workers
 * (pool.h: ocp_pool_conf.sidecar; `serve`'s HTTP API), part of the master
 * (master_int.h).
 *
 *   ocp__sidecar_start --fork--> running --it ends--> ocp__sidecar_tend:
 *        ^                                              | fatal exit: the node stops
 *        |                                              | node draining: left ended
 *        '------ side_timer (1 s, doubling to 30 s; ----'  else: restart due
 *                back to 1 s after 60 s up)
 *   ocp__sidecar_stop (the node ends): SIGTERM, SIGKILL after 5 s, reaped.
 *
 * The child closes every descriptor it inherited but 0-2, puts the signals
 * back to their defaults and executes the sidecar's program: a restart is
 * forked by a master that has its broker open, and a SQLite connection's
 * state must not live on in a process that opens its own (SQLite's rule on
 * fork); a new program starts clean. It dies with the master
 * (PR_SET_PDEATHSIG, kept across exec). The master notices its end by
 * waitpid(WNOHANG) after each turn of its loop.
 */
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "pool/master_int.h"

#include <errno.h>
#include <linux/close_range.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIDE_DELAY_MIN  1.0  /* the first restart's delay, in seconds */
#define SIDE_DELAY_MAX  30.0 /* the longest delay */
#define SIDE_HEALTHY    60.0 /* seconds up after which the delay starts again at the least */
#define SIDE_STOP_GRACE 5.0  /* seconds it has to end after SIGTERM before SIGKILL */

static void side_restart(ocp_loop_timer *t);

/* In the child: the sidecar's program in a clean process; never returns. */
static void side_child(master *m, pid_t parent)
{
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGQUIT, &dfl, NULL);
    sigaction(SIGHUP, &dfl, NULL);
    close_range(3, ~0U, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) /* the master died before the line above */
        _exit(0);
    execv(m->side_path, m->side_argv);
    dprintf(2, "ocrpool: %s: cannot run %s: %s\n", m->side_name, m->side_path, strerror(errno));
    _exit(OCP_EXIT_FATAL);
}

static void side_fork(master *m)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        side_child(m, parent);
    if (pid < 0) {
        OCP_LOG_ERR(OCP_LOG_ERROR, -errno, "%s: cannot fork; next try in %.0f s", m->side_name,
                    m->side_delay);
        ocp_loop_timer_start(m->loop, &m->side_timer, m->side_delay, side_restart, m);
        m->side_delay = fmin(SIDE_DELAY_MAX, m->side_delay * 2);
        return;
    }
    m->side_pid = pid;
    m->side_started = ocp_now();
    OCP_LOG(OCP_LOG_INFO, "%s started (pid %d)", m->side_name, (int)pid);
}

static void side_restart(ocp_loop_timer *t)
{
    master *m = t->data;
    if (m->draining || m->side_pid > 0)
        return;
    m->side_restarts++;
    side_fork(m);
}

void ocp__sidecar_start(master *m)
{
    ocp_loop_timer_init(&m->side_timer);
    m->side_path = m->pc.sidecar_path;
    m->side_argv = m->pc.sidecar_argv;
    snprintf(m->side_name, sizeof m->side_name, "%s",
             m->pc.sidecar_name ? m->pc.sidecar_name : "sidecar");
    m->side_delay = SIDE_DELAY_MIN;
    if (m->side_path && m->side_argv)
        side_fork(m);
}

/* How a child ended, in words ("exited with status 3", "was killed by signal 9 (SIGKILL)"). */
static void describe(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status)) {
        const char *n = sigabbrev_np(WTERMSIG(status));
        snprintf(buf, len, "was killed by signal %d (SIG%s)", WTERMSIG(status), n ? n : "?");
    } else {
        snprintf(buf, len, "exited with status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
}

void ocp__sidecar_tend(master *m)
{
    int status = 0;
    if (m->side_pid <= 0)
        return;
    pid_t r = waitpid(m->side_pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return;
    int pid = m->side_pid;
    char how[120];
    m->side_pid = 0;
    if (r < 0)
        snprintf(how, sizeof how, "is gone (%s)", strerror(errno));
    else
        describe(status, how, sizeof how);
    if (r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == OCP_EXIT_FATAL) {
        /* It cannot run (its port is taken, its settings are wrong): not restarted. */
        snprintf(m->side_why, sizeof m->side_why, "%s %d %s (it cannot start): see its log",
                 m->side_name, pid, how);
        OCP_LOG(OCP_LOG_ERROR, "%s; stopping the node", m->side_why);
        ocp__master_request_stop(0);
        return;
    }
    if (m->draining) {
        OCP_LOG(OCP_LOG_INFO, "%s %d %s", m->side_name, pid, how);
        return;
    }
    double up = ocp_now() - m->side_started;
    if (up >= SIDE_HEALTHY)
        m->side_delay = SIDE_DELAY_MIN;
    OCP_LOG(OCP_LOG_ERROR, "%s %d %s after %.0f s up: restarting it in %.0f s", m->side_name, pid,
            how, up, m->side_delay);
    ocp_loop_timer_start(m->loop, &m->side_timer, m->side_delay, side_restart, m);
    m->side_delay = fmin(SIDE_DELAY_MAX, m->side_delay * 2);
}

void ocp__sidecar_stop(master *m)
{
    ocp_loop_timer_stop(m->loop, &m->side_timer);
    if (m->side_pid <= 0)
        return;
    pid_t pid = m->side_pid;
    m->side_pid = 0;
    kill(pid, SIGTERM);
    for (double t0 = ocp_now();;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r != 0 && !(r < 0 && errno == EINTR))
            return;
        if (ocp_now() - t0 > SIDE_STOP_GRACE) {
            OCP_LOG(OCP_LOG_WARN, "%s %d did not end on SIGTERM: killing it", m->side_name,
                    (int)pid);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return;
        }
        usleep(20000);
    }
}
