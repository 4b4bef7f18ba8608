"""What an export carries so the model runs outside qatune: one GGUF file (weights, tokenizer and chat template as
llama.cpp reads them), an Ollama Modelfile, the model card, and the grounded `ask.py` script."""
