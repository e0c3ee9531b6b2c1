// Argument checks shared by the communicator backends, so that every backend rejects the same
// calls with the same ShapeError messages ("all_gather on 'dp' (4 ranks): ...").
#pragma once

#include <string>

#include "core/parallel/communicator.h"
#include "core/tensor.h"

namespace memento::parallel::detail {

// A buffer collectives can take: f32, f64, i32 or i64, on the CPU or kMeta, at most INT_MAX
// elements. Returns true for kMeta, where the collective does nothing.
bool check_buffer(const Communicator& comm, const char* op, const TensorView& buffer);

// input (size() * n) -> output (n); output may be chunk rank() of input. Returns true for kMeta.
bool check_reduce_scatter(const Communicator& comm, const TensorView& input,
                          const TensorView& output);
// input (n) -> output (size() * n); input may be chunk rank() of output. Returns true for kMeta.
bool check_all_gather(const Communicator& comm, const TensorView& input, const TensorView& output);

// Throws ShapeError unless 0 <= peer < comm.size(); `what` is "root" or "peer".
void check_peer(const Communicator& comm, const char* op, const char* what, int peer);

// "all_gather on 'dp' (4 ranks)": how every message names the call.
std::string where(const Communicator& comm, const char* op);
// True when the bytes of a and b overlap.
bool overlaps(const TensorView& a, const TensorView& b);
// Throws ShapeError unless input and output have one dtype and one device.
void check_same_dtype_and_device(const Communicator& comm, const char* op, const TensorView& input,
                                 const TensorView& output);
// True when `part` starts at element chunk·part.numel() of `whole`, of the same dtype.
bool is_chunk_of(const TensorView& part, const TensorView& whole, int chunk);

}  // namespace memento::parallel::detail
