"""ImageNet weights for the Xception encoder: from timm's cache, the hub, or a local file.

The original release always started from timm's ImageNet Xception; its results depend on it. When
the weights cannot be had (offline, nothing cached, no file given) the user gets one sentence saying
what to do, within seconds, instead of a stack of network errors.
"""
import os

import torch

from errors import UserError

HUB_REPO = "timm/legacy_xception.tf_in1k"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
HOW_TO = (
    "put the file on this machine and set model.pretrained to its path (it is "
    f"https://huggingface.co/{HUB_REPO}/resolve/main/model.safetensors), or set "
    "model.pretrained: false to start from random weights")


def _read_state_dict(path: str) -> dict:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            obj = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise UserError(f"model.pretrained: cannot read encoder weights {path!r} "
                        f"({' '.join(str(exc).split())[:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or \
            not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"model.pretrained: {path!r} holds no state dict of tensors")
    return obj


def _to_timm_names(state: dict) -> dict:
    """Accept timm's names, an ``encoder.``-prefixed RECCE state dict, and Cadene's Xception file
    (``last_linear`` head, 2-d pointwise weights)."""
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if any(k.startswith(p) for p in ("fc.", "attention.", "reasoning.", "decoder")) and \
                any(n.startswith("encoder.") for n in state):
            continue  # a whole RECCE checkpoint: keep only the encoder
        k = k[len("encoder."):] if k.startswith("encoder.") else k
        k = k.replace("last_linear.", "fc.")
        if k.endswith("pointwise.weight") and v.dim() == 2:
            v = v[:, :, None, None]
        out[k] = v
    return out


def _find_cached() -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in HUB_FILES:
        hit = try_to_load_from_cache(HUB_REPO, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _hub_reachable(timeout=3.0) -> bool:
    """One TCP connection to the hub, so that an unreachable hub fails in seconds (the hub client
    retries with back-off for about 25 s, printing a warning each time)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download() -> str:
    import logging

    from huggingface_hub import hf_hub_download
    if not _hub_reachable():
        raise OSError("the hub cannot be reached")
    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return hf_hub_download(HUB_REPO, HUB_FILES[0], etag_timeout=5)
    finally:
        quiet.setLevel(level)


def resolve_pretrained(pretrained) -> str:
    """The path of the encoder weights that ``pretrained`` (True or a path) asks for."""
    if isinstance(pretrained, (str, os.PathLike)):
        path = os.fspath(pretrained)
        if not os.path.isfile(path):
            raise UserError(f"model.pretrained: no such file {path!r}; {HOW_TO}")
        return path
    cached = _find_cached()
    if cached:
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise UserError("ImageNet weights for the Xception encoder are not in timm's cache and "
                        f"HF_HUB_OFFLINE is set: {HOW_TO}")
    try:
        return _download()
    except Exception:  # noqa: BLE001 - offline, DNS, proxy, HTTP: all mean the same to the user
        raise UserError("ImageNet weights for the Xception encoder could not be downloaded "
                        f"(offline?) and are not in timm's cache: {HOW_TO}") from None


def load_encoder_weights(encoder: torch.nn.Module, pretrained) -> None:
    path = resolve_pretrained(pretrained)
    state = _to_timm_names(_read_state_dict(path))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path!r} is not an Xception (legacy_xception) weights file: missing "
                        f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")


def xception_encoder(pretrained=False) -> torch.nn.Module:
    """timm's ``legacy_xception`` (RECCE's encoder, the baseline's backbone), started from ImageNet
    weights when ``pretrained`` is True or a path, from random weights when False."""
    import timm
    encoder = timm.create_model("legacy_xception", pretrained=False)
    if pretrained:
        load_encoder_weights(encoder, pretrained)
    return encoder
