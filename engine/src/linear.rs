//! The one linear-layer abstraction every projection goes through: `y = x·Wᵀ (+ b)`.
//!
//! Weights are either dense (f32 on the CPU, bf16 on GPUs) or left in their GGUF
//! quantized blocks: on the CPU, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and the k-quants Q2_K..Q6_K go
//! through herd's own kernel ([`quant_matmul`]), other types through candle's `QMatMul`.
//! Tensor parallelism slots in here: a column-parallel layer is a [`Linear`] holding a slice of W's rows, a row-parallel one a slice of its columns plus
//! an all-reduce after the product ([`Linear::row_parallel`]).

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Storage, Tensor};

use crate::cpu_kernels;
use crate::error::Result;
use crate::quant_matmul::{self, PackedWeights, Q8Rows};
use crate::tensor_parallel::AllReduce;

#[derive(Debug, Clone)]
enum LinearWeight {
    /// `[out, in]` as stored; multiplied through a transposed view, which gemm reads faster
    /// than a pre-transposed copy (measured with examples/linear_bench) and which lets a
    /// tied LM head share the embedding matrix.
    Dense(Tensor),
    Quantized(QMatMul),
    /// GGUF blocks repacked for [`quant_matmul`] (CPU, f32 activations).
    Packed(Arc<PackedWeights>),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    in_features: usize,
    out_features: usize,
    /// Row-parallel layers sum the ranks' partial products before the bias.
    all_reduce: Option<Arc<dyn AllReduce>>,
}

impl Linear {
    /// A dense layer from a `[out, in]` weight, as checkpoints store it.
    pub fn dense(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        let weight = LinearWeight::Dense(weight.contiguous()?);
        Ok(Self { weight, bias, in_features, out_features, all_reduce: None })
    }

    /// A layer that multiplies by GGUF blocks directly (`[out, in]` quantized).
    pub fn quantized(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, in_features) = weight.shape().dims2()?;
        let weight = LinearWeight::Quantized(QMatMul::from_arc(weight)?);
        Ok(Self { weight, bias, in_features, out_features, all_reduce: None })
    }

    /// A CPU layer over GGUF blocks through [`quant_matmul`] (the types it supports).
    pub fn packed(weight: &QTensor, bias: Option<Tensor>) -> Result<Self> {
        Self::packed_stack(&[weight], bias)
    }

    /// [`Linear::packed`] over several `[out_i, in]` matrices stacked by rows, possibly of
    /// different types (`PackedWeights::can_stack`).
    pub fn packed_stack(parts: &[&QTensor], bias: Option<Tensor>) -> Result<Self> {
        let w = PackedWeights::stacked(parts)?;
        let (out_features, in_features) = (w.rows(), w.cols());
        let weight = LinearWeight::Packed(Arc::new(w));
        Ok(Self { weight, bias, in_features, out_features, all_reduce: None })
    }

    /// This layer as one rank's slice of a row-parallel layer: its weight holds a slice of
    /// the input columns, and the ranks' partial outputs are summed by `all_reduce`.
    pub fn row_parallel(mut self, all_reduce: Arc<dyn AllReduce>) -> Self {
        self.all_reduce = Some(all_reduce);
        self
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn is_quantized(&self) -> bool {
        matches!(
            self.weight,
            LinearWeight::Quantized(QMatMul::QTensor(_)) | LinearWeight::Packed(_)
        )
    }

    /// Whether the weight is in [`quant_matmul`]'s packed layout.
    pub fn is_packed(&self) -> bool {
        matches!(self.weight, LinearWeight::Packed(_))
    }

    /// `x`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Dense(w) if cpu_kernels::applies(x, w) => cpu_kernels::matmul_xwt(x, w)?,
            LinearWeight::Dense(w) => x.matmul(&w.t()?)?,
            LinearWeight::Quantized(q) => q.forward(x)?,
            LinearWeight::Packed(w) => packed_forward(x, w)?,
        };
        let y = match &self.all_reduce {
            Some(all_reduce) => all_reduce.sum(&y)?,
            None => y,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Bytes the weight occupies in memory.
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            LinearWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            LinearWeight::Quantized(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            LinearWeight::Packed(w) => w.bytes(),
            LinearWeight::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => {
                w.elem_count() * w.dtype().size_in_bytes()
            }
        }
    }
}

thread_local! {
    /// The quantized activations of the last product on this thread, kept for their buffers.
    static ACTIVATIONS: RefCell<Q8Rows> = RefCell::new(Q8Rows::default());
}

/// `x`: `[tokens, in]` f32 on the CPU, times packed `W`ᵀ.
fn packed_forward(x: &Tensor, w: &PackedWeights) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || k != w.cols() {
        let reason = format!(
            "packed linear: x is {:?} {:?} on {:?}, weights [{}, {}]",
            x.dims(),
            x.dtype(),
            x.device(),
            w.rows(),
            w.cols()
        );
        return Err(candle_core::Error::Msg(reason).into());
    }
    let x = x.contiguous()?;
    let mut y = vec![0f32; m * w.rows()];
    {
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else { unreachable!("checked: a CPU tensor") };
        let data = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
        ACTIVATIONS.with_borrow_mut(|q8| {
            q8.quantize(data, m, k);
            quant_matmul::matmul(q8, w, &mut y);
        });
    }
    Ok(Tensor::from_vec(y, (m, w.rows()), &Device::Cpu)?)
}
