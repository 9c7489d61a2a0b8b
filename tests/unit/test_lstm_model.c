/*
 * test_lstm_model.c: our reader of Tesseract's LSTM models against
 * Debian's real traineddata files (eng, san, tam, hin, the Devanagari and
 * Tamil scripts, which Debian puts beside the languages): the network spec, input height and classes of each, the
 * layer tree of eng, the character set; and a truncated or corrupted model
 * is an error, never a crash (run under ASan by `make asan`). Crafted copies
 * of eng (issue 15, point 5: sizes that disagree, counts larger than the file,
 * cuts walked through every component, a network of many nodes) are refused
 * at load with a reason, without allocating what the file claims.
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
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/util.h"
#include "engine/lstm/beam.h"
#include "engine/lstm/forward.h"
#include "engine/lstm/model.h"
#include "lstm_toy.h"

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
        /* The caps leave room: 4 times the classes, the widest line the forward pass takes
         * (100000 columns) under what a line may hold. */
        assert_true(4 * m->classes <= OCP_LSTM_MAX_CLASSES);
        double pc, fx;
        assert_int_equal(ocp__lstm_line_cost(m, &pc, &fx, err, sizeof err), 0);
        print_message("%s: %d classes, %.0f bytes a column, %.0f a line: %.0f MB at 100000\n",
                      want[i].name, m->classes, pc, fx, (pc * 100000 + fx) / (1 << 20));
        if (ocp_lstm_line_fits(m, 100000, err, sizeof err))
            fail_msg("%s: %s", want[i].name, err);
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

/* A model that loaded runs: a line through the network and both decoders, which read the
 * probabilities as the model's sizes say (a clean error from the forward pass is allowed,
 * a read past an array is not: ASan watches). */
static void run_a_line(const ocp_lstm_model *m)
{
    int w = 61, steps = 0;
    int8_t *img = ocp_xmalloc((size_t)m->input_height * w);
    for (int i = 0; i < m->input_height * w; i++)
        img[i] = (int8_t)((i * 37 % 255) - 127);
    float *probs = NULL;
    char err[400];
    if (ocp_lstm_forward(m, img, w, &probs, &steps, err, sizeof err) == 0) {
        ocp_lstm_char *chars = NULL;
        int n = 0;
        ocp_lstm_beam(m, probs, steps, 1, &chars, &n);
        free(chars);
        ocp_lstm_greedy_chars(m, probs, steps, &chars, &n);
        free(chars);
    }
    free(probs);
    free(img);
}

/* Issue 15, point 5: a model whose sizes agree but whose softmax has 2000 classes (the bound
 * per layer let 16384 through: 6.5 GB of float probabilities for a line of 100000 columns) is
 * refused; 1024 classes pass. */
static void test_refuses_too_many_classes(void **state)
{
    (void)state;
    char err[400] = "";
    ocp_lstm_model *m = toy_model(0, 2000);
    assert_int_equal(ocp__lstm_model_check(m, err, sizeof err), OCP_E_FORMAT);
    if (!strstr(err, "2000 classes, more than 1024"))
        fail_msg("refused with '%s'", err);
    ocp_lstm_model_free(m);
    m = toy_model(0, 1024);
    if (ocp__lstm_model_check(m, err, sizeof err))
        fail_msg("1024 classes: %s", err);
    ocp_lstm_model_free(m);
}

/* Truncations everywhere, and flipped bytes in the network's structure: always a clean
 * error or a model that runs, never a crash or an out-of-bounds read (ASan watches in make
 * asan). */
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
            run_a_line(m);
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

/* ---- crafted models: the sizes of a real model patched --------------------------------
 * The test reads the network's layout itself (the format of the project's reference), to
 * find where each node's fields are, then patches them in a copy of eng and checks that
 * the loader refuses the copy with a reason that names the disagreement. */

