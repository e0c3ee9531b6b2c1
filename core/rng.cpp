#include "core/rng.h"

#include <algorithm>
#include <cmath>

namespace memento {
namespace {
constexpr uint32_t kPhiloxM0 = 0xD2511F53;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85;
constexpr int kPhiloxRounds = 10;
constexpr float kTwoPi = 6.28318530717958647692f;
constexpr float kInv2Pow24 = 1.0f / 16777216.0f;

// (x + 0.5) / 2^24 rounds to 1.0f for the largest x; clamp to the largest float below 1.
float to_open01(uint32_t x) {
  return std::min((static_cast<float>(x >> 8) + 0.5f) * kInv2Pow24, 0x1.fffffep-1f);
}
}  // namespace

std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t counter) {
  std::array<uint32_t, 4> c = {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                               static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0, static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1, static_cast<uint32_t>(p0)};
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return c;
}

uint64_t stream_id(std::string_view name) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char ch : name) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001B3ull;
  }
  return h;
}

float uniform01(uint64_t seed, uint64_t stream, uint64_t index) {
  return to_open01(philox4x32(seed, stream, index)[0]);
}

float normal01(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto r = philox4x32(seed, stream, index);
  const float u1 = to_open01(r[0]);
  const float u2 = to_open01(r[1]);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(kTwoPi * u2);
}

}  // namespace memento
