/*
 * proto.c: framed JSON messages with optional fd passing (proto.h).
 */
#include "pool/proto.h"
#include "core/error.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <unistd.h>

unsigned char *ocp_proto_frame(json_t *obj, size_t *len)
{
    char *body = json_dumps(obj, JSON_COMPACT);
    if (!body)
        return NULL;
    size_t n = strlen(body);
    unsigned char *f = malloc(n + 4);
    if (f) {
        f[0] = (unsigned char)(n >> 24);
        f[1] = (unsigned char)(n >> 16);
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
        memcpy(f + 4, body, n);
        *len = n + 4;
    }
    free(body);
    return f;
}

int ocp_proto_send(int fd, json_t *obj, int fd_pass)
{
    return ocp_proto_send_timed(fd, obj, fd_pass, -1);
}

/* Waits until fd may be written, until the deadline (monotonic; < 0: none). 0, or
 * -ETIMEDOUT. */
static int wait_writable(int fd, double deadline)
{
    struct pollfd p = {fd, POLLOUT, 0};
    int ms = -1;
    if (deadline >= 0) {
        double left = deadline - ocp_now();
        if (left <= 0)
            return -ETIMEDOUT;
        ms = (int)(left * 1000) + 1;
    }
    if (poll(&p, 1, ms) == 0)
        return -ETIMEDOUT;
    return 0;
}

int ocp_proto_send_timed(int fd, json_t *obj, int fd_pass, double timeout_s)
{
    double deadline = timeout_s >= 0 ? ocp_now() + timeout_s : -1;
    char *body = json_dumps(obj, JSON_COMPACT);
    if (!body)
        return -ENOMEM;
    size_t n = strlen(body);
    unsigned char hdr[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    struct iovec iov[2] = {{hdr, 4}, {body, n}};
    struct msghdr mh = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    mh.msg_iov = iov;
    mh.msg_iovlen = 2;
    if (fd_pass >= 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd_pass, sizeof(int));
    }
    size_t total = n + 4, sent = 0;
    int rc = 0;
    while (sent < total) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* The peer is slow: wait for room (messages are whole or nothing), until
                 * the deadline; after it the stream is cut mid-frame (the caller lets the
                 * peer go). */
                if ((rc = wait_writable(fd, deadline)))
                    break;
                continue;
            }
            rc = -errno;
            break;
        }
        sent += (size_t)w;
        /* Advance the iovecs past what went; the fd went with the first byte. */
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
        size_t skip = (size_t)w;
        while (skip && mh.msg_iovlen) {
            if (skip >= mh.msg_iov[0].iov_len) {
                skip -= mh.msg_iov[0].iov_len;
                mh.msg_iov++;
                mh.msg_iovlen--;
            } else {
                mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + skip;
                mh.msg_iov[0].iov_len -= skip;
                skip = 0;
            }
        }
    }
    free(body);
    return rc;
}

void ocp_proto_reader_init(ocp_proto_reader *r)
{
    memset(r, 0, sizeof *r);
    r->passed_fd = -1;
}

void ocp_proto_reader_fini(ocp_proto_reader *r)
{
    free(r->buf);
    if (r->passed_fd >= 0)
        close(r->passed_fd);
    memset(r, 0, sizeof *r);
    r->passed_fd = -1;
}

int ocp_proto_fill(ocp_proto_reader *r, int fd)
{
    if (r->cap - r->len < 65536) {
        size_t ncap = r->cap ? r->cap * 2 : 131072;
        unsigned char *nb = realloc(r->buf, ncap);
        if (!nb)
            return -ENOMEM;
        r->buf = nb;
        r->cap = ncap;
    }
    struct iovec iov = {r->buf + r->len, r->cap - r->len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int got;
            memcpy(&got, CMSG_DATA(c), sizeof got);
            if (r->passed_fd >= 0)
                close(r->passed_fd);
            r->passed_fd = got;
        }
    }
    r->len += (size_t)n;
    return n > 0 ? (int)(n > 0x7fffffff ? 0x7fffffff : n) : 0;
}

int ocp_proto_next(ocp_proto_reader *r, json_t **out)
{
    *out = NULL;
    if (r->len < 4)
        return 0;
    size_t n = ((size_t)r->buf[0] << 24) | ((size_t)r->buf[1] << 16) | ((size_t)r->buf[2] << 8) |
               r->buf[3];
    if (n > OCP_PROTO_MAX)
        return OCP_E_INPUT_SIZE;
    if (r->len < 4 + n)
        return 0;
    json_error_t je;
    json_t *obj = json_loadb((const char *)r->buf + 4, n, 0, &je);
    memmove(r->buf, r->buf + 4 + n, r->len - 4 - n);
    r->len -= 4 + n;
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        return OCP_E_DECODE;
    }
    *out = obj;
    return 0;
}

int ocp_proto_recv(int fd, ocp_proto_reader *r, json_t **out)
{
    return ocp_proto_recv_timed(fd, r, out, -1);
}

int ocp_proto_recv_timed(int fd, ocp_proto_reader *r, json_t **out, double timeout_s)
{
    struct timeval start;
    gettimeofday(&start, NULL);
    for (;;) {
        int rc = ocp_proto_next(r, out);
        if (rc || *out)
            return rc;
        rc = ocp_proto_fill(r, fd);
        if (rc == 0)
            return -EPIPE;
        if (rc == -EAGAIN) {
            struct pollfd p = {fd, POLLIN, 0};
            int ms = -1;
            if (timeout_s >= 0) {
                struct timeval now;
                gettimeofday(&now, NULL);
                double left = timeout_s - ((double)(now.tv_sec - start.tv_sec) +
                                           (now.tv_usec - start.tv_usec) / 1e6);
                if (left <= 0)
                    return -ETIMEDOUT;
                ms = (int)(left * 1000) + 1;
            }
            poll(&p, 1, ms);
            continue;
        }
        if (rc < 0)
            return rc;
    }
}
