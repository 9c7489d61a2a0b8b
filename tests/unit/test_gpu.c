/*
 * test_gpu.c: resolving the device settings and assigning workers to GPUs,
 * on fake device lists of one, two and four GPUs of different sizes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "gpu/gpu.h"

#define GIB (1ull << 30)

/* A list of n fake GPUs with the given sizes in GiB. */
static ocp_gpu_list *fake(int n, const unsigned *gib)
{
    ocp_gpu_list *l = calloc(1, sizeof *l);
    assert_non_null(l);
    snprintf(l->driver, sizeof l->driver, "580.00");
    for (int i = 0; i < n; i++) {
        ocp_gpu_device *d = &l->dev[i];
        d->index = i;
        snprintf(d->name, sizeof d->name, "Fake GPU %u GB", gib[i]);
        snprintf(d->uuid, sizeof d->uuid, "GPU-0000000%d-aaaa-bbbb-cccc-dddddddddddd", i);
        d->mem_total = gib[i] * GIB;
        d->mem_free = d->mem_total;
    }
    l->n = n;
    if (n == 0)
        snprintf(l->why, sizeof l->why, "NVML not available");
    return l;
}

static const unsigned one[] = {80};
static const unsigned two[] = {24, 48};
static const unsigned four[] = {16, 16, 40, 80};

