//! `wsflood`: connection-flood and load generator for WebSocket servers,
//! built on wsloop's sans-IO protocol core in the client role.
//!
//! `main` checks the plan, spawns one [`worker::Worker`] per thread, prints
//! a progress line every second while they run, then merges their counts
//! into the summary.

#![deny(unsafe_code)]

mod alloc;
mod cli;
mod deflate;
mod json;
mod payload;
mod pubsub;
mod report;
mod shared;
mod stats;
mod sys;
mod target;
mod tls;
mod track;
mod worker;

use clap::Parser;
use cli::{Cli, Mode, Plan};
use report::{Cpu, Report, Rss};
use shared::{Shared, HARD_CAP};
use stats::Stats;
use std::process::exit;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use worker::Worker;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// Exit codes.
const EXIT_VERIFICATION: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_NO_CONNECTION: i32 = 3;
const EXIT_STUCK: i32 = 4;

const SEC: u64 = 1_000_000_000;

fn main() {
    let plan = match Cli::parse().plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wsflood: {e}");
            exit(EXIT_USAGE);
        }
    };
    // One descriptor per connection, an epoll instance per thread, stdio
    // and some slack (pubsub: HTTP publishers and their thread's epoll).
    let http = plan.pubsub.as_ref().map_or(0, |o| o.http_publishers() as u64 + 2);
    let needed = plan.connections as u64 + 2 * plan.threads as u64 + 32 + http;
    if let Err(e) = sys::ensure_fds(needed) {
        eprintln!("wsflood: {e}");
        exit(EXIT_USAGE);
    }
    exit(run(plan));
}

/// Sums of the workers' live counters.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    open: u64,
    established: u64,
    received: u64,
    cycles: u64,
    errors: u64,
}

fn totals(sh: &Shared) -> Totals {
    let mut t = Totals::default();
    for l in sh.live.iter() {
        t.open += l.open.load(Relaxed);
        t.established += l.established.load(Relaxed);
        t.received += l.received.load(Relaxed);
        t.cycles += l.cycles.load(Relaxed);
        t.errors += l.errors.load(Relaxed);
    }
    t
}

fn run(plan: Plan) -> i32 {
    let server = plan.server_pids.clone();
    let rss_before = match server.is_empty() {
        false => match sys::rss_kib_sum(&server) {
            Ok(kib) => Some(kib),
            Err(e) => {
                eprintln!("wsflood: {e}");
                return EXIT_USAGE;
            }
        },
        true => None,
    };
    // A pubsub run's own state, beside what every run shares.
    let ps = plan
        .pubsub
        .clone()
        .map(|o| Arc::new(pubsub::Shared::new(o, plan.max_size)));
    let sh = Arc::new(Shared::new(plan));
    let plan = &sh.plan;
    let cpu_sample = || {
        (
            sh.now(),
            sys::cpu_seconds("self").unwrap_or(0.0),
            sys::cpu_seconds_sum(&server),
        )
    };
    let cpu0 = cpu_sample();

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut handles = Vec::new();
    for i in 0..plan.threads {
        let worker = match Worker::new(sh.clone(), ps.as_ref(), i) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("wsflood: cannot create a poll instance: {e}");
                return EXIT_USAGE;
            }
        };
        let tx = done_tx.clone();
        let spawned = std::thread::Builder::new().name(format!("wsflood-{i}")).spawn(move || {
            let stats = worker.run();
            let _ = tx.send(());
            stats
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("wsflood: cannot start a thread: {e}");
                return EXIT_USAGE;
            }
        }
    }
    // Pubsub: HTTP publishers have a thread of their own.
    let http = match pubsub::http::spawn(&sh, ps.as_ref(), done_tx.clone()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("wsflood: cannot start the HTTP publishers: {e}");
            return EXIT_USAGE;
        }
    };
    let threads = plan.threads + usize::from(http.is_some());
    drop(done_tx);

    // Report progress until every worker is done.
    let stop = plan.duration_ns;
    let give_up = stop + HARD_CAP + 2 * SEC;
    let rss_at = stop.saturating_sub((200 * 1_000_000).min(stop / 10));
    let mut rss_after: Option<(u64, u64)> = None;
    let mut cpu_stop = None;
    let mut next_tick = SEC;
    let mut prev = (0u64, Totals::default());
    let mut interval = stats::histogram();
    let mut peak_open = 0;
    let mut finished = 0;
    while finished < threads {
        let now = sh.now();
        if now >= give_up {
            eprintln!("wsflood: the workers did not stop by the hard cap");
            return EXIT_STUCK;
        }
        if cpu_stop.is_none() && now >= stop {
            cpu_stop = Some(cpu_sample());
        }
        if rss_after.is_none() && now >= rss_at && !server.is_empty() {
            let open = totals(&sh).open;
            rss_after = sys::rss_kib_sum(&server).ok().map(|kib| (kib, open));
        }
        if now >= next_tick {
            let t = totals(&sh);
            peak_open = peak_open.max(t.open);
            for l in sh.live.iter() {
                if let Ok(mut h) = l.interval.lock() {
                    let _ = interval.add(&*h);
                    h.reset();
                }
            }
            let secs = (now - prev.0) as f64 / 1e9;
            let delta = match plan.mode {
                Mode::Echo | Mode::Broadcast | Mode::Pubsub => t.received - prev.1.received,
                Mode::Idle => t.established - prev.1.established,
                Mode::Churn => t.cycles - prev.1.cycles,
            };
            if !plan.quiet {
                eprintln!(
                    "{}",
                    report::progress(
                        plan.mode,
                        now as f64 / 1e9,
                        t.open,
                        delta as f64 / secs,
                        t.errors,
                        &interval
                    )
                );
            }
            interval.reset();
            prev = (now, t);
            next_tick += SEC;
        }
        let mut wake = next_tick.min(give_up);
        if cpu_stop.is_none() {
            wake = wake.min(stop);
        }
        if rss_after.is_none() && !server.is_empty() {
            wake = wake.min(rss_at);
        }
        match done_rx.recv_timeout(Duration::from_nanos(wake.saturating_sub(now))) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let elapsed_s = sh.now() as f64 / 1e9;
    let mut stats = Stats::default();
    for h in handles.into_iter().chain(http) {
        match h.join() {
            Ok(s) => stats.merge(&s),
            Err(_) => {
                eprintln!("wsflood: a worker thread panicked");
                return EXIT_STUCK;
            }
        }
    }
    let cpu1 = cpu_stop.unwrap_or_else(cpu_sample);
    let cpu = Cpu {
        wall_s: (cpu1.0 - cpu0.0) as f64 / 1e9,
        client_s: cpu1.1 - cpu0.1,
        server_s: cpu0.2.zip(cpu1.2).map(|(a, b)| b - a),
    };
    let report = Report {
        plan,
        stats: &stats,
        elapsed_s,
        members: sh.members.load(Relaxed) as u64,
        peak_open: peak_open.max(stats.peak_open),
        cpu: (cpu.wall_s > 0.0).then_some(cpu),
        rss: rss_before.zip(rss_after).map(|(before, (after, open))| Rss {
            before_kib: before,
            after_kib: after,
            open,
        }),
        pubsub: ps.as_deref(),
    };
    print!("{}", report.text());
    if let Some(path) = &plan.json {
        let text = serde_json::to_string_pretty(&report.json()).expect("JSON values serialize");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("wsflood: cannot write {}: {e}", path.display());
            return EXIT_USAGE;
        }
    }
    if stats.verification_failed() {
        EXIT_VERIFICATION
    } else if stats.established == 0 {
        EXIT_NO_CONNECTION
    } else {
        0
    }
}
