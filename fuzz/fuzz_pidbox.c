/*
 * fuzz_pidbox.c: a message published on Celery's pidbox channel (any
 * client of the Redis may publish one), through what the node does with it
 * (broker/pidbox.c, pool/remote.c's reading of it): parse it for a node
 * name, then build the reply's envelope and an event's body from what was
 * read, as the node would answer. The same bytes are also read as what
 * Redis hands back for Celery's canvas (broker/canvas.c): chord parts (one
 * per line) and a callback signature applied to a result.
 */
#include "broker/celery.h"
#include "broker/pidbox.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Chord parts, one per line, as ZRANGE returns them; and the text as a signature. */
static void canvas(const char *raw, size_t size)
{
    char *parts[16];
    size_t lens[16], n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 16; i++)
        if (i == size || raw[i] == '\n') {
            parts[n] = (char *)raw + start;
            lens[n++] = i - start;
            start = i + 1;
        }
    char err[600];
    json_t *resl = ocp_celery_chord_results(parts, lens, n, err, sizeof err);
    json_t *sig = json_loadb(raw, size, 0, NULL);
    if (sig) {
        char *msg = NULL, queue[300], id[64];
        json_t *chain = json_object_get(sig, "chain_rest");
        if (ocp_celery_apply(sig, resl, "parent", "root", chain, &msg, queue, id, err,
                             sizeof err) == 0) {
            ocp_celery_msg m;
            if (ocp_celery_parse(msg, strlen(msg), &m, err, sizeof err) == 0)
                ocp_celery_msg_fini(&m);
        }
        free(msg);
        json_decref(sig);
    }
    json_decref(resl);
}

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
    canvas(raw, size);
    free(raw);
    return 0;
}
