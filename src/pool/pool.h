/*
 * pool.h: the worker pool of one node.
 *
 *   master (ocp_pool_run, one per node, single-threaded event loop: master_int.h)
 *     |  leases pages from the broker, admits them under the memory budget,
 *     |  dispatches them to idle workers, stores results, acknowledges,
 *     |  renews leases, watches each worker's memory and time
 *     |  socketpair
 *   zygote (forked first, before the master opens its broker): loads the
 *     |  engine and its models once, then forks workers on request, so the
 *     |  model pages are shared copy-on-write
 *     |  fork; the worker's socket goes back to the master (SCM_RIGHTS)
 *   workers 1..N: one page at a time: decode -> resize -> OCR -> result
 *     |  with recognizer = shared (engine lstm): their prepared lines, through a memfd
 *     v  arena and a unix socket each (src/recog/recog.h)
 *   recognizer, one per device, also forked by the zygote: batches every worker's lines
 *     through the network; restarted by the master when it dies
 *
 * The master opens no engine, image library or SQLite handle that crosses
 * a fork: the first zygote is forked before any of them exist, and one
 * forked later (a reload, or replacing a zygote that died) first closes
 * every descriptor it inherited but its own socket, so no broker handle
 * lives on in it; the master never loads libvips or an engine. Children die with
 * their parent (PR_SET_PDEATHSIG). Shutdown: SIGTERM or SIGINT = warm (no
 * new leases, running pages finish), a second one or SIGQUIT = cold
 * (workers killed, their pages go back to the queue without counting a
 * delivery); SIGHUP = re-read the configuration and replace the workers
 * gracefully (idle ones now, busy ones after their page).
 */
#ifndef OCP_POOL_POOL_H
#define OCP_POOL_POOL_H

#include <stdbool.h>

#include "broker/broker.h"
#include "config/config.h"
#include "engine/engine.h"
#include "gpu/gpu.h"
#include "image/image.h"
#include "image/orient.h"

/* Everything the pool needs, resolved from the settings. Open type. */
typedef struct ocp_pool_conf {
    const char *engine;
    ocp_engine_params ep;
    const char *preload_langs; /* loaded by the zygote beside ep.lang, comma separated */
    ocp_image_limits lim;
    ocp_orient_conf orient; /* rotate-pages, its threshold, deskew */
    double soft_timeout_s;
    int concurrency;
    int prefetch_multiplier; /* 0 = no limit */
    int batch_pages;         /* pages a worker is given at once, >= 1 */
    bool acks_late;
    int max_tasks_per_child;   /* 0 = never */
    long max_memory_per_child; /* KiB, 0 = never */
    long hard_memory_limit_mb; /* 0 = none */
    long memory_budget_mb;     /* 0 = none */
    double page_memory_factor; /* bytes per pixel after resize */
    int max_deliveries;
    double lease_timeout_s;
    double time_limit_s; /* 0 = none */
    double result_expires_s;
    const char *cgroup_root;
    const char *only_group; /* lease only this group's pages (ocr); NULL = any */
    ocp_broker_opts broker; /* queues, task name, visibility timeout (redis) */
    /* CUDA_VISIBLE_DEVICES of worker slot i is visible[i % n_visible]; none (n_visible 0)
     * = "" for every worker. Owned (ocp_pool_conf_fini). */
    char **visible;
    int n_visible;
    /* Engine lstm's network in a shared recognizer per device (recog/recog.h) rather than in
     * each worker; its batching and memory settings. */
    bool recognizer_shared;
    int recognizer_batch;
    double recognizer_wait_s;
    long recognizer_batch_mb, recognizer_arena_mb;
    /* A recognizer on a GPU: its memory cap's settings (recog/recog.h). */
    double gpu_fraction;
    long long gpu_max_mb;
    bool gpu_growth;
    /* The settings the strings above point into, when pc owns them (a reload's fresh
     * configuration, handed over by the reload hook): destroyed by ocp_pool_conf_fini.
     * NULL when they are borrowed. */
    ocp_config *cfg_owned;
    /* An optional program the master keeps running beside its workers (serve's HTTP API):
     * execv(sidecar_path, sidecar_argv) in a child forked when the pool starts (before
     * the zygote), with every inherited descriptor but 0-2 closed and the signals at
     * their defaults. When it ends while the node runs it is started again after 1 s,
     * doubling to 30 s (back to 1 s once it has lived a minute), logged and counted
     * (stats: "sidecar"); when it exits with OCP_EXIT_FATAL it is not restarted and the
     * node stops with an error. A warm or cold stop stops it. NULL path = none; borrowed,
     * read once, when the pool starts. */
    const char *sidecar_path;
    char *const *sidecar_argv; /* NULL-terminated */
    const char *sidecar_name;  /* for the log and the figures */
    /* Celery's remote control, events, autoscaling and revocation (redis; remote.c).
     * Strings borrowed. */
    const char *node_name;            /* hostname setting, before %h/%n/%d are expanded */
    bool events;                      /* task events from the start */
    int autoscale_max, autoscale_min; /* 0, 0 = off */
    const char *statedb;              /* "" = revoked ids in memory only */
} ocp_pool_conf;

