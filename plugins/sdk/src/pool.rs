//! A bounded pool of costly per-call resources (sessions, device buffers) shared by concurrent
//! `classify` calls: each call leases one of its own, made on demand up to a limit, and waits for
//! one to come back beyond it.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::Result;

/// What a lease dropped without [`Lease::give_back`] (a failed or panicking call) does with its
/// item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// Back into the pool: the item keeps no state between calls.
    Return,
    /// Dropped, and its slot freed for a new one: the item may be unusable after a failure (a
    /// device may still be using its buffers).
    Retire,
}

/// Up to `max_live` items of `T`, idle or leased.
pub struct Pool<T> {
    state: Mutex<State<T>>,
    /// Signalled whenever an item or a slot comes back.
    returned: Condvar,
    max_live: usize,
    on_drop: OnDrop,
}

struct State<T> {
    idle: Vec<T>,
    /// Items idle, leased, or being made.
    live: usize,
}

impl<T> Pool<T> {
    /// An empty pool of at most `max_live` items (at least one).
    pub fn new(max_live: usize, on_drop: OnDrop) -> Pool<T> {
        Pool {
            state: Mutex::new(State {
                idle: Vec::new(),
                live: 0,
            }),
            returned: Condvar::new(),
            max_live: max_live.max(1),
            on_drop,
        }
    }

    /// Adds an idle item made up front (so that a failure to make one fails `create`, not the
    /// first call).
    pub fn put(&mut self, item: T) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        state.idle.push(item);
        state.live += 1;
    }

    /// Leases an item: the last idle one, or a free slot, handed to `prepare` as `Some(idle)` or
    /// `None`; `prepare` returns the item to lease (the idle one, or one it makes). Waits while
    /// every item is leased. A failure of `prepare` frees the slot.
    pub fn lease(&self, prepare: impl FnOnce(Option<T>) -> Result<T>) -> Result<Lease<'_, T>> {
        let taken = self
            .take(true)
            .expect("a waiting lease always gets an item or a slot");
        self.fill(taken, prepare)
    }

    /// Like [`Pool::lease`], but `None` at once instead of waiting.
    pub fn try_lease(
        &self,
        prepare: impl FnOnce(Option<T>) -> Result<T>,
    ) -> Result<Option<Lease<'_, T>>> {
        match self.take(false) {
            Some(taken) => self.fill(taken, prepare).map(Some),
            None => Ok(None),
        }
    }

    /// An idle item (`Some(Some)`), a free slot (`Some(None)`), or `None` when every item is
    /// leased and `wait` is false.
    fn take(&self, wait: bool) -> Option<Option<T>> {
        let mut state = self.state();
        loop {
            if let Some(item) = state.idle.pop() {
                return Some(Some(item));
            }
            if state.live < self.max_live {
                state.live += 1;
                return Some(None);
            }
            if !wait {
                return None;
            }
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn fill(
        &self,
        taken: Option<T>,
        prepare: impl FnOnce(Option<T>) -> Result<T>,
    ) -> Result<Lease<'_, T>> {
        // From here the slot is the lease's: it comes back however `prepare` or the call ends.
        let mut lease = Lease {
            pool: self,
            item: None,
        };
        lease.item = Some(prepare(taken)?);
        Ok(lease)
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Every change under the lock is one push, one pop or one counter update, so a panic
        // elsewhere cannot leave the state inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, item: Option<T>) {
        let mut state = self.state();
        match item {
            Some(item) => state.idle.push(item),
            None => state.live -= 1,
        }
        drop(state);
        self.returned.notify_one();
    }
}

/// An item leased from a [`Pool`] by one call.
pub struct Lease<'a, T> {
    pool: &'a Pool<T>,
    /// `None` only while the item is being prepared.
    item: Option<T>,
}

impl<T> Lease<'_, T> {
    /// Returns the item to the pool for the next call.
    pub fn give_back(mut self) {
        let item = self.item.take();
        self.pool.settle(item);
        // The slot is settled: nothing left for `drop` to do.
        std::mem::forget(self);
    }
}

impl<T> Deref for Lease<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.item.as_ref().expect("a lease holds its item")
    }
}

impl<T> DerefMut for Lease<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_mut().expect("a lease holds its item")
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        // Without `give_back`: the call failed or panicked, or `prepare` failed (no item).
        let item = match self.pool.on_drop {
            OnDrop::Return => self.item.take(),
            OnDrop::Retire => {
                drop(self.item.take());
                None
            }
        };
        self.pool.settle(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn items_are_made_on_demand_up_to_the_limit_and_reused() {
        let pool = Pool::new(2, OnDrop::Return);
        let made = AtomicUsize::new(0);
        let make =
            |idle: Option<usize>| Ok(idle.unwrap_or_else(|| made.fetch_add(1, Ordering::SeqCst)));
        let a = pool.lease(make).unwrap();
        let b = pool.lease(make).unwrap();
        assert_eq!((*a, *b), (0, 1));
        assert!(pool.try_lease(make).unwrap().is_none(), "the limit is 2");
        a.give_back();
        assert_eq!(
            *pool.try_lease(make).unwrap().unwrap(),
            0,
            "reused, not made"
        );
        drop(b);
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_dropped_lease_returns_or_retires_its_item_as_the_pool_says() {
        let returning = Pool::new(1, OnDrop::Return);
        drop(returning.lease(|_| Ok(7)).unwrap());
        assert_eq!(*returning.lease(|idle| Ok(idle.unwrap_or(0))).unwrap(), 7);

        let retiring = Pool::new(1, OnDrop::Retire);
        drop(retiring.lease(|_| Ok(7)).unwrap());
        // The slot is free again, and the next lease gets no idle item.
        assert_eq!(*retiring.lease(|idle| Ok(idle.unwrap_or(0))).unwrap(), 0);
    }

    #[test]
    fn a_failed_prepare_frees_its_slot() {
        let pool: Pool<u8> = Pool::new(1, OnDrop::Return);
        let error = match pool.lease(|_| Err(Error::backend_failure("no device memory"))) {
            Ok(_) => panic!("the failure was lost"),
            Err(error) => error,
        };
        assert_eq!(error.message(), "no device memory");
        assert_eq!(*pool.try_lease(|_| Ok(1)).unwrap().unwrap(), 1);
    }

    #[test]
    fn callers_beyond_the_limit_wait_for_an_item_to_come_back() {
        let mut pool = Pool::new(2, OnDrop::Return);
        pool.put(0usize);
        let in_use = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let lease = pool.lease(|idle| Ok(idle.unwrap_or(1))).unwrap();
                        let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        in_use.fetch_sub(1, Ordering::SeqCst);
                        lease.give_back();
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
        let state = pool.state();
        assert_eq!((state.live, state.idle.len()), (2, 2));
    }
}
