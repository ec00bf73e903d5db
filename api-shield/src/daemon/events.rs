//! Reads the kernel's auto-block events from the ring buffer as they arrive.

use api_shield_common::state::AutoBlockEvent;
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// Calls `on_event` for every auto-block event until `shutdown` resolves.
pub async fn read_events(
    ring: RingBuf<MapData>,
    mut on_event: impl FnMut(AutoBlockEvent),
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the ring buffer and with it the descriptor it registers, so the
    // descriptor stays open exactly as long as the registration.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if let Some(event) = decode(&item) {
                        on_event(event);
                    }
                }
                guard.clear_ready();
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Option<AutoBlockEvent> {
    if bytes.len() < size_of::<AutoBlockEvent>() {
        return None;
    }
    // SAFETY: the length is checked; `AutoBlockEvent` is plain integers (any bit pattern is
    // valid) and read unaligned because ring buffer records are only 8-byte aligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<AutoBlockEvent>()) })
}
