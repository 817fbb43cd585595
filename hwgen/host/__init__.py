"""The host side of the UART link: the byte protocol and the serial-port runner (``hwgen run``)."""
