/*
 * conf.c: the pool's configuration from the settings (pool.h): the
 * figures the master and workers use, the broker's options, and the
 * device plan that gives each worker slot its CUDA_VISIBLE_DEVICES.
 */
#include "config/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/util.h"
#include "engine/engine.h"
#include "gpu/gpu.h"
#include "image/image.h"
#include "pool/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void free_plan(ocp_pool_conf *pc)
{
    for (int i = 0; i < pc->n_visible; i++)
        free(pc->visible[i]);
    free(pc->visible);
    pc->visible = NULL;
    pc->n_visible = 0;
}

void ocp_pool_conf_fini(ocp_pool_conf *pc)
{
    free_plan(pc);
    ocp_config_destroy(pc->cfg_owned);
    pc->cfg_owned = NULL;
}

int ocp_pool_conf_devices(ocp_pool_conf *pc, const char *device, bool uses_gpu,
                          const ocp_gpu_list *gpus, double fraction, long long max_mb, char *err,
                          size_t errlen)
{
    ocp_gpu_plan plan;
    free_plan(pc);
    int rc =
        ocp_gpu_resolve(device, pc->engine ? pc->engine : "?", uses_gpu, gpus, &plan, err, errlen);
    if (rc || plan.n == 0 || pc->concurrency <= 0)
        return rc; /* the CPU: no device visible to any worker */
    int n = pc->concurrency < OCP_MAX_WORKERS ? pc->concurrency : OCP_MAX_WORKERS;
    ocp_gpu_assignment *as = ocp_xcalloc((size_t)n, sizeof *as);
    ocp_gpu_assign(&plan, gpus, n, fraction, max_mb, as);
    pc->visible = ocp_xcalloc((size_t)n, sizeof *pc->visible);
    for (int i = 0; i < n; i++) {
        char buf[128];
        ocp_gpu_visible_devices(gpus, as[i].device, buf, sizeof buf);
        pc->visible[i] = ocp_xstrdup(buf);
    }
    pc->n_visible = n;
    free(as);
    return 0;
}

/* --device against this machine's GPUs: discovered (NVML) only when a GPU may be used. A
 * device that cannot be resolved leaves the workers on the CPU (the command line refuses
 * such a setting before it starts a pool). */
static void plan_devices(ocp_pool_conf *pc, const ocp_config *cfg)
{
    const char *device = ocp_config_str(cfg, OCP_S_DEVICE);
    const ocp_engine_ops *ops = ocp_engine_find(pc->engine);
    bool uses_gpu = ops && (ops->features & OCP_FEAT_GPU) != 0;
    if (!device || strcmp(device, "cpu") == 0 || (strcmp(device, "auto") == 0 && !uses_gpu))
        return;
    char err[600];
    ocp_gpu_list *gpus = ocp_xcalloc(1, sizeof *gpus);
    ocp_gpu_discover(gpus);
    if (ocp_pool_conf_devices(
            pc, device, uses_gpu, gpus, ocp_config_double(cfg, OCP_S_GPU_MEMORY_FRACTION),
            (long long)ocp_config_int(cfg, OCP_S_GPU_MAX_MEMORY_MB), err, sizeof err))
        OCP_LOG(OCP_LOG_ERROR, "device %s: %s; the workers run on the CPU", device, err);
    free(gpus);
}

/* recognizer: auto is shared when the workers were given a GPU, worker on the CPU; only
 * engine lstm has a network to share (another engine ignores it, with a word in the log). */
static void recognizer_mode(ocp_pool_conf *pc, const ocp_config *cfg)
{
    const char *mode = ocp_config_str(cfg, OCP_S_RECOGNIZER);
    pc->recognizer_shared =
        mode && (strcmp(mode, "shared") == 0 || (strcmp(mode, "auto") == 0 && pc->n_visible > 0));
    if (pc->recognizer_shared && strcmp(pc->engine, "lstm") != 0) {
        if (strcmp(mode, "shared") == 0)
            OCP_LOG(OCP_LOG_WARN,
                    "recognizer shared: engine %s has no network to share; each "
                    "worker reads its own pages",
                    pc->engine);
        pc->recognizer_shared = false;
    }
    pc->recognizer_batch = (int)ocp_config_int(cfg, OCP_S_RECOGNIZER_BATCH);
    pc->recognizer_wait_s = ocp_config_double(cfg, OCP_S_RECOGNIZER_WAIT) / 1000.0;
    pc->recognizer_batch_mb = (long)ocp_config_int(cfg, OCP_S_RECOGNIZER_BATCH_MB);
    pc->recognizer_arena_mb = (long)ocp_config_int(cfg, OCP_S_RECOGNIZER_ARENA_MB);
    pc->gpu_fraction = ocp_config_double(cfg, OCP_S_GPU_MEMORY_FRACTION);
    pc->gpu_max_mb = (long long)ocp_config_int(cfg, OCP_S_GPU_MAX_MEMORY_MB);
    pc->gpu_growth = ocp_config_bool(cfg, OCP_S_GPU_ALLOW_GROWTH);
}

