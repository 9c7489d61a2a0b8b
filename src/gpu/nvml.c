/*
 * nvml.c: device discovery through NVML, loaded with dlopen (gpu.h).
 *
 * Only the few NVML calls we need are declared here, with the layouts of
 * NVML's public header (nvml.h, CUDA 11+): the library is found at run
 * time, the header is not needed at build time. Every call after init is
 * optional: a reading NVML does not support stays -1.
 */
#include "gpu/gpu.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t; /* 0 = NVML_SUCCESS */
typedef void *nvmlDevice_t;

typedef struct {
    unsigned long long total, free, used;
} nvml_memory;

typedef struct {
    unsigned int gpu, memory;
} nvml_utilization;

typedef struct {
    char bus_id_legacy[16];
    unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
    char bus_id[32];
} nvml_pci_info;

typedef struct {
    unsigned int pid;
    unsigned long long used_gpu_memory;
    unsigned int gpu_instance_id, compute_instance_id;
} nvml_process_info; /* nvmlProcessInfo_v2_t, used by the _v3 call */

#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_TEMPERATURE_GPU         0
/* NVML reports this for a process's memory it cannot read (no permission, MIG). */
#define NVML_VALUE_NOT_AVAILABLE 0xffffffffffffffffULL

static struct {
    void *lib;
    int tried;
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*shutdown)(void);
    const char *(*error_string)(nvmlReturn_t);
    nvmlReturn_t (*count)(unsigned int *);
    nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t *);
    nvmlReturn_t (*name)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*uuid)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*pci)(nvmlDevice_t, nvml_pci_info *);
    nvmlReturn_t (*memory)(nvmlDevice_t, nvml_memory *);
    nvmlReturn_t (*util)(nvmlDevice_t, nvml_utilization *);
    nvmlReturn_t (*temp)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*power)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*procs)(nvmlDevice_t, unsigned int *, nvml_process_info *);
    nvmlReturn_t (*driver)(char *, unsigned int);
} nv;

/* Loads NVML once; returns 0, or -1 with the reason in why. */
static int load(char *why, size_t len)
{
    if (nv.lib)
        return 0;
    if (nv.tried) {
        snprintf(why, len, "NVML not available");
        return -1;
    }
    nv.tried = 1;
    nv.lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!nv.lib) {
        snprintf(why, len, "NVML not available");
        return -1;
    }
#define SYM(field, name) *(void **)&nv.field = dlsym(nv.lib, name)
    SYM(init, "nvmlInit_v2");
    SYM(shutdown, "nvmlShutdown");
    SYM(error_string, "nvmlErrorString");
    SYM(count, "nvmlDeviceGetCount_v2");
    SYM(handle, "nvmlDeviceGetHandleByIndex_v2");
    SYM(name, "nvmlDeviceGetName");
    SYM(uuid, "nvmlDeviceGetUUID");
    SYM(pci, "nvmlDeviceGetPciInfo_v3");
    SYM(memory, "nvmlDeviceGetMemoryInfo");
    SYM(util, "nvmlDeviceGetUtilizationRates");
    SYM(temp, "nvmlDeviceGetTemperature");
    SYM(power, "nvmlDeviceGetPowerUsage");
    SYM(procs, "nvmlDeviceGetComputeRunningProcesses_v3");
    SYM(driver, "nvmlSystemGetDriverVersion");
#undef SYM
    if (!nv.init || !nv.count || !nv.handle || !nv.memory) {
        dlclose(nv.lib);
        nv.lib = NULL;
        snprintf(why, len, "NVML not available (libnvidia-ml.so.1 lacks the calls we need)");
        return -1;
    }
    nvmlReturn_t r = nv.init();
    if (r != 0) {
        snprintf(why, len, "NVML could not start: %s",
                 nv.error_string ? nv.error_string(r) : "error");
        dlclose(nv.lib);
        nv.lib = NULL;
        return -1;
    }
    return 0;
}

/* OCRPOOL_CUDA_EMULATE=MIB[,MIB...] (tests on machines without a GPU): one emulated device
 * per entry, with that much memory, in place of NVML's. Their UUIDs start with
 * OCP_GPU_EMULATED_UUID, which tells the recognizer to open an emulated CUDA context
 * (gpu/cuda/cuda_forward.h: the same kernel bodies and allocator, on the CPU). Returns the
 * number of devices, or -1 when the variable is not set. */
