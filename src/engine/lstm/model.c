/*
 * model.c: reading Tesseract's LSTM models (model.h), written from the
 * format notes in the project's reference (not from Tesseract's source).
 */
#include "engine/lstm/model.h"
#include "core/error.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 16          /* nesting of the network tree */
#define MAX_CHILDREN 64       /* children of one node */
#define MAX_DIM 65536         /* rows or columns of a weight matrix; ni, no */
#define MAX_CLASSES 100000    /* unicharset and recoder entries */
#define MAX_MODEL (1u << 30)  /* a traineddata file */
#define MAX_NODES 1024        /* nodes of the network tree (Debian's have 13) */
#define MIN_NODE 27           /* the fewest bytes a node takes in the file */

/* A bounded little-endian reader. After the first failure every read fails. */
typedef struct rd {
    const unsigned char *p;
    size_t n, off;
    char *err;
    size_t errlen;
    int bad;
    int nodes; /* network nodes read so far */
} rd;

static int rd_fail(rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(rd *r, const char *fmt, ...)
{
    if (!r->bad) {
        char msg[300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(r->err, r->errlen, "%s (at byte %zu of %zu)", msg, r->off, r->n);
    }
    r->bad = 1;
    return OCP_E_FORMAT;
}

static int rd_bytes(rd *r, void *dst, size_t k, const char *what)
{
    if (r->bad)
        return OCP_E_FORMAT;
    if (k > r->n - r->off)
        return rd_fail(r, "truncated: %s needs %zu bytes", what, k);
    memcpy(dst, r->p + r->off, k);
    r->off += k;
    return 0;
}

static int8_t rd_i8(rd *r, const char *what)
{
    int8_t v = 0;
    rd_bytes(r, &v, 1, what);
    return v;
}

static int32_t rd_i32(rd *r, const char *what)
{
    unsigned char b[4] = {0};
    rd_bytes(r, b, 4, what);
    return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24);
}

static uint32_t rd_u32(rd *r, const char *what)
{
    return (uint32_t)rd_i32(r, what);
}

static int64_t rd_i64(rd *r, const char *what)
{
    uint32_t lo = rd_u32(r, what), hi = rd_u32(r, what);
    return (int64_t)((uint64_t)hi << 32 | lo);
}

static double rd_f64(rd *r, const char *what)
{
    uint64_t u = (uint64_t)rd_i64(r, what);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static float rd_f32(rd *r, const char *what)
{
    uint32_t u = rd_u32(r, what);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A length-prefixed string into buf (cap bytes with the NUL); longer ones are an error. */
static int rd_str(rd *r, char *buf, size_t cap, const char *what)
{
    uint32_t k = rd_u32(r, what);
    if (r->bad)
        return OCP_E_FORMAT;
    if (k >= cap)
        return rd_fail(r, "%s: a string of %u bytes, more than %zu", what, k, cap - 1);
    if (rd_bytes(r, buf, k, what))
        return OCP_E_FORMAT;
    buf[k] = '\0';
    return 0;
}

/* ---- the container ------------------------------------------------------------------- */

int ocp_tessdata_parts(const unsigned char *buf, size_t len, size_t off[OCP_TD_COUNT],
                       size_t size[OCP_TD_COUNT], char *err, size_t errlen)
{
    rd r = {.p = buf, .n = len, .err = err, .errlen = errlen};
    int32_t n = rd_i32(&r, "the component count");
    if (r.bad)
        return OCP_E_FORMAT;
    if (n < 1 || n > 1000 || (size_t)n * 8 > len - r.off)
        return rd_fail(&r, "not a traineddata file: %d components", (int)n);
    int64_t *o = ocp_xcalloc((size_t)n, sizeof *o);
    for (int i = 0; i < n; i++)
        o[i] = rd_i64(&r, "the component offsets");
    if (r.bad) {
        free(o);
        return OCP_E_FORMAT;
    }
    size_t table_end = r.off;
    memset(off, 0, OCP_TD_COUNT * sizeof *off);
    memset(size, 0, OCP_TD_COUNT * sizeof *size);
    for (int i = 0; i < n; i++) {
        if (o[i] == -1)
            continue;
        if (o[i] < (int64_t)table_end || (uint64_t)o[i] > len) {
            long long bad = (long long)o[i];
            free(o);
            return rd_fail(&r, "component %d: offset %lld outside the file", i, bad);
        }
        /* A component ends where the next present one starts (or at the end of the file). */
        int64_t end = (int64_t)len;
        for (int j = i + 1; j < n; j++) {
            if (o[j] != -1) {
                end = o[j];
                break;
            }
        }
        if (end < o[i]) {
            free(o);
            return rd_fail(&r, "component %d: offsets out of order", i);
        }
        if (i < OCP_TD_COUNT) {
            off[i] = (size_t)o[i];
            size[i] = (size_t)(end - o[i]);
        }
    }
    free(o);
    return 0;
}

/* ---- weight matrices and the network tree -------------------------------------------- */

static void matrix_free(ocp_lstm_matrix *m)
{
    free(m->w);
    free(m->scales);
    free(m->w8);
    free(m->fix);
    memset(m, 0, sizeof *m);
}

static int read_matrix(rd *r, ocp_lstm_matrix *m, int want_rows, int want_cols, const char *what)
{
    uint8_t mode = (uint8_t)rd_i8(r, what);
    if (r->bad)
        return OCP_E_FORMAT;
    if (!(mode & 1))
        return rd_fail(r,
                       "%s: a float weight matrix (tessdata_best): only int8 models "
                       "(tessdata_fast, as Debian ships) are supported for now",
                       what);
    int32_t rows = rd_i32(r, what), cols = rd_i32(r, what);
    rd_i8(r, what); /* the array's empty value */
    if (r->bad)
        return OCP_E_FORMAT;
    if (rows < 1 || cols < 2 || rows > MAX_DIM || cols > MAX_DIM)
        return rd_fail(r, "%s: a %d x %d weight matrix", what, (int)rows, (int)cols);
    if ((want_rows && rows != want_rows) || (want_cols && cols != want_cols))
        return rd_fail(r, "%s: a %d x %d weight matrix where %d x %d fits the network", what,
                       (int)rows, (int)cols, want_rows, want_cols);
    size_t k = (size_t)rows * (size_t)cols;
    if (k > r->n - r->off)
        return rd_fail(r, "truncated: %s needs %zu bytes", what, k);
    m->rows = rows;
    m->cols = cols;
    m->w = ocp_xmalloc(k);
    rd_bytes(r, m->w, k, what);
    uint32_t ns = rd_u32(r, what);
    if (r->bad)
        return OCP_E_FORMAT;
    if (ns != (uint32_t)rows)
        return rd_fail(r, "%s: %u scales for %d rows", what, ns, (int)rows);
    if ((size_t)ns * 8 > r->n - r->off)
        return rd_fail(r, "truncated: %s's scales", what);
    m->scales = ocp_xmalloc((size_t)ns * sizeof *m->scales);
    for (uint32_t i = 0; i < ns; i++)
        m->scales[i] = (float)(rd_f64(r, what) / 127.0);
    if (r->bad)
        return OCP_E_FORMAT;
    ocp_lstm_matrix_layout(m);
    return 0;
}

void ocp_lstm_matrix_layout(ocp_lstm_matrix *m)
{
    int n = m->cols - 1;
    free(m->w8);
    free(m->fix);
    m->blocks = (m->rows + 7) / 8;
    m->groups = (n + 3) / 4;
    /* An even number of blocks (zero rows after the last), for kernels taking two at once. */
    size_t pairs = (size_t)(m->blocks + 1) / 2;
    m->w8 = ocp_xcalloc(pairs * m->groups * 64 + 1, 1);
    m->fix = ocp_xcalloc(pairs * 16, sizeof *m->fix);
    for (int i = 0; i < m->rows; i++) {
        const int8_t *row = m->w + (size_t)i * m->cols;
        int32_t sum = 0;
        for (int j = 0; j < n; j++)
            sum += row[j];
        m->fix[i] = 127 * (int32_t)row[n] - 128 * sum;
        int8_t *pair = m->w8 + (size_t)(i / 16) * m->groups * 64 + (i % 16) / 8 * 32 + (i % 8) * 4;
        for (int j = 0; j < n; j++)
            pair[(size_t)(j / 4) * 64 + j % 4] = row[j];
    }
}

static void node_free(ocp_lstm_node *n)
{
    for (int i = 0; i < n->n_children; i++)
        node_free(&n->children[i]);
    free(n->children);
    matrix_free(&n->fc);
    for (int i = 0; i < 5; i++)
        matrix_free(&n->gate[i]);
    memset(n, 0, sizeof *n);
}

static const struct {
    const char *type;
    ocp_lstm_kind kind;
} kinds[] = {
    {"Input", OCP_LSTM_INPUT},       {"Series", OCP_LSTM_SERIES},
    {"Parallel", OCP_LSTM_PARALLEL}, {"XYTranspose", OCP_LSTM_WRAP},
    {"RTLReversed", OCP_LSTM_WRAP},  {"TTBReversed", OCP_LSTM_WRAP},
    {"Reversed", OCP_LSTM_WRAP},     {"Convolve", OCP_LSTM_CONVOLVE},
    {"Maxpool", OCP_LSTM_MAXPOOL},   {"Tanh", OCP_LSTM_FC},
    {"Logistic", OCP_LSTM_FC},       {"Relu", OCP_LSTM_FC},
    {"Linear", OCP_LSTM_FC},         {"Softmax", OCP_LSTM_FC},
    {"SoftmaxNoCTC", OCP_LSTM_FC},   {"LSTM", OCP_LSTM_LSTM},
    {"SummLSTM", OCP_LSTM_LSTM},
};

static int read_node(rd *r, ocp_lstm_node *n, int depth);

/* A series', parallel's or wrapper's children (counted against the bytes left first), and
 * its learning rates (not used to recognise). */
static int read_children(rd *r, ocp_lstm_node *n, const char *what, int depth)
{
    uint32_t c = rd_u32(r, what);
    if (r->bad)
        return OCP_E_FORMAT;
    if (c < 1 || c > MAX_CHILDREN || (n->kind == OCP_LSTM_WRAP && c != 1) ||
        (size_t)c * MIN_NODE > r->n - r->off)
        return rd_fail(r, "%s: %u children", what, c);
    n->children = ocp_xcalloc(c, sizeof *n->children);
    n->n_children = (int)c;
    for (uint32_t i = 0; i < c; i++)
        if (read_node(r, &n->children[i], depth + 1))
            return OCP_E_FORMAT;
    if (n->flags & 64) {
        uint32_t nlr = rd_u32(r, what);
        if (r->bad || (size_t)nlr * 4 > r->n - r->off)
            return rd_fail(r, "%s: learning rates truncated", what);
        if (nlr != c)
            return rd_fail(r, "%s: %u learning rates for %u children", what, nlr, c);
        for (uint32_t i = 0; i < nlr; i++)
            rd_f32(r, what);
    }
    return 0;
}

static int read_node(rd *r, ocp_lstm_node *n, int depth)
{
    char what[120];
    if (depth > MAX_DEPTH)
        return rd_fail(r, "the network is nested more than %d deep", MAX_DEPTH);
    if (++r->nodes > MAX_NODES)
        return rd_fail(r, "the network has more than %d nodes", MAX_NODES);
    if (rd_i8(r, "a node's marker") != 0 && !r->bad)
        return rd_fail(r, "a node in the old (pre-4.0) format");
    if (rd_str(r, n->type, sizeof n->type, "a node's type"))
        return OCP_E_FORMAT;
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(kinds[k].type, n->type) != 0)
        k++;
    if (k == sizeof kinds / sizeof kinds[0])
        return rd_fail(r, "network node type '%s' is not supported", n->type);
    n->kind = kinds[k].kind;
    rd_i8(r, "training");
    rd_i8(r, "needs_backprop");
    n->flags = rd_i32(r, "network flags");
    n->ni = rd_i32(r, "ni");
    n->no = rd_i32(r, "no");
    n->num_weights = rd_i32(r, "num_weights");
    if (rd_str(r, n->name, sizeof n->name, "a node's name"))
        return OCP_E_FORMAT;
    if (n->ni < 0 || n->no < 0 || n->ni > MAX_DIM || n->no > MAX_DIM)
        return rd_fail(r, "%s: %d inputs, %d outputs", n->name, n->ni, n->no);
    snprintf(what, sizeof what, "%s %s", n->type, n->name);
    switch (n->kind) {
    case OCP_LSTM_SERIES:
    case OCP_LSTM_PARALLEL:
    case OCP_LSTM_WRAP:
        if (read_children(r, n, what, depth))
            return OCP_E_FORMAT;
        break;
    case OCP_LSTM_INPUT:
        for (int i = 0; i < 5; i++)
            n->shape[i] = rd_i32(r, what);
        if (!r->bad && (n->shape[1] < 0 || n->shape[1] > 4096 || n->shape[3] < 0 ||
                        n->shape[3] > 4))
            return rd_fail(r, "%s: shape [%d,%d,%d,%d]", what, n->shape[0], n->shape[1],
                           n->shape[2], n->shape[3]);
        break;
    case OCP_LSTM_CONVOLVE:
        n->half_x = rd_i32(r, what);
        n->half_y = rd_i32(r, what);
        if (!r->bad && (n->half_x < 0 || n->half_y < 0 || n->half_x > 16 || n->half_y > 16))
            return rd_fail(r, "%s: half sizes %d, %d", what, n->half_x, n->half_y);
        break;
    case OCP_LSTM_MAXPOOL:
        n->x_scale = rd_i32(r, what);
        n->y_scale = rd_i32(r, what);
        if (!r->bad && (n->x_scale < 1 || n->y_scale < 1 || n->x_scale > 16 || n->y_scale > 16))
            return rd_fail(r, "%s: scales %d, %d", what, n->x_scale, n->y_scale);
        break;
    case OCP_LSTM_FC:
        if (read_matrix(r, &n->fc, n->no, n->ni + 1, what))
            return OCP_E_FORMAT;
        break;
    case OCP_LSTM_LSTM: {
        n->summarise = strcmp(n->type, "SummLSTM") == 0;
        n->na = rd_i32(r, what);
        if (r->bad)
            return OCP_E_FORMAT;
        /* The gates see the input and the previous output; a 2-D LSTM also the output of
         * the row above. */
        if (n->na == n->ni + 2 * n->no)
            n->two_d = 1;
        else if (n->na != n->ni + n->no)
            return rd_fail(r, "%s: %d gate inputs for %d inputs and %d outputs", what, n->na,
                           n->ni, n->no);
        static const char *const gates[5] = {"CI", "GI", "GF1", "GO", "GFS"};
        for (int g = 0; g < (n->two_d ? 5 : 4); g++) {
            char gw[160];
            snprintf(gw, sizeof gw, "%s gate %s", what, gates[g]);
            if (read_matrix(r, &n->gate[g], n->no, n->na + 1, gw))
                return OCP_E_FORMAT;
        }
        break;
    }
    }
    return r->bad ? OCP_E_FORMAT : 0;
}

/* ---- unicharset and recoder ---------------------------------------------------------- */

static void unicharset_free(ocp_unicharset *u)
{
    for (int i = 0; i < u->n; i++) {
        free(u->text[i]);
        free(u->script[i]);
    }
    free(u->text);
    free(u->script);
    free(u->is_digit);
    memset(u, 0, sizeof *u);
}

/* The next line of [*p, end) (without its newline) into a new string, or NULL at the end. */
static char *next_line(const char **p, const char *end)
{
    if (*p >= end)
        return NULL;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *e = nl ? nl : end;
    char *s = ocp_xstrndup(*p, (size_t)(e - *p));
    *p = nl ? nl + 1 : end;
    return s;
}

/* A unichar id field of entry i ("other case", "mirror"): absent, or one of the n. */
static int check_id(const char *field, long i, long n, const char *what, char *err, size_t errlen)
{
    char *e;
    long id;
    if (!field)
        return 0;
    id = strtol(field, &e, 10);
    if (e == field || *e || id < 0 || id >= n)
        return ocp_errf(OCP_E_FORMAT, err, errlen,
                        "unicharset entry %ld: %s '%s' is not one of its %ld unichars", i,
                        what, field, n);
    return 0;
}

/* Entry i's fields after its text: "properties script other_case" (the space's short
 * form), or "properties metrics script other_case direction mirror normed". */
static int read_entry(char **f, int nf, long i, long n, ocp_unicharset *u, char *err, size_t errlen)
{
    char *e;
    long props = nf >= 1 ? strtol(f[0], &e, 16) : 0;
    if (nf >= 1 && (e == f[0] || *e))
        return ocp_errf(OCP_E_FORMAT, err, errlen, "unicharset entry %ld: properties '%s'", i,
                        f[0]);
    /* Properties in hex: 1 alpha, 2 lower, 4 upper, 8 digit, 16 punctuation. */
    u->is_digit[i] = (props & 8) != 0;
    int metrics = nf >= 2 && strchr(f[1], ',') != NULL;
    int at = metrics ? 2 : 1; /* where the script is */
    u->script[i] = ocp_xstrdup(nf > at ? f[at] : "");
    if (check_id(nf > at + 1 ? f[at + 1] : NULL, i, n, "other case", err, errlen) ||
        check_id(metrics && nf > 5 ? f[5] : NULL, i, n, "mirror", err, errlen))
        return OCP_E_FORMAT;
    return 0;
}

static int read_unicharset(const unsigned char *buf, size_t len, ocp_unicharset *u, char *err,
                           size_t errlen)
{
    const char *p = (const char *)buf, *end = p + len;
    char *line = next_line(&p, end);
    long n = line ? strtol(line, NULL, 10) : -1;
    free(line);
    /* Each entry takes a line of at least 2 bytes. */
    if (n < 1 || n > MAX_CLASSES || (size_t)n > len / 2)
        return ocp_errf(OCP_E_FORMAT, err, errlen, "unicharset: %ld entries in %zu bytes", n, len);
    u->text = ocp_xcalloc((size_t)n, sizeof *u->text);
    u->script = ocp_xcalloc((size_t)n, sizeof *u->script);
    u->is_digit = ocp_xcalloc((size_t)n, 1);
    for (long i = 0; i < n; i++) {
        /* Each entry ends with a newline: a file cut inside the last one is refused. */
        line = memchr(p, '\n', (size_t)(end - p)) ? next_line(&p, end) : NULL;
        if (!line) {
            u->n = (int)i;
            return ocp_errf(OCP_E_FORMAT, err, errlen, "unicharset: %ld of %ld entries", i, n);
        }
        /* "text properties... script other_case direction mirror normed # comment" */
        char *save = NULL, *tok = strtok_r(line, " ", &save);
        u->text[i] = ocp_xstrdup(!tok || strcmp(tok, "NULL") == 0 ? " " : tok);
        char *fields[8] = {0};
        int nf = 0;
        while (nf < 8 && (tok = strtok_r(NULL, " \t", &save)) && tok[0] != '#')
            fields[nf++] = tok;
        int rc = read_entry(fields, nf, i, n, u, err, errlen);
        free(line);
        if (rc) {
            u->n = (int)i + 1;
            return rc;
        }
    }
    u->n = (int)n;
    return 0;
}

static void recoder_free(ocp_recoder *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->code[i]);
    free(c->code);
    free(c->length);
    memset(c, 0, sizeof *c);
}

static int read_recoder(const unsigned char *buf, size_t len, ocp_recoder *c, char *err,
                        size_t errlen)
{
    rd r = {.p = buf, .n = len, .err = err, .errlen = errlen};
    uint32_t n = rd_u32(&r, "the recoder's size");
    if (r.bad)
        return OCP_E_FORMAT;
    if (n < 1 || n > MAX_CLASSES || (size_t)n * 5 > len)
        return rd_fail(&r, "recoder: %u entries", n);
    c->length = ocp_xcalloc(n, sizeof *c->length);
    c->code = ocp_xcalloc(n, sizeof *c->code);
    c->n = (int)n;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        rd_i8(&r, "a recoder entry");
        int32_t k = rd_i32(&r, "a recoder entry");
        if (r.bad)
            break;
        if (k < 0 || k > 9)
            return rd_fail(&r, "recoder entry %u: length %d", i, (int)k);
        c->length[i] = k;
        c->code[i] = ocp_xcalloc((size_t)k + 1, sizeof **c->code);
        for (int32_t j = 0; j < k; j++)
            c->code[i][j] = rd_i32(&r, "a recoder code");
    }
    if (!r.bad && r.off != r.n)
        return rd_fail(&r, "recoder: %u entries end before the component's %zu bytes", n, r.n);
    return r.bad ? OCP_E_FORMAT : 0;
}

