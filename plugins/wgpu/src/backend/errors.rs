//! How device errors reach a call: device loss, error scopes, errors outside any call, panics.

use std::sync::{Arc, Mutex};

use gemma_cyber_plugin::{panic_message, Error, Result};

/// Failures reported by wgpu outside any call: device loss, errors outside an error scope.
#[derive(Default)]
pub(super) struct DeviceEvents {
    pub(super) lost: Mutex<Option<String>>,
    /// An error wgpu reported outside every error scope; the next call fails with it.
    pub(super) uncaptured: Mutex<Option<String>>,
}

impl DeviceEvents {
    /// Events of `device` from now on.
    pub(super) fn watch(device: &wgpu::Device) -> Arc<DeviceEvents> {
        let events = Arc::new(DeviceEvents::default());
        let lost = Arc::clone(&events);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost.lost.lock() {
                *slot = Some(one_line(&format!("{reason:?}: {message}")));
            }
        });
        // wgpu's default handler panics; every call runs inside error scopes, so an error that
        // still arrives here belongs to no call: the next call reports it (a library never
        // writes to stderr).
        let uncaptured = Arc::clone(&events);
        device.on_uncaptured_error(Arc::new(move |error| {
            if let Ok(mut slot) = uncaptured.uncaptured.lock() {
                slot.get_or_insert_with(|| one_line(&error.to_string()));
            }
        }));
        events
    }
}

/// Validation, out-of-memory and internal error scopes around some device work (this thread's).
pub(super) struct ErrorScopes {
    scopes: [wgpu::ErrorScopeGuard; 3],
}

impl ErrorScopes {
    pub(super) fn push(device: &wgpu::Device) -> ErrorScopes {
        ErrorScopes {
            scopes: [
                device.push_error_scope(wgpu::ErrorFilter::Validation),
                device.push_error_scope(wgpu::ErrorFilter::OutOfMemory),
                device.push_error_scope(wgpu::ErrorFilter::Internal),
            ],
        }
    }

    /// Pops the scopes (innermost first); any error they caught is BACKEND_FAILURE.
    pub(super) fn check(self, doing: &str) -> Result<()> {
        let mut first = None;
        for scope in self.scopes.into_iter().rev() {
            // On native backends the future is ready at once.
            if let Some(error) = pollster::block_on(scope.pop()) {
                first.get_or_insert(error);
            }
        }
        match first {
            None => Ok(()),
            Some(error) => Err(Error::backend_failure(format!(
                "wgpu: {doing}: {}",
                one_line(&error.to_string())
            ))),
        }
    }
}

pub(super) fn panic_failure(doing: &str, payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::backend_failure(format!(
        "wgpu panicked while {doing}: {}",
        one_line(panic_message(payload.as_ref()))
    ))
}

/// `text` on one line, as a plugin's messages must be: wgpu's errors list their causes on lines
/// of their own, indented.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
