//! The operations of the paged forward path, each with a CPU version (f32, plain loops: the
//! reference the tests compare against, and the path of CPU tensor parallelism) and a GPU
//! version (bf16, herd's kernels in `cuda/`).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, InplaceOp3, Layout, Shape, Tensor,
};

use crate::attention;
use crate::error::Result;

type CandleResult<T> = candle_core::Result<T>;

/// The geometry the ops share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayout {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadLayout {
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Heads of a `qkv` row: queries, keys, values.
    pub fn qkv_heads(&self) -> usize {
        self.heads + 2 * self.kv_heads
    }

    #[cfg(feature = "cuda")]
    fn kernel_shape(&self) -> crate::cuda::KernelShape {
        crate::cuda::KernelShape { head_dim: self.head_dim, group: self.group() }
    }
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> CandleResult<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous")
    };
    Ok(&s.as_slice::<f32>()?[a..b])
}

fn contiguous_u32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> CandleResult<&'a [u32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous")
    };
    Ok(&s.as_slice::<u32>()?[a..b])
}

/// Rotary embedding of a packed batch: `qkv` `[tokens, (heads + 2 kv_heads) · d]` →
/// `[tokens, heads + 2 kv_heads, d]` with queries rotated and scaled by `q_scale`, keys
/// rotated, values as they were. Inputs: qkv, positions (u32), inverse frequencies (f32).
#[derive(Debug, Clone, Copy)]
pub struct RopeQkv {
    pub layout: HeadLayout,
    pub q_scale: f32,
}

