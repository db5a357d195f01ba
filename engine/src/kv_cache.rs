//! Per-sequence key/value cache.
//!
//! Two kinds, one per forward path. [`ContiguousCache`] (the CPU path): each layer keeps K
//! and V as `[kv_heads, capacity, head_dim]` buffers that grow by doubling; new positions are
//! written in place (no `Tensor::cat` per step) and attention reads a `[kv_heads, len,
//! head_dim]` view. [`PagedSequence`] (GPUs, tensor parallelism): the sequence's block table
//! in a cache that all sequences share (`paged_cache`).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
pub use crate::paged_cache::PagedSequence;

/// The cache of one sequence, of the kind its model's forward path uses.
#[derive(Debug)]
pub enum SequenceCache {
    Contiguous(ContiguousCache),
    Paged(PagedSequence),
}

impl SequenceCache {
    /// Positions cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        match self {
            SequenceCache::Contiguous(c) => c.len(),
            SequenceCache::Paged(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positions are allocated in multiples of this, so short growth steps do not reallocate.
const CAPACITY_QUANTUM: usize = 64;

#[derive(Debug)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// The contiguous cache of one sequence, all layers.
#[derive(Debug)]
pub struct ContiguousCache {
    layers: Vec<Option<LayerCache>>,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
    /// Positions to allocate on first use (the expected final length).
    reserve: usize,
}

impl ContiguousCache {
    pub fn new(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
            kv_heads,
            head_dim,
            dtype,
            device: device.clone(),
            reserve: 0,
        }
    }

    /// Allocate room for `positions` at once when the first tokens arrive.
    pub fn reserve(&mut self, positions: usize) {
        self.reserve = positions;
    }

    /// Positions cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.layers.last().and_then(|l| l.as_ref()).map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the buffers.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| 2 * l.k.elem_count() * self.dtype.size_in_bytes())
            .sum()
    }

    /// Appends `k`, `v` (`[t, kv_heads, head_dim]`) to `layer` and returns views of everything
    /// cached for it, `[kv_heads, len, head_dim]` each.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(0)?;
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        let (kv_heads, head_dim, dtype, device) =
            (self.kv_heads, self.head_dim, self.dtype, self.device.clone());
        let alloc = |capacity: usize| Tensor::zeros((kv_heads, capacity, head_dim), dtype, &device);
        let slot = &mut self.layers[layer];
        let needed = slot.as_ref().map_or(0, |l| l.len) + t;
        let capacity = slot.as_ref().map_or(0, |l| l.k.dim(1).unwrap_or(0));
        if needed > capacity {
            let new_capacity =
                needed.max(self.reserve).max(capacity * 2).next_multiple_of(CAPACITY_QUANTUM);
            let (new_k, new_v) = (alloc(new_capacity)?, alloc(new_capacity)?);
            if let Some(old) = slot.as_ref() {
                if old.len > 0 {
                    new_k.slice_set(&old.k.narrow(1, 0, old.len)?.contiguous()?, 1, 0)?;
                    new_v.slice_set(&old.v.narrow(1, 0, old.len)?.contiguous()?, 1, 0)?;
                }
            }
            let len = slot.as_ref().map_or(0, |l| l.len);
            *slot = Some(LayerCache { k: new_k, v: new_v, len });
        }
        let cache = slot.as_mut().expect("allocated above");
        cache.k.slice_set(&k, 1, cache.len)?;
        cache.v.slice_set(&v, 1, cache.len)?;
        cache.len += t;
        Ok((cache.k.narrow(1, 0, cache.len)?, cache.v.narrow(1, 0, cache.len)?))
    }
}
