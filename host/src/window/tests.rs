//! Window specs and operators, without a job.

use super::codec::{decode_event, encode_event};
use super::*;
use crate::stream::Event;

fn spec(toml_text: &str) -> Result<Compiled, String> {
    let spec: WindowSpec = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    spec.compile()
}

#[test]
fn bad_window_settings_say_what_to_fix() {
    let cases = [
        ("type = \"tumbling\"\nsize_ms = 0\naggregate = { builtin = \"count\" }", "`size_ms` must be positive"),
        ("type = \"tumbling\"\naggregate = { builtin = \"count\" }", "tumbling windows need `size_ms`"),
        (
            "type = \"sliding\"\nsize_ms = 10\nslide_ms = 20\naggregate = { builtin = \"count\" }",
            "`slide_ms` (20) must not be larger than `size_ms` (10)",
        ),
        ("type = \"session\"\ngap_ms = 0\naggregate = { builtin = \"count\" }", "`gap_ms` must be positive"),
        ("type = \"count\"\nsize = 0\naggregate = { builtin = \"count\" }", "`size` must be positive"),
        (
            "type = \"global\"\ntrigger = { type = \"count\", count = 0 }\naggregate = { builtin = \"count\" }",
            "`count` must be positive",
        ),
        ("type = \"tumbling\"\nsize_ms = 10\naggregate = { builtin = \"sum\" }", "the `sum` aggregate needs a `field`"),
        (
            "type = \"tumbling\"\nsize_ms = 10\ntime = \"processing\"\nallowed_lateness_ms = 5\naggregate = { builtin = \"count\" }",
            "allowed lateness applies to event-time windows only",
        ),
    ];
    for (text, expected) in cases {
        let error = spec(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn only_shareable_panes_are_sliced() {
    let sliding = spec("type = \"sliding\"\nsize_ms = 600\nslide_ms = 60\naggregate = { builtin = \"count\" }").unwrap();
    assert!(sliding.sliced);
    let purging = spec(
        "type = \"sliding\"\nsize_ms = 600\nslide_ms = 60\ntrigger = { type = \"event-time\", purging = true }\naggregate = { builtin = \"count\" }",
    )
    .unwrap();
    assert!(!purging.sliced);
    let count = spec("type = \"count\"\nsize = 3\nslide = 1\naggregate = { builtin = \"count\" }").unwrap();
    assert_eq!((count.trigger, count.keep_last, count.purging), (Trigger::Count(1), Some(3), false));
}

#[test]
fn evicting_windows_keep_timestamps_and_values() {
    let event = Event { value: b"{}".to_vec(), timestamp: Some(-3), ..Default::default() };
    assert_eq!(decode_event(&encode_event(&event)), Some(event));
    assert_eq!(decode_event(b"short"), None);
}
