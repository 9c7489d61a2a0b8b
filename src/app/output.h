/*
 * output.h: a finished page as the front ends read it back from the queue,
 * and its renderings: one format into a buffer (the HTTP reply, `ocrpool
 * result`), one file per format (`ocrpool ocr -o`), and a document's text
 * in page order (the sidecar, standard output).
 *
 * A stored result is parsed once where it arrives (ocp_app_page_get) and
 * every rendering is made from that parse; the JSON rendering is the
 * stored text itself, never parsed and dumped again.
 */
#ifndef OCP_APP_OUTPUT_H
#define OCP_APP_OUTPUT_H

#include "broker/broker.h"
#include "engine/result.h"
#include "image/image.h"

#include <stdio.h>
#include <sys/types.h>

/* A task and its result. Open type: filled by ocp_app_page_get, freed by ocp_app_page_fini. */
typedef struct ocp_app_page {
    ocp_task_info info; /* as stored; info.result is the result's JSON text when DONE */
    ocp_result res;     /* info.result parsed, when parsed */
    int parsed;
} ocp_app_page;

/*
 * Reads task id into pg and, when it is DONE and parse is set, parses its
 * result once. Returns 0 (pg filled), OCP_E_DECODE (pg filled, but the
 * stored result is missing or not a page result), or the broker's code (pg empty;
 * OCP_E_NOPAGE when there is no such task). ocp_app_page_fini pg after
 * any return.
 */
int ocp_app_page_get(ocp_broker *b, const char *id, int parse, ocp_app_page *pg);
void ocp_app_page_fini(ocp_app_page *pg);

/* Appends the rendering fmt (one format) of a result to out: json is the stored text
 * (borrowed), res its parse (needed for every format but JSON). */
void ocp_app_render(const char *json, const ocp_result *res, int fmt, ocp_sb *out);

/* The media type of one format's rendering ("text/plain; charset=utf-8"). Static. */
const char *ocp_app_format_type(int fmt);

/*
 * Writes every format of the mask fmts of one page to outdir/stem.ext, or
 * outdir/stem-pN.ext (N = page + 1) when the document has several pages.
 * With only_missing, files that exist are kept. Returns 0, or a code with
 * the reason in err.
 */
int ocp_app_write_page(const char *outdir, const char *stem, int page, int pages, int fmts,
                       const char *json, const ocp_result *res, int only_missing, char *err,
                       size_t errlen);

/*
 * The searchable PDF (app/pdf.h) is a rendering of a whole document, not of one page: its
 * bit in a format mask sits above the page formats of engine/result.h, and only the
 * front ends (ocr, result, the HTTP API) know it.
 */
#define OCP_APP_FMT_PDF 0x100

/* As ocp_format_parse, with "pdf" (OCP_APP_FMT_PDF) among the names; -1 on an unknown
 * name. */
int ocp_app_format_parse(const char *list);

/*
 * The searchable PDF of the document at source (opened as the workers open it, under
 * lim, allow_roots included; a PDF read whole, up to max_bytes) into out: a PDF input with
 * the text layer of res[i] grafted onto its page i, or one page per image of an image
 * input with its layer. res has npages entries (borrowed); a NULL one adds no layer.
 * Returns 0 or a code with the reason in err.
 */
int ocp_app_pdf_document(const char *source, const ocp_image_limits *lim, size_t max_bytes,
                         const ocp_result *const *res, int npages, ocp_sb *out, char *err,
                         size_t errlen);

/*
 * The searchable PDF of the document whose pages are group's tasks, into out. Returns 0;
 * OCP_E_NOPAGE (no such group); OCP_E_UNSUPPORTED (the group holds several documents, or
 * pages sent inline); OCP_E_EMPTY (pages not done yet, or failed: which in err); or the
 * broker's or the document's code. The reason is in err.
 */
int ocp_app_group_pdf(ocp_broker *b, const char *group, const ocp_image_limits *lim,
                      size_t max_bytes, ocp_sb *out, char *err, size_t errlen);

/*
 * For a worker node, after a page whose task names an output path (Celery's output_pdf)
 * was stored. out comes from another machine, so it is checked before anything starts:
 * 0 when out names a file in a folder that resolves under one of out_roots (':'-joined;
 * empty = this node writes no PDFs) and nothing is at out yet (ocrpool never replaces a
 * file, not even its own: a symlink, the source, any file); else the reason in err.
 */
int ocp_app_pdf_check(const char *out, const char *out_roots, char *err, size_t errlen);

/*
 * Starts the job that makes group's PDF at out: a child process of the caller (who reaps
 * it, waitpid, and may kill it), which opens broker url (opts) anew and writes out only
 * when the group holds a done page for every page of the source document (a group not
 * complete yet writes nothing). out is checked again (ocp_app_pdf_check) in the job and
 * made as a new file: written to a fresh name in its folder, then linked to out, which
 * fails if anything is there meanwhile (so two jobs write it once). Logs what it did.
 * Returns the child's pid, or -errno when it cannot fork.
 */
pid_t ocp_app_pdf_start(const char *url, const ocp_broker_opts *opts, const ocp_image_limits *lim,
                        const char *out_roots, const char *group, const char *out);

/* Writes a document's text to f: pages in order, separated by form feeds; a NULL text is
 * an empty page (a page that failed). Returns 0 or -errno (f's error). */
int ocp_app_write_text(FILE *f, char *const *texts, int n);

#endif
