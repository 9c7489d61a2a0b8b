/*
 * memstat.c: the one reader of /proc/PID/status, /proc/PID/smaps_rollup
 * and /proc/meminfo (memstat.h): each is "Key: value" lines, read by field();
 * and of /proc/PID/statm for the RSS alone.
 */
#include "core/memstat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* From /proc/PID/statm ("size resident shared ..." in pages): the same figure as status's
 * VmRSS, which the kernel takes longer to write (status has some 60 lines). */
long ocp_memstat_rss(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    if (slurp(path, buf, sizeof buf))
        return -1;
    char *p = buf, *end;
    strtol(p, &end, 10);
    if (end == p)
        return -1;
    p = end;
    long pages = strtol(p, &end, 10);
    if (end == p || pages < 0)
        return -1;
    return pages * (sysconf(_SC_PAGESIZE) / 1024);
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
