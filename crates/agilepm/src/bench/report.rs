//! The benchmark's results: a table for people, JSON for machines.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchArgs;
use super::workload::Outcome;

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Worst.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `histogram` (microseconds). HdrHistogram keeps three significant
    /// digits at any count: each value reported is within 0.1% of the sample at that
    /// rank (the nearest-rank percentile: at least p of all samples at or below it).
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles {
                p50: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        let ms = |micros: u64| histogram.median_equivalent(micros) as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// A latency histogram in microseconds, from one microsecond to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// `samples` as a [`histogram`].
pub fn histogram_of(samples: &[Duration]) -> Histogram<u64> {
    let mut histogram = histogram();
    for sample in samples {
        histogram.saturating_record(sample.as_micros() as u64);
    }
    histogram
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// Backlog items.
    pub items: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Target rate (0: as fast as possible).
    pub target_rate: u32,
    /// Idle subscribers of the task feed during the run.
    pub idle_subscribers: usize,
    /// Where the coordinator read task events (`grpc` or `nats`).
    pub feed: String,
    /// Coordinator replicas.
    pub coordinators: usize,
    /// Tasks pre-loaded before measuring.
    pub preloaded_tasks: u64,
    /// Estimates sent.
    pub estimates: usize,
    /// Sustained estimate throughput.
    pub estimates_per_sec: f64,
    /// `EstimateTaskHoursRemaining` round trips.
    pub estimate_latency_ms: Percentiles,
    /// Final estimate acknowledged -> DONE visible on the backlog-item feed.
    pub reconcile_lag_ms: Percentiles,
    /// Its first part: final estimate acknowledged -> the DONE event written in
    /// backlog-item (the coordinator's share); the rest is the backlog-item feed.
    pub reconcile_lag_to_event_ms: Percentiles,
    /// Items DONE at the end.
    pub items_done: usize,
    /// DONE transitions on the feed (one per item is correct).
    pub done_transitions: usize,
    /// Failed calls.
    pub errors: usize,
    /// Peak resident memory per service process, MiB.
    pub rss_mib: BTreeMap<String, f64>,
    /// CPU seconds each process (services and the load generator) used while estimating.
    pub cpu_seconds: BTreeMap<String, f64>,
    /// CPU microseconds per estimate, all processes together (what the machine pays).
    pub cpu_us_per_estimate: f64,
    /// `pgbench -N` at the same client count on the same server (PostgreSQL only).
    pub pgbench_tps: Option<f64>,
    /// Empty unary gRPC calls per second at the same concurrency.
    pub empty_rpc_per_sec: f64,
    /// estimates/s over pgbench TPS.
    pub ratio_to_pgbench: Option<f64>,
    /// estimates/s over empty RPC/s.
    pub ratio_to_empty_rpc: f64,
    /// With `--half-of-max`: the unpaced run whose rate this run was paced at half of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_rate: Option<Box<Results>>,
    /// With `--telemetry on`: what was exported and scraped during the run.
    pub telemetry: Option<TelemetryCost>,
    /// With `--webhooks N` (N > 0): the notifier's deliveries of the DONEs.
    pub webhooks: Option<super::webhooks::WebhookResults>,
}

impl Results {
    /// Assembles the results.
    pub fn new(
        args: &BenchArgs,
        preloaded: u64,
        outcome: &Outcome,
        rss_mib: BTreeMap<String, f64>,
        cpu_seconds: BTreeMap<String, f64>,
        pgbench_tps: Option<f64>,
        empty_rpc_per_sec: f64,
    ) -> Results {
        let estimates = outcome.latency.len() as usize;
        let estimates_per_sec = estimates as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
        Results {
            engine: format!("{:?}", args.engine).to_lowercase(),
            items: args.items,
            clients: args.clients,
            target_rate: args.rate,
            idle_subscribers: args.subscribers.first().copied().unwrap_or(0),
            feed: format!("{:?}", args.feed.first().copied().unwrap_or_default()).to_lowercase(),
            coordinators: args.coordinators.first().copied().unwrap_or(1),
            preloaded_tasks: preloaded,
            estimates,
            estimates_per_sec,
            estimate_latency_ms: Percentiles::of(&outcome.latency),
            reconcile_lag_ms: Percentiles::of(&histogram_of(&outcome.lags)),
            reconcile_lag_to_event_ms: Percentiles::of(&histogram_of(&outcome.lags_to_event)),
            items_done: outcome.items_done,
            done_transitions: outcome.done_transitions,
            errors: outcome.errors,
            rss_mib,
            cpu_us_per_estimate: cpu_seconds.values().sum::<f64>() * 1e6 / estimates.max(1) as f64,
            cpu_seconds,
            pgbench_tps,
            empty_rpc_per_sec,
            ratio_to_pgbench: pgbench_tps.map(|tps| estimates_per_sec / tps),
            ratio_to_empty_rpc: estimates_per_sec / empty_rpc_per_sec.max(1e-9),
            full_rate: None,
            telemetry: None,
            webhooks: None,
        }
    }
}

/// What telemetry did during a run with `--telemetry on`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TelemetryCost {
    /// Spans the services exported over OTLP (received by the bench's collector).
    pub spans_exported: u64,
    /// Successful scrapes of the services' metrics endpoints.
    pub scrapes: u64,
}

