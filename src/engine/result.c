/*
 * result.c: the page result and its renderings (result.h).
 *
 * hOCR, ALTO and TSV are made here from our own result, not by the engine,
 * so that every box is in the original page's pixels whatever resizing
 * happened, and so that every engine gets the same renderings. Blocks and
 * paragraphs have no box of their own in the result: their box is the
 * union of their lines' boxes.
 */
#include "engine/result.h"
#include "core/error.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void ocp_result_init(ocp_result *r)
{
    memset(r, 0, sizeof *r);
    r->peak_rss_kb = -1;
}

void ocp_result_fini(ocp_result *r)
{
    for (size_t i = 0; i < r->n_lines; i++)
        free(r->lines[i].text);
    for (size_t i = 0; i < r->n_words; i++)
        free(r->words[i].text);
    free(r->lines);
    free(r->words);
    free(r->id);
    free(r->source);
    free(r->lang);
    free(r->engine);
    free(r->text);
    memset(r, 0, sizeof *r);
}

void ocp_result_set(char **field, const char *s)
{
    free(*field);
    *field = s ? ocp_xstrdup(s) : NULL;
}

ocp_line *ocp_result_add_line(ocp_result *r, ocp_box bbox, const char *text, float conf, int block,
                              int par)
{
    if (r->n_lines == r->cap_lines) {
        r->cap_lines = r->cap_lines ? r->cap_lines * 2 : 32;
        r->lines = ocp_xrealloc(r->lines, r->cap_lines * sizeof *r->lines);
    }
    ocp_line *l = &r->lines[r->n_lines++];
    l->bbox = bbox;
    l->text = ocp_xstrdup(text ? text : "");
    l->conf = conf;
    l->block = block;
    l->par = par;
    l->first_word = r->n_words;
    l->n_words = 0;
    return l;
}

void ocp_result_add_word(ocp_result *r, ocp_box bbox, const char *text, float conf)
{
    if (r->n_lines == 0)
        ocp_result_add_line(r, bbox, "", conf, 0, 0);
    if (r->n_words == r->cap_words) {
        r->cap_words = r->cap_words ? r->cap_words * 2 : 128;
        r->words = ocp_xrealloc(r->words, r->cap_words * sizeof *r->words);
    }
    ocp_word *w = &r->words[r->n_words++];
    w->bbox = bbox;
    w->text = ocp_xstrdup(text ? text : "");
    w->conf = conf;
    r->lines[r->n_lines - 1].n_words++;
}

static int clampi(long v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : (int)v;
}

ocp_box ocp_box_rescale(ocp_box b, double sx, double sy, int w, int h)
{
    ocp_box o;
    o.x1 = clampi((long)floor(b.x1 * sx), 0, w);
    o.y1 = clampi((long)floor(b.y1 * sy), 0, h);
    o.x2 = clampi((long)ceil(b.x2 * sx), 0, w);
    o.y2 = clampi((long)ceil(b.y2 * sy), 0, h);
    return o;
}

void ocp_result_rescale(ocp_result *r, double sx, double sy, int w, int h)
{
    for (size_t i = 0; i < r->n_lines; i++)
        r->lines[i].bbox = ocp_box_rescale(r->lines[i].bbox, sx, sy, w, h);
    for (size_t i = 0; i < r->n_words; i++)
        r->words[i].bbox = ocp_box_rescale(r->words[i].bbox, sx, sy, w, h);
    r->width = w;
    r->height = h;
}

static ocp_box box_back(const ocp_orient_xform *x, ocp_box b)
{
    ocp_orient_box_back(x, &b.x1, &b.y1, &b.x2, &b.y2);
    return b;
}

void ocp_result_turn_back(ocp_result *r, const ocp_orient_xform *x)
{
    r->rotation = x->rotation;
    r->skew = x->skew;
    if (x->rotation == 0 && x->skew == 0)
        return;
    for (size_t i = 0; i < r->n_lines; i++)
        r->lines[i].bbox = box_back(x, r->lines[i].bbox);
    for (size_t i = 0; i < r->n_words; i++)
        r->words[i].bbox = box_back(x, r->words[i].bbox);
}

static const struct {
    int fmt;
    const char *name, *ext;
} formats[] = {
    {OCP_FMT_TXT, "txt", "txt"},   {OCP_FMT_JSON, "json", "json"}, {OCP_FMT_HOCR, "hocr", "hocr"},
    {OCP_FMT_ALTO, "alto", "xml"}, {OCP_FMT_TSV, "tsv", "tsv"},
};

