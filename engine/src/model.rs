//! A loaded model: the transformer, its tokenizer and its chat template, ready to serve
//! generation and scoring requests.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::config::ModelConfig;
use crate::error::{ChatTemplateError, EngineError, Result};
use crate::placement::Placement;
use crate::prompt::{ChatMessage, ChatTemplate};
use crate::source::{safetensors_files, ModelSource};
use crate::tensor_parallel::{check_degree, Shard};
use crate::token_codec::TokenCodec;
use crate::transformer::{check_fits, check_paged_support, RankLoader, Transformer};
use crate::weights::{read_gguf_header, WeightFormat, WeightReader};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub weight_format: WeightFormat,
}

#[derive(Debug)]
pub struct Model {
    /// The path it was loaded from, for messages and logs.
    pub name: String,
    pub source: ModelSource,
    pub transformer: Transformer,
    pub tokenizer: TokenCodec,
    chat_template: Option<ChatTemplate>,
}

impl Model {
    /// Loads the model at `path` (a GGUF file or a Hugging Face folder, see
    /// [`ModelSource::from_path`]) on the CPU.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Self::load_on(path, options, &Placement::default())
    }

    /// [`Model::load`] onto `placement` (a GPU, or tensor-parallel ranks). Everything that
    /// can be checked before the weights are read is: the device, the tensor-parallel
    /// degree against the heads, the weights' size against the GPUs' memory.
    pub fn load_on(
        path: impl AsRef<Path>,
        options: &LoadOptions,
        placement: &Placement,
    ) -> Result<Self> {
        let path = path.as_ref();
        placement.check()?;
        let source = ModelSource::from_path(path)?;
        Self::load_source_on(&path.display().to_string(), source, options, placement)
    }

    /// Everything [`Model::load_on`] checks before it reads the weights — the device, the
    /// files' format and metadata, the tokenizer, the chat template, the tensor-parallel
    /// degree and the weights' size against the GPUs' memory — without reading them, so a
    /// run can refuse a model that cannot load before it does any work.
    pub fn check_loadable(
        path: impl AsRef<Path>,
        options: &LoadOptions,
        placement: &Placement,
    ) -> Result<ModelConfig> {
        let path = path.as_ref();
        placement.check()?;
        let source = ModelSource::from_path(path)?;
        let (config, tokenizer, _weights) = match &source {
            ModelSource::Gguf(path) => open_gguf(path, options)?,
            ModelSource::HuggingFaceFolder(dir) => open_hf_folder(dir)?,
        };
        if placement.paged() {
            check_paged_support(&config, path)?;
            check_degree(&config, placement.tensor_parallel, path)?;
            check_gpu_shape(&config, placement, path)?;
            check_fits(&config, placement, path)?;
        }
        if let Some(source) = tokenizer.chat_template() {
            ChatTemplate::new(source, tokenizer.bos_token(), tokenizer.eos_token()).map_err(
                |reason| EngineError::ChatTemplate { model: path.display().to_string(), reason },
            )?;
        }
        Ok(config)
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
        let transformer = if placement.paged() {
            check_paged_support(&config, &path)?;
            check_degree(&config, placement.tensor_parallel, &path)?;
            check_gpu_shape(&config, placement, &path)?;
            check_fits(&config, placement, &path)?;
            Transformer::paged(&config, placement, &path, loader)?
        } else {
            Transformer::contiguous(loader(None, DType::F32, Device::Cpu)?)
        };
        let chat_template = tokenizer
            .chat_template()
            .map(|src| ChatTemplate::new(src, tokenizer.bos_token(), tokenizer.eos_token()))
            .transpose()
            .map_err(|reason| EngineError::ChatTemplate { model: name.into(), reason })?;
        tracing::info!(
            model = name,
            architecture = transformer.config().architecture.as_str(),
            layers = transformer.config().num_layers,
            hidden = transformer.config().hidden_size,
            device = transformer.device_name(),
            "model loaded"
        );
        Ok(Self { name: name.into(), source, transformer, tokenizer, chat_template })
    }

    pub fn config(&self) -> &ModelConfig {
        self.transformer.config()
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// `messages` in the model's chat format (the judge's system + user prompt, say).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let chat_error = |reason| EngineError::ChatTemplate { model: self.name.clone(), reason };
        let template =
            self.chat_template.as_ref().ok_or_else(|| chat_error(ChatTemplateError::Missing))?;
        template.render(messages, add_generation_prompt).map_err(chat_error)
    }

    /// Token ids of `text`; with `add_special_tokens` the tokenizer's own (BOS where the
    /// model's tokenizer adds one).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, add_special_tokens)
    }

    /// Token ids of `messages` in the model's chat format, ending where the assistant's
    /// answer starts. The rendering carries its own special tokens (BOS included where the
    /// template writes it), so the tokenizer adds none.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.render_chat(messages, true)?;
        self.encode(&text, false)
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
                reason: reason.to_string(),
            },
        )?;
    }
    let _ = (config, path);
    Ok(())
}
