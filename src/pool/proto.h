/*
 * proto.h: messages between master, zygote and workers: JSON objects,
 * each framed by a 4-byte big-endian length on a stream socket, with a
 * size cap checked before anything is allocated. A file descriptor may
 * travel with a message (SCM_RIGHTS), which is how the zygote hands the
 * master its end of a new worker's socket.
 */
#ifndef OCP_POOL_PROTO_H
#define OCP_POOL_PROTO_H

#include <jansson.h>
#include <stddef.h>

#define OCP_PROTO_MAX (64u << 20) /* largest message: a page result with all its boxes */

/* obj (borrowed) as one frame: length header and JSON text. Returns a new buffer (free) of
 * *len bytes, or NULL when obj cannot be written. */
unsigned char *ocp_proto_frame(json_t *obj, size_t *len);

/* Sends obj (borrowed) on fd, with fd_pass attached when >= 0. Blocking (on a
 * non-blocking fd: waits for room without limit). 0 or -errno. */
int ocp_proto_send(int fd, json_t *obj, int fd_pass);
/* The same, waiting at most timeout_s seconds (< 0: no limit) for room on a non-blocking
 * fd: -ETIMEDOUT after it, the frame then sent in part (the peer must be let go). */
int ocp_proto_send_timed(int fd, json_t *obj, int fd_pass, double timeout_s);

/* A reader that collects frames from a non-blocking or blocking stream. */
typedef struct ocp_proto_reader {
    unsigned char *buf;
    size_t len, cap;
    int passed_fd; /* the last fd received, or -1 */
} ocp_proto_reader;

void ocp_proto_reader_init(ocp_proto_reader *r);
void ocp_proto_reader_fini(ocp_proto_reader *r);
/*
 * Reads what is available on fd (one read call). Returns >0 bytes read, 0 on
 * end of stream, -EAGAIN when nothing was there, other -errno on error.
 */
int ocp_proto_fill(ocp_proto_reader *r, int fd);
/*
 * Takes the next whole message: *out is new (json_decref) or NULL when no
 * whole frame is buffered. Returns 0, or OCP_E_INPUT_SIZE/OCP_E_DECODE for a
 * frame that is too big or not JSON (the stream is then unusable).
 */
int ocp_proto_next(ocp_proto_reader *r, json_t **out);
/* Blocking: reads until one message arrives. 0, -EPIPE at end of stream, or an error. */
int ocp_proto_recv(int fd, ocp_proto_reader *r, json_t **out);
/* As ocp_proto_recv, giving up with -ETIMEDOUT after timeout_s seconds. */
int ocp_proto_recv_timed(int fd, ocp_proto_reader *r, json_t **out, double timeout_s);

#endif
