/*
 * cmd_monitor.c: `ocrpool monitor`, `ocrpool stop` and `ocrpool control`:
 * every node on this machine through its control socket (pool/control.h).
 * Nodes are found by their sockets, never by process names.
 */
#include "cli/cli.h"
#include "core/memstat.h"
#include "core/util.h"
#include "pool/control.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { K_JSON = 1, K_WATCH, K_NODE, K_NOW, K_NOWAIT };

typedef struct mon_ctx {
    int json, now, nowait;
    double watch;
    long node;
} mon_ctx;

static const ocp_cli_opt mon_opts[] = {
    {"json", 0, 0, K_JSON}, {"watch", 'w', 1, K_WATCH},  {"node", 'n', 1, K_NODE},
    {"now", 0, 0, K_NOW},   {"no-wait", 0, 0, K_NOWAIT}, {NULL, 0, 0, 0},
};

static int mon_handler(void *vctx, int key, const char *arg)
{
    mon_ctx *c = vctx;
    int64_t v;
    double d;
    switch (key) {
    case K_JSON:
        c->json = 1;
        break;
    case K_WATCH:
        if (!ocp_parse_double(arg, &d) || d < 0.1 || d > 3600) {
            fprintf(stderr, "ocrpool: --watch: '%s' is not allowed: seconds from 0.1 to 3600\n",
                    arg);
            return 1;
        }
        c->watch = d;
        break;
    case K_NODE:
        if (!ocp_parse_i64(arg, &v) || v <= 0) {
            fprintf(stderr, "ocrpool: --node: '%s' is not a process id\n", arg);
            return 1;
        }
        c->node = (long)v;
        break;
    case K_NOW:
        c->now = 1;
        break;
    case K_NOWAIT:
        c->nowait = 1;
        break;
    }
    return 0;
}

static void mon_help(void)
{
    printf("usage:\n"
           "  ocrpool monitor [--watch SECS] [--json] [--node PID]\n"
           "  ocrpool stop [--now] [--node PID] [--no-wait] [--json]\n"
           "  ocrpool control [--node PID] stats|stop|stop-now|reload|scale N\n\n"
           "Every ocrpool node of this user on this machine, through its control socket.\n"
           "monitor --watch clears the screen between reports on a terminal only. stop says\n"
           "what each node does (--json: each node's reply as it came); control prints the\n"
           "replies as JSON.\n");
}

/* Calls fn for each live node's socket (only --node's when given). Returns how many
 * calls succeeded. */
static int each_node(const mon_ctx *c, int (*fn)(void *ctx, long pid, const char *path), void *ctx)
{
    ocp_control_node *nodes = ocp_xcalloc(OCP_MAX_WORKERS, sizeof *nodes);
    int n = 0, found = ocp_control_nodes(nodes, OCP_MAX_WORKERS, 0);
    for (int i = 0; i < found; i++)
        if ((!c->node || c->node == nodes[i].pid) && fn(ctx, nodes[i].pid, nodes[i].path) == 0)
            n++;
    free(nodes);
    return n;
}

static int collect(void *ctx, long pid, const char *path)
{
    json_t *nodes = ctx, *reply = NULL;
    json_t *req = json_pack("{s:s}", "cmd", "stats");
    int rc = ocp_control_call(path, req, &reply, 5.0);
    json_decref(req);
    if (rc || !json_is_true(json_object_get(reply, "ok"))) {
        fprintf(stderr, "ocrpool: node %ld does not answer on %s\n", pid, path);
        json_decref(reply);
        return -1;
    }
    json_object_del(reply, "ok");
    json_array_append_new(nodes, reply);
    return 0;
}

/* A memory figure in KiB, -1 when unknown: no figures (a process gone or exiting, whose
 * /proc files say nothing), or the node's own -1. */
