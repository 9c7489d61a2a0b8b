/*
 * replay.c: a main for the harnesses when they are built without libFuzzer
 * (tests/run.sh: the normal compiler, or `make asan`'s sanitizers). Runs
 * every input named (files, or folders of files) through the harness, each
 * in a child process of its own, and prints one TAP line per input: "ok"
 * when the harness returned and the child exited 0 (so a sanitizer's report
 * or a leak fails it), else "not ok" with the status.
 *
 *   replay_NAME FILE_OR_DIR...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int n_ok, n_bad;

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static void one(const char *path, int argc, char **argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        size_t len = 0;
        unsigned char *buf = slurp(path, &len);
        if (!buf)
            _exit(2);
        if (LLVMFuzzerInitialize)
            LLVMFuzzerInitialize(&argc, &argv);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        exit(0); /* through atexit: the leak check and the harness's clean-up */
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0) {
        printf("not ok %d - %s: cannot run\n", n_ok + n_bad + 1, path);
        n_bad++;
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        printf("ok %d - %s\n", n_ok + n_bad + 1, path);
        n_ok++;
    } else {
        printf("not ok %d - %s: %s %d\n", n_ok + n_bad + 1, path,
               WIFSIGNALED(st) ? "killed by signal" : "exit status",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        n_bad++;
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk(const char *path, int argc, char **argv)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        one(path, argc, argv);
        return;
    }
    DIR *d = opendir(path);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        names[n] = malloc(strlen(path) + strlen(e->d_name) + 2);
        sprintf(names[n++], "%s/%s", path, e->d_name);
    }
    if (d)
        closedir(d);
    if (n)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        walk(names[i], argc, argv);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        walk(argv[i], argc, argv);
    printf("%d passed, %d failed\n", n_ok, n_bad);
    return n_bad ? 1 : 0;
}
