//! kvbench-reports: the results record schema, reading and merging results, aggregation with
//! bootstrap intervals, tables (Markdown, CSV, Parquet, LaTeX), plots (PNG, SVG) and the HTML
//! report.

pub mod aggregate;
pub mod atomic;
pub mod bootstrap;
pub mod breakdown;
pub mod cake;
pub mod compare;
pub mod filter;
pub mod frame;
pub mod grouped;
pub mod html;
pub mod labels;
pub mod merge;
pub mod metric;
pub mod plots;
pub mod prompts;
pub mod record;
pub mod report;
pub mod results;
pub mod runs;
pub mod show;
pub mod summary;
pub mod tables;

pub use atomic::{unique_backup, write_atomic};
pub use record::Record;
pub use report::{report, write_report, ReportError, ReportOptions, ReportOutcome};
pub use results::{read_results, scan_results, Problem, ResultsError, ResultsWriter};
pub use summary::{summarize, summarize_frame, to_csv, to_markdown, SummaryRow};
