"""RAM / RAM++ weight conversion: every reference key (tests/fixtures/ram_keys) mapped, round trips, the
torch-free CLI on a reference-format .pth, strictness, and unsafe pickles refused."""
import functools
import json
import os

import numpy as np
import pytest
import torch
from mindspore import Tensor

import mindram.models.ram as ram
from mindram import catalog
from mindram.errors import CheckpointError, UnsafeCheckpointError
from mindram.models.modeling_utils import checkpoint_names
from mindram.models.ram import convert
from mindram.models.swin import SwinTransformer
from tests.conftest import FIXTURES
from tests.fixtures.ram.loader import expected, fixture_config, inputs, reference_state_dict

TSVS = {"ram_plus_swin_l_384": "ram_plus_swin_l", "ram_swin_l_384": "ram_swin_l",
        "ram_plus_swin_b_384": "ram_plus_swin_b", "ram_swin_b_384": "ram_swin_b"}


def tsv_state_dict(name):
    """A zero-memory stand-in of a full reference state dict: every TSV key with its shape and dtype."""
    rows = (FIXTURES / "ram_keys" / f"ram_keys_{name}.tsv").read_text().splitlines()
    return {key: np.broadcast_to(np.zeros((), dtype), json.loads(shape))
            for key, shape, dtype in (r.split("\t") for r in rows)}


@functools.lru_cache(maxsize=None)
def swin_shapes(vit):
    return {p.name: tuple(p.shape) for p in SwinTransformer(ram.RAMConfig(vit=vit).swin_config).get_parameters()}


@pytest.mark.parametrize("arch", sorted(TSVS))
def test_every_reference_key_is_mapped(arch):
    sd = tsv_state_dict(TSVS[arch])
    for caption in ((False, True) if arch.startswith("ram_swin") else (False,)):
        config = convert.config_from_state_dict(sd, caption_modules=caption)
        assert config == ram.RAMConfig.from_yaml(catalog.arch_file("ram", arch)).replace(caption_modules=caption)
        params, report = convert.convert_state_dict(sd, config)
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        assert shapes == convert.expected_shapes(config, swin_shapes(config.vit))
        mapped = set(convert.to_torch_state_dict(params, config))  # tied aliases re-emitted
        assert mapped | set(report["buffers"]) | set(report["caption_modules"]) == set(sd)
        assert set(report["aliases"]) <= mapped and len(report["aliases"]) == (34 if caption else 0)
    assert convert.config_from_state_dict(sd).caption_modules == arch.startswith("ram_swin")


@pytest.mark.parametrize("model_type", ["ram", "ram_plus"])
def test_round_trip_through_torch_names(model_type):
    config = fixture_config(model_type)
    model = (ram.RAM if model_type == "ram" else ram.RAMPlus)(config)
    params = model.state_dict()
    torch_sd = convert.to_torch_state_dict(params, config)
    if model_type == "ram":
        assert torch_sd["tag_encoder.encoder.layer.1.output.dense.weight"] is \
            torch_sd["tagging_head.encoder.layer.1.output.dense.weight"]
        assert "tag_encoder.encoder.layer.2.output.dense.weight" in torch_sd
    else:
        assert torch_sd["reweight_scale"].shape == ()
    back, _ = convert.convert_state_dict(torch_sd, config)
    assert set(back) == set(params)
    for key, value in params.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    old = {k.replace("tagging_head", "vision_multi"): v for k, v in torch_sd.items()}  # older checkpoints
    assert set(convert.convert_state_dict(old, config)[0]) == set(params)


def test_tied_copies_that_differ_are_reported(caplog):
    config = fixture_config("ram")
    sd = reference_state_dict("ram")
    key = "tag_encoder.encoder.layer.0.intermediate.dense.bias"
    sd[key] = sd[key] + 1
    params, _ = convert.convert_state_dict(sd, config)
    assert "differs from tagging_head.encoder.layer.0.intermediate.dense.bias" in caplog.text
    np.testing.assert_array_equal(params["tagging_head.encoder.layer.0.intermediate.dense.bias"],
                                  reference_state_dict("ram")["tagging_head.encoder.layer.0.intermediate.dense.bias"])


@pytest.fixture
def reference_pth(tmp_path, monkeypatch):
    """The fixture RAM++ saved as the training scripts save checkpoints ({'model', 'optimizer', ...});
    its reduced architecture is not in the catalog, so inference from shapes is pointed at it."""
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in reference_state_dict("ram_plus").items()}
    path = tmp_path / "ram_plus_tiny.pth"
    torch.save({"model": sd, "optimizer": {"state": {}}, "epoch": 1}, path)
    monkeypatch.setattr(convert, "config_from_state_dict", lambda *a, **k: fixture_config("ram_plus"))
    return path


