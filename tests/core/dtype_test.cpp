#include "core/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"

// Every conversion is checked against a reference written here from the format definitions
// (sign, exponent field, mantissa field, bias, special encodings), not from the implementation:
// decoding builds the value from its fields, and encoding picks the nearest representable value
// by search over the decoded table, ties to the even code. fp16 is also checked against the
// compiler's IEEE _Float16.

namespace memento {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kInfF = std::numeric_limits<float>::infinity();

float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// A binary float format: 1 sign bit, exp_bits exponent bits, man_bits mantissa bits.
struct Format {
  const char* name;
  int exp_bits;
  int man_bits;
  int bias;
  // IEEE: exponent all ones is inf (mantissa 0) or NaN. FN (OCP e4m3): no inf, only the code
  // with exponent and mantissa all ones is NaN.
  bool ieee_specials;
  // Overflow: IEEE formats round to inf; fp8 saturates to the largest finite value.
  bool saturate;

  int bits() const { return 1 + exp_bits + man_bits; }
  uint32_t sign_bit() const { return 1u << (bits() - 1); }
  uint32_t magnitude_mask() const { return sign_bit() - 1; }
  int exp_field(uint32_t c) const {
    return static_cast<int>((c >> man_bits) & ((1u << exp_bits) - 1));
  }
  uint32_t man_field(uint32_t c) const { return c & ((1u << man_bits) - 1); }
  int exp_max_field() const { return (1 << exp_bits) - 1; }

  bool is_nan(uint32_t c) const {
    if (ieee_specials) return exp_field(c) == exp_max_field() && man_field(c) != 0;
    return (c & magnitude_mask()) == magnitude_mask();
  }

  // The value of code c by the format definition (NaN for NaN codes).
  double decode(uint32_t c) const {
    const double sign = (c & sign_bit()) ? -1.0 : 1.0;
    const int e = exp_field(c);
    const double m = man_field(c);
    if (is_nan(c)) return std::numeric_limits<double>::quiet_NaN();
    if (ieee_specials && e == exp_max_field()) return sign * kInf;
    if (e == 0) return sign * std::ldexp(m, 1 - bias - man_bits);  // subnormal (or zero)
    return sign * std::ldexp(1.0 + m / std::ldexp(1.0, man_bits), e - bias);
  }

  // The largest finite positive code.
  uint32_t max_code() const {
    if (ieee_specials) return (static_cast<uint32_t>(exp_max_field()) << man_bits) - 1;
    return magnitude_mask() - 1;
  }
};

constexpr Format kBF16{"bf16", 8, 7, 127, true, false};
constexpr Format kFP16{"fp16", 5, 10, 15, true, false};
constexpr Format kE4M3{"e4m3", 4, 3, 7, false, true};
constexpr Format kE5M2{"e5m2", 5, 2, 15, true, true};

// The reference encoder: every non-negative finite value of a format, in code order.
class Reference {
 public:
  explicit Reference(const Format& f) : f_(f) {
    for (uint32_t c = 0; c <= f.max_code(); ++c) values_.push_back(f.decode(c));
  }
  const std::vector<double>& values() const { return values_; }

  // Round-to-nearest-even of x (not NaN) into the format.
  uint32_t encode(double x) const {
    const uint32_t sign = std::signbit(x) ? f_.sign_bit() : 0;
    const double a = std::fabs(x);
    const double max = values_.back();
    if (a >= max) {
      if (f_.saturate) return sign | f_.max_code();
      // The next value after max would be 2^(emax+1) with an even (zero) mantissa; the
      // midpoint and above round to it, that is, to inf.
      const double next = std::ldexp(1.0, f_.exp_max_field() - 1 - f_.bias + 1);
      if (a >= (max + next) / 2) return sign | (f_.max_code() + 1);  // inf code
      return sign | f_.max_code();
    }
    const auto hi_it = std::upper_bound(values_.begin(), values_.end(), a);
    const auto hi = static_cast<uint32_t>(hi_it - values_.begin());
    const uint32_t lo = hi - 1;
    const double dl = a - values_[lo];  // exact: a and the neighbours are close floats
    const double dh = values_[hi] - a;
    if (dl < dh) return sign | lo;
    if (dh < dl) return sign | hi;
    return sign | ((lo & 1) == 0 ? lo : hi);
  }

