"""Benchmarks printed side by side in one run (ratios, not absolute thresholds).

1. ChannelSource vs the raw Sionna calls on the same configuration     (goal: ratio >= 0.95)
2. linksim detection chain (LMMSE) vs a raw Sionna pipeline             (goal: ratio >= 0.9)
3. WMMSE (and the other precoders, the DPC bound) time per sample
4. The LLM agent (bench/llm.py, about 2 min on one thread; --skip-llm leaves it out): PRE inference
   vs WMMSE, prefix cache vs concat, training samples/s and MFU, training memory fp32 vs 4-bit

ratio = raw time / linksim time (1.0 = same speed, > 1 = linksim faster). Repeats are interleaved
and the median is reported, so background load hits both sides alike.

    python bench/run.py [--scenario scenarios/quick.toml] [--repeats 5] [--skip-llm] [--llm-repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import linksim
from linksim.chains import DetectionChain, PrecodingChain



def interleaved(fns: dict, repeats: int) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_channel(sc, batch, repeats):
    import sionna.phy
    from sionna.phy.channel import cir_to_ofdm_channel, gen_single_sector_topology, subcarrier_frequencies
    from sionna.phy.channel.tr38901 import UMa, PanelArray

    ch, cp = sc.channel, sc.prediction
    t = cp.history + cp.horizon
    bs = PanelArray(num_rows_per_panel=ch.bs_rows, num_cols_per_panel=ch.bs_cols, polarization="single",
                    polarization_type="V", antenna_pattern="38.901", carrier_frequency=ch.carrier_hz)
    ut = PanelArray(num_rows_per_panel=1, num_cols_per_panel=1, polarization="single",
                    polarization_type="V", antenna_pattern="omni", carrier_frequency=ch.carrier_hz)
    model = UMa(carrier_frequency=ch.carrier_hz, o2i_model="low", ut_array=ut, bs_array=bs,
                direction="uplink", enable_pathloss=False, enable_shadow_fading=False)
    freqs = subcarrier_frequencies(ch.num_subcarriers, ch.subcarrier_spacing_hz)
    v = ch.speed_kmh / 3.6

    def raw():
        sionna.phy.config.seed = 1
        topo = gen_single_sector_topology(batch, cp.num_users, "uma", indoor_probability=0.0,
                                          min_ut_velocity=v, max_ut_velocity=v)
        model.set_topology(*topo, los=False)
        a, tau = model(num_time_samples=t, sampling_frequency=1 / ch.sample_spacing_s)
        return cir_to_ofdm_channel(freqs, a, tau)

    src = linksim.ChannelSource(sc)
    med = interleaved({"raw": raw, "linksim": lambda: src.sample(batch, seed=1)}, repeats)
    drops = batch / med["linksim"]
    print(f"channel   {batch} drops x {t} times x {cp.num_users} users x {ch.num_bs_antennas} ant x "
          f"{ch.num_subcarriers} sc: raw Sionna {med['raw']*1e3:7.1f} ms, linksim "
          f"{med['linksim']*1e3:7.1f} ms  ratio {med['raw']/med['linksim']:.3f}  ({drops:.0f} drops/s)")


def bench_detection(sc, batch, repeats):
    from sionna.phy.mapping import Constellation, Mapper, SymbolDemapper
    from sionna.phy.mimo import lmmse_equalizer

    det = sc.detection
    sc = sc.replace(detection={"max_samples": batch, "min_samples": batch, "target_errors": 10**9},
                    run={"batch_size": batch})
    chain = DetectionChain(sc)
    point = chain.point()
    block = {"lmmse": linksim.blocks.get("lmmse", num_bits_per_symbol=det.bits_per_symbol)}
    h = chain.channels(point, 0, batch, det.num_users, 1)     # cached: both sides use the same drops
    hu = h[:, 0].permute(0, 3, 2, 1).reshape(-1, h.shape[3], h.shape[2])
    const = Constellation("qam", det.bits_per_symbol)
    mapper, demap = Mapper(constellation=const), SymbolDemapper(constellation=const, hard_out=True)
    nv = 10 ** (-det.snr_db / 10)
    g = torch.Generator().manual_seed(0)

    def raw():
        n, m, k = hu.shape
        bits = torch.randint(0, 2, (n, det.symbols_per_sample, k * det.bits_per_symbol), generator=g)
        x = mapper(bits.float())                                     # [n, T, K]
        noise = torch.complex(torch.randn(n, det.symbols_per_sample, m, generator=g),
                              torch.randn(n, det.symbols_per_sample, m, generator=g)) * (nv / 2) ** 0.5
        y = (hu.unsqueeze(1) @ x.unsqueeze(-1)).squeeze(-1) + noise  # [n, T, M]
        s = nv * torch.eye(m, dtype=torch.complex64)
        x_hat, no_eff = lmmse_equalizer(y, hu.unsqueeze(1), s)
        return demap(x_hat, no_eff)

    med = interleaved({"raw": raw, "linksim": lambda: chain.run_point(block, point)}, repeats)
    print(f"detection LMMSE, {batch} drops x {sc.channel.num_subcarriers} sc x {det.symbols_per_sample} "
          f"slots, K={det.num_users}: raw Sionna {med['raw']*1e3:7.1f} ms, linksim chain "
          f"{med['linksim']*1e3:7.1f} ms  ratio {med['raw']/med['linksim']:.3f}")


def bench_precoders(sc, batch, repeats):
    chain = PrecodingChain(sc)
    pre = sc.precoding
    h = chain.channels(chain.point(), 0, batch, pre.num_users, 1)[:, 0, :, :, sc.channel.num_subcarriers // 2]
    p_tx, nv = 10 ** (pre.tx_power_dbw / 10), 10 ** (pre.noise_power_dbw / 10)
    fns = {}
    for name in ("zf", "rzf", "wmmse", "dpc_bound"):
        blk = linksim.blocks.get(name, kind="precoder", scenario=sc)
        fns[name] = lambda b=blk: b(h, p_tx, nv)   # a reference (dpc_bound) returns its capacity
    med = interleaved(fns, repeats)
    line = ", ".join(f"{k} {v/batch*1e6:.1f} us" for k, v in med.items())
    print(f"precoders per sample (K={pre.num_users}, M={sc.channel.num_bs_antennas}, "
          f"P/sigma^2 = {pre.tx_power_dbw - pre.noise_power_dbw:g} dB): {line}; "
          f"wmmse / zf = {med['wmmse']/med['zf']:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="scenarios/quick.toml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip-llm", action="store_true", help="leave out the LLM-agent benches")
    ap.add_argument("--llm-repeats", type=int, default=3)
    a = ap.parse_args()
    sc = linksim.load_scenario(a.scenario)
    print(f"linksim bench on {a.scenario}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_channel(sc, a.batch, a.repeats)
    bench_detection(sc, a.batch, a.repeats)
    bench_precoders(sc, 256, a.repeats)
    if not a.skip_llm:
        import llm      # bench/llm.py, imported only when used: it loads the LLM stack
        llm.run(a.scenario, a.llm_repeats)


if __name__ == "__main__":
    main()
