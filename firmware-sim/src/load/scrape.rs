//! `/metrics` scraped once a second while a measurement runs, as a Prometheus server would, to
//! show what scraping costs the hub (`brume-sim bench --scrape-metrics`).
//!
//! Each scrape is one GET on a new connection ([`hub::http::client::get`], what `brume status`
//! uses); it succeeds when the answer is 200 with at least one `brume_` series.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often `/metrics` is fetched.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Longest one scrape may take before it counts as failed.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure reasons kept (the count is always complete).
const KEPT_REASONS: usize = 3;

/// What the scrapes of one or more measurements saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrapeStats {
    /// Scrapes attempted.
    pub scrapes: u64,
    pub failures: u64,
    /// The first few reasons of failure.
    pub reasons: Vec<String>,
    /// Duration of each successful scrape, in microseconds.
    pub durations_us: Vec<f64>,
    /// Body size of each successful scrape, in bytes.
    pub body_bytes: Vec<usize>,
}

impl ScrapeStats {
    fn fail(&mut self, reason: String) {
        self.failures += 1;
        if self.reasons.len() < KEPT_REASONS {
            self.reasons.push(reason);
        }
    }

    /// Adds the scrapes of another measurement.
    pub fn merge(&mut self, other: ScrapeStats) {
        self.scrapes += other.scrapes;
        self.failures += other.failures;
        for r in other.reasons {
            if self.reasons.len() < KEPT_REASONS {
                self.reasons.push(r);
            }
        }
        self.durations_us.extend(other.durations_us);
        self.body_bytes.extend(other.body_bytes);
    }

    /// One line for the report's notes.
    pub fn summary(&self) -> String {
        let mut durations = self.durations_us.clone();
        durations.sort_by(f64::total_cmp);
        let mut sizes = self.body_bytes.clone();
        sizes.sort_unstable();
        let mut line = format!(
            "/metrics scraped every {} s during each scraped Brume measurement: {} scrapes, {} failed",
            INTERVAL.as_secs(),
            self.scrapes,
            self.failures
        );
        if let (Some(d50), Some(dmax), Some(b50), Some(bmax)) = (
            upper_median(&durations),
            durations.last(),
            upper_median(&sizes),
            sizes.last(),
        ) {
            line.push_str(&format!(
                "; duration p50 {:.2} ms, max {:.2} ms; body p50 {b50} bytes, max {bmax} bytes",
                d50 / 1e3,
                dmax / 1e3
            ));
        }
        if !self.reasons.is_empty() {
            line.push_str(&format!(" (first failures: {})", self.reasons.join("; ")));
        }
        line
    }
}

fn upper_median<T: Copy>(sorted: &[T]) -> Option<T> {
    sorted.get(sorted.len() / 2).copied()
}

/// Whether a `/metrics` answer is a good one: 200 and at least one `brume_` series (a sample
/// line, not only comments).
pub fn check(status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
    if text.lines().any(|l| l.starts_with("brume_")) {
        Ok(())
    } else {
        Err(format!("no brume_ series in {} bytes", body.len()))
    }
}

/// A scraper running beside a measurement.
pub struct Scraper {
    stop: CancellationToken,
    task: JoinHandle<ScrapeStats>,
}

impl Scraper {
    /// Starts scraping `base` (`http://host:port`) now and then every [`INTERVAL`].
    pub fn start(base: String) -> Scraper {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut stats = ScrapeStats::default();
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => return stats,
                    _ = tick.tick() => {}
                }
                stats.scrapes += 1;
                let t0 = Instant::now();
                let got =
                    tokio::time::timeout(SCRAPE_TIMEOUT, hub::http::client::get(&base, "/metrics"))
                        .await;
                let took = t0.elapsed();
                match got {
                    Err(_) => stats.fail(format!("no answer within {SCRAPE_TIMEOUT:?}")),
                    Ok(Err(e)) => stats.fail(e.to_string()),
                    Ok(Ok((status, body))) => match check(status, &body) {
                        Ok(()) => {
                            stats.durations_us.push(took.as_secs_f64() * 1e6);
                            stats.body_bytes.push(body.len());
                        }
                        Err(reason) => stats.fail(reason),
                    },
                }
            }
        });
        Scraper { stop, task }
    }

    /// Stops scraping and answers what was seen.
    pub async fn finish(self) -> ScrapeStats {
        self.stop.cancel();
        match self.task.await {
            Ok(stats) => stats,
            Err(e) => {
                let mut stats = ScrapeStats::default();
                stats.fail(format!("scraper task: {e}"));
                stats
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_answer_is_200_with_brume_series() {
        let body =
            b"# HELP brume_sessions Sessions\n# TYPE brume_sessions gauge\nbrume_sessions 3\n";
        assert_eq!(check(200, body), Ok(()));
        assert_eq!(check(401, body), Err("status 401".into()));
        assert!(check(200, b"# HELP brume_x only comments\n").is_err());
        assert!(check(200, b"other_series 1\n").is_err());
        assert!(check(200, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn summary_gives_counts_and_percentiles() {
        let mut a = ScrapeStats {
            scrapes: 2,
            durations_us: vec![3000.0, 1000.0],
            body_bytes: vec![900, 1000],
            ..Default::default()
        };
        let mut b = ScrapeStats {
            scrapes: 2,
            durations_us: vec![2000.0],
            body_bytes: vec![950],
            ..Default::default()
        };
        b.fail("status 500".into());
        a.merge(b);
        assert_eq!(
            a.summary(),
            "/metrics scraped every 1 s during each scraped Brume measurement: 4 scrapes, 1 failed; \
             duration p50 2.00 ms, max 3.00 ms; body p50 950 bytes, max 1000 bytes \
             (first failures: status 500)"
        );
        assert_eq!(
            ScrapeStats::default().summary(),
            "/metrics scraped every 1 s during each scraped Brume measurement: 0 scrapes, 0 failed"
        );
    }
}
