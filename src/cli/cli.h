/*
 * cli.h: what the subcommands share: building the configuration from file,
 * environment and flags, and the subcommand entry points.
 *
 * Exit codes: 0 success, 1 some work failed, 2 usage or configuration error.
 */
#ifndef OCP_CLI_CLI_H
#define OCP_CLI_CLI_H

#include "broker/broker.h"
#include "config/config.h"
#include "image/image.h"

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

/* How ocp_cli_submit_file makes tasks. Open type. */
typedef struct ocp_submit_opts {
    const char *lang;
    const char *group;
    int priority;
    int max_image_size; /* -1 = the worker's setting */
    int stable_ids;     /* ids from file, size, time, page and settings (resumable runs) */
} ocp_submit_opts;

/* Called for each page task made: id, page (0-based), pages of the file, newly inserted. */
typedef void (*ocp_submit_fn)(void *ctx, const char *id, int page, int pages, int inserted);

/* Queues one task per page of path. Returns 0 or a code with the reason in err. */
int ocp_cli_submit_file(ocp_broker *b, const char *path, const ocp_image_limits *lim,
                        const ocp_submit_opts *o, ocp_submit_fn fn, void *ctx, char *err,
                        size_t errlen);

/* The broker URL from the settings, or the default queue file (its folder created). */
const char *ocp_cli_broker_url(const ocp_config *cfg, char *buf, size_t len);

/* The image limits of the settings. */
ocp_image_limits ocp_cli_limits(const ocp_config *cfg);

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

#endif
