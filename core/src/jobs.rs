//! The job and result types that flow coordinator → queue → workers → store → coordinator.
//! The in-process `herd run` and the distributed roles exchange exactly these values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a generator turns an instruction into the text its model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptTemplate {
    /// The bare instruction, no template at all (the zero-shot baseline).
    Raw,
    /// The Alpaca instruction-tuning template (`data/prompts/alpaca_sft.prompt`).
    AlpacaSft,
    /// The course's zero-shot system prompt (`data/prompts/zero_shot_system_prompt.prompt`).
    ZeroShotSystem,
    /// The model's own chat template (tokenizer_config.json or GGUF metadata).
    Chat,
}

impl PromptTemplate {
    pub const ALL: [PromptTemplate; 4] = [
        PromptTemplate::Raw,
        PromptTemplate::AlpacaSft,
        PromptTemplate::ZeroShotSystem,
        PromptTemplate::Chat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PromptTemplate::Raw => "raw",
            PromptTemplate::AlpacaSft => "alpaca_sft",
            PromptTemplate::ZeroShotSystem => "zero_shot_system",
            PromptTemplate::Chat => "chat",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One model under evaluation, as the user configured it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GeneratorSpec {
    /// The `generator` name written into `model_outputs.json`.
    pub name: String,
    /// A GGUF file, a Hugging Face model folder, or the name of a built-in default model.
    pub model: String,
    pub template: PromptTemplate,
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Set for a model served elsewhere over an OpenAI-compatible API: `model` is then the
    /// name that server knows it by, and nothing is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<RemoteEndpoint>,
    /// Sampling instead of greedy decoding (temperature 0, top-p 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSpec>,
}

/// How a sampling generator draws its tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SamplingSpec {
    pub temperature: f64,
    pub top_p: f64,
    /// With the eval-set index, seeds each answer's draw ([`SamplingSpec::seed_for`]), so an
    /// answer does not depend on which worker or batch made it.
    pub seed: u64,
}

impl SamplingSpec {
    /// The seed of the answer to eval-set instruction `index`: the run's seed and the index
    /// mixed (SplitMix64's finaliser), kept to 31 bits so every OpenAI-compatible server
    /// takes it.
    pub fn seed_for(&self, index: usize) -> u64 {
        let mut z = self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) & 0x7FFF_FFFF
    }
}

// Compared and hashed by bits: a spec is a plan's identity, and -0.0 or NaN are refused
// where specs are made.
impl PartialEq for SamplingSpec {
    fn eq(&self, other: &Self) -> bool {
        self.temperature.to_bits() == other.temperature.to_bits()
            && self.top_p.to_bits() == other.top_p.to_bits()
            && self.seed == other.seed
    }
}

impl Eq for SamplingSpec {}

impl std::hash::Hash for SamplingSpec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.temperature.to_bits().hash(state);
        self.top_p.to_bits().hash(state);
        self.seed.hash(state);
    }
}

/// An OpenAI-compatible API serving a generator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// The API's base URL, e.g. `http://host:8000/v1`.
    pub url: String,
    pub api: RemoteApi,
}

/// Which of the API's endpoints generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteApi {
    /// `/chat/completions`: the instruction as a user message; the server applies the
    /// model's chat template (the `chat` prompt template).
    Chat,
    /// `/completions`: the prompt template's text (`raw`, `alpaca_sft`, `zero_shot_system`).
    Completions,
}

impl RemoteApi {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteApi::Chat => "chat",
            RemoteApi::Completions => "completions",
        }
    }
}

/// Generate one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationJob {
    pub run_id: String,
    pub generator: GeneratorSpec,
    /// Eval-set position of the instruction.
    pub index: usize,
    pub instruction: String,
    pub dataset: String,
}

/// Why generation of one sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// A stop string appeared; it is not part of the output.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One generated answer, with what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationResult {
    pub run_id: String,
    pub generator: String,
    pub index: usize,
    pub instruction: String,
    pub dataset: String,
    pub output: String,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Wall time from the sequence's admission to its last token.
    pub seconds: f64,
    pub finish_reason: FinishReason,
    /// Which worker produced it (host/process id), for diagnosis only.
    pub worker: String,
    /// When it was made (absent in results of a herd from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
}

/// When a worker made a result, for the run's `throughput.json`: the wall time per phase
/// is computed from the planned results' own timings, so it survives kills (a result is
/// stored with its timing, or not at all) and covers exactly the results a plan counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Unix seconds when the worker's batch that made it started.
    pub batch_started: f64,
    /// Unix seconds when it was stored.
    pub stored_at: f64,
    /// A verdict taken from the judge cache rather than judged (judging only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cache: bool,
}

impl Stored {
    /// A result of the batch that started at `batch_started` (Unix seconds), stored now.
    pub fn now(batch_started: f64, from_cache: bool) -> Self {
        let stored_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Self { batch_started, stored_at, from_cache }
    }
}

/// How the judge reads its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeMode {
    /// Greedy generation parsed as alpaca_eval's `ranking_parser` does.
    Ranking,
    /// One forward pass: preference = 1 + P(model_2 ranked first), read from the logits.
    Logprob,
    /// alpaca_eval's classification annotators (`weighted_alpaca_eval_gpt4_turbo`): the
    /// `alpaca_eval_clf` prompt, one answer token, `logprob_parser` weighting `m` against
    /// `M` in its top-5 log-probabilities. Needs an endpoint that lists them.
    WeightedClassification,
    /// The same, binarised (`alpaca_eval_clf_gpt4_turbo`).
    Classification,
}

