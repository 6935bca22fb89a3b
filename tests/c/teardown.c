/*
 * Calls into the library while the calling thread is being torn down, after the library's
 * thread-locals are gone: from a pthread-key destructor on a worker thread, and from an atexit
 * handler on the main thread. Every call must return its documented status (never abort) and the
 * last error must stay readable, a pointer to it kept from before the teardown too. Prints
 * "<where>: N passed, M failed" for each.
 * Usage: teardown [cpu|onnxruntime]  (default cpu)
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemma_cyber.h"

static int passed, failed;

#include "check.h"

/* Enough rows for the cpu backend to share a batch out among threads. */
#define ROWS 512

static int starts_with(const char *text, const char *prefix) {
    return text != NULL && strncmp(text, prefix, strlen(prefix)) == 0;
}

static gemma_cyber_backend backend = GEMMA_CYBER_BACKEND_CPU;

static gemma_cyber_classifier *create_classifier(uint32_t threads) {
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    options.backend = backend;
    options.num_threads = threads;
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = gemma_cyber_create(&options, &classifier);
    CHECK(status == GEMMA_CYBER_STATUS_OK, "create: status %d (%s)", (int)status,
          gemma_cyber_last_error());
    return classifier;
}

/* This thread's last error as it was when warm_up ended: a failing call's message, which the
   library promises stays valid until this thread's next failing call. */
static _Thread_local const char *kept_error;

/* Every kind of call, valid and failing, as a thread or process on its way out would make it. */
static void exercise(const char *where) {
    passed = failed = 0;
    CHECK(starts_with(kept_error, "GEMMA_CYBER_STATUS_NON_FINITE_INPUT"),
          "the last error kept from before the teardown: %s", kept_error ? kept_error : "(none)");
    gemma_cyber_classifier *classifier = create_classifier(4);
    if (classifier != NULL) {
        size_t dim = gemma_cyber_input_dim(classifier);
        CHECK(dim == 768, "input dim %zu", dim);
        CHECK(gemma_cyber_active_backend(classifier) == backend, "backend");
        CHECK(gemma_cyber_device_name(classifier)[0] != '\0', "device name");
        float *embeddings = malloc(ROWS * dim * sizeof(float));
        float probabilities[ROWS];
        unsigned char labels[ROWS];
        for (size_t i = 0; i < ROWS * dim; i++) embeddings[i] = (float)sin((double)i * 0.37);
        for (size_t rows = 1; rows <= ROWS; rows *= 8) {
            for (size_t i = 0; i < rows; i++) probabilities[i] = -1.0f;
            gemma_cyber_status status =
                gemma_cyber_classify(classifier, embeddings, rows, dim, probabilities, labels);
            CHECK(status == GEMMA_CYBER_STATUS_OK, "valid classify of %zu rows: status %d (%s)",
                  rows, (int)status, gemma_cyber_last_error());
            int in_range = 1;
            for (size_t i = 0; i < rows; i++) {
                in_range &= probabilities[i] > 0.0f && probabilities[i] < 1.0f;
            }
            CHECK(in_range, "probabilities of %zu rows out of (0, 1)", rows);
        }
        embeddings[5] = NAN;
        probabilities[0] = -1.0f;
        gemma_cyber_status status =
            gemma_cyber_classify(classifier, embeddings, 1, dim, probabilities, NULL);
        CHECK(status == GEMMA_CYBER_STATUS_NON_FINITE_INPUT, "NaN: status %d", (int)status);
        CHECK(probabilities[0] == -1.0f, "an output was written on failure");
        CHECK(starts_with(gemma_cyber_last_error(), "GEMMA_CYBER_STATUS_NON_FINITE_INPUT"),
              "last error after NaN: %s", gemma_cyber_last_error());
        status = gemma_cyber_classify(classifier, embeddings, 1, dim - 1, probabilities, NULL);
        CHECK(status == GEMMA_CYBER_STATUS_DIMENSION_MISMATCH, "wrong dim: status %d", (int)status);
        CHECK(starts_with(gemma_cyber_last_error(), "GEMMA_CYBER_STATUS_DIMENSION_MISMATCH"),
              "last error after wrong dim: %s", gemma_cyber_last_error());
        free(embeddings);
        gemma_cyber_destroy(classifier);
    }
    gemma_cyber_status status = gemma_cyber_classify(NULL, NULL, 1, 768, NULL, NULL);
    CHECK(status == GEMMA_CYBER_STATUS_INVALID_ARGUMENT, "NULL classifier: status %d", (int)status);
    CHECK(starts_with(gemma_cyber_last_error(), "GEMMA_CYBER_STATUS_INVALID_ARGUMENT"),
          "last error after NULL: %s", gemma_cyber_last_error());
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    options.model_path = "/nonexistent/model.safetensors";
    gemma_cyber_classifier *none = NULL;
    status = gemma_cyber_create(&options, &none);
    CHECK(status == GEMMA_CYBER_STATUS_MODEL_NOT_FOUND && none == NULL, "missing model: status %d",
          (int)status);
    CHECK(starts_with(gemma_cyber_last_error(), "GEMMA_CYBER_STATUS_MODEL_NOT_FOUND"),
          "last error after a missing model: %s", gemma_cyber_last_error());
    gemma_cyber_options_init(NULL, 0);
    CHECK(gemma_cyber_input_dim(NULL) == 0, "input dim of NULL");
    CHECK(strcmp(gemma_cyber_version(), "") != 0, "version");
    printf("%s: %d passed, %d failed\n", where, passed, failed);
    fflush(stdout);
}

/* Makes the library set up this thread's thread-locals, so that teardown destroys them. */
static void warm_up(void) {
    gemma_cyber_classifier *classifier = create_classifier(4);
    float *embeddings = calloc(768 * ROWS, sizeof(float));
    float probabilities[ROWS];
    if (embeddings == NULL) return;
    gemma_cyber_classify(classifier, embeddings, ROWS, 768, probabilities, NULL);
    embeddings[0] = NAN;
    gemma_cyber_classify(classifier, embeddings, 1, 768, probabilities, NULL);
    kept_error = gemma_cyber_last_error();
    free(embeddings);
    gemma_cyber_destroy(classifier);
}

static pthread_key_t key;
static int destructor_failed = -1;

static void key_destructor(void *value) {
    (void)value;
    exercise("pthread key destructor");
    destructor_failed = failed;
}

static void *worker(void *arg) {
    (void)arg;
    warm_up();
    pthread_setspecific(key, &key);
    return NULL;
}

static void at_exit(void) {
    exercise("atexit");
    /* The exit status reports the handler's checks; _exit is allowed here and skips nothing the
       test needs. */
    _exit(failed == 0 && destructor_failed == 0 ? 0 : 1);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "onnxruntime") == 0) backend = GEMMA_CYBER_BACKEND_ONNXRUNTIME;
    pthread_key_create(&key, key_destructor);
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker, NULL) != 0) return 2;
    pthread_join(thread, NULL);
    warm_up();
    atexit(at_exit);
    return 0;
}
