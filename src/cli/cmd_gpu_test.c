/*
 * cmd_gpu_test.c: `ocrpool gpu-test`: checks a GPU configuration end to end.
 *
 * It validates the device settings against the devices present, prints
 * what they resolve to (devices, each worker's device and GPU memory
 * budget), then runs one worker process per --concurrency, each with its
 * CUDA_VISIBLE_DEVICES set as the pool will set it, each loading the engine
 * and OCRing the test page (the built-in sample, or --image FILE). It
 * reports seconds per page, peak RSS and peak GPU memory per worker (from
 * NVML's process list, sampled while they run), with a pass or fail mark
 * for each check.
 *
 * With engine lstm (whose network runs on a GPU in the shared recognizer) it then runs each
 * preset (conservative, balanced, performance) through the recognizer's GPU backend: a
 * process per preset opens the first device of the plan with the preset's cap and growth,
 * as a recognizer does, reads every page of the test input through it, and reports lines/s,
 * pages/s and the peak GPU memory its allocator held (checked against the cap). With no GPU
 * it says so and exits with status 3 (OCRPOOL_CUDA_EMULATE=MIB runs it on an emulated
 * device). Exit status 0 when every check passed, 1 otherwise.
 *
 * The parent loads neither libvips nor an engine: the workers do, after
 * fork, as pool workers will.
 */
#include "cli/cli.h"
#include "core/error.h"
#include "core/util.h"
#include "engine/engine.h"
#include "gpu/gpu.h"
#include "image/image.h"
#include "pool/page.h"
#include "engine/lstm/remote.h"
#include "recog/recog.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The bundled sample document, linked into the binary (Makefile: ld -b binary). */
extern const unsigned char _binary_samples_sample_pdf_start[];
extern const unsigned char _binary_samples_sample_pdf_end[];

enum { K_IMAGE = 1 };

static const ocp_cli_opt gt_opts[] = {{"image", 0, 1, K_IMAGE}, {NULL, 0, 0, 0}};

typedef struct gt_ctx {
    const char *image;
} gt_ctx;

/* What a worker sends back. */
typedef struct gt_report {
    int rc;
    double load_s, page_s;
    long peak_rss_kb;
    long chars;
    double mean_conf;
    char err[300];
} gt_report;

static void gt_help(void)
{
    printf("usage: ocrpool gpu-test [--preset P] [--device D] [--memory-fraction F]\n"
           "                        [--gpu-max-memory-mb N] [-c WORKERS] [--image FILE]\n\n"
           "Validates the device settings against the GPUs present, prints what they\n"
           "resolve to, OCRs a test page in each worker (the built-in sample, or FILE)\n"
           "and reports seconds per page, peak RSS and peak GPU memory per worker, with\n"
           "PASS or FAIL for each check. With engine lstm it then runs each preset\n"
           "through the recognizer's GPU backend and reports lines/s, pages/s and peak\n"
           "GPU memory. Exit status 0 when all pass, 1 when one failed, 3 when the\n"
           "engine has a GPU path but there is no GPU to test.\n");
}

static int gt_handler(void *vctx, int key, const char *arg)
{
    gt_ctx *c = vctx;
    if (key == K_IMAGE)
        c->image = arg;
    return 0;
}

static int checks_failed, checks_run;

