/*
 * beam.c: the beam-search decoder (beam.h). One pass over the steps; each
 * path's steps are kept as records (class, probability, the step before) in
 * one arena, so the winner's alignment is read back at the end and turned
 * into characters the way the greedy decoder does.
 */
#include "engine/lstm/beam.h"
#include "core/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WIDTH        5           /* paths kept per heap */
#define HEAPS        6           /* dictionary or not x what the next step may do */
#define STEP_OFFSET  -0.085      /* added to every step's log probability */
#define NODICT_RATIO 2.25        /* a step outside the dictionary costs this much more */
#define MIN_CERT     -30.0       /* log of a probability of 0 */
#define WORST_DICT   (-25.0 / 7) /* a dictionary path takes no step less certain than this */
#define TABLE        16384       /* merge table slots (power of 2), over twice the largest step */

typedef struct path {
    double score;
    uint64_t hash; /* of the text so far */
    int code;      /* the class of the last step */
    int rec;       /* the last step's record, -1 before the first */
    int8_t dict;   /* the current word is read against the dictionary */
    int8_t fresh;  /* the current word has no letter yet */
    int8_t cont;   /* what the next step may do: ANY, ONLY_DUP, NO_DUP */
    ocp_dict_state st;
} path;

/* A path that took a character with the probability of its neighbours (below) must go on
 * with it (ONLY_DUP); one that ended a character with the null's probability must not
 * (NO_DUP). */
enum { ANY, ONLY_DUP, NO_DUP };

typedef struct rec {
    int code, parent;
    float p;
} rec;

typedef struct beam {
    const ocp_lstm_model *m;
    const ocp_dict *dict; /* NULL: no dictionary */
    const int *inv;       /* class -> unichar id, -1 (the model's table) */
    int space;            /* the space's class, -1 */
    rec *recs;
    int nrec, caprec;
    path *cand;
    int ncand, capcand;
    int32_t *slot; /* TABLE: candidate index, valid when stamp matches */
    uint32_t *stamp;
    uint32_t gen;
    const float *p; /* this step's probabilities */
    int top1, top2; /* this step's two likeliest classes */
    float step_p;   /* the probability the step being offered is scored with */
    int8_t *tier;   /* per class: 0 (the top two and the null), 1 (the next three), 2 */
    struct {        /* per continuation: the best path whose space starts a dictionary word */
        const path *from;
        int on;
        double score;
        float step_p;
    } init[3];
} beam;

