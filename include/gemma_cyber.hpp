/*
 * gemma-cyber C++17 wrapper: header-only RAII over the C API in gemma_cyber.h.
 *
 * The names follow the C API (classify, input_dim, device_name, backend, last_error,
 * set_log_callback) in the gemma_cyber namespace. Failures throw gemma_cyber::error, which carries
 * the status and the library's message. Thread safety is the C API's: classify and the accessors
 * may run concurrently on one classifier; destroying it (the destructor, moving onto it) must not
 * overlap other uses.
 */
#ifndef GEMMA_CYBER_HPP
#define GEMMA_CYBER_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemma_cyber.h"

namespace gemma_cyber {

/** Result code of a failed call; the values are the C API's. */
enum class status : std::uint32_t {
    ok = GEMMA_CYBER_STATUS_OK,
    invalid_argument = GEMMA_CYBER_STATUS_INVALID_ARGUMENT,
    dimension_mismatch = GEMMA_CYBER_STATUS_DIMENSION_MISMATCH,
    non_finite_input = GEMMA_CYBER_STATUS_NON_FINITE_INPUT,
    model_not_found = GEMMA_CYBER_STATUS_MODEL_NOT_FOUND,
    model_invalid = GEMMA_CYBER_STATUS_MODEL_INVALID,
    backend_unavailable = GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE,
    backend_failure = GEMMA_CYBER_STATUS_BACKEND_FAILURE,
    panic = GEMMA_CYBER_STATUS_PANIC,
};

/** Which backend runs the model; the values are the C API's. */
enum class backend : std::uint32_t {
    auto_select = GEMMA_CYBER_BACKEND_AUTO, /* `auto` is a keyword */
    cpu = GEMMA_CYBER_BACKEND_CPU,
    onnxruntime = GEMMA_CYBER_BACKEND_ONNXRUNTIME,
    wgpu = GEMMA_CYBER_BACKEND_WGPU,
    plugin = GEMMA_CYBER_BACKEND_PLUGIN, /* the plugin options::plugin_name names */
};

/** A failed call: its status and the library's message ("GEMMA_CYBER_STATUS_NAME: message"). */
class error : public std::runtime_error {
public:
    /** An error with `code` and `message`. */
    error(gemma_cyber::status code, const std::string &message)
        : std::runtime_error(message), code_(code) {}

