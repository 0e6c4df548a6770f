"""The explicit, checksummed weight download: over HTTP on loopback, through the store and the CLI."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from MedSegAttentionLib.cli import main as medseg
from MedSegAttentionLib.errors import ModelError
from MedSegAttentionLib.modelstore.store import ModelStore
from model_cards import install_random_model


@pytest.fixture
def served(tmp_path):
    """A random-weight model exported to a folder served by a loopback HTTP server."""
    _, model_id, weights = install_random_model(tmp_path / "origin")
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(weights, site / weights.name)
    (site / "tampered.safetensors").write_bytes(weights.read_bytes()[:-1] + b"\0")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield model_id, weights, base, tmp_path
    finally:
        server.shutdown()
        server.server_close()


def _store_with_card_only(tmp_path: Path, model_id: str, url: str | None) -> ModelStore:
    """A store that knows the card (with its SHA-256 and URL) but has no weights yet."""
    card = json.loads((tmp_path / "origin" / "cards" / f"{model_id}.json").read_text())
    card["weights"]["url"] = url
    store = ModelStore(tmp_path / "fresh")
    store.cards_dir.mkdir(parents=True)
    (store.cards_dir / f"{model_id}.json").write_text(json.dumps(card))
    return store


def test_download_verifies_and_installs_with_progress(served) -> None:
    model_id, weights, base, tmp_path = served
    store = _store_with_card_only(tmp_path, model_id, f"{base}/{weights.name}")
    assert not store.is_installed(store.card(model_id))
    seen: list[tuple[int, int]] = []
    store.download_weights(model_id, progress=lambda done, total: seen.append((done, total)))
    assert store.is_installed(store.card(model_id))
    assert seen and seen[-1] == (weights.stat().st_size, weights.stat().st_size)
    assert store.load_networks(store.card(model_id))["main"] is not None


def test_tampered_download_is_refused_and_nothing_is_installed(served) -> None:
    model_id, _, base, tmp_path = served
    store = _store_with_card_only(tmp_path, model_id, f"{base}/tampered.safetensors")
    with pytest.raises(ModelError, match="does not match the card"):
        store.download_weights(model_id)
    assert not store.is_installed(store.card(model_id))
    assert not store.weights_dir.exists() or not any(store.weights_dir.iterdir())


def test_download_errors_are_specific(served) -> None:
    model_id, _, base, tmp_path = served
    store = _store_with_card_only(tmp_path, model_id, None)
    with pytest.raises(ModelError, match="no download URL"):
        store.download_weights(model_id)
    with pytest.raises(ModelError, match="only http"):
        store.download_weights(model_id, url="ftp://example.invalid/w.safetensors")
    with pytest.raises(ModelError, match="download of .* failed"):
        store.download_weights(model_id, url=f"{base}/missing.safetensors")


def test_cli_download_installs_the_card_url(served, capsys) -> None:
    model_id, weights, base, tmp_path = served
    store = _store_with_card_only(tmp_path, model_id, f"{base}/{weights.name}")
    assert medseg(["--model-dir", str(store.root), "install-weights", "--model", model_id, "--download"]) == 0
    assert f"installed {model_id}" in capsys.readouterr().out
    assert store.is_installed(store.card(model_id))
    assert medseg(["--model-dir", str(store.root), "install-weights", "--model", model_id,
                   "--url", f"{base}/tampered.safetensors"]) == ModelError.exit_code
