/*
 * engine_tesseract.c: the Tesseract engine through libtesseract's C API.
 *
 * Tesseract is the reference our own recognizer will be measured against,
 * so its settings match the `tesseract` CLI: page segmentation mode 3 by
 * default (the C API's own default is 6, which gives other text), OpenMP
 * limited to one thread (main.c sets OMP_THREAD_LIMIT before libgomp
 * starts), the source resolution of the pixels it is given.
 * TessDeleteText and the TessBaseAPI* lifecycle stay inside this file.
 */
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/engine.h"

#include <ctype.h>
#include <leptonica/allheaders.h>
#include <stdlib.h>
#include <string.h>
#include <tesseract/capi.h>
#include <unistd.h>

#ifndef OCP_TESSDATA_DEFAULT
#define OCP_TESSDATA_DEFAULT "/usr/share/tesseract-ocr/5/tessdata"
#endif

typedef struct tess_state {
    TessBaseAPI *api;
    char *lang; /* the languages as loaded ("san+eng", script/ resolved) */
} tess_state;

/* ISO 15924 codes of Debian's tesseract-ocr-script-* packages. */
static const struct {
    const char *script, *code;
} script_codes[] = {
    {"Arabic", "arab"},     {"Armenian", "armn"},
    {"Bengali", "beng"},    {"Canadian_Aboriginal", "cans"},
    {"Cherokee", "cher"},   {"Cyrillic", "cyrl"},
    {"Devanagari", "deva"}, {"Ethiopic", "ethi"},
    {"Fraktur", "frak"},    {"Georgian", "geor"},
    {"Greek", "grek"},      {"Gujarati", "gujr"},
    {"Gurmukhi", "guru"},   {"HanS", "hans"},
    {"HanT", "hant"},       {"Hangul", "hang"},
    {"Hebrew", "hebr"},     {"Japanese", "jpan"},
    {"Kannada", "knda"},    {"Khmer", "khmr"},
    {"Lao", "laoo"},        {"Latin", "latn"},
    {"Malayalam", "mlym"},  {"Myanmar", "mymr"},
    {"Oriya", "orya"},      {"Sinhala", "sinh"},
    {"Syriac", "syrc"},     {"Tamil", "taml"},
    {"Telugu", "telu"},     {"Thaana", "thaa"},
    {"Thai", "thai"},       {"Tibetan", "tibt"},
    {"Vietnamese", "viet"},
};

/* The Debian package that ships lang's traineddata, into buf. */
static void debian_package(const char *lang, char *buf, size_t len)
{
    const char *script = strncmp(lang, "script/", 7) == 0 ? lang + 7 : lang;
    for (size_t i = 0; i < sizeof script_codes / sizeof script_codes[0]; i++) {
        if (strcmp(script_codes[i].script, script) == 0) {
            snprintf(buf, len, "tesseract-ocr-script-%s", script_codes[i].code);
            return;
        }
    }
    if (script != lang) {
        snprintf(buf, len, "a tesseract-ocr-script-* package");
        return;
    }
    size_t n = (size_t)snprintf(buf, len, "tesseract-ocr-");
    for (const char *p = lang; *p && n + 1 < len; p++)
        buf[n++] = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
    buf[n] = '\0';
}

static int readable(const char *dir, const char *lang)
{
    char *path = ocp_xasprintf("%s/%s.traineddata", dir, lang);
    int ok = access(path, R_OK) == 0;
    free(path);
    return ok;
}

/*
 * Checks that every language of "a+b+c" (and osd when psm needs it) has its
 * file, and returns in *resolved (new) the names to load: Tesseract's docs
 * say script/Devanagari where Debian installs tessdata/Devanagari, so a
 * script/X that is missing falls back to X.
 */
