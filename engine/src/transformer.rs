//! The transformer network a [`Model`](crate::Model) runs, behind one interface for the schedulers
//! (`generate`, `scoring`): a CPU Llama with per-sequence caches, or the paged path (block
//! cache shared by all sequences) on one device or sharded over tensor-parallel ranks, one
//! thread per rank (each thread owns its device, its slice of the weights and its cache;
//! a pass is broadcast to all of them as plain data and rank 0's logits come back).

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::SequenceCache;
use crate::llama::Llama;
use crate::paged_cache::{
    BlockAllocator, PagedBatch, PagedKvCache, PagedSequence, SharedAllocator, BLOCK_SIZE,
};
use crate::placement::{memory_info, open_device, DeviceSpec, Placement};
use crate::tensor_parallel::{AllReduce, InProcessAllReduce, Shard};

/// Builds one rank's model: the shard (`None`: the whole model), its dtype and device.
pub(crate) type RankLoader =
    Arc<dyn Fn(Option<Shard>, DType, Device) -> Result<Llama> + Send + Sync>;

/// Key/value cache of the CPU paged path (tensor parallelism on the CPU) when none is given.
const CPU_DEFAULT_KV_TOKENS: usize = 4096;
/// Left free on a GPU beyond `1 - gpu_memory_fraction`: activations of a pass, cuBLAS.
const GPU_ACTIVATION_RESERVE: usize = 1 << 30;

#[derive(Debug)]
pub struct Transformer {
    config: ModelConfig,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Contiguous(Box<Llama>),
    Paged(Paged),
}

#[derive(Debug)]
struct Paged {
    allocator: SharedAllocator,
    block_size: usize,
    ranks: Ranks,
    device: String,
}

#[derive(Debug)]
enum Ranks {
    Local(Box<Rank>),
    Threads(Mutex<RankThreads>),
}

#[derive(Debug)]
struct Rank {
    llama: Llama,
    cache: PagedKvCache,
}

impl Transformer {
    /// The CPU path: per-sequence contiguous caches.
    pub(crate) fn contiguous(llama: Llama) -> Self {
        Self { config: llama.config.clone(), kind: Kind::Contiguous(Box::new(llama)) }
    }

