/*
 * master_int.h: the master's state, shared by the files that make up the
 * master (internal to src/pool; nothing outside includes it):
 *
 *   master.c    ocp_pool_run: the loop's turns, signals, reload, shutdown
 *   proc.c      processes: zygotes and workers, spawn, reap, restart
 *   dispatch.c  pages: lease, admit under the memory budget, dispatch,
 *               results in, leases renewed, release and fail
 *   watchdog.c  each busy worker's memory and time, killed when over
 *   stats.c     the node's figures, and the control socket's server
 *   sidecar.c   the command's own process beside the workers (serve's HTTP API)
 *   recognizer.c the shared recognizers (recognizer = shared): started by the zygote on
 *               request, watched, restarted, given up (the workers then read themselves)
 *
 * A held page goes through:
 *
 *   lease_more() --> WAITING --dispatch(): budget + idle worker--> RUNNING
 *                      |                                       |  done ok  --> ack (DONE)
 *                      |                                       |  done, failure kind not
 *                      |                                       |    retried --> fail (FAILED)
 *                      |                                       |  done, retried kind, or
 *                      |                                       |    worker lost --> release
 *                      |                                       |    (READY again, or BURIED
 *                      |                                       |     after max deliveries)
 *                      '--warm/cold stop--> release, delivery not counted
 */
#ifndef OCP_POOL_MASTER_INT_H
#define OCP_POOL_MASTER_INT_H

#include "core/failure.h"
#include "core/util.h"
#include "pool/loop.h"
#include "pool/pool.h"
#include "pool/proto.h"

#include <jansson.h>

enum { H_WAITING, H_RUNNING };
enum { W_STARTING, W_IDLE, W_BUSY, W_EXITING };
#define OCP__SOLO          256   /* pages remembered to run alone */
#define OCP__CTL_CLIENTS   8     /* control clients served at once; more wait in the backlog */
#define OCP__CTL_MAX       65536 /* the largest control request, in bytes */
#define OCP__CTL_DEADLINE  2.0   /* seconds a control client has to ask and read its answer */
#define OCP__WATCH_PERIOD  0.05
#define OCP__LEASE_IDLE    0.5  /* the longest wait between leases while the queue is empty */
#define OCP__SEND_DEADLINE 10.0 /* seconds a worker or zygote has to make room for a message */

typedef struct held {
    ocp_task t;
    int state;
    double est_bytes;    /* estimated peak memory of the page */
    double started;      /* monotonic, when given to a worker */
    double started_wall; /* the same, wall clock (for the results) */
    json_t *payload;     /* parsed once, at lease: sent to the worker as it is */
    char *source;        /* from the payload, for monitor */
    int page;
    double time_limit; /* the page's own hard limit (a Celery message's timelimit), 0 = none */
    struct held *next;
    struct held *bnext; /* the next page of the batch its worker was given */
    int solo;           /* it failed in a batch before: it runs alone */
    int acked_early;    /* acks-late off: acknowledged when given to its worker */
} held;

typedef struct zyg {
    int pid, fd, gen;
    int loading; /* started, its engine not loaded yet (its first message tells) */
    int dead;    /* its socket ended, or it could not load the engine (fatal) */
    int fatal;
    char why[300]; /* when fatal: the engine's error */
    ocp_proto_reader rd;
    ocp_loop_io io;
} zyg;

typedef struct worker {
    int slot, pid, fd, gen, state;
    ocp_proto_reader rd;
    ocp_loop_io io;
    held *task; /* the page it reads, the first of its batch (bnext), or NULL */
    int tasks_done;
    long batch_peak_kb; /* the highest peak its batch's pages reported so far */
    char peak_page[80]; /* the page that reported it */
    int exit_after;     /* send it "exit" once its batch is answered */
    long baseline_kb;   /* PSS when idle, for the budget */
    long sampled_peak_kb;
    ocp_failure kill_kind; /* why the master killed it (OCP_FAIL_NONE: it did not) */
    char kill_reason[300];
    int eof;
    int reaped; /* the zygote said it ended: nothing is sent to it, its pid is not ours */
    struct worker *next;
} worker;

/* A shared recognizer (recognizer.c; recog/recog.h), one per device:
 *
 *   R_DOWN --tend: a current zygote, restart time reached--> R_ASKED (spawn asked of it)
 *   R_ASKED --"recog_spawned" + its socket--> R_LOADING --"ready"--> R_READY
 *   R_ASKED/LOADING/READY --its socket ends, or the zygote says it exited--> R_DOWN
 *     (restart after a doubling delay; after OCP__RECOG_DEATHS quick deaths in a row, or a
 *      "fatal": the node falls back to reading in the workers, logged and counted)
 */
