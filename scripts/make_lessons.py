"""Write the concept notebooks (notebooks/01_*.ipynb ... 07_*.ipynb) from the cell lists below (lesson 7's
in lesson7.py).

    python scripts/make_lessons.py          # rewrites the notebooks
    python scripts/make_lessons.py --check  # exit 1 if a committed notebook differs from its cell list

The notebooks stay thin: prose, and two short code cells each that call ``pruneviz.lessons.<module>``.
All the logic lives in ``pruneviz/lessons/``. Numbers are never written into the prose: every miniature
result is computed when the notebook runs and shown by ``app.finding()``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

try:  # run as a script: scripts/ is on sys.path
    from lesson7 import LESSON_7
    from make_notebook import ROOT, write_notebook
except ImportError:  # imported from the repository root (tests)
    from scripts.lesson7 import LESSON_7
    from scripts.make_notebook import ROOT, write_notebook

NOTEBOOKS = ROOT / "notebooks"

SETUP = (
    "*Runs offline in well under a minute: **Kernel → Restart & Run All**. The data are scikit-learn's "
    "1,797 handwritten digits (8×8 pixels, 10 classes), split into 1,078 training, 359 validation and 360 "
    "test images; the two small models were trained on them in advance.*"
)


def code(module: str) -> str:
    return f"from pruneviz.lessons import {module} as lesson\n\napp = lesson.show()"


FINDING = "app.finding()"

LESSON_1 = [
    ("md", f"""# 1 · What pruning is

{SETUP}

A trained neural network is, underneath, a few large tables of numbers: its **weights**. The layer `fc2` of
our small multi-layer perceptron (MLP) connects 300 hidden units to 100 others, so it holds 300 × 100 =
30,000 weights. The picture below shows every one of them: one coloured cell per weight, orange for
negative, purple for positive, pale for close to zero.

**Pruning** sets some of those weights to exactly zero, which removes the connection they stood for.
The simplest rule, **magnitude pruning**, removes the weights closest to zero first: a tiny weight
multiplies its input by almost nothing, so losing it should matter little.

Two words we will use in every lesson:

* **Sparsity** is the fraction of weights that are zero. At 60 % sparsity, 6 weights out of 10 are gone.
* The **mask** records the decision for every weight: kept (1) or pruned (0). The pruned network uses
  *original weight × mask*, and going back is always possible: the originals are kept.

**Test accuracy** is the share of the 360 test digits the network classifies correctly."""),
    ("code", code("what_is_pruning")),
    ("md", """### What to try

* Drag **Sparsity** to 50 %, then to 90 %, and watch the grey cells spread across the heatmap.
* Switch the heatmap to **mask**: blue = kept, grey = pruned. This is all pruning stores.
* Pick **fc1** (the first layer) and **fc3** (the output layer, only 1,000 weights) and repeat.
* Find the sparsity at which the test accuracy first drops by more than one point.

### What to notice

* The pruned weights are scattered everywhere: no row or column disappears. This is **unstructured**
  pruning; lesson 4 removes whole units instead.
* The histogram grows a **hole around zero**: every weight with |w| below the threshold (red dashes) is
  pruned, every weight above it is kept. Because most weights sit near zero, the first half of the
  weights goes while the threshold is still small.
* Accuracy hardly moves for a long time, then falls off a cliff.
* Nothing got smaller or faster yet: the zeros still sit in the same dense table. Saving memory needs a
  sparse storage format, saving time needs hardware that skips zeros or, simpler, removing whole filters
  (lesson 4)."""),
    ("md", """### From the literature

Han et al. (2015) made this simple rule famous: remove every weight below a threshold, then retrain what
is left. The card below puts their result next to the same measurement on our MLP, **computed when you
ran this notebook** (on its own copy of the model, so your slider does not change it)."""),
    ("code", FINDING),
    ("md", """**Next:** is *smallest first* really a good rule, or would any 60 % do? Lesson 2 compares it with
pruning at random, and with a rule that looks at the gradients."""),
]

LESSON_2 = [
    ("md", f"""# 2 · Magnitude vs random vs saliency

{SETUP}

A **pruning criterion** gives every weight an importance score; pruning to a sparsity of *s* removes the
fraction *s* of the weights with the lowest scores. We compare three:

