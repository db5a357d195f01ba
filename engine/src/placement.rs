//! Where a model runs: the CPU, or one or more CUDA GPUs (tensor parallelism), and how
//! much memory its key/value cache may take there.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{DeviceSpecError, EngineError, Result};

/// A device as the command line names it: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// The first GPU of the model (its tensor-parallel ranks use the next ones).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> std::result::Result<Self, DeviceSpecError> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").or_else(|| s.strip_prefix("gpu:")) {
                Some(n) => n
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| DeviceSpecError::BadIndex { input: s.clone() }),
                None => Err(DeviceSpecError::Unknown { input: s }),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Where and how wide a model is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub device: DeviceSpec,
    /// GPUs (or, on the CPU, threads) the model is sharded over; rank `r` of a model placed
    /// on `cuda:N` runs on `cuda:N+r`.
    pub tensor_parallel: usize,
    /// Key/value cache size in tokens (every sequence in flight, prompt and output). `None`:
    /// on GPUs, what `gpu_memory_fraction` leaves after the weights; on the CPU, grown per
    /// sequence as needed.
    pub kv_cache_tokens: Option<usize>,
    /// Share of each GPU's memory the engine may hold (weights, cache, activations).
    pub gpu_memory_fraction: f64,
    /// All ranks on `device`, summing through host threads instead of NCCL: a check of the
    /// sharding on one GPU (never faster than one rank).
    pub in_process_ranks: bool,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Cpu,
            tensor_parallel: 1,
            kv_cache_tokens: None,
            gpu_memory_fraction: 0.9,
            in_process_ranks: false,
        }
    }
}

impl Placement {
    pub fn cuda(ordinal: usize) -> Self {
        Self { device: DeviceSpec::Cuda(ordinal), ..Self::default() }
    }

    /// Whether the model runs on the paged path (block KV cache shared by all sequences,
    /// batched decode attention): always on GPUs, and on the CPU when it is sharded.
    pub fn paged(&self) -> bool {
        matches!(self.device, DeviceSpec::Cuda(_)) || self.tensor_parallel > 1
    }

    /// The compute dtype on this device: bf16 on GPUs, f32 on the CPU.
    pub fn dtype(&self) -> DType {
        match self.device {
            DeviceSpec::Cpu => DType::F32,
            DeviceSpec::Cuda(_) => DType::BF16,
        }
    }

    /// The device of tensor-parallel rank `rank`.
    pub fn rank_device(&self, rank: usize) -> DeviceSpec {
        match self.device {
            DeviceSpec::Cpu => DeviceSpec::Cpu,
            DeviceSpec::Cuda(first) => DeviceSpec::Cuda(first + rank),
        }
    }

