"""PPO math against hand computations, and recurrent state handling."""

import math

import pytest
import torch

from envs import EnvInfo, presets
from metta_lightning import ppo
from models import Fast, FeedForward, build_policy, policy_spec

G, L = 0.9, 0.8


def hand_gae(r, v, nv, term, done, ratio=None, rho_clip=1.0, c_clip=1.0):
    out, last = [0.0] * len(r), 0.0
    for t in reversed(range(len(r))):
        rho = 1.0 if ratio is None else min(ratio[t], rho_clip)
        c = 1.0 if ratio is None else min(ratio[t], c_clip)
        delta = rho * (r[t] + G * (0.0 if term[t] else nv[t]) - v[t])
        last = delta + G * L * c * (0.0 if done[t] else 1.0) * last
        out[t] = last
    return out


def row(x, dtype=torch.float32):
    return torch.tensor([x], dtype=dtype)


def test_gae_matches_hand_computation():
    r, v = [1.0, 0.0, 2.0, 0.5], [0.5, 0.2, 0.1, 0.3]
    term = [False, True, False, False]
    done = term
    final = [0.0, 9.0, 0.0, 0.7]  # V(true final obs): used at the last step (and ignored at termination)
    nv = ppo.next_values(row(v), row(final), row(done, torch.bool))
    assert torch.allclose(nv, row([0.2, 9.0, 0.3, 0.7]))
    adv = ppo.advantages(row(r), row(v), nv, row(term, torch.bool), row(done, torch.bool), G, L)
    expected = hand_gae(r, v, nv[0].tolist(), term, done)
    assert torch.allclose(adv, row(expected), atol=1e-6)
    # by hand for t=1 (terminated): A = r - v = -0.2, and the trace is cut there
    assert adv[0, 1].item() == pytest.approx(-0.2)


def test_vtrace_clips_importance_ratios():
    r, v, nv = [1.0, 0.0, 2.0], [0.5, 0.2, 0.1], [0.2, 0.1, 0.4]
    f = [False] * 3
    ratio = [2.0, 0.5, 1.5]
    adv = ppo.advantages(row(r), row(v), row(nv), row(f, torch.bool), row(f, torch.bool), G, L,
                         row(ratio), rho_clip=1.0, c_clip=0.9)
    assert torch.allclose(adv, row(hand_gae(r, v, nv, f, f, ratio, 1.0, 0.9)), atol=1e-6)
    plain = ppo.advantages(row(r), row(v), row(nv), row(f, torch.bool), row(f, torch.bool), G, L)
    ones = ppo.advantages(row(r), row(v), row(nv), row(f, torch.bool), row(f, torch.bool), G, L, torch.ones(1, 3))
    assert torch.allclose(plain, ones)


def test_truncation_bootstraps_and_termination_does_not():
    v = row([0.0, 1.0])
    final = row([5.0, 0.0])
    done = row([True, False], torch.bool)
    nv = ppo.next_values(v, final, done)
    trunc = ppo.advantages(row([0.0, 0.0]), v, nv, row([False, False], torch.bool), done, G, L)
    term = ppo.advantages(row([0.0, 0.0]), v, nv, row([True, False], torch.bool), done, G, L)
    assert trunc[0, 0].item() == pytest.approx(G * 5.0)  # bootstraps on V(final obs) = 5
    assert term[0, 0].item() == pytest.approx(0.0)  # no bootstrap; trace cut either way
    assert trunc[0, 1].item() == term[0, 1].item()


def test_ppo_loss_clipping():
    actions = torch.tensor([0, 0])
    old_lp = torch.log(torch.tensor([0.25, 0.25]))
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]])).requires_grad_()  # ratio = 2
    adv = torch.tensor([1.0, -1.0])
    v = torch.zeros(2, requires_grad=True)
    loss, stats, ratio = ppo.ppo_loss(logits, actions, old_lp, v, torch.zeros(2), torch.ones(2), adv,
                                      clip_coef=0.2, vf_clip_coef=0.1, ent_coef=0.0, vf_coef=1.0)
    assert torch.allclose(ratio, torch.tensor([2.0, 2.0]))
    assert stats["clipfrac"].item() == 1.0
    # adv > 0: clipped at 1.2 (no gradient); adv < 0: unclipped -(-1 * 2) = 2
    assert stats["policy_loss"].item() == pytest.approx((-1.2 + 2.0) / 2)
    # value clipped to 0.1 around old 0: max((0-1)^2, (0-1)^2) = 1 -> 0.5
    assert stats["value_loss"].item() == pytest.approx(0.5)
    loss.backward()
    assert torch.allclose(logits.grad[0], torch.zeros(2))  # clipped sample has no policy gradient
    assert not torch.allclose(logits.grad[1], torch.zeros(2))
    assert stats["entropy"].item() == pytest.approx(math.log(2), rel=1e-5)


