/*
 * test_cuda.c: the CUDA forward pass (src/gpu/cuda) against the CPU's (engine/lstm/forward.c),
 * bit for bit, on Debian's models and line images of every width class (narrower than the
 * pooling, odd, wide, white, black, noise, text-like strokes).
 *
 * Where there is no GPU (or CUDA is not built) the device cases are skipped with the reason
 * ("skipped: no CUDA device (...)"): cmocka counts them as skipped, not passed. The emulated
 * cases run everywhere CUDA is built: the same kernel bodies, walk, allocator and border
 * values on the CPU (ocp_cuda_open_emulated), which checks the CUDA path's arithmetic and
 * indexing here; the GPU machine's run (scripts/gpu-device-check.sh) checks the rest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/forward.h"
#include "gpu/cuda/cuda_forward.h"
#include "lstm_toy.h"

static const char *tessdata(void)
{
    const char *p = getenv("TESSDATA_PREFIX");
    return p && *p ? p : "/usr/share/tesseract-ocr/5/tessdata";
}

/* Debian's model for lang, or NULL when it is not installed (eng must be). */
static ocp_lstm_model *model(const char *lang)
{
    char path[4096], err[400] = "";
    snprintf(path, sizeof path, "%s/%s.traineddata", tessdata(), lang);
    ocp_lstm_model *m = NULL;
    if (ocp_lstm_model_load(path, &m, err, sizeof err)) {
        if (strcmp(lang, "eng") == 0)
            fail_msg("%s", err);
        return NULL;
    }
    return m;
}

/* A line image w wide, kind 0 text-like strokes on white, 1 white, 2 black, 3 noise over the
 * whole int8 range. */
static int8_t *line_image(int h, int w, int kind, unsigned seed)
{
    int8_t *img = ocp_xmalloc((size_t)h * w);
    for (size_t i = 0; i < (size_t)h * w; i++) {
        seed = seed * 1103515245u + 12345u;
        img[i] = kind == 1 ? 127 : kind == 2 ? -127 : (int8_t)((int)(seed >> 16) % 255 - 127);
    }
    if (kind != 0)
        return img;
    for (size_t i = 0; i < (size_t)h * w; i++)
        img[i] = 127;
    /* Strokes: vertical bars and horizontal runs, grey edges, as letters of a line. */
    for (int x = 0; x < w; x++) {
        seed = seed * 1103515245u + 12345u;
        int r = (int)(seed >> 16) % 100;
        if (r < 30) {
            int top = h / 4 + r % 5, bot = h - h / 5 - r % 4;
            for (int y = top; y < bot && y < h; y++)
                img[(size_t)y * w + x] = (int8_t)(r < 20 ? -127 : r * 4 - 100);
        } else if (r < 45) {
            int y = h / 2 + r % 7 - 3;
            if (y >= 0 && y < h)
                img[(size_t)y * w + x] = -110;
        }
    }
    return img;
}

/* Lines of every width class for model m: *w and the images (free both). */
static int lines_for(const ocp_lstm_model *m, int8_t ***img, int **w)
{
    static const int widths[] = {1, 2, 3, 4, 5, 8, 17, 64, 129, 300, 601, 1001, 33, 250};
    int n = (int)(sizeof widths / sizeof widths[0]);
    *img = ocp_xcalloc((size_t)n, sizeof **img);
    *w = ocp_xcalloc((size_t)n, sizeof **w);
    for (int i = 0; i < n; i++) {
        (*w)[i] = widths[i];
        (*img)[i] = line_image(m->input_height, widths[i], i < 10 ? 0 : i - 9, 77u + i);
    }
    return n;
}

