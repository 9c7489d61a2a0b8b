/*
 * metrics.c: GET /metrics in Prometheus's text format (metrics.h): the
 * queue's depth by state, and, from the node's control socket, pages
 * finished, the page-duration histogram (the master's buckets,
 * ocp_duration_le), each worker's memory, recycles, GPUs, the budget, and
 * how often the node restarted this API's process.
 */
#include "http/metrics.h"

#include <stdio.h>

static long long ival(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static void queue_series(ocp_sb *sb, const ocp_counts *n)
{
    ocp_sb_printf(sb,
                  "# HELP ocrpool_tasks Pages in the queue by state.\n"
                  "# TYPE ocrpool_tasks gauge\n"
                  "ocrpool_tasks{state=\"ready\"} %ld\nocrpool_tasks{state=\"leased\"} %ld\n",
                  n->ready, n->leased);
    /* A broker that does not count finished pages (redis: expiring result keys) leaves
     * those series out rather than report a number it does not know. */
    if (n->done >= 0)
        ocp_sb_printf(sb,
                      "ocrpool_tasks{state=\"done\"} %ld\nocrpool_tasks{state=\"failed\"} "
                      "%ld\nocrpool_tasks{state=\"buried\"} %ld\n",
                      n->done, n->failed, n->buried);
    ocp_sb_printf(sb,
                  "# HELP ocrpool_queue_depth Pages waiting or running.\n"
                  "# TYPE ocrpool_queue_depth gauge\nocrpool_queue_depth %ld\n",
                  n->ready + n->leased);
}

static void page_series(ocp_sb *sb, json_t *st)
{
    json_t *pg = json_object_get(st, "pages");
    ocp_sb_printf(sb,
                  "# HELP ocrpool_pages_total Pages this node finished.\n"
                  "# TYPE ocrpool_pages_total counter\n"
                  "ocrpool_pages_total{result=\"done\"} %lld\n"
                  "ocrpool_pages_total{result=\"failed\"} %lld\n"
                  "# HELP ocrpool_pages_per_second Pages per second since the node "
                  "started.\n# TYPE ocrpool_pages_per_second gauge\n"
                  "ocrpool_pages_per_second %.6f\n",
                  ival(pg, "done"), ival(pg, "failed"),
                  json_real_value(json_object_get(pg, "per_second")));
    json_t *hb = json_object_get(st, "duration_buckets");
    long long cum = 0;
    ocp_sb_puts(sb, "# HELP ocrpool_page_duration_seconds Time to OCR a page.\n"
                    "# TYPE ocrpool_page_duration_seconds histogram\n");
    for (int i = 0; i <= OCP_DURATION_NB; i++) {
        char le[32];
        if (i < OCP_DURATION_NB)
            snprintf(le, sizeof le, "%g", ocp_duration_le[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        cum += json_integer_value(json_array_get(hb, (size_t)i));
        ocp_sb_printf(sb, "ocrpool_page_duration_seconds_bucket{le=\"%s\"} %lld\n", le, cum);
    }
    ocp_sb_printf(sb,
                  "ocrpool_page_duration_seconds_sum %.6f\n"
                  "ocrpool_page_duration_seconds_count %lld\n",
                  json_real_value(json_object_get(st, "duration_sum")), cum);
}

static void worker_series(ocp_sb *sb, json_t *st)
{
    static const struct {
        const char *name, *help, *key;
    } wm[] = {
        {"ocrpool_worker_rss_bytes", "Resident size of each worker.", "rss_kb"},
        {"ocrpool_worker_pss_bytes",
         "Proportional size of each worker (shared pages divided among sharers).", "pss_kb"},
    };
    size_t i;
    json_t *w;
    for (size_t k = 0; k < sizeof wm / sizeof wm[0]; k++) {
        ocp_sb_printf(sb, "# HELP %s %s\n# TYPE %s gauge\n", wm[k].name, wm[k].help, wm[k].name);
        json_array_foreach(json_object_get(st, "workers"), i, w)
        {
            ocp_sb_printf(sb, "%s{pid=\"%lld\",slot=\"%lld\"} %lld\n", wm[k].name, ival(w, "pid"),
                          ival(w, "slot"), ival(json_object_get(w, "memory"), wm[k].key) * 1024);
        }
    }
    ocp_sb_puts(sb, "# HELP ocrpool_recycles_total Workers replaced, by reason.\n"
                    "# TYPE ocrpool_recycles_total counter\n");
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(st, "recycles"), key, v) ocp_sb_printf(
        sb, "ocrpool_recycles_total{reason=\"%s\"} %lld\n", key, (long long)json_integer_value(v));
    ocp_sb_puts(sb, "# HELP ocrpool_worker_gpu_memory_bytes GPU memory of each worker "
                    "(NVML's process list).\n# TYPE ocrpool_worker_gpu_memory_bytes gauge\n");
    json_array_foreach(json_object_get(st, "workers"), i, w)
        ocp_sb_printf(sb, "ocrpool_worker_gpu_memory_bytes{pid=\"%lld\"} %lld\n", ival(w, "pid"),
                      ival(w, "gpu_memory_bytes"));
}

static void gpu_series(ocp_sb *sb, json_t *st)
{
    size_t i;
    json_t *g;
    ocp_sb_puts(sb, "# HELP ocrpool_gpu_memory_used_bytes Memory used on each GPU.\n"
                    "# TYPE ocrpool_gpu_memory_used_bytes gauge\n"
                    "# HELP ocrpool_gpu_utilization_percent Each GPU's utilisation.\n"
                    "# TYPE ocrpool_gpu_utilization_percent gauge\n");
    json_array_foreach(json_object_get(st, "gpus"), i, g)
    {
        long long idx = ival(g, "index");
        ocp_sb_printf(sb, "ocrpool_gpu_memory_used_bytes{gpu=\"%lld\"} %lld\n", idx,
                      ival(g, "memory_used_bytes"));
        ocp_sb_printf(sb, "ocrpool_gpu_memory_total_bytes{gpu=\"%lld\"} %lld\n", idx,
                      ival(g, "memory_total_bytes"));
        long long u = ival(g, "utilization_gpu_percent");
        if (u >= 0)
            ocp_sb_printf(sb, "ocrpool_gpu_utilization_percent{gpu=\"%lld\"} %lld\n", idx, u);
        else /* NVML could not say (or an emulated device): not a 0 */
            ocp_sb_printf(sb, "ocrpool_gpu_utilization_percent{gpu=\"%lld\"} NaN\n", idx);
    }
    json_t *bg = json_object_get(st, "budget");
    ocp_sb_printf(sb,
                  "# HELP ocrpool_memory_budget_bytes The memory budget and the "
                  "estimate in use.\n# TYPE ocrpool_memory_budget_bytes gauge\n"
                  "ocrpool_memory_budget_bytes{kind=\"limit\"} %lld\n"
                  "ocrpool_memory_budget_bytes{kind=\"in_use\"} %.0f\n",
                  ival(bg, "limit_mb") << 20,
                  json_real_value(json_object_get(bg, "in_use_mb")) * 1048576.0);
}

/* The API process itself, as its node's master keeps it (pool.h's sidecar). */
static void api_series(ocp_sb *sb, json_t *st)
{
    json_t *sc = json_object_get(st, "sidecar");
    if (!sc)
        return;
    ocp_sb_printf(sb,
                  "# HELP ocrpool_http_restarts_total Times the node restarted its HTTP API "
                  "process after it died.\n# TYPE ocrpool_http_restarts_total counter\n"
                  "ocrpool_http_restarts_total %lld\n",
                  ival(sc, "restarts"));
}

/* The shared recognizers (when the node runs them): memory, lines, rate, the batch-size
 * histogram, queue wait, restarts; and the node's fallbacks to reading in the workers. */
static void recognizer_series(ocp_sb *sb, json_t *st)
{
    json_t *rec = json_object_get(st, "recognizer"), *rs = json_object_get(rec, "recognizers");
    if (!rec)
        return;
    ocp_sb_printf(sb,
                  "# HELP ocrpool_recognizer_fallbacks_total Times the node gave up its shared "
                  "recognizers and read lines in the workers.\n"
                  "# TYPE ocrpool_recognizer_fallbacks_total counter\n"
                  "ocrpool_recognizer_fallbacks_total %lld\n",
                  ival(rec, "fallbacks"));
    static const struct {
        const char *name, *type, *help, *key;
        int mem;
    } g[] = {
        {"ocrpool_recognizer_rss_bytes", "gauge", "Resident size of each shared recognizer.",
         "rss_kb", 1},
        {"ocrpool_recognizer_pss_bytes", "gauge",
         "Proportional size of each shared recognizer (counted once, as a worker's).", "pss_kb", 1},
        {"ocrpool_recognizer_lines_total", "counter", "Lines each recognizer read.", "lines", 0},
        {"ocrpool_recognizer_batches_total", "counter", "Batches each recognizer ran.", "batches",
         0},
        {"ocrpool_recognizer_multi_worker_batches_total", "counter",
         "Batches that held lines of more than one worker.", "multi_worker_batches", 0},
        {"ocrpool_recognizer_restarts_total", "counter", "Times each recognizer was restarted.",
         "restarts", 0},
    };
    size_t i;
    json_t *r;
    for (size_t k = 0; k < sizeof g / sizeof *g; k++) {
        ocp_sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", g[k].name, g[k].help, g[k].name,
                      g[k].type);
        json_array_foreach(rs, i, r)
        {
            long long v =
                g[k].mem ? ival(json_object_get(r, "memory"), g[k].key) * 1024 : ival(r, g[k].key);
            ocp_sb_printf(sb, "%s{index=\"%lld\",device=\"%s\"} %lld\n", g[k].name,
                          ival(r, "index"), json_string_value(json_object_get(r, "device")), v);
        }
    }
    ocp_sb_puts(sb, "# HELP ocrpool_recognizer_lines_per_second Lines read over the last "
                    "second.\n# TYPE ocrpool_recognizer_lines_per_second gauge\n");
    json_array_foreach(rs, i, r)
        ocp_sb_printf(sb, "ocrpool_recognizer_lines_per_second{index=\"%lld\"} %.3f\n",
                      ival(r, "index"), json_number_value(json_object_get(r, "lines_per_second")));
    ocp_sb_puts(sb, "# HELP ocrpool_recognizer_queue_wait_seconds Time lines waited for their "
                    "batch.\n# TYPE ocrpool_recognizer_queue_wait_seconds summary\n");
    json_array_foreach(rs, i, r)
        ocp_sb_printf(sb,
                      "ocrpool_recognizer_queue_wait_seconds_sum{index=\"%lld\"} %.6f\n"
                      "ocrpool_recognizer_queue_wait_seconds_count{index=\"%lld\"} %lld\n",
                      ival(r, "index"), json_number_value(json_object_get(r, "wait_sum_s")),
                      ival(r, "index"), ival(r, "lines"));
    ocp_sb_puts(sb, "# HELP ocrpool_recognizer_batch_lines Lines per batch.\n"
                    "# TYPE ocrpool_recognizer_batch_lines histogram\n");
    json_t *le = json_object_get(rec, "batch_le");
    json_array_foreach(rs, i, r)
    {
        long long cum = 0;
        json_t *h = json_object_get(r, "batch_hist");
        for (size_t b = 0; b < json_array_size(h); b++) {
            cum += json_integer_value(json_array_get(h, b));
            long long bound = json_integer_value(json_array_get(le, b));
            char lb[24];
            if (bound > 0)
                snprintf(lb, sizeof lb, "%lld", bound);
            else
                snprintf(lb, sizeof lb, "+Inf");
            ocp_sb_printf(sb,
                          "ocrpool_recognizer_batch_lines_bucket{index=\"%lld\",le=\"%s\"} %lld\n",
                          ival(r, "index"), lb, cum);
        }
        ocp_sb_printf(sb,
                      "ocrpool_recognizer_batch_lines_sum{index=\"%lld\"} %lld\n"
                      "ocrpool_recognizer_batch_lines_count{index=\"%lld\"} %lld\n",
                      ival(r, "index"), ival(r, "lines"), ival(r, "index"), cum);
    }
}

/* Each shared recognizer's GPU (when it was given one): memory held, its cap, in use, the
 * peak, utilisation (NVML; NaN where there is none, as on an emulated device), lines/s on
 * the GPU, failed batches, and whether the GPU still reads (0: given up for the CPU). */
static void recognizer_gpu_series(ocp_sb *sb, json_t *st)
{
    json_t *rs = json_object_get(json_object_get(st, "recognizer"), "recognizers"), *r;
    size_t i;
    int any = 0;
    json_array_foreach(rs, i, r) any |= json_is_object(json_object_get(r, "gpu"));
    if (!any)
        return;
    static const struct {
        const char *name, *type, *help, *key;
    } g[] = {
        {"ocrpool_recognizer_gpu_memory_bytes", "gauge",
         "GPU memory each recognizer's allocator holds (never above its cap).", "held_bytes"},
        {"ocrpool_recognizer_gpu_memory_cap_bytes", "gauge",
         "Each recognizer's GPU memory cap: min(gpu-memory-fraction x total, gpu-max-memory-mb).",
         "cap_bytes"},
        {"ocrpool_recognizer_gpu_memory_in_use_bytes", "gauge",
         "Of the GPU memory held, what weights and batches use now.", "in_use_bytes"},
        {"ocrpool_recognizer_gpu_memory_peak_bytes", "gauge",
         "The most GPU memory each recognizer has held.", "peak_held_bytes"},
        {"ocrpool_recognizer_gpu_failures_total", "counter",
         "Batches the GPU failed (read again on the CPU).", "failures"},
        {"ocrpool_recognizer_gpu_split_batches_total", "counter",
         "Batches split to fit under the GPU memory cap.", "splits"},
    };
    for (size_t k = 0; k < sizeof g / sizeof *g; k++) {
        ocp_sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", g[k].name, g[k].help, g[k].name,
                      g[k].type);
        json_array_foreach(rs, i, r)
        {
            json_t *gp = json_object_get(r, "gpu");
            if (json_is_object(gp))
                ocp_sb_printf(sb, "%s{index=\"%lld\",device=\"%s\"} %lld\n", g[k].name,
                              ival(r, "index"), json_string_value(json_object_get(gp, "device")),
                              ival(gp, g[k].key));
        }
    }
    ocp_sb_puts(sb, "# HELP ocrpool_recognizer_gpu_utilization_ratio The GPU's utilisation "
                    "(NVML; NaN: not available).\n"
                    "# TYPE ocrpool_recognizer_gpu_utilization_ratio gauge\n");
    json_array_foreach(rs, i, r)
    {
        json_t *gp = json_object_get(r, "gpu"), *u = json_object_get(gp, "util_percent");
        if (!json_is_object(gp))
            continue;
        char v[32] = "NaN";
        if (json_is_integer(u))
            snprintf(v, sizeof v, "%.2f", (double)json_integer_value(u) / 100.0);
        ocp_sb_printf(sb,
                      "ocrpool_recognizer_gpu_utilization_ratio{index=\"%lld\",device=\"%s\"} %s\n",
                      ival(r, "index"), json_string_value(json_object_get(gp, "device")), v);
    }
    ocp_sb_puts(sb, "# HELP ocrpool_recognizer_gpu_active 1 while the GPU reads, 0 once it was "
                    "given up for the CPU.\n# TYPE ocrpool_recognizer_gpu_active gauge\n");
    json_array_foreach(rs, i, r)
    {
        json_t *gp = json_object_get(r, "gpu");
        if (json_is_object(gp))
            ocp_sb_printf(sb, "ocrpool_recognizer_gpu_active{index=\"%lld\",device=\"%s\"} %d\n",
                          ival(r, "index"), json_string_value(json_object_get(gp, "device")),
                          json_is_true(json_object_get(gp, "active")));
    }
}

void ocp__http_metrics(ocp_sb *sb, const ocp_counts *n, json_t *stats)
{
    queue_series(sb, n);
    if (!stats)
        return;
    page_series(sb, stats);
    worker_series(sb, stats);
    gpu_series(sb, stats);
    recognizer_series(sb, stats);
    recognizer_gpu_series(sb, stats);
    api_series(sb, stats);
}
