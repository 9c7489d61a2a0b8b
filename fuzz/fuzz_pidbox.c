/*
 * fuzz_pidbox.c: a message published on Celery's pidbox channel (any
 * client of the Redis may publish one), through what the node does with it
 * (broker/pidbox.c, pool/remote.c's reading of it): parse it for a node
 * name, then build the reply's envelope and an event's body from what was
 * read, as the node would answer.
 */
#include "broker/pidbox.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes: a read past the end is caught. */
    char *raw = malloc(size ? size : 1);
    memcpy(raw, data, size);
    static const char *const nodes[] = {"celery@vm", "ocr1@host.example", "w1@vm"};
    for (size_t k = 0; k < sizeof nodes / sizeof nodes[0]; k++) {
        ocp_pidbox_req req;
        char err[300];
        int for_us = 0;
        if (ocp_pidbox_parse(raw, size, nodes[k], 1.7e9, &req, &for_us, err, sizeof err) == 0 &&
            for_us) {
            json_t *body = json_pack("{s:O}", nodes[k], req.arguments);
            json_t *h = req.ticket ? json_pack("{s:s}", "ticket", req.ticket) : NULL;
            free(ocp_pidbox_envelope(body, h, req.reply_exchange ? req.reply_exchange : "x",
                                     req.reply_key ? req.reply_key : "", 1));
            json_decref(h);
            json_decref(body);
            json_decref(ocp_celery_event_body(nodes[k], req.clock, req.method,
                                              json_deep_copy(req.arguments)));
            ocp_pidbox_req_fini(&req);
        }
    }
    free(raw);
    return 0;
}
