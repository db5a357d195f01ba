//! The shape of a decoder-only model, read from a Hugging Face `config.json` or from GGUF
//! metadata. Both sources end up in one [`ModelConfig`], so the model code never asks where
//! its weights came from. Each family's departures from the Llama block (Q/K norms, sandwich
//! norms, soft-capping, sliding windows, ...) are spelled out in [`Particulars`].

use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::Deserialize;

use crate::error::{EngineError, InvalidConfig, Result};

/// The model families this engine runs: all Llama-style decoder blocks, each with the
/// particulars its config switches on ([`Particulars`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2 and 3.x (and GGUF files of Mistral, which llama.cpp writes as `llama`).
    Llama,
    /// Mistral: Llama blocks, optionally a sliding window on every layer.
    Mistral,
    /// Qwen2 and Qwen2.5: biases on Q/K/V.
    Qwen2,
    /// Qwen3 (dense): RMS norms over each head's queries and keys.
    Qwen3,
    /// Gemma 2: sandwich norms, GELU, scaled embeddings, soft-capped attention and logits,
    /// a sliding window on every other layer.
    Gemma2,
    /// Gemma 3 (text): Gemma 2's block with Q/K norms instead of attention soft-capping,
    /// five sliding layers (their own rotary base) to one global layer.
    Gemma3,
    /// Phi-3, Phi-3.5 and Phi-4: fused Q/K/V and gate/up projections, LongRoPE.
    Phi3,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma2 => "gemma2",
            Architecture::Gemma3 => "gemma3",
            Architecture::Phi3 => "phi3",
        }
    }

    /// The names accepted, for error messages.
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2, qwen3, gemma2, gemma3 (text), phi3";

    /// `model_type` or the first of `architectures` in a Hugging Face config.
    fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "llama" | "LlamaForCausalLM" => Self::Llama,
            "mistral" | "MistralForCausalLM" => Self::Mistral,
            "qwen2" | "Qwen2ForCausalLM" => Self::Qwen2,
            "qwen3" | "Qwen3ForCausalLM" => Self::Qwen3,
            "gemma2" | "Gemma2ForCausalLM" => Self::Gemma2,
            "gemma3_text" | "Gemma3ForCausalLM" => Self::Gemma3,
            "phi3" | "Phi3ForCausalLM" => Self::Phi3,
            _ => return None,
        })
    }

    /// `general.architecture` in GGUF metadata.
    fn from_gguf(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma2" => Self::Gemma2,
            "gemma3" => Self::Gemma3,
            "phi3" => Self::Phi3,
            _ => return None,
        })
    }

    /// Gemma's norms, names of its four block norms, GELU and scaled embeddings.
    pub fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }

    /// Q/K/V and gate/up stored fused in one tensor each.
    pub fn fused_projections(self) -> bool {
        self == Self::Phi3
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) · up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU (`gelu_pytorch_tanh`): Gemma.
    GeluTanh,
}

/// How a family departs from the plain Llama block. [`Particulars::llama`] is the plain one.
#[derive(Debug, Clone, PartialEq)]
pub struct Particulars {
    /// RMS norms over each head's queries and keys before rotation (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Norms on the attention's and the MLP's outputs too, before each residual add (Gemma).
    pub sandwich_norms: bool,
    /// Embeddings multiplied by this (Gemma: √hidden).
    pub embedding_scale: Option<f64>,
    pub activation: Activation,
    /// Attention scores are `scale · q·k` (1/√head_dim unless the family says otherwise).
    pub attention_scale: f64,
    /// Scores pass through `cap · tanh(s / cap)` before the softmax (Gemma 2).
    pub attention_softcap: Option<f64>,
    /// Logits pass through `cap · tanh(l / cap)` (Gemma 2).
    pub final_softcap: Option<f64>,
    /// Per layer, how many positions a query sees, itself included (`None`: all before it).
    pub layer_windows: Vec<Option<usize>>,
    /// Rotary base and scaling of the windowed layers where they differ from the global
    /// layers' (Gemma 3's local base).
    pub local_rope: Option<(f64, RopeScaling)>,
    /// Rotary embeddings turn only the first this many dimensions of each head (Phi-4-mini's
    /// `partial_rotary_factor`); `None`: all of them.
    pub partial_rotary_dims: Option<usize>,
    /// Added to every norm weight at load: Hugging Face Gemma stores `w` and multiplies by
    /// `1 + w`; llama.cpp's converter already added the 1.
    pub norm_weight_offset: f64,
}

