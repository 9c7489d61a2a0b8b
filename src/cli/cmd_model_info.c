/*
 * cmd_model_info.c: `ocrpool model-info LANG|FILE...`: what our own reader
 * of Tesseract's LSTM models (src/engine/lstm) sees in a traineddata file:
 * the network spec and tree with its weight matrices, the classes and the
 * character set. A model it cannot read is refused with the reason.
 */
#include "cli/cli.h"
#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ocp_cmd_model_info(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        printf("usage: ocrpool model-info LANG|FILE.traineddata...\n"
               "  LANG is looked up in $TESSDATA_PREFIX, else Debian's tessdata folder.\n");
        return argc < 1 ? OCP_EXIT_USAGE : OCP_EXIT_OK;
    }
    int rc = OCP_EXIT_OK;
    for (int i = 0; i < argc; i++) {
        char path[4096], err[600];
        const char *td = getenv("TESSDATA_PREFIX");
        if (strchr(argv[i], '/') || strstr(argv[i], ".traineddata"))
            snprintf(path, sizeof path, "%s", argv[i]);
        else
            snprintf(path, sizeof path, "%s/%s.traineddata",
                     td && *td ? td : "/usr/share/tesseract-ocr/5/tessdata", argv[i]);
        ocp_lstm_model *m = NULL;
        if (ocp_lstm_model_load(path, &m, err, sizeof err)) {
            fprintf(stderr, "ocrpool: %s\n", err);
            rc = OCP_EXIT_FAILED;
            continue;
        }
        ocp_sb sb;
        ocp_sb_init(&sb);
        long madds = ocp_lstm_model_describe(m, &sb);
        printf("%s (%s)\n%s", argv[i], m->version ? m->version : "no version", sb.buf);
        printf("weights: %ld int8 (multiply-adds of one application of every matrix)\n", madds);
        ocp_sb_fini(&sb);
        ocp_lstm_model_free(m);
    }
    return rc;
}
