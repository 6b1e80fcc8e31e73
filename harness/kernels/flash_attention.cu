// Fused attention over a dense bf16 cache (flash-attention style, Dao 2023): scores live only in
// shared memory, one tile of 64 keys at a time, with an online softmax; nothing of size
// queries x keys ever reaches global memory.
//
// Layout (all contiguous, row-major): q and out [kv_heads * group, t, D]; k and v [kv_heads, len, D].
// Query heads of one KV head are packed into the rows of a tile as row = query * group + head
// (GQA packing), so one K/V tile serves every query head that reads it and causal skipping stays
// tight. Query i of the t new tokens sits at stored index len - t + i and sees keys
// [max(0, len - t + i + 1 - window), len - t + i] (window 0: no lower bound).
//
// Tensor cores through WMMA (16x16x16 bf16, f32 accumulate). Each warp owns 16 rows; its output
// accumulator lives in shared memory as f32 so the per-row softmax rescale can reach it.
// Long key ranges with few row tiles (decoding) are split over blockIdx.z; each split writes an
// unnormalised partial (o, m, l) and `flash_combine` merges them.

#include <cuda_bf16.h>
#include <mma.h>
#include <stdint.h>

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

#define BLOCK_M 64
#define BLOCK_N 64
#define WARPS 4

template <int D>
struct Smem {
  static constexpr int QK_LD = D + 8;        // bf16 rows of Q, K, V (padding spreads banks)
  static constexpr int S_LD = BLOCK_N + 4;   // f32 scores of one warp
  static constexpr int P_LD = BLOCK_N + 8;   // bf16 probabilities of one warp
  static constexpr int O_LD = D + 4;         // f32 output accumulator of one warp
  static constexpr int Q_OFF = 0;
  static constexpr int K_OFF = Q_OFF + BLOCK_M * QK_LD * 2;
  static constexpr int V_OFF = K_OFF + BLOCK_N * QK_LD * 2;
  static constexpr int S_OFF = V_OFF + BLOCK_N * QK_LD * 2;
  static constexpr int P_OFF = S_OFF + WARPS * 16 * S_LD * 4;
  static constexpr int O_OFF = P_OFF + WARPS * 16 * P_LD * 2;
  static constexpr int BYTES = O_OFF + WARPS * 16 * O_LD * 4;
};

// Copy `rows` rows of D bf16 (global row stride D) into shared rows of stride ld; rows past
// `valid` are zero so their products are finite and masked later.
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, int ld, const bf16* src, int valid) {
  constexpr int VEC = D / 8;  // uint4 = 8 bf16
  for (int x = threadIdx.x; x < BLOCK_N * VEC; x += blockDim.x) {
    int r = x / VEC, c = (x % VEC) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid) val = *reinterpret_cast<const uint4*>(src + (size_t)r * D + c);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
  }
}

