//! CPU kernels for the shapes of batched decoding, where candle's general paths lose most
//! of their time to packing, dispatch and allocation.
//!
//! `y = x·Wᵀ` for few-row activations:
//! gemm is built for large products: at 16–32 rows it spends most of its time packing the
//! weight matrix and reaches a fraction of the FMA peak (examples/linear_bench). Here each
//! thread streams blocks of W's rows once and multiplies them against all rows of `x`
//! (which stays in cache), with a register tile of 4 activation rows × 3 weight rows.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Up to this many activation rows the kernel beats gemm on this machine class.
pub const SMALL_M_LIMIT: usize = 64;

const TILE_X: usize = 4;
const TILE_W: usize = 3;
/// Weight rows handed to a thread at a time.
const W_ROWS_PER_UNIT: usize = TILE_W * 16;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the kernel off (gemm for every product), for side-by-side benchmarks.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether [`matmul_xwt`] serves `x` (`[m, k]`) times `w` (`[n, k]`) transposed.
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && x.dim(0).is_ok_and(|m| m <= SMALL_M_LIMIT)
        && x.is_contiguous()
        && w.is_contiguous()
}

/// `x`: `[m, k]`, `w`: `[n, k]`, both contiguous f32 on CPU → `[m, n]`.
pub fn matmul_xwt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        return Err(candle_core::Error::ShapeMismatchBinaryOp {
            lhs: x.shape().clone(),
            rhs: w.shape().clone(),
            op: "matmul_xwt",
        }
        .into());
    }
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (Storage::Cpu(xc), Storage::Cpu(wc)) = (&*xs, &*ws) else {
        return Err(candle_core::Error::Msg("matmul_xwt needs CPU tensors".into()).into());
    };
    let x_data = &xc.as_slice::<f32>()?[xl.start_offset()..xl.start_offset() + m * k];
    let w_data = &wc.as_slice::<f32>()?[wl.start_offset()..wl.start_offset() + n * k];
    let mut y = vec![0f32; m * n];
    let y_ptr = SendPtr(y.as_mut_ptr());
    let units = n.div_ceil(W_ROWS_PER_UNIT);
    // rayon (not a barrier pool): on a shared, oversubscribed machine the calling thread
    // takes over the units of a worker that is not scheduled instead of waiting for it.
    (0..units).into_par_iter().with_min_len(4).for_each(|unit| {
        let y_ptr = &y_ptr;
        let j0 = unit * W_ROWS_PER_UNIT;
        let j1 = (j0 + W_ROWS_PER_UNIT).min(n);
        // SAFETY: units write disjoint columns j0..j1 of y.
        unsafe { matmul_block(x_data, w_data, y_ptr.0, m, n, k, j0, j1) };
    });
    drop((xs, ws));
    Ok(Tensor::from_vec(y, (m, n), x.device())?)
}

struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint regions from the pool's threads.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Columns `j0..j1` of `y` (row stride `n`).
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_block(
    x: &[f32],
    w: &[f32],
    y: *mut f32,
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && k.is_multiple_of(8)
        {
            avx2::matmul_block(x, w, y, m, n, k, j0, j1);
            return;
        }
    }
    for j in j0..j1 {
        let w_row = &w[j * k..(j + 1) * k];
        for r in 0..m {
            let x_row = &x[r * k..(r + 1) * k];
            *y.add(r * n + j) = x_row.iter().zip(w_row).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{TILE_W, TILE_X};

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_block(
        x: &[f32],
        w: &[f32],
        y: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        j0: usize,
        j1: usize,
    ) {
        let mut j = j0;
        while j < j1 {
            let nw = (j1 - j).min(TILE_W);
            let mut r = 0;
            while r < m {
                let nx = (m - r).min(TILE_X);
                match (nx, nw) {
                    (4, 3) => tile::<4, 3>(x, w, y, n, k, r, j),
                    (4, 2) => tile::<4, 2>(x, w, y, n, k, r, j),
                    (4, 1) => tile::<4, 1>(x, w, y, n, k, r, j),
                    (3, 3) => tile::<3, 3>(x, w, y, n, k, r, j),
                    (3, 2) => tile::<3, 2>(x, w, y, n, k, r, j),
                    (3, 1) => tile::<3, 1>(x, w, y, n, k, r, j),
                    (2, 3) => tile::<2, 3>(x, w, y, n, k, r, j),
                    (2, 2) => tile::<2, 2>(x, w, y, n, k, r, j),
                    (2, 1) => tile::<2, 1>(x, w, y, n, k, r, j),
                    (1, 3) => tile::<1, 3>(x, w, y, n, k, r, j),
                    (1, 2) => tile::<1, 2>(x, w, y, n, k, r, j),
                    _ => tile::<1, 1>(x, w, y, n, k, r, j),
                }
                r += nx;
            }
            j += nw;
        }
    }

    /// Rows `r..r+MX` of `x` against rows `j..j+MW` of `w`: MX·MW dot products of length k.
    #[inline(always)]
    unsafe fn tile<const MX: usize, const MW: usize>(
        x: &[f32],
        w: &[f32],
        y: *mut f32,
        n: usize,
        k: usize,
        r: usize,
        j: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); MW]; MX];
        let xp = x.as_ptr().add(r * k);
        let wp = w.as_ptr().add(j * k);
        let mut kk = 0;
        while kk < k {
            let mut wv = [_mm256_setzero_ps(); MW];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(wp.add(c * k + kk));
            }
            for (a, acc_row) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(xp.add(a * k + kk));
                for c in 0..MW {
                    acc_row[c] = _mm256_fmadd_ps(xv, wv[c], acc_row[c]);
                }
            }
            kk += 8;
        }
        for (a, acc_row) in acc.iter().enumerate() {
            for (c, v) in acc_row.iter().enumerate() {
                *y.add((r + a) * n + j + c) = hsum(*v);
            }
        }
    }

    /// `dst = exp(src - max)`, returning the sum.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(src: &[f32], max: f32, dst: &mut [f32]) -> f32 {
        let n = src.len();
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(src.as_ptr().add(i)), m));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), e);
            acc = _mm256_add_ps(acc, e);
            i += 8;
        }
        let mut sum = hsum(acc);
        while i < n {
            let e = (src[i] - max).exp();
            dst[i] = e;
            sum += e;
            i += 1;
        }
        sum
    }

    /// e^x for x ≤ 0 (softmax arguments): 2^(x·log2 e) split into integer and fraction,
    /// the fraction by a degree-6 polynomial (relative error ~1e-7).
    #[inline(always)]
    unsafe fn exp_ps(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let t = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E));
        let n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        let f = _mm256_sub_ps(t, n);
        let mut p = _mm256_set1_ps(1.540_353_1e-4);
        for c in [1.333_355_8e-3, 9.618_129e-3, 5.550_357e-2, 2.402_265e-1, 6.931_472e-1, 1.0] {
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
        }
        let bits =
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// SwiGLU on a stacked `[tokens, 2·i]` gate/up projection: `silu(gate) · up`, `[tokens, i]`,
/// in one pass (two candle ops and an intermediate otherwise).
pub fn swiglu(gate_up: &Tensor, intermediate: usize) -> Result<Option<Tensor>> {
    if !matches!(gate_up.device(), Device::Cpu)
        || gate_up.dtype() != DType::F32
        || !gate_up.is_contiguous()
    {
        return Ok(None);
    }
    let (tokens, width) = gate_up.dims2()?;
    if width != 2 * intermediate {
        return Ok(None);
    }
    let (storage, layout) = gate_up.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { return Ok(None) };
    let data =
        &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + tokens * width];
    let mut out = vec![0f32; tokens * intermediate];
    out.par_chunks_mut(intermediate).zip(data.par_chunks(width)).with_min_len(8).for_each(
        |(o, row)| {
            let (gate, up) = row.split_at(intermediate);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        },
    );
    drop(storage);
    Ok(Some(Tensor::from_vec(out, (tokens, intermediate), gate_up.device())?))
}

/// `dst = softmax(src)` (vectorized exp where the CPU has AVX2 and FMA).
pub(crate) fn softmax_prefix(src: &[f32], dst: &mut [f32]) {
    let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features.
            let sum = unsafe { avx2::exp_shifted(src, max, dst) };
            let inv = 1.0 / sum;
            dst.iter_mut().for_each(|v| *v *= inv);
            return;
        }
    }
    let mut sum = 0.0;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (s - max).exp();
        sum += *d;
    }
    let inv = 1.0 / sum;
    dst.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_matches_candle_ops() -> Result<()> {
        let gate_up = Tensor::randn(0f32, 3.0, (5, 2 * 37), &Device::Cpu)?;
        let expected =
            (candle_nn::ops::silu(&gate_up.narrow(1, 0, 37)?)? * gate_up.narrow(1, 37, 37)?)?;
        let got = swiglu(&gate_up, 37)?.expect("cpu f32");
        let diff = (got - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }

    #[test]
    fn small_m_kernel_matches_candle_matmul() -> Result<()> {
        for (m, n, k) in [(1, 7, 16), (5, 50, 64), (16, 97, 576), (13, 3, 24), (4, 1, 8)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
            let expected = x.matmul(&w.t()?)?;
            let got = matmul_xwt(&x, &w)?;
            let diff = (got - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-3, "({m},{n},{k}): {diff}");
        }
        Ok(())
    }
}
