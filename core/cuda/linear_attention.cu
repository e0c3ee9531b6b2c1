#include "core/cuda/linear_attention.h"

#include <mma.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"
#include "core/ops/cpu_common.h"

namespace memento::ops::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::to_f32;
using bf16 = __nv_bfloat16;

// All four passes (forward o, backward dq, dk, dv) are one chunked scan over a head's tokens:
//   out_a = sum_b P_ab z_b + w_a x_a S,  P_ab = lambda^|a-b| (x_a . y_b) on the causal (b <= a)
//   or anticausal (b >= a) triangle of the chunk,
//   S <- lambda^L S + sum_i u_i y_i^T z_i after the chunk,
// with w_a = lambda^(a+1), u_i = lambda^(L-1-i) scanning forward in time and w_a = lambda^(L-1-a),
// u_i = lambda^(i+1) scanning backward (a, b, i index the chunk's L tokens). With (x, y, z) =
// (q, k, v) and S = P this is the forward; (do, v, k) with S = P^T gives dq; backward in time,
// (v, do, q) with S = dfinal^T gives dk and (k, q, do) with S = dfinal gives dv and dinitial.
// S has HS rows (the dimension of x and y) and one CTA keeps a block of its columns (those of z).
// Two implementations of the scan share the driver run_chunks: CudaCoreScan (fp32 FMAs on fp32
// tiles, for f32 activations and for bf16 ones not aligned to 16 bytes) and TensorCoreScan (bf16
// wmma with fp32 accumulators; P, S and u z enter the products rounded to bf16).

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kTile = 64;       // tokens per chunk tile: the largest chunk the kernels process
constexpr int kMaxHeads = 128;  // decay values travel by value in the kernel parameters
constexpr int kRoles = 3;       // the backward runs dq, dk and dv in one launch

// Columns of S (and of z and out) per CTA: 32, or HS below that.
constexpr int value_block(int HS) { return HS < 32 ? HS : 32; }

// One (B, T, H, HS) activation tensor of a scan: a CTA of query head h reads head h (H = NH) or,
// when kv is set, its kv head h / (NH / NKV) (H = NKV).
struct HeadOperand {
  const void* data;
  bool kv;
};

// One scan of the launch (see the top of the file). out is (B, T, H, HS) of the activation dtype,
// or f32 when out_f32 (per-query-head partials). States are (B, NH, HS, HS) f32 or null; a
// transposed state holds S^T, i.e. S[r][c] is at [c][r].
struct ScanRole {
  HeadOperand x, y, z;
  void* out;
  bool out_kv, out_f32;
  const float* state_in;
  bool state_in_transposed;
  float* state_out;
  bool state_out_transposed;
  bool anticausal;
};

struct ScanParams {
  ScanRole roles[kRoles];  // blockIdx.z picks one
  int64_t T;
  int NH, NKV;
  int chunk;  // tokens per tile, <= kTile
  bool decay;
  double lambda[kMaxHeads];  // per query head, when decay
};

// What one CTA scans: role blockIdx.z of the params, batch and query head blockIdx.y and the VB
// columns of S from c0 = blockIdx.x * VB. Pointers are at token 0 of the CTA's heads.
template <typename T>
struct CtaScan {
  const T* x;
  const T* y;
  const T* z;                            // offset to column c0
  int64_t x_stride, y_stride, z_stride;  // elements from one token to the next
  void* out;                             // T, or float when out_f32
  int64_t out_offset, out_stride;
  bool out_f32;
  const float* state_in;  // this (b, h)'s (HS, HS) states, or null
  float* state_out;
  bool in_transposed, out_transposed, anticausal;
  int c0;
  int64_t tokens;
  int chunk;
  double lambda;

  __device__ CtaScan(const ScanParams& p, int head_size, int VB, int split, int bh,
                     int role_index) {
    const ScanRole& role = p.roles[role_index];
    const int64_t b = bh / p.NH;
    const int h = bh % p.NH, g = h / (p.NH / p.NKV);
    tokens = p.T;
    chunk = p.chunk;
    c0 = split * VB;
    anticausal = role.anticausal;
    lambda = p.decay ? p.lambda[h] : 1.0;
    // Element offset of (b, token 0, head) in a (B, T, H, HS) tensor and its token stride.
    auto offset = [&](bool kv) {
      const int H = kv ? p.NKV : p.NH;
      return (b * p.T * H + (kv ? g : h)) * head_size;
    };
    auto stride = [&](bool kv) { return static_cast<int64_t>(kv ? p.NKV : p.NH) * head_size; };
    x = static_cast<const T*>(role.x.data) + offset(role.x.kv);
    y = static_cast<const T*>(role.y.data) + offset(role.y.kv);
    z = static_cast<const T*>(role.z.data) + offset(role.z.kv) + c0;
    x_stride = stride(role.x.kv);
    y_stride = stride(role.y.kv);
    z_stride = stride(role.z.kv);
    out = role.out;
    out_offset = offset(role.out_kv) + c0;
    out_stride = stride(role.out_kv);
    out_f32 = role.out_f32;
    const int64_t state_offset = (b * p.NH + h) * head_size * head_size;
    state_in = role.state_in ? role.state_in + state_offset : nullptr;
    state_out = role.state_out ? role.state_out + state_offset : nullptr;
    in_transposed = role.state_in_transposed;
    out_transposed = role.state_out_transposed;
  }

  // Thread tid's share of the start: lambda^n for n <= kTile into pw (in fp64, rounded once) and
  // the initial state block into s (HS rows of VB floats, ld apart).
  __device__ void init_share(float* pw, float* s, int ld, int head_size, int VB, int tid) const {
    if (tid <= kTile) pw[tid] = static_cast<float>(pow(lambda, static_cast<double>(tid)));
    for (int i = tid; i < head_size * VB; i += kThreads) {
      const int r = i / VB, c = i % VB;
      float v = 0.f;
      if (state_in)
        v = in_transposed ? state_in[(c0 + c) * head_size + r] : state_in[r * head_size + c0 + c];
      s[r * ld + c] = v;
    }
  }