/* Lines [0, n) through ctx in batches of `batch`: each equal to the CPU's. */
static void same_as_cpu(ocp_cuda_ctx *ctx, const ocp_lstm_model *m, int n, int8_t **img,
                        const int *w, int batch)
{
    char err[400];
    float **pr = ocp_xcalloc((size_t)n, sizeof *pr);
    int *st = ocp_xcalloc((size_t)n, sizeof *st);
    for (int a = 0; a < n; a += batch) {
        int k = n - a < batch ? n - a : batch;
        int rc = ocp_cuda_forward_batch(ctx, m, k, (const int8_t *const *)img + a, w + a, pr + a,
                                        st + a, err, sizeof err);
        if (rc)
            fail_msg("batch from line %d: %s", a, err);
    }
    for (int i = 0; i < n; i++) {
        float *cpu = NULL;
        int cs = -1;
        assert_int_equal(ocp_lstm_forward(m, img[i], w[i], &cpu, &cs, err, sizeof err), 0);
        if (st[i] != cs)
            fail_msg("line %d (%d columns): %d steps, the CPU %d", i, w[i], st[i], cs);
        for (size_t j = 0; j < (size_t)cs * m->classes; j++)
            if (memcmp(&pr[i][j], &cpu[j], sizeof(float)))
                fail_msg("line %d (%d columns), step %zu class %zu: %.9g, the CPU %.9g", i, w[i],
                         j / m->classes, j % m->classes, pr[i][j], cpu[j]);
        free(cpu);
        free(pr[i]);
    }
    free(pr);
    free(st);
}

static void free_lines(int n, int8_t **img, int *w)
{
    for (int i = 0; i < n; i++)
        free(img[i]);
    free(img);
    free(w);
}

/* A GPU context, or the reason there is none (then the case is skipped, saying so). */
static ocp_cuda_ctx *device_or_skip(size_t cap, int growth)
{
    ocp_cuda_ctx *ctx = NULL;
    char err[400];
    if (ocp_cuda_open(0, cap, growth, &ctx, err, sizeof err)) {
        print_message("skipped: no CUDA device (%s)\n", err);
        return NULL;
    }
    return ctx;
}

/* Opening fails soft where there is no device (no driver, built without CUDA): an error
 * and its reason, no context, no crash; with a device, the cap is reserved. */
static void test_open(void **state)
{
    (void)state;
    ocp_cuda_ctx *ctx = (ocp_cuda_ctx *)1;
    char err[400] = "";
    int rc = ocp_cuda_open(0, (size_t)64 << 20, 0, &ctx, err, sizeof err);
    if (rc) {
        assert_null(ctx);
        assert_true(err[0] != '\0');
        print_message("no context: %s\n", err);
        if (!ocp_cuda_built())
            assert_string_equal(err, "built without CUDA");
        return;
    }
    assert_int_equal(ocp_cuda_mem_used(ctx), (size_t)64 << 20); /* reserved at open */
    assert_false(ocp_cuda_lost(ctx));
    ocp_cuda_close(ctx);
    /* A cap too small to hold anything is refused. */
    assert_int_equal(ocp_cuda_open(0, 1000, 1, &ctx, err, sizeof err), OCP_E_RANGE);
}

/* The emulated kernels equal the CPU on every installed Debian model, batches of 1, 5 and
 * all the lines. */
static void test_emulated_parity(void **state)
{
    (void)state;
    if (!ocp_cuda_built()) {
        print_message("skipped: built without CUDA\n");
        skip();
    }
    static const char *langs[] = {"eng", "san", "tam", "hin"};
    ocp_cuda_ctx *ctx = NULL;
    char err[400];
    assert_int_equal(ocp_cuda_open_emulated((size_t)512 << 20, 0, &ctx, err, sizeof err), 0);
    for (int l = 0; l < 4; l++) {
        ocp_lstm_model *m = model(langs[l]);
        if (!m) {
            print_message("%s: not installed\n", langs[l]);
            continue;
        }
        int8_t **img;
        int *w, n = lines_for(m, &img, &w);
        same_as_cpu(ctx, m, n, img, w, 1);
        same_as_cpu(ctx, m, n, img, w, 5);
        same_as_cpu(ctx, m, n, img, w, n);
        print_message("%s: %d lines equal to the CPU's\n", langs[l], n);
        ocp_cuda_forget_model(ctx, m);
        free_lines(n, img, w);
        ocp_lstm_model_free(m);
    }
    ocp_cuda_close(ctx);
}

/* Every activation of a fully connected layer (and the softmax after it), on a hand-made
 * model with random weights. */
