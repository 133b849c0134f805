/*
 * weir C SDK: an aggregate window function (the `aggregate-function` world of
 * wit/window.wit), as Flink's AggregateFunction. Header-only.
 *
 * The accumulator is bytes you define, in a weir_buf the SDK owns: create_accumulator
 * fills an empty one, add and merge change it in place, get_result writes the window's
 * result (the emitted event's value) into `result`. The host stores accumulators and may
 * hand them to another instance after a restore, so they must hold no pointers.
 * Memory rules: weir_common.h; the guide: docs/guest-sdk-c.md.
 */
#ifndef WEIR_AGGREGATE_H
#define WEIR_AGGREGATE_H

#include "aggregate_function.h"
#include "weir_common.h"

typedef struct weir_aggregate_function {
    int (*create_accumulator)(weir_buf *accumulator);
    int (*add)(weir_buf *accumulator, const weir_event *element);
    /* Merges `other` into `accumulator` (panes of a sliding window, merged sessions). */
    int (*merge)(weir_buf *accumulator, weir_bytes other);
    int (*get_result)(weir_bytes accumulator, weir_buf *result);
} weir_aggregate_function;

/* Hands a weir_buf's bytes to the bindings as a result (freed after the call). */
#define WEIR__RETURN_BUF(ret, buf) \
    do {                           \
        (ret)->ptr = (buf).ptr;    \
        (ret)->len = (buf).len;    \
    } while (0)
#define WEIR__ADOPT(list) {(list)->ptr, (list)->len, (list)->len}

static inline bool weir__aggregate_result(int rc, weir_buf *buf, aggregate_function_list_u8_t *ret,
                                          aggregate_function_string_t *err) {
    if (rc != WEIR_OK) {
        weir_buf_free(buf);
        weir__take_error(&err->ptr, &err->len);
        return false;
    }
    WEIR__RETURN_BUF(ret, *buf);
    return true;
}

/* Defines the component's exports from a weir_aggregate_function; use it once. */
#define WEIR_EXPORT_AGGREGATE(...)                                                                       \
    char *weir__error;                                                                                   \
    static const weir_aggregate_function weir__aggregate = __VA_ARGS__;                                  \
    bool exports_weir_operator_aggregate_create_accumulator(aggregate_function_list_u8_t *ret,          \
                                                            aggregate_function_string_t *err) {         \
        weir_buf acc = {0};                                                                              \
        return weir__aggregate_result(weir__aggregate.create_accumulator(&acc), &acc, ret, err);        \
    }                                                                                                    \
    bool exports_weir_operator_aggregate_add(aggregate_function_list_u8_t *accumulator,                 \
                                             exports_weir_operator_aggregate_event_t *element,          \
                                             aggregate_function_list_u8_t *ret,                         \
                                             aggregate_function_string_t *err) {                        \
        weir_buf acc = WEIR__ADOPT(accumulator);                                                         \
        weir_event view;                                                                                 \
        WEIR__EVENT_VIEW(&view, element);                                                                \
        int rc = weir__aggregate.add(&acc, &view);                                                       \
        exports_weir_operator_aggregate_event_free(element);                                            \
        return weir__aggregate_result(rc, &acc, ret, err);                                               \
    }                                                                                                    \
    bool exports_weir_operator_aggregate_merge(aggregate_function_list_u8_t *a, aggregate_function_list_u8_t *b, \
                                               aggregate_function_list_u8_t *ret,                       \
                                               aggregate_function_string_t *err) {                      \
        weir_buf acc = WEIR__ADOPT(a);                                                                   \
        int rc = weir__aggregate.merge(&acc, weir_bytes_of(b->ptr, b->len));                             \
        aggregate_function_list_u8_free(b);                                                              \
        return weir__aggregate_result(rc, &acc, ret, err);                                               \
    }                                                                                                    \
    bool exports_weir_operator_aggregate_get_result(aggregate_function_list_u8_t *accumulator,          \
                                                    aggregate_function_list_u8_t *ret,                  \
                                                    aggregate_function_string_t *err) {                 \
        weir_buf result = {0};                                                                           \
        int rc = weir__aggregate.get_result(weir_bytes_of(accumulator->ptr, accumulator->len), &result); \
        aggregate_function_list_u8_free(accumulator);                                                    \
        return weir__aggregate_result(rc, &result, ret, err);                                            \
    }

#endif /* WEIR_AGGREGATE_H */
