"""A LoRA flow-matching training loop on a tiny Wan transformer, fed only by wan_data batches.

A real client: cached VAE latents, cached UMT5 text embeddings, and for I2V the cached
conditions (see docs/training.md).

    python examples/train_tiny_wan.py [--mode t2v|i2v] [--steps 40] [--resume-at 13]
                                      [--data DIR] [--models DIR] [--work DIR] [--threads 1]

Everything is tiny and random, so it runs on a CPU in seconds: a Wan 2.1 VAE at base_dim 3, a
2-layer UMT5 (d_model 16) with a word-level tokenizer built from the captions, a CLIP vision
encoder of width 8 (I2V) and a 2-block ``diffusers.WanTransformer3DModel`` of width 16 (16 input
channels for T2V, 36 for I2V). They are saved to ``--models`` (a temporary folder by default)
and loaded from there, the way a real run loads a Diffusers repo; a folder that already holds
them is reused. The videos are generated into ``--data`` unless it already holds some.

The loop is what Wan trainers do (docs/training.md): rectified flow, ``x_t = (1 - s) x0 + s n``,
target ``n - x0``, ``timestep = 1000 s`` (``s`` uniform, optionally shifted by ``--shift``),
per-member MSE times ``batch["loss_weights"]``, AdamW on LoRA adapters only (the base model is
frozen). ``--resume-at K`` saves a checkpoint at step K (the dataset's ``state_dict()``, the
adapters, the optimizer and the noise generator), rebuilds every object from the saved folders
and the checkpoint, trains on to ``--steps`` and checks that the resumed run saw the same batches
(keys and tensors) and computed the same losses as the uninterrupted one. On a machine with
few cores, ``--threads 1`` leaves them to the loader's workers (2 s instead of 18 s for 40 steps
on 2 cores). Measured numbers and the batch key -> transformer argument mapping: docs/training.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wan_data import WanVideoDataset
from wan_data.tools.synthetic import make_synthetic_dataset, make_tiny_wan_vae

# The clips: 5 frames at 16 fps, 64x64 pixels -> latents (16, 2, 8, 8), 32 transformer tokens.
SHAPE = {"frames": [5], "fps": 16, "resolution": (64, 64)}
TEXT_DIM = 16  # the tiny UMT5's d_model: the transformer's text_dim
CLIP_DIM = 8  # the tiny CLIP's hidden size: the I2V transformer's image_dim


# --------------------------------------------------------------------------- tiny models


def _caption_words(data: Path) -> list[str]:
    """The words of every caption sidecar under ``data``, split as the tokenizer splits."""
    words: dict[str, None] = {}
    for sidecar in sorted(data.rglob("*.txt")):
        for word in re.findall(r"\w+|[^\w\s]+", sidecar.read_text(encoding="utf-8")):
            words.setdefault(word)
    return list(words)


def _save_tokenizer(folder: Path, words: Sequence[str]) -> None:
    """An offline word-level tokenizer with UMT5's conventions: pad 0, EOS 1 appended, no BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)


def tiny_transformer(mode: str) -> Any:
    """A random 2-block ``WanTransformer3DModel``: Wan 2.1's interface at width 16."""
    from diffusers import WanTransformer3DModel

    i2v = mode == "i2v"
    return WanTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=36 if i2v else 16,  # I2V: 16 noisy + 4 mask + 16 condition channels
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
        image_dim=CLIP_DIM if i2v else None,
        added_kv_proj_dim=16 if i2v else None,  # the model width, as in Wan 2.1 I2V
    )


def load_transformer(folder: Path) -> Any:
    """A saved ``WanTransformer3DModel``, in fp32. (``from_pretrained`` needs ``accelerate`` for
    this class, which keeps some modules in fp32; the example reads the weights itself.)"""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder))
    model.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
    return model


