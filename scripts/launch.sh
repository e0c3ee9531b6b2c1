#!/usr/bin/env bash
# The one-node launcher: mpirun, plus a stop on SIGTERM, SIGINT (Ctrl-C) or SIGHUP that saves.
#
#   scripts/launch.sh -np 4 build/bin/trainer --config configs/tiny.yaml --set parallel.dp=4
#   kill -TERM <pid of launch.sh>     # or Ctrl-C: checkpoint at the next step boundary, exit 75
#
# Every argument goes to mpirun unchanged. Open MPI's mpirun (4.1, ORTE) turns SIGTERM, SIGINT
# and SIGHUP into a kill of the job: SIGCONT to every rank, SIGTERM 1 s later, SIGKILL 1 s after
# that (odls_base_sigkill_timeout), so a checkpoint being written is lost and mpirun exits 1. It
# forwards SIGUSR1 and SIGUSR2 to every rank unchanged. So this script:
#   - runs mpirun in a session of its own (setsid), so that Ctrl-C at a terminal, which signals the
#     terminal's whole foreground process group, reaches this script and not mpirun; mpirun's
#     stdin is /dev/null (the trainer reads none), its output goes through two relays that
#     outlive a closed stdout or stderr (`| tee log`, which the same Ctrl-C ends);
#   - on the first SIGTERM, SIGINT or SIGHUP sends SIGUSR2 to mpirun, which forwards it to the
#     ranks: the trainer finishes its step, saves a checkpoint and exits 75. It sends SIGUSR2
#     again 2, 6, 14, 30, ... s later (harmless to a rank already stopping) for ranks that were
#     still starting;
#   - on SIGUSR1 sends SIGUSR1 (save a checkpoint and continue);
#   - on a second SIGTERM, SIGINT or SIGHUP, or MEMENTO_STOP_TIMEOUT_S seconds (default 600) after
#     the first, ends the job without saving: SIGTERM to mpirun (Open MPI kills the ranks within
#     2 s), then SIGKILL to mpirun and its ranks if mpirun is still there 10 s later. So the job
#     ends at most MEMENTO_STOP_TIMEOUT_S + 12 s after a first signal, and 12 s after a second;
#   - exits with mpirun's exit code: 75 (preempted, checkpoint saved), 0 (training done),
#     1 (error, or the job was killed), 128 + N (mpirun died of signal N).
#
# Environment: MEMENTO_MPIRUN, the mpirun to run (default mpirun in PATH); MEMENTO_STOP_TIMEOUT_S,
# seconds from the first stop signal to the kill (default 600: a step plus a large save).
# Killing this script with SIGKILL leaves the job running (mpirun is in its own session); signal
# mpirun with SIGUSR2 (save and stop) or SIGTERM (kill) then.

# The functions below run from traps.
# shellcheck disable=SC2317
set -u

readonly kExitPreempted=75  # launch/signals.h
readonly kKillGraceS=10     # after the SIGTERM to mpirun, before SIGKILL

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 MPIRUN-ARGS... (e.g. -np 4 build/bin/trainer --config CONFIG)" >&2
  exit 2
fi
mpirun=${MEMENTO_MPIRUN:-mpirun}
if ! command -v "$mpirun" >/dev/null; then
  echo "launch.sh: $mpirun: command not found (set MEMENTO_MPIRUN, or put mpirun in PATH)" >&2
  exit 127
fi
timeout=${MEMENTO_STOP_TIMEOUT_S:-600}
if ! [[ "$timeout" =~ ^[0-9]+$ ]] || [ "$timeout" -lt 1 ]; then
  echo "launch.sh: MEMENTO_STOP_TIMEOUT_S=$timeout: expected a whole number of seconds >= 1" >&2
  exit 2
fi

log() { echo "launch.sh: $*" >&2; }

pid=""           # mpirun
ticker=""        # a subshell that sends this script SIGALRM every second once a stop began
stopping=0       # 0 running, 1 saving (SIGUSR2 sent or due), 2 killing (SIGTERM to mpirun sent)
elapsed=0        # seconds since the first stop signal
next_resend=0    # elapsed time of the next SIGUSR2
resend_step=2
killed_at=0      # elapsed time of the SIGTERM to mpirun

