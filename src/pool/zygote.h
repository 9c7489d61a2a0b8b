/*
 * zygote.h: the zygote's side of the pool (zygote.c), internal to
 * src/pool: the master forks a zygote, which loads the engine once and
 * forks the workers; the messages between them are listed in zygote.c.
 */
#ifndef OCP_POOL_ZYGOTE_H
#define OCP_POOL_ZYGOTE_H

#include <stddef.h>

#include "pool/pool.h"

/*
 * Forks a zygote for pc (copied into the child by the fork): *fd is the
 * master's end of its socket (close it), *pid its process. The zygote says
 * {"t":"ready"} once its engine is loaded, or {"t":"fatal","error":E} and
 * exits with OCP_EXIT_FATAL. 0, or -errno with the reason in err.
 */
int ocp__zygote_start(const ocp_pool_conf *pc, int *fd, int *pid, char *err, size_t errlen);

#endif
