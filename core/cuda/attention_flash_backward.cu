// Flash-attention backward on the tensor cores (bf16, HS in {32, 64, 128}), deterministic
// without atomics: one kernel owns a key block and sums dK and dV over every query head of its
// group and every query row at or after the block; a second owns a query block and sums dQ over
// the keys up to the diagonal. Both recompute P = exp(scale q.k - lse) from the saved lse, and
// dS = P * (dP - delta) with dP = dout . v and delta = rowsum(dout * out).
#include "core/cuda/attention_flash.cuh"
#include "core/cuda/check.h"

namespace memento::ops::cuda::detail {
namespace {

// A dK/dV tiling: kWarps warps of 16 keys each, kBlockM query rows per tile.
template <int HS_, int kWarps_, int kBlockM_, int kMinBlocks_>
struct DkvTile {
  static constexpr int HS = HS_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kBlockN = 16 * kWarps;  // keys per CTA
  static constexpr int kThreads = 32 * kWarps;
  // sK, sV (kBlockN rows); sQ, sdO (2 buffers of kBlockM rows); lse (log2 units) and delta (2
  // buffers of kBlockM floats each).
  static constexpr int kSmemBytes =
      (2 * kBlockN + 4 * kBlockM) * kTileStride<HS> * static_cast<int>(sizeof(bf16)) +
      4 * kBlockM * static_cast<int>(sizeof(float));
  static_assert(kThreads >= kBlockM, "one thread per query row loads lse and delta");
};

// A dQ tiling: kWarps warps of 16 query rows each, kBlockN keys per tile.
template <int HS_, int kWarps_, int kBlockN_, int kMinBlocks_>
struct DqTile {
  static constexpr int HS = HS_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kBlockM = 16 * kWarps;
  static constexpr int kThreads = 32 * kWarps;
  // sQ, sdO (kBlockM rows); sK, sV (2 buffers of kBlockN rows).
  static constexpr int kSmemBytes =
      (2 * kBlockM + 4 * kBlockN) * kTileStride<HS> * static_cast<int>(sizeof(bf16));
};

// The tilings by head size, the fastest of a sweep on an H200 at the benchmark sizes
// ((16, 1024, 12, 12, 64) and (4, 2048, 16, 16, 128)): dK/dV 64 keys x 64 query rows in two CTAs
// per SM for HS 64, 128 x 64 for HS 128 (14% faster than 32-row query tiles despite a 12-byte
// spill); dQ with three CTAs per SM for HS <= 64 (13% faster than one).
template <int HS>
using DkvConfig = DkvTile<HS, HS == 128 ? 8 : 4, 64, HS == 128 ? 1 : 2>;
template <int HS>
using DqConfig = DqTile<HS, 4, 64, HS == 128 ? 1 : 3>;

// Grid (B * NKV, key blocks); key block 0, which sees every query row, starts first.
template <typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    attention_backward_dkv_flash_mma(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                     const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                     const float* __restrict__ lse, const float* __restrict__ delta,
                                     bf16* __restrict__ dk, bf16* __restrict__ dv, int T, int NH,
                                     int NKV, float scale_log2, float scale) {
  constexpr int HS = Cfg::HS;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kThreads = Cfg::kThreads;
  constexpr int kLd = kTileStride<HS>;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);                         // (kBlockN, kLd)
  bf16* sV = sK + kBlockN * kLd;                                    // (kBlockN, kLd)
  bf16* sQ = sV + kBlockN * kLd;                                    // (2, kBlockM, kLd)
  bf16* sdO = sQ + 2 * kBlockM * kLd;                               // (2, kBlockM, kLd)
  float* sLse = reinterpret_cast<float*>(sdO + 2 * kBlockM * kLd);  // (2, kBlockM)
  float* sDelta = sLse + 2 * kBlockM;                               // (2, kBlockM)

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int b = static_cast<int>(blockIdx.x) / NKV, g = static_cast<int>(blockIdx.x) % NKV;
  const int group = NH / NKV;
  const int n0 = static_cast<int>(blockIdx.y) * kBlockN;
  const int64_t q_ld = static_cast<int64_t>(NH) * HS, kv_ld = static_cast<int64_t>(NKV) * HS;
  const int64_t kv_offset = (static_cast<int64_t>(b) * T * NKV + g) * HS;