impl Particulars {
    /// The plain Llama block for a model of `num_layers` layers and `head_dim`.
    pub fn llama(num_layers: usize, head_dim: usize) -> Self {
        Self {
            qk_norm: false,
            sandwich_norms: false,
            embedding_scale: None,
            activation: Activation::Silu,
            attention_scale: 1.0 / (head_dim as f64).sqrt(),
            attention_softcap: None,
            final_softcap: None,
            layer_windows: vec![None; num_layers],
            local_rope: None,
            partial_rotary_dims: None,
            norm_weight_offset: 0.0,
        }
    }

    /// Whether some layer attends over a sliding window.
    pub fn has_sliding_window(&self) -> bool {
        self.layer_windows.iter().any(Option::is_some)
    }
}

/// How rotary frequencies are stretched for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Per-frequency divisors, as GGUF files carry them in `rope_freqs.weight`.
    FreqFactors(Vec<f32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Q/K/V projections carry a bias (Qwen2, some Llama fine-tunes).
    pub qkv_bias: bool,
    pub particulars: Particulars,
}

impl ModelConfig {
    /// Rotary inverse frequencies, one per pair of head dimensions, scaling applied.
    pub fn rope_inv_freqs(&self) -> Vec<f64> {
        rope_inv_freqs(self.rotary_dims(), self.rope_theta, &self.rope_scaling)
    }

    /// The dimensions of each head that rotary embeddings turn.
    pub fn rotary_dims(&self) -> usize {
        self.particulars.partial_rotary_dims.unwrap_or(self.head_dim)
    }

    /// [`ModelConfig::rope_inv_freqs`] of the windowed layers, where they have their own.
    pub fn local_rope_inv_freqs(&self) -> Option<Vec<f64>> {
        let (theta, scaling) = self.particulars.local_rope.as_ref()?;
        Some(rope_inv_freqs(self.rotary_dims(), *theta, scaling))
    }
}

