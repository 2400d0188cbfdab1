"""Synthetic convex-probe lung-ultrasound B-mode frames (the embedded default dataset).

Every patient is a small random "scene" in polar (depth x angle) coordinates:
chest wall, ribs with their acoustic shadows, the pleural line and the lung
content below it, which carries the class signs (A-lines, B-lines,
consolidation, effusion).  A frame is produced by

    scene reflectivity -> random scatterers -> RF point-spread function
    -> envelope (analytic signal) -> depth gain -> log compression
    -> scan conversion to the Cartesian fan.

Classes overlap as real ones do: each diseased patient draws a severity in [0.15, 1] that scales
its signs (a mild pneumonia has a small, faint consolidation; a mild covid patient one or two B-lines
and a nearly smooth pleura), some healthy patients show one or two faint B-lines (normal lungs may),
some pneumonia patients B-lines and an irregular pleura, some covid patients a small subpleural
consolidation, and gain, dynamic range and imaging depth vary widely between patients.

The physics stays in polar coordinates because beams are straight lines there:
shadows, B-lines and the depth-dependent lateral blur of a convex probe come
for free, and every convolution is separable and cheap.  Depth ``d`` runs from
0 (probe surface) to 1 (imaging depth); the lateral coordinate ``u`` runs from
-1 to 1 across the sector.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

CLASSES: tuple[str, ...] = ("covid", "pneumonia", "healthy")

MIN_SIZE = 32
TISSUE_GRAY_FRACTION = 0.37
# Coherent interfaces reflect far more than the incoherent sum of tissue scatterers.
SPECULAR_GAIN = 3.0


@dataclass(frozen=True)
class PhantomFrame:
    label: str  # one of CLASSES
    patient_id: str  # e.g. "phantom-covid-003"
    frame_index: int
    image: np.ndarray  # (size, size) uint8 grayscale


@dataclass(frozen=True)
class ScanConversion:
    """Precomputed bilinear lookup from the polar grid into the Cartesian fan."""

    size: int
    pixel_index: np.ndarray  # flat indices of the image pixels inside the sector
    corner_index: np.ndarray  # (4, n) flat indices into the polar grid
    corner_weight: np.ndarray  # (4, n) bilinear weights


@dataclass(frozen=True)
class ImagingSettings:
    gain_db: float
    dynamic_range_db: float
    net_attenuation_db: float  # attenuation left over after the TGC, over the full depth
    noise_floor: float  # electronic noise, keeps shadows grainy instead of flat black
    speckle_memory: float  # correlation of the scatterer field between consecutive frames


@dataclass(frozen=True)
class MotionSettings:
    breath_period: float  # frames
    breath_phase: float
    breath_rows: float  # peak vertical excursion, polar rows
    slide_cols: float  # peak lateral lung sliding, polar columns
    sign_jitter: float  # random-walk step of B-line positions, in u units


@dataclass(frozen=True)
class BLines:
    centers: np.ndarray  # u positions
    widths: np.ndarray  # gaussian sigma in u
    strengths: np.ndarray


@dataclass(frozen=True)
class Scene:
    """Everything about one patient that does not change between frames."""

    n_depth: int
    n_angle: int
    static_diffuse: np.ndarray  # chest wall, pleura, ribs and lung content (random scatterers)
    static_specular: np.ndarray  # thin coherent reflectors (skin, fascia, rib surface, pleura)
    lung_diffuse: np.ndarray  # the part that slides laterally with the lung
    lung_specular: np.ndarray
    aline_diffuse: np.ndarray
    aline_specular: np.ndarray
    bline_depth_profile: np.ndarray  # (n_depth, n_angle): zero above the pleura
    transmission: np.ndarray  # rib shadows
    depth_gain: np.ndarray  # (n_depth,) amplitude factor
    axial_psf: np.ndarray
    lateral_psf: np.ndarray
    base_speckle: np.ndarray
    display_blur: tuple[float, float]
    blines: BLines
    severity: float  # 0 for healthy patients; scales the class signs of diseased ones
    consolidation_width: float  # lateral half-width of a consolidation, in u units (0: none)
    imaging: ImagingSettings
    motion: MotionSettings
    scan: ScanConversion


# ---------------------------------------------------------------------------
# Argument handling and seeding
# ---------------------------------------------------------------------------


def check_label(label: str) -> None:
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; known labels are {', '.join(CLASSES)}")


def check_frame_arguments(n_frames: int, size: int) -> None:
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")


def check_seed(seed: int) -> None:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def patient_seed_sequence(seed: int, label: str, patient_index: int) -> np.random.SeedSequence:
    # crc32 rather than hash(): str hashes are salted per interpreter run.
    check_seed(seed)
    if int(patient_index) != patient_index or patient_index < 0:
        raise ValueError(f"patient_index must be a non-negative integer, got {patient_index!r}")
    label_key = zlib.crc32(label.encode("utf-8"))
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(label_key, int(patient_index)))


def patient_identifier(label: str, patient_index: int) -> str:
    return f"phantom-{label}-{patient_index:03d}"


# ---------------------------------------------------------------------------
# Small random-shape helpers
# ---------------------------------------------------------------------------


def smooth_profile(rng: np.random.Generator, n: int, correlation: float) -> np.ndarray:
    """Unit-variance 1-D random profile with the given correlation length (in samples)."""
    raw = ndimage.gaussian_filter1d(rng.standard_normal(n + 8 * int(correlation + 1)), correlation, mode="wrap")
    trimmed = raw[: n]
    return (trimmed - trimmed.mean()) / (trimmed.std() + 1e-12)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Unit-variance 2-D random texture (e.g. muscle striation, liver-like parenchyma)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / (field.std() + 1e-12)


def soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 as x crosses zero; width keeps edges from aliasing on the grid."""
    return 0.5 * (1.0 + np.tanh(x / max(width, 1e-9)))


