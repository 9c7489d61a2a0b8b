/*
 * common.h: what the libFuzzer harnesses (fuzz_*.c) share: a private
 * temporary folder for the parsers that read files, emptied between inputs
 * and removed at exit, so no harness writes anywhere else.
 */
#ifndef OCP_FUZZ_COMMON_H
#define OCP_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* The harness's folder (made on first use under $TMPDIR, else /tmp; removed at exit). */
const char *fz_dir(void);
/* Writes data to name in the folder; its path goes to path. 0, or -1 when it cannot. */
int fz_write(const char *name, const uint8_t *data, size_t size, char *path, size_t pathlen);
/* Deletes every file in the folder (the folder stays). */
void fz_clear(void);

#endif
