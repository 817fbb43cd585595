"""``hwgen build``: Verilog, ROM images, manifest and reports, written atomically into an output folder."""
