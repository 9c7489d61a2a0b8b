/*
 * common.c: the harnesses' temporary folder (common.h).
 */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[4096];

static void remove_dir(void)
{
    if (!dir[0])
        return;
    fz_clear();
    rmdir(dir);
    dir[0] = '\0';
}

const char *fz_dir(void)
{
    if (dir[0])
        return dir;
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ocp-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(remove_dir);
    return dir;
}

int fz_write(const char *name, const uint8_t *data, size_t size, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", fz_dir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    while (size > 0) {
        ssize_t w = write(fd, data, size);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        data += w;
        size -= (size_t)w;
    }
    close(fd);
    return 0;
}

/* Empties folder path, and the folders in it (the HTTP spool's pdf/). */
static void clear_dir(const char *path, int depth)
{
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[8192];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (unlink(p) < 0 && errno == EISDIR && depth < 4) {
            clear_dir(p, depth + 1);
            rmdir(p);
        }
    }
    if (d)
        closedir(d);
}

void fz_clear(void)
{
    clear_dir(fz_dir(), 0);
}
