/*
 * input.h: checks of strings taken from an HTTP request (internal to
 * src/http): a multipart filename or field name, a query value, a path
 * segment. jansson refuses to carry a string that is not UTF-8 into a task
 * or a reply (json_pack fails, json_string returns NULL), so each is
 * checked here first and refused with 400.
 */
#ifndef OCP_HTTP_INPUT_H
#define OCP_HTTP_INPUT_H

#include <stddef.h>

/* Whether s is text: valid UTF-8 (no overlong form, surrogate or code point past
 * U+10FFFF), no control character (C0, DEL or C1), at most max bytes. */
int ocp__http_text_ok(const char *s, size_t max);

/* Whether l is a lang parameter: model names of letters, digits, '_', '-' (and '/' inside,
 * for tessdata's script/ models), '+'-joined; at most 100 bytes. */
int ocp__http_lang_ok(const char *l);

/* A yes/no parameter (pdf=1): 1 for "1", "true", "yes", "on"; 0 for "", "0", "false",
 * "no", "off"; -1 for anything else (NULL included). */
int ocp__http_flag(const char *s);

#endif