  // Thread tid's share of writing the state block s out.
  __device__ void store_share(const float* s, int ld, int head_size, int VB, int tid) const {
    for (int i = tid; i < head_size * VB; i += kThreads) {
      const int r = i / VB, c = i % VB;
      if (out_transposed) {
        state_out[(c0 + c) * head_size + r] = s[r * ld + c];
      } else {
        state_out[r * head_size + c0 + c] = s[r * ld + c];
      }
    }
  }
};

// The scan as phases: phases(f) runs f on every thread of the CTA (f(tid) for CudaCoreScan,
// f(warp, lanes) for TensorCoreScan), then a block barrier. Phases hand data to each other through
// shared memory only; no registers live from one phase to the next.
template <typename Scan, typename Phases>
__device__ void run_chunks(const Scan& scan, const Phases& phases) {
  phases([&](auto... at) { scan.init(at...); });
  const int64_t chunk = scan.chunk, chunks = (scan.tokens + chunk - 1) / chunk;
  for (int64_t step = 0; step < chunks; ++step) {
    const int64_t t0 = (scan.anticausal ? chunks - 1 - step : step) * chunk;
    const int len = static_cast<int>(scan.tokens - t0 < chunk ? scan.tokens - t0 : chunk);
    phases([&](auto... at) { scan.load(t0, len, at...); });
    phases([&](auto... at) { scan.scores(len, at...); });
    phases([&](auto... at) { scan.output(t0, len, at...); });
    if (step + 1 < chunks || scan.state_out)
      phases([&](auto... at) { scan.advance_state(len, at...); });
  }
  if (scan.state_out) phases([&](auto... at) { scan.store_state(at...); });
}

// ---- The scan on CUDA cores ----

constexpr int kScoreSide = 16;                  // the scores tile is 16 x 16 threads ...
constexpr int kScoreRows = kTile / kScoreSide;  // ... of 4 x 4 entries, rows and columns strided
static_assert(kThreads == kScoreSide * kScoreSide, "the scores tile covers the block");
// Rows of the tiles read as float4 along the row by threads of different rows get this many
// floats of padding: with a row length of 4 (mod 8) floats, the 8 threads of a quarter-warp
// reading 8 consecutive rows hit 8 different 16-byte bank groups.
constexpr int kPad = 4;

// Shared memory of a CudaCoreScan, in floats. x, y (kTile, HS) and P (kTile, kTile) have padded
// rows; z (kTile, VB) and S (HS, VB) are only ever read along rows by threads of one row at a time.
template <int HS>
struct CudaCoreLayout {
  static constexpr int kVB = value_block(HS);
  static constexpr int kLdXY = HS + kPad;
  static constexpr int kLdP = kTile + kPad;
  static constexpr int kX = 0;
  static constexpr int kY = kX + kTile * kLdXY;
  static constexpr int kZ = kY + kTile * kLdXY;
  static constexpr int kP = kZ + kTile * kVB;
  static constexpr int kS = kP + kTile * kLdP;
  static constexpr int kPow = kS + HS * kVB;  // lambda^n for n <= kTile
  static constexpr int kFloats = kPow + kTile + 4;
  static constexpr size_t kBytes = sizeof(float) * kFloats;
  static_assert(HS % 16 == 0 && HS % kVB == 0 && kVB % 4 == 0, "tile shapes");
  static_assert((kLdXY / 4) % 2 == 1 && (kLdP / 4) % 2 == 1, "padding keeps float4 rows apart");
};

__device__ __forceinline__ float4 load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
// acc + s * v, componentwise.
__device__ __forceinline__ float4 fma4(float s, float4 v, float4 acc) {
  return make_float4(fmaf(s, v.x, acc.x), fmaf(s, v.y, acc.y), fmaf(s, v.z, acc.z),
                     fmaf(s, v.w, acc.w));
}
__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}

// The scan on CUDA cores: fp32 tiles, register-tiled fp32 FMAs, one thread per phase call.
template <typename T, int HS>
struct CudaCoreScan : CtaScan<T> {
  using Cta = CtaScan<T>;
  using Cta::anticausal, Cta::out, Cta::out_f32, Cta::out_offset, Cta::out_stride, Cta::x,
      Cta::x_stride, Cta::y, Cta::y_stride, Cta::z, Cta::z_stride;
  using Lay = CudaCoreLayout<HS>;
  static constexpr int kVB = Lay::kVB;
  static constexpr int kGroups = kVB / 4;                // float4 column groups of z, S, out
  static constexpr int kRowGroups = kThreads / kGroups;  // thread rows over them
  static constexpr int kOutRows = kTile / kRowGroups;    // output rows per thread
  static constexpr int kStateRows = (HS + kRowGroups - 1) / kRowGroups;  // S rows per thread
  static_assert(kThreads % kGroups == 0 && kTile % kRowGroups == 0, "output tiling");

  float* sx;  // shared tiles, see CudaCoreLayout
  float* sy;
  float* sz;
  float* sp;
  float* ss;
  float* pw;

  __device__ CudaCoreScan(const ScanParams& p, int split, int bh, int role_index, float* smem)
      : Cta(p, HS, kVB, split, bh, role_index),
        sx(smem + Lay::kX),
        sy(smem + Lay::kY),
        sz(smem + Lay::kZ),
        sp(smem + Lay::kP),
        ss(smem + Lay::kS),
        pw(smem + Lay::kPow) {}

  // Powers of lambda (in fp64, rounded once) and the initial state block.
  __device__ void init(int tid) const { Cta::init_share(pw, ss, kVB, HS, kVB, tid); }

  // Tokens t0 .. t0 + len - 1 into rows 0 .. len - 1 of x, y, z; the rows after are zero.
  __device__ void load(int64_t t0, int len, int tid) const {
    for (int i = tid; i < kTile * HS; i += kThreads) {
      const int a = i / HS, d = i % HS;
      float xv = 0.f, yv = 0.f;
      if (a < len) {
        xv = to_f32(x[(t0 + a) * x_stride + d]);
        yv = to_f32(y[(t0 + a) * y_stride + d]);
      }
      sx[a * Lay::kLdXY + d] = xv;
      sy[a * Lay::kLdXY + d] = yv;
    }
    for (int i = tid; i < kTile * kVB; i += kThreads) {
      const int a = i / kVB, c = i % kVB;
      sz[i] = a < len ? to_f32(z[(t0 + a) * z_stride + c]) : 0.f;
    }
  }

