/*
 * beam.h: the beam-search decoder over the network's softmax outputs, with
 * or without the model's dictionaries, written from the reference's facts
 * on Tesseract's RecodeBeamSearch and black-box runs against libtesseract
 * (bench/lstm_parity.sh):
 *  - paths are CTC alignments: at each step a path takes the null class, the
 *    class it took at the step before (the same character going on), or a new
 *    class (a new character); paths spelling the same text that end on the
 *    same class, with the same dictionary standing and the same constraint on
 *    the next step, merge, the better kept;
 *  - at each step the top 2 classes and the null are tried, then the next 3,
 *    then the rest, stopping once some path may go on freely;
 *  - a step scores log(p) - 0.085, times 2.25 on a path whose word is not
 *    read against the dictionary;
 *  - a character may take the null's probability of its first step (and the
 *    other top class's, when the two are the step's likeliest) if it goes on
 *    at the next step; it may take the null's at its last step if the next
 *    step does not repeat it (the sums score the step);
 *  - with dictionaries, every word is read both ways from its first letter:
 *    a dictionary path dies at a letter no dictionary word goes on with, and
 *    may cross a space (or end the line) only at a word's end;
 *  - 5 paths are kept in each of 6 heaps (dictionary or not x free, must
 *    repeat, must not repeat).
 * Without dictionaries this gives libtesseract's text on 99 % of lines whose
 * network outputs agree; with them about 93 %.
 */
#ifndef OCP_ENGINE_LSTM_BEAM_H
#define OCP_ENGINE_LSTM_BEAM_H

#include "engine/lstm/model.h"

/* One decoded character: its text (borrowed from the model), the time steps it spans, and
 * its certainty (the lowest probability its steps were scored with, the nulls before it
 * included). */
typedef struct ocp_lstm_char {
    const char *text;
    int first, last;
    float prob;
} ocp_lstm_char;

/* The best class at each step, repeats merged and nulls dropped (no beam, no dictionary:
 * a figure to compare with): *chars (free()) receives *n characters. */
void ocp_lstm_greedy_chars(const ocp_lstm_model *m, const float *probs, int steps,
                           ocp_lstm_char **chars, int *n);

/* Decodes steps x m->classes probabilities; with use_dict and a model with a word dawg,
 * with its dictionaries. *chars (free()) receives *n characters (texts borrowed from the
 * model; prob: the lowest probability of the path's class over the character's steps and
 * the null steps before it). */
void ocp_lstm_beam(const ocp_lstm_model *m, const float *probs, int steps, int use_dict,
                   ocp_lstm_char **chars, int *n);

/* The decoded characters as one UTF-8 string (new), as Tesseract writes a line: a space for
 * each space character between words (two in a row make an empty word, as in
 * libtesseract's text), none at the ends. */
char *ocp_lstm_chars_text(const ocp_lstm_char *chars, int n);

/* The mean over the steps of the best class's probability (how sure the network is). */
float ocp_lstm_mean_best(const ocp_lstm_model *m, const float *probs, int steps);

#endif
