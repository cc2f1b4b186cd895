#!/usr/bin/env bash
# test-call.sh: one call into umrouter placed the way a VoIP gateway, IP-PBX,
# SBC or Lync pool places it: INVITE, ACK, BYE, over mutual TLS (openssl
# s_client is the TLS transport) or plain TCP. It prints every request sent
# and every response received (with the Warning header of a refusal) and
# exits 0 when the call completed, 1 otherwise. Needs bash and openssl only.
#
# usage: test-call.sh --to NAME:PORT [options]
#   --to NAME:PORT     umrouter: port 5061 for TLS, 5060 for TCP; NAME is the
#                      name its certificate must carry, checked as a gateway does
#   --as STEM          present the certificate STEM.crt (chain may follow) and
#                      its key STEM.key, as the gateway, SBC or Lync pool would
#   --trust FILE.pem   the CA certificate(s) this peer trusts umrouter's with
#   --tcp              plain TCP, no certificates (a gateway not moved to TLS yet)
#   --uri SIP-URI      the Request-URI (default sip:12345@NAME)
#   --from SIP-URI     the caller (default sip:5551234@test-call.invalid)
#   --srtp             offer SRTP (RTP/SAVP, an SDES a=crypto key) instead of RTP
#
# TEST_CALL_RESOLVE="NAME:PORT=ADDRESS:PORT ..." connects to ADDRESS:PORT when
# --to names NAME:PORT, as curl --resolve does: to call one node of a cluster
# under the cluster's name, or before DNS has the name.
set -euo pipefail

to="" as="" trust="" tcp=false uri="" from="sip:5551234@test-call.invalid" srtp=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --to) to=$2; shift 2 ;;
    --as) as=$2; shift 2 ;;
    --trust) trust=$2; shift 2 ;;
    --tcp) tcp=true; shift ;;
    --uri) uri=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --srtp) srtp=true; shift ;;
    *) sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[[ $to == *:* ]] || { echo "test-call.sh: give --to NAME:PORT" >&2; exit 2; }
