//! A Modbus TCP slave simulator on tokio-modbus's server, with registers that change over time.
//!
//! Used by the tests, the gateway's demo and the benchmarks:
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use edgegw_plc::sim::{ModbusSim, SimSpec};
//! let sim = ModbusSim::start("127.0.0.1:0".parse().unwrap(), SimSpec::bench_device(500, 500)).await?;
//! println!("simulated PLC on {}", sim.local_addr());
//! sim.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Design constraints
//! - Tables are mapped from address 0 up to their configured size; a read past the end is
//!   answered with exception 2 (illegal data address), as a real device does.
//! - Signals are recomputed every `update_interval` from the time since start and encoded in
//!   their configured type and byte order, so values change between polls.
//! - Units not in `unit_ids` get no answer at all (like a silent device on a bus): the client
//!   times out. An optional `response_delay` makes every answer slow, for overrun tests.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::modbus::decode::encode_number;
use crate::sim::synthetic::SignalKind;
use crate::tag::{ByteOrder, DataType, Table};

/// A value that changes over time, written into the simulator's registers.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSignal {
    /// Table (registers for numbers, bits for `Bool`).
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Type the value is encoded as (`Bool` for bit tables).
    pub data_type: DataType,
    /// Byte order of the encoding.
    pub order: ByteOrder,
    /// Shape.
    pub signal: SignalKind,
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
    /// Period of ramp and sine.
    pub period: Duration,
}

/// What the simulator serves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// Holding registers mapped at 0..n.
    pub holding_registers: u16,
    /// Input registers mapped at 0..n.
    pub input_registers: u16,
    /// Coils mapped at 0..n.
    pub coils: u16,
    /// Discrete inputs mapped at 0..n.
    pub discrete_inputs: u16,
    /// Signals updated over time.
    pub signals: Vec<SimSignal>,
    /// How often signals are recomputed.
    pub update_interval: Duration,
    /// Delay before every answer.
    pub response_delay: Duration,
    /// Units that answer; empty = every unit.
    pub unit_ids: Vec<u8>,
}

impl Default for SimSpec {
    fn default() -> Self {
        Self {
            holding_registers: 1000,
            input_registers: 1000,
            coils: 1000,
            discrete_inputs: 1000,
            signals: Vec::new(),
            update_interval: Duration::from_millis(100),
            response_delay: Duration::ZERO,
            unit_ids: Vec::new(),
        }
    }
}

impl SimSpec {
    /// The benchmark device: `n_u16` counters at holding registers `0..n_u16`, then `n_f32`
    /// sines as f32 (ABCD) from `n_u16` on: `n_u16 + n_f32` points in `n_u16 + 2 * n_f32`
    /// registers, all changing every 100 ms.
    pub fn bench_device(n_u16: u16, n_f32: u16) -> Self {
        let mut signals = Vec::with_capacity(usize::from(n_u16) + usize::from(n_f32));
        for i in 0..n_u16 {
            signals.push(SimSignal {
                table: Table::HoldingRegister,
                address: i,
                data_type: DataType::U16,
                order: ByteOrder::ABCD,
                signal: SignalKind::Counter,
                min: 0.0,
                max: 65535.0,
                period: Duration::from_secs(10),
            });
        }
        for i in 0..n_f32 {
            signals.push(SimSignal {
                table: Table::HoldingRegister,
                address: n_u16 + 2 * i,
                data_type: DataType::F32,
                order: ByteOrder::ABCD,
                signal: SignalKind::Sine,
                min: -100.0,
                max: 100.0,
                period: Duration::from_millis(1000 + u64::from(i)),
            });
        }
        Self {
            holding_registers: n_u16 + 2 * n_f32,
            signals,
            ..Self::default()
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    holding: Vec<u16>,
    input: Vec<u16>,
    coils: Vec<bool>,
    discrete: Vec<bool>,
}

impl Store {
    fn apply(&mut self, s: &SimSignal, t: Duration, count: u64) {
        let period = s.period.as_secs_f64().max(1e-9);
        let phase = (t.as_secs_f64() % period) / period;
        let span = s.max - s.min;
        let value = match s.signal {
            SignalKind::Counter => (count as f64 + s.min) % (span + 1.0).max(1.0),
            SignalKind::Ramp => s.min + span * phase,
            SignalKind::Sine => s.min + span * 0.5 * (1.0 + (phase * std::f64::consts::TAU).sin()),
            SignalKind::Random => s.min + span * rand::random::<f64>(),
        };
        let addr = usize::from(s.address);
        match s.table {
            Table::Coil | Table::DiscreteInput => {
                let bits = if s.table == Table::Coil {
                    &mut self.coils
                } else {
                    &mut self.discrete
                };
                let on = match s.signal {
                    SignalKind::Counter => count % 2 == 1,
                    _ => value > s.min + span / 2.0,
                };
                if let Some(b) = bits.get_mut(addr) {
                    *b = on;
                }
            }
            Table::HoldingRegister | Table::InputRegister => {
                let regs = if s.table == Table::HoldingRegister {
                    &mut self.holding
                } else {
                    &mut self.input
                };
                let mut w = [0u16; 4];
                let n = encode_number(value, s.data_type, s.order, &mut w);
                if let Some(dst) = regs.get_mut(addr..addr + n) {
                    dst.copy_from_slice(&w[..n]);
                }
            }
        }
    }

    fn read_words(regs: &[u16], addr: u16, qty: u16) -> Result<Vec<u16>, ExceptionCode> {
        let (a, n) = (usize::from(addr), usize::from(qty));
        if n == 0 || n > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        regs.get(a..a + n)
            .map(<[u16]>::to_vec)
            .ok_or(ExceptionCode::IllegalDataAddress)
    }

    fn read_bits(bits: &[bool], addr: u16, qty: u16) -> Result<Vec<bool>, ExceptionCode> {
        let (a, n) = (usize::from(addr), usize::from(qty));
        if n == 0 || n > 2000 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        bits.get(a..a + n)
            .map(<[bool]>::to_vec)
            .ok_or(ExceptionCode::IllegalDataAddress)
    }

    fn handle(&mut self, req: Request<'_>) -> Result<Response, ExceptionCode> {
        fn write<T: Copy>(dst: &mut [T], addr: u16, src: &[T]) -> Result<(), ExceptionCode> {
            let a = usize::from(addr);
            dst.get_mut(a..a + src.len())
                .ok_or(ExceptionCode::IllegalDataAddress)?
                .copy_from_slice(src);
            Ok(())
        }
        Ok(match req {
            Request::ReadCoils(a, n) => Response::ReadCoils(Self::read_bits(&self.coils, a, n)?),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(Self::read_bits(&self.discrete, a, n)?)
            }
            Request::ReadHoldingRegisters(a, n) => {
                Response::ReadHoldingRegisters(Self::read_words(&self.holding, a, n)?)
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(Self::read_words(&self.input, a, n)?)
            }
            Request::WriteSingleRegister(a, w) => {
                write(&mut self.holding, a, &[w])?;
                Response::WriteSingleRegister(a, w)
            }
            Request::WriteMultipleRegisters(a, ws) => {
                write(&mut self.holding, a, &ws)?;
                Response::WriteMultipleRegisters(a, u16::try_from(ws.len()).unwrap_or(u16::MAX))
            }
            Request::WriteSingleCoil(a, c) => {
                write(&mut self.coils, a, &[c])?;
                Response::WriteSingleCoil(a, c)
            }
            Request::WriteMultipleCoils(a, cs) => {
                write(&mut self.coils, a, &cs)?;
                Response::WriteMultipleCoils(a, u16::try_from(cs.len()).unwrap_or(u16::MAX))
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        })
    }
}

type Shared = Arc<RwLock<Store>>;

#[derive(Clone)]
struct SimService {
    store: Shared,
    units: Arc<[u8]>,
    delay: Duration,
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if !self.units.is_empty() && !self.units.contains(&req.slave) {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let answer = self
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .handle(req.request)
            .map(Some);
        let delay = self.delay;
        if delay.is_zero() {
            Box::pin(std::future::ready(answer))
        } else {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer
            })
        }
    }
}

