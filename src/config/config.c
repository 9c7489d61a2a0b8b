/*
 * config.c: the settings table, its parsers and validators, and `config
 * show` (config.h).
 */
#include "config/config.h"
#include "core/error.h"
#include "core/memstat.h"
#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct setting_def {
    const char *name;
    ocp_setting_type type;
    const char *def;
    double min, max;
    const char *choices;
    const char *unit;
    char shortflag;
    const char *aliases;
    unsigned feature;
    const char *help;
} setting_def;

static const setting_def defs[OCP_S__COUNT] = {
#define X(id, name, type, def, min, max, choices, unit, sf, aliases, feat, help)                   \
    [OCP_S_##id] = {name, type, def,     (double)(min), (double)(max), choices,                    \
                    unit, sf,   aliases, feat,          help},
#include "config/settings.def"
#undef X
};

typedef struct value {
    int64_t i;
    double d;
    bool b;
    char *s; /* the canonical text of every value, whatever its type */
    ocp_source src;
    char *origin;
} value;

struct ocp_config {
    value v[OCP_S__COUNT];
    char errmsg[512];
};

static const char *const src_names[] = {"default", "file", "env", "flag"};

/* The presets of the reference system: GPU memory settings (and cpu). */
typedef struct preset_value {
    const char *preset;
    ocp_setting_id id;
    const char *value;
} preset_value;

static const preset_value presets[] = {
    {"conservative", OCP_S_GPU_MEMORY_FRACTION, "0.5"},
    {"conservative", OCP_S_GPU_MAX_MEMORY_MB, "4096"},
    {"conservative", OCP_S_GPU_ALLOW_GROWTH, "false"},
    {"balanced", OCP_S_GPU_MEMORY_FRACTION, "0.8"},
    {"balanced", OCP_S_GPU_MAX_MEMORY_MB, "0"},
    {"balanced", OCP_S_GPU_ALLOW_GROWTH, "true"},
    {"performance", OCP_S_GPU_MEMORY_FRACTION, "1.0"},
    {"performance", OCP_S_GPU_MAX_MEMORY_MB, "0"},
    {"performance", OCP_S_GPU_ALLOW_GROWTH, "true"},
    {"cpu", OCP_S_DEVICE, "cpu"},
};

const char *ocp_config_preset_value(const char *preset, ocp_setting_id id)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].preset, preset) == 0 && presets[i].id == id)
            return presets[i].value;
    return NULL;
}

static bool in_list(const char *list, const char *s, size_t n)
{
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

static void fmt_num(char *buf, size_t len, double x)
{
    snprintf(buf, len, "%.15g", x);
}

/* Describes what a setting allows, for error messages. */
static void allowed_text(const setting_def *d, char *buf, size_t len)
{
    char lo[32], hi[32];
    switch (d->type) {
    case OCP_T_INT:
    case OCP_T_DOUBLE:
        fmt_num(lo, sizeof lo, d->min);
        fmt_num(hi, sizeof hi, d->max);
        snprintf(buf, len, "%s number from %s to %s%s%s", d->type == OCP_T_INT ? "a whole" : "a",
                 lo, hi, d->unit ? " " : "", d->unit ? d->unit : "");
        break;
    case OCP_T_BOOL:
        snprintf(buf, len, "true/false, yes/no, on/off, 1/0");
        break;
    case OCP_T_ENUM:
        snprintf(buf, len, "one of %s", d->choices);
        break;
    case OCP_T_FORMATS:
        snprintf(buf, len, "a comma-separated list of %s", d->choices);
        break;
    case OCP_T_LANGS:
        snprintf(buf, len, "language names joined with '+' (letters, digits, _ - / only)");
        break;
    case OCP_T_DEVICE:
        snprintf(buf, len,
                 "auto, cpu, cuda:N or cuda:N,M,... (or cuda:N,cuda:M,...) with N a GPU index");
        break;
    case OCP_T_STRING:
        snprintf(buf, len, "any text");
        break;
    case OCP_T_PATHS:
        snprintf(buf, len, "folders joined with ':' (none empty)");
        break;
    }
}

static bool valid_langs(const char *s)
{
    if (!*s || *s == '+')
        return false;
    for (const char *p = s; *p; p++) {
        if (*p == '+') {
            if (p[1] == '\0' || p[1] == '+')
                return false;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '/')
            return false;
    }
    /* No path tricks: a language is a file name under tessdata (script/X is allowed). */
    return strstr(s, "..") == NULL && s[0] != '/';
}

/* Folders joined with ':', none of them empty; "" = none. */
static bool valid_paths(const char *s)
{
    if (!*s)
        return true;
    return s[0] != ':' && s[strlen(s) - 1] != ':' && !strstr(s, "::");
}

int ocp_config_lang_count(const char *langs)
{
    int n = langs && *langs ? 1 : 0;
    for (const char *p = langs; n && *p; p++)
        n += *p == '+';
    return n;
}

static bool valid_formats(const setting_def *d, const char *s)
{
    const char *p = s;
    if (!*s)
        return false;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || !in_list(d->choices, p, n))
            return false;
        if (!e)
            return true;
        p = e + 1;
    }
}

