/* A correct plugin whose table calls it "something_else" while its file is
 * libgemma_cyber_wrong_name.so: the core must refuse it. */
#include "plugin_common.h"

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("something_else");
    return hand_over(&table, host_abi_version, backend);
}
