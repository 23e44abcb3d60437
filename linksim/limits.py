"""Physical and numerical limits beyond which a scenario's numbers mean nothing.

:meth:`linksim.Scenario.validate` refuses values past them in one line naming the limit, so that a
sweep (``--over speed_kmh=1e6``, ``--over tx_power_dbw=500``) never records a number that only
measures aliasing or rounding.
"""
from __future__ import annotations

import math

import numpy as np

#: speed of light [m/s]
SPEED_OF_LIGHT = 299_792_458.0


def max_speed_kmh(carrier_hz: float, sample_spacing_s: float) -> float:
    r"""The speed at which the maximum Doppler shift reaches the Nyquist rate of the CSI samples.

    .. math::
        f_D = \frac{v f_c}{c} < \frac{1}{2 T_s}
        \quad\Longleftrightarrow\quad
        v < v_{\max} = \frac{c}{2 f_c T_s}

    The channel's Doppler spectrum spans :math:`[-f_D, f_D]`; sampled every :math:`T_s` it is
    unambiguous only below the Nyquist rate, so faster users alias (the sampled channel then looks
    like a slower one, and every prediction number is meaningless). Speeds must stay strictly below.

    :param carrier_hz: carrier frequency :math:`f_c` [Hz]
    :param sample_spacing_s: CSI sample spacing :math:`T_s` [s]
    :output v_max: float. :math:`v_{\max}` in km/h (449.7 km/h at 2.4 GHz and 0.5 ms).

    .. rubric:: Examples

    .. code-block:: python

        from linksim.limits import max_speed_kmh
        max_speed_kmh(2.4e9, 0.5e-3)      # 449.69...
    """
    return 3.6 * SPEED_OF_LIGHT / (2 * carrier_hz * sample_spacing_s)


def power_limits_db(precision: str) -> tuple[float, float]:
    r"""The largest power ratio and absolute power, in dB, that ``precision`` represents meaningfully.

    .. math::
        \Big|10\log_{10}\frac{P}{\sigma^2}\Big| \le 10\log_{10}\frac{1}{\epsilon},
        \qquad
        |P_{\mathrm{dBW}}|,\ |\sigma^2_{\mathrm{dBW}}| \le 10\log_{10}\sqrt{x_{\max}}

    with :math:`\epsilon` the machine epsilon and :math:`x_{\max}` the largest finite number of the
    real dtype (float32 for ``"single"``, float64 for ``"double"``).

    *Ratio.* A precoder returns :math:`W` in the block's dtype, each entry with relative rounding
    up to :math:`\epsilon/2`; the residual inter-user leakage it leaves has a power of order
    :math:`(\epsilon/2)^2 \kappa^2 P` (:math:`\kappa` the channel's condition number), an impairment
    the noise :math:`\sigma^2` must dominate for a rate to measure the link. At
    :math:`P/\sigma^2 = 1/\epsilon` that leakage is :math:`\epsilon\kappa^2/4` of the noise
    (below 1% up to :math:`\kappa \approx 580` in single precision), so the bound keeps rounding
    negligible with room for ill-conditioned channels; beyond it zero-forcing's rate stops growing
    with the power (single: measured saturated by 150 dB). The bound is 69.2 dB (single) and
    156.5 dB (double); at it the orderings ``zf <= wmmse <= dpc_bound`` still hold (tested).

    *Absolute.* Rates and the WMMSE/DPC updates form products of two powers (:math:`P` times a
    gain or a power, :math:`1/\sigma^2` times one), so each must lie within the square root of the
    dtype's range for every product to stay finite: 192.7 dB (single), 1541 dB (double).

    :param precision: ``"single"`` or ``"double"``
    :output limits: (max ratio [dB], max absolute power [dB re 1 W])

    .. rubric:: Examples

    .. code-block:: python

        from linksim.limits import power_limits_db
        power_limits_db("single")         # (69.2..., 192.6...)
    """
    info = np.finfo(np.float32 if precision == "single" else np.float64)
    return 10 * math.log10(1 / float(info.eps)), 5 * math.log10(float(info.max))


def check_limits(scenario) -> str | None:
    """The first limit a scenario breaks, as a one-line reason (without the file), or ``None``.

    Checks the users' highest speed against :func:`max_speed_kmh`, and every table holding both
    ``tx_power_dbw`` and ``noise_power_dbw`` against :func:`power_limits_db` of ``run.precision``.

    :param scenario: a :class:`~linksim.Scenario`
    :output reason: str or ``None``

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.limits import check_limits
        sc = linksim.load_scenario("scenarios/quick.toml")
        check_limits(sc)                  # None
    """
    ch = scenario.channel
    speed = max(ch.speed_kmh) if isinstance(ch.speed_kmh, tuple) else ch.speed_kmh
    v_max = max_speed_kmh(ch.carrier_hz, ch.sample_spacing_s)
    if speed >= v_max:
        return (f"channel.speed_kmh = {speed:g} is at or beyond {v_max:.1f} km/h, where the maximum "
                f"Doppler v*carrier_hz/c reaches the Nyquist rate 1/(2*sample_spacing_s) = "
                f"{1 / (2 * ch.sample_spacing_s):g} Hz of the CSI samples (they would alias)")
    ratio, absolute = power_limits_db(scenario.run.precision)
    prec = scenario.run.precision
    hint = "; run.precision = \"double\" reaches further" if prec == "single" else ""
    for name, table in scenario.sections.items():
        p, n = getattr(table, "tx_power_dbw", None), getattr(table, "noise_power_dbw", None)
        if p is None or n is None:
            continue
        for key, v in (("tx_power_dbw", p), ("noise_power_dbw", n)):
            if abs(v) > absolute:
                return (f"{name}.{key} = {v:g} is beyond +-{absolute:.1f} dBW, the powers {prec} "
                        f"precision represents{hint}")
        if abs(p - n) > ratio:
            return (f"{name}.tx_power_dbw - noise_power_dbw = {p - n:g} dB is beyond +-{ratio:.1f} dB, "
                    f"the power ratio P/sigma^2 {prec} precision resolves (past it rounding is no "
                    f"longer negligible beside the noise){hint}")
    return None
