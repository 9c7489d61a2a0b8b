/*
 * options.c: command-line flags over the settings table (cli.h).
 *
 * Every setting is a flag of the same name (--max-image-size 2048 or
 * --max-image-size=2048; booleans also --acks-late / --no-acks-late);
 * commands add their own options (-o, --sidecar, ...).
 */
#include "cli/cli.h"
#include "core/log.h"
#include "engine/engine.h"
#include "gpu/gpu.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ocp_cli_opt *find_opt(const ocp_cli_opt *opts, const char *name, size_t n, char sc)
{
    for (; opts && opts->name; opts++) {
        if (sc ? opts->shortc == sc
               : (strlen(opts->name) == n && strncmp(opts->name, name, n) == 0))
            return opts;
    }
    return NULL;
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "ocrpool: %s '%s' (see --help)\n", what, arg);
    return OCP_EXIT_USAGE;
}

/* --config FILE first, wherever it is on the line, then the environment. 0 or an exit
 * status (said on stderr). */
static int load_sources(ocp_config *cfg, int argc, char **argv)
{
    const char *cfile = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return usage_error("missing file after", "--config");
            cfile = argv[i + 1];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            cfile = argv[i] + 9;
        }
    }
    if ((cfile && ocp_config_load_file(cfg, cfile)) || ocp_config_load_env(cfg)) {
        fprintf(stderr, "ocrpool: %s\n", ocp_config_errmsg(cfg));
        return OCP_EXIT_USAGE;
    }
    return 0;
}

/* The setting a long option names (key, without dashes), or -1; *neg for --no-NAME of a
 * boolean given without a value. */
static int setting_of(const char *key, int has_val, int *neg)
{
    /* Other spellings: --jobs (as make), --memory-fraction (gpu-test's). */
    int id = strcmp(key, "jobs") == 0              ? (int)OCP_S_CONCURRENCY
             : strcmp(key, "memory-fraction") == 0 ? (int)OCP_S_GPU_MEMORY_FRACTION
             : strcmp(key, "soft-time-limit") == 0 ? (int)OCP_S_PAGE_TIMEOUT
                                                   : ocp_config_find(key);
    *neg = 0;
    if (id < 0 && strncmp(key, "no-", 3) == 0) {
        id = ocp_config_find(key + 3);
        if (id >= 0 && ocp_config_type((ocp_setting_id)id) == OCP_T_BOOL && !has_val)
            *neg = 1;
        else
            id = -1;
    }
    return id;
}

/* One option, argv[*i] (*i moves past its value): a command's own, through handler, or
 * a setting, into cfg. 0, or an exit status (said on stderr). */
static int parse_option(int argc, char **argv, int *i, const ocp_cli_opt *opts,
                        ocp_cli_handler handler, void *ctx, ocp_config *cfg)
{
    const char *a = argv[*i], *val = NULL;
    const ocp_cli_opt *o;
    char flag[80];
    int id = -1, neg = 0;
    if (a[1] == '-') {
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (eq)
            val = eq + 1;
        if (nlen == 6 && strncmp(name, "config", 6) == 0) {
            if (!val)
                (*i)++; /* read already (load_sources) */
            return 0;
        }
        o = find_opt(opts, name, nlen, 0);
        if (!o) {
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)(nlen < 63 ? nlen : 63), name);
            if ((id = setting_of(key, val != NULL, &neg)) < 0)
                return usage_error("unknown option", a);
        }
        snprintf(flag, sizeof flag, "flag --%.*s", (int)(nlen < 60 ? nlen : 60), name);
    } else {
        o = find_opt(opts, NULL, 0, a[1]);
        /* -j N is the usual spelling of concurrency for batch jobs (make, xargs). */
        if (!o && (id = a[1] == 'j' ? (int)OCP_S_CONCURRENCY : ocp_config_find_short(a[1])) < 0)
            return usage_error("unknown option", a);
        if (a[2])
            val = a + 2;
        snprintf(flag, sizeof flag, "flag -%c", a[1]);
    }
    int needs_arg = o ? o->has_arg : !(ocp_config_type((ocp_setting_id)id) == OCP_T_BOOL);
    if (!val && needs_arg) {
        if (*i + 1 >= argc)
            return usage_error("missing value after", a);
        val = argv[++*i];
    }
    if (o) {
        if (!o->has_arg && val)
            return usage_error("no value is taken by", a);
        return handler(ctx, o->key, val) ? OCP_EXIT_USAGE : 0;
    }
    if (!val)
        val = neg ? "false" : "true";
    if (ocp_config_set(cfg, (ocp_setting_id)id, val, OCP_SRC_FLAG, flag)) {
        fprintf(stderr, "ocrpool: %s\n", ocp_config_errmsg(cfg));
        return OCP_EXIT_USAGE;
    }
    return 0;
}

int ocp_cli_parse(int argc, char **argv, const ocp_cli_opt *opts, ocp_cli_handler handler,
                  void *ctx, void (*help)(void), ocp_config **cfgp, char ***posp, int *npos)
{
    ocp_config *cfg = ocp_config_create();
    char **pos = ocp_xcalloc((size_t)argc + 1, sizeof *pos);
    int np = 0, rc, only_pos = 0;

    if ((rc = load_sources(cfg, argc, argv)) != 0)
        goto fail;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            pos[np++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            only_pos = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help();
            rc = -1;
            goto fail;
        } else if ((rc = parse_option(argc, argv, &i, opts, handler, ctx, cfg)) != 0) {
            goto fail;
        }
    }
    if (ocp_config_finish(cfg)) {
        fprintf(stderr, "ocrpool: %s\n", ocp_config_errmsg(cfg));
        rc = OCP_EXIT_USAGE;
        goto fail;
    }
    ocp_log_level = ocp_log_parse_level(ocp_config_str(cfg, OCP_S_LOG_LEVEL));
    *cfgp = cfg;
    *posp = pos;
    *npos = np;
    return 0;
fail:
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}

int ocp_cli_check_device(const ocp_config *cfg)
{
    const ocp_engine_ops *ops = ocp_engine_find(ocp_config_str(cfg, OCP_S_ENGINE));
    const char *device = ocp_config_str(cfg, OCP_S_DEVICE);
    int uses_gpu = (ops->features & OCP_FEAT_GPU) != 0;
    ocp_gpu_plan plan;
    char err[600];
    int rc;

    if (strcmp(device, "cpu") == 0 || (strcmp(device, "auto") == 0 && !uses_gpu))
        return 0;
    ocp_gpu_list *gpus = ocp_xcalloc(1, sizeof *gpus);
    ocp_gpu_discover(gpus);
    rc = ocp_gpu_resolve(device, ops->name, uses_gpu, gpus, &plan, err, sizeof err);
    free(gpus);
    if (rc) {
        fprintf(stderr, "ocrpool: setting device: '%s' from %s: %s\n", device,
                ocp_config_origin(cfg, OCP_S_DEVICE), err);
        return OCP_EXIT_USAGE;
    }
    OCP_LOG(OCP_LOG_INFO, "device %s: %s", device, plan.why);
    return 0;
}
