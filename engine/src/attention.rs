//! Causal attention of new queries over a sequence's cached keys and values.
//!
//! [`attend`] serves any device and any number of new tokens. On the CPU (f32) it computes
//! every query row on its own, over exactly the keys it may see, with the same arithmetic as
//! the decode kernel: a position's output is then the same bits whether its prompt was
//! prefilled in one pass or in chunks, alone or beside other sequences. Greedy answers thus
//! do not depend on how the scheduler grouped the work (with gemm, the summation order of a
//! row changed with the chunk's shape, and about 1 answer in 130 of a full AlpacaEval run
//! differed between two batch sizes). Decoding on CPU asks one query per sequence of many
//! short sequences, where per-op overhead would dominate; [`decode_attention_cpu`] does that
//! case for the whole batch in one loop over the caches' memory. (On GPUs a paged /
//! flash-attention kernel takes this place.)

use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// How a layer's attention departs from plain causal softmax attention.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rules {
    /// A query sees at most this many positions, itself included (a sliding window).
    pub window: Option<usize>,
    /// Scores pass through `cap · tanh(s / cap)` before the softmax.
    pub softcap: Option<f32>,
}

impl Rules {
    /// The first of the positions `0..end` a query at position `end - 1` may see.
    fn first_visible(self, end: usize) -> usize {
        self.window.map_or(0, |w| end.saturating_sub(w))
    }
}

/// Causal attention of `t` new queries (`[t, heads, d]`, pre-scaled) over a cache
/// (`[kv_heads, len, d]` each, the new positions last): query `i` sees keys
/// `0..=len - t + i` (the last `rules.window` of them, with a window). `mask` is
/// [`causal_mask`] for `t > 1` off the CPU; on the CPU (f32) it is not needed.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    num_heads: usize,
    num_kv_heads: usize,
    mask: Option<&Tensor>,
    rules: Rules,
) -> Result<Tensor> {
    debug_assert_eq!(q.dim(1)?, num_heads);
    if decode_kernel_applies(q) {
        let rows = |t: &Tensor| if rows_are_contiguous(t) { Ok(t.clone()) } else { t.contiguous() };
        return prefill_attention_cpu(q, &rows(k)?, &rows(v)?, num_kv_heads, rules);
    }
    attend_with_tensor_ops(q, k, v, num_heads, num_kv_heads, mask, rules)
}

/// [`attend`] as matmuls and a softmax (any device and dtype). Query heads sharing a KV
/// head are stacked as rows of one matmul instead of repeating K and V.
pub(crate) fn attend_with_tensor_ops(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    num_heads: usize,
    num_kv_heads: usize,
    mask: Option<&Tensor>,
    rules: Rules,
) -> Result<Tensor> {
    let (t, h, d) = q.dims3()?;
    debug_assert_eq!(h, num_heads);
    let len = k.dim(1)?;
    let kvh = num_kv_heads;
    let group = h / kvh;
    let q = q.reshape((t, kvh, group, d))?.permute((1, 2, 0, 3))?.contiguous()?.reshape((
        kvh,
        group * t,
        d,
    ))?;
    let scores = q.matmul(&k.t()?)?;
    let scores = match rules.softcap {
        Some(cap) => ((scores / cap as f64)?.tanh()? * cap as f64)?,
        None => scores,
    };
    let windowed;
    let mask = match rules.window {
        Some(window) => {
            windowed = windowed_causal_mask(t, len, window, scores.dtype(), scores.device())?;
            Some(&windowed)
        }
        None if t > 1 => mask,
        None => None,
    };
    let scores = match mask {
        Some(mask) => scores.reshape((kvh, group, t, len))?.broadcast_add(mask)?.reshape((
            kvh,
            group * t,
            len,
        ))?,
        _ => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(v)?; // [kvh, group * t, d]
    Ok(out.reshape((kvh, group, t, d))?.permute((2, 0, 1, 3))?.reshape((t, h * d))?)
}

/// Whether a `[kv_heads, len, d]` cache view is f32 on the CPU with each row contiguous.
fn rows_are_contiguous(t: &Tensor) -> bool {
    let stride = t.stride();
    matches!(t.device(), Device::Cpu)
        && t.dtype() == DType::F32
        && t.rank() == 3
        && stride[2] == 1
        && stride[1] == t.dims()[2]
}

/// [`attend`] on the CPU: each query row of each KV head's group through the decode
/// kernel's [`attend_one_group`], over its own prefix of the cache. Needs f32 and rows
/// contiguous (see [`rows_are_contiguous`]); a key/value of another dtype is an error.
fn prefill_attention_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    num_kv_heads: usize,
    rules: Rules,
) -> Result<Tensor> {
    let (t, h, d) = q.dims3()?;
    let len = k.dim(1)?;
    if t > len || v.dim(1)? != len || !rows_are_contiguous(k) || !rows_are_contiguous(v) {
        let reason = format!(
            "prefill attention: {t} queries over keys {:?} / values {:?} (strides {:?} / {:?}); \
             needs f32 CPU rows, contiguous",
            k.dims(),
            v.dims(),
            k.stride(),
            v.stride()
        );
        return Err(candle_core::Error::Msg(reason).into());
    }
    let group = h / num_kv_heads;
    let first = len - t;
    let q_data = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else {
        unreachable!("rows_are_contiguous checked the device")
    };
    let (k_all, v_all) = (k_cpu.as_slice::<f32>()?, v_cpu.as_slice::<f32>()?);
    let k_heads: Vec<&[f32]> =
        (0..num_kv_heads).map(|g| head_rows(k_all, k_layout, g, len * d)).collect();
    let v_heads: Vec<&[f32]> =
        (0..num_kv_heads).map(|g| head_rows(v_all, v_layout, g, len * d)).collect();
    let mut out = vec![0f32; t * h * d];
    out.par_chunks_mut(h * d).enumerate().for_each_init(
        || vec![0f32; 2 * group * len],
        |scratch, (i, out_row)| {
            let end = first + i + 1;
            let seen = rules.first_visible(end) * d..end * d;
            for g in 0..num_kv_heads {
                let q_group = &q_data[(i * h + g * group) * d..][..group * d];
                let out_group = &mut out_row[g * group * d..][..group * d];
                attend_one_group(
                    q_group,
                    &k_heads[g][seen.clone()],
                    &v_heads[g][seen.clone()],
                    d,
                    rules.softcap,
                    scratch,
                    out_group,
                );
            }
        },
    );
    drop((k_storage, v_storage));
    Ok(Tensor::from_vec(out, (t, h * d), q.device())?)
}

