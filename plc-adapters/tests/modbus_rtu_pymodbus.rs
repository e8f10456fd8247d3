//! The Modbus RTU adapter on a serial line: a socat pty pair, pymodbus's serial server on one
//! end, the adapter on the other, several unit ids on the one line.

mod support;

use std::time::Duration;

use edgegw_plc::{AdapterConfig, BadReason, Quality};
use edgegw_ringbuf::Value;
use edgegw_tests::pymodbus::PyModbus;
use edgegw_tests::socat::PtyPair;
use serde_json::json;
use support::{Running, of_tag, quality};

fn rtu_device(name: &str, port: &str, unit: u8) -> String {
    format!(
        "[[devices]]\nname = \"{name}\"\nprotocol = \"modbus-rtu\"\nunit_id = {unit}\ntimeout_ms = 800\n\
         serial = {{ port = \"{port}\", baud = 19200 }}\n\
         [[devices.groups]]\nname = \"g\"\ninterval_ms = 100\n\
         [[devices.groups.tags]]\nname = \"temp\"\ntable = \"holding-register\"\naddress = 0\ntype = \"f32\"\norder = \"CDAB\"\n\
         [[devices.groups.tags]]\nname = \"count\"\ntable = \"input-register\"\naddress = 2\ntype = \"u32\"\n"
    )
}

#[tokio::test]
async fn units_on_one_serial_line_are_polled_and_a_silent_unit_only_times_out_itself() {
    let pty = PtyPair::start();
    let spec = json!({
        "units": [1, 2, 3],
        "silent_units": [3],
        "holding_size": 10,
        "input_size": 10,
        "holding": [{"address": 0, "type": "float32", "order": "CDAB", "value": 21.5}],
        "input": [{"address": 2, "type": "uint32", "value": 100_000}],
        "unit_specs": {
            "2": {
                "holding": [{"address": 0, "type": "float32", "order": "CDAB", "value": -7.25}],
                "input": [{"address": 2, "type": "uint32", "value": 200_000}],
            }
        },
    });
    let _peer = PyModbus::rtu(&spec, &pty.a);
    let text = [
        rtu_device("u1", &pty.b, 1),
        rtu_device("u2", &pty.b, 2),
        rtu_device("u3", &pty.b, 3),
    ]
    .concat();
    let cfg: AdapterConfig = toml::from_str(&text).unwrap();
    let resolved = cfg.resolve().unwrap();
    assert_eq!(resolved.links.len(), 1, "three units share one line task");
    let mut run = Running::start(resolved.links[0].clone());
    run.until(
        "values of units 1 and 2 and the timeout of unit 3",
        Duration::from_secs(30),
        |r| {
            (0..2).all(|src| (0..2).all(|tag| !of_tag(r, src, tag).is_empty()))
                && !of_tag(r, 2, 0).is_empty()
        },
    )
    .await;
    // Keep polling: unit 3 keeps timing out, units 1 and 2 keep answering.
    run.collect_for(Duration::from_millis(2000)).await;
    let stats = run.counters.snapshot();
    let (records, _) = run.stop().await;

    let last = |src, tag| *of_tag(&records, src, tag).last().unwrap();
    assert_eq!(last(0, 0).value(), Some(Value::F64(21.5)));
    assert_eq!(last(0, 1).value(), Some(Value::U64(100_000)));
    assert_eq!(last(1, 0).value(), Some(Value::F64(-7.25)));
    assert_eq!(last(1, 1).value(), Some(Value::U64(200_000)));
    for src in 0..2 {
        for tag in 0..2 {
            let recs = of_tag(&records, src, tag);
            assert_eq!(recs.len(), 1, "constant value reported once: {recs:#?}");
            assert_eq!(quality(&recs[0]), Quality::Good);
        }
    }
    for tag in 0..2 {
        let recs = of_tag(&records, 2, tag);
        assert_eq!(recs.len(), 1, "silent unit reported bad once: {recs:#?}");
        assert_eq!(quality(&recs[0]), Quality::Bad(BadReason::Timeout));
    }
    assert!(
        stats.timeouts >= 2,
        "unit 3 timed out on every poll: {stats:?}"
    );
    assert_eq!(
        stats.connects, 1,
        "a unit's timeout does not reopen the line: {stats:?}"
    );
}
