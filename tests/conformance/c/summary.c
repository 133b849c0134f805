// The conformance suite's process window function, in C: one summary per firing (as
// tests/guests/window-summary in Rust).
#include "weir_process_window.h"

static int process(weir_bytes key, weir_window window, const weir_event *elements, size_t count,
                   weir_window_output *out) {
    weir_buf json = {0};
    weir_buf_puts(&json, "{\"key\":");
    weir_buf_json_string(&json, key);
    weir_buf_printf(&json, ",\"start\":%lld,\"end\":%lld,\"count\":%zu,\"values\":[", (long long)window.start,
                    (long long)window.end, count);
    for (size_t i = 0; i < count; i++) {
        if (i) weir_buf_puts(&json, ",");
        weir_buf_push_bytes(&json, elements[i].value); // each value is JSON already
    }
    weir_buf_puts(&json, "]}");
    weir_window_collect(out, json.ptr, json.len);
    weir_buf_free(&json);
    return WEIR_OK;
}

WEIR_EXPORT_PROCESS_WINDOW({process})