/// `[t, len]`: 0 where query `i` (at position `len - t + i`) may look, -inf after it.
pub fn causal_mask(t: usize, len: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    windowed_causal_mask(t, len, usize::MAX, dtype, device)
}

/// [`causal_mask`] that also hides what lies `window` or more positions back.
fn windowed_causal_mask(
    t: usize,
    len: usize,
    window: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let first = len - t;
    let rules = Rules { window: Some(window), softcap: None };
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let end = first + i + 1;
            let start = rules.first_visible(end);
            (0..len).map(move |j| if j < start || j >= end { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, len), device)?.to_dtype(dtype)?)
}

/// Whether [`decode_attention_cpu`] can serve these tensors.
pub fn decode_kernel_applies(q: &Tensor) -> bool {
    matches!(q.device(), Device::Cpu) && q.dtype() == DType::F32
}

/// Attention of one new query per sequence: `q` is `[sequences, heads, d]` (pre-scaled),
/// `kv[s]` the cache views of sequence `s` (`[kv_heads, len_s, d]`, rows contiguous).
/// Returns `[sequences, heads * d]`.
pub fn decode_attention_cpu(
    q: &Tensor,
    kv: &[(Tensor, Tensor)],
    num_kv_heads: usize,
    rules: Rules,
) -> Result<Tensor> {
    let (n, h, d) = q.dims3()?;
    let group = h / num_kv_heads;
    let q_data = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * h * d];
    // Validate layouts up front; the parallel loop below only reads.
    for (k, v) in kv {
        for (t, name) in [(k, "k"), (v, "v")] {
            if !rows_are_contiguous(t) || t.dim(2)? != d {
                let stride = t.stride();
                let reason = format!("decode_attention_cpu: {name} must be f32 on CPU with contiguous rows ({stride:?})");
                return Err(candle_core::Error::Msg(reason).into());
            }
        }
    }
    out.par_chunks_mut(h * d).zip(kv.par_iter()).enumerate().try_for_each(
        |(s, (out_seq, (k, v)))| -> Result<()> {
            let len = k.dim(1)?;
            let (k_storage, k_layout) = k.storage_and_layout();
            let (v_storage, v_layout) = v.storage_and_layout();
            let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else {
                unreachable!("checked above")
            };
            let (k_all, v_all) = (k_cpu.as_slice::<f32>()?, v_cpu.as_slice::<f32>()?);
            let mut scores = vec![0f32; 2 * group * len];
            let seen = rules.first_visible(len) * d..len * d;
            for g in 0..num_kv_heads {
                let (k_head, v_head) = (
                    head_rows(k_all, k_layout, g, len * d),
                    head_rows(v_all, v_layout, g, len * d),
                );
                let q_group = &q_data[(s * h + g * group) * d..][..group * d];
                let out_group = &mut out_seq[g * group * d..][..group * d];
                attend_one_group(
                    q_group,
                    &k_head[seen.clone()],
                    &v_head[seen.clone()],
                    d,
                    rules.softcap,
                    &mut scores,
                    out_group,
                );
            }
            Ok(())
        },
    )?;
    Ok(Tensor::from_vec(out, (n, h * d), q.device())?)
}

