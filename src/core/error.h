/*
 * error.h: ocrpool's error codes.
 *
 * Functions return int: 0 on success, a negative value on failure. System
 * errors are -errno; ocrpool's own codes sit below -4000 and come from the
 * single X-macro list below, which also generates ocp_strerror() and
 * ocp_err_name() (libuv's UV_ERRNO_MAP). The readable detail of a failure
 * lives with the object or error buffer that saw it.
 */
#ifndef OCP_CORE_ERROR_H
#define OCP_CORE_ERROR_H

#include <stddef.h>

#define OCP_ERRNO_MAP(X)                                                                           \
    X(USAGE, -4001, "invalid usage")                                                               \
    X(CONFIG, -4002, "invalid configuration")                                                      \
    X(FORMAT, -4003, "unsupported or unrecognised file format")                                    \
    X(DECODE, -4004, "image could not be decoded")                                                 \
    X(TOOBIG, -4005, "image exceeds the pixel limit")                                              \
    X(PAGES, -4006, "document has too many pages")                                                 \
    X(EMPTY, -4007, "empty input")                                                                 \
    X(LANG, -4008, "language data not found")                                                      \
    X(ENGINE, -4009, "OCR engine failure")                                                         \
    X(TIMEOUT, -4010, "page timed out")                                                            \
    X(RANGE, -4011, "value out of range")                                                          \
    X(NOPAGE, -4012, "no such page")                                                               \
    X(INPUT_SIZE, -4013, "input exceeds the size limit")                                           \
    X(BROKER, -4014, "broker unavailable")                                                         \
    X(UNSUPPORTED, -4015, "not supported by this broker")                                          \
    X(MESSAGE, -4016, "malformed message")

enum {
#define OCP_ERR_ENUM(name, code, text) OCP_E_##name = (code),
    OCP_ERRNO_MAP(OCP_ERR_ENUM)
#undef OCP_ERR_ENUM
};

/* A static, readable text for err (ours or -errno). Never NULL. */
const char *ocp_strerror(int err);

/* The symbolic name of err ("OCP_E_DECODE", "ENOENT"). Never NULL. */
const char *ocp_err_name(int err);

/*
 * Formats a message into an error buffer (buf may be NULL, len 0), then
 * returns err so a failure path reads `return ocp_errf(err, buf, len, ...)`.
 */
int ocp_errf(int err, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
