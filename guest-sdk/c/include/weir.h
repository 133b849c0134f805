/*
 * weir C SDK: operators (the `co-operator` world of wit/v0.3/operator.wit, contract 0.3:
 * an operator, a second input, a checkpoint hook), over the bindings `wit-bindgen c`
 * generates (guest-sdk/c/bindings/co_operator). Header-only. A batch crosses the boundary
 * once, as flat buffers; what it emits goes back in the call's result, and the value
 * states made in `open` travel with the batch (reading and writing them costs no host call).
 *
 *   #include "weir.h"
 *   static weir_value_state count;
 *   static int open(void) { count = weir_value_state_new("count"); return WEIR_OK; }
 *   static int process_element(const weir_event *e) { ...; weir_collect(...); return WEIR_OK; }
 *   WEIR_EXPORT_OPERATOR((weir_operator){ .open = open, .process_element = process_element })
 *
 * Build with `weir build app.c`. Memory rules: weir_common.h. The full guide:
 * docs/guest-sdk-c.md.
 */
#ifndef WEIR_H
#define WEIR_H

#include "co_operator.h"
#include "weir_common.h"

/* ---- the operator ------------------------------------------------------------- */

typedef enum weir_time_domain {
    WEIR_EVENT_TIME = WEIR_OPERATOR_TYPES_TIME_DOMAIN_EVENT_TIME,
    WEIR_PROCESSING_TIME = WEIR_OPERATOR_TYPES_TIME_DOMAIN_PROCESSING_TIME,
} weir_time_domain;

/* What an operator implements, as Flink's KeyedProcessFunction. Every callback returns
 * WEIR_OK or weir_fail(...); all but process_element are optional. */
typedef struct weir_operator {
    /* Once per subtask before any element: declare state here (weir_config_get reads
     * the job file's config). */
    int (*open)(void);
    /* Each element, with its key current for state and timers. */
    int (*process_element)(const weir_event *element);
    /* A timer of the current key fired. */
    int (*on_timer)(int64_t timestamp, weir_time_domain domain);
    /* Once when the input has ended and every event-time timer has fired. */
    int (*close)(void);
    /* The version of the operator's state layout, and the migration from an older one
     * (called per restored key after open; see docs/upgrades.md). */
    uint32_t state_version;
    int (*migrate)(uint32_t from_version);
    /* An element of the second input (edges with `input = 2`): Flink's processElement2,
     * or processBroadcastElement on a broadcast input (where weir_broadcast_* may write).
     * Optional: without it, an element on input 2 fails the job. */
    int (*process_element_2)(const weir_event *element);
    /* At every checkpoint and savepoint: write what the operator keeps in memory into
     * operator state (Flink's CheckpointedFunction.snapshotState). Optional. */
    int (*snapshot_state)(uint64_t checkpoint_id);
} weir_operator;

/* What the SDK tracks during one call (defined once by WEIR_EXPORT_OPERATOR). */
typedef struct weir__call {
    const weir_event *element; /* the element being processed, or NULL */
    bool keyed;                /* a timer or a migration: the host knows the key */
    bool in_timer;
    int64_t timer_timestamp;
    bool key_loaded; /* the timer's key, read from the host on first use */
    co_operator_list_u8_t timer_key;
    bool has_timer_key;
} weir__call;
extern weir__call weir__now;
extern co_operator_list_tuple2_string_string_t weir__config;

/* ---- contract 0.3's flat batches ---------------------------------------------------- */

/* The most value states that travel with the batch (more are per-call). */
#define WEIR__MAX_LOADED 32
/* The most one element may emit (the contract's limit). */
#define WEIR__MAX_EMITS 100000
#define WEIR__MAX_EMIT_BYTES (64u << 20)
#define WEIR__NO_KEY 0xffffffffu

/* One loaded state's copy for the batch, per distinct key. */
typedef struct weir__copy {
    const weir_operator_types_loaded_values_t *values;
    uint8_t *held; /* 0 loaded, 1 set, 2 cleared */
    uint8_t *read;
    weir_buf *set;
} weir__copy;

/* The batch being processed, and what it emitted (defined by WEIR_EXPORT_OPERATOR). */
typedef struct weir__batch {
    bool active, opening, timer_registered;
    int32_t loaded_handles[WEIR__MAX_LOADED]; /* the handle of each loaded value state, by slot */
    size_t loaded_count;
    int32_t created[WEIR__MAX_LOADED]; /* value states made while opening */
    size_t created_count;
    const weir_operator_types_input_batch_t *input;
    uint32_t index;
    int64_t focused;
    size_t keys; /* distinct keys of the batch */
    weir__copy copies[WEIR__MAX_LOADED];
    /* the result being gathered: bytes, and arrays of u32, s64, headers and names */
    weir_buf flags, out_keys, key_ends, values, value_ends, timestamps, headers, elements, ports, outputs;
    size_t emitted, element_emits, element_bytes;
} weir__batch;
extern weir__batch weir__b;

