"""The mechanics behind SynthDerm: counter-based randomness, per-image parameters, noise
fields and the vectorized torch renderer.

The design facts (class appearance, site styles, class counts) and the public API live in
:mod:`fedlib.data.synthderm`; this module turns per-image class means and site styles into
pixels. Everything here is per image: no value of one image depends on another image in the
same chunk, which keeps an image's pixels independent of the batch it is rendered in.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.special import ndtri

Colour = tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Colours of skin and of the structures every class shares (sRGB in [0, 1], on fair skin under
# polarized dermoscopy)
# --------------------------------------------------------------------------------------------

SKIN_REFERENCE: Colour = (0.90, 0.70, 0.60)  # fair skin; lesion colours are given on it
_SKIN_TONE_RAMP = np.array(
    [  # tone 0 (very fair) .. 1 (dark), Fitzpatrick-like, as seen through a dermoscope
        (0.96, 0.80, 0.73),
        (0.90, 0.70, 0.60),
        (0.80, 0.58, 0.45),
        (0.62, 0.42, 0.30),
        (0.42, 0.28, 0.20),
    ]
)
_ERYTHEMA: Colour = (0.88, 0.50, 0.50)
_HAIR: Colour = (0.11, 0.08, 0.07)
_VESSEL_RED: Colour = (0.74, 0.13, 0.18)
_DOT_DARK: Colour = (0.20, 0.12, 0.09)
_DOT_WHITE: Colour = (0.97, 0.95, 0.88)
_DOT_RED: Colour = (0.78, 0.18, 0.22)
_WHITE_AREA: Colour = (0.95, 0.93, 0.92)
_RIDGE_FURROW: Colour = (0.40, 0.28, 0.19)
_LACUNA_RED: Colour = (0.72, 0.10, 0.18)
_LACUNA_PURPLE: Colour = (0.32, 0.08, 0.24)


# --------------------------------------------------------------------------------------------
# Counter-based randomness
# --------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1

# Streams: each kind of random quantity has its own, so adding draws to one leaves the others.
_STREAM_APPEARANCE, _STREAM_GEOMETRY, _STREAM_LATTICE, _STREAM_HAIRS = 1, 2, 3, 4
_STREAM_VESSELS, _STREAM_LACUNAE, _STREAM_BANK, _STREAM_ACQUISITION = 5, 6, 7, 8


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (Steele, Lea, Flood, OOPSLA 2014) on uint64 arrays."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniforms_bits(seed: int, indices: np.ndarray, stream: int, count: int) -> np.ndarray:
    """64 random bits per (image, slot), shape (N, count): a hash of (seed, index, stream, slot)."""
    key = np.array([seed & _MASK64, stream], dtype=np.uint64)
    key = _mix64(_mix64(key[:1]) ^ (key[1:] * _GOLDEN))
    base = _mix64(indices.astype(np.uint64) * _GOLDEN ^ key)
    slots = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    return _mix64(base[:, None] + slots[None, :])


def _uniforms(seed: int, indices: np.ndarray, stream: int, count: int) -> np.ndarray:
    """Uniforms in (0, 1) with 53-bit resolution, shape (N, count)."""
    bits = _uniforms_bits(seed, indices, stream, count) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) / float(1 << 53)


def _uniforms16(seed: int, indices: np.ndarray, stream: int, count: int) -> np.ndarray:
    """Coarser uniforms (16-bit resolution), four per hash: for noise lattices. (N, count)."""
    words = _uniforms_bits(seed, indices, stream, (count + 3) // 4)
    parts = [(words >> np.uint64(16 * j)) & np.uint64(0xFFFF) for j in range(4)]
    values = np.stack(parts, axis=-1).reshape(indices.shape[0], -1)[:, :count]
    return (values.astype(np.float64) + 0.5) / 65536.0


def _normals(seed: int, indices: np.ndarray, stream: int, count: int) -> np.ndarray:
    return ndtri(_uniforms(seed, indices, stream, count))


# --------------------------------------------------------------------------------------------
# Per-image parameters (numpy, float64)
# --------------------------------------------------------------------------------------------

_MAX_HAIRS = 6
_VESSEL_TRUNKS = 3  # each trunk has two side branches
_NUM_LACUNAE = 7
_LATTICE = 7  # knots per side of the low-frequency noise lattice
# Low-frequency noise channels
_LF_MOTTLE, _LF_ERYTHEMA, _LF_BLOTCH2, _LF_BLOTCH3, _LF_WHITE, _LF_WARP_U, _LF_WARP_V = range(7)
_NUM_LF = 7
# Noise-bank channels: white noise (pixel noise per colour channel) and speckle noise (smoothed
# to the scale of dots and scale flakes), read together at one per-image field and shift
_BANK_CHANNELS = (
    "noise_r", "noise_g", "noise_b",  # white
    "skin_texture", "dark_dots", "white_dots", "red_dots", "roughness",  # speckle
)
_NUM_WHITE = 3
_MIN_STRUCTURE = 0.1  # amounts below this are treated as absent (structure not drawn)

# The class-appearance fields the renderer reads: colours (RGB) and structure amounts
COLOUR_FIELDS = ("body", "second", "third", "centre", "network_colour")
AMOUNT_FIELDS = (
    "second_amount", "third_amount", "centre_amount", "white_amount", "network", "dark_dots",
    "white_dots", "red_dots", "vessels", "lacunae", "ridges", "roughness",
)


def _lognormal(mean: np.ndarray, sigma: float, z: np.ndarray) -> np.ndarray:
    return mean * np.exp(sigma * z)


def image_parameters(
    classes: dict[str, np.ndarray],
    site: dict[str, np.ndarray],
    indices: np.ndarray,
    *,
    image_size: int,
    spread: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every per-image random parameter, shape (N, ...) each, as float64 numpy arrays.

    ``classes`` holds each image's class means (the fields of ``ClassAppearance``, colours as
    (N, 3)); ``site`` each image's site style (the fields of ``SiteStyle``). Per-image values
    scatter around the class means with standard deviations proportional to ``spread``.
    """
    n = indices.shape[0]
    z = _normals(seed, indices, _STREAM_APPEARANCE, 32)
    p: dict[str, np.ndarray] = {}

    # Lesion size and shape
    p["radius"] = np.clip(_lognormal(classes["radius"], 0.15 * spread, z[:, 0]), 0.12, 0.9)
    p["aspect"] = np.minimum(1.0 + _lognormal(classes["elongation"], 0.3 * spread, z[:, 1]), 1.9)
    asym = _lognormal(classes["asymmetry"], 0.3 * spread, z[:, 2])
    irreg = _lognormal(classes["irregularity"], 0.3 * spread, z[:, 3])
    p["edge_fade"] = np.clip(classes["edge_fade"] + 0.1 * spread * z[:, 4], 0.0, 1.0)
    p["opacity"] = np.clip(classes["opacity"] + 0.08 * spread * z[:, 5], 0.25, 1.0)
    p["centre_size"] = np.clip(classes["centre_size"] + 0.08 * spread * z[:, 6], 0.2, 0.8)
    p["network_atypia"] = np.clip(classes["network_atypia"] + 0.1 * spread * z[:, 7], 0, 1)

    # Colours: one pigment-density factor per image plus a small per-channel jitter
    density = np.exp(0.12 * spread * z[:, 8])[:, None]
    colour_z = _normals(seed, indices, _STREAM_APPEARANCE + 100, 3 * len(COLOUR_FIELDS))
    for j, name in enumerate(COLOUR_FIELDS):
        jitter = 0.025 * spread * colour_z[:, 3 * j : 3 * j + 3]
        p[name] = np.clip(classes[name] * density + jitter, 0.02, 1.0)

    # Structure amounts scatter multiplicatively: a structure a class lacks stays absent
    for j, name in enumerate(AMOUNT_FIELDS):
        amount = np.clip(_lognormal(classes[name], 0.35 * spread, z[:, 9 + j]), 0.0, 1.0)
        p[name] = np.where(amount < _MIN_STRUCTURE, 0.0, amount)

    geo = _uniforms(seed, indices, _STREAM_GEOMETRY, 40)
    p["centre_x"] = (geo[:, 0] - 0.5) * 0.24
    p["centre_y"] = (geo[:, 1] - 0.5) * 0.24
    p["orientation"] = geo[:, 2] * math.pi
    p["network_angle"] = geo[:, 3] * math.pi
    p["network_freq"] = 7.0 + 3.0 * geo[:, 4]
    p["ridge_angle"] = geo[:, 5] * math.pi
    p["ridge_freq"] = 5.0 + 3.0 * geo[:, 6]
    p["radius_table"] = _radius_table(p["radius"], asym, irreg, geo[:, 8:20], geo[:, 20:32])

    # Skin and acquisition (site styles)
    acq = _normals(seed, indices, _STREAM_ACQUISITION, 16)
    acq_u = _uniforms(seed, indices, _STREAM_ACQUISITION + 100, 8)
    tone = np.clip(site["skin_tone"] + site["skin_tone_spread"] * acq[:, 0], 0, 1)
    p["skin"] = _tone_to_rgb(tone)
    p["erythema"] = np.clip(site["erythema"] + 0.08 * acq[:, 1], 0.0, 0.9)
    p["gain"] = site["colour_gain"] * np.exp(0.03 * acq[:, 2:5])
    p["brightness"] = site["brightness"] * np.exp(0.05 * acq[:, 5])
    p["illumination"] = site["illumination"] * (0.3 + 0.7 * acq_u[:, 0])
    p["illumination_angle"] = 2 * math.pi * acq_u[:, 1]
    site_blur = site["blur"] * image_size
    p["blur_px"] = site_blur * (0.7 + 0.6 * acq_u[:, 2])
    # kernel radius fixed per site: 2.5 sigma of its mean blur; none below 0.2 pixel
    p["blur_radius"] = np.where(site_blur >= 0.2, np.ceil(2.5 * site_blur), 0).astype(np.int64)
    has_vignette = acq_u[:, 3] < site["vignette_prob"]
    p["vignette_depth"] = np.where(has_vignette, site["vignette_depth"], 0.0)
    p["vignette_radius"] = site["vignette_radius"] * np.exp(0.03 * acq[:, 6])
    p["vignette_softness"] = site["vignette_softness"]
    p["vignette_x"] = 0.04 * acq[:, 7]
    p["vignette_y"] = 0.04 * acq[:, 8]
    p["noise"] = site["noise"] * (0.7 + 0.6 * acq_u[:, 4])
    p["saturation"] = site["saturation"] * np.exp(0.04 * acq[:, 9])
    p["contrast"] = site["contrast"] * np.exp(0.03 * acq[:, 10])

    # lattice values: uniform with unit variance (the B-spline sum makes them near-Gaussian)
    lattice = _uniforms16(seed, indices, _STREAM_LATTICE, _NUM_LF * _LATTICE**2)
    p["lattice"] = ((lattice - 0.5) * math.sqrt(12.0)).reshape(n, _NUM_LF, _LATTICE, _LATTICE)
    p["bank_pick"] = _uniforms(seed, indices, _STREAM_BANK, 3)  # field, row and column shift
    p["hairs"] = _hair_segments(site["hair_rate"], seed, indices, image_size)
    p["vessels_segments"] = _vessel_segments(p, seed, indices, image_size)
    p["lacunae_blobs"] = _lacuna_blobs(p, seed, indices)
    return p


