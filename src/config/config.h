/*
 * config.h: ocrpool's settings. One static table (settings.def) drives
 * parsing, validation, --help and `ocrpool config show`.
 *
 *   ocp_config_create()            defaults
 *   ocp_config_load_file(c, path)  INI file: `name = value`, # or ; comments,
 *                                  [sections] allowed and ignored
 *   ocp_config_load_env(c)         OCRPOOL_<NAME> and the reference's aliases
 *   ocp_config_set(c, id, v, ...)  one value from a flag (or any source)
 *   ocp_config_finish(c)           applies the preset; call once, last
 *
 * Every failure leaves one line in ocp_config_errmsg(c) naming the setting,
 * where the bad value came from and what is allowed.
 */
#ifndef OCP_CONFIG_CONFIG_H
#define OCP_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Engine features a setting may need; engines declare what they have. */
#define OCP_FEAT_GPU     1u
#define OCP_FEAT_MATH    2u
#define OCP_FEAT_COMPILE 4u
/* Not a setting's feature: the engine needs no pixels (the null engine). */
#define OCP_FEAT_NO_PIXELS 0x100u

typedef enum ocp_setting_type {
    OCP_T_INT,
    OCP_T_DOUBLE,
    OCP_T_BOOL,
    OCP_T_STRING,
    OCP_T_ENUM,    /* one of the comma-separated choices */
    OCP_T_LANGS,   /* tesseract language list: lang[+lang...] */
    OCP_T_FORMATS, /* comma-separated subset of the choices */
    OCP_T_DEVICE,  /* auto | cpu | cuda:N[,M...] */
    OCP_T_PATHS,   /* folders joined with ':'; a second value from the same source is added */
} ocp_setting_type;

typedef enum ocp_setting_id {
#define X(id, ...) OCP_S_##id,
#include "config/settings.def"
#undef X
    OCP_S__COUNT
} ocp_setting_id;

/* Where a value came from, in increasing precedence. */
typedef enum ocp_source { OCP_SRC_DEFAULT, OCP_SRC_FILE, OCP_SRC_ENV, OCP_SRC_FLAG } ocp_source;

typedef struct ocp_config ocp_config;

/* A new config holding the defaults; free with ocp_config_destroy(). */
ocp_config *ocp_config_create(void);
void ocp_config_destroy(ocp_config *c);

int ocp_config_load_file(ocp_config *c, const char *path);
/* Reads the process environment (environ). */
int ocp_config_load_env(ocp_config *c);
/*
 * Sets one setting from text. origin describes where it came from ("flag
 * --psm"); it is copied. A value from a lower source than the current one
 * is ignored. Returns 0 or OCP_E_CONFIG.
 */
int ocp_config_set(ocp_config *c, ocp_setting_id id, const char *value, ocp_source src,
                   const char *origin);
/* Applies the preset and checks what spans settings (lang has at most max-languages). */
int ocp_config_finish(ocp_config *c);
const char *ocp_config_errmsg(const ocp_config *c);

/*
 * The number of languages in a '+'-joined list ("san+eng": 2); 0 for NULL or "".
 * Only counts: which names are allowed is the engine's (ocp_engine_check_langs).
 */
int ocp_config_lang_count(const char *langs);

/* Finds a setting by name ("max-image-size" or "max_image_size"); -1 if none. */
int ocp_config_find(const char *name);
/* Finds a setting by its one-letter flag; -1 if none. */
int ocp_config_find_short(char c);
const char *ocp_config_name(ocp_setting_id id);
ocp_setting_type ocp_config_type(ocp_setting_id id);

/* Typed reads; strings are borrowed and live as long as the config. */
int64_t ocp_config_int(const ocp_config *c, ocp_setting_id id);
double ocp_config_double(const ocp_config *c, ocp_setting_id id);
bool ocp_config_bool(const ocp_config *c, ocp_setting_id id);
const char *ocp_config_str(const ocp_config *c, ocp_setting_id id);
ocp_source ocp_config_source(const ocp_config *c, ocp_setting_id id);
/* "default", "file F:LINE", "env NAME", "flag --NAME", "preset P (flag --preset)". Borrowed. */
const char *ocp_config_origin(const ocp_config *c, ocp_setting_id id);

/*
 * Prints every setting with its value and origin; settings that need a
 * feature engine_features lacks are marked "accepted, not used by engine
 * NAME". As JSON when json is true.
 */
void ocp_config_show(const ocp_config *c, FILE *out, bool json, const char *engine_name,
                     unsigned engine_features);

/* One line per setting for --help: flag, unit, default, help. */
void ocp_config_print_help(FILE *out);

/* The value preset (conservative, balanced, performance, cpu) gives setting id, or NULL. */
const char *ocp_config_preset_value(const char *preset, ocp_setting_id id);

#endif
