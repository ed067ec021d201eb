# One image for every service of docker-compose.yml: the Airflow components, the MLflow server,
# the BentoML service and the Spark master/worker all run commands of this one environment, the
# same lock the native install (make install) uses.
#
# Build arguments (docker-compose.yml passes them from .env):
#   BASE_IMAGE     a Debian bookworm image: the official Python image by default; any bookworm
#                  (a local `debootstrap` import where no registry is reachable) works, Debian's
#                  python3.11 is installed when the base has none.
#   TORCH_INDEX    where the pinned torch comes from: the PyTorch CPU index by default; `local`
#                  takes the wheel from deploy/wheels/ (ignored by git) for machines that cannot
#                  reach that index.
# Extra CA certificates (a proxy's, a company's) go as *.crt files in deploy/ca-certificates/
# (ignored by git): pip and uv trust them during the build, and the services at run time.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# PYSPARK_PYTHON: Spark executors must start this interpreter (it has pyspark and the job's
# imports). The *_TRACK/*_STATS/*_ANALYTICS switches: no telemetry calls from a cluster.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    DBT_SEND_ANONYMOUS_USAGE_STATS=False \
    BENTOML_DO_NOT_TRACK=True \
    WHYLOGS_NO_ANALYTICS=True

# Java for Spark (driver in the Airflow scheduler's tasks, master, worker); procps for Spark's
# scripts; tini as PID 1 so signals reach the service and zombies are reaped; Debian's Python
# only on a base without one (the official image has its own in /usr/local).
COPY deploy/ca-certificates/ /usr/local/share/ca-certificates/extra/
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates openjdk-17-jre-headless procps tini \
 && if ! command -v python3.11 >/dev/null; then \
      apt-get install -y --no-install-recommends python3.11 python3.11-venv; fi \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first (a layer cached until the lock changes). torch comes from the CPU wheel
# index (or the local CPU wheel, whose "+cpu" build outranks PyPI's of the same version): PyPI's
# Linux build pulls several GB of CUDA libraries a CPU cluster never uses; the lock's pin
# (torch==X) is then already satisfied when uv installs the rest.
COPY requirements.lock ./
COPY deploy/wheels/ /tmp/wheels/
RUN python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir uv \
 && if [ "$TORCH_INDEX" = local ]; then ls /tmp/wheels/torch-*.whl >/dev/null \
      && torch_from="--find-links /tmp/wheels"; else torch_from="--index-url $TORCH_INDEX"; fi \
 && pip install --no-cache-dir $torch_from "$(grep -E '^torch==' requirements.lock)" \
 && UV_NATIVE_TLS=1 uv pip install --no-cache -r requirements.lock \
 && rm -rf /tmp/wheels

# The project, installed editable: pipelines.config finds dags/, dbt_project/ and feature_repo/
# relative to the package, so the package must stay in /app rather than in site-packages.
# Named one by one: deploy/wheels/ (a torch wheel, when there is one) must not land in /app.
COPY pyproject.toml README.md ./
COPY dags/ dags/
COPY dbt_project/ dbt_project/
COPY feature_repo/ feature_repo/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN uv pip install --no-cache --no-deps -e . \
 && useradd --create-home --uid 1000 fraud \
 && mkdir -p /var/fraud \
 && chown fraud:fraud /var/fraud

# All runtime state (lake, Airflow home and logs, Feast config, MLflow artifacts) lives under
# FRAUD_HOME, a volume shared by the services; /app stays read-only for the service user.
ENV FRAUD_HOME=/var/fraud
USER fraud
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "pipelines", "--help"]
