/*
 * fuzz_image.c: an image or PDF from a buffer (src/image), as a worker
 * treats an upload: open (the format sniffed from the bytes), then for each
 * page its size from the header and its pixels (limits checked first,
 * decode, orientation, flatten, grey/RGB, resize). The limits are the
 * program's checks with smaller figures than the defaults (4 Mpixel, 4
 * pages, PDFs at 72 dpi, resized to 512), so an input runs in milliseconds
 * and under libFuzzer's memory limit.
 */
#include "core/log.h"
#include "image/image.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        ocp_log_level = -1;
        if (ocp_image_global_init("fuzz_image"))
            abort();
        ready = 1;
    }
    const ocp_image_limits lim = {
        .max_pixels = (int64_t)1 << 22, .max_pages = 4, .pdf_dpi = 72, .max_image_size = 512};
    /* A copy of exactly size bytes: a read past the end is caught. */
    unsigned char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    char err[512];
    ocp_doc *doc = NULL;
    if (ocp_doc_open_buffer(buf, size, &lim, &doc, err, sizeof err) == 0) {
        ocp_doc_format(doc);
        int pages = ocp_doc_pages(doc);
        for (int p = 0; p < pages && p < lim.max_pages; p++) {
            int w = 0, h = 0;
            if (ocp_doc_page_size(doc, p, &w, &h, err, sizeof err))
                continue;
            ocp_page_image img;
            memset(&img, 0, sizeof img);
            if (ocp_doc_load_page(doc, p, &img, err, sizeof err) == 0) {
                /* Touch the last pixel: the rows are what the header says. */
                volatile unsigned char last =
                    img.pixels[(size_t)img.width * img.height * img.bands - 1];
                (void)last;
            }
            ocp_page_image_fini(&img);
        }
        ocp_doc_destroy(doc);
    }
    free(buf);
    return 0;
}