/* ---- the model ----------------------------------------------------------------------- */

void ocp_lstm_model_free(ocp_lstm_model *m)
{
    if (!m)
        return;
    node_free(&m->net);
    free(m->spec);
    free(m->version);
    for (int i = 0; i < m->n_params; i++) {
        free(m->params[i].name);
        free(m->params[i].value);
    }
    free(m->params);
    free(m->enabled);
    free(m->code_uni);
    unicharset_free(&m->unicharset);
    recoder_free(&m->recoder);
    for (int i = 0; i < 3; i++)
        ocp_dawg_fini(&m->dawg[i]);
    if (m->map)
        munmap(m->map, m->map_len);
    free(m);
}

/* The Input node at the head of the network (the first leaf). */
static const ocp_lstm_node *first_leaf(const ocp_lstm_node *n)
{
    while (n->n_children > 0)
        n = &n->children[0];
    return n;
}

int ocp_unicharset_match(const ocp_unicharset *u, const char *s, size_t *len)
{
    int best = -1;
    size_t bl = 0;
    for (int i = 0; i < u->n; i++) {
        size_t l = strlen(u->text[i]);
        if (l > bl && strncmp(s, u->text[i], l) == 0) {
            best = i;
            bl = l;
        }
    }
    *len = bl;
    return best;
}

