/*
 * dawg.c: Tesseract's SquishedDawg dictionaries and the letter-by-letter walk
 * through punctuation, word and number dawgs (dawg.h). Written from the
 * format as checked against dawg2wordlist, not from Tesseract's source.
 */
#include "engine/lstm/dawg.h"
#include "core/error.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

#define F_LAST 1u
#define F_BACK 2u
#define F_END 4u
#define MAX_EDGES (1L << 27) /* a word dawg of Debian's models has under 2M */

static inline uint64_t edge(const ocp_dawg *d, long e)
{
    uint64_t v;
    memcpy(&v, d->edges + (size_t)e * 8, 8); /* x86-64 and the file: little-endian */
    return v;
}

static inline int e_letter(const ocp_dawg *d, long e)
{
    return (int)(edge(d, e) & ((1ull << d->letter_bits) - 1));
}

static inline unsigned e_flags(const ocp_dawg *d, long e)
{
    return (unsigned)(edge(d, e) >> d->letter_bits) & 7u;
}

long ocp_dawg_next(const ocp_dawg *d, long e)
{
    return (long)(edge(d, e) >> (d->letter_bits + 3));
}

int ocp_dawg_word_end(const ocp_dawg *d, long e)
{
    return (e_flags(d, e) & F_END) != 0;
}

int ocp_dawg_read(const unsigned char *buf, size_t len, int unichars, int borrow, ocp_dawg *d,
                  char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    if (len < 10)
        return ocp_errf(OCP_E_FORMAT, err, errlen, "dawg: truncated header (%zu bytes)", len);
    int16_t magic;
    int32_t size, n;
    memcpy(&magic, buf, 2);
    memcpy(&size, buf + 2, 4);
    memcpy(&n, buf + 6, 4);
    if (magic != 42)
        return ocp_errf(OCP_E_FORMAT, err, errlen, "dawg: magic %d, not 42", magic);
    if (size != unichars)
        return ocp_errf(OCP_E_FORMAT, err, errlen,
                        "dawg: made for %d unichars, the model has %d", (int)size, unichars);
    /* The edges fill the rest of the component exactly (as in every model Debian ships):
     * a count larger than the bytes is refused before anything is allocated for it. */
    if (n < 1 || n > MAX_EDGES || (size_t)n * 8 != len - 10)
        return ocp_errf(OCP_E_FORMAT, err, errlen, "dawg: %d edges in %zu bytes", (int)n, len);
    int bits = 1;
    while ((1L << bits) < size)
        bits++;
    d->letter_bits = bits;
    d->unichars = unichars;
    d->n = n;
    if (borrow) {
        d->edges = buf + 10;
    } else {
        d->owned = ocp_xmalloc((size_t)n * 8);
        memcpy(d->owned, buf + 10, (size_t)n * 8);
        d->edges = d->owned;
    }
    /* Every node ends with a last-edge flag: with the file's last edge flagged, a walk from
     * any edge index stops inside the array. */
    if (!(e_flags(d, n - 1) & F_LAST)) {
        ocp_dawg_fini(d);
        return ocp_errf(OCP_E_FORMAT, err, errlen, "dawg: the last edge ends no node");
    }
    for (long e = 0; e < n; e++) {
        if (e_letter(d, e) >= unichars || ocp_dawg_next(d, e) >= n) {
            int letter = e_letter(d, e);
            long next = ocp_dawg_next(d, e);
            ocp_dawg_fini(d);
            return ocp_errf(OCP_E_FORMAT, err, errlen,
                            "dawg: edge %ld: letter %d of %d, next node %ld of %ld", e, letter,
                            unichars, next, (long)n);
        }
    }
    d->root = ocp_xmalloc((size_t)unichars * sizeof *d->root);
    for (int i = 0; i < unichars; i++)
        d->root[i] = -1;
    for (long e = 0;; e++) {
        if (!(e_flags(d, e) & F_BACK) && d->root[e_letter(d, e)] < 0)
            d->root[e_letter(d, e)] = (int32_t)e;
        if (e_flags(d, e) & F_LAST)
            break;
    }
    return 0;
}

void ocp_dawg_fini(ocp_dawg *d)
{
    if (!d)
        return;
    free(d->owned);
    free(d->root);
    memset(d, 0, sizeof *d);
}

long ocp_dawg_find(const ocp_dawg *d, long node, int letter)
{
    if (!d->edges || letter < 0 || letter >= d->unichars)
        return -1;
    if (node == 0)
        return d->root[letter];
    for (long e = node; e < d->n; e++) {
        if (!(e_flags(d, e) & F_BACK) && e_letter(d, e) == letter)
            return e;
        if (e_flags(d, e) & F_LAST)
            break;
    }
    return -1;
}

typedef struct walk_ctx {
    const ocp_dawg *d;
    int (*fn)(const int *, int, void *);
    void *arg;
    int *ids;
    long words;
    int stop;
} walk_ctx;

/* Depth-first, with an explicit bound on the depth (a corrupt dawg may loop). */
static void walk(walk_ctx *c, long node, int depth)
{
    if (depth >= 256)
        return;
    for (long e = node; e < c->d->n && !c->stop; e++) {
        unsigned f = e_flags(c->d, e);
        if (!(f & F_BACK)) {
            c->ids[depth] = e_letter(c->d, e);
            if (f & F_END) {
                c->words++;
                if (c->fn(c->ids, depth + 1, c->arg))
                    c->stop = 1;
            }
            long next = ocp_dawg_next(c->d, e);
            if (next)
                walk(c, next, depth + 1);
        }
        if (f & F_LAST)
            break;
    }
}

