// Tensor-core building blocks of the flash-attention kernels (attention_flash_*.cu): bf16
// mma.sync m16n8k16 with fp32 accumulators, ldmatrix fragment loads from padded shared-memory
// tiles, and cp.async tile copies. Internal to core/cuda; not part of the API.
//
// One warp computes a 16-row slab. Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4,
// t = lane % 4): an A fragment (16 x 16) is 4 registers of 2 bf16 holding (g, 2t..2t+1),
// (g + 8, 2t..), (g, 2t + 8..), (g + 8, 2t + 8..); an accumulator tile (16 x 8) is 4 floats
// holding (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1). The accumulators of two adjacent
// 8-column tiles are exactly the A fragment of their 16 columns, which is how P and dS feed the
// next product without leaving registers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "core/cuda/attention.h"

namespace memento::ops::cuda::detail {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFullWarp = 0xffffffffu;

// Shared-memory tiles hold rows of HS bf16 padded by 8 elements (16 bytes): the 8 rows an
// ldmatrix phase reads then start in 8 distinct 16-byte bank groups.
template <int HS>
constexpr int kTileStride = HS + 8;

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes global -> shared asynchronously; with valid false it writes 16 zero bytes and
// reads nothing (src must still be a valid address).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

// Rows [row0, row0 + kRows) of a (T, ld) bf16 matrix (HS columns used) into a shared tile of
// stride kTileStride<HS>; rows at or past T are zero (finite, so masked products stay finite).
template <int kRows, int HS, int kThreads>
__device__ __forceinline__ void copy_tile_async(bf16* tile, const bf16* src, int64_t ld, int row0,
                                                int T) {
  constexpr int kChunksPerRow = HS / 8;  // 16-byte chunks
  for (int c = static_cast<int>(threadIdx.x); c < kRows * kChunksPerRow; c += kThreads) {
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    const bool valid = row0 + r < T;
    const bf16* s = valid ? src + static_cast<int64_t>(row0 + r) * ld + col : src;
    cp_async_16(tile + r * kTileStride<HS> + col, s, valid);
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p))
               : "memory");
}

// d (16 x 8) += a (16 x 16) * b (16 x 8), bf16 operands, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one register of 2 bf16, `lo` in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

// The A fragment of the 16 x 16 block at `a` (row-major, stride ld) of a shared tile.
__device__ __forceinline__ void load_a_fragment(uint32_t (&frag)[4], const bf16* a, int ld,
                                                int lane) {
  ldmatrix_x4(frag, a + (lane & 15) * ld + (lane >> 4) * 8);
}

// acc (16 x N) += a (16 x 16, a fragment) * B[k0:k0+16, 0:N], B given by its N columns stored as
// rows of a shared tile (row n holds B[:, n], stride ld): S = Q K^T reads K's rows this way.
template <int N>
__device__ __forceinline__ void mma_b_rows_step(float (&acc)[N / 8][4], const uint32_t (&a)[4],
                                                const bf16* b, int ld, int k0, int lane) {
  // Lanes 0-7 address rows n0..n0+7 at k0, lanes 8-15 the same rows at k0 + 8, lanes 16-31 rows
  // n0+8..n0+15: the four matrices are b0, b1 of tile n0 and b0, b1 of tile n0 + 8.
  const bf16* base = b + ((lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int nn = 0; nn < N / 16; ++nn) {
    uint32_t f[4];
    ldmatrix_x4(f, base + nn * 16 * ld);
    mma_bf16(acc[2 * nn], a, f[0], f[1]);
    mma_bf16(acc[2 * nn + 1], a, f[2], f[3]);
  }
}

// acc (16 x N) += A (16 x K, fragments in registers) * B, B's columns as rows of a shared tile.
template <int K, int N>
__device__ __forceinline__ void mma_a_regs_b_rows(float (&acc)[N / 8][4],
                                                  const uint32_t (&a)[K / 16][4], const bf16* b,
                                                  int ld, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) mma_b_rows_step<N>(acc, a[kk], b, ld, kk * 16, lane);
}