  // Work items: (query head of the group, query tile at or after the first key), head-major.
  const int first_tile = n0 / kBlockM;
  const int tiles_per_head = (T + kBlockM - 1) / kBlockM - first_tile;
  const int items = group * tiles_per_head;

  // Stages item `it`'s Q and dout tiles (async) and its lse and delta (plain stores) in `buf`.
  auto load_item = [&](int it, int buf) {
    const int h = g * group + it / tiles_per_head;
    const int m0 = (first_tile + it % tiles_per_head) * kBlockM;
    const int64_t q_offset = (static_cast<int64_t>(b) * T * NH + h) * HS;
    copy_tile_async<kBlockM, HS, kThreads>(sQ + buf * kBlockM * kLd, q + q_offset, q_ld, m0, T);
    copy_tile_async<kBlockM, HS, kThreads>(sdO + buf * kBlockM * kLd, dout + q_offset, q_ld, m0, T);
    if (tid < kBlockM) {
      const int row = m0 + tid;
      const int64_t i = (static_cast<int64_t>(b) * NH + h) * T + row;
      // Rows past T get lse = +inf: their P is exactly 0.
      sLse[buf * kBlockM + tid] = row < T ? lse[i] * kLog2e : INFINITY;
      sDelta[buf * kBlockM + tid] = row < T ? delta[i] : 0.f;
    }
  };

