//! The only unsafe code of process isolation: anonymous shared memory
//! (memfd + mmap), the parent-death signal, and fds handed to a child.
//! Public for rustpy-worker, whose own code has no `unsafe`.
//! (With main's unsafe boundary, this module is listed among those allowed
//! `unsafe`; every unsafe block carries a `// SAFETY:` comment.)
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Creates an anonymous memory file (never under /dev/shm) of `len` bytes.
/// Without seals it can be resized by either side: only for tests and
/// files nobody maps.
pub fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    memfd_with(name, len, 0)
}

/// A memory file of exactly `len` bytes that nobody can resize, and whose
/// seals nobody can change (`F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`).
/// Every shared region between the backend and a worker is one: user code
/// in the worker holds the fd (`/proc/self/fd`), so
/// - it cannot shrink it under a mapping (touched past the end of its file,
///   a mapping raises SIGBUS in whoever touches it: the server), and
/// - it cannot grow it: `len` is the most memory the file can ever hold
///   (shared memory counts in no rlimit of the worker). The file is sparse:
///   pages cost memory only once written, so `len` is a cap, not a cost.
pub fn fixed_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = memfd_with(name, len, libc::MFD_ALLOW_SEALING)?;
    // SAFETY: F_ADD_SEALS on a descriptor we own; returns 0 or -1.
    let rc = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Gives the memory of `len` bytes from `offset` back (a hole reads as
/// zeros); the file keeps its size. Sealed files allow it: only
/// `F_SEAL_WRITE` forbids it.
pub fn punch_hole(fd: &impl AsRawFd, offset: usize, len: usize) -> io::Result<()> {
    // SAFETY: fallocate takes no pointers; a negative result is an error.
    let rc = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn memfd_with(name: &str, len: usize, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: cname is a valid C string; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    File::from(fd.try_clone()?).set_len(len as u64)?;
    Ok(fd)
}

/// A shared mapping of a whole memfd (a [`fixed_memfd`]: its size never
/// changes, so the mapping always covers the file). Writes go through raw
/// pointers; the two processes take turns (the protocol decides who writes
/// where and when).
pub struct Shm {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; the protocol (one owner at a time,
// calls serialised by the caller's locks) keeps accesses from racing.
unsafe impl Send for Shm {}

impl Shm {
    /// Maps the current size of `fd`, read-write and shared.
    pub fn map(fd: OwnedFd) -> io::Result<Shm> {
        let mut shm = Shm {
            fd,
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        shm.remap()?;
        Ok(shm)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The mapped file.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn remap(&mut self) -> io::Result<()> {
        let len = File::from(self.fd.try_clone()?).metadata()?.len() as usize;
        self.unmap();
        if len == 0 {
            return Ok(());
        }
        // SAFETY: maps `len` bytes of a file we hold open; the result is
        // checked below and unmapped exactly once (unmap/drop).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.ptr = ptr.cast();
        self.len = len;
        Ok(())
    }

    pub fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len, "write past the mapping");
        // SAFETY: the range is inside the mapping (asserted) and `data` is a
        // separate allocation.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
    }

    /// The whole mapping.
    pub fn whole(&self) -> &[u8] {
        self.slice(0, self.len).unwrap_or(&[])
    }

    /// The bytes at `offset..offset+len`; errors when outside the mapping.
    pub fn slice(&self, offset: usize, len: usize) -> io::Result<&[u8]> {
        let in_bounds = matches!(offset.checked_add(len), Some(end) if end <= self.len);
        if !in_bounds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "range {offset}+{len} outside shared memory of {} bytes",
                    self.len
                ),
            ));
        }
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: in bounds (checked); the borrow of self keeps the mapping.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }

    fn unmap(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: ptr/len are the live mapping made by remap.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
            self.ptr = std::ptr::null_mut();
            self.len = 0;
        }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// A read-write shared mapping of a whole memfd at its size now, holding no
/// fd: it stays valid after the file grows (the new bytes are simply not in
/// it) and is unmapped when dropped. The worker gives Python views of batch
/// inputs through one of these, owned by a Python object (rustpy-worker's
/// batch.rs).
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain shared memory; `&Mapping` only reads, and the backend writes
// no range a live view reads (the protocol pins it: rustpy-worker's
// batch.rs, transport.rs's InputRegion).
unsafe impl Send for Mapping {}
// SAFETY: as above; there is no interior mutability through `&Mapping`.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn new(fd: &OwnedFd) -> io::Result<Mapping> {
        let len = File::from(fd.try_clone()?).metadata()?.len() as usize;
        if len == 0 {
            return Ok(Mapping {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: maps `len` bytes of an open file; checked below, unmapped
        // once in drop. The mapping outlives the fd by design (mmap keeps
        // the file alive).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole mapping.
    pub fn whole(&self) -> &[u8] {
        self.slice(0, self.len).unwrap_or(&[])
    }

    /// Copies `bytes` into the mapping at `offset`; errors when outside it.
    /// Only for a writer that owns the range by protocol (a BLS region's
    /// writer side, isolation/bls.rs): nobody reads it meanwhile.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        self.slice(offset, bytes.len())?; // in bounds
        if bytes.is_empty() {
            return Ok(());
        }
        // SAFETY: offset..offset+len lies inside the live read-write mapping
        // (checked just above), shared memory rather than Rust-owned data;
        // ptr::copy allows `bytes` to be (part of) the same memory.
        unsafe { std::ptr::copy(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
        Ok(())
    }

    /// Start address and length (for the view registration of numpy_io).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The bytes at `offset..offset+len`; errors when outside the mapping.
    pub fn slice(&self, offset: usize, len: usize) -> io::Result<&[u8]> {
        let in_bounds = matches!(offset.checked_add(len), Some(end) if end <= self.len);
        if !in_bounds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "range {offset}+{len} outside shared memory of {} bytes",
                    self.len
                ),
            ));
        }
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: in bounds (checked); the borrow of self keeps the mapping.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }
}

