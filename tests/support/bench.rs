//! `make bench`: throughput, latency, memory and scale of the tunnel chain
//! against the loopback limits, in one run, on release binaries.
//!
//! Prints one table (Markdown, as pasted into the README) and writes the
//! same figures as JSON to `target/bench/results.json` (or `--json PATH`).
//! `--quick` runs every phase with small sizes, for a smoke run.

#[path = "../common/mod.rs"]
mod common;

#[path = "bench_lib.rs"]
mod bench_lib;

use std::path::PathBuf;
use std::time::Duration;

fn main() {
    let mut quick = false;
    let mut json: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: bench [--quick] [--json PATH]");
                return;
            }
            other => {
                eprintln!("bench: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let json = json.unwrap_or_else(|| {
        // target/release/examples/bench -> target/bench/results.json
        let exe = std::env::current_exe().expect("current exe");
        let target = exe
            .parent()
            .and_then(|d| d.parent())
            .and_then(|d| d.parent())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"));
        target.join("bench").join("results.json")
    });
    if cfg!(debug_assertions) {
        eprintln!("bench: WARNING: a debug build; run with --release for real figures");
    }
    let sizes = if quick {
        bench_lib::Sizes::quick()
    } else {
        bench_lib::Sizes::full()
    };
    let _w = common::watchdog("bench", Duration::from_secs(900));
    let report = bench_lib::run(&sizes, &mut |line| eprintln!("bench: {line}"));
    println!();
    println!(
        "localproxy benchmark{}: {}",
        if quick { " (--quick)" } else { "" },
        report.machine
    );
    println!(
        "{} repetitions per figure, median shown; run took {:.0} s",
        sizes.reps,
        report.elapsed.as_secs_f64()
    );
    println!();
    print!("{}", report.table());
    if let Some(dir) = json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&report.json()) {
        Ok(text) => match std::fs::write(&json, text + "\n") {
            Ok(()) => println!("\nFigures written to {}", json.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", json.display()),
        },
        Err(e) => eprintln!("bench: cannot encode the figures: {e}"),
    }
}
