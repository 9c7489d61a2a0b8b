/*
 * test_lstm_model.c: our reader of Tesseract's LSTM models against
 * Debian's real traineddata files (eng, san, tam, hin, the Devanagari and
 * Tamil scripts, which Debian puts beside the languages): the network spec, input height and classes of each, the
 * layer tree of eng, the character set; and a truncated or corrupted model
 * is an error, never a crash (run under ASan by `make asan`).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/model.h"

static const char *tessdata(void)
{
    const char *p = getenv("TESSDATA_PREFIX");
    return p && *p ? p : "/usr/share/tesseract-ocr/5/tessdata";
}

static unsigned char *slurp(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.traineddata", tessdata(), name);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        fail_msg("%s: missing (scripts/install-deps.sh installs Debian's packs)", path);
    char *buf = NULL;
    assert_int_equal(ocp_read_fd(fd, 1u << 30, &buf, len), 0);
    close(fd);
    return (unsigned char *)buf;
}

static void test_debian_models(void **state)
{
    (void)state;
    /* The figures of the project's reference, read from Debian 12's packs. */
    static const struct {
        const char *name, *spec;
        int height, classes;
    } want[] = {
        {"eng", "[1,36,0,1Ct3,3,16Mp3,3Lfys48Lfx96Lrx96Lfx192O1c1]", 36, 111},
        {"san", "[1,36,0,1Ct3,3,16Mp3,3Lfys48Lfx96Lrx96Lfx192O1c1]", 36, 145},
        {"tam", "[1,36,0,1Ct3,3,16Mp3,3Lfys48Lfx96Lrx96Lfx128O1c1]", 36, 99},
        {"hin", "[1,48,0,1Ct3,3,16Mp3,3Lfys64Lfx96Lrx96Lfx384O1c1]", 48, 123},
        {"Devanagari", "[1,36,0,1Ct3,3,16Mp3,3Lfys48Lfx96Lrx96Lfx192O1c1]", 36, 217},
        {"Tamil", "[1,36,0,1Ct3,3,16Mp3,3Lfys64Lfx96Lrx96Lfx192O1c1]", 36, 174},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char path[4096], err[400] = "";
        snprintf(path, sizeof path, "%s/%s.traineddata", tessdata(), want[i].name);
        ocp_lstm_model *m = NULL;
        if (ocp_lstm_model_load(path, &m, err, sizeof err))
            fail_msg("%s: %s", want[i].name, err);
        assert_string_equal(m->spec, want[i].spec);
        assert_int_equal(m->input_height, want[i].height);
        assert_int_equal(m->classes, want[i].classes);
        assert_int_equal(m->training_flags & 1, 1); /* int mode */
        /* The recoder spells each unichar id as codes (classes); one code each here. */
        assert_int_equal(m->recoder.n, m->unicharset.n);
        for (int c = 0; c < m->recoder.n; c++)
            assert_int_equal(m->recoder.length[c], 1); /* no multi-code recoding */
        assert_string_equal(m->unicharset.text[0], " ");
        assert_non_null(m->dawg[1].edges); /* the word list */
        ocp_lstm_model_free(m);
    }
}

static void test_eng_tree(void **state)
{
    (void)state;
    char path[4096], err[400] = "";
    snprintf(path, sizeof path, "%s/eng.traineddata", tessdata());
    ocp_lstm_model *m = NULL;
    if (ocp_lstm_model_load(path, &m, err, sizeof err))
        fail_msg("%s", err);
    ocp_sb sb;
    ocp_sb_init(&sb);
    ocp_lstm_model_describe(m, &sb);
    /* Input | Series{Convolve; Tanh 16x10} | Maxpool | XYTranspose{SummLSTM 48} | LSTM 96 |
     * RTLReversed{LSTM 96} | LSTM 192 | Softmax 111x193 */
    static const char *const lines[] = {
        "Input", "shape=[1,36,0,1]", "Convolve", "half=1,1", "Tanh", "W16x10",
        "Maxpool", "scale=3,3", "XYTranspose", "SummLSTM", "na=64 1-D summarising gates 4x W48x65",
        "LSTM", "W96x145", "RTLReversed", "W96x193", "W192x289", "Softmax", "W111x193"};
    const char *at = sb.buf;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *f = strstr(at, lines[i]);
        if (!f)
            fail_msg("'%s' missing, in order, from:\n%s", lines[i], sb.buf);
        at = f + strlen(lines[i]);
    }
    /* English letters are there, and the null class is the last. */
    int found = 0;
    for (int i = 0; i < m->unicharset.n; i++)
        found += strcmp(m->unicharset.text[i], "Q") == 0;
    assert_int_equal(found, 1);
    assert_int_equal(m->null_char, 110);
    ocp_sb_fini(&sb);
    ocp_lstm_model_free(m);
}

