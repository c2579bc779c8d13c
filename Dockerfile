# jobu's image: a release build on Debian, run on Debian slim as an unprivileged user.
#   docker build -t jobu .
#   docker run -d -p 127.0.0.1:8080:8080 -e JOBU__ADMIN__HOST=0.0.0.0 \
#     -e JOBU__ADMIN__AUTH_TOKEN=... -v jobu-data:/var/lib/jobu/data jobu      # all roles, SQLite
#   docker run -d -e JOBU__DATABASES__DEFAULT__URL=postgres://... jobu worker
# Settings come from /etc/jobu (the repository's config/) and JOBU__SECTION__KEY variables.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, against empty sources: this layer is rebuilt only when a manifest or
# the lock file changes, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml migration/
RUN mkdir -p src migration/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs migration/src/lib.rs \
    && cargo build --release --locked --bin jobu \
    && rm -rf src migration/src
COPY src src
COPY migration/src migration/src
# touch: the placeholder sources are newer than nothing cargo would otherwise notice.
RUN touch src/main.rs src/lib.rs migration/src/lib.rs \
    && cargo build --release --locked --bin jobu \
    && strip target/release/jobu

FROM debian:bookworm-slim
# tini runs as PID 1: it forwards SIGTERM to jobu and reaps the orphaned grandchildren of
# shell jobs, which jobu (not PID 1) would leave as zombies. tzdata: cron time zones come
# from chrono-tz, but shell jobs may read the system's.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system jobu \
    && useradd --system --gid jobu --home-dir /var/lib/jobu --shell /usr/sbin/nologin jobu \
    && mkdir -p /var/lib/jobu/data \
    && chown -R jobu:jobu /var/lib/jobu
COPY --from=build /src/target/release/jobu /usr/local/bin/jobu
COPY config /etc/jobu
USER jobu
# data/jobu.db (the SQLite default) and data/admin_token live here, relative to this folder.
WORKDIR /var/lib/jobu
VOLUME /var/lib/jobu/data
# JSON logs, one object per line. The shell handler runs commands taken from the database:
# opt in per deployment (JOBU__HANDLERS__SHELL__ENABLED=true).
ENV JOBU_CONFIG_DIR=/etc/jobu \
    JOBU__LOGGING__FORMAT=json \
    JOBU__HANDLERS__SHELL__ENABLED=false
# The admin API and console; set JOBU__ADMIN__HOST=0.0.0.0 and JOBU__ADMIN__AUTH_TOKEN to
# reach it from outside the container.
EXPOSE 8080
# jobu drains on SIGTERM (worker.shutdown_timeout_seconds, 30 s): give `docker stop -t` more.
STOPSIGNAL SIGTERM
# `jobu health` probes /health for `run` and `admin`; roles without the admin server
# override it (compose: `jobu health --role worker`, or --role dispatcher).
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["jobu", "health", "--timeout", "5"]
ENTRYPOINT ["/usr/bin/tini", "--", "jobu"]
CMD ["run"]
