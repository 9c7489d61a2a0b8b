/*
 * memstat.c: the one reader of /proc/PID/status, /proc/PID/smaps_rollup
 * and /proc/meminfo (memstat.h): each is "Key: value" lines, read by field();
 * and of /proc/PID/statm for the RSS alone; /proc/self/smaps, mapping by
 * mapping, for ocp_memstat_drop_file_pages; and the writer of
 * /proc/self/clear_refs (the peak's reset).
 */
#include "core/memstat.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static long field(const char *buf, const char *name)
{
    const char *p = buf;
    size_t n = strlen(name);
    while ((p = strstr(p, name)) != NULL) {
        if ((p == buf || p[-1] == '\n') && p[n] == ':')
            return strtol(p + n + 1, NULL, 10);
        p += n;
    }
    return -1;
}

static int slurp(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, len - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    buf[n] = '\0';
    return 0;
}

/* statm's text ("size resident shared ..." in pages): the resident size in KiB, or -1. */
static long statm_rss(const char *buf)
{
    const char *p = buf;
    char *end;
    strtol(p, &end, 10);
    if (end == p)
        return -1;
    p = end;
    long pages = strtol(p, &end, 10);
    if (end == p || pages < 0)
        return -1;
    return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

/* From /proc/PID/statm: the same figure as status's VmRSS, which the kernel takes longer to
 * write (status has some 60 lines). */
long ocp_memstat_rss(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    return slurp(path, buf, sizeof buf) ? -1 : statm_rss(buf);
}

/* The two /proc/self files a worker reads and writes for each page, kept open: their opens
 * and closes were four of a null page's ten system calls in a worker. Opened on first use;
 * a forked child closes the copies it inherits (they name its parent) and opens its own. */
enum { SELF_STATM, SELF_CLEAR_REFS, SELF_FILES };
static int self_fd[SELF_FILES] = {-1, -1};

static void self_forget(void)
{
    for (int i = 0; i < SELF_FILES; i++)
        if (self_fd[i] >= 0) {
            close(self_fd[i]);
            self_fd[i] = -1;
        }
}

static int self_open(int which)
{
    static int registered;
    if (!registered) {
        pthread_atfork(NULL, NULL, self_forget);
        registered = 1;
    }
    if (self_fd[which] < 0)
        self_fd[which] = which == SELF_STATM ? open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
                                             : open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    return self_fd[which];
}

long ocp_self_rss_kb(void)
{
    char buf[256];
    int fd = self_open(SELF_STATM);
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1; /* from 0: written afresh */
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return statm_rss(buf);
}

/* getrusage's ru_maxrss: the larger of the address space's high-water RSS (status's VmHWM,
 * which clear_refs resets) and, in a process that exec'd, the peak of the image before the
 * exec (a forked worker has none); read without writing status out as text. */
long ocp_self_peak_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) ? -1 : ru.ru_maxrss;
}

int ocp_self_reset_peak_rss(void)
{
    int fd = self_open(SELF_CLEAR_REFS);
    if (fd < 0)
        return -errno;
    return write(fd, "5", 1) == 1 ? 0 : -errno;
}

int ocp_memstat_read(pid_t pid, int with_pss, ocp_memstat *m)
{
    char path[64], buf[4096];
    int rc;
    m->rss_kb = m->peak_rss_kb = m->swap_kb = m->data_kb = -1;
    m->pss_kb = m->shared_kb = m->private_kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if ((rc = slurp(path, buf, sizeof buf)))
        return rc;
    m->rss_kb = field(buf, "VmRSS");
    m->peak_rss_kb = field(buf, "VmHWM");
    m->swap_kb = field(buf, "VmSwap");
    m->data_kb = field(buf, "VmData");
    if (!with_pss)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    if (slurp(path, buf, sizeof buf))
        return 0;
    m->pss_kb = field(buf, "Pss");
    long sc = field(buf, "Shared_Clean"), sd = field(buf, "Shared_Dirty");
    long pc = field(buf, "Private_Clean"), pd = field(buf, "Private_Dirty");
    if (sc >= 0 && sd >= 0)
        m->shared_kb = sc + sd;
    if (pc >= 0 && pd >= 0)
        m->private_kb = pc + pd;
    return 0;
}

int ocp_memstat_system(ocp_sysmem *s)
{
    char buf[8192];
    int rc;
    s->total_kb = s->available_kb = s->swap_total_kb = s->swap_free_kb = -1;
    if ((rc = slurp("/proc/meminfo", buf, sizeof buf)))
        return rc;
    s->total_kb = field(buf, "MemTotal");
    s->available_kb = field(buf, "MemAvailable");
    s->swap_total_kb = field(buf, "SwapTotal");
    s->swap_free_kb = field(buf, "SwapFree");
    return 0;
}

/* One mapping of /proc/self/smaps that ocp_memstat_drop_file_pages may drop. */
typedef struct drop_range {
    unsigned long lo, hi;
    long rss_kb;
} drop_range;

long ocp_memstat_drop_file_pages(void)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return -errno;
    drop_range *r = NULL, cur = {0};
    size_t n = 0, cap = 0;
    int candidate = 0, anon = 0;
    long rc = 0;
    char *line = NULL;
    size_t len = 0;
    for (;;) {
        ssize_t got = getline(&line, &len, f);
        unsigned long lo, hi, ino;
        char perms[8];
        int path = 0;
        int header = got > 0 &&
                     sscanf(line, "%lx-%lx %7s %*s %*s %lu %n", &lo, &hi, perms, &ino, &path) == 4;
        if (got <= 0 || header) {
            /* The previous mapping is complete: keep it if it qualified. */
            if (candidate && !anon && cur.rss_kb > 0) {
                if (n == cap) {
                    size_t c = cap ? 2 * cap : 256;
                    drop_range *t = realloc(r, c * sizeof *t);
                    if (!t) {
                        rc = -ENOMEM;
                        break;
                    }
                    r = t;
                    cap = c;
                }
                r[n++] = cur;
            }
            if (got <= 0)
                break;
            /* A private read-only mapping of a regular file (not a device, not a deleted or
             * memfd file): its pages are the file's, to be read again. */
            const char *name = line + path;
            candidate = perms[0] == 'r' && perms[1] == '-' && perms[3] == 'p' && ino != 0 &&
                        name[0] == '/' && strncmp(name, "/dev/", 5) != 0 &&
                        !strstr(name, "(deleted)");
            anon = 0;
            cur = (drop_range){lo, hi, 0};
        } else if (strncmp(line, "Rss:", 4) == 0) {
            cur.rss_kb = strtol(line + 4, NULL, 10);
        } else if (strncmp(line, "Anonymous:", 10) == 0) {
            anon = strtol(line + 10, NULL, 10) != 0;
        } else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " lo")) {
            candidate = 0; /* locked: keep it in memory as asked */
        }
    }
    free(line);
    fclose(f);
    for (size_t i = 0; i < n && rc >= 0; i++)
        if (madvise((void *)r[i].lo, r[i].hi - r[i].lo, MADV_DONTNEED) == 0)
            rc += r[i].rss_kb;
    free(r);
    return rc;
}
