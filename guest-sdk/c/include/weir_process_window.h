/*
 * weir C SDK: a process window function (the `process-window-function` world of
 * wit/window.wit), as Flink's ProcessWindowFunction: called when a window fires, with
 * every element of the window (or the one result of its aggregate). Header-only.
 *
 * `process` adds what the window emits with weir_window_collect; each emitted value gets
 * the window's key and its max timestamp (end - 1), as in Flink. Memory rules:
 * weir_common.h; the guide: docs/guest-sdk-c.md.
 */
#ifndef WEIR_PROCESS_WINDOW_H
#define WEIR_PROCESS_WINDOW_H

#include "process_window_function.h"
#include "weir_common.h"

/* A window: the half-open interval [start, end) in ms. */
typedef struct weir_window {
    int64_t start;
    int64_t end;
} weir_window;

/* What a firing emits (filled through weir_window_collect). */
typedef struct weir_window_output {
    exports_weir_operator_process_window_list_event_t events;
    size_t cap;
} weir_window_output;

typedef struct weir_process_window_function {
    int (*process)(weir_bytes key, weir_window window, const weir_event *elements, size_t count,
                   weir_window_output *out);
} weir_process_window_function;

/* Emits `value` (copied) from this firing. */
static inline void weir_window_collect(weir_window_output *out, const void *value, size_t len) {
    if (out->events.len == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 4;
        void *p = realloc(out->events.ptr, out->cap * sizeof *out->events.ptr);
        if (!p) abort();
        out->events.ptr = (exports_weir_operator_process_window_event_t *)p;
    }
    exports_weir_operator_process_window_event_t *e = &out->events.ptr[out->events.len++];
    memset(e, 0, sizeof *e);
    e->value.ptr = (uint8_t *)malloc(len ? len : 1);
    if (!e->value.ptr) abort();
    memcpy(e->value.ptr, value, len);
    e->value.len = len;
}

/* Defines the component's exports from a weir_process_window_function; use it once. */
#define WEIR_EXPORT_PROCESS_WINDOW(...)                                                                   \
    char *weir__error;                                                                                    \
    static const weir_process_window_function weir__process_window = __VA_ARGS__;                         \
    bool exports_weir_operator_process_window_process(                                                    \
        process_window_function_list_u8_t *key, exports_weir_operator_process_window_window_t *window,    \
        exports_weir_operator_process_window_list_event_t *elements,                                      \
        exports_weir_operator_process_window_list_event_t *ret, process_window_function_string_t *err) {  \
        weir_event *views = (weir_event *)malloc((elements->len ? elements->len : 1) * sizeof(weir_event)); \
        if (!views) abort();                                                                              \
        for (size_t i = 0; i < elements->len; i++) WEIR__EVENT_VIEW(&views[i], &elements->ptr[i]);        \
        weir_window w = {window->start, window->end};                                                     \
        weir_window_output out = {{NULL, 0}, 0};                                                          \
        int rc = weir__process_window.process(weir_bytes_of(key->ptr, key->len), w, views, elements->len, &out); \
        free(views);                                                                                      \
        exports_weir_operator_process_window_list_event_free(elements);                                   \
        process_window_function_list_u8_free(key);                                                        \
        if (rc != WEIR_OK) {                                                                              \
            exports_weir_operator_process_window_list_event_free(&out.events);                            \
            weir__take_error(&err->ptr, &err->len);                                                       \
            return false;                                                                                 \
        }                                                                                                 \
        *ret = out.events;                                                                                \
        return true;                                                                                      \
    }

#endif /* WEIR_PROCESS_WINDOW_H */
