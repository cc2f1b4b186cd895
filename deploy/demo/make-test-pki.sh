#!/usr/bin/env bash
# Test PKI for the README walk-through: a CA, a certificate for umrouter
# (SAN DNS umrouter.example.test) and one for a gateway (SAN DNS
# gw1.example.test), all ECDSA P-256, written to ./pki. For tests only: the
# keys are not protected.
set -euo pipefail
mkdir -p pki && cd pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=umrouter test CA" -keyout ca.key -out ca.crt
for name in umrouter gw1; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$name.example.test" -keyout "$name.key" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 \
    -extfile <(printf 'subjectAltName=DNS:%s.example.test\nextendedKeyUsage=serverAuth,clientAuth\n' "$name") \
    -out "$name.crt"
done
openssl verify -CAfile ca.crt umrouter.crt gw1.crt
