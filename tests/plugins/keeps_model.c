/*
 * A correct plugin that relies on what the plugin ABI promises: the model and every array it
 * points to stay valid until the instance is destroyed. It keeps the pointer it was given instead
 * of copying the model, remembers the struct's values, and in every classify checks that the
 * model still reads the same before computing from it.
 */
#include "plugin_common.h"

typedef struct instance {
    const gemma_cyber_plugin_model *model;
    gemma_cyber_plugin_model seen;      /* the struct as create read it */
    gemma_cyber_plugin_layer *layers;   /* and its layers */
} instance;

static int32_t keeps_create(const gemma_cyber_plugin_model *model, const char *const *settings,
                            void **out, char *error, size_t error_len) {
    instance *self;
    int32_t status = check_settings(settings, NULL, NULL, error, error_len);
    if (status != STATUS_OK) return status;
    self = calloc(1, sizeof *self);
    if (self == NULL || (self->layers = calloc(model->num_layers, sizeof *self->layers)) == NULL) {
        free(self);
        mlp_set_error(error, error_len, "out of memory");
        return STATUS_BACKEND_FAILURE;
    }
    self->model = model;
    /* Byte for byte, padding included, which memcmp below compares too. */
    memcpy(&self->seen, model, sizeof self->seen);
    memcpy(self->layers, model->layers, model->num_layers * sizeof *self->layers);
    *out = self;
    return STATUS_OK;
}

static int32_t keeps_classify(void *handle, const float *embeddings, size_t rows,
                              float *probabilities, char *error, size_t error_len) {
    instance *self = handle;
    const gemma_cyber_plugin_model *model = self->model;
    mlp computed;
    int32_t status;
    if (memcmp(model, &self->seen, sizeof self->seen) != 0 ||
        memcmp(model->layers, self->layers, model->num_layers * sizeof *self->layers) != 0) {
        mlp_set_error(error, error_len, "the model changed after create");
        return STATUS_BACKEND_FAILURE;
    }
    /* Computed from the kept pointers each time: they must still point at the model's arrays. */
    status = mlp_copy(model, &computed, error, error_len);
    if (status != STATUS_OK) return status;
    status = mlp_classify(&computed, embeddings, rows, probabilities, error, error_len);
    mlp_free(&computed);
    return status;
}

static void keeps_destroy(void *handle) {
    instance *self = handle;
    if (self == NULL) return;
    free(self->layers);
    free(self);
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("keeps_model");
    table.create = keeps_create;
    table.classify = keeps_classify;
    table.destroy = keeps_destroy;
    return hand_over(&table, host_abi_version, backend);
}
