/*
 * fuzz_result.c: a page result's JSON (src/engine/result.c), as the front
 * ends read it back from the broker (app/output.c: a result any worker, or a
 * Python one, stored): parse, then every rendering (txt, json, hocr, alto,
 * tsv), then its text layer in a searchable PDF (src/app/pdf.c) as `result
 * GROUP --format pdf`, a group's PDF over HTTP and `ocr --format pdf` make
 * it, then the rescale a worker applies and the JSON once more.
 *
 * The PDF: the result is grafted onto each page of a small PDF made here
 * (seed_pdf: a page whose media box it inherits, and a page turned by
 * /Rotate 90 with a crop box, a content array and a font of its own), and is
 * the layer of an image page (8 x 4 grey pixels) in a new PDF, as a PDF
 * document's and an image document's pages are made. Both are written, and
 * must be: the seed is sound, so nothing in a result may make it unwritable;
 * what was written must read back (qpdf) with its pages.
 */
#include "app/pdf.h"
#include "core/log.h"
#include "engine/result.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char seed[2048];
static size_t seed_len;

/* The seed PDF, with its cross-reference table's offsets counted here. */
static void seed_pdf(void)
{
    static const char *const objs[] = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 /MediaBox [0 0 200 100] >>",
        "<< /Type /Page /Parent 2 0 R /Resources << >> /Contents 5 0 R >>",
        ("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /CropBox [10 20 290 180] "
         "/Rotate 90 /Resources << /Font << /F1 6 0 R >> >> /Contents [5 0 R 7 0 R] >>"),
        "<< /Length 25 >>\nstream\n0 0 1 rg 20 20 60 30 re f\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        "<< /Length 34 >>\nstream\nBT /F1 12 Tf 30 50 Td (seed) Tj ET\nendstream",
    };
    enum { N = sizeof objs / sizeof objs[0] };
    size_t off[N], n = 0;
    n += (size_t)snprintf(seed + n, sizeof seed - n, "%%PDF-1.4\n");
    for (size_t i = 0; i < N; i++) {
        off[i] = n;
        n += (size_t)snprintf(seed + n, sizeof seed - n, "%zu 0 obj\n%s\nendobj\n", i + 1, objs[i]);
    }
    size_t xref = n;
    n += (size_t)snprintf(seed + n, sizeof seed - n, "xref\n0 %d\n0000000000 65535 f \n", N + 1);
    for (size_t i = 0; i < N; i++)
        n += (size_t)snprintf(seed + n, sizeof seed - n, "%010zu 00000 n \n", off[i]);
    n += (size_t)snprintf(seed + n, sizeof seed - n,
                          "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%zu\n%%%%EOF\n", N + 1,
                          xref);
    if (n >= sizeof seed)
        abort();
    seed_len = n;
}

/* Writes p, which holds pages pages; what it writes must read back with them. */
static void written(ocp_pdf *p, int pages, const char *what)
{
    char err[600];
    ocp_sb out;
    ocp_sb_init(&out);
    if (ocp_pdf_write(p, &out, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_result: %s: cannot write it: %s\n", what, err);
        abort();
    }
    ocp_pdf *again = NULL;
    if (ocp_pdf_open(out.buf, out.len, &again, err, sizeof err) != 0 ||
        ocp_pdf_pages(again) != pages) {
        fprintf(stderr, "fuzz_result: %s: what was written does not read back: %s\n", what,
                again ? "pages lost" : err);
        abort();
    }
    ocp_pdf_destroy(again);
    ocp_sb_fini(&out);
}

static void pdf(const ocp_result *r)
{
    char err[600];
    ocp_pdf *p = NULL;
    if (!seed_len)
        seed_pdf();
    if (ocp_pdf_open(seed, seed_len, &p, err, sizeof err) != 0 || ocp_pdf_pages(p) != 2) {
        fprintf(stderr, "fuzz_result: the seed PDF does not read: %s\n", err);
        abort();
    }
    for (int i = 0; i < 2; i++)
        if (ocp_pdf_graft(p, i, r, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_result: cannot graft the layer on page %d: %s\n", i + 1, err);
            abort();
        }
    written(p, 2, "the grafted PDF");
    ocp_pdf_destroy(p);

    static const unsigned char px[32] = {0, 255, 0, 255, 0, 255, 0, 255, 128};
    const ocp_pdf_image img = {px, sizeof px, 0, 8, 4, 1, 72};
    if (ocp_pdf_create(&p, err, sizeof err) != 0 ||
        ocp_pdf_add_image(p, &img, r, err, sizeof err)) {
        fprintf(stderr, "fuzz_result: cannot make the image page: %s\n", err);
        abort();
    }
    written(p, 1, "the image page's PDF");
    ocp_pdf_destroy(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ocp_log_level = -1; /* quiet: the fuzzer prints its own lines */
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
        pdf(&r);
        ocp_result_rescale(&r, 1.5, 0.75, r.width, r.height);
        json_decref(ocp_result_json(&r));
    }
    ocp_result_fini(&r);
    free(text);
    return 0;
}
