//! loom models of the index and park protocol in `protocol.rs`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p edgegw-ringbuf --lib --release loom`.
//!
//! The models drive the real `ControlBlock` methods; only memory and the eventfds are stand-ins:
//! slots are loom `UnsafeCell`s (so loom also checks that every slot read happens after its
//! write and before its reuse) and each eventfd is a counting semaphore. A lost wake-up leaves a
//! thread asleep forever, which loom reports as a deadlock.
//!
//! membarrier is modelled as in `protocol.rs`: when it works, the consumer's call and the
//! producer's compiler fence are both `fence(SeqCst)`; when it is denied, the consumer's
//! fallback is a `fence(SeqCst)` and the producer's compiler fence is nothing at all. A park
//! bounded by `UNACKED_PARK_LIMIT` is modelled as one that times out at once (the consumer
//! yields and looks again), so an unbounded sleep is the only way to lose a wake-up, and loom
//! checks that the protocol sleeps unbounded only when no publish can miss it.

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use crate::layout::ControlBlock;
use crate::protocol::{Park, PublishFence};

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
/// finds the lost wake-up a plain-store unpark causes and each deliberate bug in the README,
/// and is what CI runs (all 8 models in about 30 s; 4 takes 250-340 s); unbounded does not
/// finish in 5 minutes.
const PREEMPTION_BOUND: usize = 4;

/// One configuration of the fences.
#[derive(Clone, Copy)]
struct Fences {
    /// Whether the modelled membarrier call succeeds.
    works: bool,
    /// What the consumer's attach probe found (`true` with `works == false`: the consumer
    /// loses the ability after attaching).
    probe: bool,
    /// Whether the producer process registered (it asks for `Light`).
    registered: bool,
    /// A second producer takes over after this many records (a restart), registered or not.
    restart: Option<(u64, bool)>,
}

impl Fences {
    const FAST: Self = Self {
        works: true,
        probe: true,
        registered: true,
        restart: None,
    };
}

struct Model {
    ctl: ControlBlock,
    slots: [UnsafeCell<u64>; CAP as usize],
    data_ready: EventFd,
    space_ready: EventFd,
}

impl Model {
    fn new(works: bool) -> Arc<Self> {
        Arc::new(Self {
            ctl: ControlBlock::new_for_model(works),
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            data_ready: EventFd::new(),
            space_ready: EventFd::new(),
        })
    }

    /// The producer of `producer.rs`, reduced to its protocol steps.
    fn produce(&self, items: u64, f: Fences) {
        let want = if f.registered {
            PublishFence::Light
        } else {
            PublishFence::Full
        };
        let mut fence = self.ctl.producer_attach_fence(want);
        let (mut head, mut tail_seen) = (0u64, 0u64);
        for v in 0..items {
            if let Some((after, registered)) = f.restart
                && after == v
            {
                // A new producer claims the ring (its claim synchronises with the old one, as
                // program order does here) and attaches afresh; the dead one's mode is gone.
                let want = if registered {
                    PublishFence::Light
                } else {
                    PublishFence::Full
                };
                fence = self.ctl.producer_attach_fence(want);
            }
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
            if self.ctl.publish(head, &mut fence) {
                self.data_ready.notify();
            }
        }
    }

    /// The consumer of `consumer.rs`, reduced to its protocol steps. `give_up_once` makes the
    /// first park end as a timeout would: without sleeping, then parking again.
    fn consume(&self, items: u64, give_up_once: bool, f: Fences) -> Vec<u64> {
        let mut membarrier = f.probe;
        self.ctl.consumer_attach_fence(membarrier);
        let (mut tail, mut out, mut gave_up) = (0u64, Vec::new(), !give_up_once);
        while tail < items {
            let head = self.ctl.head_for_consumer();
            if head == tail {
                match self.ctl.consumer_prepare_park(tail, &mut membarrier) {
                    Park::Ready => {}
                    Park::Sleep => {
                        if gave_up {
                            self.data_ready.wait();
                        }
                        gave_up = true;
                        self.ctl.consumer_unpark();
                    }
                    Park::SleepBounded => {
                        // The bound passed at once; a wake-up may also have come.
                        thread::yield_now();
                        self.ctl.consumer_unpark();
                    }
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

fn run(items: u64, give_up_once: bool, f: Fences) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(PREEMPTION_BOUND);
    }
    builder.check(move || {
        let m = Model::new(f.works);
        let p = {
            let m = Arc::clone(&m);
            thread::spawn(move || m.produce(items, f))
        };
        let got = m.consume(items, give_up_once, f);
        p.join().unwrap();
        let want: Vec<u64> = (0..items).map(|v| 100 + v).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn loom_parked_consumer_is_always_woken() {
    run(3, false, Fences::FAST);
}

#[test]
fn loom_consumer_that_gave_up_waiting_is_still_woken() {
    run(3, true, Fences::FAST);
}

#[test]
fn loom_producer_waiting_for_space_is_always_woken() {
    // Four records through two slots: the producer must park at least once on most schedules.
    run(4, false, Fences::FAST);
}

#[test]
fn loom_unregistered_producer_with_full_fence_wakes_consumer() {
    let f = Fences {
        registered: false,
        ..Fences::FAST
    };
    run(3, false, f);
}

#[test]
fn loom_consumer_without_membarrier_is_woken_by_light_producer() {
    // The producer asks for Light; the consumer's attach and the producer's may come in either
    // order, and the producer must switch to Full and acknowledge before the consumer sleeps.
    let f = Fences {
        works: false,
        probe: false,
        ..Fences::FAST
    };
    run(3, false, f);
}

#[test]
fn loom_consumer_without_membarrier_and_unregistered_producer() {
    let f = Fences {
        works: false,
        probe: false,
        registered: false,
        restart: None,
    };
    run(3, false, f);
}

#[test]
fn loom_consumer_that_loses_membarrier_after_attach_is_woken() {
    let f = Fences {
        works: false,
        ..Fences::FAST
    };
    run(3, false, f);
}

#[test]
fn loom_restarted_producer_does_not_inherit_the_acknowledgement() {
    // The first producer is unregistered and so sets FENCED at attach; the second registered
    // one must clear it, or a consumer without membarrier that attaches meanwhile would sleep
    // unbounded on the dead producer's word while the new one publishes Light.
    let f = Fences {
        works: false,
        probe: false,
        registered: false,
        restart: Some((1, true)),
    };
    run(3, false, f);
}
