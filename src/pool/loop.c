/*
 * loop.c: the master's event loop (loop.h): a table of watched
 * descriptors polled together, and a binary min-heap of timers ordered by
 * due time. Stopping a handle empties its table entry; entries are
 * compacted at the start of the next turn, so a turn never calls a handle
 * stopped during it, and handles started during it wait for the next.
 */
#include "pool/loop.h"
#include "core/util.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>

struct ocp_loop {
    ocp_loop_io **io; /* NULL entries: stopped during this turn */
    struct pollfd *pfd;
    int n_io, cap_io;
    ocp_loop_timer **heap;
    int n_heap, cap_heap;
};

ocp_loop *ocp_loop_create(void)
{
    return ocp_xcalloc(1, sizeof(ocp_loop));
}

void ocp_loop_destroy(ocp_loop *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n_io; i++)
        if (l->io[i])
            l->io[i]->slot = -1;
    for (int i = 0; i < l->n_heap; i++)
        l->heap[i]->heap = -1;
    free(l->io);
    free(l->pfd);
    free(l->heap);
    free(l);
}

void ocp_loop_io_init(ocp_loop_io *io)
{
    io->fd = -1;
    io->events = 0;
    io->cb = NULL;
    io->data = NULL;
    io->slot = -1;
}

void ocp_loop_timer_init(ocp_loop_timer *t)
{
    t->due = 0;
    t->cb = NULL;
    t->data = NULL;
    t->heap = -1;
}

void ocp_loop_io_start(ocp_loop *l, ocp_loop_io *io, int fd, short events, ocp_loop_io_cb cb,
                       void *data)
{
    ocp_loop_io_stop(l, io);
    if (l->n_io == l->cap_io) {
        l->cap_io = l->cap_io ? l->cap_io * 2 : 16;
        l->io = ocp_xrealloc(l->io, (size_t)l->cap_io * sizeof *l->io);
        l->pfd = ocp_xrealloc(l->pfd, (size_t)l->cap_io * sizeof *l->pfd);
    }
    io->fd = fd;
    io->events = events;
    io->cb = cb;
    io->data = data;
    io->slot = l->n_io;
    l->io[l->n_io++] = io;
}

void ocp_loop_io_set(ocp_loop_io *io, short events)
{
    io->events = events;
}

void ocp_loop_io_stop(ocp_loop *l, ocp_loop_io *io)
{
    if (io->slot < 0)
        return;
    if (io->slot < l->n_io && l->io[io->slot] == io)
        l->io[io->slot] = NULL;
    io->slot = -1;
}

/* The heap: heap[0] is due first; each entry's index is kept in its timer. */
static int earlier(const ocp_loop *l, int a, int b)
{
    return l->heap[a]->due < l->heap[b]->due;
}

static void swap_at(ocp_loop *l, int a, int b)
{
    ocp_loop_timer *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap = a;
    l->heap[b]->heap = b;
}

static void sift_up(ocp_loop *l, int i)
{
    while (i > 0 && earlier(l, i, (i - 1) / 2)) {
        swap_at(l, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void sift_down(ocp_loop *l, int i)
{
    for (;;) {
        int c = 2 * i + 1, best = i;
        if (c < l->n_heap && earlier(l, c, best))
            best = c;
        if (c + 1 < l->n_heap && earlier(l, c + 1, best))
            best = c + 1;
        if (best == i)
            return;
        swap_at(l, i, best);
        i = best;
    }
}

void ocp_loop_timer_stop(ocp_loop *l, ocp_loop_timer *t)
{
    int i = t->heap;
    if (i < 0)
        return;
    t->heap = -1;
    l->n_heap--;
    if (i == l->n_heap)
        return;
    ocp_loop_timer *moved = l->heap[l->n_heap];
    l->heap[i] = moved;
    moved->heap = i;
    sift_up(l, i);
    sift_down(l, moved->heap);
}

void ocp_loop_timer_start(ocp_loop *l, ocp_loop_timer *t, double delay_s, ocp_loop_timer_cb cb,
                          void *data)
{
    ocp_loop_timer_stop(l, t);
    if (l->n_heap == l->cap_heap) {
        l->cap_heap = l->cap_heap ? l->cap_heap * 2 : 16;
        l->heap = ocp_xrealloc(l->heap, (size_t)l->cap_heap * sizeof *l->heap);
    }
    t->due = ocp_now() + (delay_s > 0 ? delay_s : 0);
    t->cb = cb;
    t->data = data;
    t->heap = l->n_heap;
    l->heap[l->n_heap++] = t;
    sift_up(l, t->heap);
}

int ocp_loop_timer_active(const ocp_loop_timer *t)
{
    return t->heap >= 0;
}

/* Drops the entries of handles stopped in the last turn. */
static void compact(ocp_loop *l)
{
    int k = 0;
    for (int i = 0; i < l->n_io; i++) {
        if (!l->io[i])
            continue;
        l->io[k] = l->io[i];
        l->io[k]->slot = k;
        k++;
    }
    l->n_io = k;
}

static int run_timers(ocp_loop *l)
{
    int calls = 0, most = l->n_heap;
    double now = ocp_now();
    /* Only timers due at the start, each at most once: one that restarts itself with no
     * delay waits for the next turn. */
    while (calls < most && l->n_heap > 0 && l->heap[0]->due <= now) {
        ocp_loop_timer *t = l->heap[0];
        ocp_loop_timer_stop(l, t);
        t->cb(t);
        calls++;
    }
    return calls;
}

int ocp_loop_run_once(ocp_loop *l, double max_wait_s)
{
    compact(l);
    double wait = max_wait_s;
    if (l->n_heap > 0) {
        double left = l->heap[0]->due - ocp_now();
        if (left < wait)
            wait = left > 0 ? left : 0;
    }
    int n = l->n_io;
    for (int i = 0; i < n; i++)
        l->pfd[i] = (struct pollfd){l->io[i]->events ? l->io[i]->fd : -1, l->io[i]->events, 0};
    int ms = wait > 0 ? (int)ceil(wait * 1000) : 0;
    int r = poll(l->pfd, (nfds_t)n, ms);
    int calls = 0;
    for (int i = 0; r > 0 && i < n; i++) {
        ocp_loop_io *io = l->io[i];
        /* Stopped by an earlier callback of this turn: its owner may be gone. */
        if (!io || !l->pfd[i].revents || l->pfd[i].fd != io->fd)
            continue;
        io->cb(io, l->pfd[i].revents);
        calls++;
    }
    return calls + run_timers(l);
}
