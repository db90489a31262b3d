"""The Hugging Face Hub (mobilevit/models/hub.py): hf-hub ids are downloaded into the cache from a local stand-in for
the Hub, then read offline from it; an uncached repo offline is one clear line."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env

from mobilevit.models.hub import imagenet_hub_id
from test_models import randomize_batchnorm

# --- the Hugging Face Hub, offline --------------------------------------------------------------------------------
HUB_REPO = "timm/mobilevit_xxs.cvnets_in1k"


class HubServer(ThreadingHTTPServer):
    """A stand-in for the Hub's file endpoint: ``/<repo>/resolve/<revision>/<file>`` for the files it holds."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), HubHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(BaseHTTPRequestHandler):
    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def _reply(self, body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        found = re.fullmatch(r"/(.+)/resolve/[^/]+/([^/]+)", self.path)
        data = self.server.files.get(f"{found[1]}/{found[2]}") if found else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if found and found[1] == HUB_REPO else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._reply(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(body=True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    """A local Hub serving ``timm/mobilevit_xxs.cvnets_in1k`` as timm writes it (model.safetensors + config.json),
    made from a randomly initialised timm model."""
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf

    torch.manual_seed(0)
    save_for_hf(randomize_batchnorm(timm.create_model("mobilevit_xxs")), tmp_path / "repo", safe_serialization=True)
    files = {f"{HUB_REPO}/{file.name}": file.read_bytes() for file in (tmp_path / "repo").iterdir()}
    assert {"model.safetensors", "config.json"} <= {name.rsplit("/", 1)[1] for name in files}
    server = HubServer(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _hub_env(tmp_path: Path, endpoint: str | None) -> dict[str, str]:
    env = subprocess_env()  # proxies point nowhere: only 127.0.0.1 can be reached
    env.update({"HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    env.pop("HF_HUB_CACHE", None)
    if endpoint is None:
        env["HF_HUB_OFFLINE"] = "1"
        env.pop("HF_ENDPOINT", None)
    else:
        env["HF_ENDPOINT"] = endpoint
        env.pop("HF_HUB_OFFLINE", None)
    return env


def test_finetune_recipe_downloads_hub_weights_then_works_offline_from_the_cache(hub: HubServer, tmp_path: Path) -> None:
    """``experiment=flowers102_finetune model.pretrained=hf-hub:...`` downloads through huggingface_hub (from a
    local endpoint) and trains; offline, the cached copy is read, and a repo that is not cached is one clear line."""
    overrides = [
        "experiment=flowers102_finetune", "~data.split_protocol", *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none", "test=false",
        f"model.pretrained=hf-hub:{HUB_REPO}", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=ROOT, env=_hub_env(tmp_path, hub.url), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"GET /{HUB_REPO}/resolve/main/model.safetensors" in hub.requests
    snapshot = tmp_path / "hf" / "hub" / f"models--{HUB_REPO.replace('/', '--')}" / "snapshots" / HubHandler.COMMIT
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "config.json").is_file()

    script = (
        "import sys; from mobilevit.models import read_weights; from mobilevit.utils import find_user_error\n"
        f"w = read_weights('hf-hub:{HUB_REPO}'); print(w.layout, w.variant, w.num_classes, w.preprocessing)\n"
        "try:\n    read_weights('imagenet', 'mobilevit_s')\n"
        "except Exception as e:\n    print('ERROR', find_user_error(e))\n"
    )
    served = len(hub.requests)
    offline = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_hub_env(tmp_path, None), capture_output=True, text=True
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert len(hub.requests) == served  # nothing asked of the network
    lines = offline.stdout.splitlines()
    assert lines[0].startswith("timm mobilevit_xxs 1000 Preprocessing(image_size=256, crop_pct=0.9, interpolation='bicubic'")
    repo = imagenet_hub_id("mobilevit_s")
    assert lines[1].startswith(f"ERROR model.pretrained=hf-hub:{repo}: model.safetensors / pytorch_model.bin is not in ")
    assert f"hf download {repo} model.safetensors" in lines[1] and len(lines) == 2