    /// The distinct devices the model's ranks occupy: one per rank, or `device` alone when
    /// the ranks run in process on it.
    pub fn rank_devices(&self) -> impl Iterator<Item = DeviceSpec> + '_ {
        let ranks = if self.in_process_ranks { 1 } else { self.tensor_parallel.max(1) };
        (0..ranks).map(|rank| self.rank_device(rank))
    }

    /// Checks what can be checked before any file is read: a GPU build, enough GPUs.
    pub fn check(&self) -> Result<()> {
        if self.tensor_parallel == 0 {
            return Err(EngineError::Device {
                device: self.device.to_string(),
                reason: "tensor parallelism must be at least 1".into(),
            });
        }
        if !(0.05..=1.0).contains(&self.gpu_memory_fraction) {
            return Err(EngineError::Device {
                device: self.device.to_string(),
                reason: format!(
                    "gpu memory fraction {} is outside 0.05..=1",
                    self.gpu_memory_fraction
                ),
            });
        }
        if let DeviceSpec::Cuda(first) = self.device {
            let visible = cuda_device_count(self.device)?;
            let last = if self.in_process_ranks { first } else { first + self.tensor_parallel - 1 };
            if last >= visible {
                return Err(EngineError::Device {
                    device: self.device.to_string(),
                    reason: format!(
                        "{} GPU(s) needed (cuda:{first}..=cuda:{last}) but {visible} visible{}",
                        self.tensor_parallel,
                        if visible == 0 {
                            " (is CUDA_VISIBLE_DEVICES empty, or the driver missing?)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            #[cfg(not(feature = "nccl"))]
            if self.tensor_parallel > 1 && !self.in_process_ranks {
                return Err(EngineError::Device {
                    device: self.device.to_string(),
                    reason:
                        "tensor parallelism over GPUs needs a build with `--features cuda,nccl`"
                            .into(),
                });
            }
        }
        Ok(())
    }
}

/// GPUs the driver shows this process.
pub fn cuda_device_count(spec: DeviceSpec) -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        CudaContext::device_count().map(|n| n.max(0) as usize).map_err(|e| EngineError::Device {
            device: spec.to_string(),
            reason: format!("no usable CUDA driver: {e}"),
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(EngineError::Device {
            device: spec.to_string(),
            reason: "this herd was built without GPU support; rebuild with `cargo build --release --features cuda`".into(),
        })
    }
}

/// Opens a device for computing. CUDA devices get their own stream, no per-tensor event
/// tracking (one stream per device, so there is nothing to synchronise between streams, and
/// the events cost two driver calls per allocation) and a memory pool that keeps freed
/// blocks for the next step instead of returning them to the driver.
pub fn open_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => open_cuda(ordinal),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let device = Device::new_cuda_with_stream(ordinal).map_err(|e| EngineError::Device {
        device: format!("cuda:{ordinal}"),
        reason: e.to_string(),
    })?;
    if let Device::Cuda(cuda) = &device {
        // SAFETY: every tensor of this device is used on its one stream.
        unsafe { cuda.disable_event_tracking() };
        let stream = cuda.cuda_stream();
        let ctx = stream.context();
        // SAFETY: the device handle comes from a live context; the attribute takes a u64.
        unsafe {
            let pool = default_mem_pool(&ctx, DeviceSpec::Cuda(ordinal))?;
            let mut keep = u64::MAX;
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep as *mut u64).cast(),
            )
            .map_err(|e| EngineError::Device {
                device: format!("cuda:{ordinal}"),
                reason: format!("memory pool threshold: {e}"),
            })?;
        }
    }
    Ok(device)
}

/// The default memory pool of `ctx`'s device, which candle's allocations come from.
#[cfg(feature = "cuda")]
fn default_mem_pool(
    ctx: &candle_core::cuda_backend::cudarc::driver::CudaContext,
    spec: DeviceSpec,
) -> Result<candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool> {
    // SAFETY: the device handle comes from a live context.
    unsafe {
        candle_core::cuda_backend::cudarc::driver::result::device::get_default_mem_pool(
            ctx.cu_device(),
        )
    }
    .map_err(|e| EngineError::Device {
        device: spec.to_string(),
        reason: format!("memory pool: {e}"),
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    cuda_device_count(DeviceSpec::Cuda(ordinal)).map(|_| Device::Cpu)
}

/// Hands back to the driver what freed tensors left in the default memory pools of
/// `placement`'s GPUs. A model holds its pool's memory while it runs (`open_cuda` sets no
/// release threshold), so without this a model dropped to make room for the next one would
/// still count as used in the next one's size check and cache budget. Nothing on the CPU.
pub fn return_pooled_memory(placement: &Placement) -> Result<()> {
    for spec in placement.rank_devices() {
        match spec {
            DeviceSpec::Cpu => {}
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(ordinal) => {
                use candle_core::cuda_backend::cudarc::driver::{result, CudaContext};
                let fail =
                    |what: &str, e: candle_core::cuda_backend::cudarc::driver::DriverError| {
                        EngineError::Device {
                            device: spec.to_string(),
                            reason: format!("{what}: {e}"),
                        }
                    };
                let ctx = CudaContext::new(ordinal).map_err(|e| fail("context", e))?;
                // Frees are queued on the model's stream; the pool shrinks once they ran.
                ctx.synchronize().map_err(|e| fail("synchronize", e))?;
                let pool = default_mem_pool(&ctx, spec)?;
                // SAFETY: the pool belongs to a live context's device.
                unsafe { result::mem_pool::trim_to(pool, 0) }
                    .map_err(|e| fail("memory pool trim", e))?;
            }
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => {}
        }
    }
    Ok(())
}

/// Free and total bytes of a GPU's memory, asked of the driver without opening a stream
/// (`None` for the CPU).
pub fn free_memory(spec: DeviceSpec) -> Result<Option<(usize, usize)>> {
    match spec {
        DeviceSpec::Cpu => Ok(None),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(ordinal) => {
            use candle_core::cuda_backend::cudarc::driver::CudaContext;
            let fail = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
                EngineError::Device { device: spec.to_string(), reason: e.to_string() }
            };
            let ctx = CudaContext::new(ordinal).map_err(fail)?;
            ctx.mem_get_info().map(Some).map_err(fail)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => cuda_device_count(spec).map(|_| None),
    }
}

/// Free and total bytes of a device's memory (`None` on the CPU).
pub fn memory_info(device: &Device) -> Result<Option<(usize, usize)>> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let stream = cuda.cuda_stream();
            stream.context().mem_get_info().map(Some).map_err(|e| EngineError::Device {
                device: format!("{:?}", device.location()),
                reason: format!("memory info: {e}"),
            })
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("CUDA:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_on_a_cpu_build_is_a_clear_error() {
        let err = Placement::cuda(0).check().unwrap_err();
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
