//! herd's tokenizer against llama.cpp's own output.
//!
//! The references in `tests/fixtures/tokenizer/` were written by
//! `scripts/make_tokenizer_fixture.py` with llama-cpp-python (which compiles llama.cpp):
//! token ids for the AlpacaEval instructions, chat prompts, reference outputs, judge
//! prompts, awkward texts and a probe of every code point, plus each vocabulary's special
//! ids, token attributes and token pieces. The vocabularies: herd's default model
//! (SmolLM2, from the model cache) and vocabulary-only GGUFs stored next to the fixtures:
//! Llama 3, GPT-2, Qwen2, DeepSeek LLM and Coder (byte-level BPE), Llama 2 and Gemma 3
//! (SentencePiece), and Llama 3's again with the pre-tokenizers of Tekken, GPT-4o and
//! ChatGLM-4 (the fixture names the metadata it changed; the test makes the same change).

mod common;

use std::collections::BTreeSet;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use herd_engine::tokenizer::{tokenizer_from_gguf, HerdTokenizer, TokenKind, TokenizerError};
use serde_json::{json, Value};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/tokenizer")
}

fn default_model_path() -> PathBuf {
    common::smollm2_gguf()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
}

fn read_gguf(bytes: &[u8]) -> gguf_file::Content {
    gguf_file::Content::read(&mut Cursor::new(bytes)).expect("GGUF metadata")
}

fn read_gguf_file(path: &Path) -> gguf_file::Content {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    gguf_file::Content::read(&mut file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct EvalSet {
    instructions: Vec<String>,
    outputs: Vec<String>,
    judge_template: String,
}

fn eval_set() -> &'static EvalSet {
    static EVAL_SET: OnceLock<EvalSet> = OnceLock::new();
    EVAL_SET.get_or_init(|| {
        let data = manifest_dir().join("../data");
        let rows: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(data.join("eval_set.json")).unwrap())
                .unwrap();
        let field = |name: &str| -> Vec<String> {
            rows.iter().map(|r| r[name].as_str().unwrap().to_string()).collect()
        };
        EvalSet {
            instructions: field("instruction"),
            outputs: field("output"),
            judge_template: std::fs::read_to_string(data.join("prompts/alpaca_eval_fn.txt"))
                .unwrap(),
        }
    })
}

impl EvalSet {
    /// As the fixture script builds it: output_1 is example i's, output_2 the next one's.
    fn judge_prompt(&self, i: usize) -> String {
        self.judge_template
            .replace("{instruction}", &self.instructions[i])
            .replace("{output_1}", &self.outputs[i])
            .replace("{output_2}", &self.outputs[(i + 1) % self.outputs.len()])
    }
}

/// The same probe text as the fixture script's `probe_text`.
fn probe_text(from: u32, to: u32) -> String {
    let mut text = String::new();
    for c in (from..to).filter_map(char::from_u32) {
        text.push_str(&format!("x{c}y {c}{c}1{c} '{c}\n"));
    }
    text
}

fn fnv1a64(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001B3);
    }
    h
}

const FNV_OFFSET: u64 = 0xCBF29CE484222325;

fn fnv1a64_ids(ids: &[u32]) -> String {
    format!("{:016x}", fnv1a64(ids.iter().flat_map(|i| i.to_le_bytes()), FNV_OFFSET))
}

struct Reference {
    label: &'static str,
    tokenizer: HerdTokenizer,
    fixture: Value,
}

fn load_reference(
    label: &'static str,
    fixture_file: &str,
    gguf: impl FnOnce() -> gguf_file::Content,
) -> Reference {
    let fixture: Value = serde_json::from_slice(&gunzip(&fixture_dir().join(fixture_file)))
        .unwrap_or_else(|e| panic!("{fixture_file}: {e}"));
    let tokenizer = tokenizer_from_gguf(&gguf()).unwrap_or_else(|e| panic!("{label}: {e}"));
    Reference { label, tokenizer, fixture }
}

fn smollm2() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        load_reference("smollm2", "smollm2.json.gz", || read_gguf_file(&default_model_path()))
    })
}

fn llama_bpe() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        load_reference("llama-bpe", "llama-bpe.json.gz", || {
            read_gguf(&gunzip(&fixture_dir().join("vocabs/ggml-vocab-llama-bpe.gguf.gz")))
        })
    })
}

