/*
 * cmd_ocr.c: `ocrpool ocr FILES...`, the main job: OCR images and PDFs
 * through a pool of workers on a queue of its own, write one file per page
 * and format as pages finish, then a sidecar of all text, or the text on
 * standard output.
 *
 * The command is a producer and a consumer of its own queue, beside a node
 * that works it:
 *
 *   ocrpool ocr ──fork (app/node.h; first, before libvips or the queue)──> node
 *     | submits the pages (app/submit.h)                 ocp_pool_run on the
 *     | polls the queue: each page that finishes is      queue, this run's
 *     |   read and parsed once, written (app/output.h)   group only; dies
 *     | all finished: SIGTERM (warm stop), reap          with its parent
 *
 * The node has a process group of its own: ^C on a terminal reaches this
 * process only, which passes stops on. The first stop (SIGINT, SIGTERM,
 * SIGHUP) becomes SIGTERM to the node (warm: running pages finish), a second
 * one or SIGQUIT becomes SIGQUIT (cold); queueing stops at the first, and
 * this process reads what finished, says how to resume and exits 1. A node
 * that ends before every page has finished (killed, or an error) ends the
 * run the same way. SIGPIPE is ignored during the run: a closed standard
 * output is an error said on stderr. What the node writes on standard error
 * comes through this process (also while it queues pages): as it is with -v,
 * otherwise summed up (app/node.h: errors and the first warning said as this
 * command says things, the rest counted at the end).
 *
 * Pages are found as they finish by the queue's list of what finished since
 * a time (ocp_broker_list_finished), never the whole group per look; pages
 * done before this run began are resumed: kept, their missing files written.
 *
 * The queue is a SQLite file under the output folder (or --queue FILE), or
 * without either one in the user's state folder named by the inputs, the
 * languages and the engine (removed once a run completes; a temporary one
 * when standard input is read); task ids come from each file's path, size,
 * time, page and settings, so running the same command again after an
 * interruption resumes: finished pages are kept, the rest (and failed ones)
 * are done. The group is named by the inputs: a run of other files on the same
 * queue keeps the pages another run's group has done (read by id, take_resumed),
 * makes its own tasks for the ones not done (app/submit.c), and leaves the other
 * files' pages alone.
 */
#include "app/node.h"
#include "app/output.h"
#include "app/submit.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/result.h"
#include "image/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

enum { K_OUT = 1, K_SIDECAR, K_VERBOSE, K_QUIET, K_QUEUE, K_OUTPUT_PDF };

static const ocp_cli_opt ocr_opts[] = {
    {"output-dir", 'o', 1, K_OUT},
    {"sidecar", 0, 1, K_SIDECAR},
    {"verbose", 'v', 0, K_VERBOSE},
    {"quiet", 'q', 0, K_QUIET},
    {"queue", 0, 1, K_QUEUE},
    {"output-pdf", 0, 1, K_OUTPUT_PDF},
    {NULL, 0, 0, 0},
};

typedef struct input {
    const char *path;  /* "-" = standard input */
    char *file;        /* what the workers read (a copy of standard input) */
    char *stem;        /* output file names start with it */
    int pages;         /* 0 when it could not be queued */
    int err;           /* it could not be read or queued (said on stderr) */
    int first, queued; /* its pages in c->pages: [first, first + queued) */
    int nfin, nfailed; /* of them finished, and failed */
    int fresh;         /* a page of it finished in this run (its PDF is made again) */
} input;

typedef struct page_ref {
    char id[64];
    int input, page;
    int finished; /* 0 no, 1 done, 2 failed */
    int foreign;  /* its task is another run's (other files on the same queue), done there */
    char *text;   /* the page's text once done, kept only for the sidecar or standard output */
} page_ref;

typedef struct ocr_ctx {
    const char *outdir, *sidecar, *queue, *output_pdf;
    int verbose, quiet;
    ocp_config *cfg;
    int fmts;
    input *in;
    int nin;
    page_ref *pages, **by_id;
    int npages, cap, cur_pages; /* cur_pages: pages of the file being queued */
    int *idx;                   /* room for npages indexes (a poll's finished pages) */
    int done, failed, resumed, show_progress, io_failed, keep_text;
    int no_stdout; /* --format pdf alone: no text on standard output */
    int finished;  /* pages of c->pages finished, done or failed */
    int stopped;   /* queueing stopped before every page was queued */
    double t0;
    double run_t0;    /* wall time this run began: pages finished before it are resumed */
    double since;     /* the next poll's finished time from (the largest seen minus overlap) */
    double err_since; /* first of consecutive failures to read the queue; 0 = none */
    ocp_submit_opts so;
    char qdir[4096]; /* a temporary queue's folder, removed at the end; "" = none */
    int state_q;     /* the queue is this run's in the user's state folder */
    int busy_q;      /* a temporary queue: the same command held the state folder's one */
    int lock_fd;     /* that queue's file, flock'ed while the run goes on; -1 = none */
    int complete;    /* every page done: a queue in the state folder is removed */
    int said_stop;   /* the stop level said to the user */
    char qpath[4200], url[4300];
    ocp_app_node *node; /* the node working the queue; NULL = none (never started) */
    ocp_broker *b;
} ocr_ctx;

