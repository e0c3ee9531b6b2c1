// Flash-attention forward on the tensor cores (bf16, HS in {32, 64, 128}), FlashAttention-2
// style: one CTA per (query block, head, batch), each warp owning 16 query rows whose Q
// fragments stay in registers; key/value tiles stream through double-buffered shared memory
// (cp.async) up to the diagonal, with the softmax kept online in fp32 registers.
#include "core/cuda/attention_flash.cuh"
#include "core/cuda/check.h"

namespace memento::ops::cuda::detail {
namespace {

// A forward tiling: kWarps warps of 16 query rows each, kBlockN keys per tile, registers capped
// for kMinBlocks CTAs per SM.
template <int HS_, int kWarps_, int kBlockN_, int kMinBlocks_>
struct ForwardTile {
  static constexpr int HS = HS_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kBlockM = 16 * kWarps;
  static constexpr int kThreads = 32 * kWarps;
  // sQ (kBlockM rows), sK and sV (2 buffers of kBlockN rows each).
  static constexpr int kSmemBytes =
      (kBlockM + 4 * kBlockN) * kTileStride<HS> * static_cast<int>(sizeof(bf16));
};

// The tiling by head size, the fastest of a sweep on an H200 at the benchmark sizes: HS 64 and
// 128 take 128 query rows per CTA so that each K/V tile read from L2 serves twice the rows; HS 64
// fits two such CTAs per SM in 128 registers a thread (a 32-byte spill, 25% faster than one).
template <int HS>
using ForwardConfig = ForwardTile<HS, HS == 32 ? 4 : 8, 64, HS == 64 ? 2 : 1>;

// Grid (B * NH, query blocks); blockIdx.y = 0 takes the last query block, the one with the most
// keys, so the longest CTAs start first and the short ones fill in behind them.
template <typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    attention_forward_flash_mma(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                const bf16* __restrict__ v, bf16* __restrict__ out,
                                float* __restrict__ lse, int T, int NH, int NKV, float scale_log2) {
  constexpr int HS = Cfg::HS;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kThreads = Cfg::kThreads;
  constexpr int kLd = kTileStride<HS>;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (kBlockM, kLd)
  bf16* sK = sQ + kBlockM * kLd;             // (2, kBlockN, kLd)
  bf16* sV = sK + 2 * kBlockN * kLd;         // (2, kBlockN, kLd)

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int b = static_cast<int>(blockIdx.x) / NH, h = static_cast<int>(blockIdx.x) % NH;
  const int g = h / (NH / NKV);
  const int m0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * kBlockM;
  const int64_t q_ld = static_cast<int64_t>(NH) * HS, kv_ld = static_cast<int64_t>(NKV) * HS;
  const bf16* qh = q + (static_cast<int64_t>(b) * T * NH + h) * HS;   // (T, q_ld)
  const bf16* kh = k + (static_cast<int64_t>(b) * T * NKV + g) * HS;  // (T, kv_ld)
  const bf16* vh = v + (static_cast<int64_t>(b) * T * NKV + g) * HS;  // (T, kv_ld)

  // Key tiles up to the diagonal: the last one holds key min(m0 + kBlockM, T) - 1.
  const int n_tiles = (min(m0 + kBlockM, T) - 1) / kBlockN + 1;

  copy_tile_async<kBlockM, HS, kThreads>(sQ, qh, q_ld, m0, T);
  copy_tile_async<kBlockN, HS, kThreads>(sK, kh, kv_ld, 0, T);
  copy_tile_async<kBlockN, HS, kThreads>(sV, vh, kv_ld, 0, T);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int warp_row0 = m0 + warp * 16;     // this warp's rows: warp_row0 .. warp_row0 + 15
  const int row_lo = warp_row0 + lane / 4;  // this lane's rows: row_lo and row_lo + 8
  uint32_t qf[HS / 16][4];
#pragma unroll
  for (int kk = 0; kk < HS / 16; ++kk)
    load_a_fragment(qf[kk], sQ + warp * 16 * kLd + kk * 16, kLd, lane);

  float o[HS / 8][4] = {};
  // Running row maximum of the scores in log2 units (score * scale * log2 e), and this lane's
  // part of the row sum of exp2(score * scale_log2 - max); the quad's four parts add at the end.
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile & 1;
    // Prefetch the next tile into the other buffer; every warp finished reading it before the
    // barrier that ended the previous iteration.
    if (tile + 1 < n_tiles) {
      copy_tile_async<kBlockN, HS, kThreads>(sK + (buf ^ 1) * kBlockN * kLd, kh, kv_ld,
                                             (tile + 1) * kBlockN, T);
      copy_tile_async<kBlockN, HS, kThreads>(sV + (buf ^ 1) * kBlockN * kLd, vh, kv_ld,
                                             (tile + 1) * kBlockN, T);
    }
    cp_async_commit();

    const int n0 = tile * kBlockN;
    // Skip a tile whose keys all come after this warp's rows, and warps wholly past T.
    if (n0 <= warp_row0 + 15 && warp_row0 < T) {
      float s[kBlockN / 8][4] = {};
      mma_a_regs_b_rows<HS, kBlockN>(s, qf, sK + buf * kBlockN * kLd, kLd, lane);
      if (n0 + kBlockN - 1 > warp_row0) {  // the tile crosses this warp's diagonal
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = n0 + nt * 8 + (lane % 4) * 2 + (e & 1);
            if (col > row_lo + (e >> 1) * 8) s[nt][e] = -INFINITY;
          }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt)
          mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(kFullWarp, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(kFullWarp, mx, 2));
        const float m_new = fmaxf(row_max[half], mx * scale_log2);
        // A row with no visible key yet keeps max -inf; subtract 0 then so exp2 stays 0, not NaN
        // (tiles run in key order, so every row sees key 0 first; this is a guard).
        const float m_ref = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2f(row_max[half] - m_ref);
        row_max[half] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
          for (int e = 2 * half; e < 2 * half + 2; ++e) {
            s[nt][e] = exp2f(fmaf(s[nt][e], scale_log2, -m_ref));
            sum += s[nt][e];
          }
        row_sum[half] = row_sum[half] * alpha + sum;
#pragma unroll
        for (int dt = 0; dt < HS / 8; ++dt) {
          o[dt][2 * half] *= alpha;
          o[dt][2 * half + 1] *= alpha;
        }
      }
      uint32_t p[kBlockN / 16][4];
      accumulators_to_a<kBlockN>(p, s);
      mma_a_regs_b_cols<kBlockN, HS>(o, p, sV + buf * kBlockN * kLd, kLd, lane);
    }
    cp_async_wait<0>();
    __syncthreads();
  }

  float inv[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = row_sum[half];
    sum += __shfl_xor_sync(kFullWarp, sum, 1);
    sum += __shfl_xor_sync(kFullWarp, sum, 2);
    inv[half] = 1.f / sum;
    const int row = row_lo + half * 8;
    // Each row sees key 0, so sum >= 1 (the maximum's term is exactly 1) for rows below T.
    if (row < T && lane % 4 == 0)
      lse[(static_cast<int64_t>(b) * NH + h) * T + row] = row_max[half] * kLn2 + logf(sum);
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt) {
      o[dt][2 * half] *= inv[half];
      o[dt][2 * half + 1] *= inv[half];
    }
  }
  store_rows<HS>(out + (static_cast<int64_t>(b) * T * NH + h) * HS, q_ld, warp_row0, T, o, 1.f,
                 lane);
}

