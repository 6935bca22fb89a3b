/*
 * A correct plugin's parts, for the test plugins in this directory: each of them is a complete,
 * working plugin except for the one defect its file is named after. Build one with
 *   cc -shared -fPIC tests/plugins/NAME.c -lm -o DIR/libgemma_cyber_NAME.so
 * (no include path needed: the headers are found relative to this file).
 */
#ifndef GEMMA_CYBER_TEST_PLUGIN_COMMON_H
#define GEMMA_CYBER_TEST_PLUGIN_COMMON_H

#include "../../include/gemma_cyber_plugin.h"
#include "../../examples/plugin-c/mlp.h"

enum { STATUS_OK = 0, STATUS_BACKEND_UNAVAILABLE = 6, STATUS_BACKEND_FAILURE = 7 };

/* Checks the settings: the core's num_threads and auto, plus `extra_key` when not NULL (its value
 * goes to *extra_value); any other key is BACKEND_UNAVAILABLE naming it. */
static inline int32_t check_settings(const char *const *settings, const char *extra_key,
                                     const char **extra_value, char *error, size_t error_len) {
    size_t i;
    for (i = 0; settings != NULL && settings[i] != NULL; i++) {
        const char *pair = settings[i];
        const char *equals = strchr(pair, '=');
        size_t key_len;
        if (equals == NULL) {
            mlp_set_error(error, error_len, "setting \"%s\" is not key=value", pair);
            return STATUS_BACKEND_UNAVAILABLE;
        }
        key_len = (size_t)(equals - pair);
        if ((key_len == 11 && strncmp(pair, "num_threads", 11) == 0) ||
            (key_len == 4 && strncmp(pair, "auto", 4) == 0))
            continue;
        if (extra_key != NULL && key_len == strlen(extra_key) &&
            strncmp(pair, extra_key, key_len) == 0) {
            *extra_value = equals + 1;
            continue;
        }
        mlp_set_error(error, error_len, "unknown setting %.*s", (int)key_len, pair);
        return STATUS_BACKEND_UNAVAILABLE;
    }
    return STATUS_OK;
}

/* Makes an instance holding a copy of the model (an mlp, freed by good_destroy). */
static inline int32_t good_create(const gemma_cyber_plugin_model *model,
                                  const char *const *settings, void **instance, char *error,
                                  size_t error_len) {
    mlp *self;
    int32_t status = check_settings(settings, NULL, NULL, error, error_len);
    if (status != STATUS_OK) return status;
    self = malloc(sizeof *self);
    if (self == NULL) {
        mlp_set_error(error, error_len, "out of memory");
        return STATUS_BACKEND_FAILURE;
    }
    status = mlp_copy(model, self, error, error_len);
    if (status != STATUS_OK) {
        free(self);
        return status;
    }
    *instance = self;
    return STATUS_OK;
}

static inline int32_t good_classify(void *instance, const float *embeddings, size_t rows,
                                    float *probabilities, char *error, size_t error_len) {
    return mlp_classify(instance, embeddings, rows, probabilities, error, error_len);
}

static inline const char *good_device_name(void *instance) {
    (void)instance;
    return "CPU (test plugin)";
}

static inline void good_destroy(void *instance) {
    if (instance == NULL) return;
    mlp_free(instance);
    free(instance);
}

/* A complete, correct table for a plugin called `name`. */
static inline gemma_cyber_plugin_backend good_table(const char *name) {
    gemma_cyber_plugin_backend table;
    memset(&table, 0, sizeof table);
    table.struct_size = sizeof table;
    table.abi_version = GEMMA_CYBER_PLUGIN_ABI_VERSION;
    table.name = name;
    table.version = "0.0.1";
    table.flags = 0;
    table.create = good_create;
    table.classify = good_classify;
    table.device_name = good_device_name;
    table.destroy = good_destroy;
    return table;
}

/* What gemma_cyber_plugin_entry does with a table: fills at most the host's struct_size bytes. */
static inline int32_t hand_over(const gemma_cyber_plugin_backend *table, uint32_t host_abi_version,
                                gemma_cyber_plugin_backend *backend) {
    size_t room;
    if (host_abi_version != GEMMA_CYBER_PLUGIN_ABI_VERSION) return STATUS_BACKEND_UNAVAILABLE;
    if (backend == NULL) return STATUS_BACKEND_FAILURE;
    room = backend->struct_size < sizeof *table ? backend->struct_size : sizeof *table;
    memcpy(backend, table, room);
    return STATUS_OK;
}

#endif /* GEMMA_CYBER_TEST_PLUGIN_COMMON_H */