fn rope_inv_freqs(d: usize, theta: f64, scaling: &RopeScaling) -> Vec<f64> {
    {
        let base: Vec<f64> =
            (0..d / 2).map(|i| 1.0 / theta.powf(2.0 * i as f64 / d as f64)).collect();
        match scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::FreqFactors(factors) => {
                base.iter().zip(factors).map(|(f, s)| f / *s as f64).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let low_wavelen = original_max_position_embeddings / low_freq_factor;
                let high_wavelen = original_max_position_embeddings / high_freq_factor;
                base.iter()
                    .map(|&freq| {
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        if wavelen < high_wavelen {
                            freq
                        } else if wavelen > low_wavelen {
                            freq / factor
                        } else {
                            let smooth = (original_max_position_embeddings / wavelen
                                - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * freq / factor + smooth * freq
                        }
                    })
                    .collect()
            }
        }
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EngineError::Io { path: path.into(), source })?;
        let bad = |reason: String| EngineError::BadConfig { path: path.into(), reason };
        let raw: HfConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let arch_name = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.as_ref().and_then(|a| a.first().cloned()))
            .unwrap_or_default();
        let Some(architecture) = Architecture::from_hf(&arch_name) else {
            if arch_name == "gemma3" || raw.text_config.is_some() {
                return Err(bad(format!(
                    "model_type {arch_name:?} is a multimodal checkpoint (a text_config inside); \
                     herd runs the text-only form (model_type gemma3_text, Gemma3ForCausalLM)"
                )));
            }
            return Err(EngineError::UnsupportedArchitecture {
                path: path.into(),
                architecture: if arch_name.is_empty() { "<none given>".into() } else { arch_name },
            });
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if raw.num_attention_heads == 0
            || num_kv_heads == 0
            || !raw.num_attention_heads.is_multiple_of(num_kv_heads)
        {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {num_kv_heads}",
                raw.num_attention_heads
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        // Newer configs keep rotary settings in `rope_parameters` (one set per layer type
        // for Gemma 3); older ones in rope_theta / rope_scaling / rope_local_base_freq.
        let (global_rope, local_rope) = match &raw.rope_parameters {
            Some(RopeParameters::PerLayerType(per_type)) => (
                per_type.get("full_attention").cloned(),
                per_type.get("sliding_attention").cloned(),
            ),
            Some(RopeParameters::One(one)) => (Some(one.clone()), None),
            None => (raw.rope_scaling.clone(), None),
        };
        let rope_theta =
            global_rope.as_ref().and_then(|r| r.rope_theta).or(raw.rope_theta).unwrap_or(10_000.0);
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(4096);
        let original_max = raw.original_max_position_embeddings;
        let (rope_scaling, rope_attention_factor, context) =
            hf_rope_scaling(global_rope.as_ref(), head_dim, max_position_embeddings, original_max)
                .map_err(bad)?;
        let local_rope = if architecture == Architecture::Gemma3 {
            let theta = local_rope
                .as_ref()
                .and_then(|r| r.rope_theta)
                .or(raw.rope_local_base_freq)
                .unwrap_or(10_000.0);
            let (scaling, _, _) =
                hf_rope_scaling(local_rope.as_ref(), head_dim, max_position_embeddings, None)
                    .map_err(bad)?;
            Some((theta, scaling))
        } else {
            None
        };
        let layer_windows = hf_layer_windows(&raw, architecture).map_err(bad)?;
        let partial_rotary_factor = raw
            .partial_rotary_factor
            .or(global_rope.as_ref().and_then(|r| r.partial_rotary_factor));
        let partial_rotary_dims = match partial_rotary_factor {
            Some(f) if f != 1.0 => {
                let dims = (head_dim as f64 * f) as usize;
                if dims == 0 || !dims.is_multiple_of(2) || dims > head_dim {
                    return Err(bad(format!(
                        "partial_rotary_factor {f} gives {dims} of {head_dim} head dimensions: \
                         an even number from 2 to head_dim is needed"
                    )));
                }
                Some(dims)
            }
            _ => None,
        };
        let gemma = architecture.is_gemma();
        let activation = match raw.hidden_activation.as_deref().or(raw.hidden_act.as_deref()) {
            None if gemma => Activation::GeluTanh,
            None | Some("silu") | Some("swish") => Activation::Silu,
            Some("gelu_pytorch_tanh") | Some("gelu_new") | Some("gelu_fast") => {
                Activation::GeluTanh
            }
            Some(other) => {
                return Err(bad(format!(
                    "activation {other:?} is not supported (silu, gelu_pytorch_tanh)"
                )))
            }
        };
        let particulars = Particulars {
            qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Gemma3),
            sandwich_norms: gemma,
            embedding_scale: gemma.then(|| (raw.hidden_size as f64).sqrt()),
            activation,
            // LongRoPE multiplies cos and sin by its attention factor, which scales every
            // score by its square: folded into the scale, the rotation stays plain.
            attention_scale: rope_attention_factor.powi(2)
                / raw.query_pre_attn_scalar.filter(|_| gemma).unwrap_or(head_dim as f64).sqrt(),
            attention_softcap: raw.attn_logit_softcapping.filter(|_| gemma),
            final_softcap: raw.final_logit_softcapping.filter(|_| gemma),
            layer_windows,
            local_rope,
            partial_rotary_dims,
            norm_weight_offset: if gemma { 1.0 } else { 0.0 },
        };
        let mut cfg = ModelConfig {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: context,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(gemma),
            qkv_bias: architecture == Architecture::Qwen2 || raw.attention_bias.unwrap_or(false),
            particulars,
        };
        cfg.drop_windows_wider_than_the_context();
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// Reads GGUF metadata (`general.architecture` and the `<arch>.*` keys llama.cpp writes).
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let bad = |reason: String| EngineError::BadGguf { path: path.into(), reason };
        let md = &content.metadata;
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| bad("metadata general.architecture is missing".into()))?;
        let Some(architecture) = Architecture::from_gguf(&arch_name) else {
            return Err(EngineError::UnsupportedArchitecture {
                path: path.into(),
                architecture: arch_name,
            });
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let get_usize = |k: &str| -> Result<usize> {
            md.get(&key(k))
                .ok_or_else(|| bad(format!("metadata {} is missing", key(k))))?
                .to_u64()
                .map(|v| v as usize)
                .map_err(|e| bad(format!("metadata {}: {e}", key(k))))
        };
        let get_f64 = |k: &str| -> Option<f64> {
            md.get(&key(k)).and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
        };
        let hidden_size = get_usize("embedding_length")?;
        let num_heads = get_usize("attention.head_count")?;
        let num_kv_heads = get_usize("attention.head_count_kv").unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(format!(
                "head_count {num_heads} is not a multiple of head_count_kv {num_kv_heads}"
            )));
        }
        let head_dim = get_usize("attention.key_length").unwrap_or(hidden_size / num_heads);
        let partial_rotary_dims = match get_usize("rope.dimension_count") {
            Ok(rotary) if rotary < head_dim && rotary > 0 && rotary.is_multiple_of(2) => {
                Some(rotary)
            }
            Ok(rotary) if rotary != head_dim => {
                return Err(bad(format!(
                    "{} is {rotary}, for heads of {head_dim} dimensions",
                    key("rope.dimension_count")
                )))
            }
            _ => None,
        };
        let embd = content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or_else(|| bad("tensor token_embd.weight is missing".into()))?;
        let vocab_size = embd.shape.dims().first().copied().unwrap_or(0);
        let rope_scaling = if let Some(info) = content.tensor_infos.get("rope_freqs.weight") {
            // Filled in by the weight loader, which can read tensor data.
            let _ = info;
            RopeScaling::FreqFactors(Vec::new())
        } else {
            match md
                .get(&key("rope.scaling.type"))
                .and_then(|v| v.to_string().ok())
                .map(String::as_str)
            {
                Some("linear") => {
                    RopeScaling::Linear { factor: get_f64("rope.scaling.factor").unwrap_or(1.0) }
                }
                Some("none") | None => RopeScaling::None,
                Some(other) => return Err(bad(format!("rope scaling {other:?} is not supported"))),
            }
        };
        if content.tensor_infos.contains_key("rope_factors_long.weight") {
            return Err(bad(
                "LongRoPE factors (rope_factors_long/short) in GGUF are not read yet; \
                 load the Hugging Face folder of this model instead"
                    .into(),
            ));
        }
        let num_layers = get_usize("block_count")?;
        let gemma = architecture.is_gemma();
        // llama.cpp's conventions for the families that have windows: Gemma 2 alternates
        // (even layers windowed), Gemma 3 windows five layers of every six.
        let window = get_usize("attention.sliding_window").ok().filter(|&w| w > 0);
        let pattern = match architecture {
            Architecture::Gemma2 => Some(2),
            Architecture::Gemma3 => {
                Some(get_usize("attention.sliding_window_pattern").unwrap_or(6).max(1))
            }
            _ => None,
        };
        let layer_windows = (0..num_layers)
            .map(|i| match (window, pattern) {
                (Some(w), Some(p)) => (i % p < p - 1).then_some(w),
                (Some(w), None) if architecture != Architecture::Qwen2 => Some(w),
                _ => None,
            })
            .collect();
        let attention_scale = match architecture {
            // llama.cpp: 1/√(hidden / heads) for the 27B models (query_pre_attn_scalar), else
            // 1/√head_dim, which is query_pre_attn_scalar for the others.
            Architecture::Gemma2 | Architecture::Gemma3
                if gemma_27b_layers(architecture) == num_layers =>
            {
                1.0 / ((hidden_size / num_heads) as f64).sqrt()
            }
            _ => 1.0 / (head_dim as f64).sqrt(),
        };
        let particulars = Particulars {
            qk_norm: content.tensor_infos.contains_key("blk.0.attn_q_norm.weight"),
            sandwich_norms: gemma,
            embedding_scale: gemma.then(|| (hidden_size as f64).sqrt()),
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            attention_scale,
            attention_softcap: get_f64("attn_logit_softcapping").filter(|_| gemma),
            final_softcap: get_f64("final_logit_softcapping").filter(|_| gemma),
            layer_windows,
            local_rope: (architecture == Architecture::Gemma3)
                .then_some((10_000.0, RopeScaling::None)),
            partial_rotary_dims,
            norm_weight_offset: 0.0,
        };
        let mut cfg = ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: get_usize("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: get_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: get_f64("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: get_usize("context_length").unwrap_or(4096),
            tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
            qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias")
                || content.tensor_infos.contains_key("blk.0.attn_qkv.bias"),
            particulars,
        };
        cfg.drop_windows_wider_than_the_context();
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// A window at least as wide as the context never hides anything (Phi-3.5's 262,144,
    /// Qwen2's 131,072): such layers attend globally, and the paged path can take them.
    fn drop_windows_wider_than_the_context(&mut self) {
        let context = self.max_position_embeddings;
        for window in &mut self.particulars.layer_windows {
            if window.is_some_and(|w| w >= context) {
                *window = None;
            }
        }
    }

    fn validate(&self) -> std::result::Result<(), InvalidConfig> {
        let fields = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("head_dim", self.head_dim),
        ];
        if let Some(&(field, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(InvalidConfig::Zero { field });
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(InvalidConfig::OddHeadDim { head_dim: self.head_dim });
        }
        Ok(())
    }
}

