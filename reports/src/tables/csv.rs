//! CSV (RFC 4180): one header line of machine names; an interval column becomes four
//! (`x`, `x_lo`, `x_hi`, `x_n`); numbers at full precision, missing values empty.

use super::{Kind, Table, Value};

/// `header` and `rows` as CSV through the `csv` crate: RFC 4180 quoting (a field is quoted only
/// when it holds a comma, a quote or a line break; quotes doubled), `\n` after each record.
pub fn write_csv<R, F>(header: &[&str], rows: R) -> String
where
    R: IntoIterator<Item = Vec<F>>,
    F: AsRef<[u8]>,
{
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .from_writer(Vec::new());
    // Writing into memory cannot fail: no I/O, and records may differ in length.
    w.write_record(header).expect("CSV header into memory");
    for row in rows {
        w.write_record(row).expect("CSV record into memory");
    }
    let bytes = w.into_inner().expect("CSV flushed into memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

fn num(x: Option<f64>) -> String {
    x.map(|x| x.to_string()).unwrap_or_default()
}

pub fn to_csv(t: &Table) -> String {
    let mut header = Vec::new();
    for c in &t.columns {
        match c.kind {
            Kind::Est { .. } => header.extend([
                c.key.clone(),
                format!("{}_lo", c.key),
                format!("{}_hi", c.key),
                format!("{}_n", c.key),
            ]),
            _ => header.push(c.key.clone()),
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut rows = Vec::with_capacity(t.rows.len());
    for row in &t.rows {
        let mut cells = Vec::new();
        for (c, v) in t.columns.iter().zip(row) {
            match (c.kind, v) {
                (Kind::Est { .. }, Value::Est(e)) => cells.extend([
                    num(e.map(|e| e.mean)),
                    num(e.map(|e| e.lo)),
                    num(e.map(|e| e.hi)),
                    e.map(|e| e.n.to_string()).unwrap_or_default(),
                ]),
                (_, Value::Text(s)) => cells.push(s.clone()),
                (_, Value::Int(i)) => cells.push(i.to_string()),
                (_, Value::Num(x)) => cells.push(num(*x)),
                (_, Value::Est(e)) => cells.push(num(e.map(|e| e.mean))),
            }
        }
        rows.push(cells);
    }
    write_csv(&header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4180_quoting_only_where_needed() {
        let csv = write_csv(
            &["a", "b,c"],
            [
                vec!["plain", "with,comma"],
                vec!["say \"x\"", "two\nlines"],
                vec!["cr\r", ""],
            ],
        );
        assert_eq!(
            csv,
            "a,\"b,c\"\nplain,\"with,comma\"\n\"say \"\"x\"\"\",\"two\nlines\"\n\"cr\r\",\n"
        );
    }
}
