/*
 * own_redis.h: a redis-server of a unit test's own, on a free loopback
 * port, without persistence, in a temporary folder (test_broker's Redis
 * cases when no Redis is named). Included by one test file only: its
 * functions are static.
 */
#ifndef OCP_TEST_OWN_REDIS_H
#define OCP_TEST_OWN_REDIS_H

#include <arpa/inet.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t own_pid;
static char own_url[128], own_dir[256];

/* Starts redis-server on a free loopback port, without persistence, in a temporary folder;
 * its URL in own_url. Nothing happens when there is no redis-server. */
static void start_own_redis(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0)
            close(fd);
        return;
    }
    close(fd);
    int port = ntohs(a.sin_port);
    const char *tmp = getenv("TMPDIR");
    snprintf(own_dir, sizeof own_dir, "%s/ocp-test-redis-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(own_dir))
        return;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    own_pid = fork();
    if (own_pid == 0) {
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", own_dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; own_pid > 0 && i < 100; i++) {
        if (waitpid(own_pid, NULL, WNOHANG) == own_pid) {
            own_pid = 0; /* not installed, or it could not start */
            break;
        }
        redisContext *c = redisConnect("127.0.0.1", port);
        redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
        int up = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (up) {
            snprintf(own_url, sizeof own_url, "redis://127.0.0.1:%d/0", port);
            return;
        }
        usleep(50 * 1000);
    }
}

static void stop_own_redis(void)
{
    if (own_pid > 0) {
        kill(own_pid, SIGTERM);
        waitpid(own_pid, NULL, 0);
    }
    if (own_dir[0])
        rmdir(own_dir);
}

#endif