def test_cli_converts_a_reference_checkpoint(reference_pth, tmp_path, capsys):
    out = tmp_path / "converted" / "ram_plus_tiny.safetensors"
    code = convert.main(["--torch_path", str(reference_pth), "--mindspore_path", str(out),
                         "--model_type", "ram_plus", "--vit", "swin_l"])
    buffers = [k for k in reference_state_dict("ram_plus") if k.endswith(("relative_position_index", "attn_mask"))]
    stdout = capsys.readouterr().out
    assert code == 0 and f"dropped: {len(buffers)} buffers (recomputed), 0 tied aliases" in stdout
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    assert f"(re-read: {len(checkpoint_names(out))} tensors)" in stdout
    model = ram.RAMPlus.from_pretrained(out)
    logits = model(Tensor(inputs()["pixel_values"])).asnumpy()
    assert np.abs(logits - expected("ram_plus")[0]["logits"]).max() <= 1e-4
    with pytest.raises(CheckpointError, match="not ram_swin_l_96"):
        convert.convert_file(reference_pth, tmp_path / "x.safetensors", model_type="ram")


def test_strict_about_missing_unexpected_and_ckpt_size(reference_pth, tmp_path, monkeypatch):
    sd = torch.load(reference_pth, weights_only=True)["model"]
    for change, pattern in (("drop", "missing \\['fc.bias'\\]"), ("add", "unexpected \\['extra'\\]")):
        broken = dict(sd)
        if change == "drop":
            del broken["fc.bias"]
        else:
            broken["extra"] = torch.zeros(2)
        torch.save(broken, tmp_path / "broken.pth")
        with pytest.raises(CheckpointError, match=pattern):
            convert.convert_file(tmp_path / "broken.pth", tmp_path / "out.safetensors")
    monkeypatch.setattr(convert, "CKPT_LIMIT", 1000)
    with pytest.raises(CheckpointError, match="safetensors"):
        convert.convert_file(reference_pth, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


class _Exploit:
    def __reduce__(self):
        return os.system, (f"touch {os.environ['RAM_EXPLOIT_MARKER']}",)


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("RAM_EXPLOIT_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    torch.save({"model": {"label_embed": torch.zeros(2, 2)}, "payload": _Exploit()}, path)
    args = ["--torch_path", str(path), "--mindspore_path", str(tmp_path / "out.safetensors")]
    assert convert.main(args) == 2
    with pytest.raises(UnsafeCheckpointError):  # --debug: the exception itself
        convert.main(args + ["--debug"])
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_cli_script_runs():
    import subprocess
    import sys
    from tests.conftest import ROOT
    result = subprocess.run([sys.executable, str(ROOT / "convert_weights" / "convert_ram.py"), "--help"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for flag in ("--torch_path", "--mindspore_path", "--model_type", "--vit", "--model_name", "--caption_modules"):
        assert flag in result.stdout


def run_script(*args):
    import subprocess
    import sys
    from tests.conftest import ROOT
    return subprocess.run([sys.executable, str(ROOT / "convert_weights" / "convert_ram.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, GLOG_v="3"))


@pytest.mark.parametrize("case", ["unknown_architecture", "wrong_suffix", "missing_input"])
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, case):
    from safetensors.numpy import save_file
    source = tmp_path / "ram_like.safetensors"  # RAM keys on a Swin that matches no architecture
    save_file({"label_embed": np.zeros((4, 8), np.float32), "image_proj.weight": np.zeros((8, 8), np.float32),
               "visual_encoder.patch_embed.proj.weight": np.zeros((8, 3, 4, 4), np.float32)}, str(source))
    out = tmp_path / "out.safetensors"
    expected = {"unknown_architecture": f"{source}: Swin weights with embed_dim=8",
                "wrong_suffix": f"{tmp_path / 'out.yaml'}: a checkpoint file name must end with .ckpt or .safetensors",
                "missing_input": str(tmp_path / "nope.pth")}[case]
    if case == "wrong_suffix":
        out = tmp_path / "out.yaml"
    if case == "missing_input":
        source = tmp_path / "nope.pth"
    result = run_script("--torch_path", source, "--mindspore_path", out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("convert_ram.py: error: ") and expected in lines[0], lines[0]
    assert not out.exists() and not result.stdout
