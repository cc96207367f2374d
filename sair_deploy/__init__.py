"""sair-deploy: image inpainting at any output scale with SAIR (semantic-aware implicit representation).

    from sair_deploy import load_inpainter
    inpainter = load_inpainter()              # the bundled demo model, or a checkpoint / export dir
    inpainter.set_image(image, mask)          # (H, W, 3) uint8 or float in [0, 1], (H, W) bool
    result = inpainter.inpaint(2.0)           # (2H, 2W, 3) uint8; dtype=np.float32 for floats

Importing this package does not import torch.
"""

from .api import load_backend, load_inpainter
from .inpainter import Inpainter
from .version import __version__

__all__ = ["load_inpainter", "load_backend", "Inpainter", "__version__"]
