"""cocotb bench of the register block (``hw/regblock.py``), generated from the register map.

Nothing here lists a register by hand: the tests walk
:func:`tinyattn.hw.cluster_registers.register_map`, and
:class:`~tinyattn.verif.register_model.RegModel` predicts the block
from the same map, field by field according to the access mode and binding:

- ``RW``: storage with byte enables; bound fields must appear on the payload outputs;
- ``RO``: the bound input (or constant, or internal counter); writes change nothing;
- ``W1P``: a one-cycle pulse on the bound output in the cycle after the write's ``gnt``;
- ``W1C``: sticky flags set by their events, cleared by writing 1 (set wins).

plus the internal logic the map names (push pending/hold, done counters, MACS latch,
events, bus errors). Every cycle the :class:`Scoreboard` compares every output of the
block (``gnt`` of a waiting request, both stream handshakes and payloads, the pulses,
``irq``) with the model, and every read response with the model's value at its grant.
The bus is driven by :class:`~tinyattn.verif.obi.ObiInitiator` with random idle cycles
under :class:`~tinyattn.verif.obi.ObiChecker` (response exactly one cycle after ``gnt``).
The streams must keep ``valid`` and their payload until ``ready``; only a ``CLEAR`` of
the same unit may withdraw an offer.

Knobs: ``TINYATTN_IDLE`` (bus idle probability, default 0.3), ``TINYATTN_OPS`` (bus
operations of ``random_traffic``, default 1500).
"""

from __future__ import annotations

import random
from typing import Any

import cocotb

from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import Internal, register_map
from tinyattn.hw.job_layout import job_layout
from tinyattn.hw.regblock import regblock_signature
from tinyattn.hw.registers import Access, MappedRegister, MemoryMap, PortBinding
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_float,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.bits import unpack
from tinyattn.verif.obi import (
    BE_MASKS,
    CycleLoop,
    ObiChecker,
    ObiInitiator,
    ObiTransaction,
    obi_ports,
)
from tinyattn.verif.register_model import PortMap, RegModel, mask_bits

# ---------------------------------------------------------------------------- agents


class Inputs:
    """Drives every input of the block except the bus (a CycleLoop agent).

    ``values`` holds the level of each input; ``pulses`` one-cycle values by cycle;
    ``ready`` the probability that each stream's ``ready`` is high; ``churn`` the
    probability per cycle that the status and counter inputs take new random values.
    ``now`` is what was driven in the current cycle.
    """

    def __init__(self, dut: Any, ports: PortMap, rng: random.Random) -> None:
        self.dut = dut
        self.rng = rng
        self.widths = ports.inputs
        self.values = dict.fromkeys(self.widths, 0)
        self.values["engine__jobs__ready"] = self.values["dma__cmd__ready"] = 1
        self.ready = {"engine__jobs__ready": 1.0, "dma__cmd__ready": 1.0}
        self.pulses: dict[int, dict[str, int]] = {}
        self.churn = 0.0
        self.event_rate = 0.0
        self.now: dict[str, int] = {}
        self._driven: dict[str, int] = {}
        self.drive(0)

    def randomize_levels(self) -> None:
        for name, width in self.widths.items():
            if name.endswith(("done", "done_error", "ready")):
                continue
            self.values[name] = self.rng.getrandbits(width)

    def drive(self, cycle: int) -> None:
        rng = self.rng
        if self.churn and rng.random() < self.churn:
            self.randomize_levels()
        now = dict(self.values)
        for name, p in self.ready.items():
            now[name] = int(rng.random() < p)
        if self.event_rate:
            for name in ("engine__done", "dma__done"):
                now[name] = int(rng.random() < self.event_rate)
            now["dma__done_error"] = rng.getrandbits(1)
        now.update(self.pulses.pop(cycle, {}))
        for name, value in now.items():
            if self._driven.get(name) != value:
                getattr(self.dut, name).value = value
                self._driven[name] = value
        self.now = now

    def sample(self, cycle: int) -> None:
        pass