 private:
  Format f_;
  std::vector<double> values_;
};

const Reference& ref_bf16() {
  static const Reference r(kBF16);
  return r;
}
const Reference& ref_fp16() {
  static const Reference r(kFP16);
  return r;
}
const Reference& ref_e4m3() {
  static const Reference r(kE4M3);
  return r;
}
const Reference& ref_e5m2() {
  static const Reference r(kE5M2);
  return r;
}

// Checks that decode(code) matches the definition for every code of the format.
template <typename Decode>
void expect_decodes_all(const Format& f, Decode decode) {
  const uint32_t n = 1u << f.bits();
  int failures = 0;
  for (uint32_t c = 0; c < n && failures < 10; ++c) {
    const double want = f.decode(c);
    const float got = decode(c);
    if (std::isnan(want)) {
      if (!std::isnan(got)) {
        ADD_FAILURE() << f.name << " code 0x" << std::hex << c << " should be NaN, got " << got;
        ++failures;
      }
      continue;
    }
    if (static_cast<double>(got) != want || std::signbit(got) != std::signbit(want)) {
      ADD_FAILURE() << f.name << " code 0x" << std::hex << c << std::dec << ": got " << got
                    << ", want " << want;
      ++failures;
    }
  }
}

// Checks the encoder on x against the reference.
template <typename Encode>
::testing::AssertionResult encodes_like_reference(const Format& f, const Reference& r,
                                                  Encode encode, float x) {
  const uint32_t want = r.encode(x);
  const uint32_t got = encode(x);
  if (got == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << f.name << ": encode(" << std::hexfloat << x << std::defaultfloat << " = " << x
         << ") gave 0x" << std::hex << got << " (" << f.decode(got) << "), want 0x" << want << " ("
         << f.decode(want) << ")";
}

// Encodes every finite code's value, the midpoint between every pair of adjacent finite values
// and the floats just either side of the midpoint, with both signs, against the reference.
template <typename Encode>
void expect_round_trip_and_midpoints(const Format& f, const Reference& r, Encode encode) {
  const auto& v = r.values();
  int failures = 0;
  auto check = [&](float x) {
    if (failures >= 10) return;
    auto result = encodes_like_reference(f, r, encode, x);
    if (!result) {
      ADD_FAILURE() << result.message();
      ++failures;
    }
  };
  for (uint32_t c = 0; c < v.size(); ++c) {
    // The round trip itself, independent of the reference encoder.
    const auto x = static_cast<float>(v[c]);
    ASSERT_EQ(static_cast<double>(x), v[c]) << "every narrow value is a float";
    EXPECT_EQ(encode(x), c) << f.name << " round trip of code " << c;
    EXPECT_EQ(encode(-x), c | f.sign_bit()) << f.name << " round trip of code -" << c;
    if (c + 1 == v.size()) break;
    ASSERT_LT(v[c], v[c + 1]) << "codes are ordered by value";
    const double mid_d = (v[c] + v[c + 1]) / 2;
    const auto mid = static_cast<float>(mid_d);
    ASSERT_EQ(static_cast<double>(mid), mid_d) << "midpoints are floats";
    // Ties go to the even code, independent of the reference encoder.
    const uint32_t even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(encode(mid), even) << f.name << " midpoint above code " << c;
    EXPECT_EQ(encode(-mid), even | f.sign_bit()) << f.name << " midpoint below code -" << c;
    EXPECT_EQ(encode(std::nextafter(mid, 0.0f)), c) << f.name << " just below a midpoint";
    EXPECT_EQ(encode(std::nextafter(mid, kInfF)), c + 1) << f.name << " just above a midpoint";
    for (float x2 : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      check(x2);
      check(-x2);
    }
    if (::testing::Test::HasFatalFailure() || failures >= 10) return;
  }
}

// Random float bit patterns (all exponents) against the reference.
template <typename Encode>
void expect_random_floats(const Format& f, const Reference& r, Encode encode, int count,
                          uint32_t seed) {
  std::mt19937 gen(seed);
  int failures = 0;
  for (int i = 0; i < count && failures < 10; ++i) {
    const float x = float_of(gen());
    if (std::isnan(x)) continue;
    auto result = encodes_like_reference(f, r, encode, x);
    if (!result) {
      ADD_FAILURE() << result.message();
      ++failures;
    }
  }
  // Values near the format's range, where rounding is most interesting.
  std::uniform_real_distribution<double> log_mag(-30.0, 20.0);
  for (int i = 0; i < count && failures < 10; ++i) {
    const auto x = static_cast<float>(std::exp2(log_mag(gen)) * ((gen() & 1) ? -1 : 1));
    auto result = encodes_like_reference(f, r, encode, x);
    if (!result) {
      ADD_FAILURE() << result.message();
      ++failures;
    }
  }
}

// ---- dtype table --------------------------------------------------------------------------

TEST(DType, SizesNamesAndKinds) {
  struct Row {
    DType dtype;
    const char* name;
    size_t size;
    bool is_float;
  };
  const Row rows[] = {
      {DType::kF32, "f32", 4, true},       {DType::kF64, "f64", 8, true},
      {DType::kBF16, "bf16", 2, true},     {DType::kF16, "f16", 2, true},
      {DType::kF8E4M3, "f8e4m3", 1, true}, {DType::kF8E5M2, "f8e5m2", 1, true},
      {DType::kI32, "i32", 4, false},      {DType::kI64, "i64", 8, false},
      {DType::kU16, "u16", 2, false},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(dtype_size(row.dtype), row.size) << row.name;
    EXPECT_EQ(dtype_name(row.dtype), row.name);
    EXPECT_EQ(dtype_is_float(row.dtype), row.is_float) << row.name;
    EXPECT_EQ(dtype_from_name(row.name), row.dtype) << row.name;
  }
  EXPECT_EQ(dtype_size(DTypeOf<float>::value), sizeof(float));
  EXPECT_EQ(dtype_size(DTypeOf<double>::value), sizeof(double));
  EXPECT_EQ(dtype_size(DTypeOf<int32_t>::value), sizeof(int32_t));
  EXPECT_EQ(dtype_size(DTypeOf<int64_t>::value), sizeof(int64_t));
}

TEST(DType, UnknownNameIsAConfigErrorNamingIt) {
  for (const char* bad : {"fp32", "F32", "", "bfloat16", "f8"}) {
    try {
      dtype_from_name(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << "lists valid names";
    }
  }
}

// ---- the reference itself (so a wrong reference cannot hide a wrong implementation) -------

TEST(DTypeReference, KnownValues) {
  EXPECT_EQ(kBF16.decode(0x3F80), 1.0);
  EXPECT_EQ(kBF16.decode(0x7F7F), 0x1.FEp127);
  EXPECT_EQ(kBF16.decode(0x0001), 0x1p-133);
  EXPECT_EQ(kFP16.decode(0x3C00), 1.0);
  EXPECT_EQ(kFP16.decode(0x7BFF), 65504.0);
  EXPECT_EQ(kFP16.decode(0x0001), 0x1p-24);
  EXPECT_EQ(kFP16.decode(0x0400), 0x1p-14);
  EXPECT_EQ(kFP16.decode(0xC000), -2.0);
  EXPECT_EQ(kE4M3.decode(0x38), 1.0);
  EXPECT_EQ(kE4M3.decode(0x7E), 448.0);
  EXPECT_EQ(kE4M3.decode(0x01), 0x1p-9);
  EXPECT_EQ(kE4M3.decode(0x08), 0x1p-6);
  EXPECT_EQ(kE4M3.decode(0x78), 256.0);  // e4m3 FN uses exponent 15 for finite values
  EXPECT_TRUE(std::isnan(kE4M3.decode(0x7F)));
  EXPECT_TRUE(std::isnan(kE4M3.decode(0xFF)));
  EXPECT_EQ(kE5M2.decode(0x3C), 1.0);
  EXPECT_EQ(kE5M2.decode(0x7B), 57344.0);
  EXPECT_EQ(kE5M2.decode(0x01), 0x1p-16);
  EXPECT_EQ(kE5M2.decode(0x7C), kInf);
  EXPECT_EQ(kE5M2.decode(0xFC), -kInf);
  EXPECT_TRUE(std::isnan(kE5M2.decode(0x7D)));
  EXPECT_EQ(ref_e4m3().values().size(), 127u);  // 0x00..0x7E
  EXPECT_EQ(ref_e5m2().values().size(), 124u);  // 0x00..0x7B
  EXPECT_EQ(ref_e4m3().encode(0.0), 0x00u);
  EXPECT_EQ(ref_e4m3().encode(-0.0), 0x80u);
  EXPECT_EQ(ref_fp16().encode(65520.0), 0x7C00u);
  EXPECT_EQ(ref_fp16().encode(65519.99), 0x7BFFu);
}

TEST(DTypeReference, FloatSixteenAgreesWithTheCompiler) {
  // _Float16 is IEEE binary16 with correctly rounded conversions: a third, independent opinion.
  for (uint32_t c = 0; c < 65536; ++c) {
    const double want = kFP16.decode(c);
    const auto h = static_cast<_Float16>(static_cast<float>(want));
    uint16_t hb;
    std::memcpy(&hb, &h, sizeof(hb));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(h)));
    } else {
      ASSERT_EQ(hb, c);
      ASSERT_EQ(static_cast<double>(static_cast<float>(h)), want);
    }
  }
}

