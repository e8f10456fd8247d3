//! End to end against real peers: a pymodbus server plays the PLC (values encoded by pymodbus,
//! not by this project), `edge-gateway run --config FILE` polls it through its adapter
//! process, and a subscriber on a real mosquitto checks every value, quality and timestamp as
//! any consumer of the payload would see it.

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgegw_tests::pymodbus::{NumericCase, PyModbus, numeric_cases};
use gateway::{GatewayProcess, Record, Seen, collect_until};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions};
use serde_json::{Value, json};

/// What a tag must arrive as.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    I64(i64),
    U64(u64),
    /// Exactly this float.
    F64(f64),
    /// A float within this tolerance (a computed engineering value, or a 17-digit float
    /// that serde_json's default parser may read 1 ulp off).
    Near(f64, f64),
    Bool(bool),
    Text(&'static str),
    /// Bad quality, reason `exception`, this Modbus exception code.
    Exception(u64),
}

struct Fixture {
    spec: Value,
    tags: String,
    want: Vec<(String, Want)>,
}

fn tag(name: &str, table: &str, address: u32, extra: &str) -> String {
    format!(
        "[[devices.groups.tags]]\nname = \"{name}\"\ntable = \"{table}\"\naddress = {address}\n{extra}\n"
    )
}

/// What a subscriber reads for one of the shared numeric cases. A 17-digit float may come
/// back 1 ulp off from serde_json's default parser, so f64 is compared with a tolerance.
fn arrives_as(case: &NumericCase) -> Want {
    let v = &case.value;
    match case.ours {
        "f64" => Want::Near(v.as_f64().expect("a float case"), 1e-15),
        "f32" => Want::F64(v.as_f64().expect("a float case")),
        t if t.starts_with('i') => Want::I64(v.as_i64().expect("an integer case")),
        _ => Want::U64(v.as_u64().expect("an unsigned case")),
    }
}

