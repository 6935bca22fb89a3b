/* A correct plugin whose table claims plugin ABI version 2: the core must refuse it. */
#include "plugin_common.h"

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("wrong_abi");
    table.abi_version = 2;
    return hand_over(&table, host_abi_version, backend);
}