static void test_emulated_activations(void **state)
{
    (void)state;
    if (!ocp_cuda_built()) {
        print_message("skipped: built without CUDA\n");
        skip();
    }
    static const char *types[] = {"Tanh", "Logistic", "Relu", "Linear"};
    ocp_cuda_ctx *ctx = NULL;
    char err[400];
    assert_int_equal(ocp_cuda_open_emulated((size_t)64 << 20, 1, &ctx, err, sizeof err), 0);
    unsigned seed = 5;
    for (int t = 0; t < 4; t++) {
        ocp_lstm_model *m = toy_model(21, 9);
        snprintf(m->net.children[1].type, sizeof m->net.children[1].type, "%s", types[t]);
        for (int c = 1; c <= 2; c++) {
            ocp_lstm_matrix *x = &m->net.children[c].fc;
            for (int i = 0; i < x->rows * x->cols; i++) {
                seed = seed * 1103515245u + 12345u;
                x->w[i] = (int8_t)((int)(seed >> 16) % 255 - 127);
            }
            for (int i = 0; i < x->rows; i++)
                x->scales[i] = 0.0003f * (float)(i + 1) * (c == 1 ? 1 : 40);
            ocp_lstm_matrix_layout(x); /* the CPU's layout of the new weights */
        }
        int8_t *img[3] = {line_image(1, 50, 3, 1), line_image(1, 7, 3, 2), line_image(1, 1, 3, 3)};
        int w[3] = {50, 7, 1};
        same_as_cpu(ctx, m, 3, img, w, 3);
        for (int i = 0; i < 3; i++)
            free(img[i]);
        ocp_cuda_forget_model(ctx, m);
        ocp_lstm_model_free(m);
    }
    ocp_cuda_close(ctx);
}

/* Under a small cap a batch is split and still equals the CPU's; the allocator never holds
 * more than the cap, with or without growth; growth gives its steps back at trim; a line
 * that cannot fit alone fails with the reason and the context goes on. */
static void test_emulated_cap(void **state)
{
    (void)state;
    if (!ocp_cuda_built()) {
        print_message("skipped: built without CUDA\n");
        skip();
    }
    ocp_lstm_model *m = model("eng");
    enum { N = 10 };
    int8_t *img[N];
    int w[N];
    for (int i = 0; i < N; i++) {
        w[i] = 500 + 37 * i;
        img[i] = line_image(m->input_height, w[i], 0, 900u + i);
    }
    char err[400];
    for (int growth = 0; growth < 2; growth++) {
        ocp_cuda_ctx *ctx = NULL;
        size_t cap = (size_t)6 << 20;
        assert_int_equal(ocp_cuda_open_emulated(cap, growth, &ctx, err, sizeof err), 0);
        same_as_cpu(ctx, m, N, img, w, N);
        ocp_cuda_mem mem;
        ocp_cuda_mem_stats(ctx, &mem);
        print_message("growth %d: cap %zu, peak held %zu, peak in use %zu, %ld splits\n", growth,
                      mem.cap, mem.peak_held, mem.peak_in_use, mem.splits);
        assert_true(mem.splits > 0);
        assert_true(mem.peak_held <= cap && mem.peak_in_use <= cap);
        if (!growth)
            assert_int_equal(mem.held, cap);
        /* A line of 20000 columns does not fit in 6 MB: refused, the context still works. */
        int8_t *wide = line_image(m->input_height, 20000, 1, 3);
        int ww = 20000, st;
        float *pr;
        const int8_t *one = wide;
        assert_int_equal(ocp_cuda_forward_batch(ctx, m, 1, &one, &ww, &pr, &st, err, sizeof err),
                         OCP_E_RANGE);
        assert_non_null(strstr(err, "does not fit under the GPU memory cap"));
        assert_null(pr);
        assert_false(ocp_cuda_lost(ctx));
        same_as_cpu(ctx, m, 3, img, w, 3);
        ocp_cuda_trim(ctx);
        ocp_cuda_mem_stats(ctx, &mem);
        if (growth) /* only the weights' step is left */
            assert_true(mem.held < mem.peak_held);
        free(wide);
        ocp_cuda_close(ctx);
    }
    for (int i = 0; i < N; i++)
        free(img[i]);
    ocp_lstm_model_free(m);
}