// ---- bf16 ----------------------------------------------------------------------------------

TEST(BF16, DecodesEveryCode) {
  expect_decodes_all(kBF16, [](uint32_t c) { return bf16_to_float(static_cast<uint16_t>(c)); });
}

TEST(BF16, RoundTripAndMidpointsTiesToEven) {
  expect_round_trip_and_midpoints(kBF16, ref_bf16(),
                                  [](float x) -> uint32_t { return float_to_bf16(x); });
}

TEST(BF16, RandomFloatsMatchTheReference) {
  expect_random_floats(
      kBF16, ref_bf16(), [](float x) -> uint32_t { return float_to_bf16(x); }, 400000, 11);
}

TEST(BF16, OverflowInfinityAndNaN) {
  EXPECT_EQ(float_to_bf16(float_of(0x7F7F7FFF)), 0x7F7F);  // just below the midpoint to 2^128
  EXPECT_EQ(float_to_bf16(float_of(0x7F7F8000)), 0x7F80);  // the midpoint: ties to inf (even)
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::max()), 0xFF80);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  // NaN stays NaN, whatever its payload (a payload only in the dropped bits must not become
  // inf), and keeps its sign.
  for (uint32_t nan :
       {0x7FC00000u, 0x7F800001u, 0x7F80FFFFu, 0x7FFFFFFFu, 0xFF800001u, 0xFFC00000u}) {
    const uint16_t b = float_to_bf16(float_of(nan));
    EXPECT_TRUE(std::isnan(bf16_to_float(b))) << std::hex << nan << " -> " << b;
    EXPECT_EQ(b & 0x8000, (nan >> 16) & 0x8000) << std::hex << nan;
  }
  // Subnormal floats round into bf16 subnormals and zero.
  EXPECT_EQ(float_to_bf16(float_of(0x00000001)), 0x0000);
  EXPECT_EQ(float_to_bf16(float_of(0x00008000)), 0x0000);  // tie: to even zero
  EXPECT_EQ(float_to_bf16(float_of(0x00008001)), 0x0001);
  EXPECT_EQ(float_to_bf16(float_of(0x00018000)), 0x0002);  // tie: to even 2
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
}

