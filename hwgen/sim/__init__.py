"""The Verilator harness: the simulator runner and the stream and UART testbenches' host sides."""
