/*
 * pdf.c: searchable PDFs with qpdf's C API (pdf.h). Sits in app/ beside
 * output.c, which finds a document's pages and calls it; nothing else here
 * knows about queues.
 *
 * Why qpdf: it is the library OCRmyPDF itself grafts with (through pikepdf),
 * it reads damaged and encrypted files and writes them back valid without
 * decoding a single image, and Debian ships its C API (libqpdf-dev). The
 * PDF structure is qpdf's; the text layer's content stream, the font and its
 * CMap are written here.
 *
 * Every qpdf_oh_* call may fail without a return code: errors are silenced
 * (nothing on stderr) and looked at with qpdf_has_error after each step.
 */
#include "app/pdf.h"
#include "core/error.h"
#include "core/log.h"

#include <math.h>
#include <qpdf/qpdf-c.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Codes (CIDs) the font can give: one per distinct character, 1 up (0 is .notdef). */
#define MAX_CID   65535
#define UNICODE_N 0x110000
/* The glyph-less font: every glyph DW_UNITS/1000 of an em wide. */
#define DW_UNITS 500
/* The font's resource name on a page: this prefix and a number not taken already. */
#define FONT_PREFIX "OcpText"

struct ocp_pdf {
    qpdf_data q;
    int pages;
    /* Object ids (handles are released after each page): the Type0 font, made on first
     * use; its ToUnicode stream and the CIDFont's CIDToGIDMap, filled in by ocp_pdf_write. */
    int font, tounicode, cidtogid;
    uint16_t *cid_of; /* code point -> CID (0 = none yet); UNICODE_N entries, lazily */
    uint32_t *cps;    /* CID - 1 -> code point */
    int ncid;
    int images; /* image XObjects made (their names) */
};

/* ---- qpdf's errors ------------------------------------------------------------------- */

/* The error qpdf holds, if any, as ours: OCP_E_FORMAT with what it says in err. */
static int qpdf_failed(ocp_pdf *p, const char *what, char *err, size_t errlen)
{
    if (!qpdf_has_error(p->q))
        return 0;
    qpdf_error e = qpdf_get_error(p->q);
    const char *text = e ? qpdf_get_error_full_text(p->q, e) : "unknown error";
    return ocp_errf(OCP_E_FORMAT, err, errlen, "%s: %s", what, text);
}

/* Warnings (a damaged file qpdf repaired) go to the log, not to the user's terminal. */
static void drain_warnings(ocp_pdf *p)
{
    while (qpdf_more_warnings(p->q)) {
        qpdf_error w = qpdf_next_warning(p->q);
        OCP_LOG(OCP_LOG_DEBUG, "pdf: %s", qpdf_get_error_full_text(p->q, w));
    }
}

static ocp_pdf *pdf_new(void)
{
    ocp_pdf *p = ocp_xcalloc(1, sizeof *p);
    p->q = qpdf_init();
    qpdf_silence_errors(p->q);
    qpdf_set_suppress_warnings(p->q, 1);
    return p;
}

int ocp_pdf_open(const void *buf, size_t len, ocp_pdf **out, char *err, size_t errlen)
{
    ocp_pdf *p = pdf_new();
    int rc;
    *out = NULL;
    /* Any qpdf error code but warnings (QPDF_WARNINGS alone: repaired) is a failure. */
    if (qpdf_read_memory(p->q, "input PDF", buf, len, "") & QPDF_ERRORS) {
        rc = qpdf_failed(p, "cannot read the PDF", err, errlen);
        ocp_pdf_destroy(p);
        return rc ? rc : ocp_errf(OCP_E_FORMAT, err, errlen, "cannot read the PDF");
    }
    /* Each page's own /Resources, /MediaBox, /CropBox and /Rotate: the layer adds to them. */
    qpdf_push_inherited_attributes_to_page(p->q);
    p->pages = qpdf_get_num_pages(p->q);
    if ((rc = qpdf_failed(p, "cannot read the PDF's pages", err, errlen)) || p->pages < 0) {
        ocp_pdf_destroy(p);
        return rc ? rc : ocp_errf(OCP_E_FORMAT, err, errlen, "cannot read the PDF's pages");
    }
    *out = p;
    return 0;
}

int ocp_pdf_create(ocp_pdf **out, char *err, size_t errlen)
{
    ocp_pdf *p = pdf_new();
    qpdf_empty_pdf(p->q);
    int rc = qpdf_failed(p, "cannot start a PDF", err, errlen);
    if (rc) {
        ocp_pdf_destroy(p);
        *out = NULL;
        return rc;
    }
    *out = p;
    return 0;
}

void ocp_pdf_destroy(ocp_pdf *p)
{
    if (!p)
        return;
    while (qpdf_has_error(p->q))
        qpdf_get_error(p->q);
    qpdf_cleanup(&p->q);
    free(p->cid_of);
    free(p->cps);
    free(p);
}

int ocp_pdf_pages(const ocp_pdf *p)
{
    return p->pages;
}

/* ---- The glyph-less font --------------------------------------------------------------- */