/// KV head `g`'s first `values` values of a `[kv_heads, len, d]` cache view with contiguous
/// rows ([`rows_are_contiguous`]), out of its storage.
fn head_rows<'a>(
    all: &'a [f32],
    layout: &candle_core::Layout,
    g: usize,
    values: usize,
) -> &'a [f32] {
    &all[layout.start_offset() + g * layout.stride()[0]..][..values]
}

/// The query heads of one KV head: scores (soft-capped if `softcap`), softmax, weighted
/// sum of values. `scratch` holds `2 · group · len` values (scores and probabilities).
fn attend_one_group(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    softcap: Option<f32>,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if d.is_multiple_of(8)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for; d is whole vectors.
            unsafe { attend_one_group_avx2(q, k, v, d, softcap, scratch, out) };
            return;
        }
    }
    attend_one_group_portable(q, k, v, d, softcap, scratch, out);
}

/// `cap · tanh(s / cap)` over the scores.
fn cap_scores(scores: &mut [f32], softcap: Option<f32>) {
    if let Some(cap) = softcap {
        for s in scores {
            *s = cap * (*s / cap).tanh();
        }
    }
}

/// [`attend_one_group_portable`] with explicit vectors: the compiler does not vectorize the
/// bounds-checked dot products (measured: a quarter of batched decode time went there).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_one_group_avx2(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    softcap: Option<f32>,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let group = q.len() / d;
    let len = k.len() / d;
    let (scores, probs) = scratch[..2 * group * len].split_at_mut(group * len);
    let (qp, kp, vp) = (q.as_ptr(), k.as_ptr(), v.as_ptr());
    for p in 0..len {
        let k_row = kp.add(p * d);
        for j in 0..group {
            let q_row = qp.add(j * d);
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut c = 0;
            while c + 16 <= d {
                a0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(q_row.add(c)),
                    _mm256_loadu_ps(k_row.add(c)),
                    a0,
                );
                a1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(q_row.add(c + 8)),
                    _mm256_loadu_ps(k_row.add(c + 8)),
                    a1,
                );
                c += 16;
            }
            if c < d {
                a0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(q_row.add(c)),
                    _mm256_loadu_ps(k_row.add(c)),
                    a0,
                );
            }
            let s = _mm256_add_ps(a0, a1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            *scores.get_unchecked_mut(j * len + p) =
                _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
        }
    }
    cap_scores(scores, softcap);
    for j in 0..group {
        crate::cpu_kernels::softmax_prefix(
            &scores[j * len..(j + 1) * len],
            &mut probs[j * len..(j + 1) * len],
        );
    }
    out.fill(0.0);
    let op = out.as_mut_ptr();
    for p in 0..len {
        let v_row = vp.add(p * d);
        for j in 0..group {
            let w = _mm256_set1_ps(*probs.get_unchecked(j * len + p));
            let o = op.add(j * d);
            let mut c = 0;
            while c < d {
                _mm256_storeu_ps(
                    o.add(c),
                    _mm256_fmadd_ps(w, _mm256_loadu_ps(v_row.add(c)), _mm256_loadu_ps(o.add(c))),
                );
                c += 8;
            }
        }
    }
}

