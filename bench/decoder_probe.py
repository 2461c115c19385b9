"""Probe for issue 32 item 1 (session 22; not a shipped stage): can the `full` model's decoder alone, on its own
latent space (encoder frozen, posterior means of the training images), recover what the autoencoder loses?

L1 + L2 in RGB plus an L1 on chroma (each pixel minus its channel mean), AdamW 5e-4, batch 32, bf16 autocast, for
MINUTES (env, default 15) on the CPU; an EMA (0.999) beside the raw weights. Prints, every 200 steps and at the end,
held-out PSNR at 64 px over the 719 test images and the share of clearly green real pixels (G >= R+20 and B+20) that
stay green-dominant after the round trip. Writes nothing.

    MINUTES=13 OMP_NUM_THREADS=1 .venv/bin/python bench/decoder_probe.py

Session 22 (AMX Xeon, one core, 13 min, 1,950 steps): PSNR 22.14 -> 25.05 dB, green kept 0.144 -> 0.411 (raw
weights; the EMA at 0.999 still lagged: 24.31 dB, 0.090).
"""
import copy, json, os, time, numpy as np, torch
from PIL import Image
from minicream.models.autoencoder import load_autoencoder, to_unit_range
torch.manual_seed(0)
MIN = float(os.environ.get("MINUTES", "15"))
vae = load_autoencoder("minicream/full/vae").float()
def load(split, limit=None):
    rows=[json.loads(l) for l in open(f"data/emoji/{split}/metadata.jsonl")][:limit]
    return torch.from_numpy(np.stack([np.asarray(Image.open(f"data/emoji/{split}/{r['file_name']}").convert("RGB").resize((64,64))) for r in rows])).permute(0,3,1,2).contiguous()
tr, te = load("train"), load("test")
@torch.no_grad()
def lat(x):
    return torch.cat([vae.encode(to_unit_range(x[i:i+256])).latent_dist.mean for i in range(0,len(x),256)])
@torch.no_grad()
def measure(dec_vae):
    y = torch.cat([dec_vae.decode(zte[i:i+128]).sample for i in range(0,len(zte),128)])
    y = ((y.clamp(-1,1)+1)*127.5).round().permute(0,2,3,1).numpy(); a = te.permute(0,2,3,1).numpy().astype(float)
    psnr = 10*np.log10(255**2/np.maximum(((y-a)**2).mean(axis=(1,2,3)),1e-9)).mean()
    g=(a[...,1]>a[...,0]+20)&(a[...,1]>a[...,2]+20); dom=(y[...,1]>y[...,0])&(y[...,1]>y[...,2])
    return round(float(psnr),2), round(float(dom[g].mean()),3)
ztr, zte = lat(tr), lat(te)
print("before", measure(vae), flush=True)
for p in vae.encoder.parameters(): p.requires_grad_(False)
for p in vae.quant_conv.parameters(): p.requires_grad_(False)
ema = copy.deepcopy(vae).eval()
params=[p for n,p in vae.named_parameters() if p.requires_grad]
opt=torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
t0=time.time(); step=0; g=torch.Generator().manual_seed(0)
while time.time()-t0 < MIN*60:
    idx=torch.randint(0,len(tr),(32,),generator=g)
    x=to_unit_range(tr[idx]); z=ztr[idx]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rec=vae.decode(z).sample.float()
    chroma=lambda t: t - t.mean(dim=1, keepdim=True)
    loss=(rec-x).abs().mean()+(rec-x).pow(2).mean()+(chroma(rec)-chroma(x)).abs().mean()
    opt.zero_grad(); loss.backward(); opt.step(); step+=1
    with torch.no_grad():
        for pe,p in zip(ema.parameters(), vae.parameters()): pe.lerp_(p, 1-0.999)
    if step % 200 == 0: print(step, round(loss.item(),4), round(time.time()-t0), "ema", measure(ema), flush=True)
print("after", step, "steps", measure(vae), "ema", measure(ema), flush=True)
