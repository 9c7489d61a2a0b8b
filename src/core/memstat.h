/*
 * memstat.h: the memory of a process as the kernel reports it:
 * /proc/PID/status (RSS, peak RSS, swap) and /proc/PID/smaps_rollup (PSS,
 * which shares each shared page among the processes that map it, so the
 * PSS of a pool adds up to what it really costs; RSS counts shared model
 * pages once per worker).
 */
#ifndef OCP_CORE_MEMSTAT_H
#define OCP_CORE_MEMSTAT_H

#include <sys/types.h>

/* Open type; every figure in KiB, -1 when unknown. */
typedef struct ocp_memstat {
    long rss_kb, peak_rss_kb, swap_kb, data_kb; /* data_kb: VmData, the data segment */
    long pss_kb, shared_kb, private_kb;
} ocp_memstat;

/* Reads pid's figures; with_pss also reads smaps_rollup (slower). 0 or -errno. */
int ocp_memstat_read(pid_t pid, int with_pss, ocp_memstat *m);
/* Just VmRSS in KiB, or -1 (cheap: for the watchdog). */
long ocp_memstat_rss(pid_t pid);

#endif
