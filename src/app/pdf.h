/*
 * pdf.h: searchable PDFs, with qpdf's C API (libqpdf).
 *
 * Two ways to make one, both ending in ocp_pdf_write:
 *
 *   ocp_pdf_open(bytes of a PDF)  ->  ocp_pdf_graft(page, result) per page
 *       the same PDF, each page's content stream kept as it is (images not
 *       re-encoded, vector content untouched) and a content stream appended
 *       that draws the page's words invisibly, as OCRmyPDF grafts its layer;
 *   ocp_pdf_create()  ->  ocp_pdf_add_image(image, result) per page
 *       one page per image (a JPEG's bytes passed through as DCTDecode,
 *       other pixels losslessly as FlateDecode) with its words over it.
 *
 * The text layer: each word at its box (scaled horizontally with Tz to the
 * box's width), in text render mode 3 (invisible), in one glyph-less
 * Type0/CIDFontType2 font per PDF (Identity-H, a TrueType font of empty
 * glyphs made here) whose ToUnicode CMap maps each code to the character
 * it stands for: text in any script copies and searches as the OCR read it.
 *
 * Everything read here is untrusted (the input PDF, the results' text): a
 * PDF qpdf cannot read, or cannot write again, fails with the reason.
 */
#ifndef OCP_APP_PDF_H
#define OCP_APP_PDF_H

#include "core/util.h"
#include "engine/result.h"

#include <stddef.h>

typedef struct ocp_pdf ocp_pdf;

/*
 * Reads the PDF in buf (borrowed: it must outlive p) for grafting. On success *out is
 * new (ocp_pdf_destroy frees it); on failure the reason is in err.
 */
int ocp_pdf_open(const void *buf, size_t len, ocp_pdf **out, char *err, size_t errlen);
/* An empty PDF for ocp_pdf_add_image. *out is new (ocp_pdf_destroy). */
int ocp_pdf_create(ocp_pdf **out, char *err, size_t errlen);
void ocp_pdf_destroy(ocp_pdf *p);

/* Pages of the PDF. */
int ocp_pdf_pages(const ocp_pdf *p);

/*
 * Adds the text layer of res (borrowed) to page (0-based) of an opened PDF. res's boxes
 * are pixels of the page as it was rendered for the OCR (its crop box, turned by its
 * /Rotate), res->width x res->height: the page's size in points gives the scale, so the
 * rendering's dpi does not matter. A result without words adds nothing.
 */
int ocp_pdf_graft(ocp_pdf *p, int page, const ocp_result *res, char *err, size_t errlen);

/* An image for a page of its own. Open type; data borrowed until ocp_pdf_add_image
 * returns (it is copied). */
typedef struct ocp_pdf_image {
    const unsigned char *data; /* the JPEG file (jpeg), or rows of width * bands bytes */
    size_t len;
    int jpeg;                 /* data is a baseline or progressive JPEG of bands 1 or 3 */
    int width, height, bands; /* bands: 1 grey, 3 RGB */
    double dpi;               /* the page's size is width x height at dpi */
} ocp_pdf_image;

/* Appends a page showing img with the text layer of res (NULL: none). res's boxes are
 * pixels of the image. */
int ocp_pdf_add_image(ocp_pdf *p, const ocp_pdf_image *img, const ocp_result *res, char *err,
                      size_t errlen);

/* Writes the PDF (object streams, a deterministic /ID) to out. */
int ocp_pdf_write(ocp_pdf *p, ocp_sb *out, char *err, size_t errlen);

/*
 * What a JPEG's header says, for passing it through: its size and components (from the
 * first SOF marker), and its EXIF orientation (1 when none). Returns 0, or OCP_E_DECODE
 * when buf is not a JPEG whose header reads (no bytes past len are looked at).
 */
int ocp_pdf_jpeg_info(const unsigned char *buf, size_t len, int *w, int *h, int *comps,
                      int *orientation);

#endif