static void put16(unsigned char *b, unsigned v)
{
    b[0] = (unsigned char)(v >> 8);
    b[1] = (unsigned char)v;
}

static void put32(unsigned char *b, uint32_t v)
{
    put16(b, v >> 16);
    put16(b + 2, v & 0xffff);
}

static uint32_t sfnt_sum(const unsigned char *b, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++)
            v = (v << 8) | (i + k < n ? b[i + k] : 0);
        s += v;
    }
    return s;
}

/*
 * A TrueType font of two empty glyphs (.notdef and the one every code shows), DW_UNITS
 * wide, with the tables a PDF reader needs of an embedded CIDFontType2 (glyf, head, hhea,
 * hmtx, loca, maxp). Written into b (room for 512 bytes); returns its length.
 */
static size_t glyphless_ttf(unsigned char b[512])
{
    unsigned char head[54] = {0}, hhea[36] = {0}, hmtx[8] = {0}, loca[6] = {0}, maxp[32] = {0};
    put32(head, 0x00010000);
    put32(head + 4, 0x00010000);
    put32(head + 12, 0x5F0F3CF5);
    put16(head + 16, 0x000B);
    put16(head + 18, 1000); /* units per em */
    put16(head + 40, DW_UNITS);
    put16(head + 42, 1000);
    put16(head + 46, 3);
    put16(head + 48, 2);
    put32(hhea, 0x00010000);
    put16(hhea + 4, 800);
    put16(hhea + 6, (unsigned)-200 & 0xffff);
    put16(hhea + 10, DW_UNITS);
    put16(hhea + 18, 1);
    put16(hhea + 34, 2); /* hmetrics */
    put16(hmtx, DW_UNITS);
    put16(hmtx + 4, DW_UNITS);
    put32(maxp, 0x00010000);
    put16(maxp + 4, 2); /* glyphs */
    put16(maxp + 14, 2);
    const struct {
        const char *tag;
        const unsigned char *data;
        size_t len;
    } t[] = {{"glyf", NULL, 0}, {"head", head, 54}, {"hhea", hhea, 36},
             {"hmtx", hmtx, 8}, {"loca", loca, 6},  {"maxp", maxp, 32}};
    enum { NT = 6 };
    size_t off = 12 + 16 * NT, head_at = 0;
    memset(b, 0, 512);
    put32(b, 0x00010000);
    put16(b + 4, NT);
    put16(b + 6, 64); /* search range: 4 tables * 16 */
    put16(b + 8, 2);
    put16(b + 10, NT * 16 - 64);
    for (int i = 0; i < NT; i++) {
        unsigned char *d = b + 12 + 16 * i;
        memcpy(d, t[i].tag, 4);
        if (t[i].len)
            memcpy(b + off, t[i].data, t[i].len);
        put32(d + 4, sfnt_sum(b + off, t[i].len));
        put32(d + 8, (uint32_t)off);
        put32(d + 12, (uint32_t)t[i].len);
        if (strcmp(t[i].tag, "head") == 0)
            head_at = off;
        off += (t[i].len + 3) & ~(size_t)3;
    }
    put32(b + head_at + 8, 0xB1B0AFBAu - sfnt_sum(b, off));
    return off;
}

static qpdf_oh new_stream(ocp_pdf *p, const void *data, size_t len, const char *filter)
{
    qpdf_oh s = qpdf_oh_new_stream(p->q);
    qpdf_oh f = filter ? qpdf_oh_new_name(p->q, filter) : qpdf_oh_new_null(p->q);
    qpdf_oh_replace_stream_data(p->q, s, data, len, f, qpdf_oh_new_null(p->q));
    return s;
}

/* The Type0 font over a CIDFontType2 of the glyph-less TrueType; the ToUnicode and
 * CIDToGIDMap streams get their data at ocp_pdf_write, when every code is known. */
