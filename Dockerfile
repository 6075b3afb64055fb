# One image for both processes: `python -m service` (default) and `python -m workers`.
# Build: docker build -t tidings .   Run: docker run -p 8080:8080 -e TIDINGS_REDIS_URL=redis://redis:6379/0 ...

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install '.[fast]'

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIDINGS_CONFIG=/app/config.toml \
    TIDINGS_HTTP_HOST=0.0.0.0 \
    TIDINGS_LOG_FORMAT=json
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tidings
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY config.toml /app/config.toml
USER tidings
EXPOSE 8080
# A non-loopback host needs auth.api_keys (TIDINGS_AUTH_API_KEYS) and a real redis.url.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TIDINGS_HTTP_PORT','8080'), timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
