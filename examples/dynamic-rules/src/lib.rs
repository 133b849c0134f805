//! Dynamic alerting rules (Flink's broadcast state pattern, as in Flink's "dynamic
//! rules" fraud-detection demo): sensor readings, keyed by sensor, arrive on input 1;
//! rules (`{"sensor":"s1","threshold":80}`, or `"sensor":"*"` for every sensor without
//! its own rule) arrive on input 2, broadcast, and replace earlier rules at once. A
//! reading above its sensor's threshold raises an alert naming the rule it broke.
//! Readings before any rule raise nothing.

use serde::{Deserialize, Serialize};
use weir_guest::{BroadcastState, Context, Event, Operator, Result, export};

#[derive(Deserialize)]
struct Reading {
    sensor: String,
    value: f64,
    seq: u64,
}

#[derive(Deserialize, Serialize)]
struct Rule {
    sensor: String,
    threshold: f64,
}

#[derive(Serialize)]
struct Alert<'a> {
    sensor: &'a str,
    seq: u64,
    value: f64,
    threshold: f64,
    rule: &'a str,
}

struct DynamicRules {
    rules: BroadcastState<String, f64>,
}

impl Default for DynamicRules {
    fn default() -> Self {
        DynamicRules { rules: BroadcastState::new("rules") }
    }
}

impl Operator for DynamicRules {
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let reading: Reading = event.value_json()?;
        let own = self.rules.get(&reading.sensor)?;
        let (threshold, rule) = match own {
            Some(threshold) => (threshold, reading.sensor.as_str()),
            None => match self.rules.get(&"*".to_string())? {
                Some(threshold) => (threshold, "*"),
                None => return Ok(()),
            },
        };
        if reading.value > threshold {
            let alert = Alert { sensor: &reading.sensor, seq: reading.seq, value: reading.value, threshold, rule };
            ctx.emit(Event::json(&alert)?.with_key(event.key))?;
        }
        Ok(())
    }

    fn process_element_2(&mut self, event: Event, _ctx: &mut Context) -> Result<()> {
        let rule: Rule = event.value_json()?;
        self.rules.put(&rule.sensor, &rule.threshold)
    }
}

export!(DynamicRules);
