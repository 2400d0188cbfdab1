"""MedMamba (Yue & Li 2024), the vision-Mamba classifier of the fetal-planes study, in plain PyTorch.

The network is a patch embedding, four stages of SS-Conv-SSM blocks joined by patch merging, global
average pooling and a linear head. Each SS-Conv-SSM block splits its channels in two halves: one goes
through a small conv branch (BN, 3x3, BN, ReLU, 3x3, BN, ReLU, 1x1, ReLU), the other through LayerNorm
and SS2D (a selective state-space model scanned over the token grid in four directions: row-major,
column-major and both reversed); the halves are concatenated, channel-shuffled and added to the input.

The selective scan is written in plain PyTorch, run in float32 and free of the CUDA kernels the original
needs: `selective_scan` is the step-by-step reference recurrence; the network uses `chunked_selective_scan`,
the same arithmetic regrouped into ~2*sqrt(L) Python steps (tests hold it to the reference). Slower
than the fused kernels and memory-hungry at 224 px, but exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

from sonosynth.classify.models.base import ClassifierNet, InputMode
from sonosynth.classify.zoo import register_classifier
from sonosynth.errors import SonosynthError

# The paper's MedMamba-T is the original code's default; "compact" is a narrow, shallow variant for CPUs.
VARIANTS: dict[str, dict] = {
    "compact": {"depths": (1, 1, 2, 1), "dims": (32, 64, 128, 256), "d_state": 8, "drop_path_rate": 0.05},
    "tiny": {"depths": (2, 2, 4, 2), "dims": (96, 192, 384, 768), "d_state": 16, "drop_path_rate": 0.1},
}
SCAN_DIRECTIONS = 4


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor) -> torch.Tensor:
    """The discretised selective SSM, step by step (Mamba's reference recurrence, zero-order hold for A):

        h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    y_t = <C_t, h_t> + D * u_t

    Shapes: u, delta (batch, K, D, L); A (K, D, N); B, C (batch, K, N, L); D (K, D). Returns (batch, K, D, L).
    `delta` is already positive (softplus applied); A is negative for a stable, decaying state.
    """
    batch, k, channels, length = u.shape
    state = u.new_zeros(batch, k, channels, A.shape[-1])
    outputs = []
    for t in range(length):
        step = delta[..., t]
        decay = torch.exp(step.unsqueeze(-1) * A)
        drive = (step * u[..., t]).unsqueeze(-1) * B[:, :, None, :, t]
        state = decay * state + drive
        outputs.append((state * C[:, :, None, :, t]).sum(-1))
    return torch.stack(outputs, dim=-1) + D.unsqueeze(-1) * u


def chunked_selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """The same recurrence as `selective_scan`, with ~2*sqrt(L) Python steps instead of L.

    The sequence is cut into chunks. All chunks are scanned at once from a zero state, keeping each
    step's running decay product; then the states entering each chunk are carried across the chunk
    boundaries; finally every local state gets its carried-in state times its decay product added.
    Only products and sums of the original terms, so it agrees with the step-by-step scan to rounding.
    """
    batch, k, channels, length = u.shape
    n = A.shape[-1]
    chunk = chunk or max(1, math.isqrt(length))
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    decay = torch.exp(delta.unsqueeze(-1) * A[None, :, :, None, :])  # (b, k, d, L, n)
    drive = (delta * u).unsqueeze(-1) * B.transpose(-1, -2).unsqueeze(2)  # (b, k, d, L, n)
    if pad:  # trailing identity steps: they change nothing before them and are cut off below
        decay = F.pad(decay, (0, 0, 0, pad), value=1.0)
        drive = F.pad(drive, (0, 0, 0, pad))
    decay = decay.reshape(batch, k, channels, chunks, chunk, n)
    drive = drive.reshape(batch, k, channels, chunks, chunk, n)
    state = u.new_zeros(batch, k, channels, chunks, n)
    product = u.new_ones(batch, k, channels, chunks, n)
    local_states, products = [], []
    for t in range(chunk):
        state = decay[..., t, :] * state + drive[..., t, :]
        product = product * decay[..., t, :]
        local_states.append(state)
        products.append(product)
    local = torch.stack(local_states, dim=4)  # (b, k, d, chunks, chunk, n)
    cumulative = torch.stack(products, dim=4)
    carry = u.new_zeros(batch, k, channels, n)
    carries = []
    for c in range(chunks):
        carries.append(carry)
        carry = cumulative[:, :, :, c, -1] * carry + local[:, :, :, c, -1]
    states = local + cumulative * torch.stack(carries, dim=3).unsqueeze(4)
    states = states.reshape(batch, k, channels, chunks * chunk, n)[:, :, :, :length]
    return torch.einsum("bkdln,bknl->bkdl", states, C) + D.unsqueeze(-1) * u


def scan_orders(x: torch.Tensor) -> torch.Tensor:
    """(b, d, h, w) -> (b, 4, d, h*w): row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def merge_scan_orders(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `scan_orders` summed over the four directions: (b, 4, d, h*w) -> (b, d, h, w)."""
    batch, _, channels, _ = y.shape
    rows = y[:, 0] + y[:, 2].flip(-1)
    cols = y[:, 1] + y[:, 3].flip(-1)
    cols = cols.reshape(batch, channels, width, height).transpose(2, 3)
    return rows.reshape(batch, channels, height, width) + cols


class SS2D(nn.Module):
    """2D selective scan: in-projection, depthwise conv + SiLU, four-direction selective SSM, gated output."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        k = SCAN_DIRECTIONS
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv2d = nn.Conv2d(self.d_inner, self.d_inner, d_conv, padding=(d_conv - 1) // 2, groups=self.d_inner)
        # One input projection (to dt, B, C) and one dt projection per scan direction.
        bound = 1 / math.sqrt(self.d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, self.d_inner).uniform_(-bound, bound))
        dt_bound = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, self.d_inner, self.dt_rank).uniform_(-dt_bound, dt_bound))
        # Bias chosen so softplus(bias) starts log-uniform in [dt_min, dt_max] (Mamba's initialisation).
        dt = torch.exp(torch.rand(k, self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation: A = -(1..N) for every channel, stored as log for positivity.
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k, self.d_inner, 1))
        self.Ds = nn.Parameter(torch.ones(k, self.d_inner))
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: channels-last tokens (b, h, w, c) -> same shape."""
        _, height, width, _ = x.shape
        x, gate = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = merge_scan_orders(self._scan(x), height, width).permute(0, 2, 3, 1)
        y = self.out_norm(y) * F.silu(gate)
        return self.dropout(self.out_proj(y))

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        # The recurrence multiplies many decays; keep it in float32 even under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            xs = scan_orders(x.float())
            projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.float())
            dts, Bs, Cs = torch.split(projected, [self.dt_rank, self.d_state, self.d_state], dim=2)
            dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.float())
            delta = F.softplus(dts + self.dt_projs_bias.float()[None, :, :, None])
            A = -torch.exp(self.A_logs.float())
            return chunked_selective_scan(xs, delta, A, Bs, Cs, self.Ds.float())


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channel groups of channels-last x (ShuffleNet) so the two branches mix."""
    *lead, channels = x.shape
    return x.reshape(*lead, groups, channels // groups).transpose(-1, -2).reshape(*lead, channels)


class SSConvSSM(nn.Module):
    """MedMamba's block: half the channels through a conv branch, half through LayerNorm + SS2D."""

    def __init__(self, dim: int, d_state: int, drop_path: float) -> None:
        super().__init__()
        if dim % 2:
            raise SonosynthError(f"MedMamba stage widths must be even, got {dim}.")
        half = dim // 2
        self.norm = nn.LayerNorm(half)
        self.ssm = SS2D(half, d_state=d_state)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.conv_branch = nn.Sequential(
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_half, ssm_half = x.chunk(2, dim=-1)
        ssm_half = self.drop_path(self.ssm(self.norm(ssm_half)))
        conv_half = self.conv_branch(conv_half.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return channel_shuffle(torch.cat([conv_half, ssm_half], dim=-1), groups=2) + x


class PatchMerging(nn.Module):
    """Halve the token grid, double the width: 2x2 neighbours concatenated, LayerNorm, linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        x = x[:, : height // 2 * 2, : width // 2 * 2]  # an odd row/column is dropped, as in the original
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class MedMamba(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 224,
                 input_mode: InputMode = "native", variant: str = "compact", name: str = "medmamba_compact",
                 patch_size: int = 4) -> None:
        if variant not in VARIANTS:
            raise SonosynthError(f"unknown MedMamba variant {variant!r}; available: {', '.join(VARIANTS)}.")
        super().__init__(name, num_classes, in_channels, image_size, input_mode, options={"variant": variant})
        config = VARIANTS[variant]
        depths, dims = config["depths"], config["dims"]
        self.patch_embed = nn.Conv2d(self.input_mean.shape[1], dims[0], patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(dims[0])
        count = sum(depths)  # stochastic-depth rates rising linearly to drop_path_rate, as the original
        rates = [config["drop_path_rate"] * i / max(count - 1, 1) for i in range(count)]
        self.stages = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks: list[nn.Module] = [
                SSConvSSM(dim, config["d_state"], rates[sum(depths[:i]) + j]) for j in range(depth)
            ]
            if i < len(depths) - 1:
                blocks.append(PatchMerging(dim))
            self.stages.append(nn.Sequential(*blocks))
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(_init_weights)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch_embed(z).permute(0, 2, 3, 1))
        for stage in self.stages:
            x = stage(x)
        return x.permute(0, 3, 1, 2)


def _init_weights(module: nn.Module) -> None:
    # As the original: truncated-normal linear layers, unit LayerNorms, Kaiming convs; the SS2D
    # projection tensors are plain parameters and keep their own initialisation.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


@register_classifier("medmamba_compact",
                     description="a narrow, shallow MedMamba for CPUs (0.9 M parameters; not the paper's network)")
def build_medmamba_compact(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode,
                           variant: str = "compact") -> MedMamba:
    return MedMamba(num_classes, in_channels, image_size, input_mode, variant=variant, name="medmamba_compact")


@register_classifier("medmamba_t", description="MedMamba-T, the paper's configuration (slow on CPU)")
def build_medmamba_t(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode,
                     variant: str = "tiny") -> MedMamba:
    return MedMamba(num_classes, in_channels, image_size, input_mode, variant=variant, name="medmamba_t")
