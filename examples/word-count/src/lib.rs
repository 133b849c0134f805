//! Splits `{"text": ..}` lines into words and re-keys each word by itself, so that a
//! keyed operator downstream (the keyed-count example) counts words.

use serde::Deserialize;
use weir_guest::{Context, Event, Operator, Result, export};

#[derive(Default)]
struct Tokenizer;

#[derive(Deserialize)]
struct Line {
    text: String,
}

impl Operator for Tokenizer {
    fn process_element(&mut self, event: Event, ctx: &mut Context) -> Result<()> {
        let line: Line = event.value_json()?;
        for word in line.text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            let word = word.to_lowercase();
            let out = Event::json(&serde_json::json!({ "word": word }))?
                .with_key(Some(word))
                .with_timestamp(event.timestamp);
            ctx.emit(out)?;
        }
        Ok(())
    }
}

export!(Tokenizer);
