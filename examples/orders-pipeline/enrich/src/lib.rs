//! The order-processing tutorial's `CustomerEnricher`: each valid order (keyed by
//! customer) goes on with its customer's name, tier and region. The tutorial calls a
//! customer API; here the customers are the operator's config (`customers`:
//! `id:name:tier:region` entries separated by `;`), so that the example runs alone.
//! An order of a customer it does not know goes on with tier `unknown`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Event, Operator, Result, export};

#[derive(Deserialize, Serialize)]
struct Order {
    order_id: String,
    customer_id: String,
    total_amount: f64,
    items: u64,
    timestamp: String,
    status: String,
}

#[derive(Serialize)]
struct Enriched<'a> {
    #[serde(flatten)]
    order: &'a Order,
    customer_name: &'a str,
    tier: &'a str,
    region: &'a str,
}

#[derive(Default)]
struct Enricher {
    /// Customer id → (name, tier, region).
    customers: HashMap<String, (String, String, String)>,
}

impl Operator for Enricher {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        let table = ctx.config("customers").unwrap_or_default().to_string();
        for entry in table.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let fields: Vec<&str> = entry.split(':').collect();
            let [id, name, tier, region] = fields[..] else {
                return Err(format!("customers: `{entry}` is not id:name:tier:region").into());
            };
            self.customers.insert(id.into(), (name.into(), tier.into(), region.into()));
        }
        Ok(())
    }

    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let order: Order = event.value_json()?;
        let (name, tier, region) = match self.customers.get(&order.customer_id) {
            Some((name, tier, region)) => (name.as_str(), tier.as_str(), region.as_str()),
            None => ("", "unknown", ""),
        };
        let enriched = Enriched { order: &order, customer_name: name, tier, region };
        ctx.emit(Event::json(&enriched)?.with_key(event.key).with_timestamp(event.timestamp))
    }
}

export!(Enricher);
