/*
 * cmd_pool.c: the long-running worker and the queue's commands:
 *   ocrpool worker  [--broker URL] [-c N] [pool settings]
 *   ocrpool submit  [--broker URL] [-l LANG] [--group G] [--priority P] FILE...
 *   ocrpool status  [--broker URL] [--json] [GROUP]
 *   ocrpool result  [--broker URL] [--format F] TASK_ID|GROUP
 *   ocrpool requeue [--broker URL] [--buried] [--failed] [GROUP]
 */
#include "app/output.h"
#include "app/submit.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/result.h"
#include "image/image.h"
#include "pool/pool.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { K_GROUP = 1, K_PRIORITY, K_JSON, K_BURIED, K_FAILED, K_TASKS };

typedef struct pool_ctx {
    const char *group;
    int priority;
    int json, buried, failed, tasks;
    int argc;
    char **argv;
    const char *url;        /* worker: the broker's (a document's PDF is made from it) */
    char *out_roots;        /* worker: where output_pdf may write (output-root) */
    struct pdf_group *pdfs; /* worker: groups whose PDF job runs or waits, oldest first */
    int npdfs;
    char *refused; /* the last group whose output_pdf was refused (said once) */
} pool_ctx;

/* A document's PDF job (app/output.h ocp_app_pdf_start) of a group: running (pid > 0) or
 * waiting to start (pid 0). Each reads every result of its group, so one runs per group
 * at a time, PDF_JOBS on the node; pages stored meanwhile ask for one more run (again),
 * which the last page of the group needs when it comes during the run. */
typedef struct pdf_group {
    char *group, *out;
    pid_t pid;
    int again;
} pdf_group;

#define PDF_JOBS   2
#define PDF_GROUPS 4096 /* groups waiting at most; more are dropped, said in the log */

static int pool_handler(void *vctx, int key, const char *arg)
{
    pool_ctx *c = vctx;
    int64_t v;
    switch (key) {
    case K_GROUP:
        c->group = arg;
        break;
    case K_PRIORITY:
        if (!ocp_parse_i64(arg, &v) || v < 0 || v > 9) {
            fprintf(stderr,
                    "ocrpool: --priority: '%s' is not allowed: a whole number from 0 to 9\n", arg);
            return 1;
        }
        c->priority = (int)v;
        break;
    case K_JSON:
        c->json = 1;
        break;
    case K_BURIED:
        c->buried = 1;
        break;
    case K_FAILED:
        c->failed = 1;
        break;
    case K_TASKS:
        c->tasks = 1;
        break;
    }
    return 0;
}

static const ocp_cli_opt pool_opts[] = {
    {"group", 'g', 1, K_GROUP},
    {"priority", 'p', 1, K_PRIORITY},
    {"json", 0, 0, K_JSON},
    {"buried", 0, 0, K_BURIED},
    {"failed", 0, 0, K_FAILED},
    {"tasks", 0, 0, K_TASKS},
    {NULL, 0, 0, 0},
};

static void worker_help(void)
{
    printf("usage: ocrpool worker [--broker URL] [-c N] [--prefetch-multiplier M]\n"
           "       [--max-tasks-per-child N] [--max-memory-per-child KIB]\n"
           "       [--hard-memory-limit MB] [--memory-budget MB] [--time-limit S] ...\n\n"
           "Runs a pool on the broker until SIGTERM (warm: running pages finish),\n"
           "a second SIGTERM or SIGQUIT (cold: they go back to the queue). SIGHUP re-reads\n"
           "the configuration and replaces the workers gracefully.\n\n"
           "A task's file must resolve under an --allow-root folder (repeatable); on Redis\n"
           "one is required (--allow-root / accepts any path). A broker URL with a password\n"
           "is best given as OCRPOOL_BROKER or in a --config file: ps shows the command line.\n"
           "\nOn Redis the node is a Celery worker named by --hostname (celery@%%h): it\n"
           "answers celery inspect / celery control, sends events with -E (Flower), and\n"
           "scales with --autoscale MAX,MIN; --statedb FILE keeps revoked ids.\n"
           "\nSettings:\n");
    ocp_config_print_help(stdout);
}

