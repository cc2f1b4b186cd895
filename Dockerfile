# umrouter container image. README.md, "Run in a container", walks through it.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t umrouter .
#   docker run -d --name umrouter -v /etc/umrouter:/etc/umrouter:ro -v umrouter-state:/var/lib/umrouter \
#     -p 5061:5061/tcp -p 5061:5061/udp -p 127.0.0.1:9090:9090 umrouter
#
# The configuration is mounted at /etc/umrouter/umrouter.yaml. For the admin
# port to be reachable from outside the container, admin.listen must be
# 0.0.0.0:9090, which umrouter accepts only with admin.token_file or
# admin.client_ca_file (the admin API can drain the node). The certificate
# store, and the self-signed default of a first start, live in the
# /var/lib/umrouter volume; or mount a certificate and name it in
# tls.cert_file / tls.key_file.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused as long as go.mod and go.sum stand.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static binary (no cgo) for the distroless static image; -trimpath keeps
# build paths out of it.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/umrouter ./cmd/umrouter \
 && mkdir -p /out/state /out/etc

# distroless static: CA roots, tzdata, /etc/passwd with nonroot (65532),
# and nothing else: no shell, no package manager. The health check is the
# binary itself (umrouter health), since there is no curl either.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/umrouter /umrouter
# Owned by the image's nonroot user (65532), so that a fresh named volume
# mounted here is writable for the first self-signed certificate.
COPY --from=build --chown=65532:65532 /out/state /var/lib/umrouter
COPY --from=build /out/etc /etc/umrouter
# Tell umrouter where its store is even when tls.state_dir is not set.
ENV STATE_DIRECTORY=/var/lib/umrouter
VOLUME ["/etc/umrouter", "/var/lib/umrouter"]
# SIP over TLS, SIP over DTLS (listen.dtls), admin HTTP(S) (admin.listen).
EXPOSE 5061/tcp 5061/udp 9090/tcp
USER 65532:65532
# Liveness of the process, on the admin address of the mounted
# configuration (a wildcard address is probed on loopback). No credentials
# are needed for /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/umrouter", "health", "--config", "/etc/umrouter/umrouter.yaml", "--timeout", "4s"]
# SIGTERM (docker stop) drains calls before exiting 0: give it time with
# docker stop -t 45 (or stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/umrouter"]
CMD ["run", "--config", "/etc/umrouter/umrouter.yaml"]
