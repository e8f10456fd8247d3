//! A Modbus TCP slave simulator for demos and manual tests: counters and f32 sines in holding
//! registers that change every 100 ms.
//!
//! ```text
//! cargo run -p edgegw-plc --example modbus_sim -- [LISTEN_ADDR] [N_U16] [N_F32]
//! cargo run -p edgegw-plc --example modbus_sim -- 127.0.0.1:5020 500 500
//! ```
//! Holding registers `0..N_U16` are u16 counters; from `N_U16` on, `N_F32` f32 (ABCD) sines.
//! Runs until Ctrl-C.

use edgegw_plc::sim::{ModbusSim, SimSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5020".into());
    let n_u16: u16 = args.next().map_or(10, |v| v.parse().expect("N_U16"));
    let n_f32: u16 = args.next().map_or(10, |v| v.parse().expect("N_F32"));
    let addr = addr.parse().expect("LISTEN_ADDR as ip:port");
    let sim = ModbusSim::start(addr, SimSpec::bench_device(n_u16, n_f32)).await?;
    println!(
        "Modbus TCP simulator on {}: holding registers 0..{n_u16} u16 counters, {n_u16}..{} f32 sines",
        sim.local_addr(),
        u32::from(n_u16) + 2 * u32::from(n_f32)
    );
    tokio::signal::ctrl_c().await?;
    sim.stop().await;
    Ok(())
}