  // P (kTile, kTile): the decayed scores on the chunk's triangle, zero elsewhere (and outside
  // len). Thread (ty, tx) owns rows ty + 16 r and columns tx + 16 c.
  __device__ void scores(int len, int tid) const {
    const int ty = tid / kScoreSide, tx = tid % kScoreSide;
    float acc[kScoreRows][kScoreRows] = {};
    for (int d = 0; d < HS; d += 4) {
      float4 xa[kScoreRows], yb[kScoreRows];
      for (int r = 0; r < kScoreRows; ++r)
        xa[r] = load4(sx + (ty + kScoreSide * r) * Lay::kLdXY + d);
      for (int c = 0; c < kScoreRows; ++c)
        yb[c] = load4(sy + (tx + kScoreSide * c) * Lay::kLdXY + d);
      for (int r = 0; r < kScoreRows; ++r)
        for (int c = 0; c < kScoreRows; ++c) acc[r][c] = dot4(xa[r], yb[c], acc[r][c]);
    }
    for (int r = 0; r < kScoreRows; ++r) {
      for (int c = 0; c < kScoreRows; ++c) {
        const int a = ty + kScoreSide * r, b = tx + kScoreSide * c;
        const bool keep = a < len && b < len && (anticausal ? b >= a : b <= a);
        sp[a * Lay::kLdP + b] = keep ? pw[anticausal ? b - a : a - b] * acc[r][c] : 0.f;
      }
    }
  }

  // out rows t0 + a = P z + w_a x S. Thread (rg, cg) owns rows rg + kRowGroups r, columns
  // 4 cg .. 4 cg + 3 of the CTA's block.
  __device__ void output(int64_t t0, int len, int tid) const {
    const int cg = tid % kGroups, rg = tid / kGroups;
    float4 acc_p[kOutRows], acc_s[kOutRows];
    for (int r = 0; r < kOutRows; ++r) {
      acc_p[r] = make_float4(0.f, 0.f, 0.f, 0.f);
      acc_s[r] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    // P is zero and z is zero past len, so the sum may run on to a multiple of 4.
    const int len4 = (len + 3) & ~3;
    for (int b = 0; b < len4; b += 4) {
      const float4 z0 = load4(sz + (b + 0) * kVB + 4 * cg);
      const float4 z1 = load4(sz + (b + 1) * kVB + 4 * cg);
      const float4 z2 = load4(sz + (b + 2) * kVB + 4 * cg);
      const float4 z3 = load4(sz + (b + 3) * kVB + 4 * cg);
      for (int r = 0; r < kOutRows; ++r) {
        const float4 p = load4(sp + (rg + kRowGroups * r) * Lay::kLdP + b);
        acc_p[r] = fma4(p.w, z3, fma4(p.z, z2, fma4(p.y, z1, fma4(p.x, z0, acc_p[r]))));
      }
    }
    for (int d = 0; d < HS; d += 4) {
      const float4 s0 = load4(ss + (d + 0) * kVB + 4 * cg);
      const float4 s1 = load4(ss + (d + 1) * kVB + 4 * cg);
      const float4 s2 = load4(ss + (d + 2) * kVB + 4 * cg);
      const float4 s3 = load4(ss + (d + 3) * kVB + 4 * cg);
      for (int r = 0; r < kOutRows; ++r) {
        const float4 xv = load4(sx + (rg + kRowGroups * r) * Lay::kLdXY + d);
        acc_s[r] = fma4(xv.w, s3, fma4(xv.z, s2, fma4(xv.y, s1, fma4(xv.x, s0, acc_s[r]))));
      }
    }
    for (int r = 0; r < kOutRows; ++r) {
      const int a = rg + kRowGroups * r;
      if (a >= len) continue;
      const float w = pw[anticausal ? len - 1 - a : a + 1];
      const float4 o = fma4(w, acc_s[r], acc_p[r]);
      const int64_t at = out_offset + (t0 + a) * out_stride + 4 * cg;
      if (out_f32) {
        float* dst = static_cast<float*>(out) + at;
        dst[0] = o.x;
        dst[1] = o.y;
        dst[2] = o.z;
        dst[3] = o.w;
      } else {
        T* dst = static_cast<T*>(out) + at;
        dst[0] = from_f32<T>(o.x);
        dst[1] = from_f32<T>(o.y);
        dst[2] = from_f32<T>(o.z);
        dst[3] = from_f32<T>(o.w);
      }
    }
  }

  // S = lambda^len S + sum_i u_i y_i^T z_i. Thread (rg, cg) owns rows rg + kRowGroups r (those
  // below HS) and columns 4 cg .. 4 cg + 3.
  __device__ void advance_state(int len, int tid) const {
    const int cg = tid % kGroups, rg = tid / kGroups;
    float4 inc[kStateRows];
    for (int r = 0; r < kStateRows; ++r) inc[r] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int i = 0; i < len; ++i) {
      const float u = pw[anticausal ? i + 1 : len - 1 - i];
      const float4 zi = load4(sz + i * kVB + 4 * cg);
      const float4 zu = make_float4(u * zi.x, u * zi.y, u * zi.z, u * zi.w);
      for (int r = 0; r < kStateRows; ++r) {
        const int d = rg + kRowGroups * r;
        if (d < HS) inc[r] = fma4(sy[i * Lay::kLdXY + d], zu, inc[r]);
      }
    }
    const float decay = pw[len];
    for (int r = 0; r < kStateRows; ++r) {
      const int d = rg + kRowGroups * r;
      if (d >= HS) continue;
      float* s = ss + d * kVB + 4 * cg;
      const float4 old = load4(s);
      store4(s, make_float4(fmaf(decay, old.x, inc[r].x), fmaf(decay, old.y, inc[r].y),
                            fmaf(decay, old.z, inc[r].z), fmaf(decay, old.w, inc[r].w)));
    }
  }

  __device__ void store_state(int tid) const { Cta::store_share(ss, kVB, HS, kVB, tid); }
};