    /// The paged path on `placement`, each rank built by `load`.
    pub(crate) fn paged(
        config: &ModelConfig,
        placement: &Placement,
        path: &Path,
        load: RankLoader,
    ) -> Result<Self> {
        let dtype = placement.dtype();
        let kv_heads = config.num_kv_heads / placement.tensor_parallel;
        let block_bytes = PagedKvCache::bytes_per_block(
            config.num_layers,
            kv_heads,
            config.head_dim,
            BLOCK_SIZE,
            dtype,
        );
        let (ranks, free) = if placement.tensor_parallel == 1 {
            let device = open_device(placement.device)?;
            let llama = load(None, dtype, device.clone())?;
            let free = kv_budget(&device, placement)?;
            (PendingRanks::Local(Box::new(llama)), free)
        } else {
            let threads = RankThreads::start(placement, load)?;
            let free = threads.kv_budgets.iter().copied().min().flatten();
            (PendingRanks::Threads(threads), free)
        };
        let blocks = match (placement.kv_cache_tokens, free) {
            (Some(tokens), _) => tokens.div_ceil(BLOCK_SIZE),
            (None, Some(bytes)) => bytes / block_bytes,
            (None, None) => CPU_DEFAULT_KV_TOKENS / BLOCK_SIZE,
        };
        if blocks == 0 {
            return Err(EngineError::DoesNotFit {
                path: path.into(),
                device: placement.device.to_string(),
                reason: format!(
                    "no memory is left for the key/value cache after the weights ({} MiB per {BLOCK_SIZE} positions); \
                     use more GPUs (--tensor-parallel) or a larger --gpu-memory-fraction",
                    block_bytes >> 20
                ),
            });
        }
        let ranks = match ranks {
            PendingRanks::Local(llama) => {
                let cache = PagedKvCache::new(
                    config.num_layers,
                    blocks,
                    kv_heads,
                    config.head_dim,
                    BLOCK_SIZE,
                    dtype,
                    &llama.device,
                )?;
                Ranks::Local(Box::new(Rank { llama: *llama, cache }))
            }
            PendingRanks::Threads(mut threads) => {
                threads.allocate(blocks, config, kv_heads, dtype)?;
                Ranks::Threads(Mutex::new(threads))
            }
        };
        tracing::info!(
            device = %placement.device,
            tensor_parallel = placement.tensor_parallel,
            kv_cache_tokens = blocks * BLOCK_SIZE,
            kv_cache_mib = (blocks * block_bytes) >> 20,
            "paged key/value cache allocated"
        );
        let paged = Paged {
            allocator: Arc::new(Mutex::new(BlockAllocator::new(blocks, BLOCK_SIZE))),
            block_size: BLOCK_SIZE,
            ranks,
            device: placement.device.to_string(),
        };
        Ok(Self { config: config.clone(), kind: Kind::Paged(paged) })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Whether this transformer keeps its keys and values in the shared paged cache.
    pub fn is_paged(&self) -> bool {
        matches!(self.kind, Kind::Paged(_))
    }

    /// Positions the paged cache holds in all (`None` for per-sequence caches).
    pub fn kv_capacity(&self) -> Option<usize> {
        match &self.kind {
            Kind::Contiguous(_) => None,
            Kind::Paged(p) => Some(
                p.allocator.lock().unwrap_or_else(|e| e.into_inner()).total_blocks() * p.block_size,
            ),
        }
    }

    /// The share of the paged cache's blocks in use, 0 to 1 (`None` for per-sequence caches).
    pub fn kv_cache_usage(&self) -> Option<f64> {
        match &self.kind {
            Kind::Contiguous(_) => None,
            Kind::Paged(p) => {
                let allocator = p.allocator.lock().unwrap_or_else(|e| e.into_inner());
                let total = allocator.total_blocks().max(1);
                Some((total - allocator.free_blocks()) as f64 / total as f64)
            }
        }
    }

    /// A cache for a new sequence that will hold up to `positions` positions (`reserve` of
    /// them allocated at once on the CPU path), or `None` while the paged cache is full.
    pub fn new_cache(&self, positions: usize, reserve: usize) -> Option<SequenceCache> {
        match &self.kind {
            Kind::Contiguous(llama) => {
                let mut cache = llama.new_cache();
                cache.reserve(reserve);
                Some(SequenceCache::Contiguous(cache))
            }
            Kind::Paged(p) => {
                PagedSequence::reserve(&p.allocator, positions).map(SequenceCache::Paged)
            }
        }
    }

    /// Runs the new tokens of several sequences (`tokens[i]` continues `caches[i]`) and
    /// returns the logits of each sequence's last new token, `[sequences, vocab]` in f32.
    pub fn forward(&self, tokens: &[&[u32]], caches: &mut [&mut SequenceCache]) -> Result<Tensor> {
        match &self.kind {
            Kind::Contiguous(llama) => {
                let mut contiguous = Vec::with_capacity(caches.len());
                for cache in caches.iter_mut() {
                    match &mut **cache {
                        SequenceCache::Contiguous(c) => contiguous.push(c),
                        SequenceCache::Paged(_) => return Err(mixed_caches()),
                    }
                }
                llama.forward(tokens, &mut contiguous)
            }
            Kind::Paged(p) => {
                let mut sequences = Vec::with_capacity(caches.len());
                for (cache, new) in caches.iter_mut().zip(tokens) {
                    match &mut **cache {
                        SequenceCache::Paged(s) => {
                            s.ensure_capacity(s.len() + new.len())?;
                            sequences.push(s);
                        }
                        SequenceCache::Contiguous(_) => return Err(mixed_caches()),
                    }
                }
                let views: Vec<&PagedSequence> = sequences.iter().map(|s| &**s).collect();
                let batch = PagedBatch::new(tokens, &views, p.block_size);
                let logits = match &p.ranks {
                    Ranks::Local(rank) => rank.llama.forward_paged(&batch, &rank.cache)?,
                    Ranks::Threads(threads) => threads
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forward(Arc::new(batch))?,
                };
                for (s, new) in sequences.iter_mut().zip(tokens) {
                    s.advance(new.len());
                }
                Ok(logits)
            }
        }
    }

    /// Where the transformer runs, for logs.
    pub fn device_name(&self) -> String {
        match &self.kind {
            Kind::Contiguous(llama) => format!("{:?}", llama.device.location()),
            Kind::Paged(p) => p.device.clone(),
        }
    }
}

fn mixed_caches() -> EngineError {
    EngineError::Candle(candle_core::Error::Msg(
        "a sequence cache of the other forward path was passed".into(),
    ))
}

/// Bytes the key/value cache may take on `device` now that the weights are there.
fn kv_budget(device: &Device, placement: &Placement) -> Result<Option<usize>> {
    Ok(memory_info(device)?.map(|(free, total)| {
        let keep = ((1.0 - placement.gpu_memory_fraction) * total as f64) as usize
            + GPU_ACTIVATION_RESERVE;
        free.saturating_sub(keep)
    }))
}

enum PendingRanks {
    Local(Box<Llama>),
    Threads(RankThreads),
}

enum Command {
    AllocateKv { blocks: usize, num_layers: usize, kv_heads: usize, head_dim: usize, dtype: DType },
    Forward(Arc<PagedBatch>),
}

enum Reply {
    /// Loaded; bytes left for the cache (`None` on the CPU).
    Ready(Option<usize>),
    Allocated,
    /// Rank 0's logits; `None` from the other ranks.
    Logits(Option<Tensor>),
}

/// The rank threads of a tensor-parallel model.
struct RankThreads {
    senders: Vec<Sender<Command>>,
    replies: Receiver<(usize, Result<Reply>)>,
    /// Per rank, bytes left for the cache after its weights (`None` on the CPU).
    kv_budgets: Vec<Option<usize>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RankThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankThreads").field("ranks", &self.senders.len()).finish()
    }
}

