//! The decoder of every family herd runs: Llama blocks, with each family's particulars
//! ([`Particulars`](crate::config::Particulars)) switched on where its config asks: Q/K/V
//! biases (Qwen2), Q/K norms (Qwen3, Gemma 3), sandwich norms, GELU, scaled embeddings and
//! soft-capping (Gemma), sliding-window layers with their own rotary base (Gemma 3).
//!
//! A forward pass takes a *packed* batch: the new tokens of several sequences laid end to
//! end (`[tokens, hidden]`, no padding), each sequence with its own positions and cache.
//! Projections and the MLP run once over all tokens; only attention looks at sequence
//! boundaries. Prefill chunks and single decode tokens mix freely in one pass.
//!
//! Two attention paths share the blocks: [`Llama::forward`] over per-sequence contiguous
//! caches (the CPU path), and [`Llama::forward_paged`] over the paged cache (GPUs and tensor
//! parallelism), where all decode rows of a pass go through one batched kernel per layer.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, D};
use std::sync::Arc;

use crate::attention;
use crate::config::{Activation, ModelConfig};
use crate::cpu_kernels;
use crate::error::Result;
use crate::kv_cache::ContiguousCache;
use crate::linear::Linear;
use crate::paged_cache::{PagedBatch, PagedKvCache};
use crate::paged_ops::phase_timing::time;
use crate::paged_ops::{self, DecodeAttention, GatherKv, HeadLayout, RopeQkv, StoreKv, SwiGluGpu};

/// Token embeddings, dense or left in GGUF blocks.
#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    /// `ids`: `[tokens]` u32 → `[tokens, hidden]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Embedding::Dense(w) => w.index_select(ids, 0)?,
            Embedding::Quantized(q) => q.embedding(ids)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f32,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }
}

/// Rotary position embedding in the "half" (GPT-NeoX) layout; GGUF Llama weights are
/// un-permuted at load time to match it.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freqs: Vec<f64>,
}

impl RotaryEmbedding {
    pub fn new(config: &ModelConfig) -> Self {
        Self { inv_freqs: config.rope_inv_freqs() }
    }

    /// The windowed layers' rotation, where the family gives them their own (Gemma 3).
    pub fn local(config: &ModelConfig) -> Option<Self> {
        config.local_rope_inv_freqs().map(|inv_freqs| Self { inv_freqs })
    }

    /// The inverse frequencies as an f32 tensor (the paged path rotates inside its kernel).
    pub fn inv_freq_tensor(&self, device: &Device) -> Result<Tensor> {
        let f: Vec<f32> = self.inv_freqs.iter().map(|&f| f as f32).collect();
        Ok(Tensor::from_vec(f, self.inv_freqs.len(), device)?)
    }

    /// cos and sin tables, `[positions, head_dim / 2]` each.
    pub fn tables(
        &self,
        positions: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freqs.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freqs {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = (positions.len(), half);
        Ok((
            Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        ))
    }
}

/// Where each sequence's tokens sit in a packed batch.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// `(first row, token count)` per sequence.
    pub spans: Vec<(usize, usize)>,
    /// Absolute position of every token.
    pub positions: Vec<usize>,
}

/// Per-pass tensors shared by all layers.
struct PassContext<'a> {
    batch: &'a PackedBatch,
    cos: Tensor,
    sin: Tensor,
    /// cos and sin of the windowed layers' own rotation, if they have one.
    local: Option<(Tensor, Tensor)>,
    /// Causal mask per span of more than one token (the same in every layer).
    masks: Vec<Option<Tensor>>,
}

#[derive(Debug, Clone)]
pub struct Attention {
    /// Q, K and V stacked: one matmul.
    pub qkv: Linear,
    pub o: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// RMS norms over each head's queries and keys, before rotation (Qwen3, Gemma 3).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// Scores are `scale · q·k`.
    pub scale: f64,
    pub rules: attention::Rules,
    /// Rotated with the windowed layers' own frequencies ([`RotaryEmbedding::local`]).
    pub local_rope: bool,
}

/// Rotary embedding of `x` (`[1, tokens, heads, d]`) in the half layout, over the first
/// `2 · cos.dim(1)` dimensions of each head (all of them unless the rotation is partial).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(3)?;
    let rotated = 2 * cos.dim(1)?;
    if rotated == d {
        return Ok(candle_nn::rotary_emb::rope_thd(&x.contiguous()?, cos, sin)?);
    }
    let turned =
        candle_nn::rotary_emb::rope_thd(&x.narrow(3, 0, rotated)?.contiguous()?, cos, sin)?;
    Ok(Tensor::cat(&[turned, x.narrow(3, rotated, d - rotated)?], 3)?)
}

