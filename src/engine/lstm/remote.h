/*
 * remote.h: the seam between the `lstm` engine and a recognizer process
 * (src/recog, README "Shared recognizer"). A worker whose pool runs a shared
 * recognizer sets a remote forward pass; the engine then hands its prepared,
 * normalised int8 lines to it instead of running the network itself, and
 * decodes the per-step outputs that come back exactly as its own. Without a
 * remote (recognizer = worker, the default on the CPU) nothing changes.
 *
 * The engine also keeps a registry of the models it loaded in this process,
 * by language name, so that a recognizer forked from the zygote uses the
 * zygote's copies (shared copy-on-write) rather than loading its own.
 */
#ifndef OCP_ENGINE_LSTM_REMOTE_H
#define OCP_ENGINE_LSTM_REMOTE_H

#include "engine/lstm/model.h"

#include <stddef.h>
#include <stdint.h>

/* steps[i] values a remote leaves for a line it did not read: */
#define OCP_LSTM_REMOTE_HERE   (-1) /* not read there (no room, recognizer gone): read it here */
#define OCP_LSTM_REMOTE_FAILED (-2) /* the line cannot be read (skipped, as a local failure) */

/*
 * A remote forward pass over n lines of model m (named `name`, a single language as the
 * engine loaded it): for each line, probs[i] (free()) and steps[i] as ocp_lstm_forward_batch
 * gives them, or probs[i] NULL and steps[i] one of the values above. Returns 0, or
 * OCP_E_TIMEOUT when `deadline` (ocp_now() seconds, 0 = none) passed first (the lines not
 * read are then OCP_LSTM_REMOTE_HERE).
 */
typedef int (*ocp_lstm_remote_fn)(void *ctx, const char *name, const ocp_lstm_model *m, int n,
                                  const int8_t *const *img, const int *w, float **probs, int *steps,
                                  double deadline);

/* Sets (fn NULL: clears) this process's remote forward pass; ctx is borrowed. */
void ocp_lstm_set_remote(ocp_lstm_remote_fn fn, void *ctx);

/* A model an lstm engine of this process has open, by its language name ("eng",
 * "script/Devanagari"), or NULL. Borrowed: valid while that engine is open. */
const ocp_lstm_model *ocp_lstm_find_loaded(const char *name);

#endif
