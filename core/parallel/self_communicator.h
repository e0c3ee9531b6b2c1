// The communicator of a job with one rank: every collective is the identity. Plain `trainer`
// runs without mpirun use it, and it needs no MPI.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/parallel/communicator.h"

namespace memento::parallel {

class SelfCommunicator final : public Communicator {
 public:
  explicit SelfCommunicator(std::string name = "world") : name_(std::move(name)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return name_; }

  void all_reduce(const TensorView& buffer, ReduceOp op = ReduceOp::kSum) override;
  std::unique_ptr<Work> all_reduce_async(const TensorView& buffer,
                                         ReduceOp op = ReduceOp::kSum) override;
  void reduce_scatter(const TensorView& input, const TensorView& output,
                      ReduceOp op = ReduceOp::kSum) override;
  void all_gather(const TensorView& input, const TensorView& output) override;
  void broadcast(const TensorView& buffer, int root) override;
  // A message to oneself: send() keeps a copy that the next recv() with the same tag takes.
  void send(const TensorView& buffer, int peer, int tag = 0) override;
  void recv(const TensorView& buffer, int peer, int tag = 0) override;
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  struct Message {
    int tag;
    std::vector<char> bytes;
  };
  std::string name_;
  std::deque<Message> mailbox_;
};

}  // namespace memento::parallel