def deposit_curve(target: np.ndarray, depth_rows: np.ndarray, amplitude: np.ndarray) -> None:
    """Add a one-sample-thick reflector at a fractional row per column.

    Specular interfaces must stay thin: a thick constant band convolved with
    a band-pass pulse cancels out in its middle and only its edges would echo.
    """
    n_depth, n_angle = target.shape
    cols = np.arange(n_angle)
    rows = np.clip(depth_rows, 0, n_depth - 2)
    top = np.floor(rows).astype(int)
    frac = rows - top
    inside = (depth_rows >= 0) & (depth_rows <= n_depth - 1)
    amp = np.where(inside, amplitude, 0.0)
    target[top, cols] += amp * (1.0 - frac)
    target[top + 1, cols] += amp * frac


def deposit_points(target: np.ndarray, rows: np.ndarray, cols: np.ndarray, amplitude: float) -> None:
    n_depth, n_angle = target.shape
    r = np.rint(rows).astype(int)
    c = np.rint(cols).astype(int)
    keep = (r >= 0) & (r < n_depth) & (c >= 0) & (c < n_angle)
    np.add.at(target, (r[keep], c[keep]), amplitude)


def polar_coordinates(n_depth: int, n_angle: int) -> tuple[np.ndarray, np.ndarray]:
    depth = np.linspace(0.0, 1.0, n_depth)[:, None]
    lateral = np.linspace(-1.0, 1.0, n_angle)[None, :]
    return depth, lateral


# ---------------------------------------------------------------------------
# Geometry: convex probe fan and scan conversion
# ---------------------------------------------------------------------------


def build_scan_conversion(
    size: int, n_depth: int, n_angle: int, probe_radius: float, half_angle: float, top_margin: float
) -> ScanConversion:
    """Map each Cartesian pixel to fractional polar indices once per patient.

    probe_radius and top_margin are fractions of the image size; the apex sits
    above the image so that the probe face (an arc) touches the top edge and
    the fan bottom reaches the bottom edge.
    """
    r_min = probe_radius * size
    apex_y = top_margin * size - r_min
    r_max = (size - 1.0) - apex_y
    apex_x = (size - 1.0) / 2.0

    y, x = np.mgrid[0:size, 0:size].astype(float)
    radius = np.hypot(x - apex_x, y - apex_y)
    angle = np.arctan2(x - apex_x, y - apex_y)

    row = (radius - r_min) / (r_max - r_min) * (n_depth - 1)
    col = (angle + half_angle) / (2.0 * half_angle) * (n_angle - 1)
    inside = (row >= 0) & (row <= n_depth - 1) & (col >= 0) & (col <= n_angle - 1)

    row, col = row[inside], col[inside]
    r0 = np.minimum(np.floor(row).astype(int), n_depth - 2)
    c0 = np.minimum(np.floor(col).astype(int), n_angle - 2)
    fr, fc = row - r0, col - c0
    corner_index = np.stack(
        [r0 * n_angle + c0, r0 * n_angle + c0 + 1, (r0 + 1) * n_angle + c0, (r0 + 1) * n_angle + c0 + 1]
    )
    corner_weight = np.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])
    return ScanConversion(
        size=size,
        pixel_index=np.flatnonzero(inside.ravel()),
        corner_index=corner_index,
        corner_weight=corner_weight,
    )


