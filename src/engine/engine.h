/*
 * engine.h: the OCR engine interface. Engines are sibling files behind one
 * table of function pointers (ocp_engine_ops), chosen by name at run time:
 * engine_tesseract.c now, our own recognizer and a GPU engine later.
 *
 *   ocp_engine_open()   load the engine and its models (once per process;
 *                       later the zygote does it before forking workers)
 *   ocp_engine_ocr()    one page of pixels -> ocp_result, boxes in the
 *                       pixels' own coordinates (the caller rescales)
 *   ocp_engine_ocr_batch()  several pages at once (a worker's batch)
 *   ocp_engine_close()
 */
#ifndef OCP_ENGINE_ENGINE_H
#define OCP_ENGINE_ENGINE_H

#include <stddef.h>

#include "engine/result.h"
#include "image/image.h"

/* What opening an engine needs. Open type, filled by the caller. */
typedef struct ocp_engine_params {
    const char *lang;         /* "san+eng" */
    const char *tessdata_dir; /* NULL or "" = the default */
    int psm;                  /* page segmentation mode */
    int max_languages;        /* a task's own lang: at most this many (0 = the default) */
} ocp_engine_params;

/* Per page. Open type. */
typedef struct ocp_ocr_params {
    double timeout_s; /* soft deadline; 0 = none */
} ocp_ocr_params;

/* One page of a batch (ocp_engine_ocr_batch). Open type. */
typedef struct ocp_batch_page {
    const ocp_page_image *img; /* in */
    ocp_result *res;           /* out: initialised by the caller */
    int rc;                    /* out: 0, or a negative code with the reason in err */
    char err[512];
} ocp_batch_page;

typedef struct ocp_engine_ops {
    const char *name;
    unsigned features; /* OCP_FEAT_* of config.h the engine uses */
    int (*open)(const ocp_engine_params *p, void **state, char *err, size_t errlen);
    int (*ocr)(void *state, const ocp_page_image *img, const ocp_ocr_params *p, ocp_result *res,
               char *err, size_t errlen);
    /* Optional: n pages at once (their deadline the sum of theirs); without it the pages
     * go through ocr one by one. A page's failure is its own. */
    void (*ocr_batch)(void *state, ocp_batch_page *pages, int n, const ocp_ocr_params *p);
    void (*close)(void *state);
} ocp_engine_ops;

typedef struct ocp_engine ocp_engine;

/* The ops of the engine called name, or NULL. */
const ocp_engine_ops *ocp_engine_find(const char *name);

/* Opens an engine; *out is new (ocp_engine_close frees it). On failure the
 * reason is in err (one line). */
int ocp_engine_open(const char *name, const ocp_engine_params *p, ocp_engine **out, char *err,
                    size_t errlen);
/* OCRs one page into res (which the caller inits). The reason of a failure
 * is in ocp_engine_errmsg(). */
int ocp_engine_ocr(ocp_engine *e, const ocp_page_image *img, const ocp_ocr_params *p,
                   ocp_result *res);
/* OCRs n pages together (the pool's batches): each page gets its result or its own
 * failure (rc, err); p's timeout applies to each page, the batch having the sum. */
void ocp_engine_ocr_batch(ocp_engine *e, ocp_batch_page *pages, int n, const ocp_ocr_params *p);
const char *ocp_engine_errmsg(const ocp_engine *e);
const char *ocp_engine_name(const ocp_engine *e);
void ocp_engine_close(ocp_engine *e);

/* max-languages' default: a list of languages names at most this many models. */
#define OCP_DEFAULT_MAX_LANGUAGES 4

/*
 * Checks a language list from outside (a Celery task, an HTTP request) before anything is
 * loaded for it: names of installed models only (tessdata_dir's, as the tesseract and lstm
 * engines resolve it, NULL or "" = TESSDATA_PREFIX or the default; script/X as they find
 * it), '+'-joined, each once, at most max_languages (< 1 = the default, 4). Returns 0, or
 * OCP_E_LANG with "invalid language" in err, one reason whatever was wrong (it never says
 * whether a file exists). Loads nothing; for the HTTP API, the workers and the command line.
 */
int ocp_engine_check_langs(const char *tessdata_dir, const char *langs, int max_languages,
                           char *err, size_t errlen);

/* The Tesseract engine's table (engine_tesseract.c). */
extern const ocp_engine_ops ocp_engine_tesseract;
/* Our own recognizer on Tesseract's models, Tesseract for layout (engine_lstm.c). */
extern const ocp_engine_ops ocp_engine_lstm;
/* The null engine's (engine_null.c). */
extern const ocp_engine_ops ocp_engine_null;
/* The features of an open engine (OCP_FEAT_*). */
unsigned ocp_engine_features(const ocp_engine *e);

#endif
