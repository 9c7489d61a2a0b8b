/*
 * plan.c: resolving the device settings against a device list, and giving
 * each worker a device and a memory budget (gpu.h). Pure functions of
 * their inputs, so tests run them on fake devices.
 */
#include "gpu/gpu.h"
#include "core/error.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const ocp_gpu_device *ocp_gpu_find(const ocp_gpu_list *l, int idx)
{
    for (int i = 0; i < l->n; i++)
        if (l->dev[i].index == idx)
            return &l->dev[i];
    return NULL;
}

/* "found 2: cuda:0 NVIDIA H200 (143771 MiB), cuda:1 ..." or "no NVIDIA GPU found (...)". */
static void describe_found(const ocp_gpu_list *g, char *buf, size_t len)
{
    size_t n;
    if (g->n == 0) {
        snprintf(buf, len, "no NVIDIA GPU found (%s)", g->why[0] ? g->why : "none");
        return;
    }
    n = (size_t)snprintf(buf, len, "found %d:", g->n);
    for (int i = 0; i < g->n && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s cuda:%d %s (%llu MiB)", i ? "," : "",
                              g->dev[i].index, g->dev[i].name, g->dev[i].mem_total >> 20);
}

int ocp_gpu_resolve(const char *device, const char *engine, bool uses_gpu, const ocp_gpu_list *gpus,
                    ocp_gpu_plan *plan, char *err, size_t errlen)
{
    char found[400];
    memset(plan, 0, sizeof *plan);
    if (strcmp(device, "cpu") == 0) {
        snprintf(plan->why, sizeof plan->why, "cpu: asked for");
        return 0;
    }
    if (strcmp(device, "auto") == 0) {
        if (!uses_gpu) {
            snprintf(plan->why, sizeof plan->why, "cpu: engine %s has no GPU path", engine);
            return 0;
        }
        if (gpus->n == 0) {
            describe_found(gpus, found, sizeof found);
            snprintf(plan->why, sizeof plan->why, "cpu: %s", found);
            return 0;
        }
        for (int i = 0; i < gpus->n; i++)
            plan->idx[plan->n++] = gpus->dev[i].index;
        snprintf(plan->why, sizeof plan->why, "auto: all %d GPU%s", gpus->n,
                 gpus->n > 1 ? "s" : "");
        return 0;
    }
    if (strncmp(device, "cuda:", 5) != 0)
        return ocp_errf(OCP_E_CONFIG, err, errlen, "device '%s' is not auto, cpu or cuda:N[,M...]",
                        device);
    int idx[OCP_GPU_MAX_DEVICES], n = 0;
    const char *p = device + 5;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1000000 || (*end && *end != ','))
            return ocp_errf(OCP_E_CONFIG, err, errlen,
                            "device '%s' is not auto, cpu or cuda:N[,M...]", device);
        if (n == OCP_GPU_MAX_DEVICES)
            return ocp_errf(OCP_E_CONFIG, err, errlen, "device '%s' names more than %d GPUs",
                            device, OCP_GPU_MAX_DEVICES);
        for (int k = 0; k < n; k++)
            if (idx[k] == (int)v)
                return ocp_errf(OCP_E_CONFIG, err, errlen, "device '%s' names cuda:%ld twice",
                                device, v);
        if (!ocp_gpu_find(gpus, (int)v)) {
            describe_found(gpus, found, sizeof found);
            return ocp_errf(OCP_E_CONFIG, err, errlen, "device cuda:%ld is not present: %s", v,
                            found);
        }
        idx[n++] = (int)v;
        p = *end ? end + 1 : end;
        if (strncmp(p, "cuda:", 5) == 0) /* cuda:0,cuda:1 as well as cuda:0,1 */
            p += 5;
    }
    if (!uses_gpu) {
        snprintf(plan->why, sizeof plan->why,
                 "cpu: engine %s has no GPU path (%s is present, but pages run on the CPU)", engine,
                 device);
        return 0;
    }
    memcpy(plan->idx, idx, sizeof idx[0] * (size_t)n);
    plan->n = n;
    snprintf(plan->why, sizeof plan->why, "%s: %d GPU%s as asked", device, n, n > 1 ? "s" : "");
    return 0;
}

void ocp_gpu_assign(const ocp_gpu_plan *plan, const ocp_gpu_list *gpus, int workers,
                    double fraction, long long max_mb, ocp_gpu_assignment *out)
{
    for (int w = 0; w < workers; w++) {
        out[w].device = plan->n ? plan->idx[w % plan->n] : -1;
        out[w].budget_bytes = 0;
        out[w].sharing = 0;
    }
    if (!plan->n)
        return;
    for (int w = 0; w < workers; w++) {
        const ocp_gpu_device *d = ocp_gpu_find(gpus, out[w].device);
        int sharing = 0;
        for (int k = 0; k < workers; k++)
            sharing += out[k].device == out[w].device;
        unsigned long long dev_budget =
            d ? (unsigned long long)((double)d->mem_total * fraction) : 0;
        if (max_mb > 0 && (unsigned long long)max_mb << 20 < dev_budget)
            dev_budget = (unsigned long long)max_mb << 20;
        out[w].sharing = sharing;
        out[w].budget_bytes = dev_budget / (unsigned long long)sharing;
    }
}

void ocp_gpu_visible_devices(const ocp_gpu_list *gpus, int device, char *buf, size_t len)
{
    const ocp_gpu_device *d = device >= 0 ? ocp_gpu_find(gpus, device) : NULL;
    if (!d)
        snprintf(buf, len, "%s", "");
    else if (d->uuid[0])
        snprintf(buf, len, "%s", d->uuid);
    else
        snprintf(buf, len, "%d", d->index);
}

unsigned long long ocp_gpu_proc_bytes(const ocp_gpu_list *gpus, unsigned pid)
{
    unsigned long long sum = 0;
    for (int i = 0; i < gpus->n; i++)
        for (int k = 0; k < gpus->dev[i].n_procs; k++)
            if (gpus->dev[i].procs[k].pid == pid)
                sum += gpus->dev[i].procs[k].used_bytes;
    return sum;
}
