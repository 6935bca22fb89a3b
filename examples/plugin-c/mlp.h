/*
 * The folded gemma-cyber MLP in plain C99: LayerNorm without affine, dense layers with ReLU, a
 * sigmoid at the end. Include gemma_cyber_plugin.h before this header.
 *
 * mlp_copy takes a private copy of the model's weights, so an instance owns everything it reads
 * (the ABI would also let it keep the model pointer: the core keeps the model valid until
 * destroy). After mlp_copy the mlp is only read, so any number of threads may run mlp_classify on
 * it at once; each call mallocs its own scratch.
 */
#ifndef GEMMA_CYBER_EXAMPLE_MLP_H
#define GEMMA_CYBER_EXAMPLE_MLP_H

#ifndef GEMMA_CYBER_PLUGIN_H
#error "include gemma_cyber_plugin.h before mlp.h"
#endif

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mlp {
    size_t input_dim;
    double layer_norm_eps;
    size_t num_layers;
    /* The layers, their weight and bias pointing into `floats`. */
    gemma_cyber_plugin_layer *layers;
    float *floats;
    /* The widest activation (input_dim or any layer's outputs): the scratch each call needs. */
    size_t widest;
} mlp;

/* Writes a printf-style message into the core's buffer: NUL-terminated, cut to error_len bytes. */
static void mlp_set_error(char *error, size_t error_len, const char *format, ...) {
    va_list args;
    if (error == NULL || error_len == 0) return;
    va_start(args, format);
    vsnprintf(error, error_len, format, args);
    va_end(args);
}

/* Copies `model` into `out`. Returns GEMMA_CYBER_STATUS_OK (0), or BACKEND_FAILURE (7) with a
 * message when memory runs out or the model is not the shape the ABI promises. */
static int32_t mlp_copy(const gemma_cyber_plugin_model *model, mlp *out, char *error,
                        size_t error_len) {
    size_t total = 0, widest, i;
    float *cursor;
    memset(out, 0, sizeof *out);
    /* A newer core may append fields (struct_size grows); an older, smaller one cannot exist. */
    if (model == NULL || model->struct_size < sizeof *model || model->num_layers == 0 ||
        model->layers == NULL || model->input_dim == 0) {
        mlp_set_error(error, error_len, "the model handed to create is malformed");
        return 7;
    }
    widest = model->input_dim;
    for (i = 0; i < model->num_layers; i++) {
        const gemma_cyber_plugin_layer *layer = &model->layers[i];
        size_t expected_inputs = i == 0 ? model->input_dim : model->layers[i - 1].outputs;
        if (layer->inputs != expected_inputs || layer->outputs == 0 || layer->weight == NULL ||
            layer->bias == NULL || layer->inputs > SIZE_MAX / sizeof(float) / layer->outputs) {
            mlp_set_error(error, error_len, "layer %zu of the model is malformed", i);
            return 7;
        }
        if (layer->outputs > widest) widest = layer->outputs;
        total += layer->inputs * layer->outputs + layer->outputs;
    }
    if (model->layers[model->num_layers - 1].outputs != 1) {
        mlp_set_error(error, error_len, "the model's last layer does not have one output");
        return 7;
    }
    out->layers = malloc(model->num_layers * sizeof *out->layers);
    out->floats = malloc(total * sizeof *out->floats);
    if (out->layers == NULL || out->floats == NULL) {
        free(out->layers);
        free(out->floats);
        memset(out, 0, sizeof *out);
        mlp_set_error(error, error_len, "out of memory");
        return 7;
    }
    cursor = out->floats;
    for (i = 0; i < model->num_layers; i++) {
        const gemma_cyber_plugin_layer *from = &model->layers[i];
        gemma_cyber_plugin_layer *to = &out->layers[i];
        size_t weights = from->inputs * from->outputs;
        memcpy(cursor, from->weight, weights * sizeof *cursor);
        memcpy(cursor + weights, from->bias, from->outputs * sizeof *cursor);
        to->inputs = from->inputs;
        to->outputs = from->outputs;
        to->weight = cursor;
        to->bias = cursor + weights;
        to->relu = from->relu;
        cursor += weights + from->outputs;
    }
    out->input_dim = model->input_dim;
    out->layer_norm_eps = (double)model->layer_norm_eps;
    out->num_layers = model->num_layers;
    out->widest = widest;
    return 0;
}

static void mlp_free(mlp *m) {
    free(m->layers);
    free(m->floats);
    memset(m, 0, sizeof *m);
}

/* The logistic function without overflow: exp of a large positive argument is never taken. */
static double mlp_sigmoid(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    {
        double e = exp(x);
        return e / (1.0 + e);
    }
}

/* One probability per row. Returns 0, or BACKEND_FAILURE (7) with "out of memory". */
static int32_t mlp_classify(const mlp *m, const float *embeddings, size_t rows,
                            float *probabilities, char *error, size_t error_len) {
    /* Two activation vectors, swapped layer after layer; double keeps the sums accurate. */
    double *scratch = malloc(2 * m->widest * sizeof *scratch);
    size_t r, i, o, l;
    if (scratch == NULL) {
        mlp_set_error(error, error_len, "out of memory");
        return 7;
    }
    for (r = 0; r < rows; r++) {
        const float *x = embeddings + r * m->input_dim;
        double *in = scratch, *out = scratch + m->widest, *swap;
        double mean = 0.0, variance = 0.0, inv_std;
        /* LayerNorm without affine (folded into the first layer): biased variance, two passes. */
        for (i = 0; i < m->input_dim; i++) mean += x[i];
        mean /= (double)m->input_dim;
        for (i = 0; i < m->input_dim; i++) variance += (x[i] - mean) * (x[i] - mean);
        variance /= (double)m->input_dim;
        inv_std = 1.0 / sqrt(variance + m->layer_norm_eps);
        for (i = 0; i < m->input_dim; i++) in[i] = (x[i] - mean) * inv_std;
        for (l = 0; l < m->num_layers; l++) {
            const gemma_cyber_plugin_layer *layer = &m->layers[l];
            for (o = 0; o < layer->outputs; o++) {
                const float *w = layer->weight + o * layer->inputs;
                double sum = layer->bias[o];
                for (i = 0; i < layer->inputs; i++) sum += w[i] * in[i];
                out[o] = layer->relu == 1 && sum < 0.0 ? 0.0 : sum;
            }
            swap = in;
            in = out;
            out = swap;
        }
        probabilities[r] = (float)mlp_sigmoid(in[0]);
    }
    free(scratch);
    return 0;
}

#endif /* GEMMA_CYBER_EXAMPLE_MLP_H */