def make_tiny_models(folder: Path, data: Path, mode: str, *, seed: int = 0) -> dict[str, Path]:
    """Save the tiny models ``mode`` needs into ``folder`` (reusing those already there)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        UMT5Config,
        UMT5EncoderModel,
    )

    paths = {"vae": folder / "vae", "text_encoder": folder / "text_encoder"}
    paths["transformer"] = folder / f"transformer_{mode}"
    if mode == "i2v":
        paths["image_encoder"] = folder / "image_encoder"
    torch.manual_seed(seed)
    if not (paths["vae"] / "config.json").exists():
        make_tiny_wan_vae(paths["vae"], variant="wan2.1", seed=seed)
    if not (paths["text_encoder"] / "config.json").exists():
        words = _caption_words(data)
        config = UMT5Config(
            vocab_size=3 + len(words),
            d_model=TEXT_DIM,
            d_kv=4,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
        )
        UMT5EncoderModel(config).save_pretrained(paths["text_encoder"])
        _save_tokenizer(paths["text_encoder"], words)
    if mode == "i2v" and not (paths["image_encoder"] / "config.json").exists():
        clip_config = CLIPVisionConfig(
            hidden_size=CLIP_DIM,
            projection_dim=CLIP_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=14,  # 16 x 16 patches + the class token: 257 tokens, as ViT-H/14
            intermediate_size=16,
        )
        CLIPVisionModelWithProjection(clip_config).save_pretrained(paths["image_encoder"])
        CLIPImageProcessor().save_pretrained(paths["image_encoder"])
    if not (paths["transformer"] / "config.json").exists():
        tiny_transformer(mode).save_pretrained(paths["transformer"])
    return paths


# --------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B(A(x))`` with ``base`` frozen and ``B`` starting at zero,
    so the wrapped model starts out exactly equal to the base model (peft's default init)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(x)) * self.scale


def add_lora(transformer: nn.Module, *, rank: int = 4, alpha: float = 4.0) -> list[str]:
    """Freeze ``transformer`` and wrap every ``nn.Linear`` of its blocks (attention q/k/v/out,
    the I2V image k/v, the feed-forward) in a :class:`LoRALinear`: the modules musubi-tuner's
    and diffusion-pipe's Wan LoRAs target. Returns the wrapped modules' names."""
    transformer.requires_grad_(False)
    blocks = transformer.get_submodule("blocks")
    targets = [(n, m) for n, m in blocks.named_modules() if isinstance(m, nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = blocks.get_submodule(parent_name) if parent_name else blocks
        setattr(parent, child, LoRALinear(module, rank, alpha))
    return [f"blocks.{name}" for name, _ in targets]


def lora_state(transformer: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights only: what a LoRA checkpoint holds."""
    return {k: v.detach().clone() for k, v in transformer.state_dict().items() if ".lora_" in k}


# --------------------------------------------------------------------------- one training step


