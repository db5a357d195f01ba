//! Compares ways of multiplying activations by a SmolLM2-sized weight on this CPU:
//! dense f32 with W stored [in,out] vs [out,in] (transposed view), and GGUF Q4_1 / Q8_0 blocks.
//! `cargo run --release -p herd-engine --example linear_bench`
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

/// On-CPU time of this thread (ns), from the scheduler's accounting: a shared, busy machine
/// inflates wall time but hardly this. Meaningful with RAYON_NUM_THREADS=1.
fn thread_cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
}

fn time<F: FnMut()>(mut f: F, reps: usize) -> f64 {
    f();
    let cpu = std::env::var("BENCH_CPU_TIME").is_ok();
    let now = || if cpu { thread_cpu_seconds() } else { 0.0 };
    let mut v = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let c = now();
        f();
        v.push(if cpu { now() - c } else { t.elapsed().as_secs_f64() });
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // The fastest run: on a shared machine, the one least disturbed by other processes.
    if std::env::var("BENCH_MIN").is_ok() {
        v[0]
    } else {
        v[v.len() / 2]
    }
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (n, k) = (3072usize, 576usize); // fused gate+up
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
    let w_t = w.t()?.contiguous()?;
    let q41 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_1)?)?;
    let q80 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
    println!(
        "{:>5} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}  (GFLOP/s)",
        "m", "x·Wt", "x·W.t()", "(W·x.t()).t", "(Wt.t·x.t).t", "q4_1", "q8_0", "herd kernel"
    );
    for m in [1usize, 4, 8, 16, 32, 64, 128, 512] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let flops = 2.0 * (m * n * k) as f64 / 1e9;
        let reps = if m >= 128 { 10 } else { 40 };
        let a = time(
            || {
                x.matmul(&w_t).unwrap();
            },
            reps,
        );
        let b = time(
            || {
                x.matmul(&w.t().unwrap()).unwrap();
            },
            reps,
        );
        let e = time(
            || {
                w.matmul(&x.t().unwrap()).unwrap().t().unwrap().contiguous().unwrap();
            },
            reps,
        );
        let f = time(
            || {
                w_t.t()
                    .unwrap()
                    .matmul(&x.t().unwrap())
                    .unwrap()
                    .t()
                    .unwrap()
                    .contiguous()
                    .unwrap();
            },
            reps,
        );
        let c = time(
            || {
                q41.forward(&x).unwrap();
            },
            reps,
        );
        let d = time(
            || {
                q80.forward(&x).unwrap();
            },
            reps,
        );
        let g = if m <= herd_engine::cpu_kernels::SMALL_M_LIMIT * 8 {
            time(
                || {
                    herd_engine::cpu_kernels::matmul_xwt(&x, &w).unwrap();
                },
                reps,
            )
        } else {
            f64::NAN
        };
        println!(
            "{m:>5} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            flops / a,
            flops / b,
            flops / e,
            flops / f,
            flops / c,
            flops / d,
            flops / g
        );
    }
    Ok(())
}
