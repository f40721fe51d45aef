//! A transform that misbehaves on command, to test the host's limits.
//!
//! Config `mode`:
//! - `loop`: spins forever on a record whose data is `"spin"`, passes others;
//! - `trap`: panics on a record whose data is `"boom"`, passes others;
//! - `membomb`: allocates without bound on `"bomb"`, passes others;
//! - `init-loop`, `init-trap`: misbehave in `create`;
//! - `stderr`: writes to stderr and stdout, then panics on `"boom"`;
//! - `reject`: rejects its configuration;
//! - `count`: emits `[n, record]`, where `n` counts the records this
//!   instance has seen, so tests can tell how work was split across
//!   instances;
//! - `probe`: tries the capability a record names (`fs`, `env`, `tcp:ADDR`,
//!   `udp:ADDR`, `dns:NAME`, `clock`, `flood`) and emits one JSON object saying
//!   what the sandbox allowed, so tests can check each denial from inside.
//!
//! Records that do not trigger the mode are echoed unchanged, so tests can
//! check that the host recovers and later batches still go through. A
//! trigger may also arrive as a JSON string (`"boom"`), as it does through
//! the gateway's push source, which only accepts JSON.

use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// The misbehaving transform.
pub struct Hostile {
    mode: String,
    seen: u64,
}

impl Transform for Hostile {
    fn new(config: Config) -> Result<Self, ConfigError> {
        let mode = config.require("mode")?.to_string();
        match mode.as_str() {
            "init-loop" => spin(),
            "init-trap" => panic!("hostile guest: trap during create"),
            "reject" => return Err(ConfigError::key("mode", "rejected on purpose")),
            _ => {}
        }
        Ok(Hostile { mode, seen: 0 })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        self.seen += 1;
        let data = record.data.as_slice();
        let trigger = data
            .strip_prefix(b"\"")
            .and_then(|d| d.strip_suffix(b"\""))
            .unwrap_or(data);
        match (self.mode.as_str(), trigger) {
            ("loop", b"spin") => spin(),
            ("trap", b"boom") => panic!("hostile guest: boom"),
            ("stderr", b"boom") => {
                println!("this goes to stdout");
                eprintln!("hostile guest: about to fail");
                panic!("hostile guest: boom after stderr")
            }
            ("membomb", b"bomb") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            ("count", _) => {
                let mut counted = format!("[{},", self.seen).into_bytes();
                counted.extend_from_slice(data);
                counted.push(b']');
                out.emit(counted);
            }
            ("probe", what) => out.emit(probe(&String::from_utf8_lossy(what)).into_bytes()),
            _ => out.emit(record.data),
        }
        Ok(())
    }
}

/// Tries one capability; the answer is a JSON object with `probe` and what
/// the guest saw. An `error` field holds the error the guest got, verbatim.
fn probe(what: &str) -> String {
    use std::io::Write;
    let outcome = |r: Result<String, std::io::Error>| match r {
        Ok(seen) => format!("\"ok\":true,\"seen\":{seen:?}"),
        Err(e) => format!("\"ok\":false,\"error\":{:?}", e.to_string()),
    };
    let body = if what == "fs" {
        let read = std::fs::read_to_string("/etc/passwd").map(|t| t.len().to_string());
        let list = std::fs::read_dir(".").map(|d| d.count().to_string());
        let create = std::fs::write("sluice-probe", b"x").map(|()| "written".to_string());
        format!(
            "\"read\":{{{}}},\"list\":{{{}}},\"create\":{{{}}}",
            outcome(read),
            outcome(list),
            outcome(create)
        )
    } else if what == "env" {
        format!(
            "\"vars\":{},\"args\":{}",
            std::env::vars_os().count(),
            std::env::args_os().count()
        )
    } else if let Some(addr) = what.strip_prefix("tcp:") {
        outcome(std::net::TcpStream::connect(addr).map(|s| format!("{:?}", s.peer_addr())))
    } else if let Some(addr) = what.strip_prefix("udp:") {
        outcome(
            std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| s.send_to(b"sluice probe", addr))
                .map(|n| n.to_string()),
        )
    } else if let Some(name) = what.strip_prefix("dns:") {
        use std::net::ToSocketAddrs;
        outcome(
            (name, 443)
                .to_socket_addrs()
                .map(|a| format!("{:?}", a.collect::<Vec<_>>())),
        )
    } else if what == "clock" {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(u128::MAX);
        let start = std::time::Instant::now();
        let mut n: u64 = 0;
        for i in 0..1_000_000u64 {
            n = std::hint::black_box(n.wrapping_add(i));
        }
        format!(
            "\"wall_ns\":{wall},\"elapsed_ns\":{}",
            start.elapsed().as_nanos()
        )
    } else if what == "flood" {
        // 64 KiB in 1 KiB lines, each ending with its number; count what the
        // host accepted, then fail so the host attaches the tail.
        let mut accepted = 0usize;
        let mut stderr = std::io::stderr();
        for i in 0..64 {
            let mut line = vec![b'e'; 1019];
            line.extend_from_slice(format!("{i:04}\n").as_bytes());
            if stderr
                .write_all(&line)
                .and_then(|()| stderr.flush())
                .is_ok()
            {
                accepted += line.len();
            }
        }
        panic!("hostile guest: flooded stderr, {accepted} bytes accepted")
    } else {
        format!("\"unknown\":{what:?}")
    };
    format!("{{\"probe\":{what:?},{body}}}")
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

sluice_sdk::export!(Hostile);
