/*
 * fuzz_recog.c: a worker's request to the shared recognizer (src/recog/recog.c)
 * as the recognizer reads it: a frame's JSON, then ocp_recog_parse_request
 * against an arena of 1 MB and a model of 36 rows (Debian's height) and of
 * 256 (the tallest allowed). Every line it accepts must lie inside the arena
 * and before the outputs: checked here by touching each line's last byte.
 */
#include "recog/recog.h"

#include <assert.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#define ARENA (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char *arena;
    if (!arena && !(arena = calloc(1, ARENA)))
        return 0;
    json_t *msg = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!msg)
        return 0;
    static const int heights[2] = {36, 256};
    for (int h = 0; h < 2; h++) {
        ocp_recog_req req;
        char err[300];
        if (ocp_recog_parse_request(msg, ARENA, heights[h], &req, err, sizeof err))
            continue;
        assert(req.out <= ARENA);
        for (int k = 0; k < req.n; k++) {
            size_t end = req.line[k].off + (size_t)req.line[k].w * (size_t)heights[h];
            assert(end <= req.out);
            arena[end - 1] ^= 1;
        }
        free(req.line);
    }
    json_decref(msg);
    return 0;
}
