"""The unit HiFi-GAN vocoder of textlesslib / fairseq ("CodeGenerator") in Flax NNX.

Units -> embeddings (+ a speaker and a style embedding, repeated over time) -> a 7-wide conv ->
per stage: leaky ReLU, a transposed conv that upsamples by its rate, the mean of one residual
block per kernel size -> leaky ReLU (slope 0.01, torch's default, as textless) -> a 7-wide conv
to one channel -> tanh. An optional duration predictor (conv, ReLU, LayerNorm, twice, then a
projection) gives each unit's log(1 + frames). Weight norm is folded into plain kernels at
import (jaxslm.hf.vocoder_import), so the forward pass has none.

Batches hold utterances of different lengths, zero-padded at the end: every activation that a
convolution reads is zeroed past its utterance's length at that layer, as a lone utterance sees
zero padding, so each utterance's samples do not depend on the batch (up to float32
rounding: XLA may order sums differently for another batch shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.models.hubert import TORCH_NORM_EPS, LayerNorm

LRELU_SLOPE = 0.1
FINAL_LRELU_SLOPE = 0.01  # textless calls F.leaky_relu(x) with torch's default slope there
EDGE_KERNEL = 7  # conv_pre and conv_post
DURATION_KERNEL = 3  # textless pads the predictor's second conv by 1: only width 3 keeps lengths
HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class VocoderConfig:
    """Shapes of a CodeGenerator, read from a textless/fairseq vocoder JSON config."""

    num_units: int
    embed_dim: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    duration_hidden: int | None = None  # var_pred_hidden_dim; None: no duration predictor
    num_speakers: int = 0  # 0: not multi-speaker
    num_styles: int = 0  # 0: not multi-style
    sampling_rate: int = 16_000

    @classmethod
    def from_textless(cls, cfg: dict[str, Any], source: str) -> VocoderConfig:
        """The config of a textless `CodeGenerator` JSON dict; variants jaxslm does not run
        (F0 or speaker-encoder conditioning, other predictor widths) raise naming the field."""
        for field, why in (
            ("f0", "F0-conditioned vocoders need a pitch track; jaxslm vocodes units only"),
            ("embedder_params", "speaker-encoder (d-vector) conditioning is not supported"),
        ):
            if cfg.get(field):
                raise JaxslmError(f"{source}: {field}={cfg[field]!r}: {why}")
        try:
            embed_dim = int(cfg["embedding_dim"])
            config = cls(
                num_units=int(cfg["num_embeddings"]),
                embed_dim=embed_dim,
                upsample_rates=tuple(int(r) for r in cfg["upsample_rates"]),
                upsample_kernel_sizes=tuple(int(k) for k in cfg["upsample_kernel_sizes"]),
                upsample_initial_channel=int(cfg["upsample_initial_channel"]),
                resblock_kernel_sizes=tuple(int(k) for k in cfg["resblock_kernel_sizes"]),
                resblock_dilation_sizes=tuple(
                    tuple(int(d) for d in ds) for ds in cfg["resblock_dilation_sizes"]
                ),
                duration_hidden=_duration_hidden(cfg, embed_dim, source),
                num_speakers=int(cfg.get("num_speakers", 200)) if cfg.get("multispkr") else 0,
                num_styles=int(cfg.get("num_styles", 100)) if cfg.get("multistyle") else 0,
                sampling_rate=int(cfg.get("sampling_rate", 16_000)),
            )
        except KeyError as err:
            raise JaxslmError(
                f"{source}: no {err.args[0]!r}; not a textless/fairseq unit HiFi-GAN config"
            ) from None
        except (TypeError, ValueError) as err:
            raise JaxslmError(f"{source}: a field has the wrong type ({err})") from None
        in_dim = cfg.get("model_in_dim", 80)  # textless's default
        if in_dim != config.input_dim:
            raise JaxslmError(
                f"{source}: model_in_dim={in_dim!r}, but the unit, speaker and style embeddings "
                f"concatenate to {config.input_dim}; fix model_in_dim"
            )
        config.check(source)
        return config

    def check(self, source: str = "VocoderConfig") -> None:
        """Raise JaxslmError naming the first field that cannot build a vocoder."""
        stages = len(self.upsample_rates)
        if not stages or len(self.upsample_kernel_sizes) != stages:
            raise JaxslmError(
                f"{source}: upsample_rates and upsample_kernel_sizes need the same, non-zero "
                "number of entries"
            )
        if len(self.resblock_dilation_sizes) != len(self.resblock_kernel_sizes):
            raise JaxslmError(
                f"{source}: resblock_dilation_sizes needs one list per resblock_kernel_sizes entry"
            )
        if any(k % 2 == 0 for k in self.resblock_kernel_sizes):
            raise JaxslmError(
                f"{source}: resblock_kernel_sizes {list(self.resblock_kernel_sizes)} has an even "
                "width, which changes lengths inside a residual block; use odd widths"
            )
        if self.upsample_initial_channel >> stages < 1:
            raise JaxslmError(
                f"{source}: upsample_initial_channel {self.upsample_initial_channel} halves to 0 "
                f"over {stages} stages"
            )
        if min(self.num_units, self.embed_dim, *self.upsample_rates) < 1:
            raise JaxslmError(f"{source}: sizes and rates must be positive")

    @property
    def input_dim(self) -> int:
        """Channels into conv_pre: units, then speaker, then style embedding."""
        return self.embed_dim * (1 + bool(self.num_speakers) + bool(self.num_styles))

    @property
    def samples_per_frame(self) -> int:
        """Output samples per unit frame (the product of the upsampling rates)."""
        return math.prod(self.upsample_rates)

    def num_samples(self, frames: int) -> int:
        """Output samples for `frames` input frames (the transposed convs' length formula)."""
        for rate, width in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True):
            frames = (frames - 1) * rate + width - 2 * ((width - rate) // 2)
        return frames


def _duration_hidden(cfg: dict[str, Any], embed_dim: int, source: str) -> int | None:
    params = cfg.get("dur_predictor_params")
    if not params:
        return None
    if int(params.get("encoder_embed_dim", embed_dim)) != embed_dim:
        raise JaxslmError(
            f"{source}: dur_predictor_params.encoder_embed_dim must equal embedding_dim"
        )
    if int(params.get("var_pred_kernel_size", DURATION_KERNEL)) != DURATION_KERNEL:
        raise JaxslmError(
            f"{source}: dur_predictor_params.var_pred_kernel_size="
            f"{params['var_pred_kernel_size']}; textless pads its second conv by 1, so only "
            f"{DURATION_KERNEL} keeps the unit count"
        )
    return int(params["var_pred_hidden_dim"])


def conv(
    x: jax.Array,
    kernel: jax.Array,
    padding: int,
    dilation: int = 1,
    input_dilation: int = 1,
) -> jax.Array:
    """x [B, T, C_in] correlated with kernel [width, C_in, C_out], `padding` zeros each side."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=((padding, padding),),
        lhs_dilation=(input_dilation,),
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        precision=HIGHEST,
    )


def _masked(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """`x` [B, T, C] with frames at or past each row's length set to zero."""
    return jnp.where(jnp.arange(x.shape[1])[None, :, None] < lengths[:, None, None], x, 0)


class Conv(nnx.Module):
    """A stride-1 conv with bias: kernel [width, C_in, C_out] (torch's [out, in, width]
    transposed), `dilation`, and the padding that keeps the length for odd widths."""

    def __init__(self, width: int, c_in: int, c_out: int, dilation: int = 1, padding=None):
        self.dilation = dilation
        self.padding = dilation * (width - 1) // 2 if padding is None else padding
        self.kernel = nnx.Param(jnp.zeros((width, c_in, c_out), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv(x, self.kernel[...], self.padding, self.dilation)
        return y + self.bias[...]


class Upsample(nnx.Module):
    """torch ConvTranspose1d(stride=rate, padding=(width - rate) // 2) as a correlation of the
    rate-dilated input with the flipped kernel; `kernel` [width, C_in, C_out] is stored flipped
    (torch's [in, out, width] reversed along width)."""

    def __init__(self, width: int, rate: int, c_in: int, c_out: int):
        self.rate = rate
        self.padding = width - 1 - (width - rate) // 2
        self.kernel = nnx.Param(jnp.zeros((width, c_in, c_out), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv(x, self.kernel[...], self.padding, input_dilation=self.rate)
        return y + self.bias[...]


class ResBlock(nnx.Module):
    """HiFi-GAN's residual block "1": per dilation, x += conv2(lrelu(conv1_dilated(lrelu(x))))."""

    def __init__(self, channels: int, width: int, dilations: tuple[int, ...]):
        self.convs1 = nnx.List([Conv(width, channels, channels, d) for d in dilations])
        self.convs2 = nnx.List([Conv(width, channels, channels) for _ in dilations])

    def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            y = _masked(conv1(jax.nn.leaky_relu(x, LRELU_SLOPE)), lengths)
            x = x + _masked(conv2(jax.nn.leaky_relu(y, LRELU_SLOPE)), lengths)
        return x


class DurationPredictor(nnx.Module):
    """textless's VariancePredictor: log(1 + frames) per unit."""

    def __init__(self, embed_dim: int, hidden: int):
        self.conv1 = Conv(DURATION_KERNEL, embed_dim, hidden)
        self.ln1 = LayerNorm(hidden, eps=TORCH_NORM_EPS, param_dtype="float32")
        self.conv2 = Conv(DURATION_KERNEL, hidden, hidden, padding=1)
        self.ln2 = LayerNorm(hidden, eps=TORCH_NORM_EPS, param_dtype="float32")
        self.proj_kernel = nnx.Param(jnp.zeros((hidden,), jnp.float32))
        self.proj_bias = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
        """x [B, N, E] zero past each length -> log durations [B, N]."""
        h = _masked(self.ln1(jax.nn.relu(self.conv1(x))), lengths)
        h = self.ln2(jax.nn.relu(self.conv2(h)))
        return (
            jnp.einsum("bnh,h->bn", h, self.proj_kernel[...], precision=HIGHEST)
            + (self.proj_bias[...])
        )


class CodeHifiGan(nnx.Module):
    """Unit ids [B, T] (one per output frame) -> 16 kHz (`sampling_rate`) waves [B, samples]."""

    def __init__(self, cfg: VocoderConfig):
        cfg.check()
        self.config = cfg

        def table(rows: int) -> nnx.Param | None:
            return nnx.Param(jnp.zeros((rows, cfg.embed_dim), jnp.float32)) if rows else None

        self.units = table(cfg.num_units)
        self.speakers, self.styles = table(cfg.num_speakers), table(cfg.num_styles)
        self.duration = (
            DurationPredictor(cfg.embed_dim, cfg.duration_hidden)
            if cfg.duration_hidden is not None
            else None
        )
        channels = cfg.upsample_initial_channel
        self.conv_pre = Conv(EDGE_KERNEL, cfg.input_dim, channels)
        ups, blocks = [], []
        for stage, (rate, width) in enumerate(
            zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)
        ):
            c_in, c_out = channels >> stage, channels >> (stage + 1)
            ups.append(Upsample(width, rate, c_in, c_out))
            blocks += [
                ResBlock(c_out, k, d)
                for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
            ]
        self.ups, self.resblocks = nnx.List(ups), nnx.List(blocks)
        self.conv_post = Conv(EDGE_KERNEL, channels >> len(ups), 1)

    def log_durations(self, ids: jax.Array, lengths: jax.Array) -> jax.Array:
        """Predicted log(1 + frames) [B, N] of deduplicated unit ids [B, N]."""
        if self.duration is None:
            raise JaxslmError("this vocoder has no duration predictor")
        x = _masked(self.units[...][ids], lengths)
        return self.duration(x, lengths)

    def __call__(
        self, ids: jax.Array, lengths: jax.Array, speakers: jax.Array, styles: jax.Array
    ) -> jax.Array:
        """Frame-level unit ids [B, T], valid frames [B], speaker and style ids [B] -> waves
        [B, num_samples(T)]; row i is valid up to num_samples(lengths[i])."""
        cfg = self.config
        x = self.units[...][ids]
        conditions = [
            table[...][which]
            for table, which in ((self.speakers, speakers), (self.styles, styles))
            if table is not None
        ]
        if conditions:
            repeated = [jnp.broadcast_to(c[:, None, :], x.shape) for c in conditions]
            x = jnp.concatenate([x, *repeated], axis=-1)
        x = _masked(self.conv_pre(_masked(x, lengths)), lengths)
        kernels = len(cfg.resblock_kernel_sizes)
        for stage, up in enumerate(self.ups):
            width, rate = cfg.upsample_kernel_sizes[stage], cfg.upsample_rates[stage]
            lengths = (lengths - 1) * rate + width - 2 * ((width - rate) // 2)
            x = _masked(up(jax.nn.leaky_relu(x, LRELU_SLOPE)), lengths)
            blocks = self.resblocks[stage * kernels : (stage + 1) * kernels]
            x = sum(block(x, lengths) for block in blocks) / kernels
        x = self.conv_post(jax.nn.leaky_relu(x, FINAL_LRELU_SLOPE))
        return jnp.tanh(x[..., 0])
