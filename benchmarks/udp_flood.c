// A UDP flood to 127.0.0.1:PORT for SECONDS: batches of 64 datagrams of 1200 bytes per sendmmsg, so the CPU it runs
// on spends a large share of its time in the NET_RX softirq that delivers them. Prints datagrams sent per second.
// Build: gcc -O2 -o udp_flood udp_flood.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    static char buf[1200];
    struct iovec iov = {buf, sizeof(buf)};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    double seconds = atof(argv[2]), t0 = now_s(), t;
    long sent = 0;
    do {
        int n = sendmmsg(s, msgs, BATCH, 0);
        if (n > 0)
            sent += n;
        t = now_s();
    } while (t - t0 < seconds);
    printf("%.0f\n", sent / (t - t0));
    return 0;
}
