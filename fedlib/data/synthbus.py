"""SynthBUS: procedural breast-ultrasound-like images with a benign or malignant tumour.

A stand-in for the three breast-ultrasound sources of FedMix (BUSI, BUSIS, UDIAT) that needs
no download. Each image is a B-mode frame from a linear probe at the top edge:

* **tissue layers** from the skin down: a bright skin line, hypoechoic subcutaneous fat crossed
  by bright Cooper's ligaments, echogenic (brighter, heterogeneous) fibroglandular tissue, then
  retromammary fat and the striated pectoral muscle;
* **a hypoechoic (dark) tumour**: benign lesions are smooth ovals, wider than tall (a share are
  anechoic cysts); malignant ones are irregular and spiculated with a taller-than-wide tendency
  and sometimes an echogenic halo (BI-RADS descriptors, ACR BI-RADS Atlas 5th ed., 2013);
* **posterior features**: acoustic shadowing below the lesion (malignant tendency) or posterior
  enhancement (benign, always for cysts);
* **speckle**: the magnitude of a spatially correlated complex random field (Rayleigh-distributed
  amplitude, cells longer laterally than axially), multiplied onto the echogenicity, then log
  compressed.

Per-machine styles (:func:`bus_site_style`): overall gain, depth attenuation and how much the
time-gain compensation (TGC) makes up for it, TGC banding, speckle cell size, dynamic range.

Sites and class counts (``fedmix.md`` §1: train/test per site from the FedMix fold-1 files; the
benign/malignant mix from the datasets' own publications, spread over those totals):

=======  ======  =====  ============================  =========================================
client   source  split  benign / malignant            source publication
=======  ======  =====  ============================  =========================================
0        BUSI    train  349 / 167 (516)               Al-Dhabyani et al., Data in Brief 2020:
                 test   87 / 42 (129)                 437 benign, 210 malignant, 133 normal
1        BUSIS   train  244 / 205 (449)               Zhang et al., Healthcare 2022:
                 test   62 / 51 (113)                 306 benign, 256 malignant
2        UDIAT   train  88 / 42 (130)                 Yap et al., IEEE JBHI 2018 (dataset B):
                 test   22 / 11 (33)                  110 benign, 53 malignant
=======  ======  =====  ============================  =========================================

Normal images (no tumour, empty mask) exist only in BUSI; FedMix adds them only to clients
whose supervision is ``"none"``, and its breast setting (image, box, pixel) has none, so
:func:`synthbus` leaves them out unless ``include_normal=True``.

The count tables (``BUS_TRAIN_COUNTS``, ``BUS_TEST_COUNTS``, ``BUSI_NORMAL_COUNT``) and
:func:`bus_counts` are defined in :mod:`fedlib.data.recipes` with the other federation recipes
and importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedlib._validation import Interval, check_param
from fedlib.data._geometry import gaussian_kernels, soft_inside
from fedlib.data._render import check_render_inputs, render_in_chunks
from fedlib.data.base import FederatedDataset
from fedlib.data.partitions import federate_from_counts
from fedlib.data.recipes import (
    BUS_CLASSES,
    BUS_CLASSES_WITH_NORMAL,
    BUS_SITES,
    BUS_TEST_COUNTS,
    BUS_TRAIN_COUNTS,
    BUSI_NORMAL_COUNT,
    bus_counts,
)

__all__ = [
    "BUS_CLASSES",
    "BUS_CLASSES_WITH_NORMAL",
    "BUS_SITES",
    "BUS_TEST_COUNTS",
    "BUS_TRAIN_COUNTS",
    "BUSI_NORMAL_COUNT",
    "BUSSiteStyle",
    "bus_counts",
    "bus_site_style",
    "render_synthbus",
    "synthbus",
]

BENIGN, MALIGNANT, NORMAL = 0, 1, 2  # class ids, as in BUS_CLASSES_WITH_NORMAL
_STYLE_KEY = 0xB05


@dataclass(frozen=True)
class BUSSiteStyle:
    """Acquisition style of one ultrasound machine.

    Attributes
    ----------
    gain : float
        Overall brightness multiplier (after log compression).
    attenuation : float
        Tissue attenuation over the full depth (nepers of amplitude); 1.5 halves the far field
        about four times.
    tgc_compensation : float in [0, 1]
        Share of the attenuation the time-gain compensation makes up for.
    tgc_band_amp, tgc_bands : float, int
        Depth banding of the TGC slider: ``1 + amp * sin(2 pi * bands * z + phase)``.
    speckle_lateral_px, speckle_axial_px : float
        Speckle cell size (correlation sigma, pixels at 64 x 64).
    dynamic_range : float
        Log compression ``log(1 + D e) / log(1 + D)``; larger D = flatter, greyer image.
    """

    gain: float
    attenuation: float
    tgc_compensation: float
    tgc_band_amp: float
    tgc_bands: int
    speckle_lateral_px: float
    speckle_axial_px: float
    dynamic_range: float


_FIXED_STYLES = {
    # BUSI (GE LOGIQ E9): balanced, fine speckle
    0: BUSSiteStyle(1.0, 1.2, 0.7, 0.04, 3, 0.8, 0.45, 6.0),
    # BUSIS (several machines): brighter, coarser speckle, visible TGC bands
    1: BUSSiteStyle(1.12, 1.6, 0.5, 0.12, 4, 1.2, 0.6, 4.0),
    # UDIAT (Siemens ACUSON Sequoia): darker, strong attenuation, fine axial speckle
    2: BUSSiteStyle(0.85, 2.0, 0.35, 0.07, 2, 1.0, 0.4, 10.0),
}


def bus_site_style(site: int) -> BUSSiteStyle:
    """The machine style of site ``site``: fixed for 0 (BUSI), 1 (BUSIS), 2 (UDIAT); other
    ids get a seed-independent random style."""
    check_param("bus_site_style", "site", site, Interval(int, 0, None, closed="left"))
    if site in _FIXED_STYLES:
        return _FIXED_STYLES[site]
    rng = np.random.default_rng([_STYLE_KEY, int(site)])
    return BUSSiteStyle(
        gain=float(rng.uniform(0.8, 1.2)),
        attenuation=float(rng.uniform(0.8, 2.2)),
        tgc_compensation=float(rng.uniform(0.3, 0.8)),
        tgc_band_amp=float(rng.uniform(0.0, 0.14)),
        tgc_bands=int(rng.integers(2, 6)),
        speckle_lateral_px=float(rng.uniform(0.8, 1.5)),
        speckle_axial_px=float(rng.uniform(0.4, 0.8)),
        dynamic_range=float(rng.uniform(3.0, 12.0)),
    )


# --------------------------------------------------------------------------- rendering


def render_synthbus(
    labels,
    sites,
    *,
    image_size: int = 64,
    seed: int = 0,
    difficulty: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render breast-ultrasound-like frames, one tumour of class ``labels[i]`` per frame.

    Parameters
    ----------
    labels : 1-D int array-like
        0 benign, 1 malignant, 2 normal (no tumour: empty mask, box ``(0, 0, 0, 0)``).
    sites : 1-D int array-like, same length
        Machine style per image (:func:`bus_site_style`; 0 BUSI, 1 BUSIS, 2 UDIAT).
    image_size : int in [16, 512], default 64
    seed : int >= 0
        Output is a pure function of ``(labels, sites, image_size, difficulty, seed)``.
    difficulty : float in [0, 1], default 0.5
        0: large, dark, sharply bounded tumours; 1: smaller ones whose echogenicity is closer
        to the surrounding tissue.

    Returns
    -------
    images : float32 Tensor (N, 1, S, S) in [0, 1]
    masks : float32 Tensor (N, 1, S, S)
    boxes : int64 Tensor (N, 4), tight ``(x0, y0, x1, y1)``, inclusive-exclusive
    """
    labels, sites = check_render_inputs(
        "render_synthbus", labels, sites, image_size, difficulty, seed, 3
    )
    styles = {int(k): bus_site_style(int(k)) for k in np.unique(sites)}
    banks = {k: _speckle_bank(style, image_size, seed, k) for k, style in styles.items()}
    rng = np.random.default_rng(seed)

    def render(rows):
        return _render_chunk(
            labels[rows], sites[rows], styles, banks, image_size, float(difficulty), rng
        )

    return render_in_chunks(render, labels.size, image_size)