def scan_convert(polar_image: np.ndarray, scan: ScanConversion) -> np.ndarray:
    flat = polar_image.ravel()
    values = np.einsum("kn,kn->n", flat[scan.corner_index], scan.corner_weight)
    image = np.zeros(scan.size * scan.size, dtype=np.uint8)
    image[scan.pixel_index] = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    return image.reshape(scan.size, scan.size)


# ---------------------------------------------------------------------------
# Point-spread function
# ---------------------------------------------------------------------------


def axial_rf_pulse(sigma: float, period: float) -> np.ndarray:
    """Gaussian-modulated cosine, unit energy so speckle brightness is PSF-independent."""
    half = int(np.ceil(3.5 * sigma))
    z = np.arange(-half, half + 1, dtype=float)
    window = np.exp(-0.5 * (z / sigma) ** 2)
    pulse = window * np.cos(2 * np.pi * z / period)
    # A transducer passes no DC; without this a thick bright band would not cancel inside.
    pulse -= window * (pulse.sum() / window.sum())
    return pulse / np.sqrt(np.sum(pulse**2))


def lateral_beam_profile(sigma: float) -> np.ndarray:
    half = int(np.ceil(3.0 * sigma))
    z = np.arange(-half, half + 1, dtype=float)
    beam = np.exp(-0.5 * (z / sigma) ** 2)
    return beam / np.sqrt(np.sum(beam**2))


# ---------------------------------------------------------------------------
# Scene construction
# ---------------------------------------------------------------------------


def pleural_depth_profile(rng: np.random.Generator, n_angle: int, mean_depth: float) -> np.ndarray:
    """Gently tilted, slightly wavy pleura (depth fraction per column)."""
    u = np.linspace(-1.0, 1.0, n_angle)
    tilt = rng.uniform(-0.03, 0.03) * u
    sag = rng.uniform(-0.015, 0.02) * u**2
    wave = 0.004 * smooth_profile(rng, n_angle, n_angle / 6)
    return mean_depth + tilt + sag + wave


def draw_ribs(rng: np.random.Generator) -> list[tuple[float, float]]:
    """(center u, half-width u) of the ribs framing the intercostal window."""
    half_widths = rng.uniform(0.14, 0.28, size=2)
    left = (-rng.uniform(0.65, 0.95), half_widths[0])
    right = (rng.uniform(0.65, 0.95), half_widths[1])
    roll = rng.uniform()
    if roll < 0.7:
        return [left, right]
    return [left] if roll < 0.85 else [right]


def intercostal_window(ribs: list[tuple[float, float]]) -> tuple[float, float]:
    lo = max([c + w for c, w in ribs if c < 0], default=-1.0)
    hi = min([c - w for c, w in ribs if c > 0], default=1.0)
    return lo, hi