class Scoreboard:
    """Checks every output against :class:`RegModel` each cycle, then steps the model."""

    def __init__(self, tb: RegblockTB) -> None:
        self.tb = tb
        self.dut = tb.dut
        self.granted: list[ObiTransaction] = []
        self.accepted: dict[str, list[int]] = {"engine": [], "dma": []}
        self.offer: dict[str, tuple[int, int] | None] = {"engine": None, "dma": None}
        self.pulses: dict[str, int] = {}
        self.held_cycles = 0
        self.irq_cycles = 0
        self.outputs = ["irq", *(n for n in tb.model.outputs(tb.inputs.now))]
        self.outputs = sorted(set(self.outputs))
        self.handles = {n: getattr(self.dut, n) for n in self.outputs}
        # Every output a W1P field pulses (the map's, so a new one is counted too).
        self.pulse_outputs = sorted(
            {
                tb.ports.locate(f.hw)[0]
                for _, f in tb.mm.fields()
                if f.access is Access.W1P and isinstance(f.hw, PortBinding)
            }
        )

    def drive(self, cycle: int) -> None:
        pass

    def on_grant(self, txn: ObiTransaction) -> None:
        self.granted.append(txn)

    def sample(self, cycle: int) -> None:
        tb, model = self.tb, self.tb.model
        inp = tb.inputs.now
        want = model.outputs(inp)
        got = {n: int(h.value) for n, h in self.handles.items()}
        for name, value in want.items():
            if got[name] != value:
                raise AssertionError(
                    f"cycle {cycle}: {name} = {got[name]:#x}, the map says {value:#x} "
                    f"(seed {tb.seed})"
                )
        self.irq_cycles += got["irq"]
        for name in self.pulse_outputs:
            self.pulses[name] = self.pulses.get(name, 0) + got[name]
        # Streams: an offer stays, unchanged, until taken (a CLEAR may withdraw it).
        for unit, prefix, clear in (
            ("engine", "engine__jobs", "engine__clear"),
            ("dma", "dma__cmd", "dma__clear"),
        ):
            valid, payload = got[f"{prefix}__valid"], got[f"{prefix}__payload"]
            ready = inp[f"{prefix}__ready"]
            previous = self.offer[unit]
            kept = valid and previous is not None and payload == previous[1]
            if previous is not None and not got[clear] and not kept:
                raise AssertionError(
                    f"cycle {cycle}: {prefix} offer of cycle {previous[0]} withdrawn or "
                    f"changed before ready (seed {tb.seed})"
                )
            if valid and ready:
                self.accepted[unit].append(payload)
                self.offer[unit] = None
            elif valid:
                self.offer[unit] = previous if previous is not None else (cycle, payload)
            else:
                self.offer[unit] = None
        # The bus: a waiting request is held exactly when the map says so.
        port = tb.port
        if port.req:
            reg = model.register_at(port.addr)
            held = bool(port.we) and reg is not None and model.held(reg, inp)
            if bool(port.gnt) == held:
                raise AssertionError(
                    f"cycle {cycle}: gnt = {port.gnt} for a {'write' if port.we else 'read'} "
                    f"of {port.addr:#x}, expected {int(not held)} (seed {tb.seed})"
                )
            self.held_cycles += held
        txn = self.granted.pop() if self.granted else None
        assert not self.granted
        model.bus_error = 0
        if txn is not None:
            reg = model.register_at(txn.addr)
            model.bus_error = int(reg is None)
            if not txn.we:
                txn.tag = model.read(reg, inp) if reg is not None else 0
        model.step(inp, txn)


