//! A usage report as CSV (for spreadsheets and billing imports) or as a terminal table.
//! Both have the same columns as the JSON rows: the keys grouped by, then the figures.

use super::{Counts, UsageReport, UsageRow};

fn header(report: &UsageReport) -> Vec<&'static str> {
    let keys = report.group_by.keys().iter().map(|k| k.column());
    keys.chain(Counts::COLUMNS).collect()
}

/// A missing key (no user, say) is an empty cell.
fn cells(report: &UsageReport, row: &UsageRow) -> Vec<String> {
    let keys = report.group_by.keys().iter();
    let keys = keys.map(|k| row.key(*k).unwrap_or_default().to_owned());
    keys.chain(row.counts.values().iter().map(i64::to_string))
        .collect()
}

pub fn to_csv(report: &UsageReport) -> Result<String, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(header(report))?;
    for row in &report.rows {
        out.write_record(cells(report, row))?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    // The writer only ever received UTF-8 strings.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Columns padded to their widest cell, figures right-aligned, a totals line at the end.
pub fn to_table(report: &UsageReport) -> String {
    let header = header(report);
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_uppercase()).collect()];
    lines.extend(report.rows.iter().map(|row| cells(report, row)));
    let keys = report.group_by.keys().len();
    let mut total = vec![String::new(); keys];
    if let Some(first) = total.first_mut() {
        *first = "TOTAL".to_owned();
    }
    total.extend(report.totals.values().iter().map(i64::to_string));
    lines.push(total);

    let widths: Vec<usize> = (0..header.len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| match c < keys {
                true => format!("{cell:<width$}", width = widths[c]),
                false => format!("{cell:>width$}", width = widths[c]),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
