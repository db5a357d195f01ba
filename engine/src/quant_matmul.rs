//! `y = x·Wᵀ` with W kept in GGUF's blocks (Q4_1, Q4_0, Q8_0: exact, no requantization) and
//! x quantized on the fly to 8 bits per block of 32 values — the arithmetic of llama.cpp's
//! Q4_1 × Q8_1 and Q8_0 × Q8_0 dot products, with f32 block scales and sums.
//!
//! Why: batched decoding on a CPU is bound by multiply throughput, and AVX2's byte dot
//! product (`vpmaddubsw`: 32 multiply-adds per instruction, against 8 for an f32 FMA) does
//! more of it; the weights also take a quarter of the bytes of f32 (single-sequence decoding
//! is bound by memory bandwidth).
//!
//! Layout ([`PackedWeights`]): rows are taken 8 at a time ("groups"). Per group and block of
//! 32 columns, 256 bytes hold the values (one per byte) ordered as 8 steps of 4 columns × 8
//! rows × 4 bytes, then 8 scales `d` and 8 offsets `m` (value = d·q + m). One `vpmaddubsw` of
//! a 32-byte step against 4 activation bytes broadcast gives, per row, two partial sums in
//! 16-bit lanes, and one `vpmaddwd` then leaves each row's sum in its own 32-bit lane: the 8
//! outputs of a group come out as one vector, with no horizontal sums.
//! 4-bit values (0..=15, unsigned): with |q·x| ≤ 15·127, eight steps add up in 16 bits
//! without overflow. 8-bit values (Q8_0, signed, `m` = 0): `vpmaddubsw` takes one unsigned
//! operand, so it multiplies |q| by x carrying q's sign, and every step widens to 32 bits.
//!
//! Every output is computed by the same sequence of operations whatever the number of rows
//! of x or threads, so results do not depend on how a batch is put together.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use candle_core::quantized::{GgmlDType, QTensor};

use crate::error::Result;

/// Values per block (GGUF Q4_0/Q4_1 and the activation blocks).
pub const BLOCK: usize = 32;
/// Weight rows handled together.
const GROUP: usize = 8;
/// Bytes of one group's block of 4-bit values.
const GROUP_BLOCK_BYTES: usize = GROUP * BLOCK;

static VNNI_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the AVX-VNNI path off (plain AVX2 where the CPU has both), for side-by-side
/// benchmarks; results are the same either way.
pub fn set_vnni_enabled(enabled: bool) {
    VNNI_ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether [`PackedWeights::from_qtensor`] takes weights of this type.
pub fn supports(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0)
}

/// How the weight bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    /// 0..=15, value = d·q + m.
    Nibbles,
    /// Signed bytes, value = d·q.
    SignedBytes,
}

/// A `[rows, cols]` weight matrix in the kernel's layout (see the module docs).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    rows: usize,
    cols: usize,
    values: Values,
    /// `[groups][blocks][256]`.
    quants: Vec<u8>,
    /// `[groups][blocks][d × 8, m × 8]`.
    scales: Vec<f32>,
}

