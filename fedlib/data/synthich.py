"""SynthICH: procedural CT-like head slices with the five intracranial haemorrhage subtypes.

A stand-in for RSNA-ICH that needs no download: grayscale axial slices in the brain window
(level 40 HU, width 80 HU, so 0 HU -> 0 and 80 HU -> 1), with the anatomy a reader would
recognise and each subtype drawn where and how it appears on CT:

===========  ======================================================================================
class        appearance (hyperdense: brighter than brain, darker than the bone, which saturates)
===========  ======================================================================================
EDH          epidural: lens-shaped (biconvex) collection against the inner table of the skull,
             short in extent and thick
IPH          intraparenchymal: irregular blob inside brain tissue, often with a dark oedema rim
IVH          intraventricular: blood in the dependent (posterior) part of the lateral ventricles
SAH          subarachnoid: thin bright tracks filling sulci and fissures (cisterns) in a region
SDH          subdural: long, thin crescent following the skull
===========  ======================================================================================

Anatomy (values in the window): scalp soft tissue ~0.55, bone 1.0, cortex (grey matter, ~40 HU)
~0.5, white matter (~28 HU) ~0.35, deep grey nuclei ~0.47, CSF (ventricles, sulci, fissures,
~5 HU) ~0.07, acute blood (60-80 HU) ~0.75-0.95. The lateral ventricles form the butterfly of the
frontal horns and the posteriorly diverging atria.

Per-site scanner styles (:func:`ich_site_style`): noise level, blur (reconstruction kernel),
window level/width differences (offset and contrast), head rotation and size (positioning,
field of view), beam-hardening streaks and cupping.

Class order EDH, IPH, IVH, SAH, SDH (``fedlib.data.templates.ICH_CLASSES``); per-site class
counts follow the RSNA-ICH 10-client split or the near-IID 5-client split of the FedNPR / FCA
code (``evaluation.md`` §2), scaled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedlib._validation import Interval, Options, check_param
from fedlib.data._geometry import gaussian_blur, gaussian_kernels, soft_inside
from fedlib.data._render import check_render_inputs, render_in_chunks
from fedlib.data.base import FederatedDataset
from fedlib.data.partitions import federate_from_counts, split_count_table
from fedlib.data.templates import ICH_CLASSES, scale_template, site_template

__all__ = ["ICHSiteStyle", "ich_site_style", "render_synthich", "synthich"]

EDH, IPH, IVH, SAH, SDH = range(5)
_STYLE_KEY = 0x1C4  # separates the site-style stream from the image streams

# Window values (brain window 40/80): HU -> (HU - 0) / 80
_AIR, _SCALP, _BONE = 0.0, 0.55, 1.0
_GREY, _WHITE, _DEEP_GREY, _CSF = 0.5, 0.35, 0.46, 0.07


@dataclass(frozen=True)
class ICHSiteStyle:
    """Acquisition style of one CT site.

    Attributes
    ----------
    noise_std : float
        Std of the additive image noise (window units).
    blur_px : float
        Gaussian blur sigma in pixels at 64 x 64 (scaled with the image size): a smoother
        reconstruction kernel.
    level_shift : float
        Added after windowing: a different window level.
    contrast : float
        Gain about mid-grey: a narrower (> 1) or wider (< 1) window.
    rotation_mean_deg, rotation_std_deg : float
        Head rotation in the slice (positioning).
    head_scale : float
        Head size in the field of view (1 = skull outline touches the image border).
    streak_amp : float
        Depth of the dark beam-hardening streaks (0 = none).
    streak_count : int
        Streaks per image.
    cupping : float
        Central darkening from beam hardening.
    """

    noise_std: float
    blur_px: float
    level_shift: float
    contrast: float
    rotation_mean_deg: float
    rotation_std_deg: float
    head_scale: float
    streak_amp: float
    streak_count: int
    cupping: float


def ich_site_style(site: int) -> ICHSiteStyle:
    """The (fixed, seed-independent) scanner style of site ``site``; any int >= 0 works."""
    check_param("ich_site_style", "site", site, Interval(int, 0, None, closed="left"))
    rng = np.random.default_rng([_STYLE_KEY, int(site)])
    return ICHSiteStyle(
        noise_std=float(rng.uniform(0.015, 0.06)),
        blur_px=float(rng.uniform(0.3, 1.1)),
        level_shift=float(rng.uniform(-0.07, 0.07)),
        contrast=float(rng.uniform(0.8, 1.2)),
        rotation_mean_deg=float(rng.uniform(-6.0, 6.0)),
        rotation_std_deg=float(rng.uniform(2.0, 10.0)),
        head_scale=float(rng.uniform(0.86, 0.98)),
        streak_amp=float(rng.choice([0.0, rng.uniform(0.04, 0.14)], p=[0.3, 0.7])),
        streak_count=int(rng.integers(1, 4)),
        cupping=float(rng.uniform(0.0, 0.06)),
    )


# --------------------------------------------------------------------------- drawing helpers


def _ridge(dist_px: np.ndarray, half_width_px: float) -> np.ndarray:
    """A line profile: ``max(0, 1 - (d / w)^2)`` (cheaper than a Gaussian, same look)."""
    t = dist_px * (1.0 / half_width_px)
    np.multiply(t, t, out=t)
    np.subtract(1.0, t, out=t)
    return np.maximum(t, 0.0, out=t)


def _ellipse_radius(u, v, cu, cv, au, av, angle):
    """Normalised radius of (u, v) in a rotated ellipse: < 1 inside."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    du, dv = u - cu, v - cv
    ru = (c * du + s * dv) / au
    rv = (-s * du + c * dv) / av
    return np.sqrt(ru * ru + rv * rv)