impl JudgeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeMode::Ranking => "ranking",
            JudgeMode::Logprob => "logprob",
            JudgeMode::WeightedClassification => "weighted_classification",
            JudgeMode::Classification => "classification",
        }
    }
}

/// The annotator model and how it is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JudgeSpec {
    /// The `annotator` name written into `annotations.json`.
    pub name: String,
    pub model: String,
    pub mode: JudgeMode,
    /// New tokens for ranking mode (alpaca_eval's config: 100).
    pub max_new_tokens: usize,
    /// Prompt + answer must fit this many tokens (alpaca_eval's config: 7000); longer
    /// outputs are truncated with a marker.
    pub max_context_tokens: usize,
    /// An OpenAI-compatible API serving `model` (then nothing is loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What the served judge charges: each verdict's `price_per_example`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<TokenPrice>,
    /// An alpaca_eval annotator config (`--annotator-config`): its prompt and parser replace
    /// the mode's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::judge::AnnotatorConfig>,
}

/// A served model's price in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TokenPrice {
    pub prompt_per_million: f64,
    pub completion_per_million: f64,
}

impl TokenPrice {
    /// OpenAI's list prices (USD per million tokens, December 2026) of the models
    /// alpaca_eval's annotators use; `--judge-price` sets any other.
    pub fn list_price(model: &str) -> Option<Self> {
        let (prompt, completion) = match model {
            "gpt-4-1106-preview"
            | "gpt-4-0125-preview"
            | "gpt-4-turbo"
            | "gpt-4-turbo-2024-04-09" => (10.0, 30.0),
            "gpt-4" | "gpt-4-0613" => (30.0, 60.0),
            "gpt-4o" | "gpt-4o-2024-08-06" | "gpt-4o-2024-11-20" => (2.5, 10.0),
            "gpt-4o-mini" | "gpt-4o-mini-2024-07-18" => (0.15, 0.6),
            "gpt-3.5-turbo" | "gpt-3.5-turbo-0125" => (0.5, 1.5),
            _ => return None,
        };
        Some(Self { prompt_per_million: prompt, completion_per_million: completion })
    }

    /// The price of one call.
    pub fn of(&self, prompt_tokens: usize, completion_tokens: usize) -> f64 {
        (prompt_tokens as f64 * self.prompt_per_million
            + completion_tokens as f64 * self.completion_per_million)
            / 1e6
    }
}

// By bits, as a plan's identity (see SamplingSpec).
impl PartialEq for TokenPrice {
    fn eq(&self, other: &Self) -> bool {
        self.prompt_per_million.to_bits() == other.prompt_per_million.to_bits()
            && self.completion_per_million.to_bits() == other.completion_per_million.to_bits()
    }
}

impl Eq for TokenPrice {}

impl std::hash::Hash for TokenPrice {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.prompt_per_million.to_bits().hash(state);
        self.completion_per_million.to_bits().hash(state);
    }
}

/// Compare one model answer with the reference answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeJob {
    pub run_id: String,
    pub judge: JudgeSpec,
    pub generator: String,
    pub index: usize,
    pub instruction: String,
    pub dataset: String,
    /// `output_1`: the reference answer.
    pub reference_output: String,
    /// `output_2`: the answer under evaluation.
    pub model_output: String,
}

/// The judge's verdict, already mapped back to alpaca_eval's orientation
/// (1.0 = reference wins, 2.0 = model wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeResult {
    pub run_id: String,
    pub judge: String,
    pub generator: String,
    pub index: usize,
    /// `None` when the ranking could not be parsed.
    pub preference: Option<f64>,
    /// What the judge said (ranking mode) or the two probabilities (logprob mode).
    pub raw_completion: String,
    /// Whether the outputs were shown to the judge in swapped order.
    pub is_switched: bool,
    /// Whether either output was truncated to fit the judge's context.
    pub truncated: bool,
    pub prompt_tokens: usize,
    pub seconds: f64,
    pub worker: String,
    /// When it was made (absent in verdicts of a herd from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
    /// What the served judge charged for it, in US dollars (`JudgeSpec::price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
}

/// The two phases of a run, as workers report their activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Generation,
    Judging,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Generation => "generation",
            Phase::Judging => "judging",
        }
    }
}

/// What one worker process did in one run and phase, per generator. Workers store it next to
/// their results. `throughput.json` comes from the results' own [`Stored`] timings; the
/// coordinator merges these records' spans only for results of a herd from before results
/// carried their timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerActivity {
    pub run_id: String,
    pub phase: Phase,
    /// Unique per worker process (host, process id, start time).
    pub worker: String,
    /// By generator name.
    pub generators: BTreeMap<String, ActivitySpan>,
}

/// One worker's work on one generator's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActivitySpan {
    /// Unix seconds when the first batch holding this generator's jobs started.
    pub started_at: f64,
    /// Unix seconds when the last of its results was stored.
    pub finished_at: f64,
    /// Results stored.
    pub jobs: usize,
    /// Of those, verdicts taken from the judge cache (judging only).
    pub cached: usize,
    /// Output tokens generated (generation) or prompt tokens read (judging).
    pub tokens: u64,
}

mod checks;
pub use checks::{
    check_generation_job, check_generation_result, check_judge_job, check_judge_result,
    check_judged_answer, PlanMismatch,
};