/* Makes the current element current on the host's side, before a keyed host call. */
static inline void weir__focus(void) {
    if (weir__b.active && weir__b.focused != (int64_t)weir__b.index) {
        weir_operator_batch_focus(weir__b.index);
        weir__b.focused = weir__b.index;
    }
}

/* ---- state ---------------------------------------------------------------------- */
/* Keyed state, scoped to the current key, stored by the host. Declare handles in open;
 * values are bytes (JSON text is the convention the other SDKs share, so an operator
 * rewritten in another language keeps its state). */

typedef struct { weir_operator_state_own_value_state_t own; } weir_value_state;
typedef struct { weir_operator_state_own_list_state_t own; } weir_list_state;
typedef struct { weir_operator_state_own_map_state_t own; } weir_map_state;

/* A time to live as Flink's StateTtlConfig; pass NULL for none. */
typedef struct weir_ttl {
    uint64_t ttl_ms;
    bool refresh_on_read;
} weir_ttl;

#define WEIR__NAME(name) co_operator_string_t n_ = {(uint8_t *)(name), strlen(name)}
#define WEIR__TTL(ttl)                                                                          \
    weir_operator_state_ttl_t t_ = {(ttl) ? (ttl)->ttl_ms : 0, (ttl) ? (ttl)->refresh_on_read : false}
#define WEIR__LIST(var, p, n) co_operator_list_u8_t var = {(uint8_t *)(p), (n)}

static inline weir_value_state weir_value_state_with_ttl(const char *name, const weir_ttl *ttl) {
    WEIR__NAME(name);
    WEIR__TTL(ttl);
    weir_value_state s = {weir_operator_state_constructor_value_state(&n_, ttl ? &t_ : NULL)};
    if (weir__b.opening && weir__b.created_count < WEIR__MAX_LOADED) weir__b.created[weir__b.created_count++] = s.own.__handle;
    return s;
}

/* The batch's copy of `s` for the current element's key, or NULL (then it is a host call). */
static inline weir__copy *weir__copy_of(weir_value_state s, uint32_t *key) {
    if (!weir__b.active) return NULL;
    for (size_t slot = 0; slot < weir__b.loaded_count; slot++) {
        if (weir__b.loaded_handles[slot] != s.own.__handle) continue;
        *key = weir__b.input->key_slots.ptr[weir__b.index];
        return *key == WEIR__NO_KEY ? NULL : &weir__b.copies[slot];
    }
    return NULL;
}
static inline weir_value_state weir_value_state_new(const char *name) { return weir_value_state_with_ttl(name, NULL); }

/* The current key's value into `out` (which you free with weir_buf_free); false when unset. */
static inline bool weir_value_get(weir_value_state s, weir_buf *out) {
    uint32_t k;
    weir__copy *copy = weir__copy_of(s, &k);
    if (copy) {
        *out = (weir_buf){0};
        if (copy->held[k] == 2) return false;
        if (copy->held[k] == 1) {
            weir_buf_push(out, copy->set[k].ptr, copy->set[k].len);
            return true;
        }
        copy->read[k] = 1;
        if (!copy->values->present.ptr[k]) return false;
        uint32_t from = k ? copy->values->ends.ptr[k - 1] : 0;
        weir_buf_push(out, copy->values->values.ptr + from, copy->values->ends.ptr[k] - from);
        return true;
    }
    weir__focus();
    co_operator_list_u8_t v;
    if (!weir_operator_state_method_value_state_get(weir_operator_state_borrow_value_state(s.own), &v)) return false;
    out->ptr = v.ptr;
    out->len = out->cap = v.len;
    return true;
}
static inline void weir_value_set(weir_value_state s, const void *value, size_t len) {
    uint32_t k;
    weir__copy *copy = weir__copy_of(s, &k);
    if (copy) {
        copy->held[k] = 1;
        copy->set[k].len = 0;
        weir_buf_push(&copy->set[k], value, len);
        return;
    }
    weir__focus();
    WEIR__LIST(v, value, len);
    weir_operator_state_method_value_state_set(weir_operator_state_borrow_value_state(s.own), &v);
}
static inline void weir_value_clear(weir_value_state s) {
    uint32_t k;
    weir__copy *copy = weir__copy_of(s, &k);
    if (copy) {
        copy->held[k] = 2;
        return;
    }
    weir__focus();
    weir_operator_state_method_value_state_clear(weir_operator_state_borrow_value_state(s.own));
}
/* An integer value stored as its decimal (JSON) text; `fallback` when unset. */
static inline int64_t weir_value_get_i64(weir_value_state s, int64_t fallback) {
    weir_buf b = {0};
    int64_t v = fallback;
    if (weir_value_get(s, &b) && !weir_parse_i64(weir_buf_bytes(&b), &v)) v = fallback;
    weir_buf_free(&b);
    return v;
}
static inline void weir_value_set_i64(weir_value_state s, int64_t value) {
    uint8_t text[24];
    weir_buf b = {text, 0, sizeof text}; /* on the stack: never grown, never freed */
    weir_buf_push_i64(&b, value);
    weir_value_set(s, b.ptr, b.len);
}