/// `x` (`[..., heads · d]` rows) normed per head of `d` values.
fn norm_heads(norm: &RmsNorm, x: &Tensor, d: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let heads = dims[dims.len() - 1] / d;
    let mut split = dims[..dims.len() - 1].to_vec();
    split.extend([heads, d]);
    norm.forward(&x.contiguous()?.reshape(split)?)?.reshape(dims).map_err(Into::into)
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        ctx: &PassContext,
        caches: &mut [&mut ContiguousCache],
    ) -> Result<Tensor> {
        let tokens = x.dim(0)?;
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = self.qkv.forward(x)?;
        let mut q = qkv.narrow(1, 0, h * d)?;
        let mut k = qkv.narrow(1, h * d, kvh * d)?;
        if let (Some(q_norm), Some(k_norm)) = (&self.q_norm, &self.k_norm) {
            q = norm_heads(q_norm, &q, d)?;
            k = norm_heads(k_norm, &k, d)?;
        }
        let q = q.reshape((1, tokens, h, d))?;
        let k = k.reshape((1, tokens, kvh, d))?;
        let v = qkv.narrow(1, (h + kvh) * d, kvh * d)?.reshape((tokens, kvh, d))?;
        let (cos, sin) = match (&ctx.local, self.local_rope) {
            (Some((cos, sin)), true) => (cos, sin),
            _ => (&ctx.cos, &ctx.sin),
        };
        let q = rotate(&q, cos, sin)?;
        let q = (q.squeeze(0)? * self.scale)?;
        let k = rotate(&k, cos, sin)?.squeeze(0)?;
        let v = v.contiguous()?;

        // Single-token spans go through the batched decode kernel, longer ones through
        // tensor ops; outputs are reassembled in span order.
        let use_kernel = attention::decode_kernel_applies(&q);
        let mut single_rows = Vec::new();
        let mut single_kv = Vec::new();
        let mut parts: Vec<Option<Tensor>> = Vec::with_capacity(caches.len());
        for (cache, &(start, t)) in caches.iter_mut().zip(&ctx.batch.spans) {
            let (k_all, v_all) =
                cache.append(layer, &k.narrow(0, start, t)?, &v.narrow(0, start, t)?)?;
            if t == 1 && use_kernel {
                single_rows.push(start as u32);
                single_kv.push((k_all, v_all));
                parts.push(None);
            } else {
                let mask = ctx.masks[parts.len()].as_ref();
                parts.push(Some(attention::attend(
                    &q.narrow(0, start, t)?,
                    &k_all,
                    &v_all,
                    h,
                    kvh,
                    mask,
                    self.rules,
                )?));
            }
        }
        let singles = if single_rows.is_empty() {
            None
        } else if single_rows.len() == tokens {
            Some(attention::decode_attention_cpu(&q, &single_kv, kvh, self.rules)?)
        } else {
            let rows = Tensor::new(single_rows.as_slice(), q.device())?;
            Some(attention::decode_attention_cpu(
                &q.index_select(&rows, 0)?,
                &single_kv,
                kvh,
                self.rules,
            )?)
        };
        let attended = match singles {
            Some(all) if single_rows.len() == tokens => all,
            singles => {
                let mut next_single = 0;
                let mut outputs = Vec::with_capacity(parts.len());
                for part in parts {
                    outputs.push(match part {
                        Some(t) => t,
                        None => {
                            next_single += 1;
                            singles.as_ref().expect("kernel output").narrow(
                                0,
                                next_single - 1,
                                1,
                            )?
                        }
                    });
                }
                Tensor::cat(&outputs, 0)?
            }
        };
        self.o.forward(&attended)
    }

    fn layout(&self) -> HeadLayout {
        HeadLayout { heads: self.num_heads, kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }

    /// Attention over the paged cache: rotate, store the new keys and values, then the
    /// decode rows in one kernel and each prompt chunk over its gathered context.
    fn forward_paged(&self, x: &Tensor, cache: &Tensor, ctx: &PagedContext) -> Result<Tensor> {
        let layout = self.layout();
        let dev = x.device();
        let qkv = time("qkv projection", dev, || self.qkv.forward(x))?;
        let qkv = match (&self.q_norm, &self.k_norm) {
            (Some(q_norm), Some(k_norm)) => time("q/k norms", dev, || {
                let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
                let q = norm_heads(q_norm, &qkv.narrow(1, 0, h * d)?, d)?;
                let k = norm_heads(k_norm, &qkv.narrow(1, h * d, kvh * d)?, d)?;
                let v = qkv.narrow(1, (h + kvh) * d, kvh * d)?;
                Ok(Tensor::cat(&[q, k, v], 1)?)
            })?,
            _ => qkv,
        };
        let q_scale = self.scale as f32;
        let inv_freq = match (&ctx.inv_freq_local, self.local_rope) {
            (Some(local), true) => local,
            _ => &ctx.inv_freq,
        };
        let qkv = time("rotary", dev, || {
            Ok(qkv.apply_op3_no_bwd(&ctx.positions, inv_freq, &RopeQkv { layout, q_scale })?)
        })?;
        time("store keys/values", dev, || {
            Ok(cache.inplace_op3(
                &qkv,
                &ctx.slots,
                &StoreKv { layout, block_size: ctx.block_size },
            )?)
        })?;
        let mut parts = Vec::with_capacity(1 + ctx.batch.spans.len());
        if ctx.batch.decode_rows > 0 {
            let op = DecodeAttention {
                layout,
                block_size: ctx.block_size,
                rows: ctx.batch.decode_rows,
                meta_stride: ctx.batch.meta_stride,
                max_context: ctx.batch.max_decode_context,
            };
            parts.push(time("decode attention", dev, || {
                Ok(qkv.apply_op3_no_bwd(cache, &ctx.decode_meta, &op)?)
            })?);
        }
        for (span, table) in ctx.batch.spans.iter().zip(&ctx.span_tables) {
            parts.push(time("prefill attention", dev, || {
                let q = qkv.narrow(0, span.start, span.tokens)?.narrow(1, 0, self.num_heads)?;
                let kv = cache.apply_op2_no_bwd(
                    table,
                    &GatherKv { layout, block_size: ctx.block_size, len: span.context },
                )?;
                paged_ops::prefill_attention(&q, &kv.get(0)?, &kv.get(1)?, layout)
            })?);
        }
        let attended =
            if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(&parts, 0)? };
        time("o projection", dev, || self.o.forward(&attended))
    }
}

