/*
 * cmd_gpus.c: `ocrpool gpus [--json]`: the NVIDIA GPUs of this machine with
 * their memory, use, temperature, power and the processes on them.
 */
#include "cli/cli.h"
#include "gpu/gpu.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

enum { K_JSON = 1 };

static const ocp_cli_opt gpus_opts[] = {{"json", 0, 0, K_JSON}, {NULL, 0, 0, 0}};

static void gpus_help(void)
{
    printf("usage: ocrpool gpus [--json]\n\n"
           "Lists the NVIDIA GPUs (through NVML, loaded at run time): index (cuda:N),\n"
           "name, UUID, PCI bus id, memory, utilisation, temperature, power, processes.\n"
           "Without a driver: one line saying so, exit status 0.\n");
}

static int gpus_handler(void *ctx, int key, const char *arg)
{
    (void)arg;
    if (key == K_JSON)
        *(int *)ctx = 1;
    return 0;
}

static json_t *reading(long long v)
{
    return v < 0 ? json_null() : json_integer(v);
}

static void print_json(const ocp_gpu_list *g)
{
    json_t *o = json_object(), *arr = json_array();
    json_object_set_new(o, "driver", g->driver[0] ? json_string(g->driver) : json_null());
    for (int i = 0; i < g->n; i++) {
        const ocp_gpu_device *d = &g->dev[i];
        json_t *procs = json_array();
        for (int k = 0; k < d->n_procs; k++)
            json_array_append_new(
                procs, json_pack("{s:i, s:I, s:I}", "pid", (int)d->procs[k].pid,
                                 "used_memory_bytes", (json_int_t)d->procs[k].used_bytes,
                                 "used_memory_mib", (json_int_t)(d->procs[k].used_bytes >> 20)));
        json_t *dj = json_object();
        json_object_set_new(dj, "index", json_integer(d->index));
        json_object_set_new(dj, "device", json_sprintf("cuda:%d", d->index));
        json_object_set_new(dj, "name", json_string(d->name));
        json_object_set_new(dj, "uuid", json_string(d->uuid));
        json_object_set_new(dj, "pci_bus_id", json_string(d->pci_bus_id));
        json_object_set_new(dj, "memory_total_mib", json_integer((json_int_t)(d->mem_total >> 20)));
        json_object_set_new(dj, "memory_used_mib", json_integer((json_int_t)(d->mem_used >> 20)));
        json_object_set_new(dj, "memory_free_mib", json_integer((json_int_t)(d->mem_free >> 20)));
        json_object_set_new(dj, "memory_total_bytes", json_integer((json_int_t)d->mem_total));
        json_object_set_new(dj, "memory_used_bytes", json_integer((json_int_t)d->mem_used));
        json_object_set_new(dj, "utilization_gpu_percent", reading(d->util_gpu));
        json_object_set_new(dj, "utilization_memory_percent", reading(d->util_mem));
        json_object_set_new(dj, "temperature_c", reading(d->temp_c));
        json_object_set_new(dj, "power_w",
                            d->power_mw < 0 ? json_null() : json_real(d->power_mw / 1000.0));
        json_object_set_new(dj, "processes", procs);
        json_array_append_new(arr, dj);
    }
    json_object_set_new(o, "gpus", arr);
    if (g->n == 0)
        json_object_set_new(o, "error", json_string(g->why));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    printf("%s\n", s);
    free(s);
    json_decref(o);
}

static void print_text(const ocp_gpu_list *g)
{
    if (g->n == 0) {
        printf("no NVIDIA GPU found (%s)\n", g->why);
        return;
    }
    printf("driver %s, %d GPU%s\n", g->driver, g->n, g->n > 1 ? "s" : "");
    for (int i = 0; i < g->n; i++) {
        const ocp_gpu_device *d = &g->dev[i];
        printf("cuda:%d  %s  %s  %s\n", d->index, d->name, d->uuid, d->pci_bus_id);
        printf("        memory %llu MiB total, %llu MiB used, %llu MiB free", d->mem_total >> 20,
               d->mem_used >> 20, d->mem_free >> 20);
        if (d->util_gpu >= 0)
            printf(", utilisation %d%% (memory %d%%)", d->util_gpu, d->util_mem);
        if (d->temp_c >= 0)
            printf(", %d C", d->temp_c);
        if (d->power_mw >= 0)
            printf(", %.0f W", d->power_mw / 1000.0);
        printf("\n");
        for (int k = 0; k < d->n_procs; k++)
            printf("        process %u: %llu MiB\n", d->procs[k].pid, d->procs[k].used_bytes >> 20);
    }
}

int ocp_cmd_gpus(int argc, char **argv)
{
    ocp_config *cfg;
    char **pos;
    int npos, json = 0, rc;
    rc = ocp_cli_parse(argc, argv, gpus_opts, gpus_handler, &json, gpus_help, &cfg, &pos, &npos);
    if (rc)
        return rc < 0 ? OCP_EXIT_OK : rc;
    ocp_gpu_list *g = calloc(1, sizeof *g);
    if (!g) {
        fprintf(stderr, "ocrpool: out of memory\n");
        rc = OCP_EXIT_FAILED;
    } else {
        ocp_gpu_discover(g);
        if (json)
            print_json(g);
        else
            print_text(g);
        free(g);
    }
    ocp_config_destroy(cfg);
    free(pos);
    return rc;
}
