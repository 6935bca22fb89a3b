/*
 * The C API as a C caller sees it, written from include/gemma_cyber.h and the README alone:
 * the built-in model against the golden vectors, and the documented status for each bad input.
 * Usage: c_api_test REPO_ROOT
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemma_cyber.h"

static int passed, failed;

#include "check.h"

/* Reads the data of a version-1 .npy file (fixed-size little-endian elements) into a new buffer. */
static void *read_npy(const char *root, const char *name, size_t element_size, size_t *count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/%s", root, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    unsigned char prefix[10];
    void *data = NULL;
    if (fread(prefix, 1, 10, f) == 10 && memcmp(prefix, "\x93NUMPY", 6) == 0) {
        long header_len = prefix[8] | (prefix[9] << 8);
        fseek(f, 0, SEEK_END);
        long size = ftell(f) - 10 - header_len;
        fseek(f, 10 + header_len, SEEK_SET);
        data = malloc((size_t)size);
        if (data != NULL && fread(data, 1, (size_t)size, f) == (size_t)size) {
            *count = (size_t)size / element_size;
        } else {
            free(data);
            data = NULL;
        }
    }
    fclose(f);
    return data;
}

static gemma_cyber_status create_from(const gemma_cyber_options *options, gemma_cyber_classifier **out) {
    *out = NULL;
    return gemma_cyber_create(options, out);
}

static int starts_with(const char *text, const char *prefix) {
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s REPO_ROOT\n", argv[0]);
        return 2;
    }
    const char *root = argv[1];
    CHECK(gemma_cyber_abi_version() == GEMMA_CYBER_ABI_VERSION, "abi version");
    CHECK(strcmp(gemma_cyber_version(), GEMMA_CYBER_VERSION) == 0, "version %s", gemma_cyber_version());
    CHECK(strcmp(gemma_cyber_last_error(), "") == 0, "no error yet");

    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    CHECK(options.struct_size == sizeof options, "struct_size set");
    CHECK(options.backend == GEMMA_CYBER_BACKEND_AUTO && isnan(options.threshold), "defaults");

    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = create_from(&options, &classifier);
    CHECK(status == GEMMA_CYBER_STATUS_OK && classifier != NULL, "create: %s", gemma_cyber_last_error());
    if (classifier == NULL) return 1;
    size_t dim = gemma_cyber_input_dim(classifier);
    CHECK(dim == 768, "input dim %zu", dim);
    CHECK(gemma_cyber_active_backend(classifier) != GEMMA_CYBER_BACKEND_AUTO, "backend resolved");
    CHECK(strlen(gemma_cyber_device_name(classifier)) > 0, "device name");

    /* Golden vectors. */
    size_t n_inputs = 0, n_expected = 0, n_labels = 0;
    float *inputs = read_npy(root, "default.inputs.npy", sizeof(float), &n_inputs);
    double *expected = read_npy(root, "default.expected.npy", sizeof(double), &n_expected);
    uint8_t *golden_labels = read_npy(root, "default.labels.npy", 1, &n_labels);
    CHECK(inputs && expected && golden_labels && n_inputs == n_expected * dim && n_labels == n_expected,
          "golden files readable under %s", root);
    if (!(inputs && expected && golden_labels)) return 1;
    size_t rows = n_expected;
    float *probabilities = malloc(rows * sizeof *probabilities);
    uint8_t *labels = malloc(rows);
    status = gemma_cyber_classify(classifier, inputs, rows, dim, probabilities, labels);
    CHECK(status == GEMMA_CYBER_STATUS_OK, "classify: %s", gemma_cyber_last_error());
    double worst = 0.0;
    for (size_t r = 0; r < rows; r++) {
        double d = fabs((double)probabilities[r] - expected[r]);
        if (d > worst) worst = d;
        CHECK(labels[r] == golden_labels[r], "label of row %zu", r);
    }
    CHECK(worst <= 1e-5, "max |probability - golden| = %g", worst);

    /* A batch large enough to be split across threads gives every row the same result. */
    enum { REPEAT = 10 };
    float *big = malloc(REPEAT * rows * dim * sizeof *big);
    float *big_probabilities = malloc(REPEAT * rows * sizeof *big_probabilities);
    for (size_t i = 0; i < REPEAT; i++) memcpy(big + i * rows * dim, inputs, rows * dim * sizeof *big);
    status = gemma_cyber_classify(classifier, big, REPEAT * rows, dim, big_probabilities, NULL);
    CHECK(status == GEMMA_CYBER_STATUS_OK, "large classify: %s", gemma_cyber_last_error());
    for (size_t i = 0; i < REPEAT; i++) {
        CHECK(memcmp(big_probabilities + i * rows, probabilities, rows * sizeof *probabilities) == 0,
              "copy %zu of the batch differs", i);
    }
    free(big);
    free(big_probabilities);

    /* Bad inputs: each its status, a message, and untouched outputs. */
    float out[2] = {-7.0f, -7.0f};
    uint8_t out_labels[2] = {9, 9};
