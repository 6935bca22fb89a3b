//! A thread-local flag raised for a scope: set while a guard lives, cleared when it drops, also
//! when the scope panics. The logger (`IN_LOGGER`) and the plugin loader (`LOADING`) use one each
//! to refuse what their own callers would otherwise wait on for ever.

use std::cell::Cell;
use std::thread::LocalKey;

/// Sets `flag` until the returned guard is dropped.
pub(crate) fn raise(flag: &'static LocalKey<Cell<bool>>) -> Raised {
    flag.set(true);
    Raised(flag)
}

/// Clears its flag when dropped.
pub(crate) struct Raised(&'static LocalKey<Cell<bool>>);

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