static int discover_emulated(ocp_gpu_list *out)
{
    const char *e = getenv("OCRPOOL_CUDA_EMULATE");
    if (!e || !*e)
        return -1;
    snprintf(out->driver, sizeof out->driver, "emulated");
    for (const char *p = e; *p && out->n < OCP_GPU_MAX_DEVICES;) {
        char *end;
        long long mib = strtoll(p, &end, 10);
        if (end == p || mib <= 0 || mib > (1LL << 24) || (*end && *end != ','))
            break;
        ocp_gpu_device *d = &out->dev[out->n];
        memset(d, 0, sizeof *d);
        d->index = out->n;
        d->util_gpu = d->util_mem = d->temp_c = d->power_mw = -1; /* n/a: nothing to read */
        snprintf(d->name, sizeof d->name, "emulated CUDA device");
        snprintf(d->uuid, sizeof d->uuid, "%s%d", OCP_GPU_EMULATED_UUID, out->n);
        d->mem_total = d->mem_free = (unsigned long long)mib << 20;
        out->n++;
        p = *end ? end + 1 : end;
    }
    if (out->n == 0)
        snprintf(out->why, sizeof out->why, "OCRPOOL_CUDA_EMULATE='%.60s' is not MIB[,MIB...]", e);
    return out->n;
}

int ocp_gpu_discover(ocp_gpu_list *out)
{
    unsigned int n = 0;
    memset(out, 0, sizeof *out);
    int emulated = discover_emulated(out);
    if (emulated >= 0)
        return emulated;
    if (load(out->why, sizeof out->why) != 0)
        return 0;
    if (nv.driver)
        nv.driver(out->driver, sizeof out->driver);
    if (nv.count(&n) != 0 || n == 0) {
        snprintf(out->why, sizeof out->why, "no NVIDIA GPU found (NVML sees none)");
        return 0;
    }
    if (n > OCP_GPU_MAX_DEVICES)
        n = OCP_GPU_MAX_DEVICES;
    for (unsigned int i = 0; i < n; i++) {
        nvmlDevice_t h;
        ocp_gpu_device *d = &out->dev[out->n];
        if (nv.handle(i, &h) != 0)
            continue;
        memset(d, 0, sizeof *d);
        d->index = (int)i;
        d->util_gpu = d->util_mem = d->temp_c = d->power_mw = -1;
        if (nv.name)
            nv.name(h, d->name, sizeof d->name);
        if (nv.uuid)
            nv.uuid(h, d->uuid, sizeof d->uuid);
        nvml_pci_info pci;
        if (nv.pci && nv.pci(h, &pci) == 0)
            snprintf(d->pci_bus_id, sizeof d->pci_bus_id, "%.32s", pci.bus_id);
        nvml_memory m;
        if (nv.memory(h, &m) == 0) {
            d->mem_total = m.total;
            d->mem_used = m.used;
            d->mem_free = m.free;
        }
        nvml_utilization u;
        if (nv.util && nv.util(h, &u) == 0) {
            d->util_gpu = (int)u.gpu;
            d->util_mem = (int)u.memory;
        }
        unsigned int t, p;
        if (nv.temp && nv.temp(h, NVML_TEMPERATURE_GPU, &t) == 0)
            d->temp_c = (int)t;
        if (nv.power && nv.power(h, &p) == 0)
            d->power_mw = (int)p;
        if (nv.procs) {
            nvml_process_info info[OCP_GPU_MAX_PROCS];
            unsigned int cnt = OCP_GPU_MAX_PROCS;
            nvmlReturn_t r = nv.procs(h, &cnt, info);
            if (r == 0 || r == NVML_ERROR_INSUFFICIENT_SIZE) {
                if (cnt > OCP_GPU_MAX_PROCS)
                    cnt = OCP_GPU_MAX_PROCS;
                for (unsigned int k = 0; k < cnt; k++) {
                    d->procs[k].pid = info[k].pid;
                    d->procs[k].used_bytes = info[k].used_gpu_memory == NVML_VALUE_NOT_AVAILABLE
                                                 ? 0
                                                 : info[k].used_gpu_memory;
                }
                d->n_procs = (int)cnt;
            }
        }
        out->n++;
    }
    return out->n;
}
