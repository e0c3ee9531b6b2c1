#include "core/parallel/collective_checks.h"

#include <climits>
#include <string>

#include "core/error.h"

namespace memento::parallel::detail {

std::string where(const Communicator& comm, const char* op) {
  return ::memento::detail::concat(op, " on '", comm.name(), "' (", comm.size(),
                                   comm.size() == 1 ? " rank" : " ranks", ")");
}

bool overlaps(const TensorView& a, const TensorView& b) {
  const auto* a0 = static_cast<const char*>(a.raw());
  const auto* b0 = static_cast<const char*>(b.raw());
  return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

void check_same_dtype_and_device(const Communicator& comm, const char* op, const TensorView& input,
                                 const TensorView& output) {
  MEMENTO_EXPECT(input.dtype() == output.dtype(), ShapeError, where(comm, op), ": input is ",
                 dtype_name(input.dtype()), " but output is ", dtype_name(output.dtype()));
  MEMENTO_EXPECT(input.device() == output.device(), ShapeError, where(comm, op), ": input is on ",
                 device_name(input.device()), " but output is on ", device_name(output.device()));
}

namespace {

bool check_pair(const Communicator& comm, const char* op, const TensorView& input,
                const TensorView& output) {
  const bool meta = check_buffer(comm, op, input);
  check_buffer(comm, op, output);
  check_same_dtype_and_device(comm, op, input, output);
  return meta;
}

}  // namespace

bool check_buffer(const Communicator& comm, const char* op, const TensorView& buffer) {
  const DType d = buffer.dtype();
  MEMENTO_EXPECT(d == DType::kF32 || d == DType::kF64 || d == DType::kI32 || d == DType::kI64,
                 ShapeError, where(comm, op), ": tensor ", buffer.shape().str(), " is ",
                 dtype_name(d), "; collectives take f32, f64, i32 or i64");
  MEMENTO_EXPECT(buffer.device().is_cpu() || buffer.is_meta(), ShapeError, where(comm, op),
                 ": tensor ", buffer.shape().str(), " is on ", device_name(buffer.device()),
                 "; this backend takes CPU tensors");
  MEMENTO_EXPECT(buffer.numel() <= INT_MAX, ShapeError, where(comm, op), ": tensor ",
                 buffer.shape().str(), " has ", buffer.numel(), " elements, more than ", INT_MAX,
                 " that one call can move");
  return buffer.is_meta();
}

bool check_reduce_scatter(const Communicator& comm, const TensorView& input,
                          const TensorView& output) {
  const char* op = "reduce_scatter";
  const bool meta = check_pair(comm, op, input, output);
  MEMENTO_EXPECT(input.numel() == comm.size() * output.numel(), ShapeError, where(comm, op),
                 ": input ", input.shape().str(), " must hold ", comm.size(), " × output ",
                 output.shape().str(), " = ", comm.size() * output.numel(), " elements, not ",
                 input.numel());
  MEMENTO_EXPECT(meta || !overlaps(input, output) || is_chunk_of(output, input, comm.rank()),
                 ShapeError, where(comm, op), ": output overlaps input other than as chunk ",
                 comm.rank(), " of it");
  return meta;
}

bool check_all_gather(const Communicator& comm, const TensorView& input, const TensorView& output) {
  const char* op = "all_gather";
  const bool meta = check_pair(comm, op, input, output);
  MEMENTO_EXPECT(output.numel() == comm.size() * input.numel(), ShapeError, where(comm, op),
                 ": output ", output.shape().str(), " must hold ", comm.size(), " × input ",
                 input.shape().str(), " = ", comm.size() * input.numel(), " elements, not ",
                 output.numel());
  MEMENTO_EXPECT(meta || !overlaps(input, output) || is_chunk_of(input, output, comm.rank()),
                 ShapeError, where(comm, op), ": input overlaps output other than as chunk ",
                 comm.rank(), " of it");
  return meta;
}

void check_peer(const Communicator& comm, const char* op, const char* what, int peer) {
  MEMENTO_EXPECT(peer >= 0 && peer < comm.size(), ShapeError, where(comm, op), ": ", what, " ",
                 peer, " is not a rank of the communicator");
}

bool is_chunk_of(const TensorView& part, const TensorView& whole, int chunk) {
  return part.dtype() == whole.dtype() &&
         part.raw() == static_cast<const char*>(whole.raw()) + chunk * part.bytes();
}

}  // namespace memento::parallel::detail
