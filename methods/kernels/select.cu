// The selection kernels of the methods (launched by `methods/src/kernels/cuda.rs`): top-k per row
// and as a mask, SnapKV's window attention sums, LagKV's scores.
//
// Top-k per row of f32 scores, for `selection::device_top_k`: each row (a KV head's
// scores) keeps its `k` highest entries, written in increasing index order, with the host's
// order: NaN ranks as -inf, -0.0 below +0.0, and among equal scores the later entries are kept.
//
// One block per row. A radix select (four 8-bit passes over an order-preserving u32 key) finds
// the k-th largest key T and how many entries equal to T are kept; one more pass writes the kept
// indices in order with a block-wide prefix sum. Work is O(5 n / threads) per row with no sort,
// so rows of any length fit (no shared-memory copy of the row).

#include <stdint.h>

// Unsigned key with the same order as the scores (IEEE total order, NaN as -inf).
__device__ __forceinline__ uint32_t order_key(float x) {
    uint32_t b = (x != x) ? 0xff800000u : __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Kept entries of equal keys with a rank (from the row's start) below `r`: those at rank >= thr.
__device__ __forceinline__ uint32_t kept_below(uint32_t r, uint32_t thr) {
    return r > thr ? r - thr : 0;
}

// Key of entry i of a row: 0 where `valid` (may be null) is 0, below every score's key (a NaN's
// key is -inf's, so no score maps to 0).
__device__ __forceinline__ uint32_t entry_key(const float* s, const uint8_t* valid, int i) {
    return (valid != nullptr && valid[i] == 0) ? 0u : order_key(s[i]);
}

// Radix select over one row (the whole block): T, the k-th largest key, and thr, how many of the
// `equal` entries whose key is T are not kept (the first ones: ties go to the later entries).
// Most significant byte first; `need` is the rank (1-based) of the wanted key among the keys that
// match `prefix` on the bytes chosen so far. Requires 1 <= k <= n.
__device__ void radix_threshold(const float* s, const uint8_t* valid, int n, uint32_t k,
                                uint32_t* T_out, uint32_t* thr_out) {
    __shared__ uint32_t hist[256];
    __shared__ uint32_t sh_prefix, sh_need, sh_equal;
    uint32_t prefix = 0, mask = 0, need = k, equal = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            uint32_t key = entry_key(s, valid, i);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            uint32_t above = 0;
            int d = 255;
            for (; d > 0; --d) {
                if (above + hist[d] >= need) break;
                above += hist[d];
            }
            sh_need = need - above;
            sh_prefix = prefix | ((uint32_t)d << shift);
            sh_equal = hist[d];
        }
        __syncthreads();
        need = sh_need;
        prefix = sh_prefix;
        equal = sh_equal;
        mask |= 255u << shift;
        __syncthreads();
    }
    // Keys above T are all kept; of the `equal` keys equal to T, the last `need`.
    *T_out = prefix;
    *thr_out = equal - need;
}

