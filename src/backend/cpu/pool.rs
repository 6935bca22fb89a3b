//! Worker threads kept for a cpu backend's lifetime, so that a call shares its work without
//! starting threads (~20 µs each, more than a whole one-row call split across two cores).
//!
//! A call posts a job (a closure that takes work from shared counters until none is left), runs it
//! on the calling thread too, withdraws it and waits only for the workers that entered it. A worker
//! that is slow to wake simply finds nothing left to take, so no call waits on a sleeping thread.
//! After a job a worker spins for [`SPIN`] before it sleeps: back-to-back calls find it awake.
//! Sleeping workers are woken in a chain (the caller wakes the first, each the next), so a call
//! pays for at most one wake-up system call however many cores there are, and only as many
//! workers as the job can use are woken at all. The caller decides whether a job is worth waking
//! sleeping workers for (see `CpuBackend::classify_by_outputs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker keeps looking for the next job before it sleeps: about two one-row calls,
/// so a caller classifying row after row keeps its workers awake, and an idle process costs at
/// most this much of a core per call.
pub(super) const SPIN: Duration = Duration::from_micros(50);

/// The job as workers see it: the lifetime is erased, and [`Workers::run`] keeps it valid for as
/// long as any worker is inside it.
type Job = &'static (dyn Fn() + Sync);

struct Shared {
    /// Bumped for every job posted and at shutdown; a worker wakes when it changes.
    epoch: AtomicU64,
    /// The posted job, null when none: points at a [`Job`] on the stack of [`Workers::run`].
    job: AtomicPtr<Job>,
    /// Workers inside the current job.
    active: AtomicUsize,
    /// How many workers the current job can use: workers `0..wanted` take part.
    wanted: AtomicUsize,
    /// Whether the current job wakes sleeping workers (each wakes the next).
    wake: AtomicBool,
    /// Every worker's handle, for waking the next one in the chain; set once all are started.
    threads: std::sync::OnceLock<Vec<std::thread::Thread>>,
    /// Set when a worker's share of a job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Signalled by the last worker to leave a job, for a caller that stopped spinning.
    left: Condvar,
    left_lock: Mutex<()>,
}

/// Threads that take part in a caller's job; joined on drop.
pub(super) struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The process that started the threads: a forked child has none of them.
    pid: u32,
}

impl Workers {
    /// Up to `count` workers; fewer (possibly none) when the system refuses threads.
    pub(super) fn start(count: usize) -> Workers {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(ptr::null_mut()),
            active: AtomicUsize::new(0),
            wanted: AtomicUsize::new(0),
            wake: AtomicBool::new(false),
            threads: std::sync::OnceLock::new(),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            left: Condvar::new(),
            left_lock: Mutex::new(()),
        });
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let shared = shared.clone();
            let builder = std::thread::Builder::new().name("gemma-cyber-cpu".to_owned());
            match builder.spawn(move || work_loop(&shared, index)) {
                Ok(handle) => threads.push(handle),
                Err(_) => break,
            }
        }
        let handles = threads.iter().map(|t| t.thread().clone()).collect();
        // Set once, here, before any job is posted.
        let _ = shared.threads.set(handles);
        Workers {
            shared,
            threads,
            pid: std::process::id(),
        }
    }

    /// Number of threads besides the caller.
    pub(super) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether these threads exist in this process (not a child forked after they started).
    pub(super) fn belong_here(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Runs `work` on this thread and on up to `helpers` workers, those that wake in time (with
    /// `wake` false, only those still spinning), and returns when none of them is inside it any
    /// more; true if a worker's share panicked. `work` must share its work through its own state,
    /// so that it is complete once the caller's own `work()` returns.
    pub(super) fn run(&mut self, helpers: usize, wake: bool, work: &(dyn Fn() + Sync)) -> bool {
        // SAFETY: only the lifetime changes. Workers call the job only between entering it
        // (`active` + 1, then reading `job`) and leaving it (`active` − 1); `Withdraw` clears `job`
        // and waits for `active` to reach zero before this frame, and `work` with it, goes away.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(work) };
        let shared = &*self.shared;
        let helpers = helpers.min(self.threads.len());
        shared.panicked.store(false, SeqCst);
        shared.wanted.store(helpers, SeqCst);
        shared.wake.store(wake, SeqCst);
        shared.job.store(ptr::from_ref(&job).cast_mut(), SeqCst);
        shared.epoch.fetch_add(1, SeqCst);
        if wake && helpers > 0 {
            // Cheap for a worker still spinning: only a sleeping one needs the system call. The
            // first worker wakes the next, and so on (`work_loop`).
            self.threads[0].thread().unpark();
        }
        let withdraw = Withdraw(shared);
        work();
        drop(withdraw);
        shared.panicked.load(SeqCst)
    }
}

/// Takes the job back and waits for the workers inside it, also when the caller's share unwinds.
struct Withdraw<'a>(&'a Shared);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.job.store(ptr::null_mut(), SeqCst);
        // A worker that entered has almost always finished by now (the caller's share ends when no
        // work is left); spin briefly, then sleep until the last one leaves.
        let start = Instant::now();
        while shared.active.load(SeqCst) != 0 {
            if start.elapsed() > SPIN {
                let mut guard = shared.left_lock.lock().unwrap_or_else(|e| e.into_inner());
                while shared.active.load(SeqCst) != 0 {
                    guard = shared.left.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                break;
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if !self.belong_here() {
            // A forked child: the threads exist only in the parent, so there is nothing to join
            // or detach here.
            std::mem::forget(std::mem::take(&mut self.threads));
            return;
        }
        self.shared.stop.store(true, SeqCst);
        self.shared.epoch.fetch_add(1, SeqCst);
        for handle in self.threads.drain(..) {
            handle.thread().unpark();
            // A worker catches its job's panics, so joining cannot fail.
            let _ = handle.join();
        }
    }
}

fn work_loop(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        seen = wait_for_change(shared, seen);
        if shared.stop.load(SeqCst) {
            return;
        }
        if index >= shared.wanted.load(SeqCst) {
            // This job has no use for this worker (nor, so, for the ones after it).
            continue;
        }
        if shared.wake.load(SeqCst)
            && let Some(next) = shared.threads.get().and_then(|t| t.get(index + 1))
        {
            next.unpark();
        }
        // Enter before reading the job: a caller that has already withdrawn it then either sees
        // this worker inside and waits, or this worker sees no job.
        shared.active.fetch_add(1, SeqCst);
        let job = shared.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: the job stays valid while `active` counts this worker (see `Workers::run`).
            let job = unsafe { *job };
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                shared.panicked.store(true, SeqCst);
            }
        }
        if shared.active.fetch_sub(1, SeqCst) == 1 {
            let _guard = shared.left_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.left.notify_all();
        }
    }
}

/// The epoch once it differs from `seen`: spinning for [`SPIN`], then sleeping.
fn wait_for_change(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let epoch = shared.epoch.load(SeqCst);
        if epoch != seen {
            return epoch;
        }
        spins = spins.wrapping_add(1);
        // Reading the clock costs more than a spin: look at it every 64th time round.
        if spins.is_multiple_of(64) && start.elapsed() > SPIN {
            // An unpark between the load above and this park makes it return at once.
            std::thread::park();
        } else {
            std::hint::spin_loop();
        }
    }
}
