"""Training objectives, classifier-free guidance, and sampling part-way (img2img, inpainting, inversion), checked
against closed-form answers. The samplers themselves are checked in test_samplers.py.

For data that is a single point x0, the exact denoiser is known: a noisy input x_t = sqrt(a) x0 + sqrt(1-a) eps
(a = alpha-bar at timestep t) gives eps = (x_t - sqrt(a) x0) / sqrt(1-a), v = sqrt(a) eps - sqrt(1-a) x0, and for
rectified flow x_t = (1-s) x0 + s eps gives the velocity eps - x0 = (x_t - x0) / s.
"""
from __future__ import annotations

import pytest
import torch

from minicream.diffusion.objectives import (
    NUM_TRAIN_TIMESTEPS,
    DDPMObjective,
    FlowObjective,
    ddpm_alphas_cumprod,
    make_objective,
)
from minicream.diffusion.samplers import cfg_model_fn, sample
from minicream.errors import MinicreamError

ALPHAS = ddpm_alphas_cumprod("scaled_linear").double()
SHAPE = (3, 4, 8, 8)
# DDIM and PLMS stop at timestep 0's level, leaving sqrt(1 - alpha-bar[0]) ~ 0.03 of noise in the result.
ENDS_AT_T0 = ("ddim", "plms")


def ddpm_config(prediction_type: str, beta_schedule: str = "scaled_linear") -> dict:
    return {"num_train_timesteps": 1000, "beta_schedule": beta_schedule, "prediction_type": prediction_type}


FLOW_CONFIG = {"num_train_timesteps": 1000, "prediction_type": "flow"}


def point_x0(seed: int = 0, bound: float | None = None) -> torch.Tensor:
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    return x0.clamp(-bound, bound) if bound else x0


def alpha_at(t: torch.Tensor) -> torch.Tensor:
    ti = t.round().long()
    assert torch.equal(ti.float(), t.float()), f"non-integer timesteps {t}"
    assert 0 <= ti.min() and ti.max() < NUM_TRAIN_TIMESTEPS
    return ALPHAS[ti].view(-1, 1, 1, 1)


