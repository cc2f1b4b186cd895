#!/usr/bin/env bash
# bench/soak.sh: steady calls for a while, with a server certificate swap
# and a backend restart every interval; does anything leak? (issue 8, item 7)
# Everything on loopback, every load bounded.
#
#   bash bench/soak.sh                # 10 one-minute intervals (~11 min)
#   bash bench/soak.sh --minutes 30   # 30 intervals
#   bash bench/soak.sh --quick        # 4 intervals of 15 s (~1.5 min): a smoke test
#
# umrouter is built from the working tree and started with three gateways
# (gw1..gw3, client certificates made here with openssl), a umload UAS
# backend over UDP, and its server certificate in a directory laid out as a
# mounted Kubernetes Secret (tls.crt -> ..data/tls.crt, ..data -> ..vN/),
# which umrouter's file watch follows. Every interval:
#   steady   each gateway places paced calls (RATE calls/s over 2
#            connections) for the interval minus the restart window; halfway
#            through, a new server certificate is published with the
#            kubelet's atomic ..data swap, and new handshakes (openssl
#            s_client) are polled until they see its serial: "swap s" is how
#            long that took
#   restart  the same calls for the restart window (RESTART_WINDOW s, on new
#            connections); 2 s in, the backend UAS is stopped (SIGTERM) and
#            a new one started on the same port; "gap ms" is how long no
#            backend was listening. Calls whose INVITE or BYE falls in the
#            gap are retransmitted by umrouter (UDP timer A/E) and usually
#            still complete. Those that fail are counted apart as "failed
#            during backend restart", since the gap is the fault the soak
#            injects: typically a BYE answered 481 by the new backend, which
#            never saw the call its predecessor answered (umload's reason
#            bye_481); a 503 from umrouter or a timeout would count there too
# After each interval one line: elapsed seconds, calls completed, failures
# (steady; during the restart window), RSS and PSS of the umrouter process
# (/proc/PID/smaps_rollup), goroutines and heap in use from its /metrics
# (go_goroutines, go_memstats_heap_inuse_bytes), certificate reloads.
#
# Verdict:
#   - no failed call outside the restart windows;
#   - every certificate swap served to new handshakes within 10 s;
#   - RSS flat: the intervals are cut in thirds by index (first n/3, next
#     n/3, the rest; integer division); the first third is warm-up, and the
#     median RSS of the last third must be at most 10 % above the median RSS
#     of the second third (shrinking is fine). Judged with 6 intervals or
#     more; --quick only shows the figures.
#   Goroutines and heap are printed for the reader, not judged.
#
# Options:
#   --minutes N   intervals (default 10), of INTERVAL seconds (60)
#   --quick       4 intervals of 15 s with a 5 s restart window
#   --rate N      calls/s per gateway (default 30)
#   --out DIR     copy the report, raw JSON results and logs to DIR
#   --keep        keep the work directory
#
# Needs: go, openssl, jq, ss, curl. Every process it starts is stopped on exit.
set -eu

NAME=soak
QUICK=0 MINUTES=10 RATE=30
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --minutes) MINUTES=${2:?--minutes needs a number}; shift ;;
    --rate) RATE=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ $MINUTES =~ ^[0-9]+$ ]] || ((MINUTES < 1 || MINUTES > 240)); then echo "bench/soak.sh: --minutes takes 1..240" >&2; exit 2; fi
if ! [[ $RATE =~ ^[0-9]+$ ]] || ((RATE < 1)); then echo "bench/soak.sh: --rate takes a positive number" >&2; exit 2; fi
if ((QUICK)); then INTERVALS=4 INTERVAL=15 RESTART_WINDOW=5; else INTERVALS=$MINUTES INTERVAL=60 RESTART_WINDOW=10; fi
STEADY=$((INTERVAL - RESTART_WINDOW))
GATEWAYS=(gw1 gw2 gw3)
MAX_SECONDS=$((240 + INTERVALS * (INTERVAL + 40)))

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
make_pki "${GATEWAYS[@]}"

# The server certificate as a Kubernetes Secret volume.
SECRET=$WORK/secret
SECRET_N=0
publish_cert() { # publish_cert: a new server certificate, swapped in atomically; sets NEW_SERIAL
  local v
  SECRET_N=$((SECRET_N + 1)); v="..v$SECRET_N"
  mkdir -p "$SECRET/$v"
  issue_server_cert "$SECRET/$v" tls || die "openssl failed"
  mv "$SECRET/$v/tls.crt" "$SECRET/$v/tls.crt.tmp" && mv "$SECRET/$v/tls.crt.tmp" "$SECRET/$v/tls.crt"
  NEW_SERIAL=$(openssl x509 -in "$SECRET/$v/tls.crt" -noout -serial | cut -d= -f2)
  ln -s "$v" "$SECRET/..data_tmp" && mv -T "$SECRET/..data_tmp" "$SECRET/..data"
  ((SECRET_N > 1)) && rm -rf "$SECRET/..v$((SECRET_N - 1))"
  if ((SECRET_N == 1)); then ln -s ..data/tls.crt "$SECRET/tls.crt" && ln -s ..data/tls.key "$SECRET/tls.key"; fi
}
served_serial() { # the serial a new mutual-TLS handshake gets
  timeout 5 openssl s_client -connect "127.0.0.1:$P_UMR" -servername umrouter.bench.test -CAfile "$WORK/pki/ca.crt" \
    -cert "$WORK/pki/gw1.crt" -key "$WORK/pki/gw1.key" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}
