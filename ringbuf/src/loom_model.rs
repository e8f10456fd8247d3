//! loom models of the index and park protocol in `protocol.rs`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p edgegw-ringbuf --lib --release loom`.
//!
//! The models drive the real `ControlBlock` methods; only memory and the eventfds are stand-ins:
//! slots are loom `UnsafeCell`s (so loom also checks that every slot read happens after its
//! write and before its reuse) and each eventfd is a counting semaphore. A lost wake-up leaves a
//! thread asleep forever, which loom reports as a deadlock.

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use crate::layout::ControlBlock;

/// An eventfd: `notify` adds to the counter, `wait` sleeps until it is non-zero and resets it.
struct EventFd {
    count: Mutex<u64>,
    cv: Condvar,
}

impl EventFd {
    fn new() -> Self {
        Self {
            count: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    fn notify(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut count = self.count.lock().unwrap();
        while *count == 0 {
            count = self.cv.wait(count).unwrap();
        }
        *count = 0;
    }
}

const CAP: u64 = 2;

/// Preemptions loom explores per execution (override with `LOOM_MAX_PREEMPTIONS`). 3 already
/// finds the lost wake-up a plain-store unpark causes; 4 takes about 12 s for all three models
/// on 2 cores; unbounded does not finish in 5 minutes.
const PREEMPTION_BOUND: usize = 4;

struct Model {
    ctl: ControlBlock,
    slots: [UnsafeCell<u64>; CAP as usize],
    data_ready: EventFd,
    space_ready: EventFd,
}

impl Model {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            ctl: ControlBlock::new_for_model(),
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            data_ready: EventFd::new(),
            space_ready: EventFd::new(),
        })
    }

    /// The producer of `producer.rs`, reduced to its protocol steps.
    fn produce(&self, items: u64) {
        let (mut head, mut tail_seen) = (0u64, 0u64);
        for v in 0..items {
            loop {
                if head - tail_seen < CAP {
                    break;
                }
                tail_seen = self.ctl.tail_for_producer();
                if head - tail_seen < CAP {
                    break;
                }
                if self.ctl.producer_prepare_park(head, CAP, 1) {
                    self.space_ready.wait();
                    self.ctl.producer_unpark();
                }
            }
            self.slots[(head % CAP) as usize].with_mut(|p| {
                // SAFETY: slot `head` is outside `[tail, head)`; loom checks the claim.
                unsafe { *p = 100 + v }
            });
            head += 1;
            if self.ctl.publish(head) {
                self.data_ready.notify();
            }
        }
    }

    /// The consumer of `consumer.rs`, reduced to its protocol steps. `give_up_once` makes the
    /// first park end as a timeout would: without sleeping, then parking again.
    fn consume(&self, items: u64, give_up_once: bool) -> Vec<u64> {
        let (mut tail, mut out, mut gave_up) = (0u64, Vec::new(), !give_up_once);
        while tail < items {
            let head = self.ctl.head_for_consumer();
            if head == tail {
                if self.ctl.consumer_prepare_park(tail) {
                    if gave_up {
                        self.data_ready.wait();
                    }
                    gave_up = true;
                    self.ctl.consumer_unpark();
                }
                continue;
            }
            for i in tail..head {
                let v = self.slots[(i % CAP) as usize].with(|p| {
                    // SAFETY: slot `i` is in `[tail, head)`, published and not yet released.
                    unsafe { *p }
                });
                out.push(v);
            }
            tail = head;
            if self.ctl.release(tail) {
                self.space_ready.notify();
            }
        }
        out
    }
}

fn run(items: u64, give_up_once: bool) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(PREEMPTION_BOUND);
    }
    builder.check(move || {
        let m = Model::new();
        let p = {
            let m = Arc::clone(&m);
            thread::spawn(move || m.produce(items))
        };
        let got = m.consume(items, give_up_once);
        p.join().unwrap();
        let want: Vec<u64> = (0..items).map(|v| 100 + v).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn loom_parked_consumer_is_always_woken() {
    run(3, false);
}

#[test]
fn loom_consumer_that_gave_up_waiting_is_still_woken() {
    run(3, true);
}

#[test]
fn loom_producer_waiting_for_space_is_always_woken() {
    // Four records through two slots: the producer must park at least once on most schedules.
    run(4, false);
}
