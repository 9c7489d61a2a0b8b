/*
 * zygote.c: the zygote and the workers it forks (pool.h).
 *
 * Zygote: loads the engine once, then serves the master:
 *   master -> {"t":"spawn","slot":K,"visible":"GPU-..."}
 *   zygote -> {"t":"spawned","slot":K,"pid":P} + the master's end of the
 *             new worker's socket (SCM_RIGHTS)
 *   zygote -> {"t":"exited","pid":P,"status":S,"maxrss_kb":R} when a worker
 *             ends (the zygote is its parent and reaps it)
 *   zygote -> {"t":"ready","rss_kb":R} once, or {"t":"fatal","error":E}
 *   master -> {"t":"recognizer","index":K,"addr":A,"visible":V,"batch":B,...}
 *   zygote -> {"t":"recog_spawned","index":K,"pid":P} + the master's end of
 *             the shared recognizer's socket (recog/recog.h); "exited" when it ends
 * A worker's "spawn" may name a recognizer ("recog":A): its lstm engine then
 * hands its lines to it (engine/lstm/remote.h).
 * Worker, one page (or one batch of pages, batch-pages) at a time:
 *   master -> {"t":"task","id":I,"payload":{...}} | {"t":"exit"}
 *           | {"t":"tasks","tasks":[{"id":I,"payload":{...}},...]}
 *             (a "done" for each, in order)
 *   worker -> {"t":"ready","rss_kb":R,"pss_kb":P} once idle after start
 *   worker -> {"t":"done","id":I,"ok":true,"result":{page result, and
 *              "renderings":{...} when the payload asked for "formats"},
 *              "started":T,"finished":T,"peak_rss_kb":K,"rss_after_kb":K}
 *             | {"t":"done","id":I,"ok":false,"failure":KIND,"error":"reason",...}
 *             (KIND: ocp_failure_name, failure.h; the master retries the
 *             kinds ocp_failure_retried says)
 *
 * Every model shared: the zygote holds an engine per language it has loaded
 * (lang, preload-languages, and each language a worker asked for), and a
 * worker uses those (shared copy-on-write). A language a worker needs and
 * its zygote lacked when it was forked, the worker loads privately, and
 * asks the zygote for it on the wish pipe (one "LANG\n" write, atomic);
 * the zygote loads it between spawns (up to ZYG_MAX_LANGS languages), so
 * workers forked after share it. The worker's answer then carries
 * "recycle":true and the master replaces it once idle: the node converges
 * to one copy of each model.
 *   worker -> zygote (wish pipe): LANG\n
 *
 * Test seam: OCRPOOL_FAULT=crash:TEXT | sleep:SECONDS:TEXT | alloc:MB:TEXT
 * makes a worker crash (SIGSEGV), sleep, or allocate and touch memory on
 * a page whose source contains TEXT; the tests use it to make poison
 * pages and long pages on demand.
 */
#include "core/memstat.h"
#include "pool/page.h"
#include "pool/pool.h"
#include "pool/proto.h"
#include "pool/zygote.h"
#include "engine/lstm/remote.h"
#include "recog/recog.h"
#include "core/error.h"
#include "core/failure.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* An engine open for one language (a '+' joined list, as a task names it). */
typedef struct engine_slot {
    char *lang;
    ocp_engine *eng;
} engine_slot;

/*
 * The zygote's engines, one per language, shared by the workers forked after each was
 * loaded (a worker's copy of this table is the zygote's at its fork). Beyond ZYG_MAX_LANGS
 * a worker keeps loading what it needs privately (and is not recycled for it).
 */
#define ZYG_MAX_LANGS 8
static engine_slot zlangs_[ZYG_MAX_LANGS];
static int n_zlangs_;
/* The wish pipe's write end, in a worker (non-blocking: a full pipe drops the wish). */
static int wish_fd_ = -1;

/* Engines a worker opened for itself: the first language it needed beyond its zygote's
 * stays, later ones take turns in the second slot. */
