/*
 * image.h: turning an input (a file or bytes in memory) into page pixels
 * for an engine, with libvips.
 *
 *   ocp_image_global_init()        once per process, before anything else here
 *   ocp_doc_open_file/_buffer()    sniff the format from the content (not the
 *                                  name) and read the header: page count (a PNG's
 *                                  or JPEG's size from its first bytes, without
 *                                  libvips: image.c's quick_header)
 *   ocp_doc_load_page()            check the page's dimensions against the
 *                                  pixel limit from its header, then decode,
 *                                  apply EXIF orientation, flatten alpha,
 *                                  make 8-bit grey or RGB, resize (Lanczos)
 *
 * Nothing is decoded before its size is known to be within the limits, and
 * pixels stay in memory (libvips never spills them to a temporary file).
 * Errors are returned as codes with a one-line reason in the caller's
 * buffer, since a failed open leaves no object to hold it.
 */
#ifndef OCP_IMAGE_IMAGE_H
#define OCP_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ocp_doc ocp_doc;

/* Limits applied to every page. Open type: the caller fills it. */
typedef struct ocp_image_limits {
    int64_t max_pixels; /* width x height of a page, before any resize */
    int max_pages;      /* pages taken from one document */
    int pdf_dpi;        /* resolution of rendered PDF pages */
    int max_image_size; /* longest side after resizing; 0 = never resize */
    double decode_timeout_s; /* most seconds the decode of one page may take; 0 = none */
    /* Folders joined with ':' that a file must resolve under (symlinks and .. resolved);
     * NULL or "" = any file. Set by `worker` (allow-root), not from the settings here:
     * ocr and submit read the files their own user names. Borrowed. */
    const char *allow_roots;
} ocp_image_limits;

struct ocp_config;
/* The limits of the settings (max-pixels, max-pages, pdf-dpi, max-image-size,
 * decode-timeout). */
ocp_image_limits ocp_image_limits_from_config(const struct ocp_config *cfg);

/*
 * The pixels of one page, ready for an engine. Open type, filled by
 * ocp_doc_load_page(), released with ocp_page_image_fini().
 * Coordinates on these pixels map back to the original (upright) page by
 * x * scale_x, y * scale_y.
 */
typedef struct ocp_page_image {
    unsigned char *pixels; /* rows of width * bands bytes, no padding */
    int width, height, bands;
    int orig_width, orig_height; /* the page as decoded and made upright */
    double scale_x, scale_y;     /* orig / resized, 1.0 when not resized */
    int dpi;                     /* of these pixels; 0 = unknown (engine estimates) */
} ocp_page_image;

/* Starts libvips: one thread, no operation cache, untrusted loaders blocked. */
int ocp_image_global_init(const char *argv0);

/*
 * Opens path. On success *out is new (ocp_doc_destroy frees it). On failure
 * returns a negative code and writes the reason to err. Under lim->allow_roots,
 * a path that does not resolve under a root, or is missing, not a regular file
 * or unreadable, fails with -EACCES and the one reason "path not allowed"
 * (no probing); the file read is the one checked (ocp_image_open_under).
 */
int ocp_doc_open_file(const char *path, const ocp_image_limits *lim, ocp_doc **out, char *err,
                      size_t errlen);
/* As above for bytes in memory; buf is borrowed and must outlive the doc. */
int ocp_doc_open_buffer(const void *buf, size_t len, const ocp_image_limits *lim, ocp_doc **out,
                        char *err, size_t errlen);
void ocp_doc_destroy(ocp_doc *doc);

/* Pages in the document (after the max_pages check). */
int ocp_doc_pages(const ocp_doc *doc);
/* "png", "jpeg", "tiff", "webp", "pnm", "gif" or "pdf". */
const char *ocp_doc_format(const ocp_doc *doc);

/* The size of page (0-based) from its header, before any decoding or resize. */
int ocp_doc_page_size(ocp_doc *doc, int page, int *w, int *h, char *err, size_t errlen);

/* Loads page (0-based) into img. img is overwritten; fini it after use. */
int ocp_doc_load_page(ocp_doc *doc, int page, ocp_page_image *img, char *err, size_t errlen);
void ocp_page_image_fini(ocp_page_image *img);

/*
 * Opens path for reading if it resolves (realpath: symlinks and ..) under one of roots
 * (':'-joined folders, each resolved too) and is a regular file: the resolved path is
 * opened without following a last symlink and without blocking, and the descriptor's own
 * path (/proc/self/fd) is checked again after the open, so a component swapped for a
 * symlink between the check and the open is caught. Returns the descriptor (O_CLOEXEC,
 * blocking again), or -EACCES with "path not allowed" in err, the same for every refusal.
 */
int ocp_image_open_under(const char *path, const char *roots, char *err, size_t errlen);

/*
 * Geometry, exposed for tests. Checks w x h against max_pixels (returns
 * OCP_E_TOOBIG) and computes the size after fitting the longest side into
 * max_side (0 = unchanged), rounding to the nearest pixel, at least 1.
 */
int ocp_image_check_pixels(int64_t w, int64_t h, int64_t max_pixels);
void ocp_image_fit(int w, int h, int max_side, int *nw, int *nh);

#endif
