"""MoE UNet, the mixture-of-experts feed-forward and save/from_pretrained. Tiny modules, known answers."""
from __future__ import annotations

import json
import math

import pytest
import torch

from minicream.errors import MinicreamError
from minicream.models.base import WEIGHTS_NAME
from minicream.models.layers import FeedForward
from minicream.models.moe import MoEFeedForward
from minicream.models.unet import MoEUNet, UNetConfig

CTX, POOLED, T_TEXT = 24, 20, 5


def small_config(**kw) -> UNetConfig:
    base = dict(channels=(32, 64), attention=(True, True), head_dim=32, layers_per_block=1,
                context_dim=CTX, pooled_dim=POOLED, num_experts=2)
    base.update(kw)
    return UNetConfig(**base)


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Replace every parameter (incl. the zero-initialised output layers) by noise, so outputs are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def unet_inputs(batch: int = 2, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=g)
    t = torch.tensor([10.0, 900.0, 500.0, 1.0][:batch])
    ctx = torch.randn(batch, T_TEXT, CTX, generator=g)
    mask = torch.ones(batch, T_TEXT, dtype=torch.bool)
    mask[0, 3:] = False
    pooled = torch.randn(batch, POOLED, generator=g)
    return x, t, ctx, mask, pooled


# --- UNet ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("moe", ["token", "timestep", "none"])
def test_unet_output_shape_equals_input_shape(patch_size, moe):
    model = randomize(MoEUNet(small_config(patch_size=patch_size, moe=moe))).eval()
    x, *rest = unet_inputs()
    with torch.no_grad():
        out = model(x, *rest)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_unet_starts_as_zero_predictor():
    """Output projections are zero-initialised: a fresh UNet predicts exactly 0 for any input."""
    model = MoEUNet(small_config()).eval()
    x, *rest = unet_inputs()
    with torch.no_grad():
        assert torch.equal(model(x, *rest), torch.zeros_like(x))


def test_unet_scalar_timestep_is_broadcast():
    model = randomize(MoEUNet(small_config())).eval()
    x, t, ctx, mask, pooled = unet_inputs()
    with torch.no_grad():
        a = model(x, torch.tensor(500.0), ctx, mask, pooled)
        b = model(x, torch.full((2,), 500.0), ctx, mask, pooled)
    assert torch.equal(a, b)


def test_unet_config_validation():
    with pytest.raises(ValueError):
        UNetConfig(channels=(32, 64), attention=(True,))
    with pytest.raises(ValueError):
        UNetConfig(moe="dense")


# --- MoE feed-forward ----------------------------------------------------------------------------


