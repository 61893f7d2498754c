//! Tables and plots of the store benchmark.
//!
//! `bench/guest/stores.sh` writes one record per measurement,
//! `workload,view,case,metric,store,round,value`; round 0 is the warm-up.
//! This crate turns them into a summary per (workload, view, case, metric,
//! store) — median, min and max over the measured rounds — and writes it as
//! a markdown table, a CSV file and an SVG plot with one panel per workload,
//! every figure also given relative to the C store's median.

use std::collections::HashMap;
use std::fmt::Write as _;

/// One measurement of the guest script.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub workload: String,
    pub view: String,
    pub case: String,
    pub metric: String,
    pub store: String,
    pub round: u32,
    pub value: f64,
}

/// Parses the raw records, one per line (blank lines skipped).
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let [workload, view, case, metric, store, round, value] = f[..] else {
            return Err(format!("line {}: {} fields, not 7: {line}", i + 1, f.len()));
        };
        let round = round
            .parse()
            .map_err(|_| format!("line {}: round {round:?} is not a number", i + 1))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("line {}: value {value:?} is not a number", i + 1))?;
        if !value.is_finite() {
            return Err(format!("line {}: value {value} is not finite", i + 1));
        }
        out.push(Record {
            workload: workload.into(),
            view: view.into(),
            case: case.into(),
            metric: metric.into(),
            store: store.into(),
            round,
            value,
        });
    }
    Ok(out)
}

/// What one row of the table measures: the same for every store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Row {
    pub workload: String,
    pub view: String,
    pub case: String,
    pub metric: String,
}

/// One store's figures on one row.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub store: String,
    pub rounds: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The rows in the order the records first show them, each with its
/// stores in [`STORE_ORDER`] (others after them, by name).
pub fn summarize(records: &[Record]) -> Vec<(Row, Vec<Figure>)> {
    let mut rows: Vec<Row> = Vec::new();
    let mut values: HashMap<(Row, String), Vec<f64>> = HashMap::new();
    for r in records.iter().filter(|r| r.round > 0) {
        let row = Row {
            workload: r.workload.clone(),
            view: r.view.clone(),
            case: r.case.clone(),
            metric: r.metric.clone(),
        };
        if !rows.contains(&row) {
            rows.push(row.clone());
        }
        values
            .entry((row, r.store.clone()))
            .or_default()
            .push(r.value);
    }
    let mut out = Vec::new();
    for row in rows {
        let mut figs: Vec<Figure> = values
            .iter()
            .filter(|((r, _), _)| *r == row)
            .filter_map(|((_, store), v)| figure(store, v))
            .collect();
        figs.sort_by(|a, b| {
            store_rank(&a.store)
                .cmp(&store_rank(&b.store))
                .then(a.store.cmp(&b.store))
        });
        out.push((row, figs));
    }
    out
}

/// The stores in the order tables and plots show them.
pub const STORE_ORDER: [&str; 3] = ["c", "ours", "n"];

fn store_rank(s: &str) -> usize {
    STORE_ORDER
        .iter()
        .position(|x| *x == s)
        .unwrap_or(STORE_ORDER.len())
}

/// How a store is named in tables and plots.
pub fn store_label(s: &str) -> &str {
    match s {
        "c" => "C",
        "ours" => "ours",
        "n" => "N",
        s => s,
    }
}

fn figure(store: &str, v: &[f64]) -> Option<Figure> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let (first, last) = (*v.first()?, *v.last()?);
    Some(Figure {
        store: store.into(),
        rounds: v.len(),
        median: median(&v)?,
        min: first,
        max: last,
    })
}

/// The median of sorted values: the middle one, or the mean of the two
/// middle ones.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some((sorted.get(n / 2 - 1)? + sorted.get(n / 2)?) / 2.0),
    }
}

/// Whether a larger figure is the better one (rates), or a smaller one
/// (times, bytes).
pub fn higher_is_better(metric: &str) -> bool {
    metric.ends_with("/s")
}

/// A store's median over the C store's on the same row, when both exist and
/// C's is not zero.
pub fn ratio_to_c(figs: &[Figure], store: &str) -> Option<f64> {
    let c = figs.iter().find(|f| f.store == "c")?.median;
    let s = figs.iter().find(|f| f.store == store)?.median;
    (c != 0.0).then(|| s / c)
}

/// What each workload measures, for titles.
pub fn workload_title(w: &str) -> String {
    match w {
        "w1" => "w1: random 4 KiB direct writes to the origin of a fresh snapshot".into(),
        "w2" => "w2: activation of a COW written by snap_restore".into(),
        "w3" => "w3: merge (snapshot-merge until done)".into(),
        "w4" => "w4: random 4 KiB direct reads through the snapshot of chunks in the COW".into(),
        "w5" => "w5: kernel memory per active snapshot".into(),
        "w6" => "w6: random 4 KiB direct writes to an origin with four snapshots".into(),
        w => w.into(),
    }
}

