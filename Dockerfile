# The gateway image: built the way the README builds it, run as non-root without a shell.
#   docker build -t sluice:0.1.0 .
FROM rust:1.95-bookworm AS build
# The built-in filters are WebAssembly components, built and embedded by `cargo build`.
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bin sluice && cp target/release/sluice /sluice

FROM debian:bookworm-slim
COPY --from=build /sluice /usr/local/bin/sluice
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--kube", "--admin", "0.0.0.0:9090"]