fn gpt2() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        load_reference("gpt-2", "gpt-2.json.gz", || {
            read_gguf(&gunzip(&fixture_dir().join("vocabs/ggml-vocab-gpt-2.gguf.gz")))
        })
    })
}

/// The GGUF a fixture names (`gguf`, a gzipped file next to it), with the metadata it
/// changed (`metadata_overrides`, string values) changed likewise.
fn fixture_vocabulary(fixture_file: &str) -> gguf_file::Content {
    let fixture: Value = serde_json::from_slice(&gunzip(&fixture_dir().join(fixture_file)))
        .unwrap_or_else(|e| panic!("{fixture_file}: {e}"));
    let mut content = read_gguf(&gunzip(&fixture_dir().join(fixture["gguf"].as_str().unwrap())));
    if let Some(overrides) = fixture["metadata_overrides"].as_object() {
        for (key, value) in overrides {
            let value = gguf_file::Value::String(value.as_str().unwrap().to_string());
            content.metadata.insert(key.clone(), value);
        }
    }
    content
}

macro_rules! vocabulary_reference {
    ($name:ident, $label:literal) => {
        fn $name() -> &'static Reference {
            static REFERENCE: OnceLock<Reference> = OnceLock::new();
            REFERENCE.get_or_init(|| {
                let file = concat!($label, ".json.gz");
                load_reference($label, file, || fixture_vocabulary(file))
            })
        }
    };
}

vocabulary_reference!(llama_spm, "llama-spm");
vocabulary_reference!(gemma3, "gemma3");
vocabulary_reference!(qwen2, "qwen2");
vocabulary_reference!(deepseek_llm, "deepseek-llm");
vocabulary_reference!(deepseek_coder, "deepseek-coder");
vocabulary_reference!(tekken, "tekken");
vocabulary_reference!(gpt4o, "gpt-4o");
vocabulary_reference!(chatglm, "chatglm-bpe");

/// One reference case with its text resolved.
struct Case<'a> {
    json: &'a Value,
    text: String,
    special: bool,
    add_bos: bool,
}