/// A running simulator. Dropping it without [`ModbusSim::stop`] also stops it.
#[derive(Debug)]
pub struct ModbusSim {
    local_addr: SocketAddr,
    store: Shared,
    server: JoinHandle<()>,
    updater: JoinHandle<()>,
}

impl std::fmt::Debug for SimService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimService")
            .field("units", &self.units)
            .finish()
    }
}

impl ModbusSim {
    /// Binds `addr` (port 0 picks a free port) and serves `spec` on the current tokio runtime.
    pub async fn start(addr: SocketAddr, spec: SimSpec) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let store: Shared = Arc::new(RwLock::new(Store {
            holding: vec![0; usize::from(spec.holding_registers)],
            input: vec![0; usize::from(spec.input_registers)],
            coils: vec![false; usize::from(spec.coils)],
            discrete: vec![false; usize::from(spec.discrete_inputs)],
        }));
        let service = SimService {
            store: Arc::clone(&store),
            units: spec.unit_ids.clone().into(),
            delay: spec.response_delay,
        };
        let server = tokio::spawn(async move {
            let on_connected = move |stream, socket_addr| {
                let service = service.clone();
                async move {
                    accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(service.clone())))
                }
            };
            let on_error = |err| tracing::debug!(%err, "simulator connection ended with an error");
            if let Err(err) = Server::new(listener).serve(&on_connected, on_error).await {
                tracing::warn!(%err, "simulator stopped listening");
            }
        });
        let updater = {
            let store = Arc::clone(&store);
            let signals = spec.signals;
            let every = spec.update_interval.max(Duration::from_millis(1));
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut count = 0u64;
                loop {
                    tick.tick().await;
                    let t = started.elapsed();
                    let mut s = store.write().unwrap_or_else(PoisonError::into_inner);
                    for sig in &signals {
                        s.apply(sig, t, count);
                    }
                    drop(s);
                    count += 1;
                }
            })
        };
        Ok(Self {
            local_addr,
            store,
            server,
            updater,
        })
    }

    /// The address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets holding registers from `address` on (outside the mapped range: ignored, returns
    /// false). Signals keep overwriting their own registers.
    pub fn set_holding(&self, address: u16, words: &[u16]) -> bool {
        let mut s = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let a = usize::from(address);
        match s.holding.get_mut(a..a + words.len()) {
            Some(dst) => {
                dst.copy_from_slice(words);
                true
            }
            None => false,
        }
    }

    /// Reads holding registers (for assertions).
    pub fn holding(&self, address: u16, count: u16) -> Option<Vec<u16>> {
        Store::read_words(
            &self
                .store
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .holding,
            address,
            count.min(125),
        )
        .ok()
    }

    /// Stops listening and closes every connection.
    pub async fn stop(mut self) {
        self.server.abort();
        self.updater.abort();
        let _ = (&mut self.server).await;
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        self.server.abort();
        self.updater.abort();
    }
}
