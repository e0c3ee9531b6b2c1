// Data parallelism under mpirun: dp = world size gives the same loss curve as one process with
// the same global batch, with and without ZeRO-1, and the reduced gradients and parameters stay
// identical on every rank.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/parallel/self_communicator.h"
#include "launch/e2e_testing.h"
#include "launch/trainer.h"
#include "parallel/mpi_communicator.h"

namespace memento {
namespace {

constexpr int64_t kSteps = 6;

std::unique_ptr<parallel::Communicator> world() { return parallel::make_world_communicator(); }

// The corpus is written by rank 0 and read by all.
std::string corpus_dir(parallel::Communicator& comm) {
  const std::string dir = std::string(MEMENTO_BINARY_DIR) + "/test-scratch/dp_parity";
  if (comm.rank() == 0) {
    std::filesystem::create_directories(dir);
    const std::string text = testing::fortunes_text(120000);
    testing::write_byte_tokens(dir + "/train.bin", text.substr(0, 110000));
    testing::write_byte_tokens(dir + "/val.bin", text.substr(110000));
  }
  comm.barrier();
  return dir;
}

Config parity_config(const std::string& dir, const std::string& out, int64_t dp, bool zero1) {
  Config c = parse_config(
      "model: {vocab_size: 256, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 64,"
      " max_seq_len: 32, layer_pattern: [linear, softmax]}\n"
      "train: {seq_len: 16, micro_batch: 1, global_batch: 8, steps: 6, eval_every: 3,"
      " eval_batches: 4, threads: 1}\n"
      "optim: {lr: 1.0e-2, min_lr: 1.0e-3, warmup_steps: 2}\n"
      "parallel: {bucket_mb: 0.01}\n",  // several buckets even for this small model
      {}, "parity");
  c.data.train = dir + "/train.bin";
  c.data.val = dir + "/val.bin";
  c.run.out_dir = out;
  c.checkpoint.dir = out + "/checkpoints";
  c.parallel.dp = dp;
  c.parallel.zero1 = zero1;
  c.validate();
  return c;
}

class DataParallelParity : public ::testing::TestWithParam<bool> {};

TEST_P(DataParallelParity, LossCurveMatchesOneProcessWithTheSameGlobalBatch) {
  const bool zero1 = GetParam();
  auto comm = world();
  const int rank = comm->rank(), size = comm->size();
  const std::string dir = corpus_dir(*comm);
  const std::string tag = zero1 ? "zero1" : "plain";

  // The reference: one process, dp = 1, computed on every rank in its own directory.
  std::vector<StepMetrics> reference;
  {
    parallel::ProcessGroups single(std::make_unique<parallel::SelfCommunicator>("world"),
                                   parallel::ParallelDims{});
    Trainer t(parity_config(dir, dir + "/ref-" + tag + "-" + std::to_string(rank), 1, false),
              Resume::kNo, single);
    reference = t.run();
  }

  parallel::ProcessGroups groups(world(), parallel::ParallelDims{size, 1, 1, 1});
  Trainer t(parity_config(dir, dir + "/dp-" + tag, size, zero1), Resume::kNo, groups);
  const std::vector<StepMetrics> parallel_run = t.run();
  ASSERT_EQ(parallel_run.size(), reference.size());
  for (size_t i = 0; i < reference.size(); ++i) {
    EXPECT_NEAR(parallel_run[i].loss, reference[i].loss, 1e-5 * reference[i].loss)
        << "step " << i + 1;
    EXPECT_NEAR(parallel_run[i].grad_norm, reference[i].grad_norm, 1e-4 * reference[i].grad_norm)
        << "step " << i + 1;
    ASSERT_EQ(parallel_run[i].val_loss.has_value(), reference[i].val_loss.has_value());
    if (reference[i].val_loss) {
      EXPECT_NEAR(*parallel_run[i].val_loss, *reference[i].val_loss, 1e-5 * *reference[i].val_loss);
    }
  }

  // Every rank holds the same parameters afterwards (all-reduced gradients, gathered shards).
  const TensorView values = t.model().params().flat_values();
  Tensor max = Tensor::empty(values.shape(), values.dtype());
  Tensor min = Tensor::empty(values.shape(), values.dtype());
  copy(values, max);
  copy(values, min);
  comm->all_reduce(max, parallel::ReduceOp::kMax);
  comm->all_reduce(min, parallel::ReduceOp::kMin);
  EXPECT_EQ(std::memcmp(max.data<float>(), min.data<float>(), max.bytes()), 0)
      << "parameters differ between ranks";
  if (zero1) {
    EXPECT_EQ(t.optimizer().exp_avg().numel() * size, t.model().params().padded_numel())
        << "ZeRO-1 keeps 1/dp of the optimizer states on each rank";
  }
}

INSTANTIATE_TEST_SUITE_P(Zero1, DataParallelParity, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return std::string(p.param ? "zero1" : "allreduce");
                         });

}  // namespace
}  // namespace memento