static bool valid_device(const char *s)
{
    if (strcmp(s, "auto") == 0 || strcmp(s, "cpu") == 0)
        return true;
    if (strncmp(s, "cuda:", 5) != 0)
        return false;
    const char *p = s + 5;
    for (;;) {
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
        if (p - s > 64)
            return false;
        if (*p == '\0')
            return true;
        if (*p != ',')
            return false;
        p++;
        if (strncmp(p, "cuda:", 5) == 0) /* cuda:0,cuda:1 as well as cuda:0,1 */
            p += 5;
    }
}

/* Parses text for setting id into *out. Returns false when it is not allowed. */
static bool parse_value(ocp_setting_id id, const char *text, value *out)
{
    const setting_def *d = &defs[id];
    memset(out, 0, sizeof *out);
    switch (d->type) {
    case OCP_T_INT: {
        int64_t i;
        if (!ocp_parse_i64(text, &i) || (double)i < d->min || (double)i > d->max)
            return false;
        out->i = i;
        out->d = (double)i;
        out->s = ocp_xasprintf("%lld", (long long)i);
        return true;
    }
    case OCP_T_DOUBLE: {
        double x;
        char buf[32];
        if (!ocp_parse_double(text, &x) || x < d->min || x > d->max)
            return false;
        out->d = x;
        fmt_num(buf, sizeof buf, x);
        out->s = ocp_xstrdup(buf);
        return true;
    }
    case OCP_T_BOOL: {
        bool b;
        if (!ocp_parse_bool(text, &b))
            return false;
        out->b = b;
        out->i = b;
        out->s = ocp_xstrdup(b ? "true" : "false");
        return true;
    }
    case OCP_T_ENUM:
        if (!in_list(d->choices, text, strlen(text)))
            return false;
        break;
    case OCP_T_FORMATS:
        if (!valid_formats(d, text))
            return false;
        break;
    case OCP_T_LANGS:
        if (!valid_langs(text))
            return false;
        break;
    case OCP_T_DEVICE:
        if (!valid_device(text))
            return false;
        break;
    case OCP_T_PATHS:
        if (!valid_paths(text))
            return false;
        break;
    case OCP_T_STRING:
        break;
    }
    out->s = ocp_xstrdup(text);
    return true;
}

static int set_value(ocp_config *c, ocp_setting_id id, const char *text, ocp_source src,
                     const char *origin)
{
    value nv;
    if ((int)id < 0 || id >= OCP_S__COUNT)
        return ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg, "no such setting");
    if (src < c->v[id].src)
        return 0;
    if (!parse_value(id, text, &nv)) {
        char allowed[160];
        allowed_text(&defs[id], allowed, sizeof allowed);
        return ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg,
                        "setting %s: value '%.80s' from %s is not allowed: %s", defs[id].name, text,
                        origin, allowed);
    }
    /* A list (allow-root) given again at the same level grows: --allow-root A --allow-root B. */
    if (defs[id].type == OCP_T_PATHS && src == c->v[id].src && src != OCP_SRC_DEFAULT &&
        c->v[id].s[0] && nv.s[0]) {
        char *both = ocp_xasprintf("%s:%s", c->v[id].s, nv.s);
        free(nv.s);
        nv.s = both;
    }
    free(c->v[id].s);
    free(c->v[id].origin);
    c->v[id] = nv;
    c->v[id].src = src;
    c->v[id].origin = ocp_xstrdup(origin);
    return 0;
}

/*
 * The memory this process may use, in MB: the machine's (/proc/meminfo), or its cgroup's
 * memory.max (v2) when that is lower (a container's limit). 0 when neither can be read.
 */
