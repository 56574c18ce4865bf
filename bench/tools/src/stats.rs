//! Latencies of a closed-loop run and the one `BENCH k=v ...` line `bench/table.py` reads, in the
//! same shape as `bench/call.lua` prints for wrk.

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Latency of every completed unit (a call, or a whole turn), in microseconds.
    pub latencies_us: Vec<u32>,
    /// HTTP requests sent (a turn is three).
    pub http_requests: u64,
    /// Units that failed at the HTTP level (connect, timeout, status).
    pub errors: u64,
    /// Units answered but not with the expected reply.
    pub bad_replies: u64,
}

impl Run {
    /// Adds another connection's run.
    pub fn merge(&mut self, other: Run) {
        self.latencies_us.extend(other.latencies_us);
        self.http_requests += other.http_requests;
        self.errors += other.errors;
        self.bad_replies += other.bad_replies;
    }

    /// The `BENCH` line for a run that lasted `seconds`.
    pub fn bench_line(mut self, seconds: f64) -> String {
        self.latencies_us.sort_unstable();
        let units = self.latencies_us.len();
        format!(
            "BENCH requests={units} rps={:.1} p50_ms={:.3} p99_ms={:.3} errors={} bad_replies={} http_requests={}",
            units as f64 / seconds.max(1e-9),
            f64::from(percentile(&self.latencies_us, 50.0)) / 1000.0,
            f64::from(percentile(&self.latencies_us, 99.0)) / 1000.0,
            self.errors,
            self.bad_replies,
            self.http_requests,
        )
    }
}

/// The `q`th percentile (nearest rank) of sorted values; 0 for none.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn the_line_has_what_the_table_reads() {
        let run = Run {
            latencies_us: vec![300, 100, 200],
            http_requests: 9,
            errors: 1,
            bad_replies: 0,
        };
        assert_eq!(
            run.bench_line(2.0),
            "BENCH requests=3 rps=1.5 p50_ms=0.200 p99_ms=0.300 errors=1 bad_replies=0 http_requests=9"
        );
    }
}
