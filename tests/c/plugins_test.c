/*
 * Plugins as a C caller meets them, run under valgrind and the sanitizers by examples/c/run.sh:
 * every bad plugin gives its documented status and a message, the process carries on, a good
 * plain-C plugin and a panicking Rust one behave as documented, AUTO falls through past a broken
 * wgpu plugin, and the log callback hears why.
 * Usage: plugins_test PLUGIN_DIR BROKEN_WGPU_DIR
 *   PLUGIN_DIR holds libgemma_cyber_<name>.so for example_c, panicking and each tests/plugins source;
 *   BROKEN_WGPU_DIR holds a libgemma_cyber_wgpu.so that is not a shared library.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gemma_cyber.h"

static int passed, failed;

#include "check.h"

static const char *plugin_dir;

static gemma_cyber_status create_plugin(const char *name, const char *const *settings,
                                        gemma_cyber_classifier **out) {
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    options.backend = GEMMA_CYBER_BACKEND_PLUGIN;
    options.plugin_name = name;
    options.plugin_dir = plugin_dir;
    options.plugin_settings = settings;
    return gemma_cyber_create(&options, out);
}

static float row[768];

/* Creates `name` (expecting OK) and classifies one row, returning classify's status. */
static gemma_cyber_status classify_on(const char *name, const char *const *settings, float *p) {
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_status status = create_plugin(name, settings, &classifier);
    CHECK(status == GEMMA_CYBER_STATUS_OK, "%s: create %d %s", name, (int)status,
          gemma_cyber_last_error());
    if (status != GEMMA_CYBER_STATUS_OK) return status;
    status = gemma_cyber_classify(classifier, row, 1, 768, p, NULL);
    gemma_cyber_destroy(classifier);
    return status;
}

static int log_messages;

/* Every message heard, to check each is one line with no terminal command in it. */
static int lines_heard, lines_broken, escaped_device_heard;

static void check_one_line(void *user_data, gemma_cyber_log_level level, const char *message) {
    (void)user_data;
    (void)level;
    lines_heard++;
    if (strchr(message, '\n') != NULL || strchr(message, '\r') != NULL ||
        strchr(message, '\x1b') != NULL)
        lines_broken++;
    if (strstr(message, "CPU\\u{a}info: a forged line\\u{1b}[2J") != NULL) escaped_device_heard++;
}

static void count_messages(void *user_data, gemma_cyber_log_level level, const char *message) {
    (void)level;
    if (strstr(message, "AUTO skipped the wgpu backend") != NULL) ++*(int *)user_data;
}

