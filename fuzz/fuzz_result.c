/*
 * fuzz_result.c: a page result's JSON (src/engine/result.c), as the front
 * ends read it back from the broker (app/output.c: a result any worker, or a
 * Python one, stored): parse, then every rendering (txt, json, hocr, alto,
 * tsv), then the rescale a worker applies and the JSON once more.
 */
#include "engine/result.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    ocp_result r;
    ocp_result_init(&r);
    if (ocp_result_from_json(&r, text) == 0) {
        static const int fmts[] = {OCP_FMT_TXT, OCP_FMT_JSON, OCP_FMT_HOCR, OCP_FMT_ALTO,
                                   OCP_FMT_TSV};
        ocp_sb sb;
        ocp_sb_init(&sb);
        for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++)
            ocp_result_render(&r, fmts[i], &sb);
        ocp_sb_fini(&sb);
        ocp_result_rescale(&r, 1.5, 0.75, r.width, r.height);
        json_decref(ocp_result_json(&r));
    }
    ocp_result_fini(&r);
    free(text);
    return 0;
}
