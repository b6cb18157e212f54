"""CRM webhooks to CloudEvents of the contract, one module per vendor."""
