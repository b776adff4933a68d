"""Energy per inference: data-type-dependent energy per operation and per DRAM byte.

The reference is Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm, 0.9 V):
a multiply-accumulate costs a multiply plus an add of that data type, a DRAM access
640 pJ per 32-bit word. Profiles carry these numbers scaled to their process
(``energy.pj_per_mac``, ``energy.pj_per_dram_byte``, with a source); :func:`scaled_table`
derives such a table from the 45 nm one. Static power x latency is added by the caller
(it depends on the latency model). Every byte a kernel moves is charged as a DRAM byte:
an upper bound on devices whose caches hold the activations.
"""
from __future__ import annotations

HOROWITZ_45NM_PJ = {   # ISSCC 2014, Fig. 1.1.9
    "int8_mult": 0.2, "int8_add": 0.03, "int32_add": 0.1,
    "fp16_mult": 1.1, "fp16_add": 0.4, "fp32_mult": 3.7, "fp32_add": 0.9,
    "dram_32bit_read": 640.0,
}


def scaled_table(scale: float) -> dict:
    """pj_per_mac / pj_per_dram_byte for a process ``scale`` x the 45 nm energies
    (int8 MACs accumulate in int32, as every int8 kernel does)."""
    h = HOROWITZ_45NM_PJ
    return {"pj_per_mac": {"fp32": scale * (h["fp32_mult"] + h["fp32_add"]),
                           "fp16": scale * (h["fp16_mult"] + h["fp16_add"]),
                           "int8": scale * (h["int8_mult"] + h["int32_add"])},
            "pj_per_dram_byte": scale * h["dram_32bit_read"] / 4}


def dynamic_energy_j(profile, graph) -> float:
    """MACs at their data type's energy + every byte moved at the DRAM energy; non-MAC
    kernels cost their bytes plus one fp32 add per 4 bytes they write."""
    pj_mac = profile.energy["pj_per_mac"]
    pj_byte = profile.energy["pj_per_dram_byte"]
    pj = sum(layer.macs * pj_mac.get(layer.dtype, pj_mac["fp32"])
             + (layer.weight_bytes + layer.act_bytes) * pj_byte for layer in graph.layers)
    add_pj = pj_mac["fp32"] * HOROWITZ_45NM_PJ["fp32_add"] / (
        HOROWITZ_45NM_PJ["fp32_mult"] + HOROWITZ_45NM_PJ["fp32_add"])
    pj += sum(k.bytes * pj_byte + k.bytes / 8 * add_pj for k in graph.kernels)
    return pj * 1e-12