/* Pages seen finished again by each poll: a page's finished time is its worker's, set a
 * little before the queue stores it. */
#define POLL_OVERLAP_S 5.0
/* With nothing finishing this long, a poll looks at every finished page (one missed by
 * the overlap is found). */
#define SWEEP_QUIET_S 10.0
/* The queue unreadable this long, without a break, ends the run. */
#define QUEUE_GIVE_UP_S 30.0

static volatile sig_atomic_t sig_count, sig_quit;

static void on_signal(int s)
{
    if (s == SIGQUIT)
        sig_quit = 1;
    else
        sig_count++;
}

static void ocr_help(void)
{
    printf("usage: ocrpool ocr [options] FILE...   (FILE may be - for standard input)\n\n"
           "OCR images (PNG, JPEG, TIFF, WebP, PNM, GIF) and PDFs with a pool of workers.\n\n"
           "  -o, --output-dir DIR         write DIR/<stem>.<ext> per page and format\n"
           "                               (<stem>-p<N>.<ext> for multi-page inputs)\n"
           "      --sidecar FILE           all text, pages in order, separated by form feeds\n"
           "      --output-pdf FILE        the searchable PDF of the one input (--format pdf\n"
           "                               gives DIR/<stem>.pdf for each input)\n"
           "      --queue FILE             the queue (default DIR/.ocrpool-queue.db with -o)\n"
           "  -v, --verbose                a line per page, also on a pipe\n"
           "  -q, --quiet                  no progress line\n"
           "      --config FILE            settings file (name = value)\n\n"
           "-j N is the same as -c N (--concurrency, below).\n\n"
           "Without -o or --sidecar, and with --format txt (the default), the text goes to\n"
           "standard output. Any other --format without -o is -o . : one file per page and\n"
           "format (txt included) in the current folder, and nothing on standard output.\n"
           "Running the same command again resumes where an interrupted run stopped (without\n"
           "-o or --queue the queue is kept under $XDG_STATE_HOME/ocrpool/runs until the run\n"
           "completes; a run that reads standard input, or that starts while the same command\n"
           "runs, cannot be resumed); a run ended by an error resumes once its cause is fixed.\n"
           "Without -v the workers' log is summed up: errors and the first warning (a worker\n"
           "replaced for its memory said in words), then a count.\n"
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
    case K_OUTPUT_PDF:
        c->output_pdf = arg;
        break;
    }
    return 0;
}

/* ---- Inputs, outputs and the queue's place ------------------------------------------ */

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

/* Checks the inputs and the formats; makes the output folder. 0 or an exit status. */
static int check_outputs(ocr_ctx *c, char **pos, int npos)
{
    int stdin_used = 0, rc;
    if (npos == 0) {
        fprintf(stderr, "ocrpool: ocr: no input files (see ocrpool ocr --help)\n");
        return OCP_EXIT_USAGE;
    }
    if ((rc = ocp_cli_check_device(c->cfg)) != 0)
        return rc;
    c->fmts = ocp_app_format_parse(ocp_config_str(c->cfg, OCP_S_FORMAT));
    for (int i = 0; i < npos; i++)
        stdin_used += strcmp(pos[i], "-") == 0;
    if (stdin_used > 1) {
        fprintf(stderr, "ocrpool: ocr: standard input (-) can be read only once\n");
        return OCP_EXIT_USAGE;
    }
    if (c->output_pdf && npos != 1) {
        fprintf(stderr, "ocrpool: ocr: --output-pdf is for one input (--format pdf -o DIR "
                        "makes one PDF per input)\n");
        return OCP_EXIT_USAGE;
    }
    /* Renderings other than text need files: without -o they go to the current folder
     * (--format pdf's too; --output-pdf names its own file). */
    int page_fmts = c->fmts & ~OCP_APP_FMT_PDF;
    if (!c->outdir &&
        ((page_fmts && page_fmts != OCP_FMT_TXT) || (c->fmts & OCP_APP_FMT_PDF && !c->output_pdf)))
        c->outdir = ".";
    if (c->output_pdf)
        c->fmts |= OCP_APP_FMT_PDF;
    c->no_stdout = page_fmts == 0;
    if (c->outdir && (rc = ocp_mkdir_p(c->outdir, 0755)) != 0) {
        fprintf(stderr, "ocrpool: cannot create %s: %s\n", c->outdir, ocp_strerror(rc));
        return OCP_EXIT_FAILED;
    }
    return 0;
}

/* The user's folder for the queues of runs without -o: $XDG_STATE_HOME/ocrpool/runs
 * (~/.local/state by default); "" when there is none. */
static void runs_dir(char *buf, size_t len)
{
    const char *st = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    buf[0] = '\0';
    if (st && *st == '/')
        snprintf(buf, len, "%s/ocrpool/runs", st);
    else if (home && *home == '/')
        snprintf(buf, len, "%s/.local/state/ocrpool/runs", home);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ULL;
    return h;
}

/* A SQLite queue file and its -wal and -shm removed. */
static void remove_queue(const char *db)
{
    static const char *const ext[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char *p = ocp_xasprintf("%s%s", db, ext[i]);
        unlink(p);
        free(p);
    }
}

