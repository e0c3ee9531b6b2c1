#include "core/parallel/self_communicator.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/parallel/collective_checks.h"

namespace memento::parallel {
namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

void SelfCommunicator::all_reduce(const TensorView& buffer, ReduceOp /*op*/) {
  detail::check_buffer(*this, "all_reduce", buffer);
}

std::unique_ptr<Work> SelfCommunicator::all_reduce_async(const TensorView& buffer, ReduceOp op) {
  all_reduce(buffer, op);
  return std::make_unique<DoneWork>();
}

void SelfCommunicator::reduce_scatter(const TensorView& input, const TensorView& output,
                                      ReduceOp /*op*/) {
  if (detail::check_reduce_scatter(*this, input, output)) return;
  if (output.raw() != input.raw()) std::memcpy(output.raw(), input.raw(), output.bytes());
}

void SelfCommunicator::all_gather(const TensorView& input, const TensorView& output) {
  if (detail::check_all_gather(*this, input, output)) return;
  if (output.raw() != input.raw()) std::memcpy(output.raw(), input.raw(), output.bytes());
}

void SelfCommunicator::broadcast(const TensorView& buffer, int root) {
  detail::check_buffer(*this, "broadcast", buffer);
  detail::check_peer(*this, "broadcast", "root", root);
}

void SelfCommunicator::send(const TensorView& buffer, int peer, int tag) {
  if (detail::check_buffer(*this, "send", buffer)) return;
  detail::check_peer(*this, "send", "peer", peer);
  const auto* bytes = static_cast<const char*>(buffer.raw());
  mailbox_.push_back({tag, std::vector<char>(bytes, bytes + buffer.bytes())});
}

void SelfCommunicator::recv(const TensorView& buffer, int peer, int tag) {
  if (detail::check_buffer(*this, "recv", buffer)) return;
  detail::check_peer(*this, "recv", "peer", peer);
  const auto it = std::find_if(mailbox_.begin(), mailbox_.end(),
                               [tag](const Message& m) { return m.tag == tag; });
  // With one rank, a recv that nothing was sent for would wait forever.
  MEMENTO_CHECK(it != mailbox_.end(), "recv on '", name_, "' with tag ", tag,
                " but no message was sent to this rank");
  MEMENTO_EXPECT(it->bytes.size() == buffer.bytes(), ShapeError, "recv on '", name_,
                 "' (1 rank): the message has ", it->bytes.size(), " bytes but the buffer ",
                 buffer.shape().str(), " of ", dtype_name(buffer.dtype()), " has ", buffer.bytes());
  std::memcpy(buffer.raw(), it->bytes.data(), buffer.bytes());
  mailbox_.erase(it);
}

std::unique_ptr<Communicator> SelfCommunicator::split(int /*color*/, int /*key*/,
                                                      const std::string& name) {
  return std::make_unique<SelfCommunicator>(name);
}

}  // namespace memento::parallel
