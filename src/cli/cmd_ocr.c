/*
 * cmd_ocr.c: `ocrpool ocr FILES...`, the main job: OCR images and PDFs
 * through a pool of workers on a queue of its own, write one file per page
 * and format as pages finish, then a sidecar of all text, or the text on
 * standard output.
 *
 * The queue is a SQLite file under the output folder (or --queue FILE);
 * task ids come from each file's path, size, time, page and settings, so
 * running the same command again after an interruption resumes: finished
 * pages are kept, the rest (and failed ones) are done.
 */
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/engine.h"
#include "image/image.h"
#include "pool/pool.h"

#include <errno.h>
#include <signal.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { K_OUT = 1, K_SIDECAR, K_VERBOSE, K_QUIET, K_QUEUE };

static const ocp_cli_opt ocr_opts[] = {
    {"output-dir", 'o', 1, K_OUT}, {"sidecar", 0, 1, K_SIDECAR}, {"verbose", 'v', 0, K_VERBOSE},
    {"quiet", 'q', 0, K_QUIET},    {"queue", 0, 1, K_QUEUE},     {NULL, 0, 0, 0},
};

typedef struct input {
    const char *path; /* "-" = standard input */
    char *file;       /* what the workers read (a copy of standard input) */
    char *stem;       /* output file names start with it */
    int pages;        /* 0 when it could not be queued */
    int first;        /* index of its first page in ocr_ctx.pages */
    char err[600];
} input;

typedef struct page_ref {
    char id[64];
    int input, page;
    int finished; /* 0 no, 1 done, 2 failed */
} page_ref;

typedef struct ocr_ctx {
    const char *outdir, *sidecar, *queue;
    int verbose, quiet;
    ocp_config *cfg;
    int fmts;
    input *in;
    int nin;
    page_ref *pages, **by_id;
    int npages, cap;
    int done, failed, resumed, show_progress;
    double t0;
    ocp_submit_opts so;
    int io_failed;
} ocr_ctx;

static void ocr_help(void)
{
    printf("usage: ocrpool ocr [options] FILE...   (FILE may be - for standard input)\n\n"
           "OCR images (PNG, JPEG, TIFF, WebP, PNM, GIF) and PDFs with a pool of workers.\n\n"
           "  -o, --output-dir DIR         write DIR/<stem>.<ext> per page and format\n"
           "                               (<stem>-p<N>.<ext> for multi-page inputs)\n"
           "      --sidecar FILE           all text, pages in order, separated by form feeds\n"
           "  -j, --concurrency N          workers (default 2)\n"
           "      --queue FILE             the queue (default DIR/.ocrpool-queue.db with -o)\n"
           "  -v, --verbose                a line per page, also on a pipe\n"
           "  -q, --quiet                  no progress line\n"
           "      --config FILE            settings file (name = value)\n\n"
           "Without -o or --sidecar the text goes to standard output; --format with more\n"
           "than txt and no -o writes the files into the current folder. With -o, running\n"
           "the same command again resumes where an interrupted run stopped.\n"
           "Exit status: 0 all pages done, 1 some failed (listed on stderr), 2 usage error.\n\n"
           "Settings (also OCRPOOL_<NAME> in the environment, or name = value in --config):\n");
    ocp_config_print_help(stdout);
}

static int ocr_handler(void *vctx, int key, const char *arg)
{
    ocr_ctx *c = vctx;
    switch (key) {
    case K_OUT:
        c->outdir = arg;
        break;
    case K_SIDECAR:
        c->sidecar = arg;
        break;
    case K_VERBOSE:
        c->verbose = 1;
        break;
    case K_QUIET:
        c->quiet = 1;
        break;
    case K_QUEUE:
        c->queue = arg;
        break;
    }
    return 0;
}

/* Gives inputs that share a stem distinct stems: a.png, x/a.png, a.jpg -> a, a-2, a-3. */
static void unique_stems(input *in, int n)
{
    for (int i = 1; i < n; i++) {
        char *base = in[i].stem, *cand = ocp_xstrdup(base);
        for (int k = 2;; k++) {
            int taken = 0;
            for (int j = 0; j < i && !taken; j++)
                taken = strcmp(in[j].stem, cand) == 0;
            if (!taken)
                break;
            free(cand);
            cand = ocp_xasprintf("%s-%d", base, k);
        }
        free(base);
        in[i].stem = cand;
    }
}

static int cmp_ref(const void *a, const void *b)
{
    return strcmp((*(page_ref *const *)a)->id, (*(page_ref *const *)b)->id);
}

