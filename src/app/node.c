/*
 * node.c: a node run in a child process for `ocrpool ocr` (node.h): fork it
 * into a process group of its own, relay its standard error through a pipe,
 * pass stops on (SIGTERM warm, SIGQUIT cold), reap it without blocking. It
 * sits above pool/ (ocp_pool_run) and below cli/; the caller keeps the
 * signal handlers and says which stop its signals ask for.
 */
#include "app/node.h"
#include "core/log.h"
#include "core/util.h"
#include "pool/control.h"
#include "pool/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct ocp_app_node {
    pid_t pid;      /* 0 once reaped */
    int err_fd;     /* the read end of the node's standard error; -1 = none */
    int sent;       /* the stop passed on: 0 none, 1 warm (SIGTERM), 2 cold (SIGQUIT) */
    int failed;     /* it ended with an error, or killed by a signal not ours */
    int clear_line; /* clear the terminal's line before passing something on */
    int raw;        /* pass the node's log lines on as they are (-v) */
    long hidden;    /* warnings not passed on (the first one is) */
    size_t len;     /* bytes of an unfinished line in line[] */
    char line[2048];
};

/* In the child: a group of its own, default signals, the pipe as standard output and
 * error, then the pool. Never returns. */
static void run_child(pid_t parent, int p[2], const ocp_config *cfg, const char *group,
                      const char *url)
{
    char err[600];
    /* A group of its own first: a terminal's signals reach the parent only. */
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    /* Out of the terminal's foreground group: nothing of it reads or writes the
     * terminal (SIGTTIN, SIGTTOU); what it says comes through the pipe. */
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (getppid() != parent || null < 0 || dup2(null, STDIN_FILENO) < 0 ||
        dup2(p[1], STDOUT_FILENO) < 0 || dup2(p[1], STDERR_FILENO) < 0)
        _exit(EXIT_FAILURE);
    /* 0, 1 and 2 are what dup2 put there: only the descriptors above them go. */
    int fds[3] = {null, p[0], p[1]};
    for (int k = 0; k < 3; k++)
        if (fds[k] > STDERR_FILENO)
            close(fds[k]);
    ocp_pool_conf pc;
    ocp_pool_conf_from_config(&pc, cfg);
    pc.only_group = group;
    /* The command's own queue: it reads every finished page back (a resumed run those of
     * earlier runs, whatever their age), so nothing in it expires under it. */
    pc.result_expires_s = 0;
    if (ocp_pool_run(&pc, url, NULL, err, sizeof err)) {
        fprintf(stderr, "ocrpool: %s\n", err);
        _exit(EXIT_FAILURE);
    }
    _exit(EXIT_SUCCESS);
}

int ocp_app_node_start(const ocp_config *cfg, const char *group, const char *url, int flags,
                       ocp_app_node **out, char *err, size_t errlen)
{
    pid_t parent = getpid();
    int p[2], rc;
    *out = NULL;
    if (pipe2(p, O_CLOEXEC) < 0) {
        rc = -errno;
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return rc;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return rc;
    }
    if (pid == 0)
        run_child(parent, p, cfg, group, url);
    setpgid(pid, pid); /* as the child does: whichever runs first */
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    /* Room for a burst of log lines while the caller is busy: the node should not wait
     * on its standard error. */
    if (fcntl(p[0], F_SETPIPE_SZ, 1 << 20) < 0)
        OCP_LOG_ERR(OCP_LOG_INFO, -errno, "cannot enlarge the node's log pipe");
    ocp_app_node *n = ocp_xcalloc(1, sizeof *n);
    n->pid = pid;
    n->err_fd = p[0];
    n->clear_line = !!(flags & OCP_NODE_CLEAR_LINE);
    n->raw = !!(flags & OCP_NODE_RAW_LOG);
    *out = n;
    return 0;
}

