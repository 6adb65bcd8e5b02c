//! Smoke run of the benchmark harness (`make bench`) with tiny sizes on the
//! debug binaries, so it keeps working. Benchmarks are not tests: this
//! checks that every figure is produced and sane, never how fast.

mod common;

#[path = "support/bench_lib.rs"]
mod bench_lib;

use std::time::Duration;

#[test]
fn every_figure_of_the_benchmark_is_produced() {
    let _w = common::watchdog("bench_smoke", Duration::from_secs(120));
    let sizes = bench_lib::Sizes::smoke();
    let report = bench_lib::run(&sizes, &mut |_| {});
    let table = report.table();
    for key in [
        "tcp_bulk",
        "tls_bulk",
        "chain_bulk_up",
        "chain_bulk_down",
        "chain_agg8",
        "chain_agg64",
        "tcp_echo_p50",
        "chain_echo_p50",
        "chain_echo_p99",
        "tcp_setup",
        "chain_setup",
        "rss_idle_source",
        "rss_idle_destination",
        "rss_idle_service",
        "rss_bulk_source",
        "hwm_destination",
        "scale_time",
        "rss_scale_source",
        "rss_after_destination",
    ] {
        let f = report
            .get(key)
            .unwrap_or_else(|| panic!("no figure {key} in\n{table}"));
        assert!(!f.samples.is_empty(), "{key} has no sample");
        assert!(
            f.samples.iter().all(|v| v.is_finite() && *v > 0.0),
            "{key} has a sample that is not a positive number: {:?}\n{table}",
            f.samples
        );
        assert!(table.contains(&f.label), "{key} is not in the table");
    }
    // CPU time may round to zero ticks with tiny sizes, but is never negative.
    for who in ["source", "destination", "service"] {
        for dir in ["up", "down"] {
            let f = report
                .get(&format!("cpu_per_gib_{who}_{dir}"))
                .expect("cpu row");
            assert!(f.samples.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
        let f = report.get(&format!("anon_idle_{who}")).expect("anon row");
        assert!(f.samples.iter().all(|v| v.is_finite() && *v > 0.0));
    }
    // Memory per connection may round to nothing, but is a number.
    for who in ["source", "destination"] {
        let f = report
            .get(&format!("mem_per_conn_{who}"))
            .expect("per-connection row");
        assert!(f.samples.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
    // Every connection of the scale run came back intact.
    let scale = report.get("scale_verified").expect("scale row");
    assert!(
        scale.samples.iter().all(|v| *v == sizes.scale_conns as f64),
        "{:?}",
        scale.samples
    );
    let held = report
        .get(&format!("rss_{}_source", sizes.idle_conns))
        .expect("held row");
    assert!(held.note.contains(&sizes.idle_conns.to_string()));
    // The JSON carries the same figures.
    let json = report.json();
    assert_eq!(
        json["figures"].as_array().map(|a| a.len()),
        Some(report.figures.len())
    );
}
