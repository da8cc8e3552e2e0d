"""zoo's built-in datasets, each one module ending in a `Dataset` object registered in
the `zoo.datasets` entry-point group (see pyproject.toml), exactly as a third
party's would be:

- `digits` (the default of the digit plugins): scikit-learn's bundled handwritten digits.
- `mnist:PATH`: torchvision's MNIST layout.
- `cifar10:PATH`: torchvision's CIFAR-10 layout.
- `folder:PATH`: torchvision's ImageFolder layout.
- `pix2pix:PATH`: aligned A|B image folders (facades, maps, edges2shoes).
- `colorization`, `edges`: offline A|B pairs cut from scikit-image's bundled photographs.

Importing this package imports nothing heavy; each module imports torch inside its
loader only.
"""
