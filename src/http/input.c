/*
 * input.c: the checks every string taken from an HTTP request passes before
 * it is used (input.h).
 */
#include "http/input.h"

#include <string.h>

int ocp__http_text_ok(const char *s, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (p[n]) {
        unsigned c = p[n];
        int len = c < 0x80             ? 1
                  : (c & 0xe0) == 0xc0 ? 2
                  : (c & 0xf0) == 0xe0 ? 3
                  : (c & 0xf8) == 0xf0 ? 4
                                       : 0;
        if (len == 0 || (len == 1 && (c < 0x20 || c == 0x7f)))
            return 0;
        unsigned cp = len == 1 ? c : c & (0x3f >> (len - 1));
        for (int k = 1; k < len; k++) {
            if ((p[n + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[n + k] & 0x3f);
        }
        static const unsigned least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
            (cp >= 0x80 && cp < 0xa0))
            return 0;
        n += (size_t)len;
        if (n > max)
            return 0;
    }
    return 1;
}

int ocp__http_lang_ok(const char *l)
{
    return l && *l && strlen(l) <= 100 && *l != '/' && *l != '+' &&
           strspn(l, "abcdefghijklmnopqrstuvwxyz"
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/") == strlen(l);
}

int ocp__http_flag(const char *s)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"", "0", "false", "no", "off"};
    for (size_t i = 0; s && i < sizeof yes / sizeof *yes; i++)
        if (strcmp(s, yes[i]) == 0)
            return 1;
    for (size_t i = 0; s && i < sizeof no / sizeof *no; i++)
        if (strcmp(s, no[i]) == 0)
            return 0;
    return -1;
}