/// Prints a run without telemetry and one with it side by side.
pub fn print_by_telemetry(runs: &[Results]) {
    println!(
        "agilepm bench by telemetry (metrics scraped every 5 s, traces and metrics over OTLP):"
    );
    println!(
        "| telemetry | estimates/s | vs off | estimate p50 / p99 ms | reconcile lag p50 / p99 ms | CPU us/estimate | spans exported | scrapes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // Against the run without telemetry, whichever order they ran in (the machine warms
    // up: run both orders to see its share).
    let base = runs
        .iter()
        .find(|r| r.telemetry.is_none())
        .or(runs.first())
        .map_or(0.0, |r| r.estimates_per_sec);
    for r in runs {
        let (spans, scrapes) = r
            .telemetry
            .as_ref()
            .map_or((0, 0), |t| (t.spans_exported, t.scrapes));
        println!(
            "| {} | {:.0} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {spans} | {scrapes} |",
            if r.telemetry.is_some() { "on" } else { "off" },
            r.estimates_per_sec,
            r.estimates_per_sec / base.max(1e-9),
            r.estimate_latency_ms.p50,
            r.estimate_latency_ms.p99,
            r.reconcile_lag_ms.p50,
            r.reconcile_lag_ms.p99,
            r.cpu_us_per_estimate,
        );
    }
}

/// Prints runs that differ in their feed and coordinator replicas side by side.
pub fn print_by_feed(runs: &[Results]) {
    println!("agilepm bench by feed and coordinator replicas:");
    println!(
        "| feed | coordinators | estimates/s | vs grpc | estimate p50 / p99 ms | reconcile lag p50 / p99 ms | coordinators CPU s | nats-server CPU s | CPU us/estimate | DONE transitions / items |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let base = runs
        .iter()
        .find(|r| r.feed == "grpc")
        .or(runs.first())
        .map_or(0.0, |r| r.estimates_per_sec);
    for r in runs {
        let coordinators_cpu: f64 = r
            .cpu_seconds
            .iter()
            .filter(|(name, _)| name.starts_with("coordinator"))
            .map(|(_, seconds)| seconds)
            .sum();
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {:.1} | {:.0} | {} / {} |",
            r.feed,
            r.coordinators,
            r.estimates_per_sec,
            r.estimates_per_sec / base.max(1e-9),
            r.estimate_latency_ms.p50,
            r.estimate_latency_ms.p99,
            r.reconcile_lag_ms.p50,
            r.reconcile_lag_ms.p99,
            coordinators_cpu,
            r.cpu_seconds.get("nats-server").copied().unwrap_or(0.0),
            r.cpu_us_per_estimate,
            r.done_transitions,
            r.items,
        );
    }
}

/// Prints runs that differ in their idle subscribers side by side.
pub fn print_by_subscribers(runs: &[Results]) {
    println!("agilepm bench by idle feed subscribers (task feed):");
    println!(
        "| idle subscribers | estimates/s | vs none | estimate p50 / p99 ms | reconcile lag p50 / p99 ms | task CPU s | task RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base = runs.first().map_or(0.0, |r| r.estimates_per_sec);
    for r in runs {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {:.0} |",
            r.idle_subscribers,
            r.estimates_per_sec,
            r.estimates_per_sec / base.max(1e-9),
            r.estimate_latency_ms.p50,
            r.estimate_latency_ms.p99,
            r.reconcile_lag_ms.p50,
            r.reconcile_lag_ms.p99,
            r.cpu_seconds.get("task").copied().unwrap_or(0.0),
            r.rss_mib.get("task").copied().unwrap_or(0.0),
        );
    }
}

/// Prints the table.
pub fn print(r: &Results) {
    println!(
        "agilepm bench: {} items x 12 tasks x 12 estimates on {}, {} clients{}{}",
        r.items,
        r.engine,
        r.clients,
        if r.preloaded_tasks > 0 {
            format!(", {} tasks pre-loaded", r.preloaded_tasks)
        } else {
            String::new()
        },
        if r.idle_subscribers > 0 {
            format!(", {} idle feed subscribers", r.idle_subscribers)
        } else {
            String::new()
        }
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| estimates/s | {:.0} ({} estimates) |",
        r.estimates_per_sec, r.estimates
    );
    let l = &r.estimate_latency_ms;
    println!(
        "| estimate latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        l.p50, l.p99, l.max
    );
    let g = &r.reconcile_lag_ms;
    println!(
        "| reconcile lag p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        g.p50, g.p99, g.max
    );
    let e = &r.reconcile_lag_to_event_ms;
    println!(
        "| of which to the DONE event's write p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        e.p50, e.p99, e.max
    );
    println!(
        "| items DONE / DONE transitions / errors | {} / {} / {} |",
        r.items_done, r.done_transitions, r.errors
    );
    for (service, mib) in &r.rss_mib {
        println!("| peak RSS {service} | {mib:.1} MiB |");
    }
    for (process, seconds) in &r.cpu_seconds {
        println!("| CPU while estimating, {process} | {seconds:.2} s |");
    }
    println!(
        "| CPU per estimate, all processes | {:.0} µs |",
        r.cpu_us_per_estimate
    );
    match (r.pgbench_tps, r.ratio_to_pgbench) {
        (Some(tps), Some(ratio)) => println!(
            "| pgbench -N TPS (same server, {} clients) | {tps:.0} (ratio {ratio:.2}) |",
            r.clients
        ),
        _ => println!("| pgbench -N TPS | n/a on SQLite |"),
    }
    println!(
        "| empty gRPC calls/s ({} clients) | {:.0} (ratio {:.3}) |",
        r.clients, r.empty_rpc_per_sec, r.ratio_to_empty_rpc
    );
    if let Some(w) = &r.webhooks {
        println!(
            "| webhook deliveries ({} subscriptions x DONE) / distinct | {} / {} |",
            w.subscriptions, w.deliveries, w.distinct
        );
        println!(
            "| webhook deliveries/s, redelivering them all at once | {:.0} (baseline: {:.0} signed POSTs/s by {} senders, ratio {:.2}) |",
            w.per_sec, w.baseline_posts_per_sec, w.subscriptions, w.ratio_to_baseline
        );
        let d = &w.latency_ms;
        println!(
            "| DONE event -> webhook received, while estimating, p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
            d.p50, d.p99, d.max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    /// Within HdrHistogram's three significant digits of `expected`.
    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.001
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=100 ms, shuffled: the p50 is the 50th sample, the p99 the 99th.
        let mut samples = millis(1..=100);
        samples.reverse();
        samples.swap(3, 70);
        let p = Percentiles::of(&histogram_of(&samples));
        assert!(
            close(p.p50, 50.0) && close(p.p99, 99.0) && close(p.max, 100.0),
            "{p:?}"
        );

        // 1000 samples: the 990th is the p99.
        let p = Percentiles::of(&histogram_of(&millis(1..=1000)));
        assert!(
            close(p.p50, 500.0) && close(p.p99, 990.0) && close(p.max, 1000.0),
            "{p:?}"
        );

        // Few samples: the p99 is the maximum, the p50 the lower middle one.
        let p = Percentiles::of(&histogram_of(&millis([4, 1, 3, 2])));
        assert!(
            close(p.p50, 2.0) && close(p.p99, 4.0) && close(p.max, 4.0),
            "{p:?}"
        );
        let p = Percentiles::of(&histogram_of(&millis([7])));
        assert!(
            close(p.p50, 7.0) && close(p.p99, 7.0) && close(p.max, 7.0),
            "{p:?}"
        );
    }

    #[test]
    fn no_samples_give_zeros() {
        let p = Percentiles::of(&histogram());
        assert_eq!((p.p50, p.p99, p.max), (0.0, 0.0, 0.0));
    }
}
