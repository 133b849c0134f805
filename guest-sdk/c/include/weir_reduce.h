/*
 * weir C SDK: a reduce window function (the `reduce-function` world of wit/window.wit),
 * as Flink's ReduceFunction: combines two values into one of the same kind. Header-only.
 * `reduce` folds `b` (which came later) into `a`, in place. Memory rules: weir_common.h.
 */
#ifndef WEIR_REDUCE_H
#define WEIR_REDUCE_H

#include "reduce_function.h"
#include "weir_common.h"

typedef struct weir_reduce_function {
    int (*reduce)(weir_buf *a, weir_bytes b);
} weir_reduce_function;

/* Defines the component's exports from a weir_reduce_function; use it once. */
#define WEIR_EXPORT_REDUCE(...)                                                                           \
    char *weir__error;                                                                                    \
    static const weir_reduce_function weir__reduce = __VA_ARGS__;                                         \
    bool exports_weir_operator_reduce_reduce(reduce_function_list_u8_t *a, reduce_function_list_u8_t *b, \
                                             reduce_function_list_u8_t *ret, reduce_function_string_t *err) { \
        weir_buf acc = {a->ptr, a->len, a->len};                                                          \
        int rc = weir__reduce.reduce(&acc, weir_bytes_of(b->ptr, b->len));                                \
        reduce_function_list_u8_free(b);                                                                  \
        if (rc != WEIR_OK) {                                                                              \
            weir_buf_free(&acc);                                                                          \
            weir__take_error(&err->ptr, &err->len);                                                       \
            return false;                                                                                 \
        }                                                                                                 \
        ret->ptr = acc.ptr;                                                                               \
        ret->len = acc.len;                                                                               \
        return true;                                                                                      \
    }

#endif /* WEIR_REDUCE_H */
