/*
 * log.h: the one logging module (Redis's serverLog, nginx's ngx_log_error).
 *
 * Each line carries the time, the pid, the process role (M master, Z zygote,
 * W worker, H http, C command line) and the current task id when there is
 * one. OCP_LOG checks the level before it evaluates its arguments.
 */
#ifndef OCP_CORE_LOG_H
#define OCP_CORE_LOG_H

enum ocp_log_level { OCP_LOG_ERROR = 0, OCP_LOG_WARN, OCP_LOG_INFO, OCP_LOG_DEBUG };

extern int ocp_log_level;

#define OCP_LOG(lvl, ...)                                                                          \
    do {                                                                                           \
        if ((lvl) <= ocp_log_level)                                                                \
            ocp_log_write((lvl), 0, __VA_ARGS__);                                                  \
    } while (0)

/* As OCP_LOG, appending ": strerror(err)" (err is -errno or an ocrpool code). */
#define OCP_LOG_ERR(lvl, err, ...)                                                                 \
    do {                                                                                           \
        if ((lvl) <= ocp_log_level)                                                                \
            ocp_log_write((lvl), (err), __VA_ARGS__);                                              \
    } while (0)

void ocp_log_write(int level, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The role letter printed on each line (default 'C'). */
void ocp_log_set_role(char role);

/* The task id printed on each line; the string is copied; NULL clears it. */
void ocp_log_set_task(const char *id);

/* Parses "error", "warn", "info", "debug"; returns the level or -1. */
int ocp_log_parse_level(const char *name);

#endif
