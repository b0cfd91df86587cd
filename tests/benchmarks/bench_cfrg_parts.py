"""Milliseconds per image of each part of CFRG at 256x256, batch 1, 1 thread, in the cpu and paper configurations
(random weights): where CFRG spends the time it takes beyond RD (teacher + recovery + maps).

Run: .venv/bin/python tests/benchmarks/bench_cfrg_parts.py"""
import time, torch, statistics
torch.set_num_threads(1)
from cad_nb.settings import load_profile
from cad_nb.cfrg import cfrg_anomaly_map
from cad_nb.components import Teacher
from cad_nb.runner import build_method
for prof in ("cpu", "paper"):
    cfg = load_profile(prof, sets={"teacher.pretrained": False, "data.image_size": 256})
    t = Teacher(cfg.teacher.name, pretrained=False)
    m = build_method("CFRG", cfg, t).eval()
    x = torch.rand(1, 3, 256, 256)
    def tm(f, n=3):
        f(); r = []
        for _ in range(n): a = time.perf_counter(); f(); r.append(time.perf_counter() - a)
        return 1000 * statistics.median(r)
    with torch.no_grad():
        ta = m.teacher(x); s = m.student(x); r = m.recover(ta)
        w = [torch.rand_like(f[:, :1]) * f for f in ta]
        out = m(x)
        print(prof, {k: round(v, 1) for k, v in dict(teacher=tm(lambda: m.teacher(x)), student_trunk=tm(lambda: m.student.backbone(x)),
              adapters=tm(lambda: [a(f) for a, f in zip(m.student.adapters, m.student.backbone(x))]) - tm(lambda: m.student.backbone(x)),
              recovery=tm(lambda: m.recover(ta)), head=tm(lambda: m.head(w)), maps=tm(lambda: cfrg_anomaly_map(out, m.map_style)),
              total=tm(lambda: m.predict(x))).items()})
