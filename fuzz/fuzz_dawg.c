/*
 * fuzz_dawg.c: a SquishedDawg (src/engine/lstm/dawg.c), the dictionary
 * component of a traineddata: read for the unicharset size its header
 * names and for a smaller one (a model whose unicharset disagrees), copied
 * and borrowed; then its words looked up edge by edge (a budget of lookups)
 * and walked letter by letter as the decoder does, with itself as the word,
 * number and punctuation dictionary.
 */
#include "engine/lstm/dawg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char digits[4096];

/* A depth-first walk of d's words through the public lookups, with a budget of lookups (a
 * corrupt dawg may loop: ocp_dawg_words, for tests and tools, is not bounded in time on
 * one), each word checked by the decoder's walk. */
typedef struct walk {
    const ocp_dawg *d;
    const ocp_dict *dict;
    long budget;
    int ids[32];
} walk;

static void words(walk *w, long node, int depth)
{
    for (int letter = 0; letter < w->d->unichars && w->budget > 0; letter++) {
        w->budget--;
        long e = ocp_dawg_find(w->d, node, letter);
        if (e < 0)
            continue;
        w->ids[depth] = letter;
        if (ocp_dawg_word_end(w->d, e))
            ocp_dict_valid(w->dict, w->ids, depth + 1);
        long next = ocp_dawg_next(w->d, e);
        if (next && depth + 1 < (int)(sizeof w->ids / sizeof w->ids[0]))
            words(w, next, depth + 1);
    }
}

static void use(const ocp_dawg *d, const uint8_t *data, size_t size)
{
    ocp_dict dict = {d, d, d, digits};
    walk w = {.d = d, .dict = &dict, .budget = 20000};
    words(&w, 0, 0);
    /* The input's bytes as letters, through the decoder's walk. */
    ocp_dict_state s, next;
    ocp_dict_start(&s);
    for (size_t i = 0; i < size && i < 64; i++) {
        int letter = 1 + data[i] % (d->unichars > 1 ? d->unichars - 1 : 1);
        if (ocp_dict_letter(&dict, &s, letter, &next) == 0)
            break;
        s = next;
        ocp_dict_word_end(&dict, &s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    int unichars = 0;
    if (size >= 6)
        memcpy(&unichars, buf + 2, 4);
    const int sizes[2] = {unichars > 0 && unichars <= 4096 ? unichars : 111, 37};
    for (int i = 0; i < 2; i++) {
        for (int borrow = 0; borrow < 2; borrow++) {
            ocp_dawg d;
            char err[256];
            memset(&d, 0, sizeof d);
            if (ocp_dawg_read(buf, size, sizes[i], borrow, &d, err, sizeof err) == 0)
                use(&d, data, size);
            ocp_dawg_fini(&d);
        }
    }
    free(buf);
    return 0;
}
