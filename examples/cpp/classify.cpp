// Classifies a few embeddings through the C++17 wrapper (include/gemma_cyber.hpp), then shows that
// a bad call throws gemma_cyber::error with its status. Build: see run.sh next to this file.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gemma_cyber.hpp"

int main() {
    std::printf("gemma-cyber %s (ABI %u)\n", gemma_cyber::version().c_str(), gemma_cyber::abi_version());

    gemma_cyber::classifier classifier;  // the built-in model on the backend the library picks
    const std::size_t dim = classifier.input_dim();
    std::printf("device: %s, input dim %zu\n", classifier.device_name().c_str(), dim);

    // Three unit-length rows: a spike, a constant row, an alternating row.
    std::vector<float> embeddings(3 * dim, 0.0f);
    embeddings[0] = 1.0f;
    for (std::size_t c = 0; c < dim; c++) {
        embeddings[dim + c] = 1.0f / std::sqrt(static_cast<float>(dim));
        embeddings[2 * dim + c] = (c % 2 ? -1.0f : 1.0f) / std::sqrt(static_cast<float>(dim));
    }
    gemma_cyber::result result = classifier.classify(embeddings, dim);
    for (std::size_t r = 0; r < result.probabilities.size(); r++) {
        std::printf("row %zu: probability %.6f, %s\n", r, result.probabilities[r],
                    result.labels[r] ? "cyber" : "not cyber");
    }

    try {
        embeddings[5] = NAN;
        classifier.classify(embeddings, dim);
        std::fprintf(stderr, "a NaN was accepted\n");
        return 1;
    } catch (const gemma_cyber::error &e) {
        std::printf("NaN -> %s\n", e.what());
        if (e.status() != gemma_cyber::status::non_finite_input) return 1;
    }

    try {
        gemma_cyber::options options;
        options.model_path = "/nonexistent/model.safetensors";
        gemma_cyber::classifier missing(options);
        return 1;
    } catch (const gemma_cyber::error &e) {
        std::printf("missing model -> %s\n", e.what());
        if (e.status() != gemma_cyber::status::model_not_found) return 1;
    }

    // Ownership moves; the moved-from wrapper holds nothing and destroys nothing.
    gemma_cyber::classifier moved = std::move(classifier);
    return moved.input_dim() == dim ? 0 : 1;
}
