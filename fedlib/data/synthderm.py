"""SynthDerm: procedural dermoscopy-like images at six ISIC-2019-like sites.

SynthDerm is the book's embedded default dataset. Every image shows one skin lesion of one of
the 8 ISIC-2019 classes (MEL, NV, BCC, AK, BKL, DF, VASC, SCC) on skin, seen through one of six
acquisition styles named after the ISIC-2019 centres. Each image comes with a binary lesion mask
(the lesion's pixels) and the mask's bounding box. The per-site class counts follow the ISIC-2019
centre table (FLamby's Fed-ISIC2019), scaled, so the six clients show the label skew of the real
centres; the acquisition styles give them a feature shift.

The generator was designed once from dermoscopy facts and the centre table, before any method
was compared on it; its parameters are not tuned to any result.

How an image is made (all steps vectorized over images with torch, CPU, float32):

1. **Skin**: a Fitzpatrick-like tone (site-dependent mix), low-frequency mottling and
   erythema, fine texture.
2. **Lesion shape**: a star-shaped region ``rho <= r(theta)`` in a rotated, stretched frame with
   ``r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k))``; harmonics k = 1..3 carry asymmetry,
   k = 4..12 border irregularity. The mask is exactly the pixels whose centre lies inside.
3. **Lesion colour and structures**: a class palette (body colour plus colour blotches), a
   central patch, pigment network, dots, arborizing vessels, lacunae, cerebriform ridges, scale;
   see :data:`CLASS_APPEARANCE`.
4. **Acquisition** (:data:`SITE_STYLES`): hairs, illumination gradient, colour cast, blur,
   dermoscope vignette, sensor or film noise, saturation and contrast, 8-bit quantization.

Randomness is counter-based: every per-image random number is a hash of ``(seed, index, stream,
slot)``, and pixel noise is read from a seed-dependent bank of noise fields at a per-image
offset. An image therefore depends only on ``(seed, index, label, site, image_size,
difficulty)``, not on the other images rendered with it, and the same inputs give bit-identical
tensors (for a fixed torch build and thread count; outputs are quantized to multiples of 1/255).

``difficulty`` d in [0, 1] moves the parameters of each confusable pair (MEL/NV, BCC/BKL,
AK/SCC) towards each other, ``theta_c(d) = theta_c + 0.4 d (theta_partner - theta_c)`` (the gap
shrinks to 20 % at d = 1, so pairs overlap strongly but not totally), and scales the within-class
spread of every parameter by ``0.5 + d``.

References
----------
Tschandl, Rosendahl, Kittler, "The HAM10000 dataset, a large collection of multi-source
dermatoscopic images of common pigmented skin lesions", Sci. Data 5, 2018.
Combalia et al., "BCN20000: Dermoscopic lesions in the wild", arXiv:1908.02288, 2019.
Ogier du Terrail et al., "FLamby: Datasets and benchmarks for cross-silo federated learning in
realistic healthcare settings", NeurIPS Datasets and Benchmarks, 2022 (Fed-ISIC2019).
Marghoob, Braun, Malvehy (eds.), "Atlas of Dermoscopy", 2nd ed., 2012 (dermoscopic criteria).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np
import torch

from fedlib._validation import NONE, AnyOf, Interval, Options, check_param
from fedlib.data._geometry import masks_to_boxes
from fedlib.data._render import render_in_chunks
from fedlib.data._synthderm_render import (
    COLOUR_FIELDS,
    Colour,
    image_parameters,
    noise_bank,
    render_chunk,
)
from fedlib.data.base import ArrayDataset, FederatedDataset
from fedlib.data.templates import (
    ISIC2019_CENTRES,
    ISIC2019_CLASSES,
    scale_template,
    site_template,
)

__all__ = [
    "CLASS_APPEARANCE",
    "CONFUSABLE_PAIRS",
    "SITE_STYLES",
    "SUPPORTED_IMAGE_SIZES",
    "ClassAppearance",
    "SiteStyle",
    "appearance_at_difficulty",
    "masks_to_boxes",
    "render_rate",
    "render_synthderm",
    "synthderm",
    "synthderm_test_counts",
]

SUPPORTED_IMAGE_SIZES = (28, 32, 64, 128)
NUM_CLASSES = len(ISIC2019_CLASSES)


# --------------------------------------------------------------------------------------------
# Class palette (sRGB in [0, 1], as the colours look on fair skin under polarized dermoscopy)
# --------------------------------------------------------------------------------------------

TAN: Colour = (0.76, 0.57, 0.42)
LIGHT_BROWN: Colour = (0.66, 0.45, 0.31)
BROWN: Colour = (0.52, 0.33, 0.21)
DARK_BROWN: Colour = (0.33, 0.20, 0.13)
BLACK: Colour = (0.14, 0.10, 0.09)
BLUE_GREY: Colour = (0.48, 0.52, 0.58)
PINK: Colour = (0.92, 0.64, 0.63)
PEARLY_PINK: Colour = (0.95, 0.79, 0.78)
PINK_RED: Colour = (0.86, 0.48, 0.46)
RED: Colour = (0.78, 0.24, 0.27)
ROSE: Colour = (0.76, 0.40, 0.48)
DARK_PURPLE: Colour = (0.36, 0.12, 0.28)
WHITE: Colour = (0.97, 0.95, 0.93)
KERATIN: Colour = (0.95, 0.90, 0.74)
DARK_RED_BROWN: Colour = (0.42, 0.16, 0.14)


# --------------------------------------------------------------------------------------------
# Class appearance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassAppearance:
    """The mean appearance of one lesion class (per-image values scatter around it).

    Sizes are fractions of the image half-width; "amounts" are strengths in [0, 1] (0 = the
    structure never appears; per-image amounts scatter multiplicatively, so 0 stays 0).

    Attributes
    ----------
    description : str
        The dermoscopic facts the numbers encode.
    radius : float
        Mean lesion radius ``r0``.
    elongation : float
        Aspect ratio minus one of the lesion's stretched frame (0 = round).
    asymmetry : float
        Amplitude of the low harmonics k = 1..3 of ``r(theta)``.
    irregularity : float
        Amplitude of the harmonics k = 4..12 (notched, ragged border).
    edge_fade : float
        How much the colour fades towards the border (0 = sharp, "stuck-on"; 1 = ill-defined).
    opacity : float
        How strongly the lesion colour replaces the skin.
    body, second, third : Colour
        Main colour and two blotch colours.
    second_amount, third_amount : float
        Blotch coverage of the second and third colours (several colours = MEL).
    centre, centre_amount, centre_size : Colour, float, float
        A central patch (white scar of DF, keratin of SCC, dark centre of NV) of relative size
        ``centre_size`` (fraction of the lesion radius).
    white_amount : float
        Whitish areas (regression structures, shiny white structures).
    network, network_colour, network_atypia : float, Colour, float
        Pigment network (or the red pseudo-network of AK) and its irregularity.
    dark_dots, white_dots, red_dots : float
        Dots/globules, milia-like cysts and follicle openings/scale, dotted/glomerular vessels.
    vessels : float
        Arborizing (branching) vessels.
    lacunae : float
        Red-purple lacunae (round, sharply demarcated blobs).
    ridges : float
        Cerebriform fissures and ridges.
    roughness : float
        Rough, scaly surface texture.
    """

    description: str
    radius: float
    elongation: float
    asymmetry: float
    irregularity: float
    edge_fade: float
    opacity: float
    body: Colour
    second: Colour
    third: Colour
    second_amount: float
    third_amount: float
    centre: Colour
    centre_amount: float
    centre_size: float
    white_amount: float
    network: float
    network_colour: Colour
    network_atypia: float
    dark_dots: float
    white_dots: float
    red_dots: float
    vessels: float
    lacunae: float
    ridges: float
    roughness: float


CLASS_APPEARANCE: dict[str, ClassAppearance] = {
    "MEL": ClassAppearance(
        description=(
            "Melanoma: large, asymmetric in shape and colour, irregular notched border; several "
            "colours (light and dark brown, black, blue-grey) in blotches, whitish regression "
            "areas, atypical (broadened, irregular) pigment network, irregular dots."
        ),
        radius=0.60, elongation=0.25, asymmetry=0.16, irregularity=0.08, edge_fade=0.25,
        opacity=0.92, body=BROWN, second=BLACK, third=BLUE_GREY, second_amount=0.7,
        third_amount=0.35, centre=DARK_BROWN, centre_amount=0.0, centre_size=0.5,
        white_amount=0.35, network=0.45, network_colour=DARK_BROWN, network_atypia=0.8,
        dark_dots=0.45, white_dots=0.0, red_dots=0.05, vessels=0.0, lacunae=0.0, ridges=0.0,
        roughness=0.2,
    ),
    "NV": ClassAppearance(
        description=(
            "Melanocytic nevus: round or oval, symmetric, smooth border; uniform light-to-mid "
            "brown, often slightly darker in the centre; regular pigment network fading at the "
            "periphery, few regular globules."
        ),
        radius=0.42, elongation=0.12, asymmetry=0.03, irregularity=0.015, edge_fade=0.45,
        opacity=0.85, body=LIGHT_BROWN, second=BROWN, third=DARK_BROWN, second_amount=0.25,
        third_amount=0.0, centre=DARK_BROWN, centre_amount=0.25, centre_size=0.45,
        white_amount=0.0, network=0.55, network_colour=DARK_BROWN, network_atypia=0.1,
        dark_dots=0.12, white_dots=0.0, red_dots=0.0, vessels=0.0, lacunae=0.0, ridges=0.0,
        roughness=0.05,
    ),
    "BCC": ClassAppearance(
        description=(
            "Basal cell carcinoma: pinkish, pearly translucent background; thin bright-red "
            "arborizing (branching) vessels; blue-grey ovoid nests, shiny white areas, "
            "occasional ulceration (dark red crust); no pigment network."
        ),
        radius=0.48, elongation=0.25, asymmetry=0.08, irregularity=0.04, edge_fade=0.35,
        opacity=0.6, body=PEARLY_PINK, second=BLUE_GREY, third=DARK_RED_BROWN,
        second_amount=0.35, third_amount=0.2, centre=WHITE, centre_amount=0.0,
        centre_size=0.5, white_amount=0.3, network=0.0, network_colour=DARK_BROWN,
        network_atypia=0.0, dark_dots=0.15, white_dots=0.0, red_dots=0.0, vessels=0.9,
        lacunae=0.0, ridges=0.0, roughness=0.1,
    ),
    "AK": ClassAppearance(
        description=(
            "Actinic keratosis: faint, ill-defined pinkish-red patch on sun-damaged skin; red "
            "pseudo-network around white-yellow follicle openings ('strawberry pattern'), "
            "surface scale, rough texture."
        ),
        radius=0.45, elongation=0.2, asymmetry=0.06, irregularity=0.05, edge_fade=0.8,
        opacity=0.5, body=PINK_RED, second=PINK, third=TAN, second_amount=0.3,
        third_amount=0.15, centre=KERATIN, centre_amount=0.15, centre_size=0.6,
        white_amount=0.0, network=0.35, network_colour=RED, network_atypia=0.3, dark_dots=0.0,
        white_dots=0.55, red_dots=0.1, vessels=0.05, lacunae=0.0, ridges=0.0, roughness=0.55,
    ),
    "BKL": ClassAppearance(
        description=(
            "Benign keratosis (seborrheic keratosis, solar lentigo, lichen-planus-like "
            "keratosis): waxy tan to brown, sharply demarcated 'stuck-on' border, cerebriform "
            "fissures and ridges, milia-like cysts (white dots), comedo-like openings (dark "
            "dots), faint network in lentigines."
        ),
        radius=0.50, elongation=0.3, asymmetry=0.05, irregularity=0.04, edge_fade=0.1,
        opacity=0.85, body=TAN, second=LIGHT_BROWN, third=BROWN, second_amount=0.4,
        third_amount=0.25, centre=TAN, centre_amount=0.0, centre_size=0.5, white_amount=0.0,
        network=0.15, network_colour=BROWN, network_atypia=0.2, dark_dots=0.3,
        white_dots=0.35, red_dots=0.0, vessels=0.05, lacunae=0.0, ridges=0.55, roughness=0.35,
    ),
    "DF": ClassAppearance(
        description=(
            "Dermatofibroma: small, round, light-brown ring with a delicate peripheral pigment "
            "network and a central white scar-like patch."
        ),
        radius=0.28, elongation=0.1, asymmetry=0.04, irregularity=0.02, edge_fade=0.6,
        opacity=0.75, body=LIGHT_BROWN, second=BROWN, third=BROWN, second_amount=0.15,
        third_amount=0.0, centre=WHITE, centre_amount=0.8, centre_size=0.5, white_amount=0.0,
        network=0.5, network_colour=BROWN, network_atypia=0.1, dark_dots=0.0, white_dots=0.0,
        red_dots=0.0, vessels=0.0, lacunae=0.0, ridges=0.0, roughness=0.1,
    ),
    "VASC": ClassAppearance(
        description=(
            "Vascular lesion (angioma, angiokeratoma, pyogenic granuloma, haemorrhage): "
            "sharply demarcated, red to dark purple lacunae (round blobs) separated by paler "
            "septa."
        ),
        radius=0.34, elongation=0.15, asymmetry=0.05, irregularity=0.025, edge_fade=0.1,
        opacity=0.9, body=ROSE, second=DARK_PURPLE, third=RED, second_amount=0.3,
        third_amount=0.0, centre=WHITE, centre_amount=0.0, centre_size=0.5, white_amount=0.0,
        network=0.0, network_colour=DARK_BROWN, network_atypia=0.0, dark_dots=0.0,
        white_dots=0.0, red_dots=0.0, vessels=0.0, lacunae=0.9, ridges=0.0, roughness=0.05,
    ),
    "SCC": ClassAppearance(
        description=(
            "Squamous cell carcinoma: pink-red keratotic lesion with a white-yellow keratin "
            "mass in the centre, dotted/glomerular vessels, white scale, rough surface."
        ),
        radius=0.50, elongation=0.2, asymmetry=0.07, irregularity=0.04, edge_fade=0.5,
        opacity=0.7, body=PINK_RED, second=RED, third=KERATIN, second_amount=0.3,
        third_amount=0.25, centre=KERATIN, centre_amount=0.75, centre_size=0.55,
        white_amount=0.15, network=0.1, network_colour=RED, network_atypia=0.3, dark_dots=0.0,
        white_dots=0.35, red_dots=0.55, vessels=0.15, lacunae=0.0, ridges=0.0, roughness=0.6,
    ),
}

#: Pairs that dermatologists (and classifiers) confuse; ``difficulty`` blends them.
CONFUSABLE_PAIRS = (("MEL", "NV"), ("BCC", "BKL"), ("AK", "SCC"))
PAIR_BLEND_AT_MAX = 0.4  # each member moves 40 % of the way to its partner at difficulty 1
#: Within-class spread multiplier ``a + b * difficulty``: 0.5 at difficulty 0, 1.5 at 1.
WITHIN_CLASS_SPREAD = (0.5, 1.0)

_SCALAR_FIELDS = tuple(
    f.name for f in fields(ClassAppearance) if f.name not in ("description", *COLOUR_FIELDS)
)


def _appearance_vector(a: ClassAppearance) -> np.ndarray:
    return np.array(
        [getattr(a, n) for n in _SCALAR_FIELDS] + [v for n in COLOUR_FIELDS for v in getattr(a, n)]
    )


def _vector_to_dict(v: np.ndarray) -> dict[str, np.ndarray]:
    """Split (..., D) appearance vectors into named (...,) scalars and (..., 3) colours."""
    out = {n: v[..., i] for i, n in enumerate(_SCALAR_FIELDS)}
    base = len(_SCALAR_FIELDS)
    for j, n in enumerate(COLOUR_FIELDS):
        out[n] = v[..., base + 3 * j : base + 3 * j + 3]
    return out


def appearance_at_difficulty(difficulty: float) -> np.ndarray:
    """Class appearance vectors after the confusable-pair blend, shape (8, D).

    ``theta_c(d) = theta_c + PAIR_BLEND_AT_MAX * d * (theta_partner(c) - theta_c)`` for the
    classes in :data:`CONFUSABLE_PAIRS`; DF and VASC have no partner and stay unchanged.
    Rows follow ``ISIC2019_CLASSES``.
    """
    check_param("appearance_at_difficulty", "difficulty", difficulty, Interval(float, 0, 1))
    base = np.stack([_appearance_vector(CLASS_APPEARANCE[c]) for c in ISIC2019_CLASSES])
    blended = base.copy()
    index = {c: i for i, c in enumerate(ISIC2019_CLASSES)}
    for a, b in CONFUSABLE_PAIRS:
        ia, ib = index[a], index[b]
        w = PAIR_BLEND_AT_MAX * float(difficulty)
        blended[ia] = base[ia] + w * (base[ib] - base[ia])
        blended[ib] = base[ib] + w * (base[ia] - base[ib])
    return blended


# --------------------------------------------------------------------------------------------
# Site styles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteStyle:
    """The acquisition style of one site (camera, dermoscope, storage, patient population).

    Attributes
    ----------
    name : str
        The ISIC-2019 centre it stands for.
    description : str
        What the style imitates, and why.
    skin_tone, skin_tone_spread : float
        Mean and spread of the skin tone (0 = very fair .. 1 = dark).
    erythema : float
        Background redness (sun damage).
    colour_gain : Colour
        Per-channel gains (R, G, B): the colour cast.
    brightness : float
        Overall exposure factor.
    illumination : float
        Maximum strength of a linear illumination gradient across the image.
    blur : float
        Gaussian blur sigma as a fraction of the image width.
    vignette_prob, vignette_radius, vignette_softness, vignette_depth : float
        Probability of a dark circular border (the dermoscope's field of view), its radius in
        half-widths (1 = touches the image edges), edge width and darkness (1 = black).
    hair_rate : float
        Mean number of hairs per image (at most 6).
    noise : float
        Standard deviation of pixel noise (sensor noise or film grain).
    saturation, contrast : float
        Colour saturation and contrast factors (1 = unchanged; < 1 = faded).
    """

    name: str
    description: str
    skin_tone: float
    skin_tone_spread: float
    erythema: float
    colour_gain: Colour
    brightness: float
    illumination: float
    blur: float
    vignette_prob: float
    vignette_radius: float
    vignette_softness: float
    vignette_depth: float
    hair_rate: float
    noise: float
    saturation: float
    contrast: float


SITE_STYLES: tuple[SiteStyle, ...] = (
    SiteStyle(
        name="BCN",
        description=(
            "Hospital Clinic Barcelona (BCN20000): modern dermoscopy, sharp and neutral, most "
            "images show the black circular border of the dermoscope's field of view."
        ),
        skin_tone=0.28, skin_tone_spread=0.12, erythema=0.2, colour_gain=(1.0, 0.98, 1.02),
        brightness=1.0, illumination=0.10, blur=0.004, vignette_prob=0.85,
        vignette_radius=0.98, vignette_softness=0.03, vignette_depth=0.97, hair_rate=1.5,
        noise=0.010, saturation=1.05, contrast=1.05,
    ),
    SiteStyle(
        name="HAM_vidir_molemax",
        description=(
            "ViDIR Vienna, MoleMax HD video dermoscopy: an older, lower-resolution camera "
            "(blur), yellowish cast, no vignette."
        ),
        skin_tone=0.20, skin_tone_spread=0.10, erythema=0.15, colour_gain=(1.05, 1.0, 0.82),
        brightness=1.0, illumination=0.08, blur=0.018, vignette_prob=0.0,
        vignette_radius=1.0, vignette_softness=0.05, vignette_depth=0.0, hair_rate=0.8,
        noise=0.015, saturation=0.9, contrast=0.95,
    ),
    SiteStyle(
        name="HAM_vidir_modern",
        description=(
            "ViDIR Vienna, current digital dermatoscope: sharp, neutral colour, even light, "
            "occasionally a soft vignette."
        ),
        skin_tone=0.20, skin_tone_spread=0.10, erythema=0.15, colour_gain=(1.0, 1.0, 1.0),
        brightness=1.02, illumination=0.05, blur=0.006, vignette_prob=0.2,
        vignette_radius=1.15, vignette_softness=0.10, vignette_depth=0.6, hair_rate=1.0,
        noise=0.008, saturation=1.0, contrast=1.0,
    ),
    SiteStyle(
        name="HAM_rosendahl",
        description=(
            "Skin cancer practice in Queensland, Australia: fair, sun-damaged skin (erythema), "
            "several cameras over the years (warm cast, uneven light), more hairs."
        ),
        skin_tone=0.12, skin_tone_spread=0.08, erythema=0.45, colour_gain=(1.06, 0.97, 0.95),
        brightness=0.98, illumination=0.18, blur=0.010, vignette_prob=0.3,
        vignette_radius=1.05, vignette_softness=0.06, vignette_depth=0.8, hair_rate=2.5,
        noise=0.012, saturation=1.1, contrast=1.0,
    ),
    SiteStyle(
        name="MSK",
        description=(
            "Memorial Sloan Kettering, New York: a more diverse population (wider skin tones), "
            "mixed devices, cooler (bluish) cast, moderate blur and illumination gradients."
        ),
        skin_tone=0.32, skin_tone_spread=0.20, erythema=0.2, colour_gain=(0.94, 0.99, 1.08),
        brightness=0.97, illumination=0.12, blur=0.012, vignette_prob=0.4,
        vignette_radius=1.0, vignette_softness=0.05, vignette_depth=0.85, hair_rate=1.2,
        noise=0.012, saturation=0.95, contrast=1.0,
    ),
    SiteStyle(
        name="HAM_vienna_dias",
        description=(
            "ViDIR Vienna legacy set: diapositives (slide film) scanned years later: magenta "
            "cast of aged dyes, faded saturation and contrast, film grain, soft focus, slide-"
            "mount vignette."
        ),
        skin_tone=0.20, skin_tone_spread=0.10, erythema=0.2, colour_gain=(1.08, 0.93, 1.02),
        brightness=1.0, illumination=0.15, blur=0.014, vignette_prob=0.6,
        vignette_radius=1.02, vignette_softness=0.08, vignette_depth=0.7, hair_rate=1.0,
        noise=0.03, saturation=0.8, contrast=0.85,
    ),
)


def _site_values(sites: np.ndarray) -> dict[str, np.ndarray]:
    """Each image's site style as arrays: (N,) per field, (N, 3) for the colour gain."""
    table = {
        f.name: np.asarray([getattr(s, f.name) for s in SITE_STYLES], dtype=np.float64)
        for f in fields(SiteStyle)
        if f.name not in ("name", "description")
    }
    return {name: values[sites] for name, values in table.items()}


def _class_means(labels: np.ndarray, difficulty: float) -> dict[str, np.ndarray]:
    """Each image's class means after the confusable-pair blend: (N,) per field, (N, 3) colours."""
    return _vector_to_dict(appearance_at_difficulty(difficulty)[labels])



# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _as_int(value):
    """numpy integers behave as ints for validation; bools do not."""
    if isinstance(value, np.integer) and not isinstance(value, np.bool_):
        return int(value)
    return value


def _check_common(owner: str, image_size, difficulty, seed) -> tuple[int, float, int]:
    image_size, seed = _as_int(image_size), _as_int(seed)
    check_param(owner, "image_size", image_size, Options(SUPPORTED_IMAGE_SIZES))
    check_param(owner, "difficulty", difficulty, Interval(float, 0, 1, closed="both"))
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))
    return int(image_size), float(difficulty), int(seed)