    /** Why the call failed. */
    gemma_cyber::status status() const noexcept { return code_; }

private:
    gemma_cyber::status code_;
};

/** The library's last failure on this thread, "" if none (gemma_cyber_last_error). A failure this
 * wrapper finds before calling the library (a NUL in a string, a vector that is not whole rows)
 * is only in the error it throws. */
inline std::string last_error() { return gemma_cyber_last_error(); }

namespace detail {
/* Throws for a failed status. Reads the thread-local message right away, on the failing thread. */
inline void check(gemma_cyber_status code) {
    if (code != GEMMA_CYBER_STATUS_OK) {
        throw error(static_cast<status>(code), gemma_cyber_last_error());
    }
}

/* An error for a bad argument found by the wrapper itself, worded like the library's own
 * ("GEMMA_CYBER_STATUS_NAME: message") so callers can treat both alike. */
inline error invalid_argument(const std::string &message) {
    return error(status::invalid_argument, "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: " + message);
}

/* `text` as the C API's NUL-terminated string; nullptr for "" (not given). C reads only up to
 * the first NUL, so a string with one inside would be silently cut: refused, naming `field`. */
inline const char *c_string(const char *field, const std::string &text) {
    if (text.find('\0') != std::string::npos) {
        throw invalid_argument(std::string(field) + " contains a NUL byte");
    }
    return text.empty() ? nullptr : text.c_str();
}

/* The deleter of the unique_ptr that owns a classifier. */
struct destroy {
    void operator()(gemma_cyber_classifier *classifier) const noexcept {
        gemma_cyber_destroy(classifier);
    }
};
}  // namespace detail

/** How much a log message matters; the values are the C API's. */
enum class log_level : std::uint32_t {
    warning = GEMMA_CYBER_LOG_LEVEL_WARNING, /* went wrong, and the library carried on */
    info = GEMMA_CYBER_LOG_LEVEL_INFO,       /* what the library decided */
};

/** Receives the library's messages: the level and a one-line message. */
using log_callback = std::function<void(log_level, const std::string &)>;

namespace detail {
/* The callback set_log_callback registered, on the heap and never freed: the library may call it
 * from any thread up to the process's end, past the destruction of static objects. */
inline std::unique_ptr<log_callback> &registered_log_callback() {
    static auto *slot = new std::unique_ptr<log_callback>();
    return *slot;
}

inline std::mutex &log_callback_mutex() {
    static auto *mutex = new std::mutex();
    return *mutex;
}

/* Whether this thread is inside the log callback, where set_log_callback is refused: the library
 * keeps the callback it is running, which this side would otherwise free. */
inline bool &inside_log_callback() {
    static thread_local bool inside = false;
    return inside;
}

/* What the library calls; an exception must not cross into it, so one is dropped here. */
inline void log_trampoline(void *callback, gemma_cyber_log_level level, const char *message) noexcept {
    inside_log_callback() = true;
    try {
        (*static_cast<log_callback *>(callback))(static_cast<log_level>(level), message);
    } catch (...) {
    }
    inside_log_callback() = false;
}
}  // namespace detail

/**
 * Sends the library's messages (which backend started, why AUTO passed one over, plugin files that
 * cannot be used) to `callback`; an empty one turns them off (the default: the library never writes
 * to stderr). One callback per process; a later call replaces it. It may be called from any thread
 * the library runs on, also concurrently, and must not call back into the library (set_log_callback
 * throws invalid_argument there); an exception it throws is dropped (gemma_cyber_set_log_callback).
 */
inline void set_log_callback(log_callback callback) {
    if (detail::inside_log_callback()) {
        throw detail::invalid_argument("set_log_callback called from inside the log callback");
    }
    std::lock_guard<std::mutex> lock(detail::log_callback_mutex());
    std::unique_ptr<log_callback> next;
    if (callback) {
        next = std::make_unique<log_callback>(std::move(callback));
        gemma_cyber_set_log_callback(detail::log_trampoline, next.get());
    } else {
        gemma_cyber_set_log_callback(nullptr, nullptr);
    }
    // The library returns only once calls of the callback it replaced have returned: it may go.
    detail::registered_log_callback() = std::move(next);
}

/** The library's version, e.g. "0.1.0". */
inline std::string version() { return gemma_cyber_version(); }

/** The C ABI version the loaded library implements. */
inline std::uint32_t abi_version() noexcept { return gemma_cyber_abi_version(); }

/** Options for classifier; the defaults are gemma_cyber_options_init's. */
struct options {
    /** Which backend; auto_select lets the library choose. */
    gemma_cyber::backend backend = backend::auto_select;
    /** A safetensors model file; empty (and no model_data): the built-in model. */
    std::string model_path;
    /**
     * A whole safetensors model in memory; copied at create. Not set (std::nullopt): no model
     * data. Set, even to an empty vector, it is the model, and an empty one is MODEL_INVALID
     * like an empty file (it never falls back to the built-in model).
     */
    std::optional<std::vector<std::uint8_t>> model_data;
    /** label = probability >= threshold; NaN: the model's own. */
    float threshold = std::numeric_limits<float>::quiet_NaN();
    /** Threads a backend may use per call; 0: the library decides. */
    std::uint32_t num_threads = 0;
    /** ONNX Runtime's shared library; empty: GEMMA_CYBER_ONNXRUNTIME_LIB, then the usual search. */
    std::string onnxruntime_library;
    /** The SHA-256 the model file must have; not set: not checked. A mismatch is MODEL_INVALID. */
    std::optional<std::array<std::uint8_t, 32>> model_sha256;
    /**
     * Searched first for backend plugins (libgemma_cyber_<name>.so); empty: only
     * GEMMA_CYBER_PLUGIN_DIR and the library's own directory.
     */
    std::string plugin_dir;
    /** With backend::plugin: the plugin's name, e.g. "example_c". */
    std::string plugin_name;
    /**
     * "key=value" settings for plugins; a key prefixed with a plugin's name and a dot
     * ("wgpu.adapter=NVIDIA") reaches only that plugin. Each is passed as it is, even empty (the
     * library says what is wrong with it).
     */
    std::vector<std::string> plugin_settings;
};

/** Probabilities and labels (1: cyber, 0: not) of a batch, one per row. */
struct result {
    /** One probability per row. */
    std::vector<float> probabilities;
    /** One label per row. */
    std::vector<std::uint8_t> labels;
};

/** A loaded model bound to a backend; move-only, freed by its destructor. */
class classifier {
public:
    /** Loads the model `opts` names on the backend it asks for; throws error on failure. */
    explicit classifier(const options &opts = options()) {
        gemma_cyber_options c_options;
        gemma_cyber_options_init(&c_options, sizeof c_options);
        c_options.backend = static_cast<gemma_cyber_backend>(opts.backend);
        c_options.model_path = detail::c_string("model_path", opts.model_path);
        if (opts.model_data) {
            // NULL would mean "no model data" (the built-in model), and an empty vector's data()
            // may be NULL: point at a byte of our own so that given-but-empty stays given.
            static const std::uint8_t empty_model = 0;
            c_options.model_data = opts.model_data->empty() ? &empty_model : opts.model_data->data();
            c_options.model_data_len = opts.model_data->size();
        }
        c_options.threshold = opts.threshold;
        c_options.num_threads = opts.num_threads;
        c_options.onnxruntime_library = detail::c_string("onnxruntime_library", opts.onnxruntime_library);
        if (opts.model_sha256) c_options.model_sha256 = opts.model_sha256->data();
        c_options.plugin_dir = detail::c_string("plugin_dir", opts.plugin_dir);
        c_options.plugin_name = detail::c_string("plugin_name", opts.plugin_name);
        // The C API's NULL-terminated array, alive until create returns (it reads settings then
        // only). Not through c_string: an empty setting must stay a setting, not end the array.
        std::vector<const char *> settings;
        if (!opts.plugin_settings.empty()) {
            settings.reserve(opts.plugin_settings.size() + 1);
            for (std::size_t i = 0; i < opts.plugin_settings.size(); i++) {
                const std::string &setting = opts.plugin_settings[i];
                if (setting.find('\0') != std::string::npos) {
                    throw detail::invalid_argument("plugin_settings[" + std::to_string(i) +
                                                   "] contains a NUL byte");
                }
                settings.push_back(setting.c_str());
            }
            settings.push_back(nullptr);
            c_options.plugin_settings = settings.data();
        }
        gemma_cyber_classifier *raw = nullptr;
        detail::check(gemma_cyber_create(&c_options, &raw));
        handle_.reset(raw);
    }

