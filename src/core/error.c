/*
 * error.c: the text and names behind ocrpool's error codes (error.h).
 */
#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *ocp_strerror(int err)
{
    switch (err) {
#define OCP_ERR_TEXT(name, code, text)                                                             \
    case code:                                                                                     \
        return text;
        OCP_ERRNO_MAP(OCP_ERR_TEXT)
#undef OCP_ERR_TEXT
    default:
        break;
    }
    if (err < 0 && err > -4000)
        return strerror(-err);
    return "unknown error";
}

const char *ocp_err_name(int err)
{
    switch (err) {
#define OCP_ERR_NAME(name, code, text)                                                             \
    case code:                                                                                     \
        return "OCP_E_" #name;
        OCP_ERRNO_MAP(OCP_ERR_NAME)
#undef OCP_ERR_NAME
    default:
        break;
    }
    if (err < 0 && err > -4000) {
        const char *n = strerrorname_np(-err);
        return n ? n : "EUNKNOWN";
    }
    return "UNKNOWN";
}

int ocp_errf(int err, char *buf, size_t len, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return err;
}