def _tone_to_rgb(tone: np.ndarray) -> np.ndarray:
    pos = tone * (len(_SKIN_TONE_RAMP) - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, len(_SKIN_TONE_RAMP) - 2)
    frac = (pos - lo)[:, None]
    return _SKIN_TONE_RAMP[lo] * (1 - frac) + _SKIN_TONE_RAMP[lo + 1] * frac


_ANGLE_BINS = 96


def _radius_table(
    r0: np.ndarray, asym: np.ndarray, irreg: np.ndarray, amp_u: np.ndarray, phase_u: np.ndarray
) -> np.ndarray:
    """``r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k))`` on a grid of angles, (N, B + 1).

    k = 1..3 carry asymmetry (weights 1, 0.9, 0.7), k = 4..12 border irregularity (weights
    ``4/k``); each group is normalized so that its root-mean-square relative deviation equals
    ``asymmetry`` or ``irregularity``, and each amplitude is scaled by a per-image factor in
    [0.5, 1.5). The relative deviation is floored at -0.55 so that the lesion stays
    star-shaped around its centre.
    """
    theta = np.linspace(-math.pi, math.pi, _ANGLE_BINS + 1)
    k = np.arange(1, 13, dtype=np.float64)
    low = np.where(k <= 3, np.array([1.0, 0.9, 0.7] + [0.0] * 9), 0.0)
    high = np.where(k <= 3, 0.0, 4.0 / k)
    # each group normalized to a root-mean-square deviation of 1 (random phases)
    low /= np.sqrt((low**2).sum() / 2)
    high /= np.sqrt((high**2).sum() / 2)
    scale = (asym[:, None] * low + irreg[:, None] * high) * (0.5 + amp_u)
    phases = 2 * math.pi * phase_u
    # cos(k theta + phi) = cos(phi) cos(k theta) - sin(phi) sin(k theta): two small products
    angles = k[:, None] * theta[None, :]
    cos_part = (scale * np.cos(phases)) @ np.cos(angles)
    deviation = cos_part - (scale * np.sin(phases)) @ np.sin(angles)
    return r0[:, None] * (1.0 + np.maximum(deviation, -0.55))


