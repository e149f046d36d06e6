# kube-baseline container image: registry.localplus.io/platform/kube-baseline:<version>.
#
# NOTE: this image cannot be built on the project's development machine (no container
# runtime, no registry access beyond the package registries); CI on a build host does it:
#   docker build -t registry.localplus.io/platform/kube-baseline:0.1.0 .
#
# Stage 1 builds a static binary against musl (rustls + aws-lc-rs, no OpenSSL); stage 2 is
# distroless "static": no shell, no package manager, non-root user 1000, matching the
# Deployment's securityContext (runAsUser 1000, readOnlyRootFilesystem).
FROM rust:1.91-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake clang \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY benches ./benches
RUN cargo build --locked --release --target x86_64-unknown-linux-musl --bin kube-baseline \
 && cp target/x86_64-unknown-linux-musl/release/kube-baseline /kube-baseline

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kube-baseline /usr/local/bin/kube-baseline
USER 1000:1000
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/kube-baseline"]
CMD ["serve", "--tls-cert", "/certs/tls.crt", "--tls-key", "/certs/tls.key"]
