# syntax=docker/dockerfile:1.7
# Example MCP backend (Python SDK, FastMCP) for the local compose stack. Build from the repo root:
#   docker build -f deploy/backend.Dockerfile -t mcp-example-backend:dev .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first so code edits do not reinstall them.
COPY examples/backend/requirements.txt examples/backend/requirements.txt
RUN pip install -r examples/backend/requirements.txt

COPY examples/backend/ examples/backend/

RUN useradd --system --uid 10002 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin backend
USER 10002

# Bound to 0.0.0.0 so the broker container can reach it over the compose network; the port is not published
# to the host. (FastMCP 1.x only enforces its Host-header/DNS-rebinding check when bound to loopback, and the
# broker sends Host = upstream authority anyway.) In Kubernetes the backend binds 127.0.0.1 inside the pod.
EXPOSE 8001
CMD ["python", "examples/backend/server.py", "--host", "0.0.0.0", "--port", "8001"]