  copy_tile_async<kBlockN, HS, kThreads>(sK, k + kv_offset, kv_ld, n0, T);
  copy_tile_async<kBlockN, HS, kThreads>(sV, v + kv_offset, kv_ld, n0, T);
  load_item(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int warp_key0 = n0 + warp * 16;     // this warp's keys: warp_key0 .. warp_key0 + 15
  const int key_lo = warp_key0 + lane / 4;  // this lane's keys: key_lo and key_lo + 8
  float dk_acc[HS / 8][4] = {};
  float dv_acc[HS / 8][4] = {};

  for (int it = 0; it < items; ++it) {
    const int buf = it & 1;
    if (it + 1 < items) load_item(it + 1, buf ^ 1);
    cp_async_commit();

    const int m0 = (first_tile + it % tiles_per_head) * kBlockM;
    // Skip when every query row of the tile comes before this warp's keys, and warps wholly
    // past T.
    if (m0 + kBlockM - 1 >= warp_key0 && warp_key0 < T) {
      const bf16* q_tile = sQ + buf * kBlockM * kLd;
      const bf16* do_tile = sdO + buf * kBlockM * kLd;
      const float* lse_tile = sLse + buf * kBlockM;
      const float* delta_tile = sDelta + buf * kBlockM;
      // Transposed scores and output gradients: rows are this warp's keys, columns query rows.
      float s[kBlockM / 8][4] = {};
      float dp[kBlockM / 8][4] = {};
      mma_a_smem_b_rows<HS, kBlockM>(s, sK + warp * 16 * kLd, kLd, q_tile, kLd, lane);
      mma_a_smem_b_rows<HS, kBlockM>(dp, sV + warp * 16 * kLd, kLd, do_tile, kLd, lane);
      const bool diagonal = m0 < warp_key0 + 15;  // some (key, query) pair of the tile is masked
#pragma unroll
      for (int nt = 0; nt < kBlockM / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nt * 8 + (lane % 4) * 2 + (e & 1);
          float p = exp2f(fmaf(s[nt][e], scale_log2, -lse_tile[col]));
          if (diagonal && key_lo + (e >> 1) * 8 > m0 + col) p = 0.f;
          s[nt][e] = p;
          dp[nt][e] = p * (dp[nt][e] - delta_tile[col]);
        }
      uint32_t frag[kBlockM / 16][4];
      accumulators_to_a<kBlockM>(frag, s);
      mma_a_regs_b_cols<kBlockM, HS>(dv_acc, frag, do_tile, kLd, lane);  // dV += P^T dO
      accumulators_to_a<kBlockM>(frag, dp);
      mma_a_regs_b_cols<kBlockM, HS>(dk_acc, frag, q_tile, kLd, lane);  // dK += dS^T Q
    }
    cp_async_wait<0>();
    __syncthreads();
  }

  store_rows<HS>(dk + kv_offset, kv_ld, warp_key0, T, dk_acc, scale, lane);
  store_rows<HS>(dv + kv_offset, kv_ld, warp_key0, T, dv_acc, 1.f, lane);
}

// Grid (B * NH, query blocks); blockIdx.y = 0 takes the last query block (the most keys).
template <typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    attention_backward_dq_flash_mma(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                    const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                    const float* __restrict__ lse, const float* __restrict__ delta,
                                    bf16* __restrict__ dq, int T, int NH, int NKV, float scale_log2,
                                    float scale) {
  constexpr int HS = Cfg::HS;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kThreads = Cfg::kThreads;
  constexpr int kLd = kTileStride<HS>;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (kBlockM, kLd)
  bf16* sdO = sQ + kBlockM * kLd;            // (kBlockM, kLd)
  bf16* sK = sdO + kBlockM * kLd;            // (2, kBlockN, kLd)
  bf16* sV = sK + 2 * kBlockN * kLd;         // (2, kBlockN, kLd)

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int b = static_cast<int>(blockIdx.x) / NH, h = static_cast<int>(blockIdx.x) % NH;
  const int g = h / (NH / NKV);
  const int m0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * kBlockM;
  const int64_t q_ld = static_cast<int64_t>(NH) * HS, kv_ld = static_cast<int64_t>(NKV) * HS;
  const int64_t q_offset = (static_cast<int64_t>(b) * T * NH + h) * HS;
  const bf16* kh = k + (static_cast<int64_t>(b) * T * NKV + g) * HS;  // (T, kv_ld)
  const bf16* vh = v + (static_cast<int64_t>(b) * T * NKV + g) * HS;  // (T, kv_ld)
  const int n_tiles = (min(m0 + kBlockM, T) - 1) / kBlockN + 1;

  copy_tile_async<kBlockM, HS, kThreads>(sQ, q + q_offset, q_ld, m0, T);
  copy_tile_async<kBlockM, HS, kThreads>(sdO, dout + q_offset, q_ld, m0, T);
  copy_tile_async<kBlockN, HS, kThreads>(sK, kh, kv_ld, 0, T);
  copy_tile_async<kBlockN, HS, kThreads>(sV, vh, kv_ld, 0, T);
  cp_async_commit();

  const int warp_row0 = m0 + warp * 16;
  const int row_lo = warp_row0 + lane / 4;  // this lane's rows: row_lo and row_lo + 8
  float lse_log2[2], row_delta[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_lo + half * 8;
    const int64_t i = (static_cast<int64_t>(b) * NH + h) * T + row;
    lse_log2[half] = row < T ? lse[i] * kLog2e : INFINITY;  // rows past T: P = 0
    row_delta[half] = row < T ? delta[i] : 0.f;
  }
  cp_async_wait<0>();
  __syncthreads();

  float dq_acc[HS / 8][4] = {};
  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < n_tiles) {
      copy_tile_async<kBlockN, HS, kThreads>(sK + (buf ^ 1) * kBlockN * kLd, kh, kv_ld,
                                             (tile + 1) * kBlockN, T);
      copy_tile_async<kBlockN, HS, kThreads>(sV + (buf ^ 1) * kBlockN * kLd, vh, kv_ld,
                                             (tile + 1) * kBlockN, T);
    }
    cp_async_commit();