impl Reference {
    fn cases(&self, set: &str) -> Vec<Case<'_>> {
        let eval = eval_set();
        let cases: Vec<Case<'_>> = self.fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["set"] == set)
            .map(|c| {
                let index = || c["index"].as_u64().unwrap() as usize;
                let text = match set {
                    "instruction" => eval.instructions[index()].clone(),
                    "output" => eval.outputs[index()].clone(),
                    "judge" => eval.judge_prompt(index()),
                    "code_points" => {
                        let range = c["code_points"].as_array().unwrap();
                        probe_text(
                            range[0].as_u64().unwrap() as u32,
                            range[1].as_u64().unwrap() as u32,
                        )
                    }
                    _ => c["text"].as_str().unwrap().to_string(),
                };
                Case {
                    json: c,
                    text,
                    special: c["special"].as_bool().unwrap(),
                    add_bos: c["add_bos"].as_bool().unwrap(),
                }
            })
            .collect();
        assert!(!cases.is_empty(), "{}: the fixture has no `{set}` case", self.label);
        cases
    }

    fn encode(&self, case: &Case<'_>) -> Vec<u32> {
        self.tokenizer
            .encode(&case.text, case.special, case.add_bos)
            .unwrap_or_else(|e| panic!("{}: {e}", self.label))
    }

    /// Encodes every case of `set` and compares with llama.cpp's ids; all differences are
    /// reported together.
    fn assert_encodes_like_llama_cpp(&self, set: &str) {
        let cases = self.cases(set);
        let mut failures = Vec::new();
        for (n, case) in cases.iter().enumerate() {
            let ids = self.encode(case);
            if let Some(problem) = self.compare_ids(case, &ids) {
                failures.push(format!(
                    "case {n} (special={}, add_bos={}, text {:?}): {problem}",
                    case.special,
                    case.add_bos,
                    shorten(&case.text)
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} `{set}`: {} of {} cases differ from llama.cpp:\n{}",
            self.label,
            failures.len(),
            cases.len(),
            failures.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
        );
    }

    fn compare_ids(&self, case: &Case<'_>, ids: &[u32]) -> Option<String> {
        if let Some(expected) = case.json["ids"].as_array() {
            let expected: Vec<u32> = expected.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            if expected == ids {
                return None;
            }
            let at = expected.iter().zip(ids).take_while(|(a, b)| a == b).count();
            let around = |v: &[u32]| {
                let window = &v[at.saturating_sub(3)..(at + 4).min(v.len())];
                let pieces: Vec<String> = window
                    .iter()
                    .map(|&id| {
                        let bytes = self.tokenizer.token_bytes(id, true).unwrap_or(b"?");
                        format!("{id}:{:?}", String::from_utf8_lossy(bytes))
                    })
                    .collect();
                pieces.join(" ")
            };
            return Some(format!(
                "first difference at token {at}: llama.cpp [{}] vs herd [{}] ({} vs {} tokens)",
                around(&expected),
                around(ids),
                expected.len(),
                ids.len()
            ));
        }
        let n = case.json["n_ids"].as_u64().unwrap() as usize;
        let digest = case.json["ids_fnv1a64"].as_str().unwrap();
        (n != ids.len() || digest != fnv1a64_ids(ids)).then(|| {
            format!(
                "{} tokens, digest {} vs llama.cpp's {n} tokens, digest {digest}",
                ids.len(),
                fnv1a64_ids(ids)
            )
        })
    }

    /// The bytes llama.cpp's pieces of these ids add up to.
    fn llama_cpp_detokenized(&self, case: &Case<'_>) -> Vec<u8> {
        if case.json["detok_is_text"] == true {
            case.text.as_bytes().to_vec()
        } else if case.json["detok_is_space_and_text"] == true {
            [b" ", case.text.as_bytes()].concat()
        } else {
            hex_decode(case.json["detok_hex"].as_str().unwrap())
        }
    }

    /// Decoding: whole, and token by token through a stream decoder.
    fn assert_decodes_like_llama_cpp(&self, set: &str) {
        let mut failures = Vec::new();
        let cases = self.cases(set);
        for (n, case) in cases.iter().enumerate() {
            let ids = self.encode(case);
            let bytes = self.tokenizer.decode_bytes(&ids, case.special).unwrap();
            if bytes != self.llama_cpp_detokenized(case) {
                failures.push(format!(
                    "case {n} {:?}: pieces differ from llama.cpp's",
                    shorten(&case.text)
                ));
                continue;
            }
            // Raw text comes back exactly (special tokens hidden or shown alike, as a
            // special token written in raw text was tokenized as text).
            if !case.add_bos && case.json["detok_is_text"] == true {
                let text = self.tokenizer.decode(&ids, case.special).unwrap();
                if text != case.text {
                    failures.push(format!(
                        "case {n} {:?}: decode(encode(x)) != x",
                        shorten(&case.text)
                    ));
                }
            }
            let mut stream = self.tokenizer.stream_decoder(case.special);
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(&stream.push(&self.tokenizer, id).unwrap());
            }
            streamed.push_str(&stream.finish());
            if streamed != String::from_utf8_lossy(&bytes) {
                failures.push(format!(
                    "case {n} {:?}: streamed text differs from decode",
                    shorten(&case.text)
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} `{set}`: {} of {} cases decode wrongly:\n{}",
            self.label,
            failures.len(),
            cases.len(),
            failures.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
        );
    }

    /// Special ids, BOS handling, end of generation, token attributes and pieces.
    fn assert_vocabulary_matches_llama_cpp(&self) {
        let vocab = &self.fixture["vocab"];
        let t = &self.tokenizer;
        let id = |v: &Value| v.as_u64().map(|x| x as u32);
        assert_eq!(t.vocab_size() as u64, vocab["n_tokens"].as_u64().unwrap(), "{}", self.label);
        assert_eq!(t.bos_id(), id(&vocab["bos"]), "{} BOS", self.label);
        assert_eq!(t.eos_id(), id(&vocab["eos"]), "{} EOS", self.label);
        assert_eq!(t.adds_bos(), vocab["add_bos"].as_bool().unwrap(), "{} add_bos", self.label);
        assert_eq!(t.adds_eos(), vocab["add_eos"].as_bool().unwrap(), "{} add_eos", self.label);
        let eog: Vec<u32> =
            vocab["end_of_generation"].as_array().unwrap().iter().filter_map(id).collect();
        assert_eq!(t.end_of_generation_ids(), eog.as_slice(), "{} end of generation", self.label);

        // llama.cpp's attributes are bits it ORs together (a user-defined token it
        // recognises as end of turn is USER_DEFINED | CONTROL); herd keeps the kind they
        // make a token behave as.
        let not_normal: BTreeSet<(u32, TokenKindName)> = vocab["attrs_not_normal"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a[0].as_u64().unwrap() as u32, kind_of_llama_attrs(a[1].as_u64().unwrap())))
            .collect();
        let ours: BTreeSet<(u32, TokenKindName)> = (0..t.vocab_size() as u32)
            .map(|i| (i, TokenKindName(t.token_kind(i).unwrap())))
            .filter(|&(_, kind)| kind.0 != TokenKind::Normal)
            .collect();
        assert_eq!(ours, not_normal, "{} token attributes", self.label);

        let block = vocab["piece_digest_block"].as_u64().unwrap() as usize;
        for (shown, key) in [(false, "hidden"), (true, "shown")] {
            let expected: Vec<&str> = vocab["piece_digests"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap())
                .collect();
            let ids: Vec<u32> = (0..t.vocab_size() as u32).collect();
            let ours: Vec<String> = ids
                .chunks(block)
                .map(|chunk| {
                    let mut h = FNV_OFFSET;
                    for &i in chunk {
                        let piece = t.token_bytes(i, shown).unwrap();
                        h = fnv1a64((piece.len() as u32).to_le_bytes(), h);
                        h = fnv1a64(piece.iter().copied(), h);
                    }
                    format!("{h:016x}")
                })
                .collect();
            let differing: Vec<usize> =
                (0..expected.len()).filter(|&b| expected[b] != ours[b]).collect();
            assert!(
                differing.is_empty(),
                "{}: pieces ({key} special tokens) differ in id blocks {differing:?} of {block}",
                self.label
            );
        }
    }
}

/// A token kind that orders, for sets of (id, kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenKindName(TokenKind);

impl Ord for TokenKindName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0 as u8).cmp(&(other.0 as u8))
    }
}