static void mark(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mark(int ok, const char *fmt, ...)
{
    va_list ap;
    checks_run++;
    checks_failed += !ok;
    printf("[%s] ", ok ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* A worker: set its device, load the engine, OCR page 1 of the test input, report. */
static void worker(int fd, const ocp_config *cfg, const char *visible, const char *image)
{
    gt_report rep = {0};
    ocp_engine *eng = NULL;
    ocp_doc *doc = NULL;
    double t0;

    setenv("CUDA_VISIBLE_DEVICES", visible, 1);
    t0 = ocp_now();
    ocp_image_limits lim = ocp_image_limits_from_config(cfg);
    ocp_engine_params ep = {
        .lang = ocp_config_str(cfg, OCP_S_LANG),
        .tessdata_dir = ocp_config_str(cfg, OCP_S_TESSDATA_DIR),
        .psm = (int)ocp_config_int(cfg, OCP_S_PSM),
    };
    if ((rep.rc = ocp_image_global_init("ocrpool")) != 0) {
        snprintf(rep.err, sizeof rep.err, "cannot start libvips");
        goto out;
    }
    rep.rc = ocp_engine_open(ocp_config_str(cfg, OCP_S_ENGINE), &ep, &eng, rep.err, sizeof rep.err);
    if (rep.rc)
        goto out;
    rep.load_s = ocp_now() - t0;
    if (image)
        rep.rc = ocp_doc_open_file(image, &lim, &doc, rep.err, sizeof rep.err);
    else
        rep.rc = ocp_doc_open_buffer(
            _binary_samples_sample_pdf_start,
            (size_t)(_binary_samples_sample_pdf_end - _binary_samples_sample_pdf_start), &lim, &doc,
            rep.err, sizeof rep.err);
    if (rep.rc)
        goto out;
    ocp_result res;
    ocp_result_init(&res);
    ocp_page_task t = {.source = image ? image : "sample.pdf",
                       .page = 0,
                       .lang = ep.lang,
                       .timeout_s = ocp_config_double(cfg, OCP_S_PAGE_TIMEOUT)};
    rep.rc = ocp_page_run(eng, doc, &t, &res, rep.err, sizeof rep.err);
    rep.page_s = res.elapsed_ms / 1000.0;
    rep.peak_rss_kb = res.peak_rss_kb;
    rep.chars = res.text ? (long)strlen(res.text) : 0;
    rep.mean_conf = res.mean_conf;
    ocp_result_fini(&res);
out:
    ocp_doc_destroy(doc);
    ocp_engine_close(eng);
    ssize_t w = write(fd, &rep, sizeof rep);
    _exit(w == (ssize_t)sizeof rep ? 0 : 3);
}

/* What the settings say, and the devices present. */
static void print_setup(const ocp_config *cfg, const ocp_engine_ops *ops, int uses_gpu,
                        const ocp_gpu_list *gpus)
{
    long long max_mb = ocp_config_int(cfg, OCP_S_GPU_MAX_MEMORY_MB);
    printf("ocrpool gpu-test\n");
    printf("  engine      %s (%s)\n", ops->name, uses_gpu ? "uses a GPU" : "no GPU path");
    printf("  device      %s (%s)\n", ocp_config_str(cfg, OCP_S_DEVICE),
           ocp_config_origin(cfg, OCP_S_DEVICE));
    printf("  preset      %s (%s)\n", ocp_config_str(cfg, OCP_S_PRESET),
           ocp_config_origin(cfg, OCP_S_PRESET));
    printf("  memory      fraction %s, max %lld MB%s, allow growth %s\n",
           ocp_config_str(cfg, OCP_S_GPU_MEMORY_FRACTION), max_mb, max_mb ? "" : " (none)",
           ocp_config_str(cfg, OCP_S_GPU_ALLOW_GROWTH));
    if (gpus->n == 0) {
        printf("  GPUs        no NVIDIA GPU found (%s)\n", gpus->why);
        return;
    }
    printf("  GPUs        driver %s\n", gpus->driver);
    for (int i = 0; i < gpus->n; i++)
        printf("              cuda:%d %s, %llu MiB total, %llu MiB free\n", gpus->dev[i].index,
               gpus->dev[i].name, gpus->dev[i].mem_total >> 20, gpus->dev[i].mem_free >> 20);
}

/* Each worker's device and GPU memory budget, and the checks on them. */
static void print_assignment(const ocp_gpu_plan *plan, const ocp_gpu_list *gpus,
                             const ocp_gpu_assignment *as, int workers, const char *image)
{
    for (int w = 0; w < workers; w++) {
        const ocp_gpu_device *d = ocp_gpu_find(gpus, as[w].device);
        if (d)
            printf("  worker %-4d cuda:%d %s (%s), GPU memory budget %llu MiB (device shared "
                   "by %d)\n",
                   w + 1, d->index, d->name, d->uuid, as[w].budget_bytes >> 20, as[w].sharing);
        else
            printf("  worker %-4d cpu\n", w + 1);
    }
    printf("  test page   %s, page 1\n", image ? image : "built-in sample.pdf");
    mark(1, "settings valid for the devices present");
    if (plan->n) {
        int fits = 1;
        for (int w = 0; w < workers; w++)
            fits &= as[w].budget_bytes > 0;
        mark(fits, "every worker has a GPU memory budget");
    }
}

/* The test's workers: each a process, as in the pool, with a pipe for its report. */
typedef struct gt_run {
    int workers;
    pid_t *pids;
    int *fds;                     /* -1: the worker could not start */
    unsigned long long *gpu_peak; /* sampled from NVML's process list while it ran */
} gt_run;

static void start_workers(gt_run *r, const ocp_config *cfg, const ocp_gpu_list *gpus,
                          const ocp_gpu_assignment *as, const char *image)
{
    fflush(stdout);
    for (int w = 0; w < r->workers; w++) {
        int p[2];
        char visible[128];
        if (pipe(p) < 0) {
            mark(0, "worker %d: cannot create a pipe: %s", w + 1, strerror(errno));
            r->fds[w] = -1;
            continue;
        }
        ocp_gpu_visible_devices(gpus, as[w].device, visible, sizeof visible);
        r->pids[w] = fork();
        if (r->pids[w] == 0) {
            close(p[0]);
            worker(p[1], cfg, visible, image);
        }
        close(p[1]);
        r->fds[w] = p[0];
        if (r->pids[w] < 0) {
            mark(0, "worker %d: cannot fork: %s", w + 1, strerror(errno));
            close(r->fds[w]);
            r->fds[w] = -1;
        }
    }
}

/* Until every worker has ended: samples the GPU memory of each. */
static void watch_workers(gt_run *r, const ocp_gpu_list *gpus)
{
    ocp_gpu_list *sample = ocp_xcalloc(1, sizeof *sample);
    int running = r->workers;
    while (running > 0) {
        running = 0;
        for (int w = 0; w < r->workers; w++) {
            int st;
            if (r->pids[w] > 0 && waitpid(r->pids[w], &st, WNOHANG) == 0)
                running++;
        }
        if (gpus->n) {
            ocp_gpu_discover(sample);
            for (int w = 0; w < r->workers; w++) {
                unsigned long long b =
                    r->pids[w] > 0 ? ocp_gpu_proc_bytes(sample, (unsigned)r->pids[w]) : 0;
                if (b > r->gpu_peak[w])
                    r->gpu_peak[w] = b;
            }
        }
        if (running)
            poll(NULL, 0, 50);
    }
    free(sample);
}

/* Each worker's report, checked. */
static void read_reports(gt_run *r, const ocp_config *cfg, const ocp_gpu_assignment *as,
                         int uses_gpu)
{
    long rss_limit = (long)ocp_config_int(cfg, OCP_S_MAX_MEMORY_PER_CHILD);
    double total_s = 0;
    int done = 0;
    for (int w = 0; w < r->workers; w++) {
        gt_report rep;
        if (r->fds[w] < 0)
            continue;
        ssize_t n = read(r->fds[w], &rep, sizeof rep);
        close(r->fds[w]);
        if (n != (ssize_t)sizeof rep) {
            mark(0, "worker %d: died without a report", w + 1);
            continue;
        }
        if (rep.rc) {
            mark(0, "worker %d: %s", w + 1, rep.err);
            continue;
        }
        done++;
        total_s += rep.page_s;
        mark(rep.chars > 0,
             "worker %d: engine loaded in %.2f s, page OCRed in %.2f s, %ld characters, "
             "mean confidence %.0f",
             w + 1, rep.load_s, rep.page_s, rep.chars, rep.mean_conf);
        mark(rss_limit == 0 || rep.peak_rss_kb <= rss_limit,
             "worker %d: peak RSS %ld KiB within max-memory-per-child %ld KiB", w + 1,
             rep.peak_rss_kb, rss_limit);
        if (as[w].device >= 0)
            mark(r->gpu_peak[w] <= as[w].budget_bytes,
                 "worker %d: peak GPU memory %llu MiB within its budget of %llu MiB%s", w + 1,
                 r->gpu_peak[w] >> 20, as[w].budget_bytes >> 20,
                 uses_gpu ? "" : " (the engine uses no GPU memory)");
        else
            printf("[ -- ] worker %d: peak GPU memory: none (runs on the CPU)\n", w + 1);
    }
    if (done)
        printf("  seconds per page: %.2f (mean of %d workers)\n", total_s / done, done);
}

/* ---- the presets through the recognizer's GPU backend --------------------------------- */

enum { GT_EXIT_NO_GPU = 3 };

typedef struct gt_preset_report {
    int rc;
    long lines, pages, failures;
    double seconds;
    unsigned long long cap, peak_held, total;
    char err[300];
} gt_preset_report;

typedef struct gt_direct {
    ocp_cuda_ctx *ctx;
    long lines, failures;
} gt_direct;

/* The engine's remote forward pass straight into the context (no socket: one process). A
 * batch the GPU fails is read by the engine on the CPU (and counted). */
static int gt_forward(void *vctx, const char *name, const ocp_lstm_model *m, int n,
                      const int8_t *const *img, const int *w, float **probs, int *steps,
                      double deadline)
{
    gt_direct *d = vctx;
    char err[300];
    (void)name;
    (void)deadline;
    if (ocp_cuda_forward_batch(d->ctx, m, n, img, w, probs, steps, err, sizeof err)) {
        d->failures++;
        for (int i = 0; i < n; i++) {
            probs[i] = NULL;
            steps[i] = OCP_LSTM_REMOTE_HERE;
        }
        return 0;
    }
    d->lines += n;
    return 0;
}

/* One preset in this (forked) process: the device opened as a recognizer opens it, every
 * page of the test input read through it. */
static void preset_child(int fd, const ocp_config *cfg, const char *preset, const char *visible,
                         const char *image)
{
    gt_preset_report rep = {0};
    ocp_engine *eng = NULL;
    ocp_doc *doc = NULL;
    gt_direct d = {0};
    double fraction = atof(ocp_config_preset_value(preset, OCP_S_GPU_MEMORY_FRACTION));
    long long max_mb = atoll(ocp_config_preset_value(preset, OCP_S_GPU_MAX_MEMORY_MB));
    int growth = strcmp(ocp_config_preset_value(preset, OCP_S_GPU_ALLOW_GROWTH), "true") == 0;
    setenv("CUDA_VISIBLE_DEVICES", visible, 1);
    ocp_image_limits lim = ocp_image_limits_from_config(cfg);
    ocp_engine_params ep = {
        .lang = ocp_config_str(cfg, OCP_S_LANG),
        .tessdata_dir = ocp_config_str(cfg, OCP_S_TESSDATA_DIR),
        .psm = (int)ocp_config_int(cfg, OCP_S_PSM),
    };
    if ((rep.rc = ocp_image_global_init("ocrpool")) != 0) {
        snprintf(rep.err, sizeof rep.err, "cannot start libvips");
        goto out;
    }
    rep.rc =
        ocp_recog_gpu_open(fraction, max_mb, growth, &d.ctx, &rep.total, rep.err, sizeof rep.err);
    if (rep.rc)
        goto out;
    rep.rc = ocp_engine_open("lstm", &ep, &eng, rep.err, sizeof rep.err);
    if (rep.rc)
        goto out;
    if (image)
        rep.rc = ocp_doc_open_file(image, &lim, &doc, rep.err, sizeof rep.err);
    else
        rep.rc = ocp_doc_open_buffer(
            _binary_samples_sample_pdf_start,
            (size_t)(_binary_samples_sample_pdf_end - _binary_samples_sample_pdf_start), &lim, &doc,
            rep.err, sizeof rep.err);
    if (rep.rc)
        goto out;
    ocp_lstm_set_remote(gt_forward, &d);
    double t0 = ocp_now();
    for (int pg = 0; pg < ocp_doc_pages(doc) && !rep.rc; pg++) {
        ocp_result res;
        ocp_result_init(&res);
        ocp_page_task t = {.source = image ? image : "sample.pdf",
                           .page = pg,
                           .lang = ep.lang,
                           .timeout_s = ocp_config_double(cfg, OCP_S_PAGE_TIMEOUT)};
        rep.rc = ocp_page_run(eng, doc, &t, &res, rep.err, sizeof rep.err);
        rep.pages += rep.rc == 0;
        ocp_result_fini(&res);
    }
    rep.seconds = ocp_now() - t0;
    ocp_lstm_set_remote(NULL, NULL);
    ocp_cuda_mem mem;
    ocp_cuda_mem_stats(d.ctx, &mem);
    rep.cap = mem.cap;
    rep.peak_held = mem.peak_held;
    rep.lines = d.lines;
    rep.failures = d.failures;
out:
    ocp_doc_destroy(doc);
    ocp_engine_close(eng);
    ocp_cuda_close(d.ctx);
    ssize_t w = write(fd, &rep, sizeof rep);
    _exit(w == (ssize_t)sizeof rep ? 0 : 3);
}

/* Each preset in a process of its own (a CUDA context per process, after fork, as in the
 * pool), one after the other on the plan's first device. */
static void run_presets(const ocp_config *cfg, const ocp_gpu_list *gpus, const ocp_gpu_plan *plan,
                        const char *image)
{
    static const char *const names[] = {"conservative", "balanced", "performance"};
    char visible[128];
    ocp_gpu_visible_devices(gpus, plan->idx[0], visible, sizeof visible);
    printf("  presets     through the recognizer's GPU backend on cuda:%d (%s)\n", plan->idx[0],
           visible);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int p[2];
        gt_preset_report rep = {0};
        if (pipe(p) < 0) {
            mark(0, "preset %s: cannot create a pipe: %s", names[i], strerror(errno));
            continue;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            preset_child(p[1], cfg, names[i], visible, image);
        }
        close(p[1]);
        ssize_t n = pid > 0 ? read(p[0], &rep, sizeof rep) : -1;
        close(p[0]);
        if (pid > 0)
            waitpid(pid, NULL, 0);
        if (n != (ssize_t)sizeof rep) {
            mark(0, "preset %s: the test process died without a report", names[i]);
            continue;
        }
        if (rep.rc) {
            mark(0, "preset %s: %s", names[i], rep.err);
            continue;
        }
        double s = rep.seconds > 0 ? rep.seconds : 1e-9;
        mark(rep.lines > 0 && rep.failures == 0,
             "preset %s: %ld pages, %ld lines on the GPU in %.2f s: %.1f lines/s, %.2f pages/s%s",
             names[i], rep.pages, rep.lines, rep.seconds, rep.lines / s, rep.pages / s,
             rep.failures ? " (some batches failed: read on the CPU)" : "");
        mark(rep.peak_held <= rep.cap,
             "preset %s: peak GPU memory %.1f MiB within its cap of %.1f MiB (of %.0f MiB)",
             names[i], rep.peak_held / 1048576.0, rep.cap / 1048576.0, rep.total / 1048576.0);
    }
}

int ocp_cmd_gpu_test(int argc, char **argv)
{
    gt_ctx c = {0};
    ocp_config *cfg = NULL;
    char **pos = NULL, err[600];
    int npos, rc;
    ocp_gpu_plan plan;

    rc = ocp_cli_parse(argc, argv, gt_opts, gt_handler, &c, gt_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    const ocp_engine_ops *ops = ocp_engine_find(ocp_config_str(cfg, OCP_S_ENGINE));
    int uses_gpu = (ops->features & OCP_FEAT_GPU) != 0;
    int workers = (int)ocp_config_int(cfg, OCP_S_CONCURRENCY);
    ocp_gpu_list *gpus = ocp_xcalloc(1, sizeof *gpus);
    ocp_gpu_discover(gpus);
    print_setup(cfg, ops, uses_gpu, gpus);
    rc = ocp_gpu_resolve(ocp_config_str(cfg, OCP_S_DEVICE), ops->name, uses_gpu, gpus, &plan, err,
                         sizeof err);
    if (rc) {
        mark(0, "settings valid for the devices present: %s", err);
    } else {
        printf("  resolved    %s\n", plan.why);
        ocp_gpu_assignment *as = ocp_xcalloc((size_t)workers, sizeof *as);
        ocp_gpu_assign(&plan, gpus, workers, ocp_config_double(cfg, OCP_S_GPU_MEMORY_FRACTION),
                       ocp_config_int(cfg, OCP_S_GPU_MAX_MEMORY_MB), as);
        print_assignment(&plan, gpus, as, workers, c.image);
        gt_run r = {workers, ocp_xcalloc((size_t)workers, sizeof *r.pids),
                    ocp_xcalloc((size_t)workers, sizeof *r.fds),
                    ocp_xcalloc((size_t)workers, sizeof *r.gpu_peak)};
        start_workers(&r, cfg, gpus, as, c.image);
        watch_workers(&r, gpus);
        read_reports(&r, cfg, as, uses_gpu);
        free(r.pids);
        free(r.fds);
        free(r.gpu_peak);
        free(as);
    }
    int no_gpu = 0;
    if (!rc && uses_gpu && plan.n > 0) {
        run_presets(cfg, gpus, &plan, c.image);
    } else if (!rc && uses_gpu) {
        printf("[ -- ] presets: no GPU to measure them on (%s)\n", plan.why);
        no_gpu = 1;
    }
    printf("result: %s (%d of %d checks passed)%s\n", checks_failed ? "FAIL" : "PASS",
           checks_run - checks_failed, checks_run, no_gpu ? "; no GPU: exit status 3" : "");
    free(gpus);
    ocp_config_destroy(cfg);
    free(pos);
    return checks_failed ? OCP_EXIT_FAILED : no_gpu ? GT_EXIT_NO_GPU : OCP_EXIT_OK;
}