impl PackedWeights {
    /// Repacks GGUF Q4_0 / Q4_1 / Q8_0 blocks (`[rows, cols]`, `cols` a multiple of 32).
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        let (rows, cols) = q.shape().dims2()?;
        let data = q.data()?;
        let dtype = q.dtype();
        let (block_bytes, values) = match dtype {
            GgmlDType::Q4_1 => (20, Values::Nibbles),
            GgmlDType::Q4_0 => (18, Values::Nibbles),
            GgmlDType::Q8_0 => (34, Values::SignedBytes),
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "quant_matmul: unsupported weight type {other:?}"
                ))
                .into())
            }
        };
        if cols % BLOCK != 0 || data.len() != rows * cols / BLOCK * block_bytes {
            return Err(candle_core::Error::Msg(format!(
                "quant_matmul: [{rows}, {cols}] {dtype:?} has {} bytes",
                data.len()
            ))
            .into());
        }
        let blocks = cols / BLOCK;
        let mut w = Self::zeros(rows, cols, values);
        let mut block = [0u8; BLOCK];
        for row in 0..rows {
            for b in 0..blocks {
                let raw = &data[(row * blocks + b) * block_bytes..][..block_bytes];
                let d = f16_to_f32(u16::from_le_bytes([raw[0], raw[1]]));
                let m = match dtype {
                    GgmlDType::Q4_1 => f16_to_f32(u16::from_le_bytes([raw[2], raw[3]])),
                    GgmlDType::Q4_0 => -8.0 * d,
                    _ => 0.0,
                };
                if dtype == GgmlDType::Q8_0 {
                    block.copy_from_slice(&raw[2..34]);
                } else {
                    // Column j in the low nibble of byte j, column j + 16 in its high one.
                    for (j, &byte) in raw[block_bytes - BLOCK / 2..].iter().enumerate() {
                        block[j] = byte & 0x0F;
                        block[j + BLOCK / 2] = byte >> 4;
                    }
                }
                w.set_block(row, b, &block, d, m);
            }
        }
        Ok(w)
    }

    fn zeros(rows: usize, cols: usize, values: Values) -> Self {
        let (groups, blocks) = (rows.div_ceil(GROUP), cols / BLOCK);
        Self {
            rows,
            cols,
            values,
            quants: vec![0; groups * blocks * GROUP_BLOCK_BYTES],
            scales: vec![0.0; groups * blocks * 2 * GROUP],
        }
    }

    fn set_block(&mut self, row: usize, b: usize, values: &[u8; BLOCK], d: f32, m: f32) {
        let blocks = self.cols / BLOCK;
        let (g, lane) = (row / GROUP, row % GROUP);
        let at = (g * blocks + b) * GROUP_BLOCK_BYTES;
        for (c, &v) in values.iter().enumerate() {
            let (step, byte) = (c / 4, c % 4);
            self.quants[at + step * GROUP * 4 + lane * 4 + byte] = v;
        }
        let s = (g * blocks + b) * 2 * GROUP;
        self.scales[s + lane] = d;
        self.scales[s + GROUP + lane] = m;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.quants.len() + self.scales.len() * 4
    }

    fn value(&self, at: usize) -> i32 {
        match self.values {
            Values::Nibbles => i32::from(self.quants[at]),
            Values::SignedBytes => i32::from(self.quants[at] as i8),
        }
    }

    /// The f32 value of every weight, `[rows, cols]` (tests, reference paths).
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.cols / BLOCK;
        let mut out = vec![0f32; self.rows * self.cols];
        for row in 0..self.rows {
            let (g, lane) = (row / GROUP, row % GROUP);
            for b in 0..blocks {
                let at = (g * blocks + b) * GROUP_BLOCK_BYTES;
                let s = (g * blocks + b) * 2 * GROUP;
                let (d, m) = (self.scales[s + lane], self.scales[s + GROUP + lane]);
                for c in 0..BLOCK {
                    let q = self.value(at + (c / 4) * GROUP * 4 + lane * 4 + c % 4);
                    out[row * self.cols + b * BLOCK + c] = d * q as f32 + m;
                }
            }
        }
        out
    }
}

/// Rows of activations quantized to 8 bits per block of 32: `x ≈ scale_b · q`.
#[derive(Debug, Default)]
pub struct Q8Rows {
    rows: usize,
    cols: usize,
    quants: Vec<i8>,
    /// Per row and block: the scale.
    scales: Vec<f32>,
    /// Per row and block: scale · Σ q (the Q4_1 offsets' share of a dot product).
    scaled_sums: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `x` (`rows × cols`, row-major; `cols` a multiple of 32) into `self`,
    /// reusing its buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        assert!(
            cols.is_multiple_of(BLOCK) && x.len() >= rows * cols,
            "q8: {rows}×{cols} from {} values",
            x.len()
        );
        let blocks = cols / BLOCK;
        self.rows = rows;
        self.cols = cols;
        self.quants.resize(rows * cols, 0);
        self.scales.resize(rows * blocks, 0.0);
        self.scaled_sums.resize(rows * blocks, 0.0);
        let blocks_of = |(i, ((q, s), ss)): (usize, ((&mut [i8], &mut f32), &mut f32))| {
            let src: &[f32; BLOCK] = x[i * BLOCK..(i + 1) * BLOCK].try_into().expect("a block");
            let (scale, sum) = quantize_block(src, q.try_into().expect("a block"));
            *s = scale;
            *ss = scale * sum as f32;
        };
        let (quants, scales, sums) = (&mut self.quants, &mut self.scales, &mut self.scaled_sums);
        if rows * cols >= 1 << 15 {
            quants
                .par_chunks_mut(BLOCK)
                .zip(scales.par_iter_mut())
                .zip(sums.par_iter_mut())
                .enumerate()
                .with_min_len(256)
                .for_each(blocks_of);
        } else {
            quants
                .chunks_mut(BLOCK)
                .zip(scales.iter_mut())
                .zip(sums.iter_mut())
                .enumerate()
                .for_each(blocks_of);
        }
    }
}

