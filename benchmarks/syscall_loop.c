// Tight getppid loop for overhead benchmarks: waits for a line on stdin, runs N calls on T threads, prints the
// wall-clock ns per call (per thread) and the aggregate calls per second.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long calls_per_thread;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *arg) {
    (void)arg;
    for (long i = 0; i < calls_per_thread; i++)
        syscall(SYS_getppid);
    return NULL;
}

int main(int argc, char **argv) {
    calls_per_thread = argc > 1 ? atol(argv[1]) : 5000000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    char line[64];
    printf("ready %d\n", getpid());
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'q')
            break;
        pthread_t tid[64];
        double t0 = now_s();
        for (int t = 0; t < threads; t++)
            pthread_create(&tid[t], NULL, worker, NULL);
        for (int t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
        double dt = now_s() - t0;
        printf("%.3f %.0f\n", dt * 1e9 / calls_per_thread, threads * calls_per_thread / dt);
        fflush(stdout);
    }
    return 0;
}
