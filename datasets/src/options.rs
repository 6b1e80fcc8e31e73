//! Every YAML option of every registered dataset, with its default and what it means, and where
//! each dataset's inputs come from: what `kvbench datasets NAME` shows. A test checks this list
//! against the config structs (every option a struct serializes is listed here, every listed
//! option is accepted, and the listed defaults are the structs' own).

use serde::Serialize;

/// One YAML option of a dataset entry.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DatasetOption {
    pub name: &'static str,
    /// The YAML type (`[integer]`, `number`, `path`, `hub | parquet | {path: P}`, ...).
    pub kind: &'static str,
    /// The default as YAML, or `(required)`.
    pub default: &'static str,
    pub help: &'static str,
}

const fn o(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    help: &'static str,
) -> DatasetOption {
    DatasetOption {
        name,
        kind,
        default,
        help,
    }
}

/// What `kvbench datasets NAME` shows beyond the registry's description.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DatasetHelp {
    pub name: &'static str,
    pub options: &'static [DatasetOption],
    /// What the dataset reads and where it comes from (downloads, local files, offline use).
    pub inputs: &'static str,
    /// A minimal entry for `datasets:`.
    pub example: &'static str,
}

const CHAT_TEMPLATE: DatasetOption = o(
    "chat_template",
    "auto | true | false",
    "auto",
    "prompts through the model's chat template: auto (where the benchmark's official code \
     applies one), true (an error for a model without one) or false",
);
const SOURCE: DatasetOption = o(
    "source",
    "hub | parquet | {path: P}",
    "hub",
    "hub: the repository's own data files at `revision`, downloaded into the cache; parquet: \
     the hub's parquet export; {path: P}: local files in the repository's layout (offline)",
);
const LIMIT: DatasetOption = o(
    "limit",
    "integer",
    "null",
    "at most this many samples per task (the first good ones)",
);