/// One block: `q = round(x / scale)` with `scale = max|x| / 127`; returns the scale and Σ q.
fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature.
            return unsafe { avx2::quantize_block(x, q) };
        }
    }
    quantize_block_portable(x, q)
}

fn quantize_block_portable(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        // Ties to even, as the vector rounding of other kernels would do.
        let r = (v * inv).round_ties_even() as i32;
        *o = r as i8;
        sum += r;
    }
    (scale, sum)
}

/// `y[m, rows] = x[m, cols] · Wᵀ`, in parallel over groups of weight rows.
pub fn matmul(x: &Q8Rows, w: &PackedWeights, y: &mut [f32]) {
    assert_eq!(x.cols, w.cols, "quant matmul: x has {} columns, W {}", x.cols, w.cols);
    let (m, n) = (x.rows, w.rows);
    assert!(y.len() >= m * n);
    let groups = n.div_ceil(GROUP);
    let y_ptr = SendPtr(y.as_mut_ptr());
    // Enough groups per task that a task's weights outweigh scheduling, few enough that both
    // threads get several tasks (one may be descheduled on a shared machine).
    let per_task = (groups / 16).clamp(1, 64);
    (0..groups.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let y_ptr = &y_ptr;
        let g1 = ((task + 1) * per_task).min(groups);
        for g in task * per_task..g1 {
            // SAFETY: each group writes its own columns g·8..g·8+8 of y.
            unsafe { group_rows(x, w, g, y_ptr.0, m, n) };
        }
    });
}

struct SendPtr(*mut f32);
// SAFETY: only used to write disjoint columns from the pool's threads.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// All rows of x against weight group `g`.
unsafe fn group_rows(x: &Q8Rows, w: &PackedWeights, g: usize, y: *mut f32, m: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            if VNNI_ENABLED.load(Ordering::Relaxed)
                && std::arch::is_x86_feature_detected!("avxvnni")
            {
                avx2::group_rows_vnni(x, w, g, y, m, n);
            } else {
                avx2::group_rows(x, w, g, y, m, n);
            }
            return;
        }
    }
    portable_group_rows(x, w, g, y, m, n);
}

