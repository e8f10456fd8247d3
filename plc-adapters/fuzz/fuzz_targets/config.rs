//! Whatever bytes arrive as configuration: parsing, validation, resolution, planning and
//! printing the plan never panic, and a resolved plan respects the Modbus limits.
#![no_main]

use edgegw_plc::AdapterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = toml::from_str::<AdapterConfig>(text) else { return };
    match cfg.resolve() {
        Ok(resolved) => {
            let _ = resolved.to_string();
            for link in &resolved.links {
                for d in &link.devices {
                    for g in &d.groups {
                        for r in &g.reads {
                            assert!(r.quantity >= 1 && r.quantity <= r.table.max_quantity());
                            assert!(u32::from(r.address) + u32::from(r.quantity) <= 65536);
                        }
                    }
                }
            }
        }
        Err(e) => assert!(!e.problems.is_empty()),
    }
});
