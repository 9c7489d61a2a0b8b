/*
 * spool.h: the uploads the HTTP API keeps for the workers (internal to
 * src/http). An upload is a file in the spool folder; once pages of it are
 * queued, a file beside it ("<upload>.ids", one task id a line) says which;
 * the sweep deletes both once every one of those pages has finished (done,
 * failed or buried), on either broker. An upload that queued nothing is
 * deleted by its request (http.c); one left without an ids file (its
 * process died) goes after the result lifetime.
 */
#ifndef OCP_HTTP_SPOOL_H
#define OCP_HTTP_SPOOL_H

#include "broker/broker.h"

#include <jansson.h>

/* A new, empty spool file in dir for an upload named name (its extension kept when it is
 * short and plain); its path in *path (new, free). Returns the open descriptor, or
 * -errno with *path NULL. */
int ocp__spool_create(const char *dir, const char *name, char **path);

/* Writes "<path>.ids": the ids (strings, borrowed) of the pages queued from upload path.
 * Returns 0 or -errno. */
int ocp__spool_note(const char *path, json_t *ids);

/*
 * One sweep of dir on broker b: uploads whose pages have all finished are deleted, with
 * their ids files. A page the broker does not know is finished when the broker keeps
 * finished pages until they expire (forgets 0: SQLite); on a broker that cannot tell a
 * page not started from one whose result expired (forgets 1: Redis), only once its ids
 * file is older than twice expires (expires > 0). With orphans (a slower cadence: it lists
 * the queue), uploads without an ids file go too, when older than expires (expires > 0)
 * and, where b can list its pages, no page names them. Returns how many uploads were
 * deleted.
 */
long ocp__spool_sweep(ocp_broker *b, const char *dir, int forgets, double expires, int orphans);

#endif
