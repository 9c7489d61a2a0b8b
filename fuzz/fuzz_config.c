/*
 * fuzz_config.c: a config file (src/config/config.c) as `--config FILE`
 * reads it: written to the harness's temporary folder, loaded over the
 * defaults, finished (presets), then shown as text and as JSON.
 */
#include "common.h"
#include "config/config.h"

#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *null;
    if (!null && !(null = fopen("/dev/null", "we")))
        return 0;
    char path[4200];
    if (fz_write("ocrpool.conf", data, size, path, sizeof path))
        return 0;
    ocp_config *c = ocp_config_create();
    if (ocp_config_load_file(c, path) == 0 && ocp_config_finish(c) == 0) {
        ocp_config_show(c, null, false, "tesseract", 0);
        ocp_config_show(c, null, true, "tesseract", 0);
    }
    ocp_config_errmsg(c);
    ocp_config_destroy(c);
    return 0;
}
