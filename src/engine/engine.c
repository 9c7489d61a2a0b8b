/*
 * engine.c: the engine registry and the wrapper that holds an engine's
 * state and last error (engine.h).
 */
#include "engine/engine.h"
#include "core/error.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const ocp_engine_ops *const engines[] = {&ocp_engine_tesseract, &ocp_engine_null,
                                                &ocp_engine_lstm};

void ocp__tess_dir(const char *setting, char dirbuf[4096]); /* engine_tesseract.c */

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

/* One language name of a list: letters, digits, '_' and '-' only (1 to 64), or script/ and
 * such a name. */
static int lang_name_ok(const char *l, size_t n)
{
    if (n > 7 && strncmp(l, "script/", 7) == 0) {
        l += 7;
        n -= 7;
    }
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = l[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Whether dir/name.traineddata is a regular file (name checked by lang_name_ok). */
static int model_file(const char *dir, const char *name, size_t n)
{
    char path[4200];
    struct stat st;
    if ((size_t)snprintf(path, sizeof path, "%s/%.*s.traineddata", dir, (int)n, name) >=
        sizeof path)
        return 0;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Whether language l (n bytes) is installed as the engines resolve it: script/X as
 * dir/script/X.traineddata, else dir/X.traineddata. */
static int lang_installed(const char *dir, const char *l, size_t n)
{
    if (model_file(dir, l, n))
        return 1;
    return n > 7 && strncmp(l, "script/", 7) == 0 && model_file(dir, l + 7, n - 7);
}

/* Whether the part at l (n bytes) of the list langs appears earlier in it. */
static int lang_repeated(const char *langs, const char *l, size_t n)
{
    for (const char *p = langs; p < l;) {
        const char *e = strchr(p, '+');
        size_t k = (size_t)(e - p);
        if (k == n && strncmp(p, l, n) == 0)
            return 1;
        p = e + 1;
    }
    return 0;
}

int ocp_engine_check_langs(const char *tessdata_dir, const char *langs, int max_languages,
                           char *err, size_t errlen)
{
    char dir[4096];
    int count = 0;
    if (max_languages < 1)
        max_languages = OCP_DEFAULT_MAX_LANGUAGES;
    if (!langs || !*langs || strlen(langs) > 1024)
        return ocp_errf(OCP_E_LANG, err, errlen, "invalid language");
    ocp__tess_dir(tessdata_dir, dir);
    for (const char *l = langs;;) {
        const char *e = strchr(l, '+');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        if (++count > max_languages || !lang_name_ok(l, n) || lang_repeated(langs, l, n) ||
            !lang_installed(dir, l, n))
            return ocp_errf(OCP_E_LANG, err, errlen, "invalid language");
        if (!e)
            return 0;
        l = e + 1;
    }
}
