"""Importers: CRM exports to CloudEvents JSON lines, each reporting what it did with each quirk."""