    const int n0 = tile * kBlockN;
    if (n0 <= warp_row0 + 15 && warp_row0 < T) {
      const bf16* k_tile = sK + buf * kBlockN * kLd;
      float s[kBlockN / 8][4] = {};
      float dp[kBlockN / 8][4] = {};
      mma_a_smem_b_rows<HS, kBlockN>(s, sQ + warp * 16 * kLd, kLd, k_tile, kLd, lane);
      mma_a_smem_b_rows<HS, kBlockN>(dp, sdO + warp * 16 * kLd, kLd, sV + buf * kBlockN * kLd, kLd,
                                     lane);
      const bool diagonal = n0 + kBlockN - 1 > warp_row0;
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int half = e >> 1;
          const int col = n0 + nt * 8 + (lane % 4) * 2 + (e & 1);
          float p = exp2f(fmaf(s[nt][e], scale_log2, -lse_log2[half]));
          if (diagonal && col > row_lo + half * 8) p = 0.f;
          s[nt][e] = p * (dp[nt][e] - row_delta[half]);  // dS
        }
      uint32_t ds[kBlockN / 16][4];
      accumulators_to_a<kBlockN>(ds, s);
      mma_a_regs_b_cols<kBlockN, HS>(dq_acc, ds, k_tile, kLd, lane);  // dQ += dS K
    }
    cp_async_wait<0>();
    __syncthreads();
  }
  store_rows<HS>(dq + q_offset, q_ld, warp_row0, T, dq_acc, scale, lane);
}

template <typename Cfg>
void launch_backward_dkv(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                         const float* lse, const float* delta, bf16* dk, bf16* dv, AttentionDims d,
                         cudaStream_t stream) {
  const float scale = 1.f / sqrtf(static_cast<float>(Cfg::HS));
  const auto kernel = attention_backward_dkv_flash_mma<Cfg>;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(d.B * d.NKV),
                  static_cast<unsigned>((d.T + Cfg::kBlockN - 1) / Cfg::kBlockN));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(
      q, k, v, dout, lse, delta, dk, dv, static_cast<int>(d.T), static_cast<int>(d.NH),
      static_cast<int>(d.NKV), scale * kLog2e, scale);
  CUDA_CHECK_LAUNCH();
}

template <typename Cfg>
void launch_backward_dq(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                        const float* lse, const float* delta, bf16* dq, AttentionDims d,
                        cudaStream_t stream) {
  const float scale = 1.f / sqrtf(static_cast<float>(Cfg::HS));
  const auto kernel = attention_backward_dq_flash_mma<Cfg>;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(d.B * d.NH),
                  static_cast<unsigned>((d.T + Cfg::kBlockM - 1) / Cfg::kBlockM));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(
      q, k, v, dout, lse, delta, dq, static_cast<int>(d.T), static_cast<int>(d.NH),
      static_cast<int>(d.NKV), scale * kLog2e, scale);
  CUDA_CHECK_LAUNCH();
}

template <int HS>
void launch_backward(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                     const float* lse, const float* delta, bf16* dq, bf16* dk, bf16* dv,
                     AttentionDims d, cudaStream_t stream) {
  launch_backward_dkv<DkvConfig<HS>>(q, k, v, dout, lse, delta, dk, dv, d, stream);
  launch_backward_dq<DqConfig<HS>>(q, k, v, dout, lse, delta, dq, d, stream);
}

}  // namespace

void launch_attention_backward_flash(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                     const float* lse, const float* delta, bf16* dq, bf16* dk,
                                     bf16* dv, AttentionDims d, cudaStream_t stream) {
  switch (d.HS) {
    case 32:
      launch_backward<32>(q, k, v, dout, lse, delta, dq, dk, dv, d, stream);
      return;
    case 64:
      launch_backward<64>(q, k, v, dout, lse, delta, dq, dk, dv, d, stream);
      return;
    case 128:
      launch_backward<128>(q, k, v, dout, lse, delta, dq, dk, dv, d, stream);
      return;
    default:
      break;
  }
  MEMENTO_CHECK(false, "launch_attention_backward_flash: no kernel for head size ", d.HS);
}

}  // namespace memento::ops::cuda::detail