def chest_wall(
    rng: np.random.Generator, depth: np.ndarray, lateral: np.ndarray, pleura: np.ndarray, n_depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Skin, subcutaneous fat, striated muscle and fascia above the pleura."""
    shape = (depth.shape[0], lateral.shape[1])
    scale = n_depth / 256.0
    diffuse = np.zeros(shape)
    specular = np.zeros(shape)

    fat_bottom = pleura * rng.uniform(0.25, 0.5)
    fat_level = rng.uniform(0.35, 0.6)
    muscle_level = rng.uniform(0.6, 0.95)
    # Muscle fibres run parallel to the skin, hence the strongly anisotropic texture.
    striation = smooth_field(rng, shape, (0.8 * scale, 7.0 * scale))
    blotch = smooth_field(rng, shape, (4.0 * scale, 4.0 * scale))

    above_pleura = 1.0 - soft_step(depth - pleura, 0.5 / n_depth)
    in_fat = 1.0 - soft_step(depth - fat_bottom, 1.5 / n_depth)
    tissue = in_fat * fat_level * (1 + 0.25 * blotch) + (1 - in_fat) * muscle_level * (1 + 0.35 * striation)
    near_field = 1.0 + 0.5 * np.exp(-depth / 0.015)
    diffuse += np.clip(tissue, 0.05, None) * near_field * above_pleura

    deposit_curve(specular, np.full(shape[1], 0.006 * n_depth), np.full(shape[1], 2.0))
    for _ in range(rng.integers(2, 5)):
        fraction = rng.uniform(0.2, 0.85)
        rows = (pleura * fraction + 0.004 * smooth_profile(rng, shape[1], shape[1] / 5)) * (n_depth - 1)
        strength = rng.uniform(0.6, 1.6) * np.clip(1 + 0.5 * smooth_profile(rng, shape[1], shape[1] / 8), 0.1, None)
        deposit_curve(specular, rows, strength)
    return diffuse, specular


def rib_layers(
    ribs: list[tuple[float, float]],
    rng: np.random.Generator,
    depth: np.ndarray,
    lateral: np.ndarray,
    pleura: np.ndarray,
    n_depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bright convex rib surfaces and the acoustic shadow beneath each of them."""
    shape = (depth.shape[0], lateral.shape[1])
    u = lateral[0]
    diffuse = np.zeros(shape)
    specular = np.zeros(shape)
    transmission = np.ones(shape)
    for center, half_width in ribs:
        center_col = int(np.argmin(np.abs(u - center)))
        top = pleura[center_col] - rng.uniform(0.02, 0.05)
        across = (u - center) / half_width
        surface = top + rng.uniform(0.015, 0.04) * across**2
        on_rib = np.abs(across) < 1.0
        strength = rng.uniform(2.0, 3.5) * np.clip(1.0 - across**4, 0.0, None)
        deposit_curve(specular, surface * (n_depth - 1), np.where(on_rib, strength, 0.0))
        diffuse += 1.3 * np.exp(-0.5 * ((depth - surface) * n_depth / 2.0) ** 2) * on_rib
        # Soft lateral edges: the beam is wider than the rib edge is sharp.
        lateral_cover = 1.0 - soft_step(np.abs(across) - 1.0, 0.08)
        below_surface = soft_step(depth - surface - 2.0 / n_depth, 1.0 / n_depth)
        shadow_level = rng.uniform(0.04, 0.1)
        transmission *= 1.0 - (1.0 - shadow_level) * lateral_cover * below_surface
    return diffuse, specular, transmission


def pleural_line(
    rng: np.random.Generator,
    depth: np.ndarray,
    pleura: np.ndarray,
    n_depth: int,
    irregularity: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pleural line; irregularity in [0, 1] (covid's) makes it wavy, thick and broken.

    Returns (diffuse, specular, depth used).
    """
    n_angle = pleura.shape[0]
    shape = (n_depth, n_angle)
    diffuse = np.zeros(shape)
    specular = np.zeros(shape)
    line = pleura.copy()
    thickness_rows = rng.uniform(1.0, 1.8)
    continuity = np.ones(n_angle)
    if irregularity > 0:
        line = line + irregularity * rng.uniform(0.004, 0.012) * smooth_profile(rng, n_angle, rng.uniform(2.0, 5.0))
        thickness_rows *= 1.0 + irregularity * rng.uniform(0.8, 2.2)
        broken = np.clip(0.7 + 0.6 * smooth_profile(rng, n_angle, rng.uniform(2.0, 4.0)), 0.12, 1.4)
        continuity = 1.0 + irregularity * (broken - 1.0)
    strength = rng.uniform(2.5, 4.0) * continuity
    deposit_curve(specular, line * (n_depth - 1), strength)
    band = np.exp(-0.5 * ((depth - line) * (n_depth - 1) / thickness_rows) ** 2)
    diffuse += rng.uniform(1.6, 2.4) * band * continuity
    return diffuse, specular, line


def a_lines(
    rng: np.random.Generator, depth: np.ndarray, pleura: np.ndarray, n_depth: int, strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reverberations of the pleura at integer multiples of its depth, fading."""
    shape = (n_depth, pleura.shape[0])
    diffuse = np.zeros(shape)
    specular = np.zeros(shape)
    decay = rng.uniform(0.5, 0.75)
    width_rows = rng.uniform(1.2, 2.2)
    order = 2
    while order * pleura.min() < 1.0 and strength > 0:
        amplitude = strength * decay ** (order - 2)
        line = order * pleura
        deposit_curve(specular, line * (n_depth - 1), np.full(pleura.shape, 2.2 * amplitude))
        diffuse += 1.6 * amplitude * np.exp(-0.5 * ((depth - line) * (n_depth - 1) / width_rows) ** 2)
        order += 1
    return diffuse, specular


def draw_blines(rng: np.random.Generator, window: tuple[float, float], count: int, strength: float = 1.0,
                confluent: float = 0.3) -> BLines:
    """`count` B-lines in the intercostal window; `confluent` is the share that widen into "white lung" bands."""
    lo, hi = window
    centers = np.sort(rng.uniform(lo + 0.04, hi - 0.04, size=count))
    widths = np.where(rng.uniform(size=count) < confluent, rng.uniform(0.04, 0.08, count),
                      rng.uniform(0.012, 0.03, count))
    strengths = strength * rng.uniform(1.4, 2.6, size=count)
    return BLines(centers=centers, widths=widths, strengths=strengths)


NO_BLINES = BLines(np.zeros(0), np.zeros(0), np.zeros(0))


def class_blines(label: str, rng: np.random.Generator, window: tuple[float, float], severity: float) -> BLines:
    """Covid: 1-6 B-lines by severity; pneumonia: sometimes a few; healthy: sometimes one or two faint ones."""
    if label == "covid":
        count = int(np.clip(round(1 + severity * 5 + rng.normal(0, 0.7)), 1, 6))
        return draw_blines(rng, window, count, strength=0.45 + 0.55 * severity)
    if label == "pneumonia" and rng.uniform() < 0.45:
        return draw_blines(rng, window, int(rng.integers(1, 4)), strength=rng.uniform(0.4, 0.9), confluent=0.15)
    if label == "healthy" and rng.uniform() < 0.35:
        return draw_blines(rng, window, int(rng.integers(1, 3)), strength=rng.uniform(0.3, 0.6), confluent=0.0)
    return NO_BLINES


def lung_haze(
    rng: np.random.Generator, depth: np.ndarray, line: np.ndarray, n_depth: int, level: float
) -> np.ndarray:
    """Weak artefactual echo of aerated lung below the pleura."""
    below = soft_step(depth - line - 1.0 / n_depth, 1.0 / n_depth)
    texture = smooth_field(rng, (n_depth, line.shape[0]), (3.0 * n_depth / 256, 3.0))
    return below * level * np.clip(1 + 0.3 * texture, 0.2, None)


def bronchogram_points(
    rng: np.random.Generator, center_u: float, half_width: float, top: float, extent: float
) -> tuple[np.ndarray, np.ndarray]:
    """Branching random walks plus isolated dots, in (depth, u)."""
    depths: list[float] = []
    laterals: list[float] = []
    walkers = [
        (top + rng.uniform(0.15, 0.5) * extent, center_u + rng.uniform(-0.6, 0.6) * half_width, rng.uniform(0, np.pi))
        for _ in range(rng.integers(2, 6))
    ]
    budget = 250
    while walkers and budget > 0:
        d, u, heading = walkers.pop()
        for _ in range(rng.integers(6, 18)):
            budget -= 1
            heading += rng.normal(0.0, 0.3)
            d += 0.006 * np.sin(heading)
            u += 0.012 * np.cos(heading)
            depths.append(d)
            laterals.append(u)
            if rng.uniform() < 0.12:
                walkers.append((d, u, heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9)))
    dots = int(rng.integers(3, 12))
    depths.extend(top + rng.uniform(0.1, 0.9, dots) * extent)
    laterals.extend(center_u + rng.uniform(-0.8, 0.8, dots) * half_width)
    return np.asarray(depths), np.asarray(laterals)


def consolidation_layers(
    rng: np.random.Generator,
    depth: np.ndarray,
    lateral: np.ndarray,
    line: np.ndarray,
    window: tuple[float, float],
    n_depth: int,
    with_effusion: bool,
    size: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Subpleural consolidation (liver-like, with air bronchograms), optional effusion.

    `size` in (0, 1] scales its width, depth and contrast (a mild one is small and faint).

    Returns (diffuse, specular, footprint, haze_keep, half-width in u): footprint is the lateral
    weight where aerated lung (and its A-lines) is replaced; haze_keep is 0
    inside the fluid/tissue region so the air haze does not overlay it.
    """
    n_angle = line.shape[0]
    shape = (n_depth, n_angle)
    u = lateral[0]
    lo, hi = window
    width = hi - lo
    half_width = rng.uniform(0.35, 0.55) * width * size
    center = rng.uniform(lo + half_width * 0.7, hi - half_width * 0.7)
    across = np.clip(np.abs(u - center) / half_width, 0.0, 1.0)
    dome = np.sqrt(1.0 - across**2)

    effusion_thickness = rng.uniform(0.06, 0.16) * dome if with_effusion else np.zeros(n_angle)
    top = line + effusion_thickness
    extent = rng.uniform(0.3, 0.6) * size
    shred = 1.0 + 0.25 * smooth_profile(rng, n_angle, rng.uniform(2.0, 4.0))
    bottom = top + extent * dome * shred

    below_top = soft_step(depth - top, 1.0 / n_depth)
    above_bottom = 1.0 - soft_step(depth - bottom, 1.5 / n_depth)
    footprint_2d = (dome > 0.05) * 1.0
    tissue_mask = below_top * above_bottom * footprint_2d
    fluid_mask = soft_step(depth - line - 1.0 / n_depth, 0.7 / n_depth) * (1.0 - below_top) * footprint_2d

    parenchyma = smooth_field(rng, shape, (2.5 * n_depth / 256, 2.0))
    # A small consolidation is also a faint one: its echo is close to the aerated lung's haze.
    level = rng.uniform(0.8, 1.3) * (0.45 + 0.55 * size)
    diffuse = tissue_mask * level * np.clip(1.0 + 0.4 * parenchyma, 0.15, None)
    specular = np.zeros(shape)

    # The aerated lung behind the consolidation gives an irregular bright border ("shred sign").
    border = np.where(dome > 0.05, rng.uniform(1.0, 2.0) * np.clip(shred, 0.3, None), 0.0)
    deposit_curve(specular, bottom * (n_depth - 1), border)
    diffuse += 1.0 * np.exp(-0.5 * ((depth - bottom) * (n_depth - 1) / 2.0) ** 2) * footprint_2d

    bd, bu = bronchogram_points(rng, center, half_width, float(np.mean(top[dome > 0.5])), extent)
    rows = bd * (n_depth - 1)
    cols = (bu + 1.0) / 2.0 * (n_angle - 1)
    points = np.zeros(shape)
    deposit_points(points, rows, cols, 1.0)
    points *= tissue_mask > 0.5
    diffuse += 2.5 * np.clip(ndimage.gaussian_filter(points, 0.8), 0.0, 0.35) / 0.35
    specular += 1.5 * points

    haze_keep = 1.0 - np.clip(tissue_mask + fluid_mask, 0.0, 1.0)
    footprint = np.clip(dome * 3.0, 0.0, 1.0)
    return diffuse, specular, footprint, haze_keep, float(half_width)


def depth_gain_curve(n_depth: int, net_attenuation_db: float) -> np.ndarray:
    depth = np.linspace(0.0, 1.0, n_depth)
    # The TGC slightly under-compensates deep tissue and over-shoots just below the wall.
    db = -net_attenuation_db * depth + 2.0 * np.exp(-((depth - 0.25) / 0.2) ** 2)
    return 10.0 ** (db / 20.0)


def build_scene(label: str, rng: np.random.Generator, size: int) -> Scene:
    n_depth, n_angle = 2 * size, size
    scale = size / 128.0
    depth, lateral = polar_coordinates(n_depth, n_angle)

    imaging_depth_cm = rng.uniform(7.0, 18.0)
    pleural_cm = rng.uniform(1.6, 3.4)
    mean_pleura = float(np.clip(pleural_cm / imaging_depth_cm, 0.13, 0.32))
    half_angle = np.deg2rad(rng.uniform(30.0, 38.0))
    probe_radius = rng.uniform(0.35, 0.55)
    imaging = ImagingSettings(
        gain_db=rng.uniform(-8.0, 6.0),
        dynamic_range_db=rng.uniform(50.0, 70.0),
        net_attenuation_db=rng.uniform(4.0, 12.0) * imaging_depth_cm / 12.0,
        noise_floor=rng.uniform(0.06, 0.12),
        speckle_memory=rng.uniform(0.78, 0.92),
    )
    motion = MotionSettings(
        breath_period=rng.uniform(10.0, 24.0),
        breath_phase=rng.uniform(0.0, 2 * np.pi),
        breath_rows=rng.uniform(0.3, 1.5) * scale,
        slide_cols=rng.uniform(0.3, 1.2) * scale,
        sign_jitter=rng.uniform(0.002, 0.006),
    )

    pleura = pleural_depth_profile(rng, n_angle, mean_pleura)
    ribs = draw_ribs(rng)
    window = intercostal_window(ribs)

    wall_diffuse, wall_specular = chest_wall(rng, depth, lateral, pleura, n_depth)
    rib_diffuse, rib_specular, transmission = rib_layers(ribs, rng, depth, lateral, pleura, n_depth)
    severity = float(rng.uniform(0.15, 1.0)) if label != "healthy" else 0.0
    irregularity = {"covid": 0.3 + 0.7 * severity,
                    "pneumonia": rng.uniform(0.2, 0.6) if rng.uniform() < 0.35 else 0.0,
                    "healthy": rng.uniform(0.1, 0.3) if rng.uniform() < 0.1 else 0.0}[label]
    pleura_diffuse, pleura_specular, line = pleural_line(rng, depth, pleura, n_depth, irregularity)

    haze_level = rng.uniform(0.18, 0.35)
    haze = lung_haze(rng, depth, line, n_depth, haze_level)
    lung_diffuse = pleura_diffuse.copy()
    lung_specular = pleura_specular.copy()
    aline_footprint = np.ones(n_angle)
    consolidation_width = 0.0
    # Covid shows small subpleural consolidations too, so a consolidation alone does not decide the class.
    consolidation = {"pneumonia": 0.3 + 0.7 * severity,
                     "covid": rng.uniform(0.2, 0.4) if rng.uniform() < 0.25 else 0.0,
                     "healthy": 0.0}[label]
    if consolidation > 0:
        cons_d, cons_s, footprint, haze_keep, consolidation_width = consolidation_layers(
            rng, depth, lateral, line, window, n_depth,
            with_effusion=label == "pneumonia" and rng.uniform() < 0.4 * severity + 0.1, size=consolidation,
        )
        lung_diffuse += cons_d
        lung_specular += cons_s
        haze = haze * haze_keep
        aline_footprint = 1.0 - footprint
        # Over a consolidation the pleura is no longer backed by air and looks dimmer.
        lung_specular[: int(n_depth * (mean_pleura + 0.05))] *= 1.0 - 0.5 * footprint
    lung_diffuse += haze

    aline_strength = {
        "healthy": rng.uniform(0.4, 1.1),
        "pneumonia": rng.uniform(0.15, 0.7) * (1.2 - 0.8 * severity),
        "covid": rng.uniform(0.0, 0.5) * (1.0 - severity),
    }[label]
    aline_diffuse, aline_specular = a_lines(rng, depth, pleura, n_depth, aline_strength)
    aline_diffuse *= aline_footprint
    aline_specular *= aline_footprint

    blines = class_blines(label, rng, window, severity)
    gain = depth_gain_curve(n_depth, imaging.net_attenuation_db)
    below_pleura = soft_step(depth - line - 1.0 / n_depth, 1.0 / n_depth)
    # B-lines are "laser-like": they do not fade with depth, so undo most of the attenuation.
    bline_depth_profile = below_pleura * (gain[:, None] ** -0.85)

    scan = build_scan_conversion(size, n_depth, n_angle, probe_radius, half_angle, top_margin=rng.uniform(0.0, 0.03))
    return Scene(
        n_depth=n_depth,
        n_angle=n_angle,
        static_diffuse=wall_diffuse + rib_diffuse,
        static_specular=wall_specular + rib_specular,
        lung_diffuse=lung_diffuse,
        lung_specular=lung_specular,
        aline_diffuse=aline_diffuse,
        aline_specular=aline_specular,
        bline_depth_profile=bline_depth_profile,
        transmission=transmission,
        depth_gain=gain,
        axial_psf=axial_rf_pulse(sigma=1.6 * scale, period=3.6 * scale),
        lateral_psf=lateral_beam_profile(sigma=1.1 * scale),
        base_speckle=rng.standard_normal((n_depth, n_angle)),
        display_blur=(1.0 * scale, 0.6 * scale),
        blines=blines,
        severity=severity,
        consolidation_width=consolidation_width,
        imaging=imaging,
        motion=motion,
        scan=scan,
    )


# ---------------------------------------------------------------------------
# Per-frame rendering
# ---------------------------------------------------------------------------


def shift_columns(array: np.ndarray, shift: float) -> np.ndarray:
    """Linear-interpolated lateral shift with edge clamping."""
    n = array.shape[-1]
    source = np.clip(np.arange(n) - shift, 0, n - 1)
    left = np.minimum(np.floor(source).astype(int), n - 2)
    frac = source - left
    return array[..., left] * (1 - frac) + array[..., left + 1] * frac


def shift_rows(array: np.ndarray, shift: float) -> np.ndarray:
    return shift_columns(array.swapaxes(-1, -2), shift).swapaxes(-1, -2)


def bline_lateral_profile(blines: BLines, lateral: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    if blines.centers.size == 0:
        return np.zeros_like(lateral)
    centers = blines.centers[:, None] + offsets[:, None]
    bumps = np.exp(-0.5 * ((lateral[None, :] - centers) / blines.widths[:, None]) ** 2)
    return np.sum(bumps * (blines.strengths * weights)[:, None], axis=0)


def log_compress(envelope: np.ndarray, imaging: ImagingSettings) -> np.ndarray:
    # Black level tied to the dynamic range so unit-reflectivity tissue lands near gray 95.
    black_db = -TISSUE_GRAY_FRACTION * imaging.dynamic_range_db - imaging.gain_db
    db = 20.0 * np.log10(envelope + 1e-6)
    return (db - black_db) * (255.0 / imaging.dynamic_range_db)


def beamform(scatterers: np.ndarray, scene: Scene) -> np.ndarray:
    """RF image via separable PSF, then envelope as the analytic-signal magnitude."""
    rf = ndimage.convolve1d(scatterers, scene.axial_psf, axis=0, mode="constant")
    rf = ndimage.convolve1d(rf, scene.lateral_psf, axis=1, mode="nearest")
    return np.abs(signal.hilbert(rf, axis=0))


def render_frame(
    scene: Scene,
    frame_index: int,
    speckle: np.ndarray,
    bline_offsets: np.ndarray,
    bline_weights: np.ndarray,
    aline_flicker: float,
) -> np.ndarray:
    motion = scene.motion
    phase = 2 * np.pi * frame_index / motion.breath_period + motion.breath_phase
    breath = motion.breath_rows * np.sin(phase)
    # Sliding is the derivative-like partner of breathing: the lung moves sideways while the wall stays.
    slide = motion.slide_cols * np.cos(phase)

    lateral = np.linspace(-1.0, 1.0, scene.n_angle)
    bline_profile = bline_lateral_profile(scene.blines, lateral, bline_offsets, bline_weights)
    aline_suppression = np.clip(1.0 - 1.5 * bline_profile, 0.0, 1.0)

    lung = np.stack([scene.lung_diffuse, scene.lung_specular])
    lung = shift_columns(lung, slide)
    diffuse = scene.static_diffuse + lung[0] + aline_flicker * scene.aline_diffuse * aline_suppression
    diffuse += scene.bline_depth_profile * bline_profile
    specular = scene.static_specular + lung[1] + aline_flicker * scene.aline_specular * aline_suppression

    layers = shift_rows(np.stack([diffuse, specular]) * scene.transmission, breath)
    amplitude = np.sqrt(layers[0] ** 2 + scene.imaging.noise_floor**2)
    # Specular reflectors get a little incoherent roughness so they are not perfectly smooth.
    scatterers = amplitude * speckle + SPECULAR_GAIN * layers[1] * (1.0 + 0.25 * speckle)

    envelope = beamform(scatterers, scene) * scene.depth_gain[:, None]
    # Scanners low-pass the log image for display; without it speckle looks like salt and pepper.
    display = ndimage.gaussian_filter(log_compress(envelope, scene.imaging), scene.display_blur)
    return scan_convert(display, scene.scan)


def simulate_patient(label: str, patient_index: int, n_frames: int, size: int, seed: int) -> list[PhantomFrame]:
    """All frames of one simulated patient clip; deterministic in (label, patient_index, size, seed)."""
    check_label(label)
    check_frame_arguments(n_frames, size)
    scene_seq, frame_seq = patient_seed_sequence(seed, label, patient_index).spawn(2)
    scene = build_scene(label, np.random.default_rng(scene_seq), int(size))
    frame_rng = np.random.default_rng(frame_seq)

    memory = scene.imaging.speckle_memory
    innovation = np.sqrt(1.0 - memory**2)
    n_blines = scene.blines.centers.size
    bline_offsets = np.zeros(n_blines)
    patient_id = patient_identifier(label, patient_index)
    frames = []
    for index in range(int(n_frames)):
        fresh = frame_rng.standard_normal((scene.n_depth, scene.n_angle))
        speckle = memory * scene.base_speckle + innovation * fresh
        bline_offsets = 0.9 * bline_offsets + frame_rng.normal(0.0, scene.motion.sign_jitter, n_blines)
        bline_weights = np.clip(frame_rng.normal(1.0, 0.12, n_blines), 0.6, 1.4)
        aline_flicker = float(np.clip(frame_rng.normal(1.0, 0.08), 0.7, 1.3))
        image = render_frame(scene, index, speckle, bline_offsets, bline_weights, aline_flicker)
        frames.append(PhantomFrame(label=label, patient_id=patient_id, frame_index=index, image=image))
    return frames


def simulate_dataset(patients: dict[str, int], n_frames: int, size: int = 128, seed: int = 0) -> Iterator[PhantomFrame]:
    """patients maps label -> number of patients, e.g. {"covid": 12, "pneumonia": 4, "healthy": 12}."""
    # Validate eagerly: a generator function would only raise on the first next().
    for label, count in patients.items():
        check_label(label)
        if int(count) != count or count < 0:
            raise ValueError(f"number of patients for {label!r} must be a non-negative integer, got {count!r}")
    check_frame_arguments(n_frames, size)
    check_seed(seed)

    def frames() -> Iterator[PhantomFrame]:
        for label, count in patients.items():
            for patient_index in range(int(count)):
                yield from simulate_patient(label, patient_index, n_frames, size, seed)

    return frames()