/// Per-pass tensors of the paged path, shared by all layers.
struct PagedContext<'a> {
    batch: &'a PagedBatch,
    block_size: usize,
    positions: Tensor,
    slots: Tensor,
    inv_freq: Tensor,
    inv_freq_local: Option<Tensor>,
    decode_meta: Tensor,
    span_tables: Vec<Tensor>,
    layout: HeadLayout,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    /// Gate and up projections stacked: one matmul.
    pub gate_up: Linear,
    pub down: Linear,
    pub intermediate_size: usize,
    pub activation: Activation,
}

impl Mlp {
    /// `gelu_tanh(gate) · up` (GeGLU).
    fn geglu(&self, gate_up: &Tensor) -> Result<Tensor> {
        let gate = gate_up.narrow(1, 0, self.intermediate_size)?;
        let up = gate_up.narrow(1, self.intermediate_size, self.intermediate_size)?;
        Ok((gate.gelu()? * up)?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        if self.activation == Activation::GeluTanh {
            return self.down.forward(&self.geglu(&gate_up)?);
        }
        if let Some(hidden) = cpu_kernels::swiglu(&gate_up, self.intermediate_size)? {
            return self.down.forward(&hidden);
        }
        let gate = gate_up.narrow(1, 0, self.intermediate_size)?;
        let up = gate_up.narrow(1, self.intermediate_size, self.intermediate_size)?;
        self.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)
    }