#define MAX_PRIVATE 2
static void fault(const char *source)
{
    const char *f = getenv("OCRPOOL_FAULT");
    if (!f || !source)
        return;
    char kind[16] = "", text[256] = "";
    double num = 0;
    if (sscanf(f, "crash:%255s", text) == 1 && strstr(source, text)) {
        OCP_LOG(OCP_LOG_WARN, "fault injection: crashing on %s", source);
        raise(SIGSEGV);
    }
    if (sscanf(f, "%15[a-z]:%lf:%255s", kind, &num, text) == 3 && strstr(source, text)) {
        if (strcmp(kind, "sleep") == 0) {
            OCP_LOG(OCP_LOG_WARN, "fault injection: sleeping %.1f s on %s", num, source);
            usleep((useconds_t)(num * 1e6));
        } else if (strcmp(kind, "alloc") == 0) {
            size_t n = (size_t)(num * 1048576);
            OCP_LOG(OCP_LOG_WARN, "fault injection: touching %.0f MB on %s", num, source);
            char *p = malloc(n);
            if (p) {
                for (size_t i = 0; i < n; i += 4096)
                    p[i] = (char)i;
                usleep(300000);
                free(p);
            }
        }
    }
}

/* The zygote's engine for lang, or NULL. */
static ocp_engine *shared_engine(const char *lang)
{
    for (int i = 0; i < n_zlangs_; i++)
        if (strcmp(zlangs_[i].lang, lang) == 0)
            return zlangs_[i].eng;
    return NULL;
}

/* Asks the zygote to load lang for the workers it forks from now on. */
static void wish(const char *lang)
{
    char line[300];
    int n = snprintf(line, sizeof line, "%s\n", lang);
    if (wish_fd_ < 0 || n <= 0 || (size_t)n >= sizeof line)
        return;
    if (write(wish_fd_, line, (size_t)n) != n)
        OCP_LOG(OCP_LOG_DEBUG, "zygote's wish pipe full: %s not asked for", lang);
}

/* The engine for lang: the zygote's (shared), else one of this worker's own (*own set),
 * opened here when it has none, and then asked of the zygote. */
static ocp_engine *engine_for(const ocp_pool_conf *pc, engine_slot *slots, const char *lang,
                              int *own, char *err, size_t errlen)
{
    ocp_engine *shared = shared_engine(lang);
    if (shared)
        return shared;
    *own = 1;
    for (int i = 0; i < MAX_PRIVATE; i++)
        if (slots[i].lang && strcmp(slots[i].lang, lang) == 0)
            return slots[i].eng;
    /* A task's own languages: checked before anything is loaded for them. */
    if (ocp_engine_check_langs(pc->ep.tessdata_dir, lang, pc->ep.max_languages, err, errlen))
        return NULL;
    /* Another language: open it here (private memory), evicting the last extra one. */
    int k = slots[0].lang ? MAX_PRIVATE - 1 : 0;
    if (slots[k].lang) {
        ocp_engine_close(slots[k].eng);
        free(slots[k].lang);
        slots[k].lang = NULL;
    }
    ocp_engine_params ep = pc->ep;
    ep.lang = lang;
    if (ocp_engine_open(pc->engine, &ep, &slots[k].eng, err, errlen))
        return NULL;
    slots[k].lang = ocp_xstrdup(lang);
    wish(lang);
    return slots[k].eng;
}

/* A page a worker was given, on its way: parsed, its document open, its page decoded, read,
 * answered. */
typedef struct wtask {
    const char *id;
    json_t *payload;
    const char *lang; /* the page's, or the pool's */
    ocp_engine *eng;
    ocp_doc *doc;
    unsigned char *inline_bytes;
    ocp_page_task t;
    ocp_page_image img;
    ocp_orient_xform xf; /* how img was turned for the engine */
    ocp_result res;
    int rc;
    char err[600];
    double started;
} wtask;

/* Parses wt's payload and opens its document; on failure wt->rc and wt->err say why. The
 * pages' peak RSS counts from the first page's engine on (*peak_reset), the fault seam's
 * allocations included. */