/// A figure with about three significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A ratio with two decimals, or two significant digits below 0.1 (the
/// metadata written per exception can be a thousandth of C's).
pub fn fmt_ratio(r: f64) -> String {
    if r == 0.0 || r.abs() >= 0.095 {
        format!("{r:.2}")
    } else {
        let digits = (1.0 - r.abs().log10().floor()).clamp(2.0, 9.0) as usize;
        format!("{r:.digits$}")
    }
}

fn workloads(sum: &[(Row, Vec<Figure>)]) -> Vec<String> {
    let mut w: Vec<String> = Vec::new();
    for (row, _) in sum {
        if !w.contains(&row.workload) {
            w.push(row.workload.clone());
        }
    }
    w
}

/// The markdown tables, one per workload: per store "median (min–max)",
/// then ours ÷ C and ours ÷ N.
pub fn markdown(sum: &[(Row, Vec<Figure>)]) -> String {
    let mut s = String::new();
    for w in workloads(sum) {
        let _ = writeln!(s, "### {}\n", workload_title(&w));
        s.push_str("| view | case | metric | C | ours | N | ours ÷ C | ours ÷ N |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for (row, figs) in sum.iter().filter(|(r, _)| r.workload == w) {
            let cell = |store: &str| {
                figs.iter()
                    .find(|f| f.store == store)
                    .map_or("–".to_string(), |f| {
                        format!(
                            "{} ({}–{})",
                            fmt_num(f.median),
                            fmt_num(f.min),
                            fmt_num(f.max)
                        )
                    })
            };
            let ours = figs.iter().find(|f| f.store == "ours").map(|f| f.median);
            let over = |store: &str| -> String {
                let other = figs.iter().find(|f| f.store == store).map(|f| f.median);
                match (ours, other) {
                    (Some(o), Some(x)) if x != 0.0 => fmt_ratio(o / x),
                    _ => "–".into(),
                }
            };
            let better = if higher_is_better(&row.metric) {
                "higher"
            } else {
                "lower"
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} ({better} is better) | {} | {} | {} | {} | {} |",
                row.view,
                row.case,
                row.metric,
                cell("c"),
                cell("ours"),
                cell("n"),
                over("c"),
                over("n"),
            );
        }
        s.push('\n');
    }
    s
}

/// The summary as CSV, one line per row and store.
pub fn csv(sum: &[(Row, Vec<Figure>)]) -> String {
    let mut s = String::from("workload,view,case,metric,store,rounds,median,min,max,ratio_to_c\n");
    for (row, figs) in sum {
        for f in figs {
            let ratio = ratio_to_c(figs, &f.store).map_or(String::new(), |r| format!("{r:.4}"));
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{ratio}",
                row.workload,
                row.view,
                row.case,
                row.metric,
                f.store,
                f.rounds,
                f.median,
                f.min,
                f.max
            );
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn colour(store: &str) -> &'static str {
    match store {
        "c" => "#8c8c8c",
        "ours" => "#1f77b4",
        "n" => "#2ca02c",
        _ => "#d62728",
    }
}

/// The plot: one panel per workload, one group of bars per row, each bar a
/// store's median relative to the C store's (the row's largest median
/// where C has none), its whisker the min–max range, the figure itself
/// written at its end.
pub fn svg(sum: &[(Row, Vec<Figure>)], title: &str) -> String {
    const W: f64 = 980.0;
    const LABEL: f64 = 430.0;
    const BAR: f64 = 9.0;
    const GAP: f64 = 8.0;
    const CAP: f64 = 3.0;
    let plot_w = W - LABEL - 90.0;
    let mut body = String::new();
    let mut y = 46.0;
    for w in workloads(sum) {
        let rows: Vec<&(Row, Vec<Figure>)> = sum.iter().filter(|(r, _)| r.workload == w).collect();
        let max_ratio = rows
            .iter()
            .flat_map(|(_, figs)| figs.iter().map(move |f| f.max / base(figs)))
            .filter(|r| r.is_finite())
            .fold(1.0_f64, f64::max)
            .min(CAP);
        let scale = plot_w / (max_ratio * 1.05);
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.1}" font-weight="bold">{}</text>"#,
            y + 14.0,
            xml_escape(&workload_title(&w))
        );
        y += 24.0;
        let top = y;
        for (row, figs) in &rows {
            let b = base(figs);
            let h = figs.len() as f64 * BAR;
            let better = if higher_is_better(&row.metric) {
                "↑"
            } else {
                "↓"
            };
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{} · {} · {} {better}</text>"#,
                LABEL - 6.0,
                y + h / 2.0 + 4.0,
                xml_escape(&row.view),
                xml_escape(&row.case),
                xml_escape(&row.metric)
            );
            for (i, f) in figs.iter().enumerate() {
                let by = y + i as f64 * BAR;
                let len = (f.median / b).clamp(0.0, CAP) * scale;
                let (lo, hi) = (
                    (f.min / b).clamp(0.0, CAP) * scale,
                    (f.max / b).clamp(0.0, CAP) * scale,
                );
                let _ = writeln!(
                    body,
                    r#"<rect x="{LABEL:.1}" y="{by:.1}" width="{len:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                    BAR - 1.0,
                    colour(&f.store),
                    store_label(&f.store),
                    fmt_num(f.median)
                );
                let _ = writeln!(
                    body,
                    r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#222" stroke-width="1"/>"##,
                    LABEL + lo,
                    LABEL + hi,
                    by + BAR / 2.0 - 0.5,
                    by + BAR / 2.0 - 0.5
                );
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                    LABEL + len.max(hi) + 3.0,
                    by + BAR - 1.5,
                    fmt_num(f.median)
                );
            }
            y += h + GAP;
        }
        let one = LABEL + scale;
        let _ = writeln!(
            body,
            r##"<line x1="{one:.1}" x2="{one:.1}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="3,3"/>"##,
            top - 4.0,
            y - GAP + 2.0
        );
        let _ = writeln!(
            body,
            r##"<text x="{one:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="#d62728">C = 1</text>"##,
            y + 6.0
        );
        y += 22.0;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{:.0}" font-family="sans-serif" font-size="12">"#,
        y + 10.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="4" y="16" font-weight="bold">{}</text>"#,
        xml_escape(title)
    );
    let mut lx = 4.0;
    for st in STORE_ORDER {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="24" width="10" height="10" fill="{}"/><text x="{:.1}" y="33">{}</text>"#,
            colour(st),
            lx + 14.0,
            store_label(st)
        );
        lx += 60.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{lx:.1}" y="33" font-size="11">bars: median relative to C (whisker: min–max; figure: the median itself); ↑ higher is better, ↓ lower is better; clipped at {CAP}×</text>"#
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    s
}

