//! An operator written against the raw 0.2 bindings (no SDK) whose `process-batch`
//! lies about how many elements it processed, as config `mode` says: `more` claims one
//! element more than it began, `fewer` one fewer, `none` begins every element and claims
//! none. The host must stop it, not resend or drop elements.

wit_bindgen::generate!({ path: "../../../wit", world: "operator" });

use exports::weir::operator::handler::{ElementError, Event, Guest, TimeDomain};
use weir::operator::{batch, collector};

static mut MODE: String = String::new();

fn mode() -> &'static str {
    // SAFETY: a component instance is single-threaded; MODE is set once in `open`.
    unsafe { (*std::ptr::addr_of!(MODE)).as_str() }
}

struct Liar;

impl Guest for Liar {
    fn open(config: Vec<(String, String)>) -> Result<(), String> {
        let mode = config.into_iter().find(|(k, _)| k == "mode").map(|(_, v)| v).unwrap_or_default();
        // SAFETY: as above.
        unsafe { *std::ptr::addr_of_mut!(MODE) = mode };
        Ok(())
    }

    fn process_batch(events: Vec<Event>) -> Result<u32, ElementError> {
        let mut begun = 0;
        for (i, event) in events.into_iter().enumerate() {
            if !batch::begin_element(i as u32) {
                break;
            }
            begun += 1;
            collector::emit(&event);
        }
        Ok(match mode() {
            "more" => begun + 1,
            "fewer" => begun.saturating_sub(1),
            "none" => 0,
            _ => begun,
        })
    }

    fn on_timer(_: i64, _: TimeDomain) -> Result<(), String> {
        Ok(())
    }

    fn close() -> Result<(), String> {
        Ok(())
    }

    fn state_version() -> u32 {
        0
    }

    fn migrate(_: u32) -> Result<(), String> {
        Ok(())
    }
}

export!(Liar);
