//! The monitor's Prometheus metrics (prometheus-client), and the small HTTP
//! server that serves them on `/metrics` (loopback by default). Every
//! request is bounded: one path, GET only, no body read, a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    pub environment: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub environment: String,
    pub rule: String,
    pub severity: String,
}

/// Every metric the monitor keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub job_last_start: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub job_last_duration: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub job_last_success: Family<JobLabels, Gauge>,
    pub job_ports_scanned: Family<JobLabels, Gauge>,
    pub job_runs: Family<JobLabels, Counter>,
    pub open_ports: Family<EnvironmentLabels, Gauge>,
    pub findings: Family<FindingLabels, Gauge>,
    pub alerts_sent: Family<ChannelLabels, Counter>,
    pub alerts_failed: Family<ChannelLabels, Counter>,
    pub outbox_depth: Family<ChannelLabels, Gauge>,
    pub channel_failing: Family<ChannelLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("perimeter");
        let metrics = Metrics {
            registry: Registry::default(),
            job_last_start: Family::default(),
            job_last_duration: Family::default(),
            job_last_success: Family::default(),
            job_ports_scanned: Family::default(),
            job_runs: Family::default(),
            open_ports: Family::default(),
            findings: Family::default(),
            alerts_sent: Family::default(),
            alerts_failed: Family::default(),
            outbox_depth: Family::default(),
            channel_failing: Family::default(),
        };
        registry.register(
            "job_last_run_start_timestamp_seconds",
            "When the job's last run started (Unix time)",
            metrics.job_last_start.clone(),
        );
        registry.register(
            "job_last_run_duration_seconds",
            "How long the job's last run took",
            metrics.job_last_duration.clone(),
        );
        registry.register(
            "job_last_run_success",
            "1 when the job's last run completed, 0 when it failed or stopped early",
            metrics.job_last_success.clone(),
        );
        registry.register(
            "job_last_run_ports_scanned",
            "Address and port pairs the job's last run probed",
            metrics.job_ports_scanned.clone(),
        );
        registry.register("job_runs", "Runs of the job", metrics.job_runs.clone());
        registry.register(
            "open_ports",
            "Open ports the scan jobs last saw, by environment (none: no environment claims them)",
            metrics.open_ports.clone(),
        );
        registry.register(
            "findings",
            "Findings the jobs last saw, by environment, rule and severity",
            metrics.findings.clone(),
        );
        registry.register(
            "alerts_sent",
            "Alerts delivered, by channel",
            metrics.alerts_sent.clone(),
        );
        registry.register(
            "alert_delivery_failures",
            "Failed delivery attempts, by channel",
            metrics.alerts_failed.clone(),
        );
        registry.register(
            "outbox_pending",
            "Alerts waiting to be delivered, by channel",
            metrics.outbox_depth.clone(),
        );
        registry.register(
            "channel_failing",
            "1 while a channel keeps failing to deliver",
            metrics.channel_failing.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The metrics in Prometheus' classic text format (0.0.4), for scrapers
    /// and tools that do not ask for OpenMetrics (`promtool check metrics`,
    /// curl). prometheus-client writes only OpenMetrics, where a counter's
    /// HELP and TYPE name the family (`x`) and its sample `x_total`; the
    /// classic format wants one name for all three, and has no `# UNIT` or
    /// `# EOF`. No crate converts between the two, so this does, line by
    /// line, over the text prometheus-client wrote.
    pub fn encode_classic(&self) -> String {
        to_classic(&self.encode())
    }
}

fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Serves `/metrics` on `address` until `stop` fires.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<std::sync::Mutex<Metrics>>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let handler = move |headers: axum::http::HeaderMap| {
        let metrics = Arc::clone(&metrics);
        async move {
            // OpenMetrics for a scraper that asks for it (Prometheus does),
            // the classic text format otherwise.
            let openmetrics = headers
                .get_all(axum::http::header::ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.contains("application/openmetrics-text"));
            let encode = |m: &Metrics| {
                if openmetrics {
                    m.encode()
                } else {
                    m.encode_classic()
                }
            };
            let body = metrics
                .lock()
                .map(|m| encode(&m))
                .unwrap_or_else(|poisoned| encode(&poisoned.into_inner()));
            let content_type = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            ([(axum::http::header::CONTENT_TYPE, content_type)], body)
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(handler))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(0));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_once_and_has_no_openmetrics_lines() {
        let metrics = Metrics::new();
        metrics
            .job_runs
            .get_or_create(&JobLabels { job: "edge".into() })
            .inc();
        let open = metrics.encode();
        assert!(open.contains("# TYPE perimeter_job_runs counter"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        let classic = metrics.encode_classic();
        assert!(
            classic.contains("# HELP perimeter_job_runs_total Runs of the job"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE perimeter_job_runs_total counter"),
            "{classic}"
        );
        assert!(
            classic.contains("perimeter_job_runs_total{job=\"edge\"} 1"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"), "{classic}");
        // Gauges keep their names.
        metrics
            .outbox_depth
            .get_or_create(&ChannelLabels {
                channel: "ops".into(),
            })
            .set(2);
        let classic = metrics.encode_classic();
        assert!(
            classic.contains("# TYPE perimeter_outbox_pending gauge"),
            "{classic}"
        );
        assert!(
            classic.contains("perimeter_outbox_pending{channel=\"ops\"} 2"),
            "{classic}"
        );
    }
}