/* A log line of ours ("2026-01-01T00:00:00.000Z PID R [task] LEVEL: message"): its level
 * (0 error .. 3 debug) and where its message begins; -1 when line is something else. */
static int log_level_of(const char *line, const char **msg)
{
    static const char *const names[] = {"error: ", "warn: ", "info: ", "debug: "};
    const char *p = strchr(line, ' ');
    if (!p || p - line != 24 || line[10] != 'T' || line[23] != 'Z')
        return -1;
    char *end;
    strtol(p + 1, &end, 10);
    if (end == p + 1 || end[0] != ' ' || !end[1] || end[2] != ' ')
        return -1;
    p = end + 3;
    if (*p == '[' && !(p = strstr(p, "] ")))
        return -1;
    p += *p == ']' ? 2 : 0;
    for (int lv = 0; lv < 4; lv++)
        if (strncmp(p, names[lv], strlen(names[lv])) == 0) {
            *msg = p + strlen(names[lv]);
            return lv;
        }
    return -1;
}

static void put(ocp_app_node *n, const char *s, size_t len)
{
    if (n->clear_line)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
    ssize_t w = write(STDERR_FILENO, s, len);
    (void)w;
}

/* A size in KiB as a person reads it: KiB below 1 MiB, else MiB. */
static void kib_text(char *buf, size_t len, long kb)
{
    if (kb < 1024)
        snprintf(buf, len, "%ld KiB", kb);
    else
        snprintf(buf, len, "%.0f MiB", kb / 1024.0);
}

/* A warning of the pool as the command says it: the worker replaced for its memory (the
 * pool's line names a pid and a task id, which mean nothing to the user) in words; any
 * other as it is. New (free). */
static char *warning_text(const char *msg)
{
    int pid;
    long peak, max;
    char page[100], a[32], b[32];
    if (sscanf(msg,
               "replacing worker %d: peak RSS %ld KiB during page %99s over "
               "max-memory-per-child %ld KiB",
               &pid, &peak, page, &max) == 4) {
        kib_text(a, sizeof a, peak);
        kib_text(b, sizeof b, max);
        return ocp_xasprintf("ocrpool: note: a worker used %s on a page, more than "
                             "max-memory-per-child (%s), and was replaced\n",
                             a, b);
    }
    return ocp_xasprintf("ocrpool: %s\n", msg);
}

/* One line the node said (without its newline): as it is with -v or when it is not a log
 * line; otherwise an error as the command says things, the first warning so too (in words
 * when it is a worker replaced for its memory), and the rest of the log counted (warnings)
 * or dropped. */
static void say_line(ocp_app_node *n, char *line, size_t len)
{
    const char *msg;
    line[len] = '\0';
    int lv = n->raw ? -1 : log_level_of(line, &msg);
    if (lv < 0) {
        line[len] = '\n';
        put(n, line, len + 1);
        return;
    }
    /* The node's warnings after a stop sent to it say what the command has said already. */
    if (lv > 1 || (lv == 1 && n->sent) || (lv == 1 && n->hidden++ > 0))
        return;
    char *out = lv == 1 ? warning_text(msg) : ocp_xasprintf("ocrpool: %s\n", msg);
    put(n, out, strlen(out));
    free(out);
}

/* Bytes the node wrote, cut into lines; a line longer than the buffer goes as it is. */
static void take_bytes(ocp_app_node *n, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        n->line[n->len++] = buf[i];
        if (buf[i] == '\n')
            say_line(n, n->line, n->len - 1), n->len = 0;
        else if (n->len == sizeof n->line - 1)
            put(n, n->line, n->len), n->len = 0;
    }
}

