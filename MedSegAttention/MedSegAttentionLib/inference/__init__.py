"""Inference: read and check the input, preprocess, run a card's pipeline (sliding windows, slices, cascades,
test-time mirroring), map results back onto the input grid, write the result folder."""
