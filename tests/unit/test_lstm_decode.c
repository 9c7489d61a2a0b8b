/*
 * test_lstm_decode.c: the dictionaries (src/engine/lstm/dawg.c), the beam
 * search (beam.c) and the batched forward pass (forward.c) of our
 * recognizer: words in and out of Debian's eng dictionaries, corrupt
 * dictionaries refused or walked safely, the beam's choices on hand-made
 * outputs (two of them numbers libtesseract decoded, from the parity runs),
 * and a batch of lines giving each line's outputs bit for bit on every
 * kernel. The decoder as a whole is compared with libtesseract in
 * tests/integration/test_lstm.sh and bench/lstm_parity.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/beam.h"
#include "engine/lstm/dawg.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/model.h"

static ocp_lstm_model *eng;

/* Debian's model for lang, or NULL with the reason on stderr. */
static ocp_lstm_model *load_model(const char *lang)
{
    const char *p = getenv("TESSDATA_PREFIX");
    char path[4096], err[300];
    ocp_lstm_model *m = NULL;
    snprintf(path, sizeof path, "%s/%s.traineddata",
             p && *p ? p : "/usr/share/tesseract-ocr/5/tessdata", lang);
    if (ocp_lstm_model_load(path, &m, err, sizeof err))
        fprintf(stderr, "%s: %s (scripts/install-deps.sh installs Debian's packs)\n", path, err);
    return m;
}

static int load_eng(void **state)
{
    (void)state;
    eng = load_model("eng");
    return eng ? 0 : -1;
}

static int free_eng(void **state)
{
    (void)state;
    ocp_lstm_model_free(eng);
    return 0;
}

/* The unichar ids spelling s in the model (longest match first), or n = -1. */
static int spell(const ocp_lstm_model *m, const char *s, int *ids, int cap)
{
    int n = 0;
    while (*s) {
        size_t len;
        int id = ocp_unicharset_match(&m->unicharset, s, &len);
        if (id < 0 || n == cap)
            return -1;
        ids[n++] = id;
        s += len;
    }
    return n;
}

static int valid(const char *word)
{
    int ids[64], n = spell(eng, word, ids, 64);
    assert_true(n > 0);
    return ocp_dict_valid(&eng->dict, ids, n);
}

