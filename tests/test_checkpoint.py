"""Policy artifacts: round trip on local and fsspec URIs, :latest, run names, feature remap, bad input."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
import torch

from envs.info import EnvInfo
from metta_lightning import checkpoint as ck
from metta_lightning import checkpoint_uris as uris
from models.base import FeatureRemap
from metta_lightning.checkpoint import CheckpointError, load_artifact, load_policy, save_policy

FEATURES = ["type_id", "agent:group", "hp", "inv:ore", "inv:heart"]


def env_info(features=FEATURES, actions=("noop", "move", "rotate")) -> EnvInfo:
    return EnvInfo(feature_names=list(features), feature_normalizations=[1.0] * len(features),
                   action_names=list(actions), num_tokens=8, obs_height=11, obs_width=11, num_agents=2)


class TinyPolicy(torch.nn.Module):
    """Follows the project convention `cls(env_info, **init_args)` and keeps `init_args`."""

    def __init__(self, env_info: EnvInfo, hidden: int = 16):
        super().__init__()
        self.init_args = {"hidden": hidden}
        self.num_features = len(env_info.feature_names)
        self.embed = torch.nn.Embedding(self.num_features * 256 + 1, hidden)  # (feature, value); last = pad
        self.head = torch.nn.Linear(hidden, env_info.num_actions)
        self.register_buffer("norms", torch.tensor(env_info.feature_normalizations))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # obs uint8 [B, T, 3]
        f, v = obs[..., 1].long(), obs[..., 2].long()
        pad = f == 0xFF
        idx = torch.where(pad, self.num_features * 256, f.clamp(max=self.num_features - 1) * 256 + v)
        return self.head(self.embed(idx).masked_fill(pad[..., None], 0).sum(-2))


def make_policy(seed=0, **kw) -> TinyPolicy:
    torch.manual_seed(seed)
    return TinyPolicy(env_info(), **kw)


def obs_batch(features_ids, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    obs = torch.full((n, 8, 3), 0xFF, dtype=torch.uint8)
    for t, fid in enumerate(features_ids):
        obs[:, t, 0] = 0x55
        obs[:, t, 1] = fid
        obs[:, t, 2] = torch.randint(0, 50, (n,), generator=g, dtype=torch.uint8)
    return obs


def test_round_trip_local_path_and_file_url(tmp_path):
    p = make_policy(hidden=12)
    url = save_policy(p, env_info(), str(tmp_path / "run1:v3.mpt"), agent_steps=1234)
    assert os.path.basename(url) == "run1:v3.mpt"
    assert os.listdir(tmp_path) == ["run1:v3.mpt"]  # no temp file left
    for uri in (url, f"file://{url}"):
        q, spec, loaded_from = load_artifact(uri)
        assert isinstance(q, TinyPolicy) and q.init_args == {"hidden": 12} and not q.training
        assert load_policy(uri).init_args == {"hidden": 12}
        for k, v in p.state_dict().items():
            assert torch.equal(v, q.state_dict()[k])
        assert spec["run"] == "run1" and spec["epoch"] == 3 and spec["agent_steps"] == 1234
        assert loaded_from.endswith("run1:v3.mpt")
    with zipfile.ZipFile(url) as z:
        assert sorted(z.namelist()) == ["policy_spec.json", "weights.safetensors"]
        spec = json.loads(z.read("policy_spec.json"))
    assert spec["format"] == "metta_lightning.policy" and spec["class_path"].endswith("TinyPolicy")
    assert spec["env_info"]["feature_names"] == FEATURES and spec["project_version"]


def test_memory_url_and_latest(tmp_path):
    for e in (1, 2, 10):
        save_policy(make_policy(seed=e), env_info(), f"memory://ckpts/r:v{e}.mpt")
    res = uris.resolve_uri("memory://ckpts/:latest")
    assert res.path.endswith("r:v10.mpt")  # numeric, not lexical order
    assert load_artifact("memory://ckpts/:latest").spec["epoch"] == 10
    assert load_artifact("memory://ckpts/r:latest").spec["epoch"] == 10
    assert load_artifact("memory://ckpts").spec["epoch"] == 10  # a directory means its latest


def test_incomplete_write_is_never_latest(tmp_path):
    d = tmp_path / "ck"
    save_policy(make_policy(), env_info(), str(d / "r:v1.mpt"))
    save_policy(make_policy(), env_info(), str(d / "r:v2.mpt"))
    # a writer killed mid-write leaves its temp name behind; a non-atomic copy leaves a truncated file
    (d / ".r:v9.mpt.tmp-deadbeef").write_bytes(b"PK\x03\x04partial")
    data = (d / "r:v2.mpt").read_bytes()
    (d / "r:v3.mpt").write_bytes(data[: len(data) // 2])
    assert load_artifact(f"{d}/:latest").spec["epoch"] == 2


def test_bare_run_name_under_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("METTA_DATA_DIR", str(tmp_path))
    for e in (4, 5):
        save_policy(make_policy(), env_info(), str(tmp_path / "myrun" / "checkpoints" / f"myrun:v{e}.mpt"))
    assert load_artifact("myrun").spec["epoch"] == 5
    assert load_artifact("myrun:latest").spec["epoch"] == 5
    assert load_artifact("myrun:v4").spec["epoch"] == 4


def test_feature_remap_by_name():
    p = make_policy()
    p.eval()
    buf = io.BytesIO(ck.artifact_bytes(p, env_info()))
    ck.write_bytes_atomic("memory://remap/r:v1.mpt", buf.getvalue())
    # the target env numbers the same features differently and has one the policy never saw
    target = ["inv:heart", "new_feature", "type_id", "inv:ore", "agent:group", "hp"]
    q, spec, _ = load_artifact("memory://remap/r:v1.mpt")
    trained_on = EnvInfo(**spec["env_info"])  # any policy module: the artifact's spec has its EnvInfo
    remap = FeatureRemap.between(trained_on, env_info(target))
    train_ids = [0, 3, 4, 2]          # type_id, inv:ore, inv:heart, hp in the training numbering
    target_ids = [2, 3, 0, 5]         # the same features in the target numbering
    obs_train = obs_batch(train_ids)
    obs_target = obs_batch(target_ids)
    with torch.no_grad():
        assert torch.equal(p(obs_train), q(remap(obs_target)))
        remapped = remap(obs_batch([1, 2]))   # new_feature is unknown -> whole token blank
        assert remapped[0, 0].tolist() == [0xFF, 0xFF, 0xFF] and remapped[0, 1, 1] == 0
        # an unknown feature's token is ignored exactly like an unused one
        assert torch.equal(q(remap(obs_batch([2, 1]))), q(remap(obs_batch([2]))))
    assert FeatureRemap.between(trained_on, env_info()) is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_artifact(tmp_path, damage):
    path = tmp_path / "r:v1.mpt"
    save_policy(make_policy(), env_info(), str(path))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data[len(data) // 2] ^= 0xFF  # inside the weights: caught by the zip CRC
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}.*(truncated|corrupted)"):
        load_policy(str(path))


def test_zip_that_is_not_ours(tmp_path):
    path = tmp_path / "other:v1.mpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError, match="not a metta_lightning policy artifact"):
        load_policy(str(path))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("policy_spec.json", json.dumps({"format": "someone-else"}))
        z.writestr("weights.safetensors", b"")
    with pytest.raises(CheckpointError, match="format marker 'someone-else'"):
        load_policy(str(path))


def test_bad_uris(tmp_path, monkeypatch):
    monkeypatch.setenv("METTA_DATA_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"ftpx://a/b:v1.mpt: unknown URI scheme 'ftpx'"):
        load_policy("ftpx://a/b:v1.mpt")
    with pytest.raises(CheckpointError, match=r"invalid run name 'bad name!'"):
        load_policy("bad name!")
    with pytest.raises(CheckpointError, match=r"invalid run name"):
        uris.artifact_name("a:b", 1)
    with pytest.raises(CheckpointError, match=r"nosuchrun: checkpoint directory not found"):
        load_policy("nosuchrun")
    with pytest.raises(CheckpointError, match=r"checkpoint not found"):
        load_policy(str(tmp_path / "missing:v1.mpt"))
    with pytest.raises(CheckpointError, match=r"no complete checkpoint"):
        load_policy(f"{tmp_path}/:latest")


def test_policy_without_init_args_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="init_args"):
        save_policy(torch.nn.Linear(2, 2), env_info(), str(tmp_path / "r:v1.mpt"))


def test_feature_remap_on_project_policy_entry_points():
    """A remapped observation gives models.* policies' forward_step and forward_sequence the same outputs."""
    from models.feedforward import FeedForward

    info = env_info()
    torch.manual_seed(0)
    p = FeedForward(info, channels=8, hidden_size=16).eval()
    ck.write_bytes_atomic("memory://remap2/r:v1.mpt", ck.artifact_bytes(p, info))
    target = ["inv:heart", "new_feature", "type_id", "inv:ore", "agent:group", "hp"]
    q = load_policy("memory://remap2/r:v1.mpt")
    remap = FeatureRemap.between(q.env_info, env_info(target))
    obs_train, obs_target = obs_batch([0, 3, 4, 2]), remap(obs_batch([2, 3, 0, 5]))
    init = torch.ones(len(obs_train), dtype=torch.bool)
    with torch.no_grad():
        a, b = p.forward_step(obs_train, None, init), q.forward_step(obs_target, None, init)
        assert set(a.keys()) == set(b.keys()) and all(torch.equal(a[k], b[k]) for k in a.keys())
        a, b = p.forward_sequence(obs_train[:, None], None, init[:, None]), \
            q.forward_sequence(obs_target[:, None], None, init[:, None])
        assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["values"], b["values"])


def test_every_byte_flip_of_an_artifact_is_a_checkpoint_error_or_harmless(tmp_path):
    """Damage anywhere in a `.mpt` (data, zip directory, compression flags) is a CheckpointError naming it,
    never NotImplementedError or a zlib error; a flip that is not caught left the weights intact."""
    import io
    import zipfile

    p = make_policy(seed=3)
    path = tmp_path / "r:v1.mpt"
    save_policy(p, env_info(), str(path))
    good = path.read_bytes()
    directory = zipfile.ZipFile(io.BytesIO(good)).start_dir
    offsets = sorted({*range(0, directory, max(1, directory // 2000)), *range(directory, len(good))})
    reference = p.state_dict()
    passed = 0
    for offset in offsets:
        damaged = bytearray(good)
        damaged[offset] ^= 0x55
        path.write_bytes(bytes(damaged))
        try:
            q = load_policy(str(path))
        except CheckpointError as e:
            assert str(path) in str(e)
            continue
        passed += 1
        assert all(torch.equal(v, q.state_dict()[k]) for k, v in reference.items()), offset
    assert passed <= 13  # only a flip in the seal's own prefix passes unnoticed (and harms nothing)
