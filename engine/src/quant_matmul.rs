//! `y = x·Wᵀ` with W kept in GGUF's blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: exact, no requantization) and x quantized on the fly to 8 bits
//! per block of 32 values — the arithmetic of llama.cpp's Q4_1 × Q8_1 and Q8_0 × Q8_0 dot
//! products, with f32 block scales and sums.
//!
//! Why: batched decoding on a CPU is bound by multiply throughput, and AVX2's byte dot
//! product (`vpmaddubsw`: 32 multiply-adds per instruction, against 8 for an f32 FMA) does
//! more of it; the weights also take a quarter of the bytes of f32 (single-sequence decoding
//! is bound by memory bandwidth).
//!
//! Layout ([`PackedWeights`]): rows are taken 8 at a time ("groups"). Per group and block of
//! 32 columns, the values are ordered as 8 steps of 4 columns × 8 rows × 4 bytes: 256
//! bytes, one value per byte, or for values of at most 4 bits 128 bytes, steps 2t and 2t + 1
//! sharing 32 bytes as low and high nibbles (6 instead of 10 bits per weight with the
//! scales: single-row products read less, ~15 % faster; a mask and a shift per step cost
//! nothing measurable at 16 rows). Then per row two f32 scales: `d` and `m` (value =
//! d·q + m), or for the `…Halves` kinds one `d` per 16 columns. One `vpmaddubsw` of a
//! 32-byte step against 4 activation bytes broadcast gives, per row, two partial sums in
//! 16-bit lanes, and one `vpmaddwd` then leaves each row's sum in its own 32-bit lane: the
//! 8 outputs of a group come out as one vector, with no horizontal sums. Every group has
//! one kind of values, so matrices of different types can be stacked (Q/K/V of a Q4_K_M
//! file, where V is often Q6_K) as long as each changes type on a multiple of 8 rows.
//!
//! Kinds of values, and why 16-bit sums are safe (|x| ≤ 127 after quantization; a 16-bit
//! lane adds two products per `vpmaddubsw`):
//! - 4-bit, unsigned 0..=15 (Q4_0, Q4_1, Q4_K): eight steps give at most 8·2·15·127 =
//!   30480, so a whole block sums in 16 bits.
//! - 5-bit, unsigned 0..=31 (Q5_0, Q5_1, Q5_K): eight steps could reach 63 000; four give
//!   at most 4·2·31·127 = 31 496, so sums widen to 32 bits every 4 steps.
//! - 8-bit signed, one scale per 32 (Q8_0, `m` = 0): `vpmaddubsw` takes one unsigned
//!   operand, so it multiplies |q| by x carrying q's sign, and every step widens to 32 bits.
//! - one scale per 16 columns, stored unsigned with an offset (Q6_K: 0..=63, value
//!   d·(q − 32); Q3_K: 0..=7, value d·(q − 4)): unsigned products as for 4-bit values,
//!   then per half-block d·(Σ q·x − offset·Σ x), with x's sums per 16 values kept by
//!   [`Q8Rows`]. Two steps of 6-bit values give at most 2·2·63·127 = 32 004, so they widen
//!   every 2 steps; 3-bit ones once per half-block. (Stored signed they would need the
//!   8-bit path's sign trick, one more instruction per step and row: for Q6_K without
//!   VNNI that costs what the extra widening does, for Q3_K and with VNNI it costs more;
//!   measured, Q3_K went from 120 to 142 GFLOP/s at 16 rows and Q6_K stayed at ~128.)
//!   Q2_K (0..=3) has a d and an m per 16 columns: d·Σ q·x + m·Σ x per half-block, its
//!   blocks carrying four scales per row instead of two.
//!
//! The k-quants map exactly: a Q4_K/Q5_K super-block of 256 values has f16 `d`, `dmin` and
//! per 32 values 6-bit `sc`, `m`, with value = (d·sc)·q − (dmin·m); d·sc and dmin·m are
//! exact in f32 (11-bit × 6-bit mantissas), so they are this layout's `d` and `−m` with
//! the same q, and dequantizing gives candle's values bit for bit. Q6_K's value is
//! (d·sc)·(q − 32) with an 8-bit signed `sc` per 16 values, Q3_K's (d·(sc − 32))·(q − 4)
//! with a 6-bit `sc` per 16 and q in 0..=7: again exact products, one per half-block, and
//! dequantizing gives candle's values bit for bit too; Q2_K's is (d·sc)·q − (dmin·m) with
//! 4-bit `sc` and `m` per 16 values, likewise.
//! Q5_0/Q5_1 (llama.cpp's stand-ins for Q4_K/Q5_K in matrices whose rows are not a multiple
//! of 256 values, such as 576-wide ones) are Q4_0/Q4_1 with a fifth bit.
//! Activations are rounded to 8 bits per 32 values as for the other types (llama.cpp
//! quantizes them per 256, Q8_K): the results differ from an f32 product of the weights by
//! that rounding only.
//!
//! Every output is computed by the same sequence of operations whatever the number of rows
//! of x or threads, so results do not depend on how a batch is put together.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use candle_core::quantized::{GgmlDType, QTensor};

use crate::error::Result;

/// Values per block (GGUF Q4_0/Q4_1 and the activation blocks).
pub const BLOCK: usize = 32;
/// Values per k-quant super-block.
const SUPER_BLOCK: usize = 256;
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
    values_of(dtype).is_some()
}

/// How the weight bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    /// 0..=15, value = d·q + m.
    Nibbles,
    /// 0..=31, value = d·q + m.
    FiveBits,
    /// Signed bytes, value = d·q.
    SignedBytes,
    /// 0..=63, value = d·(q − 32) with one d for columns 0..16 of a block, one for 16..32.
    SixBitHalves,
    /// 0..=7, value = d·(q − 4), one d per 16 columns.
    ThreeBitHalves,
    /// 0..=3, value = d·q + m, one d and one m per 16 columns.
    TwoBitHalves,
}