static int check_langs(const char *dir, const char *langs, int psm, char **resolved, char *err,
                       size_t errlen)
{
    char *copy = ocp_xstrdup(langs), *save = NULL;
    ocp_sb out;
    int rc = 0;
    char *extra = (psm == 0 || psm == 1) ? "osd" : NULL;
    ocp_sb_init(&out);
    for (char *l = strtok_r(copy, "+", &save);; l = strtok_r(NULL, "+", &save)) {
        int is_extra = 0;
        if (!l) {
            if (!extra)
                break;
            l = extra;
            extra = NULL;
            is_extra = 1;
        }
        const char *use = l;
        if (!readable(dir, l)) {
            if (strncmp(l, "script/", 7) == 0 && readable(dir, l + 7)) {
                use = l + 7;
            } else {
                char pkg[96];
                debian_package(l, pkg, sizeof pkg);
                rc = ocp_errf(OCP_E_LANG, err, errlen,
                              "language '%s' is not installed (no %s/%s.traineddata): install "
                              "the Debian package %s",
                              l, dir, l, pkg);
                break;
            }
        }
        if (!is_extra) {
            if (out.len)
                ocp_sb_putc(&out, '+');
            ocp_sb_puts(&out, use);
        }
    }
    free(copy);
    if (rc)
        ocp_sb_fini(&out);
    else
        *resolved = ocp_sb_steal(&out);
    return rc;
}

/* The tessdata folder: setting (NULL or "" = none), else TESSDATA_PREFIX, else Debian's;
 * without trailing slashes. Used by engine.c's language check as well. */
void ocp__tess_dir(const char *setting, char dirbuf[4096]);
void ocp__tess_dir(const char *setting, char dirbuf[4096])
{
    const char *dir = setting && *setting ? setting : NULL;
    if (!dir) {
        const char *env = getenv("TESSDATA_PREFIX");
        dir = env && *env ? env : OCP_TESSDATA_DEFAULT;
    }
    snprintf(dirbuf, 4096, "%s", dir);
    size_t n = strlen(dirbuf);
    while (n > 1 && dirbuf[n - 1] == '/')
        dirbuf[--n] = '\0';
}

/* The tessdata folder of p (the setting, TESSDATA_PREFIX, or Debian's) and its languages
 * as they will load ("script/X" resolved), or the reason one is missing. */
int ocp__tess_resolve(const ocp_engine_params *p, char dirbuf[4096], char **langs, char *err,
                      size_t errlen);
int ocp__tess_resolve(const ocp_engine_params *p, char dirbuf[4096], char **langs, char *err,
                      size_t errlen)
{
    ocp__tess_dir(p->tessdata_dir, dirbuf);
    *langs = NULL;
    return check_langs(dirbuf, p->lang, p->psm, langs, err, errlen);
}

static int tess_open(const ocp_engine_params *p, void **state, char *err, size_t errlen)
{
    char dirbuf[4096];
    tess_state *st;
    int rc;
    char *langs = NULL;
    if ((rc = ocp__tess_resolve(p, dirbuf, &langs, err, errlen)))
        return rc;

    /* Leptonica's own messages would go to stderr; our reasons say enough. */
    if (ocp_log_level < OCP_LOG_DEBUG)
        setMsgSeverity(L_SEVERITY_NONE);
    st = ocp_xcalloc(1, sizeof *st);
    st->api = TessBaseAPICreate();
    st->lang = langs;
    /* tprintf output ("Estimating resolution as ...") goes to the log only when debugging. */
    if (ocp_log_level < OCP_LOG_DEBUG)
        TessBaseAPISetVariable(st->api, "debug_file", "/dev/null");
    if (TessBaseAPIInit3(st->api, dirbuf, st->lang) != 0) {
        rc = ocp_errf(OCP_E_LANG, err, errlen, "tesseract could not load '%s' from %s", st->lang,
                      dirbuf);
        TessBaseAPIDelete(st->api);
        free(st->lang);
        free(st);
        return rc;
    }
    TessBaseAPISetPageSegMode(st->api, (TessPageSegMode)p->psm);
    const char *omp = getenv("OMP_THREAD_LIMIT");
    OCP_LOG(OCP_LOG_INFO, "tesseract %s loaded %s from %s, psm %d, OMP_THREAD_LIMIT=%s",
            TessVersion(), st->lang, dirbuf, p->psm, omp ? omp : "(unset)");
    *state = st;
    return 0;
}

