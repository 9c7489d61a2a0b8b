/*
 * cmd_ocr.c: `ocrpool ocr FILES...`, the main job: OCR images and PDFs,
 * write one file per page and format, a sidecar of all text, or the text
 * on standard output.
 *
 * Pages run one after another in this process for now; the worker pool
 * slots in under the same command (it will hand ocp_page_run to workers).
 */
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/engine.h"
#include "gpu/gpu.h"
#include "image/image.h"
#include "pool/page.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { K_OUT = 1, K_SIDECAR, K_VERBOSE, K_QUIET };

static const ocp_cli_opt ocr_opts[] = {
    {"output-dir", 'o', 1, K_OUT},
    {"sidecar", 0, 1, K_SIDECAR},
    {"verbose", 'v', 0, K_VERBOSE},
    {"quiet", 'q', 0, K_QUIET},
    {NULL, 0, 0, 0},
};

typedef struct ocr_ctx {
    const char *outdir;
    const char *sidecar;
    int verbose, quiet;
} ocr_ctx;

typedef struct input {
    const char *path; /* "-" = standard input */
    char *stem;       /* output file names start with it */
    char *buf;        /* standard input's bytes */
    size_t len;
    int pages; /* 0 when it could not be opened */
} input;

static void ocr_help(void)
{
    printf("usage: ocrpool ocr [options] FILE...   (FILE may be - for standard input)\n\n"
           "OCR images (PNG, JPEG, TIFF, WebP, PNM, GIF) and PDFs.\n\n"
           "  -o, --output-dir DIR         write DIR/<stem>.<ext> per page and format\n"
           "                               (<stem>-p<N>.<ext> for multi-page inputs)\n"
           "      --sidecar FILE           all text, pages in order, separated by form feeds\n"
           "  -v, --verbose                a line per page, also on a pipe\n"
           "  -q, --quiet                  no progress line\n"
           "      --config FILE            settings file (name = value)\n\n"
           "Without -o or --sidecar the text goes to standard output; --format with more\n"
           "than txt and no -o writes the files into the current folder.\n"
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
    }
    return 0;
}

static int mkdir_p(const char *dir)
{
    char *p = ocp_xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *s = c;
            if (!c)
                break;
        }
    }
    free(p);
    return rc;
}

