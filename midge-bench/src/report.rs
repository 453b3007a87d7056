//! The comparison table: one row per metric, one column per broker, then ratio columns:
//! the first broker's value divided by each other broker's, or, with reference brokers
//! ([`Table::against`]), each other broker's value divided by each reference's.
//!
//! With several runs of each scenario (`run --repeat N`) a cell is the median of the runs
//! with their range, and the ratios are ratios of the medians.

use crate::scenario::{fmt_num, Better, Metric};

pub struct Table {
    brokers: Vec<String>,
    /// Row label, direction, one cell per broker: the metric of each run.
    rows: Vec<(String, Better, Vec<Vec<Metric>>)>,
    notes: Vec<String>,
    /// Ratio columns: (numerator, denominator) broker indices.
    ratios: Vec<(usize, usize)>,
    /// Runs of each scenario against each broker.
    runs: usize,
}

/// The middle of several runs' values and their range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The middle value; with an even count, the mean of the two middle ones.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Median and range of `values`; `None` for none.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

impl Table {
    /// A table of `brokers`, each scenario run `runs` times against each.
    pub fn new(brokers: Vec<String>, runs: usize) -> Table {
        let ratios = (1..brokers.len()).map(|j| (0, j)).collect();
        Table {
            brokers,
            rows: Vec::new(),
            notes: Vec::new(),
            ratios,
            runs: runs.max(1),
        }
    }

