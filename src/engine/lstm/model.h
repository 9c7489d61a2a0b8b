/*
 * model.h: Tesseract's LSTM models as Debian 12 ships them (tessdata_fast,
 * int8), read by our own code: the traineddata container, the network tree
 * with its weight matrices, the unicharset and the recoder. The first step
 * of the `lstm` engine (issue 7); the forward pass and the decoder build on
 * these structures.
 *
 * Every size read from a file is checked against what is left before it is
 * used: a truncated or corrupt file is an error with its reason, never a
 * crash or an allocation of what the file claims (the unit test truncates
 * and flips every part of a real model).
 */
#ifndef OCP_ENGINE_LSTM_MODEL_H
#define OCP_ENGINE_LSTM_MODEL_H

#include "engine/lstm/dawg.h"

#include <stddef.h>
#include <stdint.h>

/* Components of a traineddata container that the recognizer uses. */
enum {
    OCP_TD_CONFIG = 0,
    OCP_TD_LSTM = 17,
    OCP_TD_LSTM_PUNC_DAWG = 18,
    OCP_TD_LSTM_WORD_DAWG = 19,
    OCP_TD_LSTM_NUMBER_DAWG = 20,
    OCP_TD_LSTM_UNICHARSET = 21,
    OCP_TD_LSTM_RECODER = 22,
    OCP_TD_VERSION = 23,
    OCP_TD_COUNT = 24,
};

/* A weight matrix in int8 mode: rows x cols (the last column is the bias), and one float
 * scale per row (the file's double / 127). Open type. */
typedef struct ocp_lstm_matrix {
    int rows, cols;
    int8_t *w;     /* rows * cols, row-major */
    float *scales; /* rows */
    /* The same weights without the bias column, laid out for 8 rows at a time: for each
     * block of 8 rows and each group of 4 inputs, 32 bytes (row 0's 4, row 1's 4, ...);
     * blocks go in pairs, a pair's two blocks of one group side by side (64 bytes: one
     * 512-bit load), zero-padded to whole pairs and groups. Built at load, so workers share
     * it. */
    int8_t *w8;
    int blocks, groups;
    /* Per row, padded with zeros to whole pairs of blocks: 127 x the bias minus 128 x the
     * sum of the row's other weights, what a kernel that takes the inputs as unsigned
     * x + 128 adds to its sums. */
    int32_t *fix;
} ocp_lstm_matrix;

/* Builds m->w8 and m->fix from m->w (the model reader does it for every matrix). */
void ocp_lstm_matrix_layout(ocp_lstm_matrix *m);

/* The tallest input a model may take (Debian's take 36 or 48 rows). */
#define OCP_LSTM_MAX_HEIGHT 256

/* The most classes (softmax outputs) a model may have: Debian's have 99 (tam) to 217
 * (Devanagari); over 4 times that, and the decoder's per-step work (every path times every
 * class) stays small. */
#define OCP_LSTM_MAX_CLASSES 1024

/* The most bytes the forward pass and the decoder may hold for one line, or for a batch of
 * lines together (forward.c refuses a wider line before it allocates): 256 MB. Debian's models
 * hold 936 to 955 bytes a column (hin 1248), so their widest lines (100000 columns) take 93 to
 * 123 MB and always fit; a model with layers of 16384 values a column gets some 8000 columns,
 * not the gigabytes that 100000 columns would take. A worker reads one batch at a time. */
#define OCP_LSTM_LINE_BYTES (256 << 20)

/* Inputs handed to the forward pass's products are read in groups of 4: a buffer holding
 * n inputs must have OCP_LSTM_PAD readable bytes after them. */
#define OCP_LSTM_PAD 32

typedef enum ocp_lstm_kind {
    OCP_LSTM_INPUT,
    OCP_LSTM_SERIES,   /* children one after the other */
    OCP_LSTM_PARALLEL, /* children side by side, outputs stacked */
    OCP_LSTM_WRAP,     /* one child seen through a transform: XYTranspose, RTLReversed,
                          TTBReversed, Reversed */
    OCP_LSTM_CONVOLVE,
    OCP_LSTM_MAXPOOL,
    OCP_LSTM_FC,   /* fully connected with an activation: Tanh, Logistic, Relu, Linear,
                      Softmax, SoftmaxNoCTC */
    OCP_LSTM_LSTM, /* LSTM and SummLSTM, 1-D or 2-D */
} ocp_lstm_kind;

/* One node of the network tree. Open type. */
typedef struct ocp_lstm_node {
    ocp_lstm_kind kind;
    char type[24]; /* the file's type name ("Series", "SummLSTM", ...) */
    char name[64]; /* the file's node name (the spec fragment, "Lfys48") */
    int ni, no;    /* inputs and outputs per time step */
    int32_t flags;
    long num_weights; /* the file's count of the weights in the node and below it */
    struct ocp_lstm_node *children;
    int n_children;
    int shape[5];       /* INPUT: batch, height, width, depth, loss type */
    int half_x, half_y; /* CONVOLVE */
    int x_scale, y_scale; /* MAXPOOL */
    ocp_lstm_matrix fc;   /* FC */
    int na;               /* LSTM: inputs of each gate (ni + state [+ state for 2-D]) */
    int two_d;            /* LSTM: has the GFS gate (a 2-D LSTM) */
    int summarise;        /* LSTM: SummLSTM (output at the last row only) */
    ocp_lstm_matrix gate[5]; /* LSTM: CI, GI, GF1, GO, GFS (two_d only) */
} ocp_lstm_node;

