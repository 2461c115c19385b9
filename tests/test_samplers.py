"""Every sampler offered, checked strictly against closed-form answers, and against diffusers where it is right.

For data that is a single point x0 the exact denoiser is known: a noisy input x_t = sqrt(a) x0 + sqrt(1-a) eps
(a = alpha-bar at timestep t) gives eps = (x_t - sqrt(a) x0) / sqrt(1-a), v = sqrt(a) eps - sqrt(1-a) x0, and for
rectified flow x_t = (1-s) x0 + s eps gives the velocity eps - x0 = (x_t - x0) / s. Its probability-flow ODE is a
straight line on which eps stays what the first evaluation found, eps_hat, so every sampler fed the exact model must
land on x0 (DDIM and PLMS, which stop at timestep 0's level, on sqrt(a_0) x0 + sqrt(1 - a_0) eps_hat), from any
start, in any number of steps, on any schedule.
"""
from __future__ import annotations

import pytest
import torch

from minicream.diffusion.objectives import ddpm_alphas_cumprod, make_objective
from minicream.diffusion.samplers import DDPM_SAMPLERS, FLOW_SAMPLERS, available_samplers, get_sigmas, sample
from minicream.diffusion.schedules import ZERO_SNR_ALPHA, VPDenoiser, sigma_table
from minicream.errors import MinicreamError

SHAPE = (3, 4, 8, 8)
DETERMINISTIC = ("ddim", "dpmpp_2m", "euler", "heun", "plms")
ANCESTRAL = ("ddpm", "euler_a")
FLOW = {"num_train_timesteps": 1000, "prediction_type": "flow"}


def config(prediction="v_prediction", schedule="scaled_linear", zero_snr=False) -> dict:
    cfg = {"num_train_timesteps": 1000, "beta_schedule": schedule, "prediction_type": prediction}
    return {**cfg, "rescale_betas_zero_snr": True} if zero_snr else cfg


def alphas(cfg: dict) -> torch.Tensor:
    return ddpm_alphas_cumprod(cfg["beta_schedule"], cfg.get("rescale_betas_zero_snr", False)).double()


