/*
 * util.c: allocation, string buffers, file and process helpers (util.h).
 */
#include "core/util.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    OCP_LOG(OCP_LOG_ERROR, "out of memory allocating %zu bytes", n);
    abort();
}

void *ocp_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *ocp_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *ocp_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *ocp_xstrdup(const char *s)
{
    return ocp_xstrndup(s, strlen(s));
}

char *ocp_xstrndup(const char *s, size_t n)
{
    char *p = ocp_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ocp_xasprintf(const char *fmt, ...)
{
    ocp_sb sb;
    va_list ap;
    ocp_sb_init(&sb);
    va_start(ap, fmt);
    ocp_sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    return ocp_sb_steal(&sb);
}

void ocp_sb_init(ocp_sb *sb)
{
    sb->cap = 64;
    sb->len = 0;
    sb->buf = ocp_xmalloc(sb->cap);
    sb->buf[0] = '\0';
}

void ocp_sb_fini(ocp_sb *sb)
{
    free(sb->buf);
    sb->buf = NULL;
    sb->len = sb->cap = 0;
}

void ocp_sb_reset(ocp_sb *sb)
{
    sb->len = 0;
    sb->buf[0] = '\0';
}

static void sb_reserve(ocp_sb *sb, size_t extra)
{
    if (sb->len + extra + 1 <= sb->cap)
        return;
    size_t cap = sb->cap;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    sb->buf = ocp_xrealloc(sb->buf, cap);
    sb->cap = cap;
}

void ocp_sb_append(ocp_sb *sb, const char *s, size_t n)
{
    sb_reserve(sb, n);
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

void ocp_sb_puts(ocp_sb *sb, const char *s)
{
    ocp_sb_append(sb, s, strlen(s));
}

void ocp_sb_putc(ocp_sb *sb, char c)
{
    ocp_sb_append(sb, &c, 1);
}

void ocp_sb_vprintf(ocp_sb *sb, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    if ((size_t)n >= sb->cap - sb->len) {
        sb_reserve(sb, (size_t)n);
        vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    }
    sb->len += (size_t)n;
}

void ocp_sb_printf(ocp_sb *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ocp_sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

void ocp_sb_put_xml(ocp_sb *sb, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            ocp_sb_puts(sb, "&amp;");
            break;
        case '<':
            ocp_sb_puts(sb, "&lt;");
            break;
        case '>':
            ocp_sb_puts(sb, "&gt;");
            break;
        case '"':
            ocp_sb_puts(sb, "&quot;");
            break;
        case '\'':
            ocp_sb_puts(sb, "&#39;");
            break;
        default:
            /* Control characters other than tab/newline are not allowed in XML 1.0. */
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n' && *s != '\r')
                break;
            ocp_sb_putc(sb, *s);
        }
    }
}

char *ocp_sb_steal(ocp_sb *sb)
{
    char *p = sb->buf;
    sb->buf = NULL;
    sb->len = sb->cap = 0;
    return p;
}

int ocp_read_fd(int fd, size_t max, char **out, size_t *outlen)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                free(buf);
                return OCP_E_INPUT_SIZE;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            free(buf);
            return e;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > max) {
            free(buf);
            return OCP_E_INPUT_SIZE;
        }
    }
    *out = buf;
    *outlen = len;
    return 0;
}

int ocp_write_file(const char *path, const void *buf, size_t len)
{
    /* The temporary file beside path gets a fresh, unguessable name and is made new
     * (O_EXCL, O_NOFOLLOW): a name or symlink planted there is never written through. */
    char *tmp = NULL, id[37];
    int fd = -1, err = 0;
    for (int k = 0; k < 8 && fd < 0; k++) {
        free(tmp);
        ocp_uuid4(id);
        tmp = ocp_xasprintf("%s.tmp.%s", path, id);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        err = -errno;
        goto out;
    }
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    if (close(fd) < 0 && !err)
        err = -errno;
    if (!err && rename(tmp, path) < 0)
        err = -errno;
    if (err)
        unlink(tmp);
out:
    free(tmp);
    return err;
}