template <int D>
__device__ void flash_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, bf16* __restrict__ out,
                          float* __restrict__ part_o, float* __restrict__ part_ml,
                          float* __restrict__ lse, int t, int len, int group, float scale,
                          float softcap, int window, int split_keys) {
  typedef Smem<D> S;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem + S::Q_OFF);
  bf16* sK = reinterpret_cast<bf16*>(smem + S::K_OFF);
  bf16* sV = reinterpret_cast<bf16*>(smem + S::V_OFF);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* sS = reinterpret_cast<float*>(smem + S::S_OFF) + warp * 16 * S::S_LD;
  bf16* sP = reinterpret_cast<bf16*>(smem + S::P_OFF) + warp * 16 * S::P_LD;
  float* sO = reinterpret_cast<float*>(smem + S::O_OFF) + warp * 16 * S::O_LD;

  const int kvh = blockIdx.y, split = blockIdx.z;
  const int rows = t * group;
  const int r0 = blockIdx.x * BLOCK_M;
  const int r_last = min(rows, r0 + BLOCK_M) - 1;
  const int heads = gridDim.y * group;
  const bf16* kh = k + (size_t)kvh * len * D;
  const bf16* vh = v + (size_t)kvh * len * D;

  // Q tile: row r -> (query r / group, head kvh * group + r % group).
  constexpr int VEC = D / 8;
  for (int x = threadIdx.x; x < BLOCK_M * VEC; x += blockDim.x) {
    int r = x / VEC, c = (x % VEC) * 8, row = r0 + r;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (row < rows) {
      int i = row / group, h = kvh * group + row % group;
      val = *reinterpret_cast<const uint4*>(q + ((size_t)h * t + i) * D + c);
    }
    *reinterpret_cast<uint4*>(sQ + r * S::QK_LD + c) = val;
  }
  for (int x = lane; x < 16 * D; x += 32) sO[(x / D) * S::O_LD + x % D] = 0.f;

  // This lane's row and half of the columns.
  const int rr = lane / 2, half = lane % 2;
  const int my_row = r0 + warp * 16 + rr;
  const bool row_ok = my_row < rows;
  const int qi = row_ok ? len - t + my_row / group : -1;  // stored index of this query
  const int lo_row = window > 0 ? max(0, qi + 1 - window) : 0;
  float m = -INFINITY, l = 0.f;
  const bool warp_active = r0 + warp * 16 < rows;

  // Keys any row of the tile may see, cut to this split.
  int kend = len - t + r_last / group + 1;
  int kbeg = window > 0 ? max(0, len - t + r0 / group + 1 - window) : 0;
  kbeg = max(kbeg, split * split_keys);
  kend = min(kend, (split + 1) * split_keys);

  for (int k0 = kbeg; k0 < kend; k0 += BLOCK_N) {
    const int nk = min(BLOCK_N, kend - k0);
    __syncthreads();
    load_rows<D>(sK, S::QK_LD, kh + (size_t)k0 * D, nk);
    load_rows<D>(sV, S::QK_LD, vh + (size_t)k0 * D, nk);
    __syncthreads();
    if (!warp_active) continue;

    // S = Q K^T for this warp's 16 rows.
    for (int n = 0; n < BLOCK_N / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, sQ + (warp * 16) * S::QK_LD + kk * 16, S::QK_LD);
        wmma::load_matrix_sync(b, sK + (n * 16) * S::QK_LD + kk * 16, S::QK_LD);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(sS + n * 16, acc, S::S_LD, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over this lane's 32 columns; the partner lane holds the other 32.
    float s[BLOCK_N / 2];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BLOCK_N / 2; ++j) {
      int c = half * (BLOCK_N / 2) + j, key = k0 + c;
      float x = sS[rr * S::S_LD + c] * scale;
      if (softcap > 0.f) x = softcap * tanhf(x / softcap);
      bool ok = row_ok && c < nk && key <= qi && key >= lo_row;
      s[j] = ok ? x : -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
    const float m_new = fmaxf(m, mx);
    float alpha = 1.f, sum = 0.f;
    if (m_new != -INFINITY) {
      alpha = __expf(m - m_new);
#pragma unroll
      for (int j = 0; j < BLOCK_N / 2; ++j) {
        float p = s[j] == -INFINITY ? 0.f : __expf(s[j] - m_new);
        sum += p;
        sP[rr * S::P_LD + half * (BLOCK_N / 2) + j] = __float2bfloat16(p);
      }
    } else {
#pragma unroll
      for (int j = 0; j < BLOCK_N / 2; ++j)
        sP[rr * S::P_LD + half * (BLOCK_N / 2) + j] = __float2bfloat16(0.f);
    }
    sum += __shfl_xor_sync(0xffffffff, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) sO[rr * S::O_LD + c] *= alpha;
    __syncwarp();

    // O += P V.
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, sO + n * 16, S::O_LD, wmma::mem_row_major);
      for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
        wmma::load_matrix_sync(a, sP + kk * 16, S::P_LD);
        wmma::load_matrix_sync(b, sV + (kk * 16) * S::QK_LD + n * 16, S::QK_LD);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(sO + n * 16, acc, S::O_LD, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncwarp();
  if (!row_ok) return;
  const int i = my_row / group, h = kvh * group + my_row % group;
  const size_t hr = (size_t)h * t + i;  // row of q / out
  if (part_o == nullptr) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
      out[hr * D + c] = __float2bfloat16(sO[rr * S::O_LD + c] * inv);
    if (lse != nullptr && half == 0) lse[hr] = l > 0.f ? m + logf(l) : -INFINITY;
  } else {
    const size_t n_rows = (size_t)heads * t;
    float* po = part_o + ((size_t)split * n_rows + hr) * D;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) po[c] = sO[rr * S::O_LD + c];
    if (half == 0) {
      part_ml[((size_t)split * n_rows + hr) * 2] = m;
      part_ml[((size_t)split * n_rows + hr) * 2 + 1] = l;
    }
  }
}