static void generic_help(void)
{
    printf("usage:\n"
           "  ocrpool submit  [--broker URL] [-l LANG] [--group G] [--priority 0-9] FILE...\n"
           "  ocrpool status  [--broker URL] [--json] [--tasks] [GROUP]\n"
           "  ocrpool result  [--broker URL] [--format txt|json|hocr|alto|tsv] TASK_ID\n"
           "  ocrpool result  [--broker URL] [--format txt|json|pdf] GROUP\n"
           "  ocrpool requeue [--broker URL] [--buried] [--failed] [GROUP]\n"
           "Priority: 9 runs first, 0 last; equal priorities in submission order. submit's\n"
           "default is 0 (POST /v1/jobs queues at 5, POST /v1/ocr at 9).\n"
           "status --tasks lists every task (state, id, source, page); with --json, in full.\n"
           "result GROUP: the group's pages in order (txt: separated by form feeds; json: an\n"
           "array); --format pdf: the searchable PDF of the group's document (one file),\n"
           "once every page is done, on standard output (not a terminal).\n");
}

/* Shared by the commands: the config, and the broker URL in buf. */
static int setup(int argc, char **argv, void (*help)(void), pool_ctx *c, ocp_config **cfg,
                 char ***pos, int *npos, char *buf, size_t len, const char **url)
{
    memset(c, 0, sizeof *c);
    c->argc = argc;
    c->argv = argv;
    int rc = ocp_cli_parse(argc, argv, pool_opts, pool_handler, c, help, cfg, pos, npos);
    if (rc)
        return rc < 0 ? -1 : rc;
    *url = ocp_app_broker_url(*cfg, buf, len);
    return 0;
}

