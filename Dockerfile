# syntax=docker/dockerfile:1.7
# BeTrace Checker: `betrace run` in a slim, non-root image that works with a read-only root.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/betrace
COPY pyproject.toml README.md ./
COPY checker ./checker
# --build-arg EXTRAS='[oscal]' adds what `evidence report --format oscal` needs (about 45 MB).
ARG EXTRAS=""
RUN /opt/betrace/bin/pip install ".${EXTRAS}" && /opt/betrace/bin/python -m compileall -q /opt/betrace

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 betrace \
 && useradd --system --uid 10001 --gid betrace --home-dir /var/lib/betrace --shell /usr/sbin/nologin betrace \
 && mkdir -p /etc/betrace/rules.d /var/lib/betrace \
 && chown betrace:betrace /var/lib/betrace
COPY --from=build /opt/betrace /opt/betrace
COPY rules.d /etc/betrace/rules.d
COPY deploy/docker/betrace.yaml /etc/betrace/betrace.yaml
ENV PATH=/opt/betrace/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/betrace
VOLUME ["/var/lib/betrace"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["betrace"]
CMD ["run", "--config", "/etc/betrace/betrace.yaml"]
