//! The logging interface: guest log lines as structured `tracing` events.

/// Longest guest log message kept; longer ones are cut.
pub const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// Implements `logging` for [`HostState`](crate::plugin::HostState) inside
/// [`operator_host!`](super::operator_host), whose imports it uses.
macro_rules! logging_host {
    () => {
        impl logging::Host for HostState {
            fn log(&mut self, level: logging::Level, mut message: String) -> wasmtime::Result<()> {
                if message.len() > $crate::plugin::host::logging::MAX_LOG_MESSAGE {
                    let mut cut = $crate::plugin::host::logging::MAX_LOG_MESSAGE;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                }
                let operator = &*self.ctx.info.uid;
                let subtask = self.ctx.info.subtask;
                let message = $crate::error::printable(&message);
                match level {
                    logging::Level::Trace => tracing::trace!(operator, subtask, "{message}"),
                    logging::Level::Debug => tracing::debug!(operator, subtask, "{message}"),
                    logging::Level::Info => tracing::info!(operator, subtask, "{message}"),
                    logging::Level::Warn => tracing::warn!(operator, subtask, "{message}"),
                    logging::Level::Error => tracing::error!(operator, subtask, "{message}"),
                }
                Ok(())
            }
        }
    };
}

pub(in crate::plugin) use logging_host;