static page_ref *find_ref(ocr_ctx *c, const char *id)
{
    page_ref key, *kp = &key;
    snprintf(key.id, sizeof key.id, "%s", id);
    page_ref **r = bsearch(&kp, c->by_id, (size_t)c->npages, sizeof *c->by_id, cmp_ref);
    return r ? *r : NULL;
}

static void progress(ocr_ctx *c)
{
    if (!c->show_progress)
        return;
    double dt = ocp_now() - c->t0;
    int fin = c->done + c->failed;
    double rate = dt > 0 ? (fin - c->resumed) / dt : 0;
    int eta = rate > 0 ? (int)((c->npages - fin) / rate + 0.5) : 0;
    fprintf(stderr, "\r\033[K%d/%d pages  %.2f pages/s  ETA %d:%02d%s", fin, c->npages, rate,
            eta / 60, eta % 60, c->failed ? "  (some failed)" : "");
    fflush(stderr);
}

/* Writes the renderings of one page; returns 0 or a code with the reason in err. */
static int write_outputs(ocr_ctx *c, const page_ref *pr, const char *json, int only_missing,
                         char *err, size_t errlen)
{
    const input *in = &c->in[pr->input];
    ocp_result res;
    ocp_sb sb;
    int rc = 0, parsed = 0;
    ocp_result_init(&res);
    ocp_sb_init(&sb);
    for (int f = 1; f <= OCP_FMT_TSV; f <<= 1) {
        if (!(c->fmts & f))
            continue;
        char *path = in->pages > 1
                         ? ocp_xasprintf("%s/%s-p%d.%s", c->outdir, in->stem, pr->page + 1,
                                         ocp_format_ext(f))
                         : ocp_xasprintf("%s/%s.%s", c->outdir, in->stem, ocp_format_ext(f));
        if (only_missing && access(path, F_OK) == 0) {
            free(path);
            continue;
        }
        ocp_sb_reset(&sb);
        if (f == OCP_FMT_JSON) {
            ocp_sb_puts(&sb, json);
        } else {
            if (!parsed && ocp_result_from_json(&res, json) != 0) {
                rc = ocp_errf(OCP_E_DECODE, err, errlen, "stored result is not a page result");
                free(path);
                break;
            }
            parsed = 1;
            ocp_result_render(&res, f, &sb);
        }
        rc = ocp_write_file(path, sb.buf, sb.len);
        if (rc)
            ocp_errf(rc, err, errlen, "cannot write %s: %s", path, ocp_strerror(rc));
        free(path);
        if (rc)
            break;
    }
    ocp_sb_fini(&sb);
    ocp_result_fini(&res);
    return rc;
}

static void report_failure(ocr_ctx *c, const page_ref *pr, const char *reason)
{
    const input *in = &c->in[pr->input];
    if (c->show_progress)
        fprintf(stderr, "\r\033[K");
    if (in->pages > 1)
        fprintf(stderr, "ocrpool: %s page %d: %s\n", in->path, pr->page + 1, reason);
    else
        fprintf(stderr, "ocrpool: %s: %s\n", in->path, reason);
}

static void on_result(void *vctx, const char *id, int ok, const char *text)
{
    ocr_ctx *c = vctx;
    page_ref *pr = find_ref(c, id);
    char err[600];
    if (!pr || pr->finished)
        return;
    if (ok && c->outdir && write_outputs(c, pr, text, 0, err, sizeof err) != 0) {
        ok = 0;
        text = err;
        c->io_failed = 1;
    }
    pr->finished = ok ? 1 : 2;
    if (ok) {
        c->done++;
        if (c->verbose) {
            json_t *r = json_loads(text, 0, NULL);
            fprintf(stderr, "ocrpool: %s page %d: %zu lines, %.2f s, peak RSS %lld KiB\n",
                    c->in[pr->input].path, pr->page + 1,
                    json_array_size(json_object_get(r, "lines")),
                    json_number_value(json_object_get(r, "elapsed_ms")) / 1000.0,
                    (long long)json_integer_value(json_object_get(r, "peak_rss_kb")));
            json_decref(r);
        }
    } else {
        c->failed++;
        report_failure(c, pr, text);
    }
    progress(c);
}

static void add_ref(void *vctx, const char *id, int page, int pages, int inserted)
{
    (void)pages;
    (void)inserted;
    ocr_ctx *c = vctx;
    if (c->npages == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->pages = ocp_xrealloc(c->pages, (size_t)c->cap * sizeof *c->pages);
    }
    page_ref *r = &c->pages[c->npages++];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    r->page = page;
    r->input = -1; /* set by the caller */
}