def _check_int_array(owner: str, name: str, values, n: int | None, high: int | None) -> np.ndarray:
    array = np.asarray(values.cpu().numpy() if isinstance(values, torch.Tensor) else values)
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        want = "a 1-D array" + ("" if n is None else f" of length {n}")
        raise ValueError(f"{owner}: {name!r} must be {want}, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{owner}: {name!r} must hold integers, got dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or (high is not None and array.max() >= high)):
        bad = array[(array < 0) | ((array >= high) if high is not None else False)][0]
        allowed = f"in 0..{high - 1}" if high is not None else ">= 0"
        raise ValueError(f"{owner}: {name!r} values must be {allowed}, got {int(bad)}.")
    return array


def render_synthderm(
    labels: np.ndarray,
    sites: np.ndarray,
    *,
    image_size: int = 32,
    difficulty: float = 0.5,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render SynthDerm images for given classes and sites.

    Parameters
    ----------
    labels : array of int, shape (N,)
        Class of each image, ``0..7`` in the order of ``ISIC2019_CLASSES``
        (MEL, NV, BCC, AK, BKL, DF, VASC, SCC).
    sites : array of int, shape (N,)
        Acquisition style of each image, ``0..5`` in the order of :data:`SITE_STYLES`.
    image_size : int, default 32
        Height and width in pixels: one of 28, 32, 64, 128. Geometry and colours are defined
        in image-relative units and drawn from the same random numbers at every size, so an
        image at two sizes shows the same lesion (fine texture and noise differ).
    difficulty : float in [0, 1], default 0.5
        Overlap of the confusable pairs (MEL/NV, BCC/BKL, AK/SCC) and within-class spread.
    seed : int >= 0, default 0
    indices : array of int >= 0, shape (N,), optional
        The images' positions in the generating stream; default ``0..N-1``. Image ``i`` depends
        only on ``(seed, indices[i], labels[i], sites[i], image_size, difficulty)``, so a subset
        can be re-rendered alone with identical pixels.

    Returns
    -------
    images : Tensor (N, 3, H, W), float32, values k/255 in [0, 1]
    masks : Tensor (N, 1, H, W), float32 in {0, 1}
        The lesion's pixels (pixel centre inside the lesion boundary); never empty.
    boxes : Tensor (N, 4), int64
        ``(x0, y0, x1, y1)``, the mask's bounding box with exclusive ends.

    Examples
    --------
    >>> import numpy as np
    >>> images, masks, boxes = render_synthderm(np.array([0, 1]), np.array([0, 4]))
    >>> tuple(images.shape), tuple(masks.shape), tuple(boxes.shape)
    ((2, 3, 32, 32), (2, 1, 32, 32), (2, 4))
    """
    owner = "render_synthderm"
    image_size, difficulty, seed = _check_common(owner, image_size, difficulty, seed)
    labels = _check_int_array(owner, "labels", labels, None, NUM_CLASSES)
    n = labels.shape[0]
    sites = _check_int_array(owner, "sites", sites, n, len(SITE_STYLES))
    indices = (
        np.arange(n, dtype=np.int64)
        if indices is None
        else _check_int_array(owner, "indices", indices, n, None)
    )
    bank = noise_bank(seed, image_size)
    spread = WITHIN_CLASS_SPREAD[0] + WITHIN_CLASS_SPREAD[1] * difficulty

    def render(rows):
        params = image_parameters(
            _class_means(labels[rows], difficulty),
            _site_values(sites[rows]),
            indices[rows],
            image_size=image_size,
            spread=spread,
            seed=seed,
        )
        return render_chunk(params, image_size, bank)

    # Render in order of (site blur, site, class): rows that share a blur radius or a structure
    # then form contiguous spans (views). Every image is computed on its own, so the order
    # changes no pixel. Chunks of about 2**18 pixels bound memory to a few tens of MB and keep
    # a chunk's working set small enough for the CPU caches (faster than 2**19 at 32 x 32).
    site_blur = np.array([s.blur for s in SITE_STYLES])
    order = np.lexsort((labels, sites, site_blur[sites]))
    return render_in_chunks(
        render, n, image_size, channels=3, order=order, chunk_pixels=2**18, min_chunk=8
    )


def synthderm_test_counts(
    train_counts: np.ndarray, test_frac: float = 0.2, *, min_test: int = 1
) -> np.ndarray:
    """Test counts per (site, class) so that each cell's test share is about ``test_frac``.

    ``test = floor(train * test_frac / (1 - test_frac) + 1/2)``, raised to ``min_test`` in every
    cell with at least one training image (so a client's test split contains every class it
    trains on), and 0 where ``train == 0``.

    >>> synthderm_test_counts(np.array([[8, 1, 0]]), 0.2).tolist()
    [[2, 1, 0]]
    """
    owner = "synthderm_test_counts"
    check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="neither"))
    check_param(owner, "min_test", _as_int(min_test), Interval(int, 0, None, closed="left"))
    train = np.asarray(train_counts, dtype=np.int64)
    if (train < 0).any():
        raise ValueError(f"{owner}: 'train_counts' must be >= 0, got {int(train.min())}.")
    test = np.floor(train * (test_frac / (1 - test_frac)) + 0.5).astype(np.int64)
    return np.where(train > 0, np.maximum(test, int(min_test)), 0)


def _check_counts(owner: str, counts) -> np.ndarray:
    table = np.asarray(counts)
    k_max = len(SITE_STYLES)
    if table.ndim != 2 or table.shape[1] != NUM_CLASSES or not 1 <= table.shape[0] <= k_max:
        raise ValueError(
            f"{owner}: 'counts' must be a table of shape (K, {NUM_CLASSES}) with 1 <= K <= "
            f"{k_max} (one row per site style, columns in ISIC-2019 class order), got shape "
            f"{table.shape}."
        )
    if not np.issubdtype(table.dtype, np.integer):
        raise TypeError(f"{owner}: 'counts' must hold integers, got dtype {table.dtype}.")
    if (table < 0).any():
        raise ValueError(f"{owner}: 'counts' must be >= 0, got {int(table.min())}.")
    empty = np.flatnonzero(table.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(
            f"{owner}: every site in 'counts' needs at least one image, got an empty row "
            f"{int(empty[0])}."
        )
    return table.astype(np.int64)


def _rows_for_table(table: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, sites and stream indices for every image of a count table.

    The stream index of image j of cell (site, class) in split s is
    ``((s * 8 + site) * 8 + class) * 2**32 + j``: a cell's first images are the same whatever
    the scale, so a larger SynthDerm extends a smaller one instead of replacing it.
    """
    labels, sites, indices = [], [], []
    for site in range(table.shape[0]):
        for cls in range(table.shape[1]):
            m = int(table[site, cls])
            labels.append(np.full(m, cls, dtype=np.int64))
            sites.append(np.full(m, site, dtype=np.int64))
            indices.append(((split * 8 + site) * 8 + cls) * (1 << 32) + np.arange(m))
    return np.concatenate(labels), np.concatenate(sites), np.concatenate(indices)


def synthderm(
    *,
    scale: float = 0.1,
    image_size: int = 32,
    difficulty: float = 0.5,
    test_frac: float = 0.2,
    seed: int = 0,
    counts: np.ndarray | None = None,
    min_test: int = 1,
) -> FederatedDataset:
    """SynthDerm as a federated dataset: six sites with the ISIC-2019 centres' class mixes.

    Training counts per (site, class) are exactly ``scale_template(site_template("isic2019"),
    scale)`` (the FLamby Fed-ISIC2019 training table, rounded, rare-but-present cells kept at
    >= 1), or ``counts`` when given. Test counts follow :func:`synthderm_test_counts`, so each
    client's test split follows its own class mix (as FLamby's stratified 80/20 split).

    Parameters
    ----------
    scale : float > 0, default 0.1
        Multiplier of the ISIC-2019 table (1.0 = 18,597 training images). Unused when
        ``counts`` is given.
    image_size : {28, 32, 64, 128}, default 32
    difficulty : float in [0, 1], default 0.5
        See :func:`render_synthderm`.
    test_frac : float in (0, 1), default 0.2
        Target test share of every (site, class) cell.
    seed : int >= 0, default 0
    counts : int array (K, 8), optional
        Training counts to use instead of the scaled template; ``K <= 6`` sites take the first
        ``K`` site styles and centre names.
    min_test : int >= 0, default 1
        Minimum test images of a cell that has training images.

    Returns
    -------
    FederatedDataset
        Clients ``0..K-1`` named after the ISIC-2019 centres; every split is an
        :class:`ArrayDataset` with images, labels, masks and boxes, rows shuffled within the
        client. ``info`` holds the generation parameters and both count tables.

    Notes
    -----
    Everything is held in memory: about ``16 H W`` bytes per image (float32 image and mask),
    e.g. about 40 MB at the defaults (about 2,300 images of 32 x 32) and 1.5 GB at ``scale=1.0``,
    ``image_size=64``.

    Examples
    --------
    >>> data = synthderm(scale=0.02)
    >>> data.num_clients, data.class_names[:2]
    (6, ('MEL', 'NV'))
    """
    owner = "synthderm"
    image_size, difficulty, seed = _check_common(owner, image_size, difficulty, seed)
    check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="neither"))
    min_test = _as_int(min_test)
    check_param(owner, "min_test", min_test, Interval(int, 0, None, closed="left"))
    if counts is None:
        check_param(owner, "scale", scale, Interval(float, 0, None, closed="neither"))
        train_counts = scale_template(site_template("isic2019"), float(scale))
    else:
        train_counts = _check_counts(owner, counts)
    test_counts = synthderm_test_counts(train_counts, test_frac, min_test=min_test)
    num_sites = train_counts.shape[0]

    splits = {}
    for split_id, (split, table) in enumerate((("train", train_counts), ("test", test_counts))):
        labels, sites, indices = _rows_for_table(table, split_id)
        images, masks, boxes = render_synthderm(
            labels, sites, image_size=image_size, difficulty=difficulty, seed=seed,
            indices=indices,
        )
        per_site = {}
        for site in range(num_sites):
            rows = np.flatnonzero(sites == site)
            order = np.random.default_rng([seed, split_id, site]).permutation(rows.size)
            rows = torch.from_numpy(rows[order])
            per_site[site] = ArrayDataset(
                images[rows], torch.from_numpy(labels)[rows], masks=masks[rows], boxes=boxes[rows]
            )
        splits[split] = per_site

    return FederatedDataset(
        name="SynthDerm",
        train=splits["train"],
        test=splits["test"],
        class_names=ISIC2019_CLASSES,
        client_names=ISIC2019_CENTRES[:num_sites],
        info={
            "generator": "fedlib.data.synthderm",
            "template": "isic2019" if counts is None else "custom",
            "scale": float(scale) if counts is None else None,
            "image_size": image_size,
            "difficulty": difficulty,
            "test_frac": float(test_frac),
            "min_test": int(min_test),
            "seed": seed,
            "train_counts": train_counts.tolist(),
            "test_counts": test_counts.tolist(),
            "site_styles": [s.name for s in SITE_STYLES[:num_sites]],
        },
    )


