/*
 * The core library opened by a relative path, then the working directory changed to one that
 * holds a file named like the core and a plugin: the plugin search's "directory of the core
 * library" must stay the one the library was loaded from, never resolved against the new working
 * directory. argv[1]: a directory holding libgemma_cyber.so; argv[2]: the directory to move to.
 * Prints "status N: message" for a create of plugin example_c with no plugin directory given.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

#include "gemma_cyber.h"

int main(int argc, char **argv) {
    if (argc != 3 || chdir(argv[1]) != 0) {
        fprintf(stderr, "usage: relative_load CORE_DIR NEW_WORKING_DIR\n");
        return 2;
    }
    void *core = dlopen("./libgemma_cyber.so", RTLD_NOW | RTLD_LOCAL);
    if (core == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    if (chdir(argv[2]) != 0) {
        perror("chdir");
        return 2;
    }
    /* The POSIX way to take a function from dlsym without converting an object pointer. */
    void (*options_init)(gemma_cyber_options *, size_t);
    gemma_cyber_status (*create)(const gemma_cyber_options *, gemma_cyber_classifier **);
    const char *(*last_error)(void);
    void (*destroy)(gemma_cyber_classifier *);
    *(void **)&options_init = dlsym(core, "gemma_cyber_options_init");
    *(void **)&create = dlsym(core, "gemma_cyber_create");
    *(void **)&last_error = dlsym(core, "gemma_cyber_last_error");
    *(void **)&destroy = dlsym(core, "gemma_cyber_destroy");
    if (!options_init || !create || !last_error || !destroy) {
        fprintf(stderr, "a symbol is missing\n");
        return 2;
    }
    gemma_cyber_options options;
    options_init(&options, sizeof options);
    options.backend = GEMMA_CYBER_BACKEND_PLUGIN;
    options.plugin_name = "example_c";
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = create(&options, &classifier);
    printf("status %d: %s\n", (int)status, status == GEMMA_CYBER_STATUS_OK ? "" : last_error());
    destroy(classifier);
    return 0;
}