static void make_font(ocp_pdf *p)
{
    unsigned char ttf[512];
    size_t n = glyphless_ttf(ttf);
    qpdf_oh file = new_stream(p, ttf, n, NULL);
    qpdf_oh_replace_key(p->q, qpdf_oh_get_dict(p->q, file), "/Length1",
                        qpdf_oh_new_integer(p->q, (long long)n));
    qpdf_oh fd = qpdf_make_indirect_object(
        p->q, qpdf_oh_parse(p->q, "<< /Type /FontDescriptor /FontName /GlyphLessFont /Flags 5 "
                                  "/FontBBox [0 -200 500 800] /ItalicAngle 0 /Ascent 800 "
                                  "/Descent -200 /CapHeight 800 /StemV 80 >>"));
    qpdf_oh_replace_key(p->q, fd, "/FontFile2", file);
    qpdf_oh map = new_stream(p, "", 0, NULL);
    p->cidtogid = qpdf_oh_get_object_id(p->q, map);
    qpdf_oh cid = qpdf_make_indirect_object(
        p->q, qpdf_oh_parse(p->q, "<< /Type /Font /Subtype /CIDFontType2 /BaseFont "
                                  "/GlyphLessFont /CIDSystemInfo << /Registry (Adobe) /Ordering "
                                  "(Identity) /Supplement 0 >> /DW 500 >>"));
    qpdf_oh_replace_key(p->q, cid, "/FontDescriptor", fd);
    qpdf_oh_replace_key(p->q, cid, "/CIDToGIDMap", map);
    qpdf_oh tu = new_stream(p, "", 0, NULL);
    p->tounicode = qpdf_oh_get_object_id(p->q, tu);
    qpdf_oh font = qpdf_make_indirect_object(
        p->q, qpdf_oh_parse(p->q, "<< /Type /Font /Subtype /Type0 /BaseFont /GlyphLessFont "
                                  "/Encoding /Identity-H >>"));
    qpdf_oh arr = qpdf_oh_new_array(p->q);
    qpdf_oh_append_item(p->q, arr, cid);
    qpdf_oh_replace_key(p->q, font, "/DescendantFonts", arr);
    qpdf_oh_replace_key(p->q, font, "/ToUnicode", tu);
    p->font = qpdf_oh_get_object_id(p->q, font);
    p->cid_of = ocp_xcalloc(UNICODE_N, sizeof *p->cid_of);
    p->cps = ocp_xcalloc(MAX_CID, sizeof *p->cps);
}

/* The ToUnicode CMap: each CID to its character (UTF-16BE, surrogates past the BMP). */
static void tounicode_cmap(const ocp_pdf *p, ocp_sb *sb)
{
    ocp_sb_puts(sb, "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
                    "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
                    "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
                    "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n");
    for (int i = 0; i < p->ncid; i += 100) {
        int n = p->ncid - i < 100 ? p->ncid - i : 100;
        ocp_sb_printf(sb, "%d beginbfchar\n", n);
        for (int k = i; k < i + n; k++) {
            uint32_t c = p->cps[k];
            if (c < 0x10000)
                ocp_sb_printf(sb, "<%04X> <%04X>\n", k + 1, c);
            else
                ocp_sb_printf(sb, "<%04X> <%04X%04X>\n", k + 1, 0xD800 + ((c - 0x10000) >> 10),
                              0xDC00 + ((c - 0x10000) & 0x3ff));
        }
        ocp_sb_puts(sb, "endbfchar\n");
    }
    ocp_sb_puts(sb, "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
}

/* Every CID shows glyph 1 (the empty one); CID 0 stays .notdef. */
static void fill_font(ocp_pdf *p)
{
    ocp_sb sb;
    ocp_sb_init(&sb);
    tounicode_cmap(p, &sb);
    qpdf_oh_replace_stream_data(p->q, qpdf_get_object_by_id(p->q, p->tounicode, 0),
                                (const unsigned char *)sb.buf, sb.len, qpdf_oh_new_null(p->q),
                                qpdf_oh_new_null(p->q));
    size_t n = 2 * ((size_t)p->ncid + 1);
    unsigned char *map = ocp_xcalloc(n, 1);
    for (size_t i = 1; i <= (size_t)p->ncid; i++)
        put16(map + 2 * i, 1);
    qpdf_oh_replace_stream_data(p->q, qpdf_get_object_by_id(p->q, p->cidtogid, 0), map, n,
                                qpdf_oh_new_null(p->q), qpdf_oh_new_null(p->q));
    free(map);
    ocp_sb_fini(&sb);
}

/* ---- The text layer ------------------------------------------------------------------ */

/* The next code point of UTF-8 text at *s (moved past it); U+FFFD for a bad sequence. */
static uint32_t next_cp(const unsigned char **s)
{
    const unsigned char *p = *s;
    uint32_t c = p[0];
    int n = c < 0x80             ? 0
            : (c & 0xE0) == 0xC0 ? 1
            : (c & 0xF0) == 0xE0 ? 2
            : (c & 0xF8) == 0xF0 ? 3
                                 : -1;
    if (n < 0) {
        *s = p + 1;
        return 0xFFFD;
    }
    c = n ? c & (0x3Fu >> n) : c;
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *s = p + i;
            return 0xFFFD;
        }
        c = (c << 6) | (p[i] & 0x3F);
    }
    *s = p + n + 1;
    if (c >= UNICODE_N || (c >= 0xD800 && c < 0xE000))
        return 0xFFFD;
    return c;
}

/* The CID of code point c, given one on first sight; 0 once every CID is taken. */
static unsigned cid_for(ocp_pdf *p, uint32_t c)
{
    if (!p->cid_of[c] && p->ncid < MAX_CID) {
        p->cps[p->ncid++] = c;
        p->cid_of[c] = (uint16_t)p->ncid;
    }
    return p->cid_of[c];
}