def exact_ddpm_model(x0: torch.Tensor, prediction_type: str):
    """The optimal denoiser for data = {x0}; computes in float64 from the input the model receives."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alpha_at(t)
        eps = (x.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        out = eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0.double()
        return out.to(x.dtype)

    return fn


def gaussian_data_model(prediction_type: str):
    """The exact denoiser for data ~ N(0, I): E[x0 | x_t] = sqrt(a) x_t, eps = sqrt(1 - a) x_t."""

    def fn(x, t):
        a = alpha_at(t)
        x0, eps = a.sqrt() * x.double(), (1 - a).sqrt() * x.double()
        return (eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0).to(x.dtype)

    return fn


# --- classifier-free guidance ---------------------------------------------------------------------------


def test_cfg_model_fn_mixes_uncond_and_cond():
    seen = {}

    def model_fn(x, t):
        seen["batch"], seen["t"] = x.shape[0], t.clone()
        half = x.shape[0] // 2
        return torch.cat([torch.full_like(x[:half], 1.0), torch.full_like(x[half:], 3.0)])

    out = cfg_model_fn(model_fn, 2.5)(torch.zeros(2, 4, 2, 2), torch.tensor([7.0, 7.0]))
    assert seen["batch"] == 4 and seen["t"].tolist() == [7.0] * 4
    assert torch.equal(out, torch.full((2, 4, 2, 2), 1.0 + 2.5 * (3.0 - 1.0)))


def test_cfg_model_fn_guides_only_below_max_noise():
    """Guidance interval: above max_noise * T the conditional prediction alone (from cond_fn when given, one
    batch; else the cond half), at or below it the usual mix."""
    calls = []

    def model_fn(x, t):
        calls.append(("both", x.shape[0]))
        half = x.shape[0] // 2
        return torch.cat([torch.full_like(x[:half], 1.0), torch.full_like(x[half:], 3.0)])

    def cond_fn(x, t):
        calls.append(("cond", x.shape[0]))
        return torch.full_like(x, 3.0)

    x = torch.zeros(2, 4, 2, 2)
    for fn in (cfg_model_fn(model_fn, 2.5, max_noise=0.5, cond_fn=cond_fn), cfg_model_fn(model_fn, 2.5, max_noise=0.5)):
        assert torch.equal(fn(x, torch.tensor([501.0, 501.0])), torch.full_like(x, 3.0))  # t/T > 0.5: cond only
        assert torch.equal(fn(x, torch.tensor([500.0, 500.0])), torch.full_like(x, 6.0))  # 1 + 2.5 * (3 - 1)
    assert calls == [("cond", 2), ("both", 4), ("both", 4), ("both", 4)]
    assert torch.equal(cfg_model_fn(model_fn, 2.5, max_noise=1.0)(x, torch.tensor([999.0, 999.0])), torch.full_like(x, 6.0))


# --- objectives ----------------------------------------------------------------------------------------


def test_make_objective():
    assert isinstance(make_objective("v"), DDPMObjective) and make_objective("v").prediction == "v"
    assert make_objective("epsilon").prediction == "epsilon"
    assert isinstance(make_objective("flow"), FlowObjective)
    with pytest.raises(MinicreamError, match="nope"):
        make_objective("nope")


def test_zero_terminal_snr_objective():
    """Zero terminal SNR: the last training timestep is pure noise, and epsilon-prediction (undefined at pure noise)
    is refused. (Every sampler samples such a model: test_samplers.py.)"""
    obj = make_objective("v", zero_snr=True)
    assert obj.alphas_cumprod[-1] == 0.0 and obj.alphas_cumprod[0] > 0.99
    assert obj.scheduler_config()["rescale_betas_zero_snr"] is True
    with pytest.raises(MinicreamError, match="v objective"):
        make_objective("epsilon", zero_snr=True)


def test_logit_normal_timesteps_match_the_flow_time_snr():
    """Known answers: flow time s = 1/2 (logit 0) has SNR 1, so a near-zero spread puts every draw on the step
    whose alpha-bar is nearest 1/2; logit mean 1 / std 1 gives log-SNR ~ N(-2, 2) (median -2, quartiles -2 +- 1.35);
    EDM's -1.2 / 1.2 gives median log-SNR +2.4. Uniform stays uniform, and the same generator redraws the same t."""
    obj = make_objective("v", timesteps="logit_normal", logit_mean=0.0, logit_std=1e-6)
    a = obj.alphas_cumprod
    t = obj.sample_timesteps(64, torch.Generator().manual_seed(0))
    best = int((a - 0.5).abs().argmin())
    assert (t == best).all()
    for mean, std in ((1.0, 1.0), (-1.2, 1.2)):
        obj = make_objective("v", timesteps="logit_normal", logit_mean=mean, logit_std=std)
        log_snr = -obj.neg_log_snr[obj.sample_timesteps(40000, torch.Generator().manual_seed(1))]
        q1, med, q3 = torch.quantile(log_snr, torch.tensor([0.25, 0.5, 0.75])).tolist()
        assert abs(med - (-2 * mean)) < 0.1 and abs((q3 - q1) / 2 - 0.6745 * 2 * std) < 0.1
    uni = make_objective("v").sample_timesteps(40000, torch.Generator().manual_seed(2))
    assert uni.min() == 0 and uni.max() == 999 and abs(uni.float().mean().item() - 499.5) < 5
    obj = make_objective("epsilon", timesteps="logit_normal")
    torch.testing.assert_close(obj.sample_timesteps(8, torch.Generator().manual_seed(3)),
                               obj.sample_timesteps(8, torch.Generator().manual_seed(3)))
    with pytest.raises(MinicreamError, match="timestep sampling 'cosine'"):
        make_objective("v", timesteps="cosine")


def _x0_batch(B=6):
    return torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(20))


@pytest.mark.parametrize("name", ["epsilon", "v", "flow"])
def test_losses_are_finite_non_negative_per_sample(name):
    x0 = _x0_batch()
    loss = make_objective(name)(lambda x_t, t: torch.zeros_like(x_t), x0, torch.Generator().manual_seed(0))
    assert loss.shape == (6,)
    assert torch.isfinite(loss).all() and (loss >= 0).all() and (loss > 0).all()


@pytest.mark.parametrize("name", ["epsilon", "v", "flow"])
def test_exact_predictor_has_zero_loss(name):
    """The model that knows x0 recovers the target exactly from (x_t, t): loss 0 (up to float error)."""
    x0 = _x0_batch()
    obj = make_objective(name)
    seen_t = []

    def exact(x_t, t):
        seen_t.append(t)
        if name == "flow":
            s = (t / NUM_TRAIN_TIMESTEPS).view(-1, 1, 1, 1)
            assert ((s > 0) & (s < 1)).all()
            return (x_t - x0) / s
        a = ALPHAS[t.long()].float().view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if name == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

    loss = obj(exact, x0, torch.Generator().manual_seed(1))
    assert loss.shape == (6,)
    assert loss.max().item() < 1e-6
    assert len(seen_t) == 1 and seen_t[0].shape == (6,)


