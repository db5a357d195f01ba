//! A loaded model: the network, its tokenizer and its chat template, ready to serve
//! generation and scoring requests.

use std::path::Path;

use herd_core::jobs::PromptTemplate;

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::llama::Llama;
use crate::prompt::{render_fixed_template, ChatMessage, ChatTemplate};
use crate::source::{safetensors_files, ModelSource};
use crate::token_codec::TokenCodec;
use crate::weights::{read_gguf_header, WeightFormat, WeightReader};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub weight_format: WeightFormat,
}

#[derive(Debug)]
pub struct Model {
    /// What the user asked for (a built-in name or a path).
    pub name: String,
    pub source: ModelSource,
    pub network: Llama,
    pub tokenizer: TokenCodec,
    chat_template: Option<ChatTemplate>,
}

impl Model {
    /// Resolves `spec` (built-in name, `.gguf` file or Hugging Face folder) and loads it.
    pub fn load(spec: &str, options: &LoadOptions) -> Result<Self> {
        let source = ModelSource::resolve(spec)?;
        Self::load_source(spec, source, options)
    }

    pub fn load_source(name: &str, source: ModelSource, options: &LoadOptions) -> Result<Self> {
        let (network, tokenizer) = match &source {
            ModelSource::Gguf(path) => load_gguf(path, options)?,
            ModelSource::HuggingFaceFolder(dir) => load_hf_folder(dir)?,
        };
        let chat_template = tokenizer
            .chat_template()
            .map(|src| ChatTemplate::new(src, tokenizer.bos_token(), tokenizer.eos_token()))
            .transpose()
            .map_err(|reason| EngineError::ChatTemplate { model: name.into(), reason })?;
        tracing::info!(
            model = name,
            architecture = network.config.architecture.as_str(),
            layers = network.config.num_layers,
            hidden = network.config.hidden_size,
            "model loaded"
        );
        Ok(Self { name: name.into(), source, network, tokenizer, chat_template })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.network.config
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The prompt text for `instruction` under `template`.
    pub fn render_prompt(&self, template: PromptTemplate, instruction: &str) -> Result<String> {
        match render_fixed_template(template, instruction) {
            Some(text) => Ok(text),
            None => self.render_chat(&[ChatMessage::new("user", instruction)], true),
        }
    }

    /// `messages` in the model's chat format (the judge's system + user prompt, say).
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.chat_template.as_ref().ok_or_else(|| EngineError::ChatTemplate {
            model: self.name.clone(),
            reason: "the model has no chat template (tokenizer_config.json chat_template / GGUF tokenizer.chat_template)".into(),
        })?;
        template.render(messages, add_generation_prompt).map_err(|reason| EngineError::ChatTemplate { model: self.name.clone(), reason })
    }

    /// Token ids of a rendered prompt. Chat renderings already carry their special tokens
    /// (BOS included where the template writes it); plain prompts get the tokenizer's.
    pub fn encode_prompt(&self, text: &str, template: PromptTemplate) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, template != PromptTemplate::Chat)
    }

    /// Token ids of `instruction` under `template`.
    pub fn prompt_tokens(&self, template: PromptTemplate, instruction: &str) -> Result<Vec<u32>> {
        let text = self.render_prompt(template, instruction)?;
        self.encode_prompt(&text, template)
    }
}

fn load_gguf(path: &Path, options: &LoadOptions) -> Result<(Llama, TokenCodec)> {
    let (content, file) = read_gguf_header(path)?;
    let config = ModelConfig::from_gguf(path, &content)?;
    let tokenizer = TokenCodec::from_gguf(path, &content)?;
    let reader = WeightReader::gguf(path, content, file, &config, options.weight_format)?;
    Ok((reader.load_llama(config)?, tokenizer))
}

fn load_hf_folder(dir: &Path) -> Result<(Llama, TokenCodec)> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(EngineError::MissingConfig { dir: dir.into() });
    }
    let config = ModelConfig::from_hf_config(&config_path)?;
    let files = safetensors_files(dir)?;
    let tokenizer = TokenCodec::from_hf_folder(dir)?;
    let reader = WeightReader::safetensors(dir, &files)?;
    Ok((reader.load_llama(config)?, tokenizer))
}
