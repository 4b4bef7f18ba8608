"""Data ingestion: read any supported spreadsheet or record file, clean it, split it without leakage,
augment the training split, and write RUN/data with a row-level report."""
