// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011). A value depends only on
// (seed, stream, index): parameter initialisation keys the stream by the parameter's name, so
// every parallel layout initialises the same full model (ARCHITECTURE contract 7).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace memento {

// Four 32-bit random words for counter `counter` under key (seed, stream).
std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t counter);

// 64-bit FNV-1a of a name: the stream id of a named parameter.
uint64_t stream_id(std::string_view name);

// Uniform in (0, 1) and standard normal for element `index` of stream `stream`.
float uniform01(uint64_t seed, uint64_t stream, uint64_t index);
float normal01(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace memento
