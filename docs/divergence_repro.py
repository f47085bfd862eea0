"""Step by step: how GAttA training diverges without gradient clipping, and what clipping does (docs/RESULTS.md).

A copy of the loop of ``gatta_viz.training.train`` (same batches, optimiser, one-cycle schedule) on the first 1,800
Fashion-MNIST training images for 2 epochs that prints, per step, the learning rate, loss, gradient norm, every alpha
and the largest |alpha x agreement|, and stops at the first non-finite loss or gradient. Any ``gatta-viz train``
option can be added (``--detach-pass1``, ``--lr``, ``--seed``...); ``--clip C`` clips the global gradient norm at C
(0: no clipping, as before ``--clip-grad`` existed). Example::

    OMP_NUM_THREADS=1 .venv/bin/python docs/divergence_repro.py --seed 0 --lr 0.1            # NaN at step 12
    OMP_NUM_THREADS=1 .venv/bin/python docs/divergence_repro.py --seed 0 --lr 0.1 --clip 2   # finite
"""
import argparse, json, math, random, sys, tempfile
import numpy as np, torch
from gatta_viz.cli import train as cli
from gatta_viz.training.train import model_kwargs, loss_fn, baseline_of
from gatta_viz.models.builders import build_model
from gatta_viz.data.datasets import load_dataset, augment_batch

ap = argparse.ArgumentParser()
ap.add_argument("--clip", type=float, default=0.0)
ap.add_argument("--gatta-lr-scale", type=float, default=1.0)
ap.add_argument("--gatta-wd", type=float, default=None)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--tag", default="")
ap.add_argument("--json", default=None)
my, rest = ap.parse_known_args()
args = cli.build_parser().parse_args(["--out", tempfile.mkdtemp(), "--threads", "1", "--batch-size", str(my.batch), "--subset", "1800", "--epochs", "2", *rest])
torch.set_num_threads(1)
random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
tr = load_dataset(args.dataset, "train", args.data_root).subset(args.subset)
kw = model_kwargs(args, tr)
builder = args.model
if args.baseline:
    builder, kw = baseline_of(builder, kw)
model = build_model(builder, **kw)
if args.detach_pass1:
    model.detach_pass1 = True
gatta_ids = set(id(p) for p in model.gatta_parameters()) if hasattr(model, "gatta_parameters") else set()
decay, no_decay, g_params = [], [], []
for n, p in model.named_parameters():
    if id(p) in gatta_ids and (my.gatta_lr_scale != 1.0 or my.gatta_wd is not None):
        g_params.append(p); continue
    (no_decay if p.dim() <= 1 else decay).append(p)
groups = [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}]
if g_params:
    groups.append({"params": g_params, "weight_decay": args.wd if my.gatta_wd is None else my.gatta_wd, "lr": args.lr * my.gatta_lr_scale})
opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
spe = (len(tr) + args.batch_size - 1) // args.batch_size
max_lrs = [args.lr] * 2 + ([args.lr * my.gatta_lr_scale] if g_params else [])
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, epochs=args.epochs, steps_per_epoch=spe, pct_start=args.warmup, anneal_strategy="cos")
rows = []; step = 0; status = "finite"
for epoch in range(args.epochs):
    model.train()
    g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    perm = torch.randperm(len(tr), generator=g)
    for i in range(0, len(perm), args.batch_size):
        idx = perm[i:i + args.batch_size]
        x = tr.normalize(tr.images[idx]); y = tr.labels[idx]
        if not args.no_augment:
            x = augment_batch(x, pad=args.pad, flip=args.flip, generator=g)
        lr = sched.get_last_lr()[0]
        if hasattr(model, "trace"):
            t = model.trace(x); logits = t.logits_pass2
            gain = {n: float((l.alpha * l.agreement).abs().max()) for n, l in t.layers.items()}
            alphas = {n: round(l.alpha, 4) for n, l in t.layers.items()}
        else:
            logits = model(x); gain = {}; alphas = {}
        loss = loss_fn(logits, y, args.label_smoothing)
        opt.zero_grad(set_to_none=True); loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), my.clip) if my.clip > 0 else torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        step += 1
        r = {"step": step, "epoch": epoch + 1, "lr": round(lr, 4), "loss": round(float(loss), 4), "grad_norm": round(float(gn), 3),
             "alphas": alphas, "max_gain": max(gain.values()) if gain else None, "max_gain_layer": max(gain, key=gain.get) if gain else None}
        rows.append(r)
        print(json.dumps(r), flush=True)
        if not math.isfinite(float(loss)) or not math.isfinite(float(gn)):
            status = f"nonfinite at step {step}"; break
        opt.step(); sched.step()
    if status != "finite":
        break
print("STATUS", my.tag, status, "final_loss", rows[-1]["loss"], "max_gain_overall", max((r["max_gain"] or 0) for r in rows if r["max_gain"] is not None and math.isfinite(r["max_gain"])) if any(r["max_gain"] is not None for r in rows) else None)
if my.json:
    json.dump({"tag": my.tag, "status": status, "rows": rows}, open(my.json, "w"))
