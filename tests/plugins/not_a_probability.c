/* A plugin whose classify returns OK with correct probabilities except in the last row, which
 * gets the setting `value` (default 2.0; strtod syntax, so "nan", "inf" and "-0.5" work too): the
 * core must check every row, report BACKEND_FAILURE and leave the caller's outputs untouched. */
#include "plugin_common.h"

typedef struct instance {
    mlp model;
    float value;
} instance;

static int32_t value_create(const gemma_cyber_plugin_model *model, const char *const *settings,
                            void **out, char *error, size_t error_len) {
    const char *text = NULL;
    char *end;
    instance *self;
    int32_t status = check_settings(settings, "value", &text, error, error_len);
    if (status != STATUS_OK) return status;
    self = malloc(sizeof *self);
    if (self == NULL) {
        mlp_set_error(error, error_len, "out of memory");
        return STATUS_BACKEND_FAILURE;
    }
    self->value = 2.0f;
    if (text != NULL && *text != '\0') {
        self->value = strtof(text, &end);
        if (*end != '\0') {
            free(self);
            mlp_set_error(error, error_len, "setting value=\"%s\" is not a number", text);
            return STATUS_BACKEND_UNAVAILABLE;
        }
    }
    status = mlp_copy(model, &self->model, error, error_len);
    if (status != STATUS_OK) {
        free(self);
        return status;
    }
    *out = self;
    return STATUS_OK;
}

static int32_t value_classify(void *handle, const float *embeddings, size_t rows,
                              float *probabilities, char *error, size_t error_len) {
    const instance *self = handle;
    int32_t status =
        mlp_classify(&self->model, embeddings, rows, probabilities, error, error_len);
    if (status != STATUS_OK) return status;
    probabilities[rows - 1] = self->value;
    return STATUS_OK;
}

static void value_destroy(void *handle) {
    instance *self = handle;
    if (self == NULL) return;
    mlp_free(&self->model);
    free(self);
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("not_a_probability");
    table.create = value_create;
    table.classify = value_classify;
    table.destroy = value_destroy;
    return hand_over(&table, host_abi_version, backend);
}
