/*
 * dawg.h: the dictionaries of Tesseract's LSTM models (SquishedDawg, the
 * traineddata's lstm-punc-dawg, lstm-word-dawg and lstm-number-dawg) and the
 * walk a decoder makes through them, one letter at a time.
 *
 * The format, as checked against `dawg2wordlist` on Debian's eng, san, tam
 * and hin models (the unit test enumerates every word and compares): int16
 * magic 42, int32 unicharset size, int32 edge count, then uint64 edges. An
 * edge packs the letter (a unichar id) in its low b bits, b = ceil(log2(
 * unicharset size)), then three flags (1: last edge of its node, 2: a
 * backward edge, 4: a word ends here), then the node it leads to (the index
 * of that node's first edge; 0 = none). Node 0 is the root.
 *
 * How the three are used together (our design, from what the files hold):
 * the punctuation dawg spells the patterns around a word, with the space
 * (unichar 0) standing for the word itself (" ", "( )", " ...", "\" "); the
 * word dawg spells words; the number dawg spells numbers with the space
 * standing for one digit ("   . %"). A word is in the dictionary when it is
 * leading punctuation, then a word of the word or number dawg, then trailing
 * punctuation, along one pattern of the punctuation dawg.
 */
#ifndef OCP_ENGINE_LSTM_DAWG_H
#define OCP_ENGINE_LSTM_DAWG_H

#include <stddef.h>
#include <stdint.h>

/* One dictionary. Open type (filled by ocp_dawg_read, freed by ocp_dawg_fini). */
typedef struct ocp_dawg {
    const unsigned char *edges; /* n little-endian uint64 (maybe unaligned; NULL: absent) */
    unsigned char *owned;       /* the copy edges points into, when not borrowed */
    long n;          /* edges */
    int letter_bits; /* b above */
    int unichars;    /* the unicharset size the file was made for */
    int32_t *root;   /* unichars entries: the root's edge for each letter, or -1 */
} ocp_dawg;

/* Reads and checks a SquishedDawg: every letter inside the unicharset, every node reached
 * ends inside the file. With `borrow`, d's edges stay in buf (a mapped file the caller keeps
 * for d's life: its pages are shared, and only those a decoder touches are resident);
 * otherwise they are copied. Returns 0 or OCP_E_FORMAT with the reason. */
int ocp_dawg_read(const unsigned char *buf, size_t len, int unichars, int borrow, ocp_dawg *d,
                  char *err, size_t errlen);
void ocp_dawg_fini(ocp_dawg *d);

/* The edge for letter out of node (0 = the root), or -1. */
long ocp_dawg_find(const ocp_dawg *d, long node, int letter);
/* A word ends with edge e / the node edge e leads to (0 = none). */
int ocp_dawg_word_end(const ocp_dawg *d, long e);
long ocp_dawg_next(const ocp_dawg *d, long e);

/* Calls fn for every word of d, as unichar ids (for tests and tools); stops early when fn
 * returns non-zero. Returns the number of words visited. */
long ocp_dawg_words(const ocp_dawg *d, int (*fn)(const int *ids, int n, void *arg), void *arg);

/* ---- the walk --------------------------------------------------------------------------- */

/* The three dictionaries of a model and what the walk needs of its unicharset. A dict with
 * no word dawg is off (ocp_dict_on). Open type, borrowed pointers. */
typedef struct ocp_dict {
    const ocp_dawg *punc, *word, *number;
    const unsigned char *is_digit; /* per unichar id */
} ocp_dict;

int ocp_dict_on(const ocp_dict *d);

/* Where a word in progress can be: in the punctuation before the word, in the word or
 * number dawg (with the punctuation edge that stands for the word), or in the punctuation
 * after it. A small value, copied by the decoder's paths. */
#define OCP_DICT_MAX_POS 8
typedef struct ocp_dict_pos {
    int8_t kind;   /* OCP_DICT_LEAD, _WORD, _NUMBER, _TRAIL */
    int32_t ref;   /* the last edge taken in its dawg, -1 = at the root */
    int32_t punc;  /* WORD, NUMBER: the punctuation dawg's word edge */
} ocp_dict_pos;
enum { OCP_DICT_LEAD, OCP_DICT_WORD, OCP_DICT_NUMBER, OCP_DICT_TRAIL };

typedef struct ocp_dict_state {
    int n;
    ocp_dict_pos pos[OCP_DICT_MAX_POS];
} ocp_dict_state;

/* The state before a word's first letter. */
void ocp_dict_start(ocp_dict_state *s);
/* The state after letter (a unichar id, not the space) into out; returns out->n, 0 when no
 * dictionary word goes on with that letter. */
int ocp_dict_letter(const ocp_dict *d, const ocp_dict_state *s, int letter, ocp_dict_state *out);
/* Whether a dictionary word (with its punctuation) ends in state s. */
int ocp_dict_word_end(const ocp_dict *d, const ocp_dict_state *s);
/* Whether ids[0..n) is a dictionary word (for tests). */
int ocp_dict_valid(const ocp_dict *d, const int *ids, int n);

#endif