static void progress(int done, int total, double t0, int failed)
{
    double dt = ocp_now() - t0;
    double rate = dt > 0 ? done / dt : 0;
    int eta = rate > 0 ? (int)((total - done) / rate + 0.5) : 0;
    fprintf(stderr, "\r\033[K%d/%d pages  %.2f pages/s  ETA %d:%02d%s", done, total, rate, eta / 60,
            eta % 60, failed ? "  (some failed)" : "");
    fflush(stderr);
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

static int open_input(input *in, const ocp_image_limits *lim, ocp_doc **doc, char *err,
                      size_t errlen)
{
    if (strcmp(in->path, "-") == 0)
        return ocp_doc_open_buffer(in->buf, in->len, lim, doc, err, errlen);
    return ocp_doc_open_file(in->path, lim, doc, err, errlen);
}

/* Writes the renderings of one page. Returns 0 or a code with the reason in err. */
static int write_outputs(const ocr_ctx *c, const input *in, const ocp_result *res, int fmts,
                         char *err, size_t errlen)
{
    ocp_sb sb;
    int rc = 0;
    ocp_sb_init(&sb);
    for (int f = 1; f <= OCP_FMT_TSV; f <<= 1) {
        if (!(fmts & f))
            continue;
        char *path =
            in->pages > 1
                ? ocp_xasprintf("%s/%s-p%d.%s", c->outdir, in->stem, res->page, ocp_format_ext(f))
                : ocp_xasprintf("%s/%s.%s", c->outdir, in->stem, ocp_format_ext(f));
        ocp_sb_reset(&sb);
        ocp_result_render(res, f, &sb);
        rc = ocp_write_file(path, sb.buf, sb.len);
        if (rc)
            ocp_errf(rc, err, errlen, "cannot write %s: %s", path, ocp_strerror(rc));
        free(path);
        if (rc)
            break;
    }
    ocp_sb_fini(&sb);
    return rc;
}

int ocp_cmd_ocr(int argc, char **argv)
{
    ocr_ctx c = {0};
    ocp_config *cfg = NULL;
    char **pos = NULL, err[512];
    int npos = 0, rc, total = 0, done = 0, failed = 0, status = OCP_EXIT_OK;
    input *in = NULL;
    ocp_engine *eng = NULL;
    FILE *sidecar = NULL;
    int first_text = 1;

    rc = ocp_cli_parse(argc, argv, ocr_opts, ocr_handler, &c, ocr_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    if (npos == 0) {
        fprintf(stderr, "ocrpool: ocr: no input files (see ocrpool ocr --help)\n");
        status = OCP_EXIT_USAGE;
        goto out;
    }
    if ((rc = ocp_cli_check_device(cfg)) != 0) {
        status = rc;
        goto out;
    }
    int fmts = ocp_format_parse(ocp_config_str(cfg, OCP_S_FORMAT));
    int stdin_used = 0;
    for (int i = 0; i < npos; i++)
        stdin_used += strcmp(pos[i], "-") == 0;
    if (stdin_used > 1) {
        fprintf(stderr, "ocrpool: ocr: standard input (-) can be read only once\n");
        status = OCP_EXIT_USAGE;
        goto out;
    }
    ocp_image_limits lim = {
        .max_pixels = ocp_config_int(cfg, OCP_S_MAX_PIXELS),
        .max_pages = (int)ocp_config_int(cfg, OCP_S_MAX_PAGES),
        .pdf_dpi = (int)ocp_config_int(cfg, OCP_S_PDF_DPI),
        .max_image_size = (int)ocp_config_int(cfg, OCP_S_MAX_IMAGE_SIZE),
    };
    /* Renderings other than text need files: without -o they go to the current folder. */
    if (!c.outdir && fmts != OCP_FMT_TXT)
        c.outdir = ".";
    if (c.outdir && (rc = mkdir_p(c.outdir)) != 0) {
        fprintf(stderr, "ocrpool: cannot create %s: %s\n", c.outdir, ocp_strerror(rc));
        status = OCP_EXIT_FAILED;
        goto out;
    }
    if (c.sidecar && !(sidecar = fopen(c.sidecar, "we"))) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n", c.sidecar, strerror(errno));
        status = OCP_EXIT_FAILED;
        goto out;
    }
    if (ocp_image_global_init(argv[0])) {
        fprintf(stderr, "ocrpool: cannot start libvips\n");
        status = OCP_EXIT_FAILED;
        goto out;
    }
    ocp_engine_params ep = {
        .lang = ocp_config_str(cfg, OCP_S_LANG),
        .tessdata_dir = ocp_config_str(cfg, OCP_S_TESSDATA_DIR),
        .psm = (int)ocp_config_int(cfg, OCP_S_PSM),
    };
    if ((rc = ocp_engine_open(ocp_config_str(cfg, OCP_S_ENGINE), &ep, &eng, err, sizeof err))) {
        fprintf(stderr, "ocrpool: %s\n", err);
        status = OCP_EXIT_FAILED;
        goto out;
    }

    /* First pass: what each input holds, so progress can count pages. */
    in = ocp_xcalloc((size_t)npos, sizeof *in);
    for (int i = 0; i < npos; i++) {
        ocp_doc *doc = NULL;
        in[i].path = pos[i];
        in[i].stem = ocp_path_stem(strcmp(pos[i], "-") == 0 ? "stdin" : pos[i]);
        if (strcmp(pos[i], "-") == 0) {
            size_t max = (size_t)ocp_config_int(cfg, OCP_S_MAX_INPUT_SIZE) << 20;
            rc = ocp_read_fd(STDIN_FILENO, max, &in[i].buf, &in[i].len);
            if (rc) {
                fprintf(stderr, "ocrpool: -: cannot read standard input: %s\n", ocp_strerror(rc));
                failed++;
                continue;
            }
        }
        rc = open_input(&in[i], &lim, &doc, err, sizeof err);
        if (rc) {
            fprintf(stderr, "ocrpool: %s: %s\n", in[i].path, err);
            failed++;
            continue;
        }
        in[i].pages = ocp_doc_pages(doc);
        total += in[i].pages;
        ocp_doc_destroy(doc);
    }
    unique_stems(in, npos);

    int show_progress = !c.quiet && isatty(STDERR_FILENO) && !c.verbose;
    double t0 = ocp_now();
    for (int i = 0; i < npos; i++) {
        ocp_doc *doc = NULL;
        if (in[i].pages == 0)
            continue;
        rc = open_input(&in[i], &lim, &doc, err, sizeof err);
        if (rc) {
            /* It opened a moment ago: the file changed under us. Its pages fail. */
            fprintf(stderr, "ocrpool: %s: %s\n", in[i].path, err);
            failed += in[i].pages;
            done += in[i].pages;
            continue;
        }
        for (int p = 0; p < in[i].pages; p++) {
            ocp_result res;
            ocp_page_task t = {
                .source = in[i].path,
                .page = p,
                .lang = ep.lang,
                .timeout_s = ocp_config_double(cfg, OCP_S_PAGE_TIMEOUT),
            };
            ocp_result_init(&res);
            rc = ocp_page_run(eng, doc, &t, &res, err, sizeof err);
            if (!rc && c.outdir)
                rc = write_outputs(&c, &in[i], &res, fmts, err, sizeof err);
            if (show_progress)
                fprintf(stderr, "\r\033[K");
            if (rc) {
                if (in[i].pages > 1)
                    fprintf(stderr, "ocrpool: %s page %d: %s\n", in[i].path, p + 1, err);
                else
                    fprintf(stderr, "ocrpool: %s: %s\n", in[i].path, err);
                failed++;
            } else if (c.verbose) {
                fprintf(stderr, "ocrpool: %s page %d: %zu lines, %.2f s, peak RSS %ld KiB\n",
                        in[i].path, p + 1, res.n_lines, res.elapsed_ms / 1000.0, res.peak_rss_kb);
            }
            /* Text in page order; a failed page stays as an empty page. */
            FILE *tf = sidecar ? sidecar : (!c.outdir ? stdout : NULL);
            if (tf) {
                if (!first_text)
                    fputc('\f', tf);
                first_text = 0;
                if (!rc && res.text)
                    fputs(res.text, tf);
                if (fflush(tf) != 0 || ferror(tf)) {
                    fprintf(stderr, "ocrpool: cannot write %s: %s\n",
                            tf == sidecar ? c.sidecar : "standard output", strerror(errno));
                    status = OCP_EXIT_FAILED;
                    clearerr(tf);
                }
            }
            done++;
            if (show_progress)
                progress(done, total, t0, failed);
            ocp_result_fini(&res);
        }
        ocp_doc_destroy(doc);
    }
    if (show_progress)
        fprintf(stderr, "\r\033[K");
    if (c.verbose || show_progress) {
        double dt = ocp_now() - t0;
        fprintf(stderr, "ocrpool: %d pages, %d failed, %.1f s (%.2f pages/s)\n", total, failed, dt,
                dt > 0 ? total / dt : 0.0);
    }
    if (failed)
        status = OCP_EXIT_FAILED;
out:
    if (status == OCP_EXIT_OK && fflush(stdout) != 0) {
        fprintf(stderr, "ocrpool: cannot write standard output: %s\n", strerror(errno));
        status = OCP_EXIT_FAILED;
    }
    if (sidecar && fclose(sidecar) != 0) {
        fprintf(stderr, "ocrpool: cannot write %s: %s\n", c.sidecar, strerror(errno));
        status = OCP_EXIT_FAILED;
    }
    if (in) {
        for (int i = 0; i < npos; i++) {
            free(in[i].stem);
            free(in[i].buf);
        }
        free(in);
    }
    ocp_engine_close(eng);
    ocp_config_destroy(cfg);
    free(pos);
    return status;
}