static void test_resolve_cpu_and_auto(void **state)
{
    (void)state;
    ocp_gpu_plan p;
    char err[600];
    ocp_gpu_list *none = fake(0, NULL), *g4 = fake(4, four);

    assert_int_equal(ocp_gpu_resolve("cpu", "x", true, g4, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 0);
    /* auto: every GPU for an engine that uses one ... */
    assert_int_equal(ocp_gpu_resolve("auto", "x", true, g4, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 4);
    assert_int_equal(p.idx[3], 3);
    /* ... the CPU for tesseract, saying why ... */
    assert_int_equal(ocp_gpu_resolve("auto", "tesseract", false, g4, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 0);
    assert_non_null(strstr(p.why, "engine tesseract has no GPU path"));
    /* ... and the CPU when there is no GPU. */
    assert_int_equal(ocp_gpu_resolve("auto", "x", true, none, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 0);
    assert_non_null(strstr(p.why, "no NVIDIA GPU found"));
    free(none);
    free(g4);
}

static void test_resolve_named(void **state)
{
    (void)state;
    ocp_gpu_plan p;
    char err[600];
    ocp_gpu_list *g1 = fake(1, one), *g2 = fake(2, two), *g4 = fake(4, four), *none = fake(0, NULL);

    assert_int_equal(ocp_gpu_resolve("cuda:0", "x", true, g1, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 1);
    /* cuda:3 on a one-GPU machine: an error naming the devices found. */
    assert_int_equal(ocp_gpu_resolve("cuda:3", "x", true, g1, &p, err, sizeof err), OCP_E_CONFIG);
    assert_non_null(strstr(err, "cuda:3 is not present"));
    assert_non_null(strstr(err, "found 1: cuda:0 Fake GPU 80 GB (81920 MiB)"));
    assert_int_equal(ocp_gpu_resolve("cuda:0", "x", true, none, &p, err, sizeof err), OCP_E_CONFIG);
    assert_non_null(strstr(err, "no NVIDIA GPU found (NVML not available)"));
    /* Several, in the order given. */
    assert_int_equal(ocp_gpu_resolve("cuda:3,1", "x", true, g4, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.idx[0], 3);
    assert_int_equal(p.idx[1], 1);
    assert_int_equal(ocp_gpu_resolve("cuda:0,1,2", "x", true, g2, &p, err, sizeof err),
                     OCP_E_CONFIG);
    assert_non_null(
        strstr(err, "found 2: cuda:0 Fake GPU 24 GB (24576 MiB), cuda:1 Fake GPU 48 GB"));
    assert_int_equal(ocp_gpu_resolve("cuda:1,1", "x", true, g2, &p, err, sizeof err), OCP_E_CONFIG);
    assert_non_null(strstr(err, "twice"));
    assert_int_equal(ocp_gpu_resolve("cuda:a", "x", true, g2, &p, err, sizeof err), OCP_E_CONFIG);
    assert_int_equal(ocp_gpu_resolve("gpu", "x", true, g2, &p, err, sizeof err), OCP_E_CONFIG);
    /* An engine without a GPU path: validated, then the CPU. */
    assert_int_equal(ocp_gpu_resolve("cuda:1", "tesseract", false, g2, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 0);
    assert_non_null(strstr(p.why, "pages run on the CPU"));
    assert_int_equal(ocp_gpu_resolve("cuda:2", "tesseract", false, g2, &p, err, sizeof err),
                     OCP_E_CONFIG);
    free(g1);
    free(g2);
    free(g4);
    free(none);
}

static void test_assign(void **state)
{
    (void)state;
    ocp_gpu_plan p;
    char err[600];
    ocp_gpu_assignment a[8];
    ocp_gpu_list *g1 = fake(1, one), *g2 = fake(2, two), *g4 = fake(4, four);

    /* One 80 GiB GPU, fraction 0.5, 4 workers: 10 GiB each. */
    ocp_gpu_resolve("auto", "x", true, g1, &p, err, sizeof err);
    ocp_gpu_assign(&p, g1, 4, 0.5, 0, a);
    for (int w = 0; w < 4; w++) {
        assert_int_equal(a[w].device, 0);
        assert_int_equal(a[w].sharing, 4);
        assert_true(a[w].budget_bytes == 10 * GIB);
    }
    /* The conservative preset's cap, 4096 MiB, wins over 0.5 x 80 GiB. */
    ocp_gpu_assign(&p, g1, 2, 0.5, 4096, a);
    assert_true(a[0].budget_bytes == 2048ull << 20);

    /* Two GPUs of different sizes, 3 workers round-robin: 0, 1, 0. */
    ocp_gpu_resolve("auto", "x", true, g2, &p, err, sizeof err);
    ocp_gpu_assign(&p, g2, 3, 1.0, 0, a);
    assert_int_equal(a[0].device, 0);
    assert_int_equal(a[1].device, 1);
    assert_int_equal(a[2].device, 0);
    assert_true(a[0].budget_bytes == 12 * GIB); /* 24 GiB shared by 2 */
    assert_true(a[1].budget_bytes == 48 * GIB); /* alone */
    assert_int_equal(a[2].sharing, 2);

    /* Four GPUs, only cuda:3 and cuda:0 chosen, 5 workers. */
    ocp_gpu_resolve("cuda:3,0", "x", true, g4, &p, err, sizeof err);
    ocp_gpu_assign(&p, g4, 5, 0.8, 0, a);
    int on3 = 0, on0 = 0;
    for (int w = 0; w < 5; w++) {
        assert_true(a[w].device == 3 || a[w].device == 0);
        on3 += a[w].device == 3;
        on0 += a[w].device == 0;
    }
    assert_int_equal(on3, 3);
    assert_int_equal(on0, 2);
    assert_int_equal(a[0].device, 3);
    assert_true(a[0].budget_bytes == (unsigned long long)(80 * GIB * 0.8) / 3);
    assert_true(a[1].budget_bytes == (unsigned long long)(16 * GIB * 0.8) / 2);

    /* The CPU: no device, no budget. */
    ocp_gpu_resolve("cpu", "x", true, g4, &p, err, sizeof err);
    ocp_gpu_assign(&p, g4, 2, 0.8, 0, a);
    assert_int_equal(a[0].device, -1);
    assert_true(a[1].budget_bytes == 0);
    free(g1);
    free(g2);
    free(g4);
}

static void test_visible_and_procs(void **state)
{
    (void)state;
    char buf[128];
    ocp_gpu_list *g2 = fake(2, two);
    ocp_gpu_visible_devices(g2, 1, buf, sizeof buf);
    assert_string_equal(buf, "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd");
    ocp_gpu_visible_devices(g2, -1, buf, sizeof buf);
    assert_string_equal(buf, "");
    g2->dev[0].n_procs = 1;
    g2->dev[0].procs[0] = (ocp_gpu_proc){.pid = 42, .used_bytes = 100};
    g2->dev[1].n_procs = 2;
    g2->dev[1].procs[0] = (ocp_gpu_proc){.pid = 7, .used_bytes = 5};
    g2->dev[1].procs[1] = (ocp_gpu_proc){.pid = 42, .used_bytes = 23};
    assert_true(ocp_gpu_proc_bytes(g2, 42) == 123);
    assert_true(ocp_gpu_proc_bytes(g2, 8) == 0);
    free(g2);
}

static void test_discover_without_driver(void **state)
{
    (void)state;
    /* On machines without NVIDIA's driver (CI) the list is empty, with the reason; with
     * one, every device has a name and memory. Either way it does not fail. */
    ocp_gpu_list *l = calloc(1, sizeof *l);
    int n = ocp_gpu_discover(l);
    assert_int_equal(n, l->n);
    if (n == 0)
        assert_true(l->why[0] != '\0');
    for (int i = 0; i < n; i++)
        assert_true(l->dev[i].name[0] && l->dev[i].mem_total > 0);
    free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_cpu_and_auto),
        cmocka_unit_test(test_resolve_named),
        cmocka_unit_test(test_assign),
        cmocka_unit_test(test_visible_and_procs),
        cmocka_unit_test(test_discover_without_driver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