impl RankThreads {
    /// Starts one thread per rank; each opens its device, joins the all-reduce group and
    /// loads its slice of the weights. Returns once all are loaded (or one failed).
    fn start(placement: &Placement, load: RankLoader) -> Result<Self> {
        let world = placement.tensor_parallel;
        let all_reduces = AllReduceGroup::new(placement)?;
        let (reply_tx, replies) = channel();
        let mut senders = Vec::with_capacity(world);
        let mut handles = Vec::with_capacity(world);
        for rank in 0..world {
            let (tx, rx) = channel::<Command>();
            senders.push(tx);
            let reply = reply_tx.clone();
            let load = load.clone();
            let spec = if placement.in_process_ranks {
                placement.device
            } else {
                placement.rank_device(rank)
            };
            let group = all_reduces.clone();
            let placement = placement.clone();
            let handle = std::thread::Builder::new()
                .name(format!("herd-rank-{rank}"))
                .spawn(move || rank_main(rank, world, spec, placement, group, load, rx, reply))
                .map_err(|e| EngineError::Device {
                    device: placement_name(spec),
                    reason: format!("starting rank {rank}: {e}"),
                })?;
            handles.push(handle);
        }
        let mut threads = Self { senders, replies, kv_budgets: vec![None; world], handles };
        let budgets = threads.collect(world)?;
        threads.kv_budgets = budgets
            .into_iter()
            .map(|r| if let Some(Reply::Ready(b)) = r { b } else { None })
            .collect();
        Ok(threads)
    }