@pytest.mark.parametrize("name", ["epsilon", "v"])
@pytest.mark.parametrize("gamma", [5.0, None])
def test_ddpm_loss_known_answer_with_min_snr(name, gamma):
    """Zero predictor: loss_i = mean(target_i^2) * w_i, w = min(snr, gamma)/snr (eps) or min(snr, gamma)/(snr+1) (v).
    The noise level and noise are replayed from a copy of the generator."""
    x0 = _x0_batch()
    obj = make_objective(name, min_snr_gamma=gamma)
    gen = torch.Generator().manual_seed(3)
    replay = torch.Generator().manual_seed(3)
    loss = obj(lambda x_t, t: torch.zeros_like(x_t), x0, gen)

    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (6,), generator=replay)
    noise = torch.randn(x0.shape, generator=replay)
    a = ALPHAS[t].view(6, 1, 1, 1)
    target = noise.double() if name == "epsilon" else a.sqrt() * noise.double() - (1 - a).sqrt() * x0.double()
    expected = target.pow(2).flatten(1).mean(1)
    if gamma:
        snr = (a / (1 - a)).view(6)
        expected = expected * snr.clamp(max=gamma) / (snr if name == "epsilon" else snr + 1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-6)


def test_flow_loss_known_answer():
    x0 = _x0_batch()
    gen, replay = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    loss = FlowObjective()(lambda x_t, t: torch.zeros_like(x_t), x0, gen)
    torch.sigmoid(torch.randn(6, generator=replay))  # s (logit-normal), drawn first
    noise = torch.randn(x0.shape, generator=replay)
    torch.testing.assert_close(loss, (noise - x0).pow(2).flatten(1).mean(1))


# --- starting part-way (img2img), inpainting, inversion ---------------------------------------------------


def test_strength_one_without_init_is_the_plain_sampler():
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    fn = gaussian_data_model("v_prediction")
    a = sample(fn, noise, "dpmpp_2m", 12, ddpm_config("v_prediction"), progress=False)
    b = sample(fn, noise, "dpmpp_2m", 12, ddpm_config("v_prediction"), progress=False, strength=1.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler,prediction", [("dpmpp_2m", "v_prediction"), ("dpmpp_2m", "epsilon"),
                                                ("ddim", "v_prediction"), ("euler", "v_prediction")])
def test_img2img_on_gaussian_data_returns_the_noised_init(sampler, prediction):
    """For data ~ N(0, I) the probability flow is the identity in the VP variables, so img2img with the exact
    model returns the init noised to the start level: sqrt(a) init + sqrt(1 - a) noise, a = alpha-bar there."""
    steps, strength = 30, 0.6
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    seen = []
    fn = gaussian_data_model(prediction)
    out = sample(lambda x, t: seen.append(t[0].item()) or fn(x, t), noise, sampler, steps, ddpm_config(prediction),
                 progress=False, init=init, strength=strength)
    assert len(seen) == int(steps * strength)  # only the last 60% of the schedule runs
    a = ALPHAS[int(seen[0])]
    expected = a.sqrt() * init.double() + (1 - a).sqrt() * noise.double()
    assert (out.double() - expected).abs().max().item() < (0.01 if sampler == "dpmpp_2m" else 0.2)


def test_flow_img2img_with_exact_velocity_lands_on_x0():
    x0 = point_x0(seed=11)
    fn = lambda x, t: (x - x0) / (t / 1000).view(-1, 1, 1, 1)  # noqa: E731
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(12))
    out = sample(fn, noise, "euler", 10, FLOW_CONFIG, progress=False, init=init, strength=0.5)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_bad_strength_is_a_clear_error():
    z = torch.zeros(SHAPE)
    with pytest.raises(MinicreamError, match="strength must be in"):
        sample(lambda x, t: x, z, "ddim", 10, ddpm_config("epsilon"), progress=False, init=z, strength=0.0)
    with pytest.raises(MinicreamError, match="no step to run"):
        sample(lambda x, t: x, z, "ddim", 10, ddpm_config("epsilon"), progress=False, init=z, strength=0.05)
    with pytest.raises(MinicreamError, match="needs an initial image"):
        sample(lambda x, t: x, z, "ddim", 10, ddpm_config("epsilon"), progress=False, strength=0.5)


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_ddim_inversion_known_answer_on_gaussian_data(prediction):
    """Gaussian data: a DDIM step between levels a and a' (either direction) multiplies x by
    c = sqrt(a a') + sqrt((1 - a)(1 - a')) (cos of the angle between them). Inversion climbs DDIM's own path
    (level 0, then its timesteps upwards), so it must give exactly prod(c) x0, and DDIM maps that back to
    prod(c)^2 x0: DDIM inversion is an approximate inverse, off by these factors (~3% each way at 50 steps)."""
    from minicream.diffusion.samplers import invert

    steps = 50
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    fn = gaussian_data_model(prediction)
    levels = [0] + list(range(19, 1000, 20))  # trailing spacing, 50 steps: 999, 979, ..., 19
    c = 1.0
    for t, t_next in zip(levels[:-1], levels[1:]):
        a, b = ALPHAS[t], ALPHAS[t_next]
        c *= float(a.sqrt() * b.sqrt() + ((1 - a) * (1 - b)).sqrt())
    noise = invert(fn, x0, steps, ddpm_config(prediction), progress=False)
    torch.testing.assert_close(noise, c * x0, rtol=1e-5, atol=1e-5)
    back = sample(fn, noise, "ddim", steps, ddpm_config(prediction), progress=False)
    torch.testing.assert_close(back, c * c * x0, rtol=1e-4, atol=1e-4)
    assert 0.9 < c < 1.0