static void task_open(const ocp_pool_conf *pc, engine_slot *slots, wtask *wt, int *peak_reset,
                      int *own)
{
    json_t *payload = wt->payload;
    const char *source = json_string_value(json_object_get(payload, "source"));
    json_t *jp = json_object_get(payload, "page");
    int page = json_is_integer(jp) ? (int)json_integer_value(jp) : 0;
    json_t *jm = json_object_get(payload, "max_image_size");
    ocp_image_limits lim = pc->lim;
    /* A task may shrink its page, never enlarge it past the node's own max-image-size. */
    if (json_is_integer(jm) && json_integer_value(jm) >= 1 && json_integer_value(jm) <= 65535 &&
        (lim.max_image_size == 0 || json_integer_value(jm) < lim.max_image_size))
        lim.max_image_size = (int)json_integer_value(jm);
    if (!source || page < 0) {
        wt->rc = ocp_errf(OCP_E_DECODE, wt->err, sizeof wt->err,
                          "malformed task: no source or bad page");
        return;
    }
    wt->eng = engine_for(pc, slots, wt->lang, own, wt->err, sizeof wt->err);
    if (!wt->eng) {
        wt->rc = OCP_E_LANG;
        return;
    }
    if (!*peak_reset) {
        ocp_self_reset_peak_rss();
        *peak_reset = 1;
    }
    fault(source);
    if (!(ocp_engine_features(wt->eng) & OCP_FEAT_NO_PIXELS)) {
        json_t *jb = json_object_get(payload, "data_b64");
        if (json_is_string(jb)) {
            /* Inline bytes from a message: decoded here, in the worker, not in the master. */
            size_t n = 0;
            wt->inline_bytes = ocp_b64_decode(json_string_value(jb), json_string_length(jb), &n);
            if (!wt->inline_bytes) {
                wt->rc =
                    ocp_errf(OCP_E_DECODE, wt->err, sizeof wt->err, "inline source: not base64");
                return;
            }
            /* The document reads from these bytes until it is destroyed. */
            wt->rc =
                ocp_doc_open_buffer(wt->inline_bytes, n, &lim, &wt->doc, wt->err, sizeof wt->err);
        } else {
            wt->rc = ocp_doc_open_file(source, &lim, &wt->doc, wt->err, sizeof wt->err);
        }
        if (wt->rc)
            return;
        /* A false width/height must not slip a big page past the memory budget. */
        wt->rc = ocp_page_check_declared(
            wt->doc, page, (long)json_integer_value(json_object_get(payload, "width")),
            (long)json_integer_value(json_object_get(payload, "height")), lim.max_image_size,
            wt->err, sizeof wt->err);
        if (wt->rc)
            return;
    }
    double soft = pc->soft_timeout_s;
    json_t *js = json_object_get(payload, "soft_time_limit");
    if (json_is_number(js) && json_number_value(js) > 0 &&
        (soft <= 0 || json_number_value(js) < soft))
        soft = json_number_value(js);
    wt->t = (ocp_page_task){.id = wt->id,
                            .source = source,
                            .page = page,
                            .lang = wt->lang,
                            .timeout_s = soft,
                            .keep_peak = 1,
                            .orient = &pc->orient};
    ocp_log_set_task(wt->id);
    wt->rc = ocp_page_load(wt->eng, wt->doc, &wt->t, &wt->res, &wt->img, &wt->xf, wt->err,
                           sizeof wt->err);
    ocp_log_set_task(NULL);
}

/* The renderings a message asked for ("formats": ["txt", "hocr", ...]), by name; NULL when
 * it asked for none. */
static json_t *renderings(const ocp_result *res, json_t *formats)
{
    if (json_array_size(formats) == 0)
        return NULL;
    json_t *rend = json_object(), *f;
    size_t i;
    json_array_foreach(formats, i, f)
    {
        const char *fs = json_string_value(f);
        int fmt = fs ? ocp_format_parse(fs) : -1;
        if (fmt <= 0 || (fmt & (fmt - 1)) != 0)
            continue;
        ocp_sb one;
        ocp_sb_init(&one);
        ocp_result_render(res, fmt, &one);
        json_object_set_new(rend, fs, json_string(one.buf));
        ocp_sb_fini(&one);
    }
    return rend;
}

/* Why a page failed, as a kind beside its reason: an allocation refused by the data limit
 * near the hard limit failed for memory, not for the page's content, and the master retries
 * it (and buries it after max-deliveries) as if its watchdog had stopped it. */
static void failure_reply(const ocp_pool_conf *pc, const wtask *wt, json_t *msg)
{
    ocp_failure kind = ocp_failure_of_error(wt->rc);
    char why[700];
    if (pc->hard_memory_limit_mb > 0 &&
        ocp_self_peak_rss_kb() >= pc->hard_memory_limit_mb * 1024 * 8 / 10) {
        kind = OCP_FAIL_MEMORY_LIMIT;
        snprintf(why, sizeof why,
                 "memory limit: the page failed at %ld MB RSS near hard-memory-limit %ld MB (%s)",
                 ocp_self_peak_rss_kb() / 1024, pc->hard_memory_limit_mb, wt->err);
    } else {
        snprintf(why, sizeof why, "%s", wt->err[0] ? wt->err : ocp_strerror(wt->rc));
    }
    if (kind == OCP_FAIL_NONE)
        kind = OCP_FAIL_ENGINE;
    json_object_set_new(msg, "failure", json_string(ocp_failure_name(kind)));
    json_object_set_new(msg, "error", json_string(why));
}

/* The answer for a page: its result as a JSON object (with the renderings its message asked
 * for inside), or its failure's kind and reason. */
