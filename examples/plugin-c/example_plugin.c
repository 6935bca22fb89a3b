/*
 * example_c: a gemma-cyber backend plugin in plain C99 (libgemma_cyber_example_c.so).
 *
 * It runs the folded MLP on the calling thread (mlp.h) and shows everything a plugin owes the
 * core: one exported entry that fills the function table, settings checked at create (unknown
 * keys refused), messages in the core's buffer, and classify safe to run on many threads at once
 * (an instance is never written after create; scratch is per call). Build: build.sh next to this
 * file; guide: docs/plugins.md.
 */
#include <stdlib.h>
#include <string.h>

#include <gemma_cyber_plugin.h>

#include "mlp.h"

enum { STATUS_OK = 0, STATUS_BACKEND_UNAVAILABLE = 6, STATUS_BACKEND_FAILURE = 7 };

/* The instance: a private copy of the model, read-only after create. */
typedef struct example_instance {
    mlp model;
} example_instance;

/* Checks one setting; returns STATUS_OK or BACKEND_UNAVAILABLE with a message naming the key.
 * The core always sends num_threads (0: the plugin decides) and, when AUTO is choosing, auto=1.
 * This plugin computes on the calling thread, so it accepts a valid thread count and ignores it;
 * it accepts auto=1 because a CPU plugin is as good as it gets anywhere. */
static int32_t check_setting(const char *pair, char *error, size_t error_len) {
    const char *equals = strchr(pair, '=');
    size_t key_len;
    const char *value;
    if (equals == NULL) {
        mlp_set_error(error, error_len, "setting \"%s\" is not key=value", pair);
        return STATUS_BACKEND_UNAVAILABLE;
    }
    key_len = (size_t)(equals - pair);
    value = equals + 1;
    if (key_len == strlen("num_threads") && strncmp(pair, "num_threads", key_len) == 0) {
        if (strspn(value, "0123456789") != strlen(value)) {
            mlp_set_error(error, error_len, "setting num_threads=\"%s\" is not a thread count",
                          value);
            return STATUS_BACKEND_UNAVAILABLE;
        }
        return STATUS_OK;
    }
    if (key_len == strlen("auto") && strncmp(pair, "auto", key_len) == 0) {
        if (strcmp(value, "0") != 0 && strcmp(value, "1") != 0 && *value != '\0') {
            mlp_set_error(error, error_len, "setting auto=\"%s\"; expected 0 or 1", value);
            return STATUS_BACKEND_UNAVAILABLE;
        }
        return STATUS_OK;
    }
    /* A misspelt key is refused, never silently ignored. */
    mlp_set_error(error, error_len, "unknown setting %.*s (this backend knows: none)",
                  (int)key_len, pair);
    return STATUS_BACKEND_UNAVAILABLE;
}

static int32_t example_create(const gemma_cyber_plugin_model *model, const char *const *settings,
                              void **instance, char *error, size_t error_len) {
    example_instance *self;
    int32_t status;
    size_t i;
    if (instance == NULL) {
        mlp_set_error(error, error_len, "create was given a NULL instance pointer");
        return STATUS_BACKEND_FAILURE;
    }
    for (i = 0; settings != NULL && settings[i] != NULL; i++) {
        status = check_setting(settings[i], error, error_len);
        if (status != STATUS_OK) return status;
    }
    self = malloc(sizeof *self);
    if (self == NULL) {
        mlp_set_error(error, error_len, "out of memory");
        return STATUS_BACKEND_FAILURE;
    }
    status = mlp_copy(model, &self->model, error, error_len);
    if (status != STATUS_OK) {
        free(self);
        return status;
    }
    *instance = self;
    return STATUS_OK;
}

static int32_t example_classify(void *instance, const float *embeddings, size_t rows,
                                float *probabilities, char *error, size_t error_len) {
    const example_instance *self = instance;
    /* The core has checked the input (rows >= 1, finite, right width): only compute. */
    return mlp_classify(&self->model, embeddings, rows, probabilities, error, error_len);
}

static const char *example_device_name(void *instance) {
    (void)instance;
    return "CPU (portable C, one thread per call)";
}

static void example_destroy(void *instance) {
    example_instance *self = instance;
    if (self == NULL) return;
    mlp_free(&self->model);
    free(self);
}

/* The one exported symbol. */
int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table;
    size_t room;
    if (host_abi_version != GEMMA_CYBER_PLUGIN_ABI_VERSION) return STATUS_BACKEND_UNAVAILABLE;
    if (backend == NULL) return STATUS_BACKEND_FAILURE;
    memset(&table, 0, sizeof table);
    table.struct_size = sizeof table;
    table.abi_version = GEMMA_CYBER_PLUGIN_ABI_VERSION;
    table.name = "example_c";
    table.version = "1.0.0";
    table.flags = 0; /* classify may run concurrently: nothing in an instance is written. */
    table.create = example_create;
    table.classify = example_classify;
    table.device_name = example_device_name;
    table.destroy = example_destroy;
    /* Fill no more than the host's table holds (a newer plugin may know more fields). */
    room = backend->struct_size < sizeof table ? backend->struct_size : sizeof table;
    memcpy(backend, &table, room);
    return STATUS_OK;
}
