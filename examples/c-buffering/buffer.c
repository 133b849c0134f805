/* Flink's BufferingSink (CheckpointedFunction) in C: elements buffered in memory,
 * flushed `threshold` at a time, kept in operator list state at every checkpoint
 * (snapshot_state), so a crash loses and repeats nothing (the job of examples/buffering). */
#include <stdlib.h>

#include "weir.h"

static weir_operator_list checkpointed;
static weir_buf *buffer; /* the buffered values, owned */
static size_t buffered, capacity;
static size_t threshold = 10;

static void push(const void *value, size_t len) {
    if (buffered == capacity) {
        capacity = capacity ? capacity * 2 : 16;
        buffer = realloc(buffer, capacity * sizeof *buffer);
        if (!buffer) abort();
    }
    weir_buf b = {0};
    weir_buf_push(&b, value, len);
    buffer[buffered++] = b;
}

static void flush(void) {
    for (size_t i = 0; i < buffered; i++) {
        weir_collect(buffer[i].ptr, buffer[i].len);
        weir_buf_free(&buffer[i]);
    }
    buffered = 0;
}

static int buffering_open(void) {
    const char *t = weir_config_get("threshold");
    if (t) threshold = (size_t)atoi(t);
    checkpointed = weir_operator_list_new("buffered-elements");
    if (weir_is_restored()) { /* Flink's initializeState: take the buffer back */
        weir_list saved = weir_operator_list_get(checkpointed);
        for (size_t i = 0; i < weir_list_len(&saved); i++) {
            weir_bytes item = weir_list_at(&saved, i);
            push(item.ptr, item.len);
        }
        weir_list_free(&saved);
    }
    return WEIR_OK;
}

static int process_element(const weir_event *element) {
    push(element->value.ptr, element->value.len);
    if (buffered >= threshold) flush();
    return WEIR_OK;
}

static int snapshot_state(uint64_t checkpoint_id) {
    weir_bytes *items = buffered ? malloc(buffered * sizeof *items) : NULL;
    for (size_t i = 0; i < buffered; i++) items[i] = weir_bytes_of(buffer[i].ptr, buffer[i].len);
    weir_operator_list_update(checkpointed, items, buffered);
    free(items);
    return WEIR_OK;
}

static int buffering_close(void) {
    flush();
    return WEIR_OK;
}

WEIR_EXPORT_OPERATOR({
    .open = buffering_open,
    .process_element = process_element,
    .snapshot_state = snapshot_state,
    .close = buffering_close,
})
