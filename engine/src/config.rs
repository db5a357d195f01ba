//! The shape of a Llama-family model, read from a Hugging Face `config.json` or from GGUF
//! metadata. Both sources end up in one [`ModelConfig`], so the model code never asks where
//! its weights came from.

use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::Deserialize;

use crate::error::{EngineError, InvalidConfig, Result};

/// The model families this engine runs. Both are Llama blocks; Qwen2 adds biases to Q/K/V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
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
}

impl ModelConfig {
    /// Rotary inverse frequencies, one per pair of head dimensions, scaling applied.
    pub fn rope_inv_freqs(&self) -> Vec<f64> {
        let d = self.head_dim;
        let base: Vec<f64> =
            (0..d / 2).map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d as f64)).collect();
        match &self.rope_scaling {
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
        let architecture = match arch_name.as_str() {
            "llama" | "LlamaForCausalLM" => Architecture::Llama,
            "qwen2" | "Qwen2ForCausalLM" => Architecture::Qwen2,
            other => {
                return Err(EngineError::UnsupportedArchitecture {
                    path: path.into(),
                    architecture: if other.is_empty() {
                        "<none given>".into()
                    } else {
                        other.into()
                    },
                })
            }
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
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        let rope_scaling = match raw.rope_scaling {
            None => RopeScaling::None,
            Some(s) => match s.rope_type.as_deref().or(s.kind.as_deref()).unwrap_or("default") {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear {
                    factor: s.factor.ok_or_else(|| bad("rope_scaling.factor missing".into()))?,
                },
                "llama3" => RopeScaling::Llama3 {
                    factor: s.factor.ok_or_else(|| bad("rope_scaling.factor missing".into()))?,
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: s
                        .original_max_position_embeddings
                        .unwrap_or(8192.0),
                },
                other => {
                    return Err(bad(format!(
                        "rope_scaling type {other:?} is not supported (default, linear, llama3)"
                    )))
                }
            },
        };
        let cfg = ModelConfig {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || raw.attention_bias.unwrap_or(false),
        };
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
        let architecture = match arch_name.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(EngineError::UnsupportedArchitecture {
                    path: path.into(),
                    architecture: other.into(),
                })
            }
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
        let head_dim = get_usize("attention.key_length")
            .or_else(|_| get_usize("rope.dimension_count"))
            .unwrap_or(hidden_size / num_heads);
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
        let cfg = ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: get_usize("feed_forward_length")?,
            num_layers: get_usize("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: get_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: get_f64("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: get_usize("context_length").unwrap_or(4096),
            tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
            qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        };
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
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
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}
