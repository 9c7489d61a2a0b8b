/*
 * loop.h: the master's event loop: descriptors watched with poll(), and
 * timers kept in one binary heap (the earliest first), as libuv's
 * uv_timer_t and nginx's event timers. Single-threaded; callbacks run from
 * ocp_loop_run_once().
 *
 * Handles (ocp_loop_io, ocp_loop_timer) are owned by the caller, who
 * embeds them in its own structures; the loop only points at them while
 * they are started. Stop a handle before freeing it. A handle stopped (or
 * freed after stopping) inside a callback is never called in that turn,
 * so a callback may free another handle's owner.
 */
#ifndef OCP_POOL_LOOP_H
#define OCP_POOL_LOOP_H

#include <stddef.h>

typedef struct ocp_loop ocp_loop;
typedef struct ocp_loop_io ocp_loop_io;
typedef struct ocp_loop_timer ocp_loop_timer;

/* Called with poll()'s revents for the descriptor. */
typedef void (*ocp_loop_io_cb)(ocp_loop_io *io, short revents);
/* Called once when the timer is due; the timer is stopped by then (restart it to repeat). */
typedef void (*ocp_loop_timer_cb)(ocp_loop_timer *t);

/* A watched descriptor. Open type; fields are the loop's while it is started. */
struct ocp_loop_io {
    int fd;
    short events; /* POLLIN, POLLOUT */
    ocp_loop_io_cb cb;
    void *data; /* the caller's */
    int slot;   /* index in the loop's table, -1 when stopped */
};

/* A one-shot timer. Open type; fields are the loop's while it is started. */
struct ocp_loop_timer {
    double due; /* monotonic seconds (ocp_now) */
    ocp_loop_timer_cb cb;
    void *data; /* the caller's */
    int heap;   /* index in the loop's heap, -1 when stopped */
};

/* A new loop (ocp_loop_destroy). */
ocp_loop *ocp_loop_create(void);
/* Frees the loop; handles still started are forgotten, not called. NULL does nothing. */
void ocp_loop_destroy(ocp_loop *l);

/* Initialises a handle as stopped (call once before its first start). */
void ocp_loop_io_init(ocp_loop_io *io);
void ocp_loop_timer_init(ocp_loop_timer *t);

/* Watches fd for events (restarting io when it is started). */
void ocp_loop_io_start(ocp_loop *l, ocp_loop_io *io, int fd, short events, ocp_loop_io_cb cb,
                       void *data);
/* Changes the events of a started io (0 = none for now). */
void ocp_loop_io_set(ocp_loop_io *io, short events);
/* Stops watching; safe on a stopped io. */
void ocp_loop_io_stop(ocp_loop *l, ocp_loop_io *io);

/* Calls cb after delay_s seconds (restarting t when it is started). */
void ocp_loop_timer_start(ocp_loop *l, ocp_loop_timer *t, double delay_s, ocp_loop_timer_cb cb,
                          void *data);
/* Stops t; safe on a stopped timer. */
void ocp_loop_timer_stop(ocp_loop *l, ocp_loop_timer *t);
int ocp_loop_timer_active(const ocp_loop_timer *t);

/*
 * One turn: waits for a descriptor or the next timer (at most max_wait_s),
 * then calls the ready descriptors' callbacks and the due timers'.
 * Returns the number of callbacks called.
 */
int ocp_loop_run_once(ocp_loop *l, double max_wait_s);

#endif