// ---- fp16 ----------------------------------------------------------------------------------

TEST(FP16, DecodesEveryCode) {
  expect_decodes_all(kFP16, [](uint32_t c) { return fp16_to_float(static_cast<uint16_t>(c)); });
}

TEST(FP16, RoundTripAndMidpointsTiesToEven) {
  expect_round_trip_and_midpoints(kFP16, ref_fp16(),
                                  [](float x) -> uint32_t { return float_to_fp16(x); });
}

TEST(FP16, RandomFloatsMatchTheReferenceAndTheCompiler) {
  expect_random_floats(
      kFP16, ref_fp16(), [](float x) -> uint32_t { return float_to_fp16(x); }, 400000, 12);
  std::mt19937 gen(13);
  int failures = 0;
  for (int i = 0; i < 400000 && failures < 10; ++i) {
    const float x = float_of(gen());
    if (std::isnan(x)) continue;
    const auto h = static_cast<_Float16>(x);
    uint16_t want;
    std::memcpy(&want, &h, sizeof(want));
    if (float_to_fp16(x) != want) {
      ADD_FAILURE() << std::hexfloat << x << ": got 0x" << std::hex << float_to_fp16(x)
                    << ", _Float16 gives 0x" << want;
      ++failures;
    }
  }
}

TEST(FP16, OverflowSubnormalsInfinityAndNaN) {
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7C00);  // the midpoint to 2^16 ties to inf
  EXPECT_EQ(float_to_fp16(-65520.0f), 0xFC00);
  EXPECT_EQ(float_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(float_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(fp16_to_float(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(fp16_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  // Subnormals: the smallest is 2^-24; half of it ties to zero, a little more rounds up.
  EXPECT_EQ(float_to_fp16(0x1p-24f), 0x0001);
  EXPECT_EQ(float_to_fp16(0x1p-25f), 0x0000);
  EXPECT_EQ(float_to_fp16(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(float_to_fp16(0x3p-25f), 0x0002);  // 1.5 * 2^-24: tie to even 2
  EXPECT_EQ(float_to_fp16(-0x1p-26f), 0x8000);
  EXPECT_EQ(float_to_fp16(0x1p-14f), 0x0400);                        // the smallest normal
  EXPECT_EQ(float_to_fp16(std::nextafter(0x1p-14f, 0.0f)), 0x0400);  // rounds up into normals
  EXPECT_EQ(float_to_fp16(1e-30f), 0x0000);
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7F801FFFu, 0xFF800001u, 0xFFC00000u}) {
    const uint16_t h = float_to_fp16(float_of(nan));
    EXPECT_TRUE(std::isnan(fp16_to_float(h))) << std::hex << nan << " -> " << h;
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000) << std::hex << nan;
  }
}

// ---- fp8 -----------------------------------------------------------------------------------

TEST(FP8E4M3, DecodesEveryCode) {
  expect_decodes_all(kE4M3, [](uint32_t c) { return fp8_e4m3_to_float(static_cast<uint8_t>(c)); });
  EXPECT_EQ(fp8_e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0xFE), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x01), 0x1p-9f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0xFF)));
  for (int c = 0; c < 256; ++c)  // no infinities in e4m3 FN
    EXPECT_FALSE(std::isinf(fp8_e4m3_to_float(static_cast<uint8_t>(c)))) << c;
}

