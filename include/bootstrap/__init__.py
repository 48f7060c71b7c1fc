"""What compose's airflow-init runs to set up Airflow: airflow_settings.yaml into the metadata database."""
