#include "launch/signals.h"

#include <csignal>

namespace memento {
namespace {
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_save = 0;

extern "C" void on_stop(int) { g_stop = 1; }
extern "C" void on_save(int) { g_save = 1; }
}  // namespace

void install_signal_handlers() {
  struct sigaction stop {};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  stop.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &stop, nullptr);
  sigaction(SIGINT, &stop, nullptr);
  struct sigaction save = stop;
  save.sa_handler = on_save;
  sigaction(SIGUSR1, &save, nullptr);
}

bool stop_requested() { return g_stop != 0; }

bool take_save_request() {
  const bool requested = g_save != 0;
  g_save = 0;
  return requested;
}

}  // namespace memento
