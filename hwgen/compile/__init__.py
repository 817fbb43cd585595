"""IR to hardware program: the lowering to the engine's convolutions, the cycle model and the ROM images."""