static uint64_t mix(uint64_t h, int id)
{
    h ^= (uint64_t)(id + 1);
    h *= 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int add_rec(beam *b, int code, int parent, float p)
{
    if (b->nrec == b->caprec) {
        b->caprec = b->caprec ? b->caprec * 2 : 4096;
        b->recs = ocp_xrealloc(b->recs, (size_t)b->caprec * sizeof *b->recs);
    }
    b->recs[b->nrec] = (rec){code, parent, p};
    return b->nrec++;
}

/* Offers a path for this step: merged with the one of the same class, text and dictionary
 * standing (the better kept). */
static void offer(beam *b, const path *from, int code, double score, uint64_t hash, int dict,
                  int fresh, int cont, const ocp_dict_state *st)
{
    uint64_t key = hash ^ ((uint64_t)code * 0x9e3779b97f4a7c15ull) ^ (uint64_t)(dict * 4 + cont);
    uint32_t h = (uint32_t)(key ^ (key >> 32)) & (TABLE - 1);
    for (;; h = (h + 1) & (TABLE - 1)) {
        if (b->stamp[h] != b->gen)
            break;
        path *c = &b->cand[b->slot[h]];
        if (c->code == code && c->hash == hash && c->dict == dict && c->cont == cont) {
            if (score > c->score) {
                c->score = score;
                c->rec = add_rec(b, code, from->rec, b->step_p);
                c->fresh = (int8_t)fresh;
                if (st)
                    c->st = *st;
            }
            return;
        }
    }
    if (b->ncand >= TABLE / 2)
        return; /* cannot happen: a step offers at most 20 paths x all classes x 2 */
    if (b->ncand == b->capcand) {
        b->capcand = b->capcand ? b->capcand * 2 : 256;
        b->cand = ocp_xrealloc(b->cand, (size_t)b->capcand * sizeof *b->cand);
    }
    path *c = &b->cand[b->ncand];
    c->score = score;
    c->hash = hash;
    c->code = code;
    c->rec = add_rec(b, code, from->rec, b->step_p);
    c->dict = (int8_t)dict;
    c->fresh = (int8_t)fresh;
    c->cont = (int8_t)cont;
    if (st)
        c->st = *st;
    else
        c->st.n = 0;
    b->stamp[h] = b->gen;
    b->slot[h] = b->ncand++;
}

/* A step's certainty: log(p) and the offset, on every step. */
static double cert(double p)
{
    return (p > 1e-13 ? log(p) : MIN_CERT) + STEP_OFFSET;
}

/* Path `from` takes class k (not its own, not the null) as a new character, the step
 * scored w, going on as cont. */
static void take_char(beam *b, const path *from, int k, double w, int cont)
{
    int uni = b->inv[k];
    if (uni < 0 || (b->m->enabled && !b->m->enabled[uni]))
        return;
    uint64_t h = mix(from->hash, uni);
    if (from->dict && w <= WORST_DICT)
        return;
    if (k == b->space) {
        /* A dictionary path crosses a space only at the end of a word. */
        if (from->dict && (from->fresh || !ocp_dict_word_end(b->dict, &from->st)))
            return;
        offer(b, from, k, from->score + (from->dict ? w : w * NODICT_RATIO), h, 0, 1, cont, NULL);
        /* The next word may be read against the dictionary: the best such start of each
         * step joins the dictionary paths after the step's other offers (one, so that the
         * starts do not crowd out the words in progress). */
        if (b->dict && w > WORST_DICT) {
            double sc = from->score + w;
            if (!b->init[cont].on || sc > b->init[cont].score) {
                b->init[cont].on = 1;
                b->init[cont].from = from;
                b->init[cont].score = sc;
                b->init[cont].step_p = b->step_p;
            }
        }
        return;
    }
    if (from->dict) {
        ocp_dict_state st;
        if (!ocp_dict_letter(b->dict, &from->st, uni, &st))
            return;
        offer(b, from, k, from->score + w, h, 1, 0, cont, &st);
    } else {
        offer(b, from, k, from->score + w * NODICT_RATIO, h, 0, 0, cont, NULL);
    }
}

/* The same text goes on (the path's own class again, or the null), the step scored w. */
static void keep_text(beam *b, const path *from, int k, double w, int cont)
{
    if (from->dict && w <= WORST_DICT)
        return;
    offer(b, from, k, from->score + (from->dict ? w : w * NODICT_RATIO), from->hash, from->dict,
          from->fresh, cont, &from->st);
}

/* Path `from` goes on with the classes of tier t. */
static void extend(beam *b, const path *from, int t, const int *cls, int ncls)
{
    int null = b->m->null_char, pc = from->code;
    const float *p = b->p;
    if (b->tier[pc] == t) {
        b->step_p = p[pc];
        if (from->cont != NO_DUP) /* the same character (or null) goes on */
            keep_text(b, from, pc, cert(p[pc]), ANY);
        /* The character ends inside this step, the null's probability with it (their
         * sum), and the next step may not take it again. */
        if (from->cont == ANY && t == 0 && pc != null) {
            b->step_p = p[pc] + p[null];
            keep_text(b, from, pc, cert((double)p[pc] + p[null]), NO_DUP);
        }
    }
    if (from->cont == ONLY_DUP)
        return;
    for (int i = 0; i < ncls; i++) {
        int k = cls[i];
        if (k == pc)
            continue;
        b->step_p = p[k];
        if (k == null) {
            keep_text(b, from, k, cert(p[k]), ANY);
            continue;
        }
        take_char(b, from, k, cert(p[k]), ANY);
        if (t == 0) {
            /* The character may take the null's probability of this step, and that of
             * the path's own character when the two are the step's likeliest, provided
             * it goes on at the next step. */
            double q = p[k] + p[null];
            if (from->cont == ANY && pc != null &&
                ((pc == b->top1 && k == b->top2) || (pc == b->top2 && k == b->top1)))
                q += p[pc];
            b->step_p = (float)q;
            take_char(b, from, k, cert(q), ONLY_DUP);
        }
    }
}

static int heap_of(const path *p)
{
    return p->dict * 3 + p->cont;
}

static int by_score(const void *a, const void *b)
{
    double x = ((const path *)a)->score, y = ((const path *)b)->score;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* A path through the steps (its class and the probability it was scored with at each),
 * turned into characters. */
static void path_chars(const ocp_lstm_model *m, const int *code, const float *prob, int steps,
                       ocp_lstm_char **chars, int *n)
{
    const int *inv = m->code_uni;
    ocp_lstm_char *out = ocp_xcalloc((size_t)steps + 1, sizeof *out);
    int k = 0, prev = -1;
    float nulls = 1.0f; /* the lowest probability of the nulls since the last character */
    for (int s = 0; s < steps; s++) {
        int c = code[s];
        if (c == m->null_char) {
            if (prob[s] < nulls)
                nulls = prob[s];
        } else if (c == prev && k > 0 && out[k - 1].last == s - 1) {
            out[k - 1].last = s;
            if (prob[s] < out[k - 1].prob)
                out[k - 1].prob = prob[s];
        } else if (inv[c] >= 0) {
            /* A character's certainty counts the nulls before it too (the reference). */
            out[k].text = m->unicharset.text[inv[c]];
            out[k].first = out[k].last = s;
            out[k].prob = prob[s] < nulls ? prob[s] : nulls;
            nulls = 1.0f;
            k++;
        }
        prev = c;
    }
    *chars = out;
    *n = k;
}

/* The winning path's steps read back from the records. */
static void read_back(const beam *b, const path *best, int steps, ocp_lstm_char **chars, int *n)
{
    int *code = ocp_xmalloc(((size_t)steps + 1) * sizeof *code);
    float *prob = ocp_xmalloc(((size_t)steps + 1) * sizeof *prob);
    int s = steps - 1;
    for (int r = best->rec; r >= 0 && s >= 0; r = b->recs[r].parent, s--) {
        code[s] = b->recs[r].code;
        prob[s] = b->recs[r].p;
    }
    path_chars(b->m, code, prob, steps, chars, n);
    free(code);
    free(prob);
}

void ocp_lstm_greedy_chars(const ocp_lstm_model *m, const float *probs, int steps,
                           ocp_lstm_char **chars, int *n)
{
    int *code = ocp_xmalloc(((size_t)steps + 1) * sizeof *code);
    float *prob = ocp_xmalloc(((size_t)steps + 1) * sizeof *prob);
    for (int s = 0; s < steps; s++) {
        const float *p = probs + (size_t)s * m->classes;
        int best = 0;
        for (int j = 1; j < m->classes; j++)
            if (p[j] > p[best])
                best = j;
        code[s] = best;
        prob[s] = p[best];
    }
    path_chars(m, code, prob, steps, chars, n);
    free(code);
    free(prob);
}

/* This step's classes in the order they are tried, tier by tier (beam.tier): the tier t
 * classes are order[start[t]] .. order[start[t + 1] - 1]. Sets the step's top1, top2. */
static void rank_classes(beam *b, int *order, int start[4])
{
    const ocp_lstm_model *m = b->m;
    /* The classes by probability, the first five in order: the tiers. */
    int top[5] = {0}, nt = 0;
    for (int k = 0; k < m->classes; k++) {
        if (nt == 5 && b->p[k] <= b->p[top[4]])
            continue;
        int j = nt < 5 ? nt++ : 4;
        for (; j > 0 && b->p[top[j - 1]] < b->p[k]; j--)
            top[j] = top[j - 1];
        top[j] = k;
    }
    b->top1 = top[0];
    b->top2 = nt > 1 ? top[1] : -1;
    for (int k = 0; k < m->classes; k++)
        b->tier[k] = 2;
    for (int i = nt - 1; i >= 0; i--)
        b->tier[top[i]] = (int8_t)(i < 2 ? 0 : 1);
    b->tier[m->null_char] = 0; /* the null is always tried first */
    int no = 0;
    for (int t = 0; t < 3; t++) {
        start[t] = no;
        for (int k = 0; k < m->classes; k++)
            if (b->tier[k] == t)
                order[no++] = k;
    }
    start[3] = no;
}

/* Every path of cur offers its continuations for this step (b->p) into b->cand: tier by
 * tier, until some offer may go on freely; then the best dictionary start of each
 * continuation. order: room for the model's classes. */
static void offer_step(beam *b, const path *cur, int ncur, int *order)
{
    int start[4];
    rank_classes(b, order, start);
    b->ncand = 0;
    b->gen++;
    for (int c = 0; c < 3; c++)
        b->init[c].on = 0;
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < ncur; i++)
            extend(b, &cur[i], t, order + start[t], start[t + 1] - start[t]);
        int open = 0; /* stop once some path may go on freely */
        for (int i = 0; i < b->ncand && !open; i++)
            open = b->cand[i].cont == ANY;
        if (open)
            break;
    }
    for (int c = 0; c < 3; c++)
        if (b->init[c].on) {
            ocp_dict_state st;
            ocp_dict_start(&st);
            const path *f = b->init[c].from;
            b->step_p = b->init[c].step_p;
            offer(b, f, b->space, b->init[c].score, mix(f->hash, b->inv[b->space]), 1, 1, c, &st);
        }
}

