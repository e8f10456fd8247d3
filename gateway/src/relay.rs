//! A TCP relay in front of a broker that can make it unreachable: `set_down(true)` cuts every
//! relayed connection and refuses new ones (accepted, then closed at once), `set_down(false)`
//! relays again. The demo routes the gateway's MQTT connection through one to stage its broker
//! outage; the integration tests use it the same way, while their subscribers connect to the
//! broker directly and stay connected, so an outage never depends on the broker's offline
//! queues.
//!
//! Memory is bounded by the connections: each relayed connection holds two sockets and
//! `copy_bidirectional`'s two buffers, and lives until either side closes or a cut ends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The relay: listens on a free loopback port and forwards to `127.0.0.1:target`. Dropping it
/// stops accepting; connections already relayed end at the next cut or when a side closes.
pub struct Relay {
    /// The port the gateway connects to.
    pub port: u16,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("port", &self.port)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Starts relaying to `target` (needs a tokio runtime); `down` says whether it starts cut
    /// off.
    pub async fn start(target: u16, down: bool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let down = Arc::new(AtomicBool::new(down));
        let (cut, cuts) = watch::channel(0u64);
        let is_down = Arc::clone(&down);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                // Relaxed: a flag with no data behind it; a connection accepted just as it
                // flips is cut by the `cuts` change that follows the store.
                if is_down.load(Ordering::Relaxed) {
                    continue; // dropped: the connection is closed at once
                }
                let mut cuts = cuts.clone();
                // Only cuts after this connection was accepted end it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut broker) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    // Small MQTT packets: no Nagle delay on either hop.
                    let _ = (client.set_nodelay(true), broker.set_nodelay(true));
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            port,
            down,
            cut,
            task,
        })
    }

    /// Cuts every connection and refuses new ones (`true`), or relays again (`false`).
    pub fn set_down(&self, down: bool) {
        // Relaxed: see the load in the accept loop.
        self.down.store(down, Ordering::Relaxed);
        if down {
            self.cut.send_modify(|n| *n += 1);
        }
    }

    /// Whether the relay is cut off.
    pub fn is_down(&self) -> bool {
        // Relaxed: see the load in the accept loop.
        self.down.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
