"""Generator of addition-only FPGA accelerators for PE-wise pruned ternary CNNs."""
__version__ = "0.1.0"