/* A list read from list state, or the keys of a map: free with weir_list_free. */
typedef struct weir_list {
    co_operator_list_list_u8_t items;
} weir_list;
static inline size_t weir_list_len(const weir_list *l) { return l->items.len; }
static inline weir_bytes weir_list_at(const weir_list *l, size_t i) {
    return weir_bytes_of(l->items.ptr[i].ptr, l->items.ptr[i].len);
}
static inline void weir_list_free(weir_list *l) { co_operator_list_list_u8_free(&l->items); }

static inline weir_list_state weir_list_state_with_ttl(const char *name, const weir_ttl *ttl) {
    WEIR__NAME(name);
    WEIR__TTL(ttl);
    weir_list_state s = {weir_operator_state_constructor_list_state(&n_, ttl ? &t_ : NULL)};
    return s;
}
static inline weir_list_state weir_list_state_new(const char *name) { return weir_list_state_with_ttl(name, NULL); }
static inline void weir_list_append(weir_list_state s, const void *item, size_t len) {
    weir__focus();
    WEIR__LIST(v, item, len);
    weir_operator_state_method_list_state_append(weir_operator_state_borrow_list_state(s.own), &v);
}
static inline weir_list weir_list_get(weir_list_state s) {
    weir__focus();
    weir_list l;
    weir_operator_state_method_list_state_get(weir_operator_state_borrow_list_state(s.own), &l.items);
    return l;
}
static inline void weir_list_clear(weir_list_state s) {
    weir__focus();
    weir_operator_state_method_list_state_clear(weir_operator_state_borrow_list_state(s.own));
}

/* The entries of a map, ordered by user key bytes: free with weir_entries_free. */
typedef struct weir_entries {
    co_operator_list_tuple2_list_u8_list_u8_t items;
} weir_entries;
static inline size_t weir_entries_len(const weir_entries *e) { return e->items.len; }
static inline weir_bytes weir_entries_key(const weir_entries *e, size_t i) {
    return weir_bytes_of(e->items.ptr[i].f0.ptr, e->items.ptr[i].f0.len);
}
static inline weir_bytes weir_entries_value(const weir_entries *e, size_t i) {
    return weir_bytes_of(e->items.ptr[i].f1.ptr, e->items.ptr[i].f1.len);
}
static inline void weir_entries_free(weir_entries *e) { co_operator_list_tuple2_list_u8_list_u8_free(&e->items); }

static inline weir_map_state weir_map_state_with_ttl(const char *name, const weir_ttl *ttl) {
    WEIR__NAME(name);
    WEIR__TTL(ttl);
    weir_map_state s = {weir_operator_state_constructor_map_state(&n_, ttl ? &t_ : NULL)};
    return s;
}
static inline weir_map_state weir_map_state_new(const char *name) { return weir_map_state_with_ttl(name, NULL); }
#define WEIR__MAP(s) (weir__focus(), weir_operator_state_borrow_map_state((s).own))
/* The value under `key` into `out` (free with weir_buf_free); false when absent. */
static inline bool weir_map_get(weir_map_state s, weir_bytes key, weir_buf *out) {
    WEIR__LIST(k, key.ptr, key.len);
    co_operator_list_u8_t v;
    if (!weir_operator_state_method_map_state_get(WEIR__MAP(s), &k, &v)) return false;
    out->ptr = v.ptr;
    out->len = out->cap = v.len;
    return true;
}
static inline void weir_map_put(weir_map_state s, weir_bytes key, const void *value, size_t len) {
    WEIR__LIST(k, key.ptr, key.len);
    WEIR__LIST(v, value, len);
    weir_operator_state_method_map_state_put(WEIR__MAP(s), &k, &v);
}
static inline void weir_map_remove(weir_map_state s, weir_bytes key) {
    WEIR__LIST(k, key.ptr, key.len);
    weir_operator_state_method_map_state_remove(WEIR__MAP(s), &k);
}
static inline bool weir_map_contains(weir_map_state s, weir_bytes key) {
    WEIR__LIST(k, key.ptr, key.len);
    return weir_operator_state_method_map_state_contains(WEIR__MAP(s), &k);
}
static inline weir_entries weir_map_entries(weir_map_state s) {
    weir_entries e;
    weir_operator_state_method_map_state_entries(WEIR__MAP(s), &e.items);
    return e;
}
static inline weir_list weir_map_keys(weir_map_state s) {
    weir_list l;
    weir_operator_state_method_map_state_keys(WEIR__MAP(s), &l.items);
    return l;
}
static inline bool weir_map_is_empty(weir_map_state s) { return weir_operator_state_method_map_state_is_empty(WEIR__MAP(s)); }
static inline void weir_map_clear(weir_map_state s) { weir_operator_state_method_map_state_clear(WEIR__MAP(s)); }

/* ---- operator state and broadcast state -------------------------------------------- */
/* Operator state is this subtask's, not a key's (Flink's CheckpointedFunction): usable
 * in every callback, open included. A split list is divided evenly among the subtasks
 * on rescale, a union list goes whole to every subtask. Broadcast state is a map every
 * subtask holds in full, written only from a broadcast second input. */