static json_t *task_reply(const ocp_pool_conf *pc, wtask *wt)
{
    json_t *msg = json_object();
    json_object_set_new(msg, "t", json_string("done"));
    json_object_set_new(msg, "id", json_string(wt->id));
    json_object_set_new(msg, "ok", json_boolean(wt->rc == 0));
    if (wt->rc == 0) {
        json_t *r = ocp_result_json(&wt->res);
        json_t *rend = renderings(&wt->res, json_object_get(wt->payload, "formats"));
        if (rend)
            json_object_set_new(r, "renderings", rend);
        json_object_set_new(msg, "result", r);
    } else {
        failure_reply(pc, wt, msg);
    }
    json_object_set_new(msg, "started", json_real(wt->started));
    json_object_set_new(msg, "finished", json_real(ocp_wall_now()));
    json_object_set_new(
        msg, "peak_rss_kb",
        json_integer(wt->res.peak_rss_kb > 0 ? wt->res.peak_rss_kb : ocp_self_peak_rss_kb()));
    json_object_set_new(msg, "rss_after_kb", json_integer(ocp_self_rss_kb()));
    return msg;
}

/*
 * Runs the pages the master gave at once (one, or a batch of batch-pages) and answers each,
 * in order. Pages of one language go through the engine together (ocp_engine_ocr_batch: the
 * lstm engine reads their lines in shared forward passes); each page keeps its own failure.
 * Returns non-zero when the master cannot be told.
 */
static int run_tasks(const ocp_pool_conf *pc, engine_slot *slots, int fd, json_t *const *ids,
                     json_t *const *payloads, int n)
{
    wtask *wt = ocp_xcalloc((size_t)n, sizeof *wt);
    double started = ocp_wall_now();
    int rc = 0, peak_reset = 0, own = 0;
    for (int i = 0; i < n; i++) {
        const char *id = json_string_value(ids[i]);
        const char *lang = json_string_value(json_object_get(payloads[i], "lang"));
        wt[i].id = id ? id : "?";
        wt[i].payload = payloads[i];
        wt[i].lang = lang && *lang ? lang : pc->ep.lang;
        wt[i].started = started;
        ocp_result_init(&wt[i].res);
    }
    /* Runs of pages in one language, each opened, read together and answered before the
     * next run opens its engine (which may close another language's). */
    for (int a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && strcmp(wt[b].lang, wt[a].lang) == 0;)
            b++;
        double t0 = ocp_now();
        ocp_batch_page *bp = ocp_xcalloc((size_t)(b - a), sizeof *bp);
        int *who = ocp_xcalloc((size_t)(b - a), sizeof *who), nb = 0;
        for (int i = a; i < b; i++) {
            task_open(pc, slots, &wt[i], &peak_reset, &own);
            if (!wt[i].rc) {
                bp[nb] = (ocp_batch_page){.img = &wt[i].img, .res = &wt[i].res};
                who[nb++] = i;
            }
        }
        if (nb) {
            /* The shortest soft limit of the run applies to each of its pages. */
            ocp_ocr_params op = {.timeout_s = wt[who[0]].t.timeout_s};
            for (int k = 1; k < nb; k++)
                if (wt[who[k]].t.timeout_s > 0 &&
                    (op.timeout_s <= 0 || wt[who[k]].t.timeout_s < op.timeout_s))
                    op.timeout_s = wt[who[k]].t.timeout_s;
            ocp_log_set_task(wt[who[0]].id);
            if (nb > 1)
                OCP_LOG(OCP_LOG_DEBUG, "%d pages read together", nb);
            ocp_engine_ocr_batch(wt[who[0]].eng, bp, nb, &op);
            ocp_log_set_task(NULL);
            for (int k = 0; k < nb; k++) {
                wt[who[k]].rc = bp[k].rc;
                if (bp[k].rc)
                    snprintf(wt[who[k]].err, sizeof wt[who[k]].err, "%s", bp[k].err);
            }
        }
        for (int i = a; i < b; i++)
            ocp_page_finish(&wt[i].res, &wt[i].img, &wt[i].xf, wt[i].rc, t0);
        /* The pages' buffers back to the system before the answers say the size after. */
        malloc_trim(0);
        for (int i = a; i < b && !rc; i++) {
            json_t *reply = task_reply(pc, &wt[i]);
            /* A model of its own that its zygote had room to take (asked for by wish):
             * replaced once idle by a worker that shares the zygote's. */
            if (i == n - 1 && own && n_zlangs_ < ZYG_MAX_LANGS)
                json_object_set_new(reply, "recycle", json_true());
            rc = ocp_proto_send(fd, reply, -1);
            json_decref(reply);
        }
        for (int i = a; i < b; i++) {
            ocp_result_fini(&wt[i].res);
            ocp_doc_destroy(wt[i].doc);
            free(wt[i].inline_bytes);
        }
        free(bp);
        free(who);
    }
    free(wt);
    return rc;
}

