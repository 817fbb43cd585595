"""What every stage agrees on: the IR and its validator, the group mapping, the bit encodings, the integer
reference, and the hardware contract (the sizes, words and images the Verilog is a function of)."""