_MIN_LINE_PX = 0.5  # thinner lines are drawn this wide and proportionally fainter


def _arc(mid_x, mid_y, angle, curvature, half_length, width_px, strength) -> dict:
    """A circular arc given by its midpoint, its tangent angle there, its signed curvature and
    its half arc length, in the form :func:`_curve_intensity` draws (circle centre and radius,
    midpoint and tangent, half chord). ``|curvature|`` is floored at 0.02 (radius <= 50). A
    line thinner than ``_MIN_LINE_PX`` pixels is drawn that wide with its strength scaled by
    ``width / _MIN_LINE_PX`` (the part of a pixel it covers)."""
    k = np.where(np.abs(curvature) < 0.02, np.where(curvature < 0, -0.02, 0.02), curvature)
    radius = 1.0 / np.abs(k)
    drawn_width = np.maximum(width_px, _MIN_LINE_PX)
    strength = strength * (width_px / drawn_width)
    return {
        "cx": mid_x - np.sin(angle) / k,
        "cy": mid_y + np.cos(angle) / k,
        "radius": radius,
        "mx": mid_x,
        "my": mid_y,
        "ux": np.cos(angle),
        "uy": np.sin(angle),
        "half_chord": radius * np.sin(np.minimum(half_length / radius, math.pi / 2)),
        "width_px": drawn_width,
        "strength": strength,
    }


