//! A loaded model: the network, its tokenizer and its chat template, ready to serve
//! generation and scoring requests.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use herd_core::jobs::PromptTemplate;

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::network::{check_fits, Network, RankLoader};
use crate::placement::Placement;
use crate::prompt::{render_fixed_template, ChatMessage, ChatTemplate};
use crate::source::{safetensors_files, ModelSource};
use crate::tensor_parallel::{check_degree, Shard};
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
    pub network: Network,
    pub tokenizer: TokenCodec,
    chat_template: Option<ChatTemplate>,
}

impl Model {
    /// Resolves `spec` (built-in name, `.gguf` file or Hugging Face folder) and loads it
    /// on the CPU.
    pub fn load(spec: &str, options: &LoadOptions) -> Result<Self> {
        Self::load_on(spec, options, &Placement::default())
    }

    /// [`Model::load`] onto `placement` (a GPU, or tensor-parallel ranks). Everything that
    /// can be checked before the weights are read is: the device, the tensor-parallel
    /// degree against the heads, the weights' size against the GPUs' memory.
    pub fn load_on(spec: &str, options: &LoadOptions, placement: &Placement) -> Result<Self> {
        placement.check()?;
        let source = ModelSource::resolve(spec)?;
        Self::load_source_on(spec, source, options, placement)
    }

    pub fn load_source(name: &str, source: ModelSource, options: &LoadOptions) -> Result<Self> {
        Self::load_source_on(name, source, options, &Placement::default())
    }

    fn load_source_on(
        name: &str,
        source: ModelSource,
        options: &LoadOptions,
        placement: &Placement,
    ) -> Result<Self> {
        let (config, tokenizer, loader) = match &source {
            ModelSource::Gguf(path) => open_gguf(path, options)?,
            ModelSource::HuggingFaceFolder(dir) => open_hf_folder(dir)?,
        };
        let path = source.path().to_path_buf();
        let network = if placement.paged() {
            check_degree(&config, placement.tensor_parallel, &path)?;
            check_gpu_shape(&config, placement, &path)?;
            check_fits(&config, placement, &path)?;
            Network::paged(&config, placement, &path, loader)?
        } else {
            Network::contiguous(loader(None, DType::F32, Device::Cpu)?)
        };
        let chat_template = tokenizer
            .chat_template()
            .map(|src| ChatTemplate::new(src, tokenizer.bos_token(), tokenizer.eos_token()))
            .transpose()
            .map_err(|reason| EngineError::ChatTemplate { model: name.into(), reason })?;
        tracing::info!(
            model = name,
            architecture = network.config().architecture.as_str(),
            layers = network.config().num_layers,
            hidden = network.config().hidden_size,
            device = network.device_name(),
            "model loaded"
        );
        Ok(Self { name: name.into(), source, network, tokenizer, chat_template })
    }

    pub fn config(&self) -> &ModelConfig {
        self.network.config()
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
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_ref().ok_or_else(|| EngineError::ChatTemplate {
            model: self.name.clone(),
            reason: "the model has no chat template (tokenizer_config.json chat_template / GGUF tokenizer.chat_template)".into(),
        })?;
        template
            .render(messages, add_generation_prompt)
            .map_err(|reason| EngineError::ChatTemplate { model: self.name.clone(), reason })
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

/// A GGUF file's config and tokenizer, and a loader of its weights (whole or one rank's).
fn open_gguf(path: &Path, options: &LoadOptions) -> Result<(ModelConfig, TokenCodec, RankLoader)> {
    let (content, file) = read_gguf_header(path)?;
    let config = ModelConfig::from_gguf(path, &content)?;
    let tokenizer = TokenCodec::from_gguf(path, &content)?;
    let (path, format, model_config) = (path.to_path_buf(), options.weight_format, config.clone());
    // The header read above serves the first load; tensor-parallel ranks after it re-read.
    let header = std::sync::Mutex::new(Some((content, file)));
    let loader: RankLoader = Arc::new(move |shard: Option<Shard>, dtype: DType, device: Device| {
        let first = header.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (content, file) = match first {
            Some(header) => header,
            None => read_gguf_header(&path)?,
        };
        let format = if device.is_cpu() && shard.is_none() { format } else { WeightFormat::Dense };
        let reader = WeightReader::gguf(&path, content, file, &model_config, format)?;
        reader.on(dtype, device).load_llama(model_config.clone(), shard.as_ref())
    });
    Ok((config, tokenizer, loader))
}

/// A Hugging Face folder's config and tokenizer, and a loader of its weights.
fn open_hf_folder(dir: &Path) -> Result<(ModelConfig, TokenCodec, RankLoader)> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(EngineError::MissingConfig { dir: dir.into() });
    }
    let config = ModelConfig::from_hf_config(&config_path)?;
    let files = safetensors_files(dir)?;
    let tokenizer = TokenCodec::from_hf_folder(dir)?;
    // Open the files once now, so a bad header fails before any rank starts.
    drop(WeightReader::safetensors(dir, &files)?);
    let (dir, model_config) = (dir.to_path_buf(), config.clone());
    let loader: RankLoader = Arc::new(move |shard: Option<Shard>, dtype: DType, device: Device| {
        WeightReader::safetensors(&dir, &files)?
            .on(dtype, device)
            .load_llama(model_config.clone(), shard.as_ref())
    });
    Ok((config, tokenizer, loader))
}

/// The GPU kernels' limits on the attention shape, checked before loading.
fn check_gpu_shape(config: &ModelConfig, placement: &Placement, path: &Path) -> Result<()> {
    if !matches!(placement.device, crate::placement::DeviceSpec::Cuda(_)) {
        return Ok(());
    }
    #[cfg(feature = "cuda")]
    {
        let group = config.num_heads / config.num_kv_heads;
        crate::cuda::KernelShape { head_dim: config.head_dim, group }.check().map_err(
            |reason| EngineError::Device {
                device: format!("{} ({})", placement.device, path.display()),
                reason,
            },
        )?;
    }
    let _ = (config, path);
    Ok(())
}
