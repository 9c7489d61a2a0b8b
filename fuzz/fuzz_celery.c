/*
 * fuzz_celery.c: a Celery message as it sits in a Redis queue list, through
 * what the Redis broker does with it (redis_take.c): parse, the failure
 * meta for a malformed one that has an id, the page payload, and the task
 * meta of a result; and the same bytes as a task meta read back from the
 * result backend (written by any Celery worker).
 */
#include "broker/celery.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void take(const char *raw, size_t len)
{
    char err[600], exc[32] = "";
    ocp_celery_msg m;
    if (ocp_celery_parse(raw, len, &m, err, sizeof err)) {
        if (m.id) /* what refuse() stores for the waiting producer */
            free(ocp_celery_meta(m.id, "FAILURE",
                                 ocp_celery_exc("MalformedMessage", "ocrpool", err), m.group,
                                 OCP_FAIL_MALFORMED, false));
        ocp_celery_msg_fini(&m);
        return;
    }
    char *payload = NULL;
    if (ocp_celery_payload(&m, "eng", 1 << 20, &payload, exc, err, sizeof err) == 0) {
        json_t *args = NULL, *kwargs = NULL;
        if (ocp_celery_args_from_payload(payload, &args, &kwargs) == 0) {
            json_decref(args);
            json_decref(kwargs);
        }
        free(ocp_celery_meta(m.id, "SUCCESS", json_string(payload), m.group, OCP_FAIL_NONE, false));
    } else {
        free(ocp_celery_meta(m.id, "FAILURE", ocp_celery_exc(exc, "builtins", err), m.group,
                             OCP_FAIL_MALFORMED, false));
    }
    free(payload);
    ocp_celery_msg_fini(&m);
}

static void meta(const char *text, size_t len)
{
    ocp_celery_meta_info mi;
    if (ocp_celery_meta_read(text, len, &mi) == 0)
        ocp_celery_meta_info_fini(&mi);
    /* A date as the backend writes it, from the first bytes. */
    char date[64];
    size_t n = len < sizeof date - 1 ? len : sizeof date - 1;
    memcpy(date, text, n);
    date[n] = '\0';
    ocp_iso8601_parse(date);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes: a read past the end is caught. */
    char *raw = malloc(size ? size : 1);
    memcpy(raw, data, size);
    take(raw, size);
    meta(raw, size);
    free(raw);
    return 0;
}
