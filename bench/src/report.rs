//! What a run measured, and the table or JSON document made of all runs.

use serde::Serialize;
use serde_json::{Value, json};

use crate::procfs::ThreadShare;
use crate::server::Target;

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
}

/// One thing a run must have got right (nothing lost, all held, …).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What one run of a scenario against one server produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub figures: Vec<Figure>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// How the server's CPU time over the measured interval was spread over
    /// its threads (the busiest one's name, ticks and share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_threads: Option<ThreadShare>,
}

impl Outcome {
    pub fn fig(&mut self, name: &str, unit: &'static str, value: f64) {
        self.figures.push(Figure {
            name: name.to_owned(),
            unit,
            value,
        });
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// One run: which target, which round, what came out.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub target: Target,
    pub run: usize,
    pub outcome: Outcome,
    /// What the server logged besides `listening on` (first lines only).
    pub server_log: Vec<String>,
}

/// All runs of one scenario.
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub params: Value,
    pub targets: Vec<Target>,
    pub runs: Vec<RunRecord>,
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A figure's per-target medians and the switchboard/baseline ratio.
struct Row {
    name: String,
    unit: &'static str,
    medians: Vec<Option<f64>>,
    ratio: Option<f64>,
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let mut names: Vec<(String, &'static str)> = Vec::new();
        for run in &self.runs {
            for figure in &run.outcome.figures {
                if !names.iter().any(|(name, _)| *name == figure.name) {
                    names.push((figure.name.clone(), figure.unit));
                }
            }
        }
        names
            .into_iter()
            .map(|(name, unit)| {
                let medians: Vec<Option<f64>> = self
                    .targets
                    .iter()
                    .map(|&target| {
                        let mut values: Vec<f64> = self
                            .runs
                            .iter()
                            .filter(|run| run.target == target)
                            .flat_map(|run| run.outcome.figures.iter())
                            .filter(|figure| figure.name == name)
                            .map(|figure| figure.value)
                            .collect();
                        median(&mut values)
                    })
                    .collect();
                let of = |target| {
                    self.targets
                        .iter()
                        .position(|&t| t == target)
                        .and_then(|i| medians[i])
                };
                let ratio = match (of(Target::Switchboard), of(Target::Baseline)) {
                    (Some(s), Some(b)) if b != 0.0 => Some(s / b),
                    _ => None,
                };
                Row {
                    name,
                    unit,
                    medians,
                    ratio,
                }
            })
            .collect()
    }

    pub fn all_checks_pass(&self) -> bool {
        self.runs
            .iter()
            .all(|run| run.outcome.checks.iter().all(|check| check.ok))
    }

    pub fn to_json(&self) -> Value {
        let summary: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|row| {
                let mut medians = serde_json::Map::new();
                for (target, median) in self.targets.iter().zip(&row.medians) {
                    medians.insert(target.name().to_owned(), json!(median));
                }
                json!({
                    "figure": row.name,
                    "unit": row.unit,
                    "median": medians,
                    "ratio_switchboard_over_baseline": row.ratio,
                })
            })
            .collect();
        json!({
            "scenario": self.scenario,
            "description": self.description,
            "params": self.params,
            "targets": self.targets,
            "summary": summary,
            "all_checks_pass": self.all_checks_pass(),
            "runs": self.runs,
        })
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let per_target = self.runs.len() / self.targets.len().max(1);
        out.push_str(&format!(
            "== {}: {} ({} run{} per target; medians)\n",
            self.scenario,
            self.description,
            per_target,
            if per_target == 1 { "" } else { "s" }
        ));
        let mut header = format!("{:<34} {:<6}", "figure", "unit");
        for target in &self.targets {
            header.push_str(&format!(" {:>13}", target.name()));
        }
        if self.targets.len() > 1 {
            header.push_str(&format!(" {:>9}", "sb/base"));
        }
        out.push_str(&header);
        out.push('\n');
        for row in self.rows() {
            let mut line = format!("{:<34} {:<6}", row.name, row.unit);
            for median in &row.medians {
                line.push_str(&format!(
                    " {:>13}",
                    median.map_or_else(|| "-".to_owned(), number)
                ));
            }
            if self.targets.len() > 1 {
                line.push_str(&format!(
                    " {:>9}",
                    row.ratio
                        .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
                ));
            }
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("runs:\n");
        for run in &self.runs {
            let values: Vec<String> = run
                .outcome
                .figures
                .iter()
                .map(|f| format!("{}={}", f.name, number(f.value)))
                .collect();
            out.push_str(&format!(
                "  {} #{}: {}\n",
                run.target.name(),
                run.run,
                values.join("  ")
            ));
        }
        let checks: Vec<String> = self
            .runs
            .iter()
            .flat_map(|run| {
                run.outcome.checks.iter().map(move |check| {
                    format!(
                        "  [{}] {} #{}: {} — {}\n",
                        if check.ok { "ok" } else { "FAIL" },
                        run.target.name(),
                        run.run,
                        check.name,
                        check.detail
                    )
                })
            })
            .collect();
        if !checks.is_empty() {
            out.push_str("checks:\n");
            for check in checks {
                out.push_str(&check);
            }
        }
        let notes: Vec<String> = self
            .runs
            .iter()
            .flat_map(|run| {
                run.outcome
                    .notes
                    .iter()
                    .map(move |note| format!("  {} #{}: {note}\n", run.target.name(), run.run))
                    .chain(run.server_log.iter().map(move |line| {
                        format!("  {} #{} server log: {line}\n", run.target.name(), run.run)
                    }))
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("notes:\n");
            for note in notes {
                out.push_str(&note);
            }
        }
        out
    }
}

/// A number for the table: thousands separated when large, a few decimals when small.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let abs = value.abs();
    if abs >= 10_000.0 {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if rounded < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if abs >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}