/*
 * Fills pc from cfg; strings borrowed from cfg, the device plan (visible) owned by pc
 * (ocp_pool_conf_fini). The GPUs are discovered only when --device may use one.
 */
void ocp_pool_conf_from_config(ocp_pool_conf *pc, const ocp_config *cfg);
/* Frees what pc owns (its device plan, and cfg_owned: its strings then dangle). */
void ocp_pool_conf_fini(ocp_pool_conf *pc);
/*
 * The device plan: device ("auto", "cpu", "cuda:N[,M...]") resolved against gpus for an
 * engine that does (uses_gpu) or does not use a GPU, its workers assigned round-robin, and
 * each worker slot's CUDA_VISIBLE_DEVICES (a device's UUID) put in pc->visible (replacing
 * the old plan; none when the workers run on the CPU). pc->engine and pc->concurrency are
 * read. Returns 0, or OCP_E_CONFIG with the reason in err.
 */
int ocp_pool_conf_devices(ocp_pool_conf *pc, const char *device, bool uses_gpu,
                          const ocp_gpu_list *gpus, double fraction, long long max_mb, char *err,
                          size_t errlen);
/* Parses an autoscale value "MAX,MIN" (or "MAX": MIN 1) into *max and *min (empty: 0, 0);
 * OCP_E_CONFIG with the reason in err. */
int ocp_pool_autoscale_parse(const char *s, int *max, int *min, char *err, size_t errlen);
/* The broker's options from cfg; strings borrowed from cfg. */
void ocp_pool_broker_opts(ocp_broker_opts *o, const ocp_config *cfg);

/* Hooks of the command that runs the pool. All optional. Open type. */
typedef struct ocp_pool_hooks {
    void *ctx;
    /* SIGHUP: rebuild *pc from a fresh configuration; 0 on success. The pool then owns *pc
     * (it calls ocp_pool_conf_fini when it is replaced, abandoned or the pool ends), and with
     * it the configuration its strings point into, which the hook hands over in
     * pc->cfg_owned. */
    int (*reload)(void *ctx, ocp_pool_conf *pc);
    /* A page's result was stored (DONE): its group (NULL = none), its payload as leased
     * (borrowed) and the pool's settings. Runs in the master's loop: it must not block
     * (worker: a document's searchable PDF, app/output.h ocp_app_pdf_start). */
    void (*page_stored)(void *ctx, const ocp_pool_conf *pc, const char *group,
                        const json_t *payload);
    /* After each turn of the master's loop (reaping what page_stored started), and once
     * when the node stops (ending it). */
    void (*tick)(void *ctx, const ocp_pool_conf *pc);
    void (*stop)(void *ctx);
} ocp_pool_hooks;

/*
 * Runs the pool on broker url until a shutdown signal (SIGTERM, SIGINT,
 * SIGQUIT, or the control socket's stop). Returns 0, or a negative code
 * with the reason in err. pc is borrowed (copied). Call it before the
 * process has started libvips, an engine or the broker: it forks the
 * zygote first.
 */
int ocp_pool_run(const ocp_pool_conf *pc, const char *broker_url, const ocp_pool_hooks *hooks,
                 char *err, size_t errlen);

/* Exit status of a zygote or worker that must not be restarted (engine cannot load). */
#define OCP_EXIT_FATAL 70

#endif