// SAFETY: a Mapping's bytes are one shared read-write mmap made in `new`,
// at a fixed address, unmapped only in drop: the same slice, mapped, for
// the value's whole life (moving a Mapping moves only its pointer).
unsafe impl crate::rules::shared::SharedMemory for Mapping {
    fn view_bytes(&self) -> &[u8] {
        self.slice(0, self.len).unwrap_or(&[])
    }

    fn write(&self, offset: usize, bytes: &[u8]) -> bool {
        Mapping::write(self, offset, bytes).is_ok()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: ptr/len are the live mapping made by new, unmapped once.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Takes ownership of an fd inherited from the parent (worker side).
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the parent passed this fd for us alone; nothing else in this
    // process owns it. FD_CLOEXEC is set again so our own children don't get it.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub fn inherited_stream(fd: RawFd) -> io::Result<UnixStream> {
    Ok(UnixStream::from(inherited_fd(fd)?))
}

/// Makes `command`'s child keep `fds` across exec, get SIGKILL when the
/// thread that spawns it exits (PR_SET_PDEATHSIG), and lead a process
/// group of its own, so the processes user code forks can be killed with it
/// ([`kill_group`]) and a signal to the server's group does not reach it.
/// The fds stay close-on-exec in this process.
pub fn prepare_child(command: &mut Command, fds: Vec<RawFd>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (fcntl, setpgid, prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Worker side: SIGINT and SIGTERM (a Ctrl-C or `kill` sent to the server's
/// process group) do nothing, so the server decides when its workers run
/// `finalize` and exit. A handler rather than SIG_IGN, so that processes the
/// user's code starts get the default dispositions back at exec.
pub fn defer_termination_to_parent() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that does nothing (async-signal-safe);
        // the sigaction struct is fully initialised before the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Worker side, before Python starts: limits the process's data segment
/// (RLIMIT_DATA: heap and private writable mappings, thread stacks included;
/// not the shared-memory regions nor address space merely reserved), soft
/// and hard, so user code cannot raise it. An allocation past it fails
/// (Python raises MemoryError) instead of the machine swapping or the OOM
/// killer picking a process.
pub fn limit_data(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the fully initialised struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends SIGKILL to `pid` (a child we have not reaped yet).
pub fn kill(pid: u32) {
    // SAFETY: kill only sends a signal; the pid is our unreaped child, so it
    // cannot have been reused.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Sends SIGKILL to every process of the process group `pid` leads (a
/// worker and whatever it forked and did not move elsewhere). Only while
/// the leader is unreaped (alive or a zombie): the group id cannot have
/// been reused then.
pub fn kill_group(pid: u32) {
    // SAFETY: kill only sends a signal; a negative pid names a group.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

/// Whether our child `pid` has exited, without reaping it (a zombie keeps
/// its pid, and its process group id, from being reused until `wait`).
pub fn has_exited(pid: u32) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data, zeroed then filled by waitid; WNOWAIT
    // leaves the child waitable; WNOHANG never blocks.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.si_pid() != 0)
    }
}

/// The name of a signal ("SIGSEGV"), or its number.
pub fn signal_name(sig: i32) -> String {
    let known = [
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGXCPU, "SIGXCPU"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == sig)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("signal {sig}"))
}

/// An eventfd: lets one thread wake another out of [`wait_readable`]
/// (the worker's main thread takes the control socket back from its intake
/// thread with it).
pub struct Event(OwnedFd);

impl Event {
    pub fn new() -> io::Result<Event> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd just returned this descriptor; nothing else owns it.
        Ok(Event(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the event readable until [`Event::clear`].
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live u64, as eventfd expects.
        let n = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Resets the event (non-blocking: nothing to clear is fine).
    pub fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; the fd is non-blocking.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// Blocks until `fd` has something to read (or hung up) or `event` is
/// signalled. `Ok(true)`: the event (checked first), `Ok(false)`: `fd`.
pub fn wait_readable(fd: RawFd, event: &Event) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: event.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a live array of two initialised pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
    }
}

/// Whether `fd` has something to read (or hung up) right now.
pub fn readable_now(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one live, initialised pollfd; a zero timeout never blocks.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn wait_readable_tells_the_event_from_the_socket() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let event = Event::new().unwrap();
        assert!(!readable_now(b.as_raw_fd()));
        a.write_all(b"x").unwrap();
        assert!(readable_now(b.as_raw_fd()));
        assert!(!wait_readable(b.as_raw_fd(), &event).unwrap());
        // The event wins while set, and is gone once cleared.
        event.signal().unwrap();
        assert!(wait_readable(b.as_raw_fd(), &event).unwrap());
        event.clear();
        assert!(!wait_readable(b.as_raw_fd(), &event).unwrap());
        event.clear(); // nothing to clear: must not block
    }

    #[test]
    fn wait_readable_wakes_on_a_signal_from_another_thread() {
        let (_a, b) = UnixStream::pair().unwrap();
        let event = std::sync::Arc::new(Event::new().unwrap());
        let signaller = event.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            signaller.signal().unwrap();
        });
        assert!(wait_readable(b.as_raw_fd(), &event).unwrap());
        t.join().unwrap();
    }
}
