// Gradient all-reduce of the tiny model's flat gradient buffer through GradientReducer (buckets
// on the MPI communicator) against one bare MPI_Allreduce of the same bytes. Run under mpirun:
//   mpirun -np 2 build/bin/bench_allreduce [configs/tiny.yaml] [repeats]
// A benchmark, not a test: it prints numbers.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/model/llama.h"
#include "core/rng.h"
#include "launch/config.h"
#include "parallel/data_parallel.h"
#include "parallel/mpi_communicator.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double time_median(int repeats, F&& f) {
  std::vector<double> seconds;
  f();  // warm-up
  for (int i = 0; i < repeats; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = Clock::now();
    f();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  // The slowest rank decides.
  double local = median(seconds), global = 0;
  MPI_Allreduce(&local, &global, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return global;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace memento;
  parallel::MpiSession session(&argc, &argv);
  const std::string config_path = argc > 1 ? argv[1] : "configs/tiny.yaml";
  const int repeats = argc > 2 ? std::stoi(argv[2]) : 20;
  const Config config = load_config(config_path);

  LlamaModel model(config.model);
  model.params().pad_to_multiple_of(session.size());
  model.params().allocate(DType::kF32);
  const TensorView grads = model.params().flat_grads();
  for (int64_t i = 0; i < grads.numel(); ++i)
    grads.data<float>()[i] = normal01(session.rank(), 1, static_cast<uint64_t>(i));

  auto world = parallel::make_world_communicator();
  const auto bucket_elements =
      static_cast<int64_t>(config.parallel.bucket_mb * 1024 * 1024 / sizeof(float));
  parallel::GradientReducer reducer(grads, *world, bucket_elements);
  const double ours = time_median(repeats, [&] { reducer.finish(); });
  const double bare = time_median(repeats, [&] {
    MPI_Allreduce(MPI_IN_PLACE, grads.raw(), static_cast<int>(grads.numel()), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  });
  if (session.rank() == 0) {
    const double mib = static_cast<double>(grads.bytes()) / (1024.0 * 1024.0);
    std::printf(
        "gradient all-reduce, %d ranks, %.2f MiB (%lld fp32), %zu bucket(s) of up to %.1f MiB, "
        "median of %d\n",
        session.size(), mib, static_cast<long long>(grads.numel()), reducer.buckets().size(),
        config.parallel.bucket_mb, repeats);
    std::printf("  GradientReducer (MPI, buckets)  %8.3f ms  %7.2f GiB/s\n", ours * 1e3,
                mib / 1024.0 / ours);
    std::printf("  bare MPI_Allreduce              %8.3f ms  %7.2f GiB/s\n", bare * 1e3,
                mib / 1024.0 / bare);
    std::printf("  ratio ours / bare               %8.3f\n", ours / bare);
  }
  return 0;
}