typedef struct tnode {
    char type[24], name[64];
    size_t at_ni, at_no, at_nw; /* where the node's ni, no and num_weights are */
    size_t at_count;            /* Series, ...: its child count */
    size_t at_shape;            /* Input: its 5 x int32 shape */
    size_t at_matrix;           /* Tanh, Softmax, ...: its weight matrix's mode byte */
} tnode;

static uint32_t get32(const unsigned char *b, size_t at)
{
    uint32_t v;
    memcpy(&v, b + at, 4);
    return v;
}

static void put32(unsigned char *b, size_t at, uint32_t v)
{
    memcpy(b + at, &v, 4);
}

static size_t skip_matrix(const unsigned char *b, size_t p)
{
    size_t rows = get32(b, p + 1), cols = get32(b, p + 5);
    p += 10 + rows * cols;
    return p + 4 + (size_t)get32(b, p) * 8;
}

static int is_one_of(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

/* The node at p and its children into out[*n...]; returns where the node ends. */
static size_t walk_node(const unsigned char *b, size_t p, tnode *out, int *n)
{
    static const char *const boxes[] = {"Series",   "Parallel",    "XYTranspose", "RTLReversed",
                                        "Reversed", "TTBReversed", NULL};
    static const char *const fcs[] = {"Tanh",    "Logistic",     "Relu", "Linear",
                                      "Softmax", "SoftmaxNoCTC", NULL};
    assert_true(*n < 64);
    tnode *t = &out[(*n)++];
    memset(t, 0, sizeof *t);
    uint32_t k = get32(b, p + 1);
    assert_true(k < sizeof t->type);
    memcpy(t->type, b + p + 5, k);
    p += 5 + k + 2;
    uint32_t flags = get32(b, p);
    t->at_ni = p + 4;
    t->at_no = p + 8;
    t->at_nw = p + 12;
    p += 16;
    k = get32(b, p);
    assert_true(k < sizeof t->name);
    memcpy(t->name, b + p + 4, k);
    p += 4 + k;
    if (is_one_of(t->type, boxes)) {
        uint32_t c = get32(b, p);
        t->at_count = p;
        p += 4;
        for (uint32_t i = 0; i < c; i++)
            p = walk_node(b, p, out, n);
        if (flags & 64)
            p += 4 + (size_t)get32(b, p) * 4;
    } else if (strcmp(t->type, "Input") == 0) {
        t->at_shape = p;
        p += 20;
    } else if (strcmp(t->type, "Convolve") == 0 || strcmp(t->type, "Maxpool") == 0) {
        p += 8;
    } else if (is_one_of(t->type, fcs)) {
        t->at_matrix = p;
        p = skip_matrix(b, p);
    } else { /* LSTM, SummLSTM: na, then 4 gates (Debian's are 1-D) */
        p += 4;
        for (int g = 0; g < 4; g++)
            p = skip_matrix(b, p);
    }
    return p;
}

/* eng's file, its components, and its network's nodes. */
typedef struct eng_file {
    unsigned char *buf;
    size_t len, off[OCP_TD_COUNT], size[OCP_TD_COUNT];
    tnode node[64];
    int n;
} eng_file;

static void eng_open(eng_file *e)
{
    char err[400];
    e->buf = slurp("eng", &e->len);
    assert_int_equal(ocp_tessdata_parts(e->buf, e->len, e->off, e->size, err, sizeof err), 0);
    e->n = 0;
    size_t end = walk_node(e->buf, e->off[OCP_TD_LSTM], e->node, &e->n);
    assert_true(end < e->off[OCP_TD_LSTM] + e->size[OCP_TD_LSTM]);
}

static const tnode *eng_node(const eng_file *e, const char *name)
{
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->node[i].name, name) == 0)
            return &e->node[i];
    fail_msg("eng has no node '%s'", name);
    return NULL;
}

