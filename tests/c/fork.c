/*
 * A pre-forking server's pattern: a classifier created and used (so the cpu backend's worker
 * threads are running) in the parent, then used and destroyed in a forked child, which has none
 * of those threads. The child must get the parent's probabilities bit for bit, in the same time
 * order of magnitude (an alarm turns a hang into a failure), and the parent must go on working.
 * Prints "parent: N passed, M failed" and "child: N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gemma_cyber.h"

static int passed, failed;

#include "check.h"

/* Below and above the row count at which the cpu backend shares a batch by rows, not outputs. */
static const size_t BATCHES[] = {1, 3, 100, 512};
#define BATCH_COUNT (sizeof BATCHES / sizeof BATCHES[0])
#define MOST_ROWS 512

/* Classifies the first `rows` embeddings; 0 when the call failed. */
static int classify(gemma_cyber_classifier *classifier, const float *embeddings, size_t rows,
                    float *probabilities) {
    gemma_cyber_status status =
        gemma_cyber_classify(classifier, embeddings, rows, 768, probabilities, NULL);
    CHECK(status == GEMMA_CYBER_STATUS_OK, "classify %zu rows: status %d (%s)", rows, (int)status,
          gemma_cyber_last_error());
    return status == GEMMA_CYBER_STATUS_OK;
}

/* Every batch's probabilities equal to `expected`, row for row. */
static void check_against(gemma_cyber_classifier *classifier, const float *embeddings,
                          const float expected[BATCH_COUNT][MOST_ROWS], const char *who) {
    static float got[MOST_ROWS];
    for (size_t b = 0; b < BATCH_COUNT; b++) {
        if (!classify(classifier, embeddings, BATCHES[b], got)) continue;
        CHECK(memcmp(got, expected[b], BATCHES[b] * sizeof(float)) == 0,
              "%s: %zu rows differ from the parent's first call", who, BATCHES[b]);
    }
}

int main(void) {
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    options.backend = GEMMA_CYBER_BACKEND_CPU;
    options.num_threads = 2;
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = gemma_cyber_create(&options, &classifier);
    if (status != GEMMA_CYBER_STATUS_OK) {
        fprintf(stderr, "create: status %d (%s)\n", (int)status, gemma_cyber_last_error());
        return 1;
    }
    float *embeddings = malloc(MOST_ROWS * 768 * sizeof(float));
    static float expected[BATCH_COUNT][MOST_ROWS];
    if (embeddings == NULL) return 1;
    for (size_t i = 0; i < MOST_ROWS * 768; i++) embeddings[i] = (float)sin((double)i * 0.37);
    for (size_t b = 0; b < BATCH_COUNT; b++) classify(classifier, embeddings, BATCHES[b], expected[b]);

    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        alarm(60);
        passed = failed = 0;
        check_against(classifier, embeddings, (const float(*)[MOST_ROWS])expected, "child");
        gemma_cyber_destroy(classifier);
        printf("child: %d passed, %d failed\n", passed, failed);
        fflush(stdout);
        _exit(failed == 0 ? 0 : 1);
    }
    CHECK(child > 0, "fork failed");
    int child_status = 0;
    if (child > 0) {
        CHECK(waitpid(child, &child_status, 0) == child, "waitpid");
        CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0,
              "child ended with wait status %d (a signal %d means it hung or crashed)",
              child_status, WIFSIGNALED(child_status) ? WTERMSIG(child_status) : 0);
    }
    check_against(classifier, embeddings, (const float(*)[MOST_ROWS])expected, "parent");
    gemma_cyber_destroy(classifier);
    free(embeddings);
    printf("parent: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