template <typename Cfg>
void launch_forward(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse,
                    AttentionDims d, cudaStream_t stream) {
  const auto kernel = attention_forward_flash_mma<Cfg>;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(d.B * d.NH),
                  static_cast<unsigned>((d.T + Cfg::kBlockM - 1) / Cfg::kBlockM));
  const float scale_log2 = kLog2e / sqrtf(static_cast<float>(Cfg::HS));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(q, k, v, out, lse, static_cast<int>(d.T),
                                                           static_cast<int>(d.NH),
                                                           static_cast<int>(d.NKV), scale_log2);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_attention_forward_flash(const bf16* q, const bf16* k, const bf16* v, bf16* out,
                                    float* lse, AttentionDims d, cudaStream_t stream) {
  switch (d.HS) {
    case 32:
      launch_forward<ForwardConfig<32>>(q, k, v, out, lse, d, stream);
      return;
    case 64:
      launch_forward<ForwardConfig<64>>(q, k, v, out, lse, d, stream);
      return;
    case 128:
      launch_forward<ForwardConfig<128>>(q, k, v, out, lse, d, stream);
      return;
    default:
      break;
  }
  MEMENTO_CHECK(false, "launch_attention_forward_flash: no kernel for head size ", d.HS);
}

}  // namespace memento::ops::cuda::detail
