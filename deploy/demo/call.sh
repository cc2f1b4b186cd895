#!/usr/bin/env bash
# One call from "gateway gw1" through umrouter over mutual TLS: INVITE, ACK,
# BYE, with openssl s_client as the gateway's TLS transport (any TLS SIP
# client would do; this one is on every machine). Run it where ./pki is (see
# make-test-pki.sh), with umrouter on 127.0.0.1:5061 (or $UMROUTER). CERT=pki/umrouter
# presents another certificate: one the CA issued to no configured gateway.
set -euo pipefail
cert=${CERT:-pki/gw1}
coproc TLS { exec openssl s_client -quiet -connect "${UMROUTER:-127.0.0.1:5061}" -servername umrouter.example.test \
  -cert "$cert.crt" -key "$cert.key" -CAfile pki/ca.crt -verify_return_error 2>/dev/null; }
# s_client -quiet ignores end of input and would hold the connection open
# until umrouter's idle timeout: end it with the script.
# bash unsets TLS and TLS_PID when the connection ends (umrouter closes it
# after a 403): keep our own copies of the descriptors and the pid.
exec {tls_in}<&"${TLS[0]}" {tls_out}>&"${TLS[1]}"
tls_pid=$TLS_PID
trap 'kill $tls_pid 2>/dev/null || true' EXIT
send() { printf '%s\r\n' "$@" '' >&"$tls_out"; echo "-> ${1%% sip:*}"; }
expect() { # CODE METHOD: read responses to METHOD until a final one; remember To, Contact, Record-Route
  local line status="" method="" rr=() v
  while IFS= read -r -t 10 line <&"$tls_in"; do
    line=${line%$'\r'}
    case $line in
      SIP/2.0*) status=${line#SIP/2.0 }; rr=(); method="" ;;
      CSeq:*) method=${line##* } ;;
      To:*) to=${line#To: } ;;
      Contact:*) target=${line#Contact: }; target=${target#<}; target=${target%%>*} ;;
      Record-Route:*) # one entry per line, or several separated by commas
        IFS=, read -ra v <<<"${line#Record-Route: }"
        for e in "${v[@]}"; do rr=("${e# }" "${rr[@]}"); done ;;  # reversed: route set of a UAC
      "") [[ $method == "$2" ]] || continue  # e.g. a retransmitted 200 to the INVITE
          echo "<- $status"
          [[ $status == [2-6]* ]] && { route=$(IFS=,; echo "${rr[*]}"); [[ $status == "$1"* ]]; return; } ;;
    esac
  done
  echo "no final response" >&2; return 1
}
from="<sip:5551234@gw1.example.test>;tag=gw1-$RANDOM" callid="call-$RANDOM@gw1.example.test"
dialog() { echo "Max-Forwards: 70"; echo "From: $from"; echo "Call-ID: $callid"; }
sdp=$'v=0\r\no=gw1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n'

mapfile -t d < <(dialog)
send "INVITE sip:12345@umrouter.example.test SIP/2.0" "Via: SIP/2.0/TLS gw1.example.test;branch=z9hG4bK-1-$RANDOM" "${d[@]}" \
  "To: <sip:12345@umrouter.example.test>" "CSeq: 1 INVITE" "Contact: <sip:5551234@gw1.example.test;transport=tls>" \
  "Content-Type: application/sdp" "Content-Length: ${#sdp}"
printf '%s' "$sdp" >&"$tls_out"
expect 200 INVITE || { echo "call refused"; exit 1; }
send "ACK $target SIP/2.0" "Via: SIP/2.0/TLS gw1.example.test;branch=z9hG4bK-2-$RANDOM" "${d[@]}" \
  "To: $to" "Route: $route" "CSeq: 1 ACK" "Content-Length: 0"
send "BYE $target SIP/2.0" "Via: SIP/2.0/TLS gw1.example.test;branch=z9hG4bK-3-$RANDOM" "${d[@]}" \
  "To: $to" "Route: $route" "CSeq: 2 BYE" "Content-Length: 0"
expect 200 BYE || { echo "hang-up failed"; exit 1; }
echo "call completed"
