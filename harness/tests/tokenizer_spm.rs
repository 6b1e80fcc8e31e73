//! The SentencePiece (`tokenizer.ggml.model = "llama"`) GGUF tokenizer.
//!
//! Part one: a hand-made vocabulary, with every expected id worked out by hand from the
//! algorithm's definition (llama.cpp `llm_tokenizer_spm`: merge the adjacent pair whose
//! concatenation is a piece with the highest score; unknown characters as `<0xXX>` bytes).
//!
//! Part two: the real Gemma 3 270M GGUF, checked against facts read from its own vocabulary and
//! against a naive, independent implementation of the same greedy definition.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Value as V};
use kvbench::testing::gemma3_gguf;
use kvbench::tokenizer::gguf_spm::SpmVocab;
use kvbench::tokenizer::{TextTokenizer, TokenizerError};

// ---------------------------------------------------------------------------------------------
// A hand-made vocabulary

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER: i32 = 4;
const BYTE: i32 = 6;

/// Ids 0..=13 as listed; with `bytes`, `<0x00>`..`<0xFF>` follow at 14 + byte.
/// Note `bc` scores better than `ab` although its id is larger.
const PIECES: &[(&str, f32, i32)] = &[
    ("<unk>", 0.0, UNKNOWN),           // 0
    ("<s>", 0.0, CONTROL),             // 1
    ("</s>", 0.0, CONTROL),            // 2
    ("<start_of_turn>", 0.0, CONTROL), // 3
    ("<end_of_turn>", 0.0, CONTROL),   // 4
    ("\n", 0.0, USER),                 // 5
    ("▁", -1.0, NORMAL),               // 6
    ("a", -2.0, NORMAL),               // 7
    ("b", -3.0, NORMAL),               // 8
    ("c", -4.0, NORMAL),               // 9
    ("ab", -20.0, NORMAL),             // 10
    ("bc", -10.0, NORMAL),             // 11
    ("▁a", -5.0, NORMAL),              // 12
    ("▁ab", -6.0, NORMAL),             // 13
];
const BYTE0: u32 = 14;

fn tiny_content(bytes: bool, extra: &[(&str, V)]) -> gguf_file::Content {
    let mut tokens: Vec<String> = PIECES.iter().map(|p| p.0.to_string()).collect();
    let mut scores: Vec<f32> = PIECES.iter().map(|p| p.1).collect();
    let mut types: Vec<i32> = PIECES.iter().map(|p| p.2).collect();
    if bytes {
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(BYTE);
        }
    }
    let mut metadata = HashMap::new();
    metadata.insert("tokenizer.ggml.model".into(), V::String("llama".into()));
    metadata.insert(
        "tokenizer.ggml.tokens".into(),
        V::Array(tokens.into_iter().map(V::String).collect()),
    );
    metadata.insert(
        "tokenizer.ggml.scores".into(),
        V::Array(scores.into_iter().map(V::F32).collect()),
    );
    metadata.insert(
        "tokenizer.ggml.token_type".into(),
        V::Array(types.into_iter().map(V::I32).collect()),
    );
    metadata.insert("tokenizer.ggml.bos_token_id".into(), V::U32(1));
    metadata.insert("tokenizer.ggml.eos_token_id".into(), V::U32(2));
    metadata.insert("tokenizer.ggml.unknown_token_id".into(), V::U32(0));
    metadata.insert("tokenizer.ggml.add_bos_token".into(), V::Bool(true));
    metadata.insert("tokenizer.ggml.add_space_prefix".into(), V::Bool(false));
    for (k, v) in extra {
        metadata.insert(k.to_string(), v.clone());
    }
    gguf_file::Content {
        magic: gguf_file::VersionedMagic::GgufV3,
        metadata,
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

fn tiny(extra: &[(&str, V)]) -> TextTokenizer {
    TextTokenizer::from_gguf(&tiny_content(true, extra)).unwrap()
}

#[test]
fn merges_are_ranked_by_the_merged_piece_score() {
    let vocab = SpmVocab::from_gguf(&tiny_content(true, &[])).unwrap();
    let m = vocab.merges();
    let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // ▁a (-5), ▁ab (-6; two ways, left id 6 before 12), bc (-10), ab (-20). No pair involves a
    // control, user-defined or byte piece.
    assert_eq!(
        m,
        vec![("▁", "a"), ("▁", "ab"), ("▁a", "b"), ("b", "c"), ("a", "b")]
    );
}

#[test]
fn greedy_merge_follows_scores_not_ids() {
    let tok = tiny(&[]);
    // a b c: bc (-10) beats ab (-20); "abc" is no piece.
    assert_eq!(tok.encode("abc").unwrap(), vec![1, 7, 11]);
    assert_eq!(tok.encode("ab").unwrap(), vec![1, 10]);
    // ▁ a b: ▁a (-5) beats ab (-20), then ▁a b -> ▁ab.
    assert_eq!(tok.encode(" ab").unwrap(), vec![1, 13]);
    assert_eq!(tok.decode(&[1, 7, 11]).unwrap(), "abc");
    assert_eq!(tok.decode(&[13]).unwrap(), " ab");
}

#[test]
fn bos_is_prepended_once_and_only_when_asked() {
    let tok = tiny(&[]);
    assert!(tok.add_bos());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.encode("a").unwrap(), vec![1, 7]);
    let tok = tiny(&[("tokenizer.ggml.add_bos_token", V::Bool(false))]);
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("a").unwrap(), vec![7]);
}