/* Puts this worker in its own cgroup under the delegated root, with memory.max. */
static void join_cgroup(const ocp_pool_conf *pc)
{
    if (!pc->cgroup_root || !*pc->cgroup_root || pc->hard_memory_limit_mb <= 0)
        return;
    char dir[4096], path[4200], val[64];
    snprintf(dir, sizeof dir, "%s/ocrpool-worker-%d", pc->cgroup_root, (int)getpid());
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        OCP_LOG_ERR(OCP_LOG_WARN, -errno, "cgroup-root: cannot create %s", dir);
        return;
    }
    const char *files[2] = {"memory.max", "cgroup.procs"};
    snprintf(val, sizeof val, "%ld", pc->hard_memory_limit_mb << 20);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, val, strlen(val)) < 0)
            OCP_LOG_ERR(OCP_LOG_WARN, -errno, "cgroup-root: cannot write %s", path);
        if (fd >= 0)
            close(fd);
        snprintf(val, sizeof val, "%d", (int)getpid());
    }
}

static void worker_main(const ocp_pool_conf *pc, int fd, const char *visible,
                        const char *recog_addr)
{
    engine_slot slots[MAX_PRIVATE] = {{0}};
    ocp_proto_reader rd;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ocp_log_set_role('W');
    /* A stop sent to the whole group (^C, systemd's KillMode, kill -TERM -PGID) is the
     * master's to decide: a warm one lets this page finish. The master ends us by SIGKILL. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN); /* a terminal's ^C goes to the master, which decides */
    signal(SIGQUIT, SIG_DFL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    setenv("CUDA_VISIBLE_DEVICES", visible ? visible : "", 1);
    if (pc->hard_memory_limit_mb > 0) {
        /* A backstop under the master's RSS watchdog: the data segment may grow by the
         * limit beyond what the worker has now. */
        struct rlimit rl;
        ocp_memstat ms;
        long vmdata = ocp_memstat_read(getpid(), 0, &ms) == 0 && ms.data_kb > 0 ? ms.data_kb : 0;
        /* Twice the limit: the data segment counts reserved, untouched memory too, and the
         * master's watchdog on RSS, the real measure, should act first. */
        rl.rlim_cur = rl.rlim_max = (rlim_t)(vmdata + 2 * pc->hard_memory_limit_mb * 1024) * 1024;
        setrlimit(RLIMIT_DATA, &rl);
    }
    join_cgroup(pc);
    if (recog_addr && *recog_addr)
        /* The network runs in the node's shared recognizer (connected on first use; a line
         * it does not read is read here). Lives as long as the worker. */
        ocp_lstm_set_remote(
            ocp_recog_client_forward,
            ocp_recog_client_create(recog_addr, (size_t)pc->recognizer_arena_mb << 20));
    ocp_proto_reader_init(&rd);
    malloc_trim(0);
    ocp_memstat ms;
    ocp_memstat_read(getpid(), 1, &ms);
    json_t *hello = json_pack("{s:s, s:i, s:I, s:I}", "t", "ready", "pid", (int)getpid(), "rss_kb",
                              (json_int_t)ms.rss_kb, "pss_kb", (json_int_t)ms.pss_kb);
    ocp_proto_send(fd, hello, -1);
    json_decref(hello);
    for (;;) {
        json_t *m = NULL;
        int rc = ocp_proto_recv(fd, &rd, &m);
        if (rc) /* the master is gone (a clean end) or spoke nonsense */
            _exit(rc == -EPIPE || rc == -ECONNRESET ? 0 : 1);
        const char *t = json_string_value(json_object_get(m, "t"));
        if (t && strcmp(t, "task") == 0) {
            json_t *id = json_object_get(m, "id"), *payload = json_object_get(m, "payload");
            if (run_tasks(pc, slots, fd, &id, &payload, 1))
                _exit(1);
        } else if (t && strcmp(t, "tasks") == 0) {
            /* A batch: {"t":"tasks","tasks":[{"id":I,"payload":{...}},...]}. */
            json_t *arr = json_object_get(m, "tasks");
            size_t n = json_array_size(arr);
            json_t **ids = ocp_xcalloc(n + 1, sizeof *ids);
            json_t **payloads = ocp_xcalloc(n + 1, sizeof *payloads);
            for (size_t i = 0; i < n; i++) {
                ids[i] = json_object_get(json_array_get(arr, i), "id");
                payloads[i] = json_object_get(json_array_get(arr, i), "payload");
            }
            rc = n ? run_tasks(pc, slots, fd, ids, payloads, (int)n) : 0;
            free(ids);
            free(payloads);
            if (rc)
                _exit(1);
        } else if (t && strcmp(t, "exit") == 0) {
            json_decref(m);
            _exit(0);
        }
        json_decref(m);
    }
}

/* The zygote's children: its workers, until it reaps them. */
typedef struct kids {
    pid_t *pid;
    int n, cap;
} kids;

static void kids_add(kids *k, pid_t p)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 16;
        k->pid = ocp_xrealloc(k->pid, (size_t)k->cap * sizeof *k->pid);
    }
    k->pid[k->n++] = p;
}