def flow_matching_loss(
    transformer: nn.Module, batch: dict[str, Any], noise: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Wan's rectified-flow objective on one wan_data batch (docs/training.md has the mapping):
    ``x_t = (1 - sigma) x0 + sigma noise``, the transformer predicts ``noise - x0`` at
    ``timestep = 1000 sigma``; per-member MSE, weighted by ``loss_weights``."""
    x0 = batch["latents"].float()  # (B, 16, F_lat, h, w)
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    hidden = x_t
    if "cond_latents" in batch:  # I2V: 16 noisy + 4 mask + 16 condition = 36 channels
        cond = torch.cat([batch["cond_mask"], batch["cond_latents"]], dim=1).float()
        hidden = torch.cat([x_t, cond], dim=1)
    image = batch.get("clip_embeds")  # Wan 2.1 I2V: (B, 257, D) CLIP tokens
    pred = transformer(
        hidden_states=hidden,
        timestep=sigma * 1000,
        encoder_hidden_states=batch["text_embeds"].float(),
        encoder_hidden_states_image=None if image is None else image.float(),
        return_dict=False,
    )[0]
    per_member = ((pred.float() - (noise - x0)) ** 2).mean(dim=(1, 2, 3, 4))
    return (per_member * batch["loss_weights"].float()).mean()


def sample_noise(
    x0: torch.Tensor, generator: torch.Generator, shift: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noise, sigma)`` for one step: sigma uniform in [0, 1), then Wan's timestep shift
    ``shift * s / (1 + (shift - 1) * s)`` (1 = none; Wan's inference uses 3 to 5)."""
    noise = torch.randn(x0.shape, generator=generator)
    sigma = torch.rand(x0.shape[0], generator=generator)
    return noise, shift * sigma / (1 + (shift - 1) * sigma)


EVAL_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def eval_loss(transformer: nn.Module, batch: dict[str, Any]) -> float:
    """The loss on one batch at fixed noise levels and fixed noise: unlike the training loss,
    which draws both every step, it changes only when the model does."""
    x0 = batch["latents"].float()
    generator = torch.Generator().manual_seed(1234)
    total = 0.0
    for level in EVAL_SIGMAS:
        noise = torch.randn(x0.shape, generator=generator)
        sigma = torch.full((x0.shape[0],), level)
        total += flow_matching_loss(transformer, batch, noise, sigma).item()
    return total / len(EVAL_SIGMAS)


# --------------------------------------------------------------------------- the run


class Run:
    """Everything one training run holds: built from the saved folders, or from a checkpoint."""

    def __init__(self, args: argparse.Namespace, paths: dict[str, Path]) -> None:
        options: dict[str, Any] = {
            **SHAPE,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "vae": paths["vae"],
            "cache_dir": args.work / "cache",
            "text_encoder": paths["text_encoder"],
            "device": "cpu",
            "latent_dtype": torch.float32,
            "text_dtype": torch.float32,
        }
        if args.mode == "i2v":
            options |= {"conditioning": "i2v", "image_encoder": paths["image_encoder"]}
        self.ds = WanVideoDataset(args.data, **options)
        started = time.perf_counter()
        if not self.ds.cache_complete():  # a resumed run finds it filled
            self.ds.prepare(num_workers=args.num_workers, progress=False)
        self.prepare_seconds = time.perf_counter() - started
        torch.manual_seed(args.seed)  # the adapters' initial A matrices
        self.transformer = load_transformer(paths["transformer"])
        self.targets = add_lora(self.transformer, rank=args.rank, alpha=args.rank)
        self.transformer.train()
        params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.total = sum(p.numel() for p in self.transformer.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        self.noise = torch.Generator().manual_seed(args.seed)
        self.step = 0
        self.eval_batch: dict[str, Any] | None = None  # the first batch, for eval_loss
        self.eval_before = math.nan

    def save(self, path: Path) -> None:
        """Write the checkpoint now: later steps update the optimizer's tensors in place."""
        checkpoint = {
            "data": self.ds.state_dict(),  # after the last batch the loop consumed
            "lora": lora_state(self.transformer),
            "optimizer": self.optimizer.state_dict(),
            "noise": self.noise.get_state(),
            "step": self.step,
        }
        torch.save(checkpoint, path)

    def restore(self, path: Path) -> dict[str, Any]:
        checkpoint: dict[str, Any] = torch.load(path, weights_only=False)
        self.ds.load_state_dict(checkpoint["data"])
        # strict=False: the checkpoint holds the adapters only; the base comes from the folder.
        loaded = self.transformer.load_state_dict(checkpoint["lora"], strict=False)
        assert not loaded.unexpected_keys, loaded.unexpected_keys
        assert not any(".lora_" in key for key in loaded.missing_keys), loaded.missing_keys
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.noise.set_state(checkpoint["noise"])
        self.step = checkpoint["step"]
        return checkpoint

    def batches(self, num_workers: int) -> Generator[dict[str, Any], None, None]:
        """Batches forever, one epoch after the other, from where the dataset stands."""
        # Persistent workers see each set_epoch() (it lives in shared memory) and are started
        # once, not once per epoch.
        loader = self.ds.loader(num_workers=num_workers, persistent_workers=num_workers > 0)
        # next_epoch(): 0 for a fresh dataset, the saved epoch after load_state_dict().
        for epoch in itertools.count(self.ds.next_epoch()):
            self.ds.set_epoch(epoch)  # a restored dataset keeps its resume point for this epoch
            yield from loader

    def train(
        self, steps: int, args: argparse.Namespace, *, save_at: int | None = None
    ) -> tuple[dict[int, float], dict[int, dict[str, Any]]]:
        """Train up to step ``steps`` (writing the checkpoint at step ``save_at``); returns the
        loss and the batch of every step."""
        losses: dict[int, float] = {}
        seen: dict[int, dict[str, Any]] = {}
        if self.step >= steps:
            return losses, seen
        batches = self.batches(args.num_workers)
        try:
            self._loop(batches, steps, args, save_at, losses, seen)
        finally:
            batches.close()  # stops the loader's workers now, not at garbage collection
        return losses, seen

    def _loop(
        self,
        batches: Iterator[dict[str, Any]],
        steps: int,
        args: argparse.Namespace,
        save_at: int | None,
        losses: dict[int, float],
        seen: dict[int, Any],
    ) -> None:
        for batch in batches:
            if self.step == 0:  # a look at what the trainer gets
                for key, value in batch.items():
                    if isinstance(value, torch.Tensor):
                        print(f"  batch[{key!r}]: {tuple(value.shape)} {value.dtype}")
                self.eval_batch = batch
                self.eval_before = eval_loss(self.transformer, batch)
            noise, sigma = sample_noise(batch["latents"], self.noise, args.shift)
            loss = flow_matching_loss(self.transformer, batch, noise, sigma)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            losses[self.step] = loss.item()
            seen[self.step] = batch
            if self.step % args.log_every == 0 or self.step == steps:
                print(
                    f"step {self.step:3d}  epoch {batch['epoch']} batch {batch['position']}  "
                    f"loss {loss.item():.4f}"
                )
            if self.step == save_at:
                self.save(args.work / "checkpoint.pt")
            if self.step >= steps:
                break


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal keys, and equal values under every key: tensors exactly, the rest by ``==``."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor):
            if not (isinstance(other, torch.Tensor) and torch.equal(value, other)):
                return False
        elif value != other:
            return False
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--mode", choices=("t2v", "i2v"), default="t2v", help="text- or image-to-video"
    )
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument(
        "--resume-at",
        type=int,
        default=None,
        metavar="K",
        help="also stop after step K, resume from the saved state and check the rest is the same",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="the videos; generated when not given"
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="the tiny models, made if absent; a temporary folder when not given",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="the cache and checkpoint folder; a temporary one when not given",
    )
    parser.add_argument("--videos", type=int, default=4, help="clips to generate")
    parser.add_argument("--batch-size", type=int, default=2, help="samples per batch")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--lr", type=float, default=2e-2, help="AdamW learning rate")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (alpha = rank)")
    parser.add_argument("--shift", type=float, default=1.0, help="timestep shift (Wan: 3 to 5)")
    parser.add_argument("--seed", type=int, default=0, help="the dataset's and the model's seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the training process (on a few cores, 1 leaves them to the "
        "loader's workers)",
    )
    parser.add_argument("--log-every", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.resume_at is not None and not 0 < args.resume_at < args.steps:
        raise SystemExit(f"--resume-at must be in (0, {args.steps}), got {args.resume_at}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    temporary = None
    if args.data is None or args.models is None or args.work is None:
        temporary = Path(tempfile.mkdtemp(prefix="wan_data_train_"))
    try:
        return _main(args, temporary)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _main(args: argparse.Namespace, temporary: Path | None) -> dict[str, Any]:
    args.data = args.data or temporary / "data"  # type: ignore[operator]
    args.models = args.models or temporary / "models"  # type: ignore[operator]
    args.work = args.work or temporary / "work"  # type: ignore[operator]
    if not any(args.data.rglob("*.mp4")):
        make_synthetic_dataset(
            args.data,
            num_videos=args.videos,
            seconds=0.5,
            broken=False,
            seed=args.seed,
            sizes=((64, 64),),
            fps_choices=(16.0,),
        )
    paths = make_tiny_models(args.models, args.data, args.mode, seed=args.seed)
    print(f"{args.mode}: models in {args.models}, videos in {args.data}")

    started = time.perf_counter()
    run = Run(args, paths)
    ds = run.ds
    print(
        f"{len(ds.samples)} sample(s), {len(ds)} batch(es) per epoch; cache filled in "
        f"{run.prepare_seconds:.1f} s; LoRA rank {args.rank} on {len(run.targets)} linear "
        f"layers: {run.trainable} of {run.total} parameters train"
    )
    started = time.perf_counter()
    losses, seen = run.train(args.steps, args, save_at=args.resume_at)
    seconds = time.perf_counter() - started
    n = max(1, min(5, args.steps // 4))
    head = sum(losses[s] for s in range(1, n + 1)) / n
    tail = sum(losses[s] for s in range(args.steps - n + 1, args.steps + 1)) / n
    print(
        f"loss: mean of the first {n} step(s) {head:.4f}, of the last {n} {tail:.4f} "
        f"({100 * (1 - tail / head):.0f}% lower); {args.steps} steps in {seconds:.1f} s"
    )
    assert run.eval_batch is not None
    eval_after = eval_loss(run.transformer, run.eval_batch)
    print(
        f"loss on the first batch at fixed noise levels {EVAL_SIGMAS}: {run.eval_before:.4f} "
        f"before training, {eval_after:.4f} after ({100 * (1 - eval_after / run.eval_before):.0f}%"
        " lower)"
    )
    result: dict[str, Any] = {
        "mode": args.mode,
        "batch_keys": sorted(run.eval_batch),
        "losses": [losses[s] for s in sorted(losses)],
        "first_mean": head,
        "last_mean": tail,
        "eval_before": run.eval_before,
        "eval_after": eval_after,
        "prepare_seconds": run.prepare_seconds,
        "train_seconds": seconds,
    }
    if args.resume_at is not None:
        # Nothing survives but the files: a fresh dataset, model and optimizer, then the
        # checkpoint written at step K.
        del run, ds
        resumed = Run(args, paths)
        state = resumed.restore(args.work / "checkpoint.pt")["data"]
        print(
            f"resuming at step {resumed.step}: epoch {state['epoch']}, batch {state['position']} "
            f"of {len(resumed.ds)} (a fresh dataset, model and optimizer)"
        )
        again, again_seen = resumed.train(args.steps, args)
        steps = range(args.resume_at + 1, args.steps + 1)
        same = all(same_batch(seen[s], again_seen[s]) for s in steps)
        equal_losses = all(losses[s] == again[s] for s in steps)
        max_diff = max(abs(losses[s] - again[s]) for s in steps)
        print(
            f"resumed at step {args.resume_at}: {len(again)} batch(es) after it, identical: {same}"
        )
        print(
            f"resumed losses equal the uninterrupted run's: {equal_losses} (max diff {max_diff:g})"
        )
        result |= {
            "resume_mid_epoch": state["position"] != 0,
            "resumed_batches_identical": same,
            "resumed_losses_equal": equal_losses,
            "resumed_steps": len(again),
        }
    print(json.dumps({k: v for k, v in result.items() if k not in ("losses", "batch_keys")}))
    return result


if __name__ == "__main__":
    main()
