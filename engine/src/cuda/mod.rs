//! herd's CUDA kernels (`kernels.cu`): compiled by NVRTC the first time a model shape needs
//! them (the head size and the query heads per key/value head are compile-time constants of
//! the decode kernel), then launched on the device's stream. Each `launch_*` function is
//! the GPU half of an op in `paged_ops`.

use std::sync::Mutex;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaView, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDType, CudaDevice, WrapErr};
use candle_core::{CudaStorage, Layout, Result};
use half::bf16;

const SOURCE: &str = include_str!("kernels.cu");

/// The compile-time constants of one build of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelShape {
    pub head_dim: usize,
    /// Query heads per key/value head.
    pub group: usize,
}

impl KernelShape {
    /// Whether the decode kernel has a layout for this shape.
    pub fn check(&self) -> std::result::Result<(), UnsupportedShape> {
        let lanes = self.head_dim / 8;
        if self.head_dim % 8 != 0 || !lanes.is_power_of_two() || lanes > 32 {
            return Err(UnsupportedShape::HeadDim { head_dim: self.head_dim });
        }
        if self.group == 0 || self.group > 16 {
            return Err(UnsupportedShape::Group { group: self.group });
        }
        Ok(())
    }
}

/// An attention shape the decode kernel has no layout for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedShape {
    #[error("head_dim {head_dim} is not supported on GPUs (8·2^k up to 256)")]
    HeadDim { head_dim: usize },
    #[error("{group} query heads per key/value head is not supported on GPUs (1..=16)")]
    Group { group: usize },
}

type PtxKey = (KernelShape, (i32, i32));

static PTX: Mutex<Vec<(PtxKey, String)>> = Mutex::new(Vec::new());

/// Compiles (once per shape and GPU generation) and loads a kernel.
fn function(dev: &CudaDevice, shape: KernelShape, name: &str) -> Result<CudaFunction> {
    let stream = dev.cuda_stream();
    let cc = stream.context().compute_capability().w()?;
    let key = (shape, cc);
    let mut cache = PTX.lock().unwrap_or_else(|p| p.into_inner());
    if !cache.iter().any(|(k, _)| *k == key) {
        let source =
            format!("#define HEAD_DIM {}\n#define GROUP {}\n{SOURCE}", shape.head_dim, shape.group);
        // NVRTC wants a 'static arch name; one leak per shape and GPU generation.
        let arch: &'static str = Box::leak(format!("compute_{}{}", cc.0, cc.1).into_boxed_str());
        let options = CompileOptions {
            arch: Some(arch),
            name: Some("herd_kernels.cu".into()),
            ..Default::default()
        };
        let ptx = compile_ptx_with_opts(&source, options).map_err(|e| {
            candle_core::Error::Msg(format!(
                "compiling herd's CUDA kernels for {shape:?} on {arch}: {e:?}"
            ))
        })?;
        cache.push((key, ptx.to_src()));
    }
    let ptx = &cache.iter().find(|(k, _)| *k == key).expect("compiled above").1;
    let module = format!("herd_d{}_g{}_sm{}{}", shape.head_dim, shape.group, cc.0, cc.1);
    Ok(dev.get_or_load_custom_func(name, &module, ptx)?.into_cuda_function())
}

/// A contiguous tensor's elements.
fn view<'a, T: CudaDType>(
    storage: &'a CudaStorage,
    layout: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous")
    };
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

fn blocks_for(n: usize, threads: usize) -> u32 {
    n.div_ceil(threads).clamp(1, 65_535 * 16) as u32
}

