/*
 * weir C SDK: what every world shares — byte views, growable buffers, errors, a small
 * JSON reader and writer. Header-only; see docs/guest-sdk-c.md.
 *
 * Memory rules, once for the whole SDK:
 *   - weir_bytes is a borrowed view: never free it. Views handed to your callbacks
 *     (an element's key and value, a state value you are given) live until the
 *     callback returns.
 *   - weir_buf owns its bytes (malloc'd). Whatever fills a weir_buf for you (a state
 *     read, weir_buf_printf, ...) you free with weir_buf_free, except the buffers the
 *     SDK hands to a callback to fill (an accumulator, a result): the SDK frees those.
 *   - Lists and entries read from state (weir_list, weir_entries) are freed with
 *     weir_list_free / weir_entries_free.
 */
#ifndef WEIR_COMMON_H
#define WEIR_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- bytes ---------------------------------------------------------------------- */

/* A borrowed run of bytes (not NUL-terminated). */
typedef struct weir_bytes {
    const uint8_t *ptr;
    size_t len;
} weir_bytes;

/* A view of a NUL-terminated string. */
static inline weir_bytes weir_str(const char *s) {
    weir_bytes b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

static inline weir_bytes weir_bytes_of(const void *ptr, size_t len) {
    weir_bytes b = {(const uint8_t *)ptr, len};
    return b;
}

static inline bool weir_bytes_eq(weir_bytes a, const char *s) {
    size_t n = strlen(s);
    return a.len == n && memcmp(a.ptr, s, n) == 0;
}

/* ---- buffers -------------------------------------------------------------------- */

/* Owned, growable bytes. Zero-initialise (`weir_buf b = {0};`), free with weir_buf_free. */
typedef struct weir_buf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} weir_buf;

static inline void weir_buf_reserve(weir_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = (uint8_t *)realloc(b->ptr, cap);
    if (!p) abort(); /* out of guest memory: a trap, reported by the host */
    b->ptr = p;
    b->cap = cap;
}

static inline void weir_buf_push(weir_buf *b, const void *data, size_t len) {
    if (!len) return;
    weir_buf_reserve(b, len);
    memcpy(b->ptr + b->len, data, len);
    b->len += len;
}

static inline void weir_buf_puts(weir_buf *b, const char *s) { weir_buf_push(b, s, strlen(s)); }
static inline void weir_buf_push_bytes(weir_buf *b, weir_bytes bytes) { weir_buf_push(b, bytes.ptr, bytes.len); }
static inline weir_bytes weir_buf_bytes(const weir_buf *b) { return weir_bytes_of(b->ptr, b->len); }
static inline void weir_buf_clear(weir_buf *b) { b->len = 0; }

static inline void weir_buf_free(weir_buf *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

/* Appends an integer in decimal (what JSON and weir_parse_i64 read); much cheaper than
 * weir_buf_printf("%lld") in wasi-libc. */
static inline void weir_buf_push_i64(weir_buf *b, int64_t v) {
    char digits[21];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) digits[sizeof digits - 1 - n++] = '-';
    weir_buf_push(b, digits + sizeof digits - n, n);
}

