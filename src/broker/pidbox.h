/*
 * pidbox.h: Celery's remote control and events over Redis, as kombu lays
 * them out, for a node that is a Celery worker to `celery inspect`,
 * `celery control`, `celery events` and Flower.
 *
 * The wire (kombu's Redis transport, fanout_prefix and fanout_patterns on,
 * as Celery sets them):
 *   - control: clients PUBLISH a message on the channel "/<db>.celery.pidbox"
 *     (the fanout exchange "celery.pidbox"); every node PSUBSCRIBEs to it.
 *     The body is {method, arguments, destination, pattern, matcher} and,
 *     when a reply is wanted, ticket and reply_to {exchange, routing_key};
 *     headers carry clock and expires (a message past expires is ignored).
 *   - replies: {<node name>: value} sent to the direct exchange
 *     "reply.celery.pidbox": LPUSHed on each queue whose member of the set
 *     "_kombu.binding.reply.celery.pidbox" ("key\x06\x16\x06\x16queue")
 *     has the reply's routing key, with headers {ticket, clock}.
 *   - events: the exchange "celeryev" is a fanout on Redis: PUBLISH on
 *     "/<db>.celeryev/<routing key>" ("worker.heartbeat", "task.succeeded")
 *     of an event {hostname, utcoffset, pid, clock, timestamp, type, ...}.
 * Every message is kombu's envelope: {body (base64 of the JSON), content-type
 * application/json, content-encoding utf-8, headers, properties
 * {delivery_mode, delivery_info {exchange, routing_key}, priority,
 * body_encoding "base64", delivery_tag}}.
 *
 * The connections are non-blocking (hiredis without REDIS_BLOCK): the
 * caller watches the descriptors ocp_pidbox_fd gives and calls
 * ocp_pidbox_io when one is ready, so the master's loop never waits on
 * Redis here. Replies and events are sent when the connection takes them;
 * while Redis is away they are dropped (a client's call times out; events
 * are transient in Celery too) and the connections come back with a
 * back-off. Names: public ocp_pidbox_*, ocp_celery_event_*.
 */
#ifndef OCP_BROKER_PIDBOX_H
#define OCP_BROKER_PIDBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The longest control message read (a revoke of many ids stays far below). */
#define OCP_PIDBOX_MAX_MESSAGE (1 << 20)

/* A control request for this node. Open type; owned fields freed by ocp_pidbox_req_fini. */
typedef struct ocp_pidbox_req {
    char *method;      /* "ping", "stats", "revoke", ... */
    json_t *arguments; /* an object (empty when the message had none) */
    char *ticket;      /* NULL: no reply wanted (a cast) */
    char *reply_exchange, *reply_key;
    double expires;  /* seconds since the epoch, 0 = none */
    long long clock; /* the sender's Lamport clock, 0 = none */
} ocp_pidbox_req;

void ocp_pidbox_req_fini(ocp_pidbox_req *r);

/*
 * Parses a message published on the pidbox channel (len bytes of untrusted
 * text) for node (its name, "celery@host"). Returns 0 with *for_us 1 and req
 * filled when the message names this node (no destination, node among its
 * destinations, or its pattern matches: matcher "glob" as fnmatch, "pcre"
 * as a POSIX extended expression anchored at the start, as Python's
 * re.match), 0 with *for_us 0 when it is another node's, else OCP_E_MESSAGE
 * with the reason in err (req empty). now: a message whose headers' expires
 * is past is not for us.
 */
int ocp_pidbox_parse(const char *raw, size_t len, const char *node, double now, ocp_pidbox_req *req,
                     int *for_us, char *err, size_t errlen);

/*
 * kombu's envelope of a JSON body (borrowed) for exchange and routing_key,
 * with headers (borrowed, NULL = {}), delivery_mode (1 transient, 2
 * persistent). New string.
 */
char *ocp_pidbox_envelope(json_t *body, json_t *headers, const char *exchange,
                          const char *routing_key, int delivery_mode);

typedef struct ocp_pidbox ocp_pidbox;

/*
 * Opens the node's mailbox on the Redis of url ("redis://..."), as node
 * (the name replies and events carry). Connects (non-blocking) at once;
 * nothing here waits on Redis. *out is new (ocp_pidbox_close); err says why
 * on a bad URL.
 */
int ocp_pidbox_open(const char *url, const char *node, ocp_pidbox **out, char *err, size_t errlen);
/* Flushes what waits to be sent for at most linger_s seconds (worker-offline at a stop), then
 * closes. NULL does nothing. */
void ocp_pidbox_close(ocp_pidbox *p, double linger_s);

/* Connection i (0: the subscriber, 1: the publisher): its descriptor (-1 when there is none
 * now) and the poll events it waits for. */
int ocp_pidbox_fd(const ocp_pidbox *p, int i, short *events);
/* Descriptor fd is ready (revents); reads, writes, and finishes a connect. */
void ocp_pidbox_io(ocp_pidbox *p, int fd, short revents);
/* Reconnects what is down when its back-off allows; call about once a second. */
void ocp_pidbox_tick(ocp_pidbox *p);
/* The next request for this node that arrived, if any: 1 with *req filled (fini it), else 0.
 * Messages for other nodes and malformed ones (logged) are skipped. */
int ocp_pidbox_next(ocp_pidbox *p, ocp_pidbox_req *req);
/* Answers req ({node: value}; value stolen, NULL = null) when it wants an answer. */
void ocp_pidbox_reply(ocp_pidbox *p, const ocp_pidbox_req *req, json_t *value);
/* The node's Lamport clock, advanced (events and replies carry it). */
long long ocp_pidbox_clock(ocp_pidbox *p);
/* The Redis the mailbox talks to (borrowed host), for Celery's stats "broker". */
void ocp_pidbox_broker(const ocp_pidbox *p, const char **host, int *port, int *db);
/* Whether both connections are up. */
bool ocp_pidbox_up(const ocp_pidbox *p);
/* Counts of what could not be sent (Redis away, or the send buffer full). */
long ocp_pidbox_dropped(const ocp_pidbox *p);

/*
 * Publishes an event of type ("worker-heartbeat", "task-succeeded") with
 * fields (stolen; NULL = none) beside the ones every event has: hostname,
 * utcoffset, pid, clock, timestamp, type. Its routing key is the type with
 * '-' as '.'.
 */
void ocp_celery_event(ocp_pidbox *p, const char *type, json_t *fields);
/* An event's body (new reference): fields (stolen) and the common ones. For tests. */
json_t *ocp_celery_event_body(const char *node, long long clock, const char *type, json_t *fields);

/* For events.c: publishes text (an envelope) on the fanout channel of exchange with
 * routing_key ("/<db>.celeryev/worker.heartbeat"); the node's name (borrowed). */
void ocp__pidbox_publish(ocp_pidbox *p, const char *exchange, const char *routing_key,
                         const char *text);
const char *ocp__pidbox_node(const ocp_pidbox *p);

#endif
