# One image for every service of docker-compose.yml: the Airflow components, the MLflow server,
# the BentoML service and the Spark master/worker all run commands of this one environment, the
# same lock the native install (make install) uses.
FROM python:3.11-slim-bookworm

# PYSPARK_PYTHON: Spark executors must start this interpreter (it has pyspark and the job's
# imports). The *_TRACK/*_STATS/*_ANALYTICS switches: no telemetry calls from a cluster.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    DBT_SEND_ANONYMOUS_USAGE_STATS=False \
    BENTOML_DO_NOT_TRACK=True \
    WHYLOGS_NO_ANALYTICS=True

# Java for Spark (driver in the Airflow scheduler's tasks, master, worker); procps for Spark's
# scripts; tini as PID 1 so signals reach the service and zombies are reaped.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first (a layer cached until the lock changes). torch comes from the CPU wheel
# index: PyPI's Linux build pulls several GB of CUDA libraries a CPU cluster never uses; the
# lock's pin (torch==X) is then already satisfied when uv installs the rest.
COPY requirements.lock ./
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir uv \
 && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
      "$(grep -E '^torch==' requirements.lock)" \
 && uv pip install --no-cache -r requirements.lock

# The project, installed editable: pipelines.config finds dags/, dbt_project/ and feature_repo/
# relative to the package, so the package must stay in /app rather than in site-packages.
COPY . .
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