#[inline(always)]
fn attend_one_group_portable(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    softcap: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let group = q.len() / d;
    let len = k.len() / d;
    for (k_row, p) in k.chunks_exact(d).zip(0..len) {
        for j in 0..group {
            scores[j * len + p] = dot(&q[j * d..(j + 1) * d], k_row);
        }
    }
    cap_scores(&mut scores[..group * len], softcap);
    for j in 0..group {
        let row = &mut scores[j * len..(j + 1) * len];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
    out.fill(0.0);
    for (v_row, p) in v.chunks_exact(d).zip(0..len) {
        for j in 0..group {
            let w = scores[j * len + p];
            for (o, &x) in out[j * d..(j + 1) * d].iter_mut().zip(v_row) {
                *o += w * x;
            }
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent lanes so the compiler keeps them in one vector register.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_kernel_matches_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (h, kvh, d) = (6, 2, 16);
        let mut kv = Vec::new();
        let mut expected = Vec::new();
        let q = Tensor::randn(0f32, 1.0, (3, h, d), &dev)?;
        for (s, len) in [5usize, 1, 17].into_iter().enumerate() {
            // A view into a larger buffer, as the cache hands out.
            let k = Tensor::randn(0f32, 1.0, (kvh, len + 8, d), &dev)?.narrow(1, 0, len)?;
            let v = Tensor::randn(0f32, 1.0, (kvh, len + 8, d), &dev)?.narrow(1, 0, len)?;
            expected.push(attend_with_tensor_ops(
                &q.narrow(0, s, 1)?,
                &k,
                &v,
                h,
                kvh,
                None,
                Rules::default(),
            )?);
            kv.push((k, v));
        }
        let expected = Tensor::cat(&expected, 0)?;
        let got = decode_attention_cpu(&q, &kv, kvh, Rules::default())?;
        let diff = (got - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max diff {diff}");
        Ok(())
    }

    #[test]
    fn prefill_kernel_matches_tensor_ops_with_the_causal_mask() -> Result<()> {
        let dev = Device::Cpu;
        let (h, kvh, d, t, len) = (6, 2, 16, 7, 20);
        let q = Tensor::randn(0f32, 1.0, (t, h, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (kvh, len + 4, d), &dev)?.narrow(1, 0, len)?;
        let v = Tensor::randn(0f32, 1.0, (kvh, len + 4, d), &dev)?.narrow(1, 0, len)?;
        let mask = causal_mask(t, len, DType::F32, &dev)?;
        let expected = attend_with_tensor_ops(&q, &k, &v, h, kvh, Some(&mask), Rules::default())?;
        let got = attend(&q, &k, &v, h, kvh, Some(&mask), Rules::default())?;
        let diff = (got - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max diff {diff}");
        Ok(())
    }

    /// Sliding windows and soft-capping: the CPU kernels (prefill and decode) against the
    /// tensor-op path, which applies them as a mask and a tanh over the scores.
    #[test]
    fn windows_and_softcaps_match_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (h, kvh, d, t, len) = (4, 2, 16, 9, 21);
        let q = (Tensor::randn(0f32, 1.0, (t, h, d), &dev)? * 2.0)?;
        let k = Tensor::randn(0f32, 1.0, (kvh, len, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (kvh, len, d), &dev)?;
        for rules in [
            Rules { window: Some(4), softcap: None },
            Rules { window: None, softcap: Some(3.0) },
            Rules { window: Some(1), softcap: Some(5.0) },
            Rules { window: Some(64), softcap: None },
        ] {
            let mask = causal_mask(t, len, DType::F32, &dev)?;
            let expected = attend_with_tensor_ops(&q, &k, &v, h, kvh, Some(&mask), rules)?;
            let got = attend(&q, &k, &v, h, kvh, None, rules)?;
            let diff = (&got - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{rules:?}: prefill max diff {diff}");
            let last = decode_attention_cpu(
                &q.narrow(0, t - 1, 1)?,
                &[(k.clone(), v.clone())],
                kvh,
                rules,
            )?;
            let diff =
                (last - expected.narrow(0, t - 1, 1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{rules:?}: decode max diff {diff}");
            let plain = attend(&q, &k, &v, h, kvh, None, Rules::default())?;
            let moved = (got - plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(moved > 1e-3, rules.window != Some(64), "{rules:?} changes the output");
        }
        Ok(())
    }

    /// The same positions give the same bits however the prompt is cut into chunks, and
    /// the last position's row equals the decode kernel's.
    #[test]
    fn a_positions_attention_does_not_depend_on_the_chunking() -> Result<()> {
        let dev = Device::Cpu;
        let (h, kvh, d, len) = (6, 2, 16, 29);
        let q = Tensor::randn(0f32, 1.0, (len, h, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (kvh, len, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (kvh, len, d), &dev)?;
        let bits = |t: &Tensor| -> Result<Vec<u32>> {
            Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
        };
        let whole = attend(&q, &k, &v, h, kvh, None, Rules::default())?;
        for cuts in [vec![1, 28], vec![13, 16], vec![5, 5, 5, 14], vec![28, 1]] {
            let mut start = 0;
            let mut parts = Vec::new();
            for t in cuts.iter().copied() {
                let end = start + t;
                parts.push(attend(
                    &q.narrow(0, start, t)?,
                    &k.narrow(1, 0, end)?,
                    &v.narrow(1, 0, end)?,
                    h,
                    kvh,
                    None,
                    Rules::default(),
                )?);
                start = end;
            }
            assert_eq!(bits(&Tensor::cat(&parts, 0)?)?, bits(&whole)?, "chunks {cuts:?}");
        }
        let last =
            decode_attention_cpu(&q.narrow(0, len - 1, 1)?, &[(k, v)], kvh, Rules::default())?;
        assert_eq!(bits(&last)?, bits(&whole.narrow(0, len - 1, 1)?)?);
        Ok(())
    }
}