/* Appends text's codes as a hex string; returns how many (skipping controls). */
static int put_codes(ocp_pdf *p, const char *text, int space, ocp_sb *sb)
{
    const unsigned char *s = (const unsigned char *)text;
    int n = 0;
    ocp_sb_putc(sb, '<');
    while (*s) {
        uint32_t c = next_cp(&s);
        if (c < 0x20 || c == 0x7F)
            continue;
        ocp_sb_printf(sb, "%04X", cid_for(p, c));
        n++;
    }
    if (space) {
        ocp_sb_printf(sb, "%04X", cid_for(p, ' '));
        n++;
    }
    ocp_sb_putc(sb, '>');
    return n;
}

/* Where the layer goes: a point (x, y) of the OCR'd pixels is (x * sx, h - y * sy) in the
 * layer's space (points, y up), which the page's matrix maps to its user space. */
typedef struct layer_geom {
    double sx, sy, h;
    double m[6]; /* the layer's space -> the page's user space (cm) */
} layer_geom;

/* The reading direction in the layer's space: (c, s) the unit vector along the lines, an
 * angle anticlockwise; upright: the page read as it is, with no tilt. */
typedef struct reading_dir {
    double c, s;
    int upright;
} reading_dir;

/* A box of the OCR'd pixels as the turned rectangle it bounds, in the layer's space: its
 * centre, its length along the reading direction and its thickness across it. */
typedef struct span {
    double cx, cy, len, thick;
} span;

static void num(ocp_sb *sb, double v)
{
    if (fabs(v) < 0.005)
        v = 0;
    ocp_sb_printf(sb, "%.2f ", v);
}

/* A matrix entry of a turned text: two decimals would tilt a long line by a point. */
static void num4(ocp_sb *sb, double v)
{
    if (fabs(v) < 0.00005)
        v = 0;
    ocp_sb_printf(sb, "%.4f ", v);
}

/*
 * The direction a result's text reads in on its page: turned anticlockwise by its rotation
 * (the page was turned clockwise that much to be read), then tilted by its skew. Both come
 * from a result that may have been read back from JSON: a rotation that is not a quarter
 * turn counts as none, a skew that is not a number or past 45 degrees (the deskew measures
 * up to 15) as none.
 */
static reading_dir reading_dir_of(const ocp_result *res)
{
    static const double qc[4] = {1, 0, -1, 0}, qs[4] = {0, 1, 0, -1};
    int rot = res->rotation;
    int q = rot == 90 ? 1 : rot == 180 ? 2 : rot == 270 ? 3 : 0;
    double skew = isfinite(res->skew) && fabs(res->skew) <= 45 ? res->skew : 0;
    double kc = cos(skew * M_PI / 180.0), ks = sin(skew * M_PI / 180.0);
    reading_dir d = {qc[q] * kc - qs[q] * ks, qs[q] * kc + qc[q] * ks, q == 0 && skew == 0};
    return d;
}

/*
 * The result's boxes are the upright bounds (in the original page's pixels) of rectangles
 * that lay along d: a box B x H around a rectangle of length L and thickness T at angle a
 * has B = L|cos a| + T|sin a|, H = L|sin a| + T|cos a|, solved here for L and T. Near 45
 * degrees (never: quarter turns and small tilts), or where rounding of a thin box gives a
 * side of nothing, the box's own sides serve.
 */
static span span_of(const layer_geom *g, const reading_dir *d, ocp_box b)
{
    double bw = (b.x2 - b.x1) * g->sx, bh = (b.y2 - b.y1) * g->sy;
    span r = {(b.x1 + b.x2) * 0.5 * g->sx, g->h - (b.y1 + b.y2) * 0.5 * g->sy, bw, bh};
    double ac = fabs(d->c), as = fabs(d->s), den = ac * ac - as * as;
    if (fabs(den) > 0.25) {
        double len = (bw * ac - bh * as) / den, thick = (bh * ac - bw * as) / den;
        if (len > 0 && thick > 0) {
            r.len = len;
            r.thick = thick;
            return r;
        }
    }
    if (as > ac) {
        r.len = bh;
        r.thick = bw;
    }
    return r;
}

/* Where a word starts along its line: its centre's distance from the line's along the
 * reading direction, less half its length. */
static double word_start(const span *line, const span *w, const reading_dir *d)
{
    return (w->cx - line->cx) * d->c + (w->cy - line->cy) * d->s - w->len * 0.5;
}

/* One word along its line (ls: the line's span): font size the line's thickness, baseline
 * a fifth of it above the line's bottom edge (the font's descent), Tz so the codes span the
 * word (to the next word's start when a space follows), the text matrix turned to the
 * reading direction. */
