# opsbot: `opsbot serve` (HTTP on 8080: /healthz /readyz /metrics /audit /alertmanager).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY skills ./skills
COPY policies ./policies
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 opsbot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY policies ./policies
USER opsbot
ENV OPSBOT_POLICY_PATH=/app/policies \
    OPSBOT_DATABASE_URL=sqlite+aiosqlite:////home/opsbot/opsbot.db \
    OPSBOT_HTTP_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["opsbot"]
CMD ["serve"]
