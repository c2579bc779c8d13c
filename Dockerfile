# Two stages: build the release binary, then run it on a slim Debian with the shipped config.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin jobu

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/jobu jobu \
    && mkdir -p /var/lib/jobu/data && chown jobu /var/lib/jobu/data
COPY --from=build /src/target/release/jobu /usr/local/bin/jobu
COPY config /etc/jobu
USER jobu
WORKDIR /var/lib/jobu
ENV JOBU_CONFIG_DIR=/etc/jobu
# The shell handler runs commands taken from the database: opt in per deployment.
ENV JOBU__HANDLERS__SHELL__ENABLED=false
# The admin API and console (set JOBU__ADMIN__HOST=0.0.0.0 and JOBU__ADMIN__AUTH_TOKEN to
# reach it from outside the container).
EXPOSE 8080
ENTRYPOINT ["jobu"]
CMD ["run"]