def _style(styles, sites, field):
    return np.array([getattr(styles[int(k)], field) for k in sites], dtype=np.float32)


def _render_chunk(labels, sites, styles, banks, size, difficulty, rng):
    n = labels.size
    f32 = np.float32
    col = lambda a: np.broadcast_to(np.asarray(a, dtype=f32), (n,))[:, None, None]  # noqa: E731
    px = size  # pixels per unit length (the frame is 1 x 1)
    grid = (np.arange(size, dtype=f32) + 0.5) / size
    x = np.broadcast_to(grid[None, None, :], (n, 1, size))  # lateral, 0..1
    z = np.broadcast_to(grid[None, :, None], (n, size, 1))  # depth, 0 = skin

    # ---- layer boundaries (depth as a function of the lateral position)
    def wavy(base, amp, freq_lo, freq_hi):
        freq = col(rng.uniform(freq_lo, freq_hi, n))
        phase = col(rng.uniform(0, 2 * np.pi, n))
        return col(base) + col(amp) * np.sin(2 * np.pi * freq * x + phase)

    skin = wavy(rng.uniform(0.03, 0.05, n), 0.004, 0.3, 1.0)
    fat_end = wavy(rng.uniform(0.14, 0.26, n), rng.uniform(0.01, 0.04, n), 0.5, 1.5)
    gland_end = wavy(rng.uniform(0.66, 0.8, n), rng.uniform(0.01, 0.05, n), 0.5, 1.5)
    muscle_top = gland_end + col(rng.uniform(0.04, 0.09, n))

    def below(boundary):  # soft step: 0 above the boundary, 1 below
        return soft_inside((boundary - z) * px)

    in_skin = below(skin - 0.012) - below(skin + 0.012)
    in_fat = below(skin + 0.012) - below(fat_end)
    in_gland = below(fat_end) - below(gland_end)
    in_muscle = below(muscle_top)
    # echogenicity of each layer; glandular tissue gets a low-frequency heterogeneous texture
    texture = np.sin(2 * np.pi * (col(rng.uniform(2, 5, n)) * x + col(rng.uniform(0, 1, n))))
    texture = texture * np.sin(
        2 * np.pi * (col(rng.uniform(3, 7, n)) * z + col(rng.uniform(0, 1, n)))
    )
    gland_echo = 0.42 + 0.1 * texture
    ligament_phase = col(rng.uniform(0, 1, n))
    ligament_slope = col(rng.uniform(-1.5, 1.5, n))
    ligament_freq = col(rng.uniform(3, 6, n))
    bend = 0.04 * np.sin(2 * np.pi * (4 * z + col(rng.uniform(0, 1, n))))  # curved, not ruled
    lig = np.sin(2 * np.pi * (ligament_freq * (x + ligament_slope * z + bend) + ligament_phase))
    ligaments = np.maximum(lig - 0.85, 0) * (1 / 0.15)  # thin bright lines
    fat_echo = 0.14 + 0.4 * ligaments
    striation = 0.5 + 0.5 * np.sin(2 * np.pi * col(rng.uniform(12, 18, n)) * (z - 0.02 * x))
    muscle_echo = 0.2 + 0.2 * striation
    echo = 0.85 * in_skin + fat_echo * in_fat + gland_echo * in_gland + 0.12 * (
        below(gland_end) - in_muscle
    )
    echo = echo + muscle_echo * in_muscle

    # ---- tumour
    alpha = np.zeros((n, size, size), dtype=f32)
    lesion = np.flatnonzero(labels != NORMAL)
    any_lesion = lesion.size > 0
    if lesion.size == n:
        lesion = slice(None)  # the usual case: views, no copies
    if any_lesion:
        sl = lambda a: a[lesion]  # noqa: E731
        a_les, posterior, halo, inner_echo = _tumour(
            labels[lesion], sl(fat_end), sl(gland_end), sl(x), sl(z), size,
            difficulty, rng,
        )  # fmt: skip
        alpha[lesion] = a_les
        e = echo[lesion]
        e *= posterior
        if halo is not None:
            e += 0.3 * halo * (1 - a_les)
        e += (inner_echo - e) * a_les
        echo[lesion] = e
    mask = alpha > 0.5

    # ---- acquisition: attenuation and TGC, speckle, log compression, gain
    att = col(_style(styles, sites, "attenuation"))
    comp = col(_style(styles, sites, "tgc_compensation"))
    band_amp = col(_style(styles, sites, "tgc_band_amp"))
    bands = col(_style(styles, sites, "tgc_bands"))
    depth_gain = np.exp(-att * (1 - comp) * z) * (
        1 + band_amp * np.sin(2 * np.pi * bands * z + col(rng.uniform(0, 2 * np.pi, n)))
    )
    echo = echo * depth_gain
    speckle = _speckle_from_banks(banks, sites, size, rng)
    dyn = col(_style(styles, sites, "dynamic_range"))
    img = np.log1p(dyn * echo * speckle) / np.log1p(dyn)
    img *= col(_style(styles, sites, "gain") * rng.uniform(0.92, 1.08, n))
    np.clip(img, 0.0, 1.0, out=img)
    return img.astype(f32, copy=False), mask.astype(f32)


