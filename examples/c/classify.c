/*
 * Classifies a few embeddings with the built-in model (or the model file given as argv[1]),
 * then shows what a bad call returns. Build: see run.sh next to this file.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "gemma_cyber.h"

#define ROWS 4

/* Deterministic unit-length rows, like sentence embeddings. */
static void make_embeddings(float *out, size_t rows, size_t dim) {
    uint32_t state = 12345u;
    for (size_t r = 0; r < rows; r++) {
        double norm = 0.0;
        for (size_t c = 0; c < dim; c++) {
            state = state * 1664525u + 1013904223u;
            float v = (float)((double)(state >> 8) / 16777216.0 - 0.5);
            out[r * dim + c] = v;
            norm += (double)v * v;
        }
        for (size_t c = 0; c < dim; c++) out[r * dim + c] /= (float)sqrt(norm);
    }
}

int main(int argc, char **argv) {
    printf("gemma-cyber %s (ABI %u)\n", gemma_cyber_version(), gemma_cyber_abi_version());

    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    if (argc > 1) options.model_path = argv[1];

    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = gemma_cyber_create(&options, &classifier);
    if (status != GEMMA_CYBER_STATUS_OK) {
        fprintf(stderr, "create failed (%d): %s\n", (int)status, gemma_cyber_last_error());
        return 1;
    }
    size_t dim = gemma_cyber_input_dim(classifier);
    printf("device: %s, input dim %zu\n", gemma_cyber_device_name(classifier), dim);

    float *embeddings = malloc(ROWS * dim * sizeof *embeddings);
    if (embeddings == NULL) {
        gemma_cyber_destroy(classifier);
        return 1;
    }
    make_embeddings(embeddings, ROWS, dim);

    float probabilities[ROWS];
    uint8_t labels[ROWS];
    status = gemma_cyber_classify(classifier, embeddings, ROWS, dim, probabilities, labels);
    if (status != GEMMA_CYBER_STATUS_OK) {
        fprintf(stderr, "classify failed (%d): %s\n", (int)status, gemma_cyber_last_error());
        free(embeddings);
        gemma_cyber_destroy(classifier);
        return 1;
    }
    for (size_t r = 0; r < ROWS; r++) {
        printf("row %zu: probability %.6f, %s\n", r, probabilities[r], labels[r] ? "cyber" : "not cyber");
    }

    /* A wrong width is refused with a status and a message; nothing is written. */
    status = gemma_cyber_classify(classifier, embeddings, 1, dim - 1, probabilities, labels);
    printf("wrong dim -> status %d: %s\n", (int)status, gemma_cyber_last_error());

    free(embeddings);
    gemma_cyber_destroy(classifier);
    return status == GEMMA_CYBER_STATUS_DIMENSION_MISMATCH ? 0 : 1;
}