static void kids_remove(kids *k, pid_t p)
{
    for (int i = 0; i < k->n; i++)
        if (k->pid[i] == p)
            k->pid[i] = k->pid[--k->n];
}

/* Opens an engine for lang into the zygote's table; 0, or a code with the reason in err. */
static int zygote_add_lang(const ocp_pool_conf *pc, const char *lang, char *err, size_t errlen)
{
    ocp_engine_params ep = pc->ep;
    ocp_engine *eng = NULL;
    if (shared_engine(lang))
        return 0;
    if (n_zlangs_ == ZYG_MAX_LANGS)
        return ocp_errf(OCP_E_LANG, err, errlen, "the zygote holds %d languages already",
                        ZYG_MAX_LANGS);
    ep.lang = lang;
    int rc = ocp_engine_open(pc->engine, &ep, &eng, err, errlen);
    if (rc)
        return rc;
    zlangs_[n_zlangs_++] = (engine_slot){.lang = ocp_xstrdup(lang), .eng = eng};
    return 0;
}

/* Loads preload-languages (comma or space separated, each as --lang names one) beside lang;
 * 0, or a code with the reason (naming the language) in err. */
static int zygote_preload(const ocp_pool_conf *pc, char *err, size_t errlen)
{
    const char *p = pc->preload_langs ? pc->preload_langs : "";
    while (*p) {
        size_t n = strcspn(p, ", ");
        if (n > 0) {
            char lang[256], why[500];
            snprintf(lang, sizeof lang, "%.*s", (int)(n < 255 ? n : 255), p);
            int rc = ocp_engine_check_langs(pc->ep.tessdata_dir, lang, pc->ep.max_languages, why,
                                            sizeof why);
            if (!rc)
                rc = zygote_add_lang(pc, lang, why, sizeof why);
            if (rc)
                return ocp_errf(rc, err, errlen, "preload-languages %s: %s", lang, why);
        }
        p += n;
        p += strspn(p, ", ");
    }
    return 0;
}

/* Loads the engine (and libvips) once, with the heap set up for sharing, for lang and
 * preload-languages; tells the master "ready", or "fatal" and exits. */
static void zygote_load(const ocp_pool_conf *pc, int fd)
{
    char err[600] = "cannot start libvips";
    /* The heap, set before the model loads and inherited by every worker: one arena (libvips's
     * threads would otherwise each keep one), and blocks of 128 KiB and more in their own
     * mappings, given back when freed. The model's large arrays then sit apart from the
     * heap that pages churn, so a worker's page does not copy the pages holding them, and a
     * worker between pages keeps little of its last page. */
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    if (ocp_image_global_init("ocrpool") || zygote_add_lang(pc, pc->ep.lang, err, sizeof err) ||
        zygote_preload(pc, err, sizeof err)) {
        json_t *m = json_pack("{s:s, s:s}", "t", "fatal", "error", err);
        ocp_proto_send(fd, m, -1);
        json_decref(m);
        _exit(OCP_EXIT_FATAL);
    }
    malloc_trim(0);
    /* The pages that loading touched once (libvips's modules linked, model files read) go
     * back to the page cache: a worker faults in what it uses, and fork gives it none. */
    long dropped = ocp_memstat_drop_file_pages();
    OCP_LOG(OCP_LOG_DEBUG, "zygote: %ld KiB of file pages unmapped after loading", dropped);
    json_t *ready = json_pack("{s:s, s:I}", "t", "ready", "rss_kb", (json_int_t)ocp_self_rss_kb());
    ocp_proto_send(fd, ready, -1);
    json_decref(ready);
    OCP_LOG(OCP_LOG_INFO, "zygote ready: engine %s, %s%s%s, RSS %ld KiB", pc->engine, pc->ep.lang,
            n_zlangs_ > 1 ? ", preloaded " : "", n_zlangs_ > 1 ? pc->preload_langs : "",
            ocp_self_rss_kb());
}