template <typename T, int HS>
__global__ void __launch_bounds__(kThreads, 3)
    linear_attention_scan_cuda_cores(const __grid_constant__ ScanParams params) {
  extern __shared__ float4 smem[];
  const CudaCoreScan<T, HS> scan(params, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                                 static_cast<int>(blockIdx.z), reinterpret_cast<float*>(smem));
  run_chunks(scan, [](auto&& phase) {
    phase(static_cast<int>(threadIdx.x));
    __syncthreads();
  });
}

// ---- The scan on tensor cores ----

// Warp-collective 16 x 16 x 16 tensor-core tile operations: bf16 operands, fp32 accumulators.
struct WmmaTiles {
  template <typename Layout>
  using A = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, Layout>;
  template <typename Layout>
  using B = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, Layout>;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

  template <typename Frag>
  static __device__ void load(Frag& f, const bf16* p, int ld) {
    wmma::load_matrix_sync(f, p, static_cast<unsigned>(ld));
  }
  static __device__ void load(Acc& f, const float* p, int ld) {
    wmma::load_matrix_sync(f, p, static_cast<unsigned>(ld), wmma::mem_row_major);
  }
  static __device__ void store(float* p, const Acc& f, int ld) {
    wmma::store_matrix_sync(p, f, static_cast<unsigned>(ld), wmma::mem_row_major);
  }
  static __device__ void zero(Acc& f) { wmma::fill_fragment(f, 0.f); }
  static __device__ void scale(Acc& f, float s) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] *= s;
  }
  template <typename FragA, typename FragB>
  static __device__ void mma(Acc& d, const FragA& a, const FragB& b) {
    wmma::mma_sync(d, a, b, d);
  }
  static __device__ void sync_warp() { __syncwarp(); }
};

// The calling thread's lane in a TensorCoreScan phase: each(f) runs the per-lane work f(lane).
struct ThreadLane {
  int lane;
  template <typename F>
  __device__ void each(F&& f) const {
    f(lane);
  }
};

constexpr int kMma = 16;  // side of a wmma tile
constexpr int kVec = 8;   // bf16 values per 16-byte access

// Shared memory of a TensorCoreScan, in bytes. bf16 tiles: x and y (kTile, HS), z and u z
// (kTile, VB), P (kTile, kTile) and S (HS, VB); f32: S (HS, VB), two (16, 16) scratch tiles per
// warp and the powers of lambda. Rows are padded by 16 bytes (bank spread for the wmma loads) and
// every 16 x 16 tile starts 32-byte aligned, as wmma requires.
template <int HS>
struct TensorCoreLayout {
  static constexpr int kVB = value_block(HS);
  static constexpr int kLdXY = HS + kVec;                 // bf16
  static constexpr int kLdZ = kVB + kVec;                 // bf16, also the bf16 S
  static constexpr int kLdP = kTile + kVec;               // bf16
  static constexpr int kLdS = kVB + 4;                    // f32
  static constexpr int kLdScratch = kMma + 4;             // f32
  static constexpr int kScratchTile = kMma * kLdScratch;  // floats
  static constexpr size_t kXYBytes = sizeof(bf16) * kTile * kLdXY;
  static constexpr size_t kZBytes = sizeof(bf16) * kTile * kLdZ;
  static constexpr size_t kX = 0;
  static constexpr size_t kY = kX + kXYBytes;
  static constexpr size_t kZ = kY + kXYBytes;
  static constexpr size_t kZu = kZ + kZBytes;
  static constexpr size_t kP = kZu + kZBytes;
  static constexpr size_t kSb = kP + sizeof(bf16) * kTile * kLdP;
  static constexpr size_t kS = kSb + sizeof(bf16) * HS * kLdZ;
  static constexpr size_t kScratch = kS + sizeof(float) * HS * kLdS;
  static constexpr size_t kPow = kScratch + sizeof(float) * kWarps * 2 * kScratchTile;
  static constexpr size_t kBytes = kPow + sizeof(float) * (kTile + 8);
  static_assert(HS % kMma == 0 && kVB % kMma == 0, "whole wmma tiles");
  static_assert(kLdXY % 8 == 0 && kLdZ % 8 == 0 && kLdP % 8 == 0 && kLdS % 4 == 0 &&
                    kLdScratch % 4 == 0,
                "wmma leading dimensions");
  static_assert(kY % 32 == 0 && kZ % 32 == 0 && kZu % 32 == 0 && kP % 32 == 0 && kSb % 32 == 0 &&
                    kS % 32 == 0 && kScratch % 32 == 0 && kPow % 32 == 0 &&
                    (kMma * kLdXY * sizeof(bf16)) % 32 == 0 &&
                    (kMma * kLdZ * sizeof(bf16)) % 32 == 0 &&
                    (kMma * kLdP * sizeof(bf16)) % 32 == 0 &&
                    (kMma * kLdS * sizeof(float)) % 32 == 0 &&
                    (kMma * kLdScratch * sizeof(float)) % 32 == 0,
                "32-byte aligned wmma tiles");
};

// 16 bytes of global or shared memory as 8 bf16.
__device__ __forceinline__ uint4 load16(const bf16* p) {
  return *reinterpret_cast<const uint4*>(p);
}
__device__ __forceinline__ void store16(bf16* p, uint4 v) { *reinterpret_cast<uint4*>(p) = v; }
// 8 bf16 times s, rounded to bf16.
__device__ __forceinline__ uint4 scale_bf16x8(uint4 v, float s) {
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
  for (int i = 0; i < kVec / 2; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    h[i] = __floats2bfloat162_rn(f.x * s, f.y * s);
  }
  return v;
}

// The scan on tensor cores for bf16 activations whose rows are 16-byte aligned. Each phase runs
// per warp: the matrix products on 16 x 16 tiles are warp-collective, the element-wise work is
// spread over the lanes (lanes.each). Tiles are dealt to the 8 warps round robin.
template <int HS>
struct TensorCoreScan : CtaScan<bf16> {
  using Lay = TensorCoreLayout<HS>;
  using Tiles = WmmaTiles;
  static constexpr int kVB = Lay::kVB;
  static constexpr int kRowTiles = kTile / kMma;  // tiles down a chunk
  static constexpr int kColTiles = kVB / kMma;    // tiles across the CTA's columns of S
  static constexpr int kDepthTiles = HS / kMma;   // tiles across HS