typedef struct { weir_operator_operator_state_own_list_state_t own; } weir_operator_list;
typedef struct { weir_operator_operator_state_own_broadcast_state_t own; } weir_broadcast_state;

static inline weir_operator_list weir__operator_list(const char *name, weir_operator_operator_state_redistribution_t mode) {
    WEIR__NAME(name);
    weir_operator_list l = {weir_operator_operator_state_constructor_list_state(&n_, mode)};
    return l;
}
static inline weir_operator_list weir_operator_list_new(const char *name) {
    return weir__operator_list(name, WEIR_OPERATOR_OPERATOR_STATE_REDISTRIBUTION_SPLIT);
}
static inline weir_operator_list weir_union_list_new(const char *name) {
    return weir__operator_list(name, WEIR_OPERATOR_OPERATOR_STATE_REDISTRIBUTION_UNION);
}
#define WEIR__OPLIST(l) weir_operator_operator_state_borrow_list_state((l).own)
/* Every item (free with weir_list_free). */
static inline weir_list weir_operator_list_get(weir_operator_list l) {
    weir_list out;
    weir_operator_operator_state_method_list_state_get(WEIR__OPLIST(l), &out.items);
    return out;
}
static inline void weir_operator_list_add(weir_operator_list l, const void *item, size_t len) {
    WEIR__LIST(v, item, len);
    weir_operator_operator_state_method_list_state_add(WEIR__OPLIST(l), &v);
}
/* Replaces every item with the `count` items of `items` (the bytes stay yours). */
static inline void weir_operator_list_update(weir_operator_list l, const weir_bytes *items, size_t count) {
    co_operator_list_u8_t *lists = count ? (co_operator_list_u8_t *)malloc(count * sizeof *lists) : NULL;
    if (count && !lists) abort();
    for (size_t i = 0; i < count; i++) {
        lists[i].ptr = (uint8_t *)items[i].ptr;
        lists[i].len = items[i].len;
    }
    co_operator_list_list_u8_t all = {lists, count};
    weir_operator_operator_state_method_list_state_update(WEIR__OPLIST(l), &all);
    free(lists);
}
static inline void weir_operator_list_clear(weir_operator_list l) {
    weir_operator_operator_state_method_list_state_clear(WEIR__OPLIST(l));
}
/* Whether the operator state came from a checkpoint or savepoint (Flink's isRestored). */
static inline bool weir_is_restored(void) { return weir_operator_operator_state_is_restored(); }

static inline weir_broadcast_state weir_broadcast_state_new(const char *name) {
    WEIR__NAME(name);
    weir_broadcast_state b = {weir_operator_operator_state_constructor_broadcast_state(&n_)};
    return b;
}
#define WEIR__BROADCAST(b) weir_operator_operator_state_borrow_broadcast_state((b).own)
/* The value under `key` into `out` (free with weir_buf_free); false when absent. */
static inline bool weir_broadcast_get(weir_broadcast_state b, weir_bytes key, weir_buf *out) {
    WEIR__LIST(k, key.ptr, key.len);
    co_operator_list_u8_t v;
    if (!weir_operator_operator_state_method_broadcast_state_get(WEIR__BROADCAST(b), &k, &v)) return false;
    out->ptr = v.ptr;
    out->len = out->cap = v.len;
    return true;
}
static inline bool weir_broadcast_contains(weir_broadcast_state b, weir_bytes key) {
    WEIR__LIST(k, key.ptr, key.len);
    return weir_operator_operator_state_method_broadcast_state_contains(WEIR__BROADCAST(b), &k);
}
static inline weir_entries weir_broadcast_entries(weir_broadcast_state b) {
    weir_entries e;
    weir_operator_operator_state_method_broadcast_state_entries(WEIR__BROADCAST(b), &e.items);
    return e;
}
/* Writes: from the broadcast input only (elsewhere the host stops the guest, as Flink). */
static inline void weir_broadcast_put(weir_broadcast_state b, weir_bytes key, const void *value, size_t len) {
    WEIR__LIST(k, key.ptr, key.len);
    WEIR__LIST(v, value, len);
    weir_operator_operator_state_method_broadcast_state_put(WEIR__BROADCAST(b), &k, &v);
}
static inline void weir_broadcast_remove(weir_broadcast_state b, weir_bytes key) {
    WEIR__LIST(k, key.ptr, key.len);
    weir_operator_operator_state_method_broadcast_state_remove(WEIR__BROADCAST(b), &k);
}
static inline void weir_broadcast_clear(weir_broadcast_state b) {
    weir_operator_operator_state_method_broadcast_state_clear(WEIR__BROADCAST(b));
}

/* ---- timers and time -------------------------------------------------------------- */

