"""The engine's wide memory port: beats of ``vec_len`` bytes over ``vec_len / 4`` OBI lanes.

A *beat* is up to ``port_lanes`` consecutive 32-bit words starting at a word
address; lane ``i`` carries word ``i``. Each lane is an independent OBI
initiator (:func:`tinyattn.hw.obi.obi_signature`) with its own request queue,
so a lane whose grant is withheld does not hold back the others: lanes run
ahead of each other by up to ``LANE_QUEUE`` beats, and read data is
reassembled into whole beats, in issue order, by a per-lane data queue.

Contract:

- ``beats`` accepts a beat when every lane in its ``mask`` has queue room and,
  for a read, when fewer than ``MAX_READS`` read beats are outstanding (so data
  queues never overflow). Requests of a lane leave in issue order.
- ``reads`` delivers each read beat once, in issue order, with lanes outside
  its mask reading as zero. It has no ready: consumers always take it.
- ``idle`` is high when nothing is queued or outstanding.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .obi import obi_signature

__all__ = ["LANE_QUEUE", "MAX_READS", "WidePort", "beat_layout", "read_layout"]

#: Requests a lane may hold queued (including the one it presents).
LANE_QUEUE = 4
#: Read beats that may be outstanding (issued, not yet delivered).
MAX_READS = 8
#: Bits of the tag a read beat carries to its consumer.
TAG_BITS = 3


def beat_layout(cfg: ClusterConfig) -> data.StructLayout:
    lanes = cfg.engine.port_lanes
    return data.StructLayout(
        {
            "addr": unsigned(cfg.memory.size_bytes.bit_length() - 1),  # byte address, word aligned
            "we": unsigned(1),
            "mask": unsigned(lanes),  # lanes taking part
            "wdata": data.ArrayLayout(unsigned(32), lanes),
            "tag": unsigned(TAG_BITS),  # returned with the read data
        }
    )


def read_layout(cfg: ClusterConfig) -> data.StructLayout:
    return data.StructLayout(
        {
            "rdata": data.ArrayLayout(unsigned(32), cfg.engine.port_lanes),
            "tag": unsigned(TAG_BITS),
        }
    )


class WidePort(wiring.Component):
    """Beats in, OBI lanes out, reassembled read beats back."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        addr_bits = cfg.memory.size_bytes.bit_length() - 1
        super().__init__(
            {
                "beats": In(stream.Signature(beat_layout(cfg))),
                "reads": Out(stream.Signature(read_layout(cfg))),
                "lanes": Out(obi_signature(addr_bits)).array(cfg.engine.port_lanes),
                "idle": Out(1),
                # A lane presents a request that is not granted this cycle.
                "waiting": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        lanes = cfg.engine.port_lanes
        addr_bits = cfg.memory.size_bytes.bit_length() - 1
        m = Module()

        beat = self.beats.payload
        req_layout = data.StructLayout(
            {"addr": unsigned(addr_bits), "we": unsigned(1), "wdata": unsigned(32)}
        )
        # First-word-fall-through queues: a response arrives one cycle after its
        # grant, and the pending queue must already show the entry it pops then.
        req_q = [SyncFIFO(width=req_layout.size, depth=LANE_QUEUE) for _ in range(lanes)]
        # One bit per issued request: was it a read (its response carries data)?
        pending_q = [SyncFIFO(width=1, depth=LANE_QUEUE) for _ in range(lanes)]
        data_q = [SyncFIFO(width=32, depth=MAX_READS) for _ in range(lanes)]
        # Read beats in issue order: which lanes to collect, and the tag.
        order_q = SyncFIFO(width=lanes + TAG_BITS, depth=MAX_READS)
        for i in range(lanes):
            m.submodules[f"req_q{i}"] = req_q[i]
            m.submodules[f"pending_q{i}"] = pending_q[i]
            m.submodules[f"data_q{i}"] = data_q[i]
        m.submodules.order_q = order_q

        # -- accept a beat: all its lanes have room, and a read has a data slot.
        reads_out = Signal(range(MAX_READS + 1))
        room = Signal()
        m.d.comb += room.eq(1)
        for i in range(lanes):
            with m.If(beat.mask[i] & ~req_q[i].w_stream.ready):
                m.d.comb += room.eq(0)
        read_ok = (reads_out < MAX_READS) & order_q.w_stream.ready
        accept = Signal()
        m.d.comb += [
            self.beats.ready.eq(room & (beat.we | read_ok)),
            accept.eq(self.beats.valid & self.beats.ready),
        ]
        for i in range(lanes):
            entry = req_layout(req_q[i].w_stream.payload)
            m.d.comb += [
                entry.addr.eq(beat.addr + 4 * i),
                entry.we.eq(beat.we),
                entry.wdata.eq(beat.wdata[i]),
                req_q[i].w_stream.valid.eq(accept & beat.mask[i]),
            ]
        m.d.comb += [
            order_q.w_stream.payload.eq(beat.mask | (beat.tag << lanes)),
            order_q.w_stream.valid.eq(accept & ~beat.we),
        ]

        # -- each lane: present its queue head; on grant remember what to expect.
        waiting = []
        for i in range(lanes):
            obi = self.lanes[i]
            head = req_layout(req_q[i].r_stream.payload)
            # Only present a request when its response has a place to go, so req,
            # once raised, never has to drop before the grant.
            present = req_q[i].r_stream.valid & pending_q[i].w_stream.ready
            granted = present & obi.gnt
            m.d.comb += [
                obi.req.eq(present),
                obi.addr.eq(head.addr),
                obi.we.eq(head.we),
                obi.be.eq(0b1111),
                obi.wdata.eq(head.wdata),
                req_q[i].r_stream.ready.eq(granted),
                pending_q[i].w_stream.payload.eq(~head.we),
                pending_q[i].w_stream.valid.eq(granted),
                # Responses come in order: the oldest pending tells what this one is.
                pending_q[i].r_stream.ready.eq(obi.rvalid),
                data_q[i].w_stream.payload.eq(obi.rdata),
                data_q[i].w_stream.valid.eq(obi.rvalid & pending_q[i].r_stream.payload[0]),
            ]
            waiting.append(present & ~obi.gnt)

        # -- reassemble the oldest read beat once every lane of it has data.
        head_mask = order_q.r_stream.payload[:lanes]
        complete = Signal()
        m.d.comb += complete.eq(order_q.r_stream.valid)
        for i in range(lanes):
            with m.If(head_mask[i] & ~data_q[i].r_stream.valid):
                m.d.comb += complete.eq(0)
        out = self.reads.payload
        for i in range(lanes):
            m.d.comb += [
                out.rdata[i].eq(Mux(head_mask[i], data_q[i].r_stream.payload, 0)),
                data_q[i].r_stream.ready.eq(complete & head_mask[i]),
            ]
        m.d.comb += [
            out.tag.eq(order_q.r_stream.payload[lanes:]),
            self.reads.valid.eq(complete),
            order_q.r_stream.ready.eq(complete),
        ]
        delivered = complete
        with m.If(accept & ~beat.we & ~delivered):
            m.d.sync += reads_out.eq(reads_out + 1)
        with m.Elif(delivered & ~(accept & ~beat.we)):
            m.d.sync += reads_out.eq(reads_out - 1)

        busy = [
            req_q[i].r_stream.valid | pending_q[i].r_stream.valid | data_q[i].r_stream.valid
            for i in range(lanes)
        ]
        m.d.comb += [
            self.idle.eq(~order_q.r_stream.valid & ~_any(busy)),
            self.waiting.eq(_any(waiting)),
        ]
        return m


def _any(signals: list) -> object:
    out = signals[0]
    for s in signals[1:]:
        out = out | s
    return out
