//! The Modbus TCP adapter against a real pymodbus server playing the PLC.
//!
//! Every value is encoded by pymodbus itself (tests/peers/pymodbus_peer.py), so decoding is
//! checked against an independent implementation, not against our own encoder.

mod support;

use std::time::Duration;

use edgegw_plc::modbus::ModbusLink;
use edgegw_plc::{AdapterConfig, BadReason, Quality};
use edgegw_ringbuf::{TelemetryRecord, Value};
use edgegw_tests::pymodbus::{NumericCase, PyModbus, numeric_cases};
use serde_json::json;
use support::{Running, of_tag, quality};

const ORDERS: [&str; 4] = ["ABCD", "BADC", "CDAB", "DCBA"];

/// What a correct decoder reads for one of the shared numeric cases.
fn decoded(case: &NumericCase) -> Value {
    let v = &case.value;
    match case.ours.as_bytes()[0] {
        b'i' => Value::I64(v.as_i64().expect("an integer case")),
        b'u' => Value::U64(v.as_u64().expect("an unsigned case")),
        _ => Value::F64(v.as_f64().expect("a float case")),
    }
}

struct Fixture {
    spec: serde_json::Value,
    tags_toml: String,
    /// tag name -> expected value (tag ids follow configuration order)
    expected: Vec<(String, Expected)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Scalar(Value),
    Text(&'static str),
    Exception(u8),
}

fn tag_toml(name: &str, table: &str, address: u32, extra: &str) -> String {
    format!(
        "[[devices.groups.tags]]\nname = \"{name}\"\ntable = \"{table}\"\naddress = {address}\n{extra}\n"
    )
}

fn fixture() -> Fixture {
    let mut holding = Vec::new();
    let mut tags = String::new();
    let mut expected = Vec::new();
    let mut addr = 0u32;
    for case in numeric_cases() {
        let (py, ours, width, value) = (case.pymodbus, case.ours, case.width, &case.value);
        let want = decoded(&case);
        for order in ORDERS {
            let name = format!("{ours}_{order}");
            holding.push(json!({"address": addr, "type": py, "order": order, "value": value}));
            tags += &tag_toml(
                &name,
                "holding-register",
                addr,
                &format!("type = \"{ours}\"\norder = \"{order}\""),
            );
            expected.push((name, Expected::Scalar(want)));
            addr += width;
        }
    }
    for order in ["ABCD", "BADC"] {
        let name = format!("text_{order}");
        holding.push(json!({"address": addr, "type": "string", "order": order, "value": "hello PLC", "length": 6}));
        tags += &tag_toml(
            &name,
            "holding-register",
            addr,
            &format!("type = \"string\"\nlength = 6\norder = \"{order}\""),
        );
        expected.push((name, Expected::Text("hello PLC")));
        addr += 6;
    }
    // One register with bits 2 and 13 set.
    holding.push(json!({"address": addr, "type": "raw", "value": [0b0010_0000_0000_0100]}));
    for (bit, on) in [(2, true), (3, false), (13, true)] {
        let name = format!("bit{bit}");
        tags += &tag_toml(
            &name,
            "holding-register",
            addr,
            &format!("type = \"bool\"\nbit = {bit}"),
        );
        expected.push((name, Expected::Scalar(Value::Bool(on))));
    }
    addr += 1;
    // A raw count of 650 at 0.1 units per count, -40 offset: 25.0 engineering units.
    holding.push(json!({"address": addr, "type": "uint16", "value": 650}));
    tags += &tag_toml(
        "scaled",
        "holding-register",
        addr,
        "type = \"u16\"\nscale = 0.1\noffset = -40.0",
    );
    expected.push((
        "scaled".into(),
        Expected::Scalar(Value::F64(650.0f64.mul_add(0.1, -40.0))),
    ));
    // Input registers, coils, discrete inputs.
    let input = vec![json!({"address": 4, "type": "float32", "order": "CDAB", "value": 0.15625})];
    tags += &tag_toml(
        "input_f32",
        "input-register",
        4,
        "type = \"f32\"\norder = \"CDAB\"",
    );
    expected.push(("input_f32".into(), Expected::Scalar(Value::F64(0.15625))));
    for (i, on) in [(0, true), (1, false), (2, true)] {
        let name = format!("coil{i}");
        tags += &tag_toml(&name, "coil", i, "");
        expected.push((name, Expected::Scalar(Value::Bool(on))));
    }
    for (i, on) in [(0, false), (1, true)] {
        let name = format!("di{i}");
        tags += &tag_toml(&name, "discrete-input", i, "");
        expected.push((name, Expected::Scalar(Value::Bool(on))));
    }
    // Past the end of the mapped holding registers: the device answers exception 2.
    tags += &tag_toml("unmapped", "holding-register", 500, "type = \"u16\"");
    expected.push(("unmapped".into(), Expected::Exception(2)));
    let spec = json!({
        "units": [1],
        "holding_size": 200,
        "input_size": 10,
        "holding": holding,
        "input": input,
        "coils": [true, false, true, false],
        "discrete": [false, true],
    });
    Fixture {
        spec,
        tags_toml: tags,
        expected,
    }
}

/// The link under test. The request timeout is generous: these tests are about values and
/// quality codes, and a shared CI machine can stall pymodbus for longer than a PLC would take.
fn link(port: u16, tags_toml: &str) -> ModbusLink {
    let text = format!(
        "[[devices]]\nname = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 1\n\
         timeout_ms = 5000\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n\
         [[devices.groups]]\nname = \"all\"\ninterval_ms = 50\n{tags_toml}"
    );
    let cfg: AdapterConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut resolved = cfg.resolve().unwrap_or_else(|e| panic!("{e}"));
    resolved.links.remove(0)
}

fn observed(records: &[TelemetryRecord], tag_id: u32) -> Expected {
    let recs = of_tag(records, 0, tag_id);
    let last = recs.last().expect("a record");
    match quality(last) {
        Quality::Bad(BadReason::DeviceException(code)) => Expected::Exception(code),
        Quality::Good if last.kind == edgegw_ringbuf::ValueKind::Str as u8 => {
            let text = support::last_text(&recs);
            Expected::Text(Box::leak(text.into_boxed_str()))
        }
        Quality::Good => Expected::Scalar(last.value().unwrap()),
        other => panic!("tag {tag_id}: unexpected quality {other}"),
    }
}

fn every_tag_reported(records: &[TelemetryRecord], n: usize) -> bool {
    (0..n as u32).all(|t| {
        records
            .iter()
            .any(|r| r.tag_id == t && r.flags & edgegw_ringbuf::flags::CONTINUED == 0)
    })
}

#[tokio::test]
async fn every_type_and_byte_order_matches_what_pymodbus_encodes() {
    let fx = fixture();
    let peer = PyModbus::tcp(&fx.spec, 0);
    let link = link(peer.port(), &fx.tags_toml);
    let n = fx.expected.len();
    let mut run = Running::start(link.clone());
    run.until("one record per tag", Duration::from_secs(20), |r| {
        every_tag_reported(r, n)
    })
    .await;
    let (records, _) = run.stop().await;
    let mut wrong = Vec::new();
    for (id, (name, want)) in fx.expected.iter().enumerate() {
        assert_eq!(link.devices[0].tags[id].name, *name);
        let got = observed(&records, id as u32);
        if got != *want {
            wrong.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "mismatches:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn illegal_address_reports_exception_code_2_and_other_reads_stay_good() {
    let fx = fixture();
    let peer = PyModbus::tcp(&fx.spec, 0);
    let link = link(peer.port(), &fx.tags_toml);
    let unmapped = fx
        .expected
        .iter()
        .position(|(n, _)| n == "unmapped")
        .unwrap() as u32;
    let mut run = Running::start(link);
    run.until("the unmapped tag's record", Duration::from_secs(20), |r| {
        of_tag(r, 0, unmapped).len() == 1
    })
    .await;
    // Several more polls: the exception is reported once, not every poll, and the connection
    // stays up (an exception is not a transport failure).
    run.collect_for(Duration::from_millis(300)).await;
    let (records, _) = run.stop().await;
    let recs = of_tag(&records, 0, unmapped);
    assert_eq!(recs.len(), 1, "reported once: {recs:#?}");
    assert_eq!(
        quality(&recs[0]),
        Quality::Bad(BadReason::DeviceException(2))
    );
    assert_eq!(
        (recs[0].quality, recs[0].detail),
        (0x8002, 2),
        "code and detail as documented"
    );
    assert_eq!(recs[0].value(), Some(Value::Empty));
    for t in 0..unmapped {
        let bad: Vec<_> = of_tag(&records, 0, t)
            .into_iter()
            .filter(|r| quality(r) != Quality::Good)
            .map(|r| quality(&r))
            .collect();
        assert!(bad.is_empty(), "tag {t} did not stay good: {bad:?}");
    }
}

#[tokio::test]
async fn killed_server_reports_bad_once_then_reconnects_and_reports_good() {
    let spec =
        json!({"holding_size": 10, "holding": [{"address": 0, "type": "uint16", "value": 42}]});
    let mut peer = PyModbus::tcp(&spec, 0);
    let port = peer.port();
    let link = link(
        port,
        &tag_toml("v", "holding-register", 0, "type = \"u16\""),
    );
    let mut run = Running::start(link);
    run.until("first good value", Duration::from_secs(20), |r| {
        !of_tag(r, 0, 0).is_empty()
    })
    .await;

    peer.kill();
    run.until("bad quality", Duration::from_secs(10), |r| {
        of_tag(r, 0, 0).len() >= 2
    })
    .await;
    // Stay down across many poll intervals and failed reconnects: no more records.
    run.collect_for(Duration::from_millis(800)).await;
    let down = of_tag(&run.records, 0, 0);
    assert_eq!(
        down.len(),
        2,
        "bad reported once while the device stays down: {down:#?}"
    );
    assert!(
        run.counters.snapshot().connect_failures >= 2,
        "{:?}",
        run.counters.snapshot()
    );

    let _peer = peer.restart_tcp(port);
    run.until("good again", Duration::from_secs(20), |r| {
        of_tag(r, 0, 0).len() >= 3
    })
    .await;
    run.collect_for(Duration::from_millis(200)).await;
    let (records, _) = run.stop().await;
    let qualities: Vec<Quality> = of_tag(&records, 0, 0).iter().map(quality).collect();
    assert_eq!(
        qualities,
        vec![
            Quality::Good,
            Quality::Bad(BadReason::Disconnected),
            Quality::Good
        ]
    );
    let values: Vec<_> = of_tag(&records, 0, 0)
        .iter()
        .map(|r| r.value().unwrap())
        .collect();
    assert_eq!(values, vec![Value::U64(42), Value::Empty, Value::U64(42)]);
    // Sequence numbers count emitted records: consecutive, no gaps.
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}