void ocp_lstm_model_index(ocp_lstm_model *m)
{
    free(m->code_uni);
    m->code_uni = ocp_xmalloc(((size_t)m->classes + 1) * sizeof *m->code_uni);
    for (int k = 0; k < m->classes; k++)
        m->code_uni[k] = -1;
    for (int id = 0; id < m->recoder.n && id < m->unicharset.n; id++)
        if (m->recoder.length[id] == 1)
            m->code_uni[m->recoder.code[id][0]] = id;
}

/* The config's "name value" lines (comments and blank lines skipped). */
static void read_params(ocp_lstm_model *m, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    char *line;
    int cap = 0;
    while ((line = next_line(&p, end))) {
        char name[128], value[1024];
        if (line[0] != '#' && sscanf(line, "%127s %1023s", name, value) == 2) {
            if (m->n_params == cap) {
                cap = cap ? 2 * cap : 16;
                m->params = ocp_xrealloc(m->params, (size_t)cap * sizeof *m->params);
            }
            m->params[m->n_params].name = ocp_xstrdup(name);
            m->params[m->n_params++].value = ocp_xstrdup(value);
        }
        free(line);
    }
}

/* Tesseract's character lists among the parameters: a whitelist enables only its
 * characters, then the blacklist disables, then the unblacklist enables again. */