    /// Waits for one reply per rank, in any order; the first error wins.
    fn collect(&self, world: usize) -> Result<Vec<Option<Reply>>> {
        let mut out: Vec<Option<Reply>> = (0..world).map(|_| None).collect();
        let mut first_error = None;
        for _ in 0..world {
            let (rank, reply) = self.replies.recv().map_err(|_| EngineError::Device {
                device: "ranks".into(),
                reason: "a rank thread died".into(),
            })?;
            match reply {
                Ok(r) => out[rank] = Some(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn broadcast(&self, command: impl Fn() -> Command) -> Result<()> {
        for tx in &self.senders {
            tx.send(command()).map_err(|_| EngineError::Device {
                device: "ranks".into(),
                reason: "a rank thread has stopped".into(),
            })?;
        }
        Ok(())
    }

    fn allocate(
        &mut self,
        blocks: usize,
        config: &ModelConfig,
        kv_heads: usize,
        dtype: DType,
    ) -> Result<()> {
        let (num_layers, head_dim) = (config.num_layers, config.head_dim);
        self.broadcast(|| Command::AllocateKv { blocks, num_layers, kv_heads, head_dim, dtype })?;
        self.collect(self.senders.len()).map(|_| ())
    }

    fn forward(&self, batch: Arc<PagedBatch>) -> Result<Tensor> {
        self.broadcast(|| Command::Forward(batch.clone()))?;
        match self.collect(self.senders.len())?.swap_remove(0) {
            Some(Reply::Logits(Some(logits))) => Ok(logits),
            _ => Err(EngineError::Device {
                device: "ranks".into(),
                reason: "rank 0 returned no logits".into(),
            }),
        }
    }
}

impl Drop for RankThreads {
    fn drop(&mut self) {
        self.senders.clear(); // closes the channels: the rank loops end
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn placement_name(spec: DeviceSpec) -> String {
    spec.to_string()
}

/// How the ranks of one model sum their partial outputs.
#[derive(Clone)]
enum AllReduceGroup {
    InProcess(Vec<Arc<dyn AllReduce>>),
    #[cfg(feature = "nccl")]
    Nccl([std::ffi::c_char; 128]),
}

impl AllReduceGroup {
    fn new(placement: &Placement) -> Result<Self> {
        if placement.in_process_ranks || placement.device == DeviceSpec::Cpu {
            return Ok(Self::InProcess(InProcessAllReduce::group(placement.tensor_parallel)));
        }
        #[cfg(feature = "nccl")]
        {
            Ok(Self::Nccl(crate::tensor_parallel::nccl_unique_id()?))
        }
        #[cfg(not(feature = "nccl"))]
        {
            Err(EngineError::Device {
                device: placement.device.to_string(),
                reason: "tensor parallelism over GPUs needs a build with `--features cuda,nccl`"
                    .into(),
            })
        }
    }

    fn member(&self, rank: usize, world: usize, device: &Device) -> Result<Arc<dyn AllReduce>> {
        let _ = (world, device);
        match self {
            Self::InProcess(group) => Ok(group[rank].clone()),
            #[cfg(feature = "nccl")]
            Self::Nccl(id) => {
                Ok(Arc::new(crate::tensor_parallel::NcclAllReduce::join(device, rank, world, *id)?))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn rank_main(
    rank: usize,
    world: usize,
    spec: DeviceSpec,
    placement: Placement,
    group: AllReduceGroup,
    load: RankLoader,
    commands: Receiver<Command>,
    reply: Sender<(usize, Result<Reply>)>,
) {
    let setup = (|| -> Result<(Llama, Option<usize>)> {
        let device = open_device(spec)?;
        let all_reduce = group.member(rank, world, &device)?;
        let llama =
            load(Some(Shard { rank, world, all_reduce }), placement.dtype(), device.clone())?;
        let budget = kv_budget(&device, &placement)?;
        Ok((llama, budget))
    })();
    let llama = match setup {
        Ok((llama, budget)) => {
            let _ = reply.send((rank, Ok(Reply::Ready(budget))));
            llama
        }
        Err(e) => {
            let _ = reply.send((rank, Err(e)));
            return;
        }
    };
    let mut cache = None;
    for command in commands {
        let result = match command {
            Command::AllocateKv { blocks, num_layers, kv_heads, head_dim, dtype } => {
                PagedKvCache::new(
                    num_layers,
                    blocks,
                    kv_heads,
                    head_dim,
                    BLOCK_SIZE,
                    dtype,
                    &llama.device,
                )
                .map(|c| {
                    cache = Some(c);
                    Reply::Allocated
                })
            }
            Command::Forward(batch) => match &cache {
                Some(cache) => llama
                    .forward_paged(&batch, cache)
                    .map(|logits| Reply::Logits((rank == 0).then_some(logits))),
                None => Err(EngineError::Device {
                    device: spec.to_string(),
                    reason: "forward before the cache was allocated".into(),
                }),
            },
        };
        if reply.send((rank, result)).is_err() {
            return;
        }
    }
}

/// Bytes of a model's weights on each rank (dense, `dtype`), from its shape.
pub fn weight_bytes_per_rank(config: &ModelConfig, degree: usize, dtype: DType) -> usize {
    let c = config;
    let attention = c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
        + c.num_heads * c.head_dim * c.hidden_size;
    let mlp = 3 * c.hidden_size * c.intermediate_size;
    let replicated = c.vocab_size * c.hidden_size * if c.tie_word_embeddings { 1 } else { 2 };
    (c.num_layers * (attention + mlp) / degree + replicated) * dtype.size_in_bytes()
}

/// Fails when the model needs something the paged path (GPU kernels, tensor parallelism)
/// does not do yet, naming the family and what.
pub fn check_paged_support(config: &ModelConfig, path: &Path) -> Result<()> {
    let p = &config.particulars;
    let missing = if p.attention_softcap.is_some() {
        Some("soft-capped attention scores".to_string())
    } else if let Some(w) = p.layer_windows.iter().flatten().min() {
        Some(format!("sliding-window attention (a window of {w} positions)"))
    } else {
        p.partial_rotary_dims.map(|dims| {
            format!("rotary embeddings over {dims} of {} head dimensions", config.head_dim)
        })
    };
    match missing {
        Some(what) => Err(EngineError::NotOnPagedPath {
            path: path.into(),
            family: config.architecture.as_str().into(),
            what,
        }),
        None => Ok(()),
    }
}

/// Fails before loading when the weights cannot fit on each rank's GPU.
pub fn check_fits(config: &ModelConfig, placement: &Placement, path: &Path) -> Result<()> {
    let DeviceSpec::Cuda(_) = placement.device else { return Ok(()) };
    let need = weight_bytes_per_rank(config, placement.tensor_parallel, placement.dtype());
    let need_on_device =
        if placement.in_process_ranks { need * placement.tensor_parallel } else { need };
    for spec in placement.rank_devices() {
        if let Some((free, total)) = crate::placement::free_memory(spec)? {
            let usable = (placement.gpu_memory_fraction * total as f64) as usize;
            let usable = usable.min(free);
            if need_on_device + GPU_ACTIVATION_RESERVE > usable {
                return Err(EngineError::DoesNotFit {
                    path: path.to_path_buf(),
                    device: spec.to_string(),
                    reason: format!(
                        "its weights take {:.1} GiB per GPU in {:?} at tensor parallelism {}, and {:.1} GiB of {:.1} GiB are usable there; \
                         shard it over more GPUs (--tensor-parallel)",
                        need_on_device as f64 / (1u64 << 30) as f64,
                        placement.dtype(),
                        placement.tensor_parallel,
                        usable as f64 / (1u64 << 30) as f64,
                        total as f64 / (1u64 << 30) as f64,
                    ),
                });
            }
        }
    }
    Ok(())
}
