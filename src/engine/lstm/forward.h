/*
 * forward.h: the int8 forward pass of a Tesseract LSTM model (model.h),
 * and the line preparation before it, written from the arithmetic in the project's reference:
 * exact int32 dot products scaled per row, re-quantisation to int8 between
 * layers, 4096-entry tanh/logistic tables with linear interpolation, the
 * 3x3 convolution with pseudo-random borders, maxpool, 1-D and summarising
 * LSTMs, reversal and transposition, softmax.
 *
 * Lines go through in batches (time-major LSTM steps over all the batch's
 * rows, longest first); a line image is the model's input height, int8 (-127
 * black .. 127 white), row-major.
 */
#ifndef OCP_ENGINE_LSTM_FORWARD_H
#define OCP_ENGINE_LSTM_FORWARD_H

#include "engine/lstm/model.h"

#include <stdint.h>

/* The activation tables (shared, built once): exposed for tests. */
float ocp_lstm_tanh(float x);
float ocp_lstm_logistic(float x);
/* clip(round-half-away(x * 127), -127, 127). */
int8_t ocp_lstm_quantise(float x);
/* out[i] = (sum_j w[i][j] * x[j] + w[i][cols-1] * 127) * scale[i], for cols-1 inputs. */
void ocp_lstm_matvec(const ocp_lstm_matrix *m, const int8_t *x, float *out);
/* The same for nv vectors x, x + stride, ... into out[v * rows + i]: the batch product.
 * Exact int32 sums on every kernel (portable, AVX2, AVX-512 VNNI, chosen at run time). */
void ocp_lstm_matmul(const ocp_lstm_matrix *m, const int8_t *x, int nv, size_t stride,
                     float *out);
/* The kernel in use ("portable", "avx2", "avx512-vnni"), and a cap on it for tests and
 * measurements (0 portable, 1 AVX2, 2 any; returns the previous cap). */
const char *ocp_lstm_kernel_name(void);
int ocp_lstm_kernel_cap(int level);

/*
 * Runs the network over n line images together (img[i]: width w[i], height
 * m->input_height): probs[i] (free()) receives steps[i] x m->classes softmax outputs of line
 * i, bit for bit what the line alone gives. Each line must fit (ocp_lstm_line_fits) and the
 * batch as a whole too: their ocp_lstm_line_bytes add up to OCP_LSTM_LINE_BYTES at most. The
 * CUDA engine is to replace this behind the same interface. Returns 0 or an error code with the reason (then no probs).
 */
int ocp_lstm_forward_batch(const ocp_lstm_model *m, int n, const int8_t *const *img,
                           const int *w, float **probs, int *steps, char *err, size_t errlen);

/*
 * Runs the network over one line image of width w (height = m->input_height).
 * *probs receives steps x m->classes softmax outputs (free()), *steps the
 * number of time steps. Returns 0 or an error code with the reason.
 */
int ocp_lstm_forward(const ocp_lstm_model *m, const int8_t *img, int w, float **probs,
                     int *steps, char *err, size_t errlen);

/* The bytes that the forward pass and the decoder hold for a line of `columns` columns, at
 * most (ocp__lstm_line_cost); -1 when the model's sizes disagree. Lines run together in a
 * batch hold the sum of theirs. */
double ocp_lstm_line_bytes(const ocp_lstm_model *m, double columns);

/* Whether a line of `columns` columns (at the model's height) may go through the model:
 * 0, or OCP_E_RANGE with the reason when the forward pass and the decoder would hold more
 * than OCP_LSTM_LINE_BYTES for it (or more than 100000 columns), OCP_E_FORMAT when the
 * model's sizes disagree. Nothing is allocated. */
int ocp_lstm_line_fits(const ocp_lstm_model *m, double columns, char *err, size_t errlen);

/* A line image (w x h pixels of `bands` bytes each, 1 grey or 3-4 RGB(A), rows `stride`
 * bytes apart) as libtesseract feeds it to the network: scaled to the model's height with
 * leptonica's pixScale (colour in colour), turned over when `invert`, made grey (leptonica's
 * luminance for colour), contrast-normalised as the reference describes: *out (free())
 * receives the int8 image, *ow its width. */
int ocp_lstm_prepare_line(const ocp_lstm_model *m, const uint8_t *px, int w, int h, int stride,
                          int bands, int invert, int8_t **out, int *ow, char *err,
                          size_t errlen);

#endif
