# syntax=docker/dockerfile:1
#
# LLMux container image.
#
#   docker build -t llmux .
#   docker run --rm -p 4000:4000 -e OPENAI_API_KEY llmux
#
# Build stage: the release binary (LTO, one codegen unit, stripped), linked statically against
# glibc (`-C target-feature=+crt-static`) — the same flavour `.ci/run` builds and verifies (ldd
# says "not a dynamic executable"; tests/static_binary.rs runs it in an empty root). Runtime
# stage: distroless "static" (CA certificates, /etc/passwd with "nonroot", tzdata; no libc, no
# shell, no package manager; about 2 MB), running as the unprivileged "nonroot" user (65532).
# A static glibc cannot load NSS modules, so llmux resolves names itself (hickory-resolver:
# /etc/hosts, then the servers of /etc/resolv.conf, both of which the container runtime mounts).
#
# Size (BENCHMARKS.md "Binary and image size"): the binary is about 17 MB, the image about 19 MB
# uncompressed.
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
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# Set by buildx for each platform of a multi-arch build (amd64, arm64).
ARG TARGETARCH
WORKDIR /src
# The whole build context (see .dockerignore): sources, Cargo.lock, and the files read at compile
# time (grammar/ for the pest parser, providers/ and config/ for the embedded defaults).
COPY . .
# Cache mounts keep the registry and target/ between local builds; the binary is copied out of the
# cached target/ within the same RUN, because cache mounts are not part of the image.
# tools/build-static.sh holds the flags (static glibc; see there).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && install -D -m 0755 "$(bash tools/build-static.sh "$triple")" /out/llmux

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="llmux" \
      org.opencontainers.image.description="Fast, lean, OpenAI-compatible LLM gateway (LiteLLM-config compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/llmux /usr/local/bin/llmux
# Same layout as the repository: /etc/llmux/config/llmux.yaml and /etc/llmux/providers/*.
# WORKDIR makes a `providers` path relative to the working directory resolve to the bundled
# provider files, as it does when llmux runs from a checkout.
COPY config/ /etc/llmux/config/
# Only the mapping files (the golden cases under providers/tests stay out of the image).
COPY providers/*.llmux /etc/llmux/providers/
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