mkdir -p "$SECRET"
publish_cert
write_config "$SECRET/tls.crt" "$SECRET/tls.key" "{ max_connections: 20000 }" "${GATEWAYS[@]}"
backend_start 0
umrouter_start umrouter
log "umrouter pid $UMR_PID on 127.0.0.1:$P_UMR; backend on :$P_BACKEND; $(nproc) CPUs"
log "$INTERVALS interval(s) of ${INTERVAL}s: ${#GATEWAYS[@]} gateways × $RATE calls/s; restart window ${RESTART_WINDOW}s"

# calls_start LABEL SECONDS: every gateway's paced calls in the background.
CALL_PIDS=()
calls_start() {
  local g
  CALL_PIDS=()
  for g in "${GATEWAYS[@]}"; do
    # shellcheck disable=SC2046 # client_args is a list of flags
    start_bg "$1.$g" "$UMLOAD" calls -target "127.0.0.1:$P_UMR" $(client_args "$g") -c 2 -rate "$RATE" \
      -n $((RATE * $2)) -d "${2}s" -call-timeout 10s
    CALL_PIDS+=("$BG_PID")
  done
}
# calls_wait LABEL: wait for them (bounded), keep their JSON lines; prints "OK FAILED".
calls_wait() {
  local pid g f ok=0 failed=0
  for pid in "${CALL_PIDS[@]}"; do
    for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done # -d, then at most the call timeout
    stop_group "$pid"; forget_pid "$pid"
  done
  for g in "${GATEWAYS[@]}"; do
    f=$WORK/results/$1.$g.json
    tail -1 "$WORK/logs/$1.$g.log" | jq -c . >"$f" 2>/dev/null || echo '{"error":"no result","calls_failed":1}' >"$f"
    ok=$((ok + $(jq '.calls_ok // 0' "$f")))
    failed=$((failed + $(jq '(.calls_failed // 0) + (.unfinished // 0) + (.connect_failures // {} | length)' "$f")))
  done
  echo "$ok $failed"
}
now_ms() { date +%s%3N; }

printf '%-4s %7s %8s %7s %8s %7s %6s %8s %8s %6s %9s %8s\n' int elapsed calls failed fail_rst gap_ms swap_s rss_mib pss_mib gorout heap_mib reloads | tee "$WORK/report.table" >&2
SWAP_LATE=0 STEADY_FAILED=0 RESTART_FAILED=0 CALLS=0
for i in $(seq "$INTERVALS"); do
  start_ms=$(now_ms)
  # steady part, with the certificate swap halfway
  calls_start "steady.$i" "$STEADY"
  sleep $((STEADY / 2))
  publish_cert
  t0=$(now_ms) swap=""
  for _ in $(seq 100); do
    [[ $(served_serial) == "$NEW_SERIAL" ]] && { swap=$(awk -v d=$(($(now_ms) - t0)) 'BEGIN{printf "%.1f", d/1000}'); break; }
    sleep 0.1
  done
  [[ -n $swap ]] || { swap=late; SWAP_LATE=$((SWAP_LATE + 1)); }
  read -r s_ok s_failed < <(calls_wait "steady.$i")
  # restart window: the backend goes away and comes back
  calls_start "restart.$i" "$RESTART_WINDOW"
  sleep 2
  t0=$(now_ms)
  backend_stop
  backend_start "$i"
  gap=$(($(now_ms) - t0))
  read -r r_ok r_failed < <(calls_wait "restart.$i")
  kill -0 "$UMR_PID" 2>/dev/null || die "umrouter died: $(tail -5 "$WORK/logs/umrouter.log")"
  # readings
  read -r rss pss < <(proc_mem "$UMR_PID")
  gor=$(metric 'go_goroutines ') heap=$(metric 'go_memstats_heap_inuse_bytes ')
  rel_ok=$(metric 'umrouter_reloads_total{kind="certificate",result="ok"}')
  rel_err=$(metric 'umrouter_reloads_total{kind="certificate",result="error"}')
  CALLS=$((CALLS + s_ok + r_ok)) STEADY_FAILED=$((STEADY_FAILED + s_failed)) RESTART_FAILED=$((RESTART_FAILED + r_failed))
  jq -n --argjson i "$i" --argjson elapsed "$SECONDS" --argjson ok $((s_ok + r_ok)) --argjson sf "$s_failed" --argjson rf "$r_failed" \
    --argjson gap "$gap" --arg swap "$swap" --argjson rss "$rss" --argjson pss "$pss" --argjson gor "$gor" --argjson heap "$heap" \
    --argjson rok "$rel_ok" --argjson rerr "$rel_err" \
    '{interval: $i, elapsed_s: $elapsed, calls_ok: $ok, failed_steady: $sf, failed_restart: $rf, backend_gap_ms: $gap,
      swap_s: $swap, rss_kib: $rss, pss_kib: $pss, goroutines: $gor, heap_inuse_bytes: $heap,
      cert_reloads_ok: $rok, cert_reloads_error: $rerr}' >"$WORK/results/interval.$i.json"
  printf '%-4s %7s %8s %7s %8s %7s %6s %8.1f %8.1f %6s %9.1f %8s\n' "$i" "$SECONDS" $((s_ok + r_ok)) "$s_failed" "$r_failed" "$gap" "$swap" \
    "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$(awk -v k="$pss" 'BEGIN{print k/1024}')" "$gor" \
    "$(awk -v b="$heap" 'BEGIN{print b/1048576}')" "$rel_ok${rel_err:+/$rel_err}" | tee -a "$WORK/report.table" >&2
  # the next interval starts INTERVAL seconds after this one did (when the machine keeps up)
  left=$(((start_ms + INTERVAL * 1000 - $(now_ms)) / 1000))
  ((left > 0 && left <= INTERVAL)) && sleep "$left"