impl PartialOrd for TokenKindName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The kind a token with llama.cpp's `llama_token_attr` bits behaves as, in the order
/// llama.cpp's `token_to_piece` tests them: control or unknown first (parsed only when
/// asked, rendered only when asked), then user-defined, normal, byte; unused alone or no
/// bit renders nothing.
fn kind_of_llama_attrs(attrs: u64) -> TokenKindName {
    const UNKNOWN: u64 = 1;
    const UNUSED: u64 = 2;
    const NORMAL: u64 = 4;
    const CONTROL: u64 = 8;
    const USER_DEFINED: u64 = 16;
    const BYTE: u64 = 32;
    let kind = if attrs & CONTROL != 0 {
        TokenKind::Control
    } else if attrs & UNKNOWN != 0 {
        TokenKind::Unknown
    } else if attrs & USER_DEFINED != 0 {
        TokenKind::UserDefined
    } else if attrs & NORMAL != 0 {
        TokenKind::Normal
    } else if attrs & BYTE != 0 {
        TokenKind::Byte
    } else if attrs & UNUSED != 0 {
        TokenKind::Unused
    } else {
        TokenKind::Undefined
    };
    TokenKindName(kind)
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 60 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(60).collect::<String>())
    }
}

// ---- SmolLM2, herd's default model ----

#[test]
fn smollm2_vocabulary_matches_llama_cpp() {
    smollm2().assert_vocabulary_matches_llama_cpp();
}

#[test]
fn smollm2_encodes_the_instructions_like_llama_cpp() {
    smollm2().assert_encodes_like_llama_cpp("instruction");
}

#[test]
fn smollm2_encodes_the_chat_prompts_like_llama_cpp() {
    smollm2().assert_encodes_like_llama_cpp("chat");
}

#[test]
fn smollm2_encodes_the_reference_outputs_like_llama_cpp() {
    smollm2().assert_encodes_like_llama_cpp("output");
}

#[test]
fn smollm2_encodes_awkward_texts_like_llama_cpp() {
    smollm2().assert_encodes_like_llama_cpp("awkward");
}

#[test]
fn smollm2_encodes_every_code_point_like_llama_cpp() {
    smollm2().assert_encodes_like_llama_cpp("code_points");
}

