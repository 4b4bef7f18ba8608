"""What an export carries so the model runs outside qatune: one GGUF file (weights, tokenizer and chat template as
llama.cpp reads them), an Ollama Modelfile and the model card (a grounded run's index and rag's ask.py beside)."""
