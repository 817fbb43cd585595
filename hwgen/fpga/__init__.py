"""``hwgen synth``: FPGA parts and boards, fit estimates, the open tool flow and its reports."""
