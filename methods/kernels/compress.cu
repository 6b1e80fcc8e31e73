// The methods' own CUDA kernels for merging, low rank and quantization (launched by
// `methods/src/kernels/cuda.rs`): run sums (kvmerger), CaM's cascade, lowrank's Jacobi sweeps,
// MiniCache's SLERP coefficients, quantization codes and scales, arg-max over runs. Selection
// kernels: select.cu.

#include <cuda_fp16.h>
#include <stdint.h>

// Sums of the rows of each run, for merging (`device_ops::run_sum_rows`): x [r, n, d] f32, run
// [r, n] u32 with runs of consecutive entries numbered 0, 1, ... along each row; out [r, n, d]
// zeroed, row s of out gets the sum of run s's rows. One thread per (row, entry, channel); the
// thread at a run's first entry walks the run in order, so the additions happen in the order of
// one sequential scatter (candle's `scatter_add`), which gave a thread per (row, channel) a walk
// over all n entries.
template <typename T>
__device__ void run_sum_rows(const T* __restrict__ x, const uint32_t* __restrict__ run,
                             T* __restrict__ out, int r, int n, int d) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)r * n * d) return;
    const int c = idx % d;
    const int i = (idx / d) % n;
    const int row = idx / ((size_t)n * d);
    const uint32_t* ru = run + (size_t)row * n;
    const uint32_t id = ru[i];
    if (i > 0 && ru[i - 1] == id) return;  // not the run's first entry
    const T* xr = x + (size_t)row * n * d;
    T acc = 0;
    for (int j = i; j < n && ru[j] == id; ++j) acc += xr[(size_t)j * d + c];
    if (id < (uint32_t)n) out[((size_t)row * n + id) * d + c] = acc;
}

extern "C" __global__ void run_sum_rows_f32(const float* __restrict__ x,
                                            const uint32_t* __restrict__ run,
                                            float* __restrict__ out, int r, int n, int d) {
    run_sum_rows<float>(x, run, out, r, n, d);
}

extern "C" __global__ void run_sum_rows_f64(const double* __restrict__ x,
                                            const uint32_t* __restrict__ run,
                                            double* __restrict__ out, int r, int n, int d) {
    run_sum_rows<double>(x, run, out, r, n, d);
}

// Arg-max over runs (`device_ops::run_argmax`, kvmerger's pivots and set scores): at each entry,
// the index and value of the largest `values` from its run's start up to it, ties to the later
// entry (`>=`, as the host's `Iterator::reduce`). The thread at a run's first entry walks the run.
// values, val: [r, n] f32; run: [r, n] u32 (runs of consecutive entries); idx: [r, n] u32.
extern "C" __global__ void run_argmax_f32(const float* __restrict__ values,
                                          const uint32_t* __restrict__ run,
                                          uint32_t* __restrict__ idx, float* __restrict__ val,
                                          int r, int n) {
    const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (size_t)r * n) return;
    const int i = t % n;
    const size_t row = t / n;
    const uint32_t* ru = run + row * n;
    if (i > 0 && ru[i - 1] == ru[i]) return;  // not the run's first entry
    const float* v = values + row * n;
    float best = v[i];
    uint32_t bi = (uint32_t)i;
    for (int j = i; j < n && ru[j] == ru[i]; ++j) {
        if (v[j] >= best) {
            best = v[j];
            bi = (uint32_t)j;
        }
        idx[row * n + j] = bi;
        val[row * n + j] = best;
    }
}

