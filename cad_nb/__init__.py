"""Notebook-first reproduction of 3CAD + CFRG and CAD 100K multi-task anomaly detection

Modules:

- `cad_nb.coba`: CoBa (Convergence Balancer, EMNLP 2024) reweights the losses of K tasks from the *slopes* of their normalised validation losses, so a task that converges fast gives way to the slow ones and a task that starts to diverge is held back. Here with the baselines it is compared against (equal weights, uncertainty weighting, DWA) behind one interface, and the task scheduler that decides which tasks' batches a training step draws.
- `cad_nb.draem`: DRAEM (Zavrtanik et al., ICCV 2021) as VitjanZ/DRAEM builds it: a reconstructive encoder-decoder that learns to repair synthesised anomalies, and a discriminative U-Net that segments them from the repaired and the damaged image side by side; both trained from scratch, no pretrained teacher. Model, loss and anomaly map are kept apart (anomalib style).
- `cad_nb.mtl`: The CAD 100K model in the timm/anomalib manner: a shared timm backbone (ConvNeXt or a DINOv3 ViT with a simple feature pyramid), a small FPN neck, and three decoders (image class, CenterNet-style boxes, masks at input resolution); separate losses, post-processing and metrics; and a training loop that mixes tasks per step with a loss weighting from `cad_nb.coba`, mixed precision, checkpoints and DDP.
- `cad_nb.public`: `cad-nb data get NAME --out DIR [--from PATH]`: Magnetic Tile Defects (`mtd`), the car-damage set (`car_damage`) and the Describable Textures Dataset (`dtd`), fetched from their public sources (or a local copy), checked against their published counts, converted to the layouts the methods read, checked again, and moved into place only when complete.
- `cad_nb.simplenet`: SimpleNet (Liu et al., CVPR 2023) as DonaldRR/SimpleNet builds it: patch features of a frozen pretrained teacher, a linear feature adaptor, and a small discriminator trained to tell the adapted features of normal images from the same features with Gaussian noise added; its negated output is the anomaly score. Features, model, loss and anomaly map are kept apart (anomalib style)."""

__version__ = "0.1.0"
