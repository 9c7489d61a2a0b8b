/*
 * test_core.c: the error table, string buffers and XML escaping, capped
 * reads, number parsing, UUIDs, path stems, atomic writes, peak RSS, and
 * the unmapping of a process's read-only file pages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/memstat.h"
#include "core/util.h"

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(ocp_strerror(OCP_E_TOOBIG), "image exceeds the pixel limit");
    assert_string_equal(ocp_err_name(OCP_E_TOOBIG), "OCP_E_TOOBIG");
    assert_string_equal(ocp_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(ocp_err_name(-ENOSPC), "ENOSPC");
    assert_string_equal(ocp_strerror(-4999), "unknown error");
    char buf[16];
    assert_int_equal(ocp_errf(OCP_E_DECODE, buf, sizeof buf, "%s", "a long message here"),
                     OCP_E_DECODE);
    assert_int_equal(strlen(buf), sizeof buf - 1); /* truncated, terminated */
}

static void test_sb(void **state)
{
    (void)state;
    ocp_sb sb;
    ocp_sb_init(&sb);
    for (int i = 0; i < 1000; i++)
        ocp_sb_printf(&sb, "%d,", i);
    assert_int_equal(sb.len, strlen(sb.buf));
    assert_memory_equal(sb.buf, "0,1,2,", 6);
    assert_non_null(strstr(sb.buf, ",999,"));
    ocp_sb_reset(&sb);
    ocp_sb_put_xml(&sb, "a<b>&\"c'\x01\td");
    assert_string_equal(sb.buf, "a&lt;b&gt;&amp;&quot;c&#39;\td");
    char *s = ocp_sb_steal(&sb);
    assert_string_equal(s, "a&lt;b&gt;&amp;&quot;c&#39;\td");
    free(s);
    ocp_sb_fini(&sb);
}

static void test_read_fd(void **state)
{
    (void)state;
    int p[2];
    char *buf;
    size_t len;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "hello", 5), 5);
    close(p[1]);
    assert_int_equal(ocp_read_fd(p[0], 5, &buf, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "hello", 5);
    free(buf);
    close(p[0]);
    /* One byte over the cap is refused. */
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "hello!", 6), 6);
    close(p[1]);
    assert_int_equal(ocp_read_fd(p[0], 5, &buf, &len), OCP_E_INPUT_SIZE);
    close(p[0]);
}

static void test_parse(void **state)
{
    (void)state;
    int64_t i;
    double d;
    bool b;
    assert_true(ocp_parse_i64("-42", &i) && i == -42);
    assert_false(ocp_parse_i64("42x", &i));
    assert_false(ocp_parse_i64("", &i));
    assert_false(ocp_parse_i64("99999999999999999999", &i));
    assert_true(ocp_parse_double("0.25", &d) && d == 0.25);
    assert_false(ocp_parse_double("nan", &d));
    assert_false(ocp_parse_double("1e999", &d));
    assert_true(ocp_parse_bool("Yes", &b) && b);
    assert_true(ocp_parse_bool("off", &b) && !b);
    assert_false(ocp_parse_bool("maybe", &b));
}

static void test_uuid_and_stem(void **state)
{
    (void)state;
    char a[37], b[37];
    ocp_uuid4(a);
    ocp_uuid4(b);
    assert_int_equal(strlen(a), 36);
    assert_true(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_string_not_equal(a, b);
    char *s = ocp_path_stem("dir.x/book.v2.pdf");
    assert_string_equal(s, "book.v2");
    free(s);
    s = ocp_path_stem(".hidden");
    assert_string_equal(s, ".hidden");
    free(s);
}

static void test_write_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/ocp-test-core-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = ocp_xasprintf("%s/out.txt", dir);
    assert_int_equal(ocp_write_file(path, "abc", 3), 0);
    FILE *f = fopen(path, "r");
    char buf[8] = {0};
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, sizeof buf, f), 3);
    fclose(f);
    assert_string_equal(buf, "abc");
    /* A folder that does not exist: an error, and no stray temporary file. */
    char *bad = ocp_xasprintf("%s/missing/out.txt", dir);
    assert_int_equal(ocp_write_file(bad, "abc", 3), -ENOENT);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
    free(path);
    free(bad);
}

static void test_mkdir_p(void **state)
{
    (void)state;
    char dir[] = "/tmp/ocp-test-mkdir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *deep = ocp_xasprintf("%s/a/b/c", dir);
    assert_int_equal(ocp_mkdir_p(deep, 0755), 0);
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(ocp_mkdir_p(deep, 0755), 0); /* already there: fine */
    /* A file in the way is an error. */
    char *file = ocp_xasprintf("%s/f", dir), *under = ocp_xasprintf("%s/f/g", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(ocp_mkdir_p(under, 0755), -ENOTDIR);
    /* No name is an error, not a walk past its end. */
    assert_int_equal(ocp_mkdir_p("", 0755), -EINVAL);
    assert_int_equal(ocp_mkdir_p(NULL, 0755), -EINVAL);
    unlink(file);
    char *b = ocp_xasprintf("%s/a/b", dir), *a = ocp_xasprintf("%s/a", dir);
    rmdir(deep);
    rmdir(b);
    rmdir(a);
    assert_int_equal(rmdir(dir), 0);
    free(deep);
    free(file);
    free(under);
    free(b);
    free(a);
}

/* A URL as logs and config show print it: the password in its user-info masked. */
static void test_url_shown(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"redis://:pw@h:6379/0", "redis://:***@h:6379/0"},
        {"redis://u:p/w@h", "redis://u:***@h"},
        {"redis://pw@h:1/2", "redis://***@h:1/2"},
        {"redis://u:@h", "redis://u:@h"},
        {"redis://h:6379/0", "redis://h:6379/0"},
        {"sqlite:///srv/a@b/queue.db", "sqlite:///srv/a@b/queue.db"},
        {"", ""},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(ocp_url_shown(cases[i][0], buf, sizeof buf), cases[i][1]);
    char small[12];
    assert_string_equal(ocp_url_shown("redis://:secret@host:6379/0", small, sizeof small),
                        "redis://:**");
}