#[test]
fn spaces_become_the_meta_symbol_one_each() {
    let tok = tiny(&[]);
    // a ▁ ▁ b: no adjacent pair is a piece.
    assert_eq!(tok.encode("a  b").unwrap(), vec![1, 7, 6, 6, 8]);
    assert_eq!(tok.decode(&[1, 7, 6, 6, 8]).unwrap(), "a  b");
    assert_eq!(tok.encode(" ").unwrap(), vec![1, 6]);
}

#[test]
fn unknown_characters_fall_back_to_bytes() {
    let tok = tiny(&[]);
    // é = C3 A9.
    let ids = tok.encode("aéb").unwrap();
    assert_eq!(ids, vec![1, 7, BYTE0 + 0xC3, BYTE0 + 0xA9, 8]);
    assert_eq!(tok.decode(&ids).unwrap(), "aéb");
    // 😀 = F0 9F 98 80.
    let ids = tok.encode("😀").unwrap();
    assert_eq!(
        ids,
        vec![1, BYTE0 + 0xF0, BYTE0 + 0x9F, BYTE0 + 0x98, BYTE0 + 0x80]
    );
    assert_eq!(tok.decode(&ids).unwrap(), "😀");
}

#[test]
fn without_byte_pieces_unknown_characters_are_unk() {
    let tok = TextTokenizer::from_gguf(&tiny_content(false, &[])).unwrap();
    // Consecutive unknown characters fuse into one <unk>.
    assert_eq!(tok.encode("aéè").unwrap(), vec![1, 7, 0]);
    assert_eq!(tok.unk_id(), Some(0));
}

#[test]
fn control_and_user_defined_pieces_are_matched_whole() {
    let tok = tiny(&[]);
    let ids = tok.encode("<start_of_turn>ab\nc<end_of_turn>").unwrap();
    assert_eq!(ids, vec![1, 3, 10, 5, 9, 4]);
    // Control pieces are skipped when decoding, user-defined ones are text.
    assert_eq!(tok.decode(&ids).unwrap(), "ab\nc");
    assert_eq!(tok.decode(&[7, 5, 8]).unwrap(), "a\nb");
}

#[test]
fn end_of_turn_stops_generation() {
    let tok = tiny(&[]);
    assert_eq!(tok.eos_ids(), &[2, 4]);
    assert_eq!(tok.vocab_size(), 14 + 256);
}

#[test]
fn space_prefix_starts_every_piece_of_text() {
    // llama.cpp and Llama 2's tokenizer.json: `▁` before the text and after each special piece.
    let tok = tiny(&[("tokenizer.ggml.add_space_prefix", V::Bool(true))]);
    // ▁ a b c: ▁a (-5), then ▁ab (-6) beats bc (-10); ▁abc is no piece.
    assert_eq!(tok.encode("abc").unwrap(), vec![1, 13, 9]);
    // The decoder removes the one space it added.
    assert_eq!(tok.decode(&[1, 13, 9]).unwrap(), "abc");
    // After `\n` (user-defined): ▁ c, and ▁c is no piece.
    assert_eq!(
        tok.encode("<start_of_turn>ab\nc<end_of_turn>").unwrap(),
        vec![1, 3, 13, 5, 6, 9, 4]
    );
    // llama.cpp's default when the key is absent.
    let mut c = tiny_content(true, &[]);
    c.metadata.remove("tokenizer.ggml.add_space_prefix");
    let tok = TextTokenizer::from_gguf(&c).unwrap();
    assert_eq!(tok.encode("abc").unwrap(), vec![1, 13, 9]);
}