/* The unicharset: unichar id -> UTF-8 text (id 0 = space, written NULL in the file). */
typedef struct ocp_unicharset {
    int n;
    char **text;
    char **script; /* the script property of each, or "" */
    unsigned char *is_digit; /* the digit property of each (0/1) */
} ocp_unicharset;

/* The recoder: for each unichar id, the codes (network classes) that spell it (length 1
 * in Debian's models). */
typedef struct ocp_recoder {
    int n;
    int *length;
    int **code;
} ocp_recoder;

/* A whole LSTM model. Open type; ocp_lstm_model_free frees it all. */
typedef struct ocp_lstm_model {
    ocp_lstm_node net;
    char *spec; /* network_str: "[1,36,0,1Ct3,3,16Mp3,3Lfys48Lfx96Lrx96Lfx192O1c1]" */
    int32_t training_flags, training_iteration, sample_iteration, null_char;
    int input_height, classes;
    ocp_unicharset unicharset;
    ocp_recoder recoder;
    char *version;
    /* The file's config component: Tesseract's parameters, "name value" a line. */
    struct ocp_lstm_param {
        char *name, *value;
    } *params;
    int n_params;
    /* Per unichar id: 1 when the decoder may output it. The config's tessedit_char_whitelist,
     * _blacklist and _unblacklist apply as in Tesseract (hin's blacklists "1", which its
     * network confuses with the danda). */
    unsigned char *enabled;
    /* Per class (network output): the unichar id the recoder spells with it alone, or -1
     * (every code has length 1 in Debian's models). */
    int *code_uni;
    /* The dictionaries (punctuation, word, number; edges NULL when absent), and the walk's
     * view of them (dict.word NULL: a model without dictionaries). */
    ocp_dawg dawg[3];
    ocp_dict dict;
    /* The file, mapped, when loaded from one: the dictionaries' edges stay in it. */
    void *map;
    size_t map_len;
} ocp_lstm_model;

/* Lets go of the pages of m's file that the dictionaries' walks mapped (m->map, read-only:
 * they come back from the page cache at the next lookup, as a minor fault). A decoder that
 * looks words up all over a 12 MB word list (san) maps 64 KiB around each byte it reads, and
 * a worker would keep them, growing page after page: the engine drops them after each batch
 * of pages. Safe beside other readers of m (nothing is ever written there). */
void ocp_lstm_model_drop_pages(const ocp_lstm_model *m);

/*
 * Reads a traineddata file's component table. *parts receives OCP_TD_COUNT
 * (offset, size) pairs of the file's bytes (size 0 = absent). buf is the
 * whole file; returns 0 or OCP_E_FORMAT with the reason.
 */
int ocp_tessdata_parts(const unsigned char *buf, size_t len, size_t off[OCP_TD_COUNT],
                       size_t size[OCP_TD_COUNT], char *err, size_t errlen);

/* The unichar whose text is the longest prefix of s (id 0, the space, only for " "), or -1;
 * *len receives its length in bytes. */
int ocp_unicharset_match(const ocp_unicharset *u, const char *s, size_t *len);

/* Builds m->code_uni from the recoder (the loader does it; tests that make a model by hand
 * call it). */
void ocp_lstm_model_index(ocp_lstm_model *m);

/* Checks a model's sizes against each other (check.c: every layer's inputs are the
 * previous layer's outputs, the softmax's outputs are the classes the recoder spells, ...):
 * 0, or OCP_E_FORMAT with the first disagreement. The loader calls it before it returns a
 * model, so that nothing runs a model whose sizes disagree. */
int ocp__lstm_model_check(const ocp_lstm_model *m, char *err, size_t errlen);

/* What a line of W columns costs the forward pass and the decoder, in bytes, at most:
 * *per_column x W + *fixed (check.c, from the same walk). 0, or OCP_E_FORMAT with the
 * reason when the model's sizes disagree. */
int ocp__lstm_line_cost(const ocp_lstm_model *m, double *per_column, double *fixed, char *err,
                        size_t errlen);

/* Loads the LSTM model of a traineddata file in memory / on disk. Every size in the file
 * is checked against the bytes left before anything is allocated for it, and against
 * every other size (ocp__lstm_model_check) before the model is returned. */
int ocp_lstm_model_load_buffer(const unsigned char *buf, size_t len, ocp_lstm_model **out,
                               char *err, size_t errlen);
int ocp_lstm_model_load(const char *path, ocp_lstm_model **out, char *err, size_t errlen);
void ocp_lstm_model_free(ocp_lstm_model *m);

/* Appends a one-line-per-node outline of the tree to out (indent by depth): for tests and
 * `ocrpool model-info`. Returns the number of multiply-adds per time step of the
 * matrices (a cost figure). */
struct ocp_sb;
long ocp_lstm_model_describe(const ocp_lstm_model *m, struct ocp_sb *out);

#endif