impl Values {
    /// What the stored value is offset by (halves only).
    fn offset(self) -> i32 {
        match self {
            Values::SixBitHalves => 32,
            Values::ThreeBitHalves => 4,
            _ => 0,
        }
    }

    fn halves(self) -> bool {
        matches!(self, Values::SixBitHalves | Values::ThreeBitHalves | Values::TwoBitHalves)
    }

    /// Whether two values share a byte (values of at most 4 bits).
    fn nibbles(self) -> bool {
        matches!(self, Values::Nibbles | Values::ThreeBitHalves | Values::TwoBitHalves)
    }

    /// f32 scales per row and block: d and m, d per half-block, or (Q2_K) d and m per half.
    fn scales(self) -> usize {
        if self == Values::TwoBitHalves {
            4
        } else {
            2
        }
    }

    /// Bytes of one group's block of 32 values.
    fn block_bytes(self) -> usize {
        if self.nibbles() {
            GROUP_BLOCK_BYTES / 2
        } else {
            GROUP_BLOCK_BYTES
        }
    }
}

fn values_of(dtype: GgmlDType) -> Option<Values> {
    Some(match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K => Values::Nibbles,
        GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q5K => Values::FiveBits,
        GgmlDType::Q8_0 => Values::SignedBytes,
        GgmlDType::Q6K => Values::SixBitHalves,
        GgmlDType::Q3K => Values::ThreeBitHalves,
        GgmlDType::Q2K => Values::TwoBitHalves,
        _ => return None,
    })
}

/// A `[rows, cols]` weight matrix in the kernel's layout (see the module docs).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    rows: usize,
    cols: usize,
    /// Per group of 8 rows.
    kinds: Vec<Values>,
    /// Per group, where its values start in `quants` and its scales in `scales`.
    group_at: Vec<(usize, usize)>,
    /// `[groups][blocks][256 or 128]`.
    quants: Vec<u8>,
    /// `[groups][blocks][d × 8, m × 8]` (Q2_K: `[d × 8, d × 8, m × 8, m × 8]` for columns
    /// 0..16 and 16..32; other halves: `[d of columns 0..16 × 8, d of
    /// columns 16..32 × 8]`).
    scales: Vec<f32>,
}

/// One row's block of 32 values as the layout stores it: the values (as bytes; signed ones
/// two's complement) and the block's scales (the kind's first [`Values::scales`]).
type RowBlock = ([u8; BLOCK], [f32; 4]);

