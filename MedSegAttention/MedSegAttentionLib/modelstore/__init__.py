"""The model store: model cards (schema-checked), the catalog, weights (safetensors + SHA-256), export, paths."""
