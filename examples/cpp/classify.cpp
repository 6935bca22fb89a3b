// Classifies a few embeddings through the C++17 wrapper (include/gemma_cyber.hpp), then shows that
// a bad call throws gemma_cyber::error with its status. Build: see run.sh next to this file.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "gemma_cyber.hpp"

// Runs `call`, which must throw gemma_cyber::error with `want` and a message in the documented
// "GEMMA_CYBER_STATUS_NAME: message" form, whether the library or the wrapper found the fault.
static bool fails_with(const char *what, gemma_cyber::status want, const char *prefix,
                       const std::function<void()> &call) {
    try {
        call();
        std::fprintf(stderr, "%s was accepted\n", what);
        return false;
    } catch (const gemma_cyber::error &e) {
        std::printf("%s -> %s\n", what, e.what());
        if (e.status() != want || std::string(e.what()).rfind(prefix, 0) != 0) {
            std::fprintf(stderr, "%s: wrong status or message\n", what);
            return false;
        }
        return true;
    }
}

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

    // The wrapper's own checks word their messages like the library's.
    if (!fails_with("a batch that is not whole rows", gemma_cyber::status::invalid_argument,
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: ", [&] { classifier.classify(embeddings, dim + 1); }))
        return 1;
    // C reads a path only up to a NUL; the part before it is a real model (run.sh runs this from
    // the repository root), so a silently cut path would load instead of being refused.
    if (!fails_with("a NUL inside model_path", gemma_cyber::status::invalid_argument,
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: model_path contains a NUL byte", [] {
                        gemma_cyber::options options;
                        options.model_path = "models/default.safetensors";
                        options.model_path += '\0';
                        options.model_path += "junk";
                        gemma_cyber::classifier c(options);
                    }))
        return 1;
    // model_data given but empty is an empty model, like an empty file, not the built-in model.
    if (!fails_with("empty model_data", gemma_cyber::status::model_invalid, "GEMMA_CYBER_STATUS_MODEL_INVALID: ", [] {
            gemma_cyber::options options;
            options.backend = gemma_cyber::backend::cpu;
            options.model_data = std::vector<std::uint8_t>();
            gemma_cyber::classifier c(options);
        }))
        return 1;
    if (!fails_with("junk model_data", gemma_cyber::status::model_invalid, "GEMMA_CYBER_STATUS_MODEL_INVALID: ", [] {
            gemma_cyber::options options;
            options.model_data = std::vector<std::uint8_t>{1, 2, 3};
            gemma_cyber::classifier c(options);
        }))
        return 1;

    // Ownership moves; the moved-from wrapper holds nothing and destroys nothing.
    gemma_cyber::classifier moved = std::move(classifier);
    return moved.input_dim() == dim ? 0 : 1;
}
