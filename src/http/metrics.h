/*
 * metrics.h: the Prometheus text exposition of GET /metrics (metrics.c),
 * inside the HTTP module.
 */
#ifndef OCP_HTTP_METRICS_H
#define OCP_HTTP_METRICS_H

#include "broker/broker.h"
#include "core/util.h"

#include <jansson.h>

/* Appends the exposition to sb: the queue's counts n, and the node's figures stats (the
 * master's "stats" reply, borrowed) when there is a node (NULL: no node series). */
void ocp__http_metrics(ocp_sb *sb, const ocp_counts *n, json_t *stats);

#endif
