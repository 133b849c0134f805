// Keyed count in C: the peer of examples/keyed-count (Rust) for the per-language
// benchmark (scripts/bench-languages). Emits {"key": .., "count": n} per element.
#include "weir.h"

static weir_value_state count;

static int init(void) {
    count = weir_value_state_new("count");
    return WEIR_OK;
}

static int process_element(const weir_event *e) {
    int64_t n = weir_value_get_i64(count, 0) + 1;
    weir_value_set_i64(count, n);
    weir_buf out = {0};
    weir_buf_puts(&out, "{\"key\":");
    weir_buf_json_string(&out, e->key);
    weir_buf_puts(&out, ",\"count\":");
    weir_buf_push_i64(&out, n);
    weir_buf_puts(&out, "}");
    weir_collect(out.ptr, out.len);
    weir_buf_free(&out);
    return WEIR_OK;
}

WEIR_EXPORT_OPERATOR({.open = init, .process_element = process_element})