int ocp_cli_allow_roots(const ocp_config *cfg, const char *cmd, int required)
{
    const char *roots = ocp_config_str(cfg, OCP_S_ALLOW_ROOT);
    if (!*roots && required) {
        fprintf(stderr, "ocrpool: %s: a worker on Redis takes paths from other machines: "
                        "give --allow-root DIR (repeatable; OCRPOOL_ALLOW_ROOT, allow-root in "
                        "a config file), or --allow-root / to accept any path\n",
                cmd);
        return OCP_EXIT_USAGE;
    }
    for (const char *p = roots; *p;) {
        const char *e = strchr(p, ':');
        int n = e ? (int)(e - p) : (int)strlen(p);
        char dir[4200];
        struct stat st;
        snprintf(dir, sizeof dir, "%.*s", n, p);
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "ocrpool: %s: allow-root %s (from %s) is not a folder\n", cmd, dir,
                    ocp_config_origin(cfg, OCP_S_ALLOW_ROOT));
            return OCP_EXIT_USAGE;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

/* The worker's allow-root folders into pc (a task's file must resolve under one); on
 * Redis, whose tasks come from other machines, one is required. 0, or prints why and
 * returns OCP_EXIT_USAGE. */
static int worker_roots(ocp_pool_conf *pc, const ocp_config *cfg, const char *url)
{
    int rc = ocp_cli_allow_roots(cfg, "worker", strncmp(url, "redis", 5) == 0);
    if (rc == 0)
        pc->lim.allow_roots = ocp_config_str(cfg, OCP_S_ALLOW_ROOT);
    return rc;
}

static void pdf_drop(pool_ctx *c, int i)
{
    free(c->pdfs[i].group);
    free(c->pdfs[i].out);
    memmove(c->pdfs + i, c->pdfs + i + 1, (size_t)(c->npdfs - i - 1) * sizeof *c->pdfs);
    c->npdfs--;
}

/* Starts waiting jobs, oldest first, while fewer than PDF_JOBS run. */
static void pdf_start_waiting(pool_ctx *c, const ocp_pool_conf *pc)
{
    int running = 0;
    for (int i = 0; i < c->npdfs; i++)
        running += c->pdfs[i].pid > 0;
    for (int i = 0; i < c->npdfs && running < PDF_JOBS;) {
        pdf_group *g = &c->pdfs[i];
        if (g->pid > 0) {
            i++;
            continue;
        }
        pid_t pid =
            ocp_app_pdf_start(c->url, &pc->broker, &pc->lim, c->out_roots, g->group, g->out);
        if (pid < 0) {
            OCP_LOG_ERR(OCP_LOG_ERROR, pid, "group %s: cannot start its PDF", g->group);
            pdf_drop(c, i);
            continue;
        }
        g->pid = pid;
        running++;
        i++;
    }
}

/* A page stored: when its task names an output_pdf (Celery's keyword argument), the
 * document's PDF is made there once its group is complete, by a job of its own. */
static void worker_page(void *vctx, const ocp_pool_conf *pc, const char *group,
                        const json_t *payload)
{
    pool_ctx *c = vctx;
    const char *out = json_string_value(json_object_get(payload, "output_pdf"));
    char err[700];
    if (!out || !group)
        return;
    if (ocp_app_pdf_check(out, c->out_roots, err, sizeof err) != 0) {
        /* Said once per group, not once per page. */
        if (!c->refused || strcmp(c->refused, group) != 0)
            OCP_LOG(OCP_LOG_ERROR, "group %s: no PDF: %s", group, err);
        free(c->refused);
        c->refused = ocp_xstrdup(group);
        return;
    }
    for (int i = 0; i < c->npdfs; i++) {
        pdf_group *g = &c->pdfs[i];
        if (strcmp(g->group, group) == 0) {
            g->again |= g->pid > 0;
            if (strcmp(g->out, out) != 0) {
                free(g->out);
                g->out = ocp_xstrdup(out);
            }
            return;
        }
    }
    if (c->npdfs >= PDF_GROUPS) {
        OCP_LOG(OCP_LOG_ERROR, "group %s: no PDF: %d groups wait for theirs already", group,
                c->npdfs);
        return;
    }
    c->pdfs = ocp_xrealloc(c->pdfs, (size_t)(c->npdfs + 1) * sizeof *c->pdfs);
    c->pdfs[c->npdfs++] = (pdf_group){ocp_xstrdup(group), ocp_xstrdup(out), 0, 0};
    pdf_start_waiting(c, pc);
}

/* After each turn of the master's loop: reaps ended jobs (a group asked again waits for
 * one more run) and starts waiting ones. */
static void worker_tick(void *vctx, const ocp_pool_conf *pc)
{
    pool_ctx *c = vctx;
    int ended = 0;
    for (int i = 0; i < c->npdfs;) {
        pdf_group *g = &c->pdfs[i];
        if (g->pid <= 0 || waitpid(g->pid, NULL, WNOHANG) <= 0) {
            i++;
            continue;
        }
        ended = 1;
        if (g->again) {
            g->pid = 0;
            g->again = 0;
            i++;
        } else {
            pdf_drop(c, i);
        }
    }
    if (ended)
        pdf_start_waiting(c, pc);
}

/* The node stops: running jobs are ended (a job killed leaves at most its temporary file,
 * never a part of out). */
static void worker_stop(void *vctx)
{
    pool_ctx *c = vctx;
    for (int i = 0; i < c->npdfs; i++) {
        if (c->pdfs[i].pid > 0) {
            kill(c->pdfs[i].pid, SIGKILL);
            while (waitpid(c->pdfs[i].pid, NULL, 0) < 0 && errno == EINTR) {
            }
        }
    }
    while (c->npdfs)
        pdf_drop(c, c->npdfs - 1);
    free(c->pdfs);
    c->pdfs = NULL;
    free(c->refused);
    c->refused = NULL;
}

/* SIGHUP for `worker`: the same command line, over a fresh file and environment. */
static int worker_reload(void *vctx, ocp_pool_conf *pc)
{
    pool_ctx *c = vctx, tmp;
    ocp_config *cfg;
    char **pos, url[4200];
    int npos;
    if (ocp_cli_parse(c->argc, c->argv, pool_opts, pool_handler, &tmp, worker_help, &cfg, &pos,
                      &npos))
        return -1;
    free(pos);
    if (ocp_log_level < OCP_LOG_INFO && ocp_config_source(cfg, OCP_S_LOG_LEVEL) == OCP_SRC_DEFAULT)
        ocp_log_level = OCP_LOG_INFO;
    ocp_pool_conf_from_config(pc, cfg);
    pc->cfg_owned = cfg; /* the pool's now: it lives as long as pc (ocp_pool_conf_fini) */
    if (worker_roots(pc, cfg, ocp_app_broker_url(cfg, url, sizeof url))) {
        ocp_pool_conf_fini(pc);
        return -1;
    }
    free(c->out_roots);
    c->out_roots = ocp_xstrdup(ocp_config_str(cfg, OCP_S_OUTPUT_ROOT));
    return 0;
}

int ocp_cmd_worker(int argc, char **argv)
{
    pool_ctx c;
    ocp_config *cfg;
    char **pos, buf[4200], err[600];
    int npos;
    const char *url;
    int rc = setup(argc, argv, worker_help, &c, &cfg, &pos, &npos, buf, sizeof buf, &url);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    int as_max, as_min;
    if (npos) {
        fprintf(stderr, "ocrpool: worker takes no files (submit them with ocrpool submit)\n");
        rc = OCP_EXIT_USAGE;
    } else if (ocp_pool_autoscale_parse(ocp_config_str(cfg, OCP_S_AUTOSCALE), &as_max, &as_min, err,
                                        sizeof err)) {
        fprintf(stderr, "ocrpool: worker: %s\n", err);
        rc = OCP_EXIT_USAGE;
    } else if ((rc = ocp_cli_check_device(cfg)) == 0) {
        if (ocp_log_level < OCP_LOG_INFO &&
            ocp_config_source(cfg, OCP_S_LOG_LEVEL) == OCP_SRC_DEFAULT)
            ocp_log_level = OCP_LOG_INFO; /* a service logs what it does */
        ocp_pool_conf pc;
        ocp_pool_conf_from_config(&pc, cfg);
        c.url = url;
        c.out_roots = ocp_xstrdup(ocp_config_str(cfg, OCP_S_OUTPUT_ROOT));
        ocp_pool_hooks hooks = {.ctx = &c,
                                .reload = worker_reload,
                                .page_stored = worker_page,
                                .tick = worker_tick,
                                .stop = worker_stop};
        rc = worker_roots(&pc, cfg, url); /* said on stderr when not 0 */
        if (rc == 0 && ocp_pool_run(&pc, url, &hooks, err, sizeof err)) {
            fprintf(stderr, "ocrpool: worker: %s\n", err);
            rc = OCP_EXIT_FAILED;
        }
        ocp_pool_conf_fini(&pc);
        worker_stop(&c); /* an error before the loop ran */
        free(c.out_roots);
    }
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}

/* Opens the broker or says why on stderr. */
static ocp_broker *open_or_say(const char *url, const ocp_config *cfg)
{
    ocp_broker *b = NULL;
    ocp_broker_opts bo;
    char err[600];
    ocp_pool_broker_opts(&bo, cfg);
    if (ocp_broker_open(url, &bo, &b, err, sizeof err)) {
        fprintf(stderr, "ocrpool: %s\n", err);
        return NULL;
    }
    return b;
}

/*
 * submit's tasks go in batches (one transaction each: ocp_broker_batch_begin) of at most
 * SUBMIT_BATCH tasks or SUBMIT_BATCH_S seconds, so a long list is queued at the speed of its
 * header reads and the workers see the first pages soon. An id is printed once its batch is
 * written: a printed id is a queued task.
 */
#define SUBMIT_BATCH   1000
#define SUBMIT_BATCH_S 0.1

typedef struct submit_batch {
    ocp_broker *b;
    char (*ids)[64]; /* printed when the batch is written */
    int n, cap;
    double since; /* the batch's start */
    int open;
    long failed; /* tasks whose batch could not be written */
} submit_batch;

static int batch_id(void *ctx, const char *id, int page, int pages, int inserted)
{
    submit_batch *sb = ctx;
    (void)page;
    (void)pages;
    (void)inserted;
    if (sb->n == sb->cap) { /* a document's pages all go in the batch its first page is in */
        sb->cap = sb->cap ? sb->cap * 2 : SUBMIT_BATCH;
        sb->ids = ocp_xrealloc(sb->ids, (size_t)sb->cap * sizeof *sb->ids);
    }
    snprintf(sb->ids[sb->n++], 64, "%s", id);
    return 0;
}

/* Ends the open batch: prints its ids, or says they are not queued. */
static void batch_end(submit_batch *sb)
{
    if (!sb->open)
        return;
    sb->open = 0;
    if (ocp_broker_batch_end(sb->b)) {
        fprintf(stderr, "ocrpool: cannot queue %d pages: %s\n", sb->n,
                ocp_broker_errmsg(sb->b));
        sb->failed += sb->n;
    } else {
        for (int i = 0; i < sb->n; i++)
            printf("%s\n", sb->ids[i]);
        fflush(stdout);
    }
    sb->n = 0;
}

/* Queues path's pages in the open batch (one is begun when none is), ending it when full. */
static int batch_file(submit_batch *sb, const char *path, const ocp_image_limits *lim,
                      const ocp_submit_opts *so, char *err, size_t errlen)
{
    if (!sb->open) {
        if (ocp_broker_batch_begin(sb->b))
            return ocp_errf(-EIO, err, errlen, "cannot queue: %s", ocp_broker_errmsg(sb->b));
        sb->open = 1;
        sb->since = ocp_now();
    }
    int rc = ocp_app_submit_file(sb->b, path, lim, so, batch_id, sb, err, errlen);
    if (sb->n >= SUBMIT_BATCH || ocp_now() - sb->since >= SUBMIT_BATCH_S)
        batch_end(sb);
    return rc;
}

int ocp_cmd_submit(int argc, char **argv)
{
    pool_ctx c;
    ocp_config *cfg;
    char **pos, buf[4200], err[600];
    int npos, failed = 0;
    const char *url;
    ocp_broker *b = NULL;
    int rc = setup(argc, argv, generic_help, &c, &cfg, &pos, &npos, buf, sizeof buf, &url);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    if (npos == 0) {
        fprintf(stderr, "ocrpool: submit: no input files\n");
        rc = OCP_EXIT_USAGE;
        goto out;
    }
    if (ocp_image_global_init(argv[0])) {
        fprintf(stderr, "ocrpool: cannot start libvips\n");
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    if (!(b = open_or_say(url, cfg))) {
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    ocp_image_limits lim = ocp_image_limits_from_config(cfg);
    ocp_submit_opts so = {
        .lang = ocp_config_str(cfg, OCP_S_LANG),
        /* On redis a page outside any group carries none (Celery's group header). */
        .group = c.group                         ? c.group
                 : strncmp(url, "redis", 5) == 0 ? NULL
                                                 : "default",
        .priority = c.priority,
        .max_image_size = ocp_config_source(cfg, OCP_S_MAX_IMAGE_SIZE) == OCP_SRC_DEFAULT
                              ? -1
                              : (int)ocp_config_int(cfg, OCP_S_MAX_IMAGE_SIZE),
    };
    submit_batch sb = {.b = b};
    for (int i = 0; i < npos; i++) {
        if (batch_file(&sb, pos[i], &lim, &so, err, sizeof err)) {
            fprintf(stderr, "ocrpool: %s: %s\n", pos[i], err);
            failed++;
        }
    }
    batch_end(&sb);
    free(sb.ids);
    if (sb.failed)
        failed++;
    rc = failed ? OCP_EXIT_FAILED : OCP_EXIT_OK;
out:
    ocp_broker_close(b);
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}

typedef struct status_acc {
    json_t *failures, *tasks;
    int text;
} status_acc;

static int status_row(void *vctx, const ocp_task_info *i)
{
    status_acc *a = vctx;
    json_t *p = i->payload ? json_loads(i->payload, 0, NULL) : NULL;
    const char *src = p ? json_string_value(json_object_get(p, "source")) : NULL;
    int page = p ? (int)json_integer_value(json_object_get(p, "page")) + 1 : 0;
    if (i->state == OCP_TASK_FAILED || i->state == OCP_TASK_BURIED) {
        if (a->text)
            printf("  %s %s %s page %d: %s\n", ocp_task_state_name(i->state), i->id,
                   src ? src : "?", page, i->error ? i->error : "");
        json_array_append_new(a->failures,
                              json_pack("{s:s, s:s, s:s?, s:i, s:s?, s:s?, s:i}", "id", i->id,
                                        "state", ocp_task_state_name(i->state), "source", src,
                                        "page", page, "failure", ocp_task_failure_name(i), "reason",
                                        i->error, "deliveries", i->deliveries));
    } else if (a->text && a->tasks) {
        printf("  %s %s %s page %d\n", ocp_task_state_name(i->state), i->id, src ? src : "?", page);
    }
    if (a->tasks) {
        json_t *t = json_pack("{s:s, s:s, s:s, s:s?, s:i, s:i, s:i, s:i}", "id", i->id, "group",
                              i->group, "state", ocp_task_state_name(i->state), "source", src,
                              "page", page, "priority", i->priority, "deliveries", i->deliveries,
                              "worker_pid", i->worker_pid);
        json_object_set_new(t, "started", i->started > 0 ? json_real(i->started) : json_null());
        json_object_set_new(t, "finished", i->finished > 0 ? json_real(i->finished) : json_null());
        json_object_set_new(t, "peak_rss_kb", json_integer(i->peak_rss_kb));
        json_object_set_new(t, "reason", i->error ? json_string(i->error) : json_null());
        const char *kind = ocp_task_failure_name(i);
        json_object_set_new(t, "failure", kind ? json_string(kind) : json_null());
        json_array_append_new(a->tasks, t);
    }
    json_decref(p);
    return 0;
}

int ocp_cmd_status(int argc, char **argv)
{
    pool_ctx c;
    ocp_config *cfg;
    char **pos, buf[4200];
    int npos;
    const char *url;
    ocp_broker *b = NULL;
    int rc = setup(argc, argv, generic_help, &c, &cfg, &pos, &npos, buf, sizeof buf, &url);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    const char *group = npos ? pos[0] : NULL;
    ocp_counts n;
    if (!(b = open_or_say(url, cfg))) {
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    if (ocp_broker_counts(b, group, &n)) {
        fprintf(stderr, "ocrpool: %s\n", ocp_broker_errmsg(b));
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    status_acc a = {json_array(), c.tasks ? json_array() : NULL, !c.json};
    /* A broker that keeps finished pages only as expiring result keys (redis) does not
     * count them without a group: they show as unknown, not as zero. */
    int uncounted = n.done < 0;
    if (!c.json && uncounted)
        printf("%s: %ld queued, %ld running (finished pages are counted by group or looked up "
               "by id on this broker)\n",
               group ? group : "all queues", n.ready, n.leased);
    else if (!c.json)
        printf("%s: %ld queued, %ld running, %ld done, %ld failed, %ld buried\n",
               group ? group : "all groups", n.ready, n.leased, n.done, n.failed, n.buried);
    ocp_broker_list(b, group, 0, status_row, &a);
    if (c.json) {
        json_t *o = json_pack("{s:s?, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "group", group, "queued",
                              (json_int_t)n.ready, "running", (json_int_t)n.leased, "done",
                              (json_int_t)n.done, "failed", (json_int_t)n.failed, "buried",
                              (json_int_t)n.buried, "total",
                              (json_int_t)(n.ready + n.leased + n.done + n.failed + n.buried),
                              "failures", a.failures);
        if (uncounted) {
            static const char *const unknown[] = {"done", "failed", "buried", "total"};
            for (size_t k = 0; k < 4; k++)
                json_object_set_new(o, unknown[k], json_null());
        }
        if (a.tasks)
            json_object_set_new(o, "tasks", a.tasks);
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        json_decref(a.failures);
        json_decref(a.tasks);
    }
out:
    ocp_broker_close(b);
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}

/* A group's pages for `result GROUP` (txt or json): each rendered in submission order (a
 * document's page order); a page not done is said, and counts as failed. */
typedef struct group_out {
    ocp_broker *b;
    int fmt, n, failed;
    ocp_sb sb;
    json_t *arr;
} group_out;

static int group_page(void *ctx, const ocp_task_info *i)
{
    group_out *g = ctx;
    ocp_result res;
    ocp_result_init(&res);
    if (g->fmt == OCP_FMT_TXT && g->n)
        ocp_sb_putc(&g->sb, '\f');
    g->n++;
    if (i->state != OCP_TASK_DONE || !i->result ||
        (g->fmt == OCP_FMT_TXT && ocp_result_from_json(&res, i->result) != 0)) {
        fprintf(stderr, "ocrpool: task %s is %s%s%s\n", i->id, ocp_task_state_name(i->state),
                i->error ? ": " : "", i->error ? i->error : "");
        g->failed++;
        if (g->fmt == OCP_FMT_JSON)
            json_array_append_new(g->arr, json_null());
    } else if (g->fmt == OCP_FMT_JSON) {
        json_t *one = json_loads(i->result, 0, NULL);
        json_array_append_new(g->arr, one ? one : json_null());
    } else {
        ocp_app_render(i->result, &res, OCP_FMT_TXT, &g->sb);
    }
    ocp_result_fini(&res);
    return 0;
}

/* `result GROUP`: its pages' text or JSON, or its document's PDF. An exit status. */
static int group_result(ocp_broker *b, const ocp_config *cfg, const char *group, int fmt)
{
    char err[700];
    if (fmt == OCP_APP_FMT_PDF) {
        if (isatty(STDOUT_FILENO)) {
            fprintf(stderr, "ocrpool: result: a PDF is not written to a terminal: redirect it "
                            "(> FILE)\n");
            return OCP_EXIT_USAGE;
        }
        if (ocp_image_global_init("ocrpool")) {
            fprintf(stderr, "ocrpool: cannot start libvips\n");
            return OCP_EXIT_FAILED;
        }
        ocp_image_limits lim = ocp_image_limits_from_config(cfg);
        size_t max = (size_t)ocp_config_int(cfg, OCP_S_MAX_INPUT_SIZE) << 20;
        ocp_sb sb;
        ocp_sb_init(&sb);
        int rc = ocp_app_group_pdf(b, group, &lim, max, &sb, err, sizeof err);
        if (rc)
            fprintf(stderr, "ocrpool: group %s: %s\n", group, err);
        else if (fwrite(sb.buf, 1, sb.len, stdout) != sb.len || fflush(stdout) != 0) {
            fprintf(stderr, "ocrpool: cannot write standard output\n");
            rc = OCP_E_EMPTY;
        }
        ocp_sb_fini(&sb);
        return rc ? OCP_EXIT_FAILED : OCP_EXIT_OK;
    }
    if (fmt != OCP_FMT_TXT && fmt != OCP_FMT_JSON) {
        fprintf(stderr, "ocrpool: result: a group's result is txt, json or pdf\n");
        return OCP_EXIT_USAGE;
    }
    group_out g = {b, fmt, 0, 0, {0}, fmt == OCP_FMT_JSON ? json_array() : NULL};
    ocp_sb_init(&g.sb);
    int rc = ocp_broker_list(b, group, 1, group_page, &g);
    if (rc)
        fprintf(stderr, "ocrpool: %s\n", ocp_broker_errmsg(b));
    else if (g.n == 0)
        fprintf(stderr, "ocrpool: no task or group %s\n", group);
    if (g.arr) {
        char *text = json_dumps(g.arr, JSON_COMPACT);
        ocp_sb_puts(&g.sb, text);
        ocp_sb_putc(&g.sb, '\n');
        free(text);
        json_decref(g.arr);
    }
    if (!rc && g.n)
        fwrite(g.sb.buf, 1, g.sb.len, stdout);
    ocp_sb_fini(&g.sb);
    return rc || g.n == 0 || g.failed ? OCP_EXIT_FAILED : OCP_EXIT_OK;
}

int ocp_cmd_result(int argc, char **argv)
{
    pool_ctx c;
    ocp_config *cfg;
    char **pos, buf[4200];
    int npos;
    const char *url;
    ocp_broker *b = NULL;
    int rc = setup(argc, argv, generic_help, &c, &cfg, &pos, &npos, buf, sizeof buf, &url);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    int fmt = ocp_app_format_parse(ocp_config_str(cfg, OCP_S_FORMAT));
    if (npos != 1 || (fmt & (fmt - 1))) {
        fprintf(stderr, "ocrpool: result: expected one TASK_ID or GROUP and one --format\n");
        rc = OCP_EXIT_USAGE;
        goto out;
    }
    if (!(b = open_or_say(url, cfg))) {
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    ocp_app_page pg;
    /* A PDF is a document's: the argument is a group. Otherwise a task id, else a group. */
    int got = fmt == OCP_APP_FMT_PDF ? OCP_E_NOPAGE
                                     : ocp_app_page_get(b, pos[0], fmt != OCP_FMT_JSON, &pg);
    if (got == OCP_E_NOPAGE) {
        rc = group_result(b, cfg, pos[0], fmt);
        goto out;
    }
    if (got != 0 && got != OCP_E_DECODE) {
        fprintf(stderr, "ocrpool: %s\n", ocp_broker_errmsg(b));
        rc = OCP_EXIT_FAILED;
    } else if (pg.info.state != OCP_TASK_DONE || !pg.info.result) {
        fprintf(stderr, "ocrpool: task %s is %s%s%s\n", pg.info.id,
                ocp_task_state_name(pg.info.state), pg.info.error ? ": " : "",
                pg.info.error ? pg.info.error : "");
        rc = OCP_EXIT_FAILED;
    } else if (got == OCP_E_DECODE) {
        fprintf(stderr, "ocrpool: task %s: stored result is not a page result\n", pg.info.id);
        rc = OCP_EXIT_FAILED;
    } else {
        ocp_sb sb;
        ocp_sb_init(&sb);
        ocp_app_render(pg.info.result, &pg.res, fmt, &sb);
        fwrite(sb.buf, 1, sb.len, stdout);
        ocp_sb_fini(&sb);
    }
    ocp_app_page_fini(&pg);
out:
    ocp_broker_close(b);
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}

int ocp_cmd_requeue(int argc, char **argv)
{
    pool_ctx c;
    ocp_config *cfg;
    char **pos, buf[4200];
    int npos;
    const char *url;
    ocp_broker *b = NULL;
    int rc = setup(argc, argv, generic_help, &c, &cfg, &pos, &npos, buf, sizeof buf, &url);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    unsigned mask = (c.buried ? 1u << OCP_TASK_BURIED : 0) | (c.failed ? 1u << OCP_TASK_FAILED : 0);
    if (!mask) {
        fprintf(stderr, "ocrpool: requeue: say which: --buried and/or --failed\n");
        rc = OCP_EXIT_USAGE;
        goto out;
    }
    if (!(b = open_or_say(url, cfg))) {
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    long n = 0;
    if (ocp_broker_requeue(b, npos ? pos[0] : NULL, mask, &n)) {
        fprintf(stderr, "ocrpool: %s\n", ocp_broker_errmsg(b));
        rc = OCP_EXIT_FAILED;
        goto out;
    }
    printf("%ld %s back in the queue\n", n, n == 1 ? "page" : "pages");
out:
    ocp_broker_close(b);
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}