// Block-wide exclusive prefix sum of `packed` (counts below 2^16 in each half for a chunk of at
// most 1024 entries); `total` gets the chunk's sum. `warp_sums` is shared scratch of 32.
__device__ __forceinline__ uint32_t block_exclusive_scan(uint32_t packed, uint32_t* warp_sums,
                                                         uint32_t* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    uint32_t x = packed;
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    if (warp == 0) {
        uint32_t w = lane < nwarps ? warp_sums[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        warp_sums[lane] = w;
    }
    __syncthreads();
    *total = warp_sums[nwarps - 1];
    return x - packed + (warp > 0 ? warp_sums[warp - 1] : 0);
}

// scores: [rows, n] f32, contiguous. local: [rows, k] kept indices; flat: [rows, k] row * n + index.
// Requires 1 <= k <= n and blockDim.x a multiple of 32, at most 1024.
extern "C" __global__ void top_k_rows_f32(const float* __restrict__ scores,
                                          uint32_t* __restrict__ local,
                                          uint32_t* __restrict__ flat, int n, int k) {
    const int row = blockIdx.x;
    const float* s = scores + (size_t)row * n;
    __shared__ uint32_t warp_sums[32];
    uint32_t T, thr;
    radix_threshold(s, nullptr, n, (uint32_t)k, &T, &thr);

    uint32_t base_out = 0, base_eq = 0;
    for (int start = 0; start < n; start += blockDim.x) {
        const int i = start + threadIdx.x;
        uint32_t gt = 0, eq = 0;
        if (i < n) {
            const uint32_t key = order_key(s[i]);
            gt = key > T;
            eq = key == T;
        }
        // Counts of a chunk (<= 1024 entries) fit in 16 bits: equal ones high, greater ones low.
        const uint32_t packed = (eq << 16) | gt;
        uint32_t total;
        const uint32_t before = block_exclusive_scan(packed, warp_sums, &total);
        const uint32_t gt_before = before & 0xffffu, eq_before = before >> 16;
        const uint32_t rank = base_eq + eq_before;
        if (gt || (eq && rank >= thr)) {
            const uint32_t slot =
                base_out + gt_before + kept_below(rank, thr) - kept_below(base_eq, thr);
            local[(size_t)row * k + slot] = (uint32_t)i;
            flat[(size_t)row * k + slot] = (uint32_t)row * (uint32_t)n + (uint32_t)i;
        }
        const uint32_t chunk_eq = total >> 16;
        base_out += (total & 0xffffu) + kept_below(base_eq + chunk_eq, thr) - kept_below(base_eq, thr);
        base_eq += chunk_eq;
        __syncthreads();
    }
}

// The same choice as a mask (`device_ops::top_k_mask`): mask[row, i] = 1 for the ks[row] best
// entries of the row, where entries whose `valid` (u8 [rows, n], may be null) is 0 rank below
// every valid one (NaN included) and, among themselves, the later first. ks[row] >= n keeps the
// row. scores: [rows, n] f32; ks: [rows] u32; mask: [rows, n] u8. One block per row.
extern "C" __global__ void top_k_mask_f32(const float* __restrict__ scores,
                                          const uint8_t* __restrict__ valid,
                                          const uint32_t* __restrict__ ks,
                                          uint8_t* __restrict__ mask, int n) {
    const int row = blockIdx.x;
    const float* s = scores + (size_t)row * n;
    const uint8_t* v = valid != nullptr ? valid + (size_t)row * n : nullptr;
    uint8_t* out = mask + (size_t)row * n;
    const uint32_t k = ks[row];
    if (k == 0 || k >= (uint32_t)n) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = k == 0 ? 0 : 1;
        return;
    }
    __shared__ uint32_t warp_sums[32];
    uint32_t T, thr;
    radix_threshold(s, v, n, k, &T, &thr);
    uint32_t base_eq = 0;
    for (int start = 0; start < n; start += blockDim.x) {
        const int i = start + threadIdx.x;
        uint32_t gt = 0, eq = 0;
        if (i < n) {
            const uint32_t key = entry_key(s, v, i);
            gt = key > T;
            eq = key == T;
        }
        uint32_t total;
        const uint32_t eq_before = block_exclusive_scan(eq, warp_sums, &total);
        if (i < n) out[i] = (gt || (eq && base_eq + eq_before >= thr)) ? 1 : 0;
        base_eq += total;
        __syncthreads();
    }
}

// LagKV's scores (`selection::lagkv`): one block per (chunk c < chunks - 1, head). Chunk c's
// entries (from sink + c lag) are min-max normalised per channel with the range of chunk c + 1
// (at least 1e-6), an entry's raw score is the standard deviation of its normalised channels
// (unbiased), softmaxed over the chunk, for keys and values, averaged; the score is the entry's
// rank in its chunk (ascending, ties to the earlier entry) over lag. Block 0 also writes the sinks'
// 1s, the last block the 1s of the unranked tail (the last chunk and the remainder).
// k, v: [h, len, d] f32; out: [h, len] f32; raw (may be null): [h, chunks - 1, lag] f32.
// Dynamic shared memory: (4 d + 3 lag) floats.
__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