static void apply_char_lists(ocp_lstm_model *m)
{
    static const char *const names[3] = {"tessedit_char_whitelist", "tessedit_char_blacklist",
                                         "tessedit_char_unblacklist"};
    memset(m->enabled, 1, (size_t)m->unicharset.n);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < m->n_params; i++) {
            if (strcmp(m->params[i].name, names[k]) != 0)
                continue;
            if (k == 0)
                memset(m->enabled + 1, 0, (size_t)m->unicharset.n - 1);
            for (const char *c = m->params[i].value; *c;) {
                size_t l;
                int id = ocp_unicharset_match(&m->unicharset, c, &l);
                if (id > 0)
                    m->enabled[id] = k != 1;
                c += id >= 0 ? l : 1; /* not in this model's set: nothing to change */
            }
        }
}

static int load(const unsigned char *buf, size_t len, int borrow, ocp_lstm_model **out,
                char *err, size_t errlen)
{
    size_t off[OCP_TD_COUNT], size[OCP_TD_COUNT];
    int rc = ocp_tessdata_parts(buf, len, off, size, err, errlen);
    if (rc)
        return rc;
    if (!size[OCP_TD_LSTM])
        return ocp_errf(OCP_E_FORMAT, err, errlen,
                        "no LSTM model in this traineddata (a legacy-only file, which "
                        "only engine tesseract reads: --engine tesseract)");
    if (!size[OCP_TD_LSTM_UNICHARSET] || !size[OCP_TD_LSTM_RECODER])
        return ocp_errf(OCP_E_FORMAT, err, errlen,
                        "no lstm-unicharset or lstm-recoder component: a model with its "
                        "character set inside the network is not supported");
    ocp_lstm_model *m = ocp_xcalloc(1, sizeof *m);
    rd r = {.p = buf + off[OCP_TD_LSTM], .n = size[OCP_TD_LSTM], .err = err, .errlen = errlen};
    if (read_node(&r, &m->net, 0)) {
        rc = OCP_E_FORMAT;
        goto fail;
    }
    char spec[4096];
    if (rd_str(&r, spec, sizeof spec, "the network spec")) {
        rc = OCP_E_FORMAT;
        goto fail;
    }
    m->spec = ocp_xstrdup(spec);
    m->training_flags = rd_i32(&r, "training flags");
    m->training_iteration = rd_i32(&r, "training iteration");
    m->sample_iteration = rd_i32(&r, "sample iteration");
    m->null_char = rd_i32(&r, "null char");
    rd_f32(&r, "adam beta");
    rd_f32(&r, "learning rate");
    rd_f32(&r, "momentum");
    if (r.bad) {
        rc = OCP_E_FORMAT;
        goto fail;
    }
    if (r.off != r.n) {
        rc = ocp_errf(OCP_E_FORMAT, err, errlen,
                      "the lstm component is %zu bytes, its network ends at byte %zu", r.n, r.off);
        goto fail;
    }
    const ocp_lstm_node *in = first_leaf(&m->net);
    if (in->kind != OCP_LSTM_INPUT) {
        rc = ocp_errf(OCP_E_FORMAT, err, errlen, "the network does not start with an Input");
        goto fail;
    }
    m->input_height = in->shape[1];
    m->classes = m->net.no;
    if ((rc = read_unicharset(buf + off[OCP_TD_LSTM_UNICHARSET], size[OCP_TD_LSTM_UNICHARSET],
                              &m->unicharset, err, errlen)) ||
        (rc = read_recoder(buf + off[OCP_TD_LSTM_RECODER], size[OCP_TD_LSTM_RECODER],
                           &m->recoder, err, errlen)))
        goto fail;
    if ((rc = ocp__lstm_model_check(m, err, errlen)))
        goto fail;
    if (size[OCP_TD_VERSION])
        m->version = ocp_xstrndup((const char *)buf + off[OCP_TD_VERSION], size[OCP_TD_VERSION]);
    if (size[OCP_TD_CONFIG])
        read_params(m, (const char *)buf + off[OCP_TD_CONFIG], size[OCP_TD_CONFIG]);
    m->enabled = ocp_xmalloc((size_t)m->unicharset.n + 1);
    apply_char_lists(m);
    ocp_lstm_model_index(m);
    static const char *const dawg_name[3] = {"lstm-punc-dawg", "lstm-word-dawg",
                                             "lstm-number-dawg"};
    for (int i = 0; i < 3; i++) {
        size_t s = size[OCP_TD_LSTM_PUNC_DAWG + i];
        char why[256];
        if (s && ocp_dawg_read(buf + off[OCP_TD_LSTM_PUNC_DAWG + i], s, m->unicharset.n, borrow,
                               &m->dawg[i], why, sizeof why)) {
            rc = ocp_errf(OCP_E_FORMAT, err, errlen, "%s: %s", dawg_name[i], why);
            goto fail;
        }
    }
    if (m->dawg[1].edges)
        m->dict = (ocp_dict){&m->dawg[0], &m->dawg[1], &m->dawg[2], m->unicharset.is_digit};
    *out = m;
    return 0;
fail:
    ocp_lstm_model_free(m);
    return rc ? rc : OCP_E_FORMAT;
}