static void put_word(ocp_pdf *p, const layer_geom *g, const reading_dir *d, const char *fname,
                     const span *ls, const ocp_word *w, const ocp_word *next, ocp_sb *sb)
{
    double size = ls->thick;
    span ws = span_of(g, d, w->bbox);
    double start = word_start(ls, &ws, d), width = ws.len;
    if (next) {
        span ns = span_of(g, d, next->bbox);
        double ns0 = word_start(ls, &ns, d);
        if (ns0 > start)
            width = ns0 - start;
    }
    if (size < 0.5 || width <= 0 || !w->text || !*w->text)
        return;
    /* The baseline's start: from the line's centre, along the line to the word, then
     * across it (normal (-s, c)) down to the bottom edge and up a fifth. */
    double across = -size * 0.5 + size * 0.2;
    double x = ls->cx + start * d->c - across * d->s, y = ls->cy + start * d->s + across * d->c;
    ocp_sb tmp;
    ocp_sb_init(&tmp);
    int n = put_codes(p, w->text, next != NULL, &tmp);
    if (n > 0) {
        double tz = 100.0 * width / (n * size * DW_UNITS / 1000.0);
        ocp_sb_printf(sb, "/%s ", fname);
        num(sb, size);
        ocp_sb_puts(sb, "Tf ");
        num(sb, tz);
        if (d->upright) {
            ocp_sb_puts(sb, "Tz 1 0 0 1 ");
        } else {
            ocp_sb_puts(sb, "Tz ");
            num4(sb, d->c);
            num4(sb, d->s);
            num4(sb, -d->s);
            num4(sb, d->c);
        }
        num(sb, x);
        num(sb, y);
        ocp_sb_puts(sb, "Tm ");
        ocp_sb_append(sb, tmp.buf, tmp.len);
        ocp_sb_puts(sb, " Tj\n");
    }
    ocp_sb_fini(&tmp);
}

/* The layer's content: the words of res under the matrix g->m, drawn with font fname
 * along the direction res reads in. */
static void layer_stream(ocp_pdf *p, const layer_geom *g, const ocp_result *res, const char *fname,
                         ocp_sb *sb)
{
    reading_dir d = reading_dir_of(res);
    ocp_sb_puts(sb, "q ");
    for (int i = 0; i < 6; i++)
        num(sb, g->m[i]);
    ocp_sb_puts(sb, "cm\nBT\n3 Tr\n");
    for (size_t i = 0; i < res->n_lines; i++) {
        const ocp_line *ln = &res->lines[i];
        if (ln->first_word > res->n_words || ln->n_words > res->n_words - ln->first_word)
            continue; /* a line naming words the result does not have */
        span ls = span_of(g, &d, ln->bbox);
        for (size_t k = 0; k < ln->n_words; k++) {
            const ocp_word *w = &res->words[ln->first_word + k];
            put_word(p, g, &d, fname, &ls, w, k + 1 < ln->n_words ? w + 1 : NULL, sb);
        }
    }
    ocp_sb_puts(sb, "ET\nQ\n");
}

/* A name for our font in the page's /Font resources: the one it has already (pages that
 * share their resources), else one that no other font has. */
static void font_name(ocp_pdf *p, qpdf_oh fonts, char out[32])
{
    for (int k = 0;; k++) {
        char key[40];
        snprintf(out, 32, "%s%d", FONT_PREFIX, k);
        snprintf(key, sizeof key, "/%s", out);
        if (!qpdf_oh_has_key(p->q, fonts, key) ||
            qpdf_oh_get_object_id(p->q, qpdf_oh_get_key(p->q, fonts, key)) == p->font)
            return;
    }
}

/* The page's /Resources /Font dictionary, made where missing; NULL handle on failure. */
static qpdf_oh page_fonts(ocp_pdf *p, qpdf_oh page)
{
    qpdf_oh res = qpdf_oh_get_key(p->q, page, "/Resources");
    if (!qpdf_oh_is_dictionary(p->q, res)) {
        res = qpdf_oh_new_dictionary(p->q);
        qpdf_oh_replace_key(p->q, page, "/Resources", res);
        res = qpdf_oh_get_key(p->q, page, "/Resources");
    }
    qpdf_oh fonts = qpdf_oh_get_key(p->q, res, "/Font");
    if (!qpdf_oh_is_dictionary(p->q, fonts)) {
        qpdf_oh_replace_key(p->q, res, "/Font", qpdf_oh_new_dictionary(p->q));
        fonts = qpdf_oh_get_key(p->q, res, "/Font");
    }
    return fonts;
}

/* A rectangle of a page dictionary's key ([x0 y0 x1 y1], normalised); 0 when absent or
 * not four numbers. */
static int page_box(ocp_pdf *p, qpdf_oh page, const char *key, double r[4])
{
    qpdf_oh a = qpdf_oh_get_key(p->q, page, key);
    if (!qpdf_oh_is_array(p->q, a) || qpdf_oh_get_array_n_items(p->q, a) != 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        qpdf_oh v = qpdf_oh_get_array_item(p->q, a, i);
        if (!qpdf_oh_is_number(p->q, v))
            return 0;
        r[i] = qpdf_oh_get_numeric_value(p->q, v);
        if (!isfinite(r[i]))
            return 0;
    }
    double t;
    if (r[0] > r[2])
        t = r[0], r[0] = r[2], r[2] = t;
    if (r[1] > r[3])
        t = r[1], r[1] = r[3], r[3] = t;
    return r[2] - r[0] > 0 && r[3] - r[1] > 0;
}

