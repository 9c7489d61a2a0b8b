/*
 * events.c: Celery's events (pidbox.h), sent on the publisher connection of
 * a node's mailbox: {hostname, utcoffset, pid, clock, timestamp, type} and
 * the type's own fields, in kombu's envelope with headers {hostname}, on
 * the "celeryev" exchange (a fanout on Redis) under the routing key of the
 * type ("task-succeeded" -> "task.succeeded"). Celery's receivers (celery
 * events, Flower) take single events as well as its buffered "task.multi"
 * lists; ocrpool sends each event on its own, as it happens.
 */
#include "broker/pidbox.h"
#include "broker/broker.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Celery's utcoffset(): hours west of UTC, as Python's time.timezone (altzone in summer). */
static int utcoffset(void)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    long west = -tm.tm_gmtoff;
    return (int)(west >= 0 ? west / 3600 : -((-west + 3599) / 3600));
}

json_t *ocp_celery_event_body(const char *node, long long clock, const char *type, json_t *fields)
{
    json_t *e = fields ? fields : json_object();
    json_object_set_new(e, "hostname", json_string(node));
    json_object_set_new(e, "utcoffset", json_integer(utcoffset()));
    json_object_set_new(e, "pid", json_integer(getpid()));
    json_object_set_new(e, "clock", json_integer(clock));
    json_object_set_new(e, "timestamp", json_real(ocp_wall_now()));
    json_object_set_new(e, "type", json_string(type));
    return e;
}

void ocp_celery_event(ocp_pidbox *p, const char *type, json_t *fields)
{
    const char *node = ocp__pidbox_node(p);
    json_t *e = ocp_celery_event_body(node, ocp_pidbox_clock(p), type, fields);
    char key[64];
    snprintf(key, sizeof key, "%s", type);
    for (char *c = key; *c; c++)
        if (*c == '-')
            *c = '.';
    json_t *h = json_pack("{s:s}", "hostname", node);
    char *text = ocp_pidbox_envelope(e, h, "celeryev", key, 1);
    ocp__pidbox_publish(p, "celeryev", key, text);
    free(text);
    json_decref(h);
    json_decref(e);
}
