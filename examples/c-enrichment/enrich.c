/* Flink's broadcast state pattern in C: orders keyed by customer, enriched with customer
 * tiers from a broadcast stream (the job of examples/enrichment, whose data it reads).
 * Config `misbehave = "true"` writes broadcast state from the keyed side, which weir
 * refuses as Flink does. */
#include <string.h>

#include "weir.h"

static weir_broadcast_state tiers;
static bool misbehave;

static int enrich_open(void) {
    tiers = weir_broadcast_state_new("tiers");
    const char *m = weir_config_get("misbehave");
    misbehave = m && strcmp(m, "true") == 0;
    return WEIR_OK;
}

/* An order: out with its customer's tier (the customer's JSON string is the state key). */
static int process_order(const weir_event *order) {
    weir_bytes customer, raw_order, raw_amount, raw_customer;
    if (!weir_json_string(order->value, "customer", &customer) || !weir_json_raw(order->value, "customer", &raw_customer) ||
        !weir_json_raw(order->value, "order", &raw_order) || !weir_json_raw(order->value, "amount", &raw_amount)) {
        return weir_fail("an order needs order, customer and amount");
    }
    if (misbehave) weir_broadcast_put(tiers, raw_customer, "\"written from the keyed side\"", 29);
    weir_buf tier = {0};
    bool known = weir_broadcast_get(tiers, raw_customer, &tier);
    weir_buf out = {0};
    weir_buf_puts(&out, "{\"order\":");
    weir_buf_push_bytes(&out, raw_order);
    weir_buf_puts(&out, ",\"customer\":");
    weir_buf_push_bytes(&out, raw_customer);
    weir_buf_puts(&out, ",\"amount\":");
    weir_buf_push_bytes(&out, raw_amount);
    weir_buf_puts(&out, ",\"tier\":");
    if (known) weir_buf_push(&out, tier.ptr, tier.len); else weir_buf_puts(&out, "\"unknown\"");
    weir_buf_puts(&out, "}");
    weir_collect(out.ptr, out.len);
    weir_buf_free(&out);
    weir_buf_free(&tier);
    return WEIR_OK;
}

/* A tier (broadcast): every subtask keeps it, as JSON text under the customer's. */
static int process_tier(const weir_event *update) {
    weir_bytes customer, tier;
    if (!weir_json_raw(update->value, "customer", &customer) || !weir_json_raw(update->value, "tier", &tier)) {
        return weir_fail("a tier needs customer and tier");
    }
    weir_broadcast_put(tiers, customer, tier.ptr, tier.len);
    return WEIR_OK;
}

WEIR_EXPORT_OPERATOR({
    .open = enrich_open,
    .process_element = process_order,
    .process_element_2 = process_tier,
})
