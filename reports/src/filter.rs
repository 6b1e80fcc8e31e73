//! `kvbench report RUN --where method=snapkv,kivi --where task=qasper`: keep the records whose
//! field is one of the listed values; several filters must all hold. A filter that matches no
//! record is an error naming the values the runs have, never an empty report.

use std::collections::BTreeSet;

use crate::merge::Merged;
use crate::{Record, ReportError};

/// The fields a filter can name.
pub const FIELDS: [&str; 8] = [
    "method",
    "task",
    "dataset",
    "model",
    "budget",
    "experiment",
    "sample_id",
    "query_aware",
];

/// One `FIELD=V1,V2` filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub field: String,
    pub values: Vec<String>,
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (field, values) = s.split_once('=').ok_or_else(|| {
            format!("`{s}`: write FIELD=VALUE[,VALUE...], e.g. method=snapkv,kivi")
        })?;
        let field = field.trim().to_string();
        if !FIELDS.contains(&field.as_str()) {
            return Err(format!("`{field}`: filter on one of {}", FIELDS.join(", ")));
        }
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(format!("`{s}`: name at least one value after `=`"));
        }
        Ok(Filter { field, values })
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.field, self.values.join(","))
    }
}

/// The value of `field` for `r` (a budget by its label, `-` for none).
pub fn field(r: &Record, field: &str) -> Option<String> {
    Some(match field {
        "method" => r.method.clone(),
        "task" => r.task.clone(),
        "dataset" => r.dataset.clone(),
        "model" => r.model.clone(),
        "budget" => r.budget_label.clone(),
        "experiment" => r.experiment.clone(),
        "sample_id" => r.sample_id.clone(),
        "query_aware" => r.query_aware.to_string(),
        _ => return None,
    })
}

/// The records every filter holds for; an error for the first filter that leaves none.
pub fn apply(merged: &Merged, filters: &[Filter]) -> Result<Merged, ReportError> {
    let mut out = merged.clone();
    for f in filters {
        if !FIELDS.contains(&f.field.as_str()) {
            return Err(ReportError::UnknownField {
                field: f.field.clone(),
                fields: FIELDS.join(", "),
            });
        }
        let kept = out.retain(|r| field(r, &f.field).is_some_and(|v| f.values.contains(&v)));
        if kept.records.is_empty() {
            let values: BTreeSet<String> = out
                .records
                .iter()
                .filter_map(|r| field(r, &f.field))
                .collect();
            return Err(ReportError::NoMatch {
                filter: f.to_string(),
                field: f.field.clone(),
                values: values.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        out = kept;
    }
    Ok(out)
}
