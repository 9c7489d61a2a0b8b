/*
 * test_result.c: box rescaling to original pixels, the result JSON, and
 * escaping in the hOCR, ALTO and TSV renderings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "engine/result.h"

static void test_box_rescale(void **state)
{
    (void)state;
    ocp_box b = {10, 20, 30, 40};
    ocp_box o = ocp_box_rescale(b, 2.0, 2.0, 1000, 1000);
    assert_int_equal(o.x1, 20);
    assert_int_equal(o.y1, 40);
    assert_int_equal(o.x2, 60);
    assert_int_equal(o.y2, 80);
    /* Fractions widen: start rounds down, end rounds up. */
    o = ocp_box_rescale(b, 1.5, 1.25, 1000, 1000);
    assert_int_equal(o.x1, 15);
    assert_int_equal(o.y1, 25);
    assert_int_equal(o.x2, 45);
    assert_int_equal(o.y2, 50);
    o = ocp_box_rescale((ocp_box){3, 3, 7, 7}, 1.7, 1.7, 1000, 1000);
    assert_int_equal(o.x1, 5);  /* 5.1 */
    assert_int_equal(o.x2, 12); /* 11.9 */
    /* Clipped to the page. */
    o = ocp_box_rescale((ocp_box){-2, 0, 700, 500}, 2.0, 2.0, 1000, 900);
    assert_int_equal(o.x1, 0);
    assert_int_equal(o.x2, 1000);
    assert_int_equal(o.y2, 900);
    /* Unscaled boxes are unchanged. */
    o = ocp_box_rescale(b, 1.0, 1.0, 1000, 1000);
    assert_memory_equal(&o, &b, sizeof b);
}

static void sample(ocp_result *r)
{
    ocp_result_init(r);
    ocp_result_set(&r->id, "t-1");
    ocp_result_set(&r->source, "a<b>&\"c\".png");
    ocp_result_set(&r->lang, "san+eng");
    ocp_result_set(&r->engine, "tesseract");
    ocp_result_set(&r->text, "धर्म \"x\"\nTab\there\n");
    r->page = 2;
    r->width = 1024;
    r->height = 512;
    r->mean_conf = 91.5f;
    ocp_result_add_line(r, (ocp_box){10, 10, 210, 40}, "धर्म \"x\"", 90.25f, 0, 0);
    ocp_result_add_word(r, (ocp_box){10, 10, 100, 40}, "धर्म", 93.0f);
    ocp_result_add_word(r, (ocp_box){120, 12, 210, 38}, "\"x\"", 87.5f);
    ocp_result_add_line(r, (ocp_box){10, 60, 300, 90}, "Tab\there <&>", 80.0f, 1, 0);
    ocp_result_add_word(r, (ocp_box){10, 60, 100, 90}, "Tab\there", 80.0f);
    ocp_result_add_word(r, (ocp_box){150, 60, 300, 90}, "<&>", 70.0f);
}

static void test_rescale_result(void **state)
{
    (void)state;
    ocp_result r;
    sample(&r);
    ocp_result_rescale(&r, 2.0, 2.0, 2048, 1024);
    assert_int_equal(r.width, 2048);
    assert_int_equal(r.height, 1024);
    assert_int_equal(r.lines[1].bbox.x2, 600);
    assert_int_equal(r.words[3].bbox.x1, 300);
    assert_int_equal(r.words[3].bbox.y2, 180);
    ocp_result_fini(&r);
}

static void test_json(void **state)
{
    (void)state;
    ocp_result r;
    ocp_sb sb;
    json_error_t je;
    sample(&r);
    r.elapsed_ms = 1234.56;
    r.peak_rss_kb = 98765;
    ocp_sb_init(&sb);
    ocp_result_render(&r, OCP_FMT_JSON, &sb);
    json_t *j = json_loads(sb.buf, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "t-1");
    assert_string_equal(json_string_value(json_object_get(j, "source")), "a<b>&\"c\".png");
    assert_int_equal(json_integer_value(json_object_get(j, "page")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "width")), 1024);
    assert_string_equal(json_string_value(json_object_get(j, "text")), "धर्म \"x\"\nTab\there\n");
    assert_true(json_real_value(json_object_get(j, "mean_confidence")) == 91.5);
    assert_int_equal(json_integer_value(json_object_get(j, "peak_rss_kb")), 98765);
    json_t *lines = json_object_get(j, "lines");
    assert_int_equal(json_array_size(lines), 2);
    json_t *l0 = json_array_get(lines, 0);
    json_t *bb = json_object_get(l0, "bbox");
    assert_int_equal(json_array_size(bb), 4);
    assert_int_equal(json_integer_value(json_array_get(bb, 2)), 210);
    assert_true(json_real_value(json_object_get(l0, "confidence")) == 90.25);
    json_t *w1 = json_array_get(json_object_get(l0, "words"), 1);
    assert_string_equal(json_string_value(json_object_get(w1, "text")), "\"x\"");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(w1, "bbox"), 0)), 120);
    /* Keys in the documented order. */
    const char *keys[] = {"id",         "source",     "page", "width",           "height",
                          "lang",       "engine",     "text", "mean_confidence", "lines",
                          "elapsed_ms", "peak_rss_kb"};
    const char *prev = sb.buf;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char k[40];
        snprintf(k, sizeof k, "\"%s\":", keys[i]);
        const char *at = strstr(prev, k);
        assert_non_null(at);
        prev = at;
    }
    json_decref(j);
    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

