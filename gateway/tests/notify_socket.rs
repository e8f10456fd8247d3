//! `edge-gateway run` under a stand-in for systemd: a Unix datagram socket the test binds and
//! names in `NOTIFY_SOCKET`, with `WATCHDOG_USEC` set, against a real mosquitto. Checks the
//! messages and their order across start, reload (SIGHUP) and stop, that adapter children
//! cannot notify, that a stopped adapter (SIGSTOP) withholds the pings, and that a forwarder
//! that really stalls (its spool write blocked by another process's exclusive lock while the
//! broker is down) stops the watchdog pings until it moves again.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "common/notify.rs"]
mod notify;
use common::{Mosquitto, free_port};
use notify::NotifySocket;

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");
/// The watchdog interval the test hands the gateway: pings every second.
const WATCHDOG: Duration = Duration::from_secs(2);

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
name = "notify-test"
state_dir = "{state}"
shutdown_timeout_ms = 4000

[mqtt]
host = "127.0.0.1"
port = {port}
backoff_min_ms = 100
backoff_max_ms = 500

[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "a", signal = "counter", rate_hz = 200.0 }},
]
"#,
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Child processes of `pid` (every thread's `children` file).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
    }
    out
}

#[test]
fn notify_messages_in_order_and_a_stalled_forwarder_stops_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let heard = NotifySocket::listen(&socket_path);
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port);
    let path = config(dir.path(), port);
    let log_path = dir.path().join("gateway.log");

    let mut gateway = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    // Start: READY=1 (with a status) comes first.
    let ready = heard.wait_for("READY=1", Duration::from_secs(30), |m| {
        m.lines().any(|l| l == "READY=1")
    });
    assert_eq!(
        ready,
        0,
        "READY=1 is the first message: {:#?}",
        heard.texts()
    );
    assert!(
        heard.texts()[0].contains("STATUS="),
        "READY=1 carries a status: {:?}",
        heard.texts()[0]
    );
    heard.wait_for(
        "STATUS= with the broker connected and the spool depth",
        Duration::from_secs(20),
        |m| m.contains("STATUS=broker connected; spool 0 batches / 0 records; 1 sources"),
    );
    let start = Instant::now();
    while heard.pings().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no steady watchdog pings: {:#?}",
            heard.texts()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Adapter children cannot notify: their environment has no NOTIFY_SOCKET nor watchdog.
    let kids = children(gateway.id());
    assert!(!kids.is_empty(), "the adapter process runs");
    for kid in kids {
        let env = std::fs::read(format!("/proc/{kid}/environ")).unwrap();
        for var in env.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            assert!(
                !var.starts_with("NOTIFY_SOCKET=") && !var.starts_with("WATCHDOG_"),
                "adapter {kid} inherited {var}"
            );
        }
    }

    // Reload by SIGHUP (the file is unchanged, so nothing restarts): RELOADING=1 with
    // MONOTONIC_USEC= in one datagram, then READY=1.
    let from = heard.len();
    signal(&gateway, nix::sys::signal::Signal::SIGHUP);
    let reloading = heard.wait_for_from(from, "RELOADING=1", Duration::from_secs(20), |m| {
        m.lines().any(|l| l == "RELOADING=1")
    });
    let text = &heard.texts()[reloading];
    let usec: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("MONOTONIC_USEC= in the same datagram: {text:?}"))
        .parse()
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000;
    assert!(
        usec <= now_usec,
        "MONOTONIC_USEC is CLOCK_MONOTONIC: {usec} > {now_usec}"
    );
    heard.wait_for_from(
        reloading + 1,
        "READY=1 after the reload",
        Duration::from_secs(20),
        |m| m.lines().any(|l| l == "READY=1"),
    );
    assert!(
        !heard.texts()[from..reloading]
            .iter()
            .any(|m| m.contains("READY=1")),
        "no READY=1 between SIGHUP and RELOADING=1"
    );

    // A stopped adapter (SIGSTOP: stopped, not idle) withholds the pings too; SIGCONT resumes.
    let kid = *children(gateway.id()).first().expect("the adapter process");
    let kid_pid = nix::unistd::Pid::from_raw(kid as i32);
    nix::sys::signal::kill(kid_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(WATCHDOG); // the watchdog sees it stopped at two checks
    let stopped_from = heard.pings().len();
    std::thread::sleep(WATCHDOG * 2);
    let during_stop = heard.pings().len() - stopped_from;
    nix::sys::signal::kill(kid_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        during_stop == 0,
        "{during_stop} pings while the adapter was stopped"
    );
    let start = Instant::now();
    while heard.pings().len() < stopped_from + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pings did not resume after SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A real stall: the broker goes away, so the forwarder spills to the spool, and another
    // process holds the spool's write lock, so every spool write blocks (SQLite busy timeout).
    // The dispatch loop stops turning; the pings must stop with it.
    let spool = dir.path().join("state/spool.db");
    let lock = rusqlite::Connection::open(&spool).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    broker.stop();
    heard.wait_for(
        "STATUS= broker disconnected",
        Duration::from_secs(20),
        |m| m.contains("STATUS=broker disconnected"),
    );
    let stall_from = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let stall_to = Instant::now();
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let during: Vec<Instant> = heard
        .pings()
        .into_iter()
        .filter(|t| *t > stall_from && *t < stall_to)
        .collect();
    // Healthy, it would have pinged about 8 times; blocked, the loop turns once per 5 s busy
    // timeout at most, so at most one check in five sees progress.
    assert!(
        during.len() <= 3,
        "pings went on while the forwarder was blocked: {} in 8 s",
        during.len()
    );
    let mut edges = vec![stall_from];
    edges.extend(&during);
    edges.push(stall_to);
    let longest = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest >= WATCHDOG,
        "a gap of at least the watchdog interval: longest {longest:?}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("no progress: watchdog pings withheld")
            && log.contains("the dispatch loop did not turn"),
        "the gateway says why it withholds the pings: {log}"
    );
    // Moving again: pings resume.
    let resumed_from = heard.pings().len();
    let start = Instant::now();
    while heard.pings().len() < resumed_from + 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pings did not resume after the lock was released"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let from = heard.len();
    broker.restart();
    heard.wait_for_from(
        from,
        "STATUS= broker connected again",
        Duration::from_secs(20),
        |m| m.contains("STATUS=broker connected"),
    );

    // Stop: STOPPING=1 with a timeout extension, after every READY=1, then a clean exit.
    signal(&gateway, nix::sys::signal::Signal::SIGTERM);
    let status = common::wait_exit(
        &mut gateway,
        Duration::from_secs(20),
        "no exit after SIGTERM",
    );
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_millis(300));
    let texts = heard.texts();
    let stopping = texts
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1: {texts:#?}"));
    assert!(
        texts[stopping].contains("EXTEND_TIMEOUT_USEC="),
        "{:?}",
        texts[stopping]
    );
    let last_ready = texts
        .iter()
        .rposition(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap();
    assert!(last_ready < stopping, "{texts:#?}");
    assert!(
        !texts[stopping + 1..]
            .iter()
            .any(|m| m.contains("READY=1") || m.contains("RELOADING=1")),
        "nothing but status and timeouts after STOPPING=1: {texts:#?}"
    );
}
