//! The control socket's sending half on the backend side (the execute
//! thread and the threads answering server calls share it).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::wire::{write_frame, ToWorker};

/// The backend's sending half of a worker's control socket (the execute
/// thread and the threads answering server calls share it).
pub(super) type Writer = Arc<Mutex<UnixStream>>;

pub(super) fn write_to(w: &Writer, msg: &ToWorker) -> std::io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    write_frame(&mut *s, msg)?;
    s.flush()
}
