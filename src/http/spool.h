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

#include "core/util.h"

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
 * the queue), uploads without an ids file (nor a pending PDF job) go too, when older
 * than expires (expires > 0) and, where b can list its pages, no page names them. Returns
 * how many uploads were deleted.
 */
long ocp__spool_sweep(ocp_broker *b, const char *dir, int forgets, double expires, int orphans);

/* Seconds a kept PDF stays after its first download (a retried download finds it). */
#define OCP__SPOOL_FETCHED_S 30

/*
 * Notes upload path (in dir) as group's document for its PDF: writes dir/pdf/<group>.job
 * with the ids (strings, borrowed) of its pages, in place of ocp__spool_note. group must
 * be a plain name (letters, digits, '-', '_', '.'; not '.' first; 100 bytes at most).
 * Returns 0 or -errno (-EINVAL: group is not a plain name).
 */
int ocp__spool_keep_pdf(const char *dir, const char *group, const char *path, json_t *ids);

/* Makes group's searchable PDF into out from the queue b (the caller's: http.c reads the
 * upload as the workers read it). Returns 0, or a code with the reason in err. */
typedef int (*ocp__spool_build_fn)(void *ctx, ocp_broker *b, const char *group, ocp_sb *out,
                                   char *err, size_t errlen);

/*
 * group's kept PDF: made first when its job is still pending (see the top: build, with b
 * and ctx; an upload's pages not all done yet, OCP_E_EMPTY, or a broker that does not
 * answer, OCP_E_BROKER, make nothing and return that code, unless final: the sweep, which
 * calls only once every page has finished, keeps a failed page's reason too). Returns 0
 * with *fd open on the PDF (new: the caller closes it); 1 when the spool holds nothing
 * for group (not a job sent with pdf=1, or one whose PDF has gone); or a code with the
 * reason in err: the code and reason kept in pdf/<group>.err, or those of this attempt.
 */
int ocp__spool_pdf(ocp_broker *b, const char *dir, const char *group, int final,
                   ocp__spool_build_fn build, void *ctx, int *fd, char *err, size_t errlen);

/* Notes the first download of group's kept PDF: it goes OCP__SPOOL_FETCHED_S later. */
void ocp__spool_pdf_fetched(const char *dir, const char *group);

/*
 * One sweep of dir/pdf (see the top): the PDFs of jobs whose pages have all finished are
 * made (forgets and expires as for ocp__spool_sweep), PDFs fetched OCP__SPOOL_FETCHED_S
 * ago deleted, and what is older than the result lifetime (expires; a day when 0)
 * deleted. Returns how many jobs ended (their PDF, or why there is none, kept).
 */
long ocp__spool_sweep_pdf(ocp_broker *b, const char *dir, int forgets, double expires,
                          ocp__spool_build_fn build, void *ctx);

#endif
