/*
 * celery.h: Celery's protocol v2 task messages and its Redis result
 * backend's task metas, as kombu's Redis transport stores them (see the
 * wire notes in DESIGN.md). Pure functions on JSON text: no Redis here, so
 * every rule is unit tested.
 *
 * The page task: name "ocrpool.ocr_page" (configurable), args [source,
 * lang], kwargs page (1-based PDF page), formats, max_image_size, width,
 * height (for the memory budget), lang, source. source is a path on storage
 * the workers share, or inline bytes {"b64": "..."}.
 */
#ifndef OCP_BROKER_CELERY_H
#define OCP_BROKER_CELERY_H

#include "core/failure.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* kombu's separator of priority lists: queue, then "\x06\x16", then the step. */
#define OCP_CELERY_PRI_SEP "\x06\x16"

/* A parsed task message. Open type; the json_t fields are owned (fini). */
typedef struct ocp_celery_msg {
    json_t *root;           /* the envelope */
    json_t *args, *kwargs;  /* from the body */
    const char *id, *task;  /* borrowed from root */
    const char *group;      /* NULL when not in a group */
    double eta, expires;    /* seconds since the epoch, 0 = none */
    double time_limit;      /* hard, from headers.timelimit[0]; 0 = none */
    double soft_time_limit; /* headers.timelimit[1]; 0 = none */
    int priority;
    json_t *embed;       /* the body's third member, {callbacks, errbacks, chain, chord}
                          * (owned; NULL when it is not an object) */
    const char *root_id; /* borrowed from root; NULL when none */
    double group_index;  /* headers.group_index; -1 = none */
} ocp_celery_msg;

/*
 * Parses a message as it sits in a queue list. On failure *m is empty and
 * err says why; when the headers could be read, m->id is still set (a
 * failure result can be stored for it) and the function returns
 * OCP_E_MESSAGE either way.
 */
int ocp_celery_parse(const char *raw, size_t len, ocp_celery_msg *m, char *err, size_t errlen);
void ocp_celery_msg_fini(ocp_celery_msg *m);

/*
 * The page payload for ocrpool's workers (source or data_b64, page 0-based,
 * lang, formats, max_image_size, width, height, and the message's
 * time_limit and soft_time_limit when it has them) from a message's args,
 * kwargs and headers. *payload is a new string. On bad arguments returns
 * OCP_E_MESSAGE with Python's exception type in exc_type (TypeError,
 * ValueError) and the message in err.
 */
int ocp_celery_payload(const ocp_celery_msg *m, const char *default_lang, size_t max_inline,
                       char **payload, char exc_type[32], char *err, size_t errlen);

/* A new task message. Open type; strings borrowed, args/kwargs borrowed. */
typedef struct ocp_celery_new {
    const char *id, *task, *queue, *group;
    int priority; /* Celery's: 0 (first) .. 9 */
    json_t *args, *kwargs;
} ocp_celery_new;

/* The message as JSON text (new string). */
char *ocp_celery_message(const ocp_celery_new *n);
/* The list a message of priority goes to: queue, or queue + sep + step (3, 6, 9). */
void ocp_celery_queue_key(const char *queue, int priority, char *out, size_t len);
/* The payload of an ocrpool page as Celery args and kwargs (new references). */
int ocp_celery_args_from_payload(const char *payload, json_t **args, json_t **kwargs);

/*
 * A task meta of the Redis result backend: {status, result, traceback
 * (always null), children, date_done, task_id[, group_id]
 * [, ocrpool_failure][, ocrpool_buried]}. result is stolen (NULL = null)
 * and serialised here, once. date_done is set for ready states (SUCCESS,
 * FAILURE, REVOKED). failure other than OCP_FAIL_NONE adds
 * "ocrpool_failure": its name (failure.h), and buried adds
 * "ocrpool_buried": true: Celery ignores keys it does not know, and
 * ocrpool reads the kind and the state back exactly (the exception type
 * alone cannot tell an input failure from an engine failure, nor a burial
 * from a lost worker's failure with acks-late off). New string.
 */
