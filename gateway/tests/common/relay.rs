//! A TCP relay in front of the broker that can make it unreachable for the gateway alone:
//! `set_down(true)` cuts every relayed connection and refuses new ones (accepted, then closed
//! at once), `set_down(false)` relays again. Subscribers connect to the broker directly and
//! stay connected, so an outage never depends on the broker's offline queues.
//!
//! Include with `#[path = "common/relay.rs"] mod relay;` (needs a tokio runtime).
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The relay: listens on a free loopback port and forwards to `127.0.0.1:target`.
pub struct Relay {
    /// The port the gateway connects to.
    pub port: u16,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying to `target`; `down` says whether it starts cut off.
    pub async fn start(target: u16, down: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(down));
        let (cut, cuts) = watch::channel(0u64);
        let is_down = Arc::clone(&down);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut broker) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), broker.set_nodelay(true));
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            down,
            cut,
            task,
        }
    }

    /// Cuts the gateway off (every connection closed, new ones refused), or lets it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
