/*
 * gpu.h: GPU discovery and monitoring through NVML, and the plan that
 * turns the device settings into one GPU (or the CPU) per worker.
 *
 * NVML (libnvidia-ml.so.1) is loaded at run time with dlopen: nothing of
 * NVIDIA's is needed to build, and a machine without a driver simply has
 * no GPUs. The plan functions work on a device list, whatever made it, so
 * tests give them fake devices.
 *
 *   ocp_gpu_discover()   every device with memory, use and its processes
 *   ocp_gpu_resolve()    --device (auto|cpu|cuda:N[,M...]) against the
 *                        devices present and the engine's needs
 *   ocp_gpu_assign()     worker i -> device, round-robin, and each
 *                        worker's share of that device's memory budget
 */
#ifndef OCP_GPU_GPU_H
#define OCP_GPU_GPU_H

#include <stdbool.h>
#include <stddef.h>

#define OCP_GPU_MAX_DEVICES 64
#define OCP_GPU_MAX_PROCS   64

/* The UUID prefix of the devices OCRPOOL_CUDA_EMULATE=MIB[,MIB...] makes (tests without a
 * GPU: ocp_gpu_discover lists them instead of NVML's, and a recognizer given one opens an
 * emulated CUDA context of that size). */
#define OCP_GPU_EMULATED_UUID "EMU-"

/* A process using a GPU, from NVML's compute process list. Open type. */
typedef struct ocp_gpu_proc {
    unsigned pid;
    unsigned long long used_bytes; /* 0 when NVML cannot tell */
} ocp_gpu_proc;

/* One device. Open type; -1 in a reading means NVML could not give it. */
typedef struct ocp_gpu_device {
    int index; /* NVML's index, which cuda:N names */
    char name[96];
    char uuid[96];
    char pci_bus_id[40];
    unsigned long long mem_total, mem_used, mem_free; /* bytes */
    int util_gpu, util_mem;                           /* percent */
    int temp_c;
    int power_mw;
    int n_procs;
    ocp_gpu_proc procs[OCP_GPU_MAX_PROCS];
} ocp_gpu_device;

/* The devices of this machine. Open type. */
typedef struct ocp_gpu_list {
    int n;
    ocp_gpu_device dev[OCP_GPU_MAX_DEVICES];
    char driver[80]; /* driver version, "" without NVML */
    char why[200];   /* when n == 0: why ("NVML not available", ...) */
} ocp_gpu_list;

/*
 * Fills out with this machine's GPUs (or OCRPOOL_CUDA_EMULATE's emulated ones). Never fails:
 * without a driver the list is empty and out->why says why. Returns the number of devices.
 */
int ocp_gpu_discover(ocp_gpu_list *out);

/* The device with NVML index idx in l, or NULL. */
const ocp_gpu_device *ocp_gpu_find(const ocp_gpu_list *l, int idx);

/* What the device settings resolve to. Open type. */
typedef struct ocp_gpu_plan {
    int n;                        /* devices chosen; 0 = run on the CPU */
    int idx[OCP_GPU_MAX_DEVICES]; /* their NVML indexes, in the order given */
    char why[512];                /* how it was resolved, for people */
} ocp_gpu_plan;

/*
 * Resolves device ("auto", "cpu", "cuda:N[,M...]") for an engine that does
 * (engine_uses_gpu) or does not use a GPU, against gpus. auto = every GPU
 * for a GPU engine, else the CPU. Naming a device that is not there (or the
 * same one twice) is an error whose message names the devices found.
 * An engine without a GPU path runs on the CPU even when devices are named
 * (they are still validated), and plan->why says so.
 */
int ocp_gpu_resolve(const char *device, const char *engine_name, bool engine_uses_gpu,
                    const ocp_gpu_list *gpus, ocp_gpu_plan *plan, char *err, size_t errlen);

/* One worker's device and memory budget. Open type. */
typedef struct ocp_gpu_assignment {
    int device;                      /* NVML index, -1 = CPU */
    unsigned long long budget_bytes; /* 0 on the CPU */
    int sharing;                     /* workers on the same device */
} ocp_gpu_assignment;

/*
 * Assigns workers round-robin over plan's devices (worker i gets device
 * idx[i % n]) and gives each its share of its device's budget: fraction x
 * total memory, capped at max_mb MiB when max_mb > 0, divided by the
 * number of workers on that device. out has room for workers entries.
 */
void ocp_gpu_assign(const ocp_gpu_plan *plan, const ocp_gpu_list *gpus, int workers,
                    double fraction, long long max_mb, ocp_gpu_assignment *out);

/*
 * Writes the CUDA_VISIBLE_DEVICES value for a device (its UUID, which
 * names it exactly whatever order CUDA enumerates in), or "" for the CPU
 * (no device visible).
 */
void ocp_gpu_visible_devices(const ocp_gpu_list *gpus, int device, char *buf, size_t len);

/* GPU memory used by pid on any device, in bytes (from a discovered list). */
unsigned long long ocp_gpu_proc_bytes(const ocp_gpu_list *gpus, unsigned pid);

#endif
