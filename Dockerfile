# sluice: a two-stage build. The first stage compiles the release binary; the runtime
# stage is distroless (glibc, CA certificates, no shell, no package manager) and runs as
# the unprivileged `nonroot` user (uid 65532).
#
#   docker build --build-arg SLUICE_COMMIT=$(git rev-parse --short=12 HEAD) -t sluice .
#   docker run -p 8080:8080 -p 9090:9090 -v $PWD/config:/etc/sluice:ro -v sluice-state:/var/lib/sluice sluice
#
# Probes (see README "Container"): liveness GET /healthz on the metrics (9090) or admin
# (9901) port, readiness GET /readyz on the admin port; sluice drains on SIGTERM by itself
# (limits.drain_delay), so no preStop hook is needed.

FROM rust:1-bookworm AS build
# protoc: the etcd client's and the flagd gRPC services' code is generated at build time.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the context: the commit comes in as a build argument.
ARG SLUICE_COMMIT=unknown
ENV SLUICE_COMMIT=${SLUICE_COMMIT}
RUN cargo build --release --locked --bin sluice \
 && mkdir -p /out/var/lib/sluice \
 && cp target/release/sluice /out/sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# The working directory holds state/ (audit log, high-water mark): mount a volume here.
COPY --from=build --chown=65532:65532 /out/var/lib/sluice /var/lib/sluice
WORKDIR /var/lib/sluice
USER 65532:65532
# Data plane, metrics listener, admin API (bind them to 0.0.0.0 in sluice.yaml).
EXPOSE 8080 9090 9901
ENTRYPOINT ["/usr/local/bin/sluice", "run"]
CMD ["-c", "/etc/sluice/sluice.yaml"]
