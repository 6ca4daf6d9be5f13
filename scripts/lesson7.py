"""The cells of lesson 7 (notebooks/07_heterogeneous_data.ipynb), imported by make_lessons.py."""

from __future__ import annotations

SETUP_7 = (
    "*Runs offline in under a minute: **Kernel → Restart & Run All**. Four small models trained in advance on "
    "data that ships with pruneviz: the 8×8 handwritten digits (images), 2,561 Rotten Tomatoes review snippets "
    "(text; 1,000 of them are used here), 720 spoken digits synthesised with espeak-ng in voices the model "
    "never heard (audio, as log-mel spectrograms) and scikit-learn's breast-cancer table (30 measurements per "
    "tumour).*"
)

LESSON_7 = [
    ("md", f"""# 7 · Images, text, audio and tables

{SETUP_7}

The six lessons so far pruned networks that look at pictures. Pruning is the same operation whatever the
data: set the least important weights to zero. But the networks differ. The **text** model first turns every
word into a vector (an **embedding** table: 6,000 words × 64 numbers), then reads the words one after
another with a **recurrent** layer (a GRU) whose weights are split into *gates*. The **audio** model slides
1-D convolutions along time over a spectrogram. The **table** model is a small MLP on 30 numbers.

Here every model is pruned the same way: magnitude, **the same sparsity in every layer**, no retraining.
Left: how many accuracy points each model loses. Right: the text model pruned **one layer group at a
time**, to see which part of it breaks first."""),
    ("code", "from pruneviz.lessons import modalities as lesson\n\napp = lesson.show()"),
    ("md", """### What to try

* Read the left plot at 50 %: which model has lost the least? Which has lost the most?
* On the right, compare the three bars at 80 %: the embedding, the GRU's weights, the output layer.
* Open the dashboard (`voila notebooks/dashboard.ipynb`), pick **Text GRU** and drag the global slider:
  the gallery shows the review snippets whose verdict flipped, with their words; pick **Audio CNN** to see
  the spectrograms that flipped, **Tabular MLP** for the tumour rows and the measurements that weigh most.

### What to notice

* The models do not tolerate pruning equally: the table model has far more weights than its 30 inputs
  need, the digits CNN's first layer has only 144 weights and every one counts.
* In the text model the **embedding** holds most of the weights (384,000 of 409,000), so a *global*
  threshold would take almost everything from it, or from the GRU, depending on their scales: pruning
  layer by layer (or per layer group) keeps that under control.
* Whether text or images are "easier" is not a law: it depends on how much spare capacity each model was
  trained with."""),
    ("md", """### From the literature

Narang et al. (2017) pruned recurrent speech models gradually **while they trained**. The card puts their
result next to ours, **computed when you ran this notebook**."""),
    ("code", "app.finding()"),
    ("md", """**Next:** lesson 6 showed how fine-tuning recovers what pruning costs; the dashboard lets you try all
of this on each model, with undo, export and the physically smaller model."""),
]
