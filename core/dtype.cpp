#include "core/dtype.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace memento {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
  bool is_float;
};

constexpr std::array<DTypeInfo, 9> kDTypes = {{
    {DType::kF32, "f32", 4, true},
    {DType::kF64, "f64", 8, true},
    {DType::kBF16, "bf16", 2, true},
    {DType::kF16, "f16", 2, true},
    {DType::kF8E4M3, "f8e4m3", 1, true},
    {DType::kF8E5M2, "f8e5m2", 1, true},
    {DType::kI32, "i32", 4, false},
    {DType::kI64, "i64", 8, false},
    {DType::kU16, "u16", 2, false},
}};

const DTypeInfo& info(DType dtype) { return kDTypes[static_cast<size_t>(dtype)]; }

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}
float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// A small float format with kMantissa stored bits, exponent bias kBias and largest finite
// magnitude max_finite. Encodes |x| exactly with round-to-nearest-even, saturating.
struct Fp8Format {
  int mantissa_bits;
  int bias;
  double max_finite;
  uint8_t max_code;  // bits of max_finite without sign
  uint8_t nan_code;
};
constexpr Fp8Format kE4M3{3, 7, 448.0, 0x7E, 0x7F};
constexpr Fp8Format kE5M2{2, 15, 57344.0, 0x7B, 0x7E};

uint8_t encode_fp8(float x, const Fp8Format& f) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return sign | f.nan_code;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= f.max_finite) return sign | f.max_code;
  if (a == 0.0) return sign;
  const int emin = 1 - f.bias;  // exponent of the smallest normal
  int e;
  std::frexp(a, &e);
  e -= 1;  // a = m * 2^e with m in [1, 2)
  const int quantum_exp = (e < emin ? emin : e) - f.mantissa_bits;
  const double q = std::nearbyint(std::ldexp(a, -quantum_exp));  // ties to even (default mode)
  const double r = std::ldexp(q, quantum_exp);
  if (r > f.max_finite) return sign | f.max_code;
  if (r == 0.0) return sign;
  int re;
  std::frexp(r, &re);
  re -= 1;
  if (re < emin) {  // subnormal: exponent field 0
    return sign | static_cast<uint8_t>(std::ldexp(r, f.mantissa_bits - emin));
  }
  const auto mant =
      static_cast<uint8_t>(std::ldexp(r, f.mantissa_bits - re) - (1 << f.mantissa_bits));
  return sign | static_cast<uint8_t>(((re + f.bias) << f.mantissa_bits) | mant);
}

float decode_fp8(uint8_t x, const Fp8Format& f, bool has_inf) {
  const float sign = (x & 0x80) ? -1.0f : 1.0f;
  const int exp_bits = 7 - f.mantissa_bits;
  const int exp_field = (x & 0x7F) >> f.mantissa_bits;
  const int mant = x & ((1 << f.mantissa_bits) - 1);
  const int exp_max = (1 << exp_bits) - 1;
  if (has_inf && exp_field == exp_max) {
    return mant == 0 ? sign * std::numeric_limits<float>::infinity()
                     : std::numeric_limits<float>::quiet_NaN();
  }
  if (!has_inf && (x & 0x7F) == f.nan_code) return std::numeric_limits<float>::quiet_NaN();
  if (exp_field == 0) {
    return sign * static_cast<float>(std::ldexp(mant, 1 - f.bias - f.mantissa_bits));
  }
  return sign * static_cast<float>(std::ldexp(mant + (1 << f.mantissa_bits),
                                              exp_field - f.bias - f.mantissa_bits));
}

template <typename Fn>
std::array<float, 256> make_table(Fn fn) {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = fn(static_cast<uint8_t>(i));
  return t;
}

double load_as_double(const void* src, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(src)[i];
    case DType::kF64:
      return static_cast<const double*>(src)[i];
    case DType::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(src)[i]);
    case DType::kF16:
      return fp16_to_float(static_cast<const uint16_t*>(src)[i]);
    case DType::kF8E4M3:
      return fp8_e4m3_to_float(static_cast<const uint8_t*>(src)[i]);
    case DType::kF8E5M2:
      return fp8_e5m2_to_float(static_cast<const uint8_t*>(src)[i]);
    case DType::kI32:
      return static_cast<const int32_t*>(src)[i];
    case DType::kI64:
      return static_cast<double>(static_cast<const int64_t*>(src)[i]);
    case DType::kU16:
      return static_cast<const uint16_t*>(src)[i];
  }
  return 0.0;
}

