/*
 * fuzz_pdf.c: a PDF from outside through what `ocrpool ocr --format pdf` does with
 * it (src/app/pdf.c): read by qpdf, a text layer grafted onto each of its first
 * pages (words in Latin, Devanagari and Tamil, a bad UTF-8 sequence, a control
 * character, a line naming words the result does not have), and written again;
 * the written bytes read back. The same bytes as a JPEG header (the pass-through
 * check: SOF size and components, EXIF orientation), and as the pixels of an image
 * page.
 */
#include "app/pdf.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/result.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A page result of a few words over a 200 x 100 pixel page. */
static void words(ocp_result *r)
{
    static const char *const text[] = {"Hello", "धर्मक्षेत्रे", "தமிழ்", "bad\xff\xfe", "c\x01t",
                                       "\xf0\x9f\x93\x96"};
    ocp_result_init(r);
    r->width = 200;
    r->height = 100;
    ocp_result_add_line(r, (ocp_box){10, 10, 190, 30}, "line", 90, 0, 0);
    for (int i = 0; i < 6; i++)
        ocp_result_add_word(r, (ocp_box){10 + 30 * i, 10, 35 + 30 * i, 30}, text[i], 90);
    /* Degenerate boxes: empty, reversed. */
    ocp_result_add_line(r, (ocp_box){0, 50, 0, 50}, "x", 90, 0, 1);
    ocp_result_add_word(r, (ocp_box){0, 50, 0, 50}, "x", 90);
    ocp_result_add_word(r, (ocp_box){50, 60, 40, 55}, "y", 90);
}

static void graft(const uint8_t *data, size_t size, const ocp_result *r)
{
    char err[600];
    ocp_pdf *p = NULL;
    if (ocp_pdf_open(data, size, &p, err, sizeof err) != 0)
        return;
    for (int i = 0; i < ocp_pdf_pages(p) && i < 4; i++)
        if (ocp_pdf_graft(p, i, r, err, sizeof err) != 0)
            break;
    ocp_sb out;
    ocp_sb_init(&out);
    if (ocp_pdf_write(p, &out, err, sizeof err) == 0) {
        ocp_pdf *again = NULL;
        /* What was written reads back. */
        if (ocp_pdf_open(out.buf, out.len, &again, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_pdf: written PDF does not read back: %s\n", err);
            abort();
        }
        ocp_pdf_destroy(again);
    }
    ocp_sb_fini(&out);
    ocp_pdf_destroy(p);
}

static void image(const uint8_t *data, size_t size, const ocp_result *r)
{
    char err[600];
    int w, h, comps, orient;
    ocp_pdf *p = NULL;
    if (ocp_pdf_create(&p, err, sizeof err) != 0)
        abort();
    ocp_pdf_image img = {data, size, 0, 8, 4, 1, 300};
    if (ocp_pdf_jpeg_info(data, size, &w, &h, &comps, &orient) == 0 && (comps == 1 || comps == 3))
        img = (ocp_pdf_image){data, size, 1, w, h, comps, 72};
    else if (size != 32)
        img.len = 0; /* refused: not 8 x 4 grey pixels */
    ocp_pdf_add_image(p, &img, r, err, sizeof err);
    ocp_sb out;
    ocp_sb_init(&out);
    ocp_pdf_write(p, &out, err, sizeof err);
    ocp_sb_fini(&out);
    ocp_pdf_destroy(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ocp_log_level = -1;
    /* A copy of exactly size bytes: a read past the end is caught. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    ocp_result r;
    words(&r);
    graft(buf, size, &r);
    image(buf, size, &r);
    ocp_result_fini(&r);
    free(buf);
    return 0;
}
