# Shared by the demo scripts; not meant to be run by itself.
# Finds pettingllms, keeps torch on one thread (the tiny model trains 2-4x faster per step that
# way on a shared 2-core machine), and prints the machine's load around the run, since every
# time a demo reports depends on it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PETTINGLLMS=${PETTINGLLMS:-}
if [ -z "$PETTINGLLMS" ]; then
  if [ -x "$REPO/.venv/bin/pettingllms" ]; then PETTINGLLMS=$REPO/.venv/bin/pettingllms; else PETTINGLLMS=pettingllms; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

timed_run() {  # timed_run ARGS...: `pettingllms run ARGS...`, with the wall time and load average around it
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(getconf _NPROCESSORS_ONLN) cores)"
  local started=$SECONDS
  "$PETTINGLLMS" run "$@"
  echo "wall time: $((SECONDS - started)) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
}
