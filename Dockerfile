# The project's one image: every Airflow component of docker-compose.yaml, the MLflow server, the BentoML model
# service and the demo sources (the transactions simulator, the breast cancer CSV exports).
FROM apache/airflow:3.3.2-python3.11

# LightGBM's wheel links the system's OpenMP runtime (libgomp.so.1), which it does not carry (scikit-learn's and
# xgboost-cpu's wheels carry their own); without it `import lightgbm` fails. The base image is Debian bookworm's,
# and this is bookworm's package version, pinned as hadolint asks.
USER 0
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# The base image's airflow user (uid 50000, gid 0, as the image expects), named here so that nothing below
# runs as root by accident.
USER 50000:0

# The official image's way to add packages: naming apache-airflow at the image's own version keeps pip from
# moving Airflow while it installs the project's pins (requirements.txt resolves with apache-airflow==3.3.2).
COPY --chown=50000:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt

# What ships and nothing else: include/ holds the library, the model service, the configs, the bootstrap and the
# demo sources; devstack/ (make run's local stack, the lakeFS stand-in, the test seeds) stays out, as do tests/.
COPY --chown=50000:0 dags/ /opt/airflow/dags/
COPY --chown=50000:0 plugins/ /opt/airflow/plugins/
COPY --chown=50000:0 include/ /opt/airflow/include/
COPY --chown=50000:0 airflow_settings.yaml /opt/airflow/airflow_settings.yaml

# Compose's named volumes start as copies of these folders, and so belong to the airflow user from the start:
# the BentoML model store, the folder of the Airflow admin's password file, and the demo's CSV drops.
RUN mkdir -p /opt/airflow/bentoml /opt/airflow/auth /opt/airflow/.local/source

# include/ is a package beside dags/ and plugins/, which Airflow does not put on sys.path by itself.
ENV PYTHONPATH=/opt/airflow \
    BENTOML_HOME=/opt/airflow/bentoml \
    BENTOML_DO_NOT_TRACK=true