static inline void weir_register_event_time_timer(int64_t t) {
    weir__focus();
    weir_operator_timers_register(WEIR_EVENT_TIME, t);
    if (weir__b.active) weir__b.timer_registered = true;
}
static inline void weir_delete_event_time_timer(int64_t t) { weir__focus(); weir_operator_timers_delete(WEIR_EVENT_TIME, t); }
static inline void weir_register_processing_time_timer(int64_t t) { weir__focus(); weir_operator_timers_register(WEIR_PROCESSING_TIME, t); }
static inline void weir_delete_processing_time_timer(int64_t t) { weir__focus(); weir_operator_timers_delete(WEIR_PROCESSING_TIME, t); }
static inline int64_t weir_current_watermark(void) { weir__focus(); return weir_operator_timers_current_watermark(); }
static inline int64_t weir_current_processing_time(void) { return weir_operator_timers_current_processing_time(); }

/* ---- context -------------------------------------------------------------------- */

/* The key of the element or timer being processed; false outside of one. */
static inline bool weir_current_key(weir_bytes *key) {
    if (weir__now.element) {
        *key = weir__now.element->key;
        return weir__now.element->has_key;
    }
    if (!weir__now.keyed) return false;
    if (!weir__now.key_loaded) {
        weir__now.has_timer_key = weir_operator_context_current_key(&weir__now.timer_key);
        weir__now.key_loaded = true;
    }
    *key = weir_bytes_of(weir__now.timer_key.ptr, weir__now.timer_key.len);
    return weir__now.has_timer_key;
}

/* The value of the job file's `config` entry `name` (NUL-terminated), or NULL. */
static inline const char *weir_config_get(const char *name) {
    for (size_t i = 0; i < weir__config.len; i++) {
        co_operator_tuple2_string_string_t *e = &weir__config.ptr[i];
        if (e->f0.len == strlen(name) && memcmp(e->f0.ptr, name, e->f0.len) == 0) return (const char *)e->f1.ptr;
    }
    return NULL;
}
static inline uint32_t weir_subtask_index(void) { return weir_operator_context_subtask_index(); }
static inline uint32_t weir_parallelism(void) { return weir_operator_context_parallelism(); }

/* Logs into the host's structured log, tagged with the operator and subtask. */
typedef enum weir_level {
    WEIR_TRACE = WEIR_OPERATOR_LOGGING_LEVEL_TRACE,
    WEIR_DEBUG = WEIR_OPERATOR_LOGGING_LEVEL_DEBUG,
    WEIR_INFO = WEIR_OPERATOR_LOGGING_LEVEL_INFO,
    WEIR_WARN = WEIR_OPERATOR_LOGGING_LEVEL_WARN,
    WEIR_ERROR_LEVEL = WEIR_OPERATOR_LOGGING_LEVEL_ERROR,
} weir_level;
__attribute__((format(printf, 2, 3))) static inline void weir_log(weir_level level, const char *fmt, ...) {
    weir_buf b = {0};
    va_list args;
    va_start(args, fmt);
    weir_buf_vprintf(&b, fmt, args);
    va_end(args);
    co_operator_string_t m = {b.ptr, b.len};
    weir_operator_logging_log((weir_operator_logging_level_t)level, &m);
    weir_buf_free(&b);
}

/* ---- output --------------------------------------------------------------------- */

/* Emits a full event to the main output (`output` NULL) or a side output. The host
 * copies it: the bytes stay yours. Emitting with another key re-keys the stream. */
static inline void weir__gather(const char *output, const weir_event *event);

static inline void weir_emit_to(const char *output, const weir_event *event) {
    if (weir__b.active) {
        weir__gather(output, event);
        return;
    }
    weir_operator_collector_event_t e;
    e.key.is_some = event->has_key;
    e.key.val.ptr = (uint8_t *)event->key.ptr;
    e.key.val.len = event->key.len;
    e.value.ptr = (uint8_t *)event->value.ptr;
    e.value.len = event->value.len;
    e.timestamp.is_some = event->has_timestamp;
    e.timestamp.val = event->timestamp;
    e.headers.ptr = (weir_operator_types_header_t *)event->headers;
    e.headers.len = event->header_count;
    if (output) {
        WEIR__NAME(output);
        weir_operator_collector_emit_to(&n_, &e);
    } else {
        weir_operator_collector_emit(&e);
    }
}
static inline void weir_emit(const weir_event *event) { weir_emit_to(NULL, event); }

/* `value` with the current key and time (the element's timestamp, or the timer's):
 * what Flink's `out.collect(value)` does. */
static inline weir_event weir_event_now(const void *value, size_t len) {
    weir_event e = {0};
    e.has_key = weir_current_key(&e.key);
    e.value = weir_bytes_of(value, len);
    if (weir__now.element) {
        e.has_timestamp = weir__now.element->has_timestamp;
        e.timestamp = weir__now.element->timestamp;
    } else if (weir__now.in_timer) {
        e.has_timestamp = true;
        e.timestamp = weir__now.timer_timestamp;
    }
    return e;
}
static inline void weir_collect(const void *value, size_t len) {
    weir_event e = weir_event_now(value, len);
    weir_emit(&e);
}
/* To the side output called `tag` (Flink's `ctx.output(OutputTag(tag), value)`). */
static inline void weir_output(const char *tag, const void *value, size_t len) {
    weir_event e = weir_event_now(value, len);
    weir_emit_to(tag, &e);
}

