# opsbot: `opsbot serve` (HTTP on 8080: /slack/events /alertmanager /healthz /readyz /metrics /audit).
#
#   make image          (scripts/image.sh: docker, or buildah from a locally made Debian base)
#   docker build -t opsbot .
#
# DEBIAN is a Debian bookworm image: debian:bookworm-slim from a registry, or the base that
# scripts/image.sh makes with debootstrap where no registry is reachable (python3 is already in
# it, and the apt step below is skipped).
ARG DEBIAN=debian:bookworm-slim

FROM ${DEBIAN} AS base
RUN if ! dpkg -s python3 python3-venv ca-certificates >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# -- build: a virtualenv with opsbot and its dependencies (wheels only, no compiler) ----------
FROM base AS build
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
# wheels only (no compiler anywhere); no .pyc (see PYTHONPYCACHEPREFIX below)
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ONLY_BINARY=:all: \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/opsbot
WORKDIR /src
# dependencies first: this layer is reused until pyproject.toml changes
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >requirements.txt \
    && /opt/opsbot/bin/pip install -q --no-compile -r requirements.txt
COPY README.md ./
COPY bot ./bot
COPY skills ./skills
COPY policies ./policies
# setuptools (the build backend) is fetched into pip's isolated build environment only.
# Then what the image does not need at run time: pip and setuptools, the packages' tests, C
# sources, headers and type stubs, debug symbols of the extension modules (not of the libraries
# auditwheel vendored into *.libs/: patchelf-edited, strip breaks them), and the kubernetes
# package's second, asyncio copy of its generated client (kubernetes/aio, 66 MB; opsbot uses the
# synchronous client: tests/test_image.py fails if code under bot/ or skills/ imports it).
RUN PIP_ONLY_BINARY= /opt/opsbot/bin/pip install -q --no-compile --no-deps . \
    && /opt/opsbot/bin/pip uninstall -q -y pip setuptools \
    && cd /opt/opsbot/lib/python3.11/site-packages \
    && rm -rf kubernetes/aio \
    && find . -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && find . -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \
         -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -delete \
    && find . -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} +

# -- the image: Debian + python3, the virtualenv, a non-root user; no compiler, no pip --------
FROM base
ARG VERSION=dev
LABEL org.opencontainers.image.title="opsbot" \
      org.opencontainers.image.description="ChatOps bot: permission-scoped skills, human approvals, tamper-evident audit" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
RUN groupadd --gid 10001 opsbot \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /home/opsbot --create-home \
       --shell /usr/sbin/nologin opsbot \
    && install -d -o opsbot -g opsbot -m 0750 /data
COPY --from=build /opt/opsbot /opt/opsbot
# No .pyc ships (they would add 100 MB): each pod compiles what it imports once, into /tmp (an
# emptyDir in the chart; ~50 MB, a few seconds at the first start, none after a restart).
ENV PATH=/opt/opsbot/bin:$PATH \
    HOME=/home/opsbot \
    PYTHONUNBUFFERED=1 \
    PYTHONPYCACHEPREFIX=/tmp/pycache \
    MPLCONFIGDIR=/tmp/matplotlib \
    OPSBOT_DATABASE_URL=sqlite+aiosqlite:////data/opsbot.db \
    OPSBOT_CHART_DIR=/tmp/charts \
    OPSBOT_HTTP_PORT=8080
USER 10001:10001
WORKDIR /home/opsbot
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OPSBOT_HTTP_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["opsbot"]
CMD ["serve"]