  bf16* sx;  // shared tiles, see TensorCoreLayout
  bf16* sy;
  bf16* sz;
  bf16* szu;
  bf16* sp;
  bf16* ssb;
  float* ss;
  float* scratch;
  float* pw;

  __device__ TensorCoreScan(const ScanParams& p, int split, int bh, int role_index,
                            unsigned char* smem)
      : CtaScan<bf16>(p, HS, kVB, split, bh, role_index),
        sx(reinterpret_cast<bf16*>(smem + Lay::kX)),
        sy(reinterpret_cast<bf16*>(smem + Lay::kY)),
        sz(reinterpret_cast<bf16*>(smem + Lay::kZ)),
        szu(reinterpret_cast<bf16*>(smem + Lay::kZu)),
        sp(reinterpret_cast<bf16*>(smem + Lay::kP)),
        ssb(reinterpret_cast<bf16*>(smem + Lay::kSb)),
        ss(reinterpret_cast<float*>(smem + Lay::kS)),
        scratch(reinterpret_cast<float*>(smem + Lay::kScratch)),
        pw(reinterpret_cast<float*>(smem + Lay::kPow)) {}

  // The weights of token a of a chunk of len tokens: w_a on x S, u_a on y^T z.
  __device__ float w(int a, int len) const { return pw[anticausal ? len - 1 - a : a + 1]; }
  __device__ float u(int a, int len) const { return pw[anticausal ? a + 1 : len - 1 - a]; }

  // Powers of lambda (in fp64, rounded once) and the initial state block.
  template <typename Lanes>
  __device__ void init(int warp, const Lanes& lanes) const {
    lanes.each([&](int lane) { init_share(pw, ss, Lay::kLdS, HS, kVB, warp * kWarpSize + lane); });
  }

  // Tokens t0 .. t0 + len - 1 into rows 0 .. len - 1 of x, y, z and u z (the rows after
  // are zero), and S in bf16 for this chunk's products.
  template <typename Lanes>
  __device__ void load(int64_t t0, int len, int warp, const Lanes& lanes) const {
    lanes.each([&](int lane) {
      const int tid = warp * kWarpSize + lane;
      const uint4 zero = make_uint4(0, 0, 0, 0);
      constexpr int kXYVecs = HS / kVec;
      for (int i = tid; i < kTile * kXYVecs; i += kThreads) {
        const int a = i / kXYVecs, d = (i % kXYVecs) * kVec;
        uint4 xv = zero, yv = zero;
        if (a < len) {
          xv = load16(x + (t0 + a) * x_stride + d);
          yv = load16(y + (t0 + a) * y_stride + d);
        }
        store16(sx + a * Lay::kLdXY + d, xv);
        store16(sy + a * Lay::kLdXY + d, yv);
      }
      constexpr int kZVecs = kVB / kVec;
      for (int i = tid; i < kTile * kZVecs; i += kThreads) {
        const int a = i / kZVecs, c = (i % kZVecs) * kVec;
        uint4 zv = zero, zuv = zero;
        if (a < len) {
          zv = load16(z + (t0 + a) * z_stride + c);
          zuv = scale_bf16x8(zv, u(a, len));
        }
        store16(sz + a * Lay::kLdZ + c, zv);
        store16(szu + a * Lay::kLdZ + c, zuv);
      }
      for (int i = tid; i < HS * kVB; i += kThreads) {
        const int r = i / kVB, c = i % kVB;
        ssb[r * Lay::kLdZ + c] = __float2bfloat16_rn(ss[r * Lay::kLdS + c]);
      }
    });
  }

  // P (kTile, kTile) in bf16: the decayed scores x y^T on the chunk's triangle, zero elsewhere
  // (and outside len). Tiles off the triangle or past len skip the product.
  template <typename Lanes>
  __device__ void scores(int len, int warp, const Lanes& lanes) const {
    float* tile = scratch + warp * 2 * Lay::kScratchTile;
    for (int t = warp; t < kRowTiles * kRowTiles; t += kWarps) {
      const int ti = t / kRowTiles, tj = t % kRowTiles;
      const bool live = (anticausal ? tj >= ti : tj <= ti) && ti * kMma < len && tj * kMma < len;
      if (live) {
        typename Tiles::Acc acc;
        Tiles::zero(acc);
        for (int k = 0; k < kDepthTiles; ++k) {
          typename Tiles::template A<wmma::row_major> a;
          typename Tiles::template B<wmma::col_major> b;  // y^T: y's rows are its columns
          Tiles::load(a, sx + ti * kMma * Lay::kLdXY + k * kMma, Lay::kLdXY);
          Tiles::load(b, sy + tj * kMma * Lay::kLdXY + k * kMma, Lay::kLdXY);
          Tiles::mma(acc, a, b);
        }
        Tiles::store(tile, acc, Lay::kLdScratch);
        Tiles::sync_warp();
      }
      lanes.each([&](int lane) {
        for (int e = lane; e < kMma * kMma; e += kWarpSize) {
          const int r = e / kMma, c = e % kMma;
          const int a = ti * kMma + r, b = tj * kMma + c;
          const bool keep = live && a < len && b < len && (anticausal ? b >= a : b <= a);
          sp[a * Lay::kLdP + b] = __float2bfloat16_rn(
              keep ? pw[anticausal ? b - a : a - b] * tile[r * Lay::kLdScratch + c] : 0.f);
        }
      });
      Tiles::sync_warp();  // the next tile's product reuses the scratch
    }
  }