int ocp_format_parse(const char *list)
{
    int mask = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
            if (strlen(formats[i].name) == n && strncmp(formats[i].name, p, n) == 0) {
                mask |= formats[i].fmt;
                found = 1;
            }
        }
        if (!found)
            return -1;
        if (!e)
            break;
        p = e + 1;
    }
    return mask;
}

const char *ocp_format_ext(int fmt)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].fmt == fmt)
            return formats[i].ext;
    return "bin";
}

const char *ocp_format_name(int fmt)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].fmt == fmt)
            return formats[i].name;
    return "?";
}

static json_t *box_json(ocp_box b)
{
    return json_pack("[iiii]", b.x1, b.y1, b.x2, b.y2);
}

/* Confidences rounded to 2 decimals: more digits are noise. */
static json_t *conf_json(float c)
{
    return json_real(round((double)c * 100.0) / 100.0);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *ocp_result_json(const ocp_result *r)
{
    json_t *o = json_object(), *lines = json_array();
    json_object_set_new(o, "id", str_or_null(r->id));
    json_object_set_new(o, "source", str_or_null(r->source));
    json_object_set_new(o, "page", json_integer(r->page));
    json_object_set_new(o, "width", json_integer(r->width));
    json_object_set_new(o, "height", json_integer(r->height));
    json_object_set_new(o, "rotation", json_integer(r->rotation));
    json_object_set_new(o, "skew", json_real(round(r->skew * 100.0) / 100.0));
    json_object_set_new(o, "lang", str_or_null(r->lang));
    json_object_set_new(o, "engine", str_or_null(r->engine));
    json_object_set_new(o, "text", json_string(r->text ? r->text : ""));
    json_object_set_new(o, "mean_confidence", conf_json(r->mean_conf));
    for (size_t i = 0; i < r->n_lines; i++) {
        const ocp_line *l = &r->lines[i];
        json_t *lo = json_object(), *words = json_array();
        json_object_set_new(lo, "bbox", box_json(l->bbox));
        json_object_set_new(lo, "text", json_string(l->text));
        json_object_set_new(lo, "confidence", conf_json(l->conf));
        json_object_set_new(lo, "block", json_integer(l->block));
        json_object_set_new(lo, "par", json_integer(l->par));
        for (size_t k = 0; k < l->n_words; k++) {
            const ocp_word *w = &r->words[l->first_word + k];
            json_array_append_new(words,
                                  json_pack("{s:o, s:s, s:o}", "bbox", box_json(w->bbox), "text",
                                            w->text, "confidence", conf_json(w->conf)));
        }
        json_object_set_new(lo, "words", words);
        json_array_append_new(lines, lo);
    }
    json_object_set_new(o, "lines", lines);
    json_object_set_new(o, "elapsed_ms", json_real(round(r->elapsed_ms * 10.0) / 10.0));
    json_object_set_new(o, "peak_rss_kb", json_integer(r->peak_rss_kb));
    return o;
}

static void render_json(const ocp_result *r, ocp_sb *out)
{
    json_t *o = ocp_result_json(r);
    /* json_string() refuses invalid UTF-8; an engine never gives it, but be safe. */
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (s) {
        ocp_sb_puts(out, s);
        ocp_sb_putc(out, '\n');
        free(s);
    }
    json_decref(o);
}

/* The union of the boxes of lines [from, to). */
static ocp_box union_box(const ocp_result *r, size_t from, size_t to)
{
    ocp_box u = r->lines[from].bbox;
    for (size_t i = from + 1; i < to; i++) {
        const ocp_box *b = &r->lines[i].bbox;
        u.x1 = b->x1 < u.x1 ? b->x1 : u.x1;
        u.y1 = b->y1 < u.y1 ? b->y1 : u.y1;
        u.x2 = b->x2 > u.x2 ? b->x2 : u.x2;
        u.y2 = b->y2 > u.y2 ? b->y2 : u.y2;
    }
    return u;
}

/* End (exclusive) of the run of lines starting at i with the same block (and par when by_par). */
static size_t run_end(const ocp_result *r, size_t i, int by_par)
{
    size_t j = i + 1;
    while (j < r->n_lines && r->lines[j].block == r->lines[i].block &&
           (!by_par || r->lines[j].par == r->lines[i].par))
        j++;
    return j;
}

static void render_tsv(const ocp_result *r, ocp_sb *out)
{
    /* Tesseract's TSV columns; rows for page (1), block (2), par (3), line (4), word (5). */
    ocp_sb_puts(out, "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\t"
                     "height\tconf\ttext\n");
    ocp_sb_printf(out, "1\t%d\t0\t0\t0\t0\t0\t0\t%d\t%d\t-1\t\n", r->page, r->width, r->height);
    size_t i = 0;
    while (i < r->n_lines) {
        size_t bend = run_end(r, i, 0);
        int bn = r->lines[i].block + 1;
        ocp_box bb = union_box(r, i, bend);
        ocp_sb_printf(out, "2\t%d\t%d\t0\t0\t0\t%d\t%d\t%d\t%d\t-1\t\n", r->page, bn, bb.x1, bb.y1,
                      bb.x2 - bb.x1, bb.y2 - bb.y1);
        while (i < bend) {
            size_t pend = run_end(r, i, 1);
            int pn = r->lines[i].par + 1;
            ocp_box pb = union_box(r, i, pend);
            ocp_sb_printf(out, "3\t%d\t%d\t%d\t0\t0\t%d\t%d\t%d\t%d\t-1\t\n", r->page, bn, pn,
                          pb.x1, pb.y1, pb.x2 - pb.x1, pb.y2 - pb.y1);
            for (int ln = 1; i < pend; i++, ln++) {
                const ocp_line *l = &r->lines[i];
                ocp_sb_printf(out, "4\t%d\t%d\t%d\t%d\t0\t%d\t%d\t%d\t%d\t-1\t\n", r->page, bn, pn,
                              ln, l->bbox.x1, l->bbox.y1, l->bbox.x2 - l->bbox.x1,
                              l->bbox.y2 - l->bbox.y1);
                for (size_t k = 0; k < l->n_words; k++) {
                    const ocp_word *w = &r->words[l->first_word + k];
                    ocp_sb_printf(out, "5\t%d\t%d\t%d\t%d\t%zu\t%d\t%d\t%d\t%d\t%.6f\t", r->page,
                                  bn, pn, ln, k + 1, w->bbox.x1, w->bbox.y1,
                                  w->bbox.x2 - w->bbox.x1, w->bbox.y2 - w->bbox.y1,
                                  (double)w->conf);
                    /* TSV text cannot hold tabs or newlines. */
                    for (const char *c = w->text; *c; c++)
                        ocp_sb_putc(out, (*c == '\t' || *c == '\n') ? ' ' : *c);
                    ocp_sb_putc(out, '\n');
                }
            }
        }
    }
}

static void hocr_bbox(ocp_sb *out, ocp_box b)
{
    ocp_sb_printf(out, "bbox %d %d %d %d", b.x1, b.y1, b.x2, b.y2);
}

static void render_hocr(const ocp_result *r, ocp_sb *out)
{
    int p = r->page;
    ocp_sb_puts(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
                     "    \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
                     "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
                     " <head>\n  <title>");
    ocp_sb_put_xml(out, r->source ? r->source : "");
    ocp_sb_puts(out, "</title>\n  <meta http-equiv=\"Content-Type\" content=\"text/html;"
                     "charset=utf-8\"/>\n  <meta name=\"ocr-system\" content=\"ocrpool ");
    ocp_sb_put_xml(out, r->engine ? r->engine : "");
    ocp_sb_puts(out, "\"/>\n  <meta name=\"ocr-capabilities\" content=\"ocr_page ocr_carea "
                     "ocr_par ocr_line ocrx_word ocrp_wconf\"/>\n </head>\n <body>\n");
    ocp_sb_printf(out, "  <div class=\"ocr_page\" id=\"page_%d\" title=\"image &quot;", p);
    ocp_sb_put_xml(out, r->source ? r->source : "");
    ocp_sb_printf(out, "&quot;; bbox 0 0 %d %d; ppageno %d", r->width, r->height, p - 1);
    /* The page was read turned: its text stands at textangle (anticlockwise, hOCR's sense)
     * on the page, and x_skew says how far its lines were tilted (ocrpool's own property). */
    if (r->rotation)
        ocp_sb_printf(out, "; textangle %d", r->rotation);
    if (r->skew != 0)
        ocp_sb_printf(out, "; x_skew %.2f", r->skew);
    ocp_sb_puts(out, "\">\n");
    size_t i = 0;
    int wn = 0, ln = 0;
    while (i < r->n_lines) {
        size_t bend = run_end(r, i, 0);
        int bn = r->lines[i].block + 1;
        ocp_sb_printf(out, "   <div class=\"ocr_carea\" id=\"block_%d_%d\" title=\"", p, bn);
        hocr_bbox(out, union_box(r, i, bend));
        ocp_sb_puts(out, "\">\n");
        while (i < bend) {
            size_t pend = run_end(r, i, 1);
            ocp_sb_printf(out, "    <p class=\"ocr_par\" id=\"par_%d_%d_%d\" title=\"", p, bn,
                          r->lines[i].par + 1);
            hocr_bbox(out, union_box(r, i, pend));
            ocp_sb_puts(out, "\">\n");
            for (; i < pend; i++) {
                const ocp_line *l = &r->lines[i];
                ocp_sb_printf(out, "     <span class=\"ocr_line\" id=\"line_%d_%d\" title=\"", p,
                              ++ln);
                hocr_bbox(out, l->bbox);
                ocp_sb_puts(out, "\">");
                for (size_t k = 0; k < l->n_words; k++) {
                    const ocp_word *w = &r->words[l->first_word + k];
                    ocp_sb_printf(out,
                                  "\n      <span class=\"ocrx_word\" id=\"word_%d_%d\" title=\"", p,
                                  ++wn);
                    hocr_bbox(out, w->bbox);
                    ocp_sb_printf(out, "; x_wconf %d\">", (int)lroundf(w->conf));
                    ocp_sb_put_xml(out, w->text);
                    ocp_sb_puts(out, "</span>");
                }
                ocp_sb_puts(out, "\n     </span>\n");
            }
            ocp_sb_puts(out, "    </p>\n");
        }
        ocp_sb_puts(out, "   </div>\n");
    }
    ocp_sb_puts(out, "  </div>\n </body>\n</html>\n");
}

static void alto_pos(ocp_sb *out, ocp_box b)
{
    ocp_sb_printf(out, "HPOS=\"%d\" VPOS=\"%d\" WIDTH=\"%d\" HEIGHT=\"%d\"", b.x1, b.y1,
                  b.x2 - b.x1, b.y2 - b.y1);
}

static void render_alto(const ocp_result *r, ocp_sb *out)
{
    int p = r->page;
    ocp_sb_puts(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<alto xmlns=\"http://www.loc.gov/standards/alto/ns-v3#\" "
                     "xmlns:xlink=\"http://www.w3.org/1999/xlink\" "
                     "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
                     "xsi:schemaLocation=\"http://www.loc.gov/standards/alto/ns-v3# "
                     "http://www.loc.gov/alto/v3/alto-3-0.xsd\">\n"
                     " <Description>\n  <MeasurementUnit>pixel</MeasurementUnit>\n"
                     "  <sourceImageInformation>\n   <fileName>");
    ocp_sb_put_xml(out, r->source ? r->source : "");
    ocp_sb_puts(out, "</fileName>\n  </sourceImageInformation>\n  <OCRProcessing ID=\"OCR_0\">\n"
                     "   <ocrProcessingStep>\n");
    if (r->rotation || r->skew != 0)
        ocp_sb_printf(
            out, "    <processingStepSettings>rotation %d; skew %.2f</processingStepSettings>\n",
            r->rotation, r->skew);
    ocp_sb_puts(out, "    <processingSoftware>\n"
                     "     <softwareName>ocrpool ");
    ocp_sb_put_xml(out, r->engine ? r->engine : "");
    ocp_sb_puts(out, "</softwareName>\n    </processingSoftware>\n   </ocrProcessingStep>\n"
                     "  </OCRProcessing>\n </Description>\n <Layout>\n");
    ocp_sb_printf(out,
                  "  <Page WIDTH=\"%d\" HEIGHT=\"%d\" PHYSICAL_IMG_NR=\"%d\" ID=\"page_%d\">\n"
                  "   <PrintSpace HPOS=\"0\" VPOS=\"0\" WIDTH=\"%d\" HEIGHT=\"%d\">\n",
                  r->width, r->height, p, p, r->width, r->height);
    size_t i = 0;
    int ln = 0, wn = 0;
    while (i < r->n_lines) {
        size_t bend = run_end(r, i, 0);
        ocp_sb_printf(out, "    <TextBlock ID=\"block_%d_%d\" ", p, r->lines[i].block + 1);
        alto_pos(out, union_box(r, i, bend));
        /* ALTO's ROTATION: the block's text turned anticlockwise, in degrees. */
        if (r->rotation)
            ocp_sb_printf(out, " ROTATION=\"%d\"", r->rotation);
        ocp_sb_puts(out, ">\n");
        for (; i < bend; i++) {
            const ocp_line *l = &r->lines[i];
            ocp_sb_printf(out, "     <TextLine ID=\"line_%d_%d\" ", p, ++ln);
            alto_pos(out, l->bbox);
            ocp_sb_puts(out, ">\n");
            for (size_t k = 0; k < l->n_words; k++) {
                const ocp_word *w = &r->words[l->first_word + k];
                if (k > 0) {
                    const ocp_word *pw = w - 1;
                    ocp_sb_printf(out, "      <SP WIDTH=\"%d\" VPOS=\"%d\" HPOS=\"%d\"/>\n",
                                  w->bbox.x1 - pw->bbox.x2, pw->bbox.y1, pw->bbox.x2);
                }
                ocp_sb_printf(out, "      <String ID=\"string_%d_%d\" ", p, ++wn);
                alto_pos(out, w->bbox);
                ocp_sb_printf(out, " WC=\"%.2f\" CONTENT=\"", (double)w->conf / 100.0);
                ocp_sb_put_xml(out, w->text);
                ocp_sb_puts(out, "\"/>\n");
            }
            ocp_sb_puts(out, "     </TextLine>\n");
        }
        ocp_sb_puts(out, "    </TextBlock>\n");
    }
    ocp_sb_puts(out, "   </PrintSpace>\n  </Page>\n </Layout>\n</alto>\n");
}

void ocp_result_render(const ocp_result *r, int fmt, ocp_sb *out)
{
    switch (fmt) {
    case OCP_FMT_TXT:
        ocp_sb_puts(out, r->text ? r->text : "");
        break;
    case OCP_FMT_JSON:
        render_json(r, out);
        break;
    case OCP_FMT_HOCR:
        render_hocr(r, out);
        break;
    case OCP_FMT_ALTO:
        render_alto(r, out);
        break;
    case OCP_FMT_TSV:
        render_tsv(r, out);
        break;
    default:
        break;
    }
}

static ocp_box box_from(json_t *a)
{
    ocp_box b = {0, 0, 0, 0};
    if (json_is_array(a) && json_array_size(a) == 4) {
        b.x1 = (int)json_integer_value(json_array_get(a, 0));
        b.y1 = (int)json_integer_value(json_array_get(a, 1));
        b.x2 = (int)json_integer_value(json_array_get(a, 2));
        b.y2 = (int)json_integer_value(json_array_get(a, 3));
    }
    return b;
}

static const char *str_of(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

int ocp_result_from_json(ocp_result *r, const char *text)
{
    json_t *o = json_loads(text, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return OCP_E_DECODE;
    }
    ocp_result_set(&r->id, str_of(o, "id"));
    ocp_result_set(&r->source, str_of(o, "source"));
    ocp_result_set(&r->lang, str_of(o, "lang"));
    ocp_result_set(&r->engine, str_of(o, "engine"));
    ocp_result_set(&r->text, str_of(o, "text"));
    r->page = (int)json_integer_value(json_object_get(o, "page"));
    r->width = (int)json_integer_value(json_object_get(o, "width"));
    r->height = (int)json_integer_value(json_object_get(o, "height"));
    r->rotation = (int)json_integer_value(json_object_get(o, "rotation"));
    r->skew = json_number_value(json_object_get(o, "skew"));
    r->mean_conf = (float)json_number_value(json_object_get(o, "mean_confidence"));
    r->elapsed_ms = json_number_value(json_object_get(o, "elapsed_ms"));
    r->peak_rss_kb = (long)json_integer_value(json_object_get(o, "peak_rss_kb"));
    size_t i, k;
    json_t *l, *w;
    json_array_foreach(json_object_get(o, "lines"), i, l)
    {
        ocp_result_add_line(r, box_from(json_object_get(l, "bbox")), str_of(l, "text"),
                            (float)json_number_value(json_object_get(l, "confidence")),
                            (int)json_integer_value(json_object_get(l, "block")),
                            (int)json_integer_value(json_object_get(l, "par")));
        json_array_foreach(json_object_get(l, "words"), k, w)
        {
            ocp_result_add_word(r, box_from(json_object_get(w, "bbox")), str_of(w, "text"),
                                (float)json_number_value(json_object_get(w, "confidence")));
        }
    }
    json_decref(o);
    return 0;
}
