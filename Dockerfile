# syntax=docker/dockerfile:1
# scimgate container image: a release build on the pinned Rust toolchain, run on distroless.
#
#   docker build -t scimgate:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Runtime: gcr.io/distroless/cc-debian12:nonroot carries glibc, libgcc and the Debian CA bundle
# (/etc/ssl/certs/ca-certificates.crt); scimgate also embeds webpki-roots, so https to the IdP and
# the upstream works either way. No shell, no package manager, uid/gid 65532.
# For reproducible builds pin both base images by digest (FROM image:tag@sha256:...) in your mirror.
#
# The runtime stage below is a contract CI checks for real: tests/ops/run.sh builds the same stage
# on `scratch` (plus the glibc libraries, CA bundle and passwd entry distroless provides, since no
# base image can be pulled there) from the release binary, compares the image's USER, EXPOSE,
# STOPSIGNAL, ENTRYPOINT and CMD with this file, and runs it with podman read-only as 65532.

FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The registry and target caches survive between builds (BuildKit/buildah cache mounts), so the
# binary is copied out of the cached target dir inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -m 0755 target/release/scimgate /usr/local/bin/scimgate

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="scimgate" \
      org.opencontainers.image.description="Authenticating reverse proxy for SCIM 2.0: bearer JWT in, service-account API key out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /usr/local/bin/scimgate /scimgate
USER 65532:65532
# 8080: proxy (IdP traffic). 9090: admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
# scimgate handles SIGTERM itself (graceful drain up to server.shutdown_grace), also as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/scimgate"]
CMD ["serve", "--config", "/etc/scimgate/scimgate.toml"]