/* buf must be refused as a format error whose reason holds each of the strings given. */
static void refused(const unsigned char *buf, size_t len, const char *want, const char *want2)
{
    char err[400] = "";
    ocp_lstm_model *m = NULL;
    int rc = ocp_lstm_model_load_buffer(buf, len, &m, err, sizeof err);
    ocp_lstm_model_free(m);
    if (rc != OCP_E_FORMAT)
        fail_msg("loaded (rc %d), expected a refusal naming '%s'", rc, want);
    if (!strstr(err, want) || (want2 && !strstr(err, want2)))
        fail_msg("refused with '%s', expected '%s' and '%s'", err, want, want2 ? want2 : "");
    print_message("refused: %s\n", err);
}

/* Patches one int32 of eng, expects the refusal, and puts the value back. */
static void refused_with(eng_file *e, size_t at, uint32_t v, const char *want, const char *want2)
{
    uint32_t was = get32(e->buf, at);
    put32(e->buf, at, v);
    refused(e->buf, e->len, want, want2);
    put32(e->buf, at, was);
}

/* Issue 15, point 5: the top network's outputs set to 65536, the softmax left at 111. The
 * model loaded, and the decoder read the probabilities 65536 apart: a read past them that
 * crashed workers. It must be refused at load, saying which sizes disagree. */
static void test_refuses_classes_beyond_the_softmax(void **state)
{
    (void)state;
    eng_file e;
    eng_open(&e);
    const tnode *top = &e.node[0];
    assert_string_equal(top->type, "Series");
    assert_int_equal(get32(e.buf, top->at_no), 111);
    refused_with(&e, top->at_no, 65536, "outputs 111", "65536");
    /* And the other way round: the softmax grown, the network's count left. */
    const tnode *out = eng_node(&e, "Output");
    refused_with(&e, out->at_no, 112, "112", NULL);
    /* Unchanged, it loads. */
    ocp_lstm_model *m = NULL;
    char err[400];
    assert_int_equal(ocp_lstm_model_load_buffer(e.buf, e.len, &m, err, sizeof err), 0);
    ocp_lstm_model_free(m);
    free(e.buf);
}

/* Sizes of a layer that disagree with its neighbours or with the rest of the file. */
static void test_refuses_sizes_that_disagree(void **state)
{
    (void)state;
    eng_file e;
    eng_open(&e);
    /* A layer's inputs are not the previous layer's outputs. */
    refused_with(&e, eng_node(&e, "Maxpool")->at_ni, 17, "outputs 16",
                 "'Maxpool' (Maxpool) takes 17");
    refused_with(&e, eng_node(&e, "ConvSeries")->at_ni, 2, "takes 2", NULL);
    refused_with(&e, eng_node(&e, "Convolve")->at_no, 10, "Convolve", "outputs 10");
    refused_with(&e, eng_node(&e, "RevLSTM")->at_no, 95, "95", NULL);
    /* The Input's shape against its own ni and what the engine feeds (grey lines). */
    const tnode *in = eng_node(&e, "Input");
    refused_with(&e, in->at_shape + 4, 40, "shape says 40 rows", NULL);
    refused_with(&e, in->at_shape + 12, 3, "depth 3", NULL);
    refused_with(&e, in->at_shape + 4, 0, "0 rows high", NULL);
    /* num_weights against the matrices. */
    refused_with(&e, eng_node(&e, "ConvNL")->at_nw, 161, "'ConvNL' (Tanh) says it has 161 weights",
                 "160");
    /* A weight matrix larger than what is left of the file: refused before anything is
     * allocated for it. */
    const tnode *out = eng_node(&e, "Output");
    put32(e.buf, out->at_no, 60000);
    put32(e.buf, e.node[0].at_no, 60000);
    refused_with(&e, out->at_matrix + 1, 60000, "truncated", "11580000 bytes");
    put32(e.buf, out->at_no, 111);
    put32(e.buf, e.node[0].at_no, 111);
    /* The null class and the recoder's codes against the classes. In eng the null is class
     * 110, and unichars 1 and 2 (Joined, Broken) are spelled with it; every entry is 9 bytes
     * (self-normalised, length 1, the code). */
    size_t trailer = e.off[OCP_TD_LSTM] + e.size[OCP_TD_LSTM] - 28; /* 4 int32, 3 floats */
    size_t rec = e.off[OCP_TD_LSTM_RECODER] + 4;
    assert_int_equal(get32(e.buf, trailer + 12), 110);
    assert_int_equal(get32(e.buf, rec + 9 + 5), 110);
    assert_int_equal(get32(e.buf, rec + 18 + 5), 110);
    refused_with(&e, trailer + 12, 111, "null char 111", NULL);
    refused_with(&e, rec + 9 + 5, 111, "recoder entry 1: code 111 outside 111", NULL);
    /* The null and those two moved to 109: class 110 is spelled by nothing, the softmax
     * outputs one class more than the recoder and the null need. */
    put32(e.buf, rec + 9 + 5, 109);
    put32(e.buf, rec + 18 + 5, 109);
    refused_with(&e, trailer + 12, 109, "outputs 111 classes", "need 110");
    put32(e.buf, rec + 9 + 5, 110);
    put32(e.buf, rec + 18 + 5, 110);
    /* A dictionary with a letter beyond the unicharset (112 unichars: 7 letter bits). */
    size_t edge0 = e.off[OCP_TD_LSTM_PUNC_DAWG] + 10;
    unsigned char was = e.buf[edge0];
    e.buf[edge0] = (unsigned char)((was & 0x80) | 120);
    refused(e.buf, e.len, "lstm-punc-dawg", "letter 120 of 112");
    e.buf[edge0] = was;
    /* The recoder's size against the unicharset's. */
    refused_with(&e, e.off[OCP_TD_LSTM_RECODER], 111, "recoder", NULL);
    free(e.buf);
}

