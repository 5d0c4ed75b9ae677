from __future__ import annotations

import os

import pytest

from exlsp.runtime import ModelError, resolve_model
from exlsp.runtime.model_path import DEFAULT_MODEL_FILE, find_default_model


def test_default_model_is_found_in_the_installed_package():
    path = find_default_model()
    assert path.name == DEFAULT_MODEL_FILE and path.stat().st_size > 50_000_000
    spec = resolve_model(None)
    assert spec.backend == "llamacpp" and spec.path == path.resolve()


def test_missing_path_names_it(tmp_path):
    with pytest.raises(ModelError, match="model not found: .*nope.gguf"):
        resolve_model(tmp_path / "nope.gguf")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        resolve_model(tmp_path)


def test_model_directory_goes_to_exllamav2(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path).backend == "exllamav2"
    with pytest.raises(ModelError, match="cannot be loaded with --backend llamacpp"):
        resolve_model(tmp_path, backend="llamacpp")


def test_not_a_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve_model(f)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF....")
    f.chmod(0)
    with pytest.raises(ModelError, match="permission denied"):
        resolve_model(f)
