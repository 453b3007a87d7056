//! The comparison table: one row per metric, one column per broker, then ratio columns:
//! the first broker's value divided by each other broker's, or, with reference brokers
//! ([`Table::against`]), each other broker's value divided by each reference's.

use crate::scenario::{Better, Metric};

pub struct Table {
    brokers: Vec<String>,
    /// Row label, direction, one cell per broker.
    rows: Vec<(String, Better, Vec<Option<Metric>>)>,
    notes: Vec<String>,
    /// Ratio columns: (numerator, denominator) broker indices.
    ratios: Vec<(usize, usize)>,
}

impl Table {
    pub fn new(brokers: Vec<String>) -> Table {
        let ratios = (1..brokers.len()).map(|j| (0, j)).collect();
        Table {
            brokers,
            rows: Vec::new(),
            notes: Vec::new(),
            ratios,
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
                self.rows.push((m.label.clone(), m.better, vec![None; n]));
                self.rows.len() - 1
            }
        };
        self.rows[row].2[col] = Some(m);
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
                r.push(c.as_ref().map_or("-".into(), |m| m.text.clone()));
            }
            for &(n, d) in &self.ratios {
                r.push(ratio(*better, cells[n].as_ref(), cells[d].as_ref()));
            }
            lines.push(row(&r));
        }
        let mut out = lines.join("\n");
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

fn ratio(better: Better, a: Option<&Metric>, b: Option<&Metric>) -> String {
    if better == Better::Info {
        return String::new();
    }
    match (a, b) {
        (Some(a), Some(b)) if b.value > 0.0 && a.value.is_finite() => {
            format!("{:.2}", a.value / b.value)
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(v: f64) -> Metric {
        Metric {
            label: "x: msg/s".into(),
            better: Better::Higher,
            value: v,
            text: v.to_string(),
        }
    }

    fn table(names: &[&str]) -> Table {
        let mut t = Table::new(names.iter().map(|s| s.to_string()).collect());
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
}
