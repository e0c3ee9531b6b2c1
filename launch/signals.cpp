#include "launch/signals.h"

#include <csignal>
#include <initializer_list>

namespace memento {
namespace {
volatile std::sig_atomic_t g_stop_signal = 0;  // the first stop signal, or 0
volatile std::sig_atomic_t g_save = 0;

// The stop signals block each other while one runs (sa_mask), so the first one stays recorded.
extern "C" void on_stop(int signum) {
  if (g_stop_signal == 0) g_stop_signal = signum;
}
extern "C" void on_save(int) { g_save = 1; }
}  // namespace

void install_signal_handlers() {
  struct sigaction stop {};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  for (int s : {SIGTERM, SIGINT, SIGUSR2}) sigaddset(&stop.sa_mask, s);
  stop.sa_flags = SA_RESTART;
  for (int s : {SIGTERM, SIGINT, SIGUSR2}) sigaction(s, &stop, nullptr);
  struct sigaction save {};
  save.sa_handler = on_save;
  sigemptyset(&save.sa_mask);
  save.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &save, nullptr);
}

bool stop_requested() { return g_stop_signal != 0; }

int stop_signal() { return g_stop_signal; }

bool take_save_request() {
  const bool requested = g_save != 0;
  g_save = 0;
  return requested;
}

const char* signal_name(int signum) {
  switch (signum) {
    case 0:
      return "no signal";
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGABRT:
      return "SIGABRT";
    case SIGKILL:
      return "SIGKILL";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGALRM:
      return "SIGALRM";
    case SIGTERM:
      return "SIGTERM";
    case SIGCONT:
      return "SIGCONT";
    case SIGSTOP:
      return "SIGSTOP";
    default:
      return "an unknown signal";
  }
}

}  // namespace memento
