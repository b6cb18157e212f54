"""The ingest gateway: CRM events over HTTP into the CRM topics (`stream-app ingest`)."""