// CaM's merge cascade (`merging::cam`): per head h and channel c, in entry order,
//   x_j = v_j + sum over i in [max(0, j - m_h), j) of a_i x_i,
// an evicted entry passing what it holds (received shares included) to its followers. The window
// sum is a difference of running sums P_j = sum_{i < j} a_i x_i, kept per thread in `prefix`
// ([h, n + 1, d] scratch). Each thread owns one (head, channel) and walks the entries; rows come
// in tiles of 32 loaded before the walk, so a step waits on no memory load.
// v, out: [h, n, d] f32; a: [h, n] f32; m: [h] u32 (>= 1).
#define CASCADE_TILE 32
extern "C" __global__ void cam_cascade_f32(const float* __restrict__ v,
                                           const float* __restrict__ a,
                                           const uint32_t* __restrict__ m,
                                           float* __restrict__ prefix, float* __restrict__ out,
                                           int n, int d) {
    const int h = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= d) return;
    const float* vh = v + (size_t)h * n * d;
    const float* ah = a + (size_t)h * n;
    float* ph = prefix + (size_t)h * (n + 1) * d;
    float* oh = out + (size_t)h * n * d;
    const int mh = (int)m[h];
    float running = 0.f;  // P_j
    ph[c] = 0.f;
    float vv[CASCADE_TILE], aa[CASCADE_TILE], far[CASCADE_TILE], near[CASCADE_TILE + 1];
    for (int j0 = 0; j0 < n; j0 += CASCADE_TILE) {
        const int t_end = min(CASCADE_TILE, n - j0);
#pragma unroll
        for (int t = 0; t < CASCADE_TILE; ++t) {
            const int j = j0 + t;
            const int lo = max(0, j - mh);
            vv[t] = t < t_end ? vh[(size_t)j * d + c] : 0.f;
            aa[t] = t < t_end ? ah[j] : 0.f;
            // P_lo from an earlier tile: written by this thread, visible to it.
            far[t] = (t < t_end && lo < j0) ? ph[(size_t)lo * d + c] : 0.f;
        }
        near[0] = running;
#pragma unroll
        for (int t = 0; t < CASCADE_TILE; ++t) {
            if (t < t_end) {
                const int j = j0 + t;
                const int lo = max(0, j - mh);
                const float p_lo = lo < j0 ? far[t] : near[lo - j0];
                const float x = vv[t] + (running - p_lo);
                oh[(size_t)j * d + c] = x;
                running += aa[t] * x;
                near[t + 1] = running;
                ph[(size_t)(j + 1) * d + c] = running;
            }
        }
    }
}

// Eigen-decomposition of symmetric m x m matrices (`linalg::batched_symmetric_eigen`, lowrank's
// bases): the parallel cyclic Jacobi method of the tensor-op path (the same round-robin pairs and
// the same symmetric Schur rotation J, with J[p][p] = J[q][q] = c, J[p][q] = s, J[q][p] = -s;
// A <- J^T A J, V <- V J), in f64 throughout, one block per matrix, the matrix in shared memory
// (m <= 128, m even), V in global memory. Sweeps stop when the off-diagonal norm is at most
// `tol` of the matrix norm (or after `max_sweeps`). a_in: [b, m, m]; a_out: [b, m, m], the nearly
// diagonal result; v: [b, m, m], the accumulated rotations (eigenvectors in columns).
__device__ double block_sum(double x, double* red) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = x;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += red[w];
    return total;
}