    /**
     * Classifies `rows` embeddings of `dim` floats (row-major) into `probabilities` and, unless
     * `labels` is null, `labels` (`rows` each). Throws error; nothing is written on failure.
     */
    void classify(const float *embeddings, std::size_t rows, std::size_t dim, float *probabilities,
                  std::uint8_t *labels = nullptr) const {
        detail::check(gemma_cyber_classify(handle_.get(), embeddings, rows, dim, probabilities, labels));
    }

    /** Classifies a row-major batch of `dim`-wide embeddings; throws error. */
    result classify(const std::vector<float> &embeddings, std::size_t dim) const {
        if (!handle_) {
            throw detail::invalid_argument("the classifier was moved from");
        }
        if (dim == 0) {
            throw detail::invalid_argument("dim is 0; rows are input_dim() (" +
                                           std::to_string(input_dim()) + ") wide");
        }
        if (embeddings.size() % dim != 0) {
            throw detail::invalid_argument("embeddings.size() (" + std::to_string(embeddings.size()) +
                                           ") is not a multiple of dim (" + std::to_string(dim) + ")");
        }
        std::size_t rows = embeddings.size() / dim;
        result out{std::vector<float>(rows), std::vector<std::uint8_t>(rows)};
        classify(embeddings.data(), rows, dim, out.probabilities.data(), out.labels.data());
        return out;
    }

    /** The backend it runs on (never auto_select for a live classifier). */
    gemma_cyber::backend backend() const noexcept {
        return static_cast<gemma_cyber::backend>(gemma_cyber_active_backend(handle_.get()));
    }

    /** The device it runs on, for people. */
    std::string device_name() const { return gemma_cyber_device_name(handle_.get()); }

    /** The model's input dimension: the `dim` classify expects. */
    std::size_t input_dim() const noexcept { return gemma_cyber_input_dim(handle_.get()); }

    /** The C handle, still owned by this object; for calls the wrapper does not cover. */
    gemma_cyber_classifier *get() const noexcept { return handle_.get(); }

private:
    std::unique_ptr<gemma_cyber_classifier, detail::destroy> handle_;
};

}  // namespace gemma_cyber

#endif /* GEMMA_CYBER_HPP */
