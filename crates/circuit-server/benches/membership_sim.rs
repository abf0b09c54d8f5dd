//! Membership figures from the in-process simulation (`membership/sim.rs`
//! here, running the servers' own `membership::driver::Driver`): for 3, 100
//! and 1,000 members with `swim_config(n)` on a LAN
//! (1 ms ± 0.5 ms one-way, 1 % loss), all joining at once through one seed:
//! join convergence, a newcomer's convergence into the settled cluster,
//! death detection (median and worst of 5 victims), idle traffic per member,
//! and the wall-clock time the simulation took.
//!
//! Each size runs twice, on two threads: `+pull` is what servers do (the
//! driver, plus a pull of the first met member's list over TCP,
//! `net::peers`), and `foca` is the driver alone, for comparison.
//!
//! `cargo bench -p circuit-server --bench membership_sim` (optionally
//! followed by `-- N…` to simulate other cluster sizes).

use std::time::{Duration, Instant};

#[allow(dead_code)] // the tests (target `simulation`) use the rest
#[path = "membership/sim.rs"]
mod sim;

use sim::{Figures, Scenario, SimConfig, scenario};

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "> 60 s".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn run(n: usize, pull: bool) -> (Figures, Duration) {
    let started = Instant::now();
    let f = scenario(
        SimConfig::lan(n, 42),
        &Scenario {
            pull,
            ..Scenario::default()
        },
    );
    (f, started.elapsed())
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![3, 100, 1000] } else { sizes };
    println!("membership simulation: the driver + swim_config(n), 1 ms ± 0.5 ms one-way, 1 % loss");
    println!(
        "{:>5} {:>5} {:>8} {:>16} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>5} {:>5} {:>6}",
        "n",
        "mode",
        "join",
        "newcomer (view)",
        "death",
        "worst",
        "pkt/s",
        "B/s",
        "max B/s",
        "wake/s",
        "max",
        "fdown",
        "wall"
    );
    for n in sizes {
        let (plain, pulling) = std::thread::scope(|s| {
            let plain = s.spawn(|| run(n, false));
            let pulling = run(n, true);
            (plain.join().expect("simulation thread"), pulling)
        });
        for (f, wall) in [plain, pulling] {
            println!(
                "{:>5} {:>5} {:>8} {:>16} {:>8} {:>8} {:>8.2} {:>6.0} {:>7.0} {:>6.2} {:>5.2} {:>5} {:>5.1}s",
                n,
                if f.pull { "+pull" } else { "foca" },
                secs(f.join),
                format!("{} ({})", secs(f.newcomer), f.newcomer_view),
                secs(f.median_detection()),
                secs(f.max_detection()),
                f.idle.packets_per_s,
                f.idle.bytes_per_s,
                f.idle.max_bytes_per_s,
                f.idle.wakeups_per_s,
                f.idle.max_wakeups_per_s,
                f.counters.false_downs,
                wall.as_secs_f64(),
            );
        }
    }
    println!("join: all n members announce to one seed at once, until every member lists every other;");
    println!("newcomer: one more member joins the settled cluster, until every view is complete again;");
    println!("death: from a kill until no member lists the victim (median, worst of 5);");
    println!("pkt/s, B/s: idle traffic sent per member (mean; max B/s: busiest member) over 60 s,");
    println!("  digest + foca payload (the seal adds 5 B per datagram, 45 B when keyed);");
    println!("wake/s: instants per member per second at which its driver had something to do (a server's");
    println!("  wakeups, datagrams read together counted once; max: the member that woke most); fdown: false downs.");
}