/* Reads the workers' wishes (wish(): "LANG\n" lines) and loads each language the zygote
 * lacks, for the workers it forks from now on. A wish that cannot be granted (no room, or
 * the language fails to load) is logged; the worker that asked keeps its own copy. */
static void zygote_wishes(const ocp_pool_conf *pc, int rfd)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(rfd, buf, sizeof buf - 1)) > 0) {
        buf[n] = '\0';
        for (char *save = NULL, *lang = strtok_r(buf, "\n", &save); lang;
             lang = strtok_r(NULL, "\n", &save)) {
            char err[600];
            if (shared_engine(lang))
                continue;
            double t0 = ocp_now();
            if (zygote_add_lang(pc, lang, err, sizeof err)) {
                OCP_LOG(OCP_LOG_WARN, "zygote: %s not loaded for the workers: %s", lang, err);
                continue;
            }
            malloc_trim(0);
            ocp_memstat_drop_file_pages();
            OCP_LOG(OCP_LOG_INFO,
                    "zygote: loaded %s in %.2f s for the workers forked from now on (%d "
                    "languages, RSS %ld KiB)",
                    lang, ocp_now() - t0, n_zlangs_, ocp_self_rss_kb());
        }
    }
}

/* Reaps ended workers and tells the master how each ended. */
static void zygote_reap(int fd, kids *k)
{
    for (;;) {
        int st;
        struct rusage ru;
        pid_t w = wait4(-1, &st, WNOHANG, &ru);
        if (w <= 0)
            return;
        kids_remove(k, w);
        json_t *m = json_pack("{s:s, s:i, s:i, s:I}", "t", "exited", "pid", (int)w, "status", st,
                              "maxrss_kb", (json_int_t)ru.ru_maxrss);
        ocp_proto_send(fd, m, -1);
        json_decref(m);
    }
}

/* The master is gone or done: our workers see their sockets close and end; reap them (so
 * their figures reach our parent's rusage), the stragglers after a grace period by
 * SIGKILL, then go. */
static void zygote_end(kids *k)
{
    for (int t = 0; t < 40; t++) {
        pid_t w;
        while ((w = waitpid(-1, NULL, WNOHANG)) > 0)
            kids_remove(k, w);
        if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
            _exit(0);
        usleep(50000);
    }
    for (int i = 0; i < k->n; i++)
        kill(k->pid[i], SIGKILL);
    while (waitpid(-1, NULL, 0) > 0) {
    }
    _exit(0);
}

/* {"t":"spawn","slot":K,"visible":V}: forks a worker and hands the master its socket. */
static void zygote_spawn(const ocp_pool_conf *pc, int fd, const int wish[2], json_t *m, kids *k)
{
    int slot = (int)json_integer_value(json_object_get(m, "slot"));
    const char *vis = json_string_value(json_object_get(m, "visible"));
    const char *raddr = json_string_value(json_object_get(m, "recog"));
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        OCP_LOG_ERR(OCP_LOG_ERROR, -errno, "socketpair");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fd);
        close(sp[0]);
        close(wish[0]);
        wish_fd_ = wish[1];
        worker_main(pc, sp[1], vis, raddr);
    }
    close(sp[1]);
    if (pid > 0) {
        kids_add(k, pid);
        json_t *r2 = json_pack("{s:s, s:i, s:i}", "t", "spawned", "slot", slot, "pid", (int)pid);
        ocp_proto_send(fd, r2, sp[0]);
        json_decref(r2);
    } else {
        OCP_LOG_ERR(OCP_LOG_ERROR, -errno, "fork");
    }
    close(sp[0]);
}

/* {"t":"recognizer","index":K,"addr":A,"visible":V,...}: forks the device's shared
 * recognizer (recog/recog.h): our child, so that on the CPU it reads with our models
 * (copy-on-write); the master gets its socket ("recog_spawned", SCM_RIGHTS). Nothing of a
 * GPU is made here: a GPU backend starts in the child. */