class RegblockTB:
    """Clock, reset, the bus initiator and checker, the inputs, the model and scoreboard."""

    def __init__(self, dut: Any, cfg: ClusterConfig, seed: int) -> None:
        self.dut = dut
        self.cfg = cfg
        self.seed = seed
        self.rng = random.Random(seed)
        # The block's ports, not the block: the Verilog under test was built from it.
        self.mm = register_map(cfg)
        self.addr_bits = self.mm.addr_bits
        self.ports = PortMap(regblock_signature(cfg, self.addr_bits))
        self.model = RegModel(self.mm, self.ports, self.addr_bits)
        self.loop = CycleLoop(dut.clk)
        [self.port] = obi_ports(dut, "bus")
        self.inputs = Inputs(dut, self.ports, self.rng)
        self.scoreboard = Scoreboard(self)
        self.bus = ObiInitiator(
            self.port,
            rng=self.rng,
            idle=env_float("TINYATTN_IDLE", 0.3),
            on_grant=self.scoreboard.on_grant,
            on_response=self._check_response,
        )
        self.checker = ObiChecker([self.port], latency=1)
        self.loop.add(self.inputs, self.bus, self.checker, self.scoreboard)
        self.reads = 0

    def _check_response(self, txn: ObiTransaction) -> None:
        if txn.we and self.port.rdata != 0:
            raise AssertionError(
                f"write of {txn.addr:#x} granted in cycle {txn.grant_cycle}: the response "
                f"carries rdata {self.port.rdata}, the block answers writes with 0 "
                f"(seed {self.seed})"
            )
        if not txn.we:
            self.reads += 1
            if txn.rdata != txn.tag:
                reg = self.model.register_at(txn.addr)
                name = reg.name if reg is not None else "unmapped"
                raise AssertionError(
                    f"read of {name} ({txn.addr:#x}) granted in cycle {txn.grant_cycle}: "
                    f"{txn.rdata:#010x}, the map says {txn.tag:#010x} (seed {self.seed})"
                )

    async def reset(self) -> None:
        await start_clock_and_reset(self.dut)

    async def settle(self, timeout: int = 100_000) -> None:
        """Run until every queued bus operation has completed."""
        await self.loop.run_until(
            lambda: not self.bus.busy, timeout=timeout, what=f"bus idle (seed {self.seed})"
        )

    def read(self, reg: MappedRegister) -> ObiTransaction:
        return self.bus.read(reg.address)

    def write(self, reg: MappedRegister, value: int, be: int = 0xF) -> ObiTransaction:
        return self.bus.write(reg.address, value, be)

    def registers(self, access: Access | None = None) -> list[MappedRegister]:
        regs = [r for r in self.mm.registers if access is None or r.register.access == access.value]
        return regs

    def unmapped(self, count: int) -> list[int]:
        """``count`` word addresses in the decoded range that hold no register."""
        mapped = {r.address for r in self.mm.registers}
        free = [a for a in range(0, 1 << self.addr_bits, 4) if a not in mapped]
        return self.rng.sample(free, count)

    def finish(self, name: str, **metrics: Any) -> None:
        self.checker.finish()
        write_metrics(name, {"cycles": self.loop.cycle, "reads": self.reads, **metrics})


def _push_register(mm: MemoryMap, unit: str) -> MappedRegister:
    push = Internal.ENGINE_PUSH if unit == "ENGINE" else Internal.DMA_PUSH
    return next(
        r for r in mm.registers if r.block.name == unit and any(f.hw == push for f in r.fields)
    )


def _staging(mm: MemoryMap, unit: str) -> list[MappedRegister]:
    pending = Internal.ENGINE_PUSH_PENDING if unit == "ENGINE" else Internal.DMA_PUSH_PENDING
    push = _push_register(mm, unit)
    return [r for r in mm.registers if r.register.stall_while == pending and r is not push]


# ---------------------------------------------------------------------------- tests


@cocotb.test()
async def reset_values(dut: Any) -> None:
    """Every register reads its reset value after reset (inputs at rest)."""
    tb = RegblockTB(dut, bench_config(), bench_seed())
    await tb.reset()
    txns = {reg: tb.read(reg) for reg in tb.mm.registers if reg.register.readable}
    await tb.settle()
    for reg, txn in txns.items():
        assert txn.rdata == reg.register.reset, (
            f"{reg.name}: {txn.rdata:#010x} after reset, the map says "
            f"{reg.register.reset:#010x} (seed {tb.seed})"
        )
    # Constants: CLUSTER registers hold the configuration.
    assert txns[tb.mm.register("CLUSTER", "N_PE")].rdata == tb.cfg.engine.n_pe
    assert txns[tb.mm.register("CLUSTER", "BANK_WORDS")].rdata == tb.cfg.memory.bank_words
    tb.finish("reset_values", registers=len(txns))