/* ---- gathering a batch's result ---------------------------------------------------- */

#define WEIR__PUSH(buf, type, v)                                                                 \
    do {                                                                                        \
        type v_ = (v);                                                                          \
        weir_buf_push(&(buf), &v_, sizeof v_);                                                  \
    } while (0)

/* A malloc'd copy of `len` bytes (the result's lists are freed after the call). */
static inline uint8_t *weir__dup(const void *p, size_t len) {
    uint8_t *copy = (uint8_t *)malloc(len ? len : 1);
    if (!copy) abort();
    if (len) memcpy(copy, p, len);
    return copy;
}

static inline void weir__gather(const char *output, const weir_event *event) {
    weir__batch *b = &weir__b;
    uint32_t port = 0;
    if (output) {
        co_operator_string_t *names = (co_operator_string_t *)b->outputs.ptr;
        size_t count = b->outputs.len / sizeof *names, len = strlen(output), at = 0;
        while (at < count && !(names[at].len == len && memcmp(names[at].ptr, output, len) == 0)) at++;
        if (at == count) {
            co_operator_string_t name = {weir__dup(output, len), len};
            weir_buf_push(&b->outputs, &name, sizeof name);
        }
        port = (uint32_t)at + 1;
    }
    b->element_emits += 1;
    b->element_bytes += (event->has_key ? event->key.len : 0) + event->value.len;
    if (b->element_emits > WEIR__MAX_EMITS || b->element_bytes > WEIR__MAX_EMIT_BYTES) {
        fprintf(stderr, "one element emitted more than %d events or %u bytes, the contract's limit (a runaway loop?)\n",
                WEIR__MAX_EMITS, WEIR__MAX_EMIT_BYTES);
        abort();
    }
    uint8_t flags = 0;
    if (event->has_key) {
        flags |= 1;
        weir_buf_push(&b->out_keys, event->key.ptr, event->key.len);
    }
    WEIR__PUSH(b->key_ends, uint32_t, (uint32_t)b->out_keys.len);
    weir_buf_push(&b->values, event->value.ptr, event->value.len);
    WEIR__PUSH(b->value_ends, uint32_t, (uint32_t)b->values.len);
    if (event->has_timestamp) flags |= 2;
    WEIR__PUSH(b->timestamps, int64_t, event->has_timestamp ? event->timestamp : 0);
    const weir_operator_types_header_t *headers = (const weir_operator_types_header_t *)event->headers;
    for (size_t h = 0; h < event->header_count; h++) {
        weir_operator_types_element_header_t eh;
        eh.element = (uint32_t)b->emitted;
        eh.header.name.ptr = weir__dup(headers[h].name.ptr, headers[h].name.len);
        eh.header.name.len = headers[h].name.len;
        eh.header.value.ptr = weir__dup(headers[h].value.ptr, headers[h].value.len);
        eh.header.value.len = headers[h].value.len;
        weir_buf_push(&b->headers, &eh, sizeof eh);
    }
    weir_buf_push(&b->flags, &flags, 1);
    WEIR__PUSH(b->elements, uint32_t, b->index);
    WEIR__PUSH(b->ports, uint32_t, port);
    b->emitted += 1;
}

/* Hands a weir_buf's bytes over as a list of `size`-byte items (freed by the bindings). */
#define WEIR__TAKE(list, buf, type)                                                              \
    do {                                                                                        \
        (list).len = (buf).len / sizeof(type);                                                  \
        (list).ptr = (type *)((buf).ptr ? (buf).ptr : weir__dup(NULL, 0));                      \
        (buf) = (weir_buf){0};                                                                  \
    } while (0)