unsafe fn portable_group_rows(
    x: &Q8Rows,
    w: &PackedWeights,
    g: usize,
    y: *mut f32,
    m: usize,
    n: usize,
) {
    let blocks = w.cols / BLOCK;
    for r in 0..m {
        let mut acc = [0f32; GROUP];
        for b in 0..blocks {
            let sc = &w.scales[(g * blocks + b) * 2 * GROUP..][..2 * GROUP];
            let xq = &x.quants[r * x.cols + b * BLOCK..][..BLOCK];
            let (xs, xss) = (x.scales[r * blocks + b], x.scaled_sums[r * blocks + b]);
            for lane in 0..GROUP {
                let mut isum = 0i32;
                for (c, &xc) in xq.iter().enumerate() {
                    isum += w.value(
                        (g * blocks + b) * GROUP_BLOCK_BYTES
                            + (c / 4) * GROUP * 4
                            + lane * 4
                            + c % 4,
                    ) * i32::from(xc);
                }
                acc[lane] += isum as f32 * (sc[lane] * xs) + sc[GROUP + lane] * xss;
            }
        }
        for (lane, &v) in acc.iter().enumerate() {
            let col = g * GROUP + lane;
            if col < n {
                *y.add(r * n + col) = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{PackedWeights, Q8Rows, Values, BLOCK, GROUP, GROUP_BLOCK_BYTES};

    /// Activation rows per register tile.
    const TILE: usize = 4;

    /// [`super::quantize_block_portable`], bit for bit: the same scale and inverse, products
    /// rounded half to even.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
        m = _mm256_max_ps(
            m,
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
        let scale = amax / 127.0;
        let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        let round = |v: __m256| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v, inv),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        };
        let i = [round(v[0]), round(v[1]), round(v[2]), round(v[3])];
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        let total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01)));
        // Packing works within 128-bit halves: the 4-byte units come out as i0[0..4],
        // i1[0..4], i2[0..4], i3[0..4], i0[4..8], …; one permute puts them in order.
        let packed =
            _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, ordered);
        (scale, total)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group_rows(
        x: &Q8Rows,
        w: &PackedWeights,
        g: usize,
        y: *mut f32,
        m: usize,
        n: usize,
    ) {
        rows::<false>(x, w, g, y, m, n)
    }

    /// [`group_rows`] with AVX-VNNI's `vpdpbusd` (byte products summed straight into 32-bit
    /// lanes: one instruction for `vpmaddubsw` + `vpmaddwd` + add). The integer sums are
    /// the same, so the results are bit for bit those of [`group_rows`].
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub(super) unsafe fn group_rows_vnni(
        x: &Q8Rows,
        w: &PackedWeights,
        g: usize,
        y: *mut f32,
        m: usize,
        n: usize,
    ) {
        rows::<true>(x, w, g, y, m, n)
    }

    #[inline(always)]
    unsafe fn rows<const VNNI: bool>(
        x: &Q8Rows,
        w: &PackedWeights,
        g: usize,
        y: *mut f32,
        m: usize,
        n: usize,
    ) {
        let mut r = 0;
        while r < m {
            match (w.values, (m - r).min(TILE)) {
                (Values::Nibbles, 4) => tile::<4, VNNI>(x, w, g, y, n, r),
                (Values::Nibbles, 3) => tile::<3, VNNI>(x, w, g, y, n, r),
                (Values::Nibbles, 2) => tile::<2, VNNI>(x, w, g, y, n, r),
                (Values::Nibbles, _) => tile::<1, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, 4) => signed_tile::<4, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, 3) => signed_tile::<3, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, 2) => signed_tile::<2, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, _) => signed_tile::<1, VNNI>(x, w, g, y, n, r),
            }
            r += TILE;
        }
    }

    /// Signed 8-bit weights: |q| (unsigned) times x with q's sign, widened every step
    /// (two products of 128·127 fill 16 bits).
    #[inline(always)]
    unsafe fn signed_tile<const MX: usize, const VNNI: bool>(
        x: &Q8Rows,
        w: &PackedWeights,
        g: usize,
        y: *mut f32,
        n: usize,
        r0: usize,
    ) {
        let blocks = w.cols / BLOCK;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); MX];
        let wq = w.quants.as_ptr().add(g * blocks * GROUP_BLOCK_BYTES);
        let ws = w.scales.as_ptr().add(g * blocks * 2 * GROUP);
        let xq = x.quants.as_ptr().add(r0 * x.cols) as *const u8;
        let xs = x.scales.as_ptr().add(r0 * blocks);
        for b in 0..blocks {
            let wb = wq.add(b * GROUP_BLOCK_BYTES);
            let mut isum = [_mm256_setzero_si256(); MX];
            for step in 0..BLOCK / 4 {
                let wv = _mm256_loadu_si256(wb.add(step * 32) as *const __m256i);
                let magnitude = _mm256_sign_epi8(wv, wv);
                for (r, s) in isum.iter_mut().enumerate() {
                    let four = _mm256_set1_epi32(
                        (xq.add(r * x.cols + b * BLOCK + step * 4) as *const i32).read_unaligned(),
                    );
                    let signed = _mm256_sign_epi8(four, wv);
                    *s = if VNNI {
                        _mm256_dpbusd_avx_epi32(*s, magnitude, signed)
                    } else {
                        _mm256_add_epi32(
                            *s,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed), ones),
                        )
                    };
                }
            }
            let d = _mm256_loadu_ps(ws.add(b * 2 * GROUP));
            for (r, (a, s)) in acc.iter_mut().zip(&isum).enumerate() {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*xs.add(r * blocks + b)));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*s), scale, *a);
            }
        }
        store_tile(&acc, y, n, r0, g * GROUP);
    }

    #[inline(always)]
    unsafe fn store_tile<const MX: usize>(
        acc: &[__m256; MX],
        y: *mut f32,
        n: usize,
        r0: usize,
        col: usize,
    ) {
        for (r, a) in acc.iter().enumerate() {
            let out = y.add((r0 + r) * n + col);
            if col + GROUP <= n {
                _mm256_storeu_ps(out, *a);
            } else {
                let mut lanes = [0f32; GROUP];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
                for (i, &v) in lanes.iter().take(n - col).enumerate() {
                    *out.add(i) = v;
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn tile<const MX: usize, const VNNI: bool>(
        x: &Q8Rows,
        w: &PackedWeights,
        g: usize,
        y: *mut f32,
        n: usize,
        r0: usize,
    ) {
        let blocks = w.cols / BLOCK;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); MX];
        let wq = w.quants.as_ptr().add(g * blocks * GROUP_BLOCK_BYTES);
        let ws = w.scales.as_ptr().add(g * blocks * 2 * GROUP);
        let xq = x.quants.as_ptr().add(r0 * x.cols) as *const u8;
        let xs = x.scales.as_ptr().add(r0 * blocks);
        let xss = x.scaled_sums.as_ptr().add(r0 * blocks);
        for b in 0..blocks {
            let wb = wq.add(b * GROUP_BLOCK_BYTES);
            let mut isum = [_mm256_setzero_si256(); MX];
            for step in 0..BLOCK / 4 {
                let wv = _mm256_loadu_si256(wb.add(step * 32) as *const __m256i);
                for (r, s) in isum.iter_mut().enumerate() {
                    let four = _mm256_set1_epi32(
                        (xq.add(r * x.cols + b * BLOCK + step * 4) as *const i32).read_unaligned(),
                    );
                    // 32-bit sums with VNNI, 16-bit ones (widened once per block) without.
                    *s = if VNNI {
                        _mm256_dpbusd_avx_epi32(*s, wv, four)
                    } else {
                        _mm256_add_epi16(*s, _mm256_maddubs_epi16(wv, four))
                    };
                }
            }
            let d = _mm256_loadu_ps(ws.add(b * 2 * GROUP));
            let mins = _mm256_loadu_ps(ws.add(b * 2 * GROUP + GROUP));
            for (r, (a, s)) in acc.iter_mut().zip(&isum).enumerate() {
                let dots = _mm256_cvtepi32_ps(if VNNI { *s } else { _mm256_madd_epi16(*s, ones) });
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*xs.add(r * blocks + b)));
                *a = _mm256_fmadd_ps(dots, scale, *a);
                *a = _mm256_fmadd_ps(mins, _mm256_set1_ps(*xss.add(r * blocks + b)), *a);
            }
        }
        store_tile(&acc, y, n, r0, g * GROUP);
    }
}