/* Appends printf-style formatted text. */
static inline void weir_buf_vprintf(weir_buf *b, const char *fmt, va_list args) {
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(NULL, 0, fmt, args);
    if (n > 0) {
        weir_buf_reserve(b, (size_t)n + 1);
        vsnprintf((char *)b->ptr + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

__attribute__((format(printf, 2, 3))) static inline void weir_buf_printf(weir_buf *b, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    weir_buf_vprintf(b, fmt, args);
    va_end(args);
}

/* ---- errors --------------------------------------------------------------------- */

/* Callbacks return WEIR_OK, or the result of weir_fail(), which stops the job with the
 * message as an operator error (naming the operator, subtask and element). A bug that
 * cannot be handled (abort(), __builtin_trap(), a bad pointer) is a trap instead. */
#define WEIR_OK 0
#define WEIR_ERROR (-1)

/* The message of the last weir_fail (defined once by the WEIR_EXPORT_* macro). */
extern char *weir__error;

__attribute__((format(printf, 1, 2))) static inline int weir_fail(const char *fmt, ...) {
    weir_buf b = {0};
    va_list args;
    va_start(args, fmt);
    weir_buf_vprintf(&b, fmt, args);
    va_end(args);
    weir_buf_push(&b, "", 1);
    free(weir__error);
    weir__error = (char *)b.ptr;
    return WEIR_ERROR;
}

/* Moves the pending error message out (or "operator failed" when a callback returned
 * nonzero without weir_fail) as malloc'd bytes, for the bindings' result string. */
static inline void weir__take_error(uint8_t **ptr, size_t *len) {
    if (!weir__error) weir_fail("operator failed (a callback returned %d without weir_fail)", WEIR_ERROR);
    *ptr = (uint8_t *)weir__error;
    *len = strlen(weir__error);
    weir__error = NULL;
}

/* ---- events --------------------------------------------------------------------- */

/* One element, as a callback sees it: views into the host's batch. */
typedef struct weir_event {
    bool has_key;
    weir_bytes key;
    weir_bytes value;
    bool has_timestamp;
    int64_t timestamp; /* ms since the Unix epoch */
    size_t header_count;
    const void *headers; /* the bindings' header records; see weir_event_header */
} weir_event;

/* Fills a weir_event from any world's generated `weir_operator_types_event_t`. */
#define WEIR__EVENT_VIEW(view, generated)                                        \
    do {                                                                         \
        (view)->has_key = (generated)->key.is_some;                              \
        (view)->key = weir_bytes_of((generated)->key.val.ptr, (generated)->key.val.len); \
        (view)->value = weir_bytes_of((generated)->value.ptr, (generated)->value.len); \
        (view)->has_timestamp = (generated)->timestamp.is_some;                  \
        (view)->timestamp = (generated)->timestamp.val;                          \
        (view)->header_count = (generated)->headers.len;                         \
        (view)->headers = (generated)->headers.ptr;                              \
    } while (0)

/* The header called `name` of `event`, if it has one. */
static inline bool weir_event_header(const weir_event *event, const char *name, weir_bytes *value) {
    /* Every world's header record is { string name; list<u8> value; }. */
    typedef struct { uint8_t *ptr; size_t len; } weir__list;
    typedef struct { weir__list name; weir__list value; } weir__header;
    const weir__header *headers = (const weir__header *)event->headers;
    for (size_t i = 0; i < event->header_count; i++) {
        if (weir_bytes_eq(weir_bytes_of(headers[i].name.ptr, headers[i].name.len), name)) {
            *value = weir_bytes_of(headers[i].value.ptr, headers[i].value.len);
            return true;
        }
    }
    return false;
}

/* ---- JSON ----------------------------------------------------------------------- */
/*
 * A small reader for the common case of flat JSON objects (weir's file source carries
 * JSON lines): look a top-level field up by name and read it as a string, an integer or
 * a double. Nested values are skipped correctly and can be read whole with
 * weir_json_raw. Strings come back as views of their raw text between the quotes:
 * escapes are not decoded (weir_json_string_needs_decoding tells when there are any).
 */

static inline size_t weir__json_ws(weir_bytes j, size_t i) {
    while (i < j.len && (j.ptr[i] == ' ' || j.ptr[i] == '\t' || j.ptr[i] == '\n' || j.ptr[i] == '\r')) i++;
    return i;
}

/* The end of the string starting at the quote at `i`, past its closing quote (or 0). */
static inline size_t weir__json_string_end(weir_bytes j, size_t i) {
    for (i++; i < j.len; i++) {
        if (j.ptr[i] == '\\') i++;
        else if (j.ptr[i] == '"') return i + 1;
    }
    return 0;
}

/* The end of the value starting at `i` (or 0 when malformed). */
static inline size_t weir__json_value_end(weir_bytes j, size_t i) {
    if (i >= j.len) return 0;
    if (j.ptr[i] == '"') return weir__json_string_end(j, i);
    if (j.ptr[i] == '{' || j.ptr[i] == '[') {
        int depth = 0;
        while (i < j.len) {
            uint8_t c = j.ptr[i];
            if (c == '"') {
                i = weir__json_string_end(j, i);
                if (!i) return 0;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            i++;
        }
        return 0;
    }
    while (i < j.len && j.ptr[i] != ',' && j.ptr[i] != '}' && j.ptr[i] != ']' && j.ptr[i] != ' ' &&
           j.ptr[i] != '\n' && j.ptr[i] != '\r' && j.ptr[i] != '\t')
        i++;
    return i;
}

/* The raw text of top-level field `name` of the object `json`. */
static inline bool weir_json_raw(weir_bytes json, const char *name, weir_bytes *raw) {
    size_t n = strlen(name), i = weir__json_ws(json, 0);
    if (i >= json.len || json.ptr[i] != '{') return false;
    i++;
    for (;;) {
        i = weir__json_ws(json, i);
        if (i >= json.len || json.ptr[i] != '"') return false;
        size_t key_end = weir__json_string_end(json, i);
        if (!key_end) return false;
        bool match = key_end - i - 2 == n && memcmp(json.ptr + i + 1, name, n) == 0;
        i = weir__json_ws(json, key_end);
        if (i >= json.len || json.ptr[i] != ':') return false;
        i = weir__json_ws(json, i + 1);
        size_t end = weir__json_value_end(json, i);
        if (!end) return false;
        if (match) {
            *raw = weir_bytes_of(json.ptr + i, end - i);
            return true;
        }
        i = weir__json_ws(json, end);
        if (i >= json.len || json.ptr[i] != ',') return false;
        i++;
    }
}

/* Field `name` as a string: a view of its text between the quotes. */
static inline bool weir_json_string(weir_bytes json, const char *name, weir_bytes *out) {
    weir_bytes raw;
    if (!weir_json_raw(json, name, &raw) || raw.len < 2 || raw.ptr[0] != '"') return false;
    *out = weir_bytes_of(raw.ptr + 1, raw.len - 2);
    return true;
}

static inline bool weir_json_string_needs_decoding(weir_bytes s) { return memchr(s.ptr, '\\', s.len) != NULL; }

/* Field `name` as a double (any JSON number). */
static inline bool weir_json_f64(weir_bytes json, const char *name, double *out) {
    weir_bytes raw;
    char text[64];
    if (!weir_json_raw(json, name, &raw) || raw.len == 0 || raw.len >= sizeof text) return false;
    memcpy(text, raw.ptr, raw.len);
    text[raw.len] = 0;
    char *end;
    *out = strtod(text, &end);
    return end == text + raw.len;
}

/* Field `name` as an integer (a JSON number without fraction or exponent). */
static inline bool weir_json_i64(weir_bytes json, const char *name, int64_t *out) {
    weir_bytes raw;
    char text[32];
    if (!weir_json_raw(json, name, &raw) || raw.len == 0 || raw.len >= sizeof text) return false;
    memcpy(text, raw.ptr, raw.len);
    text[raw.len] = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (end != text + raw.len) return false;
    *out = (int64_t)v;
    return true;
}

/* Parses a whole value as an integer (a state value written by weir_buf_printf("%lld")). */
static inline bool weir_parse_i64(weir_bytes text, int64_t *out) {
    char buf[32];
    if (text.len == 0 || text.len >= sizeof buf) return false;
    memcpy(buf, text.ptr, text.len);
    buf[text.len] = 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (end != buf + text.len) return false;
    *out = (int64_t)v;
    return true;
}

/* Appends `s` as a JSON string literal (quoted and escaped). */
static inline void weir_buf_json_string(weir_buf *b, weir_bytes s) {
    static const char hex[] = "0123456789abcdef";
    weir_buf_reserve(b, s.len + 2);
    b->ptr[b->len++] = '"';
    size_t plain = 0; /* the start of the run of bytes that need no escape */
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        if (c != '"' && c != '\\' && c >= 0x20) continue;
        weir_buf_push(b, s.ptr + plain, i - plain);
        plain = i + 1;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            weir_buf_push(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            weir_buf_push(b, esc, 6);
        }
    }
    weir_buf_push(b, s.ptr + plain, s.len - plain);
    weir_buf_push(b, "\"", 1);
}

#endif /* WEIR_COMMON_H */