/* The best WIDTH offers of each heap into next; returns how many. */
static int keep_best(beam *b, path *next)
{
    qsort(b->cand, (size_t)b->ncand, sizeof *b->cand, by_score);
    int kept[HEAPS] = {0};
    int nn = 0;
    for (int i = 0; i < b->ncand; i++) {
        int hp = heap_of(&b->cand[i]);
        if (kept[hp] < WIDTH) {
            kept[hp]++;
            next[nn++] = b->cand[i];
        }
    }
    return nn;
}

/* Keeps the records that the paths of cur lead back to, in their order (a parent before its
 * children), and drops the others: those of offers the beam did not keep. The arena then
 * holds the kept paths' steps (at most HEAPS x WIDTH a step, fewer where they share), not
 * every offer of every step. */
static void compact(beam *b, path *cur, int ncur)
{
    int *map = ocp_xmalloc(((size_t)b->nrec + 1) * sizeof *map);
    for (int i = 0; i < b->nrec; i++)
        map[i] = -1;
    for (int i = 0; i < ncur; i++)
        for (int r = cur[i].rec; r >= 0 && map[r] == -1; r = b->recs[r].parent)
            map[r] = -2; /* kept */
    int n = 0;
    for (int i = 0; i < b->nrec; i++) {
        if (map[i] != -2)
            continue;
        rec x = b->recs[i];
        x.parent = x.parent >= 0 ? map[x.parent] : -1;
        map[i] = n;
        b->recs[n++] = x;
    }
    for (int i = 0; i < ncur; i++)
        if (cur[i].rec >= 0)
            cur[i].rec = map[cur[i].rec];
    b->nrec = n;
    if (b->caprec > 2 * n + 4096) {
        b->caprec = 2 * n + 4096;
        b->recs = ocp_xrealloc(b->recs, (size_t)b->caprec * sizeof *b->recs);
    }
    free(map);
}

