// The conformance suite's aggregate window function, in C: the average of field `v`
// and how many elements it covers (as tests/guests/window-average in Rust).
#include "weir_aggregate.h"

// The accumulator: a total and a count, as raw bytes (the host stores them as given).
typedef struct {
    double total;
    int64_t count;
} average;

static int create_accumulator(weir_buf *acc) {
    average zero = {0, 0};
    weir_buf_push(acc, &zero, sizeof zero);
    return WEIR_OK;
}

static int add(weir_buf *acc, const weir_event *element) {
    weir_bytes fail;
    if (weir_json_raw(element->value, "fail", &fail) && weir_bytes_eq(fail, "true")) return weir_fail("asked to fail");
    double v;
    if (!weir_json_f64(element->value, "v", &v)) return weir_fail("element has no number `v`");
    average a;
    memcpy(&a, acc->ptr, sizeof a);
    a.total += v;
    a.count += 1;
    memcpy(acc->ptr, &a, sizeof a);
    return WEIR_OK;
}

static int merge(weir_buf *acc, weir_bytes other) {
    average a, b;
    memcpy(&a, acc->ptr, sizeof a);
    memcpy(&b, other.ptr, sizeof b);
    a.total += b.total;
    a.count += b.count;
    memcpy(acc->ptr, &a, sizeof a);
    return WEIR_OK;
}

static int get_result(weir_bytes acc, weir_buf *result) {
    average a;
    memcpy(&a, acc.ptr, sizeof a);
    weir_buf_printf(result, "{\"avg\":%.17g,\"count\":%lld}", a.total / (double)a.count, (long long)a.count);
    return WEIR_OK;
}

WEIR_EXPORT_AGGREGATE({create_accumulator, add, merge, get_result})