/* The queues in dir untouched for max_age seconds: runs nobody came back to. */
static void prune_queues(const char *dir, double max_age)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    double now = ocp_wall_now();
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        struct stat st;
        if (n < 4 || strcmp(e->d_name + n - 3, ".db") != 0)
            continue;
        char *p = ocp_xasprintf("%s/%s", dir, e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        /* Not one a run holds now (however long it has been quiet). */
        if (fd >= 0 && fstat(fd, &st) == 0 && now - (double)st.st_mtime > max_age &&
            flock(fd, LOCK_EX | LOCK_NB) == 0)
            remove_queue(p);
        if (fd >= 0)
            close(fd);
        free(p);
    }
    if (d)
        closedir(d);
}

/* The queue of a run without -o, kept in the state folder until it completes: named by
 * the inputs (where they are, their sizes and times), the languages and the engine, so
 * the same command on the same files finds it again. Queues untouched for 30 days go. */
static int state_queue(ocr_ctx *c, char **pos, int npos)
{
    char dir[4096], cwd[4096];
    runs_dir(dir, sizeof dir);
    if (!dir[0] || ocp_mkdir_p(dir, 0700) != 0 || !getcwd(cwd, sizeof cwd))
        return -1;
    uint64_t h = fnv(14695981039346656037ULL, cwd, strlen(cwd) + 1);
    for (int i = 0; i < npos; i++) {
        struct stat st;
        char rp[PATH_MAX];
        const char *name = realpath(pos[i], rp) ? rp : pos[i];
        h = fnv(h, name, strlen(name) + 1);
        if (stat(name, &st) == 0) {
            long long v[2] = {(long long)st.st_size, (long long)st.st_mtime};
            h = fnv(h, v, sizeof v);
        }
    }
    const char *lang = ocp_config_str(c->cfg, OCP_S_LANG), *eng = ocp_config_str(c->cfg, OCP_S_ENGINE);
    h = fnv(fnv(h, lang, strlen(lang) + 1), eng, strlen(eng) + 1);
    prune_queues(dir, 30 * 86400.0);
    snprintf(c->qpath, sizeof c->qpath, "%s/%016llx.db", dir, (unsigned long long)h);
    /* One run of a command at a time on its queue: the same command running twice at
     * once, the second takes a temporary queue (and says it cannot be resumed). */
    c->lock_fd = open(c->qpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (c->lock_fd < 0 || flock(c->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (c->lock_fd >= 0)
            close(c->lock_fd);
        c->lock_fd = -1;
        fprintf(stderr, "ocrpool: the same command is running already: this run cannot be "
                        "resumed\n");
        c->busy_q = 1;
        return -1;
    }
    c->state_q = 1;
    return 0;
}

/* The queue: given, under the output folder, in the state folder (each resumable), or a
 * temporary one when standard input is read (it cannot be read again). */
static int place_queue(ocr_ctx *c, char **pos, int npos)
{
    int stdin_used = 0;
    for (int i = 0; i < npos; i++)
        stdin_used |= strcmp(pos[i], "-") == 0;
    if (c->queue) {
        snprintf(c->qpath, sizeof c->qpath, "%s", c->queue);
    } else if (c->outdir && strcmp(c->outdir, ".") != 0) {
        snprintf(c->qpath, sizeof c->qpath, "%s/.ocrpool-queue.db", c->outdir);
    } else if (stdin_used || state_queue(c, pos, npos) != 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(c->qdir, sizeof c->qdir, "%s/ocrpool-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(c->qdir)) {
            fprintf(stderr, "ocrpool: cannot make a temporary queue: %s\n", strerror(errno));
            c->qdir[0] = '\0';
            return OCP_EXIT_FAILED;
        }
        snprintf(c->qpath, sizeof c->qpath, "%s/queue.db", c->qdir);
    }
    snprintf(c->url, sizeof c->url, "sqlite://%s", c->qpath);
    return 0;
}

/* Standard input: the workers read a copy kept beside the queue. */
static void copy_stdin(ocr_ctx *c, input *in)
{
    char *buf;
    size_t len;
    size_t max = (size_t)ocp_config_int(c->cfg, OCP_S_MAX_INPUT_SIZE) << 20;
    int rc = ocp_read_fd(STDIN_FILENO, max, &buf, &len);
    if (rc == 0 && len == 0)
        rc = OCP_E_EMPTY;
    if (rc == 0) {
        in->file = ocp_xasprintf("%s.stdin", c->qpath);
        rc = ocp_write_file(in->file, buf, len);
        free(buf);
    }
    if (rc) {
        fprintf(stderr, "ocrpool: -: %s\n", rc == OCP_E_EMPTY ? "empty input" : ocp_strerror(rc));
        free(in->file);
        in->file = NULL;
        in->err = 1;
        c->failed++;
    }
}

static void read_inputs(ocr_ctx *c, char **pos, int npos)
{
    c->nin = npos;
    c->in = ocp_xcalloc((size_t)npos, sizeof *c->in);
    for (int i = 0; i < npos; i++) {
        input *in = &c->in[i];
        in->path = pos[i];
        in->stem = ocp_path_stem(strcmp(pos[i], "-") == 0 ? "stdin" : pos[i]);
        if (strcmp(pos[i], "-") != 0)
            in->file = ocp_xstrdup(pos[i]);
        else
            copy_stdin(c, in);
    }
    unique_stems(c->in, npos);
}

/* A group name for this run: the same inputs and settings give the same group. */
static char *run_group(ocr_ctx *c)
{
    uint64_t h = 14695981039346656037ULL;
    for (int i = 0; i < c->nin; i++) {
        const char *f = c->in[i].file ? c->in[i].file : "";
        h = fnv(h, f, strlen(f) + 1);
    }
    return ocp_xasprintf("ocr-%016llx", (unsigned long long)h);
}

/* ---- The node (app/node.h) --------------------------------------------------------- */

/* The stop the signals ask for: none, warm (the first SIGINT, SIGTERM or SIGHUP), cold (a
 * second one, or SIGQUIT), kill (a third: the node and its children end now). */
static int stop_wanted(void *unused)
{
    (void)unused;
    if (sig_count >= 3)
        return OCP_NODE_KILL;
    return sig_quit || sig_count >= 2 ? OCP_NODE_COLD : sig_count >= 1 ? OCP_NODE_WARM : 0;
}

static void progress(ocr_ctx *c);

/* Passes stops that arrived on to the node (each once), and says each on a line of its
 * own. Returns the stop asked for. */
static int forward_stop(ocr_ctx *c)
{
    static const char *const said[] = {
        "",
        "stopping: running pages finish (^C again: stop them now)",
        "stopping now: running pages are left for the next run (^C again: kill the workers)",
        "killing the workers",
    };
    int want = stop_wanted(NULL);
    if (want)
        ocp_app_node_stop(c->node, want);
    if (want > c->said_stop && !c->quiet) {
        fprintf(stderr, "%socrpool: %s\n", c->show_progress ? "\r\033[K" : "", said[want]);
        c->said_stop = want;
        if (c->t0 > 0)
            progress(c);
    }
    return want;
}

/* Forks the node that works this run's group. Call before libvips or the queue is opened
 * here: the node forks its zygote from this state. 0 or an exit status. */
static int start_node(ocr_ctx *c)
{
    char err[300];
    int flags = (c->show_progress ? OCP_NODE_CLEAR_LINE : 0) |
                (c->verbose || ocp_log_level > OCP_LOG_WARN ? OCP_NODE_RAW_LOG : 0);
    if (ocp_app_node_start(c->cfg, c->so.group, c->url, flags, &c->node, err,
                           sizeof err) != 0) {
        fprintf(stderr, "ocrpool: %s\n", err);
        return OCP_EXIT_FAILED;
    }
    return 0;
}

/* ---- Pages as they finish ---------------------------------------------------------- */

static int cmp_ref(const void *a, const void *b)
{
    return strcmp((*(page_ref *const *)a)->id, (*(page_ref *const *)b)->id);
}

/* The first of the pages with task id in c->by_id (the same file given twice makes the
 * same task twice), or NULL. */
static page_ref **find_ref(ocr_ctx *c, const char *id)
{
    page_ref key, *kp = &key;
    snprintf(key.id, sizeof key.id, "%s", id);
    page_ref **r = bsearch(&kp, c->by_id, (size_t)c->npages, sizeof *c->by_id, cmp_ref);
    while (r && r > c->by_id && strcmp(r[-1]->id, id) == 0)
        r--;
    return r;
}

static void progress(ocr_ctx *c)
{
    if (!c->show_progress)
        return;
    double dt = ocp_now() - c->t0;
    int fin = c->done + c->failed;
    double rate = dt > 0 ? (fin - c->resumed) / dt : 0;
    char eta[32] = "ETA --:--"; /* until a page of this run has finished */
    if (rate > 0) {
        int s = (int)((c->npages - fin) / rate + 0.5);
        snprintf(eta, sizeof eta, "ETA %d:%02d", s / 60, s % 60);
    }
    fprintf(stderr, "\r\033[K%d/%d pages  %.2f pages/s  %s%s", fin, c->npages, rate, eta,
            c->failed ? "  (some failed)" : "");
    fflush(stderr);
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

/* ---- Searchable PDFs ------------------------------------------------------------------ */

/* Where input i's PDF goes: --output-pdf, or DIR/<stem>.pdf. New (free). */
static char *pdf_path(const ocr_ctx *c, const input *in)
{
    return c->output_pdf ? ocp_xstrdup(c->output_pdf)
                         : ocp_xasprintf("%s/%s.pdf", c->outdir, in->stem);
}

/* The searchable PDF of an input whose pages are all done, from their results as the
 * queue keeps them (pages done by an earlier run too). A failure is the input's, said. */
static void write_pdf(ocr_ctx *c, input *in)
{
    char err[700];
    int n = in->pages, rc = 0;
    ocp_app_page *pgs = ocp_xcalloc((size_t)n + 1, sizeof *pgs);
    const ocp_result **res = ocp_xcalloc((size_t)n + 1, sizeof *res);
    for (int k = in->first; k < in->first + in->queued && !rc; k++) {
        page_ref *pr = &c->pages[k];
        ocp_app_page *pg = &pgs[pr->page];
        if (pr->page < 0 || pr->page >= n || pg->parsed)
            continue;
        ocp_app_page_fini(pg);
        if (ocp_app_page_get(c->b, pr->id, 1, pg) != 0 || !pg->parsed)
            rc = ocp_errf(OCP_E_DECODE, err, sizeof err, "page %d: cannot read its result back",
                          pr->page + 1);
        res[pr->page] = pg->parsed ? &pg->res : NULL;
    }
    ocp_image_limits lim = ocp_image_limits_from_config(c->cfg);
    size_t max = (size_t)ocp_config_int(c->cfg, OCP_S_MAX_INPUT_SIZE) << 20;
    ocp_sb sb;
    ocp_sb_init(&sb);
    if (!rc)
        rc = ocp_app_pdf_document(in->file, &lim, max, res, n, &sb, err, sizeof err);
    char *path = pdf_path(c, in);
    if (!rc && (rc = ocp_write_file(path, sb.buf, sb.len)) != 0)
        ocp_errf(rc, err, sizeof err, "cannot write %s: %s", path, ocp_strerror(rc));
    if (rc) {
        if (c->show_progress)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr, "ocrpool: %s: no PDF: %s\n", in->path, err);
        c->io_failed = 1;
    } else if (c->verbose) {
        fprintf(stderr, "ocrpool: %s: %s (%zu bytes)\n", in->path, path, sb.len);
    }
    free(path);
    ocp_sb_fini(&sb);
    for (int i = 0; i < n; i++)
        ocp_app_page_fini(&pgs[i]);
    free(pgs);
    free(res);
}

/* A page of an input finished (done or not; in this run or before it): once every page of
 * the input has, its PDF is made, unless every page was done before this run and the PDF
 * is there already (a resumed run that had nothing left to do). */
static void doc_page_finished(ocr_ctx *c, const page_ref *pr, int done, int fresh)
{
    input *in = &c->in[pr->input];
    in->nfin++;
    in->nfailed += !done;
    in->fresh |= fresh;
    if (!(c->fmts & OCP_APP_FMT_PDF) || in->nfin != in->pages || in->queued != in->pages)
        return;
    if (in->nfailed) {
        if (c->show_progress)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr, "ocrpool: %s: no PDF: %d of its pages failed (run again to retry them)\n",
                in->path, in->nfailed);
        return;
    }
    char *path = pdf_path(c, in);
    int have = access(path, F_OK) == 0;
    free(path);
    if (in->fresh || !have)
        write_pdf(c, in);
}

/* A page of this run finished: pg holds its task and, when done, its parsed result. */
static void page_finished(ocr_ctx *c, page_ref *pr, ocp_app_page *pg, int decode_rc)
{
    const input *in = &c->in[pr->input];
    char err[600], why[700];
    const char *reason = NULL;
    if (pg->info.state == OCP_TASK_DONE) {
        if (decode_rc)
            reason = "stored result is not a page result";
        else if (c->outdir &&
                 ocp_app_write_page(c->outdir, in->stem, pr->page, in->pages, c->fmts,
                                    pg->info.result, &pg->res, 0, err, sizeof err) != 0) {
            reason = err;
            c->io_failed = 1;
        }
    } else if (pg->info.state == OCP_TASK_BURIED) {
        snprintf(why, sizeof why, "buried after %d deliveries: %s", pg->info.deliveries,
                 pg->info.error ? pg->info.error : ocp_failure_text(pg->info.failure));
        reason = why;
    } else {
        reason = pg->info.error ? pg->info.error : ocp_failure_text(pg->info.failure);
    }
    pr->finished = reason ? 2 : 1;
    c->finished++;
    if (reason) {
        c->failed++;
        report_failure(c, pr, reason);
        doc_page_finished(c, pr, 0, 1);
    } else {
        c->done++;
        if (c->keep_text)
            pr->text = ocp_xstrdup(pg->res.text ? pg->res.text : "");
        if (c->verbose)
            fprintf(stderr, "ocrpool: %s page %d: %zu lines, %.2f s, peak RSS %ld KiB\n", in->path,
                    pr->page + 1, pg->res.n_lines, pg->res.elapsed_ms / 1000.0,
                    pg->res.peak_rss_kb);
        doc_page_finished(c, pr, 1, 1);
    }
    progress(c);
}

typedef struct scan {
    ocr_ctx *c;
    int n;         /* pages newly finished, their indexes in c->idx */
    double latest; /* the largest finished time seen */
    int resumed;   /* resuming: only pages done before this run began, then stop */
} scan;

static int note_finished(void *vctx, const ocp_task_info *i)
{
    scan *s = vctx;
    ocr_ctx *c = s->c;
    if (s->resumed && i->finished >= c->run_t0)
        return 1; /* in order of finished time: the rest finished in this run */
    if (s->resumed && i->state != OCP_TASK_DONE)
        return 0;
    if (i->finished > s->latest)
        s->latest = i->finished;
    page_ref **r = find_ref(c, i->id), **end = c->by_id + c->npages;
    for (; r && r < end && strcmp((*r)->id, i->id) == 0; r++)
        if (!(*r)->finished)
            c->idx[s->n++] = (int)(*r - c->pages);
    return 0;
}

/* Reads the pages of this run that finished at since or later. Returns how many, or a
 * negative code when the queue cannot be read (a page that could not be read is left
 * unfinished, and the next poll looks from before it again). */
static int poll_queue(ocr_ctx *c, double since)
{
    scan s = {c, 0, since, 0};
    int rc = ocp_broker_list_finished(c->b, c->so.group, since, note_finished, &s), got = 0;
    for (int k = 0; k < s.n && !rc; k++) {
        page_ref *pr = &c->pages[c->idx[k]];
        ocp_app_page pg;
        int r = ocp_app_page_get(c->b, pr->id, 1, &pg);
        if (r == 0 || r == OCP_E_DECODE) {
            page_finished(c, pr, &pg, r);
            got++;
        } else {
            rc = r;
        }
        ocp_app_page_fini(&pg);
    }
    if (!rc && s.latest - POLL_OVERLAP_S > c->since)
        c->since = s.latest - POLL_OVERLAP_S;
    return rc ? rc : got;
}

/* ---- Submitting ---------------------------------------------------------------------- */

/* A page queued. Every 16 pages: what the node wrote is passed on, and whether it has
 * ended is looked at. Stops queueing (non-zero) once a stop arrived or the node ended. */
static int add_ref(void *vctx, const char *id, int page, int pages, int inserted)
{
    ocr_ctx *c = vctx;
    ocp_task_info info;
    if (c->npages == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->pages = ocp_xrealloc(c->pages, (size_t)c->cap * sizeof *c->pages);
    }
    page_ref *r = &c->pages[c->npages++];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    r->page = page;
    r->input = -1; /* set by the caller */
    /* A task made by a run of other files on this queue (submit.c keeps it only when it
     * is done): not in this run's group, so neither the node nor the polls see it. */
    memset(&info, 0, sizeof info);
    if (!inserted && ocp_broker_get(c->b, id, &info) == 0 && info.group)
        r->foreign = strcmp(info.group, c->so.group) != 0;
    ocp_task_info_fini(&info);
    c->cur_pages = pages;
    if (c->npages % 16 == 0) {
        ocp_app_node_relay(c->node, 1, 0);
        ocp_app_node_reap(c->node, NULL);
    }
    return forward_stop(c) || !ocp_app_node_running(c->node);
}

/* Pages done before this run began (an earlier run of the same command): kept, their
 * missing files written. Pages finished since are the polls' (page_finished). */
static void take_resumed(ocr_ctx *c)
{
    char err[600];
    scan s = {c, 0, 0, 1};
    if (ocp_broker_list_finished(c->b, c->so.group, 0, note_finished, &s) < 0)
        s.n = 0, c->since = 0; /* the polls take them */
    int own = s.n;
    for (int k = 0; k < c->npages; k++)
        if (c->pages[k].foreign)
            c->idx[s.n++] = k;
    for (int k = 0; k < s.n; k++) {
        page_ref *pr = &c->pages[c->idx[k]];
        const input *in = &c->in[pr->input];
        ocp_app_page pg;
        if (pr->finished)
            continue; /* the same file named twice */
        if (ocp_app_page_get(c->b, pr->id, 1, &pg) != 0 || pg.info.state != OCP_TASK_DONE) {
            ocp_app_page_fini(&pg);
            if (k < own) {
                c->since = 0; /* not readable now: a poll looks again */
                continue;
            }
            /* No poll ever sees another group's task: the page fails now rather than
             * waiting for ever (the next run gives it a task of its own). */
            pr->finished = 2;
            c->finished++;
            c->failed++;
            report_failure(c, pr, "its result from an earlier run cannot be read: run again");
            doc_page_finished(c, pr, 0, 0);
            continue;
        }
        pr->finished = 1;
        if (c->keep_text)
            pr->text = ocp_xstrdup(pg.res.text ? pg.res.text : "");
        c->done++;
        c->finished++;
        if (c->outdir && ocp_app_write_page(c->outdir, in->stem, pr->page, in->pages, c->fmts,
                                            pg.info.result, &pg.res, 1, err, sizeof err) != 0) {
            report_failure(c, pr, err);
            c->io_failed = 1;
        }
        ocp_app_page_fini(&pg);
        doc_page_finished(c, pr, 1, 0);
    }
    c->resumed = c->done;
    if (c->done && (c->verbose || c->show_progress))
        fprintf(stderr, "ocrpool: resuming: %d of %d pages done already\n", c->done, c->npages);
}

/* Queues the pages of every input (libvips reads the page counts and headers here, in
 * this process, after the node is forked) until a stop. 0 or an exit status. */
static int submit_pages(ocr_ctx *c)
{
    char err[600];
    if (ocp_image_global_init("ocrpool")) {
        fprintf(stderr, "ocrpool: cannot start libvips\n");
        return OCP_EXIT_FAILED;
    }
    if (ocp_broker_open(c->url, NULL, &c->b, err, sizeof err)) {
        fprintf(stderr, "ocrpool: %s\n", err);
        return OCP_EXIT_FAILED;
    }
    /* Resuming: failed pages of an earlier run get another chance; done ones are kept. */
    long n = 0;
    ocp_broker_requeue(c->b, c->so.group, (1u << OCP_TASK_FAILED) | (1u << OCP_TASK_BURIED), &n);
    ocp_image_limits lim = ocp_image_limits_from_config(c->cfg);
    for (int i = 0; i < c->nin && !c->stopped; i++) {
        input *in = &c->in[i];
        int before = c->npages, rc;
        if (!in->file)
            continue;
        c->cur_pages = 0;
        rc = ocp_app_submit_file(c->b, in->file, &lim, &c->so, add_ref, c, err, sizeof err);
        if (rc && rc != -EINTR) {
            fprintf(stderr, "ocrpool: %s: %s\n", in->path, err);
            in->err = 1;
            c->npages = before;
            continue;
        }
        c->stopped = rc == -EINTR;
        in->pages = c->cur_pages; /* the file's pages (its output names), all queued or not */
        for (int k = before; k < c->npages; k++)
            c->pages[k].input = i;
        in->first = before;
        in->queued = c->npages - before;
    }
    c->by_id = ocp_xcalloc((size_t)c->npages + 1, sizeof *c->by_id);
    c->idx = ocp_xcalloc((size_t)c->npages + 1, sizeof *c->idx);
    for (int k = 0; k < c->npages; k++)
        c->by_id[k] = &c->pages[k];
    qsort(c->by_id, (size_t)c->npages, sizeof *c->by_id, cmp_ref);
    c->since = c->run_t0 - POLL_OVERLAP_S;
    take_resumed(c);
    c->t0 = ocp_now();
    progress(c);
    return 0;
}

/* ---- The run ------------------------------------------------------------------------- */

/*
 * Follows the queue until every page has finished, or the node has ended (a stop asked
 * for, or an error), or the queue has been unreadable for QUEUE_GIVE_UP_S; then stops the
 * node warm unless a stop was passed on already, and waits for it to end.
 */
static void follow(ocr_ctx *c)
{
    double wait_s = 0.02, now = ocp_now(), quiet_since = now, swept = now;
    for (;;) {
        forward_stop(c);
        int ended = ocp_app_node_reap(c->node, NULL);
        /* Once the node has ended, or after a quiet while: every finished page. */
        int sweep = ended || (now - quiet_since > SWEEP_QUIET_S && now - swept > SWEEP_QUIET_S);
        int got = poll_queue(c, sweep ? 0 : c->since);
        now = ocp_now();
        swept = sweep ? now : swept;
        if (got < 0 && !c->err_since)
            c->err_since = now;
        else if (got >= 0)
            c->err_since = 0;
        if (c->finished >= c->npages)
            break;
        if (ended || (got < 0 && now - c->err_since > QUEUE_GIVE_UP_S)) {
            if (got < 0)
                fprintf(stderr, "ocrpool: %s\n", ocp_broker_errmsg(c->b));
            break;
        }
        /* Short while pages arrive, longer while the queue is quiet. */
        quiet_since = got > 0 ? now : quiet_since;
        wait_s = got > 0 ? 0.02 : (wait_s * 1.5 < 0.25 ? wait_s * 1.5 : 0.25);
        ocp_app_node_relay(c->node, 1, (int)(wait_s * 1000));
        now = ocp_now();
    }
    /* Warm unless a stop was passed on: nothing is running (or the queue is unreadable). */
    ocp_app_node_stop(c->node, OCP_NODE_WARM);
    ocp_app_node_wait(c->node, 1, stop_wanted, NULL);
}

/* The text in page order (a failed page is an empty page), the summary, and the exit
 * status. */
static int conclude(ocr_ctx *c, FILE *sidecar)
{
    int status = OCP_EXIT_OK, unfinished = c->npages - c->finished;
    FILE *tf = sidecar ? sidecar : (!c->outdir && !c->no_stdout ? stdout : NULL);
    if (c->show_progress)
        fprintf(stderr, "\r\033[K");
    if (tf) {
        char **texts = ocp_xcalloc((size_t)c->npages + 1, sizeof *texts);
        for (int k = 0; k < c->npages; k++)
            texts[k] = c->pages[k].text;
        if (ocp_app_write_text(tf, texts, c->npages) != 0) {
            fprintf(stderr, "ocrpool: cannot write %s: %s\n",
                    tf == sidecar ? c->sidecar : "standard output", strerror(errno));
            status = OCP_EXIT_FAILED;
        }
        free(texts);
    }
    /* Only what a rerun really does: a temporary queue is gone at the end; a run that ended
     * by an error (said above: the node failed, or the queue could not be read) ends the
     * same way again until its cause is fixed. */
    int asked = stop_wanted(NULL) > 0;
    const char *again = c->qdir[0] ? (c->busy_q ? "this run had a temporary queue (the same "
                                                  "command was running already) and cannot be "
                                                  "resumed"
                                                : "standard input cannot be resumed: OCR a "
                                                  "file to resume")
                        : asked    ? "run the same command again to resume"
                                   : "run the same command again to resume once the cause "
                                     "above is fixed";
    const char *how = asked ? "stopped" : "the run ended";
    if (c->stopped)
        fprintf(stderr, "ocrpool: %s before every page was queued: %s\n", how, again);
    else if (unfinished)
        fprintf(stderr, "ocrpool: %s with %d %s not done: %s\n", how, unfinished,
                unfinished == 1 ? "page" : "pages", again);
    if (c->verbose || c->show_progress || unfinished || c->stopped) {
        double dt = ocp_now() - c->t0;
        /* Stopped while queueing: the count is of the pages queued, not of the inputs'. */
        fprintf(stderr, "ocrpool: %d %s%s: %d done, %d failed", c->npages,
                c->npages == 1 ? "page" : "pages", c->stopped ? " queued" : "", c->done, c->failed);
        if (unfinished)
            fprintf(stderr, ", %d not done", unfinished);
        fprintf(stderr, "; %.1f s (%.2f pages/s)\n", dt,
                dt > 0 ? (c->done + c->failed - c->resumed) / dt : 0.0);
    }
    long hidden = ocp_app_node_hidden(c->node);
    if (hidden > 0)
        fprintf(stderr, "ocrpool: %ld more %s of the workers not shown (-v shows them)\n", hidden,
                hidden == 1 ? "warning" : "warnings");
    c->complete = !unfinished && !c->stopped && !c->failed && !c->io_failed;
    for (int i = 0; i < c->nin; i++)
        if (c->in[i].err)
            status = OCP_EXIT_FAILED, c->complete = 0;
    if (c->failed || unfinished || c->io_failed || c->stopped)
        status = OCP_EXIT_FAILED;
    return status;
}

/* Submits, follows and concludes, with the node forked first; then the node's failure. */
static int run(ocr_ctx *c, FILE *sidecar)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGPIPE};
    struct sigaction sa = {0}, old[5];
    int status, failed = 0;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 5; i++) {
        sigaction(sigs[i], NULL, &old[i]);
        /* A hangup ignored on purpose (nohup) stays ignored. */
        if (sigs[i] == SIGHUP && old[i].sa_handler == SIG_IGN)
            continue;
        sa.sa_handler = sigs[i] == SIGPIPE ? SIG_IGN : on_signal;
        sigaction(sigs[i], &sa, NULL);
    }
    c->run_t0 = ocp_wall_now();
    if ((status = start_node(c)) != 0)
        goto out;
    if ((status = submit_pages(c)) != 0)
        goto out;
    follow(c);
    status = conclude(c, sidecar);
    if (ocp_app_node_reap(c->node, &failed) && failed)
        status = OCP_EXIT_FAILED;
