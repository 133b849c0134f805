// The tutorials' AnomalyDetector (Part 1, "Real-time Log Analysis System") in C with
// weir's SDK: the same logic as examples/python-log-analyzer/anomaly.py, and the same
// alerts. Build: weir build anomaly.c
#include "weir.h"

static weir_value_state failed_login_count, last_login_time;

static int init(void) {
    failed_login_count = weir_value_state_new("failed_logins");
    last_login_time = weir_value_state_new("last_login");
    return WEIR_OK;
}

static void alert(const char *type, weir_bytes user_id, int64_t timestamp, const char *fmt, weir_bytes arg) {
    weir_buf out = {0};
    weir_buf_printf(&out, "{\"type\":\"%s\",\"user_id\":", type);
    weir_buf_json_string(&out, user_id);
    weir_buf_puts(&out, ",\"message\":\"");
    weir_buf_printf(&out, fmt, (int)arg.len, (const char *)arg.ptr);
    weir_buf_printf(&out, "\",\"timestamp\":%lld}", (long long)timestamp);
    weir_collect(out.ptr, out.len);
    weir_buf_free(&out);
}

static int process_element(const weir_event *log_event) {
    weir_bytes action, user_id;
    int64_t current_time;
    if (!weir_json_string(log_event->value, "action", &action) || !weir_json_string(log_event->value, "user_id", &user_id) ||
        !weir_json_i64(log_event->value, "timestamp", &current_time))
        return weir_fail("not a log event: %.*s", (int)log_event->value.len, (const char *)log_event->value.ptr);

    if (weir_bytes_eq(action, "login_failed")) {
        // Alert at the 5th failure, then start counting again.
        int64_t count = weir_value_get_i64(failed_login_count, 0);
        weir_value_set_i64(failed_login_count, count + 1);
        if (count >= 4) {
            char n[24];
            int len = snprintf(n, sizeof n, "%lld", (long long)(count + 1));
            alert("security_alert", user_id, current_time, "Multiple failed login attempts: %.*s", weir_bytes_of(n, (size_t)len));
            weir_value_clear(failed_login_count);
        }
    } else if (weir_bytes_eq(action, "login_success")) {
        weir_value_clear(failed_login_count);
        weir_value_set_i64(last_login_time, current_time);
    } else if (weir_bytes_eq(action, "view") || weir_bytes_eq(action, "purchase") || weir_bytes_eq(action, "download")) {
        int64_t last_login = weir_value_get_i64(last_login_time, 0);
        if (last_login && current_time - last_login > 86400)
            alert("anomaly_alert", user_id, current_time, "Activity after long inactivity: %.*s", action);
    }
    return WEIR_OK;
}

WEIR_EXPORT_OPERATOR({.open = init, .process_element = process_element})
