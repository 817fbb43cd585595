"""Training stage: ternary quantization, PE-wise WPC group lasso, PE-balanced pruning, export to the IR."""