    /// [`Mlp::forward`] with the fused GPU SwiGLU kernel where it applies.
    fn forward_paged(&self, x: &Tensor, layout: HeadLayout) -> Result<Tensor> {
        let dev = x.device();
        let gate_up = time("gate/up projection", dev, || self.gate_up.forward(x))?;
        if self.activation == Activation::GeluTanh {
            let hidden = time("geglu", dev, || self.geglu(&gate_up))?;
            return time("down projection", dev, || self.down.forward(&hidden));
        }
        if paged_ops::on_gpu(&gate_up) {
            let hidden = time("swiglu", dev, || {
                Ok(gate_up.apply_op1_no_bwd(&SwiGluGpu {
                    layout,
                    intermediate: self.intermediate_size,
                })?)
            })?;
            return time("down projection", dev, || self.down.forward(&hidden));
        }
        if let Some(hidden) = cpu_kernels::swiglu(&gate_up, self.intermediate_size)? {
            return self.down.forward(&hidden);
        }
        let gate = gate_up.narrow(1, 0, self.intermediate_size)?;
        let up = gate_up.narrow(1, self.intermediate_size, self.intermediate_size)?;
        self.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)
    }
}

#[derive(Debug, Clone)]
pub struct DecoderBlock {
    /// Before attention.
    pub attention_norm: RmsNorm,
    pub attention: Attention,
    /// On the attention's output, before the residual add (Gemma's sandwich norms).
    pub attention_output_norm: Option<RmsNorm>,
    /// Before the MLP.
    pub mlp_norm: RmsNorm,
    pub mlp: Mlp,
    /// On the MLP's output, before the residual add (Gemma).
    pub mlp_output_norm: Option<RmsNorm>,
}

/// `norm(x)` where there is a norm, else `x`.
fn maybe_norm(norm: &Option<RmsNorm>, x: Tensor) -> Result<Tensor> {
    match norm {
        Some(norm) => norm.forward(&x),
        None => Ok(x),
    }
}

impl DecoderBlock {
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        ctx: &PassContext,
        caches: &mut [&mut ContiguousCache],
    ) -> Result<Tensor> {
        let attended =
            self.attention.forward(&self.attention_norm.forward(x)?, layer, ctx, caches)?;
        let x = (x + maybe_norm(&self.attention_output_norm, attended)?)?;
        let mlp = self.mlp.forward(&self.mlp_norm.forward(&x)?)?;
        Ok((&x + maybe_norm(&self.mlp_output_norm, mlp)?)?)
    }

    fn forward_paged(&self, x: &Tensor, cache: &Tensor, ctx: &PagedContext) -> Result<Tensor> {
        let dev = x.device();
        let normed = time("norms", dev, || self.attention_norm.forward(x))?;
        let attended = self.attention.forward_paged(&normed, cache, ctx)?;
        let attended = time("norms", dev, || maybe_norm(&self.attention_output_norm, attended))?;
        let x = time("residual adds", dev, || Ok((x + attended)?))?;
        let normed = time("norms", dev, || self.mlp_norm.forward(&x))?;
        let mlp = self.mlp.forward_paged(&normed, ctx.layout)?;
        let mlp = time("norms", dev, || maybe_norm(&self.mlp_output_norm, mlp))?;
        time("residual adds", dev, || Ok((&x + mlp)?))
    }
}

#[derive(Debug, Clone)]
pub struct Llama {
    pub config: ModelConfig,
    pub embedding: Embedding,
    pub blocks: Vec<DecoderBlock>,
    pub norm: RmsNorm,
    pub lm_head: Linear,
    pub rotary: RotaryEmbedding,
    /// The windowed layers' own rotation (Gemma 3), if any.
    pub rotary_local: Option<RotaryEmbedding>,
    pub dtype: DType,
    pub device: Device,
}

impl Llama {
    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> ContiguousCache {
        let kv_heads =
            self.blocks.first().map_or(self.config.num_kv_heads, |b| b.attention.num_kv_heads);
        ContiguousCache::new(
            self.config.num_layers,
            kv_heads,
            self.config.head_dim,
            self.dtype,
            &self.device,
        )
    }

    /// Key/value heads held by this model (a tensor-parallel rank holds a slice).
    pub fn local_kv_heads(&self) -> usize {
        self.blocks.first().map_or(self.config.num_kv_heads, |b| b.attention.num_kv_heads)
    }