#[test]
fn smollm2_decodes_like_llama_cpp_and_round_trips_raw_text() {
    let reference = smollm2();
    for set in ["instruction", "output", "awkward", "chat"] {
        reference.assert_decodes_like_llama_cpp(set);
    }
}

#[test]
fn smollm2_carries_its_chat_template_and_turn_end() {
    let t = &smollm2().tokenizer;
    let template = t.chat_template().expect("SmolLM2's GGUF has a chat template");
    assert!(template.contains("<|im_start|>"), "{template}");
    let im_end = t.special_token_id("<|im_end|>").unwrap();
    assert!(t.is_end_of_generation(im_end));
    assert_eq!(t.token_text(im_end), Some("<|im_end|>"));
    assert!(!t.is_end_of_generation(t.special_token_id("<|im_start|>").unwrap()));
}

// ---- Llama 3, the production judge's vocabulary ----

#[test]
fn llama3_vocabulary_matches_llama_cpp() {
    llama_bpe().assert_vocabulary_matches_llama_cpp();
}

#[test]
fn llama3_encodes_the_instructions_like_llama_cpp() {
    llama_bpe().assert_encodes_like_llama_cpp("instruction");
}

#[test]
fn llama3_encodes_the_reference_outputs_like_llama_cpp() {
    llama_bpe().assert_encodes_like_llama_cpp("output");
}

#[test]
fn llama3_encodes_awkward_texts_like_llama_cpp() {
    llama_bpe().assert_encodes_like_llama_cpp("awkward");
}

#[test]
fn llama3_encodes_every_code_point_like_llama_cpp() {
    llama_bpe().assert_encodes_like_llama_cpp("code_points");
}

#[test]
fn llama3_encodes_the_judge_prompts_like_llama_cpp() {
    let reference = llama_bpe();
    reference.assert_encodes_like_llama_cpp("judge");
    // How long the 805 judge prompts take (printed, not asserted: timing is for bench/).
    let prompts: Vec<String> =
        (0..eval_set().instructions.len()).map(|i| eval_set().judge_prompt(i)).collect();
    let bytes: usize = prompts.iter().map(String::len).sum();
    let (start, cpu_start) = (Instant::now(), thread_cpu_ms());
    let tokens: usize =
        prompts.iter().map(|p| reference.tokenizer.encode(p, true, false).unwrap().len()).sum();
    let cpu = match (cpu_start, thread_cpu_ms()) {
        (Some(a), Some(b)) => format!(", {} ms of CPU", b - a),
        _ => String::new(),
    };
    eprintln!(
        "encoded {} judge prompts ({} KiB, {tokens} tokens) in {:.0?}{cpu}",
        prompts.len(),
        bytes / 1024,
        start.elapsed()
    );
}

/// This thread's CPU time (Linux), which unlike wall time does not depend on what else
/// the machine runs.
fn thread_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which ends with ')'): utime and stime are the
    // 12th and 13th, in clock ticks of 10 ms.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

#[test]
fn llama3_decodes_like_llama_cpp_and_round_trips_raw_text() {
    let reference = llama_bpe();
    for set in ["instruction", "awkward"] {
        reference.assert_decodes_like_llama_cpp(set);
    }
}

// ---- GPT-2 ----

#[test]
fn gpt2_vocabulary_matches_llama_cpp() {
    gpt2().assert_vocabulary_matches_llama_cpp();
}

#[test]
fn gpt2_encodes_like_llama_cpp() {
    for set in ["instruction", "output", "awkward", "code_points"] {
        gpt2().assert_encodes_like_llama_cpp(set);
    }
}

// ---- more byte-level BPE families ----

/// The checks every vocabulary gets: its attributes and pieces, the instructions,
/// reference outputs, awkward texts and code points, and decoding.
fn assert_matches_llama_cpp(reference: &Reference) {
    reference.assert_vocabulary_matches_llama_cpp();
    for set in ["instruction", "output", "awkward", "code_points"] {
        reference.assert_encodes_like_llama_cpp(set);
    }
    for set in ["instruction", "awkward"] {
        reference.assert_decodes_like_llama_cpp(set);
    }
}

#[test]
fn qwen2_matches_llama_cpp() {
    assert_matches_llama_cpp(qwen2());
}

