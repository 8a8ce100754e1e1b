"""The micro model family's architectures: configs of diffusers' and transformers' own classes.

Every component is a stock class (`CLIPTokenizer`, `CLIPModel`, `CLIPTextModel`, `AutoencoderKL`,
`UNet2DConditionModel`, `ControlNetModel`) sized for 64x64 scenes of the micro world, so the trained
family loads through exactly the code that loads Stable Diffusion 1.x. The one exception is the
attribute judge, a small CNN that predicts a scene's attributes and is trained on real renders only
(`AttributeJudge`, saved as safetensors + config.json).

The text encoder starts as the text tower of the micro CLIP, trained here contrastively on the
captions, and is then trained further along with the UNet (the contrastive loss shapes only the
pooled end-of-text token, the UNet attends to every token): it is the same class Stable Diffusion
uses (`CLIPTextModel`), fits the size budget (a few hundred thousand parameters instead of the
22 M of a MiniLM sentence model), and its
tokenizer holds every word a training caption uses as a single token, so a caption word is one
position the UNet can attend to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tokenizers.pre_tokenizers import ByteLevel
from torch import nn
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTextModel, CLIPTokenizer

from lab.micro.captions import training_words
from lab.micro.world import ATTRIBUTES

IMAGE_SIZE = 64
LATENT_SIZE = 16  # the VAE downsamples by 4
TEXT_MAX_LENGTH = 48  # training captions reach 45 tokens with their two special tokens (fillers, junk words)
TEXT_HIDDEN = 64


def micro_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer: the 256 byte symbols (any text tokenizes, never fails) plus merge chains
    that make every word a training caption uses (`lab.micro.captions.training_words`) one token.
    BPE applies merges by rank, so a word whose chain collides with an earlier word's is split by the
    earlier merges first; it gets extra merges of its actual pieces until every word is whole."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [a + "</w>" for a in alphabet]:
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []

    def chain(parts: list[str]) -> None:
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            parts = [pair[0] + pair[1]] + parts[2:]

    words = sorted(training_words())
    for word in words:
        chain(list(word[:-1]) + [word[-1] + "</w>"])
    for _ in range(10):
        tokenizer = _tokenizer(vocab, merges)
        split = [tokenizer.tokenize(word) for word in words if len(tokenizer.tokenize(word)) > 1]
        if not split:
            return tokenizer
        for pieces in split:
            chain(pieces)
    raise RuntimeError(f"words still split after 10 rounds of merges: {split}")


def _tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> CLIPTokenizer:
    vocab = dict(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=TEXT_MAX_LENGTH)


def clip_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    tower = {"hidden_size": TEXT_HIDDEN, "intermediate_size": 4 * TEXT_HIDDEN, "num_attention_heads": 4}
    return CLIPConfig(
        text_config={
            **tower,
            "num_hidden_layers": 3,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**tower, "num_hidden_layers": 3, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=64,
    )


def clip_image_processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def new_clip(tokenizer: CLIPTokenizer) -> CLIPModel:
    return CLIPModel(clip_config(tokenizer))


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModel:
    """The CLIP's text tower as the stand-alone class Stable Diffusion pipelines load."""
    text = CLIPTextModel(clip.config.text_config)
    text.load_state_dict(clip.text_model.state_dict())
    return text.eval()


def new_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def new_unet() -> UNet2DConditionModel:
    """Four levels, 16x16 down to 2x2, cross-attention on the three lowest. At 2x2 each cell is one
    quadrant of the scene and, through the convolutions' zero padding, knows which: the level where
    a position word can say where the shape goes (a 4x4 level puts the nine positions in cells that
    look alike). The timestep embedding scales and shifts every normalised feature map
    (`scale_shift`, FiLM) instead of only shifting it."""
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=16,
        resnet_time_scale_shift="scale_shift",
        # The caption, attention-pooled, is also added to the timestep embedding that every ResNet
        # block reads (diffusers' "text" addition embedding, as in Kandinsky / UnCLIP UNets): a
        # global path for color and background besides cross-attention, which a small UNet trained
        # for minutes on a CPU otherwise learns to use too slowly.
        addition_embed_type="text",
        encoder_hid_dim=TEXT_HIDDEN,
        addition_embed_type_num_heads=4,
    )


def new_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    """Initialised from the UNet's encoder, zero convolutions out; its conditioning embedding
    downsamples by 4, the VAE's factor, so a 64x64 control map meets 16x16 latents."""
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64))


def scheduler() -> EulerDiscreteScheduler:
    """Stable Diffusion 1.x's betas rescaled to zero terminal SNR, with v-prediction and trailing
    timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    On 16x16 latents the plain schedule leaves the latent's mean (a scene's background color)
    visible at the last training step, so sampling from pure noise lets the seed, not the prompt,
    pick it."""
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )
    # Euler ignores these; a DDIM or PNDM built from this config reads them instead of their library
    # defaults (clip_sample=True draws garbage from a latent model; PRK warm-up steps are not wanted).
    scheduler.register_to_config(clip_sample=False, set_alpha_to_one=True, skip_prk_steps=True)
    return scheduler


def to_model_input(images) -> torch.Tensor:
    """RGB uint8 images (N, H, W, 3) as the float (N, 3, H, W) in [-1, 1] that the VAE and judge take."""
    return torch.from_numpy(np.stack(images).astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class AttributeJudge(nn.Module):
    """A small CNN with one head per micro-world attribute, trained on real renders only."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 2 * width))
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 8 * 8, 128), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(128, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """`images`: float (N, 3, 64, 64) in [-1, 1]; logits per attribute."""
        h = self.trunk(self.features(images))
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: np.ndarray | list[np.ndarray]) -> list[dict[str, str]]:
        """Attribute names for RGB uint8 images (N, 64, 64, 3)."""
        x = to_model_input(images)
        self.eval()
        logits = self(x)
        picks = {name: out.argmax(dim=1).tolist() for name, out in logits.items()}
        return [{name: ATTRIBUTES[name][picks[name][i]] for name in ATTRIBUTES} for i in range(len(x))]

    def save(self, folder: str | Path, card: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        config = {"class": "AttributeJudge", "width": self.width, "image_size": IMAGE_SIZE, "attributes": ATTRIBUTES}
        (folder / "config.json").write_text(json.dumps({**config, **(card or {})}, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> AttributeJudge:
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        if {k: tuple(v) for k, v in config["attributes"].items()} != ATTRIBUTES:
            raise ValueError(f"{folder}: the judge was trained on another version of the micro world")
        judge = cls(width=config["width"])
        judge.load_state_dict(load_file(folder / "model.safetensors"))
        return judge.eval()
