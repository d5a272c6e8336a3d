//! `agilepm bench`: the yardstick sprint at scale against the four services running as
//! separate processes, side by side with what the machine does without agilepm
//! (`pgbench -N` and an empty gRPC call) in the same run.

pub mod baseline;
pub mod nats;
pub mod processes;
pub mod report;
pub mod telemetry;
pub mod webhooks;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::config::{FeedSource, ServiceName};
use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::postgres::{drop_database, ensure_database, with_database};

/// Which engine the services store their data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEngine {
    /// One SQLite file per service in a temporary directory.
    Sqlite,
    /// One database per service on `--database-url`'s server.
    Postgres,
}

/// Flags of `agilepm bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Storage engine.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub engine: BenchEngine,
    /// PostgreSQL server to create the services' databases (and pgbench's) in.
    #[arg(
        long,
        env = "AGILEPM_BENCH_DATABASE_URL",
        default_value = "postgres://root@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Backlog items (each 12 tasks x 12 daily estimates).
    #[arg(long, default_value_t = 100)]
    pub items: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Pre-load 1M tasks into the task service before measuring.
    #[arg(long)]
    pub scale: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// First of the services' consecutive ports: five, then any further coordinator
    /// replicas (below Linux's ephemeral range, so no outgoing connection holds one when a
    /// service binds it).
    #[arg(long, default_value_t = 23051)]
    pub base_port: u16,
    /// Pace the estimates to this many per second in total (0: as fast as possible).
    /// Reconcile lag targets are stated at half the maximum sustained rate.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Run twice, on fresh databases each time: as fast as possible, then paced at half
    /// the rate that run sustained, so the lag at half the maximum is measured in the
    /// same window as the maximum. Reports both; the JSON's top level is the paced run,
    /// with the first under `full_rate`.
    #[arg(long, conflicts_with = "rate")]
    pub half_of_max: bool,
    /// Seconds for each baseline (pgbench, empty RPC).
    #[arg(long, default_value_t = 10)]
    pub baseline_seconds: u64,
    /// Idle subscribers of the task service's feed during the run (a filter matching
    /// nothing, from the head; at most 100 per tenant, the first 100 the workload's own
    /// tenant). Several values (`0,100,1000`) run once each, on fresh databases, and are
    /// reported side by side.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub subscribers: Vec<usize>,
    /// Whether the services serve metrics (scraped every 5 s) and export traces and
    /// metrics over OTLP (to a collector in the bench). `off,on` runs once each, on
    /// fresh databases, and reports what telemetry costs.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off")]
    pub telemetry: Vec<telemetry::Telemetry>,
    /// Where the coordinator reads task events: `grpc` (the task feed, one active
    /// replica) or `nats` (a private `nats-server -js` the bench starts; every replica
    /// works). `grpc,nats` runs each, on fresh databases, side by side.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "grpc")]
    pub feed: Vec<FeedSource>,
    /// Coordinator replicas with `--feed nats` (`1,2,3` runs each). With `grpc` one runs:
    /// more would stand by behind the lease.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub coordinators: Vec<usize>,
    /// Webhook subscriptions of the workload's tenant to `backlog_item.done` at a local
    /// receiver (0: none): each DONE is delivered to every one, and the report gives
    /// deliveries/s and event -> delivery latency beside a raw-POST baseline. At most 25
    /// (a tenant's limit).
    #[arg(long, default_value_t = 8)]
    pub webhooks: usize,
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.coordinators.iter().all(|n| (1..=6).contains(n)),
        "--coordinators takes 1 to 6 replicas"
    );
    anyhow::ensure!(
        args.webhooks <= 25,
        "--webhooks takes 0 to 25 subscriptions"
    );
    if args.feed.len() > 1 || args.coordinators.len() > 1 {
        anyhow::ensure!(
            !args.half_of_max && args.subscribers.len() == 1 && args.telemetry.len() == 1,
            "--feed and --coordinators compare one configuration at a time"
        );
        return compare_feeds(&args).await;
    }
    if args.telemetry.len() > 1 {
        anyhow::ensure!(
            !args.half_of_max && args.subscribers.len() == 1,
            "--telemetry off,on compares one configuration at a time"
        );
        return compare_telemetry(&args).await;
    }
    if args.subscribers.len() > 1 {
        anyhow::ensure!(
            !args.half_of_max,
            "--half-of-max measures one subscriber count at a time"
        );
        return compare_subscribers(&args).await;
    }
    let mut results = run_on_fresh_databases(&args).await?;
    report::print(&results);
    if args.half_of_max {
        let paced = BenchArgs {
            rate: (results.estimates_per_sec / 2.0).round().max(1.0) as u32,
            half_of_max: false,
            ..args.clone()
        };
        eprintln!("again, paced at half that: {} estimates/s ...", paced.rate);
        let mut half = run_on_fresh_databases(&paced).await?;
        half.full_rate = Some(Box::new(results));
        results = half;
        report::print(&results);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One run per subscriber count, reported side by side.
async fn compare_subscribers(args: &BenchArgs) -> anyhow::Result<()> {
    let runs = args.subscribers.iter().map(|&count| {
        let one = BenchArgs {
            subscribers: vec![count],
            ..args.clone()
        };
        (format!("with {count} idle feed subscribers"), one)
    });
    compare(args, runs.collect(), report::print_by_subscribers).await
}

/// One run per feed and coordinator count (gRPC: one coordinator), side by side.
async fn compare_feeds(args: &BenchArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for &feed in &args.feed {
        let counts = match feed {
            FeedSource::Grpc => vec![1],
            FeedSource::Nats => args.coordinators.clone(),
        };
        for coordinators in counts {
            let one = BenchArgs {
                feed: vec![feed],
                coordinators: vec![coordinators],
                ..args.clone()
            };
            runs.push((format!("feed {feed:?}, {coordinators} coordinator(s)"), one));
        }
    }
    compare(args, runs, report::print_by_feed).await
}

/// One run without telemetry and one with, reported side by side.
async fn compare_telemetry(args: &BenchArgs) -> anyhow::Result<()> {
    let runs = args.telemetry.iter().map(|&mode| {
        let one = BenchArgs {
            telemetry: vec![mode],
            ..args.clone()
        };
        (format!("with telemetry {mode:?}"), one)
    });
    compare(args, runs.collect(), report::print_by_telemetry).await
}

/// Measures each of `runs` on fresh databases, then prints them side by side (and writes
/// them all as JSON when asked).
async fn compare(
    args: &BenchArgs,
    runs: Vec<(String, BenchArgs)>,
    side_by_side: fn(&[report::Results]),
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for (what, one) in runs {
        eprintln!("{what} ...");
        let results = run_on_fresh_databases(&one).await?;
        report::print(&results);
        all.push(results);
    }
    side_by_side(&all);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One measurement, on databases made for it and dropped after it.
async fn run_on_fresh_databases(args: &BenchArgs) -> anyhow::Result<report::Results> {
    let scratch = tempfile::tempdir()?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut databases = Vec::new();
    let mut created = Vec::new();
    for service in ServiceName::ALL {
        let url = match args.engine {
            BenchEngine::Sqlite => format!(
                "sqlite://{}/{}.db",
                scratch.path().display(),
                service.as_str()
            ),
            BenchEngine::Postgres => {
                let name = format!(
                    "agilepm_bench_{}_{suffix}",
                    service.as_str().replace('-', "_")
                );
                ensure_database(&args.database_url, &name).await?;
                created.push(name.clone());
                with_database(&args.database_url, &name)?
            }
        };
        databases.push(url);
    }
    let outcome = measure(args, &databases).await;
    for name in created {
        drop_database(&args.database_url, &name).await?;
    }
    outcome
}

async fn measure(args: &BenchArgs, databases: &[String]) -> anyhow::Result<report::Results> {
    let task_url = &databases[1];
    let preloaded = if args.scale {
        let db = Db::connect(
            task_url,
            ServiceName::Task,
            4,
            agilepm_task::SPEC.migrations,
        )
        .await?;
        let started = Instant::now();
        agilepm_task::preload::preload(&db, 1_000_000).await?;
        eprintln!("pre-loaded 1,000,000 tasks in {:.1?}", started.elapsed());
        db.close().await;
        1_000_000
    } else {
        0
    };
    let subscribers = args.subscribers.first().copied().unwrap_or(0);
    let exporting = args.telemetry.first() == Some(&telemetry::Telemetry::On);
    let stop_telemetry = tokio_util::sync::CancellationToken::new();
    let sink = if exporting {
        Some(telemetry::Sink::start(stop_telemetry.clone()).await?)
    } else {
        None
    };
    let feed = args.feed.first().copied().unwrap_or_default();
    let coordinators = args.coordinators.first().copied().unwrap_or(1);
    let nats = match feed {
        FeedSource::Nats => Some(nats::PrivateNats::start(args.base_port + 20).await?),
        FeedSource::Grpc => None,
    };
    let services = processes::start_all(
        args.base_port,
        databases,
        subscribers,
        sink.as_ref().map(|(_, address)| *address),
        nats.as_ref().map(|nats| nats.url()),
        coordinators,
    )
    .await?;
    let scraping = sink.as_ref().map(|_| {
        let addresses = services.iter().filter_map(|s| s.metrics).collect();
        tokio::spawn(telemetry::scrape_until(addresses, stop_telemetry.clone()))
    });
    let ports = workload::Ports {
        backlog_item: services[0].port,
        task: services[1].port,
        planning: services[2].port,
    };
    eprintln!(
        "preparing {} items x {} tasks ...",
        args.items,
        workload::TASKS
    );
    let prepared = workload::prepare(&ports, args.items).await?;
    let notifier = services
        .iter()
        .find(|s| s.label == ServiceName::Notifier.as_str())
        .context("the notifier process")?;
    let webhooks = webhooks::subscribe(workload::channel(notifier.port)?, args.webhooks).await?;
    let mut idle = workload::idle_subscribers(ports.task, subscribers).await?;
    eprintln!("estimating with {} clients ...", args.clients);
    let server = args.engine == BenchEngine::Postgres;
    let cpu_before = cpu_by_process(&services, server, nats.as_ref());
    let outcome = workload::run(&ports, &prepared, args.clients, args.rate).await?;
    let cpu_after = cpu_by_process(&services, server, nats.as_ref());
    stop_telemetry.cancel();
    let scrapes = match scraping {
        Some(scraping) => scraping.await?,
        None => 0,
    };
    let spans_exported = sink.as_ref().map_or(0, |(sink, _)| sink.spans());
    let webhooks = match webhooks {
        Some(webhooks) => {
            eprintln!("waiting for the webhook deliveries ...");
            Some(
                webhooks
                    .measure(outcome.items_done, Duration::from_secs(120))
                    .await?,
            )
        }
        None => None,
    };
    idle.abort_all();
    let cpu_seconds = cpu_after
        .into_iter()
        .map(|(name, after)| {
            let before = cpu_before.get(&name).copied().unwrap_or(0.0);
            (name, after - before)
        })
        .collect();
    let rss_mib = services
        .iter()
        .map(|s| (s.label.clone(), s.peak_rss_mib().unwrap_or(0.0)))
        .collect();
    // Dependants first, so nobody logs its peer's disappearance.
    for service in services.into_iter().rev() {
        service.stop().await;
    }
    if let Some(nats) = nats {
        nats.stop().await;
    }
    eprintln!("baselines ...");
    let pgbench_tps = match args.engine {
        BenchEngine::Postgres => Some(
            baseline::pgbench_tps(&args.database_url, args.clients, args.baseline_seconds).await?,
        ),
        BenchEngine::Sqlite => None,
    };
    let empty_rpc_per_sec =
        baseline::empty_rpc_per_sec(args.clients, args.baseline_seconds).await?;
    let mut results = report::Results::new(
        args,
        preloaded,
        &outcome,
        rss_mib,
        cpu_seconds,
        pgbench_tps,
        empty_rpc_per_sec,
    );
    results.webhooks = webhooks;
    results.telemetry = exporting.then_some(report::TelemetryCost {
        spans_exported,
        scrapes,
    });
    Ok(results)
}

/// CPU seconds used so far by each service, by this load generator, by the bench's NATS
/// server and, with `postgres_server`, by all of the local PostgreSQL server's processes
/// together.
fn cpu_by_process(
    services: &[processes::ServiceProcess],
    postgres_server: bool,
    nats: Option<&nats::PrivateNats>,
) -> BTreeMap<String, f64> {
    let mut cpu: BTreeMap<String, f64> = services
        .iter()
        .map(|s| (s.label.clone(), s.cpu_seconds().unwrap_or(0.0)))
        .collect();
    if let Some(nats) = nats {
        cpu.insert("nats-server".to_owned(), nats.cpu_seconds().unwrap_or(0.0));
    }
    cpu.insert(
        "load generator".to_owned(),
        processes::cpu_seconds_of(std::process::id()).unwrap_or(0.0),
    );
    if postgres_server {
        cpu.insert(
            "postgres server".to_owned(),
            processes::cpu_seconds_of_all("postgres"),
        );
    }
    cpu
}