int ocp_lstm_model_load_buffer(const unsigned char *buf, size_t len, ocp_lstm_model **out,
                               char *err, size_t errlen)
{
    return load(buf, len, 0, out, err, errlen);
}

/* The file is mapped, not read: the dictionaries' edges (16 MB for san+eng) stay in the
 * mapping, shared by every worker through the page cache, and once the reader has checked
 * them (touching every page) the pages are let go, so that only those the decoder walks
 * come back. The rest of the model is copied into its structures. */
int ocp_lstm_model_load(const char *path, ocp_lstm_model **out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ocp_errf(-errno, err, errlen, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return ocp_errf(-e, err, errlen, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size < 1 || (uint64_t)sb.st_size > MAX_MODEL) {
        close(fd);
        return ocp_errf(OCP_E_FORMAT, err, errlen, "%s: %s", path,
                        !S_ISREG(sb.st_mode) ? "not a regular file"
                        : sb.st_size < 1     ? "empty"
                                             : "too large");
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return ocp_errf(-e, err, errlen, "%s: mmap: %s", path, strerror(e));
    char e2[400];
    int rc = load(map, len, 1, out, e2, sizeof e2);
    if (rc) {
        munmap(map, len);
        return ocp_errf(rc, err, errlen, "%s: %s", path, e2);
    }
    madvise(map, len, MADV_DONTNEED);
    (*out)->map = map;
    (*out)->map_len = len;
    return 0;
}

void ocp_lstm_model_drop_pages(const ocp_lstm_model *m)
{
    if (m && m->map)
        madvise(m->map, m->map_len, MADV_DONTNEED);
}

static long describe(const ocp_lstm_node *n, int depth, ocp_sb *out)
{
    long cost = 0;
    ocp_sb_printf(out, "%*s%s %s ni=%d no=%d", depth * 2, "", n->type, n->name, n->ni, n->no);
    switch (n->kind) {
    case OCP_LSTM_INPUT:
        ocp_sb_printf(out, " shape=[%d,%d,%d,%d]", n->shape[0], n->shape[1], n->shape[2],
                      n->shape[3]);
        break;
    case OCP_LSTM_CONVOLVE:
        ocp_sb_printf(out, " half=%d,%d", n->half_x, n->half_y);
        break;
    case OCP_LSTM_MAXPOOL:
        ocp_sb_printf(out, " scale=%d,%d", n->x_scale, n->y_scale);
        break;
    case OCP_LSTM_FC:
        ocp_sb_printf(out, " W%dx%d", n->fc.rows, n->fc.cols);
        cost += (long)n->fc.rows * n->fc.cols;
        break;
    case OCP_LSTM_LSTM:
        ocp_sb_printf(out, " na=%d %d-D%s gates %dx W%dx%d", n->na, n->two_d ? 2 : 1,
                      n->summarise ? " summarising" : "", n->two_d ? 5 : 4, n->gate[0].rows,
                      n->gate[0].cols);
        cost += (long)(n->two_d ? 5 : 4) * n->gate[0].rows * n->gate[0].cols;
        break;
    default:
        break;
    }
    ocp_sb_putc(out, '\n');
    for (int i = 0; i < n->n_children; i++)
        cost += describe(&n->children[i], depth + 1, out);
    return cost;
}

long ocp_lstm_model_describe(const ocp_lstm_model *m, ocp_sb *out)
{
    ocp_sb_printf(out, "spec %s\ninput height %d, %d classes (null %d), %d unichars, %d codes\n",
                  m->spec, m->input_height, m->classes, m->null_char, m->unicharset.n,
                  m->recoder.n);
    if (m->dawg[1].edges)
        ocp_sb_printf(out, "dictionaries: punctuation %ld edges, words %ld, numbers %ld\n",
                      m->dawg[0].n, m->dawg[1].n, m->dawg[2].n);
    else
        ocp_sb_printf(out, "no dictionaries\n");
    return describe(&m->net, 0, out);
}
