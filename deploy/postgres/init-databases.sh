#!/usr/bin/env bash
# The databases of the compose stack on its one Postgres server: one per service that keeps state (airflow,
# mlflow, lakefs) and the pipeline's own (transactions: the demo source; inference_log: the model service's log
# and drift_monitor's history). The postgres image runs this once, on an empty data volume; it can run again.
#
# MLOPS_DATABASES: the names, separated by spaces. psql connects as POSTGRES_USER, over the socket in the
# container, or where PGHOST/PGPORT/PGPASSWORD point (tests/compose runs it against a test server).
set -euo pipefail

for database in ${MLOPS_DATABASES:?names of the databases to create}; do
  if [[ ! ${database} =~ ^[a-z_][a-z0-9_]*$ ]]; then
    echo "init-databases: '${database}' is not a plain lower-case name" >&2
    exit 1
  fi
  exists=$(psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres --tuples-only --no-align \
    --command "SELECT 1 FROM pg_database WHERE datname = '${database}'")
  if [[ -z ${exists} ]]; then
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
      --command "CREATE DATABASE \"${database}\" OWNER \"${POSTGRES_USER}\""
    echo "init-databases: created ${database}"
  fi
done
