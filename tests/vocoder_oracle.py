"""Tiny random unit HiFi-GAN vocoders in textless/fairseq's checkpoint layout, and the same
weights in transformers' `SeamlessM4TCodeHifiGan`, the PyTorch oracle.

Why that oracle is the same architecture: transformers' Code HiFi-GAN is HF's port of the
speech-resynthesis / fairseq unit vocoder that textlesslib's `CodeGenerator` also comes from:
a unit embedding, the same duration predictor (conv (width 3, padding 1), ReLU, LayerNorm,
twice, then a linear layer; durations clamp(round(exp(x) - 1), min=1)), the embeddings of the
conditions repeated over time and concatenated on channels, conv_pre (width 7), per stage a
leaky ReLU (0.1), a transposed conv (padding (k - u) // 2) and the mean of residual blocks
"1", then a leaky ReLU of slope 0.01, conv_post and tanh. It differs in three ways, each
handled here: its language embedding comes first (given 0 channels here); its one speaker
embedding stands for textless's speaker and style embeddings (a one-row table holding the
chosen speaker's and style's rows, concatenated in textless's order); and it has no weight
norm (its kernels are the checkpoint's, folded by torch's own `torch._weight_norm`).
"""

import json

import numpy as np
import torch

EMBED = 16


def textless_config(
    units: int, duration: bool, speakers: int = 0, styles: int = 0, embed: int = EMBED
) -> dict:
    """A tiny CodeGenerator config: 3 stages (one whose kernel - rate is odd), 2 kernels;
    `embed` wide embeddings and duration predictor."""
    cfg = {
        "resblock": "1",
        "upsample_rates": [5, 4, 2],
        "upsample_kernel_sizes": [11, 8, 5],
        "upsample_initial_channel": 32,
        "resblock_kernel_sizes": [3, 7],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "num_embeddings": units,
        "embedding_dim": embed,
        "model_in_dim": embed * (1 + bool(speakers) + bool(styles)),
        "sampling_rate": 16000,
    }
    if duration:
        cfg["dur_predictor_params"] = {
            "encoder_embed_dim": embed,
            "var_pred_hidden_dim": embed,
            "var_pred_kernel_size": 3,
            "var_pred_dropout": 0.5,
        }
    if speakers:
        cfg.update(multispkr=True, num_speakers=speakers)
    if styles:
        cfg.update(multistyle=True, num_styles=styles)
    return cfg


def _conv_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Weight-normalised convs of textless's CodeGenerator: name -> torch weight shape."""
    c0 = cfg["upsample_initial_channel"]
    shapes = {"conv_pre": (c0, cfg["model_in_dim"], 7)}
    block = 0
    for stage, width in enumerate(cfg["upsample_kernel_sizes"]):
        c_in, c_out = c0 >> stage, c0 >> (stage + 1)
        shapes[f"ups.{stage}"] = (c_in, c_out, width)  # ConvTranspose1d: [in, out, width]
        for kernel, dilations in zip(
            cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"], strict=True
        ):
            for group in ("convs1", "convs2"):
                for index in range(len(dilations)):
                    shapes[f"resblocks.{block}.{group}.{index}"] = (c_out, c_out, kernel)
            block += 1
    shapes["conv_post"] = (1, c0 >> len(cfg["upsample_rates"]), 7)
    return shapes


def random_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random weights in textless's layout (weight norm as weight_g / weight_v), scaled so that
    activations stay near 1 and durations spread over 1-4 frames."""
    gen = torch.Generator().manual_seed(seed)
    embed = cfg["embedding_dim"]

    def normal(*shape, std=1.0):
        return std * torch.randn(shape, generator=gen)

    def uniform(*shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=gen)

    sd = {"dict.weight": normal(cfg["num_embeddings"], embed)}
    if cfg.get("multispkr"):
        sd["spkr.weight"] = normal(cfg["num_speakers"], embed)
    if cfg.get("multistyle"):
        sd["style.weight"] = normal(cfg["num_styles"], embed)
    for name, shape in _conv_shapes(cfg).items():
        gain = (10.0, 20.0) if name == "conv_post" else (0.5, 1.0)  # outputs reach tanh's bend
        sd[f"{name}.weight_g"] = uniform(shape[0], 1, 1, low=gain[0], high=gain[1])
        sd[f"{name}.weight_v"] = normal(*shape)
        sd[f"{name}.bias"] = normal(shape[1] if name.startswith("ups") else shape[0], std=0.1)
    if cfg.get("dur_predictor_params"):
        for conv in ("conv1", "conv2"):
            sd[f"dur_predictor.{conv}.0.weight"] = normal(embed, embed, 3, std=(3 * embed) ** -0.5)
            sd[f"dur_predictor.{conv}.0.bias"] = normal(embed, std=0.1)
        for ln in ("ln1", "ln2"):
            sd[f"dur_predictor.{ln}.weight"] = 1 + normal(embed, std=0.1)
            sd[f"dur_predictor.{ln}.bias"] = normal(embed, std=0.1)
        sd["dur_predictor.proj.weight"] = normal(1, embed, std=0.6 * embed**-0.5)
        sd["dur_predictor.proj.bias"] = torch.tensor([1.1])
    return sd


def write_vocoder(directory, cfg: dict, state_dict: dict, names: dict | None = None) -> None:
    """A vocoder folder as textless ships one: JSON config + {'generator': state dict}."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    torch.save({"generator": state_dict}, directory / "generator.pt")
    for kind, values in (names or {}).items():
        (directory / f"{kind}.txt").write_text("".join(v + "\n" for v in values))


