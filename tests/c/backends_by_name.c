/*
 * Asks for each backend by name, as a program written before plugins did: ONNX Runtime through
 * options.onnxruntime_library (argv[1]), wgpu, cpu and AUTO; classifies one row on each and prints
 * "<backend> ok <probability>" or the failure. Built against tests/c/header-before-plugins too.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gemma_cyber.h"

static int run(gemma_cyber_backend backend, const char *name, const char *library) {
    gemma_cyber_options options;
    gemma_cyber_classifier *classifier = NULL;
    float row[768];
    float probability = -1.0f;
    size_t i;
    gemma_cyber_options_init(&options, sizeof options);
    options.backend = backend;
    options.onnxruntime_library = library;
    if (gemma_cyber_create(&options, &classifier) != GEMMA_CYBER_STATUS_OK) {
        printf("%s failed: %s\n", name, gemma_cyber_last_error());
        return 1;
    }
    for (i = 0; i < 768; i++) row[i] = (float)((int)(i % 7) - 3) / 10.0f;
    if (gemma_cyber_classify(classifier, row, 1, 768, &probability, NULL) != GEMMA_CYBER_STATUS_OK) {
        printf("%s classify failed: %s\n", name, gemma_cyber_last_error());
        gemma_cyber_destroy(classifier);
        return 1;
    }
    printf("%s ok %d %.6f %s\n", name, (int)gemma_cyber_active_backend(classifier), probability,
           gemma_cyber_device_name(classifier));
    gemma_cyber_destroy(classifier);
    return 0;
}

int main(int argc, char **argv) {
    const char *library = argc > 1 ? argv[1] : NULL;
    int failures = 0;
    failures += run(GEMMA_CYBER_BACKEND_CPU, "cpu", NULL);
    failures += run(GEMMA_CYBER_BACKEND_ONNXRUNTIME, "onnxruntime", library);
    failures += run(GEMMA_CYBER_BACKEND_WGPU, "wgpu", NULL);
    failures += run(GEMMA_CYBER_BACKEND_AUTO, "auto", library);
    return failures == 0 ? 0 : 1;
}