/*
 * The layer's geometry on a PDF page: the page is rendered from its crop box (within the
 * media box), turned clockwise by /Rotate; the layer is drawn in that displayed space and
 * its matrix turns it back into the page's user space.
 */
static int page_geom(ocp_pdf *p, qpdf_oh page, const ocp_result *res, layer_geom *g)
{
    double mb[4] = {0, 0, 612, 792}, cb[4];
    page_box(p, page, "/MediaBox", mb);
    if (page_box(p, page, "/CropBox", cb)) {
        cb[0] = fmax(cb[0], mb[0]), cb[1] = fmax(cb[1], mb[1]);
        cb[2] = fmin(cb[2], mb[2]), cb[3] = fmin(cb[3], mb[3]);
        if (cb[2] <= cb[0] || cb[3] <= cb[1])
            memcpy(cb, mb, sizeof cb);
    } else {
        memcpy(cb, mb, sizeof cb);
    }
    long long rot = 0;
    qpdf_oh r = qpdf_oh_get_key(p->q, page, "/Rotate");
    if (qpdf_oh_is_integer(p->q, r))
        rot = qpdf_oh_get_int_value(p->q, r);
    rot = ((rot % 360) + 360) % 360;
    rot -= rot % 90;
    double w = cb[2] - cb[0], h = cb[3] - cb[1], x0 = cb[0], y0 = cb[1];
    double dw = rot == 90 || rot == 270 ? h : w, dh = rot == 90 || rot == 270 ? w : h;
    g->sx = dw / res->width;
    g->sy = dh / res->height;
    g->h = dh;
    /* Displayed (dx, dy) -> user (u, v), cm [a b c d e f]: u = a dx + c dy + e,
     * v = b dx + d dy + f. */
    const double m[4][6] = {
        {1, 0, 0, 1, x0, y0},
        {0, 1, -1, 0, x0 + w, y0},
        {-1, 0, 0, -1, x0 + w, y0 + h},
        {0, -1, 1, 0, x0, y0 + h},
    };
    memcpy(g->m, m[rot / 90], sizeof g->m);
    return 0;
}

/* Adds the layer stream to page: its old content wrapped in q ... Q (a graphics state
 * it leaves changed does not move the words), then the layer. */
static void append_layer(ocp_pdf *p, qpdf_oh page, const ocp_sb *layer)
{
    qpdf_oh contents = qpdf_oh_get_key(p->q, page, "/Contents");
    qpdf_oh arr = qpdf_oh_new_array(p->q);
    if (qpdf_oh_is_stream(p->q, contents)) {
        qpdf_oh_append_item(p->q, arr, new_stream(p, "q\n", 2, NULL));
        qpdf_oh_append_item(p->q, arr, contents);
    } else if (qpdf_oh_is_array(p->q, contents)) {
        int n = qpdf_oh_get_array_n_items(p->q, contents);
        qpdf_oh_append_item(p->q, arr, new_stream(p, "q\n", 2, NULL));
        for (int i = 0; i < n; i++)
            qpdf_oh_append_item(p->q, arr, qpdf_oh_get_array_item(p->q, contents, i));
    }
    ocp_sb all;
    ocp_sb_init(&all);
    if (qpdf_oh_get_array_n_items(p->q, arr) > 0)
        ocp_sb_puts(&all, "\nQ\n");
    ocp_sb_append(&all, layer->buf, layer->len);
    qpdf_oh_append_item(p->q, arr, new_stream(p, all.buf, all.len, NULL));
    qpdf_oh_replace_key(p->q, page, "/Contents", arr);
    ocp_sb_fini(&all);
}

int ocp_pdf_graft(ocp_pdf *p, int page, const ocp_result *res, char *err, size_t errlen)
{
    if (page < 0 || page >= p->pages)
        return ocp_errf(OCP_E_NOPAGE, err, errlen, "the PDF has no page %d", page + 1);
    if (!res || res->n_words == 0 || res->width <= 0 || res->height <= 0)
        return 0;
    if (!p->font)
        make_font(p);
    qpdf_oh pg = qpdf_get_page_n(p->q, (size_t)page);
    layer_geom g;
    page_geom(p, pg, res, &g);
    qpdf_oh fonts = page_fonts(p, pg);
    char fname[32], key[40];
    font_name(p, fonts, fname);
    snprintf(key, sizeof key, "/%s", fname);
    int rc = qpdf_failed(p, "cannot read the page", err, errlen);
    if (rc)
        return rc;
    qpdf_oh_replace_key(p->q, fonts, key, qpdf_get_object_by_id(p->q, p->font, 0));
    ocp_sb layer;
    ocp_sb_init(&layer);
    layer_stream(p, &g, res, fname, &layer);
    append_layer(p, pg, &layer);
    ocp_sb_fini(&layer);
    qpdf_oh_release_all(p->q);
    return qpdf_failed(p, "cannot add the text layer", err, errlen);
}

/* ---- Pages from images --------------------------------------------------------------- */