def _speckle(n, size, lateral_px, axial_px, rng):
    """Rayleigh speckle with mean 1: |complex field| after an anisotropic Gaussian blur.

    The real and imaginary parts start as independent uniform noise; blurring makes them
    near-Gaussian and spatially correlated (cell size = the blur), so the magnitude follows a
    Rayleigh law, the amplitude statistics of fully developed speckle.
    """
    field = rng.random((2 * n, size, size), dtype=np.float32)
    field -= 0.5
    axial = torch.from_numpy(gaussian_kernels(np.tile(axial_px, 2)))
    lateral = torch.from_numpy(gaussian_kernels(np.tile(lateral_px, 2)))
    ra, rl = axial.shape[1] // 2, lateral.shape[1] // 2
    x = torch.from_numpy(field)[None]
    x = F.conv2d(F.pad(x, (0, 0, ra, ra)), axial[:, None, :, None], groups=2 * n)
    x = F.conv2d(F.pad(x, (rl, rl, 0, 0)), lateral[:, None, None, :], groups=2 * n)
    x = x[0]
    amplitude = torch.sqrt(x[:n] ** 2 + x[n:] ** 2).numpy()
    amplitude /= amplitude.mean(axis=(1, 2), keepdims=True)
    return amplitude


_BANK_FIELDS = 8  # speckle fields per site and call; images crop them at random offsets


