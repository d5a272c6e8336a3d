//! Reading a process's metrics as Prometheus does: `GET /metrics` over plain HTTP, the
//! text format parsed into samples.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One scrape: every sample, by series name.
#[derive(Debug, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
    /// The body as served, for failure messages.
    pub text: String,
}

/// A sample: its series name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// E.g. `rpc_server_call_duration_seconds_count`.
    pub name: String,
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Scrape {
    /// Scrapes `http://address/metrics`.
    pub async fn of(address: SocketAddr) -> anyhow::Result<Scrape> {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response}"))?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        anyhow::ensure!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{head}"
        );
        Ok(Scrape::parse(body))
    }

    /// Parses the Prometheus text format.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Scrape {
            samples,
            text: text.to_owned(),
        }
    }

    /// The samples of series `name` whose labels include every one of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).is_some_and(|value| value == v))
        })
    }

    /// The sum of the samples [`Scrape::samples`] finds, `None` when it finds none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples(name, labels).peekable();
        found.peek()?;
        Some(found.map(|sample| sample.value).sum())
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let mut labels = BTreeMap::new();
            let mut rest = rest.strip_suffix('}')?;
            while let Some((key, after)) = rest.split_once("=\"") {
                // Values here never hold an escaped quote.
                let (value, after) = after.split_once('"')?;
                labels.insert(key.trim_start_matches(',').to_owned(), value.to_owned());
                rest = after;
            }
            (name.to_owned(), labels)
        }
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A loopback address with a port the kernel just handed out and took back, for a
/// process to bind.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}