def test_flow_inversion_round_trip():
    """Flow on Gaussian data: v(x, s) = (2s - 1) / ((1 - s)^2 + s^2) x. The ODE run backwards and forwards with
    Euler returns to the image up to the discretisation error of both passes."""
    from minicream.diffusion.samplers import invert

    def v(x, t):
        s = (t / 1000).double().view(-1, 1, 1, 1)
        return ((2 * s - 1) / ((1 - s) ** 2 + s ** 2) * x.double()).to(x.dtype)

    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    noise = invert(v, x0, 200, FLOW_CONFIG, progress=False)
    back = sample(v, noise, "euler", 200, FLOW_CONFIG, progress=False)
    assert (back - x0).abs().max().item() < 0.05
    assert (noise - x0).abs().max().item() < 0.05  # N(0, I) at both ends: the flow is near the identity


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler", "heun", "plms", "ddpm"])
def test_known_region_is_kept_and_the_rest_is_drawn(sampler):
    """Inpainting in latent space: the kept half ends exactly as the known latents, the free half is sampled: the
    exact point-mass model works element by element, so there it lands on the data point (DDIM and PLMS: on the
    point's VP image at timestep 0, sqrt(a_0) x0 + sqrt(1 - a_0) eps_hat)."""
    x0, known_latents = point_x0(seed=3), point_x0(seed=4)
    keep = torch.zeros(SHAPE)
    keep[:, :, :4] = 1.0
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(6))
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    out = sample(exact_ddpm_model(x0, "epsilon"), noise, sampler, 20, ddpm_config("epsilon"), gens, progress=False,
                 known=(known_latents, keep))
    assert torch.equal(out[:, :, :4], known_latents[:, :, :4])
    expected = x0.double()
    if sampler in ENDS_AT_T0:
        eps_hat = (noise.double() - ALPHAS[999].sqrt() * x0) / (1 - ALPHAS[999]).sqrt()
        expected = ALPHAS[0].sqrt() * x0 + (1 - ALPHAS[0]).sqrt() * eps_hat
    assert (out[:, :, 4:].double() - expected[:, :, 4:]).abs().max().item() < 1e-4


def test_cads_schedule_and_perturbation_known_answers():
    from minicream.diffusion.cads import CADS

    c = CADS(scale=0.5, tau1=0.6, tau2=0.9)
    assert (c.gamma(0.3), c.gamma(0.6), c.gamma(0.75), c.gamma(0.9), c.gamma(1.0)) == (1.0, 1.0, pytest.approx(0.5), 0.0, 0.0)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, 8, generator=g) * 3 + 1
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    y = y * mask[..., None]
    noise = torch.randn(2, 5, 8, generator=g)
    assert torch.equal(c.perturb(y, 0.5, noise, mask), y)  # clean below tau1
    assert torch.equal(CADS(0.0).perturb(y, 1.0, noise, mask), y)  # scale 0 is off
    out = c.perturb(y, 0.95, noise, mask)  # above tau2: the noise alone, given y's statistics (real tokens only)
    assert torch.equal(out[0, 3:], torch.zeros(2, 8))  # padding stays zero
    for row in range(2):
        real, got, n = y[row][mask[row]], out[row][mask[row]], noise[row][mask[row]]
        assert float(got.mean()) == pytest.approx(float(real.mean()), abs=1e-5)
        assert float(got.std(unbiased=False)) == pytest.approx(float(real.std(unbiased=False)), rel=1e-5)
        assert torch.corrcoef(torch.stack([got.flatten(), n.flatten()]))[0, 1] > 0.9999
    half = c.perturb(y, 0.75, noise, mask)  # between: y plus noise, rescaled to y's statistics
    r = torch.corrcoef(torch.stack([half[1].flatten(), y[1].flatten()]))[0, 1]
    assert 0.8 < r < 1.0