TEST(FP8E4M3, RoundTripAndMidpointsTiesToEven) {
  expect_round_trip_and_midpoints(kE4M3, ref_e4m3(),
                                  [](float x) -> uint32_t { return float_to_fp8_e4m3(x); });
}

TEST(FP8E4M3, RandomFloatsMatchTheReference) {
  expect_random_floats(
      kE4M3, ref_e4m3(), [](float x) -> uint32_t { return float_to_fp8_e4m3(x); }, 200000, 14);
}

TEST(FP8E4M3, SaturatesAndKeepsNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {448.0f, 449.0f, 464.0f, 479.0f, 480.0f, 1000.0f, 1e30f, inf}) {
    EXPECT_EQ(float_to_fp8_e4m3(x), 0x7E) << x;
    EXPECT_EQ(float_to_fp8_e4m3(-x), 0xFE) << -x;
  }
  EXPECT_EQ(float_to_fp8_e4m3(std::nextafter(448.0f, 0.0f)), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(420.0f), 0x7D);  // below the 416/448 midpoint of 432
  EXPECT_EQ(float_to_fp8_e4m3(432.0f), 0x7E);  // tie between 0x7D (odd) and 0x7E (even)
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFFC00000u}) {
    const uint8_t c = float_to_fp8_e4m3(float_of(nan));
    EXPECT_EQ(c & 0x7F, 0x7F) << std::hex << nan;
    EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(c)));
  }
  EXPECT_EQ(float_to_fp8_e4m3(0x1p-10f), 0x00);  // half the smallest subnormal: tie to zero
  EXPECT_EQ(float_to_fp8_e4m3(std::nextafter(0x1p-10f, 1.0f)), 0x01);
  EXPECT_EQ(float_to_fp8_e4m3(-0x1p-12f), 0x80);
}