  // out rows t0 + a = P z + w_a x S for the tiles of rows below len: the two products go to the
  // warp's two scratch tiles and the lanes combine them with the row weights.
  template <typename Lanes>
  __device__ void output(int64_t t0, int len, int warp, const Lanes& lanes) const {
    float* tile_p = scratch + warp * 2 * Lay::kScratchTile;
    float* tile_s = tile_p + Lay::kScratchTile;
    for (int t = warp; t < kRowTiles * kColTiles; t += kWarps) {
      const int ti = t / kColTiles, tj = t % kColTiles;
      if (ti * kMma >= len) continue;
      typename Tiles::Acc acc_p, acc_s;
      Tiles::zero(acc_p);
      Tiles::zero(acc_s);
      // P's tiles on the triangle that hold tokens below len.
      const int k_begin = anticausal ? ti : 0, k_end = anticausal ? kRowTiles : ti + 1;
      for (int k = k_begin; k < k_end && k * kMma < len; ++k) {
        typename Tiles::template A<wmma::row_major> a;
        typename Tiles::template B<wmma::row_major> b;
        Tiles::load(a, sp + ti * kMma * Lay::kLdP + k * kMma, Lay::kLdP);
        Tiles::load(b, sz + k * kMma * Lay::kLdZ + tj * kMma, Lay::kLdZ);
        Tiles::mma(acc_p, a, b);
      }
      for (int k = 0; k < kDepthTiles; ++k) {
        typename Tiles::template A<wmma::row_major> a;
        typename Tiles::template B<wmma::row_major> b;
        Tiles::load(a, sx + ti * kMma * Lay::kLdXY + k * kMma, Lay::kLdXY);
        Tiles::load(b, ssb + k * kMma * Lay::kLdZ + tj * kMma, Lay::kLdZ);
        Tiles::mma(acc_s, a, b);
      }
      Tiles::store(tile_p, acc_p, Lay::kLdScratch);
      Tiles::store(tile_s, acc_s, Lay::kLdScratch);
      Tiles::sync_warp();
      // Lane l writes 8 columns, half l % 2 of the tile's row l / 2.
      lanes.each([&](int lane) {
        const int r = lane / 2, half = (lane % 2) * kVec;
        const int a = ti * kMma + r;
        if (a >= len) return;
        const float wa = w(a, len);
        float o[kVec];
        for (int i = 0; i < kVec; ++i) {
          const int at = r * Lay::kLdScratch + half + i;
          o[i] = fmaf(wa, tile_s[at], tile_p[at]);
        }
        const int64_t at = out_offset + (t0 + a) * out_stride + tj * kMma + half;
        if (out_f32) {
          float* dst = static_cast<float*>(out) + at;
          for (int i = 0; i < kVec; i += 4)
            *reinterpret_cast<float4*>(dst + i) = make_float4(o[i], o[i + 1], o[i + 2], o[i + 3]);
        } else {
          uint4 packed;
          __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&packed);
          for (int i = 0; i < kVec / 2; ++i) h[i] = __floats2bfloat162_rn(o[2 * i], o[2 * i + 1]);
          store16(static_cast<bf16*>(out) + at, packed);
        }
      });
      Tiles::sync_warp();  // the next tile's products reuse the scratch
    }
  }

  // S = lambda^len S + y^T (u z), one 16 x 16 tile of S per warp at a time.
  template <typename Lanes>
  __device__ void advance_state(int len, int warp, const Lanes&) const {
    for (int t = warp; t < kDepthTiles * kColTiles; t += kWarps) {
      const int ti = t / kColTiles, tj = t % kColTiles;
      float* s = ss + ti * kMma * Lay::kLdS + tj * kMma;
      typename Tiles::Acc acc;
      Tiles::load(acc, s, Lay::kLdS);
      Tiles::scale(acc, pw[len]);
      for (int k = 0; k * kMma < len; ++k) {
        typename Tiles::template A<wmma::col_major> a;  // y^T: y's rows are its columns
        typename Tiles::template B<wmma::row_major> b;
        Tiles::load(a, sy + k * kMma * Lay::kLdXY + ti * kMma, Lay::kLdXY);
        Tiles::load(b, szu + k * kMma * Lay::kLdZ + tj * kMma, Lay::kLdZ);
        Tiles::mma(acc, a, b);
      }
      Tiles::sync_warp();
      Tiles::store(s, acc, Lay::kLdS);
    }
  }

  template <typename Lanes>
  __device__ void store_state(int warp, const Lanes& lanes) const {
    lanes.each([&](int lane) { store_share(ss, Lay::kLdS, HS, kVB, warp * kWarpSize + lane); });
  }
};

template <int HS>
__global__ void __launch_bounds__(kThreads, 3)
    linear_attention_scan_tensor_cores(const __grid_constant__ ScanParams params) {
  extern __shared__ __align__(128) unsigned char tc_smem[];
  const TensorCoreScan<HS> scan(params, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                                static_cast<int>(blockIdx.z), tc_smem);
  run_chunks(scan, [](auto&& phase) {
    phase(static_cast<int>(threadIdx.x) / kWarpSize,
          ThreadLane{static_cast<int>(threadIdx.x) % kWarpSize});
    __syncthreads();
  });
}

// ---- Group sums, launchers and the ops ----

// out[row][g][d] = sum over the group's heads h (in order) of partial[row][h][d]; i indexes out
// (rows, NKV, HS), partial is (rows, NH, HS) f32.
template <typename T>
__device__ void sum_group_heads_at(int64_t i, const float* partial, T* out, int NH, int NKV,
                                   int HS) {
  const int64_t d = i % HS, rest = i / HS;
  const int64_t g = rest % NKV, row = rest / NKV;
  const int group = NH / NKV;
  const float* src = partial + (row * NH + g * group) * HS + d;
  float sum = 0.f;
  for (int h = 0; h < group; ++h) sum += src[h * HS];
  out[i] = from_f32<T>(sum);
}

template <typename T>
__global__ void linear_attention_sum_group_heads(const float* __restrict__ partial,
                                                 T* __restrict__ out, int64_t n, int NH, int NKV,
                                                 int HS) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    sum_group_heads_at(i, partial, out, NH, NKV, HS);
}

// Launches roles [0, roles) of params over (column blocks of S, B * NH, roles).
template <typename Kernel>
void launch_scan(Kernel kernel, size_t smem_bytes, int column_blocks, const ScanParams& params,
                 int64_t B, int roles, cudaStream_t stream) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem_bytes)));
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(B * params.NH),
                  static_cast<unsigned>(roles));
  kernel<<<grid, kThreads, smem_bytes, stream>>>(params);
  CUDA_CHECK_LAUNCH();
}

