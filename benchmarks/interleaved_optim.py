"""Interleaved optimizer comparison against torch.optim: ours and torch alternate step by step
in one process, so bandwidth drift on a shared machine hits both alike. Prints median time ratios.

usage: python benchmarks/interleaved_optim.py   (needs torch==2.13.0)
"""
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS","2"); os.environ.setdefault("NUMBA_NUM_THREADS","2"); os.environ.setdefault("OMP_NUM_THREADS","2")
import time, numpy as np, torch, backprop_gpu as bg
from backprop_gpu import optim
torch.set_num_threads(2)
N=10_000_000
def ours(name, sizes, **kw):
    rng=np.random.default_rng(0)
    ps=[bg.tensor(rng.standard_normal(n,dtype=np.float32),device="numba",requires_grad=True) for n in sizes]
    for p in ps: p.grad=bg.tensor(rng.standard_normal(p.size,dtype=np.float32)*0.01,device="numba")
    o=optim.OPTIMIZERS[name](ps,**kw); o.step(); return o.step
def theirs(cls, sizes, **kw):
    g=torch.Generator().manual_seed(0)
    ps=[torch.randn(n,generator=g,requires_grad=True) for n in sizes]
    for p in ps: p.grad=torch.randn(p.numel(),generator=g)*0.01
    o=cls(ps,**kw); o.step(); return o.step
cases=[("adam 1", ours("adam",[N],lr=1e-3), theirs(torch.optim.Adam,[N],lr=1e-3,fused=True)),
       ("adam 200", ours("adam",[N//200]*200,lr=1e-3), theirs(torch.optim.Adam,[N//200]*200,lr=1e-3,fused=True)),
       ("rmsprop 1", ours("rmsprop",[N],lr=1e-2), theirs(torch.optim.RMSprop,[N],lr=1e-2)),
       ("adadelta 1", ours("adadelta",[N],lr=1.0), theirs(torch.optim.Adadelta,[N],lr=1.0))]
for name, a, b in cases:
    ra, rb = [], []
    for _ in range(15):
        t=time.perf_counter(); a(); ra.append(time.perf_counter()-t); time.sleep(0.02)
        t=time.perf_counter(); b(); rb.append(time.perf_counter()-t); time.sleep(0.02)
    ratios=np.array(ra)/np.array(rb)
    print(f"{name:11s} ours {np.median(ra)*1e3:6.2f} ms  torch {np.median(rb)*1e3:6.2f} ms  ratio median {np.median(ratios):.2f} (IQR {np.percentile(ratios,25):.2f}-{np.percentile(ratios,75):.2f})")
