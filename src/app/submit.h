/*
 * submit.h: putting a document's pages on a queue, and where the queue and
 * the uploads live by default. Shared by the front ends (`ocrpool ocr`,
 * `submit`, `serve` and the HTTP API); it sits above image/ and broker/
 * and below cli/ and http/.
 */
#ifndef OCP_APP_SUBMIT_H
#define OCP_APP_SUBMIT_H

#include "broker/broker.h"
#include "config/config.h"
#include "image/image.h"

#include <stddef.h>

/* How ocp_app_submit_file makes tasks. Open type; strings borrowed. */
typedef struct ocp_submit_opts {
    const char *lang;
    const char *group;
    int priority;
    int max_image_size; /* -1 = the worker's setting */
    int stable_ids;     /* ids from file, size, time, page and settings (resumable runs);
                         * a page whose task exists unfinished in another group gets one of
                         * its own in group, its id from the group too */
} ocp_submit_opts;

/* Called for each page task made: id, page (0-based), pages of the file, newly inserted.
 * Returns 0 to go on, non-zero to stop queueing (a stop asked for). */
typedef int (*ocp_submit_fn)(void *ctx, const char *id, int page, int pages, int inserted);

/*
 * Queues one task per page of path (the page's size read from its header,
 * for the master's memory budget; the per-page settings in the payload).
 * Needs libvips started (ocp_image_global_init). Returns 0, -EINTR when fn
 * asked to stop (the pages before it queued), or a code with the reason in
 * err.
 */
int ocp_app_submit_file(ocp_broker *b, const char *path, const ocp_image_limits *lim,
                        const ocp_submit_opts *o, ocp_submit_fn fn, void *ctx, char *err,
                        size_t errlen);

/* The data folder ($XDG_DATA_HOME/ocrpool, else ~/.local/share/ocrpool) into buf. */
void ocp_app_data_dir(char *buf, size_t len);

/* The broker URL from the settings, or the default queue file in the data folder (the
 * folder created; a named SQLite queue file's folder is created too, with buf as scratch).
 * Returns the settings' string (borrowed) or buf. */
const char *ocp_app_broker_url(const ocp_config *cfg, char *buf, size_t len);

/* Where uploads wait for the workers of broker url: beside a queue file, or in the data
 * folder for a network broker. Not created. */
void ocp_app_spool_dir(const char *url, char *buf, size_t len);

#endif
