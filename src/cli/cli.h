/*
 * cli.h: what the subcommands share: building the configuration from file,
 * environment and flags, and the subcommand entry points.
 *
 * Exit codes: 0 success, 1 some work failed, 2 usage or configuration error.
 */
#ifndef OCP_CLI_CLI_H
#define OCP_CLI_CLI_H

#include "config/config.h"

enum { OCP_EXIT_OK = 0, OCP_EXIT_FAILED = 1, OCP_EXIT_USAGE = 2 };

/* A command's own option (not a setting). Open type. */
typedef struct ocp_cli_opt {
    const char *name; /* long name without dashes */
    char shortc;      /* 0 = none */
    int has_arg;
    int key; /* passed back to the handler */
} ocp_cli_opt;

/* Called for each of a command's own options; returns 0 or prints and returns non-zero. */
typedef int (*ocp_cli_handler)(void *ctx, int key, const char *arg);

/*
 * Parses argv (after the subcommand name) into a new config (*cfg, freed by
 * ocp_config_destroy): --config FILE first, then the environment, then the
 * flags, then the preset. Positional arguments are collected in *pos (a new
 * array of borrowed strings, freed with free()). Returns 0, or prints one
 * line and returns OCP_EXIT_USAGE. --help prints usage (through help) and
 * returns -1.
 */
int ocp_cli_parse(int argc, char **argv, const ocp_cli_opt *opts, ocp_cli_handler handler,
                  void *ctx, void (*help)(void), ocp_config **cfg, char ***pos, int *npos);

/*
 * Validates the device settings against the GPUs present and the engine's
 * needs (NVML is loaded only when a GPU could be used or is named). Returns
 * 0, or prints one line and returns OCP_EXIT_USAGE.
 */
int ocp_cli_check_device(const ocp_config *cfg);

int ocp_cmd_ocr(int argc, char **argv);
int ocp_cmd_worker(int argc, char **argv);
int ocp_cmd_submit(int argc, char **argv);
int ocp_cmd_status(int argc, char **argv);
int ocp_cmd_result(int argc, char **argv);
int ocp_cmd_requeue(int argc, char **argv);
int ocp_cmd_monitor(int argc, char **argv);
int ocp_cmd_stop(int argc, char **argv);
int ocp_cmd_control(int argc, char **argv);
int ocp_cmd_serve(int argc, char **argv);
int ocp_cmd_config(int argc, char **argv);
int ocp_cmd_gpus(int argc, char **argv);
int ocp_cmd_gpu_test(int argc, char **argv);
int ocp_cmd_model_info(int argc, char **argv);

/* Checks the allow-root setting (folders joined by ':', each must be one); with required,
 * at least one must be given (a node on Redis). 0, or says why ("ocrpool: CMD: ...") and
 * returns OCP_EXIT_USAGE. */
int ocp_cli_allow_roots(const ocp_config *cfg, const char *cmd, int required);

#endif