static void test_dictionary_words(void **state)
{
    (void)state;
    assert_true(ocp_dict_on(&eng->dict));
    /* Words, words in punctuation (the punctuation dawg's patterns), numbers (the number
     * dawg's digits) */
    const char *yes[] = {"recipient", "Copies", "the", "you", "\"you\".", "(including",
                         "medium),", "Copies.", "1990", "1990s", "3.14", "customary"};
    const char *no[] = {"reciplent", "Coples", "qzxv", "you\"\"\"(", "the1", "(("};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        assert_true(valid(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        assert_false(valid(no[i]));
    /* A word that goes on is no word's end yet: "customar" leads on, ends nowhere. */
    int ids[16], n = spell(eng, "customar", ids, 16);
    ocp_dict_state a, b;
    ocp_dict_start(&a);
    for (int i = 0; i < n; i++) {
        assert_true(ocp_dict_letter(&eng->dict, &a, ids[i], &b) > 0);
        a = b;
    }
    assert_false(ocp_dict_word_end(&eng->dict, &a));
}

/* Counts the words; the first 5000 (and every 50th after) must be words the dictionary walk
 * accepts: the enumeration and the walk read the same structure two ways. */
typedef struct word_check {
    long words, checked, refused;
} word_check;

static int check_word(const int *ids, int n, void *arg)
{
    word_check *c = arg;
    if (c->words++ < 5000 || c->words % 50 == 0) {
        c->checked++;
        c->refused += !ocp_dict_valid(&eng->dict, ids, n);
    }
    return 0;
}

static int no_check(const int *ids, int n, void *arg)
{
    (void)ids;
    (void)n;
    (void)arg;
    return 0;
}

static void test_dawg_sizes(void **state)
{
    (void)state;
    word_check c = {0};
    long visited = ocp_dawg_words(&eng->dawg[1], check_word, &c);
    assert_int_equal(visited, c.words);
    print_message("eng word dawg: %ld words, %ld walked, %ld refused\n", c.words, c.checked,
                  c.refused);
    assert_true(c.words > 300000);
    assert_true(c.checked > 10000);
    assert_int_equal(c.refused, 0);
    /* The punctuation and number dawgs hold patterns (the space for a word or a digit). */
    assert_true(ocp_dawg_words(&eng->dawg[0], no_check, NULL) > 100);
    assert_true(ocp_dawg_words(&eng->dawg[2], no_check, NULL) > 100);
}

static int stop_after(const int *ids, int n, void *arg)
{
    (void)ids;
    (void)n;
    return ++*(long *)arg >= 20000;
}

/* Truncated and flipped dictionaries: refused with a reason, or read and walked without an
 * out-of-bounds access (ASan watches in make asan). */
static void test_dawg_fuzz(void **state)
{
    (void)state;
    const ocp_dawg *src = &eng->dawg[0];
    size_t len = 10 + (size_t)src->n * 8;
    unsigned char *orig = ocp_xmalloc(len), *buf = ocp_xmalloc(len);
    int16_t magic = 42;
    int32_t size = src->unichars, n = (int32_t)src->n;
    memcpy(orig, &magic, 2);
    memcpy(orig + 2, &size, 4);
    memcpy(orig + 6, &n, 4);
    memcpy(orig + 10, src->edges, (size_t)src->n * 8);
    char err[300];
    ocp_dawg d;
    assert_int_equal(ocp_dawg_read(orig, len, size, 0, &d, err, sizeof err), 0);
    ocp_dawg_fini(&d);
    int ok = 0, refused = 0;
    unsigned seed = 7;
    int ids[8] = {0};
    for (int t = 0; t < 400; t++) {
        memcpy(buf, orig, len);
        size_t l = len;
        seed = seed * 1103515245u + 12345u;
        if (t < 100) {
            l = (seed >> 4) % len;
        } else {
            /* Flip bits of edges: most often in the letter, flags and the low bits of the
             * next node, where a corrupt file still passes the checks and gets walked. */
            for (int j = 0; j < 3; j++) {
                seed = seed * 1103515245u + 12345u;
                size_t e = (seed >> 8) % (size_t)src->n, bit = (seed >> 3) % 16;
                if (t % 4 == 0)
                    buf[(seed >> 8) % len] ^= (unsigned char)(1u << (seed % 8));
                else
                    buf[10 + e * 8 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
            }
        }
        if (ocp_dawg_read(buf, l, size, 0, &d, err, sizeof err)) {
            assert_true(err[0] != '\0');
            refused++;
            continue;
        }
        ok++;
        long seen = 0;
        ocp_dawg_words(&d, stop_after, &seen);
        ocp_dict dict = {&d, &eng->dawg[1], &eng->dawg[2], eng->unicharset.is_digit};
        for (int k = 0; k < 8; k++)
            ids[k] = 1 + (int)((seed >> k) % (unsigned)(size - 1));
        ocp_dict_valid(&dict, ids, 8);
        ocp_dawg_fini(&d);
    }
    print_message("dawg fuzz: %d read, %d refused with a reason\n", ok, refused);
    assert_true(refused >= 90);
    free(orig);
    free(buf);
}

/* A model of 4 classes: " ", "n", "h" with codes 0, 1, 2, and the null 3. */
static char *tiny_text[3] = {" ", "n", "h"};
static char *tiny_script[3] = {"", "", ""};
static int tiny_len[3] = {1, 1, 1};
static int tiny_c0[1] = {0}, tiny_c1[1] = {1}, tiny_c2[1] = {2};
static int *tiny_codes[3] = {tiny_c0, tiny_c1, tiny_c2};

static void tiny_model(ocp_lstm_model *m)
{
    memset(m, 0, sizeof *m);
    m->classes = 4;
    m->null_char = 3;
    m->unicharset = (ocp_unicharset){.n = 3, .text = tiny_text, .script = tiny_script};
    m->recoder = (ocp_recoder){.n = 3, .length = tiny_len, .code = tiny_codes};
    ocp_lstm_model_index(m); /* free(m->code_uni) after */
}

/* Clear steps of the tiny model: n n null n h null space h, each class at 0.9. */
static void clear_steps(float probs[8 * 4])
{
    static const int best[] = {1, 1, 3, 1, 2, 3, 0, 2};
    for (int s = 0; s < 8; s++)
        for (int k = 0; k < 4; k++)
            probs[s * 4 + k] = k == best[s] ? 0.9f : 0.1f / 3;
}

static void test_greedy(void **state)
{
    (void)state;
    ocp_lstm_model m;
    tiny_model(&m);
    float probs[8 * 4];
    clear_steps(probs);
    ocp_lstm_char *chars;
    int n;
    ocp_lstm_greedy_chars(&m, probs, 8, &chars, &n);
    char *t = ocp_lstm_chars_text(chars, n);
    assert_string_equal(t, "nnh h"); /* a null between two n: two */
    free(t);
    assert_int_equal(n, 5);
    assert_int_equal(chars[0].first, 0);
    assert_int_equal(chars[0].last, 1); /* the first n over steps 0-1 */
    assert_int_equal(chars[1].first, 3);
    assert_string_equal(chars[3].text, " ");
    assert_true(ocp_lstm_mean_best(&m, probs, 8) > 0.9f - 1e-6f &&
                ocp_lstm_mean_best(&m, probs, 8) < 0.9f + 1e-6f);
    free(chars);
    /* Two space characters in a row make an empty word, two spaces (libtesseract's text);
     * none at the ends. */
    ocp_lstm_char sp[6] = {{.text = " "}, {.text = "n"}, {.text = " "},
                           {.text = " "}, {.text = "h"}, {.text = " "}};
    t = ocp_lstm_chars_text(sp, 6);
    assert_string_equal(t, "n  h");
    free(t);
    free(m.code_uni);
}

static char *decode(const ocp_lstm_model *m, const float *probs, int steps, int dict)
{
    ocp_lstm_char *chars;
    int n;
    ocp_lstm_beam(m, probs, steps, dict, &chars, &n);
    char *t = ocp_lstm_chars_text(chars, n);
    free(chars);
    return t;
}

static void test_beam_alignments(void **state)
{
    (void)state;
    ocp_lstm_model m;
    tiny_model(&m);
    float probs[8 * 4];
    clear_steps(probs);
    char *t = decode(&m, probs, 8, 0); /* as the greedy reading */
    assert_string_equal(t, "nnh h");
    free(t);
    /* From a parity line ("pnysical"): n then h at adjacent steps, each barely the best;
     * greedy reads "nh", libtesseract's beam (and ours) "n": the n takes the null's share
     * of its first step and goes on. */
    float amb[] = {0.0249f, 0.0507f, 0.0001f, 0.9242f, /* null n h: null */
                   0.6885f, 0.2862f, 0.0015f, 0.0238f, /* n */
                   0.4970f, 0.4981f, 0.0027f, 0.0022f, /* h, n a hair behind */
                   0.0443f, 0.0443f, 0.0008f, 0.9106f};
    /* columns: n h space null -> reorder into class order n=1 h=2 space=0 null=3 */
    float p2[4 * 4];
    for (int s = 0; s < 4; s++) {
        p2[s * 4 + 1] = amb[s * 4 + 0];
        p2[s * 4 + 2] = amb[s * 4 + 1];
        p2[s * 4 + 0] = amb[s * 4 + 2];
        p2[s * 4 + 3] = amb[s * 4 + 3];
    }
    ocp_lstm_char *gc;
    int gn;
    ocp_lstm_greedy_chars(&m, p2, 4, &gc, &gn);
    char *g = ocp_lstm_chars_text(gc, gn);
    assert_string_equal(g, "nh");
    free(g);
    free(gc);
    t = decode(&m, p2, 4, 0);
    assert_string_equal(t, "n");
    free(t);
    /* A character second best at the last step only is not made from the null's share of
     * that step: the line ends before it could go on. */
    float tail[] = {0.01f, 0.9f, 0.01f, 0.08f, 0.005f, 0.005f, 0.15f, 0.84f};
    t = decode(&m, tail, 2, 0);
    assert_string_equal(t, "n");
    free(t);
    free(m.code_uni);
}

/* Steps spelling s in the eng model, each character over two steps then a null; where s
 * has '|', the character before and after it share their steps (p 0.6 and 0.4). */
static int spell_steps(const char *s, float *probs, int cap)
{
    int st = 0, C = eng->classes;
    for (const char *p = s; *p && st + 3 <= cap;) {
        char a[8] = {0}, b[8] = {0};
        a[0] = *p++;
        int two = *p == '|';
        if (two) {
            b[0] = p[1];
            p += 2;
        }
        int ia[1] = {0}, ib[1] = {0};
        assert_int_equal(spell(eng, a, ia, 1), 1);
        int ca = eng->recoder.code[ia[0]][0], cb = -1;
        if (two) {
            assert_int_equal(spell(eng, b, ib, 1), 1);
            cb = eng->recoder.code[ib[0]][0];
        }
        for (int k = 0; k < 3; k++, st++) {
            float *q = probs + (size_t)st * C;
            for (int j = 0; j < C; j++)
                q[j] = 0.001f / (float)C;
            if (k == 2) {
                q[eng->null_char] = 0.999f;
            } else if (two) {
                q[ca] = 0.6f;
                q[cb] = 0.399f;
            } else {
                q[ca] = 0.999f;
            }
        }
    }
    return st;
}

static void test_beam_dictionary(void **state)
{
    (void)state;
    float *probs = ocp_xmalloc(sizeof(float) * 64 * (size_t)eng->classes);
    /* "Copies" with its i read as l a little more likely: the dictionary reads Copies. */
    int steps = spell_steps("Copl|ies", probs, 64);
    char *t = decode(eng, probs, steps, 0);
    assert_string_equal(t, "Coples");
    free(t);
    t = decode(eng, probs, steps, 1);
    assert_string_equal(t, "Copies");
    free(t);
    /* Not every doubt goes the dictionary's way: a likely reading outside it stands
     * ("Zx" is no word; "Zx." no pattern). */
    steps = spell_steps("Zx.", probs, 64);
    t = decode(eng, probs, steps, 1);
    assert_string_equal(t, "Zx.");
    free(t);
    free(probs);
}

/* The config's character lists: hin's blacklists "1" (its network confuses it with the
 * danda), and the beam never writes a disabled character. */
static void test_char_lists(void **state)
{
    (void)state;
    ocp_lstm_model *hin = load_model("hin");
    assert_non_null(hin);
    int one[1] = {0}, two[1] = {0};
    assert_int_equal(spell(hin, "1", one, 1), 1);
    assert_int_equal(spell(hin, "2", two, 1), 1);
    assert_false(hin->enabled[one[0]]);
    assert_true(hin->enabled[two[0]]);
    for (int i = 0; i < eng->unicharset.n; i++)
        assert_true(eng->enabled[i]); /* eng's config has no lists */
    /* Steps where "1" is the likeliest class, "2" second: the beam writes "2". */
    int C = hin->classes;
    float *probs = ocp_xcalloc((size_t)3 * C, sizeof *probs);
    for (int s = 0; s < 3; s++) {
        float *q = probs + (size_t)s * C;
        if (s == 2) {
            q[hin->null_char] = 1.0f;
            continue;
        }
        q[hin->recoder.code[one[0]][0]] = 0.6f;
        q[hin->recoder.code[two[0]][0]] = 0.4f;
    }
    char *t = decode(hin, probs, 3, 0);
    assert_string_equal(t, "2");
    free(t);
    free(probs);
    ocp_lstm_model_free(hin);
}

static void test_batch_bit_for_bit(void **state)
{
    (void)state;
    int w[3] = {173, 50, 311};
    int8_t *img[3];
    unsigned seed = 99;
    for (int i = 0; i < 3; i++) {
        img[i] = ocp_xmalloc((size_t)eng->input_height * w[i]);
        for (int k = 0; k < eng->input_height * w[i]; k++) {
            seed = seed * 1103515245u + 12345u;
            /* text-like: mostly white, some black strokes */
            img[i][k] = (seed >> 16) % 7 == 0 ? -127 : 127;
        }
    }
    char err[300];
    float *one[3];
    int steps1[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            ocp_lstm_forward(eng, img[i], w[i], &one[i], &steps1[i], err, sizeof err), 0);
    for (int cap = 2; cap >= 0; cap--) {
        int old = ocp_lstm_kernel_cap(cap);
        float *batch[3];
        int steps[3];
        assert_int_equal(ocp_lstm_forward_batch(eng, 3, (const int8_t *const *)img, w, batch,
                                                steps, err, sizeof err), 0);
        print_message("batch of 3 on the %s kernel\n", ocp_lstm_kernel_name());
        for (int i = 0; i < 3; i++) {
            assert_int_equal(steps[i], w[i] / 3);
            assert_int_equal(steps[i], steps1[i]);
            assert_memory_equal(batch[i], one[i],
                                sizeof(float) * (size_t)steps[i] * eng->classes);
            free(batch[i]);
        }
        ocp_lstm_kernel_cap(old);
    }
    float *probs[2];
    int steps[2], bw[2] = {10, 0};
    const int8_t *bi[2] = {img[0], img[0]};
    assert_int_equal(ocp_lstm_forward_batch(eng, 2, bi, bw, probs, steps, err, sizeof err),
                     OCP_E_RANGE); /* a line of width 0 */
    assert_null(probs[0]);
    for (int i = 0; i < 3; i++) {
        free(one[i]);
        free(img[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dictionary_words), cmocka_unit_test(test_dawg_sizes),
        cmocka_unit_test(test_dawg_fuzz),        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_beam_alignments),  cmocka_unit_test(test_beam_dictionary),
        cmocka_unit_test(test_char_lists),       cmocka_unit_test(test_batch_bit_for_bit),
    };
    return cmocka_run_group_tests(tests, load_eng, free_eng);
}
