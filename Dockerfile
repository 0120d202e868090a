# op-events-forwarder container image.
#   docker build -t op-events-forwarder .
#   docker run -v /srv/op-events:/var/lib/op-events-forwarder \
#     -v $PWD/op-events-forwarder.toml:/etc/op-events-forwarder/op-events-forwarder.toml:ro \
#     -v $PWD/token:/run/secrets/op-events-token:ro op-events-forwarder
# Point token_file at /run/secrets/op-events-token and state.path under /var/lib/op-events-forwarder.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
COPY tests tests
COPY examples examples
# The same build as the test command's.
RUN cargo build --locked --release && strip target/release/op-events-forwarder

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/op-events-forwarder op-events \
    && install -d -o op-events -g op-events -m 0750 /var/lib/op-events-forwarder /var/log/op-events
COPY --from=build /src/target/release/op-events-forwarder /usr/local/bin/op-events-forwarder
COPY config/op-events-forwarder.toml /etc/op-events-forwarder/op-events-forwarder.toml
USER 10001:10001
VOLUME ["/var/lib/op-events-forwarder"]
# SIGTERM stops fetching and finishes the batches in hand (exit 0); allow it the time to.
STOPSIGNAL SIGTERM
# The admin endpoint (/metrics, /healthz, /readyz, /status) on every interface of the
# container, for Prometheus and the orchestrator's probes.
ENV OP_EVENTS_FORWARDER__ADMIN__LISTEN=0.0.0.0:9464
EXPOSE 9464
# Alive while the process answers on its admin endpoint; the binary asks it itself.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/op-events-forwarder", "health", "--config", "/etc/op-events-forwarder/op-events-forwarder.toml"]
# The TLS roots are compiled in (webpki roots); the image needs no CA bundle.
ENTRYPOINT ["/usr/local/bin/op-events-forwarder"]
CMD ["run", "--config", "/etc/op-events-forwarder/op-events-forwarder.toml"]