static void test_markup_escaping(void **state)
{
    (void)state;
    ocp_result r;
    ocp_sb sb;
    sample(&r);
    ocp_sb_init(&sb);
    ocp_result_render(&r, OCP_FMT_HOCR, &sb);
    assert_non_null(strstr(sb.buf, ">&lt;&amp;&gt;</span>"));
    assert_non_null(strstr(sb.buf, ">&quot;x&quot;</span>"));
    assert_non_null(strstr(sb.buf, "bbox 150 60 300 90; x_wconf 70"));
    assert_non_null(strstr(sb.buf, "a&lt;b&gt;&amp;&quot;c&quot;.png"));
    assert_null(strstr(sb.buf, "<&>"));
    /* Two blocks from the lines' block numbers. */
    assert_non_null(strstr(sb.buf, "id=\"block_2_1\""));
    assert_non_null(strstr(sb.buf, "id=\"block_2_2\""));

    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_ALTO, &sb);
    assert_non_null(strstr(sb.buf, "CONTENT=\"&lt;&amp;&gt;\""));
    assert_non_null(
        strstr(sb.buf, "HPOS=\"150\" VPOS=\"60\" WIDTH=\"150\" HEIGHT=\"30\" WC=\"0.70\""));
    assert_non_null(strstr(sb.buf, "<SP WIDTH=\"50\""));

    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_TSV, &sb);
    /* No tab inside a text cell: every row has 12 columns. */
    int tabs = 0, rows = 0;
    for (const char *p = sb.buf; *p; p++) {
        if (*p == '\t')
            tabs++;
        if (*p == '\n') {
            assert_int_equal(tabs, 11);
            tabs = 0;
            rows++;
        }
    }
    /* header, page, 2 blocks, 2 paragraphs, 2 lines, 4 words */
    assert_int_equal(rows, 12);
    assert_non_null(strstr(sb.buf, "\tTab here\n"));

    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_TXT, &sb);
    assert_string_equal(sb.buf, r.text);
    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

static void test_formats(void **state)
{
    (void)state;
    assert_int_equal(ocp_format_parse("txt"), OCP_FMT_TXT);
    assert_int_equal(ocp_format_parse("txt,json,hocr,alto,tsv"), 31);
    assert_int_equal(ocp_format_parse("json,pdf"), -1);
    assert_string_equal(ocp_format_ext(OCP_FMT_ALTO), "xml");
    assert_string_equal(ocp_format_ext(OCP_FMT_HOCR), "hocr");
}

/* A page without lines renders in every format as a page with nothing on it: each
 * rendering on its own, checked for what it must hold and what it must not. */
static void test_empty_page(void **state)
{
    (void)state;
    ocp_result r;
    ocp_sb sb;
    ocp_result_init(&r);
    ocp_result_set(&r.source, "empty.png");
    r.page = 1;
    r.width = 640;
    r.height = 480;
    ocp_sb_init(&sb);

    ocp_result_render(&r, OCP_FMT_TXT, &sb);
    assert_int_equal(sb.len, 0);

    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_JSON, &sb);
    json_t *o = json_loads(sb.buf, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_array(json_object_get(o, "lines")));
    assert_int_equal(json_array_size(json_object_get(o, "lines")), 0);
    assert_int_equal(json_integer_value(json_object_get(o, "width")), 640);
    json_decref(o);
    ocp_result back;
    ocp_result_init(&back);
    assert_int_equal(ocp_result_from_json(&back, sb.buf), 0);
    assert_int_equal(back.n_lines, 0);
    assert_int_equal(back.n_words, 0);
    assert_int_equal(back.height, 480);
    ocp_result_fini(&back);

    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_HOCR, &sb);
    assert_non_null(strstr(sb.buf, "class=\"ocr_page\" id=\"page_1\""));
    assert_non_null(strstr(sb.buf, "bbox 0 0 640 480"));
    assert_null(strstr(sb.buf, "class=\"ocr_carea\""));
    assert_null(strstr(sb.buf, "class=\"ocr_line\""));
    assert_non_null(strstr(sb.buf, "</body>\n</html>\n"));

    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_ALTO, &sb);
    assert_non_null(strstr(sb.buf, "<Page WIDTH=\"640\" HEIGHT=\"480\""));
    assert_null(strstr(sb.buf, "<TextBlock"));
    assert_null(strstr(sb.buf, "<String"));
    assert_non_null(strstr(sb.buf, "</Layout>\n</alto>\n"));

    /* TSV: the header and the page's row, nothing else. */
    ocp_sb_reset(&sb);
    ocp_result_render(&r, OCP_FMT_TSV, &sb);
    const char *page_row = strchr(sb.buf, '\n');
    assert_non_null(page_row);
    assert_string_equal(page_row + 1, "1\t1\t0\t0\t0\t0\t0\t0\t640\t480\t-1\t\n");

    ocp_sb_fini(&sb);
    ocp_result_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_box_rescale), cmocka_unit_test(test_rescale_result),
        cmocka_unit_test(test_json),        cmocka_unit_test(test_markup_escaping),
        cmocka_unit_test(test_formats),     cmocka_unit_test(test_empty_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