* **Magnitude** |w| (lesson 1): small weights are unimportant.
* **Random**: the baseline. A criterion is only worth its cost if it beats pruning at random.
* **Saliency** |w · ∂L/∂w|: a first-order estimate of how much the loss *L* would change if the weight
  were set to zero, from the gradients on four batches of training images.

An **accuracy–sparsity curve** prunes the network to 0 %, 2.5 %, 5 %, … 99 % and measures the test
accuracy at each step, always starting again from the original weights. The widget measures these
curves live for both demo models: the MLP (64-300-100-10, the shape of the classic LeNet-300-100) and a
small CNN (three convolution layers with BatchNorm). Watch the progress bar.

By default each criterion ranks **all the network's weights together** (one global ranking); the toggle
switches to the same sparsity in every layer. Lesson 3 is about that difference."""),
    ("code", code("criteria")),
    ("md", """### What to try

* Move **Look at sparsity** and read the table: which criterion is ahead at 50 %? At 80 %?
* Click a name in the legend to hide or show a curve.
* Switch **Rank weights by** to *same sparsity in every layer* (the curves are measured again).
* Press **Compute again**: the numbers come out identical, because every point starts from the same
  original weights and the random criterion is seeded.

### What to notice

* Random pruning hurts from the very first step; magnitude stays flat for a long stretch, then drops.
  The grey band around the random curve is the spread over three random seeds.
* Saliency uses more information than magnitude, yet it is not clearly better everywhere: a first-order
  estimate is only accurate for small changes.
* The CNN tolerates less pruning than the MLP: it has fewer weights, and each does more work.
* The red dashed line marks one point below the unpruned accuracy: where a curve crosses it is the
  sparsity you can have "for free" (without retraining)."""),
    ("md", """### From the literature

Han et al. (2015) pruned LeNet-300-100 and LeNet-5 on MNIST by magnitude. The card compares their result
with the curves above, **computed when you ran this notebook**: the sparsity each criterion reaches before
losing one point of accuracy on the digits CNN (in LeNet-5's role) and MLP (in LeNet-300-100's role)."""),
    ("code", FINDING),
    ("md", """**Next:** one global ranking or the same sparsity in every layer? Lesson 3 looks at how the two
split the same total between layers, and at what happens to a layer that loses everything."""),
]

LESSON_3 = [
    ("md", f"""# 3 · Global vs layer-wise sparsity

{SETUP}

"Prune 80 % of the network" does not say **where**. Two common answers, both by magnitude:

* **Layer-wise (uniform)**: every layer loses the same share, 80 % of its own weights.
* **Global**: one threshold for the whole network. Every weight below it goes, in whatever layer it
  sits, so each layer ends up with its own **implied sparsity**: layers full of small weights lose more,
  layers of large weights lose less.

Both remove exactly the same number of weights; only the split differs. The danger of the global rule
is **layer collapse**: a layer pruned to (almost) 100 % passes (almost) nothing on, and the network is cut
in two however good the other layers are. Bars in red mark a layer with 99 % or more of its weights gone."""),
    ("code", code("scope")),
    ("md", """### What to try

* At 80 % total, compare the two bars of each layer, and the two accuracies.
* Push **Total sparsity** to 98 %, 99 %, 99.5 % and watch for a red bar.
* Switch to the **small CNN** (its curves are measured the first time you pick it).

### What to notice

* The global threshold spares the small layers (the MLP's output layer `fc3`, the CNN's first
  convolution `features.0`) and takes more from the big ones, which have weight to spare.
* At the same total sparsity the global split keeps more accuracy (right-hand plot): the weights it
  removes are smaller, so they mattered less.
* At the extreme, the single threshold empties one layer before the others: that is layer collapse.
  A uniform split never empties a layer early, and global pruning is often given a minimum number of
  weights to keep per layer for exactly this reason."""),
    ("md", """### From the literature

Tanaka et al. (2020) named the failure. The card shows how far it is from the everyday regime on our two
models; all numbers **computed when you ran this notebook**."""),
    ("code", FINDING),
    ("md", """**Next:** all the zeros so far are scattered inside dense tables, which ordinary hardware
