#include "checkpoint/state_staging.h"

#include <atomic>

#include "core/error.h"

namespace memento::checkpoint {
namespace {
std::atomic<bool> g_skip_mutation_wait{false};
}  // namespace

StateStaging::StateStaging(bool copy_host) : copy_host_(copy_host) {}

StateStaging::~StateStaging() {
  // Copies in flight read and write memory this object and the sources' owners are freeing.
  if (in_flight_) copied_.synchronize();
}

TensorView StateStaging::stage(const TensorView& source, MemoryResource* host_memory) {
  MEMENTO_CHECK(!source.is_meta(), "staging a kMeta tensor");
  if (source.device().is_cpu() && !copy_host_) return source;
  const Device device = source.device();
  if (!stream_) {
    stream_ = std::make_unique<Stream>(device);
  } else {
    MEMENTO_CHECK(stream_->device() == device, "staging sources on ", device_name(device),
                  " and on ", device_name(stream_->device()));
  }
  // Zeros: a load fills only the entries registered in the mirror, and what lies between them
  // (alignment padding) is copied back to the source as it was staged, zero.
  Tensor host = Tensor::zeros(source.shape(), source.dtype(), Device::cpu(), host_memory);
  const TensorView view = host;
  mirrors_.push_back({source, std::move(host)});
  return view;
}

size_t StateStaging::mirror_bytes() const {
  size_t bytes = 0;
  for (const Mirror& m : mirrors_) bytes += m.host.bytes();
  return bytes;
}

void StateStaging::start_to_host() {
  if (mirrors_.empty()) return;
  // The sources are written by compute: the staging stream starts after the work queued so far.
  Event computed;
  computed.record(compute_stream(stream_->device()));
  stream_->wait(computed);
  for (const Mirror& m : mirrors_) copy_async(m.source, m.host, *stream_);
  copied_.record(*stream_);
  in_flight_ = true;
}

void StateStaging::wait_to_host() {
  if (!in_flight_) return;
  copied_.synchronize();
  in_flight_ = false;
}

void StateStaging::copy_from_host() {
  if (mirrors_.empty()) return;
  wait_to_host();
  for (const Mirror& m : mirrors_) copy_async(m.host, m.source, *stream_);
  copied_.record(*stream_);
  copied_.synchronize();
  // Compute reads the sources next: it waits for the copies (already done on this thread).
}

void StateStaging::before_mutation() {
  if (g_skip_mutation_wait.load()) return;
  wait_to_host();
}

bool StateStaging::skip_mutation_wait_for_testing(bool on) {
  return g_skip_mutation_wait.exchange(on);
}

}  // namespace memento::checkpoint