name=${to%:*} connect=$to
for r in ${TEST_CALL_RESOLVE:-}; do
  [[ ${r%%=*} == "$to" ]] && connect=${r#*=}
done
host=${connect%:*} port=${connect##*:}
uri=${uri:-sip:12345@$name}
tmp=$(mktemp -d)
cleanup() { [[ -n ${TLS_PID:-} ]] && kill "$TLS_PID" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

if $tcp; then
  transport=TCP
  if ! { exec {conn}<>"/dev/tcp/$host/$port"; } 2>"$tmp/err"; then
    echo "cannot connect to $connect over TCP: $(sed -n 's/.*connect: //p' "$tmp/err" | head -1)"
    exit 1
  fi
  in=$conn out=$conn
else
  transport=TLS
  [[ -n $as && -n $trust ]] || { echo "test-call.sh: TLS needs --as STEM and --trust FILE" >&2; exit 2; }
  # -quiet ignores end of input and would hold the connection open: the
  # trap ends it with the script (exec: the coprocess is openssl itself, not
  # a subshell whose death would leave openssl connected).
  coproc TLS { exec openssl s_client -quiet -connect "$connect" -servername "$name" -verify_hostname "$name" \
    -cert "$as.crt" -key "$as.key" -CAfile "$trust" -verify_return_error 2>"$tmp/tls"; }
  # Our own copies of the coprocess's pipes: bash closes its copies as soon
  # as openssl exits, which may be before the last response was read.
  exec {in}<&"${TLS[0]}" {out}>&"${TLS[1]}"
fi

tls_problem() { # what openssl said about a refused handshake or a closed connection
  [[ -s $tmp/tls ]] || return 0
  grep -Eo '(sslv3|tlsv1[0-9]*) alert [a-z ]+|verify error:num=[0-9]+:.*|connect:errno=[0-9]+' "$tmp/tls" |
    sed 's/^connect:errno=111$/connection refused/; s/^/   openssl: /' | sort -u || true
}

send() { printf '%s\r\n' "$@" '' >&"$out"; echo "-> ${1%% *}"; }

expect() { # CSEQ: read responses until a final one to that request (a
  # retransmitted answer to an earlier one is not it); keep its To, Contact
  # and route set
  local want=$1 line cseq="" to="" contact="" rr=() warn=()
  status=""
  while IFS= read -r -t 10 line <&"$in"; do
    line=${line%$'\r'}
    case $line in
      SIP/2.0*) status=${line#SIP/2.0 } cseq="" to="" contact="" rr=() warn=() ;;
      CSeq:*) cseq=${line#CSeq: } ;;
      Warning:*) warn+=("$line") ;;
      To:*) to=${line#To: } ;;
      Contact:*) contact=${line#Contact: }; contact=${contact#<}; contact=${contact%%>*} ;;
      Record-Route:*) # the route set of a UAC: every value, in reverse order,
        # also when several values share one header line
        local v=${line#Record-Route: } e
        while [[ -n $v ]]; do
          e=${v%%>*}\>; v=${v#*>}; v=${v#*,}; v=${v# }
          [[ $e == *\<* ]] && rr=("${e#"${e%%<*}"}" "${rr[@]}")
          [[ $v == *\>* ]] || v=""
        done ;;
      "")
        [[ -n $status && $cseq == "$want" ]] || { status=""; continue; }
        echo "<- $status"
        for w in "${warn[@]}"; do echo "   $w"; done
        if [[ $status == [2-6]* ]]; then
          to_hdr=$to target=$contact route=$(IFS=,; echo "${rr[*]}")
          return 0
        fi
        status="" ;;
    esac
  done
  echo "no final response: the connection ended, or 10 s passed without an answer"
  tls_problem
  return 1
}

via_host=${from##*@} via_host=${via_host%%[;>]*}
tag="tc-$RANDOM$RANDOM" callid="test-call-$RANDOM$RANDOM@$via_host" branch="z9hG4bK-tc-$RANDOM$RANDOM"
common=("Max-Forwards: 70" "From: <$from>;tag=$tag" "Call-ID: $callid")
if $srtp; then
  media=$'m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj\r\n'
else
  media=$'m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n'
fi
sdp=$'v=0\r\no=test-call 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n'"$media"

# A refused handshake may have closed the connection already: the INVITE is
# then lost, and expect reports what openssl said.
trap '' PIPE
{ send "INVITE $uri SIP/2.0" "Via: SIP/2.0/$transport $via_host;branch=$branch" "${common[@]}" \
  "To: <$uri>" "CSeq: 1 INVITE" "Contact: <sip:test-call@$via_host;transport=${transport,,}>" \
  "Content-Type: application/sdp" "Content-Length: ${#sdp}"; printf '%s' "$sdp" >&"$out"; } 2>/dev/null || true
expect "1 INVITE" || exit 1
if [[ $status != 2* ]]; then
  # A non-2xx final response is acknowledged hop by hop, in its transaction.
  # umrouter may have closed the connection already (a 403 to a peer it
  # does not know): then there is nothing left to acknowledge.
  { send "ACK $uri SIP/2.0" "Via: SIP/2.0/$transport $via_host;branch=$branch" "${common[@]}" \
    "To: $to_hdr" "CSeq: 1 ACK" "Content-Length: 0"; } 2>/dev/null || true
  echo "call refused"
  exit 1
fi
send "ACK $target SIP/2.0" "Via: SIP/2.0/$transport $via_host;branch=z9hG4bK-tc-$RANDOM$RANDOM" "${common[@]}" \
  "To: $to_hdr" "Route: $route" "CSeq: 1 ACK" "Content-Length: 0"
send "BYE $target SIP/2.0" "Via: SIP/2.0/$transport $via_host;branch=z9hG4bK-tc-$RANDOM$RANDOM" "${common[@]}" \
  "To: $to_hdr" "Route: $route" "CSeq: 2 BYE" "Content-Length: 0"
expect "2 BYE" || exit 1
[[ $status == 2* ]] || { echo "BYE refused"; exit 1; }
echo "call completed"