    /// Runs the new tokens of several sequences (`tokens[i]` continues `caches[i]`) and
    /// returns the logits of each sequence's last new token, `[sequences, vocab]` in f32.
    pub fn forward(
        &self,
        tokens: &[&[u32]],
        caches: &mut [&mut ContiguousCache],
    ) -> Result<Tensor> {
        assert_eq!(tokens.len(), caches.len(), "one cache per sequence");
        let mut spans = Vec::with_capacity(tokens.len());
        let mut positions = Vec::new();
        let mut flat = Vec::new();
        for (seq, cache) in tokens.iter().zip(caches.iter()) {
            spans.push((flat.len(), seq.len()));
            positions.extend(cache.len()..cache.len() + seq.len());
            flat.extend_from_slice(seq);
        }
        let batch = PackedBatch { spans, positions };
        let (cos, sin) = self.rotary.tables(&batch.positions, self.dtype, &self.device)?;
        let mut masks = Vec::with_capacity(batch.spans.len());
        for (&(_, t), cache) in batch.spans.iter().zip(caches.iter()) {
            // The CPU kernel applies the causal mask implicitly.
            let needs_mask = t > 1 && !attention::decode_kernel_applies(&cos);
            masks.push(if needs_mask {
                Some(attention::causal_mask(t, cache.len() + t, self.dtype, &self.device)?)
            } else {
                None
            });
        }
        let local = match &self.rotary_local {
            Some(rotary) => Some(rotary.tables(&batch.positions, self.dtype, &self.device)?),
            None => None,
        };
        let ctx = PassContext { batch: &batch, cos, sin, local, masks };

        let ids = Tensor::new(flat.as_slice(), &self.device)?;
        let mut x = self.embed(&ids)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, layer, &ctx, caches)?;
        }
        // Only the last position of each sequence needs the (large) vocabulary projection.
        let last: Vec<u32> = batch.spans.iter().map(|&(start, t)| (start + t - 1) as u32).collect();
        let last = x.index_select(&Tensor::new(last.as_slice(), &self.device)?, 0)?;
        self.logits(&last)
    }

    /// Token embeddings in the compute dtype, scaled where the family scales them.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embedding.forward(ids)?.to_dtype(self.dtype)?;
        match self.config.particulars.embedding_scale {
            // Gemma rounds the factor to the compute dtype before multiplying.
            Some(scale) => {
                let factor = Tensor::new(&[scale as f32], x.device())?.to_dtype(self.dtype)?;
                Ok(x.broadcast_mul(&factor)?)
            }
            None => Ok(x),
        }
    }

    /// f32 logits of the final hidden states `last` (`[rows, hidden]`), soft-capped where the
    /// family caps them.
    fn logits(&self, last: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(&self.norm.forward(last)?)?.to_dtype(DType::F32)?;
        match self.config.particulars.final_softcap {
            Some(cap) => Ok(((logits / cap)?.tanh()? * cap)?),
            None => Ok(logits),
        }
    }

    /// [`Llama::forward`] over the paged cache: `batch` says which tokens go where; returns
    /// the logits of each sequence's last new token, `[sequences, vocab]` in f32.
    pub fn forward_paged(&self, batch: &PagedBatch, cache: &PagedKvCache) -> Result<Tensor> {
        let dev = &self.device;
        let attention = &self.blocks.first().expect("a model has layers").attention;
        let ctx = PagedContext {
            batch,
            block_size: cache.block_size,
            positions: Tensor::new(batch.positions.as_slice(), dev)?,
            slots: Tensor::new(batch.slots.as_slice(), dev)?,
            inv_freq: self.rotary.inv_freq_tensor(dev)?,
            inv_freq_local: match &self.rotary_local {
                Some(rotary) => Some(rotary.inv_freq_tensor(dev)?),
                None => None,
            },
            decode_meta: if batch.decode_rows > 0 {
                Tensor::from_slice(&batch.decode_meta, (batch.decode_rows, batch.meta_stride), dev)?
            } else {
                Tensor::zeros(1, DType::U32, dev)?
            },
            span_tables: batch
                .spans
                .iter()
                .map(|s| Tensor::new(s.table.as_slice(), dev))
                .collect::<candle_core::Result<_>>()?,
            layout: attention.layout(),
        };
        let ids = Tensor::new(batch.tokens.as_slice(), dev)?;
        // Every host-to-device copy of the pass goes out before its first kernel.
        let last_rows = Tensor::new(batch.last_rows.as_slice(), dev)?;
        let mut x = time("embedding", dev, || self.embed(&ids))?;
        for (block, layer_cache) in self.blocks.iter().zip(&cache.layers) {
            x = block.forward_paged(&x, layer_cache, &ctx)?;
        }
        time("lm head", dev, || {
            let last = x.index_select(&last_rows, 0)?;
            self.logits(&last)
        })
    }

    /// Index of the largest logit per row (greedy decoding).
    pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }
}
