//! Tests of quantized storage: rounding error, exactness on the grid, packing, bytes, residual
//! rules, sub-blocks.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::*;

const BITS: [u32; 3] = [2, 4, 8];
const AXES: [QuantAxis; 2] = [QuantAxis::PerToken, QuantAxis::PerChannel];

fn scheme(bits: u32, group: usize, axis: QuantAxis, symmetric: bool) -> QuantScheme {
    QuantScheme {
        bits,
        group,
        axis,
        symmetric,
        residual: 0,
        rule: ResidualRule::Accumulate,
    }
}

fn with_rule(s: QuantScheme, residual: usize, rule: ResidualRule) -> QuantScheme {
    QuantScheme {
        residual,
        rule,
        ..s
    }
}

/// Uniform values in [-3, 3] plus a per-channel offset (keys have outlier channels).
fn random(h: usize, n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..h * n * d)
        .map(|i| rng.gen_range(-3.0f32..3.0) + (i % d) as f32 * 0.5)
        .collect()
}

fn tensor(v: &[f32], h: usize, n: usize, d: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (h, n, d), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Index of the group holding element `(h, t, c)` among `[h, n, d]` entries.
fn group_of(s: &QuantScheme, n: usize, d: usize, (h, t, c): (usize, usize, usize)) -> usize {
    match s.axis {
        QuantAxis::PerToken => (h * n + t) * (d / s.group) + c / s.group,
        QuantAxis::PerChannel => (h * (n / s.group) + t / s.group) * d + c,
    }
}

fn coords(n: usize, d: usize, i: usize) -> (usize, usize, usize) {
    (i / (n * d), i / d % n, i % d)
}

#[test]
fn rounding_error_is_within_half_a_step_and_the_step_is_tight() {
    let (h, n, d, g) = (2, 64, 16, 8);
    for axis in AXES {
        for bits in BITS {
            for symmetric in [false, true] {
                let s = scheme(bits, g, axis, symmetric);
                let x = random(h, n, d, bits as u64);
                let f = Quantized::encode(&tensor(&x, h, n, d), s).unwrap();
                assert_eq!((f.quantized_len(), f.residual_len()), (n, 0));
                let back = flat(&f.block(0, n).unwrap());
                let scales = flat(f.scales.as_ref().unwrap());
                let zeros = f.zeros.as_ref().map(flat);
                assert_eq!(zeros.is_none(), symmetric);
                // Per group: true min, max and max |x|, on the host.
                let groups = scales.len();
                let mut lo = vec![f32::INFINITY; groups];
                let mut hi = vec![f32::NEG_INFINITY; groups];
                for (i, &v) in x.iter().enumerate() {
                    let gi = group_of(&s, n, d, coords(n, d, i));
                    lo[gi] = lo[gi].min(v);
                    hi[gi] = hi[gi].max(v);
                }
                let mut worst = 0f32;
                for (i, (&v, &b)) in x.iter().zip(&back).enumerate() {
                    let gi = group_of(&s, n, d, coords(n, d, i));
                    let step = scales[gi];
                    let exact = if symmetric {
                        lo[gi].abs().max(hi[gi].abs()) / ((1 << (bits - 1)) - 1) as f32
                    } else {
                        (hi[gi] - lo[gi]) / ((1 << bits) - 1) as f32
                    };
                    // Rounded up to f16, by less than two f16 steps.
                    assert!(
                        step >= exact && step <= exact * (1.0 + 1.0 / 512.0),
                        "{s:?}: scale {step} for {exact}"
                    );
                    // The f16 zero point is off the group minimum by at most half an f16 step.
                    let zero_err = zeros.as_ref().map_or(0.0, |z| {
                        let e = (z[gi] - lo[gi]).abs();
                        assert!(e <= lo[gi].abs() / 2048.0 + 1e-7, "{s:?}: zero {}", z[gi]);
                        e
                    });
                    let err = (v - b).abs();
                    assert!(
                        err <= step / 2.0 + zero_err + 1e-5,
                        "{s:?}: |{v} - {b}| > {step} / 2"
                    );
                    worst = worst.max(err / step);
                }
                // The bound is attained, not vacuous: some value sits near the middle of a step.
                assert!(worst > 0.4, "{s:?}: worst error {worst} steps");
            }
        }
    }
}

/// Values `zero + code * step` per group (asymmetric) or `(code - mid) * step` (symmetric), with
/// the extreme codes present in every group, `zero` and `step` exact in f16.
fn on_grid(s: &QuantScheme, h: usize, n: usize, d: usize) -> Vec<f32> {
    let levels = (1usize << s.bits) - 1;
    let half = (1usize << (s.bits - 1)) - 1;
    (0..h * n * d)
        .map(|i| {
            let (hh, t, c) = coords(n, d, i);
            let gi = group_of(s, n, d, (hh, t, c));
            let pos = match s.axis {
                QuantAxis::PerToken => c % s.group,
                QuantAxis::PerChannel => t % s.group,
            };
            let step = 2f32.powi(-(1 + (gi % 4) as i32));
            if s.symmetric {
                let k = match pos {
                    0 => half as i64,
                    1 => -(half as i64),
                    _ => ((pos * 5 + gi) % (2 * half + 1)) as i64 - half as i64,
                };
                k as f32 * step
            } else {
                let k = match pos {
                    0 => 0,
                    1 => levels,
                    _ => (pos * 5 + gi) % (levels + 1),
                };
                -1.25 + 0.375 * (gi % 7) as f32 + k as f32 * step
            }
        })
        .collect()
}

#[test]
fn values_on_the_grid_read_back_exactly() {
    let (h, n, d, g) = (2, 32, 16, 8);
    for axis in AXES {
        for bits in BITS {
            for symmetric in [false, true] {
                let s = scheme(bits, g, axis, symmetric);
                let x = on_grid(&s, h, n, d);
                let f = Quantized::encode(&tensor(&x, h, n, d), s).unwrap();
                assert_eq!(flat(&f.block(0, n).unwrap()), x, "{s:?}");
            }
        }
    }
}

#[test]
fn codes_pack_lowest_bits_first_and_unpack_exactly() {
    let q = Tensor::from_vec(vec![1f32, 2., 3., 0.], (1, 1, 4), &Device::Cpu).unwrap();
    let p: Vec<u8> = pack(&q, 2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(p, vec![1 + 2 * 4 + 3 * 16]);
    let q = Tensor::from_vec(vec![9f32, 14.], (1, 1, 2), &Device::Cpu).unwrap();
    let p: Vec<u8> = pack(&q, 4)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(p, vec![9 + 14 * 16]);
    for bits in BITS {
        let levels = (1u32 << bits) as usize;
        let codes: Vec<f32> = (0..3 * 64).map(|i| ((i * 7) % levels) as f32).collect();
        let q = Tensor::from_vec(codes.clone(), (3, 2, 32), &Device::Cpu).unwrap();
        let packed = pack(&q, bits).unwrap();
        assert_eq!(packed.dims(), &[3, 2, 32 * bits as usize / 8]);
        assert_eq!(packed.dtype(), DType::U8);
        assert_eq!(flat(&unpack(&packed, bits).unwrap()), codes);
    }
}

#[test]
fn bytes_match_the_analytic_size() {
    let (h, d) = (2, 16);
    for axis in AXES {
        for bits in BITS {
            for symmetric in [false, true] {
                for rule in [
                    ResidualRule::Sliding,
                    ResidualRule::Blocks,
                    ResidualRule::Accumulate,
                ] {
                    let s = with_rule(scheme(bits, 4, axis, symmetric), 8, rule);
                    for n in [1, 7, 8, 13, 24, 40] {
                        let f = Quantized::encode(&tensor(&random(h, n, d, 1), h, n, d), s);
                        let f = Stored::Quantized(f.unwrap());
                        assert_eq!(f.bytes(), s.bytes_for(h, n, d, 4), "{s:?} n={n}");
                    }
                }
            }
        }
    }
    // By hand: 10 entries, 4 bits per token in groups of 8, asymmetric, sliding residual of 4:
    // 6 quantized entries -> 2 x 6 x 16 / 2 = 96 code bytes, 2 x 6 x 2 groups x (scale + zero)
    // x 2 bytes = 96; residual 2 x 4 x 16 f32 = 512.
    let s = with_rule(
        scheme(4, 8, QuantAxis::PerToken, false),
        4,
        ResidualRule::Sliding,
    );
    assert_eq!(s.bytes_for(2, 10, 16, 4), 96 + 96 + 512);
    // Per channel, 2 bits, groups of 4 entries, blocks of 8: 20 entries -> 16 quantized
    // (2 x 16 x 16 / 4 = 128 code bytes, 2 x 4 x 16 x 4 = 512 scale and zero bytes), 4 residual.
    let s = with_rule(
        scheme(2, 4, QuantAxis::PerChannel, false),
        8,
        ResidualRule::Blocks,
    );
    assert_eq!(s.bytes_for(2, 20, 16, 4), 128 + 512 + 2 * 4 * 16 * 4);
}

/// Encode `first` entries, then append `steps` chunks; after each, (quantized, residual) lengths
/// must be as listed, the reconstruction within half a step of everything given, and the bytes
/// those of the two parts.
fn run_rule(
    s: QuantScheme,
    first: usize,
    steps: &[(usize, (usize, usize))],
    start: (usize, usize),
) {
    let (h, d) = (2, 8);
    let total = first + steps.iter().map(|(t, _)| t).sum::<usize>();
    let all = random(h, total, d, 3);
    let x = tensor(&all, h, total, d);
    let mut f = Quantized::encode(&x.narrow(1, 0, first).unwrap(), s).unwrap();
    assert_eq!((f.quantized_len(), f.residual_len()), start, "{s:?} encode");
    let mut n = first;
    for &(t, want) in steps {
        f.append(&x.narrow(1, n, t).unwrap()).unwrap();
        n += t;
        assert_eq!(
            (f.quantized_len(), f.residual_len()),
            want,
            "{s:?} after {n}"
        );
        let back = f.block(0, n).unwrap();
        let err: f32 = (back - x.narrow(1, 0, n).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        // Values span at most 6 + 3.5 (offsets): half a 2-bit step is below 1.6.
        assert!(err <= 1.6, "{s:?}: error {err}");
        // The residual is exact.
        let r = f.residual_len();
        if r > 0 {
            let tail = f.block(n - r, r).unwrap();
            assert_eq!(flat(&tail), flat(&x.narrow(1, n - r, r).unwrap()));
        }
        assert_eq!(
            Stored::Quantized(f.clone()).bytes(),
            s.quantized_bytes(h, f.quantized_len(), d) + h * r * d * 4
        );
    }
}

#[test]
fn residual_rules_follow_kivi_and_hf() {
    let tok = scheme(2, 4, QuantAxis::PerToken, false);
    let chan = scheme(2, 4, QuantAxis::PerChannel, false);
    // KIVI values: the last 8 stay full precision; older ones are quantized as they leave.
    let sliding = with_rule(tok, 8, ResidualRule::Sliding);
    run_rule(sliding, 20, &[(1, (13, 8)), (3, (16, 8))], (12, 8));
    run_rule(sliding, 5, &[(3, (0, 8)), (1, (1, 8)), (2, (3, 8))], (0, 5));
    // KIVI keys: whole blocks of 8 quantized at encoding, then each time 8 have accumulated.
    let blocks = with_rule(chan, 8, ResidualRule::Blocks);
    run_rule(
        blocks,
        20,
        &[(3, (16, 7)), (1, (24, 0)), (1, (24, 1)), (10, (32, 3))],
        (16, 4),
    );
    run_rule(blocks, 5, &[(2, (0, 7)), (1, (8, 0))], (0, 5));
    // HF QuantizedCache: everything quantized at encoding, then all of the residual once it holds 8.
    let acc = with_rule(tok, 8, ResidualRule::Accumulate);
    run_rule(
        acc,
        5,
        &[(7, (5, 7)), (1, (13, 0)), (3, (13, 3)), (10, (26, 0))],
        (5, 0),
    );
    // Per channel, the rules move whole groups only.
    let chan_sliding = with_rule(chan, 6, ResidualRule::Sliding);
    run_rule(
        chan_sliding,
        13,
        &[(1, (8, 6)), (2, (8, 8)), (1, (8, 9)), (1, (12, 6))],
        (4, 9),
    );
}

#[test]
fn sub_blocks_equal_rows_of_the_full_reconstruction() {
    let (h, d) = (2, 8);
    let n = 45;
    let x = tensor(&random(h, n, d, 5), h, n, d);
    for axis in AXES {
        // Blocks of 16 in groups of 8: 32 quantized entries (4 groups per channel), 13 residual.
        let s = with_rule(scheme(4, 8, axis, false), 16, ResidualRule::Blocks);
        let f = Quantized::encode(&x, s).unwrap();
        assert_eq!((f.quantized_len(), f.residual_len()), (32, 13));
        let full = f.block(0, n).unwrap();
        for (start, len) in [
            (0, 45),
            (3, 5),
            (7, 2),
            (8, 8),
            (30, 6),
            (31, 10),
            (40, 5),
            (33, 1),
        ] {
            let b = f.block(start, len).unwrap();
            assert_eq!(b.dims3().unwrap(), (h, len, d));
            assert_eq!(
                flat(&b),
                flat(&full.narrow(1, start, len).unwrap()),
                "{axis:?} {start}+{len}"
            );
        }
        assert!(f.block(40, 6).is_err());
    }
}

#[test]
fn keeps_the_cache_dtype_and_re_encodes_alike() {
    let (h, n, d) = (2, 12, 8);
    let x = tensor(&random(h, n, d, 9), h, n, d)
        .to_dtype(DType::BF16)
        .unwrap();
    let s = with_rule(
        scheme(4, 4, QuantAxis::PerToken, false),
        4,
        ResidualRule::Sliding,
    );
    let f = Quantized::encode(&x, s).unwrap();
    assert_eq!(f.block(0, n).unwrap().dtype(), DType::BF16);
    assert_eq!(
        Stored::Quantized(f.clone()).bytes(),
        s.bytes_for(h, n, d, 2)
    );
    let survivors = x.narrow(0, 1, 1).unwrap().narrow(1, 0, 6).unwrap();
    let again = f.encode_like(&survivors, 1..2).unwrap();
    assert_eq!(again.kind(), "quantized");
    assert_eq!((again.n_heads(), again.len()), (1, 6));
    assert_eq!(again.bytes(), s.bytes_for(1, 6, d, 2));
}

#[test]
fn encode_rejects_schemes_that_do_not_fit() {
    let x = tensor(&random(1, 8, 12, 0), 1, 8, 12);
    let bad = [
        scheme(3, 4, QuantAxis::PerToken, false),
        scheme(4, 0, QuantAxis::PerToken, false),
        scheme(4, 8, QuantAxis::PerToken, false), // 8 does not divide 12
        with_rule(
            scheme(4, 4, QuantAxis::PerChannel, false),
            6,
            ResidualRule::Blocks,
        ),
    ];
    for s in bad {
        assert!(Quantized::encode(&x, s).is_err(), "{s:?}");
    }
    let x = tensor(&random(1, 8, 6, 0), 1, 8, 6); // 6 channels x 2 bits: not whole bytes
    assert!(Quantized::encode(&x, scheme(2, 2, QuantAxis::PerToken, false)).is_err());
    let mut f = Quantized::encode(
        &tensor(&random(1, 8, 8, 0), 1, 8, 8),
        scheme(4, 4, QuantAxis::PerToken, false),
    )
    .unwrap();
    assert!(f.append(&tensor(&random(2, 1, 8, 0), 2, 1, 8)).is_err());
}

/// The same encoding on the GPU: codes, scales and reconstructions equal the CPU's bit for bit
/// (every step is exact or correctly rounded), and in bf16 (the CUDA cache dtype) within half a
/// step plus bf16 rounding.
#[cfg(feature = "cuda")]
#[test]
fn cuda_encodes_like_the_cpu() {
    let gpu = Device::new_cuda(0).unwrap();
    let (h, n, d) = (2, 48, 16);
    let x = tensor(&random(h, n, d, 11), h, n, d);
    for axis in AXES {
        for bits in BITS {
            for symmetric in [false, true] {
                let s = with_rule(scheme(bits, 8, axis, symmetric), 16, ResidualRule::Blocks);
                let mut cpu = Quantized::encode(&x.narrow(1, 0, 40).unwrap(), s).unwrap();
                let mut cuda =
                    Quantized::encode(&x.narrow(1, 0, 40).unwrap().to_device(&gpu).unwrap(), s)
                        .unwrap();
                cpu.append(&x.narrow(1, 40, 8).unwrap()).unwrap();
                cuda.append(&x.narrow(1, 40, 8).unwrap().to_device(&gpu).unwrap())
                    .unwrap();
                assert_eq!(cuda.quantized_len(), cpu.quantized_len());
                for (a, b) in cpu.tensors().into_iter().zip(cuda.tensors()) {
                    assert_eq!(b.device().location(), gpu.location());
                    assert_eq!(flat(a), flat(b), "{s:?}");
                }
                for (start, len) in [(0, n), (5, 20), (30, 18)] {
                    let (a, b) = (
                        cpu.block(start, len).unwrap(),
                        cuda.block(start, len).unwrap(),
                    );
                    assert_eq!(flat(&a), flat(&b), "{s:?} {start}+{len}");
                }
                // bf16 on the GPU, as the model stores its cache there.
                let xb = x.to_dtype(DType::BF16).unwrap().to_device(&gpu).unwrap();
                let f = Quantized::encode(&xb, scheme(bits, 8, axis, symmetric)).unwrap();
                let back = flat(&f.block(0, n).unwrap());
                let orig = flat(&xb);
                // Values lie in [-3, 10.5] and span at most 9.5 per group: half a step, plus bf16
                // rounding (2^-9 relative) and the f16 zero point.
                let step = if symmetric {
                    10.5 / ((1u32 << (bits - 1)) - 1) as f32
                } else {
                    9.5 / ((1u32 << bits) - 1) as f32
                };
                let bound = step / 2.0 + 0.05;
                let worst = orig
                    .iter()
                    .zip(&back)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= bound, "{s:?}: bf16 error {worst} > {bound}");
            }
        }
    }
}
