/*
 * fuzz_proto.c: the control protocol's frames (proto.c) as a peer sends
 * them: the bytes go down a socket pair in pieces (sizes from the input's
 * first byte), and the master's reader takes frames as its control client
 * does (stats.c: fill, the size check, next) until the stream ends or is
 * refused.
 */
#include "pool/proto.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define CTL_MAX 65536 /* the master's OCP__CTL_MAX (master_int.h): requests are small */

static int too_big(const ocp_proto_reader *rd)
{
    if (rd->len > 4 + (size_t)CTL_MAX)
        return 1;
    if (rd->len < 4)
        return 0;
    size_t n = ((size_t)rd->buf[0] << 24) | ((size_t)rd->buf[1] << 16) | ((size_t)rd->buf[2] << 8) |
               rd->buf[3];
    return n > CTL_MAX;
}

/* Reads all that is buffered on fd; 1 when the stream is to be dropped. */
static int drain(ocp_proto_reader *rd, int fd)
{
    int r = ocp_proto_fill(rd, fd);
    if (too_big(rd))
        return 1;
    for (;;) {
        json_t *msg = NULL;
        int rc = ocp_proto_next(rd, &msg);
        if (rc)
            return 1;
        if (!msg)
            return r == 0 || (r < 0 && r != -EAGAIN);
        /* What a handler does first: look at the command. */
        json_t *frame = json_object_get(msg, "cmd");
        size_t len = 0;
        unsigned char *again = ocp_proto_frame(msg, &len);
        free(again);
        (void)frame;
        json_decref(msg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = 1 + data[0] % 64 * 97;
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    ocp_proto_reader rd;
    ocp_proto_reader_init(&rd);
    int dropped = 0;
    while (size > 0 && !dropped) {
        size_t k = size < piece ? size : piece;
        ssize_t w = write(sv[0], data, k);
        if (w <= 0)
            break;
        data += w;
        size -= (size_t)w;
        dropped = drain(&rd, sv[1]);
    }
    close(sv[0]);
    while (!dropped)
        dropped = drain(&rd, sv[1]);
    ocp_proto_reader_fini(&rd);
    close(sv[1]);
    return 0;
}
