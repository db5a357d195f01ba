//! Tensor parallelism (Megatron-style, as in candle's llama_multiprocess and mistral.rs's
//! `ColumnParallelLayer` / `RowParallelLayer`): each rank holds a slice of every layer.
//! Q/K/V and gate/up are split by output rows (column-parallel: whole heads, whole
//! intermediate units); O and down by input columns (row-parallel), each followed by an
//! all-reduce that sums the ranks' partial outputs. Embeddings, norms and the LM head are
//! replicated, so every rank ends a pass with the same logits.
//!
//! The all-reduce is a trait: [`InProcessAllReduce`] sums through shared memory (ranks as
//! threads of one process: CPU tests, and a one-GPU smoke test), [`NcclAllReduce`] through
//! NCCL (one thread per GPU).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Barrier, Mutex};

use candle_core::Tensor;

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};

/// Sums a tensor over all ranks; every rank gets the sum.
pub trait AllReduce: fmt::Debug + Send + Sync {
    fn sum(&self, x: &Tensor) -> Result<Tensor>;
}

/// One rank's place in the group, and its all-reduce.
#[derive(Debug, Clone)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    pub all_reduce: Arc<dyn AllReduce>,
}

impl Shard {
    /// This rank's part of `0..total` split in `world` equal pieces.
    pub fn range(&self, total: usize) -> Range<usize> {
        let part = total / self.world;
        self.rank * part..(self.rank + 1) * part
    }
}

/// Checks that `degree` ranks can split the model: whole attention heads, whole key/value
/// heads and equal slices of the MLP on each.
pub fn check_degree(config: &ModelConfig, degree: usize, path: &std::path::Path) -> Result<()> {
    let fail =
        |reason: String| Err(EngineError::TensorParallel { path: path.into(), degree, reason });
    if degree == 0 {
        return fail("must be at least 1".into());
    }
    if !config.num_heads.is_multiple_of(degree) {
        return fail(format!("does not divide the {} attention heads", config.num_heads));
    }
    if !config.num_kv_heads.is_multiple_of(degree) {
        return fail(format!("does not divide the {} key/value heads", config.num_kv_heads));
    }
    if !config.intermediate_size.is_multiple_of(degree) {
        return fail(format!("does not divide the MLP width {}", config.intermediate_size));
    }
    Ok(())
}

/// An all-reduce among threads of one process: each rank leaves its tensor, waits for the
/// others, and adds them up in rank order (so every rank gets bit-identical sums).
pub struct InProcessAllReduce {
    rank: usize,
    exchange: Arc<Exchange>,
}

struct Exchange {
    slots: Mutex<Vec<Option<Tensor>>>,
    barrier: Barrier,
}

impl InProcessAllReduce {
    /// The all-reduces of a group of `world` ranks, rank order.
    pub fn group(world: usize) -> Vec<Arc<dyn AllReduce>> {
        let exchange = Arc::new(Exchange {
            slots: Mutex::new(vec![None; world]),
            barrier: Barrier::new(world),
        });
        (0..world)
            .map(|rank| Arc::new(Self { rank, exchange: exchange.clone() }) as Arc<dyn AllReduce>)
            .collect()
    }
}

impl fmt::Debug for InProcessAllReduce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessAllReduce").field("rank", &self.rank).finish()
    }
}

impl AllReduce for InProcessAllReduce {
    fn sum(&self, x: &Tensor) -> Result<Tensor> {
        let lock = || self.exchange.slots.lock().unwrap_or_else(|p| p.into_inner());
        // GPU ranks run on streams of their own: a part is complete before others read it,
        // and read by all before its rank moves on (and frees it).
        x.device().synchronize()?;
        lock()[self.rank] = Some(x.clone());
        self.exchange.barrier.wait();
        let parts: Vec<Tensor> =
            lock().iter().map(|t| t.clone().expect("every rank left its part")).collect();
        let mut total = parts[0].to_device(x.device())?;
        for part in &parts[1..] {
            total = (total + part.to_device(x.device())?)?;
        }
        x.device().synchronize()?;
        drop(parts);
        // Everyone has read the parts before anyone leaves new ones.
        self.exchange.barrier.wait();
        Ok(total)
    }
}

