// Classifies a few embeddings through the C++17 wrapper (include/gemma_cyber.hpp), on the backend the
// library picks and on a backend plugin found in PLUGIN_DIR (examples/plugin-c, built there), then
// shows that a bad call throws gemma_cyber::error with its status. Usage: classify PLUGIN_DIR.
// Build and run: see run.sh next to this file.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <stdexcept>
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

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s PLUGIN_DIR (a directory holding libgemma_cyber_example_c.so)\n", argv[0]);
        return 2;
    }
    const std::string plugin_dir = argv[1];
    std::printf("gemma-cyber %s (ABI %u)\n", gemma_cyber::version().c_str(), gemma_cyber::abi_version());

    // The library's messages, collected (the library may call from any thread: hence the lock).
    std::mutex messages_mutex;
    std::vector<std::string> messages;
    gemma_cyber::set_log_callback([&](gemma_cyber::log_level level, const std::string &message) {
        std::lock_guard<std::mutex> lock(messages_mutex);
        messages.push_back((level == gemma_cyber::log_level::info ? "info: " : "warning: ") + message);
    });

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

    {
        std::lock_guard<std::mutex> lock(messages_mutex);
        for (const std::string &message : messages) std::printf("log: %s\n", message.c_str());
        if (messages.empty() || messages.back().rfind("info: ", 0) != 0 ||
            messages.back().find(" backend started on " + classifier.device_name()) == std::string::npos) {
            std::fprintf(stderr, "no message said which backend started\n");
            return 1;
        }
    }
    // Turned off, the callback hears nothing more; one that throws does not disturb the library.
    gemma_cyber::set_log_callback(nullptr);
    const std::size_t heard = messages.size();
    gemma_cyber::classifier{gemma_cyber::options{}};
    if (messages.size() != heard) return 1;
    gemma_cyber::set_log_callback([](gemma_cyber::log_level, const std::string &) { throw std::runtime_error("thrown"); });
    gemma_cyber::classifier{gemma_cyber::options{}};
    // Set from inside the callback: refused, and the callback running stays the one called.
    int calls = 0, refused = 0;
    gemma_cyber::set_log_callback([&](gemma_cyber::log_level, const std::string &) {
        calls++;
        try {
            gemma_cyber::set_log_callback(nullptr);
        } catch (const gemma_cyber::error &e) {
            if (e.status() == gemma_cyber::status::invalid_argument) refused++;
        }
    });
    gemma_cyber::classifier{gemma_cyber::options{}};
    gemma_cyber::classifier{gemma_cyber::options{}};
    gemma_cyber::set_log_callback(nullptr);
    if (calls == 0 || refused != calls) {
        std::fprintf(stderr, "set_log_callback inside the callback: %d calls, %d refused\n", calls, refused);
        return 1;
    }

    // The same rows through a backend plugin chosen by name, in a directory searched first.
    {
        gemma_cyber::options options;
        options.backend = gemma_cyber::backend::plugin;
        options.plugin_name = "example_c";
        options.plugin_dir = plugin_dir;
        gemma_cyber::classifier plugin(options);
        std::printf("plugin device: %s\n", plugin.device_name().c_str());
        if (plugin.backend() != gemma_cyber::backend::plugin || plugin.device_name().rfind("example_c ", 0) != 0)
            return 1;
        gemma_cyber::result same = plugin.classify(embeddings, dim);
        for (std::size_t r = 0; r < same.probabilities.size(); r++) {
            if (std::fabs(same.probabilities[r] - result.probabilities[r]) > 1e-5f) {
                std::fprintf(stderr, "row %zu: plugin %.7f, built-in backend %.7f\n", r, same.probabilities[r],
                             result.probabilities[r]);
                return 1;
            }
        }
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
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: ", [&] { classifier.classify(embeddings, dim + 1); }) ||
        !fails_with("dim 0", gemma_cyber::status::invalid_argument,
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: dim is 0", [&] { classifier.classify(embeddings, 0); }))
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

    // Each plugin option reaches the library, which checks it.
    const auto with = [&](auto set) {
        return [&plugin_dir, set] {
            gemma_cyber::options options;
            options.plugin_dir = plugin_dir;
            set(options);
            gemma_cyber::classifier c(options);
        };
    };
    if (!fails_with("a plugin that is not there", gemma_cyber::status::backend_unavailable,
                    "GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE: ", with([](gemma_cyber::options &o) {
                        o.backend = gemma_cyber::backend::plugin;
                        o.plugin_name = "not_there";
                    })) ||
        !fails_with("a setting the plugin does not know", gemma_cyber::status::backend_unavailable,
                    "GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE: ", with([](gemma_cyber::options &o) {
                        o.backend = gemma_cyber::backend::plugin;
                        o.plugin_name = "example_c";
                        o.plugin_settings = {"example_c.colour=blue"};
                    })) ||
        !fails_with("a setting the library owns", gemma_cyber::status::invalid_argument,
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: ",
                    with([](gemma_cyber::options &o) { o.plugin_settings = {"num_threads=2"}; })) ||
        !fails_with("an empty setting", gemma_cyber::status::invalid_argument, "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: ",
                    with([](gemma_cyber::options &o) { o.plugin_settings = {"example_c.colour=blue", ""}; })) ||
        !fails_with("a NUL inside a setting", gemma_cyber::status::invalid_argument,
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: plugin_settings[1] contains a NUL byte",
                    with([](gemma_cyber::options &o) {
                        o.plugin_settings = {"example_c.colour=blue", std::string("a=b\0c", 5)};
                    })) ||
        !fails_with("a model file with another SHA-256", gemma_cyber::status::model_invalid,
                    "GEMMA_CYBER_STATUS_MODEL_INVALID: ", with([](gemma_cyber::options &o) {
                        o.backend = gemma_cyber::backend::cpu;
                        o.model_path = "models/default.safetensors";
                        o.model_sha256 = std::array<std::uint8_t, 32>{};
                    })))
        return 1;

    // Ownership moves; the moved-from wrapper holds nothing and destroys nothing, and says so.
    gemma_cyber::classifier moved = std::move(classifier);
    if (!fails_with("a moved-from classifier", gemma_cyber::status::invalid_argument,
                    "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: the classifier was moved from",
                    [&] { classifier.classify(embeddings, dim); }))
        return 1;
    return moved.input_dim() == dim ? 0 : 1;
}