static void tess_close(void *state)
{
    tess_state *st = state;
    if (!st)
        return;
    TessBaseAPIEnd(st->api);
    TessBaseAPIDelete(st->api);
    free(st->lang);
    free(st);
}

/* A copy of Tesseract's text without trailing newlines, freeing the original. */
static char *take_text(char *t)
{
    if (!t)
        return ocp_xstrdup("");
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == ' '))
        n--;
    char *s = ocp_xstrndup(t, n);
    TessDeleteText(t);
    return s;
}

static void collect(TessBaseAPI *api, ocp_result *res)
{
    TessResultIterator *ri = TessBaseAPIGetIterator(api);
    TessPageIterator *pi;
    int block = -1, par = -1;
    if (!ri)
        return;
    pi = TessResultIteratorGetPageIterator(ri);
    do {
        ocp_box b;
        char *text;
        if (TessPageIteratorIsAtBeginningOf(pi, RIL_BLOCK)) {
            block++;
            par = -1;
        }
        if (TessPageIteratorIsAtBeginningOf(pi, RIL_PARA))
            par++;
        if (TessPageIteratorIsAtBeginningOf(pi, RIL_TEXTLINE)) {
            if (!TessPageIteratorBoundingBox(pi, RIL_TEXTLINE, &b.x1, &b.y1, &b.x2, &b.y2))
                continue;
            text = take_text(TessResultIteratorGetUTF8Text(ri, RIL_TEXTLINE));
            ocp_result_add_line(res, b, text, TessResultIteratorConfidence(ri, RIL_TEXTLINE),
                                block < 0 ? 0 : block, par < 0 ? 0 : par);
            free(text);
        }
        char *wt = TessResultIteratorGetUTF8Text(ri, RIL_WORD);
        if (!wt)
            continue;
        if (TessPageIteratorBoundingBox(pi, RIL_WORD, &b.x1, &b.y1, &b.x2, &b.y2))
            ocp_result_add_word(res, b, wt, TessResultIteratorConfidence(ri, RIL_WORD));
        TessDeleteText(wt);
    } while (TessPageIteratorNext(pi, RIL_WORD));
    TessResultIteratorDelete(ri);
}

static int tess_ocr(void *state, const ocp_page_image *img, const ocp_ocr_params *p,
                    ocp_result *res, char *err, size_t errlen)
{
    tess_state *st = state;
    ETEXT_DESC *mon = TessMonitorCreate();
    double t0 = ocp_now();
    int rc = 0;

    TessBaseAPISetImage(st->api, img->pixels, img->width, img->height, img->bands,
                        img->width * img->bands);
    if (img->dpi > 0)
        TessBaseAPISetSourceResolution(st->api, img->dpi);
    if (p->timeout_s > 0)
        TessMonitorSetDeadlineMSecs(
            mon, (int)(p->timeout_s * 1000.0 > 2e9 ? 2e9 : p->timeout_s * 1000.0));
    int r = TessBaseAPIRecognize(st->api, mon);
    double dt = ocp_now() - t0;
    if (p->timeout_s > 0 && dt >= p->timeout_s) {
        rc = ocp_errf(OCP_E_TIMEOUT, err, errlen,
                      "page timeout: OCR stopped after %.1f s (page-timeout %g s)", dt,
                      p->timeout_s);
        goto out;
    }
    if (r != 0) {
        rc = ocp_errf(OCP_E_ENGINE, err, errlen, "tesseract failed to recognise the page");
        goto out;
    }
    {
        char *t = TessBaseAPIGetUTF8Text(st->api);
        ocp_result_set(&res->text, t ? t : "");
        if (t)
            TessDeleteText(t);
    }
    res->mean_conf = (float)TessBaseAPIMeanTextConf(st->api);
    collect(st->api, res);
out:
    TessMonitorDelete(mon);
    TessBaseAPIClear(st->api);
    return rc;
}

const ocp_engine_ops ocp_engine_tesseract = {
    .name = "tesseract",
    .features = 0,
    .open = tess_open,
    .ocr = tess_ocr,
    .close = tess_close,
};
