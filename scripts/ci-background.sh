#!/usr/bin/env bash
# A lane of CI jobs beside the foreground steps (scripts/test.sh): runs its jobs one after
# another, by default at a lower CPU and I/O priority, so they take the cores the foreground
# leaves idle (tests waiting on timers, a board booting on one core) and little else.
#   scripts/ci-background.sh [--nice N] DIR NAME COMMAND [NAME COMMAND]...
# --nice N: the jobs' niceness (default 10, with the idle end of best-effort I/O); 0 runs
# them at the foreground's priority (test.sh's lane of campaigns that share the cores with
# another campaign).
# Each job's output goes to DIR/NAME.log; when it ends, DIR/NAME.rc holds "STATUS START END
# CPU" (START and END in seconds since the epoch; the CPU seconds, user and system, of the
# processes it waited for: a daemon, such as bitbake's server, is not counted). A job that
# fails does not stop the ones after it: test.sh reports every failure when it joins the
# job. Run it with setsid, so the caller can stop the whole lane (and what its jobs started)
# at once.
set -uo pipefail
prio=(nice -n 10 ionice -c 2 -n 7)
if [ "${1:-}" = --nice ]; then
  prio=(nice -n "$2")
  [ "$2" = 0 ] || prio+=(ionice -c 2 -n 7)
  shift 2
fi
dir=$1
shift
# The CPU seconds (user and system) of the jobs this lane has waited for so far, in $cpu
# (the builtin writes to a file: in a pipe or $(...) it would report a subshell's).
children_cpu() {
  times >"$dir/.times.$$"
  cpu=$(awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$dir/.times.$$")
}
while [ $# -ge 2 ]; do
  name=$1 cmd=$2
  shift 2
  start=$EPOCHSECONDS
  children_cpu
  before=$cpu
  "${prio[@]}" bash -c "$cmd" </dev/null >"$dir/$name.log" 2>&1
  rc=$?
  children_cpu
  echo "$rc $start $EPOCHSECONDS $((cpu - before))" >"$dir/$name.rc.tmp"
  mv "$dir/$name.rc.tmp" "$dir/$name.rc"
done
rm -f "$dir/.times.$$"