/* The image XObject of img: the JPEG as it is, or the pixels deflated. */
static int image_xobject(ocp_pdf *p, const ocp_pdf_image *img, qpdf_oh *out, char *err,
                         size_t errlen)
{
    char dict[200];
    snprintf(dict, sizeof dict,
             "<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /%s "
             "/BitsPerComponent 8 >>",
             img->width, img->height, img->bands == 1 ? "DeviceGray" : "DeviceRGB");
    qpdf_oh s;
    if (img->jpeg) {
        s = new_stream(p, img->data, img->len, "/DCTDecode");
    } else {
        size_t raw = (size_t)img->width * (size_t)img->height * (size_t)img->bands;
        if (raw != img->len)
            return ocp_errf(OCP_E_RANGE, err, errlen, "image of %zu bytes for %dx%dx%d", img->len,
                            img->width, img->height, img->bands);
        uLongf zlen = compressBound((uLong)raw);
        unsigned char *z = ocp_xmalloc(zlen);
        if (compress2(z, &zlen, img->data, (uLong)raw, 6) != Z_OK) {
            free(z);
            return ocp_errf(OCP_E_DECODE, err, errlen, "cannot deflate the image");
        }
        s = new_stream(p, z, zlen, "/FlateDecode");
        free(z);
    }
    qpdf_oh d = qpdf_oh_get_dict(p->q, s), tmpl = qpdf_oh_parse(p->q, dict);
    qpdf_oh_begin_dict_key_iter(p->q, tmpl);
    while (qpdf_oh_dict_more_keys(p->q)) {
        char key[64];
        snprintf(key, sizeof key, "%s", qpdf_oh_dict_next_key(p->q));
        qpdf_oh_replace_key(p->q, d, key, qpdf_oh_get_key(p->q, tmpl, key));
    }
    *out = s;
    return qpdf_failed(p, "cannot make the image", err, errlen);
}

int ocp_pdf_add_image(ocp_pdf *p, const ocp_pdf_image *img, const ocp_result *res, char *err,
                      size_t errlen)
{
    if (img->width <= 0 || img->height <= 0 || (img->bands != 1 && img->bands != 3))
        return ocp_errf(OCP_E_RANGE, err, errlen, "image of %dx%d pixels, %d bands", img->width,
                        img->height, img->bands);
    double dpi = img->dpi > 0 ? img->dpi : 300;
    double w = img->width * 72.0 / dpi, h = img->height * 72.0 / dpi;
    qpdf_oh xo = 0;
    int rc = image_xobject(p, img, &xo, err, errlen);
    if (rc)
        return rc;
    char name[32], buf[300];
    snprintf(name, sizeof name, "Im%d", p->images++);
    snprintf(buf, sizeof buf, "<< /Type /Page /MediaBox [0 0 %.2f %.2f] /Resources << >> >>", w, h);
    qpdf_oh page = qpdf_oh_parse(p->q, buf);
    qpdf_oh rd = qpdf_oh_get_key(p->q, page, "/Resources"), xd = qpdf_oh_new_dictionary(p->q);
    snprintf(buf, sizeof buf, "/%s", name);
    qpdf_oh_replace_key(p->q, xd, buf, xo);
    qpdf_oh_replace_key(p->q, rd, "/XObject", xd);
    ocp_sb c;
    ocp_sb_init(&c);
    ocp_sb_printf(&c, "q %.2f 0 0 %.2f 0 0 cm /%s Do Q\n", w, h, name);
    if (res && res->n_words > 0 && res->width > 0 && res->height > 0) {
        if (!p->font)
            make_font(p);
        qpdf_oh fd = qpdf_oh_new_dictionary(p->q);
        qpdf_oh_replace_key(p->q, fd, "/" FONT_PREFIX "0", qpdf_get_object_by_id(p->q, p->font, 0));
        qpdf_oh_replace_key(p->q, rd, "/Font", fd);
        layer_geom g = {w / res->width, h / res->height, h, {1, 0, 0, 1, 0, 0}};
        layer_stream(p, &g, res, FONT_PREFIX "0", &c);
    }
    qpdf_oh_replace_key(p->q, page, "/Contents", new_stream(p, c.buf, c.len, NULL));
    ocp_sb_fini(&c);
    page = qpdf_make_indirect_object(p->q, page);
    qpdf_add_page(p->q, p->q, page, 0);
    qpdf_oh_release_all(p->q);
    if ((rc = qpdf_failed(p, "cannot add the page", err, errlen)) != 0)
        return rc;
    p->pages++;
    return 0;
}

/* Whether buf is a PDF qpdf reads back, pages and all. */
static int reads_back(const char *buf, size_t len, int pages)
{
    qpdf_data q = qpdf_init();
    qpdf_silence_errors(q);
    qpdf_set_suppress_warnings(q, 1);
    int ok = !(qpdf_read_memory(q, "written PDF", buf, len, "") & QPDF_ERRORS) &&
             !qpdf_more_warnings(q) && qpdf_get_num_pages(q) == pages && !qpdf_has_error(q);
    /* Taken, or qpdf_cleanup says on stderr that it was not handled. */
    while (qpdf_has_error(q))
        qpdf_get_error(q);
    qpdf_cleanup(&q);
    return ok;
}