long ocp_dawg_words(const ocp_dawg *d, int (*fn)(const int *ids, int n, void *arg), void *arg)
{
    if (!d->edges)
        return 0;
    int ids[257];
    walk_ctx c = {d, fn, arg, ids, 0, 0};
    walk(&c, 0, 0);
    return c.words;
}

/* ---- the walk --------------------------------------------------------------------------- */

int ocp_dict_on(const ocp_dict *d)
{
    return d && d->word && d->word->edges;
}

void ocp_dict_start(ocp_dict_state *s)
{
    s->n = 1;
    s->pos[0] = (ocp_dict_pos){OCP_DICT_LEAD, -1, -1};
}

/* The node after position ref in dawg d: the root for -1, else where the edge leads
 * (0 = nowhere). */
static long node_after(const ocp_dawg *d, int32_t ref)
{
    return ref < 0 ? 0 : ocp_dawg_next(d, ref);
}

static void add(ocp_dict_state *o, int kind, long ref, long punc)
{
    if (o->n == OCP_DICT_MAX_POS)
        return;
    for (int i = 0; i < o->n; i++)
        if (o->pos[i].kind == kind && o->pos[i].ref == ref && o->pos[i].punc == punc)
            return;
    o->pos[o->n++] = (ocp_dict_pos){(int8_t)kind, (int32_t)ref, (int32_t)punc};
}

/* Letter goes into the word or number dawg at node, the word standing on punctuation edge
 * pe. */
static void enter(const ocp_dict *d, ocp_dict_state *o, long wnode, long nnode, int letter,
                  long pe)
{
    long e;
    if (wnode >= 0 && (e = ocp_dawg_find(d->word, wnode, letter)) >= 0)
        add(o, OCP_DICT_WORD, e, pe);
    if (nnode >= 0 && d->number && d->number->edges) {
        /* The number dawg spells each digit as the space (one digit), and some literal
         * letters ("1st"): both are tried. */
        if (d->is_digit[letter] && (e = ocp_dawg_find(d->number, nnode, 0)) >= 0)
            add(o, OCP_DICT_NUMBER, e, pe);
        if ((e = ocp_dawg_find(d->number, nnode, letter)) >= 0)
            add(o, OCP_DICT_NUMBER, e, pe);
    }
}

int ocp_dict_letter(const ocp_dict *d, const ocp_dict_state *s, int letter, ocp_dict_state *o)
{
    o->n = 0;
    if (!ocp_dict_on(d) || letter <= 0 || letter >= d->word->unichars)
        return 0;
    const ocp_dawg *punc = d->punc && d->punc->edges ? d->punc : NULL;
    for (int i = 0; i < s->n; i++) {
        const ocp_dict_pos *p = &s->pos[i];
        long node, e;
        switch (p->kind) {
        case OCP_DICT_LEAD:
            if (!punc) { /* no punctuation dawg: plain words */
                enter(d, o, 0, 0, letter, -1);
                break;
            }
            node = node_after(punc, p->ref);
            if (p->ref >= 0 && node == 0)
                break;
            if ((e = ocp_dawg_find(punc, node, letter)) >= 0)
                add(o, OCP_DICT_LEAD, e, -1);
            if ((e = ocp_dawg_find(punc, node, 0)) >= 0) /* the word starts here */
                enter(d, o, 0, 0, letter, e);
            break;
        case OCP_DICT_WORD:
        case OCP_DICT_NUMBER: {
            const ocp_dawg *w = p->kind == OCP_DICT_WORD ? d->word : d->number;
            node = ocp_dawg_next(w, p->ref);
            if (node)
                enter(d, o, p->kind == OCP_DICT_WORD ? node : -1,
                      p->kind == OCP_DICT_NUMBER ? node : -1, letter, p->punc);
            /* After a whole word, the punctuation that may follow it. */
            if (ocp_dawg_word_end(w, p->ref) && punc && p->punc >= 0 &&
                (node = ocp_dawg_next(punc, p->punc)) != 0 &&
                (e = ocp_dawg_find(punc, node, letter)) >= 0)
                add(o, OCP_DICT_TRAIL, e, -1);
            break;
        }
        case OCP_DICT_TRAIL:
            node = ocp_dawg_next(punc, p->ref);
            if (node && (e = ocp_dawg_find(punc, node, letter)) >= 0)
                add(o, OCP_DICT_TRAIL, e, -1);
            break;
        }
    }
    return o->n;
}

int ocp_dict_word_end(const ocp_dict *d, const ocp_dict_state *s)
{
    if (!ocp_dict_on(d))
        return 0;
    const ocp_dawg *punc = d->punc && d->punc->edges ? d->punc : NULL;
    for (int i = 0; i < s->n; i++) {
        const ocp_dict_pos *p = &s->pos[i];
        switch (p->kind) {
        case OCP_DICT_LEAD: /* punctuation alone, when the dawg lists it */
            if (p->ref >= 0 && ocp_dawg_word_end(punc, p->ref))
                return 1;
            break;
        case OCP_DICT_WORD:
        case OCP_DICT_NUMBER:
            if (ocp_dawg_word_end(p->kind == OCP_DICT_WORD ? d->word : d->number, p->ref) &&
                (p->punc < 0 || ocp_dawg_word_end(punc, p->punc)))
                return 1;
            break;
        case OCP_DICT_TRAIL:
            if (ocp_dawg_word_end(punc, p->ref))
                return 1;
            break;
        }
    }
    return 0;
}

int ocp_dict_valid(const ocp_dict *d, const int *ids, int n)
{
    ocp_dict_state a, b;
    ocp_dict_start(&a);
    for (int i = 0; i < n; i++) {
        if (!ocp_dict_letter(d, &a, ids[i], &b))
            return 0;
        a = b;
    }
    return n > 0 && ocp_dict_word_end(d, &a);
}
