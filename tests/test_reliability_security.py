"""Reliability, security: files from outside load with weights_only=True (a pickled object is refused with a clear
error by evaluate, predict, resume and model.pretrained), and no code path downloads anything but the dataset and
the Hub weights that model.pretrained=hf-hub:<repo_id> / imagenet asks for."""

from __future__ import annotations

import ast
import pathlib
import re
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, user_error
from torchvision.datasets import Flowers102

from evaluate import evaluate
from mobilevit.data.flowers102 import FLOWERS102_URL
from mobilevit.models import create_model
from mobilevit.predict import Classifier
from train import train

SOURCES = sorted([*(ROOT / "mobilevit").rglob("*.py"), ROOT / "train.py", ROOT / "evaluate.py"])


class Payload:
    """Unpickling this object (without weights_only) runs ``Path.touch(marker)``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint-shaped file whose hyper-parameters hold a pickled object with a side effect."""
    marker = tmp_path / "code_ran"
    checkpoint = {
        "state_dict": create_model("mobilevit_xxs", num_classes=3).state_dict(),
        "hyper_parameters": {"cfg": {"model": {}, "data": {}}, "num_classes": 3, "evil": Payload(marker)},
        "global_step": 0,
    }
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def test_pickled_objects_in_checkpoints_are_refused(malicious_checkpoint, make_cfg) -> None:
    path, marker = malicious_checkpoint
    quick = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false"]
    messages = {
        "evaluate": user_error(evaluate, make_cfg([f"ckpt_path={path}"], config_name="eval")),
        "predict": user_error(Classifier, path),
        "resume": user_error(train, make_cfg([*quick, f"ckpt_path={path}"])),
        "pretrained": user_error(train, make_cfg([*quick, f"model.pretrained={path}"])),
    }
    expected = (
        f"Refusing to load checkpoint '{path}': it holds pickled Python objects (Unsupported global: GLOBAL getattr), "
        "and checkpoints are only read with torch.load(weights_only=True)"
    )
    for entry in ("evaluate", "predict", "resume"):
        assert messages[entry].startswith(expected) and len(messages[entry].splitlines()) == 1, messages[entry]
    # model.pretrained reads any weights file: the same line, with what to pass instead.
    assert messages["pretrained"].startswith(expected.replace("checkpoint '", "weights file '"))
    assert "Pass a state dict saved with torch.save" in messages["pretrained"]
    assert not marker.exists()  # nothing was unpickled


def test_every_torch_load_uses_weights_only() -> None:
    loads = [
        (str(source.relative_to(ROOT)), call.lineno, {kw.arg: ast.unparse(kw.value) for kw in call.keywords})
        for source in SOURCES
        for call in ast.walk(ast.parse(source.read_text()))
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "torch.load"
    ]
    assert loads, "torch.load calls not found: the check is broken"
    # One reader: every file goes through mobilevit.models.pretrained.safe_torch_load.
    assert {file for file, _, _ in loads} == {"mobilevit/models/pretrained.py"}, loads
    unsafe = [(file, line) for file, line, keywords in loads if keywords.get("weights_only") != "True"]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


# Network access in the source tree: only the Flowers-102 download through torchvision, and huggingface_hub's download of
# the weights a user names (mobilevit/models/hub.py: download_from_hub).
NETWORK = re.compile(
    r"\b(urllib|requests|httpx|aiohttp|http\.client|socket|urlopen|urlretrieve|torch\.hub|download_url|"
    r"download_and_extract_archive|load_state_dict_from_url|hf_hub_download|huggingface_hub|from_pretrained|"
    r"pretrained=True|download=True)\b|https?://"
)
ALLOWED = {
    (
        "mobilevit/data/flowers102.py",
        'Flowers102, "_download_url_prefix", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"',
    ),
    ("mobilevit/data/flowers102.py", 'Flowers102(str(self.root), split="train", download=True)'),
    (
        "mobilevit/models/hub.py",
        "downloaded with ``huggingface_hub`` into its usual cache (offline, ``HF_HUB_OFFLINE=1``, the cached copy is used).",
    ),
    ("mobilevit/models/hub.py", "from huggingface_hub import hf_hub_download"),
    (
        "mobilevit/models/hub.py",
        "from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError",
    ),
    ("mobilevit/models/hub.py", "folder = Path(hf_hub_download(repo_id, filename)).parent"),
    ("mobilevit/models/hub.py", "hf_hub_download(repo_id, filename)"),
}


def test_nothing_is_downloaded_but_the_dataset_and_requested_hub_weights() -> None:
    found = set()
    for source in SOURCES:
        for line in source.read_text().splitlines():
            if NETWORK.search(line):
                found.add((str(source.relative_to(ROOT)), line.strip()))
    assert found == ALLOWED, f"network access outside the Flowers-102 and Hub downloads: {sorted(found - ALLOWED)}"
    assert FLOWERS102_URL == Flowers102._download_url_prefix  # torchvision's official URL
    assert FLOWERS102_URL.startswith("https://www.robots.ox.ac.uk/")