def _dense_reference(moe: MoEFeedForward, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """out[n] = sum over the top-k experts e of w_e * expert_e(x[n]); weights renormalised for k > 1."""
    flat = x.reshape(-1, x.shape[-1])
    probs = logits.reshape(flat.shape[0], -1).float().softmax(-1)
    w, idx = probs.topk(moe.top_k, dim=-1)
    if moe.top_k > 1:
        w = w / w.sum(-1, keepdim=True)
    all_out = torch.stack([e(flat) for e in moe.experts], dim=1)  # (N, E, C)
    picked = all_out.gather(1, idx[:, :, None].expand(-1, -1, flat.shape[-1]))
    return (picked * w[:, :, None]).sum(1).reshape(x.shape)


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_routes_every_token_to_exactly_k_experts(top_k):
    torch.manual_seed(0)
    moe = randomize(MoEFeedForward(dim=8, hidden=16, num_experts=4, top_k=top_k), std=0.5)
    x = torch.randn(3, 10, 8)
    stats = []
    with torch.no_grad():
        out = moe(x, stats=stats)
        expected = _dense_reference(moe, x, moe.router(x))
        assert torch.equal(moe(x), out)  # measuring changes nothing
    n_tokens = 3 * 10
    (record,) = stats
    assert record.counts.sum().item() == top_k * n_tokens
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_moe_keeps_no_state_across_calls():
    """The forward returns what it measured into the caller's list; the module holds no counters or losses, so
    inference (no list) leaves nothing behind and two calls never mix."""
    moe = randomize(MoEFeedForward(dim=8, hidden=16, num_experts=4, top_k=1), std=0.5)
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    attrs = set(vars(moe))
    x = torch.randn(2, 5, 8)
    a, b = [], []
    with torch.no_grad():
        for _ in range(3):
            moe(x)  # inference
        moe(x, stats=a)
        moe(x[:1], stats=b)
    assert set(vars(moe)) == attrs and list(moe.buffers()) == []
    assert all(torch.equal(v, before[k]) for k, v in moe.state_dict().items())
    assert a[0].counts.sum().item() == 10 and b[0].counts.sum().item() == 5


def test_unet_returns_one_record_per_moe_layer_and_keeps_its_weight_keys():
    model = randomize(MoEUNet(small_config(moe="token", num_experts=4))).eval()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10.0, 500.0])
    ctx, mask, pooled = torch.randn(2, T_TEXT, CTX), torch.ones(2, T_TEXT, dtype=torch.bool), torch.randn(2, POOLED)
    stats = []
    with torch.no_grad():
        out = model(x, t, ctx, mask, pooled, moe_stats=stats)
        assert torch.equal(model(x, t, ctx, mask, pooled), out)
    assert len(stats) == len(model.moe_layers) == 1
    assert stats[0].counts.shape == (4,) and stats[0].counts.sum().item() == 2 * 4 * 4  # mid block: 4x4 tokens
    assert not any("usage" in k or "count" in k for k in model.state_dict())


def test_moe_rejects_bad_arguments():
    with pytest.raises(ValueError):
        MoEFeedForward(8, 16, num_experts=2, top_k=3)
    with pytest.raises(ValueError):
        MoEFeedForward(8, 16, router="expert-choice")


def _hand_routed_moe(a: float) -> MoEFeedForward:
    """2 experts over 2-dim tokens, router logits = a * x: token [1,0] -> logits [a,0], [0,1] -> [0,a]."""
    moe = MoEFeedForward(dim=2, hidden=4, num_experts=2, top_k=1)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(2) * a)
    return moe


def test_moe_aux_and_z_loss_known_answer():
    # a = log 3: p = softmax([log 3, 0]) = [3/4, 1/4]. Three tokens [1,0] (-> expert 0), one token [0,1] (-> 1).
    # f = [3/4, 1/4], mean P = [(3*.75 + .25)/4, (3*.25 + .75)/4] = [.625, .375]
    # Switch loss = E * sum f*P = 2 * (.75*.625 + .25*.375) = 1.125;  z = mean(logsumexp^2) = (log 4)^2.
    moe = _hand_routed_moe(math.log(3))
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    stats = []
    with torch.no_grad():
        moe(x, stats=stats)
    assert stats[0].counts.tolist() == [3.0, 1.0]
    assert stats[0].aux_loss.item() == pytest.approx(1.125, rel=1e-6)
    assert stats[0].z_loss.item() == pytest.approx(math.log(4) ** 2, rel=1e-6)


def test_moe_aux_loss_is_one_when_balanced():
    # One token to each expert: f = [1/2, 1/2], mean P = [1/2, 1/2] -> 2 * (1/4 + 1/4) = 1.
    moe = _hand_routed_moe(math.log(3))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    stats = []
    with torch.no_grad():
        moe(x, stats=stats)
    assert stats[0].aux_loss.item() == pytest.approx(1.0, rel=1e-6)