computes just as slowly. Lesson 4 removes whole filters, and the network actually gets smaller."""),
]

LESSON_4 = [
    ("md", f"""# 4 · Structured pruning: removing whole filters

{SETUP}

A convolution layer is a stack of **filters**: small kernels that each produce one output channel (one
feature map). Unstructured pruning leaves zeros scattered inside the filters; a normal CPU or GPU
multiplies by those zeros as fast as by any other number, so nothing runs faster. **Structured pruning**
removes whole filters (and whole neurons of a linear layer) instead: the layer simply has fewer of them,
and the smaller network runs faster on any hardware.

Which filters go? Those with the smallest **L1 norm** (sum of |w| over the filter), as in Li et al.
(2017), or the smallest **L2 norm**; random filters are the baseline.

Three numbers describe "how much was pruned", and they are not the same:

* the **ratio** of filters removed from each layer (the slider);
* the **% of weights zeroed**, which is what sparsity meant so far;
* the **% of FLOPs removed**: FLOPs are the floating-point operations one image needs. Removing a filter
  also removes the input channel of the next layer that read its output, so FLOPs fall faster than the
  count of zeros suggests. They are counted on the network with the filters physically removed.

The top row shows the first convolution layer's 16 kernels (3 × 3 pixels each) as small images; removed
filters are dimmed."""),
    ("code", code("structured")),
    ("md", """### What to try

* Move **Filters removed per layer** to 25 %, then 50 %, and compare the four bars on the right.
* Switch **Rank filters by** between L1, L2 and random, and watch which kernels get dimmed.
* Pick another layer in **Importance of** to see its filter norms, ranked.

### What to notice

* Under L1 the faintest kernels (least ink) go first; under random, any kernel can go.
* About 25 % of filters removed zeroes about 25 % of the weights but removes far more of the FLOPs:
  a middle layer that loses a quarter of its filters *and* a quarter of its inputs keeps only about
  (3/4)² ≈ 56 % of its work. A sparse kernel skipping the same zeros would save much less (light bar).
* Accuracy falls faster than with unstructured pruning at the same sparsity: a whole filter is a coarse
  cut. Lesson 6 fine-tunes it back.
* The grey note under the table: pruneviz zeroes a removed filter's weights *and* its bias and the scale
  and shift of the BatchNorm after it, so the channel outputs exactly 0 and the masked model computes
  the same thing as the physically smaller one."""),
    ("md", """### From the literature

Li et al. (2017) removed whole filters from VGG-16 and ResNets. The card takes the same FLOPs cut as
their VGG-16 result on our CNN, **computed when you ran this notebook**."""),
    ("code", FINDING),
    ("md", """**Next:** uniform ratios treat every layer alike, but the first layer lost accuracy much faster
than the others. Lesson 5 measures each layer's tolerance and plans per layer."""),
]

LESSON_5 = [
    ("md", f"""# 5 · Sensitivity analysis: which layers can take it?

{SETUP}

Layers are not equally important. A **sensitivity analysis** prunes **one layer at a time**, keeping
all the others intact, to 10 %, 20 %, … 90 %, and measures the accuracy each time. Each layer gets a
**sensitivity curve**; the heatmap shows the same numbers as accuracy lost, one row per layer.

The curves turn into a **per-layer plan**: allow every layer to cost at most a few points of accuracy
(the budget), and give each layer the highest sparsity its curve allows. The curves are measured on the
359 **validation** digits, and the plan is then checked on the 360 **test** digits: choosing on one set and
reporting on another keeps the reported accuracy honest.

By default whole filters are pruned by L1 norm (as in Li et al. 2017); the toggle switches to single
weights by magnitude. The sweep runs `pruneviz.core.sensitivity.sensitivity_sweep` in this kernel; on a
bigger model the same call can spread the layers over a process pool or a Dask cluster."""),
    ("code", code("sensitivity")),
    ("md", """### What to try

* Move **Allowed drop per layer** from 0.5 to 5 points and watch the diamonds (the plan) move along the
  curves and across the heatmap.
* Switch **Prune** to *single weights* (a second sweep runs) and compare which layers are sensitive.
* Press **Run the sweep again**: the same numbers come back (nothing random is involved).

### What to notice

* One layer loses a lot of accuracy long before another notices anything: a uniform ratio is limited
  by the most sensitive layer.
* The plan's test accuracy is usually lower than "baseline minus budget": each layer's curve was measured
  with the others dense, and the damages add up when all layers are pruned together.
* Compare the plan with the closest uniform plan of the same cost (last row of the table)."""),
    ("md", """### From the literature

Li et al. (2017) used exactly this analysis to decide which layers of VGG-16 and the ResNets to prune.
The card ranks our CNN's layers and checks the plan, **computed when you ran this notebook**."""),
    ("code", FINDING),
    ("md", """**Next:** everything so far was pruning without any training afterwards. Lesson 6 lets the
network recover."""),
]