def render_rate(
    num_images: int = 10_000,
    image_size: int = 32,
    *,
    difficulty: float = 0.5,
    seed: int = 0,
    num_threads: int | None = 1,
) -> dict:
    """Time :func:`render_synthderm` on a class- and site-balanced batch (for benchmarks).

    Sets torch to ``num_threads`` threads for the measurement and restores the previous value.
    The first call for a (seed, size) also builds the cached noise bank; it is built before the
    clock starts.

    Returns
    -------
    dict
        ``num_images``, ``image_size``, ``num_threads``, ``seconds``, ``images_per_second``.
    """
    owner = "render_rate"
    check_param(owner, "num_images", _as_int(num_images), Interval(int, 1, None, closed="left"))
    image_size, difficulty, seed = _check_common(owner, image_size, difficulty, seed)
    check_param(owner, "num_threads", num_threads, AnyOf(NONE, Interval(int, 1, None)))
    previous = torch.get_num_threads()
    labels = np.arange(num_images) % NUM_CLASSES
    sites = (np.arange(num_images) // NUM_CLASSES) % len(SITE_STYLES)
    noise_bank(seed, image_size)
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        start = time.perf_counter()
        render_synthderm(labels, sites, image_size=image_size, difficulty=difficulty, seed=seed)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return {
        "num_images": int(num_images),
        "image_size": image_size,
        "num_threads": torch.get_num_threads() if num_threads is None else int(num_threads),
        "seconds": seconds,
        "images_per_second": num_images / seconds,
    }
