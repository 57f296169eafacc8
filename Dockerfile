# wsnorm container image: build with Rust on Debian bookworm, run on distroless (glibc, no shell).
#   docker build -t wsnorm .
#   docker run --rm -p 8080:8080 -p 9090:9090 -e WSNORM_BACKEND=host.docker.internal:8000 wsnorm
# See deploy/README.md for Kubernetes and for how this file was checked.

# ---- builder -------------------------------------------------------------------------------
# bookworm = glibc 2.36, the same as the runtime image below, so the binary's glibc symbols exist.
FROM rust:1-bookworm AS builder
WORKDIR /build

# cmake (pingora builds zlib-ng with it), installed by the same script CI and developers run.
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh

# The binary is built with profile-guided optimisation (scripts/build-pgo.sh: an instrumented
# build, a training run of the proxy on loopback, the optimised build; see BENCHMARKS.md), with
# the helpers of scripts/lib.sh. Nothing under bench/ is needed.
COPY scripts/lib.sh scripts/lib.sh
COPY scripts/build-pgo.sh scripts/build-pgo.sh

# Dependency layer: the instrumented build compiled from Cargo.toml + Cargo.lock alone, with stub
# sources standing in for every target the manifest declares, so editing src/ does not rebuild
# pingora & co. (The optimised build depends on the training's profile: it cannot be cached.)
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/Cargo.toml
COPY deploy/docker/stub-targets.sh deploy/docker/stub-targets.sh
# The testkit crate (a workspace member) holds the training's load tool and demo backend; its
# binaries are found by Cargo, not declared: stubbed here.
RUN sh deploy/docker/stub-targets.sh Cargo.toml \
    && (cd testkit && sh ../deploy/docker/stub-targets.sh Cargo.toml && rm src/main.rs) \
    && mkdir -p testkit/src/bin \
    && echo 'fn main() {}' > testkit/src/bin/wsnorm-load.rs \
    && echo 'fn main() {}' > testkit/src/bin/wsnorm-demo.rs \
    && bash scripts/build-pgo.sh --instrumented-only \
    && rm -rf src testkit/src

# The real sources. config/ too: src/config/mod.rs embeds config/wsnorm.toml with include_str!.
COPY src/ src/
COPY testkit/src/ testkit/src/
COPY config/ config/
# COPY keeps the files' own (possibly older) mtimes; touching the entry points makes cargo see
# them as newer than the stub build, so no stub binary is trained or shipped by mistake (the
# training checks every echo; `check` printing OK proves the binary is the real one).
RUN touch src/main.rs src/lib.rs testkit/src/lib.rs testkit/src/bin/*.rs \
    && bash scripts/build-pgo.sh \
    && ./target/pgo/wsnorm check --config config/wsnorm.toml > /tmp/check.txt \
    && grep -qx OK /tmp/check.txt

# ---- runtime -------------------------------------------------------------------------------
# distroless cc: glibc + libgcc_s (all that `ldd wsnorm` lists), CA certs, no shell, no package
# manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /build/target/pgo/wsnorm /usr/local/bin/wsnorm
# The documented default config as a file, so it can be replaced by a mount (a ConfigMap
# directory in Kubernetes) and hot-reloaded; wsnorm polls the file and also reloads on SIGHUP.
COPY config/wsnorm.toml /etc/wsnorm/wsnorm.toml

# The admin listener (/metrics, /healthz, /readyz) is loopback by default; in a container it
# must listen on all interfaces or kubelet probes and Prometheus cannot reach it.
# Logs are JSON by default when stderr is not a terminal, which is what log shippers want.
ENV WSNORM_CONFIG=/etc/wsnorm/wsnorm.toml \
    WSNORM_ADMIN=0.0.0.0:9090

# 8080: clients (plain HTTP + WebSocket). 9090: admin (metrics, health); keep it off the Service.
EXPOSE 8080 9090

# Numeric, so Kubernetes' runAsNonRoot can verify it (a user name cannot be checked).
USER 65532:65532

# No shell or curl in the image: wsnorm itself GETs /healthz and exits 0/1.
# (Kubernetes ignores HEALTHCHECK and uses the pod's probes; this is for docker / compose.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/wsnorm", "health", "--addr", "127.0.0.1:9090"]

# SIGTERM starts the drain: /readyz fails, WebSockets close with 1001, exit 0 within
# server.drain_timeout_secs (10 s by default; give `docker stop -t` / the pod's grace period more).
STOPSIGNAL SIGTERM

# Exec form: wsnorm is PID 1 and receives the signals itself. Arguments (a subcommand such as
# `check` or `test-rules FILE`, or flags) can be appended on `docker run`.
ENTRYPOINT ["/usr/local/bin/wsnorm"]