/// Every type the adapter decodes, in the default order (ABCD) and one word-swapped order
/// (CDAB, for the multi-register ones), plus strings, bits of a register, scale and offset,
/// input registers, coils, discrete inputs, and one address the device does not have.
fn fixture() -> Fixture {
    let mut holding = Vec::new();
    let mut tags = String::new();
    let mut want = Vec::new();
    let mut addr = 0u32;
    for case in numeric_cases() {
        let (py, ours, width, value) = (case.pymodbus, case.ours, case.width, &case.value);
        let expected = arrives_as(&case);
        let orders: &[&str] = if width == 1 {
            &["ABCD"]
        } else {
            &["ABCD", "CDAB"]
        };
        for order in orders {
            let name = format!("{ours}_{order}");
            holding.push(json!({"address": addr, "type": py, "order": order, "value": value}));
            tags += &tag(
                &name,
                "holding-register",
                addr,
                &format!("type = \"{ours}\"\norder = \"{order}\""),
            );
            want.push((name, expected.clone()));
            addr += width;
        }
    }
    // A string of 6 registers (12 bytes: two chunks in the ring).
    holding.push(json!({"address": addr, "type": "string", "value": "hello PLC", "length": 6}));
    tags += &tag(
        "text",
        "holding-register",
        addr,
        "type = \"string\"\nlength = 6",
    );
    want.push(("text".into(), Want::Text("hello PLC")));
    addr += 6;
    // One register with bits 2 and 13 set.
    holding.push(json!({"address": addr, "type": "raw", "value": [0b0010_0000_0000_0100]}));
    for (bit, on) in [(2, true), (3, false), (13, true)] {
        let name = format!("bit{bit}");
        tags += &tag(
            &name,
            "holding-register",
            addr,
            &format!("type = \"bool\"\nbit = {bit}"),
        );
        want.push((name, Want::Bool(on)));
    }
    addr += 1;
    // 650 counts at 0.1 per count, offset -40: 25.0 engineering units.
    holding.push(json!({"address": addr, "type": "uint16", "value": 650}));
    tags += &tag(
        "scaled",
        "holding-register",
        addr,
        "type = \"u16\"\nscale = 0.1\noffset = -40.0",
    );
    want.push(("scaled".into(), Want::Near(25.0, 1e-9)));
    let input = vec![
        json!({"address": 4, "type": "float32", "order": "CDAB", "value": 0.15625}),
        json!({"address": 8, "type": "int16", "value": -7}),
    ];
    tags += &tag(
        "input_f32",
        "input-register",
        4,
        "type = \"f32\"\norder = \"CDAB\"",
    );
    want.push(("input_f32".into(), Want::F64(0.15625)));
    tags += &tag("input_i16", "input-register", 8, "type = \"i16\"");
    want.push(("input_i16".into(), Want::I64(-7)));
    for (i, on) in [(0, true), (1, false), (2, true)] {
        let name = format!("coil{i}");
        tags += &tag(&name, "coil", i, "");
        want.push((name, Want::Bool(on)));
    }
    for (i, on) in [(0, false), (1, true)] {
        let name = format!("di{i}");
        tags += &tag(&name, "discrete-input", i, "");
        want.push((name, Want::Bool(on)));
    }
    // Past the end of the mapped holding registers: the device answers exception 2.
    tags += &tag("unmapped", "holding-register", 500, "type = \"u16\"");
    want.push(("unmapped".into(), Want::Exception(2)));
    let spec = json!({
        "units": [1],
        "holding_size": 200,
        "input_size": 10,
        "holding": holding,
        "input": input,
        "coils": [true, false, true, false],
        "discrete": [false, true],
    });
    Fixture { spec, tags, want }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Runs pymodbus, mosquitto and the gateway until every tag has arrived, stops the gateway
/// with SIGTERM, and returns what the subscriber saw with the time window of the run.
async fn run_fixture(fx: &Fixture) -> (Seen, u64, u64) {
    let peer = PyModbus::tcp(&fx.spec, 0);
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = Subscriber::start(broker.port, "edge-gateway/#", SubscriberOptions::default());
    sub.wait_subscribed(0, Duration::from_secs(10)).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[gateway]
name = "values"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {port}

[payload]
linger_ms = 20

[[devices]]
name = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:{plc}"
timeout_ms = 1000

[[devices.groups]]
name = "all"
interval_ms = 100
{tags}"#,
            port = broker.port,
            plc = peer.port(),
            tags = fx.tags
        ),
    )
    .unwrap();
    let started = now_ns();
    let mut gw = GatewayProcess::start(&config, &dir.path().join("gateway.log"));
    let mut seen = Seen::keeping_records();
    let names: Vec<&str> = fx.want.iter().map(|(n, _)| n.as_str()).collect();
    collect_until(
        &mut sub.rx,
        &mut seen,
        "every tag's value",
        Duration::from_secs(30),
        |s| {
            names
                .iter()
                .all(|n| s.records.iter().any(|r| r.json["tag"] == *n))
        },
    )
    .await;
    // A few more polls, so that values reported once (the exception) are seen not to repeat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::block_in_place(|| gw.sigterm_and_wait(Duration::from_secs(15)));
    assert!(status.success(), "gateway exit {status}:\n{}", gw.log());
    let stopped = now_ns();
    gateway::collect_until_quiet(
        &mut sub.rx,
        &mut seen,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    (seen, started, stopped)
}

