/*
 * engine.c: the engine registry and the wrapper that holds an engine's
 * state and last error (engine.h).
 */
#include "engine/engine.h"
#include "core/error.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

static const ocp_engine_ops *const engines[] = {&ocp_engine_tesseract, &ocp_engine_null,
                                                &ocp_engine_lstm};

struct ocp_engine {
    const ocp_engine_ops *ops;
    void *state;
    char errmsg[512];
};

const ocp_engine_ops *ocp_engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++)
        if (strcmp(engines[i]->name, name) == 0)
            return engines[i];
    return NULL;
}

int ocp_engine_open(const char *name, const ocp_engine_params *p, ocp_engine **out, char *err,
                    size_t errlen)
{
    const ocp_engine_ops *ops = ocp_engine_find(name);
    void *state = NULL;
    int rc;
    if (!ops)
        return ocp_errf(OCP_E_CONFIG, err, errlen, "no engine called '%s'", name);
    rc = ops->open(p, &state, err, errlen);
    if (rc)
        return rc;
    ocp_engine *e = ocp_xcalloc(1, sizeof *e);
    e->ops = ops;
    e->state = state;
    *out = e;
    return 0;
}

int ocp_engine_ocr(ocp_engine *e, const ocp_page_image *img, const ocp_ocr_params *p,
                   ocp_result *res)
{
    e->errmsg[0] = '\0';
    ocp_result_set(&res->engine, e->ops->name);
    return e->ops->ocr(e->state, img, p, res, e->errmsg, sizeof e->errmsg);
}

void ocp_engine_ocr_batch(ocp_engine *e, ocp_batch_page *pages, int n, const ocp_ocr_params *p)
{
    e->errmsg[0] = '\0';
    for (int i = 0; i < n; i++) {
        ocp_result_set(&pages[i].res->engine, e->ops->name);
        pages[i].rc = 0;
        pages[i].err[0] = '\0';
    }
    if (e->ops->ocr_batch) {
        e->ops->ocr_batch(e->state, pages, n, p);
        return;
    }
    for (int i = 0; i < n; i++)
        pages[i].rc = e->ops->ocr(e->state, pages[i].img, p, pages[i].res, pages[i].err,
                                  sizeof pages[i].err);
}

const char *ocp_engine_errmsg(const ocp_engine *e)
{
    return e->errmsg;
}

const char *ocp_engine_name(const ocp_engine *e)
{
    return e->ops->name;
}

void ocp_engine_close(ocp_engine *e)
{
    if (!e)
        return;
    e->ops->close(e->state);
    free(e);
}

unsigned ocp_engine_features(const ocp_engine *e)
{
    return e->ops->features;
}