def test_value_clipping_uses_the_larger_loss():
    _, stats, _ = ppo.ppo_loss(torch.zeros(1, 2), torch.tensor([0]), torch.log(torch.tensor([0.5])),
                               torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0]),
                               0.2, 0.1, 0.0, 1.0)
    assert stats["value_loss"].item() == pytest.approx(0.5 * 0.9 ** 2)  # clipped value 0.1 is worse


def test_normalize_advantages_global_statistics():
    adv = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    local = ppo.normalize_advantages(adv)
    assert local.mean().abs() < 1e-6 and local.std().item() == pytest.approx(1.0, rel=1e-5)
    # Two ranks with other data: the global mean/std are used.
    other = torch.tensor([[10.0, 10.0, 10.0, 10.0]])
    reduce = lambda s: s + torch.stack([other.sum(), (other ** 2).sum(), torch.tensor(4.0)])  # noqa: E731
    both = torch.cat([adv, other], 1)
    expected = (adv - both.mean()) / both.std()
    assert torch.allclose(ppo.normalize_advantages(adv, reduce), expected, atol=1e-5)


def test_segments_and_minibatches():
    x = torch.arange(2 * 8).view(2, 8)
    seg = ppo.segment(x, 4)
    assert seg.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    mbs = ppo.minibatch_segments(4, 2, torch.Generator().manual_seed(0))
    assert len(mbs) == 2 and sorted(torch.cat(mbs).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("rows,horizon,bptt,mb,needle", [
    (48, 64, 128, 1024, "bptt_horizon=128 is longer than the rollout horizon=64"),
    (48, 64, 48, 1536, "bptt_horizon=48 does not divide the rollout horizon=64"),
    (48, 64, 64, 1000, "minibatch_size=1000 does not divide the batch (48 rows x horizon 64 = 3072"),
    (48, 64, 64, 6144, "minibatch_size=6144 is larger than the batch"),
    (48, 64, 32, 1008, "minibatch_size=1008 is not a multiple of bptt_horizon=32"),
])
def test_validate_sizes_names_the_numbers(rows, horizon, bptt, mb, needle):
    with pytest.raises(ValueError, match="inconsistent PPO sizes") as err:
        ppo.validate_sizes(rows, horizon, bptt, mb)
    assert needle in str(err.value)
    ppo.validate_sizes(48, 64, 16, 1024)


INFO = EnvInfo.from_config(presets.arena_basic_easy_shaped())


def test_fast_size_and_spec_roundtrip():
    fast = Fast(INFO)
    n = sum(p.numel() for p in fast.parameters())
    assert 0.55e6 < n < 0.61e6
    again = build_policy(policy_spec(fast), INFO)
    assert type(again) is Fast and again.init_args == fast.init_args
    assert policy_spec(FeedForward(INFO, hidden_size=32))["init_args"] == {"channels": 32, "hidden_size": 32}


def test_recurrent_sequence_equals_steps_with_resets():
    torch.manual_seed(0)
    policy = Fast(INFO, hidden_size=32, critic_hidden=32, actor_hidden=32)
    b, t = 3, 6
    obs = torch.randint(0, 256, (b, t, 200, 3), dtype=torch.uint8)
    obs[..., 1] %= 27
    is_init = torch.zeros(b, t, dtype=torch.bool)
    is_init[0, 2] = is_init[2, 4] = True
    state0 = torch.randn(b, 2, 2, 32)
    seq = policy.forward_sequence(obs, state0, is_init)
    logits, values, final = seq["logits"], seq["values"], seq["state"]
    assert seq["features"].shape == (b, t, 32)  # the core's output, for losses that ask for it
    state = state0
    for i in range(t):
        step = policy.forward_step(obs[:, i], state, is_init[:, i])
        lg, vl, state = step["logits"], step["values"], step["state"]
        assert torch.allclose(lg, logits[:, i], atol=1e-5) and torch.allclose(vl, values[:, i], atol=1e-5)
        assert torch.allclose(step["features"], seq["features"][:, i], atol=1e-5)
    assert torch.allclose(state, final, atol=1e-5)
    # is_init zeroes the state: row 0 from step 2 on does not depend on the state before.
    other = policy.forward_sequence(obs, torch.randn(b, 2, 2, 32), is_init)["logits"]
    assert torch.allclose(other[0, 2:], logits[0, 2:], atol=1e-5)
    assert not torch.allclose(other[1], logits[1], atol=1e-5)