impl PackedWeights {
    /// Repacks GGUF blocks (`[rows, cols]`) of a type [`supports`] takes.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        Self::stacked(&[q])
    }

    /// Whether [`PackedWeights::stacked`] takes these matrices: supported types, the same
    /// columns, and no group of 8 rows holding two kinds of values.
    pub fn can_stack(parts: &[&QTensor]) -> bool {
        Self::kinds(parts).is_ok()
    }

    /// Per group, the kind of its values.
    fn kinds(parts: &[&QTensor]) -> Result<(usize, usize, Vec<Values>)> {
        let fail = |why: String| -> crate::error::EngineError {
            candle_core::Error::Msg(format!("quant_matmul: {why}")).into()
        };
        let mut cols = None;
        let mut row_kinds = Vec::new();
        for q in parts {
            let (rows, c) = q.shape().dims2()?;
            let Some(kind) = values_of(q.dtype()) else {
                return Err(fail(format!("unsupported weight type {:?}", q.dtype())));
            };
            if *cols.get_or_insert(c) != c {
                return Err(fail(format!("stacked matrices of {c} and {cols:?} columns")));
            }
            row_kinds.extend(std::iter::repeat_n(kind, rows));
        }
        let mut kinds = Vec::with_capacity(row_kinds.len().div_ceil(GROUP));
        for group in row_kinds.chunks(GROUP) {
            if group.iter().any(|&k| k != group[0]) {
                return Err(fail("two kinds of values in one group of 8 rows".into()));
            }
            kinds.push(group[0]);
        }
        Ok((row_kinds.len(), cols.unwrap_or(0), kinds))
    }

    /// Several matrices with the same columns, one under the other (see [`Self::can_stack`]).
    pub fn stacked(parts: &[&QTensor]) -> Result<Self> {
        let (rows, cols, kinds) = Self::kinds(parts)?;
        let mut w = Self::zeros(rows, cols, kinds);
        let mut row0 = 0;
        for q in parts {
            let (rows, _) = q.shape().dims2()?;
            let data = q.data()?;
            let dtype = q.dtype();
            let per_block = if is_k_quant(dtype) { SUPER_BLOCK } else { BLOCK };
            if cols % per_block != 0
                || data.len() != rows * cols / per_block * dtype.type_size()
                || dtype.block_size() != per_block
            {
                return Err(candle_core::Error::Msg(format!(
                    "quant_matmul: [{rows}, {cols}] {dtype:?} has {} bytes",
                    data.len()
                ))
                .into());
            }
            let row_bytes = data.len() / rows.max(1);
            let mut blocks = Vec::with_capacity(cols / BLOCK);
            for row in 0..rows {
                blocks.clear();
                unpack_row(dtype, &data[row * row_bytes..][..row_bytes], &mut blocks);
                for (b, (values, scales)) in blocks.iter().enumerate() {
                    w.set_block(row0 + row, b, values, scales);
                }
            }
            row0 += rows;
        }
        Ok(w)
    }

    fn zeros(rows: usize, cols: usize, kinds: Vec<Values>) -> Self {
        let (groups, blocks) = (rows.div_ceil(GROUP), cols / BLOCK);
        let mut group_at = Vec::with_capacity(groups);
        let (mut bytes, mut scales) = (0, 0);
        for kind in &kinds {
            group_at.push((bytes, scales));
            bytes += blocks * kind.block_bytes();
            scales += blocks * kind.scales() * GROUP;
        }
        Self { rows, cols, kinds, group_at, quants: vec![0; bytes], scales: vec![0.0; scales] }
    }

    /// Where column `c` of block `b` of row `lane` of group `g` is: its byte, and the shift
    /// of its bits there. Steps of 4 columns × 8 rows take 32 bytes; 4-bit values hold steps
    /// 2t (low nibbles) and 2t + 1 (high ones) in the same 32 bytes.
    fn locate(&self, g: usize, b: usize, lane: usize, c: usize) -> (usize, u32) {
        let kind = self.kinds[g];
        let (step, byte) = (c / 4, lane * 4 + c % 4);
        let at = self.group_at[g].0 + b * kind.block_bytes();
        if kind.nibbles() {
            (at + step / 2 * 32 + byte, 4 * (step % 2) as u32)
        } else {
            (at + step * 32 + byte, 0)
        }
    }

    /// Where block `b`'s scales of group `g` start in `scales`.
    fn scales_at(&self, g: usize, b: usize) -> usize {
        self.group_at[g].1 + b * self.kinds[g].scales() * GROUP
    }

    fn set_block(&mut self, row: usize, b: usize, values: &[u8; BLOCK], scales: &[f32; 4]) {
        let (g, lane) = (row / GROUP, row % GROUP);
        for (c, &v) in values.iter().enumerate() {
            let (at, shift) = self.locate(g, b, lane, c);
            self.quants[at] |= v << shift;
        }
        let s = self.scales_at(g, b);
        for (i, &v) in scales[..self.kinds[g].scales()].iter().enumerate() {
            self.scales[s + i * GROUP + lane] = v;
        }
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

    /// The stored integer of column `c` of block `b` of row `lane` of group `g`.
    fn value(&self, g: usize, b: usize, lane: usize, c: usize) -> i32 {
        let (at, shift) = self.locate(g, b, lane, c);
        match self.kinds[g] {
            Values::SignedBytes => i32::from(self.quants[at] as i8),
            kind if kind.nibbles() => i32::from((self.quants[at] >> shift) & 0x0F),
            _ => i32::from(self.quants[at]),
        }
    }

    /// The f32 value of every weight, `[rows, cols]` (tests, reference paths).
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.cols / BLOCK;
        let mut out = vec![0f32; self.rows * self.cols];
        for row in 0..self.rows {
            let (g, lane) = (row / GROUP, row % GROUP);
            for b in 0..blocks {
                let s = self.scales_at(g, b);
                let scale = |i: usize| self.scales[s + i * GROUP + lane];
                for c in 0..BLOCK {
                    let q = self.value(g, b, lane, c);
                    let kind = self.kinds[g];
                    let h = c / (BLOCK / 2);
                    out[row * self.cols + b * BLOCK + c] = match kind {
                        Values::TwoBitHalves => scale(h) * q as f32 + scale(2 + h),
                        _ if kind.halves() => scale(h) * (q - kind.offset()) as f32,
                        _ => scale(0) * q as f32 + scale(1),
                    };
                }
            }
        }
        out
    }
}