# Whether process $1 has a handler for signal number $2 (the SigCgt mask in /proc, Linux). A
# SIGUSR2 to an mpirun that has not yet installed its handlers would kill it.
catches() {
  local mask
  mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  [ -n "$mask" ] && (( (16#$mask >> ($2 - 1)) & 1 ))
}

# SIGUSR2 to mpirun when it forwards it; otherwise the next tick tries again.
forward_stop() {
  [ -n "$pid" ] && catches "$pid" 12 && kill -USR2 "$pid" 2>/dev/null
}

forward_save() {
  if [ -n "$pid" ] && catches "$pid" 10; then
    kill -USR1 "$pid" 2>/dev/null
  else
    log "SIGUSR1: mpirun is not ready for it yet; send it again later"
  fi
}

kill_job() {  # $1: why
  stopping=2
  killed_at=$elapsed
  log "$1: ending the job without a checkpoint (SIGTERM to mpirun; SIGKILL in ${kKillGraceS} s)"
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
}

on_stop() {  # $1: the signal's name
  case $stopping in
    0)
      stopping=1
      log "$1: the ranks save a checkpoint at the next step boundary and exit" \
        "$kExitPreempted (SIGUSR2 through mpirun); a second signal, or ${timeout} s, kills the job"
      forward_stop && next_resend=$resend_step
      # $$ is this script's pid, in the subshell too. The ticker ignores the signals that a
      # kill of this script's process group sends, and ends when this script has.
      (
        trap '' TERM INT HUP
        while sleep 1; do kill -ALRM $$ 2>/dev/null || exit 0; done
      ) </dev/null >/dev/null 2>&1 &
      ticker=$!
      ;;
    1) kill_job "$1 again" ;;
    2) log "$1: already ending the job" ;;
  esac
}

on_tick() {
  elapsed=$((elapsed + 1))
  if [ "$stopping" -eq 1 ]; then
    if [ "$elapsed" -ge "$timeout" ]; then
      kill_job "no exit ${timeout} s after the stop signal (MEMENTO_STOP_TIMEOUT_S)"
    elif [ "$elapsed" -ge "$next_resend" ] && forward_stop; then
      resend_step=$((resend_step * 2))
      next_resend=$((elapsed + resend_step))
    fi
  elif [ "$stopping" -eq 2 ] && [ $((elapsed - killed_at)) -ge "$kKillGraceS" ]; then
    log "mpirun is still running ${kKillGraceS} s after SIGTERM: SIGKILL to it and its ranks"
    local child
    for child in $(pgrep -P "$pid"); do kill -KILL -- "-$child" "$child" 2>/dev/null; done
    kill -KILL "$pid" 2>/dev/null
    killed_at=$elapsed
  fi
}

trap 'on_stop SIGTERM' TERM
trap 'on_stop SIGINT' INT
trap 'on_stop SIGHUP' HUP
trap 'forward_save' USR1
trap 'on_tick' ALRM
# A closed output (`| tee log` ended by the same Ctrl-C) must not end this script before it has
# stopped the job: its writes fail instead. A handler, not SIG_IGN, which mpirun would inherit.
trap ':' PIPE

# mpirun writes into two relays, not into this script's stdout and stderr: when those close
# (`| tee` ended by Ctrl-C too, a terminal hung up) a relay drains the rest instead, for Open MPI
# 4.1's mpirun dies of SIGPIPE or crashes on a closed output, and may take the ranks with it.
relay() {
  trap '' INT TERM HUP PIPE
  cat 2>/dev/null
  exec cat >/dev/null
}
fifos=$(mktemp -d "${TMPDIR:-/tmp}/memento-launch.XXXXXX") || exit 1
trap 'rm -rf "$fifos"' EXIT
mkfifo "$fifos/out" "$fifos/err" || exit 1
relay <"$fifos/out" &
relay_out=$!
relay <"$fifos/err" >&2 &
relay_err=$!

setsid "$mpirun" "$@" </dev/null >"$fifos/out" 2>"$fifos/err" &
pid=$!
[ "$stopping" -eq 1 ] && forward_stop && next_resend=$resend_step  # a signal came before mpirun

# `wait` returns early (status > 128) whenever a trapped signal arrives; the trap has run by then.
# A status over 128 is an interrupted wait while mpirun still runs, or mpirun's own death by a
# signal: tell them apart by whether it is still there; once it has ended, `wait` returns its
# own status (bash keeps it).
code=0
while :; do
  wait "$pid"
  code=$?
  [ "$code" -le 128 ] && break
  kill -0 "$pid" 2>/dev/null && continue
  wait "$pid"
  code=$?
  break
done
if [ -n "$ticker" ]; then
  kill -KILL "$ticker" 2>/dev/null
  wait "$ticker" 2>/dev/null
fi
# The relays end when mpirun's output does; give them 5 s, in case something else holds it.
for _ in $(seq 50); do
  kill -0 "$relay_out" 2>/dev/null || kill -0 "$relay_err" 2>/dev/null || break
  sleep 0.1
done
kill -KILL "$relay_out" "$relay_err" 2>/dev/null
[ "$stopping" -ne 0 ] && log "mpirun exited with code $code"
exit "$code"
