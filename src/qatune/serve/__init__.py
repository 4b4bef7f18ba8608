"""`qatune serve`: an OpenAI-compatible API for the base model and every adapter of a run, and a page that
shows the base and a fine-tuned model's answers side by side."""