LESSON_6 = [
    ("md", f"""# 6 · Prune, then fine-tune

{SETUP}

So far pruning only took things away. **Fine-tuning** trains the remaining weights for a few more
epochs (one epoch = one pass over the 1,078 training digits) with the **mask held fixed**: pruned weights
stay exactly zero, the kept ones learn to compensate for the missing ones.

**Left plot: collapse and recovery.** We remove 70 % of the filters of every layer of the CNN (L1 norm,
as in lesson 4): accuracy collapses. Then we fine-tune and measure the test accuracy after every epoch.

**Right plot: one shot vs iterative.** Instead of one big cut followed by training, **iterative pruning**
makes several smaller cuts with training in between. Here the MLP is pruned by global magnitude to each
target sparsity either in **one shot** (then 5 epochs) or on a **cubic schedule** of 5 steps with one
epoch after each: sparsity after step *t* of *n* is s_f + (s_i − s_f)(1 − t/n)³, big steps first while
the network has plenty to spare, small ones near the target. Both get the same 5 epochs of training.

Training is `pruneviz.core.finetune.finetune` and `pruneviz.core.schedules.run_schedule`; the progress bar
counts training steps."""),
    ("code", code("finetune")),
    ("md", """### What to try

* Set **Filters removed per layer** to 90 % or 50 % and press **Prune and fine-tune**.
* Try 1 epoch, then 10.
* Press **Compare schedules** again: the numbers repeat exactly (seeded training).

### What to notice

* Most of the recovery happens in the first one or two epochs.
* The pruned network is no bigger after fine-tuning: training changed the kept weights, never the mask.
* At moderate sparsity both schedules end up the same; the iterative one pulls ahead at high sparsity,
  where one big cut leaves the network too little to recover from."""),
    ("md", """### From the literature

Network slimming (Liu et al. 2017) shows the collapse-and-recovery pattern at full scale; Han et al.
(2015) and Zhu & Gupta (2017) prune iteratively. The card puts their numbers next to ours, **computed
when you ran this notebook**."""),
    ("code", FINDING),
    ("md", """**Next:** lesson 7 prunes text, audio and table models the same way. To explore freely — any
criterion, scope or layer, on any model, with undo and export — open the dashboard:
`voila notebooks/dashboard.ipynb`."""),
]

LESSONS: dict[str, list[tuple[str, str]]] = {
    "01_what_is_pruning.ipynb": LESSON_1,
    "02_magnitude_vs_random.ipynb": LESSON_2,
    "03_global_vs_layerwise.ipynb": LESSON_3,
    "04_structured_filters.ipynb": LESSON_4,
    "05_sensitivity_analysis.ipynb": LESSON_5,
    "06_prune_then_finetune.ipynb": LESSON_6,
    "07_heterogeneous_data.ipynb": LESSON_7,
}


def write_all(folder: Path = NOTEBOOKS) -> list[Path]:
    """Write every lesson notebook into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, cells in LESSONS.items():
        path = folder / name
        write_notebook(path, cells)
        out.append(path)
    return out


def stale(folder: Path = NOTEBOOKS) -> list[str]:
    """Names of lesson notebooks in ``folder`` that are missing or differ from their cell lists."""
    import tempfile

    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_all(Path(tmp)):
            committed = folder / path.name
            if not committed.exists() or nbformat.read(committed, 4) != nbformat.read(path, 4):
                bad.append(path.name)
    return bad


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        for name in bad:
            print(f"notebooks/{name} is out of date: run python scripts/make_lessons.py", file=sys.stderr)
        return 1 if bad else 0
    for path in write_all():
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