impl CustomOp3 for RopeQkv {
    fn name(&self) -> &'static str {
        "herd-rope-qkv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s1, l1, "qkv")?;
        let positions = contiguous_u32(s2, l2, "positions")?;
        let inv_freq = contiguous_f32(s3, l3, "inv_freq")?;
        let HeadLayout { heads, kv_heads, head_dim: d } = self.layout;
        let width = self.layout.qkv_heads() * d;
        let half = d / 2;
        let mut out = qkv.to_vec();
        for (t, &pos) in positions.iter().enumerate() {
            // Angles in f64, as the contiguous path's rotary tables.
            let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
                .iter()
                .map(|&f| pos as f64 * f as f64)
                .map(|a| (a.cos() as f32, a.sin() as f32))
                .unzip();
            for h in 0..heads + kv_heads {
                let base = t * width + h * d;
                for j in 0..half {
                    let (x1, x2) = (qkv[base + j], qkv[base + j + half]);
                    let (r1, r2) = (x1 * cos[j] - x2 * sin[j], x1 * sin[j] + x2 * cos[j]);
                    let scale = if h < heads { self.q_scale } else { 1.0 };
                    out[base + j] = r1 * scale;
                    out[base + j + half] = r2 * scale;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((positions.len(), self.layout.qkv_heads(), d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
        let tokens = l2.shape().elem_count();
        let HeadLayout { heads, kv_heads, head_dim } = self.layout;
        let out = crate::cuda::launch_rope_qkv(
            self.layout.kernel_shape(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
            tokens,
            heads,
            kv_heads,
            self.q_scale,
        )?;
        Ok((out, Shape::from((tokens, self.layout.qkv_heads(), head_dim))))
    }
}

/// Writes the keys and values of a rotated `qkv` into their slots of a layer's cache
/// (`[blocks, 2, kv_heads, block_size, d]`). Sources: qkv_rot, slots (u32).
#[derive(Debug, Clone, Copy)]
pub struct StoreKv {
    pub layout: HeadLayout,
    pub block_size: usize,
}

impl InplaceOp3 for StoreKv {
    fn name(&self) -> &'static str {
        "herd-store-kv"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CandleResult<()> {
        let qkv = contiguous_f32(s2, l2, "qkv_rot")?;
        let slots = contiguous_u32(s3, l3, "slots")?;
        let HeadLayout { heads, kv_heads, head_dim: d } = self.layout;
        let CpuStorage::F32(cache) = dst else {
            candle_core::bail!("herd-store-kv: the CPU cache must be f32")
        };
        let cache = &mut cache[dst_l.start_offset()..];
        let width = self.layout.qkv_heads() * d;
        let bs = self.block_size;
        let plane = kv_heads * bs * d;
        for (t, &slot) in slots.iter().enumerate() {
            let (block, offset) = (slot as usize / bs, slot as usize % bs);
            for g in 0..kv_heads {
                let k = &qkv[t * width + (heads + g) * d..][..d];
                let v = &qkv[t * width + (heads + kv_heads + g) * d..][..d];
                let at = block * 2 * plane + (g * bs + offset) * d;
                cache[at..at + d].copy_from_slice(k);
                cache[plane + at..plane + at + d].copy_from_slice(v);
            }
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> CandleResult<()> {
        if dst_l.start_offset() != 0 || !dst_l.is_contiguous() {
            candle_core::bail!("herd-store-kv: the cache must be a whole contiguous tensor");
        }
        let tokens = l3.shape().elem_count();
        let HeadLayout { heads, kv_heads, .. } = self.layout;
        crate::cuda::launch_store_kv(
            self.layout.kernel_shape(),
            dst,
            (s2, l2),
            (s3, l3),
            tokens,
            heads,
            kv_heads,
            self.block_size,
        )
    }
}

/// Attention of the first `rows` rows of a rotated `qkv` (one new token per sequence) over
/// the paged cache. Inputs: qkv_rot, the layer's cache, decode meta (`[rows, meta_stride]`
/// u32: context length, then block ids). Output `[rows, heads · d]`.
#[derive(Debug, Clone, Copy)]
pub struct DecodeAttention {
    pub layout: HeadLayout,
    pub block_size: usize,
    pub rows: usize,
    pub meta_stride: usize,
    pub max_context: usize,
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "herd-decode-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s1, l1, "qkv_rot")?;
        let cache = contiguous_f32(s2, l2, "cache")?;
        let meta = contiguous_u32(s3, l3, "decode meta")?;
        let HeadLayout { heads, kv_heads, head_dim: d } = self.layout;
        let group = self.layout.group();
        let width = self.layout.qkv_heads() * d;
        let bs = self.block_size;
        let plane = kv_heads * bs * d;
        let mut out = vec![0f32; self.rows * heads * d];
        for row in 0..self.rows {
            let meta_row = &meta[row * self.meta_stride..][..self.meta_stride];
            let len = meta_row[0] as usize;
            let key_at = |p: usize, g: usize| {
                meta_row[1 + p / bs] as usize * 2 * plane + (g * bs + p % bs) * d
            };
            for h in 0..heads {
                let g = h / group;
                let q = &qkv[row * width + h * d..][..d];
                let scores: Vec<f32> = (0..len)
                    .map(|p| q.iter().zip(&cache[key_at(p, g)..][..d]).map(|(a, b)| a * b).sum())
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = weights.iter().sum();
                let o = &mut out[(row * heads + h) * d..][..d];
                for (p, w) in weights.iter().enumerate() {
                    let v = &cache[plane + key_at(p, g)..][..d];
                    for (o, &x) in o.iter_mut().zip(v) {
                        *o += w / sum * x;
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((self.rows, heads * d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
        let HeadLayout { heads, kv_heads, head_dim } = self.layout;
        let out = crate::cuda::launch_decode_attention(
            self.layout.kernel_shape(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
            self.rows,
            self.meta_stride,
            kv_heads,
            self.block_size,
            self.max_context,
        )?;
        Ok((out, Shape::from((self.rows, heads * head_dim))))
    }
}

/// One sequence's cached keys and values, contiguous: `[2, kv_heads, len, d]`. Inputs: the
/// layer's cache, the sequence's block table (u32).
#[derive(Debug, Clone, Copy)]
pub struct GatherKv {
    pub layout: HeadLayout,
    pub block_size: usize,
    pub len: usize,
}

impl CustomOp2 for GatherKv {
    fn name(&self) -> &'static str {
        "herd-gather-kv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let cache = contiguous_f32(s1, l1, "cache")?;
        let table = contiguous_u32(s2, l2, "block table")?;
        let HeadLayout { kv_heads, head_dim: d, .. } = self.layout;
        let bs = self.block_size;
        let plane = kv_heads * bs * d;
        let mut out = Vec::with_capacity(2 * kv_heads * self.len * d);
        for kv in 0..2 {
            for g in 0..kv_heads {
                for p in 0..self.len {
                    let at =
                        table[p / bs] as usize * 2 * plane + kv * plane + (g * bs + p % bs) * d;
                    out.extend_from_slice(&cache[at..at + d]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((2, kv_heads, self.len, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
        let HeadLayout { kv_heads, head_dim, .. } = self.layout;
        let out = crate::cuda::launch_gather_kv(
            self.layout.kernel_shape(),
            (s1, l1),
            (s2, l2),
            self.len,
            kv_heads,
            self.block_size,
        )?;
        Ok((out, Shape::from((2, kv_heads, self.len, head_dim))))
    }
}

/// GPU causal softmax of prefill scores (`[.., rows, len]`, rows cycling through
/// `queries` queries at the last positions).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct CausalSoftmaxGpu {
    layout: HeadLayout,
    queries: usize,
}

impl CustomOp1 for CausalSoftmaxGpu {
    fn name(&self) -> &'static str {
        "herd-causal-softmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        candle_core::bail!("herd-causal-softmax runs on GPUs; the CPU uses attention::attend")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
        Ok((
            crate::cuda::launch_causal_softmax(self.layout.kernel_shape(), (s, l), self.queries)?,
            l.shape().clone(),
        ))
    }
}

/// How GPU prefill attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillKernel {
    /// herd's fused kernel (tensor cores, scores kept on chip); head sizes 64 and 128.
    Fused,
    /// Scores materialised by cuBLAS, then herd's causal softmax, then cuBLAS again.
    Matmul,
}

impl PrefillKernel {
    /// The fused kernel where it applies, unless `HERD_PREFILL_ATTENTION=matmul`.
    pub fn for_layout(layout: HeadLayout) -> Self {
        static FORCED_MATMUL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let forced = *FORCED_MATMUL
            .get_or_init(|| std::env::var("HERD_PREFILL_ATTENTION").is_ok_and(|v| v == "matmul"));
        if !forced && matches!(layout.head_dim, 64 | 128) {
            PrefillKernel::Fused
        } else {
            PrefillKernel::Matmul
        }
    }
}

/// GPU fused prefill attention: inputs q `[t, heads, d]`, k and v `[kv_heads, len, d]`.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FusedPrefillAttention {
    layout: HeadLayout,
}

impl CustomOp3 for FusedPrefillAttention {
    fn name(&self) -> &'static str {
        "herd-prefill-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        candle_core::bail!("herd-prefill-attention runs on GPUs; the CPU uses attention::attend")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
        let (t, heads, d) = l1.shape().dims3()?;
        let out = crate::cuda::launch_prefill_attention(
            self.layout.kernel_shape(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
        )?;
        Ok((out, Shape::from((t, heads * d))))
    }
}

/// Causal attention of a prompt chunk: `q` `[t, heads, d]` (pre-scaled) over its whole
/// context `k`, `v` (`[kv_heads, len, d]`, the chunk last) → `[t, heads · d]`.
pub fn prefill_attention(q: &Tensor, k: &Tensor, v: &Tensor, layout: HeadLayout) -> Result<Tensor> {
    prefill_attention_with(q, k, v, layout, PrefillKernel::for_layout(layout))
}

/// [`prefill_attention`] with the GPU kernel chosen by the caller (the checks compare both).
pub fn prefill_attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    layout: HeadLayout,
    kernel: PrefillKernel,
) -> Result<Tensor> {
    if matches!(q.device(), Device::Cpu) {
        // On the CPU, each query row sees only its own prefix: no mask needed.
        return attention::attend(q, k, v, layout.heads, layout.kv_heads, None, Default::default());
    }
    if kernel == PrefillKernel::Fused {
        return Ok(q.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &FusedPrefillAttention { layout },
        )?);
    }
    // Query heads sharing a key/value head are stacked as rows of one matmul.
    let (t, h, d) = q.dims3()?;
    let (kvh, group) = (layout.kv_heads, layout.group());
    let q = q.reshape((t, kvh, group, d))?.permute((1, 2, 0, 3))?.contiguous()?.reshape((
        kvh,
        group * t,
        d,
    ))?;
    let scores = q.matmul(&k.t()?)?;
    let probs = scores.apply_op1_no_bwd(&CausalSoftmaxGpu { layout, queries: t })?;
    let out = probs.matmul(v)?;
    Ok(out.reshape((kvh, group, t, d))?.permute((2, 0, 1, 3))?.reshape((t, h * d))?)
}

/// GPU SwiGLU: `[tokens, 2 · intermediate]` → `silu(gate) · up`.
#[derive(Debug, Clone, Copy)]
pub struct SwiGluGpu {
    pub layout: HeadLayout,
    pub intermediate: usize,
}

impl CustomOp1 for SwiGluGpu {
    fn name(&self) -> &'static str {
        "herd-swiglu"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        candle_core::bail!("herd-swiglu runs on GPUs; the CPU uses cpu_kernels::swiglu")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
        let tokens = l.shape().elem_count() / (2 * self.intermediate);
        let out = crate::cuda::launch_swiglu(
            self.layout.kernel_shape(),
            (s, l),
            tokens,
            self.intermediate,
        )?;
        Ok((out, Shape::from((tokens, self.intermediate))))
    }
}

/// Whether `t` lives where the GPU ops apply (bf16 on a CUDA device).
pub fn on_gpu(t: &Tensor) -> bool {
    t.device().is_cuda() && t.dtype() == DType::BF16
}

/// Per-phase timing of the paged forward pass, off by default. While it is on, each timed
/// phase synchronizes its device before and after, so a phase's time is the GPU time of
/// that phase alone plus one launch (the pass as a whole gets slower: this is for finding
/// where a pass spends its time, not for measuring its speed).
pub mod phase_timing {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    use candle_core::Device;

    use crate::error::Result;

    static ON: AtomicBool = AtomicBool::new(false);
    /// (phase, seconds, calls) in first-seen order.
    static TOTALS: Mutex<Vec<(&'static str, f64, usize)>> = Mutex::new(Vec::new());

    pub fn enable(on: bool) {
        ON.store(on, Ordering::Relaxed);
    }

    /// The totals since the last call, and resets them.
    pub fn take() -> Vec<(&'static str, f64, usize)> {
        std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f`, timed as `phase` when timing is on.
    pub fn time<T>(
        phase: &'static str,
        device: &Device,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if !ON.load(Ordering::Relaxed) {
            return f();
        }
        device.synchronize()?;
        let start = Instant::now();
        let out = f()?;
        device.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
        match totals.iter_mut().find(|(name, ..)| *name == phase) {
            Some(entry) => {
                entry.1 += secs;
                entry.2 += 1;
            }
            None => totals.push((phase, secs, 1)),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    /// The decode op over a paged cache equals `attention::attend` over the same keys laid
    /// out contiguously.
    #[test]
    fn paged_decode_attention_matches_contiguous_attention() -> Result<()> {
        let dev = Device::Cpu;
        let layout = HeadLayout { heads: 4, kv_heads: 2, head_dim: 8 };
        let (bs, blocks) = (4, 6);
        let width = layout.qkv_heads() * layout.head_dim;
        let cache =
            Tensor::randn(0f32, 1.0, (blocks, 2, layout.kv_heads, bs, layout.head_dim), &dev)?;
        let qkv = Tensor::randn(0f32, 1.0, (2, width), &dev)?.reshape((
            2,
            layout.qkv_heads(),
            layout.head_dim,
        ))?;
        // Row 0: 6 positions in blocks 4, 1; row 1: 3 positions in block 2.
        let meta = Tensor::new(&[[6u32, 4, 1], [3, 2, 0]], &dev)?;
        let op =
            DecodeAttention { layout, block_size: bs, rows: 2, meta_stride: 3, max_context: 6 };
        let got = qkv.apply_op3_no_bwd(&cache, &meta, &op)?;
        for (row, (len, table)) in [(6usize, vec![4u32, 1]), (3, vec![2])].into_iter().enumerate() {
            let table = Tensor::new(table.as_slice(), &dev)?;
            let kv = cache.apply_op2_no_bwd(&table, &GatherKv { layout, block_size: bs, len })?;
            let q = qkv.i((row..row + 1, 0..layout.heads))?;
            let expected = attention::attend(
                &q,
                &kv.i(0)?,
                &kv.i(1)?,
                layout.heads,
                layout.kv_heads,
                None,
                Default::default(),
            )?;
            let diff = (got.i(row..row + 1)? - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "row {row}: max diff {diff}");
        }
        Ok(())
    }
}