out:
    if (c->node && ocp_app_node_running(c->node)) {
        ocp_app_node_stop(c->node, OCP_NODE_WARM);
        ocp_app_node_wait(c->node, 1, stop_wanted, NULL);
    }
    ocp_app_node_destroy(c->node);
    c->node = NULL;
    for (int i = 0; i < 5; i++)
        sigaction(sigs[i], &old[i], NULL);
    return status;
}

static void cleanup(ocr_ctx *c)
{
    ocp_broker_close(c->b);
    for (int i = 0; i < c->nin; i++) {
        if (c->in[i].file && strcmp(c->in[i].path, "-") == 0 && c->qdir[0])
            unlink(c->in[i].file);
        free(c->in[i].stem);
        free(c->in[i].file);
    }
    free(c->in);
    if (c->qdir[0]) {
        /* The temporary queue (standard input read): nothing to resume. */
        remove_queue(c->qpath);
        rmdir(c->qdir);
    } else if (c->state_q && c->complete) {
        remove_queue(c->qpath); /* a run without -o that completed: nothing to resume */
    }
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    for (int k = 0; k < c->npages; k++)
        free(c->pages[k].text);
    free(c->pages);
    free(c->by_id);
    free(c->idx);
}

int ocp_cmd_ocr(int argc, char **argv)
{
    ocr_ctx c;
    char **pos = NULL, *group = NULL;
    int npos = 0, status;
    FILE *sidecar = NULL;

    memset(&c, 0, sizeof c);
    c.lock_fd = -1;
    sig_count = sig_quit = 0;
    status = ocp_cli_parse(argc, argv, ocr_opts, ocr_handler, &c, ocr_help, &c.cfg, &pos, &npos);
    if (status)
        return status < 0 ? OCP_EXIT_OK : status;
    if ((status = check_outputs(&c, pos, npos)) != 0)
        goto out;
    if (c.sidecar && !(sidecar = fopen(c.sidecar, "we"))) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n", c.sidecar, strerror(errno));
        status = OCP_EXIT_FAILED;
        goto out;
    }
    if ((status = place_queue(&c, pos, npos)) != 0)
        goto out;
    read_inputs(&c, pos, npos);
    group = run_group(&c);
    c.so = (ocp_submit_opts){
        .lang = ocp_config_str(c.cfg, OCP_S_LANG),
        .group = group,
        .priority = 0,
        .max_image_size = (int)ocp_config_int(c.cfg, OCP_S_MAX_IMAGE_SIZE),
        .stable_ids = 1,
    };
    c.show_progress = !c.quiet && !c.verbose && isatty(STDERR_FILENO);
    c.keep_text = c.sidecar || (!c.outdir && !c.no_stdout); /* the text is printed only there */
    status = run(&c, sidecar);
out:
    if (sidecar && fclose(sidecar) != 0) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n", c.sidecar, strerror(errno));
        status = OCP_EXIT_FAILED;
    }
    cleanup(&c);
    free(group);
    ocp_config_destroy(c.cfg);
    free(pos);
    return status;
}
