// A scheduler-heavy workload (as `perf bench sched pipe`): two threads of one process pass a byte back and forth
// over two pipes, so every round trip is two wakeups and at least two context switches. Kept alive between rounds
// so a probe can watch its pid: prints "pid N", then for each "go" line on stdin runs ROUNDS round trips and prints
// "NS_PER_ROUND_TRIP SWITCHES_PER_S"; "q" quits. CPU: both threads pinned to it (-1: not pinned).
// Build: gcc -O2 -pthread -o sched_pingpong sched_pingpong.c
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];
static long rounds;
static int cpu = -1;

static void pin(void) {
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static void *echo(void *arg) {
    char b;
    pin();
    while (read(ping[0], &b, 1) == 1)
        if (write(pong[1], &b, 1) != 1)
            break;
    return arg;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 100000;
    cpu = argc > 2 ? atoi(argv[2]) : -1;
    if (pipe(ping) || pipe(pong))
        return 1;
    pin();
    pthread_t t;
    pthread_create(&t, NULL, echo, NULL);
    printf("pid %d\n", getpid());
    fflush(stdout);
    char line[64], b = 'x';
    while (fgets(line, sizeof(line), stdin) && strncmp(line, "q", 1) != 0) {
        double t0 = now_s();
        for (long i = 0; i < rounds; i++)
            if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1)
                return 1;
        double dt = now_s() - t0;
        printf("%.1f %.0f\n", dt * 1e9 / rounds, 2.0 * rounds / dt);
        fflush(stdout);
    }
    return 0;
}
