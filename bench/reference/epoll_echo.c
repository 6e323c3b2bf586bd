/*
 * The near-the-limit reference for sockit's echo benchmarks: a minimal single-threaded epoll
 * echo server, the way one writes it by hand in C.
 *
 *   cc -O2 -o epoll_echo epoll_echo.c && ./epoll_echo 127.0.0.1 7000
 *
 * Level-triggered epoll, non-blocking sockets, accept4 until EAGAIN, one read into a stack
 * buffer and one write back per readable event. Bytes a full socket buffer could not take are
 * kept per connection and flushed on EPOLLOUT, with reading paused meanwhile, so a slow reader
 * gets backpressure rather than unbounded memory. Prints "READY <port>" on stderr once it
 * listens, so a harness can wait for it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define EVENTS 512

struct conn {
    int fd;
    size_t pending_len;  /* bytes of pending[] still to write */
    size_t pending_off;
    char *pending;
};

static int epfd;

static void conn_close(struct conn *c) {
    close(c->fd);  /* closing removes it from the epoll set */
    free(c->pending);
    free(c);
}

static void set_events(struct conn *c, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what it can of buf; keeps the rest and switches the connection to EPOLLOUT. */
static int send_or_keep(struct conn *c, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(c->fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->pending = malloc(len);
            if (!c->pending) return -1;
            memcpy(c->pending, buf, len);
            c->pending_len = len;
            c->pending_off = 0;
            set_events(c, EPOLLOUT);
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static int flush_pending(struct conn *c) {
    while (c->pending_off < c->pending_len) {
        ssize_t n = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
        if (n > 0) {
            c->pending_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    set_events(c, EPOLLIN);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    fprintf(stderr, "READY %d\n", ntohs(addr.sin_port));

    static char buf[BUF];
    struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;  /* EAGAIN, or out of descriptors: retry on the next event */
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (c->pending) {
                if (flush_pending(c) < 0) conn_close(c);
                continue;
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r > 0) {
                if (send_or_keep(c, buf, (size_t)r) < 0) conn_close(c);
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                conn_close(c);
            }
        }
    }
}
