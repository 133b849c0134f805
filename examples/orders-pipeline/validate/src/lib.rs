//! The order-processing tutorial's `OrderValidator` with its `ValidOrderFilter` and
//! `InvalidOrderFilter` (`../shared/reference/flink-tutorials`, "Complete Example"):
//! an `order_created` event is valid when it names an order and a customer, has a
//! positive total and at least one item. Valid orders go on in a normalised shape;
//! invalid ones go to the side output `invalid`, as they came, with the headers of
//! weir's dead letters (`weir.error`: why), for the dead-letter topic.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_guest::{Context, Event, Operator, Result, export};

#[derive(Serialize)]
struct Valid<'a> {
    order_id: &'a str,
    customer_id: &'a str,
    total_amount: f64,
    items: usize,
    timestamp: &'a str,
    status: &'static str,
}

#[derive(Deserialize)]
struct Order {
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    total_amount: Option<Value>,
    #[serde(default)]
    items: Option<Vec<Value>>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// Why `order` is not a valid new order, if it is not.
fn invalid(order: &Order) -> Option<String> {
    if order.event_type.as_deref() != Some("order_created") {
        return Some(format!("event_type {:?} is not order_created", order.event_type.as_deref().unwrap_or("")));
    }
    if order.order_id.as_deref().is_none_or(str::is_empty) {
        return Some("no order_id".into());
    }
    if order.customer_id.as_deref().is_none_or(str::is_empty) {
        return Some("no customer_id".into());
    }
    match order.total_amount.as_ref().and_then(Value::as_f64) {
        Some(amount) if amount > 0.0 => {}
        Some(amount) => return Some(format!("total_amount {amount} is not positive")),
        None => return Some("total_amount is not a number".into()),
    }
    if order.items.as_ref().is_none_or(Vec::is_empty) {
        return Some("no items".into());
    }
    None
}

/// An invalid order as it came, with the headers weir's own dead letters carry.
fn rejected(event: Event, reason: &str) -> Event {
    event.with_header("weir.error", reason).with_header("weir.error.origin", "validate")
}

#[derive(Default)]
struct Validator;

impl Operator for Validator {
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let order: Order = match event.value_json() {
            Ok(order) => order,
            Err(e) => {
                return ctx.emit_to("invalid", rejected(event, &format!("not an order: {e}")));
            }
        };
        if let Some(reason) = invalid(&order) {
            return ctx.emit_to("invalid", rejected(event, &reason));
        }
        let valid = Valid {
            order_id: order.order_id.as_deref().unwrap_or_default(),
            customer_id: order.customer_id.as_deref().unwrap_or_default(),
            total_amount: order.total_amount.as_ref().and_then(Value::as_f64).unwrap_or_default(),
            items: order.items.as_ref().map_or(0, Vec::len),
            timestamp: order.timestamp.as_deref().unwrap_or_default(),
            status: "valid",
        };
        let key = valid.customer_id.as_bytes().to_vec();
        ctx.emit(Event::json(&valid)?.with_key(Some(key)).with_timestamp(event.timestamp))
    }
}

export!(Validator);