/// Rotary embedding of q and k (q also scaled), v copied: `[tokens, heads + 2 kv_heads, d]`.
#[allow(clippy::too_many_arguments)]
pub fn launch_rope_qkv(
    shape: KernelShape,
    qkv: (&CudaStorage, &Layout),
    positions: (&CudaStorage, &Layout),
    inv_freq: (&CudaStorage, &Layout),
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    q_scale: f32,
) -> Result<CudaStorage> {
    let dev = qkv.0.device.clone();
    let src = view::<bf16>(qkv.0, qkv.1, "qkv")?;
    let pos = view::<u32>(positions.0, positions.1, "positions")?;
    let freq = view::<f32>(inv_freq.0, inv_freq.1, "inv_freq")?;
    let d = shape.head_dim;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<bf16>(tokens * (heads + 2 * kv_heads) * d)? };
    let func = function(&dev, shape, "herd_rope_qkv")?;
    let (h, kvh, d_i) = (heads as i32, kv_heads as i32, d as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&src).arg(&pos).arg(&freq).arg(&mut out).arg(&h).arg(&kvh).arg(&d_i).arg(&q_scale);
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: (d * 4) as u32,
    };
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Writes the keys and values of `qkv_rot` into their cache slots.
pub fn launch_store_kv(
    shape: KernelShape,
    cache: &mut CudaStorage,
    qkv_rot: (&CudaStorage, &Layout),
    slots: (&CudaStorage, &Layout),
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    block_size: usize,
) -> Result<()> {
    let dev = cache.device.clone();
    let src = view::<bf16>(qkv_rot.0, qkv_rot.1, "qkv_rot")?;
    let slots = view::<u32>(slots.0, slots.1, "slots")?;
    let func = function(&dev, shape, "herd_store_kv")?;
    let dst = cache.as_cuda_slice_mut::<bf16>()?;
    let (h, kvh, d, bs) = (heads as i32, kv_heads as i32, shape.head_dim as i32, block_size as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&src).arg(&slots).arg(dst).arg(&h).arg(&kvh).arg(&d).arg(&bs);
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match the kernel's signature; slots lie in the cache.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// Decode attention of the first `rows` rows of `qkv_rot` over the paged cache.
#[allow(clippy::too_many_arguments)]
pub fn launch_decode_attention(
    shape: KernelShape,
    qkv_rot: (&CudaStorage, &Layout),
    cache: (&CudaStorage, &Layout),
    meta: (&CudaStorage, &Layout),
    rows: usize,
    meta_stride: usize,
    kv_heads: usize,
    block_size: usize,
    max_context: usize,
) -> Result<CudaStorage> {
    let dev = qkv_rot.0.device.clone();
    let q = view::<bf16>(qkv_rot.0, qkv_rot.1, "qkv_rot")?;
    let kv = view::<bf16>(cache.0, cache.1, "cache")?;
    let meta = view::<u32>(meta.0, meta.1, "decode meta")?;
    let d = shape.head_dim;
    let heads = kv_heads * shape.group;
    let q_row_stride = ((heads + 2 * kv_heads) * d) as i32;
    // Enough blocks to fill the GPU: long contexts of a small batch are split into
    // partitions, merged by a second kernel.
    let partition = if rows * kv_heads >= 264 { 512 } else { 128 };
    let parts = max_context.div_ceil(partition).max(1);
    // SAFETY: every element is written by the kernels.
    let mut out = unsafe { dev.alloc::<bf16>(rows * heads * d)? };
    let scratch = parts > 1;
    let mut part_out =
        unsafe { dev.alloc::<f32>(if scratch { rows * heads * parts * d } else { 1 })? };
    let mut part_ml =
        unsafe { dev.alloc::<f32>(if scratch { rows * heads * parts * 2 } else { 1 })? };
    let func = function(&dev, shape, "herd_decode_attention")?;
    let (ms, kvh, bs, ps) =
        (meta_stride as i32, kv_heads as i32, block_size as i32, partition as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&q).arg(&q_row_stride).arg(&kv).arg(&meta).arg(&ms).arg(&kvh).arg(&bs).arg(&ps);
    b.arg(&mut out).arg(&mut part_out).arg(&mut part_ml);
    let cfg = LaunchConfig {
        grid_dim: (kv_heads as u32, rows as u32, parts as u32),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    if scratch {
        let func = function(&dev, shape, "herd_decode_combine")?;
        let (h, p) = (heads as i32, parts as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(&part_out).arg(&part_ml).arg(&meta).arg(&ms).arg(&h).arg(&p).arg(&ps).arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, rows as u32, 1),
            block_dim: (d as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// One sequence's keys and values, contiguous: `[2, kv_heads, len, d]`.
pub fn launch_gather_kv(
    shape: KernelShape,
    cache: (&CudaStorage, &Layout),
    table: (&CudaStorage, &Layout),
    len: usize,
    kv_heads: usize,
    block_size: usize,
) -> Result<CudaStorage> {
    let dev = cache.0.device.clone();
    let kv = view::<bf16>(cache.0, cache.1, "cache")?;
    let table = view::<u32>(table.0, table.1, "block table")?;
    let d = shape.head_dim;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<bf16>(2 * kv_heads * len * d)? };
    let func = function(&dev, shape, "herd_gather_kv")?;
    let (l, kvh, d_i, bs) = (len as i32, kv_heads as i32, d as i32, block_size as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&kv).arg(&table).arg(&l).arg(&kvh).arg(&d_i).arg(&bs).arg(&mut out);
    let x = blocks_for(len * d / 8, 256).min(1024);
    let cfg = LaunchConfig {
        grid_dim: (x, kv_heads as u32, 2),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Causal softmax of prefill scores `[rows, len]` whose rows cycle through `queries` queries.
pub fn launch_causal_softmax(
    shape: KernelShape,
    scores: (&CudaStorage, &Layout),
    queries: usize,
) -> Result<CudaStorage> {
    let dev = scores.0.device.clone();
    let src = view::<bf16>(scores.0, scores.1, "scores")?;
    let dims = scores.1.dims();
    let len = *dims.last().unwrap_or(&1);
    let rows = scores.1.shape().elem_count() / len.max(1);
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<bf16>(rows * len)? };
    let func = function(&dev, shape, "herd_causal_softmax")?;
    let (l, q) = (len as i32, queries as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&src).arg(&mut out).arg(&l).arg(&q);
    let cfg =
        LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `silu(gate) * up` of a `[tokens, 2 * intermediate]` projection.
pub fn launch_swiglu(
    shape: KernelShape,
    gate_up: (&CudaStorage, &Layout),
    tokens: usize,
    intermediate: usize,
) -> Result<CudaStorage> {
    let dev = gate_up.0.device.clone();
    let src = view::<bf16>(gate_up.0, gate_up.1, "gate_up")?;
    let total = tokens * intermediate;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<bf16>(total)? };
    let func = function(&dev, shape, "herd_swiglu")?;
    let (i, n) = (intermediate as i32, total);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&src).arg(&mut out).arg(&i).arg(&n);
    let cfg = LaunchConfig {
        grid_dim: (blocks_for(total, 256).min(132 * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Causal attention of a prompt chunk without materialised scores: `q` `[t, heads, d]` (rows
/// may be strided, heads and dimensions contiguous), `k`, `v` `[kv_heads, len, d]`
/// contiguous → `[t, heads · d]`.
pub fn launch_prefill_attention(
    shape: KernelShape,
    q: (&CudaStorage, &Layout),
    k: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = q.0.device.clone();
    let (t, heads, d) = q.1.shape().dims3()?;
    let (_, len, _) = k.1.shape().dims3()?;
    let stride = q.1.stride();
    if d != shape.head_dim || stride[2] != 1 || stride[1] != d {
        candle_core::bail!("prefill attention: q must be [t, heads, {}] with contiguous heads, got stride {stride:?}", shape.head_dim);
    }
    let start = q.1.start_offset();
    let q_all = q.0.as_cuda_slice::<bf16>()?;
    let q_view = q_all.slice(start..start + (t - 1) * stride[0] + heads * d);
    let k_view = view::<bf16>(k.0, k.1, "keys")?;
    let v_view = view::<bf16>(v.0, v.1, "values")?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<bf16>(t * heads * d)? };
    let func = function(&dev, shape, "herd_prefill_attention")?;
    let (row_stride, t_i, len_i, h_i) = (stride[0] as i64, t as i32, len as i32, heads as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&q_view)
        .arg(&row_stride)
        .arg(&k_view)
        .arg(&v_view)
        .arg(&t_i)
        .arg(&len_i)
        .arg(&h_i)
        .arg(&mut out);
    let cfg = LaunchConfig {
        grid_dim: (t.div_ceil(64) as u32, heads as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match the kernel's signature; rows stay inside q.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}
