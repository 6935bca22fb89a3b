/* A plugin whose table leaves destroy NULL: the core must refuse it at load, before any create. */
#include "plugin_common.h"

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("null_function");
    table.destroy = NULL;
    return hand_over(&table, host_abi_version, backend);
}