void ocp_pool_conf_from_config(ocp_pool_conf *pc, const ocp_config *cfg)
{
    memset(pc, 0, sizeof *pc);
    pc->engine = ocp_config_str(cfg, OCP_S_ENGINE);
    pc->ep.lang = ocp_config_str(cfg, OCP_S_LANG);
    pc->preload_langs = ocp_config_str(cfg, OCP_S_PRELOAD_LANGUAGES);
    pc->ep.tessdata_dir = ocp_config_str(cfg, OCP_S_TESSDATA_DIR);
    pc->ep.psm = (int)ocp_config_int(cfg, OCP_S_PSM);
    pc->ep.max_languages = (int)ocp_config_int(cfg, OCP_S_MAX_LANGUAGES);
    pc->lim = ocp_image_limits_from_config(cfg);
    pc->orient = ocp_orient_conf_from_config(cfg);
    pc->soft_timeout_s = ocp_config_double(cfg, OCP_S_PAGE_TIMEOUT);
    pc->concurrency = (int)ocp_config_int(cfg, OCP_S_CONCURRENCY);
    pc->prefetch_multiplier = (int)ocp_config_int(cfg, OCP_S_PREFETCH_MULTIPLIER);
    pc->batch_pages = (int)ocp_config_int(cfg, OCP_S_BATCH_PAGES);
    pc->acks_late = ocp_config_bool(cfg, OCP_S_ACKS_LATE);
    pc->max_tasks_per_child = (int)ocp_config_int(cfg, OCP_S_MAX_TASKS_PER_CHILD);
    pc->max_memory_per_child = (long)ocp_config_int(cfg, OCP_S_MAX_MEMORY_PER_CHILD);
    pc->hard_memory_limit_mb = (long)ocp_config_int(cfg, OCP_S_HARD_MEMORY_LIMIT);
    pc->memory_budget_mb = (long)ocp_config_int(cfg, OCP_S_MEMORY_BUDGET);
    pc->page_memory_factor = ocp_config_double(cfg, OCP_S_PAGE_MEMORY_FACTOR);
    pc->max_deliveries = (int)ocp_config_int(cfg, OCP_S_MAX_DELIVERIES);
    pc->lease_timeout_s = ocp_config_double(cfg, OCP_S_LEASE_TIMEOUT);
    pc->time_limit_s = ocp_config_double(cfg, OCP_S_TIME_LIMIT);
    pc->result_expires_s = ocp_config_double(cfg, OCP_S_RESULT_EXPIRES);
    pc->cgroup_root = ocp_config_str(cfg, OCP_S_CGROUP_ROOT);
    ocp_pool_broker_opts(&pc->broker, cfg);
    pc->node_name = ocp_config_str(cfg, OCP_S_HOSTNAME);
    pc->events = ocp_config_bool(cfg, OCP_S_EVENTS);
    pc->statedb = ocp_config_str(cfg, OCP_S_STATEDB);
    char err[200]; /* the worker command checked it and said why */
    if (ocp_pool_autoscale_parse(ocp_config_str(cfg, OCP_S_AUTOSCALE), &pc->autoscale_max,
                                 &pc->autoscale_min, err, sizeof err) == 0 &&
        pc->autoscale_max > 0)
        pc->concurrency = pc->autoscale_min; /* Celery's autoscaler starts at its minimum */
    plan_devices(pc, cfg);
    recognizer_mode(pc, cfg);
}

int ocp_pool_autoscale_parse(const char *s, int *max, int *min, char *err, size_t errlen)
{
    *max = *min = 0;
    if (!s || !*s)
        return 0;
    char *end;
    long hi = strtol(s, &end, 10), lo = 1;
    if (end != s && *end == ',') {
        const char *p = end + 1;
        lo = strtol(p, &end, 10);
        if (end == p)
            lo = -1;
    }
    if (end == s || *end || hi < 1 || hi > OCP_MAX_WORKERS || lo < 1 || lo > hi)
        return ocp_errf(OCP_E_CONFIG, err, errlen,
                        "autoscale: '%s' is not MAX,MIN with 1 <= MIN <= MAX <= %d", s,
                        OCP_MAX_WORKERS);
    *max = (int)hi;
    *min = (int)lo;
    return 0;
}

void ocp_pool_broker_opts(ocp_broker_opts *o, const ocp_config *cfg)
{
    memset(o, 0, sizeof *o);
    o->queues = ocp_config_str(cfg, OCP_S_QUEUES);
    o->task_name = ocp_config_str(cfg, OCP_S_TASK_NAME);
    o->lang = ocp_config_str(cfg, OCP_S_LANG);
    o->visibility_timeout_s = ocp_config_double(cfg, OCP_S_VISIBILITY_TIMEOUT);
    double ex = ocp_config_double(cfg, OCP_S_RESULT_EXPIRES);
    o->result_expires_s = ex > 0 ? ex : -1;
    o->track_started = ocp_config_bool(cfg, OCP_S_TRACK_STARTED);
    o->max_message_bytes = (size_t)ocp_config_int(cfg, OCP_S_MAX_INPUT_SIZE) << 20;
}