TEST(FP8E5M2, DecodesEveryCode) {
  expect_decodes_all(kE5M2, [](uint32_t c) { return fp8_e5m2_to_float(static_cast<uint8_t>(c)); });
  EXPECT_EQ(fp8_e5m2_to_float(0x7B), 57344.0f);
  EXPECT_EQ(fp8_e5m2_to_float(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_EQ(fp8_e5m2_to_float(0xFC), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(fp8_e5m2_to_float(0x01), 0x1p-16f);
  for (int c : {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF})
    EXPECT_TRUE(std::isnan(fp8_e5m2_to_float(static_cast<uint8_t>(c)))) << c;
}

TEST(FP8E5M2, RoundTripAndMidpointsTiesToEven) {
  expect_round_trip_and_midpoints(kE5M2, ref_e5m2(),
                                  [](float x) -> uint32_t { return float_to_fp8_e5m2(x); });
}

TEST(FP8E5M2, RandomFloatsMatchTheReference) {
  expect_random_floats(
      kE5M2, ref_e5m2(), [](float x) -> uint32_t { return float_to_fp8_e5m2(x); }, 200000, 15);
}

TEST(FP8E5M2, SaturatesIncludingInfinityAndKeepsNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {57344.0f, 57345.0f, 61440.0f, 65536.0f, 1e30f, inf}) {
    EXPECT_EQ(float_to_fp8_e5m2(x), 0x7B) << x;
    EXPECT_EQ(float_to_fp8_e5m2(-x), 0xFB) << -x;
  }
  EXPECT_EQ(float_to_fp8_e5m2(45056.0f), 0x7A);  // 0x7A exactly
  EXPECT_EQ(float_to_fp8_e5m2(53248.0f), 0x7A);  // tie between 0x7A (even) and 0x7B
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFFC00000u}) {
    const uint8_t c = float_to_fp8_e5m2(float_of(nan));
    EXPECT_TRUE(std::isnan(fp8_e5m2_to_float(c))) << std::hex << nan << " -> " << int{c};
  }
  EXPECT_EQ(float_to_fp8_e5m2(0x1p-17f), 0x00);  // half the smallest subnormal: tie to zero
  EXPECT_EQ(float_to_fp8_e5m2(0x3p-17f), 0x02);  // 1.5 * 2^-16: tie to even 2
  EXPECT_EQ(float_to_fp8_e5m2(std::nextafter(0x1p-17f, 1.0f)), 0x01);
}

// ---- convert -------------------------------------------------------------------------------

constexpr DType kAll[] = {DType::kF32,    DType::kF64, DType::kBF16, DType::kF16, DType::kF8E4M3,
                          DType::kF8E5M2, DType::kI32, DType::kI64,  DType::kU16};

