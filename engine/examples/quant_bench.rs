//! The decode-shaped products on one thread, f32 (herd's small-m kernel, candle's gemm) against
//! GGUF blocks × 8-bit activations (quant_matmul: Q4_1 projections, the Q8_0 LM head), in
//! GFLOP/s of CPU time — CPU time because the machine is shared: wall time would measure the
//! neighbours.
//! `cargo run --release -p herd-engine --example quant_bench`
//!
//! `… --example quant_bench -- types [--no-vnni]`: instead, every GGUF type the packed kernel
//! takes, side by side on the default model's MLP shapes and a 2048 × 2048 projection at 1 and
//! 16 activation rows, against candle's `QMatMul` on the same blocks; rounds alternate between
//! the types and cells are medians.
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use herd_engine::quant_matmul::{self, PackedWeights, Q8Rows};

fn cpu_seconds() -> f64 {
    let mut u: libc_rusage = unsafe { std::mem::zeroed() };
    unsafe { getrusage(0, &mut u) };
    u.utime[0] as f64 + u.utime[1] as f64 * 1e-6 + u.stime[0] as f64 + u.stime[1] as f64 * 1e-6
}

#[repr(C)]
struct libc_rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    rest: [i64; 14],
}
extern "C" {
    fn getrusage(who: i32, usage: *mut libc_rusage) -> i32;
}

/// Median over `reps` rounds of CPU seconds per call.
fn time(mut f: impl FnMut(), calls: usize, reps: usize) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let c = cpu_seconds();
            for _ in 0..calls {
                f();
            }
            (cpu_seconds() - c) / calls as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    // candle's quantized matmul runs on its own pool (spinning workers): one thread, as ours.
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().unwrap();
    if std::env::args().nth(1).as_deref() == Some("types") {
        if std::env::args().nth(2).as_deref() == Some("--no-vnni") {
            quant_matmul::set_vnni_enabled(false);
        }
        // On the pool's own thread, so the packed kernel's parallel loop runs inline, as
        // candle's does (no hand-off between threads in the timings).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        return pool.install(types);
    }
    let dev = Device::Cpu;
    println!(
        "{:>6} {:>6} {:>5} {:>12} {:>12} {:>12} {:>12}  (GFLOP/s per CPU-second, 1 thread)",
        "n", "k", "m", "f32 kernel", "gemm", "packed×q8", "q8 quantize"
    );
    for (n, k, dtype) in [
        (3072usize, 576usize, GgmlDType::Q4_1),
        (576, 1536, GgmlDType::Q4_1),
        (960, 576, GgmlDType::Q4_1),
        (49152, 576, GgmlDType::Q8_0),
    ] {
        println!("{dtype:?}");
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let q4 = PackedWeights::from_qtensor(&QTensor::quantize(&w, dtype)?).unwrap();
        let sizes: &[usize] = if n > 10_000 { &[1, 16, 48] } else { &[1, 4, 16, 48, 128, 512] };
        for &m in sizes {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let flops = 2.0 * (m * n * k) as f64 / 1e9;
            let calls = (2e8 / (m * n * k) as f64).ceil() as usize;
            let f32k = if m <= 64 {
                time(
                    || {
                        herd_engine::cpu_kernels::matmul_xwt(&x, &w).unwrap();
                    },
                    calls,
                    5,
                )
            } else {
                f64::NAN
            };
            let wt = w.t()?;
            let gemm = time(
                || {
                    x.matmul(&wt).unwrap();
                },
                calls,
                5,
            );
            let mut xq = Q8Rows::default();
            let mut y = vec![0f32; m * n];
            let q = time(
                || {
                    xq.quantize(&xv, m, k);
                    quant_matmul::matmul(&xq, &q4, &mut y);
                },
                calls,
                5,
            );
            let quant = time(|| xq.quantize(&xv, m, k), calls, 5);
            println!(
                "{n:>6} {k:>6} {m:>5} {:>12.1} {:>12.1} {:>12.1} {:>11.1}%",
                flops / f32k,
                flops / gemm,
                flops / q,
                100.0 * quant / q
            );
        }
    }
    Ok(())
}

/// The packed kernel per weight type: GFLOP/s and GB/s of GGUF weight bytes per CPU-second.
fn types() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let all = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];
    let rounds = 11;
    println!(
        "(1 thread, per CPU-second; median of {rounds} rounds, each round every type in turn)"
    );
    println!(
        "| {:>5} | {:>5} | {:>3} | {:>5} | {:>6} | {:>11} | {:>13} | {:>11} |",
        "n", "k", "m", "type", "bits/w", "packed GF/s", "packed GB/s w", "candle GF/s"
    );
    println!(
        "|------:|------:|----:|------:|-------:|------------:|--------------:|------------:|"
    );
    // The default model's MLP (k-quants need rows of a multiple of 256 values: not 576) and
    // a 1B-class attention projection.
    for (n, k) in [(576usize, 1536usize), (1536, 576), (2048, 2048)] {
        let dtypes: Vec<GgmlDType> =
            all.iter().copied().filter(|d| k % d.block_size() == 0).collect();
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let quantized: Vec<(QMatMul, PackedWeights)> = dtypes
            .iter()
            .map(|&d| {
                let q = QTensor::quantize(&w, d)?;
                let p = PackedWeights::from_qtensor(&q)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                Ok((QMatMul::from_arc(std::sync::Arc::new(q))?, p))
            })
            .collect::<candle_core::Result<_>>()?;
        for m in [1usize, 16] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let calls = (1e8 / (m * n * k) as f64).ceil() as usize;
            let mut packed = vec![Vec::new(); dtypes.len()];
            let mut candle = vec![Vec::new(); dtypes.len()];
            let mut xq = Q8Rows::default();
            let mut y = vec![0f32; m * n];
            for _ in 0..rounds {
                for (i, (q, p)) in quantized.iter().enumerate() {
                    packed[i].push(time(
                        || {
                            xq.quantize(&xv, m, k);
                            quant_matmul::matmul(&xq, p, &mut y);
                        },
                        calls,
                        1,
                    ));
                    candle[i].push(time(
                        || {
                            use candle_core::Module;
                            q.forward(&x).unwrap();
                        },
                        calls,
                        1,
                    ));
                }
            }
            let flops = 2.0 * (m * n * k) as f64 / 1e9;
            for (i, d) in dtypes.iter().enumerate() {
                let bytes = (n * k / d.block_size() * d.type_size()) as f64;
                let (p, c) = (median(&mut packed[i]), median(&mut candle[i]));
                println!(
                    "| {n:>5} | {k:>5} | {m:>3} | {:>5} | {:>6.2} | {:>11.1} | {:>13.1} | {:>11.1} |",
                    format!("{d:?}"),
                    8.0 * bytes / (n * k) as f64,
                    flops / p,
                    bytes / p / 1e9,
                    flops / c
                );
            }
        }
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