def _arc_step(x, y, angle, curvature, length):
    """Point and tangent angle after ``length`` along an arc from (x, y) heading ``angle``."""
    k = np.where(np.abs(curvature) < 1e-6, 1e-6, curvature)
    end = angle + k * length
    return x + (np.sin(end) - np.sin(angle)) / k, y - (np.cos(end) - np.cos(angle)) / k, end


def _hair_segments(rate, seed, indices, image_size) -> dict[str, np.ndarray]:
    """Up to six thin dark hairs per image: gently curved arcs, most crossing the image."""
    u = _uniforms(seed, indices, _STREAM_HAIRS, 8 * _MAX_HAIRS).reshape(-1, _MAX_HAIRS, 8)
    present = u[:, :, 0] < (rate / _MAX_HAIRS)[:, None]
    return _arc(
        mid_x=2 * u[:, :, 1] - 1,
        mid_y=2 * u[:, :, 2] - 1,
        angle=math.pi * u[:, :, 3],
        curvature=0.8 * (u[:, :, 4] - 0.5),
        half_length=0.5 + 1.1 * u[:, :, 5],
        width_px=0.009 * image_size * (0.8 + 0.6 * u[:, :, 6]),
        strength=np.where(present, 0.75 + 0.2 * u[:, :, 7], 0.0),
    )


def _vessel_segments(p, seed, indices, image_size) -> dict[str, np.ndarray]:
    """Arborizing vessels: curved trunks through the lesion, each with two thinner branches
    leaving it at 25-55 degrees."""
    t = _VESSEL_TRUNKS
    u = _uniforms(seed, indices, _STREAM_VESSELS, 16 * t).reshape(-1, t, 16)
    r0 = p["radius"][:, None]
    radial = 0.55 * r0 * np.sqrt(u[:, :, 0])
    polar = 2 * math.pi * u[:, :, 1]
    x0 = p["centre_x"][:, None] + radial * np.cos(polar)
    y0 = p["centre_y"][:, None] + radial * np.sin(polar)
    angle = math.pi * u[:, :, 2]
    curvature = (u[:, :, 3] - 0.5) * 3.0 / r0
    half = r0 * (0.4 + 0.35 * u[:, :, 4])
    width = 0.010 * image_size * (0.8 + 0.4 * u[:, :, 5])
    strength = np.where(u[:, :, 6] < 0.85, 1.0, 0.0) * p["vessels"][:, None]
    parts = [_arc(x0, y0, angle, curvature, half, width, strength)]
    for b, side in ((0, 1.0), (1, -1.0)):
        along = half * (1.4 * u[:, :, 7 + b] - 0.7)  # where the branch leaves the trunk
        bx, by, tangent = _arc_step(x0, y0, angle, curvature, along)
        heading = tangent + side * (0.45 + 0.5 * u[:, :, 9 + b])
        branch_half = 0.5 * half * (0.35 + 0.4 * u[:, :, 11 + b])
        branch_curvature = curvature * (u[:, :, 13 + b] - 0.5) * 2
        mx, my, mid_angle = _arc_step(bx, by, heading, branch_curvature, branch_half)
        parts.append(
            _arc(mx, my, mid_angle, branch_curvature, branch_half, 0.75 * width, strength)
        )
    return {k: np.concatenate([part[k] for part in parts], axis=1) for k in parts[0]}


def _lacuna_blobs(p, seed, indices) -> dict[str, np.ndarray]:
    """Red-purple lacunae: round, flat-topped blobs placed inside the lesion."""
    u = _uniforms(seed, indices, _STREAM_LACUNAE, 4 * _NUM_LACUNAE).reshape(-1, _NUM_LACUNAE, 4)
    r0 = p["radius"][:, None]
    radial = 0.6 * r0 * np.sqrt(u[:, :, 0])
    polar = 2 * math.pi * u[:, :, 1]
    return {
        "x": p["centre_x"][:, None] + radial * np.cos(polar),
        "y": p["centre_y"][:, None] + radial * np.sin(polar),
        "radius": r0 * (0.17 + 0.15 * u[:, :, 2]),
        "shade": u[:, :, 3],
    }


# --------------------------------------------------------------------------------------------
# Noise fields
# --------------------------------------------------------------------------------------------


def _bank_fields(image_size: int) -> int:
    """Noise fields in the bank: fewer at large sizes (each field gives H * W shifts)."""
    return {28: 32, 32: 32, 64: 16, 128: 8}[image_size]