static void test_refuses_what_it_cannot_read(void **state)
{
    (void)state;
    char err[400];
    ocp_lstm_model *m = NULL;
    unsigned char junk[64] = {0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(ocp_lstm_model_load_buffer(junk, sizeof junk, &m, err, sizeof err),
                     OCP_E_FORMAT);
    assert_non_null(strstr(err, "not a traineddata"));
    assert_int_equal(ocp_lstm_model_load_buffer(junk, 2, &m, err, sizeof err), OCP_E_FORMAT);
    assert_non_null(strstr(err, "truncated"));
    /* The orientation model has no LSTM component. */
    size_t len;
    unsigned char *osd = slurp("osd", &len);
    assert_int_equal(ocp_lstm_model_load_buffer(osd, len, &m, err, sizeof err), OCP_E_FORMAT);
    assert_non_null(strstr(err, "no LSTM model"));
    free(osd);
    assert_int_equal(ocp_lstm_model_load("/nonexistent.traineddata", &m, err, sizeof err),
                     -ENOENT);
}

/* A float weight matrix (tessdata_best) is refused with its reason: clearing the int8 flag
 * (1) of a matrix's mode byte somewhere in the network's head must give that refusal. */
static void test_refuses_float_matrices(void **state)
{
    (void)state;
    size_t len, off[OCP_TD_COUNT], size[OCP_TD_COUNT];
    char err[400];
    unsigned char *buf = slurp("eng", &len);
    assert_int_equal(ocp_tessdata_parts(buf, len, off, size, err, sizeof err), 0);
    int found = 0;
    for (size_t k = 0; k < 800 && !found; k++) {
        unsigned char *p = buf + off[OCP_TD_LSTM] + k;
        unsigned char was = *p;
        if (!(was & 1))
            continue;
        *p = (unsigned char)(was & ~1u);
        ocp_lstm_model *m = NULL;
        if (ocp_lstm_model_load_buffer(buf, len, &m, err, sizeof err) == OCP_E_FORMAT &&
            strstr(err, "a float weight matrix (tessdata_best)"))
            found = 1;
        ocp_lstm_model_free(m);
        *p = was;
    }
    assert_true(found);
    free(buf);
}

/* Truncations everywhere, and flipped bytes in the network's structure: always a clean
 * error or a model, never a crash or an out-of-bounds read (ASan watches in make asan). */
static void test_fuzz(void **state)
{
    (void)state;
    size_t len, off[OCP_TD_COUNT], size[OCP_TD_COUNT];
    char err[400];
    unsigned char *buf = slurp("eng", &len);
    assert_int_equal(ocp_tessdata_parts(buf, len, off, size, err, sizeof err), 0);
    assert_true(size[OCP_TD_LSTM] > 100000);
    unsigned char *copy = ocp_xmalloc(len);
    unsigned seed = 12345;
    int ok = 0, refused = 0;
    for (int t = 0; t < 300; t++) {
        memcpy(copy, buf, len);
        size_t n = len;
        seed = seed * 1103515245u + 12345u;
        if (t < 100) {
            /* Cut the file: in the table, in the network's first bytes, anywhere. */
            n = t < 30 ? (size_t)t * 7 : t < 60 ? off[OCP_TD_LSTM] + (size_t)(t - 30) * 13
                                                : (seed >> 4) % len;
        } else {
            /* Flip bytes of the network's head (types, sizes, names) or of the tables. */
            int k = 1 + (int)(seed % 4);
            for (int j = 0; j < k; j++) {
                seed = seed * 1103515245u + 12345u;
                size_t where = t < 250 ? off[OCP_TD_LSTM] + (seed >> 8) % 600
                                       : (seed >> 8) % (off[OCP_TD_LSTM] + 64);
                copy[where] ^= (unsigned char)(1u << (seed % 8));
            }
        }
        ocp_lstm_model *m = NULL;
        int rc = ocp_lstm_model_load_buffer(copy, n, &m, err, sizeof err);
        if (rc == 0) {
            ok++;
            ocp_lstm_model_free(m);
        } else {
            assert_int_equal(rc, OCP_E_FORMAT);
            assert_true(err[0] != '\0');
            refused++;
        }
    }
    print_message("fuzz: %d loaded, %d refused with a reason\n", ok, refused);
    assert_true(refused >= 100); /* every truncation at least */
    free(copy);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debian_models),
        cmocka_unit_test(test_eng_tree),
        cmocka_unit_test(test_refuses_what_it_cannot_read),
        cmocka_unit_test(test_refuses_float_matrices),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