template <typename T, int HS>
void launch_scan_hs(const ScanParams& params, int64_t B, int roles, bool tensor_cores,
                    cudaStream_t stream) {
  constexpr int kColumnBlocks = HS / value_block(HS);
  if constexpr (std::is_same_v<T, bf16>) {
    if (tensor_cores) {
      launch_scan(linear_attention_scan_tensor_cores<HS>, TensorCoreLayout<HS>::kBytes,
                  kColumnBlocks, params, B, roles, stream);
      return;
    }
  }
  launch_scan(linear_attention_scan_cuda_cores<T, HS>, CudaCoreLayout<HS>::kBytes, kColumnBlocks,
              params, B, roles, stream);
}

// tensor_cores: bf16 activations whose pointers are 16-byte aligned take TensorCoreScan.
template <typename T>
void launch_chunk_scan(const ScanParams& params, int64_t B, int64_t HS, int roles,
                       bool tensor_cores, cudaStream_t stream) {
  if (B * params.NH == 0) return;
  switch (HS) {
    case 16:
      launch_scan_hs<T, 16>(params, B, roles, tensor_cores, stream);
      return;
    case 32:
      launch_scan_hs<T, 32>(params, B, roles, tensor_cores, stream);
      return;
    case 64:
      launch_scan_hs<T, 64>(params, B, roles, tensor_cores, stream);
      return;
    case 128:
      launch_scan_hs<T, 128>(params, B, roles, tensor_cores, stream);
      return;
    default:
      break;
  }
  MEMENTO_CHECK(false, "linear attention: unsupported HS ", HS, " passed the checks");
}

template <typename T>
void launch_sum_group_heads(const float* partial, T* out, int64_t rows, int NH, int NKV, int HS,
                            cudaStream_t stream) {
  const int64_t n = rows * NKV * HS;
  if (n == 0) return;
  linear_attention_sum_group_heads<T>
      <<<blocks_for(n, kThreads), kThreads, 0, stream>>>(partial, out, n, NH, NKV, HS);
  CUDA_CHECK_LAUNCH();
}

struct Dims : ops::detail::HeadDims {};

bool given(const TensorView& t) { return t.ndim() != 0; }

Dims check_inputs(const TensorView& q, const TensorView& k, const TensorView& v,
                  std::span<const double> decay, int64_t chunk, const char* op) {
  const Dims d{ops::detail::check_qkv(q, k, v, op)};
  memento::cuda::detail::expect_cuda({q, k, v}, op);
  MEMENTO_EXPECT(q.dtype() == DType::kF32 || q.dtype() == DType::kBF16, ShapeError, op,
                 ": q must be f32 or bf16 on the GPU, got ", dtype_name(q.dtype()));
  MEMENTO_EXPECT(d.HS == 16 || d.HS == 32 || d.HS == 64 || d.HS == 128, ShapeError, op,
                 ": head size HS must be 16, 32, 64 or 128 on the GPU, got ", d.HS);
  MEMENTO_EXPECT(chunk > 0, ShapeError, op, ": chunk must be positive, got ", chunk);
  MEMENTO_EXPECT(d.B * d.NH <= 65535, ShapeError, op, ": B * NH must be at most 65535, got ",
                 d.B * d.NH);
  MEMENTO_EXPECT(decay.empty() || static_cast<int64_t>(decay.size()) == d.NH, ShapeError, op,
                 ": expected ", d.NH, " decay values (one per query head), got ", decay.size());
  MEMENTO_EXPECT(decay.empty() || d.NH <= kMaxHeads, ShapeError, op, ": decay takes at most ",
                 kMaxHeads, " heads on the GPU, got ", d.NH);
  for (const double lambda : decay)
    MEMENTO_EXPECT(lambda > 0 && lambda <= 1, ShapeError, op, ": decay must lie in (0, 1], got ",
                   lambda);
  return d;
}

void check_activation(const TensorView& t, const TensorView& q, const Shape& shape,
                      const char* what) {
  expect_shape(t, shape, what);
  expect_dtype(t, q.dtype(), what);
  memento::cuda::detail::expect_cuda({t}, what);
}

void check_state(const TensorView& s, const Dims& d, const char* what) {
  if (!given(s)) return;
  expect_shape(s, Shape{d.B, d.NH, d.HS, d.HS}, what);
  expect_dtype(s, DType::kF32, what);
  memento::cuda::detail::expect_cuda({s}, what);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the tensor-core scan may take these activations: bf16, moved in 16-byte vectors.
bool tensor_core_ready(std::initializer_list<TensorView> tensors) {
  for (const TensorView& t : tensors)
    if (t.dtype() != DType::kBF16 || !aligned16(t.raw())) return false;
  return true;
}

const float* state_ptr(const TensorView& s) {
  return given(s) ? static_cast<const float*>(s.raw()) : nullptr;
}
float* state_ptr_mut(const TensorView& s) {
  return given(s) ? static_cast<float*>(s.raw()) : nullptr;
}

ScanParams make_params(const Dims& d, std::span<const double> decay, int64_t chunk) {
  ScanParams p{};
  p.T = d.T;
  p.NH = static_cast<int>(d.NH);
  p.NKV = static_cast<int>(d.NKV);
  p.chunk = static_cast<int>(chunk < kTile ? chunk : kTile);
  p.decay = !decay.empty();
  for (size_t h = 0; h < decay.size(); ++h) p.lambda[h] = decay[h];
  return p;
}

Dims check_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, std::span<const double> decay, int64_t chunk,
                   const TensorView& initial_state, const TensorView& final_state) {
  const Dims d = check_inputs(q, k, v, decay, chunk, "cuda::linear_attention_forward");
  check_activation(out, q, q.shape(), "cuda::linear_attention_forward: out");
  check_state(initial_state, d, "cuda::linear_attention_forward: initial_state");
  check_state(final_state, d, "cuda::linear_attention_forward: final_state");
  return d;
}

// One role: the forward scan over (q, k, v) from P.
ScanParams forward_params(const Dims& d, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& out, std::span<const double> decay,
                          int64_t chunk, const TensorView& initial_state,
                          const TensorView& final_state) {
  ScanParams p = make_params(d, decay, chunk);
  p.roles[0] = ScanRole{.x = {q.raw(), false},
                        .y = {k.raw(), true},
                        .z = {v.raw(), true},
                        .out = out.raw(),
                        .out_kv = false,
                        .out_f32 = false,
                        .state_in = state_ptr(initial_state),
                        .state_in_transposed = false,
                        .state_out = state_ptr_mut(final_state),
                        .state_out_transposed = false,
                        .anticausal = false};
  return p;
}

