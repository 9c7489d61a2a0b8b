/*
 * output.c: reading a finished page back from the queue and rendering it
 * (output.h), for `ocrpool ocr`, `ocrpool result` and the HTTP API.
 */
#include "app/output.h"
#include "core/error.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ocp_app_page_get(ocp_broker *b, const char *id, int parse, ocp_app_page *pg)
{
    memset(pg, 0, sizeof *pg);
    ocp_result_init(&pg->res);
    int rc = ocp_broker_get(b, id, &pg->info);
    if (rc) {
        memset(&pg->info, 0, sizeof pg->info);
        return rc;
    }
    if (!parse || pg->info.state != OCP_TASK_DONE)
        return 0;
    if (!pg->info.result || ocp_result_from_json(&pg->res, pg->info.result) != 0)
        return OCP_E_DECODE;
    pg->parsed = 1;
    return 0;
}

void ocp_app_page_fini(ocp_app_page *pg)
{
    ocp_task_info_fini(&pg->info);
    ocp_result_fini(&pg->res);
    pg->parsed = 0;
}

void ocp_app_render(const char *json, const ocp_result *res, int fmt, ocp_sb *out)
{
    if (fmt == OCP_FMT_JSON)
        ocp_sb_puts(out, json ? json : "");
    else
        ocp_result_render(res, fmt, out);
}

const char *ocp_app_format_type(int fmt)
{
    switch (fmt) {
    case OCP_FMT_TXT:
        return "text/plain; charset=utf-8";
    case OCP_FMT_JSON:
        return "application/json";
    case OCP_FMT_HOCR:
        return "text/html; charset=utf-8";
    case OCP_FMT_ALTO:
        return "application/xml";
    case OCP_FMT_TSV:
        return "text/tab-separated-values; charset=utf-8";
    }
    return "application/octet-stream";
}

int ocp_app_write_page(const char *outdir, const char *stem, int page, int pages, int fmts,
                       const char *json, const ocp_result *res, int only_missing, char *err,
                       size_t errlen)
{
    ocp_sb sb;
    int rc = 0;
    ocp_sb_init(&sb);
    for (int f = 1; f <= OCP_FMT_TSV && !rc; f <<= 1) {
        if (!(fmts & f))
            continue;
        char *path = pages > 1
                         ? ocp_xasprintf("%s/%s-p%d.%s", outdir, stem, page + 1, ocp_format_ext(f))
                         : ocp_xasprintf("%s/%s.%s", outdir, stem, ocp_format_ext(f));
        if (!(only_missing && access(path, F_OK) == 0)) {
            ocp_sb_reset(&sb);
            ocp_app_render(json, res, f, &sb);
            rc = ocp_write_file(path, sb.buf, sb.len);
            if (rc)
                ocp_errf(rc, err, errlen, "cannot write %s: %s", path, ocp_strerror(rc));
        }
        free(path);
    }
    ocp_sb_fini(&sb);
    return rc;
}

int ocp_app_write_text(FILE *f, char *const *texts, int n)
{
    for (int k = 0; k < n; k++) {
        if (k)
            fputc('\f', f);
        if (texts[k])
            fputs(texts[k], f);
    }
    if (fflush(f) != 0 || ferror(f))
        return -(errno ? errno : EIO);
    return 0;
}
