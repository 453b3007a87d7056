//! The comparison table: one row per metric, one column per broker, then the first
//! broker's value divided by each other broker's.

use crate::scenario::{Better, Metric};

pub struct Table {
    brokers: Vec<String>,
    /// Row label, direction, one cell per broker.
    rows: Vec<(String, Better, Vec<Option<Metric>>)>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(brokers: Vec<String>) -> Table {
        Table {
            brokers,
            rows: Vec::new(),
            notes: Vec::new(),
        }
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
        let first = self.brokers.first().cloned().unwrap_or_default();
        let mut head = vec!["scenario".to_owned(), "better".to_owned()];
        head.extend(self.brokers.iter().cloned());
        for other in self.brokers.iter().skip(1) {
            head.push(format!("{first} / {other}"));
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
            for c in cells.iter().skip(1) {
                r.push(ratio(*better, cells[0].as_ref(), c.as_ref()));
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