// The same forward for head dimensions up to 128 with explicit tensor-core instructions
// (mma.sync m16n8k16, whose register layouts the PTX ISA documents), so scores, probabilities and
// the output accumulator stay in registers: the probabilities of one m16n8 score tile are, as
// registers, exactly the A operand of the next multiply (P V). Scores are kept in log2 units
// (exp2 is one instruction); partials and the log-sum-exp leave in natural units, as the merge
// and the column pass expect. V is stored transposed in shared memory so each B operand is one
// 32-bit load.
__device__ __forceinline__ void mma_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t ld32(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

template <int D>
struct Smem2 {
  static constexpr int LD = D + 8;           // Q and K rows (bank-conflict-free fragment loads)
  static constexpr int VT_LD = BLOCK_N + 8;  // rows of V transposed (one per head dimension)
  static constexpr int BYTES = (2 * BLOCK_M * LD + D * VT_LD) * 2;
};

template <int D>
__device__ void flash_fwd2(const bf16* __restrict__ q, const bf16* __restrict__ k,
                           const bf16* __restrict__ v, bf16* __restrict__ out,
                           float* __restrict__ part_o, float* __restrict__ part_ml,
                           float* __restrict__ lse, int t, int len, int group, float scale,
                           float softcap, int window, int split_keys) {
  constexpr int LD = Smem2<D>::LD, VT_LD = Smem2<D>::VT_LD, KD = D / 16, ND = D / 8;
  constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + BLOCK_M * LD;
  bf16* sVt = sK + BLOCK_N * LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int rows = t * group, past = len - t, heads = gridDim.y * group;
  const int r0 = blockIdx.x * BLOCK_M;
  const int r_last = min(rows, r0 + BLOCK_M) - 1;
  const bf16* kh = k + (size_t)kvh * len * D;
  const bf16* vh = v + (size_t)kvh * len * D;

  constexpr int VEC = D / 8;
  for (int x = threadIdx.x; x < BLOCK_M * VEC; x += blockDim.x) {
    int r = x / VEC, c = (x % VEC) * 8, row = r0 + r;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (row < rows) {
      int i = row / group, h = kvh * group + row % group;
      val = *reinterpret_cast<const uint4*>(q + ((size_t)h * t + i) * D + c);
    }
    *reinterpret_cast<uint4*>(sQ + r * LD + c) = val;
  }
  __syncthreads();
  uint32_t qa[KD][4];
  const bf16* qw = sQ + warp * 16 * LD;
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) {
    qa[kk][0] = ld32(qw + g * LD + kk * 16 + 2 * tq);
    qa[kk][1] = ld32(qw + (g + 8) * LD + kk * 16 + 2 * tq);
    qa[kk][2] = ld32(qw + g * LD + kk * 16 + 8 + 2 * tq);
    qa[kk][3] = ld32(qw + (g + 8) * LD + kk * 16 + 8 + 2 * tq);
  }
  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

  // This thread's two rows (g and g + 8 of the warp's 16).
  const int wr0 = r0 + warp * 16;
  const int row_a = wr0 + g, row_b = wr0 + g + 8;
  const bool ok_a = row_a < rows, ok_b = row_b < rows;
  const int qi_a = past + row_a / group, qi_b = past + row_b / group;
  const int lo_a = window > 0 ? max(0, qi_a + 1 - window) : 0;
  const int lo_b = window > 0 ? max(0, qi_b + 1 - window) : 0;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
  const bool warp_active = wr0 < rows;
  const bool warp_full = wr0 + 15 < rows;
  const int qi_min = past + wr0 / group;
  const int qi_max = past + (min(rows, wr0 + 16) - 1) / group;
  const int lo_max = window > 0 ? max(0, qi_max + 1 - window) : 0;
  const int lo_min = window > 0 ? max(0, qi_min + 1 - window) : 0;
  const float sl = scale * LOG2E;

  int kend = past + r_last / group + 1;
  int kbeg = window > 0 ? max(0, past + r0 / group + 1 - window) : 0;
  kbeg = max(kbeg, split * split_keys);
  kend = min(kend, (split + 1) * split_keys);

  for (int k0 = kbeg; k0 < kend; k0 += BLOCK_N) {
    const int nk = min(BLOCK_N, kend - k0);
    __syncthreads();
    for (int x = threadIdx.x; x < BLOCK_N * VEC; x += blockDim.x) {
      int r = x / VEC, c = (x % VEC) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (r < nk) {
        kv = *reinterpret_cast<const uint4*>(kh + (size_t)(k0 + r) * D + c);
        vv = *reinterpret_cast<const uint4*>(vh + (size_t)(k0 + r) * D + c);
      }
      *reinterpret_cast<uint4*>(sK + r * LD + c) = kv;
      const bf16* ve = reinterpret_cast<const bf16*>(&vv);
#pragma unroll
      for (int j = 0; j < 8; ++j) sVt[(c + j) * VT_LD + r] = ve[j];
    }
    __syncthreads();
    if (!warp_active || k0 > qi_max || k0 + nk - 1 < lo_min) continue;

    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      const bf16* kr = sK + (n * 8 + g) * LD + 2 * tq;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) mma_bf16(s[n], qa[kk], ld32(kr + kk * 16), ld32(kr + kk * 16 + 8));
    }
    const bool full = warp_full && nk == BLOCK_N && k0 + BLOCK_N - 1 <= qi_min && k0 >= lo_max;
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float x;
        if (softcap > 0.f) {
          x = softcap * tanhf(s[n][j] * scale / softcap) * LOG2E;
        } else {
          x = s[n][j] * sl;
        }
        if (!full) {
          const int c = n * 8 + 2 * tq + (j & 1), key = k0 + c;
          const bool ok = j < 2 ? (ok_a && key <= qi_a && key >= lo_a)
                                : (ok_b && key <= qi_b && key >= lo_b);
          if (!ok || c >= nk) x = -INFINITY;
        }
        s[n][j] = x;
      }
      mx_a = fmaxf(mx_a, fmaxf(s[n][0], s[n][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[n][2], s[n][3]));
    }
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, 2));
    const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
    // A row with nothing visible yet keeps m = -inf and contributes zeros.
    const float base_a = mn_a == -INFINITY ? 0.f : mn_a;
    const float base_b = mn_b == -INFINITY ? 0.f : mn_b;
    const float al_a = exp2f(m_a - base_a), al_b = exp2f(m_b - base_b);
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      s[n][0] = exp2f(s[n][0] - base_a);
      s[n][1] = exp2f(s[n][1] - base_a);
      s[n][2] = exp2f(s[n][2] - base_b);
      s[n][3] = exp2f(s[n][3] - base_b);
      sum_a += s[n][0] + s[n][1];
      sum_b += s[n][2] + s[n][3];
    }
    l_a = l_a * al_a + sum_a;
    l_b = l_b * al_b + sum_b;
    m_a = mn_a;
    m_b = mn_b;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      o[n][0] *= al_a;
      o[n][1] *= al_a;
      o[n][2] *= al_b;
      o[n][3] *= al_b;
    }
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
      uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                       pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                       pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        const bf16* vr = sVt + (n * 8 + g) * VT_LD + kk * 16 + 2 * tq;
        mma_bf16(o[n], a, ld32(vr), ld32(vr + 8));
      }
    }
  }
  // Each thread summed its own columns: the row's sum is over the 4 threads of the row.
  l_a += __shfl_xor_sync(0xffffffff, l_a, 1);
  l_a += __shfl_xor_sync(0xffffffff, l_a, 2);
  l_b += __shfl_xor_sync(0xffffffff, l_b, 1);
  l_b += __shfl_xor_sync(0xffffffff, l_b, 2);
  const size_t n_rows = (size_t)heads * t;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = half == 0 ? row_a : row_b;
    if (row >= rows) continue;
    const float l = half == 0 ? l_a : l_b, m = half == 0 ? m_a : m_b;
    const int i = row / group, h = kvh * group + row % group;
    const size_t hr = (size_t)h * t + i;
    const int j0 = half * 2;
    if (part_o == nullptr) {
      const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
      for (int n = 0; n < ND; ++n)
        *reinterpret_cast<uint32_t*>(out + hr * D + n * 8 + 2 * tq) =
            pack_bf16(o[n][j0] * inv, o[n][j0 + 1] * inv);
      if (lse != nullptr && tq == 0) lse[hr] = l > 0.f ? (m + log2f(l)) * LN2 : -INFINITY;
    } else {
      float* po = part_o + ((size_t)split * n_rows + hr) * D;
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        po[n * 8 + 2 * tq] = o[n][j0];
        po[n * 8 + 2 * tq + 1] = o[n][j0 + 1];
      }
      if (tq == 0) {
        part_ml[((size_t)split * n_rows + hr) * 2] = m == -INFINITY ? -INFINITY : m * LN2;
        part_ml[((size_t)split * n_rows + hr) * 2 + 1] = l;
      }
    }
  }
}

