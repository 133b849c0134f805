//! The interfaces of contract 0.1, all shared with later versions.

crate::plugin::host::operator_host!();