// fp64 -> fp32 rounding to odd: an inexact result gets its last bit set, so that a second
// round-to-nearest-even into a format at least two bits narrower rounds as if done once.
float to_float_round_to_odd(double v) {
  float f = static_cast<float>(v);
  if (!std::isfinite(f) || static_cast<double>(f) == v) return f;
  uint32_t u = bits_of(f);
  if (std::fabs(static_cast<double>(f)) > std::fabs(v)) u -= 1;  // truncate toward zero
  return float_of(u | 1u);
}

void store_from_double(double v, void* dst, DType dtype, size_t i) {
  const bool narrow = dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF8E4M3 ||
                      dtype == DType::kF8E5M2;
  const float f = narrow ? to_float_round_to_odd(v) : static_cast<float>(v);
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(dst)[i] = f;
      break;
    case DType::kF64:
      static_cast<double*>(dst)[i] = v;
      break;
    case DType::kBF16:
      static_cast<uint16_t*>(dst)[i] = float_to_bf16(f);
      break;
    case DType::kF16:
      static_cast<uint16_t*>(dst)[i] = float_to_fp16(f);
      break;
    case DType::kF8E4M3:
      static_cast<uint8_t*>(dst)[i] = float_to_fp8_e4m3(f);
      break;
    case DType::kF8E5M2:
      static_cast<uint8_t*>(dst)[i] = float_to_fp8_e5m2(f);
      break;
    case DType::kI32:
      static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v);
      break;
    case DType::kI64:
      static_cast<int64_t*>(dst)[i] = static_cast<int64_t>(v);
      break;
    case DType::kU16:
      static_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(v);
      break;
  }
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string_view dtype_name(DType dtype) { return info(dtype).name; }
bool dtype_is_float(DType dtype) { return info(dtype).is_float; }

DType dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.dtype;
  throw ConfigError(detail::concat(
      "unknown dtype '", name, "' (expected f32, f64, bf16, f16, f8e4m3, f8e5m2, i32, i64, u16)"));
}

uint16_t float_to_bf16(float x) {
  uint32_t u = bits_of(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x0040);  // keep sign, quiet NaN
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
float bf16_to_float(uint16_t x) { return float_of(static_cast<uint32_t>(x) << 16); }

uint16_t float_to_fp16(float x) {
  const uint32_t u = bits_of(x);
  const auto sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7FFFFFFF;
  if (a > 0x7F800000) return sign | 0x7E00;   // NaN
  if (a >= 0x477FF000) return sign | 0x7C00;  // rounds to >= 65520: inf
  if (a < 0x38800000) {                       // below the smallest normal 2^-14: subnormal
    // Value in units of 2^-24, rounded to nearest even.
    const float scaled = float_of(a) * 16777216.0f;  // exact: power of two scaling
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  // Normal: rebias exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even.
  uint32_t v = a - (112u << 23);
  v += 0x0FFF + ((v >> 13) & 1);
  return sign | static_cast<uint16_t>(v >> 13);
}

float fp16_to_float(uint16_t x) {
  const uint32_t sign = static_cast<uint32_t>(x & 0x8000) << 16;
  const uint32_t exp = (x >> 10) & 0x1F;
  const uint32_t mant = x & 0x3FF;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return (x & 0x8000) ? -v : v;
  }
  if (exp == 31) return float_of(sign | 0x7F800000 | (mant << 13));
  return float_of(sign | ((exp + 112) << 23) | (mant << 13));
}

uint8_t float_to_fp8_e4m3(float x) { return encode_fp8(x, kE4M3); }
uint8_t float_to_fp8_e5m2(float x) { return encode_fp8(x, kE5M2); }

float fp8_e4m3_to_float(uint8_t x) {
  static const auto table = make_table([](uint8_t v) { return decode_fp8(v, kE4M3, false); });
  return table[x];
}
float fp8_e5m2_to_float(uint8_t x) {
  static const auto table = make_table([](uint8_t v) { return decode_fp8(v, kE5M2, true); });
  return table[x];
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n) {
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, n * dtype_size(src_dtype));
    return;
  }
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i)
    store_from_double(load_as_double(src, src_dtype, i), dst, dst_dtype, i);
}

}  // namespace memento
