//! # Error domains
//!
//! Every failure that stops a job says whose it is and whether running again could
//! help, as Arroyo's errors do, so the restart strategy does not spend its attempts on
//! failures that a restart from the last checkpoint would only meet again:
//!
//! | domain | examples | restart |
//! | --- | --- | --- |
//! | [`Domain::User`] | an operator returned `err`, broke the contract (state without a key, an emit flood), malformed input under `on_error = "fail"` | never: the same input reaches the same code again |
//! | [`Domain::User`] | a guest trapped (a panic, its memory limit, its call deadline) | as the strategy allows: a panic may depend on timing or state that a restore changes, and a deadline on a loaded machine |
//! | [`Domain::External`] | a source, a sink, a broker, a disk, a checkpoint that could not be written | as the strategy allows |
//! | [`Domain::Internal`] | a bug in weir | as the strategy allows |

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whose failure it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The job's own logic, input or configuration.
    User,
    /// Something outside weir: a broker, a file system, a network.
    External,
    /// weir itself.
    Internal,
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Domain::User => "user",
            Domain::External => "external",
            Domain::Internal => "internal",
        })
    }
}

/// Whether a restart from the last checkpoint could get past a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No: the failure is deterministic in the job's input and logic.
    Never,
    /// Perhaps: restart as the job's restart strategy allows.
    Restart,
}

/// What to do with input that cannot be read (a malformed JSON line, an event without
/// a key on a keyed edge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Stop the job with an error naming the input and position.
    #[default]
    Fail,
    /// Log it, count it as skipped, and go on.
    Skip,
}

/// Guest text as it goes into the host's log and its error messages: control
/// characters (newlines, carriage returns, terminal escapes) escaped, so that a guest
/// cannot forge host log lines.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn guest_text_cannot_forge_log_lines() {
        assert_eq!(super::printable("plain text"), "plain text");
        assert_eq!(
            super::printable("ok\nERROR weir: job failed\r\u{1b}[31m"),
            "ok\\nERROR weir: job failed\\r\\u{1b}[31m"
        );
    }
}

/// A key for a message: its text when it is UTF-8, quoted and cut at 64 bytes.
pub fn printable_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(&key[..key.len().min(64)]);
    let cut = if key.len() > 64 { "…" } else { "" };
    format!("{:?}{cut}", text.as_ref())
}
