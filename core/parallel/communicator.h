// One communicator interface, two backends (ARCHITECTURE contract 6): MPI for CPU tensors (here)
// and NCCL for GPU tensors (the CUDA issue). All parallel logic is written against this interface
// and is testable on CPU ranks under mpirun. Collectives are called by every rank of the
// communicator in the same order; a failure in the backend is fatal for the whole job.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace memento::parallel {

enum class ReduceOp : uint8_t { kSum, kMax, kMin };

// A collective started without waiting; wait() returns once the result is in place.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;  // true when complete (then wait() returns at once)
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // e.g. "dp" or "world", for logs and errors

  // In place: every rank ends with the reduction over all ranks of `buffer`.
  virtual void all_reduce(const TensorView& buffer, ReduceOp op = ReduceOp::kSum) = 0;
  virtual std::unique_ptr<Work> all_reduce_async(const TensorView& buffer,
                                                 ReduceOp op = ReduceOp::kSum) = 0;
  // input (size() * n elements) -> output (n): rank r receives the reduction of chunk r.
  virtual void reduce_scatter(const TensorView& input, const TensorView& output,
                              ReduceOp op = ReduceOp::kSum) = 0;
  // input (n) -> output (size() * n), chunk r from rank r. input may alias chunk rank() of output.
  virtual void all_gather(const TensorView& input, const TensorView& output) = 0;
  virtual void broadcast(const TensorView& buffer, int root) = 0;
  virtual void send(const TensorView& buffer, int peer, int tag = 0) = 0;
  virtual void recv(const TensorView& buffer, int peer, int tag = 0) = 0;
  virtual void barrier() = 0;

  // A communicator over the ranks of this one that pass the same color, ordered by key (as
  // MPI_Comm_split). Every rank of this communicator must call it.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
};

}  // namespace memento::parallel