/// One row of GGUF blocks (`raw`) as the layout's blocks of 32, appended to `out`.
fn unpack_row(dtype: GgmlDType, raw: &[u8], out: &mut Vec<RowBlock>) {
    let half = |at: usize| f16_to_f32(u16::from_le_bytes([raw[at], raw[at + 1]]));
    let mut values = [0u8; BLOCK];
    match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_0 => {
            // d (f16), [Q4_1, Q5_1: m (f16),] [Q5_0, Q5_1: 32 fifth bits (u32),] values.
            let block_bytes = dtype.type_size();
            for (i, block) in raw.chunks_exact(block_bytes).enumerate() {
                let at = i * block_bytes;
                let d = half(at);
                let m = match dtype {
                    GgmlDType::Q4_1 | GgmlDType::Q5_1 => half(at + 2),
                    GgmlDType::Q4_0 => -8.0 * d,
                    GgmlDType::Q5_0 => -16.0 * d,
                    _ => 0.0,
                };
                if dtype == GgmlDType::Q8_0 {
                    values.copy_from_slice(&block[2..34]);
                } else {
                    // Column j in the low nibble of byte j, column j + 16 in its high one;
                    // Q5_0/Q5_1: bit 4 of column j is bit j of the u32 before the nibbles.
                    let high = match dtype {
                        GgmlDType::Q5_0 | GgmlDType::Q5_1 => u32::from_le_bytes(
                            block[block_bytes - 20..block_bytes - 16].try_into().expect("4 bytes"),
                        ),
                        _ => 0,
                    };
                    for (j, &byte) in block[block_bytes - BLOCK / 2..].iter().enumerate() {
                        let bit = |c: usize| ((high >> c) as u8 & 1) << 4;
                        values[j] = byte & 0x0F | bit(j);
                        values[j + BLOCK / 2] = byte >> 4 | bit(j + BLOCK / 2);
                    }
                }
                out.push((values, [d, m, 0.0, 0.0]));
            }
        }
        GgmlDType::Q4K | GgmlDType::Q5K => {
            // d, dmin (f16), 12 bytes of 6-bit scales and mins, [Q5_K: 32 bytes of 5th
            // bits,] 128 bytes of nibbles: sub-block j (32 values) in the low (j even) or
            // high nibbles of bytes 32·(j/2)..+32; Q5_K's bit 4 of value l of sub-block j
            // is bit j of high byte l.
            let five = dtype == GgmlDType::Q5K;
            for (i, sb) in raw.chunks_exact(dtype.type_size()).enumerate() {
                let at = i * dtype.type_size();
                let (d, dmin) = (half(at), half(at + 2));
                let scales = &sb[4..16];
                let (high, nibbles) =
                    if five { (&sb[16..48], &sb[48..]) } else { (&sb[..0], &sb[16..]) };
                for j in 0..SUPER_BLOCK / BLOCK {
                    let (sc, m) = k4_scale_min(scales, j);
                    for (l, v) in values.iter_mut().enumerate() {
                        *v = (nibbles[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
                        if five {
                            *v |= ((high[l] >> j) & 1) << 4;
                        }
                    }
                    out.push((values, [d * f32::from(sc), -(dmin * f32::from(m)), 0.0, 0.0]));
                }
            }
        }
        GgmlDType::Q6K => {
            // 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed scales, d (f16).
            // Per 128 values (n): the 32-value block k takes low nibbles from bytes
            // 64n + 32·(k%2).. (low nibble for k < 2), 2-bit pairs from bits 2k of bytes
            // 32n.., and scales 8n + 2k (first 16 values) and 8n + 2k + 1.
            for (i, sb) in raw.chunks_exact(dtype.type_size()).enumerate() {
                let d = half(i * dtype.type_size() + 208);
                let (low, high, scales) = (&sb[..128], &sb[128..192], &sb[192..208]);
                for b in 0..SUPER_BLOCK / BLOCK {
                    let (n, k) = (b / 4, b % 4);
                    for (l, v) in values.iter_mut().enumerate() {
                        let lo = (low[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
                        let hi = (high[32 * n + l] >> (2 * k)) & 3;
                        // Stored as is: 0..=63, the value is d·(q − 32).
                        *v = lo | hi << 4;
                    }
                    let sc = |s: usize| d * f32::from(scales[s] as i8);
                    out.push((values, [sc(8 * n + 2 * k), sc(8 * n + 2 * k + 1), 0.0, 0.0]));
                }
            }
        }
        GgmlDType::Q3K => {
            // 32 bytes of high bits, 64 of 2-bit values, 12 of 6-bit scales, d (f16). The
            // 32-value block b = 4c + s takes bits 2s of bytes 32c.. and bit b of the high
            // bytes (value = low − 4 where that bit is clear); scales 2b and 2b + 1, each
            // stored as sc + 32.
            for (i, sb) in raw.chunks_exact(dtype.type_size()).enumerate() {
                let d = half(i * dtype.type_size() + 108);
                let (high, low, packed) = (&sb[..32], &sb[32..96], &sb[96..108]);
                for b in 0..SUPER_BLOCK / BLOCK {
                    let (c, s) = (b / 4, b % 4);
                    for (l, v) in values.iter_mut().enumerate() {
                        let q = (low[32 * c + l] >> (2 * s)) & 3;
                        // Stored as q + 4 (0..=7): the value is d·(q + 4 − 4).
                        *v = q + if high[l] >> b & 1 == 1 { 4 } else { 0 };
                    }
                    let sc = |j: usize| d * f32::from(k3_scale(packed, j) - 32);
                    out.push((values, [sc(2 * b), sc(2 * b + 1), 0.0, 0.0]));
                }
            }
        }
        GgmlDType::Q2K => {
            // 16 bytes of scales (a 4-bit scale, a 4-bit min above it) for 16 values each,
            // 64 of 2-bit values, d and dmin (f16). The 32-value block b = 4c + s takes bits
            // 2s of bytes 32c.., scales 2b (first 16 values) and 2b + 1.
            for (i, sb) in raw.chunks_exact(dtype.type_size()).enumerate() {
                let at = i * dtype.type_size();
                let (d, dmin) = (half(at + 80), half(at + 82));
                let (scales, low) = (&sb[..16], &sb[16..80]);
                for b in 0..SUPER_BLOCK / BLOCK {
                    let (c, s) = (b / 4, b % 4);
                    for (l, v) in values.iter_mut().enumerate() {
                        *v = (low[32 * c + l] >> (2 * s)) & 3;
                    }
                    let sc = |j: usize| d * f32::from(scales[j] & 0x0F);
                    let m = |j: usize| -(dmin * f32::from(scales[j] >> 4));
                    out.push((values, [sc(2 * b), sc(2 * b + 1), m(2 * b), m(2 * b + 1)]));
                }
            }
        }
        other => unreachable!("checked by values_of: {other:?}"),
    }
}

/// Types whose blocks hold 256 values.
fn is_k_quant(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
    )
}

/// Q4_K/Q5_K: sub-block `j`'s 6-bit scale and min from the 12 packed bytes (j < 4: the
/// low 6 bits of bytes j and j + 4; else a nibble of byte j + 4 and the top 2 bits of
/// bytes j − 4 and j).
fn k4_scale_min(packed: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// Q3_K: scale `j` (of 16; 0..=63, offset by 32) from the 12 packed bytes: its low 4 bits
/// are a nibble of byte j % 8 (high nibble for j ≥ 8), its top 2 bits bits 2·(j/4) of
/// byte 8 + j % 4.
fn k3_scale(packed: &[u8], j: usize) -> i8 {
    let low = (packed[j % 8] >> (4 * (j / 8))) & 0x0F;
    let top = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | top << 4) as i8
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
    /// Per row and block: scale · Σ q over columns 0..16 and 16..32 (the offsets of the
    /// weights with one scale per 16 columns).
    half_sums: Vec<[f32; 2]>,
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
        self.half_sums.resize(rows * blocks, [0.0; 2]);
        type Item<'a> = (usize, (((&'a mut [i8], &'a mut f32), &'a mut f32), &'a mut [f32; 2]));
        let blocks_of = |(i, (((q, s), ss), hs)): Item| {
            let src: &[f32; BLOCK] = x[i * BLOCK..(i + 1) * BLOCK].try_into().expect("a block");
            let (scale, [lo, hi]) = quantize_block(src, q.try_into().expect("a block"));
            *s = scale;
            *ss = scale * (lo + hi) as f32;
            *hs = [scale * lo as f32, scale * hi as f32];
        };
        let (quants, scales, sums, halves) =
            (&mut self.quants, &mut self.scales, &mut self.scaled_sums, &mut self.half_sums);
        if rows * cols >= 1 << 15 {
            quants
                .par_chunks_mut(BLOCK)
                .zip(scales.par_iter_mut())
                .zip(sums.par_iter_mut())
                .zip(halves.par_iter_mut())
                .enumerate()
                .with_min_len(256)
                .for_each(blocks_of);
        } else {
            quants
                .chunks_mut(BLOCK)
                .zip(scales.iter_mut())
                .zip(sums.iter_mut())
                .zip(halves.iter_mut())
                .enumerate()
                .for_each(blocks_of);
        }
    }
}

