# syntax=docker/dockerfile:1
#
# LLMux container image.
#
#   docker build -t llmux .
#   docker run --rm -p 4000:4000 -e OPENAI_API_KEY llmux
#
# Build stage: the release binary, compiled against bookworm's glibc (the same glibc as the
# distroless runtime below). Runtime stage: distroless "cc" (glibc + libgcc, CA certificates, no shell,
# no package manager), running as the unprivileged "nonroot" user (uid/gid 65532).
#
# io_uring and seccomp
# --------------------
# Docker's default seccomp profile blocks io_uring_setup/io_uring_enter/io_uring_register since
# Docker 25 (moby/moby#46762; containerd 2.0's RuntimeDefault profile does the same), so inside a
# container started with the defaults io_uring_setup fails with EPERM. That is fine: llmux runs with
# `--io-driver auto` by default, detects this at start-up, logs one line and uses the epoll (legacy)
# driver instead. Nothing needs to be configured for the image to work.
#
# To let llmux use io_uring, run it with a seccomp profile that allows those three syscalls, e.g. the
# Docker default profile plus one rule (review the security trade-off first: io_uring bypasses
# per-syscall seccomp filtering of the operations it performs):
#
#   curl -fsSL https://raw.githubusercontent.com/moby/moby/v25.0.0/profiles/seccomp/default.json \
#     | jq '.syscalls += [{"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
#                          "action": "SCMP_ACT_ALLOW"}]' > llmux-seccomp.json
#   docker run --security-opt seccomp=llmux-seccomp.json -p 4000:4000 llmux
#
# (`--security-opt seccomp=unconfined` also works but disables all syscall filtering.) On Kubernetes,
# install the same file on the nodes under /var/lib/kubelet/seccomp/ and reference it with
# `seccompProfile: {type: Localhost, localhostProfile: ...}` (see helm/llmux/values.yaml).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole build context (see .dockerignore): sources, Cargo.lock, and the files read at compile
# time (grammar/ for the pest parser, providers/ and config/ if anything is embedded).
COPY . .
# Cache mounts keep the registry and target/ between local builds; the binary is copied out of the
# cached target/ within the same RUN, because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin llmux \
    && install -D -m 0755 target/release/llmux /out/llmux

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="llmux" \
      org.opencontainers.image.description="Fast, lean, OpenAI-compatible LLM gateway (LiteLLM-config compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/llmux /usr/local/bin/llmux
# Same layout as the repository: /etc/llmux/config/llmux.yaml and /etc/llmux/providers/*.
# WORKDIR makes a `providers` path relative to the working directory resolve to the bundled
# provider files, as it does when llmux runs from a checkout.
COPY config/ /etc/llmux/config/
COPY providers/ /etc/llmux/providers/
WORKDIR /etc/llmux
# Numeric user so that Kubernetes' runAsNonRoot check can verify it.
USER 65532:65532
EXPOSE 4000
# No HEALTHCHECK: the image has no shell or curl. Orchestrators probe GET /health/live and
# GET /health/ready on port 4000. On SIGTERM llmux stops accepting, reports not-ready and lets
# in-flight requests and streams finish up to its drain deadline (give `docker stop -t` enough time).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/llmux"]
CMD ["serve", "--config", "/etc/llmux/config/llmux.yaml"]