int main(int argc, char **argv) {
    size_t i;
    if (argc != 3) {
        fprintf(stderr, "usage: plugins_test PLUGIN_DIR BROKEN_WGPU_DIR\n");
        return 2;
    }
    plugin_dir = argv[1];
    for (i = 0; i < 768; i++) row[i] = (float)((int)(i % 11) - 5) / 7.0f;

    /* Files that fail the loader's checks: BACKEND_UNAVAILABLE naming the file, never a crash. */
    {
        const char *unusable[] = {"no_entry", "wrong_abi", "refuses_host", "wrong_name",
                                  "null_function", "not_there"};
        for (i = 0; i < sizeof unusable / sizeof *unusable; i++) {
            gemma_cyber_classifier *classifier = NULL;
            gemma_cyber_status status = create_plugin(unusable[i], NULL, &classifier);
            CHECK(status == GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE && classifier == NULL,
                  "%s: %d", unusable[i], (int)status);
            CHECK(strstr(gemma_cyber_last_error(), unusable[i]) != NULL, "%s: %s", unusable[i],
                  gemma_cyber_last_error());
        }
    }
    {
        gemma_cyber_classifier *classifier = NULL;
        gemma_cyber_status status = create_plugin("create_fails", NULL, &classifier);
        CHECK(status == GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE, "create_fails: %d", (int)status);
        CHECK(strstr(gemma_cyber_last_error(), "no device here") != NULL, "%s",
              gemma_cyber_last_error());
    }

    /* Plugins whose calls fail: BACKEND_FAILURE, the output untouched. */
    {
        const char *nan_value[] = {"value=nan", NULL};
        struct { const char *name; const char *const *settings; } failing[] = {
            {"classify_fails", NULL}, {"bad_status", NULL}, {"not_a_probability", NULL},
            {"not_a_probability", nan_value}, {"panicking", NULL}};
        for (i = 0; i < sizeof failing / sizeof *failing; i++) {
            float p = -1.0f;
            gemma_cyber_status status = classify_on(failing[i].name, failing[i].settings, &p);
            CHECK(status == GEMMA_CYBER_STATUS_BACKEND_FAILURE, "%s: %d", failing[i].name,
                  (int)status);
            CHECK(p == -1.0f, "%s wrote %f", failing[i].name, (double)p);
        }
    }

    /* A good plugin and a SERIAL one classify; a misspelt setting is refused. */
    {
        float p = -1.0f, q = -1.0f;
        const char *misspelt[] = {"num_thread=2", NULL};
        gemma_cyber_classifier *classifier = NULL;
        CHECK(classify_on("example_c", NULL, &p) == GEMMA_CYBER_STATUS_OK && p >= 0.0f && p <= 1.0f,
              "example_c: %f", (double)p);
        CHECK(classify_on("serial", NULL, &q) == GEMMA_CYBER_STATUS_OK && q >= 0.0f && q <= 1.0f,
              "serial: %f", (double)q);
        CHECK(create_plugin("example_c", misspelt, &classifier) ==
                  GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE,
              "misspelt setting accepted");
    }

    /* A plugin's text with a newline and a terminal command reaches the log callback as one line,
     * escaped; the classifier's own device name is the plugin's, as it gave it. */
    {
        gemma_cyber_classifier *classifier = NULL;
        gemma_cyber_set_log_callback(check_one_line, NULL);
        CHECK(create_plugin("control_text", NULL, &classifier) == GEMMA_CYBER_STATUS_OK,
              "control_text: %s", gemma_cyber_last_error());
        gemma_cyber_set_log_callback(NULL, NULL);
        CHECK(lines_heard > 0 && lines_broken == 0, "control_text: %d of %d messages not one line",
              lines_broken, lines_heard);
        CHECK(escaped_device_heard == 1, "control_text: the escaped device name heard %d times",
              escaped_device_heard);
        gemma_cyber_destroy(classifier);
    }

    /* A plugin whose entry point creates a classifier while the core loads it: that inner create
     * is refused at once (before, it waited for the loading that called it, for ever), and the
     * plugin itself loads and classifies. */
    {
        float p = -1.0f;
        gemma_cyber_classifier *classifier = NULL;
        const char *device;
        CHECK(create_plugin("reentrant", NULL, &classifier) == GEMMA_CYBER_STATUS_OK,
              "reentrant: %s", gemma_cyber_last_error());
        device = classifier != NULL ? gemma_cyber_device_name(classifier) : "";
        CHECK(strstr(device, "inner create: status 6: ") != NULL &&
                  strstr(device, "while another plugin was being loaded") != NULL,
              "reentrant: %s", device);
        gemma_cyber_destroy(classifier);
        CHECK(classify_on("reentrant", NULL, &p) == GEMMA_CYBER_STATUS_OK && p >= 0.0f && p <= 1.0f,
              "reentrant classifies: %f", (double)p);
    }

    /* AUTO past a broken wgpu plugin, with the reason logged. */
    {
        gemma_cyber_options options;
        gemma_cyber_classifier *classifier = NULL;
        gemma_cyber_set_log_callback(count_messages, &log_messages);
        gemma_cyber_options_init(&options, sizeof options);
        options.plugin_dir = argv[2];
        CHECK(gemma_cyber_create(&options, &classifier) == GEMMA_CYBER_STATUS_OK, "AUTO: %s",
              gemma_cyber_last_error());
        CHECK(gemma_cyber_active_backend(classifier) != GEMMA_CYBER_BACKEND_WGPU, "AUTO took wgpu");
        gemma_cyber_destroy(classifier);
        gemma_cyber_set_log_callback(NULL, NULL);
        CHECK(log_messages == 1, "log messages about wgpu: %d", log_messages);
    }

    printf("plugins_test: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
