# umrouter container image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t umrouter .
#   docker run -v /etc/umrouter:/etc/umrouter:ro -v umrouter-state:/var/lib/umrouter \
#     -p 5061:5061 -p 9090:9090 umrouter
#
# The configuration is mounted at /etc/umrouter/umrouter.yaml; set
# admin.listen to 0.0.0.0:9090 in it for the admin port to be reachable from
# outside the container. The certificate store (and the self-signed default)
# lives in the /var/lib/umrouter volume.

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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/umrouter /umrouter
# Owned by the image's nonroot user (65532), so that a fresh named volume
# mounted here is writable for the first self-signed certificate.
COPY --from=build --chown=65532:65532 /out/state /var/lib/umrouter
COPY --from=build /out/etc /etc/umrouter
# Tell umrouter where its store is even when tls.state_dir is not set.
ENV STATE_DIRECTORY=/var/lib/umrouter
VOLUME ["/etc/umrouter", "/var/lib/umrouter"]
# SIP over TLS and over DTLS, admin HTTP.
EXPOSE 5061/tcp 5061/udp 9090/tcp
USER nonroot:nonroot
ENTRYPOINT ["/umrouter"]
CMD ["run", "--config", "/etc/umrouter/umrouter.yaml"]