int ocp_app_node_relay(ocp_app_node *n, int show, int wait_ms)
{
    char buf[4096];
    if (n->err_fd < 0) {
        poll(NULL, 0, wait_ms);
        return 0;
    }
    struct pollfd pf = {n->err_fd, POLLIN, 0};
    if (poll(&pf, 1, wait_ms) <= 0)
        return 1;
    /* At most 64 KiB a call: a node that says much does not hold its caller here. */
    for (int k = 0; k < 16; k++) {
        ssize_t r = read(n->err_fd, buf, sizeof buf);
        if (r > 0 && show)
            take_bytes(n, buf, (size_t)r);
        if (r > 0)
            continue;
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            return 1;
        close(n->err_fd); /* the end, or an error: either way nothing more comes */
        n->err_fd = -1;
        if (show && n->len) /* a last line without its newline */
            n->line[n->len++] = '\n', put(n, n->line, n->len);
        n->len = 0;
        return 0;
    }
    return 1;
}

long ocp_app_node_hidden(const ocp_app_node *n)
{
    return n->hidden > 1 ? n->hidden - 1 : 0;
}

/* The warm stop as the control socket's request: 0 when the node took it. */
static int ask_stop(pid_t pid)
{
    char dir[200], path[300];
    if (ocp_control_dir(dir, sizeof dir, 0) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%d.sock", dir, (int)pid);
    json_t *req = json_pack("{s:s}", "cmd", "stop"), *reply = NULL;
    int rc = ocp_control_call(path, req, &reply, 1.0);
    if (rc == 0 && !json_is_true(json_object_get(reply, "ok")))
        rc = -1;
    json_decref(req);
    json_decref(reply);
    return rc;
}

void ocp_app_node_stop(ocp_app_node *n, int level)
{
    if (level <= n->sent)
        return;
    if (n->pid > 0) {
        if (level == OCP_NODE_WARM && ask_stop(n->pid) != 0)
            kill(n->pid, SIGTERM);
        else if (level == OCP_NODE_COLD)
            kill(n->pid, SIGQUIT);
        else if (level >= OCP_NODE_KILL)
            kill(-n->pid, SIGKILL);
    }
    n->sent = level;
}

/* What the node's end says: an error, or a signal not ours, makes it failed. */
static void note_end(ocp_app_node *n, pid_t r, int st)
{
    if (r < 0) {
        n->failed = 1;
        fprintf(stderr, "ocrpool: cannot wait for the node: %s\n", strerror(errno));
    } else if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
        n->failed = 1; /* it said why */
    } else if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        if (!n->sent || (sig != SIGTERM && sig != SIGQUIT && sig != SIGKILL)) {
            n->failed = 1;
            if (n->clear_line)
                fprintf(stderr, "\r\033[K");
            fprintf(stderr, "ocrpool: the node was killed by signal %d (%s)\n", sig,
                    strsignal(sig));
        }
    }
}

int ocp_app_node_reap(ocp_app_node *n, int *failed)
{
    if (n->pid > 0) {
        int st = 0;
        pid_t r;
        do
            r = waitpid(n->pid, &st, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == 0)
            return 0;
        n->pid = 0;
        note_end(n, r, st);
    }
    if (failed)
        *failed = n->failed;
    return 1;
}

int ocp_app_node_running(const ocp_app_node *n)
{
    return n->pid > 0;
}

void ocp_app_node_wait(ocp_app_node *n, int show, ocp_app_node_stop_fn stop_fn, void *ctx)
{
    while (!ocp_app_node_reap(n, NULL)) {
        int want = stop_fn ? stop_fn(ctx) : 0;
        if (want)
            ocp_app_node_stop(n, want);
        ocp_app_node_relay(n, show, 100);
    }
    double t0 = ocp_now();
    while (n->err_fd >= 0 && ocp_app_node_relay(n, show, 100) && ocp_now() - t0 < 5) {
    }
}

void ocp_app_node_destroy(ocp_app_node *n)
{
    if (!n)
        return;
    /* The relay first: a node blocked writing to it would never end. */
    if (n->err_fd >= 0)
        close(n->err_fd);
    if (n->pid > 0) {
        ocp_app_node_stop(n, OCP_NODE_WARM);
        while (waitpid(n->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    free(n);
}