def randn(seed: int, shape=SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def generators(seeds=(11, 12, 13)):
    return [torch.Generator().manual_seed(s) for s in seeds]


def exact_model(x0: torch.Tensor, cfg: dict, seen: list | None = None):
    """The optimal denoiser for data = {x0}, in float64 from the input the model receives (integer timesteps only)."""
    a_table = alphas(cfg).clamp(min=ZERO_SNR_ALPHA)  # the level the samplers stop at for a zero-SNR end

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert torch.equal(t, t.round()), f"non-integer timesteps {t}"
        if seen is not None:
            seen.append((x.clone(), t.clone()))
        a = a_table[t.long()].view(-1, 1, 1, 1)
        eps = (x.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        out = eps if cfg["prediction_type"] == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0.double()
        return out.to(x.dtype)

    return fn


def known_answer(sampler: str, x0: torch.Tensor, noise: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Where the exact model's path ends: x0, or for DDIM/PLMS the VP point at timestep 0 on eps_hat."""
    if not DDPM_SAMPLERS[sampler].end_at_first:
        return x0.double()
    a = alphas(cfg).clamp(min=ZERO_SNR_ALPHA)
    eps_hat = (noise.double() - a[-1].sqrt() * x0.double()) / (1 - a[-1]).sqrt()
    return a[0].sqrt() * x0.double() + (1 - a[0]).sqrt() * eps_hat


def test_every_sampler_is_covered():
    assert set(DDPM_SAMPLERS) == set(DETERMINISTIC) | set(ANCESTRAL)
    assert available_samplers("v_prediction") == sorted(DDPM_SAMPLERS)
    assert available_samplers("flow") == ["dpmpp_2m", "euler", "heun"]


CASES = [(s, p, n) for s in DETERMINISTIC + ANCESTRAL for p in ("v_prediction", "epsilon") for n in (1, 2, 3, 4, 5, 6, 20, 50)]


@pytest.mark.parametrize("sampler,prediction,steps", CASES)
def test_exact_model_lands_on_the_known_answer(sampler, prediction, steps):
    """x0 ~ N(0, 1), like the unit-variance latents the UNet is trained on; any step count, no exceptions."""
    cfg = config(prediction)
    x0, noise = randn(0), randn(1)
    out = sample(exact_model(x0, cfg), noise, sampler, steps, cfg, generators(), progress=False)
    assert torch.isfinite(out).all()
    assert (out.double() - known_answer(sampler, x0, noise, cfg)).abs().max().item() < 1e-4


@pytest.mark.parametrize("sampler", DETERMINISTIC + ANCESTRAL)
@pytest.mark.parametrize("schedule,zero_snr", [("squaredcos_cap_v2", False), ("scaled_linear", True), ("linear", False)])
def test_exact_model_on_other_schedules(sampler, schedule, zero_snr):
    """The cosine schedule and a zero-terminal-SNR one (both start at sigma ~4096, alpha-bar 2^-24, where the network
    sees pure noise; every sampler is offered for them) and the linear one: the same known answers, 3 and 25 steps.
    (PLMS's first, corrected step from sigma ~4096 to ~1.8 multiplies the float32 rounding of the network's output
    by ~2000, hence 1e-3.)"""
    cfg = config("v_prediction", schedule, zero_snr)
    x0, noise = randn(2), randn(3)
    for steps in (3, 25):
        out = sample(exact_model(x0, cfg), noise, sampler, steps, cfg, generators(), progress=False)
        assert (out.double() - known_answer(sampler, x0, noise, cfg)).abs().max().item() < 1e-3, steps


@pytest.mark.parametrize("sampler", DETERMINISTIC)
@pytest.mark.parametrize("schedule", ["scaled_linear", "squaredcos_cap_v2"])
def test_model_receives_the_vp_noisy_input_at_trailing_timesteps(sampler, schedule):
    """Every sampler hands the model x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps_hat at integer timestep t, the trailing
    timesteps 999, 899, ..., 99 for 10 steps (Heun and PLMS evaluate some twice): with the exact model the ODE keeps
    eps at what the first evaluation found, so the whole path is known in closed form."""
    cfg = config("v_prediction", schedule)
    x0, noise = randn(4).clamp(-0.9, 0.9), randn(5)
    a_table, seen = alphas(cfg).clamp(min=ZERO_SNR_ALPHA), []
    sample(exact_model(x0, cfg, seen), noise, sampler, 10, cfg, generators(), progress=False)
    assert sorted({int(t[0]) for _, t in seen}, reverse=True) == list(range(999, 0, -100))
    assert int(seen[0][1][0]) == 999 and torch.equal(seen[0][0], noise)  # the start is the unit noise itself
    eps_hat = (noise.double() - a_table[999].sqrt() * x0.double()) / (1 - a_table[999]).sqrt()
    for x, t in seen:
        a = a_table[int(t[0])]
        expected = a.sqrt() * x0.double() + (1 - a).sqrt() * eps_hat
        assert (x.double() - expected).abs().max().item() < 1e-4, (sampler, int(t[0]))


def gaussian_model(cfg: dict):
    """The exact denoiser for data ~ N(0, I): E[x0 | x_t] = sqrt(a) x_t, eps = sqrt(1 - a) x_t."""
    a_table = alphas(cfg)

    def fn(x, t):
        a = a_table[t.long()].view(-1, 1, 1, 1)
        x0, eps = a.sqrt() * x.double(), (1 - a).sqrt() * x.double()
        return (eps if cfg["prediction_type"] == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0).to(x.dtype)

    return fn


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("sampler,bound", [("euler", 0.2), ("ddim", 0.2), ("heun", 0.01), ("dpmpp_2m", 0.01),
                                           ("plms", 0.02)])
def test_gaussian_data_probability_flow_is_the_identity(sampler, bound, prediction):
    """For data ~ N(0, I) every x_t is N(0, I) and the probability-flow ODE is dx = 0 in the VP variables: a
    deterministic sampler with the exact model returns its input noise, up to its discretisation error, which shows
    here (unlike on the point mass): 30 steps, first order ~0.14, second and higher order below 0.02."""
    cfg = config(prediction)
    noise = randn(5)
    out = sample(gaussian_model(cfg), noise, sampler, 30, cfg, progress=False)
    assert (out - noise).abs().max().item() < bound


@pytest.mark.parametrize("sampler", ANCESTRAL)
def test_gaussian_data_ancestral_samples_have_unit_variance(sampler):
    """Ancestral samplers draw fresh noise, so they do not return the input; their samples must still be
    ~N(0, 1)."""
    cfg = config()
    noise = randn(5, (8,) + SHAPE[1:])
    out = sample(gaussian_model(cfg), noise, sampler, 30, cfg, generators(range(8)), progress=False)
    assert 0.9 < out.std().item() < 1.1
    assert abs(out.mean().item()) < 0.1


@pytest.mark.parametrize("sampler", ["ddpm", "euler_a", "dpmpp_2m"])
def test_image_depends_only_on_its_own_generator(sampler):
    """Image 2 of a batch drawn with generators [11, 12, 13] equals that image drawn alone with [12]."""
    cfg = config()
    x0 = randn(0).clamp(-0.9, 0.9)
    noise = torch.stack([torch.randn(SHAPE[1:], generator=g) for g in generators()])
    fn = lambda x, t: 0.5 * x + exact_model(x0, cfg)(x, t)  # noqa: E731  imperfect: every step's noise matters
    batch = sample(fn, noise, sampler, 8, cfg, generators(), progress=False)
    alone = sample(lambda x, t: 0.5 * x + exact_model(x0[1:2], cfg)(x, t), noise[1:2], sampler, 8, cfg,
                   generators((12,)), progress=False)
    assert torch.equal(batch[1:2], alone)


def test_ancestral_samplers_use_the_generators_and_deterministic_ones_do_not():
    noise, cfg = randn(8), config("epsilon")
    fn = lambda x, t: 0.5 * x  # noqa: E731  not the exact denoiser: each step's noise matters
    for name in DETERMINISTIC + ANCESTRAL:
        a = sample(fn, noise, name, 6, cfg, generators((1, 2, 3)), progress=False)
        b = sample(fn, noise, name, 6, cfg, generators((4, 5, 6)), progress=False)
        assert torch.equal(a, b) == (name in DETERMINISTIC), name


# --- the step callback ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", DETERMINISTIC + ANCESTRAL)
def test_callback_sees_every_step_and_may_replace_the_latents(sampler):
    """callback(step, t, x) after each step, in the model's own (unit-variance) coordinates; what it returns is what
    the sampler continues from, whatever its history (multistep samplers keep theirs)."""
    cfg = config("epsilon")
    x0, noise = randn(0), randn(1)
    calls = []

    def pin(step, t, x):
        calls.append((step, t))
        x = x.clone()
        x[:, :, :4] = 7.0  # an 'inpainting' hook pinning the top half
        return x

    out = sample(exact_model(x0, cfg), noise, sampler, 10, cfg, generators(), progress=False, callback=pin)
    assert calls == [(i + 1, t) for i, t in enumerate(range(999, 0, -100))]
    assert torch.all(out[:, :, :4] == 7.0)
    free = known_answer(sampler, x0, noise, cfg)[:, :, 4:]
    assert (out[:, :, 4:].double() - free).abs().max().item() < 1e-3  # the free half still lands on the data


def test_callback_returning_none_changes_nothing_and_sees_the_model_input():
    """None keeps the latents bit for bit; the x it sees is the VP point sqrt(a) x0 + sqrt(1-a) eps of the level
    reached, and the clean result after the last step."""
    cfg = config()
    x0, noise = randn(0), randn(1)
    fn, seen = exact_model(x0, cfg), []
    plain = sample(fn, noise, "dpmpp_2m", 5, cfg, progress=False)
    watched = sample(fn, noise, "dpmpp_2m", 5, cfg, progress=False, callback=lambda i, t, x: seen.append(x.clone()))
    assert torch.equal(plain, watched) and len(seen) == 5
    assert torch.equal(seen[-1], watched)
    a = alphas(cfg)
    eps_hat = (noise.double() - a[999].sqrt() * x0) / (1 - a[999]).sqrt()
    a1 = a[799]  # the level after step 1 of 5: 999, 799, ...
    assert (seen[0].double() - (a1.sqrt() * x0 + (1 - a1).sqrt() * eps_hat)).abs().max().item() < 1e-5


def test_unknown_sampler_raises():
    with pytest.raises(MinicreamError, match="nope"):
        sample(lambda x, t: x, torch.zeros(SHAPE), "nope", 5, config("epsilon"), progress=False)
    with pytest.raises(MinicreamError, match="plms"):  # plms is DDPM-only
        sample(lambda x, t: x, torch.zeros(SHAPE), "plms", 5, FLOW, progress=False)


# --- schedules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["epsilon", "v", "flow"])
def test_the_samplers_use_the_training_schedule(name):
    """Training and sampling share one noise schedule: sigma = sqrt((1 - a) / a) of the objective's alpha-bar."""
    obj = make_objective(name)
    cfg = obj.scheduler_config()
    for sampler in available_samplers(cfg["prediction_type"]):
        sigmas = get_sigmas(sampler, 20, cfg)
        assert len(sigmas) == 21 and (sigmas[:-1] > sigmas[1:]).all()
    if name != "flow":
        a = obj.alphas_cumprod.double()
        torch.testing.assert_close(sigma_table(cfg), ((1 - a) / a).sqrt())


def test_denoiser_gives_the_network_its_training_input():
    """VE point x0 + sigma eps -> the network sees sqrt(a) x0 + sqrt(1 - a) eps at the integer timestep of sigma."""
    cfg = config()
    table, a_table, seen = sigma_table(cfg), alphas(cfg), []
    den = VPDenoiser(lambda x, t: seen.append((x, t)) or torch.zeros_like(x), table, "v_prediction")
    x0, eps = randn(6).double(), randn(7).double()
    for t in (999, 500, 37, 0):
        den((x0 + table[t] * eps).float(), float(table[t]))
        x, tt = seen[-1]
        assert tt.tolist() == [float(t)] * SHAPE[0]
        expected = a_table[t].sqrt() * x0 + (1 - a_table[t]).sqrt() * eps
        assert (x.double() - expected).abs().max().item() < 1e-5


def test_zero_terminal_snr_is_sampled_from_pure_noise():
    obj = make_objective("v", zero_snr=True)
    assert obj.alphas_cumprod[-1] == 0.0
    cfg = obj.scheduler_config()
    assert cfg["rescale_betas_zero_snr"] is True
    sigmas = get_sigmas("euler", 10, cfg)
    assert 4000 < sigmas[0] < 4200  # alpha-bar 2^-24 at t=999: the input is the noise to float32 precision
    with pytest.raises(MinicreamError, match="v objective"):
        make_objective("epsilon", zero_snr=True)


# --- flow -------------------------------------------------------------------------------------------------


def test_flow_one_euler_step_with_true_velocity_lands_on_x0():
    x0 = randn(9)
    captured = {}

    def fn(x, t):
        captured.setdefault("noise", x.clone())  # at t = 1000 (s = 1) the input is the pure noise
        captured.setdefault("t", t.clone())
        return captured["noise"] - x0

    noise = randn(10)
    out = sample(fn, noise, "euler", 1, FLOW, progress=False)
    assert torch.equal(captured["noise"], noise)
    assert torch.equal(captured["t"], torch.full((SHAPE[0],), 1000.0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("sampler", sorted(FLOW_SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 10])
def test_flow_samplers_with_exact_velocity_land_on_x0(sampler, steps):
    """Velocity field of a point mass, v(x, s) = (x - x0) / s, s = t / 1000: straight paths, exact in any step count."""
    x0 = randn(11)
    fn = lambda x, t: (x - x0) / (t / 1000).view(-1, 1, 1, 1)  # noqa: E731
    out = sample(fn, randn(12), sampler, steps, FLOW, progress=False)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_flow_schedule_is_diffusers_flow_match_schedule():
    from diffusers import FlowMatchEulerDiscreteScheduler

    for steps in (1, 4, 20):
        ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        ref.set_timesteps(steps)
        torch.testing.assert_close(get_sigmas("euler", steps, FLOW).float(), ref.sigmas.float())


# --- diffusers as the reference, where its scheduler is right ---------------------------------------------
# Not compared: Heun (diffusers' HeunDiscreteScheduler scales the model input of its correction step with the wrong
# sigma) and PLMS on v-prediction (PNDMScheduler extrapolates the raw v outputs, which are not a noise direction).
# Euler-type schedulers start from sigma_max * noise; the reference loop starts them where ours start, at the VP
# point of unit noise, sqrt(1 + sigma_max^2) * noise.
REFERENCE = {
    "ddim": ("DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}),
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
}


def smooth_model(x, t):
    """Not a denoiser of anything: every step's input matters."""
    return torch.tanh(0.5 * x + 0.3 * torch.sin(t.view(-1, 1, 1, 1) / 100))


def diffusers_sample(name: str, noise: torch.Tensor, steps: int, cfg: dict, gens=None) -> torch.Tensor:
    import diffusers

    cls, extra = REFERENCE[name]
    sched = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule=cfg["beta_schedule"],
                                    prediction_type=cfg["prediction_type"], timestep_spacing="trailing", **extra)
    sched.set_timesteps(steps)
    x = noise
    if name in ("euler", "euler_a"):
        sched.sigmas = sched.sigmas.double()
        x = noise * float((sched.sigmas[0] ** 2 + 1).sqrt())
    kwargs = {"generator": gens} if name in ANCESTRAL else {}
    for t in sched.timesteps:
        out = smooth_model(sched.scale_model_input(x, t), t.expand(noise.shape[0]).float())
        x = sched.step(out, t, x, **kwargs).prev_sample
    return x


SAME_AS_DIFFUSERS = [(s, n, p) for s, n in [("ddim", 20), ("ddim", 50), ("ddpm", 20), ("ddpm", 25), ("dpmpp_2m", 7),
                                             ("dpmpp_2m", 20), ("euler", 7), ("euler", 20), ("euler_a", 7),
                                             ("euler_a", 20), ("plms", 20), ("plms", 50)]
                     for p in ("v_prediction", "epsilon") if not (s == "plms" and p == "v_prediction")]


@pytest.mark.parametrize("sampler,steps,prediction", SAME_AS_DIFFUSERS)
def test_same_as_diffusers_where_diffusers_is_right(sampler, steps, prediction):
    """The images of today's samplers, kept: the same steps as diffusers' schedulers (DDIM, DDPM and PLMS at step
    counts dividing 1000, where diffusers' fixed stride T // steps meets the trailing timesteps), the same fresh
    noise from the same per-image generators, to float32 rounding."""
    cfg = config(prediction)
    noise = randn(8)
    ours = sample(smooth_model, noise, sampler, steps, cfg, generators(), progress=False)
    ref = diffusers_sample(sampler, noise, steps, cfg, generators())
    assert (ours - ref).abs().max().item() < 1e-4 * ref.abs().max().item()


@pytest.mark.parametrize("sampler,cls", [("euler", "FlowMatchEulerDiscreteScheduler"),
                                         ("heun", "FlowMatchHeunDiscreteScheduler")])
@pytest.mark.parametrize("steps", [1, 4, 20])
def test_flow_same_as_diffusers(sampler, cls, steps):
    import diffusers

    sched = getattr(diffusers, cls)(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    noise = randn(9)
    x = noise
    for t in sched.timesteps:
        x = sched.step(smooth_model(x, t.expand(SHAPE[0]).float()), t, x).prev_sample
    ours = sample(smooth_model, noise, sampler, steps, FLOW, progress=False)
    assert (ours - x).abs().max().item() < 1e-4 * x.abs().max().item()