def test_moe_z_loss_is_mean_logsumexp_squared():
    torch.manual_seed(3)
    moe = randomize(MoEFeedForward(dim=8, hidden=16, num_experts=3, top_k=1), std=1.0)
    x = torch.randn(2, 7, 8)
    stats = []
    with torch.no_grad():
        moe(x, stats=stats)
        logits = moe.router(x).reshape(14, 3)
    expected = torch.logsumexp(logits, -1).pow(2).mean()
    assert stats[0].z_loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_timestep_router_gives_all_tokens_of_a_sample_one_expert():
    torch.manual_seed(4)
    emb_dim = 6
    moe = randomize(MoEFeedForward(dim=8, hidden=16, num_experts=4, top_k=1, router="timestep", emb_dim=emb_dim), std=1.0)
    B, T = 6, 9
    x, emb = torch.randn(B, T, 8), torch.randn(B, emb_dim) * 3
    stats = []
    with torch.no_grad():
        out = moe(x, emb, stats)
        chosen = moe.router(emb).argmax(-1)  # one expert per sample
        for b in range(B):
            expert_out = moe.experts[int(chosen[b])](x[b])
            # weight = that expert's router probability, same for every token of the sample
            w = moe.router(emb[b]).softmax(-1).max()
            torch.testing.assert_close(out[b], expert_out * w, rtol=1e-5, atol=1e-6)
    counts = stats[0].counts
    assert counts.sum().item() == B * T
    assert all(c % T == 0 for c in counts.tolist())  # whole samples, never split
    assert len(set(chosen.tolist())) > 1  # the test would be vacuous if all samples picked one expert


@pytest.mark.parametrize("top_k", [1, 2])
def test_dense_twin_has_the_same_active_ff_parameters(top_k):
    cfg_moe = small_config(moe="token", num_experts=4, top_k=top_k)
    cfg_dense = small_config(moe="none", num_experts=4, top_k=top_k)
    moe_ff = MoEUNet(cfg_moe).mid_attn.ff
    dense_ff = MoEUNet(cfg_dense).mid_attn.ff
    assert isinstance(moe_ff, MoEFeedForward) and isinstance(dense_ff, FeedForward)

    def weights(m):  # the matrices (what costs FLOPs per token)
        return sum(p.numel() for n, p in m.named_parameters() if n.endswith("weight"))

    one_expert = moe_ff.experts[0]
    assert weights(dense_ff) == top_k * weights(one_expert)
    # Biases: the first-layer biases match too; the dense twin has one output bias where k experts have k.
    expert_total = sum(p.numel() for p in one_expert.parameters())
    dense_total = sum(p.numel() for p in dense_ff.parameters())
    dim = cfg_moe.channels[-1]
    assert dense_total == top_k * expert_total - (top_k - 1) * dim
    # Everything outside the mid FF is identical.
    rest = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("mid_attn.ff."))
    assert rest(MoEUNet(cfg_moe)) == rest(MoEUNet(cfg_dense))


def test_unet_exposes_its_moe_layers():
    assert len(MoEUNet(small_config(moe="token")).moe_layers) == 1
    assert MoEUNet(small_config(moe="none")).moe_layers == []


# --- save_pretrained / from_pretrained -------------------------------------------------------------


@pytest.mark.parametrize("moe", ["token", "timestep"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, moe):
    model = randomize(MoEUNet(small_config(moe=moe, patch_size=2))).eval()
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / WEIGHTS_NAME).is_file() and (tmp_path / "unet" / "config.json").is_file()
    loaded = MoEUNet.from_pretrained(tmp_path / "unet")
    assert loaded.config == model.config
    assert not loaded.training
    inputs = unet_inputs()
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))


def test_save_bf16_loads_as_float32(tmp_path):
    model = randomize(MoEUNet(small_config())).eval()
    model.save_pretrained(tmp_path / "unet", dtype=torch.bfloat16)
    loaded = MoEUNet.from_pretrained(tmp_path / "unet")
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert q.dtype == torch.float32
        assert torch.equal(q, p.to(torch.bfloat16).float()), name


def test_config_json_with_unknown_key_is_refused(tmp_path):
    MoEUNet(small_config()).save_pretrained(tmp_path / "unet")
    cfg_path = tmp_path / "unet" / "config.json"
    data = json.loads(cfg_path.read_text())
    data["num_expertz"] = 8
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(MinicreamError, match="num_expertz"):
        MoEUNet.from_pretrained(tmp_path / "unet")


def test_missing_or_broken_config_json(tmp_path):
    with pytest.raises(MinicreamError, match="config.json"):
        MoEUNet.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MinicreamError, match="JSON"):
        MoEUNet.from_pretrained(tmp_path)


