/*
 * util.h: small utilities shared by every module: allocation that aborts on
 * exhaustion (for small, bounded allocations only; anything sized by input
 * is checked against a limit first), a growable string buffer, whole-file
 * reads with a cap, time and memory readings of this process.
 */
#ifndef OCP_CORE_UTIL_H
#define OCP_CORE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most workers one node runs (the concurrency setting's maximum). */
#define OCP_MAX_WORKERS 1024

/* Upper bounds (seconds) of the page-duration histogram's buckets; one more bucket counts
 * the pages above the last. Shared by the master's stats and the metrics exposition. */
#define OCP_DURATION_NB 8
extern const double ocp_duration_le[OCP_DURATION_NB];

/* Allocation: these never return NULL; on exhaustion they log and abort. */
void *ocp_xmalloc(size_t n);
void *ocp_xcalloc(size_t n, size_t size);
void *ocp_xrealloc(void *p, size_t n);
char *ocp_xstrdup(const char *s);
char *ocp_xstrndup(const char *s, size_t n);
char *ocp_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A growable, always NUL-terminated byte buffer. Open type: callers own
 * the struct (ocp_sb_init / ocp_sb_fini) and may read .buf and .len.
 */
typedef struct ocp_sb {
    char *buf;
    size_t len;
    size_t cap;
} ocp_sb;

void ocp_sb_init(ocp_sb *sb);
void ocp_sb_fini(ocp_sb *sb);
void ocp_sb_reset(ocp_sb *sb);
void ocp_sb_append(ocp_sb *sb, const char *s, size_t n);
void ocp_sb_puts(ocp_sb *sb, const char *s);
void ocp_sb_putc(ocp_sb *sb, char c);
void ocp_sb_printf(ocp_sb *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ocp_sb_vprintf(ocp_sb *sb, const char *fmt, va_list ap);
/* Appends s with &, <, >, " and ' escaped for XML/HTML text and attributes. */
void ocp_sb_put_xml(ocp_sb *sb, const char *s);
/* Takes the buffer out of sb (the caller frees it with free()); sb is reset. */
char *ocp_sb_steal(ocp_sb *sb);

/*
 * Reads all of fd into a new buffer (freed with free()). Fails with
 * OCP_E_INPUT_SIZE once more than max bytes arrive, before allocating more.
 */
int ocp_read_fd(int fd, size_t max, char **out, size_t *outlen);

/* Writes all of buf to path (created or truncated, mode 0644) atomically
 * through a temporary file and rename. Returns 0 or -errno. */
int ocp_write_file(const char *path, const void *buf, size_t len);

/* Creates dir and its missing parents with mode (as mkdir -p). Returns 0 or -errno;
 * -EINVAL for a NULL or empty dir. */
int ocp_mkdir_p(const char *dir, unsigned mode);

/* Monotonic clock in seconds. */
double ocp_now(void);

/* A random RFC 4122 version-4 UUID in out (37 bytes with the NUL). */
void ocp_uuid4(char out[37]);

/* Base64 (RFC 4648, with padding). Encode: a new NUL-terminated string. Decode: a new
 * buffer of *outlen bytes (NUL-terminated too), or NULL for text that is not base64
 * (whitespace is skipped; missing padding is accepted). */
char *ocp_b64_encode(const void *buf, size_t len);
unsigned char *ocp_b64_decode(const char *s, size_t len, size_t *outlen);

/* The last path component without its extension ("a/b.c.png" -> "b.c"). New string. */
char *ocp_path_stem(const char *path);

/* Parses a whole decimal integer / floating number; false on junk or overflow. */
bool ocp_parse_i64(const char *s, int64_t *out);
bool ocp_parse_double(const char *s, double *out);
/*
 * A URL as it may be shown (a log line, an error message): a password in its
 * user-info is replaced by "***" ("redis://:***@host:6379/0",
 * "redis://user:***@host"); a URL without one is copied as it is. Writes at
 * most len bytes to buf (len > 0) and returns buf.
 */
const char *ocp_url_shown(const char *url, char *buf, size_t len);
/* Parses 1/0, true/false, yes/no, on/off (any case). */
bool ocp_parse_bool(const char *s, bool *out);

#endif
