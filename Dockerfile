# Multi-stage build: compile with the full Rust toolchain, ship only the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# How the bundled SQLite is compiled (.cargo/config.toml's [env]).
COPY .cargo .cargo
# sqlx-core, patched (vendor/sqlx-core/PATCHED.md): Cargo.toml's [patch.crates-io] needs it.
COPY vendor vendor
COPY src src
COPY migrations migrations
COPY config config
RUN cargo build --release --locked --bin cphub

FROM debian:bookworm-slim
# ca-certificates: TLS to PostgreSQL and to the CPH management API.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin cphub \
 && mkdir -p /data && chown cphub:cphub /data
COPY --from=build /src/target/release/cphub /usr/local/bin/cphub
# Defaults are built into the binary; this directory holds optional $CPHUB_ENV.toml files.
COPY config /etc/cphub/config
# No allocator settings: cphub links jemalloc, which glibc's MALLOC_ARENA_MAX does not
# touch, and its defaults meet the memory targets (docs/benchmarks.md).
ENV CPHUB_CONFIG_DIR=/etc/cphub/config \
    DATABASE_URL=sqlite:///data/cphub.db
USER cphub
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["cphub"]
CMD ["serve"]