/* The best path that ends the line at a word's end (any path outside the dictionary); failing
 * that, the best path; NULL when there is none. */
static const path *best_end(const beam *b, const path *cur, int ncur)
{
    const path *best = NULL;
    for (int pass = 0; pass < 2 && !best; pass++)
        for (int i = 0; i < ncur; i++) {
            const path *c = &cur[i];
            /* A path that must repeat its character has not finished it. */
            int ok = pass == 1 || (c->cont != ONLY_DUP &&
                                   (!c->dict || c->fresh || ocp_dict_word_end(b->dict, &c->st)));
            if (ok && (!best || c->score > best->score))
                best = c;
        }
    return best;
}

void ocp_lstm_beam(const ocp_lstm_model *m, const float *probs, int steps, int use_dict,
                   ocp_lstm_char **chars, int *n)
{
    beam b = {.m = m, .dict = use_dict && ocp_dict_on(&m->dict) ? &m->dict : NULL, .space = -1};
    b.inv = m->code_uni;
    if (m->recoder.n > 0 && m->recoder.length[0] == 1)
        b.space = m->recoder.code[0][0]; /* unichar 0 is the space */
    b.tier = ocp_xmalloc((size_t)m->classes);
    b.slot = ocp_xmalloc(TABLE * sizeof *b.slot);
    b.stamp = ocp_xcalloc(TABLE, sizeof *b.stamp);
    path *cur = ocp_xcalloc(HEAPS * WIDTH, sizeof *cur);
    path *next = ocp_xcalloc(HEAPS * WIDTH, sizeof *next);
    int ncur = 0;
    cur[ncur++] = (path){.code = m->null_char, .rec = -1, .fresh = 1};
    if (b.dict) {
        cur[ncur] = (path){.code = m->null_char, .rec = -1, .dict = 1, .fresh = 1};
        ocp_dict_start(&cur[ncur].st);
        ncur++;
    }
    int *order = ocp_xmalloc((size_t)m->classes * sizeof *order);
    int kept = 0; /* records after the last compaction */
    for (int s = 0; s < steps && ncur > 0; s++) {
        b.p = probs + (size_t)s * m->classes;
        offer_step(&b, cur, ncur, order);
        int nn = keep_best(&b, next);
        path *spare = cur; /* the offers point into cur until here */
        cur = next;
        next = spare;
        ncur = nn;
        if (b.nrec > 2 * kept + 65536) {
            compact(&b, cur, ncur);
            kept = b.nrec;
        }
    }
    const path *best = best_end(&b, cur, ncur);
    if (best && steps > 0) {
        read_back(&b, best, steps, chars, n);
    } else {
        *chars = ocp_xcalloc(1, sizeof **chars);
        *n = 0;
    }
    free(order);
    free(cur);
    free(next);
    free(b.tier);
    free(b.recs);
    free(b.cand);
    free(b.slot);
    free(b.stamp);
}

char *ocp_lstm_chars_text(const ocp_lstm_char *chars, int n)
{
    ocp_sb sb;
    ocp_sb_init(&sb);
    int space = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(chars[i].text, " ") == 0) {
            space++;
            continue;
        }
        for (; space > 0 && sb.len; space--)
            ocp_sb_putc(&sb, ' ');
        space = 0;
        ocp_sb_puts(&sb, chars[i].text);
    }
    char *s = ocp_xstrdup(sb.buf ? sb.buf : "");
    ocp_sb_fini(&sb);
    return s;
}

float ocp_lstm_mean_best(const ocp_lstm_model *m, const float *probs, int steps)
{
    double sum = 0;
    for (int s = 0; s < steps; s++) {
        const float *p = probs + (size_t)s * m->classes;
        float best = p[0];
        for (int k = 1; k < m->classes; k++)
            if (p[k] > best)
                best = p[k];
        sum += best;
    }
    return steps ? (float)(sum / steps) : 0;
}