static void test_peak_rss(void **state)
{
    (void)state;
    long before = ocp_self_peak_rss_kb();
    assert_true(before > 0);
    /* Touch 64 MiB, free it, reset: the peak comes back to the current size. */
    size_t n = 64u << 20;
    char *p = malloc(n);
    assert_non_null(p);
    memset(p, 1, n);
    long high = ocp_self_peak_rss_kb();
    assert_true(high >= before + 60000);
    free(p);
    if (ocp_self_reset_peak_rss() == 0) {
        long now = ocp_self_rss_kb();
        long peak = ocp_self_peak_rss_kb();
        /* Within 2 MiB either way: the peak (getrusage) and the size (statm) are read apart,
         * and the kernel's RSS counters are summed per CPU in batches. */
        assert_true(peak >= now - 2048 && peak <= now + 2048);
    }
}

/* The size and the peak are read and reset through descriptors kept open: a second read sees
 * a new size, and a forked child reads and resets its own, not its parent's. */
static void test_self_rss_kept_open(void **state)
{
    (void)state;
    /* mmap, not malloc: a freed block must leave the RSS (ASan's allocator keeps freed
     * blocks mapped in its quarantine). */
    long before = ocp_self_rss_kb();
    assert_true(before > 0);
    size_t n = 64u << 20;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 1, n);
    long grown = ocp_self_rss_kb();
    assert_true(grown >= before + 60000);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        /* The child unmaps the parent's 64 MiB (its copy), then touches 128 MiB of its own
         * and unmaps them: its own figures move (a parent's would not); measured against
         * its own start (under ASan a child starts smaller than its parent). */
        munmap(p, n);
        long got[4] = {ocp_self_rss_kb(), 0, 0, 0};
        char *q = mmap(NULL, 2 * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q == MAP_FAILED)
            _exit(1);
        memset(q, 2, 2 * n);
        got[1] = ocp_self_rss_kb();
        got[2] = ocp_self_reset_peak_rss();
        munmap(q, 2 * n);
        got[3] = ocp_self_rss_kb();
        _exit(write(pfd[1], got, sizeof got) == (ssize_t)sizeof got ? 0 : 1);
    }
    long got[4];
    assert_int_equal(read(pfd[0], got, sizeof got), (ssize_t)sizeof got);
    int st = 0;
    waitpid(kid, &st, 0);
    close(pfd[0]);
    close(pfd[1]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    print_message("parent %ld KiB; child %ld KiB, %ld with 128 MiB, %ld after unmapping them\n",
                  grown, got[0], got[1], got[3]);
    assert_true(got[0] > 0 && got[1] >= got[0] + 120000); /* the child's own statm */
    assert_int_equal(got[2], 0);
    assert_true(got[3] <= got[1] - 120000);
    assert_true(labs(ocp_self_rss_kb() - grown) < 8192); /* ours did not change meanwhile */
    munmap(p, n);
}

/* Rss of this process's mapping that starts at addr (smaps), in KiB, or -1. */
static long mapping_rss_kb(const void *addr)
{
    char want[32], line[512];
    snprintf(want, sizeof want, "%lx-", (unsigned long)addr);
    FILE *f = fopen("/proc/self/smaps", "r");
    long rss = -1;
    int in = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, want, strlen(want)) == 0)
            in = 1;
        else if (in && strncmp(line, "Rss:", 4) == 0) {
            rss = strtol(line + 4, NULL, 10);
            break;
        }
    }
    if (f)
        fclose(f);
    return rss;
}

/* The read-only file pages come back from the file; a page copied (written before the
 * mapping was made read-only, as the dynamic linker's RELRO) keeps its copy. */
static void test_drop_file_pages(void **state)
{
    (void)state;
    char path[] = "/tmp/ocp-test-drop-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = 1u << 20;
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 7 + i / 4096);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    unsigned char *ro = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    unsigned char *cow = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    assert_true(ro != MAP_FAILED && cow != MAP_FAILED);
    volatile unsigned sum = 0; /* the reads fault the pages in */
    for (size_t i = 0; i < n; i += 4096)
        sum += ro[i];
    for (size_t i = 0; i < n; i += 4096)
        cow[i] = (unsigned char)~buf[i];
    assert_int_equal(mprotect(cow, n, PROT_READ), 0);
    assert_int_equal(mapping_rss_kb(ro), (long)(n >> 10));
    /* The whole read-only mapping went (and the library pages of this test); the copied
     * one stayed. */
    long dropped = ocp_memstat_drop_file_pages();
    assert_true(dropped >= (long)(n >> 10));
    assert_int_equal(mapping_rss_kb(ro), 0);
    assert_int_equal(mapping_rss_kb(cow), (long)(n >> 10));
    assert_memory_equal(ro, buf, n);
    for (size_t i = 0; i < n; i += 4096)
        assert_int_equal(cow[i], (unsigned char)~buf[i]);
    munmap(ro, n);
    munmap(cow, n);
    close(fd);
    unlink(path);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_sb),
        cmocka_unit_test(test_read_fd),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_uuid_and_stem),
        cmocka_unit_test(test_write_file),
        cmocka_unit_test(test_mkdir_p),
        cmocka_unit_test(test_peak_rss),
        cmocka_unit_test(test_self_rss_kept_open),
        cmocka_unit_test(test_url_shown),
        cmocka_unit_test(test_drop_file_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