    /// Makes `refs` the reference brokers: for each of them in turn, one ratio column per
    /// broker not among them (its value / the reference's).
    pub fn against(&mut self, refs: &[String]) -> Result<(), String> {
        let mut idx = Vec::new();
        for r in refs {
            match self.brokers.iter().position(|b| b == r) {
                Some(i) if !idx.contains(&i) => idx.push(i),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "--against {r:?}: no such broker (have: {})",
                        self.brokers.join(", ")
                    ))
                }
            }
        }
        self.ratios = idx
            .iter()
            .flat_map(|&d| {
                (0..self.brokers.len())
                    .filter(|n| !idx.contains(n))
                    .map(move |n| (n, d))
            })
            .collect();
        Ok(())
    }

    pub fn add(&mut self, broker: &str, m: Metric) {
        let Some(col) = self.brokers.iter().position(|b| b == broker) else {
            return;
        };
        let n = self.brokers.len();
        let row = match self.rows.iter().position(|r| r.0 == m.label) {
            Some(i) => i,
            None => {
                self.rows
                    .push((m.label.clone(), m.better, vec![Vec::new(); n]));
                self.rows.len() - 1
            }
        };
        self.rows[row].2[col].push(m);
    }

    pub fn note(&mut self, broker: &str, scenario: &str, text: String) {
        self.notes.push(format!("{scenario}, {broker}: {text}"));
    }

    pub fn markdown(&self) -> String {
        let mut head = vec!["scenario".to_owned(), "better".to_owned()];
        head.extend(self.brokers.iter().cloned());
        for &(n, d) in &self.ratios {
            head.push(format!("{} / {}", self.brokers[n], self.brokers[d]));
        }
        let mut lines = vec![row(&head), row(&vec!["---".to_owned(); head.len()])];
        for (label, better, cells) in &self.rows {
            let mut r = vec![
                label.replace('|', "\\|"),
                match better {
                    Better::Higher => "higher".into(),
                    Better::Lower => "lower".into(),
                    Better::Info => String::new(),
                },
            ];
            for c in cells {
                r.push(cell_text(c, self.runs));
            }
            for &(n, d) in &self.ratios {
                r.push(ratio(*better, median(&cells[n]), median(&cells[d])));
            }
            lines.push(row(&r));
        }
        let mut out = lines.join("\n");
        if self.runs > 1 {
            out.push_str(&format!(
                "\n\nEach cell: the median of {} runs (lowest–highest); ratios are of the medians.\n",
                self.runs
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\n\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

fn row(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

/// The median of a cell's runs.
fn median(cell: &[Metric]) -> Option<f64> {
    let values: Vec<f64> = cell.iter().map(|m| m.value).collect();
    spread(&values).map(|s| s.median)
}

/// One run: its text. Several: the median and the range (for counts to read, each run's
/// text unless they all agree), and how many runs there are when some are missing.
fn cell_text(cell: &[Metric], runs: usize) -> String {
    let text = match cell {
        [] => return "-".into(),
        [m] => m.text.clone(),
        [first, ..] if first.better == Better::Info => {
            if cell.iter().all(|m| m.text == first.text) {
                first.text.clone()
            } else {
                let texts: Vec<&str> = cell.iter().map(|m| m.text.as_str()).collect();
                texts.join("; ")
            }
        }
        [first, ..] => {
            let values: Vec<f64> = cell.iter().map(|m| m.value).collect();
            let d = first.decimals;
            match spread(&values) {
                Some(s) => format!(
                    "{} ({}–{})",
                    fmt_num(s.median, d),
                    fmt_num(s.min, d),
                    fmt_num(s.max, d)
                ),
                None => "-".into(),
            }
        }
    };
    if cell.len() < runs {
        format!("{text} ({} of {runs} runs)", cell.len())
    } else {
        text
    }
}

fn ratio(better: Better, a: Option<f64>, b: Option<f64>) -> String {
    if better == Better::Info {
        return String::new();
    }
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(v: f64) -> Metric {
        Metric::num("x: msg/s".into(), Better::Higher, v, 0)
    }

    fn table(names: &[&str]) -> Table {
        let mut t = Table::new(names.iter().map(|s| s.to_string()).collect(), 1);
        for (i, n) in names.iter().enumerate() {
            t.add(n, metric(10.0 * (i + 1) as f64));
        }
        t
    }

    #[test]
    fn first_against_each_other_by_default() {
        let md = table(&["a", "b", "c"]).markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | better | a | b | c | a / b | a / c |"
        );
        assert_eq!(
            lines[2],
            "| x: msg/s | higher | 10 | 20 | 30 | 0.50 | 0.33 |"
        );
    }

    #[test]
    fn others_against_each_reference() {
        let mut t = table(&["a", "b", "m", "n"]);
        t.against(&["m".into(), "n".into()]).unwrap();
        let md = t.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | better | a | b | m | n | a / m | b / m | a / n | b / n |"
        );
        assert_eq!(
            lines[2],
            "| x: msg/s | higher | 10 | 20 | 30 | 40 | 0.33 | 0.67 | 0.25 | 0.50 |"
        );
        assert!(t.against(&["z".into()]).is_err());
    }

    #[test]
    fn spread_is_median_and_range() {
        assert_eq!(spread(&[]), None);
        let one = spread(&[5.0]).unwrap();
        assert_eq!((one.median, one.min, one.max), (5.0, 5.0, 5.0));
        let odd = spread(&[30.0, 10.0, 20.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (20.0, 10.0, 30.0));
        let even = spread(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        // An outlier moves the range, not the median.
        let outlier = spread(&[100.0, 101.0, 99.0, 1.0, 100.5]).unwrap();
        assert_eq!(
            (outlier.median, outlier.min, outlier.max),
            (100.0, 1.0, 101.0)
        );
    }

    #[test]
    fn repeated_runs_show_median_range_and_ratio_of_medians() {
        let mut t = Table::new(vec!["a".into(), "b".into()], 3);
        for v in [10.0, 30.0, 20.0] {
            t.add("a", metric(v));
        }
        for v in [5.0, 4.0, 100.0] {
            t.add("b", metric(v));
        }
        let md = t.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[2],
            "| x: msg/s | higher | 20 (10–30) | 5 (4–100) | 4.00 |"
        );
        assert!(md.contains("the median of 3 runs"));
    }

    #[test]
    fn repeated_runs_missing_runs_and_counts() {
        let mut t = Table::new(vec!["a".into(), "b".into()], 3);
        for v in [10.0, 20.0] {
            t.add("a", metric(v));
        }
        t.add("b", metric(7.0));
        for (b, lost) in [("a", 0.0), ("a", 0.0), ("b", 0.0), ("b", 3.0)] {
            t.add(b, Metric::info("x: lost".into(), lost, format!("{lost}")));
        }
        let md = t.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[2],
            "| x: msg/s | higher | 15 (10–20) (2 of 3 runs) | 7 (1 of 3 runs) | 2.14 |"
        );
        assert_eq!(
            lines[3],
            "| x: lost |  | 0 (2 of 3 runs) | 0; 3 (2 of 3 runs) |  |"
        );
    }
}