done

# ---- verdict -----------------------------------------------------------------
n=$INTERVALS
third() { # third K: RSS (KiB) of the K-th third of the intervals (0, 1, 2), one per line
  local from to i
  case $1 in 0) from=1 to=$((n / 3)) ;; 1) from=$((n / 3 + 1)) to=$((2 * n / 3)) ;; 2) from=$((2 * n / 3 + 1)) to=$n ;; esac
  for ((i = from; i <= to; i++)); do jq .rss_kib "$WORK/results/interval.$i.json"; done
}
R2=$(third 1 | median) R3=$(third 2 | median)
GROWTH=$(awk -v a="$R3" -v b="$R2" 'BEGIN{ if (a == "" || b == "" || b == 0) print ""; else printf "%.1f", (a / b - 1) * 100 }')
if ((n < 6)); then RSS_VERDICT="not judged (fewer than 6 intervals)"
elif awk -v g="$GROWTH" 'BEGIN{exit !(g != "" && g <= 10)}'; then RSS_VERDICT="**flat**"
else RSS_VERDICT="**not flat**"; fi
G1=$(jq .goroutines "$WORK/results/interval.1.json") GN=$(jq .goroutines "$WORK/results/interval.$n.json")
{
  echo "## bench/soak.sh results"
  echo
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'); umrouter built from the working tree at $BUILD_REV"
  echo "- $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr), $(go version | cut -d' ' -f3); backend: umload uas (UDP)"
  echo "- $n interval(s) of ${INTERVAL}s; ${#GATEWAYS[@]} gateways × $RATE calls/s over 2 connections each; a certificate swap (Secret ..data) and a backend restart per interval$( ((QUICK)) && echo '; **--quick: indicative only**')"
  echo
  echo '```'
  cat "$WORK/report.table"
  echo '```'
  echo
  echo "| figure | value |"
  echo "|---|---|"
  echo "| calls completed | $CALLS |"
  echo "| failed calls outside the restart windows | $STEADY_FAILED (goal 0) |"
  echo "| failed calls during backend restarts | $RESTART_FAILED (expected: a few at most) |"
  echo "| certificate swaps not served within 10 s | $SWAP_LATE of $n |"
  echo "| RSS median, second third → last third | $(awk -v a="${R2:-0}" -v b="${R3:-0}" 'BEGIN{printf "%.1f → %.1f MiB", a/1024, b/1024}') (${GROWTH:-?} %) |"
  echo "| goroutines after interval 1 → after interval $n | $G1 → $GN |"
  if ((STEADY_FAILED == 0 && SWAP_LATE == 0)) && [[ $RSS_VERDICT != "**not flat**" ]]; then
    echo "| verdict | **met**: no steady failure, every swap served, RSS $RSS_VERDICT |"
  else
    echo "| verdict | **not met**: steady failures $STEADY_FAILED, late swaps $SWAP_LATE, RSS $RSS_VERDICT |"
  fi
} >"$WORK/report.md"
cat "$WORK/report.md"
log "done"
