"""The eval stage: answers on held-out questions from base, a retrieval baseline and every fine-tuned
model, per-answer metrics, and bootstrap statistics comparing each model with base."""
