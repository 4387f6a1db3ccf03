# syntax=docker/dockerfile:1
# The operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t waggle-operator:dev .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p waggle-operator --bin waggle-operator \
 && cp target/release/waggle-operator /usr/local/bin/waggle-operator

# TLS is rustls, so the runtime needs only libc and libgcc; distroless "nonroot" runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/waggle-operator /usr/local/bin/waggle-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/waggle-operator"]
