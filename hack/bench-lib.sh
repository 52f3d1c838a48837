# Helpers shared by the benchmark scripts (hack/bench*.sh); sourced, not run.
# Each script cds to the repository root first.

phase() { printf '== %s\n' "$*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port LO HI: prints the first free port on 127.0.0.1 in LO..HI.
free_port() {
  local p
  for p in $(seq "$1" "$2"); do
    if port_free "$p"; then echo "$p"; return; fi
  done
  echo "no free port in $1-$2" >&2
  return 1
}

# wait_up PID HOST LOGFILE: until the registry at HOST answers /v2/ (10 s at
# most); fails at once when PID exits.
wait_up() {
  local _
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://$2/v2/" 2>/dev/null && return
    kill -0 "$1" 2>/dev/null || { echo "server for $2 exited:" >&2; tail -20 "$3" >&2; exit 1; }
    sleep 0.1
  done
  echo "$2 does not answer; log $3" >&2
  exit 1
}

# install_crane BIN VERSION: go-containerregistry's crane into BIN, unless
# that version is there already.
install_crane() {
  if [ ! -x "$1/crane" ] || ! "$1/crane" version 2>/dev/null | grep -qx "$2"; then
    GOBIN=$1 GOFLAGS=-buildvcs=false go install "github.com/google/go-containerregistry/cmd/crane@$2"
  fi
}