int ocp_mkdir_p(const char *dir, unsigned mode)
{
    /* An empty name is no folder (and the walk below starts after its first byte). */
    if (!dir || !*dir)
        return -EINVAL;
    char *p = ocp_xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char ch = *s;
            *s = '\0';
            if (mkdir(p, (mode_t)mode) < 0 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *s = ch;
            if (!ch)
                break;
        }
    }
    free(p);
    return rc;
}

double ocp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ocp_uuid4(char out[37])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* No entropy source: fall back to time and pid, still unique enough per host. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            for (size_t i = got; i < sizeof b; i++)
                b[i] = (unsigned char)((ts.tv_nsec >> (i % 4 * 8)) ^ getpid() ^ i * 131);
            break;
        }
        got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

char *ocp_path_stem(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return ocp_xstrdup(base);
    return ocp_xstrndup(base, (size_t)(dot - base));
}

bool ocp_parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    if (!s || !*s)
        return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || end == s)
        return false;
    *out = v;
    return true;
}

bool ocp_parse_double(const char *s, double *out)
{
    char *end;
    double v;
    if (!s || !*s)
        return false;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v))
        return false;
    *out = v;
    return true;
}

bool ocp_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ocp_b64_encode(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    char *out = ocp_xmalloc((len + 2) / 3 * 4 + 1), *o = out;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[v >> 12 & 63];
        *o++ = b64_alphabet[v >> 6 & 63];
        *o++ = b64_alphabet[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0);
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[v >> 12 & 63];
        *o++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

unsigned char *ocp_b64_decode(const char *s, size_t len, size_t *outlen)
{
    unsigned char *out = ocp_xmalloc(len / 4 * 3 + 4), *o = out;
    unsigned v = 0;
    int n = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int d;
        if (c >= 'A' && c <= 'Z')
            d = c - 'A';
        else if (c >= 'a' && c <= 'z')
            d = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            d = c - '0' + 52;
        else if (c == '+' || c == '-')
            d = 62;
        else if (c == '/' || c == '_')
            d = 63;
        else if (c == '=') {
            pad++;
            continue;
        } else if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        else
            goto bad;
        if (pad)
            goto bad; /* data after padding */
        v = v << 6 | (unsigned)d;
        if (++n == 4) {
            *o++ = (unsigned char)(v >> 16);
            *o++ = (unsigned char)(v >> 8);
            *o++ = (unsigned char)v;
            n = 0;
            v = 0;
        }
    }
    if (n == 1 || pad > 2)
        goto bad;
    if (n == 2) {
        *o++ = (unsigned char)(v >> 4);
    } else if (n == 3) {
        *o++ = (unsigned char)(v >> 10);
        *o++ = (unsigned char)(v >> 2);
    }
    *o = '\0';
    *outlen = (size_t)(o - out);
    return out;
bad:
    free(out);
    return NULL;
}

const double ocp_duration_le[OCP_DURATION_NB] = {0.25, 0.5, 1, 2, 5, 10, 30, 60};

const char *ocp_url_shown(const char *url, char *buf, size_t len)
{
    /* scheme://[user][:password]@host...: the user-info ends at the last '@', as the
     * redis URL's parser reads it (a password may hold '/'). A password is what follows
     * the user-info's first ':'; without one, redis reads it all as the password. A file
     * queue's path is shown as it is, '@' or not. */
    const char *sep = strstr(url, "://");
    const char *ui = sep && strncmp(url, "sqlite://", 9) != 0 ? sep + 3 : NULL;
    const char *at = ui ? strrchr(ui, '@') : NULL;
    const char *colon = at ? memchr(ui, ':', (size_t)(at - ui)) : NULL;
    if (!at || at == ui || (colon && colon + 1 == at))
        snprintf(buf, len, "%s", url); /* no user-info, or no password in it */
    else
        snprintf(buf, len, "%.*s***%s", (int)((colon ? colon + 1 : ui) - url), url, at);
    return buf;
}