/// Layers of the 27B Gemma, whose attention scale llama.cpp derives differently.
fn gemma_27b_layers(architecture: Architecture) -> usize {
    match architecture {
        Architecture::Gemma2 => 46,
        _ => 62,
    }
}

/// Rotary scaling from a Hugging Face `rope_scaling` (or one `rope_parameters` set): the
/// scaling, the factor cos/sin are multiplied by, and the context the model may be run to.
/// LongRoPE (Phi-3 128k, Phi-3.5) runs with its short factors, so its context is capped at
/// `original_max_position_embeddings`, where those apply.
fn hf_rope_scaling(
    rope: Option<&HfRopeScaling>,
    head_dim: usize,
    max_position_embeddings: usize,
    original_max: Option<usize>,
) -> std::result::Result<(RopeScaling, f64, usize), String> {
    let Some(s) = rope else { return Ok((RopeScaling::None, 1.0, max_position_embeddings)) };
    let factor = || s.factor.ok_or_else(|| "rope_scaling.factor missing".to_string());
    Ok(match s.rope_type.as_deref().or(s.kind.as_deref()).unwrap_or("default") {
        "default" => (RopeScaling::None, 1.0, max_position_embeddings),
        "linear" => (RopeScaling::Linear { factor: factor()? }, 1.0, max_position_embeddings),
        "llama3" => (
            RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: s
                    .original_max_position_embeddings
                    .unwrap_or(8192.0),
            },
            1.0,
            max_position_embeddings,
        ),
        "longrope" | "su" => {
            let short = s.short_factor.as_ref().ok_or("rope_scaling.short_factor missing")?;
            if short.len() != head_dim / 2 {
                return Err(format!(
                    "rope_scaling.short_factor has {} values, expected {}",
                    short.len(),
                    head_dim / 2
                ));
            }
            let original = original_max
                .or(s.original_max_position_embeddings.map(|v| v as usize))
                .ok_or("original_max_position_embeddings missing for LongRoPE")?;
            let scale = max_position_embeddings as f64 / original as f64;
            let attention_factor = s.attention_factor.unwrap_or(if scale <= 1.0 {
                1.0
            } else {
                (1.0 + scale.ln() / (original as f64).ln()).sqrt()
            });
            let factors = short.iter().map(|&f| f as f32).collect();
            (RopeScaling::FreqFactors(factors), attention_factor, original)
        }
        other => {
            return Err(format!(
                "rope_scaling type {other:?} is not supported (default, linear, llama3, longrope)"
            ))
        }
    })
}

