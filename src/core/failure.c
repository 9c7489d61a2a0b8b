/*
 * failure.c: the failure kinds' table (failure.h).
 */
#include "core/failure.h"
#include "core/error.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *name, *text;
    bool retried;
} kinds[] = {
#define OCP_FAILURE_ROW(name, str, retried, text) {str, text, retried},
    OCP_FAILURE_MAP(OCP_FAILURE_ROW)
#undef OCP_FAILURE_ROW
};

const char *ocp_failure_name(ocp_failure f)
{
    return (unsigned)f < OCP_FAIL__COUNT ? kinds[f].name : "engine";
}

const char *ocp_failure_text(ocp_failure f)
{
    return (unsigned)f < OCP_FAIL__COUNT ? kinds[f].text : kinds[OCP_FAIL_ENGINE].text;
}

ocp_failure ocp_failure_parse(const char *s)
{
    if (!s)
        return OCP_FAIL_NONE;
    for (int i = 0; i < OCP_FAIL__COUNT; i++)
        if (strcmp(s, kinds[i].name) == 0)
            return (ocp_failure)i;
    return OCP_FAIL_ENGINE;
}

bool ocp_failure_retried(ocp_failure f)
{
    return (unsigned)f < OCP_FAIL__COUNT && kinds[f].retried;
}

ocp_failure ocp_failure_of_error(int err)
{
    switch (err) {
    case 0:
        return OCP_FAIL_NONE;
    case OCP_E_FORMAT:
    case OCP_E_DECODE:
    case OCP_E_TOOBIG:
    case OCP_E_PAGES:
    case OCP_E_EMPTY:
    case OCP_E_INPUT_SIZE:
    case OCP_E_NOPAGE:
    case OCP_E_LANG: /* a language the node does not have, or may not load for a task */
        return OCP_FAIL_INPUT;
    case OCP_E_TIMEOUT:
        return OCP_FAIL_SOFT_TIME_LIMIT;
    case OCP_E_MESSAGE:
        return OCP_FAIL_MALFORMED;
    default:
        return err == -ENOENT || err == -EACCES || err == -EISDIR ? OCP_FAIL_INPUT
                                                                   : OCP_FAIL_ENGINE;
    }
}
