//! The judge model as the judge domain needs it: its tokenizer for fitting the prompt
//! ([`JudgeTokenizer`]), the prompt in its own format, and the logprob mode's candidate tokens.

use herd_core::judge::{JudgePrompt, JudgeTokenizer, LOGPROB_ANSWER_PREFIX, LOGPROB_CANDIDATES};
use herd_engine::{ChatMessage, EngineError, Model};

/// How the judge's prompt is written for the judge model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeFormat {
    /// The model speaks Llama 3's chat format (its vocabulary has the header tokens): the
    /// prompt is alpaca_eval's template text verbatim, exactly the string alpaca_eval sends
    /// to its Llama 3 judge (no date line that the model's own template would add).
    Llama3Verbatim,
    /// The model's own chat template, with the generation prompt.
    ChatTemplate,
    /// No chat template: the messages as plain text, the answer after a blank line.
    Plain,
}

/// A loaded model in the judge's seat.
pub struct JudgeModel<'a> {
    pub model: &'a Model,
    pub format: JudgeFormat,
}

impl<'a> JudgeModel<'a> {
    pub fn new(model: &'a Model) -> Self {
        let tokenizer = &model.tokenizer;
        let llama3 =
            ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>"]
                .iter()
                .all(|t| tokenizer.token_id(t).is_some());
        let format = if llama3 {
            JudgeFormat::Llama3Verbatim
        } else if model.has_chat_template() {
            JudgeFormat::ChatTemplate
        } else {
            JudgeFormat::Plain
        };
        Self { model, format }
    }

    /// The prompt's token ids, ending where the judge's answer starts.
    pub fn prompt_tokens(&self, prompt: &JudgePrompt) -> Result<Vec<u32>, EngineError> {
        match self.format {
            JudgeFormat::Llama3Verbatim => {
                self.model.tokenizer.encode(&prompt.llama3_verbatim(), false)
            }
            JudgeFormat::ChatTemplate => {
                let messages: Vec<ChatMessage> = prompt
                    .messages()
                    .iter()
                    .map(|m| ChatMessage::new(m.role.as_str(), m.content.as_str()))
                    .collect();
                self.model.chat_prompt(&messages)
            }
            JudgeFormat::Plain => {
                let mut text: String = prompt
                    .messages()
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n");
                text.push_str("\n\n");
                self.model.encode(&text, true)
            }
        }
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        self.model.tokenizer.encode(text, false).unwrap_or_default()
    }

    /// Tokens that the judge may read: the prompt and its answer must fit its context.
    pub fn max_context_tokens(&self) -> usize {
        self.model.config().max_position_embeddings
    }
}

impl JudgeTokenizer for JudgeModel<'_> {
    fn count_tokens(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    fn truncate_to_tokens(&self, text: &str, max_tokens: usize) -> String {
        let ids = self.encode(text);
        if ids.len() <= max_tokens {
            return text.to_string();
        }
        let mut keep = max_tokens;
        loop {
            let cut = self.model.tokenizer.decode(&ids[..keep]).unwrap_or_default();
            // A cut inside a multi-byte character decodes to U+FFFD: drop that token too.
            if !cut.ends_with('\u{FFFD}') || keep == 0 {
                return cut;
            }
            keep -= 1;
        }
    }

    fn count_prompt(&self, prompt: &JudgePrompt) -> usize {
        match self.prompt_tokens(prompt) {
            Ok(ids) => ids.len(),
            // The template failed (reported when the prompt is built): count the texts.
            Err(_) => prompt.messages().iter().map(|m| self.count_tokens(&m.content)).sum(),
        }
    }
}

/// The tokens of [`LOGPROB_ANSWER_PREFIX`] and of the two answers that can follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogprobCandidates {
    pub prefix: Vec<u32>,
    /// The tokens "1" and "2" after the prefix: the judge names model_1 or model_2 first.
    pub candidates: [u32; 2],
}

impl LogprobCandidates {
    /// Checks that `prefix + "1"` (and `+ "2"`) tokenize as the prefix's tokens plus one
    /// token, so that one next-token distribution holds the whole verdict.
    pub fn for_model(model: &Model) -> Result<Self, String> {
        let encode = |text: &str| model.tokenizer.encode(text, false).map_err(|e| e.to_string());
        let prefix = encode(LOGPROB_ANSWER_PREFIX)?;
        let mut candidates = [0u32; 2];
        for (slot, candidate) in candidates.iter_mut().zip(LOGPROB_CANDIDATES) {
            let whole = encode(&format!("{LOGPROB_ANSWER_PREFIX}{candidate}"))?;
            match whole.split_last() {
                Some((&last, head)) if head == prefix.as_slice() => *slot = last,
                _ => {
                    return Err(format!(
                        "the judge's tokenizer does not end {LOGPROB_ANSWER_PREFIX:?} + {candidate:?} with one token \
                         for {candidate:?} ({prefix:?} then {whole:?}); use --judge-mode ranking"
                    ))
                }
            }
        }
        if candidates[0] == candidates[1] {
            return Err("the judge's tokenizer gives \"1\" and \"2\" the same token; use --judge-mode ranking".into());
        }
        Ok(Self { prefix, candidates })
    }
}