extern "C" __global__ void jacobi_eigen_f64(const double* __restrict__ a_in,
                                            double* __restrict__ a_out, double* __restrict__ v,
                                            int m, double tol, int max_sweeps) {
    extern __shared__ double sa[];  // m * m
    __shared__ double cs[64], sn[64], red[32];
    __shared__ int pp[64], qq[64];
    const int tid = threadIdx.x, nt = blockDim.x, h = m / 2, mm = m * m;
    const double* A = a_in + (size_t)blockIdx.x * mm;
    double* V = v + (size_t)blockIdx.x * mm;
    for (int i = tid; i < mm; i += nt) {
        sa[i] = A[i];
        V[i] = (i / m == i % m) ? 1.0 : 0.0;
    }
    __syncthreads();
    double local = 0.0;
    for (int i = tid; i < mm; i += nt) local += sa[i] * sa[i];
    const double norm = fmax(sqrt(block_sum(local, red)), 1e-30);
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
        local = 0.0;
        for (int i = tid; i < mm; i += nt)
            if (i / m != i % m) local += sa[i] * sa[i];
        const double off = sqrt(block_sum(local, red));
        if (off <= tol * norm) break;
        for (int r = 0; r < m - 1; ++r) {
            if (tid < h) {
                int p, q;
                if (tid == 0) {
                    p = r;
                    q = m - 1;
                } else {
                    p = (r + tid) % (m - 1);
                    q = (r + m - 1 - tid) % (m - 1);
                }
                if (p > q) { const int t = p; p = q; q = t; }
                const double x = sa[q * m + q] - sa[p * m + p];
                const double y = 2.0 * sa[p * m + q];
                const double hyp = sqrt(x * x + y * y);
                const double t0 = y / fmax(fabs(x) + hyp, 1.1754943508222875e-38);
                const double t = x >= 0.0 ? t0 : -t0;
                const double c = 1.0 / sqrt(t * t + 1.0);
                pp[tid] = p;
                qq[tid] = q;
                cs[tid] = c;
                sn[tid] = t * c;
            }
            __syncthreads();
            // Columns: A <- A J and V <- V J.
            for (int w = tid; w < m * h; w += nt) {
                const int i = w / h, k = w % h, p = pp[k], q = qq[k];
                const double c = cs[k], s = sn[k];
                const double ap = sa[i * m + p], aq = sa[i * m + q];
                sa[i * m + p] = c * ap - s * aq;
                sa[i * m + q] = s * ap + c * aq;
                const double vp = V[i * m + p], vq = V[i * m + q];
                V[i * m + p] = c * vp - s * vq;
                V[i * m + q] = s * vp + c * vq;
            }
            __syncthreads();
            // Rows: A <- J^T A.
            for (int w = tid; w < m * h; w += nt) {
                const int j = w % m, k = w / m, p = pp[k], q = qq[k];
                const double c = cs[k], s = sn[k];
                const double bp = sa[p * m + j], bq = sa[q * m + j];
                sa[p * m + j] = c * bp - s * bq;
                sa[q * m + j] = s * bp + c * bq;
            }
            __syncthreads();
        }
    }
    for (int i = tid; i < mm; i += nt) a_out[(size_t)blockIdx.x * mm + i] = sa[i];
}

// MiniCache's SLERP coefficients (`cross_layer::minicache::slerp`), per entry of the two layers'
// unit directions: angle = acos(clamp(cos, -1, 1)) and the weights of either direction,
// sin((1 - t) angle) / sin(angle) and sin(t angle) / sin(angle), or 1 - t and t where
// sin(angle) < parallel. In f64, as the host computes them; the weights are stored as f32.
// cosine: [n] f32; angle: [n] f64; ca, cb: [n] f32.
extern "C" __global__ void slerp_coefficients_f32(const float* __restrict__ cosine,
                                                  double* __restrict__ angle,
                                                  float* __restrict__ ca, float* __restrict__ cb,
                                                  int n, double t, double parallel) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const double c = fmin(fmax((double)cosine[i], -1.0), 1.0);
    const double w = acos(c);
    const double s = sin(w);
    double x = 1.0 - t, y = t;
    if (!(s < parallel)) {
        x = sin((1.0 - t) * w) / s;
        y = sin(t * w) / s;
    }
    angle[i] = w;
    ca[i] = (float)x;
    cb[i] = (float)y;
}

