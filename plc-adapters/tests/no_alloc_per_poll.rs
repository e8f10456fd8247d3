//! Steady-state polling adds no allocation of the adapter's own.
//!
//! A counting global allocator (stats_alloc) watches this test process; the PLC is a pymodbus
//! server in another process, so only the adapter's allocations are counted. The test first
//! measures what a bare tokio-modbus read costs (its `async_trait` client boxes the request
//! future, and a read answers with a fresh `Vec`), then runs the full poller — plan walking,
//! decoding, report-by-exception and emission into a real shared-memory ring, every tag
//! re-emitted each poll through a 1 ms heartbeat — and checks that a poll costs exactly what
//! its tokio-modbus reads cost: nothing more per poll, and no growth of live memory.
//! It is the only test in this binary, so no other test thread allocates meanwhile.

mod support;

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use edgegw_plc::modbus::{LinkCounters, run_link};
use edgegw_plc::{AdapterConfig, Emitter, FullPolicy};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio_modbus::client::Reader;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const U16_TAGS: u32 = 100;
const F32_TAGS: u32 = 50;

fn spec() -> serde_json::Value {
    let mut holding = Vec::new();
    for i in 0..U16_TAGS {
        holding.push(json!({"address": i, "type": "uint16", "value": i * 7}));
    }
    for i in 0..F32_TAGS {
        holding.push(
            json!({"address": U16_TAGS + 2 * i, "type": "float32", "value": f64::from(i) * 0.5}),
        );
    }
    json!({"holding_size": U16_TAGS + 2 * F32_TAGS, "holding": holding})
}

fn config(port: u16) -> AdapterConfig {
    let mut text = format!(
        "[[devices]]\nname = \"d\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\n\
         [[devices.groups]]\nname = \"g\"\ninterval_ms = 2\n"
    );
    for i in 0..U16_TAGS {
        text += &format!(
            "[[devices.groups.tags]]\nname = \"u{i}\"\ntable = \"holding-register\"\naddress = {i}\ntype = \"u16\"\nmax_interval_ms = 1\n"
        );
    }
    for i in 0..F32_TAGS {
        text += &format!(
            "[[devices.groups.tags]]\nname = \"f{i}\"\ntable = \"holding-register\"\naddress = {}\ntype = \"f32\"\nmax_interval_ms = 1\n",
            U16_TAGS + 2 * i
        );
    }
    toml::from_str(&text).unwrap()
}

#[test]
fn steady_state_polling_allocates_only_what_tokio_modbus_reads_allocate() {
    let peer = edgegw_tests::pymodbus::PyModbus::tcp(&spec(), 0);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", peer.port()).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // 1. What one bare tokio-modbus read of 125 registers allocates.
    let per_bare_read = rt.block_on(async {
        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(1))
            .await
            .unwrap();
        for _ in 0..50 {
            ctx.read_holding_registers(0, 125).await.unwrap().unwrap();
        }
        let n = 200u64;
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(1), ctx.read_holding_registers(0, 125))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let c = region.change();
        (c.allocations + c.reallocations) as f64 / n as f64
    });

    // 2. The whole poller, emitting every tag every poll into a real ring.
    let link = config(peer.port()).resolve().unwrap().links.remove(0);
    let reads_per_poll = link.devices[0].groups[0].reads.len() as u64;
    assert_eq!(reads_per_poll, 2, "{link}");
    let (producer, mut consumer) = support::ring(1 << 17);
    let counters = Arc::new(LinkCounters::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let (change, requests, emitted) = rt.block_on(async {
        let task = {
            let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut emitter = Emitter::new(producer, FullPolicy::default());
                run_link(&link, &mut emitter, &counters, stop.notified()).await;
                emitter.stats()
            })
        };
        let wait_polls = |n: u64| {
            let counters = Arc::clone(&counters);
            async move {
                while counters.polls.load(Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        wait_polls(20).await; // connected, filters primed, buffers grown
        let requests_before = counters.requests.load(Relaxed);
        let region = Region::new(GLOBAL);
        wait_polls(220).await;
        let change = region.change();
        let requests = counters.requests.load(Relaxed) - requests_before;
        stop.notify_one();
        let stats = task.await.unwrap();
        (change, requests, stats.emitted)
    });
    let mut records = Vec::new();
    support::drain(&mut consumer, &mut records);
    assert_eq!(emitted as usize, records.len());
    assert!(
        records.len() as u64 >= 200 * u64::from(U16_TAGS + F32_TAGS),
        "every tag was emitted on every poll (heartbeat): {} records",
        records.len()
    );

    let per_request = (change.allocations + change.reallocations) as f64 / requests as f64;
    println!(
        "bare tokio-modbus read: {per_bare_read:.2} allocations; poller: {per_request:.2} allocations per request \
         ({requests} requests, {change:?})"
    );
    assert!(
        per_request <= per_bare_read + 0.05,
        "the poller allocates {per_request:.2} per request, a bare tokio-modbus read {per_bare_read:.2}: \
         the difference is the adapter's own per-poll allocation"
    );
    let live_growth = change.bytes_allocated as i64 + change.bytes_reallocated as i64
        - change.bytes_deallocated as i64;
    assert!(
        live_growth.abs() < 64 * 1024,
        "live heap changed by {live_growth} bytes over {requests} requests"
    );
}
