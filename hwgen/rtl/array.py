"""The PE array: N PEs, each with two accumulator banks. Adders only with ternary PEs (the design);
``pe_kind="mac"`` puts int8 multiply-accumulate PEs in the same array, as the baseline for comparison.

Accumulator bank of PE p: one entry per (local output channel, tile pixel), address ``lo * tile + t``.
An entry is read, added to and written back; it is cleared to zero when it is drained, so a bank starts
the next tile from zero without a clearing pass. Compute fills one bank while the drain empties the other.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..contract.hardware import partial_width
from ..contract.encoding import WEIGHT_BITS, check_pe_kind
from .delay import delayed
from .extmem import CopyRegister
from .pe import PE_LATENCY, MacPE, TernaryPE, ternary_operands

# Cycles from a compute input of the array to its accumulator write: the operand register (ternary PEs
# get each lane's value and its negation), the per-PE copy register, the PE, the registered partial sum
# and the entry read (R), then the write (W).
COMPUTE_LATENCY = 1 + 1 + PE_LATENCY + 2
# Cycles from a drain input to ``accs``: the read address is registered, the entry read and registered.
DRAIN_LATENCY = 2


class PEArray(wiring.Component):
    """Ports (all in the ``sync`` domain):

    Compute, into bank ``bank``: when ``valid`` is high, ``acts`` (one word, L lanes) is broadcast;
    PE p adds ``codes[p]`` . ``acts`` into entry (``los[p]``, ``t``) (with ``max_mode``, the entry keeps the
    maximum of itself and that sum instead: max pooling on non-negative inputs, identity weights). The
    addition is written ``COMPUTE_LATENCY`` cycles later: the operands are formed once and registered, each
    PE takes its own copy of its inputs (a register per PE, so the broadcast word is not routed from one
    flip-flop to every adder tree), then its pipelined adder tree, then the entry is read and, a cycle
    later, written back with the sum; back-to-back issues into one entry accumulate (forwarding). Inputs
    may come straight from logic: all of them are registered first.

    Drain, from bank ``drain_bank`` (never the bank being computed into): when ``drain`` is high, every PE
    reads entry (``drain_lo``, ``drain_t``) the next cycle, and clears it in that cycle; the value appears
    on ``accs`` ``DRAIN_LATENCY`` cycles after ``drain`` (``accs_valid``).

    Each bank's read address is a register of its own, loaded with the drain or the compute address: the
    memory (distributed RAM on FPGAs) is read asynchronously from it.

    ``codes[p]`` is PE p's weight word: L lanes of ``encoding.WEIGHT_BITS[pe_kind]`` bits, 2-bit codes for
    ``TernaryPE``, int8 weights for ``MacPE``. Everything else is the same for both kinds.
    """

    def __init__(self, pe: int, lanes: int, act_bits: int, acc_bits: int, locals_: int, tile: int,
                 pe_kind: str = "ternary", spread: bool = False):
        check_pe_kind(pe_kind)
        if tile < 1 or tile & (tile - 1):
            raise ValueError(f"tile must be a power of two, not {tile}")
        if acc_bits < partial_width(lanes, act_bits, pe_kind):
            raise ValueError(f"acc_bits must be >= {partial_width(lanes, act_bits, pe_kind)}, not {acc_bits}")
        self.pe, self.lanes, self.act_bits, self.acc_bits = pe, lanes, act_bits, acc_bits
        self.locals, self.tile, self.pe_kind = locals_, tile, pe_kind
        self.spread = spread  # PEs far apart (maps in DRAM): each takes ``max_mode`` from a copy, a cycle late
        self.lo_bits = max(1, (locals_ - 1).bit_length())
        self.t_bits = max(1, (tile - 1).bit_length())
        super().__init__({
            "valid": In(1),
            "acts": In(unsigned(act_bits * lanes)),
            "act_signed": In(1),
            "max_mode": In(1),
            "codes": In(unsigned(WEIGHT_BITS[pe_kind] * lanes)).array(pe),
            "los": In(unsigned(self.lo_bits)).array(pe),
            "t": In(unsigned(self.t_bits)),
            "bank": In(1),
            "drain": In(1),
            "drain_bank": In(1),
            "drain_lo": In(unsigned(self.lo_bits)),
            "drain_t": In(unsigned(self.t_bits)),
            "accs": Out(signed(acc_bits)).array(pe),
            "accs_valid": Out(1),
        })

    def _addr(self, lo, t):
        return Cat(t, lo) if self.tile > 1 else lo  # lo * tile + t: tile is a power of two, no multiply

    def elaborate(self, platform):
        m = Module()
        depth = self.locals * self.tile
        drain_addr = self._addr(self.drain_lo, self.drain_t)
        draining = Signal()  # the cycle after ``drain``: the entries are read and cleared
        draining_bank = Signal()
        m.d.sync += [draining.eq(self.drain), draining_bank.eq(self.drain_bank), self.accs_valid.eq(draining)]
        if self.pe_kind == "ternary":
            operands = ternary_operands(self.acts, self.act_signed, self.lanes, self.act_bits)
        else:
            operands = Cat(self.acts, self.act_signed)
        shared = delayed(m, Cat(operands, self.t, self.valid, self.bank), 1, "operands")
        for p in range(self.pe):
            if self.pe_kind == "ternary":
                pe = m.submodules[f"pe{p}"] = TernaryPE(self.lanes, self.act_bits)
                pe_ports = [pe.operands, pe.codes]
            else:
                pe = m.submodules[f"pe{p}"] = MacPE(self.lanes, self.act_bits)
                pe_ports = [pe.acts, pe.act_signed, pe.weights]
            # this PE's own copy of everything it is sent: no flip-flop drives every PE
            own = delayed(m, Cat(self.codes[p], self.los[p]), 1, f"pe_word{p}")
            copy = m.submodules[f"inputs{p}"] = CopyRegister(len(shared) + len(own))
            lo_c, t_c, valid_c, bank_c = (Signal.like(f, name=f"{f.name}_copy{p}")
                                          for f in (self.los[p], self.t, self.valid, self.bank))
            codes_c = Signal(len(self.codes[p]), name=f"codes_copy{p}")
            m.d.comb += [copy.d.eq(Cat(shared, own)),
                         Cat(Cat(*pe_ports[:-1]), t_c, valid_c, bank_c, codes_c, lo_c).eq(copy.q),
                         pe_ports[-1].eq(codes_c)]
            # Accumulation in two stages: the entry is read from a registered address into ``acc_in`` (R),
            # the next cycle the sum is formed and written back (W). An issue that hits the entry the issue
            # before it is writing takes that sum instead of the stale word (forwarding), so the loop that
            # accumulates back-to-back hits is an adder and a mux, with no memory read in it.
            compute_addr = delayed(m, self._addr(lo_c, t_c), PE_LATENCY, f"compute_addr{p}")
            valid_r = delayed(m, valid_c, PE_LATENCY + 1, f"valid_r{p}")
            bank_r = delayed(m, bank_c, PE_LATENCY + 1, f"bank_r{p}")
            addr_r = delayed(m, compute_addr, 1, f"addr_r{p}")
            valid_w, bank_w, addr_w = (delayed(m, v, 1, f"{n}_w{p}") for v, n in (
                (valid_r, "valid"), (bank_r, "bank"), (addr_r, "addr")))
            partial_w = delayed(m, pe.sum, 2, f"partial{p}")
            acc_in = Signal(signed(self.acc_bits), name=f"acc_in{p}")
            max_mode = self.max_mode
            if self.spread:  # it holds through a layer, set cycles before its first issue
                mode = m.submodules[f"max_mode{p}"] = CopyRegister(1)
                m.d.comb += mode.d.eq(self.max_mode)
                max_mode = mode.q
            new = Mux(max_mode, Mux(partial_w > acc_in, partial_w, acc_in), acc_in + partial_w)
            reads = []
            for b in range(2):
                mem = m.submodules[f"acc{p}_{b}"] = Memory(shape=signed(self.acc_bits), depth=depth, init=[])
                wr = mem.write_port()
                rd = mem.read_port(domain="comb")
                addr = Signal(range(max(2, depth)), name=f"acc_addr{p}_{b}")
                m.d.sync += addr.eq(Mux(self.drain & (self.drain_bank == b), drain_addr, compute_addr))
                reads.append(rd.data)
                clear = draining & (draining_bank == b)
                m.d.comb += [rd.addr.eq(addr), wr.addr.eq(Mux(clear, addr, addr_w)), wr.data.eq(Mux(clear, 0, new)),
                             wr.en.eq(clear | (valid_w & (bank_w == b)))]
            hit = valid_w & (bank_w == bank_r) & (addr_w == addr_r)
            m.d.sync += [acc_in.eq(Mux(hit, new, Mux(bank_r, reads[1], reads[0]))),
                         self.accs[p].eq(Mux(draining_bank, reads[1], reads[0]))]
        return m
