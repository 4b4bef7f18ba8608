"""The report stage: reads a run directory's files (never a stage's API) and writes RUN/report/."""