/// Which layers attend over a sliding window, and how wide: `layer_types` where the config
/// lists them, else each family's rule.
fn hf_layer_windows(
    raw: &HfConfig,
    architecture: Architecture,
) -> std::result::Result<Vec<Option<usize>>, String> {
    let n = raw.num_hidden_layers;
    let window = raw.sliding_window.filter(|&w| w > 0);
    if let Some(types) = &raw.layer_types {
        if types.len() != n {
            return Err(format!("layer_types lists {} layers, the model has {n}", types.len()));
        }
        return types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => window.map(Some).ok_or_else(|| {
                    format!("layer_types[{i}] is sliding but sliding_window is unset")
                }),
                other => Err(format!("layer_types[{i}] {other:?} is not supported")),
            })
            .collect();
    }
    Ok((0..n)
        .map(|i| {
            let windowed = match architecture {
                Architecture::Llama => false,
                Architecture::Mistral | Architecture::Phi3 => true,
                Architecture::Qwen2 | Architecture::Qwen3 => {
                    raw.use_sliding_window == Some(true) && i >= raw.max_window_layers.unwrap_or(0)
                }
                Architecture::Gemma2 => i % 2 == 0,
                Architecture::Gemma3 => {
                    let pattern = raw.sliding_window_pattern.unwrap_or(6).max(1);
                    (i + 1) % pattern != 0
                }
            };
            window.filter(|_| windowed)
        })
        .collect())
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRopeScaling>,
    max_position_embeddings: Option<usize>,
    original_max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    rope_parameters: Option<RopeParameters>,
    rope_local_base_freq: Option<f64>,
    partial_rotary_factor: Option<f64>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    /// Present in multimodal checkpoints, which are refused with a pointer to the text form.
    text_config: Option<serde_json::Value>,
}

