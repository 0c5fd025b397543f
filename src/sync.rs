//! The synchronisation primitives of the broker's rings: std's, or loom's when the crate is
//! built for the model check (`RUSTFLAGS="--cfg tower_sse_loom"`, see `src/broker/model.rs`).
//!
//! A custom cfg rather than `loom`, since tokio reads `cfg(loom)` for its own tests.

#[cfg(not(tower_sse_loom))]
pub(crate) use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

#[cfg(tower_sse_loom)]
pub(crate) use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

/// Locks `mutex`. Nothing panics while holding the broker's locks; if something ever did, the
/// data is still consistent (every update is a single push or remove), so go on.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
