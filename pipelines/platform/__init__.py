"""Running the platform's long-lived services (Airflow today) as tracked local processes."""
