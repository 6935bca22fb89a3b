/* A plugin whose create says BACKEND_UNAVAILABLE (6), as one without its device would: the core
 * must pass the status and the message on. */
#include "plugin_common.h"

static int32_t failing_create(const gemma_cyber_plugin_model *model, const char *const *settings,
                              void **instance, char *error, size_t error_len) {
    (void)model;
    (void)settings;
    (void)instance;
    mlp_set_error(error, error_len, "create_fails: no device here");
    return STATUS_BACKEND_UNAVAILABLE;
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("create_fails");
    table.create = failing_create;
    return hand_over(&table, host_abi_version, backend);
}
