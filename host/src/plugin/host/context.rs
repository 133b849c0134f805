//! The context interface: who the operator is, its configuration and the current key.

/// Implements `context` for [`HostState`](crate::plugin::HostState) inside
/// [`operator_host!`](super::operator_host), whose imports it uses.
macro_rules! context_host {
    () => {
        impl context::Host for HostState {
            fn operator_uid(&mut self) -> wasmtime::Result<String> {
                Ok(self.ctx.info.uid.to_string())
            }

            fn subtask_index(&mut self) -> wasmtime::Result<u32> {
                Ok(self.ctx.info.subtask)
            }

            fn parallelism(&mut self) -> wasmtime::Result<u32> {
                Ok(self.ctx.info.parallelism)
            }

            fn config(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
                Ok(self.ctx.info.config.clone())
            }

            fn current_key(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
                Ok(self.ctx.current_key().map(<[u8]>::to_vec))
            }
        }
    };
}

pub(in crate::plugin) use context_host;