@cocotb.test()
async def rw_registers(dut: Any) -> None:
    """RW registers: random writes under random byte enables, read back, payload outputs."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 1)
    await tb.reset()
    regs = tb.registers(Access.RW)
    rng = tb.rng
    for _ in range(3):
        rng.shuffle(regs)
        for reg in regs:
            tb.write(reg, rng.getrandbits(32), rng.randrange(16))
            tb.read(reg)
    await tb.settle()
    # Full-word writes of every staging register, then the payloads field by field.
    values = {reg: rng.getrandbits(32) for reg in regs}
    for reg, value in values.items():
        tb.write(reg, value)
    await tb.settle()
    await tb.loop.run(2)
    layout = job_layout(tb.cfg)
    payload = unpack(layout, int(dut.engine__jobs__payload.value))
    for reg in regs:
        for f in reg.fields:
            if isinstance(f.hw, PortBinding) and f.hw.path[:3] == ("engine", "jobs", "payload"):
                got: Any = payload
                for part in f.hw.path[3:]:
                    got = got[part]
                want = values[reg] >> f.offset & mask_bits(f.width)
                assert got == want, f"job payload {f.hw}: {got:#x}, want {want:#x}"
    tb.finish("rw_registers", registers=len(regs))


@cocotb.test()
async def ro_and_unmapped(dut: Any) -> None:
    """Writes to RO registers change nothing; unmapped addresses read 0 and flag BUS_ERROR."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 2)
    await tb.reset()
    tb.inputs.randomize_levels()
    rng = tb.rng
    status = tb.mm.register("EVENTS", "IRQ_STATUS")
    bus_error = tb.mm.field("EVENTS", "IRQ_STATUS", "BUS_ERROR")
    for reg in tb.registers(Access.RO):
        tb.write(reg, rng.getrandbits(32), rng.randrange(1, 16))
        tb.read(reg)
    flags = tb.read(status)
    await tb.settle()
    assert not flags.rdata & bus_error.mask, "a write to an RO register set BUS_ERROR"
    for addr in tb.unmapped(8):
        write = rng.random() < 0.5
        txn = tb.bus.write(addr, rng.getrandbits(32)) if write else tb.bus.read(addr)
        flags = tb.read(status)
        await tb.settle()
        assert txn.we or txn.rdata == 0, f"unmapped {addr:#x} read {txn.rdata:#x}"
        assert flags.rdata & bus_error.mask, f"no BUS_ERROR after unmapped access {addr:#x}"
        tb.write(status, bus_error.mask)
        flags = tb.read(status)
        await tb.settle()
        assert not flags.rdata & bus_error.mask, "BUS_ERROR not cleared by W1C"
    tb.finish("ro_and_unmapped")


