// Slurm-style signals, turned into requests that the training loop serves at a step boundary:
//   SIGTERM (preemption, scancel --signal=TERM): save a checkpoint, exit with kExitPreempted;
//   SIGUSR1: save a checkpoint and continue.
#pragma once

namespace memento {

// "Temporary failure, retry" (sysexits EX_TEMPFAIL): the job saved a checkpoint and stopped
// because it was asked to; requeue it and it resumes. scripts/slurm/train.sbatch relies on it.
inline constexpr int kExitPreempted = 75;

void install_signal_handlers();
bool stop_requested();  // SIGTERM or SIGINT seen
bool take_save_request();  // SIGUSR1 seen since the last call

}  // namespace memento