/// IEEE half → single precision (GGUF block scales).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1F);
    let mant = u32::from(h & 0x3FF);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalize.
            let shift = mant.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((mant << shift) & 0x3FF) << 13
        }
        (0x1F, _) => sign | 0x7F80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn half_floats_convert_exactly() {
        for v in [0.0f32, 1.0, -2.5, 0.000_061_035_156, 65504.0, 5.960_464_5e-8, -3.051_757_8e-5] {
            let h = half_bits(v);
            assert_eq!(f16_to_f32(h), v, "{v}");
        }
    }

    /// Bits of an f32 that is exactly representable in f16.
    fn half_bits(v: f32) -> u16 {
        let b = v.to_bits();
        let sign = ((b >> 31) as u16) << 15;
        if v == 0.0 {
            return sign;
        }
        let exp = ((b >> 23) & 0xFF) as i32 - 127;
        let mant = b & 0x7F_FFFF;
        if exp < -14 {
            let m = ((mant | 0x80_0000) >> (-exp - 14 + 13)) as u16;
            return sign | m;
        }
        sign | (((exp + 15) as u16) << 10) | (mant >> 13) as u16
    }

    #[test]
    fn repacked_blocks_dequantize_like_candle() -> Result<()> {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q4_0, GgmlDType::Q8_0] {
            let t = Tensor::randn(0f32, 1.0, (13, 96), &Device::Cpu)?;
            let q = QTensor::quantize(&t, dtype)?;
            let expected = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let got = PackedWeights::from_qtensor(&q)?.dequantize();
            let diff = expected.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-6, "{dtype:?}: {diff}");
        }
        Ok(())
    }

    #[test]
    fn kernel_matches_f32_product_of_the_quantized_values() -> Result<()> {
        let shapes =
            [(1, 8, 32), (5, 13, 64), (9, 24, 576), (3, 1, 96), (7, 71, 160), (48, 40, 1536)];
        for (dtype, (m, n, k)) in [GgmlDType::Q4_1, GgmlDType::Q4_0, GgmlDType::Q8_0]
            .into_iter()
            .flat_map(|d| shapes.map(|s| (d, s)))
        {
            let t = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
            let w = PackedWeights::from_qtensor(&QTensor::quantize(&t, dtype)?)?;
            let x: Vec<f32> =
                Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?.flatten_all()?.to_vec1()?;
            let mut xq = Q8Rows::default();
            xq.quantize(&x, m, k);
            let mut y = vec![0f32; m * n];
            matmul(&xq, &w, &mut y);
            let mut portable = vec![0f32; m * n];
            let mut plain_avx2 = vec![0f32; m * n];
            for g in 0..n.div_ceil(GROUP) {
                unsafe { portable_group_rows(&xq, &w, g, portable.as_mut_ptr(), m, n) };
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    unsafe { avx2::group_rows(&xq, &w, g, plain_avx2.as_mut_ptr(), m, n) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                assert_eq!(
                    y, plain_avx2,
                    "{dtype:?} ({m},{n},{k}): the VNNI and AVX2 paths differ"
                );
            }
            // The exact product of the dequantized weights with the unquantized activations:
            // the only difference is x's 8-bit rounding.
            let wd = w.dequantize();
            for r in 0..m {
                for j in 0..n {
                    let exact: f32 = (0..k).map(|c| x[r * k + c] * wd[j * k + c]).sum();
                    let norm: f32 = (0..k).map(|c| (x[r * k + c] * wd[j * k + c]).abs()).sum();
                    let got = y[r * n + j];
                    assert!(
                        (got - exact).abs() <= 0.01 * norm + 1e-5,
                        "{dtype:?} ({m},{n},{k}) [{r},{j}]: {got} vs {exact}"
                    );
                    assert!(
                        (got - portable[r * n + j]).abs() <= 1e-5 * norm + 1e-6,
                        "{dtype:?}: avx2 vs portable"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn vector_quantization_equals_the_scalar_one() {
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 6.0
        };
        for case in 0..200 {
            let mut x = [0f32; BLOCK];
            x.iter_mut().for_each(|v| *v = next());
            if case == 0 {
                x = [0.0; BLOCK];
            } else if case == 1 {
                // Exact halves after scaling: ties go to even in both.
                x.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 - 15.5);
                x[0] = 127.0;
            }
            let (mut a, mut b) = ([0i8; BLOCK], [0i8; BLOCK]);
            assert_eq!(
                quantize_block(&x, &mut a),
                quantize_block_portable(&x, &mut b),
                "case {case}"
            );
            assert_eq!(a, b, "case {case}");
        }
    }

    #[test]
    fn rows_do_not_depend_on_the_batch_they_are_in() -> Result<()> {
        let (n, k) = (24, 128);
        let w = PackedWeights::from_qtensor(&QTensor::quantize(
            &Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?,
            GgmlDType::Q4_1,
        )?)?;
        let x: Vec<f32> =
            Tensor::randn(0f32, 1.0, (7, k), &Device::Cpu)?.flatten_all()?.to_vec1()?;
        let mut all = Q8Rows::default();
        all.quantize(&x, 7, k);
        let mut y_all = vec![0f32; 7 * n];
        matmul(&all, &w, &mut y_all);
        for r in 0..7 {
            let mut one = Q8Rows::default();
            one.quantize(&x[r * k..(r + 1) * k], 1, k);
            let mut y = vec![0f32; n];
            matmul(&one, &w, &mut y);
            assert_eq!(y, y_all[r * n..(r + 1) * n], "row {r}");
        }
        Ok(())
    }
}
