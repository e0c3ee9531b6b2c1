// Element types. A tensor's dtype is run-time data; conversions to and from the narrow float
// formats round to nearest, ties to even. FP8 conversions saturate to the largest finite value
// (the "satfinite" behaviour used for training); bf16 and fp16 follow IEEE and overflow to inf.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace memento {

enum class DType : uint8_t { kF32, kF64, kBF16, kF16, kF8E4M3, kF8E5M2, kI32, kI64, kU16 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);      // "f32", "bf16", "f8e4m3", ...
DType dtype_from_name(std::string_view name);  // throws ConfigError on an unknown name
bool dtype_is_float(DType dtype);

// Scalar conversions. float_to_* round to nearest even; NaN stays NaN.
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t x);
uint16_t float_to_fp16(float x);
float fp16_to_float(uint16_t x);
uint8_t float_to_fp8_e4m3(float x);  // saturates to +-448; e4m3 has no infinity
float fp8_e4m3_to_float(uint8_t x);
uint8_t float_to_fp8_e5m2(float x);  // saturates to +-57344 (inf saturates too)
float fp8_e5m2_to_float(uint8_t x);

// Converts n elements between any two dtypes (floats through fp32/fp64; ints by value).
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n);

// Maps C++ element types to dtypes for typed access to tensor data.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};

}  // namespace memento
