/* A plugin whose classify returns 42, a status the ABI does not have, after computing correct
 * probabilities: the core must report BACKEND_FAILURE with the message and discard the outputs. */
#include "plugin_common.h"

static int32_t odd_classify(void *instance, const float *embeddings, size_t rows,
                            float *probabilities, char *error, size_t error_len) {
    int32_t status = good_classify(instance, embeddings, rows, probabilities, error, error_len);
    if (status != STATUS_OK) return status;
    mlp_set_error(error, error_len, "bad_status: returned status 42");
    return 42;
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("bad_status");
    table.classify = odd_classify;
    return hand_over(&table, host_abi_version, backend);
}