fn check_value(name: &str, r: &Record, want: &Want) -> Result<(), String> {
    let v = &r.json["v"];
    let q = r.json["q"].as_str().unwrap_or("?");
    let ok = match want {
        Want::Exception(code) => {
            q == "bad"
                && r.json["reason"] == "exception"
                && r.json["code"].as_u64() == Some(*code)
                && v.is_null()
        }
        _ if q != "good" || r.json.get("reason").is_some() => false,
        Want::I64(x) => v.as_i64() == Some(*x),
        Want::U64(x) => v.as_u64() == Some(*x),
        Want::F64(x) => v.as_f64() == Some(*x),
        Want::Near(x, tol) => v.as_f64().is_some_and(|f| (f - x).abs() <= *tol),
        Want::Bool(x) => v.as_bool() == Some(*x),
        Want::Text(x) => v.as_str().map(|s| s.trim_end_matches('\0')) == Some(*x),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{name}: got {}, want {want:?}", r.json))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_modbus_type_from_pymodbus_arrives_through_mqtt_with_quality_and_timestamps() {
    let fx = fixture();
    let (seen, started, stopped) = run_fixture(&fx).await;

    let mut by_tag: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in &seen.records {
        by_tag
            .entry(r.json["tag"].as_str().expect("every tag is named"))
            .or_default()
            .push(r);
    }
    let mut wrong = Vec::new();
    for (name, want) in &fx.want {
        let records = by_tag.get(name.as_str()).map_or(&[][..], Vec::as_slice);
        if records.is_empty() {
            wrong.push(format!("{name}: never arrived"));
        }
        // Every report of the tag, not just the last, carries the right value.
        for r in records {
            if let Err(e) = check_value(name, r, want) {
                wrong.push(e);
            }
        }
    }
    assert!(wrong.is_empty(), "wrong values:\n{}", wrong.join("\n"));

    // Where each record came from, and when.
    let epochs = seen.epochs("plc");
    assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");
    assert!(
        epochs[0] >= started / 1_000_000_000 - 1,
        "the epoch is never below the Unix time in seconds: {}",
        epochs[0]
    );
    for r in &seen.records {
        assert_eq!(
            (r.source.as_str(), r.device.as_str(), r.group.as_str()),
            ("plc", "plc", "all")
        );
        assert_eq!(r.topic, "edge-gateway/values/plc/all");
        assert!(!r.replayed, "nothing was spooled: {:?}", r.json);
        let ts = r.json["ts"].as_u64().expect("ts in ns");
        assert!(
            (started..=stopped).contains(&ts),
            "{}: source timestamp {ts} outside the run [{started}, {stopped}]",
            r.json["tag"]
        );
    }
    // One poll's records share one timestamp (the device's answer), and later polls are later.
    for (name, records) in &by_tag {
        let ts: Vec<u64> = records
            .iter()
            .map(|r| r.json["ts"].as_u64().unwrap())
            .collect();
        assert!(ts.is_sorted(), "{name}: timestamps go back: {ts:?}");
    }

    // Completeness over seq: every seq from 0 arrived. The 12-byte string took two ring
    // records (two seqs) and arrives as one JSON record that covers both (`seq_last`).
    assert_eq!(seen.duplicates, 0, "no reconnect, no duplicate");
    assert!(
        by_tag["text"]
            .iter()
            .all(|r| r.json["seq_last"].as_u64() == Some(r.seq + 1)),
        "the string covers its two chunks' seqs: {:?}",
        by_tag["text"].iter().map(|r| &r.json).collect::<Vec<_>>()
    );
    let missing = seen.missing("plc", epochs[0]);
    assert!(missing.is_empty(), "seqs missing: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_modbus_address_arrives_as_bad_quality_with_exception_code_2() {
    let fx = fixture();
    let (seen, started, stopped) = run_fixture(&fx).await;
    let unmapped: Vec<&Record> = seen
        .records
        .iter()
        .filter(|r| r.json["tag"] == "unmapped")
        .collect();
    assert_eq!(
        unmapped.len(),
        1,
        "an unchanged bad value is reported once, not on every poll: {unmapped:?}"
    );
    let r = &unmapped[0].json;
    assert_eq!(r["q"], "bad", "{r}");
    assert_eq!(r["reason"], "exception", "{r}");
    assert_eq!(r["code"], 2, "ILLEGAL DATA ADDRESS: {r}");
    assert!(r["v"].is_null(), "no value with bad quality: {r}");
    let ts = r["ts"].as_u64().unwrap();
    assert!((started..=stopped).contains(&ts), "{r}");
    // The exception is the device's answer, not a transport failure: the other reads of the
    // same device stayed good throughout.
    let bad_others: Vec<&Value> = seen
        .records
        .iter()
        .filter(|r| r.json["tag"] != "unmapped" && r.json["q"] != "good")
        .map(|r| &r.json)
        .collect();
    assert!(bad_others.is_empty(), "{bad_others:?}");
}