/* The CPU path's refusals of a line, in its words: a line of width 0, one over 100000
 * columns. A batch over OCP_LSTM_LINE_BYTES, which the CPU refuses, runs (its tensors are in
 * device memory, under the cap, split): lines of 3000 columns of a model with 16000 values a
 * column, one line more than the CPU takes. */
static void test_emulated_refusals(void **state)
{
    (void)state;
    if (!ocp_cuda_built()) {
        print_message("skipped: built without CUDA\n");
        skip();
    }
    ocp_lstm_model *m = model("eng");
    ocp_cuda_ctx *ctx = NULL;
    char err[400], cpu_err[400];
    assert_int_equal(ocp_cuda_open_emulated((size_t)64 << 20, 1, &ctx, err, sizeof err), 0);
    int8_t *img = line_image(m->input_height, 3000, 0, 1);
    const int8_t *one[1] = {img};
    int w0[1] = {0}, wide[1] = {100001}, st[1];
    float *pr[1];
    assert_int_equal(ocp_cuda_forward_batch(ctx, m, 1, one, w0, pr, st, err, sizeof err),
                     OCP_E_RANGE);
    assert_int_equal(ocp_lstm_forward_batch(m, 1, one, w0, pr, st, cpu_err, sizeof cpu_err),
                     OCP_E_RANGE);
    assert_string_equal(err, cpu_err);
    assert_int_equal(ocp_cuda_forward_batch(ctx, m, 1, one, wide, pr, st, err, sizeof err),
                     OCP_E_RANGE);
    assert_int_equal(ocp_lstm_forward_batch(m, 1, one, wide, pr, st, cpu_err, sizeof cpu_err),
                     OCP_E_RANGE);
    assert_string_equal(err, cpu_err);
    assert_null(pr[0]);
    assert_int_equal(ocp_cuda_forward_batch(ctx, m, 0, one, wide, pr, st, err, sizeof err), 0);
    ocp_lstm_model_free(m);

    ocp_lstm_model *t = toy_model(16000, 3);
    unsigned seed = 9;
    for (int c = 1; c <= 2; c++) {
        ocp_lstm_matrix *x = &t->net.children[c].fc;
        for (int i = 0; i < x->rows * x->cols; i++) {
            seed = seed * 1103515245u + 12345u;
            x->w[i] = (int8_t)((int)(seed >> 16) % 255 - 127);
        }
        for (int i = 0; i < x->rows; i++)
            x->scales[i] = c == 1 ? 0.0001f : 0.00001f;
        ocp_lstm_matrix_layout(x);
    }
    int N = (int)(OCP_LSTM_LINE_BYTES / ocp_lstm_line_bytes(t, 3000)) + 1;
    const int8_t **imgs = ocp_xcalloc((size_t)N, sizeof *imgs);
    int *ws = ocp_xcalloc((size_t)N, sizeof *ws), *sts = ocp_xcalloc((size_t)N, sizeof *sts);
    float **prs = ocp_xcalloc((size_t)N, sizeof *prs);
    for (int i = 0; i < N; i++) {
        imgs[i] = img; /* one row of it */
        ws[i] = 3000;
    }
    assert_int_equal(ocp_lstm_forward_batch(t, N, imgs, ws, prs, sts, cpu_err, sizeof cpu_err),
                     OCP_E_RANGE);
    assert_int_equal(ocp_cuda_forward_batch(ctx, t, N, imgs, ws, prs, sts, err, sizeof err), 0);
    float *cpu;
    int cs;
    assert_int_equal(ocp_lstm_forward(t, img, 3000, &cpu, &cs, err, sizeof err), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(sts[i], cs);
        assert_memory_equal(prs[i], cpu, sizeof(float) * (size_t)cs * t->classes);
        free(prs[i]);
    }
    ocp_cuda_mem mem;
    ocp_cuda_mem_stats(ctx, &mem);
    print_message("%d lines of 3000 columns: refused by the CPU, run by the CUDA path in %ld "
                  "splits\n",
                  N, mem.splits);
    free(cpu);
    free(img);
    free(imgs);
    free(ws);
    free(sts);
    free(prs);
    ocp_cuda_close(ctx);
    ocp_lstm_model_free(t);
}

