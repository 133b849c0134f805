//! Flink's broadcast state pattern (a `KeyedBroadcastProcessFunction`): orders, keyed
//! by customer, arrive on input 1; customer tiers arrive on input 2, broadcast to every
//! subtask, and are kept in broadcast state. Each order goes out with its customer's
//! tier as of when it is processed (`"unknown"` before the first), so a tier change
//! mid-run applies to the orders after it.
//!
//! After a restore, each subtask reports its broadcast state to the side output
//! `restored` (`{"subtask":0,"parallelism":3,"tiers":{"c1":"gold",...}}`): it is the
//! same on every subtask, whatever the parallelism.
//!
//! Config `misbehave = "true"` makes it write broadcast state from the keyed side,
//! which weir refuses (as Flink does): for the tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_guest::{BroadcastState, Context, Event, Operator, Result, export, is_restored};

#[derive(Deserialize, Serialize)]
struct Order {
    order: u64,
    customer: String,
    amount: f64,
}

#[derive(Deserialize)]
struct Tier {
    customer: String,
    tier: String,
}

#[derive(Serialize)]
struct Enriched<'a> {
    order: u64,
    customer: &'a str,
    amount: f64,
    tier: &'a str,
}

struct Enrichment {
    tiers: BroadcastState<String, String>,
    misbehave: bool,
}

impl Default for Enrichment {
    fn default() -> Self {
        Enrichment { tiers: BroadcastState::new("tiers"), misbehave: false }
    }
}

impl Operator for Enrichment {
    fn open(&mut self, ctx: &mut Context) -> Result<()> {
        self.misbehave = ctx.config_or("misbehave", false)?;
        if is_restored() {
            let tiers: BTreeMap<String, String> = self.tiers.entries()?.into_iter().collect();
            let report = serde_json::json!({
                "subtask": ctx.subtask_index(),
                "parallelism": ctx.parallelism(),
                "tiers": tiers,
            });
            ctx.emit_to("restored", Event::new(report.to_string()))?;
        }
        Ok(())
    }

    /// An order (keyed by customer): out with the customer's tier.
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let order: Order = event.value_json()?;
        if self.misbehave {
            self.tiers.put(&order.customer, &"written from the keyed side".to_string())?;
        }
        let tier = self.tiers.get(&order.customer)?.unwrap_or_else(|| "unknown".into());
        let enriched = Enriched { order: order.order, customer: &order.customer, amount: order.amount, tier: &tier };
        ctx.emit(Event::json(&enriched)?.with_key(event.key).with_timestamp(event.timestamp))
    }

    /// A tier (broadcast): every subtask keeps it.
    fn process_element_2(&mut self, event: Event, _ctx: &mut Context) -> Result<()> {
        let tier: Tier = event.value_json()?;
        self.tiers.put(&tier.customer, &tier.tier)
    }
}

export!(Enrichment);