/* Ends a batch: what it emitted and did to its loaded states. */
static inline void weir__finish(weir_operator_types_batch_result_t *ret, uint32_t processed) {
    weir__batch *b = &weir__b;
    b->active = false;
    ret->processed = processed;
    weir_operator_types_flat_events_t *e = &ret->emitted.events;
    WEIR__TAKE(e->flags, b->flags, uint8_t);
    WEIR__TAKE(e->keys, b->out_keys, uint8_t);
    WEIR__TAKE(e->key_ends, b->key_ends, uint32_t);
    WEIR__TAKE(e->values, b->values, uint8_t);
    WEIR__TAKE(e->value_ends, b->value_ends, uint32_t);
    WEIR__TAKE(e->timestamps, b->timestamps, int64_t);
    WEIR__TAKE(e->headers, b->headers, weir_operator_types_element_header_t);
    WEIR__TAKE(ret->emitted.elements, b->elements, uint32_t);
    WEIR__TAKE(ret->emitted.ports, b->ports, uint32_t);
    WEIR__TAKE(ret->emitted.outputs, b->outputs, co_operator_string_t);
    b->emitted = 0;
    size_t states = b->input->loaded.len;
    ret->updates.len = states;
    ret->updates.ptr = (weir_operator_types_state_updates_t *)weir__dup(NULL, states * sizeof *ret->updates.ptr);
    for (size_t slot = 0; slot < states; slot++) {
        weir__copy *copy = &b->copies[slot];
        weir_operator_types_state_updates_t *u = &ret->updates.ptr[slot];
        weir_buf ops = {0}, values = {0}, ends = {0};
        for (size_t k = 0; k < b->keys; k++) {
            uint8_t op = copy->held[k] == 1   ? WEIR_OPERATOR_TYPES_UPDATE_OP_SET
                         : copy->held[k] == 2 ? WEIR_OPERATOR_TYPES_UPDATE_OP_CLEAR
                         : copy->read[k]      ? WEIR_OPERATOR_TYPES_UPDATE_OP_READ
                                              : WEIR_OPERATOR_TYPES_UPDATE_OP_UNTOUCHED;
            if (op == WEIR_OPERATOR_TYPES_UPDATE_OP_SET) weir_buf_push(&values, copy->set[k].ptr, copy->set[k].len);
            weir_buf_push(&ops, &op, 1);
            WEIR__PUSH(ends, uint32_t, (uint32_t)values.len);
            weir_buf_free(&copy->set[k]);
        }
        WEIR__TAKE(u->ops, ops, uint8_t);
        WEIR__TAKE(u->values, values, uint8_t);
        WEIR__TAKE(u->ends, ends, uint32_t);
        free(copy->held);
        free(copy->read);
        free(copy->set);
    }
}

/* ---- the exports ---------------------------------------------------------------- */

static inline bool weir__result(int rc, co_operator_string_t *err) {
    if (rc == WEIR_OK) return true;
    weir__take_error(&err->ptr, &err->len);
    return false;
}

static inline void weir__end_call(void) {
    if (weir__now.key_loaded && weir__now.has_timer_key) co_operator_list_u8_free(&weir__now.timer_key);
    memset(&weir__now, 0, sizeof weir__now);
}