// Writes v (exactly representable in dtype) into element i of a buffer of dtype.
void store(std::vector<unsigned char>& buf, DType dtype, size_t i, double v) {
  unsigned char* p = buf.data() + i * dtype_size(dtype);
  auto put = [&](auto x) { std::memcpy(p, &x, sizeof(x)); };
  switch (dtype) {
    case DType::kF32:
      put(static_cast<float>(v));
      break;
    case DType::kF64:
      put(v);
      break;
    case DType::kBF16:
      put(static_cast<uint16_t>(ref_bf16().encode(v)));
      break;
    case DType::kF16:
      put(static_cast<uint16_t>(ref_fp16().encode(v)));
      break;
    case DType::kF8E4M3:
      put(static_cast<uint8_t>(ref_e4m3().encode(v)));
      break;
    case DType::kF8E5M2:
      put(static_cast<uint8_t>(ref_e5m2().encode(v)));
      break;
    case DType::kI32:
      put(static_cast<int32_t>(v));
      break;
    case DType::kI64:
      put(static_cast<int64_t>(v));
      break;
    case DType::kU16:
      put(static_cast<uint16_t>(v));
      break;
  }
}

double load(const std::vector<unsigned char>& buf, DType dtype, size_t i) {
  const unsigned char* p = buf.data() + i * dtype_size(dtype);
  auto get = [&](auto x) {
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (dtype) {
    case DType::kF32:
      return get(0.0f);
    case DType::kF64:
      return get(0.0);
    case DType::kBF16:
      return kBF16.decode(get(uint16_t{}));
    case DType::kF16:
      return kFP16.decode(get(uint16_t{}));
    case DType::kF8E4M3:
      return kE4M3.decode(get(uint8_t{}));
    case DType::kF8E5M2:
      return kE5M2.decode(get(uint8_t{}));
    case DType::kI32:
      return get(int32_t{});
    case DType::kI64:
      return static_cast<double>(get(int64_t{}));
    case DType::kU16:
      return get(uint16_t{});
  }
  return 0.0;
}

TEST(Convert, EveryPairOnValuesExactInBoth) {
  // Exact in every dtype (signed ones only where the dtype is signed).
  const std::vector<double> signed_values = {0, 1, -2, 3, -4, 6, -8, 12, 16, -96, 224, 0.5, -0.25};
  for (DType from : kAll) {
    for (DType to : kAll) {
      std::vector<double> values;
      for (double v : signed_values) {
        const bool integral = v == std::floor(v);
        if (!dtype_is_float(from) || !dtype_is_float(to))
          if (!integral) continue;
        if ((from == DType::kU16 || to == DType::kU16) && v < 0) continue;
        values.push_back(v);
      }
      std::vector<unsigned char> src(values.size() * dtype_size(from));
      std::vector<unsigned char> dst(values.size() * dtype_size(to), 0xAB);
      for (size_t i = 0; i < values.size(); ++i) store(src, from, i, values[i]);
      for (size_t i = 0; i < values.size(); ++i)
        ASSERT_EQ(load(src, from, i), values[i]) << "test setup: " << dtype_name(from);
      convert(src.data(), from, dst.data(), to, values.size());
      for (size_t i = 0; i < values.size(); ++i)
        EXPECT_EQ(load(dst, to, i), values[i])
            << dtype_name(from) << " -> " << dtype_name(to) << " element " << i;
    }
  }
}

TEST(Convert, RoundsAndSaturatesLikeTheScalarConversions) {
  std::mt19937 gen(21);
  std::normal_distribution<float> dist(0.0f, 300.0f);
  // More than the threshold where convert() goes parallel.
  const size_t n = 100000;
  std::vector<float> src(n);
  for (float& x : src) x = dist(gen);
  src[0] = 1000.0f;
  src[1] = -70000.0f;
  src[2] = std::numeric_limits<float>::infinity();
  src[3] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint16_t> b(n), h(n);
  std::vector<uint8_t> e4(n), e5(n);
  convert(src.data(), DType::kF32, b.data(), DType::kBF16, n);
  convert(src.data(), DType::kF32, h.data(), DType::kF16, n);
  convert(src.data(), DType::kF32, e4.data(), DType::kF8E4M3, n);
  convert(src.data(), DType::kF32, e5.data(), DType::kF8E5M2, n);
  for (size_t i = 4; i < n; ++i) {
    ASSERT_EQ(b[i], ref_bf16().encode(src[i])) << src[i];
    ASSERT_EQ(h[i], ref_fp16().encode(src[i])) << src[i];
    ASSERT_EQ(e4[i], ref_e4m3().encode(src[i])) << src[i];
    ASSERT_EQ(e5[i], ref_e5m2().encode(src[i])) << src[i];
  }
  EXPECT_EQ(e4[0], 0x7E);
  EXPECT_EQ(e5[1], 0xFB);
  EXPECT_EQ(h[1], 0xFC00);
  EXPECT_EQ(e4[2], 0x7E);
  EXPECT_EQ(e5[2], 0x7B);
  EXPECT_EQ(h[2], 0x7C00);
  EXPECT_TRUE(std::isnan(bf16_to_float(b[3])));
  EXPECT_TRUE(std::isnan(fp16_to_float(h[3])));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(e4[3])));
  EXPECT_TRUE(std::isnan(fp8_e5m2_to_float(e5[3])));

  // Narrow to wide is exact; bf16 beyond the fp16 range overflows to inf.
  const std::vector<uint16_t> big = {0x4780 /* 65536 */, 0xC780, 0x3F80};
  std::vector<uint16_t> as_h(3);
  convert(big.data(), DType::kBF16, as_h.data(), DType::kF16, 3);
  EXPECT_EQ(as_h[0], 0x7C00);
  EXPECT_EQ(as_h[1], 0xFC00);
  EXPECT_EQ(as_h[2], 0x3C00);
  // Integers: by value, float rounding where the float cannot hold them.
  const std::vector<int64_t> ints = {16777217, int64_t{1} << 53, -123456789};
  std::vector<float> as_f(3);
  std::vector<double> as_d(3);
  convert(ints.data(), DType::kI64, as_f.data(), DType::kF32, 3);
  convert(ints.data(), DType::kI64, as_d.data(), DType::kF64, 3);
  EXPECT_EQ(as_f[0], 16777216.0f);
  EXPECT_EQ(as_d[0], 16777217.0);
  EXPECT_EQ(as_d[1], 9007199254740992.0);
  EXPECT_EQ(as_d[2], -123456789.0);
  const std::vector<int64_t> big_ints = {(int64_t{1} << 40) + 1};
  std::vector<int64_t> back(1);
  convert(big_ints.data(), DType::kI64, back.data(), DType::kI64, 1);  // same dtype: a copy
  EXPECT_EQ(back[0], big_ints[0]);
}

