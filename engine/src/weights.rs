//! Reads a [`Llama`] out of a GGUF file or a Hugging Face safetensors folder.
//!
//! Tensors are asked for by their Hugging Face names; GGUF names are derived from them.
//! Everything is checked before the first tensor is materialised, so a bad file fails fast
//! with the file and tensor named.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::attention;
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::error::{EngineError, Result};
use crate::linear::Linear;
use crate::llama::{Attention, DecoderBlock, Embedding, Llama, Mlp, RmsNorm, RotaryEmbedding};
use crate::quant_matmul::{self, PackedWeights};
use crate::tensor_parallel::Shard;

/// One projection of a stacked layer: its tensor name (without `.weight`), its rows, the
/// heads whose rotary pairs its rows hold (Q, K), and the rows this rank keeps.
struct Part<'a> {
    name: &'a str,
    out: usize,
    rope_heads: Option<usize>,
    keep: Range<usize>,
}

impl<'a> Part<'a> {
    fn whole(name: &'a str, out: usize, rope_heads: Option<usize>) -> Self {
        Self { name, out, rope_heads, keep: 0..out }
    }
}

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// On the CPU, GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and Q2_K to Q6_K projections
    /// through herd's own kernels (`quant_matmul`: faster than f32 and a fifth to a third of
    /// its memory); other weights dense f32 when the whole model fits in
    /// [`AUTO_DENSE_LIMIT_BYTES`], else quantized.
    #[default]
    Auto,
    /// Dequantize everything to the compute dtype once at load (the GPU and
    /// tensor-parallel paths; on the CPU, for comparisons).
    Dense,
    /// Keep GGUF blocks and multiply by them directly (least memory): herd's kernels for
    /// the types `quant_matmul` takes (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q2_K to Q6_K), candle's
    /// `QMatMul` for the rest (IQ types, Q8_1, …). Safetensors weights are always dense.
    Quantized,
}

/// Models whose dense f32 weights stay under this are dequantized by [`WeightFormat::Auto`].
pub const AUTO_DENSE_LIMIT_BYTES: u64 = 3 << 30;

enum Source {
    Gguf { file: BufReader<File>, content: gguf_file::Content },
    Safetensors(MmapedSafetensors),
}

pub(crate) struct WeightReader {
    path: PathBuf,
    source: Source,
    dense: bool,
    /// Projections of the types `quant_matmul` supports go to it (CPU, f32, unsharded).
    pack: bool,
    /// GGUF Llama files store Q/K rows interleaved for llama.cpp's rotary layout.
    unpermute_qk: bool,
    /// The family, for its tensor names.
    architecture: Option<Architecture>,
    dtype: DType,
    device: Device,
}

/// Opens a GGUF file and reads its header: config and all tensor metadata.
pub(crate) fn read_gguf_header(path: &Path) -> Result<(gguf_file::Content, BufReader<File>)> {
    let file = File::open(path).map_err(|source| EngineError::Io { path: path.into(), source })?;
    let mut file = BufReader::new(file);
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| EngineError::BadGguf { path: path.into(), reason: e.to_string() })?;
    Ok((content, file))
}