@functools.lru_cache(maxsize=4)
def noise_bank(seed: int, image_size: int) -> torch.Tensor:
    """Seed-dependent periodic noise fields, tiled 2 x 2: shape (F, 8, 2H, 2W).

    Channels follow ``_BANK_CHANNELS``: three of white noise (sensor noise, film grain), five
    of noise smoothed by a Gaussian of sigma ``max(0.6, size / 64)`` pixels (the scale of dots
    and scale flakes); unit variance each. Periodic and tiled, so that a per-image circular
    shift is a plain slice.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, image_size]))
    fields = rng.standard_normal(
        (_bank_fields(image_size), len(_BANK_CHANNELS), image_size, image_size)
    )
    sigma = max(0.6, image_size / 64)
    freq = np.fft.fftfreq(image_size)
    gain = np.exp(-2 * (math.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    speckle = np.fft.ifft2(np.fft.fft2(fields[:, _NUM_WHITE:]) * gain).real
    fields[:, _NUM_WHITE:] = speckle / speckle.std(axis=(0, 2, 3), keepdims=True)
    tiled = np.tile(fields, (1, 1, 2, 2))
    return torch.from_numpy(np.ascontiguousarray(tiled, dtype=np.float32))


def _bspline_matrix(size: int) -> torch.Tensor:
    """Cubic B-spline weights from ``_LATTICE`` knots to ``size`` pixel centres, (size, L)."""
    x = (np.arange(size) + 0.5) / size * 2 - 1
    spacing = 2.4 / (_LATTICE - 1)
    knots = -1.2 + spacing * np.arange(_LATTICE)
    s = np.abs(x[:, None] - knots[None, :]) / spacing
    w = np.where(s < 1, 2 / 3 - s**2 + s**3 / 2, np.where(s < 2, (2 - s) ** 3 / 6, 0.0))
    w /= w.sum(axis=1, keepdims=True)
    return torch.from_numpy(w)


@functools.lru_cache(maxsize=8)
def _lowfreq_operators(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and (transposed) column interpolation matrices, each row scaled by
    ``1 / sqrt(sum_l w_l^2)`` so that unit-variance lattice values give unit-variance fields."""
    w = _bspline_matrix(size)
    w = w / torch.sqrt((w**2).sum(1, keepdim=True))
    return w.float(), w.T.contiguous().float()


# --------------------------------------------------------------------------------------------
# Rendering (torch, one chunk of images)
# --------------------------------------------------------------------------------------------