class SeamlessOracle:
    """transformers' SeamlessM4TCodeHifiGan holding a textless state dict's weights, for one
    (speaker, style) choice."""

    def __init__(self, cfg: dict, sd: dict, speaker: int = 0, style: int = 0):
        from transformers import SeamlessM4TConfig
        from transformers.models.seamless_m4t.modeling_seamless_m4t import (
            SeamlessM4TCodeHifiGan,
        )

        chosen = (("spkr", speaker), ("style", style))
        rows = [sd[f"{key}.weight"][i] for key, i in chosen if f"{key}.weight" in sd]
        condition = torch.cat(rows)[None] if rows else torch.zeros(1, 0)
        config = SeamlessM4TConfig(
            unit_hifi_gan_vocab_size=cfg["num_embeddings"],
            unit_embed_dim=cfg["embedding_dim"],
            lang_embed_dim=0,
            spkr_embed_dim=condition.shape[1],
            vocoder_num_langs=1,
            vocoder_num_spkrs=1,
            upsample_initial_channel=cfg["upsample_initial_channel"],
            upsample_rates=cfg["upsample_rates"],
            upsample_kernel_sizes=cfg["upsample_kernel_sizes"],
            resblock_kernel_sizes=cfg["resblock_kernel_sizes"],
            resblock_dilation_sizes=cfg["resblock_dilation_sizes"],
            variance_predictor_kernel_size=3,
            leaky_relu_slope=0.1,
        )
        self.model = SeamlessM4TCodeHifiGan(config).eval()
        own = {"unit_embedding.weight": sd["dict.weight"], "speaker_embedding.weight": condition}
        renames = {"ups.": "upsampler.", "conv_pre": "conv_pre", "conv_post": "conv_post"}
        for name in _conv_shapes(cfg):
            target = "hifi_gan." + next(
                (name.replace(a, b, 1) for a, b in renames.items() if name.startswith(a)), name
            )
            own[f"{target}.weight"] = torch._weight_norm(
                sd[f"{name}.weight_v"], sd[f"{name}.weight_g"], 0
            )
            own[f"{target}.bias"] = sd[f"{name}.bias"]
        for key, value in sd.items():
            if key.startswith("dur_predictor."):
                own[key.replace(".0.", ".")] = value
        self.has_duration = "dur_predictor.proj.weight" in sd
        state = self.model.state_dict()
        unused = ("dur_predictor.", "language_embedding.")
        missing = [k for k in state if k not in own and not k.startswith(unused)]
        assert not missing, missing
        state.update(own)
        self.model.load_state_dict(state)

    @torch.no_grad()
    def durations(self, units: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(units, dtype=torch.long)[None]
        log = self.model.dur_predictor(self.model.unit_embedding(ids))
        return torch.clamp(torch.round(torch.expm1(log)), min=1).long()[0].numpy()

    @torch.no_grad()
    def wave(self, units: np.ndarray) -> np.ndarray:
        """One utterance alone: with its predicted durations when the vocoder has a predictor
        (the model's own forward), else each unit one frame (the same modules, no predictor)."""
        ids = torch.as_tensor(units, dtype=torch.long)[None]
        zero = torch.zeros(1, 1, dtype=torch.long)
        if self.has_duration:
            return self.model(ids, spkr_id=zero, lang_id=zero)[0][0].numpy()
        hidden = self.model.unit_embedding(ids).transpose(1, 2)
        condition = self.model.speaker_embedding(zero).transpose(1, 2)
        hidden = torch.cat([hidden, condition.repeat(1, 1, hidden.shape[-1])], dim=1)
        return self.model.hifi_gan(hidden)[0].numpy()
