/*
 * log.c: writes log lines to stderr (log.h).
 */
#include "core/log.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int ocp_log_level = OCP_LOG_WARN;

static char log_role = 'C';
static char log_task[64];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void ocp_log_set_role(char role)
{
    log_role = role;
}

void ocp_log_set_task(const char *id)
{
    if (!id)
        log_task[0] = '\0';
    else
        snprintf(log_task, sizeof log_task, "%s", id);
}

int ocp_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void ocp_log_write(int level, int err, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n,
                          ".%03ldZ %d %c %s%s%s%s: ", (long)(tv.tv_usec / 1000), (int)getpid(),
                          log_role, log_task[0] ? "[" : "", log_task, log_task[0] ? "] " : "",
                          level_names[level < 0   ? 0
                                      : level > 3 ? 3
                                                  : level]);
    if (n < sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
        if (w > 0)
            n += (size_t)w;
    }
    if (err && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n, ": %s", ocp_strerror(err));
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so lines of concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
