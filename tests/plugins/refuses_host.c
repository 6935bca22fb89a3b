/* A plugin whose entry refuses every host ABI version with BACKEND_UNAVAILABLE (6), as one built
 * for another version would: the core must refuse it and name the status. */
#include "../../include/gemma_cyber_plugin.h"

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    (void)host_abi_version;
    (void)backend;
    return 6;
}