#[test]
fn deepseek_r1_qwen_is_qwen2() {
    let mut content = fixture_vocabulary("qwen2.json.gz");
    content
        .metadata
        .insert("tokenizer.ggml.pre".into(), gguf_file::Value::String("deepseek-r1-qwen".into()));
    let distill = tokenizer_from_gguf(&content).unwrap();
    let reference = qwen2();
    for case in reference.cases("awkward") {
        let ids = distill.encode(&case.text, case.special, case.add_bos).unwrap();
        assert!(reference.compare_ids(&case, &ids).is_none(), "{:?}", shorten(&case.text));
    }
}

#[test]
fn deepseek_llm_matches_llama_cpp() {
    assert_matches_llama_cpp(deepseek_llm());
}

#[test]
fn deepseek_coder_matches_llama_cpp() {
    assert_matches_llama_cpp(deepseek_coder());
}

#[test]
fn tekken_pre_tokenizer_matches_llama_cpp() {
    assert_matches_llama_cpp(tekken());
}

#[test]
fn gpt4o_pre_tokenizer_matches_llama_cpp() {
    assert_matches_llama_cpp(gpt4o());
}

#[test]
fn chatglm_pre_tokenizer_matches_llama_cpp() {
    assert_matches_llama_cpp(chatglm());
}

// ---- SentencePiece: Llama 2 and Gemma 3 ----

#[test]
fn llama2_sentencepiece_matches_llama_cpp() {
    assert_matches_llama_cpp(llama_spm());
}

#[test]
fn llama2_puts_a_space_before_text_that_starts_or_follows_a_special_token() {
    let t = &llama_spm().tokenizer;
    let hello = t.encode("Hello", false, false).unwrap();
    assert_eq!(t.decode(&hello, false).unwrap(), " Hello");
    let turn = t.encode("<s>Hello</s>Hello", true, true).unwrap();
    assert_eq!(turn[0], t.bos_id().unwrap());
    assert_eq!(t.decode(&turn, true).unwrap(), "<s><s> Hello</s> Hello");
}

#[test]
fn gemma3_vocabulary_matches_llama_cpp() {
    gemma3().assert_vocabulary_matches_llama_cpp();
}

#[test]
fn gemma3_encodes_the_instructions_like_llama_cpp() {
    gemma3().assert_encodes_like_llama_cpp("instruction");
}

#[test]
fn gemma3_encodes_its_turns_like_llama_cpp() {
    gemma3().assert_encodes_like_llama_cpp("chat");
}

#[test]
fn gemma3_encodes_the_reference_outputs_like_llama_cpp() {
    gemma3().assert_encodes_like_llama_cpp("output");
}

#[test]
fn gemma3_encodes_awkward_texts_like_llama_cpp() {
    gemma3().assert_encodes_like_llama_cpp("awkward");
}

#[test]
fn gemma3_encodes_every_code_point_like_llama_cpp() {
    gemma3().assert_encodes_like_llama_cpp("code_points");
}

#[test]
fn gemma3_decodes_like_llama_cpp_and_round_trips_raw_text() {
    for set in ["instruction", "output", "awkward", "chat"] {
        gemma3().assert_decodes_like_llama_cpp(set);
    }
}

#[test]
fn gemma3_knows_its_turn_end_and_vocabulary_entries() {
    let t = &gemma3().tokenizer;
    let end_of_turn = t.special_token_id("<end_of_turn>").unwrap();
    assert!(t.is_end_of_generation(end_of_turn));
    assert!(!t.is_end_of_generation(t.special_token_id("<start_of_turn>").unwrap()));
    assert_eq!(t.token_id("<end_of_turn>"), Some(end_of_turn));
    let space_the = t.token_id("\u{2581}the").unwrap();
    assert_eq!(t.decode(&[space_the], false).unwrap(), " the");
    assert_eq!(t.hf_tokenizer().token_to_id("\u{2581}the"), Some(space_the));
}