/// One block: `q = round(x / scale)` with `scale = max|x| / 127`; returns the scale and Σ q
/// over each half of the block.
fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, [i32; 2]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature.
            return unsafe { avx2::quantize_block(x, q) };
        }
    }
    quantize_block_portable(x, q)
}

fn quantize_block_portable(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, [i32; 2]) {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut sums = [0i32; 2];
    for (c, (o, &v)) in q.iter_mut().zip(x).enumerate() {
        // Ties to even, as the vector rounding of other kernels would do.
        let r = (v * inv).round_ties_even() as i32;
        *o = r as i8;
        sums[c / 16] += r;
    }
    (scale, sums)
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
    let kind = w.kinds[g];
    for r in 0..m {
        let mut acc = [0f32; GROUP];
        for b in 0..blocks {
            let sc = &w.scales[w.scales_at(g, b)..][..kind.scales() * GROUP];
            let xq = &x.quants[r * x.cols + b * BLOCK..][..BLOCK];
            let (xs, xss) = (x.scales[r * blocks + b], x.scaled_sums[r * blocks + b]);
            for lane in 0..GROUP {
                // Integer sums of columns 0..16 and 16..32.
                let mut isum = [0i32; 2];
                for (c, &xc) in xq.iter().enumerate() {
                    isum[c / 16] += w.value(g, b, lane, c) * i32::from(xc);
                }
                if kind.halves() {
                    let hs = x.half_sums[r * blocks + b];
                    let off = -kind.offset() as f32;
                    for h in 0..2 {
                        let d = sc[h * GROUP + lane];
                        acc[lane] += isum[h] as f32 * (d * xs);
                        if kind == Values::TwoBitHalves {
                            acc[lane] += sc[(2 + h) * GROUP + lane] * hs[h];
                        } else {
                            acc[lane] += d * (off * hs[h]);
                        }
                    }
                } else {
                    acc[lane] +=
                        (isum[0] + isum[1]) as f32 * (sc[lane] * xs) + sc[GROUP + lane] * xss;
                }
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

    use super::{PackedWeights, Q8Rows, Values, BLOCK, GROUP};

    /// Activation rows per register tile.
    const TILE: usize = 4;

    /// [`super::quantize_block_portable`], bit for bit: the same scale and inverse, products
    /// rounded half to even.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, [i32; 2]) {
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
        let total = |sum: __m256i| {
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
            let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
            _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01)))
        };
        let sums = [total(_mm256_add_epi32(i[0], i[1])), total(_mm256_add_epi32(i[2], i[3]))];
        // Packing works within 128-bit halves: the 4-byte units come out as i0[0..4],
        // i1[0..4], i2[0..4], i3[0..4], i0[4..8], …; one permute puts them in order.
        let packed =
            _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, ordered);
        (scale, sums)
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
            match (w.kinds[g], (m - r).min(TILE)) {
                (Values::Nibbles, 4) => tile::<4, VNNI, 8, true>(x, w, g, y, n, r),
                (Values::Nibbles, 3) => tile::<3, VNNI, 8, true>(x, w, g, y, n, r),
                (Values::Nibbles, 2) => tile::<2, VNNI, 8, true>(x, w, g, y, n, r),
                (Values::Nibbles, _) => tile::<1, VNNI, 8, true>(x, w, g, y, n, r),
                (Values::FiveBits, 4) => tile::<4, VNNI, 4, false>(x, w, g, y, n, r),
                (Values::FiveBits, 3) => tile::<3, VNNI, 4, false>(x, w, g, y, n, r),
                (Values::FiveBits, 2) => tile::<2, VNNI, 4, false>(x, w, g, y, n, r),
                (Values::FiveBits, _) => tile::<1, VNNI, 4, false>(x, w, g, y, n, r),
                (Values::SignedBytes, 4) => signed_tile::<4, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, 3) => signed_tile::<3, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, 2) => signed_tile::<2, VNNI>(x, w, g, y, n, r),
                (Values::SignedBytes, _) => signed_tile::<1, VNNI>(x, w, g, y, n, r),
                (Values::SixBitHalves, 4) => {
                    halves_tile::<4, VNNI, 2, 32, false, false>(x, w, g, y, n, r)
                }
                (Values::SixBitHalves, 3) => {
                    halves_tile::<3, VNNI, 2, 32, false, false>(x, w, g, y, n, r)
                }
                (Values::SixBitHalves, 2) => {
                    halves_tile::<2, VNNI, 2, 32, false, false>(x, w, g, y, n, r)
                }
                (Values::SixBitHalves, _) => {
                    halves_tile::<1, VNNI, 2, 32, false, false>(x, w, g, y, n, r)
                }
                (Values::ThreeBitHalves, 4) => {
                    halves_tile::<4, VNNI, 4, 4, true, false>(x, w, g, y, n, r)
                }
                (Values::TwoBitHalves, 4) => {
                    halves_tile::<4, VNNI, 4, 0, true, true>(x, w, g, y, n, r)
                }
                (Values::ThreeBitHalves, 3) => {
                    halves_tile::<3, VNNI, 4, 4, true, false>(x, w, g, y, n, r)
                }
                (Values::TwoBitHalves, 3) => {
                    halves_tile::<3, VNNI, 4, 0, true, true>(x, w, g, y, n, r)
                }
                (Values::ThreeBitHalves, 2) => {
                    halves_tile::<2, VNNI, 4, 4, true, false>(x, w, g, y, n, r)
                }
                (Values::TwoBitHalves, 2) => {
                    halves_tile::<2, VNNI, 4, 0, true, true>(x, w, g, y, n, r)
                }
                (Values::ThreeBitHalves, _) => {
                    halves_tile::<1, VNNI, 4, 4, true, false>(x, w, g, y, n, r)
                }
                (Values::TwoBitHalves, _) => {
                    halves_tile::<1, VNNI, 4, 0, true, true>(x, w, g, y, n, r)
                }
            }
            r += TILE;
        }
    }

    /// Weights with one scale per 16 columns, stored offset by `OFF` (Q6_K: 0..=63 and 32,
    /// Q3_K: 0..=7 and 4): unsigned products as in [`tile`], summed in 16 bits for `SPAN`
    /// steps (2 for 6-bit values: 2·2·63·127 = 32 004; 4 for 3-bit ones), then per half-block
    /// its scale d times (Σ q·x − OFF·Σ x).
    #[inline(always)]
    unsafe fn halves_tile<
        const MX: usize,
        const VNNI: bool,
        const SPAN: usize,
        const OFF: i32,
        const NIB: bool,
        const MINS: bool,
    >(
        x: &Q8Rows,
        w: &PackedWeights,
        g: usize,
        y: *mut f32,
        n: usize,
        r0: usize,
    ) {
        let blocks = w.cols / BLOCK;
        let ones = _mm256_set1_epi16(1);
        let off = -OFF as f32;
        let mut acc = [_mm256_setzero_ps(); MX];
        let wq = w.quants.as_ptr().add(w.group_at[g].0);
        let ws = w.scales.as_ptr().add(w.group_at[g].1);
        let xq = x.quants.as_ptr().add(r0 * x.cols) as *const u8;
        let xs = x.scales.as_ptr().add(r0 * blocks);
        let hs = x.half_sums.as_ptr().add(r0 * blocks);
        for b in 0..blocks {
            let wb = wq.add(b * w.kinds[g].block_bytes());
            for half in 0..2 {
                let mut isum = [_mm256_setzero_si256(); MX];
                for span in 0..4 / SPAN {
                    let mut part = [_mm256_setzero_si256(); MX];
                    let first = half * 4 + span * SPAN;
                    for step in first..first + SPAN {
                        let wv = step_values::<NIB>(wb, step);
                        for (r, p) in part.iter_mut().enumerate() {
                            let four = _mm256_set1_epi32(
                                (xq.add(r * x.cols + b * BLOCK + step * 4) as *const i32)
                                    .read_unaligned(),
                            );
                            *p = if VNNI {
                                _mm256_dpbusd_avx_epi32(*p, wv, four)
                            } else {
                                _mm256_add_epi16(*p, _mm256_maddubs_epi16(wv, four))
                            };
                        }
                    }
                    for (s, p) in isum.iter_mut().zip(&part) {
                        *s = _mm256_add_epi32(
                            *s,
                            if VNNI { *p } else { _mm256_madd_epi16(*p, ones) },
                        );
                    }
                }
                let per_block = if MINS { 4 * GROUP } else { 2 * GROUP };
                let d = _mm256_loadu_ps(ws.add(b * per_block + half * GROUP));
                // (Only Q2_K's blocks have mins: the others end before.)
                let mins = if MINS {
                    _mm256_loadu_ps(ws.add(b * per_block + (2 + half) * GROUP))
                } else {
                    _mm256_setzero_ps()
                };
                for (r, (a, s)) in acc.iter_mut().zip(&isum).enumerate() {
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(*xs.add(r * blocks + b)));
                    *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*s), scale, *a);
                    let sum = (*hs.add(r * blocks + b))[half];
                    *a = if MINS {
                        _mm256_fmadd_ps(mins, _mm256_set1_ps(sum), *a)
                    } else {
                        _mm256_fmadd_ps(d, _mm256_set1_ps(off * sum), *a)
                    };
                }
            }
        }
        store_tile(&acc, y, n, r0, g * GROUP);
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
        let wq = w.quants.as_ptr().add(w.group_at[g].0);
        let ws = w.scales.as_ptr().add(w.group_at[g].1);
        let xq = x.quants.as_ptr().add(r0 * x.cols) as *const u8;
        let xs = x.scales.as_ptr().add(r0 * blocks);
        for b in 0..blocks {
            let wb = wq.add(b * w.kinds[g].block_bytes());
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

    /// The 32 bytes of values of `step` (4 columns × 8 rows) of the block at `wb`; with `NIB`,
    /// a nibble of the 32 bytes shared by steps 2t and 2t + 1.
    #[inline(always)]
    unsafe fn step_values<const NIB: bool>(wb: *const u8, step: usize) -> __m256i {
        if NIB {
            let v = _mm256_loadu_si256(wb.add(step / 2 * 32) as *const __m256i);
            let v = if step % 2 == 1 { _mm256_srli_epi16(v, 4) } else { v };
            _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
        } else {
            _mm256_loadu_si256(wb.add(step * 32) as *const __m256i)
        }
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

    /// Unsigned weights (value = d·q + m); without VNNI, products sum in 16 bits for
    /// `SPAN` steps before widening (8 for 4-bit values, 4 for 5-bit ones: module docs).
    #[inline(always)]
    unsafe fn tile<const MX: usize, const VNNI: bool, const SPAN: usize, const NIB: bool>(
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
        let wq = w.quants.as_ptr().add(w.group_at[g].0);
        let ws = w.scales.as_ptr().add(w.group_at[g].1);
        let xq = x.quants.as_ptr().add(r0 * x.cols) as *const u8;
        let xs = x.scales.as_ptr().add(r0 * blocks);
        let xss = x.scaled_sums.as_ptr().add(r0 * blocks);
        for b in 0..blocks {
            let wb = wq.add(b * w.kinds[g].block_bytes());
            let mut isum = [_mm256_setzero_si256(); MX];
            for span in 0..BLOCK / 4 / SPAN {
                // 32-bit sums with VNNI, 16-bit ones (widened once per span) without.
                let mut part = [_mm256_setzero_si256(); MX];
                for step in span * SPAN..(span + 1) * SPAN {
                    let wv = step_values::<NIB>(wb, step);
                    for (r, s) in part.iter_mut().enumerate() {
                        let four = _mm256_set1_epi32(
                            (xq.add(r * x.cols + b * BLOCK + step * 4) as *const i32)
                                .read_unaligned(),
                        );
                        *s = if VNNI {
                            _mm256_dpbusd_avx_epi32(*s, wv, four)
                        } else {
                            _mm256_add_epi16(*s, _mm256_maddubs_epi16(wv, four))
                        };
                    }
                }
                for (s, p) in isum.iter_mut().zip(&part) {
                    *s = _mm256_add_epi32(*s, if VNNI { *p } else { _mm256_madd_epi16(*p, ones) });
                }
            }
            let d = _mm256_loadu_ps(ws.add(b * 2 * GROUP));
            let mins = _mm256_loadu_ps(ws.add(b * 2 * GROUP + GROUP));
            for (r, (a, s)) in acc.iter_mut().zip(&isum).enumerate() {
                let dots = _mm256_cvtepi32_ps(*s);
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

    const ALL: [GgmlDType; 10] = [
        GgmlDType::Q4_1,
        GgmlDType::Q4_0,
        GgmlDType::Q8_0,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q3K,
        GgmlDType::Q2K,
    ];

    fn random(rows: usize, cols: usize, std: f32) -> Result<Tensor> {
        Ok(Tensor::randn(0f32, std, (rows, cols), &Device::Cpu)?)
    }

    #[test]
    fn repacked_blocks_dequantize_like_candle() -> Result<()> {
        for dtype in ALL {
            // Weights with an offset, so Q4_K/Q5_K's mins are not all zero.
            let t = (random(13, 512, 1.0)? + 0.3)?;
            let q = QTensor::quantize(&t, dtype)?;
            let expected = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let got = PackedWeights::from_qtensor(&q)?.dequantize();
            // The layout's scales are candle's products, so the values are the same bits.
            assert_eq!(expected, got, "{dtype:?}");
        }
        Ok(())
    }

    /// x as the kernel sees it: its 8-bit values times their block scales.
    fn rounded(xq: &Q8Rows) -> Vec<f32> {
        let blocks = xq.cols / BLOCK;
        (0..xq.rows * xq.cols)
            .map(|i| {
                f32::from(xq.quants[i]) * xq.scales[(i / xq.cols) * blocks + i % xq.cols / BLOCK]
            })
            .collect()
    }

    #[test]
    fn kernel_matches_f32_product_of_the_quantized_values() -> Result<()> {
        let shapes =
            [(1, 8, 32), (5, 13, 64), (9, 24, 576), (3, 1, 96), (7, 71, 160), (48, 40, 1536)];
        let k_shapes =
            [(1, 8, 256), (5, 13, 512), (9, 24, 1536), (3, 1, 256), (16, 71, 768), (48, 40, 1536)];
        for (dtype, (m, n, k)) in ALL
            .into_iter()
            .flat_map(|d| if is_k_quant(d) { k_shapes } else { shapes }.map(|s| (d, s)))
        {
            let t = (random(n, k, 0.05)? + 0.01)?;
            let q = QTensor::quantize(&t, dtype)?;
            let w = PackedWeights::from_qtensor(&q)?;
            // candle's dequantization: the reference for the weights' values.
            let wd = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            let x: Vec<f32> = random(m, k, 1.0)?.flatten_all()?.to_vec1()?;
            let mut xq = Q8Rows::default();
            xq.quantize(&x, m, k);
            let xr = rounded(&xq);
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
            for r in 0..m {
                for j in 0..n {
                    let (xs, xrs, ws) = (&x[r * k..][..k], &xr[r * k..][..k], &wd[j * k..][..k]);
                    let got = y[r * n + j];
                    // 1. The kernel computes Σ w·x̂ over x's 8-bit values x̂, up to f32
                    // rounding: a few ulps per block of terms of the size of Σ|w·x̂| (an
                    // offset m can make one block's terms ~16× its sum), so 1e-4 of it is ample
                    // and a wrong value or scale anywhere is far outside.
                    let exact: f64 =
                        xrs.iter().zip(ws).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                    let norm: f32 = xrs.iter().zip(ws).map(|(a, b)| (a * b).abs()).sum();
                    assert!(
                        (f64::from(got) - exact).abs() <= f64::from(1e-4 * norm + 1e-6),
                        "{dtype:?} ({m},{n},{k}) [{r},{j}]: {got} vs Σ w·x̂ = {exact}"
                    );
                    // 2. Against candle's weights times the f32 x: x̂ differs from x by at most
                    // half a step of its block's scale, so the products differ by at most
                    // Σ_b step_b/2 · Σ_{c∈b} |w_c| (plus the rounding above).
                    let reference: f32 = xs.iter().zip(ws).map(|(a, b)| a * b).sum();
                    let half_steps: f32 = (0..k)
                        .map(|c| 0.5 * xq.scales[r * (k / BLOCK) + c / BLOCK] * ws[c].abs())
                        .sum();
                    assert!(
                        (got - reference).abs() <= 1.001 * half_steps + 2e-4 * norm + 1e-6,
                        "{dtype:?} ({m},{n},{k}) [{r},{j}]: {got} vs {reference} (bound {half_steps})"
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

    /// Every weight at its kind's largest magnitude against x at ±127: the 16-bit sums of
    /// the AVX2 path are at their bounds (module docs) and must still equal the 32-bit ones
    /// of the portable path.
    #[test]
    fn extreme_values_do_not_overflow() {
        let (n, k, m) = (8, 64, 5);
        for (kind, q) in [
            (Values::Nibbles, 15u8),
            (Values::FiveBits, 31),
            (Values::SignedBytes, (-127i8) as u8),
            (Values::SixBitHalves, 63),
            (Values::ThreeBitHalves, 7),
            (Values::TwoBitHalves, 3),
        ] {
            let mut w = PackedWeights::zeros(n, k, vec![kind]);
            for row in 0..n {
                for b in 0..k / BLOCK {
                    // Q8_0's offset is 0 (its kernel has no offset term).
                    let m = if kind == Values::SignedBytes { 0.0 } else { 0.5 };
                    w.set_block(row, b, &[q; BLOCK], &[1.0, m, 0.25, -0.25]);
                }
            }
            let x: Vec<f32> = (0..m * k).map(|i| if i < k { 1.0 } else { -1.0 }).collect();
            let mut xq = Q8Rows::default();
            xq.quantize(&x, m, k);
            let mut y = vec![0f32; m * n];
            matmul(&xq, &w, &mut y);
            let mut portable = vec![0f32; m * n];
            unsafe { portable_group_rows(&xq, &w, 0, portable.as_mut_ptr(), m, n) };
            assert_eq!(y, portable, "{kind:?}");
            // x = 1 is 127 steps of 1/127: row 0 of y sums row 0 of W.
            let expected: f32 = w.dequantize()[..k].iter().sum();
            assert!(
                (y[0] - expected).abs() <= 1e-3 * expected.abs(),
                "{kind:?}: {} vs {expected}",
                y[0]
            );
        }
    }

    #[test]
    fn stacked_types_multiply_as_their_parts() -> Result<()> {
        let k = 512;
        let parts =
            [(16, GgmlDType::Q4K), (8, GgmlDType::Q6K), (8, GgmlDType::Q4_0), (13, GgmlDType::Q5K)];
        let qs = parts
            .iter()
            .map(|&(rows, dtype)| Ok(QTensor::quantize(&random(rows, k, 0.05)?, dtype)?))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&QTensor> = qs.iter().collect();
        let stacked = PackedWeights::stacked(&refs)?;
        let x: Vec<f32> = random(5, k, 1.0)?.flatten_all()?.to_vec1()?;
        let mut xq = Q8Rows::default();
        xq.quantize(&x, 5, k);
        let n = stacked.rows();
        let mut y = vec![0f32; 5 * n];
        matmul(&xq, &stacked, &mut y);
        let mut col = 0;
        for q in &qs {
            let w = PackedWeights::from_qtensor(q)?;
            let mut part = vec![0f32; 5 * w.rows()];
            matmul(&xq, &w, &mut part);
            for r in 0..5 {
                assert_eq!(part[r * w.rows()..][..w.rows()], y[r * n + col..][..w.rows()]);
            }
            col += w.rows();
        }
        // A group of 8 rows holds one kind of values.
        let odd = QTensor::quantize(&random(12, k, 0.05)?, GgmlDType::Q4K)?;
        assert!(!PackedWeights::can_stack(&[&odd, &qs[1]]));
        assert!(PackedWeights::can_stack(&[&qs[1], &odd]));
        assert!(PackedWeights::stacked(&[&odd, &qs[1]]).is_err());
        let f16 = QTensor::quantize(&random(8, k, 0.05)?, GgmlDType::F16)?;
        assert!(!PackedWeights::can_stack(&[&f16]));
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
        let (n, k) = (24, 512);
        for dtype in ALL {
            let w = PackedWeights::from_qtensor(&QTensor::quantize(&random(n, k, 0.05)?, dtype)?)?;
            let x: Vec<f32> = random(7, k, 1.0)?.flatten_all()?.to_vec1()?;
            let mut all = Q8Rows::default();
            all.quantize(&x, 7, k);
            let mut y_all = vec![0f32; 7 * n];
            matmul(&all, &w, &mut y_all);
            for r in 0..7 {
                let mut one = Q8Rows::default();
                one.quantize(&x[r * k..(r + 1) * k], 1, k);
                let mut y = vec![0f32; n];
                matmul(&one, &w, &mut y);
                assert_eq!(y, y_all[r * n..(r + 1) * n], "{dtype:?} row {r}");
            }
        }
        Ok(())
    }
}