def _speckle_bank(style: BUSSiteStyle, size: int, seed: int, site: int) -> np.ndarray:
    """Speckle fields of size (2S, 2S) in one site's cell size, seeded by (seed, site).

    Images take random crops and flips of these fields (speckle does not depend on the image
    content), which costs far less than drawing a new correlated field per image.
    """
    rng = np.random.default_rng([seed, site, _STYLE_KEY])
    scale = size / 64.0
    lateral = np.full(_BANK_FIELDS, style.speckle_lateral_px * scale, dtype=np.float32)
    axial = np.full(_BANK_FIELDS, style.speckle_axial_px * scale, dtype=np.float32)
    margin = int(np.ceil(3 * max(lateral[0], axial[0]))) + 1  # drop the zero-padded border
    fields = _speckle(_BANK_FIELDS, 2 * size + 2 * margin, lateral, axial, rng)
    return np.ascontiguousarray(fields[:, margin:-margin, margin:-margin])


def _speckle_from_banks(banks, sites, size, rng) -> np.ndarray:
    n = sites.size
    pick = rng.integers(0, _BANK_FIELDS, n)
    offset = rng.integers(0, size + 1, (n, 2))
    flip = rng.random((n, 2)) < 0.5
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        y, x = offset[i]
        patch = banks[int(sites[i])][pick[i], y : y + size, x : x + size]
        if flip[i, 0]:
            patch = patch[::-1]
        if flip[i, 1]:
            patch = patch[:, ::-1]
        out[i] = patch
    return out


