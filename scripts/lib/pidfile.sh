# Sourced by the scripts/<service>.sh helpers: find and stop a service by the
# PID it recorded, never by name. Each script defines log() before sourcing.

# Prints the PID in file $1 if that process is alive and its command line
# contains $2 (a stale file whose PID was reused by something else is not ours).
pid_from_file() {
  local file=$1 pattern=$2 pid
  [[ -f $file ]] || return 1
  pid=$(head -n 1 "$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  echo "$pid"
}

# SIGTERM to $1, SIGKILL if it is still alive after $2 seconds.
stop_pid() {
  local pid=$1 timeout=$2
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.2; done
  if [[ -d /proc/$pid ]]; then
    log "pid $pid ignored SIGTERM for ${timeout}s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
}