// Quantization (`storage::quantized`, `QuantScheme::quantize`), the same arithmetic as its tensor
// ops, bit for bit: per group, asymmetric zero = f16(min) and scale over max - min, or symmetric
// scale over max |x|; scale = range / steps (a true division), at least 2^-14, rounded UP to f16;
// code = round((x - zero) / scale) or round(x / scale) + 2^(bits - 1) (round half away from zero),
// clamped to [0, 2^bits - 1], packed 8 / bits per byte along the channels, first code lowest.
// Groups: per token, `group` consecutive channels of one entry (params [h, m, d / group]); per
// channel, `group` consecutive entries of one channel (params [h, m / group, d]). x: [h, m, d] f32.
__device__ __forceinline__ size_t quant_param_index(int t, int c, int m, int d, int group,
                                                    int per_token) {
    // Within one head: the group of entry t, channel c.
    return per_token ? (size_t)t * (d / group) + c / group : (size_t)(t / group) * d + c;
}

// One thread per group: its scale (and zero point).
extern "C" __global__ void quant_params_f32(const float* __restrict__ x, __half* __restrict__ scales,
                                            __half* __restrict__ zeros, int h, int m, int d,
                                            int group, int per_token, int symmetric, int bits) {
    const size_t per_head = per_token ? (size_t)m * (d / group) : (size_t)(m / group) * d;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)h * per_head) return;
    const int head = idx / per_head;
    const size_t p = idx % per_head;
    const float* xh = x + (size_t)head * m * d;
    // First element and stride of the group.
    size_t first, stride;
    if (per_token) {
        const size_t t = p / (d / group), gc = p % (d / group);
        first = t * d + gc * group;
        stride = 1;
    } else {
        const size_t gt = p / d, c = p % d;
        first = gt * group * d + c;
        stride = d;
    }
    float lo = INFINITY, hi = -INFINITY, amax = 0.f;
    for (int j = 0; j < group; ++j) {
        const float v = xh[first + j * stride];
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
        amax = fmaxf(amax, fabsf(v));
    }
    const float levels = (float)((1u << bits) - 1);
    const float steps = symmetric ? (float)((1u << (bits - 1)) - 1) : levels;
    const float range = symmetric ? amax : __fsub_rn(hi, lo);
    const float raw = fmaxf(__fdiv_rn(range, steps), 1.0f / 16384.0f);
    // Rounded up to f16: the nearest, or raw (1 + 2^-10) rounded where the nearest is below.
    const __half nearest = __float2half_rn(raw);
    const __half up = __float2half_rn(__fmul_rn(raw, 1.0f + 1.0f / 1024.0f));
    scales[idx] = __half2float(nearest) < raw ? up : nearest;
    if (!symmetric) zeros[idx] = __float2half_rn(lo);
}

// One thread per output byte: its 8 / bits codes.
extern "C" __global__ void quant_codes_f32(const float* __restrict__ x,
                                           const __half* __restrict__ scales,
                                           const __half* __restrict__ zeros,
                                           uint8_t* __restrict__ codes, int h, int m, int d,
                                           int group, int per_token, int symmetric, int bits) {
    const int per = 8 / bits;
    const int bytes = d / per;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)h * m * bytes) return;
    const int b = idx % bytes;
    const int t = (idx / bytes) % m;
    const int head = idx / ((size_t)m * bytes);
    const size_t per_head = per_token ? (size_t)m * (d / group) : (size_t)(m / group) * d;
    const float* xr = x + ((size_t)head * m + t) * d;
    const float levels = (float)((1u << bits) - 1);
    const float mid = (float)(1u << (bits - 1));
    uint32_t packed = 0;
    for (int j = 0; j < per; ++j) {
        const int c = b * per + j;
        const size_t pi = (size_t)head * per_head + quant_param_index(t, c, m, d, group, per_token);
        const float s = __half2float(scales[pi]);
        float q;
        if (symmetric) {
            q = __fadd_rn(roundf(__fdiv_rn(xr[c], s)), mid);
        } else {
            q = roundf(__fdiv_rn(__fsub_rn(xr[c], __half2float(zeros[pi])), s));
        }
        q = fminf(fmaxf(q, 0.f), levels);
        packed |= (uint32_t)q << (bits * j);
    }
    codes[idx] = (uint8_t)packed;
}

