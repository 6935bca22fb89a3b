/*
 * Checks that every bad input gets its documented status, a message, and no output written.
 * Run by run.sh (also under valgrind and the sanitizers); exits non-zero on the first surprise.
 */
#define _POSIX_C_SOURCE 200809L /* mkstemp */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemma_cyber.h"

static int failures = 0;

static void expect(const char *what, gemma_cyber_status got, gemma_cyber_status want) {
    const char *message = gemma_cyber_last_error();
    if (got != want || (want != GEMMA_CYBER_STATUS_OK && message[0] == '\0')) {
        fprintf(stderr, "FAIL %s: status %d, want %d (%s)\n", what, (int)got, (int)want, message);
        failures++;
    } else {
        /* After a success the last error is stale (successes leave it as it was): not shown. */
        printf("ok   %s -> %d %s\n", what, (int)got, want == GEMMA_CYBER_STATUS_OK ? "" : message);
    }
}

/* create() with `model_path` and `backend` set over the defaults; destroys what it made. */
static gemma_cyber_status try_create(const char *model_path, uint32_t backend) {
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    options.model_path = model_path;
    /* Written as an integer: an enum variable must not hold an unknown value in C++ callers. */
    memcpy(&options.backend, &backend, sizeof backend);
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = gemma_cyber_create(&options, &classifier);
    gemma_cyber_destroy(classifier);
    return status;
}

int main(void) {
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    if (gemma_cyber_create(&options, &classifier) != GEMMA_CYBER_STATUS_OK) {
        fprintf(stderr, "create failed: %s\n", gemma_cyber_last_error());
        return 1;
    }
    size_t dim = gemma_cyber_input_dim(classifier);
    float *row = calloc(dim, sizeof *row);
    if (row == NULL) return 1;
    row[0] = 1.0f;
    float probability = -1.0f;
    uint8_t label = 7;

    expect("classify(NULL classifier)",
           gemma_cyber_classify(NULL, row, 1, dim, &probability, &label), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("classify(NULL embeddings)",
           gemma_cyber_classify(classifier, NULL, 1, dim, &probability, &label), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("classify(NULL probabilities)",
           gemma_cyber_classify(classifier, row, 1, dim, NULL, &label), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("classify(rows * dim overflows)",
           gemma_cyber_classify(classifier, row, SIZE_MAX, dim, &probability, &label),
           GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("classify(wrong dim)",
           gemma_cyber_classify(classifier, row, 1, dim - 1, &probability, &label),
           GEMMA_CYBER_STATUS_DIMENSION_MISMATCH);
    row[1] = NAN;
    expect("classify(NaN)", gemma_cyber_classify(classifier, row, 1, dim, &probability, &label),
           GEMMA_CYBER_STATUS_NON_FINITE_INPUT);
    row[1] = INFINITY;
    expect("classify(Inf)", gemma_cyber_classify(classifier, row, 1, dim, &probability, &label),
           GEMMA_CYBER_STATUS_NON_FINITE_INPUT);
    if (probability != -1.0f || label != 7) {
        fprintf(stderr, "FAIL a failed classify wrote its outputs\n");
        failures++;
    }
    expect("classify(0 rows, NULL buffers)",
           gemma_cyber_classify(classifier, NULL, 0, dim, NULL, NULL), GEMMA_CYBER_STATUS_OK);

    expect("create(NULL options)", gemma_cyber_create(NULL, &classifier), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("create(NULL out)", gemma_cyber_create(&options, NULL), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    gemma_cyber_options small;
    gemma_cyber_options_init(&small, sizeof small);
    small.struct_size = (uint32_t)(sizeof small - 1);
    gemma_cyber_classifier *unused = NULL;
    expect("create(struct_size < v1)", gemma_cyber_create(&small, &unused), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("create(unknown backend 99)", try_create(NULL, 99), GEMMA_CYBER_STATUS_INVALID_ARGUMENT);
    expect("create(missing model file)", try_create("/nonexistent/gemma-cyber/model.safetensors", 0),
           GEMMA_CYBER_STATUS_MODEL_NOT_FOUND);

    char junk_path[] = "/tmp/gemma-cyber-junk-XXXXXX";
    int fd = mkstemp(junk_path);
    if (fd < 0 || write(fd, "this is not a safetensors file", 30) != 30) return 1;
    close(fd);
    expect("create(junk model file)", try_create(junk_path, 0), GEMMA_CYBER_STATUS_MODEL_INVALID);
    unlink(junk_path);

    gemma_cyber_destroy(NULL); /* documented as fine */
    free(row);
    gemma_cyber_destroy(classifier);
    if (unused != NULL) {
        fprintf(stderr, "FAIL a failed create wrote *out\n");
        failures++;
    }
    printf("%s\n", failures == 0 ? "all bad inputs refused as documented" : "FAILED");
    return failures == 0 ? 0 : 1;
}