#define FLASH_FWD2(D)                                                                             \
  extern "C" __global__ void __launch_bounds__(WARPS * 32)                                        \
      flash_fwd2_d##D(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* part_o,      \
                      float* part_ml, float* lse, int t, int len, int group, float scale,         \
                      float softcap, int window, int split_keys) {                                \
    flash_fwd2<D>(q, k, v, out, part_o, part_ml, lse, t, len, group, scale, softcap, window,      \
                  split_keys);                                                                    \
  }

FLASH_FWD2(64)
FLASH_FWD2(96)
FLASH_FWD2(128)

// Merge the splits of each row: o = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M).
// Grid: one block per (head, query) row; D threads.
__device__ void flash_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                              bf16* __restrict__ out, float* __restrict__ lse, int n_rows,
                              int splits, int d) {
  const size_t row = blockIdx.x;
  const int c = threadIdx.x;
  float big = -INFINITY;
  for (int s = 0; s < splits; ++s) big = fmaxf(big, part_ml[((size_t)s * n_rows + row) * 2]);
  float den = 0.f, num = 0.f;
  if (big != -INFINITY) {
    for (int s = 0; s < splits; ++s) {
      const float ms = part_ml[((size_t)s * n_rows + row) * 2];
      if (ms == -INFINITY) continue;
      const float w = __expf(ms - big);
      den += part_ml[((size_t)s * n_rows + row) * 2 + 1] * w;
      if (c < d) num += part_o[((size_t)s * n_rows + row) * d + c] * w;
    }
  }
  if (c < d) out[row * d + c] = __float2bfloat16(den > 0.f ? num / den : 0.f);
  if (lse != nullptr && c == 0) lse[row] = den > 0.f ? big + logf(den) : -INFINITY;
}