/* Counts of 2^31 in a 4 MB file fail at once: checked against the bytes left before any
 * allocation. Run in a child whose address space (or, under ASan, whose largest
 * allocation) is bounded: an allocation of what the file claims would abort it. */
static void huge_counts(eng_file *e)
{
    refused_with(e, 0, 0x7fffffff, "components", NULL);
    /* A dictionary with 2^31 edges. */
    refused_with(e, e->off[OCP_TD_LSTM_RECODER], 0x7fffffff, "recoder", NULL);
    refused_with(e, e->off[OCP_TD_LSTM_WORD_DAWG] + 6, 0x7fffffff, "edges", NULL);
    /* The top Series' child count (just after its name). */
    refused_with(e, e->node[0].at_count, 0x7fffffff, "children", NULL);
    /* The unicharset's count line: "112\nNULL 0 " -> "2000000000\n". */
    unsigned char *u = e->buf + e->off[OCP_TD_LSTM_UNICHARSET];
    unsigned char keep[11];
    memcpy(keep, u, 11);
    memcpy(u, "2000000000\n", 11);
    refused(e->buf, e->len, "unicharset: 2000000000 entries", NULL);
    memcpy(u, keep, 11);
}

/* In a child: an allocation of more than 256 MB from here on fails, and ocp_xmalloc then
 * aborts (under ASan, max_allocation_size_mb below bounds one allocation). */
static void bound_address_space(void)
{
#ifndef __SANITIZE_ADDRESS__
    /* What the process maps now (the file, cmocka, libraries), plus 256 MB. */
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f && fscanf(f, "%lu", &pages) == 1) {
        rlim_t max = pages * (unsigned long)sysconf(_SC_PAGESIZE) + (256u << 20);
        struct rlimit rl = {max, max};
        setrlimit(RLIMIT_AS, &rl);
    }
    if (f)
        fclose(f);
#endif
}

#ifdef __SANITIZE_ADDRESS__
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=256";
}
#endif

/* Runs fn(arg) in a child whose address space is bounded (a huge allocation kills it);
 * fails the test unless the child exits 0. */
