//! Ten seconds of chaos against the real binary: 200 members chatting in 10
//! rooms while faulty peers reset, half-close, never read, send garbage,
//! invalid UTF-8, over-long lines, floods and slow drips, and 128 UDP sources
//! that never answer poke the UDP lobby. Every check of the bench's `chaos`
//! scenario must pass: no member lost a line or saw one out of turn, each
//! room had one order, every faulty peer got what its fault deserves (as it
//! and its room saw it), no UDP source got more than 3× what it sent,
//! `ROOMS`/`WHO` list exactly who is left, open files return to their count
//! and RSS stays under the stated bound.
//!
//! The run itself lives in `bench/src/chaos/` and is shared with
//! `switchboard-bench chaos`; every wait in it is a read with a deadline or a
//! bounded poll of the server's state, and the only sleeps pace the load.

#[path = "../bench/src/chaos/mod.rs"]
mod chaos;

use std::path::Path;

use chaos::process::{ServerProcess, supports_flag};
use chaos::{Config, Target};

#[test]
fn ten_seconds_of_chaos_keep_every_promise() {
    let binary = Path::new(env!("CARGO_BIN_EXE_switchboard"));
    let mut cfg = Config::test();
    if supports_flag(binary, "--max-udp-sessions") {
        cfg.max_udp_sessions = Some(cfg.udp_sources() / 4);
    }
    let mut server = ServerProcess::start(binary, &cfg.server_args()).expect("the server starts");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let target = Target {
        pid: server.pid,
        tcp: server.tcp,
        udp: server.udp,
    };
    let mut report = runtime.block_on(chaos::run(&cfg, target));
    chaos::server_health(&mut report, &mut server);
    let table = report.table();
    println!("{table}");
    assert!(
        report.passed(),
        "chaos checks failed:\n{}\n\n{table}",
        report.failures().join("\n")
    );
}