static long machine_mb(void)
{
    ocp_sysmem sm;
    long mb = ocp_memstat_system(&sm) == 0 && sm.total_kb > 0 ? sm.total_kb / 1024 : 0;
    char line[512], path[600];
    FILE *f = fopen("/proc/self/cgroup", "r");
    path[0] = '\0';
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3) == 0) { /* the v2 hierarchy's line */
            line[strcspn(line, "\n")] = '\0';
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
        }
    }
    if (f)
        fclose(f);
    long long max = 0;
    if (path[0] && (f = fopen(path, "r"))) {
        if (fscanf(f, "%lld", &max) == 1 && max > 0 && (mb == 0 || max / 1048576 < mb))
            mb = (long)(max / 1048576);
        fclose(f);
    }
    return mb;
}

/*
 * The default of a setting whose default is "machine" into buf, and why into origin: a
 * memory-bounded system is bounded out of the box. The node's budget is half the machine's
 * memory; a worker's hard limit a quarter, from 256 to 2048 MB (the largest page the
 * default limits let through, 80 megapixels not resized, peaks near 1 GB at about 11
 * bytes/pixel: README). A machine whose memory cannot be read gets 0 (none), said so.
 */
static void machine_default(ocp_setting_id id, char *buf, size_t len, char *origin, size_t olen)
{
    long mb = machine_mb(), v;
    if (mb <= 0) {
        snprintf(buf, len, "0");
        snprintf(origin, olen, "default (none: this machine's memory is unknown)");
        return;
    }
    if (id == OCP_S_MEMORY_BUDGET) {
        v = mb / 2;
        snprintf(origin, olen, "default (half of this machine's %ld MB)", mb);
    } else {
        v = mb / 4 < 256 ? 256 : mb / 4 > 2048 ? 2048 : mb / 4;
        snprintf(origin, olen, "default (a quarter of this machine's %ld MB, 256 to 2048)", mb);
    }
    if (v > (long)defs[id].max)
        v = (long)defs[id].max;
    snprintf(buf, len, "%ld", v);
}

ocp_config *ocp_config_create(void)
{
    ocp_config *c = ocp_xcalloc(1, sizeof *c);
    for (int i = 0; i < OCP_S__COUNT; i++) {
        char def[32], origin[160] = "default";
        const char *d = defs[i].def;
        if (strcmp(d, "machine") == 0) {
            machine_default((ocp_setting_id)i, def, sizeof def, origin, sizeof origin);
            d = def;
        }
        int err = set_value(c, (ocp_setting_id)i, d, OCP_SRC_DEFAULT, origin);
        /* The defaults are ours: a default that fails its own validation is a bug. */
        if (err) {
            fprintf(stderr, "ocrpool: internal error: %s\n", c->errmsg);
            abort();
        }
    }
    return c;
}

void ocp_config_destroy(ocp_config *c)
{
    if (!c)
        return;
    for (int i = 0; i < OCP_S__COUNT; i++) {
        free(c->v[i].s);
        free(c->v[i].origin);
    }
    free(c);
}

int ocp_config_find(const char *name)
{
    char norm[64];
    size_t n = strlen(name);
    if (n >= sizeof norm)
        return -1;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '_' ? '-' : (char)tolower((unsigned char)name[i]);
    for (int i = 0; i < OCP_S__COUNT; i++)
        if (strcmp(defs[i].name, norm) == 0)
            return i;
    return -1;
}

int ocp_config_find_short(char ch)
{
    for (int i = 0; i < OCP_S__COUNT; i++)
        if (defs[i].shortflag && defs[i].shortflag == ch)
            return i;
    return -1;
}

const char *ocp_config_name(ocp_setting_id id)
{
    return defs[id].name;
}

ocp_setting_type ocp_config_type(ocp_setting_id id)
{
    return defs[id].type;
}