/* One write in an object stream mode into out (replacing what it held). */
static int write_mode(ocp_pdf *p, enum qpdf_object_stream_e mode, ocp_sb *out, char *err,
                      size_t errlen)
{
    qpdf_init_write_memory(p->q);
    qpdf_set_object_stream_mode(p->q, mode);
    /* A deterministic /ID (the same results give the same bytes), but an encrypted input
     * keeps its encryption, which qpdf cannot write with one. */
    qpdf_set_deterministic_ID(p->q, !qpdf_is_encrypted(p->q));
    int rc = qpdf_failed(p, "cannot write the PDF", err, errlen);
    if (!rc && (qpdf_write(p->q) & QPDF_ERRORS))
        rc = qpdf_failed(p, "cannot write the PDF", err, errlen);
    if (!rc && (rc = qpdf_failed(p, "cannot write the PDF", err, errlen)) == 0) {
        ocp_sb_reset(out);
        ocp_sb_append(out, (const char *)qpdf_get_buffer(p->q), qpdf_get_buffer_length(p->q));
    }
    drain_warnings(p);
    return rc;
}

int ocp_pdf_write(ocp_pdf *p, ocp_sb *out, char *err, size_t errlen)
{
    if (p->font)
        fill_font(p);
    ocp_sb mine;
    ocp_sb_init(&mine);
    /* Object streams make smaller files; but qpdf 11 can write a damaged input it repaired
     * into object streams it cannot read back (a cross-reference stream without /Size):
     * each write is read back, and written again without object streams when it fails. */
    int rc = write_mode(p, qpdf_o_generate, &mine, err, errlen);
    if (!rc && !reads_back(mine.buf, mine.len, p->pages)) {
        rc = write_mode(p, qpdf_o_disable, &mine, err, errlen);
        if (!rc && !reads_back(mine.buf, mine.len, p->pages))
            rc = ocp_errf(OCP_E_FORMAT, err, errlen,
                          "qpdf wrote a PDF that it cannot read back (a damaged input?)");
    }
    if (!rc)
        ocp_sb_append(out, mine.buf, mine.len);
    ocp_sb_fini(&mine);
    return rc;
}

/* ---- JPEG headers -------------------------------------------------------------------- */

static unsigned be16(const unsigned char *b)
{
    return (unsigned)b[0] << 8 | b[1];
}

/* The orientation (tag 0x112) of an EXIF block (after "Exif\0\0"), 1 when none. */
static int exif_orientation(const unsigned char *t, size_t n)
{
    if (n < 8 || !((t[0] == 'I' && t[1] == 'I') || (t[0] == 'M' && t[1] == 'M')))
        return 1;
    int le = t[0] == 'I';
#define RD16(q) (le ? (unsigned)(q)[0] | (unsigned)(q)[1] << 8 : be16(q))
#define RD32(q) ((uint32_t)RD16((q) + (le ? 2 : 0)) << 16 | RD16((q) + (le ? 0 : 2)))
    uint32_t ifd = RD32(t + 4);
    if (ifd > n - 2)
        return 1;
    unsigned entries = RD16(t + ifd);
    for (unsigned i = 0; i < entries; i++) {
        size_t e = ifd + 2 + 12 * (size_t)i;
        if (e + 12 > n)
            break;
        if (RD16(t + e) == 0x112) {
            unsigned v = RD16(t + e + 8);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
#undef RD16
#undef RD32
    return 1;
}

int ocp_pdf_jpeg_info(const unsigned char *buf, size_t len, int *w, int *h, int *comps,
                      int *orientation)
{
    size_t i = 2;
    *orientation = 1;
    if (len < 4 || buf[0] != 0xFF || buf[1] != 0xD8)
        return OCP_E_DECODE;
    while (i + 4 <= len) {
        if (buf[i] != 0xFF)
            return OCP_E_DECODE;
        unsigned m = buf[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {
            i += 2;
            continue;
        }
        size_t seg = be16(buf + i + 2);
        if (seg < 2 || i + 2 + seg > len || m == 0xD9 || m == 0xDA)
            return OCP_E_DECODE; /* no frame header before the scan or the end */
        const unsigned char *d = buf + i + 4;
        size_t dn = seg - 2;
        if (m == 0xE1 && dn >= 6 && memcmp(d, "Exif\0\0", 6) == 0)
            *orientation = exif_orientation(d + 6, dn - 6);
        /* SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC). */
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (dn < 6)
                return OCP_E_DECODE;
            *h = (int)be16(d + 1);
            *w = (int)be16(d + 3);
            *comps = d[5];
            /* Baseline, extended or progressive Huffman, 8 bits: what DCTDecode reads. */
            if (d[0] != 8 || !(m == 0xC0 || m == 0xC1 || m == 0xC2) || *w == 0 || *h == 0)
                return OCP_E_DECODE;
            return 0;
        }
        i += 2 + seg;
    }
    return OCP_E_DECODE;
}
