/*
 * main.c: ocrpool's entry point: global set-up and the subcommand table.
 */
#include "cli/cli.h"
#include "core/log.h"
#include "gpu/cuda/cuda_forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef OCP_VERSION
#define OCP_VERSION "0.1.0"
#endif

/* ocr_free: the command runs no engine, in this process or a child (main's re-exec for
 * OpenMP is skipped: it doubled the start of a short command such as status). */
static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
    int ocr_free;
} commands[] = {
    {"ocr", ocp_cmd_ocr, "OCR images and PDFs", 0},
    {"worker", ocp_cmd_worker, "run a pool on a broker until stopped", 0},
    {"submit", ocp_cmd_submit, "queue pages of images and PDFs; prints task ids", 1},
    {"status", ocp_cmd_status, "counts of a group's pages by state, failures with reasons", 1},
    {"result", ocp_cmd_result, "the result of a page in a format", 1},
    {"requeue", ocp_cmd_requeue, "give buried or failed pages another chance", 1},
    {"serve", ocp_cmd_serve, "the HTTP API, metrics and dashboard, with a pool", 0},
    {"monitor", ocp_cmd_monitor, "every node's workers with their memory, flags, advice", 0},
    {"stop", ocp_cmd_stop, "stop every node (warm; --now cold) through its control socket", 0},
    {"control", ocp_cmd_control, "send stats, stop, stop-now, reload or scale N to nodes", 0},
    {"config", ocp_cmd_config, "show every setting and where its value came from", 0},
    {"gpus", ocp_cmd_gpus, "list the NVIDIA GPUs with memory, use and processes", 0},
    {"gpu-test", ocp_cmd_gpu_test, "check a GPU configuration: resolve, assign, OCR a test page",
     0},
    {"model-info", ocp_cmd_model_info, "what our LSTM model reader sees in a traineddata file", 0},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ocrpool COMMAND [options] [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  version    print the version\n\n`ocrpool COMMAND --help` for each.\n");
}

int main(int argc, char **argv)
{
    /*
     * libgomp (under libtesseract) reads OMP_THREAD_LIMIT once, when it is
     * loaded, before main. Tesseract with OpenMP's default threads is 4x
     * slower per page on a loaded machine (bench/), and the pool gives
     * parallelism by processes. So when the user has not chosen, set it and
     * start again with it in effect.
     */
    int ocr_free = 0;
    for (size_t i = 0; argc >= 2 && i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            ocr_free = commands[i].ocr_free;
    if (!ocr_free && !getenv("OMP_THREAD_LIMIT")) {
        setenv("OMP_THREAD_LIMIT", "1", 1);
        execv("/proc/self/exe", argv);
        /* No /proc: go on with OpenMP's default. */
    }
    if (argc < 2) {
        usage(stderr);
        return OCP_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return OCP_EXIT_OK;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        if (ocp_cuda_built())
            printf("ocrpool %s (CUDA %s support built)\n", OCP_VERSION, ocp_cuda_runtime_version());
        else
            printf("ocrpool %s (built without CUDA)\n", OCP_VERSION);
        return OCP_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "ocrpool: unknown command '%s' (see ocrpool --help)\n", argv[1]);
    return OCP_EXIT_USAGE;
}