extern "C" __global__ void lagkv_scores_f32(const float* __restrict__ k, const float* __restrict__ v,
                                            float* __restrict__ out, float* __restrict__ raw_out,
                                            int len, int d, int sink, int lag, int chunks) {
    extern __shared__ float sm[];
    float* kmin = sm;
    float* krng = sm + d;
    float* vmin = sm + 2 * d;
    float* vrng = sm + 3 * d;
    float* sk = sm + 4 * d;
    float* sv = sk + lag;
    float* raw = sv + lag;
    __shared__ float sh_kmax, sh_vmax, sh_ksum, sh_vsum;
    const int c = blockIdx.x, head = blockIdx.y;
    const float* kh = k + (size_t)head * len * d;
    const float* vh = v + (size_t)head * len * d;
    float* oh = out + (size_t)head * len;
    const int t0 = sink + c * lag, r0 = t0 + lag;
    if (c == 0)
        for (int i = threadIdx.x; i < sink; i += blockDim.x) oh[i] = 1.f;
    if (c == chunks - 2)
        for (int i = sink + (chunks - 1) * lag + threadIdx.x; i < len; i += blockDim.x) oh[i] = 1.f;
    // 1. The reference chunk's range per channel.
    for (int ch = threadIdx.x; ch < d; ch += blockDim.x) {
        float kl = INFINITY, kx = -INFINITY, vl = INFINITY, vx = -INFINITY;
        for (int j = 0; j < lag; ++j) {
            const float a = kh[(size_t)(r0 + j) * d + ch], b = vh[(size_t)(r0 + j) * d + ch];
            kl = fminf(kl, a);
            kx = fmaxf(kx, a);
            vl = fminf(vl, b);
            vx = fmaxf(vx, b);
        }
        kmin[ch] = kl;
        krng[ch] = fmaxf(kx - kl, 1e-6f);
        vmin[ch] = vl;
        vrng[ch] = fmaxf(vx - vl, 1e-6f);
    }
    __syncthreads();
    // 2. Each target entry's standard deviation over its normalised channels, a warp per entry.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const float denom = (float)((d > 2 ? d : 2) - 1);
    for (int i = warp; i < lag; i += nwarps) {
        const float* kr = kh + (size_t)(t0 + i) * d;
        const float* vr = vh + (size_t)(t0 + i) * d;
        float ks = 0.f, vs = 0.f;
        for (int ch = lane; ch < d; ch += 32) {
            ks += (kr[ch] - kmin[ch]) / krng[ch];
            vs += (vr[ch] - vmin[ch]) / vrng[ch];
        }
        const float km = warp_sum(ks) / d, vm = warp_sum(vs) / d;
        float kq = 0.f, vq = 0.f;
        for (int ch = lane; ch < d; ch += 32) {
            const float a = (kr[ch] - kmin[ch]) / krng[ch] - km;
            const float b = (vr[ch] - vmin[ch]) / vrng[ch] - vm;
            kq += a * a;
            vq += b * b;
        }
        kq = warp_sum(kq);
        vq = warp_sum(vq);
        if (lane == 0) {
            sk[i] = sqrtf(kq / denom);
            sv[i] = sqrtf(vq / denom);
        }
    }
    __syncthreads();
    // 3. Softmax over the chunk, keys and values, averaged.
    if (threadIdx.x == 0) {
        float km = -INFINITY, vm = -INFINITY;
        for (int i = 0; i < lag; ++i) {
            km = fmaxf(km, sk[i]);
            vm = fmaxf(vm, sv[i]);
        }
        float ks = 0.f, vs = 0.f;
        for (int i = 0; i < lag; ++i) {
            ks += expf(sk[i] - km);
            vs += expf(sv[i] - vm);
        }
        sh_kmax = km;
        sh_vmax = vm;
        sh_ksum = ks;
        sh_vsum = vs;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < lag; i += blockDim.x) {
        const float r = (expf(sk[i] - sh_kmax) / sh_ksum + expf(sv[i] - sh_vmax) / sh_vsum) * 0.5f;
        raw[i] = r;
        if (raw_out != nullptr) raw_out[((size_t)head * (chunks - 1) + c) * lag + i] = r;
    }
    __syncthreads();
    // 4. Ranks within the chunk: below it, plus equal and earlier.
    const float inv = (float)(1.0 / (double)lag);  // as candle's `/ lag as f64` rounds it
    for (int i = threadIdx.x; i < lag; i += blockDim.x) {
        const float r = raw[i];
        int rank = 0;
        for (int j = 0; j < lag; ++j) rank += (raw[j] < r) || (raw[j] == r && j < i);
        oh[t0 + i] = (float)rank * inv;
    }
}

