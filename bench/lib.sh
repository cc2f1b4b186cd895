# shellcheck shell=bash disable=SC2153 # NAME and MAX_SECONDS are the sourcing script's
# bench/lib.sh: what bench/fairness.sh and bench/soak.sh share: a work
# directory, processes in their own groups stopped on exit, a watchdog that
# bounds the whole run, the build, a test PKI, umrouter and a umload UAS
# backend on loopback, and readings from /proc and umrouter's /metrics.
# bench/run.sh takes the process helpers from here (log, die, need,
# stop_group, start_bg, forget_pid), not the rest.
#
# Source it after setting NAME (the script's name, for messages) and
# MAX_SECONDS (the time bound of the whole run); then call lib_init.
# Needs: go, openssl, jq, ss, curl.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIDS=()
WATCHDOG=""
KEEP=${KEEP:-0}
OUT=${OUT:-}

log() { printf '[%4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "$NAME: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is missing ($2)"; }

stop_group() { # stop a process group started by start_bg: TERM, then KILL after 10 s
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
lib_cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_group "$pid"; done
  [[ -n $WATCHDOG ]] && stop_group "$WATCHDOG"
  if [[ -n $OUT ]]; then mkdir -p "$OUT" && cp -r "$WORK/results" "$WORK/logs" "$OUT/" 2>/dev/null; cp "$WORK"/report.* "$OUT/" 2>/dev/null; fi
  if ((KEEP)); then echo "$NAME: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}

# start_bg NAME CMD...: run CMD in its own process group (so that it and its
# children can be stopped together), output to logs/NAME.log; sets BG_PID.
# With BG_NICE=N (not 0) the process runs at niceness N, and so does its
# session's scheduler autogroup: under sched_autogroup a process's nice only
# counts within its session, and CPU is shared between sessions by their
# autogroup's nice.
# With BG_CPUS=LIST the process and its threads run only on those CPUs
# (taskset -c LIST); with BG_RT=P they run at real-time priority P
# (SCHED_RR, chrt: needs CAP_SYS_NICE).
start_bg() {
  local name=$1; shift
  [[ -n ${BG_CPUS:-} ]] && set -- taskset -c "$BG_CPUS" "$@"
  [[ -n ${BG_RT:-} ]] && set -- chrt -r "$BG_RT" "$@"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c '[[ $0 != 0 ]] && echo "$0" >/proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "${BG_NICE:-0}" "$@" \
    >"$WORK/logs/$name.log" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
forget_pid() { local p=$1 keep=() x; for x in "${PIDS[@]}"; do [[ $x == "$p" ]] || keep+=("$x"); done; PIDS=("${keep[@]}"); }

# lib_init: prerequisites, work directory, traps, watchdog, ports, build.
lib_init() {
  need go "https://go.dev/dl"; need openssl "apt-get install openssl"; need jq "apt-get install jq"
  need ss "apt-get install iproute2"; need curl "apt-get install curl"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  WORK=$(mktemp -d "/tmp/um$NAME.XXXXXX")
  mkdir -p "$WORK/bin" "$WORK/pki" "$WORK/results" "$WORK/logs"
  trap lib_cleanup EXIT
  trap 'echo "$NAME: interrupted" >&2; exit 130' INT TERM
  setsid bash -c "sleep $MAX_SECONDS; echo '$NAME: time bound of ${MAX_SECONDS}s reached, stopping' >&2; kill -TERM $$" &
  WATCHDOG=$!
  SECONDS=0
  local b o ok
  BASE=""
  for b in 45000 46000 47000 48000 49000; do
    ok=1
    for o in 61 62 70 71 90 91; do ss -Htaun "( sport = :$((b + o)) )" | grep -q . && { ok=0; break; }; done
    ((ok)) && { BASE=$b; break; }
  done
  [[ -n $BASE ]] || die "no free port block on loopback"
  P_UMR=$((BASE + 61)) P_BACKEND=$((BASE + 70)) P_ADMIN=$((BASE + 90))
  # What is built: the reports name it (the tree may move on during a long run).
  BUILD_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"
  log "building umrouter and umload from the working tree $ROOT ($BUILD_REV)"
  (cd "$ROOT" && go build -o "$WORK/bin/umrouter" ./cmd/umrouter && go build -o "$WORK/bin/umload" ./cmd/umload) ||
    die "go build failed"
  UMLOAD=$WORK/bin/umload
}

# make_pki GATEWAY...: an ECDSA P-256 CA, umrouter's server certificate and
# one client certificate per gateway NAME (DNS SAN NAME.bench.test).
issue_cert() { # issue_cert DIR BASE CN SAN
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
    -keyout "$1/$2.key" -out "$1/$2.csr" 2>/dev/null &&
    openssl x509 -req -in "$1/$2.csr" -CA "$WORK/pki/ca.crt" -CAkey "$WORK/pki/ca.key" -CAcreateserial -days 7 \
      -out "$1/$2.crt" -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$4") 2>/dev/null &&
    rm -f "$1/$2.csr"
}
issue_server_cert() { # issue_server_cert DIR BASE
  issue_cert "$1" "$2" umrouter.bench.test "DNS:umrouter.bench.test,DNS:localhost,IP:127.0.0.1"
}
make_pki() {
  local g
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj "/CN=umrouter bench CA" -keyout "$WORK/pki/ca.key" -out "$WORK/pki/ca.crt" 2>/dev/null || die "openssl failed"
  issue_server_cert "$WORK/pki" server || die "openssl failed"
  for g in "$@"; do issue_cert "$WORK/pki" "$g" "$g.bench.test" "DNS:$g.bench.test" || die "openssl failed"; done
}
client_args() { # client_args GATEWAY: umload's TLS flags for that gateway
  echo "-cert $WORK/pki/$1.crt -key $WORK/pki/$1.key -ca $WORK/pki/ca.crt -server-name umrouter.bench.test -tls 1.3 -quiet"
}

# write_config CERT KEY LIMITS GATEWAY...: umrouter's configuration, one
# UDP backend (the UAS), the named gateways on one sip-secured plan.
write_config() {
  local cert=$1 key=$2 limits=$3 g; shift 3
  {
    cat <<EOF
node_name: $NAME
advertise: umrouter.bench.test
startup_mode: tls
listen:
  tls: 127.0.0.1:$P_UMR
tls:
  state_dir: $WORK/state
  cert_file: $cert
  key_file: $key
  client_ca_file: $WORK/pki/ca.crt
gateways:
EOF
    for g in "$@"; do echo "  - { name: $g, address: $g.bench.test, dial_plan: main }"; done
    cat <<EOF
dial_plans:
  - { name: main, security: sip-secured, uri_type: telephone-extension, number_of_digits: 5 }
backends:
  transport: udp
  servers:
    - { address: 127.0.0.1:$P_BACKEND }
admin:
  listen: 127.0.0.1:$P_ADMIN
log: { level: warn }
limits: $limits
EOF
  } >"$WORK/umrouter.yaml"
  "$WORK/bin/umrouter" config check "$WORK/umrouter.yaml" >/dev/null || die "umrouter rejects the configuration $WORK/umrouter.yaml"
}

# backend_start LABEL / backend_stop: a umload UAS on P_BACKEND.
BACKEND_PID=""
backend_start() {
  local i
  start_bg "backend-$1" timeout "$MAX_SECONDS" "$UMLOAD" uas -listen "127.0.0.1:$P_BACKEND" -d "${MAX_SECONDS}s" -quiet
  BACKEND_PID=$BG_PID
  for i in $(seq 100); do
    ss -Hlun "( sport = :$P_BACKEND )" | grep -q . && return 0
    kill -0 "$BACKEND_PID" 2>/dev/null || break
    sleep 0.05
  done
  die "backend did not start: $(tail -5 "$WORK/logs/backend-$1.log")"
}
backend_stop() {
  [[ -n $BACKEND_PID ]] || return 0
  stop_group "$BACKEND_PID"; forget_pid "$BACKEND_PID"; BACKEND_PID=""
}

# umrouter_start LABEL: start umrouter and wait until /readyz says 200; sets
# UMR_GROUP and UMR_PID (the daemon itself, under timeout(1)).
UMR_GROUP="" UMR_PID=""
umrouter_start() {
  local i
  rm -rf "$WORK/state"
  # shellcheck disable=SC2086 # UMROUTER_ENV is a list of NAME=value words
  start_bg "$1" env ${UMROUTER_ENV:-} timeout "$MAX_SECONDS" "$WORK/bin/umrouter" run --config "$WORK/umrouter.yaml"
  UMR_GROUP=$BG_PID
  for i in $(seq 200); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_ADMIN/readyz" 2>/dev/null) == 200 ]] && break
    kill -0 "$UMR_GROUP" 2>/dev/null || die "umrouter exited: $(tail -5 "$WORK/logs/$1.log")"
    sleep 0.1
  done
  ((i < 200)) || die "umrouter not ready after 20 s: $(tail -5 "$WORK/logs/$1.log")"
  UMR_PID=$(pgrep -P "$UMR_GROUP" | head -1)
  [[ -n $UMR_PID ]] || die "umrouter: no process under $UMR_GROUP"
}
umrouter_stop() { stop_group "$UMR_GROUP"; forget_pid "$UMR_GROUP"; UMR_GROUP="" UMR_PID=""; }

# metric NAME_AND_LABELS: the sum of umrouter's samples whose line starts
# with it (0 when none), e.g. metric 'umrouter_refusals_total{code="503",reason="rate_limited"'
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" |
    awk -v p="$1" 'index($0, p) == 1 { s += $NF } END { printf "%.0f\n", s }'
}
# proc_mem PID: "RSS PSS" in KiB from /proc/PID/smaps_rollup.
proc_mem() {
  awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{printf "%d %d\n", r, p}' "/proc/$1/smaps_rollup" 2>/dev/null || echo "0 0"
}
median() { sort -g | awk '{v[NR]=$1} END{ if (NR == 0) print ""; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }
