//! What a scenario reports: metrics (one cell of the table each) and their formatting.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// A count to read, not to compare (losses, errors).
    Info,
}

/// One cell of the table: a row label, its direction and this broker's value.
#[derive(Debug, Clone)]
pub struct Metric {
    pub label: String,
    pub better: Better,
    pub value: f64,
    pub text: String,
    /// Decimals `text` has `value` to (for a median of several runs).
    pub decimals: usize,
}

impl Metric {
    pub fn num(label: String, better: Better, value: f64, decimals: usize) -> Metric {
        Metric {
            label,
            better,
            value,
            text: fmt_num(value, decimals),
            decimals,
        }
    }

    /// A count to read, not to compare ([`Better::Info`]), shown as `text`.
    pub fn info(label: String, value: f64, text: String) -> Metric {
        Metric {
            label,
            better: Better::Info,
            value,
            text,
            decimals: 0,
        }
    }
}

/// `1234567.8` → `1,234,568` (with `decimals` 0).
pub fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_owned(), Some(f.to_owned())),
        None => (s.clone(), None),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(&f);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// What one scenario against one broker measured: the table's cells and a line of details.
pub struct Outcome {
    pub metrics: Vec<Metric>,
    pub detail: String,
}
