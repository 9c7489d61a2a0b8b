/*
 * memstat.h: the memory of a process as the kernel reports it:
 * /proc/PID/status (RSS, peak RSS, swap) and /proc/PID/smaps_rollup (PSS,
 * which shares each shared page among the processes that map it, so the
 * PSS of a pool adds up to what it really costs; RSS counts shared model
 * pages once per worker); and the machine's memory from /proc/meminfo.
 * Every one of these files is read by one "Key: value" reader.
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
/* This process's resident set: current and peak (VmRSS from statm; VmHWM as getrusage's
 * ru_maxrss, which a process that exec'd starts at its former image's peak) in KiB, or -1.
 * statm is read through a descriptor kept open (a worker asks once a page). */
long ocp_self_rss_kb(void);
long ocp_self_peak_rss_kb(void);
/* Resets VmHWM to the current RSS (writes 5 to /proc/self/clear_refs, kept open).
 * Returns 0, or -errno where the kernel does not allow it. */
int ocp_self_reset_peak_rss(void);

/*
 * Drops this process's page-table entries for its read-only private file mappings that hold
 * no private copy of a page (no "Anonymous" page in smaps: never written, not relocated):
 * their pages stay in the page cache and come back on the next touch, as a minor fault.
 * A process that touched many such pages once (the dynamic linker's pass over the symbol
 * tables and relocations of a hundred libraries, a model file read while loading) keeps
 * them mapped, alone, for its whole life; fork does not copy them, so no child shares them
 * and each counts whole in the process's PSS. Call it with no other thread mapping or
 * unmapping (after start-up, after a load). Returns the KiB of RSS dropped, or -errno.
 */
long ocp_memstat_drop_file_pages(void);

/* The machine's memory (/proc/meminfo). Open type; KiB, -1 when unknown. */
typedef struct ocp_sysmem {
    long total_kb, available_kb, swap_total_kb, swap_free_kb;
} ocp_sysmem;

/* Reads the machine's figures. 0 or -errno (then every figure is -1). */
int ocp_memstat_system(ocp_sysmem *s);

#endif
