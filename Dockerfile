# The bank (and its rewards program, /usr/local/bin/rewards) in a container
# image. docker-compose.yml runs them with PostgreSQL and RabbitMQ; the bank
# on its own:
#
#   docker build -t cqrs-bank .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgresql://... cqrs-bank
#
# The image has no PostgreSQL server, so DATABASE_URL is required (the
# embedded cluster of `bank` is for development machines).

# Build stage: the Debian 12 packages of scripts/setup that the bank's
# build needs (not the PostgreSQL server, Catch2 or the developer tools).
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ make cmake pkg-config \
      libpqxx-dev libboost-dev rapidjson-dev libabsl-dev libcli11-dev libssl-dev \
      libcurl4-openssl-dev librabbitmq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      -DCQRS_BUILD_TESTS=OFF -DCQRS_BUILD_BENCH=OFF \
 && cmake --build /build --target bank rewards -j "$(nproc)"

# Runtime stage: the shared libraries the bank and rewards link (libpq comes with
# libpqxx; libstdc++ and libc are in the base image) and the binary.
# tests/packaging/runtime_packages_test.sh checks this list against the
# libraries the built binary needs.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpqxx-6.4 libabsl20220623 libssl3 libcurl4 librabbitmq4 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin bank
COPY --from=build /build/example_app/bank /usr/local/bin/bank
# The bank's rewards program (docs/choreography.md): run it with
# `--entrypoint rewards` (docker-compose.yml's service rewards).
COPY --from=build /build/example_rewards/rewards /usr/local/bin/rewards
USER bank:bank
EXPOSE 8080
ENTRYPOINT ["bank"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