def _tumour(labels, fat_end, gland_end, x, z, size, difficulty, rng):
    """Coverage, posterior factor, halo and inner echogenicity of each tumour."""
    n = labels.size
    col = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # noqa: E731
    malignant = labels == MALIGNANT
    cyst = (~malignant) & (rng.random(n) < 0.3)
    size_factor = 1.2 - 0.5 * difficulty
    # size: half-width (lateral) and half-height (depth), in frame units
    radius = rng.uniform(0.09, 0.17, n) * size_factor
    aspect = np.where(malignant, rng.uniform(0.75, 1.25, n), rng.uniform(1.3, 2.0, n))
    half_w = radius * np.sqrt(aspect)
    half_h = radius / np.sqrt(aspect)
    top = np.mean(fat_end, axis=(1, 2)) + 0.02
    bottom = np.mean(gland_end, axis=(1, 2)) - 0.05
    cz = rng.uniform(top + half_h, np.maximum(bottom - half_h, top + half_h + 1e-3))
    cx = rng.uniform(0.2 + 0.5 * half_w, 0.8 - 0.5 * half_w)
    dx = (x - col(cx)) / col(half_w)
    dz = (z - col(cz)) / col(half_h)
    r = np.sqrt(dx * dx + dz * dz)
    theta = np.arctan2(dz, dx)
    # margin: smooth (benign) or lobulated and spiculated (malignant)
    lob_amp = np.where(malignant, rng.uniform(0.08, 0.18, n), rng.uniform(0.0, 0.04, n))
    spike_amp = np.where(malignant, rng.uniform(0.15, 0.35, n), 0.0)
    spike_count = col(rng.integers(9, 16, n))
    spikes = np.maximum(np.sin(spike_count * theta + col(rng.uniform(0, 6.3, n))), 0)
    spikes *= spikes
    spikes *= spikes  # sin^4: narrow spikes
    edge = 1 + col(lob_amp) * np.sin(
        col(rng.integers(3, 6, n)) * theta + col(rng.uniform(0, 6.3, n))
    ) + col(spike_amp) * spikes
    px = col(np.minimum(half_w, half_h) * size)
    coverage = soft_inside((r - edge) * px)
    # echogenic halo around some malignant masses
    halo_on = malignant & (rng.random(n) < 0.4)
    halo = None
    if halo_on.any():
        halo = np.zeros_like(coverage)
        halo[halo_on] = (soft_inside((r - edge - 0.35) * px) - coverage)[halo_on]
    # inner echogenicity: anechoic cysts, hypoechoic solid masses; contrast falls with difficulty
    base = np.where(cyst, 0.01, rng.uniform(0.03, 0.07, n)) + 0.16 * difficulty
    inner = col(base) * (1 + 0.25 * np.sin(3 * theta) * col(malignant))  # used inside only
    # posterior: shadow (malignant tendency) or enhancement (benign, always for cysts)
    u = rng.random(n)
    effect = np.where(
        malignant,
        np.where(u < 0.55, -1.0, np.where(u < 0.65, 1.0, 0.0)),
        np.where(cyst | (u < 0.45), 1.0, np.where(u < 0.55, -1.0, 0.0)),
    )
    strength = np.where(effect < 0, rng.uniform(0.45, 0.75, n), rng.uniform(0.3, 0.6, n))
    lateral = np.clip((1.05 - np.abs(dx)) / 0.45, 0, 1)  # soft-edged column under the lesion
    beneath = np.clip(dz - 0.2, 0, 1)
    posterior = 1 + col(effect * strength) * lateral * beneath
    return coverage, posterior, halo, inner


# --------------------------------------------------------------------------- federation


def synthbus(
    *,
    scale: float = 0.3,
    image_size: int = 64,
    difficulty: float = 0.5,
    test_frac: float | None = None,
    include_normal: bool = False,
    seed: int = 0,
) -> FederatedDataset:
    """A federated SynthBUS dataset: BUSI, BUSIS and UDIAT as three machine styles.

    Client ``k`` holds ``scale_template(BUS_TRAIN_COUNTS, scale)[k, c]`` training and
    ``scale_template(BUS_TEST_COUNTS, scale)[k, c]`` test images of class ``c`` (benign,
    malignant): the FedMix fold-1 sizes (train/test 516/129, 449/113, 130/33) scaled, so the
    pixel-labelled UDIAT client is the smallest. Default ``scale = 0.3`` gives 155 / 135 / 39
    training images.

    Parameters
    ----------
    scale : float > 0, default 0.3
    image_size : int, default 64
    difficulty : float in [0, 1], default 0.5
    test_frac : float in [0, 1), optional
        Default None keeps the FedMix split sizes; a value instead splits each scaled cell of
        train + test with ``n_test = min(round_half_up(test_frac * n), n - 1)``.
    include_normal : bool, default False
        Add BUSI's 133 normal frames (scaled; class ``"normal"``, empty masks) to client 0, split
        like its other classes. FedMix's breast setting does not use them.
    seed : int >= 0
    """
    owner = "synthbus"
    check_param(owner, "scale", scale, Interval(float, 0, None, closed="neither"))
    check_param(owner, "image_size", image_size, Interval(int, 16, 512))
    check_param(owner, "difficulty", difficulty, Interval(float, 0, 1))
    if test_frac is not None:
        check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="left"))
    if not isinstance(include_normal, bool):
        raise TypeError(f"{owner}: 'include_normal' must be a bool, got {include_normal!r}.")
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))
    train_counts, test_counts = bus_counts(
        scale, test_frac=test_frac, include_normal=include_normal
    )

    def render(labels, sites, render_seed):
        return render_synthbus(
            labels, sites, image_size=image_size, difficulty=difficulty, seed=render_seed
        )

    return federate_from_counts(
        render,
        train_counts,
        test_counts,
        class_names=BUS_CLASSES_WITH_NORMAL if include_normal else BUS_CLASSES,
        client_names=BUS_SITES,
        name=f"SynthBUS (scale {scale:g})",
        seed=seed,
        info={
            "scale": scale,
            "image_size": image_size,
            "difficulty": difficulty,
            "test_frac": test_frac,
            "include_normal": include_normal,
            "seed": seed,
            "train_counts": train_counts.tolist(),
            "test_counts": test_counts.tolist(),
        },
    )
