"""cocotb testbenches. They run inside the simulator and read case files only (no torch import)."""
