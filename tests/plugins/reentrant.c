/* A plugin whose entry point creates a classifier of its own, on another plugin beside it
 * (example_c), while the core is loading it: the core must refuse that inner create at once
 * rather than wait for its own loading, and load this plugin as usual. Its device name says what
 * the inner create returned. The core's functions are found in the process (a C program linked to
 * the core library); where they are not, the device name says so. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "plugin_common.h"
#include "../../include/gemma_cyber.h"

static char inner[1024] = "inner create: not run";

static const char *reentrant_device_name(void *instance) {
    (void)instance;
    return inner;
}

static void create_inside_the_entry_point(void) {
    typedef void (*options_init_fn)(gemma_cyber_options *, size_t);
    typedef gemma_cyber_status (*create_fn)(const gemma_cyber_options *, gemma_cyber_classifier **);
    typedef void (*destroy_fn)(gemma_cyber_classifier *);
    typedef const char *(*last_error_fn)(void);
    options_init_fn options_init;
    create_fn create;
    destroy_fn destroy;
    last_error_fn last_error;
    gemma_cyber_options options;
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status;
    Dl_info self;
    char dir[512];
    char *slash;

    *(void **)&options_init = dlsym(RTLD_DEFAULT, "gemma_cyber_options_init");
    *(void **)&create = dlsym(RTLD_DEFAULT, "gemma_cyber_create");
    *(void **)&destroy = dlsym(RTLD_DEFAULT, "gemma_cyber_destroy");
    *(void **)&last_error = dlsym(RTLD_DEFAULT, "gemma_cyber_last_error");
    if (options_init == NULL || create == NULL || destroy == NULL || last_error == NULL ||
        dladdr((void *)reentrant_device_name, &self) == 0 || self.dli_fname == NULL) {
        snprintf(inner, sizeof inner, "inner create: the core's functions are not in the process");
        return;
    }
    snprintf(dir, sizeof dir, "%s", self.dli_fname);
    slash = strrchr(dir, '/');
    if (slash != NULL) *slash = '\0';
    options_init(&options, sizeof options);
    options.backend = GEMMA_CYBER_BACKEND_PLUGIN;
    options.plugin_name = "example_c";
    options.plugin_dir = dir;
    status = create(&options, &classifier);
    snprintf(inner, sizeof inner, "inner create: status %d: %s", (int)status,
             status == GEMMA_CYBER_STATUS_OK ? "" : last_error());
    if (classifier != NULL) destroy(classifier);
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("reentrant");
    table.device_name = reentrant_device_name;
    create_inside_the_entry_point();
    return hand_over(&table, host_abi_version, backend);
}
