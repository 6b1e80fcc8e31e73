//! A [`Table`] as a polars data frame, written as CSV and Parquet by polars: one column per
//! machine name; an interval column becomes four (`x`, `x_lo`, `x_hi`, `x_n`); text as UTF-8,
//! counts as unsigned integers, numbers as nullable doubles (CSV: full precision, missing values
//! empty; RFC 4180 quoting where needed).

use polars::prelude::*;

use super::{Kind, Table, Value};

fn est_part(v: &Value, f: impl Fn(&crate::bootstrap::Estimate) -> f64) -> Option<f64> {
    match v {
        Value::Est(e) => e.as_ref().map(f),
        Value::Num(x) => *x,
        _ => None,
    }
}

/// The table's data, typed.
pub fn table_frame(t: &Table) -> DataFrame {
    let mut columns = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        let cells = || t.rows.iter().map(move |r| &r[i]);
        let key = c.key.as_str();
        match c.kind {
            Kind::Text => {
                let v: Vec<String> = cells().map(|v| v.display(c.kind)).collect();
                columns.push(Column::new(key.into(), v));
            }
            Kind::Int => {
                let v: Vec<u64> = cells()
                    .map(|v| if let Value::Int(n) = v { *n } else { 0 })
                    .collect();
                columns.push(Column::new(key.into(), v));
            }
            Kind::Num { .. } => {
                let v: Vec<Option<f64>> = cells().map(|v| est_part(v, |e| e.mean)).collect();
                columns.push(Column::new(key.into(), v));
            }
            Kind::Est { .. } => {
                let part = |f: fn(&crate::bootstrap::Estimate) -> f64| -> Vec<Option<f64>> {
                    cells().map(|v| est_part(v, f)).collect()
                };
                columns.push(Column::new(key.into(), part(|e| e.mean)));
                columns.push(Column::new(format!("{key}_lo").into(), part(|e| e.lo)));
                columns.push(Column::new(format!("{key}_hi").into(), part(|e| e.hi)));
                let n: Vec<Option<u64>> = cells()
                    .map(|v| match v {
                        Value::Est(Some(e)) => Some(e.n as u64),
                        _ => None,
                    })
                    .collect();
                columns.push(Column::new(format!("{key}_n").into(), n));
            }
        }
    }
    DataFrame::new(t.rows.len(), columns).expect("one value per row in every column")
}

pub fn to_csv(t: &Table) -> String {
    crate::frame::to_csv(&mut table_frame(t)).expect("CSV into memory")
}

pub fn to_parquet(t: &Table) -> PolarsResult<Vec<u8>> {
    crate::frame::to_parquet(&mut table_frame(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Column as TableColumn;

    #[test]
    fn rfc4180_quoting_only_where_needed_and_intervals_in_four_columns() {
        let t = Table {
            name: "t".into(),
            title: "t".into(),
            note: String::new(),
            columns: vec![
                TableColumn::new("a", "a", Kind::Text),
                TableColumn::new("b,c", "b", Kind::Text),
                TableColumn::new("x", "x", Kind::Est { decimals: 2 }),
            ],
            rows: vec![
                vec![
                    Value::Text("plain".into()),
                    Value::Text("with,comma".into()),
                    Value::Est(Some(crate::bootstrap::Estimate {
                        mean: 0.5,
                        lo: 0.25,
                        hi: 0.75,
                        n: 4,
                    })),
                ],
                vec![
                    Value::Text("say \"x\"".into()),
                    Value::Text("two\nlines".into()),
                    Value::Est(None),
                ],
            ],
        };
        assert_eq!(
            to_csv(&t),
            "a,\"b,c\",x,x_lo,x_hi,x_n\nplain,\"with,comma\",0.5,0.25,0.75,4\n\"say \"\"x\"\"\",\"two\nlines\",,,,\n"
        );
        let mut df = table_frame(&t);
        let bytes = crate::frame::to_parquet(&mut df).unwrap();
        let back = ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .unwrap();
        assert_eq!(back.height(), 2);
        assert_eq!(back.column("x_n").unwrap().dtype(), &DataType::UInt64);
    }
}