char *ocp_celery_meta(const char *id, const char *status, json_t *result, const char *group,
                      ocp_failure failure, bool buried);
/* A FAILURE result: {exc_type, exc_message: [message], exc_module}. New reference. */
json_t *ocp_celery_exc(const char *type, const char *module, const char *message);
/* The Celery exception a failure kind is reported as: its type and module (static). */
void ocp_celery_exc_of(ocp_failure kind, const char **type, const char **module);
/* The failure kind a Celery exception type stands for, for metas without
 * ocrpool_failure (written by a Python worker): the limits and a lost
 * worker by their exceptions, a refused message as malformed, else engine. */
ocp_failure ocp_celery_failure_of_exc(const char *type);

/* What a task meta says. Open type; strings owned (ocp_celery_meta_info_fini). */
typedef struct ocp_celery_meta_info {
    char *status;        /* "SUCCESS", "FAILURE", "STARTED", ... */
    char *group;         /* group_id; NULL when none */
    char *result;        /* SUCCESS: the result's text exactly as stored in the meta (not
                          * parsed here: whoever uses it parses it, once) */
    char *exc_type;      /* FAILURE, REVOKED: the exception's type; NULL when none */
    char *exc_message;   /* its first argument; NULL when none */
    ocp_failure failure; /* ocrpool_failure, else from exc_type; NONE unless failed */
    bool buried;         /* ocrpool_buried; in a meta without ocrpool_failure (a Python
                          * worker's, an older ocrpool's): exc_type WorkerLostError */
    double date_done;    /* seconds since the epoch; 0 = none */
    int pid;             /* STARTED: the worker's pid; 0 = none */
} ocp_celery_meta_info;

/*
 * Reads a task meta's text (len bytes). The top level is scanned member by
 * member; only the small members are parsed, so a big result is copied as
 * text, never parsed and written again. OCP_E_MESSAGE when the text is not
 * a JSON object or has no status (then *out is empty).
 */
int ocp_celery_meta_read(const char *text, size_t len, ocp_celery_meta_info *out);
void ocp_celery_meta_info_fini(ocp_celery_meta_info *i);

/* ISO 8601 ("2026-11-27T01:44:29.123456+00:00", "Z", or no zone = UTC) to seconds since
 * the epoch; -1 when it is not one. */
double ocp_iso8601_parse(const char *s);
/* Seconds since the epoch as Celery writes date_done: "2026-11-27T01:44:29.123456" (UTC). */
void ocp_iso8601_format(double t, char out[40]);

/* ---- canvas.c: what a finished task sets off (Celery's chain, link and chord) ---- */

/*
 * The message that applies sig, a plain task signature ({task, args, kwargs, options,
 * immutable}, as Celery serialises one), to retval (borrowed; prepended to its args unless
 * the signature is immutable; NULL: its args as they are), as the child of parent_id in the
 * tree of root_id, with chain (borrowed; NULL or [] = none) still to run after it. *msg is a
 * new string; queue receives the list it goes to (options.queue, else routing_key, else
 * "celery", at options.priority) and id its task id (options.task_id, frozen by the
 * producer, or a new one). OCP_E_MESSAGE with err when sig is not a plain task signature.
 */
int ocp_celery_apply(json_t *sig, json_t *retval, const char *parent_id, const char *root_id,
                     json_t *chain, char **msg, char queue[300], char id[64], char *err,
                     size_t errlen);
/* A chord part as Celery's Redis backend keeps it in the group's ".j" set: [1, id, state,
 * result] (result borrowed). New string. */
char *ocp_celery_chord_part(const char *id, const char *state, json_t *result);
/*
 * The chord body's argument from the parts' texts (n of them, in order): the list of their
 * results (new reference), or NULL with err naming the first part that failed (Celery's
 * ChordError "Dependency ID raised ...") or could not be read.
 */
json_t *ocp_celery_chord_results(char *const *parts, const size_t *lens, size_t n, char *err,
                                 size_t errlen);

#endif