/// How long Gemma 3's 262k-entry vocabulary takes to become a tokenizer (printed, not
/// asserted: timing is for bench/).
#[test]
fn gemma3_tokenizer_build_time_is_printed() {
    let content = fixture_vocabulary("gemma3.json.gz");
    let (start, cpu_start) = (Instant::now(), thread_cpu_ms());
    let t = tokenizer_from_gguf(&content).unwrap();
    let cpu = match (cpu_start, thread_cpu_ms()) {
        (Some(a), Some(b)) => format!(", {} ms of CPU", b - a),
        _ => String::new(),
    };
    eprintln!(
        "built the {}-token Gemma 3 tokenizer from GGUF metadata in {:.1?}{cpu}",
        t.vocab_size(),
        start.elapsed()
    );
    let prompts: Vec<&String> = eval_set().outputs.iter().collect();
    let bytes: usize = prompts.iter().map(|p| p.len()).sum();
    let start = Instant::now();
    let tokens: usize = prompts.iter().map(|p| t.encode(p, true, false).unwrap().len()).sum();
    eprintln!(
        "encoded {} reference outputs ({} KiB, {tokens} tokens) with Gemma 3's in {:.0?}",
        prompts.len(),
        bytes / 1024,
        start.elapsed()
    );
}

// ---- one type for GGUF and Hugging Face folders ----

/// Writes the GGUF tokenizer out as a Hugging Face folder and reads it back.
fn through_hf_folder(reference: &Reference) -> HerdTokenizer {
    let t = &reference.tokenizer;
    let dir = std::env::temp_dir().join(format!(
        "herd-tokenizer-{}-{}",
        reference.label,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), t.hf_tokenizer().to_string(false).unwrap()).unwrap();
    let config = json!({
        "bos_token": t.bos_id().and_then(|id| t.token_text(id)),
        "eos_token": t.eos_id().and_then(|id| t.token_text(id)),
        "add_bos_token": t.adds_bos(),
        "chat_template": t.chat_template(),
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let from_folder = HerdTokenizer::from_hf_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    from_folder
}

#[test]
fn a_hugging_face_folder_gives_the_same_tokenizer() {
    for reference in [smollm2(), llama_bpe(), qwen2()] {
        let gguf = &reference.tokenizer;
        let hf = through_hf_folder(reference);
        assert_eq!(hf.bos_id(), gguf.bos_id(), "{}", reference.label);
        assert_eq!(hf.eos_id(), gguf.eos_id(), "{}", reference.label);
        assert_eq!(hf.adds_bos(), gguf.adds_bos(), "{}", reference.label);
        assert_eq!(hf.chat_template(), gguf.chat_template(), "{}", reference.label);
        assert_eq!(hf.vocab_size(), gguf.vocab_size(), "{}", reference.label);
        for set in ["awkward", "instruction"] {
            for case in reference.cases(set) {
                let ids = hf.encode(&case.text, case.special, case.add_bos).unwrap();
                assert!(
                    reference.compare_ids(&case, &ids).is_none(),
                    "{} via tokenizer.json, {set} {:?}",
                    reference.label,
                    shorten(&case.text)
                );
                assert_eq!(
                    hf.decode_bytes(&ids, true).unwrap(),
                    gguf.decode_bytes(&ids, true).unwrap()
                );
            }
        }
    }
}

// ---- what is refused ----

#[test]
fn an_unknown_pre_tokenizer_is_refused_by_name() {
    let mut content = read_gguf_file(&default_model_path());
    content.metadata.insert("tokenizer.ggml.pre".into(), gguf_file::Value::String("viking".into()));
    let error = tokenizer_from_gguf(&content).unwrap_err();
    match &error {
        TokenizerError::UnsupportedPreTokenizer { pre } => assert_eq!(pre, "viking"),
        other => panic!("expected UnsupportedPreTokenizer, got {other:?}"),
    }
    // The message lists what is supported.
    assert!(error.to_string().contains("qwen2, deepseek-r1-qwen"), "{error}");
}

#[test]
fn an_unknown_tokenizer_model_is_refused_by_name() {
    let mut content = read_gguf_file(&default_model_path());
    content.metadata.insert("tokenizer.ggml.model".into(), gguf_file::Value::String("bert".into()));
    let error = tokenizer_from_gguf(&content).unwrap_err();
    assert!(
        matches!(&error, TokenizerError::UnsupportedModel { model } if model == "bert"),
        "{error}"
    );
    assert!(error.to_string().contains("`bert`"), "{error}");
}

#[test]
fn an_id_outside_the_vocabulary_is_an_error_when_decoding() {
    let t = &smollm2().tokenizer;
    let past_end = t.vocab_size() as u32;
    assert!(matches!(
        t.decode(&[past_end], false),
        Err(TokenizerError::UnknownTokenId { id, .. }) if id == past_end
    ));
}
