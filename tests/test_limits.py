"""Physical and numerical limits (linksim.limits): the values, and that a sweep at a limit still
measures the link (orderings, high-SNR slope) while one past it is refused in one line."""
import math

import pytest

from linksim.chains import PrecodingChain
from linksim.blocks import get
from linksim.errors import LinksimError
from linksim.limits import max_speed_kmh, power_limits_db


def test_limit_values_against_their_definitions():
    # f_D = v f_c / c = 1 / (2 T_s): 2.4 GHz, 0.5 ms -> 1000 Hz -> v = 1000 * c / f_c m/s
    assert max_speed_kmh(2.4e9, 0.5e-3) == pytest.approx(1000 * 299792458 / 2.4e9 * 3.6, rel=1e-12)
    assert power_limits_db("single") == pytest.approx((10 * math.log10(2 ** 23),
                                                       10 * math.log10(3.4028234663852886e38) / 2))
    assert power_limits_db("double") == pytest.approx((10 * math.log10(2 ** 52),
                                                       10 * math.log10(1.7976931348623157e308) / 2))


def _rates(scenario, tx_power_dbw):
    chain = PrecodingChain(scenario)
    point = chain.point("tx_power_dbw", tx_power_dbw)
    blocks = {n: get(n, "precoder", point.scenario) for n in ("zf", "rzf", "wmmse", "dpc_bound")}
    return {n: a["sum_rate"].result()[0] for n, a in chain.run_point(blocks, point).items()}


@pytest.mark.parametrize("precision", ["single", "double"])
def test_precoding_at_the_power_ratio_limit_still_measures_the_link(tiny_scenario, precision):
    noise = -10.0
    sc = tiny_scenario(precoding={"num_users": 2, "num_samples": 16, "noise_power_dbw": noise},
                       run={"precision": precision})
    top = noise + power_limits_db(precision)[0] - 1e-9
    at, below = _rates(sc, top), _rates(sc, top - 10)
    for r in (at, below):
        assert r["zf"] <= r["wmmse"] * (1 + 1e-9) and r["rzf"] <= r["wmmse"] * (1 + 1e-9)
        assert r["wmmse"] <= r["dpc_bound"]
    # still the high-SNR law: each of the K = 2 streams gains log2(10) bit per 10 dB
    assert at["zf"] - below["zf"] == pytest.approx(2 * math.log2(10), abs=0.02)
    with pytest.raises(LinksimError, match=r"tx_power_dbw - noise_power_dbw = .* beyond \+-"):
        sc.replace(precoding={"tx_power_dbw": top + 1e-6})


def test_speed_just_below_the_nyquist_limit_is_accepted(tiny_scenario):
    v = max_speed_kmh(2.4e9, 0.5e-3)
    assert tiny_scenario(channel={"speed_kmh": [10.0, v - 1e-6]}).channel.speed_kmh[1] < v
    with pytest.raises(LinksimError, match="449.7 km/h"):
        tiny_scenario(channel={"speed_kmh": [10.0, v]})
