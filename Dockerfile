# syntax=docker/dockerfile:1
# The `ferrite` image: one static binary serving every component (`ferrite controller-manager`,
# `ferrite scheduler`), on a distroless base as the non-root user 65532.
#
#   docker build -t ferrite:0.1.0 .        (or: buildah bud -t ferrite:0.1.0 .)
#
# The build stage is Alpine's Rust image, whose host target is *-unknown-linux-musl: binaries are
# statically linked by default, and ring's and mimalloc's C parts build with the musl gcc there.
# No --target is given, so the same file builds amd64 and arm64 images (docker buildx
# --platform linux/amd64,linux/arm64).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev gcc make
WORKDIR /src
# Only what the workspace needs to build (keeps target/ and .git out of the layer even without a
# .dockerignore). Every workspace member must be present for cargo to load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY runtime runtime
COPY controllers controllers
COPY scheduler scheduler
COPY bootstrap bootstrap
COPY crds crds
COPY e2e e2e
# target/ is a cache mount (incremental rebuilds), so the binary is copied out of it. A static
# binary has no program interpreter: the build fails if this one would need a libc at run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ferrite \
 && cp target/release/ferrite /ferrite \
 && ! readelf -l /ferrite | grep -q 'program interpreter' \
 && /ferrite --version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /ferrite /ferrite
USER 65532:65532
ENTRYPOINT ["/ferrite"]
