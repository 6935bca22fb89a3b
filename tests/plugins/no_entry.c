/* A valid shared library that is not a plugin: it exports a function, but not
 * gemma_cyber_plugin_entry. The core must refuse it ("does not export gemma_cyber_plugin_entry"). */
#include <stdint.h>

int32_t gemma_cyber_plugin_entry_point(uint32_t host_abi_version, void *backend);

int32_t gemma_cyber_plugin_entry_point(uint32_t host_abi_version, void *backend) {
    (void)host_abi_version;
    (void)backend;
    return 0;
}