static void in_bounded_child(void (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        bound_address_space();
        fn(arg);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the child %s %d", WIFEXITED(st) ? "exited" : "died of signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static void huge_counts_of(void *e)
{
    huge_counts(e);
}

typedef struct refused_arg {
    unsigned char *buf;
    size_t len;
} refused_arg;

static void many_nodes_of(void *arg)
{
    refused_arg *ra = arg;
    refused(ra->buf, ra->len, "more than 1024 nodes", NULL);
}

static void test_huge_counts_fail_cheaply(void **state)
{
    (void)state;
    eng_file e;
    eng_open(&e);
    assert_int_equal(get32(e.buf, e.node[0].at_count), 8);
    fflush(NULL);
    in_bounded_child(huge_counts_of, &e);
    free(e.buf);
}

/* The file cut at k bytes: refused, unless the cut falls in the version string, the last
 * component (a shorter version is still a version). */
static void cut_file(const eng_file *e, size_t k, int *n)
{
    char err[400] = "";
    ocp_lstm_model *m = NULL;
    int rc = ocp_lstm_model_load_buffer(e->buf, k, &m, err, sizeof err);
    ocp_lstm_model_free(m);
    if (k <= e->off[OCP_TD_VERSION] && (rc != OCP_E_FORMAT || !err[0]))
        fail_msg("eng cut at byte %zu of %zu: rc %d '%s'", k, e->len, rc, err);
    (*n)++;
}

/* Component c cut to k bytes, the components after it moved up: every cut is refused. The
 * file is built in tmp, a copy of the file: what follows c stays where it is, and for each
 * k only the part before the cut is copied in front of it, ending where c ended. */
static void cut_component(const eng_file *e, unsigned char *tmp, int c, size_t k, int *n)
{
    size_t rest = e->len - (e->off[c] + e->size[c]);
    size_t start = e->size[c] - k; /* the cut file begins here in tmp */
    unsigned char *f = tmp + start;
    memcpy(f, e->buf, e->off[c] + k);
    int32_t count;
    memcpy(&count, f, 4);
    for (int32_t i = 0; i < count; i++) {
        int64_t o;
        memcpy(&o, f + 4 + 8 * (size_t)i, 8);
        if (o != -1 && (size_t)o > e->off[c]) {
            o -= (int64_t)(e->size[c] - k);
            memcpy(f + 4 + 8 * (size_t)i, &o, 8);
        }
    }
    char err[400] = "";
    ocp_lstm_model *m = NULL;
    int rc = ocp_lstm_model_load_buffer(f, e->off[c] + k + rest, &m, err, sizeof err);
    ocp_lstm_model_free(m);
    if (rc != OCP_E_FORMAT || !err[0])
        fail_msg("component %d cut to %zu of %zu bytes: rc %d '%s'", c, k, e->size[c], rc, err);
    (*n)++;
}

/* Truncations walked through the whole file and through each component the recognizer
 * reads: each one refused with a reason, never a crash or a read past the end (ASan). */
static void test_truncations_walked(void **state)
{
    (void)state;
    eng_file e;
    eng_open(&e);
    int n = 0;
    /* The whole file: every byte of the table and the network's head, then strides. */
    for (size_t k = 0; k < e.len; k += k < 4096 ? 1 : e.len / 1000 + 1)
        cut_file(&e, k, &n);
    for (int c = 0; c < OCP_TD_COUNT; c++)
        if (e.size[c])
            cut_file(&e, e.off[c] + e.size[c] - 1, &n);
    /* Each component, cut short inside itself (1 byte at least: 0 bytes is an absent
     * component, and a model without dictionaries is a model). */
    static const int comps[] = {OCP_TD_LSTM,
                                OCP_TD_LSTM_PUNC_DAWG,
                                OCP_TD_LSTM_WORD_DAWG,
                                OCP_TD_LSTM_NUMBER_DAWG,
                                OCP_TD_LSTM_UNICHARSET,
                                OCP_TD_LSTM_RECODER};
    unsigned char *tmp = ocp_xmalloc(e.len);
    for (size_t i = 0; i < sizeof comps / sizeof comps[0]; i++) {
        int c = comps[i];
        memcpy(tmp, e.buf, e.len); /* what follows c stays where it is in the file */
        size_t all = c == OCP_TD_LSTM ? 8192 : 512; /* every cut up to here, then strides */
        for (size_t k = 1; k < e.size[c]; k += k < all ? 1 : e.size[c] / 200 + 1)
            cut_component(&e, tmp, c, k, &n);
        for (size_t k = e.size[c] > 16 ? e.size[c] - 16 : 1; k < e.size[c]; k++)
            cut_component(&e, tmp, c, k, &n);
    }
    print_message("truncations: %d cuts, each refused with a reason\n", n);
    free(tmp);
    free(e.buf);
}

/* ---- a network of many nodes ------------------------------------------------------------ */

typedef struct gen {
    unsigned char *p;
    size_t n, cap;
    long nodes;
} gen;

static void gen_bytes(gen *g, const void *b, size_t k)
{
    if (g->n + k <= g->cap)
        memcpy(g->p + g->n, b, k);
    g->n += k;
}

static void gen_i32(gen *g, int32_t v)
{
    gen_bytes(g, &v, 4);
}

/* A node: marker, type, two training flags, flags, ni 1, no 1, num_weights, an empty name. */
static void gen_head(gen *g, const char *type)
{
    unsigned char z[2] = {0, 0};
    gen_bytes(g, z, 1);
    gen_i32(g, (int32_t)strlen(type));
    gen_bytes(g, type, strlen(type));
    gen_bytes(g, z, 2);
    for (int i = 0; i < 4; i++)
        gen_i32(g, i == 1 || i == 2 ? 1 : 0);
    gen_i32(g, 0);
    g->nodes++;
}

/* Series of 64 children down to depth 4, Maxpool leaves there, until the buffer is full
 * (the file then ends in the middle of the tree). */
static void gen_tree(gen *g, int depth)
{
    if (g->n >= g->cap)
        return;
    if (depth == 4) {
        gen_head(g, "Maxpool");
        gen_i32(g, 1);
        gen_i32(g, 1);
        return;
    }
    gen_head(g, "Series");
    gen_i32(g, 64);
    for (int i = 0; i < 64 && g->n < g->cap; i++)
        gen_tree(g, depth + 1);
}

/* A network of some 750,000 nodes in 32 MB: every container's 64 children were allocated as
 * it was read (a node's struct is some ten times its bytes in the file), so such a file made
 * the reader allocate over 256 MB before it failed. The reader now stops at 1024 nodes. Run
 * in a child whose address space is bounded, as above. */
static void test_many_nodes_refused_cheaply(void **state)
{
    (void)state;
    size_t lstm = 32u << 20, len = 196 + lstm + 2;
    unsigned char *buf = ocp_xcalloc(len, 1);
    gen g = {buf + 196, 0, lstm, 0};
    gen_tree(&g, 0);
    assert_true(g.nodes > 750000);
    int32_t n = 24;
    memcpy(buf, &n, 4);
    for (int i = 0; i < 24; i++) {
        int64_t o = i == OCP_TD_LSTM              ? 196
                    : i == OCP_TD_LSTM_UNICHARSET ? (int64_t)(196 + lstm)
                    : i == OCP_TD_LSTM_RECODER    ? (int64_t)(196 + lstm + 1)
                                                  : -1;
        memcpy(buf + 4 + 8 * i, &o, 8);
    }
    fflush(NULL);
    refused_arg ra = {buf, len};
    in_bounded_child(many_nodes_of, &ra);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debian_models),
        cmocka_unit_test(test_eng_tree),
        cmocka_unit_test(test_refuses_what_it_cannot_read),
        cmocka_unit_test(test_refuses_float_matrices),
        cmocka_unit_test(test_refuses_too_many_classes),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_refuses_classes_beyond_the_softmax),
        cmocka_unit_test(test_refuses_sizes_that_disagree),
        cmocka_unit_test(test_huge_counts_fail_cheaply),
        cmocka_unit_test(test_truncations_walked),
        cmocka_unit_test(test_many_nodes_refused_cheaply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
