//! Each instance's response thread: it sends the responses the instance
//! built, so the instance goes back to its queue at once.
//!
//! `TRITONBACKEND_ResponseSend` runs the frontend's completion of the
//! response on the calling thread (gRPC's serialisation and completion-queue
//! hand-off, or the in-process client's callback). Done inline, it held the
//! instance's thread for most of a small request's time (73% of the pb_utils
//! path's samples, docs/benchmarks.md). Here the instance only fills the
//! response's buffers and queues it; this thread sends it.
//!
//! One thread per instance, first in first out, so a request's responses
//! (and its FINAL flag, and its factory's release) keep their order. After
//! [`TaskThread::close`] (instance finalize), anything still holding a
//! sink (a decoupled model's own thread) sends inline, as before.
//! `--backend-config=rustpy,response-thread=false` (src/settings.rs) starts
//! none: every send is inline.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::ffi::{log, BuiltResponse, LogLevel, ResponseFactory};

/// Work the thread does, one at a time, in the order it was queued.
pub trait Task: Send + 'static {
    fn run(self);
}

/// One step of a request's response stream.
pub enum Job {
    /// A built response (outputs or an error), sent as it is.
    Send(BuiltResponse),
    /// The FINAL flag alone; the factory is released after it.
    Finish(ResponseFactory),
    /// The factory of a request that needs nothing more, released after its
    /// queued responses.
    Release(ResponseFactory),
}

impl Task for Job {
    fn run(self) {
        match self {
            Job::Send(response) => {
                if let Err(e) = response.send() {
                    log(
                        LogLevel::Error,
                        &format!("rustpy: cannot send a response: {e}"),
                    );
                }
            }
            Job::Finish(mut factory) => {
                if let Err(e) = factory.send_final_flag() {
                    log(
                        LogLevel::Error,
                        &format!("rustpy: cannot complete a response: {e}"),
                    );
                }
            }
            Job::Release(factory) => drop(factory),
        }
    }
}

/// What the thread receives: a task, or the end (queued by `close`, so it
/// comes after every task).
enum Message<T> {
    Run(T),
    Stop,
}

/// The instance's queue and its thread, shared by its sinks (`Arc`).
pub type ResponseThread = TaskThread<Job>;

/// A queue and the thread that runs its tasks.
pub struct TaskThread<T: Task> {
    /// None once closed: later tasks run on the caller's thread.
    queue: Mutex<Option<Sender<Message<T>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Task> TaskThread<T> {
    /// Starts the thread of one instance (`name` shows in profilers).
    pub fn start(name: &str) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = channel();
        // Linux thread names are at most 15 bytes.
        let mut short: String = format!("rsend-{name}");
        while short.len() > 15 {
            short.pop();
        }
        let thread = std::thread::Builder::new()
            .name(short)
            .spawn(move || run(rx))?;
        Ok(Arc::new(TaskThread {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Queues `task`, or runs it here when the thread is closed.
    pub fn submit(&self, task: T) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let task = match queue.as_ref() {
            Some(tx) => match tx.send(Message::Run(task)) {
                Ok(()) => return,
                Err(returned) => match returned.0 {
                    Message::Run(task) => task,
                    Message::Stop => return,
                },
            },
            None => task,
        };
        drop(queue);
        task.run();
    }

    /// Sends what is queued and stops the thread; later jobs run inline.
    pub fn close(&self) {
        if let Some(tx) = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(Message::Stop);
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log(LogLevel::Error, "rustpy: the response thread panicked");
            }
        }
    }
}

impl<T: Task> Drop for TaskThread<T> {
    fn drop(&mut self) {
        self.close();
    }
}

fn run<T: Task>(rx: Receiver<Message<T>>) {
    for message in rx {
        let Message::Run(task) = message else {
            return;
        };
        // A panic in one task (none is expected) must not stop the others.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run())).is_err() {
            log(LogLevel::Error, "rustpy: a response send panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::thread::ThreadId;

    /// Records its number and the thread that ran it.
    struct Note(u32, Sender<(u32, ThreadId)>);

    impl Task for Note {
        fn run(self) {
            let _ = self.1.send((self.0, std::thread::current().id()));
        }
    }

    #[test]
    fn tasks_run_in_order_on_the_thread_and_close_runs_what_was_queued() {
        let thread = TaskThread::start("test").unwrap();
        let (tx, rx) = channel();
        for i in 0..1000 {
            thread.submit(Note(i, tx.clone()));
        }
        thread.close();
        let ran: Vec<(u32, ThreadId)> = rx.try_iter().collect();
        assert_eq!(
            ran.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..1000).collect::<Vec<_>>()
        );
        let here = std::thread::current().id();
        assert!(ran.iter().all(|r| r.1 == ran[0].1 && r.1 != here));
    }

    #[test]
    fn after_close_tasks_run_on_the_callers_thread() {
        let thread = TaskThread::start("test").unwrap();
        thread.close();
        thread.close(); // a second close is harmless
        let (tx, rx) = channel();
        thread.submit(Note(7, tx));
        assert_eq!(rx.try_recv().unwrap(), (7, std::thread::current().id()));
    }

    #[test]
    fn tasks_from_many_threads_all_run_before_close_returns() {
        let thread = TaskThread::start("test").unwrap();
        let (tx, rx) = channel();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (thread, tx) = (&thread, tx.clone());
                s.spawn(move || {
                    for i in 0..250 {
                        thread.submit(Note(t * 1000 + i, tx.clone()));
                    }
                });
            }
        });
        thread.close();
        let mut ran: Vec<u32> = rx.try_iter().map(|r| r.0).collect();
        assert_eq!(ran.len(), 1000);
        // Each submitting thread's tasks kept their order.
        for t in 0..4u32 {
            let mine: Vec<u32> = ran.iter().copied().filter(|n| n / 1000 == t).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
        ran.sort();
        ran.dedup();
        assert_eq!(ran.len(), 1000);
    }
}
