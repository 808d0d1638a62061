"""Atomic writes: a killed writer's temporary file does not outlive the next write; folders swap whole."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors import safe_open

from pudding.core.io import atomic_folder, atomic_save_safetensors, atomic_write_json, atomic_write_text


def test_next_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "shard.json"
    stale = tmp_path / ".shard.json.abc123.tmp"  # what mkstemp left before a SIGKILL
    other = tmp_path / ".other.json.abc123.tmp"  # another file's: not ours to remove
    stale.write_text("half")
    other.write_text("half")
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "shard.json"]


def test_folder_swap_keeps_the_old_folder_when_the_body_fails(tmp_path):
    out = tmp_path / "bundle"
    with atomic_folder(out) as tmp:
        atomic_write_text(tmp / "a.txt", "one")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        atomic_write_text(tmp / "a.txt", "two")
        raise RuntimeError("killed mid-write")
    assert (out / "a.txt").read_text() == "one"
    with atomic_folder(out) as tmp:
        atomic_write_text(tmp / "b.txt", "three")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no .tmp- or .old- siblings left


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_umask_mode_not_tempfiles_private_one(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "results.md", "| a |")
        with atomic_folder(tmp_path / "bundle") as tmp:
            atomic_write_text(tmp / "router.json", "{}")
            atomic_save_safetensors(tmp / "router.safetensors", {"w": torch.ones(2)}, {"split": "val"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.md").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "bundle" / "router.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "bundle" / "router.safetensors").stat().st_mode) == 0o666 & ~umask
    with safe_open(str(tmp_path / "bundle" / "router.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"split": "val"} and handle.get_tensor("w").tolist() == [1.0, 1.0]