def _swap_config(directory, **changes):
    cfg_path = directory / "config.json"
    data = json.loads(cfg_path.read_text())
    data.update(changes)
    cfg_path.write_text(json.dumps(data))


def test_weights_with_other_keys_are_refused(tmp_path):
    """Weights of an MoE UNet loaded under a dense-twin config.json: missing/unexpected keys -> MinicreamError."""
    MoEUNet(small_config(moe="token")).save_pretrained(tmp_path / "unet")
    _swap_config(tmp_path / "unet", moe="none")
    with pytest.raises(MinicreamError, match="model.safetensors.*do not match"):
        MoEUNet.from_pretrained(tmp_path / "unet")




def test_weights_for_more_experts_are_refused(tmp_path):
    """Weights saved with 2 experts, config.json saying 3 (router shape differs) -> MinicreamError."""
    MoEUNet(small_config(num_experts=2)).save_pretrained(tmp_path / "unet")
    _swap_config(tmp_path / "unet", num_experts=3)
    with pytest.raises(MinicreamError, match="model.safetensors"):
        MoEUNet.from_pretrained(tmp_path / "unet")


def test_weights_with_other_shapes_are_refused(tmp_path):
    """Same keys, different tensor shapes (wider channels) -> MinicreamError, not a raw RuntimeError."""
    MoEUNet(small_config(channels=(32, 64))).save_pretrained(tmp_path / "unet")
    _swap_config(tmp_path / "unet", channels=[32, 96])
    with pytest.raises(MinicreamError, match="model.safetensors"):
        MoEUNet.from_pretrained(tmp_path / "unet")


def test_config_json_with_invalid_value_is_refused(tmp_path):
    MoEUNet(small_config()).save_pretrained(tmp_path / "unet")
    _swap_config(tmp_path / "unet", moe="dense")
    with pytest.raises(MinicreamError, match="config.json"):
        MoEUNet.from_pretrained(tmp_path / "unet")


def test_stock_diffusers_unet_behind_our_calling_convention(tmp_path):
    """arch="diffusers": the stock UNet2DConditionModel, same call and save/load as ours (issue 6's baseline)."""
    from diffusers import UNet2DConditionModel

    from minicream.models.build import build_unet, load_unet
    from minicream.models.unet import MoEUNet, UNetConfig

    cfg = UNetConfig(channels=(32, 64), layers_per_block=1, attention=(False, True), head_dim=16, context_dim=24,
                     pooled_dim=24, arch="diffusers")
    net = build_unet(cfg)
    assert isinstance(net.net, UNet2DConditionModel) and net.moe_layers == []
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 24)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = net(x, torch.tensor(500.0), ctx, mask, torch.randn(2, 24))
    assert out.shape == x.shape
    # masked-out context tokens do not change the output (the mask reaches diffusers' cross-attention)
    ctx2 = ctx.clone()
    ctx2[0, 3:] = 100.0
    assert torch.allclose(net(x, torch.tensor(500.0), ctx2, mask, None)[0], out[0], atol=1e-5)
    net.save_pretrained(tmp_path / "stock")
    again = load_unet(tmp_path / "stock")
    assert type(again) is type(net) and torch.allclose(again(x, torch.tensor(500.0), ctx, mask, None), out, atol=1e-5)
    assert isinstance(build_unet(UNetConfig(channels=(32, 64), head_dim=16)), MoEUNet)
    with pytest.raises(ValueError, match="arch must be"):
        UNetConfig(arch="sdxl")


def test_group_norm_contiguous_path_equals_nn_group_norm():
    from minicream.models.layers import GroupNorm

    torch.manual_seed(0)
    ours, ref = GroupNorm(8, 32, eps=1e-6).double(), torch.nn.GroupNorm(8, 32, eps=1e-6).double()
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 32, 5, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the layout the next conv expects
    g = torch.randn_like(y)
    a = torch.autograd.grad(y, (x, ours.weight, ours.bias), g)
    b = torch.autograd.grad(ref(x), (x, ref.weight, ref.bias), g)
    torch.testing.assert_close(y, ref(x), rtol=1e-12, atol=1e-12)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)