static long kb_of(json_t *mem, const char *k)
{
    json_t *v = json_object_get(mem, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (long)json_integer_value(v) : -1;
}

/* The same for sums and comparisons: an unknown figure counts as nothing. */
static long kb(json_t *mem, const char *k)
{
    long v = kb_of(mem, k);
    return v > 0 ? v : 0;
}

/* A table cell: the figure in MB, or "-" when it is unknown (never a negative figure).
 * Returns buf. */
static const char *mb_cell(char *buf, size_t len, json_t *mem, const char *k)
{
    long v = kb_of(mem, k);
    if (v < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.1f", v / 1024.0);
    return buf;
}

static void add(json_t *arr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(json_t *arr, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    json_array_append_new(arr, json_string(buf));
}

/* Flags and recommendations, computed from the figures. */
static void judge(json_t *nodes, json_t *flags, json_t *recs)
{
    size_t i, k;
    json_t *n, *w;
    ocp_sysmem sys;
    ocp_memstat_system(&sys);
    long avail = sys.available_kb;
    json_array_foreach(nodes, i, n)
    {
        json_t *set = json_object_get(n, "settings");
        long pid = (long)json_integer_value(json_object_get(n, "pid"));
        long maxmem = (long)json_integer_value(json_object_get(set, "max_memory_per_child_kb"));
        long budget = (long)json_integer_value(json_object_get(set, "memory_budget_mb"));
        int conc = (int)json_integer_value(json_object_get(set, "concurrency"));
        double mean = json_real_value(json_object_get(json_object_get(n, "pages"), "mean_seconds"));
        long total_pss = 0, zyg_pss = 0, worker_pss = 0, peak_max = 0;
        int nw = 0;
        json_array_foreach(json_object_get(n, "zygotes"), k, w) zyg_pss +=
            kb(json_object_get(w, "memory"), "pss_kb");
        json_array_foreach(json_object_get(n, "workers"), k, w)
        {
            json_t *mem = json_object_get(w, "memory");
            long wpid = (long)json_integer_value(json_object_get(w, "pid"));
            long peak = kb(mem, "peak_rss_kb");
            worker_pss += kb(mem, "pss_kb");
            nw++;
            if (peak > peak_max)
                peak_max = peak;
            if (maxmem > 0 && peak > maxmem)
                add(flags,
                    "node %ld: worker %ld peak RSS %.1f MB over max-memory-per-child %.1f MB: "
                    "it is replaced after its page",
                    pid, wpid, peak / 1024.0, maxmem / 1024.0);
            json_t *t = json_object_get(w, "task");
            double age = t ? json_real_value(json_object_get(t, "age_s")) : 0;
            if (t && mean > 0 && age > 3 * mean && age > 5)
                add(flags,
                    "node %ld: worker %ld has run %s page %lld for %.0f s, %.1fx the mean page "
                    "(%.1f s)",
                    pid, wpid, json_string_value(json_object_get(t, "source")),
                    (long long)json_integer_value(json_object_get(t, "page")), age, age / mean,
                    mean);
        }
        /* A shared recognizer's PSS counts once, as a worker's does (its model pages are
         * the zygote's, divided among them all). */
        json_array_foreach(json_object_get(json_object_get(n, "recognizer"), "recognizers"), k, w)
            zyg_pss += kb(json_object_get(w, "memory"), "pss_kb");
        total_pss = zyg_pss + worker_pss;
        if (budget > 0 && total_pss > budget * 1024) {
            add(flags, "node %ld: total PSS %.0f MB over its memory budget %ld MB", pid,
                total_pss / 1024.0, budget);
            double per = nw ? worker_pss / 1024.0 / nw : 0;
            int fit = per > 0 ? (int)floor((budget - zyg_pss / 1024.0) / per) : conc;
            if (fit < 1)
                fit = 1;
            add(recs,
                "node %ld: total PSS %.0f MB over %d workers, budget %ld MB: lower -c to %d or "
                "raise --memory-budget to %.0f MB",
                pid, total_pss / 1024.0, nw, budget, fit, ceil(total_pss / 1024.0 * 1.1));
        }
        long rmax = (long)json_integer_value(
            json_object_get(json_object_get(n, "recycles"), "max_memory_per_child"));
        long seen = (long)json_integer_value(
            json_object_get(json_object_get(n, "pages"), "peak_rss_kb_max"));
        if (seen > peak_max)
            peak_max = seen;
        if (rmax > 0 && peak_max > 0)
            add(recs,
                "node %ld: %ld workers replaced for max-memory-per-child; pages peak near %.0f MB: "
                "raise it to %.0f MB (KiB: %ld), or lower --max-image-size",
                pid, rmax, peak_max / 1024.0, ceil(peak_max / 1024.0 * 1.2),
                (long)ceil(peak_max * 1.2));
        if (avail > 0 && budget == 0 && peak_max > 0 && avail < 2 * peak_max * (long)conc)
            add(recs,
                "node %ld: %.0f MB available, less than %d workers' peak pages (%.0f MB each) "
                "twice over: set --memory-budget %.0f or lower -c",
                pid, avail / 1024.0, conc, peak_max / 1024.0, avail / 1024.0 * 0.8);
    }
    if (json_array_size(recs) == 0 && json_array_size(nodes))
        add(recs, "none: every node is within its limits");
}

/* A process's RSS, PSS, swap and peak RSS as table cells. */
static void mem_cells(json_t *m, char c[4][16])
{
    static const char *const keys[] = {"rss_kb", "pss_kb", "swap_kb", "peak_rss_kb"};
    for (int i = 0; i < 4; i++)
        mb_cell(c[i], sizeof c[i], m, keys[i]);
}

/* The process table of a node: its zygotes and workers with their memory; adds their RSS
 * and PSS to *trss and *tpss. */
static void print_processes(json_t *n, long *trss, long *tpss)
{
    size_t k;
    json_t *w;
    char c[4][16];
    int gpus = json_array_size(json_object_get(n, "gpus")) > 0;
    printf("  %-7s %7s %-8s %-28s %7s %5s %8s %8s %6s %8s%s\n", "role", "pid", "state", "page",
           "age", "done", "RSS MB", "PSS MB", "swap", "peak MB", gpus ? "  GPU MiB" : "");
    json_array_foreach(json_object_get(n, "zygotes"), k, w)
    {
        json_t *m = json_object_get(w, "memory");
        mem_cells(m, c);
        *trss += kb(m, "rss_kb");
        *tpss += kb(m, "pss_kb");
        printf("  %-7s %7lld %-8s %-28s %7s %5s %8s %8s %6s %8s\n", "zygote",
               (long long)json_integer_value(json_object_get(w, "pid")),
               json_is_true(json_object_get(w, "current")) ? "ready" : "retiring", "", "", "", c[0],
               c[1], c[2], c[3]);
    }
    json_array_foreach(json_object_get(json_object_get(n, "recognizer"), "recognizers"), k, w)
    {
        json_t *m = json_object_get(w, "memory");
        mem_cells(m, c);
        char what[64];
        snprintf(what, sizeof what, "recognizer %lld (%s)",
                 (long long)json_integer_value(json_object_get(w, "index")),
                 json_string_value(json_object_get(w, "device")));
        *trss += kb(m, "rss_kb");
        *tpss += kb(m, "pss_kb");
        printf("  %-7s %7lld %-8s %-28s %7s %5s %8s %8s %6s %8s\n", "recog",
               (long long)json_integer_value(json_object_get(w, "pid")),
               json_string_value(json_object_get(w, "state")), what, "", "", c[0], c[1], c[2],
               c[3]);
    }
    json_array_foreach(json_object_get(n, "workers"), k, w)
    {
        json_t *m = json_object_get(w, "memory"), *t = json_object_get(w, "task");
        mem_cells(m, c);
        char page[64] = "", age[16] = "";
        if (t) {
            const char *src = json_string_value(json_object_get(t, "source"));
            const char *base = src ? strrchr(src, '/') : NULL;
            snprintf(page, sizeof page, "%.20s p%lld",
                     base  ? base + 1
                     : src ? src
                           : "?",
                     (long long)json_integer_value(json_object_get(t, "page")));
            snprintf(age, sizeof age, "%.1fs", json_real_value(json_object_get(t, "age_s")));
        }
        *trss += kb(m, "rss_kb");
        *tpss += kb(m, "pss_kb");
        printf("  %-7s %7lld %-8s %-28s %7s %5lld %8s %8s %6s %8s", "worker",
               (long long)json_integer_value(json_object_get(w, "pid")),
               json_string_value(json_object_get(w, "state")), page, age,
               (long long)json_integer_value(json_object_get(w, "pages_done")), c[0], c[1], c[2],
               c[3]);
        json_int_t gb = json_integer_value(json_object_get(w, "gpu_memory_bytes"));
        if (gpus && gb >= 0)
            printf(" %8.0f", (double)gb / 1048576.0);
        else if (gpus)
            printf(" %8s", "-");
        printf("\n");
    }
}

/* A recognizer's GPU: memory held of its cap, in use, peak, utilisation (NVML; n/a
 * without it), lines/s, and whether it was given up for the CPU. */
static void print_recognizer_gpu(json_t *w)
{
    json_t *g = json_object_get(w, "gpu");
    if (!json_is_object(g))
        return;
    char util[16] = "n/a";
    if (json_is_integer(json_object_get(g, "util_percent")))
        snprintf(util, sizeof util, "%lld%%",
                 (long long)json_integer_value(json_object_get(g, "util_percent")));
    const char *why = json_string_value(json_object_get(g, "why"));
    printf("    GPU %s (%s): %.0f MiB held of a %.0f MiB cap (%.0f in use, peak %.0f), "
           "utilisation %s, %.1f lines/s, %lld batches split, %lld failed%s%s\n",
           json_string_value(json_object_get(g, "device")),
           json_string_value(json_object_get(g, "name")),
           (double)json_integer_value(json_object_get(g, "held_bytes")) / 1048576.0,
           (double)json_integer_value(json_object_get(g, "cap_bytes")) / 1048576.0,
           (double)json_integer_value(json_object_get(g, "in_use_bytes")) / 1048576.0,
           (double)json_integer_value(json_object_get(g, "peak_held_bytes")) / 1048576.0, util,
           json_is_true(json_object_get(g, "active"))
               ? json_number_value(json_object_get(w, "lines_per_second"))
               : 0.0,
           (long long)json_integer_value(json_object_get(g, "splits")),
           (long long)json_integer_value(json_object_get(g, "failures")),
           why && *why ? "; on the CPU: " : "", why ? why : "");
}

/* The shared recognizers' figures: lines, lines/s, batch sizes, queue wait; the fallback. */
static void print_recognizers(json_t *rec)
{
    const char *mode = json_string_value(json_object_get(rec, "mode"));
    if (!mode || strcmp(mode, "shared") != 0)
        return;
    if (json_is_true(json_object_get(rec, "fallback")))
        printf("  recognizer: FALLBACK to the workers (%lld times): %s\n",
               (long long)json_integer_value(json_object_get(rec, "fallbacks")),
               json_string_value(json_object_get(rec, "fallback_reason")));
    size_t k, b;
    json_t *w, *v, *le = json_object_get(rec, "batch_le");
    json_array_foreach(json_object_get(rec, "recognizers"), k, w)
    {
        printf("  recognizer %lld: %lld lines, %.1f lines/s, %lld batches (mean %.1f lines; %lld "
               "of more than one worker), queue wait mean %.1f ms max %.1f ms, %lld restarts; "
               "batch sizes",
               (long long)json_integer_value(json_object_get(w, "index")),
               (long long)json_integer_value(json_object_get(w, "lines")),
               json_number_value(json_object_get(w, "lines_per_second")),
               (long long)json_integer_value(json_object_get(w, "batches")),
               json_number_value(json_object_get(w, "mean_batch")),
               (long long)json_integer_value(json_object_get(w, "multi_worker_batches")),
               json_number_value(json_object_get(w, "wait_mean_ms")),
               json_number_value(json_object_get(w, "wait_max_s")) * 1000,
               (long long)json_integer_value(json_object_get(w, "restarts")));
        json_array_foreach(json_object_get(w, "batch_hist"), b, v)
        {
            long long bound = json_integer_value(json_array_get(le, b));
            if (bound > 0)
                printf(" <=%lld:%lld", bound, (long long)json_integer_value(v));
            else
                printf(" more:%lld", (long long)json_integer_value(v));
        }
        printf("\n");
        print_recognizer_gpu(w);
    }
}

/* A node's totals, recycles, queue, GPUs and budget. */
static void print_figures(json_t *n, long trss, long tpss)
{
    size_t k;
    json_t *w, *pg = json_object_get(n, "pages");
    printf("  total: RSS %.1f MB, PSS %.1f MB; pages %lld done, %lld failed, %.2f pages/s "
           "(mean %.2f s)\n",
           trss / 1024.0, tpss / 1024.0, (long long)json_integer_value(json_object_get(pg, "done")),
           (long long)json_integer_value(json_object_get(pg, "failed")),
           json_real_value(json_object_get(pg, "per_second")),
           json_real_value(json_object_get(pg, "mean_seconds")));
    print_recognizers(json_object_get(n, "recognizer"));
    json_t *r = json_object_get(n, "recycles");
    printf("  recycles: %lld max-tasks-per-child, %lld max-memory-per-child, %lld hard memory "
           "limit, %lld time limit, %lld crashed\n",
           (long long)json_integer_value(json_object_get(r, "max_tasks_per_child")),
           (long long)json_integer_value(json_object_get(r, "max_memory_per_child")),
           (long long)json_integer_value(json_object_get(r, "hard_memory_limit")),
           (long long)json_integer_value(json_object_get(r, "time_limit")),
           (long long)json_integer_value(json_object_get(r, "crashed")));
    json_t *q = json_object_get(n, "queue");
    if (q && json_integer_value(json_object_get(q, "done")) < 0)
        printf("  queue: %lld ready, %lld unacknowledged (on all nodes)\n",
               (long long)json_integer_value(json_object_get(q, "ready")),
               (long long)json_integer_value(json_object_get(q, "leased")));
    else if (q)
        printf("  queue: %lld ready, %lld leased, %lld done, %lld failed, %lld buried\n",
               (long long)json_integer_value(json_object_get(q, "ready")),
               (long long)json_integer_value(json_object_get(q, "leased")),
               (long long)json_integer_value(json_object_get(q, "done")),
               (long long)json_integer_value(json_object_get(q, "failed")),
               (long long)json_integer_value(json_object_get(q, "buried")));
    json_array_foreach(json_object_get(n, "gpus"), k, w)
    {
        long long u = json_integer_value(json_object_get(w, "utilization_gpu_percent"));
        char busy[40] = "utilisation n/a"; /* NVML could not say (or an emulated device) */
        if (u >= 0)
            snprintf(busy, sizeof busy, "%lld%% busy", u);
        printf("  gpu cuda:%lld %s: %.0f of %.0f MiB used, %s\n",
               (long long)json_integer_value(json_object_get(w, "index")),
               json_string_value(json_object_get(w, "name")),
               (double)json_integer_value(json_object_get(w, "memory_used_bytes")) / 1048576.0,
               (double)json_integer_value(json_object_get(w, "memory_total_bytes")) / 1048576.0,
               busy);
    }
    json_t *b = json_object_get(n, "budget");
    if (json_integer_value(json_object_get(b, "limit_mb")) > 0)
        printf("  memory budget: %.0f of %lld MB in use\n",
               json_real_value(json_object_get(b, "in_use_mb")),
               (long long)json_integer_value(json_object_get(b, "limit_mb")));
}

static void print_text(json_t *nodes, json_t *flags, json_t *recs, const ocp_sysmem *sys)
{
    size_t i;
    json_t *n;
    if (json_array_size(nodes) == 0)
        printf("no ocrpool node is running on this machine\n");
    json_array_foreach(nodes, i, n)
    {
        json_t *set = json_object_get(n, "settings");
        printf("node %lld (%s) %s; engine %s, %s; -c %lld, prefetch %lld\n",
               (long long)json_integer_value(json_object_get(n, "pid")),
               json_string_value(json_object_get(n, "owner")),
               json_string_value(json_object_get(n, "state")),
               json_string_value(json_object_get(set, "engine")),
               json_string_value(json_object_get(set, "lang")),
               (long long)json_integer_value(json_object_get(set, "concurrency")),
               (long long)json_integer_value(json_object_get(set, "prefetch_multiplier")));
        long trss = 0, tpss = 0;
        print_processes(n, &trss, &tpss);
        print_figures(n, trss, tpss);
    }
    if (json_array_size(flags)) {
        printf("flags:\n");
        json_array_foreach(flags, i, n) printf("  ! %s\n", json_string_value(n));
    }
    if (json_array_size(recs)) {
        printf("recommendations:\n");
        json_array_foreach(recs, i, n) printf("  - %s\n", json_string_value(n));
    }
    printf("system: %.1f GB total, %.1f GB available, swap %.1f of %.1f GB used\n",
           sys->total_kb / 1048576.0, sys->available_kb / 1048576.0,
           (sys->swap_total_kb - sys->swap_free_kb) / 1048576.0, sys->swap_total_kb / 1048576.0);
}

static int monitor_once(const mon_ctx *c)
{
    json_t *nodes = json_array(), *flags = json_array(), *recs = json_array();
    ocp_sysmem sys;
    each_node(c, collect, nodes);
    judge(nodes, flags, recs);
    ocp_memstat_system(&sys);
    if (c->json) {
        json_t *o =
            json_pack("{s:o, s:o, s:o, s:{s:I, s:I, s:I, s:I}}", "nodes", nodes, "flags", flags,
                      "recommendations", recs, "system", "mem_total_kb", (json_int_t)sys.total_kb,
                      "mem_available_kb", (json_int_t)sys.available_kb, "swap_total_kb",
                      (json_int_t)sys.swap_total_kb, "swap_free_kb", (json_int_t)sys.swap_free_kb);
        /* 15 digits: times keep 10 us, as the HTTP API's. */
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        print_text(nodes, flags, recs, &sys);
        json_decref(nodes);
        json_decref(flags);
        json_decref(recs);
    }
    fflush(stdout);
    return 0;
}

int ocp_cmd_monitor(int argc, char **argv)
{
    mon_ctx c = {0};
    ocp_config *cfg;
    char **pos;
    int npos;
    int rc = ocp_cli_parse(argc, argv, mon_opts, mon_handler, &c, mon_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    /* The screen is cleared between reports on a terminal only; down a pipe or into a file
     * the reports follow each other, a blank line between. */
    int tty = isatty(STDOUT_FILENO), first = 1;
    do {
        if (c.watch && !c.json && tty)
            printf("\033[H\033[2J");
        else if (c.watch && !first)
            printf("\n");
        first = 0;
        monitor_once(&c);
        if (c.watch)
            usleep((useconds_t)(c.watch * 1e6));
    } while (c.watch);
    ocp_config_destroy(cfg);
    free(pos);
    return OCP_EXIT_OK;
}

typedef struct send_ctx {
    json_t *req;
    long pids[OCP_MAX_WORKERS]; /* the nodes that answered */
    int n;
    int say; /* say a stop's reply in words (stop without --json); else the reply as JSON */
} send_ctx;

/* A node's reply to a stop, in words. */
static void say_stop(long pid, json_t *reply)
{
    const char *st = json_string_value(json_object_get(reply, "state"));
    if (st && strcmp(st, "stopping-cold") == 0)
        printf("node %ld: stopping now: running pages go back to the queue\n", pid);
    else if (st && strcmp(st, "stopping") == 0)
        printf("node %ld: stopping: running pages finish first\n", pid);
    else
        printf("node %ld: stop taken (%s)\n", pid, st ? st : "no state said");
}

static int send_one(void *vctx, long pid, const char *path)
{
    send_ctx *s = vctx;
    json_t *reply = NULL;
    int rc = ocp_control_call(path, s->req, &reply, 10.0);
    if (rc || !json_is_true(json_object_get(reply, "ok"))) {
        const char *e = reply ? json_string_value(json_object_get(reply, "error")) : NULL;
        fprintf(stderr, "ocrpool: node %ld: %s\n", pid, e ? e : "does not answer");
        json_decref(reply);
        return -1;
    }
    if (s->say) {
        say_stop(pid, reply);
    } else {
        char *txt = json_dumps(reply, JSON_COMPACT);
        printf("node %ld: %s\n", pid, txt);
        free(txt);
    }
    json_decref(reply);
    if (s->n < OCP_MAX_WORKERS)
        s->pids[s->n++] = pid;
    return 0;
}

int ocp_cmd_stop(int argc, char **argv)
{
    mon_ctx c = {0};
    ocp_config *cfg;
    char **pos;
    int npos;
    int rc = ocp_cli_parse(argc, argv, mon_opts, mon_handler, &c, mon_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    send_ctx s = {.req = json_pack("{s:s}", "cmd", c.now ? "stop-now" : "stop"), .say = !c.json};
    int n = each_node(&c, send_one, &s);
    json_decref(s.req);
    if (n == 0) {
        fprintf(stderr, "ocrpool: no node to stop%s\n", c.node ? " with that pid" : "");
        rc = OCP_EXIT_FAILED;
    } else if (!c.nowait) {
        /* Wait for them to end: warm stops finish their pages first. */
        for (int t = 0; t < 6000; t++) {
            int alive = 0;
            for (int i = 0; i < s.n; i++)
                alive += kill((pid_t)s.pids[i], 0) == 0;
            if (!alive)
                break;
            usleep(100000);
        }
        for (int i = 0; i < s.n; i++)
            printf("node %ld: %s\n", s.pids[i],
                   kill((pid_t)s.pids[i], 0) == 0 ? "still running" : "stopped");
    }
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}

int ocp_cmd_control(int argc, char **argv)
{
    mon_ctx c = {0};
    ocp_config *cfg;
    char **pos;
    int npos;
    int rc = ocp_cli_parse(argc, argv, mon_opts, mon_handler, &c, mon_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    static const char *const cmds[] = {"stats", "stop", "stop-now", "reload", "scale"};
    int known = 0;
    for (size_t i = 0; npos >= 1 && i < sizeof cmds / sizeof cmds[0]; i++)
        known |= strcmp(pos[0], cmds[i]) == 0;
    int64_t n = 0;
    if (!known || (strcmp(pos[0], "scale") == 0 && (npos != 2 || !ocp_parse_i64(pos[1], &n)))) {
        fprintf(stderr, "ocrpool: control: expected stats, stop, stop-now, reload or scale N\n");
        rc = OCP_EXIT_USAGE;
    } else {
        send_ctx s = {.req = json_pack("{s:s}", "cmd", pos[0])};
        if (strcmp(pos[0], "scale") == 0)
            json_object_set_new(s.req, "n", json_integer(n));
        if (each_node(&c, send_one, &s) == 0)
            rc = OCP_EXIT_FAILED;
        json_decref(s.req);
    }
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}
