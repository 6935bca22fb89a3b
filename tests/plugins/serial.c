/*
 * A correct plugin flagged GEMMA_CYBER_PLUGIN_SERIAL that checks the core keeps its promise: each
 * instance counts the classify calls running on it, and a call that finds another one running
 * fails with "serial: overlapping calls". Each call stays in flight for a millisecond, so calls
 * the core let overlap would be caught. Built with -DSERIAL_FLAGS=0 it does not ask to be
 * serialised: concurrent callers then see the failure, which shows the check itself works.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdatomic.h>
#include <time.h>

#include "plugin_common.h"

#ifndef SERIAL_FLAGS
#define SERIAL_FLAGS GEMMA_CYBER_PLUGIN_SERIAL
#endif

typedef struct instance {
    mlp model;
    atomic_int running;
} instance;

static int32_t serial_create(const gemma_cyber_plugin_model *model, const char *const *settings,
                             void **out, char *error, size_t error_len) {
    instance *self;
    int32_t status = check_settings(settings, NULL, NULL, error, error_len);
    if (status != STATUS_OK) return status;
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
    atomic_init(&self->running, 0);
    *out = self;
    return STATUS_OK;
}

static int32_t serial_classify(void *handle, const float *embeddings, size_t rows,
                               float *probabilities, char *error, size_t error_len) {
    instance *self = handle;
    struct timespec hold = {0, 1000000};
    int32_t status;
    if (atomic_fetch_add(&self->running, 1) != 0) {
        atomic_fetch_sub(&self->running, 1);
        mlp_set_error(error, error_len, "serial: overlapping calls");
        return STATUS_BACKEND_FAILURE;
    }
    nanosleep(&hold, NULL);
    status = mlp_classify(&self->model, embeddings, rows, probabilities, error, error_len);
    atomic_fetch_sub(&self->running, 1);
    return status;
}

static void serial_destroy(void *handle) {
    instance *self = handle;
    if (self == NULL) return;
    mlp_free(&self->model);
    free(self);
}

int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend) {
    gemma_cyber_plugin_backend table = good_table("serial");
    table.flags = SERIAL_FLAGS;
    table.create = serial_create;
    table.classify = serial_classify;
    table.destroy = serial_destroy;
    return hand_over(&table, host_abi_version, backend);
}
