// The operator conformance suite (tests/conformance/README.md), in C.
#include "weir.h"

static weir_value_state sum;
static weir_list_state seen;
static weir_map_state counts;
static weir_value_state recent; // with a time to live of 100 ms of processing time

static int init(void) {
    sum = weir_value_state_new("sum");
    seen = weir_list_state_new("seen");
    counts = weir_map_state_new("counts");
    weir_ttl ttl = {100, false};
    recent = weir_value_state_with_ttl("recent", &ttl);
    return WEIR_OK;
}

static void emit_json(weir_buf *out) {
    weir_collect(out->ptr, out->len);
    weir_buf_free(out);
}

static int process_element(const weir_event *e) {
    weir_bytes op, k;
    int64_t v, ts;
    if (!weir_json_string(e->value, "op", &op) || !weir_json_string(e->value, "k", &k) ||
        !weir_json_i64(e->value, "v", &v) || !weir_json_i64(e->value, "ts", &ts))
        return weir_fail("malformed element: %.*s", (int)e->value.len, (const char *)e->value.ptr);
    weir_buf out = {0};
    if (weir_bytes_eq(op, "add")) {
        int64_t total = weir_value_get_i64(sum, 0) + v;
        weir_value_set_i64(sum, total);
        char text[24];
        weir_list_append(seen, text, (size_t)snprintf(text, sizeof text, "%lld", (long long)v));
        char bucket[24];
        snprintf(bucket, sizeof bucket, "%lld", (long long)(v % 3));
        weir_buf old = {0};
        int64_t n = 0;
        if (weir_map_get(counts, weir_str(bucket), &old)) weir_parse_i64(weir_buf_bytes(&old), &n);
        weir_buf_free(&old);
        weir_map_put(counts, weir_str(bucket), text, (size_t)snprintf(text, sizeof text, "%lld", (long long)(n + 1)));

        weir_buf_puts(&out, "{\"k\":");
        weir_buf_json_string(&out, k);
        weir_buf_printf(&out, ",\"sum\":%lld,\"seen\":[", (long long)total);
        weir_list items = weir_list_get(seen);
        for (size_t i = 0; i < weir_list_len(&items); i++) {
            if (i) weir_buf_puts(&out, ",");
            weir_buf_push_bytes(&out, weir_list_at(&items, i));
        }
        weir_list_free(&items);
        weir_buf_puts(&out, "],\"counts\":{");
        weir_entries entries = weir_map_entries(counts);
        for (size_t i = 0; i < weir_entries_len(&entries); i++) {
            if (i) weir_buf_puts(&out, ",");
            weir_buf_json_string(&out, weir_entries_key(&entries, i));
            weir_buf_puts(&out, ":");
            weir_buf_push_bytes(&out, weir_entries_value(&entries, i));
        }
        weir_entries_free(&entries);
        weir_buf_puts(&out, "}}");
        emit_json(&out);
    } else if (weir_bytes_eq(op, "timer")) {
        weir_register_event_time_timer(ts + v);
    } else if (weir_bytes_eq(op, "cancel")) {
        weir_delete_event_time_timer(ts + v);
    } else if (weir_bytes_eq(op, "ttl")) {
        weir_value_set_i64(recent, v);
    } else if (weir_bytes_eq(op, "recall")) {
        weir_buf value = {0};
        weir_buf_puts(&out, "{\"k\":");
        weir_buf_json_string(&out, k);
        weir_buf_puts(&out, ",\"recent\":");
        if (weir_value_get(recent, &value)) weir_buf_push_bytes(&out, weir_buf_bytes(&value)); else weir_buf_puts(&out, "null");
        weir_buf_free(&value);
        weir_buf_puts(&out, "}");
        emit_json(&out);
    } else if (weir_bytes_eq(op, "ptimer")) {
        weir_register_processing_time_timer(weir_current_processing_time() + v);
    } else if (weir_bytes_eq(op, "pcancel")) {
        weir_delete_processing_time_timer(weir_current_processing_time() + v);
    } else if (weir_bytes_eq(op, "side")) {
        weir_buf_puts(&out, "{\"k\":");
        weir_buf_json_string(&out, k);
        weir_buf_printf(&out, ",\"v\":%lld}", (long long)v);
        if (v % 2 != 0) weir_output("odd", out.ptr, out.len); else weir_collect(out.ptr, out.len);
        weir_buf_free(&out);
    } else if (weir_bytes_eq(op, "rekey")) {
        weir_buf key = {0};
        weir_buf_puts(&key, "re-");
        weir_buf_push_bytes(&key, k);
        weir_buf_puts(&out, "{\"from\":");
        weir_buf_json_string(&out, k);
        weir_buf_printf(&out, ",\"v\":%lld}", (long long)v);
        weir_event rekeyed = weir_event_now(out.ptr, out.len);
        rekeyed.key = weir_buf_bytes(&key);
        weir_emit(&rekeyed);
        weir_buf_free(&key);
        weir_buf_free(&out);
    } else if (weir_bytes_eq(op, "clear")) {
        weir_value_clear(sum);
        weir_list_clear(seen);
        weir_map_clear(counts);
        weir_buf_puts(&out, "{\"k\":");
        weir_buf_json_string(&out, k);
        weir_buf_puts(&out, ",\"cleared\":true}");
        emit_json(&out);
    } else if (weir_bytes_eq(op, "fail")) {
        return weir_fail("asked to fail: %lld", (long long)v);
    } else {
        return weir_fail("unknown op `%.*s`", (int)op.len, (const char *)op.ptr);
    }
    return WEIR_OK;
}

static int on_timer(int64_t timestamp, weir_time_domain domain) {
    weir_bytes key = {0};
    weir_current_key(&key);
    weir_buf out = {0};
    weir_buf_puts(&out, "{\"k\":");
    weir_buf_json_string(&out, key);
    const char *field = domain == WEIR_PROCESSING_TIME ? "pfired" : "fired";
    weir_buf_printf(&out, ",\"%s\":%lld,\"sum\":%lld}", field, (long long)timestamp, (long long)weir_value_get_i64(sum, 0));
    emit_json(&out);
    return WEIR_OK;
}

WEIR_EXPORT_OPERATOR({.open = init, .process_element = process_element, .on_timer = on_timer})
