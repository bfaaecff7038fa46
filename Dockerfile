# tokengate: build with the official Rust image, run on a slim Debian as a non-root user.
#
#   docker build -t tokengate .
#   docker run --rm -p 8080:8080 -e JWT_SECRET=... \
#     -v "$PWD/tokengate.toml:/etc/tokengate/tokengate.toml:ro" \
#     -v tokengate-data:/var/lib/tokengate tokengate
#
# No config is baked in: mount yours at /etc/tokengate/tokengate.toml, with
# store.sqlite_path = "/var/lib/tokengate/tokengate.db" (the writable volume).

FROM rust:1-bookworm AS build
WORKDIR /usr/src/tokengate
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/tokengate /usr/local/bin/tokengate

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 tokengate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tokengate \
      --no-create-home --shell /usr/sbin/nologin tokengate \
 && mkdir -p /etc/tokengate /var/lib/tokengate \
 && chown 10001:10001 /var/lib/tokengate
COPY --from=build /usr/local/bin/tokengate /usr/local/bin/tokengate
COPY config/tokengate.toml /usr/share/doc/tokengate/tokengate.toml.example

ENV TOKENGATE_CONFIG=/etc/tokengate/tokengate.toml
WORKDIR /var/lib/tokengate
VOLUME ["/var/lib/tokengate"]
USER 10001:10001
# 8080: the proxy; 9090: health, readiness, metrics, admin API
# (set server.admin_listen = "0.0.0.0:9090" to reach it from outside the container).
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["tokengate"]
CMD ["serve", "--config", "/etc/tokengate/tokengate.toml"]