#[test]
fn missing_scores_name_the_key() {
    let mut c = tiny_content(true, &[]);
    c.metadata.remove("tokenizer.ggml.scores");
    let err = TextTokenizer::from_gguf(&c).unwrap_err();
    assert!(matches!(err, TokenizerError::BadMetadata { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.ggml.scores"), "{err}");
}

#[test]
fn inconsistent_lengths_are_an_error() {
    let c = tiny_content(
        true,
        &[("tokenizer.ggml.scores", V::Array(vec![V::F32(0.0); 3]))],
    );
    let err = TextTokenizer::from_gguf(&c).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.ggml.scores") && err.contains("3 entries for 270 tokens"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The real Gemma 3 270M GGUF

struct Gemma {
    tok: TextTokenizer,
    build: Duration,
    /// Piece text -> (id, score), from the GGUF arrays.
    pieces: HashMap<String, (u32, f32)>,
}

fn gemma() -> &'static Gemma {
    static GEMMA: OnceLock<Gemma> = OnceLock::new();
    GEMMA.get_or_init(|| {
        let path = gemma3_gguf();
        let mut f = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let start = Instant::now();
        let tok = TextTokenizer::from_gguf(&content).unwrap();
        let build = start.elapsed();
        eprintln!("Gemma 3 SentencePiece tokenizer built in {build:?}");
        let tokens = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        let scores = content.metadata["tokenizer.ggml.scores"].to_vec().unwrap();
        let pieces = tokens
            .iter()
            .zip(scores)
            .enumerate()
            .map(|(i, (t, s))| {
                let V::F32(s) = s else {
                    panic!("score {i} is not f32")
                };
                (t.to_string().unwrap().clone(), (i as u32, *s))
            })
            .collect();
        Gemma { tok, build, pieces }
    })
}

impl Gemma {
    fn id(&self, piece: &str) -> u32 {
        self.pieces
            .get(piece)
            .unwrap_or_else(|| panic!("{piece:?} is not in the Gemma vocabulary"))
            .0
    }
}

/// llama.cpp's SPM merging, by its definition and naively (quadratic): spaces as `▁`, characters,
/// then merge the adjacent pair whose concatenation is a piece with the highest score, leftmost
/// on ties; characters that are no piece as `<0xXX>` bytes. For text free of control and
/// user-defined pieces (Gemma: no newline, tab, run of spaces or HTML tag).
fn naive_spm(pieces: &HashMap<String, (u32, f32)>, text: &str) -> Vec<u32> {
    let mut syms: Vec<String> = text.replace(' ', "▁").chars().map(String::from).collect();
    loop {
        let mut best: Option<(usize, f32)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let cat = format!("{}{}", syms[i], syms[i + 1]);
            if let Some(&(_, score)) = pieces.get(&cat) {
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((i, score));
                }
            }
        }
        let Some((i, _)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    let mut ids = Vec::new();
    for s in syms {
        match pieces.get(&s) {
            Some(&(id, _)) => ids.push(id),
            None => ids.extend(s.bytes().map(|b| pieces[&format!("<0x{b:02X}>")].0)),
        }
    }
    ids
}

#[test]
fn gemma_builds_quickly() {
    let g = gemma();
    assert_eq!(g.tok.vocab_size(), 262_144);
    assert!(
        g.build < Duration::from_secs(30),
        "building the tokenizer took {:?}",
        g.build
    );
}

#[test]
fn gemma_special_ids() {
    let g = gemma();
    let bos = g.id("<bos>");
    assert_eq!(g.tok.bos_id(), Some(bos));
    assert!(g.tok.add_bos());
    let eos = g.tok.eos_ids();
    assert!(eos.contains(&g.id("<eos>")), "{eos:?}");
    assert!(eos.contains(&g.id("<end_of_turn>")), "{eos:?}");
    assert!(!eos.contains(&g.id("<start_of_turn>")), "{eos:?}");
    assert_eq!(g.tok.pad_id(), Some(g.id("<pad>")));
    assert_eq!(g.tok.unk_id(), Some(g.id("<unk>")));
}

#[test]
fn gemma_bos_once_and_no_space_prefix() {
    let g = gemma();
    let bos = g.id("<bos>");
    // Gemma 3: add_space_prefix = false, so "Hello" is the piece without `▁`.
    assert_eq!(g.tok.encode("Hello").unwrap(), vec![bos, g.id("Hello")]);
    assert_eq!(g.tok.encode(" the").unwrap(), vec![bos, g.id("▁the")]);
    assert_eq!(g.tok.encode("the").unwrap(), vec![bos, g.id("the")]);
    assert_eq!(g.tok.encode("").unwrap(), vec![bos]);
}

#[test]
fn gemma_chat_turn_markers() {
    let g = gemma();
    let ids = g.tok.encode("<start_of_turn>user\n").unwrap();
    assert_eq!(
        ids,
        vec![
            g.id("<bos>"),
            g.id("<start_of_turn>"),
            g.id("user"),
            g.id("\n")
        ]
    );
    let text = "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n";
    let ids = g.tok.encode(text).unwrap();
    assert_eq!(
        ids.iter()
            .filter(|&&i| i == g.id("<start_of_turn>"))
            .count(),
        2
    );
    assert_eq!(
        ids.iter().filter(|&&i| i == g.id("<end_of_turn>")).count(),
        1
    );
    assert_eq!(g.tok.decode(&ids).unwrap(), "user\nHi there\nmodel\n");
}

#[test]
fn gemma_user_defined_whitespace_runs() {
    let g = gemma();
    let bos = g.id("<bos>");
    // Gemma's vocabulary holds runs of spaces, newlines and tabs as user-defined pieces.
    assert_eq!(
        g.tok.encode("a  b").unwrap(),
        vec![bos, g.id("a"), g.id("  "), g.id("b")]
    );
    assert_eq!(
        g.tok.encode("a\n\nb").unwrap(),
        vec![bos, g.id("a"), g.id("\n\n"), g.id("b")]
    );
    assert_eq!(
        g.tok.encode("\ta").unwrap(),
        vec![bos, g.id("\t"), g.id("a")]
    );
}

#[test]
fn gemma_byte_fallback() {
    let g = gemma();
    // U+0378 is unassigned and no Gemma piece: its UTF-8 bytes CD B8.
    assert!(!g.pieces.contains_key("\u{378}"));
    let ids = g.tok.encode("\u{378}").unwrap();
    assert_eq!(ids, vec![g.id("<bos>"), g.id("<0xCD>"), g.id("<0xB8>")]);
    assert_eq!(g.tok.decode(&ids).unwrap(), "\u{378}");
}

#[test]
fn gemma_matches_the_greedy_definition() {
    let g = gemma();
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Anna lives in Paris. 1234567890 ½ café naïve — “quotes” 日本語",
        "Tokenization of unbelievably antidisestablishmentarianism-like words",
        "Emoji 😀🎉 and symbols ∑∫√ and Ελληνικά and русский текст",
        " leading space, trailing space ",
        "def f(x): return {'a': [1, 2, 3]} # code",
        "中文分词测试，包括标点符号。 한국어 텍스트 ไทย",
        "unassigned \u{378} private \u{E000} mixed",
    ];
    for text in texts {
        let ours = g.tok.encode(text).unwrap();
        assert_eq!(ours[0], g.id("<bos>"));
        assert_eq!(ours[1..], naive_spm(&g.pieces, text)[..], "{text:?}");
    }
}

#[test]
fn gemma_round_trips() {
    let g = gemma();
    let texts = [
        "Hello, world!",
        "  two leading spaces and    four inside",
        " one leading space",
        "trailing spaces   ",
        "accents: café, naïve, Ångström, über, façade",
        "CJK: 日本語のテキストと中文和한국어",
        "emoji: 😀👍🏽🇫🇷 and ZWJ 👨‍👩‍👧",
        "newlines\nand\n\nblank lines\n\n\n",
        "tabs\tand\t\tmore\ttabs",
        "mixed \t \n whitespace \r\n windows",
        "<b>html</b> <table><tr><td>cell</td></tr></table>",
        "byte fallback \u{378}\u{379} and private use \u{F0000}",
        "",
    ];
    for text in texts {
        let ids = g.tok.encode(text).unwrap();
        assert_eq!(g.tok.decode(&ids).unwrap(), text, "{ids:?}");
    }
}

/// The loader reads the GGUF through `WeightSource`; the tokenizer must build from that content.
#[test]
fn gemma_tokenizer_from_the_loader_source() {
    let path = gemma3_gguf();
    let src = kvbench::model::WeightSource::open_gguf(&path).unwrap();
    let content = src.gguf_content().unwrap();
    let tok = TextTokenizer::from_gguf(content).unwrap();
    assert_eq!(
        tok.encode("<start_of_turn>user\n").unwrap(),
        gemma().tok.encode("<start_of_turn>user\n").unwrap()
    );
}

/// Long contexts (LongBench-sized) are one piece of text to the BPE: encoding must stay
/// near-linear, and the result must agree with encoding the paragraphs one by one where the
/// paragraphs are separated by a user-defined piece (`\n\n`), which cuts the text anyway.
#[test]
fn gemma_long_text() {
    let g = gemma();
    let para = "Il était une fois, dans un pays lointain, 42 dragons qui aimaient le thé. \
                The committee's report (2024) found that 73% of respondents preferred tea.";
    let text = vec![para; 1000].join("\n\n");
    assert!(text.len() > 150_000);
    let start = Instant::now();
    let ids = g.tok.encode(&text).unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "encoding took {took:?}");
    let one = g.tok.encode(para).unwrap();
    let sep = g.id("\n\n");
    let mut expected = vec![g.id("<bos>")];
    for i in 0..1000 {
        if i > 0 {
            expected.push(sep);
        }
        expected.extend_from_slice(&one[1..]);
    }
    assert_eq!(ids, expected);
    assert_eq!(g.tok.decode(&ids).unwrap(), text);
}