pub static DATASET_HELP: &[DatasetHelp] = &[
    DatasetHelp {
        name: "niah",
        options: &[
            o("lengths", "[integer]", "(required)", "target context lengths in the model's tokens; each context is as long as possible without exceeding its target"),
            o("depths", "[number]", "[0.0, 0.25, 0.5, 0.75, 1.0]", "needle positions as fractions of the haystack, 0.0 (start) to 1.0 (end)"),
            o("samples_per_cell", "integer", "1", "samples per length x depth cell (each with its own needle and filler)"),
            o("seed", "integer", "0", "seed of the needles and the generated filler"),
            o("haystack", "generated | {file: {path: P}}", "generated", "filler text: generated English sentences, or a file (.json `{\"text\": ...}` such as RULER's PaulGrahamEssays.json, .jsonl, or plain text), repeated if too short"),
            CHAT_TEMPLATE,
        ],
        inputs: "Nothing to download: needles and filler are generated from the seed (or read \
                 from the `haystack` file). Works offline.",
        example: "- name: niah\n  lengths: [1024, 4096]\n  depths: [0.1, 0.5, 0.9]",
    },
    DatasetHelp {
        name: "jsonl",
        options: &[
            o("path", "path", "(required)", "a .jsonl, .json (a list of records) or .parquet file of {context, question, answers} records; relative to the working directory"),
            o("fields", "{context_field, question_field, answers_field, id_field}", "{context_field: context, question_field: question, answers_field: answers, id_field: id}", "the record fields to read, when the file names them otherwise"),
            LIMIT,
            o("task", "string", "the file stem", "task of records without `task`"),
            o("metric", "metric name", "qa_f1", "metric of records without `metric` (see the metrics below)"),
            o("max_new_tokens", "integer", "32", "decode length of records without `max_new_tokens`"),
            o("context_template", "string", "\"{context}\"", "the sample's context: `{context}` is replaced by the record's context"),
            o("question_template", "string", "\"\\n\\nQuestion: {question}\\nAnswer:\"", "the question appended after the compressed context: `{question}` is replaced by the record's question"),
            CHAT_TEMPLATE,
        ],
        inputs: "Your own file: one record per line (or a JSON list, or parquet) with a context, \
                 a question and a list of accepted answers; optional `id`, `task`, `metric`, \
                 `max_new_tokens`. A bad record is skipped with its file:line. Works offline.",
        example: "- name: jsonl\n  path: data/my_task.jsonl",
    },
    DatasetHelp {
        name: "longbench",
        options: &[
            o("tasks", "[task]", "the 21 LongBench tasks", "task names (the 21 tasks and the 13 LongBench-E `*_e` tasks listed below)"),
            SOURCE,
            o("repo", "ORG/NAME", "THUDM/LongBench", "the hub dataset repository"),
            o("revision", "commit | branch | tag", "f72191f71cd6fcd0da8a54f0915078efda579449 (hub); required (parquet)", "revision of `repo` read by `source: hub` or `parquet` (the parquet export has no verified commit: write one, or `refs/convert/parquet` to read the branch, with a warning)"),
            o("max_length", "integer", "null (the model's context window)", "middle-truncate prompts longer than this many tokens, as LongBench's model2maxlen"),
            LIMIT,
            CHAT_TEMPLATE,
        ],
        inputs: "Downloads THUDM/LongBench's data.zip (pinned commit) from the Hugging Face hub \
                 ($HF_ENDPOINT for a mirror, $HF_TOKEN if needed) into $KVBENCH_CACHE once; \
                 offline: `source: {path: DIR}` with the unzipped {task}.jsonl files.",
        example: "- name: longbench\n  tasks: [qasper, hotpotqa]\n  limit: 20",
    },
    DatasetHelp {
        name: "longbench_v2",
        options: &[
            SOURCE,
            o("repo", "ORG/NAME", "THUDM/LongBench-v2", "the hub dataset repository"),
            o("revision", "commit | branch | tag", "2b48e494f2c7a2f0af81aae178e05c7e1dde0fe9", "revision of `repo`"),
            o("max_length", "integer", "null (the model's context window)", "middle-truncate prompts longer than this many tokens (pred.py's model2maxlen)"),
            o("limit", "integer", "null", "at most this many questions"),
            CHAT_TEMPLATE,
        ],
        inputs: "Downloads THUDM/LongBench-v2's data.json (465 MB, pinned commit) from the hub \
                 into $KVBENCH_CACHE once; offline: `source: {path: data.json}`.",
        example: "- name: longbench_v2\n  limit: 50\n  max_length: 120000",
    },
    DatasetHelp {
        name: "scbench",
        options: &[
            o("tasks", "[task]", "the 12 SCBench tasks", "task names (listed below)"),
            o("mode", "multi_turn | multi_request", "multi_turn", "turns share the growing conversation (multi_turn) or each turn is asked alone after the shared context (multi_request)"),
            SOURCE,
            o("repo", "ORG/NAME", "microsoft/SCBench", "the hub dataset repository"),
            o("revision", "commit | branch | tag", "f43226eed3a026f927a67c60739c228390d959c2 (hub); 70f4e5c38e8454b86fb4ed0a235b840bda72aa70 (parquet)", "revision of `repo`"),
            o("max_length", "integer", "null (the model's context window)", "middle-truncate the first prompt to this many tokens (SCBench's max_input_length)"),
            o("max_turns", "integer", "null (all)", "keep the first turns only"),
            LIMIT,
            CHAT_TEMPLATE,
        ],
        inputs: "Downloads microsoft/SCBench's data/{task}.jsonl (pinned commit) from the hub \
                 into $KVBENCH_CACHE once; offline: `source: {path: DIR}` with those files.",
        example: "- name: scbench\n  tasks: [scbench_kv]\n  limit: 5",
    },
    DatasetHelp {
        name: "ruler",
        options: &[
            o("tasks", "[task]", "all 13 tasks", "task names (listed below)"),
            o("lengths", "[integer]", "(required)", "target lengths in the model's tokens: prompt plus tokens to generate (RULER's max_seq_length)"),
            o("samples", "integer", "1", "samples per task and length"),
            o("seed", "integer", "0", "seed of the generated tasks"),
            o("essays", "path | {repo, file, revision}", "null", "RULER's PaulGrahamEssays.json, for the essay haystacks (niah_single_3/multikey haystacks)"),
            o("words", "path | {repo, file, revision}", "null", "a directory with wonderwords' nounlist.txt, adjectivelist.txt and verblist.txt (word keys, cwe)"),
            o("squad", "path | {repo, file, revision}", "null", "SQuAD v2 dev-v2.0.json, for qa_1"),
            o("hotpotqa", "path | {repo, file, revision}", "null", "HotpotQA hotpot_dev_distractor_v1.json, for qa_2"),
            CHAT_TEMPLATE,
        ],
        inputs: "Generated from the seed; tasks that need input files (essays, word lists, SQuAD, \
                 HotpotQA) say which when the option is missing. Give local paths (offline) or \
                 hub files `{repo: ORG/NAME, file: F, revision: COMMIT}` (downloaded into \
                 $KVBENCH_CACHE; pin a commit, `main` is recorded as unpinned).",
        example: "- name: ruler\n  tasks: [niah_single_1, vt]\n  lengths: [4096]\n  samples: 10",
    },
];

/// The options and inputs of a registered dataset.
pub fn help(name: &str) -> Option<&'static DatasetHelp> {
    DATASET_HELP.iter().find(|d| d.name == name)
}
