//! Compares ways of multiplying activations by a SmolLM2-sized weight on this CPU:
//! dense f32 with W stored [in,out] vs [out,in] (transposed view), and GGUF Q4_1 / Q8_0 blocks.
//! `cargo run --release -p herd-engine --example linear_bench`
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

fn time<F: FnMut()>(mut f: F, reps: usize) -> f64 {
    f();
    let mut v = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (n, k) = (3072usize, 576usize); // fused gate+up
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
    let w_t = w.t()?.contiguous()?;
    let q41 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_1)?)?;
    let q80 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
    println!("{:>5} {:>12} {:>12} {:>12} {:>12}  (GFLOP/s)", "m", "f32[in,out]", "f32 w.t()", "q4_1", "q8_0");
    for m in [1usize, 4, 8, 16, 32, 64, 128, 512] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let flops = 2.0 * (m * n * k) as f64 / 1e9;
        let reps = if m >= 128 { 10 } else { 40 };
        let a = time(|| { x.matmul(&w_t).unwrap(); }, reps);
        let b = time(|| { x.matmul(&w.t().unwrap()).unwrap(); }, reps);
        let c = time(|| { q41.forward(&x).unwrap(); }, reps);
        let d = time(|| { q80.forward(&x).unwrap(); }, reps);
        println!("{m:>5} {:>12.1} {:>12.1} {:>12.1} {:>12.1}", flops / a, flops / b, flops / c, flops / d);
    }
    Ok(())
}
