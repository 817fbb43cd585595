"""The accelerator's Amaranth RTL: a function of the hardware contract (``hwgen.contract.hardware``) alone."""
