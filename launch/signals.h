// Signals, turned into requests that the training loop serves at a step boundary:
//   SIGTERM (Slurm preemption, scancel --signal=TERM), SIGINT (Ctrl-C), SIGUSR2 (what
//   scripts/launch.sh forwards through mpirun, which kills the job on SIGTERM itself): save a
//   checkpoint, exit with kExitPreempted;
//   SIGUSR1: save a checkpoint and continue.
#pragma once

namespace memento {

// "Temporary failure, retry" (sysexits EX_TEMPFAIL): the job saved a checkpoint and stopped
// because it was asked to; requeue it and it resumes. scripts/slurm/train.sbatch relies on it.
inline constexpr int kExitPreempted = 75;

void install_signal_handlers();
bool stop_requested();  // SIGTERM, SIGINT or SIGUSR2 seen
// The first signal that asked for the stop (SIGTERM, SIGINT or SIGUSR2), 0 while none has.
int stop_signal();
bool take_save_request();  // SIGUSR1 seen since the last call

// "SIGTERM", "SIGINT", "SIGUSR2", ...: the name of a signal, for logs; "no signal" for 0 and
// "an unknown signal" for a number it does not know. Never null; the string is static.
const char* signal_name(int signum);

}  // namespace memento
