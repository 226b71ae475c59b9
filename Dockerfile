# syntax=docker/dockerfile:1
# Two stages: build a wheel with its dependencies into a virtualenv, then copy only that virtualenv
# into a slim runtime image that runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY pyproject.toml setup.cfg README.md ./
COPY requirements/base.txt ./requirements/base.txt
COPY processor ./processor
COPY cancel_sandbox ./cancel_sandbox
# The versions the suite passed with (requirements/base.txt), not whatever is newest today.
RUN /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install -c requirements/base.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/cancel-processor --create-home processor
COPY --from=build /opt/venv /opt/venv
COPY config/processor.example.yaml /etc/cancel-processor/processor.example.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CANCEL_PROCESSOR_CONFIG=/etc/cancel-processor/processor.yaml \
    CANCEL_PROCESSOR_JOURNAL__URL=sqlite:////var/lib/cancel-processor/journal.db \
    CANCEL_PROCESSOR_HTTP__HOST=0.0.0.0
USER processor
WORKDIR /var/lib/cancel-processor
VOLUME ["/var/lib/cancel-processor"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["cancel-processor"]
CMD ["run"]