/* In the master, after the zygote is forked: queue every page, find what is done already. */
static int prepare(void *vctx, ocp_broker *b)
{
    ocr_ctx *c = vctx;
    char err[600];
    if (ocp_image_global_init("ocrpool"))
        return OCP_E_ENGINE;
    ocp_image_limits lim = ocp_cli_limits(c->cfg);
    for (int i = 0; i < c->nin; i++) {
        input *in = &c->in[i];
        int before = c->npages;
        in->first = before;
        if (!in->file)
            continue;
        if (ocp_cli_submit_file(b, in->file, &lim, &c->so, add_ref, c, err, sizeof err)) {
            snprintf(in->err, sizeof in->err, "%s", err);
            fprintf(stderr, "ocrpool: %s: %s\n", in->path, err);
            c->npages = before;
            continue;
        }
        in->pages = c->npages - before;
        for (int k = before; k < c->npages; k++)
            c->pages[k].input = i;
    }
    c->by_id = ocp_xcalloc((size_t)c->npages + 1, sizeof *c->by_id);
    for (int k = 0; k < c->npages; k++)
        c->by_id[k] = &c->pages[k];
    qsort(c->by_id, (size_t)c->npages, sizeof *c->by_id, cmp_ref);
    /* Resuming: failed pages get another chance; done ones are kept. */
    long n = 0;
    ocp_broker_requeue(b, c->so.group, (1u << OCP_TASK_FAILED) | (1u << OCP_TASK_BURIED), &n);
    for (int k = 0; k < c->npages; k++) {
        ocp_task_info info;
        if (ocp_broker_get(b, c->pages[k].id, &info) == 0) {
            if (info.state == OCP_TASK_DONE) {
                c->pages[k].finished = 1;
                c->done++;
                if (c->outdir && info.result)
                    write_outputs(c, &c->pages[k], info.result, 1, err, sizeof err);
            }
            ocp_task_info_fini(&info);
        }
    }
    c->resumed = c->done;
    if (c->done && (c->verbose || c->show_progress))
        fprintf(stderr, "ocrpool: resuming: %d of %d pages done already\n", c->done, c->npages);
    c->t0 = ocp_now();
    progress(c);
    return 0;
}

static volatile sig_atomic_t ocr_stop;

static void on_stop(int s)
{
    (void)s;
    ocr_stop = 1;
}

/* Each page of this run that finished since the last look: its result or failure. */
static void collect(ocr_ctx *c, ocp_broker *b)
{
    for (int k = 0; k < c->npages; k++) {
        page_ref *pr = &c->pages[k];
        ocp_task_info info;
        if (pr->finished || ocp_broker_get(b, pr->id, &info) != 0)
            continue;
        if (info.state == OCP_TASK_DONE) {
            on_result(c, pr->id, 1, info.result ? info.result : "{}");
        } else if (info.state == OCP_TASK_FAILED || info.state == OCP_TASK_BURIED) {
            /* A buried page's reason says so ("buried after N deliveries: ..."). */
            on_result(c, pr->id, 0, info.error ? info.error : "failed");
        }
        ocp_task_info_fini(&info);
    }
}

/*
 * The node runs in a child of its own process group, forked before this
 * process starts libvips or opens the queue; this process submits the
 * pages, follows them in the queue, and stops the node (SIGTERM: warm)
 * when they are all finished, or when it is interrupted itself.
 */
static int run_node(ocr_ctx *c, const ocp_pool_conf *pc, const char *url, char *err,
                    size_t errlen)
{
    fflush(NULL);
    pid_t node = fork();
    if (node < 0)
        return ocp_errf(-errno, err, errlen, "fork: %s", strerror(errno));
    if (node == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* this process gone: the node stops (warm) */
        int rc = ocp_pool_run(pc, url, NULL, err, errlen);
        if (rc)
            fprintf(stderr, "ocrpool: %s\n", err);
        _exit(rc ? OCP_EXIT_FAILED : 0);
    }
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    ocp_broker *b = NULL;
    int rc = ocp_broker_open(url, NULL, &b, err, errlen);
    if (!rc && prepare(c, b) != 0)
        rc = ocp_errf(OCP_E_ENGINE, err, errlen, "stopped before starting");
    int st = 0, stopped = rc != 0, gone = 0;
    if (stopped)
        kill(node, SIGTERM);
    while (!gone) {
        gone = waitpid(node, &st, WNOHANG) == node;
        if (b)
            collect(c, b);
        if (!stopped && (ocr_stop || c->done + c->failed >= c->npages)) {
            kill(node, SIGTERM);
            stopped = 1;
        }
        if (!gone)
            usleep(50000);
    }
    ocp_broker_close(b);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0) &&
        !(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM)) {
        rc = OCP_E_ENGINE;
        err[0] = '\0'; /* the node said why */
    }
    return rc;
}

