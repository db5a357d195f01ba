//! The paged key/value cache: one pool of fixed-size blocks per layer, shared by every
//! sequence in flight, and per sequence a block table (vLLM's design, and TGI's
//! `block_allocator.rs`). A sequence reserves the blocks for its whole length (prompt and
//! every token it may generate) when it is admitted, so a running sequence never waits for
//! memory and nothing is ever preempted; admission waits instead while the pool is full.
//!
//! Layout of one layer: `[blocks, 2, kv_heads, block_size, head_dim]`, K in plane 0 and V in
//! plane 1, so the `block_size × head_dim` rows of one head are contiguous.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};

/// Positions per block.
pub const BLOCK_SIZE: usize = 16;

/// Which blocks are free. Shared by the sequences (they return their blocks on drop) and,
/// under tensor parallelism, by every rank: block ids mean the same on all of them.
#[derive(Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    total: usize,
    block_size: usize,
}

impl BlockAllocator {
    pub fn new(blocks: usize, block_size: usize) -> Self {
        Self { free: (0..blocks as u32).rev().collect(), total: blocks, block_size }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn total_blocks(&self) -> usize {
        self.total
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks that hold `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_size)
    }

    fn allocate(&mut self, blocks: usize) -> Option<Vec<u32>> {
        (blocks <= self.free.len()).then(|| self.free.split_off(self.free.len() - blocks))
    }

    fn release(&mut self, blocks: &[u32]) {
        self.free.extend_from_slice(blocks);
    }
}

/// The pool handle sequences share.
pub type SharedAllocator = Arc<Mutex<BlockAllocator>>;

fn lock(allocator: &SharedAllocator) -> MutexGuard<'_, BlockAllocator> {
    allocator.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One sequence's block table; its blocks go back to the pool when it is dropped.
#[derive(Debug)]
pub struct PagedSequence {
    blocks: Vec<u32>,
    len: usize,
    allocator: SharedAllocator,
}

impl PagedSequence {
    /// Reserves room for `positions` positions, or `None` while the pool has too few free
    /// blocks.
    pub fn reserve(allocator: &SharedAllocator, positions: usize) -> Option<Self> {
        let mut pool = lock(allocator);
        let needed = pool.blocks_for(positions.max(1));
        let blocks = pool.allocate(needed)?;
        Some(Self { blocks, len: 0, allocator: allocator.clone() })
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Makes room for `positions` positions in all, taking more blocks if the pool has them.
    pub fn ensure_capacity(&mut self, positions: usize) -> Result<()> {
        let mut pool = lock(&self.allocator);
        let needed = pool.blocks_for(positions);
        if needed > self.blocks.len() {
            let more = pool.allocate(needed - self.blocks.len()).ok_or_else(|| {
                EngineError::KvCacheFull {
                    positions,
                    free_blocks: pool.free_blocks(),
                    block_size: pool.block_size(),
                }
            })?;
            self.blocks.extend(more);
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, tokens: usize) {
        self.len += tokens;
    }
}

impl Drop for PagedSequence {
    fn drop(&mut self) {
        lock(&self.allocator).release(&self.blocks);
    }
}

/// The cache tensors of one rank: one `[blocks, 2, kv_heads, block_size, head_dim]` tensor
/// per layer, written in place by the forward pass.
#[derive(Debug)]
pub struct PagedKvCache {
    pub layers: Vec<Tensor>,
    pub block_size: usize,
}

impl PagedKvCache {
    pub fn new(
        num_layers: usize,
        blocks: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| Tensor::zeros((blocks, 2, kv_heads, block_size, head_dim), dtype, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, block_size })
    }

    /// Bytes one block takes over all layers.
    pub fn bytes_per_block(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        dtype: DType,
    ) -> usize {
        num_layers * 2 * kv_heads * block_size * head_dim * dtype.size_in_bytes()
    }
}

/// A prompt chunk (more than one new token) of one sequence in a packed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefillSpan {
    /// First row in the batch.
    pub start: usize,
    pub tokens: usize,
    /// Positions attended to: everything cached before plus the chunk.
    pub context: usize,
    /// Block ids covering `context`.
    pub table: Vec<u32>,
}

/// One forward pass over the paged cache, as plain data (every tensor-parallel rank gets
/// the same): decode rows first (one new token each, attended by the batched kernel), then
/// prompt chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct PagedBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    /// Cache slot (`block * block_size + offset`) of every token.
    pub slots: Vec<u32>,
    pub decode_rows: usize,
    /// Per decode row: `[context length, block ids…]`, padded to `meta_stride`.
    pub decode_meta: Vec<u32>,
    pub meta_stride: usize,
    pub max_decode_context: usize,
    pub spans: Vec<PrefillSpan>,
    /// Row of each sequence's last new token, in the caller's order.
    pub last_rows: Vec<u32>,
}

impl PagedBatch {
    /// `tokens[i]` continues `sequences[i]`, whose blocks already cover the new positions.
    pub fn new(tokens: &[&[u32]], sequences: &[&PagedSequence], block_size: usize) -> Self {
        let order: Vec<usize> = (0..tokens.len())
            .filter(|&i| tokens[i].len() == 1)
            .chain((0..tokens.len()).filter(|&i| tokens[i].len() != 1))
            .collect();
        let decode_rows = tokens.iter().filter(|t| t.len() == 1).count();
        let max_decode_context = (0..tokens.len())
            .filter(|&i| tokens[i].len() == 1)
            .map(|i| sequences[i].len() + 1)
            .max()
            .unwrap_or(0);
        let meta_stride = 1 + max_decode_context.div_ceil(block_size);
        let total: usize = tokens.iter().map(|t| t.len()).sum();
        let mut batch = PagedBatch {
            tokens: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            slots: Vec::with_capacity(total),
            decode_rows,
            decode_meta: Vec::with_capacity(decode_rows * meta_stride),
            meta_stride,
            max_decode_context,
            spans: Vec::new(),
            last_rows: vec![0; tokens.len()],
        };
        for i in order {
            let (new, seq) = (tokens[i], sequences[i]);
            let start = batch.tokens.len();
            for (k, &token) in new.iter().enumerate() {
                let pos = seq.len() + k;
                batch.tokens.push(token);
                batch.positions.push(pos as u32);
                batch.slots.push(
                    seq.blocks[pos / block_size] * block_size as u32 + (pos % block_size) as u32,
                );
            }
            let context = seq.len() + new.len();
            let table = &seq.blocks[..context.div_ceil(block_size)];
            if new.len() == 1 {
                batch.decode_meta.push(context as u32);
                batch.decode_meta.extend_from_slice(table);
                batch
                    .decode_meta
                    .resize(batch.decode_meta.len() + meta_stride - 1 - table.len(), 0);
            } else {
                batch.spans.push(PrefillSpan {
                    start,
                    tokens: new.len(),
                    context,
                    table: table.to_vec(),
                });
            }
            batch.last_rows[i] = (start + new.len() - 1) as u32;
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_return_to_the_pool_when_a_sequence_ends() {
        let pool = Arc::new(Mutex::new(BlockAllocator::new(4, 16)));
        let a = PagedSequence::reserve(&pool, 33).expect("3 blocks fit");
        assert_eq!(a.blocks().len(), 3);
        assert!(PagedSequence::reserve(&pool, 17).is_none(), "only one block is left");
        let b = PagedSequence::reserve(&pool, 16).expect("one block fits");
        drop(a);
        assert_eq!(lock(&pool).free_blocks(), 3);
        drop(b);
        assert_eq!(lock(&pool).free_blocks(), 4);
    }

    #[test]
    fn a_batch_puts_decode_rows_first_and_maps_positions_to_slots() {
        let pool = Arc::new(Mutex::new(BlockAllocator::new(8, 4)));
        let mut prefill = PagedSequence::reserve(&pool, 6).unwrap();
        let mut decode = PagedSequence::reserve(&pool, 6).unwrap();
        decode.advance(5);
        let batch = PagedBatch::new(&[&[7, 8, 9], &[42]], &[&prefill, &decode], 4);
        assert_eq!(batch.tokens, vec![42, 7, 8, 9]);
        assert_eq!(batch.positions, vec![5, 0, 1, 2]);
        let (p, d) = (prefill.blocks().to_vec(), decode.blocks().to_vec());
        assert_eq!(batch.slots, vec![d[1] * 4 + 1, p[0] * 4, p[0] * 4 + 1, p[0] * 4 + 2]);
        assert_eq!(batch.decode_rows, 1);
        assert_eq!(batch.meta_stride, 3);
        assert_eq!(batch.decode_meta, vec![6, d[0], d[1]]);
        assert_eq!(
            batch.spans,
            vec![PrefillSpan { start: 1, tokens: 3, context: 3, table: vec![p[0]] }]
        );
        assert_eq!(batch.last_rows, vec![3, 0]);
        prefill.advance(3);
        prefill.ensure_capacity(9).unwrap();
        assert_eq!(prefill.blocks().len(), 3);
    }
}