/// What a row's bars are relative to: C's median, or the row's largest
/// median when C has none (or zero).
fn base(figs: &[Figure]) -> f64 {
    match figs.iter().find(|f| f.store == "c") {
        Some(c) if c.median > 0.0 => c.median,
        _ => figs
            .iter()
            .map(|f| f.median)
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "\
w1,brd,chunk 4K qd 1,writes/s,ours,0,50
w1,brd,chunk 4K qd 1,writes/s,c,0,40
w1,brd,chunk 4K qd 1,writes/s,ours,1,100
w1,brd,chunk 4K qd 1,writes/s,c,1,80
w1,brd,chunk 4K qd 1,writes/s,n,1,110
w1,brd,chunk 4K qd 1,writes/s,ours,2,120
w1,brd,chunk 4K qd 1,writes/s,c,2,90
w1,brd,chunk 4K qd 1,writes/s,n,2,130
w2,delay,1000 exceptions,seconds,c,1,2.5
w2,delay,1000 exceptions,seconds,ours,1,1.0
";

    #[test]
    fn warm_up_is_left_out_and_medians_are_per_store() {
        let sum = summarize(&parse(RAW).unwrap());
        assert_eq!(sum.len(), 2);
        let (row, figs) = &sum[0];
        assert_eq!(row.case, "chunk 4K qd 1");
        let stores: Vec<&str> = figs.iter().map(|f| f.store.as_str()).collect();
        assert_eq!(stores, ["c", "ours", "n"]);
        assert_eq!(figs[1].median, 110.0);
        assert_eq!(
            (figs[1].min, figs[1].max, figs[1].rounds),
            (100.0, 120.0, 2)
        );
        assert_eq!(ratio_to_c(figs, "ours"), Some(110.0 / 85.0));
        assert_eq!(ratio_to_c(&sum[1].1, "ours"), Some(0.4));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }

    #[test]
    fn ratios_keep_two_significant_digits() {
        assert_eq!(fmt_ratio(1.2345), "1.23");
        assert_eq!(fmt_ratio(0.5), "0.50");
        assert_eq!(fmt_ratio(1.0 / 31.0), "0.032");
        assert_eq!(fmt_ratio(1.0 / 1024.0), "0.00098");
        assert_eq!(fmt_ratio(0.0), "0.00");
    }

    #[test]
    fn bad_records_are_named_by_line() {
        assert!(parse("w1,brd,x,y,c,1\n")
            .unwrap_err()
            .starts_with("line 1:"));
        assert!(parse("\nw1,brd,x,y,c,one,2\n")
            .unwrap_err()
            .starts_with("line 2:"));
        assert!(parse("w1,brd,x,y,c,1,NaN\n").is_err());
    }

    #[test]
    fn outputs_hold_every_row() {
        let sum = summarize(&parse(RAW).unwrap());
        let md = markdown(&sum);
        assert!(md.contains("### w1:") && md.contains("### w2:"));
        assert!(md.contains("| brd | chunk 4K qd 1 | writes/s (higher is better) | 85.0 (80.0–90.0) | 110 (100–120) | 120 (110–130) | 1.29 | 0.92 |"));
        assert!(md.contains("| 2.50 (2.50–2.50) | 1.00 (1.00–1.00) | – | 0.40 | – |"));
        let c = csv(&sum);
        assert_eq!(c.lines().count(), 1 + 3 + 2);
        assert!(c.contains("w2,delay,1000 exceptions,seconds,ours,1,1,1,1,0.4000"));
        let s = svg(&sum, "t <1>");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("t &lt;1&gt;"));
        assert_eq!(s.matches("<rect x=").count(), 3 + 3 + 2);
    }
}
