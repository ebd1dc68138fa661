# syntax=docker/dockerfile:1.7
# One image for every service of the AI Dialogue Platform; the container's command picks the service:
#   adp-gateway | adp-dialogue | adp-llm-router | adp-cost | adp-alerts   (and `adp ...` for operator commands)
#
#   docker build -t adp:latest .
#   docker run --rm -e ADP_NATS_URL=nats://nats:4222 adp:latest adp-llm-router
#
# Stage 1 (build): uv installs the locked dependencies (uv.lock, --frozen) and the workspace packages into
# /app/.venv as regular (non-editable) installs. Stage 2 (runtime): the same pinned Python base, the venv
# and nothing else (no compiler, no uv, no source tree), running as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src

# Dependencies first (cached layer): only the lock file and the members' pyproject files.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY libs/cli/pyproject.toml libs/cli/pyproject.toml
COPY libs/client/pyproject.toml libs/client/pyproject.toml
COPY libs/testing/pyproject.toml libs/testing/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/dialogue/pyproject.toml services/dialogue/pyproject.toml
COPY services/llm-router/pyproject.toml services/llm-router/pyproject.toml
COPY services/cost/pyproject.toml services/cost/pyproject.toml
COPY services/alerts/pyproject.toml services/alerts/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-install-workspace

# Then the workspace packages themselves (migrations ship inside the packages).
COPY libs libs
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-editable

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ai-dialogue-platform" \
      org.opencontainers.image.description="AI Dialogue Platform services (gateway, dialogue, llm-router, cost, alerts)"
RUN groupadd --system --gid 10001 adp \
 && useradd --system --uid 10001 --gid adp --home-dir /app --no-create-home --shell /usr/sbin/nologin adp \
 && mkdir -p /app /var/log/adp /backups \
 && chown -R adp:adp /app /var/log/adp /backups
COPY --from=build --chown=adp:adp /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ADP_HTTP_HOST=0.0.0.0 \
    ADP_HTTP_PORT=8080 \
    ADP_LOG_DIR=/var/log/adp
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Admin HTTP /health (gateway: also the client API) on ADP_HTTP_PORT; exit 1 on 503 or no answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ADP_HTTP_PORT', '8080'), timeout=4)"]
# SIGTERM drains in-flight work (ADP_SHUTDOWN_GRACE_S); the services handle signals themselves as PID 1.
STOPSIGNAL SIGTERM
CMD ["adp-gateway"]