// Window attention summed over the window's queries (`scoring::window_attention_sums`, SnapKV's
// score before pooling), from unscaled logits [n, R, len] f32 (R = g * w rows: query head gi's
// window query i is row gi * w + i): x = logit * scale, plus mask[n, i, j - tail_start] for keys
// j >= tail_start when a mask is given; each row softmaxed; out[n, gi, j] = sum over i of the
// probabilities. The same per-element arithmetic as the tensor ops (products and additions not
// fused), sums in another order.
__device__ __forceinline__ float window_logit(const float* row, const float* mrow, int j,
                                              int tail_start, float scale) {
    float x = __fmul_rn(row[j], scale);
    if (mrow != nullptr && j >= tail_start) x = __fadd_rn(x, mrow[j - tail_start]);
    return x;
}

// Block-wide reduction (max or sum) of one value per thread; every thread gets the result.
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, y) : v + y;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? scratch[lane] : (is_max ? -INFINITY : 0.f);
        for (int o = 16; o > 0; o >>= 1) {
            const float y = __shfl_xor_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, y) : v + y;
        }
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}

// One block per (row r, head n): the row's max and sum of exp(x - max). mask may be null.
extern "C" __global__ void window_row_stats_f32(const float* __restrict__ logits,
                                                const float* __restrict__ mask,
                                                float* __restrict__ row_max,
                                                float* __restrict__ row_sum, int R, int w,
                                                int len, int tail_start, float scale) {
    __shared__ float scratch[32];
    const int r = blockIdx.x, nh = blockIdx.y;
    const float* row = logits + ((size_t)nh * R + r) * len;
    const int tail = len - tail_start;
    const float* mrow = mask != nullptr ? mask + ((size_t)nh * w + r % w) * tail : nullptr;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        m = fmaxf(m, window_logit(row, mrow, j, tail_start, scale));
    m = block_reduce(m, true, scratch);
    float s = 0.f;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        s += expf(window_logit(row, mrow, j, tail_start, scale) - m);
    s = block_reduce(s, false, scratch);
    if (threadIdx.x == 0) {
        row_max[(size_t)nh * R + r] = m;
        row_sum[(size_t)nh * R + r] = s;
    }
}

// One thread per (head n, query head gi, key j): the sum over the window's rows of the
// probabilities. out: [n, g, len].
extern "C" __global__ void window_column_sums_f32(const float* __restrict__ logits,
                                                  const float* __restrict__ mask,
                                                  const float* __restrict__ row_max,
                                                  const float* __restrict__ row_sum,
                                                  float* __restrict__ out, int n, int g, int w,
                                                  int len, int tail_start, float scale) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * g * len) return;
    const int j = idx % len;
    const int gi = (idx / len) % g;
    const int nh = idx / ((size_t)g * len);
    const int R = g * w, tail = len - tail_start;
    float acc = 0.f;
    for (int i = 0; i < w; ++i) {
        const int r = gi * w + i;
        const float* row = logits + ((size_t)nh * R + r) * len;
        const float* mrow = mask != nullptr ? mask + ((size_t)nh * w + i) * tail : nullptr;
        const float x = window_logit(row, mrow, j, tail_start, scale);
        acc += __fdiv_rn(expf(x - row_max[(size_t)nh * R + r]), row_sum[(size_t)nh * R + r]);
    }
    out[idx] = acc;
}

// Expected attention's covariance term (`selection::expected_attention`): quadratic forms
// out[h, gi, j] = sum_a kc[h, j, gi d + a] k[h, j, a], where kc = k S (the keys times each query
// head's covariance, side by side). A warp per (head, entry), lanes over the channels.
// kc: [nh, n, g d] f32; k: [nh, n, d] f32; out: [nh, g, n] f32.
extern "C" __global__ void row_quadratic_forms_f32(const float* __restrict__ kc,
                                                   const float* __restrict__ k,
                                                   float* __restrict__ out, int nh, int n, int g,
                                                   int d) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)nh * n) return;  // the whole warp leaves together
    const size_t h = row / n, j = row % n;
    const float* kr = k + row * d;
    const float* cr = kc + row * (size_t)g * d;
    for (int gi = 0; gi < g; ++gi) {
        float acc = 0.f;
        for (int a = lane; a < d; a += 32) acc += cr[(size_t)gi * d + a] * kr[a];
        acc = warp_sum(acc);
        if (lane == 0) out[(h * g + gi) * n + j] = acc;
    }
}
