"""qatune: fine-tune an open LLM on a spreadsheet of question/answer pairs, and prove it helped."""

__version__ = "0.1.0"