TEST(Convert, DoubleToNarrowRoundsOnceToNearestEven) {
  // A double just above a bf16/fp16/fp8 midpoint must round up. Rounding through float first
  // lands exactly on the midpoint, which then ties to the even value below: a double rounding.
  struct Case {
    DType to;
    double x;
    double want;
  };
  const Case cases[] = {
      {DType::kBF16, 1.0 + 0x1p-8 + 0x1p-40, 1.0 + 0x1p-7},
      {DType::kBF16, -(1.0 + 0x1p-8 + 0x1p-40), -(1.0 + 0x1p-7)},
      {DType::kF16, 1.0 + 0x1p-11 + 0x1p-40, 1.0 + 0x1p-10},
      {DType::kF8E4M3, 1.0 + 0x1p-4 + 0x1p-40, 1.0 + 0x1p-3},
      {DType::kF8E5M2, 1.0 + 0x1p-3 + 0x1p-40, 1.0 + 0x1p-2},
      // And just below a midpoint, rounding through float lands on it and ties up to even.
      {DType::kBF16, 1.0 + 0x3p-8 - 0x1p-40, 1.0 + 0x1p-7},
  };
  for (const Case& c : cases) {
    std::vector<unsigned char> dst(dtype_size(c.to));
    convert(&c.x, DType::kF64, dst.data(), c.to, 1);
    EXPECT_EQ(load(dst, c.to, 0), c.want)
        << "f64 " << std::hexfloat << c.x << " -> " << dtype_name(c.to);
  }
}

}  // namespace
}  // namespace memento