@cocotb.test()
async def mirrors_and_macs_latch(dut: Any) -> None:
    """RO registers mirror inputs that change at random; MACS_LO/HI read consistently."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 3)
    await tb.reset()
    rng = tb.rng
    tb.inputs.churn = 0.2
    ro = [r for r in tb.registers(Access.RO) if r.block.name != "CLUSTER"]
    for _ in range(40):
        tb.read(rng.choice(ro))
    await tb.settle()
    tb.inputs.churn = 0.0
    lo, hi = tb.mm.register("ENGINE", "MACS_LO"), tb.mm.register("ENGINE", "MACS_HI")
    for _ in range(6):
        first = rng.getrandbits(64)
        tb.inputs.values["engine__macs"] = first
        await tb.loop.run(2)
        t_lo = tb.read(lo)
        await tb.settle()
        tb.inputs.values["engine__macs"] = rng.getrandbits(64)  # changes between the reads
        t_hi = tb.read(hi)
        await tb.settle()
        got = t_hi.rdata << 32 | t_lo.rdata
        assert got == first, f"MACS read as {got:#x}, the counter was {first:#x} at LO"
    tb.finish("mirrors_and_macs_latch")


@cocotb.test()
async def pulses(dut: Any) -> None:
    """W1P fields pulse their outputs once per write of 1 with the byte enabled."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 4)
    await tb.reset()
    rng = tb.rng
    want: dict[str, int] = {}
    pulse_fields = [
        (reg, f)
        for reg, f in tb.mm.fields()
        if f.access is Access.W1P and isinstance(f.hw, PortBinding)
    ]
    for _ in range(60):
        reg, _ = rng.choice(pulse_fields)
        value, be = rng.getrandbits(32), rng.randrange(16)
        tb.write(reg, value, be)
        for f in reg.fields:
            if value & BE_MASKS[be] & f.mask and isinstance(f.hw, PortBinding):
                name = tb.ports.locate(f.hw)[0]
                want[name] = want.get(name, 0) + 1
        if rng.random() < 0.3:
            tb.read(reg)  # reads as 0 (checked by the scoreboard)
    await tb.settle()
    await tb.loop.run(2)
    for name, count in want.items():
        got = tb.scoreboard.pulses.get(name, 0)
        assert got == count, f"{name}: {got} pulse cycles for {count} writes of 1"
    tb.finish("pulses", **{k: v for k, v in want.items()})


async def _push_trial(tb: RegblockTB, unit: str) -> None:
    """A push into a full queue stays pending and holds staging writes; nothing is lost."""
    mm, rng = tb.mm, tb.rng
    ready = "engine__jobs__ready" if unit == "ENGINE" else "dma__cmd__ready"
    accepted = tb.scoreboard.accepted[unit.lower()]
    status = mm.register(unit, "STATUS")
    pending = mm.field(unit, "STATUS", "PUSH_PENDING")
    push, staging = _push_register(mm, unit), _staging(mm, unit)
    first = len(accepted)
    tb.inputs.ready[ready] = 0.0
    for reg in staging:
        tb.write(reg, rng.getrandbits(32))
    tb.write(push, 1)
    st = tb.read(status)
    await tb.settle()
    assert st.rdata & pending.mask, f"{unit}: PUSH_PENDING not set with the queue full"
    # A staging write now waits; so does a second push.
    held = tb.write(rng.choice(staging), rng.getrandbits(32))
    second = tb.write(push, 1)
    await tb.loop.run(20)
    assert held.grant_cycle < 0, f"{unit}: staging write granted while a push is pending"
    assert len(accepted) == first, f"{unit}: job taken while ready was low"
    tb.inputs.ready[ready] = 1.0
    await tb.settle()
    await tb.loop.run(4)
    assert second.grant_cycle > held.grant_cycle > 0
    assert len(accepted) == first + 2, f"{unit}: {len(accepted) - first} pushes taken, want 2"
    st = tb.read(status)
    await tb.settle()
    assert not st.rdata & pending.mask, f"{unit}: PUSH_PENDING still set"


