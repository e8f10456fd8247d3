//! A real mosquitto for the MQTT sink's tests: free loopback port, configuration in a temporary
//! directory, start / SIGKILL / SIGTERM / restart on the same port, optional TLS (certificates
//! made with openssl) and password file, plus a rumqttc subscriber that re-subscribes after
//! every reconnect.
//!
//! Missing tools fail the test loudly with what to install; nothing is skipped.
//!
//! Include with `#[path = "common/mosquitto.rs"] mod mosquitto;`.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

/// What to install when a tool is missing.
pub const INSTALL: &str = "apt-get install -y mosquitto mosquitto-clients openssl";

/// How the broker is set up.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// TLS on the listener: CA, server certificate and key; `require_certificate` for mTLS.
    pub tls: Option<BrokerTls>,
    /// `(user, password)` pairs; when set, anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// Persistence in the temporary directory (saved on SIGTERM, lost on SIGKILL).
    pub persistence: bool,
}

/// TLS files of the broker's listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    /// CA that signs client certificates (and the server's).
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// Mutual TLS: clients must present a certificate signed by `ca`.
    pub require_client_cert: bool,
}

/// A mosquitto process on `127.0.0.1:port`; killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    conf: PathBuf,
    log: PathBuf,
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start(options: &BrokerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("mosquitto.log");
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             log_dest file {log}\n\
             log_type error\nlog_type warning\nlog_type notice\n\
             # Hand every message to a connected subscriber at once, never hold it back.\n\
             max_inflight_messages 0\nmax_queued_messages 0\nmax_queued_bytes 0\n",
            log = log.display()
        );
        if options.persistence {
            conf += &format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.path().display()
            );
        } else {
            conf += "persistence false\n";
        }
        if options.users.is_empty() {
            conf += "allow_anonymous true\n";
        } else {
            let file = dir.path().join("passwords");
            write_passwords(&file, &options.users);
            conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
        }
        if let Some(tls) = &options.tls {
            conf += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                tls.require_client_cert
            );
        }
        // Started as root, mosquitto would switch to the `mosquitto` user, which cannot read
        // the temporary directory.
        let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        if euid == 0 {
            conf += "user root\n";
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut m = Self {
            child: None,
            conf: conf_path,
            log,
            port,
            dir,
        };
        m.restart();
        m
    }

    /// Replaces the users and passwords (of a broker started with users). They take effect
    /// at the next [`Mosquitto::restart`].
    pub fn set_users(&mut self, users: &[(String, String)]) {
        assert!(!users.is_empty(), "a broker started with users keeps some");
        write_passwords(&self.dir.path().join("passwords"), users);
    }

    /// The temporary directory of this broker.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the broker with SIGKILL: no will is published for anyone, nothing is saved, and
    /// every client connection is cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto: {e}: {INSTALL}"));
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!(
                    "mosquitto exited at start ({status}): {stderr}\nlog: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The broker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes mosquitto's password file for `users` (replacing it).
fn write_passwords(file: &Path, users: &[(String, String)]) {
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            let _ = std::fs::remove_file(file);
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(file)
            .arg(user)
            .arg(password)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("mosquitto_passwd: {e}: {INSTALL}"));
        assert!(status.success(), "mosquitto_passwd failed: {status}");
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Certificates for a TLS test, made with openssl: a CA, a server certificate for
/// `127.0.0.1` / `localhost`, a client certificate, and an unrelated CA.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA (certificate).
    pub ca: PathBuf,
    /// Server certificate and key, signed by `ca`.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate and key, signed by `ca`.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

impl TestPki {
    /// Generates everything in `dir`.
    pub fn generate(dir: &Path) -> Self {
        let p = |name: &str| dir.join(name);
        let ca = |name: &str| {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                p(&format!("{name}.key")).to_str().unwrap(),
                "-out",
                p(&format!("{name}.pem")).to_str().unwrap(),
                "-days",
                "2",
                "-subj",
                &format!("/CN=edge-gateway test {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        };
        ca("ca");
        ca("other-ca");
        let leaf = |name: &str, ext: &str| {
            openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                p(&format!("{name}.key")).to_str().unwrap(),
                "-out",
                p(&format!("{name}.csr")).to_str().unwrap(),
                "-subj",
                &format!("/CN={name}"),
            ]);
            std::fs::write(p(&format!("{name}.ext")), ext).unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                p(&format!("{name}.csr")).to_str().unwrap(),
                "-CA",
                p("ca.pem").to_str().unwrap(),
                "-CAkey",
                p("ca.key").to_str().unwrap(),
                "-CAcreateserial",
                "-out",
                p(&format!("{name}.pem")).to_str().unwrap(),
                "-days",
                "2",
                "-extfile",
                p(&format!("{name}.ext")).to_str().unwrap(),
            ]);
        };
        leaf(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        );
        leaf(
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        );
        Self {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            other_ca: p("other-ca.pem"),
        }
    }

    /// The broker side of this PKI.
    pub fn broker(&self, require_client_cert: bool) -> BrokerTls {
        BrokerTls {
            ca: self.ca.clone(),
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            require_client_cert,
        }
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}: {INSTALL}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One message as the subscriber got it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retain flag as delivered (set for retained messages sent on subscribe).
    pub retain: bool,
}

/// A rumqttc subscriber to `filter` at QoS 1, re-subscribing after every reconnect.
pub struct Subscriber {
    /// Every message, in arrival order.
    pub rx: mpsc::UnboundedReceiver<Received>,
    /// Number of SUBACKs so far: a value above what it was before a broker restart means the
    /// subscription exists on the new broker process.
    pub subscribed: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// How the subscriber connects.
#[derive(Debug, Clone, Default)]
pub struct SubscriberOptions {
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// TLS client configuration.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// A persistent session under this client id (`clean_session = false`): with broker
    /// persistence, messages published while the subscriber is away are kept for it.
    pub persistent_id: Option<String>,
}

impl Subscriber {
    /// Connects (retrying every 50 ms while the broker is away) and subscribes.
    pub fn start(port: u16, filter: &str, options: SubscriberOptions) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "test-sub-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let persistent = options.persistent_id.is_some();
        let mut opts = MqttOptions::new(options.persistent_id.unwrap_or(id), "127.0.0.1", port);
        opts.set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 24, 1 << 24)
            .set_inflight(1000);
        if let Some((u, p)) = options.credentials {
            opts.set_credentials(u, p);
        }
        if let Some(tls) = options.tls {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subscribed) = watch::channel(0u64);
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe(filter.clone(), QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sub_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self {
            rx,
            subscribed,
            task,
        }
    }

    /// Waits (at most `within`) until the subscription count exceeds `after`.
    pub async fn wait_subscribed(&mut self, after: u64, within: Duration) {
        tokio::time::timeout(within, self.subscribed.wait_for(|n| *n > after))
            .await
            .unwrap_or_else(|_| panic!("subscriber not subscribed within {within:?}"))
            .unwrap();
    }

    /// The next message, within `within`.
    pub async fn next(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no message within {within:?}"))
            .unwrap()
    }

    /// The next message on `topic`, skipping others, within `within`.
    pub async fn next_on(&mut self, topic: &str, within: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic} within {within:?}"))
                .unwrap();
            if m.topic == topic {
                return m;
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
