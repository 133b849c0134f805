//! Guest standard output and error: forwarded line by line into the host's log, with
//! the last few KiB of stderr kept so that a trap's error can quote what the guest said
//! (a Rust guest's panic message, a JS exception).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much of a guest's recent stderr is kept for error messages.
const TAIL_BYTES: usize = 4096;
/// Longest line forwarded to the log; longer lines are cut.
const MAX_LINE: usize = 16 * 1024;

#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    tail: Vec<u8>,
}

/// A guest output stream (stdout or stderr) of one operator subtask.
#[derive(Clone)]
pub struct GuestOutput {
    label: Arc<str>,
    stream: &'static str,
    buffers: Arc<Mutex<Buffers>>,
}

impl GuestOutput {
    pub fn new(label: Arc<str>, stream: &'static str) -> Self {
        GuestOutput { label, stream, buffers: Arc::default() }
    }

    /// The last bytes written, as text, trimmed.
    pub fn tail(&self) -> String {
        let buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from_utf8_lossy(&buffers.tail).into_owned();
        text.push_str(&String::from_utf8_lossy(&buffers.line));
        text.trim().to_string()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut buffers.line);
                tracing::info!(
                    operator = %self.label,
                    stream = self.stream,
                    "guest: {}",
                    crate::error::printable(&String::from_utf8_lossy(&line))
                );
                buffers.tail.extend_from_slice(&line);
                buffers.tail.push(b'\n');
                let excess = buffers.tail.len().saturating_sub(TAIL_BYTES);
                buffers.tail.drain(..excess);
            } else if buffers.line.len() < MAX_LINE {
                buffers.line.push(byte);
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