static void zygote_recognizer(const ocp_pool_conf *pc, int fd, json_t *m, kids *k)
{
    int index = (int)json_integer_value(json_object_get(m, "index"));
    const char *addr = json_string_value(json_object_get(m, "addr"));
    const char *vis = json_string_value(json_object_get(m, "visible"));
    int sp[2];
    if (!addr || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        OCP_LOG_ERR(OCP_LOG_ERROR, -errno, "recognizer: socketpair");
        return;
    }
    ocp_recog_conf rc = {
        .index = index,
        .addr = addr,
        .tessdata_dir = pc->ep.tessdata_dir,
        .langs = pc->ep.lang,
        .batch_lines = (int)json_integer_value(json_object_get(m, "batch")),
        .wait_s = json_number_value(json_object_get(m, "wait_s")),
        .batch_bytes = (double)json_integer_value(json_object_get(m, "batch_mb")) * 1048576.0,
        .max_arena = (size_t)json_integer_value(json_object_get(m, "arena_mb")) << 20,
        .gpu_fraction = pc->gpu_fraction,
        .gpu_max_mb = pc->gpu_max_mb,
        .gpu_growth = pc->gpu_growth,
    };
    if (rc.batch_lines < 1)
        rc.batch_lines = 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd);
        close(sp[0]);
        setenv("CUDA_VISIBLE_DEVICES", vis ? vis : "", 1);
        ocp_recog_main(&rc, sp[1]);
    }
    close(sp[1]);
    if (pid > 0) {
        kids_add(k, pid);
        json_t *r2 =
            json_pack("{s:s, s:i, s:i}", "t", "recog_spawned", "index", index, "pid", (int)pid);
        ocp_proto_send(fd, r2, sp[0]);
        json_decref(r2);
    } else {
        OCP_LOG_ERR(OCP_LOG_ERROR, -errno, "fork");
    }
    close(sp[0]);
}

static void zygote_main(const ocp_pool_conf *pc, int fd)
{
    ocp_proto_reader rd;
    kids k = {0};
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ocp_log_set_role('Z');
    signal(SIGINT, SIG_IGN);
    /* As the workers: a stop is the master's; we end when it closes our socket. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    zygote_load(pc, fd);
    /* The wish pipe: workers write, we read (both ends non-blocking). */
    int wishp[2] = {-1, -1};
    if (pipe2(wishp, O_CLOEXEC | O_NONBLOCK) < 0)
        OCP_LOG_ERR(OCP_LOG_WARN, -errno, "wish pipe (workers will keep their own models)");
    ocp_proto_reader_init(&rd);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {wishp[0], POLLIN, 0}};
        poll(p, wishp[0] >= 0 ? 2 : 1, 100);
        zygote_reap(fd, &k);
        /* Wishes first: a worker replaced for its own model is forked after its model. */
        if (wishp[0] >= 0 && (p[1].revents & POLLIN))
            zygote_wishes(pc, wishp[0]);
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        int r = ocp_proto_fill(&rd, fd);
        if (r == 0 || (r < 0 && r != -EAGAIN))
            zygote_end(&k);
        json_t *m;
        while (ocp_proto_next(&rd, &m) == 0 && m) {
            const char *t = json_string_value(json_object_get(m, "t"));
            if (t && strcmp(t, "spawn") == 0) {
                if (wishp[0] >= 0)
                    zygote_wishes(pc, wishp[0]);
                zygote_spawn(pc, fd, wishp, m, &k);
            } else if (t && strcmp(t, "recognizer") == 0) {
                zygote_recognizer(pc, fd, m, &k);
            }
            json_decref(m);
        }
    }
}

int ocp__zygote_start(const ocp_pool_conf *pc, int *fd, int *pid, char *err, size_t errlen)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return ocp_errf(-errno, err, errlen, "socketpair: %s", strerror(errno));
    fflush(NULL);
    pid_t p = fork();
    if (p < 0) {
        int e = errno;
        close(sp[0]);
        close(sp[1]);
        return ocp_errf(-e, err, errlen, "fork: %s", strerror(e));
    }
    if (p == 0) {
        /* Keep only stdio and our socket: the master's other descriptors (its broker,
         * an older zygote's socket, workers' sockets) must not live on in here. */
        int keep = sp[1];
        if (keep > 3)
            close_range(3, (unsigned)keep - 1, 0);
        close_range((unsigned)keep + 1, ~0U, 0);
        zygote_main(pc, keep);
        _exit(0);
    }
    close(sp[1]);
    /* The master's own start-up pages of the libraries (the dynamic linker's pass over a
     * hundred libraries' symbols and relocations, the engine's and libvips's for the
     * zygote) are mapped here alone for good: back to the page cache with them. */
    ocp_memstat_drop_file_pages();
    *fd = sp[0];
    *pid = (int)p;
    return 0;
}
