//! What every idle connection carries, held to bounds (see docs/BENCHMARKS.md, "Idle
//! connection, byte by byte"). A field added to one of these types, or a local that lives
//! across an `.await` of the connection, is paid by every connected client, so growing
//! one should be a decision and not an accident. Sizes, not timings: they hold on any
//! 64-bit machine, in debug and release builds alike.

use std::mem::size_of;

use crate::client::Client;
use crate::session::Session;

/// The size of the future `f` returns, without calling it.
fn future_size<F, Fut, A, B, C, D, E>(_: &F) -> usize
where
    F: Fn(A, B, C, D, E) -> Fut,
{
    size_of::<Fut>()
}

#[test]
fn a_connection_task_fits_five_cache_line_pairs() {
    // tokio allocates a task as one cell aligned to 128 bytes: about 104 bytes of header
    // and trailer, the future, and TaskTracker's 8-byte wrapper, rounded up to a multiple
    // of 128. At most 528 bytes of future keep the cell at 640 bytes (it was 896 before
    // the connection's state was trimmed; 512 measured in a release build).
    let spawned = future_size(&super::serve_tcp);
    assert!(
        spawned <= 528,
        "the connection's future is {spawned} bytes: its tokio task would grow past 640"
    );
}

#[test]
fn the_session_and_client_stay_small() {
    // Measured 392 and 200 bytes; one allocation (the Session's Arc) and one part of the
    // task (the Client) per connected client.
    assert!(
        size_of::<Session>() <= 392,
        "Session: {}",
        size_of::<Session>()
    );
    assert!(
        size_of::<Client>() <= 200,
        "Client: {}",
        size_of::<Client>()
    );
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[test]
fn a_parked_connection_is_its_client_socket_and_slot() {
    // What an idle plain-TCP connection keeps once parked (see `server::parked`), in
    // place of its task and its socket's registration with tokio: the dormant client
    // (72), the socket (4) and the slot (8), in the lot's vector with its generation
    // and vacant-list link (96 bytes each).
    let parked = size_of::<super::parked::Parked>();
    assert!(parked <= 88, "Parked: {parked}");
}