#[cfg(feature = "nccl")]
pub use nccl::NcclAllReduce;

#[cfg(feature = "nccl")]
mod nccl {
    use std::fmt;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaStorage, Device, Storage, Tensor};
    use half::bf16;

    use super::AllReduce;
    use crate::error::{EngineError, Result};

    /// A NCCL communicator of one rank, created and used on that rank's thread, on the
    /// stream of its device (so the reduction is ordered with the rank's kernels).
    pub struct NcclAllReduce {
        comm: Comm,
        rank: usize,
    }

    // SAFETY: the communicator is created by its rank's thread and only ever used there (the
    // rank's model lives on that thread); `Send`/`Sync` let the model type hold it.
    unsafe impl Send for NcclAllReduce {}
    unsafe impl Sync for NcclAllReduce {}

    impl fmt::Debug for NcclAllReduce {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("NcclAllReduce").field("rank", &self.rank).finish()
        }
    }

    /// A group's id, made by one rank and handed to all before they join.
    pub fn unique_id() -> Result<[std::ffi::c_char; 128]> {
        let id = Id::new().map_err(|e| EngineError::Device {
            device: "nccl".into(),
            reason: format!("ncclGetUniqueId: {e:?}"),
        })?;
        Ok(*id.internal())
    }

    impl NcclAllReduce {
        /// Joins the group (blocks until all `world` ranks have joined).
        pub fn join(
            device: &Device,
            rank: usize,
            world: usize,
            id: [std::ffi::c_char; 128],
        ) -> Result<Self> {
            let Device::Cuda(cuda) = device else {
                return Err(EngineError::Device {
                    device: "nccl".into(),
                    reason: "NCCL needs a CUDA device".into(),
                });
            };
            let comm =
                Comm::from_rank(cuda.cuda_stream(), rank, world, Id::uninit(id)).map_err(|e| {
                    EngineError::Device {
                        device: format!("{:?}", device.location()),
                        reason: format!("ncclCommInitRank (rank {rank} of {world}): {e:?}"),
                    }
                })?;
            Ok(Self { comm, rank })
        }
    }

    impl AllReduce for NcclAllReduce {
        fn sum(&self, x: &Tensor) -> Result<Tensor> {
            let x = x.contiguous()?;
            let (storage, layout) = x.storage_and_layout();
            let Storage::Cuda(cuda) = &*storage else {
                return Err(
                    candle_core::Error::Msg("NCCL all-reduce of a CPU tensor".into()).into()
                );
            };
            let n = layout.shape().elem_count();
            let start = layout.start_offset();
            let src = cuda.as_cuda_slice::<bf16>()?.slice(start..start + n);
            let dev = cuda.device().clone();
            // SAFETY: the all-reduce writes every element.
            let mut dst = unsafe { dev.alloc::<bf16>(n)? };
            self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum).map_err(|e| {
                candle_core::Error::Msg(format!("ncclAllReduce (rank {}): {e:?}", self.rank))
            })?;
            let out = Storage::Cuda(CudaStorage::wrap_cuda_slice(dst, dev));
            Ok(Tensor::from_storage(out, layout.shape().clone(), BackpropOp::none(), false))
        }
    }
}

#[cfg(feature = "nccl")]
pub use nccl::unique_id as nccl_unique_id;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn in_process_all_reduce_sums_over_threads() {
        let group = InProcessAllReduce::group(3);
        let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .enumerate()
                .map(|(rank, r)| {
                    s.spawn(move || {
                        let mut last = Vec::new();
                        for step in 0..3 {
                            let x = Tensor::new(&[rank as f32 + step as f32, 1.0], &Device::Cpu)
                                .unwrap();
                            last = r.sum(&x).unwrap().to_vec1::<f32>().unwrap();
                        }
                        last
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for s in sums {
            assert_eq!(s, vec![0.0 + 1.0 + 2.0 + 3.0 * 2.0, 3.0]);
        }
    }
}