static char *trim(char *s)
{
    char *e;
    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* A value without its trailing comment: a '#' after a space or tab starts one (a '#'
 * inside a word, as in "a#b", is kept); a quoted value is what lies between its quotes,
 * '#' included, and may be followed by a comment. */
static char *strip_comment(char *val)
{
    if (val[0] == '"' || val[0] == '\'') {
        char *q = strchr(val + 1, val[0]);
        if (q) {
            char *rest = q + 1;
            while (*rest == ' ' || *rest == '\t')
                rest++;
            if (!*rest || *rest == '#') {
                *q = '\0';
                return val + 1;
            }
        }
        return val;
    }
    for (char *p = val; *p; p++)
        if (*p == '#' && p > val && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return trim(val);
        }
    return val;
}

int ocp_config_load_file(ocp_config *c, const char *path)
{
    FILE *f = fopen(path, "re");
    char line[4096];
    int lineno = 0, err = 0;
    if (!f)
        return ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg,
                        "config file %s: cannot open: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        char *s, *eq, *key, *val;
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            err = ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg,
                           "config file %s:%d: line too long", path, lineno);
            break;
        }
        s = trim(line);
        if (!*s || *s == '#' || *s == ';' || *s == '[')
            continue;
        eq = strpbrk(s, "=:");
        if (!eq) {
            err = ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg,
                           "config file %s:%d: expected 'name = value'", path, lineno);
            break;
        }
        *eq = '\0';
        key = trim(s);
        val = trim(eq + 1);
        val = strip_comment(val);
        int id = ocp_config_find(key);
        if (id < 0) {
            err = ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg,
                           "config file %s:%d: unknown setting '%.64s' (see ocrpool config show)",
                           path, lineno, key);
            break;
        }
        char origin[300];
        snprintf(origin, sizeof origin, "file %s:%d", path, lineno);
        err = set_value(c, (ocp_setting_id)id, val, OCP_SRC_FILE, origin);
        if (err)
            break;
    }
    fclose(f);
    return err;
}

static int env_one(ocp_config *c, ocp_setting_id id, const char *var)
{
    const char *v = getenv(var);
    char origin[128];
    if (!v)
        return 0;
    snprintf(origin, sizeof origin, "environment %s", var);
    return set_value(c, id, v, OCP_SRC_ENV, origin);
}

int ocp_config_load_env(ocp_config *c)
{
    for (int i = 0; i < OCP_S__COUNT; i++) {
        const setting_def *d = &defs[i];
        char var[96];
        int err;
        /* The aliases first, so that ocrpool's own name, set last, wins. */
        const char *p = d->aliases;
        while (*p) {
            const char *e = strchr(p, ' ');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            snprintf(var, sizeof var, "%.*s", (int)n, p);
            if ((err = env_one(c, (ocp_setting_id)i, var)) != 0)
                return err;
            p += n;
            while (*p == ' ')
                p++;
        }
        size_t k = (size_t)snprintf(var, sizeof var, "OCRPOOL_");
        for (const char *q = d->name; *q && k < sizeof var - 1; q++)
            var[k++] = *q == '-' ? '_' : (char)toupper((unsigned char)*q);
        var[k] = '\0';
        if ((err = env_one(c, (ocp_setting_id)i, var)) != 0)
            return err;
    }
    return 0;
}

int ocp_config_set(ocp_config *c, ocp_setting_id id, const char *text, ocp_source src,
                   const char *origin)
{
    return set_value(c, id, text, src, origin);
}

int ocp_config_finish(ocp_config *c)
{
    const value *pv = &c->v[OCP_S_PRESET], *lv = &c->v[OCP_S_LANG];
    if (ocp_config_lang_count(lv->s) > c->v[OCP_S_MAX_LANGUAGES].i)
        return ocp_errf(OCP_E_CONFIG, c->errmsg, sizeof c->errmsg,
                        "setting lang: '%.80s' from %s names %d languages, more than "
                        "max-languages %lld (each is a model to load)",
                        lv->s, lv->origin, ocp_config_lang_count(lv->s),
                        (long long)c->v[OCP_S_MAX_LANGUAGES].i);
    if (strcmp(pv->s, "none") == 0)
        return 0;
    char origin[400];
    snprintf(origin, sizeof origin, "preset %s (%s)", pv->s, pv->origin);
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset_value *p = &presets[i];
        if (strcmp(p->preset, pv->s) != 0)
            continue;
        /* Explicit settings at the preset's level or above win over it. */
        if (c->v[p->id].src >= pv->src)
            continue;
        int err = set_value(c, p->id, p->value, pv->src, origin);
        if (err)
            return err;
    }
    return 0;
}

const char *ocp_config_errmsg(const ocp_config *c)
{
    return c->errmsg;
}

int64_t ocp_config_int(const ocp_config *c, ocp_setting_id id)
{
    return c->v[id].i;
}

double ocp_config_double(const ocp_config *c, ocp_setting_id id)
{
    return c->v[id].d;
}

bool ocp_config_bool(const ocp_config *c, ocp_setting_id id)
{
    return c->v[id].b;
}

