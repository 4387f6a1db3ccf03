# syntax=docker/dockerfile:1
# The `waggle` image: one binary that runs a broker (`waggle broker`) or a gateway (`waggle gateway`),
# as the operator chooses by arguments. Build from the repository root:
#   docker build -f docker/waggle.Dockerfile -t waggle:dev .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# clang: RocksDB's bindings; protoc: the gRPC code generation.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p waggle --bin waggle \
 && cp target/release/waggle /usr/local/bin/waggle

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 waggle \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin waggle \
 && mkdir -p /var/lib/waggle /etc/waggle \
 && chown waggle:waggle /var/lib/waggle
COPY --from=build /usr/local/bin/waggle /usr/local/bin/waggle
# The operator's pods run as this user with a read-only root file system; data lives on the volume.
USER 10001:10001
WORKDIR /var/lib/waggle
# 26500 gateway gRPC, 8080 gateway REST, 26501 broker commands, 26502 broker internal, 9600 management.
EXPOSE 26500 8080 26501 26502 9600
ENTRYPOINT ["/usr/local/bin/waggle"]
CMD ["broker"]