/* A device that fails mid-batch (an Xid, a lost device: injected here) fails that batch
 * with "GPU lost: ..." and no outputs, marks the context lost, and every later call fails at
 * once with the same reason; the context still closes cleanly. */
static void test_emulated_lost(void **state)
{
    (void)state;
    if (!ocp_cuda_built()) {
        print_message("skipped: built without CUDA\n");
        skip();
    }
    ocp_lstm_model *m = model("eng");
    int8_t **img;
    int *w, n = lines_for(m, &img, &w), failed = 0;
    for (int after = 0; after < 40; after += 3) {
        ocp_cuda_ctx *ctx = NULL;
        char err[400];
        assert_int_equal(ocp_cuda_open_emulated((size_t)64 << 20, after % 2, &ctx, err, sizeof err),
                         0);
        ocp_cuda_inject_fault(ctx, after);
        float *pr[16];
        int st[16];
        int rc = ocp_cuda_forward_batch(ctx, m, n, (const int8_t *const *)img, w, pr, st, err,
                                        sizeof err);
        if (rc == 0) { /* the batch needed fewer operations than `after` */
            for (int i = 0; i < n; i++)
                free(pr[i]);
            ocp_cuda_close(ctx);
            continue;
        }
        failed++;
        assert_int_equal(rc, OCP_E_ENGINE);
        assert_non_null(strstr(err, "GPU lost: injected fault"));
        for (int i = 0; i < n; i++)
            assert_null(pr[i]);
        assert_true(ocp_cuda_lost(ctx));
        assert_int_equal(ocp_cuda_forward_batch(ctx, m, 1, (const int8_t *const *)img, w, pr, st,
                                                err, sizeof err),
                         OCP_E_ENGINE);
        assert_non_null(strstr(err, "GPU lost"));
        assert_int_equal(ocp_cuda_upload_model(ctx, m, err, sizeof err), OCP_E_ENGINE);
        ocp_cuda_close(ctx);
    }
    print_message("a fault at %d points of a batch: each failed it with the reason\n", failed);
    assert_true(failed >= 5);
    free_lines(n, img, w);
    ocp_lstm_model_free(m);
}

/* On the GPU: every installed model's lines equal the CPU's, one at a time and together. */
static void test_device_parity(void **state)
{
    (void)state;
    ocp_cuda_ctx *ctx = device_or_skip((size_t)1 << 30, 0);
    if (!ctx)
        skip();
    static const char *langs[] = {"eng", "san", "tam", "hin"};
    for (int l = 0; l < 4; l++) {
        ocp_lstm_model *m = model(langs[l]);
        if (!m)
            continue;
        int8_t **img;
        int *w, n = lines_for(m, &img, &w);
        same_as_cpu(ctx, m, n, img, w, 1);
        same_as_cpu(ctx, m, n, img, w, n);
        print_message("%s on %s: %d lines equal to the CPU's\n", langs[l],
                      ocp_cuda_device_name(ctx), n);
        free_lines(n, img, w);
        ocp_cuda_forget_model(ctx, m);
        ocp_lstm_model_free(m);
    }
    ocp_cuda_close(ctx);
}

/* On the GPU, under an 8 MB cap with and without growth: split, equal, never over the cap. */
static void test_device_cap(void **state)
{
    (void)state;
    for (int growth = 0; growth < 2; growth++) {
        ocp_cuda_ctx *ctx = device_or_skip((size_t)8 << 20, growth);
        if (!ctx)
            skip();
        ocp_lstm_model *m = model("eng");
        int8_t **img;
        int *w, n = lines_for(m, &img, &w);
        same_as_cpu(ctx, m, n, img, w, n);
        ocp_cuda_mem mem;
        ocp_cuda_mem_stats(ctx, &mem);
        assert_true(mem.peak_held <= mem.cap);
        free_lines(n, img, w);
        ocp_cuda_close(ctx);
        ocp_lstm_model_free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_emulated_parity),
        cmocka_unit_test(test_emulated_activations),
        cmocka_unit_test(test_emulated_cap),
        cmocka_unit_test(test_emulated_refusals),
        cmocka_unit_test(test_emulated_lost),
        cmocka_unit_test(test_device_parity),
        cmocka_unit_test(test_device_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