enum { R_DOWN, R_ASKED, R_LOADING, R_READY };
#define OCP__MAX_RECOG    16
#define OCP__RECOG_DEATHS 5    /* quick deaths in a row before the node falls back */
#define OCP__RECOG_QUICK  10.0 /* a recognizer that dies sooner than this died quickly */

typedef struct recognizer {
    int index, state, pid, fd, zgen;
    int gone_pid; /* the last one's pid, asked again before its zygote said how it ended */
    char addr[64];
    char visible[128]; /* its device's CUDA_VISIBLE_DEVICES ("" on the CPU) */
    ocp_proto_reader rd;
    ocp_loop_io io;
    double started, restart_at;
    int quick_deaths;
    long restarts;
    json_t *stats; /* its last figures ({"t":"stats",...}), or NULL */
    long pss_kb;   /* its PSS at its last figures: the budget counts it as a worker's */
    double rate;   /* lines/s over the last figures */
    long last_lines;
    double last_at;
} recognizer;

typedef struct ctl_client ctl_client;

typedef struct master {
    ocp_pool_conf pc;
    int pc_owned; /* pc came from a reload: its devices are ours to free */
    const ocp_pool_hooks *hooks;
    ocp_broker *b;
    ocp_loop *loop;
    char owner[160];
    zyg z[2]; /* current and, during a reload, the previous or the next */
    int nz;
    int gen;               /* the current generation: new workers come from its zygote */
    int last_gen;          /* the newest generation given to a zygote */
    ocp_pool_conf next_pc; /* a reload's configuration, while its zygote loads */
    int reloading;
    worker *workers;
    held *held;
    int n_held;
    int draining, cold;
    int spawn_failures;
    double spawn_backoff_until;
    /* The periodic jobs. */
    ocp_loop_timer lease_timer, renew_timer, watch_timer, expire_timer;
    double lease_interval; /* grows while the queue is empty, up to OCP__LEASE_IDLE */
    int lease_failing;     /* the last lease failed (said once, until it works again) */
    int answers_batch;     /* a broker batch holds this turn's answers (dispatch.c) */
    /* The control socket and the figures it reports. */
    int ctl_fd;
    ocp_loop_io ctl_io;
    char ctl_path[256];
    ctl_client *clients;
    int n_clients;
    double started_wall, started_mono;
    long pages_done, pages_failed;
    double dur_sum;
    long peak_max_kb;                             /* the highest page peak RSS seen */
    long dur_buckets[OCP_DURATION_NB + 1];        /* page durations by ocp_duration_le, and more */
    long recycles_kind[OCP_FAIL__COUNT];          /* workers killed or lost, by failure kind */
    long recycles_max_tasks, recycles_max_memory; /* Celery's replacements after a page */
    /* Pages whose batch failed as a whole (a crash, a limit): run alone next time, so that
     * only a page that fails alone is counted (and buried) for it. A ring of ids. */
    char *solo[OCP__SOLO];
    int solo_next;
    /* The sidecar (pool.h; sidecar.c): its program, process, restarts and back-off. */
    const char *side_path; /* NULL = none */
    char *const *side_argv;
    char side_name[64];
    int side_pid;        /* 0 = not running */
    double side_started; /* monotonic, when it was forked */
    double side_delay;   /* the next restart's delay */
    long side_restarts;
    char side_why[300]; /* set when it ended with the fatal status: the node's error */
    ocp_loop_timer side_timer;
    /* The shared recognizers (pc.recognizer_shared), and the fallback to reading in the
     * workers when they cannot run. */
    recognizer rec[OCP__MAX_RECOG];
    int n_rec;
    int rec_fallback;
    long rec_fallbacks;
    char rec_why[300];
} master;

/* Requests from the control socket, acted on like the signals (master.c). */
void ocp__master_request_stop(int cold);
void ocp__master_request_reload(void);
/* A reload's zygote loaded its engine: its generation and configuration take over. */
void ocp__reload_commit(master *m, zyg *z);
/* A reload's zygote could not load its engine: the running configuration stays. */
void ocp__reload_abandon(master *m, zyg *z);

/* proc.c */
zyg *ocp__current_zyg(master *m);
/* Forks a zygote of generation gen for pc. With wait, waits until its engine is loaded (0,
 * or the error with err); without, returns at once and the loop hears of it (a reload's
 * zygote, once loaded, makes its generation current: ocp__reload_commit). */
