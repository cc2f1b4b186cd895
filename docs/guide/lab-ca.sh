#!/usr/bin/env bash
# lab-ca.sh: a throw-away certificate authority for trying the deployment
# guide (docs/deployment-guide.md) without a PKI. It plays three parts:
#
#   "Contoso Lab Root CA"   your internal CA: it signs umrouter's certificate
#                           request and issues the peers' certificates
#                           (gateways, SBCs, Lync pools)
#   "Lab Public CA"         a commercial CA: it sells you a certificate as a
#                           PKCS#12 (.pfx) file, key and chain included
#   nobody                  self-signed certificates, the kind Lync refuses
#
# The keys are not protected: a lab, never production. Files are written in
# the current directory (the CAs in ./lab-ca/).
#
#   lab-ca.sh init                       create both CAs in ./lab-ca/
#   lab-ca.sh issue FQDN                 FQDN.crt and FQDN.key from the Contoso CA
#   lab-ca.sh sign REQUEST.csr OUT.crt   sign a request (umrouter cert request), keeping its names
#   lab-ca.sh self-signed FQDN           FQDN-selfsigned.crt and .key
#   lab-ca.sh pfx OUT.pfx PASSWORD-FILE FQDN [FQDN...]
#                                        a certificate for the FQDNs from the "public" CA,
#                                        with its key and CA chain, in PKCS#12
set -euo pipefail

ca=lab-ca
p256=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
# Both ends of a SIP TLS connection authenticate: every certificate may
# serve and connect.
eku='extendedKeyUsage=serverAuth,clientAuth'

die() { echo "lab-ca.sh: $*" >&2; exit 2; }

sans() { # FQDN... -> subjectAltName=DNS:a,DNS:b
  local s=""
  for n in "$@"; do s+="${s:+,}DNS:$n"; done
  printf 'subjectAltName=%s\n' "$s"
}

new_ca() { # NAME FILE-STEM
  openssl req -x509 "${p256[@]}" -days 730 -subj "/O=Contoso Lab/CN=$1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$ca/$2.key" -out "$ca/$2.crt" 2>/dev/null
}

issue() { # CA-STEM OUT-STEM FQDN...
  local stem=$1 out=$2; shift 2
  openssl req "${p256[@]}" -subj "/CN=$1" -keyout "$out.key" -out "$out.csr" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$ca/$stem.crt" -CAkey "$ca/$stem.key" -CAcreateserial -days 365 \
    -extfile <(sans "$@"; echo "$eku") -out "$out.crt" 2>/dev/null
  rm -f "$out.csr"
}

case ${1:-} in
init)
  mkdir -p "$ca"
  new_ca "Contoso Lab Root CA" contoso-root
  new_ca "Lab Public CA" public-root
  echo "lab CAs in $ca/: contoso-root.crt (your internal CA), public-root.crt (a commercial CA)"
  ;;
issue)
  [[ $# == 2 ]] || die "usage: lab-ca.sh issue FQDN"
  issue contoso-root "$2" "$2"
  echo "$2.crt and $2.key: issued by Contoso Lab Root CA for DNS:$2"
  ;;
sign)
  [[ $# == 3 ]] || die "usage: lab-ca.sh sign REQUEST.csr OUT.crt"
  openssl x509 -req -in "$2" -CA "$ca/contoso-root.crt" -CAkey "$ca/contoso-root.key" -CAcreateserial \
    -days 365 -copy_extensions copyall -extfile <(echo "$eku") -out "$3" 2>/dev/null
  echo "$3: signed by Contoso Lab Root CA"
  ;;
self-signed)
  [[ $# == 2 ]] || die "usage: lab-ca.sh self-signed FQDN"
  openssl req -x509 "${p256[@]}" -days 365 -subj "/CN=$2" -addext "$(sans "$2")" -addext "$eku" \
    -keyout "$2-selfsigned.key" -out "$2-selfsigned.crt" 2>/dev/null
  echo "$2-selfsigned.crt and .key: self-signed, DNS:$2"
  ;;
pfx)
  [[ $# -ge 4 ]] || die "usage: lab-ca.sh pfx OUT.pfx PASSWORD-FILE FQDN [FQDN...]"
  out=$2 pw=$3; shift 3
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  issue public-root "$tmp/leaf" "$@"
  openssl pkcs12 -export -inkey "$tmp/leaf.key" -in "$tmp/leaf.crt" -certfile "$ca/public-root.crt" \
    -name "$1" -passout "file:$pw" -out "$out"
  echo "$out: certificate for $*, its key and the Lab Public CA, in PKCS#12"
  ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
