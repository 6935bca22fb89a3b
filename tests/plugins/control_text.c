/* A plugin whose version and device name carry a newline, a forged second line and a terminal
 * command (clear the screen): the core must hand them on as data, one line each, never as lines
 * or commands of their own. */
#include "plugin_common.h"

static const char *control_device_name(void *instance) {
    (void)instance;
    return "CPU\ninfo: a forged line\x1b[2J";
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("control_text");
    table.version = "1.0\n\x1b[31mforged";
    table.device_name = control_device_name;
    return hand_over(&table, host_abi_version, backend);
}