@cocotb.test()
async def push_pending(dut: Any) -> None:
    """Pushes against a full queue, clear of a pending push, and the engine's clear drain."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 5)
    await tb.reset()
    mm = tb.mm
    for unit in ("ENGINE", "DMA", "ENGINE", "DMA"):
        await _push_trial(tb, unit)
    # CLEAR drops a pending push.
    for unit, ready in (("ENGINE", "engine__jobs__ready"), ("DMA", "dma__cmd__ready")):
        accepted = tb.scoreboard.accepted[unit.lower()]
        before = len(accepted)
        tb.inputs.ready[ready] = 0.0
        tb.write(_push_register(mm, unit), 1)
        tb.write(mm.register(unit, "CTRL"), mm.field(unit, "CTRL", "CLEAR").mask)
        await tb.settle()
        tb.inputs.ready[ready] = 1.0
        await tb.loop.run(10)
        assert len(accepted) == before, f"{unit}: a push survived CLEAR"
    # Engine: a push right after CLEAR waits until status.busy falls (the drain). The
    # engine is busy when the clear comes and stays busy while it drains.
    busy_bit = tb.ports.locate(tb.ports.bindings.engine.status.busy)[1]
    accepted = tb.scoreboard.accepted["engine"]
    before = len(accepted)
    tb.inputs.values["engine__status"] |= 1 << busy_bit
    clear = tb.write(mm.register("ENGINE", "CTRL"), mm.field("ENGINE", "CTRL", "CLEAR").mask)
    tb.write(_push_register(mm, "ENGINE"), 1)
    await tb.settle()
    await tb.loop.run(30)
    assert len(accepted) == before, "a push was offered while the engine drained a clear"
    tb.inputs.values["engine__status"] &= ~(1 << busy_bit)
    await tb.loop.run(5)
    assert len(accepted) == before + 1, "the push after the drain was not offered"
    assert clear.grant_cycle > 0
    tb.finish("push_pending", held_cycles=tb.scoreboard.held_cycles)


@cocotb.test()
async def events_and_irq(dut: Any) -> None:
    """Done events set the W1C flags and counters; irq follows the enabled flags."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 6)
    await tb.reset()
    rng, mm = tb.rng, tb.mm
    status, enable = mm.register("EVENTS", "IRQ_STATUS"), mm.register("EVENTS", "IRQ_ENABLE")
    counters = [mm.register("ENGINE", "JOBS_DONE"), mm.register("DMA", "DONE_COUNT")]
    for _ in range(30):
        # Random events in the next cycles; random status error codes.
        tb.inputs.values["engine__status"] = rng.getrandbits(tb.inputs.widths["engine__status"])
        start = tb.loop.cycle + 1
        for c in range(start, start + rng.randrange(1, 8)):
            if rng.random() < 0.5:
                tb.inputs.pulses[c] = {
                    "engine__done": rng.getrandbits(1),
                    "dma__done": rng.getrandbits(1),
                    "dma__done_error": rng.getrandbits(1),
                }
        tb.write(enable, rng.getrandbits(32), rng.randrange(16))
        for reg in (status, *counters):
            tb.read(reg)
        tb.write(status, rng.getrandbits(32), rng.randrange(16))  # W1C, may meet an event
        tb.read(status)
        await tb.settle()
    assert tb.scoreboard.irq_cycles > 0, "irq never rose"
    tb.finish("events_and_irq", irq_cycles=tb.scoreboard.irq_cycles)


@cocotb.test()
async def random_traffic(dut: Any) -> None:
    """Random reads and writes of every register and some unmapped words, with pushes,
    clears, events, back-pressure and changing inputs, all checked against the map."""
    tb = RegblockTB(dut, bench_config(), bench_seed() + 7)
    await tb.reset()
    rng = tb.rng
    tb.inputs.churn = 0.05
    tb.inputs.event_rate = 0.05
    tb.inputs.ready = {"engine__jobs__ready": 0.3, "dma__cmd__ready": 0.5}
    regs = list(tb.mm.registers)
    # Pushes and clears are common enough to meet each other and the held writes.
    weights = [6 if any(f.access is Access.W1P for f in r.fields) else 1 for r in regs]
    spare = tb.unmapped(4)
    ops = env_int("TINYATTN_OPS", 1500)
    for i in range(ops):
        if rng.random() < 0.02:
            addr = rng.choice(spare)
            txn = ObiTransaction(addr, rng.random() < 0.5, rng.getrandbits(32), 0xF)
            tb.bus.submit(txn)
            continue
        reg = rng.choices(regs, weights)[0]
        if rng.random() < 0.5:
            tb.read(reg)
        else:
            tb.write(reg, rng.getrandbits(32), rng.randrange(16))
        if i % 50 == 49:
            await tb.settle()
    await tb.settle()
    sb = tb.scoreboard
    assert sb.accepted["engine"] and sb.accepted["dma"], "no push was taken"
    assert sb.held_cycles > 0, "no write was ever held by a pending push"
    tb.finish(
        "random_traffic",
        ops=ops,
        jobs=len(sb.accepted["engine"]),
        descriptors=len(sb.accepted["dma"]),
        held_cycles=sb.held_cycles,
        irq_cycles=sb.irq_cycles,
    )