int ocp__start_zygote(master *m, const ocp_pool_conf *pc, int gen, int wait, char *err,
                      size_t errlen);
void ocp__retire_zygote(master *m, int i);
int ocp__live_workers(const master *m, int gen);
void ocp__spawn_missing(master *m);
/* Sends a message (borrowed) to w, within OCP__SEND_DEADLINE; a worker that does not take
 * it is lost (ocp__worker_lost). 0 or the error. */
int ocp__send_worker(master *m, worker *w, json_t *msg);
void ocp__send_exit(master *m, worker *w);
/* Lets w go as broken (it sent nonsense, or does not read): killed, its pages lost as
 * CRASHED with why when the zygote says it ended. */
void ocp__worker_lost(master *m, worker *w, const char *why);
void ocp__free_worker(master *m, worker *w);
/* Zygotes that died or whose generation has no worker left go; a lost current one is
 * started again. Returns 0, or an error (with err) when a new zygote cannot start. */
int ocp__tend_zygotes(master *m, char *err, size_t errlen);

/* dispatch.c */
int ocp__capacity(const master *m);
int ocp__batch_len(const worker *w);
void ocp__drop_held(master *m, held *h);
void ocp__release_task(master *m, held *h, ocp_failure kind, const char *reason, int uncount);
void ocp__add_solo(master *m, const char *id);
void ocp__batch_done(master *m, worker *w);
void ocp__worker_readable(ocp_loop_io *io, short revents);
void ocp__dispatch(master *m);
double ocp__in_flight_bytes(const master *m);
/* Starts the lease, renew and expiry timers. */
void ocp__dispatch_start(master *m);
/* Asks the broker for more pages at the next turn (a worker is free). */
void ocp__lease_soon(master *m);

/* watchdog.c */
void ocp__watchdog_start(master *m);
/* A worker became busy: the watchdog's timer runs (until no worker is busy). */
void ocp__watchdog_busy(master *m);

/* stats.c */
json_t *ocp__build_stats(master *m);
/* The answer to a control request (req borrowed: {"cmd": "stats" | "stop" | "stop-now" |
 * "reload" | "scale", "n": N}): always an object with "ok"; new reference. Stop and reload
 * only set the flags the loop reads (ocp__master_request_*); scale sets the concurrency and
 * sends idle workers beyond it "exit". */
json_t *ocp__control_answer(master *m, json_t *req);
/* One turn of a control client's reading: reads what fd has into rd, drops a request over
 * OCP__CTL_MAX, and answers a whole one (ocp__control_answer). 1: *out is the framed answer
 * (new, free()), *out_len its size; 0: the rest later; -1: the client is to be dropped (it
 * ended, sent too much or not our protocol, or the answer cannot be framed). */
int ocp__control_read(master *m, ocp_proto_reader *rd, int fd, unsigned char **out,
                      size_t *out_len);
/* Listens on the control socket (a warning when it cannot). */
void ocp__control_start(master *m);
void ocp__control_stop(master *m);

/* recognizer.c */
/* Plans pc's recognizers (one per device; one on the CPU), when pc asks for them. */
void ocp__recog_init(master *m);
/* After each turn: starts (or restarts, after its back-off) each recognizer that is down,
 * from the current zygote. */
void ocp__recog_tend(master *m);
/* The zygote's message about a recognizer ("recog_spawned" or "exited" with its pid): 1 when
 * it was about one (taken), 0 when not. */
int ocp__recog_zygote_msg(master *m, zyg *z, json_t *msg);
/* The recognizer address worker slot `slot` reads through ("" = none: it reads itself). */
const char *ocp__recog_addr_for(const master *m, int slot);
/* The recognizers' PSS, in bytes: the memory budget counts it as it counts a worker's. */
double ocp__recog_bytes(const master *m);
/* Their figures, for stats (monitor, /metrics, the dashboard). New reference. */
json_t *ocp__recog_json(const master *m);
/* Closes their sockets (they end, and their zygote reaps them). */
void ocp__recog_stop(master *m);

/* sidecar.c */
/* Forks pc's sidecar, when it has one. */
void ocp__sidecar_start(master *m);
/* After each turn: reaps a sidecar that ended and schedules its restart (with back-off), or,
 * when it ended with OCP_EXIT_FATAL, sets side_why and asks for a warm stop. */
void ocp__sidecar_tend(master *m);
/* Stops it (SIGTERM, then SIGKILL after a grace) and reaps it; no restart after. */
void ocp__sidecar_stop(master *m);

#endif