// The attention each key received, summed over the t queries, per query head: acc [heads, len]
// f32. A second pass over the same scores (recomputed tile by tile, never stored), normalised
// with the forward pass's log-sum-exp per row, so H2O-like methods get their statistic without
// a queries x keys matrix. Grid: (key tiles of 64, KV heads); each block owns its keys, so the
// sums need no global atomics.
#define MAX_GROUP 16
template <int D>
__device__ void flash_colsum(const bf16* __restrict__ q, const bf16* __restrict__ k,
                             const float* __restrict__ lse, float* __restrict__ acc, int t,
                             int len, int group, float scale, float softcap, int window) {
  typedef Smem<D> S;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem + S::Q_OFF);
  bf16* sK = reinterpret_cast<bf16*>(smem + S::K_OFF);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* sS = reinterpret_cast<float*>(smem + S::S_OFF) + warp * 16 * S::S_LD;
  // Column sums per head of the group, reusing the output-accumulator region.
  float* sCol = reinterpret_cast<float*>(smem + S::O_OFF);

  const int kvh = blockIdx.y, k0 = blockIdx.x * BLOCK_N;
  const int nk = min(BLOCK_N, len - k0);
  const int rows = t * group, past = len - t;
  load_rows<D>(sK, S::QK_LD, k + ((size_t)kvh * len + k0) * D, nk);
  for (int x = threadIdx.x; x < group * BLOCK_N; x += blockDim.x) sCol[x] = 0.f;
  // Queries that see some key of this tile: from the first one at or after key k0, to the last
  // whose window still reaches key k0 + nk - 1.
  const int i_min = max(0, k0 - past);
  const int i_max = window > 0 ? min(t - 1, k0 + nk - 1 - past + window - 1) : t - 1;
  const int r_end = min(rows, (i_max + 1) * group);
  constexpr int VEC = D / 8;
  for (int r0 = i_min * group; r0 < r_end; r0 += BLOCK_M) {
    __syncthreads();
    for (int x = threadIdx.x; x < BLOCK_M * VEC; x += blockDim.x) {
      int r = x / VEC, c = (x % VEC) * 8, row = r0 + r;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (row < r_end) {
        int i = row / group, h = kvh * group + row % group;
        val = *reinterpret_cast<const uint4*>(q + ((size_t)h * t + i) * D + c);
      }
      *reinterpret_cast<uint4*>(sQ + r * S::QK_LD + c) = val;
    }
    __syncthreads();
    if (r0 + warp * 16 >= r_end) continue;
    for (int n = 0; n < BLOCK_N / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> a_acc;
      wmma::fill_fragment(a_acc, 0.f);
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, sQ + (warp * 16) * S::QK_LD + kk * 16, S::QK_LD);
        wmma::load_matrix_sync(b, sK + (n * 16) * S::QK_LD + kk * 16, S::QK_LD);
        wmma::mma_sync(a_acc, a, b, a_acc);
      }
      wmma::store_matrix_sync(sS + n * 16, a_acc, S::S_LD, wmma::mem_row_major);
    }
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const int row = r0 + warp * 16 + rr;
      if (row >= r_end) break;
      const int i = row / group, g = row % group, qi = past + i;
      const float row_lse = lse[(size_t)(kvh * group + g) * t + i];
      for (int c = lane; c < nk; c += 32) {
        const int key = k0 + c;
        if (key > qi || (window > 0 && key < qi + 1 - window)) continue;
        float x = sS[rr * S::S_LD + c] * scale;
        if (softcap > 0.f) x = softcap * tanhf(x / softcap);
        atomicAdd(&sCol[g * BLOCK_N + c], __expf(x - row_lse));
      }
    }
  }
  __syncthreads();
  for (int x = threadIdx.x; x < group * nk; x += blockDim.x) {
    const int g = x / nk, c = x % nk;
    acc[(size_t)(kvh * group + g) * len + k0 + c] = sCol[g * BLOCK_N + c];
  }
}

#define FLASH_FWD(D)                                                                              \
  extern "C" __global__ void __launch_bounds__(WARPS * 32)                                        \
      flash_fwd_d##D(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* part_o,       \
                     float* part_ml, float* lse, int t, int len, int group, float scale,          \
                     float softcap, int window, int split_keys) {                                 \
    flash_fwd<D>(q, k, v, out, part_o, part_ml, lse, t, len, group, scale, softcap, window,       \
                 split_keys);                                                                     \
  }                                                                                               \
  extern "C" __global__ void __launch_bounds__(WARPS * 32)                                        \
      flash_colsum_d##D(const bf16* q, const bf16* k, const float* lse, float* acc, int t,        \
                        int len, int group, float scale, float softcap, int window) {             \
    flash_colsum<D>(q, k, lse, acc, t, len, group, scale, softcap, window);                       \
  }

FLASH_FWD(64)
FLASH_FWD(96)
FLASH_FWD(128)
FLASH_FWD(256)

extern "C" __global__ void flash_combine_f32(const float* part_o, const float* part_ml, bf16* out,
                                             float* lse, int n_rows, int splits, int d) {
  flash_combine(part_o, part_ml, out, lse, n_rows, splits, d);
}