const char *ocp_config_str(const ocp_config *c, ocp_setting_id id)
{
    return c->v[id].s;
}

ocp_source ocp_config_source(const ocp_config *c, ocp_setting_id id)
{
    return c->v[id].src;
}

const char *ocp_config_origin(const ocp_config *c, ocp_setting_id id)
{
    return c->v[id].origin;
}

static void unused_note(const setting_def *d, const char *engine, unsigned feats, char *buf,
                        size_t len)
{
    buf[0] = '\0';
    if (d->feature && !(d->feature & feats))
        snprintf(buf, len, "accepted, not used by engine %s%s", engine,
                 d->feature == OCP_FEAT_GPU ? " (no GPU path: auto means cpu)" : "");
}

/* How much of a setting's unit to print after value: "1 page", not "1 pages" (a plural
 * word unit loses its 's' after exactly 1; "s", "ms", "KiB" stay as they are). */
static int unit_len(const setting_def *d, const char *v)
{
    int n = d->unit ? (int)strlen(d->unit) : 0;
    return n > 3 && d->unit[n - 1] == 's' && strcmp(v, "1") == 0 ? n - 1 : n;
}

/* A value as config show prints it: the broker URL without its password. */
static const char *shown_str(const setting_def *d, const value *v, char *buf, size_t len)
{
    return d == &defs[OCP_S_BROKER] ? ocp_url_shown(v->s, buf, len) : v->s;
}

static json_t *json_value(const setting_def *d, const value *v)
{
    char buf[1024];
    switch (d->type) {
    case OCP_T_INT:
        return json_integer(v->i);
    case OCP_T_DOUBLE:
        return json_real(v->d);
    case OCP_T_BOOL:
        return json_boolean(v->b);
    default:
        return json_string(shown_str(d, v, buf, sizeof buf));
    }
}

void ocp_config_show(const ocp_config *c, FILE *out, bool json, const char *engine, unsigned feats)
{
    char note[160];
    if (json) {
        json_t *arr = json_array();
        for (int i = 0; i < OCP_S__COUNT; i++) {
            const setting_def *d = &defs[i];
            const value *v = &c->v[i];
            unused_note(d, engine, feats, note, sizeof note);
            json_t *o = json_object();
            json_object_set_new(o, "name", json_string(d->name));
            json_object_set_new(o, "value", json_value(d, v));
            json_object_set_new(o, "default", json_string(d->def));
            json_object_set_new(o, "source", json_string(src_names[v->src]));
            json_object_set_new(o, "origin", json_string(v->origin));
            json_object_set_new(o, "unit", d->unit ? json_string(d->unit) : json_null());
            json_object_set_new(o, "used", json_boolean(note[0] == '\0'));
            if (note[0])
                json_object_set_new(o, "note", json_string(note));
            json_object_set_new(o, "help", json_string(d->help));
            json_array_append_new(arr, o);
        }
        char *s = json_dumps(arr, JSON_INDENT(2));
        fprintf(out, "%s\n", s);
        free(s);
        json_decref(arr);
        return;
    }
    for (int i = 0; i < OCP_S__COUNT; i++) {
        const setting_def *d = &defs[i];
        const value *v = &c->v[i];
        char shown[128], buf[1024];
        const char *s = shown_str(d, v, buf, sizeof buf);
        unused_note(d, engine, feats, note, sizeof note);
        snprintf(shown, sizeof shown, "%s%s%.*s", s[0] ? s : "\"\"", d->unit ? " " : "",
                 unit_len(d, s), d->unit ? d->unit : "");
        fprintf(out, "%-22s %-18s %s%s%s\n", d->name, shown, v->origin, note[0] ? "; " : "", note);
    }
}

void ocp_config_print_help(FILE *out)
{
    for (int i = 0; i < OCP_S__COUNT; i++) {
        const setting_def *d = &defs[i];
        char flag[48];
        if (d->shortflag)
            snprintf(flag, sizeof flag, "-%c, --%s", d->shortflag, d->name);
        else
            snprintf(flag, sizeof flag, "    --%s", d->name);
        if (strcmp(d->def, "machine") == 0) /* its help says how it is derived */
            fprintf(out, "  %-28s %s\n", flag, d->help);
        else
            fprintf(out, "  %-28s %s (default %s%s%.*s)\n", flag, d->help,
                    d->def[0] ? d->def : "\"\"", d->unit ? " " : "", unit_len(d, d->def),
                    d->unit ? d->unit : "");
    }
}