// acc (16 x N) += A (16 x K, rows of a shared tile, stride lda) * B, B's columns as rows of a
// shared tile (stride ldb).
template <int K, int N>
__device__ __forceinline__ void mma_a_smem_b_rows(float (&acc)[N / 8][4], const bf16* a, int lda,
                                                  const bf16* b, int ldb, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t frag[4];
    load_a_fragment(frag, a + kk * 16, lda, lane);
    mma_b_rows_step<N>(acc, frag, b, ldb, kk * 16, lane);
  }
}

// acc (16 x N) += A (16 x K, fragments in registers) * B, B (K x N) row-major in a shared tile
// (stride ld): O += P V reads V this way, through the transposing ldmatrix.
template <int K, int N>
__device__ __forceinline__ void mma_a_regs_b_cols(float (&acc)[N / 8][4],
                                                  const uint32_t (&a)[K / 16][4], const bf16* b,
                                                  int ld, int lane) {
  // Lanes 0-7 address rows k0..k0+7, lanes 8-15 rows k0+8..k0+15 (both at column n0), lanes
  // 16-31 the same rows at n0 + 8: transposed, the matrices are b0, b1 of tiles n0 and n0 + 8.
  const bf16* base = b + (lane & 15) * ld + (lane >> 4) * 8;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
    for (int nn = 0; nn < N / 16; ++nn) {
      uint32_t f[4];
      ldmatrix_x4_trans(f, base + kk * 16 * ld + nn * 16);
      mma_bf16(acc[2 * nn], a[kk], f[0], f[1]);
      mma_bf16(acc[2 * nn + 1], a[kk], f[2], f[3]);
    }
  }
}

// The accumulators of a 16 x N tile, rounded to bf16, as the A fragments of its N / 16 column
// blocks.
template <int N>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[N / 16][4],
                                                  const float (&acc)[N / 8][4]) {
#pragma unroll
  for (int kj = 0; kj < N / 16; ++kj) {
    a[kj][0] = pack_bf16(acc[2 * kj][0], acc[2 * kj][1]);
    a[kj][1] = pack_bf16(acc[2 * kj][2], acc[2 * kj][3]);
    a[kj][2] = pack_bf16(acc[2 * kj + 1][0], acc[2 * kj + 1][1]);
    a[kj][3] = pack_bf16(acc[2 * kj + 1][2], acc[2 * kj + 1][3]);
  }
}

// Stores a warp's 16 x HS accumulator slab times `scale` to rows row0.. (< T) of a (T, ld)
// bf16 matrix; each lane writes pairs of adjacent columns.
template <int HS>
__device__ __forceinline__ void store_rows(bf16* dst, int64_t ld, int row0, int T,
                                           const float (&acc)[HS / 8][4], float scale, int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + lane / 4 + half * 8;
    if (row >= T) continue;
    bf16* r = dst + static_cast<int64_t>(row) * ld + (lane % 4) * 2;
#pragma unroll
    for (int dt = 0; dt < HS / 8; ++dt)
      *reinterpret_cast<__nv_bfloat162*>(r + dt * 8) =
          __floats2bfloat162_rn(acc[dt][2 * half] * scale, acc[dt][2 * half + 1] * scale);
  }
}

// True for the head sizes the flash kernels are built for.
constexpr bool flash_head_size(int64_t HS) { return HS == 32 || HS == 64 || HS == 128; }

// The bf16 flash kernels (attention_flash_forward.cu, attention_flash_backward.cu). Pointers are
// 16-byte aligned, HS satisfies flash_head_size, T >= 1.
void launch_attention_forward_flash(const bf16* q, const bf16* k, const bf16* v, bf16* out,
                                    float* lse, AttentionDims d, cudaStream_t stream);
// delta (B, NH, T): rowsum(dout * out), computed beforehand.
void launch_attention_backward_flash(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                     const float* lse, const float* delta, bf16* dq, bf16* dk,
                                     bf16* dv, AttentionDims d, cudaStream_t stream);

}  // namespace memento::ops::cuda::detail
