//! The run's summary: the human line (the fields of `paxosctl bench`'s
//! summary line, in its order) and the one JSON object of `--json`.

use crate::load::Tally;
use serde_json::{Value, json};

/// Everything printed about one run.
#[derive(Debug)]
pub struct Summary {
    pub workload: &'static str,
    pub clients: usize,
    pub value_bytes: usize,
    pub keys_per_client: usize,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub connections: usize,
    /// CPU time (user + system, every thread) this process used during the
    /// timed part: how close the generator came to being the bottleneck.
    pub generator_cpu_s: f64,
    pub tally: Tally,
}

impl Summary {
    /// From the start of the timed part to the end of its last operation,
    /// as `paxosctl bench` measures it: at least the duration.
    pub fn elapsed_s(&self) -> f64 {
        self.tally.last_end.as_secs_f64().max(self.duration_s as f64)
    }

    pub fn ops_per_s(&self) -> f64 {
        self.tally.ops as f64 / self.elapsed_s().max(1e-9)
    }

    fn ms_at(&self, quantile: f64) -> f64 {
        self.tally.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.tally.latency_us.max() as f64 / 1000.0
    }

    /// Percent of one core, during the timed part.
    fn generator_cpu_pct(&self) -> f64 {
        100.0 * self.generator_cpu_s / (self.duration_s.max(1) as f64)
    }

    /// `paxosctl bench`'s summary line (precondition_failed only for cas),
    /// then the generator's CPU.
    pub fn human_line(&self) -> String {
        let precondition_failed = match self.workload {
            "cas" => format!(" precondition_failed={}", self.tally.precondition_failed),
            _ => String::new(),
        };
        format!(
            "workload={} clients={} value_bytes={} ops={} errors={}{precondition_failed} ops_per_s={:.0} \
             p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} generator_cpu_pct={:.0}",
            self.workload,
            self.clients,
            self.value_bytes,
            self.tally.ops,
            self.tally.errors(),
            self.ops_per_s(),
            self.ms_at(0.5),
            self.ms_at(0.9),
            self.ms_at(0.99),
            self.ms_at(0.999),
            self.max_ms(),
            self.generator_cpu_pct(),
        )
    }

    /// The fields `paxosctl bench --json` has too come first, in its order;
    /// then what only this generator reports.
    pub fn json(&self) -> Value {
        let round = |x: f64, digits: i32| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
        json!({
            "workload": self.workload,
            "clients": self.clients,
            "ops": self.tally.ops,
            "errors": self.tally.errors(),
            "errors_by_kind": self.tally.errors_by_kind,
            "precondition_failed": self.tally.precondition_failed,
            "elapsed_s": round(self.elapsed_s(), 6),
            "ops_per_s": round(self.ops_per_s(), 1),
            "p50_ms": self.ms_at(0.5),
            "p90_ms": self.ms_at(0.9),
            "p99_ms": self.ms_at(0.99),
            "p999_ms": self.ms_at(0.999),
            "max_ms": self.max_ms(),
            "per_second": self.tally.per_second,
            "per_second_errors": self.tally.per_second_errors,
            "value_bytes": self.value_bytes,
            "keys_per_client": self.keys_per_client,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "connections": self.connections,
            "generator_cpu_s": round(self.generator_cpu_s, 3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        let mut tally = Tally::new(2);
        for us in [1000, 2000, 3000, 4000] {
            tally.latency_us.record(us).expect("in bounds");
        }
        tally.ops = 4;
        tally.precondition_failed = 1;
        tally.errors_by_kind.insert("unavailable", 2);
        tally.per_second = vec![3, 1];
        tally.per_second_errors = vec![0, 2];
        tally.last_end = std::time::Duration::from_millis(2500);
        Summary {
            workload: "cas",
            clients: 2,
            value_bytes: 100,
            keys_per_client: 16,
            duration_s: 2,
            warmup_s: 1,
            connections: 2,
            generator_cpu_s: 0.5,
            tally,
        }
    }

    #[test]
    fn the_human_line_has_the_fields_of_paxosctl_bench() {
        assert_eq!(
            summary().human_line(),
            "workload=cas clients=2 value_bytes=100 ops=4 errors=2 precondition_failed=1 ops_per_s=2 \
             p50_ms=2.00 p90_ms=4.00 p99_ms=4.00 p999_ms=4.00 max_ms=4.00 generator_cpu_pct=25"
        );
    }

    /// HDR histograms answer with the top of a value's bucket: 4000 µs is
    /// 4.001 ms at three significant digits, as in `paxosctl bench`.
    #[test]
    fn the_json_object_has_every_field_in_order() {
        assert_eq!(
            summary().json().to_string(),
            r#"{"workload":"cas","clients":2,"ops":4,"errors":2,"errors_by_kind":{"unavailable":2},"#
                .to_owned()
                + r#""precondition_failed":1,"elapsed_s":2.5,"ops_per_s":1.6,"p50_ms":2.0,"p90_ms":4.001,"p99_ms":4.001,"#
                + r#""p999_ms":4.001,"max_ms":4.001,"per_second":[3,1],"per_second_errors":[0,2],"value_bytes":100,"keys_per_client":16,"#
                + r#""duration_s":2,"warmup_s":1,"connections":2,"generator_cpu_s":0.5}"#
        );
    }
}