/* A group name for this run: the same inputs and settings give the same group. */
static char *run_group(ocr_ctx *c)
{
    uint64_t h = 14695981039346656037ULL;
    for (int i = 0; i < c->nin; i++)
        for (const char *p = c->in[i].file ? c->in[i].file : "";; p++) {
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
            if (!*p)
                break;
        }
    return ocp_xasprintf("ocr-%016llx", (unsigned long long)h);
}

int ocp_cmd_ocr(int argc, char **argv)
{
    ocr_ctx c;
    char **pos = NULL, err[600], qdir[4096] = "", qpath[4200];
    int npos = 0, rc, status = OCP_EXIT_OK;
    FILE *sidecar = NULL;
    char *group = NULL;

    memset(&c, 0, sizeof c);
    rc = ocp_cli_parse(argc, argv, ocr_opts, ocr_handler, &c, ocr_help, &c.cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    if (npos == 0) {
        fprintf(stderr, "ocrpool: ocr: no input files (see ocrpool ocr --help)\n");
        status = OCP_EXIT_USAGE;
        goto out;
    }
    if ((rc = ocp_cli_check_device(c.cfg)) != 0) {
        status = rc;
        goto out;
    }
    c.fmts = ocp_format_parse(ocp_config_str(c.cfg, OCP_S_FORMAT));
    int stdin_used = 0;
    for (int i = 0; i < npos; i++)
        stdin_used += strcmp(pos[i], "-") == 0;
    if (stdin_used > 1) {
        fprintf(stderr, "ocrpool: ocr: standard input (-) can be read only once\n");
        status = OCP_EXIT_USAGE;
        goto out;
    }
    /* Renderings other than text need files: without -o they go to the current folder. */
    if (!c.outdir && c.fmts != OCP_FMT_TXT)
        c.outdir = ".";
    if (c.outdir && (rc = ocp_mkdir_p(c.outdir, 0755)) != 0) {
        fprintf(stderr, "ocrpool: cannot create %s: %s\n", c.outdir, ocp_strerror(rc));
        status = OCP_EXIT_FAILED;
        goto out;
    }
    if (c.sidecar && !(sidecar = fopen(c.sidecar, "we"))) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n", c.sidecar, strerror(errno));
        status = OCP_EXIT_FAILED;
        goto out;
    }
    /* The queue: given, under the output folder (resumable), or a temporary one. */
    if (c.queue) {
        snprintf(qpath, sizeof qpath, "%s", c.queue);
    } else if (c.outdir && strcmp(c.outdir, ".") != 0) {
        snprintf(qpath, sizeof qpath, "%s/.ocrpool-queue.db", c.outdir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(qdir, sizeof qdir, "%s/ocrpool-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(qdir)) {
            fprintf(stderr, "ocrpool: cannot make a temporary queue: %s\n", strerror(errno));
            status = OCP_EXIT_FAILED;
            goto out;
        }
        snprintf(qpath, sizeof qpath, "%s/queue.db", qdir);
    }

    c.nin = npos;
    c.in = ocp_xcalloc((size_t)npos, sizeof *c.in);
    for (int i = 0; i < npos; i++) {
        input *in = &c.in[i];
        in->path = pos[i];
        in->stem = ocp_path_stem(strcmp(pos[i], "-") == 0 ? "stdin" : pos[i]);
        if (strcmp(pos[i], "-") != 0) {
            in->file = ocp_xstrdup(pos[i]);
            continue;
        }
        /* Standard input: the workers read a copy kept beside the queue. */
        char *buf;
        size_t len;
        size_t max = (size_t)ocp_config_int(c.cfg, OCP_S_MAX_INPUT_SIZE) << 20;
        rc = ocp_read_fd(STDIN_FILENO, max, &buf, &len);
        if (rc == 0 && len == 0)
            rc = OCP_E_EMPTY;
        if (rc == 0) {
            in->file = ocp_xasprintf("%s.stdin", qpath);
            rc = ocp_write_file(in->file, buf, len);
            free(buf);
        }
        if (rc) {
            fprintf(stderr, "ocrpool: -: %s\n",
                    rc == OCP_E_EMPTY ? "empty input" : ocp_strerror(rc));
            free(in->file);
            in->file = NULL;
            c.failed++;
        }
    }
    unique_stems(c.in, npos);
    group = run_group(&c);
    c.so = (ocp_submit_opts){
        .lang = ocp_config_str(c.cfg, OCP_S_LANG),
        .group = group,
        .priority = 0,
        .max_image_size = (int)ocp_config_int(c.cfg, OCP_S_MAX_IMAGE_SIZE),
        .stable_ids = 1,
    };
    c.show_progress = !c.quiet && !c.verbose && isatty(STDERR_FILENO);

    ocp_pool_conf pc;
    ocp_pool_conf_from_config(&pc, c.cfg);
    pc.only_group = group;
    char url[4300];
    snprintf(url, sizeof url, "sqlite://%s", qpath);
    rc = run_node(&c, &pc, url, err, sizeof err);
    ocp_pool_conf_fini(&pc);
    if (c.show_progress)
        fprintf(stderr, "\r\033[K");
    if (rc) {
        if (err[0])
            fprintf(stderr, "ocrpool: %s\n", err);
        status = OCP_EXIT_FAILED;
        goto out;
    }

    /* Text in page order, from the queue; a failed page stays as an empty page. */
    int unfinished = 0;
    FILE *tf = sidecar ? sidecar : (!c.outdir ? stdout : NULL);
    ocp_broker *b = NULL;
    if (ocp_broker_open(url, NULL, &b, err, sizeof err) == 0) {
        int first = 1;
        for (int k = 0; k < c.npages; k++) {
            page_ref *pr = &c.pages[k];
            ocp_task_info info;
            const char *text = NULL;
            json_t *r = NULL;
            if (ocp_broker_get(b, pr->id, &info) != 0)
                continue;
            if (info.state == OCP_TASK_DONE && info.result) {
                r = json_loads(info.result, 0, NULL);
                text = json_string_value(json_object_get(r, "text"));
            } else if (info.state == OCP_TASK_READY || info.state == OCP_TASK_LEASED) {
                unfinished++;
            } else if (!pr->finished) {
                /* Failed before this run saw it (a budget refusal, or buried on lease). */
                report_failure(&c, pr, info.error ? info.error : "failed");
                c.failed++;
            }
            if (tf) {
                if (!first)
                    fputc('\f', tf);
                first = 0;
                if (text)
                    fputs(text, tf);
            }
            json_decref(r);
            ocp_task_info_fini(&info);
        }
        ocp_broker_close(b);
    } else {
        fprintf(stderr, "ocrpool: %s\n", err);
        status = OCP_EXIT_FAILED;
    }
    if (tf && (fflush(tf) != 0 || ferror(tf))) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n",
                tf == sidecar ? c.sidecar : "standard output", strerror(errno));
        status = OCP_EXIT_FAILED;
    }
    if (unfinished)
        fprintf(stderr,
                "ocrpool: stopped with %d pages not done: run the same command again "
                "to resume\n",
                unfinished);
    if (c.verbose || c.show_progress) {
        double dt = ocp_now() - c.t0;
        fprintf(stderr, "ocrpool: %d pages, %d failed, %.1f s (%.2f pages/s)\n", c.npages, c.failed,
                dt, dt > 0 ? (c.done + c.failed - c.resumed) / dt : 0.0);
    }
    for (int i = 0; i < c.nin; i++)
        if (!c.in[i].file || c.in[i].err[0])
            status = OCP_EXIT_FAILED;
    if (c.failed || unfinished || c.io_failed)
        status = OCP_EXIT_FAILED;
out:
    if (sidecar && fclose(sidecar) != 0) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n", c.sidecar, strerror(errno));
        status = OCP_EXIT_FAILED;
    }
    if (c.in) {
        for (int i = 0; i < c.nin; i++) {
            if (c.in[i].file && strcmp(c.in[i].path, "-") == 0 && qdir[0])
                unlink(c.in[i].file);
            free(c.in[i].stem);
            free(c.in[i].file);
        }
        free(c.in);
    }
    if (qdir[0]) {
        /* The temporary queue: nothing to resume without -o. */
        char *f[] = {"queue.db", "queue.db-wal", "queue.db-shm"};
        for (int i = 0; i < 3; i++) {
            char *p = ocp_xasprintf("%s/%s", qdir, f[i]);
            unlink(p);
            free(p);
        }
        rmdir(qdir);
    }
    free(c.pages);
    free(c.by_id);
    free(group);
    ocp_config_destroy(c.cfg);
    free(pos);
    return status;
}
