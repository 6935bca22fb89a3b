/* A plugin that starts but whose classify fails with BACKEND_FAILURE (7) and a message, after
 * scribbling on the outputs: the core must pass the failure on and leave the caller's outputs
 * untouched. */
#include "plugin_common.h"

static int32_t failing_classify(void *instance, const float *embeddings, size_t rows,
                                float *probabilities, char *error, size_t error_len) {
    size_t r;
    (void)instance;
    (void)embeddings;
    for (r = 0; r < rows; r++) probabilities[r] = 0.5f;
    mlp_set_error(error, error_len, "classify_fails: device fell over");
    return STATUS_BACKEND_FAILURE;
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("classify_fails");
    table.classify = failing_classify;
    return hand_over(&table, host_abi_version, backend);
}