#define UNTOUCHED (out[0] == -7.0f && out[1] == -7.0f && out_labels[0] == 9 && out_labels[1] == 9)

    status = gemma_cyber_classify(NULL, inputs, 1, dim, out, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_INVALID_ARGUMENT && UNTOUCHED, "NULL classifier");
    CHECK(starts_with(gemma_cyber_last_error(), "GEMMA_CYBER_STATUS_INVALID_ARGUMENT"), "%s", gemma_cyber_last_error());
    status = gemma_cyber_classify(classifier, NULL, 1, dim, out, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_INVALID_ARGUMENT && UNTOUCHED, "NULL embeddings");
    status = gemma_cyber_classify(classifier, inputs, 1, dim, NULL, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_INVALID_ARGUMENT && UNTOUCHED, "NULL probabilities");
    status = gemma_cyber_create(NULL, &classifier);
    CHECK(status == GEMMA_CYBER_STATUS_INVALID_ARGUMENT, "NULL options");

    status = gemma_cyber_classify(classifier, inputs, 1, 100, out, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_DIMENSION_MISMATCH && UNTOUCHED, "wrong dim");
    CHECK(strstr(gemma_cyber_last_error(), "100") && strstr(gemma_cyber_last_error(), "768"),
          "message names both dims: %s", gemma_cyber_last_error());

    status = gemma_cyber_classify(classifier, inputs, SIZE_MAX / 2, dim, out, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_INVALID_ARGUMENT && UNTOUCHED, "rows * dim overflow");

    float bad[2 * 768];
    memcpy(bad, inputs, sizeof bad);
    bad[768 + 5] = NAN;
    status = gemma_cyber_classify(classifier, bad, 2, dim, out, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_NON_FINITE_INPUT && UNTOUCHED, "NaN");
    bad[768 + 5] = 0.0f;
    bad[0] = -INFINITY;
    status = gemma_cyber_classify(classifier, bad, 2, dim, out, out_labels);
    CHECK(status == GEMMA_CYBER_STATUS_NON_FINITE_INPUT && UNTOUCHED, "-Inf");

    status = gemma_cyber_classify(classifier, NULL, 0, dim, NULL, NULL);
    CHECK(status == GEMMA_CYBER_STATUS_OK, "rows == 0 is a no-op");

    gemma_cyber_classifier *other = NULL;
    gemma_cyber_options_init(&options, sizeof options);
    options.model_path = "/nonexistent/model.safetensors";
    CHECK(create_from(&options, &other) == GEMMA_CYBER_STATUS_MODEL_NOT_FOUND && other == NULL, "missing model");

    static const uint8_t junk[] = "definitely not a safetensors file";
    gemma_cyber_options_init(&options, sizeof options);
    options.model_data = junk;
    options.model_data_len = sizeof junk;
    CHECK(create_from(&options, &other) == GEMMA_CYBER_STATUS_MODEL_INVALID && other == NULL, "junk model");

    gemma_cyber_options_init(&options, sizeof options);
    options.struct_size = 8;
    CHECK(create_from(&options, &other) == GEMMA_CYBER_STATUS_INVALID_ARGUMENT, "struct_size too small");

    gemma_cyber_options_init(&options, sizeof options);
    options.backend = (gemma_cyber_backend)42;
    CHECK(create_from(&options, &other) == GEMMA_CYBER_STATUS_INVALID_ARGUMENT, "unknown backend");

    CHECK(gemma_cyber_active_backend(NULL) == GEMMA_CYBER_BACKEND_AUTO, "NULL accessor");
    CHECK(strcmp(gemma_cyber_device_name(NULL), "") == 0 && gemma_cyber_input_dim(NULL) == 0, "NULL accessors");
    gemma_cyber_destroy(NULL);

    gemma_cyber_destroy(classifier);
    free(inputs);
    free(expected);
    free(golden_labels);
    free(probabilities);
    free(labels);
    printf("c_api_test: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