/* Defines the component's exports from a weir_operator; use it once per component. */
#define WEIR_EXPORT_OPERATOR(...)                                                                       \
    char *weir__error;                                                                                  \
    weir__call weir__now;                                                                               \
    weir__batch weir__b;                                                                                \
    co_operator_list_tuple2_string_string_t weir__config;                                                  \
    static const weir_operator weir__operator = __VA_ARGS__;                                            \
    bool exports_weir_operator_handler_open(co_operator_list_tuple2_string_string_t *config, co_operator_string_t *err) { \
        /* Kept for weir_config_get, each value NUL-terminated. */                                      \
        weir__config = *config;                                                                         \
        for (size_t i = 0; i < config->len; i++) {                                                      \
            co_operator_string_t *v = &weir__config.ptr[i].f1;                                             \
            uint8_t *p = (uint8_t *)malloc(v->len + 1);                                                 \
            if (!p) abort();                                                                            \
            memcpy(p, v->ptr, v->len);                                                                  \
            p[v->len] = 0;                                                                              \
            free(v->ptr);                                                                               \
            v->ptr = p;                                                                                 \
        }                                                                                               \
        weir__b.opening = true;                                                                         \
        int rc = weir__operator.open ? weir__operator.open() : WEIR_OK;                                 \
        weir__b.opening = false;                                                                        \
        /* The value states made while opening travel with every batch. */                              \
        for (size_t i = 0; i < weir__b.created_count; i++) {                                            \
            weir_operator_state_own_value_state_t own = {weir__b.created[i]};                          \
            uint32_t slot = weir_operator_batch_load(weir_operator_state_borrow_value_state(own));      \
            if (slot < WEIR__MAX_LOADED) weir__b.loaded_handles[slot] = weir__b.created[i];             \
            if (slot + 1 > weir__b.loaded_count) weir__b.loaded_count = slot + 1;                       \
        }                                                                                               \
        weir__b.created_count = 0;                                                                      \
        return weir__result(rc, err);                                                                   \
    }                                                                                                   \
    void exports_weir_operator_handler_process_batch(exports_weir_operator_handler_input_batch_t *batch, \
                                                     exports_weir_operator_handler_batch_result_t *ret) { \
        weir__batch *b = &weir__b;                                                                      \
        const weir_operator_types_flat_events_t *ev = &batch->events;                                   \
        uint32_t count = (uint32_t)ev->flags.len, i = 0;                                                \
        memset(ret, 0, sizeof *ret);                                                                    \
        b->input = batch;                                                                               \
        b->keys = batch->loaded.len ? batch->loaded.ptr[0].present.len : 0;                             \
        for (size_t slot = 0; slot < batch->loaded.len && slot < WEIR__MAX_LOADED; slot++) {            \
            weir__copy *c = &b->copies[slot];                                                           \
            c->values = &batch->loaded.ptr[slot];                                                       \
            c->held = (uint8_t *)calloc(b->keys + 1, 1);                                                \
            c->read = (uint8_t *)calloc(b->keys + 1, 1);                                                \
            c->set = (weir_buf *)calloc(b->keys + 1, sizeof(weir_buf));                                 \
            if (!c->held || !c->read || !c->set) abort();                                               \
        }                                                                                               \
        b->focused = -1;                                                                                \
        b->timer_registered = false;                                                                    \
        b->active = true;                                                                               \
        weir_event view;                                                                                \
        weir_buf headers = {0};                                                                         \
        size_t next_header = 0;                                                                         \
        for (; i < count; i++) {                                                                        \
            b->index = i;                                                                               \
            b->element_emits = b->element_bytes = 0;                                                    \
            if (b->timer_registered) {                                                                  \
                b->focused = i;                                                                         \
                if (!weir_operator_batch_focus(i)) break;                                               \
            }                                                                                           \
            uint32_t kf = i ? ev->key_ends.ptr[i - 1] : 0, vf = i ? ev->value_ends.ptr[i - 1] : 0;      \
            view.has_key = ev->flags.ptr[i] & 1;                                                        \
            view.key = weir_bytes_of(ev->keys.ptr + kf, ev->key_ends.ptr[i] - kf);                      \
            view.value = weir_bytes_of(ev->values.ptr + vf, ev->value_ends.ptr[i] - vf);                \
            view.has_timestamp = (ev->flags.ptr[i] & 2) != 0;                                           \
            view.timestamp = ev->timestamps.ptr[i];                                                     \
            headers.len = 0;                                                                            \
            while (next_header < ev->headers.len && ev->headers.ptr[next_header].element == i) {        \
                weir_buf_push(&headers, &ev->headers.ptr[next_header].header, sizeof(weir_operator_types_header_t)); \
                next_header++;                                                                          \
            }                                                                                           \
            view.header_count = headers.len / sizeof(weir_operator_types_header_t);                     \
            view.headers = headers.ptr;                                                                 \
            weir__now.element = &view;                                                                  \
            if (weir__operator.process_element(&view) != WEIR_OK) {                                    \
                ret->error.is_some = true;                                                              \
                ret->error.val.index = i;                                                               \
                weir__take_error(&ret->error.val.message.ptr, &ret->error.val.message.len);             \
                break;                                                                                  \
            }                                                                                           \
        }                                                                                               \
        weir__now.element = NULL;                                                                       \
        weir_buf_free(&headers);                                                                        \
        weir__finish(ret, i);                                                                           \
        exports_weir_operator_handler_input_batch_free(batch);                                          \
    }                                                                                                   \
    bool exports_weir_operator_handler_on_timer(int64_t timestamp, exports_weir_operator_handler_time_domain_t domain, \
                                                co_operator_string_t *err) {                               \
        if (!weir__operator.on_timer) return true;                                                      \
        weir__now.keyed = weir__now.in_timer = true;                                                    \
        weir__now.timer_timestamp = timestamp;                                                          \
        int rc = weir__operator.on_timer(timestamp, (weir_time_domain)domain);                          \
        weir__end_call();                                                                               \
        return weir__result(rc, err);                                                                   \
    }                                                                                                   \
    bool exports_weir_operator_handler_close(co_operator_string_t *err) {                                  \
        return weir__result(weir__operator.close ? weir__operator.close() : WEIR_OK, err);             \
    }                                                                                                   \
    uint32_t exports_weir_operator_handler_state_version(void) { return weir__operator.state_version; } \
    bool exports_weir_operator_handler_migrate(uint32_t from_version, co_operator_string_t *err) {         \
        if (!weir__operator.migrate)                                                                    \
            return weir__result(weir_fail("state_version is raised but migrate is not implemented"), err); \
        weir__now.keyed = true;                                                                         \
        int rc = weir__operator.migrate(from_version);                                                  \
        weir__end_call();                                                                               \
        return weir__result(rc, err);                                                                   \
    }                                                                                                   \
    bool exports_weir_operator_co_handler_process_element_2(exports_weir_operator_co_handler_event_t *event, \
                                                            co_operator_string_t *err) {                \
        int rc;                                                                                         \
        if (!weir__operator.process_element_2) {                                                        \
            rc = weir_fail("this operator takes one input, but an element arrived on input 2 "          \
                           "(set process_element_2 in WEIR_EXPORT_OPERATOR)");                          \
        } else {                                                                                        \
            weir_event view;                                                                            \
            WEIR__EVENT_VIEW(&view, event);                                                             \
            weir__now.element = &view;                                                                  \
            rc = weir__operator.process_element_2(&view);                                               \
            weir__now.element = NULL;                                                                   \
        }                                                                                               \
        exports_weir_operator_co_handler_event_free(event);                                             \
        return weir__result(rc, err);                                                                   \
    }                                                                                                   \
    bool exports_weir_operator_checkpointed_snapshot_state(uint64_t checkpoint_id, co_operator_string_t *err) { \
        return weir__result(weir__operator.snapshot_state ? weir__operator.snapshot_state(checkpoint_id) : WEIR_OK, err); \
    }

#endif /* WEIR_H */