Dims check_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& dout, const TensorView& dq, const TensorView& dk,
                    const TensorView& dv, std::span<const double> decay, int64_t chunk,
                    const TensorView& initial_state, const TensorView& dfinal_state,
                    const TensorView& dinitial_state) {
  const Dims d = check_inputs(q, k, v, decay, chunk, "cuda::linear_attention_backward");
  check_activation(dout, q, q.shape(), "cuda::linear_attention_backward: dout");
  check_activation(dq, q, q.shape(), "cuda::linear_attention_backward: dq");
  check_activation(dk, q, k.shape(), "cuda::linear_attention_backward: dk");
  check_activation(dv, q, k.shape(), "cuda::linear_attention_backward: dv");
  check_state(initial_state, d, "cuda::linear_attention_backward: initial_state");
  check_state(dfinal_state, d, "cuda::linear_attention_backward: dfinal_state");
  check_state(dinitial_state, d, "cuda::linear_attention_backward: dinitial_state");
  return d;
}

// Three roles: dq, dk, dv. dk_out and dv_out are dk and dv (B, T, NKV, HS), or with grouped heads
// the f32 per-query-head partials (B, T, NH, HS).
ScanParams backward_params(const Dims& d, const TensorView& q, const TensorView& k,
                           const TensorView& v, const TensorView& dout, const TensorView& dq,
                           const TensorView& dk_out, const TensorView& dv_out, bool grouped,
                           std::span<const double> decay, int64_t chunk,
                           const TensorView& initial_state, const TensorView& dfinal_state,
                           const TensorView& dinitial_state) {
  ScanParams p = make_params(d, decay, chunk);
  // dq: forward in time over (do, v, k) from P^T.
  p.roles[0] = ScanRole{.x = {dout.raw(), false},
                        .y = {v.raw(), true},
                        .z = {k.raw(), true},
                        .out = dq.raw(),
                        .out_kv = false,
                        .out_f32 = false,
                        .state_in = state_ptr(initial_state),
                        .state_in_transposed = true,
                        .state_out = nullptr,
                        .state_out_transposed = false,
                        .anticausal = false};
  // dk: backward in time over (v, do, q) from dfinal^T.
  p.roles[1] = ScanRole{.x = {v.raw(), true},
                        .y = {dout.raw(), false},
                        .z = {q.raw(), false},
                        .out = dk_out.raw(),
                        .out_kv = !grouped,
                        .out_f32 = grouped,
                        .state_in = state_ptr(dfinal_state),
                        .state_in_transposed = true,
                        .state_out = nullptr,
                        .state_out_transposed = false,
                        .anticausal = true};
  // dv: backward in time over (k, q, do) from dfinal; its state ends as dinitial.
  p.roles[2] = ScanRole{.x = {k.raw(), true},
                        .y = {q.raw(), false},
                        .z = {dout.raw(), false},
                        .out = dv_out.raw(),
                        .out_kv = !grouped,
                        .out_f32 = grouped,
                        .state_in = state_ptr(dfinal_state),
                        .state_in_transposed = false,
                        .state_out = state_ptr_mut(dinitial_state),
                        .state_out_transposed = false,
                        .anticausal = true};
  return p;
}

}  // namespace

void linear_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, std::span<const double> decay, int64_t chunk,
                              const TensorView& initial_state, const TensorView& final_state,
                              cudaStream_t stream) {
  const Dims d = check_forward(q, k, v, out, decay, chunk, initial_state, final_state);
  const ScanParams p = forward_params(d, q, k, v, out, decay, chunk, initial_state, final_state);
  memento::cuda::detail::dispatch_activation(
      q.dtype(), "cuda::linear_attention_forward", "q", [&](auto zero) {
        launch_chunk_scan<decltype(zero)>(p, d.B, d.HS, 1, tensor_core_ready({q, k, v, out}),
                                          stream);
      });
}

void linear_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, const TensorView& dq, const TensorView& dk,
                               const TensorView& dv, std::span<const double> decay, int64_t chunk,
                               const TensorView& initial_state, const TensorView& dfinal_state,
                               const TensorView& dinitial_state, cudaStream_t stream) {
  const Dims d = check_backward(q, k, v, dout, dq, dk, dv, decay, chunk, initial_state,
                                dfinal_state, dinitial_state);
  // With grouped heads every query head writes its own fp32 dk and dv rows, summed per group in
  // head order afterwards: the CTAs stay independent and the sum is deterministic.
  const bool grouped = d.NH != d.NKV;
  const bool partials = grouped && q.numel() > 0;
  const Tensor dk_heads =
      partials ? Tensor::empty(q.shape(), DType::kF32, q.device()) : Tensor();  // (B, T, NH, HS)
  const Tensor dv_heads =
      partials ? Tensor::empty(q.shape(), DType::kF32, q.device()) : Tensor();  // (B, T, NH, HS)
  const ScanParams p = backward_params(d, q, k, v, dout, dq, grouped ? dk_heads.view() : dk,
                                       grouped ? dv_heads.view() : dv, grouped, decay, chunk,
                                       initial_state, dfinal_state, dinitial_state);
  memento::cuda::detail::dispatch_activation(
      q.dtype(), "cuda::linear_attention_backward", "q", [&](auto zero) {
        using T = decltype(zero);
        const bool tensor_cores =
            tensor_core_ready({q, k, v, dout, dq, dk, dv}) &&
            (!grouped || (aligned16(dk_heads.view().raw()) && aligned16(dv_heads.view().raw())));
        launch_chunk_scan<T>(p, d.B, d.HS, kRoles, tensor_cores, stream);
        if (!partials) return;
        const auto NH = static_cast<int>(d.NH), NKV = static_cast<int>(d.NKV);
        const auto HS = static_cast<int>(d.HS);
        launch_sum_group_heads<T>(dk_heads.data<float>(), static_cast<T*>(dk.raw()), d.B * d.T, NH,
                                  NKV, HS, stream);
        launch_sum_group_heads<T>(dv_heads.data<float>(), static_cast<T*>(dv.raw()), d.B * d.T, NH,
                                  NKV, HS, stream);
      });
}

}  // namespace memento::ops::cuda
