/*
 * control.c: control socket paths, listening, and calls (control.h).
 */
#include "pool/control.h"
#include "pool/proto.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int ocp_control_dir(char *buf, size_t len, int create)
{
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && *x)
        snprintf(buf, len, "%s/ocrpool", x);
    else if (geteuid() == 0)
        snprintf(buf, len, "/run/ocrpool");
    else
        snprintf(buf, len, "/tmp/ocrpool-%u", (unsigned)geteuid());
    if (!create)
        return 0;
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (lstat(buf, &st) < 0)
        return -errno;
    /* Not ours, or open to others: refuse rather than talk through it. */
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
        return -EPERM;
    return 0;
}

static int cmp_node(const void *a, const void *b)
{
    long x = ((const ocp_control_node *)a)->pid, y = ((const ocp_control_node *)b)->pid;
    return (x > y) - (x < y);
}

int ocp_control_nodes(ocp_control_node *out, int max, int remove_stale)
{
    char dir[200];
    int n = 0;
    if (ocp_control_dir(dir, sizeof dir, 0))
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (pid <= 0 || strcmp(end, ".sock") != 0)
            continue;
        char path[sizeof out->path];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
            if (remove_stale)
                unlink(path);
            continue;
        }
        if (n < max) {
            out[n].pid = pid;
            snprintf(out[n].path, sizeof out[n].path, "%s", path);
            n++;
        }
    }
    closedir(d);
    if (n > 1)
        qsort(out, (size_t)n, sizeof *out, cmp_node);
    return n;
}

int ocp_control_listen(char *path, size_t len)
{
    char dir[200];
    int rc = ocp_control_dir(dir, sizeof dir, 1);
    if (rc)
        return rc;
    /* Sockets of nodes that are gone (killed with -9) are cleared away. */
    ocp_control_nodes(NULL, 0, 1);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(path, len, "%s/%d.sock", dir, (int)getpid());
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    mode_t old = umask(077);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int ocp_control_call(const char *path, json_t *req, json_t **reply, double timeout_s)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        rc = -errno;
    if (!rc)
        rc = ocp_proto_send(fd, req, -1);
    if (!rc) {
        ocp_proto_reader rd;
        ocp_proto_reader_init(&rd);
        rc = ocp_proto_recv_timed(fd, &rd, reply, timeout_s);
        ocp_proto_reader_fini(&rd);
    }
    close(fd);
    return rc;
}
