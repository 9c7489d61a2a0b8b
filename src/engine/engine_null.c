/*
 * engine_null.c: an engine that returns an empty page at once without
 * reading it (OCP_FEAT_NO_PIXELS), so a benchmark measures what the pool
 * and the queue cost per page, and tests can run many pages fast.
 */
#include "config/config.h"
#include "engine/engine.h"

static int null_open(const ocp_engine_params *p, void **state, char *err, size_t errlen)
{
    (void)p;
    (void)err;
    (void)errlen;
    static int token;
    *state = &token;
    return 0;
}

static int null_ocr(void *state, const ocp_page_image *img, const ocp_ocr_params *p,
                    ocp_result *res, char *err, size_t errlen)
{
    (void)state;
    (void)img;
    (void)p;
    (void)err;
    (void)errlen;
    ocp_result_set(&res->text, "");
    return 0;
}

static void null_close(void *state)
{
    (void)state;
}

const ocp_engine_ops ocp_engine_null = {
    .name = "null",
    .features = OCP_FEAT_NO_PIXELS,
    .open = null_open,
    .ocr = null_ocr,
    .close = null_close,
};