def _smoothstep(edge0: float, edge1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - edge0) / (edge1 - edge0)).clamp_(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blend_(image: torch.Tensor, colour: torch.Tensor, weight: torch.Tensor) -> None:
    """In place: ``image += weight * (colour - image)``; image (n,3,H,W), weight (n,1,H,W)."""
    image.lerp_(colour.expand_as(image), weight.expand_as(image))


def _col(values: np.ndarray) -> torch.Tensor:
    """(n,) or (n, 3) numpy -> (n, 1, 1, 1) or (n, 3, 1, 1) float32 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return t.reshape(t.shape[0], -1, 1, 1)


def _const(colour: Colour) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32).reshape(1, 3, 1, 1)


def _curve_intensity(
    xg: torch.Tensor, yg: torch.Tensor, curves: dict[str, np.ndarray], half_px: float
) -> torch.Tensor:
    """Max over an image's arcs of a line profile, shape (n, 1, H, W).

    The distance to an arc is ``| |p - c|^2 - R^2 | / (2R)`` (c, R: its circle; exact to first
    order near the circle, where the line is drawn); the profile is
    ``(1 - dist / (1.6 width))_+^2`` (close to ``exp(-(dist / width)^2)``), cut where the
    projection on the midpoint tangent exceeds the half chord. Only images whose arc is
    present are computed.
    """
    n, num_arcs = curves["strength"].shape
    out = torch.zeros(n, 1, yg.shape[-2], xg.shape[-1])
    for s in range(num_arcs):
        active, rows = _rows(curves["strength"][:, s] > 0)
        if active.size == 0:
            continue
        get = {k: _col(v[active, s]) for k, v in curves.items()}
        # near the circle |p - c| - R = (|p - c|^2 - R^2) / (|p - c| + R) ~ (...) / (2R)
        dist = ((xg - get["cx"]) ** 2 + (yg - get["cy"]) ** 2).sub_(get["radius"] ** 2).abs_()
        dist.mul_(0.5 / get["radius"])
        line = dist.mul_(-half_px / (1.6 * get["width_px"])).add_(1).clamp_(0, 1)
        line.mul_(line)
        along = (xg - get["mx"]).mul_(get["ux"]) + (yg - get["my"]).mul_(get["uy"])
        window = along.abs_().neg_().add_(get["half_chord"]).mul_(half_px).clamp_(0, 1)
        intensity = line.mul_(window).mul_(get["strength"])
        if isinstance(rows, slice):
            view = out[rows]
            torch.maximum(view, intensity, out=view)
        else:
            out[rows] = torch.maximum(out[rows], intensity)
    return out


def _gaussian_blur(image: torch.Tensor, sigma_px: np.ndarray, radius: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma and kernel radius (replicate padding),
    as tap sums; radius 0 is no blur. Rows sharing a radius are blurred together."""
    for r in np.unique(radius[radius > 0]).tolist():
        active, rows = _rows(radius == r, exact=True)
        taps = np.arange(-r, r + 1)
        weights = np.exp(-0.5 * (taps[None, :] / sigma_px[active, None]) ** 2)
        weights = torch.from_numpy((weights / weights.sum(axis=1, keepdims=True)).astype("f4"))
        sub = image[rows]
        h, w = sub.shape[-2:]
        taps_of = [weights[:, j].reshape(-1, 1, 1, 1) for j in range(2 * r + 1)]
        padded = torch.nn.functional.pad(sub, (r, r, 0, 0), mode="replicate")
        across = padded[..., :, 0:w] * taps_of[0]
        for j in range(1, 2 * r + 1):
            across.addcmul_(padded[..., :, j : j + w], taps_of[j])
        padded = torch.nn.functional.pad(across, (0, 0, r, r), mode="replicate")
        down = padded[..., 0:h, :] * taps_of[0]
        for j in range(1, 2 * r + 1):
            down.addcmul_(padded[..., j : j + h, :], taps_of[j])
        image[rows] = down
    return image


def _bank_read(bank: torch.Tensor, pick: np.ndarray, size: int) -> torch.Tensor:
    """All bank channels for each image, at a per-image field and shift: (n, 8, H, W)."""
    field = np.minimum((pick[:, 0] * bank.shape[0]).astype(np.int64), bank.shape[0] - 1)
    rows = (pick[:, 1] * size).astype(np.int64)
    cols = (pick[:, 2] * size).astype(np.int64)
    return torch.stack(
        [
            bank[f, :, r : r + size, c : c + size]
            for f, r, c in zip(field.tolist(), rows.tolist(), cols.tolist(), strict=True)
        ]
    )


def _rows(flags: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, slice | torch.Tensor]:
    """Which rows of a chunk to draw a structure on, given a per-image flag.

    Returns the row numbers and a selector: a slice (a view, no copy) over the span of the
    flagged rows when the span is contiguous, or, unless ``exact``, when it is mostly flagged
    (unflagged rows inside it have a zero amount, so drawing on them changes nothing); else an
    index tensor. Rendering in (site, class) order keeps most spans contiguous.
    """
    active = np.flatnonzero(flags)
    if active.size == 0:
        return active, slice(0, 0)
    lo, hi = int(active[0]), int(active[-1]) + 1
    dense = hi - lo <= 1.5 * active.size or active.size >= 0.6 * flags.size
    if hi - lo == active.size or (dense and not exact):
        return np.arange(lo, hi), slice(lo, hi)
    return active, torch.from_numpy(active)


def _draw(image: torch.Tensor, rows, colour: torch.Tensor, weight: torch.Tensor) -> None:
    """Blend ``colour`` into ``image[rows]`` with ``weight`` (a view when rows is a slice)."""
    if isinstance(rows, slice):
        _blend_(image[rows], colour, weight)
    else:
        sub = image[rows]
        _blend_(sub, colour, weight)
        image[rows] = sub


def render_chunk(p: dict, size: int, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, H, W) in k/255 and lesion masks (n, 1, H, W) from per-image parameters."""
    n = p["radius"].shape[0]
    half_px = size / 2.0
    coord = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    xg = coord.reshape(1, 1, 1, size)
    yg = coord.reshape(1, 1, size, 1)
    noise_fields = _bank_read(bank, p["bank_pick"], size)

    def bank_field(name: str) -> torch.Tensor:
        j = _BANK_CHANNELS.index(name)
        return noise_fields[:, j : j + 1]

    # Low-frequency fields: B-spline interpolation of a per-image lattice (two small matmuls)
    w_rows, w_cols_t = _lowfreq_operators(size)
    lattice = torch.from_numpy(p["lattice"].astype(np.float32)).reshape(-1, _LATTICE)
    by_cols = (lattice @ w_cols_t).reshape(n * _NUM_LF, _LATTICE, size)  # (n*7, L, W)
    by_rows = w_rows @ by_cols.transpose(0, 1).reshape(_LATTICE, -1)  # (H, n*7*W)
    lowfreq = by_rows.reshape(size, n, _NUM_LF, size).permute(1, 2, 0, 3).contiguous()

    def lf(channel: int) -> torch.Tensor:
        return lowfreq[:, channel : channel + 1]

    # 1. Skin: tone, mottling, erythema patches, fine texture
    skin_shade = (1 + 0.05 * lf(_LF_MOTTLE)).mul_(1 + 0.025 * bank_field("skin_texture"))
    skin = _col(p["skin"]) * skin_shade
    erythema = ((lf(_LF_ERYTHEMA) + 1.0) * 0.4).clamp_(0, 1).mul_(_col(0.6 * p["erythema"]))
    _blend_(skin, _const(_ERYTHEMA), erythema)

    # 2. Lesion geometry: polar coordinates in the rotated, stretched lesion frame
    dx, dy = xg - _col(p["centre_x"]), yg - _col(p["centre_y"])
    stretch = np.sqrt(p["aspect"])
    cos_o, sin_o = np.cos(p["orientation"]), np.sin(p["orientation"])
    u = dx * _col(cos_o / stretch) + dy * _col(sin_o / stretch)
    v = dy * _col(cos_o * stretch) - dx * _col(sin_o * stretch)
    rho = (u * u).add_(v * v).sqrt_()
    position = torch.atan2(v, u).mul_(_ANGLE_BINS / (2 * math.pi)).add_(_ANGLE_BINS / 2)
    lower = position.floor().clamp_(0, _ANGLE_BINS - 1)
    frac = position.sub_(lower)
    table = torch.from_numpy(p["radius_table"].astype(np.float32))
    lower_idx = lower.long().reshape(n, -1)
    r_lo = torch.gather(table, 1, lower_idx).reshape(rho.shape)
    r_hi = torch.gather(table, 1, lower_idx + 1).reshape(rho.shape)
    smallest = _col(1.6 * stretch / half_px)  # keeps the pixel nearest the centre inside
    boundary = torch.maximum(torch.lerp(r_lo, r_hi, frac), smallest)
    t = rho / boundary
    mask = (t <= 1.0).float()
    antialias = (boundary - rho).mul_(half_px).add_(0.5).clamp_(0, 1)  # 0.5 on the border
    inside = (t * t).mul_(_col(-0.75 * p["edge_fade"])).add_(1).clamp_(min=0).mul_(antialias)

    # 3. Lesion body: skin filtered by the class palette, blotches of the other two colours
    reference = _const(SKIN_REFERENCE)
    body, second, third = (_col(p[k]) / reference for k in ("body", "second", "third"))

    def blotch(channel: int, amount: np.ndarray) -> torch.Tensor:
        gain = _col(np.minimum(4 * amount, 1.0))
        return (lf(channel) - _col(0.9 - 1.6 * amount)).mul_(2).add_(0.5).clamp_(0, 1).mul_(gain)

    palette = body + blotch(_LF_BLOTCH2, p["second_amount"]) * (second - body)
    _blend_(palette, third, blotch(_LF_BLOTCH3, p["third_amount"]))
    image = skin + (skin * palette - skin).mul_(inside * _col(p["opacity"]))

    active, rows = _rows(p["network"] > 0)
    if active.size:
        _draw_network(image, p, active, rows, xg, yg, lowfreq, inside)
    active, rows = _rows(p["centre_amount"] > 0)
    if active.size:
        centre = (t[rows] - _col(p["centre_size"][active] + 0.25)).mul_(-2.0).clamp_(0, 1)
        weight = centre.mul_(antialias[rows]).mul_(_col(p["centre_amount"][active]))
        _draw(image, rows, _col(p["centre"][active]), weight)
    active, rows = _rows(p["white_amount"] > 0)
    if active.size:
        white = (lowfreq[rows, _LF_WHITE : _LF_WHITE + 1] - 0.2).mul_(2.5).clamp_(0, 1)
        weight = white.mul_(inside[rows]).mul_(_col(p["white_amount"][active]))
        _draw(image, rows, _const(_WHITE_AREA), weight)

    # 4. Structures on top: dots, vessels, lacunae, ridges, roughness
    for name, colour, threshold in (
        ("dark_dots", _DOT_DARK, 1.55),
        ("white_dots", _DOT_WHITE, 1.45),
        ("red_dots", _DOT_RED, 1.45),
    ):
        active, rows = _rows(p[name] > 0)
        if active.size:
            dots = (bank_field(name)[rows] - threshold).mul_(2.5).clamp_(0, 1)
            weight = dots.mul_(antialias[rows]).mul_(_col(p[name][active]))
            _draw(image, rows, _const(colour), weight)
    active, rows = _rows(p["vessels"] > 0)
    if active.size:
        arcs = {k: v[active] for k, v in p["vessels_segments"].items()}
        vessels = _curve_intensity(xg, yg, arcs, half_px).mul_(antialias[rows])
        _draw(image, rows, _const(_VESSEL_RED), vessels)
    active, rows = _rows(p["lacunae"] > 0)
    if active.size:
        _draw_lacunae(image, p, active, rows, xg, yg, antialias)
    active, rows = _rows(p["ridges"] > 0)
    if active.size:
        angle = p["ridge_angle"][active]
        freq = math.pi * p["ridge_freq"][active]
        phase = xg * _col(freq * np.cos(angle)) + yg * _col(freq * np.sin(angle))
        wave = torch.sin(phase.add_(lowfreq[rows, _LF_WARP_U : _LF_WARP_U + 1], alpha=2.5))
        weight = (wave - 0.45).mul_(2.5).clamp_(0, 1).mul_(inside[rows])
        _draw(image, rows, _const(_RIDGE_FURROW), weight.mul_(_col(0.7 * p["ridges"][active])))
    active, rows = _rows(p["roughness"] > 0)
    if active.size:
        bumps = bank_field("roughness")[rows] * inside[rows]
        factor = bumps.mul_(_col(0.15 * p["roughness"][active])).add_(1)
        if isinstance(rows, slice):
            image[rows].mul_(factor)
        else:
            image[rows] = image[rows] * factor

    # 5. Acquisition: hairs, blur, then per pixel one light factor (illumination gradient x
    #    vignette) and per image one 3x3 colour matrix (cast, exposure, saturation, contrast)
    active, rows = _rows((p["hairs"]["strength"] > 0).any(axis=1))
    if active.size:
        hairs = _curve_intensity(xg, yg, {k: v[active] for k, v in p["hairs"].items()}, half_px)
        _draw(image, rows, _const(_HAIR), hairs)
    image = _gaussian_blur(image, p["blur_px"], p["blur_radius"])
    angle = p["illumination_angle"]
    gradient = p["illumination"]
    light = xg * _col(gradient * np.cos(angle)) + yg * _col(gradient * np.sin(angle))
    light.add_(1)
    radius_img = ((xg - _col(p["vignette_x"])) ** 2 + (yg - _col(p["vignette_y"])) ** 2).sqrt_()
    softness = p["vignette_softness"]
    edge = radius_img.sub_(_col(p["vignette_radius"] - 0.5 * softness)).div_(_col(softness))
    light.mul_(edge.clamp_(0, 1).mul_(_col(-p["vignette_depth"])).add_(1))
    matrix, offset = _colour_matrices(p)
    out = torch.bmm(matrix, image.reshape(n, 3, -1)).reshape(image.shape).mul_(light)
    out.addcmul_(noise_fields[:, :_NUM_WHITE], _col(255.0 * p["noise"])).add_(offset)
    return out.clamp_(0, 255).round_().div_(255), mask


def _colour_matrices(p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``y = M x + b`` with ``M x = 255 c (s (g * x) + (1 - s) mean(g * x))`` and
    ``b = 255 (1 - c) / 2``: colour cast and exposure ``g`` (per channel), saturation ``s``,
    contrast ``c``, scaled by 255 for 8-bit quantization. Returns M (n, 3, 3), b (n, 3, 1, 1).
    """
    sat, con = p["saturation"][:, None, None], p["contrast"][:, None, None]
    mixing = sat * np.eye(3)[None] + (1 - sat) / 3.0
    gain = p["gain"] * p["brightness"][:, None]
    matrix = 255.0 * con * mixing * gain[:, None, :]
    offset = np.repeat(255.0 * 0.5 * (1 - p["contrast"])[:, None], 3, axis=1)
    return torch.from_numpy(matrix.astype(np.float32)), _col(offset)


def _draw_network(image, p, active, rows, xg, yg, lowfreq, inside) -> None:
    """Pigment network: a honeycomb of dark lines between the maxima of
    ``h = sum_j cos(f e_j . x)`` over three directions 60 degrees apart (a hexagonal lattice),
    warped by low-frequency noise in proportion to its atypia (broadened, irregular lines)."""
    atypia = p["network_atypia"][active]
    freq = math.pi * p["network_freq"][active]
    warp = _col(0.15 + 0.5 * atypia)
    gx = lowfreq[rows, _LF_WARP_U : _LF_WARP_U + 1] * warp + xg
    gy = lowfreq[rows, _LF_WARP_V : _LF_WARP_V + 1] * warp + yg
    h = None
    for j in range(3):
        angle = p["network_angle"][active] + j * math.pi / 3
        wave = torch.cos(gx * _col(freq * np.cos(angle)) + gy * _col(freq * np.sin(angle)))
        h = wave if h is None else h.add_(wave)
    lines = h.sub_(_col(0.2 + 0.8 * atypia)).mul_(-1 / 1.2).clamp_(0, 1)
    weight = lines.mul_(inside[rows]).mul_(_col(0.6 * p["network"][active]))
    _draw(image, rows, _col(p["network_colour"][active]), weight)


def _draw_lacunae(image, p, active, rows, xg, yg, antialias) -> None:
    """Lacunae: flat-topped round blobs, red to dark purple, over the paler body (septa)."""
    blobs = {k: v[active] for k, v in p["lacunae_blobs"].items()}
    half_px = xg.shape[-1] / 2
    cover = shade = None
    for j in range(_NUM_LACUNAE):
        # (r^2 - d^2) / (2r) ~ r - d near the rim: a soft edge about 1.4 pixels wide
        r = blobs["radius"][:, j]
        d2 = (xg - _col(blobs["x"][:, j])) ** 2 + (yg - _col(blobs["y"][:, j])) ** 2
        blob = d2.neg_().add_(_col(r**2)).mul_(_col(0.35 * half_px / r)).add_(0.5).clamp_(0, 1)
        if cover is None:
            cover, shade = blob, _col(blobs["shade"][:, j]).expand_as(blob).clone()
        else:
            shade = torch.where(blob > cover, _col(blobs["shade"][:, j]), shade)
            cover = torch.maximum(cover, blob)
    colour = _const(_LACUNA_RED) + shade * (_const(_LACUNA_PURPLE) - _const(_LACUNA_RED))
    weight = cover.mul_(antialias[rows]).mul_(_col(p["lacunae"][active]))
    _draw(image, rows, colour, weight)
