/*
 * failure.h: why a page failed, as a value.
 *
 * Every failed or released page carries a kind from this one table (the
 * X-macro below generates the enum, the names and the texts, as error.h
 * does for error codes) and, beside it, the human reason. Kinds travel by
 * name ("memory_limit") in the master's protocol, the broker's storage and
 * the results; code compares kinds as values, never their reasons as text.
 */
#ifndef OCP_CORE_FAILURE_H
#define OCP_CORE_FAILURE_H

#include <stdbool.h>

/* X(NAME, "name", retried, "what it means") */
#define OCP_FAILURE_MAP(X)                                                                         \
    X(NONE, "none", false, "no failure")                                                           \
    X(INPUT, "input", false, "the page's input cannot be read")                                    \
    X(ENGINE, "engine", false, "the OCR engine failed on the page")                                \
    X(SOFT_TIME_LIMIT, "soft_time_limit", false, "page-timeout stopped the OCR")                   \
    X(MEMORY_LIMIT, "memory_limit", true, "the worker crossed hard-memory-limit")                  \
    X(TIME_LIMIT, "time_limit", true, "the worker ran past time-limit and was stopped")            \
    X(CRASHED, "crashed", true, "the worker died during the page")                                 \
    X(BUDGET, "memory_budget", false, "the page needs more than memory-budget allows")             \
    X(MALFORMED, "malformed", false, "the task's message is malformed")                            \
    X(SHUTDOWN, "shutdown", false, "the node stopped before the page finished")                    \
    X(REVOKED, "revoked", false, "the task was revoked or expired before it ran")

typedef enum ocp_failure {
#define OCP_FAILURE_ENUM(name, str, retried, text) OCP_FAIL_##name,
    OCP_FAILURE_MAP(OCP_FAILURE_ENUM)
#undef OCP_FAILURE_ENUM
        OCP_FAIL__COUNT
} ocp_failure;

/* The kind's name as it travels ("memory_limit"). Static; never NULL. */
const char *ocp_failure_name(ocp_failure f);
/* What the kind means, for people. Static; never NULL. */
const char *ocp_failure_text(ocp_failure f);
/* The kind named s; OCP_FAIL_NONE for NULL, OCP_FAIL_ENGINE for a name not in the table. */
ocp_failure ocp_failure_parse(const char *s);
/* Whether a page that failed so is delivered again (until max-deliveries): the worker's
 * circumstances, not the page's content, ended it. */
bool ocp_failure_retried(ocp_failure f);
/* The kind of a failure the engine or image code returned as an error code (error.h). */
ocp_failure ocp_failure_of_error(int err);

#endif