impl WeightReader {
    pub(crate) fn gguf(
        path: &Path,
        content: gguf_file::Content,
        file: BufReader<File>,
        config: &ModelConfig,
        format: WeightFormat,
    ) -> Result<Self> {
        // The header is in hand: check the data it points to is all there before reading any.
        let file_len = file
            .get_ref()
            .metadata()
            .map_err(|source| EngineError::Io { path: path.into(), source })?
            .len();
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > file_len {
                return Err(EngineError::BadGguf {
                    path: path.into(),
                    reason: format!("tensor {name} ends at byte {end}, past the end of the file ({file_len} bytes)"),
                });
            }
        }
        let dense = match format {
            WeightFormat::Dense => true,
            WeightFormat::Quantized => false,
            WeightFormat::Auto => {
                let elems: usize =
                    content.tensor_infos.values().map(|i| i.shape.elem_count()).sum();
                (elems as u64) * 4 <= AUTO_DENSE_LIMIT_BYTES
            }
        };
        Ok(Self {
            path: path.into(),
            source: Source::Gguf { file, content },
            dense,
            pack: format != WeightFormat::Dense,
            unpermute_qk: config.architecture == Architecture::Llama,
            architecture: Some(config.architecture),
            dtype: DType::F32,
            device: Device::Cpu,
        })
    }

    pub(crate) fn safetensors(dir: &Path, files: &[PathBuf]) -> Result<Self> {
        // SAFETY: the files are memory-mapped read-only; herd does not modify model files
        // while it runs.
        let st =
            unsafe { MmapedSafetensors::multi(files) }.map_err(|e| EngineError::BadWeights {
                path: dir.into(),
                tensor: "<header>".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            path: dir.into(),
            source: Source::Safetensors(st),
            dense: true,
            pack: false,
            unpermute_qk: false,
            architecture: None,
            dtype: DType::F32,
            device: Device::Cpu,
        })
    }

    /// Loads tensors as `dtype` onto `device` (the CPU's f32 otherwise).
    pub(crate) fn on(mut self, dtype: DType, device: Device) -> Self {
        self.dtype = dtype;
        self.device = device;
        self
    }

    /// Whether GGUF blocks of `dtype` become a packed CPU layer.
    fn packs(&self, dtype: GgmlDType) -> bool {
        self.pack
            && self.device.is_cpu()
            && self.dtype == DType::F32
            && quant_matmul::supports(dtype)
    }

    fn bad(&self, tensor: &str, reason: impl Into<String>) -> EngineError {
        EngineError::BadWeights {
            path: self.path.clone(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    fn contains(&self, hf_name: &str) -> bool {
        match &self.source {
            Source::Gguf { content, .. } => {
                content.tensor_infos.contains_key(&gguf_name(hf_name, self.architecture))
            }
            Source::Safetensors(st) => st.get(hf_name).is_ok(),
        }
    }

    /// A tensor as stored: GGUF blocks, or dense for safetensors.
    fn raw(&mut self, hf_name: &str) -> Result<RawWeight> {
        match &mut self.source {
            Source::Gguf { file, content } => {
                let name = gguf_name(hf_name, self.architecture);
                let q = content.tensor(file, &name, &Device::Cpu).map_err(|e| {
                    EngineError::BadWeights {
                        path: self.path.clone(),
                        tensor: name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(RawWeight::Quantized(q))
            }
            Source::Safetensors(st) => {
                let t = st.load(hf_name, &Device::Cpu).map_err(|e| EngineError::BadWeights {
                    path: self.path.clone(),
                    tensor: hf_name.into(),
                    reason: e.to_string(),
                })?;
                Ok(RawWeight::Dense(t))
            }
        }
    }

    fn dense_tensor(&mut self, hf_name: &str) -> Result<Tensor> {
        let t = match self.raw(hf_name)? {
            RawWeight::Dense(t) => t,
            RawWeight::Quantized(q) => q.dequantize(&Device::Cpu)?,
        };
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// An RMS norm's weight, with the family's offset added (Gemma's `1 + w`).
    fn norm(&mut self, hf_name: &str, len: usize, config: &ModelConfig) -> Result<RmsNorm> {
        let weight = self.vector(hf_name, len)?;
        let offset = config.particulars.norm_weight_offset;
        let weight = if offset != 0.0 { (weight + offset)? } else { weight };
        Ok(RmsNorm { weight, eps: config.rms_norm_eps as f32 })
    }

    /// Projections stored fused in one tensor (Phi-3's `qkv_proj`, `gate_up_proj`): the
    /// sections' row counts and the rows of each this rank keeps.
    fn fused_linear(
        &mut self,
        name: &str,
        sections: &[(usize, Range<usize>)],
        in_features: usize,
        keep_cols: Range<usize>,
    ) -> Result<Linear> {
        let total: usize = sections.iter().map(|(rows, _)| rows).sum();
        if keep_cols == (0..in_features) && sections.iter().all(|(rows, keep)| *keep == (0..*rows))
        {
            return self.stacked_linear(
                &[Part::whole(name, total, None)],
                in_features,
                false,
                keep_cols,
            );
        }
        let weight_name = format!("{name}.weight");
        let whole = self.raw(&weight_name)?;
        if whole.dims() != [total, in_features] {
            return Err(self.bad(
                &weight_name,
                format!("shape {:?}, expected [{total}, {in_features}]", whole.dims()),
            ));
        }
        let whole = whole.into_dense()?;
        let mut kept = Vec::with_capacity(sections.len());
        let mut offset = 0;
        for (rows, keep) in sections {
            kept.push(
                whole
                    .narrow(0, offset + keep.start, keep.len())?
                    .narrow(1, keep_cols.start, keep_cols.len())?
                    .to_dtype(self.dtype)?
                    .contiguous()?
                    .to_device(&self.device)?,
            );
            offset += rows;
        }
        Linear::dense(&Tensor::cat(&kept, 0)?, None)
    }

    fn vector(&mut self, hf_name: &str, len: usize) -> Result<Tensor> {
        let t = self.dense_tensor(hf_name)?;
        if t.dims() != [len] {
            return Err(self.bad(hf_name, format!("shape {:?}, expected [{len}]", t.dims())));
        }
        Ok(t)
    }

    /// Several `[out_i, in]` projections stacked into one layer (Q/K/V, gate/up), each cut
    /// to the rows its part keeps and to the columns `keep_cols` (tensor parallelism).
    fn stacked_linear(
        &mut self,
        parts: &[Part],
        in_features: usize,
        bias: bool,
        keep_cols: Range<usize>,
    ) -> Result<Linear> {
        let whole = keep_cols == (0..in_features) && parts.iter().all(|p| p.keep == (0..p.out));
        let mut raws = Vec::with_capacity(parts.len());
        for part in parts {
            let weight_name = format!("{}.weight", part.name);
            let raw = self.raw(&weight_name)?;
            let dims = raw.dims();
            if dims != [part.out, in_features] {
                return Err(self.bad(
                    &weight_name,
                    format!("shape {dims:?}, expected [{}, {in_features}]", part.out),
                ));
            }
            let raw = match part.rope_heads {
                Some(heads) if self.unpermute_qk => raw.unpermute_rotary_rows(heads)?,
                _ => raw,
            };
            raws.push(raw);
        }
        let bias = if bias {
            let mut biases = Vec::with_capacity(parts.len());
            for part in parts {
                let b = self.vector(&format!("{}.bias", part.name), part.out)?;
                let b = match part.rope_heads {
                    Some(heads) if self.unpermute_qk => {
                        unpermute_rotary_dense(&b.unsqueeze(1)?, heads)?.squeeze(1)?
                    }
                    _ => b,
                };
                biases.push(b.narrow(0, part.keep.start, part.keep.len())?);
            }
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        let same_quant = raws
            .iter()
            .all(|r| matches!(r, RawWeight::Quantized(q) if q.dtype() == raws_dtype(&raws)));
        // Packed parts may mix types (Q4_K_M files keep some V projections in Q6_K).
        let packable: Option<Vec<&QTensor>> = raws
            .iter()
            .map(|r| match r {
                RawWeight::Quantized(q) if self.packs(q.dtype()) => Some(q),
                _ => None,
            })
            .collect();
        if let Some(parts) = packable.filter(|p| whole && PackedWeights::can_stack(p)) {
            return Linear::packed_stack(&parts, bias);
        }
        if whole
            && !self.dense
            && same_quant
            && !matches!(raws_dtype(&raws), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        {
            let q = concat_quantized_rows(&raws)?;
            return Linear::quantized(Arc::new(q), bias);
        }
        let mut dense = Vec::with_capacity(raws.len());
        for (raw, part) in raws.into_iter().zip(parts) {
            let t = raw.into_dense()?;
            let t = if whole {
                t
            } else {
                t.narrow(0, part.keep.start, part.keep.len())?.narrow(
                    1,
                    keep_cols.start,
                    keep_cols.len(),
                )?
            };
            // Cut and converted on the CPU, so only this rank's slice travels to the device.
            dense.push(t.to_dtype(self.dtype)?.contiguous()?.to_device(&self.device)?);
        }
        Linear::dense(&Tensor::cat(&dense, 0)?, bias)
    }

    fn embedding(&mut self, config: &ModelConfig) -> Result<Embedding> {
        let name = "model.embed_tokens.weight";
        let raw = self.raw(name)?;
        if raw.dims() != [config.vocab_size, config.hidden_size] {
            return Err(self.bad(
                name,
                format!(
                    "shape {:?}, expected [{}, {}]",
                    raw.dims(),
                    config.vocab_size,
                    config.hidden_size
                ),
            ));
        }
        Ok(match raw {
            // Packed LM heads keep their blocks for lookups too.
            RawWeight::Quantized(q) if self.packs(q.dtype()) => Embedding::Quantized(Arc::new(q)),
            RawWeight::Quantized(q)
                if !self.dense
                    && !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) =>
            {
                Embedding::Quantized(Arc::new(q))
            }
            raw => {
                Embedding::Dense(raw.into_dense()?.to_dtype(self.dtype)?.to_device(&self.device)?)
            }
        })
    }

    /// GGUF Llama 3 files keep llama3 rope scaling as a tensor of per-frequency divisors.
    fn rope_freq_factors(&mut self, config: &mut ModelConfig) -> Result<()> {
        if let RopeScaling::FreqFactors(f) = &config.rope_scaling {
            if f.is_empty() {
                let factors = match &mut self.source {
                    Source::Gguf { file, content } => content
                        .tensor(file, "rope_freqs.weight", &Device::Cpu)
                        .and_then(|q| q.dequantize(&Device::Cpu))
                        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                        .map_err(|e| self.bad_gguf(format!("rope_freqs.weight: {e}")))?,
                    Source::Safetensors(_) => Vec::new(),
                };
                if factors.len() != config.head_dim / 2 {
                    return Err(self.bad_gguf(format!(
                        "rope_freqs.weight has {} values, expected {}",
                        factors.len(),
                        config.head_dim / 2
                    )));
                }
                config.rope_scaling = RopeScaling::FreqFactors(factors);
            }
        }
        Ok(())
    }

    fn bad_gguf(&self, reason: String) -> EngineError {
        EngineError::BadGguf { path: self.path.clone(), reason }
    }

    /// Builds the whole model, or one tensor-parallel rank's slice of it (`shard`: whole
    /// heads of Q/K/V and O, a slice of the MLP; the rest replicated).
    pub(crate) fn load_llama(
        mut self,
        mut config: ModelConfig,
        shard: Option<&Shard>,
    ) -> Result<Llama> {
        self.rope_freq_factors(&mut config)?;
        if shard.is_some() {
            self.dense = true;
            self.pack = false;
        }
        let c = &config;
        let (hidden, h, kvh, d, inter) =
            (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size);
        let keep = |total: usize| shard.map_or(0..total, |s| s.range(total));
        let (heads, kv_heads, units) = (keep(h), keep(kvh), keep(inter));
        let scaled = |r: &Range<usize>| r.start * d..r.end * d;
        let embedding = self.embedding(c)?;
        let gemma = c.architecture.is_gemma();
        let fused = c.architecture.fused_projections();
        if fused && c.qkv_bias {
            return Err(
                self.bad("qkv_proj.bias", "biases on fused Q/K/V projections are not supported")
            );
        }
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let qkv = if fused {
                self.fused_linear(
                    &format!("{p}.self_attn.qkv_proj"),
                    &[
                        (h * d, scaled(&heads)),
                        (kvh * d, scaled(&kv_heads)),
                        (kvh * d, scaled(&kv_heads)),
                    ],
                    hidden,
                    0..hidden,
                )?
            } else {
                let (q_name, k_name, v_name) = (
                    format!("{p}.self_attn.q_proj"),
                    format!("{p}.self_attn.k_proj"),
                    format!("{p}.self_attn.v_proj"),
                );
                self.stacked_linear(
                    &[
                        Part {
                            name: &q_name,
                            out: h * d,
                            rope_heads: Some(h),
                            keep: scaled(&heads),
                        },
                        Part {
                            name: &k_name,
                            out: kvh * d,
                            rope_heads: Some(kvh),
                            keep: scaled(&kv_heads),
                        },
                        Part {
                            name: &v_name,
                            out: kvh * d,
                            rope_heads: None,
                            keep: scaled(&kv_heads),
                        },
                    ],
                    hidden,
                    c.qkv_bias,
                    0..hidden,
                )?
            };
            let o = self.stacked_linear(
                &[Part::whole(&format!("{p}.self_attn.o_proj"), hidden, None)],
                h * d,
                false,
                scaled(&heads),
            )?;
            let gate_up = if fused {
                self.fused_linear(
                    &format!("{p}.mlp.gate_up_proj"),
                    &[(inter, units.clone()), (inter, units.clone())],
                    hidden,
                    0..hidden,
                )?
            } else {
                let (gate_name, up_name) =
                    (format!("{p}.mlp.gate_proj"), format!("{p}.mlp.up_proj"));
                self.stacked_linear(
                    &[
                        Part {
                            name: &gate_name,
                            out: inter,
                            rope_heads: None,
                            keep: units.clone(),
                        },
                        Part { name: &up_name, out: inter, rope_heads: None, keep: units.clone() },
                    ],
                    hidden,
                    false,
                    0..hidden,
                )?
            };
            let down = self.stacked_linear(
                &[Part::whole(&format!("{p}.mlp.down_proj"), hidden, None)],
                inter,
                false,
                units.clone(),
            )?;
            let (o, down) = match shard {
                Some(s) => {
                    (o.row_parallel(s.all_reduce.clone()), down.row_parallel(s.all_reduce.clone()))
                }
                None => (o, down),
            };
            let (q_norm, k_norm) = if c.particulars.qk_norm {
                (
                    Some(self.norm(&format!("{p}.self_attn.q_norm.weight"), d, c)?),
                    Some(self.norm(&format!("{p}.self_attn.k_norm.weight"), d, c)?),
                )
            } else {
                (None, None)
            };
            let window = c.particulars.layer_windows[i];
            // Gemma names its four norms by place; Llama's post-attention norm is the MLP's.
            let mlp_norm_name = if gemma {
                format!("{p}.pre_feedforward_layernorm.weight")
            } else {
                format!("{p}.post_attention_layernorm.weight")
            };
            let (attention_output_norm, mlp_output_norm) = if c.particulars.sandwich_norms {
                (
                    Some(self.norm(&format!("{p}.post_attention_layernorm.weight"), hidden, c)?),
                    Some(self.norm(
                        &format!("{p}.post_feedforward_layernorm.weight"),
                        hidden,
                        c,
                    )?),
                )
            } else {
                (None, None)
            };
            blocks.push(DecoderBlock {
                attention_norm: self.norm(&format!("{p}.input_layernorm.weight"), hidden, c)?,
                attention: Attention {
                    qkv,
                    o,
                    num_heads: heads.len(),
                    num_kv_heads: kv_heads.len(),
                    head_dim: d,
                    q_norm,
                    k_norm,
                    scale: c.particulars.attention_scale,
                    rules: attention::Rules {
                        window,
                        softcap: c.particulars.attention_softcap.map(|cap| cap as f32),
                    },
                    local_rope: window.is_some() && c.particulars.local_rope.is_some(),
                },
                attention_output_norm,
                mlp_norm: self.norm(&mlp_norm_name, hidden, c)?,
                mlp: Mlp {
                    gate_up,
                    down,
                    intermediate_size: units.len(),
                    activation: c.particulars.activation,
                },
                mlp_output_norm,
            });
        }
        let norm = self.norm("model.norm.weight", hidden, c)?;
        let lm_head = if c.tie_word_embeddings || !self.contains("lm_head.weight") {
            match &embedding {
                Embedding::Dense(w) => Linear::dense(w, None)?,
                Embedding::Quantized(q) if self.packs(q.dtype()) => Linear::packed(q, None)?,
                Embedding::Quantized(q) => Linear::quantized(q.clone(), None)?,
            }
        } else {
            self.stacked_linear(
                &[Part::whole("lm_head", c.vocab_size, None)],
                hidden,
                false,
                0..hidden,
            )?
        };
        Ok(Llama {
            rotary: RotaryEmbedding::new(c),
            rotary_local: RotaryEmbedding::local(c),
            config,
            embedding,
            blocks,
            norm,
            lm_head,
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }
}

enum RawWeight {
    Dense(Tensor),
    Quantized(QTensor),
}

impl RawWeight {
    fn dims(&self) -> Vec<usize> {
        match self {
            RawWeight::Dense(t) => t.dims().to_vec(),
            RawWeight::Quantized(q) => q.shape().dims().to_vec(),
        }
    }

    fn into_dense(self) -> Result<Tensor> {
        Ok(match self {
            RawWeight::Dense(t) => t,
            RawWeight::Quantized(q) => q.dequantize(&Device::Cpu)?,
        })
    }

    /// llama.cpp's converter interleaves each head's rotary halves (row `2i + c` holds
    /// half `c`, pair `i`); this restores the Hugging Face order (row `c·d/2 + i`).
    fn unpermute_rotary_rows(self, heads: usize) -> Result<Self> {
        Ok(match self {
            RawWeight::Dense(t) => RawWeight::Dense(unpermute_rotary_dense(&t, heads)?),
            RawWeight::Quantized(q) => {
                let (rows, _) = q.shape().dims2()?;
                let d = rows / heads;
                let order: Vec<usize> = (0..heads)
                    .flat_map(|h| {
                        (0..2).flat_map(move |c| (0..d / 2).map(move |i| h * d + 2 * i + c))
                    })
                    .collect();
                RawWeight::Quantized(gather_quantized_rows(&q, &order)?)
            }
        })
    }
}

fn raws_dtype(raws: &[RawWeight]) -> GgmlDType {
    match raws.first() {
        Some(RawWeight::Quantized(q)) => q.dtype(),
        _ => GgmlDType::F32,
    }
}

fn unpermute_rotary_dense(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let d = rows / heads;
    Ok(t.reshape((heads, d / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))?)
}

/// Quantized rows are whole blocks (the row length is a multiple of the block size), so
/// rows can be moved as bytes.
fn gather_quantized_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    let data = q.data()?;
    let row_bytes = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for &r in order {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, q.dtype())?;
    Ok(QTensor::new(storage, (order.len(), cols))?)
}

fn concat_quantized_rows(raws: &[RawWeight]) -> Result<QTensor> {
    let mut out = Vec::new();
    let (mut rows, mut cols, mut dtype) = (0, 0, GgmlDType::F32);
    for raw in raws {
        if let RawWeight::Quantized(q) = raw {
            let (r, c) = q.shape().dims2()?;
            out.extend_from_slice(&q.data()?);
            rows += r;
            cols = c;
            dtype = q.dtype();
        }
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, dtype)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// llama.cpp's tensor names for the Hugging Face ones.
/// llama.cpp's name of a tensor asked for by its Hugging Face name (`architecture`: the
/// family, where names differ by family).
fn gguf_name(hf_name: &str, architecture: Option<Architecture>) -> String {
    let gemma = architecture.is_some_and(Architecture::is_gemma);
    let top = match hf_name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return name.into();
    }
    let Some(rest) = hf_name.strip_prefix("model.layers.") else { return hf_name.into() };
    let (layer, rest) = rest.split_once('.').unwrap_or((rest, ""));
    let (module, suffix) = rest.rsplit_once('.').unwrap_or((rest, ""));
    let module = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_up_proj" => "ffn_up",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if gemma => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        other => other,
    };
    format!("blk.{layer}.{module}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_names_map_to_llama_cpp_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.k_proj.weight", None),
            "blk.12.attn_k.weight"
        );
        assert_eq!(gguf_name("model.layers.0.self_attn.q_proj.bias", None), "blk.0.attn_q.bias");
        assert_eq!(
            gguf_name("model.layers.3.post_attention_layernorm.weight", None),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(gguf_name("model.embed_tokens.weight", None), "token_embd.weight");
        assert_eq!(gguf_name("lm_head.weight", None), "output.weight");
    }

    #[test]
    fn rotary_unpermute_of_quantized_rows_matches_dense() -> Result<()> {
        // 2 heads of dim 8, 64 columns (two Q8_0 blocks per row).
        let t = Tensor::arange(0f32, 16.0 * 64.0, &Device::Cpu)?.reshape((16, 64))?;
        let dense = unpermute_rotary_dense(&t, 2)?;
        let q = QTensor::quantize(&t, GgmlDType::Q8_0)?;
        let RawWeight::Quantized(q) = RawWeight::Quantized(q).unpermute_rotary_rows(2)? else {
            unreachable!()
        };
        let back = q.dequantize(&Device::Cpu)?;
        let expected = QTensor::quantize(&dense, GgmlDType::Q8_0)?.dequantize(&Device::Cpu)?;
        let diff = (back - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        // Row 1 of head 0 in HF order is pair 1, first half: GGUF row 2.
        assert_eq!(dense.get(1)?.get(0)?.to_scalar::<f32>()?, 2.0 * 64.0);
        Ok(())
    }

    /// A one-layer Llama GGUF laid out as a Q4_K_M file is (Q4_K projections, V and down in
    /// Q6_K, here also O in Q5_K and embeddings in Q6_K), loaded quantized: every projection
    /// takes the packed kernels, Q/K/V stacked across two types, and the logits follow the
    /// dense (dequantized f32) model's.
    #[test]
    fn k_quant_projections_are_packed_even_when_types_mix() -> Result<()> {
        use candle_core::quantized::gguf_file::Value;
        let (hidden, heads, kv_heads, inter, vocab) = (256usize, 4usize, 2usize, 512usize, 64usize);
        let d = hidden / heads;
        let dir = std::env::temp_dir().join(format!("herd-kquant-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let path = dir.join("tiny-q4_k_m.gguf");
        let mut seed = 0u64;
        let mut tensor = |shape: &[usize], dtype: GgmlDType| -> Result<QTensor> {
            seed += 1;
            let t = Tensor::randn(0f32, 0.08, shape, &Device::Cpu)?;
            let t = (t + seed as f64 * 1e-3)?;
            Ok(QTensor::quantize(&t, dtype)?)
        };
        let tensors = vec![
            ("token_embd.weight", tensor(&[vocab, hidden], GgmlDType::Q6K)?),
            ("output.weight", tensor(&[vocab, hidden], GgmlDType::Q6K)?),
            ("output_norm.weight", tensor(&[hidden], GgmlDType::F32)?),
            ("blk.0.attn_norm.weight", tensor(&[hidden], GgmlDType::F32)?),
            ("blk.0.ffn_norm.weight", tensor(&[hidden], GgmlDType::F32)?),
            ("blk.0.attn_q.weight", tensor(&[heads * d, hidden], GgmlDType::Q4K)?),
            ("blk.0.attn_k.weight", tensor(&[kv_heads * d, hidden], GgmlDType::Q4K)?),
            ("blk.0.attn_v.weight", tensor(&[kv_heads * d, hidden], GgmlDType::Q6K)?),
            ("blk.0.attn_output.weight", tensor(&[hidden, heads * d], GgmlDType::Q5K)?),
            ("blk.0.ffn_gate.weight", tensor(&[inter, hidden], GgmlDType::Q4K)?),
            ("blk.0.ffn_up.weight", tensor(&[inter, hidden], GgmlDType::Q4K)?),
            ("blk.0.ffn_down.weight", tensor(&[hidden, inter], GgmlDType::Q6K)?),
        ];
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::U32(hidden as u32)),
            ("llama.feed_forward_length", Value::U32(inter as u32)),
            ("llama.block_count", Value::U32(1)),
            ("llama.attention.head_count", Value::U32(heads as u32)),
            ("llama.attention.head_count_kv", Value::U32(kv_heads as u32)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ];
        {
            let mut file = File::create(&path)
                .map_err(|source| EngineError::Io { path: path.clone(), source })?;
            let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
            let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
            gguf_file::write(&mut file, &md, &ts)?;
        }
        let load = |format: WeightFormat| -> Result<Llama> {
            let (content, file) = read_gguf_header(&path)?;
            let config = ModelConfig::from_gguf(&path, &content)?;
            WeightReader::gguf(&path, content, file, &config, format)?.load_llama(config, None)
        };
        let packed = load(WeightFormat::Quantized)?;
        let dense = load(WeightFormat::Dense)?;
        let _ = std::fs::remove_dir_all(&dir);
        let block = &packed.blocks[0];
        for (name, linear) in [
            ("qkv", &block.attention.qkv),
            ("o", &block.attention.o),
            ("gate_up", &block.mlp.gate_up),
            ("down", &block.mlp.down),
            ("lm_head", &packed.lm_head),
        ] {
            assert!(linear.is_packed(), "{name} is not packed");
        }
        assert!(!dense.blocks[0].attention.qkv.is_packed());
        let tokens: Vec<u32> = (0..9).map(|i| (i * 7 % vocab) as u32).collect();
        let logits = |model: &Llama| -> Result<Vec<f32>> {
            let mut cache = model.new_cache();
            Ok(model.forward(&[&tokens], &mut [&mut cache])?.flatten_all()?.to_vec1()?)
        };
        let (a, b) = (logits(&packed)?, logits(&dense)?);
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        // The packed model rounds activations to 8 bits per 32 values before every
        // projection (≤ 0.4 % of a block's largest value each); through one layer that
        // moves logits by well under 5 % of their range, while a wrong weight would not.
        assert!(diff <= 0.05 * scale, "logits differ by {diff} (largest {scale})");
        assert!(diff > 0.0, "the packed path was not taken");
        Ok(())
    }
}