def _ellipse_edge_px(u, v, cu, cv, au, av, angle, px_per_unit):
    """Approximate signed distance (pixels) to a rotated ellipse, via ``(r^2 - 1) / 2``.

    ``px_per_unit`` is the pixel length of the ellipse's minor semi-axis, where the
    approximation ``r - 1 ~ (r^2 - 1) / 2`` is used.
    """
    c, s = float(np.cos(angle)), float(np.sin(angle))
    du, dv = u - cu, v - cv
    ru = (c * du + s * dv) / au
    rv = (-s * du + c * dv) / av
    r2 = ru * ru
    r2 += rv * rv
    r2 -= 1.0
    r2 *= 0.5 * px_per_unit
    return r2


# --------------------------------------------------------------------------- rendering


def render_synthich(
    labels,
    sites,
    *,
    image_size: int = 64,
    difficulty: float = 0.5,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render CT-like head slices, one haemorrhage of class ``labels[i]`` per slice.

    Parameters
    ----------
    labels : 1-D int array-like, values in 0..4
        EDH, IPH, IVH, SAH, SDH.
    sites : 1-D int array-like, same length
        Site id of each image: selects the scanner style (:func:`ich_site_style`).
    image_size : int in [16, 512], default 64
        Output is ``image_size x image_size`` (32, 64, 128 are the usual choices).
    difficulty : float in [0, 1], default 0.5
        0: large, bright haemorrhages; 1: small, faint ones (blood contrast over grey matter
        falls from ~0.42 to ~0.17 window units, sizes shrink by ~40 %) and more noise.
    seed : int >= 0
        Output is a pure function of ``(labels, sites, image_size, difficulty, seed)``.

    Returns
    -------
    images : float32 Tensor (N, 1, S, S) in [0, 1]
    masks : float32 Tensor (N, 1, S, S), 1 on the haemorrhage (never empty)
    boxes : int64 Tensor (N, 4), tight ``(x0, y0, x1, y1)`` of each mask, inclusive-exclusive
    """
    labels, sites = check_render_inputs(
        "render_synthich", labels, sites, image_size, difficulty, seed, len(ICH_CLASSES)
    )
    styles = {int(k): ich_site_style(int(k)) for k in np.unique(sites)}
    rng = np.random.default_rng(seed)

    def render(rows):
        return _render_chunk(labels[rows], sites[rows], styles, image_size, float(difficulty), rng)

    # Render in label order so that each chunk paints its haemorrhages on contiguous slices.
    order = np.argsort(labels, kind="stable")
    return render_in_chunks(render, labels.size, image_size, order=order)


def _style_array(styles: dict[int, ICHSiteStyle], sites: np.ndarray, field: str) -> np.ndarray:
    return np.array([getattr(styles[int(k)], field) for k in sites], dtype=np.float32)


def _render_chunk(labels, sites, styles, size, difficulty, rng):
    n = labels.size
    f32 = np.float32
    col = lambda a: np.asarray(a, dtype=f32)[:, None, None]  # noqa: E731  (N,) -> (N, 1, 1)

    # ---- per-image geometry: positioning (rotation, size, shift) and head shape
    rot = np.deg2rad(
        _style_array(styles, sites, "rotation_mean_deg")
        + _style_array(styles, sites, "rotation_std_deg") * rng.standard_normal(n)
    )
    scale = _style_array(styles, sites, "head_scale") * (1 + 0.04 * rng.standard_normal(n))
    shift = 0.04 * rng.standard_normal((n, 2))
    half_w = 0.80 * (1 + 0.04 * rng.standard_normal(n))  # head semi-axes (head units)
    half_h = 0.97 * (1 + 0.03 * rng.standard_normal(n))
    skull_in = 0.90 + 0.015 * rng.standard_normal(n)  # inner table (normalised radius)
    px_per_unit = scale * size / 2.0  # pixels per head unit

    grid = (np.arange(size, dtype=f32) + 0.5) / size * 2 - 1
    x = grid[None, None, :] - col(shift[:, 0])
    y = grid[None, :, None] - col(shift[:, 1])
    c, s_ = col(np.cos(rot)), col(np.sin(rot))
    u = (c * x + s_ * y) / col(scale)  # head frame: u left-right, v front(-)/back(+)
    v = (-s_ * x + c * y) / col(scale)
    au = np.abs(u)  # the normal anatomy is left-right symmetric
    rho = np.sqrt((u / col(half_w)) ** 2 + (v / col(half_h)) ** 2)
    phi = np.arctan2(v, u)
    ppu = col(px_per_unit * half_h)  # pixels per unit of rho (approximately)

    # ---- normal anatomy
    head = soft_inside((rho - 1.07) * ppu)
    bone = soft_inside((rho - 1.0) * ppu)
    brain = soft_inside((rho - col(skull_in)) * ppu)
    img = _SCALP * head
    img += (_BONE - _SCALP) * bone
    gyri = 0.035 * np.sin(col(rng.integers(7, 12, n)) * phi + col(rng.uniform(0, 6.3, n)))
    cortex_depth = col(skull_in) - 0.13 + gyri
    grey_white = soft_inside((cortex_depth - rho) * ppu)  # 1 in the cortex band
    tissue = _WHITE + (_GREY - _WHITE) * grey_white
    deep = soft_inside(_ellipse_edge_px(au, v, 0.26, 0.02, 0.11, 0.19, 0.15, 0.11 * ppu))
    tissue += (_DEEP_GREY - tissue) * deep

    # sulci: radial CSF lines in the cortex band, distance measured in pixels
    n_sulci = col(rng.integers(16, 26, n))
    wobble = 0.25 * np.sin(9.0 * rho + col(rng.uniform(0, 6.3, n)))
    turns = phi * n_sulci / (2 * np.pi) + wobble
    sulcus_dist = np.abs(turns - np.round(turns)) * (2 * np.pi / n_sulci) * rho * ppu
    sulcus_width = max(0.95, 0.015 * size)  # half-width in pixels, at least ~1 px
    in_band = np.clip((rho - cortex_depth + 0.03) / 0.05, 0, 1) * brain
    sulci = _ridge(sulcus_dist, sulcus_width) * in_band
    # fissures: interhemispheric (midline, front and back) and Sylvian (lateral)
    mid = _ridge(au * col(px_per_unit), sulcus_width)
    mid = mid * np.clip((np.abs(v) / col(half_h) - 0.45) / 0.1, 0, 1) * brain
    sylvian_v = v - col(rng.normal(-0.02, 0.03, n))
    sylvian = _ridge(sylvian_v * col(px_per_unit), 1.3 * sulcus_width)
    sylvian = sylvian * np.clip((au / col(half_w) - 0.55) / 0.1, 0, 1) * brain
    csf_tracks = np.maximum(np.maximum(sulci, mid), sylvian)
    # lateral ventricles: frontal horns (butterfly) and posteriorly diverging atria
    vent_scale = col(rng.uniform(0.75, 1.35, n))
    vent_px = 0.055 * vent_scale * ppu
    horn = _ellipse_edge_px(au, v, 0.12, -0.2, 0.055 * vent_scale, 0.16 * vent_scale, 0.5, vent_px)
    atrium = _ellipse_edge_px(
        au, v, 0.14, 0.14, 0.05 * vent_scale, 0.22 * vent_scale, -0.4, vent_px
    )
    vent_edge = np.minimum(horn, atrium)
    septum = np.clip(au * col(px_per_unit) - 0.6, 0, 1)  # septum pellucidum splits the horns
    ventricles = soft_inside(vent_edge) * brain * septum
    csf = np.maximum(csf_tracks, ventricles)
    tissue += (_CSF - tissue) * csf
    img += (tissue - img) * brain

    # ---- haemorrhage (one per image)
    size_factor = 1.25 - 0.5 * difficulty
    blood = _GREY + (0.42 - 0.25 * difficulty) * rng.uniform(0.85, 1.15, n)
    alpha = np.zeros_like(img)
    geo = dict(
        u=u, v=v, rho=rho, phi=phi, ppu=ppu, brain=brain, skull_in=skull_in,
        half_w=half_w, half_h=half_h, csf_tracks=csf_tracks, ventricles=ventricles,
        size_factor=size_factor,
    )  # fmt: skip
    oedema = np.zeros_like(img)
    bounds = np.searchsorted(labels, np.arange(len(ICH_CLASSES) + 1))  # labels arrive sorted
    for cls, painter in _PAINTERS.items():
        sel = slice(int(bounds[cls]), int(bounds[cls + 1]))
        if sel.stop > sel.start:
            sub = {k: (a[sel] if isinstance(a, np.ndarray) and a.shape[:1] == (n,) else a)
                   for k, a in geo.items()}  # fmt: skip
            a_cls, oed_cls = painter(sub, rng)
            alpha[sel] = a_cls
            if oed_cls is not None:
                oedema[sel] = oed_cls
    img -= 0.09 * oedema * (1 - alpha)
    img += (col(blood) - img) * alpha
    mask = alpha > 0.5
    _ensure_nonempty(mask, alpha)

    # ---- scanner: cupping, streaks, noise, blur (reconstruction kernel), window
    img -= col(_style_array(styles, sites, "cupping")) * np.clip(1 - rho**2, 0, 1) * brain
    amp = _style_array(styles, sites, "streak_amp")
    count = _style_array(styles, sites, "streak_count").astype(np.int64)
    streak_width = 1.3 + 0.02 * size  # half-width in pixels
    for j in range(int(count.max()) if amp.any() else 0):
        ang = rng.uniform(0, np.pi, n)
        off = rng.normal(0.0, 0.3, n)
        k = size / 2 / streak_width  # line distance in units of the half-width
        xc = x * col(np.cos(ang) * k)
        ys = y * col(np.sin(ang) * k) - col(off * k)
        line = _ridge(xc + ys, 1.0)
        line *= col(amp * (count > j))
        line *= head
        img -= line
    # Noise enters before the blur, so a smoother kernel gives smoother noise, as on a scanner.
    # Uniform noise (cheap to draw) becomes near-Gaussian once blurred; its std is divided by
    # the blur's noise reduction sum(k^2) (separable kernel k), so that noise_std is the std
    # seen in the image.
    blur = _style_array(styles, sites, "blur_px") * (size / 64.0)
    noise = _style_array(styles, sites, "noise_std") * (0.7 + 0.6 * difficulty)
    noise *= np.sqrt(12.0) / (gaussian_kernels(blur) ** 2).sum(axis=1)
    grain = rng.random(img.shape, dtype=f32)
    grain -= 0.5
    grain *= col(noise)
    img += grain
    img = gaussian_blur(img, blur)
    contrast = col(_style_array(styles, sites, "contrast"))
    img = (img - 0.5) * contrast + 0.5 + col(_style_array(styles, sites, "level_shift"))
    img *= head > 0.02  # air outside the head stays black (no window offset there)
    np.clip(img, 0.0, 1.0, out=img)
    return img, mask.astype(f32)


def _ensure_nonempty(mask: np.ndarray, alpha: np.ndarray) -> None:
    """A lesion thinner than a pixel still marks its strongest pixel."""
    empty = np.flatnonzero(~mask.reshape(len(mask), -1).any(axis=1))
    for i in empty:
        mask[i].flat[int(np.argmax(alpha[i]))] = True


def _sector_sq(phi: np.ndarray, centre: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Squared normalised angular distance ``(delta / w)^2`` of ``phi`` from ``centre``.

    Uses the chord ``delta^2 ~ 2 (1 - cos delta)``: exact near the centre, monotone in
    ``|delta|`` up to the opposite side, and free of angle wrapping.
    """
    chord = np.cos(phi - centre[:, None, None])
    np.subtract(1.0, chord, out=chord)
    chord *= 2.0 / (half_width[:, None, None] ** 2)
    return chord


def _lateral_angle(rng, n):
    """Angles of points along the convexity, avoiding the midline front and back."""
    side = rng.choice([0.0, np.pi], n)
    return (side + rng.uniform(-1.1, 1.1, n)).astype(np.float32)


def _paint_extra_axial(g, rng, *, half_width, thickness, crescent):
    """A collection between skull and brain, thickest at the arc's centre.

    Per image, the arc's half-width (normalised angle) ``w ~ U(half_width) * f^(1/2)`` and the
    maximum thickness ``t_max ~ U(thickness) * f`` (``f`` the difficulty's size factor); the
    thickness along the arc is ``t(d) = t_max (1 - d^2)`` (biconvex lens, EDH) or
    ``t_max sqrt(1 - d^2)`` (flat crescent, SDH), ``d`` the normalised angular distance.
    Returns the coverage and no oedema.
    """
    n = g["u"].shape[0]
    width = rng.uniform(*half_width, n).astype(np.float32) * g["size_factor"] ** 0.5
    t_max = rng.uniform(*thickness, n).astype(np.float32) * g["size_factor"]
    centre = _lateral_angle(rng, n)
    profile = np.subtract(1.0, _sector_sq(g["phi"], centre, width))
    np.maximum(profile, 0.0, out=profile)
    if crescent:
        np.sqrt(profile, out=profile)
    inner = g["skull_in"][:, None, None] - t_max[:, None, None] * profile
    coverage = soft_inside((inner - g["rho"]) * g["ppu"])
    coverage *= profile > 0
    coverage *= g["brain"]
    return coverage, None


def _paint_edh(g, rng):
    return _paint_extra_axial(
        g, rng, half_width=(0.28, 0.45), thickness=(0.13, 0.22), crescent=False
    )


def _paint_sdh(g, rng):
    return _paint_extra_axial(
        g, rng, half_width=(0.8, 1.4), thickness=(0.045, 0.085), crescent=True
    )


def _paint_iph(g, rng):
    n = g["u"].shape[0]
    cu, cv = _sample_parenchymal_centres(g, rng, n)
    radius = rng.uniform(0.09, 0.17, n).astype(np.float32) * g["size_factor"]
    du, dv = g["u"] - cu[:, None, None], g["v"] - cv[:, None, None]
    angle = np.arctan2(dv, du)
    r = np.sqrt(du * du + dv * dv)
    phase = rng.uniform(0, 6.3, (2, n, 1, 1)).astype(np.float32)
    lobes = 1 + 0.18 * np.sin(3 * angle + phase[0]) + 0.08 * np.sin(5 * angle + phase[1])
    edge = radius[:, None, None] * lobes
    px = g["ppu"] / g["half_h"][:, None, None]
    core = soft_inside((r - edge) * px) * g["brain"]
    strength = rng.uniform(0.3, 1.0, (n, 1, 1)).astype(np.float32)
    oedema = soft_inside((r - 1.45 * edge) * px) * g["brain"] * strength
    return core, oedema


def _sample_parenchymal_centres(g, rng, n):
    """Centres inside brain tissue, away from the cortex edge and the ventricles."""
    cu = np.zeros(n, np.float32)
    cv = np.zeros(n, np.float32)
    todo = np.arange(n)
    for _ in range(50):
        if todo.size == 0:
            break
        a = rng.uniform(-0.6, 0.6, todo.size).astype(np.float32)
        b = rng.uniform(-0.65, 0.65, todo.size).astype(np.float32)
        inside = (a / g["half_w"][todo]) ** 2 + (b / g["half_h"][todo]) ** 2 < 0.55**2
        au = np.abs(a)
        clear = np.minimum(
            _ellipse_radius(au, b, 0.12, -0.2, 0.055, 0.16, 0.5),
            _ellipse_radius(au, b, 0.14, 0.14, 0.05, 0.22, -0.4),
        ) > 1.6
        ok = inside & clear
        cu[todo[ok]], cv[todo[ok]] = a[ok], b[ok]
        todo = todo[~ok]
    cu[todo], cv[todo] = 0.3, 0.0  # basal ganglia, the classic hypertensive site
    return cu, cv


def _paint_ivh(g, rng):
    n = g["u"].shape[0]
    # blood settles posteriorly (larger v): fill below a level, one or both sides
    level = rng.uniform(-0.05, 0.22, n).astype(np.float32) + 0.1 * (1 - g["size_factor"])
    side = rng.choice(np.array([-1.0, 1.0, 0.0], np.float32), n, p=[0.3, 0.3, 0.4])
    side_ok = (side[:, None, None] == 0) | (np.sign(g["u"]) == side[:, None, None])
    below = np.clip((g["v"] - level[:, None, None]) * g["ppu"] + 0.5, 0, 1)
    return g["ventricles"] * below * side_ok, None


def _paint_sah(g, rng):
    n = g["u"].shape[0]
    centre = _lateral_angle(rng, n)
    half_width = rng.uniform(0.6, 1.2, n).astype(np.float32) * g["size_factor"] ** 0.5
    region = soft_inside(_sector_sq(g["phi"], centre, half_width) - 1.0)  # fades at the edge
    return g["csf_tracks"] * region, None


_PAINTERS = {EDH: _paint_edh, IPH: _paint_iph, IVH: _paint_ivh, SAH: _paint_sah, SDH: _paint_sdh}


# --------------------------------------------------------------------------- federation


def synthich(
    *,
    split: str = "ich10",
    scale: float = 0.02,
    image_size: int = 64,
    difficulty: float = 0.5,
    test_frac: float = 0.2,
    seed: int = 0,
) -> FederatedDataset:
    """A federated SynthICH dataset with the per-site class mix of an RSNA-ICH split.

    ``split="ich10"``: the 10-client split; its template holds train + test counts, so client
    ``k`` has ``round(scale * M[k, c])`` images of class ``c`` in all (zero cells stay zero, a
    present class keeps >= 1 image), split per cell into train and test with
    ``n_test = min(round_half_up(test_frac * n), n - 1)``.
    ``split="ich5"``: the near-IID 5-client split; its template holds *training* counts, so the
    scaled template is the training table and each cell adds
    ``round_half_up(n_train * test_frac / (1 - test_frac))`` test images.

    Client ``k`` is rendered in site ``k``'s scanner style (:func:`ich_site_style`). Classes
    EDH, IPH, IVH, SAH, SDH. ``info`` holds the ``train_counts`` and ``test_counts`` tables.
    """
    owner = "synthich"
    check_param(owner, "split", split, Options(("ich10", "ich5")))
    check_param(owner, "scale", scale, Interval(float, 0, None, closed="neither"))
    check_param(owner, "image_size", image_size, Interval(int, 16, 512))
    check_param(owner, "difficulty", difficulty, Interval(float, 0, 1))
    check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="left"))
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))
    counts = scale_template(site_template(split), scale)
    if split == "ich10":
        train_counts, test_counts = split_count_table(counts, test_frac)
    else:
        train_counts = counts
        test_counts = np.floor(counts * test_frac / (1 - test_frac) + 0.5).astype(np.int64)

    def render(labels, sites, render_seed):
        return render_synthich(
            labels, sites, image_size=image_size, difficulty=difficulty, seed=render_seed
        )

    return federate_from_counts(
        render,
        train_counts,
        test_counts,
        class_names=ICH_CLASSES,
        client_names=tuple(f"ICH site {k}" for k in range(counts.shape[0])),
        name=f"SynthICH ({split}, scale {scale:g})",
        seed=seed,
        info={
            "split": split,
            "scale": scale,
            "image_size": image_size,
            "difficulty": difficulty,
            "test_frac": test_frac,
            "seed": seed,
            "train_counts": train_counts.tolist(),
            "test_counts": test_counts.tolist(),
        },
    )