/// `rope_parameters`: one set, or one per layer type (Gemma 3 in newer transformers).
#[derive(Deserialize)]
#[serde(untagged)]
enum RopeParameters {
    PerLayerType(std::collections::BTreeMap<String, HfRopeScaling>),
    One(HfRopeScaling),
}

#[derive(Deserialize, Clone)]
struct HfRopeScaling {
    rope_theta: Option<f64>,
    attention_factor: Option<f64>,
    short_factor: Option<Vec<f64>>,
    partial_rotary_factor: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<ModelConfig> {
        let dir = std::env::temp_dir().join(format!(
            "herd-config-{}-{}",
            std::process::id(),
            json["model_type"].as_str().unwrap_or("none")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, json.to_string()).unwrap();
        ModelConfig::from_hf_config(&path)
    }

    fn shape(model_type: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut json = serde_json::json!({
            "model_type": model_type, "vocab_size": 32, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 4096,
        });
        json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json
    }

    #[test]
    fn windows_follow_each_familys_rule_and_vanish_when_wider_than_the_context() {
        let windows = |c: &ModelConfig| c.particulars.layer_windows.clone();
        let gemma3 =
            config(shape("gemma3_text", serde_json::json!({"sliding_window": 512}))).unwrap();
        assert_eq!(windows(&gemma3), [Some(512), Some(512), Some(512), Some(512), Some(512), None]);
        let gemma2 = config(shape("gemma2", serde_json::json!({"sliding_window": 512}))).unwrap();
        assert_eq!(windows(&gemma2), [Some(512), None, Some(512), None, Some(512), None]);
        let qwen2 = config(shape(
            "qwen2",
            serde_json::json!({"sliding_window": 1024, "use_sliding_window": false}),
        ))
        .unwrap();
        assert!(!qwen2.particulars.has_sliding_window());
        // Phi-3.5-mini's window of 262,144 over a 4,096 context hides nothing.
        let phi3 = config(shape("phi3", serde_json::json!({"sliding_window": 262144}))).unwrap();
        assert!(!phi3.particulars.has_sliding_window());
        let mistral =
            config(shape("mistral", serde_json::json!({"sliding_window": 4095}))).unwrap();
        assert_eq!(windows(&mistral), vec![Some(4095); 6]);
    }

    #[test]
    fn a_multimodal_checkpoint_and_an_unknown_family_are_refused_by_name() {
        let err = config(shape("gemma3", serde_json::json!({"text_config": {}}))).unwrap_err();
        assert!(err.to_string().contains("gemma3_text"), "{err}");
        let err = config(shape("gpt_neox", serde_json::json!({}))).unwrap_err();
        assert!(err.to_string().contains("gpt_neox") && err.to_string().contains("qwen3"), "{err}");
        let err = config(shape(
            "llama",
            serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }
}
