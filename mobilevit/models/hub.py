"""Where weights come from: the Hugging Face Hub ids (``hf-hub:<repo_id>``, the ``imagenet`` alias) and their download.

A weights source (``model.pretrained``) is ``hf-hub:<repo_id>`` (e.g. ``hf-hub:timm/mobilevit_xs.cvnets_in1k`` or
``hf-hub:apple/mobilevit-small``), ``imagenet`` (the variant's ImageNet-1k weights, timm's ``<variant>.cvnets_in1k``
on the Hub) or a local file or folder; :func:`resolve_source` turns it into a local path. Hub repositories are
downloaded with ``huggingface_hub`` into its usual cache (offline, ``HF_HUB_OFFLINE=1``, the cached copy is used).
Reading the files is :mod:`mobilevit.models.pretrained`'s job.
"""

from __future__ import annotations

from pathlib import Path

from mobilevit.errors import UserInputError

HUB_PREFIX = "hf-hub:"
IMAGENET = "imagenet"
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one found is used


def imagenet_hub_id(variant: str) -> str:
    """The Hub repository of ``variant``'s ImageNet-1k weights (timm's port of Apple's ml-cvnets weights)."""
    return f"timm/{variant}.cvnets_in1k"


def _offline_message(repo_id: str, files: list[str]) -> str:
    return (
        f"model.pretrained=hf-hub:{repo_id}: {' / '.join(files)} is not in the Hugging Face cache and the Hub "
        f"cannot be reached (offline or HF_HUB_OFFLINE=1). Download it once with network access "
        f"(`hf download {repo_id} {files[0]} config.json`), or pass a local file: model.pretrained=/path/to/{files[0]}."
    )


def download_from_hub(repo_id: str) -> Path:
    """Fetch a Hub repository's weights (the first of :data:`HUB_WEIGHT_FILES` it has) and its JSON configs into
    the Hugging Face cache; return the snapshot folder. Offline, the cached files are used.

    Raises:
        UserInputError: one line for a repository that does not exist (or is private or gated), an invalid id, a
            repository without weights, or weights that are not cached while the Hub cannot be reached.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    not_cached = []
    for filename in HUB_WEIGHT_FILES:
        try:
            folder = Path(hf_hub_download(repo_id, filename)).parent
            break
        except LocalEntryNotFoundError:  # offline (or unreachable) and not cached
            not_cached.append(filename)
        except EntryNotFoundError:  # the repository has no such file
            continue
        except RepositoryNotFoundError:
            raise UserInputError(
                f"model.pretrained=hf-hub:{repo_id}: no such repository on the Hugging Face Hub "
                "(or it is private or gated: log in with `hf auth login`)."
            ) from None
        except ValueError as exc:  # invalid repo id
            raise UserInputError(f"model.pretrained=hf-hub:{repo_id}: {exc}") from None
    else:
        if not_cached:
            raise UserInputError(_offline_message(repo_id, not_cached))
        raise UserInputError(f"model.pretrained=hf-hub:{repo_id}: the repository has none of {HUB_WEIGHT_FILES}.")
    for filename in ("config.json", "preprocessor_config.json"):  # optional: class names and preprocessing
        try:
            hf_hub_download(repo_id, filename)
        except EntryNotFoundError:
            pass
    return folder


def resolve_source(source: str | Path, variant: str | None) -> tuple[str, Path]:
    """(display name, local path) of a weights source: ``imagenet`` becomes ``hf-hub:`` + :func:`imagenet_hub_id`,
    a ``hf-hub:`` id is downloaded (:func:`download_from_hub`: its snapshot folder), anything else is a local path
    (``~`` expanded, not checked).

    Raises:
        UserInputError: ``imagenet`` without a ``variant``, or the download's errors.
    """
    text = str(source)
    if text == IMAGENET:
        if variant is None:
            raise UserInputError("model.pretrained=imagenet needs the model variant (model.name / --model).")
        text = HUB_PREFIX + imagenet_hub_id(variant)
    if text.startswith(HUB_PREFIX):
        return text, download_from_hub(text.removeprefix(HUB_PREFIX))
    return text, Path(text).expanduser()
