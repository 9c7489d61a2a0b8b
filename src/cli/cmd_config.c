/*
 * cmd_config.c: `ocrpool config show [--json]`: every setting, its value,
 * and where the value came from.
 */
#include "cli/cli.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K_JSON = 1 };

static const ocp_cli_opt config_opts[] = {{"json", 0, 0, K_JSON}, {NULL, 0, 0, 0}};

static void config_help(void)
{
    printf("usage: ocrpool config show [--json] [--config FILE] [--SETTING VALUE ...]\n\n"
           "Prints every setting, its value and its origin: default < config file <\n"
           "environment (OCRPOOL_<NAME>, and the reference's SURYA_*/COMPILE_* names) < flag.\n");
}

static int config_handler(void *ctx, int key, const char *arg)
{
    (void)arg;
    if (key == K_JSON)
        *(int *)ctx = 1;
    return 0;
}

int ocp_cmd_config(int argc, char **argv)
{
    ocp_config *cfg;
    char **pos;
    int npos, json = 0, rc;

    rc = ocp_cli_parse(argc, argv, config_opts, config_handler, &json, config_help, &cfg, &pos,
                       &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    if (npos != 1 || strcmp(pos[0], "show") != 0) {
        fprintf(stderr, "ocrpool: config: expected 'show' (see ocrpool config --help)\n");
        ocp_config_destroy(cfg);
        free(pos);
        return OCP_EXIT_USAGE;
    }
    const ocp_engine_ops *ops = ocp_engine_find(ocp_config_str(cfg, OCP_S_ENGINE));
    ocp_config_show(cfg, stdout, json, ops->name, ops->features);
    ocp_config_destroy(cfg);
    free(pos);
    return OCP_EXIT_OK;
}
